/* `capid import`: offline conversions from CSV or NDJSON files into the
 * queue (issue 6; docs/IMPORT.md is the user's guide).
 *   capid import --config FILE [--destination NAME] [--format csv|ndjson]
 *                [--type offline|online] [--dry-run] [--report FILE] [--force]
 *                [--strict] [--now EPOCH] [--group N] FILE...
 *
 * Per file: hash it (the import's identity), look up its mark, resume where
 * the last run committed (or refuse a file imported to its end, unless
 * --force), then stream it through the map-and-commit pipeline with the
 * resume position committed in every transaction (cli/pipeline.h). --strict
 * first runs the whole set as a dry run and commits only if no row is bad.
 *
 * Exit status: 0 imported (skipped events and, without --strict, invalid
 * rows are reported, not errors); 1 runtime failure (queue, I/O, a file that
 * changed while read, interrupted); 2 usage, configuration, unreadable or
 * malformed file, a file already imported, --strict with invalid rows. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/pipeline.h"
#include "config/config.h"
#include "ingest/import.h"
#include "queue/queue.h"
#include "util/buf.h"
#include "util/clock.h"

#define BUSY_RETRIES 5
/* Events per transaction. With synchronous=FULL each commit is an fsync,
 * and with random (content-hash) event ids each one rewrites the dedup
 * b-tree pages it touches: measured on 1M rows (bench/import.py), 5000 ran
 * 1.5-2x faster than 1000 at about 47 MB peak RSS; 10000 was no faster and
 * passed 64 MB. */
#define DEFAULT_GROUP 5000

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

struct opts {
    const char *config, *dest, *report;
    int format; /* -1: from the extension */
    bool offline, dry_run, force, strict;
    int64_t now;
    size_t group;
};

/* One file being run through the pipeline. */
struct file_run {
    struct capid_import_report *rep;
    struct capid_import_file f;
    struct capid_import_src *src;
    int fatal_rc;
    char fatal[CAPID_IMPORT_MSG_MAX];
};

static int read_fn(void *ctx, struct capid_pipe_chunk *c)
{
    struct file_run *fr = ctx;
    while (!capid_pipe_chunk_full(c)) {
        struct capid_import_input in;
        struct capid_perr err;
        capid_perr_clear(&err);
        int rc = capid_import_src_next(fr->src, &in, &err);
        if (rc == 0)
            return 0;
        if (in.json)
            capid_pipe_add_event(c, in.json, in.len, in.line, in.rows);
        else
            capid_pipe_add_bad(c, in.line, in.rows, in.msg);
        if (in.resume >= 0)
            capid_pipe_set_position(c, in.resume);
        if (rc < 0) {
            fr->fatal_rc = rc;
            snprintf(fr->fatal, sizeof(fr->fatal), "%s", err.msg ? err.msg : capid_strerror(rc));
            return rc;
        }
    }
    return 1;
}

