#include "cli/pipeline.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capi/map.h"
#include "event/event.h"
#include "util/buf.h"
#include "util/clock.h"

#define BUSY_RETRIES 5 /* each waits busy_timeout_ms inside the queue */
#define MERGE_MAX    4 /* mapped chunks committed in one transaction at most */
#define MAX_PAY      CAPID_PIPE_GROUP_DEFAULT /* payload buffers per chunk */

struct input {
    uint64_t line;
    uint32_t rows;
    bool bad;
    enum capid_reason skip; /* NONE, or the reason of an event the source could not hand over */
    size_t off, len;        /* in chunk->in: the event JSON or the bad input's message */
};

/* One mapped event waiting for its commit; strings are offsets into the
 * arena. The payload is the chunk's payload buffer number `payload` when
 * in_pay, else at offset `payload` of the arena. */
struct ev_ref {
    size_t dest;
    size_t name, id, src, payload, plen; /* src SIZE_MAX: none */
    bool in_pay;
    int64_t event_time, id_time;
};

/* One outcome, in input order: a skip (detail in the arena), a bad input
 * (dest SIZE_MAX), or an event to commit (ev: index in chunk->ev). */
struct res {
    size_t input, dest, detail, ev;
    enum capid_reason reason;
};

struct capid_pipe_chunk {
    uint64_t seq;
    size_t group;
    struct capid_buf in; /* inputs, each NUL-terminated */
    struct input *inp;
    size_t ninp, capinp, nevents;
    int64_t position;
    bool has_position;
    struct capid_buf arena; /* mapped strings, skip details */
    /* Payloads of the first MAX_PAY mapped events, one buffer each: the
     * mapper's output buffer is swapped with the next of these instead of
     * being copied (a 1 KB copy per event on the mapping thread, which
     * bounds `capid enqueue`: 0.915 -> 0.87 s for 100,000 events). They keep
     * their memory from one use of the chunk to the next; as a mapper's
     * buffer holds 2-4 KB for a 1.1 KB payload, the payloads past MAX_PAY
     * (import's groups of 5000) are copied into the arena (RSS: 66 MB for
     * import's bench with every payload swapped, 47 MB before). */
    struct capid_buf *pay;
    size_t npay, cappay;
    struct ev_ref *ev;
    size_t nev, capev;
    struct res *res;
    size_t nres, capres;
    struct capid_pipe_chunk *next;
};

struct run {
    const struct capid_pipe_opts *o;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool eof, abort;
    int read_err;
    uint64_t next_seq;
    struct capid_pipe_chunk *free_list, *done;
};

static void *grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap * 2 : 256;
    while (n < need)
        n *= 2;
    p = realloc(p, n * size);
    if (!p)
        abort(); /* inputs are capped: out of memory is fatal (STYLE) */
    *cap = n;
    return p;
}

static void add_input(struct capid_pipe_chunk *c, const char *s, size_t len, uint64_t line,
                      uint32_t rows, bool bad)
{
    c->inp = grow(c->inp, &c->capinp, c->ninp + 1, sizeof(*c->inp));
    c->inp[c->ninp++] = (struct input){line, rows, bad, CAPID_R_NONE, c->in.len, len};
    if (capid_buf_append(&c->in, s, len) || capid_buf_putc(&c->in, '\0'))
        abort();
}

void capid_pipe_add_event(struct capid_pipe_chunk *c, const char *json, size_t len, uint64_t line,
                          uint32_t rows)
{
    add_input(c, json, len, line, rows, false);
    c->nevents++;
}

void capid_pipe_add_bad(struct capid_pipe_chunk *c, uint64_t line, uint32_t rows, const char *msg)
{
    add_input(c, msg, strlen(msg), line, rows, true);
}

void capid_pipe_add_skip(struct capid_pipe_chunk *c, uint64_t line, uint32_t rows,
                         enum capid_reason reason, const char *detail)
{
    add_input(c, detail, strlen(detail), line, rows, false);
    c->inp[c->ninp - 1].skip = reason;
    c->nevents++;
}

void capid_pipe_set_position(struct capid_pipe_chunk *c, int64_t position)
{
    c->position = position;
    c->has_position = true;
}

bool capid_pipe_chunk_full(const struct capid_pipe_chunk *c)
{
    return c->nevents >= c->group || c->in.len >= CAPID_PIPE_CHUNK_BYTES;
}

static size_t arena_str(struct capid_pipe_chunk *c, const char *s, size_t n)
{
    size_t off = c->arena.len;
    if (capid_buf_append(&c->arena, s, n) || capid_buf_putc(&c->arena, '\0'))
        abort();
    return off;
}

