/*
 * api_envs.c — the job types (environments): GET /job-types, GET /job-types/{name}, and
 * POST /job-types/{name}/build.
 *
 * A build takes minutes (apt, pip) and blocks on the Docker engine, which an acceptor's
 * event loop must never do. So the acceptor forks a builder child for it: the child runs
 * jobtype_build (common/jobtypes.c) with a Docker handle of its own, writes one JSON line
 * with the outcome to a pipe and exits; the acceptor watches the pipe with libevent,
 * records the new version in PostgreSQL (job_type_builds) and replies. One build per job
 * type at a time, across acceptors: a flock on <data_dir>/builds/NAME.lock, held by the
 * child (409 while it runs). The child dies with its acceptor (PR_SET_PDEATHSIG).
 */
#include "acceptor.h"
#include "tako/jobtypes.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- listings ---- */

static int list_item(const char *item, size_t len, void *arr)
{
    json_array_append_new(arr, json_stringn(item, len));
    return 0;
}

static int env_key(const char *item, size_t len, void *arr)
{
    json_array_append_new(arr,
                          json_stringn(item, strcspn(item, "=") < len ? strcspn(item, "=") : len));
    return 0;
}

static json_t *comma_list(const char *s, int (*fn)(const char *, size_t, void *))
{
    json_t *a = json_array();
    jobtype_each(s, fn, a);
    return a;
}

/* Job type `name`'s entry in the master's table of latest images, or NULL. */
static _Atomic uint32_t *image_flag(const char *name)
{
    for (size_t i = 0; i < TK_MAX_JOB_TYPES && tk.shm->jt_images[i].name[0]; i++)
        if (!strcmp(tk.shm->jt_images[i].name, name))
            return &tk.shm->jt_images[i].exists;
    return NULL;
}

static bool image_exists(const char *name)
{
    _Atomic uint32_t *f = image_flag(name);
    return f && atomic_load(f) != 0;
}

/* A job type as the API shows it; `builds` are its rows of job_type_builds, newest first
 * (NULL when the database did not answer). */
static json_t *job_type_json(const struct tk_job_type *t, json_t *builds)
{
    char mem[32], image[128];
    if (t->memory_limit % (1 << 30) == 0)
        snprintf(mem, sizeof mem, "%lldg", (long long)(t->memory_limit >> 30));
    else
        snprintf(mem, sizeof mem, "%lldm", (long long)(t->memory_limit >> 20));
    jobtype_image(&tk.cfg, t, "latest", image, sizeof image);
    bool is_default = t == &tk.cfg.job_types[0];
    json_t *versions = builds ? json_incref(builds) : json_null();
    json_t *latest =
        json_array_size(builds) ? json_object_get(json_array_get(builds, 0), "version") : NULL;
    return json_pack(
        "{s:s, s:o, s:o, s:s, s:s, s:f, s:I, s:I, s:b, s:o, s:o, s:b, s:b, s:n, s:b, s:s, s:s, "
        "s:O, s:o, s:b}",
        "name", t->name, "requirements", comma_list(t->requirements, list_item), "packages",
        comma_list(t->packages, list_item), "python_version", tk.shm->python_version,
        "memory_limit", mem, "cpu_limit", t->cpu_limit, "timeout", (json_int_t)t->timeout,
        "startup_timeout", (json_int_t)t->startup_timeout, "network_enabled", t->network_enabled,
        "environment", comma_list(t->environment, env_key), "preload",
        comma_list(t->preload, list_item), "session_enabled", 0, "gpu_enabled", 0, "gpu_vendor",
        "image_exists", image_exists(t->name), "image", image, "base_image",
        is_default || !*t->base_image ? tk.cfg.docker_image : t->base_image, "version",
        latest ? latest : json_null(), "versions", versions, "builtin", t->builtin);
}

struct list_req {
    struct evhttp_request *req;
    char corr[72];
    int one; /* index of the one job type asked for, or -1 for all */
};

/* The builds of `name` from the query's rows (job_type, version, digest, image_ref,
 * built_at, build_seconds, version_tag). */
static json_t *builds_of(const PGresult *res, const char *name)
{
    if (!res)
        return NULL;
    json_t *a = json_array();
    for (int r = 0; r < PQntuples(res); r++) {
        if (strcmp(PQgetvalue(res, r, 0), name))
            continue;
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:f, s:s?}", "version",
                                           PQgetvalue(res, r, 1), "digest", PQgetvalue(res, r, 2),
                                           "image_ref", PQgetvalue(res, r, 3), "built_at",
                                           PQgetvalue(res, r, 4), "build_seconds",
                                           atof(PQgetvalue(res, r, 5)), "version_tag",
                                           PQgetisnull(res, r, 6) ? NULL : PQgetvalue(res, r, 6)));
    }
    return a;
}

