/*
 * aioloop: QemuLockable, "any lock" as one argument.
 *
 * QEMU's include/qemu/lockable.h: a QemuLockable bundles a lock object with
 * its lock and unlock functions so that code such as qemu_co_queue_wait()
 * can drop and retake whatever lock the caller holds.  QEMU_MAKE_LOCKABLE(x)
 * picks the functions from the type of @x with _Generic: a CoMutex *, a
 * pthread_mutex_t *, a QemuLockable * (passed through) or NULL (no lock).
 *
 * The _Generic macros are C only; C++ callers build a QemuLockable with
 * qemu_make_lockable() and the explicit functions.
 */
#ifndef AIOLOOP_LOCKABLE_H
#define AIOLOOP_LOCKABLE_H

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include <aioloop/compiler.h>

AIOLOOP_BEGIN_DECLS

typedef struct CoMutex CoMutex;
typedef void QemuLockUnlockFunc(void *);

/**
 * QemuLockable: a lock and the functions that take and drop it.
 * @object: the lock.
 * @lock: takes @object; for a CoMutex it may yield (coroutine context).
 * @unlock: drops @object.
 */
typedef struct QemuLockable {
    void *object;
    QemuLockUnlockFunc *lock;
    QemuLockUnlockFunc *unlock;
} QemuLockable;

/**
 * aioloop_lockable_co_mutex_lock: qemu_co_mutex_lock() with a void * argument,
 * for QemuLockable.  Coroutine context only.
 * @mutex: a CoMutex.
 */
AIOLOOP_API void aioloop_lockable_co_mutex_lock(void *mutex);

/**
 * aioloop_lockable_co_mutex_unlock: qemu_co_mutex_unlock() with a void *
 * argument, for QemuLockable.  Coroutine context only.
 * @mutex: a CoMutex.
 */
AIOLOOP_API void aioloop_lockable_co_mutex_unlock(void *mutex);

/**
 * aioloop_lockable_pthread_mutex_lock: pthread_mutex_lock() for QemuLockable;
 * aborts with a message if it fails (e.g. EDEADLK on an error-checking
 * mutex).
 * @mutex: a pthread_mutex_t.
 */
AIOLOOP_API void aioloop_lockable_pthread_mutex_lock(void *mutex);

/**
 * aioloop_lockable_pthread_mutex_unlock: pthread_mutex_unlock() for
 * QemuLockable; aborts with a message if it fails (EPERM: not the owner).
 * @mutex: a pthread_mutex_t.
 */
AIOLOOP_API void aioloop_lockable_pthread_mutex_unlock(void *mutex);

/* Build a QemuLockable by value; NULL @object gives a NULL-object lockable. */
static inline QemuLockable qemu_make_lockable(void *object,
                                              QemuLockUnlockFunc *lock,
                                              QemuLockUnlockFunc *unlock)
{
    QemuLockable l;

    l.object = object;
    l.lock = lock;
    l.unlock = unlock;
    return l;
}

/* Take @l's lock; a NULL @l (no lock) does nothing. */
static inline void qemu_lockable_lock(QemuLockable *l)
{
    if (l) {
        l->lock(l->object);
    }
}

/* Drop @l's lock; a NULL @l (no lock) does nothing. */
static inline void qemu_lockable_unlock(QemuLockable *l)
{
    if (l) {
        l->unlock(l->object);
    }
}

#ifndef __cplusplus
/* A lockable whose object is NULL stands for "no lock". */
static inline QemuLockable *qemu_lockable_or_null_(QemuLockable *l)
{
    return l->object ? l : NULL;
}

/* An untyped pointer may only be NULL: "no lock". */
static inline QemuLockable *qemu_null_lockable_(void *x)
{
    if (x) {
        abort();  /* pass a typed lock, not a void * */
    }
    return (QemuLockable *)0;
}

/*
 * QEMU_MAKE_LOCKABLE(x): a QemuLockable * for @x, or NULL when @x is NULL.
 * The temporary lives until the end of the enclosing block, which covers
 * every use as a function argument.
 */
#define QEMU_MAKE_LOCKABLE_(x, lockfn, unlockfn)                             \
    qemu_lockable_or_null_(&(QemuLockable){ (void *)(x), (lockfn),           \
                                            (unlockfn) })

#define QEMU_MAKE_LOCKABLE(x)                                                \
    _Generic((x),                                                            \
        QemuLockable *: (x),                                                 \
        void *: qemu_null_lockable_((void *)(x)),                            \
        CoMutex *: QEMU_MAKE_LOCKABLE_((x), aioloop_lockable_co_mutex_lock,  \
                                       aioloop_lockable_co_mutex_unlock),    \
        pthread_mutex_t *: QEMU_MAKE_LOCKABLE_((x),                          \
                                aioloop_lockable_pthread_mutex_lock,         \
                                aioloop_lockable_pthread_mutex_unlock))

/*
 * Same without the NULL check, for a lock known to exist (QEMU's
 * QEMU_MAKE_LOCKABLE_NONNULL).
 */
#define QEMU_MAKE_LOCKABLE_NONNULL(x)                                        \
    _Generic((x),                                                            \
        QemuLockable *: (x),                                                 \
        CoMutex *: &(QemuLockable){ (void *)(x),                             \
                                    aioloop_lockable_co_mutex_lock,          \
                                    aioloop_lockable_co_mutex_unlock },      \
        pthread_mutex_t *: &(QemuLockable){ (void *)(x),                     \
                                    aioloop_lockable_pthread_mutex_lock,     \
                                    aioloop_lockable_pthread_mutex_unlock })
#endif

AIOLOOP_END_DECLS

#endif
