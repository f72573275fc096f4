/* bench-queue: throughput of the SQLite queue on a temp file (issue 4).
 *
 *   bench-queue [-n EVENTS] [-d DIR] [-p PAYLOAD_BYTES]
 *
 * Prints one line per figure: the floor (a bare one-table SQLite insert of
 * the same payloads, to read the rest against on a shared machine); enqueue
 * events/s at group sizes 100 and 1000 with synchronous FULL and NORMAL, for
 * time-ordered and random (UUID) event ids; lease + delivered events/s
 * (batches of 1000); housekeeping rows/s; peak RSS. CPU time per event is
 * printed too: it varies less than wall time when other jobs run. Targets
 * (issue 4): >= 100,000 events/s enqueued with FULL in groups, >= 50,000
 * events/s leased + delivered. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <sqlite3.h>

#include "queue/queue.h"
#include "util/clock.h"

static const char *dir_arg;
static char dir[4096];
static long n_events = 200000;
static size_t payload_bytes = 1200;

/* CPU time of this process (user + system), microseconds. */
static int64_t cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

static double last_cpu_per_event; /* CPU microseconds per event of the last run */

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench-queue: %s: %s\n", what, capid_strerror(rc));
    exit(1);
}

static struct capid_queue *open_queue(const char *name, bool normal, bool fresh)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (fresh) {
        const char *sfx[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            char p[4300];
            snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
            unlink(p);
        }
    }
    struct capid_queue *q;
    struct capid_queue_opts o = {.path = path, .sync_normal = normal};
    struct capid_perr err = {0};
    int rc = capid_queue_open(&q, &o, &err);
    if (rc != CAPID_OK) {
        fprintf(stderr, "bench-queue: %s\n", err.msg ? err.msg : capid_strerror(rc));
        exit(1);
    }
    return q;
}

/* A hashed CAPI event of about payload_bytes, as the mapper writes it: the
 * hex filler comes from a pool made once, so the loop measures the queue. */
static char hex_pool[65536 + 4096];

static void make_pool(void)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof(hex_pool); i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        hex_pool[i] = "0123456789abcdef"[x & 15];
    }
}

static void make_payload(char *buf, size_t cap, long i, int64_t now)
{
    int n =
        snprintf(buf, cap,
                 "{\"event_name\":\"Purchase\",\"event_time\":%" PRId64 ",\"event_id\":\"ev-%ld\","
                 "\"action_source\":\"website\",\"event_source_url\":\"https://shop.example/"
                 "checkout\",\"user_data\":{\"em\":[\"",
                 now, i);
    size_t fill = payload_bytes - 20 - (size_t)n;
    memcpy(buf + n, hex_pool + ((size_t)i * 977) % 65536, fill);
    n += (int)fill;
    snprintf(buf + n, cap - (size_t)n, "\"]},\"value\":1}");
}

/* Event ids in two styles: "time", growing like CA's web ids
 * ("202110130000000000"), which append at the end of the dedup index; and
 * "uuid", random as mobile SDKs make them, which land anywhere in it. */
static bool uuid_ids;

static void event_id(char out[40], long i)
{
    if (!uuid_ids) {
        snprintf(out, 40, "2026113011%08ld", i);
        return;
    }
    uint64_t a = (uint64_t)i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    a ^= a >> 31;
    a *= 0xBF58476D1CE4E5B9ull;
    a ^= a >> 29;
    snprintf(out, 40, "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-%04lx-%012" PRIx64,
             (uint64_t)(a >> 32), (uint64_t)((a >> 16) & 0xffff), (uint64_t)(a & 0xfff),
             (unsigned long)(i & 0xffff), (uint64_t)((a * 31 + (uint64_t)i) & 0xffffffffffffull));
}

/* Enqueues n_events in groups of `group`; returns events/s. */
static double bench_enqueue(struct capid_queue *q, size_t group, long base)
{
    struct capid_queue_item *items = calloc(group, sizeof(*items));
    char(*ids)[40] = calloc(group, 40);
    char *payloads = malloc(group * (payload_bytes + 64));
    int64_t now = capid_now_s();
    int64_t t0 = capid_mono_ms(), c0 = cpu_us();
    for (long done = 0; done < n_events;) {
        size_t k = 0;
        for (; k < group && done < n_events; k++, done++) {
            char *p = payloads + k * (payload_bytes + 64);
            event_id(ids[k], base + done);
            make_payload(p, payload_bytes + 64, base + done, now);
            items[k] = (struct capid_queue_item){.dest = "shop",
                                                 .event_name = "Purchase",
                                                 .event_id = ids[k],
                                                 .action_source = "website",
                                                 .event_time = now,
                                                 .payload = p,
                                                 .payload_len = strlen(p)};
        }
        int rc = capid_queue_enqueue(q, items, k, now, NULL);
        if (rc != CAPID_OK)
            die("enqueue", rc);
    }
    double s = (double)(capid_mono_ms() - t0) / 1000.0;
    last_cpu_per_event = (double)(cpu_us() - c0) / (double)n_events;
    free(items);
    free(ids);
    free(payloads);
    return (double)n_events / s;
}

