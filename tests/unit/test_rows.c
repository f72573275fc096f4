#include "test.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "ingest/csv.h"
#include "ingest/rows.h"
#include "util/buf.h"
#include "util/err.h"

#define MAX_OUT 64

/* Everything one CSV file turned into. */
struct built {
    int rc; /* capid_rows_new */
    char hdr_err[200];
    enum capid_rows_layout layout;
    int n;
    char *json[MAX_OUT];
    struct capid_rows_event ev[MAX_OUT];
    char errs[2048]; /* one line per rejected row: from the reader or the builder */
};

static void build_fd(int fd, bool offline, struct built *b)
{
    memset(b, 0, sizeof(*b));
    struct capid_csv *c;
    struct capid_csv_record rec;
    struct capid_perr err = {0};
    capid_csv_open_fd(&c, fd, 0, NULL);
    int rc = capid_csv_next(c, &rec, &err);
    struct capid_rows *r;
    b->rc = capid_rows_new(&r, rc == 1 ? &rec : NULL, offline, &err);
    if (b->rc != CAPID_OK) {
        snprintf(b->hdr_err, sizeof(b->hdr_err), "%s", err.msg);
        capid_csv_free(c);
        return;
    }
    b->layout = capid_rows_layout(r);
    struct capid_rows_event ev;
    size_t el = 0;
    while ((rc = capid_csv_next(c, &rec, &err)) != 0) {
        if (rc == 1)
            rc = capid_rows_feed(r, &rec, &ev, &err);
        if (rc < 0) {
            el += (size_t)snprintf(b->errs + el, sizeof(b->errs) - el, "%s\n", err.msg);
            continue;
        }
        if (rc == 1 && b->n < MAX_OUT) {
            b->ev[b->n] = ev;
            b->json[b->n++] = strdup(ev.json);
        }
    }
    if (capid_rows_flush(r, &ev) == 1 && b->n < MAX_OUT) {
        b->ev[b->n] = ev;
        b->json[b->n++] = strdup(ev.json);
    }
    ASSERT_INT(capid_rows_flush(r, &ev), 0);
    capid_rows_free(r);
    capid_csv_free(c);
}

static void build(const char *csv, bool offline, struct built *b)
{
    char path[] = "/tmp/capid-rows-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    unlink(path);
    ASSERT_INT(write(fd, csv, strlen(csv)), strlen(csv));
    lseek(fd, 0, SEEK_SET);
    build_fd(fd, offline, b);
    close(fd);
}

static void built_free(struct built *b)
{
    for (int i = 0; i < b->n; i++)
        free(b->json[i]);
}

/* Compares JSON texts as parsed values (key order does not matter). */
static void json_eq(const char *file, int line, const char *got, const char *want)
{
    cJSON *g = got ? cJSON_Parse(got) : NULL, *w = cJSON_Parse(want);
    if (!w)
        capid_test_fail(file, line, "bad expected JSON: %s", want);
    else if (!g || !cJSON_Compare(g, w, true))
        capid_test_fail(file, line, "events differ:\n  got  %s\n  want %s", got ? got : "(none)",
                        want);
    cJSON_Delete(g);
    cJSON_Delete(w);
}
#define ASSERT_JSON(got, want) json_eq(__FILE__, __LINE__, got, want)

/* Builds `csv` and checks that it gives exactly the events in `want`
 * (NULL-terminated) and no row errors. */
static void check(const char *file, int line, const char *csv, bool offline,
                  const char *const *want)
{
    struct built b;
    build(csv, offline, &b);
    if (b.rc != CAPID_OK)
        capid_test_fail(file, line, "header rejected: %s", b.hdr_err);
    int n = 0;
    while (want[n])
        n++;
    if (b.n != n)
        capid_test_fail(file, line, "got %d events, want %d", b.n, n);
    for (int i = 0; i < n && i < b.n; i++)
        json_eq(file, line, b.json[i], want[i]);
    if (b.errs[0])
        capid_test_fail(file, line, "unexpected row errors: %s", b.errs);
    built_free(&b);
}
#define CHECK(csv, offline, ...)                                                                   \
    check(__FILE__, __LINE__, csv, offline, (const char *const[]){__VA_ARGS__, NULL})

