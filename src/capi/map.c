#include "capi/map.h"

#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "capi/geo.h"
#include "util/utf8.h"

#define MAX_VALUES 16 /* values kept per user_data key (arrays beyond are cut) */

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

/* SPEC 4.2: the seed's Commanders Act -> Meta event names. */
static const struct {
    const char *from, *to;
} seed_names[] = {
    {"begin_checkout", "InitiateCheckout"},
    {"purchase", "Purchase"},
    {"add_to_cart", "AddToCart"},
    {"view_item", "ViewContent"},
    {"view_item_list", "ViewContent"},
    {"search", "Search"},
    {"add_payment_info", "AddPaymentInfo"},
    {"add_to_wishlist", "AddToWishlist"},
    {"generate_lead", "Lead"},
    {"page_view", "PageView"},
    {"sign_up", "CompleteRegistration"},
    {"contact", "Contact"},
    {"customize_product", "CustomizeProduct"},
    {"donate", "Donate"},
    {"find_location", "FindLocation"},
    {"schedule", "Schedule"},
    {"start_trial", "StartTrial"},
    {"submit_application", "SubmitApplication"},
    {"subscribe", "Subscribe"},
};

/* SPEC 4.3: hashed user_data keys and their Commanders Act user properties. */
static const struct {
    enum capid_ukey key;
    const char *prop;
    const char *sha_prop;
} user_keys[] = {
    {CAPID_UK_EM, "email", "email_sha256"},         {CAPID_UK_PH, "phone", "phone_sha256"},
    {CAPID_UK_FN, "firstname", "firstname_sha256"}, {CAPID_UK_LN, "lastname", "lastname_sha256"},
    {CAPID_UK_GE, "gender", "gender_sha256"},       {CAPID_UK_DB, "birthdate", "birthdate_sha256"},
    {CAPID_UK_CT, "city", "city_sha256"},           {CAPID_UK_ST, "state", "state_sha256"},
    {CAPID_UK_ZP, "zipcode", "zipcode_sha256"},     {CAPID_UK_COUNTRY, "country", "country_sha256"},
    {CAPID_UK_EXTERNAL_ID, "id", "id_sha256"},
};

/* ---- member lookup ---------------------------------------------------- */

/* The members an event is read by, each object's looked up in one pass over
 * it (fetch): a capid_jget scan per name was ~15% of `capid map`. */
enum {
    /* SPEC 4.4 step 1: top-level keys never copied into custom_data. */
    R_EVENT_NAME,
    R_TYPE,
    R_USER,
    R_CONTEXT,
    R_INTEGRATIONS,
    R_PARTNERS,
    R_ITEMS,
    R_SOURCE_KEY,
    R_EVENT_ID,
    R_TEST_CODE,
    R_FBP,
    R_FBC,
    R_URL,
    R_REFERRER,
    R__RESERVED,
    R_VALUE = R__RESERVED,
    R_CURRENCY,
    R_ID,
    R_STATUS,
    R_SEARCH_TERM,
    R_NAME,
    R_CATEGORY,
    R__COUNT
};
static const char *const root_names[R__COUNT] = {
    "event_name", "type",     "user",      "context", "integrations", "partners", "items",
    "source_key", "event_id", "test_code", "fbp",     "fbc",          "url",      "referrer",
    "value",      "currency", "id",        "status",  "search_term",  "name",     "category",
};

/* user: user_keys[i].prop at 2 * i, .sha_prop at 2 * i + 1, then these. */
enum { U_COUNTRY = 2 * 9, U_CONSENT = 22, U__COUNT };
static const char *user_names[U__COUNT] = {[U_CONSENT] = "consent_categories"};

enum {
    D_IP,
    D_USER_AGENT,
    D_COOKIE,
    D_ADVERTISING_ID,
    D_AD_TRACKING_ENABLED,
    D_APPLICATION_TRACKING_ENABLED,
    D_TYPE,
    D__COUNT
};
static const char *const device_names[D__COUNT] = {
    "ip",
    "user_agent",
    "cookie",
    "advertising_id",
    "ad_tracking_enabled",
    "application_tracking_enabled",
    "type",
};

enum { P_URL, P_LOCATION, P_REFERRER, P__COUNT };
static const char *const page_names[P__COUNT] = {"url", "location", "referrer"};

enum { C_EVENT_ID, C_COOKIE, C__COUNT };
static const char *const context_names[C__COUNT] = {"event_id", "cookie"};

enum { I_PRODUCT, I_ID, I_QUANTITY, I_ITEM_QUANTITY, I_PRICE, I__COUNT };
static const char *const item_names[I__COUNT] = {"product", "id", "quantity", "item_quantity",
                                                 "price"};

enum { PR_ID, PR_QUANTITY, PR_PRICE, PR_NAME, PR_CATEGORY_1, PR__COUNT = PR_CATEGORY_1 + 5 };
static const char *const product_names[PR__COUNT] = {
    "id",         "quantity",   "price",      "name",       "category_1",
    "category_2", "category_3", "category_4", "category_5",
};

#define ROOT_SEEN 32

/* The members of an event that mapping reads, fetched once per event. */
struct members {
    const cJSON *root[R__COUNT], *user[U__COUNT], *device[D__COUNT], *page[P__COUNT],
        *context[C__COUNT];
    /* The first root_seen members of the root, in order: their index in
     * root_names (-1: none) and key length, for custom_data (fetch_root). */
    unsigned root_seen;
    signed char root_idx[ROOT_SEEN];
    size_t root_klen[ROOT_SEEN];
};

/* Names looked up together. Bit i of by_first[b & 31] is set when names[i]
 * starts with a byte of the same low 5 bits as b, of by_len[n & 31] when
 * its length has the same low 5 bits as n: a key's candidates are the
 * names in both. */
struct keyset {
    const char *const *names;
    unsigned n; /* at most 32 */
    uint32_t by_first[32], by_len[32];
    size_t len[32]; /* strlen(names[i]) */
};

static struct keyset root_ks = {.names = root_names, .n = R__COUNT},
                     user_ks = {.names = user_names, .n = U__COUNT},
                     device_ks = {.names = device_names, .n = D__COUNT},
                     page_ks = {.names = page_names, .n = P__COUNT},
                     context_ks = {.names = context_names, .n = C__COUNT},
                     item_ks = {.names = item_names, .n = I__COUNT},
                     product_ks = {.names = product_names, .n = PR__COUNT};

/* Whether a[0..n) equals b[0..n), both readable that far: a word at a time
 * (the last word overlapping) rather than byte loops. */
static inline bool mem_eq(const char *a, const char *b, size_t n)
{
    uint64_t x, y;
    uint32_t u, v;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (x != y)
                return false;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        if (u != v)
            return false;
        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);
        return u == v;
    }
    return !n || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
}

