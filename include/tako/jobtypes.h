/*
 * jobtypes.h — environments: what a job type's image holds, how it is built, and the
 * cached images of runtime requirements.
 *
 * A job type NAME (config.h, [job_type.NAME]) runs in the image tako-vm-NAME. Building it
 * (POST /job-types/NAME/build, or the executor never: a job of a type whose image is
 * missing fails with image_not_built) is one `docker build` of a generated Dockerfile on
 * top of its base_image (docker.image unless set): Debian packages with apt from the
 * mirror the base image was debootstrapped from, pip requirements from
 * [environments] pip_index_url or wheelhouse — or, with neither, Debian's python3-NAME
 * package for each requirement. The build runs with the host's network (the Debian mirror
 * is reached as the host reaches it); jobs never get it unless network_enabled.
 *
 * Versions. An image's version is the first 12 hex digits of its id (sha256 of its
 * config): the same content gives the same version, another content another. A build
 * tags tako-vm-NAME:latest and tako-vm-NAME:<version>; the acceptor records the version
 * in PostgreSQL (job_type_builds), and a job asking for NAME@<version> runs exactly that
 * tag — never the latest.
 *
 * Runtime requirements (environments.allow_runtime_requirements): a job's `requirements`
 * are installed into a derived image tako-req-<16 hex>:latest, named by
 * sha256(base image id + the sorted set). The first job with a set builds it (counted
 * against its startup_timeout); every later job with the same set on the same base finds
 * it and pays nothing. pip runs with --only-binary=:all:, so no package's code runs while
 * it is installed.
 */
#ifndef TAKO_JOBTYPES_H
#define TAKO_JOBTYPES_H

#include "tako/config.h"
#include "tako/docker.h"

#include <stdbool.h>
#include <stddef.h>

#define JOBTYPE_MAX_REQUIREMENTS 50
#define JOBTYPE_REQUIREMENT_MAX  100 /* bytes in one requirement */
#define JOBTYPE_VERSION_LEN      12

/* Call fn(item, len) for each trimmed, non-empty item of a comma-separated list; stops at
 * the first non-zero return and gives it back. */
int jobtype_each(const char *list, int (*fn)(const char *item, size_t len, void *arg), void *arg);

/* A requirement: NAME[extras][specifiers], e.g. "pandas", "numpy>=1.24,<2",
 * "requests[socks]==2.31.0" (a PEP 508 subset: no URLs, markers or blanks). */
bool jobtype_requirement_ok(const char *s, size_t len);

/* Check a job type's lists (requirements, packages, environment, base_image). 0 or
 * -EINVAL with the reason in why. */
int jobtype_check(const struct tk_job_type *t, char *why, size_t wl);

/* "name" or "name@version". version: "latest"; 12 hex digits (an image's version, also
 * written sha256:<12 hex>, as Tako VM does, which is stored without the prefix); or a
 * version_tag given to a build ([A-Za-z0-9._-], at most JOBTYPE_TAG_MAX, not all hex),
 * resolved by the acceptor. 0 or -EINVAL; version is "" when none was given. */
#define JOBTYPE_TAG_MAX         40
#define JOBTYPE_REF_MAX         63 /* the whole ref: it travels in tk_job.job_type[64] */
#define JOBTYPE_REF_VERSION_MAX JOBTYPE_TAG_MAX
int jobtype_parse_ref(const char *ref, char name[TK_JOB_TYPE_NAME_MAX + 1],
                      char version[JOBTYPE_REF_VERSION_MAX + 1]);
/* The configured job type a ref names (its version into `version` when not NULL), or NULL
 * when the ref is malformed or the type is not configured. */
const struct tk_job_type *jobtype_lookup(const struct tk_config *cfg, const char *ref,
                                         char version[JOBTYPE_REF_VERSION_MAX + 1]);

/* A version_tag for a build: [A-Za-z0-9._-], 1..JOBTYPE_TAG_MAX, not "latest" and not 12
 * hex digits (those name image versions). */
bool jobtype_tag_ok(const char *tag);

/* The image a job of type t runs: `default` is docker.image; else tako-vm-NAME:VERSION
 * (VERSION "" or "latest": the latest build). */
void jobtype_image(const struct tk_config *cfg, const struct tk_job_type *t, const char *version,
                   char *buf, size_t len);

/* A job type's build: the generated Dockerfile, for `tako` and the tests to show. The
 * caller frees it. */
char *jobtype_dockerfile(const struct tk_config *cfg, const struct tk_job_type *t);

struct jobtype_build_result {
    char image_id[80];  /* sha256:... */
    char version[16];   /* its first 12 hex digits */
    char image_ref[96]; /* tako-vm-NAME:VERSION */
    double seconds;
    char log_tail[2048]; /* the build's last output lines (the reason, on failure) */
};

/* Build tako-vm-NAME for t (blocking; bounded by environments.build_timeout). progress
 * gets every output line. 0, or -errno with the reason in docker_last_error(d) and the
 * output's tail in out->log_tail. */
int jobtype_build(struct docker *d, const struct tk_config *cfg, const struct tk_job_type *t,
                  void (*progress)(const char *line, void *arg), void *arg,
                  struct jobtype_build_result *out);

/*
 * The image with `reqs` installed on top of `base` (built when missing, within
 * timeout_ms). image gets its name; *built says whether this call built it. 0, or -errno
 * with the installer's message in err.
 */
int jobtype_requirements_image(struct docker *d, const struct tk_config *cfg, const char *base,
                               const char *const *reqs, size_t n, long timeout_ms, char *image,
                               size_t image_len, bool *built, char *err, size_t errlen);

/* Remove the oldest cached requirement images beyond environments.max_requirement_images
 * (images in use stay). Returns how many were removed, or -errno. */
int jobtype_prune_requirement_images(struct docker *d, const struct tk_config *cfg);

#endif
