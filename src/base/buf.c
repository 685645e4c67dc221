/* SPDX-License-Identifier: MIT */
/*
 * buf.c: the bounded growable buffer (struct ims_buf, after curl's dynbuf).
 *
 * Every buffer has a hard maximum given at init, so code that accumulates
 * outside input (request bodies, downloads, JSON output) cannot be made to
 * grow without bound; hitting the limit is IMS_ERR_TOO_LARGE, not a crash.
 * Init cannot fail: memory is taken on the first append.
 */
#include "imgsearch/base.h"

#include <stdio.h>
#include <string.h>

void ims_buf_init(struct ims_buf *b, size_t max_bytes)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max_bytes = max_bytes;
}

void ims_buf_fini(struct ims_buf *b)
{
    ims_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void ims_buf_reset(struct ims_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static enum ims_status buf_reserve(struct ims_buf *b, size_t extra)
{
    size_t need;
    if (ims_size_add(b->len, extra, &need) != 0 || need > b->max_bytes)
        return IMS_ERR_TOO_LARGE;
    if (need + 1 <= b->cap)
        return IMS_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need + 1)
        cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
    if (cap > b->max_bytes + 1)
        cap = b->max_bytes + 1;
    char *p = ims_realloc(b->data, cap);
    if (!p)
        return IMS_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return IMS_OK;
}

enum ims_status ims_buf_append(struct ims_buf *b, const void *p, size_t n)
{
    enum ims_status st = buf_reserve(b, n);
    if (st != IMS_OK)
        return st;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return IMS_OK;
}

enum ims_status ims_buf_printf(struct ims_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return IMS_ERR_INVALID;
    enum ims_status st = buf_reserve(b, (size_t)n);
    if (st != IMS_OK)
        return st;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return IMS_OK;
}

char *ims_buf_steal(struct ims_buf *b, size_t *len_out)
{
    char *p = b->data;
    if (!p)
        p = ims_strndup("", 0);
    if (len_out)
        *len_out = p ? b->len : 0;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
