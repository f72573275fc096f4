#include "ingest/http.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "capi/map.h"
#include "config/config.h"
#include "event/event.h"
#include "ingest/batch.h"
#include "queue/queue.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"

/* libmicrohttpd's per-connection memory pool holds the request line, the
 * headers and its read buffer: a header block that does not fit is
 * answered 431 by libmicrohttpd (reliability-anchors T6: 16 KiB). */
#define HEADER_POOL_BYTES 16384
/* Request bodies held in memory at once, all connections together; past
 * it new requests get 503 (every body is capped, this caps their sum). */
#define MAX_BUFFERED_BYTES ((size_t)256 << 20)
/* How often the request deadline is checked. */
#define SWEEP_MS 100
/* Events in one group commit (several concurrent requests, one transaction). */
#define MAX_GROUP_EVENTS 20000
#define RETRY_AFTER_S    "5"
#define MAX_SOURCE_SLOTS 256

#define JSON_TYPE "application/json"
#define PROM_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- metrics kept by the server ------------------------------------- */

enum endpoint { EP_EVENTS, EP_BATCH, EP_HEALTHZ, EP_READYZ, EP_METRICS, EP_OTHER, EP__COUNT };
static const char *const ep_path[EP__COUNT] = {"/events", "/events/batch", "/healthz",
                                               "/readyz", "/metrics",      "other"};

static const unsigned status_codes[] = {200, 202, 400, 401, 404, 405, 413, 415, 500, 503};
#define N_CODES (sizeof(status_codes) / sizeof(status_codes[0]))

static const double lat_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BOUNDS (sizeof(lat_bounds) / sizeof(lat_bounds[0]))

struct stats {
    _Atomic uint64_t requests[EP__COUNT][N_CODES + 1]; /* last: any other status */
    _Atomic uint64_t lat[EP__COUNT][N_BOUNDS + 1];     /* per bucket, not cumulative */
    _Atomic uint64_t lat_sum_us[EP__COUNT];
    _Atomic uint64_t cut;          /* connections closed at the request deadline */
    _Atomic uint64_t auth_failed;  /* 401 answers */
    _Atomic uint64_t queue_errors; /* 503 answers after a failed commit */
    _Atomic uint64_t dropped[CAPID_UK__COUNT + 3];
    _Atomic uint64_t pii_guarded;
    _Atomic uint64_t received[MAX_SOURCE_SLOTS]; /* events in 202'd requests, per source */
    char source_name[MAX_SOURCE_SLOTS][65];      /* under conf_mu */
    size_t n_sources;
};

/* ---- configuration snapshot ----------------------------------------- */

struct source {
    const char *name;
    unsigned char digest[32]; /* SHA-256 of the ingest key; the key itself is not kept */
    const struct capid_dest **dests;
    struct capid_metrics_dest **mdests;
    size_t n_dests;
    int slot; /* in stats.received, -1: none */
};

/* One loaded configuration, shared by the requests that started under it. */
struct conf {
    int refs; /* under capid_http.conf_mu */
    struct capid_config *cfg;
    struct source *sources;
    size_t n_sources;
    struct capid_limits lim;
    size_t max_request, max_events;
    int max_depth;
};

/* ---- connections and requests --------------------------------------- */

/* One TCP connection (libmicrohttpd socket context). The sweeper thread
 * reads fd and deadline_ms under conns_mu; libmicrohttpd frees the fd only
 * after the CLOSED notification unlinked the connection. */
struct conn {
    struct conn *prev, *next;
    int fd;
    _Atomic int64_t deadline_ms; /* monotonic; 0: none (request being processed) */
    bool cut;
    int64_t start_us; /* request line of the current request received */
};

struct req {
    struct conn *conn;
    enum endpoint ep;
    bool responded, counted_inflight;
    struct conf *conf;
    int source;
    enum capid_batch_format fmt;
    struct capid_buf body;
    size_t limit, reserved;
    int64_t t0_us;
};

/* ---- per worker thread ---------------------------------------------- */

struct item_ref {
    size_t event, dest;
    size_t name, id, src, payload, plen; /* offsets in arena; src SIZE_MAX: none */
    int64_t event_time, id_time;
};

struct skip {
    size_t event, line, dest;
    enum capid_reason reason;
    size_t detail; /* offset in arena */
};

struct worker {
    struct capid_http *srv;
    struct worker *next;
    struct capid_queue *q;
    struct capid_mapper mapper;
    struct capid_mapped mapped;
    uint64_t seen_dropped[CAPID_UK__COUNT + 3], seen_pii;
    struct capid_batch batch;
    struct capid_buf arena, out;
    struct item_ref *refs;
    size_t n_refs, cap_refs;
    struct skip *skips;
    size_t n_skips, cap_skips;
    struct capid_queue_item *items, *group;
    size_t cap_items, cap_group;
};

static _Thread_local struct worker *tl_worker;

/* A request waiting for the group commit. */
struct commit_req {
    struct capid_queue_item *items;
    size_t n;
    int rc;
    bool done;
    struct commit_req *next;
};

struct capid_http {
    struct MHD_Daemon *d;
    int listen_fd;
    unsigned port;
    char *config_path, *ready_file, *queue_path;
    bool sync_normal;
    int64_t keep_delivered_s;
    int64_t timeout_ms;
    struct capid_metrics *metrics;
    int64_t clock_offset_s;
    void (*on_enqueued)(void *arg);
    void *arg;

    pthread_mutex_t conf_mu;
    struct conf *conf;

    pthread_mutex_t workers_mu;
    struct worker *workers;

    pthread_mutex_t commit_mu;
    pthread_cond_t commit_cv;
    struct commit_req *pending, *pending_tail;
    bool committing;
    struct capid_queue *commit_q; /* used by the commit leader only */

    pthread_mutex_t conns_mu;
    pthread_cond_t sweep_cv;
    struct conn *conns;
    bool sweep_stop, sweeper_started;
    pthread_t sweeper;

    atomic_bool stopping, failed, stopped;
    _Atomic int64_t inflight; /* POST requests accepted and not yet completed */
    _Atomic size_t buffered;  /* body bytes reserved */
    struct stats stats;
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void add(_Atomic uint64_t *v, uint64_t n)
{
    atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t ld(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void set_deadline(struct capid_http *h, struct conn *c, bool on)
{
    if (c)
        atomic_store_explicit(&c->deadline_ms, on ? capid_mono_ms() + h->timeout_ms : 0,
                              memory_order_relaxed);
}

/* ---- configuration -------------------------------------------------- */

static void conf_free(struct conf *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_sources; i++) {
        free(c->sources[i].dests);
        free(c->sources[i].mdests);
    }
    free(c->sources);
    capid_config_free(c->cfg);
    free(c);
}

static struct conf *conf_get(struct capid_http *h)
{
    pthread_mutex_lock(&h->conf_mu);
    struct conf *c = h->conf;
    c->refs++;
    pthread_mutex_unlock(&h->conf_mu);
    return c;
}

static void conf_put(struct capid_http *h, struct conf *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&h->conf_mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&h->conf_mu);
    if (last)
        conf_free(c);
}

/* The stats slot of a source name (received counters survive reloads). */
static int source_slot(struct capid_http *h, const char *name)
{
    struct stats *st = &h->stats;
    for (size_t i = 0; i < st->n_sources; i++)
        if (!strcmp(st->source_name[i], name))
            return (int)i;
    if (st->n_sources == MAX_SOURCE_SLOTS)
        return -1;
    snprintf(st->source_name[st->n_sources], sizeof(st->source_name[0]), "%s", name);
    return (int)st->n_sources++;
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL))
        abort();
}

