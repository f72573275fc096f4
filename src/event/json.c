/* Single-pass JSON parser producing cJSON trees (see json.h). Replaces the
 * pre-scan + cJSON_ParseWithLengthOpts pair on the event hot path: measured
 * on the bench corpus they were ~38% of `capid map`. The grammar is RFC 8259;
 * the tree is shaped exactly like cJSON 1.7's: siblings linked by next/prev,
 * the first child's prev pointing at the last child, keys in `string`. */
#include "event/json.h"

#include <float.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "event/event_int.h"
#include "util/utf8.h"

/* Eight string bytes are classified at a time where the byte order allows
 * finding the first interesting one with a count of trailing zeros. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
#define SWAR 1
#else
#define SWAR 0
#endif

/* Clinger's fast path is exact only when each double operation is rounded
 * once, to double (no x87 excess precision). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define FAST_NUMBERS 1
#else
#define FAST_NUMBERS 0
#endif

#define INVALID CAPID_EV_INVALID_JSON

struct parser {
    const unsigned char *s;
    size_t len;
    struct capid_arena *arena; /* NULL: malloc only */
    size_t used;               /* arena->used while parsing */
    size_t cap;                /* CAPID_ARENA_BLOCK, 0 without an arena */
    struct capid_perr *err;
};

/* ---- memory ------------------------------------------------------------ */

static bool in_arena(const struct parser *p, const void *ptr)
{
    if (!p->arena)
        return false;
    uintptr_t a = (uintptr_t)p->arena->mem, x = (uintptr_t)ptr;
    return x >= a && x < a + CAPID_ARENA_BLOCK;
}

static cJSON *new_node(struct parser *p)
{
    cJSON *n;
    size_t at = (p->used + 7) & ~(size_t)7;
    if (at + sizeof(*n) <= p->cap) {
        n = (cJSON *)(void *)(p->arena->mem + at);
        p->used = at + sizeof(*n);
        memset(n, 0, sizeof(*n));
        return n;
    }
    if (p->arena)
        p->arena->overflowed = true;
    if (!(n = calloc(1, sizeof(*n))))
        abort(); /* STYLE: out of memory with caps in place aborts */
    return n;
}

/* Room for n bytes of string; *arena_owned says whether the caller must
 * commit what it used with p->used += k. */
static char *new_str(struct parser *p, size_t n, bool *arena_owned)
{
    char *s;
    *arena_owned = n <= p->cap - p->used;
    if (*arena_owned)
        return p->arena->mem + p->used;
    if (p->arena)
        p->arena->overflowed = true;
    if (!(s = malloc(n)))
        abort();
    return s;
}

/* Frees the malloc'd parts of a (possibly partial) tree without recursion:
 * a node's children are spliced in front of its next sibling (the first
 * child's prev is the last child, as every append keeps it). */
static void free_tree(const struct parser *p, cJSON *n)
{
    if (p->arena && !p->arena->overflowed)
        return;
    while (n) {
        if (n->child) {
            cJSON *c = n->child, *last = c->prev;
            last->next = n->next;
            n->next = c;
            n->child = NULL;
        }
        cJSON *next = n->next;
        if (!in_arena(p, n->valuestring))
            free(n->valuestring);
        if (!in_arena(p, n->string))
            free(n->string);
        if (!in_arena(p, n))
            free(n);
        n = next;
    }
}

/* ---- errors -------------------------------------------------------------- */

static enum capid_event_status truncated(const struct parser *p)
{
    capid_perr_set(p->err, p->len, "truncated JSON: input ends at byte %zu", p->len);
    return INVALID;
}

/* A syntax error at byte i, which may be the end of the input. */
static enum capid_event_status syntax(const struct parser *p, size_t i, const char *what)
{
    if (i >= p->len)
        return truncated(p);
    unsigned char c = p->s[i];
    if (c == 0)
        capid_perr_set(p->err, i, "NUL byte at byte %zu", i);
    else if (c >= 0x80)
        capid_perr_set(p->err, i, "unexpected byte 0x%02x outside a string at byte %zu", c, i);
    else
        capid_perr_set(p->err, i, "JSON syntax error at byte %zu: %s", i, what);
    return INVALID;
}

