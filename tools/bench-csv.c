/* bench-csv: throughput and memory of the import file layer (issue 6).
 *
 *   bench-csv [ROWS] [RUNS]      (defaults: 1000000 rows, 5 runs)
 *
 * Generates a deterministic CSV of ROWS rows in a temp file (conversions in
 * the unindexed item layout: 1-3 items per event, quoted fields, UTF-8), then
 * measures, each mode in a child process of its own so that its peak RSS is
 * its own:
 *   read       capid_csv_next only
 *   build      read + capid_rows_feed (the JSON text events capid import uses)
 *   cjson      read + a naive cJSON tree per event, printed (the alternative)
 *   parse      build + cJSON_Parse of every event (cost if a consumer wants a tree)
 *   ndjson     capid_ndjson_next over the events written as NDJSON
 * and prints the median of RUNS runs in rows/s (lines/s for ndjson), by wall
 * clock and by CPU time (user + system: steadier on a busy machine). */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ingest/csv.h"
#include "ingest/ndjson.h"
#include "ingest/rows.h"

static uint32_t rng_state = 42;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (rng_state >> 8) % n;
}

static const char *const firsts[] = {"Marie", "Jean",  "Zoë",   "José",
                                     "Anna",  "Lukas", "Chloé", "Noah"};
static const char *const lasts[] = {
    "Martin", "Müller", "O'Brien", "Dubois", "García", "Rossi", "\"\"\"The\"\" Rock\"", "Nguyen"};
static const char *const cities[] = {"Paris", "\"Saint-Denis, Réunion\"", "München", "Lyon",
                                     "Köln",  "\"Washington, D.C.\"",     "Lille",   "Nantes"};
static const char *const countries[] = {"FR", "DE", "US", "IT", "ES", "BE", "fr", "Germany"};
static const char *const consents[] = {"1|3", "1|2|3|4", "", "3", " 1 | 3 "};
static const char *const currencies[] = {"EUR", "USD", "GBP"};

#define HEADER                                                                                     \
    "id,value,currency,user.email,user.phone,user.firstname,user.lastname,user.city,"              \
    "user.zipcode,user.country,user.consent_categories,context.event_timestamp,"                   \
    "items.product.id,items.quantity,items.product.price\n"

static int generate(char *path, long rows)
{
    snprintf(path, 64, "%s/capid-bench-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    fputs(HEADER, f);
    long row = 0;
    for (unsigned ev = 0; row < rows; ev++) {
        uint32_t r = rnd(100);
        int items = r < 75 ? 1 : r < 92 ? 2 : 3;
        unsigned fi = rnd(8), la = rnd(8), ci = rnd(8), co = rnd(8), cs = rnd(5), cu = rnd(3);
        unsigned cents = 500 + rnd(50000), zip = 10000 + rnd(89999);
        for (int i = 0; i < items && row < rows; i++, row++)
            fprintf(f,
                    "T%08u,%u.%02u,%s,user%u@example.com,+33 6 %02u %02u %02u %02u,%s,%s,%s,%u,"
                    "%s,%s,%llu,SKU-%05u,%u,%u.%02u\n",
                    ev, cents / 100, cents % 100, currencies[cu], ev, rnd(100), rnd(100), rnd(100),
                    rnd(100), firsts[fi], lasts[la], cities[ci], zip, countries[co], consents[cs],
                    1700000000000ULL + ev * 1000ULL, rnd(100000), 1 + rnd(4), rnd(200), rnd(100));
    }
    if (fclose(f) != 0)
        return -1;
    return 0;
}

/* User + system CPU seconds of this process. */
static double cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct capid_perr *err)
{
    fprintf(stderr, "bench-csv: %s: %s\n", what, err && err->msg ? err->msg : "failed");
    exit(1);
}

/* --- the naive cJSON alternative (unindexed layout only) ------------------ */

struct col {
    char *seg[8];
    int nseg;
    int item; /* under items. */
    int list;
};

static cJSON *path_obj(cJSON *at, struct col *c, int from)
{
    for (int k = from; k < c->nseg - 1; k++) {
        cJSON *n = cJSON_GetObjectItemCaseSensitive(at, c->seg[k]);
        if (!n)
            n = cJSON_AddObjectToObject(at, c->seg[k]);
        at = n;
    }
    return at;
}

