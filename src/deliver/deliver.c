/* The delivery loop. Data flow per destination:
 *
 *   queue --lease--> batch (lingers until full or linger_ms) --send--> Graph
 *     ^                                                                  |
 *     +-- delivered / retry (backoff) / release (pause) / dead <-classify+
 *                              split halves --> ready list --send--^
 *
 * Everything here runs on the loop thread, except the few entry points at
 * the end that hand over settings or flags under a mutex or atomics. */
#include "deliver/deliver.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capi/reason.h"
#include "deliver/classify.h"
#include "deliver/graph.h"
#include "queue/queue.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"

#define LINGER_POLL_MS     50 /* top-up lease period while a batch lingers */
#define STATE_PERIOD_MS    1000
#define QUEUE_BUSY_RETRIES 3

/* ---- settings ---- */

struct dest_cfg {
    char *name, *url, *token, *test_code;
    struct capid_delivery_cfg dc;
};

struct capid_deliver_settings {
    struct dest_cfg *v;
    size_t n;
};

static char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        abort();
    return p;
}

static void dest_cfg_release(struct dest_cfg *c)
{
    free(c->name);
    free(c->url);
    if (c->token) /* do not leave the token in freed memory */
        memset(c->token, 0, strlen(c->token));
    free(c->token);
    free(c->test_code);
    memset(c, 0, sizeof(*c));
}

void capid_deliver_settings_free(struct capid_deliver_settings *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        dest_cfg_release(&s->v[i]);
    free(s->v);
    free(s);
}

struct capid_deliver_settings *capid_deliver_settings_new(const struct capid_config *cfg,
                                                          struct capid_perr *err)
{
    struct capid_deliver_settings *s = calloc(1, sizeof(*s));
    if (!s || !(s->v = calloc(cfg->n_dests ? cfg->n_dests : 1, sizeof(*s->v))))
        abort();
    for (size_t i = 0; i < cfg->n_dests; i++) {
        const struct capid_dest *d = &cfg->dests[i];
        struct capid_perr e = {0};
        char *tok = capid_config_read_secret(d->access_token_env, d->access_token_file, &e);
        if (!tok) {
            capid_perr_set(err, (size_t)-1, "cannot read the access token of destination '%s': %s",
                           d->name, e.msg ? e.msg : "unknown error");
            capid_deliver_settings_free(s);
            return NULL;
        }
        struct dest_cfg *c = &s->v[s->n++];
        c->name = xstrdup(d->name);
        c->token = tok;
        c->test_code = d->test_event_code ? xstrdup(d->test_event_code) : NULL;
        c->dc = d->delivery;
        /* SPEC 6: POST {graph_url}/{api_version}/{pixel_id}/events; the token
         * goes in the body only. */
        size_t n = strlen(d->graph_url) + strlen(d->api_version) + strlen(d->pixel_id) + 16;
        c->url = malloc(n);
        if (!c->url)
            abort();
        snprintf(c->url, n, "%s/%s/%s/events", d->graph_url, d->api_version, d->pixel_id);
    }
    return s;
}

/* ---- state ---- */

struct item {
    int64_t id, event_time, enqueued_at;
    int attempts;
    bool store;      /* action_source physical_store: 62-day limit */
    size_t off, len; /* payload span in the batch arena */
};

struct dest;

struct batch {
    struct dest *d;
    struct item *it;
    size_t n, cap;
    struct capid_buf pay; /* payloads, back to back */
    bool probe;
    struct capid_graph_req *req; /* while in flight */
    struct batch *next, *prev;   /* ready list, or the in-flight list */
};

struct dest {
    struct dest *next;
    struct dest_cfg c;
    struct capid_metrics_dest *m;
    bool active; /* still in the configuration */
    int inflight;
    double conc; /* AIMD concurrency limit, 1..max_inflight */
    int64_t last_decrease_ms, hold_until_ms, next_poll_ms;
    int throttle_streak;
    struct batch *linger;
    int64_t linger_deadline_ms;
    struct batch *ready_head, *ready_tail;
    bool paused;
    char why[320];
    int64_t paused_since_s, probe_due_ms;
};

struct capid_deliver {
    struct capid_queue *q;
    struct capid_graph *g;
    struct capid_metrics *metrics;
    struct dest *dests;
    struct batch *inflight; /* doubly linked */
    pthread_t th;
    bool started;
    pthread_mutex_t lock;
    struct capid_deliver_settings *pending; /* under lock */
    atomic_bool stop, failed, wake_pending;
    atomic_int stop_timeout_ms;
    char *state_path;
    int64_t clock_offset_s;
    int housekeep_ms, idle_poll_ms;
    int64_t next_housekeep_ms, next_state_ms;
    uint64_t rng;
    char partner[64];
    int64_t *ids;
    size_t ids_cap;
    struct capid_buf scratch;
};

static int64_t wall_s(const struct capid_deliver *d)
{
    return capid_now_s() + d->clock_offset_s;
}

