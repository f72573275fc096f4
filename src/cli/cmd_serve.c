/* `capid serve`: the daemon (issue 4 item 3).
 *   capid serve --config FILE [--shutdown-timeout-ms N] [--log-level LEVEL]
 * Opens the queue, returns leases a crash left behind, delivers until
 * SIGTERM or SIGINT (stop leasing, wait for in-flight requests up to the
 * shutdown timeout, put unsent events back, exit 0), reloads the
 * configuration and the access tokens on SIGHUP.
 *
 * Threads: this one only handles signals (sigtimedwait) and wiring; the
 * delivery loop runs in its own thread (deliver/deliver.h). HTTP ingestion
 * (a later issue) plugs in at ingest_start/ingest_stop below: started after
 * delivery, stopped before it, so accepted events always have a deliverer.
 *
 * Test-only: the environment variable CAPID_CLOCK_OFFSET (seconds, may be
 * negative) shifts the clock delivery uses for event ages and queue times,
 * so tests can age events without waiting days (docs/DELIVERY.md). */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#include "config/config.h"
#include "deliver/deliver.h"
#include "ingest/http.h"
#include "metrics/metrics.h"
#include "util/log.h"

struct serve {
    struct capid_config *cfg;
    struct capid_metrics *metrics;
    struct capid_deliver *dlv;
    struct capid_http *http; /* NULL without sources */
    int64_t clock_offset_s;
    char state_path[4096];
};

static void wake_delivery(void *arg)
{
    capid_deliver_wake(((struct serve *)arg)->dlv);
}

/* The HTTP server (ingest/http.h) starts here, once delivery has the queue
 * open; without `sources:` nobody may post, so there is no server. */
static int ingest_start(struct serve *s)
{
    if (!s->cfg->n_sources)
        return 0;
    struct capid_http_opts o = {.config_path = s->cfg->path,
                                .metrics = s->metrics,
                                .clock_offset_s = s->clock_offset_s,
                                .on_enqueued = wake_delivery,
                                .arg = s};
    struct capid_perr err = {0};
    if (capid_http_start(&s->http, &o, &err) != CAPID_OK) {
        fprintf(stderr, "capid serve: %s\n", err.msg ? err.msg : "cannot start the HTTP server");
        return -1;
    }
    return 0;
}

/* ... and stops here, before delivery stops (no new events accepted):
 * requests being processed finish (up to 5 s), every 202 was committed. */
static void ingest_stop(struct serve *s)
{
    capid_http_stop(s->http, 5000);
    capid_http_free(s->http);
    s->http = NULL;
}

static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: capid serve --config FILE [--shutdown-timeout-ms N] "
                    "[--log-level debug|info|warn|error]\n");
    return 2;
}

/* SIGHUP: a new configuration and new tokens, or the old ones kept. */
static void reload(struct serve *s)
{
    struct capid_perr err = {0};
    struct capid_config *cfg = NULL;
    if (capid_config_load(s->cfg->path, &cfg, &err) != CAPID_OK) {
        capid_error("cannot reload config '%s' (keeping the running one): %s", s->cfg->path,
                    err.msg ? err.msg : "invalid");
        return;
    }
    if (strcmp(cfg->queue.path, s->cfg->queue.path) != 0)
        capid_warn("queue.path changed in '%s': takes effect at the next start", s->cfg->path);
    err = (struct capid_perr){0};
    struct capid_deliver_settings *set = capid_deliver_settings_new(cfg, &err);
    if (!set) {
        capid_error("cannot reload config '%s' (keeping the running one): %s", s->cfg->path,
                    err.msg ? err.msg : "invalid");
        capid_config_free(cfg);
        return;
    }
    capid_deliver_reload(s->dlv, set);
    if (s->http && capid_http_reload(s->http, &err) != CAPID_OK)
        capid_error("cannot reload the HTTP sources from '%s' (keeping the running ones): %s",
                    cfg->path, err.msg ? err.msg : "invalid");
    capid_config_free(s->cfg);
    s->cfg = cfg;
    capid_info("configuration reloaded from '%s'", cfg->path);
}

