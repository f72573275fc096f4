/* capid configuration loader. libyaml's event parser builds a small tree of
 * nodes (with line and column); the option table below then drives defaults,
 * parsing, validation and the Markdown reference (docs/CONFIG.md). */
#include "config/config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config/config_int.h"
#include "util/buf.h"
#include "util/log.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_DEPTH     16    /* YAML nesting; the schema needs 4 */
#define MAX_STRING    4096  /* longest string value */
#define MAX_NODES     65536 /* YAML values in one file: bounds the tree's memory */

/* Enums are stored through int (CAPID_OPT_ENUM), in choice order. */
_Static_assert(sizeof(enum capid_content_type) == sizeof(int), "enum size");
_Static_assert(sizeof(enum capid_extid_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum capid_sync_mode) == sizeof(int), "enum size");
_Static_assert(CAPID_CT_NONE == 2 && CAPID_EXTID_RAW == 1 && CAPID_SYNC_NORMAL == 1, "order");

/* ---- allocation: every input is capped, so out-of-memory aborts (STYLE) */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        abort();
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p)
        abort();
    return p;
}

/* ---- string checks: return NULL when valid, else why not */

static const char *check_digits_fn(char *s)
{
    if (strlen(s) > 32)
        return "is longer than 32 digits";
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return "must contain only digits";
    return NULL;
}

static bool is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static const char *check_name_fn(char *s)
{
    if (strlen(s) > 64)
        return "is longer than 64 characters";
    for (; *s; s++)
        if (!is_alnum(*s) && *s != '_' && *s != '-' && *s != '.')
            return "may contain only letters, digits, '_', '-' and '.'";
    return NULL;
}

static const char *check_env_fn(char *s)
{
    if (strlen(s) > 255)
        return "is longer than 255 characters";
    if (*s >= '0' && *s <= '9')
        return "is not an environment variable name";
    for (; *s; s++)
        if (!is_alnum(*s) && *s != '_')
            return "is not an environment variable name (letters, digits, '_')";
    return NULL;
}

/* Reads 1 to 3 digits; returns the position after them or NULL. */
static const char *digits3(const char *s)
{
    size_t n = 0;
    while (n < 4 && s[n] >= '0' && s[n] <= '9')
        n++;
    return n >= 1 && n <= 3 ? s + n : NULL;
}

static const char *check_version_fn(char *s)
{
    const char *p = s[0] == 'v' ? digits3(s + 1) : NULL;
    p = p && *p == '.' ? digits3(p + 1) : NULL;
    return p && *p == '\0' ? NULL : "is not a Graph API version like v21.0";
}

static const char *check_url_fn(char *s)
{
    const char *host;
    if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else
        return "must start with http:// or https://";
    if (*host == '\0' || *host == '/')
        return "has no host";
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '?' || *p == '#')
            return "must not contain spaces, control characters, '?' or '#'";
    /* Request URLs are built as graph_url + "/" + version: drop trailing '/'. */
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        s[--n] = '\0';
    return NULL;
}

static const char *check_listen_fn(char *s)
{
    char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return "must be HOST:PORT";
    const char *port = colon + 1;
    size_t n = strlen(port);
    if (n == 0 || n > 5 || strspn(port, "0123456789") != n || atoi(port) > 65535)
        return "has no port from 0 to 65535";
    size_t hlen = (size_t)(colon - s);
    if (s[0] == '[' ? hlen < 3 || colon[-1] != ']' : memchr(s, ':', hlen) != NULL)
        return "must be HOST:PORT (an IPv6 address in brackets)";
    return NULL;
}

static const struct capid_opt_check check_digits = {"digits only", check_digits_fn};
static const struct capid_opt_check check_name = {"letters, digits, `_`, `-`, `.`; at most 64",
                                                  check_name_fn};
static const struct capid_opt_check check_dest_ref = {"names of `destinations`", check_name_fn};
static const struct capid_opt_check check_env = {"environment variable name", check_env_fn};
static const struct capid_opt_check check_version = {"`vN.N`", check_version_fn};
static const struct capid_opt_check check_url = {"`http://` or `https://` URL", check_url_fn};
static const struct capid_opt_check check_listen = {"`HOST:PORT`, port 0 to 65535",
                                                    check_listen_fn};

/* ---- the option table */

static const char *const content_types[] = {"product", "product_group", "none", NULL};
static const char *const extid_modes[] = {"hashed", "raw", NULL};
static const char *const sync_modes[] = {"full", "normal", NULL};

/* Section shorthands: each expands to the section id and its struct. The
 * key is also the field name, so a table entry cannot point at the wrong
 * field. */
#define DEST  CAPID_SEC_DEST, struct capid_dest
#define SRC   CAPID_SEC_SOURCE, struct capid_source
#define QUEUE CAPID_SEC_QUEUE, struct capid_queue_cfg
#define DELIV CAPID_SEC_DELIVERY, struct capid_delivery_cfg
#define SERV  CAPID_SEC_SERVER, struct capid_server_cfg

#define OPT_(S, T, k, ty, fl, d, lo, hi, ch, cnt, sb, chk, h)                                      \
    {                                                                                              \
        .name = #k, .sec = S, .type = ty, .flags = fl, .def = d, .min = lo, .max = hi,             \
        .choices = ch, .off = offsetof(T, k), .count_off = cnt, .sub = sb, .check = chk, .help = h \
    }
#define STR_(S, T, k, fl, d, chk, h)                                                               \
    OPT_(S, T, k, CAPID_OPT_STRING, fl, d, 0, 0, NULL, 0, S, chk, h)
#define INT_(S, T, k, d, lo, hi, h) OPT_(S, T, k, CAPID_OPT_INT, 0, d, lo, hi, NULL, 0, S, NULL, h)
#define SIZE_(S, T, k, d, lo, hi, h)                                                               \
    OPT_(S, T, k, CAPID_OPT_SIZE, 0, d, lo, hi, NULL, 0, S, NULL, h)
