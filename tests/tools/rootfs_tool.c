/*
 * rootfs_tool.c — common/rootfs.c driven from the command line, for
 * tests/integration/test_rootfs.py only (built for the tests, never installed):
 *
 *   rootfs_tool ensure STORE IMAGE UID GID   prints the rootfs path and "ms=N"
 *   rootfs_tool lookup STORE IMAGE_ID        prints the path; exit 1 when there is none
 *   rootfs_tool prune STORE [KEEP_ID...]     prints how many it removed
 *
 * The engine is at $DOCKER_SOCKET (default /var/run/docker.sock). Exit 0, or 1 with the
 * reason on stderr.
 */
#include "tako/log.h"
#include "tako/rootfs.h"
#include "tako/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    log_set_role("rootfs_tool");
    char path[4096], err[1024] = "";
    if (argc == 4 && strcmp(argv[1], "lookup") == 0) {
        if (rootfs_lookup(argv[2], argv[3], path, sizeof path) < 0)
            return 1;
        printf("%s\n", path);
        return 0;
    }
    bool ensure = argc == 6 && strcmp(argv[1], "ensure") == 0;
    bool prune = argc >= 3 && strcmp(argv[1], "prune") == 0;
    if (!ensure && !prune) {
        fprintf(stderr, "usage: rootfs_tool ensure STORE IMAGE UID GID | lookup STORE ID | "
                        "prune STORE [KEEP_ID...]\n");
        return 2;
    }
    const char *sock = getenv("DOCKER_SOCKET") ? getenv("DOCKER_SOCKET") : "/var/run/docker.sock";
    struct docker *d = NULL;
    if (docker_open(&d, sock) < 0) {
        fprintf(stderr, "docker_open %s: %s\n", sock, docker_last_error(NULL));
        return 1;
    }
    int rc;
    if (ensure) {
        uint64_t t0 = now_mono_ms();
        rc = rootfs_ensure(d, argv[2], argv[3], (uid_t)atol(argv[4]), (gid_t)atol(argv[5]), path,
                           sizeof path, err, sizeof err);
        if (rc == 0)
            printf("%s\nms=%llu\n", path, (unsigned long long)(now_mono_ms() - t0));
    } else {
        rc = rootfs_prune(d, argv[2], (const char *const *)argv + 3, (size_t)argc - 3, err,
                          sizeof err);
        if (rc >= 0)
            printf("%d\n", rc);
    }
    docker_close(d);
    if (rc < 0)
        fprintf(stderr, "%s\n", err);
    return rc < 0 ? 1 : 0;
}
