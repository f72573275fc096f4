/* What Meta checks in one server event (meta-capi-spec sections 1.5, 2, 3.1
 * and 5.2), in the order issue 3 lists the rules; the first failure is the one
 * reported. Subcodes 2804003 (too old), 2804001 (fbc), 2804010 (currency) and
 * 2804019 (parameter shape) are Meta's, as seen in its responses
 * (reference/peers.md); the 28049xx ones are the simulator's own, because Meta
 * documents no complete list. capid must branch on code 100, never on them. */
#include "sim.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Whether the n bytes at k are the string literal lit. */
#define IS(k, n, lit) ((n) == sizeof(lit) - 1 && memcmp((k), (lit), sizeof(lit) - 1) == 0)

static const struct {
    int subcode;
    const char *title;
} rules[SIM_R_COUNT] = {
    [SIM_R_DATA] = {2804019, "Invalid Data Parameter"},
    [SIM_R_TOO_MANY] = {2804901, "Too Many Events"},
    [SIM_R_NOT_OBJECT] = {2804019, "Invalid Server Event"},
    [SIM_R_EVENT_NAME] = {2804902, "Missing Event Name"},
    [SIM_R_EVENT_TIME] = {2804903, "Invalid Event Timestamp"},
    [SIM_R_TOO_OLD] = {2804003, "Event Timestamp Too Old"},
    [SIM_R_FUTURE] = {2804904, "Event Timestamp In The Future"},
    [SIM_R_ACTION_SOURCE] = {2804905, "Invalid Action Source"},
    [SIM_R_USER_AGENT] = {2804906, "Missing Client User Agent"},
    [SIM_R_SOURCE_URL] = {2804907, "Missing Event Source URL"},
    [SIM_R_USER_DATA] = {2804908, "Missing User Data"},
    [SIM_R_HASHED] = {2804909, "Invalid Hashed Customer Information"},
    [SIM_R_FBC] = {2804001, "Invalid Click ID (fbc)"},
    [SIM_R_FBP] = {2804910, "Invalid Browser ID (fbp)"},
    [SIM_R_VALUE] = {2804911, "Missing Purchase Value"},
    [SIM_R_CURRENCY] = {2804010, "Missing Currency Code"},
    [SIM_R_POISON] = {2804019, "Invalid Parameter"},
};

/* Meta's action_source values (PY action_source.py, JAVA ActionSource.java). */
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

/* user_data keys that must be SHA-256 digests (meta-capi-spec 3.1). */
static const char *const hashed_keys[] = {"em", "ph", "fn", "ln", "ge",
                                          "db", "ct", "st", "zp", "country"};

int sim_rule_subcode(enum sim_rule rule)
{
    return rules[rule].subcode;
}