#define BOOL_(S, T, k, d, h)     OPT_(S, T, k, CAPID_OPT_BOOL, 0, d, 0, 1, NULL, 0, S, NULL, h)
#define ENUM_(S, T, k, d, ch, h) OPT_(S, T, k, CAPID_OPT_ENUM, 0, d, 0, 0, ch, 0, S, NULL, h)
#define LIST_(S, T, k, fl, chk, h)                                                                 \
    OPT_(S, T, k, CAPID_OPT_LIST, fl, NULL, 0, CAPID_CONFIG_MAX_ITEMS, NULL, offsetof(T, n_##k),   \
         S, chk, h)
#define MAP_(S, T, k, h)                                                                           \
    OPT_(S, T, k, CAPID_OPT_MAP, 0, NULL, 0, CAPID_CONFIG_MAX_ITEMS, NULL, offsetof(T, n_##k), S,  \
         NULL, h)
#define SECT_(S, T, k, sb, h) OPT_(S, T, k, CAPID_OPT_SECTION, 0, NULL, 0, 0, NULL, 0, sb, NULL, h)
/* One level of indirection so DEST & co. split into two arguments. */
#define STR(...)  STR_(__VA_ARGS__)
#define INT(...)  INT_(__VA_ARGS__)
#define SIZE(...) SIZE_(__VA_ARGS__)
#define BOOL(...) BOOL_(__VA_ARGS__)
#define ENUM(...) ENUM_(__VA_ARGS__)
#define LIST(...) LIST_(__VA_ARGS__)
#define MAP(...)  MAP_(__VA_ARGS__)
#define SECT(...) SECT_(__VA_ARGS__)
#define REQ       CAPID_OPT_REQUIRED

static const struct capid_opt opts[] = {
    /* destinations: SPEC 3 */
    STR(DEST, name, REQ, NULL, &check_name,
        "Names the destination in sources, `capid map --destination`, the queue, logs and "
        "metrics. Unique."),
    STR(DEST, pixel_id, REQ, NULL, &check_digits, "Meta pixel (dataset) ID."),
    STR(DEST, access_token_env, 0, NULL, &check_env,
        "Environment variable holding the Conversions API access token."),
    STR(DEST, access_token_file, 0, NULL, NULL,
        "File holding the access token (trailing whitespace trimmed)."),
    STR(DEST, consent_category, 0, NULL, NULL,
        "When set, an event is sent only if `user.consent_categories` contains it; an event "
        "without consent information is not sent (SPEC 4.5)."),
    MAP(DEST, event_names,
        "Commanders Act `event_name` to Meta event name pairs, added to or overriding the "
        "built-in table (SPEC 4.2)."),
    ENUM(DEST, content_type, "product", content_types,
         "`custom_data.content_type` sent with `contents`; `none` leaves it out."),
    ENUM(DEST, external_id, "hashed", extid_modes,
         "`hashed`: `user.id` is normalised and SHA-256 hashed; `raw`: sent trimmed, unhashed."),
    BOOL(DEST, limited_data_use, "false",
         "Sends `data_processing_options: [\"LDU\"]` with country 0 and state 0 unless the event "
         "says otherwise."),
    BOOL(DEST, app_tracking, "false",
         "Sends app events: `action_source = app` and `app_data` "
         "(SPEC 4.6)."),
    INT(DEST, min_strong_keys, "1", 0, 5,
        "The match-key gate passes an event with at least this many strong keys (`em`, `ph`, "
        "`external_id`, `fbp`, `fbc`) or `min_other_keys` other `user_data` keys (SPEC 4.5)."),
    INT(DEST, min_other_keys, "3", 0, 20, "See `min_strong_keys`."),
    STR(DEST, test_event_code, 0, NULL, NULL,
        "Sent as the top-level `test_event_code` (Events Manager's test events)."),
    STR(DEST, api_version, 0, "v21.0", &check_version, "Graph API version in request URLs."),
    STR(DEST, graph_url, 0, "https://graph.facebook.com", &check_url,
        "Graph API base URL (tests point it at the Graph API simulator); trailing `/` removed."),
    SECT(DEST, delivery, CAPID_SEC_DELIVERY,
         "Overrides of the `delivery` keys for this destination; the keys it does not set keep "
         "the global `delivery` values."),

    /* sources: issue 5 */
    STR(SRC, name, REQ, NULL, &check_name, "Names the source in logs and metrics. Unique."),
    STR(SRC, key_env, 0, NULL, &check_env, "Environment variable holding the ingest key."),
    STR(SRC, key_file, 0, NULL, NULL, "File holding the ingest key (trailing whitespace trimmed)."),
    LIST(SRC, destinations, REQ, &check_dest_ref,
         "Names of the destinations this source's events go to (at least one)."),

    /* queue: issue 4, SPEC 6 */
    STR(QUEUE, path, 0, "var/capid-queue.db", NULL,
        "SQLite file of the durable queue; relative to the working directory."),
    ENUM(QUEUE, synchronous, "full", sync_modes,
         "SQLite `synchronous`. `full`: a committed event survives a power loss. `normal`: "
         "faster commits; a power loss (not a process crash) may lose the last ones."),
    INT(QUEUE, keep_delivered_s, "86400", 0, 2592000,
        "Seconds delivered events are kept for status queries before they are purged."),

    /* delivery: issue 4, SPEC 7 */
    INT(DELIV, max_batch, "1000", 1, 1000, "Events per Graph API request (Meta's limit: 1000)."),
    INT(DELIV, linger_ms, "200", 0, 60000, "How long a partial batch waits for more events."),
    INT(DELIV, max_inflight, "4", 1, 64, "Concurrent requests per destination."),
    INT(DELIV, timeout_ms, "10000", 100, 600000, "Timeout of a whole request."),
    INT(DELIV, max_attempts, "10", 1, 1000,
        "An event is dead-lettered `retry_window_exceeded` only after this many attempts and "
        "`retry_window_s` seconds since its first attempt, both."),
    INT(DELIV, retry_window_s, "86400", 0, 604800, "See `max_attempts`."),
    INT(DELIV, backoff_initial_ms, "1000", 1, 3600000,
        "First retry delay; doubles per attempt, with full jitter."),
    INT(DELIV, backoff_max_ms, "300000", 1, 3600000, "Cap of the retry delay."),
    INT(DELIV, probe_interval_s, "60", 1, 3600,
        "Seconds between probes of a destination paused on a token or permission error."),

    /* server: issue 5 */
    STR(SERV, listen, 0, "127.0.0.1:8080", &check_listen,
        "Address the HTTP server listens on; port 0 lets the kernel choose (see `ready_file`)."),
    STR(SERV, ready_file, 0, NULL, NULL,
        "Written with the bound port once the server accepts requests."),
    SIZE(SERV, max_event_bytes, "32768", 1024, 16777216,
         "Largest event; a larger one is rejected (SPEC 2)."),
    SIZE(SERV, max_request_bytes, "512000", 1024, 67108864,
         "Largest request body; answered 413 before the body is read."),
    INT(SERV, max_events, "1000", 1, 100000, "Most events in one request."),
    INT(SERV, max_depth, "32", 1, 256, "Deepest JSON nesting accepted."),
    INT(SERV, connection_timeout_s, "10", 1, 3600,
        "A connection idle or trickling for longer is closed."),
    INT(SERV, max_connections, "1024", 1, 65536, "Open connections at most."),
    INT(SERV, max_connections_per_ip, "64", 1, 65536, "Open connections per client address."),
    INT(SERV, threads, "2", 1, 256, "Threads of the HTTP server."),
};

#define N_OPTS ARRAY_SIZE(opts)

/* Top-level sections, in documentation order. */
static const struct capid_section sections[] = {
    {"destinations", CAPID_SEC_DEST, true, "destination",
     "Meta pixels (datasets) events are sent to (SPEC 3). At least one; names are unique."},
    {"sources", CAPID_SEC_SOURCE, true, "source",
     "Senders allowed to post events over HTTP: an ingest key each, and the destinations their "
     "events go to. Names are unique."},
    {"queue", CAPID_SEC_QUEUE, false, "queue", "The durable queue (SPEC 6)."},
    {"delivery", CAPID_SEC_DELIVERY, false, "delivery",
     "Batching, concurrency, timeouts and retries (SPEC 7): the values of every destination, "
     "which may override each key in its own `delivery:` map."},
    {"server", CAPID_SEC_SERVER, false, "server",
     "The HTTP ingestion server: address, limits and timeouts."},
};

/* Cross-key rules, also listed in the reference. */
static const struct {
    enum capid_opt_sec sec;
    const char *a, *b;
} one_of[] = {
    {CAPID_SEC_DEST, "access_token_env", "access_token_file"},
    {CAPID_SEC_SOURCE, "key_env", "key_file"},
};

static const struct {
    enum capid_opt_sec sec;
    const char *lo, *hi; /* value of lo <= value of hi */
} not_above[] = {
    {CAPID_SEC_DELIVERY, "backoff_initial_ms", "backoff_max_ms"},
    {CAPID_SEC_SERVER, "max_event_bytes", "max_request_bytes"},
    {CAPID_SEC_SERVER, "max_connections_per_ip", "max_connections"},
};

const struct capid_opt *capid_config_options(size_t *n)
{
    *n = N_OPTS;
    return opts;
}

const struct capid_section *capid_config_sections(size_t *n)
{
    *n = ARRAY_SIZE(sections);
    return sections;
}

static const struct capid_opt *find_opt(enum capid_opt_sec sec, const char *name)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].sec == sec && strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

static size_t section_size(enum capid_opt_sec sec)
{
    switch (sec) {
    case CAPID_SEC_DEST:
        return sizeof(struct capid_dest);
    case CAPID_SEC_SOURCE:
        return sizeof(struct capid_source);
    case CAPID_SEC_QUEUE:
        return sizeof(struct capid_queue_cfg);
    case CAPID_SEC_DELIVERY:
        return sizeof(struct capid_delivery_cfg);
    case CAPID_SEC_SERVER:
        return sizeof(struct capid_server_cfg);
    case CAPID_SEC_COUNT:
        break;
    }
    return 0;
}

/* The single struct of a map section (NULL for list sections). */
static void *global_section(struct capid_config *cfg, enum capid_opt_sec sec)
{
    switch (sec) {
    case CAPID_SEC_QUEUE:
        return &cfg->queue;
    case CAPID_SEC_DELIVERY:
        return &cfg->delivery;
    case CAPID_SEC_SERVER:
        return &cfg->server;
    default:
        return NULL;
    }
}

#define FIELD(base, o, type) ((type *)(void *)((char *)(base) + (o)->off))

/* ---- YAML tree */

enum ytype { Y_SCALAR, Y_SEQ, Y_MAP };

struct ynode {
    enum ytype type;
    bool plain; /* plain scalar: `~`, `null` or nothing mean null */
    size_t line, column, offset;
    char *str; /* scalar value, NUL-terminated (may hold NULs: len counts) */
    size_t len;
    struct ynode **kids; /* items; for a map: key, value, key, value... */
    size_t n, cap;
};

static void ynode_free(struct ynode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        ynode_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    free(n);
}

static const char *ynoun(const struct ynode *n)
{
    return n->type == Y_MAP ? "a map" : n->type == Y_SEQ ? "a list" : "a scalar";
}

static bool is_null(const struct ynode *n)
{
    if (n->type != Y_SCALAR || !n->plain)
        return false;
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

/* Value node of `key` in a map, or NULL. */
static const struct ynode *map_get(const struct ynode *map, const char *key, bool want_key)
{
    for (size_t i = 0; i + 1 < map->n; i += 2)
        if (map->kids[i]->type == Y_SCALAR && strcmp(map->kids[i]->str, key) == 0)
            return map->kids[want_key ? i : i + 1];
    return NULL;
}

/* ---- errors */

struct loader {
    const char *path;
    struct capid_perr *err;
    struct capid_config *cfg;
};

/* Formats "path:line: message" into err->buf, cut at a UTF-8 boundary with
 * "..." when it does not fit. Returns rc. */
static int vfail(struct loader *ld, int rc, size_t line, size_t col, size_t off, const char *fmt,
                 va_list ap) __attribute__((format(printf, 6, 0)));
static int vfail(struct loader *ld, int rc, size_t line, size_t col, size_t off, const char *fmt,
                 va_list ap)
{
    char msg[1024], full[1200];
    struct capid_perr *e = ld->err;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (line)
        snprintf(full, sizeof(full), "%s:%zu: %s", ld->path, line, msg);
    else
        snprintf(full, sizeof(full), "%s: %s", ld->path, msg);
    size_t n = strlen(full);
    if (n >= sizeof(e->buf)) {
        n = sizeof(e->buf) - 4;
        while (n > 0 && ((unsigned char)full[n] & 0xc0) == 0x80)
            n--;
        memcpy(full + n, "...", 4);
        n += 3;
    }
    memcpy(e->buf, full, n + 1);
    e->msg = e->buf;
    e->line = line;
    e->column = col;
    e->offset = off;
    return rc;
}

static int fail_at(struct loader *ld, int rc, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(struct loader *ld, int rc, size_t line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(ld, rc, line, 0, (size_t)-1, fmt, ap);
    va_end(ap);
    return rc;
}

/* A configuration error located at a node (NULL: no position). */
static int fail(struct loader *ld, const struct ynode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct loader *ld, const struct ynode *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (at)
        vfail(ld, CAPID_ECONFIG, at->line, at->column, at->offset, fmt, ap);
    else
        vfail(ld, CAPID_ECONFIG, 0, 0, (size_t)-1, fmt, ap);
    va_end(ap);
    return CAPID_ECONFIG;
}

/* A user-supplied value made safe to print: printable ASCII and UTF-8,
 * at most 40 bytes. */
static const char *show(char *buf, size_t size, const char *s, size_t len)
{
    size_t n = 0, max = size - 4;
    for (size_t i = 0; i < len && n < max; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (n < len)
        memcpy(buf + n, "...", 4);
    else
        buf[n] = '\0';
    return buf;
}

#define SHOW_SIZE 44

/* "name, other, ..." into buf. */
static const char *join(char *buf, size_t size, const char *const *words, size_t n)
{
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%s", i ? ", " : "", words[i]);
    return buf;
}

static const char *valid_keys(char *buf, size_t size, enum capid_opt_sec sec)
{
    const char *names[N_OPTS];
    size_t n = 0;
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].sec == sec)
            names[n++] = opts[i].name;
    return join(buf, size, names, n);
}

static size_t count_choices(const char *const *c)
{
    size_t n = 0;
    while (c[n])
        n++;
    return n;
}

/* ---- building the tree from libyaml events */

static int yaml_fail(struct loader *ld, const yaml_parser_t *p, const char *text, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR)
        abort();
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors (bad encoding) only know the byte offset. */
        size_t off = p->problem_offset < len ? p->problem_offset : len, line = 1;
        for (size_t i = 0; i < off; i++)
            line += text[i] == '\n';
        fail_at(ld, CAPID_EPARSE, line, "invalid yaml: %s at byte %zu", problem, off);
        ld->err->offset = off;
        return CAPID_EPARSE;
    }
    const yaml_mark_t *m = &p->problem_mark;
    char msg[256];
    if (p->context)
        snprintf(msg, sizeof(msg), "invalid yaml: %s (%s)", problem, p->context);
    else
        snprintf(msg, sizeof(msg), "invalid yaml: %s", problem);
    fail_at(ld, CAPID_EPARSE, m->line + 1, "%s", msg);
    ld->err->column = m->column + 1;
    ld->err->offset = m->index;
    return CAPID_EPARSE;
}

