/*
 * wsfiles.c — see wsfiles.h. Every open goes through wsfiles_open (openat2 beneath the
 * workspace); a directory is walked through descriptors, never by path strings.
 */
#include "tako/wsfiles.h"
#include "tako/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WALK_ENTRIES_MAX 10000
#define WALK_DEPTH_MAX   32

int wsfiles_check_path(const char *path, int allow_empty, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    size_t len = path ? strlen(path) : 0;
    if (!path || (len == 0 && !allow_empty)) {
        *why = "the path is empty";
        return -EINVAL;
    }
    if (len > WSFILES_PATH_MAX) {
        *why = "the path is longer than 1024 bytes";
        return -EINVAL;
    }
    if (path[0] == '/') {
        *why = "the path must be relative to the workspace";
        return -EINVAL;
    }
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 0) {
            *why = "the path has an empty component";
            return -EINVAL;
        }
        if (n > WSFILES_NAME_MAX) {
            *why = "a path component is longer than 255 bytes";
            return -EINVAL;
        }
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
            *why = "the path has a '.' or '..' component";
            return -EINVAL;
        }
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) {
                *why = "the path has a control character";
                return -EINVAL;
            }
        p += n;
        if (*p == '/')
            p++;
        if (*p == '\0' && p[-1] == '/') {
            *why = "the path ends with '/'";
            return -EINVAL;
        }
    }
    return 0;
}

int wsfiles_open(int root, const char *path, int flags, mode_t mode)
{
    struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC),
                           .mode = (flags & O_CREAT) ? mode : 0,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV};
    long fd = syscall(SYS_openat2, root, path[0] ? path : ".", &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

/* The parent directory of path, opened beneath root (made when `make`, owned uid:gid),
 * and the last component's offset in path. */
static int open_parent(int root, const char *path, int make, uid_t uid, gid_t gid,
                       const char **name)
{
    const char *slash = strrchr(path, '/');
    *name = slash ? slash + 1 : path;
    if (!slash)
        return wsfiles_open(root, "", O_PATH | O_DIRECTORY, 0);
    char dir[WSFILES_PATH_MAX + 1];
    size_t dl = (size_t)(slash - path);
    memcpy(dir, path, dl);
    dir[dl] = '\0';
    int fd = wsfiles_open(root, dir, O_PATH | O_DIRECTORY, 0);
    if (fd != -ENOENT || !make)
        return fd;
    /* make each missing component in turn, beneath the one before */
    int cur = wsfiles_open(root, "", O_PATH | O_DIRECTORY, 0);
    for (char *p = dir; cur >= 0 && *p;) {
        size_t n = strcspn(p, "/");
        char c = p[n];
        p[n] = '\0';
        if (mkdirat(cur, p, 0755) == 0) {
            if (fchownat(cur, p, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
                int e = -errno;
                close(cur);
                return e;
            }
        } else if (errno != EEXIST) {
            int e = -errno;
            close(cur);
            return e;
        }
        int next = wsfiles_open(cur, p, O_PATH | O_DIRECTORY, 0);
        close(cur);
        cur = next;
        p[n] = c;
        p += n + (c == '/');
    }
    return cur;
}

static void sha_of(const void *data, size_t len, char sha[65])
{
    if (sha)
        sha256_hex(data, len, sha);
}

int wsfiles_put(int root, const char *path, const void *data, size_t len, uid_t uid, gid_t gid,
                char sha[65])
{
    if (wsfiles_check_path(path, 0, NULL) < 0)
        return -EINVAL;
    const char *name;
    int dfd = open_parent(root, path, 1, uid, gid, &name);
    if (dfd < 0)
        return dfd;
    /* the parent as a real directory descriptor (O_PATH cannot create in it) */
    int dir = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    close(dfd);
    if (dir < 0)
        return -errno;
    struct stat st;
    if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
        close(dir);
        return -EISDIR;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, ".tako-upload-%d-%llx", (int)getpid(),
             (unsigned long long)now_real_us());
    int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = -errno;
        close(dir);
        return e;
    }
    int rc = 0;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (rc == 0 && fchown(fd, uid, gid) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && renameat(dir, tmp, dir, name) < 0)
        rc = -errno;
    if (rc < 0)
        unlinkat(dir, tmp, 0);
    close(dir);
    if (rc == 0)
        sha_of(data, len, sha);
    return rc;
}

