/* SHA-256 through OpenSSL's EVP API: the digest is fetched and a context
 * initialised once, then copied per value, which is about 3x faster than
 * one-shot SHA256() on the short inputs capid hashes (SPEC 5). One struct
 * per thread. */
#ifndef CAPID_UTIL_SHA256_H
#define CAPID_UTIL_SHA256_H

#include <stdbool.h>
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
 * (country, state, city, zip, gender): one EVP digest costs 120-170 ns (a
 * copy of the initialised context, which frees, allocates and cleanses, then
 * update and final), a hit a fraction of that. A digest is remembered under a
 * key the caller chooses: a tag and up to CAPID_SHA256_MEMO_MAX bytes, of
 * which the hashed value must be a function (the value itself, or the raw
 * input it is normalised from, the tag telling the rule apart). Direct-mapped:
 * a slot keeps its key's bytes and a hit compares them all. One per thread,
 * like struct capid_sha256. */
#define CAPID_SHA256_MEMO_SLOTS 512 /* a power of two */
#define CAPID_SHA256_MEMO_MAX   46  /* longer keys are never kept */

struct capid_sha256_memo_slot {
    unsigned char len; /* key length + 1; 0 = empty slot */
    unsigned char tag;
    unsigned char key[CAPID_SHA256_MEMO_MAX];
    unsigned char md[32];
};

struct capid_sha256_memo {
    struct capid_sha256_memo_slot slot[CAPID_SHA256_MEMO_SLOTS];
};

/* A new, empty memo (calloc); NULL when out of memory. _free(NULL) is a no-op. */
struct capid_sha256_memo *capid_sha256_memo_new(void);
void capid_sha256_memo_free(struct capid_sha256_memo *m);
/* Whether the memo holds a digest under (tag, key[0..len)); if so writes its
 * 64 lowercase hex characters and a NUL to out. False for a NULL memo and
 * for keys that are empty or over CAPID_SHA256_MEMO_MAX bytes. */
bool capid_sha256_memo_get(const struct capid_sha256_memo *memo, unsigned char tag, const void *key,
                           size_t len, char out[65]);
/* capid_sha256_hex of data[0..dlen) into out, also remembered under (tag,
 * key[0..klen)) in the key's slot (replacing what it held) when the key can
 * be kept (see _get). */
void capid_sha256_memo_put(struct capid_sha256 *h, struct capid_sha256_memo *memo,
                           unsigned char tag, const void *key, size_t klen, const void *data,
                           size_t dlen, char out[65]);

#endif
