/*
 * docker.c — Docker Engine API client over the engine's unix socket (libcurl + jansson).
 *
 * One easy handle per struct docker. Every call starts with curl_easy_reset(), which puts
 * the options back to their defaults (so no POSTFIELDS / CUSTOMREQUEST / NOBODY leaks
 * from one call into the next) but keeps the handle's live connections, so the unix
 * socket connection is reused between calls (keep-alive). Three kinds of call bypass
 * libcurl, each on a connection of its own: the attach stream (hijacked), the calls an
 * executor sends and collects later (start, remove: dk_raw_send), and the create, on a
 * connection kept open for it (dk_post_kept: it is on every job's path).
 *
 * Nothing here logs: a failed call returns -errno and leaves a one-line reason in
 * docker_last_error(). A failed docker_open() has no handle to hang the reason on; its
 * reason is kept per thread and returned by docker_last_error(NULL).
 */
#include "tako/docker.h"
#include "tako/util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define DK_MAX_MAJOR          1
#define DK_MAX_MINOR          41 /* newest API version takod knows */
#define DK_CONNECT_TIMEOUT_MS 2000L
#define DK_DEFAULT_TIMEOUT_MS 30000L
#define DK_MAX_BODY           (16u << 20) /* largest JSON answer accepted */
#define DK_MAX_ERR_BODY       (64u << 10) /* largest error body kept for the reason */
#define DK_ERR_LEN            512
#define DK_MSG_LEN            300 /* the engine's message is cut to this many bytes */
#define DK_MAX_NAME           255

struct docker {
    CURL *curl;
    char *socket_path;
    char version[16];
    char err[DK_ERR_LEN];
    char curl_err[CURL_ERROR_SIZE];
    volatile sig_atomic_t *abort_flag; /* non-zero: abort the call in progress (-EINTR) */
    int ka_fd; /* the create's own kept-open connection (dk_post_kept), or -1 */
};

/* libcurl calls this about once a second while waiting and on every chunk; a non-zero
 * return aborts the transfer (CURLE_ABORTED_BY_CALLBACK). */
static int dk_progress_cb(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct docker *d = arg;
    return d->abort_flag && *d->abort_flag ? 1 : 0;
}

void docker_set_abort_flag(struct docker *d, volatile sig_atomic_t *flag)
{
    d->abort_flag = flag;
}

static _Thread_local char dk_open_err[DK_ERR_LEN];

/* ---------------------------------------------------------------------------------------- */
/* capbuf                                                                                   */

static char capbuf_empty[1]; /* data of a buffer with nothing allocated: always "" */

/* Bytes allocated for a buffer holding `len` bytes: a power of two >= len + 1 (at least
 * 256), never above cap + 1. A pure function of len, so no extra field is needed. */
static size_t capbuf_alloc_for(size_t len, size_t cap)
{
    if (len == 0)
        return 0;
    size_t a = 256;
    while (a < len + 1 && a < cap + 1)
        a <<= 1;
    return a < cap + 1 ? a : cap + 1;
}

void capbuf_init(struct tk_capbuf *b, size_t cap)
{
    b->data = capbuf_empty;
    b->len = 0;
    b->cap = cap;
    b->total = 0;
    b->truncated = false;
}

void capbuf_free(struct tk_capbuf *b)
{
    if (b->data && b->data != capbuf_empty)
        free(b->data);
    capbuf_init(b, b->cap);
}

void capbuf_append(struct tk_capbuf *b, const char *p, size_t n)
{
    if (n == 0)
        return;
    b->total += n;
    if (b->total > b->cap)
        b->truncated = true;
    size_t take = b->cap - b->len < n ? b->cap - b->len : n;
    if (take == 0)
        return;
    size_t have = b->data == capbuf_empty ? 0 : capbuf_alloc_for(b->len, b->cap);
    size_t need = capbuf_alloc_for(b->len + take, b->cap);
    if (need > have) {
        char *nd = realloc(b->data == capbuf_empty ? NULL : b->data, need);
        if (!nd) {
            /* Out of memory: keep what we have; total still counts every byte. The
             * caller sees len < min(total, cap) (docker_logs turns that into -ENOMEM). */
            b->truncated = true;
            return;
        }
        b->data = nd;
    }
    memcpy(b->data + b->len, p, take);
    b->len += take;
    b->data[b->len] = '\0';
}

/* ---------------------------------------------------------------------------------------- */
/* errors                                                                                   */

/* Make a reason one line: control characters (newlines included) become spaces. */
static void dk_one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

__attribute__((format(printf, 2, 3))) static void dk_seterr(struct docker *d, const char *fmt, ...)
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

const char *docker_api_version(const struct docker *d)
{
    return d->version;
}

/* ---------------------------------------------------------------------------------------- */
/* transport                                                                                */

struct dk_buf {
    char *p;
    size_t len, alloc, limit;
};

static int dk_buf_add(struct dk_buf *b, const char *p, size_t n)
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

/* Streaming consumer of a successful (2xx) body; returns 0 or -errno to abort. */
typedef int (*dk_stream_fn)(void *ctx, const char *p, size_t n);

struct dk_resp {
    CURL *curl;
    long code;           /* HTTP status, fetched at the first body byte */
    struct dk_buf body;  /* the answer (or the error body when streaming) */
    dk_stream_fn stream; /* when set, 2xx bodies go here instead of into body */
    void *stream_ctx;
    int cb_err; /* -errno that made the write callback abort */
};

