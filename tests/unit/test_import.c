/* Import engine (ingest/import.h) and the map-and-commit pipeline
 * (cli/pipeline.h), issue 6: file identity, line numbers of a resume point,
 * the order and resume points of a source's inputs, resuming from every
 * point, fatal errors, the JSON report; the pipeline's commits and marks on
 * a real queue in a temp dir. */
#include "test.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "capi/geo.h"
#include "cli/pipeline.h"
#include "config/config.h"
#include "ingest/csv.h"
#include "ingest/import.h"
#include "ingest/ndjson.h"
#include "queue/queue.h"
#include "util/buf.h"
#include "util/sha256.h"

/* An unlinked temp file holding `len` bytes, at offset 0. */
static int memfile(const char *s, size_t len)
{
    char path[] = "/tmp/capid-import-file-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        abort();
    unlink(path);
    if (write(fd, s, len) != (ssize_t)len)
        abort();
    lseek(fd, 0, SEEK_SET);
    return fd;
}

/* ---- formats and identity --------------------------------------------- */

TEST(import_format_from_name_and_extension)
{
    ASSERT_INT(capid_import_format_parse("csv"), CAPID_IMPORT_CSV);
    ASSERT_INT(capid_import_format_parse("ndjson"), CAPID_IMPORT_NDJSON);
    ASSERT_INT(capid_import_format_parse("jsonl"), CAPID_IMPORT_NDJSON);
    ASSERT_INT(capid_import_format_parse("xml"), -1);
    ASSERT_INT(capid_import_format_of_path("a/b/orders.CSV"), CAPID_IMPORT_CSV);
    ASSERT_INT(capid_import_format_of_path("x.ndjson"), CAPID_IMPORT_NDJSON);
    ASSERT_INT(capid_import_format_of_path("x.jsonl"), CAPID_IMPORT_NDJSON);
    ASSERT_INT(capid_import_format_of_path("x.json"), CAPID_IMPORT_NDJSON);
    ASSERT_INT(capid_import_format_of_path("x.txt"), -1);
    ASSERT_INT(capid_import_format_of_path("dir.csv/file"), -1);
    ASSERT_INT(capid_import_format_of_path("noext"), -1);
}

TEST(import_hash_is_the_sha256_of_the_whole_file)
{
    char hex[65];
    uint64_t size = 1;
    int fd = memfile("abc", 3);
    ASSERT_INT(capid_import_hash(fd, hex, &size, NULL), CAPID_OK);
    ASSERT_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ASSERT_INT(size, 3);
    close(fd);
    fd = memfile("", 0);
    ASSERT_INT(capid_import_hash(fd, hex, &size, NULL), CAPID_OK);
    ASSERT_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    ASSERT_INT(size, 0);
    close(fd);
    /* Over several read blocks, from any starting offset: the same as one shot. */
    size_t n = (3u << 20) + 12345;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)(i * 7 + i / 4096);
    fd = memfile(big, n);
    lseek(fd, 1000, SEEK_SET);
    ASSERT_INT(capid_import_hash(fd, hex, &size, NULL), CAPID_OK);
    ASSERT_INT(size, n);
    struct capid_sha256 h;
    char want[65];
    capid_sha256_init(&h);
    capid_sha256_hex(&h, big, n, want);
    capid_sha256_release(&h);
    ASSERT_STR(hex, want);
    close(fd);
    free(big);
}

/* ---- line numbers of resume points ------------------------------------ */

/* Random CSV with LF, CRLF and bare CR line ends, quoted fields holding line
 * ends, blank lines: every record's offset and end are resume points. */
