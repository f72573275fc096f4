/* capid-graph-sim internals shared by the simulator's files. The simulator is
 * a test tool that plays Meta's Conversions API endpoint on loopback
 * (POST /{version}/{pixel_id}/events) with faults on demand; docs/SIMULATOR.md
 * is its manual. One process, one struct sim; MHD worker threads handle
 * requests, a timer thread answers delayed ones. */
#ifndef CAPID_GRAPH_SIM_H
#define CAPID_GRAPH_SIM_H

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

#define SIM_MAX_EVENTS     1000 /* Meta: "up to 1,000 events in data" (meta-capi-spec 1.4) */
#define SIM_MAX_PIXELS     1024 /* distinct pixels with their own counters */
#define SIM_MAX_SCRIPT     100000
#define SIM_MAX_CONTROL    (1u << 20) /* control API bodies */
#define SIM_DEFAULT_BODY   (32u << 20)
#define SIM_DAY            86400
#define SIM_MAX_AGE_DAYS   7   /* Meta: event_time at most 7 days old (meta-capi-spec 1.5) */
#define SIM_STORE_AGE_DAYS 62  /* physical_store events: 62 days (same section) */
#define SIM_FUTURE_TOL     600 /* seconds; SPEC 4.5 lets capid send up to 10 min ahead */

/* ---- arena.c: per-request memory, a per-thread bump allocator ---- */

/* Installs the cJSON hooks; call once before any thread starts. */
void sim_arena_install(void);
/* Between begin and end, sim_arena_alloc and every cJSON allocation of the
 * calling thread come from that thread's arena and cJSON frees are no-ops;
 * end drops it all at once. Nothing allocated inside may be used after end, and nothing
 * allocated outside may be freed inside. */
void sim_arena_begin(void);
void sim_arena_end(void);
/* Raw allocation from the active arena (malloc'd and leaked if inactive:
 * callers only use it inside begin/end). Never returns NULL. */
void *sim_arena_alloc(size_t n);

/* ---- jdoc.c: a strict JSON parser into a flat node array (the hot path) ---- */

enum sim_jtype { SIM_J_NULL, SIM_J_FALSE, SIM_J_TRUE, SIM_J_NUM, SIM_J_STR, SIM_J_ARR, SIM_J_OBJ };

struct sim_jnode {
    uint32_t start, end;  /* the value's bytes in the text, quotes included */
    uint32_t next;        /* index of the next sibling, 0 = none */
    uint32_t count;       /* containers: children; the first is at this index + 1 */
    uint32_t key, keylen; /* object members: the key's bytes, quotes excluded */
    uint8_t type;         /* enum sim_jtype */
    uint8_t esc, kesc;    /* the string value / the key holds escapes */
};

struct sim_jdoc {
    const char *text;
    size_t len;
    struct sim_jnode *n; /* n[0] is the root */
    uint32_t nn, cap;
    const char *err; /* static message when parsing failed */
    size_t errpos;
};

/* Parses text[0..len), one JSON value with optional white space around it,
 * strictly (RFC 8259; surrogates must pair). Nodes come from the calling
 * thread's arena: call between sim_arena_begin and sim_arena_end, and keep
 * text alive as long as d. 0, or -1 with d->err and d->errpos. */
int sim_jdoc_parse(struct sim_jdoc *d, const char *text, size_t len);
/* The first member of object node o named key, or 0 (none, or not an object). */
uint32_t sim_jdoc_member(const struct sim_jdoc *d, uint32_t o, const char *key);
/* The key of member node i (decoded into the arena if it has escapes). */
const char *sim_jdoc_key(const struct sim_jdoc *d, uint32_t i, size_t *len);
/* The content of string node i: a pointer into the text when it has no
 * escapes (not NUL-terminated), else a decoded arena copy. */
const char *sim_jdoc_str(const struct sim_jdoc *d, uint32_t i, size_t *len);
/* The same as a NUL-terminated arena string. */
char *sim_jdoc_cstr(const struct sim_jdoc *d, uint32_t i);
/* The value of number node i (strtod; inf when out of range). */
double sim_jdoc_num(const struct sim_jdoc *d, uint32_t i);

