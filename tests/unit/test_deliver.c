/* Delivery decisions: every row of SPEC 7's classification table, the
 * Retry-After parser, backoff with full jitter, and the two age rules. */
#include "test.h"

#include "deliver/classify.h"
#include "metrics/metrics.h"
#include "util/buf.h"

struct case_ {
    const char *name;
    enum capid_transport transport;
    long status;
    const char *body;
    int64_t retry_after_ms;
    size_t nevents;
    enum capid_outcome want;
    int code, subcode;
    bool anomaly;
    int64_t want_retry_after_ms; /* -1: none */
    const char *fbtrace;         /* NULL: not checked */
};

#define ERR(code, extra)                                                                           \
    "{\"error\":{\"message\":\"m\",\"type\":\"OAuthException\",\"code\":" #code extra "}}"

static const struct case_ cases[] = {
    /* 2xx, events_received == batch size: delivered, fbtrace_id kept */
    {"2xx_full_count", CAPID_TR_OK, 200,
     "{\"events_received\":3,\"messages\":[],\"fbtrace_id\":\"AbCdEfGh123\"}", -1, 3,
     CAPID_OUT_DELIVERED, 0, 0, false, -1, "AbCdEfGh123"},
    {"201_full_count", CAPID_TR_OK, 201, "{\"events_received\":1,\"fbtrace_id\":\"X\"}", -1, 1,
     CAPID_OUT_DELIVERED, 0, 0, false, -1, "X"},
    /* 2xx with another count or an unparsable body: retry, anomaly */
    {"2xx_short_count", CAPID_TR_OK, 200, "{\"events_received\":2,\"fbtrace_id\":\"Y\"}", -1, 3,
     CAPID_OUT_RETRY, 0, 0, true, -1, NULL},
    {"2xx_no_count", CAPID_TR_OK, 200, "{\"fbtrace_id\":\"Y\"}", -1, 3, CAPID_OUT_RETRY, 0, 0, true,
     -1, NULL},
    {"2xx_html", CAPID_TR_OK, 200, "<html>ok</html>", -1, 3, CAPID_OUT_RETRY, 0, 0, true, -1, NULL},
    {"2xx_empty", CAPID_TR_OK, 204, NULL, -1, 3, CAPID_OUT_RETRY, 0, 0, true, -1, NULL},
    /* timeout, connection error, 5xx, code 1 or 2, is_transient: retry */
    {"timeout", CAPID_TR_TIMEOUT, 0, NULL, -1, 5, CAPID_OUT_RETRY, 0, 0, false, -1, NULL},
    {"connect_refused", CAPID_TR_CONNECT, 0, NULL, -1, 5, CAPID_OUT_RETRY, 0, 0, false, -1, NULL},
    {"connection_reset", CAPID_TR_IO, 0, NULL, -1, 5, CAPID_OUT_RETRY, 0, 0, false, -1, NULL},
    {"500_no_body", CAPID_TR_OK, 500, NULL, -1, 5, CAPID_OUT_RETRY, 0, 0, false, -1, NULL},
    {"502_html", CAPID_TR_OK, 502, "<html>bad gateway</html>", -1, 5, CAPID_OUT_RETRY, 0, 0, false,
     -1, NULL},
    {"503_code_2", CAPID_TR_OK, 503, ERR(2, ",\"is_transient\":true"), -1, 5, CAPID_OUT_RETRY, 2, 0,
     false, -1, NULL},
    {"500_code_1", CAPID_TR_OK, 500, ERR(1, ""), -1, 5, CAPID_OUT_RETRY, 1, 0, false, -1, NULL},
    {"400_code_1", CAPID_TR_OK, 400, ERR(1, ""), -1, 5, CAPID_OUT_RETRY, 1, 0, false, -1, NULL},
    {"400_code_2", CAPID_TR_OK, 400, ERR(2, ""), -1, 5, CAPID_OUT_RETRY, 2, 0, false, -1, NULL},
    {"400_is_transient", CAPID_TR_OK, 400, ERR(9999, ",\"is_transient\":true"), -1, 5,
     CAPID_OUT_RETRY, 9999, 0, false, -1, NULL},
    {"408_proxy_timeout", CAPID_TR_OK, 408, NULL, -1, 5, CAPID_OUT_RETRY, 0, 0, false, -1, NULL},
    {"302_redirect_not_followed", CAPID_TR_OK, 302, NULL, -1, 5, CAPID_OUT_RETRY, 0, 0, false, -1,
     NULL},
    /* HTTP 429, codes 4, 17, 32, 613, 80000-80014: throttled */
    {"429_retry_after", CAPID_TR_OK, 429, ERR(17, ",\"is_transient\":true"), 2000, 5,
     CAPID_OUT_THROTTLED, 17, 0, false, 2000, NULL},
    {"429_no_body", CAPID_TR_OK, 429, NULL, -1, 5, CAPID_OUT_THROTTLED, 0, 0, false, -1, NULL},
    {"400_code_4", CAPID_TR_OK, 400, ERR(4, ""), -1, 5, CAPID_OUT_THROTTLED, 4, 0, false, -1, NULL},
    {"400_code_17", CAPID_TR_OK, 400, ERR(17, ",\"is_transient\":true"), 5000, 5,
     CAPID_OUT_THROTTLED, 17, 0, false, 5000, NULL},
    {"400_code_32", CAPID_TR_OK, 400, ERR(32, ""), -1, 5, CAPID_OUT_THROTTLED, 32, 0, false, -1,
     NULL},
    {"400_code_613", CAPID_TR_OK, 400, ERR(613, ""), -1, 5, CAPID_OUT_THROTTLED, 613, 0, false, -1,
     NULL},
    {"400_code_80000", CAPID_TR_OK, 400, ERR(80000, ""), -1, 5, CAPID_OUT_THROTTLED, 80000, 0,
     false, -1, NULL},
    {"400_code_80014", CAPID_TR_OK, 400, ERR(80014, ""), -1, 5, CAPID_OUT_THROTTLED, 80014, 0,
     false, -1, NULL},
    /* 190, 102, 10, 200-299: pause */
    {"190_token", CAPID_TR_OK, 400, ERR(190, ",\"error_subcode\":460"), -1, 5, CAPID_OUT_PAUSE, 190,
     460, false, -1, NULL},
    {"401_190", CAPID_TR_OK, 401, ERR(190, ""), -1, 5, CAPID_OUT_PAUSE, 190, 0, false, -1, NULL},
    {"102_session", CAPID_TR_OK, 400, ERR(102, ""), -1, 5, CAPID_OUT_PAUSE, 102, 0, false, -1,
     NULL},
    {"10_permission", CAPID_TR_OK, 403, ERR(10, ""), -1, 5, CAPID_OUT_PAUSE, 10, 0, false, -1,
     NULL},
    {"200_permission", CAPID_TR_OK, 403, ERR(200, ""), -1, 5, CAPID_OUT_PAUSE, 200, 0, false, -1,
     NULL},
    {"299_permission", CAPID_TR_OK, 400, ERR(299, ""), -1, 5, CAPID_OUT_PAUSE, 299, 0, false, -1,
     NULL},
    {"190_in_a_500", CAPID_TR_OK, 500, ERR(190, ""), -1, 5, CAPID_OUT_PAUSE, 190, 0, false, -1,
     NULL},
    /* code 100, other 4xx: reject (split) */
    {"400_code_100", CAPID_TR_OK, 400, ERR(100, ",\"error_subcode\":2804003"), -1, 5,
     CAPID_OUT_REJECT, 100, 2804003, false, -1, NULL},
    {"400_code_300_not_permission", CAPID_TR_OK, 400, ERR(300, ""), -1, 5, CAPID_OUT_REJECT, 300, 0,
     false, -1, NULL},
    {"400_code_80015_not_throttle", CAPID_TR_OK, 400, ERR(80015, ""), -1, 5, CAPID_OUT_REJECT,
     80015, 0, false, -1, NULL},
    {"400_code_368", CAPID_TR_OK, 400, ERR(368, ""), -1, 5, CAPID_OUT_REJECT, 368, 0, false, -1,
     NULL},
    {"404_html", CAPID_TR_OK, 404, "<html>not found</html>", -1, 5, CAPID_OUT_REJECT, 0, 0, false,
     -1, NULL},
    {"413_too_large", CAPID_TR_OK, 413, NULL, -1, 5, CAPID_OUT_REJECT, 0, 0, false, -1, NULL},
    {"400_is_transient_false", CAPID_TR_OK, 400, ERR(100, ",\"is_transient\":false"), -1, 5,
     CAPID_OUT_REJECT, 100, 0, false, -1, NULL},
};

