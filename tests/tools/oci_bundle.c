/*
 * oci_bundle — write an OCI bundle's config.json with takod's own renderer, for the shell
 * checks that drive the runtime themselves (tests/integration/launcher_check.sh's OCI mode).
 * Built for tests only; linked against takocommon.
 *
 *   oci_bundle -c CONF [-o section.key=value]... -i INSTANCE -d DIR -n ID
 *              [-m MEMORY_BYTES] [-u UID:GID] [-s] [-- ARGV...]
 *
 * It loads the configuration as takod does (the file, then the -o overrides), loads the
 * seccomp profile (sandbox_load_seccomp), sets the OCI backend up for INSTANCE
 * (oci_setup: the runtime, its state root /run/takod/<hash of INSTANCE>/<runtime>, the
 * cgroup parent takod-<hash>), and writes DIR/config.json from oci_config_text() for the
 * default job type's spec (MEMORY_BYTES instead of [limits] memory when given), with
 * ARGV as the process's argv instead of the launcher's --stdio one.
 *
 * -u UID:GID runs the process as that uid with no capabilities at all — what the Docker
 * backend's check does with `--user UID:GID --cap-drop ALL` for the launcher's FIFO mode,
 * which runs without --user, as the program's own uid. Everything else is the renderer's.
 *
 * -s puts the seccomp profile in as linux.seccomp, for crun to compile, instead of takod's
 * precompiled program (the annotation run.oci.seccomp_bpf_data a job's config.json has
 * under crun): tests/integration/seccomp_check_oci.py compares the two.
 *
 * On stdout: "runtime=<crun, runc or runsc> root=<state root> cgroup_parent=<name>", one line, for the
 * script's `crun --root` and its cleanup. Exit 0, or 1 with one line on stderr.
 */
#include "tako/config.h"
#include "tako/docker.h"
#include "tako/sandbox.h"
#include "tako/sandbox_oci.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_OVERRIDES 64

static int usage(void)
{
    fprintf(stderr, "usage: oci_bundle -c CONF [-o section.key=value]... -i INSTANCE -d DIR "
                    "-n ID [-m MEMORY_BYTES] [-u UID:GID] [-s] [-- ARGV...]\n");
    return 1;
}

/* process.user = uid:gid and every capability set emptied (see the header). */
static int set_user(json_t *cfg, const char *user)
{
    unsigned uid, gid;
    if (sscanf(user, "%u:%u", &uid, &gid) != 2)
        return -1;
    json_t *proc = json_object_get(cfg, "process");
    json_object_set_new(proc, "user", json_pack("{s:I,s:I}", "uid", (json_int_t)uid, "gid",
                                                (json_int_t)gid));
    json_t *caps = json_object_get(proc, "capabilities");
    const char *set;
    json_t *v;
    json_object_foreach(caps, set, v) json_array_clear(v);
    return 0;
}

int main(int argc, char **argv)
{
    const char *conf = NULL, *instance = NULL, *dir = NULL, *id = NULL, *user = NULL;
    bool uncompiled = false;
    char *overrides[MAX_OVERRIDES];
    size_t n_over = 0;
    long long memory = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:o:i:d:n:m:u:s")) != -1) {
        switch (opt) {
        case 'c': conf = optarg; break;
        case 'o':
            if (n_over == MAX_OVERRIDES)
                return usage();
            overrides[n_over++] = optarg;
            break;
        case 'i': instance = optarg; break;
        case 'd': dir = optarg; break;
        case 'n': id = optarg; break;
        case 'm': memory = atoll(optarg); break;
        case 'u': user = optarg; break;
        case 's': uncompiled = true; break;
        default: return usage();
        }
    }
    if (!conf || !instance || !dir || !id)
        return usage();
    const char *const *args = optind < argc ? (const char *const *)&argv[optind] : NULL;

    struct tk_config cfg;
    char err[1024];
    if (config_load(&cfg, conf, overrides, n_over, err, sizeof err) < 0) {
        fprintf(stderr, "oci_bundle: config_load %s: %s\n", conf, err);
        return 1;
    }
    if (sandbox_load_seccomp(cfg.docker_seccomp_profile, err, sizeof err) < 0) {
        fprintf(stderr, "oci_bundle: sandbox_load_seccomp: %s\n", err);
        return 1;
    }
    char rootfs_dir[4096];
    if (cfg.executor_rootfs_dir[0])
        snprintf(rootfs_dir, sizeof rootfs_dir, "%s", cfg.executor_rootfs_dir);
    else
        snprintf(rootfs_dir, sizeof rootfs_dir, "%s/rootfs", cfg.server_data_dir);
    struct sandbox_env env = {.cfg = &cfg, .instance = instance, .rootfs_dir = rootfs_dir};
    if (oci_setup(&env, err, sizeof err) < 0) {
        fprintf(stderr, "oci_bundle: oci_setup: %s\n", err);
        return 1;
    }
    if (uncompiled)
        oci_seccomp_uncompiled();
    struct docker *d = NULL;
    if (docker_open(&d, cfg.docker_socket) < 0) {
        fprintf(stderr, "oci_bundle: docker_open %s: %s\n", cfg.docker_socket,
                docker_last_error(NULL));
        return 1;
    }
    struct sandbox_spec spec;
    sandbox_default_spec(&spec, &env);
    if (memory > 0)
        spec.memory = memory;
    char *text = oci_config_text(d, &env, &spec, dir, id, args);
    docker_close(d);
    if (!text) {
        fprintf(stderr, "oci_bundle: oci_config_text %s: %s\n", id, oci_last_error());
        return 1;
    }
    json_t *cfg_json = json_loads(text, 0, NULL);
    free(text);
    if (!cfg_json || (user && set_user(cfg_json, user) < 0)) {
        fprintf(stderr, "oci_bundle: %s\n", cfg_json ? "bad -u UID:GID" : "renderer's JSON");
        return 1;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (json_dump_file(cfg_json, path, JSON_INDENT(1)) < 0) {
        fprintf(stderr, "oci_bundle: write %s failed\n", path);
        return 1;
    }
    json_decref(cfg_json);
    /* the cgroup parent is the state root's instance hash (oci_setup) */
    const char *root = oci_state_root();
    const char *slash = strrchr(root, '/');
    char hash[64] = "";
    if (slash && slash > root) {
        const char *prev = slash - 1;
        while (prev > root && *prev != '/')
            prev--;
        snprintf(hash, sizeof hash, "%.*s", (int)(slash - prev - 1), prev + 1);
    }
    printf("runtime=%s root=%s cgroup_parent=takod-%s\n", oci_runtime(), root, hash);
    config_free(&cfg);
    return 0;
}
