/* bench-parse: event parsing throughput over every line of an NDJSON file.
 *   bench-parse FILE.ndjson [PASSES [MODE]]   (5 passes, median; MODE a-d: one mode only)
 * Modes: (a) cJSON_ParseWithLength + cJSON_Delete, (b) capid_json_prescan +
 * the same, (c) capid_event_parse + capid_event_release (json.c into the
 * per-event arena, plus event validation: duplicate keys, event_name,
 * timestamp), (d) capid_json_parse alone with malloc'd nodes + cJSON_Delete.
 * (a) and (b) run first, with cJSON's default allocator; (c) installs
 * event.c's hooks. Lines that a mode rejects are counted too (and reported).
 * Rates are per second of process CPU time: the bench machines are shared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "event/event.h"
#include "event/json.h"

struct line {
    const char *s;
    size_t len;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "bench-parse: out of memory\n");
        exit(1);
    }
    return q;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One pass of a mode over all lines; returns the number of rejected lines. */
static size_t run(int mode, const struct line *lines, size_t n)
{
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct capid_perr err = {0};
        struct capid_event ev;
        cJSON *root = NULL;
        switch (mode) {
        case 0:
        case 1:
            if (mode == 1 &&
                capid_json_prescan(lines[i].s, lines[i].len, &lim, &err) != CAPID_EV_OK) {
                bad++;
                break;
            }
            root = cJSON_ParseWithLength(lines[i].s, lines[i].len);
            bad += !root;
            cJSON_Delete(root);
            break;
        case 2:
            if (capid_event_parse(&ev, lines[i].s, lines[i].len, &lim, 1764000000, &err) ==
                CAPID_EV_OK)
                capid_event_release(&ev);
            else
                bad++;
            break;
        default:
            if (capid_json_parse(lines[i].s, lines[i].len, &lim, NULL, &root, &err) == CAPID_EV_OK)
                cJSON_Delete(root);
            else
                bad++;
            break;
        }
    }
    return bad;
}

int main(int argc, char **argv)
{
    static const char *names[] = {
        "(a) cJSON_ParseWithLength + cJSON_Delete",
        "(b) capid_json_prescan + cJSON",
        "(c) capid_event_parse + capid_event_release",
        "(d) capid_json_parse (malloc) + cJSON_Delete",
    };
    if (argc < 2) {
        fprintf(stderr, "usage: bench-parse FILE.ndjson [PASSES [a|b|c|d]]\n");
        return 2;
    }
    int passes = argc > 2 ? atoi(argv[2]) : 5;
    int only = argc > 3 ? argv[3][0] - 'a' : -1;
    if (passes < 1 || passes > 101)
        passes = 5;
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    size_t cap = 1 << 20, size = 0, r;
    char *data = xrealloc(NULL, cap);
    while ((r = fread(data + size, 1, cap - size, f)) > 0)
        if ((size += r) == cap)
            data = xrealloc(data, cap *= 2);
    fclose(f);

    size_t n = 0, ncap = 1024, bytes = 0;
    struct line *lines = xrealloc(NULL, ncap * sizeof(*lines));
    for (size_t at = 0; at < size;) {
        const char *nl = memchr(data + at, '\n', size - at);
        size_t len = nl ? (size_t)(nl - (data + at)) : size - at;
        if (len && data[at + len - 1] == '\r')
            len--;
        if (len) {
            if (n == ncap)
                lines = xrealloc(lines, (ncap *= 2) * sizeof(*lines));
            lines[n].s = data + at;
            lines[n++].len = len;
            bytes += len;
        }
        at += (nl ? (size_t)(nl - (data + at)) + 1 : size - at);
    }
    if (!n) {
        fprintf(stderr, "bench-parse: no lines in %s\n", argv[1]);
        return 1;
    }
    printf("%zu events, %.0f bytes/event, median of %d passes\n", n, (double)bytes / (double)n,
           passes);
    for (int mode = 0; mode < 4; mode++) {
        if (only >= 0 && mode != only)
            continue;
        double rates[101] = {0};
        size_t bad = 0;
        run(mode, lines, n < 1000 ? n : 1000); /* warm up */
        for (int p = 0; p < passes; p++) {
            double t0 = now_s();
            bad = run(mode, lines, n);
            rates[p] = (double)n / (now_s() - t0);
        }
        qsort(rates, (size_t)passes, sizeof(rates[0]), cmp_double);
        printf("%-48s %10.0f events/s  %7.1f MB/s", names[mode], rates[passes / 2],
               rates[passes / 2] * (double)bytes / (double)n / 1e6);
        if (bad)
            printf("  (%zu rejected)", bad);
        printf("\n");
    }
    free(lines);
    free(data);
    return 0;
}
