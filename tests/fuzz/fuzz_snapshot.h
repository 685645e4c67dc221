/* SPDX-License-Identifier: MIT */
/*
 * fuzz_snapshot.h: the steps the snapshot harnesses of the index share
 * (fuzz_index_graph_snapshot, fuzz_index_hnsw_snapshot): read the dimension
 * and spec from the input's own header, write the input with its CRC
 * trailer recomputed (so that every mutation reaches the payload reader,
 * not the checksum) to the scratch file, and search a loaded index twice.
 * Header only, after fuzz_scratch.h; each harness includes it once.
 */
#ifndef IMS_FUZZ_SNAPSHOT_H
#define IMS_FUZZ_SNAPSHOT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_scratch.h"
#include "imgsearch/index.h"

/* The snapshot header's dimension (1..256) and spec (length lmin..lmax,
 * copied NUL-terminated into spec[lmax + 1]); 0 when the input is too small
 * or large (1 MiB) or its header is out of those ranges. */
static int fuzz_snapshot_header(const uint8_t *data, size_t size, uint32_t lmin, uint32_t lmax,
                                uint32_t *dim, char *spec)
{
    if (size < 56 || size > (1u << 20))
        return 0;
    uint32_t d, l;
    memcpy(&d, data + 12, 4);
    memcpy(&l, data + 40, 4);
    if (d < 1 || d > 256 || l < lmin || l > lmax || 48 + (size_t)l > size - 4)
        return 0;
    memcpy(spec, data + 48, l);
    spec[l] = '\0';
    *dim = d;
    return 1;
}

/* The input, its last four bytes replaced by the CRC-32 of the rest, in the
 * scratch file; its path, or NULL when out of memory. */
static const char *fuzz_snapshot_write(const char *tag, const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size);
    if (!buf)
        return NULL;
    memcpy(buf, data, size);
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(size - 4));
    memcpy(buf + size - 4, &crc, 4);
    const char *path = fuzz_scratch_write(tag, "snap", buf, size);
    free(buf);
    return path;
}

/* Two searches of a loaded index (k 8 along the first axis, k 3 along a
 * mixed direction); returns that last query (d floats, caller frees) for
 * further calls, or NULL when out of memory. */
static float *fuzz_snapshot_search(struct vindex *vx, uint32_t d)
{
    struct ims_error err = {{0}};
    float *q = calloc(d, sizeof(float));
    float s[8];
    int64_t ids[8];
    int nf;
    if (!q)
        return NULL;
    q[0] = 1;
    vindex_search(vx, q, 8, s, ids, &nf, &err);
    q[d - 1] = -1;
    vindex_search(vx, q, 3, s, ids, &nf, &err);
    return q;
}

#endif
