/* Mapping vectors: every case of ../shared/vectors/mapping.json and of our
 * own tests/data/mapping-cases.json, read at test time. A case is
 * {name, settings, now, input, expect}; expect is the CAPI event (compared
 * as JSON values) or {"skipped": reason}. */
#include "test.h"

#include <arpa/inet.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "capi/geo.h"
#include "capi/map.h"
#include "config/config.h"
#include "event/event.h"

/* Builds a one-destination config from a case's settings (JSON is YAML). */
static struct capid_config *config_for(const cJSON *settings)
{
    cJSON *dest = settings ? cJSON_Duplicate(settings, 1) : cJSON_CreateObject();
    if (!cJSON_GetObjectItemCaseSensitive(dest, "name"))
        cJSON_AddStringToObject(dest, "name", "test");
    if (!cJSON_GetObjectItemCaseSensitive(dest, "pixel_id"))
        cJSON_AddStringToObject(dest, "pixel_id", "1234567890");
    if (!cJSON_GetObjectItemCaseSensitive(dest, "access_token_env"))
        cJSON_AddStringToObject(dest, "access_token_env", "CAPID_TEST_TOKEN");
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "destinations");
    cJSON_AddItemToArray(list, dest);
    char *yaml = cJSON_PrintUnformatted(root);
    struct capid_config *cfg = NULL;
    struct capid_perr err = {0};
    if (capid_config_parse(yaml, strlen(yaml), &cfg, &err) != CAPID_OK)
        capid_test_fail(__FILE__, __LINE__, "settings %s rejected: %s", yaml,
                        err.msg ? err.msg : "?");
    free(yaml);
    cJSON_Delete(root);
    return cfg;
}

/* Runs one case; returns the number of failures. */
static void run_case(const cJSON *tc, const char *file)
{
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(tc, "name"));
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(tc, "input");
    const cJSON *expect = cJSON_GetObjectItemCaseSensitive(tc, "expect");
    int64_t now = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(tc, "now"));
    struct capid_config *cfg = config_for(cJSON_GetObjectItemCaseSensitive(tc, "settings"));
    if (!cfg)
        return;
    char *text = cJSON_IsString(input) ? strdup(input->valuestring) : cJSON_PrintUnformatted(input);
    struct capid_limits lim = {cfg->server.max_event_bytes, cfg->server.max_depth};
    struct capid_perr err = {0};
    struct capid_event ev;
    struct capid_mapper m;
    struct capid_mapped out;
    capid_mapper_init(&m);
    capid_mapped_init(&out);
    const char *want_skip =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(expect, "skipped"));

    enum capid_event_status st = capid_event_parse(&ev, text, strlen(text), &lim, now, &err);
    const char *got_skip = NULL;
    if (st == CAPID_EV_OK) {
        capid_map_event(&m, &cfg->dests[0], &ev, now, &out);
        if (out.reason != CAPID_R_NONE) {
            got_skip = capid_reason_name(out.reason);
            if (out.json.len)
                capid_test_fail(file, 0, "case '%s': skipped with JSON '%.60s'", name,
                                out.json.data);
        }
    } else {
        got_skip = st == CAPID_EV_TOO_LARGE      ? "too_large"
                   : st == CAPID_EV_INVALID_JSON ? "invalid_json"
                                                 : "invalid_event";
    }
    if (want_skip || got_skip) {
        if (!want_skip || !got_skip || strcmp(want_skip, got_skip))
            capid_test_fail(file, 0, "case '%s': skipped %s (%s), want %s%s", name,
                            got_skip ? got_skip : "no",
                            got_skip ? (err.msg ? err.msg : out.detail) : "",
                            want_skip ? want_skip : "an event: ", want_skip ? "" : out.json.data);
    } else {
        cJSON *got = cJSON_Parse(out.json.data);
        if (!got || !cJSON_Compare(got, expect, 1)) {
            char *w = cJSON_PrintUnformatted(expect);
            capid_test_fail(file, 0, "case '%s':\n  got  %s\n  want %s", name, out.json.data, w);
            free(w);
        }
        cJSON_Delete(got);
    }
    if (st == CAPID_EV_OK)
        capid_event_release(&ev);
    capid_mapped_release(&out);
    capid_mapper_release(&m);
    free(text);
    capid_config_free(cfg);
}

static void run_file(const char *path)
{
    char *json = capid_test_slurp(path, NULL);
    ASSERT_TRUE(json != NULL);
    cJSON *cases = json ? cJSON_Parse(json) : NULL;
    ASSERT_TRUE(cJSON_IsArray(cases) && cJSON_GetArraySize(cases) > 0);
    ASSERT_INT(capid_geo_init(NULL, NULL), CAPID_OK);
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cases) run_case(tc, path);
    cJSON_Delete(cases);
    free(json);
}

TEST(map_shared_vectors)
{
    run_file(capid_test_shared("vectors/mapping.json"));
}

TEST(map_own_cases)
{
    run_file("tests/data/mapping-cases.json");
}

/* One long-lived mapper (its digest memo and buffers warm from every case
 * before, each case mapped twice) writes the same bytes as a fresh one. */
