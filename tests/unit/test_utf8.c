#include "test.h"

#include "util/utf8.h"

/* Strict validation, Unicode table 3-7. len 0 = strlen. */
static const struct {
    const char *name;
    const char *s;
    size_t len;
    bool valid;
} utf8_cases[] = {
    {"empty", "", 0, true},
    {"ascii", "hello, world", 0, true},
    {"ascii long (fast path)", "abcdefghijklmnopqrstuvwxyz0123456789", 0, true},
    {"embedded NUL", "a\0b", 3, true},
    {"2-byte e-acute", "\xc3\xa9", 0, true},
    {"2-byte min U+0080", "\xc2\x80", 0, true},
    {"3-byte min U+0800", "\xe0\xa0\x80", 0, true},
    {"3-byte U+D7FF", "\xed\x9f\xbf", 0, true},
    {"3-byte U+E000", "\xee\x80\x80", 0, true},
    {"3-byte U+FFFF", "\xef\xbf\xbf", 0, true},
    {"4-byte min U+10000", "\xf0\x90\x80\x80", 0, true},
    {"4-byte emoji", "\xf0\x9f\x98\x80", 0, true},
    {"4-byte max U+10FFFF", "\xf4\x8f\xbf\xbf", 0, true},
    {"multibyte after 8 ASCII", "abcdefgh\xc3\xa9xyz", 0, true},
    {"overlong NUL C0 80", "\xc0\x80", 0, false},
    {"overlong C1 BF", "\xc1\xbf", 0, false},
    {"overlong 3-byte slash", "\xe0\x80\xaf", 0, false},
    {"overlong 3-byte U+07FF", "\xe0\x9f\xbf", 0, false},
    {"overlong 4-byte U+FFFF", "\xf0\x8f\xbf\xbf", 0, false},
    {"surrogate U+D800", "\xed\xa0\x80", 0, false},
    {"surrogate U+DFFF", "\xed\xbf\xbf", 0, false},
    {"above U+10FFFF (F4 90)", "\xf4\x90\x80\x80", 0, false},
    {"lead F5", "\xf5\x80\x80\x80", 0, false},
    {"lead FF", "\xff", 0, false},
    {"lone continuation", "\x80", 0, false},
    {"continuation after ASCII run", "abcdefgh\xbf", 0, false},
    {"truncated 2-byte", "\xc3", 0, false},
    {"truncated 3-byte", "\xe2\x82", 0, false},
    {"truncated 4-byte", "\xf0\x9f\x98", 0, false},
    {"truncated 4-byte mid-string",
     "\xf0\x9f\x98"
     "a",
     0, false},
    {"bad second continuation", "\xe2\x28\xa1", 0, false},
    {"bad third continuation", "\xf0\x9f\x98\x28", 0, false},
};

TEST(utf8_valid_table)
{
    for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
        size_t len = utf8_cases[i].len ? utf8_cases[i].len : strlen(utf8_cases[i].s);
        if (capid_utf8_valid(utf8_cases[i].s, len) != utf8_cases[i].valid)
            capid_test_fail(__FILE__, __LINE__, "utf8 '%s': got %d, want %d", utf8_cases[i].name,
                            !utf8_cases[i].valid, utf8_cases[i].valid);
    }
}

/* Every encodable code point round-trips through put/next and validates,
 * and surrogates are rejected. */
TEST(utf8_encode_decode_every_code_point)
{
    char b[4];
    int bad = 0;
    for (int32_t cp = 0; cp <= 0x10ffff; cp++) {
        size_t n = capid_utf8_put(cp, b), i = 0;
        bool surrogate = cp >= 0xd800 && cp <= 0xdfff;
        if (capid_utf8_valid(b, n) == surrogate || (!surrogate && capid_utf8_next(b, n, &i) != cp))
            bad++;
        if (!surrogate && i != n)
            bad++;
    }
    ASSERT_INT(bad, 0);
}

TEST(utf8_next_never_reads_past_len)
{
    static const char *const bad[] = {"\xc3", "\xe2\x82", "\xf0\x9f\x98", "\x80", "\xff"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        size_t i = 0;
        ASSERT_INT(capid_utf8_next(bad[k], strlen(bad[k]), &i), 0xfffd);
        ASSERT_INT(i, 1);
    }
}

/* The white-space set is exactly Python's str.isspace() plus U+FEFF. */
TEST(utf8_is_space_is_exactly_the_documented_set)
{
    static const int32_t want[] = {0x09,   0x0a,   0x0b,   0x0c,   0x0d,   0x1c,   0x1d,   0x1e,
                                   0x1f,   0x20,   0x85,   0xa0,   0x1680, 0x2000, 0x2001, 0x2002,
                                   0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
                                   0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff};
    size_t n = 0;
    for (int32_t cp = 0; cp <= 0x10ffff; cp++) {
        if (!capid_is_space(cp))
            continue;
        if (n < sizeof(want) / sizeof(want[0]) && want[n] == cp)
            n++;
        else
            capid_test_fail(__FILE__, __LINE__, "U+%04X is space, not expected", (unsigned)cp);
    }
    ASSERT_INT(n, sizeof(want) / sizeof(want[0]));
    /* Not white space: NUL, SOH, zero-width space, word joiner, NEL's neighbours. */
    ASSERT_TRUE(!capid_is_space(0x00));
    ASSERT_TRUE(!capid_is_space(0x01));
    ASSERT_TRUE(!capid_is_space(0x200b));
    ASSERT_TRUE(!capid_is_space(0x2060));
    ASSERT_TRUE(!capid_is_space(0x84));
    ASSERT_TRUE(!capid_is_space(-1));
    ASSERT_TRUE(!capid_is_space(0x110000));
}
