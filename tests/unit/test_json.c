/* The event JSON parser (src/event/json.c): differential against cJSON on
 * every valid input we have (the trees must be identical, links included),
 * number conversion against strtod, UTF-8 against capid_utf8_valid, and a
 * table of invalid inputs with their status and detail. Inputs are parsed
 * from exact-size heap copies so ASan sees any read past the end. */
#include "test.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "event/event.h"
#include "event/event_int.h"
#include "event/json.h"
#include "util/buf.h"
#include "util/utf8.h"

#define S(lit) lit, sizeof(lit) - 1

static char *dup_exact(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);
    memcpy(p, s, len);
    return p;
}

static bool in_block(const struct capid_arena *a, const void *p)
{
    return a && (const char *)p >= a->mem && (const char *)p < a->mem + CAPID_ARENA_BLOCK;
}

/* Frees the parts of a tree that json.c took from malloc (not from a). */
static void free_mixed(cJSON *n, const struct capid_arena *a)
{
    while (n) {
        cJSON *next = n->next;
        free_mixed(n->child, a);
        if (!in_block(a, n->valuestring))
            free(n->valuestring);
        if (!in_block(a, n->string))
            free(n->string);
        if (!in_block(a, n))
            free(n);
        n = next;
    }
}

/* cJSON's link invariants under v: siblings doubly linked, the first
 * child's prev is the last child, the last child's next is NULL. */
static bool links_ok(const cJSON *v)
{
    const cJSON *c = v->child, *last = NULL;
    for (; c; c = c->next) {
        if (last && c->prev != last)
            return false;
        if (!links_ok(c))
            return false;
        last = c;
    }
    return !v->child || v->child->prev == last;
}

/* Identical trees: types (all flag bits), keys, strings, valueint and the
 * bits of valuedouble. Writes the first difference into why. */
static bool same_tree(const cJSON *a, const cJSON *b, char *why, size_t n)
{
    const char *key = a->string ? a->string : "";
    if (a->type != b->type) {
        snprintf(why, n, "type %d vs %d at key '%s'", a->type, b->type, key);
        return false;
    }
    if (!a->string != !b->string || (a->string && strcmp(a->string, b->string))) {
        snprintf(why, n, "key '%s' vs '%s'", a->string ? a->string : "(null)",
                 b->string ? b->string : "(null)");
        return false;
    }
    if (!a->valuestring != !b->valuestring ||
        (a->valuestring && strcmp(a->valuestring, b->valuestring))) {
        snprintf(why, n, "string '%.60s' vs '%.60s'", a->valuestring ? a->valuestring : "(null)",
                 b->valuestring ? b->valuestring : "(null)");
        return false;
    }
    /* b is capid's: its string, object and array nodes carry lengths in
     * valueint (event.h), which must be right; cJSON leaves 0 there. */
    int t = a->type & 0xff;
    bool lengths = t == cJSON_String || t == cJSON_Object || t == cJSON_Array;
    if (lengths && (a->valueint != 0 || (b->string && capid_jkey_len(b) != strlen(b->string)) ||
                    (b->valuestring && capid_jstr_len(b) != strlen(b->valuestring)))) {
        snprintf(why, n, "lengths 0x%x wrong at key '%s'", (unsigned)b->valueint, key);
        return false;
    }
    if ((!lengths && a->valueint != b->valueint) ||
        memcmp(&a->valuedouble, &b->valuedouble, sizeof(double))) {
        snprintf(why, n, "number %d/%.17g vs %d/%.17g at key '%s'", a->valueint, a->valuedouble,
                 b->valueint, b->valuedouble, key);
        return false;
    }
    const cJSON *x = a->child, *y = b->child;
    for (; x && y; x = x->next, y = y->next)
        if (!same_tree(x, y, why, n))
            return false;
    if (x || y) {
        snprintf(why, n, "child count differs under key '%s'", key);
        return false;
    }
    return true;
}

static int depth_of(const cJSON *v)
{
    int d = 0;
    for (const cJSON *c = v->child; c; c = c->next) {
        int k = depth_of(c);
        d = k > d ? k : d;
    }
    return d + 1;
}

/* cJSON_Compare finds members by key, so it cannot compare duplicates. */
static bool has_dup_keys(const cJSON *v)
{
    for (const cJSON *c = v->child; c; c = c->next) {
        for (const cJSON *p = v->child; p != c && c->string; p = p->next)
            if (p->string && strcmp(p->string, c->string) == 0)
                return true;
        if (has_dup_keys(c))
            return true;
    }
    return false;
}

/* Parses text with cJSON and with json.c three ways (malloc only, an empty
 * arena, an almost full arena) and asserts identical trees. */
