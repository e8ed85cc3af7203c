/*
 * jobtypes.c — see jobtypes.h: checks, image names, the generated Dockerfiles, the
 * in-memory build context (a tar), and the two kinds of builds.
 */
#include "tako/jobtypes.h"
#include "tako/log.h"
#include "tako/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- lists and checks ---- */

int jobtype_each(const char *list, int (*fn)(const char *item, size_t len, void *arg), void *arg)
{
    for (const char *p = list ? list : ""; *p;) {
        size_t n = strcspn(p, ",");
        const char *s = p, *e = p + n;
        while (s < e && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            e--;
        if (e > s) {
            int rc = fn(s, (size_t)(e - s), arg);
            if (rc)
                return rc;
        }
        p += n + (p[n] == ',');
    }
    return 0;
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

/* NAME: letters/digits, with . _ - inside. Returns its length (0: none). */
static size_t req_name_len(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && name_char(s[i]))
        i++;
    if (!i || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[i - 1]))
        return 0;
    return i;
}

bool jobtype_requirement_ok(const char *s, size_t len)
{
    if (!len || len > JOBTYPE_REQUIREMENT_MAX)
        return false;
    size_t i = req_name_len(s, len);
    if (!i)
        return false;
    if (i < len && s[i] == '[') { /* extras: [a,b] */
        size_t close = i + 1;
        while (close < len && s[close] != ']')
            close++;
        if (close >= len || close == i + 1)
            return false;
        for (size_t k = i + 1; k < close; k++)
            if (!name_char(s[k]) && s[k] != ',')
                return false;
        i = close + 1;
    }
    /* specifiers: OP VERSION, comma-separated (the comma is inside one list item only in a
     * request's JSON array; in the config's comma lists specifiers have a single clause) */
    while (i < len) {
        static const char *const ops[] = {"===", "==", ">=", "<=", "!=", "~=", ">", "<"};
        size_t oplen = 0;
        for (size_t k = 0; k < sizeof ops / sizeof ops[0] && !oplen; k++)
            if (strlen(ops[k]) <= len - i && !memcmp(s + i, ops[k], strlen(ops[k])))
                oplen = strlen(ops[k]); /* within len: s need not end there */
        if (!oplen)
            return false;
        i += oplen;
        size_t v = i;
        while (i < len && (isalnum((unsigned char)s[i]) || (s[i] && strchr(".*+!-_", s[i]))))
            i++;
        if (i == v)
            return false;
        if (i < len && s[i] == ',')
            i++;
        else if (i < len)
            return false;
    }
    return true;
}

static int check_requirement(const char *s, size_t len, void *why)
{
    if (jobtype_requirement_ok(s, len))
        return 0;
    snprintf(why, 256, "requirement \"%.*s\" is not NAME[extras][specifier] (e.g. numpy>=1.24)",
             (int)(len > 80 ? 80 : len), s);
    return -EINVAL;
}

/* Debian package names: [a-z0-9][a-z0-9+.-]+ */
static int check_package(const char *s, size_t len, void *why)
{
    bool ok =
        len >= 2 && len <= 100 && (islower((unsigned char)s[0]) || isdigit((unsigned char)s[0]));
    for (size_t i = 0; ok && i < len; i++)
        ok = islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) ||
             (s[i] && strchr("+.-", s[i]));
    if (ok)
        return 0;
    snprintf(why, 256, "package \"%.*s\" is not a Debian package name", (int)(len > 80 ? 80 : len),
             s);
    return -EINVAL;
}

/* KEY=VALUE: KEY a shell identifier; VALUE without control characters (no commas: the list
 * separator). */
static int check_env(const char *s, size_t len, void *why)
{
    size_t k = 0;
    while (k < len && (isalnum((unsigned char)s[k]) || s[k] == '_'))
        k++;
    bool ok = k > 0 && k < len && s[k] == '=' && !isdigit((unsigned char)s[0]);
    for (size_t i = k; ok && i < len; i++)
        ok = (unsigned char)s[i] >= 0x20 && s[i] != 0x7f;
    if (ok)
        return 0;
    snprintf(why, 256, "environment entry \"%.*s\" is not KEY=VALUE", (int)(len > 80 ? 80 : len),
             s);
    return -EINVAL;
}

