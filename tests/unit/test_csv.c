#include "test.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "ingest/csv.h"
#include "ingest/ndjson.h"
#include "util/buf.h"
#include "util/err.h"

/* Writes `n` bytes to a new temp file; returns its path (static storage of
 * the caller's `path` buffer) or NULL. */
static char *temp_file(char path[64], const char *data, size_t n)
{
    snprintf(path, 64, "/tmp/capid-csv-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fd);
    return path;
}

/* Appends `s` with CR, LF and | made visible. */
static void vis(struct capid_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\n')
            capid_buf_puts(b, "\\n");
        else if (s[i] == '\r')
            capid_buf_puts(b, "\\r");
        else if (s[i] == '|')
            capid_buf_puts(b, "\\|");
        else
            capid_buf_putc(b, s[i]);
    }
}

/* Reads a CSV file from `fd` to its end (or `limit` calls) and describes
 * every outcome, one per line:
 *   LINE@OFFSET-END>NEXT:f1|f2|...     a record
 *   E LINE@OFFSET-END>NEXT: message    an error (F instead of E: fatal) */
static char *dump_reader(struct capid_csv *c, int limit)
{
    struct capid_buf b;
    capid_buf_init(&b, 0);
    struct capid_csv_record rec;
    struct capid_perr err;
    int rc;
    while (limit-- && (rc = capid_csv_next(c, &rec, &err)) != 0) {
        if (rc < 0)
            capid_buf_printf(&b, "%s ", rec.fatal ? "F" : "E");
        capid_buf_printf(&b, "%zu@%llu-%llu>%zu:", rec.line, (unsigned long long)rec.offset,
                         (unsigned long long)rec.end_offset, rec.next_line);
        if (rc < 0) {
            capid_buf_printf(&b, " %s\n", err.msg);
            continue;
        }
        for (size_t i = 0; i < rec.nfields; i++) {
            if (i)
                capid_buf_putc(&b, '|');
            vis(&b, rec.fields[i].s, rec.fields[i].len);
            if (strlen(rec.fields[i].s) != rec.fields[i].len)
                capid_buf_puts(&b, "<BADLEN>");
        }
        capid_buf_putc(&b, '\n');
    }
    if (!b.data)
        capid_buf_puts(&b, "");
    return capid_buf_detach(&b, NULL);
}

static char *dump_n(const char *data, size_t n, size_t max_record)
{
    char path[64];
    if (!temp_file(path, data, n))
        return strdup("mkstemp failed");
    int fd = open(path, O_RDONLY);
    unlink(path);
    struct capid_csv *c;
    if (capid_csv_open_fd(&c, fd, max_record, NULL) != CAPID_OK)
        return strdup("open failed");
    char *out = dump_reader(c, -1);
    capid_csv_free(c);
    close(fd);
    return out;
}

static char *dump(const char *data)
{
    return dump_n(data, strlen(data), 0);
}

#define CHECK_CSV(in, want)                                                                        \
    do {                                                                                           \
        char *got_ = dump(in);                                                                     \
        ASSERT_STR(got_, want);                                                                    \
        free(got_);                                                                                \
    } while (0)

TEST(csv_lf_with_and_without_final_newline)
{
    CHECK_CSV("a,b\n1,2\n", "1@0-4>2:a|b\n2@4-8>3:1|2\n");
    CHECK_CSV("a,b\n1,2", "1@0-4>2:a|b\n2@4-7>2:1|2\n");
}

TEST(csv_crlf_cr_and_mixed_line_ends)
{
    CHECK_CSV("a,b\r\n1,2\r\n", "1@0-5>2:a|b\n2@5-10>3:1|2\n");
    CHECK_CSV("a,b\r\n1,2\n3,4\r5,6", "1@0-5>2:a|b\n2@5-9>3:1|2\n3@9-13>4:3|4\n4@13-16>4:5|6\n");
}