static char *random_csv(unsigned seed, size_t *len)
{
    static const char *const ends[] = {"\n", "\r\n", "\r"};
    static const char *const cells[] = {"a",        "\"b,\nc\"", "\"d\r\ne\"",   "",
                                        "\"f\rg\"", "héllo",     "\"\"\"q\"\"\""};
    struct capid_buf b;
    capid_buf_init(&b, 0);
    srand(seed);
    capid_buf_puts(&b, "\xEF\xBB\xBFid,x,y");
    capid_buf_puts(&b, ends[rand() % 3]);
    for (int r = 0; r < 300; r++) {
        if (rand() % 17 == 0)
            capid_buf_puts(&b, ends[rand() % 3]); /* blank line */
        capid_buf_printf(&b, "%d,%s,%s%s", r, cells[rand() % 7], cells[rand() % 7],
                         ends[rand() % 3]);
    }
    return capid_buf_detach(&b, len);
}

TEST(import_line_at_counts_lines_like_the_readers)
{
    for (unsigned seed = 1; seed <= 5; seed++) {
        size_t len;
        char *s = random_csv(seed, &len);
        int fd = memfile(s, len);
        struct capid_csv *c;
        struct capid_csv_record rec;
        ASSERT_INT(capid_csv_open_fd(&c, fd, 0, NULL), CAPID_OK);
        int n = 0, rc;
        while ((rc = capid_csv_next(c, &rec, NULL)) == 1) {
            size_t line = 0;
            ASSERT_INT(capid_import_line_at(fd, CAPID_IMPORT_CSV, rec.end_offset, &line, NULL),
                       CAPID_OK);
            if (line != rec.next_line)
                capid_test_fail(__FILE__, __LINE__, "seed %u record %d: line %zu, reader %zu", seed,
                                n, line, rec.next_line);
            ASSERT_INT(capid_import_line_at(fd, CAPID_IMPORT_CSV, rec.offset, &line, NULL),
                       CAPID_OK);
            ASSERT_INT(line, rec.line);
            n++;
        }
        ASSERT_INT(rc, 0);
        ASSERT_INT(n, 301);
        capid_csv_free(c);
        close(fd);
        free(s);
    }
    const char *nd = "{\"a\":1}\r\n\n  \n{\"b\":\"x\\ny\"}\n{\"c\":3}";
    int fd = memfile(nd, strlen(nd));
    struct capid_ndjson *n;
    struct capid_ndjson_line ln;
    ASSERT_INT(capid_ndjson_open_fd(&n, fd, 0, NULL), CAPID_OK);
    while (capid_ndjson_next(n, &ln, NULL) == 1) {
        size_t line = 0;
        capid_import_line_at(fd, CAPID_IMPORT_NDJSON, ln.end_offset, &line, NULL);
        ASSERT_INT(line, ln.next_line);
        capid_import_line_at(fd, CAPID_IMPORT_NDJSON, ln.offset, &line, NULL);
        ASSERT_INT(line, ln.line);
    }
    capid_ndjson_free(n);
    size_t line = 0;
    ASSERT_INT(capid_import_line_at(fd, CAPID_IMPORT_NDJSON, 999, &line, NULL), CAPID_EIO);
    close(fd);
}

/* ---- sources ---------------------------------------------------------- */

/* Everything a source hands out, as text lines "L<line> R<rows> @<resume> ev|bad: ...". */
struct got {
    struct capid_buf text;
    int n, rc;
    int64_t resume[512];
    size_t resume_line[512];
};

static void drain(int fd, enum capid_import_format f, uint64_t off, size_t line, struct got *g)
{
    memset(g, 0, sizeof(*g));
    capid_buf_init(&g->text, 0);
    struct capid_import_src *s;
    struct capid_perr err = {0};
    g->rc = capid_import_src_open(&s, fd, f, true, off, line, &err);
    if (g->rc != CAPID_OK) {
        capid_buf_printf(&g->text, "open %d: %s\n", g->rc, err.msg ? err.msg : "");
        return;
    }
    struct capid_import_input in;
    int rc;
    while ((rc = capid_import_src_next(s, &in, &err)) != 0) {
        capid_buf_printf(&g->text, "L%llu R%u %s: %s\n", (unsigned long long)in.line, in.rows,
                         in.json ? "ev" : "bad", in.json ? in.json : in.msg);
        if (g->n < 512) {
            g->resume[g->n] = in.resume;
            if (in.resume >= 0)
                capid_import_line_at(fd, f, (uint64_t)in.resume, &g->resume_line[g->n], NULL);
            g->n++;
        }
        if (rc < 0) {
            capid_buf_printf(&g->text, "fatal %d: %s\n", rc, err.msg);
            g->rc = rc;
            break;
        }
    }
    capid_import_src_free(s);
}

