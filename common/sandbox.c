/*
 * sandbox.c — hardened containers, warm ahead of time, driven through the launcher
 * (see sandbox.h).
 */
#include "tako/sandbox.h"
#include "tako/defences.h"
#include "tako/sandbox_oci.h"
#include "tako/dkframe.h"
#include "tako/jobtypes.h"
#include "tako/log.h"
#include "tako/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

extern const char tako_default_seccomp[]; /* generated from conf/seccomp.json */

const char *sandbox_seccomp_json;
const char *sandbox_runtime = "runc";
enum sandbox_backend sandbox_backend = SANDBOX_DOCKER;

const char *sandbox_runtime_in_use(void)
{
    return sandbox_backend == SANDBOX_OCI ? oci_runtime() : sandbox_runtime;
}

const char *sandbox_backend_name(void)
{
    return sandbox_backend == SANDBOX_OCI ? "oci" : "docker";
}

int sandbox_load_seccomp(const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    if (path && *path) {
        size_t len;
        int rc = read_file(path, 1 << 20, &text, &len);
        if (rc < 0) {
            snprintf(err, errlen, "docker.seccomp_profile %s: %s", path, strerror(-rc));
            return rc;
        }
    } else {
        text = strdup(tako_default_seccomp);
    }
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j || !json_is_object(j) || !json_object_get(j, "defaultAction")) {
        snprintf(err, errlen, "seccomp profile %s is not a seccomp JSON profile: %s",
                 path && *path ? path : "(embedded)", j ? "no defaultAction" : jerr.text);
        json_decref(j);
        free(text);
        return -EINVAL;
    }
    /* compact it: it travels inline in every create request */
    char *compact = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    free(text);
    sandbox_seccomp_json = compact;
    return compact ? 0 : -ENOMEM;
}

static void run_uid(const struct sandbox_env *env, unsigned *uid, unsigned *gid)
{
    *uid = 1000;
    *gid = 1000;
    sscanf(env->cfg->docker_user, "%u:%u", uid, gid);
}

void sandbox_default_spec(struct sandbox_spec *s, const struct sandbox_env *env)
{
    const struct tk_config *c = env->cfg;
    *s = (struct sandbox_spec){
        .image = c->docker_image, .memory = c->limits_memory, .cpus = c->limits_cpus};
}

void sandbox_type_spec(struct sandbox_spec *s, const struct tk_job_type *t, const char *image)
{
    *s = (struct sandbox_spec){.image = image,
                               .memory = t->memory_limit,
                               .cpus = t->cpu_limit,
                               .network = t->network_enabled,
                               .env = t->environment,
                               .preload = t->preload};
}

/* The Docker backend's rendering of the defences (defences.h): the engine's create body.
 * Docker's init (tini) is PID 1 and the launcher its child; the launcher runs as root
 * with only SETUID, SETGID and KILL and runs the program as docker.user: the program
 * cannot reach the launcher's report channel (its descriptors, through /proc/<pid>/fd)
 * nor /ctl, which stays root's (make_dirs). */
