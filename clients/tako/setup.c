/*
 * setup.c — `tako setup`: the front door that builds the executor image.
 *
 * The recipe stays in one place, scripts/build-image.sh of a takod source tree (found in
 * $TAKO_SOURCE_DIR, else the tree this binary was built from). This file adds what a
 * script does badly: checks that fail early with one clear line each, a registry
 * shortcut, and progress with timestamps. The steps:
 *
 *   1. the configuration (-c FILE / ./conf / /etc/takod / built-in, then -o) gives
 *      docker.socket and docker.image;
 *   2. a Docker engine must answer on that socket (exit 3 otherwise);
 *   3. `build-image.sh --check` says whether the image is current (its launcher label
 *      matches a fresh compile of the launcher): if so, "NAME is up to date (ID)", exit 0,
 *      without ever looking at disk space or debootstrap;
 *   4. only now, what a build needs: 2 GiB free in the Docker root; with --registry-base,
 *      a pull through the Engine API (a local copy when the registry is unreachable; else
 *      a warning and the debootstrap path); for debootstrap (when the cached
 *      takod-base:<codename> is missing, or --force), the tool itself, root, and 2 GiB
 *      in $TAKOD_BUILD_TMPDIR;
 *   5. build-image.sh builds, its lines streamed to stderr as "[ 12s] ...".
 *
 * The script talks to the engine with the docker CLI: it gets DOCKER_HOST pointing at
 * the same socket, so both always mean the same engine; and /usr/sbin:/sbin on its PATH,
 * where the debootstrap found by the preflight (and the chroot it runs) live.
 *
 * Also here: the helpers `tako doctor` shares (the configuration lookup, free space, a
 * raw GET on the engine's socket).
 */
#include "tako.h"
#include "tako/config.h"
#include "tako/docker.h"
#include "tako/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TAKO_SOURCE_DIR
#define TAKO_SOURCE_DIR ""
#endif

#define SETUP_MIN_FREE   (2ull << 30) /* what build-image.sh asks of /var/tmp too */
#define RECIPE           "scripts/build-image.sh"
#define RECIPE_STALE     10  /* build-image.sh --check: the image must be built */
#define PULL_STALL_S     30L /* a pull that sends nothing for this long has failed */
#define PULL_MAX_S       900L
#define DEFAULT_DOCKER_R "/var/lib/docker"

/* ---------------------------------------------------------------------------------------- */
/* shared with doctor.c                                                                     */

int tako_machine_config(const struct args *a, struct tk_config *cfg, char *source, size_t slen,
                        char *err, size_t errlen)
{
    const char *path = a->val[O_CONFIG];
    if (path) {
        snprintf(source, slen, "%s", path);
    } else if (access("conf/tako.conf", F_OK) == 0) {
        path = "conf/tako.conf";
        snprintf(source, slen, "conf/tako.conf (found in the current directory)");
    } else if (access("/etc/takod/tako.conf", F_OK) == 0) {
        path = "/etc/takod/tako.conf";
        snprintf(source, slen, "%s", path);
    } else {
        snprintf(source, slen,
                 "built-in defaults (no -c FILE, ./conf/tako.conf or /etc/takod/tako.conf)");
    }
    /* config_load only reads the overrides; its prototype predates const */
    return config_load(cfg, path, (char *const *)a->multi[O_OVERRIDE],
                       (size_t)a->nmulti[O_OVERRIDE], err, errlen);
}

int tako_free_bytes(const char *path, unsigned long long *bytes, char *at, size_t atlen)
{
    char p[4096];
    struct statvfs sv;
    snprintf(p, sizeof p, "%s", path && *path ? path : ".");
    /* a directory takod creates later lives on its nearest existing ancestor's fs */
    while (statvfs(p, &sv) < 0) {
        if (errno != ENOENT && errno != ENOTDIR)
            return -errno;
        char *slash = strrchr(p, '/');
        if (!slash)
            snprintf(p, sizeof p, ".");
        else if (slash == p)
            p[1] = '\0';
        else
            *slash = '\0';
    }
    *bytes = (unsigned long long)sv.f_bavail * sv.f_frsize;
    snprintf(at, atlen, "%s", p);
    return 0;
}

