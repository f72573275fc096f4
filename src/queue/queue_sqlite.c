/* SQLite backend of the durable queue: one WAL file holding the events'
 * metadata (a partial index per state), their payloads, two tables of dedup
 * keys that outlive the events, and import marks. A thread per handle runs
 * the checkpoints. See docs/QUEUE.md for the schema and the durability
 * trade-offs. */
#include "queue/queue.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "util/log.h"

#define APP_ID         0x63617071 /* "capq": PRAGMA application_id of a capid queue */
#define SCHEMA_VERSION 1          /* PRAGMA user_version after the last migration */
#define CHUNK_SIZE     65536      /* batch arena chunk */
#define CKPT_BYTES     (8 << 20)  /* WAL size that wakes the checkpointer */
#define CKPT_HARD      (64 << 20) /* WAL size past which the writer checkpoints */
#define PAGE_SIZE      16384      /* of a new file; an existing one keeps its own */

/* Explicit migrations: entry i takes user_version i to i + 1, in one
 * transaction with the version bump. Never edit a released entry; append. */
static const char *const migrations[SCHEMA_VERSION] = {
    /* 1: initial schema. Events hold metadata only (~100 bytes), so that a
     * state change rewrites a small row; payloads live apart, written once,
     * deleted at delivery (whole pages go to the freelist). AUTOINCREMENT so
     * that an id is never reused after a purge. Each state has its own
     * partial index, so a row sits in exactly one of them and the queued
     * index stays as small as the backlog. */
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " dest TEXT NOT NULL,"
    " event_name TEXT NOT NULL,"
    " event_id TEXT NOT NULL,"
    " action_source TEXT,"
    " event_time INTEGER NOT NULL,"
    " enqueued_at INTEGER NOT NULL,"
    " state INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at INTEGER NOT NULL,"
    " changed_at INTEGER NOT NULL,"
    " last_error TEXT,"
    " reason TEXT,"
    " fbtrace_id TEXT);"
    "CREATE TABLE payloads (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);"
    /* `state` ends each key: SQLite counts a partial index as covering only
     * if it holds the columns of its own WHERE clause. */
    "CREATE INDEX events_queued"
    " ON events(dest, next_attempt_at, id, event_time, enqueued_at, state) WHERE state = 0;"
    "CREATE INDEX events_leased ON events(dest, state) WHERE state = 1;"
    "CREATE INDEX events_delivered ON events(dest, changed_at, state) WHERE state = 2;"
    "CREATE INDEX events_dead ON events(dest, state) WHERE state = 3;"
    /* SPEC 7: a second (dest, event_name, event_id) within 48 h is refused,
     * even after the first row was purged, so the keys live apart. Keys go
     * to the current table of two; the other holds the previous window and
     * is emptied, in key order, once it is wholly past the window. There is
     * no index on `at`: its inserts would cost as much as the keys'. The key
     * k is dest NUL event_name NUL event_id, not a hash: exact, and ids that
     * grow with time (CA's web ids are timestamps) append at the end of the
     * tree instead of landing on a random page. */
    "CREATE TABLE seen0 (k BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE seen1 (k BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta VALUES ('seen_cur', 0), ('seen_since', 0);"
    /* Issue 6: import positions, committed with their events. */
    "CREATE TABLE marks ("
    " key TEXT PRIMARY KEY, position INTEGER NOT NULL, done INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL) WITHOUT ROWID;",
};

/* Columns read into a struct capid_queue_row, from `events AS e`. */
#define ROW_COLS                                                                                   \
    "e.id, e.state, e.dest, e.event_name, e.event_id, e.action_source, e.event_time,"              \
    " e.enqueued_at, e.next_attempt_at, e.changed_at, e.attempts, e.last_error, e.reason,"         \
    " e.fbtrace_id"

/* Dead-row filters shared by list, replay and purge: ?2 reason, ?3 before. */
#define DEAD_WHERE                                                                                 \
    " e.state = 3 AND (?2 IS NULL OR e.reason = ?2) AND (?3 <= 0 OR e.changed_at < ?3)"

enum stmt_id {
    ST_BEGIN_WRITE,
    ST_BEGIN_READ,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_META_GET,
    ST_META_SET,
    ST_SEEN_PUT0, /* insert or renew a key in seen0 */
    ST_SEEN_PUT1,
    ST_SEEN_GET0, /* `at` of a key in seen0 */
    ST_SEEN_GET1,
    ST_SEEN_ANY0, /* whether seen0 holds a key */
    ST_SEEN_ANY1,
    ST_SEEN_DEL0, /* deletes the first ?1 keys of seen0 */
    ST_SEEN_DEL1,
    ST_INSERT,
    ST_PAYLOAD_INSERT,
    ST_PAYLOAD_DELETE_DELIVERED, /* payloads of the listed rows now delivered */
    ST_PAYLOAD_DELETE_DEAD,      /* payloads of the listed rows that are dead */
    ST_MARK_SET,
    ST_MARK_GET,
    ST_LEASE_SELECT,
    ST_LEASE_UPDATE,
    ST_DELIVERED,
    ST_RETRY,
    ST_RELEASE,
    ST_DEAD,
    ST_RECOVER,
    ST_NEXT_READY,
    ST_COUNT_QUEUED,
    ST_COUNT_LEASED,
    ST_COUNT_DELIVERED,
    ST_COUNT_DEAD,
    ST_COUNT_QUEUED_ALL,
    ST_COUNT_LEASED_ALL,
    ST_COUNT_DELIVERED_ALL,
    ST_COUNT_DEAD_ALL,
    ST_DEST_QUEUED, /* next destination after ?1 with a row in this state */
    ST_DEST_LEASED,
    ST_DEST_DELIVERED,
    ST_DEST_DEAD,
    ST_SHOW,
    ST_DEAD_LIST,     /* by destination */
    ST_DEAD_LIST_ALL, /* every destination */
    ST_DEAD_ONE,
    ST_DEAD_IDS, /* ids of matching dead rows of one destination after a cursor */
    ST_REPLAY,
    ST_DEAD_DELETE,
    ST_HK_DELIVERED,
    ST_INSERT_MULTI,         /* ST_INSERT for MULTI rows (SQL built at first use) */
    ST_PAYLOAD_INSERT_MULTI, /* ST_PAYLOAD_INSERT for MULTI rows */
    ST__N
};

/* Partial indexes are used only when the WHERE clause names the state as a
 * literal, hence one statement per state; INDEXED BY pins the plan. */