static json_t *container_body(const struct sandbox_env *env, const char *dir,
                              const struct sandbox_spec *spec)
{
    struct sb_defences *df = malloc(sizeof *df);
    if (!df)
        return NULL;
    sandbox_defences(df, env, spec, dir, sandbox_runtime);
    char tmpfs[128], executor[32];
    snprintf(tmpfs, sizeof tmpfs, "rw,noexec,nosuid,nodev,size=%lld", (long long)df->tmp_size);
    snprintf(executor, sizeof executor, "%d", (int)getpid());
    char *secopt = NULL;
    if (asprintf(&secopt, "seccomp=%s", sandbox_seccomp_json) < 0) {
        free(df);
        return NULL;
    }
    json_t *cmd = json_array(), *envs = json_array(), *caps = json_array(), *ro = json_array(),
           *masked = json_array(), *ulimits = json_array(), *binds = json_array();
    for (size_t i = 0; i < TK_ARRAY_LEN(df->argv) && df->argv[i]; i++)
        json_array_append_new(cmd, json_string(df->argv[i]));
    for (size_t i = 0; i < df->n_env; i++)
        json_array_append_new(envs, json_string(df->env[i]));
    for (size_t i = 0; i < df->n_caps; i++)
        json_array_append_new(caps, json_string(df->caps[i]));
    for (size_t i = 0; i < df->n_readonly_paths; i++)
        json_array_append_new(ro, json_string(df->readonly_paths[i]));
    for (size_t i = 0; i < df->n_masked_paths; i++)
        json_array_append_new(masked, json_string(df->masked_paths[i]));
    for (size_t i = 0; i < df->n_rlimits; i++)
        json_array_append_new(ulimits,
                              json_pack("{s:s, s:I, s:I}", "Name", df->rlimits[i].docker_name,
                                        "Soft", (json_int_t)df->rlimits[i].limit, "Hard",
                                        (json_int_t)df->rlimits[i].limit));
    for (size_t i = 0; i < df->n_binds; i++) {
        char *bind = NULL;
        if (asprintf(&bind, "%s:%s:%s", df->binds[i].source, df->binds[i].target,
                     df->binds[i].ro ? "ro" : "rw") >= 0)
            json_array_append_new(binds, json_string(bind));
        free(bind);
    }
    json_t *body = json_pack(
        "{s:s, s:o, s:s, s:s, s:o, s:{s:s, s:s, s:s}, s:b, s:b, s:b, s:b, s:b,"
        " s:b, s:b, s:{s:s, s:b, s:[s], s:o, s:[s,s], s:o, s:o, s:b, s:I, s:I, "
        "s:I, s:I, s:s, s:I, s:o, s:{s:s}, s:o,"
        "    s:{s:s, s:{s:s, s:s}}, s:b, s:s}}",
        "Image", spec->image, "Cmd", cmd, "User", df->user, "WorkingDir", df->cwd, "Env", envs,
        "Labels", "takod.instance", env->instance ? env->instance : "", "takod.executor", executor,
        "takod.role", "job", "NetworkDisabled", !df->network, "Tty", 0, "OpenStdin", 1, "StdinOnce",
        1, "AttachStdin", 1, "AttachStdout", 1, "AttachStderr", 1, "HostConfig", "NetworkMode",
        df->network ? "bridge" : "none", "ReadonlyRootfs", df->readonly_rootfs, "CapDrop", "ALL",
        "CapAdd", caps, "SecurityOpt",
        df->no_new_privileges ? "no-new-privileges" : "no-new-privileges:false", secopt,
        "ReadonlyPaths", ro, "MaskedPaths", masked, "Init", 1, "Memory", (json_int_t)df->memory,
        "MemorySwap", (json_int_t)df->memory_swap, "NanoCpus", (json_int_t)(df->cpus * 1e9),
        "PidsLimit", (json_int_t)df->pids, "IpcMode", "private", "ShmSize",
        (json_int_t)df->shm_size, "Ulimits", ulimits, "Tmpfs", "/tmp", tmpfs, "Binds", binds,
        "LogConfig", "Type", "json-file", "Config", "max-size", "1m", "max-file", "1", "AutoRemove",
        0, "Runtime", sandbox_runtime);
    free(secopt);
    free(df);
    return body;
}

/*
 * Whether containers start under `runtime` here: one with every defence but no mounts
 * runs /bin/true. crun, for one, is registered but refuses to start anything on a cgroup
 * v1 host whose unified hierarchy still holds a controller (scripts/setup-runtime.sh
 * moves it). 0, or -errno with the engine's words in docker_last_error.
 */
static int probe_runtime(struct docker *d, const struct sandbox_env *env, const char *runtime)
{
    const char *was = sandbox_runtime;
    sandbox_runtime = runtime;
    struct sandbox_spec spec;
    sandbox_default_spec(&spec, env);
    json_t *body = container_body(env, "/nonexistent", &spec);
    sandbox_runtime = was;
    if (!body)
        return -ENOMEM;
    json_object_del(json_object_get(body, "HostConfig"), "Binds");
    json_object_set_new(body, "Cmd", json_pack("[s]", "/bin/true"));
    json_object_set_new(body, "OpenStdin", json_false());
    char id[65];
    int rc = docker_create(d, NULL, body, id), code = -1;
    json_decref(body);
    if (rc < 0)
        return rc;
    rc = docker_start(d, id);
    if (rc == 0)
        rc = docker_wait(d, id, 20000, &code);
    char why[512];
    snprintf(why, sizeof why, "%s", rc < 0 ? docker_last_error(d) : "");
    if (rc == 0 && code != 0) {
        snprintf(why, sizeof why, "/bin/true exited with %d", code);
        rc = -EIO;
    }
    docker_remove(d, id);
    if (rc < 0)
        docker_set_error(d, why);
    return rc;
}