/* A module to preload: dotted Python identifiers. */
static int check_module(const char *s, size_t len, void *why)
{
    bool ok =
        len > 0 && len <= 100 && !isdigit((unsigned char)s[0]) && s[0] != '.' && s[len - 1] != '.';
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)s[i]) || s[i] == '_' || (s[i] == '.' && s[i + 1] != '.');
    if (ok)
        return 0;
    snprintf(why, 256, "preload \"%.*s\" is not a Python module name", (int)(len > 80 ? 80 : len),
             s);
    return -EINVAL;
}

static int count_item(const char *s, size_t len, void *n)
{
    (void)s;
    (void)len;
    ++*(size_t *)n;
    return 0;
}

int jobtype_check(const struct tk_job_type *t, char *why, size_t wl)
{
    char reason[256] = "";
    int rc = jobtype_each(t->requirements, check_requirement, reason);
    if (!rc)
        rc = jobtype_each(t->packages, check_package, reason);
    if (!rc)
        rc = jobtype_each(t->environment, check_env, reason);
    if (!rc)
        rc = jobtype_each(t->preload, check_module, reason);
    size_t n = 0;
    jobtype_each(t->requirements, count_item, &n);
    if (!rc && n > JOBTYPE_MAX_REQUIREMENTS) {
        snprintf(reason, sizeof reason, "more than %d requirements", JOBTYPE_MAX_REQUIREMENTS);
        rc = -EINVAL;
    }
    const char *b = t->base_image ? t->base_image : "";
    if (!rc && *b && !docker_image_name_ok(b)) {
        snprintf(reason, sizeof reason, "base_image \"%.80s\" is not an image reference", b);
        rc = -EINVAL;
    }
    if (rc)
        snprintf(why, wl, "%s", reason);
    return rc;
}

/* ---- references and names ---- */

static bool is_version_hex(const char *v)
{
    return strlen(v) == JOBTYPE_VERSION_LEN && strspn(v, "0123456789abcdef") == JOBTYPE_VERSION_LEN;
}

bool jobtype_tag_ok(const char *tag)
{
    size_t n = strlen(tag);
    return n >= 1 && n <= JOBTYPE_TAG_MAX && strcmp(tag, "latest") && !is_version_hex(tag) &&
           strspn(tag, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n &&
           tag[0] != '.' && tag[0] != '-';
}

int jobtype_parse_ref(const char *ref, char name[TK_JOB_TYPE_NAME_MAX + 1],
                      char version[JOBTYPE_REF_VERSION_MAX + 1])
{
    const char *at = strchr(ref, '@');
    size_t n = at ? (size_t)(at - ref) : strlen(ref);
    if (!n || n > TK_JOB_TYPE_NAME_MAX || strlen(ref) > JOBTYPE_REF_MAX)
        return -EINVAL;
    memcpy(name, ref, n);
    name[n] = '\0';
    version[0] = '\0';
    if (!at)
        return 0;
    const char *v = at + 1;
    if (!strncmp(v, "sha256:", 7) && is_version_hex(v + 7))
        v += 7;
    if (strcmp(v, "latest") && !is_version_hex(v) && !jobtype_tag_ok(v))
        return -EINVAL;
    snprintf(version, JOBTYPE_REF_VERSION_MAX + 1, "%s", v);
    return 0;
}

const struct tk_job_type *jobtype_lookup(const struct tk_config *cfg, const char *ref,
                                         char version[JOBTYPE_REF_VERSION_MAX + 1])
{
    char name[TK_JOB_TYPE_NAME_MAX + 1], v[JOBTYPE_REF_VERSION_MAX + 1];
    if (jobtype_parse_ref(ref, name, version ? version : v) < 0)
        return NULL;
    return config_job_type(cfg, name);
}

/* The repository of a job type's images (not `default`'s): tako-vm-NAME. */
static void type_repo(const struct tk_job_type *t, char *buf, size_t len)
{
    snprintf(buf, len, "tako-vm-%s", t->name);
}

void jobtype_image(const struct tk_config *cfg, const struct tk_job_type *t, const char *version,
                   char *buf, size_t len)
{
    char repo[64];
    type_repo(t, repo, sizeof repo);
    if (!strcmp(t->name, "default"))
        snprintf(buf, len, "%s", cfg->docker_image);
    else
        snprintf(buf, len, "%s:%s", repo, version && *version ? version : "latest");
}

/* ---- where packages come from ---- */

enum source { SRC_DEBIAN, SRC_INDEX, SRC_WHEELHOUSE };

static enum source pip_source(const struct tk_config *cfg)
{
    if (cfg->environments_wheelhouse[0])
        return SRC_WHEELHOUSE;
    return cfg->environments_pip_index_url[0] ? SRC_INDEX : SRC_DEBIAN;
}

/* Debian's name for a pip package: python3-<name>, but for the few whose module is named
 * otherwise. */
static void debian_name(const char *req, size_t len, char *out, size_t outlen)
{
    static const char *const map[][2] = {
        {"scikit-learn", "python3-sklearn"},
        {"sklearn", "python3-sklearn"},
        {"pyyaml", "python3-yaml"},
        {"beautifulsoup4", "python3-bs4"},
        {"pillow", "python3-pil"},
        {"opencv-python", "python3-opencv"},
        {"python-dateutil", "python3-dateutil"},
        {"pytz", "python3-tz"},
        {"protobuf", "python3-protobuf"},
        {"msgpack", "python3-msgpack"},
    };
    char low[JOBTYPE_REQUIREMENT_MAX + 1];
    size_t n = 0;
    for (; n < len && n < sizeof low - 1; n++)
        low[n] = (char)(req[n] == '_' || req[n] == '.' ? '-' : tolower((unsigned char)req[n]));
    low[n] = '\0';
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(low, map[i][0])) {
            snprintf(out, outlen, "%s", map[i][1]);
            return;
        }
    snprintf(out, outlen, "python3-%s", low);
}

