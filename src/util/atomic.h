/*
 * Atomics with QEMU's qemu/atomic.h names, on the GCC/Clang builtins.
 *
 * qatomic_read/qatomic_set are relaxed (they only prevent tearing);
 * ordering is always explicit, with a barrier or an _acquire/_release
 * variant, and each use says what it pairs with.
 */
#ifndef AIOLOOP_ATOMIC_H
#define AIOLOOP_ATOMIC_H

#define qatomic_read(ptr) __atomic_load_n(ptr, __ATOMIC_RELAXED)
#define qatomic_set(ptr, i) __atomic_store_n(ptr, i, __ATOMIC_RELAXED)
#define qatomic_load_acquire(ptr) __atomic_load_n(ptr, __ATOMIC_ACQUIRE)
#define qatomic_store_release(ptr, i) __atomic_store_n(ptr, i, __ATOMIC_RELEASE)
#define qatomic_xchg(ptr, i) __atomic_exchange_n(ptr, i, __ATOMIC_SEQ_CST)
#define qatomic_fetch_or(ptr, n) __atomic_fetch_or(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_fetch_and(ptr, n) __atomic_fetch_and(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_fetch_add(ptr, n) __atomic_fetch_add(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_fetch_sub(ptr, n) __atomic_fetch_sub(ptr, n, __ATOMIC_SEQ_CST)
#define qatomic_inc(ptr) ((void)__atomic_fetch_add(ptr, 1, __ATOMIC_SEQ_CST))
#define qatomic_dec(ptr) ((void)__atomic_fetch_sub(ptr, 1, __ATOMIC_SEQ_CST))
#define qatomic_cmpxchg(ptr, old, new_)                                     \
    ({                                                                      \
        __typeof__(*(ptr)) old_ = (old);                                    \
        __atomic_compare_exchange_n(ptr, &old_, new_, false,                \
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);    \
        old_;                                                               \
    })

#define smp_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define smp_mb_release() __atomic_thread_fence(__ATOMIC_RELEASE)
#define smp_mb_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define smp_wmb() smp_mb_release()
#define smp_rmb() smp_mb_acquire()

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
#define ARRAY_SIZE(x) (sizeof(x) / sizeof((x)[0]))
#define container_of(ptr, type, member)                                     \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
