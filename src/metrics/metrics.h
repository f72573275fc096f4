/* In-process metrics (issue 4 item 5): counters and gauges per destination
 * and reason, updated by the delivery loop and read by anyone (the HTTP
 * server will expose them; `capid serve` also writes them to its state
 * file). Updates and reads are lock-free (relaxed atomics); the set of
 * destinations is fixed when the registry is created or reset. */
#ifndef CAPID_METRICS_METRICS_H
#define CAPID_METRICS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "capi/reason.h"
#include "deliver/classify.h"
#include "util/buf.h"

/* Counters of one destination. */
enum capid_counter {
    CAPID_C_REQUESTS = 0,     /* Graph requests completed (any outcome) */
    CAPID_C_EVENTS_SENT,      /* events carried by those requests */
    CAPID_C_EVENTS_DELIVERED, /* events confirmed by a 2xx */
    CAPID_C_EVENTS_RETRIED,   /* events put back with a backoff (retry or throttled) */
    CAPID_C_ANOMALIES,        /* 2xx that did not confirm the batch */
    CAPID_C_SPLITS,           /* rejected batches split in halves */
    CAPID_C_PAUSES,           /* times the destination was paused */
    CAPID_C_PROBES,           /* requests sent while paused */
    CAPID_C_EVENTS_ENQUEUED,  /* committed to the queue by this process */
    CAPID_C__COUNT
};

/* Gauges of one destination. */
enum capid_gauge {
    CAPID_G_INFLIGHT = 0, /* requests on the wire */
    CAPID_G_CONCURRENCY,  /* current concurrency limit (AIMD) */
    CAPID_G_PAUSED,       /* 1 while paused */
    CAPID_G_LINGERING,    /* events leased, waiting for a fuller batch */
    CAPID_G__COUNT
};

/* Graph error codes counted one by one (SPEC 7 table); every other code is
 * counted as "other", a failure without a Graph code (5xx page, timeout,
 * connection error, 2xx with a wrong count) as "none". */
#define CAPID_GRAPH_CODE_SLOTS 15
/* The label of a slot ("190", "80000-80014", "other", "none"). */
const char *capid_metrics_graph_code_label(int slot);
/* The slot of a Graph error code (0 = no code). */
int capid_metrics_graph_code_slot(int code);

struct capid_metrics_dest {
    char name[65];
    _Atomic uint64_t graph_error[CAPID_GRAPH_CODE_SLOTS]; /* failed requests by Graph code */
    _Atomic uint64_t counter[CAPID_C__COUNT];
    _Atomic uint64_t outcome[CAPID_OUT__COUNT]; /* requests by outcome */
    _Atomic uint64_t dead[CAPID_R__COUNT];      /* events dead-lettered, by reason */
    _Atomic uint64_t skipped[CAPID_R__COUNT];   /* events refused at enqueue, by reason */
    _Atomic int64_t gauge[CAPID_G__COUNT];
};

struct capid_metrics {
    size_t n;
    struct capid_metrics_dest *dests;
};

/* Allocates one set per destination name (names are copied, at most 64
 * bytes). Returns NULL on allocation failure. capid_metrics_free(NULL) is a
 * no-op. */
struct capid_metrics *capid_metrics_new(const char *const *names, size_t n);
void capid_metrics_free(struct capid_metrics *m);

/* The set of a destination, NULL when unknown. */
struct capid_metrics_dest *capid_metrics_dest(struct capid_metrics *m, const char *name);

static inline void capid_metrics_add(struct capid_metrics_dest *d, enum capid_counter c, uint64_t n)
{
    if (d)
        atomic_fetch_add_explicit(&d->counter[c], n, memory_order_relaxed);
}
static inline void capid_metrics_outcome(struct capid_metrics_dest *d, enum capid_outcome o)
{
    if (d)
        atomic_fetch_add_explicit(&d->outcome[o], 1, memory_order_relaxed);
}
static inline void capid_metrics_dead(struct capid_metrics_dest *d, enum capid_reason r, uint64_t n)
{
    if (d)
        atomic_fetch_add_explicit(&d->dead[r], n, memory_order_relaxed);
}
static inline void capid_metrics_skip(struct capid_metrics_dest *d, enum capid_reason r)
{
    if (d)
        atomic_fetch_add_explicit(&d->skipped[r], 1, memory_order_relaxed);
}
/* Counts one failed request (any outcome but delivered) by its Graph code. */
static inline void capid_metrics_graph_error(struct capid_metrics_dest *d, int code)
{
    if (d)
        atomic_fetch_add_explicit(&d->graph_error[capid_metrics_graph_code_slot(code)], 1,
                                  memory_order_relaxed);
}
static inline void capid_metrics_set(struct capid_metrics_dest *d, enum capid_gauge g, int64_t v)
{
    if (d)
        atomic_store_explicit(&d->gauge[g], v, memory_order_relaxed);
}

/* Metric names as exposed ("requests_total", ...). */
const char *capid_counter_name(enum capid_counter c);
const char *capid_gauge_name(enum capid_gauge g);

/* Appends the metrics as one JSON object {"<dest>":{"requests_total":N,
 * ...,"outcomes":{...},"dead":{"<reason>":N},"skipped":{...}}} (zeros
 * left out of the per-reason maps). Returns CAPID_OK or a buf error. */
int capid_metrics_write_json(const struct capid_metrics *m, struct capid_buf *out);
/* Appends the Prometheus text format (capid_<name>{destination="..."}). */
int capid_metrics_write_prometheus(const struct capid_metrics *m, struct capid_buf *out);

#endif
