#include "capi/norm.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "capi/geo.h"
#include "util/err.h"
#include "util/utf8.h"

static const char *const ukey_names[CAPID_UK__COUNT] = {
    "em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id",
};

const char *capid_ukey_name(enum capid_ukey k)
{
    return (unsigned)k < CAPID_UK__COUNT ? ukey_names[k] : NULL;
}

int capid_ukey_from_name(const char *name, size_t len)
{
    for (int k = 0; k < CAPID_UK__COUNT; k++)
        if (strlen(ukey_names[k]) == len && memcmp(ukey_names[k], name, len) == 0)
            return k;
    return -1;
}

/* ASCII classes. Bytes below 0x80 never occur inside a multi-byte UTF-8
 * sequence, so the ASCII rules can work on bytes. */
static inline bool a_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool a_lower(unsigned char c)
{
    return c >= 'a' && c <= 'z';
}

static inline bool a_hex(unsigned char c)
{
    return a_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static inline unsigned char a_tolower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~ */
static inline bool a_punct(unsigned char c)
{
    return (c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) ||
           (c >= 0x7b && c <= 0x7e);
}

static inline bool a_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

bool capid_is_hex64(const char *s, size_t len)
{
    if (len != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!a_hex((unsigned char)s[i]))
            return false;
    return true;
}

/* Makes room for n more bytes (and the NUL) in o: the output invariant is
 * "room for everything the rest of the input can produce", checked once per
 * call and again only where a code point can grow (lowercase, NFKD). */
static inline bool room(struct capid_buf *o, size_t n)
{
    if (o->len + n < o->cap && (!o->max || o->len + n <= o->max))
        return true;
    int rc = capid_buf_grow(o, n);
    if (rc == CAPID_ENOMEM)
        abort(); /* inputs are capped; see STYLE "Errors and ownership" */
    return rc == CAPID_OK;
}

static inline int keep(struct capid_buf *o)
{
    o->data[o->len] = '\0';
    return 1;
}

static inline int drop(struct capid_buf *o)
{
    capid_buf_reset(o);
    return 0;
}

/* Trims white space (capid_is_space) from both ends of s[*b..*e). */
static void trim(const char *s, size_t *b, size_t *e)
{
    while (*b < *e) {
        unsigned char c = (unsigned char)s[*b];
        if (c < 0x80) {
            if (!a_space(c))
                break;
            (*b)++;
            continue;
        }
        size_t j = *b;
        if (!capid_is_space(capid_utf8_next(s, *e, &j)))
            break;
        *b = j;
    }
    while (*e > *b) {
        unsigned char c = (unsigned char)s[*e - 1];
        if (c < 0x80) {
            if (!a_space(c))
                break;
            (*e)--;
            continue;
        }
        size_t j = *e - 1; /* back to the lead byte */
        while (j > *b && ((unsigned char)s[j] & 0xc0) == 0x80)
            j--;
        size_t k = j;
        int32_t cp = capid_utf8_next(s, *e, &k);
        if (k != *e || !capid_is_space(cp))
            break;
        *e = j;
    }
}

/* Appends the simple lowercase of a non-ASCII code point. */
static inline bool put_lower(struct capid_buf *o, int32_t cp, size_t rest)
{
    if (!room(o, 4 + rest))
        return false;
    o->len += capid_utf8_put(utf8proc_tolower(cp), o->data + o->len);
    return true;
}

/* copy_lower() flags: the classes it deletes, and where it stops. */
enum {
    DEL_SPACE = 1, /* white space (capid_is_space) */
    DEL_PUNCT = 2, /* ASCII punctuation */
    DEL_DIGIT = 4, /* ASCII digits */
    CUT_DASH = 8,  /* stop at the first '-' */
};

/* Lowercases s[0..len) into o, deleting the classes in `del`. Returns the
 * number of code points written, or -1 if o cannot hold the result. */
static long copy_lower(const char *s, size_t len, unsigned del, struct capid_buf *o)
{
    long ncp = 0;
    if (!room(o, len))
        return -1;
    /* Written through a local pointer: a store through o->data could change
     * o->len as far as the compiler knows, which reloaded both per byte. */
    char *d = o->data + o->len;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            i++;
            if (c == '-' && (del & CUT_DASH))
                break;
            if (((del & DEL_SPACE) && a_space(c)) || ((del & DEL_PUNCT) && a_punct(c)) ||
                ((del & DEL_DIGIT) && a_digit(c)))
                continue;
            *d++ = (char)a_tolower(c);
            ncp++;
            continue;
        }
        int32_t cp = capid_utf8_next(s, len, &i);
        if ((del & DEL_SPACE) && capid_is_space(cp))
            continue;
        o->len = (size_t)(d - o->data);
        if (!put_lower(o, cp, len - i)) /* may move o->data */
            return -1;
        d = o->data + o->len;
        ncp++;
    }
    o->len = (size_t)(d - o->data);
    o->data[o->len] = '\0';
    return ncp;
}

