/* Durable event queue (SPEC 7, issue 4): accepted CAPI events are committed
 * here before the sender is acknowledged, then leased in batches per
 * destination, and end delivered or dead-lettered with a reason.
 *
 * The interface is backend-neutral (SQLite today, NATS JetStream later): rows
 * are addressed by an opaque, never reused 64-bit id; times are epoch seconds
 * passed in by the caller (`now`), so tests control the clock.
 *
 * Row life: enqueue -> queued -> lease -> leased -> delivered | retry (queued
 * again at next_attempt_at) | dead | release (queued, attempts unchanged).
 * Dead rows go back to queued only by replay. Delivered rows keep their
 * metadata (not the payload) for keep_delivered_s, then housekeeping purges
 * them; the dedup key of every event lives dedup_window_s, independently.
 *
 * Errors: functions return CAPID_OK or a count >= 0, or a negative capid_err:
 * CAPID_EBUSY when another connection held the write lock past
 * busy_timeout_ms (retry later), CAPID_EIO on disk errors (disk full, write or
 * fsync failure, corruption), CAPID_EINVAL on bad arguments. A failed write
 * commits nothing. After a write or fsync failure or corruption the handle is
 * failed for good (see capid_queue_failed): the process should stop and
 * restart rather than retry an fsync (the PostgreSQL "fsyncgate" lesson).
 *
 * Threads and processes: a handle is one connection (plus a checkpoint
 * thread with its own connection); use it from one thread at a time (it may
 * move between threads, never across fork()). Any number of handles, in one
 * process or several (an importer and the server), may share one file.
 * Leases belong to the delivering process: exactly one process delivers from
 * a file, and it calls capid_queue_recover() once at startup, before its
 * first lease. Nothing else may call recover. */
#ifndef CAPID_QUEUE_QUEUE_H
#define CAPID_QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define CAPID_QUEUE_DEDUP_WINDOW_S   172800 /* Meta dedups event_id + event_name for 48 h */
#define CAPID_QUEUE_KEEP_DELIVERED_S 86400  /* issue 4: delivered rows kept 24 h */
#define CAPID_QUEUE_BUSY_TIMEOUT_MS  5000
#define CAPID_QUEUE_MAX_PAYLOAD      1048576 /* bytes per event payload */
#define CAPID_QUEUE_MAX_KEY          1024    /* bytes of dest, event_name, event_id */
#define CAPID_QUEUE_MAX_LEASE        10000   /* rows per lease */
#define CAPID_QUEUE_HOUSEKEEP_BATCH  1000    /* rows deleted per transaction */
#define CAPID_QUEUE_HOUSEKEEP_MAX    8000    /* rows deleted per housekeep call */

enum capid_queue_state {
    CAPID_QUEUE_QUEUED = 0,
    CAPID_QUEUE_LEASED = 1,
    CAPID_QUEUE_DELIVERED = 2,
    CAPID_QUEUE_DEAD = 3,
};

/* Static lowercase name of a state ("queued", ...); "unknown" otherwise. */
const char *capid_queue_state_name(int state);

struct capid_queue; /* opaque: one connection */

/* Zero means the default for every numeric field, so `{.path = p}` is a
 * complete configuration. */
struct capid_queue_opts {
    const char *path;         /* one SQLite file; created unless no_create */
    bool sync_normal;         /* false: synchronous=FULL (default); true: NORMAL */
    bool no_create;           /* fail with CAPID_ENOTFOUND if the file is absent */
    int64_t dedup_window_s;   /* default CAPID_QUEUE_DEDUP_WINDOW_S */
    int64_t keep_delivered_s; /* default CAPID_QUEUE_KEEP_DELIVERED_S */
    int busy_timeout_ms;      /* default CAPID_QUEUE_BUSY_TIMEOUT_MS */
};

/* Opens (and creates or migrates to the current schema) the queue at o->path.
 * Refuses a file that is not a capid queue or has a newer schema version,
 * rather than starting empty over it. On success *q owns the connection;
 * on error *q is NULL, err (may be NULL) names the file and the cause, and the
 * return is CAPID_ESTATE (not a capid queue, or a newer schema),
 * CAPID_ENOTFOUND (no_create and no file), CAPID_EIO (unreadable, not a
 * database), CAPID_EBUSY, CAPID_EINVAL or CAPID_ENOMEM. */
int capid_queue_open(struct capid_queue **q, const struct capid_queue_opts *o,
                     struct capid_perr *err);
/* Finalizes statements and closes the connection. NULL is a no-op. Rows
 * leased through q stay leased (use capid_queue_release first on a clean
 * stop). */