static void diff_one(const char *text, size_t len, const struct capid_limits *lim,
                     const char *label)
{
    char *copy = dup_exact(text, len), why[256] = "";
    cJSON *want = cJSON_ParseWithLength(copy, len);
    if (!want) {
        capid_test_fail(__FILE__, __LINE__, "%s: cJSON rejects %.80s", label, text);
        free(copy);
        return;
    }
    for (int mode = 0; mode < 3; mode++) {
        struct capid_arena *a = mode ? calloc(1, sizeof(*a)) : NULL;
        if (mode == 2)
            a->used = CAPID_ARENA_BLOCK - 100;
        struct capid_perr err = {0};
        cJSON *got = NULL;
        enum capid_event_status st = capid_json_parse(copy, len, lim, a, &got, &err);
        if (st != CAPID_EV_OK) {
            capid_test_fail(__FILE__, __LINE__, "%s (mode %d): rejected: %s; input %.80s", label,
                            mode, err.msg ? err.msg : "?", text);
        } else {
            /* cJSON_Compare is exponential in the depth of nested objects. */
            if (!same_tree(want, got, why, sizeof(why)) ||
                (depth_of(want) <= 40 && !has_dup_keys(want) && !cJSON_Compare(want, got, 1)))
                capid_test_fail(__FILE__, __LINE__, "%s (mode %d): %s; input %.80s", label, mode,
                                why, text);
            if (!links_ok(got) || got->next || got->prev)
                capid_test_fail(__FILE__, __LINE__, "%s (mode %d): broken links", label, mode);
            if (mode == 1 && len < 8000 && a->overflowed)
                capid_test_fail(__FILE__, __LINE__, "%s: arena overflowed", label);
            if (mode == 0)
                cJSON_Delete(got);
            else
                free_mixed(got, a);
        }
        free(a);
    }
    cJSON_Delete(want);
    free(copy);
}

static void diff_str(const char *text)
{
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    diff_one(text, strlen(text), &lim, text);
}

/* Expects text to be refused with status st and a detail containing msg. */
static void expect_error(const char *text, size_t len, const struct capid_limits *lim,
                         enum capid_event_status st, const char *msg, int line)
{
    char *copy = dup_exact(text, len);
    struct capid_perr err = {0};
    cJSON *root = (cJSON *)1;
    enum capid_event_status got = capid_json_parse(copy, len, lim, NULL, &root, &err);
    if (got != st || root || !err.msg || !strstr(err.msg, msg))
        capid_test_fail(__FILE__, line, "input %.60s: got status %d \"%s\", want %d \"%s\"", text,
                        got, err.msg ? err.msg : "(none)", st, msg);
    if (got == CAPID_EV_OK)
        cJSON_Delete(root);
    free(copy);
}

TEST(json_matches_cjson_on_shared_vectors)
{
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    char *json = capid_test_slurp(capid_test_shared("vectors/mapping.json"), NULL);
    cJSON *cases = json ? cJSON_Parse(json) : NULL;
    ASSERT_TRUE(cJSON_GetArraySize(cases) > 0);
    const cJSON *tc;
    int n = 0;
    cJSON_ArrayForEach(tc, cases)
    {
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(tc, "input");
        char *compact = cJSON_IsString(in) ? strdup(in->valuestring) : cJSON_PrintUnformatted(in);
        char *pretty = cJSON_Print(in); /* tabs and newlines between tokens */
        diff_one(compact, strlen(compact), &lim, "shared vector");
        diff_one(pretty, strlen(pretty), &lim, "shared vector, formatted");
        free(compact);
        free(pretty);
        n++;
    }
    ASSERT_TRUE(n >= 28);
    cJSON_Delete(cases);
    free(json);
}

/* gen-corpus sits next to the unit-tests binary (both built by `make`). */
TEST(json_matches_cjson_on_generated_corpus)
{
    char exe[4096], cmd[8300], tmp[] = "/tmp/capid-corpus-XXXXXX";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    ASSERT_TRUE(n > 0);
    if (n <= 0)
        return;
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(cmd, sizeof(cmd), "%s/gen-corpus", exe);
    if (access(cmd, X_OK) != 0) {
        capid_test_fail(__FILE__, __LINE__, "%s is missing: build it (make all)", cmd);
        return;
    }
    int fd = mkstemp(tmp);
    ASSERT_TRUE(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof(cmd), "'%s/gen-corpus' 2000 --now 1764000000 > '%s'", exe, tmp);
    ASSERT_INT(system(cmd), 0);
    size_t len = 0;
    char *data = capid_test_slurp(tmp, &len);
    unlink(tmp);
    ASSERT_TRUE(data != NULL);
    if (!data)
        return;

    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    int lines = 0;
    for (char *s = data, *nl; s < data + len; s = nl + 1) {
        if (!(nl = memchr(s, '\n', (size_t)(data + len - s))))
            nl = data + len;
        if (nl == s)
            continue;
        size_t n_line = (size_t)(nl - s);
        diff_one(s, n_line, &lim, "corpus line");
        /* The same line through the event API: accepted, same tree. */
        struct capid_event ev;
        struct capid_perr err = {0};
        char *copy = dup_exact(s, n_line), why[256] = "";
        ASSERT_INT(capid_event_parse(&ev, copy, n_line, &lim, 1764000000, &err), CAPID_EV_OK);
        cJSON *want = cJSON_ParseWithLength(copy, n_line);
        if (ev.root && want && !same_tree(want, ev.root, why, sizeof(why)))
            capid_test_fail(__FILE__, __LINE__, "event tree: %s", why);
        cJSON_Delete(want);
        capid_event_release(&ev);
        free(copy);
        lines++;
    }
    ASSERT_INT(lines, 2000);
    free(data);
}