/* PB emailUtil.js, on the lowercased value:
 * ^[\w!#$%&'*+/=?^`{|}~-]+(\.[\w!#$%&'*+/=?^`{|}~-]+)*@
 *  (?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$ */
static inline bool em_local(unsigned char c)
{
    if (a_digit(c) || a_lower(c) || (c >= 'A' && c <= 'Z'))
        return true;
    switch (c) {
    case '_':
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '/':
    case '=':
    case '?':
    case '^':
    case '`':
    case '{':
    case '|':
    case '}':
    case '~':
    case '-':
        return true;
    default:
        return false;
    }
}

static bool em_valid(const char *s, size_t n)
{
    size_t i = 0;
    for (;;) { /* local part: runs separated by single dots */
        size_t run = i;
        while (i < n && em_local((unsigned char)s[i]))
            i++;
        if (i == run)
            return false;
        if (i < n && s[i] == '.') {
            i++;
            continue;
        }
        break;
    }
    if (i >= n || s[i] != '@')
        return false;
    i++;
    int labels = 0;
    for (;;) { /* domain: >= 2 labels, no '-' at either end of a label */
        size_t lab = i;
        while (i < n &&
               (a_lower((unsigned char)s[i]) || a_digit((unsigned char)s[i]) || s[i] == '-'))
            i++;
        if (i == lab || s[lab] == '-' || s[i - 1] == '-')
            return false;
        labels++;
        if (i < n && s[i] == '.') {
            i++;
            continue;
        }
        break;
    }
    return i == n && labels >= 2;
}

static int norm_em(const char *s, size_t len, struct capid_buf *o)
{
    if (!room(o, len))
        return drop(o);
    char *d = o->data + o->len; /* a local pointer: see copy_lower */
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            *d++ = (char)a_tolower(c);
            i++;
            continue;
        }
        /* Only ASCII can match; a few letters lowercase to ASCII (K -> k). */
        int32_t lc = utf8proc_tolower(capid_utf8_next(s, len, &i));
        if (lc >= 0x80)
            return drop(o);
        *d++ = (char)lc;
    }
    o->len = (size_t)(d - o->data);
    return em_valid(o->data, o->len) ? keep(o) : drop(o);
}

/* PB phoneUtil.js: digits only, no leading zeros. */
static int norm_ph(const char *s, size_t len, struct capid_buf *o)
{
    if (!room(o, len))
        return drop(o);
    char *d = o->data + o->len; /* a local pointer: see copy_lower */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (a_digit(c) && (c != '0' || d != o->data))
            *d++ = (char)c;
    }
    o->len = (size_t)(d - o->data);
    return o->len ? keep(o) : drop(o);
}

/* PB genderUtil.js synonym sets, sorted by bytes for bsearch. */
struct gender {
    const char *word;
    unsigned char len;
    char g;
};
#define G(w, g)                                                                                    \
    {                                                                                              \
        w, sizeof(w) - 1, g                                                                        \
    }
