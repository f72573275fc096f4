/* capid: wiring only. Dispatches to the subcommands in src/cli/. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"map", capid_cmd_map, "map NDJSON events to CAPI events (no delivery)"},
    {"serve", capid_cmd_serve, "run the gateway: deliver queued events to the Graph API"},
    {"enqueue", capid_cmd_enqueue, "map NDJSON events and commit them to the queue"},
    {"status", capid_cmd_status, "per destination: queued, leased, delivered, dead, paused"},
    {"dlq", capid_cmd_dlq, "list, show, replay or purge dead letters"},
    {"import", capid_cmd_import, "import CSV/NDJSON files of offline conversions into the queue"},
};

static int usage(FILE *to)
{
    fprintf(to, "usage: capid COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(to, "\n  --help-config  print the configuration reference (Markdown)\n"
                "  --version      print the version\n");
    return to == stderr ? 2 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return usage(stdout);
    if (!strcmp(argv[1], "--version")) {
        printf("capid %s\n", CAPID_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "--help-config")) {
        capid_config_write_reference(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "capid: unknown command '%s'\n", argv[1]);
    return usage(stderr);
}
