/*
 * docker.h — a small Docker Engine API client over the engine's unix socket.
 *
 * Three files: the transport (common/dkhttp.c: one HTTP/1.1 client, kept connections,
 * the handle's open and close), the container and system endpoints (common/docker.c) and
 * the image endpoints (common/docker_image.c); the engine's stream framing is
 * common/dkframe.c's, the capped buffer common/capbuf.c's.
 *
 * One `struct docker` per process (never shared across fork): it keeps its connections to
 * the engine open between calls. At open it
 * negotiates the API version with the unversioned GET /version (min of what takod knows,
 * 1.41, and the engine's ApiVersion; never below the engine's MinAPIVersion), and every
 * later call goes to /v<version>/... .
 *
 * All calls return 0 on success or a negative errno:
 *   -ECONNREFUSED engine not reachable (socket missing or refused)
 *   -ENOENT   HTTP 404 (no such container / image)
 *   -EEXIST   HTTP 409 (name in use, or container already in that state)
 *   -EINVAL   HTTP 400 (bad parameters)
 *   -ETIMEDOUT the call's deadline passed (docker_wait with a timeout)
 *   -EIO      any other HTTP error or a malformed answer
 * and leave a one-line reason (the engine's "message" when it sent one) in
 * docker_last_error(). Nothing here logs; callers log with the container named.
 */
#ifndef TAKO_DOCKER_H
#define TAKO_DOCKER_H

#include "tako/capbuf.h"

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

struct docker;

/* Connect to `socket_path` and negotiate the version. 0 or -errno (see above). On failure
 * *out is NULL and docker_last_error(NULL) says why (kept per thread). Not thread-safe:
 * one handle per process, never shared across fork. Ids and names are checked against
 * [A-Za-z0-9][A-Za-z0-9_.-]* before any request (-EINVAL). */
int docker_open(struct docker **out, const char *socket_path);
void docker_close(struct docker *d);
const char *docker_last_error(const struct docker *d);
const char *docker_api_version(const struct docker *d); /* e.g. "1.41" */
/* Put back a reason a later call overwrote (cleanup after a failure). */
void docker_set_error(struct docker *d, const char *msg);

/* While *flag is non-zero, a docker_wait in progress (or started) returns -EINTR within
 * about a second: how an executor leaves a wait when it is told to stop or cancel. */
void docker_set_abort_flag(struct docker *d, volatile sig_atomic_t *flag);

/* An image reference takod will send: [A-Za-z0-9._/:@-], at most 255, starting with a
 * letter or digit, no component starting with '.' or '/'. Every call taking an image
 * checks this (-EINVAL). */
bool docker_image_name_ok(const char *image);

/* An image id's short form, as `docker images` shows it: "sha256:446073ed6951..." ->
 * "446073ed6951" (NULL -> "?"). */
void docker_short_id(const char *id, char out[13]);

/* GET /_ping: 0 when the engine answers. */
int docker_ping(struct docker *d);

/* GET /images/{name}/json: 1 present, 0 absent, <0 error. */
int docker_image_exists(struct docker *d, const char *image);

/* GET /images/{name}/json; *out is a new reference. Absent -> -ENOENT. */
int docker_image_inspect(struct docker *d, const char *image, json_t **out);

/* GET /info; *out is a new reference. */
int docker_info(struct docker *d, json_t **out);

/* GET /info -> Runtimes has `name`: 1 yes, 0 no, <0 error. */
int docker_has_runtime(struct docker *d, const char *name);

/*
 * POST /containers/create?name=NAME (name may be NULL) with the JSON `body` (not stolen).
 * On success the 64-hex container id is copied to id (65 bytes).
 */
int docker_create(struct docker *d, const char *name, const json_t *body, char id[65]);
/* The same with the body already serialized (a JSON object's text). */
int docker_create_text(struct docker *d, const char *name, const char *text, char id[65]);

/* POST /containers/{id}/start. An already started container is -EEXIST (304 from engine). */
int docker_start(struct docker *d, const char *id);

/*
 * POST /containers/{id}/wait?condition=not-running, bounded by timeout_ms (<= 0: no bound).
 * On success *status_code is the container's exit code. -ETIMEDOUT when the bound passed
 * (the container is still running; the caller kills it).
 */
int docker_wait(struct docker *d, const char *id, int timeout_ms, int *status_code);

/* POST /containers/{id}/kill?signal=SIG (e.g. "SIGKILL"). Not running -> -EEXIST. */
int docker_kill(struct docker *d, const char *id, const char *signal);