/* The index of key (n bytes) in ks, or -1. */
static inline int ks_index_n(const struct keyset *ks, const char *key, size_t n)
{
    uint32_t m = ks->by_first[(unsigned char)key[0] & 31] & ks->by_len[n & 31];
    for (; m; m &= m - 1) {
        unsigned i = (unsigned)__builtin_ctz(m);
        if (ks->len[i] == n && mem_eq(key, ks->names[i], n))
            return (int)i;
    }
    return -1;
}

/* out[i] = capid_jget(obj, ks->names[i]) for every i, in one pass; out
 * (ks->n pointers) must be zeroed (FETCH does). */
static void fetch_zeroed(const struct keyset *ks, const cJSON *obj, const cJSON **out)
{
    if (!j_type(obj, cJSON_Object))
        return;
    for (const cJSON *c = obj->child; c; c = c->next) {
        int i = c->string ? ks_index_n(ks, c->string, capid_jkey_len(c)) : -1;
        if (i >= 0 && !out[i])
            out[i] = c;
    }
}

/* fetch_zeroed into the array out, zeroed with its constant size (a memset
 * call of ks->n pointers per object measured ~0.5%). */
#define FETCH(ks, obj, out) (memset((out), 0, sizeof(out)), fetch_zeroed((ks), (obj), (out)))

/* fetch of the root into mb->root, also keeping what custom_data reads of
 * each member again (its index and key length: ~15 strlen an event fewer). */
static void fetch_root(const cJSON *obj, struct members *mb)
{
    unsigned pos = 0;
    memset(mb->root, 0, sizeof(mb->root));
    mb->root_seen = 0;
    if (!j_type(obj, cJSON_Object))
        return;
    for (const cJSON *c = obj->child; c; c = c->next, pos++) {
        size_t n = c->string ? capid_jkey_len(c) : 0;
        int i = c->string ? ks_index_n(&root_ks, c->string, n) : -1;
        if (pos < ROOT_SEEN) {
            mb->root_idx[pos] = (signed char)i;
            mb->root_klen[pos] = n;
            mb->root_seen = pos + 1;
        }
        if (i >= 0 && !mb->root[i])
            mb->root[i] = c;
    }
}

/* user_data keys as written ("em": quoted, with the colon) and how the
 * match-key gate counts them (ud_count). */
enum ud_kind { UD_OTHER, UD_STRONG, UD_UA };
static char ukey_json[CAPID_UK__COUNT][32];
static size_t ukey_json_len[CAPID_UK__COUNT];
static enum ud_kind ukey_kind[CAPID_UK__COUNT];

static enum ud_kind ud_kind_of(const char *key);
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void ks_init(struct keyset *ks)
{
    for (unsigned i = 0; i < ks->n; i++) {
        ks->len[i] = strlen(ks->names[i]);
        ks->by_first[(unsigned char)ks->names[i][0] & 31] |= UINT32_C(1) << i;
        ks->by_len[ks->len[i] & 31] |= UINT32_C(1) << i;
    }
}

static void tables_init(void)
{
    for (size_t i = 0; i < sizeof(user_keys) / sizeof(user_keys[0]); i++) {
        user_names[2 * i] = user_keys[i].prop;
        user_names[2 * i + 1] = user_keys[i].sha_prop;
    }
    if (2 * sizeof(user_keys) / sizeof(user_keys[0]) != U_CONSENT ||
        strcmp(user_names[U_COUNTRY], "country"))
        abort(); /* the enum above is out of step with user_keys */
    struct keyset *all[] = {&root_ks,    &user_ks, &device_ks, &page_ks,
                            &context_ks, &item_ks, &product_ks};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        ks_init(all[i]);
    for (int k = 0; k < CAPID_UK__COUNT; k++) {
        const char *name = capid_ukey_name((enum capid_ukey)k);
        struct capid_buf b;
        capid_buf_init(&b, 0);
        if (capid_buf_json_str(&b, name, strlen(name)) || capid_buf_putc(&b, ':') ||
            b.len >= sizeof(ukey_json[k]))
            abort(); /* a short constant */
        memcpy(ukey_json[k], b.data, b.len + 1);
        ukey_json_len[k] = b.len;
        ukey_kind[k] = ud_kind_of(name);
        capid_buf_release(&b);
    }
}

static const char *const action_sources[] = {
    "email",
    "website",
    "app",
    "phone_call",
    "chat",
    "physical_store",
    "system_generated",
    "business_messaging",
    "other",
};

bool capid_action_source_valid(const char *s)
{
    for (size_t i = 0; i < sizeof(action_sources) / sizeof(action_sources[0]); i++)
        if (s[0] == action_sources[i][0] && strcmp(s, action_sources[i]) == 0)
            return true;
    return false;
}

int capid_mapper_init(struct capid_mapper *m)
{
    pthread_once(&tables_once, tables_init);
    memset(m, 0, sizeof(*m));
    capid_buf_init(&m->norm, 0);
    capid_buf_init(&m->scratch, 0);
    capid_buf_init(&m->cd, 0);
    if (!(m->memo = capid_sha256_memo_new()))
        return CAPID_ENOMEM;
    return capid_sha256_init(&m->sha);
}

void capid_mapper_release(struct capid_mapper *m)
{
    capid_sha256_release(&m->sha);
    capid_buf_release(&m->norm);
    capid_buf_release(&m->scratch);
    capid_buf_release(&m->cd);
    free(m->cd_entries);
    capid_sha256_memo_free(m->memo);
    m->memo = NULL;
}

void capid_mapped_init(struct capid_mapped *out)
{
    memset(out, 0, sizeof(*out));
    capid_buf_init(&out->json, 0);
}

void capid_mapped_release(struct capid_mapped *out)
{
    capid_buf_release(&out->json);
}

/* ---- small helpers ---------------------------------------------------- */

static bool present(const cJSON *v)
{
    return v && !j_type(v, cJSON_NULL);
}

static const char *jstr(const cJSON *v)
{
    return j_type(v, cJSON_String) ? v->valuestring : NULL;
}

/* First present of up to three sources (SPEC 2: later ones are not consulted). */
static const cJSON *first_of(const cJSON *a, const cJSON *b, const cJSON *c)
{
    return present(a) ? a : present(b) ? b : present(c) ? c : NULL;
}

static void trim_ascii(const char **s, size_t *len)
{
    while (*len && (**s == ' ' || **s == '\t' || **s == '\n' || **s == '\r'))
        (*s)++, (*len)--;
    while (*len && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t' || (*s)[*len - 1] == '\n' ||
                    (*s)[*len - 1] == '\r'))
        (*len)--;
}

/* Trims Unicode white space (capid_is_space) from both ends of UTF-8 text. */
static void trim_space(const char **s, size_t *len)
{
    size_t i = 0, n = *len;
    while (i < n) {
        size_t j = i;
        if (!capid_is_space(capid_utf8_next(*s, n, &j)))
            break;
        i = j;
    }
    while (n > i) {
        size_t start = n - 1, j;
        while (start > i && ((unsigned char)(*s)[start] & 0xC0) == 0x80)
            start--;
        j = start;
        if (!capid_is_space(capid_utf8_next(*s, n, &j)))
            break;
        n = start;
    }
    *s += i;
    *len = n - i;
}

