/*
 * dkhttp.h — the HTTP/1.1 client takod speaks to the Docker engine with, over the engine's
 * unix socket. Internal to the engine client: only common/docker*.c include it; everyone
 * else uses docker.h.
 *
 * One client, three ways to send:
 *   - dk_do: a request on a kept connection, its answer read whole (Content-Length,
 *     chunked, or up to the end of the stream) into a buffer, or streamed to a consumer
 *     (logs, build and pull progress). Bounded by a total deadline, a stall bound, and an
 *     abort flag.
 *   - dk_send + dk_finish: a request on a connection of its own, written now and its
 *     answer read later (an executor's container start and remove, off its job's path).
 *   - dk_hijack: the attach stream: the answer's head is read and the connection becomes
 *     the container's raw stdio.
 * Answers are decoded by one incremental parser (struct dk_parse), fed whatever each read
 * brought: what the fuzzer tests/fuzz/fuzz_docker.c drives.
 *
 * Errors: -errno, with a one-line reason in d->err (dk_seterr); nothing here logs.
 */
#ifndef TAKO_DKHTTP_H
#define TAKO_DKHTTP_H

#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DK_ERR_LEN      512
#define DK_MAX_NAME     255
#define DK_MAX_HEAD     16384u      /* longest answer head accepted */
#define DK_MAX_BODY     (16u << 20) /* largest answer read into memory */
#define DK_MAX_ERR_BODY (64u << 10) /* largest error body kept for the reason */
#define DK_MSG_LEN      300         /* the engine's message is cut to this many bytes */
#define DK_TIMEOUT_MS   30000L      /* a call's default bound */

/* The kept connections: the create has one of its own (it is on every job's path and its
 * answers are small; a streamed or abandoned answer on the other never costs it a
 * reconnect), everything else shares the other. */
enum dk_lane { DK_LANE_MAIN, DK_LANE_CREATE, DK_LANES };

struct docker {
    char *socket_path;
    char version[16]; /* negotiated at open: requests go to /v<version>/... */
    char err[DK_ERR_LEN];
    volatile sig_atomic_t *abort_flag; /* non-zero: abort an abortable call (-EINTR) */
    int fd[DK_LANES];                  /* kept connections, or -1 */
};

/* A growable buffer with a limit (-EFBIG beyond it); p is NUL-terminated when set. */
struct dk_buf {
    char *p;
    size_t len, alloc, limit;
};
int dk_buf_add(struct dk_buf *b, const char *p, size_t n);

/* A consumer of a 2xx answer's body as it arrives; 0, or -errno to abort the call. */
typedef int (*dk_stream_fn)(void *ctx, const char *p, size_t n);

/* When an abort flag is honoured. */
enum dk_abort {
    DK_ABORT_NEVER,     /* signals are retried */
    DK_ABORT_ON_SIGNAL, /* a signal with the flag set ends the call */
    DK_ABORT_POLL,      /* the flag is looked at every second, and on a signal */
};

struct dk_req {
    const char *method; /* "GET", "POST", "DELETE" */
    const char *path;   /* "/containers/json?all=1" (after /v<version> unless unversioned) */
    bool unversioned;   /* only GET /version */
    const void *body;   /* POST only: body_len bytes of content_type, or NULL */
    size_t body_len;
    const char *content_type; /* NULL: application/json */
    long timeout_ms;          /* 0: no bound */
    long stall_s;             /* > 0: -ETIMEDOUT when no byte arrives for this long */
    dk_stream_fn stream;      /* optional 2xx body consumer */
    void *stream_ctx;
    struct dk_buf *answer; /* optional: receives the 2xx body (caller frees ->p) */
    enum dk_abort abort;
    enum dk_lane lane;
};

/* Run one request on its lane's kept connection (made, or made again once when the engine
 * closed it while idle). The HTTP status (> 0) of a 2xx answer, else -errno with d->err
 * set: -ECONNREFUSED, -ETIMEDOUT, -EINTR, -ENOMEM, or the status mapped (-ENOENT 404,
 * -EEXIST 409 and 304, -EINVAL 400, -EIO) with the engine's message kept. */
int dk_do(struct docker *d, const struct dk_req *q);
/* A request whose 2xx answer must be JSON; *out is a new reference. */
int dk_json(struct docker *d, const struct dk_req *q, json_t **out);

/* METHOD path on a new connection with `extra` header lines, written and not waited for:
 * *fd brings the answer (read it with dk_finish, or take it over with dk_hijack). */
int dk_send(struct docker *d, const char *method, const char *path, const char *extra,
            int timeout_ms, int *fd);
/* The answer on fd (sent with dk_send and "Connection: close"), within timeout_ms; fd is
 * closed. 0 for a 2xx or 304, else -errno (see docker_async_finish). */
int dk_finish(struct docker *d, int fd, int timeout_ms);
/* Read the answer head on fd and nothing after it; on 101 or 200 the connection is the
 * raw stream (blocking, no timeouts), else it is closed: -ENOENT (404) or -EIO. `what`
 * names the object in d->err. */
int dk_hijack(struct docker *d, int fd, const char *what);

/* URL-encode s (RFC 3986: all but A-Z a-z 0-9 - . _ ~); malloc'd, NULL when out of memory. */
char *dk_escape(const char *s);

__attribute__((format(printf, 2, 3))) void dk_seterr(struct docker *d, const char *fmt, ...);
void dk_one_line(char *s);

/* "<base>filters={"label":["LABEL"]}" (escaped) into *path (malloc'd). 0 or -errno. Shared
 * by the container and image listings. */
int dk_label_path(struct docker *d, const char *base, const char *label, char **path);

/* ---- the answer parser ---- */

struct dk_parse {
    int state; /* where in the answer (dkhttp.c) */
    char head[DK_MAX_HEAD];
    size_t head_len;
    long code;      /* the status */
    bool close;     /* Connection: close */
    bool chunked;   /* Transfer-Encoding: chunked */
    bool until_eof; /* neither: the end of the stream ends the body */
    uint64_t left;  /* body or chunk bytes still to come */
    char line[24];  /* a chunk-size line so far */
    size_t line_len;
    uint64_t body_bytes; /* body bytes passed on */
};

/* A body sink: 0, or -errno to stop. */
typedef int (*dk_body_fn)(void *arg, const char *p, size_t n);

void dk_parse_init(struct dk_parse *p);
/* Feed n bytes; *used says how many belong to this answer. 1: the answer is whole (bytes
 * after *used are the next answer's); 0: more to come; -EIO: malformed; or the sink's
 * -errno. The body's bytes (dechunked) go to body (p->code is known by then). */
int dk_parse_feed(struct dk_parse *p, const char *buf, size_t n, size_t *used, dk_body_fn body,
                  void *arg);
/* The stream ended: 1 when that ends the answer (a body read to the end of the stream),
 * else -EIO (cut short). */
int dk_parse_eof(const struct dk_parse *p);

#endif
