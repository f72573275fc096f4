/* Faults on demand, per pixel: scripted responses, a seeded failure rate, a
 * latency distribution, a rate limit and poison rules. Settings made for
 * pixel "*" apply to every pixel that has no setting of the same family of
 * its own (and share its state: script position, token bucket). Everything
 * is under one mutex; a decision takes microseconds. */
#include "sim.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { DIST_FIXED, DIST_UNIFORM, DIST_EXP };

struct rule {
    int id;
    int nseg;
    char **seg;
    cJSON *value;
    int subcode;
    char *title, *message;
    struct sim_spec *script; /* NULL: answer the default 400 every time */
    size_t nscript, pos;
    long fired;
    cJSON *json; /* as set, for GET /_sim/config */
};

struct pcfg {
    char *pixel;
    struct pcfg *next;
    /* script */
    bool has_script;
    struct sim_spec *script;
    size_t nscript, pos;
    cJSON *script_json;
    /* failure rate */
    bool has_failure;
    double rate;
    uint64_t frng;
    struct sim_spec *kinds;
    size_t nkinds;
    unsigned total_weight;
    cJSON *failure_json;
    /* latency */
    bool has_latency;
    int dist;
    double la, lb; /* fixed: la; uniform: [la, lb]; exponential: mean la, cap lb */
    uint64_t lrng;
    cJSON *latency_json;
    /* rate limit: a token bucket */
    bool has_rps;
    double rps, burst, tokens;
    int64_t last_ms;
    cJSON *rps_json;
    /* poison */
    bool has_poison;
    struct rule *rules;
    size_t nrules;
};

struct sim_faults {
    pthread_mutex_t lock;
    struct pcfg *list;
    int next_rule_id;
};

/* ---- response specs ---- */

void sim_spec_release(struct sim_spec *s)
{
    free(s->message);
    free(s->type);
    free(s->title);
    free(s->user_msg);
    free(s->app_usage);
    free(s->buc_usage);
    free(s->headers);
    memset(s, 0, sizeof(*s));
}

static char *xstrdup(const char *s)
{
    if (!s)
        return NULL;
    char *p = strdup(s);
    if (!p)
        abort();
    return p;
}

void sim_spec_copy(struct sim_spec *dst, const struct sim_spec *src)
{
    *dst = *src;
    dst->message = xstrdup(src->message);
    dst->type = xstrdup(src->type);
    dst->title = xstrdup(src->title);
    dst->user_msg = xstrdup(src->user_msg);
    dst->app_usage = xstrdup(src->app_usage);
    dst->buc_usage = xstrdup(src->buc_usage);
    if (src->headers) {
        dst->headers = malloc(src->headers_len);
        if (!dst->headers)
            abort();
        memcpy(dst->headers, src->headers, src->headers_len);
    }
}

static void spec_defaults(struct sim_spec *s)
{
    memset(s, 0, sizeof(*s));
    s->kind = SIM_KIND_OK;
    s->transient = -1;
    s->retry_after = -1;
    s->events_received = -1;
    s->accept = -1;
    s->weight = 1;
}

static int kind_from_name(const char *n, enum sim_kind *k)
{
    static const struct {
        const char *name;
        enum sim_kind kind;
    } names[] = {
        {"ok", SIM_KIND_OK},     {"error", SIM_KIND_ERROR}, {"html", SIM_KIND_HTML},
        {"hang", SIM_KIND_HANG}, {"reset", SIM_KIND_RESET}, {"wrong_count", SIM_KIND_WRONG_COUNT},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(n, names[i].name) == 0) {
            *k = names[i].kind;
            return 0;
        }
    return -1;
}

/* A usage header: true = the simulator's default, a string as is, an object
 * as its JSON. */
static const char *usage_value(const cJSON *v, char **out)
{
    if (cJSON_IsTrue(v))
        *out = xstrdup("");
    else if (cJSON_IsString(v))
        *out = xstrdup(v->valuestring);
    else if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        *out = cJSON_PrintUnformatted(v);
        if (!*out)
            abort();
    } else if (!cJSON_IsFalse(v) && !cJSON_IsNull(v))
        return "usage headers take true, a string or a JSON object";
    return NULL;
}

static bool int_in(const cJSON *v, double lo, double hi)
{
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi &&
           v->valuedouble == floor(v->valuedouble);
}