int sandbox_choose_runtime(struct docker *d, const struct sandbox_env *env, bool probe, char *msg,
                           size_t msglen)
{
    int want = (int)env->cfg->docker_runtime;
    bool strict = env->cfg->docker_security_mode == TK_SECURITY_STRICT;
    sandbox_runtime = "runc";
    msg[0] = '\0';
    if (strict && want != TK_RUNTIME_RUNSC) {
        snprintf(msg, msglen,
                 "docker.security_mode = strict requires docker.runtime = runsc "
                 "(gVisor)");
        return -EPERM;
    }
    const char *name = want == TK_RUNTIME_RUNSC ? "runsc" : want == TK_RUNTIME_RUNC ? NULL : "crun";
    if (!name)
        return 0;
    int has = docker_has_runtime(d, name);
    if (has == 1 && probe && want != TK_RUNTIME_RUNSC && probe_runtime(d, env, name) < 0)
        has = -1;
    if (has == 1) {
        sandbox_runtime = name; /* a string literal: lives as long as the process */
        if (want == TK_RUNTIME_AUTO)
            snprintf(msg, msglen, "docker.runtime = auto: using crun");
        return 0;
    }
    char why[400];
    snprintf(why, sizeof why, "%s",
             has == 0 ? "the engine has no such runtime" : docker_last_error(d));
    if (want == TK_RUNTIME_RUNSC) {
        snprintf(msg, msglen,
                 "docker.runtime = runsc, but gVisor is not usable (%s); run "
                 "scripts/setup-gvisor.sh%s",
                 why, strict ? "; docker.security_mode = strict refuses runc" : "");
        return strict ? -EPERM : 1;
    }
    snprintf(msg, msglen,
             "docker.runtime = %s, but crun is not usable (%s); using runc. Run "
             "scripts/setup-runtime.sh crun",
             want == TK_RUNTIME_AUTO ? "auto" : "crun", why);
    return 1;
}

int sandbox_choose_backend(struct docker *d, const struct sandbox_env *env, char *msg,
                           size_t msglen)
{
    int want = (int)env->cfg->executor_backend;
    sandbox_backend = SANDBOX_DOCKER;
    msg[0] = '\0';
    if (want == TK_BACKEND_DOCKER)
        return 0;
    if (want == TK_BACKEND_AUTO && env->cfg->docker_runtime == TK_RUNTIME_RUNC) {
        /* runc was asked for by name: that is the engine's runtime, so the Docker backend
         * is what was chosen, not a fallback */
        snprintf(msg, msglen,
                 "executor.backend = auto with docker.runtime = runc: the "
                 "Docker backend (the OCI backend runs crun or runsc)");
        return 0;
    }
    char why[768] = "";
    int rc = oci_setup(env, why, sizeof why);
    if (rc == 0)
        rc = oci_probe(d, env, why, sizeof why);
    const char *asked = want == TK_BACKEND_AUTO ? "auto" : "oci";
    if (rc == 0) {
        sandbox_backend = SANDBOX_OCI;
        snprintf(msg, msglen, "executor.backend = %s: the OCI backend, runtime %s (%s)", asked,
                 oci_runtime(), oci_state_root());
        return 0;
    }
    if (want == TK_BACKEND_OCI) {
        snprintf(msg, msglen, "executor.backend = oci, but the OCI backend is not usable: %s", why);
        return rc;
    }
    snprintf(msg, msglen,
             "OCI BACKEND UNAVAILABLE: executor.backend = auto uses the Docker backend (every "
             "container through the engine, several times the CPU per job): %s",
             why);
    return 1;
}

/*
 * A container's directory is a tmpfs of its own when takod is root: size= and nr_inodes=
 * bound what a job can put in /output (and what /code and /input hold), statvfs('/output')
 * shows only the job's own usage, and /proc/self/mountinfo names no host path. After the
 * job it is detached whole (sandbox_release_dir). /ctl (the launcher's reports) is a
 * small tmpfs of its own inside it, so a job that fills its workspace still gets its
 * stdout, stderr and status reported. Not root, or the mount fails: the plain directory,
 * said once.
 */
