/* Micro-benchmark of SPEC 5 normalisation + SHA-256 on a realistic mix of
 * user_data values (mostly ASCII, some accents, a few digests and drops).
 * Usage: bench-norm [iterations]   (default 1,000,000 values) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "capi/geo.h"
#include "capi/norm.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/sha256.h"

static const struct {
    enum capid_ukey k;
    const char *in;
} mix[] = {
    {CAPID_UK_EM, "John.Smith@Example.com"},
    {CAPID_UK_PH, "+1 (650) 555-1212"},
    {CAPID_UK_FN, "John"},
    {CAPID_UK_LN, "Smith"},
    {CAPID_UK_GE, "Male"},
    {CAPID_UK_DB, "1990-01-31"},
    {CAPID_UK_CT, "Menlo Park"},
    {CAPID_UK_ST, "California"},
    {CAPID_UK_ZP, "94025-1234"},
    {CAPID_UK_COUNTRY, "US"},
    {CAPID_UK_EXTERNAL_ID, "CRM-0012345678"},
    {CAPID_UK_EM, "  marie.dupont+news@orange.fr "},
    {CAPID_UK_PH, "06 12 34 56 78"},
    {CAPID_UK_FN, "J\xc3\xa9r\xc3\xb4me"},
    {CAPID_UK_LN, "Garc\xc3\xad"
                  "a-M\xc3\xa1rquez"},
    {CAPID_UK_GE, "f"},
    {CAPID_UK_DB, "13/02/1970"},
    {CAPID_UK_CT, "Saint-\xc3\x89tienne"},
    {CAPID_UK_ST, "\xc3\x8e"
                  "le-de-France"},
    {CAPID_UK_ZP, "75015"},
    {CAPID_UK_COUNTRY, "France"},
    {CAPID_UK_EXTERNAL_ID, "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3"},
    {CAPID_UK_EM, "not-an-email"},
    {CAPID_UK_COUNTRY, "United Kingdom"},
    {CAPID_UK_ST, "ON"},
    {CAPID_UK_ZP, "K1A 0B1"},
};
#define NMIX (sizeof(mix) / sizeof(mix[0]))

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 1000000;
    size_t lens[NMIX];
    for (size_t i = 0; i < NMIX; i++)
        lens[i] = strlen(mix[i].in);
    struct capid_perr err = {0};
    if (capid_geo_init(NULL, &err) != CAPID_OK) {
        fprintf(stderr, "cannot load geo tables: %s\n", err.msg ? err.msg : "?");
        return 1;
    }
    struct capid_sha256 sha;
    if (capid_sha256_init(&sha) != CAPID_OK)
        return 1;
    struct capid_buf out;
    capid_buf_init(&out, 0);
    struct capid_norm_ctx ctx = {"us", 2027};
    char hex[65];
    unsigned long kept = 0, sink = 0;

    /* normalise only, then normalise + hash */
    for (int pass = 0; pass < 2; pass++) {
        double t0 = now_s();
        for (long n = 0; n < iters; n++) {
            size_t i = (size_t)n % NMIX;
            bool hashed;
            if (!capid_norm_value(mix[i].k, mix[i].in, lens[i], &ctx, &out, &hashed))
                continue;
            kept++;
            if (pass == 1 && !hashed) {
                capid_sha256_hex(&sha, out.data, out.len, hex);
                sink += (unsigned char)hex[0];
            } else {
                sink += (unsigned char)out.data[0];
            }
        }
        double dt = now_s() - t0;
        printf("%-18s %ld values in %.3f s: %.0f values/s (%.0f ns/value, %.0f events/s at 10 "
               "values/event)\n",
               pass ? "normalise+sha256" : "normalise", iters, dt, (double)iters / dt,
               dt * 1e9 / (double)iters, (double)iters / dt / 10);
    }
    fprintf(stderr, "(kept %lu, sink %lu)\n", kept, sink);
    capid_buf_release(&out);
    capid_sha256_release(&sha);
    return 0;
}
