#include "ingest/batch.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_CAP 256 /* config caps server.max_depth at 256 */

void capid_batch_init(struct capid_batch *b)
{
    memset(b, 0, sizeof(*b));
}

void capid_batch_release(struct capid_batch *b)
{
    free(b->ev);
    memset(b, 0, sizeof(*b));
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && is_ws(s[i]))
        i++;
    return i;
}

/* "'x'" for a printable ASCII byte, "byte 0xNN" otherwise. */
static const char *show(char c, char out[16])
{
    unsigned char u = (unsigned char)c;
    if (u > 0x20 && u < 0x7f)
        snprintf(out, 16, "'%c'", c);
    else
        snprintf(out, 16, "byte 0x%02x", u);
    return out;
}

static int push(struct capid_batch *b, const struct capid_batch_limits *lim, size_t off, size_t len,
                size_t line, struct capid_perr *err)
{
    if (b->n >= lim->max_events) {
        capid_perr_set(err, off, "more than %zu events in one request (the limit)",
                       lim->max_events);
        if (err)
            err->line = line;
        return CAPID_ETOOBIG;
    }
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        void *p = realloc(b->ev, cap * sizeof(*b->ev));
        if (!p)
            return CAPID_ENOMEM;
        b->ev = p;
        b->cap = cap;
    }
    b->ev[b->n++] = (struct capid_batch_event){off, len, line};
    return CAPID_OK;
}

#define NO_END ((size_t)-1)

/* Skips the string whose opening quote is at s[i]; returns the offset just
 * past its closing quote, or NO_END when it never ends. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        const char *q = memchr(s + i, '"', len - i);
        if (!q)
            return NO_END;
        /* The quote closes the string unless an odd run of backslashes precedes it. */
        size_t j = (size_t)(q - s), k = j;
        while (k > i && s[k - 1] == '\\')
            k--;
        if ((j - k) % 2 == 0)
            return j + 1;
        i = j;
    }
    return NO_END;
}

/* Finds the end of the value starting at s[i] (not white space). Containers
 * are followed by their brackets with a stack of at most max_depth levels;
 * a scalar runs to the next delimiter. Stores the end offset in *end. */
static int skip_value(const char *s, size_t len, size_t i, int max_depth, size_t *end,
                      struct capid_perr *err)
{
    char stack[DEPTH_CAP];
    int depth = 0;
    char sh[16];
    if (max_depth <= 0)
        max_depth = 32;
    if (max_depth > DEPTH_CAP)
        max_depth = DEPTH_CAP;
    if (s[i] != '{' && s[i] != '[') {
        size_t start = i;
        if (s[i] == '"') {
            i = skip_string(s, len, i);
            if (i == NO_END)
                goto unterminated;
        } else {
            while (i < len && !is_ws(s[i]) && !memchr(",]}{[\":", s[i], 7))
                i++;
            if (i == start) {
                capid_perr_set(err, i, "expected an event at byte %zu, found %s", i,
                               show(s[i], sh));
                return CAPID_EPARSE;
            }
        }
        *end = i;
        return CAPID_OK;
    }
    size_t open = i;
    while (i < len) {
        char c = s[i];
        if (c == '"') {
            i = skip_string(s, len, i);
            if (i == NO_END)
                goto unterminated;
            continue;
        }
        if (c == '{' || c == '[') {
            if (depth == max_depth) {
                capid_perr_set(err, i, "nesting deeper than %d levels at byte %zu", max_depth, i);
                return CAPID_EPARSE;
            }
            stack[depth++] = c;
        } else if (c == '}' || c == ']') {
            if (stack[depth - 1] != (c == '}' ? '{' : '[')) {
                capid_perr_set(err, i, "unexpected '%c' at byte %zu (expected '%c')", c, i,
                               stack[depth - 1] == '{' ? '}' : ']');
                return CAPID_EPARSE;
            }
            if (--depth == 0) {
                *end = i + 1;
                return CAPID_OK;
            }
        }
        i++;
    }
    capid_perr_set(err, len,
                   "the body ends inside an event: '%c' opened at byte %zu is not "
                   "closed (truncated?)",
                   stack[0], open);
    return CAPID_EPARSE;
unterminated:
    capid_perr_set(err, len, "the body ends inside a string (truncated?) at byte %zu", len);
    return CAPID_EPARSE;
}

