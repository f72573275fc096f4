#include "test.h"

#include "metrics/metrics.h"

TEST(metrics_graph_errors_by_code_in_prometheus_text)
{
    const char *names[] = {"shop"};
    struct capid_metrics *m = capid_metrics_new(names, 1);
    struct capid_metrics_dest *d = capid_metrics_dest(m, "shop");
    ASSERT_TRUE(d != NULL);
    int codes[] = {190, 190, 80004, 80014, 999, 0, 17};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        capid_metrics_graph_error(d, codes[i]);
    struct capid_buf b;
    capid_buf_init(&b, 0);
    capid_metrics_write_prometheus(m, &b);
    ASSERT_TRUE(strstr(b.data, "capid_graph_errors_total{destination=\"shop\",code=\"190\"} 2\n"));
    ASSERT_TRUE(
        strstr(b.data, "capid_graph_errors_total{destination=\"shop\",code=\"80000-80014\"} 2\n"));
    ASSERT_TRUE(
        strstr(b.data, "capid_graph_errors_total{destination=\"shop\",code=\"other\"} 1\n"));
    ASSERT_TRUE(strstr(b.data, "capid_graph_errors_total{destination=\"shop\",code=\"none\"} 1\n"));
    ASSERT_TRUE(strstr(b.data, "capid_graph_errors_total{destination=\"shop\",code=\"17\"} 1\n"));
    ASSERT_TRUE(!strstr(b.data, "code=\"2\""));
    capid_buf_release(&b);
    capid_metrics_free(m);
}

TEST(metrics_graph_code_slots_are_distinct)
{
    ASSERT_STR(capid_metrics_graph_code_label(capid_metrics_graph_code_slot(1)), "1");
    ASSERT_STR(capid_metrics_graph_code_label(capid_metrics_graph_code_slot(613)), "613");
    ASSERT_STR(capid_metrics_graph_code_label(capid_metrics_graph_code_slot(80000)), "80000-80014");
    ASSERT_STR(capid_metrics_graph_code_label(capid_metrics_graph_code_slot(80015)), "other");
    ASSERT_STR(capid_metrics_graph_code_label(capid_metrics_graph_code_slot(0)), "none");
}