static void add_res(struct capid_pipe_chunk *c, size_t input, size_t dest, enum capid_reason reason,
                    const char *detail, size_t ev)
{
    c->res = grow(c->res, &c->capres, c->nres + 1, sizeof(*c->res));
    size_t d = detail && *detail ? arena_str(c, detail, strlen(detail)) : SIZE_MAX;
    c->res[c->nres++] = (struct res){input, dest, d, ev, reason};
}

/* Maps every input of c (on a worker, with its own mapper). */
static void map_chunk(const struct capid_pipe_opts *o, struct capid_pipe_chunk *c,
                      struct capid_mapper *m, struct capid_mapped *out)
{
    static const enum capid_reason by_status[] = {
        [CAPID_EV_TOO_LARGE] = CAPID_R_TOO_LARGE,
        [CAPID_EV_INVALID_JSON] = CAPID_R_INVALID_JSON,
        [CAPID_EV_INVALID_EVENT] = CAPID_R_INVALID_EVENT,
    };
    struct capid_limits lim = {o->cfg->server.max_event_bytes, o->cfg->server.max_depth};
    for (size_t k = 0; k < c->ninp; k++) {
        const struct input *in = &c->inp[k];
        const char *s = c->in.data + in->off;
        if (in->bad) {
            add_res(c, k, SIZE_MAX, CAPID_R_INVALID_EVENT, s, SIZE_MAX);
            continue;
        }
        if (in->skip != CAPID_R_NONE) { /* as a parse failure: once per destination */
            for (size_t i = 0; i < o->ndests; i++)
                add_res(c, k, i, in->skip, s, SIZE_MAX);
            continue;
        }
        struct capid_perr err;
        capid_perr_clear(&err);
        struct capid_event ev;
        int64_t now = o->now ? o->now : capid_now_s();
        enum capid_event_status st = capid_event_parse(&ev, s, in->len, &lim, now, &err);
        if (st != CAPID_EV_OK) {
            for (size_t i = 0; i < o->ndests; i++)
                add_res(c, k, i, by_status[st], err.msg ? err.msg : "", SIZE_MAX);
            continue;
        }
        for (size_t i = 0; i < o->ndests; i++) {
            if (capid_map_event(m, o->dests[i], &ev, now, out) != CAPID_OK)
                abort(); /* out of memory */
            if (out->reason != CAPID_R_NONE) {
                add_res(c, k, i, out->reason, out->detail, SIZE_MAX);
                continue;
            }
            c->ev = grow(c->ev, &c->capev, c->nev + 1, sizeof(*c->ev));
            struct ev_ref *e = &c->ev[c->nev];
            e->dest = i;
            e->name = arena_str(c, out->event_name, strlen(out->event_name));
            e->id = arena_str(c, out->event_id, strlen(out->event_id));
            e->src = out->action_source
                         ? arena_str(c, out->action_source, strlen(out->action_source))
                         : SIZE_MAX;
            e->in_pay = c->nev < MAX_PAY;
            e->plen = out->json.len;
            if (e->in_pay) {
                if (c->nev == c->npay) {
                    c->pay = grow(c->pay, &c->cappay, c->npay + 1, sizeof(*c->pay));
                    capid_buf_init(&c->pay[c->npay++], 0);
                }
                struct capid_buf spare = c->pay[c->nev];
                c->pay[c->nev] = out->json;
                out->json = spare; /* reset by the next capid_map_event */
                e->payload = c->nev;
            } else {
                e->payload = arena_str(c, out->json.data, out->json.len);
            }
            e->event_time = out->event_time;
            e->id_time = out->id_time;
            add_res(c, k, i, CAPID_R_NONE, NULL, c->nev++);
        }
        capid_event_release(&ev);
    }
}

static void chunk_reset(struct capid_pipe_chunk *c, size_t group)
{
    capid_buf_reset(&c->in);
    capid_buf_reset(&c->arena);
    c->group = group;
    c->ninp = c->nevents = c->nev = c->nres = 0;
    c->has_position = false;
    c->position = 0;
}