/* {"batch":[...]} or [...]. */
static int split_json(struct capid_batch *b, const char *s, size_t len,
                      const struct capid_batch_limits *lim, struct capid_perr *err)
{
    char sh[16];
    bool wrapped = false;
    size_t i = skip_ws(s, len, 0);
    if (s[i] == '{') {
        static const char key[] = "\"batch\"";
        size_t k = skip_ws(s, len, i + 1);
        if (len - k < sizeof(key) - 1 || memcmp(s + k, key, sizeof(key) - 1) != 0) {
            capid_perr_set(err, k,
                           "a batch is {\"batch\":[...]}, a JSON array or NDJSON: the object at "
                           "byte %zu does not start with the key \"batch\" (post one event to "
                           "/events)",
                           i);
            return CAPID_EPARSE;
        }
        k = skip_ws(s, len, k + sizeof(key) - 1);
        if (k < len && s[k] == ':')
            k = skip_ws(s, len, k + 1);
        if (k >= len || s[k] != '[') {
            capid_perr_set(err, k, "expected \"batch\": followed by an array at byte %zu", k);
            return CAPID_EPARSE;
        }
        i = k;
        wrapped = true;
    } else if (s[i] != '[') {
        capid_perr_set(err, i,
                       "a batch is {\"batch\":[...]}, a JSON array or NDJSON (Content-Type: "
                       "application/x-ndjson); found %s at byte %zu",
                       show(s[i], sh), i);
        return CAPID_EPARSE;
    }
    /* s[i] == '[': the events. */
    i = skip_ws(s, len, i + 1);
    if (i < len && s[i] == ']') {
        i++;
    } else {
        for (;;) {
            size_t end;
            if (i >= len)
                goto truncated;
            if (s[i] == ']' || s[i] == ',') {
                capid_perr_set(err, i, "expected an event at byte %zu, found '%c'%s", i, s[i],
                               b->n ? " (a trailing or doubled comma?)" : "");
                return CAPID_EPARSE;
            }
            int rc = skip_value(s, len, i, lim->max_depth, &end, err);
            if (rc != CAPID_OK)
                return rc;
            rc = push(b, lim, i, end - i, 0, err);
            if (rc != CAPID_OK)
                return rc;
            i = skip_ws(s, len, end);
            if (i >= len)
                goto truncated;
            if (s[i] == ']') {
                i++;
                break;
            }
            if (s[i] != ',') {
                capid_perr_set(err, i, "expected ',' or ']' after event %zu at byte %zu, found %s",
                               b->n - 1, i, show(s[i], sh));
                return CAPID_EPARSE;
            }
            i = skip_ws(s, len, i + 1);
        }
    }
    i = skip_ws(s, len, i);
    if (wrapped) {
        if (i >= len)
            goto truncated;
        if (s[i] != '}') {
            capid_perr_set(err, i,
                           "expected '}' after the \"batch\" array at byte %zu, found %s (the "
                           "batch object takes no other key)",
                           i, show(s[i], sh));
            return CAPID_EPARSE;
        }
        i = skip_ws(s, len, i + 1);
    }
    if (i < len) {
        capid_perr_set(err, i, "unexpected %s after the batch at byte %zu", show(s[i], sh), i);
        return CAPID_EPARSE;
    }
    return CAPID_OK;
truncated:
    capid_perr_set(err, len, "the body ends before the batch does (truncated?) at byte %zu", len);
    return CAPID_EPARSE;
}

/* One event per line; LF ends a line, a CR before it is dropped, lines of
 * white space only are skipped, a UTF-8 BOM at the start is ignored. */
static int split_ndjson(struct capid_batch *b, const char *s, size_t len,
                        const struct capid_batch_limits *lim, struct capid_perr *err)
{
    size_t i = 0, line = 1;
    if (len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3))
        i = 3;
    while (i < len) {
        const char *nl = memchr(s + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - s) : len, stop = end;
        if (stop > i && s[stop - 1] == '\r')
            stop--;
        if (skip_ws(s, stop, i) < stop) {
            int rc = push(b, lim, i, stop - i, line, err);
            if (rc != CAPID_OK)
                return rc;
        }
        i = end + 1;
        line++;
    }
    return CAPID_OK;
}

int capid_batch_split(struct capid_batch *b, const char *body, size_t len,
                      enum capid_batch_format f, const struct capid_batch_limits *lim,
                      struct capid_perr *err)
{
    b->n = 0;
    if (err)
        err->line = 0;
    size_t start = f == CAPID_BATCH_NDJSON && len >= 3 && !memcmp(body, "\xEF\xBB\xBF", 3) ? 3 : 0;
    if (skip_ws(body, len, start) == len) {
        capid_perr_set(err, 0, "the body is empty: expected %s",
                       f == CAPID_BATCH_ONE ? "one event (a JSON object)"
                                            : "{\"batch\":[...]}, a JSON array or NDJSON");
        return CAPID_EPARSE;
    }
    switch (f) {
    case CAPID_BATCH_ONE:
        return push(b, lim, 0, len, 0, err);
    case CAPID_BATCH_JSON:
        return split_json(b, body, len, lim, err);
    case CAPID_BATCH_NDJSON:
        return split_ndjson(b, body, len, lim, err);
    }
    return CAPID_EINVAL;
}
