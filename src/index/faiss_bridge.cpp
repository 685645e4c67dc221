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
#include "imgsearch/index.h"

#include <faiss/AutoTune.h>
#include <faiss/IVFlib.h>
#include <faiss/Index.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <cstring>
#include <stdexcept>
#include <string>

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

// An HNSW coarse quantizer ("IVF4096_HNSW32,...") walks with its own
// efSearch and stops once efSearch nodes nearer than the next candidate have
// been expanded, so with efSearch < nprobe it hands back fewer (or worse)
// lists than asked for. The efSearch a quantizer needs for `nprobe` lists:
// 2 * nprobe (its beam then holds the lists asked for with room to spare),
// never below its current one, never above its number of centroids (a beam
// as wide as the graph already visits every node), clamped to nprobe <= nlist.
int quantizer_ef(int current, size_t nprobe, size_t nlist)
{
    size_t want = 2 * std::min(nprobe, nlist);
    want = std::min(want, std::max(nlist, (size_t)1));
    return (int)std::max((size_t)std::max(current, 0), std::min(want, (size_t)INT32_MAX));
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

// ---- validation of deserialised indexes -------------------------------------
//
// faiss::read_index checks the framing of what it reads, not the agreement
// between the counts it stores: an HNSW whose ntotal exceeds its storage, a
// graph whose neighbour ids point past its vectors, an IVF whose list sizes do
// not add up. Every check below is one function per format, run once at load
// time, so that nothing downstream (our HNSW walk, reconstruct, search) ever
// meets a count it has to distrust. A format that is not listed is accepted
// only when `strict` is off (our own CRC-checked snapshot, written by this
// code) and refused when it is on (files from outside). A new format (e.g. our
// own HNSW graph layout) gets its own check_* and a line in check_index.

bool mul_ok(size_t a, size_t b, size_t *out) { return !__builtin_mul_overflow(a, b, out); }

std::string check_index(const faiss::Index *ix, bool strict, int depth);

std::string check_flat(const faiss::IndexFlatCodes *f)
{
    size_t want;
    if (f->ntotal < 0 || f->code_size == 0 || !mul_ok((size_t)f->ntotal, f->code_size, &want) ||
        f->codes.size() != want)
        return "flat storage: " + std::to_string(f->ntotal) + " vectors but " +
               std::to_string(f->codes.size()) + " code bytes";
    if (dynamic_cast<const faiss::IndexFlat *>(f) && f->code_size != sizeof(float) * (size_t)f->d)
        return "flat storage: code size " + std::to_string(f->code_size) + " for d=" +
               std::to_string(f->d);
    return "";
}

std::string check_hnsw(const faiss::IndexHNSW *h, bool strict, int depth)
{
    if (!h->storage)
        return "HNSW without storage";
    std::string why = check_index(h->storage, strict, depth + 1);
    if (!why.empty())
        return why;
    if (h->storage->ntotal != h->ntotal || h->storage->d != h->d)
        return "HNSW of " + std::to_string(h->ntotal) + " vectors over a storage of " +
               std::to_string(h->storage->ntotal);
    struct index__hnsw_view v = {};
    index__faiss_hnsw_graph(h, &v);
    char buf[256];
    if (index__hnsw_check(&v, buf, sizeof buf) != 0)
        return std::string("HNSW graph: ") + buf;
    return "";
}

std::string check_ivf(const faiss::IndexIVF *ivf, bool strict, int depth)
{
    if (!ivf->quantizer)
        return "IVF without a coarse quantizer";
    std::string why = check_index(ivf->quantizer, strict, depth + 1);
    if (!why.empty())
        return "IVF coarse quantizer: " + why;
    if (ivf->quantizer->d != ivf->d || ivf->quantizer->ntotal != (faiss::Index::idx_t)ivf->nlist)
        return "IVF of " + std::to_string(ivf->nlist) + " lists over a quantizer of " +
               std::to_string(ivf->quantizer->ntotal) + " centroids";
    auto *al = dynamic_cast<const faiss::ArrayInvertedLists *>(ivf->invlists);
    if (!al)
        return "IVF inverted lists of an unsupported kind (only in-file lists are read)";
    if (al->nlist != ivf->nlist || al->code_size != ivf->code_size || ivf->code_size == 0 ||
        al->ids.size() != al->nlist || al->codes.size() != al->nlist)
        return "IVF inverted lists do not match the index (nlist, code size)";
    size_t total = 0;
    for (size_t l = 0; l < al->nlist; l++) {
        size_t want;
        if (!mul_ok(al->ids[l].size(), al->code_size, &want) || al->codes[l].size() != want)
            return "IVF list " + std::to_string(l) + ": " + std::to_string(al->ids[l].size()) +
                   " ids but " + std::to_string(al->codes[l].size()) + " code bytes";
        total += al->ids[l].size();
    }
    if (ivf->ntotal < 0 || total != (size_t)ivf->ntotal)
        return "IVF lists hold " + std::to_string(total) + " vectors, the header says " +
               std::to_string(ivf->ntotal);
    if (auto *pq = dynamic_cast<const faiss::IndexIVFPQ *>(ivf)) {
        size_t want;
        if (pq->pq.M == 0 || pq->pq.dsub * pq->pq.M != (size_t)pq->d ||
            pq->pq.code_size != pq->code_size ||
            !mul_ok(pq->pq.M * pq->pq.ksub, pq->pq.dsub, &want) || pq->pq.centroids.size() != want)
            return "IVF-PQ: product quantizer does not match the index";
    } else if (!dynamic_cast<const faiss::IndexIVFFlat *>(ivf)) {
        if (strict)
            return "IVF encoding not supported for import (IVF-Flat and IVF-PQ are)";
    } else if (ivf->code_size != sizeof(float) * (size_t)ivf->d) {
        return "IVF-Flat: code size does not match d";
    }
    return "";
}

std::string check_index(const faiss::Index *ix, bool strict, int depth)
{
    if (depth > 4)
        return "indexes nested too deep";
    if (ix->d <= 0 || ix->d > VINDEX_MAX_DIM || ix->ntotal < 0)
        return "dimension " + std::to_string(ix->d) + " or count " + std::to_string(ix->ntotal) +
               " out of range";
    if (auto *m = dynamic_cast<const faiss::IndexIDMap *>(ix)) {
        if (!m->index)
            return "id map without an index";
        std::string why = check_index(m->index, strict, depth + 1);
        if (!why.empty())
            return why;
        if (m->index->ntotal != m->ntotal || m->id_map.size() != (size_t)m->ntotal ||
            m->index->d != m->d)
            return "id map of " + std::to_string(m->id_map.size()) + " ids over " +
                   std::to_string(m->index->ntotal) + " vectors (header " +
                   std::to_string(m->ntotal) + ")";
        return "";
    }
    if (auto *h = dynamic_cast<const faiss::IndexHNSW *>(ix))
        return check_hnsw(h, strict, depth);
    if (auto *ivf = dynamic_cast<const faiss::IndexIVF *>(ix))
        return check_ivf(ivf, strict, depth);
    if (auto *f = dynamic_cast<const faiss::IndexFlatCodes *>(ix)) {
        if (strict && !dynamic_cast<const faiss::IndexFlat *>(ix))
            return "flat encoding not supported for import (fp32 Flat is)";
        return check_flat(f);
    }
    if (strict)
        return "index type not supported for import (Flat, IDMap, HNSW-Flat, IVF-Flat, IVF-PQ are)";
    return "";
}

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
        if (hq && std::string(name) == "nprobe")
            hq->hnsw.efSearch = quantizer_ef(hq->hnsw.efSearch, (size_t)value, ivf_ix->nlist);
        return IMS_OK;
    });
}