void tako_format_bytes(unsigned long long bytes, char *buf, size_t len)
{
    if (bytes >= (1ull << 30))
        snprintf(buf, len, "%.1f GiB", (double)bytes / (double)(1ull << 30));
    else
        snprintf(buf, len, "%llu MiB", bytes >> 20);
}

void tako_docker_root(struct docker *d, char *out, size_t len)
{
    json_t *info = NULL;
    const char *dir = NULL;
    if (d && docker_info(d, &info) == 0)
        dir = json_string_value(json_object_get(info, "DockerRootDir"));
    snprintf(out, len, "%s", dir && *dir ? dir : DEFAULT_DOCKER_R);
    json_decref(info);
}

const char *tako_engine_reason(const char *err)
{
    const char *r = err ? strrchr(err, ':') : NULL;
    if (!err || !*err)
        return "no reason given";
    return r && r[1] == ' ' && r[2] ? r + 2 : err;
}

/* ---------------------------------------------------------------------------------------- */
/* tako setup                                                                               */

struct setup {
    struct args *a;
    double t0; /* monotonic start, for the "[ 12s]" prefixes */
    struct tk_config cfg;
    struct docker *d;
    const char *image; /* --image, else docker.image */
    char recipe[4200]; /* absolute path of build-image.sh */
    char base[512];    /* --base for the recipe: the registry image when pulled; else "" */
};

/* One progress line on stderr, prefixed with the seconds since the start. */
static void progress(const struct setup *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void progress(const struct setup *s, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "[%3lds] ", (long)(mono_seconds() - s->t0));
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* The one-line error of a failed step; returns the exit code to use. */
static int setup_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int setup_fail(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("tako setup: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

/* The image's short id, or "" when it is absent (or the engine cannot say). */
static void image_short_id(struct setup *s, const char *image, char out[13])
{
    json_t *j = NULL;
    out[0] = '\0';
    if (docker_image_inspect(s->d, image, &j) == 0)
        docker_short_id(json_string_value(json_object_get(j, "Id")), out);
    json_decref(j);
}

/* scripts/build-image.sh under $TAKO_SOURCE_DIR, else under the tree tako was built from
 * (a $TAKO_SOURCE_DIR without it is named in a warning: it was probably meant). */
static int find_recipe(struct setup *s)
{
    const char *env = getenv("TAKO_SOURCE_DIR");
    const char *dirs[] = {env, TAKO_SOURCE_DIR};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        if (!dirs[i] || !dirs[i][0])
            continue;
        snprintf(s->recipe, sizeof s->recipe, "%s/%s", dirs[i], RECIPE);
        if (access(s->recipe, R_OK) == 0)
            return 0;
        if (i == 0)
            progress(s, "warning: TAKO_SOURCE_DIR=%s has no %s", env, RECIPE);
    }
    s->recipe[0] = '\0';
    return -ENOENT;
}

/* `name` in $PATH (or, for tools root keeps in sbin, /usr/sbin and /sbin): 1 found, 0 not. */
static int have_tool(const char *name)
{
    const char *env = getenv("PATH");
    char path[8192], file[4200];
    snprintf(path, sizeof path, "%s:/usr/sbin:/sbin", env ? env : "/usr/bin:/bin");
    for (char *save = NULL, *dir = strtok_r(path, ":", &save); dir;
         dir = strtok_r(NULL, ":", &save)) {
        snprintf(file, sizeof file, "%s/%s", *dir ? dir : ".", name);
        if (access(file, X_OK) == 0)
            return 1;
    }
    return 0;
}

/* VERSION_CODENAME of this machine (the base the recipe debootstraps), or -ENOENT. */
static int host_codename(char *out, size_t len)
{
    const char *files[] = {"/etc/os-release", "/usr/lib/os-release"};
    char line[512];
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "VERSION_CODENAME=", 17))
                continue;
            char *v = line + 17;
            v += strspn(v, "\"'");
            v[strcspn(v, "\"'\r\n")] = '\0';
            if (*v) {
                snprintf(out, len, "%s", v);
                fclose(f);
                return 0;
            }
        }
        fclose(f);
    }
    return -ENOENT;
}

/* 2 GiB free where the build writes: 0, or -ENOSPC after the one-line error. */
static int need_space(const char *path, const char *what, const char *hint)
{
    unsigned long long bytes;
    char at[4096];
    int rc = tako_free_bytes(path, &bytes, at, sizeof at);
    if (rc < 0) {
        setup_fail(1, "statvfs %s: %s", path, strerror(-rc));
        return rc;
    }
    if (bytes < SETUP_MIN_FREE) {
        setup_fail(1, "only %llu MiB free in %s (%s); building the image needs 2 GiB: %s",
                   bytes >> 20, at, what, hint);
        return -ENOSPC;
    }
    return 0;
}

