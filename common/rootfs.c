/*
 * rootfs.c — the OCI backend's image store (see rootfs.h): an image's filesystem, unpacked
 * once from the engine's export, verified, and renamed into place.
 *
 * Design. The engine already has every layer of the image; the cheapest whole copy it
 * gives is GET /containers/{id}/export of a container created (never started) from it: one
 * flat tar of the merged layers. The tar is streamed straight from the engine's socket
 * into `tar -x` through a socketpair, so memory stays at one read buffer whatever the
 * image's size. GNU tar is the reader because its defaults are the defences a hostile
 * image needs: leading '/' is stripped, members and hard-link targets containing ".." are
 * refused, and symlinks that could point outside (absolute, or with "..") are made as
 * placeholders and only turned into links once every file is out, so nothing is ever
 * written through one. --numeric-owner keeps the image's uids (the host's names mean
 * nothing inside); as root, tar keeps modes (setuid bits too, which is why the store
 * directory is 0700: no host user can reach them, and the container runs with
 * no_new_privs).
 *
 * Whole or absent. The unpack happens in <store>/.tmp.<hex>.<pid>.XXXXXX, held under
 * flock by its maker; it is completed (mount points, marker), verified, synced (syncfs:
 * one call for every file tar wrote) and renamed to <store>/<hex> with RENAME_NOREPLACE.
 * So a directory named by an id is always a whole rootfs, and a crash leaves only a
 * temporary directory whose lock died with its maker: rootfs_prune_tmp removes it.
 * Removal goes the same way backwards: rename aside to .old.*, then rm_rf.
 *
 * The export's container is labelled ROOTFS_EXPORT_LABEL=<pid of its maker> and always
 * removed; one whose maker died mid-export is removed by rootfs_prune.
 */
#include "tako/rootfs.h"
#include "tako/log.h"
#include "tako/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define RF_EXPORT_STALL_S 120
#define RF_EXPORT_TIMEOUT (30L * 60 * 1000) /* a 300 MB image takes seconds */
#define RF_MARKER_MAX     512
#define RF_TAR_ERR_MAX    300
#define RF_PYTHONS        "usr/bin/python3", "usr/local/bin/python3", "bin/python3"
#define RF_TMP_PREFIX     ".tmp."
#define RF_OLD_PREFIX     ".old."

/* The reason into err, logged: the failure point is here. Returns rc. */
__attribute__((format(printf, 4, 5))) static int rf_fail(char *err, size_t errlen, int rc,
                                                         const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    for (char *s = buf; *s; s++)
        if ((unsigned char)*s < 0x20)
            *s = ' ';
    if (err && errlen)
        snprintf(err, errlen, "%s", buf);
    log_error("msg=\"rootfs failed\" err=\"%s\"", buf);
    return rc;
}

