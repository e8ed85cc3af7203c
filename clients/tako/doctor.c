/*
 * doctor.c — `tako doctor`: is this machine ready to run takod?
 *
 * One check per thing takod needs, in the order a person would fix them (a broken config
 * hides everything else; no engine makes the image unknowable). Each check ends in one
 * of three verdicts:
 *   PASS  takod will be fine;
 *   WARN  takod runs, but something is degraded or not started yet (no gVisor with
 *         runtime = runc, the managed PostgreSQL takod has not started, < 2 GiB free);
 *   FAIL  takod will not start or not run jobs.
 * and every WARN and FAIL carries a `fix:`, a thing to do rather than a diagnosis.
 * Exit 1 when any check FAILed. Doctor only reads: the one write is a temporary file in
 * data_dir, removed at once; a data_dir that does not exist yet is not created.
 *
 * Last, when a takod is there to ask (--url or TAKO_URL given, or the pidfile names a live
 * takod, then asked at server.listen): the nodes it shares its PostgreSQL with (GET
 * /nodes), one indented line each. A node that is neither stopped nor seen within the
 * lease is a WARN (it died, or is cut off from PostgreSQL); a node that cannot be asked
 * is a WARN too, never a FAIL: this machine can still run takod.
 */
#include "tako.h"
#include "tako/config.h"
#include "tako/docker.h"
#include "tako/jobtypes.h"
#include "tako/sandbox.h"
#include "tako/sandbox_oci.h"
#include "tako/takod.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define DOC_MAX_CHECKS  16
#define DISK_WARN_BYTES (2ull << 30)
#define DISK_FAIL_BYTES (200ull << 20)
#define DB_TIMEOUT      "3" /* seconds: connect_timeout of the database check */

enum verdict { PASS, WARN, FAIL };
static const char *const verdict_name[] = {"PASS", "WARN", "FAIL"};

struct check {
    const char *name;
    enum verdict v;
    char detail[1024];
    char fix[512];
};

struct doctor {
    struct args *a;
    struct tk_config *cfg; /* &tk.cfg: the configuration checked (the runtime probe is told it) */
    struct docker *d;      /* NULL when no engine answers */
    struct check checks[DOC_MAX_CHECKS];
    int n;
    json_t *nodes; /* GET /nodes's answer, when the nodes check got one (--json shows it) */
};

