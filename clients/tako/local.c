/*
 * local.c — `tako run`: one job in library mode, with no server and no database, through
 * the executor code takod itself uses (common/sandbox.c, outputs.c, result.c): the same
 * hardened container spec, the same in-container launcher, the same classification and
 * the same result JSON.
 *
 * Steps (as workers/executor.c's run_job, minus the rings and PostgreSQL):
 *   config (defaults, a tako.conf if --config, then the command line's limits)
 *   → seccomp profile → Docker engine and image → a private directory under /tmp
 *   → sandbox_prepare (create, attach, start the container) → code/main.py,
 *   input/data.json, input/stdin → sandbox_run → outputs_collect → result_classify
 *   → result_build → print → sandbox_discard.
 */
#include "tako.h"
#include "tako/config.h"
#include "tako/docker.h"
#include "tako/log.h"
#include "tako/outputs.h"
#include "tako/result.h"
#include "tako/jobtypes.h"
#include "tako/sandbox.h"
#include "tako/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PKG_MAX_FILES 20000
#define PKG_MAX_BYTES (512ull << 20)

/* The run's configuration: library mode has no daemon context (`tk`); every module it
 * calls takes what it needs from this (sandbox_env, result_classify, jobtypes). */
static struct tk_config cfg;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* An error before the program could run: one line on stderr, or the JSON shape the SDK
 * reads (success false, error, error_type) on stdout with --json. */
static int infra_error(const struct args *a, int code, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int infra_error(const struct args *a, int code, const char *type, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (a->json) {
        json_t *j = json_pack("{s:s, s:s, s:n, s:b, s:n, s:s, s:s, s:n, s:s, s:[]}", "stdout", "",
                              "stderr", "", "exit_code", "success", 0, "output", "error", msg,
                              "error_type", type, "duration_ms", "status", "error", "artifacts");
        tako_print_json(j);
        json_decref(j);
    }
    fprintf(stderr, "tako run: %s\n", msg);
    return code;
}

/* ---- --package-dir: a read-only snapshot importable by the directory's name ---- */

struct pkg_budget {
    size_t files;
    unsigned long long bytes;
    char err[512];
};

static int copy_file(int sfd, const char *dst, mode_t mode, struct pkg_budget *b)
{
    int dfd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (dfd < 0)
        return -errno;
    char buf[65536];
    int rc = 0;
    for (;;) {
        ssize_t n = read(sfd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        b->bytes += (unsigned long long)n;
        if (b->bytes > PKG_MAX_BYTES) {
            rc = -EFBIG;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(dfd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = w < 0 ? -errno : -EIO;
                break;
            }
            off += w;
        }
        if (rc)
            break;
    }
    if (close(dfd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

/*
 * Copy directory src (an open fd) into dst (created, 0755): directories and regular files
 * (a symlink to a file is copied as the file; symlinked directories, hidden entries,
 * __pycache__ and special files are skipped). Files become 0644 (0755 if executable) so
 * the container's unprivileged user can read them.
 */
static int copy_tree(int sfd, const char *dst, int depth, struct pkg_budget *b)
{
    if (depth > 32) {
        snprintf(b->err, sizeof b->err, "directories nested too deep");
        return -ELOOP;
    }
    if (mkdir(dst, 0755) < 0 && errno != EEXIST)
        return -errno;
    chmod(dst, 0755);
    DIR *d = fdopendir(sfd);
    if (!d) {
        close(sfd);
        return -errno;
    }
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        if (name[0] == '.' || !strcmp(name, "__pycache__"))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        bool link = S_ISLNK(st.st_mode);
        if (link && fstatat(dirfd(d), name, &st, 0) < 0)
            continue; /* dangling */
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dst, name) >= sizeof path)
            continue;
        if (++b->files > PKG_MAX_FILES) {
            snprintf(b->err, sizeof b->err, "more than %d files", PKG_MAX_FILES);
            rc = -EFBIG;
            break;
        }
        if (S_ISDIR(st.st_mode) && !link) {
            int cfd = openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd >= 0)
                rc = copy_tree(cfd, path, depth + 1, b);
        } else if (S_ISREG(st.st_mode)) {
            int ffd = openat(dirfd(d), name, O_RDONLY | O_CLOEXEC);
            if (ffd < 0)
                continue;
            rc = copy_file(ffd, path, (st.st_mode & 0111) ? 0755 : 0644, b);
            close(ffd);
            if (rc == -EFBIG)
                snprintf(b->err, sizeof b->err, "more than %llu MiB", PKG_MAX_BYTES >> 20);
        }
    }
    closedir(d);
    return rc;
}

/* Stage each --package-dir D as a snapshot <tmp>/pkg/<i>/<basename(D)>; sandbox.c mounts it
 * read-only at /packages/<i>/<basename> and puts /packages/<i> on PYTHONPATH, so
 * `import <basename>` works. */
static int stage_packages(const struct args *a, const char *tmp, char **staged, char *err,
                          size_t errlen)
{
    for (int i = 0; i < a->nmulti[O_PACKAGE_DIR]; i++) {
        const char *src = a->multi[O_PACKAGE_DIR][i];
        char real[PATH_MAX];
        struct stat st;
        if (!realpath(src, real) || stat(real, &st) < 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "--package-dir %s: %s", src,
                     errno ? strerror(errno) : "not a directory");
            return -1;
        }
        const char *base = strrchr(real, '/');
        base = base && base[1] ? base + 1 : "pkg";
        if (asprintf(&staged[i], "%s/pkg/%d", tmp, i) < 0)
            return -1;
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", staged[i]);
        free(staged[i]);
        if (asprintf(&staged[i], "%s/%s", parent, base) < 0)
            return -1;
        const char *dst = staged[i];
        int rc = mkdir_p(parent, 0755);
        int sfd = rc == 0 ? open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (sfd < 0) {
            snprintf(err, errlen, "--package-dir %s: %s", src, strerror(rc ? -rc : errno));
            return -1;
        }
        struct pkg_budget b = {0};
        rc = copy_tree(sfd, dst, 0, &b);
        if (rc < 0) {
            snprintf(err, errlen, "--package-dir %s: %s", src, b.err[0] ? b.err : strerror(-rc));
            return -1;
        }
    }
    return 0;
}

