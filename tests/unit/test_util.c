/*
 * test_util.c — rm_rf: a whole tree goes, symlinks go as links (their targets stay), and
 * what is not there is no error; hex, sha256; utf8_copy's cut and replacement.
 */
#include "tako/util.h"
#include "tk_test.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
