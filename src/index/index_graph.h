/* SPDX-License-Identifier: MIT */
/*
 * index_graph.h: our own HNSW graph (index_graph.c), the "Graph" index
 * types of index.h. Internal to the index module (vindex.c and
 * index_snapshot.c use it; tests and benchmarks reach it through here).
 *
 * A graph stores, per node, a bf16 copy of the vector (the walk's and the
 * build's distances; the exact fp32 vectors stay in the vindex store for
 * the re-score), its catalogue label, its level, a deleted flag, M0 = 2M
 * level-0 links and M links on each upper level. Node ids are insertion
 * order and never change; deleted nodes stay as waypoints until the graph is
 * rebuilt (reindex).
 *
 * Threads: index__graph_add may run its inserts on several threads (it
 * synchronises them itself); every other mutating call and every search
 * must be ordered by the caller (vindex: add/delete under the write lock,
 * searches under the read lock). Searches may run concurrently with each
 * other.
 */
#ifndef IMGSEARCH_INDEX_GRAPH_H
#define IMGSEARCH_INDEX_GRAPH_H

#include "index_int.h"

#include <stddef.h>
#include <stdint.h>

struct index__graph;

/* Limits of the spec "Graph<M>" and of snapshots. */
#define INDEX_GRAPH_MIN_M 4
#define INDEX_GRAPH_MAX_M 64
#define INDEX_GRAPH_MAX_LEVEL 16
#define INDEX_GRAPH_DEFAULT_M 32
#define INDEX_GRAPH_DEFAULT_EFC 80
/* ef_search a new Graph<M> index starts with: the smallest measured ef with
 * recall@10 >= 0.95 on 1M vectors of the hard set: Graph32 128 (0.955;
 * bench/results/graph32_hard_1m.json), Graph16 256 (0.952;
 * graph_hard_1m.json); sparser graphs get 256 too. */
static inline int index__graph_default_ef(int m) { return m >= 32 ? 128 : 256; }

/* Parses "Graph", "Graph<M>" or "Graph<M>,efc<N>". Returns 1 and fills *m,
 * *efc for a graph spec, 0 for any other spec, -1 for a malformed or
 * out-of-range graph spec. */
int index__graph_parse_spec(const char *spec, int *m, int *efc);

enum ims_status index__graph_new(int dim, int m, int efc, struct index__graph **out);
void index__graph_free(struct index__graph *g);

/* Threads index__graph_add uses for a large add: 0 (default) = every
 * online core. Not thread-safe; set before building. */
extern int index__graph_threads;

/* Makes room for n_more nodes; after success index__graph_add of up to
 * n_more vectors cannot fail. */
enum ims_status index__graph_reserve(struct index__graph *g, size_t n_more);
/* Inserts n vectors x (n, dim) with their labels (room reserved), on up
 * to index__graph_threads threads. IMS_ERR_NOMEM (graph unchanged) when not
 * even one walk's scratch can be allocated. */
enum ims_status index__graph_add(struct index__graph *g, const int64_t *labels, const float *x,
                                 size_t n);
/* Marks the live node labelled `label` deleted; 1 if there was one. */
int index__graph_delete(struct index__graph *g, int64_t label);

size_t index__graph_nodes(const struct index__graph *g); /* every node, deleted too */
size_t index__graph_live(const struct index__graph *g);
int index__graph_m(const struct index__graph *g);
/* Bytes the graph holds (vectors, links, labels, flags, the label map). */
size_t index__graph_memory(const struct index__graph *g);

/* The best (up to) k live nodes for q (dim fp32): labels and bf16 scores,
 * best first. ef: beam width (max(ef, k) used). Returns how many, or -1
 * when out of memory. Deleted nodes are walked through, never returned. */
int index__graph_search(struct index__graph *g, const float *q, int k, int ef, float *scores,
                        int64_t *labels);
/* index__graph_search returning only nodes whose label `filter` allows
 * (NULL: all): refused nodes are walked through as waypoints, and the beam
 * keeps going until it holds ef allowed nodes (or runs out of frontier). */
int index__graph_search_filtered(struct index__graph *g, const float *q, int k, int ef,
                                 const struct vindex_filter *filter, float *scores,
                                 int64_t *labels);

/* Serialises (little-endian) through `write`. */
enum ims_status index__graph_write(const struct index__graph *g, index__write_fn write, void *ctx,
                                   struct ims_error *err);
/* Reads and validates a serialised graph completely: sizes, every count,
 * neighbour (in range, not itself, living on the level it is listed at),
 * level, flag, label (>= 0, live labels unique), bf16 value (finite) and
 * the entry point (on the top level). 0 and *out, or -1 with why. */
int index__graph_read(const void *data, size_t n, int dim, struct index__graph **out, char *why,
                      size_t why_cap);
/* Label of node i, whether it is deleted (for the snapshot's check against
 * the store). */
int64_t index__graph_label(const struct index__graph *g, size_t i, int *deleted);

#endif