static void got_release(struct got *g)
{
    capid_buf_release(&g->text);
}

static const char grouped[] = "id,value,user.email,items.product.id\n"
                              "A,1,a@x.io,P1\n"
                              "A,1,a@x.io,P2\n"
                              "B,2\n"               /* line 4: bad, while A is open */
                              "B,2,b@x.io,P3\n"     /* line 5 */
                              "B,2,b@x.io,P4,x\n"   /* line 6: bad, inside B */
                              "B,2,b@x.io,P5\n"     /* line 7 */
                              "C,3,\"c@x.io\",P6\n" /* line 8 */
                              "D,4\n";              /* line 9: bad at the end */

TEST(import_source_unindexed_keeps_line_order_and_resumes_only_at_event_ends)
{
    int fd = memfile(grouped, strlen(grouped));
    struct got g;
    drain(fd, CAPID_IMPORT_CSV, 0, 0, &g);
    ASSERT_INT(g.rc, CAPID_OK);
#define EV(x) "{\"event_name\":\"purchase\",\"type\":\"offline\"," x "}"
    ASSERT_STR(
        g.text.data,
        "L2 R2 ev: " EV(
            "\"id\":\"A\",\"value\":\"1\",\"user\":{\"email\":\"a@x.io\"},"
            "\"items\":[{\"product\":{\"id\":\"P1\"}},{\"product\":{\"id\":"
            "\"P2\"}}]") "\n"
                         "L4 R1 bad: line 4: 2 fields, header has 4\n"
                         "L5 R2 ev: " EV(
                             "\"id\":\"B\",\"value\":\"2\",\"user\":{\"email\":\"b@x.io\"},"
                             "\"items\":[{\"product\":{\"id\":\"P3\"}},{\"product\":{\"id\":"
                             "\"P5\"}}]") "\n"
                                          "L6 R1 bad: line 6: 5 fields, header has 4\n"
                                          "L8 R1 ev: " EV("\"id\":\"C\",\"value\":\"3\",\"user\":{"
                                                          "\"email\":\"c@x.io\"},"
                                                          "\"items\":[{\"product\":{\"id\":\"P6\"}}"
                                                          "]") "\n"
                                                               "L9 R1 bad: line 9: 2 fields, "
                                                               "header has 4\n");
    /* Resume points: only event ends (an unindexed group may be open after a bad row). */
    ASSERT_INT(g.n, 6);
    int64_t want[] = {(int64_t)(strstr(grouped, "B,2\n") - grouped), -1,
                      (int64_t)(strstr(grouped, "C,3") - grouped),   -1,
                      (int64_t)(strstr(grouped, "D,4") - grouped),   -1};
    for (int i = 0; i < 6; i++)
        ASSERT_INT(g.resume[i], want[i]);
    got_release(&g);
    close(fd);
}

/* Resuming after any input gives exactly the inputs that followed it, but
 * for bad rows inside the last group (reported after its event, though they
 * lie before its end: they are not read again). */
