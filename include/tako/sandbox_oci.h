/*
 * sandbox_oci.h — the OCI backend: a job's container started straight through an OCI
 * runtime (crun, or gVisor's runsc), no container engine on the job's path.
 *
 * Why: the engine (dockerd, containerd, the shim) costs ~130-170 ms of CPU per container;
 * the runtime alone ~10 ms plus Python's start. Docker still owns images (builds, job
 * types, requirements): the backend runs each image from a read-only rootfs unpacked
 * once from the engine's export (rootfs.h), and every container gets a bundle of its own
 * on top of it — a fresh container that no other job touched, as with the engine.
 *
 * A container here is:
 *   <dir>/config.json    rendered from the one description (defences.h)
 *   <dir>/code input output ctl   bind-mounted as in the Docker backend
 *   <state root>/<id>    the runtime's state, under takod's own root per instance
 *                        (/run/takod/<instance hash>/<runtime>): sweeps touch nothing else
 *   cgroup /takod-<instance hash>/<id>   memory, CPU and pids limits
 * Its id is "p<executor pid>-<basename of dir>", so a sweep knows whose it is.
 *
 * The launcher's protocol runs on two plain pipes (its stdin and stdout) instead of the
 * engine's attach stream: no framing, the same lines. The runtime runs in the foreground
 * for the container's life (`run`): the launcher, PID 1 of its namespace, is its child; it
 * removes the container (state, cgroup) when the launcher exits and exits with its status.
 * So a used container costs no second runtime process, and the executor reaps only its
 * own child, the runtime.
 *
 * Asynchrony as in the Docker backend: the start's answer is the pid file, a FIFO the
 * executor reads (start_fd, O_ASYNC: SIGIO), or its EOF when the runtime failed; the
 * removal's is the runtime's exit (a pidfd).
 */
#ifndef TAKO_SANDBOX_OCI_H
#define TAKO_SANDBOX_OCI_H

#include "tako/docker.h"
#include "tako/sandbox.h"

#include <stdbool.h>
#include <sys/types.h>

/* The runtime binary, state root and cgroup parent for this instance, from docker.runtime
 * (auto, crun: crun; runsc: gVisor; runc: -ENOTSUP, the Docker backend's) and the
 * instance label. No process is started.
 * 0, or -errno with err saying what is missing. */
int oci_setup(const struct sandbox_env *env, char *err, size_t errlen);

/* "crun" or "runsc" (after oci_setup); the state root. */
const char *oci_runtime(void);
const char *oci_state_root(void);

/* Whether a container with every defence runs from the default image's rootfs (unpacking
 * it first if needed). 0, or -errno with err saying why. With crun it also settles how the
 * seccomp filter goes to it (sandbox_oci.c seccomp_compile): precompiled when crun builds
 * the same program and honours the annotation, else as linux.seccomp (said in the log). */
int oci_probe(struct docker *d, const struct sandbox_env *env, char *err, size_t errlen);

/* From now on config.json carries the profile as linux.seccomp, for the runtime to compile
 * (oci_probe's fallback; oci_bundle -s, to see what crun builds from it). */
void oci_seccomp_uncompiled(void);

/* The backend's half of the sandbox.h calls (sandbox.c dispatches to them). */
int oci_prepare_async(struct docker *d, const struct sandbox_env *env, struct warm *w,
                      const char *dir, const struct sandbox_spec *spec);
int oci_started(struct warm *w, int timeout_ms);
void oci_discard(struct warm *w);
int oci_retire_async(struct warm *w, int *fd, pid_t *pid);
int oci_retire_finish(int fd, pid_t pid, int timeout_ms);
/* Signal the container's init (the launcher) — SIGTERM reaches it, SIGKILL ends all. */
void oci_kill(struct warm *w, int sig);
/* After a lost or killed run: whether the cgroup saw an OOM kill, the launcher's exit
 * code (-1 unknown) waiting up to timeout_ms. */
/* The CPU share of a warm container (its start yields to running jobs), and the hand-over
 * that gives it an ordinary one (oci_boost, before the go line). */
#define OCI_WARM_SHARES 2
void oci_boost(const struct warm *w);
void oci_post_mortem(struct warm *w, int timeout_ms, bool *oom, int *exit_code);
/*
 * The config.json a container of spec in dir with id gets (args: its process's argv
 * instead of the launcher's, NULL-terminated; NULL: the launcher). The caller frees it.
 * For tools and tests that drive the runtime themselves (tests/integration's checks).
 */
char *oci_config_text(struct docker *d, const struct sandbox_env *env,
                      const struct sandbox_spec *spec, const char *dir, const char *id,
                      const char *const *args);

/* Last error of this process's backend calls (the runtime's own words when it failed). */
const char *oci_last_error(void);

/*
 * The image ids the bundles under slots_dir (one directory per container) run, into ids
 * (at most max, "sha256:<hex>" each): what a rootfs prune must keep. Returns the count.
 */
size_t oci_images_in_use(const char *slots_dir, char (*ids)[72], size_t max);

/* The rootfs store's prune (rootfs_prune) keeping what this instance's containers run. */
int oci_prune_rootfs(struct docker *d, const char *rootfs_dir, const char *slots_dir);

/*
 * Sweeps. oci_sweep(keep) deletes this instance's containers whose executor pid `keep`
 * says is not alive (keep NULL: all of them — start-up and stop); returns how many.
 */
int oci_sweep(bool (*keep)(pid_t executor));

/* Done with the runtime (a stop, after oci_sweep(NULL); tako doctor, after its probe):
 * the instance's cgroup parent and state root go (rmdir: a root with anything left in it
 * is kept, and logged). */
void oci_release(void);

#endif
