/* SPDX-License-Identifier: MIT */
/*
 * fuzz_scratch.h: the scratch file of the harnesses whose parser reads a
 * path (snapshot loader, FAISS import): each input is written to one file in
 * a temporary folder made on the first input and removed at exit. Header
 * only; each harness includes it once.
 */
#ifndef IMS_FUZZ_SCRATCH_H
#define IMS_FUZZ_SCRATCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_scratch_dir[64], fuzz_scratch_path[96];

static void fuzz_scratch_cleanup(void)
{
    if (fuzz_scratch_path[0])
        unlink(fuzz_scratch_path);
    if (fuzz_scratch_dir[0])
        rmdir(fuzz_scratch_dir);
}

/* Writes data[0..size) to `name` in /tmp/ims-fuzz-TAG-XXXXXX (made on the
 * first call) and returns its path. Aborts when the file cannot be written:
 * that is the harness's failure, not the input's. */
static const char *fuzz_scratch_write(const char *tag, const char *name, const uint8_t *data,
                                      size_t size)
{
    if (!fuzz_scratch_dir[0]) {
        snprintf(fuzz_scratch_dir, sizeof fuzz_scratch_dir, "/tmp/ims-fuzz-%s-XXXXXX", tag);
        if (!mkdtemp(fuzz_scratch_dir))
            abort();
        snprintf(fuzz_scratch_path, sizeof fuzz_scratch_path, "%s/%s", fuzz_scratch_dir, name);
        atexit(fuzz_scratch_cleanup);
    }
    FILE *f = fopen(fuzz_scratch_path, "wb");
    if (!f)
        abort();
    if (size && fwrite(data, 1, size, f) != size)
        abort();
    fclose(f);
    return fuzz_scratch_path;
}

#endif
