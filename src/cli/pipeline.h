/* Map-and-commit pipeline shared by `capid enqueue` (issue 4) and `capid
 * import` (issue 6).
 *
 * A source hands over inputs in chunks: Commanders Act events as JSON text,
 * and "bad inputs" (rows that gave no event, with a message) so that those
 * are reported in input order too. Worker threads parse every event and map
 * it for each selected destination (the `capid map` engine); the calling
 * thread commits the chunks in input order, one transaction per chunk (group
 * commit), or per run of up to four chunks that are ready together (mapped
 * while the previous commit waited for its fsync). With a mark key, each
 * transaction also sets that import mark to the resume position of its last
 * chunk (SPEC 7 durability: the events and the position are committed
 * together or not at all). The committed events are therefore always those
 * of a prefix of the input, and the mark names where it ends.
 *
 * Without a queue (dry run) everything but the commit happens.
 *
 * Threads: the source is called from worker threads, one call at a time and
 * in input order (under the pipeline's lock); outcome and progress callbacks
 * run on the calling thread. */
#ifndef CAPID_CLI_PIPELINE_H
#define CAPID_CLI_PIPELINE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capi/reason.h"
#include "config/config.h"
#include "queue/queue.h"

#define CAPID_PIPE_GROUP_DEFAULT 1000
#define CAPID_PIPE_MAX_WORKERS   4
#define CAPID_PIPE_CHUNK_BYTES   ((size_t)4 << 20) /* input bytes per chunk, besides the count */

struct capid_pipe_chunk; /* filled by the source */

/* Adds one event (`len` bytes of JSON text, copied) that starts on `line` and
 * was made from `rows` input rows. */
void capid_pipe_add_event(struct capid_pipe_chunk *c, const char *json, size_t len, uint64_t line,
                          uint32_t rows);
/* Adds an input that gave no event: reported with its line and `msg`. */
void capid_pipe_add_bad(struct capid_pipe_chunk *c, uint64_t line, uint32_t rows, const char *msg);
/* Adds an event the source could not hand over (e.g. a line longer than any
 * event may be): skipped for every destination with `reason` and `detail`,
 * as a parse failure is. */
void capid_pipe_add_skip(struct capid_pipe_chunk *c, uint64_t line, uint32_t rows,
                         enum capid_reason reason, const char *detail);
/* Sets the resume position after the chunk's last input (committed with it). */
void capid_pipe_set_position(struct capid_pipe_chunk *c, int64_t position);
/* True when the chunk holds a group of events or CAPID_PIPE_CHUNK_BYTES. */
bool capid_pipe_chunk_full(const struct capid_pipe_chunk *c);

/* Fills c with the next inputs until capid_pipe_chunk_full or the end.
 * Returns 1 (more may follow), 0 (end of input; c may still hold the last
 * inputs) or a negative capid_err (fatal: c's inputs are still processed,
 * then the run stops and returns that error; the source keeps its message). */
typedef int (*capid_pipe_read_fn)(void *ctx, struct capid_pipe_chunk *c);

/* What became of one input for one destination, after its chunk committed. */
struct capid_pipe_outcome {
    uint64_t line;
    uint32_t rows;
    size_t dest;              /* index in opts.dests; SIZE_MAX for a bad input */
    enum capid_reason reason; /* NONE: queued (would be, in a dry run); DUPLICATE; a skip */
    const char *detail;       /* the skip's detail or the bad input's message; "" when queued */
};
typedef void (*capid_pipe_outcome_fn)(void *ctx, const struct capid_pipe_outcome *o);
struct capid_pipe_stats;
/* Called after each chunk commits, with the totals so far (st->position is
 * where the committed prefix ends). */
typedef void (*capid_pipe_progress_fn)(void *ctx, const struct capid_pipe_stats *st);

struct capid_pipe_opts {
    const struct capid_config *cfg;
    const struct capid_dest *const *dests; /* where every event goes */
    size_t ndests;
    int64_t now;           /* clock for gates and absent timestamps; 0: wall clock */
    size_t group;          /* events per chunk and transaction; 0: CAPID_PIPE_GROUP_DEFAULT */
    int workers;           /* mapping threads; 0: one per core but one, 1..MAX_WORKERS */
    struct capid_queue *q; /* NULL: dry run, nothing is committed */
    const char *mark_key;  /* with q: each commit sets this mark (done = false) */
    bool outcome_queued;   /* also report queued events (not only skips and duplicates) */
    capid_pipe_read_fn read;
    void *read_ctx;
    capid_pipe_outcome_fn outcome;   /* may be NULL */
    capid_pipe_progress_fn progress; /* may be NULL */
    void *ctx;                       /* for outcome and progress */
    volatile sig_atomic_t *stop;     /* non-zero: read no more; what was read is committed */
};

struct capid_pipe_stats {
    uint64_t rows;                    /* input rows of the inputs below */
    uint64_t events;                  /* event inputs */
    uint64_t bad;                     /* bad inputs */
    uint64_t queued;                  /* stored (would be, in a dry run), all destinations */
    uint64_t skipped[CAPID_R__COUNT]; /* per reason, duplicates included */
    uint64_t *per_dest;               /* caller's array of ndests counters, or NULL */
    int64_t position;                 /* of the last committed chunk; -1 if none */
    int64_t commits;                  /* transactions */
};

/* Runs until the end of input, a fatal source error, a commit error or
 * *stop. Adds to *st (the caller zeroes it, sets per_dest, position -1).
 * Returns CAPID_OK (also when stopped: check *stop), the source's error, or
 * the queue's (CAPID_EBUSY after retries, CAPID_EIO, ...). Either way, the
 * committed chunks are a prefix of the input and st->position ends it. */
int capid_pipe_run(const struct capid_pipe_opts *o, struct capid_pipe_stats *st);

#endif
