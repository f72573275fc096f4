#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *capid_strerror(int err)
{
    switch (err) {
    case CAPID_OK:
        return "success";
    case CAPID_ENOMEM:
        return "out of memory";
    case CAPID_EINVAL:
        return "invalid argument";
    case CAPID_ETOOBIG:
        return "over the size limit";
    case CAPID_EIO:
        return "input/output error";
    case CAPID_ENOTFOUND:
        return "not found";
    case CAPID_EBUSY:
        return "busy";
    case CAPID_EDUP:
        return "duplicate";
    case CAPID_EPARSE:
        return "syntax error";
    case CAPID_ECONFIG:
        return "invalid configuration";
    case CAPID_ESTATE:
        return "invalid state";
    }
    return "unknown error";
}

void capid_perr_set(struct capid_perr *e, size_t offset, const char *fmt, ...)
{
    if (!e)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->buf, sizeof(e->buf), fmt, ap);
    va_end(ap);
    e->msg = e->buf;
    e->offset = offset;
}