/* ---- strings ------------------------------------------------------------- */

static inline bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static inline size_t skip_ws(const unsigned char *s, size_t len, size_t i)
{
    while (i < len && s[i] <= ' ' && is_ws(s[i]))
        i++;
    return i;
}

static inline bool str_special(unsigned char c)
{
    return c == '"' || c == '\\' || c < 0x20 || c >= 0x80;
}

#if SWAR && defined(__SSE2__)
#include <emmintrin.h>
#define SSE2 1

/* Bit i set when byte i of v is one str_special flags. */
static inline unsigned str_special16(__m128i v)
{
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i b = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i c = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)); /* signed: also >= 0x80 */
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, b), c));
}
#else
#define SSE2 0
#endif

#if SWAR
#define ONES  UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* High bit of each byte of w that str_special would flag. Borrows only run
 * upward from a flagged byte, so the lowest flagged byte is exact. */
static inline uint64_t str_special8(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((w - ONES * 0x20) & ~w) | w) & HIGHS;
}
#endif

static inline int hexval(unsigned char c)
{
    if ((unsigned)(c - '0') < 10)
        return c - '0';
    c |= 0x20;
    if ((unsigned)(c - 'a') < 6)
        return c - 'a' + 10;
    return -1;
}

/* The 4 hex digits at s[i]: the value, -1 if the input ends first, -2 if a
 * byte is not a hex digit. */
static long hex4(const unsigned char *s, size_t len, size_t i)
{
    long v = 0;
    for (size_t k = 0; k < 4; k++) {
        if (i + k >= len)
            return -1;
        int d = hexval(s[i + k]);
        if (d < 0)
            return -2;
        v = v << 4 | d;
    }
    return v;
}

/* Validates the escape whose backslash is at s[*pj] and moves *pj past it. */
static enum capid_event_status check_escape(const struct parser *p, size_t *pj)
{
    const unsigned char *s = p->s;
    size_t len = p->len, j = *pj;
    if (j + 1 >= len)
        return truncated(p);
    switch (s[j + 1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        *pj = j + 2;
        return CAPID_EV_OK;
    case 'u':
        break;
    default:
        capid_perr_set(p->err, j, "invalid escape in string at byte %zu", j);
        return INVALID;
    }
    long cp = hex4(s, len, j + 2);
    if (cp == -1)
        return truncated(p);
    if (cp == -2) {
        capid_perr_set(p->err, j, "invalid \\u escape in string at byte %zu", j);
        return INVALID;
    }
    if (cp == 0) {
        capid_perr_set(p->err, j, "string contains \\u0000 (NUL) at byte %zu", j);
        return INVALID;
    }
    if (cp >= 0xdc00 && cp <= 0xdfff)
        goto lone;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        size_t k = j + 6;
        if (k + 1 >= len && (k >= len || s[k] == '\\'))
            return truncated(p);
        if (s[k] != '\\' || s[k + 1] != 'u')
            goto lone;
        long lo = hex4(s, len, k + 2);
        if (lo == -1)
            return truncated(p);
        if (lo == -2) {
            capid_perr_set(p->err, k, "invalid \\u escape in string at byte %zu", k);
            return INVALID;
        }
        if (lo < 0xdc00 || lo > 0xdfff)
            goto lone;
        *pj = j + 12;
        return CAPID_EV_OK;
    }
    *pj = j + 6;
    return CAPID_EV_OK;
lone:
    capid_perr_set(p->err, j, "lone UTF-16 surrogate \\u%04lX in string at byte %zu", cp, j);
    return INVALID;
}

/* Decodes n validated string bytes with escapes into out (room for n + 1:
 * no escape is shorter than the UTF-8 it stands for); returns the decoded
 * length. */