/* Loads the configuration and reads every source's key. */
static int conf_load(struct capid_http *h, struct conf **out, struct capid_perr *err)
{
    struct conf *c = calloc(1, sizeof(*c));
    int rc = CAPID_ECONFIG;
    if (!c)
        abort();
    c->refs = 1;
    if (capid_config_load(h->config_path, &c->cfg, err) != CAPID_OK)
        goto fail;
    const struct capid_config *cfg = c->cfg;
    if (!cfg->n_sources) {
        capid_perr_set(err, 0, "'%s' has no sources: nobody could post events", h->config_path);
        goto fail;
    }
    c->sources = calloc(cfg->n_sources, sizeof(*c->sources));
    if (!c->sources)
        abort();
    c->n_sources = cfg->n_sources;
    for (size_t i = 0; i < cfg->n_sources; i++) {
        const struct capid_source *cs = &cfg->sources[i];
        struct source *s = &c->sources[i];
        struct capid_perr kerr = {0};
        s->name = cs->name;
        char *key = capid_config_read_secret(cs->key_env, cs->key_file, &kerr);
        if (!key) {
            capid_perr_set(err, 0, "source '%s': %s", cs->name,
                           kerr.msg ? kerr.msg : "no ingest key");
            goto fail;
        }
        size_t klen = strlen(key);
        sha256(key, klen, s->digest);
        explicit_bzero(key, klen);
        free(key);
        if (klen < 16)
            capid_warn("ingest key of source '%s' is short (%zu characters): use at least 16 "
                       "random characters",
                       cs->name, klen);
        s->n_dests = cs->n_destinations;
        s->dests = calloc(s->n_dests + 1, sizeof(*s->dests));
        s->mdests = calloc(s->n_dests + 1, sizeof(*s->mdests));
        if (!s->dests || !s->mdests)
            abort();
        for (size_t k = 0; k < s->n_dests; k++) {
            s->dests[k] = capid_config_dest(cfg, cs->destinations[k]);
            if (!s->dests[k]) {
                capid_perr_set(err, 0,
                               "source '%s' names destination '%s', which is not in "
                               "destinations",
                               cs->name, cs->destinations[k]);
                goto fail;
            }
            s->mdests[k] = capid_metrics_dest(h->metrics, cs->destinations[k]);
        }
        pthread_mutex_lock(&h->conf_mu);
        s->slot = source_slot(h, cs->name);
        pthread_mutex_unlock(&h->conf_mu);
    }
    c->lim = (struct capid_limits){cfg->server.max_event_bytes, cfg->server.max_depth};
    c->max_request = cfg->server.max_request_bytes;
    c->max_events = (size_t)cfg->server.max_events;
    c->max_depth = cfg->server.max_depth;
    *out = c;
    return CAPID_OK;
fail:
    conf_free(c);
    *out = NULL;
    return rc;
}

/* ---- workers -------------------------------------------------------- */

static struct worker *get_worker(struct capid_http *h)
{
    struct worker *w = tl_worker;
    if (w && w->srv == h)
        return w;
    w = calloc(1, sizeof(*w));
    if (!w || capid_mapper_init(&w->mapper) != CAPID_OK)
        abort(); /* out of memory */
    w->srv = h;
    capid_mapped_init(&w->mapped);
    capid_batch_init(&w->batch);
    capid_buf_init(&w->arena, 0);
    capid_buf_init(&w->out, 0);
    pthread_mutex_lock(&h->workers_mu);
    w->next = h->workers;
    h->workers = w;
    pthread_mutex_unlock(&h->workers_mu);
    tl_worker = w;
    return w;
}

static void worker_free(struct worker *w)
{
    capid_queue_close(w->q);
    capid_mapper_release(&w->mapper);
    capid_mapped_release(&w->mapped);
    capid_batch_release(&w->batch);
    capid_buf_release(&w->arena);
    capid_buf_release(&w->out);
    free(w->refs);
    free(w->skips);
    free(w->items);
    free(w->group);
    free(w);
}

/* Opens a queue connection into *q unless it is open. Returns CAPID_OK or
 * the error of capid_queue_open (logged; the next request tries again). */
static int open_queue(struct capid_http *h, struct capid_queue **q, struct capid_perr *err)
{
    struct capid_perr e = {0};
    struct capid_queue_opts o = {.path = h->queue_path,
                                 .sync_normal = h->sync_normal,
                                 .keep_delivered_s = h->keep_delivered_s};
    int rc = *q ? CAPID_OK : capid_queue_open(q, &o, err ? err : &e);
    if (rc != CAPID_OK) {
        if (!err)
            capid_error("cannot open queue '%s' for ingestion: %s", h->queue_path,
                        e.msg ? e.msg : capid_strerror(rc));
        *q = NULL;
    }
    return rc;
}

/* The worker's own connection, for reads (metrics, readiness): SQLite
 * connections are used by one thread at a time. */
static struct capid_queue *worker_queue(struct worker *w)
{
    return open_queue(w->srv, &w->q, NULL) == CAPID_OK ? w->q : NULL;
}

/* Adds what the mapper counted since the last request to the server's
 * counters (the mapper itself is read by its thread only). */
static void worker_flush_stats(struct worker *w)
{
    const struct capid_map_stats *ms = &w->mapper.stats;
    for (size_t k = 0; k < CAPID_UK__COUNT + 3; k++)
        if (ms->dropped_value[k] != w->seen_dropped[k]) {
            add(&w->srv->stats.dropped[k], ms->dropped_value[k] - w->seen_dropped[k]);
            w->seen_dropped[k] = ms->dropped_value[k];
        }
    if (ms->pii_guarded != w->seen_pii) {
        add(&w->srv->stats.pii_guarded, ms->pii_guarded - w->seen_pii);
        w->seen_pii = ms->pii_guarded;
    }
}

/* ---- group commit --------------------------------------------------- */

/* Commits items[0..n) in one transaction, possibly together with the
 * items of requests other threads are committing at the same moment: one
 * thread at a time (the leader) commits everything pending, so threads of
 * this process never wait on SQLite's lock for each other and concurrent
 * requests share one fsync. The leader uses the server's commit connection,
 * which thus moves between threads but is used by one at a time (queue.h
 * allows it); one connection for every commit keeps its page cache valid,
 * where connections taking turns would each find theirs stale (measured:
 * re-reading the index pages cost more than the commit's own writes).
 * Returns when the transaction holding these items is durable (or failed:
 * the error, and nothing of these items is stored). */
