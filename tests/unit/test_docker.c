/*
 * test_docker.c — docker.c against the real engine on /var/run/docker.sock, plus a few
 * cases against a tiny fake engine on a private unix socket (byte-split log frames,
 * version negotiation with other engines, keep-alive, error bodies).
 *
 * No image can be pulled, so main() builds one first: a static C program (PROG_SRC) put
 * in a tar as /prog and `docker import`ed as takod-test-static:latest (skipped when the
 * image exists). Every container carries the label takod.test.run=<unique per run>; each
 * case removes what it created and main() removes anything left with that label.
 */
#include "tako/config.h"
#include "tako/docker.h"
#include "tako/sandbox.h"
#include "tako/takod.h"
#include "tk_test.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>

#define IMG     "takod-test-static:latest"
#define SOCK    "/var/run/docker.sock"
#define RUN_KEY "takod.test.run"
#define WAIT_MS 20000

/* prog OUT ERR NBYTES SLEEP_S CODE: writes OUT to stdout, ERR to stderr, then NBYTES bytes
 * of 'a'..'z' (byte i is 'a' + i % 26) to stdout, sleeps SLEEP_S seconds, exits CODE. */
static const char PROG_SRC[] =
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "#include <time.h>\n"
    "#include <unistd.h>\n"
    "static void wr(int fd, const char *p, size_t n)\n"
    "{\n"
    "    while (n > 0) {\n"
    "        ssize_t w = write(fd, p, n);\n"
    "        if (w <= 0)\n"
    "            return;\n"
    "        p += w;\n"
    "        n -= (size_t)w;\n"
    "    }\n"
    "}\n"
    "int main(int argc, char **argv)\n"
    "{\n"
    "    static char buf[65536];\n"
    "    if (argc > 1)\n"
    "        wr(1, argv[1], strlen(argv[1]));\n"
    "    if (argc > 2)\n"
    "        wr(2, argv[2], strlen(argv[2]));\n"
    "    long nb = argc > 3 ? atol(argv[3]) : 0, done = 0;\n"
    "    while (done < nb) {\n"
    "        long k = nb - done < (long)sizeof buf ? nb - done : (long)sizeof buf;\n"
    "        for (long i = 0; i < k; i++)\n"
    "            buf[i] = (char)('a' + (done + i) % 26);\n"
    "        wr(1, buf, (size_t)k);\n"
    "        done += k;\n"
    "    }\n"
    "    if (argc > 4) {\n"
    "        struct timespec ts = {atol(argv[4]), 0};\n"
    "        nanosleep(&ts, NULL);\n"
    "    }\n"
    "    return argc > 5 ? atoi(argv[5]) : 0;\n"
    "}\n";

static char run_id[64];     /* unique per run: label value and name prefix */
static char run_label[128]; /* RUN_KEY=run_id */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

static int ensure_image(void)
{
    if (sh("docker image inspect %s >/dev/null 2>&1", IMG) == 0)
        return 0;
    char dir[] = "/tmp/takod-test-img-XXXXXX";
    if (!mkdtemp(dir))
        return -1;
    char src[128];
    snprintf(src, sizeof src, "%s/prog.c", dir);
    FILE *f = fopen(src, "w");
    if (!f)
        return -1;
    fputs(PROG_SRC, f);
    fclose(f);
    int rc = sh("gcc -static -O2 -o %s/prog %s && tar -C %s -cf %s/img.tar prog && "
                "docker import %s/img.tar %s >/dev/null",
                dir, src, dir, dir, dir, IMG);
    sh("rm -rf %s", dir);
    return rc == 0 ? 0 : -1;
}

static struct docker *open_engine(void)
{
    struct docker *d = NULL;
    int rc = docker_open(&d, SOCK);
    if (rc < 0)
        fprintf(stderr, "  docker_open: %d %s\n", rc, docker_last_error(NULL));
    TK_ASSERT_EQ(rc, 0);
    TK_ASSERT(d != NULL);
    return d;
}

/* The create body for prog; extra_key/extra_val add one more label (may be NULL). */
static json_t *prog_body(const char *out, const char *err, long nbytes, int sleep_s, int code,
                         const char *extra_key, const char *extra_val)
{
    char nb[32], sl[32], cd[32];
    snprintf(nb, sizeof nb, "%ld", nbytes);
    snprintf(sl, sizeof sl, "%d", sleep_s);
    snprintf(cd, sizeof cd, "%d", code);
    json_t *b = json_pack("{s:s, s:[s,s,s,s,s,s], s:b, s:{s:s}, s:{s:s}}", "Image", IMG, "Cmd",
                          "/prog", out, err, nb, sl, cd, "Tty", 0, "Labels", RUN_KEY, run_id,
                          "HostConfig", "NetworkMode", "none");
    TK_ASSERT(b != NULL);
    if (extra_key)
        json_object_set_new(json_object_get(b, "Labels"), extra_key, json_string(extra_val));
    return b;
}

static void create_prog(struct docker *d, const char *name, json_t *body, char id[65])
{
    int rc = docker_create(d, name, body, id);
    if (rc < 0)
        fprintf(stderr, "  docker_create: %d %s\n", rc, docker_last_error(d));
    TK_ASSERT_EQ(rc, 0);
    TK_ASSERT_EQ(strlen(id), 64);
    json_decref(body);
}