static size_t unescape(const unsigned char *s, size_t n, char *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        const unsigned char *b = memchr(s + i, '\\', n - i);
        size_t run = b ? (size_t)(b - (s + i)) : n - i;
        memcpy(out + k, s + i, run);
        k += run;
        i += run;
        if (!b)
            break;
        unsigned char e = s[i + 1];
        long cp;
        switch (e) {
        case 'b':
            out[k++] = '\b';
            break;
        case 'f':
            out[k++] = '\f';
            break;
        case 'n':
            out[k++] = '\n';
            break;
        case 'r':
            out[k++] = '\r';
            break;
        case 't':
            out[k++] = '\t';
            break;
        case 'u':
            cp = hex4(s, n, i + 2);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4(s, n, i + 8) - 0xdc00);
                i += 6;
            }
            k += capid_utf8_put((int32_t)cp, out + k);
            i += 4;
            break;
        default: /* " \ / */
            out[k++] = (char)e;
            break;
        }
        i += 2;
    }
    out[k] = '\0';
    return k;
}

/* Finds the closing quote of the string whose first byte is s[start] (*pj:
 * its index), checking escapes, UTF-8 and control characters on the way.
 * With dst, also copies the raw bytes to dst[0..], eight at a time (dst
 * needs room for len - start bytes). Inlined twice, so the copy costs
 * nothing when dst is NULL. */
static inline __attribute__((always_inline)) enum capid_event_status
scan_string(const struct parser *p, size_t start, size_t *pj, bool *esc, char *dst)
{
    const unsigned char *s = p->s;
    size_t len = p->len, j = start;
    enum capid_event_status st;
    unsigned char c;
    for (;;) {
#if SSE2
        /* Measured: 16 bytes at a time take ~2,600 instructions an event
         * fewer than 8 (SWAR, below, for what remains). */
        while (len - j >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + j));
            if (dst)
                _mm_storeu_si128((__m128i *)(void *)(dst + (j - start)), v);
            unsigned m = str_special16(v);
            if (m) {
                j += (size_t)__builtin_ctz(m);
                goto special;
            }
            j += 16;
        }
#endif
#if SWAR
        while (len - j >= 8) {
            uint64_t w;
            memcpy(&w, s + j, 8);
            if (dst)
                memcpy(dst + (j - start), &w, 8);
            uint64_t m = str_special8(w);
            if (m) {
                j += (size_t)__builtin_ctzll(m) >> 3;
                goto special;
            }
            j += 8;
        }
#endif
        while (j < len && !str_special(s[j])) {
            if (dst)
                dst[j - start] = (char)s[j];
            j++;
        }
        if (j >= len)
            return truncated(p);
    special:
        c = s[j];
        if (c == '"')
            break;
        if (c == '\\') {
            if ((st = check_escape(p, &j)))
                return st;
            *esc = true; /* the copy is redone by unescape */
        } else if (c >= 0x80) {
            size_t n = capid_utf8_seq((const char *)s, len, j);
            if (n == CAPID_UTF8_TRUNC)
                return truncated(p);
            if (!n) {
                capid_perr_set(p->err, j, "invalid UTF-8 at byte %zu", j);
                return INVALID;
            }
            if (dst)
                memcpy(dst + (j - start), s + j, n);
            j += n;
        } else if (c == 0) {
            capid_perr_set(p->err, j, "NUL byte at byte %zu", j);
            return INVALID;
        } else {
            capid_perr_set(p->err, j, "control character 0x%02x in a string at byte %zu", c, j);
            return INVALID;
        }
    }
    *pj = j;
    return CAPID_EV_OK;
}

/* Parses the string whose opening quote is at s[*pi] into a new
 * NUL-terminated copy (*out) and moves *pi past the closing quote. */
static inline __attribute__((always_inline)) enum capid_event_status
parse_string(struct parser *p, size_t *pi, char **out, size_t *outlen)
{
    const unsigned char *s = p->s;
    size_t start = *pi + 1, j, n, k;
    bool esc = false, arena_owned;
    enum capid_event_status st;
    char *dst;
    if (p->len - start < p->cap - p->used) {
        /* The rest of the input fits in the arena: copy while scanning. */
        dst = p->arena->mem + p->used;
        if ((st = scan_string(p, start, &j, &esc, dst)))
            return st;
        arena_owned = true;
        n = j - start;
    } else {
        if ((st = scan_string(p, start, &j, &esc, NULL)))
            return st;
        n = j - start;
        dst = new_str(p, n + 1, &arena_owned);
        if (!esc)
            memcpy(dst, s + start, n);
    }
    if (esc) {
        k = unescape(s + start, n, dst);
    } else {
        dst[n] = '\0';
        k = n;
    }
    if (arena_owned)
        p->used += k + 1;
    *out = dst;
    *outlen = k;
    *pi = j + 1;
    return CAPID_EV_OK;
}

