/*
 * test_config.c — the configuration module: parsing, errors, overrides, cross-key rules,
 * printing, diffing and the shipped conf/tako.conf.
 *
 * config.c is included, not only linked: the table has no BOOL key yet, so the BOOL parser
 * is reached through its static cf_parse(), and a few checks walk cf_keys[]. (The linker
 * then never pulls config.o out of libtakocommon: every config_* symbol is defined here.)
 */
#include "../../common/config.c"

#include "tk_test.h"

#include <dirent.h>
#include <libgen.h>

static char tdir[64]; /* mkdtemp'd in main, removed after the run */

static char *write_conf(const char *name, const char *text)
{
    char *path;
    TK_ASSERT(asprintf(&path, "%s/%s", tdir, name) > 0);
    FILE *f = fopen(path, "w");
    TK_ASSERT(f);
    TK_ASSERT(fputs(text, f) >= 0);
    TK_ASSERT(fclose(f) == 0);
    return path;
}

static bool all_zero(const struct tk_config *cfg)
{
    static const struct tk_config zero;
    return !memcmp(cfg, &zero, sizeof zero);
}

static void assert_err_eq(const char *err, const char *want)
{
    if (strcmp(err, want)) {
        fprintf(stderr, "  got:  %s\n  want: %s\n", err, want);
        TK_ASSERT(!"error text");
    }
}

static void assert_err_has(const char *err, const char *prefix, const char *want)
{
    if (strncmp(err, prefix, strlen(prefix)) || !strstr(err, want)) {
        fprintf(stderr, "  got:  %s\n  want: %s...%s\n", err, prefix, want);
        TK_ASSERT(!"error text");
    }
}

/* Loading `text` fails with -EINVAL, "FILE:LINE: ..." containing `want` (line 0: "FILE: "),
 * and leaves the struct zeroed. */
static void expect_file_err(const char *text, int line, const char *want)
{
    char *path = write_conf("err.conf", text), prefix[512], err[512];
    struct tk_config cfg;
    memset(&cfg, 0xa5, sizeof cfg);
    int rc = config_load(&cfg, path, NULL, 0, err, sizeof err);
    if (rc != -EINVAL)
        fprintf(stderr, "  rc %d for:\n%s\n", rc, text);
    TK_ASSERT_EQ(rc, -EINVAL);
    if (line)
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    else
        snprintf(prefix, sizeof prefix, "%s: ", path);
    assert_err_has(err, prefix, want);
    TK_ASSERT(all_zero(&cfg));
    free(path);
}

/* Applying the one override `o` (no file) fails with exactly `want`. */
static void expect_override_err(const char *o, const char *want)
{
    char *const ov[] = {(char *)o};
    char err[512];
    struct tk_config cfg;
    TK_ASSERT_EQ(config_load(&cfg, NULL, ov, 1, err, sizeof err), -EINVAL);
    assert_err_eq(err, want);
    TK_ASSERT(all_zero(&cfg));
}

static struct tk_config load_ok(const char *path, char *const *ov, size_t n)
{
    struct tk_config cfg;
    char err[512];
    int rc = config_load(&cfg, path, ov, n, err, sizeof err);
    if (rc)
        fprintf(stderr, "  config_load: %d %s\n", rc, err);
    TK_ASSERT_EQ(rc, 0);
    return cfg;
}

static struct tk_config load_override(const char *o)
{
    char *const ov[] = {(char *)o};
    return load_ok(NULL, ov, 1);
}

/* Field-by-field comparison, generated from the table independently of config.c. */
__attribute__((unused)) static void same_STR(const char *n, char *const *a, char *const *b)
{
    if (!*a || !*b || strcmp(*a, *b)) {
        fprintf(stderr, "  %s: \"%s\" != \"%s\"\n", n, *a ? *a : "(null)", *b ? *b : "(null)");
        _exit(1);
    }
}
__attribute__((unused)) static void same_INT(const char *n, const int64_t *a, const int64_t *b)
{
    if (*a != *b) {
        fprintf(stderr, "  %s: %lld != %lld\n", n, (long long)*a, (long long)*b);
        _exit(1);
    }
}
__attribute__((unused)) static void same_SIZE(const char *n, const int64_t *a, const int64_t *b)
{
    same_INT(n, a, b);
}
__attribute__((unused)) static void same_DOUBLE(const char *n, const double *a, const double *b)
{
    if (*a != *b) {
        fprintf(stderr, "  %s: %.17g != %.17g\n", n, *a, *b);
        _exit(1);
    }
}
__attribute__((unused)) static void same_BOOL(const char *n, const bool *a, const bool *b)
{
    if (*a != *b) {
        fprintf(stderr, "  %s: %d != %d\n", n, *a, *b);
        _exit(1);
    }
}
__attribute__((unused)) static void same_ENUM(const char *n, const int *a, const int *b)
{
    if (*a != *b) {
        fprintf(stderr, "  %s: %d != %d\n", n, *a, *b);
        _exit(1);
    }
}

static void assert_same(const struct tk_config *a, const struct tk_config *b)
{
#define SAME(sec, k, type, ...) same_##type(#sec "." #k, &a->sec##_##k, &b->sec##_##k);
    TK_CONFIG_TABLE(SAME)
#undef SAME
    TK_ASSERT_STREQ(a->listen_host, b->listen_host);
    TK_ASSERT_EQ(a->listen_port, b->listen_port);
    TK_ASSERT_STREQ(a->pidfile_path, b->pidfile_path);
}

/* ---- Defaults. ---- */