void sim_verr_set(struct sim_verr *e, enum sim_rule rule, const char *fmt, ...)
{
    e->subcode = rules[rule].subcode;
    e->title = rules[rule].title;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

bool sim_is_hex64(const char *s, size_t n)
{
    /* A table lookup per character: this runs for every digest of every event. */
    static const unsigned char lowerhex[256] = {
        ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
        ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    };
    if (n != 64)
        return false;
    unsigned ok = 1;
    for (size_t i = 0; i < 64; i++)
        ok &= lowerhex[(unsigned char)s[i]];
    return ok;
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

/* ParamBuilder appendix: a 2-character language token or 8 characters of
 * base64url (meta-capi-spec 5.2, 5.3). */
static bool is_appendix(const char *s, size_t n)
{
    static const char *const lang[] = {"AQ", "Ag", "Aw", "BA", "BQ", "Bg"};
    if (n == 2) {
        for (size_t i = 0; i < sizeof(lang) / sizeof(lang[0]); i++)
            if (memcmp(s, lang[i], 2) == 0)
                return true;
        return false;
    }
    if (n != 8)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* fb.<subdomainIndex>.<creationTime>.<payload>[.<appendix>]: 4 or 5 parts
 * split on '.' (ParamBuilder's cookie check, meta-capi-spec 5.2). */
bool sim_is_fb_cookie(const char *s, size_t n)
{
    const char *part[5];
    size_t len[5];
    int np = 0;
    const char *p = s, *end = s + n;
    for (;;) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (np == 5)
            return false;
        part[np] = p;
        len[np] = (size_t)((dot ? dot : end) - p);
        np++;
        if (!dot)
            break;
        p = dot + 1;
    }
    if (np < 4 || !IS(part[0], len[0], "fb"))
        return false;
    if (!all_digits(part[1], len[1]) || !all_digits(part[2], len[2]) || len[3] == 0)
        return false;
    return np == 4 || is_appendix(part[4], len[4]);
}

static bool is_action_source(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof(action_sources) / sizeof(action_sources[0]); i++)
        if (n == strlen(action_sources[i]) && memcmp(s, action_sources[i], n) == 0)
            return true;
    return false;
}

/* Whether key is one of hashed_keys (two letters, or country). */
static bool is_hashed_key(const char *k, size_t n)
{
    if (n == 2) {
        for (size_t i = 0; i < sizeof(hashed_keys) / sizeof(hashed_keys[0]) - 1; i++)
            if (k[0] == hashed_keys[i][0] && k[1] == hashed_keys[i][1])
                return true;
        return false;
    }
    return IS(k, n, "country");
}

/* The members of user_data that the rules look at (node indexes, 0 = absent). */
struct ud_view {
    uint32_t ua, fbc, fbp;
    uint32_t bad_hashed; /* first hashed key that is not an array of digests */
    int bad_index;       /* its first bad element, -1 if it is not an array */
};

/* Fills v from one pass over user_data's members; the first of duplicate
 * keys wins, as in cJSON. */
static void scan_user_data(const struct sim_jdoc *d, uint32_t ud, struct ud_view *v)
{
    memset(v, 0, sizeof(*v));
    for (uint32_t m = d->n[ud].count ? ud + 1 : 0; m; m = d->n[m].next) {
        size_t kl;
        const char *k = sim_jdoc_key(d, m, &kl);
        const struct sim_jnode *mn = &d->n[m];
        if (is_hashed_key(k, kl)) {
            if (v->bad_hashed)
                continue;
            if (mn->type != SIM_J_ARR) {
                v->bad_hashed = m;
                v->bad_index = -1;
                continue;
            }
            int i = 0;
            for (uint32_t x = mn->count ? m + 1 : 0; x; x = d->n[x].next, i++) {
                size_t len;
                const char *h = d->n[x].type == SIM_J_STR ? sim_jdoc_str(d, x, &len) : NULL;
                if (!h || !sim_is_hex64(h, len)) {
                    v->bad_hashed = m;
                    v->bad_index = i;
                    break;
                }
            }
        } else if (IS(k, kl, "fbc")) {
            v->fbc = v->fbc ? v->fbc : m;
        } else if (IS(k, kl, "fbp")) {
            v->fbp = v->fbp ? v->fbp : m;
        } else if (IS(k, kl, "client_user_agent")) {
            v->ua = v->ua ? v->ua : m;
        }
    }
}

/* Whether node i is a string of the fb cookie shape. */
static bool cookie_ok(const struct sim_jdoc *d, uint32_t i)
{
    if (d->n[i].type != SIM_J_STR)
        return false;
    size_t len;
    const char *s = sim_jdoc_str(d, i, &len); /* len is set here, not in the call below */
    return sim_is_fb_cookie(s, len);
}

/* The hashed-key and cookie rules, from a scan of user_data. */
static int check_user_data(const struct sim_jdoc *d, const struct ud_view *v, struct sim_verr *e)
{
    if (v->bad_hashed) {
        size_t kl;
        const char *k = sim_jdoc_key(d, v->bad_hashed, &kl);
        if (v->bad_index < 0)
            sim_verr_set(e, SIM_R_HASHED,
                         "user_data.%.*s must be an array of SHA-256 digests (64 lowercase hex)",
                         (int)kl, k);
        else
            sim_verr_set(e, SIM_R_HASHED,
                         "user_data.%.*s[%d] is not a SHA-256 digest (64 lowercase hex); "
                         "unhashed customer information is not accepted",
                         (int)kl, k, v->bad_index);
        return -1;
    }
    if (v->fbc && !cookie_ok(d, v->fbc)) {
        sim_verr_set(e, SIM_R_FBC,
                     "user_data.fbc must look like fb.<subdomainIndex>.<creationTime>.<fbclid>");
        return -1;
    }
    if (v->fbp && !cookie_ok(d, v->fbp)) {
        sim_verr_set(e, SIM_R_FBP,
                     "user_data.fbp must look like fb.<subdomainIndex>.<creationTime>.<random>");
        return -1;
    }
    return 0;
}

/* The top-level members the rules look at (node indexes, 0 = absent). */
struct ev_view {
    uint32_t name, time, source, url, ud, cd;
};

/* Fills v from one pass over the event's members; the first of duplicate
 * keys wins, as in cJSON. */
static void scan_event(const struct sim_jdoc *d, uint32_t ev, struct ev_view *v)
{
    memset(v, 0, sizeof(*v));
    for (uint32_t m = d->n[ev].count ? ev + 1 : 0; m; m = d->n[m].next) {
        size_t kl;
        const char *k = sim_jdoc_key(d, m, &kl);
        uint32_t *slot = NULL;
        if (IS(k, kl, "event_name"))
            slot = &v->name;
        else if (IS(k, kl, "event_time"))
            slot = &v->time;
        else if (IS(k, kl, "action_source"))
            slot = &v->source;
        else if (IS(k, kl, "event_source_url"))
            slot = &v->url;
        else if (IS(k, kl, "user_data"))
            slot = &v->ud;
        else if (IS(k, kl, "custom_data"))
            slot = &v->cd;
        if (slot && !*slot)
            *slot = m;
    }
}

/* String node i's content, or NULL if i is absent or not a string. */
static const char *str_of(const struct sim_jdoc *d, uint32_t i, size_t *len)
{
    *len = 0;
    return i && d->n[i].type == SIM_J_STR ? sim_jdoc_str(d, i, len) : NULL;
}

static bool is_currency(const char *s, size_t n)
{
    if (n != 3)
        return false;
    for (int i = 0; i < 3; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')))
            return false;
    return true;
}

/* The Purchase rules: a numeric value and a currency (issue 3, SPEC 4.5). */
static int check_purchase(const struct sim_jdoc *d, uint32_t cd, struct sim_verr *e)
{
    bool obj = cd && d->n[cd].type == SIM_J_OBJ;
    uint32_t val = obj ? sim_jdoc_member(d, cd, "value") : 0;
    if (!val || d->n[val].type != SIM_J_NUM || !isfinite(sim_jdoc_num(d, val))) {
        sim_verr_set(e, SIM_R_VALUE, "Purchase events require a numeric custom_data.value");
        return -1;
    }
    size_t len;
    const char *cur = str_of(d, obj ? sim_jdoc_member(d, cd, "currency") : 0, &len);
    if (!cur || !is_currency(cur, len)) {
        sim_verr_set(e, SIM_R_CURRENCY,
                     "Purchase events require custom_data.currency, a 3-letter ISO 4217 code");
        return -1;
    }
    return 0;
}

int sim_validate_event(const struct sim_jdoc *d, uint32_t ev, int64_t now, int64_t future_tol,
                       struct sim_verr *e)
{
    if (d->n[ev].type != SIM_J_OBJ) {
        sim_verr_set(e, SIM_R_NOT_OBJECT, "each element of data must be a server event object");
        return -1;
    }
    struct ev_view v;
    scan_event(d, ev, &v);
    size_t nlen, aslen, len;
    const char *name = str_of(d, v.name, &nlen);
    if (!name || !nlen) {
        sim_verr_set(e, SIM_R_EVENT_NAME, "event_name is required and must be a non-empty string");
        return -1;
    }
    double td = v.time && d->n[v.time].type == SIM_J_NUM ? sim_jdoc_num(d, v.time) : NAN;
    if (!isfinite(td) || td != floor(td) || fabs(td) > 9e15) {
        sim_verr_set(e, SIM_R_EVENT_TIME,
                     "event_time is required and must be an integer (Unix seconds)");
        return -1;
    }
    int64_t et = (int64_t)td;
    const char *as = str_of(d, v.source, &aslen);
    int days = as && IS(as, aslen, "physical_store") ? SIM_STORE_AGE_DAYS : SIM_MAX_AGE_DAYS;
    if (et < now - (int64_t)days * SIM_DAY) {
        sim_verr_set(e, SIM_R_TOO_OLD,
                     "The timestamp for this event is too far in the past. Events need to be "
                     "sent within %d days of when they occurred (event_time %lld, now %lld)",
                     days, (long long)et, (long long)now);
        return -1;
    }
    if (et > now + future_tol) {
        sim_verr_set(e, SIM_R_FUTURE,
                     "event_time %lld is more than %lld seconds in the future (now %lld)",
                     (long long)et, (long long)future_tol, (long long)now);
        return -1;
    }
    if (!as || !is_action_source(as, aslen)) {
        sim_verr_set(e, SIM_R_ACTION_SOURCE,
                     "action_source must be one of email, website, app, phone_call, chat, "
                     "physical_store, system_generated, business_messaging, other");
        return -1;
    }
    struct ud_view u = {0};
    bool has_ud = v.ud && d->n[v.ud].type == SIM_J_OBJ;
    if (has_ud)
        scan_user_data(d, v.ud, &u);
    if (IS(as, aslen, "website")) {
        if (!str_of(d, u.ua, &len) || !len) {
            sim_verr_set(e, SIM_R_USER_AGENT, "website events require user_data.client_user_agent");
            return -1;
        }
        if (!str_of(d, v.url, &len) || !len) {
            sim_verr_set(e, SIM_R_SOURCE_URL, "website events require event_source_url");
            return -1;
        }
    }
    if (!has_ud || !d->n[v.ud].count) {
        sim_verr_set(e, SIM_R_USER_DATA,
                     "user_data is required and must hold at least one customer information "
                     "parameter");
        return -1;
    }
    if (check_user_data(d, &u, e))
        return -1;
    if (IS(name, nlen, "Purchase") && check_purchase(d, v.cd, e))
        return -1;
    return 0;
}
