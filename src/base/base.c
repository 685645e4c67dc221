/* SPDX-License-Identifier: MIT */
/*
 * base.c: status names and messages, the error carrier, the allocation hook,
 * logging, assertions and monotonic time (see base.h).
 *
 * The allocation hook is a single atomic counter: when it is >= 0 it is
 * decremented on every allocation and allocations fail once it reaches 0.
 * That is enough for sqlite-style fault-injection loops in tests
 * ("fail the 1st, 2nd, ... allocation and check nothing leaks or crashes").
 */

#include "imgsearch/base.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- status table -------------------------------------------------------- */

static const char *const status_names[] = {
    "ok",
#define XX(code, name, msg) name,
    IMS_ERR_MAP(XX)
#undef XX
};

static const char *const status_messages[] = {
    "success",
#define XX(code, name, msg) msg,
    IMS_ERR_MAP(XX)
#undef XX
};

const char *ims_status_name(enum ims_status st)
{
    if ((unsigned)st >= IMS_STATUS_COUNT)
        return "unknown";
    return status_names[st];
}

const char *ims_strerror(enum ims_status st)
{
    if ((unsigned)st >= IMS_STATUS_COUNT)
        return "unknown error";
    return status_messages[st];
}

enum ims_status ims_error_setv(struct ims_error *err, enum ims_status st, const char *fmt,
                               va_list ap)
{
    if (err)
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
    return st;
}

enum ims_status ims_error_set(struct ims_error *err, enum ims_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ims_error_setv(err, st, fmt, ap);
    va_end(ap);
    return st;
}

void ims_error_prefix(struct ims_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    char old[sizeof(err->message)];
    memcpy(old, err->message, sizeof(old));
    if (old[0])
        snprintf(err->message, sizeof(err->message), "%s: %s", prefix, old);
    else
        snprintf(err->message, sizeof(err->message), "%s", prefix);
}

const char *ims_error_message(const struct ims_error *err, enum ims_status st)
{
    if (err && err->message[0])
        return err->message;
    return ims_strerror(st);
}

/* ---- allocation ------------------------------------------------------------ */

static atomic_long fail_after = -1;

static int alloc_should_fail(void)
{
    long n = atomic_load_explicit(&fail_after, memory_order_relaxed);
    if (n < 0)
        return 0;
    while (n > 0) {
        if (atomic_compare_exchange_weak(&fail_after, &n, n - 1))
            return 0;
        if (n < 0)
            return 0;
    }
    return 1;
}

void ims_alloc_set_fail_after(long n) { atomic_store(&fail_after, n); }

void *ims_malloc(size_t n)
{
    if (alloc_should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *ims_calloc(size_t count, size_t size)
{
    if (alloc_should_fail())
        return NULL;
    if (count == 0 || size == 0)
        return calloc(1, 1);
    return calloc(count, size);
}

void *ims_realloc(void *p, size_t n)
{
    if (alloc_should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void ims_free(void *p) { free(p); }

void *ims_aligned_alloc(size_t alignment, size_t n)
{
    if (alloc_should_fail())
        return NULL;
    void *p = NULL;
    if (posix_memalign(&p, alignment, n ? n : alignment) != 0)
        return NULL;
    return p;
}

char *ims_strndup(const char *s, size_t n)
{
    char *p = ims_malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *ims_strdup(const char *s) { return ims_strndup(s, strlen(s)); }

int ims_size_mul(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return -1;
    *out = r;
    return 0;
}

int ims_size_add(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r))
        return -1;
    *out = r;
    return 0;
}

/* ---- time and logging -------------------------------------------------------- */

double ims_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void ims_deadline_after_ms(clockid_t clock, long ms, struct timespec *out)
{
    clock_gettime(clock, out);
    if (ms < 0)
        ms = 0;
    out->tv_sec += ms / 1000;
    out->tv_nsec += (ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

uint64_t ims_fnv1a64_update(uint64_t h, const void *data, size_t n)
{
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull; /* the FNV prime */
    }
    return h;
}

uint64_t ims_fnv1a64(const void *data, size_t n)
{
    return ims_fnv1a64_update(IMS_FNV1A64_BASIS, data, n);
}

const char *ims_format_word(const char *word)
{
    static const char *const words[][2] = {
        {"jpeg", "jpeg"}, {"jpg", "jpeg"}, {"png", "png"},   {"webp", "webp"},
        {"gif", "gif"},   {"bmp", "bmp"},  {"heic", "heic"}, {"heif", "heic"},
        {"avif", "avif"}, {"tiff", "tiff"}, {"tif", "tiff"},
    };
    for (size_t i = 0; word && i < IMS_ARRAY_LEN(words); i++)
        if (!strcasecmp(word, words[i][0]))
            return words[i][1];
    return NULL;
}

static atomic_int log_level = IMS_LOG_INFO;

void ims_log_set_level(enum ims_log_level level) { atomic_store(&log_level, (int)level); }

void ims_log(enum ims_log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_level))
        return;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "imgsearch: %s: %s\n", names[level], line);
}

_Noreturn void ims__assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "imgsearch: internal error: assertion '%s' failed at %s:%d\n", expr, file,
            line);
    abort();
}