static void assert_defaults(const struct tk_config *c)
{
    TK_ASSERT_STREQ(c->server_listen, "127.0.0.1:8000");
    TK_ASSERT_EQ(c->server_acceptors, 2);
    TK_ASSERT_EQ(c->server_executors, 4);
    TK_ASSERT_EQ(c->server_warm_containers, 2);
    TK_ASSERT_EQ(c->server_container_starts, 0);
    TK_ASSERT_EQ(c->server_queue_size, 1024);
    TK_ASSERT_STREQ(c->server_data_dir, "/var/lib/takod");
    TK_ASSERT_STREQ(c->server_pidfile, "");
    TK_ASSERT_EQ(c->server_log_level, TK_LEVEL_INFO);
    TK_ASSERT_STREQ(c->server_log_file, "");
    TK_ASSERT_EQ(c->server_shutdown_timeout, 30);
    TK_ASSERT_EQ(c->server_request_timeout, 30);
    TK_ASSERT_STREQ(c->database_url, "");
    TK_ASSERT_STREQ(c->database_managed_user, "postgres");
    TK_ASSERT_STREQ(c->database_pg_bindir, "");
    TK_ASSERT_STREQ(c->docker_socket, "/var/run/docker.sock");
    TK_ASSERT_STREQ(c->docker_image, "code-executor:latest");
    TK_ASSERT_STREQ(c->docker_user, "1000:1000");
    TK_ASSERT_EQ(c->limits_timeout, 30);
    TK_ASSERT_EQ(c->limits_max_timeout, 300);
    TK_ASSERT_EQ(c->limits_memory, 512LL << 20);
    TK_ASSERT(c->limits_cpus == 1.0);
    TK_ASSERT_EQ(c->limits_pids, 100);
    TK_ASSERT_EQ(c->limits_tmpfs_size, 64LL << 20);
    TK_ASSERT_EQ(c->limits_max_stdout_bytes, 64 << 10);
    TK_ASSERT_EQ(c->limits_max_stderr_bytes, 64 << 10);
    TK_ASSERT_EQ(c->limits_max_code_bytes, 100000);
    TK_ASSERT_EQ(c->limits_max_input_bytes, 1 << 20);
    TK_ASSERT_EQ(c->limits_max_payload_bytes, 2 << 20);
    TK_ASSERT_EQ(c->limits_max_artifact_bytes, 10 << 20);
    TK_ASSERT_EQ(c->limits_max_total_artifact_bytes, 50 << 20);
    TK_ASSERT_STREQ(c->listen_host, "127.0.0.1");
    TK_ASSERT_EQ(c->listen_port, 8000);
    TK_ASSERT_STREQ(c->pidfile_path, "/var/lib/takod/takod.pid");
}

TK_TEST(defaults_null_path)
{
    char err[256] = "stale";
    struct tk_config c;
    TK_ASSERT_EQ(config_load(&c, NULL, NULL, 0, err, sizeof err), 0);
    TK_ASSERT_STREQ(err, "");
    assert_defaults(&c);
    TK_ASSERT(CF_NKEYS >= 29); /* a new key: add it to assert_defaults and tako.conf */

    struct tk_config d;
    config_defaults(&d);
    assert_defaults(&d);
    assert_same(&c, &d);
    config_free(&c);
    config_free(&d);
    TK_ASSERT(all_zero(&c));
    config_free(&c); /* safe on a zeroed struct */
}

TK_TEST(log_level_names_match_table)
{
    char buf[32];
    const char *choices = cf_keys[CF_server_log_level].choices;
    for (int i = TK_LEVEL_DEBUG; i <= TK_LEVEL_ERROR; i++)
        TK_ASSERT_STREQ(config_log_level_name(i), cf_enum_name(choices, i, buf, sizeof buf));
    TK_ASSERT(!cf_enum_name(choices, TK_LEVEL_ERROR + 1, buf, sizeof buf));
    TK_ASSERT_STREQ(config_log_level_name(TK_LEVEL_ERROR + 1), "unknown");
    TK_ASSERT_STREQ(config_log_level_name(-1), "unknown");
}

/* The constants code compares docker.runtime/security_mode with name the table's choices */
TK_TEST(enum_names_match_constants)
{
    char buf[32];
    TK_ASSERT_STREQ(config_enum_name("docker.runtime", TK_RUNTIME_RUNC, buf, sizeof buf), "runc");
    TK_ASSERT_STREQ(config_enum_name("docker.runtime", TK_RUNTIME_RUNSC, buf, sizeof buf), "runsc");
    TK_ASSERT_STREQ(config_enum_name("docker.runtime", TK_RUNTIME_CRUN, buf, sizeof buf), "crun");
    TK_ASSERT_STREQ(config_enum_name("docker.runtime", TK_RUNTIME_AUTO, buf, sizeof buf), "auto");
    TK_ASSERT(!config_enum_name("docker.runtime", TK_RUNTIME_AUTO + 1, buf, sizeof buf));
    TK_ASSERT_STREQ(
        config_enum_name("docker.security_mode", TK_SECURITY_PERMISSIVE, buf, sizeof buf),
        "permissive");
    TK_ASSERT_STREQ(config_enum_name("docker.security_mode", TK_SECURITY_STRICT, buf, sizeof buf),
                    "strict");
    TK_ASSERT(!config_enum_name("docker.image", 0, buf, sizeof buf)); /* not an ENUM */
    TK_ASSERT(!config_enum_name("docker.nope", 0, buf, sizeof buf));
    struct tk_config c;
    config_defaults(&c);
    TK_ASSERT_EQ(c.docker_runtime, TK_RUNTIME_AUTO); /* the default */
    config_free(&c);
}

/* ---- A valid file. ---- */

