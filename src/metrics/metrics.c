#include "metrics/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/err.h"

static const char *counter_names[CAPID_C__COUNT] = {
    "requests_total",       "events_sent_total", "events_delivered_total",
    "events_retried_total", "anomalies_total",   "splits_total",
    "pauses_total",         "probes_total",      "events_enqueued_total",
};

static const char *gauge_names[CAPID_G__COUNT] = {"inflight", "concurrency", "paused",
                                                  "lingering_events"};

const char *capid_counter_name(enum capid_counter c)
{
    return (unsigned)c < CAPID_C__COUNT ? counter_names[c] : "unknown";
}

const char *capid_gauge_name(enum capid_gauge g)
{
    return (unsigned)g < CAPID_G__COUNT ? gauge_names[g] : "unknown";
}

struct capid_metrics *capid_metrics_new(const char *const *names, size_t n)
{
    struct capid_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->dests = calloc(n ? n : 1, sizeof(*m->dests));
    if (!m->dests) {
        free(m);
        return NULL;
    }
    m->n = n;
    for (size_t i = 0; i < n; i++)
        snprintf(m->dests[i].name, sizeof(m->dests[i].name), "%s", names[i]);
    return m;
}

void capid_metrics_free(struct capid_metrics *m)
{
    if (!m)
        return;
    free(m->dests);
    free(m);
}

struct capid_metrics_dest *capid_metrics_dest(struct capid_metrics *m, const char *name)
{
    for (size_t i = 0; m && name && i < m->n; i++)
        if (strcmp(m->dests[i].name, name) == 0)
            return &m->dests[i];
    return NULL;
}

static uint64_t ld(const _Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* {"name":N,...} of the non-zero reasons. */
static void reasons_json(struct capid_buf *b, const char *key, const _Atomic uint64_t *v)
{
    capid_buf_printf(b, ",\"%s\":{", key);
    bool first = true;
    for (int r = 1; r < CAPID_R__COUNT; r++) {
        uint64_t n = ld(&v[r]);
        if (!n)
            continue;
        capid_buf_printf(b, "%s\"%s\":%llu", first ? "" : ",",
                         capid_reason_name((enum capid_reason)r), (unsigned long long)n);
        first = false;
    }
    capid_buf_putc(b, '}');
}

int capid_metrics_write_json(const struct capid_metrics *m, struct capid_buf *b)
{
    capid_buf_putc(b, '{');
    for (size_t i = 0; m && i < m->n; i++) {
        const struct capid_metrics_dest *d = &m->dests[i];
        if (i)
            capid_buf_putc(b, ',');
        capid_buf_json_str(b, d->name, strlen(d->name));
        capid_buf_putc(b, ':');
        for (int c = 0; c < CAPID_C__COUNT; c++)
            capid_buf_printf(b, "%c\"%s\":%llu", c ? ',' : '{', counter_names[c],
                             (unsigned long long)ld(&d->counter[c]));
        for (int g = 0; g < CAPID_G__COUNT; g++)
            capid_buf_printf(b, ",\"%s\":%lld", gauge_names[g],
                             (long long)atomic_load_explicit(&d->gauge[g], memory_order_relaxed));
        capid_buf_puts(b, ",\"outcomes\":{");
        for (int o = 0; o < CAPID_OUT__COUNT; o++)
            capid_buf_printf(b, "%s\"%s\":%llu", o ? "," : "",
                             capid_outcome_name((enum capid_outcome)o),
                             (unsigned long long)ld(&d->outcome[o]));
        capid_buf_putc(b, '}');
        reasons_json(b, "dead", d->dead);
        reasons_json(b, "skipped", d->skipped);
        capid_buf_putc(b, '}');
    }
    return capid_buf_putc(b, '}');
}

static const int graph_codes[] = {1, 2, 4, 10, 17, 32, 100, 102, 190, 200, 368, 613};
#define N_GRAPH_CODES (int)(sizeof(graph_codes) / sizeof(graph_codes[0]))

int capid_metrics_graph_code_slot(int code)
{
    if (code == 0)
        return N_GRAPH_CODES + 2;
    for (int i = 0; i < N_GRAPH_CODES; i++)
        if (graph_codes[i] == code)
            return i;
    if (code >= 80000 && code <= 80014)
        return N_GRAPH_CODES;
    return N_GRAPH_CODES + 1;
}

const char *capid_metrics_graph_code_label(int slot)
{
    static const char *const labels[] = {"1",   "2",   "4",           "10",    "17",
                                         "32",  "100", "102",         "190",   "200",
                                         "368", "613", "80000-80014", "other", "none"};
    _Static_assert(sizeof(labels) / sizeof(labels[0]) == CAPID_GRAPH_CODE_SLOTS, "slots");
    return slot >= 0 && slot < CAPID_GRAPH_CODE_SLOTS ? labels[slot] : "other";
}

int capid_metrics_write_prometheus(const struct capid_metrics *m, struct capid_buf *b)
{
    for (int c = 0; c < CAPID_C__COUNT; c++) {
        capid_buf_printf(b, "# TYPE capid_%s counter\n", counter_names[c]);
        for (size_t i = 0; m && i < m->n; i++)
            capid_buf_printf(b, "capid_%s{destination=\"%s\"} %llu\n", counter_names[c],
                             m->dests[i].name, (unsigned long long)ld(&m->dests[i].counter[c]));
    }
    for (int g = 0; g < CAPID_G__COUNT; g++) {
        capid_buf_printf(b, "# TYPE capid_%s gauge\n", gauge_names[g]);
        for (size_t i = 0; m && i < m->n; i++)
            capid_buf_printf(
                b, "capid_%s{destination=\"%s\"} %lld\n", gauge_names[g], m->dests[i].name,
                (long long)atomic_load_explicit(&m->dests[i].gauge[g], memory_order_relaxed));
    }
    capid_buf_puts(b, "# TYPE capid_requests_by_outcome_total counter\n");
    for (size_t i = 0; m && i < m->n; i++)
        for (int o = 0; o < CAPID_OUT__COUNT; o++)
            capid_buf_printf(b,
                             "capid_requests_by_outcome_total{destination=\"%s\",outcome=\"%s\"} "
                             "%llu\n",
                             m->dests[i].name, capid_outcome_name((enum capid_outcome)o),
                             (unsigned long long)ld(&m->dests[i].outcome[o]));
    capid_buf_puts(b, "# TYPE capid_graph_errors_total counter\n");
    for (size_t i = 0; m && i < m->n; i++)
        for (int s = 0; s < CAPID_GRAPH_CODE_SLOTS; s++) {
            uint64_t n = ld(&m->dests[i].graph_error[s]);
            if (n)
                capid_buf_printf(
                    b, "capid_graph_errors_total{destination=\"%s\",code=\"%s\"} %llu\n",
                    m->dests[i].name, capid_metrics_graph_code_label(s), (unsigned long long)n);
        }
    const char *fam[2] = {"events_dead_total", "events_skipped_total"};
    for (int k = 0; k < 2; k++) {
        capid_buf_printf(b, "# TYPE capid_%s counter\n", fam[k]);
        for (size_t i = 0; m && i < m->n; i++)
            for (int r = 1; r < CAPID_R__COUNT; r++) {
                uint64_t n = ld(k ? &m->dests[i].skipped[r] : &m->dests[i].dead[r]);
                if (n)
                    capid_buf_printf(b, "capid_%s{destination=\"%s\",reason=\"%s\"} %llu\n", fam[k],
                                     m->dests[i].name, capid_reason_name((enum capid_reason)r),
                                     (unsigned long long)n);
            }
    }
    return CAPID_OK;
}