/* Only the reason (no log): for checks whose caller decides whether it is a failure. */
__attribute__((format(printf, 4, 5))) static int rf_why(char *err, size_t errlen, int rc,
                                                        const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* names and checks                                                                         */

static bool rf_is_hex64(const char *s, size_t n)
{
    if (n != 64)
        return false;
    for (size_t i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool rootfs_id_ok(const char *image_id)
{
    return image_id && strncmp(image_id, "sha256:", 7) == 0 &&
           rf_is_hex64(image_id + 7, strlen(image_id + 7));
}

int rootfs_path(const char *store_dir, const char *image_id, char *path, size_t pathlen)
{
    if (!store_dir || store_dir[0] != '/' || !rootfs_id_ok(image_id))
        return -EINVAL;
    int n = snprintf(path, pathlen, "%s/%s", store_dir, image_id + 7);
    return n < 0 || (size_t)n >= pathlen ? -ENAMETOOLONG : 0;
}

/* rel inside the tree at rootfd, symlinks resolved as if rootfd were "/": the way the
 * container will see it, and never a host file. */
static int rf_open_in_root(int rootfd, const char *rel, int flags)
{
    struct open_how how = {.flags = (unsigned long long)(flags | O_CLOEXEC),
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

/* rel is a regular file with an execute bit, inside the tree. 0 or -errno. */
static int rf_executable(int rootfd, const char *rel)
{
    int fd = rf_open_in_root(rootfd, rel, O_PATH);
    if (fd < 0)
        return fd;
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    close(fd);
    if (rc == 0 && (!S_ISREG(st.st_mode) || !(st.st_mode & 0111)))
        rc = -EACCES;
    return rc;
}

static int rf_verify_fd(int dfd, const char *dir, const char *image_id, char *err, size_t errlen)
{
    int fd = openat(dfd, ROOTFS_MARKER, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return rf_why(err, errlen, -errno, "open %s/%s: %s", dir, ROOTFS_MARKER, strerror(errno));
    char m[RF_MARKER_MAX + 1];
    ssize_t n = read(fd, m, RF_MARKER_MAX);
    int e = errno;
    close(fd);
    if (n < 0)
        return rf_why(err, errlen, -e, "read %s/%s: %s", dir, ROOTFS_MARKER, strerror(e));
    m[n] = '\0';
    char want[96];
    snprintf(want, sizeof want, "image=%s\n", image_id);
    if (strncmp(m, want, strlen(want)) != 0)
        return rf_why(err, errlen, -EBADMSG, "%s/%s: does not name image %s", dir, ROOTFS_MARKER,
                      image_id);
    int rc = rf_executable(dfd, ROOTFS_LAUNCHER);
    if (rc < 0)
        return rf_why(err, errlen, rc, "%s: no executable /%s: %s", dir, ROOTFS_LAUNCHER,
                      strerror(-rc));
    static const char *const pythons[] = {RF_PYTHONS};
    for (size_t i = 0; i < TK_ARRAY_LEN(pythons); i++)
        if ((rc = rf_executable(dfd, pythons[i])) == 0)
            return 0;
    return rf_why(err, errlen, -ENOENT,
                  "%s: no executable python3 in /usr/bin, /usr/local/bin, /bin", dir);
}

int rootfs_verify(const char *dir, const char *image_id, char *err, size_t errlen)
{
    if (!rootfs_id_ok(image_id))
        return rf_why(err, errlen, -EINVAL, "rootfs_verify %s: \"%.80s\" is not an image id", dir,
                      image_id ? image_id : "(null)");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return rf_why(err, errlen, -errno, "open %s: %s", dir, strerror(errno));
    int rc = rf_verify_fd(dfd, dir, image_id, err, errlen);
    close(dfd);
    return rc;
}

int rootfs_lookup(const char *store_dir, const char *image_id, char *path, size_t pathlen)
{
    int rc = rootfs_path(store_dir, image_id, path, pathlen);
    if (rc < 0)
        return rc;
    return rootfs_verify(path, image_id, NULL, 0) == 0 ? 0 : -ENOENT;
}

/* ---------------------------------------------------------------------------------------- */
/* removal                                                                                  */

/* Remove the directory `name` of the store (a rootfs renamed aside, or a dead maker's
 * temporary one) under its lock, so that two pruners never remove the same tree. 1 removed,
 * 0 busy (locked: its maker lives, or another pruner has it), -errno. */
static int rf_remove_locked(int sfd, const char *store_dir, const char *name, char *err,
                            size_t errlen)
{
    int fd = openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0
                               : rf_fail(err, errlen, -errno, "open %s/%s: %s", store_dir, name,
                                         strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        close(fd);
        return 0;
    }
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", store_dir, name);
    int rc = rm_rf_aside(p, NULL); /* what cannot go is renamed .quarantined: tried again */
    close(fd);
    if (rc < 0)
        return rf_fail(err, errlen, rc, "rm_rf %s: %s", p, strerror(-rc));
    return 1;
}

/* Rename the rootfs <store>/<hex> aside and remove it. 1, 0 (gone already), or -errno. */
static int rf_remove_rootfs(int sfd, const char *store_dir, const char *hex, char *err,
                            size_t errlen)
{
    static unsigned long seq;
    char aside[128];
    snprintf(aside, sizeof aside, RF_OLD_PREFIX "%s.%ld.%lu", hex, (long)getpid(), seq++);
    if (renameat(sfd, hex, sfd, aside) < 0)
        return errno == ENOENT ? 0
                               : rf_fail(err, errlen, -errno, "rename %s/%s aside: %s", store_dir,
                                         hex, strerror(errno));
    int rc = rf_remove_locked(sfd, store_dir, aside, err, errlen);
    return rc < 0 ? rc : 1;
}

int rootfs_prune_tmp(const char *store_dir, char *err, size_t errlen)
{
    int sfd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd < 0)
        return errno == ENOENT
                   ? 0
                   : rf_fail(err, errlen, -errno, "open %s: %s", store_dir, strerror(errno));
    DIR *dir = fdopendir(dup(sfd));
    if (!dir) {
        int e = errno;
        close(sfd);
        return rf_fail(err, errlen, -e, "opendir %s: %s", store_dir, strerror(e));
    }
    time_t now = time(NULL);
    int removed = 0, rc = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (strncmp(de->d_name, RF_TMP_PREFIX, strlen(RF_TMP_PREFIX)) != 0 &&
            strncmp(de->d_name, RF_OLD_PREFIX, strlen(RF_OLD_PREFIX)) != 0)
            continue;
        struct stat st;
        if (fstatat(sfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode) ||
            now - st.st_mtime < ROOTFS_TMP_AGE_S)
            continue;
        int r = rf_remove_locked(sfd, store_dir, de->d_name, err, errlen);
        if (r > 0)
            removed++;
        else if (r < 0)
            rc = r;
    }
    closedir(dir);
    close(sfd);
    return removed ? removed : rc;
}

/* ---------------------------------------------------------------------------------------- */
/* unpacking                                                                                */

/* The export's bytes into tar's stdin (a socket: a tar that died is EPIPE, not SIGPIPE). */
struct rf_feed {
    int fd;
    unsigned long long bytes;
};

static int rf_feed(void *ctx, const char *p, size_t n)
{
    struct rf_feed *f = ctx;
    while (n > 0) {
        ssize_t w = send(f->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
        f->bytes += (unsigned long long)w;
    }
    return 0;
}

/* Start `tar -x` into dir, reading from *in_fd; its stdout and stderr go to *log_fd (an
 * unnamed file in the store). 0 or -errno. */
static int rf_tar_start(const char *store_dir, const char *dir, pid_t *pid, int *in_fd, int *log_fd,
                        char *err, size_t errlen)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return rf_fail(err, errlen, -errno, "socketpair for tar: %s", strerror(errno));
    int logfd = open(store_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (logfd < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return rf_fail(err, errlen, -e, "open O_TMPFILE in %s: %s", store_dir, strerror(e));
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    posix_spawn_file_actions_adddup2(&fa, logfd, 1);
    posix_spawn_file_actions_adddup2(&fa, logfd, 2);
    char *argv[] = {"tar", "-x", "--numeric-owner", "-f", "-", "-C", (char *)dir, NULL};
    int e = posix_spawnp(pid, "tar", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(sv[1]);
    if (e != 0) {
        close(sv[0]);
        close(logfd);
        return rf_fail(err, errlen, -e, "posix_spawnp tar -x -C %s: %s", dir, strerror(e));
    }
    *in_fd = sv[0];
    *log_fd = logfd;
    return 0;
}

/* Wait for tar; its exit status, and its first complaint into msg. */
static int rf_tar_wait(pid_t pid, int logfd, char *msg, size_t msglen)
{
    int st = 0, w;
    while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
        ;
    if (w < 0) { /* reaped by someone else (a waitpid(-1)): its status is lost */
        snprintf(msg, msglen, "waitpid %ld: %s", (long)pid, strerror(errno));
        close(logfd);
        return 255;
    }
    ssize_t n = pread(logfd, msg, msglen - 1, 0);
    msg[n > 0 ? n : 0] = '\0';
    for (char *s = msg; *s; s++)
        if ((unsigned char)*s < 0x20)
            *s = ' ';
    close(logfd);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* A container from image_id (not started), exported into dir through tar, removed. */
static int rf_export(struct docker *d, const char *store_dir, const char *image_id, const char *dir,
                     unsigned long long *bytes, char *err, size_t errlen)
{
    char pid[24], cid[65];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    json_t *body =
        json_pack("{s:s, s:[s], s:[], s:b, s:{s:s}}", "Image", image_id, "Cmd", "/bin/true",
                  "Entrypoint", "NetworkDisabled", 1, "Labels", ROOTFS_EXPORT_LABEL, pid);
    if (!body)
        return rf_fail(err, errlen, -ENOMEM, "rootfs %s: out of memory", image_id);
    int rc = docker_create(d, NULL, body, cid);
    json_decref(body);
    if (rc < 0)
        return rf_fail(err, errlen, rc, "docker_create from %s: %s", image_id,
                       docker_last_error(d));
    pid_t tar = -1;
    int in_fd = -1, logfd = -1;
    rc = rf_tar_start(store_dir, dir, &tar, &in_fd, &logfd, err, errlen);
    if (rc == 0) {
        struct rf_feed f = {.fd = in_fd};
        int xrc = docker_export(d, cid, RF_EXPORT_STALL_S, RF_EXPORT_TIMEOUT, rf_feed, &f);
        char xerr[256];
        snprintf(xerr, sizeof xerr, "%s", docker_last_error(d));
        close(in_fd); /* tar's end of the archive */
        char msg[RF_TAR_ERR_MAX];
        int st = rf_tar_wait(tar, logfd, msg, sizeof msg);
        *bytes = f.bytes;
        if (st != 0) /* tar's reason first: a tar that stopped makes the export fail too */
            rc = rf_fail(err, errlen, -EIO, "tar -x of image %s into %s: exit %d: %s", image_id,
                         dir, st, msg[0] ? msg : "(no message)");
        else if (xrc < 0)
            rc = rf_fail(err, errlen, xrc, "docker_export %.12s of image %s: %s", cid, image_id,
                         xerr);
    }
    int rrc = docker_remove(d, cid);
    if (rrc < 0 && rrc != -ENOENT) {
        char why[600];
        snprintf(why, sizeof why, "docker_remove %.12s (export of %s): %s", cid, image_id,
                 docker_last_error(d));
        if (rc == 0)
            rc = rf_fail(err, errlen, rrc, "%s", why);
        else
            log_error("msg=\"rootfs export container left\" err=\"%s\"", why);
    }
    return rc;
}

/* The mount points the backend binds and mounts over, made where the image lacks them. A
 * name that is there but not a directory (a symlink above all) is refused: a mount on it
 * would land elsewhere. */
static int rf_mountpoints(int dfd, const char *dir, uid_t out_uid, gid_t out_gid, char *err,
                          size_t errlen)
{
    static const char *const names[] = {"code", "input", "output", "ctl",
                                        "tmp",  "proc",  "dev",    "sys"};
    for (size_t i = 0; i < TK_ARRAY_LEN(names); i++) {
        const char *n = names[i];
        bool output = strcmp(n, "output") == 0;
        struct stat st;
        if (fstatat(dfd, n, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (!S_ISDIR(st.st_mode))
                return rf_fail(err, errlen, -ENOTDIR, "mount point %s/%s: not a directory", dir, n);
            if (!output)
                continue;
        } else if (errno != ENOENT || mkdirat(dfd, n, 0755) < 0) {
            return rf_fail(err, errlen, -errno, "mkdir %s/%s: %s", dir, n, strerror(errno));
        }
        if (fchownat(dfd, n, 0, 0, AT_SYMLINK_NOFOLLOW) < 0 ||
            (output && fchownat(dfd, n, out_uid, out_gid, AT_SYMLINK_NOFOLLOW) < 0) ||
            fchmodat(dfd, n, 0755, 0) < 0)
            return rf_fail(err, errlen, -errno, "chown/chmod %s/%s: %s", dir, n, strerror(errno));
    }
    return 0;
}

static int rf_write_marker(int dfd, const char *dir, const char *image_id, char *err, size_t errlen)
{
    char m[RF_MARKER_MAX];
    int n = snprintf(m, sizeof m, "image=%s\ncreated=%lld\n", image_id, (long long)time(NULL));
    int fd = openat(dfd, ROOTFS_MARKER, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return rf_fail(err, errlen, -errno, "create %s/%s: %s", dir, ROOTFS_MARKER,
                       strerror(errno));
    int rc = write(fd, m, (size_t)n) == n ? 0 : -(errno ? errno : EIO);
    close(fd);
    if (rc < 0)
        return rf_fail(err, errlen, rc, "write %s/%s: %s", dir, ROOTFS_MARKER, strerror(-rc));
    return 0;
}

/* Unpack image_id into a temporary directory of the store and rename it to final. */
static int rf_make(struct docker *d, const char *store_dir, const char *image_id, const char *final,
                   uid_t out_uid, gid_t out_gid, char *err, size_t errlen)
{
    const char *hex = image_id + 7;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s/" RF_TMP_PREFIX "%.12s.%ld.XXXXXX", store_dir, hex,
             (long)getpid());
    if (!mkdtemp(tmp))
        return rf_fail(err, errlen, -errno, "mkdtemp %s: %s", tmp, strerror(errno));
    int dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0 || flock(dfd, LOCK_EX) < 0) {
        int rc = rf_fail(err, errlen, -errno, "open/flock %s: %s", tmp, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        rm_rf(tmp);
        return rc;
    }
    uint64_t t0 = now_mono_ms();
    unsigned long long bytes = 0;
    char why[512];
    int rc = rf_export(d, store_dir, image_id, tmp, &bytes, err, errlen);
    if (rc == 0)
        rc = rf_mountpoints(dfd, tmp, out_uid, out_gid, err, errlen);
    if (rc == 0)
        rc = rf_write_marker(dfd, tmp, image_id, err, errlen);
    if (rc == 0 && fchmod(dfd, 0755) < 0) /* mkdtemp's 0700 would shut the job out of / */
        rc = rf_fail(err, errlen, -errno, "chmod %s: %s", tmp, strerror(errno));
    if (rc == 0 && (rc = rf_verify_fd(dfd, tmp, image_id, why, sizeof why)) < 0)
        rc = rf_fail(err, errlen, rc, "verify image %s: %s", image_id, why);
    if (rc == 0 && syncfs(dfd) < 0)
        rc = rf_fail(err, errlen, -errno, "syncfs %s: %s", tmp, strerror(errno));
    if (rc == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY) {
            rc = 1; /* another maker won: its rootfs is the one */
        } else {
            rc = rf_fail(err, errlen, -errno, "rename %s to %s: %s", tmp, final, strerror(errno));
        }
    }
    if (rc != 0) {
        rm_rf_aside(tmp, NULL);
        close(dfd);
        if (rc == 1 && (rc = rootfs_verify(final, image_id, why, sizeof why)) < 0)
            rc = rf_fail(err, errlen, rc, "verify image %s (made by another): %s", image_id, why);
        return rc;
    }
    close(dfd);
    int sfd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sfd >= 0) { /* the rename itself is durable */
        fsync(sfd);
        close(sfd);
    }
    log_info("msg=\"rootfs unpacked\" image=%s path=%s bytes=%llu ms=%llu", image_id, final, bytes,
             (unsigned long long)(now_mono_ms() - t0));
    return 0;
}

int rootfs_ensure(struct docker *d, const char *store_dir, const char *image, uid_t out_uid,
                  gid_t out_gid, char *path, size_t pathlen, char *err, size_t errlen)
{
    if (!store_dir || store_dir[0] != '/')
        return rf_fail(err, errlen, -EINVAL, "rootfs store \"%s\": not an absolute path",
                       store_dir ? store_dir : "(null)");
    json_t *ins = NULL;
    int rc = docker_image_inspect(d, image, &ins);
    if (rc < 0)
        return rf_fail(err, errlen, rc, "docker_image_inspect %s: %s", image, docker_last_error(d));
    char id[80];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(ins, "Id")) ?: "");
    json_decref(ins);
    if (!rootfs_id_ok(id))
        return rf_fail(err, errlen, -EIO, "docker_image_inspect %s: no sha256 Id in the answer",
                       image);
    if ((rc = rootfs_path(store_dir, id, path, pathlen)) < 0)
        return rf_fail(err, errlen, rc, "rootfs of %s under %s: path too long", id, store_dir);
    char why[512];
    if ((rc = rootfs_verify(path, id, why, sizeof why)) == 0)
        return 0; /* the fast path */
    struct stat st;
    bool transient = rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM || rc == -EINTR;
    if (!transient && lstat(path, &st) == 0) { /* there but not whole (damaged): made again */
        log_warn("msg=\"rootfs not whole, made again\" image=%s err=\"%s\"", id, why);
        int sfd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd >= 0) {
            rf_remove_rootfs(sfd, store_dir, id + 7, NULL, 0);
            close(sfd);
        }
    }
    if ((rc = mkdir_p(store_dir, 0700)) < 0)
        return rf_fail(err, errlen, rc, "mkdir_p %s: %s", store_dir, strerror(-rc));
    return rf_make(d, store_dir, id, path, out_uid, out_gid, err, errlen);
}

/* ---------------------------------------------------------------------------------------- */
/* pruning                                                                                  */

/* The ids of the engine's tagged images, into `tagged` (a JSON object used as a set). */
static int rf_tagged(struct docker *d, json_t *tagged, char *err, size_t errlen)
{
    json_t *imgs = NULL;
    int rc = docker_images_by_label(d, NULL, &imgs);
    if (rc < 0)
        return rf_fail(err, errlen, rc, "docker_images (GET /images/json): %s",
                       docker_last_error(d));
    size_t i, j;
    json_t *img, *tag;
    json_array_foreach(imgs, i, img)
    {
        const char *id = json_string_value(json_object_get(img, "Id"));
        json_array_foreach(json_object_get(img, "RepoTags"), j, tag)
        {
            const char *t = json_string_value(tag);
            if (id && t && strcmp(t, "<none>:<none>") != 0)
                json_object_set_new(tagged, id, json_true());
        }
    }
    json_decref(imgs);
    return 0;
}

/* Export containers whose maker is gone (killed mid-export): removed. */
static void rf_prune_exports(struct docker *d)
{
    json_t *items = NULL;
    if (docker_list_with_labels(d, ROOTFS_EXPORT_LABEL, &items) < 0) {
        log_warn("msg=\"rootfs export sweep: list failed\" err=\"%s\"", docker_last_error(d));
        return;
    }
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        const char *cid = json_string_value(json_object_get(it, "id"));
        const char *who =
            json_string_value(json_object_get(json_object_get(it, "labels"), ROOTFS_EXPORT_LABEL));
        long pid = who ? strtol(who, NULL, 10) : 0;
        if (!cid || (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)))
            continue; /* its maker lives (or is not ours to judge) */
        if (docker_remove(d, cid) < 0)
            log_warn("msg=\"rootfs export sweep: remove failed\" container=%.12s err=\"%s\"", cid,
                     docker_last_error(d));
    }
    json_decref(items);
}

int rootfs_prune(struct docker *d, const char *store_dir, const char *const *keep_ids, size_t n,
                 char *err, size_t errlen)
{
    json_t *live = json_object();
    if (!live)
        return rf_fail(err, errlen, -ENOMEM, "rootfs_prune %s: out of memory", store_dir);
    int rc = rf_tagged(d, live, err, errlen);
    if (rc < 0) {
        json_decref(live);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        if (keep_ids[i])
            json_object_set_new(live, keep_ids[i], json_true());
    rf_prune_exports(d);

    int sfd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = sfd >= 0 ? fdopendir(dup(sfd)) : NULL;
    if (!dir) {
        int e = errno;
        if (sfd >= 0)
            close(sfd);
        json_decref(live);
        return e == ENOENT ? 0 : rf_fail(err, errlen, -e, "open %s: %s", store_dir, strerror(e));
    }
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        char id[80];
        if (!rf_is_hex64(de->d_name, strlen(de->d_name)))
            continue;
        snprintf(id, sizeof id, "sha256:%s", de->d_name);
        if (json_object_get(live, id))
            continue;
        int r = rf_remove_rootfs(sfd, store_dir, de->d_name, err, errlen);
        if (r > 0) {
            log_info("msg=\"rootfs pruned\" image=%s", id);
            removed++;
        } else if (r < 0) {
            rc = r;
        }
    }
    closedir(dir);
    close(sfd);
    json_decref(live);
    int t = rootfs_prune_tmp(store_dir, err, errlen);
    if (t > 0)
        removed += t;
    return removed ? removed : (rc < 0 ? rc : (t < 0 ? t : 0));
}