TEST(csv_bom_is_skipped_only_at_start)
{
    CHECK_CSV("\xEF\xBB\xBF"
              "id,v\n1,\xEF\xBB\xBF\n",
              "1@3-8>2:id|v\n2@8-14>3:1|\xEF\xBB\xBF\n");
    CHECK_CSV("\xEF\xBB\xBF", "");
    CHECK_CSV("\xEF\xBB\xBF"
              "x",
              "1@3-4>1:x\n");
}

TEST(csv_empty_input_and_blank_lines)
{
    CHECK_CSV("", "");
    CHECK_CSV("\n\r\n\n", "");
    /* Blank lines are skipped but still counted. */
    CHECK_CSV("a,b\n\n1,2\r\n\r\n3,4\n\n", "1@0-4>2:a|b\n3@5-10>4:1|2\n5@12-16>6:3|4\n");
}

TEST(csv_empty_fields)
{
    CHECK_CSV("a,b,c\n,,\n1,,\n,,3\n\"\",x,\"\"\n",
              "1@0-6>2:a|b|c\n2@6-9>3:||\n3@9-13>4:1||\n4@13-17>5:||3\n5@17-25>6:|x|\n");
    /* A last line with an empty last field and no newline. */
    CHECK_CSV("a,b\n1,", "1@0-4>2:a|b\n2@4-6>2:1|\n");
}

TEST(csv_quoted_fields)
{
    CHECK_CSV("a,b\n\"x,y\",\"say \"\"hi\"\"\"\n\"\"\"\",\"\"\"\"\"\"\n",
              "1@0-4>2:a|b\n2@4-23>3:x,y|say \"hi\"\n3@23-35>4:\"|\"\"\n");
}

TEST(csv_embedded_newlines_keep_line_numbers_right)
{
    const char *in = "a,b\n"
                     "\"one\ntwo\",x\n"         /* lines 2-3 */
                     "\"crlf\r\ninside\",y\r\n" /* lines 4-5 */
                     "\"cr\rinside\",z\n"       /* lines 6-7 */
                     "last,w\n";                /* line 8 */
    CHECK_CSV(in, "1@0-4>2:a|b\n"
                  "2@4-16>4:one\\ntwo|x\n"
                  "4@16-34>6:crlf\\r\\ninside|y\n"
                  "6@34-48>8:cr\\rinside|z\n"
                  "8@48-55>9:last|w\n");
}

TEST(csv_quote_inside_unquoted_field_is_reported_and_skipped)
{
    CHECK_CSV("a,b\n5\" screen,x\n1,2\n",
              "1@0-4>2:a|b\nE 2@4-16>3: line 2, column 2: quote inside unquoted field 1\n"
              "3@16-20>4:1|2\n");
    CHECK_CSV("a,b\nx,ab\"c\r\n1,2\n",
              "1@0-4>2:a|b\nE 2@4-12>3: line 2, column 5: quote inside unquoted field 2\n"
              "3@12-16>4:1|2\n");
}

TEST(csv_text_after_closing_quote_is_reported_and_skipped)
{
    CHECK_CSV("a,b\n\"x\"y,1\n1,2\n",
              "1@0-4>2:a|b\nE 2@4-11>3: line 2, column 4: text after the closing quote of field "
              "1\n3@11-15>4:1|2\n");
    /* A space after the closing quote, before a CR line end. */
    CHECK_CSV("a,b\n1,\"x\" \r\n1,2",
              "1@0-4>2:a|b\nE 2@4-12>3: line 2, column 6: text after the closing quote of field "
              "2\n3@12-15>3:1|2\n");
}

TEST(csv_unbalanced_quote_is_fatal_and_names_its_line)
{
    CHECK_CSV("a,b\n1,2\n3,\"open\n4,5\n6,7\n",
              "1@0-4>2:a|b\n2@4-8>3:1|2\nF 3@8-24>6: line 3: unbalanced quote: the quoted field "
              "opened on line 3, column 3 is not closed at end of file\n");
    struct capid_perr err;
    struct capid_csv_record rec;
    char path[64];
    const char in[] = "h\n\n\"abc";
    temp_file(path, in, sizeof(in) - 1);
    int fd = open(path, O_RDONLY);
    unlink(path);
    struct capid_csv *c;
    capid_csv_open_fd(&c, fd, 0, NULL);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 1);
    ASSERT_INT(capid_csv_next(c, &rec, &err), CAPID_EPARSE);
    ASSERT_TRUE(rec.fatal);
    ASSERT_INT(err.line, 3);
    ASSERT_INT(err.column, 1);
    ASSERT_INT(rec.line, 3);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 0);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 0);
    capid_csv_free(c);
    close(fd);
}

