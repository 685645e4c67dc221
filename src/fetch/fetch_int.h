/* SPDX-License-Identifier: MIT */
/*
 * fetch_int.h: what the files of the fetch module share (private).
 *
 * fetch_policy.c  pure address and URL checks
 * fetch_curl.c    libcurl setup common to both engines: global init, the
 *                 socket-open hook that enforces the address policy, option
 *                 setting, and the mapping of a finished transfer to a status
 *                 and a precise reason
 * fetch_multi.c   struct fetcher (many small bodies in memory)
 * fetch_file.c    fetch_to_file (one large resumable file on disk)
 */
#ifndef IMS_FETCH_INT_H
#define IMS_FETCH_INT_H

#include <curl/curl.h>

#include "imgsearch/fetch.h"

#define FETCH__WHY_BYTES 192

/* Per-transfer state the socket hook writes. Owned by the transfer; the hook
 * runs on the thread driving the transfer, so no locking. */
struct fetch__sock {
    int allow_private;
    char why[FETCH__WHY_BYTES];  /* first refusal of this attempt, "" if none */
    long *n_connections;         /* may be NULL; incremented per socket opened */
};

/* Initialises libcurl once per process (thread-safe). */
enum ims_status fetch__global_init(struct ims_error *err);

/* Sets the options both engines share on `e`: protocols http/https (also
 * for redirects), redirects, timeouts, low-speed limit, no proxy, no signals,
 * user agent, the error buffer and the policy socket hook on `sock`. */
CURLcode fetch__easy_setup(CURL *e, const struct fetch_options *o, struct fetch__sock *sock,
                           char *errbuf);

/* Records the scheme of a Location header line (for "redirect to file://
 * refused"); resets it on a status line. `scheme` has room for 16 bytes. */
void fetch__header_note(const char *line, size_t n, char *scheme);

/* Describes a failed transfer: the status, a reason for the user, and
 * whether retrying may help. `http_code` is the last response status. */
enum ims_status fetch__describe(CURLcode rc, long http_code, long os_errno, const char *errbuf,
                                const struct fetch__sock *sock, const char *redirect_scheme,
                                const struct fetch_options *o, char *reason, size_t n,
                                int *retryable);

/* "30 s", "0.3 s". */
void fetch__format_ms(long ms, char *buf, size_t n);

/* Backoff before retry number `attempt` (1-based) in ms, with +-50% jitter
 * drawn from *rng (any seed). */
long fetch__backoff_ms(const struct fetch_options *o, int attempt, uint64_t *rng);

#endif