static void on_builds(const PGresult *res, const char *err, void *arg)
{
    struct list_req *l = arg;
    if (!res)
        log_warn("msg=\"job type versions unavailable\" err=\"%s\"", err);
    if (l->one >= 0) {
        const struct tk_job_type *t = &tk.cfg.job_types[l->one];
        json_t *b = builds_of(res, t->name);
        reply_json(l->req, 200, l->corr, job_type_json(t, b));
        json_decref(b);
    } else {
        json_t *list = json_array();
        for (size_t i = 0; i < tk.cfg.n_job_types; i++) {
            json_t *b = builds_of(res, tk.cfg.job_types[i].name);
            json_array_append_new(list, job_type_json(&tk.cfg.job_types[i], b));
            json_decref(b);
        }
        reply_json(l->req, 200, l->corr, list);
    }
    free(l);
}

static void list_types(struct evhttp_request *req, const char *corr, int one)
{
    struct list_req *l = calloc(1, sizeof *l);
    l->req = req;
    l->one = one;
    snprintf(l->corr, sizeof l->corr, "%s", corr);
    if (pgq_exec(A.pg,
                 "SELECT job_type, version, digest, image_ref, to_json(built_at)#>>'{}',"
                 " coalesce(build_seconds, 0), version_tag FROM job_type_builds"
                 " ORDER BY built_at DESC, version",
                 0, NULL, on_builds, l) < 0)
        on_builds(NULL, "database unavailable", l); /* the types, without their versions */
}

static int type_index(const char *name)
{
    const struct tk_job_type *t = name ? config_job_type(&tk.cfg, name) : NULL;
    return t ? (int)(t - tk.cfg.job_types) : -1;
}

void api_job_types(struct evhttp_request *req, const char *corr, char **params)
{
    list_types(req, corr, -1);
}

void api_job_type(struct evhttp_request *req, const char *corr, char **params)
{
    int i = type_index(params[0]);
    if (i < 0) {
        reply_error(req, 404, corr, "Job type not found");
        return;
    }
    list_types(req, corr, i);
}

/* ---- builds ---- */

struct build_req {
    struct evhttp_request *req;
    char corr[72];
    char name[TK_JOB_TYPE_NAME_MAX + 1];
    char tag[JOBTYPE_TAG_MAX + 1]; /* version_tag, "" for none */
    pid_t pid;
    int fd;
    struct event *ev;
    struct evbuffer *out; /* the child's answer */
    json_t *result;
};

static void build_done(struct build_req *b)
{
    acceptor_let_go();
    json_decref(b->result);
    evbuffer_free(b->out);
    free(b);
    acceptor_maybe_exit();
}

static void on_recorded(const PGresult *res, const char *err, void *arg)
{
    struct build_req *b = arg;
    json_t *r = b->result;
    if (!res) {
        log_error("msg=\"recording a job type build failed\" job_type=%s err=\"%s\"", b->name, err);
        char msg[512];
        snprintf(msg, sizeof msg,
                 "Database unavailable: the image %s was built but its version was not recorded;"
                 " build again",
                 json_string_value(json_object_get(r, "image_ref")));
        reply_error(b->req, 503, b->corr, msg);
    } else {
        const char *tag =
            PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? PQgetvalue(res, 0, 0) : NULL;
        reply_json(b->req, 200, b->corr,
                   json_pack("{s:s, s:s, s:O, s:O, s:O, s:O, s:O, s:s?}", "status", "built",
                             "job_type", b->name, "version", json_object_get(r, "version"),
                             "digest", json_object_get(r, "image_id"), "image_ref",
                             json_object_get(r, "image_ref"), "build_seconds",
                             json_object_get(r, "seconds"), "log_tail",
                             json_object_get(r, "log_tail"), "version_tag", tag));
    }
    build_done(b);
}

/* The child's line: {"rc", "error", "image_id", "version", "image_ref", "seconds",
 * "log_tail"}. */
