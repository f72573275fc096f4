/* Growable byte buffer with a hard maximum (curl's dynbuf idea): appends that
 * would pass `max` fail with CAPID_ETOOBIG and leave the buffer unchanged.
 * The content is always NUL-terminated (data may be NULL while len == 0). */
#ifndef CAPID_UTIL_BUF_H
#define CAPID_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "util/err.h"

struct capid_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* 0 = no limit */
};

void capid_buf_init(struct capid_buf *b, size_t max);
void capid_buf_release(struct capid_buf *b);
static inline void capid_buf_reset(struct capid_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}
/* Returns CAPID_OK, CAPID_ETOOBIG (over max) or CAPID_ENOMEM. */
int capid_buf_grow(struct capid_buf *b, size_t need);
/* Appends when the block has room, or grows it (out of line). */
int capid_buf_append_slow(struct capid_buf *b, const void *p, size_t n);

/* Whether n more bytes and the NUL fit without growing or passing max.
 * Measured: the out-of-line appends were ~6% of `capid map`. */
static inline int capid_buf_room(const struct capid_buf *b, size_t n)
{
    return n < b->cap - b->len && (!b->max || b->len + n <= b->max);
}

static inline int capid_buf_append(struct capid_buf *b, const void *p, size_t n)
{
    if (!capid_buf_room(b, n))
        return capid_buf_append_slow(b, p, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return CAPID_OK;
}

static inline int capid_buf_puts(struct capid_buf *b, const char *s)
{
    return capid_buf_append(b, s, strlen(s));
}

static inline int capid_buf_putc(struct capid_buf *b, char c)
{
    if (!capid_buf_room(b, 1))
        return capid_buf_append_slow(b, &c, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
    return CAPID_OK;
}

int capid_buf_printf(struct capid_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int capid_buf_vprintf(struct capid_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* JSON writers: a quoted, escaped string; an integer; a number (shortest
 * round-trip form, integers without a fraction). */
int capid_buf_json_str(struct capid_buf *b, const char *s, size_t n);
/* The same string, quoted and escaped, written at o, which must have room for
 * 6 * n + 3 bytes (block copies may touch bytes past the result); returns the
 * end of what was written (no NUL). For writers that reserve room per record. */
char *capid_json_escape(char *o, const char *s, size_t n);
int capid_buf_json_int(struct capid_buf *b, int64_t v);
int capid_buf_json_num(struct capid_buf *b, double v);
/* Lowercase hex of n bytes. */
int capid_buf_hex(struct capid_buf *b, const unsigned char *p, size_t n);
/* Hands the heap block to the caller (NUL-terminated, may be NULL if empty). */
char *capid_buf_detach(struct capid_buf *b, size_t *len);

#endif
