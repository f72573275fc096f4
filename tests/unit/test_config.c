#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/config_int.h"
#include "util/err.h"
#include "util/log.h"

/* Parses yaml and reports the loader's message when it fails. */
static struct capid_config *parse_ok(const char *yaml)
{
    struct capid_config *cfg = NULL;
    struct capid_perr err;
    int rc = capid_config_parse(yaml, strlen(yaml), &cfg, &err);
    if (rc != CAPID_OK)
        capid_test_fail(__FILE__, __LINE__, "parse failed (%d): %s", rc, err.msg ? err.msg : "");
    return cfg;
}

/* A temporary file holding text; returns its path (static buffer). */
static const char *temp_file(const char *text, size_t len)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/capid-test-config-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len)
        capid_test_fail(__FILE__, __LINE__, "cannot write temp file %s", path);
    if (fd >= 0)
        close(fd);
    return path;
}

#define MIN_DEST                                                                                   \
    "destinations:\n"                                                                              \
    "  - name: a\n"                                                                                \
    "    pixel_id: '1'\n"                                                                          \
    "    access_token_env: T\n"

TEST(config_defaults_applied)
{
    struct capid_config *cfg = parse_ok(MIN_DEST);
    if (!cfg)
        return;
    ASSERT_STR(cfg->path, "-");
    ASSERT_INT(cfg->n_dests, 1);
    ASSERT_INT(cfg->n_sources, 0);
    const struct capid_dest *d = &cfg->dests[0];
    ASSERT_STR(d->name, "a");
    ASSERT_STR(d->pixel_id, "1");
    ASSERT_STR(d->access_token_env, "T");
    ASSERT_STR(d->access_token_file, NULL);
    ASSERT_STR(d->api_version, "v21.0");
    ASSERT_STR(d->graph_url, "https://graph.facebook.com");
    ASSERT_STR(d->consent_category, NULL);
    ASSERT_STR(d->test_event_code, NULL);
    ASSERT_INT(d->n_event_names, 0);
    ASSERT_INT(d->content_type, CAPID_CT_PRODUCT);
    ASSERT_INT(d->external_id, CAPID_EXTID_HASHED);
    ASSERT_INT(d->limited_data_use, 0);
    ASSERT_INT(d->app_tracking, 0);
    ASSERT_INT(d->min_strong_keys, 1);
    ASSERT_INT(d->min_other_keys, 3);
    const struct capid_delivery_cfg *dl = &cfg->delivery;
    ASSERT_INT(dl->max_batch, 1000);
    ASSERT_INT(dl->linger_ms, 200);
    ASSERT_INT(dl->max_inflight, 4);
    ASSERT_INT(dl->timeout_ms, 10000);
    ASSERT_INT(dl->max_attempts, 10);
    ASSERT_INT(dl->retry_window_s, 86400);
    ASSERT_INT(dl->backoff_initial_ms, 1000);
    ASSERT_INT(dl->backoff_max_ms, 300000);
    ASSERT_INT(dl->probe_interval_s, 60);
    ASSERT_TRUE(memcmp(&d->delivery, dl, sizeof(*dl)) == 0);
    ASSERT_STR(cfg->queue.path, "var/capid-queue.db");
    ASSERT_INT(cfg->queue.synchronous, CAPID_SYNC_FULL);
    ASSERT_INT(cfg->queue.keep_delivered_s, 86400);
    const struct capid_server_cfg *s = &cfg->server;
    ASSERT_STR(s->listen, "127.0.0.1:8080");
    ASSERT_STR(s->ready_file, NULL);
    ASSERT_INT(s->max_event_bytes, 32768);
    ASSERT_INT(s->max_request_bytes, 512000);
    ASSERT_INT(s->max_events, 1000);
    ASSERT_INT(s->max_depth, 32);
    ASSERT_INT(s->connection_timeout_s, 10);
    ASSERT_INT(s->max_connections, 1024);
    ASSERT_INT(s->max_connections_per_ip, 64);
    ASSERT_INT(s->threads, 2);
    capid_config_free(cfg);
}

/* Every key set to a value other than its default; the global delivery
 * section comes after the destinations on purpose. */
