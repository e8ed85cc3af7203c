/*
 * sandbox.h — a job's container: the hardened spec, the warm container each executor
 * keeps ready, and one run through the in-container launcher (image/launcher).
 *
 * Warm containers. An executor creates and starts its next container before a job
 * arrives: the launcher inside blocks on its stdin, which the executor holds through an
 * attach connection. A job's critical path is then: link its files into the container's
 * bind-mounted directories, write one "go" line, and read the launcher's status line
 * when the program has finished. Creating, starting and removing containers happen
 * before and after, never on that path. Every job still gets a container no other job
 * touched; the launcher runs one program and exits.
 *
 * Directory of a warm container (on the host; bind-mounted):
 *   code/ (ro)  input/ (ro)  output/ (rw, run uid)  ctl/ (rw, run uid: stdout, stderr,
 *   status written by the launcher)
 */
#ifndef TAKO_SANDBOX_H
#define TAKO_SANDBOX_H

#include "tako/config.h"
#include "tako/docker.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * What the sandbox needs from its process, passed in rather than read from the global
 * context `tk`: the configuration (docker.image, docker.user, docker.runtime and
 * docker.security_mode, the [limits] a container is made with, server.executors), the
 * instance label its containers carry (takod.instance, what leak sweeps select), where
 * what cannot be removed is put aside, and library mode's additions. The executor builds
 * one from tk (workers/executor.c), library mode from its own configuration and host name
 * (clients/tako/local.c). It must outlive the containers prepared with it (a warm
 * container keeps a pointer to it).
 *
 * sandbox_seccomp_json and sandbox_runtime below are not context: they are what this
 * process chose at start (sandbox_load_seccomp, sandbox_choose_runtime).
 */
struct sandbox_env {
    const struct tk_config *cfg;
    const char *instance;       /* the takod.instance label's value (NULL: "") */
    const char *quarantine_dir; /* rm_rf_aside's aside dir; NULL or "": beside the path */
    const char *rootfs_dir;     /* the OCI backend's unpacked images (rootfs.h) */
    /* library mode (`tako run`) only — takod leaves them empty: network on (bridge), and
     * host directories mounted read-only at /packages/<n> and put on PYTHONPATH */
    bool network;
    const char *const *package_dirs;
    size_t n_package_dirs;
};

/* What a container is made of besides the fixed defences: the job type's image, limits,
 * network and environment. */
struct sandbox_spec {
    const char *image;
    int64_t memory;      /* bytes; memory+swap = memory */
    double cpus;         /* capped at the CPUs online */
    bool network;        /* bridge instead of none */
    const char *env;     /* "KEY=VALUE, ..." (checked by config) or NULL */
    const char *preload; /* modules the warm interpreter imports (TAKO_PRELOAD) or NULL */
};

/* The `default` job type: docker.image with the [limits]. */
void sandbox_default_spec(struct sandbox_spec *s, const struct sandbox_env *env);
/* Job type t's spec, its image `image` (which the caller keeps alive). */
void sandbox_type_spec(struct sandbox_spec *s, const struct tk_job_type *t, const char *image);

struct warm {
    const struct sandbox_env *env; /* what it was prepared with */
    char id[65];
    char dir[4096];
    int fd;         /* the launcher's stdout (Docker: the attach stream, its stdin too) */
    int in_fd;      /* OCI: the launcher's stdin, a pipe; -1 with Docker */
    int start_fd;   /* while its start is on its way: the engine's answer comes here (OCI:
                       a pidfd of the runtime's `run`, readable when it has exited) */
    pid_t rt_pid;   /* OCI: the runtime's `run`, in the foreground for the container's life */
    int exit_fd;    /* OCI: its pidfd, readable once it has exited */
    pid_t init_pid; /* OCI: the launcher, the container's PID 1 (the runtime's child) */
    int init_fd;    /* OCI: its pidfd, what signals it */
    bool oci;       /* made by the OCI backend (a job type with network: by the engine) */
    bool ready;     /* started: a job can have it */
};

/* An empty one (no container, no descriptors). */
void sandbox_warm_init(struct warm *w);

struct sandbox_job {
    int timeout_ms;
    size_t stdout_cap, stderr_cap;
    bool has_stdin;              /* input/stdin exists */
    volatile sig_atomic_t *stop; /* executor told to stop fast: kill, "interrupted" */
    _Atomic uint32_t *cancel;    /* the job was cancelled: kill, "cancelled" */
    /* live output while the program runs (stream 1 stdout, 2 stderr; kept bytes only) */
    void (*on_output)(int stream, const char *data, size_t len, void *arg);
    void *output_arg;
};