struct strbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

/* Room for `extra` more bytes (and a NUL), doubling. 0 or -ENOMEM (b->oom set). */
static int sb_reserve(struct strbuf *b, size_t extra)
{
    if (b->oom)
        return -ENOMEM;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
        b->oom = true;
        return -ENOMEM;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

static void sb_add(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0 || b->oom) {
        b->oom = true;
        if (n >= 0)
            free(s);
        return;
    }
    if (sb_reserve(b, (size_t)n) < 0) {
        free(s);
        return;
    }
    memcpy(b->p + b->len, s, (size_t)n + 1);
    b->len += (size_t)n;
    free(s);
}

/* Requirements with pip (" a b c") or as Debian packages (apt list), with why on error. */
struct req_words {
    struct strbuf *pip, *apt;
    enum source src;
    char *why;
    size_t wl;
};

static int add_req(const char *s, size_t len, void *arg)
{
    struct req_words *w = arg;
    if (w->src != SRC_DEBIAN) {
        sb_add(w->pip, " '%.*s'", (int)len, s); /* validated: no quote inside */
        return 0;
    }
    size_t n = req_name_len(s, len);
    if (n != len) {
        snprintf(w->why, w->wl,
                 "requirement \"%.*s\": extras and version specifiers need "
                 "environments.pip_index_url or environments.wheelhouse (without them, "
                 "requirements are Debian's python3-* packages)",
                 (int)len, s);
        return -EINVAL;
    }
    char deb[160];
    debian_name(s, len, deb, sizeof deb);
    sb_add(w->apt, " %s", deb);
    return 0;
}

static int add_pkg(const char *s, size_t len, void *arg)
{
    sb_add(arg, " %.*s", (int)len, s);
    return 0;
}

/*
 * The install steps for `reqs` (a comma list) and Debian `packages` on top of FROM `base`.
 * NULL with why on a requirement Debian cannot satisfy.
 */
