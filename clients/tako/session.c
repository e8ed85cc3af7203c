/*
 * session.c — `tako session SUBCOMMAND` and `tako repl`: a stateful interpreter on takod
 * (docs/SESSIONS.md). Every subcommand is one route:
 *
 *   new          POST   /sessions                  rm ID        DELETE /sessions/ID
 *   ls           GET    /sessions                  rm ID PATH   DELETE /sessions/ID/files/PATH
 *   ls ID [DIR]  GET    /sessions/ID/files?dir=    info ID      GET    /sessions/ID
 *   run ID       POST   /sessions/ID/execute       interrupt ID POST   /sessions/ID/interrupt
 *   put ID F [P] PUT    /sessions/ID/files/P       cells ID     GET    /sessions/ID/cells
 *   get ID P     GET    /sessions/ID/files/P
 *
 * Answers are checked like every remote command (remote_check: 3 unreachable or 5xx, 4 not
 * authorized, 1 refused — 404, 409 busy, 410 ended, 429 — with the server's detail).
 * `tako repl` reads cells from standard input (a terminal or a pipe) and runs them one by
 * one in one session.
 */
#include "tako.h"
#include "tako/util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SESSION_MAX_CODE  (16u << 20)  /* the server's limits.max_code_bytes is far below */
#define SESSION_MAX_STDIN (64u << 20)  /* the same for limits.max_input_bytes */
#define SESSION_MAX_FILE  (100u << 20) /* sessions.max_file_bytes' default */
#define SESSION_MAX_PATH  1024
#define SESSION_MAX_COMP  255
#define REPL_MAX_LINE     (1u << 20)
#define BIT(o)            (1ull << (o))

/* ---- helpers shared by the subcommands ---- */

char *tako_session_route(const char *id, const char *suffix)
{
    char *e = http_escape(id), *p = NULL;
    if (!e || asprintf(&p, "/sessions/%s%s", e, suffix ? suffix : "") < 0)
        p = NULL;
    free(e);
    return p;
}

char *tako_workspace_escape(const char *path, char *why, size_t len)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    if (n == 0 || n > SESSION_MAX_PATH || path[0] == '/') {
        snprintf(why, len, "a workspace path is 1 to %d bytes, relative", SESSION_MAX_PATH);
        return NULL;
    }
    char *out = malloc(n * 3 + 1); /* every byte escaped at most to %XX */
    if (!out) {
        snprintf(why, len, "out of memory");
        return NULL;
    }
    size_t o = 0;
    const char *p = path, *end = path + n;
    while (p < end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t cl = slash ? (size_t)(slash - p) : (size_t)(end - p);
        if (cl == 0 || cl > SESSION_MAX_COMP || (cl == 1 && p[0] == '.') ||
            (cl == 2 && p[0] == '.' && p[1] == '.')) {
            snprintf(why, len,
                     "a workspace path has no empty, \".\" or \"..\" components, each at "
                     "most %d bytes",
                     SESSION_MAX_COMP);
            free(out);
            return NULL;
        }
        if (o)
            out[o++] = '/';
        for (size_t i = 0; i < cl; i++) {
            unsigned char ch = (unsigned char)p[i];
            if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                ch == '-' || ch == '.' || ch == '_' || ch == '~')
                out[o++] = (char)ch;
            else
                o += (size_t)snprintf(out + o, 4, "%%%02X", ch);
        }
        p += cl + (slash ? 1 : 0);
    }
    out[o] = '\0';
    return out;
}

/* tako_workspace_escape, or NULL after a usage error naming the path. */
static char *workspace_escape(const char *cmd, const char *path)
{
    char why[200];
    char *e = tako_workspace_escape(path, why, sizeof why);
    if (!e)
        tako_usage_error(cmd, "\"%s\": %s", path, why);
    return e;
}

/* "/sessions/ID/files/<escaped path>", or NULL after printing why. */
static char *file_route(const char *cmd, const char *id, const char *path)
{
    char *ep = workspace_escape(cmd, path), *suffix = NULL, *route = NULL;
    if (ep && asprintf(&suffix, "/files/%s", ep) >= 0)
        route = tako_session_route(id, suffix);
    free(ep);
    free(suffix);
    return route;
}

/* Refuse the options a subcommand does not take. */
static int only_opts(struct args *a, const char *sub, unsigned long long allowed)
{
    allowed |= BIT(O_URL) | BIT(O_API_KEY) | BIT(O_JSON) | BIT(O_HELP);
    for (int i = 0; i < O_COUNT; i++)
        if (a->val[i] && !(allowed & BIT(i))) {
            tako_usage_error(a->cmd, "--%s does not apply to `tako session %s`", tako_opt_name(i),
                             sub);
            return -1;
        }
    return 0;
}

static bool is_blank(const char *line)
{
    return line[strspn(line, " \t\r\n")] == '\0';
}

