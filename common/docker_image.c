/*
 * docker_image.c — the engine's image endpoints (see docker.h): inspect, remove, tag, list
 * by label, build and pull.
 *
 * Builds and pulls answer with a stream of JSON messages, one per line, and report their
 * failure inside a 200 (an {"error": ...} message): dk_msgs cuts the stream into lines as
 * it arrives (through the transport's stream consumer, dkhttp.c), hands each message on,
 * and turns the first error into -EIO. Image references are checked before they reach a
 * URL (docker_image_name_ok).
 */
#include "tako/docker.h"
#include "tako/dkhttp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* METHOD /images/{image}{suffix}; the 2xx answer's JSON into *out when out is set. */
static int dk_image_req(struct docker *d, const char *method, const char *image, const char *suffix,
                        json_t **out)
{
    int rc = dk_check_image(d, image);
    if (rc < 0)
        return rc;
    char path[DK_MAX_NAME + 32];
    snprintf(path, sizeof path, "/images/%s%s", image, suffix);
    struct dk_req q = {.method = method, .path = path, .timeout_ms = DK_TIMEOUT_MS};
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
    char *labels = o->labels ? json_dumps(o->labels, JSON_COMPACT) : NULL;
    char *el = labels ? dk_escape(labels) : NULL;
    char *path = NULL;
    rc = asprintf(&path, "/build?t=%s&rm=1&forcerm=1&networkmode=%s%s%s%s", o->tag,
                  o->network ? o->network : "none", o->nocache ? "&nocache=1" : "",
                  el ? "&labels=" : "", el ? el : "");
    free(el);
    free(labels);
    if (rc < 0) {
        dk_seterr(d, "POST /build: out of memory");
        return -ENOMEM;
    }
    struct dk_build b = {.o = o, .image_id = image_id};
    image_id[0] = '\0';
    struct dk_req q = {.method = "POST",
                       .path = path,
                       .body = tar,
                       .body_len = len,
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
    struct dk_req q = {.method = "POST", .path = path, .timeout_ms = DK_TIMEOUT_MS};
    rc = dk_do(d, &q);
    return rc < 0 ? rc : 0;
}

int docker_images_by_label(struct docker *d, const char *label, json_t **images)
{
    char *path = NULL;
    int rc = label ? dk_label_path(d, "/images/json?", label, &path) : 0;
    if (rc < 0)
        return rc;
    if (!label && !(path = strdup("/images/json"))) {
        dk_seterr(d, "GET /images/json: out of memory");
        return -ENOMEM;
    }
    struct dk_req q = {.method = "GET", .path = path, .timeout_ms = DK_TIMEOUT_MS};
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
    char *en = dk_escape(name), *et = dk_escape(tag);
    char *path = NULL;
    if (!en || !et || asprintf(&path, "/images/create?fromImage=%s&tag=%s", en, et) < 0)
        path = NULL;
    free(en);
    free(et);
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