static int64_t wall_ms(const struct capid_deliver *d)
{
    return capid_now_ms() + d->clock_offset_s * 1000;
}

static uint64_t rnd(struct capid_deliver *d)
{
    /* xorshift64*: jitter only, no security role */
    d->rng ^= d->rng >> 12;
    d->rng ^= d->rng << 25;
    d->rng ^= d->rng >> 27;
    return d->rng * 0x2545F4914F6CDD1Dull;
}

static void fail(struct capid_deliver *d, int rc, const char *what)
{
    if (!atomic_exchange(&d->failed, true))
        capid_error("queue failed while %s: %s; delivery stops (restart to recover)", what,
                    capid_strerror(rc));
    atomic_store(&d->stop, true);
}

/* Runs a queue write into rc, retrying a few times when another writer
 * held the lock past busy_timeout; any other error stops delivery
 * (fail-stop: the leases are recovered at the next start). */
#define QCALL(d, rc, what, call)                                                                   \
    do {                                                                                           \
        (rc) = (call);                                                                             \
        for (int try_ = 0; (rc) == CAPID_EBUSY && try_ < QUEUE_BUSY_RETRIES; try_++)               \
            (rc) = (call);                                                                         \
        if ((rc) < 0)                                                                              \
            fail((d), (rc), (what));                                                               \
    } while (0)

static int64_t *ids_of(struct capid_deliver *d, const struct batch *b)
{
    if (d->ids_cap < b->n) {
        d->ids_cap = b->n * 2;
        d->ids = realloc(d->ids, d->ids_cap * sizeof(*d->ids));
        if (!d->ids)
            abort();
    }
    for (size_t i = 0; i < b->n; i++)
        d->ids[i] = b->it[i].id;
    return d->ids;
}

/* ---- batches ---- */

static struct batch *batch_new(struct dest *dst)
{
    struct batch *b = calloc(1, sizeof(*b));
    if (!b)
        abort();
    b->d = dst;
    capid_buf_init(&b->pay, CAPID_DELIVER_MAX_BODY);
    return b;
}

static void batch_free(struct batch *b)
{
    if (!b)
        return;
    capid_buf_release(&b->pay);
    free(b->it);
    free(b);
}

/* Appends one event; false when the payload does not fit the body cap. */
static bool batch_add(struct batch *b, int64_t id, int64_t event_time, int64_t enqueued_at,
                      int attempts, bool store, const char *payload, size_t len)
{
    size_t off = b->pay.len;
    if (capid_buf_append(&b->pay, payload, len) != CAPID_OK)
        return false;
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->it = realloc(b->it, b->cap * sizeof(*b->it));
        if (!b->it)
            abort();
    }
    b->it[b->n++] = (struct item){id, event_time, enqueued_at, attempts, store, off, len};
    return true;
}

static bool batch_add_item(struct batch *b, const struct batch *from, const struct item *it)
{
    return batch_add(b, it->id, it->event_time, it->enqueued_at, it->attempts, it->store,
                     from->pay.data + it->off, it->len);
}

static void ready_push(struct dest *dst, struct batch *b, bool front)
{
    b->prev = NULL;
    if (front) {
        b->next = dst->ready_head;
        dst->ready_head = b;
        if (!dst->ready_tail)
            dst->ready_tail = b;
    } else {
        b->next = NULL;
        if (dst->ready_tail)
            dst->ready_tail->next = b;
        else
            dst->ready_head = b;
        dst->ready_tail = b;
    }
}

static struct batch *ready_pop(struct dest *dst)
{
    struct batch *b = dst->ready_head;
    if (b) {
        dst->ready_head = b->next;
        if (!dst->ready_head)
            dst->ready_tail = NULL;
        b->next = NULL;
    }
    return b;
}

static void lingering_gauge(struct dest *dst)
{
    capid_metrics_set(dst->m, CAPID_G_LINGERING, dst->linger ? (int64_t)dst->linger->n : 0);
}

/* Dead-letters items of b whose age passed Meta's limit (they are never
 * sent) and removes them from b. */
static void drop_too_old(struct capid_deliver *d, struct batch *b, int64_t now_s)
{
    size_t keep = 0, nold = 0;
    for (size_t i = 0; i < b->n; i++)
        if (capid_deliver_too_old(b->it[i].event_time, b->it[i].store ? "physical_store" : NULL,
                                  now_s))
            nold++;
    if (!nold)
        return;
    if (d->ids_cap < nold) {
        d->ids_cap = nold * 2;
        d->ids = realloc(d->ids, d->ids_cap * sizeof(*d->ids));
        if (!d->ids)
            abort();
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (capid_deliver_too_old(b->it[i].event_time, b->it[i].store ? "physical_store" : NULL,
                                  now_s))
            d->ids[k++] = b->it[i].id;
        else
            b->it[keep++] = b->it[i];
    }
    b->n = keep;
    int rc;
    QCALL(d, rc, "dead-lettering old events",
          capid_queue_dead(d->q, d->ids, k, capid_reason_name(CAPID_R_EVENT_TOO_OLD),
                           "{\"message\":\"event_time past Meta's age limit before sending\"}",
                           false, now_s));
    if (rc >= 0) {
        capid_metrics_dead(b->d->m, CAPID_R_EVENT_TOO_OLD, k);
        capid_info("destination '%s': %zu events dead-lettered event_too_old", b->d->c.name, k);
    }
}

