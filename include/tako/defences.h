/*
 * defences.h — what every job's container is made of, described once.
 *
 * Both executor backends render this one description: the Docker backend into the
 * engine's create body (HostConfig, sandbox.c), the OCI backend into the bundle's
 * config.json (sandbox_oci.c). Neither adds a defence of its own, so they cannot drift;
 * docs/SECURITY.md lists the entries and tests/integration runs the same security tests
 * on both. What only one side can express is said where it is rendered (Docker's init
 * process, which the OCI side does without: the launcher is PID 1 there).
 *
 * sandbox_defences() fills one for a container of `spec` in `dir` (the host directory
 * whose code/ input/ output/ ctl/ are bind-mounted). Strings point into the struct or
 * into static tables: it is a value, freed by nothing, valid while spec and env are.
 */
#ifndef TAKO_DEFENCES_H
#define TAKO_DEFENCES_H

#include "tako/sandbox.h"

#include <stdbool.h>
#include <stdint.h>

#define SB_MAX_ENV    48
#define SB_MAX_BINDS  (4 + 16)
#define SB_ENV_BYTES  8192
#define SB_PATH_BYTES 4200

struct sb_bind {
    char source[SB_PATH_BYTES]; /* host path */
    char target[SB_PATH_BYTES]; /* in the container */
    bool ro;
};

struct sb_rlimit {
    const char *docker_name; /* Ulimits' Name */
    const char *oci_type;    /* process.rlimits' type */
    long long limit;         /* soft = hard */
};

struct sb_defences {
    /* the process: the launcher, as root with three capabilities; it runs the program as
     * docker.user (the uid the launcher switches to) */
    const char *argv[5];
    const char *user; /* the launcher's uid:gid ("0:0") */
    unsigned run_uid, run_gid;
    const char *cwd;
    const char *caps[3]; /* kept; every other capability is dropped */
    size_t n_caps;
    bool no_new_privileges;
    bool readonly_rootfs;
    struct sb_rlimit rlimits[3];
    size_t n_rlimits;
    /* the environment: fixed entries, the job type's, TAKO_PRELOAD, PYTHONPATH */
    const char *env[SB_MAX_ENV];
    size_t n_env;
    char env_buf[SB_ENV_BYTES];
    /* resources (cgroup) */
    int64_t memory, memory_swap; /* bytes; swap = memory: no swap */
    double cpus;                 /* capped at the CPUs online */
    int64_t pids;
    /* file systems */
    int64_t tmp_size; /* /tmp: tmpfs rw,noexec,nosuid,nodev,size= */
    int64_t shm_size; /* /dev/shm: private to the container */
    const char *const *readonly_paths;
    size_t n_readonly_paths;
    const char *const *masked_paths; /* Docker's defaults, passed explicitly to both */
    size_t n_masked_paths;
    struct sb_bind binds[SB_MAX_BINDS];
    size_t n_binds;
    /* network: an empty namespace unless the job type (or library mode) enables it */
    bool network;
};

/* Fill d for a container of spec in dir under runtime ("runc", "crun", "runsc"). */
void sandbox_defences(struct sb_defences *d, const struct sandbox_env *env,
                      const struct sandbox_spec *spec, const char *dir, const char *runtime);

#endif
