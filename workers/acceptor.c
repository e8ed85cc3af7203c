/*
 * acceptor.c — one HTTP acceptor process: a libevent evhttp on the listening socket the
 * master bound (shared by all acceptors; no SO_REUSEPORT, so no connection is dropped on
 * reload). It validates requests, admits a job into a free shm slot (none free → 503),
 * writes its spool files, records it in PostgreSQL (async libpq in this loop), pushes it
 * to the dispatch ring, and parks the request until the executor's completion arrives on
 * this slot's done ring (an eventfd wakes the loop). Every parked request gets exactly one
 * reply, even when its client has gone (libevent then just frees it).
 */
#include "tako/db.h"
#include "tako/jobs.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct pending {
    struct evhttp_request *req; /* NULL when nobody waits on this slot */
    uint64_t token;
    char corr[72];
};

static struct {
    int slot;
    uint32_t gen;
    struct tk_proc *me;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct pgq *pg;
    struct event *done_ev;
    struct pending *pending; /* indexed by job slot */
    uint64_t next_token;
    size_t inflight;
    bool draining;            /* QUIT: no new connections; finish what we hold */
    bool stopping;            /* TERM: settle what we hold now, then exit */
    struct event *stop_timer; /* bounds a fast stop */
} A;

/* ---- replies ---- */

static void add_common_headers(struct evhttp_request *req, const char *corr)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "X-Correlation-ID", corr);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    if (A.draining || A.stopping) /* this process is going away: no keep-alive */
        evhttp_add_header(h, "Connection", "close");
}

static void reply_json(struct evhttp_request *req, int code, const char *corr, json_t *body)
{
    add_common_headers(req, corr);
    struct evbuffer *buf = evbuffer_new();
    char *text = json_dumps(body, JSON_COMPACT);
    evbuffer_add(buf, text, strlen(text));
    free(text);
    json_decref(body);
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

static void reply_raw(struct evhttp_request *req, int code, const char *corr, const char *body,
                      size_t len)
{
    add_common_headers(req, corr);
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, body, len);
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

static void reply_error(struct evhttp_request *req, int code, const char *corr, const char *detail)
{
    reply_json(req, code, corr, json_pack("{s:s, s:s}", "detail", detail, "correlation_id", corr));
}

/* 422 with FastAPI-shaped field errors: {"detail": [{"loc": [...], "msg", "type"}]} */
static void reply_422(struct evhttp_request *req, const char *corr, json_t *errors)
{
    reply_json(req, 422, corr, json_pack("{s:o, s:s}", "detail", errors, "correlation_id", corr));
}

static void field_error(json_t *errors, const char *field, const char *type, const char *msg)
{
    json_array_append_new(
        errors, json_pack("{s:[s,s], s:s, s:s}", "loc", "body", field, "msg", msg, "type", type));
}

static void correlation_id(struct evhttp_request *req, char *out, size_t len)
{
    const char *in = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Correlation-ID");
    if (in && *in && strlen(in) < len && strlen(in) <= 64) {
        bool ok = true;
        for (const char *p = in; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
                ok = false;
        if (ok) {
            snprintf(out, len, "%s", in);
            return;
        }
    }
    uuid_v4(out);
}

/* ---- job admission ---- */

struct submit {
    uint32_t idx, gen;
    uint64_t token;
};

static void release_slot(uint32_t idx)
{
    jobs_release(idx, &A.me->intent);
}

static void maybe_exit(void);

static void fail_pending(uint32_t idx, int code, const char *detail)
{
    struct pending *p = &A.pending[idx];
    if (p->req) {
        reply_error(p->req, code, p->corr, detail);
        p->req = NULL;
        A.inflight--;
    }
    release_slot(idx);
    maybe_exit();
}

static void on_inserted(const PGresult *res, const char *err, void *arg)
{
    struct submit *s = arg;
    uint32_t idx = s->idx, gen = s->gen;
    uint64_t token = s->token;
    free(s);
    struct tk_job *job = shm_job(tk.shm, idx);
    if (!res) {
        log_error("msg=\"recording job failed\" job=%s err=\"%s\"", job->id, err);
        if (A.pending[idx].token == token)
            fail_pending(idx, 503, "Database unavailable; the job was not run");
        return;
    }
    if (A.stopping) { /* TERM arrived while the record was being written */
        fail_pending(idx, 503, "takod is shutting down; the job was not run");
        return;
    }
    atomic_store(&job->state, TK_JOB_QUEUED);
    if (ring_push(shm_dispatch(tk.shm), &A.me->intent, shm_val(idx, gen)) != 0) {
        /* cannot happen: the dispatch ring has a cell for every job slot */
        log_crit("msg=\"dispatch ring full\" job=%s", job->id);
        fail_pending(idx, 503, "Job queue is full, try again later");
    }
}

static int write_spool(const char *id, const char *code, const char *input, char *why, size_t wlen)
{
    char dir[4096], path[4200];
    spool_job_dir(dir, sizeof dir, id);
    const char *subs[] = {"code", "input", "output"};
    for (size_t i = 0; i < TK_ARRAY_LEN(subs); i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        int rc = mkdir_p(path, 0755);
        if (rc < 0) {
            snprintf(why, wlen, "mkdir %s: %s", path, strerror(-rc));
            return rc;
        }
    }
    unsigned uid = 1000, gid = 1000;
    sscanf(tk.cfg.docker_user, "%u:%u", &uid, &gid);
    snprintf(path, sizeof path, "%s/output", dir);
    if (chown(path, uid, gid) < 0 && chmod(path, 0777) < 0) {
        snprintf(why, wlen, "chown %s: %s", path, strerror(errno));
        return -errno;
    }
    snprintf(path, sizeof path, "%s/code/main.py", dir);
    int rc = write_file(path, code, strlen(code), 0644);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/input/data.json", dir);
        rc = write_file(path, input, strlen(input), 0644);
    }
    if (rc < 0)
        snprintf(why, wlen, "write %s: %s", path, strerror(-rc));
    return rc;
}

static void handle_execute(struct evhttp_request *req, const char *corr, char **route_params)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = (const char *)evbuffer_pullup(in, -1);
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char detail[300];
        snprintf(detail, sizeof detail, "Invalid JSON body: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        reply_error(req, 400, corr, detail);
        return;
    }
    json_t *errors = json_array();
    if (!json_is_object(root)) {
        field_error(errors, "body", "model_attributes_type", "Input should be a JSON object");
        json_decref(root);
        reply_422(req, corr, errors);
        return;
    }
    static const char *const known[] = {"code", "input_data", "timeout", "job_type"};
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        bool ok = false;
        for (size_t i = 0; i < TK_ARRAY_LEN(known); i++)
            ok |= !strcmp(key, known[i]);
        if (!ok)
            field_error(errors, key, "extra_forbidden", "Extra inputs are not permitted");
    }
    json_t *jcode = json_object_get(root, "code");
    const char *code = json_string_value(jcode);
    if (!jcode)
        field_error(errors, "code", "missing", "Field required");
    else if (!code)
        field_error(errors, "code", "string_type", "Input should be a valid string");
    else if (json_string_length(jcode) == 0 || strspn(code, " \t\r\n") == json_string_length(jcode))
        field_error(errors, "code", "string_too_short", "code must not be empty or blank");
    else if (json_string_length(jcode) > (size_t)tk.cfg.limits_max_code_bytes ||
             strlen(code) != json_string_length(jcode))
        field_error(errors, "code", "string_too_long",
                    "code is longer than limits.max_code_bytes or contains NUL");
    json_t *jin = json_object_get(root, "input_data");
    char *input_text = NULL;
    if (jin && !json_is_null(jin) && !json_is_object(jin))
        field_error(errors, "input_data", "dict_type", "Input should be a JSON object");
    else {
        input_text = json_dumps(jin && !json_is_null(jin) ? jin : json_object(),
                                JSON_COMPACT | JSON_ENCODE_ANY);
        if (input_text && strlen(input_text) > (size_t)tk.cfg.limits_max_input_bytes)
            field_error(errors, "input_data", "too_long",
                        "input_data is larger than limits.max_input_bytes");
    }
    json_t *jt = json_object_get(root, "timeout");
    json_int_t timeout = tk.cfg.limits_timeout;
    if (jt && !json_is_null(jt)) {
        if (!json_is_integer(jt))
            field_error(errors, "timeout", "int_type", "Input should be a valid integer");
        else if (json_integer_value(jt) < 1 || json_integer_value(jt) > tk.cfg.limits_max_timeout) {
            char msg[128];
            snprintf(msg, sizeof msg, "timeout must be between 1 and %lld seconds",
                     (long long)tk.cfg.limits_max_timeout);
            field_error(errors, "timeout", "out_of_range", msg);
        } else
            timeout = json_integer_value(jt);
    }
    json_t *jjt = json_object_get(root, "job_type");
    const char *job_type = "default";
    if (jjt && !json_is_null(jjt)) {
        if (!json_is_string(jjt))
            field_error(errors, "job_type", "string_type", "Input should be a valid string");
        else if (strcmp(json_string_value(jjt), "default") != 0)
            field_error(errors, "job_type", "unknown_job_type",
                        "Unknown job type (configured: default)");
        else
            job_type = "default";
    }
    if (json_array_size(errors) > 0) {
        free(input_text);
        json_decref(root);
        reply_422(req, corr, errors);
        return;
    }
    json_decref(errors);

    /* Circuit breaker: while executors cannot get containers, fail fast. */
    if (!atomic_load(&tk.shm->docker_ok)) {
        free(input_text);
        json_decref(root);
        reply_error(req, 503, corr, "The container engine is unavailable; try again later");
        return;
    }
    /* Admission: a free job slot or 503. */
    uint64_t v;
    if (A.stopping || ring_pop(shm_free(tk.shm), &A.me->intent, &v) != 0) {
        atomic_fetch_add(&tk.shm->jobs_rejected_full, 1);
        free(input_text);
        json_decref(root);
        reply_error(req, 503, corr, "Job queue is full, try again later");
        return;
    }
    uint32_t idx = shm_val_idx(v);
    struct tk_job *job = shm_job(tk.shm, idx);
    /* Ownership goes into the job table before `held` lets go of it (recovery.h). */
    uint32_t gen = atomic_fetch_add(&job->gen, 1) + 1;
    job->acceptor_proc = (uint16_t)tk.proc_idx;
    job->acceptor_gen = A.gen;
    atomic_store(&job->state, TK_JOB_FILLING);
    ring_intent_clear_held(&A.me->intent);
    uuid_v4(job->id);
    job->attempt = 0;
    job->req_token = ++A.next_token;
    atomic_store(&job->owner_pid, 0);
    atomic_store(&job->cancel, 0);
    job->timeout_s = (uint32_t)timeout;
    job->created_real_us = now_real_us();
    job->created_mono_us = now_mono_us();
    snprintf(job->job_type, sizeof job->job_type, "%s", job_type);
    snprintf(job->correlation_id, sizeof job->correlation_id, "%s", corr);
    job->container_id[0] = '\0';
    atomic_fetch_add(&tk.shm->jobs_admitted, 1);

    struct pending *p = &A.pending[idx];
    p->req = req;
    p->token = job->req_token;
    snprintf(p->corr, sizeof p->corr, "%s", corr);
    A.inflight++;

    char why[512];
    if (write_spool(job->id, code, input_text, why, sizeof why) < 0) {
        log_error("msg=\"writing job spool failed\" job=%s err=\"%s\"", job->id, why);
        free(input_text);
        json_decref(root);
        fail_pending(idx, 500, "Could not store the job's files");
        return;
    }

    char timeout_s[24], mem_s[24], cpus_s[32], created_s[32];
    snprintf(timeout_s, sizeof timeout_s, "%lld", (long long)timeout);
    snprintf(mem_s, sizeof mem_s, "%lld", (long long)tk.cfg.limits_memory);
    snprintf(cpus_s, sizeof cpus_s, "%g", tk.cfg.limits_cpus);
    snprintf(created_s, sizeof created_s, "%llu", (unsigned long long)job->created_real_us);
    const char *host = NULL;
    ev_uint16_t port;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), (char **)&host, &port);
    const char *params[11] = {job->id, job_type, code, input_text, timeout_s, mem_s,
                              cpus_s,  tk.node,  host, corr,       created_s};
    struct submit *s = malloc(sizeof *s);
    s->idx = idx;
    s->gen = gen;
    s->token = job->req_token;
    int rc = pgq_exec(A.pg,
                      "INSERT INTO jobs (id, status, mode, job_type, code, input, timeout_s,"
                      " memory_bytes, cpus, node, client_ip, correlation_id, created_at)"
                      " VALUES ($1, 'queued', 'sync', $2, $3, $4::jsonb, $5::integer,"
                      " $6::bigint, $7::double precision, $8, $9, $10,"
                      " to_timestamp($11::double precision / 1e6))",
                      11, params, on_inserted, s);
    free(input_text);
    json_decref(root);
    if (rc < 0) {
        free(s);
        fail_pending(idx, 503, "Database unavailable; the job was not run");
    }
}

/* Until every executor has been ready once, takod is "starting" (503). */
static bool all_started(void)
{
    if (atomic_load(&tk.shm->started))
        return true;
    uint32_t ready = 0;
    for (uint32_t i = 0; i < tk.shm->n_procs; i++) {
        struct tk_proc *p = shm_proc(tk.shm, i);
        if (p->role == TK_ROLE_EXECUTOR && atomic_load(&p->pid) > 0 && atomic_load(&p->ready))
            ready++;
    }
    if (ready < tk.shm->n_executors)
        return false;
    atomic_store(&tk.shm->started, 1);
    return true;
}

static void handle_health(struct evhttp_request *req, const char *corr, char **params)
{
    if (!all_started()) {
        reply_json(req, 503, corr,
                   json_pack("{s:s, s:s}", "status", "starting", "version", TAKO_VERSION));
        return;
    }
    bool db_ok = pgq_connected(A.pg);
    bool docker_ok = atomic_load(&tk.shm->docker_ok) != 0;
    json_t *body =
        json_pack("{s:s, s:b, s:b, s:s, s:{s:I, s:I, s:I, s:I}}", "status",
                  db_ok && docker_ok ? "healthy" : "degraded", "docker_available", docker_ok,
                  "database_available", db_ok, "version", TAKO_VERSION, "queue_stats", "pending",
                  (json_int_t)ring_count(shm_dispatch(tk.shm)), "running",
                  (json_int_t)atomic_load(&tk.shm->running), "max_workers",
                  (json_int_t)tk.shm->n_executors, "max_queue_size", (json_int_t)tk.shm->n_jobs);
    reply_json(req, 200, corr, body);
}

static void on_settled(const PGresult *res, const char *err, void *arg)
{
    if (!res)
        log_warn("msg=\"recording a settled job failed\" err=\"%s\"", err);
}

/*
 * A queued job no executor has taken will not run: settle it as cancelled with error
 * `type` and answer whoever waits, like any completion. The CAS decides against an
 * executor starting it at the same moment; its value stays in the dispatch ring, and the
 * executor that pops it finds the slot no longer QUEUED and drops it.
 */
static void settle_unstarted(uint32_t idx, const char *type, const char *msg)
{
    struct tk_job *job = shm_job(tk.shm, idx);
    uint32_t gen = atomic_load(&job->gen);
    uint32_t expect = TK_JOB_QUEUED;
    if (!atomic_compare_exchange_strong(&job->state, &expect, TK_JOB_DONE))
        return; /* an executor has it: its completion will come */
    jobs_write_settled_response(job, "cancelled", type, msg);
    json_t *err = jobs_error_json(type, msg, "startup");
    char *err_text = json_dumps(err, JSON_COMPACT);
    json_decref(err);
    const char *p[3] = {job->id, "cancelled", err_text};
    pgq_exec(A.pg, JOBS_SQL_SETTLE, 3, p, on_settled, NULL);
    free(err_text);
    jobs_complete(idx, gen, &A.me->intent);
}

/* A job of this node that has not finished, by id: its slot index, or -1. */
static int find_live_job(const char *id)
{
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++) {
        struct tk_job *job = shm_job(tk.shm, i);
        uint32_t st = atomic_load(&job->state);
        if ((st == TK_JOB_QUEUED || st == TK_JOB_RUNNING) && !strcmp(job->id, id))
            return (int)i;
    }
    return -1;
}

/*
 * POST /jobs/{id}/cancel: a queued job never runs (settled here, its waiting client
 * answered); a running job's executor sees the flag within 250 ms, stops the program
 * (TERM, then KILL) and records it cancelled. A finished or unknown job is a 404, as in
 * Tako VM.
 */
static void handle_cancel(struct evhttp_request *req, const char *corr, char **params)
{
    const char *id = params[0];
    int idx = id && uuid_valid(id) ? find_live_job(id) : -1;
    if (idx < 0) {
        reply_error(req, 404, corr, "Job not found or already completed");
        return;
    }
    atomic_store(&shm_job(tk.shm, (uint32_t)idx)->cancel, 1); /* seen by its executor */
    settle_unstarted((uint32_t)idx, "cancelled", "The job was cancelled before it started");
    log_info("msg=\"job cancelled\" job=%s", id);
    reply_json(req, 200, corr, json_pack("{s:s, s:s}", "status", "cancelled", "job_id", id));
}

/* ---- routing ---- */

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "OTHER";
    }
}

/*
 * Routes: a flat table of (method, pattern) where a "{}" segment matches one path segment
 * and is passed to the handler. A path that matches a pattern with another method is a
 * 405 with Allow listing the methods that would match.
 */
typedef void (*route_fn)(struct evhttp_request *req, const char *corr, char **params);

static const struct route {
    enum evhttp_cmd_type method;
    const char *pattern;
    route_fn fn;
} routes[] = {
    {EVHTTP_REQ_POST, "/execute", handle_execute},
    {EVHTTP_REQ_GET, "/health", handle_health},
    {EVHTTP_REQ_POST, "/jobs/{}/cancel", handle_cancel},
};

#define MAX_PARAMS 4

/* Match `path` against `pattern`; captured segments go to params (heap copies, decoded). */
static bool route_match(const char *pattern, const char *path, char **params, int *np)
{
    *np = 0;
    while (*pattern && *path) {
        if (*pattern != '/' || *path != '/')
            return false;
        pattern++;
        path++;
        size_t plen = strcspn(pattern, "/"), slen = strcspn(path, "/");
        if (plen == 2 && !strncmp(pattern, "{}", 2)) {
            if (slen == 0 || *np >= MAX_PARAMS)
                return false;
            char *seg = strndup(path, slen);
            params[(*np)++] = seg ? evhttp_uridecode(seg, 0, NULL) : NULL;
            free(seg);
        } else if (plen != slen || strncmp(pattern, path, plen) != 0) {
            return false;
        }
        pattern += plen;
        path += slen;
    }
    return !*pattern && !*path;
}

static void free_params(char **params, int n)
{
    for (int i = 0; i < n; i++)
        free(params[i]);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    char corr[72];
    correlation_id(req, corr, sizeof corr);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (!path)
        path = "/";
    log_debug("msg=\"request\" method=%s path=%s corr=%s", method_name(m), path, corr);
    char allow[64] = "";
    for (size_t i = 0; i < TK_ARRAY_LEN(routes); i++) {
        char *params[MAX_PARAMS] = {0};
        int np = 0;
        bool match = route_match(routes[i].pattern, path, params, &np);
        if (match && routes[i].method == m) {
            routes[i].fn(req, corr, params);
            free_params(params, np);
            return;
        }
        free_params(params, np);
        if (match && strlen(allow) + 10 < sizeof allow) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, method_name(routes[i].method));
        }
    }
    if (allow[0]) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        reply_error(req, 405, corr, "Method Not Allowed");
        return;
    }
    reply_error(req, 404, corr, "Not Found");
}

/* ---- completions ---- */

static void on_done(evutil_socket_t fd, short ev, void *arg)
{
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_warn("msg=\"eventfd read failed\" err=\"%s\"", strerror(errno));
    uint64_t v;
    while (ring_pop(shm_done(tk.shm, (uint32_t)tk.proc_idx), &A.me->intent, &v) == 0) {
        uint32_t idx = shm_val_idx(v);
        struct tk_job *job = shm_job(tk.shm, idx);
        struct pending *p = &A.pending[idx];
        if (job->acceptor_gen == A.gen && p->req && p->token == job->req_token) {
            char dir[4096], path[4200];
            spool_job_dir(dir, sizeof dir, job->id);
            snprintf(path, sizeof path, "%s/response.json", dir);
            char *body = NULL;
            size_t len = 0;
            int rc = read_file(path, 256u << 20, &body, &len);
            if (rc == 0)
                reply_raw(p->req, 200, p->corr, body, len);
            else {
                log_error("msg=\"reading the response failed\" job=%s path=%s err=\"%s\"", job->id,
                          path, strerror(-rc));
                reply_error(p->req, 500, p->corr, "Execution error: the result was lost");
            }
            free(body);
            p->req = NULL;
            A.inflight--;
        }
        /* a completion for an earlier generation of this slot: the client left with it;
         * the record is in PostgreSQL. Either way the slot is free again. */
        release_slot(idx);
    }
    maybe_exit();
}

/* ---- stopping ---- */