/* GET /containers/{id}/json; *out is a new reference the caller json_decref()s. */
int docker_inspect(struct docker *d, const char *id, json_t **out);

/*
 * GET /containers/{id}/logs?stdout=1&stderr=1 and demultiplex the 8-byte framed stream
 * (stream 1 -> out, 2 -> err; headers may be split across reads) into the two capped
 * buffers. Only for containers created with Tty false.
 */
int docker_logs(struct docker *d, const char *id, struct tk_capbuf *out, struct tk_capbuf *err);

/*
 * POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 with "Upgrade: tcp" on a
 * connection of its own: on success *fd is the raw (hijacked) stream — write to it for the
 * container's stdin; read the container's stdout/stderr from it, in the same 8-byte framed
 * format as docker_logs when Tty is false. The caller closes it. timeout_ms bounds the
 * handshake.
 */
int docker_attach(struct docker *d, const char *id, int timeout_ms, int *fd);

/*
 * GET /containers/{id}/export: the container's filesystem as a tar stream, handed to
 * consume as it arrives (never held in memory; consume's -errno stops the call). Bounded
 * by timeout_ms in all (0: no bound) and stall_s without a byte.
 */
int docker_export(struct docker *d, const char *id, long stall_s, long timeout_ms,
                  int (*consume)(void *ctx, const char *p, size_t n), void *ctx);

/* DELETE /containers/{id}?force=1&v=1 (force kills a running one). Absent -> -ENOENT. */
int docker_remove(struct docker *d, const char *id);

/*
 * The same two calls without waiting for the engine: the request is sent on a connection
 * of its own, *fd (poll it for POLLIN) brings the answer, and docker_async_finish reads it
 * and closes fd: 0 (a start of a running container counts), -ENOENT, -ETIMEDOUT, -EINTR
 * (a signal, with the abort flag set), or -EIO with the engine's message in
 * docker_last_error().
 */
int docker_start_async(struct docker *d, const char *id, int *fd);
int docker_remove_async(struct docker *d, const char *id, int *fd);
int docker_async_finish(struct docker *d, int fd, int timeout_ms);

/*
 * GET /containers/json?all=1&filters={"label":["LABEL"]} where `label` is "key=value" or
 * "key". *ids is a new JSON array of id strings.
 */
int docker_list_by_label(struct docker *d, const char *label, json_t **ids);

/* The same, as [{"id": ..., "labels": {...}}]. */
int docker_list_with_labels(struct docker *d, const char *label, json_t **items);

/*
 * POST /build with `tar` (a build context with a Dockerfile) as the body. The build's
 * progress lines go to o->progress; the engine's build error (which arrives inside a 200
 * answer) becomes -EIO with its message in docker_last_error(). On success image_id
 * (80 bytes) is "sha256:<hex>".
 */
struct docker_build_opts {
    const char *tag;     /* repository:tag the image gets */
    const char *network; /* networkmode of the build's RUN steps: "none", "host", ... */
    json_t *labels;      /* {key: value} or NULL (not stolen) */
    bool nocache;
    long timeout_ms; /* 0: no bound */
    void (*progress)(const char *text, void *arg);
    void *progress_arg;
};
int docker_build(struct docker *d, const void *tar, size_t len, const struct docker_build_opts *o,
                 char image_id[80]);

/* GET /images/json?filters={"label":["LABEL"]} (label NULL: every image, as `docker
 * images` lists them): *images is the engine's array ([{Id, Created, RepoTags, ...}]), a
 * new reference. */
int docker_images_by_label(struct docker *d, const char *label, json_t **images);

/* DELETE /images/{image} (not forced: an image a container uses is -EEXIST). */
int docker_image_remove(struct docker *d, const char *image);

/*
 * docker pull: POST /images/create?fromImage=NAME&tag=TAG for the reference `ref` (tag
 * "latest" when it has none). Each progress message ({"status", "id", "progressDetail"})
 * goes to on_message. Bounded by timeout_ms in all and by stall_s without a byte
 * (-ETIMEDOUT). A failed pull is -EIO with the engine's message.
 */
int docker_pull(struct docker *d, const char *ref, long stall_s, long timeout_ms,
                void (*on_message)(const json_t *msg, void *arg), void *arg);

/* POST /images/{image}/tag?repo=REPO&tag=TAG */
int docker_tag(struct docker *d, const char *image, const char *repo, const char *tag);

#endif