static const char *str_of(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* The body of POST /sessions from --job-type, --memory, --cpus, --idle-timeout (and, for
 * `session new`, --timeout) and --max-lifetime. NULL after a usage error. */
static json_t *create_body(struct args *a, bool timeout_is_idle)
{
    json_t *b = json_object();
    if (opt_set(a, O_JOB_TYPE))
        json_object_set_new(b, "job_type", json_string(a->val[O_JOB_TYPE]));
    const char *idle = a->val[O_IDLE_TIMEOUT];
    if (!idle && timeout_is_idle)
        idle = a->val[O_TIMEOUT];
    long v;
    if (idle) {
        if (tako_parse_long(a->cmd, "the idle timeout", idle, 1, 30L * 86400, &v) < 0)
            goto bad;
        json_object_set_new(b, "idle_timeout", json_integer(v));
    }
    if (opt_set(a, O_MAX_LIFETIME)) {
        if (tako_parse_long(a->cmd, "--max-lifetime", a->val[O_MAX_LIFETIME], 1, 30L * 86400, &v) <
            0)
            goto bad;
        json_object_set_new(b, "max_lifetime", json_integer(v));
    }
    if (opt_set(a, O_MEMORY)) {
        const char *m = a->val[O_MEMORY];
        size_t digits = strspn(m, "0123456789");
        if (!*m || strlen(m) > 32) {
            tako_usage_error(a->cmd, "--memory is a size like 256m or 1g, not \"%s\"", m);
            goto bad;
        }
        if (m[digits] == '\0') {
            if (tako_parse_long(a->cmd, "--memory (bytes)", m, 1, 1L << 50, &v) < 0)
                goto bad;
            json_object_set_new(b, "memory", json_integer(v));
        } else {
            json_object_set_new(b, "memory", json_string(m)); /* the server parses sizes */
        }
    }
    if (opt_set(a, O_CPUS)) {
        char *end;
        errno = 0;
        double c = strtod(a->val[O_CPUS], &end);
        if (errno || end == a->val[O_CPUS] || *end || !isfinite(c) || c <= 0 || c > 1024) {
            tako_usage_error(a->cmd, "--cpus must be a number above 0, not \"%s\"", a->val[O_CPUS]);
            goto bad;
        }
        json_object_set_new(b, "cpus", json_real(c));
    }
    return b;
bad:
    json_decref(b);
    return NULL;
}

static void write_all(FILE *f, const char *s)
{
    if (s && *s)
        fputs(s, f);
}

static bool ends_nl(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n == 0 || s[n - 1] == '\n';
}

/*
 * Show a cell's answer: its stdout on stdout, then its result (the repr of the last
 * expression) on stdout; its stderr, the error's traceback and a status line (only when
 * not ok) on stderr. Returns 0 for ok, 1 otherwise.
 */
static int print_cell(const json_t *ans)
{
    const char *out = str_of(ans, "stdout"), *err = str_of(ans, "stderr");
    const char *status = str_of(ans, "status"), *result = str_of(ans, "result");
    write_all(stdout, out);
    if (!ends_nl(out))
        fputc('\n', stdout);
    if (result) {
        fputs(result, stdout);
        fputc('\n', stdout);
    }
    fflush(stdout);
    write_all(stderr, err);
    if (!ends_nl(err))
        fputc('\n', stderr);
    if (json_is_true(json_object_get(ans, "stdout_truncated")) ||
        json_is_true(json_object_get(ans, "stderr_truncated")))
        fprintf(stderr, "tako: the cell's output was truncated\n");
    json_t *e = json_object_get(ans, "error");
    bool ok = status && !strcmp(status, "ok");
    if (json_is_object(e)) {
        const char *tb = str_of(e, "traceback"), *type = str_of(e, "type"),
                   *msg = str_of(e, "message");
        if (tb && *tb) {
            fputs(tb, stderr);
            if (!ends_nl(tb))
                fputc('\n', stderr);
        } else {
            fprintf(stderr, "%s%s%s\n", type ? type : "error", msg && *msg ? ": " : "",
                    msg ? msg : "");
        }
    }
    if (!ok) {
        json_t *n = json_object_get(ans, "execution_count");
        fprintf(stderr, "tako: cell");
        if (json_is_integer(n))
            fprintf(stderr, " %lld", (long long)json_integer_value(n));
        fprintf(stderr, ": %s", status ? status : "unknown");
        if (json_is_object(e) && str_of(e, "type"))
            fprintf(stderr, " (%s)", str_of(e, "type"));
        fputc('\n', stderr);
    }
    if (json_is_true(json_object_get(ans, "restarted")))
        fprintf(stderr, "tako: the interpreter was restarted: its variables and imports are "
                        "gone (the workspace files stay)\n");
    fflush(stderr);
    return ok ? TAKO_EXIT_OK : TAKO_EXIT_FAILED;
}

/* POST /sessions/ID/execute {code, timeout?, stdin?}: *ans is the answer. */
static int run_cell(struct remote *r, const char *id, const char *code, size_t code_len,
                    long timeout, const char *stdin_text, json_t **ans)
{
    *ans = NULL;
    json_t *body = json_object();
    json_t *c = json_stringn(code, code_len);
    if (!c) {
        json_decref(body);
        fprintf(stderr, "tako: the code is not UTF-8 text\n");
        return TAKO_EXIT_USAGE;
    }
    json_object_set_new(body, "code", c);
    if (timeout > 0)
        json_object_set_new(body, "timeout", json_integer(timeout));
    if (stdin_text) {
        json_t *s = json_string(stdin_text);
        if (!s) {
            json_decref(body);
            fprintf(stderr, "tako: the standard input is not UTF-8 text\n");
            return TAKO_EXIT_USAGE;
        }
        json_object_set_new(body, "stdin", s);
    }
    char *route = tako_session_route(id, "/execute"), what[300];
    snprintf(what, sizeof what, "session %s", id);
    /* the cell's own timeout, or the largest a job type has, plus the start-up margin */
    int rc = route ? remote_call_json(r, "POST", route, body, (timeout > 0 ? timeout : 900) + 60,
                                      what, ans)
                   : TAKO_EXIT_INFRA;
    free(route);
    json_decref(body);
    return rc;
}

/* METHOD /sessions/ID<suffix> with a JSON answer. */
static int session_call(struct remote *r, const char *id, const char *method, const char *suffix,
                        json_t **out)
{
    char what[300];
    snprintf(what, sizeof what, "session %s", id);
    char *route = tako_session_route(id, suffix);
    int rc = route ? remote_call_json(r, method, route, NULL, 60, what, out) : TAKO_EXIT_INFRA;
    free(route);
    return rc;
}

static int create_session(struct remote *r, json_t *body, json_t **ans)
{
    return remote_call_json(r, "POST", "/sessions", body, 180, "create a session", ans);
}

/* ---- the subcommands ---- */

static int sub_new(struct remote *r)
{
    struct args *a = r->a;
    if (only_opts(a, "new",
                  BIT(O_JOB_TYPE) | BIT(O_MEMORY) | BIT(O_CPUS) | BIT(O_TIMEOUT) |
                      BIT(O_IDLE_TIMEOUT) | BIT(O_MAX_LIFETIME)) < 0 ||
        a->npos != 1) {
        if (a->npos != 1)
            tako_usage_error(a->cmd, "`session new` takes no arguments");
        return TAKO_EXIT_USAGE;
    }
    json_t *body = create_body(a, true), *ans = NULL;
    if (!body)
        return TAKO_EXIT_USAGE;
    int rc = create_session(r, body, &ans);
    json_decref(body);
    if (rc == 0) {
        const char *id = str_of(ans, "session_id");
        if (a->json) {
            tako_print_json(ans);
        } else if (id) {
            printf("%s\n", id);
        }
        if (!id) {
            fprintf(stderr, "tako: takod's answer has no session_id\n");
            rc = TAKO_EXIT_INFRA;
        }
    }
    json_decref(ans);
    return rc;
}

static int sub_run(struct remote *r)
{
    struct args *a = r->a;
    if (only_opts(a, "run", BIT(O_TIMEOUT) | BIT(O_STDIN)) < 0)
        return TAKO_EXIT_USAGE;
    if (a->npos < 2 || a->npos > 3) {
        tako_usage_error(a->cmd, "usage: tako session run ID [FILE|-] [-t S] [--stdin F]");
        return TAKO_EXIT_USAGE;
    }
    long timeout = 0;
    if (opt_set(a, O_TIMEOUT) &&
        tako_parse_long(a->cmd, "--timeout", a->val[O_TIMEOUT], 1, 86400, &timeout) < 0)
        return TAKO_EXIT_USAGE;
    const char *file = a->npos == 3 ? a->pos[2] : "-";
    if (opt_set(a, O_STDIN) && !strcmp(file, "-") && !strcmp(a->val[O_STDIN], "-")) {
        tako_usage_error(a->cmd, "the code and --stdin cannot both be standard input");
        return TAKO_EXIT_USAGE;
    }
    char *code = NULL, *in = NULL;
    size_t len = 0, inlen = 0;
    int frc = tako_read_file(file, SESSION_MAX_CODE, &code, &len);
    if (frc < 0) {
        tako_usage_error(a->cmd, "cannot read the code %s: %s", file,
                         frc == -EFBIG ? "too large" : strerror(-frc));
        return TAKO_EXIT_USAGE;
    }
    if (len == 0 || strspn(code, " \t\r\n") == len) {
        tako_usage_error(a->cmd, "the code in %s is empty", file);
        free(code);
        return TAKO_EXIT_USAGE;
    }
    if (opt_set(a, O_STDIN)) {
        frc = tako_read_file(a->val[O_STDIN], SESSION_MAX_STDIN, &in, &inlen);
        if (frc < 0 || memchr(in, '\0', inlen)) {
            tako_usage_error(a->cmd, "cannot read --stdin %s: %s", a->val[O_STDIN],
                             frc == -EFBIG ? "too large"
                             : frc < 0     ? strerror(-frc)
                                           : "it holds NUL bytes");
            free(code);
            free(in);
            return TAKO_EXIT_USAGE;
        }
    }
    json_t *ans = NULL;
    int rc = run_cell(r, a->pos[1], code, len, timeout, in, &ans);
    free(code);
    free(in);
    if (rc == 0) {
        if (a->json) {
            tako_print_json(ans);
            const char *st = str_of(ans, "status");
            rc = st && !strcmp(st, "ok") ? TAKO_EXIT_OK : TAKO_EXIT_FAILED;
        } else {
            rc = print_cell(ans);
        }
    }
    json_decref(ans);
    return rc;
}

static int sub_put(struct remote *r)
{
    struct args *a = r->a;
    if (only_opts(a, "put", 0) < 0)
        return TAKO_EXIT_USAGE;
    if (a->npos < 3 || a->npos > 4) {
        tako_usage_error(a->cmd, "usage: tako session put ID LOCAL [REMOTE]");
        return TAKO_EXIT_USAGE;
    }
    const char *id = a->pos[1], *local = a->pos[2], *remote = a->npos == 4 ? a->pos[3] : NULL;
    if (!remote) {
        if (!strcmp(local, "-")) {
            tako_usage_error(a->cmd, "name the REMOTE path when LOCAL is - (standard input)");
            return TAKO_EXIT_USAGE;
        }
        const char *slash = strrchr(local, '/');
        remote = slash ? slash + 1 : local;
    }
    char *route = file_route(a->cmd, id, remote);
    if (!route)
        return TAKO_EXIT_USAGE;
    char *data = NULL;
    size_t len = 0;
    int frc = tako_read_file(local, SESSION_MAX_FILE, &data, &len);
    if (frc < 0) {
        tako_usage_error(a->cmd, "cannot read %s: %s", local,
                         frc == -EFBIG ? "larger than 100 MiB" : strerror(-frc));
        free(route);
        return TAKO_EXIT_USAGE;
    }
    char what[1400];
    snprintf(what, sizeof what, "session %s, upload %s", id, remote);
    struct http_resp resp;
    int trc =
        http_request_raw(&r->c, "PUT", route, data, len, "application/octet-stream", 600, &resp);
    free(route);
    char hex[65];
    sha256_hex(data, len, hex);
    free(data);
    int rc = remote_check(r, trc, &resp, what, 0);
    if (rc == 0) {
        json_t *ans = json_loadb(resp.body, resp.len, 0, NULL);
        const char *sum = str_of(ans, "sha256");
        if (sum && strcasecmp(sum, hex) != 0) {
            fprintf(stderr, "tako: %s: takod stored sha256 %s, not %s\n", what, sum, hex);
            rc = TAKO_EXIT_INFRA;
        } else if (a->json && ans) {
            tako_print_json(ans);
        } else {
            const char *p = str_of(ans, "path");
            printf("%s (%zu bytes, sha256 %.16s...)\n", p ? p : remote, len, hex);
        }
        json_decref(ans);
    }
    http_resp_free(&resp);
    return rc;
}

/* Write data to dest through dest.part.PID, then rename. 0 or -errno. */
static int write_atomically(const char *dest, const char *data, size_t len)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.part.%ld", dest, (long)getpid()) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    int rc = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, dest) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

static int sub_get(struct remote *r)
{
    struct args *a = r->a;
    if (only_opts(a, "get", BIT(O_OUT) | BIT(O_FORCE)) < 0)
        return TAKO_EXIT_USAGE;
    if (a->npos != 3) {
        tako_usage_error(a->cmd, "usage: tako session get ID REMOTE [-o LOCAL|-] [--force]");
        return TAKO_EXIT_USAGE;
    }
    const char *id = a->pos[1], *remote = a->pos[2];
    const char *base = strrchr(remote, '/');
    base = base && base[1] ? base + 1 : remote;
    const char *dest = opt_set(a, O_OUT) ? a->val[O_OUT] : base;
    bool to_stdout = !strcmp(dest, "-");
    char *route = file_route(a->cmd, id, remote);
    if (!route)
        return TAKO_EXIT_USAGE;
    if (!to_stdout && !opt_set(a, O_FORCE) && access(dest, F_OK) == 0) {
        fprintf(stderr, "tako: %s exists; pass --force to overwrite it, or -o FILE\n", dest);
        free(route);
        return TAKO_EXIT_USAGE;
    }
    char what[1400];
    snprintf(what, sizeof what, "session %s, file %s", id, remote);
    struct http_resp resp;
    int trc = http_request(&r->c, "GET", route, NULL, 600, &resp);
    free(route);
    int rc = remote_check(r, trc, &resp, what, 0);
    if (rc) {
        http_resp_free(&resp);
        return rc;
    }
    char hex[65];
    sha256_hex(resp.body, resp.len, hex);
    if (resp.etag[0] && strlen(resp.etag) == 64 && strcasecmp(resp.etag, hex) != 0) {
        fprintf(stderr, "tako: %s: sha256 %s does not match the ETag %s; not saved\n", what, hex,
                resp.etag);
        http_resp_free(&resp);
        return TAKO_EXIT_INFRA;
    }
    if (to_stdout) {
        fwrite(resp.body, 1, resp.len, stdout);
        fflush(stdout);
    } else {
        int wrc = write_atomically(dest, resp.body, resp.len);
        if (wrc < 0) {
            fprintf(stderr, "tako: cannot write %s: %s\n", dest, strerror(-wrc));
            http_resp_free(&resp);
            return TAKO_EXIT_USAGE;
        }
        if (a->json) {
            json_t *j = json_pack("{s:s, s:s, s:I, s:s}", "path", remote, "saved_to", dest, "size",
                                  (json_int_t)resp.len, "sha256", hex);
            tako_print_json(j);
            json_decref(j);
        } else {
            fprintf(stderr, "tako: saved %s (%zu bytes, sha256 %.16s...) to %s\n", remote, resp.len,
                    hex, dest);
        }
    }
    http_resp_free(&resp);
    return TAKO_EXIT_OK;
}

static void print_json_scalar(const json_t *v, int width)
{
    if (json_is_string(v)) {
        printf("%-*s", width, json_string_value(v));
        return;
    }
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9)) : NULL;
    printf("%-*s", width, s ? s : "-");
    free(s);
}

