/* libFuzzer harness: parse + map one event for two destinations (default
 * settings and every option switched on). Built by `make fuzz`. */
#include <stdint.h>
#include <stdlib.h>

#include "capi/geo.h"
#include "capi/map.h"
#include "config/config.h"
#include "event/event.h"

static struct capid_config *cfg;
static struct capid_mapper mapper;
static struct capid_mapped out;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char yaml[] =
        "destinations:\n"
        "  - {name: a, pixel_id: '1', access_token_env: T}\n"
        "  - {name: b, pixel_id: '2', access_token_env: T, consent_category: '4',\n"
        "     limited_data_use: true, app_tracking: true, external_id: raw,\n"
        "     content_type: product_group, min_strong_keys: 2, min_other_keys: 1,\n"
        "     event_names: {purchase: Buy, x: Y}}\n";
    struct capid_perr err = {0};
    (void)argc;
    (void)argv;
    if (capid_config_parse(yaml, sizeof(yaml) - 1, &cfg, &err) || capid_geo_init(NULL, &err) ||
        capid_mapper_init(&mapper))
        abort();
    capid_mapped_init(&out);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct capid_limits lim = CAPID_LIMITS_DEFAULT;
    struct capid_event ev;
    struct capid_perr err = {0};
    int64_t now = 1764000000;
    if (capid_event_parse(&ev, (const char *)data, size, &lim, now, &err) != CAPID_EV_OK)
        return 0;
    for (size_t i = 0; i < cfg->n_dests; i++) {
        capid_map_event(&mapper, &cfg->dests[i], &ev, now, &out);
        /* Every mapped event must itself be valid JSON. */
        if (out.reason == CAPID_R_NONE) {
            cJSON *j = cJSON_ParseWithLength(out.json.data, out.json.len);
            if (!j)
                abort();
            cJSON_Delete(j);
        }
    }
    capid_event_release(&ev);
    return 0;
}
