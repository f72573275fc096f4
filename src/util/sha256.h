/* SHA-256 through OpenSSL's EVP API: the digest is fetched and a context
 * initialised once, then copied per value, which is about 3x faster than
 * one-shot SHA256() on the short inputs capid hashes (SPEC 5). One struct
 * per thread. */
#ifndef CAPID_UTIL_SHA256_H
#define CAPID_UTIL_SHA256_H

#include <stddef.h>

struct capid_sha256 {
    void *md;   /* EVP_MD * */
    void *ctx;  /* EVP_MD_CTX * */
    void *init; /* EVP_MD_CTX *, initialised once and copied to ctx per value */
};

/* Returns CAPID_OK or CAPID_ENOMEM. _release works on a half-built struct. */
int capid_sha256_init(struct capid_sha256 *h);
void capid_sha256_release(struct capid_sha256 *h);
/* Writes 64 lowercase hex characters and a NUL to out. */
void capid_sha256_hex(struct capid_sha256 *h, const void *data, size_t len, char out[65]);

/* A memo of the digests of short values that repeat from event to event
 * (country, state, city, zip, gender): one EVP digest costs 120-170 ns
 * (copy of the initialised context, which frees, allocates and cleanses, then
 * update and final), a hit about a tenth of that. Direct-mapped; a slot keeps
 * the value's bytes and a hit compares them all, so a hit is exactly the
 * digest of the same bytes. One per thread, like struct capid_sha256. */
#define CAPID_SHA256_MEMO_SLOTS 512 /* a power of two */
#define CAPID_SHA256_MEMO_MAX   46  /* longer values are hashed, never kept */

struct capid_sha256_memo_slot {
    unsigned char len; /* value length + 1; 0 = empty slot */
    unsigned char key[CAPID_SHA256_MEMO_MAX + 1];
    unsigned char md[32];
};

struct capid_sha256_memo {
    struct capid_sha256_memo_slot slot[CAPID_SHA256_MEMO_SLOTS];
};

/* A new, empty memo (calloc); NULL when out of memory. _free(NULL) is a no-op. */
struct capid_sha256_memo *capid_sha256_memo_new(void);
void capid_sha256_memo_free(struct capid_sha256_memo *m);
/* capid_sha256_hex through memo: the digest of data is taken from its slot
 * when the slot holds the same bytes, else computed and stored there
 * (replacing what the slot held). Empty values, values over
 * CAPID_SHA256_MEMO_MAX bytes and a NULL memo go straight to capid_sha256_hex. */
void capid_sha256_hex_memo(struct capid_sha256 *h, struct capid_sha256_memo *memo, const void *data,
                           size_t len, char out[65]);

#endif