static void remove_label(struct docker *d, const char *label)
{
    json_t *ids = NULL;
    if (docker_list_by_label(d, label, &ids) < 0)
        return;
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) docker_remove(d, json_string_value(v));
    json_decref(ids);
}

/* ---------------------------------------------------------------------------------------- */
/* capbuf                                                                                   */

TK_TEST(capbuf_keeps_head_and_counts)
{
    struct tk_capbuf b;
    capbuf_init(&b, 10);
    TK_ASSERT(b.data != NULL);
    TK_ASSERT_STREQ(b.data, "");
    capbuf_append(&b, "hello", 5);
    TK_ASSERT_STREQ(b.data, "hello");
    TK_ASSERT(!b.truncated);
    capbuf_append(&b, "world!!", 7);
    TK_ASSERT_STREQ(b.data, "helloworld");
    TK_ASSERT_EQ(b.len, 10);
    TK_ASSERT_EQ(b.total, 12);
    TK_ASSERT(b.truncated);
    capbuf_append(&b, "x", 1);
    TK_ASSERT_EQ(b.len, 10);
    TK_ASSERT_EQ(b.total, 13);
    capbuf_free(&b);
    TK_ASSERT_STREQ(b.data, "");
    capbuf_free(&b); /* idempotent */

    capbuf_init(&b, 0);
    capbuf_append(&b, "abc", 3);
    TK_ASSERT_EQ(b.len, 0);
    TK_ASSERT_EQ(b.total, 3);
    TK_ASSERT(b.truncated);
    TK_ASSERT_STREQ(b.data, "");
    capbuf_free(&b);

    /* growth across many small appends, embedded NULs kept */
    capbuf_init(&b, 100000);
    for (int i = 0; i < 150000; i++)
        capbuf_append(&b, i % 7 ? "q" : "\0", 1);
    TK_ASSERT_EQ(b.len, 100000);
    TK_ASSERT_EQ(b.total, 150000);
    TK_ASSERT(b.truncated);
    TK_ASSERT_EQ(b.data[0], '\0');
    TK_ASSERT_EQ(b.data[1], 'q');
    TK_ASSERT_EQ(b.data[99999], 99999 % 7 ? 'q' : '\0');
    TK_ASSERT_EQ(b.data[100000], '\0');
    capbuf_free(&b);

    capbuf_init(&b, 5);
    capbuf_append(&b, "12345", 5);
    TK_ASSERT(!b.truncated); /* total == cap is not truncation */
    TK_ASSERT_STREQ(b.data, "12345");
    capbuf_free(&b);
}

/* ---------------------------------------------------------------------------------------- */
/* the real engine                                                                          */

TK_TEST(open_negotiates_version)
{
    struct docker *d = open_engine();
    TK_ASSERT_STREQ(docker_api_version(d), "1.41");
    docker_close(d);
}

TK_TEST(open_bogus_socket)
{
    struct docker *d = (struct docker *)1;
    int rc = docker_open(&d, "/nonexistent/takod/docker.sock");
    TK_ASSERT(rc < 0);
    TK_ASSERT_EQ(rc, -ECONNREFUSED);
    TK_ASSERT(d == NULL);
    TK_ASSERT(strstr(docker_last_error(NULL), "/nonexistent/takod/docker.sock") != NULL);

    /* a path that exists but is no socket */
    rc = docker_open(&d, "/etc/hostname");
    TK_ASSERT_EQ(rc, -ECONNREFUSED);
    TK_ASSERT(strstr(docker_last_error(NULL), "/etc/hostname") != NULL);
}

TK_TEST(ping)
{
    struct docker *d = open_engine();
    TK_ASSERT_EQ(docker_ping(d), 0);
    TK_ASSERT_EQ(docker_ping(d), 0);
    docker_close(d);
}

TK_TEST(image_exists)
{
    struct docker *d = open_engine();
    TK_ASSERT_EQ(docker_image_exists(d, IMG), 1);
    char name[128];
    snprintf(name, sizeof name, "takod-no-such-image-%s:latest", run_id);
    TK_ASSERT_EQ(docker_image_exists(d, name), 0);
    snprintf(name, sizeof name, "example.invalid/takod/no-such-%s:1", run_id);
    TK_ASSERT_EQ(docker_image_exists(d, name), 0);
    TK_ASSERT_EQ(docker_image_exists(d, "../../containers/json"), -EINVAL);
    TK_ASSERT_EQ(docker_image_exists(d, "a b"), -EINVAL);
    TK_ASSERT_EQ(docker_image_exists(d, ""), -EINVAL);
    docker_close(d);
}

TK_TEST(has_runtime)
{
    struct docker *d = open_engine();
    TK_ASSERT_EQ(docker_has_runtime(d, "runc"), 1);
    TK_ASSERT_EQ(docker_has_runtime(d, "nope"), 0);
    docker_close(d);
}