static void run_file_warm(const char *path, struct capid_mapper *warm)
{
    char *json = capid_test_slurp(path, NULL);
    cJSON *cases = json ? cJSON_Parse(json) : NULL;
    ASSERT_TRUE(cJSON_IsArray(cases));
    const cJSON *tc;
    cJSON_ArrayForEach(tc, cases)
    {
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(tc, "input");
        int64_t now = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(tc, "now"));
        struct capid_config *cfg = config_for(cJSON_GetObjectItemCaseSensitive(tc, "settings"));
        if (!cfg)
            continue;
        char *text =
            cJSON_IsString(input) ? strdup(input->valuestring) : cJSON_PrintUnformatted(input);
        struct capid_limits lim = {cfg->server.max_event_bytes, cfg->server.max_depth};
        struct capid_perr err = {0};
        struct capid_event ev;
        if (capid_event_parse(&ev, text, strlen(text), &lim, now, &err) == CAPID_EV_OK) {
            struct capid_mapper cold;
            struct capid_mapped want, got;
            capid_mapper_init(&cold);
            capid_mapped_init(&want);
            capid_mapped_init(&got);
            capid_map_event(&cold, &cfg->dests[0], &ev, now, &want);
            for (int i = 0; i < 2; i++) {
                capid_map_event(warm, &cfg->dests[0], &ev, now, &got);
                ASSERT_INT(got.reason, want.reason);
                ASSERT_STR(got.json.data ? got.json.data : "",
                           want.json.data ? want.json.data : "");
            }
            capid_mapped_release(&got);
            capid_mapped_release(&want);
            capid_mapper_release(&cold);
            capid_event_release(&ev);
        }
        free(text);
        capid_config_free(cfg);
    }
    cJSON_Delete(cases);
    free(json);
}

TEST(map_warm_mapper_writes_what_a_fresh_one_writes)
{
    struct capid_mapper warm;
    ASSERT_INT(capid_geo_init(NULL, NULL), CAPID_OK);
    ASSERT_INT(capid_mapper_init(&warm), CAPID_OK);
    run_file_warm(capid_test_shared("vectors/mapping.json"), &warm);
    run_file_warm("tests/data/mapping-cases.json", &warm);
    run_file_warm(capid_test_shared("vectors/mapping.json"), &warm);
    capid_mapper_release(&warm);
}

/* The zp memo keys on the raw zip and on whether the event is in the US:
 * a US ZIP+4 without its dash keeps 5 digits, elsewhere all 9 (SPEC 5). */
TEST(map_memo_keeps_us_and_other_zips_apart)
{
    static const char *const events[] = {
        "{\"event_name\":\"page_view\",\"context\":{\"event_id\":\"a\",\"event_timestamp\":"
        "1763996400000,\"page\":{\"url\":\"https://s.example/\"},\"device\":{\"user_agent\":"
        "\"UA\"}},\"user\":{\"email\":\"a@example.com\",\"zipcode\":\"123456789\",\"country\":"
        "\"US\",\"city\":\"Paris\"}}",
        "{\"event_name\":\"page_view\",\"context\":{\"event_id\":\"b\",\"event_timestamp\":"
        "1763996400000,\"page\":{\"url\":\"https://s.example/\"},\"device\":{\"user_agent\":"
        "\"UA\"}},\"user\":{\"email\":\"a@example.com\",\"zipcode\":\"123456789\",\"country\":"
        "\"France\",\"city\":\"Paris\"}}",
    };
    static const char *const zp[] = {
        "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5", /* "12345" */
        "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225", /* "123456789" */
    };
    struct capid_config *cfg = config_for(NULL);
    struct capid_mapper m;
    struct capid_mapped out;
    ASSERT_TRUE(cfg != NULL);
    if (!cfg)
        return;
    ASSERT_INT(capid_geo_init(NULL, NULL), CAPID_OK);
    ASSERT_INT(capid_mapper_init(&m), CAPID_OK);
    capid_mapped_init(&out);
    for (int round = 0; round < 4; round++) {
        int i = round % 2;
        struct capid_limits lim = CAPID_LIMITS_DEFAULT;
        struct capid_perr err = {0};
        struct capid_event ev;
        ASSERT_INT(capid_event_parse(&ev, events[i], strlen(events[i]), &lim, 1764000000, &err),
                   CAPID_EV_OK);
        capid_map_event(&m, &cfg->dests[0], &ev, 1764000000, &out);
        ASSERT_INT(out.reason, CAPID_R_NONE);
        char want[80];
        snprintf(want, sizeof(want), "\"zp\":[\"%s\"]", zp[i]);
        ASSERT_TRUE(out.json.data && strstr(out.json.data, want));
        capid_event_release(&ev);
    }
    capid_mapped_release(&out);
    capid_mapper_release(&m);
    capid_config_free(cfg);
}

/* custom_data step 1 reads the root's members from what fetch_root kept
 * for the first 32 and looks the others up itself: both the same. */
