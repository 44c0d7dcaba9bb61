/*
 * QEMUIOVector and the iov_* helpers (QEMU's util/iov.c semantics).
 */
#include <aioloop/error.h>
#include <aioloop/iov.h>

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* Visit [offset, offset + bytes) of the vector, one contiguous piece at a time. */
typedef void IovVisit(void *base, size_t len, size_t done, void *opaque);

static size_t iov_walk(const struct iovec *iov, unsigned int iov_cnt,
                       size_t offset, size_t bytes, IovVisit *visit,
                       void *opaque)
{
    size_t done = 0;

    for (unsigned int i = 0; i < iov_cnt && done < bytes; i++) {
        size_t len;

        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        len = MIN(iov[i].iov_len - offset, bytes - done);
        visit((char *)iov[i].iov_base + offset, len, done, opaque);
        done += len;
        offset = 0;
    }
    return done;
}

size_t iov_size(const struct iovec *iov, unsigned int iov_cnt)
{
    size_t len = 0;

    for (unsigned int i = 0; i < iov_cnt; i++) {
        len += iov[i].iov_len;
    }
    return len;
}

static void visit_from_buf(void *base, size_t len, size_t done, void *opaque)
{
    memcpy(base, (const char *)opaque + done, len);
}

size_t iov_from_buf(const struct iovec *iov, unsigned int iov_cnt,
                    size_t offset, const void *buf, size_t bytes)
{
    return iov_walk(iov, iov_cnt, offset, bytes, visit_from_buf, (void *)buf);
}

static void visit_to_buf(void *base, size_t len, size_t done, void *opaque)
{
    memcpy((char *)opaque + done, base, len);
}

size_t iov_to_buf(const struct iovec *iov, unsigned int iov_cnt,
                  size_t offset, void *buf, size_t bytes)
{
    return iov_walk(iov, iov_cnt, offset, bytes, visit_to_buf, buf);
}

static void visit_memset(void *base, size_t len, size_t done, void *opaque)
{
    (void)done;
    memset(base, *(int *)opaque, len);
}

size_t iov_memset(const struct iovec *iov, unsigned int iov_cnt,
                  size_t offset, int fillc, size_t bytes)
{
    return iov_walk(iov, iov_cnt, offset, bytes, visit_memset, &fillc);
}

/* ---- QEMUIOVector ------------------------------------------------------ */

static void iov_oom(void)
{
    error_report("QEMUIOVector: out of memory");
    abort();
}

static void check_owned(QEMUIOVector *qiov, const char *fn)
{
    if (qiov->nalloc < 0) {
        error_report("%s: the vector borrows its array (qemu_iovec_init_"
                     "external or qemu_iovec_init_buf); only vectors from "
                     "qemu_iovec_init() can change their entries", fn);
        abort();
    }
}

void qemu_iovec_init(QEMUIOVector *qiov, int alloc_hint)
{
    memset(qiov, 0, sizeof(*qiov));
    if (alloc_hint > 0) {
        qiov->iov = calloc((size_t)alloc_hint, sizeof(struct iovec));
        if (!qiov->iov) {
            iov_oom();
        }
        qiov->nalloc = alloc_hint;
    }
}

void qemu_iovec_init_external(QEMUIOVector *qiov, struct iovec *iov, int niov)
{
    memset(qiov, 0, sizeof(*qiov));
    qiov->iov = iov;
    qiov->niov = niov;
    qiov->nalloc = -1;
    qiov->size = iov_size(iov, (unsigned int)niov);
}

void qemu_iovec_init_buf(QEMUIOVector *qiov, void *buf, size_t len)
{
    memset(qiov, 0, sizeof(*qiov));
    qiov->local_iov.iov_base = buf;
    qiov->local_iov.iov_len = len;
    qiov->iov = &qiov->local_iov;
    qiov->niov = 1;
    qiov->nalloc = -1;
    qiov->size = len;
}

void *qemu_iovec_buf(QEMUIOVector *qiov)
{
    if (qiov->iov != &qiov->local_iov) {
        error_report("qemu_iovec_buf: the vector was not made by "
                     "qemu_iovec_init_buf()");
        abort();
    }
    return qiov->local_iov.iov_base;
}

void qemu_iovec_add(QEMUIOVector *qiov, void *base, size_t len)
{
    check_owned(qiov, "qemu_iovec_add");
    if (qiov->niov == qiov->nalloc) {
        int nalloc = qiov->nalloc ? qiov->nalloc * 2 : 1;
        struct iovec *iov;

        if (qiov->nalloc > INT_MAX / 2) {
            iov_oom();
        }
        iov = realloc(qiov->iov, (size_t)nalloc * sizeof(*iov));
        if (!iov) {
            iov_oom();
        }
        qiov->iov = iov;
        qiov->nalloc = nalloc;
    }
    qiov->iov[qiov->niov].iov_base = base;
    qiov->iov[qiov->niov].iov_len = len;
    qiov->niov++;
    qiov->size += len;
}