TK_TEST(run_exit_code_logs_inspect_remove)
{
    struct docker *d = open_engine();
    char id[65];
    create_prog(d, NULL, prog_body("hello out\nline 2\n", "hello err\n", 0, 0, 3, NULL, NULL), id);
    TK_ASSERT_EQ(docker_start(d, id), 0);
    int code = -1;
    TK_ASSERT_EQ(docker_wait(d, id, WAIT_MS, &code), 0);
    TK_ASSERT_EQ(code, 3);

    struct tk_capbuf out, err;
    capbuf_init(&out, 65536);
    capbuf_init(&err, 65536);
    TK_ASSERT_EQ(docker_logs(d, id, &out, &err), 0);
    TK_ASSERT_STREQ(out.data, "hello out\nline 2\n");
    TK_ASSERT_STREQ(err.data, "hello err\n");
    TK_ASSERT_EQ(out.total, 17);
    TK_ASSERT(!out.truncated && !err.truncated);
    capbuf_free(&out);
    capbuf_free(&err);

    json_t *j = NULL;
    TK_ASSERT_EQ(docker_inspect(d, id, &j), 0);
    json_t *st = json_object_get(j, "State");
    TK_ASSERT_EQ(json_integer_value(json_object_get(st, "ExitCode")), 3);
    TK_ASSERT(json_is_false(json_object_get(st, "Running")));
    TK_ASSERT_STREQ(json_string_value(json_object_get(j, "Id")), id);
    json_decref(j);

    TK_ASSERT_EQ(docker_remove(d, id), 0);
    TK_ASSERT_EQ(docker_remove(d, id), -ENOENT);
    TK_ASSERT(strstr(docker_last_error(d), "No such container") != NULL);
    j = NULL;
    TK_ASSERT_EQ(docker_inspect(d, id, &j), -ENOENT);
    TK_ASSERT(j == NULL);
    docker_close(d);
}

TK_TEST(logs_cap)
{
    struct docker *d = open_engine();
    char id[65];
    create_prog(d, NULL, prog_body("", "", 200000, 0, 0, NULL, NULL), id);
    TK_ASSERT_EQ(docker_start(d, id), 0);
    int code = -1;
    TK_ASSERT_EQ(docker_wait(d, id, WAIT_MS, &code), 0);
    TK_ASSERT_EQ(code, 0);
    struct tk_capbuf out, err;
    capbuf_init(&out, 65536);
    capbuf_init(&err, 65536);
    int rc = docker_logs(d, id, &out, &err);
    if (rc < 0)
        fprintf(stderr, "  docker_logs: %s\n", docker_last_error(d));
    TK_ASSERT_EQ(rc, 0);
    TK_ASSERT_EQ(out.len, 65536);
    TK_ASSERT_EQ(out.total, 200000);
    TK_ASSERT(out.truncated);
    TK_ASSERT_EQ(out.data[65536], '\0');
    for (size_t i = 0; i < out.len; i++)
        if (out.data[i] != (char)('a' + i % 26))
            TK_ASSERT(!"stdout content differs");
    TK_ASSERT_EQ(err.len, 0);
    TK_ASSERT_EQ(err.total, 0);
    TK_ASSERT(!err.truncated);
    capbuf_free(&out);
    capbuf_free(&err);

    /* one buffer for both streams, and a NULL one that discards */
    capbuf_init(&out, 1 << 20);
    TK_ASSERT_EQ(docker_logs(d, id, &out, NULL), 0);
    TK_ASSERT_EQ(out.len, 200000);
    TK_ASSERT(!out.truncated);
    capbuf_free(&out);
    TK_ASSERT_EQ(docker_remove(d, id), 0);
    docker_close(d);
}

TK_TEST(wait_timeout_then_kill)
{
    struct docker *d = open_engine();
    char id[65];
    create_prog(d, NULL, prog_body("", "", 0, 30, 0, NULL, NULL), id);
    TK_ASSERT_EQ(docker_start(d, id), 0);
    TK_ASSERT_EQ(docker_start(d, id), -EEXIST); /* 304: already started */
    int code = -1;
    double t0 = now_ms();
    TK_ASSERT_EQ(docker_wait(d, id, 500, &code), -ETIMEDOUT);
    double took = now_ms() - t0;
    TK_ASSERT(took < 10000); /* the bound held (loose; not a timing assertion) */
    TK_ASSERT(docker_last_error(d)[0] != '\0');
    TK_ASSERT_EQ(code, -1);

    json_t *j = NULL;
    TK_ASSERT_EQ(docker_inspect(d, id, &j), 0);
    TK_ASSERT(json_is_true(json_object_get(json_object_get(j, "State"), "Running")));
    json_decref(j);

    TK_ASSERT_EQ(docker_kill(d, id, "SIGKILL"), 0);
    TK_ASSERT_EQ(docker_wait(d, id, WAIT_MS, &code), 0);
    TK_ASSERT_EQ(code, 137);
    TK_ASSERT_EQ(docker_kill(d, id, "SIGKILL"), -EEXIST); /* 409: not running */
    TK_ASSERT_EQ(docker_kill(d, id, "SIG KILL"), -EINVAL);
    TK_ASSERT_EQ(docker_remove(d, id), 0);
    docker_close(d);
}

TK_TEST(remove_forces_running)
{
    struct docker *d = open_engine();
    char id[65];
    create_prog(d, NULL, prog_body("", "", 0, 30, 0, NULL, NULL), id);
    TK_ASSERT_EQ(docker_start(d, id), 0);
    TK_ASSERT_EQ(docker_remove(d, id), 0);
    TK_ASSERT_EQ(docker_remove(d, id), -ENOENT);
    docker_close(d);
}