static size_t dk_write_cb(char *p, size_t size, size_t nmemb, void *userdata)
{
    struct dk_resp *r = userdata;
    size_t n = size * nmemb;
    if (r->code == 0)
        curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &r->code);
    int rc = 0;
    if (r->code < 200 || r->code >= 300) {
        /* an error body: its head is enough for the reason; drop the rest */
        size_t room = r->body.len < DK_MAX_ERR_BODY ? DK_MAX_ERR_BODY - r->body.len : 0;
        if (room > 0)
            rc = dk_buf_add(&r->body, p, n < room ? n : room);
    } else if (r->stream) {
        rc = r->stream(r->stream_ctx, p, n);
    } else {
        rc = dk_buf_add(&r->body, p, n);
    }
    if (rc < 0) {
        r->cb_err = rc;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return n;
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

struct dk_req {
    const char *method; /* "GET", "POST", "DELETE" */
    const char *path;   /* "/containers/json?all=1" (versioned unless unversioned) */
    bool unversioned;   /* only GET /version */
    const char *body;   /* JSON body or NULL */
    const void *raw;    /* or a binary body (POST only): raw_len bytes of content_type */
    size_t raw_len;
    const char *content_type;
    long timeout_ms;     /* 0: no bound */
    long stall_s;        /* > 0: fail when no byte arrives for this long (-ETIMEDOUT) */
    dk_stream_fn stream; /* optional 2xx body consumer */
    void *stream_ctx;
    struct dk_buf *answer; /* optional: receives the 2xx body (caller frees ->p) */
    bool abortable;        /* the abort flag may interrupt it (waits only) */
};

/*
 * Run one request. Returns the HTTP status (> 0) when the engine answered with a 2xx
 * status, else -errno with d->err set (HTTP errors are mapped, the engine's message kept).
 */
static int dk_do(struct docker *d, const struct dk_req *q)
{
    CURL *c = d->curl;
    char *url = NULL;
    struct curl_slist *hdrs = NULL;
    struct dk_resp r = {.curl = c, .stream = q->stream, .stream_ctx = q->stream_ctx};
    r.body.limit = DK_MAX_BODY;
    int ret;

    if (q->unversioned)
        ret = asprintf(&url, "http://localhost%s", q->path);
    else
        ret = asprintf(&url, "http://localhost/v%s%s", d->version, q->path);
    if (ret < 0) {
        url = NULL;
        dk_seterr(d, "%s %s: out of memory", q->method, q->path);
        return -ENOMEM;
    }

    curl_easy_reset(c); /* back to defaults; live connections are kept */
    d->curl_err[0] = '\0';
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, d->curl_err);
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, d->socket_path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, DK_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, q->timeout_ms > 0 ? q->timeout_ms : 0L);
    if (q->stall_s > 0) {
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, q->stall_s);
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, dk_write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    if (d->abort_flag && q->abortable) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, dk_progress_cb);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, d);
    }

    bool oom = false;
    struct curl_slist *h;
#define DK_HDR(s)                                                                                  \
    do {                                                                                           \
        h = curl_slist_append(hdrs, (s));                                                          \
        if (h)                                                                                     \
            hdrs = h;                                                                              \
        else                                                                                       \
            oom = true;                                                                            \
    } while (0)
    DK_HDR("Expect:");
    if (strcmp(q->method, "POST") == 0 && q->raw) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->raw_len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->raw);
        char ct[128];
        snprintf(ct, sizeof ct, "Content-Type: %s", q->content_type);
        DK_HDR(ct);
    } else if (strcmp(q->method, "POST") == 0) {
        const char *b = q->body ? q->body : "";
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(b));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, b);
        DK_HDR(q->body ? "Content-Type: application/json" : "Content-Type:");
    } else if (strcmp(q->method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    }
#undef DK_HDR
    if (oom) {
        curl_slist_free_all(hdrs);
        free(url);
        dk_seterr(d, "%s %s: out of memory", q->method, q->path);
        return -ENOMEM;
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);

    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);

    if (cc != CURLE_OK) {
        const char *why = d->curl_err[0] ? d->curl_err : curl_easy_strerror(cc);
        switch (cc) {
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY: {
            long oserr = 0;
            curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &oserr);
            dk_seterr(d, "cannot connect to the Docker engine at unix://%s: %s", d->socket_path,
                      oserr ? strerror((int)oserr) : why);
            ret = -ECONNREFUSED;
            break;
        }
        case CURLE_ABORTED_BY_CALLBACK:
            dk_seterr(d, "%s %s: interrupted", q->method, q->path);
            ret = -EINTR;
            break;
        case CURLE_OPERATION_TIMEDOUT:
            dk_seterr(d, "%s %s: no answer within %ld ms", q->method, q->path, q->timeout_ms);
            ret = -ETIMEDOUT;
            break;
        case CURLE_WRITE_ERROR:
            if (r.cb_err == -ENOMEM) {
                dk_seterr(d, "%s %s: out of memory", q->method, q->path);
                ret = -ENOMEM;
            } else if (r.cb_err == -EFBIG) {
                dk_seterr(d, "%s %s: answer larger than %u bytes", q->method, q->path, DK_MAX_BODY);
                ret = -EIO;
            } else {
                dk_seterr(d, "%s %s: malformed answer from the engine", q->method, q->path);
                ret = -EIO;
            }
            break;
        case CURLE_OUT_OF_MEMORY:
            dk_seterr(d, "%s %s: out of memory", q->method, q->path);
            ret = -ENOMEM;
            break;
        default:
            dk_seterr(d, "%s %s: connection to the Docker engine at unix://%s failed: %s",
                      q->method, q->path, d->socket_path, why);
            ret = -EIO;
            break;
        }
    } else if (code < 200 || code >= 300) {
        ret = dk_http_error(d, q->method, q->path, code, &r.body);
    } else {
        d->err[0] = '\0';
        ret = (int)code;
        if (q->answer) {
            *q->answer = r.body;
            r.body.p = NULL;
        }
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    free(r.body.p);
    free(url);
    return ret;
}

