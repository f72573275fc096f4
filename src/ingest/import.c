#include "ingest/import.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "ingest/csv.h"
#include "ingest/ndjson.h"
#include "ingest/rows.h"
#include "util/buf.h"
#include "util/clock.h"

#define IO_BLOCK ((size_t)1 << 20) /* hash and line-count reads */

const char *capid_import_format_name(enum capid_import_format f)
{
    return f == CAPID_IMPORT_CSV ? "csv" : "ndjson";
}

int capid_import_format_parse(const char *name)
{
    if (!strcmp(name, "csv"))
        return CAPID_IMPORT_CSV;
    if (!strcmp(name, "ndjson") || !strcmp(name, "jsonl"))
        return CAPID_IMPORT_NDJSON;
    return -1;
}

int capid_import_format_of_path(const char *path)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash))
        return -1;
    if (!strcasecmp(dot, ".csv"))
        return CAPID_IMPORT_CSV;
    if (!strcasecmp(dot, ".ndjson") || !strcasecmp(dot, ".jsonl") || !strcasecmp(dot, ".json"))
        return CAPID_IMPORT_NDJSON;
    return -1;
}

/* ---- identity and resume ---------------------------------------------- */

int capid_import_hash(int fd, char hex[65], uint64_t *size, struct capid_perr *err)
{
    int ret = CAPID_ENOMEM;
    unsigned char *buf = malloc(IO_BLOCK);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int mdlen = 0;
    uint64_t total = 0;
    if (!buf || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        goto out;
    if (lseek(fd, 0, SEEK_SET) < 0) {
        capid_perr_set(err, 0, "cannot seek: %s", strerror(errno));
        ret = CAPID_EIO;
        goto out;
    }
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (;;) {
        ssize_t n = read(fd, buf, IO_BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            capid_perr_set(err, (size_t)total, "cannot read at offset %llu: %s",
                           (unsigned long long)total, strerror(errno));
            ret = CAPID_EIO;
            goto out;
        }
        if (n == 0)
            break;
        if (!EVP_DigestUpdate(ctx, buf, (size_t)n))
            goto out;
        total += (uint64_t)n;
    }
    if (!EVP_DigestFinal_ex(ctx, md, &mdlen) || mdlen != sizeof(md))
        goto out;
    for (size_t i = 0; i < sizeof(md); i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    *size = total;
    ret = CAPID_OK;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    return ret;
}

int capid_import_line_at(int fd, enum capid_import_format f, uint64_t offset, size_t *line,
                         struct capid_perr *err)
{
    unsigned char *buf = malloc(IO_BLOCK);
    if (!buf)
        return CAPID_ENOMEM;
    size_t lines = 0;
    bool cr = false; /* the previous byte was a CR (csv: a LF after it is CRLF) */
    uint64_t at = 0;
    int ret = CAPID_OK;
    while (at < offset) {
        size_t want = offset - at < IO_BLOCK ? (size_t)(offset - at) : IO_BLOCK;
        ssize_t n = pread(fd, buf, want, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            capid_perr_set(err, (size_t)at, "cannot read at offset %llu: %s",
                           (unsigned long long)at, n < 0 ? strerror(errno) : "file is shorter");
            ret = CAPID_EIO;
            break;
        }
        if (f == CAPID_IMPORT_NDJSON) {
            for (const unsigned char *p = buf, *e = buf + n; (p = memchr(p, '\n', (size_t)(e - p)));
                 p++)
                lines++;
        } else {
            for (ssize_t i = 0; i < n; i++) {
                unsigned char b = buf[i];
                if (cr && b != '\n')
                    lines++; /* the CR before was a line end of its own */
                if (b == '\n')
                    lines++;
                cr = b == '\r';
            }
        }
        at += (uint64_t)n;
    }
    if (ret == CAPID_OK && cr) { /* a CR just before offset: bare unless a LF follows */
        unsigned char b;
        if (pread(fd, &b, 1, (off_t)offset) != 1 || b != '\n')
            lines++;
    }
    free(buf);
    *line = lines + 1;
    return ret;
}

/* ---- reading ---------------------------------------------------------- */

/* Bad rows met while an unindexed group is open are held back until that
 * group's event is out, so inputs come in the order of their first line. */
#define PEND_MAX 64

struct pending {
    uint64_t line;
    char msg[CAPID_IMPORT_MSG_MAX];
};

struct capid_import_src {
    enum capid_import_format f;
    struct capid_csv *csv;
    struct capid_rows *rows;
    struct capid_ndjson *nd;
    bool unindexed, open, eof, done, drain;
    struct pending pend[PEND_MAX];
    size_t npend, pend_at;
    int fatal_rc; /* met, returned once the held rows are out */
    struct pending fatal;
};

void capid_import_src_free(struct capid_import_src *s)
{
    if (!s)
        return;
    capid_rows_free(s->rows);
    capid_csv_free(s->csv);
    capid_ndjson_free(s->nd);
    free(s);
}

static int open_csv(struct capid_import_src *s, int fd, bool offline, uint64_t offset, size_t line,
                    struct capid_perr *err)
{
    int rc = capid_csv_open_fd(&s->csv, fd, 0, err);
    if (rc != CAPID_OK)
        return rc;
    struct capid_csv_record rec;
    rc = capid_csv_next(s->csv, &rec, err);
    if (rc < 0) {
        if (rc == CAPID_ETOOBIG || rc == CAPID_EPARSE)
            rc = CAPID_EPARSE; /* a bad header: the file is malformed */
        return rc;
    }
    /* rows_new names a missing header ("no header") and bad columns. */
    if ((rc = capid_rows_new(&s->rows, rc == 1 ? &rec : NULL, offline, err)) != CAPID_OK)
        return rc == CAPID_ENOMEM ? rc : CAPID_EPARSE;
    s->unindexed = capid_rows_layout(s->rows) == CAPID_ROWS_UNINDEXED;
    if (offset > 0 && offset > rec.end_offset)
        return capid_csv_seek(s->csv, offset, line, err);
    return CAPID_OK;
}

int capid_import_src_open(struct capid_import_src **out, int fd, enum capid_import_format f,
                          bool offline, uint64_t offset, size_t line, struct capid_perr *err)
{
    *out = NULL;
    struct capid_import_src *s = calloc(1, sizeof(*s));
    if (!s)
        return CAPID_ENOMEM;
    s->f = f;
    int rc;
    if (lseek(fd, 0, SEEK_SET) < 0) {
        capid_perr_set(err, 0, "cannot seek: %s", strerror(errno));
        rc = CAPID_EIO;
    } else if (f == CAPID_IMPORT_CSV) {
        rc = open_csv(s, fd, offline, offset, line, err);
    } else {
        rc = capid_ndjson_open_fd(&s->nd, fd, 0, err);
        if (rc == CAPID_OK && offset > 0)
            rc = capid_ndjson_seek(s->nd, offset, line, err);
    }
    if (rc != CAPID_OK) {
        capid_import_src_free(s);
        return rc;
    }
    *out = s;
    return CAPID_OK;
}

static void bad_row(struct capid_import_input *in, const char *msg, uint64_t line, int64_t resume)
{
    *in = (struct capid_import_input){
        .msg = msg ? msg : "unreadable row", .line = line, .rows = 1, .resume = resume};
}

static void event_in(struct capid_import_input *in, const struct capid_rows_event *ev)
{
    *in = (struct capid_import_input){
        .json = ev->json,
        .len = ev->len,
        .line = ev->line,
        .rows = (uint32_t)ev->rows,
        .resume = (int64_t)ev->end_offset,
    };
}

static void hold(struct pending *p, const struct capid_perr *err, uint64_t line)
{
    p->line = line;
    snprintf(p->msg, sizeof(p->msg), "%s", err->msg ? err->msg : "unreadable row");
}

static int next_csv(struct capid_import_src *s, struct capid_import_input *in,
                    struct capid_perr *err)
{
    struct capid_csv_record rec;
    struct capid_rows_event ev;
    for (;;) {
        /* Held rows go out after the event that was open when they came
         * (returned just before), or at the end. */
        if (s->pend_at < s->npend && (s->drain || s->fatal_rc || s->eof)) {
            /* Never a resume point: an unindexed group is open after them. */
            const struct pending *p = &s->pend[s->pend_at++];
            bad_row(in, p->msg, p->line, -1);
            return 1;
        }
        if (s->pend_at == s->npend) {
            s->npend = s->pend_at = 0;
            s->drain = false;
        }
        if (s->fatal_rc) {
            /* An unbalanced quote or a read error: the rest of the file
             * cannot be read. An open group is not emitted: its last rows
             * may be in the part that cannot be read. */
            s->done = true;
            capid_perr_set(err, 0, "%s", s->fatal.msg);
            bad_row(in, err->msg, s->fatal.line, -1);
            return s->fatal_rc;
        }
        if (s->eof) {
            s->done = true;
            return 0;
        }
        int rc = capid_csv_next(s->csv, &rec, err);
        if (rc == 0) {
            s->eof = true;
            if (capid_rows_flush(s->rows, &ev) == 1) {
                event_in(in, &ev);
                return 1;
            }
            continue;
        }
        if (rc > 0 && (rc = capid_rows_feed(s->rows, &rec, &ev, err)) >= 0) {
            s->open = s->unindexed;
            if (rc == 0)
                continue;
            event_in(in, &ev);
            s->drain = s->npend > 0;
            return 1;
        }
        if (rec.fatal) {
            s->fatal_rc = rc;
            hold(&s->fatal, err, rec.line);
            continue;
        }
        if (s->open && s->npend < PEND_MAX) {
            hold(&s->pend[s->npend++], err, rec.line);
            continue;
        }
        /* Outside a group the row's end is a safe resume point. */
        bad_row(in, err->msg, rec.line, s->open ? -1 : (int64_t)rec.end_offset);
        return 1;
    }
}

static int next_ndjson(struct capid_import_src *s, struct capid_import_input *in,
                       struct capid_perr *err)
{
    struct capid_ndjson_line ln;
    int rc = capid_ndjson_next(s->nd, &ln, err);
    if (rc == 0) {
        s->done = true;
        return 0;
    }
    if (rc == CAPID_ETOOBIG) {
        bad_row(in, err->msg, ln.line, (int64_t)ln.end_offset);
        return 1;
    }
    if (rc < 0) {
        bad_row(in, err->msg, err->line, -1);
        s->done = true;
        return rc;
    }
    *in = (struct capid_import_input){
        .json = ln.s,
        .len = ln.len,
        .line = ln.line,
        .rows = 1,
        .resume = (int64_t)ln.end_offset,
    };
    return 1;
}

int capid_import_src_next(struct capid_import_src *s, struct capid_import_input *in,
                          struct capid_perr *err)
{
    if (s->done)
        return 0;
    return s->f == CAPID_IMPORT_CSV ? next_csv(s, in, err) : next_ndjson(s, in, err);
}

uint64_t capid_import_src_tell(const struct capid_import_src *s)
{
    return s->f == CAPID_IMPORT_CSV ? capid_csv_tell(s->csv) : capid_ndjson_tell(s->nd);
}

const char *capid_import_src_layout(const struct capid_import_src *s)
{
    if (s->f == CAPID_IMPORT_NDJSON)
        return "ndjson";
    switch (capid_rows_layout(s->rows)) {
    case CAPID_ROWS_INDEXED:
        return "indexed";
    case CAPID_ROWS_UNINDEXED:
        return "unindexed";
    default:
        return "no_items";
    }
}

/* ---- the report ------------------------------------------------------- */

static void json_flush(struct capid_import_report *r, struct capid_buf *b)
{
    if (r->json && b->len)
        fwrite(b->data, 1, b->len, r->json);
    capid_buf_reset(b);
}

static void json_str(struct capid_buf *b, const char *s)
{
    if (capid_buf_json_str(b, s, strlen(s)))
        abort();
}

int capid_import_report_init(struct capid_import_report *r, const char *const *dest_names,
                             size_t ndests, bool dry_run, bool strict, const char *json_path,
                             struct capid_perr *err)
{
    memset(r, 0, sizeof(*r));
    r->dest_names = dest_names;
    r->ndests = ndests;
    r->dry_run = dry_run;
    r->strict = strict;
    r->tty = isatty(STDERR_FILENO) == 1;
    r->totals.status = "";
    r->totals.per_dest = calloc(ndests + 1, sizeof(*r->totals.per_dest));
    if (!r->totals.per_dest)
        return CAPID_ENOMEM;
    if (!json_path)
        return CAPID_OK;
    size_t n = strlen(json_path) + 32;
    r->json_path = strdup(json_path);
    r->json_tmp = malloc(n);
    if (!r->json_path || !r->json_tmp)
        return CAPID_ENOMEM;
    snprintf(r->json_tmp, n, "%s.tmp%ld", json_path, (long)getpid());
    r->json = fopen(r->json_tmp, "w");
    if (!r->json) {
        capid_perr_set(err, 0, "cannot write report '%s': %s", r->json_tmp, strerror(errno));
        return CAPID_EIO;
    }
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_printf(&b, "{\"version\":1,\"dry_run\":%s,\"strict\":%s,\"destinations\":[",
                     dry_run ? "true" : "false", strict ? "true" : "false");
    for (size_t i = 0; i < ndests; i++) {
        capid_buf_puts(&b, i ? "," : "");
        json_str(&b, dest_names[i]);
    }
    capid_buf_puts(&b, "],\"files\":[");
    json_flush(r, &b);
    capid_buf_release(&b);
    return CAPID_OK;
}

void capid_import_report_release(struct capid_import_report *r)
{
    if (r->json) {
        fclose(r->json);
        unlink(r->json_tmp);
    }
    free(r->json_path);
    free(r->json_tmp);
    free(r->totals.per_dest);
    memset(r, 0, sizeof(*r));
}

void capid_import_file_begin(struct capid_import_report *r, struct capid_import_file *f,
                             uint64_t *per_dest)
{
    const char *path = f->path;
    enum capid_import_format fmt = f->format;
    char sha[65];
    memcpy(sha, f->sha256, sizeof(sha));
    uint64_t size = f->size, roff = f->resumed_offset;
    size_t rline = f->resumed_line;
    memset(f, 0, sizeof(*f));
    f->path = path;
    f->format = fmt;
    memcpy(f->sha256, sha, sizeof(sha));
    f->size = size;
    f->resumed_offset = roff;
    f->resumed_line = rline;
    f->per_dest = per_dest;
    f->status = "";
    if (per_dest)
        memset(per_dest, 0, r->ndests * sizeof(*per_dest));
    r->t0_ms = capid_mono_ms();
    r->last_draw_ms = 0;
    r->start_offset = roff;
    if (!r->json)
        return;
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_puts(&b, r->nfiles_json++ ? ",{\"file\":" : "{\"file\":");
    json_str(&b, path);
    capid_buf_printf(&b, ",\"format\":\"%s\",\"sha256\":", capid_import_format_name(fmt));
    if (sha[0])
        json_str(&b, sha);
    else
        capid_buf_puts(&b, "null");
    capid_buf_printf(&b, ",\"size\":%llu,\"resumed_from\":", (unsigned long long)size);
    if (roff)
        capid_buf_printf(&b, "{\"offset\":%llu,\"line\":%zu}", (unsigned long long)roff, rline);
    else
        capid_buf_puts(&b, "null");
    capid_buf_puts(&b, ",\"invalid_rows\":[");
    json_flush(r, &b);
    capid_buf_release(&b);
    r->in_file = true;
}

void capid_import_file_invalid(struct capid_import_report *r, struct capid_import_file *f,
                               uint64_t line, const char *msg)
{
    if (f->nshown < CAPID_IMPORT_SHOW_INVALID) {
        struct capid_import_invalid *x = &f->shown[f->nshown++];
        x->line = line;
        snprintf(x->msg, sizeof(x->msg), "%s", msg);
    }
    if (r->json) {
        struct capid_buf b;
        capid_buf_init(&b, 0);
        capid_buf_printf(&b, "%s{\"line\":%llu,\"error\":", f->invalid ? "," : "",
                         (unsigned long long)line);
        json_str(&b, msg);
        capid_buf_putc(&b, '}');
        json_flush(r, &b);
        capid_buf_release(&b);
    }
    f->invalid++;
}

void capid_import_file_skipped(struct capid_import_file *f, uint64_t line, size_t dest,
                               enum capid_reason reason, const char *detail)
{
    f->skipped[reason]++;
    if (f->nexamples[reason] < CAPID_IMPORT_SHOW_SKIPPED) {
        struct capid_import_example *x = &f->examples[reason][f->nexamples[reason]++];
        x->line = line;
        x->dest = dest;
        snprintf(x->detail, sizeof(x->detail), "%s", detail);
    }
}

static uint64_t skipped_total(const struct capid_import_file *f)
{
    uint64_t n = 0;
    for (int i = 0; i < CAPID_R__COUNT; i++)
        n += f->skipped[i];
    return n;
}

void capid_import_progress(struct capid_import_report *r, const struct capid_import_file *f,
                           uint64_t position, bool force)
{
    if (!r->tty)
        return;
    int64_t now = capid_mono_ms();
    if (!force && now - r->last_draw_ms < 100)
        return;
    r->last_draw_ms = now;
    double secs = (double)(now - r->t0_ms) / 1000.0;
    double rate = secs > 0 ? (double)f->rows / secs : 0;
    double frac = f->size ? (double)position / (double)f->size : 1;
    if (frac > 1)
        frac = 1;
    char bar[21];
    int fill = (int)(frac * 20);
    for (int i = 0; i < 20; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[20] = '\0';
    char left[32] = "--:--";
    double bps = secs > 0 ? (double)(position - r->start_offset) / secs : 0;
    if (bps > 0 && position <= f->size) {
        long s = (long)((double)(f->size - position) / bps + 0.5);
        snprintf(left, sizeof(left), "%ld:%02ld", s / 60, s % 60);
    }
    fprintf(stderr, "\r%3d%% [%s] %llu rows  %.0f rows/s  skipped %llu  left %s\033[K",
            (int)(frac * 100), bar, (unsigned long long)f->rows, rate,
            (unsigned long long)(skipped_total(f) + f->duplicates + f->invalid), left);
    fflush(stderr);
}

static void json_counts(struct capid_import_report *r, const struct capid_import_file *f,
                        struct capid_buf *b)
{
    capid_buf_printf(b,
                     "\"rows\":%llu,\"events\":%llu,\"queued\":%llu,\"duplicates\":%llu,"
                     "\"invalid\":%llu,\"skipped\":{",
                     (unsigned long long)f->rows, (unsigned long long)f->events,
                     (unsigned long long)f->queued, (unsigned long long)f->duplicates,
                     (unsigned long long)f->invalid);
    bool first = true;
    for (int i = 1; i < CAPID_R__COUNT; i++) {
        if (!f->skipped[i])
            continue;
        capid_buf_printf(b, "%s\"%s\":%llu", first ? "" : ",",
                         capid_reason_name((enum capid_reason)i),
                         (unsigned long long)f->skipped[i]);
        first = false;
    }
    capid_buf_puts(b, "},\"destinations\":{");
    for (size_t i = 0; i < r->ndests; i++) {
        capid_buf_puts(b, i ? "," : "");
        json_str(b, r->dest_names[i]);
        capid_buf_printf(b, ":%llu", (unsigned long long)(f->per_dest ? f->per_dest[i] : 0));
    }
    capid_buf_putc(b, '}');
}

static void add_totals(struct capid_import_report *r, const struct capid_import_file *f)
{
    struct capid_import_file *t = &r->totals;
    t->rows += f->rows;
    t->events += f->events;
    t->queued += f->queued;
    t->duplicates += f->duplicates;
    t->invalid += f->invalid;
    for (int i = 0; i < CAPID_R__COUNT; i++)
        t->skipped[i] += f->skipped[i];
    t->elapsed_ms += f->elapsed_ms;
    for (size_t i = 0; f->per_dest && i < r->ndests; i++)
        t->per_dest[i] += f->per_dest[i];
    t->size++; /* files */
}

static void print_summary(struct capid_import_report *r, const struct capid_import_file *f,
                          FILE *out)
{
    fprintf(out, "%s: %s", f->path, f->status);
    if (f->resumed_offset)
        fprintf(out, " (resumed at line %zu)", f->resumed_line);
    if (r->dry_run)
        fprintf(out, " (dry run: nothing committed)");
    fputc('\n', out);
    if (f->error[0])
        fprintf(out, "  error          %s\n", f->error);
    if (!strcmp(f->status, "already_imported") || !strcmp(f->status, "unreadable") ||
        (f->error[0] && !f->rows))
        return;
    fprintf(out, "  rows read      %llu\n", (unsigned long long)f->rows);
    fprintf(out, "  events         %llu\n", (unsigned long long)f->events);
    fprintf(out, "  %-14s %llu", r->dry_run ? "to queue" : "queued", (unsigned long long)f->queued);
    if (r->ndests > 1 && f->per_dest) {
        for (size_t i = 0; i < r->ndests; i++)
            fprintf(out, "%s%s %llu", i ? ", " : " (", r->dest_names[i],
                    (unsigned long long)f->per_dest[i]);
        fputc(')', out);
    }
    fputc('\n', out);
    if (!r->dry_run)
        fprintf(out, "  duplicates     %llu\n", (unsigned long long)f->duplicates);
    fprintf(out, "  skipped        %llu\n", (unsigned long long)skipped_total(f));
    for (int i = 1; i < CAPID_R__COUNT; i++)
        if (f->skipped[i])
            fprintf(out, "    %-24s %llu\n", capid_reason_name((enum capid_reason)i),
                    (unsigned long long)f->skipped[i]);
    fprintf(out, "  invalid rows   %llu\n", (unsigned long long)f->invalid);
    for (size_t i = 0; i < f->nshown; i++) {
        /* Reader messages start with "line N: "; others get it here. */
        const char *m = f->shown[i].msg;
        if (!strncmp(m, "line ", 5))
            fprintf(out, "    %s\n", m);
        else
            fprintf(out, "    line %llu: %s\n", (unsigned long long)f->shown[i].line, m);
    }
    if (f->invalid > f->nshown)
        fprintf(out, "    ... and %llu more%s\n", (unsigned long long)(f->invalid - f->nshown),
                r->json_path ? " (all in the report)" : " (--report FILE lists them all)");
}

void capid_import_file_end(struct capid_import_report *r, struct capid_import_file *f, FILE *out)
{
    f->elapsed_ms = capid_mono_ms() - r->t0_ms;
    if (r->tty && r->last_draw_ms) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    add_totals(r, f);
    if (r->json && r->in_file) {
        struct capid_buf b;
        capid_buf_init(&b, 0);
        capid_buf_puts(&b, "],\"status\":");
        json_str(&b, f->status);
        capid_buf_puts(&b, ",\"error\":");
        if (f->error[0])
            json_str(&b, f->error);
        else
            capid_buf_puts(&b, "null");
        capid_buf_putc(&b, ',');
        json_counts(r, f, &b);
        capid_buf_puts(&b, ",\"skipped_examples\":{");
        bool first = true;
        for (int i = 1; i < CAPID_R__COUNT; i++) {
            if (!f->nexamples[i])
                continue;
            capid_buf_printf(&b, "%s\"%s\":[", first ? "" : ",",
                             capid_reason_name((enum capid_reason)i));
            for (size_t k = 0; k < f->nexamples[i]; k++) {
                const struct capid_import_example *x = &f->examples[i][k];
                capid_buf_printf(&b, "%s{\"line\":%llu,\"destination\":", k ? "," : "",
                                 (unsigned long long)x->line);
                json_str(&b, x->dest < r->ndests ? r->dest_names[x->dest] : "");
                capid_buf_puts(&b, ",\"detail\":");
                json_str(&b, x->detail);
                capid_buf_putc(&b, '}');
            }
            capid_buf_putc(&b, ']');
            first = false;
        }
        capid_buf_printf(&b, "},\"elapsed_ms\":%lld}", (long long)f->elapsed_ms);
        json_flush(r, &b);
        capid_buf_release(&b);
        r->in_file = false;
    }
    if (!r->tty && !r->quiet && !(f->error[0] && !f->rows)) {
        double secs = (double)f->elapsed_ms / 1000.0;
        fprintf(stderr,
                "capid import: '%s' %s: %llu rows, %llu events %s, %llu duplicates, %llu "
                "skipped, %llu invalid rows in %.1f s (%.0f rows/s)\n",
                f->path, f->status, (unsigned long long)f->rows, (unsigned long long)f->queued,
                r->dry_run ? "to queue" : "queued", (unsigned long long)f->duplicates,
                (unsigned long long)skipped_total(f), (unsigned long long)f->invalid, secs,
                secs > 0 ? (double)f->rows / secs : 0.0);
    }
    if (out)
        print_summary(r, f, out);
}

int capid_import_report_finish(struct capid_import_report *r, struct capid_perr *err)
{
    if (!r->json)
        return CAPID_OK;
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_buf_printf(&b, "],\"totals\":{\"files\":%llu,", (unsigned long long)r->totals.size);
    json_counts(r, &r->totals, &b);
    capid_buf_puts(&b, "}}\n");
    json_flush(r, &b);
    capid_buf_release(&b);
    FILE *f = r->json;
    r->json = NULL;
    int rc = ferror(f) | fflush(f) | fsync(fileno(f));
    if (fclose(f) != 0 || rc != 0 || rename(r->json_tmp, r->json_path) != 0) {
        capid_perr_set(err, 0, "cannot write report '%s': %s", r->json_path, strerror(errno));
        unlink(r->json_tmp);
        return CAPID_EIO;
    }
    return CAPID_OK;
}