/* Reads the members of an object spec; returns NULL or an error. */
static const char *spec_object(const cJSON *j, struct sim_spec *s, bool *has_kind)
{
    for (const cJSON *m = j->child; m; m = m->next) {
        const char *k = m->string;
        if (strcmp(k, "kind") == 0) {
            if (!cJSON_IsString(m) || kind_from_name(m->valuestring, &s->kind))
                return "kind must be one of ok, error, html, hang, reset, wrong_count";
            *has_kind = true;
        } else if (strcmp(k, "status") == 0) {
            if (!int_in(m, 100, 599))
                return "status must be an HTTP status code";
            s->status = m->valueint;
        } else if (strcmp(k, "code") == 0) {
            if (!int_in(m, 1, 1e9))
                return "code must be a positive integer";
            s->code = m->valueint;
        } else if (strcmp(k, "subcode") == 0 || strcmp(k, "error_subcode") == 0) {
            if (!int_in(m, 0, 2e9))
                return "subcode must be a non-negative integer";
            s->subcode = m->valueint;
        } else if (strcmp(k, "is_transient") == 0) {
            if (!cJSON_IsBool(m))
                return "is_transient must be true or false";
            s->transient = cJSON_IsTrue(m);
        } else if (strcmp(k, "retry_after") == 0) {
            if (!int_in(m, 0, 86400))
                return "retry_after must be seconds (0..86400)";
            s->retry_after = m->valueint;
        } else if (strcmp(k, "events_received") == 0) {
            if (!int_in(m, -1e9, 1e9))
                return "events_received must be an integer";
            s->events_received = (long)m->valuedouble;
        } else if (strcmp(k, "latency_ms") == 0) {
            if (!int_in(m, 0, 600000))
                return "latency_ms must be 0..600000";
            s->latency_ms = m->valueint;
        } else if (strcmp(k, "accept") == 0) {
            if (!cJSON_IsBool(m))
                return "accept must be true or false";
            s->accept = cJSON_IsTrue(m);
        } else if (strcmp(k, "weight") == 0) {
            if (!int_in(m, 1, 1e6))
                return "weight must be 1..1000000";
            s->weight = (unsigned)m->valueint;
        } else if (strcmp(k, "message") == 0 || strcmp(k, "type") == 0 || strcmp(k, "title") == 0 ||
                   strcmp(k, "error_user_title") == 0 || strcmp(k, "user_msg") == 0 ||
                   strcmp(k, "error_user_msg") == 0) {
            if (!cJSON_IsString(m))
                return "message, type, title and user_msg must be strings";
            char **dst = &s->user_msg;
            if (strcmp(k, "message") == 0)
                dst = &s->message;
            else if (strcmp(k, "type") == 0)
                dst = &s->type;
            else if (strstr(k, "title"))
                dst = &s->title;
            free(*dst);
            *dst = xstrdup(m->valuestring);
        } else if (strcmp(k, "app_usage") == 0) {
            const char *err = usage_value(m, &s->app_usage);
            if (err)
                return err;
        } else if (strcmp(k, "buc_usage") == 0) {
            const char *err = usage_value(m, &s->buc_usage);
            if (err)
                return err;
        } else if (strcmp(k, "headers") == 0) {
            if (!cJSON_IsObject(m))
                return "headers must be an object of strings";
            struct capid_buf b;
            capid_buf_init(&b, 1u << 16);
            for (const cJSON *h = m->child; h; h = h->next) {
                if (!cJSON_IsString(h) || strpbrk(h->string, "\r\n:") ||
                    strpbrk(h->valuestring, "\r\n")) {
                    capid_buf_release(&b);
                    return "headers must be an object of single-line strings";
                }
                if (capid_buf_append(&b, h->string, strlen(h->string) + 1) ||
                    capid_buf_append(&b, h->valuestring, strlen(h->valuestring) + 1)) {
                    capid_buf_release(&b);
                    return "headers too long";
                }
            }
            s->headers_len = b.len;
            s->headers = capid_buf_detach(&b, NULL);
        } else {
            return "unknown member in a response spec (see docs/SIMULATOR.md)";
        }
    }
    return NULL;
}

