/*
 * dkhttp.c — the engine client's transport: HTTP/1.1 over the engine's unix socket (see
 * dkhttp.h), and the handle's life (docker_open negotiates the API version, docker_close).
 *
 * Design. The engine is one local peer that speaks plain HTTP/1.1, so takod needs little
 * of a general client: no TLS, no redirects, no proxies, no name resolution. What it needs
 * is written here once: a connection kept between calls (per lane, dkhttp.h), made again
 * once when the engine closed it while idle (a write that fails before any byte went, or
 * an end of stream before any byte of the answer came: the engine never saw the request);
 * an answer cut short after its first byte is an error, never a second request. Every wait
 * is a poll() bounded by the call's deadline, its stall bound and, for a wait on a
 * container, the abort flag. Sockets are non-blocking on the kept lanes; the raw ones
 * (dk_send, dk_hijack) are blocking with socket timeouts, as their callers read them.
 *
 * A call that fails before its answer is whole (a timeout, an abort, a malformed answer, a
 * consumer that stops) drops its connection: what is left of the answer must not be read
 * as the next one's. An error status with a whole answer keeps the connection.
 *
 * The answer parser (dk_parse_*) is incremental and keeps only the head: Content-Length,
 * chunked (with extensions and trailers), or a body up to the end of the stream; it is fed
 * what each read brings, and hands the body on as it comes.
 */
#include "tako/dkhttp.h"
#include "tako/docker.h"
#include "tako/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define DK_MAX_MAJOR          1
#define DK_MAX_MINOR          41 /* newest API version takod knows */
#define DK_CONNECT_TIMEOUT_MS 2000

static _Thread_local char dk_open_err[DK_ERR_LEN];

/* ---------------------------------------------------------------------------------------- */
/* errors                                                                                   */

/* Make a reason one line: control characters (newlines included) become spaces. */
void dk_one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

void dk_seterr(struct docker *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    dk_one_line(d->err);
}

const char *docker_last_error(const struct docker *d)
{
    return d ? d->err : dk_open_err;
}

void docker_set_error(struct docker *d, const char *msg)
{
    snprintf(d->err, sizeof d->err, "%s", msg);
}

const char *docker_api_version(const struct docker *d)
{
    return d->version;
}

void docker_set_abort_flag(struct docker *d, volatile sig_atomic_t *flag)
{
    d->abort_flag = flag;
}

static bool dk_aborted(const struct docker *d)
{
    return d->abort_flag && *d->abort_flag;
}

/* Copy the engine's {"message": "..."} (or the raw body's start) into msg. */
static void dk_engine_message(const struct dk_buf *b, char *msg, size_t msglen)
{
    msg[0] = '\0';
    if (!b->p || b->len == 0)
        return;
    json_t *j = json_loadb(b->p, b->len, 0, NULL);
    const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
    if (m)
        snprintf(msg, msglen, "%s", m);
    else
        snprintf(msg, msglen, "%.*s", (int)(b->len < msglen ? b->len : msglen - 1), b->p);
    json_decref(j);
    dk_one_line(msg);
}

static int dk_status_errno(long code)
{
    switch (code) {
    case 304: /* not modified: container already started / stopped */
    case 409:
        return -EEXIST;
    case 404:
        return -ENOENT;
    case 400:
        return -EINVAL;
    default:
        return -EIO;
    }
}

/* An engine's non-2xx answer to METHOD path: its message into d->err; -errno. */
static int dk_http_error(struct docker *d, const char *method, const char *path, long code,
                         const struct dk_buf *body)
{
    char msg[DK_MSG_LEN + 1];
    dk_engine_message(body, msg, sizeof msg);
    if (code == 304 && !msg[0])
        snprintf(msg, sizeof msg, "container already in that state");
    dk_seterr(d, "%s %s: HTTP %ld: %s", method, path, code, msg[0] ? msg : "(no message)");
    return dk_status_errno(code);
}

