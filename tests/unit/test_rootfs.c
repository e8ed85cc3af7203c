/*
 * test_rootfs.c — the parts of common/rootfs.c that need no engine: image ids and store
 * paths, a rootfs's verification (marker, launcher, python3 resolved inside the rootfs,
 * never on the host) and lookup, and the pruning of dead makers' temporary directories
 * (old and unlocked only). The engine's half is tests/integration/test_rootfs.py.
 */
#include "tako/rootfs.h"
#include "tako/util.h"
#include "tk_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEX "3b0c2e214dbbf1f44aae2c19e0ef0efba8d49b8dbeb2f4a8310c761b2329c735"
#define ID  "sha256:" HEX

static char *scratch(void)
{
    char *dir = strdup("/tmp/takod-test-rootfs-XXXXXX");
    TK_ASSERT(dir && mkdtemp(dir));
    return dir;
}

static void put(const char *root, const char *rel, const char *text, mode_t mode)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    char *slash = strrchr(p, '/');
    *slash = '\0';
    TK_ASSERT_EQ(mkdir_p(p, 0755), 0);
    *slash = '/';
    TK_ASSERT_EQ(write_file(p, text, strlen(text), mode), 0);
    TK_ASSERT_EQ(chmod(p, mode), 0);
}

static void link_at(const char *root, const char *rel, const char *target)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    unlink(p);
    TK_ASSERT_EQ(symlink(target, p), 0);
}

/* A whole rootfs of image ID at <store>/<HEX>, its python3 a relative link as Debian's. */
static void fake_rootfs(const char *store, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", store, HEX);
    put(path, ROOTFS_MARKER, "image=" ID "\ncreated=1\n", 0644);
    put(path, ROOTFS_LAUNCHER, "#!/bin/sh\n", 0755);
    put(path, "usr/bin/python3.11", "elf", 0755);
    link_at(path, "usr/bin/python3", "python3.11");
}

TK_TEST(image_ids_and_store_paths)
{
    TK_ASSERT(rootfs_id_ok(ID));
    TK_ASSERT(!rootfs_id_ok(HEX));                   /* no algorithm */
    TK_ASSERT(!rootfs_id_ok("sha256:" HEX "0"));     /* too long */
    TK_ASSERT(!rootfs_id_ok("sha256:3B0C2E214DBB")); /* short, upper */
    TK_ASSERT(!rootfs_id_ok("sha256:../../../etc/passwd"));
    TK_ASSERT(!rootfs_id_ok(NULL));
    char p[128];
    TK_ASSERT_EQ(rootfs_path("/data/rootfs", ID, p, sizeof p), 0);
    TK_ASSERT(strcmp(p, "/data/rootfs/" HEX) == 0);
    TK_ASSERT_EQ(rootfs_path("data/rootfs", ID, p, sizeof p), -EINVAL); /* relative */
    TK_ASSERT_EQ(rootfs_path("/data", "sha256:..", p, sizeof p), -EINVAL);
    TK_ASSERT_EQ(rootfs_path("/data/rootfs", ID, p, 40), -ENAMETOOLONG);
}

TK_TEST(a_whole_rootfs_verifies_and_is_looked_up)
{
    char *store = scratch(), path[4200], got[4200], err[512];
    fake_rootfs(store, path, sizeof path);
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), 0);
    TK_ASSERT_EQ(rootfs_lookup(store, ID, got, sizeof got), 0);
    TK_ASSERT(strcmp(got, path) == 0);
    /* an absolute link is the container's path: resolved inside the rootfs */
    link_at(path, "usr/bin/python3", "/usr/bin/python3.11");
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), 0);
    TK_ASSERT_EQ(rootfs_lookup(store, "sha256:" HEX "0", got, sizeof got), -EINVAL);
    char other[80] = "sha256:";
    memset(other + 7, 'a', 64);
    other[71] = '\0';
    TK_ASSERT_EQ(rootfs_lookup(store, other, got, sizeof got), -ENOENT);
    TK_ASSERT_EQ(rm_rf(store), 0);
}

TK_TEST(marker_must_name_the_image_and_be_a_file)
{
    char *store = scratch(), path[4200], err[512];
    fake_rootfs(store, path, sizeof path);
    put(path, ROOTFS_MARKER, "image=sha256:aaaa\n", 0644);
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), -EBADMSG);
    TK_ASSERT(strstr(err, ROOTFS_MARKER) && strstr(err, ID));
    put(path, "elsewhere", "image=" ID "\n", 0644);
    link_at(path, ROOTFS_MARKER, "elsewhere"); /* a link is never followed */
    TK_ASSERT(rootfs_verify(path, ID, err, sizeof err) < 0);
    unlink(strcat(strcat(strcpy(err, path), "/"), ROOTFS_MARKER));
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), -ENOENT);
    char got[4200];
    TK_ASSERT_EQ(rootfs_lookup(store, ID, got, sizeof got), -ENOENT); /* not whole: absent */
    TK_ASSERT_EQ(rm_rf(store), 0);
}