static const char *const stmt_sql[ST__N] = {
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] = "UPDATE meta SET value = ?2 WHERE key = ?1",
    /* The upsert inserts a new key or renews one older than the window (?3);
     * no change means a duplicate. */
    [ST_SEEN_PUT0] = "INSERT INTO seen0(k, at) VALUES (?1, ?2)"
                     " ON CONFLICT DO UPDATE SET at = excluded.at WHERE at <= excluded.at - ?3",
    [ST_SEEN_PUT1] = "INSERT INTO seen1(k, at) VALUES (?1, ?2)"
                     " ON CONFLICT DO UPDATE SET at = excluded.at WHERE at <= excluded.at - ?3",
    [ST_SEEN_GET0] = "SELECT at FROM seen0 WHERE k = ?1",
    [ST_SEEN_GET1] = "SELECT at FROM seen1 WHERE k = ?1",
    [ST_SEEN_ANY0] = "SELECT 1 FROM seen0 LIMIT 1",
    [ST_SEEN_ANY1] = "SELECT 1 FROM seen1 LIMIT 1",
    [ST_SEEN_DEL0] = "DELETE FROM seen0 WHERE k IN (SELECT k FROM seen0 ORDER BY k LIMIT ?1)",
    [ST_SEEN_DEL1] = "DELETE FROM seen1 WHERE k IN (SELECT k FROM seen1 ORDER BY k LIMIT ?1)",
    [ST_INSERT] = "INSERT INTO events(dest, event_name, event_id, action_source, event_time,"
                  " enqueued_at, state, attempts, next_attempt_at, changed_at)"
                  " VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, ?)",
    [ST_PAYLOAD_INSERT] = "INSERT INTO payloads(id, payload) VALUES (?1, ?2)",
    [ST_PAYLOAD_DELETE_DELIVERED] = "DELETE FROM payloads WHERE id IN (SELECT e.id FROM"
                                    " json_each(?1) AS j JOIN events AS e ON e.id = j.value"
                                    " WHERE e.state = 2)",
    [ST_PAYLOAD_DELETE_DEAD] = "DELETE FROM payloads WHERE id IN (SELECT e.id FROM"
                               " json_each(?1) AS j JOIN events AS e ON e.id = j.value"
                               " WHERE e.state = 3)",
    [ST_MARK_SET] = "INSERT INTO marks(key, position, done, updated_at) VALUES (?1, ?2, ?3, ?4)"
                    " ON CONFLICT DO UPDATE SET position = excluded.position,"
                    " done = excluded.done, updated_at = excluded.updated_at",
    [ST_MARK_GET] = "SELECT position, done FROM marks WHERE key = ?1",
    [ST_LEASE_SELECT] = "SELECT " ROW_COLS ", p.payload FROM events AS e INDEXED BY events_queued"
                        " LEFT JOIN payloads AS p ON p.id = e.id"
                        " WHERE e.dest = ?1 AND e.state = 0 AND e.next_attempt_at <= ?2"
                        " ORDER BY e.next_attempt_at, e.id LIMIT ?3",
    /* The same rows as ST_LEASE_SELECT: both run in one write transaction. */
    [ST_LEASE_UPDATE] = "UPDATE events SET state = 1, changed_at = ?2 WHERE id IN"
                        " (SELECT id FROM events INDEXED BY events_queued WHERE dest = ?1"
                        " AND state = 0 AND next_attempt_at <= ?2"
                        " ORDER BY next_attempt_at, id LIMIT ?3)",
    /* Outcomes take their ids as a JSON array in ?1: one statement per
     * batch instead of one per row (a quarter less CPU per event). */
    [ST_DELIVERED] = "UPDATE events SET state = 2, attempts = attempts + 1, fbtrace_id = ?2,"
                     " changed_at = ?3, last_error = NULL"
                     " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 1",
    [ST_RETRY] = "UPDATE events SET state = 0, attempts = attempts + 1, next_attempt_at = ?2,"
                 " last_error = ?3, changed_at = ?4"
                 " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 1",
    [ST_RELEASE] = "UPDATE events SET state = 0"
                   " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 1",
    [ST_DEAD] = "UPDATE events SET state = 3, attempts = attempts + ?5, reason = ?2,"
                " last_error = ?3, changed_at = ?4"
                " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 1",
    [ST_RECOVER] = "UPDATE events SET state = 0, attempts = attempts + 1,"
                   " last_error = 'lease recovered at startup' WHERE state = 1",
    [ST_NEXT_READY] = "SELECT min(next_attempt_at) FROM events INDEXED BY events_queued"
                      " WHERE dest = ?1 AND state = 0",
    [ST_COUNT_QUEUED] = "SELECT count(*), min(event_time), min(enqueued_at)"
                        " FROM events INDEXED BY events_queued WHERE dest = ?1 AND state = 0",
    [ST_COUNT_LEASED] = "SELECT count(*), min(event_time), min(enqueued_at)"
                        " FROM events INDEXED BY events_leased WHERE dest = ?1 AND state = 1",
    [ST_COUNT_DELIVERED] = "SELECT count(*) FROM events INDEXED BY events_delivered"
                           " WHERE dest = ?1 AND state = 2",
    [ST_COUNT_DEAD] = "SELECT count(*) FROM events INDEXED BY events_dead"
                      " WHERE dest = ?1 AND state = 3",
    [ST_COUNT_QUEUED_ALL] = "SELECT count(*), min(event_time), min(enqueued_at)"
                            " FROM events INDEXED BY events_queued WHERE state = 0",
    [ST_COUNT_LEASED_ALL] = "SELECT count(*), min(event_time), min(enqueued_at)"
                            " FROM events INDEXED BY events_leased WHERE state = 1",
    [ST_COUNT_DELIVERED_ALL] = "SELECT count(*) FROM events INDEXED BY events_delivered"
                               " WHERE state = 2",
    [ST_COUNT_DEAD_ALL] = "SELECT count(*) FROM events INDEXED BY events_dead WHERE state = 3",
    [ST_DEST_QUEUED] = "SELECT dest FROM events INDEXED BY events_queued"
                       " WHERE state = 0 AND dest > ?1 ORDER BY dest LIMIT 1",
    [ST_DEST_LEASED] = "SELECT dest FROM events INDEXED BY events_leased"
                       " WHERE state = 1 AND dest > ?1 ORDER BY dest LIMIT 1",
    [ST_DEST_DELIVERED] = "SELECT dest FROM events INDEXED BY events_delivered"
                          " WHERE state = 2 AND dest > ?1 ORDER BY dest LIMIT 1",
    [ST_DEST_DEAD] = "SELECT dest FROM events INDEXED BY events_dead"
                     " WHERE state = 3 AND dest > ?1 ORDER BY dest LIMIT 1",
    [ST_SHOW] = "SELECT " ROW_COLS ", p.payload FROM events AS e"
                " LEFT JOIN payloads AS p ON p.id = e.id WHERE e.id = ?1",
    [ST_DEAD_LIST] = "SELECT " ROW_COLS ", NULL FROM events AS e INDEXED BY events_dead"
                     " WHERE e.dest = ?1 AND" DEAD_WHERE " AND e.id > ?4 ORDER BY e.id LIMIT ?5",
    [ST_DEAD_LIST_ALL] = "SELECT " ROW_COLS ", NULL FROM events AS e INDEXED BY events_dead"
                         " WHERE" DEAD_WHERE " AND e.id > ?4 ORDER BY e.id LIMIT ?5",
    [ST_DEAD_ONE] = "SELECT " ROW_COLS ", NULL FROM events AS e"
                    " WHERE e.id = ?4 AND (?1 IS NULL OR e.dest = ?1) AND" DEAD_WHERE,
    [ST_DEAD_IDS] = "SELECT e.id FROM events AS e INDEXED BY events_dead"
                    " WHERE e.dest = ?1 AND" DEAD_WHERE " AND e.id > ?4 ORDER BY e.id LIMIT ?5",
    [ST_REPLAY] = "UPDATE events SET state = 0, attempts = 0, next_attempt_at = ?2,"
                  " changed_at = ?2, reason = NULL, last_error = NULL"
                  " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 3",
    [ST_DEAD_DELETE] = "DELETE FROM events"
                       " WHERE id IN (SELECT value FROM json_each(?1)) AND state = 3",
    [ST_HK_DELIVERED] = "DELETE FROM events WHERE id IN (SELECT id FROM events"
                        " INDEXED BY events_delivered WHERE dest = ?1 AND state = 2"
                        " AND changed_at <= ?2 LIMIT ?3)",
};

/* The WAL is copied back into the database by a thread of the handle, on
 * its own connection, so that commits do not wait for checkpoints (they
 * took a fifth of the enqueue time when done by the committing thread). */
struct ckpt {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool running, stop, want;
    sqlite3 *db; /* used by the thread only */
};

struct capid_queue {
    sqlite3 *db;
    char *path;
    int64_t dedup_window_s;
    int64_t keep_delivered_s;
    bool failed;
    sqlite3_stmt *st[ST__N]; /* prepared on first use, kept until close */
    struct ckpt ck;
    int ckpt_pages, ckpt_hard; /* CKPT_BYTES and CKPT_HARD in pages of this file */
    int ckpt_woken;            /* WAL size (pages) when the checkpointer was last woken */
    char *key;                 /* dedup key being built */
    size_t key_cap;
};

/* Batch storage: strings live in chunks that never move. */
struct chunk {
    struct chunk *next;
    size_t used, cap;
    char data[];
};

/* With every input capped, out-of-memory aborts (STYLE: as Redis does). */
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

const char *capid_queue_state_name(int state)
{
    static const char *const names[] = {"queued", "leased", "delivered", "dead"};
    return state >= 0 && state <= CAPID_QUEUE_DEAD ? names[state] : "unknown";
}

/* Maps a SQLite result code to a capid_err. Errors that leave the file in
 * doubt (I/O other than disk full, corruption) fail the handle for good. */