static const char full_yaml[] = "# every key, none at its default\n"
                                "destinations:\n"
                                "  - name: shop-fr\n"
                                "    pixel_id: \"123456789012345\"\n"
                                "    access_token_file: /run/secrets/meta\n"
                                "    consent_category: \"4\"\n"
                                "    event_names:\n"
                                "      purchase: Purchase\n"
                                "      my_lead: Lead\n"
                                "    content_type: product_group\n"
                                "    external_id: raw\n"
                                "    limited_data_use: true\n"
                                "    app_tracking: yes\n"
                                "    min_strong_keys: 2\n"
                                "    min_other_keys: 4\n"
                                "    test_event_code: TEST123\n"
                                "    api_version: v20.0\n"
                                "    graph_url: http://127.0.0.1:18080/\n"
                                "    delivery:\n"
                                "      max_batch: 10\n"
                                "      linger_ms: 0\n"
                                "      max_inflight: 1\n"
                                "      timeout_ms: 2000\n"
                                "      max_attempts: 3\n"
                                "      retry_window_s: 60\n"
                                "      backoff_initial_ms: 10\n"
                                "      backoff_max_ms: 20\n"
                                "      probe_interval_s: 1\n"
                                "  - name: shop-de\n"
                                "    pixel_id: 2\n"
                                "    access_token_env: META_TOKEN_DE\n"
                                "    content_type: none\n"
                                "    delivery: {max_batch: 7}\n"
                                "sources:\n"
                                "  - name: web\n"
                                "    key_file: /run/secrets/ingest\n"
                                "    destinations: [shop-fr, shop-de]\n"
                                "  - name: app\n"
                                "    key_env: APP_KEY\n"
                                "    destinations:\n"
                                "      - shop-de\n"
                                "queue:\n"
                                "  path: /var/lib/capid/q.db\n"
                                "  synchronous: normal\n"
                                "  keep_delivered_s: 3600\n"
                                "delivery:\n"
                                "  max_batch: 500\n"
                                "  linger_ms: 50\n"
                                "  max_inflight: 8\n"
                                "  timeout_ms: 5000\n"
                                "  max_attempts: 5\n"
                                "  retry_window_s: 3600\n"
                                "  backoff_initial_ms: 100\n"
                                "  backoff_max_ms: 60000\n"
                                "  probe_interval_s: 5\n"
                                "server:\n"
                                "  listen: \"[::1]:0\"\n"
                                "  ready_file: /tmp/port\n"
                                "  max_event_bytes: 64KiB\n"
                                "  max_request_bytes: 1 MiB\n"
                                "  max_events: 500\n"
                                "  max_depth: 16\n"
                                "  connection_timeout_s: 30\n"
                                "  max_connections: 2048\n"
                                "  max_connections_per_ip: 128\n"
                                "  threads: 4\n";

TEST(config_every_key_parsed)
{
    struct capid_config *cfg = parse_ok(full_yaml);
    if (!cfg)
        return;
    ASSERT_INT(cfg->n_dests, 2);
    const struct capid_dest *d = &cfg->dests[0];
    ASSERT_STR(d->name, "shop-fr");
    ASSERT_STR(d->pixel_id, "123456789012345");
    ASSERT_STR(d->access_token_env, NULL);
    ASSERT_STR(d->access_token_file, "/run/secrets/meta");
    ASSERT_STR(d->consent_category, "4");
    ASSERT_INT(d->n_event_names, 2);
    if (d->n_event_names == 2) {
        ASSERT_STR(d->event_names[0].from, "purchase");
        ASSERT_STR(d->event_names[0].to, "Purchase");
        ASSERT_STR(d->event_names[1].from, "my_lead");
        ASSERT_STR(d->event_names[1].to, "Lead");
    }
    ASSERT_INT(d->content_type, CAPID_CT_PRODUCT_GROUP);
    ASSERT_INT(d->external_id, CAPID_EXTID_RAW);
    ASSERT_INT(d->limited_data_use, 1);
    ASSERT_INT(d->app_tracking, 1);
    ASSERT_INT(d->min_strong_keys, 2);
    ASSERT_INT(d->min_other_keys, 4);
    ASSERT_STR(d->test_event_code, "TEST123");
    ASSERT_STR(d->api_version, "v20.0");
    ASSERT_STR(d->graph_url, "http://127.0.0.1:18080"); /* trailing '/' dropped */
    ASSERT_INT(d->delivery.max_batch, 10);
    ASSERT_INT(d->delivery.linger_ms, 0);
    ASSERT_INT(d->delivery.max_inflight, 1);
    ASSERT_INT(d->delivery.timeout_ms, 2000);
    ASSERT_INT(d->delivery.max_attempts, 3);
    ASSERT_INT(d->delivery.retry_window_s, 60);
    ASSERT_INT(d->delivery.backoff_initial_ms, 10);
    ASSERT_INT(d->delivery.backoff_max_ms, 20);
    ASSERT_INT(d->delivery.probe_interval_s, 1);
    ASSERT_STR(cfg->dests[1].pixel_id, "2"); /* an unquoted number is a string too */
    ASSERT_INT(cfg->dests[1].content_type, CAPID_CT_NONE);

    ASSERT_INT(cfg->n_sources, 2);
    const struct capid_source *s = &cfg->sources[0];
    ASSERT_STR(s->name, "web");
    ASSERT_STR(s->key_env, NULL);
    ASSERT_STR(s->key_file, "/run/secrets/ingest");
    ASSERT_INT(s->n_destinations, 2);
    if (s->n_destinations == 2) {
        ASSERT_STR(s->destinations[0], "shop-fr");
        ASSERT_STR(s->destinations[1], "shop-de");
    }
    ASSERT_STR(cfg->sources[1].key_env, "APP_KEY");
    ASSERT_INT(cfg->sources[1].n_destinations, 1);

    ASSERT_STR(cfg->queue.path, "/var/lib/capid/q.db");
    ASSERT_INT(cfg->queue.synchronous, CAPID_SYNC_NORMAL);
    ASSERT_INT(cfg->queue.keep_delivered_s, 3600);
    ASSERT_INT(cfg->delivery.max_batch, 500);
    ASSERT_INT(cfg->delivery.linger_ms, 50);
    ASSERT_INT(cfg->delivery.max_inflight, 8);
    ASSERT_INT(cfg->delivery.timeout_ms, 5000);
    ASSERT_INT(cfg->delivery.max_attempts, 5);
    ASSERT_INT(cfg->delivery.retry_window_s, 3600);
    ASSERT_INT(cfg->delivery.backoff_initial_ms, 100);
    ASSERT_INT(cfg->delivery.backoff_max_ms, 60000);
    ASSERT_INT(cfg->delivery.probe_interval_s, 5);
    ASSERT_STR(cfg->server.listen, "[::1]:0");
    ASSERT_STR(cfg->server.ready_file, "/tmp/port");
    ASSERT_INT(cfg->server.max_event_bytes, 65536);
    ASSERT_INT(cfg->server.max_request_bytes, 1048576);
    ASSERT_INT(cfg->server.max_events, 500);
    ASSERT_INT(cfg->server.max_depth, 16);
    ASSERT_INT(cfg->server.connection_timeout_s, 30);
    ASSERT_INT(cfg->server.max_connections, 2048);
    ASSERT_INT(cfg->server.max_connections_per_ip, 128);
    ASSERT_INT(cfg->server.threads, 4);
    capid_config_free(cfg);
}

