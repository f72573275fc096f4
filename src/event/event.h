/* A Commanders Act event (serverside v2, SPEC 2): parsed, validated, with
 * typed accessors. Parsing is one pass (json.c) that enforces the size cap,
 * strict JSON syntax, UTF-8 validity, the nesting limit and the absence of
 * NUL while it builds the cJSON tree. */
#ifndef CAPID_EVENT_EVENT_H
#define CAPID_EVENT_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "util/buf.h"
#include "util/sha256.h"
#include "util/err.h"

struct capid_limits {
    size_t max_event_bytes; /* SPEC 2: 32 KiB */
    int max_depth;          /* SPEC 2: 32 */
};
#define CAPID_LIMITS_DEFAULT                                                                       \
    {                                                                                              \
        32768, 32                                                                                  \
    }

/* Why an event was refused before mapping (SPEC 8 names via capid_event_status_reason). */
enum capid_event_status {
    CAPID_EV_OK = 0,
    CAPID_EV_TOO_LARGE,     /* over max_event_bytes */
    CAPID_EV_INVALID_JSON,  /* syntax, invalid UTF-8, NUL, nesting too deep */
    CAPID_EV_INVALID_EVENT, /* valid JSON, not a valid event (with detail) */
};

struct capid_event {
    cJSON *root;
    /* Cached sub-objects (NULL when absent or not objects). */
    const cJSON *user, *context, *device, *page, *fb_int, *fb_partner, *items;
    int64_t event_time;        /* seconds; the receive time when the event has none */
    bool has_time;             /* context.event_timestamp was present */
    char auto_id[65];          /* deterministic id, computed on first use ("" until then) */
    struct capid_arena *arena; /* cJSON nodes of a parsed event (event.c) */
};

/* Parses len bytes (capid_json_parse, event/json.h). On success fills ev
 * (release with capid_event_release) and returns CAPID_EV_OK; otherwise
 * returns the status and writes a one-line, human-readable detail with the
 * byte offset into err. `now` (epoch seconds) stands in for an absent
 * timestamp. Thread-safe. */
enum capid_event_status capid_event_parse(struct capid_event *ev, const char *json, size_t len,
                                          const struct capid_limits *lim, int64_t now,
                                          struct capid_perr *err);
/* Validates an already-built tree (takes ownership of root, even on error). */
enum capid_event_status capid_event_adopt(struct capid_event *ev, cJSON *root, int64_t now,
                                          struct capid_perr *err);
void capid_event_release(struct capid_event *ev);

/* Pre-scan only, for callers that parse with cJSON themselves: size, UTF-8,
 * depth, NUL (\u0000); no syntax check. Returns CAPID_EV_OK or a status.
 * capid itself parses with capid_event_parse; this stays so that
 * tools/bench-parse keeps measuring the path it replaced (docs/BENCHMARKS.md). */
enum capid_event_status capid_json_prescan(const char *json, size_t len,
                                           const struct capid_limits *lim, struct capid_perr *err);

/* Byte lengths the parser (capid_json_parse_event) leaves in the nodes it
 * builds, where cJSON keeps none and leaves valueint unused (0): in a
 * string, object or array node, valueint holds the key's length + 1 in bits
 * 16-30 and, for a string, the value's length + 1 in bits 0-15; 0 = not
 * known (nodes built by cJSON itself, inputs of 32,767 bytes or more).
 * Measured: strlen of keys and strings was ~4% of `capid map`. The lengths
 * stay right as long as no key or string of a parsed tree is changed in
 * place (capid never does; code that did would have to zero valueint). */
/* strlen(c->string) of a member c. */
static inline size_t capid_jkey_len(const cJSON *c)
{
    unsigned t = (unsigned)c->type & 0xff, k = 0;
    if (t == cJSON_String || t == cJSON_Object || t == cJSON_Array)
        k = (unsigned)c->valueint >> 16 & 0x7fff;
    return k ? k - 1 : strlen(c->string);
}

/* strlen(c->valuestring) of a string node c. */
static inline size_t capid_jstr_len(const cJSON *c)
{
    unsigned v = (unsigned)c->valueint & 0xffff;
    return v ? v - 1 : strlen(c->valuestring);
}

/* Typed accessors (NULL-safe: a NULL object yields "absent"). */
const cJSON *capid_jget(const cJSON *obj, const char *key);
const cJSON *capid_jpath(const cJSON *obj, const char *dotted); /* "page.location.href" */
/* A string (as is), or a number rendered as text; false for other types. */
bool capid_jtext(const cJSON *v, const char **s, size_t *len, char numbuf[32]);
/* A number, or a string that parses completely as a decimal number (SPEC 2). */
bool capid_jnum(const cJSON *v, double *out);
/* Parses a timestamp (epoch ms/s number or string, ISO-8601) to seconds. */
bool capid_parse_timestamp(const cJSON *v, int64_t *sec);
/* Compact JSON of any value with object keys in input order. */
int capid_json_write(struct capid_buf *b, const cJSON *v);
/* The deterministic id (hex SHA-256 of the canonical bytes: compact JSON with
 * object keys sorted bytewise), cached in ev->auto_id. */
const char *capid_event_auto_id(struct capid_event *ev, struct capid_sha256 *h,
                                struct capid_buf *scratch);

#endif