int dk_buf_add(struct dk_buf *b, const char *p, size_t n)
{
    if (b->len + n > b->limit)
        return -EFBIG;
    if (b->len + n + 1 > b->alloc) {
        size_t a = b->alloc ? b->alloc : 4096;
        while (a < b->len + n + 1)
            a *= 2;
        char *np = realloc(b->p, a);
        if (!np)
            return -ENOMEM;
        b->p = np;
        b->alloc = a;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

char *dk_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(s) * 3 + 1), *o = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            *o++ = (char)*p;
        } else {
            *o++ = '%';
            *o++ = hex[*p >> 4];
            *o++ = hex[*p & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* the answer parser                                                                        */

enum { P_HEAD, P_LEN, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END, P_TRAILER, P_EOF, P_DONE };

void dk_parse_init(struct dk_parse *p)
{
    p->state = P_HEAD;
    p->head_len = 0;
    p->code = 0;
    p->close = p->chunked = p->until_eof = false;
    p->left = 0;
    p->line_len = 0;
    p->body_bytes = 0;
}

/* A Content-Length value (after the colon): optional blanks, 1 to 18 decimal digits,
 * optional blanks, then the line's end. 0 or -EIO. */
static int dk_content_length(const char *v, const char *eol, uint64_t *out)
{
    v += strspn(v, " \t");
    size_t digits = strspn(v, "0123456789");
    if (digits == 0 || digits > 18)
        return -EIO;
    uint64_t n = 0;
    for (size_t i = 0; i < digits; i++)
        n = n * 10 + (uint64_t)(v[i] - '0');
    v += digits;
    v += strspn(v, " \t");
    if (v != eol)
        return -EIO;
    *out = n;
    return 0;
}

/* The value of header line `line` (up to eol) when its name is `name`, else NULL. */
static const char *dk_header(const char *line, const char *eol, const char *name)
{
    size_t n = strlen(name);
    if ((size_t)(eol - line) <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    return line + n + 1;
}

/* The head (p->head, NUL-terminated, ending in the blank line's CRLF CRLF): the status and
 * how the body is delimited. 0 or -EIO. */
static int dk_parse_head(struct dk_parse *p)
{
    const char *h = p->head;
    if (memchr(h, '\0', p->head_len)) /* (the searches below stop at a NUL) */
        return -EIO;
    if (strncmp(h, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)h[7]) || h[8] != ' ' ||
        h[9] < '1' || h[9] > '5' || !isdigit((unsigned char)h[10]) ||
        !isdigit((unsigned char)h[11]) || (h[12] != ' ' && h[12] != '\r'))
        return -EIO;
    p->code = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
    bool has_len = false;
    uint64_t len = 0;
    for (const char *line = strstr(h, "\r\n") + 2; *line && strncmp(line, "\r\n", 2) != 0;) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            return -EIO;
        const char *v;
        if ((v = dk_header(line, eol, "Content-Length"))) {
            if (has_len || dk_content_length(v, eol, &len) < 0)
                return -EIO;
            has_len = true;
        } else if ((v = dk_header(line, eol, "Transfer-Encoding"))) {
            for (; v + 7 <= eol && !p->chunked; v++)
                p->chunked = strncasecmp(v, "chunked", 7) == 0;
        } else if ((v = dk_header(line, eol, "Connection"))) {
            for (; v + 5 <= eol && !p->close; v++)
                p->close = strncasecmp(v, "close", 5) == 0;
        }
        line = eol + 2;
    }
    if (p->code < 200 || p->code == 204 || p->code == 304)
        p->state = P_DONE; /* no body */
    else if (p->chunked)
        p->state = P_CHUNK_SIZE;
    else if (has_len)
        p->state = len ? P_LEN : P_DONE, p->left = len;
    else
        p->state = P_EOF, p->until_eof = true;
    return 0;
}

/* A chunk-size line (without its LF): 1 to 8 hex digits, then CR, or ';' and an extension.
 * 0 or -EIO. */
static int dk_chunk_size(struct dk_parse *p)
{
    size_t digits = 0;
    uint64_t sz = 0;
    while (digits < p->line_len && isxdigit((unsigned char)p->line[digits])) {
        char c = p->line[digits++];
        sz = sz * 16 + (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    if (digits == 0 || digits > 8 || digits == p->line_len ||
        (p->line[digits] != ';' && (p->line[digits] != '\r' || digits + 1 != p->line_len)))
        return -EIO;
    p->left = sz;
    p->state = sz ? P_CHUNK_DATA : P_TRAILER;
    return 0;
}

static int dk_pass(struct dk_parse *p, const char *b, size_t n, dk_body_fn body, void *arg)
{
    p->body_bytes += n;
    return body ? body(arg, b, n) : 0;
}

int dk_parse_feed(struct dk_parse *p, const char *buf, size_t n, size_t *used, dk_body_fn body,
                  void *arg)
{
    size_t i = 0;
    int rc = 0;
    while (i < n && p->state != P_DONE) {
        switch (p->state) {
        case P_HEAD: {
            size_t from = p->head_len > 3 ? p->head_len - 3 : 0;
            size_t take = n - i;
            if (take > DK_MAX_HEAD - 1 - p->head_len)
                take = DK_MAX_HEAD - 1 - p->head_len;
            memcpy(p->head + p->head_len, buf + i, take);
            p->head_len += take;
            p->head[p->head_len] = '\0';
            const char *end = memmem(p->head + from, p->head_len - from, "\r\n\r\n", 4);
            if (!end) {
                if (p->head_len == DK_MAX_HEAD - 1)
                    return -EIO; /* a head this long is not the engine's */
                i += take;
                break;
            }
            size_t hl = (size_t)(end - p->head) + 4;
            i += take - (p->head_len - hl); /* the rest is the body's */
            p->head_len = hl;
            p->head[hl] = '\0';
            if (dk_parse_head(p) < 0)
                return -EIO;
            break;
        }
        case P_LEN:
        case P_CHUNK_DATA:
        case P_EOF: {
            size_t take = n - i;
            if (p->state != P_EOF && take > p->left)
                take = (size_t)p->left;
            if ((rc = dk_pass(p, buf + i, take, body, arg)) < 0)
                return rc;
            i += take;
            if (p->state != P_EOF && (p->left -= take) == 0)
                p->state = p->state == P_LEN ? P_DONE : P_CHUNK_END;
            break;
        }
        case P_CHUNK_END: /* the CRLF after a chunk's data */
            if (buf[i++] != "\r\n"[p->line_len])
                return -EIO;
            if (++p->line_len == 2) {
                p->line_len = 0;
                p->state = P_CHUNK_SIZE;
            }
            break;
        case P_CHUNK_SIZE:
        case P_TRAILER: {
            char c = buf[i++];
            if (c != '\n') {
                if (p->line_len < sizeof p->line)
                    p->line[p->line_len++] = c;
                else if (p->state == P_CHUNK_SIZE && !memchr(p->line, ';', p->line_len))
                    return -EIO; /* no size is this long */
                break;
            }
            if (p->state == P_CHUNK_SIZE) {
                if (dk_chunk_size(p) < 0)
                    return -EIO;
            } else if (p->line_len == 0 || (p->line_len == 1 && p->line[0] == '\r')) {
                p->state = P_DONE; /* the blank line after the trailers */
            }
            p->line_len = 0;
            break;
        }
        }
    }
    *used = i;
    return p->state == P_DONE ? 1 : 0;
}

int dk_parse_eof(const struct dk_parse *p)
{
    return p->state == P_EOF || p->state == P_DONE ? 1 : -EIO;
}

/* ---------------------------------------------------------------------------------------- */
/* connections                                                                              */

/* A new connection to the engine's socket into *fd_out, blocking; timeout_ms bounds the
 * connect and the writes, and with `reads` the reads too. 0, or -errno with d->err set
 * (-ECONNREFUSED when the engine is not there). */
static int dk_connect(struct docker *d, int timeout_ms, bool reads, int *fd_out)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        dk_seterr(d, "socket: %s", strerror(e));
        return -e;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", d->socket_path);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    if (reads)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        dk_seterr(d, "cannot connect to the Docker engine at unix://%s: %s", d->socket_path,
                  strerror(errno));
        close(fd);
        return -ECONNREFUSED;
    }
    *fd_out = fd;
    return 0;
}