/* A request whose 2xx answer must be a JSON value; *out is a new reference. */
static int dk_json(struct docker *d, const struct dk_req *q0, json_t **out)
{
    struct dk_buf ans = {0};
    struct dk_req q = *q0;
    q.answer = &ans;
    int rc = dk_do(d, &q);
    if (rc < 0)
        return rc;
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
/* argument checks: nothing from a caller reaches the URL path unchecked                   */

/* Container ids and names: [A-Za-z0-9][A-Za-z0-9_.-]* (the engine's name syntax). */
static int dk_check_id(struct docker *d, const char *what, const char *id)
{
    size_t n = id ? strlen(id) : 0;
    bool ok = n > 0 && n <= DK_MAX_NAME;
    for (size_t i = 0; ok && i < n; i++) {
        char ch = id[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        ok = alnum || (i > 0 && (ch == '_' || ch == '.' || ch == '-'));
    }
    if (!ok) {
        dk_seterr(d, "invalid %s \"%.64s\"", what, id ? id : "(null)");
        return -EINVAL;
    }
    return 0;
}

/* Image references: [A-Za-z0-9._/:@-], no empty or dot-leading path components. */
bool docker_image_name_ok(const char *image)
{
    size_t n = image ? strlen(image) : 0;
    bool ok = n > 0 && n <= DK_MAX_NAME && image[n - 1] != '/' &&
              ((image[0] >= 'a' && image[0] <= 'z') || (image[0] >= 'A' && image[0] <= 'Z') ||
               (image[0] >= '0' && image[0] <= '9'));
    for (size_t i = 0; ok && i < n; i++) {
        char ch = image[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '.' || ch == '_' || ch == '/' || ch == ':' || ch == '@' || ch == '-';
        if (ok && (i == 0 || image[i - 1] == '/'))
            ok = ch != '.' && ch != '/';
    }
    return ok;
}

static int dk_check_image(struct docker *d, const char *image)
{
    if (!docker_image_name_ok(image)) {
        dk_seterr(d, "invalid image name \"%.64s\"", image ? image : "(null)");
        return -EINVAL;
    }
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
    struct dk_req q = {.method = "GET",
                       .path = "/version",
                       .unversioned = true,
                       .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
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
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(dk_open_err, sizeof dk_open_err, "docker_open: curl_global_init failed");
        return -ENOMEM;
    }
    struct docker *d = calloc(1, sizeof *d);
    if (d)
        d->socket_path = strdup(socket_path);
    if (d && d->socket_path)
        d->curl = curl_easy_init();
    if (d)
        d->ka_fd = -1;
    if (!d || !d->socket_path || !d->curl) {
        snprintf(dk_open_err, sizeof dk_open_err, "docker_open: out of memory");
        if (d) {
            free(d->socket_path);
            free(d);
        }
        curl_global_cleanup();
        return -ENOMEM;
    }
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
    curl_easy_cleanup(d->curl);
    if (d->ka_fd >= 0)
        close(d->ka_fd);
    free(d->socket_path);
    free(d);
    curl_global_cleanup();
}

/* ---------------------------------------------------------------------------------------- */
/* calls                                                                                    */

int docker_ping(struct docker *d)
{
    struct dk_req q = {.method = "GET", .path = "/_ping", .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    int rc = dk_do(d, &q);
    return rc < 0 ? rc : 0;
}

/* METHOD /images/{image}{suffix}; the 2xx answer's JSON into *out when out is set. */
static int dk_image_req(struct docker *d, const char *method, const char *image, const char *suffix,
                        json_t **out)
{
    int rc = dk_check_image(d, image);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 32];
    snprintf(path, sizeof path, "/images/%s%s", image, suffix);
    struct dk_req q = {.method = method, .path = path, .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    rc = out ? dk_json(d, &q, out) : dk_do(d, &q);
    return rc < 0 ? rc : 0;
}

int docker_image_exists(struct docker *d, const char *image)
{
    int rc = dk_image_req(d, "GET", image, "/json", NULL);
    if (rc == -ENOENT)
        return 0;
    return rc < 0 ? rc : 1;
}

int docker_image_inspect(struct docker *d, const char *image, json_t **out)
{
    return dk_image_req(d, "GET", image, "/json", out);
}

int docker_info(struct docker *d, json_t **out)
{
    struct dk_req q = {.method = "GET", .path = "/info", .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    return dk_json(d, &q, out);
}

int docker_has_runtime(struct docker *d, const char *name)
{
    if (!name || !name[0]) {
        dk_seterr(d, "invalid runtime name");
        return -EINVAL;
    }
    json_t *info = NULL;
    int rc = docker_info(d, &info);
    if (rc < 0)
        return rc;
    json_t *rt = json_object_get(info, "Runtimes");
    if (!json_is_object(rt)) {
        dk_seterr(d, "GET /info: no Runtimes object in the answer");
        json_decref(info);
        return -EIO;
    }
    rc = json_object_get(rt, name) ? 1 : 0;
    json_decref(info);
    return rc;
}

static bool dk_is_hex64(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* the create, without libcurl                                                              */

/*
 * POST /containers/create is on every job's path (a container per job), and through
 * libcurl its transfer machinery was a tenth of an executor's CPU for one small request.
 * So it has a connection of its own, kept open (d->ka_fd), written and read here: one
 * request at a time, its answer read whole before the next. When the engine has closed
 * that connection meanwhile (a restart, an idle timeout), the write fails or the answer
 * is an immediate end of stream: then once more on a new connection. An answer cut short
 * after its first byte is an error, not a retry (the engine may have made the container;
 * the sweep removes one nobody knows).
 */

/* A new connection to the engine's socket into *fd_out. timeout_ms bounds the connect
 * and the writes, and with `reads` the reads too. 0, or -errno with d->err set
 * (-ECONNREFUSED when the engine is not there). */
static int dk_connect_unix(struct docker *d, int timeout_ms, bool reads, int *fd_out)
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

/* A new connection to the engine into d->ka_fd. 0 or -errno. */
static int dk_kept_connect(struct docker *d)
{
    return dk_connect_unix(d, (int)DK_CONNECT_TIMEOUT_MS, false, &d->ka_fd);
}

static void dk_kept_drop(struct docker *d)
{
    if (d->ka_fd >= 0)
        close(d->ka_fd);
    d->ka_fd = -1;
}

/* A Content-Length value (after the colon): optional blanks, 1 to 9 decimal digits,
 * optional blanks, then the line's end; at most DK_MAX_BODY. 0 or -EIO. */
static int dk_content_length(const char *p, size_t *out)
{
    p += strspn(p, " \t");
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 9)
        return -EIO;
    size_t v = 0;
    for (size_t i = 0; i < digits; i++)
        v = v * 10 + (size_t)(p[i] - '0');
    p += digits;
    p += strspn(p, " \t");
    if (strncmp(p, "\r\n", 2) != 0 || v > DK_MAX_BODY)
        return -EIO;
    *out = v;
    return 0;
}

/* Where the answer in a (len bytes, NUL-terminated) ends: its head's length, and whether
 * it is whole (1, *total set: head + body, the body's bytes as sent). 0: not yet whole;
 * -EIO: no status, a bad or too large length, or no length (then only the end of the stream
 * ends it). */
static int dk_answer_span(const char *a, size_t len, size_t *head, size_t *total)
{
    const char *end = memmem(a, len, "\r\n\r\n", 4);
    if (!end)
        return len > 16384 ? -EIO : 0;
    *head = (size_t)(end - a) + 4;
    int code = 0;
    if (sscanf(a, "HTTP/1.%*d %d", &code) != 1)
        return -EIO;
    if (code == 204 || code == 304 || code < 200) {
        *total = *head;
        return 1;
    }
    const char *cl = strcasestr(a, "\r\nContent-Length:");
    if (cl && cl < end) {
        size_t body;
        if (dk_content_length(cl + 17, &body) < 0)
            return -EIO;
        *total = *head + body;
        return len >= *total;
    }
    const char *te = strcasestr(a, "\r\nTransfer-Encoding: chunked");
    if (!te || te > end)
        return -EIO; /* the end of the stream would end it: not on a kept connection */
    const char *last = memmem(a + *head - 2, len - *head + 2, "\r\n0\r\n\r\n", 7);
    if (!last)
        return 0;
    *total = (size_t)(last - a) + 7;
    return 1;
}

/* The chunked body at b (n bytes) decoded in place; its length, or -EIO. Each chunk's size
 * is 1 to 8 hex digits (an extension after ';' is ignored), then CRLF, the data and CRLF. */
static long dk_dechunk(char *b, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *eol = memmem(b + in, n - in, "\r\n", 2);
        if (!eol)
            return -EIO;
        size_t digits = 0, sz = 0;
        while (b + in + digits < eol && isxdigit((unsigned char)b[in + digits]) && digits < 9) {
            char c = b[in + digits++];
            sz = sz * 16 + (size_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
        }
        if (digits == 0 || digits > 8 || (b + in + digits < eol && b[in + digits] != ';'))
            return -EIO;
        in = (size_t)(eol - b) + 2;
        if (sz == 0)
            return (long)out;
        if (sz > n - in || n - in - sz < 2 || memcmp(b + in + sz, "\r\n", 2) != 0)
            return -EIO;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
}

/* A whole answer (a, its span hl and total from dk_answer_span, a[total] readable) into
 * its body, moved to a's start and NUL-terminated: the body's length, or -EIO (a malformed
 * chunked body). The status into *code; *close when the engine closes the connection. */
static long dk_answer_body(char *a, size_t hl, size_t total, long *code, bool *close)
{
    a[hl - 2] = '\0'; /* the head alone, for the searches below */
    const char *cl = strcasestr(a, "\r\nConnection: close");
    const char *te = strcasestr(a, "\r\nTransfer-Encoding: chunked");
    *close = cl != NULL;
    *code = 0;
    sscanf(a, "HTTP/1.%*d %ld", code);
    long n = te ? dk_dechunk(a + hl, total - hl) : (long)(total - hl);
    if (n < 0)
        return -EIO;
    memmove(a, a + hl, (size_t)n);
    a[n] = '\0';
    return n;
}

/*
 * POST `path` with a JSON body on the kept connection. The status into *code and the body
 * into *body (NUL-terminated; the caller frees body->p). 0, or -errno with d->err set.
 */
static int dk_post_kept(struct docker *d, const char *path, const char *json, long timeout_ms,
                        long *code, struct dk_buf *body)
{
    char head[DK_MAX_NAME + 256];
    size_t blen = strlen(json);
    int hlen = snprintf(head, sizeof head,
                        "POST /v%s%s HTTP/1.1\r\nHost: docker\r\n"
                        "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                        d->version, path, blen);
    if (hlen < 0 || (size_t)hlen >= sizeof head) {
        dk_seterr(d, "POST %s: path too long", path);
        return -EINVAL;
    }
    struct dk_buf a = {.limit = DK_MAX_BODY};
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool fresh = d->ka_fd < 0;
        if (fresh && (rc = dk_kept_connect(d)) < 0)
            return rc;
        a.len = 0;
        struct iovec iov[2] = {{head, (size_t)hlen}, {(void *)json, blen}};
        size_t want = (size_t)hlen + blen, sent = 0;
        while (sent < want) {
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
            ssize_t w = sendmsg(d->ka_fd, &mh, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            sent += (size_t)w;
            for (int i = 0; i < 2; i++) { /* skip what went */
                size_t k = (size_t)w < iov[i].iov_len ? (size_t)w : iov[i].iov_len;
                iov[i].iov_base = (char *)iov[i].iov_base + k;
                iov[i].iov_len -= k;
                w -= (ssize_t)k;
            }
        }
        if (sent < want) {
            int e = errno;
            dk_kept_drop(d);
            if (!fresh && sent == 0)
                continue; /* the engine closed the kept connection: a new one */
            dk_seterr(d, "POST %s: write to the engine: %s", path, strerror(e));
            free(a.p);
            return -EIO;
        }
        /* the answer */
        uint64_t deadline = now_mono_ms() + (uint64_t)timeout_ms;
        size_t hl = 0, total = 0;
        int done = 0;
        while (done == 0) {
            char chunk[8192];
            struct pollfd pfd = {.fd = d->ka_fd, .events = POLLIN};
            uint64_t now = now_mono_ms();
            int pr = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr <= 0) {
                dk_kept_drop(d);
                dk_seterr(d, "POST %s: no answer within %ld ms", path, timeout_ms);
                free(a.p);
                return -ETIMEDOUT;
            }
            ssize_t r = read(d->ka_fd, chunk, sizeof chunk);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                done = -ECONNRESET;
                break;
            }
            if ((rc = dk_buf_add(&a, chunk, (size_t)r)) < 0) {
                done = rc;
                break;
            }
            a.p[a.len] = '\0';
            done = dk_answer_span(a.p, a.len, &hl, &total);
        }
        if (done == -ECONNRESET && a.len == 0 && !fresh) {
            dk_kept_drop(d);
            continue; /* closed as we asked: a new connection */
        }
        if (done < 0) {
            dk_kept_drop(d);
            dk_seterr(d, "POST %s: %s", path,
                      done == -ECONNRESET ? (a.len ? "the engine closed the connection mid-answer"
                                                   : "the engine closed the connection")
                      : done == -EFBIG    ? "answer too large"
                      : done == -ENOMEM   ? "out of memory"
                                          : "malformed answer from the engine");
            free(a.p);
            return done == -ENOMEM ? -ENOMEM : -EIO;
        }
        bool closing;
        long n = dk_answer_body(a.p, hl, total, code, &closing);
        if (closing || total != a.len) /* closing, or more than one answer: start afresh */
            dk_kept_drop(d);
        if (n < 0) {
            dk_seterr(d, "POST %s: malformed chunked answer from the engine", path);
            free(a.p);
            return -EIO;
        }
        a.len = (size_t)n;
        *body = a;
        return 0;
    }
    dk_seterr(d, "POST %s: the engine closed the connection twice", path);
    free(a.p);
    return -EIO;
}

int docker_create(struct docker *d, const char *name, const json_t *body, char id[65])
{
    if (!json_is_object(body)) {
        dk_seterr(d, "docker_create: body is not a JSON object");
        return -EINVAL;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    if (!text) {
        dk_seterr(d, "docker_create: cannot serialize the body");
        return -ENOMEM;
    }
    int rc = docker_create_text(d, name, text, id);
    free(text);
    return rc;
}

int docker_create_text(struct docker *d, const char *name, const char *text, char id[65])
{
    int rc;
    if (name && (rc = dk_check_id(d, "container name", name)) < 0)
        return rc;
    char path[DK_MAX_NAME + 32];
    if (name)
        snprintf(path, sizeof path, "/containers/create?name=%s", name);
    else
        snprintf(path, sizeof path, "/containers/create");
    long code = 0;
    struct dk_buf b = {0};
    if ((rc = dk_post_kept(d, path, text, DK_DEFAULT_TIMEOUT_MS, &code, &b)) < 0)
        return rc;
    if (code < 200 || code >= 300) {
        rc = dk_http_error(d, "POST", path, code, &b);
        free(b.p);
        return rc;
    }
    json_t *ans = json_loadb(b.p, b.len, 0, NULL);
    free(b.p);
    const char *cid = json_string_value(json_object_get(ans, "Id"));
    if (!dk_is_hex64(cid)) {
        dk_seterr(d, "POST %s: no container Id in the answer", path);
        json_decref(ans);
        return -EIO;
    }
    memcpy(id, cid, 65);
    json_decref(ans);
    return 0;
}

/* POST/DELETE on /containers/{id}{suffix} with no body and no interesting answer. */
static int dk_container_op(struct docker *d, const char *method, const char *id, const char *suffix)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 96];
    snprintf(path, sizeof path, "/containers/%s%s", id, suffix);
    struct dk_req q = {.method = method, .path = path, .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    rc = dk_do(d, &q);
    return rc < 0 ? rc : 0;
}

int docker_start(struct docker *d, const char *id)
{
    return dk_container_op(d, "POST", id, "/start");
}

int docker_wait(struct docker *d, const char *id, int timeout_ms, int *status_code)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 64];
    snprintf(path, sizeof path, "/containers/%s/wait?condition=not-running", id);
    json_t *ans = NULL;
    struct dk_req q = {.method = "POST",
                       .path = path,
                       .timeout_ms = timeout_ms > 0 ? timeout_ms : 0,
                       .abortable = true};
    rc = dk_json(d, &q, &ans);
    if (rc < 0)
        return rc;
    json_t *sc = json_object_get(ans, "StatusCode");
    json_t *err = json_object_get(ans, "Error");
    const char *emsg = json_string_value(json_object_get(err, "Message"));
    if (!json_is_integer(sc)) {
        dk_seterr(d, "POST %s: no StatusCode in the answer", path);
        rc = -EIO;
    } else if (emsg && emsg[0]) {
        dk_seterr(d, "POST %s: %.300s", path, emsg);
        rc = -EIO;
    } else {
        *status_code = (int)json_integer_value(sc);
    }
    json_decref(ans);
    return rc;
}

int docker_kill(struct docker *d, const char *id, const char *signal)
{
    char suffix[64];
    if (signal) {
        int rc = strlen(signal) <= 32 ? dk_check_id(d, "signal", signal) : -EINVAL;
        if (rc < 0) {
            dk_seterr(d, "invalid signal \"%.32s\"", signal);
            return rc;
        }
        snprintf(suffix, sizeof suffix, "/kill?signal=%s", signal);
    } else {
        snprintf(suffix, sizeof suffix, "/kill");
    }
    return dk_container_op(d, "POST", id, suffix);
}

int docker_inspect(struct docker *d, const char *id, json_t **out)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 32];
    snprintf(path, sizeof path, "/containers/%s/json", id);
    struct dk_req q = {.method = "GET", .path = path, .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    json_t *j = NULL;
    rc = dk_json(d, &q, &j);
    if (rc < 0)
        return rc;
    if (!json_is_object(j)) {
        dk_seterr(d, "GET %s: answer is not an object", path);
        json_decref(j);
        return -EIO;
    }
    *out = j;
    return 0;
}

/* The multiplexed log stream: [stream, 0, 0, 0, size_be32] then size payload bytes. */
struct dk_demux {
    unsigned char hdr[8];
    size_t hdr_len; /* header bytes collected so far */
    uint32_t left;  /* payload bytes left in the current frame */
    bool in_payload;
    struct tk_capbuf *to;
    struct tk_capbuf *out, *err;
};

static int dk_capbuf_put(struct tk_capbuf *b, const char *p, size_t n)
{
    if (!b)
        return 0;
    capbuf_append(b, p, n);
    size_t want = b->total < b->cap ? b->total : b->cap;
    return b->len < want ? -ENOMEM : 0;
}

static int dk_demux_feed(void *ctx, const char *p, size_t n)
{
    struct dk_demux *m = ctx;
    while (n > 0) {
        if (!m->in_payload) {
            size_t take = 8 - m->hdr_len < n ? 8 - m->hdr_len : n;
            memcpy(m->hdr + m->hdr_len, p, take);
            m->hdr_len += take;
            p += take;
            n -= take;
            if (m->hdr_len < 8)
                break;
            m->hdr_len = 0;
            if (m->hdr[0] > 2 || m->hdr[1] || m->hdr[2] || m->hdr[3])
                return -EPROTO; /* not a frame header: a Tty container's raw stream? */
            m->to = m->hdr[0] == 2 ? m->err : m->out;
            m->left = (uint32_t)m->hdr[4] << 24 | (uint32_t)m->hdr[5] << 16 |
                      (uint32_t)m->hdr[6] << 8 | (uint32_t)m->hdr[7];
            m->in_payload = m->left > 0;
        } else {
            size_t take = m->left < n ? m->left : n;
            int rc = dk_capbuf_put(m->to, p, take);
            if (rc < 0)
                return rc;
            m->left -= (uint32_t)take;
            p += take;
            n -= take;
            m->in_payload = m->left > 0;
        }
    }
    return 0;
}

int docker_logs(struct docker *d, const char *id, struct tk_capbuf *out, struct tk_capbuf *err)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 48];
    snprintf(path, sizeof path, "/containers/%s/logs?stdout=1&stderr=1", id);
    struct dk_demux m = {.out = out, .err = err};
    struct dk_req q = {.method = "GET",
                       .path = path,
                       .timeout_ms = DK_DEFAULT_TIMEOUT_MS,
                       .stream = dk_demux_feed,
                       .stream_ctx = &m};
    rc = dk_do(d, &q);
    if (rc < 0)
        return rc;
    if (m.hdr_len || m.in_payload) {
        dk_seterr(d, "GET %s: log stream ends inside a frame", path);
        return -EIO;
    }
    return 0;
}

