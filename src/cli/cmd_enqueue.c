/* `capid enqueue`: maps NDJSON events (the `capid map` path) and commits
 * them to the durable queue, printing a per-reason summary (issue 4 item 3).
 *   capid enqueue --config FILE [--now EPOCH] [--destination NAME]
 *                 [--group N] [--verbose] [FILE...]
 *
 * Pipeline: worker threads read chunks of lines (under a lock, so each
 * chunk is a run of consecutive lines) and map them; this thread commits
 * the chunks in input order, one transaction per chunk (group commit). A
 * chunk is committed only after every earlier chunk was, so on an error the
 * committed events are exactly the first ones of the input. */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capi/map.h"
#include "config/config.h"
#include "queue/queue.h"
#include "util/clock.h"
#include "util/log.h"

#define MAX_WORKERS   4
#define DEFAULT_GROUP 500
#define CHUNK_BYTES   (4u << 20) /* input bytes per chunk, besides the line count */

struct ev_ref {
    size_t dest;                         /* index in run->dests */
    size_t name, id, src, payload, plen; /* offsets into the chunk arena; src SIZE_MAX: none */
    int64_t event_time;
};

struct chunk {
    uint64_t seq;
    bool ready;
    size_t nlines;
    struct capid_buf in;    /* the lines, NUL-separated */
    struct capid_buf arena; /* strings and payloads of the mapped events */
    struct ev_ref *ev;
    size_t nev, capev;
    uint64_t skipped[CAPID_R__COUNT];
    struct capid_buf notes; /* --verbose lines, printed in order */
    struct chunk *next;
};

struct run {
    const struct capid_config *cfg;
    const struct capid_dest **dests;
    size_t ndests;
    int64_t now; /* 0: wall clock per line */
    bool verbose;
    size_t group;
    /* input, under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char **files;
    int nfiles, fi;
    FILE *in;
    size_t lineno;
    bool eof, abort;
    const char *read_error; /* a file that failed mid-way (its name) */
    int read_errno;
    uint64_t next_seq;
    /* chunks: free list and finished ones (both under lock) */
    struct chunk *free_list, *done;
    size_t nchunks, max_chunks;
    char *line;
    size_t linecap;
};

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

/* Fills c with the next lines of the input. Under r->lock. False at the end. */
static bool read_chunk(struct run *r, struct chunk *c)
{
    c->nlines = 0;
    capid_buf_reset(&c->in);
    while (c->nlines < r->group && c->in.len < CHUNK_BYTES) {
        if (!r->in) {
            if (r->fi >= r->nfiles)
                break;
            const char *path = r->files[r->fi];
            r->in = strcmp(path, "-") ? fopen(path, "r") : stdin;
            r->lineno = 0;
            if (!r->in) { /* checked before starting; vanished since */
                fprintf(stderr, "capid enqueue: cannot read '%s': %s\n", path, strerror(errno));
                r->fi++;
                continue;
            }
        }
        ssize_t n = getline(&r->line, &r->linecap, r->in);
        if (n < 0) {
            if (ferror(r->in) && !r->read_error) {
                r->read_error = r->files[r->fi];
                r->read_errno = errno;
            }
            if (r->in != stdin)
                fclose(r->in);
            r->in = NULL;
            r->fi++;
            continue;
        }
        r->lineno++;
        size_t len = (size_t)n;
        while (len && (r->line[len - 1] == '\n' || r->line[len - 1] == '\r'))
            len--;
        const char *s = r->line;
        if (r->lineno == 1 && len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) { /* BOM */
            s += 3;
            len -= 3;
        }
        if (blank(s, len))
            continue;
        /* record: line number (8 bytes), length (8 bytes), bytes, NUL */
        uint64_t hdr[2] = {r->lineno, len};
        if (capid_buf_append(&c->in, hdr, sizeof(hdr)) || capid_buf_append(&c->in, s, len) ||
            capid_buf_putc(&c->in, '\0'))
            abort();
        c->nlines++;
    }
    return c->nlines > 0;
}

static size_t arena_str(struct chunk *c, const char *s, size_t n)
{
    size_t off = c->arena.len;
    if (capid_buf_append(&c->arena, s, n) || capid_buf_putc(&c->arena, '\0'))
        abort();
    return off;
}

static void note(struct run *r, struct chunk *c, uint64_t lineno, const char *dest,
                 const char *reason, const char *detail)
{
    if (!r->verbose)
        return;
    struct capid_buf *b = &c->notes;
    capid_buf_printf(b, "{\"line\":%llu,\"destination\":", (unsigned long long)lineno);
    capid_buf_json_str(b, dest, strlen(dest));
    capid_buf_puts(b, ",\"skipped\":");
    capid_buf_json_str(b, reason, strlen(reason));
    capid_buf_puts(b, ",\"detail\":");
    capid_buf_json_str(b, detail, strlen(detail));
    capid_buf_puts(b, "}\n");
}