static void set_value(cJSON *obj, struct col *c, const struct capid_csv_field *f)
{
    if (!c->list) {
        cJSON_AddItemToObject(obj, c->seg[c->nseg - 1], cJSON_CreateString(f->s));
        return;
    }
    cJSON *arr = cJSON_CreateArray();
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s", f->s);
    for (char *save, *p = strtok_r(tmp, "|", &save); p; p = strtok_r(NULL, "|", &save)) {
        while (*p == ' ')
            p++;
        size_t n = strlen(p);
        while (n && p[n - 1] == ' ')
            p[--n] = '\0';
        if (n)
            cJSON_AddItemToArray(arr, cJSON_CreateString(p));
    }
    cJSON_AddItemToObject(obj, c->seg[c->nseg - 1], arr);
}

/* --- modes ------------------------------------------------------------- */

enum mode { M_READ, M_BUILD, M_CJSON, M_PARSE, M_NDJSON };

static long run_mode(enum mode m, const char *path, size_t *bytes_out)
{
    int fd = open(path, O_RDONLY);
    struct capid_perr err = {0};
    long n = 0;
    size_t bytes = 0;
    if (m == M_NDJSON) {
        struct capid_ndjson *nd;
        struct capid_ndjson_line ln;
        capid_ndjson_open_fd(&nd, fd, 0, &err);
        int rc;
        while ((rc = capid_ndjson_next(nd, &ln, &err)) != 0) {
            if (rc < 0)
                die("ndjson", &err);
            bytes += ln.len;
            n++;
        }
        capid_ndjson_free(nd);
        close(fd);
        *bytes_out = bytes;
        return n;
    }
    struct capid_csv *c;
    struct capid_csv_record rec;
    capid_csv_open_fd(&c, fd, 0, &err);
    if (capid_csv_next(c, &rec, &err) != 1)
        die("header", &err);
    struct capid_rows *r = NULL;
    struct capid_rows_event ev;
    struct col cols[32];
    size_t ncols = rec.nfields;
    if (m == M_BUILD || m == M_PARSE) {
        if (capid_rows_new(&r, &rec, true, &err) != CAPID_OK)
            die("header", &err);
    } else if (m == M_CJSON) {
        for (size_t i = 0; i < ncols; i++) {
            char *name = strdup(rec.fields[i].s);
            struct col *cl = &cols[i];
            cl->nseg = 0;
            for (char *save, *p = strtok_r(name, ".", &save); p; p = strtok_r(NULL, ".", &save))
                cl->seg[cl->nseg++] = p;
            cl->item = strcmp(cl->seg[0], "items") == 0;
            cl->list = strcmp(rec.fields[i].s, "user.consent_categories") == 0;
        }
    }
    cJSON *event = NULL, *items = NULL;
    char gid[64] = "";
    int rc;
    while ((rc = capid_csv_next(c, &rec, &err)) != 0) {
        if (rc < 0)
            die("read", &err);
        n++;
        if (m == M_READ) {
            bytes += rec.fields[0].len;
            continue;
        }
        if (m == M_BUILD || m == M_PARSE) {
            if (capid_rows_feed(r, &rec, &ev, &err) == 1) {
                bytes += ev.len;
                if (m == M_PARSE)
                    cJSON_Delete(cJSON_ParseWithLength(ev.json, ev.len));
            }
            continue;
        }
        /* M_CJSON: a new event when the id changes. */
        if (!event || strcmp(gid, rec.fields[0].s) != 0) {
            if (event) {
                char *s = cJSON_PrintUnformatted(event);
                bytes += strlen(s);
                free(s);
                cJSON_Delete(event);
            }
            snprintf(gid, sizeof(gid), "%s", rec.fields[0].s);
            event = cJSON_CreateObject();
            cJSON_AddStringToObject(event, "event_name", "purchase");
            cJSON_AddStringToObject(event, "type", "offline");
            for (size_t i = 0; i < ncols; i++)
                if (!cols[i].item && rec.fields[i].len)
                    set_value(path_obj(event, &cols[i], 0), &cols[i], &rec.fields[i]);
            items = cJSON_AddArrayToObject(event, "items");
        }
        cJSON *item = cJSON_CreateObject();
        for (size_t i = 0; i < ncols; i++)
            if (cols[i].item && rec.fields[i].len)
                set_value(path_obj(item, &cols[i], 1), &cols[i], &rec.fields[i]);
        cJSON_AddItemToArray(items, item);
    }
    if (r && capid_rows_flush(r, &ev) == 1)
        bytes += ev.len;
    if (event) {
        char *s = cJSON_PrintUnformatted(event);
        bytes += strlen(s);
        free(s);
        cJSON_Delete(event);
    }
    capid_rows_free(r);
    capid_csv_free(c);
    close(fd);
    *bytes_out = bytes;
    return n;
}

