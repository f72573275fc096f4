#include "event/event.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event/event_int.h"
#include "event/json.h"
#include "util/sha256.h"
#include "util/utf8.h"

/* cJSON allocator. Measured on the bench corpus: malloc/free and cJSON_Delete
 * were ~20% of `capid map`. Events are parsed (json.c) into a per-event arena
 * block (event_int.h) taken from a small per-thread free list. The hooks make
 * cJSON_Delete's frees of pointers inside the arena that is current on this
 * thread no-ops, and serve cJSON allocations from it (malloc when it is full
 * or none is current). Releasing an event that never overflowed skips
 * cJSON_Delete. Trees built outside capid_event_parse use plain malloc/free
 * through the same hooks (no arena is current then). */
#define ARENA_BLOCK CAPID_ARENA_BLOCK

/* cJSON's type predicates, inline: each was a call into libcjson, several
 * per member read. Same results (NULL is of no type). */
static inline bool j_type(const cJSON *v, int type)
{
    return v && (v->type & 0xff) == type;
}

static inline bool j_bool(const cJSON *v)
{
    return v && (v->type & (cJSON_True | cJSON_False)) != 0;
}

static __thread struct capid_arena *tls_cur;
static __thread struct capid_arena *tls_free;
static __thread int tls_nfree;
static __thread bool tls_free_registered;
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;
/* Frees a thread's free list when it exits (worker threads come and go). */
static pthread_key_t free_list_key;
static bool free_list_key_ok;

static void free_list_release(void *unused)
{
    (void)unused;
    while (tls_free) {
        struct capid_arena *a = tls_free;
        tls_free = a->next;
        free(a);
    }
    tls_nfree = 0;
    tls_free_registered = false;
}

static void *hook_malloc(size_t n)
{
    struct capid_arena *a = tls_cur;
    if (a) {
        size_t need = (n + 15) & ~(size_t)15;
        if (need <= ARENA_BLOCK - a->used) {
            void *p = a->mem + a->used;
            a->used += need;
            return p;
        }
        a->overflowed = true;
    }
    return malloc(n);
}

static void hook_free(void *p)
{
    struct capid_arena *a = tls_cur;
    if (a && (char *)p >= a->mem && (char *)p < a->mem + ARENA_BLOCK)
        return;
    free(p);
}

static void install_hooks(void)
{
    cJSON_Hooks h = {hook_malloc, hook_free};
    cJSON_InitHooks(&h);
    free_list_key_ok = pthread_key_create(&free_list_key, free_list_release) == 0;
}

static struct capid_arena *arena_get(void)
{
    struct capid_arena *a = tls_free;
    if (a) {
        tls_free = a->next;
        tls_nfree--;
    } else if (!(a = malloc(sizeof(*a)))) {
        abort(); /* STYLE: out of memory with caps in place aborts */
    }
    a->next = NULL;
    a->used = 0;
    a->overflowed = false;
    return a;
}

static void arena_put(struct capid_arena *a)
{
    if (tls_nfree >= 4) {
        free(a);
        return;
    }
    a->next = tls_free;
    tls_free = a;
    tls_nfree++;
    if (!tls_free_registered && free_list_key_ok) /* any non-NULL value */
        tls_free_registered = pthread_setspecific(free_list_key, &free_list_key) == 0;
}

/* Deletes an event tree with its arena current, then recycles the arena. */
static void delete_tree(cJSON *root, struct capid_arena *a)
{
    if (!a) {
        cJSON_Delete(root);
        return;
    }
    if (a->overflowed) {
        struct capid_arena *saved = tls_cur;
        tls_cur = a;
        cJSON_Delete(root);
        tls_cur = saved;
    }
    arena_put(a);
}