/* Maps every line of c (a worker, with its own mapper). */
static void map_chunk(struct run *r, struct chunk *c, struct capid_mapper *m,
                      struct capid_mapped *out)
{
    static const enum capid_reason by_status[] = {
        [CAPID_EV_TOO_LARGE] = CAPID_R_TOO_LARGE,
        [CAPID_EV_INVALID_JSON] = CAPID_R_INVALID_JSON,
        [CAPID_EV_INVALID_EVENT] = CAPID_R_INVALID_EVENT,
    };
    struct capid_limits lim = {r->cfg->server.max_event_bytes, r->cfg->server.max_depth};
    capid_buf_reset(&c->arena);
    capid_buf_reset(&c->notes);
    c->nev = 0;
    memset(c->skipped, 0, sizeof(c->skipped));
    const char *p = c->in.data;
    for (size_t k = 0; k < c->nlines; k++) {
        uint64_t hdr[2];
        memcpy(hdr, p, sizeof(hdr));
        const char *s = p + sizeof(hdr);
        size_t len = (size_t)hdr[1];
        p = s + len + 1;
        struct capid_perr err = {0};
        struct capid_event ev;
        int64_t now = r->now ? r->now : capid_now_s();
        enum capid_event_status st = capid_event_parse(&ev, s, len, &lim, now, &err);
        if (st != CAPID_EV_OK) {
            for (size_t i = 0; i < r->ndests; i++) {
                c->skipped[by_status[st]]++;
                note(r, c, hdr[0], r->dests[i]->name, capid_reason_name(by_status[st]),
                     err.msg ? err.msg : "");
            }
            continue;
        }
        for (size_t i = 0; i < r->ndests; i++) {
            if (capid_map_event(m, r->dests[i], &ev, now, out) != CAPID_OK)
                abort(); /* out of memory */
            if (out->reason != CAPID_R_NONE) {
                c->skipped[out->reason]++;
                note(r, c, hdr[0], r->dests[i]->name, capid_reason_name(out->reason), out->detail);
                continue;
            }
            if (c->nev == c->capev) {
                c->capev = c->capev ? c->capev * 2 : 256;
                c->ev = realloc(c->ev, c->capev * sizeof(*c->ev));
                if (!c->ev)
                    abort();
            }
            struct ev_ref *e = &c->ev[c->nev++];
            e->dest = i;
            e->name = arena_str(c, out->event_name, strlen(out->event_name));
            e->id = arena_str(c, out->event_id, strlen(out->event_id));
            e->src = out->action_source
                         ? arena_str(c, out->action_source, strlen(out->action_source))
                         : SIZE_MAX;
            e->payload = arena_str(c, out->json.data, out->json.len);
            e->plen = out->json.len;
            e->event_time = out->event_time;
        }
        capid_event_release(&ev);
    }
}

static void *worker(void *arg)
{
    struct run *r = arg;
    struct capid_mapper m;
    struct capid_mapped out;
    if (capid_mapper_init(&m) != CAPID_OK)
        abort();
    capid_mapped_init(&out);
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (!r->free_list && !r->eof && !r->abort)
            pthread_cond_wait(&r->cond, &r->lock);
        if (r->eof || r->abort)
            break;
        struct chunk *c = r->free_list;
        r->free_list = c->next;
        if (!read_chunk(r, c)) {
            r->eof = true;
            c->next = r->free_list;
            r->free_list = c;
            pthread_cond_broadcast(&r->cond);
            break;
        }
        c->seq = r->next_seq++;
        c->ready = false;
        pthread_mutex_unlock(&r->lock);
        map_chunk(r, c, &m, &out);
        pthread_mutex_lock(&r->lock);
        c->ready = true;
        c->next = r->done;
        r->done = c;
        pthread_cond_broadcast(&r->cond);
    }
    pthread_mutex_unlock(&r->lock);
    capid_mapped_release(&out);
    capid_mapper_release(&m);
    return NULL;
}

struct totals {
    uint64_t enqueued, skipped[CAPID_R__COUNT];
    uint64_t *per_dest;
};

