/*
 * sandbox_oci.c — containers straight through an OCI runtime (see sandbox_oci.h).
 */
#include "tako/sandbox_oci.h"
#include "tako/defences.h"
#include "tako/log.h"
#include "tako/rootfs.h"
#include "tako/util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/statfs.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define RUN_WAIT_MS    10000 /* a `delete` or a blocking `run` that takes longer has hung */
#define IMAGE_CHECK_MS 10000 /* how often a tag is looked up again (a rebuilt image) */
#define ERR_HEAD       400   /* bytes of the runtime's stderr kept for an error */

extern char **environ;

static struct {
    const char *name;   /* crun, runc, runsc */
    char bin[512];      /* its path */
    int exe_fd;         /* crun: a sealed memfd copy of bin, what is executed (see sealed_copy) */
    bool sealed;        /* exe_fd is open */
    char root[512];     /* --root: this instance's state */
    char cg_parent[40]; /* takod-<instance hash> */
    bool cgroup_v2;
    json_t *seccomp;    /* linux.seccomp, from the Docker-format profile */
    char *seccomp_bpf;  /* crun: that filter compiled, base64 (run.oci.seccomp_bpf_data) */
    unsigned char *bpf; /* the same program's bytes (oci_probe compares them) */
    size_t bpf_len;     /* its length: 8 bytes (struct sock_filter) an instruction */
    char err[768];
} oci;

const char *oci_runtime(void)
{
    return oci.name ? oci.name : "crun";
}

const char *oci_state_root(void)
{
    return oci.root;
}

const char *oci_last_error(void)
{
    return oci.err;
}

static void set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(oci.err, sizeof oci.err, fmt, ap);
    va_end(ap);
}

static int find_bin(const char *name, char *out, size_t len)
{
    /* takod's PATH, as a shell would search it (the standard directories when it has none) */
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s",
             path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/%s", d, name);
        if (*d == '/' && access(out, X_OK) == 0)
            return 0;
    }
    out[0] = '\0';
    return -ENOENT;
}

/* ---- the seccomp profile: Docker's format → the OCI spec's ---- */

#if defined(__x86_64__)
#define HOST_ARCH      "amd64"
#define HOST_SCMP_ARCH "SCMP_ARCH_X86_64"
#elif defined(__aarch64__)
#define HOST_ARCH      "arm64"
#define HOST_SCMP_ARCH "SCMP_ARCH_AARCH64"
#else
#error "sandbox_oci.c: add this architecture's seccomp names"
#endif

/* An entry applies here when its includes name this architecture (or none) and it is not
 * conditioned on capabilities (a job has none that Docker's profiles key on). */
static bool entry_applies(json_t *e)
{
    json_t *inc = json_object_get(e, "includes"), *exc = json_object_get(e, "excludes");
    json_t *arches = json_object_get(inc, "arches"), *v;
    size_t i;
    if (json_object_get(inc, "caps") || json_object_get(exc, "caps"))
        return false;
    if (json_array_size(arches) > 0) {
        bool ours = false;
        json_array_foreach(arches, i, v) ours |= !strcmp(json_string_value(v) ?: "", HOST_ARCH);
        if (!ours)
            return false;
    }
    json_array_foreach(json_object_get(exc, "arches"), i,
                       v) if (!strcmp(json_string_value(v) ?: "", HOST_ARCH)) return false;
    return true;
}

static json_t *seccomp_to_oci(const char *docker_json)
{
    json_t *p = json_loads(docker_json, 0, NULL);
    if (!p)
        return NULL;
    json_t *out = json_object(), *arches = json_array(), *calls = json_array(), *e;
    json_object_set(out, "defaultAction", json_object_get(p, "defaultAction"));
    if (json_object_get(p, "defaultErrnoRet"))
        json_object_set(out, "defaultErrnoRet", json_object_get(p, "defaultErrnoRet"));
    /* the host's entry of the archMap, with the sub-architectures it names (the default
     * profile names none: no 32-bit ABI, docs/SECURITY.md) */
    size_t i, k;
    json_t *a, *sub;
    json_array_foreach(json_object_get(p, "archMap"), i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "architecture")) ?: "", HOST_SCMP_ARCH))
            continue;
        json_array_append_new(arches, json_string(HOST_SCMP_ARCH));
        json_array_foreach(json_object_get(a, "subArchitectures"), k, sub)
            json_array_append(arches, sub);
    }
    if (json_array_size(arches) == 0) /* a profile without an archMap: the native ABI */
        json_array_append_new(arches, json_string(HOST_SCMP_ARCH));
    json_object_set_new(out, "architectures", arches);
    json_array_foreach(json_object_get(p, "syscalls"), i, e)
    {
        if (!entry_applies(e))
            continue;
        json_t *c = json_object();
        static const char *const keep[] = {"names", "action", "args", "errnoRet"};
        for (size_t j = 0; j < TK_ARRAY_LEN(keep); j++)
            if (json_object_get(e, keep[j]))
                json_object_set(c, keep[j], json_object_get(e, keep[j]));
        json_array_append_new(calls, c);
    }
    json_object_set_new(out, "syscalls", calls);
    json_decref(p);
    return out;
}

/*
 * linux.seccomp compiled to the BPF program seccomp(2) loads, base64-encoded, for crun's
 * annotation run.oci.seccomp_bpf_data: crun then loads these bytes instead of compiling
 * the profile with libseccomp in every container (its checksum, its cache lookup, ~1.3 ms of
 * CPU a container here; docs/PERFORMANCE.md). The rules are added exactly as crun 1.8's
 * libcrun_generate_seccomp adds them — the same action and errno mapping, an entry with the
 * default action skipped, an argument index named twice making one rule per comparison,
 * unknown syscall names left out — so the program is the one crun would build, byte for
 * byte. A job's config.json then carries the annotation instead of linux.seccomp, and
 * only once oci_probe has seen, at start-up, that this crun builds the same bytes from the
 * profile and that it honours the annotation (a crun before 0.18 ignores it: no filter at
 * all); else the profile goes to crun as linux.seccomp, compiled in every container.
 */
static int scmp_action(const char *name, json_t *errno_ret, uint32_t *out)
{
    int e = errno_ret ? (int)json_integer_value(errno_ret) : EPERM;
    static const struct {
        const char *name;
        uint32_t action;
    } plain[] = {{"SCMP_ACT_ALLOW", SCMP_ACT_ALLOW},
                 {"SCMP_ACT_KILL", SCMP_ACT_KILL},
                 {"SCMP_ACT_KILL_THREAD", SCMP_ACT_KILL_THREAD},
                 {"SCMP_ACT_KILL_PROCESS", SCMP_ACT_KILL_PROCESS},
                 {"SCMP_ACT_TRAP", SCMP_ACT_TRAP},
                 {"SCMP_ACT_LOG", SCMP_ACT_LOG}};
    if (!name)
        return -EINVAL;
    if (!strcmp(name, "SCMP_ACT_ERRNO")) {
        *out = SCMP_ACT_ERRNO((uint32_t)e);
        return 0;
    }
    if (!strcmp(name, "SCMP_ACT_TRACE")) {
        *out = SCMP_ACT_TRACE((uint32_t)e);
        return 0;
    }
    for (size_t i = 0; i < TK_ARRAY_LEN(plain); i++)
        if (!strcmp(name, plain[i].name)) {
            *out = plain[i].action;
            return 0;
        }
    return -EINVAL;
}

static int scmp_op(const char *name, enum scmp_compare *out)
{
    static const char *const ops[] = {"",
                                      "SCMP_CMP_NE",
                                      "SCMP_CMP_LT",
                                      "SCMP_CMP_LE",
                                      "SCMP_CMP_EQ",
                                      "SCMP_CMP_GE",
                                      "SCMP_CMP_GT",
                                      "SCMP_CMP_MASKED_EQ"};
    for (size_t i = 1; name && i < TK_ARRAY_LEN(ops); i++)
        if (!strcmp(name, ops[i])) {
            *out = (enum scmp_compare)i;
            return 0;
        }
    return -EINVAL;
}