static void header_error(const char *file, int line, const char *csv, const char *want)
{
    struct built b;
    build(csv, true, &b);
    if (b.rc == CAPID_OK)
        capid_test_fail(file, line, "header accepted, want error \"%s\"", want);
    else if (strcmp(b.hdr_err, want) != 0)
        capid_test_fail(file, line, "header error:\n  got  \"%s\"\n  want \"%s\"", b.hdr_err, want);
    built_free(&b);
}
#define HEADER_ERROR(csv, want) header_error(__FILE__, __LINE__, csv, want)

TEST(rows_root_and_nested_fields_stay_strings)
{
    CHECK("event_name,id,value,currency,user.email,user.phone,context.event_id,"
          "context.event_timestamp\n"
          "purchase,T1,12.50,EUR,a@b.c,+33 6 12,ev-1,1700000000000\n",
          true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\",\"value\":\"12.50\","
          "\"currency\":\"EUR\",\"user\":{\"email\":\"a@b.c\",\"phone\":\"+33 6 12\"},"
          "\"context\":{\"event_id\":\"ev-1\",\"event_timestamp\":\"1700000000000\"}}");
}

TEST(rows_defaults_for_event_name_and_type)
{
    CHECK("id\nT1\n", true, "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\"}");
    CHECK("id\nT1\n", false, "{\"event_name\":\"purchase\",\"type\":\"online\",\"id\":\"T1\"}");
    /* Columns present: their values win; an empty cell leaves the key out. */
    CHECK("event_name,type,id\nrefund,call,T1\n,,T2\n", true,
          "{\"event_name\":\"refund\",\"type\":\"call\",\"id\":\"T1\"}", "{\"id\":\"T2\"}");
}

TEST(rows_defaults_come_first_in_the_text)
{
    struct built b;
    build("id,value\nT1,3\n", true, &b);
    ASSERT_INT(b.n, 1);
    ASSERT_STR(b.json[0], "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\","
                          "\"value\":\"3\"}");
    built_free(&b);
}

TEST(rows_empty_cells_and_empty_objects_are_left_out)
{
    CHECK("event_name,id,user.email,user.phone,context.page.url,value\n"
          "purchase,,,,,\n"
          "purchase,T2,,+1,,\n",
          true, "{\"event_name\":\"purchase\",\"type\":\"offline\"}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T2\","
          "\"user\":{\"phone\":\"+1\"}}");
}

TEST(rows_consent_categories_split_on_pipes)
{
    CHECK("id,user.consent_categories\n"
          "1,3\n"
          "2, 1 | 3|advertising \n"
          "3,1||2|\n"
          "4, | \n"
          "5,\n",
          true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"1\","
          "\"user\":{\"consent_categories\":[\"3\"]}}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"2\","
          "\"user\":{\"consent_categories\":[\"1\",\"3\",\"advertising\"]}}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"3\","
          "\"user\":{\"consent_categories\":[\"1\",\"2\"]}}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"4\"}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"5\"}");
}

TEST(rows_values_are_escaped)
{
    CHECK("id,user.firstname,custom\n"
          "1,\"Jo \"\"the\"\" \\ man\",\"two\r\nlines\ttab\"\n",
          true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"1\","
          "\"user\":{\"firstname\":\"Jo \\\"the\\\" \\\\ man\"},"
          "\"custom\":\"two\\r\\nlines\\ttab\"}");
    /* Header names are JSON-escaped too, and trimmed. */
    CHECK(" id ,\"we\"\"ird\"\n1,x\n", true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"1\",\"we\\\"ird\":\"x\"}");
}

TEST(rows_integrations_partners_and_custom_properties)
{
    CHECK("id,integrations.facebook.event_name,partners.facebook.net_revenue,store_code,status\n"
          "1,Purchase,9.5,PAR-01,delivered\n",
          true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"1\","
          "\"integrations\":{\"facebook\":{\"event_name\":\"Purchase\"}},"
          "\"partners\":{\"facebook\":{\"net_revenue\":\"9.5\"}},\"store_code\":\"PAR-01\","
          "\"status\":\"delivered\"}");
}