/* Cookie header `name=value; ...`: the first non-empty value of name. */
/* Cookie header `name=value; ...`: the first non-empty value of each of
 * names[0] and names[1] (found[i] false when there is none), in one pass. */
static void cookie_get2(const char *cookie, const char *const names[2], const char *val[2],
                        size_t len[2], bool found[2])
{
    size_t nlen[2] = {strlen(names[0]), strlen(names[1])};
    const char *p = cookie;
    found[0] = found[1] = false;
    while (p && *p && !(found[0] && found[1])) {
        const char *end = strchr(p, ';');
        size_t seg = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;
        size_t n = seg;
        trim_ascii(&s, &n);
        const char *eq = memchr(s, '=', n);
        if (eq) {
            const char *k = s, *v = eq + 1;
            size_t kl = (size_t)(eq - s), vl = n - kl - 1;
            trim_ascii(&k, &kl);
            trim_ascii(&v, &vl);
            for (int i = 0; i < 2; i++) {
                if (!found[i] && vl && kl == nlen[i] && memcmp(k, names[i], kl) == 0) {
                    val[i] = v;
                    len[i] = vl;
                    found[i] = true;
                }
            }
        }
        p = end ? end + 1 : NULL;
    }
}

static bool all_digits(const char *s, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* SPEC 4.3: fb.<digits>.<digits>.<payload>, optionally a fifth part. */
static bool fbx_valid(const char *s, size_t n)
{
    const char *parts[6] = {0};
    size_t lens[6] = {0}, np = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (np == 5)
                return false;
            parts[np] = s + start;
            lens[np++] = i - start;
            start = i + 1;
        }
    }
    if (np < 4 || lens[0] != 2 || memcmp(parts[0], "fb", 2) != 0)
        return false;
    if (!all_digits(parts[1], lens[1]) || !all_digits(parts[2], lens[2]) || !lens[3])
        return false;
    return np == 4 || lens[4] > 0;
}

/* Whether s[0..n) is what inet_pton(AF_INET) accepts: four decimal octets
 * of at most 255 without leading zeros, separated by dots. */
static bool ipv4_valid(const char *s, size_t n)
{
    unsigned octets = 0, v = 0;
    bool digit = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            if (digit && v == 0)
                return false; /* leading zero */
            v = v * 10 + (unsigned)(s[i] - '0');
            if (v > 255 || (!digit && ++octets > 4))
                return false;
            digit = true;
        } else if (s[i] == '.' && digit && octets < 4) {
            v = 0;
            digit = false;
        } else {
            return false;
        }
    }
    return octets == 4 && digit;
}

static bool ip_valid(const char *s, size_t n)
{
    char tmp[64];
    unsigned char addr[16];
    if (!n || n >= sizeof(tmp))
        return false;
    if (ipv4_valid(s, n)) /* the common case, without the copy and the call */
        return true;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1;
}

/* The fbclid query parameter of a URL, byte for byte (SPEC 4.3). */
static bool fbclid_of(const char *url, const char **val, size_t *len)
{
    const char *q = strchr(url, '?');
    if (!q)
        return false;
    const char *end = strchr(q, '#');
    if (!end)
        end = q + strlen(q);
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > 7 && memcmp(p, "fbclid=", 7) == 0) {
            *val = p + 7;
            *len = (size_t)(stop - p - 7);
            return true;
        }
        p = stop + 1;
    }
    return false;
}

/* ---- user_data ------------------------------------------------------- */

struct ud_state {
    struct capid_mapper *m;
    struct capid_buf *b; /* user_data members are written from b->data[start] */
    size_t start;
    int strong, other;
    bool has_ua;
    char values[MAX_VALUES][65];
    size_t vlens[MAX_VALUES];
    bool digest[MAX_VALUES]; /* 64 hex digits: written without escaping */
    size_t nvalues;
};

static void ud_key(struct ud_state *u, const char *key)
{
    if (u->b->len > u->start)
        capid_buf_putc(u->b, ',');
    capid_buf_json_str(u->b, key, strlen(key));
    capid_buf_putc(u->b, ':');
}

/* ud_key of a key given as written: quoted, with the colon. */
static void ud_key_json(struct ud_state *u, const char *json, size_t n)
{
    if (u->b->len > u->start)
        capid_buf_putc(u->b, ',');
    capid_buf_append(u->b, json, n);
}

static bool is_strong(const char *key)
{
    return !strcmp(key, "em") || !strcmp(key, "ph") || !strcmp(key, "external_id") ||
           !strcmp(key, "fbp") || !strcmp(key, "fbc");
}

static enum ud_kind ud_kind_of(const char *key)
{
    return !strcmp(key, "client_user_agent") ? UD_UA : is_strong(key) ? UD_STRONG : UD_OTHER;
}

static void ud_tally(struct ud_state *u, enum ud_kind kind)
{
    if (kind == UD_UA)
        u->has_ua = true;
    if (kind == UD_STRONG)
        u->strong++;
    else
        u->other++;
}

static void ud_count(struct ud_state *u, const char *key)
{
    ud_tally(u, ud_kind_of(key));
}

/* A key (a string literal without escapes), its value and its kind. */
#define UD_SCALAR(u, key, kind, s, n) ud_scalar(u, "\"" key "\":", sizeof(key) + 2, kind, s, n)

static void ud_scalar(struct ud_state *u, const char *key_json, size_t key_len, enum ud_kind kind,
                      const char *s, size_t n)
{
    ud_key_json(u, key_json, key_len);
    capid_buf_json_str(u->b, s, n);
    ud_tally(u, kind);
}

/* Keys whose values repeat across events (a few hundred countries, states,
 * genders; cities and zips follow the population): their digests are
 * remembered in the mapper's memo under the raw value, so that a repeat
 * skips normalisation and hashing. The normalised value depends on the raw
 * one alone, except zp, which also depends on whether the event's country is
 * "us" (norm_zp): two tags. Not e-mail, phone, external_id or birth date
 * (nearly unique per person: they would only evict), not the names (a memo
 * keeps its keys after the event is mapped, and raw names live only while an
 * event is mapped, docs/ARCHITECTURE.md). Returns the tag, or 0 for no memo. */
static unsigned char memo_tag(enum capid_ukey k, const struct capid_norm_ctx *ctx)
{
    switch (k) {
    case CAPID_UK_GE:
    case CAPID_UK_CT:
    case CAPID_UK_ST:
    case CAPID_UK_COUNTRY:
        return (unsigned char)(1 + 2 * k);
    case CAPID_UK_ZP:
        return (unsigned char)(1 + 2 * k + (ctx && ctx->country && !strcmp(ctx->country, "us")));
    default:
        return 0;
    }
}