/* The floor on this machine right now: the same payloads into a bare
 * one-table SQLite file (WAL, FULL, no index, no dedup), to read the other
 * figures against when the machine is shared. */
static double bench_floor(size_t group)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/floor.db", dir);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                     " CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, p TEXT)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO t (k, p) VALUES (?1, ?2)", -1, &st, NULL) != SQLITE_OK)
        die("floor", CAPID_EIO);
    char id[40], *payload = malloc(payload_bytes + 64);
    int64_t now = capid_now_s(), t0 = capid_mono_ms();
    for (long done = 0; done < n_events;) {
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        for (size_t k = 0; k < group && done < n_events; k++, done++) {
            event_id(id, done);
            make_payload(payload, payload_bytes + 64, done, now);
            sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, payload, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE)
                die("floor insert", CAPID_EIO);
            sqlite3_reset(st);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            die("floor commit", CAPID_EIO);
    }
    double s = (double)(capid_mono_ms() - t0) / 1000.0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    free(payload);
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[4300];
        snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
        unlink(p);
    }
    return (double)n_events / s;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "n:d:p:")) != -1) {
        switch (opt) {
        case 'n':
            n_events = atol(optarg);
            break;
        case 'd':
            dir_arg = optarg;
            break;
        case 'p':
            payload_bytes = (size_t)atol(optarg);
            break;
        default:
            fprintf(stderr, "usage: bench-queue [-n EVENTS] [-d DIR] [-p PAYLOAD_BYTES]\n");
            return 2;
        }
    }
    if (n_events <= 0 || payload_bytes < 200 || payload_bytes > 65536) {
        fprintf(stderr, "bench-queue: bad -n or -p\n");
        return 2;
    }
    make_pool();
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/bench-queue-XXXXXX", dir_arg ? dir_arg : tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("bench-queue: mkdtemp");
        return 1;
    }
    printf("bench-queue events=%ld payload_bytes=%zu dir=%s\n", n_events, payload_bytes, dir);

    const size_t groups[] = {100, 1000};
    for (int g = 0; g < 2; g++)
        printf("sqlite-floor sync=full group=%zu events_per_s=%.0f\n", groups[g],
               bench_floor(groups[g]));
    for (int u = 0; u < 2; u++) {
        uuid_ids = u;
        for (int normal = 0; normal < 2; normal++) {
            for (int g = 0; g < 2; g++) {
                struct capid_queue *q = open_queue("q.db", normal, true);
                double r = bench_enqueue(q, groups[g], 0);
                printf("enqueue ids=%s sync=%s group=%zu events_per_s=%.0f cpu_us_per_event=%.1f\n",
                       u ? "uuid" : "time", normal ? "normal" : "full", groups[g], r,
                       last_cpu_per_event);
                fflush(stdout);
                capid_queue_close(q);
            }
        }
    }
    uuid_ids = true;

    /* Delivery side on a FULL queue holding n_events: lease 1000, mark them
     * delivered, until empty (what one destination's loop does). */
    struct capid_queue *q = open_queue("q.db", false, true);
    bench_enqueue(q, 1000, 0);
    int64_t now = capid_now_s();
    int64_t t0 = capid_mono_ms(), c0 = cpu_us();
    long delivered = 0;
    int64_t *ids = malloc(1000 * sizeof(*ids));
    for (;;) {
        struct capid_queue_batch b;
        int rc = capid_queue_lease(q, "shop", 1000, now, &b);
        if (rc != CAPID_OK)
            die("lease", rc);
        if (b.n == 0)
            break;
        for (size_t i = 0; i < b.n; i++)
            ids[i] = b.rows[i].id;
        rc = capid_queue_delivered(q, ids, b.n, "AbCdEf123", now);
        if (rc < 0)
            die("delivered", rc);
        delivered += rc;
        capid_queue_batch_release(&b);
    }
    double s = (double)(capid_mono_ms() - t0) / 1000.0;
    printf("lease+delivered sync=full batch=1000 events_per_s=%.0f cpu_us_per_event=%.1f\n",
           (double)delivered / s, (double)(cpu_us() - c0) / (double)(delivered ? delivered : 1));

    /* Housekeeping: every delivered row and dedup key is past its time. */
    t0 = capid_mono_ms();
    long purged = 0;
    for (int n; (n = capid_queue_housekeep(q, now + 10 * 86400)) > 0;)
        purged += n;
    s = (double)(capid_mono_ms() - t0) / 1000.0;
    printf("housekeep rows=%ld rows_per_s=%.0f\n", purged, (double)purged / (s > 0 ? s : 1e-3));
    free(ids);
    capid_queue_close(q);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak_rss_kb=%ld\n", ru.ru_maxrss);

    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[4300];
        snprintf(p, sizeof(p), "%s/q.db%s", dir, sfx[i]);
        unlink(p);
    }
    rmdir(dir);
    return 0;
}