/* ---- reply.c: what to answer, in Graph's envelopes ---- */

enum sim_kind {
    SIM_KIND_OK,          /* process normally */
    SIM_KIND_ERROR,       /* Graph error envelope */
    SIM_KIND_HTML,        /* an HTML error page, as proxies in front of Graph send */
    SIM_KIND_HANG,        /* never answer until reset, release or shutdown */
    SIM_KIND_RESET,       /* send half of the answer, then a TCP reset */
    SIM_KIND_WRONG_COUNT, /* 200 with an events_received that is not the batch size */
};

const char *sim_kind_name(enum sim_kind k);

struct sim_reply {
    enum sim_kind kind; /* HANG and RESET change how the reply is delivered */
    int status;
    const char *ctype;
    struct capid_buf body;
    struct capid_buf hdrs; /* extra headers: "name\0value\0"... */
    int delay_ms;
    /* for the log and the stats */
    int code, subcode;
    long events; /* events accepted by this request */
};

void sim_reply_init(struct sim_reply *r);
void sim_reply_release(struct sim_reply *r);
void sim_reply_header(struct sim_reply *r, const char *name, const char *value);
/* Graph's error envelope (meta-capi-spec 1.6). NULL strings are left out,
 * except type and message which default from the code table. transient < 0
 * takes the code's default. */
void sim_reply_error(struct sim_reply *r, int status, int code, int subcode, int transient,
                     const char *type, const char *message, const char *title,
                     const char *user_msg);
/* 200 {"events_received":n,"messages":[],"fbtrace_id":"..."}. */
void sim_reply_success(struct sim_reply *r, long events_received);
/* A plain JSON answer of the control API. */
void sim_reply_json(struct sim_reply *r, int status, const char *json, size_t len);
/* {"error":"msg"} with status 400 (or the given one). */
void sim_reply_control_error(struct sim_reply *r, int status, const char *msg);

/* Graph defaults for a code: HTTP status, is_transient, type, message. */
struct sim_code_info {
    int status;
    int transient;
    const char *type;
    const char *message; /* may contain one %d for the code */
};
void sim_code_info(int code, struct sim_code_info *out);
/* Default Graph code for an HTTP status given alone in a script (429 -> 17). */
int sim_code_for_status(int status);
/* An 11-character id like Graph's fbtrace_id, NUL-terminated. */
void sim_fbtrace(char out[12]);

/* ---- fault.c: per-pixel behaviour set by the control API ---- */

/* One scripted or random response (docs/SIMULATOR.md "response specs"). */
struct sim_spec {
    enum sim_kind kind;
    int status;           /* 0 = default for kind and code */
    int code;             /* Graph code for SIM_KIND_ERROR */
    int subcode;          /* 0 = none */
    int transient;        /* -1 = the code's default */
    int retry_after;      /* Retry-After seconds, -1 = no header */
    long events_received; /* SIM_KIND_WRONG_COUNT, -1 = batch size - 1 */
    int latency_ms;       /* added delay before answering */
    int accept;           /* record the events anyway: -1 = default for kind */
    unsigned weight;      /* in a failure mix */
    char *message, *type, *title, *user_msg;
    char *app_usage, *buc_usage; /* X-App-Usage / X-Business-Use-Case-Usage, "" = default */
    char *headers;               /* more headers: "name\0value\0"..., ends with "\0" */
    size_t headers_len;
};

/* Parses a spec: an HTTP status, a kind name or an object. Returns NULL or a
 * static error message. out is released on failure. */
const char *sim_spec_parse(const cJSON *j, struct sim_spec *out);
void sim_spec_release(struct sim_spec *s);
/* Deep copy (malloc). */
void sim_spec_copy(struct sim_spec *dst, const struct sim_spec *src);
/* Builds the reply a non-OK spec describes. nevents is the batch size when
 * known (-1 otherwise), index names the offending event (-1 for none). */
void sim_spec_reply(const struct sim_spec *s, const char *pixel, long nevents, int index,
                    struct sim_reply *r);
/* Whether the events of a batch answered with s are recorded. */
bool sim_spec_accepts(const struct sim_spec *s);

struct sim_faults;