const char *sim_spec_parse(const cJSON *j, struct sim_spec *s)
{
    spec_defaults(s);
    if (cJSON_IsNumber(j)) {
        if (!int_in(j, 100, 599))
            return "a response given as a number must be an HTTP status";
        s->status = j->valueint;
        if (s->status < 200 || s->status > 299) {
            s->kind = SIM_KIND_ERROR;
            s->code = sim_code_for_status(s->status);
        }
        return NULL;
    }
    if (cJSON_IsString(j)) {
        if (kind_from_name(j->valuestring, &s->kind))
            return "a response given as a string must be ok, error, html, hang, reset or "
                   "wrong_count";
        if (s->kind == SIM_KIND_ERROR)
            s->code = 1;
        return NULL;
    }
    if (!cJSON_IsObject(j))
        return "a response must be an HTTP status, a kind name or an object";
    bool has_kind = false;
    const char *err = spec_object(j, s, &has_kind);
    if (err) {
        sim_spec_release(s);
        return err;
    }
    if (!has_kind) {
        if (s->code)
            s->kind = SIM_KIND_ERROR;
        else if (s->status && (s->status < 200 || s->status > 299))
            s->kind = SIM_KIND_ERROR;
    }
    if (s->kind == SIM_KIND_ERROR && !s->code)
        s->code = s->status ? sim_code_for_status(s->status) : 1;
    return NULL;
}

bool sim_spec_accepts(const struct sim_spec *s)
{
    if (s->accept >= 0)
        return s->accept;
    /* A reset cuts an answer the server had already decided on; a wrong count
     * answers a processed batch. A hang never got that far. */
    return s->kind == SIM_KIND_OK || s->kind == SIM_KIND_RESET || s->kind == SIM_KIND_WRONG_COUNT;
}

/* The headers a spec asks for: Retry-After, the usage headers (defaults
 * derived from retry_after) and any extra ones. */
static void add_headers(const struct sim_spec *s, const char *pixel, struct sim_reply *r)
{
    char tmp[512];
    if (s->retry_after >= 0) {
        snprintf(tmp, sizeof(tmp), "%d", s->retry_after);
        sim_reply_header(r, "Retry-After", tmp);
    }
    if (s->app_usage) {
        /* Graph's X-App-Usage: percentages of the app's limits. */
        sim_reply_header(r, "X-App-Usage",
                         *s->app_usage ? s->app_usage
                                       : "{\"call_count\":100,\"total_cputime\":100,"
                                         "\"total_time\":100}");
    }
    if (s->buc_usage) {
        if (*s->buc_usage)
            sim_reply_header(r, "X-Business-Use-Case-Usage", s->buc_usage);
        else {
            /* estimated_time_to_regain_access is in minutes. */
            int minutes = s->retry_after > 0 ? (s->retry_after + 59) / 60 : 1;
            struct capid_buf b;
            capid_buf_init(&b, 0);
            capid_buf_putc(&b, '{');
            capid_buf_json_str(&b, pixel ? pixel : "0", strlen(pixel ? pixel : "0"));
            capid_buf_printf(&b,
                             ":[{\"type\":\"ads_management\",\"call_count\":100,"
                             "\"total_cputime\":100,\"total_time\":100,"
                             "\"estimated_time_to_regain_access\":%d}]}",
                             minutes);
            sim_reply_header(r, "X-Business-Use-Case-Usage", b.data);
            capid_buf_release(&b);
        }
    }
    for (size_t off = 0; s->headers && off < s->headers_len;) {
        const char *name = s->headers + off;
        const char *value = name + strlen(name) + 1;
        sim_reply_header(r, name, value);
        off = (size_t)(value + strlen(value) + 1 - s->headers);
    }
}