/* Record one verdict and, without --json, print it at once (checks can take seconds). */
static void verdict(struct doctor *doc, const char *name, enum verdict v, const char *fix,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void verdict(struct doctor *doc, const char *name, enum verdict v, const char *fix,
                    const char *fmt, ...)
{
    if (doc->n >= DOC_MAX_CHECKS)
        return;
    struct check *c = &doc->checks[doc->n++];
    va_list ap;
    c->name = name;
    c->v = v;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    snprintf(c->fix, sizeof c->fix, "%s", v != PASS && fix ? fix : "");
    if (doc->a->json)
        return;
    printf("%s  %s: %s\n", verdict_name[v], name, c->detail);
    if (c->fix[0])
        printf("      fix: %s\n", c->fix);
    fflush(stdout);
}

/* ---- the checks ---- */

/* The configuration loads. On failure the later checks run on the built-in defaults. */
static void check_config(struct doctor *doc)
{
    char src[512], err[1024];
    int rc = tako_machine_config(doc->a, doc->cfg, src, sizeof src, err, sizeof err);
    int n = doc->a->nmulti[O_OVERRIDE];
    if (rc == 0 && n == 0)
        verdict(doc, "config", PASS, NULL, "%s", src);
    if (rc == 0 && n > 0)
        verdict(doc, "config", PASS, NULL, "%s with %d -o override(s)", src, n);
    if (rc == 0)
        return;
    char fix[512];
    snprintf(fix, sizeof fix, "correct it; `takod -t -c %s` prints the effective configuration",
             doc->a->val[O_CONFIG] ? doc->a->val[O_CONFIG] : "FILE");
    verdict(doc, "config", FAIL, fix, "%s (the checks below use the built-in defaults)", err);
    if (config_load(doc->cfg, NULL, NULL, 0, err, sizeof err) < 0)
        config_defaults(doc->cfg);
}

static void check_engine(struct doctor *doc)
{
    const char *sock = doc->cfg->docker_socket;
    int rc = docker_open(&doc->d, sock);
    if (rc == 0)
        rc = docker_ping(doc->d);
    if (rc == 0) {
        verdict(doc, "engine", PASS, NULL, "unix://%s answers (API %s)", sock,
                docker_api_version(doc->d));
        return;
    }
    const char *why = tako_engine_reason(docker_last_error(doc->d));
    docker_close(doc->d);
    doc->d = NULL;
    /* the socket is there but ours to use only with more rights: not a dead engine */
    if (access(sock, F_OK) == 0 && access(sock, R_OK | W_OK) < 0 && errno == EACCES) {
        verdict(doc, "engine", FAIL,
                "run as root, or add this user to the docker group (usermod -aG docker USER)",
                "no permission to use unix://%s", sock);
        return;
    }
    verdict(doc, "engine", FAIL, "start it with `dockerd &` (or systemctl start docker)",
            "no Docker engine answers at unix://%s (%s)", sock, why);
}

/* docker.image is in the engine, built by build-image.sh (it carries the launcher). */
static void check_image(struct doctor *doc)
{
    const char *image = doc->cfg->docker_image;
    if (!doc->d) {
        verdict(doc, "image", WARN, "fix the engine first", "%s not checked: no engine", image);
        return;
    }
    json_t *j = NULL;
    int rc = docker_image_inspect(doc->d, image, &j);
    if (rc == -ENOENT) {
        verdict(doc, "image", FAIL, "run `tako setup` (it builds docker.image)",
                "%s is not in the engine", image);
        return;
    }
    if (rc < 0) {
        verdict(doc, "image", FAIL, "check the engine (docker image inspect)",
                "docker_image_inspect %s: %s", image, docker_last_error(doc->d));
        return;
    }
    const char *id = json_string_value(json_object_get(j, "Id"));
    json_t *labels = json_object_get(json_object_get(j, "Config"), "Labels");
    const char *launcher = json_string_value(json_object_get(labels, "takod.launcher.sha256"));
    const char *py = json_string_value(json_object_get(labels, "takod.python_version"));
    char sid[13];
    docker_short_id(id, sid);
    if (!launcher)
        verdict(doc, "image", WARN, "run `tako setup` (it adds takod's layer)",
                "%s (%s) has no takod launcher label: not built by tako setup", image, sid);
    else
        verdict(doc, "image", PASS, NULL, "%s (%s, python %s)", image, sid, py ? py : "?");
    json_decref(j);
}

/* The other job types' images: missing ones only WARN (a job of that type fails with
 * image_not_built until it is built; `tako run --job-type` builds on first use). */
static void check_job_types(struct doctor *doc)
{
    if (!doc->d) {
        verdict(doc, "job types", WARN, "fix the engine first", "not checked: no engine");
        return;
    }
    char missing[600] = "", image[128];
    size_t n_missing = 0, n = doc->cfg->n_job_types > 0 ? doc->cfg->n_job_types - 1 : 0;
    for (size_t i = 1; i < doc->cfg->n_job_types; i++) {
        jobtype_image(doc->cfg, &doc->cfg->job_types[i], "latest", image, sizeof image);
        if (docker_image_exists(doc->d, image) == 1)
            continue;
        n_missing++;
        size_t used = strlen(missing);
        snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "",
                 doc->cfg->job_types[i].name);
    }
    char fix[700];
    snprintf(fix, sizeof fix,
             "build each with `tako build NAME` against a running takod (POST "
             "/job-types/NAME/build): %s",
             missing);
    if (n_missing)
        verdict(doc, "job types", WARN, fix, "%zu of %zu job types have no image yet: %s",
                n_missing, n, missing);
    else
        verdict(doc, "job types", PASS, NULL, "all %zu job types besides default have an image", n);
}

