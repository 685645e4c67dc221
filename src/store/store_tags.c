/* SPDX-License-Identifier: MIT */
/*
 * store_tags.c: the rules of image tags (issue 10, schema v4) that both
 * backends share: what a tag may be and its comparison key, the checked
 * public store_tags_update, how a row's tags travel from a query (one text
 * joined by U+001F, a character no tag may hold) into struct store_image_row,
 * and the JSON list of keys a tag filter binds. The SQL lives with each
 * backend (store_images.c, store_pg_images.c).
 */
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the UTF-8 sequence at s (n bytes left) and its code point, or 0
 * when it is not well-formed (overlong, surrogate, beyond U+10FFFF, cut). */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    uint32_t c = s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

enum ims_status store_tag_normalize(const char *tag, char out[STORE_TAG_MAX_BYTES + 1],
                                    char key[STORE_TAG_MAX_BYTES + 1], struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!tag || !out || !key, err, IMS_ERR_INVALID,
                        "store_tag_normalize: invalid arguments");
    size_t n = strnlen(tag, 4 * STORE_TAG_MAX_BYTES + 1);
    const char *b = tag, *e = tag + n;
    while (b < e && *b == ' ')
        b++;
    while (e > b && e[-1] == ' ')
        e--;
    size_t len = (size_t)(e - b);
    IMS_RETURN_ERROR_IF(len == 0, err, IMS_ERR_INVALID, "tag '%.64s': empty", tag);
    IMS_RETURN_ERROR_IF(len > STORE_TAG_MAX_BYTES, err, IMS_ERR_INVALID,
                        "tag '%.64s...': longer than %d bytes", b, STORE_TAG_MAX_BYTES);
    const unsigned char *u = (const unsigned char *)b;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        size_t k = utf8_next(u + i, len - i, &cp);
        IMS_RETURN_ERROR_IF(k == 0, err, IMS_ERR_INVALID, "tag '%.*s': not UTF-8 (byte %zu)",
                            (int)i, b, i);
        IMS_RETURN_ERROR_IF(cp < 0x20 || (cp >= 0x7f && cp <= 0x9f), err, IMS_ERR_INVALID,
                            "tag '%.*s': control character U+%04X at byte %zu", (int)i, b,
                            (unsigned)cp, i);
        i += k;
    }
    memcpy(out, b, len);
    out[len] = '\0';
    for (size_t i = 0; i < len; i++)
        key[i] = (char)(out[i] >= 'A' && out[i] <= 'Z' ? out[i] + ('a' - 'A') : out[i]);
    key[len] = '\0';
    return IMS_OK;
}

/* Normalises n tags into one block: tags[i] / keys[i] point into it. Later
 * duplicates (same key) are dropped, so *n_out <= n. */
static enum ims_status tags_prepare(const char *const *in, size_t n, const char *what,
                                    char ***tags, char ***keys, size_t *n_out, void **block,
                                    struct ims_error *err)
{
    *block = NULL;
    *n_out = 0;
    *tags = *keys = NULL;
    if (n == 0)
        return IMS_OK;
    IMS_RETURN_ERROR_IF(!in, err, IMS_ERR_INVALID, "%s: no tags", what);
    IMS_RETURN_ERROR_IF(n > 4 * STORE_TAGS_MAX, err, IMS_ERR_INVALID,
                        "%s: more than %d tags", what, 4 * STORE_TAGS_MAX);
    size_t slot = STORE_TAG_MAX_BYTES + 1;
    char *blk = ims_malloc(n * (2 * sizeof(char *) + 2 * slot));
    IMS_RETURN_ERROR_IF(!blk, err, IMS_ERR_NOMEM, "tags: out of memory");
    char **t = (char **)blk, **k = t + n;
    char *text = (char *)(k + n);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char *o = text + 2 * slot * m, *ky = o + slot;
        enum ims_status s = store_tag_normalize(in[i], o, ky, err);
        if (s != IMS_OK) {
            ims_free(blk);
            ims_error_prefix(err, "%s", what);
            return s;
        }
        int dup = 0;
        for (size_t j = 0; j < m && !dup; j++)
            dup = !strcmp(k[j], ky);
        if (dup)
            continue;
        t[m] = o;
        k[m] = ky;
        m++;
    }
    *tags = t;
    *keys = k;
    *n_out = m;
    *block = blk;
    return IMS_OK;
}

