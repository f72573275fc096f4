/* UTF-8 helpers for the hot path: a strict validator, a tolerant decoder and
 * an encoder, and the white-space class every normaliser uses (SPEC 5). */
#ifndef CAPID_UTIL_UTF8_H
#define CAPID_UTIL_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* True iff s[0..len) is well-formed UTF-8 (Unicode 15, table 3-7): no
 * overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF, no
 * truncated sequence. NUL bytes are valid. ASCII runs are checked 8 bytes at a
 * time. Thread-safe. */
bool capid_utf8_valid(const char *s, size_t len);
/* Length (2-4) of the well-formed UTF-8 sequence starting at s[i] (a byte
 * >= 0x80), 0 if malformed, CAPID_UTF8_TRUNC if cut short by len. */
#define CAPID_UTF8_TRUNC SIZE_MAX
size_t capid_utf8_seq(const char *s, size_t len, size_t i);

/* White space as Python's str.isspace() sees it, plus U+FEFF: bidi class WS,
 * B or S, or general category Zs (\t\n\v\f\r, \x1c-\x1f, space, U+0085,
 * U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000,
 * U+FEFF). U+0000 is not white space. Thread-safe (utf8proc's static tables). */
bool capid_is_space(int32_t cp);

/* Decodes the code point at s[*i] (with *i < len) and advances *i past it.
 * Expects valid UTF-8; a malformed or truncated sequence yields U+FFFD and
 * advances by one byte, so the caller never reads past len. */
static inline int32_t capid_utf8_next(const char *s, size_t len, size_t *i)
{
    const unsigned char *p = (const unsigned char *)s + *i;
    size_t left = len - *i;
    unsigned char c = p[0];
    if (c < 0x80) {
        *i += 1;
        return c;
    }
    if (c >= 0xc2 && c < 0xe0 && left >= 2 && (p[1] & 0xc0) == 0x80) {
        *i += 2;
        return (int32_t)(c & 0x1f) << 6 | (p[1] & 0x3f);
    }
    if (c >= 0xe0 && c < 0xf0 && left >= 3 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80) {
        *i += 3;
        return (int32_t)(c & 0x0f) << 12 | (int32_t)(p[1] & 0x3f) << 6 | (p[2] & 0x3f);
    }
    if (c >= 0xf0 && c < 0xf5 && left >= 4 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 &&
        (p[3] & 0xc0) == 0x80) {
        *i += 4;
        return (int32_t)(c & 0x07) << 18 | (int32_t)(p[1] & 0x3f) << 12 |
               (int32_t)(p[2] & 0x3f) << 6 | (p[3] & 0x3f);
    }
    *i += 1;
    return 0xfffd;
}

/* Writes cp (0..U+10FFFF) as UTF-8 to out (room for 4 bytes); returns the
 * number of bytes written. */
static inline size_t capid_utf8_put(int32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xc0 | cp >> 6);
        o[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xe0 | cp >> 12);
        o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (unsigned char)(0xf0 | cp >> 18);
    o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

#endif
