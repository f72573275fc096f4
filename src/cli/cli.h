/* capid subcommands: each parses its own arguments and returns the exit
 * status (0 ok, 1 runtime failure, 2 usage or configuration error). */
#ifndef CAPID_CLI_CLI_H
#define CAPID_CLI_CLI_H

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

#endif