/* gVisor: needed only when the configuration asks for it (runtime or strict mode). */
static void check_runsc(struct doctor *doc)
{
    bool wanted = doc->cfg->docker_runtime == TK_RUNTIME_RUNSC ||
                  doc->cfg->docker_security_mode == TK_SECURITY_STRICT;
    const char *fix = "./scripts/setup-gvisor.sh (apt-get install runsc; it registers runsc "
                      "with the engine)";
    if (!doc->d) {
        verdict(doc, "runsc", wanted ? FAIL : WARN, "fix the engine first",
                "not checked: no engine");
        return;
    }
    int rc = docker_has_runtime(doc->d, "runsc");
    if (rc < 0)
        verdict(doc, "runsc", wanted ? FAIL : WARN, "check the engine (docker info)",
                "docker_has_runtime runsc: %s", docker_last_error(doc->d));
    else if (rc == 1)
        verdict(doc, "runsc", PASS, NULL, "registered with the engine (docker.runtime = %s)",
                wanted ? "runsc or strict mode" : "not runsc: unused");
    else if (wanted)
        verdict(doc, "runsc", FAIL, fix,
                "not registered with the engine, and docker.runtime = runsc or security_mode = "
                "strict needs it");
    else
        verdict(doc, "runsc", WARN, fix,
                "not registered with the engine (only docker.runtime = "
                "runsc needs it)");
}

/* The runtime takod would pick (docker.runtime; auto and crun run a probe container). */
static void check_runtime(struct doctor *doc)
{
    if (!doc->d) {
        verdict(doc, "runtime", WARN, "fix the engine first", "not checked: no engine");
        return;
    }
    char err[512], msg[768], want[16];
    if (sandbox_load_seccomp(doc->cfg->docker_seccomp_profile, err, sizeof err) < 0) {
        verdict(doc, "runtime", FAIL, "fix docker.seccomp_profile", "%s", err);
        return;
    }
    struct sandbox_env env = {.cfg = doc->cfg};
    int rc = sandbox_choose_runtime(doc->d, &env, true, msg, sizeof msg);
    if (rc < 0)
        verdict(doc, "runtime", FAIL, "install and register gVisor, or relax security_mode", "%s",
                msg);
    else if (rc == 1)
        verdict(doc, "runtime", WARN,
                doc->cfg->docker_runtime == TK_RUNTIME_RUNSC
                    ? "./scripts/setup-gvisor.sh"
                    : "./scripts/setup-runtime.sh crun (apt-get install crun; registers it)",
                "%s", msg);
    else
        verdict(doc, "runtime", PASS, NULL, "jobs run under %s (docker.runtime = %s)",
                sandbox_runtime,
                config_enum_name("docker.runtime", doc->cfg->docker_runtime, want, sizeof want));
}

/* The executor backend takod would pick (executor.backend; oci and auto set up the OCI
 * runtime and run its probe container, unpacking the image's rootfs if it is not yet). */
static void check_backend(struct doctor *doc)
{
    char want[16], msg[1024], rootfs[4200];
    config_enum_name("executor.backend", doc->cfg->executor_backend, want, sizeof want);
    if (!doc->d) {
        verdict(doc, "backend", WARN, "fix the engine first", "not checked: no engine");
        return;
    }
    if (doc->cfg->executor_rootfs_dir[0])
        snprintf(rootfs, sizeof rootfs, "%s", doc->cfg->executor_rootfs_dir);
    else
        snprintf(rootfs, sizeof rootfs, "%s/rootfs", doc->cfg->server_data_dir);
    /* a state root of this doctor's own (no takod's sweep touches its probe container),
     * removed after the check */
    char instance[64];
    snprintf(instance, sizeof instance, "tako-doctor:%d", (int)getpid());
    struct sandbox_env env = {.cfg = doc->cfg, .instance = instance, .rootfs_dir = rootfs};
    int rc = sandbox_choose_backend(doc->d, &env, msg, sizeof msg);
    oci_release();
    if (rc < 0)
        verdict(doc, "backend", FAIL,
                "run takod as root with crun installed, or set "
                "executor.backend = docker",
                "%s", msg);
    else if (rc == 1)
        verdict(doc, "backend", WARN,
                "run takod as root with crun installed "
                "(scripts/setup-runtime.sh crun)",
                "%s", msg);
    else
        verdict(doc, "backend", PASS, NULL,
                "jobs' containers are made by the %s backend%s%s "
                "(executor.backend = %s)",
                sandbox_backend_name(), sandbox_backend == SANDBOX_OCI ? ", runtime " : "",
                sandbox_backend == SANDBOX_OCI ? oci_runtime() : "", want);
}