static void outcome_fn(void *ctx, const struct capid_pipe_outcome *o)
{
    struct file_run *fr = ctx;
    struct capid_import_file *f = &fr->f;
    if (o->dest == SIZE_MAX) {
        capid_import_file_invalid(fr->rep, f, o->line, o->detail);
        return;
    }
    switch (o->reason) {
    case CAPID_R_INVALID_JSON:
    case CAPID_R_INVALID_EVENT:
    case CAPID_R_TOO_LARGE:
        /* Refused before mapping, so the same for every destination: one
         * invalid row. */
        if (o->dest == 0) {
            char msg[CAPID_IMPORT_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s: %s", capid_reason_name(o->reason), o->detail);
            capid_import_file_invalid(fr->rep, f, o->line, msg);
        }
        break;
    case CAPID_R_DUPLICATE:
        f->duplicates++;
        break;
    default:
        capid_import_file_skipped(f, o->line, o->dest, o->reason, o->detail);
        break;
    }
}

static void progress_fn(void *ctx, const struct capid_pipe_stats *st)
{
    struct file_run *fr = ctx;
    fr->f.rows = st->rows;
    fr->f.queued = st->queued;
    fr->f.events = st->events;
    capid_import_progress(fr->rep, &fr->f, st->position < 0 ? 0 : (uint64_t)st->position, false);
}

struct ctx {
    const struct opts *o;
    const struct capid_config *cfg;
    const struct capid_dest **dests;
    size_t ndests;
    char *dest_list; /* "a,b": part of the mark key */
    struct capid_queue *q;
    bool checking; /* the --strict dry pass before the real one: quiet unless bad */
};

static int commit_done(struct capid_queue *q, const char *key, int64_t position, int64_t now)
{
    struct capid_queue_mark m = {key, position, true};
    int rc = capid_queue_enqueue(q, NULL, 0, now, &m);
    for (int i = 0; rc == CAPID_EBUSY && i < BUSY_RETRIES; i++)
        rc = capid_queue_enqueue(q, NULL, 0, now, &m);
    return rc;
}

/* Imports (commit) or validates one file. Returns its exit status. */
static int import_file(struct ctx *x, struct capid_import_report *rep, const char *path,
                       bool commit)
{
    const struct opts *o = x->o;
    struct file_run fr = {.rep = rep};
    struct capid_import_file *f = &fr.f;
    uint64_t *per_dest = calloc(x->ndests + 1, sizeof(*per_dest));
    struct capid_buf key;
    capid_buf_init(&key, 0);
    struct capid_perr err = {0};
    struct stat st0, st1;
    int ret = 0, rc;
    f->path = path;
    f->format = o->format >= 0 ? (enum capid_import_format)o->format
                               : (enum capid_import_format)capid_import_format_of_path(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (!per_dest)
        abort();
    if (fd < 0 || fstat(fd, &st0) != 0 ||
        (rc = capid_import_hash(fd, f->sha256, &f->size, &err)) != CAPID_OK) {
        const char *why = fd < 0 || !err.msg ? strerror(errno) : err.msg;
        snprintf(f->error, sizeof(f->error), "cannot read: %s", why);
        capid_import_file_begin(rep, f, per_dest);
        f->status = "unreadable";
        fprintf(stderr, "capid import: cannot read '%s': %s\n", path, why);
        ret = 2;
        goto end;
    }
    /* The mark names the content and what it was imported as. */
    capid_buf_printf(&key, "import/%s/%s/%s/sha256:%s", capid_import_format_name(f->format),
                     f->format == CAPID_IMPORT_CSV ? (o->offline ? "offline" : "online") : "-",
                     x->dest_list, f->sha256);
    int64_t pos = 0;
    bool done = false;
    if (x->q) {
        rc = capid_queue_mark_get(x->q, key.data, &pos, &done);
        if (rc == CAPID_ENOTFOUND) {
            pos = 0;
        } else if (rc != CAPID_OK) {
            capid_import_file_begin(rep, f, per_dest);
            f->status = "failed";
            snprintf(f->error, sizeof(f->error), "cannot read the import mark: %s",
                     capid_strerror(rc));
            fprintf(stderr, "capid import: '%s': %s\n", path, f->error);
            ret = 1;
            goto end;
        } else if (done && !o->force) {
            capid_import_file_begin(rep, f, per_dest);
            f->status = "already_imported";
            snprintf(f->error, sizeof(f->error),
                     "already imported (same content, sha256 %.16s...); use --force to import it "
                     "again (events seen in the last 48 h are skipped as duplicates)",
                     f->sha256);
            fprintf(stderr,
                    "capid import: '%s' was already imported (same content, sha256 %s); "
                    "use --force to import it again\n",
                    path, f->sha256);
            ret = 2;
            goto end;
        } else if (done) {
            pos = 0; /* --force: from the start */
        }
    }
    if (pos > 0) {
        f->resumed_offset = (uint64_t)pos;
        if (capid_import_line_at(fd, f->format, (uint64_t)pos, &f->resumed_line, &err) !=
            CAPID_OK) {
            capid_import_file_begin(rep, f, per_dest);
            f->status = "failed";
            snprintf(f->error, sizeof(f->error), "cannot resume at offset %lld: %s", (long long)pos,
                     err.msg ? err.msg : "read error");
            fprintf(stderr, "capid import: '%s': %s\n", path, f->error);
            ret = 1;
            goto end;
        }
    }
    capid_import_file_begin(rep, f, per_dest);
    rc = capid_import_src_open(&fr.src, fd, f->format, o->offline, f->resumed_offset,
                               f->resumed_line, &err);
    if (rc != CAPID_OK) {
        f->status = rc == CAPID_EPARSE ? "malformed" : "failed";
        snprintf(f->error, sizeof(f->error), "%s", err.msg ? err.msg : capid_strerror(rc));
        fprintf(stderr, "capid import: '%s' is not a valid %s file: %s\n", path,
                capid_import_format_name(f->format), f->error);
        ret = rc == CAPID_EPARSE ? 2 : 1;
        goto end;
    }
    struct capid_pipe_opts po = {
        .cfg = x->cfg,
        .dests = x->dests,
        .ndests = x->ndests,
        .now = o->now,
        .group = o->group,
        .q = commit ? x->q : NULL,
        .mark_key = key.data,
        .read = read_fn,
        .read_ctx = &fr,
        .outcome = outcome_fn,
        .progress = progress_fn,
        .ctx = &fr,
        .stop = &stop_flag,
    };
    struct capid_pipe_stats ps = {.per_dest = per_dest, .position = -1};
    rc = capid_pipe_run(&po, &ps);
    f->rows = ps.rows;
    f->events = ps.events;
    f->queued = ps.queued;
    capid_import_progress(rep, f, ps.position < 0 ? 0 : (uint64_t)ps.position, true);
    if (rc == CAPID_OK && fr.fatal_rc == 0 && stop_flag) {
        f->status = "interrupted";
        size_t line = 0;
        if (ps.position > 0)
            capid_import_line_at(fd, f->format, (uint64_t)ps.position, &line, NULL);
        snprintf(f->error, sizeof(f->error),
                 "interrupted: the rows before line %zu are %s; run the same command again to "
                 "continue",
                 line              ? line
                 : f->resumed_line ? f->resumed_line
                                   : 2,
                 commit ? "committed" : "checked");
        ret = 1;
    } else if (fr.fatal_rc) {
        f->status = fr.fatal_rc == CAPID_EPARSE ? "malformed" : "failed";
        snprintf(f->error, sizeof(f->error), "%s", fr.fatal);
        fprintf(stderr, "capid import: '%s': %s%s\n", path, fr.fatal,
                commit ? " (the rows before it are imported)" : "");
        ret = fr.fatal_rc == CAPID_EPARSE ? 2 : 1;
    } else if (rc != CAPID_OK) {
        f->status = "failed";
        snprintf(f->error, sizeof(f->error), "cannot commit to queue '%s': %s", x->cfg->queue.path,
                 capid_strerror(rc));
        fprintf(stderr, "capid import: %s\n", f->error);
        ret = 1;
    } else if (fstat(fd, &st1) != 0 || st1.st_size != st0.st_size ||
               st1.st_mtim.tv_sec != st0.st_mtim.tv_sec ||
               st1.st_mtim.tv_nsec != st0.st_mtim.tv_nsec) {
        f->status = "failed";
        snprintf(f->error, sizeof(f->error), "the file changed while it was imported");
        fprintf(stderr, "capid import: '%s': %s\n", path, f->error);
        ret = 1;
    } else if (commit) {
        int64_t now = o->now ? o->now : capid_now_s();
        rc = commit_done(x->q, key.data, (int64_t)f->size, now);
        if (rc != CAPID_OK) {
            f->status = "failed";
            snprintf(f->error, sizeof(f->error), "cannot commit to queue '%s': %s",
                     x->cfg->queue.path, capid_strerror(rc));
            fprintf(stderr, "capid import: %s\n", f->error);
            ret = 1;
        } else {
            f->status = "imported";
        }
    } else {
        f->status = o->strict && f->invalid ? "invalid" : "validated";
        if (o->strict && f->invalid)
            ret = 2;
    }
end:
    capid_import_file_end(rep, f, x->checking && ret == 0 && !f->invalid ? NULL : stdout);
    capid_import_src_free(fr.src);
    if (fd >= 0)
        close(fd);
    capid_buf_release(&key);
    free(per_dest);
    return ret;
}

/* Runs every file; stops at a runtime failure or an interrupt. */
static int run_all(struct ctx *x, struct capid_import_report *rep, char **files, int nfiles,
                   bool commit)
{
    int ret = 0;
    for (int i = 0; i < nfiles && !stop_flag; i++) {
        int rc = import_file(x, rep, files[i], commit);
        if (rc > ret || (rc == 1 && ret == 2))
            ret = rc;
        if (rc == 1)
            break;
    }
    return ret;
}

static int usage(FILE *to)
{
    fprintf(to, "usage: capid import --config FILE [--destination NAME] [--format csv|ndjson]\n"
                "                    [--type offline|online] [--dry-run] [--report FILE] "
                "[--force]\n"
                "                    [--strict] [--now EPOCH_SECONDS] [--group N] FILE...\n");
    return to == stderr ? 2 : 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lopts[] = {
        {"config", required_argument, NULL, 'c'}, {"destination", required_argument, NULL, 'd'},
        {"format", required_argument, NULL, 'f'}, {"type", required_argument, NULL, 't'},
        {"dry-run", no_argument, NULL, 'n'},      {"report", required_argument, NULL, 'r'},
        {"force", no_argument, NULL, 'F'},        {"strict", no_argument, NULL, 's'},
        {"now", required_argument, NULL, 'N'},    {"group", required_argument, NULL, 'g'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 'd':
            o->dest = optarg;
            break;
        case 'f':
            if ((o->format = capid_import_format_parse(optarg)) < 0) {
                fprintf(stderr, "capid import: --format '%s': use csv or ndjson\n", optarg);
                return 2;
            }
            break;
        case 't':
            if (strcmp(optarg, "offline") && strcmp(optarg, "online")) {
                fprintf(stderr, "capid import: --type '%s': use offline or online\n", optarg);
                return 2;
            }
            o->offline = !strcmp(optarg, "offline");
            break;
        case 'n':
            o->dry_run = true;
            break;
        case 'r':
            o->report = optarg;
            break;
        case 'F':
            o->force = true;
            break;
        case 's':
            o->strict = true;
            break;
        case 'N':
            errno = 0;
            o->now = strtoll(optarg, &end, 10);
            if (errno || *end || o->now <= 0) {
                fprintf(stderr, "capid import: --now '%s' is not a positive number of seconds\n",
                        optarg);
                return 2;
            }
            break;
        case 'g':
            errno = 0;
            o->group = (size_t)strtoull(optarg, &end, 10);
            if (errno || *end || o->group < 1 || o->group > CAPID_QUEUE_MAX_LEASE) {
                fprintf(stderr, "capid import: --group takes 1..%d events per transaction\n",
                        CAPID_QUEUE_MAX_LEASE);
                return 2;
            }
            break;
        case 'h':
            return usage(stdout) - 1; /* -1: stop with status 0 */
        default:
            return usage(stderr);
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "capid import: no file named\n");
        return usage(stderr);
    }
    return 0;
}

/* Checks every file before anything runs: readable, a regular file, a known
 * format. */
static int check_files(const struct opts *o, char **files, int n)
{
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (!strcmp(files[i], "-")) {
            fprintf(stderr, "capid import: cannot import stdin: an import must hash and resume "
                            "its file (use capid enqueue for a stream)\n");
            return 2;
        }
        if (access(files[i], R_OK) != 0 || stat(files[i], &st) != 0) {
            fprintf(stderr, "capid import: cannot read '%s': %s\n", files[i], strerror(errno));
            return 2;
        }
        if (!S_ISREG(st.st_mode)) {
            fprintf(stderr, "capid import: cannot read '%s': not a regular file\n", files[i]);
            return 2;
        }
        if (o->format < 0 && capid_import_format_of_path(files[i]) < 0) {
            fprintf(stderr,
                    "capid import: cannot tell the format of '%s' from its name (.csv, .ndjson, "
                    ".jsonl): use --format csv|ndjson\n",
                    files[i]);
            return 2;
        }
    }
    return 0;
}

int capid_cmd_import(int argc, char **argv)
{
    struct opts o = {.format = -1, .offline = true, .group = DEFAULT_GROUP};
    int ret = parse_args(argc, argv, &o);
    if (ret)
        return ret < 0 ? 0 : ret;
    char **files = argv + optind;
    int nfiles = argc - optind;
    if ((ret = check_files(&o, files, nfiles)) != 0)
        return ret;
    struct capid_config *cfg = capid_cli_load_config("import", o.config);
    if (!cfg)
        return 2;
    struct ctx x = {.o = &o, .cfg = cfg};
    struct capid_import_report rep = {0};
    struct capid_perr err = {0};
    const char **names = calloc(cfg->n_dests + 1, sizeof(*names));
    struct capid_buf dl;
    capid_buf_init(&dl, 0);
    x.dests = calloc(cfg->n_dests + 1, sizeof(*x.dests));
    if (!names || !x.dests)
        abort();
    x.ndests = capid_cli_select_dests("import", cfg, o.dest, x.dests);
    for (size_t i = 0; i < x.ndests; i++) {
        capid_buf_printf(&dl, "%s%s", i ? "," : "", x.dests[i]->name);
        names[i] = x.dests[i]->name;
    }
    x.dest_list = dl.data;
    if (!x.ndests) {
        ret = 2;
        goto out;
    }
    if (!o.dry_run) {
        struct capid_queue_opts qo = {.path = cfg->queue.path,
                                      .sync_normal = cfg->queue.synchronous == CAPID_SYNC_NORMAL,
                                      .keep_delivered_s = cfg->queue.keep_delivered_s};
        if (capid_queue_open(&x.q, &qo, &err) != CAPID_OK) {
            fprintf(stderr, "capid import: %s\n", err.msg ? err.msg : "cannot open the queue");
            ret = 1;
            goto out;
        }
    }
    /* Ctrl-C or SIGTERM: commit what was read, then stop; a second one kills. */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = (int)SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (o.strict) {
        /* Strict: a dry pass over every file first; commit only if no row is bad. */
        struct capid_import_report check;
        if (capid_import_report_init(&check, names, x.ndests, true, true, o.report, &err) !=
            CAPID_OK) {
            fprintf(stderr, "capid import: %s\n", err.msg ? err.msg : "cannot write the report");
            capid_import_report_release(&check);
            ret = 2;
            goto out;
        }
        x.checking = !o.dry_run;
        check.quiet = x.checking;
        ret = run_all(&x, &check, files, nfiles, false);
        bool bad = check.totals.invalid > 0 || ret != 0;
        if (bad && !o.dry_run) {
            if (ret == 0 || check.totals.invalid)
                fprintf(stderr,
                        "capid import: --strict: %llu invalid rows, nothing imported (see the "
                        "summary%s)\n",
                        (unsigned long long)check.totals.invalid,
                        o.report ? " and the report" : "");
            if (ret == 0)
                ret = 2;
        }
        if (bad || o.dry_run) {
            if (capid_import_report_finish(&check, &err) != CAPID_OK) {
                fprintf(stderr, "capid import: %s\n", err.msg);
                ret = ret ? ret : 1;
            }
            if (bad && ret == 0)
                ret = 2;
            capid_import_report_release(&check);
            goto out;
        }
        capid_import_report_release(&check);
        x.checking = false;
    }
    if (capid_import_report_init(&rep, names, x.ndests, o.dry_run, o.strict, o.report, &err) !=
        CAPID_OK) {
        fprintf(stderr, "capid import: %s\n", err.msg ? err.msg : "cannot write the report");
        ret = 2;
        goto out;
    }
    ret = run_all(&x, &rep, files, nfiles, !o.dry_run);
    if (capid_import_report_finish(&rep, &err) != CAPID_OK) {
        fprintf(stderr, "capid import: %s\n", err.msg);
        ret = ret ? ret : 1;
    }
out:
    capid_import_report_release(&rep);
    capid_queue_close(x.q);
    capid_buf_release(&dl);
    free(names);
    free(x.dests);
    capid_config_free(cfg);
    return ret;
}