/* Guards the test above: a key added to the table must be added there. */
TEST(config_every_option_is_in_the_full_example)
{
    size_t n;
    const struct capid_opt *o = capid_config_options(&n);
    char key[80];
    for (size_t i = 0; i < n; i++) {
        snprintf(key, sizeof(key), " %s:", o[i].name);
        if (!strstr(full_yaml, key))
            capid_test_fail(__FILE__, __LINE__, "option '%s' missing from full_yaml", o[i].name);
    }
}

TEST(config_destination_delivery_copies_global_then_overrides)
{
    struct capid_config *cfg = parse_ok(full_yaml);
    if (!cfg)
        return;
    /* shop-de overrides max_batch only; the rest comes from the global
     * section, which the file has after the destinations. */
    const struct capid_delivery_cfg *d = &cfg->dests[1].delivery;
    ASSERT_INT(d->max_batch, 7);
    ASSERT_INT(d->linger_ms, 50);
    ASSERT_INT(d->max_inflight, 8);
    ASSERT_INT(d->timeout_ms, 5000);
    ASSERT_INT(d->max_attempts, 5);
    ASSERT_INT(d->retry_window_s, 3600);
    ASSERT_INT(d->backoff_initial_ms, 100);
    ASSERT_INT(d->backoff_max_ms, 60000);
    ASSERT_INT(d->probe_interval_s, 5);
    ASSERT_INT(cfg->delivery.max_batch, 500); /* the global one is untouched */
    capid_config_free(cfg);

    /* Same with delivery first in the file. */
    cfg = parse_ok("delivery: {linger_ms: 5}\n" MIN_DEST "    delivery: {max_inflight: 2}\n");
    if (!cfg)
        return;
    ASSERT_INT(cfg->dests[0].delivery.linger_ms, 5);
    ASSERT_INT(cfg->dests[0].delivery.max_inflight, 2);
    ASSERT_INT(cfg->dests[0].delivery.max_batch, 1000);
    ASSERT_INT(cfg->delivery.max_inflight, 4);
    capid_config_free(cfg);
}

TEST(config_json_flow_style)
{
    static const char json[] =
        "{\"destinations\": [{\"name\": \"a\", \"pixel_id\": 42, \"access_token_env\": \"T\",\n"
        "  \"event_names\": {\"purchase\": \"Purchase\"}, \"limited_data_use\": true,\n"
        "  \"consent_category\": null, \"delivery\": {\"max_batch\": 100}}],\n"
        " \"sources\": [{\"name\": \"web\", \"key_env\": \"K\", \"destinations\": [\"a\"]}],\n"
        " \"server\": {\"listen\": \"127.0.0.1:0\", \"max_request_bytes\": 65536}}\n";
    struct capid_config *cfg = parse_ok(json);
    if (!cfg)
        return;
    ASSERT_STR(cfg->dests[0].pixel_id, "42");
    ASSERT_INT(cfg->dests[0].n_event_names, 1);
    ASSERT_INT(cfg->dests[0].limited_data_use, 1);
    ASSERT_STR(cfg->dests[0].consent_category, NULL);
    ASSERT_INT(cfg->dests[0].delivery.max_batch, 100);
    ASSERT_STR(cfg->sources[0].destinations[0], "a");
    ASSERT_STR(cfg->server.listen, "127.0.0.1:0");
    ASSERT_INT(cfg->server.max_request_bytes, 65536);
    capid_config_free(cfg);
}

TEST(config_null_keeps_the_default)
{
    struct capid_config *cfg = parse_ok(
        MIN_DEST "    api_version:\n    graph_url: ~\nqueue:\nserver: {ready_file: null}\n");
    if (!cfg)
        return;
    ASSERT_STR(cfg->dests[0].api_version, "v21.0");
    ASSERT_STR(cfg->dests[0].graph_url, "https://graph.facebook.com");
    ASSERT_STR(cfg->queue.path, "var/capid-queue.db");
    ASSERT_STR(cfg->server.ready_file, NULL);
    capid_config_free(cfg);
}

/* Each invalid configuration: the message names the key (and the valid
 * choices), the line is exact. */
