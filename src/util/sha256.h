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

#endif