/* Leases up to max ready events of dst into b (overflow past the body cap
 * goes to new batches on the ready list). Returns the count leased, or -1
 * on a queue error. */
static int lease_into(struct capid_deliver *d, struct dest *dst, struct batch *b, size_t max)
{
    int64_t now_s = wall_s(d);
    int64_t at = 0;
    int rc = capid_queue_next_ready(d->q, dst->c.name, &at);
    if (rc == CAPID_ENOTFOUND || (rc == CAPID_OK && at > now_s))
        return 0; /* nothing ready: no write transaction at all */
    if (rc != CAPID_OK && rc != CAPID_EBUSY) {
        fail(d, rc, "reading the queue");
        return -1;
    }
    struct capid_queue_batch qb = {0};
    rc = capid_queue_lease(d->q, dst->c.name, max, now_s, &qb);
    if (rc == CAPID_EBUSY)
        return 0; /* an importer holds the lock: next round */
    if (rc != CAPID_OK) {
        fail(d, rc, "leasing");
        return -1;
    }
    struct batch *cur = b;
    for (size_t i = 0; i < qb.n; i++) {
        const struct capid_queue_row *r = &qb.rows[i];
        bool store = r->action_source && strcmp(r->action_source, "physical_store") == 0;
        if (!batch_add(cur, r->id, r->event_time, r->enqueued_at, r->attempts, store, r->payload,
                       r->payload_len)) {
            cur = batch_new(dst);
            ready_push(dst, cur, false);
            if (!batch_add(cur, r->id, r->event_time, r->enqueued_at, r->attempts, store,
                           r->payload, r->payload_len))
                abort(); /* a payload is capped far below the body cap */
        }
    }
    int n = (int)qb.n;
    capid_queue_batch_release(&qb);
    return n;
}

/* Puts every event of b back in the queue untouched (not sent). */
static void release_batch(struct capid_deliver *d, struct batch *b)
{
    int rc;
    if (b->n)
        QCALL(d, rc, "releasing events", capid_queue_release(d->q, ids_of(d, b), b->n));
    batch_free(b);
}

/* Releases what dst holds but has not sent (lingering and ready batches). */
static void release_unsent(struct capid_deliver *d, struct dest *dst)
{
    if (dst->linger) {
        release_batch(d, dst->linger);
        dst->linger = NULL;
        lingering_gauge(dst);
    }
    struct batch *b;
    while ((b = ready_pop(dst)))
        release_batch(d, b);
}

/* ---- sending ---- */

static void inflight_link(struct capid_deliver *d, struct batch *b)
{
    b->prev = NULL;
    b->next = d->inflight;
    if (d->inflight)
        d->inflight->prev = b;
    d->inflight = b;
}

static void inflight_unlink(struct capid_deliver *d, struct batch *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        d->inflight = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->next = b->prev = NULL;
}

/* Builds the request body (SPEC 6): the stored payloads joined as they are,
 * never parsed again. */
static void build_body(struct capid_deliver *d, const struct batch *b, struct capid_buf *body)
{
    const struct dest_cfg *c = &b->d->c;
    size_t need = b->pay.len + b->n + strlen(c->token) * 2 + 256 +
                  (c->test_code ? strlen(c->test_code) * 2 + 32 : 0);
    capid_buf_reset(body);
    if (capid_buf_grow(body, need) != CAPID_OK)
        abort();
    capid_buf_puts(body, "{\"data\":[");
    for (size_t i = 0; i < b->n; i++) {
        if (i)
            capid_buf_putc(body, ',');
        capid_buf_append(body, b->pay.data + b->it[i].off, b->it[i].len);
    }
    capid_buf_puts(body, "],\"access_token\":");
    capid_buf_json_str(body, c->token, strlen(c->token));
    if (c->test_code) {
        capid_buf_puts(body, ",\"test_event_code\":");
        capid_buf_json_str(body, c->test_code, strlen(c->test_code));
    }
    capid_buf_puts(body, ",\"partner_agent\":");
    capid_buf_json_str(body, d->partner, strlen(d->partner));
    capid_buf_putc(body, '}');
}