/* Adds one value (normalised + hashed, or raw) to the current key's list. */
static void add_value(struct ud_state *u, enum capid_ukey k, const char *s, size_t n,
                      const struct capid_norm_ctx *ctx, bool raw, bool digest_only)
{
    struct capid_mapper *m = u->m;
    char hex[65];
    const char *v;
    size_t vlen;

    if (u->nvalues == MAX_VALUES)
        return;
    if (raw) {
        trim_space(&s, &n);
        if (!n || n > 64) { /* raw ids longer than a digest are cut from the list */
            m->stats.dropped_value[k]++;
            return;
        }
        v = s, vlen = n;
    } else if (digest_only) {
        trim_space(&s, &n);
        if (!capid_is_hex64(s, n)) {
            m->stats.dropped_value[k]++;
            return;
        }
        for (size_t i = 0; i < 64; i++)
            hex[i] = (char)(s[i] >= 'A' && s[i] <= 'F' ? s[i] + 32 : s[i]);
        hex[64] = '\0';
        v = hex, vlen = 64;
    } else {
        /* A memo hit skips normalisation and hashing. */
        unsigned char tag = memo_tag(k, ctx);
        if (!tag || !capid_sha256_memo_get(m->memo, tag, s, n, hex)) {
            bool hashed = false;
            if (!capid_norm_value(k, s, n, ctx, &m->norm, &hashed)) {
                m->stats.dropped_value[k]++;
                return;
            }
            if (hashed) {
                memcpy(hex, m->norm.data, 64);
                hex[64] = '\0';
            } else if (tag) {
                capid_sha256_memo_put(&m->sha, m->memo, tag, s, n, m->norm.data, m->norm.len, hex);
            } else {
                capid_sha256_hex(&m->sha, m->norm.data, m->norm.len, hex);
            }
        }
        v = hex, vlen = 64;
    }
    for (size_t i = 0; i < u->nvalues; i++)
        if (u->vlens[i] == vlen && memcmp(u->values[i], v, vlen) == 0)
            return;
    memcpy(u->values[u->nvalues], v, vlen);
    u->values[u->nvalues][vlen] = '\0';
    u->digest[u->nvalues] = v == hex;
    u->vlens[u->nvalues++] = vlen;
}

static void add_values(struct ud_state *u, enum capid_ukey k, const cJSON *src,
                       const struct capid_norm_ctx *ctx, bool raw, bool digest_only)
{
    char num[32];
    const char *s;
    size_t n;
    if (j_type(src, cJSON_Array)) {
        for (const cJSON *c = src->child; c; c = c->next)
            if (capid_jtext(c, &s, &n, num))
                add_value(u, k, s, n, ctx, raw, digest_only);
            else if (present(c))
                u->m->stats.dropped_value[k]++;
    } else if (capid_jtext(src, &s, &n, num)) {
        add_value(u, k, s, n, ctx, raw, digest_only);
    } else if (present(src)) {
        u->m->stats.dropped_value[k]++;
    }
}

static void flush_values(struct ud_state *u, enum capid_ukey k)
{
    if (!u->nvalues)
        return;
    ud_key_json(u, ukey_json[k], ukey_json_len[k]);
    capid_buf_putc(u->b, '[');
    for (size_t i = 0; i < u->nvalues; i++) {
        if (i)
            capid_buf_putc(u->b, ',');
        if (u->digest[i]) {
            capid_buf_putc(u->b, '"');
            capid_buf_append(u->b, u->values[i], 64);
            capid_buf_putc(u->b, '"');
        } else {
            capid_buf_json_str(u->b, u->values[i], u->vlens[i]);
        }
    }
    capid_buf_putc(u->b, ']');
    ud_tally(u, ukey_kind[k]);
}

/* The event's country, normalised (for the zp rule of SPEC 5). */
static const char *event_country(struct capid_mapper *m, const cJSON *src, int max_year,
                                 char out[8])
{
    struct capid_norm_ctx ctx = {NULL, max_year};
    const cJSON *v = j_type(src, cJSON_Array) ? src->child : src;
    char num[32];
    const char *s;
    size_t n;
    bool hashed = false;
    if (!capid_jtext(v, &s, &n, num) ||
        !capid_norm_value(CAPID_UK_COUNTRY, s, n, &ctx, &m->norm, &hashed) || hashed ||
        m->norm.len >= 8)
        return NULL;
    memcpy(out, m->norm.data, m->norm.len + 1);
    return out;
}

static bool is_known_ud_key(const char *k)
{
    static const char *const known[] = {"client_ip_address", "client_user_agent", "fbp",  "fbc",
                                        "fb_login_id",       "anon_id",           "madid"};
    if (capid_ukey_from_name(k, strlen(k)) >= 0)
        return true;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (!strcmp(k, known[i]))
            return true;
    return false;
}