TK_TEST(launcher_and_python3_must_be_executables_inside)
{
    char *store = scratch(), path[4200], err[512];
    fake_rootfs(store, path, sizeof path);
    char p[4300];
    snprintf(p, sizeof p, "%s/%s", path, ROOTFS_LAUNCHER);
    TK_ASSERT_EQ(chmod(p, 0644), 0);
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), -EACCES);
    TK_ASSERT(strstr(err, "tako-launcher"));
    TK_ASSERT_EQ(chmod(p, 0755), 0);
    /* a link to a host executable the rootfs lacks does not count */
    link_at(path, "usr/bin/python3", "/bin/sh");
    TK_ASSERT(access("/bin/sh", X_OK) == 0);
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), -ENOENT);
    TK_ASSERT(strstr(err, "python3"));
    /* nor one that climbs out with .. */
    link_at(path, "usr/bin/python3", "../../../../../../../../bin/sh");
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), -ENOENT);
    /* a directory named python3 is not an executable */
    unlink(strcat(strcpy(p, path), "/usr/bin/python3"));
    TK_ASSERT_EQ(mkdir(p, 0755), 0);
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), -ENOENT);
    put(path, "usr/local/bin/python3", "elf", 0755); /* python's own images put it here */
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), 0);
    TK_ASSERT_EQ(rm_rf(store), 0);
}

static void aged_dir(const char *store, const char *name, long age_s)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", store, name);
    TK_ASSERT_EQ(mkdir(p, 0700), 0);
    put(p, "usr/bin/x", "x", 0755);
    struct timespec t[2] = {{time(NULL) - age_s, 0}, {time(NULL) - age_s, 0}};
    TK_ASSERT_EQ(utimensat(AT_FDCWD, p, t, 0), 0);
}

static bool there(const char *store, const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", store, name);
    return access(p, F_OK) == 0;
}

TK_TEST(prune_removes_old_unlocked_temporary_dirs_only)
{
    char *store = scratch(), path[4200], err[512];
    fake_rootfs(store, path, sizeof path);
    aged_dir(store, ".tmp.3b0c2e214dbb.1.AAAAAA", 120); /* a dead maker's: goes */
    aged_dir(store, ".old." HEX ".1.0", 120);           /* a dead remover's: goes */
    aged_dir(store, ".tmp.3b0c2e214dbb.2.BBBBBB", 5);   /* young: stays */
    aged_dir(store, ".tmp.3b0c2e214dbb.3.CCCCCC", 120); /* old but its maker lives: stays */
    aged_dir(store, "lost+found", 120);                 /* not ours: stays */
    char p[4200];
    snprintf(p, sizeof p, "%s/.tmp.3b0c2e214dbb.3.CCCCCC", store);
    int lk = open(p, O_RDONLY | O_DIRECTORY);
    TK_ASSERT(lk >= 0 && flock(lk, LOCK_EX) == 0);
    TK_ASSERT_EQ(rootfs_prune_tmp(store, err, sizeof err), 2);
    TK_ASSERT(!there(store, ".tmp.3b0c2e214dbb.1.AAAAAA"));
    TK_ASSERT(!there(store, ".old." HEX ".1.0"));
    TK_ASSERT(there(store, ".tmp.3b0c2e214dbb.2.BBBBBB"));
    TK_ASSERT(there(store, ".tmp.3b0c2e214dbb.3.CCCCCC"));
    TK_ASSERT(there(store, "lost+found"));
    TK_ASSERT_EQ(rootfs_verify(path, ID, err, sizeof err), 0); /* a rootfs is never touched */
    close(lk);                                                 /* the maker died */
    TK_ASSERT_EQ(rootfs_prune_tmp(store, err, sizeof err), 1);
    TK_ASSERT(!there(store, ".tmp.3b0c2e214dbb.3.CCCCCC"));
    TK_ASSERT_EQ(rootfs_prune_tmp("/tmp/takod-test-rootfs-no-such-store", err, sizeof err), 0);
    TK_ASSERT_EQ(rm_rf(store), 0);
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