/* Sends b (after dropping events past their age limit). Takes b. */
static void send_batch(struct capid_deliver *d, struct batch *b)
{
    struct dest *dst = b->d;
    drop_too_old(d, b, wall_s(d));
    if (b->n == 0) {
        batch_free(b);
        return;
    }
    struct capid_graph_req *r = capid_graph_req_new(d->g);
    build_body(d, b, &r->body);
    r->user = b;
    b->req = r;
    if (capid_graph_send(d->g, r, dst->c.url, dst->c.dc.timeout_ms) != CAPID_OK) {
        /* config validation only lets http(s) URLs through */
        capid_error("destination '%s': cannot send to its graph_url", dst->c.name);
        capid_graph_req_free(d->g, r);
        release_batch(d, b);
        return;
    }
    inflight_link(d, b);
    dst->inflight++;
    capid_metrics_set(dst->m, CAPID_G_INFLIGHT, dst->inflight);
    capid_metrics_add(dst->m, CAPID_C_EVENTS_SENT, b->n);
    if (b->probe)
        capid_metrics_add(dst->m, CAPID_C_PROBES, 1);
}

/* ---- outcomes ---- */

static void set_pause(struct capid_deliver *d, struct dest *dst, const struct capid_verdict *v)
{
    int64_t now = capid_mono_ms();
    dst->probe_due_ms = now + (int64_t)dst->c.dc.probe_interval_s * 1000;
    release_unsent(d, dst); /* events stay queued, untouched, while paused */
    if (dst->paused)
        return;
    dst->paused = true;
    dst->paused_since_s = wall_s(d);
    snprintf(dst->why, sizeof(dst->why), "graph code %d/%d: %s", v->code, v->subcode, v->message);
    capid_metrics_set(dst->m, CAPID_G_PAUSED, 1);
    capid_metrics_add(dst->m, CAPID_C_PAUSES, 1);
    capid_warn("destination '%s' paused (events stay queued; probing every %ds, reload the "
               "config with a valid token to resume): %s",
               dst->c.name, dst->c.dc.probe_interval_s, dst->why);
    d->next_state_ms = 0; /* write the state file now */
}

static void clear_pause(struct capid_deliver *d, struct dest *dst)
{
    if (!dst->paused)
        return;
    dst->paused = false;
    dst->why[0] = '\0';
    capid_metrics_set(dst->m, CAPID_G_PAUSED, 0);
    capid_info("destination '%s' resumed", dst->c.name);
    d->next_state_ms = 0;
}

/* A failed attempt (retry or throttled): events past both max_attempts
 * and retry_window are dead-lettered, the others wait wait_ms. */
static void retry_batch(struct capid_deliver *d, struct batch *b, const struct capid_verdict *v,
                        int64_t wait_ms)
{
    struct dest *dst = b->d;
    int64_t now_s = wall_s(d);
    size_t keep = 0, k = 0;
    int64_t *dead = ids_of(d, b); /* reused: dead ids first */
    for (size_t i = 0; i < b->n; i++) {
        if (capid_deliver_window_exceeded(b->it[i].attempts + 1, dst->c.dc.max_attempts,
                                          b->it[i].enqueued_at, dst->c.dc.retry_window_s, now_s))
            dead[k++] = b->it[i].id;
        else
            b->it[keep++] = b->it[i];
    }
    if (k) {
        struct capid_buf *e = &d->scratch;
        capid_buf_reset(e);
        if (v->error_json[0]) {
            capid_buf_puts(e, v->error_json);
        } else {
            capid_buf_puts(e, "{\"message\":");
            capid_buf_json_str(e, v->message, strlen(v->message));
            capid_buf_putc(e, '}');
        }
        int rc;
        QCALL(d, rc, "dead-lettering events",
              capid_queue_dead(d->q, dead, k, capid_reason_name(CAPID_R_RETRY_WINDOW_EXCEEDED),
                               e->data, true, now_s));
        if (rc >= 0)
            capid_metrics_dead(dst->m, CAPID_R_RETRY_WINDOW_EXCEEDED, k);
        capid_warn("destination '%s': %zu events dead-lettered retry_window_exceeded (%s)",
                   dst->c.name, k, v->message);
    }
    b->n = keep;
    if (b->n) {
        /* next_attempt_at has second resolution: round up, never early */
        int64_t at = (wall_ms(d) + wait_ms + 999) / 1000;
        int rc;
        QCALL(d, rc, "scheduling a retry",
              capid_queue_retry(d->q, ids_of(d, b), b->n, at, v->message, now_s));
        capid_metrics_add(dst->m, CAPID_C_EVENTS_RETRIED, b->n);
    }
}

static int max_attempts_of(const struct batch *b)
{
    int m = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->it[i].attempts > m)
            m = b->it[i].attempts;
    return m + 1; /* counting the attempt that just failed */
}

/* Splits a rejected batch in halves, sent next (SPEC 7: isolate the bad
 * events); a single event is dead-lettered with Meta's error. */
