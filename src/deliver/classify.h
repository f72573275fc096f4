/* Graph API response classification (SPEC 7's table), backoff with full
 * jitter, and the two age rules of delivery. Pure functions: no I/O, no
 * clock, no global state; a table-driven unit test covers every row. */
#ifndef CAPID_DELIVER_CLASSIFY_H
#define CAPID_DELIVER_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What to do with a batch after one request (SPEC 7). */
enum capid_outcome {
    CAPID_OUT_DELIVERED = 0, /* 2xx with events_received == batch size */
    CAPID_OUT_RETRY,         /* transient: back off and send again */
    CAPID_OUT_THROTTLED,     /* rate limited: wait (Retry-After), lower concurrency */
    CAPID_OUT_PAUSE,         /* token or permission: stop the destination, keep events */
    CAPID_OUT_REJECT,        /* bad payload: split until the bad events are isolated */
    CAPID_OUT__COUNT
};

/* Static lowercase name ("delivered", "retry", ...). */
const char *capid_outcome_name(enum capid_outcome o);

/* Transport result of one request, as the HTTP client saw it. */
enum capid_transport {
    CAPID_TR_OK = 0,  /* a complete HTTP response (any status) */
    CAPID_TR_TIMEOUT, /* the request timed out */
    CAPID_TR_CONNECT, /* could not connect, resolve or complete TLS */
    CAPID_TR_IO,      /* connection reset or broken mid-request/response */
};

struct capid_graph_result {
    enum capid_transport transport;
    long status;      /* HTTP status; 0 without a response */
    const char *body; /* response body (need not be NUL-terminated), may be NULL */
    size_t body_len;
    int64_t retry_after_ms; /* parsed Retry-After header, -1 when absent */
    const char *detail;     /* transport error text (libcurl's), may be NULL */
};

/* The decision and what the response said, for logs, metrics and dead
 * letters. Strings are NUL-terminated and truncated to fit. */
struct capid_verdict {
    enum capid_outcome outcome;
    bool anomaly;           /* a 2xx that did not confirm the batch */
    long events_received;   /* 2xx: as parsed, -1 when absent */
    int code, subcode;      /* Graph error code/subcode, 0 when none */
    int is_transient;       /* -1 absent, else 0/1 */
    int64_t retry_after_ms; /* non-2xx: the server's Retry-After, -1 when not given */
    char fbtrace_id[64];
    char message[256];     /* Graph's message or a transport description */
    char error_json[1024]; /* Graph's "error" object as compact JSON, "" when none */
};

/* Classifies one response to a batch of nevents events (SPEC 7):
 *   2xx + events_received == nevents                    -> delivered
 *   2xx otherwise (other count, body not JSON)          -> retry, anomaly
 *   Graph 190, 102, 10, 200-299                         -> pause
 *   HTTP 429, Graph 4, 17, 32, 613, 80000-80014         -> throttled
 *   transport error, 5xx, Graph 1 or 2, is_transient    -> retry
 *   HTTP 408 (a proxy's request timeout)                -> retry
 *   any other 4xx (code 100, 368, an HTML 4xx ...)      -> reject
 *   anything else (1xx, 3xx: redirects are not followed) -> retry
 * Code rules are checked before status rules, so a token error wrapped in a
 * 5xx still pauses. Always fills v. */
void capid_deliver_classify(const struct capid_graph_result *r, size_t nevents,
                            struct capid_verdict *v);

/* Parses a Retry-After value (RFC 9110: delta-seconds or an HTTP-date,
 * relative to now_s) into milliseconds >= 0; -1 when unparsable. */
int64_t capid_retry_after_parse(const char *value, int64_t now_s);

/* Exponential backoff with full jitter (SPEC 7): a delay uniformly drawn
 * from [0, min(max_ms, initial_ms * 2^(attempt-1))] with attempt >= 1 the
 * number of failed attempts so far. rnd is a uniform 64-bit random value
 * (the caller's generator, so tests can pin it). */
int64_t capid_backoff_ms(int attempt, int64_t initial_ms, int64_t max_ms, uint64_t rnd);

/* The upper bound of capid_backoff_ms for attempt (no jitter). */
int64_t capid_backoff_cap_ms(int attempt, int64_t initial_ms, int64_t max_ms);

/* Meta's age limits (meta-capi-spec 1.5): 7 days, 62 for physical_store. */
#define CAPID_MAX_AGE_S       (7 * 86400)
#define CAPID_MAX_AGE_STORE_S (62 * 86400)

/* True when an event of that time and action_source (may be NULL) is past
 * its age limit at now_s, so it must be dead-lettered event_too_old. */
bool capid_deliver_too_old(int64_t event_time, const char *action_source, int64_t now_s);

/* True when a failed event must be dead-lettered retry_window_exceeded:
 * only after BOTH max_attempts attempts (counting the one that just failed)
 * and retry_window_s seconds since it was enqueued (SPEC 7). */
bool capid_deliver_window_exceeded(int attempts, int max_attempts, int64_t enqueued_at,
                                   int64_t retry_window_s, int64_t now_s);

#endif