/* ---- live output (human mode): the program's streams as they come ---- */

struct live {
    size_t shown[3]; /* bytes of stdout (1) and stderr (2) already written */
    char last_err;   /* the last byte written to stderr */
};

static void on_live_output(int stream, const char *data, size_t len, void *arg)
{
    struct live *l = arg;
    if (stream != 1 && stream != 2)
        return;
    FILE *f = stream == 1 ? stdout : stderr;
    fwrite(data, 1, len, f);
    fflush(f);
    l->shown[stream] += len;
    if (stream == 2 && len)
        l->last_err = data[len - 1];
}

/* What live output did not show yet (the kept head minus what was streamed). */
static void show_rest(struct live *l, int stream, const struct tk_capbuf *b)
{
    size_t from = l->shown[stream] < b->len ? l->shown[stream] : b->len;
    on_live_output(stream, b->data + from, b->len - from, l);
}

/* ---- leftovers of a `tako run` that was killed (SIGKILL, a crash) ---- */

static bool pid_alive(long pid)
{
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Containers of this host's `tako run`s whose process is gone (label takod.executor is its
 * pid), and their /tmp/tako-run-<pid>-* directories. Best effort, quiet. */
static void sweep_stale(struct docker *d, const char *instance)
{
    json_t *items = NULL;
    char label[600];
    snprintf(label, sizeof label, "takod.instance=%s", instance);
    if (docker_list_with_labels(d, label, &items) == 0) {
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            const char *id = json_string_value(json_object_get(it, "id"));
            const char *pid =
                json_string_value(json_object_get(json_object_get(it, "labels"), "takod.executor"));
            if (id && pid && !pid_alive(atol(pid)))
                docker_remove(d, id);
        }
        json_decref(items);
    }
    DIR *dir = opendir("/tmp");
    struct dirent *de;
    while (dir && (de = readdir(dir)) != NULL) {
        long pid;
        int n = 0;
        if (sscanf(de->d_name, "tako-run-%ld-%n", &pid, &n) == 1 && n > 0 && !pid_alive(pid)) {
            char path[PATH_MAX];
            struct stat st;
            snprintf(path, sizeof path, "/tmp/%s", de->d_name);
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid()) {
                sandbox_umount_under(path); /* its job directory's tmpfs (as root) */
                rm_rf(path);
            }
        }
    }
    if (dir)
        closedir(dir);
}

/* ---- the run ---- */

static int write_job_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return write_file(path, data, len, 0644);
}

