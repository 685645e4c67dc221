/* SPDX-License-Identifier: MIT */
/*
 * cli.h: what subcommands share: option parsing helpers and defaults.
 *
 * Each subcommand is `int cli_cmd_<name>(int argc, char **argv)` in its own
 * cmd_<name>.c with a `cli_help_<name>` usage string; argv[0] is the
 * subcommand name. A subcommand returns the process exit status: 0 on
 * success, 1 when the work failed, 2 on a usage error. Errors go to stderr
 * as "imgsearch <cmd>: message".
 */
#ifndef IMGSEARCH_CLI_H
#define IMGSEARCH_CLI_H

#include <stdatomic.h>

#include "imgsearch/base.h"

/* Default folders: $IMGSEARCH_DATA / $IMGSEARCH_MODEL, else
 * $XDG_DATA_HOME/imgsearch/{data,models/clip-vit-base-patch32}
 * (XDG_DATA_HOME defaults to ~/.local/share). The returned string is static. */
const char *cli_default_data_dir(void);
const char *cli_default_model_dir(void);
/* Folder holding the bundled vocabulary (data/vocab in the source tree or
 * share/imgsearch/vocab once installed); $IMGSEARCH_SHARE overrides. */
const char *cli_share_dir(void);

/* Prints "imgsearch <cmd>: <msg>" to stderr. Returns 1. */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints a usage error and the help text. Returns 2. */
int cli_usage(const char *cmd, const char *help, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* If argv[*i] is `--name VALUE` or `--name=VALUE`, stores VALUE, advances
 * *i past it and returns 1; returns -1 when the value is missing; else 0. */
int cli_opt_value(int argc, char **argv, int *i, const char *name, const char **value);
/* Parses a non-negative integer option value; returns 0 on success. */
int cli_parse_long(const char *s, long min, long max, long *out);
/* A catalogue image id given as an argument (decimal, >= 1): 0 and *out
 * set, or -1. */
int cli_parse_id(const char *s, int64_t *out);

/* For commands that stop cleanly on ^C (add, reembed): from now on SIGINT
 * and SIGTERM set the returned flag, which the pipeline's threads read (an
 * atomic: lock-free, so also safe to store from the handler).
 * cli_interrupted() says whether a signal came. */
atomic_int *cli_cancel_on_signals(void);
int cli_interrupted(void);
/* A time for filters: unix seconds, YYYY-MM-DD (UTC; the day's start, or
 * with end_of_day its last second) or YYYY-MM-DDTHH:MM:SS[Z] (UTC).
 * 0 and *out set, or -1. */
int cli_parse_time(const char *v, int end_of_day, int64_t *out);
/* --exif-orientation apply|ignore (issue 10): 0 and *ignore set, or -1. */
int cli_parse_exif_orientation(const char *v, int *ignore);
#define CLI_EXIF_HELP                                                                           \
    "  --exif-orientation apply|ignore  embed photos upright per their EXIF orientation\n"     \
    "                      (default apply; ignore keeps the reference CLIP pipeline bit-exact)\n"


#endif
