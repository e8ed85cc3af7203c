/* DEV SHIM — replaced by the helper's rootfs module */
#ifndef TAKO_ROOTFS_H
#define TAKO_ROOTFS_H
#include "tako/docker.h"
#include <stddef.h>
int rootfs_ensure(struct docker *d, const char *store_dir, const char *image, char *path,
                  size_t pathlen, char *err, size_t errlen);
#endif