static const struct gender genders[] = {
    G("aunt", 'f'),      G("belle", 'f'),     G("bloke", 'm'),    G("boy", 'm'),
    G("boyfriend", 'm'), G("bride", 'f'),     G("brother", 'm'),  G("chap", 'm'),
    G("chick", 'f'),     G("count", 'm'),     G("countess", 'f'), G("dad", 'm'),
    G("daddy", 'm'),     G("dame", 'f'),      G("daughter", 'f'), G("duchess", 'f'),
    G("dude", 'm'),      G("duke", 'm'),      G("emperor", 'm'),  G("empress", 'f'),
    G("f", 'f'),         G("father", 'm'),    G("fellow", 'm'),   G("female", 'f'),
    G("gal", 'f'),       G("gentleman", 'm'), G("girl", 'f'),     G("girlfriend", 'f'),
    G("god", 'm'),       G("goddess", 'f'),   G("groom", 'm'),    G("guy", 'm'),
    G("he", 'm'),        G("her", 'f'),       G("hers", 'f'),     G("herself", 'f'),
    G("him", 'm'),       G("himself", 'm'),   G("his", 'm'),      G("husband", 'm'),
    G("king", 'm'),      G("lad", 'm'),       G("lady", 'f'),     G("lass", 'f'),
    G("lord", 'm'),      G("m", 'm'),         G("ma'am", 'f'),    G("madam", 'f'),
    G("maiden", 'f'),    G("male", 'm'),      G("mama", 'f'),     G("man", 'm'),
    G("miss", 'f'),      G("mister", 'm'),    G("mom", 'f'),      G("mommy", 'f'),
    G("mother", 'f'),    G("mr", 'm'),        G("mrs", 'f'),      G("ms", 'f'),
    G("nephew", 'm'),    G("niece", 'f'),     G("papa", 'm'),     G("prince", 'm'),
    G("princess", 'f'),  G("queen", 'f'),     G("she", 'f'),      G("sir", 'm'),
    G("sister", 'f'),    G("son", 'm'),       G("uncle", 'm'),    G("widow", 'f'),
    G("widower", 'm'),   G("wife", 'f'),      G("woman", 'f'),
};
#undef G
#define GENDER_MAX 10 /* "girlfriend" */

