/* capid-graph-sim: wiring only. Arguments, the listening socket, the port
 * file, signals, start and stop. See docs/SIMULATOR.md.
 *
 * Tokens on the command line are acceptable here only because this is a test
 * tool on loopback; capid itself never takes a secret on argv (use
 * --token-env NAME for the simulator when that matters). */
#include "sim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/log.h"

static const char usage[] =
    "usage: capid-graph-sim [--listen 127.0.0.1:PORT] [--port-file PATH]\n"
    "                       [--token TOKEN]... [--token-env NAME]... [--pixel ID]...\n"
    "                       [--clock-offset SECONDS] [options]\n"
    "Plays Meta's Conversions API (POST /{version}/{pixel_id}/events) on loopback,\n"
    "with faults on demand through the control API under /_sim/.\n"
    "\n"
    "  --listen HOST:PORT        address to listen on (default 127.0.0.1:0; port 0 = any)\n"
    "  --port-file PATH          write the port there once listening\n"
    "  --token TOKEN             accepted access token (repeatable; none = any token)\n"
    "  --token-env NAME          accepted access token read from environment variable NAME\n"
    "  --pixel ID                known pixel (repeatable; none = any pixel)\n"
    "  --clock-offset SECONDS    simulator clock = wall clock + SECONDS (event age checks)\n"
    "  --future-tolerance SECS   how far event_time may be ahead of the clock (default 600)\n"
    "  --control NAME=JSON       a control call made at start and after each reset,\n"
    "                            e.g. --control 'failure={\"rate\":0.3,\"seed\":7}'\n"
    "  --threads N               HTTP worker threads (default: number of CPUs, at least 2)\n"
    "  --max-body BYTES          largest request body (default 33554432)\n"
    "  --store-max EVENTS        accepted events kept for GET /_sim/events (default 1000000)\n"
    "  --store-bytes BYTES       payload bytes kept (default 268435456)\n"
    "  --no-store                keep no events (benchmarks); counts and duplicates still work\n"
    "  --log-max N               request log entries kept in /_sim/stats (default 100000)\n"
    "  --quiet                   no per-request log lines\n"
    "  --help, --version\n";

static int die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "capid-graph-sim: <message>" and the usage; returns exit code 2. */
static int die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("capid-graph-sim: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage);
    return 2;
}

/* Parses a non-negative size or a signed integer argument. */
static int parse_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int push(char ***list, size_t *n, const char *v)
{
    char **l = realloc(*list, (*n + 1) * sizeof(*l));
    if (!l)
        return -1;
    l[*n] = strdup(v);
    *list = l;
    return l[(*n)++] ? 0 : -1;
}

/* A listening TCP socket on host:port (IPv4); -1 on error. *port gets the
 * port actually bound. */