static void reject_batch(struct capid_deliver *d, struct batch *b, const struct capid_verdict *v)
{
    struct dest *dst = b->d;
    if (b->n == 1) {
        const char *err = v->error_json[0] ? v->error_json : NULL;
        int rc;
        QCALL(d, rc, "dead-lettering a rejected event",
              capid_queue_dead(d->q, &b->it[0].id, 1, capid_reason_name(CAPID_R_GRAPH_REJECTED),
                               err, true, wall_s(d)));
        if (rc >= 0)
            capid_metrics_dead(dst->m, CAPID_R_GRAPH_REJECTED, 1);
        capid_warn("destination '%s': event %lld dead-lettered graph_rejected: code %d/%d: %s",
                   dst->c.name, (long long)b->it[0].id, v->code, v->subcode, v->message);
        return;
    }
    struct batch *lo = batch_new(dst), *hi = batch_new(dst);
    size_t half = (b->n + 1) / 2;
    for (size_t i = 0; i < b->n; i++)
        batch_add_item(i < half ? lo : hi, b, &b->it[i]);
    /* Both halves go first, so a bisection finishes before new leases. */
    ready_push(dst, hi, true);
    ready_push(dst, lo, true);
    capid_metrics_add(dst->m, CAPID_C_SPLITS, 1);
    capid_debug("destination '%s': rejected batch of %zu split (code %d/%d)", dst->c.name, b->n,
                v->code, v->subcode);
}

static void on_done(struct capid_deliver *d, struct capid_graph_req *r)
{
    struct batch *b = r->user;
    struct dest *dst = b->d;
    inflight_unlink(d, b);
    b->req = NULL;
    dst->inflight--;
    capid_metrics_set(dst->m, CAPID_G_INFLIGHT, dst->inflight);
    struct capid_verdict v;
    capid_deliver_classify(&r->result, b->n, &v);
    capid_metrics_add(dst->m, CAPID_C_REQUESTS, 1);
    capid_metrics_outcome(dst->m, v.outcome);
    if (v.outcome != CAPID_OUT_DELIVERED)
        capid_metrics_graph_error(dst->m, v.code);
    int64_t now = capid_mono_ms();
    int max = dst->c.dc.max_inflight, rc;
    switch (v.outcome) {
    case CAPID_OUT_DELIVERED:
        QCALL(d, rc, "marking events delivered",
              capid_queue_delivered(d->q, ids_of(d, b), b->n, v.fbtrace_id[0] ? v.fbtrace_id : NULL,
                                    wall_s(d)));
        if (rc >= 0)
            capid_metrics_add(dst->m, CAPID_C_EVENTS_DELIVERED, b->n);
        /* additive increase: about +1 per window of successful requests */
        dst->conc += 1.0 / (dst->conc > 1 ? dst->conc : 1);
        if (dst->conc > max)
            dst->conc = max;
        dst->throttle_streak = 0;
        break;
    case CAPID_OUT_RETRY: {
        if (v.anomaly)
            capid_metrics_add(dst->m, CAPID_C_ANOMALIES, 1);
        int64_t wait = capid_backoff_ms(max_attempts_of(b), dst->c.dc.backoff_initial_ms,
                                        dst->c.dc.backoff_max_ms, rnd(d));
        if (v.retry_after_ms > wait) /* a 503 may say when to come back */
            wait = v.retry_after_ms;
        capid_info("destination '%s': %zu events to retry in %lld ms: %s", dst->c.name, b->n,
                   (long long)wait, v.message);
        retry_batch(d, b, &v, wait);
        break;
    }
    case CAPID_OUT_THROTTLED: {
        /* multiplicative decrease, once per round of requests started after
         * the previous decrease */
        if (r->started_ms >= dst->last_decrease_ms) {
            dst->conc = dst->conc / 2 < 1 ? 1 : dst->conc / 2;
            dst->last_decrease_ms = now;
        }
        dst->throttle_streak++;
        int64_t wait = v.retry_after_ms >= 0 ? v.retry_after_ms
                                             : capid_backoff_cap_ms(dst->throttle_streak,
                                                                    dst->c.dc.backoff_initial_ms,
                                                                    dst->c.dc.backoff_max_ms);
        if (now + wait > dst->hold_until_ms)
            dst->hold_until_ms = now + wait;
        capid_info("destination '%s' throttled (%s): waiting %lld ms, concurrency %d", dst->c.name,
                   v.message, (long long)wait, (int)dst->conc);
        retry_batch(d, b, &v, wait);
        break;
    }
    case CAPID_OUT_PAUSE:
        release_batch(d, b);
        b = NULL;
        set_pause(d, dst, &v);
        break;
    case CAPID_OUT_REJECT:
        reject_batch(d, b, &v);
        break;
    default:
        break;
    }
    /* Delivered, throttled or rejected: Meta took the token, so a paused
     * destination resumes (a 5xx or a timeout proves nothing: probe again). */
    if (v.outcome != CAPID_OUT_PAUSE && v.outcome != CAPID_OUT_RETRY)
        clear_pause(d, dst);
    capid_metrics_set(dst->m, CAPID_G_CONCURRENCY, (int64_t)dst->conc);
    if (!dst->active) /* removed by a reload: its split halves are not sent */
        release_unsent(d, dst);
    batch_free(b);
    capid_graph_req_free(d->g, r);
}