enum capid_event_status capid_json_prescan(const char *json, size_t len,
                                           const struct capid_limits *lim, struct capid_perr *err)
{
    const unsigned char *s = (const unsigned char *)json;
    int max_depth = lim && lim->max_depth > 0 ? lim->max_depth : 32;
    int depth = 0;
    size_t i = 0;

    if (lim && lim->max_event_bytes && len > lim->max_event_bytes) {
        capid_perr_set(err, 0, "event is %zu bytes, over the limit of %zu", len,
                       lim->max_event_bytes);
        return CAPID_EV_TOO_LARGE;
    }
    while (i < len) {
        unsigned char c = s[i];
        if (c == '"') {
            for (i++;;) {
                if (i >= len)
                    return CAPID_EV_OK; /* unterminated: cJSON reports it with its position */
                c = s[i];
                if (c == '"') {
                    i++;
                    break;
                }
                if (c == '\\') {
                    if (i + 5 < len && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0) {
                        capid_perr_set(err, i, "string contains \\u0000 (NUL) at byte %zu", i);
                        return CAPID_EV_INVALID_JSON;
                    }
                    i += 2;
                    continue;
                }
                if (c < 0x80) {
                    if (c == 0) {
                        capid_perr_set(err, i, "NUL byte at byte %zu", i);
                        return CAPID_EV_INVALID_JSON;
                    }
                    i++;
                    continue;
                }
                size_t n = capid_utf8_seq(json, len, i);
                if (!n || n == CAPID_UTF8_TRUNC) {
                    capid_perr_set(err, i, "invalid UTF-8 at byte %zu", i);
                    return CAPID_EV_INVALID_JSON;
                }
                i += n;
            }
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                capid_perr_set(err, i, "nesting deeper than %d levels at byte %zu", max_depth, i);
                return CAPID_EV_INVALID_JSON;
            }
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == 0) {
            capid_perr_set(err, i, "NUL byte at byte %zu", i);
            return CAPID_EV_INVALID_JSON;
        } else if (c >= 0x80) {
            capid_perr_set(err, i, "unexpected byte 0x%02x outside a string at byte %zu", c, i);
            return CAPID_EV_INVALID_JSON;
        }
        i++;
    }
    return CAPID_EV_OK;
}

static inline bool str_eq(const char *a, const char *b)
{
    while (*a == *b && *a)
        a++, b++;
    return *a == *b;
}

/* Called dozens of times an event: the type test and the comparison are
 * inline (cJSON_IsObject and strcmp calls were ~60% of its cost). */
const cJSON *capid_jget(const cJSON *obj, const char *key)
{
    if (!obj || (obj->type & 0xff) != cJSON_Object)
        return NULL;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string && c->string[0] == key[0] && str_eq(c->string, key))
            return c;
    return NULL;
}

/* *out = member c of obj if c is the first one named key, as capid_jget. */
static inline void take_n(const cJSON *c, const char *key, size_t n, const cJSON **out)
{
    if (!*out && capid_jkey_len(c) == n && memcmp(c->string, key, n) == 0)
        *out = c;
}

/* take of a string literal: its length is known, so the key is compared by
 * length, then as a block (a byte loop was most of adopt). */
#define take(c, key, out) take_n((c), key, sizeof(key) - 1, (out))

const cJSON *capid_jpath(const cJSON *obj, const char *dotted)
{
    char key[64];
    while (obj && *dotted) {
        const char *dot = strchr(dotted, '.');
        size_t n = dot ? (size_t)(dot - dotted) : strlen(dotted);
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, dotted, n);
        key[n] = '\0';
        obj = capid_jget(obj, key);
        dotted += n + (dot ? 1 : 0);
    }
    return obj;
}

static int fmt_num(char buf[32], double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        return snprintf(buf, 32, "%.0f", v);
    int n = snprintf(buf, 32, "%.15g", v);
    if (strtod(buf, NULL) != v)
        n = snprintf(buf, 32, "%.17g", v);
    return n;
}

