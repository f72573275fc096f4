/* The Graph endpoint: POST /{version}/{pixel_id}/events with a JSON body or a
 * form body (urlencoded or multipart) carrying `data` as a JSON string, as
 * Meta's tools send it (meta-capi-spec 1.3). Order of decisions: faults (rate
 * limit, script, failure rate), then what Meta checks (body, token, pixel,
 * data, every event, poison rules), then the events are recorded and the
 * answer is delivered (possibly late, cut or never). */
#include "sim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/clock.h"
#include "util/log.h"

struct body {
    const char *token, *test_code, *partner;
    const char *data_text; /* form bodies: the data field */
    size_t data_len;
    struct sim_jdoc doc; /* the document that holds data */
    int64_t data;        /* its node, -1 = none */
};

static char *arena_strndup(const char *p, size_t n)
{
    char *d = sim_arena_alloc(n + 1);
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* application/x-www-form-urlencoded value: %XX and '+' decoded, in the arena. */
static char *form_decode(const char *p, size_t n, size_t *outlen)
{
    char *d = sim_arena_alloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '+')
            d[o++] = ' ';
        else if (p[i] == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            d[o++] = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            i += 2;
        } else
            d[o++] = p[i];
    }
    d[o] = '\0';
    *outlen = o;
    return d;
}

/* Keeps one form field that the endpoint reads; others are ignored. */
static void form_field(struct body *b, const char *key, size_t klen, const char *val, size_t vlen)
{
    if (klen == 4 && memcmp(key, "data", 4) == 0) {
        b->data_text = val;
        b->data_len = vlen;
    } else if (klen == 12 && memcmp(key, "access_token", 12) == 0)
        b->token = val;
    else if (klen == 15 && memcmp(key, "test_event_code", 15) == 0)
        b->test_code = val;
    else if (klen == 13 && memcmp(key, "partner_agent", 13) == 0)
        b->partner = val;
}

/* key=value pairs separated by '&', each side decoded into the arena. */
static void parse_urlencoded(const char *p, size_t n, struct body *b)
{
    const char *end = p + n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (eq) {
            size_t klen, vlen;
            char *k = form_decode(p, (size_t)(eq - p), &klen);
            char *v = form_decode(eq + 1, (size_t)(e - eq - 1), &vlen);
            form_field(b, k, klen, v, vlen);
        }
        p = amp ? amp + 1 : end;
    }
}

/* multipart/form-data (RFC 7578) with the whole body in memory. Returns -1
 * when there is no usable boundary. */
static int parse_multipart(const char *ctype, const char *p, size_t n, struct body *b)
{
    const char *bp = strcasestr(ctype, "boundary=");
    if (!bp)
        return -1;
    bp += 9;
    size_t blen;
    if (*bp == '"') {
        bp++;
        const char *q = strchr(bp, '"');
        if (!q)
            return -1;
        blen = (size_t)(q - bp);
    } else {
        blen = strcspn(bp, "; \t");
    }
    if (!blen || blen > 200)
        return -1;
    char delim[208];
    int dlen = snprintf(delim, sizeof(delim), "--%.*s", (int)blen, bp);
    const char *end = p + n;
    const char *cur = memmem(p, n, delim, (size_t)dlen);
    while (cur) {
        cur += dlen;
        if (end - cur >= 2 && cur[0] == '-' && cur[1] == '-')
            break; /* closing delimiter */
        const char *hend = memmem(cur, (size_t)(end - cur), "\r\n\r\n", 4);
        if (!hend)
            break;
        const char *content = hend + 4;
        /* The part ends at CRLF + delimiter. */
        const char *next = content;
        for (;;) {
            next = memmem(next, (size_t)(end - next), delim, (size_t)dlen);
            if (!next || (next - content >= 2 && next[-2] == '\r' && next[-1] == '\n'))
                break;
            next++;
        }
        if (!next)
            break;
        const char *name = NULL;
        size_t nlen = 0;
        for (const char *h = cur; h && h < hend;) {
            const char *eol = memmem(h, (size_t)(hend - h), "\r\n", 2);
            const char *le = eol ? eol : hend;
            if ((size_t)(le - h) > 20 && strncasecmp(h, "content-disposition:", 20) == 0) {
                const char *nm = memmem(h, (size_t)(le - h), "name=\"", 6);
                if (nm) {
                    nm += 6;
                    const char *q = memchr(nm, '"', (size_t)(le - nm));
                    if (q) {
                        name = nm;
                        nlen = (size_t)(q - nm);
                    }
                }
            }
            h = eol ? eol + 2 : NULL;
        }
        if (name) {
            size_t vlen = (size_t)(next - 2 - content);
            form_field(b, name, nlen, arena_strndup(content, vlen), vlen);
        }
        cur = next;
    }
    return 0;
}

