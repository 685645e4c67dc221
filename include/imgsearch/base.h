/* SPDX-License-Identifier: MIT */
/*
 * base.h: the few things every imgsearch module shares, and nothing else.
 *
 *     struct ims_error err = {0};
 *     enum ims_status st = clip_model_load(dir, &model, &err);
 *     if (st != IMS_OK)
 *         fprintf(stderr, "imgsearch: %s\n", ims_error_message(&err, st));
 *
 * - One status enum, generated from IMS_ERR_MAP (libuv's UV_ERRNO_MAP style):
 *   each code has a stable name (the JSON `error.code` of the HTTP API) and a
 *   generic message. Functions return a status; a precise, user-facing
 *   message travels in an optional `struct ims_error *` (may be NULL).
 *   Only the server maps statuses to HTTP codes.
 * - Allocation goes through ims_malloc/ims_calloc/ims_realloc/ims_free so that
 *   tests can inject failures (ims_alloc_set_fail_after).
 * - IMS_ASSERT is for broken invariants of our own code only. Anything that
 *   comes from outside (bytes, sizes, JSON, headers, model files) returns a
 *   status instead and never reaches an assert.
 * - struct ims_str is a borrowed byte range with no NUL assumption.
 *
 * Thread-safety: everything here may be called from any thread; the
 * allocation-failure hook is a test facility and is set before threads start.
 */
#ifndef IMGSEARCH_BASE_H
#define IMGSEARCH_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------ */

