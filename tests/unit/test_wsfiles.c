/*
 * test_wsfiles.c — a session's workspace from the host: path rules; put/get round trip
 * (binary, parents made, atomic replace); escapes refused by the kernel (a symlink out, an
 * absolute symlink, ".."); a FIFO never opened for reading; listing; removal; what a cell
 * changed.
 */
#include "tako/util.h"
#include "tako/wsfiles.h"
#include "tk_test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char base[64];

static int workspace(void)
{
    snprintf(base, sizeof base, "/tmp/takod-test-ws-XXXXXX");
    TK_ASSERT(mkdtemp(base));
    char ws[128];
    snprintf(ws, sizeof ws, "%s/ws", base);
    TK_ASSERT(mkdir(ws, 0755) == 0);
    int fd = open(ws, O_PATH | O_DIRECTORY | O_CLOEXEC);
    TK_ASSERT(fd >= 0);
    return fd;
}

TK_TEST(path_rules)
{
    const char *why = NULL;
    TK_ASSERT_EQ(wsfiles_check_path("a.txt", 0, &why), 0);
    TK_ASSERT_EQ(wsfiles_check_path("dir/sub/a.txt", 0, &why), 0);
    TK_ASSERT_EQ(wsfiles_check_path("..data", 0, &why), 0); /* a name, not ".." */
    const char *bad[] = {"", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", ".", "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        TK_ASSERT_EQ(wsfiles_check_path(bad[i], 0, &why), -EINVAL);
    TK_ASSERT_EQ(wsfiles_check_path("", 1, &why), 0);
    char longp[1100];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    TK_ASSERT_EQ(wsfiles_check_path(longp, 0, &why), -EINVAL);
}

TK_TEST(put_get_round_trip)
{
    int root = workspace();
    char data[70000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)(i * 7);
    char sha[65], sha2[65];
    TK_ASSERT_EQ(wsfiles_put(root, "deep/er/blob.bin", data, sizeof data, getuid(), getgid(), sha),
                 0);
    char *got = NULL;
    size_t len = 0;
    TK_ASSERT_EQ(wsfiles_get(root, "deep/er/blob.bin", 1 << 20, &got, &len, sha2), 0);
    TK_ASSERT_EQ(len, sizeof data);
    TK_ASSERT(memcmp(got, data, len) == 0);
    TK_ASSERT(strcmp(sha, sha2) == 0);
    free(got);
    /* replaced whole */
    TK_ASSERT_EQ(wsfiles_put(root, "deep/er/blob.bin", "x", 1, getuid(), getgid(), NULL), 0);
    TK_ASSERT_EQ(wsfiles_get(root, "deep/er/blob.bin", 10, &got, &len, NULL), 0);
    TK_ASSERT_EQ(len, 1);
    free(got);
    /* over the cap */
    TK_ASSERT_EQ(wsfiles_put(root, "big", data, 100, getuid(), getgid(), NULL), 0);
    TK_ASSERT_EQ(wsfiles_get(root, "big", 99, &got, &len, NULL), -EFBIG);
    TK_ASSERT_EQ(wsfiles_get(root, "missing", 99, &got, &len, NULL), -ENOENT);
    TK_ASSERT_EQ(wsfiles_get(root, "deep", 99, &got, &len, NULL), -EISDIR);
    TK_ASSERT_EQ(wsfiles_put(root, "deep", "x", 1, getuid(), getgid(), NULL), -EISDIR);
}

TK_TEST(escapes_refused)
{
    int root = workspace();
    char p[200];
    snprintf(p, sizeof p, "%s/outside", base);
    FILE *f = fopen(p, "w");
    TK_ASSERT(f);
    fputs("secret", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/ws/link", base);
    TK_ASSERT(symlink("../outside", p) == 0);
    snprintf(p, sizeof p, "%s/ws/abs", base);
    TK_ASSERT(symlink("/etc/passwd", p) == 0);
    snprintf(p, sizeof p, "%s/ws/dirlink", base);
    TK_ASSERT(symlink("..", p) == 0);
    char *got = NULL;
    size_t len;
    int rc = wsfiles_get(root, "link", 1 << 20, &got, &len, NULL);
    TK_ASSERT(rc == -EXDEV || rc == -ELOOP);
    rc = wsfiles_get(root, "abs", 1 << 20, &got, &len, NULL);
    TK_ASSERT(rc == -EXDEV || rc == -ELOOP);
    rc = wsfiles_put(root, "dirlink/outside2", "x", 1, getuid(), getgid(), NULL);
    TK_ASSERT(rc == -EXDEV || rc == -ELOOP);
    snprintf(p, sizeof p, "%s/outside2", base);
    TK_ASSERT(access(p, F_OK) != 0);
    /* a symlink that stays inside is followed */
    TK_ASSERT_EQ(wsfiles_put(root, "real.txt", "in", 2, getuid(), getgid(), NULL), 0);
    snprintf(p, sizeof p, "%s/ws/inner", base);
    TK_ASSERT(symlink("real.txt", p) == 0);
    TK_ASSERT_EQ(wsfiles_get(root, "inner", 10, &got, &len, NULL), 0);
    TK_ASSERT(len == 2 && !memcmp(got, "in", 2));
    free(got);
    /* a FIFO is not read (and does not hang) */
    snprintf(p, sizeof p, "%s/ws/fifo", base);
    TK_ASSERT(mkfifo(p, 0644) == 0);
    TK_ASSERT_EQ(wsfiles_get(root, "fifo", 10, &got, &len, NULL), -EPERM);
    /* removing the link removes the link, not its target */
    TK_ASSERT_EQ(wsfiles_remove(root, "link"), 0);
    snprintf(p, sizeof p, "%s/outside", base);
    TK_ASSERT(access(p, F_OK) == 0);
}

TK_TEST(list_and_remove)
{
    int root = workspace();
    TK_ASSERT_EQ(wsfiles_put(root, "b.txt", "bb", 2, getuid(), getgid(), NULL), 0);
    TK_ASSERT_EQ(wsfiles_put(root, "a/x.txt", "x", 1, getuid(), getgid(), NULL), 0);
    json_t *items = NULL;
    int trunc = 0;
    TK_ASSERT_EQ(wsfiles_list(root, "", &items, &trunc), 0);
    TK_ASSERT_EQ(json_array_size(items), 2);
    TK_ASSERT(!strcmp(json_string_value(json_object_get(json_array_get(items, 0), "name")), "a"));
    TK_ASSERT(!strcmp(json_string_value(json_object_get(json_array_get(items, 0), "type")), "dir"));
    TK_ASSERT_EQ(json_integer_value(json_object_get(json_array_get(items, 1), "size")), 2);
    json_decref(items);
    TK_ASSERT_EQ(wsfiles_list(root, "a", &items, &trunc), 0);
    TK_ASSERT(
        !strcmp(json_string_value(json_object_get(json_array_get(items, 0), "path")), "a/x.txt"));
    json_decref(items);
    TK_ASSERT_EQ(wsfiles_list(root, "nope", &items, &trunc), -ENOENT);
    TK_ASSERT_EQ(wsfiles_remove(root, "a"), -ENOTEMPTY);
    TK_ASSERT_EQ(wsfiles_remove(root, "a/x.txt"), 0);
    TK_ASSERT_EQ(wsfiles_remove(root, "a"), 0);
    TK_ASSERT_EQ(wsfiles_remove(root, "a"), -ENOENT);
}

TK_TEST(changed_since)
{
    int root = workspace();
    TK_ASSERT_EQ(wsfiles_put(root, "old.txt", "o", 1, getuid(), getgid(), NULL), 0);
    json_t *snap = wsfiles_snapshot(root);
    TK_ASSERT_EQ(json_object_size(snap), 1);
    /* right away, within the same clock tick: a new file and a grown one show */
    TK_ASSERT_EQ(wsfiles_put(root, "new/one.txt", "n", 1, getuid(), getgid(), NULL), 0);
    json_t *after = NULL;
    json_t *c = wsfiles_changed(root, snap, &after);
    TK_ASSERT_EQ(json_array_size(c), 1);
    TK_ASSERT(
        !strcmp(json_string_value(json_object_get(json_array_get(c, 0), "path")), "new/one.txt"));
    json_decref(c);
    /* nothing since: nothing changed */
    c = wsfiles_changed(root, after, NULL);
    TK_ASSERT_EQ(json_array_size(c), 0);
    json_decref(c);
    /* replaced (a new inode) */
    TK_ASSERT_EQ(wsfiles_put(root, "old.txt", "p", 1, getuid(), getgid(), NULL), 0);
    c = wsfiles_changed(root, after, NULL);
    TK_ASSERT_EQ(json_array_size(c), 1);
    json_decref(c);
    json_decref(snap);
    json_decref(after);
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