struct yreader {
    struct loader *ld;
    yaml_parser_t parser;
    const char *text;
    size_t len;
    size_t nodes; /* built so far, up to MAX_NODES */
};

static int next_event(struct yreader *r, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&r->parser, ev))
        return yaml_fail(r->ld, &r->parser, r->text, r->len);
    return CAPID_OK;
}

static struct ynode *ynode_new(enum ytype type, const yaml_mark_t *m)
{
    struct ynode *n = xcalloc(1, sizeof(*n));
    n->type = type;
    n->line = m->line + 1;
    n->column = m->column + 1;
    n->offset = m->index;
    return n;
}

static void ynode_push(struct ynode *parent, struct ynode *kid)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct ynode **k = realloc(parent->kids, cap * sizeof(*k));
        if (!k)
            abort();
        parent->kids = k;
        parent->cap = cap;
    }
    parent->kids[parent->n++] = kid;
}

/* Builds the node that starts with event ev, reading up to its end. */
static int build(struct yreader *r, const yaml_event_t *ev, unsigned depth, struct ynode **out)
{
    struct ynode *n = NULL;
    yaml_event_type_t end;
    int rc = CAPID_OK;
    *out = NULL;
    if (++r->nodes > MAX_NODES)
        return fail_at(r->ld, CAPID_ECONFIG, ev->start_mark.line + 1, "more than %d yaml values",
                       MAX_NODES);
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        n = ynode_new(Y_SCALAR, &ev->start_mark);
        n->len = ev->data.scalar.length;
        n->str = xcalloc(1, n->len + 1); /* memcpy: a "\0" escape may be inside */
        memcpy(n->str, ev->data.scalar.value, n->len);
        n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        *out = n;
        return CAPID_OK;
    case YAML_SEQUENCE_START_EVENT:
        n = ynode_new(Y_SEQ, &ev->start_mark);
        end = YAML_SEQUENCE_END_EVENT;
        break;
    case YAML_MAPPING_START_EVENT:
        n = ynode_new(Y_MAP, &ev->start_mark);
        end = YAML_MAPPING_END_EVENT;
        break;
    case YAML_ALIAS_EVENT:
        return fail_at(r->ld, CAPID_ECONFIG, ev->start_mark.line + 1,
                       "yaml aliases (*name) are not supported");
    default:
        return fail_at(r->ld, CAPID_EPARSE, ev->start_mark.line + 1, "unexpected yaml event");
    }
    if (depth >= MAX_DEPTH) {
        ynode_free(n);
        return fail_at(r->ld, CAPID_ECONFIG, ev->start_mark.line + 1,
                       "nesting deeper than %d levels", MAX_DEPTH);
    }
    for (;;) {
        yaml_event_t e;
        struct ynode *kid;
        if ((rc = next_event(r, &e)) != CAPID_OK)
            break;
        if (e.type == end) {
            yaml_event_delete(&e);
            break;
        }
        rc = build(r, &e, depth + 1, &kid);
        yaml_event_delete(&e);
        if (rc)
            break;
        ynode_push(n, kid);
    }
    if (rc) {
        ynode_free(n);
        return rc;
    }
    *out = n;
    return CAPID_OK;
}