int docker_remove(struct docker *d, const char *id)
{
    return dk_container_op(d, "DELETE", id, "?force=1&v=1");
}

/* "<base>filters={"label":["LABEL"]}" (escaped) into *path (malloc'd). 0 or -errno. */
static int dk_label_path(struct docker *d, const char *base, const char *label, char **path)
{
    if (!label || !label[0]) {
        dk_seterr(d, "%s: empty label filter", base);
        return -EINVAL;
    }
    json_t *f = json_pack("{s:[s]}", "label", label);
    char *ftext = f ? json_dumps(f, JSON_COMPACT) : NULL;
    json_decref(f);
    char *fesc = ftext ? curl_easy_escape(d->curl, ftext, 0) : NULL;
    free(ftext);
    *path = NULL;
    if (!fesc || asprintf(path, "%sfilters=%s", base, fesc) < 0) {
        curl_free(fesc);
        *path = NULL;
        dk_seterr(d, "%s: out of memory", base);
        return -ENOMEM;
    }
    curl_free(fesc);
    return 0;
}

static int dk_list(struct docker *d, const char *label, bool with_labels, json_t **ids)
{
    char *path = NULL;
    int lrc = dk_label_path(d, "/containers/json?all=1&", label, &path);
    if (lrc < 0)
        return lrc;
    json_t *arr = NULL;
    struct dk_req q = {.method = "GET", .path = path, .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    int rc = dk_json(d, &q, &arr);
    if (rc < 0) {
        free(path);
        return rc;
    }
    json_t *res = json_array();
    size_t i;
    json_t *c;
    if (!json_is_array(arr)) {
        dk_seterr(d, "GET /containers/json: answer is not an array");
        rc = -EIO;
    } else if (!res) {
        dk_seterr(d, "docker_list_by_label: out of memory");
        rc = -ENOMEM;
    }
    if (rc == 0) {
        json_array_foreach(arr, i, c)
        {
            const char *cid = json_string_value(json_object_get(c, "Id"));
            if (!cid) {
                dk_seterr(d, "GET /containers/json: entry without Id");
                rc = -EIO;
                break;
            }
            json_t *item =
                with_labels ? json_pack("{s:s, s:O}", "id", cid, "labels",
                                        json_object_get(c, "Labels") ? json_object_get(c, "Labels")
                                                                     : json_null())
                            : json_string(cid);
            if (json_array_append_new(res, item) < 0) {
                dk_seterr(d, "docker_list_by_label: out of memory");
                rc = -ENOMEM;
                break;
            }
        }
    }
    json_decref(arr);
    free(path);
    if (rc < 0) {
        json_decref(res);
        return rc;
    }
    *ids = res;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* attach: a raw, hijacked connection to a container's stdio                                */

/*
 * A request on a unix-socket connection of its own, written and not waited for: the
 * attach stream's handshake, and the calls an executor must not block on (a container's
 * start takes ~100 ms of the engine's time). `extra` is the connection's header lines.
 * The socket's timeouts bound only the connect and this write. -ECONNREFUSED, -EIO.
 */
static int dk_raw_send(struct docker *d, const char *method, const char *path, const char *extra,
                       int timeout_ms, int *fd_out)
{
    int fd, rc = dk_connect_unix(d, timeout_ms, true, &fd);
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

/* `method` on /containers/{id}{suffix}, sent and not waited for (dk_raw_send). */
static int dk_container_raw(struct docker *d, const char *method, const char *id,
                            const char *suffix, const char *extra, int timeout_ms, int *fd)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 96];
    snprintf(path, sizeof path, "/containers/%s%s", id, suffix);
    return dk_raw_send(d, method, path, extra, timeout_ms, fd);
}

int docker_attach(struct docker *d, const char *id, int timeout_ms, int *fd_out)
{
    int fd;
    int rc = dk_container_raw(d, "POST", id, "/attach?stream=1&stdin=1&stdout=1&stderr=1",
                              "Upgrade: tcp\r\nConnection: Upgrade\r\n", timeout_ms, &fd);
    if (rc < 0)
        return rc;
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
            dk_seterr(d, "attach %.12s: no answer from the engine (%s after %llu ms)", id,
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
            dk_seterr(d, "attach %.12s: answer head too long", id);
            close(fd);
            return -EIO;
        }
        usleep(200); /* more of the head is on its way */
    }
    if (recv(fd, head, len, MSG_WAITALL) != (ssize_t)len) {
        dk_seterr(d, "attach %.12s: reading the answer failed", id);
        close(fd);
        return -EIO;
    }
    head[len] = '\0';
    int code = 0;
    if (sscanf(head, "HTTP/1.%*d %d", &code) != 1 || (code != 101 && code != 200)) {
        char *eol = strstr(head, "\r\n");
        if (eol)
            *eol = '\0';
        dk_seterr(d, "attach %.12s: %s", id, head);
        close(fd);
        return code == 404 ? -ENOENT : -EIO;
    }
    struct timeval none = {0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
    *fd_out = fd;
    return 0;
}

int docker_start_async(struct docker *d, const char *id, int *fd)
{
    return dk_container_raw(d, "POST", id, "/start", "Connection: close\r\n", DK_DEFAULT_TIMEOUT_MS,
                            fd);
}

int docker_remove_async(struct docker *d, const char *id, int *fd)
{
    return dk_container_raw(d, "DELETE", id, "?force=1&v=1", "Connection: close\r\n",
                            DK_DEFAULT_TIMEOUT_MS, fd);
}

int docker_async_finish(struct docker *d, int fd, int timeout_ms)
{
    char ans[4096];
    size_t len = 0;
    uint64_t deadline = now_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) { /* "Connection: close": the answer ends where the stream does */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        uint64_t now = now_mono_ms();
        int pr = now < deadline ? poll(&pfd, 1, (int)(deadline - now)) : 0;
        if (pr < 0 && errno == EINTR && d->abort_flag && *d->abort_flag) {
            dk_seterr(d, "interrupted while waiting for the engine");
            close(fd);
            return -EINTR;
        }
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            dk_seterr(d, "no answer from the engine within %d ms", timeout_ms);
            close(fd);
            return -ETIMEDOUT;
        }
        ssize_t r = read(fd, ans + len, sizeof ans - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || (len += (size_t)r) == sizeof ans - 1)
            break; /* EOF, an error, or enough of it to judge */
        ans[len] = '\0';
        size_t head, total;
        if (dk_answer_span(ans, len, &head, &total) == 1)
            break; /* all of it (an engine may keep the connection open after all) */
    }
    close(fd);
    ans[len] = '\0';
    int code = 0;
    if (sscanf(ans, "HTTP/1.%*d %d", &code) != 1) {
        dk_seterr(d, "the engine's answer was cut short");
        return -EIO;
    }
    if ((code >= 200 && code < 300) || code == 304)
        return 0;
    /* the error's JSON body: {"message":"..."} (possibly in one chunk) */
    const char *m = strstr(ans, "\"message\":\"");
    const char *msg = m ? m + 11 : "";
    const char *q = msg;
    while (*q && !(*q == '"' && q[-1] != '\\'))
        q++;
    dk_seterr(d, "the engine answered %d: %.*s", code, (int)(q - msg), msg);
    return code == 404 ? -ENOENT : -EIO;
}