static int group_commit(struct worker *w, struct capid_queue_item *items, size_t n, int64_t now)
{
    struct capid_http *h = w->srv;
    struct commit_req me = {items, n, CAPID_OK, false, NULL};
    pthread_mutex_lock(&h->commit_mu);
    if (h->pending_tail)
        h->pending_tail->next = &me;
    else
        h->pending = &me;
    h->pending_tail = &me;
    while (!me.done) {
        if (h->committing) {
            pthread_cond_wait(&h->commit_cv, &h->commit_mu);
            continue;
        }
        /* Lead: take what is pending (at least the first request). */
        h->committing = true;
        struct commit_req *take = h->pending, *last = take;
        size_t total = take->n, k = 0;
        while (last->next && total + last->next->n <= MAX_GROUP_EVENTS) {
            last = last->next;
            total += last->n;
        }
        h->pending = last->next;
        if (!h->pending)
            h->pending_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&h->commit_mu);

        int rc = open_queue(h, &h->commit_q, NULL);
        struct capid_queue *q = h->commit_q;
        if (q && !take->next) {
            rc = capid_queue_enqueue(q, take->items, take->n, now, NULL);
        } else if (q) {
            if (w->cap_group < total) {
                w->cap_group = total;
                w->group = realloc(w->group, total * sizeof(*w->group));
                if (!w->group)
                    abort();
            }
            for (struct commit_req *r = take; r; r = r->next)
                for (size_t i = 0; i < r->n; i++)
                    w->group[k++] = r->items[i];
            rc = capid_queue_enqueue(q, w->group, total, now, NULL);
            k = 0;
            for (struct commit_req *r = take; r; r = r->next)
                for (size_t i = 0; i < r->n; i++)
                    r->items[i].result = w->group[k++].result;
        }
        if (q && capid_queue_failed(q) && !atomic_exchange(&h->failed, true))
            capid_error("queue '%s' failed (I/O error or corruption): ingestion answers 503 "
                        "until capid is restarted",
                        h->queue_path);

        pthread_mutex_lock(&h->commit_mu);
        for (struct commit_req *r = take, *next; r; r = next) {
            next = r->next; /* r may vanish as soon as done is set */
            r->rc = rc;
            r->done = true;
        }
        h->committing = false;
        pthread_cond_broadcast(&h->commit_cv);
    }
    pthread_mutex_unlock(&h->commit_mu);
    return me.rc;
}

/* ---- responses ------------------------------------------------------ */

static void count_request(struct capid_http *h, struct req *r, unsigned status)
{
    size_t c = N_CODES;
    for (size_t i = 0; i < N_CODES; i++)
        if (status_codes[i] == status)
            c = i;
    add(&h->stats.requests[r->ep][c], 1);
    int64_t us = mono_us() - r->t0_us;
    if (us < 0)
        us = 0;
    size_t b = N_BOUNDS;
    for (size_t i = 0; i < N_BOUNDS; i++)
        if ((double)us <= lat_bounds[i] * 1e6) {
            b = i;
            break;
        }
    add(&h->stats.lat[r->ep][b], 1);
    add(&h->stats.lat_sum_us[r->ep], (uint64_t)us);
}