static const struct {
    const char *yaml;
    const char *want; /* substring of the message */
    size_t line;
    int rc;
} bad[] = {
    {MIN_DEST "    pixelid: 1\n",
     "unknown key 'pixelid' in destination; valid keys: name, pixel_id, access_token_env,", 5,
     CAPID_ECONFIG},
    {MIN_DEST "    content_type: products\n",
     "content_type: 'products' is not one of product, product_group, none", 5, CAPID_ECONFIG},
    {MIN_DEST "    external_id: sha256\n", "external_id: 'sha256' is not one of hashed, raw", 5,
     CAPID_ECONFIG},
    {"destinations:\n  - pixel_id: '1'\n    access_token_env: T\n",
     "destination is missing required key 'name'", 2, CAPID_ECONFIG},
    {"destinations:\n  - name: a\n    access_token_env: T\n",
     "destination 'a' is missing required key 'pixel_id'", 2, CAPID_ECONFIG},
    {"destinations:\n  - name:\n    pixel_id: '1'\n", "name: a value is required", 2,
     CAPID_ECONFIG},
    {"destinations:\n  - name: a\n    pixel_id: 12a4\n    access_token_env: T\n",
     "pixel_id: '12a4' must contain only digits", 3, CAPID_ECONFIG},
    {"destinations:\n  - name: a\n    pixel_id: '1'\n",
     "destination 'a' needs access_token_env or access_token_file", 2, CAPID_ECONFIG},
    {MIN_DEST "    access_token_file: /run/token\n",
     "destination 'a' sets both access_token_env and access_token_file", 5, CAPID_ECONFIG},
    {MIN_DEST "  - name: a\n    pixel_id: '2'\n    access_token_env: T\n",
     "duplicate destination name 'a' (first on line 2)", 5, CAPID_ECONFIG},
    {MIN_DEST "    pixel_id: '2'\n", "duplicate key 'pixel_id' in destination (first on line 3)", 5,
     CAPID_ECONFIG},
    {MIN_DEST "queue: {}\nqueue: {}\n", "duplicate key 'queue' at the top level (first on line 5)",
     6, CAPID_ECONFIG},
    {MIN_DEST "servre: {}\n",
     "unknown key 'servre' at the top level; valid keys: destinations, sources, queue, "
     "delivery, server",
     5, CAPID_ECONFIG},
    {MIN_DEST "    api_version: [v1.0]\n", "api_version: expected a string, got a list", 5,
     CAPID_ECONFIG},
    {MIN_DEST "    min_other_keys: {a: 1}\n", "min_other_keys: expected an integer, got a map", 5,
     CAPID_ECONFIG},
    {"destinations: a\n", "destinations: expected a list, got a scalar", 1, CAPID_ECONFIG},
    {"destinations:\n  - demo\n", "destinations: each item must be a map, got a scalar", 2,
     CAPID_ECONFIG},
    {"- a\n", "expected a map of sections at the top level, got a list", 1, CAPID_ECONFIG},
    {"[a]: 1\n", "keys at the top level must be strings, got a list", 1, CAPID_ECONFIG},
    {MIN_DEST "    ? [a]\n    : 1\n", "keys in destination must be strings, got a list", 5,
     CAPID_ECONFIG},
    {MIN_DEST "delivery:\n  max_batch: 5000\n", "max_batch: 5000 is out of range 1..1000", 6,
     CAPID_ECONFIG},
    {MIN_DEST "    delivery: {max_batch: 0}\n", "max_batch: 0 is out of range 1..1000", 5,
     CAPID_ECONFIG},
    {MIN_DEST "delivery:\n  max_batch: many\n", "max_batch: 'many' is not an integer", 6,
     CAPID_ECONFIG},
    {MIN_DEST "delivery:\n  linger_ms: -1\n", "linger_ms: -1 is out of range 0..60000", 6,
     CAPID_ECONFIG},
    {MIN_DEST "delivery:\n  linger_ms: 99999999999999999999\n",
     "linger_ms: '99999999999999999999' is not an integer", 6, CAPID_ECONFIG},
    {MIN_DEST "    min_strong_keys: 6\n", "min_strong_keys: 6 is out of range 0..5", 5,
     CAPID_ECONFIG},
    {MIN_DEST "delivery: 5\n", "delivery: expected a map, got a scalar", 5, CAPID_ECONFIG},
    {MIN_DEST "    delivery: [1]\n", "delivery: expected a map, got a list", 5, CAPID_ECONFIG},
    {MIN_DEST "    delivery:\n      maxbatch: 5\n",
     "unknown key 'maxbatch' in delivery; valid keys: max_batch, linger_ms", 6, CAPID_ECONFIG},
    {MIN_DEST "delivery:\n  backoff_initial_ms: 5000\n  backoff_max_ms: 1000\n",
     "backoff_initial_ms (5000) must not be above backoff_max_ms (1000)", 7, CAPID_ECONFIG},
    {MIN_DEST "    api_version: '21.0'\n",
     "api_version: '21.0' is not a Graph API version like v21.0", 5, CAPID_ECONFIG},
    {MIN_DEST "    api_version: v21\n", "api_version: 'v21' is not a Graph API version", 5,
     CAPID_ECONFIG},
    {MIN_DEST "    graph_url: ftp://x\n",
     "graph_url: 'ftp://x' must start with http:// or https://", 5, CAPID_ECONFIG},
    {MIN_DEST "    graph_url: https:///v1\n", "graph_url: 'https:///v1' has no host", 5,
     CAPID_ECONFIG},
    {MIN_DEST "    limited_data_use: maybe\n",
     "limited_data_use: 'maybe' is not a boolean (true or false)", 5, CAPID_ECONFIG},
    {MIN_DEST "    access_token_env: MY-TOKEN\n", "duplicate key 'access_token_env'", 5,
     CAPID_ECONFIG},
    {"destinations:\n  - {name: a, pixel_id: '1', access_token_env: MY-TOKEN}\n",
     "access_token_env: 'MY-TOKEN' is not an environment variable name", 2, CAPID_ECONFIG},
    {"destinations:\n  - {name: 'a b', pixel_id: '1', access_token_env: T}\n",
     "name: 'a b' may contain only letters, digits", 2, CAPID_ECONFIG},
    {MIN_DEST "    test_event_code: ''\n", "test_event_code: must not be empty", 5, CAPID_ECONFIG},
    {MIN_DEST "    test_event_code: \"a\\0b\"\n", "test_event_code: must not contain a NUL byte", 5,
     CAPID_ECONFIG},
    {MIN_DEST "    event_names: [a]\n", "event_names: expected a map, got a list", 5,
     CAPID_ECONFIG},
    {MIN_DEST "    event_names:\n      purchase: Purchase\n      purchase: Lead\n",
     "event_names: duplicate key 'purchase' (first on line 6)", 7, CAPID_ECONFIG},
    {MIN_DEST "    event_names: {purchase: [x]}\n",
     "event_names: 'purchase' must map to a string, got a list", 5, CAPID_ECONFIG},
    {MIN_DEST "queue:\n  synchronous: off\n", "synchronous: 'off' is not one of full, normal", 6,
     CAPID_ECONFIG},
    {MIN_DEST "queue:\n  keep_delivered_s: 1.5\n", "keep_delivered_s: '1.5' is not an integer", 6,
     CAPID_ECONFIG},
    {MIN_DEST "server:\n  max_event_bytes: 32kb\n", "max_event_bytes: '32kb' is not a size", 6,
     CAPID_ECONFIG},
    {MIN_DEST "server:\n  max_event_bytes: 100\n",
     "max_event_bytes: 100 is out of range 1024..16777216", 6, CAPID_ECONFIG},
    {MIN_DEST "server:\n  max_event_bytes: 1MiB\n  max_request_bytes: 64KiB\n",
     "max_event_bytes (1048576) must not be above max_request_bytes (65536)", 7, CAPID_ECONFIG},
    {MIN_DEST "server:\n  max_connections: 10\n",
     "max_connections_per_ip (64) must not be above max_connections (10)", 6, CAPID_ECONFIG},
    {MIN_DEST "server:\n  listen: localhost\n", "listen: 'localhost' must be HOST:PORT", 6,
     CAPID_ECONFIG},
    {MIN_DEST "server: {listen: '127.0.0.1:70000'}\n",
     "listen: '127.0.0.1:70000' has no port from 0 to 65535", 5, CAPID_ECONFIG},
    {MIN_DEST "server: {listen: '::1:80'}\n", "listen: '::1:80' must be HOST:PORT (an IPv6", 5,
     CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - name: web\n    key_env: K\n    destinations: [a, b]\n",
     "source 'web': unknown destination 'b'; configured: a", 8, CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - name: web\n    destinations: [a]\n",
     "source 'web' needs key_env or key_file", 6, CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - {name: web, key_env: K, key_file: /k, destinations: [a]}\n",
     "source 'web' sets both key_env and key_file", 6, CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - name: web\n    key_env: K\n",
     "source 'web' is missing required key 'destinations'", 6, CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - {name: web, key_env: K, destinations: []}\n",
     "destinations: the list is empty", 6, CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - {name: web, key_env: K, destinations: [a, a]}\n",
     "source 'web' lists destination 'a' twice", 6, CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - {name: web, key_env: K, destinations: [a]}\n"
              "  - {name: web, key_env: L, destinations: [a]}\n",
     "duplicate source name 'web' (first on line 6)", 7, CAPID_ECONFIG},
    {MIN_DEST "sources:\n  - {name: web, key_env: K, destinations: [[a]]}\n",
     "destinations: items must be strings, got a list", 6, CAPID_ECONFIG},
    {"queue: {path: x}\n", "no destinations configured", 0, CAPID_ECONFIG},
    {"destinations: []\n", "no destinations configured", 1, CAPID_ECONFIG},
    {"", "no destinations configured", 0, CAPID_ECONFIG},
    {"# only a comment\n", "no destinations configured", 0, CAPID_ECONFIG},
    {MIN_DEST "    consent_category: *x\n", "yaml aliases (*name) are not supported", 5,
     CAPID_ECONFIG},
    {MIN_DEST "---\nqueue: {}\n", "only one yaml document is allowed", 5, CAPID_ECONFIG},
    {"destinations: [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]\n", "nesting deeper than 16 levels", 1,
     CAPID_ECONFIG},
    {"{\"destinations\": [{\"name\": \"a\", \"pixel_id\": \"1\", \"access_token_env\": \"T\",\n"
     "  \"pixelid\": 2}]}\n",
     "unknown key 'pixelid' in destination", 2, CAPID_ECONFIG},
    /* YAML syntax errors carry libyaml's line. */
    {MIN_DEST "    x: y: z\n", "invalid yaml: mapping values are not allowed", 5, CAPID_EPARSE},
    {MIN_DEST "    pixel_id: [1\n    x: 2\n", "invalid yaml: did not find expected ',' or ']'", 6,
     CAPID_EPARSE},
    {"destinations:\n  - name: a\n\tpixel_id: 1\n", "invalid yaml: found a tab character", 3,
     CAPID_EPARSE},
    {MIN_DEST "queue: {path: \"x}\n", "invalid yaml: found unexpected end of stream", 6,
     CAPID_EPARSE},
    {MIN_DEST "\xff\n", "invalid yaml: invalid leading UTF-8 octet at byte 68", 5, CAPID_EPARSE},
};