static void mount_workspace(const struct sandbox_env *env, const char *dir)
{
    const struct tk_config *c = env->cfg;
    static bool said;
    const char *why = NULL;
    char opts[128];
    snprintf(opts, sizeof opts, "size=%lld,nr_inodes=%lld,mode=0755",
             (long long)c->limits_workspace_size, (long long)c->limits_workspace_inodes);
    if (geteuid() != 0)
        why = "takod is not root";
    else if (mount("takod-job", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        why = strerror(errno);
    if (!why) {
        char ctl[4200];
        snprintf(ctl, sizeof ctl, "%s/ctl", dir);
        snprintf(opts, sizeof opts, "size=%lld,nr_inodes=64,mode=0755",
                 (long long)(c->limits_max_stdout_bytes + c->limits_max_stderr_bytes + (1 << 20)));
        if (mkdir(ctl, 0755) < 0 ||
            mount("takod-ctl", ctl, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
            why = strerror(errno); /* the workspace stays: released whole with the rest */
    }
    if (why && !said) {
        said = true;
        log_warn("msg=\"jobs' directories are not tmpfs mounts of their own: /output is "
                 "bounded only by the spool's filesystem\" dir=%s err=\"%s\"",
                 dir, why);
    }
}

void sandbox_release_dir(const struct sandbox_env *env, const char *dir)
{
    if (umount2(dir, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT &&
        errno != EPERM)
        log_warn("msg=\"umount2 of a job's directory failed\" dir=%s err=\"%s\"", dir,
                 strerror(errno));
    rm_rf_aside(dir, env ? env->quarantine_dir : NULL); /* logs a failure */
}

/*
 * Detach the jobs' tmpfs mounts left under `dir` (processes killed before they released
 * their directories): from /proc/self/mountinfo, each mount point below dir. Deepest
 * first is not needed: MNT_DETACH takes a mount with everything under it.
 */
void sandbox_umount_under(const char *dir)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return;
    size_t dl = strlen(dir);
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        char mp[4200];
        if (sscanf(line, "%*s %*s %*s %*s %4199s", mp) != 1)
            continue;
        if (strncmp(mp, dir, dl) != 0 || mp[dl] != '/')
            continue;
        if (umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
            log_warn("msg=\"umount2 of a left-over job directory failed\" dir=%s err=\"%s\"", mp,
                     strerror(errno));
    }
    fclose(f);
}

static int make_dirs(const struct sandbox_env *env, const char *dir)
{
    unsigned uid, gid;
    run_uid(env, &uid, &gid);
    char path[4200];
    int rc = mkdir_p(dir, 0755); /* then its subdirs, each one mkdir */
    if (rc < 0)
        return rc;
    mount_workspace(env, dir);
    static const struct {
        const char *name;
        bool owned; /* by the run uid: the program writes there (not ctl: the launcher's) */
    } subs[] = {{"code", false}, {"input", false}, {"output", true}, {"ctl", false}};
    for (size_t i = 0; i < TK_ARRAY_LEN(subs); i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i].name);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return -errno;
        if (chmod(path, 0755) < 0 || (subs[i].owned && chown(path, uid, gid) < 0))
            return -errno;
    }
    return 0;
}

void sandbox_warm_init(struct warm *w)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    w->in_fd = -1;
    w->start_fd = -1;
    w->exit_fd = -1;
    w->init_fd = -1;
}

/*
 * The create body's text for a container in `dir`. Only the directory differs from one
 * container of a spec to the next, so the text (~8 KB, most of it the escaped seccomp
 * profile) is built once per spec with a placeholder for it, and the directory written
 * in (a directory that JSON would escape, or a spec too long for the key, takes the long
 * way). The last few specs are kept. The caller frees the result.
 */
#define DIR_MARK "/@@takod-dir@@"
static char *body_text(const struct sandbox_env *env, const char *dir,
                       const struct sandbox_spec *spec)
{
    static struct {
        char key[1200];
        char *text; /* with DIR_MARK where the directory goes */
    } cache[4];
    static unsigned next;
    bool plain = strlen(dir) < 4096 && !strstr(dir, DIR_MARK);
    for (const unsigned char *p = (const unsigned char *)dir; plain && *p; p++)
        plain = *p >= 0x20 && *p != '"' && *p != '\\' && *p != 0x7f;
    char key[1200];
    int kl =
        snprintf(key, sizeof key, "%p|%s|%lld|%g|%d|%s|%s|%s", (const void *)env, spec->image,
                 (long long)spec->memory, spec->cpus, (int)spec->network,
                 spec->env ? spec->env : "", spec->preload ? spec->preload : "", sandbox_runtime);
    plain = plain && kl > 0 && (size_t)kl < sizeof key; /* a key cut short could match another */
    const char *tmpl = NULL;
    for (unsigned i = 0; plain && i < TK_ARRAY_LEN(cache); i++)
        if (cache[i].text && !strcmp(cache[i].key, key))
            tmpl = cache[i].text;
    if (!tmpl || !plain) {
        json_t *body = container_body(env, plain ? DIR_MARK : dir, spec);
        if (!body)
            return NULL;
        char *t = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (!t || !plain)
            return t;
        unsigned i = next++ % TK_ARRAY_LEN(cache);
        free(cache[i].text);
        snprintf(cache[i].key, sizeof cache[i].key, "%s", key);
        tmpl = cache[i].text = t;
    }
    size_t dl = strlen(dir), ml = strlen(DIR_MARK), n = 0;
    for (const char *p = tmpl; (p = strstr(p, DIR_MARK)); p += ml)
        n++;
    char *out = malloc(strlen(tmpl) + n * dl + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = tmpl, *m; *p; p = m + ml) {
        if (!(m = strstr(p, DIR_MARK))) {
            strcpy(o, p);
            return out;
        }
        memcpy(o, p, (size_t)(m - p));
        o += m - p;
        memcpy(o, dir, dl);
        o += dl;
    }
    *o = '\0';
    return out;
}

int sandbox_prepare_async(struct docker *d, const struct sandbox_env *env, struct warm *w,
                          const char *dir, const struct sandbox_spec *spec)
{
    struct sandbox_spec dflt;
    if (!spec) {
        sandbox_default_spec(&dflt, env);
        spec = &dflt;
    }
    sandbox_warm_init(w);
    w->env = env;
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    int rc = rm_rf_aside(dir, env->quarantine_dir); /* nothing there: names are unique */
    if (rc == 0)
        rc = make_dirs(env, dir);
    if (rc < 0) {
        log_error("msg=\"preparing a container directory failed\" dir=%s err=\"%s\"", dir,
                  strerror(-rc));
        sandbox_release_dir(env, dir); /* its tmpfs, if it got one */
        w->dir[0] = '\0';
        return rc;
    }
    if (sandbox_backend == SANDBOX_OCI && !spec->network && !env->network) {
        /* a job type with network keeps the engine's bridge: the backend makes none */
        w->oci = true;
        rc = oci_prepare_async(d, env, w, dir, spec);
        if (rc < 0) {
            docker_set_error(d, oci_last_error());
            sandbox_discard(d, w);
        }
        return rc;
    }
    char *text = body_text(env, dir, spec);
    rc = text ? docker_create_text(d, NULL, text, w->id) : -ENOMEM;
    free(text);
    if (rc < 0)
        return rc; /* the caller logs (rate-limited while the engine is down) */
    rc = docker_attach(d, w->id, 10000, &w->fd);
    if (rc == 0)
        rc = docker_start_async(d, w->id, &w->start_fd);
    if (rc < 0)
        sandbox_discard(d, w);
    return rc;
}

int sandbox_started(struct docker *d, struct warm *w, int timeout_ms)
{
    if (w->ready)
        return 0;
    if (w->oci) {
        int rc = oci_started(w, timeout_ms);
        if (rc < 0)
            docker_set_error(d, oci_last_error());
        return rc;
    }
    if (w->start_fd < 0)
        return -EINVAL;
    int rc = docker_async_finish(d, w->start_fd, timeout_ms);
    w->start_fd = -1;
    if (rc == 0)
        w->ready = true;
    return rc;
}

int sandbox_prepare(struct docker *d, const struct sandbox_env *env, struct warm *w,
                    const char *dir, const struct sandbox_spec *spec)
{
    int rc = sandbox_prepare_async(d, env, w, dir, spec); /* discards what it left, on failure */
    if (rc == 0 && (rc = sandbox_started(d, w, 60000)) < 0)
        sandbox_discard(d, w);
    return rc;
}

void sandbox_discard(struct docker *d, struct warm *w)
{
    char why[512]; /* the discard's own calls must not hide why the caller discards */
    snprintf(why, sizeof why, "%s", docker_last_error(d));
    if (w->oci) {
        oci_discard(w);
        w->id[0] = '\0';
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->start_fd >= 0)
        close(w->start_fd);
    w->start_fd = -1;
    if (w->id[0]) {
        int rc = docker_remove(d, w->id);
        if (rc < 0 && rc != -ENOENT)
            log_warn("msg=\"docker_remove failed\" container=%.12s err=\"%s\"", w->id,
                     docker_last_error(d));
    }
    w->id[0] = '\0';
    if (w->dir[0])
        sandbox_release_dir(w->env, w->dir);
    w->ready = false;
    docker_set_error(d, why);
}

int sandbox_retire_async(struct docker *d, struct warm *w, int *fd, pid_t *pid)
{
    *pid = 0;
    if (w->oci) {
        int rc = oci_retire_async(w, fd, pid);
        if (rc < 0)
            docker_set_error(d, oci_last_error());
        return rc;
    }
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    return w->id[0] ? docker_remove_async(d, w->id, fd) : -ENOENT;
}

int sandbox_retire_finish(struct docker *d, int fd, pid_t pid, int timeout_ms)
{
    if (pid > 0) {
        int rc = oci_retire_finish(fd, pid, timeout_ms);
        if (rc < 0)
            docker_set_error(d, oci_last_error());
        return rc;
    }
    return docker_async_finish(d, fd, timeout_ms);
}

/* ---- the status line ---- */

struct status {
    long long exit_code, signal, timed_out, oom, start_us, end_us, out_bytes, err_bytes;
    char nonce[72], error[64];
};

/* Strict: one line of known key=value pairs; numbers are decimal. The line comes from
 * inside the sandbox, so nothing in it is trusted beyond its syntax and the nonce. */
static int parse_status(char *line, struct status *s)
{
    memset(s, 0, sizeof *s);
    s->exit_code = -1;
    int seen = 0;
    for (char *save = NULL, *tok = strtok_r(line, " ", &save); tok;
         tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return -EINVAL;
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        if (!strcmp(k, "nonce")) {
            snprintf(s->nonce, sizeof s->nonce, "%s", v);
            continue;
        }
        if (!strcmp(k, "error")) {
            snprintf(s->error, sizeof s->error, "%s", v);
            continue;
        }
        if (!strcmp(k, "cgroup"))
            continue;
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return -EINVAL;
        if (!strcmp(k, "exit_code"))
            s->exit_code = n, seen |= 1;
        else if (!strcmp(k, "signal"))
            s->signal = n;
        else if (!strcmp(k, "timed_out"))
            s->timed_out = n, seen |= 2;
        else if (!strcmp(k, "oom"))
            s->oom = n;
        else if (!strcmp(k, "start_us"))
            s->start_us = n;
        else if (!strcmp(k, "end_us"))
            s->end_us = n;
        else if (!strcmp(k, "stdout_bytes"))
            s->out_bytes = n;
        else if (!strcmp(k, "stderr_bytes"))
            s->err_bytes = n;
    }
    return seen == 3 ? 0 : -EINVAL;
}

/* Read a capture file the launcher wrote: regular, no symlink, at most cap bytes. */
static void read_capture(const char *dir, const char *name, struct tk_capbuf *b)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/ctl/%s", dir, name);
    char *data = NULL;
    size_t len = 0;
    if (read_file(path, b->cap, &data, &len) == 0) {
        capbuf_append(b, data, len);
        free(data);
    }
}