static const char full_conf[] =
    "# takod test configuration\n"
    "; a semicolon comment\n"
    "\n"
    "   \t\n"
    "[server]   # the server\n"
    "  listen   =   \"[::1]:9000\"   # trailing comment\n"
    "acceptors=3\n"
    "executors = 8 ; trailing comment\n"
    "queue_size = 100\n"
    "data_dir = /srv/tako/   \n"
    "pidfile = \"/run/takod.pid\"\n"
    "log_level = debug\n"
    "log_file = \"  spaced # not a comment \\\"q\\\" back\\\\slash ;  \"\n"
    "shutdown_timeout = +10\n"
    "request_timeout = 3600\n"
    "\n"
    "[ database ]\r\n"
    "url = host=db user=tako#not-a-comment\r\n"
    "managed_user = pg  # comment\n"
    "pg_bindir =\n"
    "\n"
    "[docker]\n"
    "socket = /tmp/docker.sock\n"
    "image = \"\"\n"
    "user = 1234:0\n"
    "\n"
    "[limits]\n"
    "timeout = 10\n"
    "max_timeout = 20\n"
    "memory = 1G\n"
    "cpus = 2.5\n"
    "pids = 64\n"
    "tmpfs_size = 2mb\n"
    "max_stdout_bytes = 1024\n"
    "max_stderr_bytes = 2KB\n"
    "max_code_bytes = 7\n"
    "max_input_bytes = 3k\n"
    "max_payload_bytes = 4M\n"
    "max_artifact_bytes = 0\n"
    "max_total_artifact_bytes = 4g\n";

TK_TEST(full_valid_file)
{
    char *path = write_conf("full.conf", full_conf);
    struct tk_config c = load_ok(path, NULL, 0);
    TK_ASSERT_STREQ(c.server_listen, "[::1]:9000");
    TK_ASSERT_STREQ(c.listen_host, "::1");
    TK_ASSERT_EQ(c.listen_port, 9000);
    TK_ASSERT_EQ(c.server_acceptors, 3);
    TK_ASSERT_EQ(c.server_executors, 8);
    TK_ASSERT_EQ(c.server_queue_size, 100); /* stored as given */
    TK_ASSERT_STREQ(c.server_data_dir, "/srv/tako/");
    TK_ASSERT_STREQ(c.server_pidfile, "/run/takod.pid");
    TK_ASSERT_STREQ(c.pidfile_path, "/run/takod.pid");
    TK_ASSERT_EQ(c.server_log_level, TK_LEVEL_DEBUG);
    TK_ASSERT_STREQ(c.server_log_file, "  spaced # not a comment \"q\" back\\slash ;  ");
    TK_ASSERT_EQ(c.server_shutdown_timeout, 10);
    TK_ASSERT_EQ(c.server_request_timeout, 3600);
    TK_ASSERT_STREQ(c.database_url, "host=db user=tako#not-a-comment");
    TK_ASSERT_STREQ(c.database_managed_user, "pg");
    TK_ASSERT_STREQ(c.database_pg_bindir, "");
    TK_ASSERT_STREQ(c.docker_socket, "/tmp/docker.sock");
    TK_ASSERT_STREQ(c.docker_image, "");
    TK_ASSERT_STREQ(c.docker_user, "1234:0");
    TK_ASSERT_EQ(c.limits_timeout, 10);
    TK_ASSERT_EQ(c.limits_max_timeout, 20);
    TK_ASSERT_EQ(c.limits_memory, 1LL << 30);
    TK_ASSERT(c.limits_cpus == 2.5);
    TK_ASSERT_EQ(c.limits_pids, 64);
    TK_ASSERT_EQ(c.limits_tmpfs_size, 2 << 20);
    TK_ASSERT_EQ(c.limits_max_stdout_bytes, 1024);
    TK_ASSERT_EQ(c.limits_max_stderr_bytes, 2048);
    TK_ASSERT_EQ(c.limits_max_code_bytes, 7);
    TK_ASSERT_EQ(c.limits_max_input_bytes, 3072);
    TK_ASSERT_EQ(c.limits_max_payload_bytes, 4 << 20);
    TK_ASSERT_EQ(c.limits_max_artifact_bytes, 0);
    TK_ASSERT_EQ(c.limits_max_total_artifact_bytes, 4LL << 30);
    config_free(&c);
    free(path);
}

TK_TEST(empty_file_and_empty_sections)
{
    char *path = write_conf("empty.conf", "");
    struct tk_config c = load_ok(path, NULL, 0);
    assert_defaults(&c);
    config_free(&c);
    path = write_conf("sections.conf", "[server]\n[limits]\n\n[server]\n# nothing\n");
    c = load_ok(path, NULL, 0);
    assert_defaults(&c);
    config_free(&c);
}

TK_TEST(derived_pidfile_path)
{
    struct tk_config c = load_override("server.data_dir=/srv/tako//");
    TK_ASSERT_STREQ(c.pidfile_path, "/srv/tako/takod.pid");
    config_free(&c);
    c = load_override("server.data_dir=/");
    TK_ASSERT_STREQ(c.pidfile_path, "/takod.pid");
    config_free(&c);
    c = load_override("server.pidfile=run/x.pid");
    TK_ASSERT_STREQ(c.pidfile_path, "run/x.pid");
    config_free(&c);
}

/* ---- File errors: the line, the key, the reason. ---- */

TK_TEST(err_unknown_key)
{
    expect_file_err("[server]\n\nfoo = 1\n", 3, "unknown key server.foo");
    expect_file_err("[limits]\ntimeout = 5\nlisten = x\n", 3, "unknown key limits.listen");
}

TK_TEST(err_unknown_section)
{
    char *path = write_conf("sec.conf", "# a\n[server]\nlisten = \"1.2.3.4:5\"\n\n\n# x\n"
                                        "[dockr]\nimage = x\n");
    char err[512], want[512];
    struct tk_config c;
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    snprintf(want, sizeof want, "%s:7: [dockr] is not a known section", path);
    assert_err_eq(err, want);
    expect_file_err("[]\n", 1, "[] is not a known section");
    expect_file_err("[server\nlisten = x\n", 1, "missing ']'");
    expect_file_err("\n[server] x\n", 2, "unexpected text after [server]");
}

