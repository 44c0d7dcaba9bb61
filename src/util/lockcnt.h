/*
 * QemuLockCnt: a counter of concurrent list walkers plus a mutex for
 * writers, with QEMU's qemu/lockcnt.h semantics.
 *
 * Walkers increment the count while they traverse; a writer that holds the
 * mutex may free an element it unlinked only when the count is zero,
 * otherwise it defers the free to the last walker.  A walker that finds the
 * count at zero takes the mutex to increment it, so it cannot start while a
 * writer that saw zero is still freeing.
 */
#ifndef AIOLOOP_LOCKCNT_H
#define AIOLOOP_LOCKCNT_H

#include <pthread.h>
#include <stdbool.h>

typedef struct QemuLockCnt {
    pthread_mutex_t mutex;
    unsigned count; /* atomic; changes 0 <-> 1 only with mutex held */
} QemuLockCnt;

void qemu_lockcnt_init(QemuLockCnt *lockcnt);
void qemu_lockcnt_destroy(QemuLockCnt *lockcnt);
void qemu_lockcnt_inc(QemuLockCnt *lockcnt);
void qemu_lockcnt_dec(QemuLockCnt *lockcnt);
/* Decrement; if the count reaches zero return true with the mutex held. */
bool qemu_lockcnt_dec_and_lock(QemuLockCnt *lockcnt);
/* If the count is exactly one, make it zero and return true with the mutex held. */
bool qemu_lockcnt_dec_if_lock(QemuLockCnt *lockcnt);
void qemu_lockcnt_lock(QemuLockCnt *lockcnt);
void qemu_lockcnt_unlock(QemuLockCnt *lockcnt);
void qemu_lockcnt_inc_and_unlock(QemuLockCnt *lockcnt);
unsigned qemu_lockcnt_count(QemuLockCnt *lockcnt);

#endif