/* Commits one mapped chunk in one transaction. */
static int commit_chunk(struct run *r, struct capid_queue *q, struct chunk *c, struct totals *t,
                        struct capid_queue_item **items, size_t *cap)
{
    if (c->notes.len)
        fwrite(c->notes.data, 1, c->notes.len, stderr);
    for (int i = 0; i < CAPID_R__COUNT; i++)
        t->skipped[i] += c->skipped[i];
    if (!c->nev)
        return CAPID_OK;
    if (*cap < c->nev) {
        *cap = c->nev * 2;
        *items = realloc(*items, *cap * sizeof(**items));
        if (!*items)
            abort();
    }
    const char *a = c->arena.data;
    for (size_t i = 0; i < c->nev; i++) {
        const struct ev_ref *e = &c->ev[i];
        (*items)[i] = (struct capid_queue_item){
            .dest = r->dests[e->dest]->name,
            .event_name = a + e->name,
            .event_id = a + e->id,
            .action_source = e->src == SIZE_MAX ? NULL : a + e->src,
            .event_time = e->event_time,
            .payload = a + e->payload,
            .payload_len = e->plen,
        };
    }
    int64_t now = r->now ? r->now : capid_now_s();
    int rc = capid_queue_enqueue(q, *items, c->nev, now, NULL);
    for (int tries = 0; rc == CAPID_EBUSY && tries < 5; tries++)
        rc = capid_queue_enqueue(q, *items, c->nev, now, NULL);
    if (rc != CAPID_OK)
        return rc;
    for (size_t i = 0; i < c->nev; i++) {
        if ((*items)[i].result == CAPID_EDUP) {
            t->skipped[CAPID_R_DUPLICATE]++;
        } else {
            t->enqueued++;
            t->per_dest[c->ev[i].dest]++;
        }
    }
    return CAPID_OK;
}

static void print_summary(struct run *r, const struct totals *t, uint64_t lines, int64_t ms,
                          const char *error)
{
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_printf(&b, "{\"lines\":%llu,\"enqueued\":%llu,\"skipped\":{",
                     (unsigned long long)lines, (unsigned long long)t->enqueued);
    bool first = true;
    for (int i = 1; i < CAPID_R__COUNT; i++) {
        if (!t->skipped[i])
            continue;
        capid_buf_printf(&b, "%s\"%s\":%llu", first ? "" : ",",
                         capid_reason_name((enum capid_reason)i),
                         (unsigned long long)t->skipped[i]);
        first = false;
    }
    capid_buf_puts(&b, "},\"destinations\":{");
    for (size_t i = 0; i < r->ndests; i++) {
        capid_buf_puts(&b, i ? "," : "");
        capid_buf_json_str(&b, r->dests[i]->name, strlen(r->dests[i]->name));
        capid_buf_printf(&b, ":%llu", (unsigned long long)t->per_dest[i]);
    }
    capid_buf_printf(&b, "},\"elapsed_ms\":%lld", (long long)ms);
    if (error) {
        capid_buf_puts(&b, ",\"error\":");
        capid_buf_json_str(&b, error, strlen(error));
    }
    capid_buf_puts(&b, "}\n");
    fwrite(b.data, 1, b.len, stdout);
    fflush(stdout);
    capid_buf_release(&b);
}

static int usage(void)
{
    fprintf(stderr, "usage: capid enqueue --config FILE [--now EPOCH_SECONDS] [--destination NAME] "
                    "[--group N] [--verbose] [FILE ...]\n");
    return 2;
}