static char *dockerfile_for(const struct tk_config *cfg, const char *base, const char *reqs,
                            const char *packages, const char *label_json, char *why, size_t wl)
{
    struct strbuf df = {0}, pip = {0}, apt = {0};
    struct req_words w = {&pip, &apt, pip_source(cfg), why, wl};
    if (jobtype_each(reqs, add_req, &w) || jobtype_each(packages, add_pkg, &apt)) {
        free(pip.p);
        free(apt.p);
        return NULL;
    }
    bool need_pip = pip.len > 0;
    sb_add(&df, "# generated by takod (common/jobtypes.c)\nFROM %s\nUSER root\n", base);
    if (apt.len || need_pip) {
        /* pip comes from Debian when the base lacks it */
        sb_add(&df,
               "RUN set -e; export DEBIAN_FRONTEND=noninteractive; pkgs='%s'; "
               "%s"
               "if [ -n \"$pkgs\" ]; then apt-get update -q; "
               "apt-get install -y -q --no-install-recommends $pkgs; "
               "rm -rf /var/lib/apt/lists/*; fi\n",
               apt.len ? apt.p + 1 : "",
               need_pip ? "python3 -m pip --version >/dev/null 2>&1 || pkgs=\"$pkgs python3-pip\"; "
                        : "");
    }
    if (need_pip) {
        if (w.src == SRC_WHEELHOUSE)
            sb_add(&df, "COPY wheelhouse/ /tmp/tako-wheelhouse/\n");
        sb_add(&df,
               "RUN python3 -m pip install --no-cache-dir --disable-pip-version-check "
               "--break-system-packages --only-binary=:all: %s%s%s && "
               "rm -rf /tmp/tako-wheelhouse\n",
               w.src == SRC_WHEELHOUSE ? "--no-index --find-links /tmp/tako-wheelhouse"
                                       : "--index-url ",
               w.src == SRC_WHEELHOUSE ? "" : cfg->environments_pip_index_url, pip.p);
    }
    sb_add(&df, "LABEL %s\nUSER %s\n", label_json, cfg->docker_user);
    free(pip.p);
    free(apt.p);
    if (df.oom) {
        free(df.p);
        snprintf(why, wl, "out of memory");
        return NULL;
    }
    return df.p;
}

static char *type_dockerfile(const struct tk_config *cfg, const struct tk_job_type *t, char *why,
                             size_t wl)
{
    char label[256];
    snprintf(label, sizeof label, "takod.job_type=\"%s\"", t->name);
    const char *base = t->base_image && *t->base_image ? t->base_image : cfg->docker_image;
    return dockerfile_for(cfg, base, t->requirements, t->packages, label, why, wl);
}

char *jobtype_dockerfile(const struct tk_config *cfg, const struct tk_job_type *t)
{
    char why[512];
    return type_dockerfile(cfg, t, why, sizeof why);
}

/* ---- the build context: a tar in memory ---- */

static void tar_octal(char *field, size_t width, unsigned long long v)
{
    snprintf(field, width, "%0*llo", (int)width - 1, v);
}

static int tar_add(struct strbuf *t, const char *name, const void *data, size_t len, bool dir)
{
    if (strlen(name) >= 100)
        return -ENAMETOOLONG;
    char h[512];
    memset(h, 0, sizeof h);
    memcpy(h, name, strlen(name));
    tar_octal(h + 100, 8, dir ? 0755 : 0644);
    tar_octal(h + 108, 8, 0);
    tar_octal(h + 116, 8, 0);
    tar_octal(h + 124, 12, dir ? 0 : len);
    tar_octal(h + 136, 12, (unsigned long long)time(NULL));
    h[156] = dir ? '5' : '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (size_t i = 0; i < sizeof h; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    size_t pad = dir ? 0 : (512 - len % 512) % 512;
    if (sb_reserve(t, 512 + (dir ? 0 : len) + pad) < 0)
        return -ENOMEM;
    memcpy(t->p + t->len, h, 512);
    t->len += 512;
    if (!dir) {
        memcpy(t->p + t->len, data, len);
        memset(t->p + t->len + len, 0, pad);
        t->len += len + pad;
    }
    return 0;
}

static int tar_finish(struct strbuf *t)
{
    static const char zeros[1024]; /* the end of an archive: two empty blocks */
    if (sb_reserve(t, sizeof zeros) < 0)
        return -ENOMEM;
    memcpy(t->p + t->len, zeros, sizeof zeros);
    t->len += sizeof zeros;
    return 0;
}

/* The wheelhouse's top-level *.whl files into the context's wheelhouse/. */
static int tar_wheelhouse(struct strbuf *t, const char *dir, char *why, size_t wl)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(why, wl, "environments.wheelhouse %s: %s", dir, strerror(errno));
        return -errno;
    }
    int rc = tar_add(t, "wheelhouse/", NULL, 0, true);
    size_t total = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.' || n < 5 || strcmp(de->d_name + n - 4, ".whl"))
            continue;
        char path[4400], name[120];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (snprintf(name, sizeof name, "wheelhouse/%s", de->d_name) >= 100)
            continue;
        char *data = NULL;
        size_t len = 0;
        rc = read_file(path, 512u << 20, &data, &len);
        if (rc == 0 && (total += len) > (512u << 20))
            rc = -EFBIG;
        if (rc == 0)
            rc = tar_add(t, name, data, len, false);
        free(data);
        if (rc < 0)
            snprintf(why, wl, "wheelhouse file %s: %s", path, strerror(-rc));
    }
    closedir(d);
    return rc;
}

