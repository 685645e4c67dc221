/* SPDX-License-Identifier: MIT */
/*
 * main.c: `imgsearch <command> ...` dispatch. The command table is generated
 * by CMake from the cmd_*.c files present (cli_commands.inc), so adding a
 * subcommand is adding one file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define CLI_COMMAND(name)                                                                          \
    int cli_cmd_##name(int argc, char **argv);                                                     \
    extern const char cli_help_##name[];
#include "cli_commands.inc"
#undef CLI_COMMAND

struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
};

static const struct cli_command commands[] = {
#define CLI_COMMAND(name) {#name, cli_cmd_##name, cli_help_##name},
#include "cli_commands.inc"
#undef CLI_COMMAND
    {NULL, NULL, NULL}, /* keeps the array non-empty */
};

/* make_model <-> make-model */
static int name_matches(const char *table_name, const char *arg)
{
    for (; *table_name && *arg; table_name++, arg++) {
        char a = *arg == '-' ? '_' : *arg;
        if (a != *table_name)
            return 0;
    }
    return *table_name == *arg;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: imgsearch <command> [options]\n\ncommands:\n");
    for (const struct cli_command *c = commands; c->name; c++) {
        char name[64];
        snprintf(name, sizeof(name), "%s", c->name);
        for (char *p = name; *p; p++)
            if (*p == '_')
                *p = '-';
        fprintf(out, "  %s\n", name);
    }
    fprintf(out, "\n`imgsearch <command> --help` describes a command.\n");
}

int main(int argc, char **argv)
{
    /* The CLIP engine's threads are libgomp's (through oneDNN). By default
     * they spin for a while after each parallel region, stealing the cores
     * from the decode workers and the server's threads; passive waiting
     * measured 10-30x faster single-image encodes on a busy 2-core machine
     * (docs/internals/forward.md). libgomp reads the setting once, before
     * main, so set it and re-execute; an explicit user setting is kept.
     * glibc's malloc likewise reads its tunables before main: hugetlb=1 has
     * it ask for transparent huge pages, which on the VMs measured made the
     * first touch of fresh memory (decode buffers, the model) 30-40x cheaper
     * (bench/README-ingest.md, "Large photos"). */
    int reexec = 0;
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        reexec = 1;
    }
    if (!getenv("GLIBC_TUNABLES")) {
        setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1", 1);
        reexec = 1;
    }
    if (reexec)
        execv("/proc/self/exe", argv); /* if that fails, run with the defaults */
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("imgsearch %s\n", IMS_VERSION);
        return 0;
    }
    for (const struct cli_command *c = commands; c->name; c++) {
        if (name_matches(c->name, argv[1])) {
            for (int k = 2; k < argc; k++) {
                if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
                    fputs(c->help, stdout);
                    return 0;
                }
            }
            return c->run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "imgsearch: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
