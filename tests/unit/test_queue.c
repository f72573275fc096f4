/* Queue tests on real SQLite files in a temp directory: round trips, dedup,
 * leases, dead letters, marks, housekeeping, two connections, injected disk
 * faults (a VFS shim), and a kill -9 crash test with an ack oracle. */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "queue/queue.h"

#define T0 1767225600 /* 2026-01-01T00:00:00Z */
#define W  CAPID_QUEUE_DEDUP_WINDOW_S
#define K  CAPID_QUEUE_KEEP_DELIVERED_S

/* ---- helpers ---- */

static struct capid_queue *qopen(const char *path)
{
    struct capid_queue *q = NULL;
    struct capid_queue_opts o = {.path = path};
    struct capid_perr err = {0};
    int rc = capid_queue_open(&q, &o, &err);
    if (rc != CAPID_OK)
        capid_test_fail(__FILE__, __LINE__, "open: %s", err.msg ? err.msg : capid_strerror(rc));
    return q;
}

static struct capid_queue_item item(const char *dest, const char *name, const char *id,
                                    const char *payload)
{
    return (struct capid_queue_item){.dest = dest,
                                     .event_name = name,
                                     .event_id = id,
                                     .action_source = "website",
                                     .event_time = T0 - 60,
                                     .payload = payload,
                                     .payload_len = strlen(payload)};
}

/* Enqueues one event; returns its result (or the call's error). */
static int put1(struct capid_queue *q, const char *dest, const char *id, int64_t now)
{
    struct capid_queue_item it = item(dest, "Purchase", id, "{\"p\":1}");
    int rc = capid_queue_enqueue(q, &it, 1, now, NULL);
    return rc == CAPID_OK ? it.result : rc;
}

/* Enqueues n events "<prefix><i>" in one transaction. */
static int put_n(struct capid_queue *q, const char *dest, const char *prefix, int n, int64_t now)
{
    struct capid_queue_item *items = calloc((size_t)n, sizeof(*items));
    char(*ids)[32] = calloc((size_t)n, 32);
    for (int i = 0; i < n; i++) {
        snprintf(ids[i], 32, "%s%d", prefix, i);
        items[i] = item(dest, "Purchase", ids[i], "{\"payload\":\"hashed\"}");
    }
    int rc = capid_queue_enqueue(q, items, (size_t)n, now, NULL);
    free(items);
    free(ids);
    return rc;
}

static int64_t *ids_of(const struct capid_queue_batch *b)
{
    int64_t *ids = malloc((b->n + 1) * sizeof(*ids));
    for (size_t i = 0; i < b->n; i++)
        ids[i] = b->rows[i].id;
    return ids;
}

/* Leases up to max rows of dest and applies `delivered` to them all. */
static int deliver_all(struct capid_queue *q, const char *dest, size_t max, int64_t now)
{
    struct capid_queue_batch b;
    if (capid_queue_lease(q, dest, max, now, &b) != CAPID_OK)
        return -1;
    int64_t *ids = ids_of(&b);
    int n = capid_queue_delivered(q, ids, b.n, "trace", now);
    free(ids);
    capid_queue_batch_release(&b);
    return n;
}

/* One integer from a fresh connection (not the queue's), -1 on error. */
static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_exec(db, sql, NULL, NULL, NULL))
        capid_test_fail(__FILE__, __LINE__, "sql '%s': %s", sql, sqlite3_errmsg(db));
    sqlite3_close(db);
}

static bool integrity_ok(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    bool ok = false;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok;
}

/* ---- round trips ---- */

TEST(queue_enqueue_lease_delivered_round_trip)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    struct capid_queue_item items[2] = {item("shop", "Purchase", "e1", "{\"a\":1}"),
                                        item("shop", "Lead", "e2", "{\"b\":2}")};
    items[1].action_source = NULL;
    ASSERT_INT(capid_queue_enqueue(q, items, 2, T0, NULL), CAPID_OK);
    ASSERT_INT(items[0].result, CAPID_OK);
    ASSERT_INT(items[1].result, CAPID_OK);

    struct capid_queue_batch b;
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0, &b), CAPID_OK);
    ASSERT_INT(b.n, 2);
    ASSERT_STR(b.rows[0].event_id, "e1");
    ASSERT_STR(b.rows[0].event_name, "Purchase");
    ASSERT_STR(b.rows[0].action_source, "website");
    ASSERT_STR(b.rows[0].payload, "{\"a\":1}");
    ASSERT_INT(b.rows[0].payload_len, 7);
    ASSERT_INT(b.rows[0].event_time, T0 - 60);
    ASSERT_INT(b.rows[0].enqueued_at, T0);
    ASSERT_INT(b.rows[0].attempts, 0);
    ASSERT_INT(b.rows[0].state, CAPID_QUEUE_LEASED);
    ASSERT_TRUE(b.rows[1].action_source == NULL);
    ASSERT_TRUE(b.rows[0].id < b.rows[1].id);

    /* Leased rows are not leased twice. */
    struct capid_queue_batch b2;
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0, &b2), CAPID_OK);
    ASSERT_INT(b2.n, 0);
    capid_queue_batch_release(&b2);

    int64_t *ids = ids_of(&b);
    ASSERT_INT(capid_queue_delivered(q, ids, 2, "AbC123", T0 + 1), 2);
    ASSERT_INT(capid_queue_delivered(q, ids, 2, "AbC123", T0 + 1), 0); /* not leased any more */
    struct capid_queue_batch s;
    ASSERT_INT(capid_queue_show(q, ids[0], &s), CAPID_OK);
    ASSERT_INT(s.rows[0].state, CAPID_QUEUE_DELIVERED);
    ASSERT_STR(s.rows[0].fbtrace_id, "AbC123");
    ASSERT_INT(s.rows[0].attempts, 1);
    ASSERT_INT(s.rows[0].changed_at, T0 + 1);
    ASSERT_TRUE(s.rows[0].payload == NULL); /* dropped at delivery */
    capid_queue_batch_release(&s);
    ASSERT_INT(capid_queue_show(q, 999999, &s), CAPID_ENOTFOUND);

    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.queued, 0);
    ASSERT_INT(c.leased, 0);
    ASSERT_INT(c.delivered, 2);
    ASSERT_INT(c.dead, 0);
    free(ids);
    capid_queue_batch_release(&b);
    capid_queue_close(q);
    ASSERT_TRUE(integrity_ok(t.path));
    capid_test_dir_release(&t);
}