struct sim_faults *sim_faults_new(void);
void sim_faults_free(struct sim_faults *f);
/* Back to no faults at all. */
void sim_faults_clear(struct sim_faults *f);

/* Control calls with the request body; NULL on success or a static error
 * message (the state is then unchanged). Thread-safe. */
const char *sim_faults_script(struct sim_faults *f, const cJSON *req);
const char *sim_faults_failure(struct sim_faults *f, const cJSON *req);
const char *sim_faults_latency(struct sim_faults *f, const cJSON *req);
const char *sim_faults_rate_limit(struct sim_faults *f, const cJSON *req);
const char *sim_faults_poison(struct sim_faults *f, const cJSON *req, int *id);
/* Appends {"<pixel>":{...},...} describing the current settings. */
void sim_faults_config_json(struct sim_faults *f, struct capid_buf *out);

/* A poison rule as seen by one request (arena copy). */
struct sim_poison_snap {
    int id;
    int nseg;
    const char **seg; /* path segments */
    cJSON *value;
    int subcode;
    const char *title, *message;
};

/* What the fault settings say about one request, decided in arrival order. */
struct sim_decision {
    bool has_spec; /* false: behave normally */
    struct sim_spec spec;
    int latency_ms;
    int npoison;
    struct sim_poison_snap *poison; /* arena */
};

/* Decides one request to `pixel` at monotonic time now_ms: rate limit, then
 * script, then failure rate; samples latency; snapshots poison rules into the
 * calling thread's arena (call inside sim_arena_begin/end). */
void sim_faults_decide(struct sim_faults *f, const char *pixel, int64_t now_ms,
                       struct sim_decision *d);
void sim_decision_release(struct sim_decision *d);
/* Whether event matches the rule. */
bool sim_poison_matches(const struct sim_poison_snap *r, const cJSON *event);
/* A matching rule fires: with a script, pops its next response into *spec and
 * sets *scripted; returns false when that script is used up (the rule no
 * longer applies). */
bool sim_faults_poison_fire(struct sim_faults *f, const char *pixel, int id, struct sim_spec *spec,
                            bool *scripted);

/* ---- validate.c: Meta's checks of one server event ---- */

struct sim_verr {
    int subcode;
    const char *title;
    char msg[240];
};

/* Rules for the whole request (data shape, size): one row per rule. */
enum sim_rule {
    SIM_R_DATA,
    SIM_R_TOO_MANY,
    SIM_R_NOT_OBJECT,
    SIM_R_EVENT_NAME,
    SIM_R_EVENT_TIME,
    SIM_R_TOO_OLD,
    SIM_R_FUTURE,
    SIM_R_ACTION_SOURCE,
    SIM_R_USER_AGENT,
    SIM_R_SOURCE_URL,
    SIM_R_USER_DATA,
    SIM_R_HASHED,
    SIM_R_FBC,
    SIM_R_FBP,
    SIM_R_VALUE,
    SIM_R_CURRENCY,
    SIM_R_POISON,
    SIM_R_COUNT
};