TK_TEST(async_start_and_remove)
{
    struct docker *d = open_engine();
    char id[65];
    create_prog(d, NULL, prog_body("", "", 0, 30, 0, NULL, NULL), id);
    int fd = -1;
    TK_ASSERT_EQ(docker_start_async(d, id, &fd), 0);
    TK_ASSERT(fd >= 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    TK_ASSERT_EQ(poll(&p, 1, WAIT_MS), 1); /* the answer comes on fd */
    TK_ASSERT_EQ(docker_async_finish(d, fd, WAIT_MS), 0);
    json_t *j = NULL;
    TK_ASSERT_EQ(docker_inspect(d, id, &j), 0);
    TK_ASSERT(json_is_true(json_object_get(json_object_get(j, "State"), "Running")));
    json_decref(j);
    TK_ASSERT_EQ(docker_start_async(d, id, &fd), 0); /* already running: 304 counts */
    TK_ASSERT_EQ(docker_async_finish(d, fd, WAIT_MS), 0);
    TK_ASSERT_EQ(docker_remove_async(d, id, &fd), 0); /* force: a running one goes */
    TK_ASSERT_EQ(docker_async_finish(d, fd, WAIT_MS), 0);
    TK_ASSERT_EQ(docker_remove_async(d, id, &fd), 0);
    TK_ASSERT_EQ(docker_async_finish(d, fd, WAIT_MS), -ENOENT);
    TK_ASSERT(strstr(docker_last_error(d), "No such container") != NULL);
    TK_ASSERT_EQ(docker_start_async(d, id, &fd), 0);
    TK_ASSERT_EQ(docker_async_finish(d, fd, WAIT_MS), -ENOENT);
    TK_ASSERT_EQ(docker_start_async(d, "../x", &fd), -EINVAL); /* checked before sending */
    docker_close(d);
}

TK_TEST(unknown_and_invalid_ids)
{
    struct docker *d = open_engine();
    const char *unknown = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    TK_ASSERT_EQ(docker_start(d, unknown), -ENOENT);
    TK_ASSERT(strstr(docker_last_error(d), "No such container") != NULL);
    int code = -1;
    TK_ASSERT_EQ(docker_wait(d, unknown, 2000, &code), -ENOENT);
    TK_ASSERT_EQ(docker_kill(d, unknown, "SIGKILL"), -ENOENT);
    TK_ASSERT_EQ(docker_remove(d, unknown), -ENOENT);
    struct tk_capbuf out;
    capbuf_init(&out, 16);
    TK_ASSERT_EQ(docker_logs(d, unknown, &out, &out), -ENOENT);
    TK_ASSERT_EQ(out.total, 0);
    capbuf_free(&out);
    /* nothing unchecked reaches the URL path */
    TK_ASSERT_EQ(docker_start(d, "../../containers/x"), -EINVAL);
    TK_ASSERT_EQ(docker_remove(d, "a/b"), -EINVAL);
    TK_ASSERT_EQ(docker_remove(d, ""), -EINVAL);
    TK_ASSERT_EQ(docker_remove(d, "x?force=1"), -EINVAL);
    TK_ASSERT(docker_last_error(d)[0] != '\0');
    /* the engine is still fine after all that */
    TK_ASSERT_EQ(docker_ping(d), 0);
    docker_close(d);
}

TK_TEST(create_errors)
{
    struct docker *d = open_engine();
    char name[128], id1[65], id2[65];
    snprintf(name, sizeof name, "takod-test-%s-dup", run_id);
    create_prog(d, name, prog_body("", "", 0, 0, 0, NULL, NULL), id1);
    json_t *b = prog_body("", "", 0, 0, 0, NULL, NULL);
    TK_ASSERT_EQ(docker_create(d, name, b, id2), -EEXIST);
    TK_ASSERT(strstr(docker_last_error(d), "already in use") != NULL);
    /* by name works too */
    json_t *j = NULL;
    TK_ASSERT_EQ(docker_inspect(d, name, &j), 0);
    TK_ASSERT_STREQ(json_string_value(json_object_get(j, "Id")), id1);
    json_decref(j);

    /* an image that is not there */
    json_object_set_new(b, "Image", json_string("takod-no-such-image:latest"));
    TK_ASSERT_EQ(docker_create(d, NULL, b, id2), -ENOENT);
    TK_ASSERT(docker_last_error(d)[0] != '\0');
    /* an unknown runtime */
    json_object_set_new(b, "Image", json_string(IMG));
    json_object_set_new(json_object_get(b, "HostConfig"), "Runtime", json_string("nope"));
    int rc = docker_create(d, NULL, b, id2);
    TK_ASSERT(rc < 0);
    TK_ASSERT(strstr(docker_last_error(d), "nope") != NULL);
    TK_ASSERT_EQ(docker_create(d, "bad name", b, id2), -EINVAL);
    json_decref(b);
    TK_ASSERT_EQ(docker_remove(d, id1), 0);
    docker_close(d);
}

static int has_id(json_t *ids, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) if (strcmp(json_string_value(v), id) == 0) return 1;
    return 0;
}