TEST(json_matches_cjson_on_handwritten_values)
{
    static const char *ok[] = {
        "{}",
        "[]",
        "{ }",
        " [ ] ",
        "\t{\"a\" : [ 1 , 2 ] }\r\n",
        "[[],{},[{}],{\"a\":{\"b\":[null]}},[[[]]]]",
        "{\"a\":1,\"a\":2}", /* duplicates are event.c's business */
        "{\"\":\"\",\"k\\u00e9y\\n\":\"v\"}",
        "true",
        "false",
        "null",
        "[true,false,null]",
        "0",
        "-0",
        "-0.0",
        "0e0",
        "1.5e-7",
        "123456789012345678",
        "-123456789012345678",
        "9007199254740992",
        "9007199254740993",
        "18446744073709551616",
        "1E+2",
        "1e-2",
        "0.1",
        "0.30000000000000004",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "4.9e-324",
        "1e-400",
        "1e22",
        "1e23",
        "1e-22",
        "123456789e-30",
        "3e9",
        "-3e9",
        "2147483647",
        "2147483648",
        "-2147483648",
        "-2147483649",
        "2147483646.5",
        "-2147483647.5",
        "1.9",
        "-1.9",
        "[1,-1,0.5,-0.5,10,100e-2]",
        "\"\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u00e9\\u20AC\\uD83D\\uDE00\\u0001\\u001f\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "\"\\uFFFF\\uDBFF\\uDFFF\\uD800\\uDC00\"",
        "\"\xf4\x8f\xbf\xbf\xef\xbf\xbf\xed\x9f\xbf\xee\x80\x80\"",
        "\"0123456789abcdef0123456789abcdef\\\"0123456789\"",
        "\"ends in non-ASCII \xc3\xa9\"",
        "\" \x7f \"",
        "{\"event_name\":\"purchase\",\"value\":12.5,\"items\":[{\"id\":\"x\",\"qty\":2}]}",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        diff_str(ok[i]);

    /* A long array, long strings, many keys. */
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_putc(&b, '[');
    for (int i = 0; i < 2000; i++)
        capid_buf_printf(&b, "%s%d.%d", i ? "," : "", i * 7919 - 5000, i % 97);
    capid_buf_puts(&b, "]");
    diff_one(b.data, b.len, NULL, "long array");
    capid_buf_reset(&b);
    capid_buf_putc(&b, '{');
    for (int i = 0; i < 500; i++)
        capid_buf_printf(&b, "%s\"key%d\":\"%0*d\"", i ? "," : "", i, i % 300, i);
    capid_buf_putc(&b, '}');
    diff_one(b.data, b.len, NULL, "many keys");
    capid_buf_release(&b);
}

/* A special sequence (escape, UTF-8, escaped quote) at every offset around
 * the 8-byte scanning blocks, in keys and values. */
TEST(json_escapes_at_every_offset)
{
    static const char *specials[] = {"\\n",     "\\\"",           "\xc3\xa9", "\xf0\x9f\x98\x80",
                                     "\\u00e9", "\\ud83d\\ude00", "\\\\"};
    static const char lower[] = "abcdefghijklmnopqrstuvwxyz",
                      upper[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    char text[256], label[64];
    for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++)
        for (int pre = 0; pre < 20; pre++)
            for (int post = 0; post < 20; post += 3) {
                int n = snprintf(text, sizeof(text), "{\"%.*s%s%.*s\":\"%.*s%s%.*s\"}", pre, lower,
                                 specials[k], post, upper, post, lower, specials[k], pre, upper);
                snprintf(label, sizeof(label), "special %zu at %d", k, pre);
                diff_one(text, (size_t)n, &lim, label);
            }
    /* A control character at every offset is reported at its byte. */
    for (int pre = 0; pre < 20; pre++) {
        char want[64];
        int n = snprintf(text, sizeof(text), "[\"%.*s\x01xyz\"]", pre, lower);
        snprintf(want, sizeof(want), "control character 0x01 in a string at byte %d", pre + 2);
        expect_error(text, (size_t)n, &lim, CAPID_EV_INVALID_JSON, want, __LINE__);
    }
}

/* Numbers: bit-exact against strtod (glibc's is correctly rounded) and
 * cJSON's saturating valueint, over a deterministic sample of the grammar. */
static uint64_t rng = 0x2545F4914F6CDD1Dull;

static unsigned rnd(unsigned n)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (unsigned)((rng * 2685821657736338717ull) >> 33) % n;
}