static void dk_drop(struct docker *d, enum dk_lane lane)
{
    if (d->fd[lane] >= 0)
        close(d->fd[lane]);
    d->fd[lane] = -1;
}

/* Wait for `events` on fd until `until` (monotonic ms; UINT64_MAX: no bound). 0 ready,
 * -ETIMEDOUT, -EINTR (aborted, per ab), or -errno of poll. */
static int dk_wait(struct docker *d, int fd, short events, uint64_t until, enum dk_abort ab)
{
    for (;;) {
        if (ab == DK_ABORT_POLL && dk_aborted(d))
            return -EINTR;
        uint64_t now = now_mono_ms();
        if (now >= until)
            return -ETIMEDOUT;
        uint64_t left = until - now;
        int slice = left > INT_MAX ? INT_MAX : (int)left;
        if (ab == DK_ABORT_POLL && slice > 1000)
            slice = 1000; /* the flag is set by a handler that may not interrupt us */
        struct pollfd pfd = {.fd = fd, .events = events};
        int pr = poll(&pfd, 1, slice);
        if (pr > 0)
            return 0;
        if (pr < 0 && errno == EINTR) {
            if (ab != DK_ABORT_NEVER && dk_aborted(d))
                return -EINTR;
        } else if (pr < 0) {
            return -errno;
        }
    }
}

