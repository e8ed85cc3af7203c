/*
 * docker.c — the engine's container and system endpoints (see docker.h): create, start,
 * wait, kill, inspect, logs, export, remove, list, attach, and the async start/remove an executor
 * collects later; ping and info. Images, builds and pulls are docker_image.c's.
 *
 * Every call checks what it puts into a URL path (ids, names, signals: dk_check_id), then
 * runs one request through the transport (dkhttp.c) and reads what it needs from the
 * answer. The create goes on its own kept connection (DK_LANE_CREATE): it is on every
 * job's path. Log streams are demultiplexed by dkframe.c into the caller's capped
 * buffers. Nothing here logs: -errno and docker_last_error().
 */
#include "tako/docker.h"
#include "tako/dkframe.h"
#include "tako/dkhttp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int docker_ping(struct docker *d)
{
    struct dk_req q = {.method = "GET", .path = "/_ping", .timeout_ms = DK_TIMEOUT_MS};
    int rc = dk_do(d, &q);
    return rc < 0 ? rc : 0;
}

int docker_info(struct docker *d, json_t **out)
{
    struct dk_req q = {.method = "GET", .path = "/info", .timeout_ms = DK_TIMEOUT_MS};
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
    json_t *ans = NULL;
    struct dk_req q = {.method = "POST",
                       .path = path,
                       .body = text,
                       .body_len = strlen(text),
                       .timeout_ms = DK_TIMEOUT_MS,
                       .lane = DK_LANE_CREATE};
    if ((rc = dk_json(d, &q, &ans)) < 0)
        return rc;
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
    struct dk_req q = {.method = method, .path = path, .timeout_ms = DK_TIMEOUT_MS};
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
                       .abort = DK_ABORT_POLL};
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
    struct dk_req q = {.method = "GET", .path = path, .timeout_ms = DK_TIMEOUT_MS};
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

/* The log stream's frames into the two capped buffers (stdin's, if any, with stdout's). */
struct dk_logs {
    struct dkframe f;
    struct tk_capbuf *out, *err;
};

static int dk_logs_put(void *arg, int stream, const char *p, size_t n)
{
    struct dk_logs *l = arg;
    struct tk_capbuf *b = stream == 2 ? l->err : l->out;
    if (!b)
        return 0;
    capbuf_append(b, p, n);
    return capbuf_short(b) ? -ENOMEM : 0;
}

static int dk_logs_feed(void *ctx, const char *p, size_t n)
{
    struct dk_logs *l = ctx;
    return dkframe_feed(&l->f, p, n, dk_logs_put, l);
}

int docker_logs(struct docker *d, const char *id, struct tk_capbuf *out, struct tk_capbuf *err)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 48];
    snprintf(path, sizeof path, "/containers/%s/logs?stdout=1&stderr=1", id);
    struct dk_logs l = {.out = out, .err = err};
    struct dk_req q = {.method = "GET",
                       .path = path,
                       .timeout_ms = DK_TIMEOUT_MS,
                       .stream = dk_logs_feed,
                       .stream_ctx = &l};
    rc = dk_do(d, &q);
    if (rc < 0)
        return rc;
    if (dkframe_partial(&l.f)) {
        dk_seterr(d, "GET %s: log stream ends inside a frame", path);
        return -EIO;
    }
    return 0;
}

int docker_export(struct docker *d, const char *id, long stall_s, long timeout_ms,
                  int (*consume)(void *ctx, const char *p, size_t n), void *ctx)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 32];
    snprintf(path, sizeof path, "/containers/%s/export", id);
    struct dk_req q = {.method = "GET",
                       .path = path,
                       .timeout_ms = timeout_ms,
                       .stall_s = stall_s,
                       .stream = consume,
                       .stream_ctx = ctx};
    rc = dk_do(d, &q);
    return rc < 0 ? rc : 0;
}

int docker_remove(struct docker *d, const char *id)
{
    return dk_container_op(d, "DELETE", id, "?force=1&v=1");
}

/* "<base>filters={"label":["LABEL"]}" (escaped) into *path (malloc'd). 0 or -errno. */
int dk_label_path(struct docker *d, const char *base, const char *label, char **path)
{
    if (!label || !label[0]) {
        dk_seterr(d, "%s: empty label filter", base);
        return -EINVAL;
    }
    json_t *f = json_pack("{s:[s]}", "label", label);
    char *ftext = f ? json_dumps(f, JSON_COMPACT) : NULL;
    json_decref(f);
    char *fesc = ftext ? dk_escape(ftext) : NULL;
    free(ftext);
    *path = NULL;
    if (!fesc || asprintf(path, "%sfilters=%s", base, fesc) < 0) {
        free(fesc);
        *path = NULL;
        dk_seterr(d, "%s: out of memory", base);
        return -ENOMEM;
    }
    free(fesc);
    return 0;
}

static int dk_list(struct docker *d, const char *label, bool with_labels, json_t **ids)
{
    char *path = NULL;
    int lrc = dk_label_path(d, "/containers/json?all=1&", label, &path);
    if (lrc < 0)
        return lrc;
    json_t *arr = NULL;
    struct dk_req q = {.method = "GET", .path = path, .timeout_ms = DK_TIMEOUT_MS};
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

int docker_list_by_label(struct docker *d, const char *label, json_t **ids)
{
    return dk_list(d, label, false, ids);
}

int docker_list_with_labels(struct docker *d, const char *label, json_t **items)
{
    return dk_list(d, label, true, items);
}

/* `method` on /containers/{id}{suffix}, sent and not waited for (dk_send). */
static int dk_container_send(struct docker *d, const char *method, const char *id,
                             const char *suffix, const char *extra, int timeout_ms, int *fd)
{
    int rc = dk_check_id(d, "container id", id);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 96];
    snprintf(path, sizeof path, "/containers/%s%s", id, suffix);
    return dk_send(d, method, path, extra, timeout_ms, fd);
}

int docker_attach(struct docker *d, const char *id, int timeout_ms, int *fd_out)
{
    int fd;
    int rc = dk_container_send(d, "POST", id, "/attach?stream=1&stdin=1&stdout=1&stderr=1",
                               "Upgrade: tcp\r\nConnection: Upgrade\r\n", timeout_ms, &fd);
    if (rc < 0)
        return rc;
    char what[32];
    snprintf(what, sizeof what, "attach %.12s", id);
    if ((rc = dk_hijack(d, fd, what)) < 0)
        return rc;
    *fd_out = fd;
    return 0;
}

int docker_start_async(struct docker *d, const char *id, int *fd)
{
    return dk_container_send(d, "POST", id, "/start", "Connection: close\r\n", DK_TIMEOUT_MS, fd);
}

int docker_remove_async(struct docker *d, const char *id, int *fd)
{
    return dk_container_send(d, "DELETE", id, "?force=1&v=1", "Connection: close\r\n",
                             DK_TIMEOUT_MS, fd);
}

int docker_async_finish(struct docker *d, int fd, int timeout_ms)
{
    return dk_finish(d, fd, timeout_ms);
}
