#include "test.h"

#include "util/buf.h"
#include "util/err.h"
#include "util/sha256.h"

#include <sys/mman.h>
#include <unistd.h>

TEST(buf_refuses_to_grow_past_max)
{
    struct capid_buf b;
    capid_buf_init(&b, 8);
    ASSERT_INT(capid_buf_puts(&b, "12345678"), CAPID_OK);
    ASSERT_INT(capid_buf_putc(&b, 'x'), CAPID_ETOOBIG);
    ASSERT_INT(b.len, 8);
    ASSERT_STR(b.data, "12345678");
    capid_buf_release(&b);
}

TEST(buf_json_escapes_controls_quotes_and_keeps_utf8)
{
    struct capid_buf b;
    capid_buf_init(&b, 0);
    const char in[] = "a\"b\\c\n\x01\xc3\xa9";
    capid_buf_json_str(&b, in, sizeof(in) - 1);
    ASSERT_STR(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
    capid_buf_release(&b);
}

TEST(buf_json_numbers_round_trip)
{
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_json_num(&b, 246.9);
    capid_buf_putc(&b, ' ');
    capid_buf_json_num(&b, 12.0);
    capid_buf_putc(&b, ' ');
    capid_buf_json_num(&b, 0.1 + 0.2);
    ASSERT_STR(b.data, "246.9 12 0.30000000000000004");
    capid_buf_release(&b);
}

TEST(sha256_known_digests)
{
    struct capid_sha256 h;
    char out[65];
    ASSERT_INT(capid_sha256_init(&h), CAPID_OK);
    capid_sha256_hex(&h, "", 0, out);
    ASSERT_STR(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* SPEC 9 / mapping.json case 1: user@example.com */
    capid_sha256_hex(&h, "user@example.com", 16, out);
    ASSERT_STR(out, "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514");
    capid_sha256_release(&h);
}

/* The slot holding (tag, key) (-1 if none): found by content. */
static int memo_slot_of(const struct capid_sha256_memo *m, unsigned char tag, const char *key)
{
    size_t n = strlen(key);
    for (int i = 0; i < CAPID_SHA256_MEMO_SLOTS; i++)
        if (m->slot[i].len == n + 1 && m->slot[i].tag == tag && memcmp(m->slot[i].key, key, n) == 0)
            return i;
    return -1;
}

static int memo_used(const struct capid_sha256_memo *m)
{
    int used = 0;
    for (int i = 0; i < CAPID_SHA256_MEMO_SLOTS; i++)
        used += m->slot[i].len != 0;
    return used;
}

/* What the mapper does: the digest of a value derived from key (here the
 * key upper-cased, or reversed under tag 2), through the memo. */
static void memo_hex(struct capid_sha256 *h, struct capid_sha256_memo *m, unsigned char tag,
                     const char *key, char out[65])
{
    char v[64];
    size_t n = strlen(key);
    for (size_t i = 0; i < n; i++)
        v[i] = tag == 2 ? key[n - 1 - i]
                        : (char)(key[i] >= 'a' && key[i] <= 'z' ? key[i] - 32 : key[i]);
    if (!capid_sha256_memo_get(m, tag, key, n, out))
        capid_sha256_memo_put(h, m, tag, key, n, v, n, out);
}

static void fresh_hex(struct capid_sha256 *h, unsigned char tag, const char *key, char out[65])
{
    char v[64];
    size_t n = strlen(key);
    for (size_t i = 0; i < n; i++)
        v[i] = tag == 2 ? key[n - 1 - i]
                        : (char)(key[i] >= 'a' && key[i] <= 'z' ? key[i] - 32 : key[i]);
    capid_sha256_hex(h, v, n, out);
}

TEST(sha256_memo_hits_and_misses_give_the_fresh_digest)
{
    struct capid_sha256 h;
    struct capid_sha256_memo *m = capid_sha256_memo_new();
    char got[65], want[65];
    const char *keys[] = {"fr",
                          "us",
                          "paris",
                          "75005",
                          "f",
                          "m",
                          "new york",
                          "10001",
                          "saint-remy-de-provence",
                          "0123456789abcdef0123456789abcdef0123456789ab"};
    ASSERT_TRUE(m != NULL);
    ASSERT_INT(capid_sha256_init(&h), CAPID_OK);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
            for (unsigned char tag = 1; tag <= 2; tag++) { /* one key, two tags: two digests */
                fresh_hex(&h, tag, keys[i], want);
                memo_hex(&h, m, tag, keys[i], got);
                ASSERT_STR(got, want);
                ASSERT_TRUE(memo_slot_of(m, tag, keys[i]) >= 0); /* short enough: kept */
                ASSERT_TRUE(round == 0 ||
                            capid_sha256_memo_get(m, tag, keys[i], strlen(keys[i]), got));
                ASSERT_STR(got, want);
            }
        }
    }
    /* A prefix and an extension of a kept key are other keys. */
    ASSERT_TRUE(!capid_sha256_memo_get(m, 1, "pari", 4, got));
    ASSERT_TRUE(!capid_sha256_memo_get(m, 1, "parisx", 6, got));
    ASSERT_TRUE(!capid_sha256_memo_get(m, 3, "paris", 5, got));
    capid_sha256_memo_free(m);
    capid_sha256_release(&h);
}