TEST(queue_rejects_invalid_items_and_stores_nothing)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    struct capid_queue_item items[2] = {item("shop", "Purchase", "ok", "{}"),
                                        item("shop", "Purchase", NULL, "{}")};
    ASSERT_INT(capid_queue_enqueue(q, items, 2, T0, NULL), CAPID_EINVAL);
    items[1].event_id = "";
    ASSERT_INT(capid_queue_enqueue(q, items, 2, T0, NULL), CAPID_EINVAL);
    items[1].event_id = "big";
    items[1].payload_len = CAPID_QUEUE_MAX_PAYLOAD + 1;
    ASSERT_INT(capid_queue_enqueue(q, items, 2, T0, NULL), CAPID_ETOOBIG);
    struct capid_queue_mark m = {.key = NULL};
    items[1].payload_len = 2;
    ASSERT_INT(capid_queue_enqueue(q, items, 2, T0, &m), CAPID_EINVAL);
    struct capid_queue_batch b;
    ASSERT_INT(capid_queue_lease(q, "shop", CAPID_QUEUE_MAX_LEASE + 1, T0, &b), CAPID_EINVAL);
    ASSERT_INT(capid_queue_dead(q, NULL, 0, NULL, NULL, false, T0), CAPID_EINVAL);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, NULL, &c), CAPID_OK);
    ASSERT_INT(c.queued, 0);
    /* The refused items left no dedup key behind. */
    ASSERT_INT(put1(q, "shop", "ok", T0), CAPID_OK);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* ---- dedup ---- */

TEST(queue_dedup_refuses_within_window_and_accepts_after)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(put1(q, "shop", "e1", T0), CAPID_OK);
    ASSERT_INT(put1(q, "shop", "e1", T0 + 1), CAPID_EDUP);
    ASSERT_INT(put1(q, "shop", "e1", T0 + W - 1), CAPID_EDUP);
    /* Another destination or event name is another key. */
    ASSERT_INT(put1(q, "other", "e1", T0 + 1), CAPID_OK);
    struct capid_queue_item lead = item("shop", "Lead", "e1", "{}");
    ASSERT_INT(capid_queue_enqueue(q, &lead, 1, T0 + 1, NULL), CAPID_OK);
    ASSERT_INT(lead.result, CAPID_OK);
    /* Exactly the window later, it is a new event; then refused again. */
    ASSERT_INT(put1(q, "shop", "e1", T0 + W), CAPID_OK);
    ASSERT_INT(put1(q, "shop", "e1", T0 + W + 5), CAPID_EDUP);

    /* Two copies in one call: the second is the duplicate. */
    struct capid_queue_item two[3] = {item("shop", "Purchase", "d1", "{}"),
                                      item("shop", "Purchase", "d1", "{}"),
                                      item("shop", "Purchase", "d2", "{}")};
    ASSERT_INT(capid_queue_enqueue(q, two, 3, T0 + 10, NULL), CAPID_OK);
    ASSERT_INT(two[0].result, CAPID_OK);
    ASSERT_INT(two[1].result, CAPID_EDUP);
    ASSERT_INT(two[2].result, CAPID_OK);

    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.queued, 5); /* e1 twice (window apart), Lead e1, d1, d2 */
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* A content-derived id (has_id_time) is keyed by its time first: copies
 * meet as duplicates in the same call, across calls, and after the rotation
 * of the key tables, and negative times sort before positive ones without
 * mixing keys up. */
static struct capid_queue_item timed(const char *id, int64_t t)
{
    struct capid_queue_item it = item("shop", "Purchase", id, "{}");
    it.has_id_time = true;
    it.id_time = t;
    return it;
}

TEST(queue_dedup_of_content_ids_keyed_by_time)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(capid_queue_housekeep(q, T0), 0); /* window 1 starts at T0 in seen0 */
    const char *h = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    struct capid_queue_item a[4] = {timed(h, T0 - 100), timed(h, T0 - 100), timed("x", -5),
                                    timed("x", 5)};
    ASSERT_INT(capid_queue_enqueue(q, a, 4, T0, NULL), CAPID_OK);
    ASSERT_INT(a[0].result, CAPID_OK);
    ASSERT_INT(a[1].result, CAPID_EDUP);
    ASSERT_INT(a[2].result, CAPID_OK);
    ASSERT_INT(a[3].result, CAPID_OK); /* another time: another key (cannot happen for one id) */
    struct capid_queue_item b = timed(h, T0 - 100);
    ASSERT_INT(capid_queue_enqueue(q, &b, 1, T0 + W - 1, NULL), CAPID_OK);
    ASSERT_INT(b.result, CAPID_EDUP);
    /* The caller's id "x" is not the content id "x" of time 5: the forms never meet. */
    ASSERT_INT(put1(q, "shop", "x", T0 + 1), CAPID_OK);
    /* A key stored late in window 1 is found in the previous table after the swap. */
    struct capid_queue_item c = timed("late", 7);
    ASSERT_INT(capid_queue_enqueue(q, &c, 1, T0 + W - 10, NULL), CAPID_OK);
    ASSERT_INT(c.result, CAPID_OK);
    ASSERT_INT(capid_queue_housekeep(q, T0 + W), 0);
    ASSERT_INT(sql_int(t.path, "SELECT value FROM meta WHERE key = 'seen_cur'"), 1);
    c = timed("late", 7);
    ASSERT_INT(capid_queue_enqueue(q, &c, 1, T0 + W + 1, NULL), CAPID_OK);
    ASSERT_INT(c.result, CAPID_EDUP);
    /* After the window, a new event again. */
    struct capid_queue_item d = timed(h, T0 - 100);
    ASSERT_INT(capid_queue_enqueue(q, &d, 1, T0 + W, NULL), CAPID_OK);
    ASSERT_INT(d.result, CAPID_OK);
    struct capid_queue_counts n;
    ASSERT_INT(capid_queue_counts(q, "shop", &n), CAPID_OK);
    ASSERT_INT(n.queued, 6); /* h twice (a window apart), x at -5 and 5, caller's x, late */
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* New files get 16 KB pages; a file created with another page size (an
 * older capid, or by hand) keeps it and works the same, checkpoints included. */
TEST(queue_page_size_new_and_existing_files)
{
    struct capid_test_dir a = capid_test_dir_new("queue"), b = capid_test_dir_new("queue");
    sql_exec(b.path, "PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;"
                     " CREATE TABLE x(a); DROP TABLE x;");
    ASSERT_INT(sql_int(b.path, "PRAGMA page_size"), 4096);
    const char *paths[2] = {a.path, b.path};
    for (int i = 0; i < 2; i++) {
        struct capid_queue *q = qopen(paths[i]);
        for (int k = 0; k < 20; k++) { /* 20 commits of 1000 */
            char prefix[16];
            snprintf(prefix, sizeof(prefix), "p%d-", k);
            ASSERT_INT(put_n(q, "shop", prefix, 1000, T0), CAPID_OK);
        }
        struct capid_queue_counts c;
        ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
        ASSERT_INT(c.queued, 20000);
        capid_queue_close(q);
        ASSERT_TRUE(integrity_ok(paths[i]));
    }
    ASSERT_INT(sql_int(a.path, "PRAGMA page_size"), 16384);
    ASSERT_INT(sql_int(b.path, "PRAGMA page_size"), 4096);
    capid_test_dir_release(&a);
    capid_test_dir_release(&b);
}

