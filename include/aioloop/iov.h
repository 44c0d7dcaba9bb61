/*
 * aioloop: QEMUIOVector and iovec helpers
 *
 * QEMU's include/qemu/iov.h: a growable (or borrowed) array of struct iovec
 * with its total size, used by the block I/O engines.  The names,
 * signatures and semantics are QEMU's; the iov_* helpers work on plain
 * iovec arrays.
 *
 * Byte counts past the end of a vector are not an error for the copy
 * helpers: they copy what is there and return how much that was, as QEMU's
 * iov_to_buf() does.  Growing a vector that does not own its array (from
 * qemu_iovec_init_external() or qemu_iovec_init_buf()) aborts with a
 * message, as QEMU's assertion does.
 */
#ifndef AIOLOOP_IOV_H
#define AIOLOOP_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include <aioloop/compiler.h>

AIOLOOP_BEGIN_DECLS

/**
 * QEMUIOVector: a scatter/gather list.
 * @iov: the array (owned when @nalloc >= 0)
 * @niov: entries in use
 * @nalloc: entries allocated, or -1 when @iov is borrowed (external array,
 *          or @local_iov)
 * @local_iov: the single entry of qemu_iovec_init_buf()
 * @size: sum of the lengths of the @niov entries
 */
typedef struct QEMUIOVector {
    struct iovec *iov;
    int niov;
    int nalloc;
    struct iovec local_iov;
    size_t size;
} QEMUIOVector;

/**
 * iov_size: Sum of the lengths of @iov_cnt entries.
 */
AIOLOOP_API size_t iov_size(const struct iovec *iov, unsigned int iov_cnt);

/**
 * iov_from_buf: Copy @bytes from @buf into the vector, starting @offset
 * bytes into it.
 *
 * Returns: the number of bytes copied (less than @bytes when the vector
 * ends first).
 */
AIOLOOP_API size_t iov_from_buf(const struct iovec *iov, unsigned int iov_cnt,
                                size_t offset, const void *buf, size_t bytes);

/**
 * iov_to_buf: Copy @bytes out of the vector, starting @offset bytes into
 * it, to @buf.
 *
 * Returns: the number of bytes copied.
 */
AIOLOOP_API size_t iov_to_buf(const struct iovec *iov, unsigned int iov_cnt,
                              size_t offset, void *buf, size_t bytes);

/**
 * iov_memset: Set @bytes of the vector, from @offset, to @fillc.
 *
 * Returns: the number of bytes set.
 */
AIOLOOP_API size_t iov_memset(const struct iovec *iov, unsigned int iov_cnt,
                              size_t offset, int fillc, size_t bytes);

/**
 * qemu_iovec_init: Make @qiov an empty, growable vector.
 * @alloc_hint: entries to allocate up front (0 is fine)
 *
 * Aborts when memory runs out, like every allocation in aioloop.
 */
AIOLOOP_API void qemu_iovec_init(QEMUIOVector *qiov, int alloc_hint);

/**
 * qemu_iovec_init_external: Wrap an existing array of @niov entries.
 *
 * @qiov borrows @iov: it never frees or grows it.
 */
AIOLOOP_API void qemu_iovec_init_external(QEMUIOVector *qiov,
                                          struct iovec *iov, int niov);

/**
 * qemu_iovec_init_buf: Make @qiov a one-entry vector over @buf.
 *
 * No allocation: the entry lives inside @qiov.  Do not copy such a vector
 * by value (its @iov points into itself).
 */
AIOLOOP_API void qemu_iovec_init_buf(QEMUIOVector *qiov, void *buf,
                                     size_t len);

/**
 * qemu_iovec_buf: The buffer of a vector made by qemu_iovec_init_buf().
 */
AIOLOOP_API void *qemu_iovec_buf(QEMUIOVector *qiov);

/**
 * qemu_iovec_add: Append an entry (@len may be 0; it still counts).
 *
 * Only for vectors from qemu_iovec_init(); aborts on a borrowed one.
 */
AIOLOOP_API void qemu_iovec_add(QEMUIOVector *qiov, void *base, size_t len);

/**
 * qemu_iovec_concat: Append to @dst the entries covering @sbytes of @src
 * from offset @soffset (the memory is shared, not copied).
 */
AIOLOOP_API void qemu_iovec_concat(QEMUIOVector *dst, QEMUIOVector *src,
                                   size_t soffset, size_t sbytes);

/**
 * qemu_iovec_concat_iov: qemu_iovec_concat() from a plain iovec array.
 *
 * Returns: the number of bytes appended.
 */
AIOLOOP_API size_t qemu_iovec_concat_iov(QEMUIOVector *dst,
                                         struct iovec *src_iov,
                                         unsigned int src_cnt,
                                         size_t soffset, size_t sbytes);

/**
 * qemu_iovec_init_slice: Make @qiov a new growable vector covering @len
 * bytes of @source from @offset (shared memory).
 */
AIOLOOP_API void qemu_iovec_init_slice(QEMUIOVector *qiov,
                                       QEMUIOVector *source, size_t offset,
                                       size_t len);

/**
 * qemu_iovec_is_zero: True if @bytes of @qiov from @offset are all zero.
 */
AIOLOOP_API bool qemu_iovec_is_zero(QEMUIOVector *qiov, size_t offset,
                                    size_t bytes);

/**
 * qemu_iovec_destroy: Free an owned array and leave @qiov empty.
 *
 * A borrowed vector is only emptied.
 */
AIOLOOP_API void qemu_iovec_destroy(QEMUIOVector *qiov);

/**
 * qemu_iovec_reset: Drop every entry, keeping the allocation.
 *
 * Only for vectors from qemu_iovec_init(); aborts on a borrowed one.
 */
AIOLOOP_API void qemu_iovec_reset(QEMUIOVector *qiov);

/**
 * qemu_iovec_to_buf: iov_to_buf() on @qiov.
 */
AIOLOOP_API size_t qemu_iovec_to_buf(QEMUIOVector *qiov, size_t offset,
                                     void *buf, size_t bytes);

/**
 * qemu_iovec_from_buf: iov_from_buf() on @qiov.
 */
AIOLOOP_API size_t qemu_iovec_from_buf(QEMUIOVector *qiov, size_t offset,
                                       const void *buf, size_t bytes);

/**
 * qemu_iovec_memset: iov_memset() on @qiov.
 */
AIOLOOP_API size_t qemu_iovec_memset(QEMUIOVector *qiov, size_t offset,
                                     int fillc, size_t bytes);

/**
 * qemu_iovec_compare: Compare the contents of two vectors of equal size.
 *
 * Returns: the offset of the first differing byte, or -1 if none differs.
 */
AIOLOOP_API ssize_t qemu_iovec_compare(QEMUIOVector *a, QEMUIOVector *b);

/**
 * qemu_iovec_discard_back: Drop the last @bytes (at most @qiov->size).
 *
 * Entries are shortened or dropped; owned memory is not freed.
 */
AIOLOOP_API void qemu_iovec_discard_back(QEMUIOVector *qiov, size_t bytes);

AIOLOOP_END_DECLS

#endif