TEST(config_errors_name_the_key_and_line)
{
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct capid_config sentinel, *cfg = &sentinel; /* must be reset to NULL */
        struct capid_perr err;
        char prefix[32];
        int rc = capid_config_parse(bad[i].yaml, strlen(bad[i].yaml), &cfg, &err);
        const char *msg = err.msg ? err.msg : "";
        if (bad[i].line)
            snprintf(prefix, sizeof(prefix), "-:%zu: ", bad[i].line);
        else
            snprintf(prefix, sizeof(prefix), "-: ");
        if (rc != bad[i].rc || !strstr(msg, bad[i].want) || err.line != bad[i].line ||
            strncmp(msg, prefix, strlen(prefix)) != 0 || msg != err.buf || cfg != NULL)
            capid_test_fail(__FILE__, __LINE__,
                            "case %zu: rc %d (want %d), line %zu (want %zu), message \"%s\", "
                            "want \"%s\"",
                            i, rc, bad[i].rc, err.line, bad[i].line, msg, bad[i].want);
        capid_config_free(cfg);
    }
}

TEST(config_error_column_and_offset)
{
    struct capid_config *cfg;
    struct capid_perr err;
    const char *y = MIN_DEST "    content_type: products\n";
    ASSERT_INT(capid_config_parse(y, strlen(y), &cfg, &err), CAPID_ECONFIG);
    ASSERT_INT(err.line, 5);
    ASSERT_INT(err.column, 19);
    ASSERT_INT(err.offset, (size_t)(strstr(y, "products") - y));
}