static int map_rc(struct capid_queue *q, int rc, const char *what)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return CAPID_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return CAPID_EBUSY;
    case SQLITE_NOMEM:
        abort();
    case SQLITE_FULL:
        capid_error("cannot %s queue '%s': disk full", what, q->path);
        return CAPID_EIO;
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
        if (!q->failed)
            capid_error("cannot %s queue '%s': %s (%d); queue stopped, restart required", what,
                        q->path, sqlite3_errstr(rc), rc);
        q->failed = true;
        return CAPID_EIO;
    case SQLITE_TOOBIG:
        return CAPID_ETOOBIG;
    default:
        capid_error("cannot %s queue '%s': %s", what, q->path, sqlite3_errmsg(q->db));
        return CAPID_EIO;
    }
}

#define MULTI 32 /* rows per multi-row INSERT: one statement step for many rows */

/* SQL of ST_INSERT_MULTI and ST_PAYLOAD_INSERT_MULTI: the single-row VALUES
 * tuple repeated MULTI times, with anonymous parameters. OR FAIL: a failed
 * row keeps the rows before it instead of undoing the statement, so SQLite
 * keeps no statement journal (a copy of every page the statement touches);
 * any failure rolls the whole transaction back anyway. Callgrind, 20,000
 * events: insert_new 353M -> 278M instructions. */
static char *multi_sql(enum stmt_id id)
{
    const char *head = id == ST_INSERT_MULTI
                           ? "INSERT OR FAIL INTO events(dest, event_name, event_id, action_source,"
                             " event_time, enqueued_at, state, attempts, next_attempt_at,"
                             " changed_at) VALUES "
                           : "INSERT OR FAIL INTO payloads(id, payload) VALUES ";
    const char *row = id == ST_INSERT_MULTI ? "(?, ?, ?, ?, ?, ?, 0, 0, ?, ?)" : "(?, ?)";
    size_t cap = strlen(head) + MULTI * (strlen(row) + 1) + 1, len = 0;
    char *sql = xmalloc(cap);
    len += (size_t)snprintf(sql, cap, "%s", head);
    for (int i = 0; i < MULTI; i++)
        len += (size_t)snprintf(sql + len, cap - len, i ? ",%s" : "%s", row);
    return sql;
}

static sqlite3_stmt *stmt(struct capid_queue *q, enum stmt_id id)
{
    if (!q->st[id]) {
        char *built = id == ST_INSERT_MULTI || id == ST_PAYLOAD_INSERT_MULTI ? multi_sql(id) : NULL;
        int rc = sqlite3_prepare_v3(q->db, built ? built : stmt_sql[id], -1,
                                    SQLITE_PREPARE_PERSISTENT, &q->st[id], NULL);
        free(built);
        if (rc != SQLITE_OK) {
            capid_error("cannot prepare queue statement %d: %s", (int)id, sqlite3_errmsg(q->db));
            q->st[id] = NULL;
            return NULL;
        }
    }
    return q->st[id];
}

static void bind_str(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Steps a statement that returns no row, resets it; returns a SQLite code. */
static int run(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Executes a cached statement without parameters (BEGIN, COMMIT, ...). */
static int exec_st(struct capid_queue *q, enum stmt_id id)
{
    sqlite3_stmt *st = stmt(q, id);
    return st ? run(st) : SQLITE_ERROR;
}

static int begin_write(struct capid_queue *q)
{
    if (q->failed)
        return CAPID_EIO;
    return map_rc(q, exec_st(q, ST_BEGIN_WRITE), "lock");
}

/* Rolls back whatever is open, keeping the first error's code. */
static int abort_txn(struct capid_queue *q, int err)
{
    for (int i = 0; i < ST__N; i++)
        if (q->st[i])
            sqlite3_reset(q->st[i]);
    if (!sqlite3_get_autocommit(q->db))
        exec_st(q, ST_ROLLBACK);
    return err;
}

static int commit(struct capid_queue *q)
{
    int rc = exec_st(q, ST_COMMIT);
    if (rc == SQLITE_OK)
        return CAPID_OK;
    return abort_txn(q, map_rc(q, rc, "commit to"));
}

/* ---- checkpointer ---- */

static void *ckpt_main(void *arg)
{
    struct capid_queue *q = arg;
    pthread_mutex_lock(&q->ck.mu);
    for (;;) {
        while (!q->ck.stop && !q->ck.want)
            pthread_cond_wait(&q->ck.cv, &q->ck.mu);
        if (q->ck.stop)
            break;
        q->ck.want = false;
        pthread_mutex_unlock(&q->ck.mu);
        /* PASSIVE: copies what it can, never waits for readers or writers. */
        int rc = sqlite3_wal_checkpoint_v2(q->ck.db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            capid_warn("cannot checkpoint queue '%s': %s", q->path, sqlite3_errmsg(q->ck.db));
        pthread_mutex_lock(&q->ck.mu);
    }
    pthread_mutex_unlock(&q->ck.mu);
    return NULL;
}

/* Called by SQLite after each commit with the WAL size in pages. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    struct capid_queue *q = arg;
    if (pages < q->ckpt_woken) /* the WAL restarted */
        q->ckpt_woken = 0;
    if (pages >= q->ckpt_hard) {
        /* Under a steady stream the thread never catches up with the last
         * frame, so the WAL would never restart: finish here, between two
         * commits (cheap: the thread has copied most frames already). */
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (pages - q->ckpt_woken >= q->ckpt_pages) {
        /* Once per CKPT_BYTES of new frames, not after every commit past
         * it: each checkpoint syncs the WAL and the database (strace of
         * enqueueing 100,000 events: 336 fsyncs on the thread before). */
        q->ckpt_woken = pages;
        pthread_mutex_lock(&q->ck.mu);
        q->ck.want = true;
        pthread_cond_signal(&q->ck.cv);
        pthread_mutex_unlock(&q->ck.mu);
    }
    return SQLITE_OK;
}

/* Starts the checkpointer; without it SQLite's own autocheckpoint stays. */
static void ckpt_start(struct capid_queue *q, bool sync_normal)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(q->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db,
                          sync_normal ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        capid_warn("queue '%s': no checkpoint thread: %s", q->path, db ? sqlite3_errmsg(db) : "");
        sqlite3_close(db);
        return;
    }
    sqlite3_busy_timeout(db, 1000);
    q->ck.db = db;
    pthread_mutex_init(&q->ck.mu, NULL);
    pthread_cond_init(&q->ck.cv, NULL);
    if (pthread_create(&q->ck.thread, NULL, ckpt_main, q) != 0) {
        pthread_mutex_destroy(&q->ck.mu);
        pthread_cond_destroy(&q->ck.cv);
        sqlite3_close(q->ck.db);
        q->ck.db = NULL;
        return;
    }
    q->ck.running = true;
    sqlite3_wal_hook(q->db, wal_hook, q); /* replaces the autocheckpoint */
}

static void ckpt_stop(struct capid_queue *q)
{
    if (!q->ck.running)
        return;
    sqlite3_wal_hook(q->db, NULL, NULL);
    pthread_mutex_lock(&q->ck.mu);
    q->ck.stop = true;
    pthread_cond_signal(&q->ck.cv);
    pthread_mutex_unlock(&q->ck.mu);
    pthread_join(q->ck.thread, NULL);
    pthread_mutex_destroy(&q->ck.mu);
    pthread_cond_destroy(&q->ck.cv);
    sqlite3_close(q->ck.db);
    q->ck.running = false;
}

/* ---- open, close, migrations ---- */

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            *out = 0;
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int open_fail(struct capid_perr *err, const char *path, int code, const char *what,
                     const char *detail)
{
    capid_perr_set(err, (size_t)-1, "cannot open queue '%s': %s%s", path, what, detail);
    return code;
}

static int code_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return CAPID_EBUSY;
    case SQLITE_NOMEM:
        return CAPID_ENOMEM;
    default:
        return CAPID_EIO;
    }
}

/* Refuses a file that holds something else than a capid queue, or a queue
 * of a newer schema; sets *ver. Never start empty over an existing file. */
