#include "ingest/ndjson.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "util/buf.h"

#define RBUF_SIZE (64 * 1024)

struct capid_ndjson {
    int fd;
    FILE *f;
    char *rbuf; /* RBUF_SIZE bytes; a line that fits is handed out in place */
    size_t rpos, rlen;
    uint64_t base; /* file offset of rbuf[0] */
    bool eof, done, bom_pending;
    size_t line;
    size_t max_line;
    /* A line that straddles refills is assembled here. */
    struct capid_buf part;
    bool in_line, too_long;
    uint64_t line_off;
};

static int nd_open(struct capid_ndjson **out, int fd, FILE *f, size_t max_line,
                   struct capid_perr *err)
{
    struct capid_ndjson *n = calloc(1, sizeof(*n));
    if (!n || !(n->rbuf = malloc(RBUF_SIZE))) {
        free(n);
        capid_perr_set(err, 0, "cannot allocate ndjson reader");
        return CAPID_ENOMEM;
    }
    n->fd = fd;
    n->f = f;
    n->max_line = max_line ? max_line : CAPID_NDJSON_MAX_LINE_DEFAULT;
    capid_buf_init(&n->part, n->max_line + 1); /* + the CR a CRLF line may carry */
    off_t pos = f ? ftello(f) : lseek(fd, 0, SEEK_CUR);
    n->base = pos > 0 ? (uint64_t)pos : 0;
    n->bom_pending = n->base == 0;
    n->line = 1;
    *out = n;
    return CAPID_OK;
}

int capid_ndjson_open_fd(struct capid_ndjson **n, int fd, size_t max_line, struct capid_perr *err)
{
    return nd_open(n, fd, NULL, max_line, err);
}

int capid_ndjson_open_file(struct capid_ndjson **n, FILE *f, size_t max_line,
                           struct capid_perr *err)
{
    return nd_open(n, -1, f, max_line, err);
}

void capid_ndjson_free(struct capid_ndjson *n)
{
    if (!n)
        return;
    capid_buf_release(&n->part);
    free(n->rbuf);
    free(n);
}

uint64_t capid_ndjson_tell(const struct capid_ndjson *n)
{
    return n->base + n->rpos;
}

/* Reads more after rbuf[rlen], dropping consumed bytes first. 1 = data,
 * 0 = end of input, CAPID_EIO. */
static int fill(struct capid_ndjson *n)
{
    if (n->rpos == n->rlen) {
        n->base += n->rlen;
        n->rpos = n->rlen = 0;
    }
    if (n->eof)
        return 0;
    ssize_t r;
    if (n->f) {
        r = (ssize_t)fread(n->rbuf + n->rlen, 1, RBUF_SIZE - n->rlen, n->f);
        if (r == 0 && ferror(n->f))
            r = -1;
    } else {
        do
            r = read(n->fd, n->rbuf + n->rlen, RBUF_SIZE - n->rlen);
        while (r < 0 && errno == EINTR);
    }
    if (r < 0)
        return CAPID_EIO;
    if (r == 0)
        n->eof = true;
    n->rlen += (size_t)r;
    return r > 0;
}

static void part_add(struct capid_ndjson *n, const char *p, size_t len)
{
    if (!n->too_long && capid_buf_append(&n->part, p, len) != CAPID_OK) {
        n->too_long = true;
        capid_buf_reset(&n->part);
    }
}

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

/* Hands out the line s[0..len) (len excludes the LF) that ends at rbuf[rpos]. */
static int emit(struct capid_ndjson *n, char *s, size_t len, struct capid_ndjson_line *ln,
                struct capid_perr *err)
{
    ln->line = n->line;
    ln->offset = n->line_off;
    ln->end_offset = n->base + n->rpos;
    n->in_line = false;
    bool too_long = n->too_long;
    n->too_long = false;
    if (len && s[len - 1] == '\r')
        len--;
    if (too_long || len > n->max_line) {
        ln->s = NULL;
        ln->len = 0;
        capid_perr_set(err, (size_t)ln->offset, "line %zu: line over %zu bytes", n->line,
                       n->max_line);
        if (err) {
            err->line = n->line;
            err->column = 0;
        }
        return CAPID_ETOOBIG;
    }
    s[len] = '\0';
    ln->s = s;
    ln->len = len;
    return blank(s, len) ? 0 : 1;
}

