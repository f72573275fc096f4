/* `capid map`: the command-line face of the mapping engine (issue 2).
 *   capid map --config FILE [--destination NAME] [--now EPOCH] [--explain] [FILE...]
 * Reads NDJSON from the files or stdin; for every input line and selected
 * destination writes one line (see docs/CLI.md for the exact contract). */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "capi/map.h"
#include "config/config.h"
#include "ingest/ndjson.h"
#include "util/clock.h"

struct map_run {
    const struct capid_config *cfg;
    const struct capid_dest **dests;
    size_t ndests;
    bool explain;
    int64_t now;      /* 0 = wall clock per line */
    const char *file; /* shown in outcomes when several files are read */
    struct capid_mapper m;
    struct capid_mapped out;
    struct capid_buf line; /* one line for stderr */
    struct capid_buf obuf; /* what goes to stdout, written in blocks (flush_out) */
};

#define OUT_BLOCK (1 << 20)

/* Writes what obuf holds to stdout (one fwrite per block instead of two
 * calls per event, measured). */
static void flush_out(struct map_run *r)
{
    if (r->obuf.len)
        fwrite(r->obuf.data, 1, r->obuf.len, stdout);
    capid_buf_reset(&r->obuf);
}

/* Starts an outcome line in b: {"line":N,["file":"F",]"destination":"D", */
static void outcome_begin(const struct map_run *r, struct capid_buf *b, size_t lineno,
                          const char *dest)
{
    capid_buf_printf(b, "{\"line\":%zu,", lineno);
    if (r->file) {
        capid_buf_puts(b, "\"file\":");
        capid_buf_json_str(b, r->file, strlen(r->file));
        capid_buf_putc(b, ',');
    }
    capid_buf_puts(b, "\"destination\":");
    capid_buf_json_str(b, dest, strlen(dest));
}

/* A skip line: to stdout with --explain, else to stderr (unbuffered, as
 * before: stdout and stderr are two streams). */
static void emit_skip(struct map_run *r, size_t lineno, const char *dest, const char *reason,
                      const char *detail)
{
    struct capid_buf *b = r->explain ? &r->obuf : &r->line;
    if (b == &r->line)
        capid_buf_reset(b);
    outcome_begin(r, b, lineno, dest);
    capid_buf_puts(b, ",\"skipped\":");
    capid_buf_json_str(b, reason, strlen(reason));
    capid_buf_puts(b, ",\"detail\":");
    capid_buf_json_str(b, detail, strlen(detail));
    capid_buf_puts(b, "}\n");
    if (b == &r->line)
        fwrite(b->data, 1, b->len, stderr);
    else if (b->len >= OUT_BLOCK)
        flush_out(r);
}

static void emit_event(struct map_run *r, size_t lineno, const char *dest)
{
    struct capid_buf *b = &r->obuf;
    if (r->explain) {
        outcome_begin(r, b, lineno, dest);
        capid_buf_puts(b, ",\"event\":");
    }
    capid_buf_append(b, r->out.json.data, r->out.json.len);
    capid_buf_puts(b, r->explain ? "}\n" : "\n");
    if (b->len >= OUT_BLOCK)
        flush_out(r);
}

static void map_line(struct map_run *r, size_t lineno, const char *s, size_t len)
{
    static const enum capid_reason by_status[] = {
        [CAPID_EV_TOO_LARGE] = CAPID_R_TOO_LARGE,
        [CAPID_EV_INVALID_JSON] = CAPID_R_INVALID_JSON,
        [CAPID_EV_INVALID_EVENT] = CAPID_R_INVALID_EVENT,
    };
    struct capid_limits lim = {r->cfg->server.max_event_bytes, r->cfg->server.max_depth};
    struct capid_perr err;
    capid_perr_clear(&err);
    struct capid_event ev;
    int64_t now = r->now ? r->now : capid_now_s();

    enum capid_event_status st = capid_event_parse(&ev, s, len, &lim, now, &err);
    if (st != CAPID_EV_OK) {
        for (size_t i = 0; i < r->ndests; i++)
            emit_skip(r, lineno, r->dests[i]->name, capid_reason_name(by_status[st]),
                      err.msg ? err.msg : "");
        return;
    }
    for (size_t i = 0; i < r->ndests; i++) {
        if (capid_map_event(&r->m, r->dests[i], &ev, now, &r->out) != CAPID_OK) {
            flush_out(r);
            fprintf(stderr, "capid map: out of memory\n");
            exit(1);
        }
        if (r->out.reason == CAPID_R_NONE)
            emit_event(r, lineno, r->dests[i]->name);
        else
            emit_skip(r, lineno, r->dests[i]->name, capid_reason_name(r->out.reason),
                      r->out.detail);
    }
    capid_event_release(&ev);
}