static int check_identity(sqlite3 *db, const char *path, int64_t *ver, struct capid_perr *err)
{
    int64_t app = 0, objects = 0;
    int rc = pragma_int(db, "PRAGMA user_version", ver);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = pragma_int(db, "SELECT count(*) FROM sqlite_schema", &objects);
    if (rc != SQLITE_OK)
        return open_fail(err, path, code_of(rc), "", sqlite3_errmsg(db));
    if (app != APP_ID && (app != 0 || *ver != 0 || objects != 0))
        return open_fail(err, path, CAPID_ESTATE, "", "not a capid queue");
    if (*ver > SCHEMA_VERSION)
        return open_fail(err, path, CAPID_ESTATE, "",
                         "schema version newer than this capid; upgrade capid");
    return CAPID_OK;
}

/* Brings the schema to SCHEMA_VERSION, one migration per transaction; the
 * identity and version are read again under the write lock (another
 * process may have migrated in between). */
static int migrate(sqlite3 *db, const char *path, struct capid_perr *err)
{
    for (;;) {
        int64_t ver = 0;
        int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return open_fail(err, path, code_of(rc), "", sqlite3_errmsg(db));
        int ret = check_identity(db, path, &ver, err);
        if (ret != CAPID_OK || ver == SCHEMA_VERSION) {
            rc = sqlite3_exec(db, ret == CAPID_OK ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL);
            if (ret == CAPID_OK && rc != SQLITE_OK)
                ret = open_fail(err, path, code_of(rc), "", sqlite3_errmsg(db));
            return ret;
        }
        char bump[96];
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d; PRAGMA application_id = %d",
                 (int)ver + 1, APP_ID);
        rc = sqlite3_exec(db, migrations[ver], NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, bump, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            ret = open_fail(err, path, code_of(rc), "migration failed: ", sqlite3_errmsg(db));
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return ret;
        }
        if (ver == 0)
            capid_info("queue '%s' created (schema version %d)", path, (int)ver + 1);
        else
            capid_info("queue '%s' migrated to schema version %d", path, (int)ver + 1);
    }
}

int capid_queue_open(struct capid_queue **out, const struct capid_queue_opts *o,
                     struct capid_perr *err)
{
    *out = NULL;
    if (!o || !o->path || !*o->path)
        return open_fail(err, "", CAPID_EINVAL, "", "no path");
    if (o->dedup_window_s < 0 || o->keep_delivered_s < 0 || o->busy_timeout_ms < 0)
        return open_fail(err, o->path, CAPID_EINVAL, "", "negative option");
    struct stat sb;
    if (o->no_create && stat(o->path, &sb) != 0)
        return open_fail(err, o->path, errno == ENOENT ? CAPID_ENOTFOUND : CAPID_EIO, "",
                         strerror(errno));

    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    if (!o->no_create)
        flags |= SQLITE_OPEN_CREATE;
    int rc = sqlite3_open_v2(o->path, &db, flags, NULL);
    int ret = CAPID_OK;
    if (rc != SQLITE_OK) {
        ret = open_fail(err, o->path, code_of(rc), "", db ? sqlite3_errmsg(db) : "no memory");
        goto out;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, o->busy_timeout_ms ? o->busy_timeout_ms : CAPID_QUEUE_BUSY_TIMEOUT_MS);

    /* Checks what the file is before anything writes to it. */
    int64_t ver = 0;
    if ((ret = check_identity(db, o->path, &ver, err)) != CAPID_OK)
        goto out;
    /* 16 KB pages for a new file (an existing one keeps its size): a
     * payload of ~1.2 KB fills a 4 KB page by three and wastes the rest,
     * and every page is two write calls into the WAL and a read and a write
     * at the checkpoint. Measured on 100,000 enqueued events: 10% less CPU
     * than 4 KB (1.73 s against 1.94 s, user + system). Must precede WAL,
     * whose first write fixes the size. */
    char pragmas[320];
    snprintf(pragmas, sizeof(pragmas), "PRAGMA page_size = %d", PAGE_SIZE);
    if (ver == 0 && (rc = sqlite3_exec(db, pragmas, NULL, NULL, NULL)) != SQLITE_OK) {
        ret = open_fail(err, o->path, code_of(rc), "", sqlite3_errmsg(db));
        goto out;
    }
    /* WAL: readers never block the writer, a commit is one append (+ fsync
     * with FULL). The mode is persistent in the file. */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        rc = mode && strcmp(mode, "wal") == 0 ? SQLITE_OK : SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) {
        ret = open_fail(err, o->path, code_of(rc),
                        "cannot enable WAL: ", rc == SQLITE_ERROR ? "refused" : sqlite3_errstr(rc));
        goto out;
    }
    if ((ret = migrate(db, o->path, err)) != CAPID_OK)
        goto out;
    /* synchronous: FULL syncs the WAL at every commit (durable on power
     * loss); NORMAL only at checkpoints (a process crash loses nothing, a
     * power loss may lose the last commits). The autocheckpoint applies only
     * if the checkpoint thread cannot start; the size limit truncates the
     * WAL after a checkpoint.
     * secure_delete FAST zeroes deleted content in pages written anyway but
     * does not write freed pages (Debian builds default to ON, which doubles
     * the writes of payload deletion).
     * temp_store MEMORY keeps statement journals (multi-row inserts open
     * one) in memory: they were two temp files per commit under /var/tmp,
     * 40,000 of the 84,000 write calls of enqueueing 100,000 events. */
    int64_t page = 0;
    if ((rc = pragma_int(db, "PRAGMA page_size", &page)) != SQLITE_OK || page < 512) {
        ret = open_fail(err, o->path, code_of(rc), "", sqlite3_errmsg(db));
        goto out;
    }
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA synchronous = %s; PRAGMA wal_autocheckpoint = %d;"
             " PRAGMA journal_size_limit = %d; PRAGMA cache_size = -8192;"
             " PRAGMA secure_delete = FAST; PRAGMA temp_store = MEMORY;"
             " PRAGMA foreign_keys = OFF",
             o->sync_normal ? "NORMAL" : "FULL", (int)(CKPT_BYTES / page), CKPT_HARD);
    rc = sqlite3_exec(db, pragmas, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        ret = open_fail(err, o->path, code_of(rc), "", sqlite3_errmsg(db));
        goto out;
    }

    struct capid_queue *q = xmalloc(sizeof(*q));
    memset(q, 0, sizeof(*q));
    q->db = db;
    db = NULL; /* now owned by q */
    q->path = xstrdup(o->path);
    q->ckpt_pages = (int)(CKPT_BYTES / page);
    q->ckpt_hard = (int)(CKPT_HARD / page);
    q->dedup_window_s = o->dedup_window_s ? o->dedup_window_s : CAPID_QUEUE_DEDUP_WINDOW_S;
    q->keep_delivered_s = o->keep_delivered_s ? o->keep_delivered_s : CAPID_QUEUE_KEEP_DELIVERED_S;
    ckpt_start(q, o->sync_normal);
    *out = q;
out:
    sqlite3_close(db);
    return ret;
}

void capid_queue_close(struct capid_queue *q)
{
    if (!q)
        return;
    ckpt_stop(q);
    for (int i = 0; i < ST__N; i++)
        sqlite3_finalize(q->st[i]);
    if (sqlite3_close(q->db) != SQLITE_OK)
        capid_warn("cannot close queue '%s': %s", q->path, sqlite3_errmsg(q->db));
    free(q->key);
    free(q->path);
    free(q);
}

bool capid_queue_failed(const struct capid_queue *q)
{
    return q->failed;
}

/* ---- batches ---- */

static char *arena_dup(struct chunk **head, const void *p, size_t n)
{
    struct chunk *c = *head;
    if (!c || c->cap - c->used < n + 1) {
        size_t cap = n + 1 > CHUNK_SIZE ? n + 1 : CHUNK_SIZE;
        c = xmalloc(sizeof(*c) + cap);
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    char *s = c->data + c->used;
    memcpy(s, p, n);
    s[n] = '\0';
    c->used += n + 1;
    return s;
}

static char *col_str(struct chunk **a, sqlite3_stmt *st, int i, size_t *len)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return NULL;
    const unsigned char *p = sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    if (!p)
        abort(); /* only on out-of-memory */
    if (len)
        *len = n;
    return arena_dup(a, p, n);
}

