#include "deliver/classify.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *capid_outcome_name(enum capid_outcome o)
{
    static const char *names[] = {"delivered", "retry", "throttled", "pause", "reject"};
    return (unsigned)o < CAPID_OUT__COUNT ? names[o] : "unknown";
}

/* Graph codes (meta-capi-spec 1.7, SPEC 7). */
static bool code_pauses(int c)
{
    return c == 190 || c == 102 || c == 10 || (c >= 200 && c <= 299);
}

static bool code_throttles(int c)
{
    return c == 4 || c == 17 || c == 32 || c == 613 || (c >= 80000 && c <= 80014);
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static int json_int(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) && v->valuedouble >= -2e9 && v->valuedouble <= 2e9 ? v->valueint : 0;
}

/* Reads Graph's error envelope into v; false when the body has none. */
static bool read_error(const cJSON *root, struct capid_verdict *v)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (!cJSON_IsObject(e))
        return false;
    v->code = json_int(e, "code");
    v->subcode = json_int(e, "error_subcode");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "is_transient");
    v->is_transient = cJSON_IsBool(t) ? cJSON_IsTrue(t) : -1;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    copy_str(v->message, sizeof(v->message), cJSON_IsString(m) ? m->valuestring : "");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(e, "fbtrace_id");
    if (cJSON_IsString(f))
        copy_str(v->fbtrace_id, sizeof(v->fbtrace_id), f->valuestring);
    /* Keep the whole object for the dead letter when it fits. */
    char *s = cJSON_PrintUnformatted(e);
    if (s && strlen(s) < sizeof(v->error_json))
        memcpy(v->error_json, s, strlen(s) + 1);
    else if (s) /* too long: the fields that matter, rebuilt */
        snprintf(v->error_json, sizeof(v->error_json),
                 "{\"code\":%d,\"error_subcode\":%d,\"truncated\":true}", v->code, v->subcode);
    cJSON_free(s);
    return true;
}

static const char *transport_text(enum capid_transport t)
{
    switch (t) {
    case CAPID_TR_TIMEOUT:
        return "request timed out";
    case CAPID_TR_CONNECT:
        return "cannot connect";
    case CAPID_TR_IO:
        return "connection broken";
    default:
        return "";
    }
}

void capid_deliver_classify(const struct capid_graph_result *r, size_t nevents,
                            struct capid_verdict *v)
{
    memset(v, 0, sizeof(*v));
    v->events_received = -1;
    v->is_transient = -1;
    v->retry_after_ms = -1;
    if (r->transport != CAPID_TR_OK) {
        v->outcome = CAPID_OUT_RETRY;
        if (r->detail && *r->detail)
            snprintf(v->message, sizeof(v->message), "%s: %s", transport_text(r->transport),
                     r->detail);
        else
            copy_str(v->message, sizeof(v->message), transport_text(r->transport));
        return;
    }
    cJSON *root = r->body && r->body_len ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
    long st = r->status;
    if (st >= 200 && st <= 299) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "events_received");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "fbtrace_id");
        if (cJSON_IsString(f))
            copy_str(v->fbtrace_id, sizeof(v->fbtrace_id), f->valuestring);
        if (cJSON_IsNumber(n))
            v->events_received = (long)n->valuedouble;
        if (v->events_received == (long)nevents) {
            v->outcome = CAPID_OUT_DELIVERED;
        } else {
            /* Meta did not confirm every event: send again (same event_id,
             * Meta deduplicates). */
            v->outcome = CAPID_OUT_RETRY;
            v->anomaly = true;
            snprintf(v->message, sizeof(v->message),
                     root ? "HTTP %ld with events_received %ld for %zu events"
                          : "HTTP %ld with a body that is not JSON",
                     st, v->events_received, nevents);
        }
        cJSON_Delete(root);
        return;
    }
    bool has_error = root && read_error(root, v);
    if (!has_error || !v->message[0])
        snprintf(v->message, sizeof(v->message), "HTTP %ld%s", st,
                 has_error ? "" : " without a Graph error");
    v->retry_after_ms = r->retry_after_ms;
    if (code_pauses(v->code))
        v->outcome = CAPID_OUT_PAUSE;
    else if (st == 429 || code_throttles(v->code))
        v->outcome = CAPID_OUT_THROTTLED;
    else if (v->code == 1 || v->code == 2 || v->is_transient == 1 || st >= 500 || st == 408)
        v->outcome = CAPID_OUT_RETRY;
    else if (st >= 400 && st <= 499)
        v->outcome = CAPID_OUT_REJECT;
    else
        v->outcome = CAPID_OUT_RETRY; /* 1xx, 3xx: not Meta's answer */
    cJSON_Delete(root);
}

int64_t capid_retry_after_parse(const char *value, int64_t now_s)
{
    if (!value)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (isdigit((unsigned char)*value)) {
        char *end;
        long long s = strtoll(value, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        if (*end || s < 0)
            return -1;
        return s > 86400 ? 86400000 : s * 1000; /* a day at most */
    }
    struct tm tm = {0};
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end)
        return -1;
    int64_t at = (int64_t)timegm(&tm);
    int64_t d = at - now_s;
    return d <= 0 ? 0 : (d > 86400 ? 86400000 : d * 1000);
}

int64_t capid_backoff_cap_ms(int attempt, int64_t initial_ms, int64_t max_ms)
{
    if (attempt < 1)
        attempt = 1;
    int64_t cap = initial_ms;
    for (int i = 1; i < attempt && cap < max_ms; i++)
        cap *= 2;
    return cap < max_ms ? cap : max_ms;
}

int64_t capid_backoff_ms(int attempt, int64_t initial_ms, int64_t max_ms, uint64_t rnd)
{
    int64_t cap = capid_backoff_cap_ms(attempt, initial_ms, max_ms);
    /* Full jitter (the AWS architecture blog's name): uniform in [0, cap]. */
    return (int64_t)(rnd % ((uint64_t)cap + 1));
}

bool capid_deliver_too_old(int64_t event_time, const char *action_source, int64_t now_s)
{
    int64_t limit = action_source && strcmp(action_source, "physical_store") == 0
                        ? CAPID_MAX_AGE_STORE_S
                        : CAPID_MAX_AGE_S;
    return now_s - event_time > limit;
}

bool capid_deliver_window_exceeded(int attempts, int max_attempts, int64_t enqueued_at,
                                   int64_t retry_window_s, int64_t now_s)
{
    return attempts >= max_attempts && now_s - enqueued_at >= retry_window_s;
}