TK_TEST(list_by_label)
{
    struct docker *d = open_engine();
    char key[128], kv[160], kvno[160], a[65], b[65], c[65];
    snprintf(key, sizeof key, "takod.test.list-%s", run_id);
    snprintf(kv, sizeof kv, "%s=yes", key);
    snprintf(kvno, sizeof kvno, "%s=no", key);
    create_prog(d, NULL, prog_body("", "", 0, 0, 0, key, "yes"), a);
    create_prog(d, NULL, prog_body("", "", 0, 0, 0, key, "yes"), b);
    create_prog(d, NULL, prog_body("", "", 0, 0, 0, NULL, NULL), c);

    json_t *ids = NULL;
    TK_ASSERT_EQ(docker_list_by_label(d, kv, &ids), 0);
    TK_ASSERT_EQ(json_array_size(ids), 2);
    TK_ASSERT(has_id(ids, a) && has_id(ids, b));
    json_decref(ids);
    TK_ASSERT_EQ(docker_list_by_label(d, key, &ids), 0);
    TK_ASSERT_EQ(json_array_size(ids), 2);
    json_decref(ids);
    TK_ASSERT_EQ(docker_list_by_label(d, kvno, &ids), 0);
    TK_ASSERT_EQ(json_array_size(ids), 0);
    json_decref(ids);
    TK_ASSERT_EQ(docker_list_by_label(d, run_label, &ids), 0);
    TK_ASSERT(has_id(ids, a) && has_id(ids, b) && has_id(ids, c));
    json_decref(ids);
    /* characters that need URL encoding in the filter */
    TK_ASSERT_EQ(docker_list_by_label(d, "takod.test.none=a b&c\"d%", &ids), 0);
    TK_ASSERT_EQ(json_array_size(ids), 0);
    json_decref(ids);

    remove_label(d, kv);
    TK_ASSERT_EQ(docker_remove(d, c), 0);
    TK_ASSERT_EQ(docker_list_by_label(d, key, &ids), 0);
    TK_ASSERT_EQ(json_array_size(ids), 0);
    json_decref(ids);
    docker_close(d);
}

/* Not a test of timing: measures a trivial container's per-call latency and prints it. */
TK_TEST(latency_report)
{
    struct docker *d = open_engine();
    const char *env = getenv("TAKO_BENCH_N");
    int n = env ? atoi(env) : 5;
    double t[5] = {0};
    for (int i = 0; i < n; i++) {
        char id[65];
        json_t *b = prog_body("x\n", "", 0, 0, 0, NULL, NULL);
        double t0 = now_ms();
        TK_ASSERT_EQ(docker_create(d, NULL, b, id), 0);
        double t1 = now_ms();
        TK_ASSERT_EQ(docker_start(d, id), 0);
        double t2 = now_ms();
        int code = -1;
        TK_ASSERT_EQ(docker_wait(d, id, WAIT_MS, &code), 0);
        double t3 = now_ms();
        struct tk_capbuf out;
        capbuf_init(&out, 1024);
        TK_ASSERT_EQ(docker_logs(d, id, &out, NULL), 0);
        double t4 = now_ms();
        TK_ASSERT_EQ(docker_remove(d, id), 0);
        double t5 = now_ms();
        TK_ASSERT_STREQ(out.data, "x\n");
        capbuf_free(&out);
        json_decref(b);
        t[0] += t1 - t0, t[1] += t2 - t1, t[2] += t3 - t2, t[3] += t4 - t3, t[4] += t5 - t4;
    }
    if (n > 0)
        printf("  latency (mean of %d, ms): create %.1f start %.1f wait %.1f logs %.1f remove "
               "%.1f\n",
               n, t[0] / n, t[1] / n, t[2] / n, t[3] / n, t[4] / n);
    docker_close(d);
}

/* ---------------------------------------------------------------------------------------- */
/* a fake engine: deterministic framing, negotiation and keep-alive checks                 */

struct fake {
    pid_t pid;
    char path[108];
};

static void fake_write(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w <= 0)
            _exit(0);
        c += w;
        n -= (size_t)w;
    }
}

/* Answer with status and body; slow: one byte per write with a pause between. */
static void fake_answer(int fd, int status, const char *body, size_t len, int slow)
{
    char head[256];
    int n =
        snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n", status, len);
    fake_write(fd, head, (size_t)n);
    for (size_t i = 0; slow && i < len; i++) {
        fake_write(fd, body + i, 1);
        usleep(1000);
    }
    if (!slow)
        fake_write(fd, body, len);
}

static const char SPLIT_FRAMES[] = "\1\0\0\0\0\0\0\6hello\n"
                                   "\2\0\0\0\0\0\0\4err\n"
                                   "\0\0\0\0\0\0\0\3in\n"
                                   "\1\0\0\0\0\0\0\0"
                                   "\1\0\0\0\0\0\0\5bye!\n";

/* POST /containers/create?name=NAME: answers that test the create's kept connection. The
 * Id's last digits count the requests this connection served. */
static void fake_create(int fd, const char *line, int served)
{
    char id[65];
    snprintf(id, sizeof id, "%064d", served);
    char ok[128];
    snprintf(ok, sizeof ok, "{\"Id\":\"%s\",\"Warnings\":[]}", id);
    if (strstr(line, "name=chunked ")) { /* the body in three chunks */
        char a[512];
        int n = snprintf(a, sizeof a,
                         "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "7\r\n%.7s\r\n%zx\r\n%s\r\n0\r\n\r\n",
                         ok, strlen(ok) - 7, ok + 7);
        fake_write(fd, a, (size_t)n);
    } else if (strstr(line, "name=dup ")) {
        const char *e =
            "{\"message\":\"Conflict. The container name \\\"/dup\\\" is already in use\"}";
        fake_answer(fd, 409, e, strlen(e), 0);
    } else if (strstr(line, "name=cut ")) {
        fake_write(fd, "HTTP/1.1 201 Created\r\nContent-Le", 34);
        _exit(0);
    } else {
        fake_answer(fd, 201, ok, strlen(ok), strstr(line, "name=slow ") != NULL);
        if (strstr(line, "name=close "))
            _exit(0); /* closed after the answer, without saying so */
    }
}