TEST(queue_dedup_survives_purge_of_delivered_rows)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(capid_queue_housekeep(q, T0), 0); /* starts the first dedup window */
    ASSERT_INT(put1(q, "shop", "e1", T0), CAPID_OK);
    ASSERT_INT(deliver_all(q, "shop", 10, T0), 1);
    ASSERT_INT(capid_queue_housekeep(q, T0 + K - 1), 0);
    ASSERT_INT(capid_queue_housekeep(q, T0 + K), 1);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.delivered, 0);
    /* The row is gone, its key is not: still refused until the window ends. */
    ASSERT_INT(put1(q, "shop", "e1", T0 + K + 1), CAPID_EDUP);
    ASSERT_INT(put1(q, "shop", "e1", T0 + W - 1), CAPID_EDUP);
    ASSERT_INT(put1(q, "shop", "e1", T0 + W), CAPID_OK);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

TEST(queue_dedup_tables_rotate_and_keys_expire)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(capid_queue_housekeep(q, T0), 0); /* window 1 starts at T0 in seen0 */
    ASSERT_INT(put1(q, "shop", "a", T0), CAPID_OK);
    ASSERT_INT(capid_queue_housekeep(q, T0 + W - 1), 0);
    ASSERT_INT(put1(q, "shop", "a", T0 + W - 1), CAPID_EDUP);
    /* A full window later the (empty) other table becomes current. */
    ASSERT_INT(capid_queue_housekeep(q, T0 + W), 0);
    ASSERT_INT(sql_int(t.path, "SELECT value FROM meta WHERE key = 'seen_cur'"), 1);
    ASSERT_INT(put1(q, "shop", "b", T0 + W), CAPID_OK);
    ASSERT_INT(put1(q, "shop", "b", T0 + W + 1), CAPID_EDUP); /* found in the current table */
    ASSERT_INT(put1(q, "shop", "c", T0 + W - 10), CAPID_OK);
    ASSERT_INT(put1(q, "shop", "a", T0 + W), CAPID_OK); /* the previous key has expired */
    /* Keys in the previous table still count while in the window. */
    ASSERT_INT(sql_int(t.path, "SELECT count(*) FROM seen0"), 1);
    ASSERT_INT(sql_int(t.path, "UPDATE meta SET value = 0 WHERE key = 'seen_cur' RETURNING 0"), 0);
    ASSERT_INT(put1(q, "shop", "b", T0 + W + 2), CAPID_EDUP); /* now in "previous" seen1 */
    ASSERT_INT(sql_int(t.path, "UPDATE meta SET value = 1 WHERE key = 'seen_cur' RETURNING 1"), 1);
    /* Two windows in: seen0 (keys < T0 + W) is emptied, tables swap again. */
    ASSERT_INT(capid_queue_housekeep(q, T0 + 2 * W), 1);
    ASSERT_INT(sql_int(t.path, "SELECT count(*) FROM seen0"), 0);
    ASSERT_INT(sql_int(t.path, "SELECT value FROM meta WHERE key = 'seen_cur'"), 0);
    ASSERT_INT(put1(q, "shop", "b", T0 + 2 * W - 1), CAPID_EDUP);
    ASSERT_INT(put1(q, "shop", "b", T0 + 2 * W), CAPID_OK);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

TEST(queue_enqueue_keeps_payloads_with_their_events_around_duplicates)
{
    /* Inserts go many rows per statement: payloads must still land on the
     * ids of their own events when duplicates fall in between. */
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(put1(q, "shop", "e7", T0), CAPID_OK);
    enum { N = 230 };
    struct capid_queue_item items[N];
    char ids[N][24], payloads[N][64];
    for (int i = 0; i < N; i++) {
        /* every 5th repeats an earlier id of this call; e7 exists already */
        int id = i % 5 == 4 ? i - 2 : i;
        snprintf(ids[i], sizeof(ids[i]), "e%d", id);
        snprintf(payloads[i], sizeof(payloads[i]), "{\"for\":\"e%d\",\"i\":%d}", id, i);
        items[i] = item("shop", "Purchase", ids[i], payloads[i]);
    }
    ASSERT_INT(capid_queue_enqueue(q, items, N, T0, NULL), CAPID_OK);
    int stored = 0;
    for (int i = 0; i < N; i++) {
        int want = i % 5 == 4 || i == 7 ? CAPID_EDUP : CAPID_OK;
        ASSERT_INT(items[i].result, want);
        stored += items[i].result == CAPID_OK;
    }
    struct capid_queue_batch b;
    ASSERT_INT(capid_queue_lease(q, "shop", 1000, T0, &b), CAPID_OK);
    ASSERT_INT(b.n, stored + 1);
    for (size_t i = 1; i < b.n; i++) {
        char want[64];
        snprintf(want, sizeof(want), "{\"for\":\"%s\",", b.rows[i].event_id);
        ASSERT_TRUE(strncmp(b.rows[i].payload, want, strlen(want)) == 0);
        ASSERT_TRUE(b.rows[i].id > b.rows[i - 1].id);
    }
    capid_queue_batch_release(&b);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* ---- leases ---- */

TEST(queue_lease_respects_next_attempt_and_order)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(put1(q, "shop", "a", T0), CAPID_OK);
    ASSERT_INT(put1(q, "shop", "b", T0), CAPID_OK);
    ASSERT_INT(put1(q, "shop", "c", T0 + 5), CAPID_OK);
    ASSERT_INT(put1(q, "other", "x", T0), CAPID_OK);
    int64_t at = 0;
    ASSERT_INT(capid_queue_next_ready(q, "shop", &at), CAPID_OK);
    ASSERT_INT(at, T0);
    ASSERT_INT(capid_queue_next_ready(q, "none", &at), CAPID_ENOTFOUND);

    /* c is not ready before T0 + 5; leases take the oldest first. */
    struct capid_queue_batch b;
    ASSERT_INT(capid_queue_lease(q, "shop", 1, T0 + 1, &b), CAPID_OK);
    ASSERT_INT(b.n, 1);
    ASSERT_STR(b.rows[0].event_id, "a");
    int64_t a_id = b.rows[0].id;
    ASSERT_INT(capid_queue_retry(q, &a_id, 1, T0 + 100, "http 503", T0 + 1), 1);
    capid_queue_batch_release(&b);
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0 + 1, &b), CAPID_OK);
    ASSERT_INT(b.n, 1);
    ASSERT_STR(b.rows[0].event_id, "b");
    int64_t *ids = ids_of(&b);
    ASSERT_INT(capid_queue_release(q, ids, 1), 1);
    free(ids);
    capid_queue_batch_release(&b);

    /* At T0 + 50: b (ready T0) then c (T0 + 5); a waits for T0 + 100. */
    ASSERT_INT(capid_queue_next_ready(q, "shop", &at), CAPID_OK);
    ASSERT_INT(at, T0);
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0 + 50, &b), CAPID_OK);
    ASSERT_INT(b.n, 2);
    ASSERT_STR(b.rows[0].event_id, "b");
    ASSERT_INT(b.rows[0].attempts, 0); /* release does not count an attempt */
    ASSERT_STR(b.rows[1].event_id, "c");
    ASSERT_INT(capid_queue_next_ready(q, "shop", &at), CAPID_OK);
    ASSERT_INT(at, T0 + 100);
    capid_queue_batch_release(&b);
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0 + 100, &b), CAPID_OK);
    ASSERT_INT(b.n, 1);
    ASSERT_STR(b.rows[0].event_id, "a");
    ASSERT_INT(b.rows[0].attempts, 1);
    ASSERT_STR(b.rows[0].last_error, "http 503");
    capid_queue_batch_release(&b);
    ASSERT_INT(capid_queue_next_ready(q, "shop", &at), CAPID_ENOTFOUND);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

