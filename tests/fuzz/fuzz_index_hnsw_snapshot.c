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

#include "imgsearch/index.h"
#include "index_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t d;
    char spec[33];
    if (!fuzz_snapshot_header(data, size, 4, 32, &d, spec))
        return 0;
    /* graph and list types whose whole payload the loader walks before
     * FAISS reads it (other types are trusted to the CRC, and FAISS's reader
     * leaks and over-allocates on hostile bytes: not what this harness is
     * about). Keep the sizes small: HNSW M and IVF lists. */
    if (!index__faiss_spec_walkable(spec) || strlen(spec) > 12)
        return 0;
    const char *path = fuzz_snapshot_write("hnsw", data, size);
    if (!path)
        return 0;

    struct vindex *vx = NULL;
    struct ims_error err = {{0}};
    int64_t last = 0;
    if (vindex_load(path, (int)d, spec, &vx, &last, &err) == IMS_OK) {
        free(fuzz_snapshot_search(vx, d));
        vindex_free(vx);
    }
    return 0;
}
