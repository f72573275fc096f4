#include "ingest/csv.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "util/buf.h"

#define RBUF_SIZE (64 * 1024)
#define NO_OFFSET UINT64_MAX

/* Parser states; one record is parsed by one run of the machine, which
 * survives buffer refills (nothing is re-scanned). */
enum csv_state {
    ST_FIELD,    /* at the start of a field */
    ST_PLAIN,    /* inside an unquoted field */
    ST_QUOTED,   /* inside a quoted field */
    ST_QUOTE,    /* saw a quote inside a quoted field: doubled, or the end */
    ST_CR,       /* saw a CR ending a line: swallow a following LF */
    ST_SKIPLINE, /* after a syntax error: drop the rest of the physical line */
};

struct capid_csv {
    int fd;
    FILE *f;
    unsigned char *rbuf; /* read buffer, RBUF_SIZE bytes */
    size_t rpos, rlen;
    uint64_t base; /* file offset of rbuf[0] */
    bool eof, done, bom_pending;

    size_t line;         /* current physical line */
    uint64_t line_start; /* offset of its first byte */
    uint64_t cr_end;     /* offset just past the last CR (a LF there is CRLF) */

    /* The record being parsed: field bytes, each NUL-terminated, in `out`. */
    enum csv_state state;
    bool started; /* a byte of the record has been seen (blank-line skip) */
    bool discard; /* over a cap: stop storing, parse to the end */
    struct capid_buf out;
    size_t *foff;  /* field start offsets in out */
    size_t fstart; /* start of the field being parsed */
    struct capid_csv_field *fields;
    size_t nfields, fcap;
    uint64_t rec_off;
    size_t rec_line;
    size_t quote_line, quote_col; /* where the open quoted field began */
    size_t max_record, expect;

    /* UTF-8 sequence in progress (may straddle a buffer refill). */
    unsigned u8_need;
    unsigned char u8_lo, u8_hi;
    uint64_t u8_lead; /* offset of its lead byte */

    int rec_err; /* first error of this record */
    struct capid_perr perr;
};

/* Bytes that end a fast scan: in unquoted fields , " CR LF NUL and non-ASCII;
 * in quoted fields the same except the comma. */
static unsigned char stop_plain[256], stop_quoted[256];

static void init_tables(void)
{
    if (stop_plain[0])
        return;
    for (int i = 0x80; i < 256; i++)
        stop_plain[i] = stop_quoted[i] = 1;
    stop_plain[0] = stop_quoted[0] = 1;
    stop_plain['"'] = stop_quoted['"'] = 1;
    stop_plain['\r'] = stop_quoted['\r'] = 1;
    stop_plain['\n'] = stop_quoted['\n'] = 1;
    stop_plain[','] = 1;
}

static int csv_open(struct capid_csv **out, int fd, FILE *f, size_t max_record,
                    struct capid_perr *err)
{
    init_tables();
    struct capid_csv *c = calloc(1, sizeof(*c));
    if (!c || !(c->rbuf = malloc(RBUF_SIZE))) {
        free(c);
        capid_perr_set(err, 0, "cannot allocate csv reader");
        return CAPID_ENOMEM;
    }
    c->fd = fd;
    c->f = f;
    c->max_record = max_record ? max_record : CAPID_CSV_MAX_RECORD_DEFAULT;
    /* Field data plus one NUL per field never exceeds the cap by more than 1. */
    capid_buf_init(&c->out, c->max_record + 1);
    off_t pos = f ? ftello(f) : lseek(fd, 0, SEEK_CUR);
    c->base = pos > 0 ? (uint64_t)pos : 0;
    c->bom_pending = c->base == 0;
    c->line = 1;
    c->line_start = c->base;
    c->cr_end = NO_OFFSET;
    *out = c;
    return CAPID_OK;
}

int capid_csv_open_fd(struct capid_csv **c, int fd, size_t max_record, struct capid_perr *err)
{
    return csv_open(c, fd, NULL, max_record, err);
}

int capid_csv_open_file(struct capid_csv **c, FILE *f, size_t max_record, struct capid_perr *err)
{
    return csv_open(c, -1, f, max_record, err);
}

void capid_csv_free(struct capid_csv *c)
{
    if (!c)
        return;
    capid_buf_release(&c->out);
    free(c->rbuf);
    free(c->foff);
    free(c->fields);
    free(c);
}

