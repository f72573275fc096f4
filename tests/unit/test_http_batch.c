/* The HTTP body splitter (ingest/batch.h): shapes, exact spans, limits and
 * the position of every refusal. */
#include "test.h"

#include <stdlib.h>

#include "ingest/batch.h"

static const struct capid_batch_limits LIM = {1000, 32};

/* Splits s; returns the rc and leaves the spans in b. */
static int split(struct capid_batch *b, const char *s, enum capid_batch_format f,
                 struct capid_perr *err)
{
    *err = (struct capid_perr){0};
    return capid_batch_split(b, s, strlen(s), f, &LIM, err);
}

/* Span i of b as a NUL-terminated copy (static buffer). */
static const char *span(const struct capid_batch *b, const char *s, size_t i)
{
    static char out[4096];
    if (i >= b->n || b->ev[i].len >= sizeof(out))
        return "(none)";
    memcpy(out, s + b->ev[i].off, b->ev[i].len);
    out[b->ev[i].len] = '\0';
    return out;
}

TEST(batch_one_event_is_the_whole_body)
{
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    const char *s = " {\"event_name\":\"x\"}\n";
    ASSERT_INT(split(&b, s, CAPID_BATCH_ONE, &err), CAPID_OK);
    ASSERT_INT(b.n, 1);
    ASSERT_STR(span(&b, s, 0), s);
    /* No inspection inside: an array is one "event" the parser will refuse. */
    ASSERT_INT(split(&b, "[1,2]", CAPID_BATCH_ONE, &err), CAPID_OK);
    ASSERT_INT(b.n, 1);
    capid_batch_release(&b);
}

TEST(batch_empty_body_is_refused_in_every_format)
{
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    const enum capid_batch_format f[] = {CAPID_BATCH_ONE, CAPID_BATCH_JSON, CAPID_BATCH_NDJSON};
    for (int i = 0; i < 3; i++) {
        ASSERT_INT(split(&b, "", f[i], &err), CAPID_EPARSE);
        ASSERT_TRUE(err.msg && strstr(err.msg, "empty"));
        ASSERT_INT(split(&b, " \r\n\t\n", f[i], &err), CAPID_EPARSE);
        ASSERT_INT(err.offset, 0);
    }
    ASSERT_INT(split(&b, "\xEF\xBB\xBF\n\n", CAPID_BATCH_NDJSON, &err), CAPID_EPARSE);
    capid_batch_release(&b);
}

