/* HTTP ingestion (issue 5): the server inside `capid serve` that accepts
 * Commanders Act events, maps them for every destination of the sending
 * source, commits them to the durable queue and only then answers 202.
 *
 *   POST /events         one event (application/json)
 *   POST /events/batch   {"batch":[...]}, a JSON array, or NDJSON
 *                        (application/x-ndjson)
 *   GET  /healthz        process alive
 *   GET  /readyz         queue usable and not shutting down
 *   GET  /metrics        Prometheus text
 *
 * libmicrohttpd with its internal epoll thread pool (server.threads
 * threads). Each worker thread has its own mapper and its own queue
 * connection for reads; concurrent requests are committed together (group
 * commit) through one commit connection, each request's events in one
 * transaction. docs/HTTP.md is the reference for statuses, bodies, limits
 * and timeouts. */
#ifndef CAPID_INGEST_HTTP_H
#define CAPID_INGEST_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "metrics/metrics.h"
#include "util/err.h"

struct capid_http;

struct capid_http_opts {
    /* The configuration file: the server loads and owns its own copy (its
     * `server`, `sources`, `destinations` and `queue` sections), so a reload
     * of the caller's copy never pulls it from under a request. */
    const char *config_path;
    struct capid_metrics *metrics; /* borrowed, may be NULL; must outlive the server */
    int64_t clock_offset_s;        /* TEST ONLY: shifts the clock used for event ages */
    /* Called (from a worker thread) after events were committed, e.g.
     * capid_deliver_wake. May be NULL. */
    void (*on_enqueued)(void *arg);
    void *arg;
};

/* Loads the configuration, reads every source's ingest key, opens the
 * commit connection to the queue, binds server.listen and starts the worker
 * threads; once requests are accepted, writes the bound port to
 * server.ready_file (if set). Returns CAPID_OK, CAPID_ECONFIG (bad
 * configuration, no sources, unreadable key, unknown destination in a
 * source: err names it, never a key), CAPID_EIO (cannot bind or start) or
 * an error of capid_queue_open; *out is NULL on error. */
int capid_http_start(struct capid_http **out, const struct capid_http_opts *o,
                     struct capid_perr *err);

/* The bound TCP port. */
unsigned capid_http_port(const struct capid_http *h);

/* Reloads the configuration file (SIGHUP): sources, keys, mapping settings
 * and limits apply to requests that start afterwards; listen, threads and
 * connection limits need a restart. On error keeps the running
 * configuration and returns the error with err filled. */
int capid_http_reload(struct capid_http *h, struct capid_perr *err);

/* True once a worker's queue connection failed for good (write or fsync
 * error, corruption): every POST is answered 503 and the process should
 * stop and be restarted (queue/queue.h). Thread-safe. */
bool capid_http_failed(const struct capid_http *h);

/* Stops accepting connections, answers 503 to requests that arrive on open
 * connections, waits up to drain_ms for requests being processed to finish,
 * then stops the threads and removes the ready file. Every event answered
 * 202 was committed before its answer. Idempotent. */
void capid_http_stop(struct capid_http *h, int drain_ms);

/* Stops (if running, with a 2 s drain) and frees; NULL is a no-op. */
void capid_http_free(struct capid_http *h);

#endif