TEST(queue_recover_returns_leases_of_a_crashed_process)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(put_n(q, "shop", "e", 5, T0), CAPID_OK);
    struct capid_queue_batch b;
    ASSERT_INT(capid_queue_lease(q, "shop", 3, T0, &b), CAPID_OK);
    ASSERT_INT(b.n, 3);
    capid_queue_batch_release(&b);
    capid_queue_close(q); /* "crash": leases never resolved */

    q = qopen(t.path);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.leased, 3);
    ASSERT_INT(capid_queue_recover(q), 3);
    ASSERT_INT(capid_queue_recover(q), 0);
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.leased, 0);
    ASSERT_INT(c.queued, 5);
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0, &b), CAPID_OK);
    ASSERT_INT(b.n, 5);
    ASSERT_INT(b.rows[0].attempts, 1); /* the interrupted request may have been sent */
    ASSERT_INT(b.rows[4].attempts, 0);
    capid_queue_batch_release(&b);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* ---- dead letters ---- */

TEST(queue_dead_letters_list_show_replay_purge)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(put_n(q, "shop", "e", 6, T0), CAPID_OK);
    ASSERT_INT(put_n(q, "blog", "b", 2, T0), CAPID_OK);
    struct capid_queue_batch b;
    ASSERT_INT(capid_queue_lease(q, "shop", 6, T0, &b), CAPID_OK);
    int64_t *ids = ids_of(&b);
    const char *err = "{\"code\":100,\"error_subcode\":2804003,\"message\":\"bad\"}";
    ASSERT_INT(capid_queue_dead(q, ids, 2, "graph_rejected", err, true, T0 + 1), 2);
    ASSERT_INT(capid_queue_dead(q, ids + 2, 1, "event_too_old", NULL, false, T0 + 2), 1);
    ASSERT_INT(capid_queue_delivered(q, ids + 3, 3, "t", T0 + 1), 3);
    capid_queue_batch_release(&b);
    ASSERT_INT(capid_queue_lease(q, "blog", 2, T0, &b), CAPID_OK);
    int64_t blog_ids[2] = {b.rows[0].id, b.rows[1].id};
    ASSERT_INT(capid_queue_dead(q, blog_ids, 2, "graph_rejected", "{}", true, T0 + 3), 2);
    capid_queue_batch_release(&b);

    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.dead, 3);
    ASSERT_INT(c.delivered, 3);

    /* List: all, by destination, by reason, paged by id, by age. */
    ASSERT_INT(capid_queue_dead_list(q, NULL, 0, 100, &b), CAPID_OK);
    ASSERT_INT(b.n, 5);
    ASSERT_TRUE(b.rows[0].id < b.rows[1].id && b.rows[3].id < b.rows[4].id);
    ASSERT_TRUE(b.rows[0].payload == NULL);
    capid_queue_batch_release(&b);
    struct capid_queue_dead_filter f = {.dest = "shop"};
    ASSERT_INT(capid_queue_dead_list(q, &f, 0, 2, &b), CAPID_OK);
    ASSERT_INT(b.n, 2);
    ASSERT_INT(b.rows[0].id, ids[0]);
    ASSERT_STR(b.rows[0].reason, "graph_rejected");
    ASSERT_STR(b.rows[0].last_error, err);
    ASSERT_INT(b.rows[0].attempts, 1);
    int64_t after = b.rows[1].id;
    capid_queue_batch_release(&b);
    ASSERT_INT(capid_queue_dead_list(q, &f, after, 2, &b), CAPID_OK);
    ASSERT_INT(b.n, 1);
    ASSERT_STR(b.rows[0].reason, "event_too_old");
    ASSERT_INT(b.rows[0].attempts, 0); /* never sent */
    capid_queue_batch_release(&b);
    f = (struct capid_queue_dead_filter){.reason = "graph_rejected"};
    ASSERT_INT(capid_queue_dead_list(q, &f, 0, 100, &b), CAPID_OK);
    ASSERT_INT(b.n, 4);
    capid_queue_batch_release(&b);
    f = (struct capid_queue_dead_filter){.before = T0 + 2};
    ASSERT_INT(capid_queue_dead_list(q, &f, 0, 100, &b), CAPID_OK);
    ASSERT_INT(b.n, 2);
    capid_queue_batch_release(&b);

    /* Show keeps the payload for a dead row. */
    ASSERT_INT(capid_queue_show(q, ids[0], &b), CAPID_OK);
    ASSERT_INT(b.rows[0].state, CAPID_QUEUE_DEAD);
    ASSERT_STR(b.rows[0].payload, "{\"payload\":\"hashed\"}");
    ASSERT_STR(b.rows[0].dest, "shop");
    capid_queue_batch_release(&b);

    /* Replay by ids (a delivered id is ignored), then lease them again. */
    int64_t replay_ids[2] = {ids[0], ids[3]};
    f = (struct capid_queue_dead_filter){.ids = replay_ids, .n_ids = 2};
    ASSERT_INT(capid_queue_dead_replay(q, &f, T0 + 10), 1);
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0 + 10, &b), CAPID_OK);
    ASSERT_INT(b.n, 1);
    ASSERT_INT(b.rows[0].id, ids[0]);
    ASSERT_INT(b.rows[0].attempts, 0);
    ASSERT_TRUE(b.rows[0].reason == NULL);
    ASSERT_INT(capid_queue_dead(q, ids, 1, "graph_rejected", err, true, T0 + 11), 1);
    capid_queue_batch_release(&b);

    /* Replay all of one destination and reason. */
    f = (struct capid_queue_dead_filter){.dest = "shop", .reason = "event_too_old"};
    ASSERT_INT(capid_queue_dead_replay(q, &f, T0 + 12), 1);
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.dead, 2);
    ASSERT_INT(c.queued, 1);

    /* Purge by reason across destinations, then everything left. */
    f = (struct capid_queue_dead_filter){.reason = "graph_rejected", .before = T0 + 5};
    ASSERT_INT(capid_queue_dead_purge(q, &f), 3); /* shop ids[1], blog x2; ids[0] is newer */
    ASSERT_INT(capid_queue_dead_purge(q, NULL), 1);
    ASSERT_INT(capid_queue_counts(q, NULL, &c), CAPID_OK);
    ASSERT_INT(c.dead, 0);
    ASSERT_INT(capid_queue_show(q, ids[1], &b), CAPID_ENOTFOUND);
    /* Purged dead rows keep their dedup keys. */
    ASSERT_INT(put1(q, "blog", "b0", T0 + 20), CAPID_EDUP);
    free(ids);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* ---- marks and atomicity ---- */