TEST(csv_wrong_field_count_is_reported_and_reading_goes_on)
{
    CHECK_CSV("a,b,c\n1,2,3\n1,2\n1,2,3,4\n\"x\ny\",2,3\n",
              "1@0-6>2:a|b|c\n2@6-12>3:1|2|3\nE 3@12-16>4: line 3: 2 fields, header has 3\n"
              "E 4@16-24>5: line 4: 4 fields, header has 3\n5@24-34>7:x\\ny|2|3\n");
}

TEST(csv_invalid_utf8_reports_line_and_column)
{
    /* Stray continuation byte, overlong, surrogate, over U+10FFFF, truncated
     * before a comma, truncated at end of file; valid 2-, 3- and 4-byte ones. */
    CHECK_CSV("a,b\nok,\x80x\n\xC0\xAF,1\n1,ab\xED\xA0\x80\n\xF4\x90\x80\x80,1\n"
              "\xE2\x82,1\n\xC3\xA9,\xE2\x82\xAC\xF0\x9F\x98\x80\nx,\xE2",
              "1@0-4>2:a|b\n"
              "E 2@4-10>3: line 2, column 4: invalid UTF-8 in field 2\n"
              "E 3@10-15>4: line 3, column 1: invalid UTF-8 in field 1\n"
              "E 4@15-23>5: line 4, column 5: invalid UTF-8 in field 2\n"
              "E 5@23-30>6: line 5, column 1: invalid UTF-8 in field 1\n"
              "E 6@30-35>7: line 6, column 1: invalid UTF-8 in field 1\n"
              "7@35-46>8:\xC3\xA9|\xE2\x82\xAC\xF0\x9F\x98\x80\n"
              "E 8@46-49>8: line 8, column 3: invalid UTF-8 in field 2\n");
    /* Inside a quoted field on its second line. */
    CHECK_CSV("a\n\"x\ny\xFF\"\nz\n",
              "1@0-2>2:a\nE 2@2-9>4: line 3, column 2: invalid UTF-8 in field 1\n4@9-11>5:z\n");
}

TEST(csv_error_position_points_at_the_fault)
{
    char path[64];
    const char in[] = "a,b\n\"x\ny\",\xC3\n";
    temp_file(path, in, sizeof(in) - 1);
    int fd = open(path, O_RDONLY);
    unlink(path);
    struct capid_csv *c;
    struct capid_csv_record rec;
    struct capid_perr err;
    capid_csv_open_fd(&c, fd, 0, NULL);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 1);
    ASSERT_INT(capid_csv_next(c, &rec, &err), CAPID_EPARSE);
    ASSERT_STR(err.msg, "line 3, column 4: invalid UTF-8 in field 2");
    ASSERT_INT(rec.line, 2);
    ASSERT_INT(err.line, 3);
    ASSERT_INT(err.column, 4);
    ASSERT_INT(err.offset, 10);
    ASSERT_INT(rec.nfields, 0);
    ASSERT_TRUE(!rec.fatal);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 0);
    capid_csv_free(c);
    close(fd);
}

TEST(csv_nul_byte_is_an_error)
{
    char *got = dump_n("a,b\n1,x\0y\n2,3\n", 14, 0);
    ASSERT_STR(got, "1@0-4>2:a|b\nE 2@4-10>3: line 2, column 4: NUL byte in field 2\n"
                    "3@10-14>4:2|3\n");
    free(got);
}

