/* sim-load: drives capid-graph-sim (or anything that speaks the Conversions
 * API) with realistic 1000-event batches over a few keep-alive connections
 * (libcurl multi) and reports the accepted events per second. Each
 * connection owns a prebuilt body whose event ids carry the request number
 * at fixed offsets, patched in place before each send, so every event is
 * unique and building requests costs next to nothing.
 *
 * usage: sim-load --url http://127.0.0.1:PORT [--pixel ID] [--token TOKEN |
 *        --token-env NAME] [--api-version v21.0] [--connections N]
 *        [--requests N] [--batch N] */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/clock.h"

#define MAX_CONNS  256
#define REQ_DIGITS 10

struct conn {
    CURL *h;
    struct capid_buf body;
    size_t *offsets; /* where each event's request number starts */
    char resp[4096];
    size_t resp_len;
    struct curl_slist *hdrs;
};

struct load {
    const char *url, *pixel, *token, *version;
    int conns, batch;
    long requests;
    uint64_t nonce;
};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* 64 lowercase hex characters, the shape of a SHA-256 digest. */
static void put_hex64(struct capid_buf *b)
{
    static const char hex[] = "0123456789abcdef";
    char s[64];
    for (int i = 0; i < 64; i += 16) {
        uint64_t v = rnd();
        for (int k = 0; k < 16; k++)
            s[i + k] = hex[(v >> (4 * k)) & 15];
    }
    capid_buf_append(b, s, 64);
}

/* Builds one connection's body: a realistic website batch (em, ph,
 * external_id, ip, user agent, fbp, fbc, custom_data with contents). */
static void build_body(const struct load *L, struct conn *c, int64_t now)
{
    static const char *names[] = {"Purchase", "AddToCart", "ViewContent", "PageView", "Lead"};
    struct capid_buf *b = &c->body;
    capid_buf_init(b, 0);
    c->offsets = calloc((size_t)L->batch, sizeof(*c->offsets));
    if (!c->offsets)
        abort();
    capid_buf_puts(b, "{\"data\":[");
    for (int i = 0; i < L->batch; i++) {
        int k = (int)(rnd() % 1000);
        capid_buf_printf(
            b, "%s{\"event_name\":\"%s\",\"event_time\":%lld,\"event_id\":\"ld-%016" PRIx64 "-",
            i ? "," : "", names[i % 5], (long long)(now - (int64_t)(rnd() % 3600)), L->nonce);
        c->offsets[i] = b->len;
        capid_buf_printf(b,
                         "%0*d-%04d\",\"action_source\":\"website\",\"event_source_url\":"
                         "\"https://shop.example/p/%d?utm_source=fb\",\"user_data\":{\"em\":[\"",
                         REQ_DIGITS, 0, i, k);
        put_hex64(b);
        capid_buf_puts(b, "\"],\"ph\":[\"");
        put_hex64(b);
        capid_buf_puts(b, "\"],\"external_id\":[\"");
        put_hex64(b);
        capid_buf_printf(
            b,
            "\"],\"client_ip_address\":\"203.0.113.%d\",\"client_user_agent\":\"Mozilla/5.0 "
            "(X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 "
            "Safari/537.36\",\"fbp\":\"fb.1.1700000000001.%u\",\"fbc\":"
            "\"fb.1.1700000000000.IwAR2F4-dbP0l7Mn1_aB%d\"},\"custom_data\":{\"value\":%d.%02d,"
            "\"currency\":\"EUR\",\"order_id\":\"ORD-%d\",\"contents\":[{\"id\":\"P-%d\","
            "\"quantity\":%d,\"item_price\":%d.5}],\"content_ids\":[\"P-%d\"],"
            "\"content_type\":\"product\"}}",
            k % 250, (unsigned)(rnd() % 2000000000u), k, k % 500, k % 100, k, k % 40, k % 5 + 1,
            k % 90, k % 40);
    }
    capid_buf_puts(b, "],\"access_token\":");
    capid_buf_json_str(b, L->token, strlen(L->token));
    capid_buf_puts(b, ",\"partner_agent\":\"sim-load\"}");
}

/* Writes request number n into every event id of the body. */
static void patch(const struct load *L, struct conn *c, long n)
{
    char digits[32];
    snprintf(digits, sizeof(digits), "%0*ld", REQ_DIGITS, n % 10000000000L);
    for (int i = 0; i < L->batch; i++)
        memcpy(c->body.data + c->offsets[i], digits, REQ_DIGITS);
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct conn *c = arg;
    size_t len = size * n, room = sizeof(c->resp) - 1 - c->resp_len;
    size_t k = len < room ? len : room;
    memcpy(c->resp + c->resp_len, p, k);
    c->resp_len += k;
    c->resp[c->resp_len] = '\0';
    return len;
}