TEST(deliver_classify_spec7_table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct case_ *c = &cases[i];
        struct capid_graph_result r = {c->transport,      c->status,
                                       c->body,           c->body ? strlen(c->body) : 0,
                                       c->retry_after_ms, NULL};
        struct capid_verdict v;
        capid_deliver_classify(&r, c->nevents, &v);
        if (v.outcome != c->want)
            capid_test_fail(__FILE__, __LINE__, "%s: outcome %s, want %s", c->name,
                            capid_outcome_name(v.outcome), capid_outcome_name(c->want));
        if (v.code != c->code || v.subcode != c->subcode)
            capid_test_fail(__FILE__, __LINE__, "%s: code %d/%d, want %d/%d", c->name, v.code,
                            v.subcode, c->code, c->subcode);
        if (v.anomaly != c->anomaly)
            capid_test_fail(__FILE__, __LINE__, "%s: anomaly %d, want %d", c->name, v.anomaly,
                            c->anomaly);
        if (c->want == CAPID_OUT_THROTTLED && v.retry_after_ms != c->want_retry_after_ms)
            capid_test_fail(__FILE__, __LINE__, "%s: retry_after %lld, want %lld", c->name,
                            (long long)v.retry_after_ms, (long long)c->want_retry_after_ms);
        if (c->fbtrace && strcmp(v.fbtrace_id, c->fbtrace) != 0)
            capid_test_fail(__FILE__, __LINE__, "%s: fbtrace_id \"%s\", want \"%s\"", c->name,
                            v.fbtrace_id, c->fbtrace);
        if (!v.message[0] && c->want != CAPID_OUT_DELIVERED)
            capid_test_fail(__FILE__, __LINE__, "%s: no message for the log", c->name);
    }
}