/* Reads fd to its end with the NDJSON splitter that enqueue and import use
 * (64 KiB blocks, lines handed out in place: BOM at the start dropped, CRLF,
 * blank lines counted but not mapped, a last line without LF; docs/CLI.md),
 * and maps each line. A line over server.max_event_bytes gets too_large from
 * the parser, with its size; one more than 1 MiB over it is not even held in
 * memory, and is skipped as too_large with the size of its line. Returns 0, or -1 after a read
 * error (its message in *msg; the lines before it are mapped). */
static int map_stream(struct map_run *r, int fd, char *msg, size_t msgsz)
{
    static bool stdin_eof; /* stdin can be named twice ("-"): it ends once */
    if (fd == STDIN_FILENO && stdin_eof)
        return 0;
    struct capid_ndjson *nd = capid_cli_event_lines(r->cfg, fd);
    int rc;
    for (;;) {
        struct capid_ndjson_line ln;
        struct capid_perr err;
        capid_perr_clear(&err);
        rc = capid_ndjson_next(nd, &ln, &err);
        if (rc == 1) {
            map_line(r, ln.line, ln.s, ln.len);
        } else if (rc == CAPID_ETOOBIG) {
            char detail[160];
            capid_cli_too_long(r->cfg, &ln, detail, sizeof(detail));
            for (size_t i = 0; i < r->ndests; i++)
                emit_skip(r, ln.line, r->dests[i]->name, "too_large", detail);
        } else {
            if (rc < 0)
                snprintf(msg, msgsz, "%s", err.msg ? err.msg : "read error");
            break;
        }
    }
    capid_ndjson_free(nd);
    if (fd == STDIN_FILENO && rc == 0)
        stdin_eof = true;
    return rc < 0 ? -1 : 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: capid map --config FILE [--destination NAME] [--now EPOCH_SECONDS] "
                    "[--explain] [FILE ...]\n");
    return 2;
}

int capid_cmd_map(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"destination", required_argument, NULL, 'd'},
        {"now", required_argument, NULL, 'n'},    {"explain", no_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *dest = NULL;
    struct map_run r = {0};
    int c, rc = 0;
    FILE **files = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            dest = optarg;
            break;
        case 'e':
            r.explain = true;
            break;
        case 'n': {
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (errno || *end || v <= 0) {
                fprintf(stderr, "capid map: --now '%s' is not a positive number of seconds\n",
                        optarg);
                return 2;
            }
            r.now = v;
            break;
        }
        case 'h':
            usage();
            return 0;
        default:
            return usage();
        }
    }
    struct capid_config *cfg = capid_cli_load_config("map", config);
    if (!cfg)
        return 2;
    r.cfg = cfg;
    r.dests = calloc(cfg->n_dests, sizeof(*r.dests));
    if (!r.dests)
        abort();
    r.ndests = capid_cli_select_dests("map", cfg, dest, r.dests);
    if (!r.ndests) {
        rc = 2;
        goto out;
    }
    /* Open every file first: an unreadable one is an error before any output. */
    int nfiles = argc - optind;
    files = calloc((size_t)(nfiles > 0 ? nfiles : 1), sizeof(*files));
    for (int i = 0; i < nfiles; i++) {
        const char *path = argv[optind + i];
        struct stat st;
        files[i] = strcmp(path, "-") ? fopen(path, "r") : stdin;
        if (files[i] && fstat(fileno(files[i]), &st) == 0 && S_ISDIR(st.st_mode))
            errno = EISDIR;
        else if (files[i])
            continue;
        fprintf(stderr, "capid map: cannot read '%s': %s\n", path, strerror(errno));
        rc = 2;
        goto out;
    }
    if (capid_mapper_init(&r.m) != CAPID_OK) {
        rc = 1;
        goto out;
    }
    capid_mapped_init(&r.out);
    capid_buf_init(&r.line, 0);
    capid_buf_init(&r.obuf, 0);
    /* r.obuf is the buffer: stdio's own would copy every block once more. */
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 0; i < (nfiles ? nfiles : 1); i++) {
        r.file = nfiles > 1 ? argv[optind + i] : NULL;
        char msg[600];
        if (map_stream(&r, fileno(nfiles ? files[i] : stdin), msg, sizeof(msg)) < 0) {
            fprintf(stderr, "capid map: read error on '%s': %s\n", nfiles ? argv[optind + i] : "-",
                    msg);
            rc = 2;
            break;
        }
    }
    flush_out(&r);
    fflush(stdout);
    capid_buf_release(&r.obuf);
    capid_buf_release(&r.line);
    capid_mapped_release(&r.out);
    capid_mapper_release(&r.m);
out:
    for (int i = 0; files && i < nfiles; i++)
        if (files[i] && files[i] != stdin)
            fclose(files[i]);
    free(files);
    free(r.dests);
    capid_config_free(cfg);
    return rc;
}