/* Fills e for rule with a printf-style detail. */
void sim_verr_set(struct sim_verr *e, enum sim_rule rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int sim_rule_subcode(enum sim_rule rule);
/* Checks event node ev of d against Meta's rules at simulator time now; 0
 * if valid, else -1 with e filled (the first failing rule, in the order of
 * the issue). */
int sim_validate_event(const struct sim_jdoc *d, uint32_t ev, int64_t now, int64_t future_tol,
                       struct sim_verr *e);
/* Shape checks on their own: a SHA-256 digest in lowercase hex, and
 * fb.<digits>.<digits>.<payload>[.<appendix>]. */
bool sim_is_hex64(const char *s, size_t n);
bool sim_is_fb_cookie(const char *s, size_t n);

/* ---- store.c: accepted events, duplicates, counters ---- */

struct sim_store_opts {
    size_t max_events; /* records kept (counts never stop) */
    size_t max_bytes;  /* payload bytes kept */
    size_t log_max;    /* request log entries kept (the most recent) */
};

struct sim_event_in {
    const char *name, *id; /* id NULL: no event_id, never a duplicate */
    size_t name_len, id_len;
    const char *payload; /* NULL: not kept */
    size_t payload_len;
};

struct sim_batch_in {
    const char *pixel;
    uint64_t request;
    int64_t t_ms;
    const char *test_code; /* may be NULL */
    const char *partner;   /* may be NULL */
    size_t n;
    const struct sim_event_in *ev;
};

struct sim_log_in {
    uint64_t request;
    int64_t t_ms;
    const char *pixel; /* NULL for a request that named none */
    int status;
    int code, subcode;
    enum sim_kind kind;
    long events;
    int delay_ms;
};

struct sim_store;

struct sim_store *sim_store_new(const struct sim_store_opts *o);
void sim_store_free(struct sim_store *s);
void sim_store_clear(struct sim_store *s);
/* Whether payloads would be kept now (false with --no-store or once full):
 * callers skip finding the events' text when they would not be. */
bool sim_store_keeps(struct sim_store *s);
/* Records an accepted batch; returns how many of its events were duplicates
 * of (pixel, event_name, event_id) seen before, in this batch or earlier. */
size_t sim_store_add(struct sim_store *s, const struct sim_batch_in *b);
/* Counts one answered Graph request and keeps it in the request log. */
void sim_store_note(struct sim_store *s, const struct sim_log_in *l);

struct sim_live {
    int in_flight, max_concurrent, hung;
    int64_t clock_offset, future_tolerance;
};
void sim_store_stats_json(struct sim_store *s, const struct sim_live *live, bool with_log,
                          struct capid_buf *out);
/* Stored events in arrival order, optionally only one pixel or event_id,
 * from position `since`, at most limit (0 = all). */
void sim_store_events_json(struct sim_store *s, const char *pixel, const char *event_id,
                           size_t since, size_t limit, struct capid_buf *out);

/* ---- the simulator ---- */

struct sim_server; /* server.c */

struct sim {
    /* from the command line */
    char **tokens;
    size_t ntokens;
    char **pixels;
    size_t npixels;
    char **controls; /* --control NAME=JSON, applied at start and on reset */
    size_t ncontrols;
    int64_t cli_clock_offset;
    int64_t cli_future_tol;
    size_t max_body;
    int threads;
    /* state */
    _Atomic int64_t clock_offset;
    _Atomic int64_t future_tol;
    atomic_uint_fast64_t requests;
    atomic_int in_flight;
    atomic_int max_concurrent;
    struct sim_store *store;
    struct sim_faults *faults;
    struct sim_server *server;
};

/* Seconds of the simulator's clock (wall clock plus the offset). */
int64_t sim_now(const struct sim *s);

/* A request as the HTTP layer hands it over. */
struct sim_request {
    const char *method;
    const char *url; /* path only */
    const char *content_type;
    const char *query_token; /* ?access_token=, rarely used */
    const char *body;        /* NUL-terminated */
    size_t len;
    bool too_big;
    int64_t t_ms; /* wall clock at arrival */
    void *conn;   /* struct MHD_Connection *, for query arguments */
};

/* graph.c: POST /{version}/{pixel_id}/events and everything not under /_sim. */
void sim_graph_handle(struct sim *s, const struct sim_request *rq, struct sim_reply *out);
/* control.c: /_sim/... */
void sim_control_handle(struct sim *s, const struct sim_request *rq, struct sim_reply *out);
/* Applies one "NAME=JSON" control (as --control gives it); NULL or an error. */
const char *sim_control_apply(struct sim *s, const char *spec);
/* Back to the state at start: no events, no counters, no faults, CLI
 * controls applied again; hung requests are closed. */
void sim_reset(struct sim *s);

/* server.c: starts MHD's worker threads on listen_fd (which MHD then owns)
 * and the timer thread; NULL on failure. Sets s->server. */
struct sim_server *sim_server_start(struct sim *s, int listen_fd);
/* Closes every hung request (they never get an answer); returns how many. */
int sim_server_release(struct sim_server *srv);
int sim_server_hung(struct sim_server *srv);
/* Answers delayed requests now, closes hung ones, stops MHD and the timer
 * thread, frees srv. NULL is a no-op. */
void sim_server_stop(struct sim_server *srv);

#endif