/* Appends the current row of a ROW_COLS + payload statement to b. */
static void batch_add(struct capid_queue_batch *b, size_t *cap, sqlite3_stmt *st)
{
    if (b->n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        b->rows = xrealloc(b->rows, *cap * sizeof(*b->rows));
    }
    struct chunk **a = (struct chunk **)&b->mem_;
    struct capid_queue_row *r = &b->rows[b->n++];
    memset(r, 0, sizeof(*r));
    r->id = sqlite3_column_int64(st, 0);
    r->state = sqlite3_column_int(st, 1);
    r->dest = col_str(a, st, 2, NULL);
    r->event_name = col_str(a, st, 3, NULL);
    r->event_id = col_str(a, st, 4, NULL);
    r->action_source = col_str(a, st, 5, NULL);
    r->event_time = sqlite3_column_int64(st, 6);
    r->enqueued_at = sqlite3_column_int64(st, 7);
    r->next_attempt_at = sqlite3_column_int64(st, 8);
    r->changed_at = sqlite3_column_int64(st, 9);
    r->attempts = sqlite3_column_int(st, 10);
    r->last_error = col_str(a, st, 11, NULL);
    r->reason = col_str(a, st, 12, NULL);
    r->fbtrace_id = col_str(a, st, 13, NULL);
    r->payload = col_str(a, st, 14, &r->payload_len);
}