TEST(csv_record_cap_skips_the_record)
{
    char *got = dump_n("a,b\n1,2\n12345678901234567890,x\n3,4\n", 35, 16);
    ASSERT_STR(got, "1@0-4>2:a|b\n2@4-8>3:1|2\nE 3@8-31>4: line 3: record over 16 bytes\n"
                    "4@31-35>5:3|4\n");
    free(got);
    /* An unbalanced quote runs into the cap first, and then to end of file. */
    got = dump_n("a,b\n\"1,2\n3,4\n5,6\n7,8\n9,10\n", 26, 16);
    ASSERT_STR(got, "1@0-4>2:a|b\nF 2@4-26>7: line 2: unbalanced quote: the quoted field opened "
                    "on line 2, column 1 is not closed at end of file\n");
    free(got);
    /* The cap is on one record, not the file: many fields of 1 byte. */
    got = dump_n("a,b,c,d,e,f,g,h\n1,2,3,4,5,6,7,8\n", 32, 16);
    ASSERT_STR(got, "1@0-16>2:a|b|c|d|e|f|g|h\n2@16-32>3:1|2|3|4|5|6|7|8\n");
    free(got);
}

TEST(csv_too_many_fields)
{
    struct capid_buf in;
    capid_buf_init(&in, 0);
    for (int i = 0; i <= CAPID_CSV_MAX_FIELDS; i++)
        capid_buf_puts(&in, i ? ",x" : "x");
    capid_buf_puts(&in, "\nok\n");
    char *got = dump_n(in.data, in.len, 0);
    char want[256];
    snprintf(want, sizeof(want), "E 1@0-%zu>2: line 1: more than %d fields\n2@%zu-%zu>3:ok\n",
             in.len - 3, CAPID_CSV_MAX_FIELDS, in.len - 3, in.len);
    ASSERT_STR(got, want);
    free(got);
    capid_buf_release(&in);
}

/* Builds a file whose records cross the 64 KiB read buffer at every kind of
 * place: multi-byte UTF-8, doubled quotes, CRLF, embedded newlines. */
static void big_file(struct capid_buf *in, struct capid_buf *want, int rows)
{
    capid_buf_puts(in, "id,text,n\r\n");
    capid_buf_puts(want, "id|text|n\n");
    size_t line = 2;
    for (int i = 0; i < rows; i++) {
        switch (i % 4) {
        case 0:
            capid_buf_printf(in, "%d,h\xC3\xA9llo \xF0\x9F\x98\x80 w\xC3\xB6rld,%d\r\n", i, i * 7);
            capid_buf_printf(want, "%zu:%d|h\xC3\xA9llo \xF0\x9F\x98\x80 w\xC3\xB6rld|%d\n", line,
                             i, i * 7);
            line++;
            break;
        case 1:
            capid_buf_printf(in, "%d,\"q \"\"%d\"\", a, b\",x\n", i, i);
            capid_buf_printf(want, "%zu:%d|q \"%d\", a, b|x\n", line, i, i);
            line++;
            break;
        case 2:
            capid_buf_printf(in, "%d,\"multi\r\nline %d\n\",\n", i, i);
            capid_buf_printf(want, "%zu:%d|multi\\r\\nline %d\\n|\n", line, i, i);
            line += 3;
            break;
        default:
            capid_buf_printf(in, "%d,%0*d,\xE2\x82\xAC\n", i, 1 + i % 97, i);
            capid_buf_printf(want, "%zu:%d|%0*d|\xE2\x82\xAC\n", line, i, 1 + i % 97, i);
            line++;
        }
    }
}

/* Lines and fields only: offsets checked elsewhere. */
static char *dump_fields(struct capid_csv *c, bool with_line)
{
    struct capid_buf b;
    capid_buf_init(&b, 0);
    struct capid_csv_record rec;
    struct capid_perr err;
    int rc;
    while ((rc = capid_csv_next(c, &rec, &err)) != 0) {
        if (rc < 0) {
            capid_buf_printf(&b, "ERR %s\n", err.msg);
            continue;
        }
        if (with_line && rec.line > 1)
            capid_buf_printf(&b, "%zu:", rec.line);
        for (size_t i = 0; i < rec.nfields; i++) {
            if (i)
                capid_buf_putc(&b, '|');
            vis(&b, rec.fields[i].s, rec.fields[i].len);
        }
        capid_buf_putc(&b, '\n');
    }
    return capid_buf_detach(&b, NULL);
}