/* Hands out the line assembled in `part` (or its error, when it was too long). */
static int emit_part(struct capid_ndjson *n, struct capid_ndjson_line *ln, struct capid_perr *err)
{
    if (n->too_long || !n->part.data)
        return emit(n, n->rbuf, 0, ln, err); /* the bytes are gone; only the error */
    return emit(n, n->part.data, n->part.len, ln, err);
}

int capid_ndjson_next(struct capid_ndjson *n, struct capid_ndjson_line *ln, struct capid_perr *err)
{
    memset(ln, 0, sizeof(*ln));
    if (n->bom_pending) {
        while (n->rlen - n->rpos < 3 && fill(n) > 0)
            ;
        if (n->rlen - n->rpos >= 3 && memcmp(n->rbuf + n->rpos, "\xEF\xBB\xBF", 3) == 0)
            n->rpos += 3;
        n->bom_pending = false;
    }
    for (;;) {
        ln->line = ln->next_line = n->line;
        ln->offset = ln->end_offset = n->base + n->rpos;
        if (n->done)
            return 0;
        if (n->rpos == n->rlen) {
            int rc = fill(n);
            if (rc == CAPID_EIO) {
                n->done = true;
                capid_perr_set(err, (size_t)(n->base + n->rpos), "line %zu: cannot read input: %s",
                               n->line, strerror(errno));
                if (err)
                    err->line = n->line;
                return CAPID_EIO;
            }
            if (rc == 0) {
                n->done = true;
                if (!n->in_line)
                    return 0;
                /* A last line without LF: it was gathered in `part`. */
                int r = emit_part(n, ln, err);
                ln->next_line = n->line;
                if (r != 0)
                    return r;
                continue;
            }
        }
        char *p = n->rbuf + n->rpos, *e = n->rbuf + n->rlen;
        if (!n->in_line) {
            n->in_line = true;
            n->line_off = n->base + n->rpos;
            capid_buf_reset(&n->part);
        }
        char *nl = memchr(p, '\n', (size_t)(e - p));
        if (!nl) {
            part_add(n, p, (size_t)(e - p));
            n->rpos = n->rlen;
            continue;
        }
        n->rpos = (size_t)(nl + 1 - n->rbuf);
        int r;
        if (n->part.len || n->too_long) {
            part_add(n, p, (size_t)(nl - p));
            r = emit_part(n, ln, err);
        } else {
            r = emit(n, p, (size_t)(nl - p), ln, err); /* in place: the LF becomes the NUL */
        }
        n->line++;
        ln->next_line = n->line;
        if (r != 0)
            return r;
    }
}

int capid_ndjson_seek(struct capid_ndjson *n, uint64_t offset, size_t line, struct capid_perr *err)
{
    off_t pos = (off_t)offset;
    int rc = n->f ? fseeko(n->f, pos, SEEK_SET) : (lseek(n->fd, pos, SEEK_SET) < 0 ? -1 : 0);
    if (rc != 0 || pos < 0) {
        capid_perr_set(err, (size_t)offset, "cannot seek to offset %llu: %s",
                       (unsigned long long)offset, strerror(errno));
        return CAPID_EIO;
    }
    if (n->f)
        clearerr(n->f);
    n->base = offset;
    n->rpos = n->rlen = 0;
    n->eof = n->done = false;
    n->bom_pending = offset == 0;
    n->line = line ? line : 1;
    n->in_line = n->too_long = false;
    capid_buf_reset(&n->part);
    return CAPID_OK;
}
