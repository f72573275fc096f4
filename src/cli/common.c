#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capi/geo.h"
#include "config/config.h"
#include "ingest/ndjson.h"

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

struct capid_ndjson *capid_cli_event_lines(const struct capid_config *cfg, int fd)
{
    struct capid_ndjson *nd = NULL;
    size_t max_line = cfg->server.max_event_bytes + CAPID_NDJSON_MAX_LINE_DEFAULT;
    if (capid_ndjson_open_fd(&nd, fd, max_line, NULL) != CAPID_OK)
        abort();
    return nd;
}

void capid_cli_too_long(const struct capid_config *cfg, const struct capid_ndjson_line *ln,
                        char *detail, size_t size)
{
    snprintf(detail, size, "event line of %llu bytes (with its line end), over the limit of %zu",
             (unsigned long long)(ln->end_offset - ln->offset), cfg->server.max_event_bytes);
}