/* Parses one YAML document into a tree; *root is NULL for an empty stream. */
static int load_tree(struct loader *ld, const char *text, size_t len, struct ynode **root)
{
    struct yreader r = {.ld = ld, .text = text, .len = len};
    yaml_event_t ev;
    int rc;
    bool have_ev = false;
    *root = NULL;
    if (!yaml_parser_initialize(&r.parser))
        abort();
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)text, len);
    /* STREAM-START, then DOCUMENT-START or STREAM-END. */
    for (int i = 0; i < 2; i++) {
        if ((rc = next_event(&r, &ev)) != CAPID_OK)
            goto out;
        have_ev = true;
        if (ev.type == YAML_STREAM_END_EVENT)
            goto out;
        yaml_event_delete(&ev);
        have_ev = false;
    }
    if ((rc = next_event(&r, &ev)) != CAPID_OK)
        goto out;
    have_ev = true;
    if ((rc = build(&r, &ev, 0, root)) != CAPID_OK)
        goto out;
    yaml_event_delete(&ev);
    have_ev = false;
    /* DOCUMENT-END, then STREAM-END: a second document is refused. */
    for (int i = 0; i < 2; i++) {
        if ((rc = next_event(&r, &ev)) != CAPID_OK)
            goto out;
        have_ev = true;
        if (ev.type == YAML_DOCUMENT_START_EVENT) {
            rc = fail_at(ld, CAPID_ECONFIG, ev.start_mark.line + 1,
                         "only one yaml document is allowed");
            goto out;
        }
        yaml_event_delete(&ev);
        have_ev = false;
    }
out:
    if (have_ev)
        yaml_event_delete(&ev);
    yaml_parser_delete(&r.parser);
    if (rc) {
        ynode_free(*root);
        *root = NULL;
    }
    return rc;
}

/* ---- values */

/* Parses an optionally signed decimal integer, the whole string. */
static bool parse_ll(const char *s, long long *out)
{
    bool neg = *s == '-';
    unsigned long long v = 0;
    if (*s == '-' || *s == '+')
        s++;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (unsigned long long)LLONG_MAX / 10)
            return false;
        v = v * 10 + (unsigned long long)(*s - '0');
        if (v > (unsigned long long)LLONG_MAX)
            return false;
    }
    *out = neg ? -(long long)v : (long long)v;
    return true;
}

/* Bytes: "32768", "32KiB", "32 KiB", "1MiB", "1GiB". */
static bool parse_size(const char *s, long long *out)
{
    static const struct {
        const char *suffix;
        long long mul;
    } units[] = {{"", 1}, {"KiB", 1024}, {"MiB", 1024 * 1024}, {"GiB", 1024 * 1024 * 1024}};
    char num[32];
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n >= sizeof(num))
        return false;
    memcpy(num, s, n);
    num[n] = '\0';
    const char *suffix = s + n + (s[n] == ' ');
    long long v;
    if (!parse_ll(num, &v))
        return false;
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (strcmp(suffix, units[i].suffix) != 0 || (i == 0 && s[n] == ' '))
            continue;
        if (v > LLONG_MAX / units[i].mul)
            return false;
        *out = v * units[i].mul;
        return true;
    }
    return false;
}

static int parse_bool(const char *s)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return 1;
        if (strcasecmp(s, no[i]) == 0)
            return 0;
    }
    return -1;
}

/* A heap copy of a string value after the generic and the option's checks;
 * NULL with why filled when invalid. */
static char *make_string(const struct capid_opt_check *chk, const char *s, size_t len, char *why,
                         size_t wsize)
{
    char shown[SHOW_SIZE];
    if (len == 0) {
        snprintf(why, wsize, "must not be empty");
        return NULL;
    }
    if (len > MAX_STRING) {
        snprintf(why, wsize, "is longer than %d bytes", MAX_STRING);
        return NULL;
    }
    if (memchr(s, '\0', len)) {
        snprintf(why, wsize, "must not contain a NUL byte");
        return NULL;
    }
    char *v = xstrndup(s, len);
    const char *bad = chk ? chk->fn(v) : NULL;
    if (bad) {
        snprintf(why, wsize, "'%s' %s", show(shown, sizeof(shown), s, len), bad);
        free(v);
        return NULL;
    }
    return v;
}

/* Stores a scalar-typed option from its text (a YAML scalar or the table's
 * default). Returns 0, or -1 with why filled ("'x' is not ..."). */