TEST(map_custom_data_from_more_than_32_top_level_members)
{
    char ev_json[4096], want[64];
    int n = snprintf(ev_json, sizeof(ev_json),
                     "{\"event_name\":\"page_view\",\"context\":{\"event_id\":\"a\","
                     "\"event_timestamp\":1763996400000,\"page\":{\"url\":\"https://s.example/\"},"
                     "\"device\":{\"user_agent\":\"UA\"}},\"user\":{\"email\":\"a@example.com\"}");
    for (int i = 0; i < 40; i++) /* members 4..43; reserved ones at 20 and 40 */
        n += i == 16   ? snprintf(ev_json + n, sizeof(ev_json) - (size_t)n, ",\"fbp\":\"x\"")
             : i == 36 ? snprintf(ev_json + n, sizeof(ev_json) - (size_t)n, ",\"source_key\":\"y\"")
                       : snprintf(ev_json + n, sizeof(ev_json) - (size_t)n, ",\"k%d\":%d", i, i);
    snprintf(ev_json + n, sizeof(ev_json) - (size_t)n, "}");
    struct capid_config *cfg = config_for(NULL);
    struct capid_mapper m;
    struct capid_mapped out;
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    struct capid_perr err = {0};
    struct capid_event ev;
    if (!cfg)
        return;
    ASSERT_INT(capid_geo_init(NULL, NULL), CAPID_OK);
    ASSERT_INT(capid_mapper_init(&m), CAPID_OK);
    capid_mapped_init(&out);
    ASSERT_INT(capid_event_parse(&ev, ev_json, strlen(ev_json), &lim, 1764000000, &err),
               CAPID_EV_OK);
    capid_map_event(&m, &cfg->dests[0], &ev, 1764000000, &out);
    ASSERT_INT(out.reason, CAPID_R_NONE);
    const char *cd = out.json.data ? strstr(out.json.data, "\"custom_data\":{") : NULL;
    ASSERT_TRUE(cd != NULL);
    for (int i = 0; cd && i < 40; i++) {
        snprintf(want, sizeof(want), "\"k%d\":%d", i, i);
        ASSERT_TRUE((strstr(cd, want) != NULL) == (i != 16 && i != 36));
    }
    ASSERT_TRUE(cd && !strstr(cd, "\"fbp\"") && !strstr(cd, "source_key"));
    capid_event_release(&ev);
    capid_mapped_release(&out);
    capid_mapper_release(&m);
    capid_config_free(cfg);
}

/* client_ip_address is kept exactly when inet_pton takes it (map.c checks
 * dotted quads itself before calling it). */
TEST(map_client_ip_address_as_inet_pton_decides)
{
    static const char *const ips[] = {
        "1.2.3.4",     "0.0.0.0",     "255.255.255.255", "256.1.1.1",    "01.2.3.4",   "1.2.3.04",
        "1.2.3",       "1.2.3.4.",    ".1.2.3.4",        "1..2.3",       "1.2.3.4.5",  "1.2.3.4a",
        "999",         "00.1.2.3",    "1.2.3.255",       "1.2.3.256",    "1.2.3.2555", "10.0.0.10",
        "::1",         "2001:db8::1", "::ffff:1.2.3.4",  "1.2.3.-4",     "1.2.3.+4",   "1.2.3.4/24",
        "100.200.0.9", "0.1.2.3",     "1.0.0.0",         "12.34.56.789",
    };
    struct capid_config *cfg = config_for(NULL);
    struct capid_mapper m;
    struct capid_mapped out;
    if (!cfg)
        return;
    ASSERT_INT(capid_geo_init(NULL, NULL), CAPID_OK);
    ASSERT_INT(capid_mapper_init(&m), CAPID_OK);
    capid_mapped_init(&out);
    for (size_t i = 0; i < sizeof(ips) / sizeof(ips[0]); i++) {
        char ev_json[512];
        unsigned char addr[16];
        snprintf(ev_json, sizeof(ev_json),
                 "{\"event_name\":\"page_view\",\"context\":{\"event_id\":\"a\","
                 "\"event_timestamp\":1763996400000,\"page\":{\"url\":\"https://s.example/\"},"
                 "\"device\":{\"user_agent\":\"UA\",\"ip\":\"%s\"}},\"user\":{\"email\":"
                 "\"a@example.com\"}}",
                 ips[i]);
        struct capid_limits lim = CAPID_LIMITS_DEFAULT;
        struct capid_perr err = {0};
        struct capid_event ev;
        ASSERT_INT(capid_event_parse(&ev, ev_json, strlen(ev_json), &lim, 1764000000, &err),
                   CAPID_EV_OK);
        capid_map_event(&m, &cfg->dests[0], &ev, 1764000000, &out);
        bool want = inet_pton(AF_INET, ips[i], addr) == 1 || inet_pton(AF_INET6, ips[i], addr) == 1;
        bool got = out.json.data && strstr(out.json.data, "\"client_ip_address\":") != NULL;
        if (got != want)
            capid_test_fail(__FILE__, __LINE__, "ip '%s': kept %d, inet_pton %d", ips[i], got,
                            want);
        capid_event_release(&ev);
    }
    capid_mapped_release(&out);
    capid_mapper_release(&m);
    capid_config_free(cfg);
}