TEST(rows_indexed_items_one_row_per_event)
{
    CHECK("id,items.0.product.id,items.0.quantity,items.1.product.id,items.1.quantity,"
          "items.0.product.colors\n"
          "T1,P1,2,P2,1,red|blue\n"
          "T2,P3,1,,,\n"
          "T3,,,P4,5,\n"
          "T4,,,,,\n",
          true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\",\"items\":["
          "{\"product\":{\"id\":\"P1\",\"colors\":[\"red\",\"blue\"]},\"quantity\":\"2\"},"
          "{\"product\":{\"id\":\"P2\"},\"quantity\":\"1\"}]}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T2\",\"items\":["
          "{\"product\":{\"id\":\"P3\"},\"quantity\":\"1\"}]}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T3\",\"items\":["
          "{\"product\":{\"id\":\"P4\"},\"quantity\":\"5\"}]}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T4\"}");
}

TEST(rows_indexed_items_follow_index_order_not_column_order)
{
    struct built b;
    build("items.10.product.id,items.2.product.id,id\nB,A,T\n", true, &b);
    ASSERT_INT(b.n, 1);
    ASSERT_STR(b.json[0], "{\"event_name\":\"purchase\",\"type\":\"offline\",\"items\":["
                          "{\"product\":{\"id\":\"A\"}},{\"product\":{\"id\":\"B\"}}],"
                          "\"id\":\"T\"}");
    ASSERT_INT(b.layout, CAPID_ROWS_INDEXED);
    built_free(&b);
}

TEST(rows_unindexed_items_group_consecutive_rows_by_id)
{
    CHECK("id,value,user.email,items.product.id,items.quantity,items.product.price\n"
          "T1,30,a@x.y,P1,1,10\n"
          "T1,999,other@x.y,P2,2,10\n"
          "T2,5,b@x.y,P3,1,5\n"
          "T1,7,c@x.y,P9,1,7\n",
          true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\",\"value\":\"30\","
          "\"user\":{\"email\":\"a@x.y\"},\"items\":["
          "{\"product\":{\"id\":\"P1\",\"price\":\"10\"},\"quantity\":\"1\"},"
          "{\"product\":{\"id\":\"P2\",\"price\":\"10\"},\"quantity\":\"2\"}]}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T2\",\"value\":\"5\","
          "\"user\":{\"email\":\"b@x.y\"},\"items\":["
          "{\"product\":{\"id\":\"P3\",\"price\":\"5\"},\"quantity\":\"1\"}]}",
          /* T1 again but not consecutive: an event of its own. */
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\",\"value\":\"7\","
          "\"user\":{\"email\":\"c@x.y\"},\"items\":["
          "{\"product\":{\"id\":\"P9\",\"price\":\"7\"},\"quantity\":\"1\"}]}");
}

TEST(rows_unindexed_without_id_or_with_empty_id_make_one_event_per_row)
{
    CHECK("value,items.product.id\n1,P1\n1,P1\n", true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"value\":\"1\","
          "\"items\":[{\"product\":{\"id\":\"P1\"}}]}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"value\":\"1\","
          "\"items\":[{\"product\":{\"id\":\"P1\"}}]}");
    CHECK("id,items.product.id\n,P1\n,P2\n", true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\","
          "\"items\":[{\"product\":{\"id\":\"P1\"}}]}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\","
          "\"items\":[{\"product\":{\"id\":\"P2\"}}]}");
}

TEST(rows_unindexed_empty_items_are_left_out)
{
    CHECK("id,items.product.id,items.quantity\nT1,,\nT1,P2,\nT1,,\nT2,,\n", true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\","
          "\"items\":[{\"product\":{\"id\":\"P2\"}}]}",
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T2\"}");
    /* An event without root fields but with items. */
    CHECK("event_name,items.product.id\n,P1\n", true,
          "{\"type\":\"offline\",\"items\":[{\"product\":{\"id\":\"P1\"}}]}");
}

