/* Graph API HTTP client: many concurrent POSTs on ONE libcurl multi handle
 * (one event loop, no thread per request). Connections are kept alive and
 * shared between requests, HTTP/2 is used when the server offers it over
 * TLS (ALPN), TLS peers are verified, redirects are never followed, and
 * every request has a whole-request timeout.
 *
 * Not thread-safe: one thread owns a struct capid_graph and its requests,
 * except capid_graph_wake, which any thread may call. */
#ifndef CAPID_DELIVER_GRAPH_H
#define CAPID_DELIVER_GRAPH_H

#include <stdint.h>

#include "deliver/classify.h"
#include "util/buf.h"

#define CAPID_GRAPH_MAX_RESPONSE (1u << 20) /* bytes of a response body kept */

struct capid_graph;

/* One request. The caller fills body (the JSON to POST, which holds the
 * access token: it never goes to a URL, argv or a log line), then sends it;
 * when it completes, result describes what came back (body points into
 * resp). user is the caller's. */
struct capid_graph_req {
    struct capid_buf body;
    struct capid_buf resp;
    struct capid_graph_result result;
    int64_t started_ms; /* monotonic, set by capid_graph_send */
    void *user;
    /* private */
    void *easy;
    struct capid_graph_req *next;
    int64_t retry_after_ms;
    int active;       /* added to the multi handle */
    char errbuf[256]; /* libcurl's error text (CURLOPT_ERRORBUFFER) */
};

/* Creates the client (libcurl's global init happens once per process).
 * user_agent is copied. Returns NULL when libcurl cannot be set up. */
struct capid_graph *capid_graph_new(const char *user_agent);
/* Aborts what is still in flight and frees everything; NULL is a no-op. */
void capid_graph_free(struct capid_graph *g);

/* A request with empty buffers (reused from a free list when possible).
 * Never NULL: out of memory aborts (STYLE: capped inputs, then abort). */
struct capid_graph_req *capid_graph_req_new(struct capid_graph *g);
/* Returns a request that is not in flight to the free list. */
void capid_graph_req_free(struct capid_graph *g, struct capid_graph_req *r);

/* Starts POST url with r->body as application/json. timeout_ms bounds the
 * whole request (connect included). Returns CAPID_OK or CAPID_EINVAL (bad
 * URL scheme: only http and https). */
int capid_graph_send(struct capid_graph *g, struct capid_graph_req *r, const char *url,
                     long timeout_ms);

/* Waits up to timeout_ms for network activity or capid_graph_wake, then
 * moves the transfers forward. Finished requests are collected with
 * capid_graph_done. Returns CAPID_OK or CAPID_EIO (libcurl failure). */
int capid_graph_poll(struct capid_graph *g, int timeout_ms);
/* Pops one finished request (result filled), or NULL. The caller owns it
 * again (capid_graph_req_free or resend). */
struct capid_graph_req *capid_graph_done(struct capid_graph *g);
/* Cancels an in-flight request; the caller owns it again. */
void capid_graph_abort(struct capid_graph *g, struct capid_graph_req *r);

/* Requests on the wire. */
int capid_graph_inflight(const struct capid_graph *g);

/* Interrupts a capid_graph_poll; callable from any thread. */
void capid_graph_wake(struct capid_graph *g);

#endif