/* Connect with connect_timeout and SELECT 1. 0, or -1 with the first line of the error. */
static int db_probe(const char *conninfo, char *ver, size_t vlen, char *err, size_t errlen)
{
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {conninfo, DB_TIMEOUT, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    int rc = -1;
    if (!c) {
        snprintf(err, errlen, "PQconnectdb: out of memory");
        return -1;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
    } else {
        PGresult *r = PQexec(c, "SELECT 1");
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            int v = PQserverVersion(c);
            snprintf(ver, vlen, "PostgreSQL %d.%d", v / 10000, v % 10000);
            rc = 0;
        } else {
            snprintf(err, errlen, "SELECT 1: %s", PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    PQfinish(c);
    err[strcspn(err, "\n")] = '\0';
    return rc;
}

/* The pid in the pidfile when that process lives: takod runs. 0 otherwise. */
static pid_t takod_pid(const struct tk_config *cfg)
{
    FILE *f = cfg->pidfile_path ? fopen(cfg->pidfile_path, "r") : NULL;
    long pid = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 0)
        pid = 0;
    fclose(f);
    if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno != EPERM)
        pid = 0;
    return (pid_t)pid;
}

/* Where the managed PostgreSQL's initdb and postgres are (as pgmanaged.c looks). */
static bool pg_server_binaries(const struct tk_config *cfg, char *dir, size_t len)
{
    char p[4200];
    if (cfg->database_pg_bindir && cfg->database_pg_bindir[0]) {
        snprintf(dir, len, "%s", cfg->database_pg_bindir);
        snprintf(p, sizeof p, "%s/postgres", dir);
        return access(p, X_OK) == 0;
    }
    DIR *d = opendir("/usr/lib/postgresql");
    struct dirent *de;
    int best = -1;
    while (d && (de = readdir(d))) {
        int v = atoi(de->d_name);
        snprintf(p, sizeof p, "/usr/lib/postgresql/%s/bin/postgres", de->d_name);
        if (v > best && access(p, X_OK) == 0)
            best = v;
    }
    if (d)
        closedir(d);
    snprintf(dir, len, "/usr/lib/postgresql/%d/bin", best);
    return best >= 0;
}

/*
 * database.url: it must answer. Empty: takod's own PostgreSQL, on the unix socket
 * <data_dir>/pgsock/.s.PGSQL.5432 as user takod (pgmanaged.c). It exists only while
 * takod runs, so "not running" is a WARN when takod is down (it starts it), and a FAIL
 * only when a running takod's database does not answer.
 */
static void check_database(struct doctor *doc)
{
    char ver[64] = "", err[1024] = "", conninfo[4400], sock[4400], bindir[4200];
    if (doc->cfg->database_url && doc->cfg->database_url[0]) {
        /* never print the url: it may hold a password */
        if (db_probe(doc->cfg->database_url, ver, sizeof ver, err, sizeof err) == 0)
            verdict(doc, "database", PASS, NULL, "database.url answers (%s)", ver);
        else
            verdict(doc, "database", FAIL,
                    "check database.url, and that PostgreSQL runs and lets this user in",
                    "database.url does not answer: %s", err);
        return;
    }
    const char *dd = doc->cfg->server_data_dir;
    pid_t pid = takod_pid(doc->cfg);
    snprintf(sock, sizeof sock, "%s/pgsock/.s.PGSQL.5432", dd);
    if (access(sock, F_OK) == 0) {
        snprintf(conninfo, sizeof conninfo, "host=%s/pgsock port=5432 dbname=takod user=takod", dd);
        if (db_probe(conninfo, ver, sizeof ver, err, sizeof err) == 0) {
            verdict(doc, "database", PASS, NULL, "managed %s answers on %s/pgsock", ver, dd);
            return;
        }
    }
    if (pid > 0) {
        verdict(doc, "database", FAIL, "see <data_dir>/postgresql.log and takod's log",
                "takod (pid %d) runs, but its managed PostgreSQL in %s/pgsock does not answer%s%s",
                (int)pid, dd, err[0] ? ": " : "", err);
        return;
    }
    if (!pg_server_binaries(doc->cfg, bindir, sizeof bindir)) {
        verdict(doc, "database", FAIL,
                "apt-get install postgresql (or set database.pg_bindir, or database.url)",
                "no PostgreSQL server binaries (postgres, initdb) in %s for the managed database",
                bindir);
        return;
    }
    verdict(doc, "database", WARN, "start takod (./scripts/run.sh, or takod -c FILE)",
            "managed PostgreSQL not running (takod starts it; server binaries in %s)", bindir);
}

/* data_dir exists and takes a file, or does not exist yet and can be created. */
static void check_data_dir(struct doctor *doc)
{
    const char *dd = doc->cfg->server_data_dir;
    const char *fix = "create it writable for the user takod runs as (mkdir -p, chown), or set "
                      "server.data_dir";
    struct stat st;
    if (stat(dd, &st) < 0) {
        if (errno != ENOENT) {
            verdict(doc, "data dir", FAIL, fix, "stat %s: %s", dd, strerror(errno));
            return;
        }
        /* the nearest existing ancestor must let takod's mkdir_p through */
        char up[4096];
        snprintf(up, sizeof up, "%s", dd);
        while (access(up, F_OK) < 0) {
            char *sl = strrchr(up, '/');
            if (!sl) {
                snprintf(up, sizeof up, ".");
                break;
            }
            sl[sl == up ? 1 : 0] = '\0';
        }
        if (access(up, W_OK | X_OK) == 0)
            verdict(doc, "data dir", PASS, NULL,
                    "%s does not exist yet; takod creates it (%s is "
                    "writable)",
                    dd, up);
        else
            verdict(doc, "data dir", FAIL, fix, "%s does not exist and %s is not writable: %s", dd,
                    up, strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        verdict(doc, "data dir", FAIL, fix, "%s is not a directory", dd);
        return;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/.tako-doctor.XXXXXX", dd);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        verdict(doc, "data dir", FAIL, fix, "cannot create a file in %s: %s", dd, strerror(errno));
        return;
    }
    close(fd);
    if (unlink(tmp) < 0) {
        verdict(doc, "data dir", FAIL, fix, "unlink %s: %s", tmp, strerror(errno));
        return;
    }
    verdict(doc, "data dir", PASS, NULL, "%s is writable", dd);
}

/* One place's free space into the detail; returns its verdict. */
static enum verdict disk_one(const char *path, const char *what, char *out, size_t len)
{
    unsigned long long bytes;
    char at[4096], human[32];
    int rc = tako_free_bytes(path, &bytes, at, sizeof at);
    if (rc < 0) {
        snprintf(out, len, "%s %s: statvfs: %s", what, path, strerror(-rc));
        return WARN;
    }
    tako_format_bytes(bytes, human, sizeof human);
    snprintf(out, len, "%s %s: %s free", what, at, human);
    return bytes < DISK_FAIL_BYTES ? FAIL : bytes < DISK_WARN_BYTES ? WARN : PASS;
}

/* data_dir (spool, managed PostgreSQL) and the Docker root (images, containers). */
static void check_disk(struct doctor *doc)
{
    char root[4096], a[2048], b[2048];
    tako_docker_root(doc->d, root, sizeof root);
    enum verdict va = disk_one(doc->cfg->server_data_dir, "data_dir", a, sizeof a);
    enum verdict vb = disk_one(root, "Docker root", b, sizeof b);
    enum verdict v = va > vb ? va : vb;
    verdict(doc, "disk space", v,
            "free some space there (docker system prune; database.execution_record_ttl_days "
            "bounds the job records)",
            "%s; %s%s", a, b,
            v == FAIL   ? " (under 200 MiB)"
            : v == WARN ? " (under 2 GiB)"
                        : "");
}

/* ---- the running cluster ---- */

#define NODES_TIMEOUT_S 5
#define NODES_SHOWN     50 /* lines; the rest is counted */

/* Where to ask for the nodes: --url / TAKO_URL, else server.listen when the pidfile names
 * a live takod (a wildcard address is asked on loopback). false: nobody to ask. */
static bool nodes_url(struct doctor *doc, char *url, size_t len)
{
    const char *env = getenv("TAKO_URL");
    if (opt_set(doc->a, O_URL) || (env && *env)) {
        snprintf(url, len, "%s", doc->a->url);
        size_t n = strlen(url);
        while (n > 0 && url[n - 1] == '/')
            url[--n] = '\0';
        return true;
    }
    const struct tk_config *cfg = doc->cfg;
    if (takod_pid(cfg) <= 0 || !cfg->listen_host[0] || cfg->listen_port <= 0)
        return false;
    const char *host = cfg->listen_host;
    if (!strcmp(host, "0.0.0.0"))
        host = "127.0.0.1";
    else if (!strcmp(host, "::"))
        host = "::1";
    snprintf(url, len, strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host,
             cfg->listen_port);
    return true;
}

static void print_nodes(const json_t *nodes)
{
    size_t i, shown = 0;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        if (shown++ >= NODES_SHOWN) {
            printf("      ... and %zu more\n", json_array_size(nodes) - NODES_SHOWN);
            break;
        }
        const char *state = json_is_true(json_object_get(n, "live"))           ? "live"
                            : json_is_string(json_object_get(n, "stopped_at")) ? "stopped"
                                                                               : "STALE";
        const char *addr = json_string_value(json_object_get(n, "address"));
        printf(
            "      node %s: %s, %lld running, %lld queued, %lld executors%s, pid %lld on %s%s%s\n",
            json_string_value(json_object_get(n, "node_id")), state,
            (long long)json_integer_value(json_object_get(n, "running")),
            (long long)json_integer_value(json_object_get(n, "queued")),
            (long long)json_integer_value(json_object_get(n, "executors")),
            json_is_true(json_object_get(n, "cluster")) ? ", cluster" : "",
            (long long)json_integer_value(json_object_get(n, "pid")),
            json_string_value(json_object_get(n, "host")), addr ? ", " : "", addr ? addr : "");
    }
    fflush(stdout);
}

/* GET /nodes of the takod found by nodes_url: PASS when every node is live or stopped. */
static void check_nodes(struct doctor *doc)
{
    char url[600], fix[700];
    if (!nodes_url(doc, url, sizeof url))
        return;
    if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
        verdict(doc, "nodes", WARN, "give --url http://HOST:PORT", "not checked: --url \"%s\"",
                url);
        return;
    }
    /* the admin key: --api-key / TAKO_API_KEY, else the configuration's own */
    const char *key = doc->a->api_key && *doc->a->api_key ? doc->a->api_key
                      : doc->cfg->auth_admin_key && doc->cfg->auth_admin_key[0]
                          ? doc->cfg->auth_admin_key
                          : NULL;
    struct http_client c = {.base_url = url, .api_key = key};
    struct http_resp r;
    if (http_request(&c, "GET", "/nodes", NULL, NODES_TIMEOUT_S, &r) < 0) {
        verdict(doc, "nodes", WARN, "start takod, or give its address with --url",
                "takod at %s does not answer: %s", url, r.err);
        http_resp_free(&r);
        return;
    }
    char detail[512];
    remote_format_detail(&r, detail, sizeof detail);
    json_t *j = json_loadb(r.body, r.len, 0, NULL);
    /* takod's own answer that its database is away (not a proxy's 503 with no node up) */
    const char *etype = json_string_value(json_object_get(j, "error_type"));
    bool db_down = r.status == 503 && etype && !strcmp(etype, "database_unavailable");
    json_t *list = r.status == 200 ? json_object_get(j, "nodes") : NULL;
    if (r.status == 401 || r.status == 403)
        verdict(doc, "nodes", WARN,
                "give the admin key (--api-key KEY or TAKO_API_KEY; auth.admin_key of this "
                "configuration is sent when there is one)",
                "GET %s/nodes: HTTP %ld: %s", url, r.status, detail);
    else if (r.status == 404)
        verdict(doc, "nodes", WARN, "upgrade takod (GET /nodes came with issue #18)",
                "takod at %s has no GET /nodes", url);
    else if (db_down)
        verdict(doc, "nodes", WARN, "see the database check, and takod's log",
                "takod at %s cannot read its database: %s", url, detail);
    else if (r.status != 200 || !json_is_array(list))
        verdict(doc, "nodes", WARN, "see takod's log (behind a load balancer: is any node up?)",
                "GET %s/nodes: HTTP %ld%s%s", url, r.status, detail[0] ? ": " : "", detail);
    http_resp_free(&r);
    if (!json_is_array(list)) {
        json_decref(j);
        return;
    }
    size_t i, live = 0, stopped = 0, stale = 0;
    char stale_ids[300] = "";
    json_t *n;
    json_array_foreach(list, i, n)
    {
        if (json_is_true(json_object_get(n, "live"))) {
            live++;
        } else if (json_is_string(json_object_get(n, "stopped_at"))) {
            stopped++;
        } else {
            size_t used = strlen(stale_ids);
            snprintf(stale_ids + used, sizeof stale_ids - used, "%s%s", used ? ", " : "",
                     json_string_value(json_object_get(n, "node_id")));
            stale++;
        }
    }
    long long lease = (long long)json_integer_value(json_object_get(j, "lease_s"));
    long long unowned = (long long)json_integer_value(json_object_get(j, "queued_unowned"));
    snprintf(fix, sizeof fix,
             "start the stale node again, or look at its path to PostgreSQL (%s); the live nodes "
             "take its jobs over as their leases expire",
             stale_ids);
    verdict(doc, "nodes", stale ? WARN : PASS, fix,
            "%zu node(s) on takod's database (asked %s): %zu live, %zu stale, %zu stopped; %lld "
            "job(s) queued unowned; lease %lld s",
            json_array_size(list), url, live, stale, stopped, unowned, lease);
    if (!doc->a->json)
        print_nodes(list);
    doc->nodes = j;
}

