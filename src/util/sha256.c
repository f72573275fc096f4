#include "util/sha256.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

int capid_sha256_init(struct capid_sha256 *h)
{
    h->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    h->ctx = EVP_MD_CTX_new();
    h->init = EVP_MD_CTX_new();
    if (!h->md || !h->ctx || !h->init || EVP_DigestInit_ex2(h->init, h->md, NULL) != 1) {
        capid_sha256_release(h);
        return CAPID_ENOMEM;
    }
    return CAPID_OK;
}

void capid_sha256_release(struct capid_sha256 *h)
{
    EVP_MD_CTX_free(h->init);
    EVP_MD_CTX_free(h->ctx);
    EVP_MD_free(h->md);
    h->init = NULL;
    h->ctx = NULL;
    h->md = NULL;
}

/* Lowercase hex of the 32 bytes of md into out[0..64). */
static void hex32(const unsigned char md[32], char *out)
{
#if defined(__SSE2__)
    const __m128i low = _mm_set1_epi8(0x0f), nine = _mm_set1_epi8(9);
    const __m128i zero = _mm_set1_epi8('0'), gap = _mm_set1_epi8('a' - '0' - 10);
    for (int i = 0; i < 2; i++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(md + 16 * i));
        __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), low), lo = _mm_and_si128(v, low);
        __m128i a = _mm_unpacklo_epi8(hi, lo), b = _mm_unpackhi_epi8(hi, lo);
        a = _mm_add_epi8(_mm_add_epi8(a, zero), _mm_and_si128(_mm_cmpgt_epi8(a, nine), gap));
        b = _mm_add_epi8(_mm_add_epi8(b, zero), _mm_and_si128(_mm_cmpgt_epi8(b, nine), gap));
        _mm_storeu_si128((__m128i *)(void *)(out + 32 * i), a);
        _mm_storeu_si128((__m128i *)(void *)(out + 32 * i + 16), b);
    }
#else
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
#endif
}

/* The 32 bytes of the SHA-256 of data. */
static void digest(struct capid_sha256 *h, const void *data, size_t len, unsigned char md[32])
{
    unsigned int mdlen = 0;
    /* Copying a context initialised once is cheaper than initialising one
     * per value (measured: ~90 instructions a digest). */
    if (EVP_MD_CTX_copy_ex(h->ctx, h->init) != 1 || EVP_DigestUpdate(h->ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(h->ctx, md, &mdlen) != 1 || mdlen != 32)
        abort(); /* cannot fail with a fetched SHA-256 and a live context */
}

void capid_sha256_hex(struct capid_sha256 *h, const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    digest(h, data, len, md);
    hex32(md, out);
    out[64] = '\0';
}

struct capid_sha256_memo *capid_sha256_memo_new(void)
{
    return calloc(1, sizeof(struct capid_sha256_memo));
}

void capid_sha256_memo_free(struct capid_sha256_memo *m)
{
    free(m);
}

/* The slot of (tag, p[0..n)), 0 < n <= CAPID_SHA256_MEMO_MAX: every byte
 * mixed in, a word at a time (the last word overlapping), then the length. */
static inline size_t memo_slot(unsigned char tag, const unsigned char *p, size_t n)
{
    const uint64_t k = UINT64_C(0x9e3779b97f4a7c15);
    uint64_t h = n | (uint64_t)tag << 8, w;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&w, p + i, 8);
            h = (h ^ w) * k;
        }
        memcpy(&w, p + n - 8, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        w = (uint64_t)a << 32 | b;
    } else {
        w = (uint64_t)p[0] << 16 | (uint64_t)p[n / 2] << 8 | p[n - 1];
    }
    h = (h ^ w) * k;
    h ^= h >> 29;
    return (size_t)(h * k >> 32) & (CAPID_SHA256_MEMO_SLOTS - 1);
}

bool capid_sha256_memo_get(const struct capid_sha256_memo *memo, unsigned char tag, const void *key,
                           size_t len, char out[65])
{
    if (!memo || !len || len > CAPID_SHA256_MEMO_MAX)
        return false;
    const struct capid_sha256_memo_slot *s = &memo->slot[memo_slot(tag, key, len)];
    if (s->len != len + 1 || s->tag != tag || memcmp(s->key, key, len) != 0)
        return false;
    hex32(s->md, out);
    out[64] = '\0';
    return true;
}

void capid_sha256_memo_put(struct capid_sha256 *h, struct capid_sha256_memo *memo,
                           unsigned char tag, const void *key, size_t klen, const void *data,
                           size_t dlen, char out[65])
{
    if (!memo || !klen || klen > CAPID_SHA256_MEMO_MAX) {
        capid_sha256_hex(h, data, dlen, out);
        return;
    }
    struct capid_sha256_memo_slot *s = &memo->slot[memo_slot(tag, key, klen)];
    digest(h, data, dlen, s->md);
    memcpy(s->key, key, klen);
    s->len = (unsigned char)(klen + 1);
    s->tag = tag;
    hex32(s->md, out);
    out[64] = '\0';
}