void capid_queue_batch_release(struct capid_queue_batch *b)
{
    if (!b)
        return;
    for (struct chunk *c = b->mem_, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(b->rows);
    memset(b, 0, sizeof(*b));
}

/* ---- enqueue and marks ---- */

static int check_items(const struct capid_queue_item *items, size_t n,
                       const struct capid_queue_mark *mark)
{
    for (size_t i = 0; i < n; i++) {
        const struct capid_queue_item *it = &items[i];
        if (!it->dest || !*it->dest || !it->event_name || !*it->event_name || !it->event_id ||
            !*it->event_id || !it->payload)
            return CAPID_EINVAL;
        if (it->payload_len > CAPID_QUEUE_MAX_PAYLOAD || strlen(it->dest) > CAPID_QUEUE_MAX_KEY ||
            strlen(it->event_name) > CAPID_QUEUE_MAX_KEY ||
            strlen(it->event_id) > CAPID_QUEUE_MAX_KEY)
            return CAPID_ETOOBIG;
    }
    if (mark && (!mark->key || !*mark->key))
        return CAPID_EINVAL;
    return CAPID_OK;
}

static int meta_get(struct capid_queue *q, const char *key, int64_t *v)
{
    sqlite3_stmt *st = stmt(q, ST_META_GET);
    if (!st)
        return SQLITE_ERROR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int meta_set(struct capid_queue *q, const char *key, int64_t v)
{
    sqlite3_stmt *st = stmt(q, ST_META_SET);
    if (!st)
        return SQLITE_ERROR;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    return run(st);
}

/* Whether a dedup table holds any key (an empty one is not searched). */
static int seen_any(struct capid_queue *q, int table, bool *any)
{
    sqlite3_stmt *st = stmt(q, table ? ST_SEEN_ANY1 : ST_SEEN_ANY0);
    if (!st)
        return SQLITE_ERROR;
    int rc = sqlite3_step(st);
    *any = rc == SQLITE_ROW;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Records the key of `it` unless seen within the window: sets *dup. Looks in
 * the previous table first (read only), then upserts into the current one. */
static int seen_put(struct capid_queue *q, const struct capid_queue_item *it, int cur,
                    bool search_prev, int64_t now, bool *dup)
{
    /* The key: dest NUL event_name NUL event_id, one BLOB (one memcmp per
     * b-tree step instead of three text comparisons). An id derived from
     * the event's bytes is a random-looking hash: its key is dest NUL
     * event_name NUL NUL, the 8-byte big-endian id_time (sign bit flipped,
     * so that bytes sort as numbers), then the id. Keys then land at the
     * end of the tree, as time-ordered ids do, instead of on a random page
     * each: a 1M-row import went from 50k to 140k rows/s (each random key
     * rewrote one 4 KB page per commit). No caller's id is empty or holds a
     * NUL, so the two forms never meet. */
    size_t a = strlen(it->dest), b = strlen(it->event_name), c = strlen(it->event_id);
    size_t t = it->has_id_time ? 9 : 0;
    size_t n = a + b + c + 2 + t;
    if (n > q->key_cap)
        q->key = xrealloc(q->key, q->key_cap = n);
    memcpy(q->key, it->dest, a + 1);
    memcpy(q->key + a + 1, it->event_name, b + 1);
    if (t) {
        unsigned char *k = (unsigned char *)q->key + a + b + 2;
        uint64_t v = (uint64_t)it->id_time ^ (UINT64_C(1) << 63);
        k[0] = 0;
        for (int i = 0; i < 8; i++)
            k[1 + i] = (unsigned char)(v >> (56 - 8 * i));
    }
    memcpy(q->key + a + b + 2 + t, it->event_id, c);
    *dup = false;
    int rc = SQLITE_OK;
    if (search_prev) {
        sqlite3_stmt *get = stmt(q, cur ? ST_SEEN_GET0 : ST_SEEN_GET1);
        if (!get)
            return SQLITE_ERROR;
        sqlite3_bind_blob(get, 1, q->key, (int)n, SQLITE_STATIC);
        rc = sqlite3_step(get);
        if (rc == SQLITE_ROW)
            *dup = sqlite3_column_int64(get, 0) > now - q->dedup_window_s;
        sqlite3_reset(get);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return rc;
        if (*dup)
            return SQLITE_OK;
    }
    sqlite3_stmt *put = stmt(q, cur ? ST_SEEN_PUT1 : ST_SEEN_PUT0);
    if (!put)
        return SQLITE_ERROR;
    sqlite3_bind_blob(put, 1, q->key, (int)n, SQLITE_STATIC);
    sqlite3_bind_int64(put, 2, now);
    sqlite3_bind_int64(put, 3, q->dedup_window_s);
    if ((rc = run(put)) != SQLITE_OK)
        return rc;
    *dup = sqlite3_changes(q->db) == 0;
    return SQLITE_OK;
}

/* Binds the event columns of one item to st from parameter *p on. */
static void bind_event(sqlite3_stmt *st, int *p, const struct capid_queue_item *it, int64_t now)
{
    sqlite3_bind_text(st, (*p)++, it->dest, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, (*p)++, it->event_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, (*p)++, it->event_id, -1, SQLITE_STATIC);
    bind_str(st, (*p)++, it->action_source);
    sqlite3_bind_int64(st, (*p)++, it->event_time);
    for (int k = 0; k < 3; k++) /* enqueued_at, next_attempt_at, changed_at */
        sqlite3_bind_int64(st, (*p)++, now);
}

/* Inserts the events and payloads of items that are new (result CAPID_OK),
 * MULTI rows per statement while there are enough. Ids are consecutive
 * within one INSERT: the write lock is held and rowids grow by one. */
static int insert_new(struct capid_queue *q, struct capid_queue_item *items, size_t n, int64_t now)
{
    sqlite3_stmt *ins1 = stmt(q, ST_INSERT_MULTI), *pay1 = stmt(q, ST_PAYLOAD_INSERT_MULTI);
    sqlite3_stmt *ins = stmt(q, ST_INSERT), *pins = stmt(q, ST_PAYLOAD_INSERT);
    if (!ins1 || !pay1 || !ins || !pins)
        return SQLITE_ERROR;
    struct capid_queue_item *pick[MULTI];
    size_t i = 0;
    int rc = SQLITE_OK;
    while (rc == SQLITE_OK) {
        size_t k = 0;
        while (i < n && k < MULTI) {
            if (items[i].result == CAPID_OK)
                pick[k++] = &items[i];
            i++;
        }
        if (k == 0)
            break;
        if (k == MULTI) {
            int p = 1;
            for (size_t j = 0; j < k; j++)
                bind_event(ins1, &p, pick[j], now);
            if ((rc = run(ins1)) != SQLITE_OK)
                break;
            int64_t first = sqlite3_last_insert_rowid(q->db) - MULTI + 1;
            p = 1;
            for (size_t j = 0; j < k; j++) {
                sqlite3_bind_int64(pay1, p++, first + (int64_t)j);
                sqlite3_bind_text(pay1, p++, pick[j]->payload, (int)pick[j]->payload_len,
                                  SQLITE_STATIC);
            }
            rc = run(pay1);
            continue;
        }
        for (size_t j = 0; j < k && rc == SQLITE_OK; j++) {
            int p = 1;
            bind_event(ins, &p, pick[j], now);
            if ((rc = run(ins)) != SQLITE_OK)
                break;
            sqlite3_bind_int64(pins, 1, sqlite3_last_insert_rowid(q->db));
            sqlite3_bind_text(pins, 2, pick[j]->payload, (int)pick[j]->payload_len, SQLITE_STATIC);
            rc = run(pins);
        }
    }
    return rc;
}

int capid_queue_enqueue(struct capid_queue *q, struct capid_queue_item *items, size_t n,
                        int64_t now, const struct capid_queue_mark *mark)
{
    int ret = check_items(items, n, mark);
    if (ret != CAPID_OK)
        return ret;
    sqlite3_stmt *mset = mark ? stmt(q, ST_MARK_SET) : NULL;
    if (mark && !mset)
        return CAPID_EIO;
    if ((ret = begin_write(q)) != CAPID_OK)
        return ret;
    int64_t cur = 0;
    bool prev_any = false;
    int rc = meta_get(q, "seen_cur", &cur);
    if (rc == SQLITE_OK && n > 0)
        rc = seen_any(q, !cur, &prev_any);
    /* Keys first (they decide what is new), then the new events. */
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        bool dup = false;
        rc = seen_put(q, &items[i], (int)cur, prev_any, now, &dup);
        items[i].result = dup ? CAPID_EDUP : CAPID_OK;
    }
    if (rc == SQLITE_OK)
        rc = insert_new(q, items, n, now);
    if (rc == SQLITE_OK && mark) {
        sqlite3_bind_text(mset, 1, mark->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(mset, 2, mark->position);
        sqlite3_bind_int(mset, 3, mark->done);
        sqlite3_bind_int64(mset, 4, now);
        rc = run(mset);
    }
    if (rc != SQLITE_OK)
        return abort_txn(q, map_rc(q, rc, "write to"));
    return commit(q);
}

int capid_queue_mark_get(struct capid_queue *q, const char *key, int64_t *position, bool *done)
{
    if (q->failed)
        return CAPID_EIO;
    sqlite3_stmt *st = stmt(q, ST_MARK_GET);
    if (!st || !key)
        return st ? CAPID_EINVAL : CAPID_EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), ret = CAPID_ENOTFOUND;
    if (rc == SQLITE_ROW) {
        if (position)
            *position = sqlite3_column_int64(st, 0);
        if (done)
            *done = sqlite3_column_int(st, 1) != 0;
        ret = CAPID_OK;
    } else if (rc != SQLITE_DONE) {
        ret = map_rc(q, rc, "read");
    }
    sqlite3_reset(st);
    return ret;
}

/* ---- lease and outcomes ---- */

int capid_queue_recover(struct capid_queue *q)
{
    int ret = begin_write(q);
    if (ret != CAPID_OK)
        return ret;
    int rc = exec_st(q, ST_RECOVER);
    if (rc != SQLITE_OK)
        return abort_txn(q, map_rc(q, rc, "recover"));
    int n = sqlite3_changes(q->db);
    ret = commit(q);
    if (ret == CAPID_OK && n > 0)
        capid_info("queue '%s': %d leased events returned to the queue", q->path, n);
    return ret == CAPID_OK ? n : ret;
}

int capid_queue_lease(struct capid_queue *q, const char *dest, size_t max, int64_t now,
                      struct capid_queue_batch *out)
{
    memset(out, 0, sizeof(*out));
    if (!dest || max > CAPID_QUEUE_MAX_LEASE)
        return CAPID_EINVAL;
    if (max == 0)
        return CAPID_OK;
    sqlite3_stmt *sel = stmt(q, ST_LEASE_SELECT), *upd = stmt(q, ST_LEASE_UPDATE);
    if (!sel || !upd)
        return CAPID_EIO;
    int ret = begin_write(q);
    if (ret != CAPID_OK)
        return ret;
    size_t cap = 0;
    sqlite3_bind_text(sel, 1, dest, -1, SQLITE_STATIC);
    sqlite3_bind_int64(sel, 2, now);
    sqlite3_bind_int64(sel, 3, (sqlite3_int64)max);
    int rc;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW)
        batch_add(out, &cap, sel);
    sqlite3_reset(sel);
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    if (rc == SQLITE_OK && out->n > 0) {
        sqlite3_bind_text(upd, 1, dest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(upd, 2, now);
        sqlite3_bind_int64(upd, 3, (sqlite3_int64)max);
        rc = run(upd);
        if (rc == SQLITE_OK && (size_t)sqlite3_changes(q->db) != out->n)
            rc = SQLITE_INTERNAL; /* cannot happen under the write lock */
    }
    for (size_t i = 0; i < out->n; i++) {
        out->rows[i].state = CAPID_QUEUE_LEASED;
        out->rows[i].changed_at = now;
    }
    ret = rc == SQLITE_OK ? commit(q) : abort_txn(q, map_rc(q, rc, "lease from"));
    if (ret != CAPID_OK)
        capid_queue_batch_release(out);
    return ret;
}

/* Parameters of an outcome statement besides the ids (see for_ids). */
struct outcome {
    const char *s1, *s2;
    int64_t i1, i2;
};

#define IDS_PER_STATEMENT 10000 /* ids per JSON array (bounds the string) */

/* Runs statement `id` on ids[0..n), in one transaction: the ids go as a JSON
 * array in ?1 (IDS_PER_STATEMENT at a time), the other parameters from o.
 * Delivered and purged rows also lose their payload. Returns rows changed or
 * an error. */
static int for_ids(struct capid_queue *q, enum stmt_id id, const int64_t *ids, size_t n,
                   const struct outcome *o)
{
    enum stmt_id pid = id == ST_DELIVERED     ? ST_PAYLOAD_DELETE_DELIVERED
                       : id == ST_DEAD_DELETE ? ST_PAYLOAD_DELETE_DEAD
                                              : ST__N;
    sqlite3_stmt *st = stmt(q, id), *pdel = pid != ST__N ? stmt(q, pid) : NULL;
    if (!st || (pid != ST__N && !pdel))
        return CAPID_EIO;
    if (n == 0)
        return 0;
    if (!ids)
        return CAPID_EINVAL;
    int ret = begin_write(q);
    if (ret != CAPID_OK)
        return ret;
    size_t cap = (n < IDS_PER_STATEMENT ? n : IDS_PER_STATEMENT) * 21 + 2;
    char *json = xmalloc(cap);
    int rc = SQLITE_OK, changed = 0;
    for (size_t off = 0; off < n && rc == SQLITE_OK; off += IDS_PER_STATEMENT) {
        size_t len = 0, end = n - off < IDS_PER_STATEMENT ? n : off + IDS_PER_STATEMENT;
        json[len++] = '[';
        for (size_t i = off; i < end; i++)
            len += (size_t)snprintf(json + len, cap - len, i > off ? ",%lld" : "%lld",
                                    (long long)ids[i]);
        json[len++] = ']';
        sqlite3_bind_text(st, 1, json, (int)len, SQLITE_STATIC);
        switch (id) {
        case ST_DELIVERED: /* ?2 fbtrace_id, ?3 now */
            bind_str(st, 2, o->s1);
            sqlite3_bind_int64(st, 3, o->i1);
            break;
        case ST_RETRY: /* ?2 next_attempt_at, ?3 last_error, ?4 now */
            sqlite3_bind_int64(st, 2, o->i2);
            bind_str(st, 3, o->s1);
            sqlite3_bind_int64(st, 4, o->i1);
            break;
        case ST_DEAD: /* ?2 reason, ?3 error, ?4 now, ?5 attempts added */
            bind_str(st, 2, o->s1);
            bind_str(st, 3, o->s2);
            sqlite3_bind_int64(st, 4, o->i1);
            sqlite3_bind_int64(st, 5, o->i2);
            break;
        case ST_REPLAY: /* ?2 now */
            sqlite3_bind_int64(st, 2, o->i1);
            break;
        default:
            break;
        }
        /* A purge deletes the payloads while the rows still say "dead". */
        if (id == ST_DEAD_DELETE) {
            sqlite3_bind_text(pdel, 1, json, (int)len, SQLITE_STATIC);
            rc = run(pdel);
        }
        if (rc == SQLITE_OK) {
            rc = run(st);
            changed += sqlite3_changes(q->db);
        }
        if (rc == SQLITE_OK && id == ST_DELIVERED) {
            sqlite3_bind_text(pdel, 1, json, (int)len, SQLITE_STATIC);
            rc = run(pdel);
        }
    }
    free(json);
    if (rc != SQLITE_OK)
        return abort_txn(q, map_rc(q, rc, "update"));
    ret = commit(q);
    return ret == CAPID_OK ? changed : ret;
}

int capid_queue_delivered(struct capid_queue *q, const int64_t *ids, size_t n,
                          const char *fbtrace_id, int64_t now)
{
    struct outcome o = {.s1 = fbtrace_id, .i1 = now};
    return for_ids(q, ST_DELIVERED, ids, n, &o);
}

int capid_queue_retry(struct capid_queue *q, const int64_t *ids, size_t n, int64_t next_attempt_at,
                      const char *last_error, int64_t now)
{
    struct outcome o = {.s1 = last_error, .i1 = now, .i2 = next_attempt_at};
    return for_ids(q, ST_RETRY, ids, n, &o);
}

int capid_queue_release(struct capid_queue *q, const int64_t *ids, size_t n)
{
    struct outcome o = {0};
    return for_ids(q, ST_RELEASE, ids, n, &o);
}

int capid_queue_dead(struct capid_queue *q, const int64_t *ids, size_t n, const char *reason,
                     const char *error_json, bool attempted, int64_t now)
{
    if (!reason || !*reason)
        return CAPID_EINVAL;
    struct outcome o = {.s1 = reason, .s2 = error_json, .i1 = now, .i2 = attempted ? 1 : 0};
    return for_ids(q, ST_DEAD, ids, n, &o);
}

/* ---- status ---- */

/* Steps a one-row SELECT, copying up to 3 integer columns (NULL -> 0);
 * returns CAPID_OK, CAPID_ENOTFOUND (no row or NULL first column) or an error. */
static int select_ints(struct capid_queue *q, enum stmt_id id, const char *dest, int64_t *v, int nv)
{
    sqlite3_stmt *st = stmt(q, id);
    if (!st)
        return CAPID_EIO;
    if (dest)
        sqlite3_bind_text(st, 1, dest, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), ret = CAPID_ENOTFOUND;
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) != SQLITE_NULL)
            ret = CAPID_OK;
        for (int i = 0; i < nv; i++)
            v[i] = sqlite3_column_int64(st, i);
    } else if (rc != SQLITE_DONE) {
        ret = map_rc(q, rc, "read");
    }
    sqlite3_reset(st);
    return ret;
}