TEST(csv_records_across_read_buffer_boundaries)
{
    struct capid_buf in, want;
    capid_buf_init(&in, 0);
    capid_buf_init(&want, 0);
    big_file(&in, &want, 20000); /* about 700 KB: ~10 refills */
    char path[64];
    temp_file(path, in.data, in.len);
    int fd = open(path, O_RDONLY);
    struct capid_csv *c;
    capid_csv_open_fd(&c, fd, 0, NULL);
    char *got = dump_fields(c, true);
    ASSERT_TRUE(strcmp(got, want.data) == 0);
    ASSERT_INT(capid_csv_tell(c), in.len);
    free(got);
    capid_csv_free(c);
    close(fd);

    /* The same through a FILE*. */
    FILE *f = fopen(path, "rb");
    capid_csv_open_file(&c, f, 0, NULL);
    got = dump_fields(c, true);
    ASSERT_TRUE(strcmp(got, want.data) == 0);
    free(got);
    capid_csv_free(c);
    fclose(f);
    unlink(path);
    capid_buf_release(&in);
    capid_buf_release(&want);
}

TEST(csv_record_larger_than_read_buffer)
{
    struct capid_buf in;
    capid_buf_init(&in, 0);
    capid_buf_puts(&in, "a,b\n\"");
    for (int i = 0; i < 30000; i++)
        capid_buf_puts(&in, "ab\"\"\xC3\xA9\n"); /* 7 bytes raw, 6 unquoted */
    capid_buf_puts(&in, "\",end\nx,y\n");
    char *got = dump_n(in.data, in.len, 0);
    /* Only check the shape: header, one big record, the record after it. */
    ASSERT_TRUE(strncmp(got, "1@0-4>2:a|b\n2@4-", 16) == 0);
    char want_tail[64];
    snprintf(want_tail, sizeof(want_tail), ">30003:");
    ASSERT_TRUE(strstr(got, want_tail) != NULL);
    ASSERT_TRUE(strstr(got, "|end\n30003@") != NULL);
    ASSERT_TRUE(strstr(got, ":x|y\n") != NULL);
    free(got);
    /* With a cap below its size, the record is skipped and x,y still read. */
    got = dump_n(in.data, in.len, 100000);
    ASSERT_TRUE(strstr(got, "E 2@4-") != NULL);
    ASSERT_TRUE(strstr(got, "line 2: record over 100000 bytes (quoted field opened on line 2, "
                            "column 1: unbalanced quote?)") != NULL);
    ASSERT_TRUE(strstr(got, "30003@") != NULL && strstr(got, ":x|y\n") != NULL);
    free(got);
    capid_buf_release(&in);
}

TEST(csv_resume_at_an_offset)
{
    struct capid_buf in, want;
    capid_buf_init(&in, 0);
    capid_buf_init(&want, 0);
    big_file(&in, &want, 3000);
    char path[64];
    temp_file(path, in.data, in.len);
    int fd = open(path, O_RDONLY);
    unlink(path);
    struct capid_csv *c;
    capid_csv_open_fd(&c, fd, 0, NULL);
    struct capid_csv_record rec;
    struct capid_perr err;
    /* Read 1234 records, note where the rest starts. */
    for (int i = 0; i < 1234; i++)
        ASSERT_INT(capid_csv_next(c, &rec, &err), 1);
    uint64_t off = rec.end_offset;
    size_t line = rec.next_line;
    char *rest = dump_fields(c, true);
    capid_csv_free(c);

    /* A new reader: header, then seek. */
    lseek(fd, 0, SEEK_SET);
    capid_csv_open_fd(&c, fd, 0, NULL);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 1);
    ASSERT_INT(capid_csv_seek(c, off, line, &err), CAPID_OK);
    char *got = dump_fields(c, true);
    ASSERT_TRUE(strlen(rest) > 1000);
    ASSERT_STR(got, rest);
    free(got);
    /* The field count is kept across the seek. */
    ASSERT_INT(capid_csv_seek(c, in.len, line, &err), CAPID_OK);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 0);
    capid_csv_free(c);
    close(fd);
    free(rest);
    capid_buf_release(&in);
    capid_buf_release(&want);
}