size_t qemu_iovec_concat_iov(QEMUIOVector *dst, struct iovec *src_iov,
                             unsigned int src_cnt, size_t soffset,
                             size_t sbytes)
{
    size_t done = 0;

    if (!sbytes) {
        return 0;
    }
    check_owned(dst, "qemu_iovec_concat");
    for (unsigned int i = 0; i < src_cnt && done < sbytes; i++) {
        size_t len;

        if (soffset >= src_iov[i].iov_len) {
            soffset -= src_iov[i].iov_len;
            continue;
        }
        len = MIN(src_iov[i].iov_len - soffset, sbytes - done);
        qemu_iovec_add(dst, (char *)src_iov[i].iov_base + soffset, len);
        done += len;
        soffset = 0;
    }
    return done;
}

void qemu_iovec_concat(QEMUIOVector *dst, QEMUIOVector *src, size_t soffset,
                       size_t sbytes)
{
    qemu_iovec_concat_iov(dst, src->iov, (unsigned int)src->niov, soffset,
                          sbytes);
}

void qemu_iovec_init_slice(QEMUIOVector *qiov, QEMUIOVector *source,
                           size_t offset, size_t len)
{
    qemu_iovec_init(qiov, 0);
    qemu_iovec_concat(qiov, source, offset, len);
}

bool qemu_iovec_is_zero(QEMUIOVector *qiov, size_t offset, size_t bytes)
{
    for (int i = 0; i < qiov->niov && bytes; i++) {
        const unsigned char *p;
        size_t len;

        if (offset >= qiov->iov[i].iov_len) {
            offset -= qiov->iov[i].iov_len;
            continue;
        }
        p = (const unsigned char *)qiov->iov[i].iov_base + offset;
        len = MIN(qiov->iov[i].iov_len - offset, bytes);
        /* p[0] == 0 and p[0..len-1] == p[1..len] means all zero. */
        if (len && (p[0] || memcmp(p, p + 1, len - 1))) {
            return false;
        }
        bytes -= len;
        offset = 0;
    }
    return true;
}

void qemu_iovec_destroy(QEMUIOVector *qiov)
{
    if (qiov->nalloc > 0) {
        free(qiov->iov);
    }
    memset(qiov, 0, sizeof(*qiov));
}

void qemu_iovec_reset(QEMUIOVector *qiov)
{
    check_owned(qiov, "qemu_iovec_reset");
    qiov->niov = 0;
    qiov->size = 0;
}

size_t qemu_iovec_to_buf(QEMUIOVector *qiov, size_t offset, void *buf,
                         size_t bytes)
{
    return iov_to_buf(qiov->iov, (unsigned int)qiov->niov, offset, buf, bytes);
}

size_t qemu_iovec_from_buf(QEMUIOVector *qiov, size_t offset, const void *buf,
                           size_t bytes)
{
    return iov_from_buf(qiov->iov, (unsigned int)qiov->niov, offset, buf,
                        bytes);
}

size_t qemu_iovec_memset(QEMUIOVector *qiov, size_t offset, int fillc,
                         size_t bytes)
{
    return iov_memset(qiov->iov, (unsigned int)qiov->niov, offset, fillc,
                      bytes);
}

ssize_t qemu_iovec_compare(QEMUIOVector *a, QEMUIOVector *b)
{
    int ia = 0, ib = 0;
    size_t oa = 0, ob = 0, pos = 0;

    if (a->size != b->size) {
        error_report("qemu_iovec_compare: vectors of different sizes "
                     "(%zu and %zu bytes)", a->size, b->size);
        abort();
    }
    /* Walk both vectors in step, one common run at a time. */
    while (ia < a->niov && ib < b->niov) {
        size_t la = a->iov[ia].iov_len - oa;
        size_t lb = b->iov[ib].iov_len - ob;
        size_t len = MIN(la, lb);
        const unsigned char *pa = (const unsigned char *)a->iov[ia].iov_base + oa;
        const unsigned char *pb = (const unsigned char *)b->iov[ib].iov_base + ob;

        if (len && memcmp(pa, pb, len)) {
            for (size_t k = 0; k < len; k++) {
                if (pa[k] != pb[k]) {
                    return (ssize_t)(pos + k);
                }
            }
        }
        pos += len;
        oa += len;
        ob += len;
        if (oa == a->iov[ia].iov_len) {
            ia++;
            oa = 0;
        }
        if (ob == b->iov[ib].iov_len) {
            ib++;
            ob = 0;
        }
    }
    return -1;
}

void qemu_iovec_discard_back(QEMUIOVector *qiov, size_t bytes)
{
    if (bytes > qiov->size) {
        error_report("qemu_iovec_discard_back: %zu bytes from a %zu-byte "
                     "vector", bytes, qiov->size);
        abort();
    }
    qiov->size -= bytes;
    while (bytes) {
        struct iovec *last = &qiov->iov[qiov->niov - 1];

        if (last->iov_len > bytes) {
            last->iov_len -= bytes;
            break;
        }
        bytes -= last->iov_len;
        qiov->niov--;
    }
}