/* Queues a response (the body is copied) with up to two extra headers. */
static enum MHD_Result respond(struct capid_http *h, struct MHD_Connection *mc, struct req *r,
                               unsigned status, const char *type, const char *body, size_t len,
                               const char *h1, const char *v1, const char *h2, const char *v2)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (h1)
        MHD_add_response_header(resp, h1, v1);
    if (h2)
        MHD_add_response_header(resp, h2, v2);
    if (atomic_load(&h->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(mc, status, resp);
    MHD_destroy_response(resp);
    r->responded = true;
    count_request(h, r, status);
    set_deadline(h, r->conn, true); /* the answer must be read within the timeout too */
    return ret;
}

/* {"error":code,"detail":...} plus the position of the problem when known. */
static void error_json(struct capid_buf *b, const char *code, const char *detail, long long index,
                       long long position, size_t line)
{
    capid_buf_reset(b);
    capid_buf_puts(b, "{\"error\":");
    capid_buf_json_str(b, code, strlen(code));
    capid_buf_puts(b, ",\"detail\":");
    capid_buf_json_str(b, detail, strlen(detail));
    if (index >= 0)
        capid_buf_printf(b, ",\"index\":%lld", index);
    if (position >= 0)
        capid_buf_printf(b, ",\"position\":%lld", position);
    if (line)
        capid_buf_printf(b, ",\"line\":%zu", line);
    capid_buf_puts(b, "}");
}

static enum MHD_Result respond_error(struct capid_http *h, struct MHD_Connection *mc, struct req *r,
                                     unsigned status, const char *code, const char *detail)
{
    struct capid_buf b;
    capid_buf_init(&b, 0);
    error_json(&b, code, detail, -1, -1, 0);
    const char *h1 = NULL, *v1 = NULL;
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        h1 = MHD_HTTP_HEADER_RETRY_AFTER, v1 = RETRY_AFTER_S;
    else if (status == MHD_HTTP_UNAUTHORIZED)
        h1 = MHD_HTTP_HEADER_WWW_AUTHENTICATE, v1 = "Bearer realm=\"capid\"";
    else if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        h1 = MHD_HTTP_HEADER_ALLOW, v1 = r->ep <= EP_BATCH ? "POST" : "GET, HEAD";
    enum MHD_Result ret = respond(h, mc, r, status, JSON_TYPE, b.data, b.len, h1, v1, NULL, NULL);
    capid_buf_release(&b);
    return ret;
}

/* Past the body limit in the middle of a chunked upload, libmicrohttpd
 * cannot queue a response any more (microhttpd.h: not while upload data is
 * handed over). The 413 is written on the socket directly, then the
 * connection is closed (the handler returns MHD_NO): nothing of this
 * request's response has been sent yet, so the bytes are a valid answer. */
static void raw_413(struct capid_http *h, struct req *r)
{
    char body[256], msg[512];
    snprintf(body, sizeof(body),
             "{\"error\":\"too_large\",\"detail\":\"the body is over the limit of %zu bytes\"}",
             r->limit);
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 413 Content Too Large\r\nContent-Type: " JSON_TYPE
                     "\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: "
                     "%zu\r\n\r\n%s",
                     strlen(body), body);
    if (r->conn && r->conn->fd >= 0 && n > 0) {
        (void)!send(r->conn->fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        shutdown(r->conn->fd, SHUT_WR); /* FIN right after the answer */
    }
    r->responded = true;
    count_request(h, r, 413);
}

/* ---- metrics, health ------------------------------------------------ */

static void write_metrics(struct capid_http *h, struct worker *w, struct capid_buf *b)
{
    struct stats *st = &h->stats;
    capid_buf_reset(b);
    capid_buf_puts(b, "# TYPE capid_up gauge\ncapid_up 1\n");
    capid_buf_printf(b, "# TYPE capid_ready gauge\ncapid_ready %d\n",
                     !atomic_load(&h->stopping) && !atomic_load(&h->failed));
    capid_buf_puts(b, "# TYPE capid_http_requests_total counter\n");
    for (int e = 0; e < EP__COUNT; e++)
        for (size_t c = 0; c <= N_CODES; c++) {
            uint64_t n = ld(&st->requests[e][c]);
            if (!n)
                continue;
            char code[8];
            snprintf(code, sizeof(code), "%u", c < N_CODES ? status_codes[c] : 0);
            capid_buf_printf(b, "capid_http_requests_total{endpoint=\"%s\",code=\"%s\"} %llu\n",
                             ep_path[e], c < N_CODES ? code : "other", (unsigned long long)n);
        }
    capid_buf_puts(b, "# TYPE capid_http_request_duration_seconds histogram\n");
    for (int e = 0; e < EP__COUNT; e++) {
        uint64_t cum = 0;
        for (size_t i = 0; i <= N_BOUNDS; i++)
            cum += ld(&st->lat[e][i]);
        if (!cum && e != EP_EVENTS && e != EP_BATCH)
            continue;
        cum = 0;
        for (size_t i = 0; i < N_BOUNDS; i++) {
            cum += ld(&st->lat[e][i]);
            capid_buf_printf(b,
                             "capid_http_request_duration_seconds_bucket{endpoint=\"%s\","
                             "le=\"%g\"} %llu\n",
                             ep_path[e], lat_bounds[i], (unsigned long long)cum);
        }
        cum += ld(&st->lat[e][N_BOUNDS]);
        capid_buf_printf(b,
                         "capid_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"+Inf\"} "
                         "%llu\n"
                         "capid_http_request_duration_seconds_sum{endpoint=\"%s\"} %.6f\n"
                         "capid_http_request_duration_seconds_count{endpoint=\"%s\"} %llu\n",
                         ep_path[e], (unsigned long long)cum, ep_path[e],
                         (double)ld(&st->lat_sum_us[e]) / 1e6, ep_path[e], (unsigned long long)cum);
    }
    capid_buf_printf(b,
                     "# TYPE capid_http_inflight_requests gauge\ncapid_http_inflight_requests "
                     "%lld\n# TYPE capid_http_connections_cut_total counter\n"
                     "capid_http_connections_cut_total %llu\n"
                     "# TYPE capid_http_auth_failures_total counter\n"
                     "capid_http_auth_failures_total %llu\n"
                     "# TYPE capid_ingest_queue_errors_total counter\n"
                     "capid_ingest_queue_errors_total %llu\n",
                     (long long)atomic_load(&h->inflight), (unsigned long long)ld(&st->cut),
                     (unsigned long long)ld(&st->auth_failed),
                     (unsigned long long)ld(&st->queue_errors));
    capid_buf_puts(b, "# TYPE capid_events_received_total counter\n");
    pthread_mutex_lock(&h->conf_mu);
    size_t ns = st->n_sources;
    pthread_mutex_unlock(&h->conf_mu);
    for (size_t i = 0; i < ns; i++)
        capid_buf_printf(b, "capid_events_received_total{source=\"%s\"} %llu\n", st->source_name[i],
                         (unsigned long long)ld(&st->received[i]));
    capid_buf_puts(b, "# TYPE capid_dropped_values_total counter\n");
    for (size_t k = 0; k < CAPID_UK__COUNT + 3; k++) {
        const char *key = k < CAPID_UK__COUNT      ? capid_ukey_name((enum capid_ukey)k)
                          : k == CAPID_DROPPED_IP  ? "client_ip_address"
                          : k == CAPID_DROPPED_FBP ? "fbp"
                                                   : "fbc";
        capid_buf_printf(b, "capid_dropped_values_total{key=\"%s\"} %llu\n", key,
                         (unsigned long long)ld(&st->dropped[k]));
    }
    capid_buf_printf(b, "# TYPE capid_pii_guarded_total counter\ncapid_pii_guarded_total %llu\n",
                     (unsigned long long)ld(&st->pii_guarded));
    if (h->metrics)
        capid_metrics_write_prometheus(h->metrics, b);

    /* Queue depth per destination, read from the queue itself. */
    struct capid_queue *q = worker_queue(w);
    struct conf *c = conf_get(h);
    int64_t now = capid_now_s() + h->clock_offset_s;
    if (q) {
        static const char *const kinds[] = {"queued", "leased", "dead"};
        capid_buf_puts(b, "# TYPE capid_queue_events gauge\n");
        struct capid_queue_counts *qc = calloc(c->cfg->n_dests + 1, sizeof(*qc));
        bool *ok = calloc(c->cfg->n_dests + 1, sizeof(*ok));
        if (!qc || !ok)
            abort();
        for (size_t i = 0; i < c->cfg->n_dests; i++) {
            const char *name = c->cfg->dests[i].name;
            ok[i] = capid_queue_counts(q, name, &qc[i]) == CAPID_OK;
            if (!ok[i])
                continue;
            int64_t v[3] = {qc[i].queued, qc[i].leased, qc[i].dead};
            for (int k = 0; k < 3; k++)
                capid_buf_printf(b, "capid_queue_events{destination=\"%s\",state=\"%s\"} %lld\n",
                                 name, kinds[k], (long long)v[k]);
        }
        capid_buf_puts(b, "# TYPE capid_queue_oldest_age_seconds gauge\n");
        for (size_t i = 0; i < c->cfg->n_dests; i++) {
            if (!ok[i])
                continue;
            int64_t age = qc[i].oldest_enqueued_at ? now - qc[i].oldest_enqueued_at : 0;
            capid_buf_printf(b, "capid_queue_oldest_age_seconds{destination=\"%s\"} %lld\n",
                             c->cfg->dests[i].name, (long long)(age > 0 ? age : 0));
        }
        free(qc);
        free(ok);
    }
    conf_put(h, c);
}

/* ---- the request pipeline ------------------------------------------- */

static enum endpoint route(const char *url)
{
    for (int e = 0; e < EP_OTHER; e++)
        if (!strcmp(url, ep_path[e]))
            return (enum endpoint)e;
    return EP_OTHER;
}

/* The index of the source whose key the request presents, or -1. Every
 * source's digest is compared, in constant time, whatever matched before. */
static int authenticate(const struct conf *c, struct MHD_Connection *mc)
{
    const char *key = NULL;
    size_t len = 0;
    const char *auth =
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth) {
        while (*auth == ' ' || *auth == '\t')
            auth++;
        if (!strncasecmp(auth, "Bearer", 6) && (auth[6] == ' ' || auth[6] == '\t')) {
            key = auth + 7;
            while (*key == ' ' || *key == '\t')
                key++;
        }
    } else {
        key = MHD_lookup_connection_value(mc, MHD_GET_ARGUMENT_KIND, "token");
    }
    if (key) {
        len = strlen(key);
        while (len && (key[len - 1] == ' ' || key[len - 1] == '\t'))
            len--;
    }
    unsigned char dg[32];
    sha256(key ? key : "", len, dg);
    int found = -1;
    for (size_t i = 0; i < c->n_sources; i++) {
        int diff = CRYPTO_memcmp(dg, c->sources[i].digest, sizeof(dg));
        if (!diff && found < 0 && len)
            found = (int)i;
    }
    return found;
}