static void build_user_data(struct ud_state *u, const struct capid_dest *d, struct capid_event *ev,
                            const struct members *mb, int64_t event_time, const char *source_url,
                            int max_year)
{
    struct capid_mapper *m = u->m;
    const cJSON *ov = capid_jget(ev->fb_int, "user_data");
    if (!j_type(ov, cJSON_Object))
        ov = NULL;
    char cbuf[8];
    const cJSON *csrc =
        present(capid_jget(ov, "country")) ? capid_jget(ov, "country") : mb->user[U_COUNTRY];
    struct capid_norm_ctx ctx = {event_country(m, csrc, max_year, cbuf), max_year};

    for (size_t i = 0; i < sizeof(user_keys) / sizeof(user_keys[0]); i++) {
        enum capid_ukey k = user_keys[i].key;
        bool raw = k == CAPID_UK_EXTERNAL_ID && d->external_id == CAPID_EXTID_RAW;
        const cJSON *o = ov ? capid_jget(ov, capid_ukey_name(k)) : NULL;
        u->nvalues = 0;
        if (present(o)) {
            add_values(u, k, o, &ctx, raw, false);
        } else {
            add_values(u, k, mb->user[2 * i], &ctx, raw, false);
            if (!u->nvalues && !raw)
                add_values(u, k, mb->user[2 * i + 1], &ctx, false, true);
        }
        flush_values(u, k);
    }

    char num[32];
    const char *s;
    size_t n;
    const cJSON *v;

    /* client_ip_address: trimmed, a valid IPv4/IPv6 literal or dropped. */
    v = first_of(capid_jget(ov, "client_ip_address"), mb->device[D_IP], NULL);
    if (v && capid_jtext(v, &s, &n, num)) {
        trim_space(&s, &n);
        if (ip_valid(s, n))
            UD_SCALAR(u, "client_ip_address", UD_OTHER, s, n);
        else
            m->stats.dropped_value[CAPID_DROPPED_IP]++;
    } else if (v) {
        m->stats.dropped_value[CAPID_DROPPED_IP]++;
    }

    v = first_of(capid_jget(ov, "client_user_agent"), mb->device[D_USER_AGENT], NULL);
    if (jstr(v) && v->valuestring[0])
        UD_SCALAR(u, "client_user_agent", UD_UA, v->valuestring, capid_jstr_len(v));

    const char *cookie = jstr(mb->device[D_COOKIE]);
    if (!cookie)
        cookie = jstr(mb->context[C_COOKIE]);
    static const char *const fbx[2] = {"fbp", "fbc"};
    static const char *const fbx_json[2] = {"\"fbp\":", "\"fbc\":"};
    static const char *const fbx_cookie[2] = {"_fbp", "_fbc"};
    const char *cookie_val[2];
    size_t cookie_len[2];
    bool in_cookie[2], cookie_read = false;
    for (int i = 0; i < 2; i++) {
        v = first_of(capid_jget(ov, fbx[i]), capid_jget(ev->fb_int, fbx[i]), mb->root[R_FBP + i]);
        bool have = false;
        if (!v && cookie && !cookie_read) {
            cookie_get2(cookie, fbx_cookie, cookie_val, cookie_len, in_cookie);
            cookie_read = true;
        }
        if (v) {
            have = capid_jtext(v, &s, &n, num);
        } else if (cookie && in_cookie[i]) {
            s = cookie_val[i];
            n = cookie_len[i];
            have = true;
        } else if (i == 1 && source_url && fbclid_of(source_url, &s, &n) && n) {
            /* SPEC 4.3: fb.1.<event_time in ms>.<fbclid>, fbclid byte for byte. */
            struct capid_buf *t = &m->norm;
            capid_buf_reset(t);
            capid_buf_printf(t, "fb.1.%lld.", (long long)event_time * 1000);
            capid_buf_append(t, s, n);
            UD_SCALAR(u, "fbc", UD_STRONG, t->data, t->len);
            continue;
        } else {
            continue;
        }
        if (have && fbx_valid(s, n))
            ud_scalar(u, fbx_json[i], 6, UD_STRONG, s, n);
        else
            m->stats.dropped_value[CAPID_DROPPED_FBP + i]++;
    }

    v = first_of(capid_jget(ov, "fb_login_id"), capid_jget(ev->fb_partner, "fb_login_id"), NULL);
    if (v && (j_type(v, cJSON_String) || j_type(v, cJSON_Number))) {
        ud_key_json(u, "\"fb_login_id\":", 14);
        capid_json_write(u->b, v);
        ud_tally(u, UD_OTHER);
    }

    if (d->app_tracking) {
        static const char *const app_ids[2] = {"anon_id", "madid"};
        static const char *const app_ids_json[2] = {"\"anon_id\":", "\"madid\":"};
        for (int i = 0; i < 2; i++) {
            v = first_of(capid_jget(ov, app_ids[i]), mb->device[D_ADVERTISING_ID], NULL);
            if (capid_jtext(v, &s, &n, num) && n)
                ud_scalar(u, app_ids_json[i], strlen(app_ids_json[i]), UD_OTHER, s, n);
        }
    }

    /* Any other override key is passed through as given (scalars only). */
    for (const cJSON *c = ov ? ov->child : NULL; c; c = c->next) {
        if (is_known_ud_key(c->string) ||
            !(j_type(c, cJSON_String) || j_type(c, cJSON_Number) || j_bool(c)))
            continue;
        ud_key(u, c->string);
        capid_json_write(u->b, c);
        ud_count(u, c->string);
    }
}

/* ---- custom_data ----------------------------------------------------- */

enum cd_type { CD_STR, CD_NUM, CD_OTHER };

struct cd_entry {
    const char *key;
    size_t klen, voff, vlen;
    enum cd_type type;
    bool deleted;
};

struct cd_state {
    struct capid_buf *b; /* rendered values */
    struct cd_entry *e;
    size_t n, cap;
};

/* Keys are passed with their length: KEY("value") for a literal. */
#define KEY(literal) literal, sizeof(literal) - 1

static struct cd_entry *cd_find(struct cd_state *c, const char *key, size_t klen)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i].klen == klen && mem_eq(c->e[i].key, key, klen))
            return &c->e[i];
    return NULL;
}

/* Starts (re)setting key, or adding it when fresh (known not to be set):
 * the caller then appends the value's JSON to c->b. */
static struct cd_entry *cd_start(struct cd_state *c, const char *key, size_t klen,
                                 enum cd_type type, bool fresh)
{
    struct cd_entry *e = fresh ? NULL : cd_find(c, key, klen);
    if (!e) {
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 32;
            struct cd_entry *p = realloc(c->e, cap * sizeof(*p));
            if (!p)
                abort(); /* bounded by the event size cap */
            c->e = p;
            c->cap = cap;
        }
        e = &c->e[c->n++];
        e->key = key;
        e->klen = klen;
    }
    e->voff = c->b->len;
    e->type = type;
    e->deleted = false;
    return e;
}

static struct cd_entry *cd_begin(struct cd_state *c, const char *key, size_t klen,
                                 enum cd_type type)
{
    return cd_start(c, key, klen, type, false);
}

static void cd_end(struct cd_state *c, struct cd_entry *e)
{
    e->vlen = c->b->len - e->voff;
}

static void cd_delete(struct cd_state *c, const char *key, size_t klen)
{
    struct cd_entry *e = cd_find(c, key, klen);
    if (e)
        e->deleted = true;
}

static void cd_set_str(struct cd_state *c, const char *key, size_t klen, const char *s, size_t n)
{
    struct cd_entry *e = cd_begin(c, key, klen, CD_STR);
    capid_buf_json_str(c->b, s, n);
    cd_end(c, e);
}

static void cd_set_num(struct cd_state *c, const char *key, size_t klen, double v)
{
    struct cd_entry *e = cd_begin(c, key, klen, CD_NUM);
    capid_buf_json_num(c->b, v);
    cd_end(c, e);
}

/* A member of the event under its own key (klen bytes). */
static void cd_put_json(struct cd_state *c, const cJSON *v, size_t klen, bool fresh)
{
    enum cd_type t = j_type(v, cJSON_String) ? CD_STR : j_type(v, cJSON_Number) ? CD_NUM : CD_OTHER;
    struct cd_entry *e = cd_start(c, v->string, klen, t, fresh);
    capid_json_write(c->b, v);
    cd_end(c, e);
}

static void cd_set_json(struct cd_state *c, const cJSON *v)
{
    cd_put_json(c, v, capid_jkey_len(v), false);
}

/* SPEC 4.4 PII guard: an e-mail address (x@y.z). */
static bool looks_like_email(const char *s, size_t n)
{
    const char *at = memchr(s, '@', n);
    if (!at || at == s)
        return false;
    const char *dom = at + 1;
    size_t dn = n - (size_t)(dom - s);
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ' || s[i] == '\t' || (s + i != at && s[i] == '@'))
            return false;
    const char *dot = memchr(dom, '.', dn);
    return dot && dot > dom && dot < dom + dn - 1;
}