TK_TEST(err_job_type_section)
{
    expect_file_err("[server]\n[job_type.python]\nimage = py\n", 3,
                    "unknown key job_type.python.image");
    expect_file_err("[job_type]\n", 1, "[job_type]: expected [job_type.NAME]");
    expect_file_err("[job_type.default]\n", 1, "the default job type is not configured here");
    expect_file_err("[job_type.Py]\n", 1, "job type name \"Py\" must be 1 to 40 of [a-z0-9_-]");
    expect_file_err("[job_type.a]\ntimeout = 5\ntimeout = 6\n", 3,
                    "duplicate key job_type.a.timeout");
    expect_file_err("[job_type.a]\n[job_type.a]\n", 2,
                    "duplicate section [job_type.a] (first on line 1)");
    expect_file_err("[job_type.a]\nmemory_limit = lots\n", 2,
                    "job_type.a.memory_limit: \"lots\" is not a size");
}

TK_TEST(job_types_builtin_and_configured)
{
    const char *path = write_conf("jt.conf", "[limits]\nmax_timeout = 100\n"
                                             "[job_type.data-processing]\nmemory_limit = 3g\n"
                                             "[job_type.scraper]\nrequirements = \"bs4, lxml>=4\"\n"
                                             "packages = ca-certificates\nnetwork_enabled = yes\n"
                                             "environment = \"A=1, B=x y\"\n");
    struct tk_config c = load_ok(path, NULL, 0);
    TK_ASSERT_EQ(c.n_job_types, 4);
    TK_ASSERT_STREQ(c.job_types[0].name, "default");
    TK_ASSERT_EQ(c.job_types[0].memory_limit, c.limits_memory);
    const struct tk_job_type *dp = config_job_type(&c, "data-processing");
    TK_ASSERT(dp && dp->builtin);
    TK_ASSERT_EQ(dp->memory_limit, 3ll << 30);          /* set here */
    TK_ASSERT_STREQ(dp->requirements, "pandas, numpy"); /* kept from the built-in */
    TK_ASSERT_EQ(dp->timeout, 60);
    const struct tk_job_type *ml = config_job_type(&c, "ml-inference");
    TK_ASSERT(ml && ml->timeout == 100); /* a built-in's 120 s, capped at max_timeout */
    const struct tk_job_type *sc = config_job_type(&c, "scraper");
    TK_ASSERT(sc && !sc->builtin && sc->network_enabled);
    TK_ASSERT_EQ(sc->timeout, 30); /* the table's default */
    TK_ASSERT(!config_job_type(&c, "nope"));
    config_free(&c);
    /* an explicit timeout above max_timeout is an error, not capped */
    path = write_conf("jt2.conf", "[limits]\nmax_timeout = 100\n[job_type.x]\ntimeout = 200\n");
    char err[512];
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    TK_ASSERT(strstr(err, "[job_type.x] (line 3): timeout 200 is above limits.max_timeout 100"));
    path = write_conf("jt3.conf", "[job_type.x]\nrequirements = \"a; rm -rf /\"\n");
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    TK_ASSERT(strstr(err, "requirement \"a; rm -rf /\" is not NAME[extras][specifier]"));
    path = write_conf("jt4.conf", "[job_type.x]\npackages = \"Bad_Name\"\n");
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    TK_ASSERT(strstr(err, "package \"Bad_Name\" is not a Debian package name"));
    path = write_conf("jt5.conf", "[job_type.x]\nenvironment = \"1A=b\"\n");
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    TK_ASSERT(strstr(err, "environment entry \"1A=b\" is not KEY=VALUE"));
    char *bad_url[] = {"environments.pip_index_url=https://x/simple' && rm -rf /"};
    TK_ASSERT_EQ(config_load(&c, NULL, bad_url, 1, err, sizeof err), -EINVAL);
    TK_ASSERT(strstr(err, "is not an http:// or https:// URL of plain characters"));
    char *bad_wh[] = {"environments.wheelhouse=wheels"};
    TK_ASSERT_EQ(config_load(&c, NULL, bad_wh, 1, err, sizeof err), -EINVAL);
    TK_ASSERT(strstr(err, "environments.wheelhouse: \"wheels\" is not an absolute path"));
    /* overrides reach job types, new or built in */
    char *ov[] = {"job_type.ml-inference.cpu_limit=0.5", "job_type.fresh.timeout=7"};
    c = load_ok(NULL, ov, 2);
    TK_ASSERT(config_job_type(&c, "ml-inference")->cpu_limit == 0.5);
    TK_ASSERT_EQ(config_job_type(&c, "fresh")->timeout, 7);
    struct tk_config d;
    TK_ASSERT_EQ(config_copy(&d, &c), 0);
    TK_ASSERT(d.job_types[1].requirements != c.job_types[1].requirements);
    TK_ASSERT_STREQ(d.job_types[1].requirements, c.job_types[1].requirements);
    config_free(&c);
    config_free(&d);
}

TK_TEST(err_duplicate_key)
{
    expect_file_err("[limits]\ntimeout = 5\n[server]\n[limits]\ntimeout = 6\n", 5,
                    "duplicate key limits.timeout (first set on line 2)");
}

TK_TEST(err_bad_int)
{
    expect_file_err("[server]\nacceptors = 2x\n", 2, "server.acceptors: \"2x\" is not an integer");
    expect_file_err("[server]\nacceptors =\n", 2, "server.acceptors: \"\" is not an integer");
    expect_file_err("[server]\nacceptors = 0x10\n", 2, "is not an integer");
    expect_file_err("[server]\nacceptors = 1.0\n", 2, "is not an integer");
    expect_file_err("[server]\nacceptors = - 1\n", 2, "is not an integer");
    expect_file_err("[server]\nacceptors = 4k\n", 2, "is not an integer");
}