static int cjson_int(double v)
{
    return v >= INT_MAX ? INT_MAX : v <= (double)INT_MIN ? INT_MIN : (int)v;
}

TEST(json_numbers_match_strtod)
{
    struct capid_limits lim = {0, 32};
    char num[96];
    int checked = 0, rejected = 0;
    for (int t = 0; t < 200000; t++) {
        size_t n = 0;
        if (rnd(2))
            num[n++] = '-';
        unsigned ilen = 1 + rnd(t % 3 ? 8 : 22);
        num[n++] = ilen == 1 ? (char)('0' + rnd(10)) : (char)('1' + rnd(9));
        for (unsigned i = 1; i < ilen; i++)
            num[n++] = (char)('0' + (rnd(4) ? rnd(10) : 0));
        if (rnd(2)) {
            num[n++] = '.';
            for (unsigned i = 0, fl = 1 + rnd(t % 5 ? 6 : 24); i < fl; i++)
                num[n++] = (char)('0' + rnd(10));
        }
        if (rnd(3) == 0) {
            num[n++] = rnd(2) ? 'e' : 'E';
            unsigned r = rnd(3);
            if (r)
                num[n++] = r == 1 ? '-' : '+';
            for (unsigned i = 0, el = 1 + rnd(3); i < el; i++)
                num[n++] = (char)('0' + rnd(t % 7 ? 3 : 10));
        }
        num[n] = '\0';
        double want = strtod(num, NULL);
        char *copy = dup_exact(num, n);
        struct capid_perr err = {0};
        cJSON *got = NULL;
        enum capid_event_status st = capid_json_parse(copy, n, &lim, NULL, &got, &err);
        if (!isfinite(want)) {
            rejected++;
            if (st != CAPID_EV_INVALID_JSON || !strstr(err.msg, "number out of range at byte 0"))
                capid_test_fail(__FILE__, __LINE__, "%s: got status %d, want out of range", num,
                                st);
        } else if (st != CAPID_EV_OK) {
            capid_test_fail(__FILE__, __LINE__, "%s: rejected: %s", num, err.msg);
        } else {
            checked++;
            if (!cJSON_IsNumber(got) || memcmp(&got->valuedouble, &want, sizeof(want)) ||
                got->valueint != cjson_int(want))
                capid_test_fail(__FILE__, __LINE__, "%s: got %.17g (%d), want %.17g (%d)", num,
                                got->valuedouble, got->valueint, want, cjson_int(want));
            if (n < 60 && t % 16 == 0)
                diff_one(num, n, &lim, "random number");
        }
        cJSON_Delete(got);
        free(copy);
    }
    ASSERT_TRUE(checked > 150000);
    ASSERT_TRUE(rejected > 0);
}

TEST(json_number_values)
{
    static const struct {
        const char *in;
        double v;
        int i;
    } cases[] = {
        {"0", 0.0, 0},
        {"-0", -0.0, 0},
        {"1.5e-7", 1.5e-7, 0},
        {"123456789012345678", 123456789012345678.0, INT_MAX},
        {"-123456789012345678", -123456789012345678.0, INT_MIN},
        {"2147483647", 2147483647.0, INT_MAX},
        {"-2147483648", -2147483648.0, INT_MIN},
        {"-2147483647.5", -2147483647.5, -2147483647},
        {"1e-400", 0.0, 0},
        {"-1.9", -1.9, -1},
        {"0.1", 0.1, 0},
        {"1E+2", 100.0, 100},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        cJSON *got = NULL;
        ASSERT_INT(capid_json_parse(cases[k].in, strlen(cases[k].in), NULL, NULL, &got, NULL),
                   CAPID_EV_OK);
        if (!got)
            continue;
        ASSERT_INT(got->type, cJSON_Number);
        ASSERT_TRUE(memcmp(&got->valuedouble, &cases[k].v, sizeof(double)) == 0);
        ASSERT_INT(got->valueint, cases[k].i);
        ASSERT_TRUE(got->valuestring == NULL && got->string == NULL);
        cJSON_Delete(got);
    }
    /* -0 keeps its sign (cJSON's strtod does too). */
    cJSON *z = NULL;
    ASSERT_INT(capid_json_parse("-0", 2, NULL, NULL, &z, NULL), CAPID_EV_OK);
    ASSERT_TRUE(z && signbit(z->valuedouble));
    cJSON_Delete(z);
}

/* The strict UTF-8 rules are capid_utf8_valid's: compare on every sequence
 * of up to 4 bytes drawn from the interesting byte values. */