/* What dk_do's consumer sees: the body, by the answer's status. */
struct dk_call {
    const struct dk_req *q;
    struct dk_parse *p;
    struct dk_buf err; /* an error answer's body (its head) */
    int cb_err;        /* what a consumer stopped the call with */
};

static int dk_call_body(void *arg, const char *b, size_t n)
{
    struct dk_call *c = arg;
    int rc = 0;
    if (c->p->code < 200 || c->p->code >= 300) {
        size_t room = c->err.len < DK_MAX_ERR_BODY ? DK_MAX_ERR_BODY - c->err.len : 0;
        if (room > 0)
            rc = dk_buf_add(&c->err, b, n < room ? n : room);
    } else if (c->q->stream) {
        rc = c->q->stream(c->q->stream_ctx, b, n);
    } else if (c->q->answer) {
        rc = dk_buf_add(c->q->answer, b, n);
    }
    if (rc < 0)
        c->cb_err = rc;
    return rc;
}

/* Write the request (head, then body) on a non-blocking fd. 0, -EPIPE when nothing went
 * (the engine closed the connection), else -errno; *sent says how much went. */
static int dk_write_req(struct docker *d, int fd, const char *head, size_t hlen, const void *body,
                        size_t blen, uint64_t until, enum dk_abort ab, size_t *sent)
{
    struct iovec iov[2] = {{(void *)head, hlen}, {(void *)body, blen}};
    size_t want = hlen + blen;
    *sent = 0;
    while (*sent < want) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            int rc = dk_wait(d, fd, POLLOUT, until, ab);
            if (rc < 0)
                return rc;
            continue;
        }
        if (w <= 0)
            return *sent == 0 ? -EPIPE : -(errno ? errno : EIO);
        *sent += (size_t)w;
        for (int i = 0; i < 2; i++) { /* skip what went */
            size_t k = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;
            iov[i].iov_base = (char *)iov[i].iov_base + k;
            iov[i].iov_len -= k;
            w -= (ssize_t)k;
        }
    }
    return 0;
}

/* A call's failure before its answer was whole: the reason, the connection dropped. */
static int dk_fail(struct docker *d, const struct dk_req *q, int rc, int cb_err)
{
    dk_drop(d, q->lane);
    switch (rc) {
    case -ETIMEDOUT:
        dk_seterr(d, "%s %s: no answer within %ld ms", q->method, q->path, q->timeout_ms);
        return -ETIMEDOUT;
    case -EINTR:
        dk_seterr(d, "%s %s: interrupted", q->method, q->path);
        return -EINTR;
    case -ECONNRESET:
        dk_seterr(d, "%s %s: the engine closed the connection mid-answer", q->method, q->path);
        return -EIO;
    }
    if (cb_err == -ENOMEM || rc == -ENOMEM) {
        dk_seterr(d, "%s %s: out of memory", q->method, q->path);
        return -ENOMEM;
    }
    if (cb_err == -EFBIG) {
        dk_seterr(d, "%s %s: answer larger than %u bytes", q->method, q->path, DK_MAX_BODY);
        return -EIO;
    }
    if (cb_err < 0 || rc == -EIO) {
        dk_seterr(d, "%s %s: malformed answer from the engine", q->method, q->path);
        return -EIO;
    }
    dk_seterr(d, "%s %s: connection to the Docker engine at unix://%s failed: %s", q->method,
              q->path, d->socket_path, strerror(-rc));
    return -EIO;
}

