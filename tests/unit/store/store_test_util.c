/* SPDX-License-Identifier: MIT */
/* store_test_util.c: see store_test_util.h. */
#include "store_test_util.h"

#include <ftw.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *tu_mkdtemp(void)
{
    char tmpl[] = "/tmp/ims-store-test-XXXXXX";
    char *p = mkdtemp(tmpl);
    if (!p)
        return NULL;
    return strdup(p);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *path)
{
    if (path && strncmp(path, "/tmp/ims-store-test-", 20) == 0)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void tu_vec(float *v, uint32_t dim, uint64_t seed)
{
    uint64_t x = seed * 2654435761u + 1;
    double norm = 0;
    for (uint32_t i = 0; i < dim; i++) {
        v[i] = (float)((double)(splitmix(&x) >> 11) / 9007199254740992.0 - 0.5);
        norm += (double)v[i] * v[i];
    }
    norm = sqrt(norm);
    for (uint32_t i = 0; i < dim; i++)
        v[i] = (float)(v[i] / norm);
}

void tu_hash(uint8_t out[32], uint64_t seed)
{
    uint64_t x = seed ^ 0x5555aaaa12345678ull;
    for (int i = 0; i < 4; i++) {
        uint64_t r = splitmix(&x);
        memcpy(out + 8 * i, &r, 8);
    }
}

unsigned char *tu_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(sz > 0 ? (size_t)sz : 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return p;
}

/* ---- backend choice --------------------------------------------------------- */

static int g_pg;
static char g_admin[1024];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned g_seq;

const char *tu_pg_admin_url(void)
{
    if (g_admin[0])
        return g_admin;
    const char *u = getenv("IMS_TEST_PG_URL");
    if (u && *u) {
        snprintf(g_admin, sizeof(g_admin), "%s", u);
        return g_admin;
    }
    const char *d = getenv("IMS_TEST_PG_DIR");
    if (!d || !*d)
        return NULL;
    char path[1024];
    snprintf(path, sizeof(path), "%s/url", d);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    if (!fgets(g_admin, sizeof(g_admin), f))
        g_admin[0] = '\0';
    fclose(f);
    g_admin[strcspn(g_admin, "\r\n")] = '\0';
    return g_admin[0] ? g_admin : NULL;
}

int tu_backend_from_args(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "pg") == 0) {
        g_pg = 1;
        if (!tu_pg_admin_url()) {
            fprintf(stderr, "%s pg: no PostgreSQL server: set IMS_TEST_PG_URL or "
                            "IMS_TEST_PG_DIR (tests/pg/pg_server.sh start DIR)\n",
                    argv[0]);
            return -1;
        }
    }
    return 0;
}

int tu_is_pg(void) { return g_pg; }

int tu_pg_exec(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "tu_pg_exec: connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "tu_pg_exec: %s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

/* The admin URL with its database name replaced by `db`. */
static void url_with_db(const char *admin, const char *db, char *out, size_t cap)
{
    const char *p = strstr(admin, "://");
    p = p ? p + 3 : admin;
    const char *slash = strchr(p, '/');
    const char *query = strchr(p, '?');
    if (slash && query && slash > query)
        slash = NULL;
    size_t head = slash ? (size_t)(slash - admin) : (query ? (size_t)(query - admin)
                                                           : strlen(admin));
    snprintf(out, cap, "%.*s/%s%s", (int)head, admin, db, query ? query : "");
}

int tu_catalogue_new(char *url, size_t cap)
{
    url[0] = '\0';
    if (!g_pg)
        return 0;
    pthread_mutex_lock(&g_lock);
    unsigned k = ++g_seq;
    pthread_mutex_unlock(&g_lock);
    char db[96], sql[160];
    snprintf(db, sizeof(db), "ims_t_%ld_%u", (long)getpid(), k);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", db);
    if (tu_pg_exec(tu_pg_admin_url(), sql) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
    if (tu_pg_exec(tu_pg_admin_url(), sql) != 0)
        return -1;
    url_with_db(tu_pg_admin_url(), db, url, cap);
    return 0;
}

void tu_catalogue_drop(const char *url)
{
    if (!url || !url[0] || !g_pg)
        return;
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *slash = strchr(p, '/');
    if (!slash)
        return;
    char db[96];
    snprintf(db, sizeof(db), "%.*s", (int)strcspn(slash + 1, "?"), slash + 1);
    char sql[160];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
    tu_pg_exec(tu_pg_admin_url(), sql);
}