/* SPEC 4.4 PII guard: + then 8 to 15 digits, ignoring spaces . - ( ). */
static bool looks_like_e164(const char *s, size_t n)
{
    if (!n || s[0] != '+')
        return false;
    int digits = 0;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9')
            digits++;
        else if (c != ' ' && c != '.' && c != '-' && c != '(' && c != ')')
            return false;
    }
    return digits >= 8 && digits <= 15;
}

static bool pii_guard(const char *s, size_t n)
{
    trim_ascii(&s, &n);
    return looks_like_email(s, n) || looks_like_e164(s, n);
}

/* SPEC 4.4: a product field, else the item's (else its ikey2 field). */
static const cJSON *item_field(const cJSON *pv, const cJSON *iv, const cJSON *iv2)
{
    if (present(pv))
        return pv;
    if (present(iv) || !iv2)
        return iv;
    return iv2;
}

/* contents and content_ids, in one pass over the items: contents is written
 * in place to c->b, the ids to m->scratch. Also finds the first product
 * name and category for content_name and content_category (*name, *cat:
 * left as they are when already set). */
static void build_contents(struct capid_mapper *m, const struct capid_event *ev, struct cd_state *c,
                           const char **name, const char **cat)
{
    struct capid_buf *ids = &m->scratch;
    size_t start = c->b->len, count = 0;
    const cJSON *iv[I__COUNT], *pv[PR__COUNT];
    char num[32];
    const char *s;
    size_t n;
    double q;

    capid_buf_reset(ids);
    capid_buf_putc(ids, '[');
    capid_buf_putc(c->b, '[');
    for (const cJSON *it = ev->items ? ev->items->child : NULL; it; it = it->next) {
        FETCH(&item_ks, it, iv);
        FETCH(&product_ks, iv[I_PRODUCT], pv); /* all NULL unless an object */
        if (!*name && jstr(pv[PR_NAME]))
            *name = pv[PR_NAME]->valuestring;
        for (int i = 0; i < 5 && !*cat; i++)
            *cat = jstr(pv[PR_CATEGORY_1 + i]);
        if (!capid_jtext(item_field(pv[PR_ID], iv[I_ID], NULL), &s, &n, num) || !n)
            continue;
        if (count++) {
            capid_buf_putc(c->b, ',');
            capid_buf_putc(ids, ',');
        }
        capid_buf_append(c->b, "{\"id\":", 6);
        capid_buf_json_str(c->b, s, n);
        capid_buf_json_str(ids, s, n);
        if (capid_jnum(item_field(pv[PR_QUANTITY], iv[I_QUANTITY], iv[I_ITEM_QUANTITY]), &q)) {
            capid_buf_append(c->b, ",\"quantity\":", 12);
            capid_buf_json_num(c->b, q);
        }
        if (capid_jnum(item_field(pv[PR_PRICE], iv[I_PRICE], NULL), &q)) {
            capid_buf_append(c->b, ",\"item_price\":", 14);
            capid_buf_json_num(c->b, q);
        }
        capid_buf_putc(c->b, '}');
    }
    if (!count) {
        c->b->len = start;
        if (c->b->data)
            c->b->data[start] = '\0';
        return;
    }
    capid_buf_putc(c->b, ']');
    capid_buf_putc(ids, ']');
    struct cd_entry *e = cd_begin(c, KEY("contents"), CD_OTHER);
    e->voff = start;
    cd_end(c, e);
    e = cd_begin(c, KEY("content_ids"), CD_OTHER);
    capid_buf_append(c->b, ids->data, ids->len);
    cd_end(c, e);
}

static void build_custom_data(struct capid_mapper *m, const struct capid_dest *d,
                              const struct capid_event *ev, const struct members *mb,
                              struct cd_state *c)
{
    char num[32];
    const char *s;
    size_t n;
    double x;

    /* Step 1: top-level scalars, except reserved keys and PII. The keys of
     * an event are distinct (event.c), so each is a new entry. */
    unsigned pos = 0;
    for (const cJSON *v = ev->root->child; v; v = v->next, pos++) {
        int i;
        size_t klen;
        if (pos < mb->root_seen) {
            i = mb->root_idx[pos];
            klen = mb->root_klen[pos];
        } else {
            klen = strlen(v->string);
            i = ks_index_n(&root_ks, v->string, klen);
        }
        if ((unsigned)i < R__RESERVED)
            continue;
        if (j_type(v, cJSON_String)) {
            if (pii_guard(v->valuestring, capid_jstr_len(v))) {
                m->stats.pii_guarded++;
                continue;
            }
            cd_put_json(c, v, klen, true);
        } else if (j_type(v, cJSON_Number) || j_bool(v)) {
            cd_put_json(c, v, klen, true);
        }
    }

    /* Step 2: standard mappings. */
    const cJSON *v = mb->root[R_VALUE];
    /* A finite number is already there as step 1 wrote it: the same bytes. */
    if (present(v) && !(j_type(v, cJSON_Number) && isfinite(v->valuedouble))) {
        if (capid_jnum(v, &x))
            cd_set_num(c, KEY("value"), x);
        else
            cd_delete(c, KEY("value"));
    }
    v = mb->root[R_CURRENCY];
    if (present(v)) {
        char cur[4];
        s = jstr(v);
        n = s ? strlen(s) : 0;
        if (s)
            trim_space(&s, &n);
        if (n == 3) {
            for (int i = 0; i < 3; i++)
                cur[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 32 : s[i]);
            cur[3] = '\0';
        }
        if (n == 3 && capid_currency_valid(cur, 3))
            cd_set_str(c, KEY("currency"), cur, 3);
        else
            cd_delete(c, KEY("currency"));
    }
    if (capid_jtext(mb->root[R_ID], &s, &n, num) && n)
        cd_set_str(c, KEY("order_id"), s, n);
    if (capid_jtext(mb->root[R_STATUS], &s, &n, num))
        cd_set_str(c, KEY("status"), s, n);
    if (capid_jtext(mb->root[R_SEARCH_TERM], &s, &n, num))
        cd_set_str(c, KEY("search_string"), s, n);
    if (capid_jnum(capid_jget(ev->fb_partner, "net_revenue"), &x))
        cd_set_num(c, KEY("net_revenue"), x);

    const char *name = jstr(mb->root[R_NAME]);
    const char *cat = jstr(mb->root[R_CATEGORY]);
    build_contents(m, ev, c, &name, &cat);
    if (name)
        cd_set_str(c, KEY("content_name"), name, strlen(name));
    if (cat)
        cd_set_str(c, KEY("content_category"), cat, strlen(cat));
    if (cd_find(c, KEY("contents")) && d->content_type != CAPID_CT_NONE) {
        const char *ct = d->content_type == CAPID_CT_PRODUCT ? "product" : "product_group";
        cd_set_str(c, KEY("content_type"), ct, strlen(ct));
    }

    /* Step 3: integrations.facebook.custom_data overrides; null removes. */
    const cJSON *ov = capid_jget(ev->fb_int, "custom_data");
    for (const cJSON *o = j_type(ov, cJSON_Object) ? ov->child : NULL; o; o = o->next) {
        if (j_type(o, cJSON_NULL))
            cd_delete(c, o->string, strlen(o->string));
        else
            cd_set_json(c, o);
    }
}