TEST(csv_seek_back_to_zero_skips_the_bom_again)
{
    const char in[] = "\xEF\xBB\xBF"
                      "a,b\r\n1,2\r\n";
    char path[64];
    temp_file(path, in, sizeof(in) - 1);
    int fd = open(path, O_RDONLY);
    unlink(path);
    struct capid_csv *c;
    capid_csv_open_fd(&c, fd, 0, NULL);
    char *first = dump_reader(c, -1);
    ASSERT_INT(capid_csv_seek(c, 0, 1, NULL), CAPID_OK);
    char *again = dump_reader(c, -1);
    ASSERT_STR(again, first);
    ASSERT_STR(first, "1@3-8>2:a|b\n2@8-13>3:1|2\n");
    free(first);
    free(again);
    capid_csv_free(c);
    close(fd);
}

TEST(csv_seek_on_a_pipe_fails_cleanly)
{
    int p[2];
    ASSERT_INT(pipe(p), 0);
    ASSERT_INT(write(p[1], "a\n1\n", 4), 4);
    close(p[1]);
    struct capid_csv *c;
    struct capid_perr err = {0};
    capid_csv_open_fd(&c, p[0], 0, NULL);
    ASSERT_INT(capid_csv_seek(c, 2, 2, &err), CAPID_EIO);
    ASSERT_TRUE(err.msg && strstr(err.msg, "cannot seek to offset 2") != NULL);
    /* Reading a pipe works. */
    char *got = dump_reader(c, -1);
    ASSERT_STR(got, "1@0-2>2:a\n2@2-4>3:1\n");
    free(got);
    capid_csv_free(c);
    close(p[0]);
}

TEST(csv_expect_fields_overrides_the_header_count)
{
    char path[64];
    temp_file(path, "a\n1,2\n3\n", 8);
    int fd = open(path, O_RDONLY);
    unlink(path);
    struct capid_csv *c;
    capid_csv_open_fd(&c, fd, 0, NULL);
    capid_csv_expect_fields(c, 0); /* no header: nothing is checked */
    capid_csv_expect_fields(c, 2);
    char *got = dump_reader(c, 2);
    ASSERT_STR(got, "E 1@0-2>2: line 1: 1 fields, header has 2\n2@2-6>3:1|2\n");
    free(got);
    /* err points at the record's first line, not the line after it. */
    struct capid_csv_record rec;
    struct capid_perr err;
    ASSERT_INT(capid_csv_next(c, &rec, &err), CAPID_EPARSE);
    ASSERT_STR(err.msg, "line 3: 1 fields, header has 2");
    ASSERT_INT(err.line, 3);
    ASSERT_INT(err.column, 0);
    ASSERT_INT(err.offset, 6);
    capid_csv_free(c);
    close(fd);
}

TEST(csv_read_error_is_fatal)
{
    struct capid_csv *c;
    struct capid_csv_record rec;
    struct capid_perr err;
    capid_csv_open_fd(&c, 987654, 0, NULL); /* not an open descriptor */
    ASSERT_INT(capid_csv_next(c, &rec, &err), CAPID_EIO);
    ASSERT_TRUE(rec.fatal);
    ASSERT_TRUE(strstr(err.msg, "cannot read input") != NULL);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 0);
    capid_csv_free(c);
    capid_csv_free(NULL);
}

/* --- NDJSON ---------------------------------------------------------------- */

