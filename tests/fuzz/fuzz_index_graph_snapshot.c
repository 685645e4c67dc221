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

#include "fuzz_snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t d;
    char spec[17];
    if (!fuzz_snapshot_header(data, size, 5, 16, &d, spec) || strncmp(spec, "Graph", 5) != 0)
        return 0;
    const char *path = fuzz_snapshot_write("graph", data, size);
    if (!path)
        return 0;

    struct vindex *vx = NULL;
    struct ims_error err = {{0}};
    int64_t last = 0;
    if (vindex_load(path, (int)d, spec, &vx, &last, &err) == IMS_OK) {
        float *q = fuzz_snapshot_search(vx, d);
        float s[8];
        int64_t ids[8];
        int nf;
        if (q) {
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