TEST(json_utf8_matches_validator)
{
    static const unsigned char bytes[] = {0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                                          0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xed, 0xee,
                                          0xef, 0xf0, 0xf1, 0xf4, 0xf5, 0xff};
    const size_t nb = sizeof(bytes);
    char text[8];
    int bad = 0;
    for (size_t len = 1; len <= 4; len++) {
        size_t total = 1;
        for (size_t k = 0; k < len; k++)
            total *= nb;
        for (size_t code = 0; code < total; code++) {
            size_t c = code;
            text[0] = '"';
            for (size_t k = 0; k < len; k++, c /= nb)
                text[1 + k] = (char)bytes[c % nb];
            text[1 + len] = '"';
            bool want = capid_utf8_valid(text + 1, len);
            cJSON *got = NULL;
            struct capid_perr err = {0};
            enum capid_event_status st = capid_json_parse(text, len + 2, NULL, NULL, &got, &err);
            if ((st == CAPID_EV_OK) != want ||
                (st == CAPID_EV_OK && memcmp(got->valuestring, text + 1, len)) ||
                (st != CAPID_EV_OK && !strstr(err.msg, "invalid UTF-8 at byte "))) {
                if (bad++ < 5)
                    capid_test_fail(__FILE__, __LINE__, "bytes %02x %02x %02x %02x (%zu): %s",
                                    (unsigned char)text[1], (unsigned char)text[2],
                                    (unsigned char)text[3], (unsigned char)text[4], len,
                                    err.msg ? err.msg : "accepted");
            }
            cJSON_Delete(got);
        }
    }
    ASSERT_INT(bad, 0);
}

static const struct {
    const char *in;
    size_t len;
    const char *msg;
} invalid[] = {
    {S(""), "truncated JSON: input ends at byte 0"},
    {S("   "), "truncated JSON: input ends at byte 3"},
    {S("{\"a\":1} x"), "unexpected data after the JSON value at byte 8"},
    {S("{\"a\":1}}"), "unexpected data after the JSON value at byte 7"},
    {S("[1,2]]"), "unexpected data after the JSON value at byte 5"},
    {S("{}{}"), "unexpected data after the JSON value at byte 2"},
    {S("0x10"), "unexpected data after the JSON value at byte 1"},
    {S("[1,]"), "JSON syntax error at byte 3: expected a value"},
    {S("{\"a\":1,}"), "JSON syntax error at byte 7: expected '\"' (a key)"},
    {S("{1:2}"), "JSON syntax error at byte 1: expected '\"' (a key)"},
    {S("{\"a\" 1}"), "JSON syntax error at byte 5: expected ':'"},
    {S("{\"a\":1 \"b\":2}"), "JSON syntax error at byte 7: expected ',' or '}'"},
    {S("[1 2]"), "JSON syntax error at byte 3: expected ',' or ']'"},
    {S("'a'"), "JSON syntax error at byte 0: expected a value"},
    {S("\"\\x\""), "invalid escape in string at byte 1"},
    {S("\"\\U0041\""), "invalid escape in string at byte 1"},
    {S("\"\\u12G4\""), "invalid \\u escape in string at byte 1"},
    {S("\"\\u00e\""), "invalid \\u escape in string at byte 1"},
    {S("\"\\ud83d\\ude0\""), "invalid \\u escape in string at byte 7"},
    {S("\"\\ud800\""), "lone UTF-16 surrogate \\uD800 in string at byte 1"},
    {S("\"\\udc00\""), "lone UTF-16 surrogate \\uDC00 in string at byte 1"},
    {S("\"\\ud800\\u0041\""), "lone UTF-16 surrogate \\uD800 in string at byte 1"},
    {S("\"\\ud800\\ud800\""), "lone UTF-16 surrogate \\uD800 in string at byte 1"},
    {S("\"\\ud800x\""), "lone UTF-16 surrogate \\uD800 in string at byte 1"},
    {S("\"\\ud800\\n\""), "lone UTF-16 surrogate \\uD800 in string at byte 1"},
    {S("\"\xc0\x80\""), "invalid UTF-8 at byte 1"},
    {S("\"\xc1\xbf\""), "invalid UTF-8 at byte 1"},
    {S("\"\xe0\x80\x80\""), "invalid UTF-8 at byte 1"},
    {S("\"ab\xf0\x80\x80\x80\""), "invalid UTF-8 at byte 3"},
    {S("\"\xed\xa0\x80\""), "invalid UTF-8 at byte 1"},
    {S("\"\xf4\x90\x80\x80\""), "invalid UTF-8 at byte 1"},
    {S("\"\x80\""), "invalid UTF-8 at byte 1"},
    {S("\"\xff\""), "invalid UTF-8 at byte 1"},
    {S("\"\xc3(\""), "invalid UTF-8 at byte 1"},
    {S("\"\xe2\x82(\""), "invalid UTF-8 at byte 1"},
    {S("\"a\\u0000b\""), "string contains \\u0000 (NUL) at byte 2"},
    {S("{\"k\\u0000\":1}"), "string contains \\u0000 (NUL) at byte 3"},
    {S("\"a\0b\""), "NUL byte at byte 2"},
    {S("{\0}"), "NUL byte at byte 1"},
    {S("\0"), "NUL byte at byte 0"},
    {S("[\xc3\xa9]"), "unexpected byte 0xc3 outside a string at byte 1"},
    {S("\xef\xbb\xbf{}"), "unexpected byte 0xef outside a string at byte 0"},
    {S("01"), "JSON syntax error at byte 1: leading zero in a number"},
    {S("[-01]"), "JSON syntax error at byte 3: leading zero in a number"},
    {S("[00]"), "JSON syntax error at byte 2: leading zero in a number"},
    {S("+1"), "JSON syntax error at byte 0: expected a value"},
    {S(".5"), "JSON syntax error at byte 0: expected a value"},
    {S("1."), "truncated JSON: input ends at byte 2"},
    {S("[1.]"), "JSON syntax error at byte 3: expected a digit after '.'"},
    {S("[1.e5]"), "JSON syntax error at byte 3: expected a digit after '.'"},
    {S("[1e]"), "JSON syntax error at byte 3: expected a digit in the exponent"},
    {S("[1e+]"), "JSON syntax error at byte 4: expected a digit in the exponent"},
    {S("[-]"), "JSON syntax error at byte 2: expected a digit after '-'"},
    {S("-a"), "JSON syntax error at byte 1: expected a digit after '-'"},
    {S("[- 1]"), "JSON syntax error at byte 2: expected a digit after '-'"},
    {S("tru"), "truncated JSON: input ends at byte 3"},
    {S("[tru]"), "JSON syntax error at byte 4: expected 'true'"},
    {S("[nul]"), "JSON syntax error at byte 4: expected 'null'"},
    {S("[falsy]"), "JSON syntax error at byte 5: expected 'false'"},
    {S("True"), "JSON syntax error at byte 0: expected a value"},
    {S("NaN"), "JSON syntax error at byte 0: expected a value"},
    {S("-Infinity"), "JSON syntax error at byte 1: expected a digit after '-'"},
    {S("\"abc"), "truncated JSON: input ends at byte 4"},
    {S("\"abc\\"), "truncated JSON: input ends at byte 5"},
    {S("{\"a\":1"), "truncated JSON: input ends at byte 6"},
    {S("[1,2"), "truncated JSON: input ends at byte 4"},
    {S("[1,2,  \n"), "truncated JSON: input ends at byte 8"},
    {S("\"a\tb\""), "control character 0x09 in a string at byte 2"},
    {S("\"\n\""), "control character 0x0a in a string at byte 1"},
    {S("\"abcdefghij\x1f\""), "control character 0x1f in a string at byte 11"},
    {S("[\v1]"), "JSON syntax error at byte 1: expected a value"},
    {S("\f[]"), "JSON syntax error at byte 0: expected a value"},
    {S("1e400"), "number out of range at byte 0"},
    {S("[-1e400]"), "number out of range at byte 1"},
    {S("1e309"), "number out of range at byte 0"},
    {S("{\"n\":123456789e999}"), "number out of range at byte 5"},
};