TEST(queue_mark_commits_with_its_events)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    int64_t pos = -1;
    bool done = true;
    ASSERT_INT(capid_queue_mark_get(q, "file:abc", &pos, &done), CAPID_ENOTFOUND);
    struct capid_queue_item it = item("shop", "Purchase", "r1", "{}");
    struct capid_queue_mark m = {.key = "file:abc", .position = 4096, .done = false};
    ASSERT_INT(capid_queue_enqueue(q, &it, 1, T0, &m), CAPID_OK);
    ASSERT_INT(capid_queue_mark_get(q, "file:abc", &pos, &done), CAPID_OK);
    ASSERT_INT(pos, 4096);
    ASSERT_TRUE(!done);
    /* Duplicates still move the mark; so does a call without events. */
    m.position = 8192;
    ASSERT_INT(capid_queue_enqueue(q, &it, 1, T0, &m), CAPID_OK);
    ASSERT_INT(it.result, CAPID_EDUP);
    ASSERT_INT(capid_queue_mark_get(q, "file:abc", &pos, &done), CAPID_OK);
    ASSERT_INT(pos, 8192);
    m.done = true;
    ASSERT_INT(capid_queue_enqueue(q, NULL, 0, T0, &m), CAPID_OK);
    ASSERT_INT(capid_queue_mark_get(q, "file:abc", &pos, &done), CAPID_OK);
    ASSERT_TRUE(done);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* A VFS over the default one that injects faults: writes that fail as on a
 * full disk, or fsyncs that fail (T3). */
struct shim_file {
    sqlite3_file base;
    sqlite3_file *real;
};
static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static volatile int shim_disk_full, shim_fsync_fails;

#define REAL(f) (((struct shim_file *)(f))->real)
static int shim_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int shim_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int shim_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    if (shim_disk_full)
        return SQLITE_FULL;
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int shim_sync(sqlite3_file *f, int flags)
{
    if (shim_fsync_fails)
        return SQLITE_IOERR_FSYNC;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int shim_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int shim_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int shim_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int shim_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int shim_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int shim_devchar(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int shim_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int shim_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void shim_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int shim_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int shim_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}
static const sqlite3_io_methods shim_io = {
    3,
    shim_close,
    shim_read,
    shim_write,
    shim_truncate,
    shim_sync,
    shim_size,
    shim_lock,
    shim_unlock,
    shim_reserved,
    shim_fcntl,
    shim_sector,
    shim_devchar,
    shim_shm_map,
    shim_shm_lock,
    shim_shm_barrier,
    shim_shm_unmap,
    shim_fetch,
    shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    struct shim_file *sf = (struct shim_file *)f;
    sf->real = (sqlite3_file *)(sf + 1);
    int rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, out);
    sf->base.pMethods = rc == SQLITE_OK && sf->real->pMethods ? &shim_io : NULL;
    return rc;
}

/* Makes the shim the default VFS (so the queue uses it) until shim_off. */
static void shim_on(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    shim_vfs = *real_vfs;
    shim_vfs.zName = "capid-test-shim";
    shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = shim_open;
    shim_disk_full = shim_fsync_fails = 0;
    sqlite3_vfs_register(&shim_vfs, 1);
}

static void shim_off(void)
{
    sqlite3_vfs_unregister(&shim_vfs);
    shim_disk_full = shim_fsync_fails = 0;
}

TEST(queue_disk_full_commits_nothing_and_recovers)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    shim_on();
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(put_n(q, "shop", "a", 10, T0), CAPID_OK);

    /* 300 events and a mark in one transaction; the disk fills up. */
    struct capid_queue_item items[300];
    char ids[300][16];
    char payload[1200];
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = '\0';
    for (int i = 0; i < 300; i++) {
        snprintf(ids[i], sizeof(ids[i]), "b%d", i);
        items[i] = item("shop", "Purchase", ids[i], payload);
    }
    struct capid_queue_mark m = {.key = "imp", .position = 300};
    shim_disk_full = 1;
    ASSERT_INT(capid_queue_enqueue(q, items, 300, T0, &m), CAPID_EIO);
    ASSERT_TRUE(!capid_queue_failed(q)); /* disk full is not fatal */
    shim_disk_full = 0;
    ASSERT_INT(sql_int(t.path, "SELECT count(*) FROM events"), 10);
    ASSERT_INT(sql_int(t.path, "SELECT count(*) FROM marks"), 0);
    int64_t pos;
    ASSERT_INT(capid_queue_mark_get(q, "imp", &pos, NULL), CAPID_ENOTFOUND);

    /* Space is back: the same events are new (no key was left behind). */
    ASSERT_INT(capid_queue_enqueue(q, items, 300, T0, &m), CAPID_OK);
    ASSERT_INT(items[299].result, CAPID_OK);
    ASSERT_INT(capid_queue_mark_get(q, "imp", &pos, NULL), CAPID_OK);
    ASSERT_INT(pos, 300);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.queued, 310);
    capid_queue_close(q);
    shim_off();
    ASSERT_TRUE(integrity_ok(t.path));
    capid_test_dir_release(&t);
}