static int sub_ls(struct remote *r)
{
    struct args *a = r->a;
    if (only_opts(a, "ls", 0) < 0)
        return TAKO_EXIT_USAGE;
    if (a->npos > 3) {
        tako_usage_error(a->cmd, "usage: tako session ls [ID [DIR]]");
        return TAKO_EXIT_USAGE;
    }
    json_t *ans = NULL;
    int rc;
    if (a->npos == 1) {
        rc = remote_call_json(r, "GET", "/sessions", NULL, 60, "list sessions", &ans);
        if (rc == 0 && a->json) {
            tako_print_json(ans);
        } else if (rc == 0) {
            json_t *items = json_object_get(ans, "items"), *s;
            size_t i;
            if (json_array_size(items) == 0)
                fprintf(stderr, "tako: no live sessions\n");
            else
                printf("%-36s  %-8s  %-16s  %5s  %s\n", "SESSION", "STATUS", "JOB TYPE", "CELLS",
                       "EXPIRES");
            json_array_foreach(items, i, s)
            {
                print_json_scalar(json_object_get(s, "session_id"), 36);
                printf("  ");
                print_json_scalar(json_object_get(s, "status"), 8);
                printf("  ");
                print_json_scalar(json_object_get(s, "job_type"), 16);
                printf("  %5lld  ",
                       (long long)json_integer_value(json_object_get(s, "execution_count")));
                print_json_scalar(json_object_get(s, "expires_at"), 0);
                printf("\n");
            }
        }
        json_decref(ans);
        return rc;
    }
    const char *id = a->pos[1], *dir = a->npos == 3 ? a->pos[2] : NULL;
    char *suffix = NULL;
    if (dir) {
        char *ed = workspace_escape(a->cmd, dir); /* checked like a path; sent as ?dir= */
        char *eq = ed ? http_escape(dir) : NULL;
        free(ed);
        if (!eq || asprintf(&suffix, "/files?dir=%s", eq) < 0)
            suffix = NULL;
        free(eq);
        if (!suffix)
            return TAKO_EXIT_USAGE;
    }
    rc = session_call(r, id, "GET", suffix ? suffix : "/files", &ans);
    free(suffix);
    if (rc == 0 && a->json) {
        tako_print_json(ans);
    } else if (rc == 0) {
        json_t *items = json_object_get(ans, "items"), *f;
        size_t i;
        json_array_foreach(items, i, f)
        {
            const char *type = str_of(f, "type");
            bool isdir = type && !strcmp(type, "dir");
            printf("%c %12lld  ", isdir ? 'd' : '-',
                   (long long)json_integer_value(json_object_get(f, "size")));
            print_json_scalar(json_object_get(f, "mtime"), 27);
            const char *p = str_of(f, "path");
            printf("  %s%s\n",
                   p                   ? p
                   : str_of(f, "name") ? str_of(f, "name")
                                       : "?",
                   isdir ? "/" : "");
        }
        if (json_is_true(json_object_get(ans, "truncated")))
            fprintf(stderr, "tako: the listing was cut at %zu entries\n", json_array_size(items));
    }
    json_decref(ans);
    return rc;
}