/* ---- app_data (SPEC 4.6) --------------------------------------------- */

static void write_flag(struct capid_buf *b, const char *key, const cJSON *v, bool *first)
{
    double x;
    int on = -1;
    if (j_bool(v))
        on = j_type(v, cJSON_True);
    else if (capid_jnum(v, &x))
        on = x != 0;
    else if (jstr(v) && (!strcmp(v->valuestring, "true") || !strcmp(v->valuestring, "false")))
        on = v->valuestring[0] == 't';
    if (on < 0)
        return;
    if (!*first)
        capid_buf_putc(b, ',');
    *first = false;
    capid_buf_json_str(b, key, strlen(key));
    capid_buf_puts(b, on ? ":true" : ":false");
}

static void build_app_data(struct capid_buf *b, const struct capid_event *ev,
                           const struct members *mb)
{
    static const char *const paths[15] = {
        "app.namespace",         "app.build",
        "app.version",           "device.os.version",
        "device.model",          "device.language",
        "device.timezone_short", "device.network.carrier",
        "device.screen.width",   "device.screen.height",
        "device.screen.density", "device.cpu_core",
        "device.storage",        "device.ex_storage",
        "device.timezone",
    };
    bool first = true;
    char num[32];
    const char *s;
    size_t n;

    capid_buf_puts(b, ",\"app_data\":{");
    write_flag(b, "advertiser_tracking_enabled", mb->device[D_AD_TRACKING_ENABLED], &first);
    write_flag(b, "application_tracking_enabled", mb->device[D_APPLICATION_TRACKING_ENABLED],
               &first);
    if (!first)
        capid_buf_putc(b, ',');
    capid_buf_puts(b, "\"extinfo\":[");
    const char *type = jstr(mb->device[D_TYPE]);
    const char *tag = type && !strcasecmp(type, "android") ? "a2"
                      : type && !strcasecmp(type, "ios")   ? "i2"
                                                           : "";
    capid_buf_json_str(b, tag, strlen(tag));
    for (int i = 0; i < 15; i++) {
        capid_buf_putc(b, ',');
        if (capid_jtext(capid_jpath(ev->context, paths[i]), &s, &n, num))
            capid_buf_json_str(b, s, n);
        else
            capid_buf_puts(b, "\"\"");
    }
    capid_buf_puts(b, "]}");
}

/* ---- the event ------------------------------------------------------- */