static int store_scalar(const struct capid_opt *o, void *base, const char *s, size_t len, char *why,
                        size_t wsize)
{
    char shown[SHOW_SIZE], list[256];
    long long v = 0;
    int b;
    show(shown, sizeof(shown), s, len);
    if (o->type != CAPID_OPT_STRING && memchr(s, '\0', len)) {
        snprintf(why, wsize, "'%s' must not contain a NUL byte", shown);
        return -1;
    }
    switch (o->type) {
    case CAPID_OPT_STRING: {
        char *str = make_string(o->check, s, len, why, wsize);
        if (!str)
            return -1;
        free(*FIELD(base, o, char *));
        *FIELD(base, o, char *) = str;
        return 0;
    }
    case CAPID_OPT_INT:
    case CAPID_OPT_SIZE:
        if (o->type == CAPID_OPT_INT ? !parse_ll(s, &v) : !parse_size(s, &v)) {
            snprintf(why, wsize,
                     o->type == CAPID_OPT_INT ? "'%s' is not an integer"
                                              : "'%s' is not a size (bytes, or N KiB, MiB, GiB)",
                     shown);
            return -1;
        }
        if (v < o->min || v > o->max) {
            snprintf(why, wsize, "%lld is out of range %lld..%lld", v, o->min, o->max);
            return -1;
        }
        if (o->type == CAPID_OPT_INT)
            *FIELD(base, o, int) = (int)v;
        else
            *FIELD(base, o, size_t) = (size_t)v;
        return 0;
    case CAPID_OPT_BOOL:
        if ((b = parse_bool(s)) < 0) {
            snprintf(why, wsize, "'%s' is not a boolean (true or false)", shown);
            return -1;
        }
        *FIELD(base, o, bool) = b;
        return 0;
    case CAPID_OPT_ENUM:
        for (size_t i = 0; o->choices[i]; i++) {
            if (strcmp(s, o->choices[i]) == 0) {
                *FIELD(base, o, int) = (int)i;
                return 0;
            }
        }
        snprintf(why, wsize, "'%s' is not one of %s", shown,
                 join(list, sizeof(list), o->choices, count_choices(o->choices)));
        return -1;
    default:
        break;
    }
    assert(!"not a scalar option");
    return -1;
}

static const char *want_noun(enum capid_opt_type t)
{
    switch (t) {
    case CAPID_OPT_STRING:
        return "a string";
    case CAPID_OPT_INT:
        return "an integer";
    case CAPID_OPT_BOOL:
        return "a boolean";
    case CAPID_OPT_ENUM:
        return "a string";
    case CAPID_OPT_SIZE:
        return "a size";
    case CAPID_OPT_LIST:
        return "a list";
    case CAPID_OPT_MAP:
        return "a map";
    case CAPID_OPT_SECTION:
        return "a map";
    }
    return "a value";
}

static void apply_defaults(struct capid_config *cfg, enum capid_opt_sec sec, void *base)
{
    char why[160];
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct capid_opt *o = &opts[i];
        if (o->sec != sec)
            continue;
        if (o->type == CAPID_OPT_SECTION) {
            /* A destination's delivery starts as a copy of the global one
             * (plain ints: a shallow copy owns nothing). */
            memcpy((char *)base + o->off, global_section(cfg, o->sub), section_size(o->sub));
        } else if (o->def) {
            int rc = store_scalar(o, base, o->def, strlen(o->def), why, sizeof(why));
            assert(rc == 0 && "bad default in the option table");
            (void)rc;
        }
    }
}

static int parse_map(struct loader *ld, enum capid_opt_sec sec, const char *what,
                     const struct ynode *map, void *base);

static int parse_list_opt(struct loader *ld, const struct capid_opt *o, void *base,
                          const struct ynode *v)
{
    char why[160];
    char ***items = FIELD(base, o, char **);
    size_t *count = (size_t *)(void *)((char *)base + o->count_off);
    if (v->n > CAPID_CONFIG_MAX_ITEMS)
        return fail(ld, v, "%s: more than %d items", o->name, CAPID_CONFIG_MAX_ITEMS);
    if (v->n == 0 && (o->flags & CAPID_OPT_REQUIRED))
        return fail(ld, v, "%s: the list is empty", o->name);
    *items = xcalloc(v->n, sizeof(char *));
    for (size_t i = 0; i < v->n; i++) {
        const struct ynode *item = v->kids[i];
        if (item->type != Y_SCALAR || is_null(item))
            return fail(ld, item, "%s: items must be strings, got %s", o->name,
                        is_null(item) ? "null" : ynoun(item));
        char *s = make_string(o->check, item->str, item->len, why, sizeof(why));
        if (!s)
            return fail(ld, item, "%s: %s", o->name, why);
        (*items)[(*count)++] = s;
    }
    return CAPID_OK;
}

static int parse_map_opt(struct loader *ld, const struct capid_opt *o, void *base,
                         const struct ynode *v)
{
    char why[160], shown[SHOW_SIZE];
    struct capid_name_pair **pairs = FIELD(base, o, struct capid_name_pair *);
    size_t *count = (size_t *)(void *)((char *)base + o->count_off);
    if (v->n / 2 > CAPID_CONFIG_MAX_ITEMS)
        return fail(ld, v, "%s: more than %d entries", o->name, CAPID_CONFIG_MAX_ITEMS);
    *pairs = xcalloc(v->n / 2, sizeof(**pairs));
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const struct ynode *k = v->kids[i], *val = v->kids[i + 1];
        struct capid_name_pair *p = &(*pairs)[*count];
        if (k->type != Y_SCALAR || is_null(k))
            return fail(ld, k, "%s: keys must be strings", o->name);
        show(shown, sizeof(shown), k->str, k->len);
        for (size_t j = 0; j < i; j += 2)
            if (v->kids[j]->len == k->len && memcmp(v->kids[j]->str, k->str, k->len) == 0)
                return fail(ld, k, "%s: duplicate key '%s' (first on line %zu)", o->name, shown,
                            v->kids[j]->line);
        if (!(p->from = make_string(NULL, k->str, k->len, why, sizeof(why))))
            return fail(ld, k, "%s: key %s", o->name, why);
        (*count)++;
        if (val->type != Y_SCALAR || is_null(val))
            return fail(ld, val, "%s: '%s' must map to a string, got %s", o->name, shown,
                        is_null(val) ? "null" : ynoun(val));
        if (!(p->to = make_string(NULL, val->str, val->len, why, sizeof(why))))
            return fail(ld, val, "%s: '%s' %s", o->name, shown, why);
    }
    return CAPID_OK;
}

static int parse_value(struct loader *ld, const struct capid_opt *o, void *base,
                       const struct ynode *v)
{
    char why[300];
    enum ytype want = o->type == CAPID_OPT_LIST                                  ? Y_SEQ
                      : o->type == CAPID_OPT_MAP || o->type == CAPID_OPT_SECTION ? Y_MAP
                                                                                 : Y_SCALAR;
    if (v->type != want)
        return fail(ld, v, "%s: expected %s, got %s", o->name, want_noun(o->type), ynoun(v));
    switch (o->type) {
    case CAPID_OPT_LIST:
        return parse_list_opt(ld, o, base, v);
    case CAPID_OPT_MAP:
        return parse_map_opt(ld, o, base, v);
    case CAPID_OPT_SECTION:
        return parse_map(ld, o->sub, o->name, v, (char *)base + o->off);
    default:
        if (store_scalar(o, base, v->str, v->len, why, sizeof(why)))
            return fail(ld, v, "%s: %s", o->name, why);
        return CAPID_OK;
    }
}

/* " 'demo'" for a destination or source that has a name, else "". */
static const char *item_label(char *buf, size_t size, enum capid_opt_sec sec, const void *base)
{
    const struct capid_opt *o = find_opt(sec, "name");
    const char *name = o ? *FIELD(base, o, char *const) : NULL;
    if (name)
        snprintf(buf, size, " '%s'", name);
    else
        buf[0] = '\0';
    return buf;
}