int capid_cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"shutdown-timeout-ms", required_argument, NULL, 't'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    long long shutdown_ms = -1, v;
    int c, rc = 1;
    bool ingest_failed = false;
    struct serve s = {0};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 't':
            if (parse_int(optarg, 0, 3600000, &shutdown_ms))
                return usage();
            break;
        case 'l':
            if (!strcmp(optarg, "debug"))
                capid_log_set_level(CAPID_LOG_DEBUG);
            else if (!strcmp(optarg, "info"))
                capid_log_set_level(CAPID_LOG_INFO);
            else if (!strcmp(optarg, "warn"))
                capid_log_set_level(CAPID_LOG_WARN);
            else if (!strcmp(optarg, "error"))
                capid_log_set_level(CAPID_LOG_ERROR);
            else
                return usage();
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
    int64_t offset = 0;
    const char *off = getenv("CAPID_CLOCK_OFFSET");
    if (off && *off) {
        if (parse_int(off, -4000000000LL, 4000000000LL, &v)) {
            fprintf(stderr, "capid serve: CAPID_CLOCK_OFFSET '%s' is not a number of seconds\n",
                    off);
            return 2;
        }
        offset = v;
    }
    s.clock_offset_s = offset;
    s.cfg = capid_cli_load_config("serve", config);
    if (!s.cfg)
        return 2;
    /* Signals are taken by sigtimedwait in this thread only: block them
     * before any other thread starts, so every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct capid_perr err = {0};
    struct capid_deliver_settings *settings = capid_deliver_settings_new(s.cfg, &err);
    if (!settings) {
        fprintf(stderr, "capid serve: %s\n", err.msg);
        rc = 2;
        goto out;
    }
    const char **names = calloc(s.cfg->n_dests + 1, sizeof(*names));
    if (!names)
        abort();
    int max_timeout = 0;
    for (size_t i = 0; i < s.cfg->n_dests; i++) {
        names[i] = s.cfg->dests[i].name;
        if (s.cfg->dests[i].delivery.timeout_ms > max_timeout)
            max_timeout = s.cfg->dests[i].delivery.timeout_ms;
    }
    s.metrics = capid_metrics_new(names, s.cfg->n_dests);
    free(names);
    if (shutdown_ms < 0) /* default: long enough for one request to finish */
        shutdown_ms = max_timeout + 1000 < 30000 ? max_timeout + 1000 : 30000;
    capid_deliver_state_path(s.cfg->queue.path, s.state_path, sizeof(s.state_path));
    struct capid_deliver_opts dopts = {
        .queue_path = s.cfg->queue.path,
        .sync_normal = s.cfg->queue.synchronous == CAPID_SYNC_NORMAL,
        .keep_delivered_s = s.cfg->queue.keep_delivered_s,
        .metrics = s.metrics,
        .state_path = s.state_path,
        .clock_offset_s = offset,
    };
    if (capid_deliver_start(&s.dlv, &dopts, settings, &err) != CAPID_OK) {
        fprintf(stderr, "capid serve: %s\n", err.msg ? err.msg : "cannot start delivery");
        goto out;
    }
    if (offset)
        capid_warn("CAPID_CLOCK_OFFSET=%lld: the clock is shifted (test only)", (long long)offset);
    ingest_failed = ingest_start(&s) != 0;
    if (ingest_failed)
        goto stop;
    capid_info("serving %zu destinations from queue '%s' (pid %ld)", s.cfg->n_dests,
               s.cfg->queue.path, (long)getpid());
    for (;;) {
        struct timespec tick = {0, 500 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (capid_deliver_failed(s.dlv))
            break;
        if (s.http && capid_http_failed(s.http)) {
            ingest_failed = true;
            break;
        }
        if (sig == SIGHUP)
            reload(&s);
        else if (sig == SIGTERM || sig == SIGINT) {
            capid_info("stopping on %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
    }
    ingest_stop(&s);
stop:
    rc = capid_deliver_stop(s.dlv, (int)shutdown_ms) == CAPID_OK && !ingest_failed ? 0 : 1;
    capid_info("stopped%s", rc ? " after a queue failure" : "");
out:
    capid_deliver_free(s.dlv);
    capid_metrics_free(s.metrics);
    capid_config_free(s.cfg);
    return rc;
}