static void skip(struct capid_mapper *m, struct capid_mapped *out, enum capid_reason r,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void skip(struct capid_mapper *m, struct capid_mapped *out, enum capid_reason r,
                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
    va_end(ap);
    out->reason = r;
    m->stats.skipped[r]++;
    capid_buf_reset(&out->json); /* a skipped event has no JSON */
}

static const char *map_name(const struct capid_dest *d, const char *name)
{
    for (size_t i = 0; i < d->n_event_names; i++)
        if (d->event_names[i].from[0] == name[0] && !strcmp(d->event_names[i].from, name))
            return d->event_names[i].to;
    for (size_t i = 0; i < sizeof(seed_names) / sizeof(seed_names[0]); i++)
        if (seed_names[i].from[0] == name[0] && !strcmp(seed_names[i].from, name))
            return seed_names[i].to;
    return name;
}

static bool consent_given(const cJSON *cats, const char *want)
{
    char num[32];
    const char *s;
    size_t n, wn = strlen(want);
    if (j_type(cats, cJSON_Array)) {
        for (const cJSON *c = cats->child; c; c = c->next) {
            if (capid_jtext(c, &s, &n, num)) {
                trim_space(&s, &n);
                if (n == wn && !memcmp(s, want, n))
                    return true;
            }
        }
        return false;
    }
    if (!capid_jtext(cats, &s, &n, num))
        return false;
    /* A comma-separated string, or a single number. */
    while (n) {
        const char *comma = memchr(s, ',', n);
        size_t seg = comma ? (size_t)(comma - s) : n;
        const char *t = s;
        size_t tn = seg;
        trim_space(&t, &tn);
        if (tn == wn && !memcmp(t, want, tn))
            return true;
        if (!comma)
            break;
        s += seg + 1, n -= seg + 1;
    }
    return false;
}

static void put_key(struct capid_buf *b, const char *key)
{
    capid_buf_putc(b, ',');
    capid_buf_json_str(b, key, strlen(key));
    capid_buf_putc(b, ':');
}

/* put_key of a string literal that needs no escaping. */
#define PUT_KEY(b, key) capid_buf_append(b, ",\"" key "\":", sizeof(key) + 3)

int capid_map_event(struct capid_mapper *m, const struct capid_dest *d, struct capid_event *ev,
                    int64_t now, struct capid_mapped *out)
{
    struct capid_buf *o = &out->json;
    struct members mb; /* FETCH and fetch_root fill every slot they are given before use */
    char num[32];
    const char *s;
    size_t n;

    capid_buf_reset(o);
    out->reason = CAPID_R_NONE;
    out->detail[0] = '\0';
    out->event_time = ev->event_time;
    out->id_time = CAPID_NO_ID_TIME;
    FETCH(&user_ks, ev->user, mb.user);

    /* Gate 1: consent (SPEC 4.5). */
    if (d->consent_category) {
        // cppcheck-suppress uninitvar ; FETCH zeroed every user slot above
        const cJSON *cats = mb.user[U_CONSENT];
        if (!present(cats)) {
            skip(m, out, CAPID_R_NO_CONSENT,
                 "user.consent_categories is missing; category '%s' is required",
                 d->consent_category);
            return CAPID_OK;
        }
        if (!consent_given(cats, d->consent_category)) {
            skip(m, out, CAPID_R_NO_CONSENT, "consent category '%s' not in user.consent_categories",
                 d->consent_category);
            return CAPID_OK;
        }
    }

    fetch_root(ev->root, &mb);
    FETCH(&device_ks, ev->device, mb.device);
    FETCH(&page_ks, ev->page, mb.page);
    FETCH(&context_ks, ev->context, mb.context);

    /* Root fields (SPEC 4.1). */
    const char *name = jstr(capid_jget(ev->fb_int, "event_name"));
    if (!name || !*name)
        name = map_name(d, mb.root[R_EVENT_NAME]->valuestring);
    out->event_name = name;

    const char *id = NULL;
    size_t id_len;
    const cJSON *idv =
        first_of(capid_jget(ev->fb_int, "event_id"), mb.root[R_EVENT_ID], mb.context[C_EVENT_ID]);
    if (idv && capid_jtext(idv, &s, &n, num) && n) {
        if (s == num) { /* numeric id: copy out of the stack buffer */
            snprintf(out->id_buf, sizeof(out->id_buf), "%s", num);
            s = out->id_buf;
        }
        id = s;
        id_len = n;
    } else {
        id = capid_event_auto_id(ev, &m->sha, &m->scratch);
        id_len = strlen(id);
        if (ev->has_time)
            out->id_time = ev->event_time;
    }
    out->event_id = id;

    const char *as = jstr(capid_jget(ev->fb_int, "action_source"));
    if (!as)
        as = d->app_tracking ? "app"
             : (jstr(mb.root[R_TYPE]) && !strcmp(jstr(mb.root[R_TYPE]), "offline"))
                 ? "physical_store"
                 : "website";
    out->action_source = as;

    const cJSON *urlv =
        first_of(mb.page[P_URL], capid_jget(mb.page[P_LOCATION], "href"), mb.root[R_URL]);
    const char *url = jstr(urlv) && urlv->valuestring[0] ? urlv->valuestring : NULL;
    const cJSON *refv = first_of(mb.page[P_REFERRER], mb.root[R_REFERRER], NULL);
    const char *ref = jstr(refv) && refv->valuestring[0] ? refv->valuestring : NULL;
    size_t url_len = url ? capid_jstr_len(urlv) : 0, ref_len = ref ? capid_jstr_len(refv) : 0;

    if (!m->year_known || m->year_of != now) { /* gmtime_r once per clock value */
        struct tm tm;
        time_t tnow = (time_t)now;
        gmtime_r(&tnow, &tm);
        m->max_year = tm.tm_year + 1900 + 1;
        m->year_of = now;
        m->year_known = true;
    }
    int max_year = m->max_year;

    /* The event up to user_data, which is written in place: a skip below
     * empties o again. */
    capid_buf_puts(o, "{\"event_name\":");
    capid_buf_json_str(o, name, strlen(name));
    capid_buf_puts(o, ",\"event_time\":");
    capid_buf_json_int(o, ev->event_time);
    PUT_KEY(o, "event_id");
    capid_buf_json_str(o, id, id_len);
    PUT_KEY(o, "action_source");
    capid_buf_json_str(o, as, strlen(as));
    if (url) {
        PUT_KEY(o, "event_source_url");
        capid_buf_json_str(o, url, url_len);
    }
    if (ref) {
        PUT_KEY(o, "referrer_url");
        capid_buf_json_str(o, ref, ref_len);
    }
    const cJSON *opt = capid_jget(ev->fb_int, "opt_out");
    if (j_bool(opt)) {
        PUT_KEY(o, "opt_out");
        capid_buf_puts(o, j_type(opt, cJSON_True) ? "true" : "false");
    }
    const cJSON *dpo = capid_jget(ev->fb_int, "data_processing_options");
    if (j_type(dpo, cJSON_Array)) {
        PUT_KEY(o, "data_processing_options");
        capid_json_write(o, dpo);
    } else if (d->limited_data_use) {
        PUT_KEY(o, "data_processing_options");
        capid_buf_puts(o, "[\"LDU\"]");
    }
    static const char *const dpo_keys[2] = {"data_processing_options_country",
                                            "data_processing_options_state"};
    for (int i = 0; i < 2; i++) {
        double x;
        const cJSON *dv = capid_jget(ev->fb_int, dpo_keys[i]);
        if (capid_jnum(dv, &x)) {
            put_key(o, dpo_keys[i]);
            capid_buf_json_num(o, x);
        } else if (d->limited_data_use) {
            put_key(o, dpo_keys[i]);
            capid_buf_putc(o, '0');
        }
    }
    PUT_KEY(o, "user_data");
    capid_buf_putc(o, '{');

    /* user_data, then gate 2: match keys. */
    struct ud_state u; /* not u = {...}: values need no zeroing */
    u.m = m;
    u.b = o;
    u.start = o->len;
    u.strong = u.other = 0;
    u.has_ua = false;
    u.nvalues = 0;
    build_user_data(&u, d, ev, &mb, ev->event_time, url, max_year);
    capid_buf_putc(o, '}');
    if (u.strong < d->min_strong_keys && u.other < d->min_other_keys) {
        skip(m, out, CAPID_R_INSUFFICIENT_MATCH_KEYS,
             "%d strong and %d other user_data keys; need %d strong or %d other", u.strong, u.other,
             d->min_strong_keys, d->min_other_keys);
        return CAPID_OK;
    }

    struct cd_state c = {.b = &m->cd, .e = m->cd_entries, .cap = m->cd_cap};
    capid_buf_reset(&m->cd);
    build_custom_data(m, d, ev, &mb, &c);

    /* Gate 3: CAPI validity, in SPEC 4.5 order. */
    m->cd_entries = c.e; /* keep the grown array for the next event */
    m->cd_cap = c.cap;
    bool has_ua = u.has_ua;
    struct cd_entry *val = cd_find(&c, KEY("value")), *cur = cd_find(&c, KEY("currency"));
    int64_t age_limit = strcmp(as, "physical_store") ? 7 * 86400 : 62 * 86400;
    if (!capid_action_source_valid(as))
        skip(m, out, CAPID_R_INVALID_EVENT, "action_source '%.40s' is not one of Meta's values",
             as);
    else if (!strcmp(as, "website") && !has_ua)
        skip(m, out, CAPID_R_MISSING_USER_AGENT, "website event without context.device.user_agent");
    else if (!strcmp(as, "website") && !url)
        skip(m, out, CAPID_R_MISSING_SOURCE_URL, "website event without context.page.url");
    else if (!strcmp(name, "Purchase") && (!val || val->deleted || val->type != CD_NUM || !cur ||
                                           cur->deleted || cur->type != CD_STR))
        skip(m, out, CAPID_R_PURCHASE_WITHOUT_VALUE,
             "Purchase needs a numeric value and an ISO 4217 currency");
    else if (now - ev->event_time > age_limit)
        skip(m, out, CAPID_R_EVENT_TOO_OLD, "event_time %lld is %lld s old; the limit is %lld s",
             (long long)ev->event_time, (long long)(now - ev->event_time), (long long)age_limit);
    else if (ev->event_time - now > 600)
        skip(m, out, CAPID_R_EVENT_IN_FUTURE, "event_time %lld is %lld s in the future",
             (long long)ev->event_time, (long long)(ev->event_time - now));
    if (out->reason != CAPID_R_NONE)
        return CAPID_OK;

    bool first = true;
    for (size_t i = 0; i < c.n; i++) {
        if (c.e[i].deleted)
            continue;
        if (first)
            PUT_KEY(o, "custom_data"), capid_buf_putc(o, '{');
        else
            capid_buf_putc(o, ',');
        first = false;
        capid_buf_json_str(o, c.e[i].key, c.e[i].klen);
        capid_buf_putc(o, ':');
        capid_buf_append(o, m->cd.data + c.e[i].voff, c.e[i].vlen);
    }
    if (!first)
        capid_buf_putc(o, '}');

    if (d->app_tracking)
        build_app_data(o, ev, &mb);
    capid_buf_putc(o, '}');
    m->stats.mapped++;
    return CAPID_OK;
}
