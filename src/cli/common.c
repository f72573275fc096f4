#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "capi/geo.h"
#include "config/config.h"

struct capid_config *capid_cli_load_config(const char *cmd, const char *path)
{
    struct capid_perr err = {0};
    struct capid_config *cfg = NULL;
    if (!path) {
        fprintf(stderr, "capid %s: --config FILE is required\n", cmd);
        return NULL;
    }
    if (capid_config_load(path, &cfg, &err) != CAPID_OK) {
        fprintf(stderr, "capid %s: bad config: %s\n", cmd, err.msg ? err.msg : "invalid");
        return NULL;
    }
    err = (struct capid_perr){0};
    if (capid_geo_init(NULL, &err) != CAPID_OK) {
        fprintf(stderr, "capid %s: cannot load country/currency tables: %s\n", cmd,
                err.msg ? err.msg : "unknown error");
        capid_config_free(cfg);
        return NULL;
    }
    return cfg;
}

size_t capid_cli_select_dests(const char *cmd, const struct capid_config *cfg, const char *name,
                              const struct capid_dest **out)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_dests; i++)
        if (!name || !strcmp(cfg->dests[i].name, name))
            out[n++] = &cfg->dests[i];
    if (!n)
        fprintf(stderr, "capid %s: no destination named '%s' in %s\n", cmd, name ? name : "",
                cfg->path);
    return n;
}