enum ims_status store_tags_update(struct store *store, int64_t id, const char *const *add,
                                  size_t n_add, const char *const *remove, size_t n_remove,
                                  struct ims_error *err)
{
    IMS_RETURN_ERROR_IF(!store || id <= 0, err, IMS_ERR_INVALID,
                        "store_tags_update: invalid arguments");
    char **at, **ak, **rt, **rk;
    size_t na, nr;
    void *ba = NULL, *br = NULL;
    enum ims_status s = tags_prepare(add, n_add, "add", &at, &ak, &na, &ba, err);
    if (s == IMS_OK)
        s = tags_prepare(remove, n_remove, "remove", &rt, &rk, &nr, &br, err);
    if (s == IMS_OK && na > STORE_TAGS_MAX)
        s = ims_error_set(err, IMS_ERR_INVALID, "add: more than %d tags", STORE_TAGS_MAX);
    if (s == IMS_OK)
        s = store->ops->tags_update(store, id, (const char *const *)at, (const char *const *)ak, na,
                                    (const char *const *)rk, nr, err);
    store__rowcache_evict(store->rc, &id, 1);
    ims_free(ba);
    ims_free(br);
    return s;
}

static int key_cmp(const void *a, const void *b)
{
    const unsigned char *x = *(const unsigned char *const *)a, *y = *(const unsigned char *const *)b;
    for (;; x++, y++) {
        int cx = *x >= 'A' && *x <= 'Z' ? *x + 32 : *x, cy = *y >= 'A' && *y <= 'Z' ? *y + 32 : *y;
        if (cx != cy || !cx)
            return cx - cy;
    }
}

int store__tags_parse(const char *joined, size_t len, struct store_image_row *row)
{
    row->tags = NULL;
    row->n_tags = 0;
    if (!joined || len == 0)
        return 0;
    size_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += joined[i] == STORE__TAG_SEP;
    char *blk = ims_malloc(n * sizeof(char *) + len + 1);
    if (!blk)
        return -1;
    char **t = (char **)blk;
    char *text = blk + n * sizeof(char *);
    memcpy(text, joined, len);
    text[len] = '\0';
    size_t m = 0;
    t[m++] = text;
    for (size_t i = 0; i < len; i++)
        if (text[i] == STORE__TAG_SEP) {
            text[i] = '\0';
            t[m++] = text + i + 1;
        }
    qsort(t, m, sizeof(*t), key_cmp);
    row->tags = t;
    row->n_tags = m;
    return 0;
}

enum ims_status store__tags_filter_json(const struct store_filter *f, char **json, size_t *n_keys,
                                        struct ims_error *err)
{
    *json = NULL;
    *n_keys = 0;
    if (!f->n_tags)
        return IMS_OK;
    IMS_RETURN_ERROR_IF(f->n_tags > STORE_TAGS_MAX, err, IMS_ERR_INVALID,
                        "filter: more than %d tags", STORE_TAGS_MAX);
    char **t, **k;
    size_t n;
    void *blk;
    enum ims_status s = tags_prepare(f->tags, f->n_tags, "filter", &t, &k, &n, &blk, err);
    if (s != IMS_OK)
        return s;
    /* every key: quotes and backslashes escaped (no control characters) */
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += 2 * strlen(k[i]) + 3;
    char *o = ims_malloc(cap);
    if (!o) {
        ims_free(blk);
        return ims_error_set(err, IMS_ERR_NOMEM, "filter: out of memory");
    }
    size_t w = 0;
    o[w++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            o[w++] = ',';
        o[w++] = '"';
        for (const char *c = k[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                o[w++] = '\\';
            o[w++] = *c;
        }
        o[w++] = '"';
    }
    o[w++] = ']';
    o[w] = '\0';
    ims_free(blk);
    *json = o;
    *n_keys = n;
    return IMS_OK;
}