void sim_spec_reply(const struct sim_spec *s, const char *pixel, long nevents, int index,
                    struct sim_reply *r)
{
    if (s->kind == SIM_KIND_HTML) {
        r->kind = SIM_KIND_HTML;
        r->status = s->status ? s->status : 502;
        r->ctype = "text/html; charset=utf-8";
        capid_buf_reset(&r->body);
        capid_buf_printf(&r->body,
                         "<!DOCTYPE html>\n<html><head><title>Error</title></head><body>"
                         "<h1>Sorry, something went wrong.</h1><p>We're working on it and "
                         "we'll get it fixed as soon as we can.</p><p>HTTP %d</p></body></html>\n",
                         r->status);
    } else if (s->kind == SIM_KIND_ERROR) {
        char msg[512];
        const char *user_msg = s->user_msg;
        if (index >= 0) {
            snprintf(msg, sizeof(msg), "%s (event index %d)",
                     user_msg ? user_msg : "This event is invalid", index);
            user_msg = msg;
        }
        sim_reply_error(r, s->status, s->code, s->subcode, s->transient, s->type, s->message,
                        s->title, user_msg);
    } else {
        /* OK, wrong count, reset and hang answer like a success. */
        long n = nevents < 0 ? 0 : nevents;
        if (s->kind == SIM_KIND_WRONG_COUNT)
            n = s->events_received >= 0 ? s->events_received : (n > 0 ? n - 1 : 1);
        sim_reply_success(r, n);
        if (s->status)
            r->status = s->status;
        r->kind = s->kind;
    }
    add_headers(s, pixel, r);
}

/* ---- random numbers: xorshift64*, seeded per setting ---- */

static double rnd01(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return (double)((*x * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

/* The generator state for a request's "seed" (default 1), never zero. */
static uint64_t seed_of(const cJSON *req)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(req, "seed");
    uint64_t v = cJSON_IsNumber(s) ? (uint64_t)(int64_t)s->valuedouble : 1;
    v = v * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; /* never 0 */
    return v ? v : 1;
}

/* ---- per-pixel settings ---- */

struct sim_faults *sim_faults_new(void)
{
    struct sim_faults *f = calloc(1, sizeof(*f));
    if (!f)
        abort();
    pthread_mutex_init(&f->lock, NULL);
    f->next_rule_id = 1;
    return f;
}

static void specs_free(struct sim_spec *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sim_spec_release(&v[i]);
    free(v);
}

static void rules_free(struct rule *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < r[i].nseg; k++)
            free(r[i].seg[k]);
        free(r[i].seg);
        cJSON_Delete(r[i].value);
        cJSON_Delete(r[i].json);
        free(r[i].title);
        free(r[i].message);
        specs_free(r[i].script, r[i].nscript);
    }
    free(r);
}

static void pcfg_free(struct pcfg *c)
{
    free(c->pixel);
    specs_free(c->script, c->nscript);
    cJSON_Delete(c->script_json);
    specs_free(c->kinds, c->nkinds);
    cJSON_Delete(c->failure_json);
    cJSON_Delete(c->latency_json);
    cJSON_Delete(c->rps_json);
    rules_free(c->rules, c->nrules);
    free(c);
}

void sim_faults_clear(struct sim_faults *f)
{
    pthread_mutex_lock(&f->lock);
    while (f->list) {
        struct pcfg *c = f->list;
        f->list = c->next;
        pcfg_free(c);
    }
    pthread_mutex_unlock(&f->lock);
}

void sim_faults_free(struct sim_faults *f)
{
    if (!f)
        return;
    sim_faults_clear(f);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* The settings of exactly this pixel, created on demand. Under the lock. */
static struct pcfg *pcfg_get(struct sim_faults *f, const char *pixel)
{
    for (struct pcfg *c = f->list; c; c = c->next)
        if (strcmp(c->pixel, pixel) == 0)
            return c;
    struct pcfg *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->pixel = xstrdup(pixel);
    c->next = f->list;
    f->list = c;
    return c;
}

/* Which settings apply to `pixel` for the family whose flag sits at `off`:
 * its own, else those of "*", else none. Under the lock. */
static struct pcfg *family(struct sim_faults *f, const char *pixel, size_t off)
{
    struct pcfg *star = NULL;
    for (struct pcfg *c = f->list; c; c = c->next) {
        bool has = *(const bool *)((const char *)c + off);
        if (!has)
            continue;
        if (pixel && strcmp(c->pixel, pixel) == 0)
            return c;
        if (strcmp(c->pixel, "*") == 0)
            star = c;
    }
    return star;
}

#define FAMILY(f, pixel, flag) family((f), (pixel), offsetof(struct pcfg, flag))

/* The "pixel" member of a control request; "*" when absent. */
static const char *req_pixel(const cJSON *req, const char **err)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(req, "pixel");
    if (!p)
        return "*";
    if (cJSON_IsString(p) && *p->valuestring && strlen(p->valuestring) < 128)
        return p->valuestring;
    if (cJSON_IsNumber(p)) {
        *err = "pixel must be a string (pixel ids overflow JSON numbers)";
        return NULL;
    }
    *err = "pixel must be a non-empty string";
    return NULL;
}