static int save_outputs(const char *dir, const struct tk_outputs *o, char *err, size_t errlen)
{
    int rc = mkdir_p(dir, 0755);
    if (rc < 0) {
        snprintf(err, errlen, "--output-dir %s: %s", dir, strerror(-rc));
        return rc;
    }
    char path[PATH_MAX];
    if (o->output) {
        char *s = json_dumps(o->output, JSON_INDENT(2) | JSON_ENCODE_ANY);
        snprintf(path, sizeof path, "%s/result.json", dir);
        rc = s ? write_file(path, s, strlen(s), 0644) : -ENOMEM;
        free(s);
        if (rc < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(-rc));
            return rc;
        }
    }
    for (size_t i = 0; i < o->n_files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, o->files[i].name);
        rc = write_file(path, o->files[i].data ? o->files[i].data : "", o->files[i].len, 0644);
        if (rc < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(-rc));
            return rc;
        }
    }
    return 0;
}

/* The SandboxResult fields first, then what takod's result also carries. */
static json_t *run_json(json_t *resp, const struct tk_result *r)
{
    double exec_ms =
        json_real_value(json_object_get(json_object_get(resp, "timing"), "execution_ms"));
    json_object_set_new(resp, "duration_ms", json_integer((json_int_t)(exec_ms + 0.5)));
    json_object_set_new(resp, "artifacts_skipped",
                        json_integer((json_int_t)r->outputs.artifacts_skipped));
    if (!strcmp(r->error_type, "interrupted")) { /* result.c words it for takod */
        const char *msg = "tako was interrupted while the job ran; the program was killed";
        json_object_set_new(resp, "error", json_string(msg));
    }
    return resp;
}

static int build_config(const struct args *a, char *err, size_t errlen)
{
    char *ovr[8];
    size_t n = 0;
    int rc = 0;
    /* library mode: the user is the operator; the timeout may be anything the table allows */
    if (asprintf(&ovr[n++], "limits.max_timeout=86400") < 0)
        return -ENOMEM;
    if (opt_set(a, O_TIMEOUT) && asprintf(&ovr[n++], "limits.timeout=%s", a->val[O_TIMEOUT]) < 0)
        rc = -ENOMEM;
    if (!rc && opt_set(a, O_MEMORY) &&
        asprintf(&ovr[n++], "limits.memory=%s", a->val[O_MEMORY]) < 0)
        rc = -ENOMEM;
    if (!rc && opt_set(a, O_CPUS) && asprintf(&ovr[n++], "limits.cpus=%s", a->val[O_CPUS]) < 0)
        rc = -ENOMEM;
    if (!rc && opt_set(a, O_IMAGE) && asprintf(&ovr[n++], "docker.image=%s", a->val[O_IMAGE]) < 0)
        rc = -ENOMEM;
    if (!rc)
        rc = config_load(&cfg, a->val[O_CONFIG], ovr, n, err, errlen);
    for (size_t i = 0; i < n; i++)
        free(ovr[i]);
    return rc;
}