static char *nd_dump(const char *data, size_t n, size_t max_line)
{
    char path[64];
    temp_file(path, data, n);
    int fd = open(path, O_RDONLY);
    unlink(path);
    struct capid_ndjson *nd;
    capid_ndjson_open_fd(&nd, fd, max_line, NULL);
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_puts(&b, "");
    struct capid_ndjson_line ln;
    struct capid_perr err;
    int rc;
    while ((rc = capid_ndjson_next(nd, &ln, &err)) != 0) {
        capid_buf_printf(&b, "%zu@%llu-%llu>%zu:", ln.line, (unsigned long long)ln.offset,
                         (unsigned long long)ln.end_offset, ln.next_line);
        if (rc < 0) {
            capid_buf_printf(&b, "E %s\n", err.msg);
            continue;
        }
        if (strlen(ln.s) != ln.len)
            capid_buf_puts(&b, "<BADLEN>");
        vis(&b, ln.s, ln.len);
        capid_buf_putc(&b, '\n');
    }
    capid_ndjson_free(nd);
    close(fd);
    return capid_buf_detach(&b, NULL);
}

#define CHECK_ND(in, max, want)                                                                    \
    do {                                                                                           \
        char *got_ = nd_dump(in, strlen(in), max);                                                 \
        ASSERT_STR(got_, want);                                                                    \
        free(got_);                                                                                \
    } while (0)

TEST(ndjson_lines_crlf_bom_blank_and_last_line)
{
    CHECK_ND("", 0, "");
    CHECK_ND("{\"a\":1}\n{\"b\":2}\n", 0, "1@0-8>2:{\"a\":1}\n2@8-16>3:{\"b\":2}\n");
    CHECK_ND("\xEF\xBB\xBF{}\r\n\r\n  \t\n{\"x\":\"\r\"}\r\n[1]", 0,
             "1@3-7>2:{}\n4@13-24>5:{\"x\":\"\\r\"}\n5@24-27>5:[1]\n");
    CHECK_ND("\n\n{}", 0, "3@2-4>3:{}\n");
}

TEST(ndjson_line_over_the_cap_is_skipped)
{
    CHECK_ND("{}\n0123456789abcdef\n{\"ok\":1}\n0123456789", 8,
             "1@0-3>2:{}\n2@3-20>3:E line 2: line over 8 bytes\n3@20-29>4:{\"ok\":1}\n"
             "4@29-39>4:E line 4: line over 8 bytes\n");
    /* The CR of a CRLF does not count. */
    CHECK_ND("12345678\r\n", 8, "1@0-10>2:12345678\n");
}

TEST(ndjson_long_lines_across_refills_and_resume)
{
    struct capid_buf in, want;
    capid_buf_init(&in, 0);
    capid_buf_init(&want, 0);
    capid_buf_puts(&want, "");
    for (int i = 0; i < 400; i++) {
        /* Lines of 1..3000 bytes, some over the 2000-byte cap. */
        size_t len = 1 + (size_t)(i * 7919) % 3000;
        size_t off = in.len;
        for (size_t k = 0; k < len; k++)
            capid_buf_putc(&in, (char)('a' + (k + (size_t)i) % 26));
        capid_buf_puts(&in, i % 3 ? "\n" : "\r\n");
        if (len > 2000)
            capid_buf_printf(&want, "%d@%zu-%zu>%d:E line %d: line over 2000 bytes\n", i + 1, off,
                             in.len, i + 2, i + 1);
        else
            capid_buf_printf(&want, "%d@%zu-%zu>%d:%.*s\n", i + 1, off, in.len, i + 2, (int)len,
                             in.data + off);
    }
    char *got = nd_dump(in.data, in.len, 2000);
    ASSERT_TRUE(strcmp(got, want.data) == 0);
    free(got);

    /* Resume at line 300 through a FILE*. */
    const char *at = want.data;
    for (int i = 0; i < 299; i++)
        at = strchr(at, '\n') + 1;
    unsigned long long off = strtoull(strchr(at, '@') + 1, NULL, 10);
    char path[64];
    temp_file(path, in.data, in.len);
    FILE *f = fopen(path, "rb");
    unlink(path);
    struct capid_ndjson *nd;
    capid_ndjson_open_file(&nd, f, 2000, NULL);
    struct capid_ndjson_line ln;
    ASSERT_INT(capid_ndjson_seek(nd, off, 300, NULL), CAPID_OK);
    int rc = capid_ndjson_next(nd, &ln, NULL);
    ASSERT_TRUE(rc == 1 || rc == CAPID_ETOOBIG);
    ASSERT_INT(ln.line, 300);
    ASSERT_INT(ln.offset, off);
    size_t n = 1;
    while ((rc = capid_ndjson_next(nd, &ln, NULL)) != 0)
        n++;
    ASSERT_INT(n, 101);
    ASSERT_INT(capid_ndjson_tell(nd), in.len);
    capid_ndjson_free(nd);
    capid_ndjson_free(NULL);
    fclose(f);
    capid_buf_release(&in);
    capid_buf_release(&want);
}