/* The rules of one syscalls[] entry for syscall nr (crun's way with repeated indexes). */
static int scmp_add_entry(scmp_filter_ctx ctx, uint32_t action, int nr, json_t *args)
{
    struct scmp_arg_cmp cmp[6];
    unsigned n = 0, count[6] = {0};
    bool repeated = false;
    size_t k;
    json_t *a;
    json_array_foreach(args, k, a)
    {
        if (n == 6)
            break;
        json_int_t idx = json_integer_value(json_object_get(a, "index"));
        if (idx < 0 || idx >= 6 ||
            scmp_op(json_string_value(json_object_get(a, "op")), &cmp[n].op) < 0)
            return -EINVAL;
        repeated |= ++count[idx] > 1;
        cmp[n].arg = (unsigned)idx;
        cmp[n].datum_a = (scmp_datum_t)json_integer_value(json_object_get(a, "value"));
        cmp[n].datum_b = (scmp_datum_t)json_integer_value(json_object_get(a, "valueTwo"));
        n++;
    }
    if (!repeated)
        return seccomp_rule_add_array(ctx, action, nr, n, cmp);
    for (unsigned r = 0; r < n; r++) {
        int rc = seccomp_rule_add_array(ctx, action, nr, 1, &cmp[r]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int seccomp_compile(json_t *sc, char **b64, unsigned char **raw, size_t *rawlen, char *why,
                           size_t whylen)
{
    uint32_t def, action;
    if (scmp_action(json_string_value(json_object_get(sc, "defaultAction")),
                    json_object_get(sc, "defaultErrnoRet"), &def) < 0) {
        snprintf(why, whylen, "defaultAction is not one this compiler knows");
        return -EINVAL;
    }
    scmp_filter_ctx ctx = seccomp_init(def);
    if (!ctx) {
        snprintf(why, whylen, "seccomp_init failed");
        return -ENOMEM;
    }
    int rc = 0, fd = -1;
    size_t i, j;
    json_t *v, *e;
    json_array_foreach(json_object_get(sc, "architectures"), i, v)
    {
        char arch[32];
        const char *name = json_string_value(v) ?: "";
        snprintf(arch, sizeof arch, "%s", strncmp(name, "SCMP_ARCH_", 10) ? name : name + 10);
        for (char *p = arch; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        uint32_t token = seccomp_arch_resolve_name(arch);
        if (token == 0 || ((rc = seccomp_arch_add(ctx, token)) < 0 && rc != -EEXIST)) {
            snprintf(why, whylen, "architecture %s: %s", name, token ? strerror(-rc) : "unknown");
            rc = rc < 0 ? rc : -EINVAL;
            goto out;
        }
        rc = 0;
    }
    json_array_foreach(json_object_get(sc, "syscalls"), i, e)
    {
        if (scmp_action(json_string_value(json_object_get(e, "action")),
                        json_object_get(e, "errnoRet"), &action) < 0) {
            snprintf(why, whylen, "syscalls[%zu]: an action this compiler does not know", i);
            rc = -EINVAL;
            goto out;
        }
        if (action == def)
            continue;
        json_array_foreach(json_object_get(e, "names"), j, v)
        {
            int nr = seccomp_syscall_resolve_name(json_string_value(v) ?: "");
            if (nr == __NR_SCMP_ERROR) /* not a syscall of this kernel's headers: as crun */
                continue;
            if ((rc = scmp_add_entry(ctx, action, nr, json_object_get(e, "args"))) < 0) {
                snprintf(why, whylen, "syscalls[%zu] %s: %s", i, json_string_value(v),
                         strerror(-rc));
                goto out;
            }
        }
    }
    struct stat st;
    if ((fd = memfd_create("takod-seccomp", MFD_CLOEXEC)) < 0 ||
        (rc = seccomp_export_bpf(ctx, fd)) < 0 || fstat(fd, &st) < 0 || st.st_size <= 0 ||
        st.st_size > (1 << 20) || st.st_size % 8 != 0) {
        rc = rc < 0 ? rc : -EIO;
        snprintf(why, whylen, "exporting the BPF program: %s", strerror(-rc));
        goto out;
    }
    unsigned char *bpf = malloc((size_t)st.st_size);
    *b64 = malloc(4 * (((size_t)st.st_size + 2) / 3) + 1);
    if (!bpf || !*b64 || pread(fd, bpf, (size_t)st.st_size, 0) != st.st_size) {
        free(bpf);
        free(*b64);
        *b64 = NULL;
        snprintf(why, whylen, "reading the BPF program back");
        rc = -EIO;
        goto out;
    }
    EVP_EncodeBlock((unsigned char *)*b64, bpf, (int)st.st_size);
    *raw = bpf;
    *rawlen = (size_t)st.st_size;
out:
    if (fd >= 0)
        close(fd);
    seccomp_release(ctx);
    return rc;
}

/*
 * crun's defence against CVE-2019-5736 (a container overwriting the host's runtime binary
 * through /proc/self/exe) is to copy itself, at every start, into a sealed memfd and
 * execute that copy: a second exec, with its ten shared libraries loaded and relocated
 * again, in every `crun run` and `delete` (1.4 ms of CPU of a container's ~9 here).
 * crun skips the copy when it already runs from a memfd sealed exactly against writes,
 * growth, shrinking and further seals (cloned_binary.c is_self_cloned: "sharing it isn't
 * a bad thing"; runc's memfd-bind does the same for every runc). So takod makes that copy
 * once per process and executes it: the same protection — nothing can write the sealed
 * copy — without the per-container copy and exec. (What is given up: the copy lives as
 * long as takod, so a kernel bug that let someone write a sealed memfd would last until
 * the restart instead of one container; and an upgraded crun binary is picked up at the
 * next start.) The same seals as crun's, so crun's own check is what decides.
 */
#define CRUN_MEMFD_SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

/* The sealed copy of path: its descriptor (close-on-exec, >= 10), or -ENOEXEC (not an ELF
 * binary) / -EIO, with why said in why. */
static int sealed_copy(const char *path, char *why, size_t wl)
{
    int src = open(path, O_RDONLY | O_CLOEXEC);
    if (src < 0) {
        snprintf(why, wl, "open %s: %s", path, strerror(errno));
        return -EIO;
    }
    struct stat st;
    int fd = -1, e = 0;
    const char *what = "fstat";
    if (fstat(src, &st) < 0)
        goto fail;
    /* a script (a wrapper crun) is run from its path: executing a descriptor that the
     * exec closes leaves its interpreter nothing to open */
    char magic[4];
    if (pread(src, magic, sizeof magic, 0) != (ssize_t)sizeof magic ||
        memcmp(magic, "\177ELF", 4)) {
        close(src);
        snprintf(why, wl, "%s is not an ELF binary", path);
        return -ENOEXEC;
    }
    what = "memfd_create";
    if ((fd = memfd_create("crun", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0)
        goto fail;
    /* above the descriptors a spawn moves into 0..3, so no dup2 there replaces it */
    what = "fcntl F_DUPFD_CLOEXEC";
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    if (high < 0)
        goto fail;
    close(fd);
    fd = high;
    what = "sendfile";
    for (off_t off = 0; off < st.st_size;) {
        ssize_t n = sendfile(fd, src, &off, (size_t)(st.st_size - off));
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* the binary shrank while it was copied */
            goto fail;
        }
    }
    what = "fcntl F_ADD_SEALS";
    if (fcntl(fd, F_ADD_SEALS, CRUN_MEMFD_SEALS) < 0)
        goto fail;
    if (fcntl(fd, F_GET_SEALS) != CRUN_MEMFD_SEALS) {
        errno = EPERM;
        goto fail;
    }
    close(src);
    return fd;
fail:
    e = errno;
    snprintf(why, wl, "%s (a sealed copy of %s): %s", what, path, strerror(e));
    close(src);
    if (fd >= 0)
        close(fd);
    return -EIO;
}

int oci_setup(const struct sandbox_env *env, char *err, size_t errlen)
{
    const struct tk_config *c = env->cfg;
    if (geteuid() != 0) {
        snprintf(err, errlen,
                 "the OCI backend needs takod to run as root (it makes namespaces "
                 "and cgroups itself)");
        return -EPERM;
    }
    /* crun, or gVisor's runsc. Not runc: it writes its pid file by a rename, which the
     * start's FIFO (oci_prepare_async) cannot see; docker.runtime = runc means the
     * engine's default, which the Docker backend is. */
    if (c->docker_runtime == TK_RUNTIME_RUNC) {
        snprintf(err, errlen,
                 "docker.runtime = runc: the OCI backend runs crun or runsc "
                 "(runc is the Docker backend's default)");
        return -ENOTSUP;
    }
    const char *name = c->docker_runtime == TK_RUNTIME_RUNSC ? "runsc" : "crun";
    int rc = find_bin(name, oci.bin, sizeof oci.bin);
    if (rc < 0) {
        snprintf(err, errlen, "no %s binary on PATH (install it: scripts/setup-runtime.sh %s)",
                 name, name);
        return rc;
    }
    oci.name = name;
    if (oci.sealed)
        close(oci.exe_fd);
    oci.sealed = false;
    if (!strcmp(name, "crun")) {
        char why[400];
        oci.exe_fd = sealed_copy(oci.bin, why, sizeof why);
        oci.sealed = oci.exe_fd >= 0;
        if (oci.exe_fd == -ENOEXEC)
            log_info("msg=\"crun is run from its path\" why=\"%s\"", why);
        else if (!oci.sealed)
            log_warn("msg=\"crun runs from its path and copies itself at every start "
                     "(slower, the same protection)\" err=\"%s\"",
                     why);
    }
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx",
             (unsigned long long)str_hash(env->instance ? env->instance : ""));
    snprintf(oci.root, sizeof oci.root, "/run/takod/%s/%s", hash, name);
    snprintf(oci.cg_parent, sizeof oci.cg_parent, "takod-%s", hash);
    if ((rc = mkdir_p(oci.root, 0700)) < 0) {
        snprintf(err, errlen, "mkdir %s: %s", oci.root, strerror(-rc));
        return rc;
    }
    struct statfs sf;
    oci.cgroup_v2 = statfs("/sys/fs/cgroup", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC;
    json_decref(oci.seccomp);
    oci.seccomp = sandbox_seccomp_json ? seccomp_to_oci(sandbox_seccomp_json) : NULL;
    if (!oci.seccomp) {
        snprintf(err, errlen, "the seccomp profile could not be converted to the OCI form");
        return -EINVAL;
    }
    oci_seccomp_uncompiled();
    char why[256] = "";
    if (!strcmp(name, "crun") &&
        seccomp_compile(oci.seccomp, &oci.seccomp_bpf, &oci.bpf, &oci.bpf_len, why, sizeof why) < 0)
        log_warn("msg=\"the seccomp profile was not compiled here; crun compiles it in each "
                 "container (slower, the same filter)\" err=\"%s\"",
                 why);
    return 0;
}

void oci_seccomp_uncompiled(void)
{
    free(oci.seccomp_bpf);
    free(oci.bpf);
    oci.seccomp_bpf = NULL;
    oci.bpf = NULL;
    oci.bpf_len = 0;
}

/* ---- images: a tag or id → its unpacked rootfs and its environment ---- */

struct image {
    char name[160];     /* as the spec names it: a tag or an id */
    char rootfs[4096];  /* rootfs_ensure's path */
    json_t *env;        /* Config.Env: PATH and what the image sets */
    uint64_t looked_ms; /* when the name was resolved */
};
static struct image images[8];
static unsigned next_image;

static const struct image *image_for(struct docker *d, const struct sandbox_env *env,
                                     const char *name)
{
    bool is_id = !strncmp(name, "sha256:", 7);
    uint64_t now = now_mono_ms();
    struct stat sb;
    for (size_t i = 0; i < TK_ARRAY_LEN(images); i++)
        if (images[i].name[0] && !strcmp(images[i].name, name) &&
            (is_id || now - images[i].looked_ms < IMAGE_CHECK_MS) &&
            stat(images[i].rootfs, &sb) == 0) /* not pruned meanwhile */
            return &images[i];
    json_t *info = NULL;
    int rc = docker_image_inspect(d, name, &info);
    if (rc < 0) {
        set_err("docker_image_inspect %s: %s", name, docker_last_error(d));
        return NULL;
    }
    const char *id = json_string_value(json_object_get(info, "Id"));
    char path[4096], why[512] = "";
    unsigned uid = 1000, gid = 1000; /* /output's owner in the image: docker.user */
    sscanf(env->cfg->docker_user, "%u:%u", &uid, &gid);
    if (!id ||
        rootfs_ensure(d, env->rootfs_dir, id, uid, gid, path, sizeof path, why, sizeof why) < 0) {
        set_err("the rootfs of image %s: %s", name, id ? why : "no Id in its inspect");
        json_decref(info);
        return NULL;
    }
    struct image *im = NULL;
    for (size_t i = 0; i < TK_ARRAY_LEN(images) && !im; i++)
        if (!strcmp(images[i].name, name))
            im = &images[i];
    if (!im)
        im = &images[next_image++ % TK_ARRAY_LEN(images)];
    json_decref(im->env);
    snprintf(im->name, sizeof im->name, "%s", name);
    snprintf(im->rootfs, sizeof im->rootfs, "%s", path);
    im->env = json_incref(json_object_get(json_object_get(info, "Config"), "Env"));
    im->looked_ms = now;
    json_decref(info);
    return im;
}

/* ---- config.json: the OCI rendering of the defences (defences.h) ---- */

/* What a template (config_text) has where a container's own values go. */
#define DIR_MARK  "/@@takod-dir@@"
#define ID_MARK   "@@takod-id@@"
#define HOST_MARK "@@takod-host@@"

static json_t *mount(const char *dest, const char *type, const char *src, const char *opts)
{
    json_t *o = json_array();
    char buf[256];
    snprintf(buf, sizeof buf, "%s", opts);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(o, json_string(t));
    return json_pack("{s:s, s:s, s:s, s:o}", "destination", dest, "type", type, "source", src,
                     "options", o);
}

static bool env_has_key(const struct sb_defences *df, const char *item)
{
    const char *eq = strchr(item, '=');
    size_t kl = eq ? (size_t)(eq - item) : strlen(item);
    for (size_t i = 0; i < df->n_env; i++)
        if (!strncmp(df->env[i], item, kl) && df->env[i][kl] == '=')
            return true;
    return false;
}

static json_t *oci_config(const struct sandbox_env *env, const struct sandbox_spec *spec,
                          const char *dir, const char *id, const struct image *im,
                          const char *const *args)
{
    struct sb_defences *df = malloc(sizeof *df);
    if (!df)
        return NULL;
    sandbox_defences(df, env, spec, dir, oci.name);
    json_t *argv = json_array(), *envs = json_array(), *caps = json_array(), *rl = json_array();
    for (size_t i = 0; args ? args[i] != NULL : i < TK_ARRAY_LEN(df->argv) && df->argv[i]; i++)
        json_array_append_new(argv, json_string(args ? args[i] : df->argv[i]));
    /* the image's environment first (PATH), what the container sets overriding it */
    size_t i;
    json_t *v;
    json_array_foreach(im->env, i,
                       v) if (json_string_value(v) && !env_has_key(df, json_string_value(v)))
        json_array_append(envs, v);
    for (i = 0; i < df->n_env; i++)
        json_array_append_new(envs, json_string(df->env[i]));
    for (i = 0; i < df->n_caps; i++) {
        char cap[40];
        snprintf(cap, sizeof cap, "CAP_%s", df->caps[i]);
        json_array_append_new(caps, json_string(cap));
    }
    for (i = 0; i < df->n_rlimits; i++)
        json_array_append_new(rl, json_pack("{s:s, s:I, s:I}", "type", df->rlimits[i].oci_type,
                                            "hard", (json_int_t)df->rlimits[i].limit, "soft",
                                            (json_int_t)df->rlimits[i].limit));
    unsigned uid = 0, gid = 0;
    sscanf(df->user, "%u:%u", &uid, &gid);
    json_t *process = json_pack(
        "{s:b, s:{s:I, s:I}, s:o, s:o, s:s, s:{s:O, s:O, s:O, s:[], s:[]}, s:o, s:b}", "terminal",
        0, "user", "uid", (json_int_t)uid, "gid", (json_int_t)gid, "args", argv, "env", envs, "cwd",
        df->cwd, "capabilities", "bounding", caps, "effective", caps, "permitted", caps,
        "inheritable", "ambient", "rlimits", rl, "noNewPrivileges", df->no_new_privileges);
    json_decref(caps);

    char tmpfs[160], shm[160];
    snprintf(tmpfs, sizeof tmpfs, "rw,noexec,nosuid,nodev,size=%lld", (long long)df->tmp_size);
    snprintf(shm, sizeof shm, "nosuid,noexec,nodev,mode=1777,size=%lld", (long long)df->shm_size);
    json_t *mounts = json_array();
    json_array_append_new(mounts, mount("/proc", "proc", "proc", "nosuid,noexec,nodev"));
    json_array_append_new(
        mounts, mount("/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k"));
    json_array_append_new(mounts, mount("/dev/pts", "devpts", "devpts",
                                        "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5"));
    json_array_append_new(mounts, mount("/dev/shm", "tmpfs", "shm", shm));
    json_array_append_new(mounts, mount("/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev"));
    json_array_append_new(mounts, mount("/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro"));
    json_array_append_new(
        mounts, mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid,noexec,nodev,relatime,ro"));
    json_array_append_new(mounts, mount("/tmp", "tmpfs", "tmpfs", tmpfs));
    for (i = 0; i < df->n_binds; i++)
        json_array_append_new(mounts,
                              mount(df->binds[i].target, "bind", df->binds[i].source,
                                    df->binds[i].ro ? "rbind,rprivate,ro" : "rbind,rprivate,rw"));

    json_t *masked = json_array(), *ro = json_array();
    for (i = 0; i < df->n_masked_paths; i++)
        json_array_append_new(masked, json_string(df->masked_paths[i]));
    for (i = 0; i < df->n_readonly_paths; i++)
        json_array_append_new(ro, json_string(df->readonly_paths[i]));
    /* the devices Docker allows by default, less the network ones: null zero full random
     * urandom tty console ptmx and the pseudo-terminals */
    json_t *devices = json_pack(
        "[{s:b, s:s}, {s:b, s:s, s:I, s:I, s:s}, {s:b, s:s, s:I, s:I, s:s}, {s:b, s:s, s:I, s:I, "
        "s:s},"
        " {s:b, s:s, s:I, s:I, s:s}, {s:b, s:s, s:I, s:I, s:s}, {s:b, s:s, s:I, s:I, s:s},"
        " {s:b, s:s, s:I, s:I, s:s}, {s:b, s:s, s:I, s:I, s:s}, {s:b, s:s, s:I, s:s}]",
        "allow", 0, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)1, "minor",
        (json_int_t)3, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)1, "minor",
        (json_int_t)5, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)1, "minor",
        (json_int_t)7, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)1, "minor",
        (json_int_t)8, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)1, "minor",
        (json_int_t)9, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)5, "minor",
        (json_int_t)0, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)5, "minor",
        (json_int_t)1, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)5, "minor",
        (json_int_t)2, "access", "rwm", "allow", 1, "type", "c", "major", (json_int_t)136, "access",
        "rwm");
    char cgpath[200];
    snprintf(cgpath, sizeof cgpath, "/%s/%s", oci.cg_parent, id);
    json_t *ns = json_array();
    static const char *const spaces[] = {"pid", "network", "ipc", "uts", "mount", "cgroup"};
    for (i = 0; i < TK_ARRAY_LEN(spaces); i++)
        json_array_append_new(ns, json_pack("{s:s}", "type", spaces[i]));
    json_int_t period = 100000;
    json_t *lnx =
        json_pack("{s:{s:o, s:{s:I, s:I}, s:{s:I, s:I, s:I}, s:{s:I}}, s:s, s:o, s:o, s:o}",
                  "resources", "devices", devices, "memory", "limit", (json_int_t)df->memory,
                  "swap", (json_int_t)df->memory_swap, "cpu", "quota",
                  (json_int_t)(df->cpus * (double)period), "period", period, "shares",
                  (json_int_t)OCI_WARM_SHARES, "pids", "limit", (json_int_t)df->pids, "cgroupsPath",
                  cgpath, "namespaces", ns, "maskedPaths", masked, "readonlyPaths", ro);
    /* one of the two: crun loads the precompiled program as it is and would parse
     * linux.seccomp's ~350 names for nothing (~1 ms a container); without it, it compiles */
    if (lnx && !oci.seccomp_bpf)
        json_object_set(lnx, "seccomp", oci.seccomp);
    /* the host name: 12 hex digits of the id, as the engine names a container's host */
    char host[24];
    if (!strcmp(id, ID_MARK)) { /* a template's (config_text) */
        snprintf(host, sizeof host, "%s", HOST_MARK);
    } else {
        snprintf(host, sizeof host, "%016llx", (unsigned long long)str_hash(id));
        host[12] = '\0';
    }
    json_t *cfg = json_pack("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", "1.0.2",
                            "process", process, "root", "path", im->rootfs, "readonly",
                            df->readonly_rootfs, "hostname", host, "mounts", mounts, "linux", lnx);
    if (oci.seccomp_bpf) /* crun loads it as it is (seccomp_compile) */
        json_object_set_new(cfg, "annotations",
                            json_pack("{s:s}", "run.oci.seccomp_bpf_data", oci.seccomp_bpf));
    free(df);
    return cfg;
}