static int sub_rm(struct remote *r)
{
    struct args *a = r->a;
    if (only_opts(a, "rm", 0) < 0)
        return TAKO_EXIT_USAGE;
    if (a->npos < 2 || a->npos > 3) {
        tako_usage_error(a->cmd, "usage: tako session rm ID [PATH]");
        return TAKO_EXIT_USAGE;
    }
    const char *id = a->pos[1];
    if (a->npos == 3) {
        char *route = file_route(a->cmd, id, a->pos[2]);
        if (!route)
            return TAKO_EXIT_USAGE;
        char what[1400];
        snprintf(what, sizeof what, "session %s, remove %s", id, a->pos[2]);
        struct http_resp resp;
        int trc = http_request(&r->c, "DELETE", route, NULL, 60, &resp);
        free(route);
        int rc = remote_check(r, trc, &resp, what, 0);
        if (rc == 0 && !a->json)
            fprintf(stderr, "tako: removed %s\n", a->pos[2]);
        else if (rc == 0)
            printf("{\"removed\": true}\n");
        http_resp_free(&resp);
        return rc;
    }
    json_t *ans = NULL;
    int rc = session_call(r, id, "DELETE", NULL, &ans);
    if (rc == 0) {
        if (a->json) {
            tako_print_json(ans);
        } else {
            const char *st = str_of(ans, "status");
            printf("%s %s\n", id, st ? st : "closed");
        }
    }
    json_decref(ans);
    return rc;
}