TEST(sha256_memo_slot_collisions_replace_and_compare_all_bytes)
{
    struct capid_sha256 h;
    struct capid_sha256_memo *m = capid_sha256_memo_new();
    char a[32], b[32], got[65], want[65];
    int slot = -1, slot_of[4096];
    ASSERT_INT(capid_sha256_init(&h), CAPID_OK);
    /* Two keys of one slot: a birthday search over v0, v1, ... */
    for (int i = 0; i < 4096 && slot < 0; i++) {
        snprintf(b, sizeof(b), "v%d", i);
        memo_hex(&h, m, 1, b, got);
        slot_of[i] = memo_slot_of(m, 1, b);
        for (int j = 0; j < i && slot < 0; j++) {
            if (slot_of[j] == slot_of[i]) {
                snprintf(a, sizeof(a), "v%d", j);
                slot = slot_of[i];
            }
        }
    }
    ASSERT_TRUE(slot >= 0);
    /* Alternate them: each gives its own digest and takes the slot. */
    for (int round = 0; round < 4; round++) {
        const char *v = round % 2 ? b : a, *other = round % 2 ? a : b;
        ASSERT_TRUE(!capid_sha256_memo_get(m, 1, v, strlen(v), got));
        fresh_hex(&h, 1, v, want);
        memo_hex(&h, m, 1, v, got);
        ASSERT_STR(got, want);
        ASSERT_INT(memo_slot_of(m, 1, v), slot);
        ASSERT_INT(memo_slot_of(m, 1, other), -1);
    }
    capid_sha256_memo_free(m);
    capid_sha256_release(&h);
}

TEST(sha256_memo_long_and_empty_keys_are_not_kept)
{
    struct capid_sha256 h;
    struct capid_sha256_memo *m = capid_sha256_memo_new();
    char k[CAPID_SHA256_MEMO_MAX + 2], got[65], want[65];
    ASSERT_INT(capid_sha256_init(&h), CAPID_OK);
    memset(k, 'x', sizeof(k) - 1);
    k[sizeof(k) - 1] = '\0';
    fresh_hex(&h, 1, k, want);
    memo_hex(&h, m, 1, k, got);
    ASSERT_STR(got, want);
    ASSERT_TRUE(!capid_sha256_memo_get(m, 1, k, strlen(k), got));
    capid_sha256_memo_put(&h, m, 1, "", 0, "", 0, got);
    ASSERT_STR(got, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ASSERT_TRUE(!capid_sha256_memo_get(m, 1, "", 0, got));
    ASSERT_INT(memo_used(m), 0);
    /* The longest kept key, and a NULL memo. */
    k[CAPID_SHA256_MEMO_MAX] = '\0';
    fresh_hex(&h, 1, k, want);
    memo_hex(&h, m, 1, k, got);
    ASSERT_STR(got, want);
    ASSERT_INT(memo_used(m), 1);
    ASSERT_TRUE(capid_sha256_memo_get(m, 1, k, CAPID_SHA256_MEMO_MAX, got));
    ASSERT_STR(got, want);
    ASSERT_TRUE(!capid_sha256_memo_get(NULL, 1, k, CAPID_SHA256_MEMO_MAX, got));
    memo_hex(&h, NULL, 1, k, got);
    ASSERT_STR(got, want);
    capid_sha256_memo_free(m);
    capid_sha256_memo_free(NULL);
    capid_sha256_release(&h);
}

/* What capid_json_escape must write, a byte at a time. */
static size_t escape_ref(char *o, const unsigned char *s, size_t n)
{
    size_t k = 0;
    o[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        const char *e = c == '"'    ? "\\\""
                        : c == '\\' ? "\\\\"
                        : c == '\n' ? "\\n"
                        : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t"
                        : c == '\b' ? "\\b"
                        : c == '\f' ? "\\f"
                                    : NULL;
        if (e)
            k += (size_t)sprintf(o + k, "%s", e);
        else if (c < 0x20)
            k += (size_t)sprintf(o + k, "\\u%04x", c);
        else
            o[k++] = (char)c;
    }
    o[k++] = '"';
    return k;
}

/* Every length 0..40, one special byte (or none) at every position, the
 * string at every alignment and ending right before an unmapped page. */
TEST(json_escape_special_bytes_at_every_position_and_length)
{
    static const unsigned char specials[] = {0, '"', '\\', '\n', 0x01, 0x1f, '\t', 0xc3};
    long page = sysconf(_SC_PAGESIZE);
    unsigned char *map =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_TRUE(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    ASSERT_INT(mprotect(map + page, (size_t)page, PROT_NONE), 0);
    char got[6 * 40 + 3 + 16], want[6 * 40 + 3];
    int bad = 0;
    for (size_t n = 0; n <= 40; n++) {
        for (size_t pos = 0; pos <= n; pos++) { /* pos == n: no special byte */
            for (size_t sp = 0; sp < sizeof(specials); sp++) {
                for (size_t at = 0; at < 2; at++) { /* 0: before the guard page, 1: mid-page */
                    unsigned char *s = at ? map + 100 + pos % 16 : map + page - n;
                    for (size_t i = 0; i < n; i++)
                        s[i] = (unsigned char)('a' + i % 26);
                    if (pos < n)
                        s[pos] = specials[sp];
                    if (specials[sp] == 0xc3 && pos + 1 < n)
                        s[pos + 1] = 0xa9; /* é: copied as is */
                    size_t wn = escape_ref(want, s, n);
                    char *end = capid_json_escape(got, (const char *)s, n);
                    if ((size_t)(end - got) != wn || memcmp(got, want, wn)) {
                        if (bad++ < 5)
                            capid_test_fail(__FILE__, __LINE__, "n %zu pos %zu byte 0x%02x: %.*s",
                                            n, pos, specials[sp], (int)(end - got), got);
                    }
                }
            }
        }
    }
    munmap(map, (size_t)page * 2);
}