TK_TEST(err_int_range)
{
    expect_file_err("[server]\nacceptors = 65\n", 2,
                    "server.acceptors: 65 is above the maximum 64");
    expect_file_err("[server]\n\nacceptors = 0\n", 3, "server.acceptors: 0 is below the minimum 1");
    expect_file_err("[server]\nacceptors = -3\n", 2, "-3 is below the minimum 1");
    expect_file_err("[limits]\ntimeout = 99999999999999999999\n", 2,
                    "limits.timeout: 99999999999999999999 is out of range");
    expect_file_err("[limits]\ntimeout = -99999999999999999999\n", 2, "is out of range");
    /* The example of the brief, to the letter (DOUBLE bounds). */
    char *path = write_conf("cpus.conf", "[limits]\ncpus = 0\n"), err[512], want[512];
    struct tk_config c;
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    snprintf(want, sizeof want, "%s:2: limits.cpus: 0 is below the minimum 0.01", path);
    assert_err_eq(err, want);
    expect_file_err("[limits]\ncpus = 256.5\n", 2, "limits.cpus: 256.5 is above the maximum 256");
}

TK_TEST(err_bad_size)
{
    expect_file_err("[limits]\nmemory = 512x\n", 2, "limits.memory: \"512x\" is not a size");
    expect_file_err("[limits]\nmemory = 512 m\n", 2, "is not a size");
    expect_file_err("[limits]\nmemory = 512mbb\n", 2, "is not a size");
    expect_file_err("[limits]\nmemory = 1.5g\n", 2, "is not a size");
    expect_file_err("[limits]\nmemory = -1\n", 2, "is not a size");
    expect_file_err("[limits]\nmemory = kb\n", 2, "is not a size");
    expect_file_err("[limits]\nmemory = 1p\n", 2, "is not a size");
    expect_file_err("[limits]\nmemory = 8388608t\n", 2, "limits.memory: 8388608t is out of range");
    expect_file_err("[limits]\nmemory = 99999999999999999999\n", 2, "is out of range");
    expect_file_err("[limits]\nmemory = 1m\n", 2, "limits.memory: 1m is below the minimum 6291456");
    expect_file_err("[limits]\nmemory = 2t\n", 2, "2t is above the maximum 1099511627776");

    int64_t v;
    TK_ASSERT_EQ(cf_parse_size("8388607t", &v), 0);
    TK_ASSERT_EQ(v, 8388607LL << 40);
    TK_ASSERT_EQ(cf_parse_size("9223372036854775807", &v), 0);
    TK_ASSERT_EQ(v, INT64_MAX);
    TK_ASSERT_EQ(cf_parse_size("9223372036854775808", &v), -ERANGE);
    TK_ASSERT_EQ(cf_parse_size("512b", &v), 0);
    TK_ASSERT_EQ(v, 512);
}

TK_TEST(bool_values)
{
    /* No key is BOOL yet: drive the parser through a descriptor of our own. */
    const struct cf_key k = {.section = "x", .key = "flag", .name = "x.flag", .type = CF_T_BOOL};
    static const char *const yes[] = {"true", "TRUE", "Yes", "on", "1"};
    static const char *const no[] = {"false", "No", "OFF", "0"};
    static const char *const bad[] = {"", "maybe", "2", "y", "truex", " true"};
    union cf_value v;
    char why[256];
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        v.b = false;
        TK_ASSERT_EQ(cf_parse(&k, yes[i], &v, why, sizeof why), 0);
        TK_ASSERT(v.b);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        v.b = true;
        TK_ASSERT_EQ(cf_parse(&k, no[i], &v, why, sizeof why), 0);
        TK_ASSERT(!v.b);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        TK_ASSERT_EQ(cf_parse(&k, bad[i], &v, why, sizeof why), -EINVAL);
        TK_ASSERT(strstr(why, "is not a boolean"));
    }
}

TK_TEST(err_bad_enum)
{
    expect_file_err("[server]\nlog_level = verbose\n", 2,
                    "server.log_level: \"verbose\" is not one of debug|info|warn|error");
    expect_file_err("[server]\nlog_level = inf\n", 2, "is not one of");
    expect_file_err("[server]\nlog_level =\n", 2, "is not one of");
    struct tk_config c = load_override("server.log_level=WARN"); /* case-insensitive */
    TK_ASSERT_EQ(c.server_log_level, TK_LEVEL_WARN);
    config_free(&c);
}

TK_TEST(err_bad_double)
{
    expect_file_err("[limits]\ncpus = abc\n", 2, "limits.cpus: \"abc\" is not a finite number");
    expect_file_err("[limits]\ncpus = inf\n", 2, "is not a finite number");
    expect_file_err("[limits]\ncpus = nan\n", 2, "is not a finite number");
    expect_file_err("[limits]\ncpus = 1e999\n", 2, "is not a finite number");
    expect_file_err("[limits]\ncpus = 1.5x\n", 2, "is not a finite number");
    expect_file_err("[limits]\ncpus =\n", 2, "is not a finite number");
}

TK_TEST(err_missing_equals)
{
    expect_file_err("[server]\nlisten 1.2.3.4:80\n", 2,
                    "missing '=' in \"listen 1.2.3.4:80\" (expected key = value)");
    expect_file_err("[server]\n\n\nexecutors\n", 4, "missing '=' in \"executors\"");
    expect_file_err("[server]\n = 5\n", 2, "missing key before '='");
    expect_file_err("timeout = 5\n", 1, "key timeout is outside any [section]");
}

TK_TEST(err_quotes)
{
    expect_file_err("[docker]\nimage = \"abc\n", 2, "docker.image: unterminated quoted string");
    expect_file_err("[docker]\nimage = \"abc\\\"\n", 2, "unterminated quoted string");
    expect_file_err("[docker]\n\nimage = \"a\" b\n", 3,
                    "docker.image: unexpected text after the closing quote");
    expect_file_err("[docker]\nimage = \"a\\nb\"\n", 2, "docker.image: unknown escape \\n");
    expect_file_err("[docker]\nimage = \"a\x01\"\n", 2,
                    "docker.image: \"a\x01\" contains a control");
    /* A quoted number is still a number. */
    char *path = write_conf("q.conf", "[limits]\ntimeout = \"12\" # c\n");
    struct tk_config c = load_ok(path, NULL, 0);
    TK_ASSERT_EQ(c.limits_timeout, 12);
    config_free(&c);
}