/* s with every mark[i] replaced by val[i] (n pairs); the caller frees it. */
static char *subst(const char *s, const char *const *mark, const char *const *val, size_t n)
{
    size_t len = strlen(s), extra = 0;
    for (size_t i = 0; i < n; i++)
        for (const char *p = s; (p = strstr(p, mark[i])); p += strlen(mark[i]))
            extra += strlen(val[i]);
    char *out = malloc(len + extra + 1), *o = out;
    if (!out)
        return NULL;
    /* the text between marks is copied in runs: only where one could begin is compared */
    char first[8];
    size_t nf = 0;
    for (size_t i = 0; i < n && nf < sizeof first - 1; i++)
        if (!memchr(first, mark[i][0], nf))
            first[nf++] = mark[i][0];
    first[nf] = '\0';
    while (*s) {
        size_t run = strcspn(s, first);
        memcpy(o, s, run);
        o += run;
        s += run;
        if (!*s)
            break;
        size_t i = 0;
        while (i < n && strncmp(s, mark[i], strlen(mark[i])))
            i++;
        if (i < n) {
            o = stpcpy(o, val[i]);
            s += strlen(mark[i]);
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return out;
}

/*
 * config.json's text for a container of spec in dir with id. Only the directory, the id
 * and the host name differ from one container of a spec to the next, so the text (~14 KB,
 * most of it the seccomp filter) is rendered once per spec and configuration with marks
 * for them, and they are written in; the last few are kept. A directory JSON would escape
 * takes the long way. The caller frees the result.
 */
static char *config_text(const struct sandbox_env *env, const struct sandbox_spec *spec,
                         const char *dir, const char *id, const struct image *im)
{
    static struct {
        char key[1600];
        char *text;
    } cache[4];
    static unsigned next;
    bool plain = strlen(dir) < 4096 && !strstr(dir, "@@takod-");
    for (const unsigned char *p = (const unsigned char *)dir; plain && *p; p++)
        plain = *p >= 0x20 && *p != '"' && *p != '\\' && *p != 0x7f;
    const struct tk_config *c = env->cfg;
    char key[1600];
    int kl =
        snprintf(key, sizeof key, "%p|%s|%lld|%g|%s|%s|%s|%s|%lld|%lld|%lld|%lld", (void *)env,
                 im->rootfs, (long long)spec->memory, spec->cpus, spec->env ? spec->env : "",
                 spec->preload ? spec->preload : "", oci.name, c->docker_user,
                 (long long)c->limits_tmpfs_size, (long long)c->limits_pids,
                 (long long)c->limits_max_total_artifact_bytes, (long long)c->server_executors);
    plain = plain && kl > 0 && (size_t)kl < sizeof key; /* a key cut short could match another */
    const char *tmpl = NULL;
    for (unsigned i = 0; plain && i < TK_ARRAY_LEN(cache); i++)
        if (cache[i].text && !strcmp(cache[i].key, key))
            tmpl = cache[i].text;
    if (!plain) {
        json_t *cfg = oci_config(env, spec, dir, id, im, NULL);
        char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
        json_decref(cfg);
        return text;
    }
    if (!tmpl) {
        json_t *cfg = oci_config(env, spec, DIR_MARK, ID_MARK, im, NULL);
        char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
        json_decref(cfg);
        if (!text)
            return NULL;
        unsigned i = next++ % TK_ARRAY_LEN(cache);
        free(cache[i].text);
        snprintf(cache[i].key, sizeof cache[i].key, "%s", key);
        tmpl = cache[i].text = text;
    }
    char host[17];
    snprintf(host, sizeof host, "%016llx", (unsigned long long)str_hash(id));
    host[12] = '\0';
    static const char *const marks[] = {DIR_MARK, ID_MARK, HOST_MARK};
    const char *vals[] = {dir, id, host};
    return subst(tmpl, marks, vals, 3);
}

char *oci_config_text(struct docker *d, const struct sandbox_env *env,
                      const struct sandbox_spec *spec, const char *dir, const char *id,
                      const char *const *args)
{
    const struct image *im = image_for(d, env, spec->image);
    json_t *cfg = im ? oci_config(env, spec, dir, id, im, args) : NULL;
    char *text = cfg ? json_dumps(cfg, JSON_COMPACT | JSON_INDENT(1)) : NULL;
    json_decref(cfg);
    return text;
}

/* ---- runtime processes ---- */

/* Start `bin argv...` with the given stdio (-1: /dev/null) and fd 3 (-1: none), nothing
 * else inherited, every signal at its default and none blocked. Its pid, or -errno. */
/* The child of spawn_fd3, between vfork and exec: system calls only (it runs on the
 * parent's memory). Its errno goes to *err; then it exits 127. */
static void __attribute__((noreturn))
spawn_child(const char *const *argv, const int fds[4], volatile int *err)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* unused numbers fail with EINVAL: harmless */
    int low = fds[3] >= 0 ? 4 : 3;
    for (int i = 0; i < low; i++)
        if (dup2(fds[i], i) < 0)
            goto fail;
    /* everything else is closed by the exec (the sealed copy is what it executes) */
    if (syscall(SYS_close_range, (unsigned)low, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */) < 0) {
        for (int fd = low; fd < 1024; fd++)
            if (!oci.sealed || fd != oci.exe_fd)
                close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (oci.sealed) /* argv[0] stays the path, so ps shows it; its comm is "memfd:crun" */
        syscall(SYS_execveat, oci.exe_fd, "", argv, environ, AT_EMPTY_PATH);
    else
        execve(argv[0], (char *const *)argv, environ);
fail:
    *err = errno;
    _exit(127);
}

/* vfork and exec; nothing of the caller's lives across the vfork but its arguments */
static pid_t __attribute__((noinline))
vfork_exec(const char *const *argv, const int fds[4], volatile int *err)
{
    pid_t pid = vfork();
    if (pid == 0)
        spawn_child(argv, fds, err);
    return pid;
}

/*
 * Start the runtime: stdin/stdout/stderr from in/out/err (-1: /dev/null), fd3 as its fd 3
 * when >= 0, nothing else open, no signal blocked or handled. vfork, as posix_spawn does,
 * so the executor's memory is not copied; not posix_spawn itself, which cannot execute a
 * descriptor (the sealed copy, oci_setup) with argv[0] the runtime's path.
 */
static pid_t spawn_fd3(const char *const *argv, int in, int out, int err, int fd3)
{
    int null = -1;
    if (in < 0 || out < 0 || err < 0) {
        null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0)
            return -errno;
    }
    const int fds[4] = {in >= 0 ? in : null, out >= 0 ? out : null, err >= 0 ? err : null, fd3};
    volatile int child_err = 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* no handler may run in the child */
    pid_t pid = vfork_exec(argv, fds, &child_err);
    int e = pid < 0 ? errno : child_err;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (null >= 0)
        close(null);
    if (pid > 0 && e) { /* it did not exec: reaped here, its exit says nothing more */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    if (pid < 0 || e) {
        set_err("%s %s: %s", pid < 0 ? "vfork for" : "exec", argv[0], strerror(e));
        return -e;
    }
    return pid;
}

static pid_t spawn(const char *const *argv, int in, int out, int err)
{
    return spawn_fd3(argv, in, out, err, -1);
}

static int pidfd_of(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

/* Wait up to timeout_ms for child pid (its pidfd, or -1: poll by WNOHANG); its wait status,
 * or -ETIMEDOUT (it is still running) / -errno. */
static int wait_child(pid_t pid, int pidfd, int timeout_ms)
{
    int status;
    uint64_t end = now_mono_ms() + (uint64_t)timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status & 0xffff;
        if (r < 0 && errno != EINTR)
            return -errno;
        uint64_t now = now_mono_ms();
        if (now >= end)
            return -ETIMEDOUT;
        if (pidfd >= 0) {
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            poll(&p, 1, (int)(end - now));
        } else {
            usleep(2000);
        }
    }
}

static int exit_code_of(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The runtime's global options, then `what`..., NULL-terminated, into argv (≥ 16). */
static void runtime_argv(const char **argv, const char *const *what)
{
    size_t n = 0;
    argv[n++] = oci.bin;
    argv[n++] = "--root";
    argv[n++] = oci.root;
    if (!strcmp(oci.name, "runsc"))
        argv[n++] = "--network=none";
    while (*what && n < 15)
        argv[n++] = *what++;
    argv[n] = NULL;
}

/* Run the runtime with `what` (its stdout and stderr to out; -1: /dev/null) and wait for
 * it, RUN_WAIT_MS at most (then it is killed). Its wait status, or -errno. */
static int runtime_wait(const char *const *what, int out)
{
    const char *argv[16];
    runtime_argv(argv, what);
    pid_t pid = spawn(argv, -1, out, out);
    if (pid < 0)
        return pid;
    int st = wait_child(pid, -1, RUN_WAIT_MS);
    if (st == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        wait_child(pid, -1, 1000);
    }
    return st;
}

/* Run `delete -f id` and wait for it. */
static int delete_container(const char *id)
{
    int st = runtime_wait((const char *[]){"delete", "--force", id, NULL}, -1);
    return st < 0 ? st : exit_code_of(st) == 0 ? 0 : -EIO;
}

/* What the runtime wrote to its stderr in dir (the head, one line). */
static void runtime_error(const char *dir, const char *what)
{
    char path[4200], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/runtime.err", dir);
    if (read_file(path, 1 << 16, &text, &len) < 0 || len == 0) {
        set_err("%s %s failed (no message)", oci.name, what);
    } else {
        for (char *p = text; *p; p++)
            if (*p == '\n' || *p == '"')
                *p = ' ';
        set_err("%s %s: %.*s", oci.name, what, ERR_HEAD, text);
    }
    free(text);
}

/* Write config.json (text: the caller's, freed here; NULL: rendering failed). */
static char *json_text(json_t *cfg)
{
    char *text = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    return text;
}

static int write_config(const char *dir, char *text)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!text)
        return -ENOMEM;
    int rc = write_file(path, text, strlen(text), 0600);
    free(text);
    if (rc < 0)
        set_err("writing %s: %s", path, strerror(-rc));
    return rc;
}

static int open_err_file(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/runtime.err", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        set_err("open %s: %s", path, strerror(errno));
    return fd;
}

static void container_id(char id[65], const char *dir)
{
    const char *base = strrchr(dir, '/');
    snprintf(id, 65, "p%d-%.50s", (int)getpid(), base ? base + 1 : dir);
}

/*
 * The runtime runs in the foreground for the container's whole life (`run`, not `run
 * --detach`): it is the launcher's parent, reaps it, removes the container's state and
 * cgroup when it exits, and exits with its status — so a used container costs no second
 * runtime process (`delete`), and the executor reaps only its own child, the runtime.
 *
 * When the container has started is told by its pid file, a FIFO in its directory that
 * the executor reads (start_fd: readable with the pid; O_ASYNC raises SIGIO like the
 * engine's answer). The runtime also holds the FIFO's write end as its fd 3 until it
 * exits, so a runtime that fails before it writes a pid ends the wait too (EOF).
 */
int oci_prepare_async(struct docker *d, const struct sandbox_env *env, struct warm *w,
                      const char *dir, const struct sandbox_spec *spec)
{
    const struct image *im = image_for(d, env, spec->image);
    if (!im)
        return -EIO;
    container_id(w->id, dir);
    int rc = write_config(dir, config_text(env, spec, dir, w->id, im));
    if (rc < 0)
        return rc;
    char fifo[4200];
    snprintf(fifo, sizeof fifo, "%s/pid.fifo", dir);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err = -1, fifo_w = -1;
    if (mkfifo(fifo, 0600) < 0 ||
        (w->start_fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0 ||
        (fifo_w = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
        rc = -errno;
        set_err("the pid FIFO %s: %s", fifo, strerror(-rc));
        goto fail;
    }
    if ((err = open_err_file(dir)) < 0) {
        rc = -EIO;
        goto fail;
    }
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0) {
        rc = -errno;
        set_err("pipe2: %s", strerror(-rc));
        goto fail;
    }
    const char *argv[16];
    runtime_argv(argv, (const char *[]){"run", "--bundle", dir, "--pid-file", fifo, w->id, NULL});
    pid_t pid = spawn_fd3(argv, in[0], out[1], err, fifo_w);
    if (pid < 0) {
        rc = pid;
        goto fail;
    }
    close(in[0]);
    close(out[1]);
    close(err);
    close(fifo_w);
    w->in_fd = in[1];
    w->fd = out[0];
    w->rt_pid = pid;
    w->exit_fd = pidfd_of(pid);
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (out[i] >= 0)
            close(out[i]);
    }
    if (err >= 0)
        close(err);
    if (fifo_w >= 0)
        close(fifo_w);
    if (w->start_fd >= 0)
        close(w->start_fd);
    w->start_fd = -1;
    w->id[0] = '\0';
    return rc;
}

/* The runtime has exited (or is killed after timeout_ms): reap it, its wait status or
 * -errno. */
static int reap_runtime(struct warm *w, int timeout_ms)
{
    if (w->rt_pid <= 0)
        return -ECHILD;
    int st = wait_child(w->rt_pid, w->exit_fd, timeout_ms);
    if (st == -ETIMEDOUT) {
        kill(w->rt_pid, SIGKILL);
        st = wait_child(w->rt_pid, -1, 1000);
    }
    w->rt_pid = 0;
    if (w->exit_fd >= 0)
        close(w->exit_fd);
    w->exit_fd = -1;
    return st;
}

int oci_started(struct warm *w, int timeout_ms)
{
    if (w->ready)
        return 0;
    if (w->start_fd < 0)
        return -EINVAL;
    struct pollfd p = {.fd = w->start_fd, .events = POLLIN};
    char buf[32];
    ssize_t n = -1;
    if (poll(&p, 1, timeout_ms) > 0)
        n = read(w->start_fd, buf, sizeof buf - 1);
    close(w->start_fd);
    w->start_fd = -1;
    if (n > 0) {
        buf[n] = '\0';
        w->init_pid = (pid_t)atoi(buf);
    }
    if (w->init_pid <= 0) { /* EOF: the runtime exited without starting it; or it hangs */
        int st = reap_runtime(w, n == 0 ? RUN_WAIT_MS : 0);
        runtime_error(w->dir, st >= 0 ? "run" : "run (no pid in time)");
        return -EIO;
    }
    /* the launcher is the runtime's child, not ours: a pidfd signals it without a race
     * with its pid's reuse */
    w->init_fd = pidfd_of(w->init_pid);
    w->ready = true;
    return 0;
}

/* gVisor: the pid the runtime names is its sandbox's, not the launcher's; a signal for the
 * launcher goes through `runsc kill`. */
static bool is_gvisor(void)
{
    return oci.name && !strcmp(oci.name, "runsc");
}

static void signal_init(struct warm *w, int sig)
{
    if (w->init_fd >= 0)
        syscall(SYS_pidfd_send_signal, w->init_fd, sig, NULL, 0);
}

void oci_kill(struct warm *w, int sig)
{
    if (w->init_fd < 0)
        return;
    if (!is_gvisor() || sig == SIGKILL) { /* SIGKILL: the whole sandbox goes, as it should */
        signal_init(w, sig);
        return;
    }
    char num[16];
    snprintf(num, sizeof num, "%d", sig);
    const char *argv[16];
    runtime_argv(argv, (const char *[]){"kill", w->id, num, NULL});
    pid_t pid = spawn(argv, -1, -1, -1);
    if (pid > 0 && wait_child(pid, -1, RUN_WAIT_MS) == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        wait_child(pid, -1, 1000);
    }
}

/*
 * A warm container starts with a small CPU share (OCI_WARM_SHARES): its runtime's setup
 * and the interpreter's start, which run while another executor's job runs, yield the
 * CPU to that job instead of stretching its tail latency. The share is an ordinary one
 * from the hand-over on, before the go line. A failed write only costs that priority.
 */
void oci_boost(const struct warm *w)
{
    static bool said;
    char path[300];
    if (oci.cgroup_v2)
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s/cpu.weight", oci.cg_parent, w->id);
    else
        snprintf(path, sizeof path, "/sys/fs/cgroup/cpu/%s/%s/cpu.shares", oci.cg_parent, w->id);
    const char *value = oci.cgroup_v2 ? "100" : "1024";
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0 && write(fd, value, strlen(value)) == (ssize_t)strlen(value)) {
        close(fd);
        return;
    }
    if (!said) {
        said = true;
        log_info("msg=\"cannot raise a container's CPU share at hand-over; its warm-up share "
                 "stays\" path=%s err=\"%s\"",
                 path, strerror(errno));
    }
    if (fd >= 0)
        close(fd);
}

