/*
 * Tiny test harness: typed asserts that print both values, skip with exit 77.
 *
 * Each test file is one executable.  Use TEST(name) to define test cases and
 * RUN_TESTS(...) in main().  A failing assert prints file:line, the
 * expression and both values, then aborts the current test process with
 * exit status 1.  Call test_skip("reason") to exit 77.
 */
#ifndef AIOLOOP_TEST_H
#define AIOLOOP_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_FAIL_(...)                                                    \
    do {                                                                   \
        fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);              \
        fprintf(stderr, __VA_ARGS__);                                      \
        fputc('\n', stderr);                                               \
        fflush(stderr);                                                    \
        exit(1);                                                           \
    } while (0)

#define ASSERT_TRUE(e)                                                     \
    do {                                                                   \
        if (!(e)) {                                                        \
            TEST_FAIL_("%s is false", #e);                                 \
        }                                                                  \
    } while (0)
#define ASSERT_FALSE(e)                                                    \
    do {                                                                   \
        if (e) {                                                           \
            TEST_FAIL_("%s is true", #e);                                  \
        }                                                                  \
    } while (0)

#define ASSERT_CMP_(type, fmt, a, op, b)                                   \
    do {                                                                   \
        type a_ = (a);                                                     \
        type b_ = (b);                                           \
        if (!(a_ op b_)) {                                                 \
            TEST_FAIL_("%s %s %s: %" fmt " vs %" fmt, #a, #op, #b, a_, b_); \
        }                                                                  \
    } while (0)

/* Signed and unsigned integers, compared as 64-bit. */
#define ASSERT_INT(a, op, b)  ASSERT_CMP_(int64_t, PRId64, a, op, b)
#define ASSERT_UINT(a, op, b) ASSERT_CMP_(uint64_t, PRIu64, a, op, b)
#define ASSERT_EQ(a, b)       ASSERT_INT(a, ==, b)
#define ASSERT_NE(a, b)       ASSERT_INT(a, !=, b)
#define ASSERT_PTR_EQ(a, b)   ASSERT_CMP_(const void *, "p", a, ==, b)
#define ASSERT_PTR_NE(a, b)   ASSERT_CMP_(const void *, "p", a, !=, b)
#define ASSERT_NULL(a)        ASSERT_PTR_EQ(a, NULL)
#define ASSERT_NOT_NULL(a)    ASSERT_PTR_NE(a, NULL)
/* @n bytes at @a and @b are equal; reports the first difference. */
#define ASSERT_MEM_EQ(a, b, n)                                             \
    do {                                                                   \
        const unsigned char *ma_ = (const void *)(a);                      \
        const unsigned char *mb_ = (const void *)(b);                      \
        size_t mn_ = (n);                                                  \
        for (size_t mi_ = 0; mi_ < mn_; mi_++) {                           \
            if (ma_[mi_] != mb_[mi_]) {                                    \
                TEST_FAIL_("%s and %s differ at byte %zu of %zu: "         \
                           "0x%02x vs 0x%02x", #a, #b, mi_, mn_,           \
                           ma_[mi_], mb_[mi_]);                            \
            }                                                              \
        }                                                                  \
    } while (0)
#define ASSERT_STR_EQ(a, b)                                                \
    do {                                                                   \
        const char *a_ = (a), *b_ = (b);                                   \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                           \
            TEST_FAIL_("%s == %s: \"%s\" vs \"%s\"", #a, #b,               \
                       a_ ? a_ : "(null)", b_ ? b_ : "(null)");            \
        }                                                                  \
    } while (0)

static inline void test_skip(const char *reason)
{
    printf("SKIP: %s\n", reason);
    fflush(stdout);
    exit(77);
}

typedef struct {
    const char *name;
    void (*fn)(void);
} TestCase;

#define TEST(name) static void name(void)
#define T(name) { #name, name }

/*
 * Run every case in order in this process.  Filtering by argv[1] lets a
 * developer run one case: ./test-foo case_name.
 */
static inline int test_run_all(int argc, char **argv, const TestCase *cases,
                               size_t n)
{
    size_t ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) {
            continue;
        }
        printf("# %s\n", cases[i].name);
        fflush(stdout);
        cases[i].fn();
        ran++;
    }
    printf("ok %zu cases\n", ran);
    return ran ? 0 : 1;
}

#define RUN_TESTS(...)                                                     \
    int main(int argc, char **argv)                                        \
    {                                                                      \
        static const TestCase cases_[] = { __VA_ARGS__ };                  \
        return test_run_all(argc, argv, cases_,                            \
                            sizeof(cases_) / sizeof(cases_[0]));           \
    }

/*
 * Run fn in a forked child and expect it to abort (SIGABRT) with msg in
 * its stderr.  Used for "misuse aborts with a message naming the mistake".
 */
int test_expect_abort(void (*fn)(void *), void *opaque, const char *msg);

#endif