/* ---- scheduling ---- */

/* Starts what dst may start now; returns the next time (monotonic ms) it
 * wants to be looked at again. */
static int64_t schedule(struct capid_deliver *d, struct dest *dst, int64_t now)
{
    const struct capid_delivery_cfg *dc = &dst->c.dc;
    size_t max = (size_t)dc->max_batch;
    if (!dst->active)
        return INT64_MAX;
    if (dst->paused) {
        if (dst->inflight > 0)
            return INT64_MAX; /* the probe's answer will wake us */
        if (now < dst->probe_due_ms)
            return dst->probe_due_ms;
        /* One probe per probe_interval_s: a normal batch (a split half
         * first, if a probe was rejected), so a good answer delivers it and
         * resumes the destination. */
        struct batch *b = ready_pop(dst);
        if (!b) {
            b = batch_new(dst);
            if (lease_into(d, dst, b, max) <= 0) {
                batch_free(b);
                return now + d->idle_poll_ms;
            }
        }
        b->probe = true;
        dst->probe_due_ms = now + (int64_t)dc->probe_interval_s * 1000;
        capid_info("destination '%s' paused: probing with %zu events", dst->c.name, b->n);
        send_batch(d, b);
        return dst->probe_due_ms;
    }
    if (now < dst->hold_until_ms)
        return dst->hold_until_ms;
    int64_t next = INT64_MAX;
    while (dst->inflight < (int)dst->conc && !atomic_load(&d->failed)) {
        struct batch *b = ready_pop(dst);
        if (b) {
            send_batch(d, b);
            continue;
        }
        if (dst->linger) {
            if (dst->linger->n < max && now < dst->linger_deadline_ms) {
                if (now >= dst->next_poll_ms) {
                    if (lease_into(d, dst, dst->linger, max - dst->linger->n) < 0)
                        break;
                    dst->next_poll_ms = now + LINGER_POLL_MS;
                    lingering_gauge(dst);
                }
                if (dst->ready_head)
                    continue; /* overflow past the body cap: send it */
                if (dst->linger->n < max) {
                    next = dst->linger_deadline_ms < dst->next_poll_ms ? dst->linger_deadline_ms
                                                                       : dst->next_poll_ms;
                    break;
                }
            }
            b = dst->linger;
            dst->linger = NULL;
            lingering_gauge(dst);
            send_batch(d, b);
            continue;
        }
        if (now < dst->next_poll_ms) {
            next = dst->next_poll_ms;
            break;
        }
        b = batch_new(dst);
        int n = lease_into(d, dst, b, max);
        if (n <= 0) {
            batch_free(b);
            dst->next_poll_ms = now + d->idle_poll_ms;
            next = dst->next_poll_ms;
            break;
        }
        if (b->n >= max || dc->linger_ms == 0 || dst->ready_head) {
            send_batch(d, b);
            continue;
        }
        dst->linger = b;
        dst->linger_deadline_ms = now + dc->linger_ms;
        dst->next_poll_ms = now + LINGER_POLL_MS;
        lingering_gauge(dst);
    }
    return next;
}

/* ---- settings hand-over ---- */

static void apply_settings(struct capid_deliver *d, struct capid_deliver_settings *s)
{
    int64_t now = capid_mono_ms();
    for (struct dest *x = d->dests; x; x = x->next)
        x->active = false;
    for (size_t i = 0; i < s->n; i++) {
        struct dest_cfg *c = &s->v[i];
        struct dest *x = d->dests;
        while (x && strcmp(x->c.name, c->name) != 0)
            x = x->next;
        if (!x) {
            x = calloc(1, sizeof(*x));
            if (!x)
                abort();
            x->next = d->dests;
            d->dests = x;
            x->conc = c->dc.max_inflight;
            x->m = capid_metrics_dest(d->metrics, c->name);
        } else {
            dest_cfg_release(&x->c);
            if (x->paused)
                x->probe_due_ms = now; /* a new token may work: try at once */
        }
        x->c = *c;
        memset(c, 0, sizeof(*c)); /* moved */
        x->active = true;
        if (x->conc > x->c.dc.max_inflight)
            x->conc = x->c.dc.max_inflight;
        x->hold_until_ms = 0;
        x->next_poll_ms = 0;
        capid_metrics_set(x->m, CAPID_G_CONCURRENCY, (int64_t)x->conc);
    }
    for (struct dest *x = d->dests; x; x = x->next)
        if (!x->active)
            release_unsent(d, x);
    capid_deliver_settings_free(s);
    d->next_state_ms = 0;
}

/* ---- state file ---- */

/* Writes the state file atomically (temporary file + rename); final: the
 * loop has stopped, so pid 0 tells readers that nobody delivers. */
