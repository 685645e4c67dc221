/* SPDX-License-Identifier: MIT */
/*
 * store_sync_lock.c: one folder sync at a time per catalogue (store.h
 * "One sync at a time"). Both backends live here, dispatched on store->pg, so
 * this small feature stays out of the backend vtable and its files.
 *
 * SQLite: flock(2) on <data folder>/sync.lock, an open file description of
 * its own per lock, so two holders in one process exclude each other too.
 * The holder writes its pid into the file: the refusal names it.
 * PostgreSQL: the session advisory lock STORE_PG_SYNC_LOCK taken with
 * pg_try_advisory_lock on a pooled connection that stays out of the pool
 * while it is held. Either lock goes with the process (or connection) that
 * held it, so a killed sync never leaves it behind.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "store_int.h"
#include "store_pg_int.h"

#define STORE_PG_SYNC_LOCK 0x696d7379 /* "imsy": not the write or migration lock */
#define SYNC_LOCK_FILE "sync.lock"

struct store_sync_lock {
    struct store *store;
    int fd;    /* SQLite: the flock'd file, -1 for PostgreSQL */
    PGconn *c; /* PostgreSQL: the session holding the advisory lock */
};

static enum ims_status busy(struct ims_error *err, const char *holder)
{
    return ims_error_set(err, IMS_ERR_BUSY,
                         "another sync of this catalogue is running%s%s%s (add --sync or "
                         "serve --watch); try again when it has finished",
                         holder[0] ? " (" : "", holder, holder[0] ? ")" : "");
}

static enum ims_status sq_lock(struct store *store, struct store_sync_lock *l,
                               struct ims_error *err)
{
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/%s", store->data_dir, SYNC_LOCK_FILE);
    IMS_RETURN_ERROR_IF(n < 0 || (size_t)n >= sizeof(path), err, IMS_ERR_INVALID,
                        "sync lock: data folder path too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return ims_error_set(err, IMS_ERR_IO, "sync lock: cannot open %s: %s", path,
                             strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[64] = "";
        if (e == EWOULDBLOCK) {
            char buf[32];
            ssize_t r = pread(fd, buf, sizeof(buf) - 1, 0);
            long pid = 0;
            if (r > 0) {
                buf[r] = '\0';
                pid = strtol(buf, NULL, 10);
            }
            if (pid > 0)
                snprintf(holder, sizeof(holder), "process %ld", pid);
        }
        close(fd);
        if (e == EWOULDBLOCK)
            return busy(err, holder);
        return ims_error_set(err, IMS_ERR_IO, "sync lock: %s: %s", path, strerror(e));
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    /* who holds it, for the refusal of the next one (best effort) */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        ims_log(IMS_LOG_DEBUG, "sync lock: cannot write the pid into %s", path);
    l->fd = fd;
    return IMS_OK;
}

static enum ims_status pg_lock(struct store *store, struct store_sync_lock *l,
                               struct ims_error *err)
{
    PGconn *c = NULL;
    enum ims_status s = store__pg_get(store, &c, err);
    if (s != IMS_OK)
        return s;
    struct pgp p = {0};
    store__pgp_i64(&p, STORE_PG_SYNC_LOCK);
    int64_t got = 0;
    s = store__pg_q1(c, "SELECT CASE WHEN pg_try_advisory_lock($1) THEN 1::int8 ELSE 0::int8 END",
                     &p, NULL, &got, err, "sync lock");
    if (s != IMS_OK || got != 1) {
        store__pg_put(store, c);
        return s != IMS_OK ? s : busy(err, "");
    }
    l->c = c;
    return IMS_OK;
}

enum ims_status store_sync_lock_try(struct store *store, struct store_sync_lock **out,
                                    struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || !out, err, IMS_ERR_INVALID,
                        "store_sync_lock_try: invalid arguments");
    struct store_sync_lock *l = ims_calloc(1, sizeof(*l));
    if (!l)
        return ims_error_set(err, IMS_ERR_NOMEM, "sync lock: out of memory");
    l->store = store;
    l->fd = -1;
    enum ims_status s = store->pg ? pg_lock(store, l, err) : sq_lock(store, l, err);
    if (s != IMS_OK) {
        ims_free(l);
        return s;
    }
    *out = l;
    return IMS_OK;
}

void store_sync_unlock(struct store_sync_lock *l)
{
    if (!l)
        return;
    if (l->fd >= 0) {
        /* the pid goes before the lock does */
        if (ftruncate(l->fd, 0) != 0)
            ims_log(IMS_LOG_DEBUG, "sync lock: cannot clear the lock file");
        close(l->fd); /* releases the flock */
    }
    if (l->c) {
        struct pgp p = {0};
        store__pgp_i64(&p, STORE_PG_SYNC_LOCK);
        struct ims_error e = {0};
        if (store__pg_x(l->c, "SELECT pg_advisory_unlock($1)", &p, &e, "sync unlock") != IMS_OK) {
            /* a session that cannot say it let go must not go back to the
             * pool holding the lock: a new session has none */
            ims_log(IMS_LOG_WARN, "%s (the connection is reset)", e.message);
            store__pg_forget(l->c);
            PQreset(l->c);
        }
        store__pg_put(l->store, l->c);
    }
    ims_free(l);
}
