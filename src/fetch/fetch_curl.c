/* SPDX-License-Identifier: MIT */
/*
 * fetch_curl.c: the libcurl setup both engines share, and the one place that
 * turns a libcurl outcome into a status and a sentence for the user.
 *
 * The address policy lives in the CURLOPT_OPENSOCKETFUNCTION hook: libcurl
 * calls it with the resolved sockaddr of every connection it is about to
 * open (first request, each redirect, each Happy Eyeballs candidate, each
 * retry), so the decision is made on the address actually used, not on a
 * host name that could resolve differently a moment later. A refused address
 * gets no socket (CURL_SOCKET_BAD); libcurl then reports CURLE_COULDNT_CONNECT
 * and the reason recorded here replaces its generic message. Reused
 * keep-alive connections do not pass through the hook again, which is fine:
 * they were checked when opened.
 *
 * Proxies are disabled (CURLOPT_PROXY ""), whatever the environment says: a
 * proxy would connect on our behalf to addresses the hook never sees.
 */

#include "fetch_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- global init -------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

enum ims_status fetch__global_init(struct ims_error *err)
{
    pthread_once(&global_once, global_init_once);
    if (global_rc != CURLE_OK)
        return ims_error_set(err, IMS_ERR_INTERNAL, "libcurl initialisation failed: %s",
                             curl_easy_strerror(global_rc));
    return IMS_OK;
}

/* ---- options -------------------------------------------------------------------- */

void fetch_options_default(struct fetch_options *o)
{
    memset(o, 0, sizeof(*o));
    o->max_in_flight = 32;
    o->max_queued = 64;
    o->max_bytes = 20u * 1024 * 1024;
    o->connect_timeout_ms = 10000;
    o->total_timeout_ms = 30000;
    o->low_speed_bytes = 1000;
    o->low_speed_time_s = 15;
    o->max_redirects = 5;
    o->max_retries = 2;
    o->retry_base_ms = 500;
    o->allow_private = 0;
    o->user_agent = NULL;
}

/* ---- the policy hook -------------------------------------------------------------- */

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct fetch__sock *s = clientp;
    char why[FETCH__WHY_BYTES];
    if (purpose != CURLSOCKTYPE_IPCXN) {
        snprintf(s->why, sizeof(s->why), "unexpected socket purpose %d", (int)purpose);
        return CURL_SOCKET_BAD;
    }
    if (!fetch_addr_allowed(&a->addr, s->allow_private, why, sizeof(why))) {
        if (!s->why[0])
            snprintf(s->why, sizeof(s->why), "%s", why);
        return CURL_SOCKET_BAD;
    }
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd != CURL_SOCKET_BAD && s->n_connections)
        (*s->n_connections)++;
    return fd;
}

CURLcode fetch__easy_setup(CURL *e, const struct fetch_options *o, struct fetch__sock *sock,
                           char *errbuf)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if ((rc = curl_easy_setopt(e, opt, val)) != CURLE_OK)                                      \
            return rc;                                                                             \
    } while (0)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, o->max_redirects > 0 ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, (long)o->max_redirects);
    SET(CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, o->total_timeout_ms);
    SET(CURLOPT_LOW_SPEED_LIMIT, o->low_speed_bytes);
    SET(CURLOPT_LOW_SPEED_TIME, o->low_speed_time_s);
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_USERAGENT, o->user_agent ? o->user_agent : "imgsearch/0.1");
    SET(CURLOPT_ERRORBUFFER, errbuf);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SET(CURLOPT_OPENSOCKETDATA, sock);
#undef SET
    return rc;
}

void fetch__header_note(const char *line, size_t n, char *scheme)
{
    if (n >= 5 && !strncmp(line, "HTTP/", 5)) {
        scheme[0] = '\0';
        return;
    }
    if (n < 9 || strncasecmp(line, "location:", 9) != 0)
        return;
    size_t i = 9;
    while (i < n && (line[i] == ' ' || line[i] == '\t'))
        i++;
    size_t k = 0;
    while (i + k < n && k < 15) {
        char c = line[i + k];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (k > 0 && c >= '0' && c <= '9') ||
              (k > 0 && (c == '+' || c == '-' || c == '.'))))
            break;
        k++;
    }
    if (k > 0 && i + k < n && line[i + k] == ':') {
        for (size_t j = 0; j < k; j++) {
            char c = line[i + j];
            scheme[j] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        scheme[k] = '\0';
    } else {
        scheme[0] = '\0'; /* relative: same scheme as before */
    }
}