int capid_queue_next_ready(struct capid_queue *q, const char *dest, int64_t *at)
{
    if (q->failed)
        return CAPID_EIO;
    if (!dest)
        return CAPID_EINVAL;
    return select_ints(q, ST_NEXT_READY, dest, at, 1);
}

static void keep_oldest(int64_t *have, int64_t v)
{
    if (v > 0 && (*have == 0 || v < *have))
        *have = v;
}

int capid_queue_counts(struct capid_queue *q, const char *dest, struct capid_queue_counts *out)
{
    memset(out, 0, sizeof(*out));
    if (q->failed)
        return CAPID_EIO;
    /* One read transaction: the four counts are one snapshot. */
    int ret = map_rc(q, exec_st(q, ST_BEGIN_READ), "read");
    if (ret != CAPID_OK)
        return ret;
    int64_t v[3];
    int base = dest ? ST_COUNT_QUEUED : ST_COUNT_QUEUED_ALL;
    for (int s = 0; s < 4 && ret >= 0; s++) {
        v[0] = v[1] = v[2] = 0;
        ret = select_ints(q, (enum stmt_id)(base + s), dest, v, s < 2 ? 3 : 1);
        if (ret == CAPID_ENOTFOUND)
            ret = CAPID_OK;
        int64_t *slot[] = {&out->queued, &out->leased, &out->delivered, &out->dead};
        *slot[s] = v[0];
        if (s < 2 && v[0] > 0) {
            keep_oldest(&out->oldest_event_time, v[1]);
            keep_oldest(&out->oldest_enqueued_at, v[2]);
        }
    }
    exec_st(q, ST_COMMIT);
    return ret;
}

/* Next destination name after `after` having a row in one state (loose index
 * scan: one index seek per destination). Returns a heap copy or NULL. */
static char *next_dest(struct capid_queue *q, enum stmt_id id, const char *after, int *err)
{
    sqlite3_stmt *st = stmt(q, id);
    if (!st) {
        *err = CAPID_EIO;
        return NULL;
    }
    sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
    char *s = NULL;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        s = xstrdup((const char *)sqlite3_column_text(st, 0));
    else if (rc != SQLITE_DONE)
        *err = map_rc(q, rc, "read");
    sqlite3_reset(st);
    return s;
}

int capid_queue_dests(struct capid_queue *q, char ***out)
{
    *out = NULL;
    if (q->failed)
        return CAPID_EIO;
    char **names = NULL, *cur = xstrdup("");
    size_t n = 0, bytes = 0;
    int err = CAPID_OK;
    for (;;) {
        char *best = NULL;
        for (int s = 0; s < 4 && err == CAPID_OK; s++) {
            char *c = next_dest(q, (enum stmt_id)(ST_DEST_QUEUED + s), cur, &err);
            if (c && (!best || strcmp(c, best) < 0)) {
                free(best);
                best = c;
            } else {
                free(c);
            }
        }
        if (!best || err != CAPID_OK) {
            free(best);
            break;
        }
        names = xrealloc(names, (n + 1) * sizeof(*names));
        names[n++] = best;
        bytes += strlen(best) + 1;
        free(cur);
        cur = xstrdup(best);
    }
    free(cur);
    if (err == CAPID_OK) {
        /* One block: the pointer array, then the strings. */
        char **block = xmalloc((n + 1) * sizeof(char *) + bytes);
        char *p = (char *)(block + n + 1);
        for (size_t i = 0; i < n; i++) {
            size_t len = strlen(names[i]) + 1;
            block[i] = memcpy(p, names[i], len);
            p += len;
        }
        block[n] = NULL;
        *out = block;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return err == CAPID_OK ? (n > INT_MAX ? INT_MAX : (int)n) : err;
}

int capid_queue_show(struct capid_queue *q, int64_t id, struct capid_queue_batch *out)
{
    memset(out, 0, sizeof(*out));
    if (q->failed)
        return CAPID_EIO;
    sqlite3_stmt *st = stmt(q, ST_SHOW);
    if (!st)
        return CAPID_EIO;
    sqlite3_bind_int64(st, 1, id);
    size_t cap = 0;
    int rc = sqlite3_step(st), ret = CAPID_ENOTFOUND;
    if (rc == SQLITE_ROW) {
        batch_add(out, &cap, st);
        ret = CAPID_OK;
    } else if (rc != SQLITE_DONE) {
        ret = map_rc(q, rc, "read");
    }
    sqlite3_reset(st);
    return ret;
}

/* ---- dead letters ---- */

static void bind_dead_filter(sqlite3_stmt *st, const struct capid_queue_dead_filter *f,
                             const char *dest)
{
    bind_str(st, 1, dest);
    bind_str(st, 2, f ? f->reason : NULL);
    sqlite3_bind_int64(st, 3, f ? f->before : 0);
}

int capid_queue_dead_list(struct capid_queue *q, const struct capid_queue_dead_filter *f,
                          int64_t after_id, size_t limit, struct capid_queue_batch *out)
{
    memset(out, 0, sizeof(*out));
    if (q->failed)
        return CAPID_EIO;
    if (limit == 0)
        return CAPID_OK;
    if (limit > CAPID_QUEUE_MAX_LEASE)
        return CAPID_EINVAL;
    size_t cap = 0;
    int ret = CAPID_OK;
    if (f && f->n_ids > 0) {
        /* Explicit ids: one lookup each, in the caller's order. */
        sqlite3_stmt *st = stmt(q, ST_DEAD_ONE);
        if (!st)
            return CAPID_EIO;
        for (size_t i = 0; i < f->n_ids && out->n < limit && ret == CAPID_OK; i++) {
            if (f->ids[i] <= after_id)
                continue;
            bind_dead_filter(st, f, f->dest);
            sqlite3_bind_int64(st, 4, f->ids[i]);
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                batch_add(out, &cap, st);
            else if (rc != SQLITE_DONE)
                ret = map_rc(q, rc, "read");
            sqlite3_reset(st);
        }
    } else {
        const char *dest = f ? f->dest : NULL;
        sqlite3_stmt *st = stmt(q, dest ? ST_DEAD_LIST : ST_DEAD_LIST_ALL);
        if (!st)
            return CAPID_EIO;
        bind_dead_filter(st, f, dest);
        sqlite3_bind_int64(st, 4, after_id);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)limit);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            batch_add(out, &cap, st);
        if (rc != SQLITE_DONE)
            ret = map_rc(q, rc, "read");
        sqlite3_reset(st);
    }
    if (ret != CAPID_OK)
        capid_queue_batch_release(out);
    return ret;
}

