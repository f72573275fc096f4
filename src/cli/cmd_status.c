/* `capid status`: per destination, what the queue holds and whether
 * delivery is paused (issue 4 item 3).
 *   capid status --config FILE [--json]
 * Counts come from the queue; pause state and concurrency from the state
 * file `capid serve` keeps next to it (deliver/deliver.h), trusted only
 * while the process that wrote it is alive. */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "deliver/deliver.h"
#include "queue/queue.h"
#include "util/buf.h"
#include "util/clock.h"

static cJSON *read_state(const char *path, bool *running)
{
    char *text = NULL;
    size_t len = 0;
    *running = false;
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char buf[65536];
    size_t n;
    struct capid_buf b;
    capid_buf_init(&b, 16u << 20);
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        if (capid_buf_append(&b, buf, n) != CAPID_OK)
            break;
    fclose(f);
    text = capid_buf_detach(&b, &len);
    cJSON *st = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    const cJSON *pid = cJSON_GetObjectItemCaseSensitive(st, "pid");
    /* kill(pid, 0): is the writer still there? (EPERM: alive, not ours) */
    if (cJSON_IsNumber(pid) && pid->valuedouble > 0)
        *running = kill((pid_t)pid->valuedouble, 0) == 0 || errno == EPERM;
    return st;
}

struct row {
    const char *name;
    struct capid_queue_counts c;
    bool configured, paused;
    const char *why;
    int64_t paused_since;
    int inflight, concurrency;
};

static int usage(void)
{
    fprintf(stderr, "usage: capid status --config FILE [--json]\n");
    return 2;
}

