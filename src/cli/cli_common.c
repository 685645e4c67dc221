/* SPDX-License-Identifier: MIT */
/*
 * cli_common.c: defaults and option parsing shared by the subcommands.
 * Deliberately tiny (no getopt_long): options are `--name VALUE` or
 * `--name=VALUE` and may appear anywhere among the positional arguments.
 */

#include "cli.h"
#include "imgsearch/image.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *xdg_path(const char *env, const char *suffix, char *buf, size_t n)
{
    const char *v = getenv(env);
    if (v && *v)
        return v;
    const char *xdg = getenv("XDG_DATA_HOME");
    if (xdg && *xdg) {
        snprintf(buf, n, "%s/imgsearch/%s", xdg, suffix);
    } else {
        const char *home = getenv("HOME");
        snprintf(buf, n, "%s/.local/share/imgsearch/%s", home && *home ? home : ".", suffix);
    }
    return buf;
}

const char *cli_default_data_dir(void)
{
    static char buf[PATH_MAX];
    return xdg_path("IMGSEARCH_DATA", "data", buf, sizeof(buf));
}

const char *cli_default_model_dir(void)
{
    static char buf[PATH_MAX];
    return xdg_path("IMGSEARCH_MODEL", "models/clip-vit-base-patch32", buf, sizeof(buf));
}

const char *cli_share_dir(void)
{
    static char buf[PATH_MAX];
    const char *v = getenv("IMGSEARCH_SHARE");
    if (v && *v)
        return v;
    /* Next to the binary: <prefix>/bin/imgsearch -> <prefix>/share/imgsearch;
     * in a build tree: <build>/src/cli/imgsearch -> <source>/data. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, sizeof(buf), "%s/../share/imgsearch", exe);
            if (access(buf, R_OK) == 0)
                return buf;
        }
    }
#ifdef IMS_SOURCE_DATA_DIR
    return IMS_SOURCE_DATA_DIR;
#else
    return "/usr/share/imgsearch";
#endif
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "imgsearch %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_usage(const char *cmd, const char *help, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "imgsearch %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", help);
    va_end(ap);
    return 2;
}

int cli_opt_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *value = argv[++*i];
    return 1;
}

int cli_parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_id(const char *s, int64_t *out)
{
    long v;
    if (!s || s[0] == '-' ||
        cli_parse_long(s, 1, INT64_MAX > LONG_MAX ? LONG_MAX : (long)INT64_MAX, &v))
        return -1;
    *out = v;
    return 0;
}

static volatile sig_atomic_t interrupted;
static atomic_int cancel_flag;

static void on_cancel_signal(int sig)
{
    (void)sig;
    interrupted = 1;
    atomic_store(&cancel_flag, 1);
}

atomic_int *cli_cancel_on_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_cancel_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return &cancel_flag;
}

int cli_interrupted(void) { return interrupted != 0; }

int cli_parse_exif_orientation(const char *v, int *ignore)
{
    if (v && !strcmp(v, "apply")) {
        *ignore = 0;
        return 0;
    }
    if (v && !strcmp(v, "ignore")) {
        *ignore = 1;
        return 0;
    }
    return -1;
}

int cli_parse_time(const char *v, int end_of_day, int64_t *out)
{
    if (!v || !*v)
        return -1;
    char *end;
    long long secs = strtoll(v, &end, 10);
    if (!*end && end != v) {
        *out = secs;
        return 0;
    }
    char buf[32];
    size_t n = strlen(v);
    if (n == 10) {
        snprintf(buf, sizeof(buf), "%s %s", v, end_of_day ? "23:59:59" : "00:00:00");
    } else if (n == 19 || (n == 20 && v[19] == 'Z')) {
        memcpy(buf, v, 19);
        buf[19] = 0;
    } else {
        return -1;
    }
    return image_exif_parse_time(buf, NULL, out) == 0 ? 0 : -1;
}