/* Random files over an alphabet of the bytes that matter: whatever the
 * reader makes of them, resuming at any record end gives the same rest. */
TEST(csv_random_input_resume_anywhere_gives_the_same_rest)
{
    static const char alpha[] = {
        'a', 'b',        ',',        ',',        '"',        '"',        '\r',       '\n', '\n',
        ' ', (char)0xC3, (char)0xA9, (char)0xFF, (char)0xE2, (char)0x82, (char)0xAC, '\0'};
    uint32_t seed = 12345;
    int checked = 0;
    for (int round = 0; round < 300; round++) {
        size_t n = 1 + (size_t)(round * 37) % 400;
        char *in = malloc(n);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = alpha[(seed >> 16) % sizeof(alpha)];
        }
        /* Fewer quotes in half the rounds, so that more records are good. */
        if (round % 2)
            for (size_t i = 0; i < n; i++)
                if (in[i] == '"' && i % 3)
                    in[i] = 'q';
        char path[64];
        temp_file(path, in, n);
        int fd = open(path, O_RDONLY);
        unlink(path);
        struct capid_csv *c;
        capid_csv_open_fd(&c, fd, 64, NULL);
        struct capid_csv_record rec;
        struct capid_perr err;
        uint64_t ends[512];
        size_t lines[512], nrec = 0, first_ok = SIZE_MAX;
        uint64_t prev_end = 0;
        int rc;
        while ((rc = capid_csv_next(c, &rec, &err)) != 0 && nrec < 512) {
            ASSERT_TRUE(rec.offset >= prev_end && rec.end_offset > rec.offset);
            ASSERT_TRUE(rec.end_offset <= n && rec.next_line >= rec.line);
            if (rc < 0)
                ASSERT_TRUE(err.msg && strncmp(err.msg, "line ", 5) == 0);
            if (rc == 1 && first_ok == SIZE_MAX)
                first_ok = nrec;
            prev_end = rec.end_offset;
            ends[nrec] = rec.end_offset;
            lines[nrec++] = rec.next_line;
        }
        ASSERT_INT(capid_csv_tell(c), n);
        if (first_ok != SIZE_MAX && first_ok + 1 < nrec) {
            size_t k = first_ok + (size_t)round % (nrec - first_ok - 1);
            checked++;
            ASSERT_INT(capid_csv_seek(c, ends[k], lines[k], NULL), CAPID_OK);
            char *tail1 = dump_reader(c, -1);
            ASSERT_INT(capid_csv_seek(c, ends[k], lines[k], NULL), CAPID_OK);
            char *tail2 = dump_reader(c, -1);
            ASSERT_STR(tail1, tail2);
            /* And the tail is what the full read said after record k. */
            ASSERT_INT(capid_csv_seek(c, 0, 1, NULL), CAPID_OK);
            char *all = dump_reader(c, -1);
            const char *at = all;
            for (size_t i = 0; i <= k && at; i++) {
                /* Records may hold "\n" only escaped, so lines are outcomes. */
                at = strchr(at, '\n');
                at = at ? at + 1 : NULL;
            }
            ASSERT_TRUE(at != NULL);
            if (at)
                ASSERT_STR(tail1, at);
            free(all);
            free(tail1);
            free(tail2);
        }
        capid_csv_free(c);
        close(fd);
        free(in);
    }
    ASSERT_TRUE(checked > 100);
}
