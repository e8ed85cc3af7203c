/*
 * util.c — see util.h.
 */
#include "tako/util.h"
#include "tako/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t now_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t now_mono_ms(void)
{
    return now_mono_us() / 1000u;
}

uint64_t now_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void uuid_v4(char *buf)
{
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

bool uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

int mkdir_p(const char *path, mode_t mode)
{
    /* the common case first: the parent exists (one syscall instead of one per level) */
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return 0;
    if (errno != ENOENT)
        return -errno;
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp)
        return -ENAMETOOLONG;
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/*
 * rm -rf without recursion: one descriptor on the directory being emptied (plus the
 * listing's own while it is read), one listing buffer, and a depth counter, whatever the
 * tree's depth or width. A directory is emptied by unlinking its files and removing its
 * empty subdirectories; at the first subdirectory that is not empty it descends
 * (openat O_DIRECTORY|O_NOFOLLOW) and starts again there; a directory found empty goes
 * back up with openat(fd, "..") and its parent is listed again (what was removed is gone
 * from the listing, so the work stays proportional to the tree). Going back up to depth 0
 * must land on the root it opened (same dev/ino), and it never descends onto another
 * filesystem. A directory without write or search permission is chmod'ed 0700 first. The
 * first entry that cannot be removed ends the walk with its error, so the walk always
 * finishes; the caller decides what to do with what is left (rm_rf_aside).
 */
static int chmod_dir_fd(int fd)
{
    return fchmod(fd, 0700) < 0 ? -errno : 0;
}

/* Empty the directory open at fd (a descriptor the call owns) and everything under it. */
static int rm_tree_fd(int root)
{
    struct stat rst;
    if (fstat(root, &rst) < 0) {
        int e = errno;
        close(root);
        return -e;
    }
    if ((rst.st_mode & 0700) != 0700)
        (void)chmod_dir_fd(root);
    int cur = root;
    unsigned long depth = 0;
    int rc = 0;
    for (;;) {
        int lfd = openat(cur, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
        if (!d) {
            rc = -errno;
            if (lfd >= 0)
                close(lfd);
            break;
        }
        int child = -1;
        struct dirent *de;
        errno = 0;
        while (rc == 0 && (de = readdir(d)) != NULL) {
            const char *name = de->d_name;
            if (!strcmp(name, ".") || !strcmp(name, ".."))
                continue;
            unsigned char type = de->d_type;
            if (type == DT_UNKNOWN) {
                struct stat st;
                if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                    if (errno != ENOENT)
                        rc = -errno;
                    continue;
                }
                type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
            }
            int flag = type == DT_DIR ? AT_REMOVEDIR : 0;
            if (unlinkat(cur, name, flag) == 0 || errno == ENOENT)
                continue;
            if (errno == EACCES || errno == EPERM) { /* cur not writable: make it so */
                if (chmod_dir_fd(cur) == 0 && (unlinkat(cur, name, flag) == 0 || errno == ENOENT))
                    continue;
            }
            if (type != DT_DIR || (errno != ENOTEMPTY && errno != EEXIST)) {
                rc = -errno;
                break;
            }
            child = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child < 0 && errno == EACCES) { /* no search permission: give it */
                struct stat st;
                if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode) &&
                    fchmodat(cur, name, 0700, 0) == 0)
                    child = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            }
            if (child < 0) {
                rc = -errno;
                break;
            }
            struct stat cst;
            if (fstat(child, &cst) < 0 || cst.st_dev != rst.st_dev) { /* a mount: not ours */
                rc = -EXDEV;
                close(child);
                child = -1;
                break;
            }
            if ((cst.st_mode & 0700) != 0700)
                (void)chmod_dir_fd(child);
            break;
        }
        if (rc == 0 && child < 0 && errno != 0)
            rc = -errno; /* readdir failed */
        closedir(d);
        if (rc < 0)
            break;
        if (child >= 0) { /* descend and start again there */
            close(cur);
            cur = child;
            depth++;
            continue;
        }
        if (depth == 0) /* the root is empty */
            break;
        int up = openat(cur, "..", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (up < 0) {
            rc = -errno;
            break;
        }
        close(cur);
        cur = up;
        depth--;
        struct stat ust;
        if (fstat(cur, &ust) < 0 || ust.st_dev != rst.st_dev ||
            (depth == 0 && ust.st_ino != rst.st_ino)) {
            rc = -EXDEV; /* the tree moved under us: stop rather than walk elsewhere */
            break;
        }
    }
    close(cur);
    return rc;
}

int rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISDIR(st.st_mode)) /* a file, a symlink (itself, never its target), ... */
        return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES && chmod(path, 0700) == 0)
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    int rc = rm_tree_fd(fd);
    if (rc == 0 && rmdir(path) < 0 && errno != ENOENT)
        rc = -errno;
    return rc;
}

int rm_rf_aside(const char *path, const char *aside_dir)
{
    int rc = rm_rf(path);
    if (rc == 0)
        return 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char to[4400];
    int n, mk = 0;
    if (aside_dir && aside_dir[0]) {
        n = snprintf(to, sizeof to, "%s/%s.%llu", aside_dir, base,
                     (unsigned long long)now_real_us());
        mk = mkdir_p(aside_dir, 0700);
    } else { /* no quarantine directory: beside it, under a name no one hands out */
        n = snprintf(to, sizeof to, "%s.quarantined.%llu", path, (unsigned long long)now_real_us());
    }
    if (n < 0 || (size_t)n >= sizeof to || mk < 0 || rename(path, to) < 0) {
        int e = mk < 0 ? -mk : errno;
        log_error("msg=\"removing a directory failed, and moving it aside too\" dir=%s "
                  "err=\"%s\" aside_err=\"%s\"",
                  path, strerror(-rc), strerror(e));
        return rc;
    }
    log_error("msg=\"removing a directory failed; quarantined, never reused\" dir=%s to=%s "
              "err=\"%s\"",
              path, to, strerror(-rc));
    return rc;
}

int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return -e;
        }
        p += n;
        len -= (size_t)n;
    }
    if (fchmod(fd, mode) < 0 || close(fd) < 0) {
        int e = errno;
        unlink(tmp);
        return -e;
    }
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return -e;
    }
    return 0;
}

int read_file(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    size_t cap = (size_t)st.st_size;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return -e;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    if (len)
        *len = got;
    return 0;
}

void sha256_hex(const void *data, size_t len, char *hex)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    hex_encode(md, 32, hex);
}

void hex_encode(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one. */
static size_t utf8_seq_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return c == 0 ? 0 : 1;
    if ((c & 0xe0) == 0xc0) {
        n = 2;
        cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

char *utf8_sanitize(const char *in, size_t len, size_t *out_len)
{
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(p + i, len - i);
        if (n == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        }
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return out;
}

size_t utf8_copy(char *dst, size_t size, const char *src, size_t len)
{
    if (size == 0)
        return 0;
    const unsigned char *p = (const unsigned char *)src;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(p + i, len - i);
        const char *c = n ? src + i : "\xef\xbf\xbd";
        size_t cl = n ? n : 3;
        if (o + cl >= size)
            break; /* a whole character or none */
        memcpy(dst + o, c, cl);
        o += cl;
        i += n ? n : 1;
    }
    dst[o] = '\0';
    return o;
}

void strip_ansi(char *line)
{
    char *w = line;
    for (const char *r = line; *r;) {
        if (r[0] == '\033' && r[1] == '[') {
            r += 2;
            r += strspn(r, "0123456789;?");
            if (*r)
                r++;
            continue;
        }
        *w++ = *r++;
    }
    *w = '\0';
}

uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ? h : 1;
}