void oci_post_mortem(struct warm *w, int timeout_ms, bool *oom, int *exit_code)
{
    /* the runtime exits with the launcher's status once the container is gone: look
     * without reaping it (the retirement does) */
    (void)oom; /* the launcher counts the cgroup's OOM kills itself (its cgroup namespace
                  shows it its own); the runtime removes the cgroup as it exits */
    *exit_code = -1;
    if (w->rt_pid <= 0)
        return;
    struct pollfd p = {.fd = w->exit_fd, .events = POLLIN};
    if (w->exit_fd >= 0 && poll(&p, 1, timeout_ms) <= 0)
        return;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)w->rt_pid, &si, WEXITED | WNOWAIT | WNOHANG) == 0 &&
        si.si_pid == w->rt_pid)
        *exit_code = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
}

int oci_retire_async(struct warm *w, int *fd, pid_t *pid)
{
    if (w->fd >= 0)
        close(w->fd);
    if (w->in_fd >= 0)
        close(w->in_fd);
    w->fd = w->in_fd = -1;
    if (w->start_fd >= 0) /* its start is still on its way: no pid yet to signal */
        oci_started(w, RUN_WAIT_MS);
    signal_init(w, SIGKILL); /* done with: the job ran, or it never will */
    if (w->init_fd >= 0)
        close(w->init_fd);
    w->init_fd = -1;
    if (w->rt_pid <= 0)
        return -ENOENT;
    /* the runtime removes the container as it exits: the removal is its exit */
    *pid = w->rt_pid;
    *fd = w->exit_fd;
    w->rt_pid = 0;
    w->exit_fd = -1;
    return 0;
}