int capid_cmd_enqueue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"destination", required_argument, NULL, 'd'},
        {"now", required_argument, NULL, 'n'},
        {"group", required_argument, NULL, 'g'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *dest = NULL;
    struct run r = {.group = DEFAULT_GROUP};
    int c, rc = 0;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            dest = optarg;
            break;
        case 'v':
            r.verbose = true;
            break;
        case 'n':
            errno = 0;
            r.now = strtoll(optarg, &end, 10);
            if (errno || *end || r.now <= 0) {
                fprintf(stderr, "capid enqueue: --now '%s' is not a positive number of seconds\n",
                        optarg);
                return 2;
            }
            break;
        case 'g':
            errno = 0;
            r.group = (size_t)strtoull(optarg, &end, 10);
            if (errno || *end || r.group < 1 || r.group > CAPID_QUEUE_MAX_LEASE) {
                fprintf(stderr, "capid enqueue: --group takes 1..%d events\n",
                        CAPID_QUEUE_MAX_LEASE);
                return 2;
            }
            break;
        case 'h':
            usage();
            return 0;
        default:
            return usage();
        }
    }
    struct capid_config *cfg = capid_cli_load_config("enqueue", config);
    if (!cfg)
        return 2;
    r.cfg = cfg;
    struct capid_queue *q = NULL;
    struct totals t = {0};
    struct capid_queue_item *items = NULL;
    size_t items_cap = 0;
    pthread_t th[MAX_WORKERS];
    int nth = 0;
    static char stdin_name[] = "-";
    char *stdin_list[1] = {stdin_name};
    r.dests = calloc(cfg->n_dests + 1, sizeof(*r.dests));
    t.per_dest = calloc(cfg->n_dests + 1, sizeof(*t.per_dest));
    if (!r.dests || !t.per_dest)
        abort();
    for (size_t i = 0; i < cfg->n_dests; i++)
        if (!dest || !strcmp(cfg->dests[i].name, dest))
            r.dests[r.ndests++] = &cfg->dests[i];
    if (!r.ndests) {
        fprintf(stderr, "capid enqueue: no destination named '%s' in %s\n", dest, config);
        rc = 2;
        goto out;
    }
    r.files = optind < argc ? argv + optind : stdin_list;
    r.nfiles = optind < argc ? argc - optind : 1;
    for (int i = 0; i < r.nfiles; i++) {
        struct stat st;
        if (!strcmp(r.files[i], "-"))
            continue;
        if (access(r.files[i], R_OK) == 0 && stat(r.files[i], &st) == 0 && S_ISDIR(st.st_mode))
            errno = EISDIR;
        else if (access(r.files[i], R_OK) == 0)
            continue;
        fprintf(stderr, "capid enqueue: cannot read '%s': %s\n", r.files[i], strerror(errno));
        rc = 2;
        goto out;
    }
    struct capid_perr err = {0};
    struct capid_queue_opts qo = {.path = cfg->queue.path,
                                  .sync_normal = cfg->queue.synchronous == CAPID_SYNC_NORMAL,
                                  .keep_delivered_s = cfg->queue.keep_delivered_s};
    if (capid_queue_open(&q, &qo, &err) != CAPID_OK) {
        fprintf(stderr, "capid enqueue: %s\n", err.msg ? err.msg : "cannot open the queue");
        rc = 1;
        goto out;
    }
    /* Workers: one per core but one (this thread commits), at least one. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    nth = cpus <= 2 ? 1 : (int)(cpus - 1 > MAX_WORKERS ? MAX_WORKERS : cpus - 1);
    r.max_chunks = (size_t)nth + 2;
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    for (size_t i = 0; i < r.max_chunks; i++) {
        struct chunk *k = calloc(1, sizeof(*k));
        if (!k)
            abort();
        capid_buf_init(&k->in, 0);
        capid_buf_init(&k->arena, 0);
        capid_buf_init(&k->notes, 0);
        k->next = r.free_list;
        r.free_list = k;
    }
    int64_t t0 = capid_mono_ms();
    for (int i = 0; i < nth; i++)
        if (pthread_create(&th[i], NULL, worker, &r) == 0)
            nth = i + 1;
    uint64_t want = 0, lines = 0;
    const char *error = NULL;
    pthread_mutex_lock(&r.lock);
    for (;;) {
        struct chunk **pp = &r.done, *k = NULL;
        for (; *pp; pp = &(*pp)->next)
            if ((*pp)->seq == want) {
                k = *pp;
                *pp = k->next;
                break;
            }
        if (!k) {
            if (r.eof && want == r.next_seq)
                break;
            pthread_cond_wait(&r.cond, &r.lock);
            continue;
        }
        pthread_mutex_unlock(&r.lock);
        int qrc = error ? CAPID_OK : commit_chunk(&r, q, k, &t, &items, &items_cap);
        if (qrc != CAPID_OK) {
            error = capid_strerror(qrc);
            fprintf(stderr, "capid enqueue: cannot commit to queue '%s': %s\n", cfg->queue.path,
                    error);
            rc = 1;
        }
        lines += k->nlines;
        want++;
        pthread_mutex_lock(&r.lock);
        if (error)
            r.abort = true;
        k->next = r.free_list;
        r.free_list = k;
        pthread_cond_broadcast(&r.cond);
        if (error && want == r.next_seq)
            break;
    }
    r.abort = true;
    pthread_cond_broadcast(&r.cond);
    pthread_mutex_unlock(&r.lock);
    for (int i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    char rerr[512];
    if (!error && r.read_error) {
        /* what was read before is committed; the rest of that file is not */
        snprintf(rerr, sizeof(rerr), "cannot read '%s': %s", r.read_error, strerror(r.read_errno));
        fprintf(stderr, "capid enqueue: %s\n", rerr);
        error = rerr;
        rc = 1;
    }
    print_summary(&r, &t, lines, capid_mono_ms() - t0, error);
    while (r.done) {
        struct chunk *k = r.done;
        r.done = k->next;
        k->next = r.free_list;
        r.free_list = k;
    }
    while (r.free_list) {
        struct chunk *k = r.free_list;
        r.free_list = k->next;
        capid_buf_release(&k->in);
        capid_buf_release(&k->arena);
        capid_buf_release(&k->notes);
        free(k->ev);
        free(k);
    }
    if (r.in && r.in != stdin)
        fclose(r.in);
    free(r.line);
    pthread_mutex_destroy(&r.lock);
    pthread_cond_destroy(&r.cond);
out:
    free(items);
    capid_queue_close(q);
    free(r.dests);
    free(t.per_dest);
    capid_config_free(cfg);
    return rc;
}
