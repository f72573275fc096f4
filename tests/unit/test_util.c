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