/* ---- running the recipe ---- */

static volatile pid_t recipe_pid;

/* SIGTERM/SIGHUP to tako go on to the recipe, which cleans up (unmounts, removes its
 * temporary rootfs) and exits; tako then reports its status. */
static void forward_signal(int sig)
{
    if (recipe_pid > 0)
        kill(recipe_pid, sig);
}

/* One line of the recipe's output: "build-image: " is dropped (the prefix says when). */
static void recipe_line(const struct setup *s, char *line)
{
    strip_ansi(line);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' '))
        line[--n] = '\0';
    if (!n)
        return;
    if (!strncmp(line, "build-image: ", 13))
        line += 13;
    progress(s, "%s", line);
}

/* Relay the recipe's merged stdout/stderr from fd, line by line, until EOF. */
static void relay_lines(const struct setup *s, int fd)
{
    char buf[4096], line[4096];
    size_t n = 0;
    for (;;) {
        ssize_t got = read(fd, buf, sizeof buf);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        for (ssize_t i = 0; i < got; i++) {
            char ch = buf[i];
            if (ch == '\n' || ch == '\r' || n == sizeof line - 1) {
                line[n] = '\0';
                recipe_line(s, line);
                n = 0;
                if (ch == '\n' || ch == '\r')
                    continue;
            }
            line[n++] = ch;
        }
    }
    if (n) {
        line[n] = '\0';
        recipe_line(s, line);
    }
}

/*
 * bash build-image.sh ARGS..., its output relayed with timestamps. Returns its exit
 * status, 128+N when signal N ended it, or -errno when it could not run.
 *
 * While it runs, tako ignores SIGINT and SIGQUIT (as system() does): a Ctrl-C at the
 * terminal reaches the whole foreground group, the script traps it, unmounts and removes
 * its rootfs, and still has a reader for its last lines.
 */
