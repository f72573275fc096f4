/* Country, state and currency tables for normalisation (SPEC 5) and custom
 * data validation (SPEC 4.4), loaded once from Debian's iso-codes JSON and the
 * project's alias files. Lookups are lock-free and allocation-free. */
#ifndef CAPID_CAPI_GEO_H
#define CAPID_CAPI_GEO_H

#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"
#include "util/err.h"

/* Loads ISO 3166-1 (alpha-2, alpha-3, name, common_name, official_name),
 * ISO 3166-2 (every US-* and CA-* subdivision, any type) and ISO 4217 from
 * iso-codes JSON (dir: iso_dir, else $CAPID_ISO_CODES_DIR, else
 * /usr/share/iso-codes/json), and data/country-aliases.json and
 * data/state-aliases.json (dir: $CAPID_DATA_DIR, else CAPID_DATADIR, set by
 * the Makefile to the repository's data/). ISO names win over an alias with
 * the same folded key; an alias must map to a loaded code.
 *
 * Idempotent and thread-safe: the first successful call publishes the tables
 * for the life of the process and later calls return CAPID_OK at once. On
 * failure nothing is published, err (may be NULL) names the file and the
 * problem, and the return value is CAPID_EIO (unreadable), CAPID_EPARSE (not
 * JSON), CAPID_EINVAL (unexpected content) or CAPID_ENOMEM; a later call tries
 * again. The lookups below call capid_geo_init(NULL, NULL) themselves when
 * nothing was loaded yet, at most once (a failed lazy load is not retried,
 * and then every lookup answers NULL / false). */
int capid_geo_init(const char *iso_dir, struct capid_perr *err);

/* Appends the folded form of in[0..len) (valid UTF-8) to out: simple
 * lowercase, NFKD, then only the ASCII letters a-z are kept (so combining
 * marks, digits, punctuation and spaces go). `Québec` -> `quebec`,
 * `Washington, D.C.` -> `washingtondc`. Returns CAPID_OK, or CAPID_ETOOBIG
 * when out's maximum is reached (out then holds a prefix). Thread-safe. */
int capid_geo_fold(const char *in, size_t len, struct capid_buf *out);

/* Folded (lowercase ASCII letters only) alpha-2 code, alpha-3 code, ISO name
 * or alias -> lowercase alpha-2 code (static storage, NUL-terminated), or
 * NULL. `us`, `usa`, `unitedstates`, `unitedstatesofamerica` -> "us";
 * `uk` -> "gb". */
const char *capid_geo_country(const char *folded, size_t len);

/* Folded US state / territory or Canadian province name, or an alias ->
 * 2-letter lowercase code (static, NUL-terminated), or NULL.
 * `newyork` -> "ny", `puertorico` -> "pr", `quebec` -> "qc". Codes themselves
 * are not looked up: SPEC 5 keeps any 2-letter value. */
const char *capid_geo_state(const char *folded, size_t len);

/* True iff code[0..len) is 3 uppercase ASCII letters listed in ISO 4217. */
bool capid_currency_valid(const char *code, size_t len);

#endif