/* Writes the built events as NDJSON for the ndjson mode. */
static void write_ndjson(const char *csv, char *out)
{
    snprintf(out, 64, "%s/capid-bench-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    int ofd = mkstemp(out);
    FILE *f = fdopen(ofd, "w");
    int fd = open(csv, O_RDONLY);
    struct capid_csv *c;
    struct capid_csv_record rec;
    struct capid_perr err = {0};
    struct capid_rows *r;
    struct capid_rows_event ev;
    capid_csv_open_fd(&c, fd, 0, &err);
    capid_csv_next(c, &rec, &err);
    capid_rows_new(&r, &rec, true, &err);
    while (capid_csv_next(c, &rec, &err) == 1)
        if (capid_rows_feed(r, &rec, &ev, &err) == 1)
            fprintf(f, "%s\n", ev.json);
    if (capid_rows_flush(r, &ev) == 1)
        fprintf(f, "%s\n", ev.json);
    capid_rows_free(r);
    capid_csv_free(c);
    close(fd);
    fclose(f);
}

/* Peak RSS of this process in kB, from /proc (VmHWM); 0 if unknown. */
static long vm_hwm_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long rows = argc > 1 ? atol(argv[1]) : 1000000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (rows <= 0 || runs <= 0 || runs > 50) {
        fprintf(stderr, "usage: bench-csv [ROWS] [RUNS]\n");
        return 2;
    }
    char csv[64], nd[64];
    double t0 = now();
    if (generate(csv, rows) != 0) {
        perror("bench-csv: cannot write the temp file");
        return 1;
    }
    FILE *f = fopen(csv, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    printf("generated %ld rows, %.1f MB in %.2fs (%s)\n", rows, (double)size / 1e6, now() - t0,
           csv);
    write_ndjson(csv, nd);

    static const char *const names[] = {"read", "build", "cjson", "parse", "ndjson"};
    for (int m = M_READ; m <= M_NDJSON; m++) {
        double rate[50], cpu_rate[50];
        long n = 0;
        long rss_kb = 0;
        for (int i = 0; i < runs; i++) {
            int pipefd[2];
            if (pipe(pipefd) != 0) {
                perror("bench-csv: pipe");
                unlink(csv);
                unlink(nd);
                return 1;
            }
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                close(pipefd[0]);
                size_t bytes;
                double t = now(), ct = cpu_now();
                long got = run_mode((enum mode)m, m == M_NDJSON ? nd : csv, &bytes);
                double dt = now() - t, dct = cpu_now() - ct;
                double out[4] = {(double)got, (double)got / dt, (double)vm_hwm_kb(),
                                 (double)got / dct};
                if (write(pipefd[1], out, sizeof(out)) != sizeof(out))
                    _exit(1);
                _exit(0);
            }
            close(pipefd[1]);
            double in[4] = {0, 0, 0, 0};
            if (read(pipefd[0], in, sizeof(in)) != sizeof(in)) {
                fprintf(stderr, "bench-csv: mode %s failed\n", names[m]);
                unlink(csv);
                unlink(nd);
                return 1;
            }
            close(pipefd[0]);
            int status;
            struct rusage ru;
            wait4(pid, &status, 0, &ru);
            /* getrusage's ru_maxrss of the child, and its VmHWM as a check. */
            if (ru.ru_maxrss > rss_kb)
                rss_kb = ru.ru_maxrss;
            if ((long)in[2] > rss_kb)
                rss_kb = (long)in[2];
            n = (long)in[0];
            rate[i] = in[1];
            cpu_rate[i] = in[3];
        }
        qsort(rate, (size_t)runs, sizeof(rate[0]), cmp_double);
        qsort(cpu_rate, (size_t)runs, sizeof(cpu_rate[0]), cmp_double);
        printf("%-7s %8ld %s  median %9.0f /s wall (min %9.0f, max %9.0f), %9.0f /s cpu  "
               "peak RSS %4.1f MB\n",
               names[m], n, m == M_NDJSON ? "lines" : "rows ", rate[runs / 2], rate[0],
               rate[runs - 1], cpu_rate[runs / 2], (double)rss_kb / 1024.0);
    }
    unlink(csv);
    unlink(nd);
    return 0;
}