TK_TEST(err_missing_file)
{
    char err[512], *path;
    TK_ASSERT(asprintf(&path, "%s/does-not-exist.conf", tdir) > 0);
    struct tk_config c;
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -ENOENT);
    assert_err_has(err, path, ": No such file or directory");
    TK_ASSERT(all_zero(&c));
    /* A tiny error buffer truncates but stays a string; NULL means no message. */
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, 4), -ENOENT);
    TK_ASSERT_EQ(strlen(err), 3);
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, NULL, 0), -ENOENT);
}

TK_TEST(err_nul_byte)
{
    char *path;
    TK_ASSERT(asprintf(&path, "%s/nul.conf", tdir) > 0);
    FILE *f = fopen(path, "w");
    TK_ASSERT(f);
    fwrite("[server]\nlisten\0 = x\n", 1, 21, f);
    fclose(f);
    char err[512];
    struct tk_config c;
    TK_ASSERT_EQ(config_load(&c, path, NULL, 0, err, sizeof err), -EINVAL);
    assert_err_has(err, path, ":2: NUL byte");
}

/* ---- Overrides. ---- */

TK_TEST(overrides_apply_and_win)
{
    char *path = write_conf("ov.conf", "[limits]\ntimeout = 10\nmax_timeout = 20\n"
                                       "[docker]\nimage = file:1\n");
    char *const ov[] = {"limits.timeout=15",     "server.log_level=warn", "limits.timeout=12",
                        "docker.image= spaced ", " limits.memory =1g",    "server.pidfile="};
    struct tk_config c = load_ok(path, ov, sizeof ov / sizeof ov[0]);
    TK_ASSERT_EQ(c.limits_timeout, 12);
    TK_ASSERT_EQ(c.limits_max_timeout, 20);
    TK_ASSERT_EQ(c.server_log_level, TK_LEVEL_WARN);
    TK_ASSERT_STREQ(c.docker_image, " spaced "); /* an override's value is verbatim */
    TK_ASSERT_EQ(c.limits_memory, 1LL << 30);
    TK_ASSERT_STREQ(c.server_pidfile, "");
    config_free(&c);

    c = load_override("database.url=host=db port=5432");
    TK_ASSERT_STREQ(c.database_url, "host=db port=5432");
    config_free(&c);
}

TK_TEST(overrides_bad)
{
    expect_override_err("limits.timeout", "-o limits.timeout: expected section.key=value");
    expect_override_err("timeout=5", "-o timeout=5: expected section.key=value");
    expect_override_err(".timeout=5", "-o .timeout=5: expected section.key=value");
    expect_override_err("limits.=5", "-o limits.=5: expected section.key=value");
    expect_override_err("", "-o : expected section.key=value");
    expect_override_err("server.foo=1", "-o server.foo: unknown key server.foo");
    expect_override_err("dockr.image=x", "-o dockr.image: [dockr] is not a known section");
    expect_override_err("job_type.py.image=x",
                        "-o job_type.py.image: unknown key job_type.py.image");
    expect_override_err("job_type.default.timeout=3",
                        "-o job_type.default.timeout: the default job type is not configured here: "
                        "it is docker.image with the [limits] section");
    expect_override_err("limits.cpus=0", "-o limits.cpus: 0 is below the minimum 0.01");
    expect_override_err("limits.timeout=abc", "-o limits.timeout: \"abc\" is not an integer");
    expect_override_err("limits.timeout= 5", "-o limits.timeout: \" 5\" is not an integer");
    expect_override_err("server.log_level=loud",
                        "-o server.log_level: \"loud\" is not one of debug|info|warn|error");
    expect_override_err("docker.image=a\nb", "-o docker.image: \"a\nb\" contains a control "
                                             "character");

    /* The file was fine; the error names the override, and the first bad one stops. */
    char *path = write_conf("ok.conf", "[limits]\ntimeout = 10\n");
    char *const ov[] = {"limits.timeout=11", "limits.pids=7", "nonsense"};
    char err[512];
    struct tk_config c;
    TK_ASSERT_EQ(config_load(&c, path, ov, 3, err, sizeof err), -EINVAL);
    assert_err_eq(err, "-o limits.pids: 7 is below the minimum 8");
}

/* ---- Cross-key rules. ---- */

TK_TEST(cross_timeout)
{
    expect_file_err("[limits]\ntimeout = 400\n", 0,
                    "limits.timeout 400 is above limits.max_timeout 300");
    char *path = write_conf("t.conf", "[limits]\ntimeout = 100\n");
    char *const ov[] = {"limits.max_timeout=50"};
    char err[512];
    struct tk_config c;
    TK_ASSERT_EQ(config_load(&c, path, ov, 1, err, sizeof err), -EINVAL);
    assert_err_eq(err, "-o limits.max_timeout: limits.timeout 100 is above limits.max_timeout 50");
    c = load_override("limits.timeout=300"); /* equal is fine */
    config_free(&c);
}

