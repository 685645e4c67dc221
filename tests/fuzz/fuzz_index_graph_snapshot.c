/* SPDX-License-Identifier: MIT */
/*
 * fuzz_index_graph_snapshot.c: vindex_load of snapshots of our own graph
 * ("Graph<M>", index_graph.c; issue 11), then searches.
 *
 * The spec comes from the input's own header and the CRC trailer is always
 * recomputed, so every mutation reaches index__graph_read (sizes, counts,
 * neighbours, levels, flags, labels, bf16 values, entry point) and the
 * check of the live labels against the stored ids: damage must be a load
 * error, never a crash in the load or in the searches after it. Seed: a
 * small Graph4 snapshot with upper levels and deleted nodes
 * (corpus/index_graph_snapshot).
 */

#include "imgsearch/index.h"
#include "index_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fuzz_scratch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 56 || size > (1u << 20))
        return 0;
    uint32_t d, l;
    memcpy(&d, data + 12, 4);
    memcpy(&l, data + 40, 4);
    if (d < 1 || d > 256 || l < 5 || l > 16 || 48 + (size_t)l > size - 4)
        return 0;
    char spec[17];
    memcpy(spec, data + 48, l);
    spec[l] = '\0';
    if (strncmp(spec, "Graph", 5) != 0)
        return 0;
    uint8_t *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(size - 4));
    memcpy(buf + size - 4, &crc, 4);
    const char *path = fuzz_scratch_write("graph", "snap", buf, size);
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
            /* an add and a remove after the load go through the graph too */
            int64_t id = 1 << 30;
            if (vindex_add(vx, &id, q, 1, &err) == IMS_OK)
                vindex_search(vx, q, 2, s, ids, &nf, &err);
            size_t removed;
            vindex_remove(vx, &id, 1, &removed, &err);
        }
        free(q);
        vindex_free(vx);
    }
    return 0;
}