/* String member k of object node o as a C string, or NULL. */
static const char *member_cstr(const struct sim_jdoc *d, uint32_t o, const char *k)
{
    uint32_t m = sim_jdoc_member(d, o, k);
    return m && d->n[m].type == SIM_J_STR ? sim_jdoc_cstr(d, m) : NULL;
}

/* Decodes the body into b: a JSON object, or a form whose data field is
 * JSON text (data may also be a JSON string inside a JSON body). On error
 * fills the reply and returns -1. */
static int decode_body(const struct sim_request *rq, struct body *b, struct sim_reply *out)
{
    struct sim_verr e;
    const char *ct = rq->content_type ? rq->content_type : "";
    memset(b, 0, sizeof(*b));
    b->data = -1;
    if (strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
        parse_urlencoded(rq->body, rq->len, b);
    } else if (strncasecmp(ct, "multipart/form-data", 19) == 0) {
        if (parse_multipart(ct, rq->body, rq->len, b)) {
            sim_verr_set(&e, SIM_R_DATA, "multipart/form-data body without a boundary");
            goto fail;
        }
    } else {
        /* JSON, whatever the content type says (Graph is lenient too). */
        struct sim_jdoc *d = &b->doc;
        if (sim_jdoc_parse(d, rq->body, rq->len) || d->n[0].type != SIM_J_OBJ) {
            sim_verr_set(&e, SIM_R_DATA, "the request body is not a JSON object (%s at byte %zu)",
                         d->err ? d->err : "not an object", d->err ? d->errpos : 0);
            goto fail;
        }
        b->token = member_cstr(d, 0, "access_token");
        b->test_code = member_cstr(d, 0, "test_event_code");
        b->partner = member_cstr(d, 0, "partner_agent");
        uint32_t data = sim_jdoc_member(d, 0, "data");
        if (data && d->n[data].type == SIM_J_STR)
            b->data_text = sim_jdoc_str(d, data, &b->data_len);
        else if (data)
            b->data = data;
    }
    if (!b->token)
        b->token = rq->query_token;
    if (b->data < 0) {
        if (!b->data_text) {
            sim_verr_set(&e, SIM_R_DATA, "The parameter data is required");
            goto fail;
        }
        if (sim_jdoc_parse(&b->doc, b->data_text, b->data_len)) {
            sim_verr_set(&e, SIM_R_DATA, "data is not valid JSON (%s at byte %zu)", b->doc.err,
                         b->doc.errpos);
            goto fail;
        }
        b->data = 0;
    }
    return 0;
fail:
    sim_reply_error(out, 400, 100, e.subcode, 0, NULL, NULL, e.title, e.msg);
    return -1;
}

/* "/v21.0/1234/events" -> pixel "1234"; -1 if the path is not that. */
static int parse_path(const char *url, char *pixel, size_t cap)
{
    const char *p = url;
    if (*p++ != '/' || *p++ != 'v' || !isdigit((unsigned char)*p))
        return -1;
    while (isdigit((unsigned char)*p) || *p == '.')
        p++;
    if (*p++ != '/')
        return -1;
    const char *px = p;
    while (*p && *p != '/')
        p++;
    size_t n = (size_t)(p - px);
    if (!n || n >= cap || strcmp(p, "/events") != 0)
        return -1;
    memcpy(pixel, px, n);
    pixel[n] = '\0';
    return 0;
}

static bool listed(char **list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

/* Meta's error for an invalid event, naming its index. */
static void reply_invalid(struct sim_reply *out, const struct sim_verr *e, int index)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "%s (event index %d)", e->msg, index);
    sim_reply_error(out, 400, 100, e->subcode, 0, NULL, NULL, e->title, msg);
}

struct batch_ctx {
    struct sim *s;
    const char *pixel;
    struct sim_decision *d;
    struct body *b;
    struct sim_event_in *ev;
    int n;
};