static int sub_simple(struct remote *r, const char *sub, const char *method, const char *suffix)
{
    struct args *a = r->a;
    if (only_opts(a, sub, 0) < 0)
        return TAKO_EXIT_USAGE;
    if (a->npos != 2) {
        tako_usage_error(a->cmd, "usage: tako session %s ID", sub);
        return TAKO_EXIT_USAGE;
    }
    json_t *ans = NULL;
    int rc = session_call(r, a->pos[1], method, suffix, &ans);
    if (rc == 0) {
        if (!a->json && !strcmp(sub, "interrupt")) {
            bool was = json_is_true(json_object_get(ans, "interrupted"));
            printf("%s\n", was ? "interrupted" : "idle (no cell was running)");
        } else {
            tako_print_json(ans);
        }
    }
    json_decref(ans);
    return rc;
}

static int sub_cells(struct remote *r)
{
    struct args *a = r->a;
    if (only_opts(a, "cells", BIT(O_LIMIT) | BIT(O_OFFSET)) < 0)
        return TAKO_EXIT_USAGE;
    if (a->npos != 2) {
        tako_usage_error(a->cmd, "usage: tako session cells ID [--limit N] [--offset N]");
        return TAKO_EXIT_USAGE;
    }
    long limit = 100, offset = 0;
    if ((opt_set(a, O_LIMIT) &&
         tako_parse_long(a->cmd, "--limit", a->val[O_LIMIT], 1, 1000, &limit) < 0) ||
        (opt_set(a, O_OFFSET) &&
         tako_parse_long(a->cmd, "--offset", a->val[O_OFFSET], 0, 1000000000, &offset) < 0))
        return TAKO_EXIT_USAGE;
    char suffix[96];
    snprintf(suffix, sizeof suffix, "/cells?limit=%ld&offset=%ld", limit, offset);
    json_t *ans = NULL;
    int rc = session_call(r, a->pos[1], "GET", suffix, &ans);
    if (rc == 0 && a->json) {
        tako_print_json(ans);
    } else if (rc == 0) {
        json_t *items = json_object_get(ans, "items"), *c;
        size_t i;
        json_array_foreach(items, i, c)
        {
            const char *code = str_of(c, "code"), *st = str_of(c, "status");
            size_t first = code ? strcspn(code, "\n") : 0;
            printf("[%lld] %-11s %.*s%s\n",
                   (long long)json_integer_value(json_object_get(c, "execution_count")),
                   st ? st : "?", (int)(first > 100 ? 100 : first), code ? code : "",
                   code && (first > 100 || (code[first] && !is_blank(code + first))) ? " ..." : "");
        }
        if (json_is_true(json_object_get(ans, "has_more")))
            fprintf(stderr, "tako: more cells: --offset %ld\n", offset + limit);
    }
    json_decref(ans);
    return rc;
}

