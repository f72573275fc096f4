/* The delivery loop (SPEC 6-7, issue 4 item 2): per destination, lease
 * batches of up to max_batch events from the durable queue (waiting up to
 * linger_ms for a fuller batch), POST them to the Graph API with up to
 * max_inflight requests at once on one libcurl multi loop, classify each
 * answer (deliver/classify.h) and record the outcome in the queue.
 *
 * One thread runs the loop and owns its queue connection and HTTP client;
 * the functions below are called from another thread (the one that handles
 * signals in `capid serve`) and are thread-safe unless noted.
 * docs/DELIVERY.md describes the behaviour in full. */
#ifndef CAPID_DELIVER_DELIVER_H
#define CAPID_DELIVER_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "metrics/metrics.h"
#include "util/err.h"

#define CAPID_DELIVER_MAX_BODY (8u << 20) /* bytes of one request body */

struct capid_deliver;

/* What the destinations of a configuration need for delivery, with their
 * access tokens read (env or file). Built in the caller's thread so that a
 * bad token file is reported before anything changes. */
struct capid_deliver_settings;

/* Reads every destination's token and copies its URL and delivery values.
 * Returns NULL with err set (naming the destination and the variable or
 * file, never the token). */
struct capid_deliver_settings *capid_deliver_settings_new(const struct capid_config *cfg,
                                                          struct capid_perr *err);
void capid_deliver_settings_free(struct capid_deliver_settings *s);

struct capid_deliver_opts {
    const char *queue_path;
    bool sync_normal;
    int64_t keep_delivered_s;
    struct capid_metrics *metrics; /* borrowed, may be NULL; must outlive the loop */
    const char *state_path;        /* pause state and metrics (JSON), NULL: none */
    int64_t clock_offset_s;        /* TEST ONLY: shifts the wall clock (event ages, queue) */
    int housekeep_interval_ms;     /* default 5000 */
    int idle_poll_ms;              /* queue poll when idle, default 100 */
};

/* Opens the queue, returns rows a crashed process left leased
 * (capid_queue_recover) and starts the loop thread. Takes ownership of s
 * (also on error). Returns CAPID_OK or an error with err filled. */
int capid_deliver_start(struct capid_deliver **out, const struct capid_deliver_opts *o,
                        struct capid_deliver_settings *s, struct capid_perr *err);

/* Hands over new settings (ownership taken): destinations are matched by
 * name, tokens and delivery values replaced, paused destinations probed at
 * once, new destinations started, removed ones stop leasing. */
void capid_deliver_reload(struct capid_deliver *d, struct capid_deliver_settings *s);

/* Tells the loop that events were just enqueued (skips the idle poll). */
void capid_deliver_wake(struct capid_deliver *d);

/* True once the loop stopped on its own because the queue failed (I/O
 * error, corruption): the process should exit non-zero and be restarted. */
bool capid_deliver_failed(struct capid_deliver *d);

/* Clean stop: no more leasing, unsent batches released, in-flight requests
 * awaited up to timeout_ms, then aborted and their events put back (a
 * retry, ready now). Joins the thread. Returns CAPID_OK, or CAPID_EIO if
 * the queue failed. Not thread-safe against itself. */
int capid_deliver_stop(struct capid_deliver *d, int timeout_ms);

/* The state file `capid serve` keeps next to the queue (queue_path +
 * ".state.json": pid, pause state per destination, metrics), read by
 * `capid status`. Writes the path to out (truncated to cap). */
void capid_deliver_state_path(const char *queue_path, char *out, size_t cap);

/* Frees a stopped deliverer; NULL is a no-op. */
void capid_deliver_free(struct capid_deliver *d);

#endif