static int norm_ge(const char *s, size_t len, struct capid_buf *o)
{
    char w[GENDER_MAX] = {0};
    size_t n = 0;
    if (len == 0 || len > 4 * GENDER_MAX)
        return drop(o);
    for (size_t i = 0; i < len;) {
        int32_t lc = utf8proc_tolower(capid_utf8_next(s, len, &i));
        if (lc >= 0x80 || n == GENDER_MAX)
            return drop(o);
        w[n++] = (char)lc;
    }
    size_t lo = 0, hi = sizeof(genders) / sizeof(genders[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct gender *g = &genders[mid];
        int cmp = memcmp(w, g->word, n < g->len ? n : g->len);
        if (cmp == 0)
            cmp = (n > g->len) - (n < g->len);
        if (cmp == 0) {
            if (!room(o, 1))
                return drop(o);
            o->data[o->len++] = g->g;
            return keep(o);
        }
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return drop(o);
}

static int clock_max_year(void)
{
    time_t now = time(NULL);
    struct tm tm;
    return gmtime_r(&now, &tm) ? tm.tm_year + 1900 + 1 : 9999;
}

/* PB dobUtil.js: non-digits separate digit groups; three or more groups are
 * read as M/D/Y unless the numbers force Y/M/D or D/M/Y; one group of
 * exactly 8 digits is taken as is; anything else is dropped. */
static int norm_db(const char *s, size_t len, int max_year, struct capid_buf *o)
{
    long n[3] = {0, 0, 0};
    size_t groups = 0, first_start = 0, first_len = 0;
    for (size_t i = 0; i < len;) {
        if (!a_digit((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t start = i;
        long v = 0;
        for (; i < len && a_digit((unsigned char)s[i]); i++)
            v = v < 100000000 ? v * 10 + (s[i] - '0') : v; /* saturates above any year */
        if (groups < 3)
            n[groups] = v;
        if (groups == 0) {
            first_start = start;
            first_len = i - start;
        }
        groups++;
    }
    if (!room(o, 8))
        return drop(o);
    if (groups == 1 && first_len == 8) {
        memcpy(o->data, s + first_start, 8);
        o->len = 8;
        return keep(o);
    }
    if (groups < 3)
        return drop(o);
    long y, m, d;
    if (n[0] > 31) {
        y = n[0];
        m = n[1] > 12 ? n[2] : n[1];
        d = n[1] > 12 ? n[1] : n[2];
    } else if (n[1] > 31) {
        y = n[1];
        m = n[2] > 12 ? n[0] : n[2];
        d = n[2] > 12 ? n[2] : n[0];
    } else {
        y = n[2];
        m = n[0] > 12 ? n[1] : n[0];
        d = n[0] > 12 ? n[0] : n[1];
    }
    if (y < 1800 || y > max_year || y > 9999 || m < 1 || m > 12 || d < 1 || d > 31)
        return drop(o);
    char *p = o->data;
    p[0] = (char)('0' + y / 1000);
    p[1] = (char)('0' + y / 100 % 10);
    p[2] = (char)('0' + y / 10 % 10);
    p[3] = (char)('0' + y % 10);
    p[4] = (char)('0' + m / 10);
    p[5] = (char)('0' + m % 10);
    p[6] = (char)('0' + d / 10);
    p[7] = (char)('0' + d % 10);
    o->len = 8;
    return keep(o);
}

/* SPEC 5 zp (D): lowercase, cut at '-', delete white space, >= 2 code
 * points; a US ZIP+4 written without the dash keeps its first 5 digits. */
static int norm_zp(const char *s, size_t len, const char *country, struct capid_buf *o)
{
    long ncp = copy_lower(s, len, DEL_SPACE | CUT_DASH, o);
    if (ncp < 2)
        return drop(o);
    if (o->len == 9 && country && strcmp(country, "us") == 0) {
        size_t i = 0;
        while (i < 9 && a_digit((unsigned char)o->data[i]))
            i++;
        if (i == 9)
            o->len = 5;
    }
    return keep(o);
}

/* SPEC 5 st (D): fold; 2 letters kept; US/CA names and aliases -> code;
 * anything else stays folded. */
static int norm_st(const char *s, size_t len, struct capid_buf *o)
{
    if (capid_geo_fold(s, len, o) != CAPID_OK || o->len == 0)
        return drop(o);
    if (o->len != 2) {
        const char *code = capid_geo_state(o->data, o->len);
        if (code) {
            memcpy(o->data, code, 2);
            o->len = 2;
        }
    }
    return keep(o);
}

/* SPEC 5 country (D): fold; alpha-2, alpha-3, ISO names, aliases -> alpha-2;
 * anything else dropped. */
static int norm_country(const char *s, size_t len, struct capid_buf *o)
{
    if (capid_geo_fold(s, len, o) != CAPID_OK || o->len == 0)
        return drop(o);
    const char *code = capid_geo_country(o->data, o->len);
    if (!code)
        return drop(o);
    memcpy(o->data, code, 2);
    o->len = 2;
    return keep(o);
}

int capid_norm_value(enum capid_ukey k, const char *in, size_t len,
                     const struct capid_norm_ctx *ctx, struct capid_buf *out, bool *hashed)
{
    *hashed = false;
    capid_buf_reset(out);
    size_t b = 0, e = len;
    trim(in, &b, &e);
    /* SPEC 5: an existing SHA-256 digest passes through, lowercased. */
    if (capid_is_hex64(in + b, e - b)) {
        if (!room(out, 64))
            return drop(out);
        for (size_t i = 0; i < 64; i++)
            out->data[i] = (char)a_tolower((unsigned char)in[b + i]);
        out->len = 64;
        *hashed = true;
        return keep(out);
    }
    long ncp;
    switch (k) {
    case CAPID_UK_EM:
        return norm_em(in + b, e - b, out);
    case CAPID_UK_PH:
        return norm_ph(in + b, e - b, out);
    case CAPID_UK_FN:
    case CAPID_UK_LN:
        ncp = copy_lower(in + b, e - b, DEL_SPACE | DEL_PUNCT, out);
        return ncp > 0 ? keep(out) : drop(out);
    case CAPID_UK_CT:
        ncp = copy_lower(in + b, e - b, DEL_SPACE | DEL_PUNCT | DEL_DIGIT, out);
        return ncp > 0 ? keep(out) : drop(out);
    case CAPID_UK_GE:
        return norm_ge(in + b, e - b, out);
    case CAPID_UK_DB:
        return norm_db(in + b, e - b, ctx && ctx->max_year > 0 ? ctx->max_year : clock_max_year(),
                       out);
    case CAPID_UK_ST:
        return norm_st(in + b, e - b, out);
    case CAPID_UK_ZP:
        return norm_zp(in + b, e - b, ctx ? ctx->country : NULL, out);
    case CAPID_UK_COUNTRY:
        return norm_country(in + b, e - b, out);
    case CAPID_UK_EXTERNAL_ID:
        ncp = copy_lower(in + b, e - b, DEL_SPACE, out);
        return ncp > 0 ? keep(out) : drop(out);
    case CAPID_UK__COUNT:
        break;
    }
    return drop(out);
}