/* err->buf (512 bytes) holds the whole list of valid keys of a destination. */
TEST(config_unknown_key_lists_every_valid_key)
{
    struct capid_config *cfg;
    struct capid_perr err;
    const char *y = MIN_DEST "    pixel_identifier_with_a_long_name: 1\n";
    ASSERT_INT(capid_config_parse(y, strlen(y), &cfg, &err), CAPID_ECONFIG);
    ASSERT_TRUE(strlen(err.buf) < sizeof(err.buf));
    ASSERT_TRUE(strstr(err.buf, "-:5: unknown key 'pixel_identifier_with_a_long_name' in "
                                "destination; valid keys: name, pixel_id") != NULL);
    ASSERT_TRUE(strstr(err.buf, "delivery") != NULL);
    size_t n = strlen(err.buf);
    ASSERT_TRUE(n >= 3 && strcmp(err.buf + n - 3, "...") != 0);
}

TEST(config_sizes_and_booleans_spellings)
{
    struct capid_config *cfg =
        parse_ok(MIN_DEST "    limited_data_use: On\n    app_tracking: FALSE\n"
                          "server: {max_event_bytes: 2048, max_request_bytes: 2 MiB}\n");
    if (!cfg)
        return;
    ASSERT_INT(cfg->dests[0].limited_data_use, 1);
    ASSERT_INT(cfg->dests[0].app_tracking, 0);
    ASSERT_INT(cfg->server.max_event_bytes, 2048);
    ASSERT_INT(cfg->server.max_request_bytes, 2 * 1024 * 1024);
    capid_config_free(cfg);
}

TEST(config_load_file)
{
    const char *path = temp_file(full_yaml, strlen(full_yaml));
    struct capid_config *cfg = NULL;
    struct capid_perr err;
    ASSERT_INT(capid_config_load(path, &cfg, &err), CAPID_OK);
    if (cfg) {
        ASSERT_STR(cfg->path, path);
        ASSERT_INT(cfg->n_dests, 2);
    }
    capid_config_free(cfg);
    unlink(path);

    /* Errors name the file. */
    static const char bad_yaml[] = MIN_DEST "    pixelid: 1\n";
    path = temp_file(bad_yaml, strlen(bad_yaml));
    ASSERT_INT(capid_config_load(path, &cfg, &err), CAPID_ECONFIG);
    char want[128];
    snprintf(want, sizeof(want), "%s:5: unknown key 'pixelid'", path);
    ASSERT_TRUE(strncmp(err.buf, want, strlen(want)) == 0);
    ASSERT_TRUE(cfg == NULL);
    unlink(path);
}

