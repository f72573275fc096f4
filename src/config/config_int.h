/* Internals of the config module, shared with its unit tests: the option
 * table that drives parsing, defaults, validation and docs/CONFIG.md. */
#ifndef CAPID_CONFIG_CONFIG_INT_H
#define CAPID_CONFIG_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

/* Largest configuration file or string accepted. */
#define CAPID_CONFIG_MAX_BYTES (1024 * 1024)
/* Caps on counts, so a hostile file cannot make validation quadratic. */
#define CAPID_CONFIG_MAX_ITEMS 1024
/* Largest secret file read by capid_config_read_secret(). */
#define CAPID_CONFIG_MAX_SECRET 65536

/* A section is one struct of config.h; its options live in the table. */
enum capid_opt_sec {
    CAPID_SEC_DEST,     /* struct capid_dest, items of `destinations:` */
    CAPID_SEC_SOURCE,   /* struct capid_source, items of `sources:` */
    CAPID_SEC_QUEUE,    /* struct capid_queue_cfg */
    CAPID_SEC_DELIVERY, /* struct capid_delivery_cfg (global and per destination) */
    CAPID_SEC_SERVER,   /* struct capid_server_cfg */
    CAPID_SEC_COUNT
};

enum capid_opt_type {
    CAPID_OPT_STRING,  /* char *, heap-owned, never empty */
    CAPID_OPT_INT,     /* int within [min, max] */
    CAPID_OPT_BOOL,    /* bool */
    CAPID_OPT_ENUM,    /* enum stored as int: index into choices */
    CAPID_OPT_SIZE,    /* size_t, bytes (KiB/MiB/GiB suffixes accepted) */
    CAPID_OPT_LIST,    /* char ** + size_t count at count_off */
    CAPID_OPT_MAP,     /* struct capid_name_pair * + size_t count at count_off */
    CAPID_OPT_SECTION, /* an embedded struct of section `sub` */
};

#define CAPID_OPT_REQUIRED 1u /* must be present and not null */

/* Validates (and may normalise in place) a string value; returns NULL when
 * valid, else a static reason such as "must contain only digits". `doc`
 * describes the valid values in docs/CONFIG.md. */
struct capid_opt_check {
    const char *doc;
    const char *(*fn)(char *s);
};

struct capid_opt {
    const char *name; /* YAML key, also the struct field's name */
    enum capid_opt_sec sec;
    enum capid_opt_type type;
    unsigned flags;
    const char *def;                     /* default as YAML text; NULL = unset/empty */
    long long min, max;                  /* INT, SIZE */
    const char *const *choices;          /* ENUM: NULL-terminated, in enum order */
    size_t off;                          /* offset of the field in the section struct */
    size_t count_off;                    /* LIST, MAP: offset of the size_t count */
    enum capid_opt_sec sub;              /* SECTION: the embedded section */
    const struct capid_opt_check *check; /* STRING, LIST items: or NULL */
    const char *help;
};

/* Top-level keys of the file. */
struct capid_section {
    const char *name; /* top-level key */
    enum capid_opt_sec sec;
    bool list;        /* a list of maps (destinations, sources), else one map */
    const char *what; /* singular noun used in messages */
    const char *help;
};

/* The tables, in documentation order. */
const struct capid_opt *capid_config_options(size_t *n);
const struct capid_section *capid_config_sections(size_t *n);

#endif