static void check_resume_everywhere(const char *text, enum capid_import_format f)
{
    int fd = memfile(text, strlen(text));
    struct got all, rest;
    drain(fd, f, 0, 0, &all);
    int points = 0;
    for (int i = 0; i < all.n; i++) {
        if (all.resume[i] < 0)
            continue;
        points++;
        drain(fd, f, (uint64_t)all.resume[i], all.resume_line[i], &rest);
        /* the suffix of `all` after input i, without bad rows before the point */
        struct capid_buf want;
        capid_buf_init(&want, 0);
        const char *p = all.text.data;
        for (int k = 0; k < all.n; k++) {
            const char *e = strchr(p, '\n') + 1;
            unsigned long line = strtoul(p + 1, NULL, 10);
            bool before =
                strstr(p, " bad: ") && strstr(p, " bad: ") < e && line < all.resume_line[i];
            if (k > i && !before)
                capid_buf_append(&want, p, (size_t)(e - p));
            p = e;
        }
        const char *got = rest.text.data ? rest.text.data : "";
        if (strcmp(want.data ? want.data : "", got) != 0)
            capid_test_fail(__FILE__, __LINE__,
                            "resume after input %d (offset %lld):\n%s\nwant\n%s", i,
                            (long long)all.resume[i], got, want.data ? want.data : "");
        capid_buf_release(&want);
        got_release(&rest);
    }
    ASSERT_TRUE(points > 0);
    got_release(&all);
    close(fd);
}

TEST(import_source_resume_from_every_point_gives_the_same_rest)
{
    check_resume_everywhere(grouped, CAPID_IMPORT_CSV);
    /* indexed layout with bad rows (resume points after them too), CRLF,
     * quoted line ends, a BOM */
    check_resume_everywhere("\xEF\xBB\xBFid,items.0.product.id,items.1.product.id,user.email\r\n"
                            "1,P1,P2,\"a\r\nb@x.io\"\r\n"
                            "2,P3\r\n"
                            "3,,P4,c@x.io\r\n"
                            "\r\n"
                            "4,\"P\"\"5\",,\"d@x.io\"\n"
                            "5,P6,P7,e@x.io\r"
                            "6,P8,,f@x.io",
                            CAPID_IMPORT_CSV);
    check_resume_everywhere("{\"event_name\":\"a\"}\n\n{\"event_name\":\"b\"}\r\n"
                            "not json\n  \n{\"event_name\":\"c\"}",
                            CAPID_IMPORT_NDJSON);
    /* random files: no items, mixed line ends */
    for (unsigned seed = 11; seed <= 13; seed++) {
        size_t len;
        char *s = random_csv(seed, &len);
        check_resume_everywhere(s, CAPID_IMPORT_CSV);
        free(s);
    }
}

TEST(import_source_unbalanced_quote_is_fatal_and_drops_the_open_group)
{
    const char *t = "id,value,items.product.id\n"
                    "A,1,P1\n"
                    "B,2,P2\n"
                    "B,2\n"
                    "B,\"2,P3\n"
                    "C,3,P4\n";
    int fd = memfile(t, strlen(t));
    struct got g;
    drain(fd, CAPID_IMPORT_CSV, 0, 0, &g);
    ASSERT_INT(g.rc, CAPID_EPARSE);
    ASSERT_STR(g.text.data,
               "L2 R1 ev: " EV("\"id\":\"A\",\"value\":\"1\",\"items\":[{\"product\":{\"id\":"
                               "\"P1\"}}]") "\n"
                                            "L4 R1 bad: line 4: 2 fields, header has 3\n"
                                            "L5 R1 bad: line 5: unbalanced quote: the quoted field "
                                            "opened on line 5, column 3 "
                                            "is not closed at end of file\n"
                                            "fatal -8: line 5: unbalanced quote: the quoted field "
                                            "opened on line 5, column 3 "
                                            "is not closed at end of file\n");
    got_release(&g);
    close(fd);
}