void capid_queue_close(struct capid_queue *q);

/* True once q hit an error that makes it unusable (write/fsync I/O error,
 * corruption): every later call returns CAPID_EIO. Disk full is not such an
 * error: it fails one transaction and the next may succeed. */
bool capid_queue_failed(const struct capid_queue *q);

/* Startup recovery, by the delivering process only, before its first lease:
 * every row left leased by a crashed process goes back to queued, ready now,
 * with attempts + 1 (its request may have been sent). Returns the count. */
int capid_queue_recover(struct capid_queue *q);

struct capid_queue_item {
    /* in: borrowed for the call. payload is the hashed CAPI event JSON,
     * never raw PII; dest, event_name and event_id are required. */
    const char *dest, *event_name, *event_id, *action_source; /* action_source may be NULL */
    int64_t event_time;
    /* Set when event_id was derived from the event's own bytes, which carry
     * id_time (capid_mapped.id_time): the dedup key then starts with that
     * time, so that such keys, random hex, are stored in time order. The
     * same id always comes with the same id_time, so duplicates still meet. */
    bool has_id_time;
    int64_t id_time;
    const char *payload;
    size_t payload_len; /* <= CAPID_QUEUE_MAX_PAYLOAD */
    /* out: CAPID_OK (stored) or CAPID_EDUP (same dest + event_name + event_id
     * enqueued less than dedup_window_s before now, or earlier in this call). */
    int result;
};

/* An import position committed in the same transaction as the events
 * (issue 6): key names the input (e.g. a file's content hash). */
struct capid_queue_mark {
    const char *key;
    int64_t position;
    bool done;
};

/* Stores items[0..n) and, when mark is not NULL, sets the mark, all in ONE
 * transaction (group commit: callers should pass 100-1000 events at once),
 * and returns only once the transaction is durable: on disk with FULL; with
 * NORMAL it survives a process crash but the last commits may be lost on
 * power loss. New rows are queued, ready at now. Duplicates are skipped and
 * reported in items[i].result (results are meaningful only when CAPID_OK is
 * returned). Either all non-duplicate items and the mark are committed, or
 * nothing (error returned). Returns CAPID_OK, CAPID_EINVAL (missing field),
 * CAPID_ETOOBIG (payload over the cap; nothing stored), CAPID_EBUSY, CAPID_EIO. */
int capid_queue_enqueue(struct capid_queue *q, struct capid_queue_item *items, size_t n,
                        int64_t now, const struct capid_queue_mark *mark);
/* Reads a mark. Returns CAPID_OK, CAPID_ENOTFOUND (never set) or CAPID_EIO. */
int capid_queue_mark_get(struct capid_queue *q, const char *key, int64_t *position, bool *done);

/* One stored event. Strings are NUL-terminated and owned by the batch; a
 * field a function does not fill is NULL or 0. */
struct capid_queue_row {
    int64_t id;
    int state; /* enum capid_queue_state */
    char *dest, *event_name, *event_id, *action_source;
    char *payload; /* NULL for delivered rows (dropped at delivery) and in dead lists */
    size_t payload_len;
    int64_t event_time, enqueued_at;
    int64_t next_attempt_at; /* queued rows: when it may be leased */
    int64_t changed_at;      /* last lease, retry, delivery, dead-letter or replay */
    int attempts;            /* requests that carried this event so far */
    char *last_error;        /* retry error, or Meta's error JSON for a dead row */
    char *reason;            /* dead rows: SPEC 8 reason code */
    char *fbtrace_id;        /* delivered rows */
};

/* Rows returned by lease, dead_list and show. Caller-owned storage: zero it
 * or let the function fill it; free with capid_queue_batch_release. */
struct capid_queue_batch {
    struct capid_queue_row *rows;
    size_t n;
    void *mem_; /* private */
};
/* Frees what a batch holds and zeroes it; safe on a zeroed batch. */
void capid_queue_batch_release(struct capid_queue_batch *b);

/* Leases up to max (<= CAPID_QUEUE_MAX_LEASE) queued rows of dest whose
 * next_attempt_at <= now, those ready first (next_attempt_at, then id), and
 * marks them leased in one transaction. out is overwritten (release it
 * before reuse); out->n == 0 when nothing is ready. Every leased row must
 * later be passed to exactly one of delivered, retry, dead or release.
 * Returns CAPID_OK, CAPID_EINVAL, CAPID_EBUSY, CAPID_EIO. */
int capid_queue_lease(struct capid_queue *q, const char *dest, size_t max, int64_t now,
                      struct capid_queue_batch *out);

