#include "deliver/graph.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/clock.h"
#include "util/err.h"
#include "util/log.h"

struct capid_graph {
    CURLM *multi;
    struct curl_slist *headers;
    char *user_agent;
    struct capid_graph_req *free_list;
    struct capid_graph_req *done_head, *done_tail;
    int inflight;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct capid_graph *capid_graph_new(const char *user_agent)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return NULL;
    struct capid_graph *g = calloc(1, sizeof(*g));
    if (!g)
        abort();
    g->multi = curl_multi_init();
    g->user_agent = strdup(user_agent ? user_agent : "capid");
    /* Expect: 100-continue would cost a round trip per large body. */
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = h ? curl_slist_append(h, "Accept: application/json") : NULL;
    h = h ? curl_slist_append(h, "Expect:") : NULL;
    g->headers = h;
    if (!g->multi || !g->user_agent || !h) {
        capid_graph_free(g);
        return NULL;
    }
    /* Several requests share one HTTP/2 connection when the server allows. */
    curl_multi_setopt(g->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    return g;
}

static void req_destroy(struct capid_graph_req *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    capid_buf_release(&r->body);
    capid_buf_release(&r->resp);
    free(r);
}

void capid_graph_free(struct capid_graph *g)
{
    if (!g)
        return;
    while (g->free_list) {
        struct capid_graph_req *r = g->free_list;
        g->free_list = r->next;
        req_destroy(r);
    }
    /* Requests still in flight belong to the caller; only detach them. */
    if (g->multi)
        curl_multi_cleanup(g->multi);
    curl_slist_free_all(g->headers);
    free(g->user_agent);
    free(g);
}

struct capid_graph_req *capid_graph_req_new(struct capid_graph *g)
{
    struct capid_graph_req *r = g->free_list;
    if (r) {
        g->free_list = r->next;
        r->next = NULL;
        return r;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    capid_buf_init(&r->body, 0);
    capid_buf_init(&r->resp, CAPID_GRAPH_MAX_RESPONSE);
    return r;
}

void capid_graph_req_free(struct capid_graph *g, struct capid_graph_req *r)
{
    if (!r)
        return;
    /* Keep at most a modest buffer around: a 1000-event body can be MBs. */
    if (r->body.cap > (4u << 20)) {
        capid_buf_release(&r->body);
        capid_buf_init(&r->body, 0);
    }
    capid_buf_reset(&r->body);
    capid_buf_reset(&r->resp);
    r->user = NULL;
    r->next = g->free_list;
    g->free_list = r;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct capid_graph_req *r = ud;
    /* Over the cap: returning less aborts the transfer (classified as a
     * broken connection, so retried). */
    return capid_buf_append(&r->resp, p, size * n) == CAPID_OK ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct capid_graph_req *r = ud;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof(name) - 1 && len < 200 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
        char v[200];
        memcpy(v, p + sizeof(name) - 1, len - (sizeof(name) - 1));
        v[len - (sizeof(name) - 1)] = '\0';
        v[strcspn(v, "\r\n")] = '\0';
        r->retry_after_ms = capid_retry_after_parse(v, capid_now_s());
    }
    return len;
}

int capid_graph_send(struct capid_graph *g, struct capid_graph_req *r, const char *url,
                     long timeout_ms)
{
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return CAPID_EINVAL;
    CURL *e = r->easy;
    if (!e) {
        e = curl_easy_init();
        if (!e)
            abort();
        r->easy = e;
    } else {
        curl_easy_reset(e);
    }
    capid_buf_reset(&r->resp);
    r->retry_after_ms = -1;
    memset(&r->result, 0, sizeof(r->result));
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body.data ? r->body.data : "");
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, g->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, g->user_agent);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L); /* prefer multiplexing over a new connection */
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    r->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    if (curl_multi_add_handle(g->multi, e) != CURLM_OK)
        abort(); /* only on misuse or out of memory */
    r->started_ms = capid_mono_ms();
    r->active = 1;
    g->inflight++;
    return CAPID_OK;
}

static enum capid_transport transport_of(CURLcode c)
{
    switch (c) {
    case CURLE_OK:
        return CAPID_TR_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return CAPID_TR_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return CAPID_TR_CONNECT;
    default:
        return CAPID_TR_IO;
    }
}

static void collect(struct capid_graph *g)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(g->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        struct capid_graph_req *r = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(g->multi, e);
        r->active = 0;
        g->inflight--;
        r->result.transport = transport_of(rc);
        r->result.status = rc == CURLE_OK ? status : 0;
        r->result.body = r->resp.data;
        r->result.body_len = r->resp.len;
        r->result.retry_after_ms = r->retry_after_ms;
        r->result.detail = NULL;
        if (rc != CURLE_OK) /* libcurl's text names the host, never the body */
            r->result.detail = r->errbuf[0] ? r->errbuf : curl_easy_strerror(rc);
        r->next = NULL;
        if (g->done_tail)
            g->done_tail->next = r;
        else
            g->done_head = r;
        g->done_tail = r;
    }
}

int capid_graph_poll(struct capid_graph *g, int timeout_ms)
{
    int running = 0;
    if (timeout_ms < 0)
        timeout_ms = 0;
    CURLMcode mc = curl_multi_poll(g->multi, NULL, 0, timeout_ms, NULL);
    if (mc == CURLM_OK)
        mc = curl_multi_perform(g->multi, &running);
    if (mc != CURLM_OK) {
        capid_error("http client failed: %s", curl_multi_strerror(mc));
        return CAPID_EIO;
    }
    collect(g);
    return CAPID_OK;
}

struct capid_graph_req *capid_graph_done(struct capid_graph *g)
{
    struct capid_graph_req *r = g->done_head;
    if (r) {
        g->done_head = r->next;
        if (!g->done_head)
            g->done_tail = NULL;
        r->next = NULL;
    }
    return r;
}

void capid_graph_abort(struct capid_graph *g, struct capid_graph_req *r)
{
    if (!r->easy || !r->active)
        return;
    curl_multi_remove_handle(g->multi, r->easy);
    r->active = 0;
    g->inflight--;
}

int capid_graph_inflight(const struct capid_graph *g)
{
    return g->inflight;
}

void capid_graph_wake(struct capid_graph *g)
{
    curl_multi_wakeup(g->multi);
}