void fetch__format_ms(long ms, char *buf, size_t n)
{
    if (ms % 1000 == 0)
        snprintf(buf, n, "%ld s", ms / 1000);
    else
        snprintf(buf, n, "%.1f s", (double)ms / 1000.0);
}

long fetch__backoff_ms(const struct fetch_options *o, int attempt, uint64_t *rng)
{
    long base = o->retry_base_ms > 0 ? o->retry_base_ms : 0;
    for (int i = 1; i < attempt && base < 60000; i++)
        base *= 2;
    if (base > 60000)
        base = 60000;
    /* splitmix64 step: jitter only, no need for quality beyond that */
    uint64_t z = (*rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    double jitter = 0.5 + (double)(z >> 11) / (double)(1ull << 53); /* [0.5, 1.5) */
    return (long)((double)base * jitter);
}

enum ims_status fetch__describe(CURLcode rc, long http_code, long os_errno, const char *errbuf,
                                const struct fetch__sock *sock, const char *redirect_scheme,
                                const struct fetch_options *o, char *reason, size_t n,
                                int *retryable)
{
    char t[32];
    *retryable = 0;
    if (sock->why[0]) {
        snprintf(reason, n, "refused: %s", sock->why);
        return IMS_ERR_REFUSED;
    }
    switch (rc) {
    case CURLE_OK:
    case CURLE_HTTP_RETURNED_ERROR:
        snprintf(reason, n, "HTTP %ld", http_code);
        if (http_code >= 500 || http_code == 429 || http_code == 408)
            *retryable = 1;
        if (http_code == 404 || http_code == 410)
            return IMS_ERR_NOT_FOUND;
        if (http_code == 429)
            return IMS_ERR_RATE_LIMITED;
        return IMS_ERR_NETWORK;
    case CURLE_FILESIZE_EXCEEDED:
        snprintf(reason, n, "too large: more than %zu bytes", o->max_bytes);
        return IMS_ERR_TOO_LARGE;
    case CURLE_OPERATION_TIMEDOUT:
        *retryable = 1;
        if (!strncmp(errbuf, "Operation too slow", 18)) {
            snprintf(reason, n, "stalled: below %ld B/s for %ld s", o->low_speed_bytes,
                     o->low_speed_time_s);
        } else if (strstr(errbuf, "onnect")) {
            fetch__format_ms(o->connect_timeout_ms, t, sizeof(t));
            snprintf(reason, n, "connect timed out after %s", t);
        } else {
            fetch__format_ms(o->total_timeout_ms, t, sizeof(t));
            snprintf(reason, n, "timed out after %s", t);
        }
        return IMS_ERR_TIMEOUT;
    case CURLE_TOO_MANY_REDIRECTS:
        snprintf(reason, n, "too many redirects (%d)", o->max_redirects);
        return IMS_ERR_NETWORK;
    case CURLE_UNSUPPORTED_PROTOCOL:
        if (redirect_scheme && redirect_scheme[0])
            snprintf(reason, n, "redirect to %s:// refused", redirect_scheme);
        else
            snprintf(reason, n, "unsupported protocol (http and https only)");
        return IMS_ERR_REFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        snprintf(reason, n, "cannot resolve host");
        return IMS_ERR_NETWORK;
    case CURLE_COULDNT_CONNECT:
        *retryable = 1;
        if (os_errno == ECONNREFUSED)
            snprintf(reason, n, "connection refused");
        else
            snprintf(reason, n, "cannot connect: %.200s", errbuf[0] ? errbuf : "unknown");
        return IMS_ERR_NETWORK;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
        *retryable = 1;
        snprintf(reason, n, "connection closed early: %.200s",
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return IMS_ERR_NETWORK;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        snprintf(reason, n, "TLS error: %.200s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return IMS_ERR_NETWORK;
    case CURLE_OUT_OF_MEMORY:
        snprintf(reason, n, "out of memory");
        return IMS_ERR_NOMEM;
    default:
        snprintf(reason, n, "%s: %.200s", curl_easy_strerror(rc), errbuf);
        return IMS_ERR_NETWORK;
    }
}