/* Parses an array of specs; NULL or an error. */
static const char *specs_parse(const cJSON *arr, struct sim_spec **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!cJSON_IsArray(arr))
        return "responses must be an array";
    int count = cJSON_GetArraySize(arr);
    if (count > SIM_MAX_SCRIPT)
        return "too many responses";
    struct sim_spec *v = calloc((size_t)count + 1, sizeof(*v));
    if (!v)
        abort();
    size_t i = 0;
    for (const cJSON *x = arr->child; x; x = x->next, i++) {
        const char *err = sim_spec_parse(x, &v[i]);
        if (err) {
            specs_free(v, i);
            return err;
        }
    }
    *out = v;
    *n = i;
    return NULL;
}

const char *sim_faults_script(struct sim_faults *f, const cJSON *req)
{
    const char *err = NULL;
    const char *pixel = req_pixel(req, &err);
    if (!pixel)
        return err;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(req, "responses");
    struct sim_spec *v;
    size_t n;
    err = specs_parse(arr, &v, &n);
    if (err)
        return err;
    bool append = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "append"));
    pthread_mutex_lock(&f->lock);
    struct pcfg *c = pcfg_get(f, pixel);
    if (!append || !c->has_script) {
        specs_free(c->script, c->nscript);
        cJSON_Delete(c->script_json);
        c->script = NULL;
        c->nscript = c->pos = 0;
        c->script_json = cJSON_CreateArray();
    } else {
        /* Drop what was used, keep what is left, then the new ones. */
        for (size_t i = 0; i < c->pos; i++)
            sim_spec_release(&c->script[i]);
        memmove(c->script, c->script + c->pos, (c->nscript - c->pos) * sizeof(*c->script));
        c->nscript -= c->pos;
        c->pos = 0;
    }
    struct sim_spec *all = realloc(c->script, (c->nscript + n + 1) * sizeof(*all));
    if (!all)
        abort();
    memcpy(all + c->nscript, v, n * sizeof(*v));
    free(v); /* the strings moved into all */
    c->script = all;
    c->nscript += n;
    for (const cJSON *x = arr->child; x; x = x->next)
        cJSON_AddItemToArray(c->script_json, cJSON_Duplicate(x, 1));
    c->has_script = c->nscript > 0;
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

const char *sim_faults_failure(struct sim_faults *f, const cJSON *req)
{
    const char *err = NULL;
    const char *pixel = req_pixel(req, &err);
    if (!pixel)
        return err;
    const cJSON *rate = cJSON_GetObjectItemCaseSensitive(req, "rate");
    if (!cJSON_IsNumber(rate) || rate->valuedouble < 0 || rate->valuedouble > 1)
        return "rate must be a number from 0 to 1";
    const cJSON *kinds = cJSON_GetObjectItemCaseSensitive(req, "kinds");
    struct sim_spec *v = NULL;
    size_t n = 0;
    if (kinds) {
        err = specs_parse(kinds, &v, &n);
        if (err)
            return err;
    }
    if (!n) {
        free(v);
        v = calloc(1, sizeof(*v));
        if (!v)
            abort();
        cJSON *d = cJSON_CreateNumber(500);
        sim_spec_parse(d, v);
        cJSON_Delete(d);
        n = 1;
    }
    unsigned total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].weight;
    pthread_mutex_lock(&f->lock);
    struct pcfg *c = pcfg_get(f, pixel);
    specs_free(c->kinds, c->nkinds);
    cJSON_Delete(c->failure_json);
    c->kinds = v;
    c->nkinds = n;
    c->total_weight = total;
    c->rate = rate->valuedouble;
    c->frng = seed_of(req);
    c->failure_json = cJSON_Duplicate(req, 1);
    c->has_failure = c->rate > 0;
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

static bool ms_field(const cJSON *req, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req, key);
    if (!v)
        return false;
    *out = cJSON_IsNumber(v) ? v->valuedouble : -1;
    return true;
}

