/* SPDX-License-Identifier: MIT */
/*
 * libimgsearch_int.h: what the `imgsearch` command and its server use of
 * libimgsearch beyond include/imgsearch.h. Private to this source tree:
 * never installed, never exported from libimgsearch.so (the version script
 * exports imgsearch_* only; these are imgsearch__*), so none of it is ABI.
 *
 * The CLI and the server open every catalogue through imgsearch__open (the
 * public imgsearch_open is the same call with the library's defaults), so
 * there is one path from a folder or URL to a model-checked, caught-up
 * index; add, search, remove and the snapshot write are the library's too.
 * What the library does not cover (the server's job service, change-feed
 * follower, row cache, metrics; reindex, import, sync) reaches the modules
 * through the accessors below, on the handle's own objects.
 */
#ifndef IMGSEARCH_LIBIMGSEARCH_INT_H
#define IMGSEARCH_LIBIMGSEARCH_INT_H

#include <stdatomic.h>

#include "imgsearch.h"
#include "imgsearch/base.h"
#include "imgsearch/clip.h"
#include "imgsearch/ingest.h"
#include "imgsearch/replica.h"
#include "imgsearch/search.h"
#include "imgsearch/store.h"

/* The public and the internal error structs have one layout (checked in
 * libimgsearch.c): a module caller's error buffer for a public call. */
static inline struct imgsearch_error *imgsearch__err(struct ims_error *e)
{
    return (struct imgsearch_error *)(void *)e;
}

struct imgsearch__open_options {
    /* The data folder, catalogue URL, index and follower settings. Its
     * model_name and dim are the loaded model's (set by imgsearch__open);
     * without a model the catalogue's recorded ones. */
    struct replica_options replica;
    /* The CLIP model folder; NULL: none (commands that never embed: the
     * handle then searches nothing and adds nothing). */
    const char *model_dir;
    struct clip_model_params model;
    /* 1: create the search engine at open (needs a model and an index that
     * is built at open, i.e. not replica.defer_sync); else
     * imgsearch__engine_start later, or none. */
    int with_engine;
    const struct search_options *search; /* the engine's; NULL: defaults */
    /* How long an add or a remove waits for the index to show its change
     * (ms; 0: 60000). */
    int sync_ms;
};
/* What imgsearch_open does: model_dir from the params, with_engine 1. */
void imgsearch__open_options_default(struct imgsearch__open_options *o);

/* Opens the handle. On failure *model_failed (optional) says whether it
 * was the model that failed to load (the CLI adds a hint then). */
enum ims_status imgsearch__open(const struct imgsearch__open_options *o, struct imgsearch **out,
                                int *model_failed, struct ims_error *err);

/* The handle's objects (borrowed for its life; model NULL when opened
 * without one; index NULL without an index or until a deferred start is
 * done; engine NULL until created). */
struct clip_model *imgsearch__model(struct imgsearch *is);
struct replica *imgsearch__replica(struct imgsearch *is);
struct store *imgsearch__store(struct imgsearch *is);
struct search_engine *imgsearch__engine(struct imgsearch *is);

/* serve: once the deferred replica is ready, the engine on its index
 * (owned by the handle, freed by imgsearch_close). */
enum ims_status imgsearch__engine_start(struct imgsearch *is, const struct search_options *o,
                                        struct ims_error *err);

/* ingest's after_commit hook with user = the handle: the index shows every
 * change up to seq (at most sync_ms). */
enum ims_status imgsearch__after_commit(void *user, int64_t seq, struct ims_error *err);

/* imgsearch_add with the caller's pipeline options (callbacks, batch,
 * download policy) and cancel flag; one at a time per handle. */
enum ims_status imgsearch__add(struct imgsearch *is, const struct ingest_options *io,
                               int (*next)(void *ctx, const char **source), void *ctx,
                               const atomic_int *cancel, struct ingest_summary *sum,
                               struct ims_error *err);

/* imgsearch_search with the whole request (every filter, dedup, knobs) and
 * the module's rows (tags, format, taken). */
enum ims_status imgsearch__search(struct imgsearch *is, const struct search_request *rq,
                                  struct search_response *resp, struct ims_error *err);

/* imgsearch_remove with the caller's wait for the index. */
enum ims_status imgsearch__remove(struct imgsearch *is, int64_t id, int sync_ms,
                                  struct ims_error *err);
/* Deletes ids in one transaction (existed[i] optional: it was present) and
 * returns that status; when it is IMS_OK the index then follows the
 * deletion and *index_st (with index_err) says whether it did. */
enum ims_status imgsearch__remove_many(struct imgsearch *is, const int64_t *ids, size_t n,
                                       uint8_t *existed, enum ims_status *index_st,
                                       struct ims_error *index_err, struct ims_error *err);

/* The near-duplicate groups of the whole index at `threshold`
 * (vindex_duplicates), handed to fn (under the handle's lock: fn copies what
 * it keeps, and its status is returned). The pass is kept and reused while
 * the index's generation and the threshold stay the same, so a page that
 * asks again costs nothing; callers that need a new pass wait for the
 * running one (which may answer theirs) instead of stacking passes. */
enum ims_status imgsearch__duplicates(struct imgsearch *is, float threshold,
                                      enum ims_status (*fn)(void *ctx, const struct vindex_dups *d,
                                                            struct ims_error *err),
                                      void *ctx, struct ims_error *err);

/* The index type in effect (index.spec, or the running index's) and the
 * change feed's newest seq and trimmed floor. */
const char *imgsearch__index_spec(struct imgsearch *is);
enum ims_status imgsearch__feed(struct imgsearch *is, int64_t *seq, int64_t *floor,
                                struct ims_error *err);

#endif