TEST(batch_json_array_spans_are_exact)
{
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    const char *s = " [ {\"a\":1} ,\n{\"b\":[1,{\"c\":[]}]},\t{} ] ";
    ASSERT_INT(split(&b, s, CAPID_BATCH_JSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 3);
    ASSERT_STR(span(&b, s, 0), "{\"a\":1}");
    ASSERT_STR(span(&b, s, 1), "{\"b\":[1,{\"c\":[]}]}");
    ASSERT_STR(span(&b, s, 2), "{}");
    ASSERT_INT(b.ev[0].off, 3);
    ASSERT_INT(b.ev[0].line, 0);
    capid_batch_release(&b);
}

TEST(batch_wrapper_object_is_the_tracking_api_shape)
{
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    const char *s = "{ \"batch\" : [{\"event_name\":\"a\"},{\"event_name\":\"b\"}] }\n";
    ASSERT_INT(split(&b, s, CAPID_BATCH_JSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 2);
    ASSERT_STR(span(&b, s, 1), "{\"event_name\":\"b\"}");
    ASSERT_INT(split(&b, "{\"batch\":[]}", CAPID_BATCH_JSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 0);
    ASSERT_INT(split(&b, "[]", CAPID_BATCH_JSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 0);
    capid_batch_release(&b);
}

TEST(batch_brackets_and_quotes_inside_strings_do_not_count)
{
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    const char *s = "[{\"a\":\"]}{[,\\\"\"},{\"b\":\"\\\\\"},{\"c\":\"\\\\\\\"]\"}]";
    ASSERT_INT(split(&b, s, CAPID_BATCH_JSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 3);
    ASSERT_STR(span(&b, s, 0), "{\"a\":\"]}{[,\\\"\"}");
    ASSERT_STR(span(&b, s, 1), "{\"b\":\"\\\\\"}");
    ASSERT_STR(span(&b, s, 2), "{\"c\":\"\\\\\\\"]\"}");
    capid_batch_release(&b);
}

TEST(batch_scalars_are_spans_for_the_parser_to_refuse)
{
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    const char *s = "[1, \"x,]\" ,null,-2.5e3]";
    ASSERT_INT(split(&b, s, CAPID_BATCH_JSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 4);
    ASSERT_STR(span(&b, s, 0), "1");
    ASSERT_STR(span(&b, s, 1), "\"x,]\"");
    ASSERT_STR(span(&b, s, 2), "null");
    ASSERT_STR(span(&b, s, 3), "-2.5e3");
    capid_batch_release(&b);
}

/* Every malformed shape: refused with a message and the byte where it broke. */
TEST(batch_malformed_bodies_name_the_position)
{
    static const struct {
        const char *body;
        size_t offset;
        const char *words;
    } cases[] = {
        {"[{\"a\":1}", 8, "truncated"},
        {"[{\"a\":1},]", 9, "trailing"},
        {"[,]", 1, "expected an event"},
        {"[{\"a\":1}}]", 8, "expected ','"},
        {"[{\"a\":[1}]", 8, "expected ']'"},
        {"[{\"a\":\"x]", 9, "string"},
        {"[{\"a\":1} {\"b\":2}]", 9, "expected ','"},
        {"{\"events\":[]}", 1, "\"batch\""},
        {"{\"batch\":{}}", 9, "array"},
        {"{\"batch\":[],\"x\":1}", 11, "no other key"},
        {"{\"batch\":[]", 11, "truncated"},
        {"[] x", 3, "after the batch"},
        {"[][]", 2, "after the batch"},
        {"\"str\"", 0, "JSON array"},
        {"\xEF\xBB\xBF[]", 0, "0xef"},
        {"[:]", 1, "expected an event"},
    };
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = split(&b, cases[i].body, CAPID_BATCH_JSON, &err);
        ASSERT_INT(rc, CAPID_EPARSE);
        if (rc != CAPID_EPARSE)
            continue;
        if (err.offset != cases[i].offset)
            capid_test_fail(__FILE__, __LINE__, "case %zu '%s': offset %zu, want %zu (%s)", i,
                            cases[i].body, err.offset, cases[i].offset, err.msg);
        if (!err.msg || !strstr(err.msg, cases[i].words))
            capid_test_fail(__FILE__, __LINE__, "case %zu '%s': message '%s' lacks '%s'", i,
                            cases[i].body, err.msg ? err.msg : "(null)", cases[i].words);
    }
    capid_batch_release(&b);
}

/* 10,000 levels: refused at the first bracket over the limit, not parsed. */
TEST(batch_deep_nesting_stops_at_the_limit)
{
    size_t n = 10000;
    char *s = malloc(n + 3);
    s[0] = '[';
    memset(s + 1, '[', n);
    s[n + 1] = '\0';
    struct capid_batch b;
    struct capid_perr err = {0};
    capid_batch_init(&b);
    ASSERT_INT(capid_batch_split(&b, s, n + 1, CAPID_BATCH_JSON, &LIM, &err), CAPID_EPARSE);
    ASSERT_INT(err.offset, 1 + 32); /* the wrapper array does not count */
    ASSERT_TRUE(err.msg && strstr(err.msg, "nesting deeper than 32"));
    /* Exactly 32 levels is fine. */
    char ok[80];
    memset(ok, 0, sizeof(ok));
    ok[0] = '[';
    for (int i = 0; i < 32; i++) {
        ok[1 + i] = '[';
        ok[33 + i] = ']';
    }
    ok[65] = ']';
    ASSERT_INT(capid_batch_split(&b, ok, strlen(ok), CAPID_BATCH_JSON, &LIM, &err), CAPID_OK);
    ASSERT_INT(b.n, 1);
    capid_batch_release(&b);
    free(s);
}

TEST(batch_event_limit_is_refused_at_the_first_one_over)
{
    struct capid_batch b;
    struct capid_perr err = {0};
    struct capid_batch_limits lim = {2, 32};
    capid_batch_init(&b);
    const char *s = "[{},{},{},{}]";
    ASSERT_INT(capid_batch_split(&b, s, strlen(s), CAPID_BATCH_JSON, &lim, &err), CAPID_ETOOBIG);
    ASSERT_INT(err.offset, 7);
    ASSERT_TRUE(err.msg && strstr(err.msg, "more than 2 events"));
    const char *nd = "{}\n{}\n\n{}\n";
    ASSERT_INT(capid_batch_split(&b, nd, strlen(nd), CAPID_BATCH_NDJSON, &lim, &err),
               CAPID_ETOOBIG);
    ASSERT_INT(err.line, 4);
    s = "[{},{}]";
    ASSERT_INT(capid_batch_split(&b, s, strlen(s), CAPID_BATCH_JSON, &lim, &err), CAPID_OK);
    ASSERT_INT(b.n, 2);
    capid_batch_release(&b);
}

TEST(batch_ndjson_lines_crlf_blank_lines_bom_and_no_final_newline)
{
    struct capid_batch b;
    struct capid_perr err;
    capid_batch_init(&b);
    const char *s = "\xEF\xBB\xBF{\"a\":1}\r\n\n  \r\n{\"b\":\"x\\ny\"}\n{\"c\":3}";
    ASSERT_INT(split(&b, s, CAPID_BATCH_NDJSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 3);
    ASSERT_STR(span(&b, s, 0), "{\"a\":1}");
    ASSERT_INT(b.ev[0].line, 1);
    ASSERT_INT(b.ev[0].off, 3);
    ASSERT_STR(span(&b, s, 1), "{\"b\":\"x\\ny\"}");
    ASSERT_INT(b.ev[1].line, 4);
    ASSERT_STR(span(&b, s, 2), "{\"c\":3}");
    ASSERT_INT(b.ev[2].line, 5);
    /* A line is handed over as is: broken JSON is the parser's to report. */
    ASSERT_INT(split(&b, "{\"a\":\n1}\n", CAPID_BATCH_NDJSON, &err), CAPID_OK);
    ASSERT_INT(b.n, 2);
    capid_batch_release(&b);
}

/* A body that is not NUL-terminated is never read past its length. */
TEST(batch_reads_only_len_bytes)
{
    struct capid_batch b;
    struct capid_perr err = {0};
    capid_batch_init(&b);
    const char full[] = "[{\"a\":1}]XYZ";
    ASSERT_INT(capid_batch_split(&b, full, 9, CAPID_BATCH_JSON, &LIM, &err), CAPID_OK);
    ASSERT_INT(b.n, 1);
    ASSERT_INT(capid_batch_split(&b, full, 5, CAPID_BATCH_JSON, &LIM, &err), CAPID_EPARSE);
    ASSERT_INT(capid_batch_split(&b, full, 1, CAPID_BATCH_JSON, &LIM, &err), CAPID_EPARSE);
    char *heap = malloc(4);
    memcpy(heap, "[\"ab", 4); /* unterminated string, exactly 4 bytes on the heap (ASan) */
    ASSERT_INT(capid_batch_split(&b, heap, 4, CAPID_BATCH_JSON, &LIM, &err), CAPID_EPARSE);
    memcpy(heap, "[1 ,", 4);
    ASSERT_INT(capid_batch_split(&b, heap, 4, CAPID_BATCH_JSON, &LIM, &err), CAPID_EPARSE);
    memcpy(heap, "{}\n{", 4);
    ASSERT_INT(capid_batch_split(&b, heap, 4, CAPID_BATCH_NDJSON, &LIM, &err), CAPID_OK);
    ASSERT_INT(b.n, 2);
    free(heap);
    capid_batch_release(&b);
}