TEST(rows_both_item_layouts_give_identical_events)
{
    struct built a, b;
    build("id,value,currency,user.email,user.consent_categories,context.event_timestamp,"
          "items.0.product.id,items.0.product.price,items.0.quantity,items.0.product.colors,"
          "items.1.product.id,items.1.product.price,items.1.quantity,items.1.product.colors\n"
          "T1,30,EUR,a@x.y,1|3,1700000000000,P1,10,1,red|green,P2,20,1,\n"
          "T2,5,EUR,b@x.y,,1700000001000,P3,5,1,,,,,\n",
          true, &a);
    build("id,value,currency,user.email,user.consent_categories,context.event_timestamp,"
          "items.product.id,items.product.price,items.quantity,items.product.colors\n"
          "T1,30,EUR,a@x.y,1|3,1700000000000,P1,10,1,red|green\n"
          "T1,30,EUR,a@x.y,1|3,1700000000000,P2,20,1,\n"
          "T2,5,EUR,b@x.y,,1700000001000,P3,5,1,\n",
          true, &b);
    ASSERT_INT(a.layout, CAPID_ROWS_INDEXED);
    ASSERT_INT(b.layout, CAPID_ROWS_UNINDEXED);
    ASSERT_INT(a.n, 2);
    ASSERT_INT(b.n, 2);
    for (int i = 0; i < 2 && i < a.n && i < b.n; i++)
        ASSERT_JSON(b.json[i], a.json[i]);
    ASSERT_JSON(a.json[0], "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\","
                           "\"value\":\"30\",\"currency\":\"EUR\",\"user\":{\"email\":\"a@x.y\","
                           "\"consent_categories\":[\"1\",\"3\"]},\"context\":{"
                           "\"event_timestamp\":\"1700000000000\"},\"items\":[{\"product\":{"
                           "\"id\":\"P1\",\"price\":\"10\",\"colors\":[\"red\",\"green\"]},"
                           "\"quantity\":\"1\"},{\"product\":{\"id\":\"P2\",\"price\":\"20\"},"
                           "\"quantity\":\"1\"}]}");
    built_free(&a);
    built_free(&b);
}

TEST(rows_events_carry_first_line_and_resume_point)
{
    struct built b;
    build("id,user.city,items.product.id\n"   /* line 1 */
          "T1,\"Saint-Denis,\nRéunion\",P1\n" /* lines 2-3 */
          "T1,x,P2\n"                         /* line 4 */
          "\n"                                /* line 5 */
          "T2,y,P3\n"                         /* line 6 */
          "T2,y\n"                            /* line 7: bad row, skipped */
          "T2,y,P4\n",                        /* line 8 */
          true, &b);
    ASSERT_INT(b.n, 2);
    ASSERT_INT(b.ev[0].line, 2);
    ASSERT_INT(b.ev[0].rows, 2);
    ASSERT_INT(b.ev[0].offset, 30);
    ASSERT_INT(b.ev[0].end_offset, 68);
    ASSERT_INT(b.ev[0].next_line, 5);
    ASSERT_INT(b.ev[1].line, 6);
    ASSERT_INT(b.ev[1].rows, 2);
    ASSERT_INT(b.ev[1].next_line, 9);
    ASSERT_JSON(b.json[0], "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T1\","
                           "\"user\":{\"city\":\"Saint-Denis,\\nRéunion\"},\"items\":["
                           "{\"product\":{\"id\":\"P1\"}},{\"product\":{\"id\":\"P2\"}}]}");
    ASSERT_JSON(b.json[1], "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T2\","
                           "\"user\":{\"city\":\"y\"},\"items\":["
                           "{\"product\":{\"id\":\"P3\"}},{\"product\":{\"id\":\"P4\"}}]}");
    ASSERT_STR(b.errs, "line 7: 2 fields, header has 3\n");
    built_free(&b);
}