static int run_recipe(const struct setup *s, const char *const *extra, size_t nextra)
{
    const char *argv[16];
    size_t n = 0;
    argv[n++] = "bash";
    argv[n++] = s->recipe;
    for (size_t i = 0; i < nextra && n < sizeof argv / sizeof argv[0] - 1; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;

    char docker_host[4200], child_path[8192];
    snprintf(docker_host, sizeof docker_host, "unix://%s", s->cfg.docker_socket);
    /* the tools have_tool() found in sbin (debootstrap, and chroot, mount that it runs) */
    const char *path = getenv("PATH");
    snprintf(child_path, sizeof child_path, "%s:/usr/sbin:/sbin", path ? path : "/usr/bin:/bin");
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        return -e;
    }
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGQUIT, SIG_DFL);
        dup2(p[1], STDOUT_FILENO);
        dup2(p[1], STDERR_FILENO);
        setenv("DOCKER_HOST", docker_host, 1);
        setenv("PATH", child_path, 1);
        execvp("bash", (char *const *)argv);
        fprintf(stderr, "tako setup: cannot run bash %s: %s\n", s->recipe, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    struct sigaction ign = {.sa_handler = SIG_IGN}, fwd = {.sa_handler = forward_signal};
    struct sigaction old_int, old_quit, old_term, old_hup;
    sigaction(SIGINT, &ign, &old_int);
    sigaction(SIGQUIT, &ign, &old_quit);
    recipe_pid = pid;
    sigaction(SIGTERM, &fwd, &old_term);
    sigaction(SIGHUP, &fwd, &old_hup);

    relay_lines(s, p[0]);
    close(p[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    recipe_pid = 0;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The recipe's arguments for this run: --image always; the rest as given / decided. */
static size_t recipe_args(const struct setup *s, bool check, const char **out)
{
    size_t n = 0;
    out[n++] = "--image";
    out[n++] = s->image;
    if (check)
        out[n++] = "--check";
    if (opt_set(s->a, O_FORCE))
        out[n++] = "--force";
    if (!check && opt_set(s->a, O_MIRROR)) {
        out[n++] = "--mirror";
        out[n++] = s->a->val[O_MIRROR];
    }
    if (s->base[0]) {
        out[n++] = "--base";
        out[n++] = s->base;
    }
    return n;
}

/* ---- the registry path ---- */

/*
 * One JSON message of POST /images/create. Layer-by-layer progress ("Downloading",
 * "Extracting", with progressDetail) is too chatty for a log: only the steps are shown.
 */
static void pull_message(const json_t *j, void *arg)
{
    const struct setup *s = arg;
    const char *st = json_string_value(json_object_get(j, "status"));
    const char *id = json_string_value(json_object_get(j, "id"));
    json_t *pd = json_object_get(j, "progressDetail");
    if (st && !(json_is_object(pd) && json_object_size(pd) > 0))
        progress(s, "pull: %s%s%s", id ? id : "", id ? ": " : "", st);
}

/*
 * docker pull `ref` through the Engine API: POST /images/create?fromImage=NAME&tag=TAG
 * (TAG: the tag or digest of ref, "latest" when it has none, never empty: empty pulls
 * every tag). Bounded by PULL_STALL_S without a byte (an unreachable registry answers at
 * once; a stuck one is cut off). 0 or -errno with the reason in err.
 */
static int engine_pull(const struct setup *s, const char *ref, char *err, size_t errlen)
{
    int rc = docker_pull(s->d, ref, PULL_STALL_S, PULL_MAX_S * 1000, pull_message, (void *)s);
    if (rc == -ETIMEDOUT)
        snprintf(err, errlen, "no progress for %ld s (or over %ld s in all)", PULL_STALL_S,
                 PULL_MAX_S);
    else if (rc < 0)
        snprintf(err, errlen, "%s", docker_last_error(s->d));
    return rc;
}

/*
 * --registry-base IMAGE: pull it; when the pull fails but the engine has a copy, build
 * on that copy; else warn and leave s->base empty (the debootstrap path).
 */
static void choose_registry_base(struct setup *s)
{
    const char *ref = s->a->val[O_REGISTRY_BASE];
    char err[768];
    progress(s, "pulling %s (the registry path: no debootstrap) ...", ref);
    int rc = engine_pull(s, ref, err, sizeof err);
    int have = docker_image_exists(s->d, ref);
    if (rc == 0 && have == 1) {
        progress(s, "pulled %s", ref);
        snprintf(s->base, sizeof s->base, "%s", ref);
    } else if (have == 1) {
        progress(s, "warning: docker pull %s failed (%s); using the copy the engine has", ref,
                 rc < 0 ? err : "pulled, but not found after");
        snprintf(s->base, sizeof s->base, "%s", ref);
    } else {
        progress(s, "warning: docker pull %s failed (%s); falling back to debootstrap", ref,
                 rc < 0 ? err : "pulled, but not found after");
    }
}

/* ---- the steps ---- */

/* Steps 1-2: configuration and engine. 0, or the exit code after a one-line error. */
static int setup_engine(struct setup *s)
{
    char src[512], err[1024];
    if (tako_machine_config(s->a, &s->cfg, src, sizeof src, err, sizeof err) < 0)
        return setup_fail(TAKO_EXIT_USAGE, "configuration: %s", err);
    s->image = opt_set(s->a, O_IMAGE) ? s->a->val[O_IMAGE] : s->cfg.docker_image;
    if (opt_set(s->a, O_REGISTRY_BASE) && !docker_image_name_ok(s->a->val[O_REGISTRY_BASE])) {
        tako_usage_error(s->a->cmd, "--registry-base \"%s\" is not an image reference",
                         s->a->val[O_REGISTRY_BASE]);
        return TAKO_EXIT_USAGE;
    }
    if (!docker_image_name_ok(s->image)) {
        tako_usage_error(s->a->cmd, "\"%s\" is not an image reference", s->image);
        return TAKO_EXIT_USAGE;
    }
    int rc = docker_open(&s->d, s->cfg.docker_socket);
    if (rc == 0)
        rc = docker_ping(s->d);
    if (rc < 0)
        return setup_fail(TAKO_EXIT_INFRA,
                          "no Docker engine answers at unix://%s (%s): start it with `dockerd &` "
                          "(or systemctl start docker)",
                          s->cfg.docker_socket, tako_engine_reason(docker_last_error(s->d)));
    return 0;
}

/* Step 4: what a build needs, checked before anything is written. 0 or an exit code. */
static int setup_preflight(struct setup *s)
{
    char root[4096];
    tako_docker_root(s->d, root, sizeof root);
    if (need_space(root, "the Docker root", "free some (docker system prune, docker image prune)") <
        0)
        return 1;
    if (opt_set(s->a, O_REGISTRY_BASE))
        choose_registry_base(s);
    if (s->base[0])
        return 0;

    /* debootstrap runs only when the cached takod-base:<codename> cannot be reused */
    char codename[64], base[128];
    bool cached = false;
    if (!opt_set(s->a, O_FORCE) && host_codename(codename, sizeof codename) == 0) {
        snprintf(base, sizeof base, "takod-base:%s", codename);
        cached = docker_image_exists(s->d, base) == 1;
    }
    if (cached)
        return 0;
    if (!have_tool("debootstrap"))
        return setup_fail(1, "debootstrap not found: apt-get install debootstrap (or use "
                             "--registry-base IMAGE where a registry is reachable)");
    if (geteuid() != 0)
        return setup_fail(1, "building the base image runs debootstrap, which needs root: run "
                             "tako setup as root");
    const char *tmp = getenv("TAKOD_BUILD_TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/var/tmp";
    if (need_space(tmp, "where debootstrap builds the rootfs",
                   "free some, or set TAKOD_BUILD_TMPDIR to a roomier directory") < 0)
        return 1;
    return 0;
}

/* The last line (stdout) or --json object. */
static void setup_report(struct setup *s, bool built)
{
    char id[13];
    image_short_id(s, s->image, id);
    long secs = (long)(mono_seconds() - s->t0);
    if (s->a->json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:s?}", "image", s->image, "id", id, "status",
                              built ? "built" : "up_to_date", "seconds", (json_int_t)secs, "base",
                              s->base[0] ? s->base : NULL);
        tako_print_json(j);
        json_decref(j);
    } else if (built) {
        printf("%s built (%s) in %ld s\n", s->image, id, secs);
    } else {
        printf("%s is up to date (%s)\n", s->image, id);
    }
}

static int setup_run(struct setup *s)
{
    int rc = setup_engine(s);
    if (rc)
        return rc;
    if (find_recipe(s) < 0)
        return setup_fail(1,
                          "build recipe not found: set TAKO_SOURCE_DIR to a takod source tree "
                          "(one with %s)",
                          RECIPE);
    if (!have_tool("bash") || !have_tool("docker"))
        return setup_fail(1, "%s needs bash and the docker CLI: apt-get install bash docker.io",
                          RECIPE);

    /* Step 3: is it current? (--registry-base: only if built on that base) */
    const char *args[16];
    char before[13];
    image_short_id(s, s->image, before);
    if (opt_set(s->a, O_REGISTRY_BASE))
        snprintf(s->base, sizeof s->base, "%s", s->a->val[O_REGISTRY_BASE]);
    rc = run_recipe(s, args, recipe_args(s, true, args));
    s->base[0] = '\0';
    if (rc == 0) {
        setup_report(s, false);
        return TAKO_EXIT_OK;
    }
    if (rc < 0)
        return setup_fail(1, "cannot run %s: %s", s->recipe, strerror(-rc));
    if (rc != RECIPE_STALE)
        return setup_fail(rc > 128 ? rc : 1, "%s --check failed (exit %d): see its lines above",
                          s->recipe, rc);

    /* Steps 4-5 */
    rc = setup_preflight(s);
    if (rc)
        return rc;
    progress(s, "building %s with %s%s%s", s->image, RECIPE, s->base[0] ? " --base " : "", s->base);
    rc = run_recipe(s, args, recipe_args(s, false, args));
    if (rc < 0)
        return setup_fail(1, "cannot run %s: %s", s->recipe, strerror(-rc));
    if (rc != 0)
        return setup_fail(rc > 128 ? rc : 1, "%s failed (exit %d): see its lines above", s->recipe,
                          rc);
    char after[13];
    image_short_id(s, s->image, after);
    setup_report(s, strcmp(before, after) != 0);
    return TAKO_EXIT_OK;
}

int cmd_setup(struct args *a)
{
    struct setup s = {.a = a, .t0 = mono_seconds()};
    int rc = setup_run(&s);
    docker_close(s.d);
    config_free(&s.cfg);
    return rc;
}
