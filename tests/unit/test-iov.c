/*
 * QEMUIOVector and iov_* helpers: sizes, copies across entries and past
 * the end, borrowed vectors (and the aborts when one is grown), slices
 * sharing memory, compare/is_zero/discard_back, and a randomized check of
 * every copy helper against a flat buffer.
 */
#define _GNU_SOURCE

#include <aioloop/iov.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* Split buf[0..len) into entries of 1..max bytes, pseudo-randomly. */
static void split(QEMUIOVector *qiov, unsigned char *buf, size_t len,
                  unsigned *seed, size_t max)
{
    size_t off = 0;

    qemu_iovec_init(qiov, 0);
    while (off < len) {
        size_t n = 1 + (size_t)rand_r(seed) % max;

        if (n > len - off) {
            n = len - off;
        }
        qemu_iovec_add(qiov, buf + off, n);
        off += n;
    }
}

TEST(add_grows_and_tracks_size)
{
    QEMUIOVector qiov;
    char a[3], b[5], c[7];

    qemu_iovec_init(&qiov, 1);
    ASSERT_INT(qiov.niov, ==, 0);
    ASSERT_UINT(qiov.size, ==, 0);
    qemu_iovec_add(&qiov, a, sizeof(a));
    qemu_iovec_add(&qiov, b, sizeof(b));
    qemu_iovec_add(&qiov, c, 0);
    qemu_iovec_add(&qiov, c, sizeof(c));
    ASSERT_INT(qiov.niov, ==, 4);
    ASSERT_INT(qiov.nalloc, >=, 4);
    ASSERT_UINT(qiov.size, ==, 15);
    ASSERT_UINT(iov_size(qiov.iov, (unsigned)qiov.niov), ==, 15);
    ASSERT_PTR_EQ(qiov.iov[1].iov_base, b);

    qemu_iovec_reset(&qiov);
    ASSERT_INT(qiov.niov, ==, 0);
    ASSERT_UINT(qiov.size, ==, 0);
    qemu_iovec_add(&qiov, a, 2);
    ASSERT_UINT(qiov.size, ==, 2);
    qemu_iovec_destroy(&qiov);
    ASSERT_PTR_EQ(qiov.iov, NULL);
    ASSERT_INT(qiov.niov, ==, 0);
}

TEST(copies_cross_entries_and_stop_at_the_end)
{
    unsigned char data[10], out[16];
    QEMUIOVector qiov;

    memset(data, 0, sizeof(data));
    qemu_iovec_init(&qiov, 0);
    qemu_iovec_add(&qiov, data, 4);
    qemu_iovec_add(&qiov, data + 4, 6);

    ASSERT_UINT(qemu_iovec_from_buf(&qiov, 2, "abcdef", 6), ==, 6);
    ASSERT_MEM_EQ(data, "\0\0abcdef\0\0", 10);
    ASSERT_UINT(qemu_iovec_to_buf(&qiov, 3, out, 4), ==, 4);
    ASSERT_MEM_EQ(out, "bcde", 4);
    /* Past the end: what is there, and how much. */
    ASSERT_UINT(qemu_iovec_from_buf(&qiov, 8, "XYZ", 3), ==, 2);
    ASSERT_MEM_EQ(data + 8, "XY", 2);
    ASSERT_UINT(qemu_iovec_to_buf(&qiov, 7, out, sizeof(out)), ==, 3);
    ASSERT_UINT(qemu_iovec_to_buf(&qiov, 10, out, 1), ==, 0);
    ASSERT_UINT(qemu_iovec_to_buf(&qiov, 99, out, 1), ==, 0);
    ASSERT_UINT(qemu_iovec_memset(&qiov, 1, 'z', 4), ==, 4);
    ASSERT_MEM_EQ(data, "\0zzzzdef", 8);
    ASSERT_UINT(qemu_iovec_memset(&qiov, 9, 'q', 5), ==, 1);
    ASSERT_INT(data[9], ==, 'q');
    qemu_iovec_destroy(&qiov);
}

TEST(external_and_buf_vectors_borrow)
{
    char x[4] = "wxyz", y[2] = "12";
    struct iovec iov[2] = { { x, sizeof(x) }, { y, sizeof(y) } };
    QEMUIOVector ext, one;
    char out[6];

    qemu_iovec_init_external(&ext, iov, 2);
    ASSERT_UINT(ext.size, ==, 6);
    ASSERT_INT(ext.niov, ==, 2);
    ASSERT_UINT(qemu_iovec_to_buf(&ext, 0, out, 6), ==, 6);
    ASSERT_MEM_EQ(out, "wxyz12", 6);
    /* Destroying a borrowed vector frees nothing (ASan would object). */
    qemu_iovec_destroy(&ext);
    ASSERT_MEM_EQ(iov[0].iov_base, "wxyz", 4);

    qemu_iovec_init_buf(&one, x, sizeof(x));
    ASSERT_UINT(one.size, ==, 4);
    ASSERT_INT(one.niov, ==, 1);
    ASSERT_PTR_EQ(qemu_iovec_buf(&one), x);
    ASSERT_UINT(qemu_iovec_from_buf(&one, 1, "--", 2), ==, 2);
    ASSERT_MEM_EQ(x, "w--z", 4);
    qemu_iovec_destroy(&one);
}

static void add_to_external(void *opaque)
{
    char c;
    struct iovec iov = { &c, 1 };
    QEMUIOVector qiov;

    (void)opaque;
    qemu_iovec_init_external(&qiov, &iov, 1);
    qemu_iovec_add(&qiov, &c, 1);
}

static void reset_buf_vector(void *opaque)
{
    char c;
    QEMUIOVector qiov;

    (void)opaque;
    qemu_iovec_init_buf(&qiov, &c, 1);
    qemu_iovec_reset(&qiov);
}

static void buf_of_growable(void *opaque)
{
    QEMUIOVector qiov;

    (void)opaque;
    qemu_iovec_init(&qiov, 1);
    qemu_iovec_buf(&qiov);
}

static void discard_too_much(void *opaque)
{
    char c[2];
    QEMUIOVector qiov;

    (void)opaque;
    qemu_iovec_init_buf(&qiov, c, 2);
    qemu_iovec_discard_back(&qiov, 3);
}

static void compare_sizes_differ(void *opaque)
{
    char c[3];
    QEMUIOVector a, b;

    (void)opaque;
    qemu_iovec_init_buf(&a, c, 2);
    qemu_iovec_init_buf(&b, c, 3);
    qemu_iovec_compare(&a, &b);
}

TEST(misuse_aborts_with_a_message)
{
    test_expect_abort(add_to_external, NULL, "qemu_iovec_add: the vector "
                      "borrows its array");
    test_expect_abort(reset_buf_vector, NULL, "qemu_iovec_reset: the vector "
                      "borrows its array");
    test_expect_abort(buf_of_growable, NULL, "not made by qemu_iovec_init_buf");
    test_expect_abort(discard_too_much, NULL, "3 bytes from a 2-byte vector");
    test_expect_abort(compare_sizes_differ, NULL, "vectors of different sizes");
}

TEST(concat_and_slice_share_memory)
{
    unsigned char buf[32];
    QEMUIOVector src, dst, slice;
    unsigned seed = 7;
    unsigned char out[32];

    for (int i = 0; i < 32; i++) {
        buf[i] = (unsigned char)i;
    }
    split(&src, buf, sizeof(buf), &seed, 5);

    qemu_iovec_init(&dst, 0);
    qemu_iovec_concat(&dst, &src, 3, 10);
    qemu_iovec_concat(&dst, &src, 20, 100); /* clipped to the 12 left */
    ASSERT_UINT(dst.size, ==, 22);
    ASSERT_UINT(qemu_iovec_to_buf(&dst, 0, out, 22), ==, 22);
    for (int i = 0; i < 10; i++) {
        ASSERT_INT(out[i], ==, 3 + i);
    }
    for (int i = 0; i < 12; i++) {
        ASSERT_INT(out[10 + i], ==, 20 + i);
    }
    ASSERT_UINT(qemu_iovec_concat_iov(&dst, src.iov, (unsigned)src.niov, 31,
                                      5), ==, 1);
    ASSERT_UINT(dst.size, ==, 23);

    qemu_iovec_init_slice(&slice, &src, 8, 8);
    ASSERT_UINT(slice.size, ==, 8);
    qemu_iovec_memset(&slice, 0, 0xee, 8);
    for (int i = 0; i < 32; i++) {
        ASSERT_INT(buf[i], ==, i >= 8 && i < 16 ? 0xee : i);
    }
    qemu_iovec_destroy(&slice);
    qemu_iovec_destroy(&dst);
    qemu_iovec_destroy(&src);
}