const char *sim_faults_latency(struct sim_faults *f, const cJSON *req)
{
    const char *err = NULL;
    const char *pixel = req_pixel(req, &err);
    if (!pixel)
        return err;
    double ms = 0, lo = 0, hi = 0, mean = 0;
    bool has_ms = ms_field(req, "ms", &ms);
    bool has_lo = ms_field(req, "min_ms", &lo);
    bool has_hi = ms_field(req, "max_ms", &hi);
    bool has_mean = ms_field(req, "mean_ms", &mean);
    int dist;
    if (has_mean) {
        dist = DIST_EXP;
        if (mean < 0 || mean > 600000 || (has_hi && (hi < 0 || hi > 600000)))
            return "mean_ms and max_ms must be 0..600000";
        lo = mean;
        hi = has_hi ? hi : 600000;
    } else if (has_lo || has_hi) {
        dist = DIST_UNIFORM;
        if (!has_lo || !has_hi || lo < 0 || hi < lo || hi > 600000)
            return "min_ms and max_ms must satisfy 0 <= min_ms <= max_ms <= 600000";
    } else if (has_ms) {
        dist = DIST_FIXED;
        if (ms < 0 || ms > 600000)
            return "ms must be 0..600000";
        lo = ms;
    } else {
        return "latency needs ms, min_ms and max_ms, or mean_ms";
    }
    pthread_mutex_lock(&f->lock);
    struct pcfg *c = pcfg_get(f, pixel);
    c->dist = dist;
    c->la = lo;
    c->lb = hi;
    c->lrng = seed_of(req);
    cJSON_Delete(c->latency_json);
    c->latency_json = cJSON_Duplicate(req, 1);
    c->has_latency = !(dist == DIST_FIXED && lo == 0);
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

const char *sim_faults_rate_limit(struct sim_faults *f, const cJSON *req)
{
    const char *err = NULL;
    const char *pixel = req_pixel(req, &err);
    if (!pixel)
        return err;
    const cJSON *rps = cJSON_GetObjectItemCaseSensitive(req, "rps");
    if (!cJSON_IsNumber(rps) || rps->valuedouble < 0 || rps->valuedouble > 1e6)
        return "rps must be a number from 0 (off) to 1000000";
    const cJSON *burst = cJSON_GetObjectItemCaseSensitive(req, "burst");
    if (burst && (!cJSON_IsNumber(burst) || burst->valuedouble < 1))
        return "burst must be a number >= 1";
    pthread_mutex_lock(&f->lock);
    struct pcfg *c = pcfg_get(f, pixel);
    c->rps = rps->valuedouble;
    c->burst = burst ? burst->valuedouble : (c->rps > 1 ? c->rps : 1);
    c->tokens = c->burst;
    c->last_ms = -1;
    cJSON_Delete(c->rps_json);
    c->rps_json = cJSON_Duplicate(req, 1);
    c->has_rps = c->rps > 0;
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

/* Splits a dotted path into malloc'd segments. */
static int split_path(const char *path, char ***out)
{
    int n = 1;
    for (const char *p = path; *p; p++)
        n += *p == '.';
    char **seg = calloc((size_t)n, sizeof(*seg));
    if (!seg)
        abort();
    const char *p = path;
    for (int i = 0; i < n; i++) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        seg[i] = strndup(p, len);
        if (!seg[i])
            abort();
        p = dot ? dot + 1 : p + len;
    }
    *out = seg;
    return n;
}

const char *sim_faults_poison(struct sim_faults *f, const cJSON *req, int *id)
{
    const char *err = NULL;
    const char *pixel = req_pixel(req, &err);
    if (!pixel)
        return err;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "clear"))) {
        pthread_mutex_lock(&f->lock);
        struct pcfg *c = pcfg_get(f, pixel);
        rules_free(c->rules, c->nrules);
        c->rules = NULL;
        c->nrules = 0;
        c->has_poison = false;
        pthread_mutex_unlock(&f->lock);
        *id = 0;
        return NULL;
    }
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(req, "path");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(req, "value");
    if (!cJSON_IsString(path) || !*path->valuestring || strlen(path->valuestring) > 256)
        return "path must be a dotted field path such as custom_data.order_id";
    if (!value)
        return "value is required (any JSON value, compared exactly)";
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(req, "subcode");
    if (sub && !int_in(sub, 0, 2e9))
        return "subcode must be a non-negative integer";
    const cJSON *title = cJSON_GetObjectItemCaseSensitive(req, "title");
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(req, "message");
    if ((title && !cJSON_IsString(title)) || (message && !cJSON_IsString(message)))
        return "title and message must be strings";
    struct rule r = {0};
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(req, "responses");
    if (resp) {
        err = specs_parse(resp, &r.script, &r.nscript);
        if (err)
            return err;
        if (!r.nscript) {
            free(r.script);
            return "responses must not be empty (leave it out for a permanent rule)";
        }
    }
    r.nseg = split_path(path->valuestring, &r.seg);
    r.value = cJSON_Duplicate(value, 1);
    r.subcode = sub ? sub->valueint : 0;
    r.title = title ? xstrdup(title->valuestring) : NULL;
    r.message = message ? xstrdup(message->valuestring) : NULL;
    r.json = cJSON_Duplicate(req, 1);
    pthread_mutex_lock(&f->lock);
    struct pcfg *c = pcfg_get(f, pixel);
    struct rule *v = realloc(c->rules, (c->nrules + 1) * sizeof(*v));
    if (!v)
        abort();
    r.id = f->next_rule_id++;
    v[c->nrules++] = r;
    c->rules = v;
    c->has_poison = true;
    *id = r.id;
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

