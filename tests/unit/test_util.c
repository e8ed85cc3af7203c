/*
 * test_util.c — rm_rf: a whole tree goes, symlinks go as links (their targets stay), and
 * what is not there is no error; any depth or width with O(1) descriptors; what cannot
 * be removed is quarantined; hex, sha256; utf8_copy's cut and replacement.
 */
#include "tako/util.h"
#include "tk_test.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char *scratch(void)
{
    char *dir = strdup("/tmp/takod-test-util-XXXXXX");
    TK_ASSERT(dir && mkdtemp(dir));
    return dir;
}

static void put(const char *dir, const char *rel)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    TK_ASSERT_EQ(write_file(p, "x", 1, 0600), 0);
}

static void sub(const char *dir, const char *rel)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    TK_ASSERT_EQ(mkdir(p, 0700), 0);
}

TK_TEST(rm_rf_removes_a_tree_but_not_what_its_links_point_to)
{
    char *outside = scratch(), *dir = scratch(), p[4200], q[4200];
    put(outside, "keep");
    sub(dir, "code");
    put(dir, "code/main.py");
    sub(dir, "output");
    sub(dir, "output/deep");
    sub(dir, "output/deep/er");
    put(dir, "output/deep/er/f");
    put(dir, "output/.hidden");
    snprintf(p, sizeof p, "%s/output/to-dir", dir); /* a link to a directory outside */
    TK_ASSERT_EQ(symlink(outside, p), 0);
    snprintf(q, sizeof q, "%s/keep", outside);
    snprintf(p, sizeof p, "%s/output/to-file", dir);
    TK_ASSERT_EQ(symlink(q, p), 0);
    snprintf(p, sizeof p, "%s/output/dangling", dir);
    TK_ASSERT_EQ(symlink("/nonexistent/x", p), 0);
    snprintf(p, sizeof p, "%s/fifo", dir);
    TK_ASSERT_EQ(mkfifo(p, 0600), 0);

    TK_ASSERT_EQ(rm_rf(dir), 0);
    TK_ASSERT(access(dir, F_OK) < 0 && errno == ENOENT);
    TK_ASSERT_EQ(access(q, F_OK), 0); /* the links' targets are still there */
    TK_ASSERT_EQ(access(outside, F_OK), 0);
    TK_ASSERT_EQ(rm_rf(outside), 0);
    free(outside);
    free(dir);
}

TK_TEST(rm_rf_of_a_file_a_link_and_nothing)
{
    char *dir = scratch(), p[4200], l[4200];
    put(dir, "f");
    snprintf(p, sizeof p, "%s/f", dir);
    snprintf(l, sizeof l, "%s/l", dir);
    TK_ASSERT_EQ(symlink(dir, l), 0);
    TK_ASSERT_EQ(rm_rf(l), 0); /* the link, not the directory it names */
    TK_ASSERT_EQ(access(p, F_OK), 0);
    TK_ASSERT_EQ(rm_rf(p), 0);
    TK_ASSERT(access(p, F_OK) < 0);
    TK_ASSERT_EQ(rm_rf(p), 0); /* gone already: not an error */
    TK_ASSERT_EQ(rm_rf(dir), 0);
    free(dir);
}

/* A chain of `depth` directories "d" under dir, built with one descriptor at a time. */
static void chain(const char *dir, int depth)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    TK_ASSERT(fd >= 0);
    for (int i = 0; i < depth; i++) {
        TK_ASSERT_EQ(mkdirat(fd, "d", 0700), 0);
        if (i % 1000 == 0) { /* a file here and there, and a directory without rights */
            int f = openat(fd, "f", O_CREAT | O_WRONLY, 0600);
            TK_ASSERT(f >= 0);
            close(f);
        }
        int next = openat(fd, "d", O_RDONLY | O_DIRECTORY);
        TK_ASSERT(next >= 0);
        close(fd);
        fd = next;
    }
    TK_ASSERT_EQ(fchmod(fd, 0), 0); /* the deepest one: no read, write or search */
    close(fd);
}

/* 60,000 levels with 16 descriptors and a 256 KiB stack: the recursive rm_rf gave up
 * (EMFILE) or crashed; this one holds O(1) descriptors and memory. */
TK_TEST_T(rm_rf_of_a_60000_deep_chain_with_few_descriptors, 300)
{
    char *dir = strdup("/dev/shm/takod-test-util-XXXXXX"); /* in memory: fast to build */
    if (!dir || !mkdtemp(dir)) {
        free(dir);
        dir = scratch();
    }
    chain(dir, 60000);
    struct rlimit nofile = {16, 16}, stack = {256 << 10, 256 << 10};
    TK_ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &nofile), 0);
    TK_ASSERT_EQ(setrlimit(RLIMIT_STACK, &stack), 0);
    TK_ASSERT_EQ(rm_rf(dir), 0);
    struct stat st;
    TK_ASSERT(lstat(dir, &st) < 0 && errno == ENOENT);
    free(dir);
}