static void on_child_output(evutil_socket_t fd, short what, void *arg)
{
    struct build_req *b = arg;
    int n = evbuffer_read(b->out, fd, 65536);
    if (n > 0)
        return;
    event_free(b->ev);
    close(b->fd);
    int status = 0;
    waitpid(b->pid, &status, 0); /* it closed the pipe: it has exited or is exiting */
    size_t len = evbuffer_get_length(b->out);
    b->result = len ? json_loadb((const char *)evbuffer_pullup(b->out, -1), len, 0, NULL) : NULL;
    json_t *r = b->result;
    const struct tk_job_type *t = config_job_type(&tk.cfg, b->name);
    if (!r || json_integer_value(json_object_get(r, "rc")) != 0) {
        char msg[1400];
        snprintf(msg, sizeof msg, "Build of job type %s failed: %s", b->name,
                 r ? json_string_value(json_object_get(r, "error"))
                   : "the builder exited without an answer");
        log_error("msg=\"job type build failed\" job_type=%s status=%d err=\"%s\"", b->name, status,
                  r ? json_string_value(json_object_get(r, "error")) : "no answer");
        int code = r && json_integer_value(json_object_get(r, "rc")) == -EINVAL ? 400 : 500;
        reply_json(b->req, code, b->corr,
                   json_pack("{s:s, s:s, s:s?}", "detail", msg, "correlation_id", b->corr,
                             "log_tail",
                             r ? json_string_value(json_object_get(r, "log_tail")) : NULL));
        build_done(b);
        return;
    }
    log_info("msg=\"job type built\" job_type=%s version=%s image=%s seconds=%.1f", b->name,
             json_string_value(json_object_get(r, "version")),
             json_string_value(json_object_get(r, "image_ref")),
             json_real_value(json_object_get(r, "seconds")));
    _Atomic uint32_t *built = image_flag(b->name);
    if (built) /* at once, not at the master's next look */
        atomic_store(built, 1);
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", json_real_value(json_object_get(r, "seconds")));
    const char *p[8] = {b->name,
                        json_string_value(json_object_get(r, "version")),
                        json_string_value(json_object_get(r, "image_id")),
                        json_string_value(json_object_get(r, "image_ref")),
                        t ? t->requirements : "",
                        t ? t->packages : "",
                        secs,
                        b->tag[0] ? b->tag : NULL};
    /* a version keeps the first tag it was given: tags never move (pins stay true) */
    if (pgq_exec(A.pg,
                 "INSERT INTO job_type_builds (job_type, version, digest, image_ref, requirements,"
                 " packages, build_seconds, version_tag) VALUES ($1, $2, $3, $4, $5, $6,"
                 " $7::double precision, $8) ON CONFLICT (job_type, version) DO UPDATE SET"
                 " built_at = now(), build_seconds = EXCLUDED.build_seconds,"
                 " version_tag = coalesce(job_type_builds.version_tag, EXCLUDED.version_tag)"
                 " RETURNING version_tag",
                 8, p, on_recorded, b) < 0)
        on_recorded(NULL, "database unavailable", b);
}

/* In the child: build, answer on fd, exit. Never returns. */
static void __attribute__((noreturn)) builder_child(const struct tk_job_type *t, int fd, int lock)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* Only the pipe and the lock stay open: a client socket of the acceptor's held here
     * would keep that client's connection open after the acceptor closed it. */
    for (int i = 3; i < 65536; i++)
        if (i != fd && i != lock)
            close(i);
    struct sigaction sa = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct jobtype_build_result res;
    memset(&res, 0, sizeof res);
    struct docker *d = NULL;
    int rc = docker_open(&d, tk.cfg.docker_socket);
    const char *err = docker_last_error(d);
    if (rc == 0) {
        rc = jobtype_build(d, &tk.cfg, t, NULL, NULL, &res);
        err = docker_last_error(d);
    }
    json_t *out = json_pack("{s:i, s:s, s:s, s:s, s:s, s:f, s:s}", "rc", rc, "error", rc ? err : "",
                            "image_id", res.image_id, "version", res.version, "image_ref",
                            res.image_ref, "seconds", res.seconds, "log_tail", res.log_tail);
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    for (size_t off = 0, len = text ? strlen(text) : 0; off < len;) {
        ssize_t w = write(fd, text + off, len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    _exit(rc ? 1 : 0);
}

static void start_build(struct evhttp_request *req, const char *corr, const struct tk_job_type *t,
                        const char *tag);

struct tag_check {
    struct evhttp_request *req;
    char corr[72];
    char name[TK_JOB_TYPE_NAME_MAX + 1];
    char tag[JOBTYPE_TAG_MAX + 1];
};

/* A version_tag already on another build is refused before anything is built. */
static void on_tag_checked(const PGresult *res, const char *err, void *arg)
{
    struct tag_check *c = arg;
    const struct tk_job_type *t = config_job_type(&tk.cfg, c->name);
    if (!res) {
        reply_db_unavailable(c->req, c->corr, "Database unavailable; nothing was built");
    } else if (PQntuples(res) > 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "version_tag %s already names version %s of %s (tags never move)",
                 c->tag, PQgetvalue(res, 0, 0), c->name);
        reply_error(c->req, 409, c->corr, msg);
    } else if (!t) {
        reply_error(c->req, 404, c->corr, "Job type not found");
    } else {
        start_build(c->req, c->corr, t, c->tag);
    }
    free(c);
}