void capid_csv_expect_fields(struct capid_csv *c, size_t n)
{
    c->expect = n;
}

uint64_t capid_csv_tell(const struct capid_csv *c)
{
    return c->base + c->rpos;
}

static inline uint64_t at(const struct capid_csv *c, const unsigned char *p)
{
    return c->base + (uint64_t)(p - c->rbuf);
}

/* Appends more input after rbuf[rlen] (the consumed buffer is dropped first).
 * Returns bytes read, 0 at end of input, CAPID_EIO on a read error. */
static int fill(struct capid_csv *c)
{
    if (c->rpos == c->rlen) {
        c->base += c->rlen;
        c->rpos = c->rlen = 0;
    }
    if (c->eof)
        return 0;
    size_t room = RBUF_SIZE - c->rlen;
    assert(room > 0);
    ssize_t n;
    if (c->f) {
        n = (ssize_t)fread(c->rbuf + c->rlen, 1, room, c->f);
        if (n == 0 && ferror(c->f))
            n = -1;
    } else {
        do
            n = read(c->fd, c->rbuf + c->rlen, room);
        while (n < 0 && errno == EINTR);
    }
    if (n < 0)
        return CAPID_EIO;
    if (n == 0)
        c->eof = true;
    c->rlen += (size_t)n;
    return (int)(n > 0);
}

static inline void on_lf(struct capid_csv *c, uint64_t off)
{
    if (off != c->cr_end)
        c->line++;
    c->line_start = off + 1;
}

static inline void on_cr(struct capid_csv *c, uint64_t off)
{
    c->line++;
    c->line_start = off + 1;
    c->cr_end = off + 1;
}

__attribute__((format(printf, 6, 0))) static void vset_error(struct capid_csv *c, int code,
                                                             uint64_t off, size_t line, size_t col,
                                                             const char *fmt, va_list ap)
{
    if (c->rec_err)
        return; /* the first error of a record is the one reported */
    c->rec_err = code;
    vsnprintf(c->perr.buf, sizeof(c->perr.buf), fmt, ap);
    c->perr.msg = c->perr.buf;
    c->perr.offset = (size_t)off;
    c->perr.line = line;
    c->perr.column = col;
}

/* An error at byte `off` of the current line (err->column is its column). */
__attribute__((format(printf, 4, 5))) static void rec_error(struct capid_csv *c, int code,
                                                            uint64_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset_error(c, code, off, c->line, (size_t)(off - c->line_start) + 1, fmt, ap);
    va_end(ap);
}

/* An error of the record as a whole: err->line is its first line. */
__attribute__((format(printf, 3, 4))) static void record_error(struct capid_csv *c, int code,
                                                               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset_error(c, code, c->rec_off, c->rec_line, 0, fmt, ap);
    va_end(ap);
}

static void bad_utf8(struct capid_csv *c, uint64_t off)
{
    rec_error(c, CAPID_EPARSE, off, "line %zu, column %zu: invalid UTF-8 in field %zu", c->line,
              (size_t)(off - c->line_start) + 1, c->nfields + 1);
}

/* Validates UTF-8 at p: a byte >= 0x80, or any byte while a sequence is open.
 * Consumes valid (possibly unfinished) sequences and stray bytes; stops
 * without consuming an ASCII byte, which the caller then parses normally. */
static const unsigned char *u8_scan(struct capid_csv *c, const unsigned char *p,
                                    const unsigned char *e)
{
    while (p < e) {
        unsigned char b = *p;
        if (c->u8_need) {
            if (b < c->u8_lo || b > c->u8_hi) {
                c->u8_need = 0;
                bad_utf8(c, c->u8_lead);
                if (b < 0x80)
                    return p;
                continue; /* re-read b as a possible lead byte */
            }
            c->u8_lo = 0x80;
            c->u8_hi = 0xBF;
            p++;
            if (--c->u8_need == 0)
                return p;
            continue;
        }
        if (b < 0x80)
            return p;
        c->u8_lead = at(c, p);
        c->u8_lo = 0x80;
        c->u8_hi = 0xBF;
        /* RFC 3629 table 3-7: no overlongs, surrogates or values > U+10FFFF. */
        if (b >= 0xC2 && b <= 0xDF) {
            c->u8_need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            c->u8_need = 2;
            if (b == 0xE0)
                c->u8_lo = 0xA0;
            else if (b == 0xED)
                c->u8_hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            c->u8_need = 3;
            if (b == 0xF0)
                c->u8_lo = 0x90;
            else if (b == 0xF4)
                c->u8_hi = 0x8F;
        } else {
            bad_utf8(c, c->u8_lead);
        }
        p++;
    }
    return p;
}