TEST(rows_group_over_the_item_cap_rejects_the_extra_rows)
{
    struct capid_buf csv;
    capid_buf_init(&csv, 0);
    capid_buf_puts(&csv, "id,items.product.id\n");
    for (int i = 0; i < CAPID_ROWS_MAX_ITEMS + 2; i++)
        capid_buf_printf(&csv, "T1,P%d\n", i);
    capid_buf_puts(&csv, "T2,Q\n");
    struct built b;
    build(csv.data, true, &b);
    ASSERT_INT(b.n, 2);
    cJSON *j = cJSON_Parse(b.json[0]);
    ASSERT_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "items")), CAPID_ROWS_MAX_ITEMS);
    cJSON_Delete(j);
    ASSERT_INT(b.ev[0].rows, CAPID_ROWS_MAX_ITEMS);
    char want[400];
    snprintf(want, sizeof(want),
             "line %d: event 'T1' (line 2) is over %d rows or %zu bytes\n"
             "line %d: event 'T1' (line 2) is over %d rows or %zu bytes\n",
             CAPID_ROWS_MAX_ITEMS + 2, CAPID_ROWS_MAX_ITEMS, CAPID_ROWS_MAX_EVENT,
             CAPID_ROWS_MAX_ITEMS + 3, CAPID_ROWS_MAX_ITEMS, CAPID_ROWS_MAX_EVENT);
    ASSERT_STR(b.errs, want);
    ASSERT_JSON(b.json[1], "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"T2\","
                           "\"items\":[{\"product\":{\"id\":\"Q\"}}]}");
    built_free(&b);
    capid_buf_release(&csv);
}

TEST(rows_feed_rejects_a_row_with_the_wrong_field_count)
{
    struct capid_csv_field f[2] = {{"id", 2}, {"value", 5}};
    struct capid_csv_record hdr = {.fields = f, .nfields = 2, .line = 1};
    struct capid_rows *r;
    struct capid_perr err;
    ASSERT_INT(capid_rows_new(&r, &hdr, true, &err), CAPID_OK);
    struct capid_csv_record row = {.fields = f, .nfields = 1, .line = 4};
    struct capid_rows_event ev;
    ASSERT_INT(capid_rows_feed(r, &row, &ev, &err), CAPID_EINVAL);
    ASSERT_STR(err.msg, "line 4: 1 fields, header has 2");
    ASSERT_INT(capid_rows_layout(r), CAPID_ROWS_NO_ITEMS);
    capid_rows_free(r);
    capid_rows_free(NULL);
}

TEST(rows_header_errors_name_the_column)
{
    HEADER_ERROR("", "line 1: empty header: the first row must name the columns");
    HEADER_ERROR("\n\n \n", "line 3: empty header: the first row must name the columns");
    HEADER_ERROR("id,,value\n", "line 1: column 2 has no name");
    HEADER_ERROR("id,value, id\n", "line 1: column 3 'id' duplicates column 1");
    HEADER_ERROR("id,user.email,user.email\n", "line 1: column 3 'user.email' duplicates column 2");
    HEADER_ERROR("id,billing.country\n",
                 "line 1: column 2 'billing.country': unknown object 'billing' (dotted names "
                 "start with user., context., items., integrations. or partners.)");
    HEADER_ERROR("value.x\n", "line 1: column 1 'value.x': unknown object 'value' (dotted names "
                              "start with user., context., items., integrations. or partners.)");
    HEADER_ERROR("id,user\n", "line 1: column 2 'user' is an object: name its properties, e.g. "
                              "'user.x'");
    HEADER_ERROR("items\n", "line 1: column 1 'items' is an object: name its properties, e.g. "
                            "'items.product.id'");
    HEADER_ERROR("items.0\n", "line 1: column 1 'items.0' is an object: name its properties, "
                              "e.g. 'items.0.product.id'");
    HEADER_ERROR("user.address,user.address.city\n",
                 "line 1: column 2 'user.address.city' conflicts with column 1 'user.address' (a "
                 "property cannot be both a value and an object)");
    HEADER_ERROR("user.address.city,user.address\n",
                 "line 1: column 2 'user.address' conflicts with column 1 'user.address.city' (a "
                 "property cannot be both a value and an object)");
    HEADER_ERROR("id,user..email\n", "line 1: column 2 'user..email': empty name segment");
    HEADER_ERROR("id,user.\n", "line 1: column 2 'user.': empty name segment");
    HEADER_ERROR(".id\n", "line 1: column 1 '.id': empty name segment");
    HEADER_ERROR("context.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p\n",
                 "line 1: column 1 'context.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p': more than 16 "
                 "levels");
}

