// SPDX-License-Identifier: MIT
/*
 * faiss_bridge.cpp: FAISS behind the C functions of index_int.h. The only C++
 * file of the project.
 *
 * Rules this file keeps:
 * - No exception crosses it: every entry point runs its body inside
 *   try/catch(...) and turns a std::exception into a status whose message
 *   carries what(). FAISS throws on bad factory strings, untrained adds,
 *   unsupported operations and malformed serialised data.
 * - No memory is freed across it: the handle is allocated with new and
 *   deleted here; serialisation streams through C callbacks, so no buffer
 *   allocated by C++ ever reaches ims_free (or the other way round).
 * - The metric is always inner product: vectors are L2-normalised, so it is
 *   the cosine.
 * - Ids: IVF types (also behind a pre-transform such as OPQ) store ids
 *   natively; everything else is wrapped in an IndexIDMap. IndexIDMap's
 *   remove_ids is only correct when the inner index renumbers by shifting
 *   (IndexFlatCodes: Flat, PQ, SQ, LSH), which is why IVF is never wrapped
 *   and why graph types (HNSW, NSG) report can_remove = 0 (the caller keeps
 *   tombstones instead).
 */

#include "index_int.h"

#include <faiss/AutoTune.h>
#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <omp.h>

#include <atomic>
#include <exception>
#include <memory>
#include <new>

// OpenMP threads FAISS may use in train/add. OpenMP's thread count is a
// per-thread setting, so every entry point applies it on the calling thread.
// Default 1: FAISS's heavy training steps call OpenBLAS, whose own threads
// then nest inside OpenMP's and both spin for the cores (a 10x slowdown
// measured on 2 cores); with 1 OpenMP thread the BLAS threads do the
// parallel work. Searches always run on the calling thread alone.
static std::atomic<int> g_build_threads{1};

struct index__faiss {
    faiss::Index *index; // owned
    bool can_remove;
};

namespace {

enum ims_status fail(struct ims_error *err, enum ims_status st, const char *what,
                     const std::exception &e)
{
    return ims_error_set(err, st, "faiss: %s: %s", what, e.what());
}

// Catches everything at the boundary. bad_alloc -> NOMEM, the rest -> `st`.
template <typename F>
enum ims_status guarded(struct ims_error *err, enum ims_status st, const char *what, F &&body)
{
    try {
        return body();
    } catch (const std::bad_alloc &e) {
        return fail(err, IMS_ERR_NOMEM, what, e);
    } catch (const std::exception &e) {
        return fail(err, st, what, e);
    } catch (...) {
        return ims_error_set(err, st, "faiss: %s: unknown exception", what);
    }
}

const faiss::Index *unwrap(const faiss::Index *ix)
{
    for (;;) {
        if (auto m = dynamic_cast<const faiss::IndexIDMap *>(ix))
            ix = m->index;
        else if (auto p = dynamic_cast<const faiss::IndexPreTransform *>(ix))
            ix = p->index;
        else
            return ix;
    }
}

// The factory turns on polysemous training for 8-bit PQ: a simulated-annealing
// reordering of the codes that only helps Hamming-filtered search (which we do
// not use) and, with Debian's generic-SIMD build, dominates training time
// (minutes on a few thousand vectors). Switch it off.
void no_polysemous(faiss::Index *ix)
{
    faiss::Index *inner = const_cast<faiss::Index *>(unwrap(ix));
    if (auto *p = dynamic_cast<faiss::IndexIVFPQ *>(inner))
        p->do_polysemous_training = false;
    if (auto *p = dynamic_cast<faiss::IndexPQ *>(inner))
        p->do_polysemous_training = false;
}

bool removable(const faiss::Index *ix)
{
    const faiss::Index *inner = unwrap(ix);
    return dynamic_cast<const faiss::IndexIVF *>(inner) != nullptr ||
           dynamic_cast<const faiss::IndexFlatCodes *>(inner) != nullptr;
}

struct CbWriter : faiss::IOWriter {
    index__write_fn fn;
    void *ctx;
    size_t operator()(const void *ptr, size_t size, size_t nitems) override
    {
        if (size == 0 || nitems == 0)
            return nitems;
        if (fn(ctx, ptr, size * nitems) != 0)
            return 0; // FAISS turns a short write into an exception
        return nitems;
    }
};

struct CbReader : faiss::IOReader {
    index__read_fn fn;
    void *ctx;
    size_t operator()(void *ptr, size_t size, size_t nitems) override
    {
        if (size == 0 || nitems == 0)
            return nitems;
        size_t bytes;
        if (__builtin_mul_overflow(size, nitems, &bytes) || fn(ctx, ptr, bytes) != 0)
            return 0; // short read: FAISS throws
        return nitems;
    }
};

} // namespace