/* Replays (replay = true) or deletes the dead rows matching f, in
 * transactions of CAPID_QUEUE_HOUSEKEEP_BATCH rows, destination by
 * destination so that each selection is an index range. */
static int dead_apply(struct capid_queue *q, const struct capid_queue_dead_filter *f, bool replay,
                      int64_t now)
{
    if (q->failed)
        return CAPID_EIO;
    enum stmt_id act = replay ? ST_REPLAY : ST_DEAD_DELETE;
    struct outcome o = {.i1 = now};
    if (f && f->n_ids > 0) {
        /* Keep only the ids that match the other criteria, then act. */
        struct capid_queue_batch b;
        int64_t total = 0;
        for (size_t off = 0; off < f->n_ids; off += CAPID_QUEUE_HOUSEKEEP_BATCH) {
            struct capid_queue_dead_filter part = *f;
            part.ids = f->ids + off;
            part.n_ids = f->n_ids - off < CAPID_QUEUE_HOUSEKEEP_BATCH ? f->n_ids - off
                                                                      : CAPID_QUEUE_HOUSEKEEP_BATCH;
            int ret = capid_queue_dead_list(q, &part, INT64_MIN, part.n_ids, &b);
            if (ret != CAPID_OK)
                return ret;
            int64_t *ids = xmalloc(b.n * sizeof(*ids) + 1);
            for (size_t i = 0; i < b.n; i++)
                ids[i] = b.rows[i].id;
            ret = for_ids(q, act, ids, b.n, &o);
            free(ids);
            capid_queue_batch_release(&b);
            if (ret < 0)
                return ret;
            total += ret;
        }
        return total > INT_MAX ? INT_MAX : (int)total;
    }
    sqlite3_stmt *sel = stmt(q, ST_DEAD_IDS);
    if (!sel)
        return CAPID_EIO;
    int64_t total = 0;
    int err = CAPID_OK;
    char *dest = f && f->dest ? xstrdup(f->dest) : next_dest(q, ST_DEST_DEAD, "", &err);
    int64_t ids[CAPID_QUEUE_HOUSEKEEP_BATCH];
    while (dest && err == CAPID_OK) {
        int64_t after = INT64_MIN;
        for (;;) {
            size_t n = 0;
            bind_dead_filter(sel, f, dest);
            sqlite3_bind_int64(sel, 4, after);
            sqlite3_bind_int64(sel, 5, CAPID_QUEUE_HOUSEKEEP_BATCH);
            int rc;
            while ((rc = sqlite3_step(sel)) == SQLITE_ROW)
                ids[n++] = sqlite3_column_int64(sel, 0);
            sqlite3_reset(sel);
            if (rc != SQLITE_DONE) {
                err = map_rc(q, rc, "read");
                break;
            }
            if (n == 0)
                break;
            int ret = for_ids(q, act, ids, n, &o);
            if (ret < 0) {
                err = ret;
                break;
            }
            total += ret;
            after = ids[n - 1];
        }
        char *next =
            err == CAPID_OK && !(f && f->dest) ? next_dest(q, ST_DEST_DEAD, dest, &err) : NULL;
        free(dest);
        dest = next;
    }
    free(dest);
    if (err != CAPID_OK)
        return err;
    return total > INT_MAX ? INT_MAX : (int)total;
}

int capid_queue_dead_replay(struct capid_queue *q, const struct capid_queue_dead_filter *f,
                            int64_t now)
{
    return dead_apply(q, f, true, now);
}

int capid_queue_dead_purge(struct capid_queue *q, const struct capid_queue_dead_filter *f)
{
    return dead_apply(q, f, false, 0);
}

/* ---- housekeeping ---- */

/* Deletes up to `limit` delivered rows older than cutoff, across
 * destinations, in one transaction. Returns rows deleted or an error. */
static int purge_delivered(struct capid_queue *q, int64_t cutoff, int limit)
{
    sqlite3_stmt *del = stmt(q, ST_HK_DELIVERED);
    if (!del)
        return CAPID_EIO;
    int ret = begin_write(q);
    if (ret != CAPID_OK)
        return ret;
    int done = 0, err = CAPID_OK;
    char *dest = next_dest(q, ST_DEST_DELIVERED, "", &err);
    while (dest && err == CAPID_OK && done < limit) {
        sqlite3_bind_text(del, 1, dest, -1, SQLITE_STATIC);
        sqlite3_bind_int64(del, 2, cutoff);
        sqlite3_bind_int(del, 3, limit - done);
        int rc = run(del);
        if (rc != SQLITE_OK) {
            err = map_rc(q, rc, "purge");
            break;
        }
        done += sqlite3_changes(q->db);
        char *next = done < limit ? next_dest(q, ST_DEST_DELIVERED, dest, &err) : NULL;
        free(dest);
        dest = next;
    }
    free(dest);
    if (err != CAPID_OK)
        return abort_txn(q, err);
    ret = commit(q);
    return ret == CAPID_OK ? done : ret;
}

/* Dedup keys: the previous table is emptied (key order, `limit` per
 * transaction) once the current one has taken keys for a whole window, so
 * every key left in it is older than the window; then the tables swap. Keys
 * thus live between one and two windows. Assumes callers' `now` roughly
 * follows the wall clock. Returns keys deleted or an error. */
static int purge_seen(struct capid_queue *q, int64_t now, int limit)
{
    int ret = begin_write(q);
    if (ret != CAPID_OK)
        return ret;
    int64_t cur = 0, since = 0;
    int done = 0;
    int rc = meta_get(q, "seen_cur", &cur);
    if (rc == SQLITE_OK)
        rc = meta_get(q, "seen_since", &since);
    if (rc == SQLITE_OK && since == 0) {
        rc = meta_set(q, "seen_since", now); /* the first window starts now */
    } else if (rc == SQLITE_OK && since <= now - q->dedup_window_s) {
        sqlite3_stmt *del = stmt(q, cur ? ST_SEEN_DEL0 : ST_SEEN_DEL1);
        if (!del) {
            rc = SQLITE_ERROR;
        } else {
            sqlite3_bind_int(del, 1, limit);
            rc = run(del);
            done = sqlite3_changes(q->db);
        }
        if (rc == SQLITE_OK && done < limit) {
            rc = meta_set(q, "seen_cur", !cur);
            if (rc == SQLITE_OK)
                rc = meta_set(q, "seen_since", now);
        }
    }
    if (rc != SQLITE_OK)
        return abort_txn(q, map_rc(q, rc, "purge"));
    ret = commit(q);
    return ret == CAPID_OK ? done : ret;
}

int capid_queue_housekeep(struct capid_queue *q, int64_t now)
{
    int total = 0;
    /* Delivered rows first (they hold most of the space), then dedup keys. */
    for (int phase = 0; phase < 2; phase++) {
        while (total < CAPID_QUEUE_HOUSEKEEP_MAX) {
            int limit = CAPID_QUEUE_HOUSEKEEP_MAX - total < CAPID_QUEUE_HOUSEKEEP_BATCH
                            ? CAPID_QUEUE_HOUSEKEEP_MAX - total
                            : CAPID_QUEUE_HOUSEKEEP_BATCH;
            int n = phase == 0 ? purge_delivered(q, now - q->keep_delivered_s, limit)
                               : purge_seen(q, now, limit);
            if (n < 0)
                return total > 0 && n == CAPID_EBUSY ? total : n;
            total += n;
            if (n < limit)
                break;
        }
    }
    return total;
}
