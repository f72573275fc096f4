#include "util/buf.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

void capid_buf_init(struct capid_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void capid_buf_release(struct capid_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int capid_buf_grow(struct capid_buf *b, size_t need)
{
    if (need > SIZE_MAX - b->len - 1)
        return CAPID_ETOOBIG;
    size_t want = b->len + need + 1;
    if (b->max && b->len + need > b->max)
        return CAPID_ETOOBIG;
    if (want <= b->cap)
        return CAPID_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return CAPID_ENOMEM;
    b->data = p;
    b->cap = cap;
    return CAPID_OK;
}

int capid_buf_append_slow(struct capid_buf *b, const void *p, size_t n)
{
    int rc = capid_buf_grow(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return CAPID_OK;
}

int capid_buf_vprintf(struct capid_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return CAPID_EINVAL;
    if ((size_t)n < sizeof(tmp))
        return capid_buf_append(b, tmp, (size_t)n);
    int rc = capid_buf_grow(b, (size_t)n);
    if (rc)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return CAPID_OK;
}

int capid_buf_printf(struct capid_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = capid_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

/* Bytes that must be escaped in a JSON string: controls, '"' and '\\'. */
static const unsigned char must_escape[256] = {
    [0x00 ... 0x1f] = 1,
    ['"'] = 1,
    ['\\'] = 1,
};

/* Bytes are classified 16 (SSE2) or 8 (SWAR) at a time where the byte order
 * allows finding the first one to escape with a count of trailing zeros.
 * Measured: the byte-at-a-time scan was ~10% of `capid map`. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
#define SWAR  1
#define ONES  UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* High bit of each byte of w that must_escape flags. Borrows only run
 * upward from a flagged byte, so the lowest flagged byte is exact. */
static inline uint64_t escape8(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((w - ONES * 0x20) & ~w)) & HIGHS;
}
#else
#define SWAR 0
#endif

/* ASan (and valgrind) flag the whole-block read of a short string below,
 * which may read past its end; GCC says so with __SANITIZE_ADDRESS__, clang
 * (the fuzz build) with __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define CAPID_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CAPID_ASAN 1
#endif
#endif

#if SWAR && defined(__SSE2__)
#include <emmintrin.h>
#define WIDE 16

/* Bit i set when byte i of the 16 at p must be escaped. */
static inline unsigned escape16(const unsigned char *p, char *copy_to)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    _mm_storeu_si128((__m128i *)(void *)copy_to, v);
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i b = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i c = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v); /* v <= 0x1f */
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(q, b), c));
}
#elif SWAR
#define WIDE 8
#endif

