/* SPDX-License-Identifier: MIT */
/*
 * file.c: whole-file reads with a size limit, atomic writes, mkdir -p.
 *
 * Atomic write = write a temp file next to the target, fsync it, rename it
 * over the target, fsync the folder: a crash leaves either the old or the
 * new content, never a mix. The index snapshot and model downloads rely on it.
 */

#include "imgsearch/base.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum ims_status ims_file_read(const char *path, size_t max_bytes, char **data, size_t *len,
                              struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ims_error_set(err, errno == ENOENT ? IMS_ERR_NOT_FOUND : IMS_ERR_IO,
                             "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
        goto out;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = ims_error_set(err, IMS_ERR_INVALID, "%s is a folder, not a file", path);
        goto out;
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        st = ims_error_set(err, IMS_ERR_TOO_LARGE, "%s is %lld bytes, over the limit of %zu",
                           path, (long long)sb.st_size, max_bytes);
        goto out;
    }
    size_t cap = (size_t)sb.st_size + 1, n = 0;
    buf = ims_malloc(cap);
    if (!buf) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory reading %s", path);
        goto out;
    }
    for (;;) {
        if (n + 1 == cap) { /* the file grew or is a pipe: grow up to the limit */
            if (cap - 1 >= max_bytes) {
                char probe;
                ssize_t r = read(fd, &probe, 1);
                if (r > 0) {
                    st = ims_error_set(err, IMS_ERR_TOO_LARGE, "%s exceeds the limit of %zu bytes",
                                       path, max_bytes);
                    goto out;
                }
                break;
            }
            size_t ncap = IMS_MIN(cap * 2, max_bytes + 1);
            char *p = ims_realloc(buf, ncap);
            if (!p) {
                st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory reading %s", path);
                goto out;
            }
            buf = p;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            st = ims_error_set(err, IMS_ERR_IO, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    buf = NULL;
out:
    ims_free(buf);
    close(fd);
    return st;
}

enum ims_status ims_file_write_atomic(const char *path, const void *data, size_t len,
                                      struct ims_error *err)
{
    enum ims_status st = IMS_OK;
    size_t plen = strlen(path);
    char *tmp = ims_malloc(plen + 32);
    char *dir = ims_strdup(path);
    int fd = -1;
    if (!tmp || !dir) {
        st = ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            st = ims_error_set(err, IMS_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot fsync %s: %s", tmp, strerror(errno));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        st = ims_error_set(err, IMS_ERR_IO, "cannot rename %s to %s: %s", tmp, path,
                           strerror(errno));
        goto out;
    }
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    } else if (st != IMS_OK && tmp) {
        unlink(tmp);
    }
    ims_free(tmp);
    ims_free(dir);
    return st;
}

enum ims_status ims_mkdir_p(const char *path, struct ims_error *err)
{
    char *p = ims_strdup(path);
    if (!p)
        return ims_error_set(err, IMS_ERR_NOMEM, "out of memory");
    enum ims_status st = IMS_OK;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                st = ims_error_set(err, IMS_ERR_IO, "cannot create folder %s: %s", p,
                                   strerror(errno));
                break;
            }
            *s = c;
            if (c == '\0')
                break;
        }
    }
    ims_free(p);
    return st;
}
