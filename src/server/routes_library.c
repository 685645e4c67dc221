/* SPDX-License-Identifier: MIT */
/*
 * routes_library.c: the photo-library routes of issue 10 that are not
 * searches, each turning a request into one backend call and its JSON:
 *
 *   POST /api/v1/images/{id}/tags  {"add": [...], "remove": [...]}  -> the row
 *   GET  /api/v1/duplicates?threshold=T&limit=N  -> {"groups": [{"ids", "min_score"}]}
 *
 * server.c routes here (h_library) after its common checks (Host/Origin,
 * rate limit, the API key for the tags write, body limits) and writes the
 * answer or the error; nothing here knows MHD.
 */
#include "server_int.h"

#include <jansson.h>
#include <string.h>

enum ims_status server__tags_post(const struct server_backend *be, const char *id_text,
                                  const char *body, size_t len, struct server_arena *a,
                                  json_t **out, struct ims_error *err)
{
    long long id;
    enum ims_status st = server__parse_int(id_text, "image id", 1, INT64_MAX, &id, err);
    if (st != IMS_OK)
        return st;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ims_error_set(err, IMS_ERR_INVALID, "invalid JSON at line %d, column %d: %s",
                             jerr.line, jerr.column, jerr.text);
    const char *const *add = NULL, *const *rm = NULL;
    size_t n_add = 0, n_rm = 0;
    if (!json_is_object(root)) {
        st = ims_error_set(err, IMS_ERR_INVALID,
                           "the body must be {\"add\": [...], \"remove\": [...]}");
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!strcmp(key, "add"))
            st = server__json_tags(v, "add", a, &add, &n_add, err);
        else if (!strcmp(key, "remove"))
            st = server__json_tags(v, "remove", a, &rm, &n_rm, err);
        else
            st = ims_error_set(err, IMS_ERR_INVALID, "%s: unknown member (add, remove)", key);
        if (st != IMS_OK)
            goto out;
    }
    struct server_row row;
    memset(&row, 0, sizeof(row));
    st = be->image_tags(be->self, (int64_t)id, add, n_add, rm, n_rm, a, &row, err);
    if (st == IMS_OK && !(*out = server__row_json(&row)))
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
out:
    json_decref(root);
    return st;
}

enum ims_status server__duplicates_get(const struct server_backend *be, const char *threshold,
                                       const char *limit, struct server_arena *a, json_t **out,
                                       struct ims_error *err)
{
    double t = 0.95;
    long long lim = 1000;
    enum ims_status st;
    if (threshold) {
        if ((st = server__parse_float(threshold, "threshold", 0.0, 1.0, &t, err)) != IMS_OK)
            return st;
        IMS_RETURN_ERROR_IF(t <= 0.0, err, IMS_ERR_INVALID, "threshold: must be in (0, 1]");
    }
    if (limit && (st = server__parse_int(limit, "limit", 1, 100000, &lim, err)) != IMS_OK)
        return st;
    struct server_dup_groups g = {0};
    st = be->duplicates(be->self, (float)t, (size_t)lim, a, &g, err);
    if (st != IMS_OK)
        return st;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < g.n; i++) {
        json_t *ids = json_array();
        for (size_t j = 0; ids && j < g.groups[i].n; j++)
            json_array_append_new(ids, json_integer(g.groups[i].ids[j]));
        /* four decimals: a float's noise would only clutter the answer */
        double ms = (double)(long long)(g.groups[i].min_score * 1e4 + 0.5) / 1e4;
        json_array_append_new(arr, json_pack("{s:o?, s:f}", "ids", ids, "min_score", ms));
    }
    *out = json_pack("{s:o?, s:f}", "groups", arr, "threshold", t);
    IMS_RETURN_ERROR_IF(!*out, err, IMS_ERR_NOMEM, "out of memory");
    return IMS_OK;
}
