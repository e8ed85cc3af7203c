/*
 * defences.c — the one description of a job's container (see defences.h).
 */
#include "tako/defences.h"
#include "tako/jobtypes.h"
#include "tako/util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Nothing but /tmp, /output and /dev/shm is writable, in any runtime: Docker's default
 * read-only list, plus /sys/fs/cgroup (crun mounts it 1777) and /dev/mqueue. */
static const char *const readonly_paths[] = {
    "/proc/asound", "/proc/bus",           "/proc/fs",       "/proc/irq",
    "/proc/sys",    "/proc/sysrq-trigger", "/sys/fs/cgroup", "/dev/mqueue",
};

/* Docker's default masked paths (and the one newer engines add, powercap): files that
 * describe the host's kernel and hardware. Both backends pass the list explicitly. */
static const char *const masked_paths[] = {
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
};

static void env_add(struct sb_defences *d, size_t *used, const char *item, size_t len)
{
    if (d->n_env >= SB_MAX_ENV || *used + len + 1 > sizeof d->env_buf)
        return; /* config bounds a job type's environment far below this */
    char *p = d->env_buf + *used;
    memcpy(p, item, len);
    p[len] = '\0';
    *used += len + 1;
    d->env[d->n_env++] = p;
}

struct env_walk {
    struct sb_defences *d;
    size_t *used;
};

static int add_type_env(const char *item, size_t len, void *arg)
{
    struct env_walk *w = arg;
    env_add(w->d, w->used, item, len);
    return 0;
}

static void bind_add(struct sb_defences *d, const char *source, size_t source_len,
                     const char *target, bool ro)
{
    if (d->n_binds >= SB_MAX_BINDS)
        return;
    struct sb_bind *b = &d->binds[d->n_binds++];
    snprintf(b->source, sizeof b->source, "%.*s", (int)source_len, source);
    snprintf(b->target, sizeof b->target, "%s", target);
    b->ro = ro;
}

void sandbox_defences(struct sb_defences *d, const struct sandbox_env *env,
                      const struct sandbox_spec *spec, const char *dir, const char *runtime)
{
    const struct tk_config *c = env->cfg;
    memset(d, 0, sizeof *d);
    d->run_uid = d->run_gid = 1000;
    sscanf(c->docker_user, "%u:%u", &d->run_uid, &d->run_gid);
    d->argv[0] = "/usr/local/bin/tako-launcher";
    d->argv[1] = "--stdio";
    d->argv[2] = "--user";
    d->argv[3] = c->docker_user;
    d->user = "0:0";
    d->cwd = "/tmp";
    d->caps[0] = "SETUID";
    d->caps[1] = "SETGID";
    d->caps[2] = "KILL";
    d->n_caps = 3;
    d->no_new_privileges = true;
    d->readonly_rootfs = true;

    /* RLIMIT_NPROC counts every process of the uid on the host, across containers, so it
     * is set where it can never bind before the per-container pids limit does. */
    long long fsize = (long long)c->limits_max_total_artifact_bytes + 1024 * 1024;
    long long nproc = (long long)c->limits_pids * (c->server_executors * 2 + 2);
    d->rlimits[0] = (struct sb_rlimit){"nofile", "RLIMIT_NOFILE", 256};
    d->rlimits[1] = (struct sb_rlimit){"fsize", "RLIMIT_FSIZE", fsize};
    d->rlimits[2] = (struct sb_rlimit){"nproc", "RLIMIT_NPROC", nproc};
    d->n_rlimits = 3;

    size_t used = 0;
    static const char *const fixed[] = {"PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1",
                                        "HOME=/tmp", "LANG=C.UTF-8"};
    for (size_t i = 0; i < TK_ARRAY_LEN(fixed); i++)
        env_add(d, &used, fixed[i], strlen(fixed[i]));
    if (spec->env && *spec->env) {
        struct env_walk w = {d, &used};
        jobtype_each(spec->env, add_type_env, &w);
    }
    if (spec->preload && *spec->preload) { /* the launcher's prestarted interpreter */
        char pl[1200];
        int n = snprintf(pl, sizeof pl, "TAKO_PRELOAD=%s", spec->preload);
        if (n > 0 && (size_t)n < sizeof pl)
            env_add(d, &used, pl, (size_t)n);
    }

    d->memory = spec->memory;
    d->memory_swap = spec->memory;
    d->cpus = spec->cpus;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online > 0 && d->cpus > (double)online)
        d->cpus = (double)online; /* the engine refuses more than the machine has */
    /* gVisor counts its own helper tasks against the pids cgroup (about 40, plus ~6 per
     * process of the job), so the same limit needs a larger number there. */
    d->pids = c->limits_pids;
    if (!strcmp(runtime, "runsc"))
        d->pids = 40 + 6 * d->pids;

    d->tmp_size = c->limits_tmpfs_size;
    d->shm_size = 16 << 20;
    d->readonly_paths = readonly_paths;
    d->n_readonly_paths = TK_ARRAY_LEN(readonly_paths);
    d->masked_paths = masked_paths;
    d->n_masked_paths = TK_ARRAY_LEN(masked_paths);

    static const struct {
        const char *sub;
        bool ro;
    } subs[] = {{"code", true}, {"input", true}, {"output", false}, {"ctl", false}};
    for (size_t i = 0; i < TK_ARRAY_LEN(subs); i++) {
        char src[SB_PATH_BYTES], target[32];
        int n = snprintf(src, sizeof src, "%s/%s", dir, subs[i].sub);
        snprintf(target, sizeof target, "/%s", subs[i].sub);
        bind_add(d, src, n > 0 ? (size_t)n : 0, target, subs[i].ro);
    }
    d->network = spec->network || env->network;

    /* library mode: host directories read-only at /packages/<i>/<name>, on PYTHONPATH */
    char pythonpath[2048] = "PYTHONPATH=";
    for (size_t i = 0; i < env->n_package_dirs && d->n_binds < SB_MAX_BINDS; i++) {
        const char *pdir = env->package_dirs[i];
        size_t len = strlen(pdir);
        while (len > 1 && pdir[len - 1] == '/')
            len--;
        const char *base = pdir;
        for (size_t k = 0; k < len; k++)
            if (pdir[k] == '/')
                base = pdir + k + 1;
        char target[SB_PATH_BYTES];
        snprintf(target, sizeof target, "/packages/%zu/%.*s", i, (int)(pdir + len - base), base);
        bind_add(d, pdir, len, target, true);
        char item[32];
        snprintf(item, sizeof item, "%s/packages/%zu", i ? ":" : "", i);
        strncat(pythonpath, item, sizeof pythonpath - strlen(pythonpath) - 1);
    }
    if (env->n_package_dirs)
        env_add(d, &used, pythonpath, strlen(pythonpath));
}