int wsfiles_get(int root, const char *path, size_t max, char **data, size_t *len, char sha[65])
{
    *data = NULL;
    *len = 0;
    if (wsfiles_check_path(path, 0, NULL) < 0)
        return -EINVAL;
    int fd = wsfiles_open(root, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
    if (fd < 0)
        return fd;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? -EISDIR : -EPERM;
        close(fd);
        return e;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) { /* the code may grow it meanwhile: read to EOF, within max */
        if (n == cap) {
            if (cap > max) {
                free(buf);
                close(fd);
                return -EFBIG;
            }
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return -ENOMEM;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = -errno;
            free(buf);
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > max) {
        free(buf);
        return -EFBIG;
    }
    buf[n] = '\0';
    sha_of(buf, n, sha);
    *data = buf;
    *len = n;
    return 0;
}

static const char *type_name(mode_t m)
{
    return S_ISREG(m) ? "file" : S_ISDIR(m) ? "dir" : "other";
}

static int by_name(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
                  json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

static char *iso_time(const struct timespec *ts, char *buf, size_t len)
{
    struct tm tm;
    time_t s = ts->tv_sec;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%06ld+00:00", ts->tv_nsec / 1000); /* as to_json */
    return buf;
}

int wsfiles_list(int root, const char *dir, json_t **items, int *truncated)
{
    *items = NULL;
    *truncated = 0;
    if (wsfiles_check_path(dir, 1, NULL) < 0)
        return -EINVAL;
    int fd = wsfiles_open(root, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = -errno;
        close(fd);
        return e;
    }
    json_t **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == WSFILES_LIST_MAX) {
            *truncated = 1;
            break;
        }
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* gone meanwhile */
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            json_t **nv = realloc(v, cap * sizeof *nv);
            if (!nv)
                break;
            v = nv;
        }
        char path[WSFILES_PATH_MAX + WSFILES_NAME_MAX + 2], when[40];
        snprintf(path, sizeof path, "%s%s%s", dir, dir[0] ? "/" : "", de->d_name);
        v[n++] =
            json_pack("{s:s, s:s, s:s, s:I, s:s}", "name", de->d_name, "path", path, "type",
                      S_ISLNK(st.st_mode) ? "symlink" : type_name(st.st_mode), "size",
                      (json_int_t)st.st_size, "mtime", iso_time(&st.st_mtim, when, sizeof when));
    }
    closedir(d);
    qsort(v, n, sizeof *v, by_name);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, v[i]);
    free(v);
    *items = a;
    return 0;
}

int wsfiles_remove(int root, const char *path)
{
    if (wsfiles_check_path(path, 0, NULL) < 0)
        return -EINVAL;
    const char *name;
    int dfd = open_parent(root, path, 0, 0, 0, &name);
    if (dfd < 0)
        return dfd;
    int dir = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    close(dfd);
    if (dir < 0)
        return -errno;
    int rc = unlinkat(dir, name, 0) == 0 ? 0 : -errno;
    if (rc == -EISDIR)
        rc = unlinkat(dir, name, AT_REMOVEDIR) == 0 ? 0 : -errno;
    if (rc == -EEXIST)
        rc = -ENOTEMPTY;
    close(dir);
    return rc;
}

struct walk {
    json_t *now; /* {path: signature} of every regular file seen */
    int entries;
};

static int by_path(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "path")),
                  json_string_value(json_object_get(*(json_t *const *)b, "path")));
}

static void walk_dir(struct walk *w, int fd, const char *prefix, int depth)
{
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL && w->entries < WALK_ENTRIES_MAX) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        w->entries++;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        char path[WSFILES_PATH_MAX + 1];
        if (snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "/" : "", de->d_name) >=
            (int)sizeof path)
            continue;
        if (S_ISDIR(st.st_mode) && depth < WALK_DEPTH_MAX) {
            int sub = openat(dirfd(d), de->d_name,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
            if (sub >= 0)
                walk_dir(w, sub, path, depth + 1);
        } else if (S_ISREG(st.st_mode) && strncmp(de->d_name, ".tako-upload-", 13) != 0) {
            char sig[96];
            snprintf(sig, sizeof sig, "%lld.%09ld:%lld:%llu:%lld", (long long)st.st_mtim.tv_sec,
                     st.st_mtim.tv_nsec, (long long)st.st_size, (unsigned long long)st.st_ino,
                     (long long)st.st_ctim.tv_nsec);
            json_object_set_new(w->now, path, json_string(sig));
        }
    }
    closedir(d);
}

json_t *wsfiles_snapshot(int root)
{
    struct walk w = {.now = json_object()};
    int fd = wsfiles_open(root, "", O_RDONLY | O_DIRECTORY, 0);
    if (fd >= 0)
        walk_dir(&w, fd, "", 0);
    return w.now;
}

json_t *wsfiles_changed(int root, json_t *before, json_t **after)
{
    json_t *now = wsfiles_snapshot(root);
    json_t *found = json_array();
    const char *path;
    json_t *sig;
    json_object_foreach(now, path, sig)
    {
        const char *was = json_string_value(json_object_get(before, path));
        if (was && !strcmp(was, json_string_value(sig)))
            continue;
        long long size = 0;
        const char *c = strchr(json_string_value(sig), ':');
        if (c)
            size = atoll(c + 1);
        json_array_append_new(found,
                              json_pack("{s:s, s:I}", "path", path, "size", (json_int_t)size));
    }
    size_t n = json_array_size(found);
    json_t **v = malloc((n ? n : 1) * sizeof *v);
    json_t *out = json_array();
    if (v) {
        for (size_t i = 0; i < n; i++)
            v[i] = json_array_get(found, i);
        qsort(v, n, sizeof *v, by_path);
        for (size_t i = 0; i < n && i < WSFILES_CHANGED_MAX; i++)
            json_array_append(out, v[i]);
        free(v);
    }
    json_decref(found);
    if (after)
        *after = now;
    else
        json_decref(now);
    return out;
}