TEST(deliver_classify_keeps_meta_error_for_dead_letters)
{
    const char *body = "{\"error\":{\"message\":\"Invalid parameter\",\"type\":\"OAuthException\","
                       "\"code\":100,\"error_subcode\":2804003,\"is_transient\":false,"
                       "\"error_user_title\":\"t\",\"fbtrace_id\":\"AXYZ\"}}";
    struct capid_graph_result r = {CAPID_TR_OK, 400, body, strlen(body), -1, NULL};
    struct capid_verdict v;
    capid_deliver_classify(&r, 1, &v);
    ASSERT_INT(v.outcome, CAPID_OUT_REJECT);
    ASSERT_STR(v.message, "Invalid parameter");
    ASSERT_STR(v.fbtrace_id, "AXYZ");
    ASSERT_INT(v.is_transient, 0);
    ASSERT_TRUE(strstr(v.error_json, "\"error_subcode\":2804003") != NULL);
    ASSERT_TRUE(strstr(v.error_json, "\"error_user_title\":\"t\"") != NULL);
}

TEST(deliver_classify_503_keeps_retry_after)
{
    struct capid_graph_result r = {CAPID_TR_OK, 503, NULL, 0, 30000, NULL};
    struct capid_verdict v;
    capid_deliver_classify(&r, 2, &v);
    ASSERT_INT(v.outcome, CAPID_OUT_RETRY);
    ASSERT_INT(v.retry_after_ms, 30000);
    r = (struct capid_graph_result){CAPID_TR_CONNECT, 0, NULL, 0, -1, "SSL certificate problem"};
    capid_deliver_classify(&r, 2, &v);
    ASSERT_INT(v.outcome, CAPID_OUT_RETRY);
    ASSERT_INT(v.retry_after_ms, -1);
    ASSERT_STR(v.message, "cannot connect: SSL certificate problem");
}

TEST(deliver_retry_after_parse)
{
    ASSERT_INT(capid_retry_after_parse("3", 0), 3000);
    ASSERT_INT(capid_retry_after_parse(" 0 ", 0), 0);
    ASSERT_INT(capid_retry_after_parse("120\r\n", 0), 120000);
    ASSERT_INT(capid_retry_after_parse("999999999", 0), 86400000); /* capped at a day */
    ASSERT_INT(capid_retry_after_parse("-1", 0), -1);
    ASSERT_INT(capid_retry_after_parse("soon", 0), -1);
    ASSERT_INT(capid_retry_after_parse(NULL, 0), -1);
    /* HTTP-date: Sun, 06 Nov 1994 08:49:37 GMT = 784111777 */
    ASSERT_INT(capid_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111770), 7000);
    ASSERT_INT(capid_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", 784111800), 0);
}