int capid_cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool json = false;
    int c, rc = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            usage();
            return 0;
        default:
            return usage();
        }
    }
    if (optind < argc)
        return usage();
    struct capid_config *cfg = capid_cli_load_config("status", config);
    if (!cfg)
        return 2;
    struct capid_queue *q = NULL;
    struct capid_perr err = {0};
    char **qdests = NULL;
    struct row *rows = NULL;
    size_t nrows = 0;
    cJSON *state = NULL;
    struct capid_queue_opts qo = {.path = cfg->queue.path, .no_create = true};
    int orc = capid_queue_open(&q, &qo, &err);
    if (orc != CAPID_OK && orc != CAPID_ENOTFOUND) {
        fprintf(stderr, "capid status: %s\n", err.msg ? err.msg : "cannot open the queue");
        rc = 1;
        goto out;
    }
    int nq = q ? capid_queue_dests(q, &qdests) : 0;
    if (nq < 0) {
        fprintf(stderr, "capid status: cannot read queue '%s': %s\n", cfg->queue.path,
                capid_strerror(nq));
        rc = 1;
        goto out;
    }
    rows = calloc(cfg->n_dests + (size_t)nq + 1, sizeof(*rows));
    if (!rows)
        abort();
    for (size_t i = 0; i < cfg->n_dests; i++)
        rows[nrows++] = (struct row){.name = cfg->dests[i].name, .configured = true};
    for (int i = 0; i < nq; i++) {
        bool known = false;
        for (size_t k = 0; k < cfg->n_dests; k++)
            known |= strcmp(cfg->dests[k].name, qdests[i]) == 0;
        if (!known) /* rows of a destination no longer configured */
            rows[nrows++] = (struct row){.name = qdests[i]};
    }
    char spath[4096];
    bool running = false;
    capid_deliver_state_path(cfg->queue.path, spath, sizeof(spath));
    state = read_state(spath, &running);
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(state, "destinations");
    int64_t now = capid_now_s();
    for (size_t i = 0; i < nrows; i++) {
        struct row *r = &rows[i];
        if (q && (orc = capid_queue_counts(q, r->name, &r->c)) != CAPID_OK) {
            fprintf(stderr, "capid status: cannot read queue '%s': %s\n", cfg->queue.path,
                    capid_strerror(orc));
            rc = 1;
            goto out;
        }
        const cJSON *x = running ? cJSON_GetObjectItemCaseSensitive(sd, r->name) : NULL;
        r->paused = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "paused"));
        const cJSON *why = cJSON_GetObjectItemCaseSensitive(x, "why");
        r->why = cJSON_IsString(why) ? why->valuestring : NULL;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(x, "paused_since");
        r->paused_since = cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
        v = cJSON_GetObjectItemCaseSensitive(x, "inflight");
        r->inflight = cJSON_IsNumber(v) ? v->valueint : 0;
        v = cJSON_GetObjectItemCaseSensitive(x, "concurrency");
        r->concurrency = cJSON_IsNumber(v) ? v->valueint : 0;
    }
    struct capid_buf b;
    capid_buf_init(&b, 0);
    if (json) {
        capid_buf_printf(&b, "{\"queue\":");
        capid_buf_json_str(&b, cfg->queue.path, strlen(cfg->queue.path));
        capid_buf_printf(&b, ",\"queue_exists\":%s,\"serve_running\":%s,\"destinations\":[",
                         q ? "true" : "false", running ? "true" : "false");
        for (size_t i = 0; i < nrows; i++) {
            const struct row *r = &rows[i];
            capid_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
            capid_buf_json_str(&b, r->name, strlen(r->name));
            capid_buf_printf(&b,
                             ",\"configured\":%s,\"queued\":%lld,\"leased\":%lld,"
                             "\"delivered\":%lld,\"dead\":%lld,\"paused\":%s,\"pause_reason\":",
                             r->configured ? "true" : "false", (long long)r->c.queued,
                             (long long)r->c.leased, (long long)r->c.delivered,
                             (long long)r->c.dead, r->paused ? "true" : "false");
            if (r->paused && r->why)
                capid_buf_json_str(&b, r->why, strlen(r->why));
            else
                capid_buf_puts(&b, "null");
            capid_buf_printf(&b, ",\"paused_since\":%lld,\"inflight\":%d,\"concurrency\":%d",
                             (long long)r->paused_since, r->inflight, r->concurrency);
            capid_buf_printf(
                &b, ",\"oldest_event_age_s\":%lld,\"oldest_enqueued_age_s\":%lld}",
                (long long)(r->c.oldest_event_time ? now - r->c.oldest_event_time : 0),
                (long long)(r->c.oldest_enqueued_at ? now - r->c.oldest_enqueued_at : 0));
        }
        capid_buf_puts(&b, "]}\n");
    } else {
        capid_buf_printf(&b, "queue %s%s; capid serve %s\n", cfg->queue.path,
                         q ? "" : " (not created yet)", running ? "running" : "not running");
        capid_buf_printf(&b, "%-20s %10s %8s %10s %8s %12s  %s\n", "destination", "queued",
                         "leased", "delivered", "dead", "oldest_age", "state");
        for (size_t i = 0; i < nrows; i++) {
            const struct row *r = &rows[i];
            char age[32] = "-";
            if (r->c.oldest_event_time)
                snprintf(age, sizeof(age), "%llds", (long long)(now - r->c.oldest_event_time));
            capid_buf_printf(&b, "%-20s %10lld %8lld %10lld %8lld %12s  %s%s%s\n", r->name,
                             (long long)r->c.queued, (long long)r->c.leased,
                             (long long)r->c.delivered, (long long)r->c.dead, age,
                             !r->configured ? "not configured"
                             : r->paused    ? "paused: "
                             : running      ? "delivering"
                                            : "idle",
                             r->paused && r->why ? r->why : "", "");
        }
    }
    fwrite(b.data, 1, b.len, stdout);
    capid_buf_release(&b);
out:
    cJSON_Delete(state);
    free(rows);
    free(qdests);
    capid_queue_close(q);
    capid_config_free(cfg);
    return rc;
}