extern "C" {

enum ims_status index__faiss_new(const char *spec, int dim, struct index__faiss **out,
                                 struct ims_error *err)
{
    return guarded(err, IMS_ERR_INVALID, "index type", [&]() {
        std::unique_ptr<faiss::Index> ix(
            faiss::index_factory(dim, spec, faiss::METRIC_INNER_PRODUCT));
        no_polysemous(ix.get());
        if (!faiss::ivflib::try_extract_index_ivf(ix.get())) {
            auto *m = new faiss::IndexIDMap(ix.get());
            m->own_fields = true;
            ix.release();
            ix.reset(m);
        }
        auto *f = new index__faiss;
        f->can_remove = removable(ix.get());
        f->index = ix.release();
        *out = f;
        return IMS_OK;
    });
}

void index__faiss_free(struct index__faiss *f)
{
    if (!f)
        return;
    try {
        delete f->index;
    } catch (...) {
        // destructors of FAISS do not throw in practice; never let one escape
    }
    delete f;
}

int index__faiss_is_trained(const struct index__faiss *f) { return f->index->is_trained ? 1 : 0; }
int index__faiss_can_remove(const struct index__faiss *f) { return f->can_remove ? 1 : 0; }
int64_t index__faiss_ntotal(const struct index__faiss *f) { return f->index->ntotal; }
int index__faiss_dim(const struct index__faiss *f) { return f->index->d; }

enum ims_status index__faiss_train(struct index__faiss *f, const float *x, size_t n,
                                   struct ims_error *err)
{
    return guarded(err, IMS_ERR_INVALID, "train", [&]() {
        omp_set_num_threads(g_build_threads.load());
        f->index->train((faiss::Index::idx_t)n, x);
        return IMS_OK;
    });
}

enum ims_status index__faiss_add(struct index__faiss *f, const int64_t *ids, const float *x,
                                 size_t n, struct ims_error *err)
{
    return guarded(err, IMS_ERR_INVALID, "add", [&]() {
        omp_set_num_threads(g_build_threads.load());
        static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "idx_t is 64-bit");
        f->index->add_with_ids((faiss::Index::idx_t)n, x, reinterpret_cast<const faiss::Index::idx_t *>(ids));
        return IMS_OK;
    });
}

enum ims_status index__faiss_remove(struct index__faiss *f, const int64_t *ids, size_t n,
                                    struct ims_error *err)
{
    return guarded(err, IMS_ERR_UNSUPPORTED, "remove", [&]() {
        faiss::IDSelectorBatch sel(n, reinterpret_cast<const faiss::Index::idx_t *>(ids));
        f->index->remove_ids(sel);
        return IMS_OK;
    });
}

enum ims_status index__faiss_set_param(struct index__faiss *f, const char *name, int value,
                                       struct ims_error *err)
{
    return guarded(err, IMS_ERR_INVALID, "search parameter", [&]() {
        const faiss::Index *inner = unwrap(f->index);
        bool ivf = faiss::ivflib::try_extract_index_ivf(f->index) != nullptr;
        bool applies = (std::string(name) == "nprobe" && ivf) ||
                       (std::string(name) == "efSearch" &&
                        dynamic_cast<const faiss::IndexHNSW *>(inner) != nullptr);
        if (!applies)
            return IMS_OK;
        faiss::ParameterSpace ps;
        ps.set_index_parameter(f->index, name, (double)value);
        // An HNSW coarse quantizer ("IVF4096_HNSW32,...") returns at most its
        // efSearch lists: keep it at least 2 * nprobe.
        faiss::IndexIVF *ivf_ix = faiss::ivflib::try_extract_index_ivf(f->index);
        auto *hq = ivf_ix ? dynamic_cast<faiss::IndexHNSW *>(ivf_ix->quantizer) : nullptr;
        if (hq && std::string(name) == "nprobe" && hq->hnsw.efSearch < 2 * value)
            hq->hnsw.efSearch = 2 * value;
        return IMS_OK;
    });
}

