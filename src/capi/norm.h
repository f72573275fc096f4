/* Normalisation of customer information before hashing (SPEC 5): Meta's
 * parameter builder rules, with capid's documented deviations (D). Pure
 * functions on the hot path: no I/O (except the one-time table load, see
 * geo.h), no allocation once the output buffer has grown. */
#ifndef CAPID_CAPI_NORM_H
#define CAPID_CAPI_NORM_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"

/* The hashed user_data keys (SPEC 4.3), in CAPI order. */
enum capid_ukey {
    CAPID_UK_EM,
    CAPID_UK_PH,
    CAPID_UK_FN,
    CAPID_UK_LN,
    CAPID_UK_GE,
    CAPID_UK_DB,
    CAPID_UK_CT,
    CAPID_UK_ST,
    CAPID_UK_ZP,
    CAPID_UK_COUNTRY,
    CAPID_UK_EXTERNAL_ID,
    CAPID_UK__COUNT
};

/* CAPI name of k ("em", "ph", ..., "country", "external_id"); NULL if out of
 * range. */
const char *capid_ukey_name(enum capid_ukey k);
/* The key named name[0..len), or -1. */
int capid_ukey_from_name(const char *name, size_t len);

struct capid_norm_ctx {
    const char *country; /* the event's normalised country ("us") or NULL */
    int max_year;        /* latest valid birth year: the gateway clock's year + 1 */
};

/* Normalises one raw value for key k (SPEC 5). `in` is len bytes of valid
 * UTF-8 and may contain NUL. out is reset, then receives the normalised value
 * (NUL-terminated; out->len counts the bytes, which may include NUL).
 * Returns 1 if the value is kept, 0 if it is dropped (out is then empty).
 *
 * *hashed is set true when the trimmed value is already 64 hex characters: it
 * is then passed through lowercased and must NOT be hashed again; otherwise
 * false. 32 hex characters are not a digest here (they are normalised by the
 * field rule).
 *
 * ctx may be NULL (no country; max_year then defaults to the current UTC
 * year + 1 — callers on the hot path pass it). `st` and `country` use the
 * geo tables and load them on first use (capid_geo_init(NULL, NULL)); call
 * capid_geo_init at startup to get its error instead.
 *
 * Allocates only to grow out (to about the input's length). If out has a
 * maximum below the trimmed input's length, the value may be dropped; it is
 * never truncated. Thread-safe (no shared mutable state). */
int capid_norm_value(enum capid_ukey k, const char *in, size_t len,
                     const struct capid_norm_ctx *ctx, struct capid_buf *out, bool *hashed);

/* True iff s[0..len) is exactly 64 ASCII hex digits (either case). */
bool capid_is_hex64(const char *s, size_t len);

#endif