TEST(queue_fsync_error_fails_the_handle)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    shim_on();
    struct capid_queue *q = qopen(t.path);
    ASSERT_INT(put_n(q, "shop", "a", 10, T0), CAPID_OK);
    shim_fsync_fails = 1;
    ASSERT_INT(put_n(q, "shop", "b", 100, T0), CAPID_EIO);
    shim_fsync_fails = 0;
    /* Fail-stop: never retry after a failed fsync (PostgreSQL's lesson). */
    ASSERT_TRUE(capid_queue_failed(q));
    ASSERT_INT(put_n(q, "shop", "c", 1, T0), CAPID_EIO);
    struct capid_queue_batch b;
    ASSERT_INT(capid_queue_lease(q, "shop", 10, T0, &b), CAPID_EIO);
    capid_queue_close(q);
    shim_off();

    /* After a restart the file is sound; the failed commit's outcome is
     * unknown (all of it or none), never a part. */
    ASSERT_TRUE(integrity_ok(t.path));
    q = qopen(t.path);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_TRUE(c.queued == 10 || c.queued == 110);
    ASSERT_INT(put_n(q, "shop", "c", 1, T0), CAPID_OK);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* ---- housekeeping ---- */

TEST(queue_housekeep_purges_in_bounded_batches)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    int total = CAPID_QUEUE_MAX_LEASE + 50; /* one outcome call over 10,000 ids */
    ASSERT_INT(put_n(q, "shop", "e", total, T0), CAPID_OK);
    ASSERT_INT(put_n(q, "blog", "e", 5, T0), CAPID_OK);
    struct capid_queue_batch b1, b2;
    ASSERT_INT(capid_queue_lease(q, "shop", CAPID_QUEUE_MAX_LEASE, T0, &b1), CAPID_OK);
    ASSERT_INT(capid_queue_lease(q, "shop", CAPID_QUEUE_MAX_LEASE, T0, &b2), CAPID_OK);
    ASSERT_INT(b1.n + b2.n, total);
    int64_t *ids = malloc((size_t)total * sizeof(*ids));
    for (size_t i = 0; i < b1.n; i++)
        ids[i] = b1.rows[i].id;
    for (size_t i = 0; i < b2.n; i++)
        ids[b1.n + i] = b2.rows[i].id;
    ASSERT_INT(capid_queue_delivered(q, ids, (size_t)total, "t", T0), total);
    ASSERT_INT(sql_int(t.path, "SELECT count(*) FROM payloads"), 5); /* blog's */
    free(ids);
    capid_queue_batch_release(&b1);
    capid_queue_batch_release(&b2);
    ASSERT_INT(deliver_all(q, "blog", 1000, T0 + 100), 5);
    ASSERT_INT(capid_queue_housekeep(q, T0 + K - 1), 0);
    ASSERT_INT(capid_queue_housekeep(q, T0 + K), CAPID_QUEUE_HOUSEKEEP_MAX);
    ASSERT_INT(capid_queue_housekeep(q, T0 + K), total - CAPID_QUEUE_HOUSEKEEP_MAX);
    ASSERT_INT(capid_queue_housekeep(q, T0 + K), 0);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, NULL, &c), CAPID_OK);
    ASSERT_INT(c.delivered, 5); /* blog's rows are younger */
    ASSERT_INT(capid_queue_housekeep(q, T0 + K + 100), 5);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

TEST(queue_counts_and_destinations)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    char **dests = NULL;
    ASSERT_INT(capid_queue_dests(q, &dests), 0);
    ASSERT_TRUE(dests && dests[0] == NULL);
    free(dests);
    struct capid_queue_item a = item("shop", "Purchase", "a", "{}");
    struct capid_queue_item b = item("shop", "Purchase", "b", "{}");
    struct capid_queue_item c = item("blog", "Lead", "c", "{}");
    a.event_time = T0 - 500;
    b.event_time = T0 - 100;
    c.event_time = T0 - 900;
    ASSERT_INT(capid_queue_enqueue(q, &a, 1, T0, NULL), CAPID_OK);
    ASSERT_INT(capid_queue_enqueue(q, &b, 1, T0 + 1, NULL), CAPID_OK);
    ASSERT_INT(capid_queue_enqueue(q, &c, 1, T0 + 2, NULL), CAPID_OK);
    ASSERT_INT(put1(q, "zeta", "z", T0), CAPID_OK);
    ASSERT_INT(deliver_all(q, "zeta", 10, T0), 1);
    struct capid_queue_batch bt;
    ASSERT_INT(capid_queue_lease(q, "shop", 1, T0, &bt), CAPID_OK); /* a, the oldest */
    capid_queue_batch_release(&bt);

    struct capid_queue_counts n;
    ASSERT_INT(capid_queue_counts(q, "shop", &n), CAPID_OK);
    ASSERT_INT(n.queued, 1);
    ASSERT_INT(n.leased, 1);
    ASSERT_INT(n.oldest_event_time, T0 - 500); /* the leased one counts */
    ASSERT_INT(n.oldest_enqueued_at, T0);
    ASSERT_INT(capid_queue_counts(q, NULL, &n), CAPID_OK);
    ASSERT_INT(n.queued, 2);
    ASSERT_INT(n.leased, 1);
    ASSERT_INT(n.delivered, 1);
    ASSERT_INT(n.oldest_event_time, T0 - 900);
    ASSERT_INT(capid_queue_counts(q, "zeta", &n), CAPID_OK);
    ASSERT_INT(n.delivered, 1);
    ASSERT_INT(n.oldest_event_time, 0);
    ASSERT_INT(capid_queue_dests(q, &dests), 3);
    ASSERT_STR(dests[0], "blog");
    ASSERT_STR(dests[1], "shop");
    ASSERT_STR(dests[2], "zeta");
    ASSERT_TRUE(dests[3] == NULL);
    free(dests);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* ---- files and schema ---- */