TEST(json_rejects_invalid_input)
{
    for (size_t k = 0; k < sizeof(invalid) / sizeof(invalid[0]); k++)
        expect_error(invalid[k].in, invalid[k].len, NULL, CAPID_EV_INVALID_JSON, invalid[k].msg,
                     __LINE__);
    /* The same refusals through the event API: same status, same detail. */
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    for (size_t k = 0; k < sizeof(invalid) / sizeof(invalid[0]); k++) {
        struct capid_event ev;
        struct capid_perr err = {0};
        char *copy = dup_exact(invalid[k].in, invalid[k].len);
        ASSERT_INT(capid_event_parse(&ev, copy, invalid[k].len, &lim, 0, &err),
                   CAPID_EV_INVALID_JSON);
        ASSERT_TRUE(ev.root == NULL && ev.arena == NULL);
        ASSERT_STR(err.msg, invalid[k].msg);
        free(copy);
    }
}

TEST(json_size_cap)
{
    struct capid_limits lim = {16, 32};
    expect_error(S("[1,2,3,4,5,6,7,8]"), &lim, CAPID_EV_TOO_LARGE,
                 "event is 17 bytes, over the limit of 16", __LINE__);
    diff_one(S("[1,2,3,4,5,6,77]"), &lim, "at the cap");
    struct capid_event ev;
    struct capid_perr err = {0};
    ASSERT_INT(capid_event_parse(&ev, S("{\"event_name\":\"x\"}"), &lim, 0, &err),
               CAPID_EV_TOO_LARGE);
    ASSERT_STR(err.msg, "event is 18 bytes, over the limit of 16");
}

/* Writes n nested containers around 1, alternating arrays and objects. */
static size_t nest(char *out, int n)
{
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (i % 2) {
            memcpy(out + k, "{\"k\":", 5);
            k += 5;
        } else {
            out[k++] = '[';
        }
    }
    out[k++] = '1';
    for (int i = n - 1; i >= 0; i--)
        out[k++] = i % 2 ? '}' : ']';
    return k;
}