int dk_do(struct docker *d, const struct dk_req *q)
{
    bool post = strcmp(q->method, "POST") == 0;
    char head[1024], *h = head;
    const char *fmt = "%s %s%s%s HTTP/1.1\r\nHost: docker\r\n%s%s%s%s\r\n";
    char cl[48] = "";
    if (post)
        snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", q->body ? q->body_len : 0);
    const char *ct = q->body ? (q->content_type ? q->content_type : "application/json") : NULL;
#define DK_HEAD_ARGS                                                                               \
    q->method, q->unversioned ? "" : "/v", q->unversioned ? "" : d->version, q->path,              \
        ct ? "Content-Type: " : "", ct ? ct : "", ct ? "\r\n" : "", cl
    int hlen = snprintf(head, sizeof head, fmt, DK_HEAD_ARGS);
    if (hlen >= (int)sizeof head && (h = malloc((size_t)hlen + 1)))
        snprintf(h, (size_t)hlen + 1, fmt, DK_HEAD_ARGS);
#undef DK_HEAD_ARGS
    if (hlen < 0 || !h) {
        dk_seterr(d, "%s %s: out of memory", q->method, q->path);
        return -ENOMEM;
    }
    if (q->answer && q->answer->limit == 0)
        q->answer->limit = DK_MAX_BODY;

    uint64_t start = now_mono_ms();
    uint64_t until = q->timeout_ms > 0 ? start + (uint64_t)q->timeout_ms : UINT64_MAX;
    struct dk_parse p;
    struct dk_call c = {.q = q, .p = &p, .err = {.limit = DK_MAX_ERR_BODY}};
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = d->fd[q->lane];
        bool fresh = fd < 0;
        if (fresh) {
            if ((rc = dk_connect(d, DK_CONNECT_TIMEOUT_MS, false, &fd)) < 0)
                break;
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            d->fd[q->lane] = fd;
        }
        size_t sent;
        rc = dk_write_req(d, fd, h, (size_t)hlen, q->body, q->body ? q->body_len : 0, until,
                          q->abort, &sent);
        if (rc == -EPIPE && !fresh) {
            dk_drop(d, q->lane);
            continue; /* the engine closed the kept connection: a new one */
        }
        if (rc < 0) {
            rc = dk_fail(d, q, rc, 0);
            break;
        }
        dk_parse_init(&p);
        c.err.len = 0;
        c.cb_err = 0;
        size_t got = 0;
        uint64_t last = now_mono_ms();
        int done = 0;
        while (done == 0) {
            char chunk[16384];
            ssize_t r = read(fd, chunk, sizeof chunk);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno == EAGAIN) {
                uint64_t stall = q->stall_s > 0 ? last + (uint64_t)q->stall_s * 1000u : UINT64_MAX;
                rc = dk_wait(d, fd, POLLIN, stall < until ? stall : until, q->abort);
                if (rc == -ETIMEDOUT && stall < until) {
                    dk_drop(d, q->lane);
                    dk_seterr(d, "%s %s: no byte from the engine for %ld s", q->method, q->path,
                              q->stall_s);
                    done = -ETIMEDOUT;
                } else if (rc < 0) {
                    done = dk_fail(d, q, rc, 0);
                }
                continue;
            }
            if (r <= 0 && got == 0 && !fresh) {
                done = 2; /* closed while idle (an end, or a reset): again on a new one */
                break;
            }
            if (r == 0) {
                done = dk_parse_eof(&p) == 1 ? 1 : dk_fail(d, q, got ? -ECONNRESET : -EIO, 0);
                if (done == 1)
                    dk_drop(d, q->lane); /* its body ended with the stream */
                break;
            }
            if (r < 0) {
                done = dk_fail(d, q, -errno, 0);
                break;
            }
            got += (size_t)r;
            last = now_mono_ms();
            size_t used = 0;
            int pr = dk_parse_feed(&p, chunk, (size_t)r, &used, dk_call_body, &c);
            if (pr < 0) {
                done = dk_fail(d, q, pr, c.cb_err);
            } else if (pr == 1) {
                done = 1;
                if (p.close || used != (size_t)r) /* closing, or more than one answer */
                    dk_drop(d, q->lane);
            }
        }
        if (done == 2) {
            dk_drop(d, q->lane);
            continue;
        }
        rc = done;
        break;
    }
    if (rc == 0) { /* twice closed before an answer */
        dk_seterr(d, "%s %s: the engine closed the connection twice", q->method, q->path);
        rc = -EIO;
    }
    if (rc == 1) {
        if (p.code < 200 || p.code >= 300) {
            rc = dk_http_error(d, q->method, q->path, p.code, &c.err);
        } else {
            d->err[0] = '\0';
            rc = (int)p.code;
        }
    }
    free(c.err.p);
    if (h != head)
        free(h);
    return rc;
}

