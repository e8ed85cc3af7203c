/*
 * rootfs.h — the OCI backend's image store: each image it runs, unpacked once into a
 * read-only root filesystem under a store directory (data_dir/rootfs), keyed by image id.
 *
 * Docker owns images; this module only copies what the engine has. A rootfs is the
 * engine's export of a container created (never started) from the image, unpacked by
 * `tar -x --numeric-owner` into a temporary directory of the store, completed with the
 * mount points the backend needs, marked, verified, synced and renamed into place. A
 * rootfs in place is never changed again; a new image id gets a new one, and
 * rootfs_prune removes those whose image is gone or replaced.
 *
 * Store layout:
 *   <store>/<64 hex>/            a rootfs (the image id without "sha256:")
 *   <store>/<64 hex>/.takod-rootfs   its marker: "image=sha256:<hex>\ncreated=<unix s>\n"
 *   <store>/.tmp.<hex>.<pid>.<n>   an unpack in progress (flock'ed by its maker)
 *   <store>/.old.<hex>.<pid>.<n>   a rootfs renamed aside to be removed
 *
 * Concurrent makers of one image (several executors) each unpack into their own
 * temporary directory; the first rename wins (renameat2 RENAME_NOREPLACE), the others
 * remove theirs and use the winner's. A maker killed at any point leaves only a .tmp or
 * .old directory that rootfs_prune removes once it is a minute old and unlocked.
 *
 * Every function returns 0 (or a count) or -errno; a failure is logged where it happens
 * and its one-line reason, naming the call and the object, is copied to err.
 */
#ifndef TAKO_ROOTFS_H
#define TAKO_ROOTFS_H

#include "tako/docker.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define ROOTFS_MARKER       ".takod-rootfs"
#define ROOTFS_LAUNCHER     "usr/local/bin/tako-launcher"
#define ROOTFS_EXPORT_LABEL "takod.rootfs" /* the export containers carry it: leak sweeps */
#define ROOTFS_TMP_AGE_S    60             /* prune leaves younger temporary dirs alone */

/* "sha256:" and 64 lowercase hex digits: an image id a rootfs can be keyed by. */
bool rootfs_id_ok(const char *image_id);

/* <store_dir>/<hex of image_id> into path. 0, -EINVAL (not an id), -ENAMETOOLONG. */
int rootfs_path(const char *store_dir, const char *image_id, char *path, size_t pathlen);

/* A rootfs directory is whole: its marker names image_id, and the launcher and python3
 * are executables inside it (symlinks resolved within the rootfs). 0, or -errno with the
 * reason in err. */
int rootfs_verify(const char *dir, const char *image_id, char *err, size_t errlen);

/* The verified rootfs of image_id, with no engine call: 0 and its path, -ENOENT when it
 * is not there (or not whole), -EINVAL for a malformed id. */
int rootfs_lookup(const char *store_dir, const char *image_id, char *path, size_t pathlen);

/*
 * The rootfs of `image` (a name or an id), made when it is missing: 0 and its path. The
 * image is resolved to its id (one inspect); a verified rootfs in place is returned at
 * once. Otherwise it is unpacked (see above), with the mount points /code /input /ctl
 * /tmp /proc /dev /sys (root, 0755) and /output (out_uid:out_gid, 0755) made where
 * missing. Nothing is left behind on failure: no temporary directory, no container.
 */
int rootfs_ensure(struct docker *d, const char *store_dir, const char *image, uid_t out_uid,
                  gid_t out_gid, char *path, size_t pathlen, char *err, size_t errlen);

/*
 * Remove every rootfs whose image id is neither the id of a tagged image in the engine
 * (an image rebuilt under its tag leaves the old id untagged) nor one of keep_ids (those
 * the caller still runs), and temporary directories older than ROOTFS_TMP_AGE_S whose
 * maker is gone. Each is renamed aside, then removed. The number removed, or -errno (the
 * engine's list failed: nothing is removed then, or the store cannot be read).
 */
int rootfs_prune(struct docker *d, const char *store_dir, const char *const *keep_ids, size_t n,
                 char *err, size_t errlen);

/* Only the temporary-directory half of rootfs_prune (no engine): the number removed. */
int rootfs_prune_tmp(const char *store_dir, char *err, size_t errlen);

#endif
