/*
 * QemuLockCnt on a pthread mutex and an atomic counter.
 *
 * QEMU packs the mutex state into the counter word and uses futexes; this
 * version keeps a separate mutex, which is simpler to verify and costs one
 * uncontended lock/unlock only when a walk starts from zero.
 */
#include "lockcnt.h"

#include "atomic.h"

void qemu_lockcnt_init(QemuLockCnt *lockcnt)
{
    pthread_mutex_init(&lockcnt->mutex, NULL);
    lockcnt->count = 0;
}

void qemu_lockcnt_destroy(QemuLockCnt *lockcnt)
{
    pthread_mutex_destroy(&lockcnt->mutex);
}

void qemu_lockcnt_inc(QemuLockCnt *lockcnt)
{
    unsigned old = qatomic_read(&lockcnt->count);

    /* Another walker is active: no writer can be freeing, join it. */
    while (old != 0) {
        if (__atomic_compare_exchange_n(&lockcnt->count, &old, old + 1, true,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            return;
        }
    }
    /* Wait for a writer that saw zero to finish freeing. */
    pthread_mutex_lock(&lockcnt->mutex);
    qatomic_inc(&lockcnt->count);
    pthread_mutex_unlock(&lockcnt->mutex);
}

void qemu_lockcnt_dec(QemuLockCnt *lockcnt)
{
    qatomic_dec(&lockcnt->count);
}

bool qemu_lockcnt_dec_and_lock(QemuLockCnt *lockcnt)
{
    unsigned val = qatomic_read(&lockcnt->count);

    while (val > 1) {
        if (__atomic_compare_exchange_n(&lockcnt->count, &val, val - 1, true,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
            return false;
        }
    }
    pthread_mutex_lock(&lockcnt->mutex);
    if (qatomic_fetch_sub(&lockcnt->count, 1) == 1) {
        return true;
    }
    pthread_mutex_unlock(&lockcnt->mutex);
    return false;
}

bool qemu_lockcnt_dec_if_lock(QemuLockCnt *lockcnt)
{
    unsigned val = qatomic_read(&lockcnt->count);

    if (val > 1) {
        return false;
    }
    pthread_mutex_lock(&lockcnt->mutex);
    /* A CAS, because walkers join a non-zero count without the mutex. */
    val = 1;
    if (__atomic_compare_exchange_n(&lockcnt->count, &val, 0, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
        return true;
    }
    pthread_mutex_unlock(&lockcnt->mutex);
    return false;
}

void qemu_lockcnt_lock(QemuLockCnt *lockcnt)
{
    pthread_mutex_lock(&lockcnt->mutex);
}

void qemu_lockcnt_unlock(QemuLockCnt *lockcnt)
{
    pthread_mutex_unlock(&lockcnt->mutex);
}

void qemu_lockcnt_inc_and_unlock(QemuLockCnt *lockcnt)
{
    qatomic_inc(&lockcnt->count);
    pthread_mutex_unlock(&lockcnt->mutex);
}

unsigned qemu_lockcnt_count(QemuLockCnt *lockcnt)
{
    /*
     * Acquire pairs with the walkers' decrement: a writer that sees zero
     * and frees a node must happen after the last walker's reads of it.
     */
    return qatomic_load_acquire(&lockcnt->count);
}