enum ims_status index__faiss_search(const struct index__faiss *f, const float *q, int k,
                                    int min_ef, float *scores, int64_t *ids,
                                    struct ims_error *err)
{
    return guarded(err, IMS_ERR_INTERNAL, "search", [&]() {
        omp_set_num_threads(1);
        auto *out = reinterpret_cast<faiss::Index::idx_t *>(ids);
        // HNSW returns at most efSearch results: widen it for this call (the
        // caller over-fetches past tombstones). The id translation of
        // IndexIDMap is done here so the per-call parameters reach the graph
        // whatever IndexIDMap forwards.
        auto *m = dynamic_cast<const faiss::IndexIDMap *>(f->index);
        auto *h = m ? dynamic_cast<const faiss::IndexHNSW *>(m->index) : nullptr;
        if (h && min_ef > h->hnsw.efSearch) {
            faiss::SearchParametersHNSW p;
            p.efSearch = min_ef;
            h->search(1, q, k, scores, out, &p);
            for (int i = 0; i < k; i++)
                if (out[i] >= 0)
                    out[i] = m->id_map[(size_t)out[i]];
            return IMS_OK;
        }
        f->index->search(1, q, k, scores, out);
        return IMS_OK;
    });
}

enum ims_status index__faiss_write(const struct index__faiss *f, index__write_fn write, void *ctx,
                                   struct ims_error *err)
{
    return guarded(err, IMS_ERR_IO, "write", [&]() {
        CbWriter w;
        w.fn = write;
        w.ctx = ctx;
        faiss::write_index(f->index, &w);
        return IMS_OK;
    });
}

enum ims_status index__faiss_read(index__read_fn read, void *ctx, struct index__faiss **out,
                                  struct ims_error *err)
{
    return guarded(err, IMS_ERR_CORRUPT, "read", [&]() {
        CbReader r;
        r.fn = read;
        r.ctx = ctx;
        std::unique_ptr<faiss::Index> ix(faiss::read_index(&r));
        auto *f = new index__faiss;
        f->can_remove = removable(ix.get());
        f->index = ix.release();
        *out = f;
        return IMS_OK;
    });
}

int index__faiss_hnsw_view(const struct index__faiss *f, struct index__hnsw_view *v)
{
    // Only plain HNSW over fp32 vectors (IndexHNSWFlat under our IndexIDMap):
    // the vectors it stores are exactly the ones our kernels expect.
    auto *m = dynamic_cast<const faiss::IndexIDMap *>(f->index);
    auto *h = m ? dynamic_cast<const faiss::IndexHNSWFlat *>(m->index) : nullptr;
    auto *flat = h ? dynamic_cast<const faiss::IndexFlat *>(h->storage) : nullptr;
    if (!flat || h->ntotal <= 0 || h->hnsw.entry_point < 0 ||
        (size_t)h->ntotal != m->id_map.size())
        return 0;
    static_assert(sizeof(faiss::HNSW::storage_idx_t) == sizeof(int32_t), "int32 graph");
    static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "int64 ids");
    v->vectors = flat->get_xb();
    v->labels = reinterpret_cast<const int64_t *>(m->id_map.data());
    v->neighbors = reinterpret_cast<const int32_t *>(h->hnsw.neighbors.data());
    v->offsets = h->hnsw.offsets.data();
    v->cum_nneighbor_per_level = h->hnsw.cum_nneighbor_per_level.data();
    v->n_levels_table = (int)h->hnsw.cum_nneighbor_per_level.size();
    v->entry_point = h->hnsw.entry_point;
    v->max_level = h->hnsw.max_level;
    v->ef_search = h->hnsw.efSearch;
    v->ntotal = h->ntotal;
    return 1;
}

void index__faiss_set_threads(int n)
{
    if (n > 0)
        g_build_threads.store(n);
}

enum ims_status index__faiss_read_file_vectors(const char *path, float **x, size_t *n, int *d,
                                               struct ims_error *err)
{
    return guarded(err, IMS_ERR_CORRUPT, "reading the index file", [&]() {
        std::unique_ptr<faiss::Index> ix(faiss::read_index(path));
        faiss::Index *inner = ix.get();
        // IndexIDMap keeps vectors in insertion order in its inner index
        if (auto *m = dynamic_cast<faiss::IndexIDMap *>(inner))
            inner = m->index;
        if (auto *ivf = faiss::ivflib::try_extract_index_ivf(inner))
            ivf->make_direct_map(true);
        size_t total = (size_t)inner->ntotal;
        size_t dim = (size_t)inner->d;
        if (dim == 0 || total > ((size_t)1 << 40) / dim)
            return ims_error_set(err, IMS_ERR_TOO_LARGE, "%zu vectors of %zu dimensions", total,
                                 dim);
        float *buf = (float *)ims_malloc((total ? total : 1) * dim * sizeof(float));
        if (!buf)
            return ims_error_set(err, IMS_ERR_NOMEM, "no memory for %zu vectors", total);
        try {
            if (total)
                inner->reconstruct_n(0, (faiss::Index::idx_t)total, buf);
        } catch (...) {
            ims_free(buf);
            throw;
        }
        *x = buf;
        *n = total;
        *d = (int)dim;
        return IMS_OK;
    });
}

} // extern "C"