/* Checks the poison rules against one event (text: its JSON). Returns 0 to
 * go on, or -1 with the reply filled when the batch is rejected. */
static int check_poison(struct batch_ctx *c, const char *text, size_t len, int i,
                        struct sim_reply *out)
{
    /* Rules are rare: the event gets a cJSON tree only when there are some. */
    cJSON *ev = cJSON_ParseWithLength(text, len);
    for (int r = 0; ev && r < c->d->npoison; r++) {
        const struct sim_poison_snap *p = &c->d->poison[r];
        struct sim_spec spec;
        bool scripted;
        if (!sim_poison_matches(p, ev) ||
            !sim_faults_poison_fire(c->s->faults, c->pixel, p->id, &spec, &scripted))
            continue;
        if (!scripted) {
            struct sim_verr e;
            sim_verr_set(&e, SIM_R_POISON, "%s",
                         p->message ? p->message : "this event matches a poison rule");
            if (p->subcode)
                e.subcode = p->subcode;
            if (p->title)
                e.title = p->title;
            reply_invalid(out, &e, i);
            return -1;
        }
        if (spec.kind == SIM_KIND_ERROR || spec.kind == SIM_KIND_HTML) {
            sim_spec_reply(&spec, c->pixel, c->n, i, out);
            sim_spec_release(&spec);
            return -1;
        }
        if (spec.kind != SIM_KIND_OK && !c->d->has_spec) {
            c->d->spec = spec; /* a delivery fault for the whole request */
            c->d->has_spec = true;
        } else {
            sim_spec_release(&spec);
        }
    }
    return 0;
}

/* Checks data, every event and the poison rules; fills c->ev. 0 when the
 * batch is good, else -1 with the reply filled. */
static int check_events(struct batch_ctx *c, struct sim_reply *out)
{
    struct sim_verr e;
    const struct sim_jdoc *d = &c->b->doc;
    uint32_t data = (uint32_t)c->b->data;
    if (d->n[data].type != SIM_J_ARR) {
        sim_verr_set(&e, SIM_R_DATA, "data must be a JSON array of server events");
        sim_reply_error(out, 400, 100, e.subcode, 0, NULL, NULL, e.title, e.msg);
        return -1;
    }
    int n = (int)d->n[data].count;
    if (n > SIM_MAX_EVENTS) {
        sim_verr_set(&e, SIM_R_TOO_MANY, "data holds %d events; at most %d are accepted", n,
                     SIM_MAX_EVENTS);
        sim_reply_error(out, 400, 100, e.subcode, 0, NULL, NULL, e.title, e.msg);
        return -1;
    }
    bool keep = sim_store_keeps(c->s->store);
    int64_t now = sim_now(c->s);
    int64_t tol = atomic_load(&c->s->future_tol);
    c->ev = sim_arena_alloc(((size_t)n + 1) * sizeof(*c->ev));
    c->n = n;
    int i = 0;
    for (uint32_t x = n ? data + 1 : 0; x; x = d->n[x].next, i++) {
        const struct sim_jdoc *ed = d; /* the event's document and node */
        uint32_t ev = x;
        const char *text = d->text + d->n[x].start;
        size_t len = d->n[x].end - d->n[x].start;
        if (d->n[x].type == SIM_J_STR) {
            /* Meta's Python SDK sends each event as a JSON-encoded string. */
            struct sim_jdoc *sub = sim_arena_alloc(sizeof(*sub));
            text = sim_jdoc_str(d, x, &len);
            if (sim_jdoc_parse(sub, text, len)) {
                sim_verr_set(&e, SIM_R_NOT_OBJECT,
                             "this element of data is a string that is not a JSON server event "
                             "(%s at byte %zu)",
                             sub->err, sub->errpos);
                reply_invalid(out, &e, i);
                return -1;
            }
            ed = sub;
            ev = 0;
        }
        if (sim_validate_event(ed, ev, now, tol, &e)) {
            reply_invalid(out, &e, i);
            return -1;
        }
        if (c->d->npoison && check_poison(c, text, len, i, out))
            return -1;
        struct sim_event_in *in = &c->ev[i];
        uint32_t name = sim_jdoc_member(ed, ev, "event_name");
        uint32_t id = sim_jdoc_member(ed, ev, "event_id");
        in->name = sim_jdoc_str(ed, name, &in->name_len);
        in->id = id && ed->n[id].type == SIM_J_STR ? sim_jdoc_str(ed, id, &in->id_len) : NULL;
        in->payload = keep ? text : NULL;
        in->payload_len = len;
    }
    return 0;
}

