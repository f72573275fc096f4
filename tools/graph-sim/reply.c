/* Replies in Graph's envelopes (meta-capi-spec 1.6) and the defaults of each
 * Graph error code (meta-capi-spec 1.7, reliability-anchors "classification";
 * rows marked "not confirmed" there are the simulator's best guess). */
#include "sim.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"

const char *sim_kind_name(enum sim_kind k)
{
    static const char *names[] = {"ok", "error", "html", "hang", "reset", "wrong_count"};
    return (unsigned)k < sizeof(names) / sizeof(names[0]) ? names[k] : "?";
}

void sim_reply_init(struct sim_reply *r)
{
    memset(r, 0, sizeof(*r));
    r->kind = SIM_KIND_OK;
    r->status = 200;
    r->ctype = "application/json";
    capid_buf_init(&r->body, 0);
    capid_buf_init(&r->hdrs, 0);
}

void sim_reply_release(struct sim_reply *r)
{
    capid_buf_release(&r->body);
    capid_buf_release(&r->hdrs);
}

void sim_reply_header(struct sim_reply *r, const char *name, const char *value)
{
    capid_buf_append(&r->hdrs, name, strlen(name) + 1);
    capid_buf_append(&r->hdrs, value, strlen(value) + 1);
}

void sim_fbtrace(char out[12])
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    static _Thread_local uint64_t x;
    if (!x)
        x = (uint64_t)capid_mono_ms() * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&x ^
            (uint64_t)time(NULL) << 20;
    for (int i = 0; i < 11; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = alphabet[(x >> 32) & 63];
    }
    out[0] = 'A'; /* Graph's ids start with a letter */
    out[11] = '\0';
}

void sim_code_info(int code, struct sim_code_info *o)
{
    static const struct {
        int code;
        struct sim_code_info info;
    } table[] = {
        {1, {500, 1, "OAuthException", "An unknown error occurred"}},
        {2,
         {503, 1, "OAuthException",
          "An unexpected error has occurred. Please retry your request later."}},
        {4, {400, 1, "OAuthException", "(#4) Application request limit reached"}},
        {10,
         {403, 0, "OAuthException",
          "(#10) Application does not have permission for this "
          "action"}},
        {17, {400, 1, "OAuthException", "(#17) User request limit reached"}},
        {32, {400, 1, "OAuthException", "(#32) Page request limit reached"}},
        {100, {400, 0, "OAuthException", "(#100) Invalid parameter"}},
        {102, {400, 0, "OAuthException", "Session key invalid or no longer valid"}},
        {190, {400, 0, "OAuthException", "Error validating access token: Session has expired"}},
        {341, {400, 1, "OAuthException", "(#341) Application limit reached"}},
        {368,
         {400, 0, "OAuthException",
          "The action attempted has been deemed abusive or is otherwise disallowed"}},
        {613, {400, 1, "OAuthException", "(#613) Calls to this api have exceeded the rate limit."}},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].code == code) {
            *o = table[i].info;
            return;
        }
    if (code >= 80000 && code <= 80014) { /* business use case throttling */
        *o = (struct sim_code_info){400, 1, "OAuthException",
                                    "(#%d) There have been too many calls to this ad-account. "
                                    "Wait a bit and try again."};
        return;
    }
    if (code >= 200 && code <= 299) { /* permissions */
        *o = (struct sim_code_info){403, 0, "OAuthException", "(#%d) Permissions error"};
        return;
    }
    *o = (struct sim_code_info){400, 0, "OAuthException", "(#%d) Simulated error"};
}

int sim_code_for_status(int status)
{
    switch (status) {
    case 401:
        return 190;
    case 403:
        return 200;
    case 429:
        return 17;
    case 500:
        return 1;
    default:
        return status >= 500 ? 2 : 100;
    }
}

void sim_reply_error(struct sim_reply *r, int status, int code, int subcode, int transient,
                     const char *type, const char *message, const char *title, const char *user_msg)
{
    struct sim_code_info ci;
    sim_code_info(code, &ci);
    char msg[160], trace[12];
    if (!message) {
        /* The table's messages hold at most one %d, for the code. */
        const char *pct = strstr(ci.message, "%d");
        if (pct)
            snprintf(msg, sizeof(msg), "%.*s%d%s", (int)(pct - ci.message), ci.message, code,
                     pct + 2);
        else
            snprintf(msg, sizeof(msg), "%s", ci.message);
        message = msg;
    }
    sim_fbtrace(trace);
    r->kind = SIM_KIND_ERROR;
    r->status = status ? status : ci.status;
    r->code = code;
    r->subcode = subcode;
    r->ctype = "application/json";
    struct capid_buf *b = &r->body;
    capid_buf_reset(b);
    capid_buf_puts(b, "{\"error\":{\"message\":");
    capid_buf_json_str(b, message, strlen(message));
    capid_buf_puts(b, ",\"type\":");
    type = type ? type : ci.type;
    capid_buf_json_str(b, type, strlen(type));
    capid_buf_printf(b, ",\"code\":%d", code);
    if (subcode)
        capid_buf_printf(b, ",\"error_subcode\":%d", subcode);
    capid_buf_printf(b, ",\"is_transient\":%s",
                     (transient < 0 ? ci.transient : transient) ? "true" : "false");
    if (title) {
        capid_buf_puts(b, ",\"error_user_title\":");
        capid_buf_json_str(b, title, strlen(title));
    }
    if (user_msg) {
        capid_buf_puts(b, ",\"error_user_msg\":");
        capid_buf_json_str(b, user_msg, strlen(user_msg));
    }
    capid_buf_printf(b, ",\"fbtrace_id\":\"%s\"}}", trace);
}

void sim_reply_success(struct sim_reply *r, long events_received)
{
    char trace[12];
    sim_fbtrace(trace);
    r->status = 200;
    r->ctype = "application/json";
    capid_buf_reset(&r->body);
    capid_buf_printf(&r->body, "{\"events_received\":%ld,\"messages\":[],\"fbtrace_id\":\"%s\"}",
                     events_received, trace);
}

void sim_reply_json(struct sim_reply *r, int status, const char *json, size_t len)
{
    r->status = status;
    r->ctype = "application/json";
    capid_buf_reset(&r->body);
    capid_buf_append(&r->body, json, len);
}

void sim_reply_control_error(struct sim_reply *r, int status, const char *msg)
{
    r->status = status ? status : 400;
    r->ctype = "application/json";
    capid_buf_reset(&r->body);
    capid_buf_puts(&r->body, "{\"error\":");
    capid_buf_json_str(&r->body, msg, strlen(msg));
    capid_buf_putc(&r->body, '}');
}