TEST(config_load_refuses_missing_and_oversized_files)
{
    struct capid_config *cfg = NULL;
    struct capid_perr err;
    ASSERT_INT(capid_config_load("/nonexistent/capid.yaml", &cfg, &err), CAPID_EIO);
    ASSERT_TRUE(strstr(err.buf, "/nonexistent/capid.yaml: cannot open") != NULL);
    ASSERT_TRUE(cfg == NULL);

    size_t len = CAPID_CONFIG_MAX_BYTES + 1;
    char *big = malloc(len);
    memset(big, '\n', len);
    memcpy(big, MIN_DEST, strlen(MIN_DEST));
    const char *path = temp_file(big, len);
    ASSERT_INT(capid_config_load(path, &cfg, &err), CAPID_ETOOBIG);
    ASSERT_TRUE(strstr(err.buf, "larger than 1048576 bytes") != NULL);
    ASSERT_INT(capid_config_parse(big, len, &cfg, &err), CAPID_ETOOBIG);
    unlink(path);
    /* Exactly at the cap is fine. */
    path = temp_file(big, len - 1);
    ASSERT_INT(capid_config_load(path, &cfg, &err), CAPID_OK);
    capid_config_free(cfg);
    unlink(path);
    free(big);
}

TEST(config_free_null_and_dest_lookup)
{
    capid_config_free(NULL);
    struct capid_config *cfg = parse_ok(full_yaml);
    if (!cfg)
        return;
    ASSERT_TRUE(capid_config_dest(cfg, "shop-de") == &cfg->dests[1]);
    ASSERT_TRUE(capid_config_dest(cfg, "shop") == NULL);
    ASSERT_TRUE(capid_config_dest(NULL, "shop-de") == NULL);
    capid_config_free(cfg);
}

TEST(config_examples_load)
{
    static const char *const files[] = {"examples/capid.yaml", "examples/minimal.yaml"};
    for (size_t i = 0; i < 2; i++) {
        struct capid_config *cfg = NULL;
        struct capid_perr err;
        if (capid_config_load(files[i], &cfg, &err) != CAPID_OK)
            capid_test_fail(__FILE__, __LINE__, "%s", err.buf);
        capid_config_free(cfg);
    }
    struct capid_config *cfg = NULL;
    struct capid_perr err;
    if (capid_config_load("examples/capid.yaml", &cfg, &err) != CAPID_OK)
        return;
    /* `make run` relies on these. */
    ASSERT_STR(cfg->dests[0].name, "demo");
    ASSERT_STR(cfg->dests[0].pixel_id, "1234567890");
    ASSERT_STR(cfg->dests[0].access_token_env, "CAPID_ACCESS_TOKEN");
    ASSERT_STR(cfg->dests[0].graph_url, "http://127.0.0.1:18080");
    ASSERT_STR(cfg->dests[0].consent_category, NULL);
    ASSERT_STR(cfg->queue.path, "var/capid-queue.db");
    ASSERT_STR(cfg->server.listen, "127.0.0.1:8080");
    ASSERT_STR(cfg->server.ready_file, "var/capid.port");
    ASSERT_INT(cfg->n_sources, 1);
    ASSERT_STR(cfg->sources[0].name, "web");
    ASSERT_STR(cfg->sources[0].key_env, "CAPID_INGEST_KEY");
    ASSERT_STR(cfg->sources[0].destinations[0], "demo");
    capid_config_free(cfg);
}

TEST(config_secret_from_env)
{
    struct capid_perr err;
    setenv("CAPID_TEST_SECRET", "tok-123 \r\n", 1);
    char *s = capid_config_read_secret("CAPID_TEST_SECRET", NULL, &err);
    ASSERT_STR(s, "tok-123");
    free(s);
    /* The variable wins over the file when it is not empty. */
    s = capid_config_read_secret("CAPID_TEST_SECRET", "/nonexistent", &err);
    ASSERT_STR(s, "tok-123");
    free(s);
    unsetenv("CAPID_TEST_SECRET");
}

TEST(config_secret_from_file)
{
    struct capid_perr err;
    const char *path = temp_file("file-secret\n\n", 13);
    char *s = capid_config_read_secret(NULL, path, &err);
    ASSERT_STR(s, "file-secret");
    free(s);
    /* An empty variable falls through to the file. */
    setenv("CAPID_TEST_SECRET", "", 1);
    s = capid_config_read_secret("CAPID_TEST_SECRET", path, &err);
    ASSERT_STR(s, "file-secret");
    free(s);
    unsetenv("CAPID_TEST_SECRET");
    /* A group/world readable file is used (with a warning in the log,
     * silenced here). */
    chmod(path, 0644);
    capid_log_set_level(CAPID_LOG_ERROR);
    s = capid_config_read_secret(NULL, path, &err);
    capid_log_set_level(CAPID_LOG_INFO);
    ASSERT_STR(s, "file-secret");
    free(s);
    unlink(path);
}

