/* SPDX-License-Identifier: MIT */
/*
 * cli_follow.c: the index follows the catalogue's change feed up to a seq
 * (see cli_follow.h). Inserts are read back in batches with their
 * embeddings and added; deletes are removed (absent ids are ignored);
 * updates are removed and added again. Order is kept: pending inserts are
 * applied before a delete or an update. A feed trimmed past our seq cannot
 * be followed: logged, and the index is rebuilt at the next start.
 */
#include "cli_follow.h"

#include <string.h>

#define FOLLOW_CHUNK 256

enum ims_status cli_follow_init(struct cli_follow *f, struct store *store, struct vindex *index,
                                struct ims_error *err)
{
    memset(f, 0, sizeof(*f));
    f->store = store;
    f->index = index;
    enum ims_status st = store_change_seq(store, &f->seq, err);
    if (st == IMS_OK)
        pthread_mutex_init(&f->mu, NULL);
    return st;
}

void cli_follow_fini(struct cli_follow *f)
{
    if (f && f->store)
        pthread_mutex_destroy(&f->mu);
}

/* Adds the rows of `ids` (those still in the catalogue) to the index. */
static enum ims_status add_rows(struct cli_follow *f, const int64_t *ids, size_t n,
                                struct ims_error *err)
{
    if (n == 0)
        return IMS_OK;
    struct store_image_row rows[FOLLOW_CHUNK];
    uint8_t found[FOLLOW_CHUNK];
    enum ims_status st = store_get_many(f->store, ids, n, STORE_FIELD_EMBEDDING, rows, found, err);
    if (st != IMS_OK)
        return st;
    for (size_t i = 0; i < n && st == IMS_OK; i++) {
        if (!found[i] || !rows[i].embedding)
            continue; /* deleted since: its DELETE change follows */
        st = vindex_add(f->index, &rows[i].id, rows[i].embedding, 1, err);
        if (st == IMS_ERR_EXISTS)
            st = IMS_OK; /* already there (the index was caught up at open) */
    }
    for (size_t i = 0; i < n; i++)
        store_row_fini(&rows[i]);
    return st;
}

enum ims_status cli_follow_sync(void *user, int64_t seq, struct ims_error *err)
{
    struct cli_follow *f = user;
    enum ims_status st = IMS_OK;
    pthread_mutex_lock(&f->mu);
    while (st == IMS_OK && f->seq < seq) {
        struct store_change ch[FOLLOW_CHUNK];
        size_t n = 0;
        st = store_changes_after(f->store, f->seq, FOLLOW_CHUNK, ch, &n, err);
        if (st == IMS_ERR_NOT_FOUND) {
            ims_log(IMS_LOG_WARN, "the change feed was trimmed past seq %lld: the index is "
                                  "rebuilt at the next start", (long long)f->seq);
            f->seq = seq;
            st = IMS_OK;
            break;
        }
        if (st != IMS_OK || n == 0)
            break;
        int64_t ins[FOLLOW_CHUNK];
        size_t n_ins = 0;
        for (size_t i = 0; i < n && st == IMS_OK; i++) {
            if (ch[i].kind == STORE_CHANGE_INSERT) {
                ins[n_ins++] = ch[i].id;
                continue;
            }
            st = add_rows(f, ins, n_ins, err);
            n_ins = 0;
            if (st == IMS_OK)
                st = vindex_remove(f->index, &ch[i].id, 1, NULL, err);
            if (st == IMS_OK && ch[i].kind == STORE_CHANGE_UPDATE)
                st = add_rows(f, &ch[i].id, 1, err);
        }
        if (st == IMS_OK)
            st = add_rows(f, ins, n_ins, err);
        if (st == IMS_OK)
            f->seq = ch[n - 1].seq;
    }
    pthread_mutex_unlock(&f->mu);
    return st;
}