int docker_list_by_label(struct docker *d, const char *label, json_t **ids)
{
    return dk_list(d, label, false, ids);
}

int docker_list_with_labels(struct docker *d, const char *label, json_t **items)
{
    return dk_list(d, label, true, items);
}

void docker_set_error(struct docker *d, const char *msg)
{
    snprintf(d->err, sizeof d->err, "%s", msg);
}

/* ---------------------------------------------------------------------------------------- */
/* image builds                                                                             */

/*
 * Builds and pulls answer with a stream of JSON messages, one per line — {"stream": text},
 * {"status": ...}, {"aux": {"ID": ...}} — and report failure as a message
 * {"error": ..., "errorDetail": {...}} inside an HTTP 200. Lines are cut here; each message
 * goes to fn, and the first error is kept.
 */
struct dk_msgs {
    struct dk_buf line;
    void (*fn)(const json_t *msg, void *arg);
    void *arg;
    char error[DK_ERR_LEN];
};

static void dk_msgs_line(struct dk_msgs *m, const char *p, size_t n)
{
    json_t *j = json_loadb(p, n, 0, NULL);
    if (!j)
        return;
    const char *err = json_string_value(json_object_get(j, "error"));
    if (err && !m->error[0])
        snprintf(m->error, sizeof m->error, "%s", err);
    m->fn(j, m->arg);
    json_decref(j);
}