struct sandbox_result {
    int exit_code; /* -1 if the program never ran */
    int signal;
    bool timed_out, oom, interrupted, cancelled;
    bool lost;        /* no trustworthy status: the launcher or container died */
    bool not_started; /* the container was gone before the job reached it */
    char error[256];  /* infrastructure or launcher trouble, "" if none */
    struct tk_capbuf out, err;
    uint64_t t_go_us, t_end_us; /* monotonic: go line written, status read */
    const char *runtime;        /* the runtime its container ran under */
};

/* The runtime a job's container runs under by default: the OCI backend's, or the engine's. */
const char *sandbox_runtime_in_use(void);

/* The JSON seccomp profile passed inline with every container (embedded default or
 * docker.seccomp_profile), the runtime in use ("runc" / "crun" / "runsc"). Set once at
 * start. */
extern const char *sandbox_seccomp_json;
extern const char *sandbox_runtime;

/* The executor backend in use, chosen once at start (sandbox_choose_backend): the engine
 * creates and starts every container, or the OCI runtime does, straight from a bundle
 * (sandbox_oci.h). Every call below works with either. */
enum sandbox_backend { SANDBOX_DOCKER, SANDBOX_OCI };
extern enum sandbox_backend sandbox_backend;
const char *sandbox_backend_name(void); /* "docker" or "oci" */

/* Load docker.seccomp_profile (or the embedded default) and check it is JSON. */
int sandbox_load_seccomp(const char *path, char *err, size_t errlen);

/*
 * Set sandbox_runtime from docker.runtime and what the engine offers (needs the seccomp
 * profile loaded). With `probe`, crun must also run a container first (takod, once at
 * start). Returns 0 when it got what was asked (msg may say what auto chose); 1 when it
 * fell back to runc (msg says why and how to fix it: log it loudly); -EPERM when
 * docker.security_mode = strict refuses to fall back (msg says why).
 */
int sandbox_choose_runtime(struct docker *d, const struct sandbox_env *env, bool probe, char *msg,
                           size_t msglen);

/*
 * Set sandbox_backend from executor.backend (after sandbox_choose_runtime): the OCI
 * backend when asked for or auto, set up (oci_setup) and its probe container ran. 0 when
 * it got what was asked (msg says what it chose); 1 when auto fell back to the engine
 * (msg says why: log it loudly); -errno when executor.backend = oci is not usable.
 */
int sandbox_choose_backend(struct docker *d, const struct sandbox_env *env, char *msg,
                           size_t msglen);

/* Create, attach and start a container made to `spec` in `dir` (created here). 0 or
 * -errno (nothing left behind). */
int sandbox_prepare(struct docker *d, const struct sandbox_env *env, struct warm *w,
                    const char *dir, const struct sandbox_spec *spec);

/*
 * The same in two halves, so that an executor takes jobs while the engine starts its next
 * container (~100 ms of its time): create and attach, and send the start without waiting
 * (w->start_fd brings the answer: poll it); then sandbox_started collects the answer
 * (waiting up to timeout_ms) and sets w->ready. On failure the caller discards w.
 */
int sandbox_prepare_async(struct docker *d, const struct sandbox_env *env, struct warm *w,
                          const char *dir, const struct sandbox_spec *spec);
int sandbox_started(struct docker *d, struct warm *w, int timeout_ms);

/*
 * A used container goes without waiting: the removal is sent (the engine's DELETE, or the
 * runtime's `delete -f`) and *fd becomes readable when it is done; sandbox_retire_finish
 * collects it (waiting up to timeout_ms). w is emptied; its directory stays for the
 * caller to release after the finish. 0, or -errno (then discard w the blocking way).
 */
int sandbox_retire_async(struct docker *d, struct warm *w, int *fd, pid_t *pid);
int sandbox_retire_finish(struct docker *d, int fd, pid_t pid, int timeout_ms);

/* Close the attach stream, remove the container (force), remove its directory.
 * docker_last_error stays as it was: the caller's reason for discarding. */
/* A container's directory goes: its tmpfs is detached whole, then rm_rf_aside. */
void sandbox_release_dir(const struct sandbox_env *env, const char *dir);
/* Detach every mount below dir (left by a killed process), from /proc/self/mountinfo. */
void sandbox_umount_under(const char *dir);
void sandbox_discard(struct docker *d, struct warm *w);

/* Run the job whose files are already in w->dir. Fills res (capbufs initialised here). */
void sandbox_run(struct docker *d, struct warm *w, const struct sandbox_job *job,
                 struct sandbox_result *res);

#endif
