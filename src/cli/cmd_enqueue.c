/* `capid enqueue`: maps NDJSON events (the `capid map` path) and commits
 * them to the durable queue, printing a per-reason summary (issue 4 item 3).
 *   capid enqueue --config FILE [--now EPOCH] [--destination NAME]
 *                 [--group N] [--verbose] [FILE...]
 *
 * Pipeline (cli/pipeline.h, shared with `capid import`): worker threads
 * read chunks of lines (under a lock, so each chunk is a run of consecutive
 * lines) and map them; this thread commits the chunks in input order, one
 * transaction per chunk or per run of chunks mapped while the previous
 * commit waited for its fsync (group commit). A chunk is committed only after
 * every earlier chunk was, so on an error the committed events are exactly
 * the first ones of the input. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capi/map.h"
#include "cli/pipeline.h"
#include "ingest/ndjson.h"
#include "config/config.h"
#include "queue/queue.h"
#include "util/clock.h"
#include "util/log.h"

/* Events per transaction. 1000 rather than 500: each commit rewrites the
 * last, partly filled page of every table and index it touches (16 KB
 * each) and syncs; 100,000 events enqueued took a median 0.92 s against
 * 1.01 s (4 alternating runs), for 7 MB more RSS (36 MB). */
#define DEFAULT_GROUP CAPID_PIPE_GROUP_DEFAULT

struct run {
    const struct capid_config *cfg;
    const struct capid_dest **dests;
    size_t ndests;
    bool verbose;
    /* input: read by the pipeline's workers, one at a time */
    char **files;
    int nfiles, fi;
    int fd;                  /* of the open input, -1 when none */
    struct capid_ndjson *nd; /* lines of the open input, in place */
    const char *read_error;  /* a file that failed mid-way (its name) */
    char read_msg[256];
};

static void close_input(struct run *r)
{
    capid_ndjson_free(r->nd);
    r->nd = NULL;
    if (r->fd > 0)
        close(r->fd);
    r->fd = -1;
}

/* Pipeline source: fills c with the next lines of the input. 0 at the end.
 * Lines come from the NDJSON splitter that `capid import` uses (BOM, CRLF,
 * blank lines; read in 64 KiB blocks and handed out in place, so each line
 * is copied once, into the chunk). A line more than 1 MiB over
 * server.max_event_bytes is skipped as too_large without being held in
 * memory (a shorter one over the limit gets too_large from the parser). */
static int read_chunk(void *ctx, struct capid_pipe_chunk *c)
{
    struct run *r = ctx;
    while (!capid_pipe_chunk_full(c)) {
        if (!r->nd) {
            if (r->fi >= r->nfiles)
                return 0;
            const char *path = r->files[r->fi];
            r->fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : 0;
            if (r->fd < 0) { /* checked before starting; vanished since */
                fprintf(stderr, "capid enqueue: cannot read '%s': %s\n", path, strerror(errno));
                r->fi++;
                continue;
            }
            r->nd = capid_cli_event_lines(r->cfg, r->fd);
        }
        struct capid_ndjson_line ln;
        struct capid_perr err;
        capid_perr_clear(&err);
        int rc = capid_ndjson_next(r->nd, &ln, &err);
        if (rc == CAPID_ETOOBIG) {
            char detail[160];
            capid_cli_too_long(r->cfg, &ln, detail, sizeof(detail));
            capid_pipe_add_skip(c, ln.line, 1, CAPID_R_TOO_LARGE, detail);
            continue;
        }
        if (rc <= 0) {
            if (rc < 0 && !r->read_error) {
                r->read_error = r->files[r->fi];
                snprintf(r->read_msg, sizeof(r->read_msg), "%s", err.msg ? err.msg : "read error");
            }
            close_input(r);
            r->fi++;
            continue;
        }
        capid_pipe_add_event(c, ln.s, ln.len, ln.line, 1);
    }
    return 1;
}

/* --verbose: one JSON line per skipped event, in input order. */
static void note(void *ctx, const struct capid_pipe_outcome *o)
{
    struct run *r = ctx;
    if (o->reason == CAPID_R_DUPLICATE)
        return;
    struct capid_buf b;
    capid_buf_init(&b, 0);
    const char *dest = r->dests[o->dest]->name;
    capid_buf_printf(&b, "{\"line\":%llu,\"destination\":", (unsigned long long)o->line);
    capid_buf_json_str(&b, dest, strlen(dest));
    capid_buf_puts(&b, ",\"skipped\":");
    capid_buf_json_str(&b, capid_reason_name(o->reason), strlen(capid_reason_name(o->reason)));
    capid_buf_puts(&b, ",\"detail\":");
    capid_buf_json_str(&b, o->detail, strlen(o->detail));
    capid_buf_puts(&b, "}\n");
    fwrite(b.data, 1, b.len, stderr);
    capid_buf_release(&b);
}