int dk_json(struct docker *d, const struct dk_req *q0, json_t **out)
{
    struct dk_buf ans = {0};
    struct dk_req q = *q0;
    q.answer = &ans;
    int rc = dk_do(d, &q);
    if (rc < 0) {
        free(ans.p);
        return rc;
    }
    json_error_t je;
    json_t *j = ans.p ? json_loadb(ans.p, ans.len, 0, &je) : NULL;
    free(ans.p);
    if (!j) {
        dk_seterr(d, "%s %s: answer is not JSON", q.method, q.path);
        return -EIO;
    }
    *out = j;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* requests on connections of their own                                                     */

int dk_send(struct docker *d, const char *method, const char *path, const char *extra,
            int timeout_ms, int *fd_out)
{
    int fd, rc = dk_connect(d, timeout_ms, true, &fd);
    if (rc < 0)
        return rc;
    char req[512];
    int n = snprintf(req, sizeof req,
                     "%s /v%s%s HTTP/1.1\r\nHost: docker\r\n%sContent-Length: 0\r\n\r\n", method,
                     d->version, path, extra);
    if (n < 0 || (size_t)n >= sizeof req || write(fd, req, (size_t)n) != n) {
        dk_seterr(d, "%s %s: write: %s", method, path, strerror(errno));
        close(fd);
        return -EIO;
    }
    *fd_out = fd;
    return 0;
}

static int dk_keep_err(void *arg, const char *b, size_t n)
{
    struct dk_buf *e = arg;
    size_t room = e->len < DK_MAX_ERR_BODY ? DK_MAX_ERR_BODY - e->len : 0;
    return room ? dk_buf_add(e, b, n < room ? n : room) : 0;
}

int dk_finish(struct docker *d, int fd, int timeout_ms)
{
    struct dk_parse p;
    dk_parse_init(&p);
    struct dk_buf body = {.limit = DK_MAX_ERR_BODY};
    uint64_t until = now_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    int done = 0;
    while (done == 0) { /* "Connection: close": the answer ends where the stream does */
        int rc = dk_wait(d, fd, POLLIN, until, DK_ABORT_ON_SIGNAL);
        if (rc == -EINTR) {
            dk_seterr(d, "interrupted while waiting for the engine");
            close(fd);
            free(body.p);
            return -EINTR;
        }
        if (rc < 0) {
            dk_seterr(d, "no answer from the engine within %d ms", timeout_ms);
            close(fd);
            free(body.p);
            return -ETIMEDOUT;
        }
        char chunk[4096];
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && errno == EINTR)
            continue;
        size_t used;
        if (r <= 0)
            done = r == 0 ? dk_parse_eof(&p) : -EIO;
        else
            done = dk_parse_feed(&p, chunk, (size_t)r, &used, dk_keep_err, &body);
    }
    close(fd);
    if (done < 0 && p.code == 0) {
        dk_seterr(d, "the engine's answer was cut short");
        free(body.p);
        return -EIO;
    }
    int ret = 0;
    if (!((p.code >= 200 && p.code < 300) || p.code == 304)) {
        char msg[DK_MSG_LEN + 1];
        dk_engine_message(&body, msg, sizeof msg);
        dk_seterr(d, "the engine answered %ld: %s", p.code, msg);
        ret = p.code == 404 ? -ENOENT : -EIO;
    }
    free(body.p);
    return ret;
}

