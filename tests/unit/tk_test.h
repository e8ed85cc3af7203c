/*
 * tk_test.h — a tiny unit-test runner in the manner of libuv's: every test case runs in
 * its own forked child with a timeout, so a crash, a hang or a SIGKILL in one case is
 * reported as that case's failure and never takes the others down.
 *
 *   TK_TEST(name) { ... TK_ASSERT(x == 1); TK_ASSERT_EQ(a, b); ... }
 *   int main(int argc, char **argv) { return tk_test_main(argc, argv); }
 *
 * Run with no argument: every case. With one argument: only cases whose name contains it.
 * TK_TEST_TIMEOUT (seconds, default 60) bounds each case. Output ends with the plain line
 * "N passed, N failed".
 */
#ifndef TK_TEST_H
#define TK_TEST_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef void (*tk_test_fn)(void);

struct tk_test_case {
    const char *name;
    tk_test_fn fn;
    int timeout_s;
};

#define TK_TEST_MAX 512
static struct tk_test_case tk_tests[TK_TEST_MAX];
static int tk_ntests;

static inline void tk_test_register(const char *name, tk_test_fn fn, int timeout_s)
{
    if (tk_ntests < TK_TEST_MAX)
        tk_tests[tk_ntests++] = (struct tk_test_case){name, fn, timeout_s};
}

#define TK_TEST_T(name, timeout_s)                                                                 \
    static void tk_test_##name(void);                                                              \
    __attribute__((constructor)) static void tk_test_reg_##name(void)                              \
    {                                                                                              \
        tk_test_register(#name, tk_test_##name, timeout_s);                                        \
    }                                                                                              \
    static void tk_test_##name(void)

#define TK_TEST(name) TK_TEST_T(name, 0)

#define TK_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "  assertion failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

/* Fail the case with a printf-style message. */
#define TK_FAIL(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "  failed at %s:%d: ", __FILE__, __LINE__);                                \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        _exit(1);                                                                                  \
    } while (0)

#define TK_ASSERT_EQ(a, b)                                                                         \
    do {                                                                                           \
        long long tk_a_ = (long long)(a), tk_b_ = (long long)(b);                                  \
        if (tk_a_ != tk_b_) {                                                                      \
            fprintf(stderr, "  assertion failed at %s:%d: %s == %s (%lld != %lld)\n", __FILE__,    \
                    __LINE__, #a, #b, tk_a_, tk_b_);                                               \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

#define TK_ASSERT_STREQ(a, b)                                                                      \
    do {                                                                                           \
        const char *tk_a_ = (a), *tk_b_ = (b);                                                     \
        if (!tk_a_ || !tk_b_ || strcmp(tk_a_, tk_b_) != 0) {                                       \
            fprintf(stderr, "  assertion failed at %s:%d: %s == %s (\"%s\" != \"%s\")\n",          \
                    __FILE__, __LINE__, #a, #b, tk_a_ ? tk_a_ : "(null)",                          \
                    tk_b_ ? tk_b_ : "(null)");                                                     \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

static inline int tk_run_one(const struct tk_test_case *t, int default_timeout)
{
    int timeout = t->timeout_s > 0 ? t->timeout_s : default_timeout;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        alarm((unsigned)timeout);
        t->fn();
        fflush(stdout);
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
        fprintf(stderr, "  %s: timed out after %d s\n", t->name, timeout);
    else if (WIFSIGNALED(st))
        fprintf(stderr, "  %s: killed by signal %d\n", t->name, WTERMSIG(st));
    return 1;
}

static inline int tk_test_main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    const char *env = getenv("TK_TEST_TIMEOUT");
    int default_timeout = env ? atoi(env) : 60;
    if (default_timeout <= 0)
        default_timeout = 60;
    for (int i = 0; i < tk_ntests; i++) {
        if (argc > 1 && !strstr(tk_tests[i].name, argv[1]))
            continue;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int rc = tk_run_one(&tk_tests[i], default_timeout);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
        printf("%s %s (%.0f ms)\n", rc == 0 ? "ok  " : "FAIL", tk_tests[i].name, ms);
        if (rc == 0)
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif
