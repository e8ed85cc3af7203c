/*
 * remote.c — the commands that talk to takod over its HTTP API (shared/API.md): submit,
 * status, result, logs, cancel, rerun, fork, artifacts, jobs, job-types, health.
 *
 * Every answer is checked the same way (remote_check()): no answer → exit 3 "cannot reach takod
 * at URL"; 401/403 → 4; 5xx → 3; 404 and other 4xx → 1, with the server's `detail`.
 */
#include "tako.h"
#include "tako/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CODE_BYTES  (16u << 20)
#define MAX_INPUT_BYTES (64u << 20)
#define WAIT_SLICE_S    60 /* one long-poll asks the server to hold at most this long */

int remote_init(struct args *a, struct remote *r)
{
    memset(r, 0, sizeof *r);
    r->a = a;
    if (strncmp(a->url, "http://", 7) && strncmp(a->url, "https://", 8)) {
        tako_usage_error(a->cmd, "--url must start with http:// or https://, not \"%s\"", a->url);
        return -1;
    }
    snprintf(r->base, sizeof r->base, "%s", a->url);
    size_t n = strlen(r->base);
    while (n > 0 && r->base[n - 1] == '/')
        r->base[--n] = '\0';
    r->c.base_url = r->base;
    r->c.api_key = a->api_key;
    return 0;
}

/* The server's `detail` as one line: a string, or FastAPI-style [{loc, msg}, ...]. */
void remote_format_detail(const struct http_resp *resp, char *buf, size_t len)
{
    json_t *j = json_loadb(resp->body, resp->len, 0, NULL);
    json_t *d = json_object_get(j, "detail");
    buf[0] = '\0';
    if (json_is_string(d)) {
        snprintf(buf, len, "%s", json_string_value(d));
    } else if (json_is_array(d)) {
        size_t i;
        json_t *e;
        json_array_foreach(d, i, e)
        {
            size_t used = strlen(buf);
            char loc[256] = "";
            json_t *l = json_object_get(e, "loc");
            size_t k;
            json_t *part;
            json_array_foreach(l, k, part)
            {
                if (json_is_string(part) && !strcmp(json_string_value(part), "body"))
                    continue;
                size_t lu = strlen(loc);
                if (json_is_string(part))
                    snprintf(loc + lu, sizeof loc - lu, "%s%s", lu ? "." : "",
                             json_string_value(part));
                else if (json_is_integer(part))
                    snprintf(loc + lu, sizeof loc - lu, "[%lld]",
                             (long long)json_integer_value(part));
            }
            const char *msg = json_string_value(json_object_get(e, "msg"));
            snprintf(buf + used, len - used, "%s%s%s%s", used ? "; " : "", loc, loc[0] ? ": " : "",
                     msg ? msg : "invalid");
        }
    } else if (d) {
        char *s = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(buf, len, "%s", s ? s : "");
        free(s);
    } else if (resp->len > 0 && !j) {
        /* not JSON (e.g. libevent's own 413 page): its first line, no markup */
        size_t o = 0;
        bool tag = false;
        for (size_t i = 0; i < resp->len && o + 1 < len && o < 200; i++) {
            char ch = resp->body[i];
            if (ch == '<')
                tag = true;
            else if (ch == '>')
                tag = false;
            else if (!tag && ch != '\r' && ch != '\n')
                buf[o++] = ch;
        }
        buf[o] = '\0';
    }
    json_decref(j);
}

/*
 * Check an answer. Returns 0 for 2xx (and for the statuses in `ok_also`, e.g. 408 while
 * waiting), else prints why and returns the exit code.
 */
int remote_check(struct remote *r, int transport_rc, const struct http_resp *resp, const char *what,
                 long ok_also)
{
    if (transport_rc < 0) {
        fprintf(stderr, "tako: cannot reach takod at %s: %s\n", r->base, resp->err);
        return TAKO_EXIT_INFRA;
    }
    if ((resp->status >= 200 && resp->status < 300) || resp->status == ok_also)
        return 0;
    char detail[1024];
    remote_format_detail(resp, detail, sizeof detail);
    const char *sep = detail[0] ? ": " : "";
    if (resp->status == 401 || resp->status == 403) {
        fprintf(stderr, "tako: %s: not authorized (HTTP %ld)%s%s\n", what, resp->status, sep,
                detail);
        fprintf(stderr, "tako: %s\n",
                r->a->api_key && *r->a->api_key
                    ? "the API key was refused (--api-key / TAKO_API_KEY)"
                    : "takod wants an API key: pass --api-key KEY or set TAKO_API_KEY");
        return TAKO_EXIT_AUTH;
    }
    if (resp->status >= 500) {
        fprintf(stderr, "tako: %s: takod answered HTTP %ld%s%s\n", what, resp->status, sep, detail);
        return TAKO_EXIT_INFRA;
    }
    fprintf(stderr, "tako: %s: %s%s(HTTP %ld)", what, detail, detail[0] ? " " : "", resp->status);
    if (resp->status == 410) { /* an ended session says how it ended (docs/SESSIONS.md) */
        json_t *j = json_loadb(resp->body, resp->len, 0, NULL);
        const char *st = json_string_value(json_object_get(j, "status"));
        const char *why = json_string_value(json_object_get(j, "end_reason"));
        if (st || why)
            fprintf(stderr, ": %s%s%s", st ? st : "ended", why ? ", " : "", why ? why : "");
        json_decref(j);
    }
    if (resp->status == 429 && resp->retry_after[0])
        fprintf(stderr, "; retry after %s s", resp->retry_after);
    fputc('\n', stderr);
    return TAKO_EXIT_FAILED;
}

/* A request whose answer must be JSON; *out is the parsed body (a new reference). */
int remote_call_json(struct remote *r, const char *method, const char *path, const json_t *body,
                     long timeout_s, const char *what, json_t **out)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct http_resp resp;
    int trc = http_request(&r->c, method, path, text, timeout_s, &resp);
    free(text);
    int rc = remote_check(r, trc, &resp, what, 0);
    *out = NULL;
    if (rc == 0) {
        json_error_t jerr;
        *out = json_loadb(resp.body, resp.len, 0, &jerr);
        if (!*out) {
            fprintf(stderr, "tako: %s: takod's answer is not JSON (%s)\n", what, jerr.text);
            rc = TAKO_EXIT_INFRA;
        }
    }
    http_resp_free(&resp);
    return rc;
}

static char *job_path(const char *id, const char *suffix)
{
    char *e = http_escape(id), *p = NULL;
    if (!e || asprintf(&p, "/jobs/%s%s", e, suffix) < 0)
        p = NULL;
    free(e);
    return p;
}

static void job_what(const char *id, char *buf, size_t len)
{
    snprintf(buf, len, "job %s", id);
}

/* METHOD /jobs/ID<suffix> with an optional body: the JSON answer, errors named by the job. */
static int job_call(struct remote *r, const char *id, const char *method, const char *suffix,
                    const json_t *body, json_t **out)
{
    char what[300];
    job_what(id, what, sizeof what);
    char *path = job_path(id, suffix);
    int rc = remote_call_json(r, method, path, body, 60, what, out);
    free(path);
    return rc;
}

static bool is_terminal(const char *status)
{
    return status && tako_exit_for_status(status) != TAKO_EXIT_PENDING;
}

static void progress_clear(struct remote *r)
{
    if (r->c.progress) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

/*
 * GET /jobs/ID/result?view=full, waiting (long-poll slices) until the job is finished or
 * timeout_s (0: no limit) has passed. Returns 0 with *rec, TAKO_EXIT_PENDING with *rec
 * (the last unfinished answer) or an error exit code.
 */
static int fetch_result(struct remote *r, const char *id, bool wait, long timeout_s, json_t **rec)
{
    char what[300], label[360];
    job_what(id, what, sizeof what);
    *rec = NULL;
    double start = mono_seconds();
    r->c.progress = wait && isatty(STDERR_FILENO);
    snprintf(label, sizeof label, "tako: waiting for job %s...", id);
    r->c.progress_label = label;
    r->c.progress_start = start;
    long pause_ms = 200;
    for (;;) {
        long slice = WAIT_SLICE_S;
        if (wait && timeout_s > 0) {
            double left = (double)timeout_s - (mono_seconds() - start);
            if (left <= 0)
                break;
            slice = left < (double)WAIT_SLICE_S ? (long)left + (left > (long)left) : WAIT_SLICE_S;
            if (slice < 1)
                slice = 1;
        }
        char *base = job_path(id, "/result"), *path = NULL;
        int n = !base  ? -1
                : wait ? asprintf(&path, "%s?view=full&wait=true&timeout=%ld", base, slice)
                       : asprintf(&path, "%s?view=full", base);
        free(base);
        if (n < 0)
            return TAKO_EXIT_INFRA;
        struct http_resp resp;
        int trc = http_request(&r->c, "GET", path, NULL, wait ? slice + 30 : 60, &resp);
        free(path);
        int rc = remote_check(r, trc, &resp, what, 408);
        if (rc) {
            http_resp_free(&resp);
            progress_clear(r);
            return rc;
        }
        json_t *j = resp.status == 408 ? NULL : json_loadb(resp.body, resp.len, 0, NULL);
        long status_code = resp.status;
        http_resp_free(&resp);
        if (status_code != 408 && !j) {
            progress_clear(r);
            fprintf(stderr, "tako: %s: takod's answer is not JSON\n", what);
            return TAKO_EXIT_INFRA;
        }
        if (j) {
            json_decref(*rec);
            *rec = j;
            const char *st = json_string_value(json_object_get(j, "status"));
            if (!st && json_object_get(j, "success")) /* a result without a status field */
                break;
            if (is_terminal(st) || !wait)
                break;
            snprintf(label, sizeof label, "tako: waiting for job %s (%s)...", id, st ? st : "?");
        }
        if (wait && timeout_s > 0 && mono_seconds() - start >= (double)timeout_s)
            break;
        if (status_code != 408) {
            /* the server answered "unfinished" at once (no long-poll): poll politely */
            struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            pause_ms = pause_ms * 2 > 2000 ? 2000 : pause_ms * 2;
            if (r->c.progress) {
                fprintf(stderr, "\r\033[K%s %lds", label, (long)(mono_seconds() - start));
                fflush(stderr);
            }
        }
    }
    progress_clear(r);
    const char *st = json_string_value(json_object_get(*rec, "status"));
    if (*rec && (is_terminal(st) || (!st && json_object_get(*rec, "success"))))
        return 0;
    return TAKO_EXIT_PENDING;
}

static void say_pending(const char *id, const json_t *rec, bool waited, long timeout_s)
{
    const char *st = json_string_value(json_object_get(rec, "status"));
    if (waited)
        fprintf(stderr, "tako: job %s is still %s after %ld s\n", id, st ? st : "unfinished",
                timeout_s);
    else
        fprintf(stderr, "tako: job %s is %s; not finished yet (`tako result %s --wait`)\n", id,
                st ? st : "unfinished", id);
}

/* Wait for a job and show it like `tako run` (or as JSON). */
static int wait_and_show(struct remote *r, const char *id, long timeout_s)
{
    json_t *rec;
    int rc = fetch_result(r, id, true, timeout_s, &rec);
    if (rc == TAKO_EXIT_PENDING) {
        if (r->a->json && rec)
            tako_print_json(rec);
        say_pending(id, rec, true, timeout_s);
    } else if (rc == 0) {
        if (r->a->json) {
            tako_print_json(rec);
            rc = tako_exit_for_status(json_string_value(json_object_get(rec, "status")));
            if (!json_object_get(rec, "status"))
                rc = json_is_true(json_object_get(rec, "success")) ? 0 : TAKO_EXIT_FAILED;
        } else {
            rc = tako_print_run_result(rec, id);
        }
    }
    json_decref(rec);
    return rc;
}

static long opt_timeout(struct args *a, const char *what, long max, int *bad)
{
    long v = 0;
    *bad = 0;
    if (opt_set(a, O_TIMEOUT) && tako_parse_long(a->cmd, what, a->val[O_TIMEOUT], 1, max, &v) < 0)
        *bad = 1;
    return v;
}

/* Print a new job's id (or the JSON answer) and wait for it if --wait. */
static int after_new_job(struct remote *r, json_t *ans)
{
    const char *id = json_string_value(json_object_get(ans, "job_id"));
    if (!id)
        id = json_string_value(json_object_get(ans, "execution_id"));
    if (!id) {
        fprintf(stderr, "tako: takod's answer has no job_id\n");
        return TAKO_EXIT_INFRA;
    }
    if (opt_set(r->a, O_WAIT)) {
        char idcopy[256];
        snprintf(idcopy, sizeof idcopy, "%s", id);
        if (!r->a->json)
            fprintf(stderr, "tako: job %s %s\n", idcopy,
                    json_string_value(json_object_get(ans, "status"))
                        ? json_string_value(json_object_get(ans, "status"))
                        : "submitted");
        return wait_and_show(r, idcopy, 0);
    }
    if (r->a->json)
        tako_print_json(ans);
    else
        printf("%s\n", id);
    return TAKO_EXIT_OK;
}

static int read_code(struct args *a, const char *path, json_t *body)
{
    char *code = NULL;
    size_t len = 0;
    int rc = tako_read_file(path, MAX_CODE_BYTES, &code, &len);
    if (rc < 0) {
        tako_usage_error(a->cmd, "cannot read %s: %s", path,
                         rc == -EFBIG ? "too large" : strerror(-rc));
        return -1;
    }
    json_t *s = json_stringn(code, len);
    free(code);
    if (!s) {
        tako_usage_error(a->cmd, "%s is not UTF-8 text", path);
        return -1;
    }
    json_object_set_new(body, "code", s);
    return 0;
}

/* ---- submit ---- */

int cmd_submit(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    int bad;
    long timeout = opt_timeout(a, "--timeout", 86400, &bad);
    if (bad)
        return TAKO_EXIT_USAGE;
    json_t *body = json_object();
    if (read_code(a, a->pos[0], body) < 0) {
        json_decref(body);
        return TAKO_EXIT_USAGE;
    }
    if (opt_set(a, O_INPUT)) {
        json_t *in = tako_read_json_object(a->cmd, a->val[O_INPUT], MAX_INPUT_BYTES);
        if (!in) {
            json_decref(body);
            return TAKO_EXIT_USAGE;
        }
        json_object_set_new(body, "input_data", in);
    }
    if (opt_set(a, O_STDIN)) {
        char *data = NULL;
        size_t len = 0;
        int rc = tako_read_file(a->val[O_STDIN], MAX_INPUT_BYTES, &data, &len);
        json_t *s = rc == 0 ? json_stringn(data, len) : NULL;
        free(data);
        if (!s) {
            tako_usage_error(a->cmd, "cannot use --stdin %s: %s", a->val[O_STDIN],
                             rc < 0 ? strerror(-rc) : "not UTF-8 text");
            json_decref(body);
            return TAKO_EXIT_USAGE;
        }
        json_object_set_new(body, "stdin", s);
    }
    if (timeout)
        json_object_set_new(body, "timeout", json_integer(timeout));
    if (opt_set(a, O_JOB_TYPE))
        json_object_set_new(body, "job_type", json_string(a->val[O_JOB_TYPE]));
    if (a->nmulti[O_REQUIREMENT]) {
        json_t *reqs = json_array();
        for (int i = 0; i < a->nmulti[O_REQUIREMENT]; i++)
            json_array_append_new(reqs, json_string(a->multi[O_REQUIREMENT][i]));
        json_object_set_new(body, "requirements", reqs);
    }
    char key[64];
    if (opt_set(a, O_IDEMPOTENCY_KEY)) {
        snprintf(key, sizeof key, "%s", a->val[O_IDEMPOTENCY_KEY]);
        json_object_set_new(body, "idempotency_key", json_string(a->val[O_IDEMPOTENCY_KEY]));
    } else {
        uuid_v4(key);
        json_object_set_new(body, "idempotency_key", json_string(key));
    }
    /* Retry on no answer and 502/503/504 with the same key: takod gives back the same job. */
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct http_resp resp;
    int trc = -1;
    long backoff_ms = 500;
    for (int attempt = 0; attempt < 4; attempt++) {
        if (attempt) {
            long wait_ms = backoff_ms;
            if (trc == 0 && resp.status == 429 && resp.retry_after[0]) /* rate limited */
                wait_ms = atol(resp.retry_after) * 1000;
            wait_ms = wait_ms < 100 ? 100 : wait_ms > 30000 ? 30000 : wait_ms;
            http_resp_free(&resp);
            struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            backoff_ms = backoff_ms * 2 > 8000 ? 8000 : backoff_ms * 2;
        }
        trc = http_request(&r.c, "POST", "/execute/async", text, 60, &resp);
        if (trc == 0 && resp.status != 429 && resp.status != 502 && resp.status != 503 &&
            resp.status != 504)
            break;
    }
    free(text);
    int rc = remote_check(&r, trc, &resp, "submit", 0);
    json_t *ans = rc ? NULL : json_loadb(resp.body, resp.len, 0, NULL);
    http_resp_free(&resp);
    if (rc)
        return rc;
    if (!ans) {
        fprintf(stderr, "tako: submit: takod's answer is not JSON\n");
        return TAKO_EXIT_INFRA;
    }
    rc = after_new_job(&r, ans);
    json_decref(ans);
    return rc;
}

/* ---- status ---- */

int cmd_status(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    json_t *j;
    int rc = job_call(&r, a->pos[0], "GET", "", NULL, &j);
    if (rc)
        return rc;
    if (a->json) {
        tako_print_json(j);
    } else {
        static const char *const keys[] = {"job_id",   "status",      "created_at",    "started_at",
                                           "ended_at", "duration_ms", "queue_position"};
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
            json_t *v = json_object_get(j, keys[i]);
            if (!v || json_is_null(v))
                continue;
            char *s = json_is_string(v) ? strdup(json_string_value(v))
                                        : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf("%-15s %s\n", keys[i], s ? s : "");
            free(s);
        }
    }
    json_decref(j);
    return TAKO_EXIT_OK;
}

/* ---- result ---- */

int cmd_result(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    int bad;
    long timeout = opt_timeout(a, "--timeout", 86400, &bad);
    if (bad)
        return TAKO_EXIT_USAGE;
    const char *id = a->pos[0];
    bool wait = opt_set(a, O_WAIT);
    json_t *rec;
    int rc = fetch_result(&r, id, wait, timeout, &rec);
    if (rc && rc != TAKO_EXIT_PENDING)
        return rc;
    if (a->json)
        tako_print_json(rec);
    if (rc == TAKO_EXIT_PENDING) {
        if (!a->json)
            say_pending(id, rec, wait, timeout);
        json_decref(rec);
        return rc;
    }
    const char *status = json_string_value(json_object_get(rec, "status"));
    if (!status)
        status = json_is_true(json_object_get(rec, "success")) ? "succeeded" : "failed";
    if (!a->json) {
        const char *etype, *emsg;
        tako_error_parts(rec, &etype, &emsg);
        printf("job %s: %s", id, status);
        json_t *ec = json_object_get(rec, "exit_code");
        if (json_is_integer(ec))
            printf(" (exit code %lld)", (long long)json_integer_value(ec));
        double ms = tako_duration_ms(rec);
        if (ms >= 0) {
            char t[32];
            tako_format_ms(ms, t, sizeof t);
            printf(" in %s", t);
        }
        putchar('\n');
        if (etype || emsg)
            printf("error: %s%s%s\n", etype ? etype : "", etype && emsg ? ": " : "",
                   emsg ? emsg : "");
        json_t *out = json_object_get(rec, "output");
        if (out && !json_is_null(out)) {
            printf("output:\n");
            tako_print_json(out);
        }
        json_t *arts = json_object_get(rec, "artifacts");
        if (json_array_size(arts)) {
            printf("artifacts:\n");
            tako_print_artifact_list(stdout, arts, "  ");
        }
        size_t olen = strlen(json_string_value(json_object_get(rec, "stdout"))
                                 ? json_string_value(json_object_get(rec, "stdout"))
                                 : "");
        size_t elen = strlen(json_string_value(json_object_get(rec, "stderr"))
                                 ? json_string_value(json_object_get(rec, "stderr"))
                                 : "");
        if (olen || elen)
            printf("logs: %zu bytes of stdout, %zu of stderr (`tako logs %s`)\n", olen, elen, id);
    }
    rc = tako_exit_for_status(status);
    json_decref(rec);
    return rc;
}

/* ---- logs ---- */

int cmd_logs(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    int bad;
    long timeout = opt_timeout(a, "--timeout", 86400, &bad);
    if (bad)
        return TAKO_EXIT_USAGE;
    const char *id = a->pos[0];
    json_t *rec;
    int rc = fetch_result(&r, id, opt_set(a, O_WAIT), timeout, &rec);
    if (rc && rc != TAKO_EXIT_PENDING)
        return rc;
    if (rc == TAKO_EXIT_PENDING) {
        if (a->json)
            tako_print_json(rec);
        say_pending(id, rec, opt_set(a, O_WAIT), timeout);
        json_decref(rec);
        return rc;
    }
    const char *out = json_string_value(json_object_get(rec, "stdout"));
    const char *err = json_string_value(json_object_get(rec, "stderr"));
    if (a->json) {
        json_t *j = json_pack(
            "{s:s, s:s, s:O, s:O}", "stdout", out ? out : "", "stderr", err ? err : "",
            "stdout_truncated",
            json_object_get(rec, "stdout_truncated") ? json_object_get(rec, "stdout_truncated")
                                                     : json_false(),
            "stderr_truncated",
            json_object_get(rec, "stderr_truncated") ? json_object_get(rec, "stderr_truncated")
                                                     : json_false());
        tako_print_json(j);
        json_decref(j);
    } else {
        if (out)
            fputs(out, stdout);
        fflush(stdout);
        if (err)
            fputs(err, stderr);
        if (json_is_true(json_object_get(rec, "stdout_truncated")) ||
            json_is_true(json_object_get(rec, "stderr_truncated")))
            fprintf(stderr,
                    "tako: output over the limit was cut (stdout_truncated=%s, "
                    "stderr_truncated=%s)\n",
                    json_is_true(json_object_get(rec, "stdout_truncated")) ? "true" : "false",
                    json_is_true(json_object_get(rec, "stderr_truncated")) ? "true" : "false");
    }
    json_decref(rec);
    return TAKO_EXIT_OK;
}

/* ---- cancel ---- */

int cmd_cancel(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    json_t *j;
    int rc = job_call(&r, a->pos[0], "POST", "/cancel", NULL, &j);
    if (rc)
        return rc;
    if (a->json) {
        tako_print_json(j);
    } else {
        const char *st = json_string_value(json_object_get(j, "status"));
        printf("job %s: %s\n", a->pos[0], st ? st : "cancelled");
    }
    json_decref(j);
    return TAKO_EXIT_OK;
}

/* ---- rerun, fork ---- */

static int new_from(struct args *a, const char *suffix, json_t *body)
{
    struct remote r;
    if (remote_init(a, &r) < 0) {
        json_decref(body);
        return TAKO_EXIT_USAGE;
    }
    int bad;
    long timeout = opt_timeout(a, "--timeout", 86400, &bad);
    if (bad) {
        json_decref(body);
        return TAKO_EXIT_USAGE;
    }
    if (timeout)
        json_object_set_new(body, "timeout", json_integer(timeout));
    if (opt_set(a, O_JOB_TYPE))
        json_object_set_new(body, "job_type", json_string(a->val[O_JOB_TYPE]));
    json_t *ans;
    int rc = job_call(&r, a->pos[0], "POST", suffix, body, &ans);
    json_decref(body);
    if (rc)
        return rc;
    rc = after_new_job(&r, ans);
    json_decref(ans);
    return rc;
}

int cmd_rerun(struct args *a)
{
    return new_from(a, "/rerun", json_object());
}

int cmd_fork(struct args *a)
{
    json_t *body = json_object();
    if (read_code(a, a->pos[1], body) < 0) {
        json_decref(body);
        return TAKO_EXIT_USAGE;
    }
    return new_from(a, "/fork", body);
}

/* ---- artifacts ---- */

static int save_artifact(struct remote *r, const char *id, const char *name)
{
    struct args *a = r->a;
    const char *dest = opt_set(a, O_OUT) ? a->val[O_OUT] : name;
    bool to_stdout = !strcmp(dest, "-");
    if (!opt_set(a, O_OUT) && strchr(name, '/')) {
        tako_usage_error(a->cmd, "\"%s\" is not an artifact name; use -o FILE", name);
        return TAKO_EXIT_USAGE;
    }
    if (!to_stdout && !opt_set(a, O_FORCE) && access(dest, F_OK) == 0) {
        fprintf(stderr, "tako: %s exists; pass --force to overwrite it, or -o FILE\n", dest);
        return TAKO_EXIT_USAGE;
    }
    char what[600];
    snprintf(what, sizeof what, "job %s, artifact %s", id, name);
    char *ename = http_escape(name), *suffix = NULL;
    if (!ename || asprintf(&suffix, "/artifacts/%s", ename) < 0) {
        free(ename);
        return TAKO_EXIT_INFRA;
    }
    free(ename);
    char *path = job_path(id, suffix);
    free(suffix);
    struct http_resp resp;
    int trc = http_request(&r->c, "GET", path, NULL, 300, &resp);
    free(path);
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
        int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        size_t off = 0;
        while (fd >= 0 && off < resp.len) {
            ssize_t w = write(fd, resp.body + off, resp.len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        int e = errno;
        if (fd < 0 || off < resp.len || close(fd) < 0) {
            fprintf(stderr, "tako: cannot write %s: %s\n", dest, strerror(fd < 0 ? e : errno));
            http_resp_free(&resp);
            return TAKO_EXIT_USAGE;
        }
        if (a->json) {
            json_t *j =
                json_pack("{s:s, s:s, s:I, s:s, s:s}", "name", name, "path", dest, "size_bytes",
                          (json_int_t)resp.len, "sha256", hex, "content_type", resp.content_type);
            tako_print_json(j);
            json_decref(j);
        } else {
            fprintf(stderr, "tako: saved %s (%zu bytes, sha256 %.16s...) to %s\n", name, resp.len,
                    hex, dest);
        }
    }
    http_resp_free(&resp);
    return TAKO_EXIT_OK;
}

int cmd_artifacts(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    const char *id = a->pos[0];
    if (a->npos == 2)
        return save_artifact(&r, id, a->pos[1]);
    if (opt_set(a, O_OUT)) {
        tako_usage_error(a->cmd, "-o needs an artifact NAME");
        return TAKO_EXIT_USAGE;
    }
    json_t *rec;
    int rc = fetch_result(&r, id, false, 0, &rec);
    if (rc == TAKO_EXIT_PENDING) {
        say_pending(id, rec, false, 0);
        json_decref(rec);
        return rc;
    }
    if (rc)
        return rc;
    json_t *arts = json_object_get(rec, "artifacts");
    if (a->json) {
        tako_print_json(arts ? arts : json_array());
    } else if (json_array_size(arts) == 0) {
        fprintf(stderr, "tako: job %s left no artifacts\n", id);
    } else {
        tako_print_artifact_list(stdout, arts, "");
    }
    json_decref(rec);
    return TAKO_EXIT_OK;
}

/* ---- jobs ---- */

int cmd_jobs(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    long limit = 20, offset = 0;
    if (opt_set(a, O_LIMIT) &&
        tako_parse_long(a->cmd, "--limit", a->val[O_LIMIT], 1, 1000, &limit) < 0)
        return TAKO_EXIT_USAGE;
    if (opt_set(a, O_OFFSET) &&
        tako_parse_long(a->cmd, "--offset", a->val[O_OFFSET], 0, 1000000000L, &offset) < 0)
        return TAKO_EXIT_USAGE;
    char path[1024];
    snprintf(path, sizeof path, "/executions?limit=%ld&offset=%ld", limit, offset);
    const char *filters[][2] = {{"status", a->val[O_STATUS]}, {"job_type", a->val[O_JOB_TYPE]}};
    for (size_t i = 0; i < 2; i++) {
        if (!filters[i][1])
            continue;
        char *e = http_escape(filters[i][1]);
        size_t used = strlen(path);
        snprintf(path + used, sizeof path - used, "&%s=%s", filters[i][0], e ? e : "");
        free(e);
    }
    json_t *j;
    int rc = remote_call_json(&r, "GET", path, NULL, 60, "jobs", &j);
    if (rc)
        return rc;
    if (a->json) {
        tako_print_json(j);
        json_decref(j);
        return TAKO_EXIT_OK;
    }
    json_t *items = json_is_array(j) ? j : json_object_get(j, "items");
    size_t i;
    json_t *it;
    printf("%-36s  %-9s  %-12s  %-32s  %s\n", "ID", "STATUS", "JOB TYPE", "CREATED", "DURATION");
    json_array_foreach(items, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "execution_id"));
        if (!id)
            id = json_string_value(json_object_get(it, "job_id"));
        const char *jt = json_string_value(json_object_get(it, "job_type"));
        const char *st = json_string_value(json_object_get(it, "status"));
        const char *cr = json_string_value(json_object_get(it, "created_at"));
        char dur[32] = "-";
        json_t *d = json_object_get(it, "duration_ms");
        if (json_is_number(d))
            tako_format_ms(json_number_value(d), dur, sizeof dur);
        printf("%-36s  %-9s  %-12s  %-32s  %s\n", id ? id : "?", st ? st : "?", jt ? jt : "-",
               cr ? cr : "-", dur);
    }
    if (json_is_true(json_object_get(j, "has_more")))
        fprintf(stderr, "tako: more jobs: --offset %ld\n", offset + (long)json_array_size(items));
    json_decref(j);
    return TAKO_EXIT_OK;
}

/* ---- job-types ---- */

static void print_job_type(const json_t *jt, bool header)
{
    if (header)
        printf("%-20s  %-8s  %-8s  %-5s  %-8s  %-7s  %s\n", "NAME", "PYTHON", "MEMORY", "CPUS",
               "TIMEOUT", "IMAGE", "REQUIREMENTS");
    const char *name = json_string_value(json_object_get(jt, "name"));
    const char *py = json_string_value(json_object_get(jt, "python_version"));
    const char *mem = json_string_value(json_object_get(jt, "memory_limit"));
    json_t *cpu = json_object_get(jt, "cpu_limit"), *to = json_object_get(jt, "timeout");
    json_t *img = json_object_get(jt, "image_exists"), *reqs = json_object_get(jt, "requirements");
    char cpus[16] = "-", tos[16] = "-", rq[512] = "";
    if (json_is_number(cpu))
        snprintf(cpus, sizeof cpus, "%g", json_number_value(cpu));
    if (json_is_number(to))
        snprintf(tos, sizeof tos, "%gs", json_number_value(to));
    size_t i;
    json_t *q;
    json_array_foreach(reqs, i, q)
    {
        size_t used = strlen(rq);
        snprintf(rq + used, sizeof rq - used, "%s%s", used ? " " : "",
                 json_string_value(q) ? json_string_value(q) : "?");
    }
    printf("%-20s  %-8s  %-8s  %-5s  %-8s  %-7s  %s\n", name ? name : "?", py ? py : "-",
           mem ? mem : "-", cpus, tos,
           json_is_boolean(img) ? (json_is_true(img) ? "yes" : "MISSING") : "-", rq);
}

int cmd_job_types(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    json_t *j;
    int rc;
    if (a->npos == 1) {
        char *e = http_escape(a->pos[0]), *path = NULL, what[300];
        snprintf(what, sizeof what, "job type %s", a->pos[0]);
        if (!e || asprintf(&path, "/job-types/%s", e) < 0)
            path = NULL;
        free(e);
        rc = path ? remote_call_json(&r, "GET", path, NULL, 60, what, &j) : TAKO_EXIT_INFRA;
        free(path);
        if (rc)
            return rc;
        if (a->json)
            tako_print_json(j);
        else
            print_job_type(j, true);
        json_decref(j);
        return TAKO_EXIT_OK;
    }
    rc = remote_call_json(&r, "GET", "/job-types", NULL, 60, "job types", &j);
    if (rc)
        return rc;
    if (a->json) {
        tako_print_json(j);
    } else {
        json_t *items = j;
        if (json_is_object(j))
            items = json_object_get(j, "job_types") ? json_object_get(j, "job_types")
                                                    : json_object_get(j, "items");
        size_t i;
        json_t *jt;
        json_array_foreach(items, i, jt)
        {
            print_job_type(jt, i == 0);
        }
    }
    json_decref(j);
    return TAKO_EXIT_OK;
}

/* ---- health ---- */

int cmd_health(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    struct http_resp resp;
    int trc = http_request(&r.c, "GET", "/health", NULL, 30, &resp);
    /* 503 {"status": "starting"} is an answer worth showing */
    int rc = remote_check(&r, trc, &resp, "health", 503);
    json_t *j = rc ? NULL : json_loadb(resp.body, resp.len, 0, NULL);
    long code = resp.status;
    http_resp_free(&resp);
    if (rc)
        return rc;
    if (!j) {
        fprintf(stderr, "tako: health: takod's answer is not JSON (HTTP %ld)\n", code);
        return TAKO_EXIT_INFRA;
    }
    const char *st = json_string_value(json_object_get(j, "status"));
    if (a->json) {
        tako_print_json(j);
    } else {
        printf("takod at %s: %s\n", r.base, st ? st : "?");
        const char *ver = json_string_value(json_object_get(j, "version"));
        if (ver)
            printf("  version   %s\n", ver);
        static const char *const deps[][2] = {{"docker_available", "docker"},
                                              {"database_available", "database"},
                                              {"gvisor_available", "gvisor"}};
        for (size_t i = 0; i < 3; i++) {
            json_t *v = json_object_get(j, deps[i][0]);
            if (json_is_boolean(v))
                printf("  %-9s %s\n", deps[i][1], json_is_true(v) ? "ok" : "DOWN");
        }
        json_t *q = json_object_get(j, "queue_stats");
        if (json_is_object(q))
            printf("  queue     %lld pending, %lld running, %lld workers, %lld max queued\n",
                   (long long)json_integer_value(json_object_get(q, "pending")),
                   (long long)json_integer_value(json_object_get(q, "running")),
                   (long long)json_integer_value(json_object_get(q, "max_workers")),
                   (long long)json_integer_value(json_object_get(q, "max_queue_size")));
    }
    rc = code == 503                    ? TAKO_EXIT_INFRA
         : st && !strcmp(st, "healthy") ? TAKO_EXIT_OK
                                        : TAKO_EXIT_FAILED;
    json_decref(j);
    return rc;
}