/*
 * Demultiplex the attach stream (Docker's 8-byte frames) and parse the launcher's
 * protocol on its stdout: lines, except that "takod-out S N" is followed by N raw bytes of
 * the program's output (live output), until "takod-status ..." arrives. framer_feed
 * returns 1 once the status line is complete.
 */
struct framer {
    struct dkframe frames; /* the engine's framing (dkframe.c) */
    char line[2048];
    size_t line_len;
    size_t raw_left; /* bytes of a takod-out message still to come */
    int raw_stream;
    char raw[4096];
    size_t raw_len;
    size_t live_sent[2]; /* live bytes passed on, per stream: at most its cap */
    char carry[2][4];    /* per stream: a character cut by the end of its last message */
    size_t carry_len[2];
    const struct sandbox_job *job;
};

/* The bytes at the end of p[0..n) that start a UTF-8 character not yet complete (0-3). */
static size_t utf8_partial_tail(const char *p, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)p[n - k];
        if ((c & 0xc0) == 0x80)
            continue; /* a continuation byte: look further back */
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

/* Live output leaves here, and only here: each stream's bytes are counted against the
 * same cap as its kept stdout/stderr, whatever the container sends. */
static void raw_flush(struct framer *f)
{
    int i = f->raw_stream == 2;
    size_t *sent = &f->live_sent[i];
    size_t cap = f->raw_stream == 2 ? f->job->stderr_cap : f->job->stdout_cap;
    /* a chunk ends on a character boundary: a cut character waits for its next bytes,
     * so no subscriber sees it as two replacement characters */
    size_t tail = utf8_partial_tail(f->raw, f->raw_len), len = f->raw_len - tail;
    size_t n = cap - *sent < len ? cap - *sent : len;
    if (n && f->job->on_output)
        f->job->on_output(f->raw_stream, f->raw, n, f->job->output_arg);
    *sent += n;
    memcpy(f->carry[i], f->raw + len, tail);
    f->carry_len[i] = tail;
    f->raw_len = 0;
    if (f->raw_left > 0) { /* the same message goes on: its cut character first */
        memcpy(f->raw, f->carry[i], tail);
        f->raw_len = tail;
        f->carry_len[i] = 0;
    }
}