static void fake_serve(int lfd, const char *version_json)
{
    int conns = 0;
    alarm(60);
    signal(SIGCHLD, SIG_IGN); /* a process per connection, as a client may hold several */
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(0);
        conns++;
        if (fork() != 0) {
            close(fd);
            continue;
        }
        close(lfd);
        alarm(60);
        char req[16384];
        size_t have = 0;
        int served = 0;
        for (;;) {
            char *end = have ? memmem(req, have, "\r\n\r\n", 4) : NULL;
            if (!end) {
                if (have == sizeof req)
                    break;
                ssize_t r = read(fd, req + have, sizeof req - have);
                if (r <= 0)
                    break;
                have += (size_t)r;
                continue;
            }
            size_t hlen = (size_t)(end - req) + 4;
            char line[512];
            size_t ll = strcspn(req, "\r");
            snprintf(line, sizeof line, "%.*s", (int)(ll < 511 ? ll : 511), req);
            const char *clh = strcasestr(req, "\r\nContent-Length:");
            size_t blen = clh && clh < end ? strtoul(clh + 17, NULL, 10) : 0;
            while (have < hlen + blen && have < sizeof req) { /* the body: read and dropped */
                ssize_t r = read(fd, req + have, sizeof req - have);
                if (r <= 0)
                    _exit(0);
                have += (size_t)r;
            }
            if (have < hlen + blen)
                _exit(0);
            memmove(req, req + hlen + blen, have - hlen - blen);
            have -= hlen + blen;
            served++;

            char conns_json[64];
            snprintf(conns_json, sizeof conns_json, "{\"conns\":%d}", conns);
            if (strstr(line, "POST /v") && strstr(line, "/containers/create?name="))
                fake_create(fd, line, served);
            else if (strncmp(line, "GET /version ", 13) == 0)
                fake_answer(fd, 200, version_json, strlen(version_json), 0);
            else if (strstr(line, "/_ping "))
                fake_answer(fd, 200, "OK", 2, 0);
            else if (strstr(line, "GET /v") && strstr(line, "/info ")) {
                const char *info = "{\"Runtimes\":{\"runc\":{\"path\":\"runc\"}}}";
                fake_answer(fd, 200, info, strlen(info), 0);
            } else if (strstr(line, "/containers/e500/start ")) {
                const char *e = "{\"message\":\"OCI runtime create failed: \\\"boom\\\"\"}";
                fake_answer(fd, 500, e, strlen(e), 0);
            } else if (strstr(line, "/containers/split/logs?"))
                fake_answer(fd, 200, SPLIT_FRAMES, sizeof SPLIT_FRAMES - 1, 1);
            else if (strstr(line, "/containers/trunc/logs?"))
                fake_answer(fd, 200, "\1\0\0\0\0\0\0\12abc", 11, 0);
            else if (strstr(line, "/containers/tty/logs?"))
                fake_answer(fd, 200, "hello world\n", 12, 0);
            else if (strstr(line, "/containers/conns/json "))
                fake_answer(fd, 200, conns_json, strlen(conns_json), 0);
            else if (strstr(line, "/containers/e500/json "))
                fake_answer(fd, 500, "boom\nline two", 13, 0);
            else if (strstr(line, "/containers/garbage/json "))
                fake_answer(fd, 200, "{not json", 9, 0);
            else if (strstr(line, "/containers/long/json ")) {
                static char msg[4096];
                int n = snprintf(msg, sizeof msg, "{\"message\":\"");
                memset(msg + n, 'm', 3000);
                snprintf(msg + n + 3000, sizeof msg - (size_t)n - 3000, "\"}");
                fake_answer(fd, 400, msg, strlen(msg), 0);
            } else {
                const char *nf = "{\"message\":\"No such container: x\"}";
                fake_answer(fd, 404, nf, strlen(nf), 0);
            }
        }
        _exit(0);
    }
}