int oci_retire_finish(int fd, pid_t pid, int timeout_ms)
{
    int st = wait_child(pid, fd, timeout_ms);
    if (st == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        st = wait_child(pid, -1, 1000);
    }
    if (fd >= 0)
        close(fd);
    /* a runtime killed by a signal may have left its state behind: the next sweep (or
     * start) deletes it */
    if (st >= 0 && WIFSIGNALED(st)) {
        set_err("%s run was killed by signal %d", oci.name, WTERMSIG(st));
        return -EIO;
    }
    return st < 0 ? st : 0;
}

void oci_discard(struct warm *w)
{
    int fd = -1;
    pid_t pid = 0;
    char id[65];
    snprintf(id, sizeof id, "%s", w->id);
    int rc = oci_retire_async(w, &fd, &pid);
    if (rc == 0)
        rc = oci_retire_finish(fd, pid, RUN_WAIT_MS);
    if (rc < 0 && rc != -ENOENT && id[0] && delete_container(id) < 0)
        log_warn("msg=\"removing a container failed\" container=%s err=\"%s\"", id, oci.err);
}

/* ---- probe and sweeps ---- */

/* The probe's process when the filter goes precompiled: exit 0 when it runs under one more
 * seccomp filter than takod itself (Seccomp_filters, Linux 5.9; before that, mode 2 when
 * takod has none), 3 when not: a crun that ignored the annotation. */
