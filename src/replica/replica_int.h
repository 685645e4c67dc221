/* SPDX-License-Identifier: MIT */
/*
 * replica_int.h: what the replica's files and its unit tests share.
 */
#ifndef IMGSEARCH_REPLICA_INT_H
#define IMGSEARCH_REPLICA_INT_H

#include <stdint.h>

#include "imgsearch/base.h"

/* Changes read and applied per step (one write-lock hold per step). */
#define REPLICA_CHUNK 256

/* What a snapshot file holds, from its header (+ index.seq). */
struct replica__snap_header {
    uint32_t dim;
    int64_t last_id;  /* highest catalogue id covered */
    uint64_t count;   /* vectors */
    int64_t seq;      /* change seq covered, -1 when unknown */
};

/* Reads only the header of the snapshot at `path` (seq is set to -1).
 * IMS_ERR_NOT_FOUND when there is no file, IMS_ERR_CORRUPT when it is not a
 * snapshot header, IMS_ERR_IO. */
enum ims_status replica__snapshot_header(const char *path, struct replica__snap_header *out);

/* index.seq: the change seq a snapshot covers, with that snapshot's count
 * and last id so that a pair that does not belong together is noticed:
 *     imgsearch index.seq 1
 *     seq S
 *     count C
 *     last_id L
 */
struct replica__seq_file {
    int64_t seq;
    uint64_t count;
    int64_t last_id;
};
enum ims_status replica__seq_read(const char *path, struct replica__seq_file *out);
enum ims_status replica__seq_write(const char *path, const struct replica__seq_file *s,
                                   struct ims_error *err);

/* 1 if a snapshot `old` must be kept rather than replaced by one of an index
 * covering change `seq` with highest id `last_id`. */
int replica__snapshot_keeps(const struct replica__snap_header *old, int64_t seq, int64_t last_id);

#endif
