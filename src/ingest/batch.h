/* HTTP request body -> event spans (issue 5). The body of POST /events is
 * one event; the body of POST /events/batch is `{"batch":[...]}` (the
 * Commanders Act HTTP Tracking API shape, reference/cact-input.md 3.1), a
 * JSON array of events, or NDJSON (one event per line, chosen by the
 * Content-Type application/x-ndjson).
 *
 * The splitter only finds where each event starts and ends, in one pass and
 * without recursion: it follows strings and brackets, checks the nesting
 * depth (so a 10,000-deep body is refused at byte max_depth + 1 rather than
 * parsed) and counts events (so a body with too many is refused at the
 * first one over the limit). It does not validate inside an event: each
 * span goes to capid_event_parse, which does (syntax, UTF-8, NUL, depth,
 * size, duplicate keys). docs/HTTP.md lists the accepted shapes. */
#ifndef CAPID_INGEST_BATCH_H
#define CAPID_INGEST_BATCH_H

#include <stddef.h>

#include "util/err.h"

enum capid_batch_format {
    CAPID_BATCH_ONE,    /* the whole body is one event (POST /events) */
    CAPID_BATCH_JSON,   /* {"batch":[e, ...]} or [e, ...] */
    CAPID_BATCH_NDJSON, /* one event per non-blank line */
};

/* One event: body[off .. off + len). line is the 1-based line of an NDJSON
 * event, 0 for the other formats. */
struct capid_batch_event {
    size_t off, len;
    size_t line;
};

/* Caller-owned storage, reused across bodies. */
struct capid_batch {
    struct capid_batch_event *ev;
    size_t n, cap;
};

struct capid_batch_limits {
    size_t max_events; /* events in one body (SPEC 2: 1000) */
    int max_depth;     /* nesting of one event (SPEC 2: 32); the wrapper does not count */
};

void capid_batch_init(struct capid_batch *b);
void capid_batch_release(struct capid_batch *b);

/* Splits body[0..len) (need not be NUL-terminated) in format f into b->ev
 * (b is reset first). Returns
 *   CAPID_OK      b->n events (0 for `[]` or `{"batch":[]}`);
 *   CAPID_EPARSE  the body is not one of the shapes (empty, unbalanced
 *                 brackets, unterminated string, nesting over max_depth,
 *                 a trailing comma, bytes after the batch, ...): err->msg
 *                 says what, err->offset where (a byte offset in the body),
 *                 err->line the NDJSON line when known;
 *   CAPID_ETOOBIG more than lim->max_events events (err says so);
 *   CAPID_ENOMEM.
 * Thread-safe (no global state). */
int capid_batch_split(struct capid_batch *b, const char *body, size_t len,
                      enum capid_batch_format f, const struct capid_batch_limits *lim,
                      struct capid_perr *err);

#endif