enum ims_status index__faiss_search(const struct index__faiss *f, const float *q, int k,
                                    int min_ef, int nprobe, float *scores, int64_t *ids,
                                    struct ims_error *err)
{
    return guarded(err, IMS_ERR_INTERNAL, "search", [&]() {
        omp_set_num_threads(1);
        auto *out = reinterpret_cast<faiss::Index::idx_t *>(ids);
        // Per-call parameters go to the HNSW graph or the IVF itself, found
        // under an IndexIDMap and/or an IndexPreTransform (OPQ..., PCA...,
        // the usual factory shapes): FAISS forwards neither reliably (1.7.3's
        // IndexPreTransform hands its caller's parameters to the sub-index
        // only when wrapped in SearchParametersPreTransform, and IndexIDMap
        // not at all in some versions). So the transform chain and the id
        // translation are applied here, and the inner index searched with
        // the parameters directly.
        auto *m = dynamic_cast<const faiss::IndexIDMap *>(f->index);
        const faiss::Index *inner = m ? m->index : f->index;
        auto *pt = dynamic_cast<const faiss::IndexPreTransform *>(inner);
        if (pt)
            inner = pt->index;
        faiss::SearchParametersHNSW ph, pq;
        faiss::SearchParametersIVF pi;
        const faiss::SearchParameters *params = nullptr;
        // HNSW returns at most efSearch results: widen it for this call (the
        // caller over-fetches past tombstones).
        auto *h = dynamic_cast<const faiss::IndexHNSW *>(inner);
        if (h && min_ef > h->hnsw.efSearch) {
            ph.efSearch = min_ef;
            params = &ph;
        }
        // IVF with a per-query nprobe (issue 11).
        auto *ivf = dynamic_cast<const faiss::IndexIVF *>(inner);
        if (ivf && nprobe > 0 && (size_t)nprobe != ivf->nprobe) {
            pi.nprobe = (size_t)nprobe;
            pi.max_codes = ivf->max_codes;
            // the quantizer's walk widened with it (IndexIVF hands
            // quantizer_params to the quantizer's search)
            auto *hq = dynamic_cast<const faiss::IndexHNSW *>(ivf->quantizer);
            if (hq) {
                pq.efSearch = quantizer_ef(hq->hnsw.efSearch, pi.nprobe, ivf->nlist);
                pq.check_relative_distance = hq->hnsw.check_relative_distance;
                pi.quantizer_params = &pq;
            }
            params = &pi;
        }
        if (params) {
            if (pt && !pt->is_trained)
                throw std::runtime_error("search before training");
            const float *xt = pt ? pt->apply_chain(1, q) : q;
            std::unique_ptr<const float[]> own(xt != q ? xt : nullptr);
            inner->search(1, xt, k, scores, out, params);
            if (m)
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
        std::string why = check_index(ix.get(), false, 0);
        if (!why.empty())
            return ims_error_set(err, IMS_ERR_CORRUPT, "faiss: %s", why.c_str());
        auto *f = new index__faiss;
        f->can_remove = removable(ix.get());
        f->index = ix.release();
        *out = f;
        return IMS_OK;
    });
}

void index__faiss_hnsw_graph(const void *hnsw_index, struct index__hnsw_view *v)
{
    auto *h = static_cast<const faiss::IndexHNSW *>(hnsw_index);
    static_assert(sizeof(faiss::HNSW::storage_idx_t) == sizeof(int32_t), "int32 graph");
    v->neighbors = reinterpret_cast<const int32_t *>(h->hnsw.neighbors.data());
    v->n_neighbors = h->hnsw.neighbors.size();
    v->offsets = h->hnsw.offsets.data();
    v->n_offsets = h->hnsw.offsets.size();
    v->levels = h->hnsw.levels.data();
    v->n_levels = h->hnsw.levels.size();
    v->cum_nneighbor_per_level = h->hnsw.cum_nneighbor_per_level.data();
    v->n_levels_table = (int)IMS_MIN(h->hnsw.cum_nneighbor_per_level.size(), (size_t)1 << 20);
    v->entry_point = h->hnsw.entry_point;
    v->max_level = h->hnsw.max_level;
    v->ef_search = h->hnsw.efSearch;
    v->ntotal = h->ntotal;
}

int index__faiss_hnsw_view(const struct index__faiss *f, struct index__hnsw_view *v)
{
    // Only plain HNSW over fp32 vectors (IndexHNSWFlat under our IndexIDMap):
    // the vectors it stores are exactly the ones our kernels expect. The graph
    // was validated when it was read (check_hnsw).
    auto *m = dynamic_cast<const faiss::IndexIDMap *>(f->index);
    auto *h = m ? dynamic_cast<const faiss::IndexHNSWFlat *>(m->index) : nullptr;
    auto *flat = h ? dynamic_cast<const faiss::IndexFlat *>(h->storage) : nullptr;
    if (!flat || h->ntotal <= 0 || h->hnsw.entry_point < 0 ||
        (size_t)h->ntotal != m->id_map.size() || flat->ntotal != h->ntotal)
        return 0;
    static_assert(sizeof(faiss::Index::idx_t) == sizeof(int64_t), "int64 ids");
    index__faiss_hnsw_graph(h, v);
    v->vectors = flat->get_xb();
    v->labels = reinterpret_cast<const int64_t *>(m->id_map.data());
    return 1;
}

void index__faiss_set_threads(int n)
{
    if (n > 0)
        g_build_threads.store(n);
}

enum ims_status index__faiss_read_buffer_vectors(const void *data, size_t size, float **x,
                                                 int64_t **ids, size_t *n, int *d,
                                                 struct ims_error *err)
{
    return guarded(err, IMS_ERR_CORRUPT, "reading the index file", [&]() {
        struct {
            const unsigned char *p;
            size_t left;
        } src = {static_cast<const unsigned char *>(data), size};
        CbReader r;
        r.fn = [](void *ctx, void *out, size_t len) -> int {
            auto *s = static_cast<decltype(src) *>(ctx);
            if (len > s->left)
                return -1;
            memcpy(out, s->p, len);
            s->p += len;
            s->left -= len;
            return 0;
        };
        r.ctx = &src;
        // The precomputed IVF-PQ table is a search accelerator the import
        // never uses; building it costs nlist * M * 2^nbits floats.
        std::unique_ptr<faiss::Index> ix(faiss::read_index(&r, faiss::IO_FLAG_SKIP_PRECOMPUTE_TABLE));
        std::string why = check_index(ix.get(), true, 0);
        if (!why.empty())
            return ims_error_set(err, IMS_ERR_CORRUPT, "%s", why.c_str());
        const faiss::Index *inner = ix.get();
        const faiss::IndexIDMap *m = dynamic_cast<const faiss::IndexIDMap *>(inner);
        if (m)
            inner = m->index;
        size_t total = (size_t)inner->ntotal;
        size_t dim = (size_t)inner->d;
        if (total > ((size_t)1 << 40) / dim)
            return ims_error_set(err, IMS_ERR_TOO_LARGE, "%zu vectors of %zu dimensions", total,
                                 dim);
        float *buf = (float *)ims_malloc((total ? total : 1) * dim * sizeof(float));
        int64_t *idv = (int64_t *)ims_malloc((total ? total : 1) * sizeof(int64_t));
        if (!buf || !idv) {
            ims_free(buf);
            ims_free(idv);
            return ims_error_set(err, IMS_ERR_NOMEM, "no memory for %zu vectors", total);
        }
        try {
            if (auto *ivf = dynamic_cast<const faiss::IndexIVF *>(inner)) {
                // Ids live in the lists (custom ids included): walk them, so no
                // direct map (which assumes ids 0..n-1 for reconstruct_n) is needed.
                auto *al = static_cast<const faiss::ArrayInvertedLists *>(ivf->invlists);
                size_t k = 0;
                for (size_t l = 0; l < al->nlist; l++)
                    for (size_t o = 0; o < al->ids[l].size(); o++, k++) {
                        idv[k] = al->ids[l][o];
                        ivf->reconstruct_from_offset((int64_t)l, (int64_t)o, buf + k * dim);
                    }
            } else {
                if (total)
                    inner->reconstruct_n(0, (faiss::Index::idx_t)total, buf);
                for (size_t i = 0; i < total; i++)
                    idv[i] = m ? (int64_t)m->id_map[i] : (int64_t)i;
            }
        } catch (...) {
            ims_free(buf);
            ims_free(idv);
            throw;
        }
        *x = buf;
        *ids = idv;
        *n = total;
        *d = (int)dim;
        return IMS_OK;
    });
}

} // extern "C"