#define IMS_ERR_MAP(XX)                                                        \
    XX(INVALID, "invalid_argument", "invalid input")                           \
    XX(TOO_LARGE, "too_large", "input exceeds the configured limit")           \
    XX(UNSUPPORTED, "unsupported", "unsupported media type or format")         \
    XX(NOMEM, "out_of_memory", "out of memory")                                \
    XX(CORRUPT, "corrupt", "corrupt or truncated data")                        \
    XX(NOT_FOUND, "not_found", "not found")                                    \
    XX(EXISTS, "exists", "already exists")                                     \
    XX(IO, "io_error", "input/output error")                                   \
    XX(MODEL_MISMATCH, "model_mismatch", "data folder belongs to another model") \
    XX(REFUSED, "refused", "refused by policy")                                \
    XX(NETWORK, "network", "network error")                                    \
    XX(TIMEOUT, "timeout", "timed out")                                        \
    XX(BUSY, "busy", "busy, try again later")                                  \
    XX(RATE_LIMITED, "rate_limited", "too many requests")                      \
    XX(UNAUTHORIZED, "unauthorized", "missing or wrong API key")               \
    XX(CANCELLED, "cancelled", "cancelled")                                    \
    XX(METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed")                                    \
    XX(INTERNAL, "internal", "internal error")

enum ims_status {
    IMS_OK = 0,
#define IMS_XX_ENUM(code, name, msg) IMS_ERR_##code,
    IMS_ERR_MAP(IMS_XX_ENUM)
#undef IMS_XX_ENUM
    IMS_STATUS_COUNT
};

/* Stable machine-readable name ("too_large"), never NULL. */
const char *ims_status_name(enum ims_status st);
/* Generic human message for a status, never NULL. */
const char *ims_strerror(enum ims_status st);

/* A precise message for the user. Fixed size so that setting it cannot fail. */
struct ims_error {
    char message[512];
};

/* Formats a message into `err` (if not NULL) and returns `st`, so that error
 * paths read `return ims_error_set(err, IMS_ERR_CORRUPT, "...", ...);`. */
enum ims_status ims_error_set(struct ims_error *err, enum ims_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
enum ims_status ims_error_setv(struct ims_error *err, enum ims_status st, const char *fmt,
                               va_list ap);
/* Prepends "prefix: " to the message already in `err` (if any). */
void ims_error_prefix(struct ims_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The message in `err` if set, else ims_strerror(st). Never NULL. */
const char *ims_error_message(const struct ims_error *err, enum ims_status st);

/* ---- allocation -------------------------------------------------------- */

void *ims_malloc(size_t n);
void *ims_calloc(size_t count, size_t size);
void *ims_realloc(void *p, size_t n);
void ims_free(void *p);
/* Aligned allocation (alignment a power of two, >= sizeof(void *));
 * release with ims_free. */
void *ims_aligned_alloc(size_t alignment, size_t n);
char *ims_strdup(const char *s);
char *ims_strndup(const char *s, size_t n);
/* Test hook: after `n` more successful allocations, every allocation fails.
 * n < 0 disables the hook. Not for production use. */
void ims_alloc_set_fail_after(long n);

/* Overflow-checked size arithmetic: returns 0 and sets *out on success,
 * -1 on overflow. */
int ims_size_mul(size_t a, size_t b, size_t *out);
int ims_size_add(size_t a, size_t b, size_t *out);

/* ---- strings and buffers ------------------------------------------------ */

/* A borrowed byte range; not NUL-terminated in general. */
struct ims_str {
    const char *ptr;
    size_t len;
};
#define IMS_STR_LIT(s) ((struct ims_str){(s), sizeof(s) - 1})

/* A growable byte buffer with a hard maximum fixed at init (curl's dynbuf).
 * Init cannot fail; appends fail with IMS_ERR_TOO_LARGE past `max_bytes`.
 * The content is always NUL-terminated (not counted in len). */
struct ims_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max_bytes;
};
void ims_buf_init(struct ims_buf *b, size_t max_bytes);
void ims_buf_fini(struct ims_buf *b);
void ims_buf_reset(struct ims_buf *b);
enum ims_status ims_buf_append(struct ims_buf *b, const void *p, size_t n);
enum ims_status ims_buf_printf(struct ims_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Hands the content to the caller (release with ims_free) and resets `b`. */
char *ims_buf_steal(struct ims_buf *b, size_t *len_out);

/* ---- files ----------------------------------------------------------- */

/* Reads a whole file into memory. Fails with IMS_ERR_TOO_LARGE if it is
 * larger than max_bytes. On success *data (NUL-terminated, release with
 * ims_free) and *len are set. */
enum ims_status ims_file_read(const char *path, size_t max_bytes, char **data, size_t *len,
                              struct ims_error *err);
/* Writes `len` bytes to `path` atomically: temp file in the same folder,
 * fsync, rename, fsync of the folder. */
enum ims_status ims_file_write_atomic(const char *path, const void *data, size_t len,
                                      struct ims_error *err);
/* mkdir -p. */
enum ims_status ims_mkdir_p(const char *path, struct ims_error *err);

/* ---- time ------------------------------------------------------------ */

/* Monotonic seconds, for measuring durations. */
double ims_now(void);
/* The absolute time `ms` milliseconds (>= 0) from now on `clock`
 * (CLOCK_MONOTONIC for condition variables created with that clock, else
 * CLOCK_REALTIME): the deadline of a pthread_cond_timedwait. */
void ims_deadline_after_ms(clockid_t clock, long ms, struct timespec *out);

/* ---- logging --------------------------------------------------------- */

enum ims_log_level { IMS_LOG_DEBUG, IMS_LOG_INFO, IMS_LOG_WARN, IMS_LOG_ERROR };
void ims_log_set_level(enum ims_log_level level);
void ims_log(enum ims_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- bounded blocking queue -------------------------------------------- */

/* A bounded multi-producer multi-consumer queue of pointers: the pipes
 * between pipeline stages. Push blocks while full (back-pressure), pop blocks
 * while empty. After ims_queue_close, pushes fail with IMS_ERR_CANCELLED and
 * pops drain what is left, then fail with IMS_ERR_CANCELLED. The queue never
 * owns the items. Thread-safe. */
struct ims_queue;
enum ims_status ims_queue_new(size_t capacity, struct ims_queue **out);
void ims_queue_free(struct ims_queue *q);
enum ims_status ims_queue_push(struct ims_queue *q, void *item);
/* Like push but returns IMS_ERR_BUSY at once when full. */
enum ims_status ims_queue_try_push(struct ims_queue *q, void *item);
enum ims_status ims_queue_pop(struct ims_queue *q, void **item);
/* Pops with a timeout in milliseconds; IMS_ERR_TIMEOUT when nothing came. */
enum ims_status ims_queue_pop_timed(struct ims_queue *q, void **item, long timeout_ms);
void ims_queue_close(struct ims_queue *q);
size_t ims_queue_len(struct ims_queue *q);

/* ---- hashing ------------------------------------------------------------ */

/* SHA-256 (FIPS 180-4) of `n` bytes into out[32]: content hashes for
 * duplicate detection. ims_hex writes 2n lowercase hex digits + NUL. */
void ims_sha256(const void *data, size_t n, uint8_t out[32]);
/* The same digest without CPU extensions (what ims_sha256 does where the
 * CPU has no SHA instructions); for tests and benches. */
void ims_sha256_portable(const void *data, size_t n, uint8_t out[32]);
void ims_hex(const uint8_t *bytes, size_t n, char *out);
/* 64-bit FNV-1a of `n` bytes: a fast, non-cryptographic hash for in-memory
 * tables (never for anything an attacker could aim collisions at unless the
 * table bounds its chains), ETags, and the weights fingerprint in a model's
 * name, which catalogues store: its values must never change. */
#define IMS_FNV1A64_BASIS 14695981039346656037ull /* the FNV offset basis */
uint64_t ims_fnv1a64(const void *data, size_t n);
/* The same hash carried on over more bytes: `h` is IMS_FNV1A64_BASIS or what
 * an earlier call returned, and ims_fnv1a64_update(ims_fnv1a64(a, na), b, nb)
 * equals ims_fnv1a64 of a and b concatenated. */
uint64_t ims_fnv1a64_update(uint64_t h, const void *data, size_t n);

/* ---- image format words ------------------------------------------------ */

/* The word of the API and the catalogue for an image format ("jpeg", "png",
 * "webp", "gif", "bmp", "heic", "avif", "tiff") given any spelling imgsearch
 * accepts (case-insensitive; "jpg", "heif" and "tif" too), or NULL for a
 * format it does not read. The one table of these words: the image module
 * maps them to its enum, and the server, which includes only base, reads
 * filters with it. */
const char *ims_format_word(const char *word);
/* The words, for messages. */
#define IMS_FORMAT_WORDS "jpeg, png, webp, gif, bmp, heic, avif, tiff"

/* ---- 16-bit floats ----------------------------------------------------- */

/* IEEE binary16 -> float, exact for every input (subnormals, inf, NaN):
 * fp16 model tensors and the FlatF16 index's scalar path. */
static inline float ims_f16_to_f32(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = ((uint32_t)h >> 10) & 0x1fu, m = (uint32_t)h & 0x3ffu;
    union { uint32_t u; float f; } v;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
        float f = (float)m * 0x1p-24f;
        return sign ? -f : f;
    }
    v.u = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e + 112) << 23) | (m << 13);
    return v.f;
}

/* bfloat16 -> float (exact: bf16 is float's upper half). */
static inline float ims_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

/* float -> bfloat16, rounded to nearest even as oneDNN's reorder does; NaN
 * stays NaN (quiet). */
static inline uint16_t ims_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40u);
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}

/* ---- assertions for our own invariants ------------------------------- */

#ifdef __cplusplus
#define IMS_NORETURN [[noreturn]]
#else
#define IMS_NORETURN _Noreturn
#endif
IMS_NORETURN void ims__assert_fail(const char *expr, const char *file, int line);
#define IMS_ASSERT(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ims__assert_fail(#cond, __FILE__, __LINE__);                                           \
    } while (0)

/* zstd-style early return for outside input: logs where it failed (debug
 * level) and returns the status with a message in `err`. */
#define IMS_RETURN_ERROR_IF(cond, err, st, ...)                                                    \
    do {                                                                                           \
        if (cond) {                                                                                \
            ims_log(IMS_LOG_DEBUG, "%s:%d: %s", __FILE__, __LINE__, #cond);                        \
            return ims_error_set((err), (st), __VA_ARGS__);                                        \
        }                                                                                          \
    } while (0)

#define IMS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define IMS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define IMS_MAX(a, b) ((a) > (b) ? (a) : (b))

#ifdef __cplusplus
}
#endif
#endif