int cmd_run(struct args *a)
{
    uint64_t created = now_mono_us();
    char err[1024];
    log_set_role("tako");
    log_set_level(TK_ERROR);

    /* -- the command line -- */
    if (opt_set(a, O_TIMEOUT)) {
        long t;
        if (tako_parse_long(a->cmd, "--timeout", a->val[O_TIMEOUT], 1, 86400, &t) < 0)
            return TAKO_EXIT_USAGE;
    }
    for (int i = 0; i < a->nmulti[O_REQUIREMENT]; i++) {
        const char *q = a->multi[O_REQUIREMENT][i];
        if (!jobtype_requirement_ok(q, strlen(q)) || i >= JOBTYPE_MAX_REQUIREMENTS) {
            tako_usage_error(a->cmd,
                             "--requirement \"%s\": expected NAME[extras][specifiers] such as "
                             "pandas or numpy>=1.24 (at most %d)",
                             q, JOBTYPE_MAX_REQUIREMENTS);
            return TAKO_EXIT_USAGE;
        }
    }
    int brc = build_config(a, err, sizeof err);
    const struct tk_job_type *jt = NULL;
    if (brc == 0) {
        jt = config_job_type(&cfg, opt_set(a, O_JOB_TYPE) ? a->val[O_JOB_TYPE] : "default");
        if (!jt) {
            char known[512] = "";
            for (size_t i = 0; i < cfg.n_job_types; i++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                         cfg.job_types[i].name);
            tako_usage_error(a->cmd, "unknown job type \"%s\" (configured: %s)", a->val[O_JOB_TYPE],
                             known);
            config_free(&cfg);
            return TAKO_EXIT_USAGE;
        }
    }
    if (brc < 0) {
        /* "-o limits.memory: ..." reads better as the option the user typed */
        static const char *const names[][2] = {{"-o limits.timeout", "--timeout"},
                                               {"-o limits.memory", "--memory"},
                                               {"-o limits.cpus", "--cpus"},
                                               {"-o docker.image", "--image"}};
        const char *shown = err;
        char buf[1100];
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            size_t n = strlen(names[i][0]);
            if (!strncmp(err, names[i][0], n)) {
                snprintf(buf, sizeof buf, "%s%s", names[i][1], err + n);
                shown = buf;
            }
        }
        tako_usage_error(a->cmd, "%s", shown);
        return TAKO_EXIT_USAGE;
    }
    const char *file = a->pos[0];
    char *code = NULL, *stdin_data = NULL;
    size_t code_len = 0, stdin_len = 0;
    int rc = tako_read_file(file, (size_t)cfg.limits_max_code_bytes, &code, &code_len);
    if (rc < 0) {
        tako_usage_error(a->cmd, "cannot read %s: %s", file,
                         rc == -EFBIG ? "larger than limits.max_code_bytes" : strerror(-rc));
        config_free(&cfg);
        return TAKO_EXIT_USAGE;
    }
    json_t *input = opt_set(a, O_INPUT) ? tako_read_json_object(a->cmd, a->val[O_INPUT],
                                                                (size_t)cfg.limits_max_input_bytes)
                                        : json_object();
    if (input && opt_set(a, O_STDIN)) {
        rc = tako_read_file(a->val[O_STDIN], (size_t)cfg.limits_max_input_bytes, &stdin_data,
                            &stdin_len);
        if (rc < 0) {
            tako_usage_error(a->cmd, "cannot read --stdin %s: %s", a->val[O_STDIN],
                             rc == -EFBIG ? "too large" : strerror(-rc));
            json_decref(input);
            input = NULL;
        }
    }
    if (!input) {
        free(code);
        config_free(&cfg);
        return TAKO_EXIT_USAGE;
    }
    char *input_text = json_dumps(input, JSON_COMPACT);
    json_decref(input);

    int exit_code = TAKO_EXIT_INFRA;
    struct docker *d = NULL;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/tako-run-%ld-XXXXXX", (long)getpid());
    bool have_tmp = false;
    char *staged[TAKO_MAX_MULTI] = {0};
    struct warm w;
    sandbox_warm_init(&w);
    struct tk_result r;
    memset(&r, 0, sizeof r);
    bool ran = false;
    struct live live = {.last_err = '\n'};

    char image[256], req_image[128];
    /* -- what the sandbox is told (takod's executor tells it the same from its context):
     * the configuration, this host's label for our containers; nothing put aside (a job
     * directory that cannot be removed stays beside itself, in our temporary directory) -- */
    char host[256] = "localhost", instance[300];
    gethostname(host, sizeof host - 1);
    snprintf(instance, sizeof instance, "tako-cli:%s", host);
    struct sandbox_env env = {.cfg = &cfg, .instance = instance};
    if (sandbox_load_seccomp(cfg.docker_seccomp_profile, err, sizeof err) < 0) {
        exit_code = infra_error(a, TAKO_EXIT_INFRA, "config_error", "%s", err);
        goto out;
    }
    env.network = opt_set(a, O_NETWORK);
    if (docker_open(&d, cfg.docker_socket) < 0) {
        exit_code = infra_error(a, TAKO_EXIT_INFRA, "docker_unavailable",
                                "cannot reach the Docker engine at %s: %s (is dockerd running?)",
                                cfg.docker_socket, docker_last_error(NULL));
        goto out;
    }
    /* as takod, but without its probe container: for one job it would cost more than crun
     * saves, so a crun that cannot start the job's container is fallen back from below */
    char rmsg[768];
    rc = sandbox_choose_runtime(d, &env, false, rmsg, sizeof rmsg);
    if (rc < 0) {
        exit_code = infra_error(a, TAKO_EXIT_INFRA, "docker_error", "%s", rmsg);
        goto out;
    }
    if (rc == 1 && cfg.docker_runtime != TK_RUNTIME_AUTO)
        fprintf(stderr, "tako run: warning: %s\n", rmsg);
    rc = docker_image_exists(d, cfg.docker_image);
    if (rc == 0) {
        exit_code =
            infra_error(a, TAKO_EXIT_INFRA, "image_missing",
                        "the executor image %s is missing: run `tako setup`", cfg.docker_image);
        goto out;
    }
    if (rc < 0) {
        exit_code =
            infra_error(a, TAKO_EXIT_INFRA, "docker_error", "cannot inspect the image %s: %s",
                        cfg.docker_image, docker_last_error(d));
        goto out;
    }
    /* the job type's image, built on first use (the SDK's auto_build) */
    jobtype_image(&cfg, jt, "latest", image, sizeof image);
    if (jt != &cfg.job_types[0] && (rc = docker_image_exists(d, image)) != 1) {
        struct jobtype_build_result br;
        if (rc == 0) {
            fprintf(stderr, "tako run: building %s for job type %s (first use) ...\n", image,
                    jt->name);
            rc = jobtype_build(d, &cfg, jt, NULL, NULL, &br);
        }
        if (rc < 0) {
            exit_code = infra_error(a, TAKO_EXIT_INFRA, "docker_error", "building %s failed: %s",
                                    image, docker_last_error(d));
            goto out;
        }
        fprintf(stderr, "tako run: built %s in %.1f s\n", br.image_ref, br.seconds);
    }
    if (a->nmulti[O_REQUIREMENT] > 0) { /* a cached image per set: installed once */
        bool built = false;
        uint64_t t0 = now_mono_us();
        rc =
            jobtype_requirements_image(d, &cfg, image, (const char *const *)a->multi[O_REQUIREMENT],
                                       (size_t)a->nmulti[O_REQUIREMENT], 600 * 1000L, req_image,
                                       sizeof req_image, &built, err, sizeof err);
        if (rc < 0 && rc != -ECONNREFUSED) {
            exit_code = TAKO_EXIT_FAILED;
            if (a->json) {
                json_t *j = json_pack("{s:s, s:s, s:n, s:b, s:n, s:s, s:s, s:n, s:s, s:[]}",
                                      "stdout", "", "stderr", "", "exit_code", "success", 0,
                                      "output", "error", err, "error_type", "dependency_error",
                                      "duration_ms", "status", "failed", "artifacts");
                tako_print_json(j);
                json_decref(j);
            }
            fprintf(stderr, "tako: failed: dependency_error: %s\n", err);
            goto out;
        }
        if (rc < 0) {
            exit_code = infra_error(a, TAKO_EXIT_INFRA, "docker_error", "%s", err);
            goto out;
        }
        if (built)
            fprintf(stderr, "tako run: requirements installed into %s in %.1f s (cached)\n",
                    req_image, (double)(now_mono_us() - t0) / 1e6);
        snprintf(image, sizeof image, "%s", req_image);
    }

    sweep_stale(d, instance);

    /* -- a private directory: 0755, the container's uid reads code/ and input/ -- */
    if (!mkdtemp(tmp)) {
        exit_code = infra_error(a, TAKO_EXIT_INFRA, "internal_error", "mkdtemp %s: %s", tmp,
                                strerror(errno));
        goto out;
    }
    have_tmp = true;
    chmod(tmp, 0755);
    if (a->nmulti[O_PACKAGE_DIR] > 0) {
        if (stage_packages(a, tmp, staged, err, sizeof err) < 0) {
            exit_code = infra_error(a, TAKO_EXIT_USAGE, "usage_error", "%s", err);
            goto out;
        }
        env.package_dirs = (const char *const *)staged;
        env.n_package_dirs = (size_t)a->nmulti[O_PACKAGE_DIR];
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: the launcher wait notices */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    docker_set_abort_flag(d, &interrupted);

    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/job", tmp);
    r.t_popped_us = now_mono_us();
    /* the job type's limits; --memory, --cpus, --network win when given */
    struct sandbox_spec spec;
    sandbox_type_spec(&spec, jt, image);
    if (jt == &cfg.job_types[0] || opt_set(a, O_MEMORY))
        spec.memory = cfg.limits_memory;
    if (jt == &cfg.job_types[0] || opt_set(a, O_CPUS))
        spec.cpus = cfg.limits_cpus;
    unsigned timeout_s = (unsigned)(opt_set(a, O_TIMEOUT) ? cfg.limits_timeout : jt->timeout);
    rc = sandbox_prepare(d, &env, &w, dir, &spec);
    if (rc < 0 && !strcmp(sandbox_runtime, "crun") && cfg.docker_runtime == TK_RUNTIME_AUTO) {
        sandbox_runtime = "runc"; /* registered, but not usable here (see sandbox_choose_runtime) */
        rc = sandbox_prepare(d, &env, &w, dir, &spec);
    }
    if (rc < 0) {
        exit_code = infra_error(a, TAKO_EXIT_INFRA, "docker_error",
                                "could not start a container from %s: %s", image,
                                docker_last_error(d)[0] ? docker_last_error(d) : strerror(-rc));
        goto out;
    }
    rc = write_job_file(dir, "code/main.py", code, code_len);
    if (rc == 0)
        rc = write_job_file(dir, "input/data.json", input_text, strlen(input_text));
    if (rc == 0 && stdin_data)
        rc = write_job_file(dir, "input/stdin", stdin_data, stdin_len);
    if (rc < 0) {
        exit_code = infra_error(a, TAKO_EXIT_INFRA, "internal_error",
                                "writing the job's files failed: %s", strerror(-rc));
        goto out;
    }
    struct sandbox_job sj = {
        .timeout_ms = (int)timeout_s * 1000,
        .stdout_cap = (size_t)cfg.limits_max_stdout_bytes,
        .stderr_cap = (size_t)cfg.limits_max_stderr_bytes,
        .has_stdin = stdin_data != NULL,
        .stop = &interrupted,
        .cancel = NULL,
        .on_output = a->json ? NULL : on_live_output,
        .output_arg = &live,
    };
    sandbox_run(d, &w, &sj, &r.sb);
    ran = true;
    if (r.sb.not_started) {
        exit_code =
            infra_error(a, TAKO_EXIT_INFRA, "docker_error",
                        "the container went away before the program started: %s", r.sb.error);
        goto out;
    }
    char outdir[PATH_MAX];
    snprintf(outdir, sizeof outdir, "%s/output", w.dir);
    outputs_collect(outdir, (size_t)cfg.limits_max_artifact_bytes,
                    (size_t)cfg.limits_max_total_artifact_bytes, (size_t)cfg.limits_max_artifacts,
                    &r.outputs);
    result_classify(&r, &cfg, timeout_s, spec.memory);
    r.t_done_us = now_mono_us();

    char job_id[40];
    uuid_v4(job_id);
    json_t *resp, *error_obj, *timing;
    result_build(&r, job_id, "default", created, &resp, &error_obj, &timing);
    run_json(resp, &r);
    if (opt_set(a, O_OUTPUT_DIR) &&
        save_outputs(a->val[O_OUTPUT_DIR], &r.outputs, err, sizeof err) < 0)
        fprintf(stderr, "tako run: could not save the outputs: %s\n", err);
    if (a->json) {
        tako_print_json(resp);
        exit_code = tako_exit_for_status(r.status);
    } else {
        show_rest(&live, 1, &r.sb.out);
        show_rest(&live, 2, &r.sb.err);
        if (live.last_err != '\n')
            fputc('\n', stderr);
        if (r.sb.out.truncated || r.sb.err.truncated)
            fprintf(stderr,
                    "tako: output over the limit was cut (stdout %zu of %zu bytes kept, "
                    "stderr %zu of %zu)\n",
                    r.sb.out.len, r.sb.out.truncated ? r.sb.out.total : r.sb.out.len, r.sb.err.len,
                    r.sb.err.truncated ? r.sb.err.total : r.sb.err.len);
        exit_code = tako_print_run_status(resp, NULL);
    }
    json_decref(resp);
    json_decref(error_obj);
    json_decref(timing);

out:
    if (d)
        sandbox_discard(d, &w);
    if (ran) {
        capbuf_free(&r.sb.out);
        capbuf_free(&r.sb.err);
    }
    outputs_free(&r.outputs);
    if (have_tmp)
        rm_rf(tmp);
    for (int i = 0; i < TAKO_MAX_MULTI; i++)
        free(staged[i]);
    docker_close(d);
    free(code);
    free(stdin_data);
    free(input_text);
    config_free(&cfg);
    return exit_code;
}