TEST(import_source_refuses_a_file_without_a_valid_header)
{
    static const struct {
        const char *text, *msg;
    } cases[] = {
        {"", "line 1: empty header"},
        {"\n\n", "line 1: empty header"},
        {"id,shop.name\n1,2\n", "unknown object 'shop'"},
        {"id,\"value\n1,2\n", "unbalanced quote"},
        {"id,id\n", "duplicate"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int fd = memfile(cases[i].text, strlen(cases[i].text));
        struct capid_import_src *s = NULL;
        struct capid_perr err = {0};
        ASSERT_INT(capid_import_src_open(&s, fd, CAPID_IMPORT_CSV, true, 0, 0, &err), CAPID_EPARSE);
        ASSERT_TRUE(s == NULL);
        if (!err.msg || !strstr(err.msg, cases[i].msg))
            capid_test_fail(__FILE__, __LINE__, "case %zu: '%s' lacks '%s'", i,
                            err.msg ? err.msg : "(null)", cases[i].msg);
        close(fd);
    }
}

/* ---- report ----------------------------------------------------------- */

TEST(import_report_streams_every_invalid_row_and_keeps_the_first_20)
{
    struct capid_test_dir t = capid_test_dir_new("import");
    char path[200];
    snprintf(path, sizeof(path), "%s/r.json", t.dir);
    const char *names[] = {"shop", "crm"};
    struct capid_import_report r;
    struct capid_perr err = {0};
    ASSERT_INT(capid_import_report_init(&r, names, 2, false, false, path, &err), CAPID_OK);
    r.tty = false;
    r.quiet = true;
    uint64_t per[2];
    struct capid_import_file f = {.path = "a \"q\".csv", .format = CAPID_IMPORT_CSV, .size = 99};
    snprintf(f.sha256, sizeof(f.sha256), "%064d", 0);
    f.resumed_offset = 40;
    f.resumed_line = 3;
    capid_import_file_begin(&r, &f, per);
    for (int i = 0; i < 25; i++)
        capid_import_file_invalid(&r, &f, (uint64_t)(10 + i), i ? "bad" : "line 10: bad \"x\"");
    for (int i = 0; i < 7; i++)
        capid_import_file_skipped(&f, (uint64_t)(50 + i), 1, CAPID_R_NO_CONSENT, "no category");
    f.rows = 60;
    f.events = 30;
    f.queued = 2;
    f.duplicates = 1;
    per[0] = 2;
    per[1] = 0;
    f.status = "imported";
    capid_import_file_end(&r, &f, NULL);
    ASSERT_INT(f.nshown, CAPID_IMPORT_SHOW_INVALID);
    ASSERT_INT(f.invalid, 25);
    ASSERT_INT(capid_import_report_finish(&r, &err), CAPID_OK);
    capid_import_report_release(&r);
    size_t len;
    char *text = capid_test_slurp(path, &len);
    ASSERT_TRUE(text != NULL);
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    ASSERT_TRUE(doc != NULL);
    const cJSON *file = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "files"), 0);
    ASSERT_STR(cJSON_GetStringValue(cJSON_GetObjectItem(file, "file")), "a \"q\".csv");
    ASSERT_STR(cJSON_GetStringValue(cJSON_GetObjectItem(file, "status")), "imported");
    const cJSON *inv = cJSON_GetObjectItem(file, "invalid_rows");
    ASSERT_INT(cJSON_GetArraySize(inv), 25);
    ASSERT_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(inv, 0), "error")),
               "line 10: bad \"x\"");
    ASSERT_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(inv, 24), "line")), 34);
    ASSERT_INT(cJSON_GetNumberValue(
                   cJSON_GetObjectItem(cJSON_GetObjectItem(file, "resumed_from"), "line")),
               3);
    ASSERT_INT(cJSON_GetNumberValue(
                   cJSON_GetObjectItem(cJSON_GetObjectItem(file, "skipped"), "no_consent")),
               7);
    ASSERT_INT(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(file, "skipped_examples"),
                                                      "no_consent")),
               CAPID_IMPORT_SHOW_SKIPPED);
    ASSERT_INT(cJSON_GetNumberValue(
                   cJSON_GetObjectItem(cJSON_GetObjectItem(file, "destinations"), "shop")),
               2);
    const cJSON *tot = cJSON_GetObjectItem(doc, "totals");
    ASSERT_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(tot, "invalid")), 25);
    ASSERT_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(tot, "duplicates")), 1);
    cJSON_Delete(doc);
    free(text);
    /* No temporary file is left behind. */
    int entries = 0;
    DIR *d = opendir(t.dir);
    for (struct dirent *e; (e = readdir(d));)
        entries += e->d_name[0] != '.';
    closedir(d);
    ASSERT_INT(entries, 1);
    capid_test_dir_release(&t);
}

