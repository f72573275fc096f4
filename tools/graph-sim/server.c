/* HTTP glue: libmicrohttpd with a pool of epoll threads. A request whose
 * answer must wait (latency) or never come (hang) is suspended, so it holds
 * no thread: a timer thread resumes delayed ones when they are due, reset,
 * release and shutdown resume hung ones to close them. A "reset" answer is a
 * callback response that sends half of the body and then aborts the
 * connection, so that the client sees a TCP RST mid-response. */
#include "sim.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "util/clock.h"
#include "util/log.h"

enum { ST_RECV, ST_WAIT, ST_READY, ST_CLOSE };

struct req {
    struct sim_server *srv;
    struct MHD_Connection *conn;
    int state;
    bool control;
    bool listed;  /* in srv->delayed or srv->hung */
    bool too_big; /* the body passed its cap; the rest was discarded */
    struct req *next;
    int64_t due; /* monotonic ms */
    int64_t t_ms;
    struct capid_buf body;
    struct sim_reply reply;
};

struct sim_server {
    struct sim *sim;
    struct MHD_Daemon *d;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    pthread_t timer;
    bool stopping;
    struct req *delayed;
    struct req *hung;
    int nhung;
};

/* Removes r from a list. Under the lock. */
static void unlink_req(struct req **list, struct req *r)
{
    for (struct req **p = list; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            r->next = NULL;
            return;
        }
}

/* The timer thread: resumes each delayed request when it is due, earliest
 * first, until the server stops. Lists are short (one entry per delayed
 * request), so a scan finds the next one. */
static void *timer_main(void *arg)
{
    struct sim_server *srv = arg;
    pthread_mutex_lock(&srv->lock);
    while (!srv->stopping) {
        struct req *first = NULL;
        for (struct req *r = srv->delayed; r; r = r->next)
            if (!first || r->due < first->due)
                first = r;
        if (!first) {
            pthread_cond_wait(&srv->cond, &srv->lock);
            continue;
        }
        int64_t now = capid_mono_ms();
        if (first->due > now) {
            struct timespec ts = {(time_t)(first->due / 1000), (long)(first->due % 1000) * 1000000};
            pthread_cond_timedwait(&srv->cond, &srv->lock, &ts);
            continue;
        }
        unlink_req(&srv->delayed, first);
        first->listed = false;
        first->state = ST_READY;
        /* Suspended connections neither time out nor close, so first stays
         * valid until MHD has resumed it. */
        pthread_mutex_unlock(&srv->lock);
        MHD_resume_connection(first->conn);
        pthread_mutex_lock(&srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

/* Parks r until due (delay) or until released (hang, due < 0). Returns false
 * when the server is stopping and r must be answered now. */
static bool park(struct req *r, int64_t due)
{
    struct sim_server *srv = r->srv;
    pthread_mutex_lock(&srv->lock);
    if (srv->stopping) {
        pthread_mutex_unlock(&srv->lock);
        return false;
    }
    MHD_suspend_connection(r->conn);
    r->state = ST_WAIT;
    r->listed = true;
    r->due = due;
    if (due < 0) {
        r->next = srv->hung;
        srv->hung = r;
        srv->nhung++;
    } else {
        r->next = srv->delayed;
        srv->delayed = r;
        pthread_cond_signal(&srv->cond);
    }
    pthread_mutex_unlock(&srv->lock);
    return true;
}

int sim_server_release(struct sim_server *srv)
{
    if (!srv)
        return 0; /* --control release at start */
    pthread_mutex_lock(&srv->lock);
    struct req *list = srv->hung;
    int n = srv->nhung;
    srv->hung = NULL;
    srv->nhung = 0;
    for (struct req *r = list; r; r = r->next) {
        r->listed = false;
        r->state = ST_CLOSE;
    }
    pthread_mutex_unlock(&srv->lock);
    while (list) {
        struct req *r = list;
        list = r->next;
        r->next = NULL;
        MHD_resume_connection(r->conn);
    }
    return n;
}

int sim_server_hung(struct sim_server *srv)
{
    if (!srv)
        return 0;
    pthread_mutex_lock(&srv->lock);
    int n = srv->nhung;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

struct cut {
    int fd;
    char *data;
    size_t len, half;
};

/* Sends the first half of the body, then aborts the connection. */
static ssize_t cut_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct cut *c = cls;
    if (pos < c->half) {
        size_t n = c->half - (size_t)pos;
        n = n < max ? n : max;
        memcpy(buf, c->data + pos, n);
        return (ssize_t)n;
    }
    /* MHD would shut the socket down (FIN) before closing it; disconnecting
     * a TCP socket with AF_UNSPEC makes Linux send the RST right now
     * (tcp_disconnect), and the linger of 0 covers the close after it. */
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    struct sockaddr unspec = {.sa_family = AF_UNSPEC};
    connect(c->fd, &unspec, sizeof(unspec));
    return MHD_CONTENT_READER_END_WITH_ERROR;
}

static void cut_free(void *cls)
{
    struct cut *c = cls;
    free(c->data);
    free(c);
}

/* Queues r's reply on its connection: the body handed to MHD (or to the
 * cutting callback for a reset), the content type and the extra headers. */
static enum MHD_Result respond(struct req *r)
{
    struct sim_reply *rp = &r->reply;
    struct MHD_Response *resp;
    size_t len = 0;
    char *data = capid_buf_detach(&rp->body, &len);
    if (rp->kind == SIM_KIND_RESET) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct cut *c = malloc(sizeof(*c));
        if (!c || !ci)
            abort();
        *c = (struct cut){ci->connect_fd, data, len, len / 2};
        resp = MHD_create_response_from_callback(len, 4096, cut_reader, c, cut_free);
    } else {
        resp = MHD_create_response_from_buffer(
            len, data ? data : (char *)"", data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    }
    if (!resp)
        abort();
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, rp->ctype);
    for (size_t off = 0; off < rp->hdrs.len;) {
        const char *name = rp->hdrs.data + off;
        const char *value = name + strlen(name) + 1;
        MHD_add_response_header(resp, name, value);
        off = (size_t)(value + strlen(value) + 1 - rp->hdrs.data);
    }
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)rp->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* First call for a request: its state, a body buffer sized from
 * Content-Length (within the cap), and the in-flight count for Graph
 * requests, which feeds max_concurrent. */
static void start_req(struct sim_server *srv, struct MHD_Connection *conn, const char *url,
                      void **req_cls)
{
    struct sim *s = srv->sim;
    struct req *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->srv = srv;
    r->conn = conn;
    r->state = ST_RECV;
    r->control = strncmp(url, "/_sim/", 6) == 0;
    r->t_ms = capid_now_ms();
    size_t max = r->control ? SIM_MAX_CONTROL : s->max_body;
    capid_buf_init(&r->body, max);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > 0 && n <= max)
            capid_buf_grow(&r->body, (size_t)n); /* one allocation for the body */
    }
    sim_reply_init(&r->reply);
    if (!r->control) {
        int now = atomic_fetch_add(&s->in_flight, 1) + 1;
        int seen = atomic_load(&s->max_concurrent);
        while (now > seen && !atomic_compare_exchange_weak(&s->max_concurrent, &seen, now))
            ;
    }
    *req_cls = r;
}

