/* Accepted events, duplicates and counters. Events are kept compactly: a
 * 40-byte record each, with the payload bytes exactly as sent appended to
 * large chunks; both are capped (--store-max, --store-bytes) while the counts
 * never stop. Duplicates are found by a 64-bit hash of (pixel, event_name,
 * event_id) in an open-addressing set, so counting stays exact in memory
 * even when nothing is stored (a false duplicate needs a hash collision:
 * about n^2 / 2^65, 3e-6 for ten million events). One mutex; a batch is
 * recorded under one lock round. */
#include "sim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_MIN (4u << 20)

struct pixel_stat {
    char *id;
    uint64_t requests, events, duplicates, rejected;
};

struct batch {
    uint64_t request;
    int64_t t_ms;
    uint32_t pixel;
    const char *test_code, *partner;
};

struct rec {
    uint32_t batch;
    uint32_t dup;
    const char *name, *id, *payload; /* payload NULL: over the byte cap */
    size_t payload_len;
};

struct logent {
    int64_t t_ms;
    uint64_t request;
    int32_t pixel; /* -1: none */
    int16_t status;
    uint8_t kind;
    int32_t code, subcode;
    long events;
    int32_t delay_ms;
};

struct reject {
    int code, subcode;
    uint64_t count;
};

struct chunk {
    struct chunk *next;
    size_t used, size;
    char data[];
};

struct sim_store {
    pthread_mutex_t lock;
    struct sim_store_opts o;
    struct pixel_stat *pixels;
    size_t npixels;
    struct batch *batches;
    size_t nbatches, capbatches;
    struct rec *recs;
    size_t nrecs, caprecs;
    struct chunk *chunks; /* newest first */
    size_t bytes;
    uint64_t *set; /* dedup keys, 0 = empty slot */
    size_t setn, setcap;
    struct logent *log; /* ring of the most recent requests */
    size_t loghead, logn, logcap;
    uint64_t logdropped;
    struct reject *rejects;
    size_t nrejects;
    uint64_t requests, events, okbatches, duplicates, notstored, payloaddropped;
    uint64_t by_status[600];
    uint64_t by_kind[8];
};

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort(); /* STYLE: caps in place, out-of-memory aborts */
    return p;
}

struct sim_store *sim_store_new(const struct sim_store_opts *o)
{
    struct sim_store *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    pthread_mutex_init(&s->lock, NULL);
    s->o = *o;
    return s;
}

/* Frees everything but the lock and the options. */
static void store_empty(struct sim_store *s)
{
    for (size_t i = 0; i < s->npixels; i++)
        free(s->pixels[i].id);
    free(s->pixels);
    free(s->batches);
    free(s->recs);
    while (s->chunks) {
        struct chunk *c = s->chunks;
        s->chunks = c->next;
        free(c);
    }
    free(s->set);
    free(s->log);
    free(s->rejects);
    pthread_mutex_t lock = s->lock;
    struct sim_store_opts o = s->o;
    memset(s, 0, sizeof(*s));
    s->lock = lock;
    s->o = o;
}

void sim_store_clear(struct sim_store *s)
{
    pthread_mutex_lock(&s->lock);
    store_empty(s);
    pthread_mutex_unlock(&s->lock);
}