/* The body format from Content-Type; NULL, or the reason for a 415. */
static const char *body_format(struct MHD_Connection *mc, enum endpoint ep,
                               enum capid_batch_format *f)
{
    const char *enc =
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (enc && strcasecmp(enc, "identity") != 0)
        return "Content-Encoding is not supported: send the body uncompressed";
    const char *ct = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *want = ep == EP_EVENTS ? "Content-Type must be application/json"
                                       : "Content-Type must be application/json or "
                                         "application/x-ndjson";
    if (!ct)
        return want;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    if (n == 16 && !strncasecmp(ct, "application/json", n))
        *f = ep == EP_EVENTS ? CAPID_BATCH_ONE : CAPID_BATCH_JSON;
    else if (ep == EP_BATCH && ((n == 20 && !strncasecmp(ct, "application/x-ndjson", n)) ||
                                (n == 18 && !strncasecmp(ct, "application/ndjson", n))))
        *f = CAPID_BATCH_NDJSON;
    else
        return want;
    /* Parameters: only charset matters, and it must be UTF-8 (SPEC 2). */
    for (const char *p = strchr(ct, ';'); p; p = strchr(p + 1, ';')) {
        const char *a = p + 1;
        while (*a == ' ' || *a == '\t')
            a++;
        if (strncasecmp(a, "charset", 7) != 0)
            continue;
        a += 7;
        while (*a == ' ' || *a == '\t')
            a++;
        if (*a != '=')
            continue;
        a++;
        while (*a == ' ' || *a == '\t' || *a == '"')
            a++;
        size_t m = strcspn(a, "\"; \t");
        if (!((m == 5 && !strncasecmp(a, "utf-8", 5)) || (m == 4 && !strncasecmp(a, "utf8", 4))))
            return "the body must be UTF-8 (charset=utf-8)";
    }
    return NULL;
}

static enum MHD_Result begin_post(struct capid_http *h, struct MHD_Connection *mc, struct req *r);

/* First call of a request: headers are in. Answers errors at once (the
 * body, if any, is not read) or prepares to receive the body. */
static enum MHD_Result begin(struct capid_http *h, struct MHD_Connection *mc, struct req *r,
                             const char *method)
{
    bool get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
    bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (r->ep == EP_OTHER)
        return respond_error(h, mc, r, MHD_HTTP_NOT_FOUND, "not_found",
                             "no such endpoint: POST /events, POST /events/batch, GET /healthz, "
                             "GET /readyz, GET /metrics");
    if (r->ep <= EP_BATCH ? !post : !get)
        return respond_error(h, mc, r, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                             r->ep <= EP_BATCH ? "use POST" : "use GET");
    if (r->ep > EP_BATCH)
        return MHD_YES; /* answered on the next call: once the request is complete,
                           libmicrohttpd keeps the connection open */
    return begin_post(h, mc, r);
}