TEST(rows_header_item_errors)
{
    HEADER_ERROR("id,items.0.product.id,items.product.id\n",
                 "line 1: column 3 'items.product.id': indexed and unindexed item columns cannot "
                 "be mixed (column 2 'items.0.product.id')");
    HEADER_ERROR("id,items.quantity,items.1.quantity\n",
                 "line 1: column 3 'items.1.quantity': indexed and unindexed item columns cannot "
                 "be mixed (column 2 'items.quantity')");
    HEADER_ERROR("items.01.quantity\n",
                 "line 1: column 1 'items.01.quantity': bad item index '01'");
    HEADER_ERROR("items.0.quantity,items.1002.quantity\n",
                 "line 1: column 2 'items.1002.quantity': item index 1002 leaves a gap of more "
                 "than 1000 after 0");
    HEADER_ERROR("items.1001.quantity\n", "line 1: column 1 'items.1001.quantity': item index "
                                          "1001 leaves a gap of more than 1000 after -1");
    HEADER_ERROR("items.12345678901.quantity\n",
                 "line 1: column 1 'items.12345678901.quantity': bad item index '12345678901'");
    /* Gaps up to 1000 are fine. */
    CHECK("items.0.quantity,items.1001.quantity,items.1000.quantity\n1,2,3\n", true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"items\":[{\"quantity\":\"1\"},"
          "{\"quantity\":\"3\"},{\"quantity\":\"2\"}]}");
}

TEST(rows_header_error_has_line_and_column)
{
    char path[] = "/tmp/capid-rows-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    ASSERT_INT(write(fd, "\n\nid,foo.bar\n", 13), 13);
    lseek(fd, 0, SEEK_SET);
    struct capid_csv *c;
    struct capid_csv_record rec;
    struct capid_perr err;
    capid_csv_open_fd(&c, fd, 0, NULL);
    ASSERT_INT(capid_csv_next(c, &rec, &err), 1);
    struct capid_rows *r = (struct capid_rows *)&r;
    ASSERT_INT(capid_rows_new(&r, &rec, true, &err), CAPID_EPARSE);
    ASSERT_TRUE(r == NULL);
    ASSERT_INT(err.line, 3);
    ASSERT_INT(err.column, 2);
    capid_csv_free(c);
    close(fd);
}

TEST(rows_too_many_columns)
{
    struct capid_buf csv;
    capid_buf_init(&csv, 0);
    for (int i = 0; i <= CAPID_ROWS_MAX_COLUMNS; i++)
        capid_buf_printf(&csv, "%sc%d", i ? "," : "", i);
    capid_buf_puts(&csv, "\n");
    struct built b;
    build(csv.data, true, &b);
    ASSERT_INT(b.rc, CAPID_ETOOBIG);
    ASSERT_STR(b.hdr_err, "line 1: header has 4097 columns, over 4096");
    built_free(&b);
    capid_buf_release(&csv);
}

TEST(rows_deep_paths_and_many_columns_build_valid_json)
{
    /* Every depth up to the limit, in both item layouts. */
    const char *csv = "id,context.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o,"
                      "items.0.a.b.c.d.e.f.g.h.i.j.k.l.m,context.a.b.z\n"
                      "1,deep,item,z\n";
    CHECK(
        csv, true,
        "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"1\",\"context\":{\"a\":{"
        "\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":{\"k\":{\"l\":{\"m\":{"
        "\"n\":{\"o\":\"deep\"}}}}}}}}}}}},\"z\":\"z\"}}},\"items\":[{\"a\":{\"b\":{\"c\":{\"d\":{"
        "\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":{\"k\":{\"l\":{\"m\":\"item\"}}}}}}}}}}}}}]}");
    CHECK("id,items.a.b.c.d.e.f.g.h.i.j.k.l.m.n.o\n1,x\n", true,
          "{\"event_name\":\"purchase\",\"type\":\"offline\",\"id\":\"1\",\"items\":[{\"a\":{"
          "\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{\"i\":{\"j\":{\"k\":{\"l\":{\"m\":{"
          "\"n\":{\"o\":\"x\"}}}}}}}}}}}}}}}]}");
}