TK_TEST(cross_listen_bad)
{
    static const char *const bad[][2] = {
        {"127.0.0.1:0", "port 0 is not in 1..65535"},
        {"127.0.0.1:70000", "port 70000 is not in 1..65535"},
        {"127.0.0.1:65536", "port 65536 is not in 1..65535"},
        {"127.0.0.1", "has no :PORT"},
        {"127.0.0.1:", "port \"\" is not a number"},
        {"localhost:http", "port \"http\" is not a number"},
        {"localhost:+80", "is not a number"},
        {"localhost:0080x", "is not a number"},
        {"localhost:123456", "port 123456 is not in 1..65535"},
        {":8000", "missing host"},
        {"::1:8000", "put an IPv6 address in brackets"},
        {"[::1]", "has no :PORT"},
        {"[::1]8000", "has no :PORT"},
        {"[::1:8000", "missing ']'"},
        {"[]:8000", "missing host"},
        {"[zz::1]:80", "\"zz::1\" is not a valid IPv6 address"},
        {"[127.0.0.1]:80", "is not a valid IPv6 address"},
        {"256.1.1.1:80", "\"256.1.1.1\" is not a valid IPv4 address"},
        {"1.2.3:80", "is not a valid IPv4 address"},
        {"bad host:80", "\"bad host\" is not a valid hostname"},
        {"-foo:80", "is not a valid hostname"},
        {"foo-.bar:80", "is not a valid hostname"},
        {"foo..bar:80", "is not a valid hostname"},
        {"", "has no :PORT"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *o, want[256];
        TK_ASSERT(asprintf(&o, "server.listen=%s", bad[i][0]) > 0);
        char *const ov[] = {o};
        char err[512];
        struct tk_config c;
        TK_ASSERT_EQ(config_load(&c, NULL, ov, 1, err, sizeof err), -EINVAL);
        snprintf(want, sizeof want, "-o server.listen: ");
        assert_err_has(err, want, bad[i][1]);
        free(o);
    }
    /* From the file: FILE: key: reason, no line. */
    expect_file_err("[server]\nlisten = 10.0.0.1:0\n", 0,
                    "server.listen: \"10.0.0.1:0\": port 0 is not in 1..65535");
}

TK_TEST(cross_listen_good)
{
    static const struct {
        const char *listen, *host;
        int port;
    } good[] = {
        {"[::1]:8000", "::1", 8000},
        {"[::]:1", "::", 1},
        {"[2001:db8::42]:65535", "2001:db8::42", 65535},
        {"0.0.0.0:80", "0.0.0.0", 80},
        {"localhost:8080", "localhost", 8080},
        {"api-1.example.com:443", "api-1.example.com", 443},
        {"db_host:5432", "db_host", 5432},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *o;
        TK_ASSERT(asprintf(&o, "server.listen=%s", good[i].listen) > 0);
        struct tk_config c = load_override(o);
        TK_ASSERT_STREQ(c.listen_host, good[i].host);
        TK_ASSERT_EQ(c.listen_port, good[i].port);
        config_free(&c);
        free(o);
    }
}

TK_TEST(cross_data_dir)
{
    expect_file_err("[server]\ndata_dir = var/lib/takod\n", 0,
                    "server.data_dir: \"var/lib/takod\" is not an absolute path");
    expect_override_err("server.data_dir=", "-o server.data_dir: \"\" is not an absolute path");
    expect_override_err("server.data_dir=./x",
                        "-o server.data_dir: \"./x\" is not an absolute path");
}

TK_TEST(cross_docker_user)
{
    expect_file_err("[docker]\nuser = 0:1000\n", 0,
                    "docker.user: uid 0 (root) is not allowed for jobs");
    expect_override_err("docker.user=0:0", "-o docker.user: uid 0 (root) is not allowed for jobs");
    static const char *const bad[] = {"1000",        "a:b",     "1000:",        ":1000", "-1:5",
                                      "1000:1000:1", "1 000:5", "4294967295:1", "+5:5",  ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *o, want[256];
        TK_ASSERT(asprintf(&o, "docker.user=%s", bad[i]) > 0);
        snprintf(want, sizeof want, "-o docker.user: \"%s\" is not UID:GID", bad[i]);
        char *const ov[] = {o};
        char err[512];
        struct tk_config c;
        TK_ASSERT_EQ(config_load(&c, NULL, ov, 1, err, sizeof err), -EINVAL);
        assert_err_has(err, want, "");
        free(o);
    }
    struct tk_config c = load_override("docker.user=1000:0"); /* gid 0 is allowed */
    config_free(&c);
    c = load_override("docker.user=4294967294:4294967294");
    config_free(&c);
}

/* ---- Printing, copying, diffing. ---- */

static char *print_to_file(const struct tk_config *c, const char *name)
{
    char *path;
    TK_ASSERT(asprintf(&path, "%s/%s", tdir, name) > 0);
    FILE *f = fopen(path, "w");
    TK_ASSERT(f);
    config_print(c, f);
    TK_ASSERT(fclose(f) == 0);
    return path;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    TK_ASSERT(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

TK_TEST(print_roundtrip)
{
    /* Defaults. */
    struct tk_config a = load_ok(NULL, NULL, 0), b;
    b = load_ok(print_to_file(&a, "defaults.conf"), NULL, 0);
    assert_same(&a, &b);
    config_free(&a);
    config_free(&b);

    /* A file with awkward values, then overrides with more. */
    char *path = write_conf("full.conf", full_conf);
    char *const ov[] = {"limits.cpus=1.2345678901234567",
                        "docker.image=  \"quoted\" \\ # ; \t end  ",
                        "database.url=",
                        "server.log_level=error",
                        "limits.max_artifact_bytes=1025",
                        "server.listen=[2001:db8::1]:1"};
    a = load_ok(path, ov, sizeof ov / sizeof ov[0]);
    char *printed = print_to_file(&a, "printed.conf");
    b = load_ok(printed, NULL, 0);
    assert_same(&a, &b);
    TK_ASSERT(b.limits_cpus == 1.2345678901234567);
    TK_ASSERT_STREQ(b.docker_image, "  \"quoted\" \\ # ; \t end  ");

    /* Printing is a fixed point. */
    char *again = print_to_file(&b, "again.conf"), *text = strdup(slurp(printed));
    TK_ASSERT_STREQ(text, slurp(again));
    config_free(&a);
    config_free(&b);
}

TK_TEST(print_format)
{
    struct tk_config c = load_ok(NULL, NULL, 0);
    char *text = slurp(print_to_file(&c, "fmt.conf"));
    TK_ASSERT(!strncmp(text, "[server]\n# address:port the HTTP API listens on", 47));
    TK_ASSERT(strstr(text, "\n# (needs a restart to change)\nlisten = \"127.0.0.1:8000\"\n"));
    TK_ASSERT(strstr(text, "\n\n[limits]\n# default execution timeout, seconds\ntimeout = 30\n"));
    TK_ASSERT(strstr(text, "\nmemory = 536870912\n"));
    TK_ASSERT(strstr(text, "\ncpus = 1\n"));
    TK_ASSERT(strstr(text, "\nlog_level = info\n"));
    TK_ASSERT(strstr(text, "\npidfile = \"\"\n"));
    TK_ASSERT(strstr(text, "[database]\n"));
    TK_ASSERT(strstr(text, "[docker]\n"));
    /* Every key once, every restart-only key flagged. */
    int keys = 0, restart = 0;
    for (char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        keys += *l != '#' && *l != '[' && *l != '\n';
        restart += !strncmp(l, "# (needs a restart to change)\n", 30);
    }
    int want_restart = 0;
    for (size_t i = 0; i < CF_NKEYS; i++)
        want_restart += (cf_keys[i].flags & CF_NORELOAD) != 0;
    TK_ASSERT_EQ(keys, (int)(CF_NKEYS + (c.n_job_types - 1) * CF_JT_NKEYS));
    TK_ASSERT_EQ(restart, want_restart);
    config_free(&c);
}

TK_TEST(copy_is_deep)
{
    char *path = write_conf("full.conf", full_conf);
    struct tk_config a = load_ok(path, NULL, 0), b, ref = load_ok(path, NULL, 0);
    TK_ASSERT_EQ(config_copy(&b, &a), 0);
    TK_ASSERT(b.server_listen != a.server_listen);
    TK_ASSERT(b.pidfile_path != a.pidfile_path);
    config_free(&a);
    assert_same(&b, &ref);
    config_free(&b);
    config_free(&ref);

    struct tk_config z, zz;
    memset(&z, 0, sizeof z);
    TK_ASSERT_EQ(config_copy(&zz, &z), 0); /* a zeroed struct copies to a zeroed struct */
    TK_ASSERT(all_zero(&zz));
}

TK_TEST(diff_noreload)
{
    char buf[256];
    struct tk_config a = load_ok(NULL, NULL, 0), b, c;
    TK_ASSERT_EQ(config_diff_noreload(&a, &a, buf, sizeof buf), 0);
    TK_ASSERT_STREQ(buf, "");

    char *const ov[] = {"server.executors=8", "limits.timeout=60", "docker.image=other",
                        "server.log_level=debug"};
    b = load_ok(NULL, ov, 4);
    TK_ASSERT_EQ(config_diff_noreload(&a, &b, buf, sizeof buf), 1);
    TK_ASSERT_STREQ(buf, "server.executors");

    char *const ov2[] = {"server.listen=0.0.0.0:8000", "server.executors=8", "database.url=host=x",
                         "limits.memory=1g"};
    c = load_ok(NULL, ov2, 4);
    TK_ASSERT_EQ(config_diff_noreload(&a, &c, buf, sizeof buf), 3);
    TK_ASSERT_STREQ(buf, "server.listen, server.executors, database.url");
    TK_ASSERT_EQ(config_diff_noreload(&a, &c, buf, 10), 3); /* truncated, still counted */
    TK_ASSERT_STREQ(buf, "server.li");
    TK_ASSERT_EQ(config_diff_noreload(&a, &c, NULL, 0), 3);
    config_free(&a);
    config_free(&b);
    config_free(&c);
}

/* ---- The shipped conf/tako.conf. ---- */

static char *shipped_conf(void)
{
    char *file = strdup(__FILE__), *path;
    TK_ASSERT(asprintf(&path, "%s/../../conf/tako.conf", dirname(file)) > 0);
    if (access(path, R_OK))
        fprintf(stderr, "  cannot read %s (run from the source root)\n", path);
    TK_ASSERT(access(path, R_OK) == 0);
    return path;
}

TK_TEST(shipped_conf_loads_as_defaults)
{
    struct tk_config c = load_ok(shipped_conf(), NULL, 0), d = load_ok(NULL, NULL, 0);
    assert_same(&c, &d);
    config_free(&c);
    config_free(&d);
}

TK_TEST(shipped_conf_commented_values_are_defaults)
{
    /* Uncomment every "#key = value" line: each key once, and the values are the defaults. */
    char *text = slurp(shipped_conf()), *out = malloc(strlen(text) + 1), *w = out;
    TK_ASSERT(out);
    int keys = 0;
    for (char *l = text; *l;) {
        char *nl = strchr(l, '\n');
        size_t len = nl ? (size_t)(nl - l + 1) : strlen(l);
        size_t name = strspn(l + 1, "abcdefghijklmnopqrstuvwxyz_");
        if (l[0] == '#' && name && !strncmp(l + 1 + name, " = ", 3)) {
            memcpy(w, l + 1, len - 1);
            w += len - 1;
            keys++;
        } else {
            memcpy(w, l, len);
            w += len;
        }
        l += len;
    }
    *w = '\0';
    TK_ASSERT_EQ(keys, CF_NKEYS);
    struct tk_config c = load_ok(write_conf("uncommented.conf", out), NULL, 0);
    struct tk_config d = load_ok(NULL, NULL, 0);
    assert_same(&c, &d);
    config_free(&c);
    config_free(&d);
}

int main(int argc, char **argv)
{
    snprintf(tdir, sizeof tdir, "/tmp/test_config.XXXXXX");
    if (!mkdtemp(tdir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = tk_test_main(argc, argv);
    DIR *d = opendir(tdir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char p[512];
        snprintf(p, sizeof p, "%s/%s", tdir, e->d_name);
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(tdir);
    return rc;
}
