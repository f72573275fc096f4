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

#endif