/* MHD's access handler: collects the body, then decides the reply once
 * (control or Graph), then answers now, parks the request (latency, hang)
 * or, after a resume, answers or closes. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    struct sim_server *srv = cls;
    struct req *r = *req_cls;
    (void)version;
    if (!r) {
        start_req(srv, conn, url, req_cls);
        return MHD_YES;
    }
    if (r->state == ST_RECV && *upload_size) {
        if (!r->too_big && capid_buf_append(&r->body, upload, *upload_size)) {
            r->too_big = true;
            capid_buf_release(&r->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->state == ST_RECV) {
        struct sim_request rq = {
            method,
            url,
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
            MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "access_token"),
            r->body.data ? r->body.data : "",
            r->body.len,
            r->too_big,
            r->t_ms,
            conn,
        };
        if (r->control)
            sim_control_handle(srv->sim, &rq, &r->reply);
        else
            sim_graph_handle(srv->sim, &rq, &r->reply);
        capid_buf_release(&r->body);
        if (r->reply.kind == SIM_KIND_HANG) {
            if (park(r, -1))
                return MHD_YES;
            return MHD_NO; /* stopping: close instead of hanging */
        }
        if (r->reply.delay_ms > 0 && park(r, capid_mono_ms() + r->reply.delay_ms))
            return MHD_YES;
        return respond(r);
    }
    if (r->state == ST_READY)
        return respond(r);
    return r->state == ST_CLOSE ? MHD_NO : MHD_YES;
}

/* End of a request, answered or not: leaves the wait lists and frees it. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct sim_server *srv = cls;
    struct req *r = *req_cls;
    (void)conn;
    (void)toe;
    if (!r)
        return;
    pthread_mutex_lock(&srv->lock);
    if (r->listed) {
        unlink_req(&srv->delayed, r);
        if (r->due < 0) {
            unlink_req(&srv->hung, r);
            srv->nhung--;
        }
    }
    pthread_mutex_unlock(&srv->lock);
    if (!r->control)
        atomic_fetch_sub(&srv->sim->in_flight, 1);
    capid_buf_release(&r->body);
    sim_reply_release(&r->reply);
    free(r);
    *req_cls = NULL;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
/* MHD's own messages, into the simulator's log. "Application reported ..."
 * follows the deliberate faults (a reset, a released hang): debug only. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[300];
    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    if (strcasestr(msg, "application reported"))
        capid_debug("mhd: %s", msg);
    else
        capid_warn("mhd: %s", msg);
}
#pragma GCC diagnostic pop

struct sim_server *sim_server_start(struct sim *s, int listen_fd)
{
    struct sim_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        abort();
    srv->sim = s;
    s->server = srv;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&srv->timer, NULL, timer_main, srv)) {
        capid_error("cannot start the timer thread");
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    srv->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->threads,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(256u << 10), MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300, MHD_OPTION_END);
    if (!srv->d) {
        capid_error("cannot start the http server");
        pthread_mutex_lock(&srv->lock);
        srv->stopping = true;
        pthread_cond_signal(&srv->cond);
        pthread_mutex_unlock(&srv->lock);
        pthread_join(srv->timer, NULL);
        goto fail;
    }
    return srv;
fail:
    pthread_cond_destroy(&srv->cond);
    pthread_mutex_destroy(&srv->lock);
    free(srv);
    s->server = NULL;
    return NULL;
}

void sim_server_stop(struct sim_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    struct req *delayed = srv->delayed;
    srv->delayed = NULL;
    for (struct req *r = delayed; r; r = r->next) {
        r->listed = false;
        r->state = ST_READY; /* answer now */
    }
    pthread_cond_signal(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    pthread_join(srv->timer, NULL);
    while (delayed) {
        struct req *r = delayed;
        delayed = r->next;
        r->next = NULL;
        MHD_resume_connection(r->conn);
    }
    sim_server_release(srv);
    /* MHD must not be stopped with suspended connections: every one was just
     * resumed, and `stopping` keeps new ones from being suspended. */
    MHD_stop_daemon(srv->d);
    pthread_cond_destroy(&srv->cond);
    pthread_mutex_destroy(&srv->lock);
    srv->sim->server = NULL;
    free(srv);
}