int cmd_session(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    const char *sub = a->pos[0];
    if (!strcmp(sub, "new"))
        return sub_new(&r);
    if (!strcmp(sub, "run"))
        return sub_run(&r);
    if (!strcmp(sub, "put"))
        return sub_put(&r);
    if (!strcmp(sub, "get"))
        return sub_get(&r);
    if (!strcmp(sub, "ls"))
        return sub_ls(&r);
    if (!strcmp(sub, "rm") || !strcmp(sub, "close"))
        return sub_rm(&r);
    if (!strcmp(sub, "cells"))
        return sub_cells(&r);
    if (!strcmp(sub, "info"))
        return sub_simple(&r, "info", "GET", NULL);
    if (!strcmp(sub, "interrupt"))
        return sub_simple(&r, "interrupt", "POST", "/interrupt");
    tako_usage_error(a->cmd,
                     "unknown subcommand \"%s\" (new, run, put, get, ls, rm, cells, info, "
                     "interrupt)",
                     sub);
    return TAKO_EXIT_USAGE;
}

/* ---- tako repl ---- */

static volatile sig_atomic_t repl_sigint, repl_quit;

static void repl_on_signal(int sig)
{
    if (sig == SIGINT)
        repl_sigint = 1;
    else
        repl_quit = 1;
}

struct repl {
    struct remote *r;
    const char *id;
    bool interrupt_sent;
};

/* While a cell runs: Ctrl-C sends POST /sessions/ID/interrupt (once per press). */
static void repl_tick(void *ud)
{
    struct repl *p = ud;
    if (!repl_sigint && !repl_quit)
        return;
    repl_sigint = 0;
    if (p->interrupt_sent && !repl_quit)
        return;
    p->interrupt_sent = true;
    struct http_client c = p->r->c;
    c.tick = NULL; /* no recursion */
    char *route = tako_session_route(p->id, "/interrupt");
    struct http_resp resp;
    if (route && http_request(&c, "POST", route, NULL, 10, &resp) == 0 && resp.status == 200)
        fprintf(stderr, "\ntako: interrupting the cell\n");
    else if (route)
        fprintf(stderr, "\ntako: could not interrupt the cell (HTTP %ld%s%s)\n", resp.status,
                resp.err[0] ? ": " : "", resp.err);
    if (route)
        http_resp_free(&resp);
    free(route);
}

/* The lexical state of the cell being read, enough to tell when a statement is complete. */
struct scan {
    int depth;   /* open ( [ { */
    char triple; /* inside a ''' or """ string: its quote */
    bool cont;   /* the last line ended with a backslash */
    bool block;  /* a compound statement (a line ending with ':' or a decorator) */
    bool deco;   /* the last line was a decorator: the next line at column 0 belongs to it */
    bool gap;    /* a blank line was kept in the block (more input was waiting) */
    char last;   /* the last significant character of the last line */
};

static void scan_line(struct scan *s, const char *line, size_t n)
{
    char str = 0;
    s->last = 0;
    for (size_t i = 0; i < n; i++) {
        char c = line[i];
        if (s->triple) {
            if (c == '\\')
                i++;
            else if (c == s->triple && i + 2 < n + 0 && line[i + 1] == c && line[i + 2] == c) {
                s->triple = 0;
                i += 2;
                s->last = c;
            }
            continue;
        }
        if (str) {
            if (c == '\\')
                i++;
            else if (c == str)
                str = 0;
            continue;
        }
        if (c == '#')
            break;
        if (c == '\'' || c == '"') {
            if (i + 2 < n && line[i + 1] == c && line[i + 2] == c) {
                s->triple = c;
                i += 2;
            } else {
                str = c;
            }
            s->last = c;
            continue;
        }
        if (c == '(' || c == '[' || c == '{')
            s->depth++;
        else if ((c == ')' || c == ']' || c == '}') && s->depth > 0)
            s->depth--;
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            s->last = c;
    }
    size_t e = n;
    while (e > 0 && (line[e - 1] == '\n' || line[e - 1] == '\r'))
        e--;
    s->cont = !s->triple && e > 0 && line[e - 1] == '\\';
    if (!s->triple && s->depth == 0 && !s->cont && s->last == ':')
        s->block = true;
    s->deco = line[0] == '@' && s->depth == 0;
    if (s->deco)
        s->block = true;
}

