/* capid's JSON parser for events: one pass that enforces the size cap, strict
 * RFC 8259 syntax, strict UTF-8, the nesting limit and the absence of NUL,
 * and builds the same cJSON tree cJSON_ParseWithLength would (node links,
 * types, keys, valuestring, valueint, valuedouble), so the tree is read with
 * cJSON accessors and freed with cJSON_Delete. One addition: string, object
 * and array nodes, whose valueint cJSON leaves 0, carry key and string
 * lengths there (event.h, capid_jkey_len / capid_jstr_len).
 *
 * Stricter than cJSON (all invalid_json): raw control characters in strings,
 * white space other than space, tab, CR and LF, leading zeros, '+1', '.5',
 * '1.', a UTF-8 BOM, invalid UTF-8 anywhere, lone UTF-16 surrogates, raw NUL
 * and \u0000, and numbers whose magnitude overflows a double (1e400: cJSON
 * would store inf, which no JSON writer can render back). Numbers are
 * correctly rounded (exact fast path, else strtod in the C locale); numbers
 * that underflow become 0 or a subnormal, as with strtod. */
#ifndef CAPID_EVENT_JSON_H
#define CAPID_EVENT_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "event/event.h"
#include "util/err.h"

struct capid_arena; /* event/event_int.h */

/* Parses json[0..len) (need not be NUL-terminated) as exactly one JSON value
 * surrounded by optional JSON white space. lim may be NULL (no size cap,
 * depth 32); a max_depth <= 0 also means 32.
 *
 * Memory: with arena == NULL every node and string comes from malloc(), and
 * the tree is freed with cJSON_Delete (cJSON's default hooks or event.c's).
 * With an arena, nodes and strings are bump-allocated from it; whatever does
 * not fit comes from malloc() and sets arena->overflowed (see event_int.h).
 *
 * On success stores the root in *root and returns CAPID_EV_OK. Otherwise
 * returns CAPID_EV_TOO_LARGE or CAPID_EV_INVALID_JSON, sets *root to NULL,
 * has freed whatever it allocated with malloc (arena space is left used),
 * and writes a one-line detail naming the byte offset into err (may be NULL).
 * Thread-safe. */
enum capid_event_status capid_json_parse(const char *json, size_t len,
                                         const struct capid_limits *lim, struct capid_arena *arena,
                                         cJSON **root, struct capid_perr *err);

#endif