static void json_item(struct capid_buf *b, const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    capid_buf_puts(b, s ? s : "null");
    cJSON_free(s);
}

void sim_faults_config_json(struct sim_faults *f, struct capid_buf *b)
{
    pthread_mutex_lock(&f->lock);
    capid_buf_putc(b, '{');
    for (struct pcfg *c = f->list; c; c = c->next) {
        capid_buf_json_str(b, c->pixel, strlen(c->pixel));
        capid_buf_puts(b, ":{");
        bool first = true;
        if (c->has_script) {
            capid_buf_printf(b, "\"script\":{\"left\":%zu,\"used\":%zu,\"responses\":",
                             c->nscript - c->pos, c->pos);
            json_item(b, c->script_json);
            capid_buf_putc(b, '}');
            first = false;
        }
        if (c->has_failure) {
            capid_buf_puts(b, first ? "\"failure\":" : ",\"failure\":");
            json_item(b, c->failure_json);
            first = false;
        }
        if (c->has_latency) {
            capid_buf_puts(b, first ? "\"latency\":" : ",\"latency\":");
            json_item(b, c->latency_json);
            first = false;
        }
        if (c->has_rps) {
            capid_buf_puts(b, first ? "\"rate_limit\":" : ",\"rate_limit\":");
            json_item(b, c->rps_json);
            first = false;
        }
        if (c->has_poison) {
            capid_buf_puts(b, first ? "\"poison\":[" : ",\"poison\":[");
            for (size_t i = 0; i < c->nrules; i++) {
                struct rule *r = &c->rules[i];
                capid_buf_printf(b, "%s{\"id\":%d,\"fired\":%ld,", i ? "," : "", r->id, r->fired);
                if (r->script)
                    capid_buf_printf(b, "\"left\":%zu,", r->nscript - r->pos);
                capid_buf_puts(b, "\"rule\":");
                json_item(b, r->json);
                capid_buf_putc(b, '}');
            }
            capid_buf_putc(b, ']');
        }
        capid_buf_puts(b, c->next ? "}," : "}");
    }
    capid_buf_putc(b, '}');
    pthread_mutex_unlock(&f->lock);
}

/* ---- decisions ---- */

static char *arena_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = sim_arena_alloc(n);
    memcpy(p, s, n);
    return p;
}

/* One latency draw in ms from the pixel's distribution. Under the lock. */
static int sample_latency(struct pcfg *c)
{
    double ms;
    if (c->dist == DIST_FIXED)
        ms = c->la;
    else if (c->dist == DIST_UNIFORM)
        ms = c->la + (c->lb - c->la) * rnd01(&c->lrng);
    else {
        ms = -c->la * log(1.0 - rnd01(&c->lrng));
        if (ms > c->lb)
            ms = c->lb;
    }
    return (int)(ms + 0.5);
}