static int dk_msgs_feed(void *ctx, const char *p, size_t n)
{
    struct dk_msgs *m = ctx;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            if (m->line.len)
                dk_msgs_line(m, m->line.p, m->line.len);
            m->line.len = 0;
        } else if (m->line.len < m->line.limit) {
            int rc = dk_buf_add(&m->line, p + i, 1);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* Run q with its answer streamed to fn, message by message. 0 or -errno (a message's
 * error is -EIO with its text in docker_last_error). */
static int dk_msgs_run(struct docker *d, struct dk_req *q, void (*fn)(const json_t *, void *),
                       void *arg)
{
    struct dk_msgs m = {.fn = fn, .arg = arg};
    m.line.limit = 1u << 20;
    q->stream = dk_msgs_feed;
    q->stream_ctx = &m;
    int rc = dk_do(d, q);
    if (rc >= 0 && m.line.len) /* a last line without its newline */
        dk_msgs_line(&m, m.line.p, m.line.len);
    free(m.line.p);
    if (rc < 0)
        return rc;
    if (m.error[0]) {
        dk_one_line(m.error);
        dk_seterr(d, "%s", m.error);
        return -EIO;
    }
    return 0;
}

struct dk_build {
    const struct docker_build_opts *o;
    char *image_id;
};

static void dk_build_msg(const json_t *j, void *arg)
{
    struct dk_build *b = arg;
    const char *text = json_string_value(json_object_get(j, "stream"));
    const char *err = json_string_value(json_object_get(j, "error"));
    const char *id = json_string_value(json_object_get(json_object_get(j, "aux"), "ID"));
    if (text && b->o->progress)
        b->o->progress(text, b->o->progress_arg);
    if (err && b->o->progress)
        b->o->progress(err, b->o->progress_arg);
    if (id)
        snprintf(b->image_id, 80, "%s", id);
}

int docker_build(struct docker *d, const void *tar, size_t len, const struct docker_build_opts *o,
                 char image_id[80])
{
    int rc = dk_check_image(d, o->tag);
    if (rc < 0)
        return rc;
    CURL *c = d->curl;
    char *labels = o->labels ? json_dumps(o->labels, JSON_COMPACT) : NULL;
    char *el = labels ? curl_easy_escape(c, labels, 0) : NULL;
    char *path = NULL;
    rc = asprintf(&path, "/build?t=%s&rm=1&forcerm=1&networkmode=%s%s%s%s", o->tag,
                  o->network ? o->network : "none", o->nocache ? "&nocache=1" : "",
                  el ? "&labels=" : "", el ? el : "");
    curl_free(el);
    free(labels);
    if (rc < 0) {
        dk_seterr(d, "POST /build: out of memory");
        return -ENOMEM;
    }
    struct dk_build b = {.o = o, .image_id = image_id};
    image_id[0] = '\0';
    struct dk_req q = {.method = "POST",
                       .path = path,
                       .raw = tar,
                       .raw_len = len,
                       .content_type = "application/x-tar",
                       .timeout_ms = o->timeout_ms};
    rc = dk_msgs_run(d, &q, dk_build_msg, &b);
    free(path);
    if (rc < 0)
        return rc;
    if (!image_id[0]) {
        dk_seterr(d, "POST /build: the engine reported no image id");
        return -EIO;
    }
    return 0;
}

int docker_tag(struct docker *d, const char *image, const char *repo, const char *tag)
{
    int rc = dk_check_image(d, image);
    if (rc == 0)
        rc = dk_check_image(d, repo);
    if (rc == 0)
        rc = dk_check_image(d, tag);
    if (rc < 0)
        return rc;
    char path[3 * DK_MAX_NAME + 64];
    snprintf(path, sizeof path, "/images/%s/tag?repo=%s&tag=%s", image, repo, tag);
    struct dk_req q = {.method = "POST", .path = path, .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    rc = dk_do(d, &q);
    return rc < 0 ? rc : 0;
}

int docker_images_by_label(struct docker *d, const char *label, json_t **images)
{
    char *path = NULL;
    int rc = dk_label_path(d, "/images/json?", label, &path);
    if (rc < 0)
        return rc;
    struct dk_req q = {.method = "GET", .path = path, .timeout_ms = DK_DEFAULT_TIMEOUT_MS};
    rc = dk_json(d, &q, images);
    free(path);
    if (rc == 0 && !json_is_array(*images)) {
        json_decref(*images);
        dk_seterr(d, "GET /images/json: answer is not an array");
        return -EIO;
    }
    return rc;
}

int docker_image_remove(struct docker *d, const char *image)
{
    return dk_image_req(d, "DELETE", image, "", NULL);
}

int docker_pull(struct docker *d, const char *ref, long stall_s, long timeout_ms,
                void (*on_message)(const json_t *msg, void *arg), void *arg)
{
    int rc = dk_check_image(d, ref);
    if (rc < 0)
        return rc;
    /* fromImage=NAME&tag=TAG: TAG is the tag or digest of ref, "latest" when it has none,
     * never empty (an empty tag pulls every tag) */
    char name[DK_MAX_NAME + 1], tag[DK_MAX_NAME + 1] = "latest";
    snprintf(name, sizeof name, "%s", ref);
    char *slash = strrchr(name, '/');
    char *at = strchr(slash ? slash : name, '@');
    char *colon = strrchr(slash ? slash : name, ':');
    char *cut = at ? at : colon;
    if (cut) {
        snprintf(tag, sizeof tag, "%s", cut + 1);
        *cut = '\0';
    }
    char *en = curl_easy_escape(d->curl, name, 0), *et = curl_easy_escape(d->curl, tag, 0);
    char *path = NULL;
    if (!en || !et || asprintf(&path, "/images/create?fromImage=%s&tag=%s", en, et) < 0)
        path = NULL;
    curl_free(en);
    curl_free(et);
    if (!path) {
        dk_seterr(d, "POST /images/create: out of memory");
        return -ENOMEM;
    }
    struct dk_req q = {
        .method = "POST", .path = path, .timeout_ms = timeout_ms, .stall_s = stall_s};
    rc = dk_msgs_run(d, &q, on_message, arg);
    free(path);
    return rc;
}

void docker_short_id(const char *id, char out[13])
{
    if (!id)
        id = "?";
    if (!strncmp(id, "sha256:", 7))
        id += 7;
    snprintf(out, 13, "%s", id);
}