static long long num_value(const struct capid_opt *o, const void *base)
{
    if (o->type == CAPID_OPT_SIZE)
        return (long long)*FIELD(base, o, const size_t);
    return *FIELD(base, o, const int);
}

/* Rules that span keys of one map: required keys, exactly-one pairs,
 * ordered pairs. seen[i] is the key node of opts[i] when present. */
static int check_rules(struct loader *ld, enum capid_opt_sec sec, const char *what,
                       const struct ynode *map, const void *base, const struct ynode *const *seen)
{
    char label[80];
    item_label(label, sizeof(label), sec, base);
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].sec == sec && (opts[i].flags & CAPID_OPT_REQUIRED) && !seen[i])
            return fail(ld, map, "%s%s is missing required key '%s'", what, label, opts[i].name);
    for (size_t i = 0; i < ARRAY_SIZE(one_of); i++) {
        if (one_of[i].sec != sec)
            continue;
        const struct capid_opt *a = find_opt(sec, one_of[i].a), *b = find_opt(sec, one_of[i].b);
        bool has_a = *FIELD(base, a, char *const) != NULL;
        bool has_b = *FIELD(base, b, char *const) != NULL;
        if (!has_a && !has_b)
            return fail(ld, map, "%s%s needs %s or %s", what, label, a->name, b->name);
        if (has_a && has_b)
            return fail(ld,
                        seen[a - opts]->offset > seen[b - opts]->offset ? seen[a - opts]
                                                                        : seen[b - opts],
                        "%s%s sets both %s and %s; keep one", what, label, a->name, b->name);
    }
    for (size_t i = 0; i < ARRAY_SIZE(not_above); i++) {
        if (not_above[i].sec != sec)
            continue;
        const struct capid_opt *lo = find_opt(sec, not_above[i].lo);
        const struct capid_opt *hi = find_opt(sec, not_above[i].hi);
        long long lv = num_value(lo, base), hv = num_value(hi, base);
        if (lv <= hv)
            continue;
        const struct ynode *at = seen[lo - opts], *h = seen[hi - opts];
        if (!at || (h && h->offset > at->offset))
            at = h;
        return fail(ld, at ? at : map, "%s (%lld) must not be above %s (%lld)", lo->name, lv,
                    hi->name, hv);
    }
    return CAPID_OK;
}

/* Parses a map of options of one section into base (defaults already set). */
static int parse_map(struct loader *ld, enum capid_opt_sec sec, const char *what,
                     const struct ynode *map, void *base)
{
    const struct ynode *seen[N_OPTS] = {0};
    char shown[SHOW_SIZE], keys[512];
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        const struct ynode *k = map->kids[i], *v = map->kids[i + 1];
        if (k->type != Y_SCALAR)
            return fail(ld, k, "keys in %s must be strings, got %s", what, ynoun(k));
        const struct capid_opt *o = find_opt(sec, k->str);
        if (!o || strlen(k->str) != k->len)
            return fail(ld, k, "unknown key '%s' in %s; valid keys: %s",
                        show(shown, sizeof(shown), k->str, k->len), what,
                        valid_keys(keys, sizeof(keys), sec));
        size_t idx = (size_t)(o - opts);
        if (seen[idx])
            return fail(ld, k, "duplicate key '%s' in %s (first on line %zu)", o->name, what,
                        seen[idx]->line);
        seen[idx] = k;
        if (is_null(v)) {
            /* null keeps the default; a required key needs a value. */
            if (o->flags & CAPID_OPT_REQUIRED)
                return fail(ld, v, "%s: a value is required", o->name);
            continue;
        }
        int rc = parse_value(ld, o, base, v);
        if (rc)
            return rc;
    }
    return check_rules(ld, sec, what, map, base, seen);
}

/* ---- sections */

static const char *item_name(enum capid_opt_sec sec, const void *base)
{
    return *FIELD(base, find_opt(sec, "name"), char *const);
}

/* A source's destinations must name configured destinations, once each. */
static int check_source_refs(struct loader *ld, const struct capid_source *src,
                             const struct ynode *item)
{
    char shown[SHOW_SIZE], names[256];
    const struct ynode *list = map_get(item, "destinations", false);
    for (size_t i = 0; i < src->n_destinations; i++) {
        const char *d = src->destinations[i];
        if (!capid_config_dest(ld->cfg, d)) {
            const char *all[CAPID_CONFIG_MAX_ITEMS];
            for (size_t j = 0; j < ld->cfg->n_dests; j++)
                all[j] = ld->cfg->dests[j].name;
            return fail(ld, list->kids[i], "source '%s': unknown destination '%s'; configured: %s",
                        src->name, show(shown, sizeof(shown), d, strlen(d)),
                        join(names, sizeof(names), all, ld->cfg->n_dests));
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(src->destinations[j], d) == 0)
                return fail(ld, list->kids[i], "source '%s' lists destination '%s' twice",
                            src->name, d);
    }
    return CAPID_OK;
}

/* destinations: and sources: lists of maps. */
static int parse_items(struct loader *ld, const struct capid_section *s, const struct ynode *seq)
{
    struct capid_config *cfg = ld->cfg;
    size_t size = section_size(s->sec), *count;
    char *items;
    if (seq->type != Y_SEQ)
        return fail(ld, seq, "%s: expected a list, got %s", s->name, ynoun(seq));
    if (seq->n > CAPID_CONFIG_MAX_ITEMS)
        return fail(ld, seq, "%s: more than %d items", s->name, CAPID_CONFIG_MAX_ITEMS);
    items = xcalloc(seq->n, size);
    if (s->sec == CAPID_SEC_DEST) {
        cfg->dests = (struct capid_dest *)(void *)items;
        count = &cfg->n_dests;
    } else {
        cfg->sources = (struct capid_source *)(void *)items;
        count = &cfg->n_sources;
    }
    for (size_t i = 0; i < seq->n; i++) {
        const struct ynode *item = seq->kids[i];
        void *base = items + i * size;
        if (item->type != Y_MAP)
            return fail(ld, item, "%s: each item must be a map, got %s", s->name, ynoun(item));
        (*count)++; /* owned by cfg from here, even half-built */
        apply_defaults(cfg, s->sec, base);
        int rc = parse_map(ld, s->sec, s->what, item, base);
        if (rc)
            return rc;
        const char *name = item_name(s->sec, base);
        for (size_t j = 0; j < i; j++)
            if (strcmp(item_name(s->sec, items + j * size), name) == 0)
                return fail(ld, map_get(item, "name", true),
                            "duplicate %s name '%s' (first on line %zu)", s->what, name,
                            map_get(seq->kids[j], "name", true)->line);
        if (s->sec == CAPID_SEC_SOURCE && (rc = check_source_refs(ld, base, item)) != CAPID_OK)
            return rc;
    }
    return CAPID_OK;
}

