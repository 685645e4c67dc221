/* SPDX-License-Identifier: MIT */
/*
 * fuzz_index_snapshot.c: vindex_load on arbitrary bytes.
 *
 * The input is written to a file in a private mkdtemp folder (removed at
 * exit) and loaded with the dim and spec its own header claims, so that the
 * mutations reach past the dim/spec checks. When the first byte is odd the
 * CRC trailer is recomputed first, so the payload parser (ids, vectors, sizes,
 * duplicates) is exercised and not only the checksum. Only our own kinds
 * ("Flat", "FlatF16") are loaded: FAISS's deserialiser is not hardened
 * against hostile bytes, which is why the loader verifies the CRC before it
 * hands FAISS anything (see docs/internals/index.md). A successful load is
 * searched once and freed.
 */

#include "fuzz_scratch.h"
#include "imgsearch/index.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    int dim = 4;
    char spec[16] = "Flat";
    if (size >= 52) {
        uint32_t d, l;
        memcpy(&d, buf + 12, 4);
        memcpy(&l, buf + 40, 4);
        if (d >= 1 && d <= 4096)
            dim = (int)d;
        if (l == 7 && size >= 55 && memcmp(buf + 48, "FlatF16", 7) == 0)
            strcpy(spec, "FlatF16");
        if ((buf[0] & 1) && size >= 4) {
            uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf, (uInt)(size - 4));
            memcpy(buf + size - 4, &crc, 4);
        }
    }
    const char *path = fuzz_scratch_write("index", "snap", buf, size);
    free(buf);

    struct vindex *vx = NULL;
    struct ims_error err = {{0}};
    int64_t last = 0;
    if (vindex_load(path, dim, spec, &vx, &last, &err) == IMS_OK) {
        float *q = calloc((size_t)dim, sizeof(float));
        float s[4];
        int64_t ids[4];
        int nf;
        if (q) {
            q[0] = 1;
            vindex_search(vx, q, 4, s, ids, &nf, &err);
        }
        free(q);
        vindex_free(vx);
    }
    return 0;
}
