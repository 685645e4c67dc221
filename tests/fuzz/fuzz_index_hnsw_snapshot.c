/* SPDX-License-Identifier: MIT */
/*
 * fuzz_index_hnsw_snapshot.c: vindex_load of snapshots that carry a FAISS
 * payload (HNSW, IVF), then a search.
 *
 * Unlike fuzz_index_snapshot (our own Flat kinds), this one hands the FAISS
 * part to the loader: the spec is taken from the input's own header and the
 * CRC trailer is always recomputed, so every mutation reaches the payload
 * walk (index_import.c), FAISS's deserialiser behind it and the graph checks
 * (index_hnsw.c index__hnsw_check): damage must be a load error, never a
 * crash in the load or in the first search. Seeds: imgsearch's own HNSW4
 * and IVF2,Flat snapshots (corpus/index_hnsw_snapshot).
 */

#include "fuzz_scratch.h"
#include "imgsearch/index.h"
#include "index_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 56 || size > (1u << 20))
        return 0;
    uint32_t d, l;
    memcpy(&d, data + 12, 4);
    memcpy(&l, data + 40, 4);
    if (d < 1 || d > 256 || l < 4 || l > 32 || 48 + (size_t)l > size - 4)
        return 0;
    char spec[33];
    memcpy(spec, data + 48, l);
    spec[l] = '\0';
    /* graph and list types whose whole payload the loader walks before
     * FAISS reads it (other types are trusted to the CRC, and FAISS's reader
     * leaks and over-allocates on hostile bytes: not what this harness is
     * about). Keep the sizes small: HNSW M and IVF lists. */
    if (!index__faiss_spec_walkable(spec) || strlen(spec) > 12)
        return 0;
    uint8_t *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(size - 4));
    memcpy(buf + size - 4, &crc, 4);
    const char *path = fuzz_scratch_write("hnsw", "snap", buf, size);
    free(buf);

    struct vindex *vx = NULL;
    struct ims_error err = {{0}};
    int64_t last = 0;
    if (vindex_load(path, (int)d, spec, &vx, &last, &err) == IMS_OK) {
        float *q = calloc(d, sizeof(float));
        float s[8];
        int64_t ids[8];
        int nf;
        if (q) {
            q[0] = 1;
            vindex_search(vx, q, 8, s, ids, &nf, &err);
            q[d - 1] = -1;
            vindex_search(vx, q, 3, s, ids, &nf, &err);
        }
        free(q);
        vindex_free(vx);
    }
    return 0;
}