void sim_store_free(struct sim_store *s)
{
    if (!s)
        return;
    store_empty(s);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Copies n bytes into the chunks (plus a NUL). Under the lock. */
static const char *keep(struct sim_store *s, const char *p, size_t n)
{
    struct chunk *c = s->chunks;
    if (!c || c->size - c->used < n + 1) {
        size_t size = n + 1 > CHUNK_MIN ? n + 1 : CHUNK_MIN;
        c = xrealloc(NULL, sizeof(*c) + size);
        c->size = size;
        c->used = 0;
        c->next = s->chunks;
        s->chunks = c;
    }
    char *d = c->data + c->used;
    memcpy(d, p, n);
    d[n] = '\0';
    c->used += n + 1;
    s->bytes += n + 1;
    return d;
}

static const char *keep_str(struct sim_store *s, const char *p)
{
    return p ? keep(s, p, strlen(p)) : NULL;
}

/* Index of a pixel's counters, created on first sight; the last slot takes
 * every pixel past SIM_MAX_PIXELS. Under the lock. */
static uint32_t pixel_index(struct sim_store *s, const char *pixel)
{
    for (size_t i = 0; i < s->npixels; i++)
        if (strcmp(s->pixels[i].id, pixel) == 0)
            return (uint32_t)i;
    if (s->npixels == SIM_MAX_PIXELS)
        return SIM_MAX_PIXELS - 1;
    s->pixels = xrealloc(s->pixels, (s->npixels + 1) * sizeof(*s->pixels));
    struct pixel_stat *p = &s->pixels[s->npixels];
    memset(p, 0, sizeof(*p));
    p->id = strdup(s->npixels == SIM_MAX_PIXELS - 1 ? "(other pixels)" : pixel);
    if (!p->id)
        abort();
    return (uint32_t)s->npixels++;
}

/* FNV-1a over the three strings with separators, then a splitmix64 finish so
 * the low bits index the table well. */
static uint64_t dedup_key(const char *pixel, const struct sim_event_in *e)
{
    uint64_t h = 0xcbf29ce484222325ull;
    const char *parts[3] = {pixel, e->name, e->id};
    size_t lens[3] = {strlen(pixel), e->name_len, e->id_len};
    for (int k = 0; k < 3; k++) {
        const unsigned char *p = (const unsigned char *)parts[k];
        for (size_t i = 0; i < lens[k]; i++)
            h = (h ^ p[i]) * 0x100000001b3ull;
        h = (h ^ 0xff) * 0x100000001b3ull;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h ? h : 1;
}

/* Inserts key; returns true if it was there already. Under the lock. */
static bool set_seen(struct sim_store *s, uint64_t key)
{
    if ((s->setn + 1) * 2 > s->setcap) {
        size_t ncap = s->setcap ? s->setcap * 2 : 4096;
        uint64_t *nset = calloc(ncap, sizeof(*nset));
        if (!nset)
            abort();
        for (size_t i = 0; i < s->setcap; i++) {
            uint64_t k = s->set[i];
            if (!k)
                continue;
            size_t j = k & (ncap - 1);
            while (nset[j])
                j = (j + 1) & (ncap - 1);
            nset[j] = k;
        }
        free(s->set);
        s->set = nset;
        s->setcap = ncap;
    }
    size_t j = key & (s->setcap - 1);
    while (s->set[j]) {
        if (s->set[j] == key)
            return true;
        j = (j + 1) & (s->setcap - 1);
    }
    s->set[j] = key;
    s->setn++;
    return false;
}

bool sim_store_keeps(struct sim_store *s)
{
    pthread_mutex_lock(&s->lock);
    bool keeps = s->nrecs < s->o.max_events && s->bytes < s->o.max_bytes;
    pthread_mutex_unlock(&s->lock);
    return keeps;
}

size_t sim_store_add(struct sim_store *s, const struct sim_batch_in *b)
{
    /* Hash outside the lock: it is the only per-event work besides copying. */
    uint64_t stack_keys[64];
    uint64_t *keys = b->n <= 64 ? stack_keys : xrealloc(NULL, b->n * sizeof(*keys));
    for (size_t i = 0; i < b->n; i++)
        keys[i] = b->ev[i].id ? dedup_key(b->pixel, &b->ev[i]) : 0;
    size_t dups = 0;
    pthread_mutex_lock(&s->lock);
    uint32_t px = pixel_index(s, b->pixel);
    bool store = s->nrecs < s->o.max_events;
    uint32_t bi = (uint32_t)s->nbatches;
    if (store) {
        if (s->nbatches == s->capbatches) {
            s->capbatches = s->capbatches ? s->capbatches * 2 : 256;
            s->batches = xrealloc(s->batches, s->capbatches * sizeof(*s->batches));
        }
        s->batches[s->nbatches++] = (struct batch){
            b->request, b->t_ms, px, keep_str(s, b->test_code), keep_str(s, b->partner)};
    }
    for (size_t i = 0; i < b->n; i++) {
        const struct sim_event_in *e = &b->ev[i];
        bool dup = keys[i] && set_seen(s, keys[i]);
        dups += dup;
        if (!store || s->nrecs >= s->o.max_events) {
            s->notstored++;
            continue;
        }
        if (s->nrecs == s->caprecs) {
            s->caprecs = s->caprecs ? s->caprecs * 2 : 1024;
            s->recs = xrealloc(s->recs, s->caprecs * sizeof(*s->recs));
        }
        struct rec *r = &s->recs[s->nrecs++];
        r->batch = bi;
        r->dup = dup;
        r->name = keep(s, e->name, e->name_len);
        r->id = e->id ? keep(s, e->id, e->id_len) : NULL;
        r->payload_len = e->payload_len;
        if (e->payload && s->bytes + e->payload_len < s->o.max_bytes) {
            r->payload = keep(s, e->payload, e->payload_len);
        } else {
            r->payload = NULL;
            s->payloaddropped++;
        }
    }
    s->events += b->n;
    s->okbatches++;
    s->duplicates += dups;
    s->pixels[px].events += b->n;
    s->pixels[px].duplicates += dups;
    pthread_mutex_unlock(&s->lock);
    if (keys != stack_keys)
        free(keys);
    return dups;
}

void sim_store_note(struct sim_store *s, const struct sim_log_in *l)
{
    pthread_mutex_lock(&s->lock);
    s->requests++;
    int32_t px = l->pixel ? (int32_t)pixel_index(s, l->pixel) : -1;
    if (px >= 0) {
        s->pixels[px].requests++;
        if (l->status >= 400 || l->kind == SIM_KIND_HANG || l->kind == SIM_KIND_RESET)
            s->pixels[px].rejected++;
    }
    if (l->status >= 100 && l->status < 600)
        s->by_status[l->status]++;
    s->by_kind[l->kind & 7]++;
    if (l->kind == SIM_KIND_ERROR) {
        size_t i = 0;
        while (i < s->nrejects &&
               !(s->rejects[i].code == l->code && s->rejects[i].subcode == l->subcode))
            i++;
        if (i == s->nrejects) {
            s->rejects = xrealloc(s->rejects, (s->nrejects + 1) * sizeof(*s->rejects));
            s->rejects[s->nrejects++] = (struct reject){l->code, l->subcode, 0};
        }
        s->rejects[i].count++;
    }
    if (s->o.log_max) {
        if (s->logcap < s->o.log_max && s->logn == s->logcap) {
            size_t ncap = s->logcap ? s->logcap * 2 : 1024;
            if (ncap > s->o.log_max)
                ncap = s->o.log_max;
            s->log = xrealloc(s->log, ncap * sizeof(*s->log));
            s->logcap = ncap;
        }
        struct logent e = {l->t_ms, l->request, px,        (int16_t)l->status, (uint8_t)l->kind,
                           l->code, l->subcode, l->events, l->delay_ms};
        if (s->logn < s->logcap) {
            s->log[(s->loghead + s->logn) % s->logcap] = e;
            s->logn++;
        } else {
            s->log[s->loghead] = e;
            s->loghead = (s->loghead + 1) % s->logcap;
            s->logdropped++;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void json_pixel(struct capid_buf *b, const struct sim_store *s, int32_t px)
{
    if (px < 0)
        capid_buf_puts(b, "null");
    else
        capid_buf_json_str(b, s->pixels[px].id, strlen(s->pixels[px].id));
}

void sim_store_stats_json(struct sim_store *s, const struct sim_live *live, bool with_log,
                          struct capid_buf *b)
{
    pthread_mutex_lock(&s->lock);
    capid_buf_printf(b,
                     "{\"requests\":%llu,\"events\":%llu,\"batches\":%llu,\"duplicates\":%llu,"
                     "\"unique_events\":%llu,\"stored\":%zu,\"not_stored\":%llu,"
                     "\"payloads_dropped\":%llu,\"store_bytes\":%zu,",
                     (unsigned long long)s->requests, (unsigned long long)s->events,
                     (unsigned long long)s->okbatches, (unsigned long long)s->duplicates,
                     (unsigned long long)(s->events - s->duplicates), s->nrecs,
                     (unsigned long long)s->notstored, (unsigned long long)s->payloaddropped,
                     s->bytes);
    capid_buf_printf(b,
                     "\"in_flight\":%d,\"max_concurrent\":%d,\"hung\":%d,\"clock_offset\":%lld,"
                     "\"future_tolerance\":%lld,",
                     live->in_flight, live->max_concurrent, live->hung,
                     (long long)live->clock_offset, (long long)live->future_tolerance);
    capid_buf_puts(b, "\"responses\":{");
    bool first = true;
    for (int st = 100; st < 600; st++)
        if (s->by_status[st]) {
            capid_buf_printf(b, "%s\"%d\":%llu", first ? "" : ",", st,
                             (unsigned long long)s->by_status[st]);
            first = false;
        }
    capid_buf_puts(b, "},\"rejections\":{");
    /* by code, summing subcodes */
    first = true;
    for (size_t i = 0; i < s->nrejects; i++) {
        bool seen = false;
        for (size_t k = 0; k < i; k++)
            seen |= s->rejects[k].code == s->rejects[i].code;
        if (seen)
            continue;
        uint64_t n = 0;
        for (size_t k = i; k < s->nrejects; k++)
            if (s->rejects[k].code == s->rejects[i].code)
                n += s->rejects[k].count;
        capid_buf_printf(b, "%s\"%d\":%llu", first ? "" : ",", s->rejects[i].code,
                         (unsigned long long)n);
        first = false;
    }
    capid_buf_puts(b, "},\"rejections_by_subcode\":{");
    for (size_t i = 0; i < s->nrejects; i++)
        capid_buf_printf(b, "%s\"%d/%d\":%llu", i ? "," : "", s->rejects[i].code,
                         s->rejects[i].subcode, (unsigned long long)s->rejects[i].count);
    capid_buf_puts(b, "},\"faults\":{");
    static const enum sim_kind kinds[] = {SIM_KIND_HTML, SIM_KIND_HANG, SIM_KIND_RESET,
                                          SIM_KIND_WRONG_COUNT};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        capid_buf_printf(b, "%s\"%s\":%llu", i ? "," : "", sim_kind_name(kinds[i]),
                         (unsigned long long)s->by_kind[kinds[i]]);
    capid_buf_puts(b, "},\"pixels\":{");
    for (size_t i = 0; i < s->npixels; i++) {
        const struct pixel_stat *p = &s->pixels[i];
        capid_buf_puts(b, i ? "," : "");
        capid_buf_json_str(b, p->id, strlen(p->id));
        capid_buf_printf(b,
                         ":{\"requests\":%llu,\"events\":%llu,\"duplicates\":%llu,"
                         "\"rejected\":%llu}",
                         (unsigned long long)p->requests, (unsigned long long)p->events,
                         (unsigned long long)p->duplicates, (unsigned long long)p->rejected);
    }
    capid_buf_printf(b, "},\"request_log_dropped\":%llu", (unsigned long long)s->logdropped);
    if (with_log) {
        capid_buf_puts(b, ",\"request_log\":[");
        for (size_t i = 0; i < s->logn; i++) {
            const struct logent *e = &s->log[(s->loghead + i) % s->logcap];
            capid_buf_printf(b, "%s{\"request\":%llu,\"t_ms\":%lld,\"pixel\":", i ? "," : "",
                             (unsigned long long)e->request, (long long)e->t_ms);
            json_pixel(b, s, e->pixel);
            capid_buf_printf(b,
                             ",\"status\":%d,\"code\":%d,\"subcode\":%d,\"kind\":\"%s\","
                             "\"events\":%ld,\"delay_ms\":%d}",
                             e->status, e->code, e->subcode, sim_kind_name(e->kind), e->events,
                             e->delay_ms);
        }
        capid_buf_putc(b, ']');
    }
    capid_buf_putc(b, '}');
    pthread_mutex_unlock(&s->lock);
}

void sim_store_events_json(struct sim_store *s, const char *pixel, const char *event_id,
                           size_t since, size_t limit, struct capid_buf *b)
{
    pthread_mutex_lock(&s->lock);
    int32_t px = -1;
    for (size_t i = 0; pixel && i < s->npixels; i++)
        if (strcmp(s->pixels[i].id, pixel) == 0)
            px = (int32_t)i;
    capid_buf_printf(b, "{\"accepted\":%llu,\"stored\":%zu,\"not_stored\":%llu,\"events\":[",
                     (unsigned long long)s->events, s->nrecs, (unsigned long long)s->notstored);
    size_t out = 0;
    for (size_t i = since; i < s->nrecs && (pixel == NULL || px >= 0); i++) {
        const struct rec *r = &s->recs[i];
        const struct batch *bt = &s->batches[r->batch];
        if (pixel && bt->pixel != (uint32_t)px)
            continue;
        if (event_id && (!r->id || strcmp(r->id, event_id) != 0))
            continue;
        if (limit && out == limit)
            break;
        capid_buf_printf(b, "%s{\"seq\":%zu,\"pixel\":", out ? "," : "", i);
        json_pixel(b, s, (int32_t)bt->pixel);
        capid_buf_puts(b, ",\"event_name\":");
        capid_buf_json_str(b, r->name, strlen(r->name));
        capid_buf_puts(b, ",\"event_id\":");
        if (r->id)
            capid_buf_json_str(b, r->id, strlen(r->id));
        else
            capid_buf_puts(b, "null");
        capid_buf_printf(b, ",\"request\":%llu,\"t_ms\":%lld,\"duplicate\":%s",
                         (unsigned long long)bt->request, (long long)bt->t_ms,
                         r->dup ? "true" : "false");
        if (bt->test_code) {
            capid_buf_puts(b, ",\"test_event_code\":");
            capid_buf_json_str(b, bt->test_code, strlen(bt->test_code));
        }
        if (bt->partner) {
            capid_buf_puts(b, ",\"partner_agent\":");
            capid_buf_json_str(b, bt->partner, strlen(bt->partner));
        }
        capid_buf_puts(b, ",\"payload\":");
        /* The payload is the event's JSON text as cJSON accepted it. */
        if (r->payload)
            capid_buf_append(b, r->payload, r->payload_len);
        else
            capid_buf_puts(b, "null");
        capid_buf_putc(b, '}');
        out++;
    }
    capid_buf_puts(b, "]}");
    pthread_mutex_unlock(&s->lock);
}