/* Slow path of room(): grows the record buffer, or gives up at the cap. */
__attribute__((noinline)) static bool grow(struct capid_csv *c, size_t n)
{
    if (capid_buf_grow(&c->out, n) == CAPID_OK)
        return true;
    c->discard = true;
    if (c->state == ST_QUOTED)
        record_error(c, CAPID_ETOOBIG,
                     "line %zu: record over %zu bytes (quoted field opened on line %zu, column "
                     "%zu: unbalanced quote?)",
                     c->rec_line, c->max_record, c->quote_line, c->quote_col);
    else
        record_error(c, CAPID_ETOOBIG, "line %zu: record over %zu bytes", c->rec_line,
                     c->max_record);
    return false;
}

/* Makes room for n more bytes of field data (plus the buffer's NUL). False
 * when that passes the record cap: the record is then parsed to its end but
 * not stored, and reported as too big. */
static inline bool room(struct capid_csv *c, size_t n)
{
    if (c->out.len + n + 1 <= c->out.cap && c->out.len + n <= c->out.max)
        return true;
    return grow(c, n);
}

static inline void store(struct capid_csv *c, const unsigned char *p, size_t n)
{
    if (c->discard || n == 0 || !room(c, n))
        return;
    memcpy(c->out.data + c->out.len, p, n);
    c->out.len += n;
}

static inline void end_field(struct capid_csv *c)
{
    if (c->discard)
        return;
    if (c->nfields == CAPID_CSV_MAX_FIELDS) {
        c->discard = true;
        record_error(c, CAPID_ETOOBIG, "line %zu: more than %d fields", c->rec_line,
                     CAPID_CSV_MAX_FIELDS);
        return;
    }
    if (c->nfields == c->fcap) {
        size_t cap = c->fcap ? c->fcap * 2 : 32;
        size_t *fo = realloc(c->foff, cap * sizeof(*fo));
        if (!fo)
            abort(); /* STYLE: with caps in place, out of memory aborts */
        c->foff = fo;
        struct capid_csv_field *fl = realloc(c->fields, cap * sizeof(*fl));
        if (!fl)
            abort();
        c->fields = fl;
        c->fcap = cap;
    }
    /* The terminating NUL is stored too; offsets stay valid across reallocs. */
    if (!room(c, 1))
        return;
    c->out.data[c->out.len++] = '\0';
    c->foff[c->nfields++] = c->fstart;
    c->fstart = c->out.len;
}

static void begin_record(struct capid_csv *c)
{
    c->state = ST_FIELD;
    c->started = false;
    c->discard = false;
    c->nfields = 0;
    c->fstart = 0;
    c->rec_err = 0;
    c->u8_need = 0;
    capid_buf_reset(&c->out);
}

static void mark_start(struct capid_csv *c, const unsigned char *p)
{
    c->started = true;
    c->rec_off = at(c, p);
    c->rec_line = c->line;
}

/* Completes the record whose line end (if any) ends just before rbuf[rpos]. */
static int finish(struct capid_csv *c, struct capid_csv_record *rec, struct capid_perr *err)
{
    rec->fields = NULL;
    rec->nfields = 0;
    rec->line = c->rec_line;
    rec->offset = c->rec_off;
    rec->end_offset = c->base + c->rpos;
    rec->next_line = c->line;
    rec->fatal = false;
    if (!c->rec_err && c->expect && c->nfields != c->expect)
        record_error(c, CAPID_EPARSE, "line %zu: %zu fields, header has %zu", c->rec_line,
                     c->nfields, c->expect);
    if (c->rec_err) {
        if (err)
            *err = c->perr, err->msg = err->buf;
        return c->rec_err;
    }
    for (size_t i = 0; i < c->nfields; i++) {
        size_t end = i + 1 < c->nfields ? c->foff[i + 1] - 1 : c->out.len - 1;
        c->fields[i].s = c->out.data + c->foff[i];
        c->fields[i].len = end - c->foff[i];
    }
    rec->fields = c->fields;
    rec->nfields = c->nfields;
    if (!c->expect)
        c->expect = c->nfields;
    return 1;
}