bool capid_jtext(const cJSON *v, const char **s, size_t *len, char numbuf[32])
{
    if (!v)
        return false;
    if (j_type(v, cJSON_String) && v->valuestring) {
        *s = v->valuestring;
        *len = capid_jstr_len(v);
        return true;
    }
    if (j_type(v, cJSON_Number) && isfinite(v->valuedouble)) {
        *len = (size_t)fmt_num(numbuf, v->valuedouble);
        *s = numbuf;
        return true;
    }
    return false;
}

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Decimal number grammar (no hex, inf or nan, which strtod would accept). */
static bool parse_decimal(const char *s, size_t len, double *out)
{
    while (len && is_json_space(*s))
        s++, len--;
    while (len && is_json_space(s[len - 1]))
        len--;
    if (!len || len > 64)
        return false;
    size_t i = 0, digits = 0;
    if (s[i] == '-' || s[i] == '+')
        i++;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (i < len && s[i] == '.')
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    if (!digits)
        return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t e = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++, e++;
        if (!e)
            return false;
    }
    if (i != len)
        return false;
    char tmp[65];
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    double v = strtod(tmp, NULL);
    if (!isfinite(v))
        return false;
    *out = v;
    return true;
}

bool capid_jnum(const cJSON *v, double *out)
{
    if (!v)
        return false;
    if (j_type(v, cJSON_Number))
        return isfinite(v->valuedouble) ? (*out = v->valuedouble, true) : false;
    if (j_type(v, cJSON_String) && v->valuestring)
        return parse_decimal(v->valuestring, capid_jstr_len(v), out);
    return false;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool digits_at(const char *s, size_t len, size_t at, size_t n, int *out)
{
    int v = 0;
    if (at + n > len)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[at + i] < '0' || s[at + i] > '9')
            return false;
        v = v * 10 + (s[at + i] - '0');
    }
    *out = v;
    return true;
}

/* ISO-8601: YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|+HH[:MM]|-HH[:MM]]; no offset = UTC. */
static bool parse_iso8601(const char *s, size_t len, int64_t *sec)
{
    int y, mo, d, h = 0, mi = 0, se = 0;
    size_t i = 10;
    if (!digits_at(s, len, 0, 4, &y) || len < 10 || s[4] != '-' || !digits_at(s, len, 5, 2, &mo) ||
        s[7] != '-' || !digits_at(s, len, 8, 2, &d))
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > 31)
        return false;
    if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' ')) {
        if (!digits_at(s, len, i + 1, 2, &h) || i + 3 >= len || s[i + 3] != ':' ||
            !digits_at(s, len, i + 4, 2, &mi))
            return false;
        i += 6;
        if (i < len && s[i] == ':') {
            if (!digits_at(s, len, i + 1, 2, &se))
                return false;
            i += 3;
            if (i < len && (s[i] == '.' || s[i] == ',')) {
                size_t f = ++i;
                while (i < len && s[i] >= '0' && s[i] <= '9')
                    i++;
                if (i == f)
                    return false;
            }
        }
        if (h > 23 || mi > 59 || se > 60)
            return false;
    }
    int64_t off = 0;
    if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int oh, om = 0;
        int sign = s[i] == '-' ? -1 : 1;
        if (!digits_at(s, len, i + 1, 2, &oh))
            return false;
        i += 3;
        if (i < len && s[i] == ':')
            i++;
        if (i < len) {
            if (!digits_at(s, len, i, 2, &om))
                return false;
            i += 2;
        }
        if (oh > 23 || om > 59)
            return false;
        off = sign * (oh * 3600 + om * 60);
    }
    if (i != len)
        return false;
    *sec = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off;
    return true;
}

static bool epoch_from_number(double v, int64_t *sec)
{
    if (!isfinite(v) || v < 0 || v > 1e16)
        return false;
    /* SPEC 2: epoch milliseconds; numbers below 10^11 are seconds. */
    *sec = (int64_t)floor(v < 1e11 ? v : v / 1000.0);
    return true;
}

bool capid_parse_timestamp(const cJSON *v, int64_t *sec)
{
    double d;
    if (j_type(v, cJSON_Number))
        return epoch_from_number(v->valuedouble, sec);
    if (!j_type(v, cJSON_String) || !v->valuestring)
        return false;
    const char *s = v->valuestring;
    size_t len = strlen(s);
    if (parse_decimal(s, len, &d))
        return epoch_from_number(d, sec);
    while (len && is_json_space(*s))
        s++, len--;
    while (len && is_json_space(s[len - 1]))
        len--;
    return parse_iso8601(s, len, sec);
}