/* ---- builds ---- */

/* The last lines a build printed, for the reason of a failure. */
struct tail {
    char buf[2048];
    size_t len;
    void (*progress)(const char *line, void *arg);
    void *arg;
};

static void tail_add(const char *raw, void *arg)
{
    struct tail *t = arg;
    char clean[4096];
    snprintf(clean, sizeof clean, "%s", raw);
    strip_ansi(clean);
    size_t n = strlen(clean);
    const char *text = clean;
    if (n >= sizeof t->buf) {
        text += n - (sizeof t->buf - 1);
        n = sizeof t->buf - 1;
    }
    if (t->len + n >= sizeof t->buf) {
        size_t drop = t->len + n - (sizeof t->buf - 1);
        memmove(t->buf, t->buf + drop, t->len - drop);
        t->len -= drop;
    }
    memcpy(t->buf + t->len, text, n);
    t->len += n;
    t->buf[t->len] = '\0';
    if (t->progress)
        t->progress(text, t->arg);
}

/* Build `dockerfile` (plus the wheelhouse when pip installs from it) as `tag`. */
static int build(struct docker *d, const struct tk_config *cfg, const char *dockerfile,
                 const char *tag, long timeout_ms, struct tail *tail, char image_id[80], char *why,
                 size_t wl)
{
    struct strbuf ctx = {0};
    int rc = tar_add(&ctx, "Dockerfile", dockerfile, strlen(dockerfile), false);
    if (rc == 0 && strstr(dockerfile, "COPY wheelhouse/"))
        rc = tar_wheelhouse(&ctx, cfg->environments_wheelhouse, why, wl);
    else if (rc < 0)
        snprintf(why, wl, "build context: %s", strerror(-rc));
    if (rc == 0)
        rc = tar_finish(&ctx);
    if (rc < 0) {
        free(ctx.p);
        return rc;
    }
    struct docker_build_opts o = {.tag = tag,
                                  .network = "host", /* the Debian mirror, the index */
                                  .timeout_ms = timeout_ms,
                                  .progress = tail_add,
                                  .progress_arg = tail};
    rc = docker_build(d, ctx.p, ctx.len, &o, image_id);
    free(ctx.p);
    if (rc < 0)
        snprintf(why, wl, "%s", docker_last_error(d));
    return rc;
}

/* The reason of a failed install in the installer's own words: its ERROR lines (pip's
 * "ERROR: ...", apt's "E: ..."), else the output's last lines; docker's summary ("The
 * command ... returned a non-zero code") only when the output says nothing. */
static void installer_words(const struct tail *t, const char *summary, char *err, size_t errlen)
{
    size_t n = 0;
    err[0] = '\0';
    for (const char *p = t->buf; *p && n + 1 < errlen;) {
        size_t len = strcspn(p, "\r\n");
        if (!strncmp(p, "ERROR", 5) || !strncmp(p, "E: ", 3)) {
            int w = snprintf(err + n, errlen - n, "%s%.*s", n ? " " : "", (int)len, p);
            n += w > 0 ? (size_t)w : 0;
        }
        p += len;
        p += strspn(p, "\r\n");
    }
    if (!n)
        snprintf(err, errlen, "%s", summary);
}