int dk_hijack(struct docker *d, int fd, const char *what)
{
    /* Read the answer's head, and nothing after it (that is the raw stream): peek at what
     * has arrived, then take exactly up to the blank line. */
    char head[2048];
    size_t len = 0;
    uint64_t t0 = now_mono_ms();
    for (;;) {
        ssize_t r = recv(fd, head, sizeof head - 1, MSG_PEEK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = errno;
            dk_seterr(d, "%s: no answer from the engine (%s after %llu ms)", what,
                      r == 0 ? "connection closed" : strerror(e),
                      (unsigned long long)(now_mono_ms() - t0));
            close(fd);
            return -EIO;
        }
        head[r] = '\0';
        char *end = strstr(head, "\r\n\r\n");
        if (end) {
            len = (size_t)(end + 4 - head);
            break;
        }
        if ((size_t)r == sizeof head - 1) {
            dk_seterr(d, "%s: answer head too long", what);
            close(fd);
            return -EIO;
        }
        usleep(200); /* more of the head is on its way */
    }
    if (recv(fd, head, len, MSG_WAITALL) != (ssize_t)len) {
        dk_seterr(d, "%s: reading the answer failed", what);
        close(fd);
        return -EIO;
    }
    head[len] = '\0';
    struct dk_parse p;
    dk_parse_init(&p);
    memcpy(p.head, head, len + 1);
    p.head_len = len;
    long code = dk_parse_head(&p) == 0 ? p.code : 0;
    if (code != 101 && code != 200) {
        char *eol = strstr(head, "\r\n");
        if (eol)
            *eol = '\0';
        dk_seterr(d, "%s: %s", what, head);
        close(fd);
        return code == 404 ? -ENOENT : -EIO;
    }
    struct timeval none = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* open / close                                                                             */

static bool dk_parse_version(const char *s, int *major, int *minor)
{
    char tail;
    return s && sscanf(s, "%d.%d%c", major, minor, &tail) == 2 && *major >= 0 && *minor >= 0;
}

static int dk_negotiate(struct docker *d)
{
    json_t *v = NULL;
    struct dk_req q = {
        .method = "GET", .path = "/version", .unversioned = true, .timeout_ms = DK_TIMEOUT_MS};
    int rc = dk_json(d, &q, &v);
    if (rc < 0)
        return rc;
    int amaj, amin, mmaj = 0, mmin = 0;
    const char *api = json_string_value(json_object_get(v, "ApiVersion"));
    const char *minapi = json_string_value(json_object_get(v, "MinAPIVersion"));
    if (!dk_parse_version(api, &amaj, &amin) ||
        (minapi && !dk_parse_version(minapi, &mmaj, &mmin))) {
        dk_seterr(d, "GET /version: no usable ApiVersion/MinAPIVersion in the answer");
        json_decref(v);
        return -EIO;
    }
    json_decref(v);
    int maj = DK_MAX_MAJOR, min = DK_MAX_MINOR;
    if (amaj < maj || (amaj == maj && amin < min)) { /* min(ours, engine's) */
        maj = amaj;
        min = amin;
    }
    if (maj < mmaj || (maj == mmaj && min < mmin)) { /* never below the engine's minimum */
        maj = mmaj;
        min = mmin;
    }
    snprintf(d->version, sizeof d->version, "%d.%d", maj, min);
    return 0;
}

int docker_open(struct docker **out, const char *socket_path)
{
    *out = NULL;
    dk_open_err[0] = '\0';
    if (!socket_path || !socket_path[0]) {
        snprintf(dk_open_err, sizeof dk_open_err, "docker_open: empty socket path");
        return -EINVAL;
    }
    struct docker *d = calloc(1, sizeof *d);
    if (d)
        d->socket_path = strdup(socket_path);
    if (!d || !d->socket_path) {
        snprintf(dk_open_err, sizeof dk_open_err, "docker_open: out of memory");
        free(d);
        return -ENOMEM;
    }
    for (int i = 0; i < DK_LANES; i++)
        d->fd[i] = -1;
    int rc = dk_negotiate(d);
    if (rc < 0) {
        snprintf(dk_open_err, sizeof dk_open_err, "%s", d->err);
        docker_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

void docker_close(struct docker *d)
{
    if (!d)
        return;
    for (int i = 0; i < DK_LANES; i++)
        dk_drop(d, (enum dk_lane)i);
    free(d->socket_path);
    free(d);
}
