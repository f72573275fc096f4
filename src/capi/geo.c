#include "capi/geo.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util/utf8.h"

#ifndef CAPID_DATADIR
#define CAPID_DATADIR "data"
#endif
#define ISO_DIR_DEFAULT "/usr/share/iso-codes/json"
#define GEO_FILE_MAX    (64u << 20) /* iso_3166-2.json is ~0.6 MB */
#define GEO_KEY_MAX     256         /* longer folded names are not stored */

/* Open-addressing hash table from a folded name to a 2-letter code. Keys live
 * in one arena; the table never changes after it is published. */
struct geo_ent {
    const char *key; /* NULL = empty slot */
    uint32_t len;
    char code[3];
};

struct geo_map {
    struct geo_ent *slot;
    size_t mask;
    size_t n;
};

struct geo_tables {
    char a2code[26 * 26][3];   /* "xx" for every index, valid or not */
    uint8_t a2[26 * 26];       /* 1 = assigned alpha-2 code */
    uint16_t a3[26 * 26 * 26]; /* alpha-2 index + 1, 0 = none */
    uint8_t cur[26 * 26 * 26]; /* 1 = ISO 4217 currency */
    uint8_t sub2[26 * 26];     /* 1 = US/CA subdivision code */
    struct geo_map country;    /* folded names and aliases */
    struct geo_map state;      /* folded US/CA subdivision names and aliases */
    char *arena;
    size_t arena_len, arena_cap;
};

static _Atomic(struct geo_tables *) geo_tab;
static atomic_int geo_tried;
static pthread_mutex_t geo_lock = PTHREAD_MUTEX_INITIALIZER;

static inline uint32_t geo_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static const struct geo_ent *map_find(const struct geo_map *m, const char *k, size_t n)
{
    if (!m->slot)
        return NULL;
    for (size_t i = geo_hash(k, n) & m->mask;; i = (i + 1) & m->mask) {
        const struct geo_ent *e = &m->slot[i];
        if (!e->key)
            return NULL;
        if (e->len == n && memcmp(e->key, k, n) == 0)
            return e;
    }
}

static int map_reserve(struct geo_map *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) /* load factor <= 1/2 */
        cap *= 2;
    m->slot = calloc(cap, sizeof(*m->slot));
    if (!m->slot)
        return CAPID_ENOMEM;
    m->mask = cap - 1;
    return CAPID_OK;
}

static int arena_dup(struct geo_tables *t, const char *s, size_t n, const char **out)
{
    if (t->arena_len + n > t->arena_cap)
        return CAPID_ENOMEM; /* sized up front by geo_load */
    memcpy(t->arena + t->arena_len, s, n);
    *out = t->arena + t->arena_len;
    t->arena_len += n;
    return CAPID_OK;
}

/* Inserts key -> code unless the key is present (first writer wins). */
static int map_put(struct geo_tables *t, struct geo_map *m, const char *k, size_t n,
                   const char *code)
{
    if (n == 0 || n > GEO_KEY_MAX)
        return CAPID_OK; /* nothing anyone can look up */
    if (2 * (m->n + 1) > m->mask + 1)
        return CAPID_ENOMEM; /* geo_load sized the table: cannot happen */
    size_t i = geo_hash(k, n) & m->mask;
    for (; m->slot[i].key; i = (i + 1) & m->mask)
        if (m->slot[i].len == n && memcmp(m->slot[i].key, k, n) == 0)
            return CAPID_OK;
    int rc = arena_dup(t, k, n, &m->slot[i].key);
    if (rc)
        return rc;
    m->slot[i].len = (uint32_t)n;
    memcpy(m->slot[i].code, code, 3);
    m->n++;
    return CAPID_OK;
}

static void geo_free(struct geo_tables *t)
{
    if (!t)
        return;
    free(t->country.slot);
    free(t->state.slot);
    free(t->arena);
    free(t);
}

int capid_geo_fold(const char *in, size_t len, struct capid_buf *out)
{
    /* Room for the ASCII part: an ASCII byte yields at most one letter. */
    int rc = capid_buf_grow(out, len);
    if (rc)
        return rc;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)in[i];
        if (c < 0x80) {
            i++;
            if (c >= 'A' && c <= 'Z')
                out->data[out->len++] = (char)(c | 0x20);
            else if (c >= 'a' && c <= 'z')
                out->data[out->len++] = (char)c;
            continue;
        }
        int32_t cp = utf8proc_tolower(capid_utf8_next(in, len, &i));
        int32_t d[32]; /* the longest NFKD expansion (U+FDFA) has 18 code points */
        utf8proc_ssize_t nd =
            utf8proc_decompose_char(cp, d, 32, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, NULL);
        if (nd <= 0 || nd > 32)
            continue;
        /* Keep the invariant: room for the rest of the input plus this. */
        rc = capid_buf_grow(out, (size_t)nd + (len - i));
        if (rc) {
            out->data[out->len] = '\0';
            return rc;
        }
        for (utf8proc_ssize_t k = 0; k < nd; k++)
            if (d[k] >= 'a' && d[k] <= 'z')
                out->data[out->len++] = (char)d[k];
    }
    out->data[out->len] = '\0';
    return CAPID_OK;
}

