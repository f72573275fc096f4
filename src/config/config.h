/* capid configuration: one YAML file (libyaml), described by one option
 * table that drives parsing, validation, defaults and docs/CONFIG.md.
 * Sections: destinations (SPEC 3), queue, delivery, server, sources. */
#ifndef CAPID_CONFIG_CONFIG_H
#define CAPID_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/err.h"

enum capid_content_type { CAPID_CT_PRODUCT, CAPID_CT_PRODUCT_GROUP, CAPID_CT_NONE };
enum capid_extid_mode { CAPID_EXTID_HASHED, CAPID_EXTID_RAW };
enum capid_sync_mode { CAPID_SYNC_FULL, CAPID_SYNC_NORMAL };

struct capid_name_pair {
    char *from; /* Commanders Act event_name */
    char *to;   /* Meta event name */
};

/* Delivery tuning (SPEC 7); a destination may override each key. */
struct capid_delivery_cfg {
    int max_batch;          /* events per request, 1..1000, default 1000 */
    int linger_ms;          /* wait for a fuller batch, default 200 */
    int max_inflight;       /* concurrent requests per destination, default 4 */
    int timeout_ms;         /* whole request, default 10000 */
    int max_attempts;       /* default 10 */
    int retry_window_s;     /* default 86400 */
    int backoff_initial_ms; /* default 1000 */
    int backoff_max_ms;     /* default 300000 */
    int probe_interval_s;   /* paused destination probe, default 60 */
};

/* One Meta pixel (dataset). Strings are heap-owned by the config. */
struct capid_dest {
    char *name;
    char *pixel_id;          /* digits only */
    char *access_token_env;  /* name of an environment variable, or NULL */
    char *access_token_file; /* path of a file holding the token, or NULL */
    char *api_version;       /* default "v21.0" */
    char *graph_url;         /* default "https://graph.facebook.com" */
    char *consent_category;  /* NULL = consent not checked */
    char *test_event_code;   /* NULL = not sent */
    struct capid_name_pair *event_names;
    size_t n_event_names;
    enum capid_content_type content_type; /* default product */
    enum capid_extid_mode external_id;    /* default hashed */
    bool limited_data_use;
    bool app_tracking;
    int min_strong_keys; /* default 1 */
    int min_other_keys;  /* default 3 */
    struct capid_delivery_cfg delivery;
};

struct capid_source {
    char *name;
    char *key_env;  /* environment variable holding the ingest key, or NULL */
    char *key_file; /* file holding the ingest key, or NULL */
    char **destinations;
    size_t n_destinations;
};

struct capid_queue_cfg {
    char *path;                       /* default "var/capid-queue.db" */
    enum capid_sync_mode synchronous; /* default full */
    int keep_delivered_s;             /* default 86400 */
};

struct capid_server_cfg {
    char *listen;               /* "127.0.0.1:8080" */
    char *ready_file;           /* written with the bound port once accepting, or NULL */
    size_t max_event_bytes;     /* default 32768 */
    size_t max_request_bytes;   /* default 512000 */
    int max_events;             /* per request, default 1000 */
    int max_depth;              /* JSON nesting, default 32 */
    int connection_timeout_s;   /* default 10 */
    int max_connections;        /* default 1024 */
    int max_connections_per_ip; /* default 64 */
    int threads;                /* default 2 */
};

struct capid_config {
    char *path; /* file it was loaded from ("-" for a string) */
    struct capid_dest *dests;
    size_t n_dests;
    struct capid_source *sources;
    size_t n_sources;
    struct capid_queue_cfg queue;
    struct capid_delivery_cfg delivery; /* defaults for every destination */
    struct capid_server_cfg server;
};

/* Loads and validates a YAML file. On error returns a capid_err, fills err
 * (message names the key, the line and the valid choices) and sets *out to
 * NULL. Secrets are not read here (see capid_config_read_secret). */
int capid_config_load(const char *path, struct capid_config **out, struct capid_perr *err);
/* Same, from a NUL-terminated YAML string (tests, `capid map` settings). */
int capid_config_parse(const char *yaml, size_t len, struct capid_config **out,
                       struct capid_perr *err);
void capid_config_free(struct capid_config *cfg);

/* Finds a destination by name; NULL when absent. */
const struct capid_dest *capid_config_dest(const struct capid_config *cfg, const char *name);

/* Reads a secret named by an env variable or a file (first non-empty wins,
 * trailing newline trimmed). Returns a heap string or NULL with err set to a
 * message that names the variable or file but never the secret. */
char *capid_config_read_secret(const char *env, const char *file, struct capid_perr *err);

/* Writes the configuration reference (Markdown) generated from the option
 * table: every key, type, default, range or choices, and help text. */
void capid_config_write_reference(FILE *out);

#endif
