/* DEV SHIM */
#include "tako/rootfs.h"
#include <stdio.h>
int rootfs_ensure(struct docker *d, const char *store_dir, const char *image, char *path,
                  size_t pathlen, char *err, size_t errlen)
{
    (void)d; (void)store_dir; (void)image; (void)err; (void)errlen;
    snprintf(path, pathlen, "/tmp/oci/rootfs");
    return 0;
}