/* ---- output ---- */

static void print_json(const struct doctor *doc, bool ok)
{
    json_t *arr = json_array();
    for (int i = 0; i < doc->n; i++) {
        const struct check *c = &doc->checks[i];
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:o}", "name", c->name, "status",
                                             verdict_name[c->v], "detail", c->detail, "fix",
                                             c->fix[0] ? json_string(c->fix) : json_null()));
    }
    json_t *j = json_pack("{s:o, s:b}", "checks", arr, "ok", ok);
    if (doc->nodes)
        json_object_set(j, "nodes", doc->nodes);
    tako_print_json(j);
    json_decref(j);
}

int cmd_doctor(struct args *a)
{
    static struct doctor doc; /* large: static */
    memset(&doc, 0, sizeof doc);
    doc.a = a;
    doc.cfg = &tk.cfg;
    check_config(&doc);
    check_engine(&doc);
    check_image(&doc);
    check_job_types(&doc);
    check_runsc(&doc);
    check_runtime(&doc);
    check_backend(&doc);
    check_database(&doc);
    check_data_dir(&doc);
    check_disk(&doc);
    check_nodes(&doc);

    bool ok = true;
    for (int i = 0; i < doc.n; i++)
        ok = ok && doc.checks[i].v != FAIL;
    if (a->json)
        print_json(&doc, ok);
    json_decref(doc.nodes);
    docker_close(doc.d);
    config_free(doc.cfg);
    return ok ? TAKO_EXIT_OK : TAKO_EXIT_FAILED;
}