TEST(compare_is_zero_discard_back)
{
    unsigned char x[40] = { 0 }, y[40] = { 0 };
    QEMUIOVector a, b;
    unsigned seed = 11;

    split(&a, x, sizeof(x), &seed, 7);
    split(&b, y, sizeof(y), &seed, 3);
    ASSERT_INT(qemu_iovec_compare(&a, &b), ==, -1);
    ASSERT_TRUE(qemu_iovec_is_zero(&a, 0, 40));
    y[29] = 1;
    ASSERT_INT(qemu_iovec_compare(&a, &b), ==, 29);
    ASSERT_FALSE(qemu_iovec_is_zero(&b, 0, 40));
    ASSERT_FALSE(qemu_iovec_is_zero(&b, 29, 1));
    ASSERT_TRUE(qemu_iovec_is_zero(&b, 0, 29));
    ASSERT_TRUE(qemu_iovec_is_zero(&b, 30, 10));

    qemu_iovec_discard_back(&b, 11);
    ASSERT_UINT(b.size, ==, 29);
    ASSERT_UINT(iov_size(b.iov, (unsigned)b.niov), ==, 29);
    ASSERT_TRUE(qemu_iovec_is_zero(&b, 0, b.size));
    qemu_iovec_discard_back(&b, 29);
    ASSERT_UINT(b.size, ==, 0);
    ASSERT_INT(b.niov, ==, 0);
    qemu_iovec_destroy(&a);
    qemu_iovec_destroy(&b);
}

/* Every helper, on random splits and ranges, against memcpy on a flat copy. */
TEST(random_copies_match_a_flat_model)
{
    enum { LEN = 4096, ROUNDS = 4000 };
    static unsigned char buf[LEN], model[LEN], tmp[LEN], out[LEN];
    unsigned seed = 1234;

    for (int round = 0; round < ROUNDS; round++) {
        QEMUIOVector qiov;
        size_t off = (size_t)rand_r(&seed) % (LEN + 16);
        size_t len = (size_t)rand_r(&seed) % (LEN / 2);
        size_t want = off >= LEN ? 0 : (len < LEN - off ? len : LEN - off);
        int op = rand_r(&seed) % 3;

        split(&qiov, buf, LEN, &seed, 1 + (size_t)rand_r(&seed) % 300);
        ASSERT_UINT(qiov.size, ==, LEN);
        for (size_t i = 0; i < len; i++) {
            tmp[i] = (unsigned char)rand_r(&seed);
        }
        if (op == 0) {
            ASSERT_UINT(qemu_iovec_from_buf(&qiov, off, tmp, len), ==, want);
            memcpy(model + (off < LEN ? off : 0), tmp, want);
        } else if (op == 1) {
            ASSERT_UINT(qemu_iovec_memset(&qiov, off, tmp[0], len), ==, want);
            memset(model + (off < LEN ? off : 0), tmp[0], want);
        } else {
            ASSERT_UINT(qemu_iovec_to_buf(&qiov, off, out, len), ==, want);
            ASSERT_MEM_EQ(out, model + (off < LEN ? off : 0), want);
        }
        ASSERT_MEM_EQ(buf, model, LEN);
        qemu_iovec_destroy(&qiov);
    }
}

RUN_TESTS(T(add_grows_and_tracks_size),
          T(copies_cross_entries_and_stop_at_the_end),
          T(external_and_buf_vectors_borrow),
          T(misuse_aborts_with_a_message),
          T(concat_and_slice_share_memory),
          T(compare_is_zero_discard_back),
          T(random_copies_match_a_flat_model));
