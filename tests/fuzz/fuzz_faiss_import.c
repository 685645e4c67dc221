/* SPDX-License-Identifier: MIT */
/*
 * fuzz_faiss_import.c: vindex_read_faiss_vectors (`imgsearch import
 * --faiss`) on arbitrary bytes.
 *
 * The input is written to a file in a private mkdtemp folder (removed at
 * exit) and read as a foreign FAISS index: the byte walk (index_import.c)
 * must refuse anything whose lengths or counts disagree before FAISS's own
 * reader sees it, and the object checks (faiss_bridge.cpp) must refuse a
 * graph or list that points outside its data; a successful read's vectors
 * and ids are touched so that a short buffer would show under ASan. Seeds:
 * Flat, IDMap over Flat, and the FAISS payloads of imgsearch's own HNSW and
 * IVF snapshots (corpus/faiss_import).
 */

#include "fuzz_scratch.h"
#include "imgsearch/index.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    const char *path = fuzz_scratch_write("faiss", "index.faiss", data, size);

    float *x = NULL;
    int64_t *ids = NULL;
    size_t n = 0;
    int d = 0;
    struct ims_error err = {{0}};
    if (vindex_read_faiss_vectors(path, &x, &ids, &n, &d, &err) == IMS_OK) {
        if (d < 1 || d > VINDEX_MAX_DIM)
            abort();
        volatile float sum = 0;
        volatile uint64_t idsum = 0;
        for (size_t i = 0; i < n; i++) {
            sum += x[i * (size_t)d] + x[i * (size_t)d + (size_t)d - 1];
            idsum += (uint64_t)ids[i];
        }
        (void)sum;
        (void)idsum;
        ims_free(x);
        ims_free(ids);
    }
    return 0;
}