/* JSON allows duplicate keys; capid refuses them (documented in docs/INPUT.md)
 * so that no two readers of an event can disagree on its content. */
static const cJSON *find_duplicate_key(const cJSON *v)
{
    for (const cJSON *c = v ? v->child : NULL; c; c = c->next) {
        if (j_type(v, cJSON_Object))
            for (const cJSON *p = v->child; p != c; p = p->next)
                if (p->string[0] == c->string[0] && strcmp(p->string, c->string) == 0)
                    return c;
        const cJSON *d = find_duplicate_key(c);
        if (d)
            return d;
    }
    return NULL;
}

static const cJSON *obj_or_null(const cJSON *v)
{
    return j_type(v, cJSON_Object) ? v : NULL;
}

/* parsed: root comes from capid_json_parse_event, which found dup (the first
 * duplicate key or NULL); otherwise the tree is searched here. */
static enum capid_event_status adopt(struct capid_event *ev, cJSON *root, int64_t now, bool parsed,
                                     const cJSON *dup, struct capid_perr *err)
{
    ev->root = root;
    if (!j_type(root, cJSON_Object)) {
        capid_perr_set(err, 0, "event is not a JSON object");
        goto invalid;
    }
    if (!parsed)
        dup = find_duplicate_key(root);
    if (dup) {
        capid_perr_set(err, 0, "duplicate key '%.60s'", dup->string);
        goto invalid;
    }
    /* The members read here, in one pass over root and one over context
     * (capid_jget for each was ~1,000 instructions an event). */
    const cJSON *name = NULL, *user = NULL, *context = NULL, *integ = NULL, *partners = NULL,
                *items = NULL, *device = NULL, *page = NULL, *ts = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        switch (c->string ? c->string[0] : 0) {
        case 'e':
            take(c, "event_name", &name);
            break;
        case 'u':
            take(c, "user", &user);
            break;
        case 'c':
            take(c, "context", &context);
            break;
        case 'i':
            take(c, "items", &items);
            take(c, "integrations", &integ);
            break;
        case 'p':
            take(c, "partners", &partners);
            break;
        }
    }
    if (!name) {
        capid_perr_set(err, 0, "event_name is missing");
        goto invalid;
    }
    if (!j_type(name, cJSON_String) || !name->valuestring[0]) {
        capid_perr_set(err, 0, "event_name must be a non-empty string");
        goto invalid;
    }
    ev->user = obj_or_null(user);
    ev->context = obj_or_null(context);
    for (const cJSON *c = ev->context ? ev->context->child : NULL; c; c = c->next) {
        switch (c->string ? c->string[0] : 0) {
        case 'd':
            take(c, "device", &device);
            break;
        case 'p':
            take(c, "page", &page);
            break;
        case 'e':
            take(c, "event_timestamp", &ts);
            break;
        }
    }
    ev->device = obj_or_null(device);
    ev->page = obj_or_null(page);
    ev->fb_int = obj_or_null(capid_jget(integ, "facebook"));
    ev->fb_partner = obj_or_null(capid_jget(partners, "facebook"));
    ev->items = j_type(items, cJSON_Array) ? items : NULL;

    ev->event_time = now;
    if (ts && !j_type(ts, cJSON_NULL)) {
        if (!capid_parse_timestamp(ts, &ev->event_time)) {
            char shown[48] = "";
            if (j_type(ts, cJSON_String))
                snprintf(shown, sizeof(shown), " '%.40s'", ts->valuestring);
            capid_perr_set(err, 0, "context.event_timestamp%s is not a timestamp", shown);
            goto invalid;
        }
        ev->has_time = true;
    }
    return CAPID_EV_OK;
invalid:
    delete_tree(ev->root, ev->arena);
    ev->root = NULL;
    ev->arena = NULL;
    return CAPID_EV_INVALID_EVENT;
}

