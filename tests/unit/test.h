/* capid's unit test runner: TEST(name) registers a test at load time; the
 * runner prints one line per failure with both sides and ends with exactly
 * `N passed, N failed`. `unit-tests SUBSTRING` runs only matching tests. */
#ifndef CAPID_TEST_H
#define CAPID_TEST_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*capid_test_fn)(void);
void capid_test_register(const char *name, capid_test_fn fn);
/* Records a failed assertion of the running test (printed by the runner). */
void capid_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Path of a file under the shared folder (../shared or $CAPID_SHARED). */
const char *capid_test_shared(const char *rel);
/* Reads a whole file (NUL-terminated, caller frees); NULL on error. */
char *capid_test_slurp(const char *path, size_t *len);
/* A fresh directory /tmp/capid-<prefix>-XXXXXX (aborts on failure) and, in
 * path, "<dir>/q.db"; _release removes the files in it and the directory. */
struct capid_test_dir {
    char dir[64];
    char path[160];
};
struct capid_test_dir capid_test_dir_new(const char *prefix);
void capid_test_dir_release(struct capid_test_dir *t);
/* Number of failures in the running test so far. */
int capid_test_failures(void);

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void reg_##name(void)                                      \
    {                                                                                              \
        capid_test_register(#name, test_##name);                                                   \
    }                                                                                              \
    static void test_##name(void)

#define ASSERT_TRUE(c)                                                                             \
    do {                                                                                           \
        if (!(c))                                                                                  \
            capid_test_fail(__FILE__, __LINE__, "expected true: %s", #c);                          \
    } while (0)

#define ASSERT_INT(a, b)                                                                           \
    do {                                                                                           \
        int64_t a_ = (int64_t)(a), b_ = (int64_t)(b);                                              \
        if (a_ != b_)                                                                              \
            capid_test_fail(__FILE__, __LINE__, "%s == %s: got %" PRId64 ", want %" PRId64, #a,    \
                            #b, a_, b_);                                                           \
    } while (0)

#define ASSERT_STR(a, b)                                                                           \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ ? a_ != b_ : strcmp(a_, b_) != 0)                                           \
            capid_test_fail(__FILE__, __LINE__, "%s == %s: got \"%s\", want \"%s\"", #a, #b,       \
                            a_ ? a_ : "(null)", b_ ? b_ : "(null)");                               \
    } while (0)

#endif