TEST(json_depth_limit)
{
    static char buf[8192];
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    size_t n = nest(buf, 32);
    diff_one(buf, n, &lim, "depth 32");
    diff_one(buf, n, NULL, "depth 32, no limits");
    n = nest(buf, 33);
    /* The 33rd container starts after 16 "[" and 16 "{\"k\":": byte 96. */
    expect_error(buf, n, &lim, CAPID_EV_INVALID_JSON, "nesting deeper than 32 levels at byte 96",
                 __LINE__);
    expect_error(buf, n, NULL, CAPID_EV_INVALID_JSON, "nesting deeper than 32 levels at byte 96",
                 __LINE__);
    memset(buf, '[', 33);
    expect_error(buf, 33, &lim, CAPID_EV_INVALID_JSON, "nesting deeper than 32 levels at byte 32",
                 __LINE__);
    /* A configured limit deeper than the parser's on-stack 64 levels. */
    struct capid_limits deep = {0, 256};
    n = nest(buf, 256);
    diff_one(buf, n, &deep, "depth 256");
    n = nest(buf, 257);
    expect_error(buf, n, &deep, CAPID_EV_INVALID_JSON, "nesting deeper than 256 levels at byte ",
                 __LINE__);
    /* A deep document truncated inside, with its arena overflowing. */
    struct capid_arena *a = calloc(1, sizeof(*a));
    a->used = CAPID_ARENA_BLOCK - 64;
    cJSON *root = NULL;
    struct capid_perr err = {0};
    ASSERT_INT(capid_json_parse(buf, n / 2, &deep, a, &root, &err), CAPID_EV_INVALID_JSON);
    ASSERT_TRUE(root == NULL && a->overflowed);
    free(a);
}

/* Every proper prefix of a valid event fails cleanly as truncated. */
TEST(json_truncated_prefixes)
{
    static const char *events[] = {
        "{\"event_name\":\"purchase\",\"value\":-12.5e+1,\"ok\":true,\"no\":false,\"nil\":null,"
        "\"s\":\"caf\xc3\xa9 \\u00e9\\ud83d\\ude00\xf0\x9f\x98\x80 \\\"q\\\"\",\"a\":[0,{},[]]}",
        " { \"a\" : [ 1 , 2.0 , \"x\" ] , \"b\" : { } }\n",
    };
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    char want[64];
    for (size_t e = 0; e < sizeof(events) / sizeof(events[0]); e++) {
        size_t len = strlen(events[e]);
        diff_one(events[e], len, &lim, "full event");
        for (size_t k = 0; k < len; k++) {
            if (e == 1 && k == len - 1)
                continue; /* the pretty event without its newline is complete */
            snprintf(want, sizeof(want), "truncated JSON: input ends at byte %zu", k);
            expect_error(events[e], k, &lim, CAPID_EV_INVALID_JSON, want, __LINE__);
        }
    }
    /* The first shared vector's input, compact, through the event API. */
    char *json = capid_test_slurp(capid_test_shared("vectors/mapping.json"), NULL);
    cJSON *cases = json ? cJSON_Parse(json) : NULL;
    char *text = cJSON_PrintUnformatted(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cases, 0), "input"));
    ASSERT_TRUE(text != NULL);
    for (size_t k = 0; text && k < strlen(text); k++) {
        struct capid_event ev;
        struct capid_perr err = {0};
        char *copy = dup_exact(text, k);
        snprintf(want, sizeof(want), "truncated JSON: input ends at byte %zu", k);
        ASSERT_INT(capid_event_parse(&ev, copy, k, &lim, 0, &err), CAPID_EV_INVALID_JSON);
        ASSERT_STR(err.msg, want);
        free(copy);
    }
    free(text);
    cJSON_Delete(cases);
    free(json);
}

/* An event whose nodes do not fit in one 64 KiB arena block: the rest comes
 * from malloc and is freed by capid_event_release (ASan/LSan check both). */