/* GET /healthz, /readyz, /metrics. */
static enum MHD_Result answer_get(struct capid_http *h, struct MHD_Connection *mc, struct req *r)
{
    if (r->ep == EP_HEALTHZ) {
        static const char ok[] = "{\"status\":\"ok\"}";
        return respond(h, mc, r, MHD_HTTP_OK, JSON_TYPE, ok, sizeof(ok) - 1, NULL, NULL, NULL,
                       NULL);
    }
    if (r->ep == EP_READYZ) {
        const char *why = atomic_load(&h->stopping)      ? "shutting down"
                          : atomic_load(&h->failed)      ? "the queue failed"
                          : !worker_queue(get_worker(h)) ? "the queue cannot be opened"
                                                         : NULL;
        if (why)
            return respond_error(h, mc, r, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready", why);
        static const char ok[] = "{\"status\":\"ready\"}";
        return respond(h, mc, r, MHD_HTTP_OK, JSON_TYPE, ok, sizeof(ok) - 1, NULL, NULL, NULL,
                       NULL);
    }
    if (r->ep == EP_METRICS) {
        struct worker *w = get_worker(h);
        write_metrics(h, w, &w->out);
        return respond(h, mc, r, MHD_HTTP_OK, PROM_TYPE, w->out.data, w->out.len, NULL, NULL, NULL,
                       NULL);
    }
    return respond_error(h, mc, r, MHD_HTTP_NOT_FOUND, "not_found", "no such endpoint");
}

/* POST /events, /events/batch: checks everything the headers tell before
 * a byte of the body is read. */
static enum MHD_Result begin_post(struct capid_http *h, struct MHD_Connection *mc, struct req *r)
{
    if (atomic_load(&h->stopping))
        return respond_error(h, mc, r, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                             "capid is shutting down: nothing was stored, retry");
    if (atomic_load(&h->failed))
        return respond_error(h, mc, r, MHD_HTTP_SERVICE_UNAVAILABLE, "queue_unavailable",
                             "the queue failed: nothing was stored, retry");
    r->conf = conf_get(h);
    r->source = authenticate(r->conf, mc);
    if (r->source < 0) {
        add(&h->stats.auth_failed, 1);
        return respond_error(h, mc, r, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                             "missing or invalid ingest key: send Authorization: Bearer <key>");
    }
    const char *why = body_format(mc, r->ep, &r->fmt);
    if (why)
        return respond_error(h, mc, r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                             why);
    r->limit = r->ep == EP_EVENTS ? r->conf->lim.max_event_bytes : r->conf->max_request;
    char detail[160];
    const char *cl =
        MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long length = 0;
    if (cl) {
        char *end;
        errno = 0;
        length = strtoull(cl, &end, 10);
        if (errno || end == cl)
            length = ULLONG_MAX;
        if (length > r->limit) {
            snprintf(detail, sizeof(detail), "the body (%llu bytes) is over the limit of %zu bytes",
                     length, r->limit);
            return respond_error(h, mc, r, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", detail);
        }
    }
    /* Reserve the most this body can take: its length, or the limit when
     * chunked. */
    r->reserved = cl ? (size_t)length : r->limit;
    if (atomic_fetch_add(&h->buffered, r->reserved) + r->reserved > MAX_BUFFERED_BYTES) {
        atomic_fetch_sub(&h->buffered, r->reserved);
        r->reserved = 0;
        return respond_error(h, mc, r, MHD_HTTP_SERVICE_UNAVAILABLE, "busy",
                             "too many request bodies in memory: nothing was stored, retry");
    }
    capid_buf_init(&r->body, r->limit);
    if (cl && length && capid_buf_grow(&r->body, (size_t)length) != CAPID_OK)
        abort();
    atomic_fetch_add(&h->inflight, 1);
    r->counted_inflight = true;
    return MHD_YES;
}

static void add_skip(struct worker *w, size_t event, size_t line, size_t dest,
                     enum capid_reason reason, const char *detail)
{
    if (w->n_skips == w->cap_skips) {
        w->cap_skips = w->cap_skips ? w->cap_skips * 2 : 64;
        w->skips = realloc(w->skips, w->cap_skips * sizeof(*w->skips));
        if (!w->skips)
            abort();
    }
    size_t off = w->arena.len;
    if (capid_buf_append(&w->arena, detail, strlen(detail) + 1))
        abort();
    w->skips[w->n_skips++] = (struct skip){event, line, dest, reason, off};
}

static size_t arena_str(struct worker *w, const char *s, size_t n)
{
    size_t off = w->arena.len;
    if (capid_buf_append(&w->arena, s, n) || capid_buf_putc(&w->arena, '\0'))
        abort();
    return off;
}

static int by_event_then_dest(const void *a, const void *b)
{
    const struct skip *x = a, *y = b;
    if (x->event != y->event)
        return x->event < y->event ? -1 : 1;
    return x->dest < y->dest ? -1 : x->dest > y->dest;
}

/* Parses, maps and commits the events of a complete body; writes the
 * answer to w->out and returns its status. */
static unsigned process(struct capid_http *h, struct worker *w, struct req *r)
{
    const struct conf *c = r->conf;
    const struct source *src = &c->sources[r->source];
    struct capid_buf *out = &w->out;
    const char *body = r->body.data ? r->body.data : "";
    int64_t now = capid_now_s() + h->clock_offset_s;
    struct capid_perr err = {0};
    struct capid_batch_limits bl = {c->max_events, c->max_depth};

    int rc = capid_batch_split(&w->batch, body, r->body.len, r->fmt, &bl, &err);
    if (rc == CAPID_ENOMEM)
        abort();
    if (rc != CAPID_OK) {
        bool big = rc == CAPID_ETOOBIG;
        error_json(out, big ? "too_large" : "invalid_json", err.msg ? err.msg : "malformed body",
                   -1, big ? -1 : (long long)err.offset, err.line);
        return big ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST;
    }
    capid_buf_reset(&w->arena);
    w->n_refs = w->n_skips = 0;
    const bool one = r->fmt == CAPID_BATCH_ONE;
    for (size_t i = 0; i < w->batch.n; i++) {
        const struct capid_batch_event *be = &w->batch.ev[i];
        struct capid_event ev;
        capid_perr_clear(&err);
        enum capid_event_status st =
            capid_event_parse(&ev, body + be->off, be->len, &c->lim, now, &err);
        const char *msg = err.msg ? err.msg : "invalid event";
        if (st == CAPID_EV_INVALID_JSON || (one && st != CAPID_EV_OK)) {
            /* Not JSON: the body is malformed, nothing of it is taken.
             * POST /events: the one event is the request. */
            char detail[700];
            if (one)
                snprintf(detail, sizeof(detail), "%s", msg);
            else if (be->line)
                snprintf(detail, sizeof(detail), "event %zu (line %zu): %s", i, be->line, msg);
            else
                snprintf(detail, sizeof(detail), "event %zu (at byte %zu of the body): %s", i,
                         be->off, msg);
            bool big = st == CAPID_EV_TOO_LARGE;
            long long pos = st == CAPID_EV_INVALID_JSON && err.offset != (size_t)-1
                                ? (long long)(be->off + err.offset)
                                : -1;
            error_json(out,
                       big                           ? "too_large"
                       : st == CAPID_EV_INVALID_JSON ? "invalid_json"
                                                     : "invalid_event",
                       detail, one ? -1 : (long long)i, pos, be->line);
            return big ? MHD_HTTP_CONTENT_TOO_LARGE : MHD_HTTP_BAD_REQUEST;
        }
        if (st != CAPID_EV_OK) {
            /* One event of a batch: skipped, the others go on. */
            enum capid_reason reason =
                st == CAPID_EV_TOO_LARGE ? CAPID_R_TOO_LARGE : CAPID_R_INVALID_EVENT;
            for (size_t d = 0; d < src->n_dests; d++)
                add_skip(w, i, be->line, d, reason, msg);
            continue;
        }
        for (size_t d = 0; d < src->n_dests; d++) {
            struct capid_mapped *m = &w->mapped;
            if (capid_map_event(&w->mapper, src->dests[d], &ev, now, m) != CAPID_OK)
                abort(); /* out of memory */
            if (m->reason != CAPID_R_NONE) {
                add_skip(w, i, be->line, d, m->reason, m->detail);
                continue;
            }
            if (w->n_refs == w->cap_refs) {
                w->cap_refs = w->cap_refs ? w->cap_refs * 2 : 256;
                w->refs = realloc(w->refs, w->cap_refs * sizeof(*w->refs));
                if (!w->refs)
                    abort();
            }
            struct item_ref *ir = &w->refs[w->n_refs++];
            ir->event = i;
            ir->dest = d;
            ir->name = arena_str(w, m->event_name, strlen(m->event_name));
            ir->id = arena_str(w, m->event_id, strlen(m->event_id));
            ir->src = m->action_source ? arena_str(w, m->action_source, strlen(m->action_source))
                                       : SIZE_MAX;
            ir->payload = arena_str(w, m->json.data, m->json.len);
            ir->plen = m->json.len;
            ir->event_time = m->event_time;
            ir->id_time = m->id_time;
        }
        capid_event_release(&ev);
    }
    worker_flush_stats(w);

    /* Commit every mappable event of the request, in one transaction. */
    size_t queued = 0;
    if (w->n_refs) {
        if (w->cap_items < w->n_refs) {
            w->cap_items = w->n_refs;
            w->items = realloc(w->items, w->cap_items * sizeof(*w->items));
            if (!w->items)
                abort();
        }
        const char *a = w->arena.data;
        for (size_t k = 0; k < w->n_refs; k++) {
            const struct item_ref *ir = &w->refs[k];
            w->items[k] = (struct capid_queue_item){
                .dest = src->dests[ir->dest]->name,
                .event_name = a + ir->name,
                .event_id = a + ir->id,
                .action_source = ir->src == SIZE_MAX ? NULL : a + ir->src,
                .event_time = ir->event_time,
                .has_id_time = ir->id_time != CAPID_NO_ID_TIME,
                .id_time = ir->id_time,
                .payload = a + ir->payload,
                .payload_len = ir->plen,
            };
        }
        rc = group_commit(w, w->items, w->n_refs, now);
        if (rc != CAPID_OK) {
            add(&h->stats.queue_errors, 1);
            capid_warn("cannot commit %zu events to queue '%s': %s (answered 503)", w->n_refs,
                       h->queue_path, capid_strerror(rc));
            char detail[200];
            snprintf(detail, sizeof(detail),
                     "the queue cannot accept events now (%s): nothing was stored, retry",
                     capid_strerror(rc));
            error_json(out, "queue_unavailable", detail, -1, -1, 0);
            return MHD_HTTP_SERVICE_UNAVAILABLE;
        }
        for (size_t k = 0; k < w->n_refs; k++) {
            const struct item_ref *ir = &w->refs[k];
            if (w->items[k].result == CAPID_EDUP) {
                add_skip(w, ir->event, w->batch.ev[ir->event].line, ir->dest, CAPID_R_DUPLICATE,
                         "an event with this event_name and event_id was queued for this "
                         "destination less than 48 h ago");
            } else {
                queued++;
                capid_metrics_add(src->mdests[ir->dest], CAPID_C_EVENTS_ENQUEUED, 1);
            }
        }
    }
    if (src->slot >= 0)
        add(&h->stats.received[src->slot], w->batch.n);
    for (size_t k = 0; k < w->n_skips; k++)
        capid_metrics_skip(src->mdests[w->skips[k].dest], w->skips[k].reason);
    if (queued && h->on_enqueued)
        h->on_enqueued(h->arg);

    /* 202: what was received, queued, and why the rest was not. */
    if (w->n_skips > 1)
        qsort(w->skips, w->n_skips, sizeof(*w->skips), by_event_then_dest);
    capid_buf_reset(out);
    capid_buf_printf(out, "{\"received\":%zu,\"queued\":%zu,\"skipped\":[", w->batch.n, queued);
    for (size_t k = 0; k < w->n_skips; k++) {
        const struct skip *s = &w->skips[k];
        const char *dname = src->dests[s->dest]->name, *reason = capid_reason_name(s->reason);
        const char *detail = w->arena.data + s->detail;
        capid_buf_printf(out, "%s{\"index\":%zu,", k ? "," : "", s->event);
        if (s->line)
            capid_buf_printf(out, "\"line\":%zu,", s->line);
        capid_buf_puts(out, "\"destination\":");
        capid_buf_json_str(out, dname, strlen(dname));
        capid_buf_puts(out, ",\"reason\":");
        capid_buf_json_str(out, reason, strlen(reason));
        capid_buf_puts(out, ",\"detail\":");
        capid_buf_json_str(out, detail, strlen(detail));
        capid_buf_putc(out, '}');
    }
    capid_buf_puts(out, "]}");
    return MHD_HTTP_ACCEPTED;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct capid_http *h = cls;
    struct req *r = *con_cls;
    (void)version;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            abort();
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->conn = ci ? ci->socket_context : NULL;
        r->t0_us = r->conn && r->conn->start_us ? r->conn->start_us : mono_us();
        r->ep = route(url);
        r->source = -1;
        *con_cls = r;
        return begin(h, mc, r, method);
    }
    if (r->responded) { /* not expected: libmicrohttpd stops calling after a response */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size && r->ep > EP_BATCH) { /* a GET with a body: ignored, within reason */
        r->limit += *upload_size;
        *upload_size = 0;
        return r->limit > 65536 ? MHD_NO : MHD_YES;
    }
    if (r->ep > EP_BATCH)
        return answer_get(h, mc, r);
    if (*upload_size) {
        if (r->body.len + *upload_size > r->limit ||
            capid_buf_append(&r->body, upload, *upload_size) != CAPID_OK) {
            raw_413(h, r);
            return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    /* The whole body is in. No deadline while it is processed. */
    set_deadline(h, r->conn, false);
    struct worker *w = get_worker(h);
    unsigned status = process(h, w, r);
    return respond(h, mc, r, status, JSON_TYPE, w->out.data, w->out.len,
                   status == MHD_HTTP_SERVICE_UNAVAILABLE ? MHD_HTTP_HEADER_RETRY_AFTER : NULL,
                   RETRY_AFTER_S, NULL, NULL);
}

/* The request line arrived: the request has connection_timeout_s from now
 * to arrive whole. The URI is not logged: its query may hold the key. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *mc)
{
    struct capid_http *h = cls;
    (void)uri;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn *c = ci ? ci->socket_context : NULL;
    if (c) {
        c->start_us = mono_us();
        set_deadline(h, c, true);
    }
    return NULL;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct capid_http *h = cls;
    struct req *r = *con_cls;
    (void)mc;
    (void)toe;
    if (!r)
        return;
    if (r->reserved)
        atomic_fetch_sub(&h->buffered, r->reserved);
    if (r->counted_inflight)
        atomic_fetch_sub(&h->inflight, 1);
    capid_buf_release(&r->body);
    conf_put(h, r->conf);
    if (r->conn) {
        r->conn->start_us = 0;
        set_deadline(h, r->conn, true); /* idle: the next request line within the timeout */
    }
    free(r);
    *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *mc, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct capid_http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn *c = calloc(1, sizeof(*c));
        if (!c)
            abort();
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        set_deadline(h, c, true);
        pthread_mutex_lock(&h->conns_mu);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        pthread_mutex_unlock(&h->conns_mu);
        *socket_context = c;
        return;
    }
    struct conn *c = *socket_context;
    if (!c)
        return;
    pthread_mutex_lock(&h->conns_mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&h->conns_mu);
    free(c);
    *socket_context = NULL;
}

