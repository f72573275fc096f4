/* `capid dlq`: dead letters (SPEC 7: kept with the hashed payload, the
 * reason, Meta's error and the attempt count; listed and replayed).
 *   capid dlq list   --config FILE [FILTER] [--limit N] [--after ID] [--json]
 *   capid dlq show   --config FILE ID
 *   capid dlq replay --config FILE FILTER   (back to the queue, ready now)
 *   capid dlq purge  --config FILE FILTER   (deleted for good)
 * FILTER: --destination NAME, --reason CODE, --id ID (repeatable), --before
 * EPOCH (dead-lettered before); replay and purge need at least one, or
 * --all, so that a bare command never touches every dead letter. */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capi/reason.h"
#include "config/config.h"
#include "queue/queue.h"
#include "util/buf.h"
#include "util/clock.h"

#define MAX_IDS 10000

static int usage(void)
{
    fprintf(
        stderr,
        "usage: capid dlq list   --config FILE [--destination NAME] [--reason CODE] [--id ID]...\n"
        "                        [--before EPOCH] [--limit N] [--after ID] [--json]\n"
        "       capid dlq show   --config FILE ID\n"
        "       capid dlq replay --config FILE (--destination NAME | --reason CODE | --id ID... "
        "| --before EPOCH | --all)\n"
        "       capid dlq purge  --config FILE (same filters as replay)\n");
    return 2;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* Meta's code and subcode from a dead letter's error JSON. */
static void error_codes(const char *err, int *code, int *sub, const char **msg, cJSON **tree)
{
    *code = *sub = 0;
    *msg = NULL;
    *tree = err ? cJSON_Parse(err) : NULL;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(*tree, "code");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(*tree, "error_subcode");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(*tree, "message");
    *code = cJSON_IsNumber(c) ? c->valueint : 0;
    *sub = cJSON_IsNumber(s) ? s->valueint : 0;
    *msg = cJSON_IsString(m) ? m->valuestring : NULL;
}

static void row_json(struct capid_buf *b, const struct capid_queue_row *r, bool payload)
{
    capid_buf_printf(b, "{\"id\":%lld,\"destination\":", (long long)r->id);
    capid_buf_json_str(b, r->dest, strlen(r->dest));
    capid_buf_puts(b, ",\"event_name\":");
    capid_buf_json_str(b, r->event_name, strlen(r->event_name));
    capid_buf_puts(b, ",\"event_id\":");
    capid_buf_json_str(b, r->event_id, strlen(r->event_id));
    capid_buf_printf(b, ",\"state\":\"%s\",\"reason\":", capid_queue_state_name(r->state));
    if (r->reason)
        capid_buf_json_str(b, r->reason, strlen(r->reason));
    else
        capid_buf_puts(b, "null");
    int code, sub;
    const char *msg;
    cJSON *tree;
    error_codes(r->last_error, &code, &sub, &msg, &tree);
    capid_buf_printf(b, ",\"code\":%d,\"subcode\":%d,\"error\":", code, sub);
    /* the stored error as JSON when it is JSON, else as a string */
    if (tree)
        capid_buf_puts(b, r->last_error);
    else if (r->last_error)
        capid_buf_json_str(b, r->last_error, strlen(r->last_error));
    else
        capid_buf_puts(b, "null");
    cJSON_Delete(tree);
    capid_buf_printf(b,
                     ",\"attempts\":%d,\"event_time\":%lld,\"enqueued_at\":%lld,"
                     "\"changed_at\":%lld",
                     r->attempts, (long long)r->event_time, (long long)r->enqueued_at,
                     (long long)r->changed_at);
    if (payload) {
        capid_buf_puts(b, ",\"payload\":");
        if (r->payload)
            capid_buf_append(b, r->payload, r->payload_len);
        else
            capid_buf_puts(b, "null");
    }
    capid_buf_puts(b, "}\n");
}

static void row_text(struct capid_buf *b, const struct capid_queue_row *r)
{
    int code, sub;
    const char *msg;
    cJSON *tree;
    error_codes(r->last_error, &code, &sub, &msg, &tree);
    capid_buf_printf(b, "%-10lld %-16s %-24s %-20.20s %-22s %4d/%-8d %3d  %.80s\n",
                     (long long)r->id, r->dest, r->event_name, r->event_id,
                     r->reason ? r->reason : "-", code, sub, r->attempts, msg ? msg : "");
    cJSON_Delete(tree);
}

int capid_cmd_dlq(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"destination", required_argument, NULL, 'd'},
        {"reason", required_argument, NULL, 'r'},
        {"id", required_argument, NULL, 'i'},
        {"before", required_argument, NULL, 'b'},
        {"limit", required_argument, NULL, 'l'},
        {"after", required_argument, NULL, 'a'},
        {"json", no_argument, NULL, 'j'},
        {"all", no_argument, NULL, 'A'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2)
        return usage();
    const char *sub = argv[1];
    bool is_list = !strcmp(sub, "list"), is_show = !strcmp(sub, "show");
    bool is_replay = !strcmp(sub, "replay"), is_purge = !strcmp(sub, "purge");
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
        usage();
        return 0;
    }
    if (!is_list && !is_show && !is_replay && !is_purge) {
        fprintf(stderr, "capid dlq: unknown subcommand '%s'\n", sub);
        return usage();
    }
    const char *config = NULL;
    struct capid_queue_dead_filter f = {0};
    int64_t *ids = calloc(MAX_IDS, sizeof(*ids));
    int64_t limit = 100, after = 0, v;
    bool json = false, all = false;
    int c, rc = 0;
    if (!ids)
        abort();
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            f.dest = optarg;
            break;
        case 'r':
            if (capid_reason_from_name(optarg) < 0) {
                fprintf(stderr, "capid dlq: unknown reason '%s' (see docs/REASONS.md)\n", optarg);
                free(ids);
                return 2;
            }
            f.reason = optarg;
            break;
        case 'i':
            if (parse_i64(optarg, &v) || f.n_ids >= MAX_IDS) {
                fprintf(stderr, "capid dlq: bad --id '%s' (at most %d ids)\n", optarg, MAX_IDS);
                free(ids);
                return 2;
            }
            ids[f.n_ids++] = v;
            break;
        case 'b':
            if (parse_i64(optarg, &f.before)) {
                free(ids);
                return usage();
            }
            break;
        case 'l':
            if (parse_i64(optarg, &limit) || limit < 1 || limit > 1000000) {
                free(ids);
                return usage();
            }
            break;
        case 'a':
            if (parse_i64(optarg, &after)) {
                free(ids);
                return usage();
            }
            break;
        case 'j':
            json = true;
            break;
        case 'A':
            all = true;
            break;
        case 'h':
            usage();
            free(ids);
            return 0;
        default:
            free(ids);
            return usage();
        }
    }
    f.ids = f.n_ids ? ids : NULL;
    int64_t show_id = 0;
    if (is_show && (optind + 1 != argc || parse_i64(argv[optind], &show_id))) {
        free(ids);
        return usage();
    }
    if (!is_show && optind < argc) {
        free(ids);
        return usage();
    }
    bool filtered = f.dest || f.reason || f.n_ids || f.before;
    if ((is_replay || is_purge) && !filtered && !all) {
        fprintf(stderr,
                "capid dlq %s: name what to %s (--destination, --reason, --id, --before) "
                "or say --all\n",
                sub, sub);
        free(ids);
        return 2;
    }
    struct capid_config *cfg = capid_cli_load_config("dlq", config);
    if (!cfg) {
        free(ids);
        return 2;
    }
    struct capid_queue *q = NULL;
    struct capid_perr err = {0};
    struct capid_queue_opts qo = {.path = cfg->queue.path,
                                  .no_create = true,
                                  .sync_normal = cfg->queue.synchronous == CAPID_SYNC_NORMAL};
    struct capid_queue_batch b = {0};
    struct capid_buf out;
    capid_buf_init(&out, 0);
    int orc = capid_queue_open(&q, &qo, &err);
    if (orc == CAPID_ENOTFOUND && is_list) {
        goto out; /* no queue yet: no dead letters */
    } else if (orc != CAPID_OK) {
        fprintf(stderr, "capid dlq: %s\n", err.msg ? err.msg : "cannot open the queue");
        rc = 1;
        goto out;
    }
    if (is_show) {
        orc = capid_queue_show(q, show_id, &b);
        if (orc == CAPID_ENOTFOUND) {
            fprintf(stderr, "capid dlq show: no event with id %lld\n", (long long)show_id);
            rc = 1;
        } else if (orc != CAPID_OK) {
            fprintf(stderr, "capid dlq show: %s\n", capid_strerror(orc));
            rc = 1;
        } else if (b.n) {
            row_json(&out, &b.rows[0], true);
        }
    } else if (is_list) {
        if (!json)
            capid_buf_printf(&out, "%-10s %-16s %-24s %-20s %-22s %-13s %3s  %s\n", "id",
                             "destination", "event_name", "event_id", "reason", "code/subcode",
                             "att", "message");
        int64_t left = limit;
        while (left > 0) {
            size_t page = left > CAPID_QUEUE_MAX_LEASE ? CAPID_QUEUE_MAX_LEASE : (size_t)left;
            orc = capid_queue_dead_list(q, &f, after, page, &b);
            if (orc != CAPID_OK) {
                fprintf(stderr, "capid dlq list: %s\n", capid_strerror(orc));
                rc = 1;
                break;
            }
            for (size_t i = 0; i < b.n; i++) {
                if (json)
                    row_json(&out, &b.rows[i], false);
                else
                    row_text(&out, &b.rows[i]);
                after = b.rows[i].id;
            }
            left -= (int64_t)b.n;
            size_t got = b.n;
            capid_queue_batch_release(&b);
            if (got < page || f.n_ids)
                break;
        }
    } else {
        int n = is_replay ? capid_queue_dead_replay(q, &f, capid_now_s())
                          : capid_queue_dead_purge(q, &f);
        if (n < 0) {
            fprintf(stderr, "capid dlq %s: %s\n", sub, capid_strerror(n));
            rc = 1;
        } else {
            capid_buf_printf(&out, "{\"%s\":%d}\n", is_replay ? "replayed" : "purged", n);
        }
    }
out:
    if (out.len)
        fwrite(out.data, 1, out.len, stdout);
    capid_buf_release(&out);
    capid_queue_batch_release(&b);
    capid_queue_close(q);
    capid_config_free(cfg);
    free(ids);
    return rc;
}
