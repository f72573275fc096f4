/* capid error codes: one negative enum shared by every module. */
#ifndef CAPID_UTIL_ERR_H
#define CAPID_UTIL_ERR_H

#include <stddef.h>

enum capid_err {
    CAPID_OK = 0,
    CAPID_ENOMEM = -1,    /* allocation failed */
    CAPID_EINVAL = -2,    /* invalid argument or input */
    CAPID_ETOOBIG = -3,   /* input over a configured limit */
    CAPID_EIO = -4,       /* read/write/fsync failed */
    CAPID_ENOTFOUND = -5, /* no such item */
    CAPID_EBUSY = -6,     /* locked or temporarily unavailable */
    CAPID_EDUP = -7,      /* duplicate (already present) */
    CAPID_EPARSE = -8,    /* syntax error in JSON, YAML, CSV */
    CAPID_ECONFIG = -9,   /* invalid configuration */
    CAPID_ESTATE = -10,   /* wrong state for this operation */
};

/* Static, lowercase description of a capid_err; never NULL. */
const char *capid_strerror(int err);

/* Where a parser stopped and why: msg is static or points into buf. */
struct capid_perr {
    const char *msg;
    size_t line;   /* 1-based, 0 = unknown */
    size_t column; /* 1-based, 0 = unknown */
    size_t offset; /* byte offset, (size_t)-1 = unknown */
    char buf[512];
};

/* An empty report, without zeroing buf: hot loops declare one per event, and
 * `= {0}` cleared 512 bytes each time (1.7% of `capid enqueue`'s mapping
 * thread in perf). */
static inline void capid_perr_clear(struct capid_perr *e)
{
    e->msg = NULL;
    e->line = e->column = 0;
    e->offset = (size_t)-1;
    e->buf[0] = '\0';
}

void capid_perr_set(struct capid_perr *e, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
