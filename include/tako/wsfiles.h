/*
 * wsfiles.h — a session's workspace seen from the host: the files API's reads and writes
 * (PUT/GET/DELETE /sessions/{id}/files/{path}, the listing) and what a cell changed.
 *
 * The workspace is a directory the sandboxed code writes to while takod (root) reads and
 * writes it too, so every path is the code's to race: each one is resolved by the kernel
 * beneath the workspace's directory descriptor (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV), never by string checks alone. A symlink the
 * code made that leads outside is refused by the kernel (-EXDEV); one that stays inside is
 * followed. Only regular files are read and only regular files or directories listed or
 * removed: a FIFO, a device or a socket is -EPERM (opening is O_NONBLOCK, so a FIFO cannot
 * hang the caller). Writes land in a temporary file beside the target, owned by the run
 * uid (the code may change it later), and are renamed over it: a reader never sees half.
 *
 * Functions return 0 (or a count) or -errno: -EINVAL a bad path, -ENOENT missing, -EXDEV
 * or -ELOOP an escape, -EPERM not a regular file, -EFBIG over the caller's cap, -ENOSPC
 * or -EDQUOT the workspace is full, -EISDIR / -ENOTDIR / -ENOTEMPTY as usual.
 */
#ifndef TAKO_WSFILES_H
#define TAKO_WSFILES_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WSFILES_PATH_MAX    1024 /* a relative path's bytes */
#define WSFILES_NAME_MAX    255  /* one component's */
#define WSFILES_LIST_MAX    1000 /* entries one listing returns */
#define WSFILES_CHANGED_MAX 100  /* files a cell's answer names */

/* Whether `path` is a relative workspace path the API accepts (see docs/SESSIONS.md):
 * 1..WSFILES_PATH_MAX bytes, no NUL, no leading '/', no empty, "." or ".." component.
 * `allow_empty` accepts "" (the workspace itself: a listing). 0, or -EINVAL with why. */
int wsfiles_check_path(const char *path, int allow_empty, const char **why);

/* Open `path` beneath the workspace `root` (a directory fd) with open(2) `flags`. */
int wsfiles_open(int root, const char *path, int flags, mode_t mode);

/* Write len bytes to path (parent directories made, owned uid:gid), atomically. The file's
 * sha256 (hex) into sha when not NULL. */
int wsfiles_put(int root, const char *path, const void *data, size_t len, uid_t uid, gid_t gid,
                char sha[65]);

/* Read the regular file at path, at most `max` bytes (-EFBIG when larger); *data is
 * malloc'd (NUL-terminated for convenience), its sha256 into sha when not NULL. */
int wsfiles_get(int root, const char *path, size_t max, char **data, size_t *len, char sha[65]);

/* The entries of the directory `dir` ("" = the workspace), sorted by name, as
 * [{name, path, type: "file"|"dir"|"other", size, mtime}]; *truncated when more than
 * WSFILES_LIST_MAX. */
int wsfiles_list(int root, const char *dir, json_t **items, int *truncated);

/* Remove a file, a symlink, or an empty directory. */
int wsfiles_remove(int root, const char *path);

/* What the workspace holds now: {path: signature} of its regular files (mtime, size,
 * inode, ctime), from a walk of at most 10000 entries, 32 levels, never following a
 * symlink. */
json_t *wsfiles_snapshot(int root);

/* The regular files whose signature differs from `before` (a snapshot; NULL: every file),
 * as [{path, size}] sorted by path, at most WSFILES_CHANGED_MAX; the new snapshot into
 * *after when not NULL. A file changed twice within the clock's tick and keeping its size
 * and inode shows as unchanged. */
json_t *wsfiles_changed(int root, json_t *before, json_t **after);

#endif
