#include "util/utf8.h"

#include <string.h>
#include <utf8proc.h>

size_t capid_utf8_seq(const char *s, size_t len, size_t i)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char c = p[i], lo = 0x80, hi = 0xbf;
    size_t n;
    /* Unicode table 3-7: the second byte's range depends on the lead. */
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 overlong lead, F5..FF */
    }
    if (i + 1 >= len)
        return CAPID_UTF8_TRUNC;
    if (p[i + 1] < lo || p[i + 1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++) {
        if (i + k >= len)
            return CAPID_UTF8_TRUNC;
        if ((p[i + k] & 0xc0) != 0x80)
            return 0;
    }
    return n;
}

bool capid_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        /* ASCII fast path: 8 bytes with no high bit set. */
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & UINT64_C(0x8080808080808080))) {
                i += 8;
                continue;
            }
        }
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = capid_utf8_seq(s, len, i);
        if (n == 0 || n == CAPID_UTF8_TRUNC)
            return false;
        i += n;
    }
    return true;
}

bool capid_is_space(int32_t cp)
{
    if (cp < 0x80)
        return cp == ' ' || (cp >= '\t' && cp <= '\r') || (cp >= 0x1c && cp <= 0x1f);
    if (cp > 0x10ffff)
        return false;
    if (cp == 0xfeff) /* BOM / ZWNBSP: JavaScript's \s has it, Python's isspace not */
        return true;
    const utf8proc_property_t *pr = utf8proc_get_property(cp);
    return pr->category == UTF8PROC_CATEGORY_ZS || pr->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
           pr->bidi_class == UTF8PROC_BIDI_CLASS_B || pr->bidi_class == UTF8PROC_BIDI_CLASS_S;
}