char *capid_json_escape(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    unsigned char c;
    *o++ = '"';
#if WIDE == 16 && !defined(CAPID_ASAN)
    /* Most strings of an event are short: one block for all of a string of
     * 3 to 15 bytes that needs no escaping. The block may read past the
     * string but not into the next page, so it cannot fault (the bytes past
     * it are masked off; not in ASan builds, which would see the read); it
     * writes 16 bytes, within the 6 * n + 3 reserved from n = 3 on. */
    if (n >= 3 && n < 16 && ((uintptr_t)p & 4095) <= 4096 - 16 &&
        !(escape16(p, o) & ((1u << n) - 1))) {
        o += n;
        *o++ = '"';
        return o;
    }
#endif
    for (;;) {
#if SWAR
        /* Blocks are copied before they are looked at. While r input bytes
         * remain, o is at most 1 + 6 * (n - r) bytes into the reserved room
         * of n * 6 + 2 and the NUL: a block of k bytes fits if k <= 6 * r + 2. */
        while ((size_t)(end - p) >= WIDE) {
#if WIDE == 16
            unsigned m = escape16(p, o);
            if (m) {
                size_t k = (size_t)__builtin_ctz(m);
#else
            uint64_t w, m;
            memcpy(&w, p, 8);
            memcpy(o, &w, 8);
            if ((m = escape8(w))) {
                size_t k = (size_t)__builtin_ctzll(m) >> 3;
#endif
                p += k;
                o += k;
                goto special;
            }
            p += WIDE;
            o += WIDE;
        }
        if (p == end)
            break;
        if (n >= 8) {
            /* The last r < WIDE bytes: a word at p, then the last 8 bytes of
             * s shifted down to the r not yet done (the zeros shifted in are
             * masked off; borrows only run upward). */
            size_t r = (size_t)(end - p), k;
            uint64_t w, m;
            if (r > 8) {
                memcpy(&w, p, 8);
                memcpy(o, &w, 8);
                if ((m = escape8(w))) {
                    k = (size_t)__builtin_ctzll(m) >> 3;
                    p += k;
                    o += k;
                    goto special;
                }
                p += 8;
                o += 8;
                r -= 8;
            }
            memcpy(&w, end - 8, 8);
            w >>= 8 * (8 - r);
            memcpy(o, &w, 8);
            m = escape8(w) & (HIGHS >> 8 * (8 - r));
            if (!m) {
                o += r;
                break;
            }
            k = (size_t)__builtin_ctzll(m) >> 3;
            p += k;
            o += k;
            goto special;
        }
#endif
        while (p < end && !must_escape[*p])
            *o++ = (char)*p++;
        if (p == end)
            break;
#if SWAR
    special:
#endif
        c = *p++;
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    return o;
}

int capid_buf_json_str(struct capid_buf *b, const char *s, size_t n)
{
    /* Worst case every byte becomes \u00XX; grow() adds the byte for NUL. */
    size_t need = n * 6 + 2;
    if (!capid_buf_room(b, need)) {
        int rc = capid_buf_grow(b, need);
        if (rc)
            return rc;
    }
    char *o = capid_json_escape(b->data + b->len, s, n);
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return CAPID_OK;
}

int capid_buf_json_int(struct capid_buf *b, int64_t v)
{
    char tmp[24], *p = tmp + sizeof(tmp); /* what "%lld" prints, without snprintf */
    uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return capid_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* nearbyint(x) for 0 <= x < 9e15 in the default rounding mode, without the
 * libm call: below 2^52, adding and subtracting 2^52 rounds to an integer
 * (ties to even); from 2^52 on every double is one. */
static inline double round_even(double x)
{
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    if (x < 0x1p52)
        return (x + 0x1p52) - 0x1p52; /* not folded: IEEE arithmetic */
    return x;
#else
    return nearbyint(x);
#endif
}

int capid_buf_json_num(struct capid_buf *b, double v)
{
    char tmp[40];
    int n;
    if (!isfinite(v))
        return capid_buf_append(b, "null", 4);
    /* Fast path (measured: snprintf+strtod was 13% of `capid map`): the
     * shortest decimal with at most 6 fraction digits that reads back as
     * exactly v. r/scale is correctly rounded, like strtod of the printed
     * digits, so the round trip is exact. */
    double a = fabs(v), scale = 1;
    for (int k = 0; k <= 6 && a < 1e15; k++, scale *= 10) {
        double x = a * scale;
        if (x >= 9e15)
            break;
        double r = round_even(x);
        if (r / scale != a)
            continue;
        uint64_t u = (uint64_t)r;
        char *p = tmp + sizeof(tmp);
        for (int i = 0; i < k; i++, u /= 10)
            *--p = (char)('0' + u % 10);
        if (k)
            *--p = '.';
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0)
            *--p = '-';
        return capid_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
    }
    /* Shortest of %.15g/%.17g that reads back exactly (as cJSON does). */
    n = snprintf(tmp, sizeof(tmp), "%.15g", v);
    if (strtod(tmp, NULL) != v)
        n = snprintf(tmp, sizeof(tmp), "%.17g", v);
    return capid_buf_append(b, tmp, (size_t)n);
}

int capid_buf_hex(struct capid_buf *b, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = capid_buf_grow(b, n * 2);
    if (rc)
        return rc;
    char *o = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        *o++ = hex[p[i] >> 4];
        *o++ = hex[p[i] & 15];
    }
    b->len += n * 2;
    b->data[b->len] = '\0';
    return CAPID_OK;
}

char *capid_buf_detach(struct capid_buf *b, size_t *len)
{
    char *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