static void write_state(struct capid_deliver *d, bool final)
{
    if (!d->state_path)
        return;
    struct capid_buf *b = &d->scratch;
    capid_buf_reset(b);
    capid_buf_printf(b, "{\"pid\":%ld,\"updated_at\":%lld,\"destinations\":{",
                     final ? 0L : (long)getpid(), (long long)wall_s(d));
    for (struct dest *x = d->dests; x; x = x->next) {
        capid_buf_json_str(b, x->c.name, strlen(x->c.name));
        capid_buf_printf(b, ":{\"active\":%s,\"paused\":%s,", x->active ? "true" : "false",
                         x->paused ? "true" : "false");
        if (x->paused) {
            capid_buf_puts(b, "\"why\":");
            capid_buf_json_str(b, x->why, strlen(x->why));
            capid_buf_printf(b, ",\"paused_since\":%lld,", (long long)x->paused_since_s);
        }
        capid_buf_printf(b, "\"inflight\":%d,\"concurrency\":%d}%s", x->inflight, (int)x->conc,
                         x->next ? "," : "");
    }
    capid_buf_puts(b, "},\"metrics\":");
    capid_metrics_write_json(d->metrics, b);
    capid_buf_puts(b, "}\n");
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", d->state_path) >= (int)sizeof(tmp))
        return;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        capid_warn("cannot write state file '%s': %s", tmp, strerror(errno));
        return;
    }
    bool ok = fwrite(b->data, 1, b->len, f) == b->len;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, d->state_path) != 0) {
        capid_warn("cannot write state file '%s': %s", d->state_path, strerror(errno));
        unlink(tmp);
    }
}

/* ---- the loop ---- */

static void housekeep(struct capid_deliver *d, int64_t now)
{
    if (now < d->next_housekeep_ms)
        return;
    int n = capid_queue_housekeep(d->q, wall_s(d));
    if (n < 0 && n != CAPID_EBUSY)
        fail(d, n, "housekeeping");
    /* more due: come back soon, in small steps so delivery is not held */
    d->next_housekeep_ms = now + (n == CAPID_QUEUE_HOUSEKEEP_MAX ? 50 : d->housekeep_ms);
}

static void shutdown_inflight(struct capid_deliver *d)
{
    int rc;
    for (struct dest *x = d->dests; x; x = x->next)
        release_unsent(d, x);
    int64_t deadline = capid_mono_ms() + atomic_load(&d->stop_timeout_ms);
    while (d->inflight && capid_mono_ms() < deadline && !atomic_load(&d->failed)) {
        int64_t left = deadline - capid_mono_ms();
        if (capid_graph_poll(d->g, left > 100 ? 100 : (int)left) != CAPID_OK)
            break;
        struct capid_graph_req *r;
        while ((r = capid_graph_done(d->g)))
            on_done(d, r);
        /* splits and pauses may have produced unsent batches: put them back */
        for (struct dest *x = d->dests; x; x = x->next)
            release_unsent(d, x);
    }
    /* Still on the wire: abort; Meta may have them, so this counts as an
     * attempt and the events are ready again at once (same event_id). */
    while (d->inflight) {
        struct batch *b = d->inflight;
        inflight_unlink(d, b);
        capid_graph_abort(d->g, b->req);
        capid_graph_req_free(d->g, b->req);
        b->d->inflight--;
        if (b->n && !atomic_load(&d->failed))
            QCALL(d, rc, "returning aborted events",
                  capid_queue_retry(d->q, ids_of(d, b), b->n, wall_s(d), "aborted at shutdown",
                                    wall_s(d)));
        batch_free(b);
    }
}

static void *loop_main(void *arg)
{
    struct capid_deliver *d = arg;
    while (!atomic_load(&d->stop)) {
        pthread_mutex_lock(&d->lock);
        struct capid_deliver_settings *s = d->pending;
        d->pending = NULL;
        pthread_mutex_unlock(&d->lock);
        if (s)
            apply_settings(d, s);
        int64_t now = capid_mono_ms();
        if (atomic_exchange(&d->wake_pending, false))
            for (struct dest *x = d->dests; x; x = x->next)
                x->next_poll_ms = 0;
        int64_t next = now + 1000;
        for (struct dest *x = d->dests; x && !atomic_load(&d->stop); x = x->next) {
            int64_t t = schedule(d, x, now);
            if (t < next)
                next = t;
        }
        housekeep(d, now);
        if (d->next_housekeep_ms < next)
            next = d->next_housekeep_ms;
        if (now >= d->next_state_ms) {
            write_state(d, false);
            d->next_state_ms = now + STATE_PERIOD_MS;
        }
        if (d->next_state_ms < next)
            next = d->next_state_ms;
        if (atomic_load(&d->stop))
            break;
        int64_t wait = next - capid_mono_ms();
        if (capid_graph_poll(d->g, wait < 0 ? 0 : (int)(wait > 1000 ? 1000 : wait)) != CAPID_OK) {
            fail(d, CAPID_EIO, "polling the network");
            break;
        }
        struct capid_graph_req *r;
        while ((r = capid_graph_done(d->g)))
            on_done(d, r);
    }
    if (!atomic_load(&d->failed))
        shutdown_inflight(d);
    write_state(d, true);
    return NULL;
}