/* tako audit verify [SEQ:HASH]: the tamper-evident chain (GET /audit/verify), optionally
 * against a previously exported (audit_seq, audit_hash). Exit 0 verified, 1 not. */
int cmd_audit(struct args *a)
{
    if (strcmp(a->pos[0], "verify") != 0) {
        fprintf(stderr, "tako: audit: unknown action '%s' (verify)\n", a->pos[0]);
        return TAKO_EXIT_USAGE;
    }
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    char path[256] = "/audit/verify";
    if (a->pos[1]) {
        if (strspn(a->pos[1], "0123456789abcdef:") != strlen(a->pos[1]) ||
            strlen(a->pos[1]) > 100) {
            fprintf(stderr, "tako: audit verify: expected SEQ:HASH, got '%s'\n", a->pos[1]);
            return TAKO_EXIT_USAGE;
        }
        snprintf(path, sizeof path, "/audit/verify?expect=%s", a->pos[1]);
    }
    struct http_resp resp;
    int trc = http_request(&r.c, "GET", path, NULL, 600, &resp);
    int rc = remote_check(&r, trc, &resp, "audit verify", 0);
    json_t *j = rc ? NULL : json_loadb(resp.body, resp.len, 0, NULL);
    http_resp_free(&resp);
    if (rc)
        return rc;
    if (!j) {
        fprintf(stderr, "tako: audit verify: takod's answer is not JSON\n");
        return TAKO_EXIT_INFRA;
    }
    bool ok = json_is_true(json_object_get(j, "ok"));
    if (a->json) {
        tako_print_json(j);
    } else {
        json_t *p = json_object_get(j, "problem");
        printf("audit chain: %s (%lld records checked)\n", ok ? "verified" : "NOT verified",
               (long long)json_integer_value(json_object_get(j, "rows_checked")));
        if (json_is_integer(json_object_get(j, "last_seq")))
            printf("  last      %lld:%s\n",
                   (long long)json_integer_value(json_object_get(j, "last_seq")),
                   json_string_value(json_object_get(j, "last_hash")));
        if (json_is_object(p))
            printf("  problem   %s at audit_seq %lld (job %s): %s\n",
                   json_string_value(json_object_get(p, "kind")),
                   (long long)json_integer_value(json_object_get(p, "audit_seq")),
                   json_string_value(json_object_get(p, "job_id"))
                       ? json_string_value(json_object_get(p, "job_id"))
                       : "-",
                   json_string_value(json_object_get(p, "detail"))
                       ? json_string_value(json_object_get(p, "detail"))
                       : "");
        if (json_string_value(json_object_get(j, "checkpoint")))
            printf("  checkpoint %s\n", json_string_value(json_object_get(j, "checkpoint")));
    }
    json_decref(j);
    return ok ? TAKO_EXIT_OK : TAKO_EXIT_FAILED;
}

int cmd_build(struct args *a)
{
    struct remote r;
    if (remote_init(a, &r) < 0)
        return TAKO_EXIT_USAGE;
    char *e = http_escape(a->pos[0]),
         *t = opt_set(a, O_VERSION_TAG) ? http_escape(a->val[O_VERSION_TAG]) : NULL;
    char *path = NULL, what[300];
    snprintf(what, sizeof what, "build of job type %s", a->pos[0]);
    if (!e ||
        asprintf(&path, "/job-types/%s/build%s%s", e, t ? "?version_tag=" : "", t ? t : "") < 0)
        path = NULL;
    free(e);
    free(t);
    if (!a->json && isatty(STDERR_FILENO))
        fprintf(stderr, "tako: building %s (this waits for the build) ...\n", a->pos[0]);
    struct http_resp resp;
    memset(&resp, 0, sizeof resp);
    snprintf(resp.err, sizeof resp.err, "out of memory");
    int trc = path ? http_request(&r.c, "POST", path, NULL, 3600, &resp) : -1;
    free(path);
    json_t *j = trc == 0 ? json_loadb(resp.body, resp.len, 0, NULL) : NULL;
    int rc;
    if (trc == 0 && resp.status == 500 && j) { /* the build itself failed: show its end */
        const char *tail = json_string_value(json_object_get(j, "log_tail"));
        fprintf(stderr, "tako: %s\n%s%s", json_string_value(json_object_get(j, "detail")),
                tail ? tail : "", tail && *tail && tail[strlen(tail) - 1] != '\n' ? "\n" : "");
        rc = TAKO_EXIT_FAILED;
    } else {
        rc = remote_check(&r, trc, &resp, what, 0);
    }
    if (rc == 0 && a->json) {
        tako_print_json(j);
    } else if (rc == 0) {
        const char *tag = json_string_value(json_object_get(j, "version_tag"));
        printf("built %s version %s (%s) in %.1f s%s%s\n", a->pos[0],
               json_string_value(json_object_get(j, "version")),
               json_string_value(json_object_get(j, "image_ref")),
               json_number_value(json_object_get(j, "build_seconds")), tag ? ", tag " : "",
               tag ? tag : "");
    }
    json_decref(j);
    http_resp_free(&resp);
    return rc;
}