TEST(config_secret_errors_name_the_source_never_the_value)
{
    struct capid_perr err;
    unsetenv("CAPID_TEST_UNSET");
    ASSERT_TRUE(capid_config_read_secret("CAPID_TEST_UNSET", NULL, &err) == NULL);
    ASSERT_STR(err.msg, "environment variable 'CAPID_TEST_UNSET' is not set");

    setenv("CAPID_TEST_SECRET", " \n", 1);
    ASSERT_TRUE(capid_config_read_secret("CAPID_TEST_SECRET", NULL, &err) == NULL);
    ASSERT_STR(err.msg, "environment variable 'CAPID_TEST_SECRET' is empty");

    setenv("CAPID_TEST_SECRET", "canary-env\nsecond", 1);
    ASSERT_TRUE(capid_config_read_secret("CAPID_TEST_SECRET", NULL, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "CAPID_TEST_SECRET") && !strstr(err.msg, "canary"));
    unsetenv("CAPID_TEST_SECRET");

    ASSERT_TRUE(capid_config_read_secret(NULL, "/nonexistent/token", &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "cannot open secret file '/nonexistent/token'") != NULL);
    ASSERT_TRUE(capid_config_read_secret("CAPID_TEST_UNSET", "/nonexistent/token", &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "'CAPID_TEST_UNSET' is not set; cannot open secret file "
                                "'/nonexistent/token'") != NULL);

    const char *path = temp_file(" \n", 2);
    ASSERT_TRUE(capid_config_read_secret(NULL, path, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "is empty") && strstr(err.msg, path));
    unlink(path);

    path = temp_file("canary-file\nsecond line\n", 24);
    ASSERT_TRUE(capid_config_read_secret(NULL, path, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, path) && !strstr(err.msg, "canary"));
    unlink(path);

    ASSERT_TRUE(capid_config_read_secret(NULL, "/tmp", &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "'/tmp' is not a regular file") != NULL);
    ASSERT_TRUE(capid_config_read_secret(NULL, NULL, &err) == NULL);
    ASSERT_TRUE(strstr(err.msg, "no secret configured") != NULL);
}

/* docs/CONFIG.md is the output of capid_config_write_reference();
 * CAPID_UPDATE_DOCS=1 rewrites it. */
TEST(config_reference_in_sync_with_docs)
{
    char *want = NULL;
    size_t wlen = 0;
    FILE *m = open_memstream(&want, &wlen);
    capid_config_write_reference(m);
    fclose(m);
    if (getenv("CAPID_UPDATE_DOCS")) {
        FILE *f = fopen("docs/CONFIG.md", "w");
        if (f) {
            fwrite(want, 1, wlen, f);
            fclose(f);
        }
    }
    size_t glen = 0;
    char *got = capid_test_slurp("docs/CONFIG.md", &glen);
    if (!got) {
        capid_test_fail(__FILE__, __LINE__, "cannot read docs/CONFIG.md (run from the repo root)");
    } else if (glen != wlen || memcmp(got, want, wlen) != 0) {
        size_t i = 0, line = 1;
        while (i < glen && i < wlen && got[i] == want[i])
            line += got[i++] == '\n';
        capid_test_fail(__FILE__, __LINE__,
                        "docs/CONFIG.md differs from capid_config_write_reference() at line %zu; "
                        "run CAPID_UPDATE_DOCS=1 build/unit-tests config_reference",
                        line);
    }
    free(got);
    free(want);
}

TEST(config_reference_lists_every_key)
{
    char *ref = NULL, row[96];
    size_t len = 0, n;
    FILE *m = open_memstream(&ref, &len);
    capid_config_write_reference(m);
    fclose(m);
    const struct capid_opt *o = capid_config_options(&n);
    for (size_t i = 0; i < n; i++) {
        snprintf(row, sizeof(row), "| `%s` | ", o[i].name);
        if (!strstr(ref, row))
            capid_test_fail(__FILE__, __LINE__, "no row for %s", o[i].name);
        if (strchr(o[i].help, '|'))
            capid_test_fail(__FILE__, __LINE__, "help of %s has a '|'", o[i].name);
    }
    const struct capid_section *s = capid_config_sections(&n);
    for (size_t i = 0; i < n; i++) {
        snprintf(row, sizeof(row), "\n## %s\n", s[i].name);
        ASSERT_TRUE(strstr(ref, row) != NULL);
    }
    ASSERT_TRUE(strstr(ref, "| `max_batch` | integer | `1000` | 1 to 1000 |") != NULL);
    ASSERT_TRUE(strstr(ref, "`product`, `product_group`, `none`") != NULL);
    free(ref);
}

/* Caps: a file of many tiny values cannot build a huge tree, and lists are
 * bounded before validation loops over them. */
TEST(config_caps_on_values_and_items)
{
    struct capid_config *cfg = NULL;
    struct capid_perr err;
    size_t n = 70000, len = 0;
    char *y = malloc(16 + 2 * n);
    len += (size_t)sprintf(y, "destinations: [");
    for (size_t i = 0; i < n; i++)
        y[len++] = 'a', y[len++] = ',';
    y[len++] = ']';
    ASSERT_INT(capid_config_parse(y, len, &cfg, &err), CAPID_ECONFIG);
    ASSERT_TRUE(strstr(err.buf, "more than 65536 yaml values") != NULL);

    len = (size_t)sprintf(y, "destinations: [");
    for (size_t i = 0; i < 1100; i++)
        len += (size_t)sprintf(y + len, "{},");
    y[len++] = ']';
    ASSERT_INT(capid_config_parse(y, len, &cfg, &err), CAPID_ECONFIG);
    ASSERT_TRUE(strstr(err.buf, "-:1: destinations: more than 1024 items") != NULL);
    free(y);
}