/* ---- pipeline --------------------------------------------------------- */

/* A source of `n` events (every 5th input a bad row), position = index + 1. */
struct src {
    int n, at, stop_after;
    volatile sig_atomic_t *stop;
};

static int src_read(void *ctx, struct capid_pipe_chunk *c)
{
    struct src *s = ctx;
    char buf[256];
    while (!capid_pipe_chunk_full(c)) {
        if (s->at >= s->n)
            return 0;
        int i = s->at++;
        if (i % 5 == 4) {
            snprintf(buf, sizeof(buf), "line %d: bad", i + 1);
            capid_pipe_add_bad(c, (uint64_t)i + 1, 1, buf);
        } else {
            int len =
                snprintf(buf, sizeof(buf),
                         "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"o-%d\","
                         "\"value\":%d,\"currency\":\"EUR\",\"user\":{\"email\":\"u%d@x.io\"},"
                         "\"context\":{\"event_timestamp\":%d000}}",
                         i, 1 + i % 7, i % 50, 1764000000 - 60);
            capid_pipe_add_event(c, buf, (size_t)len, (uint64_t)i + 1, 1);
        }
        capid_pipe_set_position(c, i + 1);
        if (s->stop && s->at == s->stop_after)
            *s->stop = 1;
    }
    return 1;
}

struct seen {
    uint64_t last_line;
    int ordered, bad, dups, queued;
    int64_t last_pos;
};

static void on_outcome(void *ctx, const struct capid_pipe_outcome *o)
{
    struct seen *s = ctx;
    if (o->line < s->last_line)
        s->ordered = 0;
    s->last_line = o->line;
    if (o->dest == SIZE_MAX)
        s->bad++;
    else if (o->reason == CAPID_R_DUPLICATE)
        s->dups++;
    else if (o->reason == CAPID_R_NONE)
        s->queued++;
}

static void on_progress(void *ctx, const struct capid_pipe_stats *st)
{
    struct seen *s = ctx;
    if (st->position < s->last_pos)
        s->ordered = 0;
    s->last_pos = st->position;
}

static struct capid_config *pipe_config(void)
{
    static const char y[] = "{\"destinations\":[{\"name\":\"shop\",\"pixel_id\":\"1\","
                            "\"access_token_env\":\"T\"}]}";
    struct capid_config *cfg = NULL;
    struct capid_perr err = {0};
    ASSERT_INT(capid_config_parse(y, strlen(y), &cfg, &err), CAPID_OK);
    ASSERT_INT(capid_geo_init(NULL, NULL), CAPID_OK);
    return cfg;
}

static void run_pipe(struct capid_queue *q, const struct capid_config *cfg, int n, int workers,
                     volatile sig_atomic_t *stop, int stop_after, struct capid_pipe_stats *st,
                     struct seen *seen, uint64_t *per_dest)
{
    const struct capid_dest *dests[] = {&cfg->dests[0]};
    struct src s = {.n = n, .stop = stop, .stop_after = stop_after};
    *seen = (struct seen){.ordered = 1};
    struct capid_pipe_opts o = {.cfg = cfg,
                                .dests = dests,
                                .ndests = 1,
                                .now = 1764000000,
                                .group = 7,
                                .workers = workers,
                                .q = q,
                                .mark_key = "test-mark",
                                .outcome_queued = true,
                                .read = src_read,
                                .read_ctx = &s,
                                .outcome = on_outcome,
                                .progress = on_progress,
                                .ctx = seen,
                                .stop = stop};
    *st = (struct capid_pipe_stats){.per_dest = per_dest, .position = -1};
    ASSERT_INT(capid_pipe_run(&o, st), CAPID_OK);
}