static void print_summary(struct run *r, const struct capid_pipe_stats *t, int64_t ms,
                          const char *error)
{
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_printf(&b, "{\"lines\":%llu,\"enqueued\":%llu,\"skipped\":{",
                     (unsigned long long)t->events, (unsigned long long)t->queued);
    bool first = true;
    for (int i = 1; i < CAPID_R__COUNT; i++) {
        if (!t->skipped[i])
            continue;
        capid_buf_printf(&b, "%s\"%s\":%llu", first ? "" : ",",
                         capid_reason_name((enum capid_reason)i),
                         (unsigned long long)t->skipped[i]);
        first = false;
    }
    capid_buf_puts(&b, "},\"destinations\":{");
    for (size_t i = 0; i < r->ndests; i++) {
        capid_buf_puts(&b, i ? "," : "");
        capid_buf_json_str(&b, r->dests[i]->name, strlen(r->dests[i]->name));
        capid_buf_printf(&b, ":%llu", (unsigned long long)t->per_dest[i]);
    }
    capid_buf_printf(&b, "},\"commits\":%lld,\"elapsed_ms\":%lld", (long long)t->commits,
                     (long long)ms);
    if (error) {
        capid_buf_puts(&b, ",\"error\":");
        capid_buf_json_str(&b, error, strlen(error));
    }
    capid_buf_puts(&b, "}\n");
    fwrite(b.data, 1, b.len, stdout);
    fflush(stdout);
    capid_buf_release(&b);
}

static int usage(void)
{
    fprintf(stderr, "usage: capid enqueue --config FILE [--now EPOCH_SECONDS] [--destination NAME] "
                    "[--group N] [--verbose] [FILE ...]\n");
    return 2;
}

int capid_cmd_enqueue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"destination", required_argument, NULL, 'd'},
        {"now", required_argument, NULL, 'n'},
        {"group", required_argument, NULL, 'g'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *dest = NULL;
    struct run r = {.fd = -1};
    struct capid_pipe_opts po = {.group = DEFAULT_GROUP};
    int c, rc = 0;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            dest = optarg;
            break;
        case 'v':
            r.verbose = true;
            break;
        case 'n':
            errno = 0;
            po.now = strtoll(optarg, &end, 10);
            if (errno || *end || po.now <= 0) {
                fprintf(stderr, "capid enqueue: --now '%s' is not a positive number of seconds\n",
                        optarg);
                return 2;
            }
            break;
        case 'g':
            errno = 0;
            po.group = (size_t)strtoull(optarg, &end, 10);
            if (errno || *end || po.group < 1 || po.group > CAPID_QUEUE_MAX_LEASE) {
                fprintf(stderr, "capid enqueue: --group takes 1..%d events\n",
                        CAPID_QUEUE_MAX_LEASE);
                return 2;
            }
            break;
        case 'h':
            usage();
            return 0;
        default:
            return usage();
        }
    }
    struct capid_config *cfg = capid_cli_load_config("enqueue", config);
    if (!cfg)
        return 2;
    r.cfg = cfg;
    struct capid_queue *q = NULL;
    struct capid_pipe_stats t = {.position = -1};
    static char stdin_name[] = "-";
    char *stdin_list[1] = {stdin_name};
    r.dests = calloc(cfg->n_dests + 1, sizeof(*r.dests));
    t.per_dest = calloc(cfg->n_dests + 1, sizeof(*t.per_dest));
    if (!r.dests || !t.per_dest)
        abort();
    r.ndests = capid_cli_select_dests("enqueue", cfg, dest, r.dests);
    if (!r.ndests) {
        rc = 2;
        goto out;
    }
    r.files = optind < argc ? argv + optind : stdin_list;
    r.nfiles = optind < argc ? argc - optind : 1;
    for (int i = 0; i < r.nfiles; i++) {
        struct stat st;
        if (!strcmp(r.files[i], "-"))
            continue;
        if (access(r.files[i], R_OK) == 0 && stat(r.files[i], &st) == 0 && S_ISDIR(st.st_mode))
            errno = EISDIR;
        else if (access(r.files[i], R_OK) == 0)
            continue;
        fprintf(stderr, "capid enqueue: cannot read '%s': %s\n", r.files[i], strerror(errno));
        rc = 2;
        goto out;
    }
    struct capid_perr err = {0};
    struct capid_queue_opts qo = {.path = cfg->queue.path,
                                  .sync_normal = cfg->queue.synchronous == CAPID_SYNC_NORMAL,
                                  .keep_delivered_s = cfg->queue.keep_delivered_s};
    if (capid_queue_open(&q, &qo, &err) != CAPID_OK) {
        fprintf(stderr, "capid enqueue: %s\n", err.msg ? err.msg : "cannot open the queue");
        rc = 1;
        goto out;
    }
    int64_t t0 = capid_mono_ms();
    const char *error = NULL;
    po.cfg = cfg;
    po.dests = r.dests;
    po.ndests = r.ndests;
    po.q = q;
    po.read = read_chunk;
    po.read_ctx = &r;
    po.outcome = r.verbose ? note : NULL;
    po.ctx = &r;
    int qrc = capid_pipe_run(&po, &t);
    if (qrc != CAPID_OK) {
        error = capid_strerror(qrc);
        fprintf(stderr, "capid enqueue: cannot commit to queue '%s': %s\n", cfg->queue.path, error);
        rc = 1;
    }
    char rerr[512];
    if (!error && r.read_error) {
        /* what was read before is committed; the rest of that file is not */
        snprintf(rerr, sizeof(rerr), "cannot read '%s': %s", r.read_error, r.read_msg);
        fprintf(stderr, "capid enqueue: %s\n", rerr);
        error = rerr;
        rc = 1;
    }
    print_summary(&r, &t, capid_mono_ms() - t0, error);
    close_input(&r);
out:
    capid_queue_close(q);
    free(r.dests);
    free(t.per_dest);
    capid_config_free(cfg);
    return rc;
}