void api_job_type_build(struct evhttp_request *req, const char *corr, char **params)
{
    int i = type_index(params[0]);
    if (i < 0) {
        reply_error(req, 404, corr, "Job type not found");
        return;
    }
    if (auth_enabled() && tk.cfg.auth_admin_key[0] && !current_auth.admin) {
        reply_error(req, 403, corr, "Building job type images needs the admin key");
        return;
    }
    if (i == 0) {
        reply_error(req, 400, corr,
                    "The default job type is docker.image, built by `tako setup`; it has no "
                    "build of its own");
        return;
    }
    char *tag = query_param(req, "version_tag");
    if (tag && !jobtype_tag_ok(tag)) {
        free(tag);
        reply_field_error(req, corr, "query", "version_tag", "version_tag_invalid",
                          "version_tag must be 1 to 40 of [A-Za-z0-9._-], not \"latest\" and not "
                          "12 hex digits");
        return;
    }
    if (!tag) {
        start_build(req, corr, &tk.cfg.job_types[i], "");
        return;
    }
    struct tag_check *c = calloc(1, sizeof *c);
    c->req = req;
    snprintf(c->corr, sizeof c->corr, "%s", corr);
    snprintf(c->name, sizeof c->name, "%s", tk.cfg.job_types[i].name);
    snprintf(c->tag, sizeof c->tag, "%s", tag);
    free(tag);
    const char *p[2] = {c->name, c->tag};
    if (pgq_exec(A.pg,
                 "SELECT version FROM job_type_builds WHERE job_type = $1 AND version_tag = $2", 2,
                 p, on_tag_checked, c) < 0)
        on_tag_checked(NULL, "database unavailable", c);
}

/* Fork the builder (one per job type at a time) and watch its answer. */
static void start_build(struct evhttp_request *req, const char *corr, const struct tk_job_type *t,
                        const char *tag)
{
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/builds", tk.cfg.server_data_dir);
    snprintf(path, sizeof path, "%s/%s.lock", dir, t->name);
    int rc = mkdir_p(dir, 0700);
    int lock = rc < 0 ? -1 : open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0) {
        log_error("msg=\"build lock\" path=%s err=\"%s\"", path, strerror(rc < 0 ? -rc : errno));
        reply_error(req, 500, corr, "Could not take the build lock");
        return;
    }
    if (flock(lock, LOCK_EX | LOCK_NB) < 0) {
        close(lock);
        reply_error(req, 409, corr, "A build of this job type is already running");
        return;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        log_error("msg=\"pipe2 for a build failed\" err=\"%s\"", strerror(errno));
        close(lock);
        reply_error(req, 500, corr, "Could not start the build");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        builder_child(t, fds[1], lock); /* keeps `lock` open (and locked) until it exits */
    }
    close(fds[1]);
    close(lock); /* the child's copy holds the lock */
    if (pid < 0) {
        log_error("msg=\"fork for a build failed\" err=\"%s\"", strerror(errno));
        close(fds[0]);
        reply_error(req, 500, corr, "Could not start the build");
        return;
    }
    log_info("msg=\"job type build started\" job_type=%s builder=%d", t->name, (int)pid);
    struct build_req *b = calloc(1, sizeof *b);
    b->req = req;
    snprintf(b->corr, sizeof b->corr, "%s", corr);
    snprintf(b->name, sizeof b->name, "%s", t->name);
    snprintf(b->tag, sizeof b->tag, "%s", tag);
    b->pid = pid;
    b->fd = fds[0];
    b->out = evbuffer_new();
    b->ev = event_new(A.base, fds[0], EV_READ | EV_PERSIST, on_child_output, b);
    event_add(b->ev, NULL);
    acceptor_hold();
}