static bool scan_open(const struct scan *s)
{
    return s->depth > 0 || s->triple || s->cont;
}

/* A line at column 0 that continues a compound statement rather than starting a new one. */
static bool continues_block(const char *line)
{
    static const char *const words[] = {"else", "elif", "except", "finally", "case"};
    if (line[0] == ' ' || line[0] == '\t' || line[0] == '#' || line[0] == ')' || line[0] == ']' ||
        line[0] == '}')
        return true;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if (!strncmp(line, words[i], n) && (line[n] == ':' || line[n] == ' ' || line[n] == '\t'))
            return true;
    }
    return false;
}

/* Standard input, read with read(2) so that the REPL knows whether more input is waiting
 * (a file or a pipe that was written ahead) or not (someone is typing). */
struct reader {
    char buf[65536];
    size_t start, end;
    bool eof;
};

/* True when a line is already buffered or the descriptor has bytes to read now. */
static bool reader_pending(struct reader *rd)
{
    if (rd->start < rd->end)
        return true;
    if (rd->eof)
        return false;
    struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP));
}

/*
 * One line into buf (at most cap - 1 bytes kept, *too_long when more; the newline kept).
 * 1 a line, 0 the end of input, -EINTR a signal came before a whole line.
 */
static int read_line(struct reader *rd, char *buf, size_t cap, bool *too_long)
{
    *too_long = false;
    size_t n = 0;
    for (;;) {
        if (rd->start == rd->end) {
            if (rd->eof)
                break;
            ssize_t got = read(STDIN_FILENO, rd->buf, sizeof rd->buf);
            if (got < 0 && errno == EINTR)
                return -EINTR;
            if (got <= 0) {
                rd->eof = true;
                break;
            }
            rd->start = 0;
            rd->end = (size_t)got;
        }
        char c = rd->buf[rd->start++];
        if (n + 1 < cap)
            buf[n++] = c;
        else
            *too_long = true;
        if (c == '\n') {
            buf[n] = '\0';
            return 1;
        }
    }
    buf[n] = '\0';
    return n > 0 || *too_long ? 1 : 0;
}

struct cellbuf {
    char *text;
    size_t len, cap;
};

static int cellbuf_add(struct cellbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 2 > SESSION_MAX_CODE)
        return -EFBIG;
    if (b->len + n + 2 > b->cap) {
        size_t cap = (b->len + n + 2) * 2;
        char *g = realloc(b->text, cap);
        if (!g)
            return -ENOMEM;
        b->text = g;
        b->cap = cap;
    }
    memcpy(b->text + b->len, s, n);
    b->len += n;
    if (n == 0 || s[n - 1] != '\n')
        b->text[b->len++] = '\n';
    b->text[b->len] = '\0';
    return 0;
}

/* False (after saying so) when the session has ended. */
static bool session_alive(struct repl *p)
{
    char *route = tako_session_route(p->id, NULL);
    struct http_resp resp;
    bool alive = true;
    if (route && http_request(&p->r->c, "GET", route, NULL, 30, &resp) == 0) {
        json_t *info = json_loadb(resp.body, resp.len, 0, NULL);
        const char *st = str_of(info, "status"), *why = str_of(info, "end_reason");
        if (resp.status == 404 || resp.status == 410 ||
            (st && strcmp(st, "ready") && strcmp(st, "busy"))) {
            fprintf(stderr, "tako: session %s has ended%s%s\n", p->id, why ? ": " : "",
                    why ? why : "");
            alive = false;
        }
        json_decref(info);
    }
    if (route)
        http_resp_free(&resp);
    free(route);
    return alive;
}

/* Run the cell in b (if any); clears b and the scanner. Returns 0, or the exit code that
 * ends the REPL (the session ended or takod is unreachable). */
static int repl_flush(struct repl *p, struct cellbuf *b, struct scan *s, long timeout)
{
    int rc = 0;
    if (b->len > 0 && !is_blank(b->text)) {
        json_t *ans = NULL;
        p->interrupt_sent = false;
        repl_sigint = 0;
        int crc = run_cell(p->r, p->id, b->text, b->len, timeout, NULL, &ans);
        if (crc == 0)
            print_cell(ans);
        else if (crc != TAKO_EXIT_FAILED)
            rc = crc; /* unreachable, 5xx, not authorized: the REPL ends */
        else if (!session_alive(p))
            rc = TAKO_EXIT_FAILED; /* refused because the session has ended (410) */
        /* else refused for a reason said (409 busy, 422): the REPL goes on */
        json_decref(ans);
    }
    b->len = 0;
    if (b->text)
        b->text[0] = '\0';
    memset(s, 0, sizeof *s);
    return rc;
}