/* Closes connections whose request is not in by its deadline: a client that
 * trickles its headers or body keeps resetting libmicrohttpd's inactivity
 * timeout, not this one. shutdown() makes libmicrohttpd see the end of the
 * connection and close it in its own thread. */
static void *sweeper_main(void *arg)
{
    struct capid_http *h = arg;
    pthread_mutex_lock(&h->conns_mu);
    while (!h->sweep_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += SWEEP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->sweep_cv, &h->conns_mu, &ts);
        int64_t now = capid_mono_ms();
        for (struct conn *c = h->conns; c; c = c->next) {
            int64_t d = atomic_load_explicit(&c->deadline_ms, memory_order_relaxed);
            if (d && now > d && !c->cut && c->fd >= 0) {
                shutdown(c->fd, SHUT_RDWR);
                c->cut = true;
                add(&h->stats.cut, 1);
            }
        }
    }
    pthread_mutex_unlock(&h->conns_mu);
    return NULL;
}

/* libmicrohttpd's own messages, at debug level; anything after a '?' is
 * cut in case a message ever carries a request target (?token=). */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "?\r\n")] = '\0';
    capid_debug("libmicrohttpd: %s", msg);
}

/* ---- lifecycle ------------------------------------------------------ */

/* A listening TCP socket on "HOST:PORT" ("[v6]:PORT"). */
static int open_listener(const char *listen_on, int *fd_out, unsigned *port, struct capid_perr *err)
{
    char host[256];
    const char *colon = strrchr(listen_on, ':');
    size_t hl = colon ? (size_t)(colon - listen_on) : 0;
    const char *hs = listen_on;
    if (hl >= 2 && hs[0] == '[' && hs[hl - 1] == ']')
        hs++, hl -= 2;
    if (!colon || hl >= sizeof(host)) {
        capid_perr_set(err, 0, "server.listen '%s' is not HOST:PORT", listen_on);
        return CAPID_ECONFIG;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                    *ai = NULL;
    int g = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &ai);
    if (g) {
        capid_perr_set(err, 0, "cannot resolve server.listen '%s': %s", listen_on, gai_strerror(g));
        return CAPID_ECONFIG;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 1024)) {
        capid_perr_set(err, 0, "cannot listen on '%s': %s", listen_on, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return CAPID_EIO;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return CAPID_OK;
}

static int write_ready_file(const char *path, unsigned port, struct capid_perr *err)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        capid_perr_set(err, 0, "cannot write server.ready_file '%s': %s", path, strerror(errno));
        return CAPID_EIO;
    }
    return CAPID_OK;
}