static int fatal(struct capid_csv *c, struct capid_csv_record *rec, struct capid_perr *err)
{
    c->done = true;
    int rc = finish(c, rec, err);
    rec->fatal = true;
    return rc;
}

/* End of input in the middle of (or between) records. */
static int at_eof(struct capid_csv *c, struct capid_csv_record *rec, struct capid_perr *err)
{
    if (c->u8_need) {
        c->u8_need = 0;
        bad_utf8(c, c->u8_lead);
    }
    switch (c->state) {
    case ST_QUOTED:
        c->rec_err = 0; /* this one explains everything before it */
        record_error(c, CAPID_EPARSE,
                     "line %zu: unbalanced quote: the quoted field opened on line %zu, column "
                     "%zu is not closed at end of file",
                     c->rec_line, c->quote_line, c->quote_col);
        c->perr.line = c->quote_line;
        c->perr.column = c->quote_col;
        return fatal(c, rec, err);
    case ST_FIELD:
    case ST_CR:
        if (!c->started) {
            c->done = true;
            return 0;
        }
        if (c->state == ST_FIELD)
            end_field(c); /* "a,b," ends with an empty field */
        break;
    case ST_PLAIN:
    case ST_QUOTE:
        end_field(c);
        break;
    case ST_SKIPLINE:
        break;
    }
    return finish(c, rec, err);
}