/* Everything after the fault decision for a request that gets processed. */
static void process(struct sim *s, const struct sim_request *rq, const char *pixel, uint64_t reqno,
                    struct sim_decision *d, struct sim_reply *out)
{
    struct body b;
    if (decode_body(rq, &b, out))
        return;
    if (!b.token || !*b.token) {
        sim_reply_error(out, 401, 190, 0, 0, NULL,
                        "An active access token must be used to query information about the "
                        "current user.",
                        NULL, NULL);
        return;
    }
    if (s->ntokens && !listed(s->tokens, s->ntokens, b.token)) {
        sim_reply_error(out, 400, 190, 0, 0, NULL,
                        "Invalid OAuth access token - Cannot parse access token", NULL, NULL);
        return;
    }
    if (s->npixels && !listed(s->pixels, s->npixels, pixel)) {
        char msg[400];
        snprintf(msg, sizeof(msg),
                 "Unsupported post request. Object with ID '%s' does not exist, cannot be "
                 "loaded due to missing permissions, or does not support this operation. "
                 "Please read the Graph API documentation at "
                 "https://developers.facebook.com/docs/graph-api",
                 pixel);
        sim_reply_error(out, 400, 100, 33, 0, "GraphMethodException", msg, NULL, NULL);
        return;
    }
    struct batch_ctx c = {s, pixel, d, &b, NULL, 0};
    if (check_events(&c, out))
        return;
    bool accept = !d->has_spec || sim_spec_accepts(&d->spec);
    if (accept && c.n) {
        struct sim_batch_in in = {pixel,     reqno,       rq->t_ms, b.test_code,
                                  b.partner, (size_t)c.n, c.ev};
        sim_store_add(s->store, &in);
        out->events = c.n;
    }
    if (d->has_spec)
        sim_spec_reply(&d->spec, pixel, c.n, -1, out);
    else
        sim_reply_success(out, c.n);
}

void sim_graph_handle(struct sim *s, const struct sim_request *rq, struct sim_reply *out)
{
    char pixel[128];
    bool graph = parse_path(rq->url, pixel, sizeof(pixel)) == 0;
    uint64_t reqno = atomic_fetch_add(&s->requests, 1) + 1;
    struct sim_decision d = {0};
    sim_arena_begin();
    if (!graph) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Unknown path components: %.200s", rq->url);
        sim_reply_error(out, 400, 2500, 0, 0, NULL, msg, NULL, NULL);
    } else if (strcmp(rq->method, "POST") != 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "Unsupported %.10s request. Use POST to send server events.",
                 rq->method);
        sim_reply_error(out, 400, 100, 0, 0, "GraphMethodException", msg, NULL, NULL);
    } else if (rq->too_big) {
        sim_reply_error(out, 413, 100, 0, 0, NULL, "Request entity too large", NULL, NULL);
    } else {
        sim_faults_decide(s->faults, pixel, capid_mono_ms(), &d);
        out->delay_ms = d.latency_ms;
        if (d.has_spec && !sim_spec_accepts(&d.spec) && d.spec.kind != SIM_KIND_OK) {
            /* errors, HTML pages and plain hangs never look at the request */
            sim_spec_reply(&d.spec, pixel, -1, -1, out);
        } else {
            process(s, rq, pixel, reqno, &d, out);
        }
        if (d.has_spec) {
            out->delay_ms += d.spec.latency_ms;
            /* Delivery faults apply whatever the answer turned out to be. */
            if (d.spec.kind == SIM_KIND_HANG || d.spec.kind == SIM_KIND_RESET)
                out->kind = d.spec.kind;
        }
    }
    struct sim_log_in l = {reqno,        rq->t_ms,  graph ? pixel : NULL, out->status,  out->code,
                           out->subcode, out->kind, out->events,          out->delay_ms};
    sim_store_note(s->store, &l);
    capid_info("request %llu %s %.200s -> %d code=%d/%d kind=%s events=%ld delay=%dms",
               (unsigned long long)reqno, rq->method, rq->url, out->status, out->code, out->subcode,
               sim_kind_name(out->kind), out->events, out->delay_ms);
    sim_decision_release(&d);
    sim_arena_end();
}