int capid_http_start(struct capid_http **out, const struct capid_http_opts *o,
                     struct capid_perr *err)
{
    struct capid_http *h = calloc(1, sizeof(*h));
    int rc;
    *out = NULL;
    if (!h)
        abort();
    h->listen_fd = -1;
    h->metrics = o->metrics;
    h->clock_offset_s = o->clock_offset_s;
    h->on_enqueued = o->on_enqueued;
    h->arg = o->arg;
    h->config_path = strdup(o->config_path);
    if (!h->config_path)
        abort();
    pthread_mutex_init(&h->conf_mu, NULL);
    pthread_mutex_init(&h->workers_mu, NULL);
    pthread_mutex_init(&h->commit_mu, NULL);
    pthread_cond_init(&h->commit_cv, NULL);
    pthread_mutex_init(&h->conns_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->sweep_cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_store(&h->stopped, true); /* until the daemon runs */

    rc = conf_load(h, &h->conf, err);
    if (rc != CAPID_OK)
        goto fail;
    const struct capid_config *cfg = h->conf->cfg;
    const struct capid_server_cfg *sv = &cfg->server;
    h->queue_path = strdup(cfg->queue.path);
    h->ready_file = sv->ready_file ? strdup(sv->ready_file) : NULL;
    if (!h->queue_path || (sv->ready_file && !h->ready_file))
        abort();
    h->sync_normal = cfg->queue.synchronous == CAPID_SYNC_NORMAL;
    h->keep_delivered_s = cfg->queue.keep_delivered_s;
    h->timeout_ms = (int64_t)sv->connection_timeout_s * 1000;

    /* The commit connection is opened now: a queue that cannot be opened
     * stops the start rather than the first request. */
    rc = open_queue(h, &h->commit_q, err);
    if (rc != CAPID_OK)
        goto fail;
    rc = open_listener(sv->listen, &h->listen_fd, &h->port, err);
    if (rc != CAPID_OK)
        goto fail;
    if (pthread_create(&h->sweeper, NULL, sweeper_main, h) != 0) {
        capid_perr_set(err, 0, "cannot start the HTTP server: %s", strerror(errno));
        rc = CAPID_EIO;
        goto fail;
    }
    h->sweeper_started = true;
    h->d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_LINUX_ONLY | MHD_USE_ITC |
            MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, h, MHD_OPTION_LISTEN_SOCKET, h->listen_fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)sv->threads, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)sv->connection_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)sv->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)sv->max_connections_per_ip, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HEADER_POOL_BYTES, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, MHD_OPTION_END);
    if (!h->d) {
        capid_perr_set(err, 0, "cannot start the HTTP server on '%s' (libmicrohttpd refused)",
                       sv->listen);
        rc = CAPID_EIO;
        goto fail;
    }
    atomic_store(&h->stopped, false);
    if (h->ready_file) {
        rc = write_ready_file(h->ready_file, h->port, err);
        if (rc != CAPID_OK)
            goto fail;
    }
    capid_info("HTTP ingestion on %s (port %u, %d threads, %zu sources)", sv->listen, h->port,
               sv->threads, h->conf->n_sources);
    *out = h;
    return CAPID_OK;
fail:
    if (h->ready_file)
        unlink(h->ready_file);
    free(h->ready_file);
    h->ready_file = NULL; /* not ours to remove again */
    capid_http_free(h);
    return rc;
}

unsigned capid_http_port(const struct capid_http *h)
{
    return h->port;
}

bool capid_http_failed(const struct capid_http *h)
{
    return atomic_load(&((struct capid_http *)h)->failed);
}

int capid_http_reload(struct capid_http *h, struct capid_perr *err)
{
    struct conf *c;
    int rc = conf_load(h, &c, err);
    if (rc != CAPID_OK)
        return rc;
    pthread_mutex_lock(&h->conf_mu);
    struct conf *old = h->conf;
    h->conf = c;
    pthread_mutex_unlock(&h->conf_mu);
    conf_put(h, old);
    return CAPID_OK;
}

void capid_http_stop(struct capid_http *h, int drain_ms)
{
    if (!h)
        return;
    atomic_store(&h->stopping, true);
    if (h->d && !atomic_exchange(&h->stopped, true)) {
        /* No new connections; requests already in finish (their 202 is
         * sent), new ones on open connections get 503 + Connection: close. */
        MHD_socket ls = MHD_quiesce_daemon(h->d);
        if (ls != MHD_INVALID_SOCKET && ls == h->listen_fd) {
            close(h->listen_fd);
            h->listen_fd = -1;
        }
        if (h->ready_file)
            unlink(h->ready_file);
        int64_t until = capid_mono_ms() + (drain_ms > 0 ? drain_ms : 0);
        while (atomic_load(&h->inflight) > 0 && capid_mono_ms() < until) {
            struct timespec ts = {0, 5 * 1000000L};
            nanosleep(&ts, NULL);
        }
        MHD_stop_daemon(h->d);
        h->d = NULL;
        if (h->listen_fd >= 0) /* libmicrohttpd closed it */
            h->listen_fd = -1;
    }
    if (h->sweeper_started) {
        pthread_mutex_lock(&h->conns_mu);
        h->sweep_stop = true;
        pthread_cond_signal(&h->sweep_cv);
        pthread_mutex_unlock(&h->conns_mu);
        pthread_join(h->sweeper, NULL);
        h->sweeper_started = false;
    }
    capid_queue_close(h->commit_q);
    h->commit_q = NULL;
    pthread_mutex_lock(&h->workers_mu);
    struct worker *w = h->workers;
    h->workers = NULL;
    pthread_mutex_unlock(&h->workers_mu);
    while (w) {
        struct worker *next = w->next;
        worker_free(w);
        w = next;
    }
}

void capid_http_free(struct capid_http *h)
{
    if (!h)
        return;
    capid_http_stop(h, 2000);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    conf_put(h, h->conf);
    free(h->config_path);
    free(h->ready_file);
    free(h->queue_path);
    pthread_mutex_destroy(&h->conf_mu);
    pthread_mutex_destroy(&h->workers_mu);
    pthread_mutex_destroy(&h->commit_mu);
    pthread_cond_destroy(&h->commit_cv);
    pthread_mutex_destroy(&h->conns_mu);
    pthread_cond_destroy(&h->sweep_cv);
    free(h);
}