/* Folds a JSON string into buf (reset first); false if it is no string. */
static bool fold_item(const cJSON *it, struct capid_buf *buf)
{
    capid_buf_reset(buf);
    if (!cJSON_IsString(it) || !it->valuestring)
        return false;
    const char *s = it->valuestring;
    size_t n = strlen(s);
    if (!capid_utf8_valid(s, n))
        return false;
    return capid_geo_fold(s, n, buf) == CAPID_OK;
}

static inline int idx2(const char *s)
{
    return (s[0] - 'a') * 26 + (s[1] - 'a');
}

static inline int idx3(const char *s)
{
    return ((s[0] - 'a') * 26 + (s[1] - 'a')) * 26 + (s[2] - 'a');
}

/* n lowercase ASCII letters */
static bool all_lower(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 'a' || s[i] > 'z')
            return false;
    return true;
}

/* Lowercases a code of exactly n ASCII letters into out; false otherwise. */
static bool code_lower(const cJSON *it, size_t n, char *out)
{
    if (!cJSON_IsString(it) || !it->valuestring || strlen(it->valuestring) != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = it->valuestring[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c | 0x20);
        if (c < 'a' || c > 'z')
            return false;
        out[i] = c;
    }
    out[n] = '\0';
    return true;
}

static cJSON *load_json(const char *dir, const char *name, struct capid_perr *err, int *rc)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        capid_perr_set(err, (size_t)-1, "cannot open '%s': %s", path, strerror(errno));
        *rc = CAPID_EIO;
        return NULL;
    }
    char *data = NULL;
    size_t len = 0, cap = 0;
    cJSON *root = NULL;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 1u << 16;
            if (cap > GEO_FILE_MAX) {
                capid_perr_set(err, (size_t)-1, "cannot read '%s': over %u bytes", path,
                               GEO_FILE_MAX);
                *rc = CAPID_ETOOBIG;
                goto out;
            }
            char *p = realloc(data, cap);
            if (!p) {
                *rc = CAPID_ENOMEM;
                goto out;
            }
            data = p;
        }
        size_t r = fread(data + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    if (ferror(f)) {
        capid_perr_set(err, (size_t)-1, "cannot read '%s': %s", path, strerror(errno));
        *rc = CAPID_EIO;
        goto out;
    }
    root = cJSON_ParseWithLength(data, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= data && at <= data + len ? (size_t)(at - data) : (size_t)-1;
        capid_perr_set(err, off, "cannot parse '%s': invalid JSON", path);
        *rc = CAPID_EPARSE;
    }
out:
    free(data);
    fclose(f);
    return root;
}

/* The array under `key` of an iso-codes file, or NULL (error set). */
static const cJSON *iso_array(const cJSON *root, const char *key, const char *name,
                              struct capid_perr *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!cJSON_IsArray(a))
        capid_perr_set(err, (size_t)-1, "invalid '%s': no \"%s\" array", name, key);
    return cJSON_IsArray(a) ? a : NULL;
}

/* Upper bound of the folded key bytes the given fields of arr contribute. */
static size_t key_bytes(const cJSON *arr, const char *const *fields, size_t nfields)
{
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        for (size_t i = 0; i < nfields; i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, fields[i]);
            if (cJSON_IsString(v) && v->valuestring)
                n += 4 * strlen(v->valuestring) + 1; /* folding may expand (U+33AF) */
        }
    }
    return n;
}

static int load_countries(struct geo_tables *t, const cJSON *arr, struct capid_buf *buf,
                          struct capid_perr *err)
{
    static const char *const names[] = {"name", "common_name", "official_name"};
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        char a2[3], a3[4];
        if (!code_lower(cJSON_GetObjectItemCaseSensitive(e, "alpha_2"), 2, a2) ||
            !code_lower(cJSON_GetObjectItemCaseSensitive(e, "alpha_3"), 3, a3)) {
            capid_perr_set(err, (size_t)-1, "invalid 'iso_3166-1.json': entry without codes");
            return CAPID_EINVAL;
        }
        t->a2[idx2(a2)] = 1;
        if (!t->a3[idx3(a3)])
            t->a3[idx3(a3)] = (uint16_t)(idx2(a2) + 1);
        /* capid_geo_country() tries codes first, so a name never hides one. */
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (!fold_item(cJSON_GetObjectItemCaseSensitive(e, names[i]), buf))
                continue;
            int rc = map_put(t, &t->country, buf->data, buf->len, a2);
            if (rc)
                return rc;
        }
    }
    return CAPID_OK;
}