static int parse_root(struct loader *ld, const struct ynode *root)
{
    const struct ynode *key[ARRAY_SIZE(sections)] = {0}, *val[ARRAY_SIZE(sections)] = {0};
    const char *names[ARRAY_SIZE(sections)];
    char shown[SHOW_SIZE], list[128];
    int rc;
    if (!root)
        return fail_at(ld, CAPID_ECONFIG, 0, "no destinations configured");
    if (root->type != Y_MAP)
        return fail(ld, root, "expected a map of sections at the top level, got %s", ynoun(root));
    for (size_t i = 0; i < ARRAY_SIZE(sections); i++)
        names[i] = sections[i].name;
    for (size_t i = 0; i + 1 < root->n; i += 2) {
        const struct ynode *k = root->kids[i];
        size_t j = 0;
        if (k->type != Y_SCALAR)
            return fail(ld, k, "keys at the top level must be strings, got %s", ynoun(k));
        while (j < ARRAY_SIZE(sections) &&
               (strcmp(k->str, sections[j].name) != 0 || strlen(k->str) != k->len))
            j++;
        if (j == ARRAY_SIZE(sections))
            return fail(ld, k, "unknown key '%s' at the top level; valid keys: %s",
                        show(shown, sizeof(shown), k->str, k->len),
                        join(list, sizeof(list), names, ARRAY_SIZE(sections)));
        if (key[j])
            return fail(ld, k, "duplicate key '%s' at the top level (first on line %zu)",
                        sections[j].name, key[j]->line);
        key[j] = k;
        val[j] = root->kids[i + 1];
    }
    /* Global delivery first: destinations start from a copy of it, whatever
     * the order of sections in the file. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t j = 0; j < ARRAY_SIZE(sections); j++) {
            const struct capid_section *s = &sections[j];
            if ((s->sec == CAPID_SEC_DELIVERY) != (pass == 0) || !val[j] || is_null(val[j]))
                continue;
            if (s->list)
                rc = parse_items(ld, s, val[j]);
            else if (val[j]->type != Y_MAP)
                rc = fail(ld, val[j], "%s: expected a map, got %s", s->name, ynoun(val[j]));
            else
                rc = parse_map(ld, s->sec, s->what, val[j], global_section(ld->cfg, s->sec));
            if (rc)
                return rc;
        }
    }
    if (ld->cfg->n_dests == 0)
        return fail(ld, key[0], "no destinations configured");
    return CAPID_OK;
}

/* ---- public API */

static struct capid_config *config_new(const char *path)
{
    struct capid_config *cfg = xcalloc(1, sizeof(*cfg));
    cfg->path = xstrndup(path, strlen(path));
    apply_defaults(cfg, CAPID_SEC_QUEUE, &cfg->queue);
    apply_defaults(cfg, CAPID_SEC_DELIVERY, &cfg->delivery);
    apply_defaults(cfg, CAPID_SEC_SERVER, &cfg->server);
    return cfg;
}

static void perr_reset(struct capid_perr *err)
{
    memset(err, 0, sizeof(*err));
    err->offset = (size_t)-1;
}

static int parse_named(const char *path, const char *yaml, size_t len, struct capid_config **out,
                       struct capid_perr *err)
{
    struct capid_config *cfg = config_new(path);
    struct loader ld = {.path = path, .err = err, .cfg = cfg};
    struct ynode *root = NULL;
    int rc;
    *out = NULL;
    if (len > CAPID_CONFIG_MAX_BYTES)
        rc = fail_at(&ld, CAPID_ETOOBIG, 0, "larger than %d bytes", CAPID_CONFIG_MAX_BYTES);
    else if ((rc = load_tree(&ld, yaml, len, &root)) == CAPID_OK)
        rc = parse_root(&ld, root);
    ynode_free(root);
    if (rc) {
        capid_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return CAPID_OK;
}

int capid_config_parse(const char *yaml, size_t len, struct capid_config **out,
                       struct capid_perr *err)
{
    struct capid_perr dummy;
    if (!err)
        err = &dummy;
    perr_reset(err);
    return parse_named("-", yaml, len, out, err);
}

int capid_config_load(const char *path, struct capid_config **out, struct capid_perr *err)
{
    struct capid_perr dummy;
    struct capid_buf b;
    char chunk[65536];
    int rc = CAPID_OK;
    if (!err)
        err = &dummy;
    perr_reset(err);
    *out = NULL;
    capid_buf_init(&b, CAPID_CONFIG_MAX_BYTES);
    FILE *f = fopen(path, "rb");
    if (!f) {
        capid_perr_set(err, (size_t)-1, "%s: cannot open: %s", path, strerror(errno));
        return CAPID_EIO;
    }
    for (;;) {
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n && (rc = capid_buf_append(&b, chunk, n)) != CAPID_OK)
            break;
        if (n < sizeof(chunk))
            break;
    }
    if (rc == CAPID_ETOOBIG)
        capid_perr_set(err, (size_t)-1, "%s: larger than %d bytes", path, CAPID_CONFIG_MAX_BYTES);
    else if (ferror(f)) {
        capid_perr_set(err, (size_t)-1, "%s: cannot read: %s", path, strerror(errno));
        rc = CAPID_EIO;
    } else
        rc = parse_named(path, b.data ? b.data : "", b.len, out, err);
    fclose(f);
    capid_buf_release(&b);
    return rc;
}

static void release_section(enum capid_opt_sec sec, void *base)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct capid_opt *o = &opts[i];
        if (o->sec != sec)
            continue;
        size_t n = o->count_off ? *(size_t *)(void *)((char *)base + o->count_off) : 0;
        switch (o->type) {
        case CAPID_OPT_STRING:
            free(*FIELD(base, o, char *));
            break;
        case CAPID_OPT_LIST:
            for (size_t j = 0; j < n; j++)
                free((*FIELD(base, o, char **))[j]);
            free(*FIELD(base, o, char **));
            break;
        case CAPID_OPT_MAP:
            for (size_t j = 0; j < n; j++) {
                free((*FIELD(base, o, struct capid_name_pair *))[j].from);
                free((*FIELD(base, o, struct capid_name_pair *))[j].to);
            }
            free(*FIELD(base, o, struct capid_name_pair *));
            break;
        case CAPID_OPT_SECTION:
            release_section(o->sub, (char *)base + o->off);
            break;
        default:
            break;
        }
    }
}

void capid_config_free(struct capid_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_dests; i++)
        release_section(CAPID_SEC_DEST, &cfg->dests[i]);
    for (size_t i = 0; i < cfg->n_sources; i++)
        release_section(CAPID_SEC_SOURCE, &cfg->sources[i]);
    release_section(CAPID_SEC_QUEUE, &cfg->queue);
    release_section(CAPID_SEC_DELIVERY, &cfg->delivery);
    release_section(CAPID_SEC_SERVER, &cfg->server);
    free(cfg->dests);
    free(cfg->sources);
    free(cfg->path);
    free(cfg);
}

const struct capid_dest *capid_config_dest(const struct capid_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->n_dests; i++)
        if (cfg->dests[i].name && strcmp(cfg->dests[i].name, name) == 0)
            return &cfg->dests[i];
    return NULL;
}

/* ---- secrets */

static size_t trimmed_len(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n' ||
                     s[n - 1] == '\v' || s[n - 1] == '\f'))
        n--;
    return n;
}

static bool has_controls(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return true;
    return false;
}