static int protocol_byte_run(struct framer *f, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (f->raw_left > 0) {
            size_t take = n - i < f->raw_left ? n - i : f->raw_left;
            size_t room = sizeof f->raw - f->raw_len;
            if (take > room)
                take = room;
            memcpy(f->raw + f->raw_len, p + i, take);
            f->raw_len += take;
            f->raw_left -= take;
            i += take - 1;
            if (f->raw_left == 0 || f->raw_len == sizeof f->raw)
                raw_flush(f);
            continue;
        }
        char c = (char)p[i];
        if (c != '\n') {
            if (f->line_len < sizeof f->line - 1)
                f->line[f->line_len++] = c;
            continue;
        }
        f->line[f->line_len] = '\0';
        f->line_len = 0;
        int st;
        size_t len;
        if (!strncmp(f->line, "takod-status ", 13))
            return 1;
        if (sscanf(f->line, "takod-out %d %zu", &st, &len) == 2 && (st == 1 || st == 2) &&
            len <= (64u << 20)) {
            f->raw_stream = st;
            f->raw_left = len;
            if (len > 0) { /* a character the last message of this stream cut */
                memcpy(f->raw, f->carry[st == 2], f->carry_len[st == 2]);
                f->raw_len = f->carry_len[st == 2];
                f->carry_len[st == 2] = 0;
            }
        }
    }
    return 0;
}