static const char filtered_py[] =
    "import sys\n"
    "f = dict((k, v.strip()) for k, _, v in (l.partition(':') for l in "
    "open('/proc/self/status')))\n"
    "n = int(sys.argv[1])\n"
    "ok = int(f['Seccomp_filters']) > n if 'Seccomp_filters' in f else "
    "n == 0 and f.get('Seccomp') == '2'\n"
    "sys.exit(0 if ok else 3)\n";

/* Seccomp_filters of this process (0 with no filter; -1: filtered, but how often unknown). */
static int own_filters(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    int filters = -2, mode = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Seccomp_filters:", 16))
            filters = atoi(line + 16);
        else if (!strncmp(line, "Seccomp:", 8))
            mode = atoi(line + 8);
    }
    if (f)
        fclose(f);
    return filters >= 0 ? filters : mode == 0 ? 0 : -1;
}

/* Whether crun builds, from linux.seccomp, the program takod precompiled: a container
 * created (not started) from cfg leaves crun's own compilation in its state directory. */
static bool same_as_cruns(const char *dir, const char *id, json_t *cfg, char *why, size_t wl)
{
    int rc = write_config(dir, json_text(cfg)), efd = rc == 0 ? open_err_file(dir) : -1;
    bool same = false;
    if (efd < 0) {
        snprintf(why, wl, "the probe's config.json: %s", rc < 0 ? strerror(-rc) : oci.err);
        return false;
    }
    int st = runtime_wait((const char *[]){"create", "--bundle", dir, id, NULL}, efd);
    close(efd);
    if (st < 0 || exit_code_of(st) != 0) {
        runtime_error(dir, "create (the seccomp probe)");
        snprintf(why, wl, "%s", oci.err);
    } else {
        char path[700], *built = NULL;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s/seccomp.bpf", oci.root, id);
        if (read_file(path, 1 << 20, &built, &len) < 0)
            snprintf(why, wl, "crun left no %s", path);
        else if (len != oci.bpf_len || memcmp(built, oci.bpf, len))
            snprintf(why, wl, "crun builds %zu instructions from the profile, takod %zu", len / 8,
                     oci.bpf_len / 8);
        else
            same = true;
        free(built);
    }
    delete_container(id);
    return same;
}

