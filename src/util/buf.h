/* Growable byte buffer with a hard maximum (curl's dynbuf idea): appends that
 * would pass `max` fail with CAPID_ETOOBIG and leave the buffer unchanged.
 * The content is always NUL-terminated (data may be NULL while len == 0). */
#ifndef CAPID_UTIL_BUF_H
#define CAPID_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

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
int capid_buf_append(struct capid_buf *b, const void *p, size_t n);
int capid_buf_puts(struct capid_buf *b, const char *s);
int capid_buf_putc(struct capid_buf *b, char c);
int capid_buf_printf(struct capid_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int capid_buf_vprintf(struct capid_buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* JSON writers: a quoted, escaped string; an integer; a number (shortest
 * round-trip form, integers without a fraction). */
int capid_buf_json_str(struct capid_buf *b, const char *s, size_t n);
int capid_buf_json_int(struct capid_buf *b, int64_t v);
int capid_buf_json_num(struct capid_buf *b, double v);
/* Lowercase hex of n bytes. */
int capid_buf_hex(struct capid_buf *b, const unsigned char *p, size_t n);
/* Hands the heap block to the caller (NUL-terminated, may be NULL if empty). */
char *capid_buf_detach(struct capid_buf *b, size_t *len);

#endif