enum capid_event_status capid_event_parse(struct capid_event *ev, const char *json, size_t len,
                                          const struct capid_limits *lim, int64_t now,
                                          struct capid_perr *err)
{
    cJSON *root;
    const cJSON *dup;
    memset(ev, 0, sizeof(*ev));
    pthread_once(&hooks_once, install_hooks);
    struct capid_arena *a = arena_get();
    enum capid_event_status st = capid_json_parse_event(json, len, lim, a, &root, err, &dup);
    if (st != CAPID_EV_OK) {
        arena_put(a); /* the parser freed what did not fit in the arena */
        return st;
    }
    ev->arena = a;
    return adopt(ev, root, now, true, dup, err);
}

enum capid_event_status capid_event_adopt(struct capid_event *ev, cJSON *root, int64_t now,
                                          struct capid_perr *err)
{
    memset(ev, 0, sizeof(*ev));
    return adopt(ev, root, now, false, NULL, err);
}

void capid_event_release(struct capid_event *ev)
{
    if (ev->root || ev->arena)
        delete_tree(ev->root, ev->arena);
    ev->root = NULL;
    ev->arena = NULL;
}

static int write_value(struct capid_buf *b, const cJSON *v, bool sorted);

static int cmp_keys(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

static int write_object(struct capid_buf *b, const cJSON *v, bool sorted)
{
    const cJSON *stackbuf[32];
    const cJSON **kids = stackbuf;
    size_t n = 0, i = 0;
    int rc = capid_buf_putc(b, '{');
    for (const cJSON *c = v->child; c; c = c->next)
        n++;
    if (sorted && n > 32 && !(kids = malloc(n * sizeof(*kids))))
        return CAPID_ENOMEM;
    if (sorted) {
        for (const cJSON *c = v->child; c; c = c->next)
            kids[i++] = c;
        qsort(kids, n, sizeof(*kids), cmp_keys);
    }
    const cJSON *c = v->child;
    for (i = 0; i < n && !rc; i++) {
        const cJSON *k = sorted ? kids[i] : c;
        c = c ? c->next : NULL;
        if (i)
            rc = capid_buf_putc(b, ',');
        if (!rc)
            rc = capid_buf_json_str(b, k->string, capid_jkey_len(k));
        if (!rc)
            rc = capid_buf_putc(b, ':');
        if (!rc)
            rc = write_value(b, k, sorted);
    }
    if (kids != stackbuf)
        free(kids);
    return rc ? rc : capid_buf_putc(b, '}');
}

static int write_value(struct capid_buf *b, const cJSON *v, bool sorted)
{
    int rc = 0;
    switch (v->type & 0xff) {
    case cJSON_False:
        return capid_buf_append(b, "false", 5);
    case cJSON_True:
        return capid_buf_append(b, "true", 4);
    case cJSON_NULL:
        return capid_buf_append(b, "null", 4);
    case cJSON_Number:
        return capid_buf_json_num(b, v->valuedouble);
    case cJSON_String:
        return capid_buf_json_str(b, v->valuestring, capid_jstr_len(v));
    case cJSON_Raw:
        return capid_buf_puts(b, v->valuestring);
    case cJSON_Object:
        return write_object(b, v, sorted);
    case cJSON_Array:
        rc = capid_buf_putc(b, '[');
        for (const cJSON *c = v->child; c && !rc; c = c->next) {
            if (c != v->child)
                rc = capid_buf_putc(b, ',');
            if (!rc)
                rc = write_value(b, c, sorted);
        }
        return rc ? rc : capid_buf_putc(b, ']');
    }
    return capid_buf_append(b, "null", 4);
}

int capid_json_write(struct capid_buf *b, const cJSON *v)
{
    return write_value(b, v, false);
}

const char *capid_event_auto_id(struct capid_event *ev, struct capid_sha256 *h,
                                struct capid_buf *scratch)
{
    if (ev->auto_id[0])
        return ev->auto_id;
    capid_buf_reset(scratch);
    if (write_value(scratch, ev->root, true))
        abort(); /* out of memory on a size-capped event */
    capid_sha256_hex(h, scratch->data, scratch->len, ev->auto_id);
    return ev->auto_id;
}