int cmd_repl(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    long timeout = 0;
    if (opt_set(a, O_TIMEOUT) &&
        tako_parse_long(a->cmd, "--timeout", a->val[O_TIMEOUT], 1, 86400, &timeout) < 0)
        return TAKO_EXIT_USAGE;
    bool created = a->npos == 0;
    char id[256];
    if (created) {
        json_t *body = create_body(a, false), *ans = NULL;
        if (!body)
            return TAKO_EXIT_USAGE;
        int rc = create_session(&r, body, &ans);
        json_decref(body);
        if (rc)
            return rc;
        const char *sid = str_of(ans, "session_id");
        if (!sid || strlen(sid) >= sizeof id) {
            fprintf(stderr, "tako: takod's answer has no session_id\n");
            json_decref(ans);
            return TAKO_EXIT_INFRA;
        }
        snprintf(id, sizeof id, "%s", sid);
        json_decref(ans);
    } else {
        if (opt_set(a, O_JOB_TYPE) || opt_set(a, O_MEMORY) || opt_set(a, O_CPUS) ||
            opt_set(a, O_IDLE_TIMEOUT) || opt_set(a, O_MAX_LIFETIME)) {
            tako_usage_error(a->cmd, "the session options are for a new session, not ID");
            return TAKO_EXIT_USAGE;
        }
        snprintf(id, sizeof id, "%s", a->pos[0]);
        json_t *info = NULL;
        int rc = session_call(&r, id, "GET", NULL, &info);
        const char *st = str_of(info, "status");
        if (rc == 0 && st && strcmp(st, "ready") && strcmp(st, "busy")) {
            fprintf(stderr, "tako: session %s has ended (%s)\n", id, st);
            rc = TAKO_EXIT_FAILED;
        }
        json_decref(info);
        if (rc)
            return rc;
    }
    bool tty = isatty(STDIN_FILENO);
    fprintf(stderr, "tako: session %s%s\n", id, created ? " (closed when the REPL ends)" : "");
    if (tty)
        fprintf(stderr, "tako: a blank line ends a block; :quit (or Ctrl-D) leaves, Ctrl-C "
                        "interrupts a running cell\n");

    struct sigaction sa = {.sa_handler = repl_on_signal}; /* no SA_RESTART: reads return */
    sigemptyset(&sa.sa_mask);
    struct sigaction old_int, old_term, old_hup;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    sigaction(SIGHUP, &sa, &old_hup);

    struct repl p = {.r = &r, .id = id};
    r.c.tick = repl_tick;
    r.c.tick_ud = &p;
    struct cellbuf b = {0};
    struct scan s = {0};
    char *line = malloc(REPL_MAX_LINE);
    struct reader *rdp = malloc(sizeof *rdp);
    if (!rdp) {
        free(line);
        line = NULL;
    } else {
        rdp->start = rdp->end = 0;
        rdp->eof = false;
    }
    int rc = line ? 0 : TAKO_EXIT_INFRA;
    while (rc == 0 && !repl_quit) {
        if (tty) {
            fputs(b.len ? "... " : ">>> ", stderr);
            fflush(stderr);
        }
        bool too_long;
        int got = read_line(rdp, line, REPL_MAX_LINE, &too_long);
        char *l = line;
        if (got <= 0) {
            if (got == -EINTR && !repl_quit) {
                repl_sigint = 0;
                fputs("\nKeyboardInterrupt\n", stderr);
                b.len = 0;
                memset(&s, 0, sizeof s);
                continue;
            }
            if (!repl_quit)
                rc = repl_flush(&p, &b, &s, timeout); /* end of input: run what is left */
            break;
        }
        if (too_long) {
            fprintf(stderr, "tako: a line is longer than %u bytes; the cell is dropped\n",
                    REPL_MAX_LINE);
            b.len = 0;
            memset(&s, 0, sizeof s);
            continue;
        }
        if (b.len == 0) {
            char cmdword[16];
            snprintf(cmdword, sizeof cmdword, "%.*s", (int)strcspn(l, " \t\r\n"), l);
            if (!strcmp(cmdword, ":quit") || !strcmp(cmdword, ":q") || !strcmp(cmdword, ":exit"))
                break;
            if (is_blank(l))
                continue;
        } else if (!scan_open(&s)) {
            if (is_blank(l)) {
                /* A blank line ends a block, unless more input is already waiting (a file
                 * or a script piped in): then a block may go on after it, and the next line
                 * at column 0 ends it. */
                if (tty || !reader_pending(rdp)) {
                    rc = repl_flush(&p, &b, &s, timeout);
                    continue;
                }
                s.gap = true;
                cellbuf_add(&b, "");
                continue;
            }
            if (s.block && !s.deco && !continues_block(l)) /* a new statement at column 0 */
                rc = repl_flush(&p, &b, &s, timeout);
            if (rc)
                break;
        }
        if (cellbuf_add(&b, l) < 0) {
            fprintf(stderr, "tako: the cell is larger than %u bytes; dropped\n", SESSION_MAX_CODE);
            b.len = 0;
            memset(&s, 0, sizeof s);
            continue;
        }
        scan_line(&s, l, strlen(l));
        if (!scan_open(&s) && !s.block)
            rc = repl_flush(&p, &b, &s, timeout); /* a complete simple statement */
    }
    free(line);
    free(rdp);
    free(b.text);
    r.c.tick = NULL;
    if (tty && rc == 0)
        fputc('\n', stderr);
    if (created) {
        json_t *ans = NULL;
        int crc = session_call(&r, id, "DELETE", NULL, &ans);
        if (crc == 0)
            fprintf(stderr, "tako: session %s closed\n", id);
        json_decref(ans);
        if (rc == 0 && crc != 0 && crc != TAKO_EXIT_FAILED)
            rc = crc;
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigaction(SIGHUP, &old_hup, NULL);
    return rc;
}