TEST(queue_open_refuses_what_is_not_a_capid_queue)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = NULL;
    struct capid_perr err = {0};
    struct capid_queue_opts o = {.path = t.path, .no_create = true};
    ASSERT_INT(capid_queue_open(&q, &o, &err), CAPID_ENOTFOUND);
    ASSERT_TRUE(access(t.path, F_OK) != 0);

    /* Not a database: refused, left untouched. */
    FILE *f = fopen(t.path, "w");
    for (int i = 0; i < 1000; i++)
        fputs("not sqlite ", f);
    fclose(f);
    o.no_create = false;
    ASSERT_INT(capid_queue_open(&q, &o, &err), CAPID_EIO);
    ASSERT_TRUE(q == NULL);
    ASSERT_TRUE(err.msg && strstr(err.msg, "cannot open queue"));
    size_t len = 0;
    char *body = capid_test_slurp(t.path, &len);
    ASSERT_INT(len, 11000);
    free(body);
    unlink(t.path);

    /* Another application's database: refused, left as it was. */
    sql_exec(t.path, "CREATE TABLE users(id INTEGER); INSERT INTO users VALUES (1)");
    char *before = capid_test_slurp(t.path, &len);
    size_t before_len = len;
    ASSERT_INT(capid_queue_open(&q, &o, &err), CAPID_ESTATE);
    ASSERT_TRUE(strstr(err.msg, "not a capid queue") != NULL);
    body = capid_test_slurp(t.path, &len);
    ASSERT_TRUE(len == before_len && memcmp(body, before, len) == 0); /* still not WAL */
    free(before);
    free(body);
    unlink(t.path);

    /* A queue from a newer capid: refused, not downgraded. */
    q = qopen(t.path);
    capid_queue_close(q);
    ASSERT_INT(sql_int(t.path, "PRAGMA user_version"), 1);
    ASSERT_INT(sql_int(t.path, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
    sql_exec(t.path, "PRAGMA user_version = 99");
    ASSERT_INT(capid_queue_open(&q, &o, &err), CAPID_ESTATE);
    ASSERT_TRUE(strstr(err.msg, "newer") != NULL);
    sql_exec(t.path, "PRAGMA user_version = 1");
    q = qopen(t.path);
    ASSERT_TRUE(q != NULL);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

/* ---- two connections ---- */

TEST(queue_busy_writer_gives_ebusy_after_timeout)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = NULL;
    struct capid_queue_opts o = {.path = t.path, .busy_timeout_ms = 50};
    ASSERT_INT(capid_queue_open(&q, &o, NULL), CAPID_OK);
    sqlite3 *db;
    ASSERT_INT(sqlite3_open(t.path, &db), SQLITE_OK);
    ASSERT_INT(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    ASSERT_INT(put1(q, "shop", "e", T0), CAPID_EBUSY);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, NULL, &c), CAPID_OK); /* readers are not blocked */
    ASSERT_INT(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ASSERT_TRUE(!capid_queue_failed(q));
    ASSERT_INT(put1(q, "shop", "e", T0), CAPID_OK);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}

struct importer {
    const char *path;
    int batches, per_batch, errors;
};

static void *importer_run(void *arg)
{
    struct importer *im = arg;
    struct capid_queue *q = NULL;
    struct capid_queue_opts o = {.path = im->path};
    if (capid_queue_open(&q, &o, NULL) != CAPID_OK) {
        im->errors++;
        return NULL;
    }
    for (int i = 0; i < im->batches; i++) {
        struct capid_queue_mark m = {.key = "file", .position = i + 1};
        struct capid_queue_item *items = calloc((size_t)im->per_batch, sizeof(*items));
        char(*ids)[32] = calloc((size_t)im->per_batch, 32);
        for (int k = 0; k < im->per_batch; k++) {
            snprintf(ids[k], 32, "imp%d-%d", i, k);
            items[k] = item("shop", "Purchase", ids[k], "{}");
        }
        if (capid_queue_enqueue(q, items, (size_t)im->per_batch, T0, &m) != CAPID_OK)
            im->errors++;
        free(items);
        free(ids);
    }
    capid_queue_close(q);
    return NULL;
}

TEST(queue_two_connections_importer_and_server_share_the_file)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *srv = qopen(t.path);
    ASSERT_INT(capid_queue_recover(srv), 0);
    struct importer im = {.path = t.path, .batches = 40, .per_batch = 250};
    pthread_t th;
    ASSERT_INT(pthread_create(&th, NULL, importer_run, &im), 0);
    /* The server delivers while the importer writes, each on its own
     * connection, until everything imported has been delivered. */
    int total = im.batches * im.per_batch, delivered = 0;
    for (int spins = 0; delivered < total && spins < 100000; spins++) {
        int n = deliver_all(srv, "shop", 500, T0);
        if (n < 0)
            break;
        delivered += n;
    }
    pthread_join(th, NULL);
    ASSERT_INT(im.errors, 0);
    ASSERT_INT(delivered, total);
    int64_t pos = 0;
    ASSERT_INT(capid_queue_mark_get(srv, "file", &pos, NULL), CAPID_OK);
    ASSERT_INT(pos, im.batches);
    /* A key written by one connection is a duplicate for the other. */
    ASSERT_INT(put1(srv, "shop", "imp0-0", T0), CAPID_EDUP);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(srv, "shop", &c), CAPID_OK);
    ASSERT_INT(c.delivered, total);
    ASSERT_INT(c.queued + c.leased, 0);
    capid_queue_close(srv);
    ASSERT_TRUE(integrity_ok(t.path));
    capid_test_dir_release(&t);
}

TEST(queue_checkpoints_run_off_the_committing_thread)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    struct capid_queue *q = qopen(t.path);
    /* ~14 MB of events: past the 8 MB that wakes the checkpoint thread. */
    enum { N = 1000, ROUNDS = 12 };
    struct capid_queue_item *items = calloc(N, sizeof(*items));
    char(*ids)[32] = calloc(N, 32);
    char *payload = malloc(1201);
    memset(payload, 'h', 1200);
    payload[1200] = '\0';
    for (int r = 0; r < ROUNDS; r++) {
        for (int i = 0; i < N; i++) {
            snprintf(ids[i], 32, "c%d-%d", r, i);
            items[i] = item("shop", "Purchase", ids[i], payload);
        }
        ASSERT_INT(capid_queue_enqueue(q, items, N, T0, NULL), CAPID_OK);
    }
    /* The main file grows only when the WAL is copied into it. */
    struct stat sb = {0};
    for (int i = 0; i < 500 && (stat(t.path, &sb) != 0 || sb.st_size < 8 * 1048576); i++)
        usleep(10000);
    ASSERT_TRUE(sb.st_size >= 8 * 1048576);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.queued, N * ROUNDS);
    free(items);
    free(ids);
    free(payload);
    capid_queue_close(q);
    ASSERT_TRUE(integrity_ok(t.path));
    capid_test_dir_release(&t);
}

/* ---- kill -9 ---- */

#define CRASH_ROUNDS 12
#define CRASH_BATCH  50

static void crash_payload(char *buf, size_t cap, long long id)
{
    snprintf(buf, cap, "{\"event_id\":\"ev-%lld\",\"hashed\":\"%064lld\"}", id, id * 7919);
}