int jobtype_build(struct docker *d, const struct tk_config *cfg, const struct tk_job_type *t,
                  void (*progress)(const char *line, void *arg), void *arg,
                  struct jobtype_build_result *out)
{
    memset(out, 0, sizeof *out);
    char why[1024] = "";
    struct tail tail = {.progress = progress, .arg = arg};
    uint64_t t0 = now_mono_us();
    char *df = type_dockerfile(cfg, t, why, sizeof why);
    if (!df) {
        docker_set_error(d, why);
        return -EINVAL;
    }
    char tag[96];
    jobtype_image(cfg, t, "latest", tag, sizeof tag);
    int rc = build(d, cfg, df, tag, (long)cfg->environments_build_timeout * 1000, &tail,
                   out->image_id, why, sizeof why);
    free(df);
    snprintf(out->log_tail, sizeof out->log_tail, "%s", tail.buf);
    if (rc < 0) {
        char words[1024];
        installer_words(&tail, why, words, sizeof words);
        docker_set_error(d, words);
        return rc;
    }
    docker_short_id(out->image_id, out->version); /* JOBTYPE_VERSION_LEN hex digits */
    char repo[64];
    type_repo(t, repo, sizeof repo);
    snprintf(out->image_ref, sizeof out->image_ref, "%s:%s", repo, out->version);
    rc = docker_tag(d, out->image_id, repo, out->version);
    out->seconds = (double)(now_mono_us() - t0) / 1e6;
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int jobtype_requirements_image(struct docker *d, const struct tk_config *cfg, const char *base,
                               const char *const *reqs, size_t n, long timeout_ms, char *image,
                               size_t image_len, bool *built, char *err, size_t errlen)
{
    *built = false;
    json_t *info = NULL;
    int rc = docker_image_inspect(d, base, &info);
    if (rc < 0) {
        snprintf(err, errlen, "image %s: %s", base, docker_last_error(d));
        return rc;
    }
    char base_id[80];
    snprintf(base_id, sizeof base_id, "%s", json_string_value(json_object_get(info, "Id")) ?: "");
    json_decref(info);

    /* the key: base id, where packages come from, the sorted set without repeats */
    const char **sorted = calloc(n ? n : 1, sizeof *sorted);
    if (!sorted)
        return -ENOMEM;
    memcpy(sorted, reqs, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    struct strbuf key = {0}, list = {0};
    sb_add(&key, "%s\n%d %s %s\n", base_id, (int)pip_source(cfg), cfg->environments_pip_index_url,
           cfg->environments_wheelhouse);
    for (size_t i = 0; i < n; i++) {
        if (i && !strcmp(sorted[i], sorted[i - 1]))
            continue;
        sb_add(&key, "%s\n", sorted[i]);
        sb_add(&list, "%s%s", list.len ? "," : "", sorted[i]);
    }
    free(sorted);
    char hex[65];
    sha256_hex(key.p ? key.p : "", key.len, hex);
    free(key.p);
    snprintf(image, image_len, "tako-req-%.16s:latest", hex);
    if ((rc = docker_image_exists(d, image)) != 0) {
        free(list.p);
        if (rc < 0)
            snprintf(err, errlen, "image %s: %s", image, docker_last_error(d));
        return rc < 0 ? rc : 0; /* cached */
    }

    char why[1024] = "", label[64];
    snprintf(label, sizeof label, "takod.requirements=%.16s", hex);
    char *df = dockerfile_for(cfg, base_id, list.p ? list.p : "", "", label, why, sizeof why);
    free(list.p);
    if (!df) {
        snprintf(err, errlen, "%s", why);
        return -EINVAL;
    }
    struct tail tail = {0};
    char image_id[80];
    rc = build(d, cfg, df, image, timeout_ms, &tail, image_id, why, sizeof why);
    free(df);
    if (rc == -ETIMEDOUT) {
        snprintf(err, errlen, "installing the requirements took longer than the startup timeout");
    } else if (rc < 0) {
        installer_words(&tail, why, err, errlen);
    }
    *built = rc == 0;
    if (rc == 0) { /* the cache stays within its bound: the oldest images go */
        int pruned = jobtype_prune_requirement_images(d, cfg);
        if (pruned > 0)
            log_info("msg=\"removed old requirement images\" count=%d keep=%lld", pruned,
                     (long long)cfg->environments_max_requirement_images);
    }
    return rc;
}

static int by_created(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "Created"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "Created"));
    return x < y ? -1 : x > y;
}

int jobtype_prune_requirement_images(struct docker *d, const struct tk_config *cfg)
{
    json_t *images = NULL;
    int rc = docker_images_by_label(d, "takod.requirements", &images);
    if (rc < 0)
        return rc;
    size_t n = json_array_size(images), keep = (size_t)cfg->environments_max_requirement_images;
    int removed = 0;
    if (n > keep) {
        json_t **v = calloc(n, sizeof *v);
        if (!v) {
            json_decref(images);
            return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
            v[i] = json_array_get(images, i);
        qsort(v, n, sizeof *v, by_created);
        for (size_t i = 0; i < n - keep; i++) {
            json_t *tags = json_object_get(v[i], "RepoTags");
            const char *name = json_string_value(json_array_get(tags, 0));
            if (!name)
                name = json_string_value(json_object_get(v[i], "Id"));
            if (name && docker_image_remove(d, name) == 0)
                removed++;
        }
        free(v);
    }
    json_decref(images);
    return removed;
}
