#include "test.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_TESTS 1024

static struct {
    const char *name;
    capid_test_fn fn;
} tests[MAX_TESTS];
static int ntests;
static int cur_failures;
static const char *cur_name;

void capid_test_register(const char *name, capid_test_fn fn)
{
    if (ntests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[ntests].name = name;
    tests[ntests].fn = fn;
    ntests++;
}

void capid_test_fail(const char *file, int line, const char *fmt, ...)
{
    /* Print at most 20 failures per test so a broken table stays readable. */
    if (cur_failures++ >= 20)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL %s (%s:%d): ", cur_name, file, line);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

int capid_test_failures(void)
{
    return cur_failures;
}

const char *capid_test_shared(const char *rel)
{
    static char path[4096];
    const char *base = getenv("CAPID_SHARED");
    snprintf(path, sizeof(path), "%s/%s", base && *base ? base : "../shared", rel);
    return path;
}

char *capid_test_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    for (;;) {
        if (n + 1 >= cap)
            p = realloc(p, cap *= 2);
        size_t r = fread(p + n, 1, cap - n - 1, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    p[n] = '\0';
    if (len)
        *len = n;
    return p;
}

struct capid_test_dir capid_test_dir_new(const char *prefix)
{
    struct capid_test_dir t;
    snprintf(t.dir, sizeof(t.dir), "/tmp/capid-%.20s-XXXXXX", prefix);
    if (!mkdtemp(t.dir))
        abort();
    snprintf(t.path, sizeof(t.path), "%s/q.db", t.dir);
    return t;
}

void capid_test_dir_release(struct capid_test_dir *t)
{
    DIR *d = opendir(t->dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof(p), "%s/%s", t->dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(t->dir);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int main(int argc, char **argv)
{
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    qsort(tests, (size_t)ntests, sizeof(tests[0]), by_name);
    for (int i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter))
            continue;
        cur_name = tests[i].name;
        cur_failures = 0;
        tests[i].fn();
        if (cur_failures) {
            failed++;
            printf("not ok %s (%d failed assertions)\n", cur_name, cur_failures);
        } else {
            passed++;
            if (getenv("CAPID_TEST_VERBOSE"))
                printf("ok %s\n", cur_name);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