TEST(pipe_commits_in_input_order_with_the_mark)
{
    struct capid_config *cfg = pipe_config();
    struct capid_test_dir t = capid_test_dir_new("import");
    struct capid_queue *q = NULL;
    struct capid_queue_opts qo = {.path = t.path, .sync_normal = true};
    ASSERT_INT(capid_queue_open(&q, &qo, NULL), CAPID_OK);
    for (int workers = 1; workers <= 3; workers++) {
        struct capid_pipe_stats st;
        struct seen seen;
        uint64_t per[1] = {0};
        run_pipe(q, cfg, 1000, workers, NULL, 0, &st, &seen, per);
        ASSERT_INT(st.events, 800);
        ASSERT_INT(st.bad, 200);
        ASSERT_INT(st.rows, 1000);
        ASSERT_INT(st.position, 1000);
        ASSERT_INT(seen.ordered, 1);
        ASSERT_INT(seen.bad, 200);
        ASSERT_INT(seen.last_pos, 1000);
        /* The first run stores every event; the next ones find duplicates. */
        ASSERT_INT(st.queued, workers == 1 ? 800 : 0);
        ASSERT_INT(per[0], st.queued);
        ASSERT_INT(st.skipped[CAPID_R_DUPLICATE], workers == 1 ? 0 : 800);
        ASSERT_INT(seen.dups + seen.queued, 800);
        /* 800 events in groups of 7, up to four groups per transaction */
        ASSERT_TRUE(st.commits >= 800 / 7 / 4 && st.commits <= 800 / 7 + 1);
        int64_t pos = 0;
        bool done = true;
        ASSERT_INT(capid_queue_mark_get(q, "test-mark", &pos, &done), CAPID_OK);
        ASSERT_INT(pos, 1000);
        ASSERT_INT(done, 0);
    }
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, NULL, &c), CAPID_OK);
    ASSERT_INT(c.queued, 800);
    capid_queue_close(q);
    capid_test_dir_release(&t);
    capid_config_free(cfg);
}

TEST(pipe_stop_commits_a_prefix_that_ends_at_the_mark)
{
    struct capid_config *cfg = pipe_config();
    struct capid_test_dir t = capid_test_dir_new("import");
    struct capid_queue *q = NULL;
    struct capid_queue_opts qo = {.path = t.path, .sync_normal = true};
    ASSERT_INT(capid_queue_open(&q, &qo, NULL), CAPID_OK);
    volatile sig_atomic_t stop = 0;
    struct capid_pipe_stats st;
    struct seen seen;
    run_pipe(q, cfg, 5000, 2, &stop, 300, &st, &seen, NULL);
    ASSERT_TRUE(st.position >= 300 && st.position < 5000);
    int64_t pos = 0;
    bool done = true;
    ASSERT_INT(capid_queue_mark_get(q, "test-mark", &pos, &done), CAPID_OK);
    ASSERT_INT(pos, st.position);
    /* exactly the events of inputs [0, pos): 4 of every 5 */
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, NULL, &c), CAPID_OK);
    ASSERT_INT(c.queued, pos - pos / 5);
    ASSERT_INT(st.queued, c.queued);
    capid_queue_close(q);
    capid_test_dir_release(&t);
    capid_config_free(cfg);
}

TEST(pipe_dry_run_maps_but_commits_nothing)
{
    struct capid_config *cfg = pipe_config();
    struct capid_pipe_stats st;
    struct seen seen;
    run_pipe(NULL, cfg, 100, 0, NULL, 0, &st, &seen, NULL);
    ASSERT_INT(st.queued, 80);
    ASSERT_INT(st.commits, 0);
    ASSERT_INT(st.position, 100);
    ASSERT_INT(seen.queued, 80);
    capid_config_free(cfg);
}
