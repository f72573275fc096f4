#include "test.h"

#include "util/buf.h"
#include "util/err.h"
#include "util/sha256.h"

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

/* The slot of a value the memo holds (-1 if none): found by content. */
static int memo_slot_of(const struct capid_sha256_memo *m, const char *v)
{
    size_t n = strlen(v);
    for (int i = 0; i < CAPID_SHA256_MEMO_SLOTS; i++)
        if (m->slot[i].len == n + 1 && memcmp(m->slot[i].key, v, n) == 0)
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

TEST(sha256_memo_hits_and_misses_give_the_fresh_digest)
{
    struct capid_sha256 h;
    struct capid_sha256_memo *m = capid_sha256_memo_new();
    char got[65], want[65];
    const char *vals[] = {"fr",
                          "us",
                          "paris",
                          "75005",
                          "f",
                          "m",
                          "newyork",
                          "10001",
                          "saintremydeprovence",
                          "0123456789abcdef0123456789abcdef0123456789abcd"};
    ASSERT_TRUE(m != NULL);
    ASSERT_INT(capid_sha256_init(&h), CAPID_OK);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
            size_t n = strlen(vals[i]);
            capid_sha256_hex(&h, vals[i], n, want);
            capid_sha256_hex_memo(&h, m, vals[i], n, got);
            ASSERT_STR(got, want);
            ASSERT_TRUE(memo_slot_of(m, vals[i]) >= 0); /* <= CAPID_SHA256_MEMO_MAX: kept */
        }
    }
    /* A prefix and an extension of a kept value are other values. */
    capid_sha256_hex(&h, "pari", 4, want);
    capid_sha256_hex_memo(&h, m, "pari", 4, got);
    ASSERT_STR(got, want);
    capid_sha256_hex(&h, "parisx", 6, want);
    capid_sha256_hex_memo(&h, m, "parisx", 6, got);
    ASSERT_STR(got, want);
    capid_sha256_memo_free(m);
    capid_sha256_release(&h);
}

TEST(sha256_memo_slot_collisions_replace_and_compare_all_bytes)
{
    struct capid_sha256 h;
    struct capid_sha256_memo *m = capid_sha256_memo_new();
    char a[32], b[32], got[65], want[65];
    int sa = -1, sb = -1;
    ASSERT_INT(capid_sha256_init(&h), CAPID_OK);
    /* Two values of one slot: birthday search over v0, v1, ... */
    int slot_of[4096];
    for (int i = 0; i < 4096 && sb < 0; i++) {
        snprintf(b, sizeof(b), "v%d", i);
        capid_sha256_hex_memo(&h, m, b, strlen(b), got);
        slot_of[i] = memo_slot_of(m, b);
        for (int j = 0; j < i; j++) {
            if (slot_of[j] == slot_of[i]) {
                snprintf(a, sizeof(a), "v%d", j);
                sa = sb = slot_of[i];
                break;
            }
        }
    }
    ASSERT_TRUE(sb >= 0);
    /* Alternate them: each lookup must give its own digest and take the slot. */
    for (int round = 0; round < 4; round++) {
        const char *v = round % 2 ? a : b;
        capid_sha256_hex(&h, v, strlen(v), want);
        capid_sha256_hex_memo(&h, m, v, strlen(v), got);
        ASSERT_STR(got, want);
        ASSERT_INT(memo_slot_of(m, v), sa);
        ASSERT_INT(memo_slot_of(m, round % 2 ? b : a), -1);
    }
    capid_sha256_memo_free(m);
    capid_sha256_release(&h);
}

TEST(sha256_memo_long_and_empty_values_bypass_it)
{
    struct capid_sha256 h;
    struct capid_sha256_memo *m = capid_sha256_memo_new();
    char v[CAPID_SHA256_MEMO_MAX + 2], got[65], want[65];
    ASSERT_INT(capid_sha256_init(&h), CAPID_OK);
    memset(v, 'x', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    capid_sha256_hex(&h, v, CAPID_SHA256_MEMO_MAX + 1, want);
    capid_sha256_hex_memo(&h, m, v, CAPID_SHA256_MEMO_MAX + 1, got);
    ASSERT_STR(got, want);
    capid_sha256_hex_memo(&h, m, "", 0, got);
    ASSERT_STR(got, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ASSERT_INT(memo_used(m), 0);
    /* The longest kept value, and a NULL memo. */
    v[CAPID_SHA256_MEMO_MAX] = '\0';
    capid_sha256_hex(&h, v, CAPID_SHA256_MEMO_MAX, want);
    capid_sha256_hex_memo(&h, m, v, CAPID_SHA256_MEMO_MAX, got);
    ASSERT_STR(got, want);
    ASSERT_INT(memo_used(m), 1);
    capid_sha256_hex_memo(&h, NULL, v, CAPID_SHA256_MEMO_MAX, got);
    ASSERT_STR(got, want);
    capid_sha256_memo_free(m);
    capid_sha256_memo_free(NULL);
    capid_sha256_release(&h);
}