/* The launcher's stdout (stream 1) is the protocol; its stderr carries nothing takod reads. */
static int framer_payload(void *arg, int stream, const char *p, size_t n)
{
    return stream == 1 ? protocol_byte_run(arg, (const unsigned char *)p, n) : 0;
}

/* 1 once the status line is complete, 0 for more, -EPROTO when the stream is not framed.
 * The OCI backend's launcher writes on a plain pipe: its bytes are the protocol itself. */
static int framer_feed(struct framer *f, bool raw, const unsigned char *p, size_t n)
{
    if (raw)
        return protocol_byte_run(f, p, n);
    return dkframe_feed(&f->frames, (const char *)p, n, framer_payload, f);
}

/* A signal to the container's init: Docker's (tini, which passes it to the launcher) or,
 * in the OCI backend, the launcher itself. */
static void kill_container(struct docker *d, struct warm *w, int sig)
{
    if (w->oci)
        oci_kill(w, sig);
    else
        docker_kill(d, w->id, sig == SIGKILL ? "SIGKILL" : "SIGTERM");
}

void sandbox_run(struct docker *d, struct warm *w, const struct sandbox_job *job,
                 struct sandbox_result *res)
{
    memset(res, 0, sizeof *res);
    res->exit_code = -1;
    res->runtime = w->oci ? oci_runtime() : sandbox_runtime;
    capbuf_init(&res->out, job->stdout_cap);
    capbuf_init(&res->err, job->stderr_cap);
    char nonce[40];
    uuid_v4(nonce);
    nonce[8] = nonce[13] = nonce[18] = nonce[23] = 'x';
    char go[256];
    int n =
        snprintf(go, sizeof go, "timeout_ms=%d stdout_cap=%zu stderr_cap=%zu stdin=%d nonce=%s\n",
                 job->timeout_ms, job->stdout_cap, job->stderr_cap, job->has_stdin ? 1 : 0, nonce);
    if (w->oci)
        oci_boost(w);
    res->t_go_us = now_mono_us();
    if (write(w->in_fd >= 0 ? w->in_fd : w->fd, go, (size_t)n) != n) {
        snprintf(res->error, sizeof res->error, "the warm container is gone (write: %s)",
                 strerror(errno));
        res->lost = true;
        res->not_started = true;
        return;
    }
    /* the launcher enforces the timeout; this deadline only catches a launcher that died
     * or hangs: timeout + its kill grace + drain + sweep + slack */
    uint64_t deadline = res->t_go_us + (uint64_t)job->timeout_ms * 1000u + 5000000u;
    struct framer f = {.job = job};
    int got = 0;
    bool killed = false;
    while (!got) {
        uint64_t now = now_mono_us();
        if (!killed && ((job->stop && *job->stop) || (job->cancel && atomic_load(job->cancel)))) {
            /* TERM reaches the launcher through the container's init: it kills the program
             * and still reports what it had (partial output). SIGKILL if it does not. */
            res->interrupted = job->stop && *job->stop;
            res->cancelled = !res->interrupted;
            kill_container(d, w, SIGTERM);
            killed = true;
            deadline = now + 1500000u;
        }
        if (now >= deadline) {
            kill_container(d, w, SIGKILL);
            if (!killed) {
                res->timed_out = true;
                snprintf(res->error, sizeof res->error, "the launcher did not report in time");
            }
            res->lost = true;
            break;
        }
        struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
        uint64_t wait_ms = (deadline - now) / 1000u;
        int pr = poll(&pfd, 1, wait_ms > 250 ? 250 : (int)wait_ms + 1);
        if (pr <= 0)
            continue;
        unsigned char buf[4096];
        ssize_t r = read(w->fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) { /* EOF: the container's stdio closed — it died or was killed */
            res->lost = true;
            break;
        }
        got = framer_feed(&f, w->oci, buf, (size_t)r);
        if (got < 0) { /* not the engine's framing: nothing on it can be trusted */
            res->lost = true;
            got = 0;
            break;
        }
    }
    res->t_end_us = now_mono_us();
    read_capture(w->dir, "stdout", &res->out);
    read_capture(w->dir, "stderr", &res->err);
    if (got) {
        struct status s;
        if (parse_status(f.line + 13, &s) < 0 || strcmp(s.nonce, nonce) != 0) {
            res->lost = true;
            snprintf(res->error, sizeof res->error, "the launcher's report was malformed");
        } else {
            res->exit_code = (int)s.exit_code;
            res->signal = (int)s.signal;
            res->timed_out = s.timed_out != 0;
            res->oom = s.oom != 0;
            /* the files hold the kept head; the launcher counted everything */
            if ((size_t)s.out_bytes > res->out.len) {
                res->out.total = (size_t)s.out_bytes;
                res->out.truncated = true;
            }
            if ((size_t)s.err_bytes > res->err.len) {
                res->err.total = (size_t)s.err_bytes;
                res->err.truncated = true;
            }
            if (s.error[0])
                snprintf(res->error, sizeof res->error, "launcher: %s", s.error);
        }
    }
    if (res->lost || killed) {
        /* Ask the engine (or the cgroup) what happened: an OOM kill of the whole sandbox,
         * a kill by us. */
        int code = -1;
        json_t *info = NULL;
        if (w->oci)
            oci_post_mortem(w, 5000, &res->oom, &code);
        else
            docker_wait(d, w->id, 5000, &code);
        if (!w->oci && docker_inspect(d, w->id, &info) == 0) {
            json_t *state = json_object_get(info, "State");
            if (json_is_true(json_object_get(state, "OOMKilled")))
                res->oom = true;
            json_decref(info);
        }
        if (res->exit_code < 0 && code >= 0 && !killed)
            res->exit_code = code;
    }
}