int capid_csv_next(struct capid_csv *c, struct capid_csv_record *rec, struct capid_perr *err)
{
    if (c->done) {
        memset(rec, 0, sizeof(*rec));
        rec->line = rec->next_line = c->line;
        rec->offset = rec->end_offset = c->base + c->rpos;
        return 0;
    }
    if (c->bom_pending) {
        while (c->rlen - c->rpos < 3 && fill(c) > 0)
            ;
        if (c->rlen - c->rpos >= 3 && memcmp(c->rbuf + c->rpos, "\xEF\xBB\xBF", 3) == 0) {
            c->rpos += 3;
            c->line_start = c->base + c->rpos;
        }
        c->bom_pending = false;
    }
    begin_record(c);
    for (;;) {
        if (c->rpos == c->rlen) {
            int rc = fill(c);
            if (rc == CAPID_EIO) {
                if (!c->started)
                    mark_start(c, c->rbuf + c->rpos);
                c->rec_err = 0;
                record_error(c, CAPID_EIO, "line %zu: cannot read input: %s", c->line,
                             strerror(errno));
                return fatal(c, rec, err);
            }
            if (rc == 0)
                return at_eof(c, rec, err);
        }
        const unsigned char *p = c->rbuf + c->rpos, *e = c->rbuf + c->rlen, *s;
        switch (c->state) {
        case ST_FIELD:
            if (!c->started) {
                /* Blank lines between records are skipped. */
                if (*p == '\n') {
                    on_lf(c, at(c, p));
                    c->rpos++;
                    continue;
                }
                if (*p == '\r') {
                    on_cr(c, at(c, p));
                    c->rpos++;
                    c->state = ST_CR;
                    continue;
                }
                mark_start(c, p);
            }
            if (*p == '"') {
                c->quote_line = c->line;
                c->quote_col = (size_t)(at(c, p) - c->line_start) + 1;
                c->state = ST_QUOTED;
                c->rpos++;
                continue;
            }
            c->state = ST_PLAIN;
            /* fall through */
        case ST_PLAIN:
            s = p;
            if (c->u8_need)
                p = u8_scan(c, p, e);
            for (;;) {
                while (p < e && !stop_plain[*p])
                    p++;
                if (p == e || *p < 0x80) {
                    if (p < e && *p == '\0') {
                        rec_error(c, CAPID_EPARSE, at(c, p),
                                  "line %zu, column %zu: NUL byte in field %zu", c->line,
                                  (size_t)(at(c, p) - c->line_start) + 1, c->nfields + 1);
                        p++;
                        continue;
                    }
                    break;
                }
                p = u8_scan(c, p, e);
            }
            store(c, s, (size_t)(p - s));
            c->rpos = (size_t)(p - c->rbuf);
            if (p == e)
                continue;
            c->rpos++;
            switch (*p) {
            case ',':
                end_field(c);
                c->state = ST_FIELD;
                continue;
            case '\n':
                end_field(c);
                on_lf(c, at(c, p));
                return finish(c, rec, err);
            case '\r':
                end_field(c);
                on_cr(c, at(c, p));
                c->state = ST_CR;
                continue;
            default: /* '"' */
                rec_error(c, CAPID_EPARSE, at(c, p),
                          "line %zu, column %zu: quote inside unquoted field %zu", c->line,
                          (size_t)(at(c, p) - c->line_start) + 1, c->nfields + 1);
                c->state = ST_SKIPLINE;
                continue;
            }
        case ST_QUOTED:
            s = p;
            if (c->u8_need)
                p = u8_scan(c, p, e);
            for (;;) {
                while (p < e && !stop_quoted[*p])
                    p++;
                if (p == e || *p == '"')
                    break;
                if (*p == '\n') {
                    on_lf(c, at(c, p));
                    p++;
                } else if (*p == '\r') {
                    on_cr(c, at(c, p));
                    p++;
                } else if (*p == '\0') {
                    rec_error(c, CAPID_EPARSE, at(c, p),
                              "line %zu, column %zu: NUL byte in field %zu", c->line,
                              (size_t)(at(c, p) - c->line_start) + 1, c->nfields + 1);
                    p++;
                } else {
                    p = u8_scan(c, p, e);
                }
            }
            store(c, s, (size_t)(p - s));
            c->rpos = (size_t)(p - c->rbuf);
            if (p < e) {
                c->rpos++;
                c->state = ST_QUOTE;
            }
            continue;
        case ST_QUOTE:
            c->rpos++;
            switch (*p) {
            case '"': /* "" is one quote */
                store(c, p, 1);
                c->state = ST_QUOTED;
                continue;
            case ',':
                end_field(c);
                c->state = ST_FIELD;
                continue;
            case '\n':
                end_field(c);
                on_lf(c, at(c, p));
                return finish(c, rec, err);
            case '\r':
                end_field(c);
                on_cr(c, at(c, p));
                c->state = ST_CR;
                continue;
            default:
                rec_error(c, CAPID_EPARSE, at(c, p),
                          "line %zu, column %zu: text after the closing quote of field %zu",
                          c->line, (size_t)(at(c, p) - c->line_start) + 1, c->nfields + 1);
                c->rpos--; /* the byte may itself end the line */
                c->state = ST_SKIPLINE;
                continue;
            }
        case ST_CR:
            if (*p == '\n') {
                on_lf(c, at(c, p));
                c->rpos++;
            }
            if (!c->started) {
                c->state = ST_FIELD;
                continue;
            }
            return finish(c, rec, err);
        case ST_SKIPLINE:
            while (p < e && *p != '\n' && *p != '\r')
                p++;
            c->rpos = (size_t)(p - c->rbuf);
            if (p == e)
                continue;
            c->rpos++;
            if (*p == '\n') {
                on_lf(c, at(c, p));
                return finish(c, rec, err);
            }
            on_cr(c, at(c, p));
            c->state = ST_CR;
            continue;
        }
    }
}

int capid_csv_seek(struct capid_csv *c, uint64_t offset, size_t line, struct capid_perr *err)
{
    off_t pos = (off_t)offset;
    int rc = c->f ? fseeko(c->f, pos, SEEK_SET) : (lseek(c->fd, pos, SEEK_SET) < 0 ? -1 : 0);
    if (rc != 0 || pos < 0) {
        capid_perr_set(err, (size_t)offset, "cannot seek to offset %llu: %s",
                       (unsigned long long)offset, strerror(errno));
        return CAPID_EIO;
    }
    if (c->f)
        clearerr(c->f);
    c->base = offset;
    c->rpos = c->rlen = 0;
    c->eof = c->done = false;
    c->bom_pending = offset == 0;
    c->line = line ? line : 1;
    c->line_start = offset;
    c->cr_end = NO_OFFSET;
    return CAPID_OK;
}
