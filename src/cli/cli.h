/* capid subcommands: each parses its own arguments and returns the exit
 * status (0 ok, 1 runtime failure, 2 usage or configuration error). */
#ifndef CAPID_CLI_CLI_H
#define CAPID_CLI_CLI_H

#include <stddef.h>

int capid_cmd_map(int argc, char **argv);
int capid_cmd_serve(int argc, char **argv);
int capid_cmd_enqueue(int argc, char **argv);
int capid_cmd_status(int argc, char **argv);
int capid_cmd_dlq(int argc, char **argv);
int capid_cmd_import(int argc, char **argv);

/* Shared by commands: loads the config and the fact tables, printing a
 * message that names the file and the problem; NULL on failure. */
struct capid_config;
struct capid_config *capid_cli_load_config(const char *cmd, const char *path);

/* Fills out (room for cfg->n_dests) with the destination named `name`, or
 * every destination when name is NULL; returns how many. Prints
 * "capid CMD: no destination named ..." and returns 0 when none matches. */
struct capid_dest;
size_t capid_cli_select_dests(const char *cmd, const struct capid_config *cfg, const char *name,
                              const struct capid_dest **out);

/* Event lines of fd for `capid map` and `capid enqueue` (the splitter that
 * `capid import` uses): a line over cfg's max_event_bytes still reaches the
 * parser, which gives too_large with its size, unless it is more than
 * 1 MiB over: then capid_ndjson_next returns CAPID_ETOOBIG without holding
 * it, and capid_cli_too_long words the skip's detail. Aborts when out of
 * memory (STYLE). */
struct capid_ndjson;
struct capid_ndjson_line;
struct capid_ndjson *capid_cli_event_lines(const struct capid_config *cfg, int fd);
void capid_cli_too_long(const struct capid_config *cfg, const struct capid_ndjson_line *ln,
                        char *detail, size_t size);

#endif