static int listen_on(const char *spec, int *port)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    long long p;
    if (!colon || (size_t)(colon - spec) >= sizeof(host) || parse_ll(colon + 1, 0, 65535, &p))
        return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        capid_error("cannot parse listen address '%s': an IPv4 address is expected", host);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 512) ||
        getsockname(fd, (struct sockaddr *)&sa, &len)) {
        capid_error("cannot listen on '%s': %s", spec, strerror(errno));
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Writes the port atomically (temporary file + rename), so a reader never
 * sees a partial number. */
static int write_port_file(const char *path, int port)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -1;
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%d\n", port) > 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

/* Parses the command line, applies --control calls, listens, writes the port
 * file, then waits for SIGTERM or SIGINT and stops cleanly (exit 0). Usage
 * errors exit 2, start-up failures 1. */
int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'},
        {"port-file", required_argument, 0, 'p'},
        {"token", required_argument, 0, 't'},
        {"token-env", required_argument, 0, 'T'},
        {"pixel", required_argument, 0, 'x'},
        {"clock-offset", required_argument, 0, 'c'},
        {"future-tolerance", required_argument, 0, 'f'},
        {"control", required_argument, 0, 'C'},
        {"threads", required_argument, 0, 'j'},
        {"max-body", required_argument, 0, 'b'},
        {"store-max", required_argument, 0, 'm'},
        {"store-bytes", required_argument, 0, 'B'},
        {"no-store", no_argument, 0, 'n'},
        {"log-max", required_argument, 0, 'L'},
        {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    struct sim s = {0};
    const char *listen_spec = "127.0.0.1:0", *port_file = NULL;
    struct sim_store_opts so = {1000000, 256u << 20, 100000};
    long long v;
    int rc = 2, fd = -1, c;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    s.threads = cpus < 2 ? 2 : (int)(cpus > 16 ? 16 : cpus);
    s.max_body = SIM_DEFAULT_BODY;
    s.cli_future_tol = SIM_FUTURE_TOL;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen_spec = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 't':
            if (!*optarg || push(&s.tokens, &s.ntokens, optarg))
                return die_usage("empty --token");
            break;
        case 'T': {
            const char *tok = getenv(optarg);
            if (!tok || !*tok)
                return die_usage("--token-env: environment variable '%s' is not set", optarg);
            if (push(&s.tokens, &s.ntokens, tok))
                return 1;
            break;
        }
        case 'x':
            if (!*optarg || push(&s.pixels, &s.npixels, optarg))
                return die_usage("empty --pixel");
            break;
        case 'c':
            if (parse_ll(optarg, -4000000000LL, 4000000000LL, &v))
                return die_usage("cannot parse --clock-offset '%s'", optarg);
            s.cli_clock_offset = v;
            break;
        case 'f':
            if (parse_ll(optarg, 0, 1000000000LL, &v))
                return die_usage("cannot parse --future-tolerance '%s'", optarg);
            s.cli_future_tol = v;
            break;
        case 'C':
            if (push(&s.controls, &s.ncontrols, optarg))
                return 1;
            break;
        case 'j':
            if (parse_ll(optarg, 1, 64, &v))
                return die_usage("--threads takes 1..64, not '%s'", optarg);
            s.threads = (int)v;
            break;
        case 'b':
            if (parse_ll(optarg, 1024, 1LL << 30, &v))
                return die_usage("--max-body takes 1024..1073741824, not '%s'", optarg);
            s.max_body = (size_t)v;
            break;
        case 'm':
            if (parse_ll(optarg, 0, 1LL << 32, &v))
                return die_usage("cannot parse --store-max '%s'", optarg);
            so.max_events = (size_t)v;
            break;
        case 'B':
            if (parse_ll(optarg, 0, 1LL << 40, &v))
                return die_usage("cannot parse --store-bytes '%s'", optarg);
            so.max_bytes = (size_t)v;
            break;
        case 'n':
            so.max_events = so.max_bytes = 0;
            break;
        case 'L':
            if (parse_ll(optarg, 0, 100000000, &v))
                return die_usage("cannot parse --log-max '%s'", optarg);
            so.log_max = (size_t)v;
            break;
        case 'q':
            capid_log_set_level(CAPID_LOG_WARN);
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            printf("capid-graph-sim %s\n", CAPID_VERSION);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc)
        return die_usage("unexpected argument '%s'", argv[optind]);

    /* Signals are taken by sigwait below; every thread inherits the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);
    sim_arena_install();

    s.store = sim_store_new(&so);
    s.faults = sim_faults_new();
    atomic_store(&s.clock_offset, s.cli_clock_offset);
    atomic_store(&s.future_tol, s.cli_future_tol);
    for (size_t i = 0; i < s.ncontrols; i++) {
        const char *err = sim_control_apply(&s, s.controls[i]);
        if (err) {
            capid_error("invalid --control '%s': %s", s.controls[i], err);
            goto out;
        }
    }
    int port = 0;
    fd = listen_on(listen_spec, &port);
    if (fd < 0) {
        capid_error("cannot listen on '%s'", listen_spec);
        goto out;
    }
    if (!sim_server_start(&s, fd)) {
        rc = 1;
        goto out;
    }
    fd = -1; /* now owned by MHD, which closes it when stopped */
    if (port_file && write_port_file(port_file, port)) {
        capid_error("cannot write port file '%s': %s", port_file, strerror(errno));
        rc = 1;
        goto out;
    }
    capid_info("listening on %.*s:%d (%zu tokens, %zu pixels, %d threads, clock offset %llds)",
               (int)(strrchr(listen_spec, ':') - listen_spec), listen_spec, port, s.ntokens,
               s.npixels, s.threads, (long long)s.cli_clock_offset);
    int sig = 0;
    sigwait(&stop, &sig);
    capid_info("stopping on %s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
out:
    sim_server_stop(s.server);
    if (fd >= 0)
        close(fd);
    if (port_file && rc == 0)
        unlink(port_file);
    sim_store_free(s.store);
    sim_faults_free(s.faults);
    free_list(s.tokens, s.ntokens);
    free_list(s.pixels, s.npixels);
    free_list(s.controls, s.ncontrols);
    return rc;
}