/* events_received from a success body, -1 if absent. */
static long events_received(const char *body)
{
    const char *p = strstr(body, "\"events_received\":");
    return p ? strtol(p + 18, NULL, 10) : -1;
}

static void usage(void)
{
    fputs("usage: sim-load --url http://127.0.0.1:PORT [--pixel ID] [--token TOKEN | "
          "--token-env NAME]\n"
          "                [--api-version v21.0] [--connections N] [--requests N] [--batch N]\n",
          stderr);
}

/* Sends --requests batches over --connections handles, keeping each busy,
 * and prints one summary line. Exits 1 if any request was not a 200 with
 * events_received equal to the batch size. */
int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"url", required_argument, 0, 'u'},
        {"pixel", required_argument, 0, 'p'},
        {"token", required_argument, 0, 't'},
        {"token-env", required_argument, 0, 'T'},
        {"api-version", required_argument, 0, 'v'},
        {"connections", required_argument, 0, 'c'},
        {"requests", required_argument, 0, 'n'},
        {"batch", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct load L = {NULL, "1234", "sim-load-token", "v21.0", 4, 1000, 200, 0};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u':
            L.url = optarg;
            break;
        case 'p':
            L.pixel = optarg;
            break;
        case 't':
            L.token = optarg;
            break;
        case 'T':
            L.token = getenv(optarg);
            if (!L.token) {
                fprintf(stderr, "sim-load: environment variable '%s' is not set\n", optarg);
                return 2;
            }
            break;
        case 'v':
            L.version = optarg;
            break;
        case 'c':
            L.conns = atoi(optarg);
            break;
        case 'n':
            L.requests = atol(optarg);
            break;
        case 'b':
            L.batch = atoi(optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (!L.url || L.conns < 1 || L.conns > MAX_CONNS || L.requests < 1 || L.batch < 1 ||
        L.batch > 100000) {
        usage();
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    L.nonce = ((uint64_t)capid_now_ms() << 16) ^ (uint64_t)getpid();
    rng_state ^= L.nonce;
    char url[1024];
    snprintf(url, sizeof(url), "%s/%s/%s/events", L.url, L.version, L.pixel);
    struct conn *cs = calloc((size_t)L.conns, sizeof(*cs));
    CURLM *m = curl_multi_init();
    if (!cs || !m)
        abort();
    int64_t now = capid_now_s();
    long sent = 0, done = 0, failed = 0, events = 0;
    for (int i = 0; i < L.conns; i++) {
        struct conn *c = &cs[i];
        build_body(&L, c, now);
        c->h = curl_easy_init();
        c->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        c->hdrs = curl_slist_append(c->hdrs, "Expect:"); /* no 100-continue round trip */
        curl_easy_setopt(c->h, CURLOPT_URL, url);
        curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, c->hdrs);
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, c->body.data);
        curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body.len);
        curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c->h, CURLOPT_WRITEDATA, c);
        curl_easy_setopt(c->h, CURLOPT_PRIVATE, c);
        curl_easy_setopt(c->h, CURLOPT_TIMEOUT, 60L);
    }
    int64_t t0 = capid_mono_ms();
    for (int i = 0; i < L.conns && sent < L.requests; i++) {
        patch(&L, &cs[i], ++sent);
        curl_multi_add_handle(m, cs[i].h);
    }
    while (done < sent) {
        int running = 0, left = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct conn *c;
            long code = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            long got = msg->data.result == CURLE_OK && code == 200 ? events_received(c->resp) : -1;
            if (got == L.batch)
                events += got;
            else {
                if (failed++ < 3)
                    fprintf(stderr, "sim-load: request failed: %s, HTTP %ld: %.300s\n",
                            curl_easy_strerror(msg->data.result), code, c->resp);
            }
            done++;
            c->resp_len = 0;
            curl_multi_remove_handle(m, c->h);
            if (sent < L.requests) {
                patch(&L, c, ++sent);
                curl_multi_add_handle(m, c->h);
            }
        }
        if (done < sent)
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    double secs = (double)(capid_mono_ms() - t0) / 1000.0;
    if (secs <= 0)
        secs = 0.001;
    printf("sim-load: %ld requests, %ld events accepted in %.3f s: %.0f events/s "
           "(%d connections, %d events per batch, %ld failed)\n",
           done, events, secs, (double)events / secs, L.conns, L.batch, failed);
    for (int i = 0; i < L.conns; i++) {
        curl_easy_cleanup(cs[i].h);
        curl_slist_free_all(cs[i].hdrs);
        capid_buf_release(&cs[i].body);
        free(cs[i].offsets);
    }
    free(cs);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