/* Wide: 1,000 directories of one file each beside 2,000 files, some without rights. */
TK_TEST_T(rm_rf_of_a_wide_tree, 300)
{
    char *dir = scratch();
    char rel[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(rel, sizeof rel, "s%d", i);
        sub(dir, rel);
        snprintf(rel, sizeof rel, "s%d/f", i);
        put(dir, rel);
        if (i % 7 == 0) {
            char p[4200];
            snprintf(p, sizeof p, "%s/s%d", dir, i);
            TK_ASSERT_EQ(chmod(p, 0500), 0);
        }
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(rel, sizeof rel, "f%d", i);
        put(dir, rel);
    }
    TK_ASSERT_EQ(rm_rf(dir), 0);
    struct stat st;
    TK_ASSERT(lstat(dir, &st) < 0 && errno == ENOENT);
    free(dir);
}

/* What cannot be removed is moved aside under a fresh name, and the name is free again. */
TK_TEST(rm_rf_aside_quarantines_what_it_cannot_remove)
{
    char *dir = scratch();
    char victim[4200], aside[4200], busy[4300];
    snprintf(victim, sizeof victim, "%s/slot", dir);
    snprintf(aside, sizeof aside, "%s/quarantine", dir);
    snprintf(busy, sizeof busy, "%s/slot/busy", dir);
    TK_ASSERT_EQ(mkdir(victim, 0700), 0);
    put(dir, "slot/keep");
    TK_ASSERT_EQ(rm_rf_aside(victim, aside), 0); /* removable: nothing quarantined */
    struct stat st;
    TK_ASSERT(lstat(victim, &st) < 0 && lstat(aside, &st) < 0);
    /* a mount point under it cannot be removed (EBUSY) nor crossed (EXDEV): only as root */
    if (geteuid() == 0) {
        TK_ASSERT_EQ(mkdir(victim, 0700), 0);
        TK_ASSERT_EQ(mkdir(busy, 0700), 0);
        if (mount("tk-test", busy, "tmpfs", 0, "size=64k") == 0) {
            TK_ASSERT(rm_rf_aside(victim, aside) < 0);
            TK_ASSERT(lstat(victim, &st) < 0 && errno == ENOENT); /* the name is free */
            TK_ASSERT_EQ(lstat(aside, &st), 0);
            DIR *d = opendir(aside);
            TK_ASSERT(d != NULL);
            int n = 0;
            struct dirent *de;
            char moved[4600] = "";
            while ((de = readdir(d)))
                if (strncmp(de->d_name, "slot.", 5) == 0) {
                    n++;
                    snprintf(moved, sizeof moved, "%s/%s/busy", aside, de->d_name);
                }
            closedir(d);
            TK_ASSERT_EQ(n, 1);
            TK_ASSERT_EQ(umount2(moved, MNT_DETACH), 0);
        }
    }
    TK_ASSERT_EQ(rm_rf(dir), 0);
    free(dir);
}

TK_TEST(hex_encode_and_sha256_hex)
{
    const unsigned char b[] = {0x00, 0x0f, 0xa5, 0xff};
    char out[9];
    memset(out, 'x', sizeof out);
    hex_encode(b, sizeof b, out);
    TK_ASSERT_STREQ(out, "000fa5ff");
    hex_encode(b, 0, out);
    TK_ASSERT_STREQ(out, "");
    char h[65];
    sha256_hex("abc", 3, h); /* FIPS 180-2's example */
    TK_ASSERT_STREQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TK_TEST(utf8_copy_cuts_on_a_character_and_replaces_invalid_bytes)
{
    char out[8];
    /* "aé€" is 1 + 2 + 3 bytes; 7 bytes of room take all of it, 5 only "aé" */
    TK_ASSERT_EQ(utf8_copy(out, sizeof out, "a\xc3\xa9\xe2\x82\xac", 6), 6);
    TK_ASSERT_STREQ(out, "a\xc3\xa9\xe2\x82\xac");
    char small[6];
    TK_ASSERT_EQ(utf8_copy(small, sizeof small, "a\xc3\xa9\xe2\x82\xac", 6), 3);
    TK_ASSERT_STREQ(small, "a\xc3\xa9");
    /* a stray byte, a cut sequence and a NUL each become U+FFFD */
    char rep[16];
    TK_ASSERT_EQ(utf8_copy(rep, sizeof rep,
                           "\xff"
                           "b\xe2\x82",
                           4),
                 10);
    TK_ASSERT_STREQ(rep, "\xef\xbf\xbd"
                         "b\xef\xbf\xbd\xef\xbf\xbd");
    TK_ASSERT_EQ(utf8_copy(rep, sizeof rep, "a\0b", 3), 5);
    TK_ASSERT_STREQ(rep, "a\xef\xbf\xbd"
                         "b");
    /* a replacement that does not fit is left out whole */
    char tiny[3];
    TK_ASSERT_EQ(utf8_copy(tiny, sizeof tiny, "x\xff", 2), 1);
    TK_ASSERT_STREQ(tiny, "x");
    TK_ASSERT_EQ(utf8_copy(tiny, 1, "x", 1), 0);
    TK_ASSERT_STREQ(tiny, "");
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