static int load_states(struct geo_tables *t, const cJSON *arr, struct capid_buf *buf)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
        if (!cJSON_IsString(code) || !code->valuestring)
            continue;
        const char *c = code->valuestring;
        if (strncmp(c, "US-", 3) != 0 && strncmp(c, "CA-", 3) != 0)
            continue;
        char sub[3];
        if (strlen(c) != 5 || !(c[3] >= 'A' && c[3] <= 'Z') || !(c[4] >= 'A' && c[4] <= 'Z'))
            continue;
        sub[0] = (char)(c[3] | 0x20);
        sub[1] = (char)(c[4] | 0x20);
        sub[2] = '\0';
        t->sub2[idx2(sub)] = 1;
        if (!fold_item(cJSON_GetObjectItemCaseSensitive(e, "name"), buf))
            continue;
        int rc = map_put(t, &t->state, buf->data, buf->len, sub);
        if (rc)
            return rc;
    }
    return CAPID_OK;
}

/* Alias files: a JSON object of name -> 2-letter code. Keys are folded, so a
 * human-readable key ("Washington DC") works as well as a folded one. */
static int load_aliases(struct geo_tables *t, const cJSON *obj, bool country, const char *name,
                        struct capid_buf *buf, struct capid_perr *err)
{
    if (!cJSON_IsObject(obj)) {
        capid_perr_set(err, (size_t)-1, "invalid '%s': not a JSON object", name);
        return CAPID_EINVAL;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, obj)
    {
        char code[3];
        const uint8_t *known = country ? t->a2 : t->sub2;
        if (!code_lower(e, 2, code) || !known[idx2(code)]) {
            capid_perr_set(err, (size_t)-1, "invalid '%s': alias \"%.40s\" maps to no known code",
                           name, e->string ? e->string : "");
            return CAPID_EINVAL;
        }
        capid_buf_reset(buf);
        size_t n = e->string ? strlen(e->string) : 0;
        if (!e->string || !capid_utf8_valid(e->string, n) ||
            capid_geo_fold(e->string, n, buf) != CAPID_OK || buf->len == 0) {
            capid_perr_set(err, (size_t)-1, "invalid '%s': alias key \"%.40s\" has no letters",
                           name, e->string ? e->string : "");
            return CAPID_EINVAL;
        }
        int rc = map_put(t, country ? &t->country : &t->state, buf->data, buf->len, code);
        if (rc)
            return rc;
    }
    return CAPID_OK;
}