/* ---- entry points (other threads) ---- */

int capid_deliver_start(struct capid_deliver **out, const struct capid_deliver_opts *o,
                        struct capid_deliver_settings *s, struct capid_perr *err)
{
    *out = NULL;
    struct capid_deliver *d = calloc(1, sizeof(*d));
    if (!d)
        abort();
    pthread_mutex_init(&d->lock, NULL);
    capid_buf_init(&d->scratch, 0);
    d->metrics = o->metrics;
    d->clock_offset_s = o->clock_offset_s;
    d->housekeep_ms = o->housekeep_interval_ms > 0 ? o->housekeep_interval_ms : 5000;
    d->idle_poll_ms = o->idle_poll_ms > 0 ? o->idle_poll_ms : 100;
    d->state_path = o->state_path ? xstrdup(o->state_path) : NULL;
    d->rng = (uint64_t)capid_now_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    d->rng = d->rng ? d->rng : 1;
    snprintf(d->partner, sizeof(d->partner), "capid-%s", CAPID_VERSION);
    atomic_store(&d->stop_timeout_ms, 10000);
    int rc;
    struct capid_queue_opts qo = {.path = o->queue_path,
                                  .sync_normal = o->sync_normal,
                                  .keep_delivered_s = o->keep_delivered_s};
    if ((rc = capid_queue_open(&d->q, &qo, err)) != CAPID_OK)
        goto fail;
    if ((rc = capid_queue_recover(d->q)) < 0) {
        capid_perr_set(err, (size_t)-1, "cannot recover leases in queue '%s': %s", o->queue_path,
                       capid_strerror(rc));
        goto fail;
    }
    char ua[64];
    snprintf(ua, sizeof(ua), "capid/%s", CAPID_VERSION);
    if (!(d->g = capid_graph_new(ua))) {
        rc = CAPID_EIO;
        capid_perr_set(err, (size_t)-1, "cannot initialise libcurl");
        goto fail;
    }
    apply_settings(d, s);
    s = NULL;
    if (pthread_create(&d->th, NULL, loop_main, d) != 0) {
        rc = CAPID_ENOMEM;
        capid_perr_set(err, (size_t)-1, "cannot start the delivery thread");
        goto fail;
    }
    d->started = true;
    *out = d;
    return CAPID_OK;
fail:
    capid_deliver_settings_free(s);
    capid_deliver_free(d);
    return rc;
}

void capid_deliver_reload(struct capid_deliver *d, struct capid_deliver_settings *s)
{
    pthread_mutex_lock(&d->lock);
    capid_deliver_settings_free(d->pending);
    d->pending = s;
    pthread_mutex_unlock(&d->lock);
    capid_graph_wake(d->g);
}

void capid_deliver_wake(struct capid_deliver *d)
{
    atomic_store(&d->wake_pending, true);
    capid_graph_wake(d->g);
}

bool capid_deliver_failed(struct capid_deliver *d)
{
    return atomic_load(&d->failed);
}

int capid_deliver_stop(struct capid_deliver *d, int timeout_ms)
{
    if (!d || !d->started)
        return CAPID_OK;
    atomic_store(&d->stop_timeout_ms, timeout_ms);
    atomic_store(&d->stop, true);
    capid_graph_wake(d->g);
    pthread_join(d->th, NULL);
    d->started = false;
    return atomic_load(&d->failed) ? CAPID_EIO : CAPID_OK;
}

void capid_deliver_state_path(const char *queue_path, char *out, size_t cap)
{
    snprintf(out, cap, "%s.state.json", queue_path);
}

void capid_deliver_free(struct capid_deliver *d)
{
    if (!d)
        return;
    capid_deliver_stop(d, 0);
    while (d->dests) {
        struct dest *x = d->dests;
        d->dests = x->next;
        /* after a queue failure batches may remain: the leases are
         * recovered at the next start */
        batch_free(x->linger);
        struct batch *b;
        while ((b = ready_pop(x)))
            batch_free(b);
        dest_cfg_release(&x->c);
        free(x);
    }
    while (d->inflight) {
        struct batch *b = d->inflight;
        inflight_unlink(d, b);
        capid_graph_abort(d->g, b->req);
        capid_graph_req_free(d->g, b->req);
        batch_free(b);
    }
    capid_deliver_settings_free(d->pending);
    capid_graph_free(d->g);
    capid_queue_close(d->q);
    pthread_mutex_destroy(&d->lock);
    capid_buf_release(&d->scratch);
    free(d->ids);
    free(d->state_path);
    free(d);
}