/* Leave the loop once nothing is held; 100 ms more lets the last replies flush. */
static void maybe_exit(void)
{
    if ((A.draining || A.stopping) && A.inflight == 0) {
        struct timeval tv = {0, 100 * 1000};
        event_base_loopexit(A.base, &tv);
    }
}

static void stop_accepting(void)
{
    if (A.bound) {
        evhttp_del_accept_socket(A.http, A.bound); /* closes only our copy of the socket */
        A.bound = NULL;
    }
}

static void on_stop_deadline(evutil_socket_t fd, short ev, void *arg)
{
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++) {
        struct pending *p = &A.pending[i];
        if (p->req) {
            reply_error(p->req, 503, p->corr,
                        "takod is shutting down; the job's result is "
                        "not known yet");
            p->req = NULL;
            A.inflight--;
        }
    }
    maybe_exit();
}

static void on_signal(evutil_socket_t sig, short ev, void *arg)
{
    if (sig == SIGUSR1) {
        log_reopen();
        return;
    }
    if (sig == SIGQUIT) { /* graceful: no new connections, finish what we hold */
        if (!A.draining && !A.stopping) {
            A.draining = true;
            stop_accepting();
            log_info("msg=\"acceptor draining\" inflight=%zu", A.inflight);
        }
        maybe_exit();
        return;
    }
    /* TERM/INT: fast. Jobs not started yet end now; running ones are being killed by
     * their executors, whose completions we wait for (bounded). */
    if (A.stopping)
        return;
    A.stopping = true;
    stop_accepting();
    log_info("msg=\"acceptor stopping fast\" inflight=%zu", A.inflight);
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++)
        if (A.pending[i].req)
            settle_unstarted(i, "interrupted", "takod was stopped before the job started");
    struct timeval tv = {2, 500 * 1000};
    A.stop_timer = evtimer_new(A.base, on_stop_deadline, NULL);
    evtimer_add(A.stop_timer, &tv);
    on_done(tk.done_efd[tk.proc_idx], EV_READ, NULL);
}

int acceptor_main(int slot)
{
    A.slot = slot;
    A.gen = atomic_load(&shm_proc(tk.shm, (uint32_t)tk.proc_idx)->gen);
    A.me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    A.pending = calloc(tk.shm->n_jobs, sizeof *A.pending);
    A.base = event_base_new();
    A.http = evhttp_new(A.base);
    if (!A.pending || !A.base || !A.http) {
        log_error("msg=\"acceptor init failed\" slot=%d", slot);
        return 1;
    }
    evhttp_set_max_body_size(A.http, (ev_ssize_t)tk.cfg.limits_max_payload_bytes);
    evhttp_set_max_headers_size(A.http, 16384);
    evhttp_set_timeout(A.http, (int)tk.cfg.server_request_timeout);
    evhttp_set_flags(A.http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_allowed_methods(A.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                           EVHTTP_REQ_PATCH);
    evhttp_set_default_content_type(A.http, "application/json");
    evhttp_set_gencb(A.http, on_request, NULL);
    A.bound = evhttp_accept_socket_with_handle(A.http, tk.listen_fd);
    if (!A.bound) {
        log_error("msg=\"evhttp_accept_socket_with_handle failed\" fd=%d", tk.listen_fd);
        return TK_EXIT_FATAL;
    }
    A.pg = pgq_new(A.base, tk.conninfo);
    A.done_ev = event_new(A.base, tk.done_efd[tk.proc_idx], EV_READ | EV_PERSIST, on_done, NULL);
    event_add(A.done_ev, NULL);
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
    struct event *sev[4];
    for (int i = 0; i < 4; i++) {
        sev[i] = evsignal_new(A.base, sigs[i], on_signal, NULL);
        event_add(sev[i], NULL);
    }
    /* completions left in this entry's ring by its previous owner */
    on_done(tk.done_efd[tk.proc_idx], EV_READ, NULL);
    log_info("msg=\"acceptor ready\" slot=%d gen=%u", slot, A.gen);
    event_base_dispatch(A.base);
    log_info("msg=\"acceptor stopping\" slot=%d inflight=%zu", slot, A.inflight);
    for (int i = 0; i < 4; i++)
        event_free(sev[i]);
    if (A.stop_timer)
        event_free(A.stop_timer);
    event_free(A.done_ev);
    pgq_free(A.pg);
    evhttp_free(A.http);
    event_base_free(A.base);
    free(A.pending);
    return TK_EXIT_OK;
}
