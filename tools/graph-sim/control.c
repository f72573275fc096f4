/* The control API under /_sim/ (JSON in, JSON out): set faults per pixel,
 * move the clock, read what was accepted and the counters, reset. The same
 * calls can be made at start with --control NAME=JSON. docs/SIMULATOR.md is
 * the reference. */
#include "sim.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"
#include "util/log.h"

int64_t sim_now(const struct sim *s)
{
    return capid_now_s() + atomic_load(&s->clock_offset);
}

static void clock_json(struct sim *s, struct capid_buf *b)
{
    capid_buf_printf(b, "{\"now\":%lld,\"offset\":%lld,\"future_tolerance\":%lld}",
                     (long long)sim_now(s), (long long)atomic_load(&s->clock_offset),
                     (long long)atomic_load(&s->future_tol));
}

static const char *set_clock(struct sim *s, const cJSON *req)
{
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(req, "offset");
    const cJSON *now = cJSON_GetObjectItemCaseSensitive(req, "now");
    const cJSON *tol = cJSON_GetObjectItemCaseSensitive(req, "future_tolerance");
    if ((off && !cJSON_IsNumber(off)) || (now && !cJSON_IsNumber(now)) || (off && now))
        return "clock takes a number offset (seconds) or now (epoch seconds), not both";
    if (tol && (!cJSON_IsNumber(tol) || tol->valuedouble < 0 || tol->valuedouble > 1e9))
        return "future_tolerance must be seconds >= 0";
    if (off)
        atomic_store(&s->clock_offset, (int64_t)off->valuedouble);
    if (now)
        atomic_store(&s->clock_offset, (int64_t)now->valuedouble - capid_now_s());
    if (tol)
        atomic_store(&s->future_tol, (int64_t)tol->valuedouble);
    return NULL;
}

void sim_reset(struct sim *s)
{
    sim_server_release(s->server);
    sim_store_clear(s->store);
    sim_faults_clear(s->faults);
    atomic_store(&s->requests, 0);
    atomic_store(&s->max_concurrent, atomic_load(&s->in_flight));
    atomic_store(&s->clock_offset, s->cli_clock_offset);
    atomic_store(&s->future_tol, s->cli_future_tol);
    for (size_t i = 0; i < s->ncontrols; i++)
        sim_control_apply(s, s->controls[i]); /* checked at start */
}

/* A POST to /_sim/<name> with its parsed body; NULL or an error message.
 * The answer's JSON goes to b. */
static const char *control_post(struct sim *s, const char *name, const cJSON *req,
                                struct capid_buf *b)
{
    const char *err = NULL;
    if (!cJSON_IsObject(req))
        return "the body must be a JSON object";
    if (strcmp(name, "script") == 0)
        err = sim_faults_script(s->faults, req);
    else if (strcmp(name, "failure") == 0)
        err = sim_faults_failure(s->faults, req);
    else if (strcmp(name, "latency") == 0)
        err = sim_faults_latency(s->faults, req);
    else if (strcmp(name, "rate-limit") == 0)
        err = sim_faults_rate_limit(s->faults, req);
    else if (strcmp(name, "poison") == 0) {
        int id = 0;
        err = sim_faults_poison(s->faults, req, &id);
        if (!err)
            capid_buf_printf(b, "{\"ok\":true,\"id\":%d}", id);
        return err;
    } else if (strcmp(name, "clock") == 0) {
        err = set_clock(s, req);
        if (!err)
            clock_json(s, b);
        return err;
    } else if (strcmp(name, "reset") == 0) {
        int hung = sim_server_hung(s->server);
        sim_reset(s);
        capid_buf_printf(b, "{\"ok\":true,\"released\":%d}", hung);
        return NULL;
    } else if (strcmp(name, "release") == 0) {
        capid_buf_printf(b, "{\"ok\":true,\"released\":%d}", sim_server_release(s->server));
        return NULL;
    } else
        return "unknown control endpoint (see docs/SIMULATOR.md)";
    if (!err)
        capid_buf_puts(b, "{\"ok\":true}");
    return err;
}

const char *sim_control_apply(struct sim *s, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || eq - spec > 31)
        return "--control takes NAME=JSON, e.g. 'failure={\"rate\":0.3}'";
    char name[32];
    memcpy(name, spec, (size_t)(eq - spec));
    name[eq - spec] = '\0';
    if (strcmp(name, "reset") == 0 || strcmp(name, "release") == 0)
        return "--control takes settings (script, failure, latency, rate-limit, poison, clock)";
    cJSON *req = cJSON_Parse(eq + 1);
    if (!req)
        return "--control: the JSON after '=' does not parse";
    struct capid_buf b;
    capid_buf_init(&b, 0);
    const char *err = control_post(s, name, req, &b);
    capid_buf_release(&b);
    cJSON_Delete(req);
    return err;
}

static const char *query(const struct sim_request *rq, const char *key)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, key);
}

static size_t query_size(const struct sim_request *rq, const char *key)
{
    const char *v = query(rq, key);
    return v ? (size_t)strtoull(v, NULL, 10) : 0;
}

void sim_control_handle(struct sim *s, const struct sim_request *rq, struct sim_reply *out)
{
    const char *name = rq->url + strlen("/_sim/");
    struct capid_buf b;
    capid_buf_init(&b, 0);
    const char *err = NULL;
    int status = 200;
    if (strcmp(rq->method, "GET") == 0) {
        if (strcmp(name, "stats") == 0) {
            const char *log = query(rq, "log");
            struct sim_live live = {atomic_load(&s->in_flight), atomic_load(&s->max_concurrent),
                                    sim_server_hung(s->server), atomic_load(&s->clock_offset),
                                    atomic_load(&s->future_tol)};
            sim_store_stats_json(s->store, &live, !(log && strcmp(log, "0") == 0), &b);
        } else if (strcmp(name, "events") == 0) {
            sim_store_events_json(s->store, query(rq, "pixel"), query(rq, "event_id"),
                                  query_size(rq, "since"), query_size(rq, "limit"), &b);
        } else if (strcmp(name, "config") == 0) {
            capid_buf_puts(&b, "{\"clock\":");
            clock_json(s, &b);
            capid_buf_puts(&b, ",\"pixels\":");
            sim_faults_config_json(s->faults, &b);
            capid_buf_putc(&b, '}');
        } else if (strcmp(name, "clock") == 0) {
            clock_json(s, &b);
        } else if (strcmp(name, "health") == 0) {
            capid_buf_puts(&b, "{\"ok\":true}");
        } else {
            err = "unknown control endpoint (see docs/SIMULATOR.md)";
            status = 404;
        }
    } else if (strcmp(rq->method, "POST") == 0) {
        if (rq->too_big) {
            err = "control body too large";
        } else {
            cJSON *req = rq->len ? cJSON_ParseWithLength(rq->body, rq->len) : cJSON_CreateObject();
            err = req ? control_post(s, name, req, &b) : "the body is not valid JSON";
            cJSON_Delete(req);
        }
    } else {
        err = "the control API takes GET and POST";
        status = 405;
    }
    if (err) {
        sim_reply_control_error(out, status == 200 ? 400 : status, err);
    } else {
        sim_reply_json(out, 200, b.data ? b.data : "{}", b.data ? b.len : 2);
    }
    capid_buf_release(&b);
    capid_info("control %s %.100s -> %d%s%s", rq->method, rq->url, out->status, err ? ": " : "",
               err ? err : "");
}
