/* SPDX-License-Identifier: MIT */
/* store_test_util.h: temp folders and deterministic embeddings shared by the
 * store tests. */
#ifndef STORE_TEST_UTIL_H
#define STORE_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh folder under /tmp; the returned path is static storage
 * owned by the helper, removed with tu_rmtree. */
char *tu_mkdtemp(void);
/* Removes a folder tree (like rm -rf); used on tu_mkdtemp folders only. */
void tu_rmtree(const char *path);
/* Fills v[dim] with an L2-normalised pseudo-random vector derived from seed. */
void tu_vec(float *v, uint32_t dim, uint64_t seed);
/* A 32-byte pseudo hash derived from seed. */
void tu_hash(uint8_t out[32], uint64_t seed);
/* Reads a whole file (malloc'd, caller frees); NULL if it cannot. */
unsigned char *tu_read(const char *path, size_t *n);

/* ---- backend choice: the same cases on SQLite and PostgreSQL ------------
 * A test binary started with the argument "pg" runs on PostgreSQL: the
 * server's URL comes from IMS_TEST_PG_URL, or from the file url in
 * IMS_TEST_PG_DIR (tests/pg/pg_server.sh writes it; the CTest fixture sets
 * the variable). Without it the run fails: never skipped. */

/* Reads argv; 0 on success, else prints why and returns -1. */
int tu_backend_from_args(int argc, char **argv);
/* 1 when running on PostgreSQL. */
int tu_is_pg(void);
/* A fresh empty catalogue: "" (SQLite, in the test's own folder) or the URL
 * of a new PostgreSQL database of its own. 0 on success. */
int tu_catalogue_new(char *url, size_t cap);
/* Drops a database made by tu_catalogue_new (no-op for ""). */
void tu_catalogue_drop(const char *url);
/* The PostgreSQL server's admin URL (NULL if none is configured). */
const char *tu_pg_admin_url(void);
/* Runs one SQL statement on the database at `url`; 0 on success. */
int tu_pg_exec(const char *url, const char *sql);

#endif