/* The outcome functions below act in one transaction on those of ids[0..n)
 * that are currently leased (others are skipped: they may have been
 * recovered) and return how many rows changed, or a negative capid_err. */

/* Delivered (SPEC 7: 2xx with the full count): keeps fbtrace_id (may be NULL),
 * attempts + 1, and drops the payload; the row is purged keep_delivered_s
 * after now. */
int capid_queue_delivered(struct capid_queue *q, const int64_t *ids, size_t n,
                          const char *fbtrace_id, int64_t now);
/* Failed attempt: attempts + 1, queued again at next_attempt_at, last_error
 * kept (may be NULL). */
int capid_queue_retry(struct capid_queue *q, const int64_t *ids, size_t n, int64_t next_attempt_at,
                      const char *last_error, int64_t now);
/* Not sent (shutdown, paused destination): queued again, ready as before,
 * attempts unchanged. */
int capid_queue_release(struct capid_queue *q, const int64_t *ids, size_t n);
/* Dead-letters with a SPEC 8 reason (required) and Meta's error JSON (may be
 * NULL). attempted says whether these rows were just sent (graph_rejected,
 * retry_window_exceeded: attempts + 1) or not (event_too_old). The payload is
 * kept for replay. */
int capid_queue_dead(struct capid_queue *q, const int64_t *ids, size_t n, const char *reason,
                     const char *error_json, bool attempted, int64_t now);

/* Earliest next_attempt_at of dest's queued rows (may be <= now: ready).
 * Returns CAPID_OK, CAPID_ENOTFOUND (no queued row) or CAPID_EIO. */
int capid_queue_next_ready(struct capid_queue *q, const char *dest, int64_t *at);

struct capid_queue_counts {
    int64_t queued, leased, delivered, dead;
    /* Oldest among rows not yet delivered or dead (queued or leased); 0 if none. */
    int64_t oldest_event_time, oldest_enqueued_at;
};
/* Counts rows by state for dest, or for all destinations when dest is NULL.
 * Cost grows with the number of rows (a status query, not a hot path). */
int capid_queue_counts(struct capid_queue *q, const char *dest, struct capid_queue_counts *out);
/* Destination names that have rows, sorted, as a NULL-terminated array in one
 * heap block (*out; the caller free()s it). Returns the count or an error. */
int capid_queue_dests(struct capid_queue *q, char ***out);

/* Reads one row by id, in any state, with its payload (dead letter "show").
 * Returns CAPID_OK, CAPID_ENOTFOUND or an error; out is overwritten. */
int capid_queue_show(struct capid_queue *q, int64_t id, struct capid_queue_batch *out);

/* Selects dead rows: every set criterion must hold. */
struct capid_queue_dead_filter {
    const int64_t *ids; /* with n_ids > 0: only these ids */
    size_t n_ids;
    const char *dest;   /* NULL: any destination */
    const char *reason; /* NULL: any reason */
    int64_t before;     /* > 0: dead-lettered before this time */
};
/* Lists up to limit (<= CAPID_QUEUE_MAX_LEASE) dead rows matching f (NULL:
 * all) with id > after_id, by id (explicit ids: in the given order), without
 * payloads (use capid_queue_show). out is overwritten. */
int capid_queue_dead_list(struct capid_queue *q, const struct capid_queue_dead_filter *f,
                          int64_t after_id, size_t limit, struct capid_queue_batch *out);
/* Puts matching dead rows back to queued, ready at now, attempts 0, reason
 * and error cleared (the dedup window does not apply: same row), in
 * transactions of CAPID_QUEUE_HOUSEKEEP_BATCH rows. Returns the count. */
int capid_queue_dead_replay(struct capid_queue *q, const struct capid_queue_dead_filter *f,
                            int64_t now);
/* Deletes matching dead rows (their dedup keys stay for the window), in
 * transactions of CAPID_QUEUE_HOUSEKEEP_BATCH rows. Returns the count. */
int capid_queue_dead_purge(struct capid_queue *q, const struct capid_queue_dead_filter *f);

/* Housekeeping: deletes delivered rows older than keep_delivered_s and dedup
 * keys past the window (the previous key table, once a whole window old),
 * CAPID_QUEUE_HOUSEKEEP_BATCH rows per transaction so writers never wait
 * long, at most CAPID_QUEUE_HOUSEKEEP_MAX rows per call. Returns the rows removed; a return of
 * CAPID_QUEUE_HOUSEKEEP_MAX means more are due: call again. Call it every few
 * seconds from one process (any; it is idempotent). */
int capid_queue_housekeep(struct capid_queue *q, int64_t now);

#endif