int oci_probe(struct docker *d, const struct sandbox_env *env, char *err, size_t errlen)
{
    struct sandbox_spec spec;
    sandbox_default_spec(&spec, env);
    const struct image *im = image_for(d, env, spec.image);
    if (!im) {
        snprintf(err, errlen, "%s", oci.err);
        return -EIO;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/.probe-%d", env->rootfs_dir, (int)getpid());
    rm_rf(dir);
    int rc = mkdir_p(dir, 0700);
    static const char *const subs[] = {"code", "input", "output", "ctl"};
    for (size_t i = 0; rc == 0 && i < TK_ARRAY_LEN(subs); i++) {
        char sub[4300];
        snprintf(sub, sizeof sub, "%s/%s", dir, subs[i]);
        rc = mkdir(sub, 0755) < 0 ? -errno : 0;
    }
    char id[65];
    container_id(id, dir);
    id[strcspn(id, ".")] = '\0'; /* ids: letters, digits, '-' */
    snprintf(id + strlen(id), sizeof id - strlen(id), "probe");
    static const char *const args[] = {"/bin/true", NULL};
    /* the precompiled filter: crun's own program, or none of it (seccomp_compile) */
    int filters = oci.seccomp_bpf ? own_filters() : 0;
    if (rc == 0 && oci.seccomp_bpf) {
        char cid[80], why[400] = "";
        snprintf(cid, sizeof cid, "%s-scmp", id);
        char *b64 = oci.seccomp_bpf;
        oci.seccomp_bpf = NULL; /* rendered with linux.seccomp, for crun to compile */
        json_t *cfg = oci_config(env, &spec, dir, cid, im, args);
        oci.seccomp_bpf = b64;
        if (filters < 0)
            snprintf(why, sizeof why,
                     "takod runs under a seccomp filter of its own and "
                     "this kernel does not count them");
        if (filters < 0 || !same_as_cruns(dir, cid, cfg, why, sizeof why)) {
            if (filters < 0)
                json_decref(cfg);
            log_warn("msg=\"the seccomp profile goes to crun as linux.seccomp, compiled in "
                     "each container (slower, the same filter)\" why=\"%s\"",
                     why);
            oci_seccomp_uncompiled();
        }
    }
    for (int pass = 0; rc == 0 && pass < 2; pass++) {
        /* the same container as a job's; with the precompiled filter, its process checks
         * that the filter is there (a crun too old for the annotation runs without one) */
        char n[16];
        snprintf(n, sizeof n, "%d", filters);
        const char *const check[] = {"python3", "-I", "-S", "-c", filtered_py, n, NULL};
        bool checking = oci.seccomp_bpf != NULL;
        rc = write_config(dir,
                          json_text(oci_config(env, &spec, dir, id, im, checking ? check : args)));
        int efd = rc == 0 ? open_err_file(dir) : -1;
        int code = -1;
        if (rc == 0 && efd >= 0) {
            int st = runtime_wait((const char *[]){"run", "--bundle", dir, id, NULL}, efd);
            code = st < 0 ? -1 : exit_code_of(st);
            if (code != 0 && !(checking && code == 3)) {
                runtime_error(dir, checking ? "run (the probe container, python3)"
                                            : "run (the probe container, /bin/true)");
                rc = -EIO;
            }
        } else if (rc == 0) {
            rc = -EIO;
        }
        if (efd >= 0)
            close(efd);
        delete_container(id); /* a foreground run removes its own; a failed one may not */
        if (rc < 0 || code == 0)
            break;
        log_crit("msg=\"%s ran the probe container without the precompiled seccomp filter "
                 "(it ignores run.oci.seccomp_bpf_data: crun before 0.18?); the profile goes "
                 "to it as linux.seccomp\" runtime=%s",
                 oci.name, oci.bin);
        oci_seccomp_uncompiled();
    }
    if (rc == 0)
        log_info("msg=\"seccomp filter: %s\" runtime=%s",
                 oci.seccomp_bpf ? "precompiled by takod, the same program crun builds, "
                                   "passed in run.oci.seccomp_bpf_data"
                                 : "linux.seccomp, compiled by the runtime in each container",
                 oci.name);
    if (rc < 0)
        snprintf(err, errlen, "%s", oci.err);
    rm_rf(dir);
    return rc;
}

size_t oci_images_in_use(const char *slots_dir, char (*ids)[72], size_t max)
{
    DIR *d = opendir(slots_dir);
    struct dirent *de;
    size_t n = 0;
    while (d && n < max && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s/config.json", slots_dir, de->d_name);
        json_t *cfg = json_load_file(path, 0, NULL);
        const char *root = json_string_value(json_object_get(json_object_get(cfg, "root"), "path"));
        const char *base = root ? strrchr(root, '/') : NULL;
        if (base && strlen(base + 1) == 64) {
            bool dup = false;
            snprintf(ids[n], 72, "sha256:%s", base + 1);
            for (size_t k = 0; k < n && !dup; k++)
                dup = !strcmp(ids[k], ids[n]);
            n += !dup;
        }
        json_decref(cfg);
    }
    if (d)
        closedir(d);
    return n;
}

int oci_prune_rootfs(struct docker *d, const char *rootfs_dir, const char *slots_dir)
{
    static char ids[64][72];
    const char *keep[64];
    size_t n = oci_images_in_use(slots_dir, ids, TK_ARRAY_LEN(ids));
    for (size_t i = 0; i < n; i++)
        keep[i] = ids[i];
    char err[512];
    int rc = rootfs_prune(d, rootfs_dir, keep, n, err, sizeof err);
    if (rc > 0)
        log_info("msg=\"removed the rootfs of replaced or removed images\" count=%d store=%s", rc,
                 rootfs_dir);
    return rc;
}

/* The cgroup <rel> (under the root of each hierarchy; v1: one per controller) removed.
 * rmdir fails on one still in use, which is what we want. */
static void remove_cgroup(const char *rel)
{
    char path[600];
    if (oci.cgroup_v2) {
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s", rel);
        rmdir(path);
        return;
    }
    DIR *d = opendir("/sys/fs/cgroup");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/sys/fs/cgroup/%s/%s", de->d_name, rel);
        rmdir(path);
    }
    if (d)
        closedir(d);
}