static void *worker(void *arg)
{
    struct run *r = arg;
    const struct capid_pipe_opts *o = r->o;
    struct capid_mapper m;
    struct capid_mapped out;
    if (capid_mapper_init(&m) != CAPID_OK)
        abort();
    capid_mapped_init(&out);
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (!r->free_list && !r->eof && !r->abort)
            pthread_cond_wait(&r->cond, &r->lock);
        if (r->eof || r->abort || (o->stop && *o->stop))
            break;
        struct capid_pipe_chunk *c = r->free_list;
        r->free_list = c->next;
        chunk_reset(c, o->group ? o->group : CAPID_PIPE_GROUP_DEFAULT);
        /* The source runs under the lock: chunks are runs of consecutive inputs. */
        int rc = o->read(o->read_ctx, c);
        if (rc <= 0) {
            r->eof = true;
            if (rc < 0)
                r->read_err = rc;
            pthread_cond_broadcast(&r->cond);
        }
        if (!c->ninp && !c->has_position) {
            c->next = r->free_list;
            r->free_list = c;
            continue;
        }
        c->seq = r->next_seq++;
        pthread_mutex_unlock(&r->lock);
        map_chunk(o, c, &m, &out);
        pthread_mutex_lock(&r->lock);
        c->next = r->done;
        r->done = c;
        pthread_cond_broadcast(&r->cond);
    }
    /* Wake the committer: it waits for eof or a chunk. */
    r->eof = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    capid_mapped_release(&out);
    capid_mapper_release(&m);
    return NULL;
}

/* Reports the outcomes of a committed chunk in input order; its events are
 * items[0 .. c->nev). */
static void report_chunk(const struct capid_pipe_opts *o, struct capid_pipe_chunk *c,
                         struct capid_pipe_stats *st, const struct capid_queue_item *items)
{
    const char *a = c->arena.data;
    for (size_t k = 0; k < c->ninp; k++) {
        st->rows += c->inp[k].rows;
        if (c->inp[k].bad)
            st->bad++;
        else
            st->events++;
    }
    for (size_t i = 0; i < c->nres; i++) {
        const struct res *x = &c->res[i];
        enum capid_reason reason = x->reason;
        if (x->dest == SIZE_MAX) {
            /* a bad input: counted above */
        } else if (reason == CAPID_R_NONE && items[x->ev].result == CAPID_EDUP) {
            reason = CAPID_R_DUPLICATE;
            st->skipped[reason]++;
        } else if (reason == CAPID_R_NONE) {
            st->queued++;
            if (st->per_dest)
                st->per_dest[x->dest]++;
        } else {
            st->skipped[reason]++;
        }
        if (!o->outcome || (reason == CAPID_R_NONE && !o->outcome_queued))
            continue;
        const struct input *in = &c->inp[x->input];
        struct capid_pipe_outcome oc = {in->line, in->rows, x->dest, reason,
                                        x->detail == SIZE_MAX ? "" : a + x->detail};
        o->outcome(o->ctx, &oc);
    }
    if (c->has_position)
        st->position = c->position;
    if (o->progress)
        o->progress(o->ctx, st);
}

/* Commits n consecutive mapped chunks in one transaction (with the mark of
 * the last that has one), then reports their outcomes in input order. */
static int commit_chunks(const struct capid_pipe_opts *o, struct capid_pipe_chunk **cs, size_t n,
                         struct capid_pipe_stats *st, struct capid_queue_item **items, size_t *cap)
{
    size_t total = 0;
    struct capid_pipe_chunk *last_pos = NULL;
    for (size_t k = 0; k < n; k++) {
        total += cs[k]->nev;
        if (cs[k]->has_position)
            last_pos = cs[k];
    }
    *items = grow(*items, cap, total + 1, sizeof(**items));
    size_t at = 0;
    for (size_t k = 0; k < n; k++) {
        const struct capid_pipe_chunk *c = cs[k];
        const char *a = c->arena.data;
        for (size_t i = 0; i < c->nev; i++) {
            const struct ev_ref *e = &c->ev[i];
            (*items)[at++] = (struct capid_queue_item){
                .dest = o->dests[e->dest]->name,
                .event_name = a + e->name,
                .event_id = a + e->id,
                .action_source = e->src == SIZE_MAX ? NULL : a + e->src,
                .event_time = e->event_time,
                .has_id_time = e->id_time != CAPID_NO_ID_TIME,
                .id_time = e->id_time,
                .payload = e->in_pay ? c->pay[e->payload].data : a + e->payload,
                .payload_len = e->plen,
                .result = CAPID_OK,
            };
        }
    }
    struct capid_queue_mark mark = {o->mark_key, last_pos ? last_pos->position : 0, false};
    bool with_mark = o->mark_key && last_pos;
    if (o->q && (total || with_mark)) {
        int64_t now = o->now ? o->now : capid_now_s();
        int rc = capid_queue_enqueue(o->q, *items, total, now, with_mark ? &mark : NULL);
        for (int tries = 0; rc == CAPID_EBUSY && tries < BUSY_RETRIES; tries++)
            rc = capid_queue_enqueue(o->q, *items, total, now, with_mark ? &mark : NULL);
        if (rc != CAPID_OK)
            return rc;
        st->commits++;
    }
    at = 0;
    for (size_t k = 0; k < n; k++) {
        report_chunk(o, cs[k], st, *items + at);
        at += cs[k]->nev;
    }
    return CAPID_OK;
}