/* The child acts as importer and server at once: it resumes from its mark,
 * enqueues batches (mark in the same transaction), and writes a batch's
 * range to the pipe only after the commit returned; between batches it
 * leases and resolves some rows. It runs until killed. Odd rounds use
 * synchronous=NORMAL: a process crash must not lose a commit either way. */
static void crash_child(const char *path, int wfd, bool sync_normal)
{
    struct capid_queue *q = NULL;
    struct capid_queue_opts o = {.path = path, .sync_normal = sync_normal};
    if (capid_queue_open(&q, &o, NULL) != CAPID_OK)
        _exit(10);
    if (capid_queue_recover(q) < 0)
        _exit(11);
    int64_t pos = 0;
    int rc = capid_queue_mark_get(q, "crash", &pos, NULL);
    if (rc != CAPID_OK && rc != CAPID_ENOTFOUND)
        _exit(12);
    struct capid_queue_item items[CRASH_BATCH];
    char ids[CRASH_BATCH][32], payloads[CRASH_BATCH][128];
    for (int iter = 0; iter < 200000; iter++) {
        for (int k = 0; k < CRASH_BATCH; k++) {
            long long id = pos + 1 + k;
            snprintf(ids[k], sizeof(ids[k]), "ev-%lld", id);
            crash_payload(payloads[k], sizeof(payloads[k]), id);
            items[k] = item("shop", "Purchase", ids[k], payloads[k]);
        }
        struct capid_queue_mark m = {.key = "crash", .position = pos + CRASH_BATCH};
        if (capid_queue_enqueue(q, items, CRASH_BATCH, T0, &m) != CAPID_OK)
            _exit(13);
        for (int k = 0; k < CRASH_BATCH; k++)
            if (items[k].result != CAPID_OK)
                _exit(14); /* a duplicate: the mark lagged behind its events */
        int64_t rec[2] = {pos + 1, pos + CRASH_BATCH};
        if (write(wfd, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
            _exit(15);
        pos += CRASH_BATCH;
        if (iter % 2 == 0) {
            struct capid_queue_batch b;
            if (capid_queue_lease(q, "shop", 40, T0, &b) != CAPID_OK)
                _exit(16);
            int64_t lids[40];
            for (size_t i = 0; i < b.n; i++)
                lids[i] = b.rows[i].id;
            size_t half = b.n / 2;
            if (capid_queue_delivered(q, lids, half, "t", T0) < 0 ||
                capid_queue_retry(q, lids + half, b.n - half, T0, "http 500", T0) < 0)
                _exit(17);
            capid_queue_batch_release(&b);
        }
    }
    _exit(0);
}

static void push_ack(int64_t (**acked)[2], size_t *n, size_t *cap, const int64_t rec[2])
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        int64_t(*p)[2] = realloc(*acked, *cap * sizeof(**acked));
        if (!p)
            abort();
        *acked = p;
    }
    memcpy((*acked)[(*n)++], rec, 2 * sizeof(int64_t));
}

TEST(queue_kill9_loses_no_acknowledged_event)
{
    struct capid_test_dir t = capid_test_dir_new("queue");
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    srand(seed);
    int64_t(*acked)[2] = NULL;
    size_t n_acked = 0, cap = 0;
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        int fds[2];
        if (pipe(fds) != 0)
            abort();
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            crash_child(t.path, fds[1], round % 2 == 1);
        }
        close(fds[1]);
        int64_t rec[2];
        /* Round 0 may die while creating the schema; later rounds once
         * they have acknowledged at least one batch. */
        if (round > 0 && read(fds[0], rec, sizeof(rec)) == (ssize_t)sizeof(rec))
            push_ack(&acked, &n_acked, &cap, rec);
        struct timespec d = {0, (long)(rand() % 60000) * 1000L};
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        while (read(fds[0], rec, sizeof(rec)) == (ssize_t)sizeof(rec))
            push_ack(&acked, &n_acked, &cap, rec);
        close(fds[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            capid_test_fail(__FILE__, __LINE__, "round %d (seed %u): child exited with %d", round,
                            seed, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    }
    ASSERT_TRUE(n_acked > 0);
    ASSERT_TRUE(integrity_ok(t.path));

    struct capid_queue *q = qopen(t.path);
    ASSERT_TRUE(capid_queue_recover(q) >= 0);
    int64_t pos = 0;
    ASSERT_INT(capid_queue_mark_get(q, "crash", &pos, NULL), CAPID_OK);
    /* Every acknowledged event is within the mark... */
    for (size_t i = 0; i < n_acked; i++)
        if (acked[i][1] > pos)
            capid_test_fail(__FILE__, __LINE__, "seed %u: acked %lld > mark %lld", seed,
                            (long long)acked[i][1], (long long)pos);
    /* ...and the events are exactly ev-1..ev-<mark>, each once, each with
     * its dedup key, the payloads byte-identical. */
    ASSERT_INT(sql_int(t.path, "SELECT count(*) FROM events"), pos);
    ASSERT_INT(sql_int(t.path, "SELECT count(DISTINCT event_id) FROM events"), pos);
    ASSERT_INT(sql_int(t.path, "SELECT max(CAST(substr(event_id, 4) AS INTEGER)) FROM events"),
               pos);
    ASSERT_INT(sql_int(t.path, "SELECT min(CAST(substr(event_id, 4) AS INTEGER)) FROM events"), 1);
    ASSERT_INT(
        sql_int(t.path, "SELECT (SELECT count(*) FROM seen0) + (SELECT count(*) FROM seen1)"), pos);
    struct capid_queue_counts c;
    ASSERT_INT(capid_queue_counts(q, "shop", &c), CAPID_OK);
    ASSERT_INT(c.leased, 0);
    ASSERT_INT(c.queued + c.delivered, pos);
    struct capid_queue_batch b;
    int bad = 0;
    for (;;) {
        ASSERT_INT(capid_queue_lease(q, "shop", 1000, T0, &b), CAPID_OK);
        if (b.n == 0)
            break;
        for (size_t i = 0; i < b.n; i++) {
            char want[128];
            crash_payload(want, sizeof(want), atoll(b.rows[i].event_id + 3));
            bad += strcmp(want, b.rows[i].payload) != 0;
        }
        int64_t *ids = ids_of(&b);
        capid_queue_delivered(q, ids, b.n, "t", T0);
        free(ids);
        capid_queue_batch_release(&b);
    }
    capid_queue_batch_release(&b);
    ASSERT_INT(bad, 0);
    if (capid_test_failures() || getenv("CAPID_TEST_VERBOSE"))
        printf("queue_kill9: seed %u, %d kills, %zu acked batches, mark %lld\n", seed, CRASH_ROUNDS,
               n_acked, (long long)pos);
    free(acked);
    capid_queue_close(q);
    capid_test_dir_release(&t);
}
