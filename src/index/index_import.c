/* SPDX-License-Identifier: MIT */
/*
 * index_import.c: reading vectors out of a foreign FAISS index file (the
 * Python prototype's saved state) for `imgsearch import --faiss`. The file
 * is parsed by FAISS itself (faiss_bridge.cpp), then validated whole there
 * (every count, list, graph offset and neighbour) before any vector is read
 * out of it; this wrapper adds the checks a C caller relies on.
 */
#include <sys/stat.h>

#include "index_int.h"

enum ims_status vindex_read_faiss_vectors(const char *path, float **x, int64_t **ids,
                                          size_t *n, int *d, struct ims_error *err)
{
    struct stat sb;
    if (!path || stat(path, &sb) != 0)
        return ims_error_set(err, IMS_ERR_NOT_FOUND, "no such file");
    if (!S_ISREG(sb.st_mode))
        return ims_error_set(err, IMS_ERR_INVALID, "not a regular file");
    if (sb.st_size < 16)
        return ims_error_set(err, IMS_ERR_CORRUPT, "too short to be a FAISS index");
    enum ims_status st = index__faiss_read_file_vectors(path, x, ids, n, d, err);
    if (st == IMS_OK && (*d <= 0 || *d > VINDEX_MAX_DIM)) {
        ims_free(*x);
        ims_free(*ids);
        *x = NULL;
        *ids = NULL;
        return ims_error_set(err, IMS_ERR_CORRUPT, "dimension %d is out of range", *d);
    }
    return st;
}