/* Unlinks the mapped chunk `seq` from r->done (under the lock), or NULL. */
static struct capid_pipe_chunk *take_done(struct run *r, uint64_t seq)
{
    for (struct capid_pipe_chunk **pp = &r->done; *pp; pp = &(*pp)->next)
        if ((*pp)->seq == seq) {
            struct capid_pipe_chunk *c = *pp;
            *pp = c->next;
            return c;
        }
    return NULL;
}

static struct capid_pipe_chunk *chunk_new(void)
{
    struct capid_pipe_chunk *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    capid_buf_init(&c->in, 0);
    capid_buf_init(&c->arena, 0);
    return c;
}

static void chunk_free(struct capid_pipe_chunk *c)
{
    capid_buf_release(&c->in);
    capid_buf_release(&c->arena);
    for (size_t i = 0; i < c->npay; i++)
        capid_buf_release(&c->pay[i]);
    free(c->pay);
    free(c->inp);
    free(c->ev);
    free(c->res);
    free(c);
}

static int auto_workers(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus <= 2)
        return 1;
    return cpus - 1 > CAPID_PIPE_MAX_WORKERS ? CAPID_PIPE_MAX_WORKERS : (int)(cpus - 1);
}

int capid_pipe_run(const struct capid_pipe_opts *o, struct capid_pipe_stats *st)
{
    struct run r = {.o = o};
    struct capid_queue_item *items = NULL;
    size_t items_cap = 0;
    int nth = o->workers > 0 ? o->workers : auto_workers();
    if (nth > CAPID_PIPE_MAX_WORKERS)
        nth = CAPID_PIPE_MAX_WORKERS;
    pthread_t th[CAPID_PIPE_MAX_WORKERS];
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    /* Chunks beyond the workers' own: one committing, one ready behind it.
     * Groups up to the default size (enqueue's 1000) get two more, so that
     * while a commit waits for its fsync the workers map ahead, and the next
     * commit takes every chunk that is ready (up to MERGE_MAX): a slow disk
     * gets fewer, larger commits. Larger groups (import's 5000) amortise the
     * fsync already, and their chunks are large (RSS). */
    size_t group = o->group ? o->group : CAPID_PIPE_GROUP_DEFAULT;
    int nchunks = nth + 2 + (group <= CAPID_PIPE_GROUP_DEFAULT ? 2 : 0);
    for (int i = 0; i < nchunks; i++) {
        struct capid_pipe_chunk *c = chunk_new();
        c->next = r.free_list;
        r.free_list = c;
    }
    int started = 0;
    for (int i = 0; i < nth; i++)
        if (pthread_create(&th[started], NULL, worker, &r) == 0)
            started++;
    int rc = started ? CAPID_OK : CAPID_ENOMEM;
    uint64_t want = 0;
    pthread_mutex_lock(&r.lock);
    struct capid_pipe_chunk *batch[MERGE_MAX];
    while (rc == CAPID_OK) {
        size_t n = 0;
        while (n < MERGE_MAX && (batch[n] = take_done(&r, want + n)))
            n++;
        if (!n) {
            if (r.eof && want == r.next_seq) /* every chunk read was committed */
                break;
            pthread_cond_wait(&r.cond, &r.lock);
            continue;
        }
        pthread_mutex_unlock(&r.lock);
        rc = commit_chunks(o, batch, n, st, &items, &items_cap);
        want += n;
        pthread_mutex_lock(&r.lock);
        for (size_t k = 0; k < n; k++) {
            batch[k]->next = r.free_list;
            r.free_list = batch[k];
        }
        pthread_cond_broadcast(&r.cond);
    }
    r.abort = true;
    pthread_cond_broadcast(&r.cond);
    pthread_mutex_unlock(&r.lock);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (rc == CAPID_OK)
        rc = r.read_err;
    while (r.done) {
        struct capid_pipe_chunk *c = r.done;
        r.done = c->next;
        chunk_free(c);
    }
    while (r.free_list) {
        struct capid_pipe_chunk *c = r.free_list;
        r.free_list = c->next;
        chunk_free(c);
    }
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.cond);
    free(items);
    return rc;
}