static int geo_load(const char *iso_dir, struct capid_perr *err, struct geo_tables **out)
{
    static const char *const cfields[] = {"name", "common_name", "official_name"};
    static const char *const sfields[] = {"name"};
    const char *env_iso = getenv("CAPID_ISO_CODES_DIR");
    const char *env_data = getenv("CAPID_DATA_DIR");
    const char *idir = iso_dir && *iso_dir   ? iso_dir
                       : env_iso && *env_iso ? env_iso
                                             : ISO_DIR_DEFAULT;
    const char *ddir = env_data && *env_data ? env_data : CAPID_DATADIR;
    cJSON *c1 = NULL, *c2 = NULL, *c4 = NULL, *ca = NULL, *sa = NULL;
    struct capid_buf buf;
    capid_buf_init(&buf, 0);
    const cJSON *a1, *a2, *a4, *e;
    int rc = CAPID_ENOMEM;
    struct geo_tables *t = calloc(1, sizeof(*t));
    if (!t)
        goto out;
    if (!(c1 = load_json(idir, "iso_3166-1.json", err, &rc)) ||
        !(c2 = load_json(idir, "iso_3166-2.json", err, &rc)) ||
        !(c4 = load_json(idir, "iso_4217.json", err, &rc)) ||
        !(ca = load_json(ddir, "country-aliases.json", err, &rc)) ||
        !(sa = load_json(ddir, "state-aliases.json", err, &rc)))
        goto out;
    rc = CAPID_EINVAL;
    a1 = iso_array(c1, "3166-1", "iso_3166-1.json", err);
    a2 = a1 ? iso_array(c2, "3166-2", "iso_3166-2.json", err) : NULL;
    a4 = a2 ? iso_array(c4, "4217", "iso_4217.json", err) : NULL;
    if (!a4)
        goto out;

    /* Size the maps and the key arena once; nothing grows afterwards. */
    rc = CAPID_ENOMEM;
    size_t ncountry = 3 * (size_t)cJSON_GetArraySize(a1) + (size_t)cJSON_GetArraySize(ca);
    size_t nstate = (size_t)cJSON_GetArraySize(a2) + (size_t)cJSON_GetArraySize(sa);
    t->arena_cap = key_bytes(a1, cfields, 3) + key_bytes(a2, sfields, 1) + 64;
    for (e = ca->child; e; e = e->next)
        t->arena_cap += e->string ? 4 * strlen(e->string) + 1 : 0;
    for (e = sa->child; e; e = e->next)
        t->arena_cap += e->string ? 4 * strlen(e->string) + 1 : 0;
    t->arena = malloc(t->arena_cap);
    if (!t->arena || map_reserve(&t->country, ncountry) || map_reserve(&t->state, nstate))
        goto out;
    for (int i = 0; i < 26 * 26; i++) {
        t->a2code[i][0] = (char)('a' + i / 26);
        t->a2code[i][1] = (char)('a' + i % 26);
        t->a2code[i][2] = '\0';
    }

    if ((rc = load_countries(t, a1, &buf, err)) || (rc = load_states(t, a2, &buf)))
        goto out;
    cJSON_ArrayForEach(e, a4)
    {
        char c3[4];
        if (code_lower(cJSON_GetObjectItemCaseSensitive(e, "alpha_3"), 3, c3))
            t->cur[idx3(c3)] = 1;
    }
    if ((rc = load_aliases(t, ca, true, "country-aliases.json", &buf, err)) ||
        (rc = load_aliases(t, sa, false, "state-aliases.json", &buf, err)))
        goto out;
    *out = t;
    t = NULL; /* now owned by the caller */
    rc = CAPID_OK;
out:
    if (rc == CAPID_ENOMEM)
        capid_perr_set(err, (size_t)-1, "cannot load iso-codes tables: out of memory");
    geo_free(t);
    cJSON_Delete(c1);
    cJSON_Delete(c2);
    cJSON_Delete(c4);
    cJSON_Delete(ca);
    cJSON_Delete(sa);
    capid_buf_release(&buf);
    return rc;
}

int capid_geo_init(const char *iso_dir, struct capid_perr *err)
{
    if (atomic_load_explicit(&geo_tab, memory_order_acquire))
        return CAPID_OK;
    pthread_mutex_lock(&geo_lock);
    int rc = CAPID_OK;
    if (!atomic_load_explicit(&geo_tab, memory_order_relaxed)) {
        struct geo_tables *t = NULL;
        if (err) {
            err->line = err->column = 0;
            err->offset = (size_t)-1;
        }
        rc = geo_load(iso_dir, err, &t);
        if (rc == CAPID_OK)
            atomic_store_explicit(&geo_tab, t, memory_order_release);
    }
    atomic_store_explicit(&geo_tried, 1, memory_order_relaxed);
    pthread_mutex_unlock(&geo_lock);
    return rc;
}

/* The published tables, loading them on first use (once; see geo.h). */
static inline const struct geo_tables *tables(void)
{
    const struct geo_tables *t = atomic_load_explicit(&geo_tab, memory_order_acquire);
    if (t || atomic_load_explicit(&geo_tried, memory_order_relaxed))
        return t;
    capid_geo_init(NULL, NULL);
    return atomic_load_explicit(&geo_tab, memory_order_acquire);
}

const char *capid_geo_country(const char *folded, size_t len)
{
    const struct geo_tables *t = tables();
    if (!t || !folded)
        return NULL;
    if (len == 2 && all_lower(folded, 2))
        if (t->a2[idx2(folded)])
            return t->a2code[idx2(folded)];
    if (len == 3 && all_lower(folded, 3) && t->a3[idx3(folded)])
        return t->a2code[t->a3[idx3(folded)] - 1];
    const struct geo_ent *e = map_find(&t->country, folded, len);
    return e ? e->code : NULL;
}

const char *capid_geo_state(const char *folded, size_t len)
{
    const struct geo_tables *t = tables();
    if (!t || !folded)
        return NULL;
    const struct geo_ent *e = map_find(&t->state, folded, len);
    return e ? e->code : NULL;
}

bool capid_currency_valid(const char *code, size_t len)
{
    if (!code || len != 3)
        return false;
    for (int i = 0; i < 3; i++)
        if (code[i] < 'A' || code[i] > 'Z')
            return false;
    const struct geo_tables *t = tables();
    char lc[3] = {(char)(code[0] | 0x20), (char)(code[1] | 0x20), (char)(code[2] | 0x20)};
    return t && t->cur[idx3(lc)];
}
