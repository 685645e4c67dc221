/* SPDX-License-Identifier: MIT */
/*
 * conns.c: the server's table of open connections, against slowloris.
 *
 * DESIGN
 *
 * libmicrohttpd's own timeout is an idle timeout: it restarts on every byte,
 * so a client sending one header byte every 20 s holds a connection (and,
 * with a thread per connection, a thread) for ever, and one address could
 * hold them all. This table tracks every connection (MHD's connection
 * notifications add and remove entries) with the phase it is in:
 *
 *   HEADERS  from accept, or from the end of the previous request on a
 *            kept-alive connection, until MHD has the whole request head;
 *            it must end within header_timeout (an idle kept-alive
 *            connection is closed after it too, like nginx's keepalive);
 *   BODY     from the head to the end of the body: in every window of
 *            header_timeout seconds the body must bring min_rate bytes/s
 *            on average (a window, not the average since the start: a
 *            fast start would otherwise buy hours of one byte a minute);
 *   BUSY     the handler runs (backend call, ?wait=1): no deadline here,
 *            the admission gate and the waiter cap bound it.
 *
 * One watchdog thread (the only thread the server starts itself) sweeps the
 * table every 100 ms and shuts down (shutdown(2), both ways) the socket of a
 * connection past its deadline; MHD's thread then sees the end of the stream
 * and closes it. The socket number stays valid while we do so: entries are
 * removed under `mu` in MHD's CLOSED notification, which MHD sends before it
 * closes the socket.
 *
 * The per-client cap is checked in MHD's accept policy callback, against the
 * entries of the same client key (IPv4 address or IPv6 /64; see guard.c),
 * so one address cannot hold all max_connections sockets. Connections of
 * ?wait=1 waiters are not counted there (max_waiters caps them, globally):
 * a client waiting for its jobs may still search. The table has at
 * most max_connections entries: a linear count is cheaper than a hash here.
 *
 * Locks: `mu` guards the list and every entry's fields.
 */
#include "server_int.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SWEEP_MS 100

static void *watchdog(void *arg)
{
    struct server_conns *cs = arg;
    pthread_mutex_lock(&cs->mu);
    while (!cs->stop) {
        struct timespec ts;
        ims_deadline_after_ms(CLOCK_MONOTONIC, SWEEP_MS, &ts);
        pthread_cond_timedwait(&cs->cv, &cs->mu, &ts);
        if (cs->stop)
            break;
        pthread_mutex_unlock(&cs->mu);
        server__conns_sweep(cs, ims_now());
        pthread_mutex_lock(&cs->mu);
    }
    pthread_mutex_unlock(&cs->mu);
    return NULL;
}

enum ims_status server__conns_init(struct server_conns *cs, unsigned max_per_client,
                                   unsigned header_timeout_ms, size_t min_rate, bool start_thread)
{
    memset(cs, 0, sizeof(*cs));
    cs->max_per_client = max_per_client;
    cs->header_timeout_s = header_timeout_ms / 1e3;
    cs->min_rate = (double)min_rate;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&cs->mu, NULL);
    pthread_cond_init(&cs->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (start_thread && header_timeout_ms > 0) {
        if (pthread_create(&cs->thread, NULL, watchdog, cs) != 0) {
            pthread_mutex_destroy(&cs->mu);
            pthread_cond_destroy(&cs->cv);
            return IMS_ERR_NOMEM;
        }
        cs->thread_started = true;
    }
    return IMS_OK;
}

void server__conns_fini(struct server_conns *cs)
{
    if (cs->thread_started) {
        pthread_mutex_lock(&cs->mu);
        cs->stop = true;
        pthread_cond_broadcast(&cs->cv);
        pthread_mutex_unlock(&cs->mu);
        pthread_join(cs->thread, NULL);
        cs->thread_started = false;
    }
    /* entries left (none once MHD has stopped) belong to MHD's connections */
    pthread_mutex_destroy(&cs->mu);
    pthread_cond_destroy(&cs->cv);
}

bool server__conns_accept_ok(struct server_conns *cs, const char *key)
{
    if (cs->max_per_client == 0)
        return true;
    unsigned n = 0;
    pthread_mutex_lock(&cs->mu);
    for (struct server_conn *c = cs->head; c; c = c->next)
        n += !c->waiting && strcmp(c->key, key) == 0;
    pthread_mutex_unlock(&cs->mu);
    if (n >= cs->max_per_client) {
        atomic_fetch_add(&cs->refused_per_client, 1);
        return false;
    }
    return true;
}

struct server_conn *server__conns_add(struct server_conns *cs, const char *key, int fd,
                                      bool exempt, double now)
{
    struct server_conn *c = ims_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    snprintf(c->key, sizeof(c->key), "%s", exempt ? "" : key);
    c->fd = fd;
    c->phase = SERVER_CONN_HEADERS;
    c->since = now;
    c->win_start = now;
    pthread_mutex_lock(&cs->mu);
    c->next = cs->head;
    if (cs->head)
        cs->head->prev = c;
    cs->head = c;
    cs->n++;
    pthread_mutex_unlock(&cs->mu);
    return c;
}

void server__conns_remove(struct server_conns *cs, struct server_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&cs->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        cs->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    cs->n--;
    pthread_mutex_unlock(&cs->mu);
    ims_free(c);
}

void server__conns_phase(struct server_conns *cs, struct server_conn *c,
                         enum server_conn_phase phase, double now)
{
    if (!c)
        return;
    pthread_mutex_lock(&cs->mu);
    if (phase == SERVER_CONN_HEADERS)
        c->served = true;
    c->phase = phase;
    c->since = now;
    c->body_bytes = 0;
    c->win_start = now;
    c->win_bytes = 0;
    pthread_mutex_unlock(&cs->mu);
}

void server__conns_body(struct server_conns *cs, struct server_conn *c, size_t n)
{
    if (!c)
        return;
    pthread_mutex_lock(&cs->mu);
    c->body_bytes += n;
    c->win_bytes += n;
    pthread_mutex_unlock(&cs->mu);
}

void server__conns_waiting(struct server_conns *cs, struct server_conn *c, bool waiting)
{
    if (!c)
        return;
    pthread_mutex_lock(&cs->mu);
    c->waiting = waiting;
    pthread_mutex_unlock(&cs->mu);
}

unsigned server__conns_sweep(struct server_conns *cs, double now)
{
    unsigned killed = 0;
    double grace = cs->header_timeout_s;
    if (grace <= 0)
        return 0;
    pthread_mutex_lock(&cs->mu);
    for (struct server_conn *c = cs->head; c; c = c->next) {
        if (c->killed)
            continue;
        double t = now - c->since;
        bool late = false;
        if (c->phase == SERVER_CONN_HEADERS && t > grace) {
            late = true;
            /* an idle kept-alive connection is closed, not refused */
            if (!c->served)
                atomic_fetch_add(&cs->killed_headers, 1);
        } else if (c->phase == SERVER_CONN_BODY && cs->min_rate > 0 &&
                   now - c->win_start >= grace) {
            if ((double)c->win_bytes < cs->min_rate * (now - c->win_start)) {
                late = true;
                atomic_fetch_add(&cs->killed_body, 1);
            } else {
                c->win_start = now; /* next window */
                c->win_bytes = 0;
            }
        }
        if (late) {
            c->killed = true;
            if (c->fd >= 0)
                shutdown(c->fd, SHUT_RDWR);
            killed++;
        }
    }
    pthread_mutex_unlock(&cs->mu);
    return killed;
}