void sim_faults_decide(struct sim_faults *f, const char *pixel, int64_t now_ms,
                       struct sim_decision *d)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_lock(&f->lock);
    struct pcfg *c = FAMILY(f, pixel, has_rps);
    if (c) {
        if (c->last_ms >= 0)
            c->tokens += (double)(now_ms - c->last_ms) * c->rps / 1000.0;
        if (c->tokens > c->burst)
            c->tokens = c->burst;
        c->last_ms = now_ms;
        if (c->tokens >= 1.0) {
            c->tokens -= 1.0;
        } else {
            /* Over the limit: Graph's user request limit, as HTTP 429. */
            spec_defaults(&d->spec);
            d->spec.kind = SIM_KIND_ERROR;
            d->spec.status = 429;
            d->spec.code = 17;
            d->spec.transient = 1;
            d->spec.retry_after = (int)ceil((1.0 - c->tokens) / c->rps);
            if (d->spec.retry_after < 1)
                d->spec.retry_after = 1;
            d->has_spec = true;
        }
    }
    if (!d->has_spec && (c = FAMILY(f, pixel, has_script)) && c->pos < c->nscript) {
        sim_spec_copy(&d->spec, &c->script[c->pos++]);
        d->has_spec = true;
    }
    if (!d->has_spec && (c = FAMILY(f, pixel, has_failure)) && rnd01(&c->frng) < c->rate) {
        double w = rnd01(&c->frng) * c->total_weight;
        size_t i = 0;
        for (; i + 1 < c->nkinds && w >= c->kinds[i].weight; i++)
            w -= c->kinds[i].weight;
        sim_spec_copy(&d->spec, &c->kinds[i]);
        d->has_spec = true;
    }
    if ((c = FAMILY(f, pixel, has_latency)))
        d->latency_ms = sample_latency(c);
    if ((c = FAMILY(f, pixel, has_poison)) && c->nrules) {
        d->poison = sim_arena_alloc(c->nrules * sizeof(*d->poison));
        for (size_t i = 0; i < c->nrules; i++) {
            struct rule *r = &c->rules[i];
            struct sim_poison_snap *p = &d->poison[d->npoison++];
            p->id = r->id;
            p->nseg = r->nseg;
            p->seg = sim_arena_alloc((size_t)r->nseg * sizeof(*p->seg));
            for (int k = 0; k < r->nseg; k++)
                p->seg[k] = arena_strdup(r->seg[k]);
            p->value = cJSON_Duplicate(r->value, 1); /* arena: the caller is inside begin/end */
            p->subcode = r->subcode;
            p->title = arena_strdup(r->title);
            p->message = arena_strdup(r->message);
        }
    }
    pthread_mutex_unlock(&f->lock);
}

void sim_decision_release(struct sim_decision *d)
{
    if (d->has_spec)
        sim_spec_release(&d->spec);
    d->has_spec = false;
}

bool sim_poison_matches(const struct sim_poison_snap *r, const cJSON *ev)
{
    const cJSON *cur = ev;
    for (int k = 0; k < r->nseg && cur; k++) {
        if (cJSON_IsArray(cur)) {
            char *end;
            long i = strtol(r->seg[k], &end, 10);
            cur = (*end || i < 0 || i > 1000000) ? NULL : cJSON_GetArrayItem(cur, (int)i);
        } else if (cJSON_IsObject(cur)) {
            cur = cJSON_GetObjectItemCaseSensitive(cur, r->seg[k]);
        } else {
            cur = NULL;
        }
    }
    return cur && cJSON_Compare(cur, r->value, 1);
}

bool sim_faults_poison_fire(struct sim_faults *f, const char *pixel, int id, struct sim_spec *spec,
                            bool *scripted)
{
    bool fire = false;
    *scripted = false;
    pthread_mutex_lock(&f->lock);
    struct pcfg *c = FAMILY(f, pixel, has_poison);
    for (size_t i = 0; c && i < c->nrules; i++) {
        struct rule *r = &c->rules[i];
        if (r->id != id)
            continue;
        if (r->script) {
            if (r->pos < r->nscript) {
                sim_spec_copy(spec, &r->script[r->pos++]);
                *scripted = true;
                fire = true;
            }
        } else {
            fire = true;
        }
        if (fire)
            r->fired++;
        break;
    }
    pthread_mutex_unlock(&f->lock);
    return fire;
}