/* The instance's cgroup parent, once its containers are gone. */
static void remove_cgroup_parent(void)
{
    remove_cgroup(oci.cg_parent);
}

/*
 * The runtime processes of ours whose executor is gone (`<runtime> --root <our root> ...
 * <id>`, the id naming the executor: p<pid>-...): killed. A `run` whose executor died
 * blocks for ever opening its pid FIFO (the executor was its reader), and when the master
 * died with it nobody reaps it either; `list` + `delete` then remove what it had made.
 */
static int kill_orphaned_runtimes(bool (*keep)(pid_t executor))
{
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        pid_t pid = (pid_t)atoi(de->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        char path[64], args[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, args, sizeof args - 1);
        close(fd);
        if (len <= 0)
            continue;
        args[len] = '\0';
        bool ours = false;
        const char *last = NULL;
        for (const char *a = args; a < args + len; a += strlen(a) + 1) {
            if (!strcmp(a, "--root") && a + strlen(a) + 1 < args + len &&
                !strcmp(a + strlen(a) + 1, oci.root))
                ours = true;
            last = a;
        }
        if (!ours || !last || last[0] != 'p')
            continue;
        pid_t owner = (pid_t)atoi(last + 1);
        if (keep && owner > 0 && keep(owner))
            continue;
        if (kill(pid, SIGKILL) == 0) {
            n++;
            log_warn("msg=\"killed a runtime process whose executor is gone\" pid=%d container=%s",
                     (int)pid, last);
        }
    }
    closedir(d);
    return n;
}

/* Container id (ours: p<executor pid>-...) deleted unless its executor is kept. 1: deleted. */
static int sweep_one(const char *id, bool (*keep)(pid_t executor))
{
    pid_t owner = id[0] == 'p' ? (pid_t)atoi(id + 1) : 0;
    if (keep && owner > 0 && keep(owner))
        return 0;
    if (delete_container(id) == 0) {
        log_info("msg=\"removed container\" container=%s runtime=%s", id, oci.name);
        return 1;
    }
    log_warn("msg=\"removing a container failed\" container=%s runtime=%s", id, oci.name);
    return 0;
}

/*
 * The containers `list` does not show: a runtime killed while it created one (its executor
 * SIGKILLed) leaves crun's state directory without a status file, which `list` skips and
 * `delete --force` removes. They hold no process, but the directory would stay for ever
 * (it carries a config.json naming slots that are gone), and so would the cgroup crun may
 * have made for it.
 */
static int sweep_half_created(bool (*keep)(pid_t executor))
{
    DIR *d = opendir(oci.root);
    if (!d)
        return 0;
    char ids[64][65];
    int k = 0;
    struct dirent *de;
    while (k < 64 && (de = readdir(d)) != NULL)
        if (de->d_type == DT_DIR && de->d_name[0] == 'p' && strlen(de->d_name) < 65)
            snprintf(ids[k++], sizeof ids[0], "%s", de->d_name);
    closedir(d);
    int n = 0;
    for (int i = 0; i < k; i++) {
        int gone = sweep_one(ids[i], keep);
        if (gone) { /* crun made its cgroup before it died, and delete cannot know it */
            char rel[200];
            snprintf(rel, sizeof rel, "%s/%s", oci.cg_parent, ids[i]);
            remove_cgroup(rel);
        }
        n += gone;
    }
    return n;
}

int oci_sweep(bool (*keep)(pid_t executor))
{
    if (!oci.name)
        return 0;
    if (kill_orphaned_runtimes(keep) > 0)
        usleep(50 * 1000); /* gone before `list` looks at their state */
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    const char *argv[16];
    runtime_argv(argv, (const char *[]){"list", "-q", NULL});
    pid_t pid = spawn(argv, -1, out[1], -1);
    close(out[1]);
    if (pid < 0) {
        close(out[0]);
        return pid;
    }
    char buf[1 << 16];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(out[0], buf + len, sizeof buf - 1 - len)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        len += (size_t)r;
    }
    close(out[0]);
    buf[len] = '\0';
    int st = wait_child(pid, -1, RUN_WAIT_MS);
    if (st == -ETIMEDOUT)
        kill(pid, SIGKILL), wait_child(pid, -1, 1000);
    int n = 0;
    for (char *save = NULL, *id = strtok_r(buf, "\n", &save); id; id = strtok_r(NULL, "\n", &save))
        n += sweep_one(id, keep);
    n += sweep_half_created(keep);
    if (!keep)
        remove_cgroup_parent();
    return n;
}

void oci_release(void)
{
    if (!oci.name)
        return;
    remove_cgroup_parent(); /* auto's and tako doctor's probe made it too */
    if (rmdir(oci.root) < 0 && errno != ENOENT) {
        log_warn("msg=\"the runtime's state root is not empty; left in place\" dir=%s err=\"%s\"",
                 oci.root, strerror(errno));
        return;
    }
    char base[sizeof oci.root];
    snprintf(base, sizeof base, "%s", oci.root);
    char *slash = strrchr(base, '/');
    if (slash) {
        *slash = '\0';
        rmdir(base); /* kept while anything else is in it */
    }
}