TEST(json_arena_overflow)
{
    struct capid_buf b;
    struct capid_limits lim = {1 << 20, 32};
    capid_buf_init(&b, 0);
    capid_buf_puts(&b, "{\"event_name\":\"purchase\",\"items\":[");
    for (int i = 0; i < 3000; i++)
        capid_buf_printf(&b, "%s{\"id\":\"sku-%d\",\"q\":%d,\"t\":\"\\u00e9%d\"}", i ? "," : "", i,
                         i, i);
    capid_buf_puts(&b, "]}");
    struct capid_event ev;
    struct capid_perr err = {0};
    char why[256] = "", want[96];
    ASSERT_INT(capid_event_parse(&ev, b.data, b.len, &lim, 0, &err), CAPID_EV_OK);
    ASSERT_TRUE(ev.arena != NULL && ev.arena->overflowed);
    cJSON *cj = cJSON_ParseWithLength(b.data, b.len);
    if (!same_tree(cj, ev.root, why, sizeof(why)))
        capid_test_fail(__FILE__, __LINE__, "overflowed tree: %s", why);
    cJSON_Delete(cj);
    capid_event_release(&ev);
    /* Without an arena everything is malloc'd and cJSON_Delete frees it. */
    cJSON *root = NULL;
    ASSERT_INT(capid_json_parse(b.data, b.len, &lim, NULL, &root, &err), CAPID_EV_OK);
    cJSON_Delete(root);
    /* The same event refused at its very end: the partial tree is freed. */
    size_t full = b.len;
    capid_buf_puts(&b, ",");
    ASSERT_INT(capid_event_parse(&ev, b.data, b.len, &lim, 0, &err), CAPID_EV_INVALID_JSON);
    snprintf(want, sizeof(want), "unexpected data after the JSON value at byte %zu", full);
    ASSERT_STR(err.msg, want);
    b.len = full - 2; /* without "]}" */
    ASSERT_INT(capid_event_parse(&ev, b.data, b.len, &lim, 0, &err), CAPID_EV_INVALID_JSON);
    snprintf(want, sizeof(want), "truncated JSON: input ends at byte %zu", full - 2);
    ASSERT_STR(err.msg, want);
    b.data[full - 3] = 'x'; /* the last item's '}' */
    ASSERT_INT(capid_event_parse(&ev, b.data, b.len, &lim, 0, &err), CAPID_EV_INVALID_JSON);
    ASSERT_INT(capid_json_parse(b.data, b.len, &lim, NULL, &root, &err), CAPID_EV_INVALID_JSON);
    capid_buf_release(&b);
}

/* The parser leaves key and string lengths in valueint (event.h), escapes
 * counted as the bytes they stand for; cJSON's own nodes and inputs too
 * long for the bits fall back to strlen. */
TEST(json_nodes_carry_key_and_string_lengths)
{
    const char *in = "{\"a\":\"xyz\",\"k\\u00e9y\":\"q\\\"\\n\",\"obj\":{\"\":[\"s\",1,true]},"
                     "\"n\":12,\"e\":\"\"}";
    cJSON *root = NULL;
    ASSERT_INT(capid_json_parse(in, strlen(in), NULL, NULL, &root, NULL), CAPID_EV_OK);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "a");
    const cJSON *k = root && a ? a->next : NULL;
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "obj");
    const cJSON *arr = obj ? obj->child : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "e");
    ASSERT_TRUE(a && k && obj && arr && e);
    if (!(a && k && obj && arr && e))
        return;
    ASSERT_TRUE(a->valueint != 0 && obj->valueint != 0 && arr->valueint != 0);
    ASSERT_INT(capid_jkey_len(a), 1);
    ASSERT_INT(capid_jstr_len(a), 3);
    ASSERT_INT(capid_jkey_len(k), 4); /* k, é (2 bytes), y */
    ASSERT_INT(capid_jstr_len(k), 3); /* q " LF */
    ASSERT_INT(capid_jkey_len(obj), 3);
    ASSERT_INT(capid_jkey_len(arr), 0);
    ASSERT_INT(capid_jstr_len(arr->child), 1); /* an array element: no key */
    ASSERT_INT(arr->child->valueint >> 16, 0);
    ASSERT_INT(arr->child->next->valueint, 1); /* numbers keep cJSON's valueint */
    ASSERT_INT(arr->child->next->next->valueint, 1);
    ASSERT_INT(capid_jstr_len(e), 0);
    ASSERT_INT(capid_jkey_len(cJSON_GetObjectItemCaseSensitive(root, "n")), 1); /* strlen */
    cJSON_Delete(root);

    /* cJSON's nodes: valueint 0, lengths by strlen. */
    cJSON *cj = cJSON_Parse("{\"abc\":\"defg\"}");
    ASSERT_TRUE(cj && cj->child && cj->child->valueint == 0);
    if (cj && cj->child) {
        ASSERT_INT(capid_jkey_len(cj->child), 3);
        ASSERT_INT(capid_jstr_len(cj->child), 4);
    }
    cJSON_Delete(cj);

    /* 32,767 bytes and more: no lengths kept, still right. */
    size_t n = 40000;
    char *big = malloc(n + 1);
    ASSERT_TRUE(big != NULL);
    if (!big)
        return;
    memcpy(big, "{\"long\":\"", 9);
    memset(big + 9, 'x', n - 11);
    memcpy(big + n - 2, "\"}", 3);
    ASSERT_INT(capid_json_parse(big, n, NULL, NULL, &root, NULL), CAPID_EV_OK);
    ASSERT_TRUE(root && root->child && root->child->valueint == 0);
    if (root && root->child) {
        ASSERT_INT(capid_jkey_len(root->child), 4);
        ASSERT_INT(capid_jstr_len(root->child), n - 11);
    }
    cJSON_Delete(root);
    free(big);
}