/* ---- literals and numbers ------------------------------------------------ */

/* The literal word (n bytes, first one already matched) at s[*pi]. */
static enum capid_event_status literal(const struct parser *p, size_t *pi, const char *word,
                                       size_t n, const char *what)
{
    size_t i = *pi;
    if (p->len - i >= n && memcmp(p->s + i, word, n) == 0) {
        *pi = i + n;
        return CAPID_EV_OK;
    }
    for (size_t k = 1; k < n; k++)
        if (i + k >= p->len || p->s[i + k] != (unsigned char)word[k])
            return syntax(p, i + k, what);
    return CAPID_EV_OK; /* not reached */
}

static inline bool is_digit(unsigned char c)
{
    return (unsigned)(c - '0') < 10;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* strtod of n grammar-checked bytes, independent of the process locale. */
static double slow_strtod(const unsigned char *s, size_t n)
{
    char stackbuf[64], *buf = stackbuf;
    if (n >= sizeof(stackbuf) && !(buf = malloc(n + 1)))
        abort();
    memcpy(buf, s, n);
    buf[n] = '\0';
    pthread_once(&c_locale_once, c_locale_init);
    double v = c_locale ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
    if (buf != stackbuf)
        free(buf);
    return v;
}

#if FAST_NUMBERS
/* Powers of ten that are exact doubles (10^22 < 2^53 * 2^22). */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
#endif

/* A number at s[*pi] (which is '-' or a digit), RFC 8259 section 6. */
static enum capid_event_status parse_number(const struct parser *p, size_t *pi, cJSON *node)
{
    const unsigned char *s = p->s;
    size_t len = p->len, i = *pi, start = i;
    bool neg = false, slow = false;
    uint64_t m = 0; /* the first 19 significant digits */
    int nd = 0, frac = 0, e = 0;

    if (s[i] == '-') {
        neg = true;
        if (++i >= len)
            return truncated(p);
    }
    if (s[i] == '0') {
        if (++i < len && is_digit(s[i]))
            return syntax(p, i, "leading zero in a number");
    } else if (is_digit(s[i])) {
        for (; i < len && is_digit(s[i]); i++) {
            if (nd < 19)
                m = m * 10 + (uint64_t)(s[i] - '0'), nd++;
            else
                slow = true;
        }
    } else {
        return syntax(p, i, "expected a digit after '-'");
    }
    if (i < len && s[i] == '.') {
        if (++i >= len)
            return truncated(p);
        if (!is_digit(s[i]))
            return syntax(p, i, "expected a digit after '.'");
        for (; i < len && is_digit(s[i]); i++) {
            if (nd < 19)
                m = m * 10 + (uint64_t)(s[i] - '0'), nd++, frac++;
            else
                slow = true;
        }
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        bool eneg = false;
        if (++i >= len)
            return truncated(p);
        if (s[i] == '-' || s[i] == '+') {
            eneg = s[i] == '-';
            if (++i >= len)
                return truncated(p);
        }
        if (!is_digit(s[i]))
            return syntax(p, i, "expected a digit in the exponent");
        for (; i < len && is_digit(s[i]); i++)
            if (e < 100000)
                e = e * 10 + (s[i] - '0');
        if (eneg)
            e = -e;
    }
    e -= frac;

    double v;
#if FAST_NUMBERS
    /* Clinger: m and 10^|e| are exact doubles, so one correctly rounded
     * multiplication or division gives the correctly rounded result. */
    if (!slow && m <= (UINT64_C(1) << 53) && e >= -22 && e <= 22) {
        v = (double)m;
        v = e < 0 ? v / pow10_exact[-e] : v * pow10_exact[e];
        if (neg)
            v = -v;
    } else
#endif
    {
        v = slow_strtod(s + start, i - start);
        if (!isfinite(v)) {
            capid_perr_set(p->err, start, "number out of range at byte %zu", start);
            return INVALID;
        }
    }
    node->type = cJSON_Number;
    node->valuedouble = v;
    /* cJSON's saturating conversion. */
    if (v >= INT_MAX)
        node->valueint = INT_MAX;
    else if (v <= (double)INT_MIN)
        node->valueint = INT_MIN;
    else
        node->valueint = (int)v;
    *pi = i;
    return CAPID_EV_OK;
}

/* ---- the value grammar --------------------------------------------------- */

/* Bit of a key in its object's 64-bit summary of the keys seen so far: two
 * keys with different bits differ. */
static inline uint64_t key_bit(const char *key, size_t n)
{
    unsigned h = (unsigned)n * 7 + (unsigned char)key[0] + 3u * (unsigned char)key[n ? n - 1 : 0];
    return UINT64_C(1) << (h & 63);
}

/* Whether key equals that of a member of obj before node. */
static bool dup_of_earlier(const cJSON *obj, const cJSON *node)
{
    for (const cJSON *c = obj->child; c != node; c = c->next)
        if (c->string[0] == node->string[0] && strcmp(c->string, node->string) == 0)
            return true;
    return false;
}

enum capid_event_status capid_json_parse(const char *json, size_t len,
                                         const struct capid_limits *lim, struct capid_arena *arena,
                                         cJSON **rootp, struct capid_perr *err)
{
    return capid_json_parse_event(json, len, lim, arena, rootp, err, NULL);
}

enum capid_event_status capid_json_parse_event(const char *json, size_t len,
                                               const struct capid_limits *lim,
                                               struct capid_arena *arena, cJSON **rootp,
                                               struct capid_perr *err, const cJSON **dupp)
{
    int max_depth = lim && lim->max_depth > 0 ? lim->max_depth : 32;
    *rootp = NULL;
    if (lim && lim->max_event_bytes && len > lim->max_event_bytes) {
        capid_perr_set(err, 0, "event is %zu bytes, over the limit of %zu", len,
                       lim->max_event_bytes);
        return CAPID_EV_TOO_LARGE;
    }
    struct parser p = {(const unsigned char *)json,   len, arena, arena ? arena->used : 0,
                       arena ? CAPID_ARENA_BLOCK : 0, err};
    const unsigned char *s = p.s;
    /* Open containers' parents and their key summaries (key_bit); deeper
     * than 64 levels moves to the heap. */
    struct level {
        cJSON *parent, *last;
        uint64_t seen;
    } stackbuf[64], *stack = stackbuf;
    /* parent's last child so far, kept here rather than read back through
     * parent->child->prev for every append (perf: ~3% of parsing) */
    cJSON *root = NULL, *parent = NULL, *last = NULL, *node;
    const cJSON *dup = NULL;
    size_t stack_cap = 64, i = 0, keylen = 0, slen;
    /* Lengths for valueint (event.h: capid_jkey_len, capid_jstr_len), when the input
     * is short enough for every key and string to fit their bits. */
    const unsigned lmask = len < 0x7fff ? ~0u : 0u;
    unsigned kenc = 0; /* the current value's key length, encoded */
    uint64_t seen = 0; /* key_bit of parent's keys so far */
    int depth = 0;
    char *key = NULL;
    enum capid_event_status st = CAPID_EV_OK;
    bool find_dup = dupp != NULL; /* until the first is found */
    if (dupp)
        *dupp = NULL;

value:
    if (i >= len || s[i] <= ' ') {
        i = skip_ws(s, len, i);
        if (i >= len) {
            st = truncated(&p);
            goto fail;
        }
    }
    node = new_node(&p);
    if (parent) {
        /* cJSON's append: the first child's prev is the last child. */
        if (last) {
            last->next = node;
            node->prev = last;
            parent->child->prev = node;
        } else {
            parent->child = node;
            node->prev = node;
        }
        last = node;
        node->string = key; /* NULL in arrays */
        if (key && find_dup) {
            /* The first duplicate in document order, as event.c's pass over
             * a tree finds it (that pass cost ~3,000 instructions an event). */
            uint64_t bit = key_bit(key, keylen);
            if ((seen & bit) && dup_of_earlier(parent, node)) {
                dup = node;
                find_dup = false;
            }
            seen |= bit;
        }
        key = NULL;
    } else {
        root = node;
    }
    switch (s[i]) {
    case '{':
    case '[':
        if (depth >= max_depth) {
            capid_perr_set(err, i, "nesting deeper than %d levels at byte %zu", max_depth, i);
            st = INVALID;
            goto fail;
        }
        if ((size_t)depth == stack_cap) {
            struct level *bigger = malloc(2 * stack_cap * sizeof(*stack));
            if (!bigger)
                abort();
            memcpy(bigger, stack, stack_cap * sizeof(*stack));
            if (stack != stackbuf)
                free(stack);
            stack = bigger;
            stack_cap *= 2;
        }
        stack[depth].parent = parent;
        stack[depth].last = last;
        stack[depth++].seen = seen;
        parent = node;
        last = NULL;
        seen = 0;
        node->valueint = (int)kenc;
        if (s[i] == '{') {
            node->type = cJSON_Object;
            i = skip_ws(s, len, i + 1);
            if (i < len && s[i] == '}')
                goto close;
            goto key;
        }
        node->type = cJSON_Array;
        i = skip_ws(s, len, i + 1);
        if (i < len && s[i] == ']')
            goto close;
        kenc = 0; /* array elements have no key */
        goto value;
    case '"':
        node->type = cJSON_String;
        if ((st = parse_string(&p, &i, &node->valuestring, &slen)))
            goto fail;
        node->valueint = (int)(kenc | (((unsigned)slen + 1) & lmask));
        break;
    case 't':
        if ((st = literal(&p, &i, "true", 4, "expected 'true'")))
            goto fail;
        node->type = cJSON_True;
        node->valueint = 1;
        break;
    case 'f':
        if ((st = literal(&p, &i, "false", 5, "expected 'false'")))
            goto fail;
        node->type = cJSON_False;
        break;
    case 'n':
        if ((st = literal(&p, &i, "null", 4, "expected 'null'")))
            goto fail;
        node->type = cJSON_NULL;
        break;
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        if ((st = parse_number(&p, &i, node)))
            goto fail;
        break;
    default:
        st = syntax(&p, i, "expected a value");
        goto fail;
    }

next: /* after a value: a separator, the parent's end, or the input's end */
    if (!parent)
        goto done;
    if (i >= len || s[i] <= ' ') {
        i = skip_ws(s, len, i);
        if (i >= len) {
            st = truncated(&p);
            goto fail;
        }
    }
    if (parent->type == cJSON_Object) {
        if (s[i] == ',') {
            i++;
            goto key;
        }
        if (s[i] != '}') {
            st = syntax(&p, i, "expected ',' or '}'");
            goto fail;
        }
    } else {
        if (s[i] == ',') {
            i++;
            kenc = 0;
            goto value;
        }
        if (s[i] != ']') {
            st = syntax(&p, i, "expected ',' or ']'");
            goto fail;
        }
    }
close: /* s[i] closes parent */
    i++;
    parent = stack[--depth].parent;
    last = stack[depth].last;
    seen = stack[depth].seen;
    goto next;

key: /* compact JSON (no white space) takes the first test of each pair */
    if (i >= len || s[i] != '"') {
        i = skip_ws(s, len, i);
        if (i >= len || s[i] != '"') {
            st = syntax(&p, i, "expected '\"' (a key)");
            goto fail;
        }
    }
    if ((st = parse_string(&p, &i, &key, &keylen)))
        goto fail;
    kenc = (((unsigned)keylen + 1) << 16) & lmask;
    if (i >= len || s[i] != ':') {
        i = skip_ws(s, len, i);
        if (i >= len || s[i] != ':') {
            st = syntax(&p, i, "expected ':'");
            goto fail;
        }
    }
    i++;
    goto value;

done:
    i = skip_ws(s, len, i);
    if (i < len) {
        capid_perr_set(err, i, "unexpected data after the JSON value at byte %zu", i);
        st = INVALID;
        goto fail;
    }
    *rootp = root;
    root = NULL;
    if (dupp)
        *dupp = dup;
fail:
    if (key && !in_arena(&p, key))
        free(key);
    free_tree(&p, root);
    if (arena)
        arena->used = p.used;
    if (stack != stackbuf)
        free(stack);
    return st;
}