static void fake_start(struct fake *f, const char *version_json)
{
    snprintf(f->path, sizeof f->path, "/tmp/takod-fake-%d.sock", (int)getpid());
    unlink(f->path);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    TK_ASSERT(lfd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    TK_ASSERT(bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0);
    TK_ASSERT(listen(lfd, 8) == 0);
    f->pid = fork();
    TK_ASSERT(f->pid >= 0);
    if (f->pid == 0)
        fake_serve(lfd, version_json);
    close(lfd);
}

static void fake_stop(struct fake *f)
{
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    unlink(f->path);
}

TK_TEST(fake_modern_engine_frames_keepalive_errors)
{
    struct fake f;
    fake_start(&f, "{\"ApiVersion\":\"1.47\",\"MinAPIVersion\":\"1.44\"}");
    struct docker *d = NULL;
    int rc = docker_open(&d, f.path);
    if (rc < 0)
        fprintf(stderr, "  docker_open: %s\n", docker_last_error(NULL));
    TK_ASSERT_EQ(rc, 0);
    TK_ASSERT_STREQ(docker_api_version(d), "1.44");

    /* headers and payloads arrive one byte per read */
    struct tk_capbuf out, err;
    capbuf_init(&out, 100);
    capbuf_init(&err, 3);
    TK_ASSERT_EQ(docker_logs(d, "split", &out, &err), 0);
    TK_ASSERT_STREQ(out.data, "hello\nin\nbye!\n");
    TK_ASSERT_STREQ(err.data, "err");
    TK_ASSERT_EQ(err.total, 4);
    TK_ASSERT(err.truncated && !out.truncated);
    capbuf_free(&out);
    capbuf_free(&err);

    capbuf_init(&out, 100);
    TK_ASSERT_EQ(docker_logs(d, "trunc", &out, NULL), -EIO);
    TK_ASSERT(strstr(docker_last_error(d), "inside a frame") != NULL);
    capbuf_free(&out);

    json_t *j = NULL;
    TK_ASSERT_EQ(docker_inspect(d, "e500", &j), -EIO);
    TK_ASSERT(strstr(docker_last_error(d), "HTTP 500") != NULL);
    TK_ASSERT(strstr(docker_last_error(d), "boom line two") != NULL);
    TK_ASSERT(strchr(docker_last_error(d), '\n') == NULL);
    TK_ASSERT_EQ(docker_inspect(d, "garbage", &j), -EIO);
    TK_ASSERT_EQ(docker_inspect(d, "long", &j), -EINVAL);
    TK_ASSERT(strlen(docker_last_error(d)) < 600);
    TK_ASSERT_EQ(docker_inspect(d, "nosuch", &j), -ENOENT);
    TK_ASSERT(strstr(docker_last_error(d), "No such container: x") != NULL);
    TK_ASSERT_EQ(docker_ping(d), 0);

    /* everything above went over one connection */
    TK_ASSERT_EQ(docker_inspect(d, "conns", &j), 0);
    TK_ASSERT_EQ(json_integer_value(json_object_get(j, "conns")), 1);
    json_decref(j);

    /* a raw (Tty) stream is refused; aborting the transfer costs that connection */
    capbuf_init(&out, 100);
    TK_ASSERT_EQ(docker_logs(d, "tty", &out, NULL), -EIO);
    TK_ASSERT(strstr(docker_last_error(d), "malformed") != NULL);
    capbuf_free(&out);
    TK_ASSERT_EQ(docker_ping(d), 0);
    docker_close(d);
    fake_stop(&f);
}

/* The create's own connection (dk_post_kept): kept between creates, chunked answers,
 * an engine that closed it meanwhile, its errors. */
TK_TEST(fake_create_kept_connection)
{
    struct fake f;
    fake_start(&f, "{\"ApiVersion\":\"1.41\",\"MinAPIVersion\":\"1.12\"}");
    struct docker *d = NULL;
    TK_ASSERT_EQ(docker_open(&d, f.path), 0);
    char id[65];
    const char *body = "{\"Image\":\"x\"}";
    /* one connection for both; the second answer comes a byte at a time */
    TK_ASSERT_EQ(docker_create_text(d, "one", body, id), 0);
    TK_ASSERT(strspn(id, "0") == 63 && id[63] == '1');
    TK_ASSERT_EQ(docker_create_text(d, "slow", body, id), 0);
    TK_ASSERT(id[63] == '2');
    TK_ASSERT_EQ(docker_create_text(d, "chunked", body, id), 0);
    TK_ASSERT(id[63] == '3');
    /* the engine closes it after an answer: the next create gets a new one */
    TK_ASSERT_EQ(docker_create_text(d, "close", body, id), 0);
    TK_ASSERT(id[63] == '4');
    TK_ASSERT_EQ(docker_create_text(d, "again", body, id), 0);
    TK_ASSERT(id[63] == '1');
    /* the engine's error, with its words; the connection stays usable */
    TK_ASSERT_EQ(docker_create_text(d, "dup", body, id), -EEXIST);
    TK_ASSERT(strstr(docker_last_error(d), "HTTP 409") != NULL);
    TK_ASSERT(strstr(docker_last_error(d), "is already in use") != NULL);
    TK_ASSERT_EQ(docker_create_text(d, "after", body, id), 0);
    TK_ASSERT(id[63] == '3');
    /* an answer cut short is an error, not a second create */
    TK_ASSERT_EQ(docker_create_text(d, "cut", body, id), -EIO);
    TK_ASSERT(strstr(docker_last_error(d), "mid-answer") != NULL);
    TK_ASSERT_EQ(docker_create_text(d, "fine", body, id), 0);
    TK_ASSERT(id[63] == '1');
    /* a large body goes whole (the fake drops it after reading it all) */
    size_t big = 12000;
    char *text = malloc(big + 32);
    TK_ASSERT(text != NULL);
    int n = snprintf(text, big + 32, "{\"Image\":\"x\",\"Pad\":\"");
    memset(text + n, 'p', big - (size_t)n);
    snprintf(text + big, 32, "\"}");
    TK_ASSERT_EQ(docker_create_text(d, "big", text, id), 0);
    TK_ASSERT(id[63] == '2');
    free(text);
    docker_close(d);
    fake_stop(&f);
    /* no engine at all */
    TK_ASSERT_EQ(docker_open(&d, f.path), -ECONNREFUSED);
}

/* docker.runtime against an engine that has runc only; the engine's words in an async
 * answer's error */
TK_TEST(fake_runtime_choice_and_async_errors)
{
    struct fake f;
    fake_start(&f, "{\"ApiVersion\":\"1.41\",\"MinAPIVersion\":\"1.12\"}");
    struct docker *d = NULL;
    TK_ASSERT_EQ(docker_open(&d, f.path), 0);
    config_defaults(&tk.cfg);
    struct sandbox_env env = {.cfg = &tk.cfg};
    char msg[768];
    TK_ASSERT_EQ(tk.cfg.docker_runtime, TK_RUNTIME_AUTO);                    /* the default */
    TK_ASSERT_EQ(sandbox_choose_runtime(d, &env, true, msg, sizeof msg), 1); /* falls back */
    TK_ASSERT_STREQ(sandbox_runtime, "runc");
    TK_ASSERT(strstr(msg, "crun is not usable (the engine has no such runtime); using runc"));
    tk.cfg.docker_runtime = TK_RUNTIME_CRUN;
    TK_ASSERT_EQ(sandbox_choose_runtime(d, &env, false, msg, sizeof msg), 1);
    TK_ASSERT(strstr(msg, "docker.runtime = crun, but crun is not usable") != NULL);
    tk.cfg.docker_runtime = TK_RUNTIME_RUNC;
    TK_ASSERT_EQ(sandbox_choose_runtime(d, &env, true, msg, sizeof msg), 0);
    TK_ASSERT_STREQ(msg, "");
    tk.cfg.docker_runtime = TK_RUNTIME_RUNSC; /* permissive: runc, loudly */
    TK_ASSERT_EQ(sandbox_choose_runtime(d, &env, true, msg, sizeof msg), 1);
    TK_ASSERT_STREQ(sandbox_runtime, "runc");
    TK_ASSERT(strstr(msg, "gVisor is not usable") != NULL);
    tk.cfg.docker_security_mode = TK_SECURITY_STRICT;
    TK_ASSERT_EQ(sandbox_choose_runtime(d, &env, true, msg, sizeof msg), -EPERM);
    TK_ASSERT(strstr(msg, "strict refuses runc") != NULL);
    tk.cfg.docker_runtime = TK_RUNTIME_AUTO;
    TK_ASSERT_EQ(sandbox_choose_runtime(d, &env, true, msg, sizeof msg), -EPERM);
    TK_ASSERT(strstr(msg, "strict requires docker.runtime = runsc") != NULL);
    config_free(&tk.cfg);

    int fd = -1;
    TK_ASSERT_EQ(docker_start_async(d, "e500", &fd), 0);
    TK_ASSERT_EQ(docker_async_finish(d, fd, 5000), -EIO);
    TK_ASSERT(strstr(docker_last_error(d), "answered 500: OCI runtime create failed") != NULL);
    TK_ASSERT_EQ(docker_remove_async(d, "nosuch", &fd), 0);
    TK_ASSERT_EQ(docker_async_finish(d, fd, 5000), -ENOENT);
    docker_close(d);
    fake_stop(&f);
}

TK_TEST(fake_version_negotiation)
{
    static const struct {
        const char *json;
        const char *want; /* NULL: docker_open fails with -EIO */
    } cases[] = {
        {"{\"ApiVersion\":\"1.40\",\"MinAPIVersion\":\"1.12\"}", "1.40"},
        {"{\"ApiVersion\":\"1.41\",\"MinAPIVersion\":\"1.12\"}", "1.41"},
        {"{\"ApiVersion\":\"1.52\",\"MinAPIVersion\":\"1.24\"}", "1.41"},
        {"{\"ApiVersion\":\"2.3\",\"MinAPIVersion\":\"2.0\"}", "2.0"},
        {"{\"ApiVersion\":\"1.45\"}", "1.41"},
        {"{\"Version\":\"x\"}", NULL},
        {"not json", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fake f;
        fake_start(&f, cases[i].json);
        struct docker *d = NULL;
        int rc = docker_open(&d, f.path);
        if (cases[i].want) {
            TK_ASSERT_EQ(rc, 0);
            TK_ASSERT_STREQ(docker_api_version(d), cases[i].want);
            TK_ASSERT_EQ(docker_ping(d), 0);
        } else {
            TK_ASSERT_EQ(rc, -EIO);
            TK_ASSERT(d == NULL);
            TK_ASSERT(docker_last_error(NULL)[0] != '\0');
        }
        docker_close(d);
        fake_stop(&f);
    }
}

int main(int argc, char **argv)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(run_id, sizeof run_id, "%d-%lld%09ld", (int)getpid(), (long long)ts.tv_sec,
             ts.tv_nsec);
    snprintf(run_label, sizeof run_label, "%s=%s", RUN_KEY, run_id);
    if (ensure_image() < 0) {
        fprintf(stderr, "cannot build the test image %s\n", IMG);
        return 2;
    }
    int rc = tk_test_main(argc, argv);

    /* sweep whatever a failed case left behind */
    struct docker *d = NULL;
    if (docker_open(&d, SOCK) == 0) {
        remove_label(d, run_label);
        docker_close(d);
    }
    return rc;
}