TEST(deliver_backoff_full_jitter_bounds)
{
    /* cap doubles from initial, never past max */
    ASSERT_INT(capid_backoff_cap_ms(1, 1000, 300000), 1000);
    ASSERT_INT(capid_backoff_cap_ms(2, 1000, 300000), 2000);
    ASSERT_INT(capid_backoff_cap_ms(9, 1000, 300000), 256000);
    ASSERT_INT(capid_backoff_cap_ms(10, 1000, 300000), 300000);
    ASSERT_INT(capid_backoff_cap_ms(1000, 1000, 300000), 300000);
    ASSERT_INT(capid_backoff_cap_ms(0, 1000, 300000), 1000);
    /* full jitter: uniform in [0, cap]; both ends reachable */
    ASSERT_INT(capid_backoff_ms(3, 1000, 300000, 0), 0);
    ASSERT_INT(capid_backoff_ms(3, 1000, 300000, 4000), 4000);
    ASSERT_INT(capid_backoff_ms(3, 1000, 300000, 4001), 0);
    uint64_t x = 88172645463325252ull;
    for (int attempt = 1; attempt <= 40; attempt++) {
        int64_t cap = capid_backoff_cap_ms(attempt, 50, 5000);
        int64_t lo = INT64_MAX, hi = -1;
        double sum = 0;
        for (int i = 0; i < 2000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int64_t d = capid_backoff_ms(attempt, 50, 5000, x);
            if (d < 0 || d > cap)
                capid_test_fail(__FILE__, __LINE__, "attempt %d: delay %lld outside [0, %lld]",
                                attempt, (long long)d, (long long)cap);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
            sum += (double)d;
        }
        /* spread over the whole range, mean near cap / 2 */
        ASSERT_TRUE(lo <= cap / 10);
        ASSERT_TRUE(hi >= cap - cap / 10);
        double mean = sum / 2000;
        ASSERT_TRUE(mean > (double)cap * 0.4 && mean < (double)cap * 0.6);
    }
}

TEST(deliver_event_age_limits)
{
    int64_t now = 1800000000;
    ASSERT_TRUE(!capid_deliver_too_old(now - 7 * 86400, "website", now));
    ASSERT_TRUE(capid_deliver_too_old(now - 7 * 86400 - 1, "website", now));
    ASSERT_TRUE(capid_deliver_too_old(now - 7 * 86400 - 1, NULL, now));
    ASSERT_TRUE(!capid_deliver_too_old(now - 30 * 86400, "physical_store", now));
    ASSERT_TRUE(!capid_deliver_too_old(now - 62 * 86400, "physical_store", now));
    ASSERT_TRUE(capid_deliver_too_old(now - 62 * 86400 - 1, "physical_store", now));
    ASSERT_TRUE(!capid_deliver_too_old(now + 60, "website", now));
}

TEST(deliver_retry_window_needs_both_attempts_and_time)
{
    int64_t t0 = 1800000000;
    /* attempts reached, window not */
    ASSERT_TRUE(!capid_deliver_window_exceeded(10, 10, t0, 86400, t0 + 3600));
    /* window reached, attempts not */
    ASSERT_TRUE(!capid_deliver_window_exceeded(9, 10, t0, 86400, t0 + 90000));
    /* both */
    ASSERT_TRUE(capid_deliver_window_exceeded(10, 10, t0, 86400, t0 + 86400));
    ASSERT_TRUE(capid_deliver_window_exceeded(11, 10, t0, 0, t0));
}

TEST(metrics_json_and_prometheus)
{
    const char *names[] = {"a", "b"};
    struct capid_metrics *m = capid_metrics_new(names, 2);
    ASSERT_TRUE(m != NULL);
    struct capid_metrics_dest *a = capid_metrics_dest(m, "a");
    ASSERT_TRUE(a != NULL);
    ASSERT_TRUE(capid_metrics_dest(m, "zz") == NULL);
    capid_metrics_add(a, CAPID_C_EVENTS_DELIVERED, 999);
    capid_metrics_outcome(a, CAPID_OUT_REJECT);
    capid_metrics_dead(a, CAPID_R_GRAPH_REJECTED, 1);
    capid_metrics_set(a, CAPID_G_PAUSED, 1);
    capid_metrics_add(NULL, CAPID_C_REQUESTS, 1); /* unknown destination: ignored */
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_metrics_write_json(m, &b);
    ASSERT_TRUE(strstr(b.data, "\"a\":{\"requests_total\":0") != NULL);
    ASSERT_TRUE(strstr(b.data, "\"events_delivered_total\":999") != NULL);
    ASSERT_TRUE(strstr(b.data, "\"dead\":{\"graph_rejected\":1}") != NULL);
    ASSERT_TRUE(strstr(b.data, "\"reject\":1") != NULL);
    capid_buf_reset(&b);
    capid_metrics_write_prometheus(m, &b);
    ASSERT_TRUE(strstr(b.data, "capid_events_delivered_total{destination=\"a\"} 999\n") != NULL);
    ASSERT_TRUE(strstr(b.data, "capid_paused{destination=\"a\"} 1\n") != NULL);
    ASSERT_TRUE(
        strstr(b.data,
               "capid_events_dead_total{destination=\"a\",reason=\"graph_rejected\"} 1\n") != NULL);
    capid_buf_release(&b);
    capid_metrics_free(m);
    capid_metrics_free(NULL);
}
