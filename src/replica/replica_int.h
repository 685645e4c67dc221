/* SPDX-License-Identifier: MIT */
/*
 * replica_int.h: what the replica's files and its unit tests share.
 */
#ifndef IMGSEARCH_REPLICA_INT_H
#define IMGSEARCH_REPLICA_INT_H

#include <stdint.h>

#include "imgsearch/base.h"

/* What a snapshot file's header says it holds. */
struct replica__snap_header {
    uint32_t dim;
    int64_t position; /* the catalogue position it covers */
    uint64_t count;   /* vectors */
};

/* Reads only the header of the snapshot at `path`. IMS_ERR_NOT_FOUND when
 * there is no file, IMS_ERR_CORRUPT when it is not a snapshot header,
 * IMS_ERR_IO. */
enum ims_status replica__snapshot_header(const char *path, struct replica__snap_header *out);
/* 1 if a snapshot with header `old` must be kept rather than replaced by one
 * of an index at `position` holding `count` vectors. */
int replica__snapshot_keeps(const struct replica__snap_header *old, int64_t position,
                            uint64_t count);

#endif