/* Reads a secret file; env_note says why the variable was not used (or ""). */
static char *read_secret_file(const char *file, const char *env_note, struct capid_perr *err)
{
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    const char *why = NULL;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        capid_perr_set(err, (size_t)-1, "%scannot open secret file '%s': %s", env_note, file,
                       strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        why = "is not a regular file";
        goto out;
    }
    if (st.st_size > CAPID_CONFIG_MAX_SECRET) {
        why = "is larger than 64 KiB";
        goto out;
    }
    if (st.st_mode & (S_IRGRP | S_IROTH))
        capid_warn("secret file '%s' is readable by group or others; chmod 600 it", file);
    buf = xcalloc(1, CAPID_CONFIG_MAX_SECRET + 1);
    for (;;) {
        ssize_t r = read(fd, buf + n, CAPID_CONFIG_MAX_SECRET + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            why = "cannot be read";
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > CAPID_CONFIG_MAX_SECRET) {
            why = "is larger than 64 KiB";
            goto out;
        }
    }
    n = trimmed_len(buf, n);
    if (n == 0)
        why = "is empty";
    else if (has_controls(buf, n))
        why = "holds control characters or several lines";
out:
    close(fd);
    if (why) {
        capid_perr_set(err, (size_t)-1, "%ssecret file '%s' %s", env_note, file, why);
        if (buf)
            explicit_bzero(buf, CAPID_CONFIG_MAX_SECRET + 1);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

char *capid_config_read_secret(const char *env, const char *file, struct capid_perr *err)
{
    struct capid_perr dummy;
    char note[320] = "";
    if (!err)
        err = &dummy;
    perr_reset(err);
    if (env && *env) {
        const char *v = getenv(env);
        size_t n = v ? trimmed_len(v, strlen(v)) : 0;
        if (n && has_controls(v, n)) {
            capid_perr_set(err, (size_t)-1,
                           "environment variable '%s' holds control characters or several lines",
                           env);
            return NULL;
        }
        if (n)
            return xstrndup(v, n);
        snprintf(note, sizeof(note), "environment variable '%s' is %s", env,
                 v ? "empty" : "not set");
        if (!file || !*file) {
            capid_perr_set(err, (size_t)-1, "%s", note);
            return NULL;
        }
        size_t at = strlen(note);
        snprintf(note + at, sizeof(note) - at, "; ");
    }
    if (file && *file)
        return read_secret_file(file, note, err);
    capid_perr_set(err, (size_t)-1, "no secret configured: name an environment variable or a file");
    return NULL;
}

/* ---- the reference (docs/CONFIG.md) */

static const char *type_name(const struct capid_opt *o)
{
    switch (o->type) {
    case CAPID_OPT_STRING:
        return "string";
    case CAPID_OPT_INT:
        return "integer";
    case CAPID_OPT_BOOL:
        return "boolean";
    case CAPID_OPT_ENUM:
        return "enum";
    case CAPID_OPT_SIZE:
        return "size";
    case CAPID_OPT_LIST:
        return "list of strings";
    case CAPID_OPT_MAP:
        return "map of strings";
    case CAPID_OPT_SECTION:
        return "map";
    }
    return "?";
}

static void write_default(FILE *out, const struct capid_opt *o)
{
    if (o->flags & CAPID_OPT_REQUIRED)
        fputs("required", out);
    else if (o->type == CAPID_OPT_SECTION)
        fputs("global values", out);
    else if (o->type == CAPID_OPT_LIST || o->type == CAPID_OPT_MAP)
        fputs("empty", out);
    else if (!o->def)
        fputs("unset", out);
    else
        fprintf(out, "`%s`", o->def);
}

static void write_values(FILE *out, const struct capid_opt *o)
{
    switch (o->type) {
    case CAPID_OPT_INT:
        fprintf(out, "%lld to %lld", o->min, o->max);
        break;
    case CAPID_OPT_SIZE:
        fprintf(out, "%lld to %lld bytes", o->min, o->max);
        break;
    case CAPID_OPT_BOOL:
        fputs("`true`, `false`", out);
        break;
    case CAPID_OPT_ENUM:
        for (size_t i = 0; o->choices[i]; i++)
            fprintf(out, "%s`%s`", i ? ", " : "", o->choices[i]);
        break;
    case CAPID_OPT_SECTION:
        fprintf(out, "keys of [`delivery`](#delivery)");
        break;
    case CAPID_OPT_MAP:
        fputs("non-empty strings", out);
        break;
    default:
        fputs(o->check ? o->check->doc : "non-empty", out);
        break;
    }
}

static void write_rules(FILE *out, enum capid_opt_sec sec)
{
    bool any = false;
    for (size_t i = 0; i < ARRAY_SIZE(one_of); i++) {
        if (one_of[i].sec != sec)
            continue;
        fprintf(out, "%s`%s` or `%s`, exactly one", any ? "; " : "\nRules: ", one_of[i].a,
                one_of[i].b);
        any = true;
    }
    for (size_t i = 0; i < ARRAY_SIZE(not_above); i++) {
        if (not_above[i].sec != sec)
            continue;
        fprintf(out, "%s`%s` <= `%s`", any ? "; " : "\nRules: ", not_above[i].lo, not_above[i].hi);
        any = true;
    }
    if (any)
        fputs(".\n", out);
}

void capid_config_write_reference(FILE *out)
{
    fputs("# Configuration reference\n"
          "\n"
          "<!-- Generated from the option table in src/config/config.c by\n"
          "     capid_config_write_reference(). Do not edit: run\n"
          "     `CAPID_UPDATE_DOCS=1 build/unit-tests config_reference` to rewrite it;\n"
          "     that unit test fails while this file differs. -->\n"
          "\n"
          "capid reads one YAML file (`--config FILE`, at most 1 MiB). JSON is valid YAML,\n"
          "so a JSON file works too. Sections and keys may come in any order.\n"
          "\n"
          "- Unknown keys, duplicate keys, values of the wrong type, out of range or not\n"
          "  among the choices are errors that name the file, the line and the key, and\n"
          "  list the valid keys or choices.\n"
          "- A key set to null (`~`, `null` or nothing) keeps its default; a required key\n"
          "  needs a value. Strings must not be empty.\n"
          "- Booleans: `true` or `false` (also `yes`/`no`, `on`/`off`).\n"
          "- Sizes: bytes, or a number with a `KiB`, `MiB` or `GiB` suffix (`32KiB`).\n"
          "- YAML aliases (`*name`) and several documents in one file are not supported.\n"
          "- Secrets (the Meta access token, ingest keys) are never written in this file:\n"
          "  it names an environment variable (`*_env`) or a file (`*_file`) holding\n"
          "  them, read when capid starts. Trailing whitespace and newlines are trimmed;\n"
          "  an empty secret, or one with control characters inside, is an error. A\n"
          "  secret file readable by group or others is used, with a warning in the log:\n"
          "  `chmod 600` it. Error messages name the variable or file, never the secret.\n"
          "\n"
          "| section | type | description |\n"
          "|---|---|---|\n",
          out);
    for (size_t i = 0; i < ARRAY_SIZE(sections); i++)
        fprintf(out, "| [`%s`](#%s) | %s | %s |\n", sections[i].name, sections[i].name,
                sections[i].list ? "list of maps" : "map", sections[i].help);
    for (size_t i = 0; i < ARRAY_SIZE(sections); i++) {
        const struct capid_section *s = &sections[i];
        fprintf(out, "\n## %s\n\n%s\n\n", s->name, s->help);
        fputs("| key | type | default | valid values | description |\n"
              "|---|---|---|---|---|\n",
              out);
        for (size_t j = 0; j < N_OPTS; j++) {
            const struct capid_opt *o = &opts[j];
            if (o->sec != s->sec)
                continue;
            fprintf(out, "| `%s` | %s | ", o->name, type_name(o));
            write_default(out, o);
            fputs(" | ", out);
            write_values(out, o);
            fprintf(out, " | %s |\n", o->help);
        }
        write_rules(out, s->sec);
    }
}
