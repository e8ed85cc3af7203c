/*
 * api_jobs.c — the job routes: submit (sync, async, rerun, fork), status, result with
 * long-poll, cancel, artifacts, execution history.
 *
 * Submitting: validate → admit into a free shm slot (none: 503; the idempotency key is
 * not burned) → spool files → INSERT the record (ON CONFLICT on the idempotency key does
 * nothing) → push to the dispatch ring. A sync request is parked on its slot until the
 * executor's completion; an async one is answered once the INSERT has committed.
 *
 * Waiting: PostgreSQL announces every status change (a trigger NOTIFYs "takod_job" with
 * "<id> <status>"); each acceptor LISTENs and wakes the requests parked on that job — a
 * long-poll, or a duplicate submit of a job still running. No sleep-and-poll anywhere.
 */
#include "acceptor.h"
#include "conns.h"
#include "tako/callbacks.h"
#include "tako/dbspool.h"
#include "tako/jobs.h"
#include "tako/jobstore.h"
#include "tako/jobtypes.h"
#include "tako/jsonspan.h"
#include "tako/log.h"
#include "tako/outputs.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define is_terminal jobstore_is_terminal

static int find_live_job(const char *id);

/* ---- records ---- */

/* One SELECT list for every read of a record; R_* are its column numbers. */
#define RECORD_COLS                                                                                \
    "id::text, status, job_type, to_json(created_at)#>>'{}', to_json(started_at)#>>'{}',"          \
    " to_json(ended_at)#>>'{}',"                                                                   \
    " (extract(epoch FROM (coalesce(ended_at, now()) - coalesce(started_at, created_at)))"         \
    "  * 1000)::bigint,"                                                                           \
    " exit_code, stdout, stderr, output::text, error::text, timing::text, artifacts::text,"        \
    " runtime, stdout_truncated, stderr_truncated, idempotency_key, attempt, parent_id::text,"     \
    " relationship, code_hash, input_hash, mode,"                                                  \
    " CASE WHEN status = 'queued' THEN (SELECT count(*) FROM jobs q WHERE q.status = 'queued'"     \
    "  AND q.created_at < jobs.created_at) END,"                                                   \
    " CASE WHEN callback_url IS NOT NULL THEN (jsonb_build_object('url', callback_url,"            \
    "  'status', callback_status, 'attempts', 0) || coalesce((SELECT jsonb_build_object("          \
    "  'attempts', d.attempts, 'last_attempt_at', d.last_attempt_at, 'last_http_status',"          \
    "  d.last_http_status, 'last_error', d.last_error, 'delivered_at', d.delivered_at)"            \
    "  FROM callback_deliveries d WHERE d.job_id = jobs.id), '{}'::jsonb))::text END"
enum {
    R_ID,
    R_STATUS,
    R_JOB_TYPE,
    R_CREATED,
    R_STARTED,
    R_ENDED,
    R_DURATION,
    R_EXIT,
    R_STDOUT,
    R_STDERR,
    R_OUTPUT,
    R_ERROR,
    R_TIMING,
    R_ARTIFACTS,
    R_RUNTIME,
    R_OUT_TRUNC,
    R_ERR_TRUNC,
    R_IDEM,
    R_ATTEMPT,
    R_PARENT,
    R_RELATIONSHIP,
    R_CODE_HASH,
    R_INPUT_HASH,
    R_MODE,
    R_QUEUE_POS,
    R_CALLBACK,
    R_NCOLS /* columns a query adds after RECORD_COLS start here */
};

static json_t *col_str(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_string(PQgetvalue(r, row, col));
}

static json_t *col_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_integer(atoll(PQgetvalue(r, row, col)));
}

static json_t *col_json(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return json_null();
    json_t *j = json_loads(PQgetvalue(r, row, col), JSON_DECODE_ANY, NULL);
    return j ? j : json_null();
}

static bool col_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

/* The record of GET /jobs/{id}/result and /executions; `full` adds view=full's fields. */
static json_t *record_json(const PGresult *r, int row, bool full)
{
    const char *job_type = PQgetvalue(r, row, R_JOB_TYPE);
    char version[96]; /* the ref it ran: NAME@<version> when pinned, else NAME@latest */
    snprintf(version, sizeof version, strchr(job_type, '@') ? "%s" : "%s@latest", job_type);
    json_t *rec = json_object();
    json_object_set_new(rec, "execution_id", col_str(r, row, R_ID));
    json_object_set_new(rec, "job_id", col_str(r, row, R_ID));
    json_object_set_new(rec, "status", col_str(r, row, R_STATUS));
    json_object_set_new(rec, "job_type", json_string(job_type));
    json_object_set_new(rec, "job_version", json_string(version));
    json_object_set_new(rec, "created_at", col_str(r, row, R_CREATED));
    json_object_set_new(rec, "started_at", col_str(r, row, R_STARTED));
    json_object_set_new(rec, "ended_at", col_str(r, row, R_ENDED));
    json_object_set_new(rec, "duration_ms", col_int(r, row, R_DURATION));
    json_object_set_new(rec, "exit_code", col_int(r, row, R_EXIT));
    json_object_set_new(rec, "stdout", col_str(r, row, R_STDOUT));
    json_object_set_new(rec, "stderr", col_str(r, row, R_STDERR));
    json_object_set_new(rec, "output", col_json(r, row, R_OUTPUT));
    json_object_set_new(rec, "error", col_json(r, row, R_ERROR));
    json_object_set_new(rec, "timing", col_json(r, row, R_TIMING));
    json_object_set_new(rec, "runtime", col_str(r, row, R_RUNTIME));
    json_object_set_new(rec, "mode", col_str(r, row, R_MODE));
    if (!full)
        return rec;
    json_t *timing = json_object_get(rec, "timing");
    json_object_set_new(rec, "job_ref", json_string(version));
    json_t *arts = col_json(r, row, R_ARTIFACTS);
    json_object_set_new(rec, "artifacts", json_is_array(arts) ? arts : json_array());
    if (!json_is_array(arts))
        json_decref(arts);
    json_object_set_new(rec, "resource_usage",
                        json_pack("{s:n, s:n, s:o}", "max_rss_mb", "cpu_time_ms", "wall_time_ms",
                                  json_is_object(timing)
                                      ? json_deep_copy(json_object_get(timing, "execution_ms"))
                                      : json_null()));
    json_object_set_new(rec, "code_hash", col_str(r, row, R_CODE_HASH));
    json_object_set_new(rec, "input_hash", col_str(r, row, R_INPUT_HASH));
    json_object_set_new(rec, "parent_execution_id", col_str(r, row, R_PARENT));
    json_object_set_new(rec, "relationship", col_str(r, row, R_RELATIONSHIP));
    json_object_set_new(rec, "stdout_truncated", json_boolean(col_bool(r, row, R_OUT_TRUNC)));
    json_object_set_new(rec, "stderr_truncated", json_boolean(col_bool(r, row, R_ERR_TRUNC)));
    json_object_set_new(rec, "idempotency_key", col_str(r, row, R_IDEM));
    json_object_set_new(rec, "attempt", col_int(r, row, R_ATTEMPT));
    /* callback_url's delivery: status, attempts, and how the last attempt went */
    if (!PQgetisnull(r, row, R_CALLBACK))
        json_object_set_new(rec, "callback", col_json(r, row, R_CALLBACK));
    return rec;
}

/* POST /execute's shape, from a finished record (a duplicate submit of a known job). */
static json_t *execute_response(const PGresult *r, int row)
{
    json_t *output = col_json(r, row, R_OUTPUT), *error = col_json(r, row, R_ERROR),
           *timing = col_json(r, row, R_TIMING), *artifacts = col_json(r, row, R_ARTIFACTS);
#define COL_TEXT(c) (PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c))
    struct job_row jr = {.id = COL_TEXT(R_ID),
                         .status = COL_TEXT(R_STATUS),
                         .job_type = COL_TEXT(R_JOB_TYPE),
                         .exit_code = COL_TEXT(R_EXIT),
                         .stdout = COL_TEXT(R_STDOUT),
                         .stderr = COL_TEXT(R_STDERR),
                         .stdout_truncated = COL_TEXT(R_OUT_TRUNC),
                         .stderr_truncated = COL_TEXT(R_ERR_TRUNC),
                         .runtime = COL_TEXT(R_RUNTIME),
                         .output = output,
                         .error = error,
                         .timing = timing,
                         .artifacts = artifacts};
#undef COL_TEXT
    json_t *resp = job_answer(&jr);
    json_decref(output);
    json_decref(error);
    json_decref(timing);
    json_decref(artifacts);
    return resp;
}

/* ---- reading one record asynchronously ---- */

typedef void (*record_cb)(const PGresult *res, const char *err, void *arg);

/* owner: the key id the caller may see, or NULL for any (admin, no auth, internal). */
static int query_record(const char *id, const char *owner, record_cb cb, void *arg)
{
    const char *p[2] = {id, owner};
    return pgq_exec(A.pg,
                    "SELECT " RECORD_COLS " FROM jobs WHERE id = $1::uuid"
                    " AND ($2::text IS NULL OR api_key_id = $2)",
                    2, p, cb, arg);
}

/* A request that needs one record: keeps the request and how to answer. */
struct rec_req {
    struct evhttp_request *req;
    char corr[72];
    char id[40];
    bool full, wait;
    int wait_ms;
    int kind; /* 0 status, 1 result, 2 execution */
};

static struct rec_req *rec_req_new(struct evhttp_request *req, const char *corr, const char *id)
{
    struct rec_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->req = req;
    snprintf(r->corr, sizeof r->corr, "%s", corr);
    snprintf(r->id, sizeof r->id, "%s", id);
    return r;
}

/* ---- long-poll waiters ---- */

enum wait_kind { WAIT_RESULT, WAIT_EXECUTE };

struct waiter {
    struct waiter *next;
    char id[40];
    struct evhttp_request *req;
    char corr[72];
    bool full;
    enum wait_kind kind;
    struct event *timer;
};

static struct waiter *waiters;

static void waiter_remove(struct waiter *w)
{
    for (struct waiter **pp = &waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (w->timer)
        event_free(w->timer);
    free(w);
    A.inflight--;
}

static void on_wait_timeout(evutil_socket_t fd, short ev, void *arg)
{
    struct waiter *w = arg;
    reply_error(w->req, 408, w->corr, "Timeout waiting for job");
    waiter_remove(w);
    acceptor_maybe_exit();
}

/* The record of a job some requests wait for: answer them if it has finished. */
static void on_waited_record(const PGresult *res, const char *err, void *arg)
{
    char *id = arg;
    if (res && PQntuples(res) == 1 && is_terminal(PQgetvalue(res, 0, R_STATUS))) {
        struct waiter *w = waiters, *next;
        for (; w; w = next) {
            next = w->next;
            if (strcmp(w->id, id) != 0)
                continue;
            reply_json(w->req, 200, w->corr,
                       w->kind == WAIT_EXECUTE ? execute_response(res, 0)
                                               : record_json(res, 0, w->full));
            waiter_remove(w);
        }
        acceptor_maybe_exit();
    }
    free(id);
}

static void check_waited(const char *id)
{
    char *copy = strdup(id);
    if (copy && query_record(id, NULL, on_waited_record, copy) < 0)
        free(copy);
}

static void add_waiter(struct evhttp_request *req, const char *corr, const char *id,
                       enum wait_kind kind, bool full, int timeout_ms)
{
    struct waiter *w = calloc(1, sizeof *w);
    if (!w) {
        reply_error(req, 500, corr, "out of memory");
        return;
    }
    snprintf(w->id, sizeof w->id, "%s", id);
    snprintf(w->corr, sizeof w->corr, "%s", corr);
    w->req = req;
    w->kind = kind;
    w->full = full;
    w->timer = evtimer_new(A.base, on_wait_timeout, w);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(w->timer, &tv);
    w->next = waiters;
    waiters = w;
    A.inflight++;
    check_waited(id); /* it may have finished between our read and now */
}

static void sse_on_status(const char *id, const char *status);
static void sse_on_output(const char *payload);

/* "takod_job": "<id> <status>" from the trigger, or "out <id> <stream> <b64>" (live). */
static void on_notify(const char *channel, const char *payload, void *arg)
{
    if (!strncmp(payload, "out ", 4)) {
        sse_on_output(payload + 4);
        return;
    }
    char id[40], status[16];
    if (sscanf(payload, "%39s %15s", id, status) != 2)
        return;
    sse_on_status(id, status);
    for (struct waiter *w = waiters; w; w = w->next)
        if (!strcmp(w->id, id)) {
            check_waited(id);
            return;
        }
}

/* Reconnected: notifications may have been missed; look at everything we wait for. */
static void on_db_up(void *arg)
{
    for (struct waiter *w = waiters; w; w = w->next)
        check_waited(w->id);
}

void api_jobs_init(void)
{
    pgq_listen(A.pg, "takod_job", on_notify, on_db_up, NULL);
}

void api_jobs_drop_streams(void);

void api_jobs_drop_waiters(void)
{
    api_jobs_drop_streams();
    while (waiters) {
        reply_error(waiters->req, 503, waiters->corr, "takod is shutting down");
        waiter_remove(waiters);
    }
}

/* ---- submitting ---- */

struct job_spec {
    char *code, *input_text, *stdin_text, *idem, *files_json, *callback_url;
    char *requirements; /* runtime requirements: a JSON array, or NULL */
    long long timeout, startup_timeout;
    char job_type[64];
    bool async;
    char parent[40];
    const char *relationship; /* "rerun" | "fork" | NULL */
    char hash[65];
    char corr[72];
    char client_ip[64];
    char key_id[17];            /* who submits ("" without authentication) */
    struct evhttp_request *req; /* async: answered after the INSERT */
    uint32_t idx, gen;
    uint64_t token;
};

static void spec_free(struct job_spec *s)
{
    if (!s)
        return;
    free(s->code);
    free(s->input_text);
    free(s->stdin_text);
    free(s->idem);
    free(s->files_json);
    free(s->callback_url);
    free(s->requirements);
    free(s);
}

/* A fingerprint of what the client asked for: same key + same fingerprint = same job. */
static void spec_hash(struct job_spec *s)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int n = 0;
    char nums[64];
    snprintf(nums, sizeof nums, "%lld|%lld", s->timeout, s->startup_timeout);
    const char *parts[] = {s->code ? s->code : "",
                           s->input_text ? s->input_text : "",
                           s->stdin_text ? s->stdin_text : "",
                           s->files_json ? s->files_json : "",
                           s->requirements ? s->requirements : "",
                           s->job_type,
                           nums};
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    for (size_t i = 0; i < TK_ARRAY_LEN(parts); i++)
        EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1);
    EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);
    hex_encode(md, 32, s->hash);
}

static void submit_reply_async(struct job_spec *s, const char *id, const char *status)
{
    json_t *body = json_pack("{s:s, s:s}", "job_id", id, "status", status);
    if (s->relationship) {
        json_object_set_new(body, "parent_execution_id", json_string(s->parent));
        json_object_set_new(body, "relationship", json_string(s->relationship));
    }
    reply_json(s->req, 200, s->corr, body);
}

/* The idempotency key was taken: same request → that job; another request → 409. */
static void on_existing(const PGresult *res, const char *err, void *arg)
{
    struct job_spec *s = arg;
    if (!res || PQntuples(res) != 1) {
        reply_db_unavailable(s->req, s->corr, "Database unavailable; the job was not run");
    } else if (strcmp(PQgetvalue(res, 0, 1), s->hash) != 0) {
        char detail[200];
        snprintf(detail, sizeof detail,
                 "Idempotency key reused with different payload (existing job %s)",
                 PQgetvalue(res, 0, 0));
        reply_json(s->req, 409, s->corr,
                   json_pack("{s:s, s:s, s:s}", "detail", detail, "existing_job_id",
                             PQgetvalue(res, 0, 0), "correlation_id", s->corr));
    } else if (s->async) {
        submit_reply_async(s, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 2));
    } else {
        /* the same sync request again: answer with that job's result when it has one */
        add_waiter(s->req, s->corr, PQgetvalue(res, 0, 0), WAIT_EXECUTE, true,
                   (int)(tk.cfg.limits_max_timeout + 60) * 1000);
    }
    spec_free(s);
}

/* The queue was full: a known key is answered like a repeat; otherwise 503 (the key is
 * not used up). */
static void on_existing_or_full(const PGresult *res, const char *err, void *arg)
{
    struct job_spec *s = arg;
    if (res && PQntuples(res) == 1) {
        on_existing(res, err, s);
        return;
    }
    reply_error(s->req, 503, s->corr, "Job queue is full, try again later");
    spec_free(s);
}

static void on_inserted(const PGresult *res, const char *err, void *arg)
{
    struct job_spec *s = arg;
    struct tk_job *job = shm_job(tk.shm, s->idx);
    struct pending *p = &A.pending[s->idx];
    bool mine = s->async || p->token == s->token;
    if (!res || PQntuples(res) == 0 || A.stopping) {
        /* not admitted after all: give the slot back without answering through it */
        if (!s->async && mine) {
            p->req = NULL;
            A.inflight--;
        }
        jobs_release(s->idx, &A.me->intent);
        if (!res) {
            log_error("msg=\"recording job failed\" err=\"%s\"", err);
            reply_db_unavailable(s->req, s->corr, "Database unavailable; the job was not run");
        } else if (A.stopping) {
            reply_error(s->req, 503, s->corr, "takod is shutting down; the job was not run");
        } else {
            const char *qp[2] = {s->idem, s->key_id};
            if (pgq_exec(A.pg, JOBSTORE_SQL_BY_IDEMPOTENCY_KEY, 2, qp, on_existing, s) == 0)
                return;
            reply_db_unavailable(s->req, s->corr, "Database unavailable; the job was not run");
        }
        spec_free(s);
        acceptor_maybe_exit();
        return;
    }
    if (jobs_enqueue(s->idx, s->gen, &A.me->intent) < 0) {
        if (s->async) {
            jobs_release(s->idx, &A.me->intent);
            reply_error(s->req, 503, s->corr, "Job queue is full, try again later");
        } else {
            fail_pending(s->idx, 503, "Job queue is full, try again later");
        }
        spec_free(s);
        return;
    }
    if (s->async)
        submit_reply_async(s, job->id, "queued");
    spec_free(s);
}

/*
 * Per-key quotas (auth.max_queued_jobs, auth.max_concurrent_jobs), counted in the job
 * table, so they hold across acceptors: waiting jobs, and unfinished jobs (waiting or
 * running). Over either: 429 and the spec is freed.
 */
static bool quota_ok(struct evhttp_request *req, struct job_spec *s)
{
    long long max_q = tk.cfg.auth_max_queued_jobs, max_c = tk.cfg.auth_max_concurrent_jobs;
    if (!s->key_id[0] || (!max_q && !max_c))
        return true;
    long long queued = 0, running = 0;
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++) {
        struct tk_job *job = shm_job(tk.shm, i);
        uint32_t st = atomic_load(&job->state);
        if ((st == TK_JOB_FILLING || st == TK_JOB_QUEUED || st == TK_JOB_RUNNING) &&
            !strcmp(job->key_id, s->key_id)) {
            queued += st != TK_JOB_RUNNING;
            running += st == TK_JOB_RUNNING;
        }
    }
    char detail[160] = "";
    if (max_q && queued >= max_q)
        snprintf(detail, sizeof detail,
                 "Quota exceeded: this key already has %lld queued jobs (auth.max_queued_jobs)",
                 queued);
    else if (max_c && queued + running >= max_c)
        snprintf(detail, sizeof detail,
                 "Quota exceeded: this key already has %lld unfinished jobs "
                 "(auth.max_concurrent_jobs)",
                 queued + running);
    if (!detail[0])
        return true;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    reply_error(req, 429, s->corr, detail);
    spec_free(s);
    return false;
}

/* Admit, spool, record, dispatch. Takes `s`. */
static void submit_job(struct evhttp_request *req, struct job_spec *s)
{
    s->req = req;
    spec_hash(s);
    /* A draining acceptor (reload, graceful stop) still runs what reaches it on a
     * connection it accepted before: the executors are still there, and the reply closes
     * the connection, so the client's next request goes to a live acceptor. */
    if (A.stopping) {
        reply_error(req, 503, s->corr, "takod is shutting down; try again");
        spec_free(s);
        return;
    }
    if (!atomic_load(&tk.shm->docker_ok)) { /* circuit breaker */
        reply_error(req, 503, s->corr, "The container engine is unavailable; try again later");
        spec_free(s);
        return;
    }
    if (s->async && !pgq_connected(A.pg)) { /* an async job needs its record first */
        reply_db_unavailable(req, s->corr, "Database unavailable; the job was not queued");
        spec_free(s);
        return;
    }
    /* An idempotency key is only as good as PostgreSQL's unique index on it: without a
     * connection no acceptor can tell a repeat from a new request, so a keyed sync request
     * is refused (nothing runs, the key stays unused) instead of being run and spooled —
     * a repeat would run it again, and the spooled INSERT of one of them would conflict
     * on replay, leaving its client an execution_id that never exists. */
    if (s->idem && !pgq_connected(A.pg)) {
        reply_db_unavailable(req, s->corr,
                             "Database unavailable; a request with an idempotency_key needs "
                             "it to be checked, so the job was not run");
        spec_free(s);
        return;
    }
    if (!quota_ok(req, s))
        return;
    uint32_t idx, gen;
    struct jobs_admission adm = {.acceptor_proc = s->async ? TK_NO_ACCEPTOR : (uint16_t)tk.proc_idx,
                                 .acceptor_gen = A.gen,
                                 .req_token = ++A.next_token,
                                 .timeout_s = (uint32_t)s->timeout,
                                 .startup_timeout_s = (uint32_t)s->startup_timeout,
                                 .job_type = s->job_type,
                                 .correlation_id = s->corr,
                                 .key_id = s->key_id};
    if (jobs_admit(&adm, &A.me->intent, &idx, &gen) < 0) {
        atomic_fetch_add(&tk.shm->jobs_rejected_full, 1);
        /* a repeat of a known request needs no slot: answer with its job if there is one */
        if (s->idem && pgq_connected(A.pg)) {
            const char *qp[2] = {s->idem, s->key_id};
            if (pgq_exec(A.pg, JOBSTORE_SQL_BY_IDEMPOTENCY_KEY, 2, qp, on_existing_or_full, s) == 0)
                return;
        }
        reply_error(req, 503, s->corr, "Job queue is full, try again later");
        spec_free(s);
        return;
    }
    struct tk_job *job = shm_job(tk.shm, idx);
    atomic_fetch_add(&tk.shm->jobs_admitted, 1);
    s->idx = idx;
    s->gen = gen;
    s->token = job->req_token;
    if (!s->async) {
        struct pending *p = &A.pending[idx];
        p->req = req;
        p->token = job->req_token;
        snprintf(p->corr, sizeof p->corr, "%s", s->corr);
        A.inflight++;
    }

    char why[512];
    if (jobs_write_spool(job->id, s->code, s->input_text, s->stdin_text, s->files_json,
                         s->requirements, why, sizeof why) < 0) {
        log_error("msg=\"writing job spool failed\" job=%s err=\"%s\"", job->id, why);
        if (s->async) {
            jobs_release(idx, &A.me->intent);
            reply_error(req, 500, s->corr, "Could not store the job's files");
        } else {
            fail_pending(idx, 500, "Could not store the job's files");
        }
        spec_free(s);
        return;
    }
    char timeout_s[24], startup_s[24], mem_s[24], cpus_s[32], created_s[32], code_hash[65],
        input_hash[65];
    snprintf(timeout_s, sizeof timeout_s, "%lld", s->timeout);
    snprintf(startup_s, sizeof startup_s, "%lld", s->startup_timeout);
    const struct tk_job_type *jt = jobtype_lookup(&tk.cfg, s->job_type, NULL);
    if (!jt) /* a rerun's parent may name a type no longer configured: its executor says so */
        jt = &tk.cfg.job_types[0];
    snprintf(mem_s, sizeof mem_s, "%lld", (long long)jt->memory_limit);
    snprintf(cpus_s, sizeof cpus_s, "%g", jt->cpu_limit);
    snprintf(created_s, sizeof created_s, "%llu", (unsigned long long)job->created_real_us);
    sha256_hex(s->code, strlen(s->code), code_hash);
    /* the input's hash is of its canonical form (keys sorted, compact), so a rerun, whose
     * input comes back from PostgreSQL's jsonb, hashes the same as the original */
    json_t *in_json = json_loads(s->input_text, 0, NULL);
    char *canon = in_json ? json_dumps(in_json, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(in_json);
    sha256_hex(canon ? canon : s->input_text, strlen(canon ? canon : s->input_text), input_hash);
    free(canon);
    struct job_row row = {.id = job->id,
                          .job_type = s->job_type,
                          .code = s->code,
                          .input = s->input_text,
                          .timeout_s = timeout_s,
                          .memory_bytes = mem_s,
                          .cpus = cpus_s,
                          .node = tk.node,
                          .client_ip = s->client_ip[0] ? s->client_ip : NULL,
                          .correlation_id = s->corr,
                          .created_at = created_s,
                          .mode = s->async ? "async" : "sync",
                          .idempotency_key = s->idem,
                          .request_hash = s->hash,
                          .parent_id = s->parent[0] ? s->parent : NULL,
                          .relationship = s->relationship,
                          .code_hash = code_hash,
                          .input_hash = input_hash,
                          .stdin = s->stdin_text,
                          .startup_timeout_s = s->startup_timeout ? startup_s : NULL,
                          .callback_url = s->callback_url,
                          .api_key_id = s->key_id[0] ? s->key_id : NULL,
                          .input_files = s->files_json,
                          .requirements = s->requirements};
    struct jobstore_stmt ins;
    jobstore_insert(&ins, &row);
    if (!s->async && !s->idem && !pgq_connected(A.pg)) {
        /* PostgreSQL is down: an unkeyed sync job still runs; its record waits on disk */
        if (dbspool_write_insert(job->id, ins.params) == 0) {
            log_warn("msg=\"database unavailable; record spooled\" job=%s", job->id);
            jobs_enqueue(idx, gen, &A.me->intent);
            spec_free(s);
            return;
        }
    }
    if (pgq_exec(A.pg, ins.sql, ins.n, ins.params, on_inserted, s) < 0) {
        if (s->async) {
            jobs_release(idx, &A.me->intent);
            reply_db_unavailable(req, s->corr, "Database unavailable; the job was not run");
        } else {
            fail_pending(idx, 503, "Database unavailable; the job was not run");
        }
        spec_free(s);
    }
}

/* A pinned version (NAME@<12 hex> or NAME@<version_tag>) must be one takod built:
 * job_type_builds has it. A tag is resolved here, so the job records and runs the
 * version it named at submit time even if the tag moves later. */
static void on_pin(const PGresult *res, const char *err, void *arg)
{
    struct job_spec *s = arg;
    if (res && PQntuples(res) > 0) {
        char name[TK_JOB_TYPE_NAME_MAX + 1], version[JOBTYPE_REF_VERSION_MAX + 1];
        if (jobtype_parse_ref(s->job_type, name, version) == 0)
            snprintf(s->job_type, sizeof s->job_type, "%s@%s", name, PQgetvalue(res, 0, 0));
    }
    if (!res) {
        reply_db_unavailable(s->req, s->corr, "Database unavailable; the job was not run");
        spec_free(s);
    } else if (PQntuples(res) == 0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "No build of job type %.120s (GET /job-types/NAME lists the versions)",
                 s->job_type);
        reply_field_error(s->req, s->corr, "body", "job_type", "unknown_version", msg);
        spec_free(s);
    } else {
        submit_job(s->req, s);
    }
}

/* submit_job, once a pinned version is known to exist. Takes `s`. */
static void submit_checked(struct evhttp_request *req, struct job_spec *s)
{
    char name[TK_JOB_TYPE_NAME_MAX + 1], version[JOBTYPE_REF_VERSION_MAX + 1];
    if (jobtype_parse_ref(s->job_type, name, version) < 0 || !version[0] ||
        !strcmp(version, "latest")) {
        submit_job(req, s);
        return;
    }
    s->req = req;
    const char *p[2] = {name, version};
    if (pgq_exec(A.pg,
                 "SELECT version FROM job_type_builds WHERE job_type = $1"
                 " AND (version = $2 OR version_tag = $2)",
                 2, p, on_pin, s) < 0) {
        reply_db_unavailable(req, s->corr, "Database unavailable; the job was not run");
        spec_free(s);
    }
}

/* ---- validation ---- */

static bool valid_idempotency_key(const char *k)
{
    size_t n = strlen(k);
    if (n < 8 || n > 255)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static void validate_code(json_t *jcode, json_t *errors, bool required)
{
    const char *code = json_string_value(jcode);
    if (!jcode) {
        if (required)
            field_error(errors, "body", "code", "missing", "Field required");
    } else if (!code) {
        field_error(errors, "body", "code", "string_type", "Input should be a valid string");
    } else if (json_string_length(jcode) == 0 ||
               strspn(code, " \t\r\n") == json_string_length(jcode)) {
        field_error(errors, "body", "code", "string_too_short", "code must not be empty or blank");
    } else if (json_string_length(jcode) > (size_t)tk.cfg.limits_max_code_bytes ||
               strlen(code) != json_string_length(jcode)) {
        field_error(errors, "body", "code", "string_too_long",
                    "code is longer than limits.max_code_bytes or contains NUL");
    }
}

/* timeout and job_type: shared by every submit route. */
static void validate_common(json_t *root, json_t *errors, struct job_spec *s)
{
    json_t *jt = json_object_get(root, "timeout");
    if (jt && !json_is_null(jt)) {
        if (!json_is_integer(jt)) {
            field_error(errors, "body", "timeout", "int_type", "Input should be a valid integer");
        } else if (json_integer_value(jt) < 1 ||
                   json_integer_value(jt) > tk.cfg.limits_max_timeout) {
            char msg[128];
            snprintf(msg, sizeof msg, "timeout must be between 1 and %lld seconds",
                     (long long)tk.cfg.limits_max_timeout);
            field_error(errors, "body", "timeout", "out_of_range", msg);
        } else {
            s->timeout = json_integer_value(jt);
        }
    }
    json_t *jjt = json_object_get(root, "job_type");
    if (jjt && !json_is_null(jjt)) {
        const char *ref = json_string_value(jjt);
        char name[TK_JOB_TYPE_NAME_MAX + 1], version[JOBTYPE_REF_VERSION_MAX + 1];
        if (!ref) {
            field_error(errors, "body", "job_type", "string_type",
                        "Input should be a valid string");
        } else if (jobtype_parse_ref(ref, name, version) < 0) {
            field_error(errors, "body", "job_type", "job_type_invalid",
                        "job_type must be NAME or NAME@VERSION (VERSION: latest, the 12 hex "
                        "digits GET /job-types/NAME lists, sha256:<those digits>, or a "
                        "version_tag given to a build)");
        } else if (!config_job_type(&tk.cfg, name)) {
            char msg[1024];
            int n = snprintf(msg, sizeof msg, "Unknown job type '%.64s' (configured:", name);
            for (size_t i = 0; i < tk.cfg.n_job_types && n > 0 && (size_t)n < sizeof msg; i++)
                n += snprintf(msg + n, sizeof msg - (size_t)n, "%s %s", i ? "," : "",
                              tk.cfg.job_types[i].name);
            if (n > 0 && (size_t)n < sizeof msg - 1)
                snprintf(msg + n, sizeof msg - (size_t)n, ")");
            field_error(errors, "body", "job_type", "unknown_job_type", msg);
        } else if (!strcmp(name, "default") && version[0] && strcmp(version, "latest")) {
            field_error(errors, "body", "job_type", "unknown_version",
                        "the default job type is docker.image: only default@latest");
        } else {
            snprintf(s->job_type, sizeof s->job_type, "%s", ref);
        }
    }
}

/* The job type's own timeout when the request named none. */
static void default_timeout(struct job_spec *s)
{
    const struct tk_job_type *t = jobtype_lookup(&tk.cfg, s->job_type, NULL);
    if (!s->timeout)
        s->timeout = t ? t->timeout : tk.cfg.limits_timeout;
}

/* `requirements`: when allowed, a list of at most 50 valid requirement strings. */
static void validate_requirements(json_t *jreq, json_t *errors, struct job_spec *s)
{
    if (!jreq || json_is_null(jreq) || (json_is_array(jreq) && json_array_size(jreq) == 0))
        return;
    if (!tk.cfg.environments_allow_runtime_requirements) {
        field_error(errors, "body", "requirements", "not_allowed",
                    "Runtime requirements are not enabled on this server "
                    "(environments.allow_runtime_requirements is off); use a job type with the "
                    "packages");
        return;
    }
    bool ok = json_is_array(jreq) && json_array_size(jreq) <= JOBTYPE_MAX_REQUIREMENTS;
    size_t i;
    json_t *v;
    json_array_foreach(jreq, i, v)
    {
        ok = ok && json_is_string(v) &&
             jobtype_requirement_ok(json_string_value(v), json_string_length(v)) &&
             strlen(json_string_value(v)) == json_string_length(v);
    }
    if (!ok) {
        field_error(errors, "body", "requirements", "requirements_invalid",
                    "requirements must be at most 50 strings like \"pandas\" or "
                    "\"numpy>=1.24,<2\" (NAME[extras][specifiers]; no URLs, blanks or shell "
                    "characters)");
        return;
    }
    s->requirements = json_dumps(jreq, JSON_COMPACT);
}

/*
 * input_data's text exactly as the client sent it — key order, spacing, number spelling —
 * for /input/data.json, the record (a json column keeps text as given) and so a rerun or a
 * fork. The body was parsed whole already (body_parse); the span is cut from it. Absent or
 * null: "{}". NULL only when out of memory.
 */
static char *input_as_sent(const char *body, size_t len, json_t *jin)
{
    if (!jin || json_is_null(jin))
        return strdup("{}");
    size_t off = 0, n = 0;
    if (body && json_member_span(body, len, "input_data", &off, &n) == 0)
        return strndup(body + off, n);
    /* cannot happen for a body jansson took; say so and keep the value's meaning */
    log_warn("msg=\"input_data span not found; storing it re-serialized\"");
    return json_dumps(jin, JSON_COMPACT);
}

/* The body of /execute or /execute/async (len bytes from the client) into a spec; NULL with
 * the 4xx status in *code and its body in *reply. No request and no I/O (tests/fuzz's
 * fuzz_http runs it as it is). */
static struct job_spec *execute_spec_parse(const char *body, size_t len, bool async,
                                           const char *corr, int *code, json_t **reply)
{
    json_t *root = body_parse(body, len, false, corr, code, reply);
    if (!root)
        return NULL;
    static const char *const known[] = {"code",
                                        "input_data",
                                        "timeout",
                                        "job_type",
                                        "startup_timeout",
                                        "requirements",
                                        "idempotency_key",
                                        "stdin",
                                        "files",
                                        "callback_url",
                                        NULL};
    json_t *errors = json_array();
    check_known_fields(root, known, errors);
    struct job_spec *s = calloc(1, sizeof *s);
    snprintf(s->key_id, sizeof s->key_id, "%s", current_auth.ok ? current_auth.key_id : "");
    s->async = async;
    snprintf(s->job_type, sizeof s->job_type, "default");
    snprintf(s->corr, sizeof s->corr, "%s", corr);
    validate_code(json_object_get(root, "code"), errors, true);
    json_t *jin = json_object_get(root, "input_data");
    if (jin && !json_is_null(jin) && !json_is_object(jin)) {
        field_error(errors, "body", "input_data", "dict_type", "Input should be a JSON object");
    } else {
        s->input_text = input_as_sent(body, len, jin);
        if (s->input_text && strlen(s->input_text) > (size_t)tk.cfg.limits_max_input_bytes)
            field_error(errors, "body", "input_data", "too_long",
                        "input_data is larger than limits.max_input_bytes");
    }
    validate_common(root, errors, s);
    json_t *jst = json_object_get(root, "startup_timeout");
    if (jst && !json_is_null(jst)) {
        if (!json_is_integer(jst) || json_integer_value(jst) < 10 || json_integer_value(jst) > 600)
            field_error(errors, "body", "startup_timeout", "out_of_range",
                        "startup_timeout must be an integer from 10 to 600 seconds");
        else
            s->startup_timeout = json_integer_value(jst);
    }
    default_timeout(s);
    validate_requirements(json_object_get(root, "requirements"), errors, s);
    json_t *jkey = json_object_get(root, "idempotency_key");
    if (jkey && !json_is_null(jkey)) {
        if (!json_is_string(jkey) || !valid_idempotency_key(json_string_value(jkey)))
            field_error(errors, "body", "idempotency_key", "string_pattern_mismatch",
                        "idempotency_key must be 8 to 255 characters of [A-Za-z0-9_-]");
        else
            s->idem = strdup(json_string_value(jkey));
    }
    json_t *jstdin = json_object_get(root, "stdin");
    if (jstdin && !json_is_null(jstdin)) {
        if (!json_is_string(jstdin) ||
            json_string_length(jstdin) > (size_t)tk.cfg.limits_max_input_bytes ||
            strlen(json_string_value(jstdin)) != json_string_length(jstdin))
            field_error(errors, "body", "stdin", "string_type",
                        "stdin must be a string (no NUL) within limits.max_input_bytes");
        else
            s->stdin_text = strdup(json_string_value(jstdin));
    }
    json_t *jfiles = json_object_get(root, "files");
    if (jfiles && !json_is_null(jfiles)) {
        const char *name;
        json_t *val;
        size_t total = 0;
        bool ok = json_is_object(jfiles) && json_object_size(jfiles) <= 50;
        json_object_foreach(jfiles, name, val)
        {
            size_t blen = json_string_length(val);
            ok = ok && json_is_string(val) && outputs_name_ok(name) && strcmp(name, "data.json") &&
                 strcmp(name, "stdin") && blen % 4 == 0 &&
                 strspn(json_string_value(val), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv"
                                                "wxyz0123456789+/=") == blen;
            total += blen / 4 * 3;
        }
        if (!ok || total > (size_t)tk.cfg.limits_max_input_bytes)
            field_error(errors, "body", "files", "files_invalid",
                        "files must map at most 50 safe names ([A-Za-z0-9._-], not data.json or "
                        "stdin) to base64, within limits.max_input_bytes in all");
        else
            s->files_json = json_dumps(jfiles, JSON_COMPACT | JSON_SORT_KEYS);
    }
    json_t *jcb = json_object_get(root, "callback_url");
    if (jcb && !json_is_null(jcb)) {
        char why[512] = "callback_url must be an http:// or https:// URL of at most 2048 bytes";
        if (!json_is_string(jcb) ||
            callbacks_url_check(json_string_value(jcb), tk.cfg.callbacks_allow_private_addresses,
                                why, sizeof why) < 0)
            field_error(errors, "body", "callback_url", "url_parsing", why);
        else
            s->callback_url = strdup(json_string_value(jcb));
    }
    if (json_string_value(json_object_get(root, "code")))
        s->code = strdup(json_string_value(json_object_get(root, "code")));
    json_decref(root);
    if (json_array_size(errors) > 0) {
        *code = 422;
        *reply = errors_body(errors, corr);
        spec_free(s);
        return NULL;
    }
    json_decref(errors);
    return s;
}

/* The request body of /execute and /execute/async into a spec; NULL after a 4xx reply. */
static struct job_spec *spec_from_execute(struct evhttp_request *req, const char *corr, bool async)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    int code = 0;
    json_t *reply = NULL;
    struct job_spec *s = execute_spec_parse(len ? (const char *)evbuffer_pullup(in, -1) : NULL, len,
                                            async, corr, &code, &reply);
    if (!s) {
        reply_json(req, code, corr, reply);
        return NULL;
    }
    const char *host = NULL;
    ev_uint16_t port;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), (char **)&host, &port);
    snprintf(s->client_ip, sizeof s->client_ip, "%s", host ? host : "");
    return s;
}

void api_execute(struct evhttp_request *req, const char *corr, char **params)
{
    struct job_spec *s = spec_from_execute(req, corr, false);
    if (s)
        submit_checked(req, s);
}

void api_execute_async(struct evhttp_request *req, const char *corr, char **params)
{
    struct job_spec *s = spec_from_execute(req, corr, true);
    if (s)
        submit_checked(req, s);
}

/* ---- rerun and fork ---- */

struct lineage {
    struct job_spec *s; /* the new job, filled from the parent */
    bool fork;
};

static void on_parent(const PGresult *res, const char *err, void *arg)
{
    struct lineage *l = arg;
    struct job_spec *s = l->s;
    bool fork = l->fork;
    free(l);
    if (!res) {
        reply_db_unavailable(s->req, s->corr, "Database unavailable");
        spec_free(s);
        return;
    }
    if (PQntuples(res) != 1) {
        reply_error(s->req, 404, s->corr, "Job not found");
        spec_free(s);
        return;
    }
    const char *status = PQgetvalue(res, 0, 4);
    if (!fork && !is_terminal(status)) {
        reply_error(s->req, 400, s->corr,
                    "Job is not finished yet; only a finished job can be rerun");
        spec_free(s);
        return;
    }
    if (!s->code)
        s->code = strdup(PQgetvalue(res, 0, 0));
    s->input_text = strdup(PQgetvalue(res, 0, 1));
    if (!s->timeout)
        s->timeout = atoll(PQgetvalue(res, 0, 2));
    if (!s->job_type[0])
        snprintf(s->job_type, sizeof s->job_type, "%s", PQgetvalue(res, 0, 3));
    if (!PQgetisnull(res, 0, 8)) /* runtime requirements: a rerun and a fork keep them */
        s->requirements = strdup(PQgetvalue(res, 0, 8));
    if (!PQgetisnull(res, 0, 5))
        s->stdin_text = strdup(PQgetvalue(res, 0, 5));
    if (!PQgetisnull(res, 0, 6))
        s->startup_timeout = atoll(PQgetvalue(res, 0, 6));
    if (!PQgetisnull(res, 0, 7)) /* extra input files: the same for a rerun and a fork */
        s->files_json = strdup(PQgetvalue(res, 0, 7));
    submit_checked(s->req, s);
}

static void lineage_route(struct evhttp_request *req, const char *corr, const char *id, bool fork)
{
    json_t *root = body_object(req, corr, true);
    if (!root)
        return;
    static const char *const known_rerun[] = {"job_type", "timeout", NULL};
    static const char *const known_fork[] = {"code", "job_type", "timeout", NULL};
    json_t *errors = json_array();
    check_known_fields(root, fork ? known_fork : known_rerun, errors);
    struct job_spec *s = calloc(1, sizeof *s);
    snprintf(s->key_id, sizeof s->key_id, "%s", current_auth.ok ? current_auth.key_id : "");
    s->async = true;
    s->relationship = fork ? "fork" : "rerun";
    snprintf(s->corr, sizeof s->corr, "%s", corr);
    validate_common(root, errors, s);
    if (fork)
        validate_code(json_object_get(root, "code"), errors, true);
    if (fork && json_string_value(json_object_get(root, "code")))
        s->code = strdup(json_string_value(json_object_get(root, "code")));
    json_decref(root);
    if (json_array_size(errors) > 0) {
        reply_422(req, corr, errors);
        spec_free(s);
        return;
    }
    json_decref(errors);
    if (!uuid_valid(id)) {
        reply_error(req, 404, corr, "Job not found");
        spec_free(s);
        return;
    }
    snprintf(s->parent, sizeof s->parent, "%s", id);
    s->req = req;
    struct lineage *l = malloc(sizeof *l);
    l->s = s;
    l->fork = fork;
    const char *p[2] = {id, auth_owner()};
    if (pgq_exec(A.pg,
                 "SELECT code, input::text, timeout_s, job_type, status, stdin, startup_timeout_s,"
                 " input_files::text, requirements::text FROM jobs"
                 " WHERE id = $1::uuid AND ($2::text IS NULL OR api_key_id = $2)",
                 2, p, on_parent, l) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        spec_free(s);
        free(l);
    }
}

void api_job_rerun(struct evhttp_request *req, const char *corr, char **params)
{
    lineage_route(req, corr, params[0], false);
}

void api_job_fork(struct evhttp_request *req, const char *corr, char **params)
{
    lineage_route(req, corr, params[0], true);
}

/* ---- status, result, executions ---- */

static void on_record(const PGresult *res, const char *err, void *arg)
{
    struct rec_req *r = arg;
    if (!res) {
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
    } else if (PQntuples(res) != 1) {
        reply_error(r->req, 404, r->corr, r->kind == 2 ? "Execution not found" : "Job not found");
    } else if (r->kind == 0) { /* GET /jobs/{id} */
        json_t *rec = record_json(res, 0, false);
        json_t *body = json_pack(
            "{s:O, s:O, s:O, s:O, s:O, s:O, s:o}", "job_id", json_object_get(rec, "job_id"),
            "status", json_object_get(rec, "status"), "created_at",
            json_object_get(rec, "created_at"), "started_at", json_object_get(rec, "started_at"),
            "ended_at", json_object_get(rec, "ended_at"), "duration_ms",
            json_object_get(rec, "duration_ms"), "queue_position", col_int(res, 0, R_QUEUE_POS));
        json_decref(rec);
        reply_json(r->req, 200, r->corr, body);
    } else if (r->kind == 2 || is_terminal(PQgetvalue(res, 0, R_STATUS))) {
        reply_json(r->req, 200, r->corr, record_json(res, 0, r->full));
    } else if (!r->wait) {
        reply_json(r->req, 200, r->corr,
                   json_pack("{s:s, s:s, s:s, s:o}", "job_id", r->id, "status",
                             PQgetvalue(res, 0, R_STATUS), "message", "Job still in progress",
                             "queue_position", col_int(res, 0, R_QUEUE_POS)));
    } else {
        add_waiter(r->req, r->corr, r->id, WAIT_RESULT, r->full, r->wait_ms);
    }
    free(r);
}

static bool parse_view(struct evhttp_request *req, const char *corr, bool *full)
{
    char *view = query_param(req, "view");
    *full = view && !strcmp(view, "full");
    bool ok = !view || !strcmp(view, "full") || !strcmp(view, "slim");
    free(view);
    if (!ok)
        reply_field_error(req, corr, "query", "view", "enum", "view must be full or slim");
    return ok;
}

static void record_route(struct evhttp_request *req, const char *corr, const char *id, int kind)
{
    struct rec_req *r = rec_req_new(req, corr, id);
    r->kind = kind;
    if (kind != 0 && !parse_view(req, corr, &r->full)) {
        free(r);
        return;
    }
    if (kind == 1) {
        char *wait = query_param(req, "wait"), *timeout = query_param(req, "timeout");
        bool ok = true;
        if (wait) {
            r->wait = !strcmp(wait, "true") || !strcmp(wait, "1");
            ok = r->wait || !strcmp(wait, "false") || !strcmp(wait, "0");
            if (!ok)
                reply_field_error(req, corr, "query", "wait", "bool_parsing",
                                  "wait must be true or false");
        }
        double t = 30;
        if (ok && timeout) {
            char *end;
            t = strtod(timeout, &end);
            if (end == timeout || *end || !isfinite(t) || t < 1 || t > 300) {
                ok = false;
                reply_field_error(req, corr, "query", "timeout", "out_of_range",
                                  "timeout must be a number of seconds from 1 to 300");
            }
        }
        r->wait_ms = (int)(t * 1000);
        free(wait);
        free(timeout);
        if (!ok) {
            free(r);
            return;
        }
    }
    if (!uuid_valid(id)) {
        reply_error(req, 404, corr, kind == 2 ? "Execution not found" : "Job not found");
        free(r);
        return;
    }
    if (query_record(id, auth_owner(), on_record, r) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(r);
    }
}

void api_job_status(struct evhttp_request *req, const char *corr, char **params)
{
    record_route(req, corr, params[0], 0);
}

void api_job_result(struct evhttp_request *req, const char *corr, char **params)
{
    record_route(req, corr, params[0], 1);
}

void api_execution(struct evhttp_request *req, const char *corr, char **params)
{
    record_route(req, corr, params[0], 2);
}

struct list_req {
    struct evhttp_request *req;
    char corr[72];
    long long limit, offset;
    bool full;
};

static void on_list(const PGresult *res, const char *err, void *arg)
{
    struct list_req *l = arg;
    if (!res) {
        reply_db_unavailable(l->req, l->corr, "Database unavailable");
    } else {
        json_t *items = json_array();
        int n = PQntuples(res);
        /* the page the filters selected had `rows` rows; the byte cap may have cut it */
        long long rows = n > 0 ? atoll(PQgetvalue(res, 0, R_NCOLS)) : 0;
        for (int i = 0; i < n && i < l->limit; i++)
            json_array_append_new(items, record_json(res, i, l->full));
        bool more = rows > l->limit || (long long)json_array_size(items) < rows;
        reply_json(l->req, 200, l->corr, page_envelope(items, l->limit, l->offset, more));
    }
    free(l);
}

void api_executions(struct evhttp_request *req, const char *corr, char **params)
{
    struct list_req *l = calloc(1, sizeof *l);
    l->req = req;
    snprintf(l->corr, sizeof l->corr, "%s", corr);
    if (!query_int(req, corr, "limit", 100, 1, 1000, &l->limit) ||
        !query_int(req, corr, "offset", 0, 0, 1000000000, &l->offset) ||
        !parse_view(req, corr, &l->full)) {
        free(l);
        return;
    }
    char *status = query_param(req, "status"), *job_type = query_param(req, "job_type");
    if (status && !is_terminal(status) && strcmp(status, "queued") && strcmp(status, "running")) {
        reply_field_error(req, corr, "query", "status", "enum",
                          "status must be queued, running, succeeded, failed, timeout, oom or "
                          "cancelled");
        free(status);
        free(job_type);
        free(l);
        return;
    }
    char lim[24], off[24], cap[24];
    snprintf(lim, sizeof lim, "%lld", l->limit + 1); /* one more tells has_more */
    snprintf(off, sizeof off, "%lld", l->offset);
    snprintf(cap, sizeof cap, "%lld", (long long)tk.cfg.limits_max_page_bytes);
    const char *p[6] = {status, job_type, lim, off, auth_owner(), cap};
    /* A page stops before the record that would take its bulky columns past
     * limits.max_page_bytes (the first record is always sent): the acceptor never holds
     * more than that (plus one record) of a listing. The database only measures the
     * columns (octet_length reads a TOASTed value's size without fetching it). */
    if (pgq_exec(
            A.pg,
            "SELECT * FROM (SELECT " RECORD_COLS ", count(*) OVER () AS page_rows,"
            "  sum(sz) OVER w - sz AS before, row_number() OVER w AS rn"
            " FROM (SELECT *, octet_length(coalesce(stdout, ''))"
            "   + octet_length(coalesce(stderr, '')) + octet_length(coalesce(output::text, ''))"
            "   + octet_length(coalesce(artifacts::text, '')) AS sz FROM jobs"
            "  WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR job_type = $2)"
            "  AND ($5::text IS NULL OR api_key_id = $5)"
            "  ORDER BY created_at DESC, id LIMIT $3::integer OFFSET $4::integer) jobs"
            " WINDOW w AS (ORDER BY created_at DESC, id ROWS UNBOUNDED PRECEDING)) page"
            " WHERE rn = 1 OR before < $6::bigint ORDER BY rn",
            6, p, on_list, l) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(l);
    }
    free(status);
    free(job_type);
}

/* ---- artifacts ---- */

struct art_req {
    struct evhttp_request *req;
    char corr[72];
    bool head;
};

/* Does an If-None-Match header name this ETag (or "*")? */
static bool etag_matches(const char *header, const char *sha)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", header);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!strncmp(tok, "W/", 2))
            tok += 2;
        if (*tok == '"')
            tok++;
        size_t n = strcspn(tok, "\" ");
        if ((n == 1 && *tok == '*') || (n == strlen(sha) && !strncmp(tok, sha, n)))
            return true;
    }
    return false;
}

static void on_artifact(const PGresult *res, const char *err, void *arg)
{
    struct art_req *a = arg;
    struct evhttp_request *req = a->req;
    if (!res) {
        reply_db_unavailable(req, a->corr, "Database unavailable");
    } else if (PQntuples(res) != 1) {
        reply_error(req, 404, a->corr, "Job not found");
    } else if (PQgetisnull(res, 0, 1)) {
        reply_error(req, 404, a->corr, "Artifact not found");
    } else {
        const char *sha = PQgetvalue(res, 0, 2);
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        char etag[80], disp[320];
        snprintf(etag, sizeof etag, "\"%s\"", sha);
        evhttp_add_header(h, "ETag", etag);
        const char *inm =
            evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
        if (inm && etag_matches(inm, sha)) {
            reply_raw(req, 304, a->corr, "", 0);
        } else {
            evhttp_add_header(h, "Content-Type", PQgetvalue(res, 0, 3));
            snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", PQgetvalue(res, 0, 4));
            evhttp_add_header(h, "Content-Disposition", disp);
            if (a->head) {
                evhttp_add_header(h, "Content-Length", PQgetvalue(res, 0, 1));
                reply_raw(req, 200, a->corr, "", 0);
            } else {
                size_t len = 0;
                unsigned char *data =
                    PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 5), &len);
                reply_raw(req, 200, a->corr, (const char *)data, len);
                PQfreemem(data);
            }
        }
    }
    free(a);
}

void api_artifact(struct evhttp_request *req, const char *corr, char **params)
{
    const char *id = params[0], *name = params[1];
    if (!uuid_valid(id)) {
        reply_error(req, 404, corr, "Job not found");
        return;
    }
    if (!name || !outputs_name_ok(name)) {
        reply_error(req, 400, corr, "Invalid artifact path");
        return;
    }
    struct art_req *a = calloc(1, sizeof *a);
    a->req = req;
    a->head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
    snprintf(a->corr, sizeof a->corr, "%s", corr);
    const char *p[4] = {id, name, a->head ? "f" : "t", auth_owner()};
    if (pgq_exec(A.pg,
                 "SELECT j.id, a.size_bytes, a.sha256, a.content_type, a.name,"
                 " CASE WHEN $3::boolean THEN a.data END"
                 " FROM jobs j LEFT JOIN artifacts a ON a.job_id = j.id AND a.name = $2"
                 " WHERE j.id = $1::uuid AND ($4::text IS NULL OR j.api_key_id = $4)",
                 4, p, on_artifact, a) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(a);
    }
}

/* ---- GET /jobs/{id}/events: Server-Sent Events (ext) ----
 *
 * A chunked text/event-stream: "status" events as the job moves (queued, running, ...),
 * "stdout"/"stderr" events with live output while it runs (data: a JSON string), and a
 * final "result" event with the full record, after which the stream ends. Status and
 * output come through PostgreSQL notifications, so it works for any job of any node.
 */
struct sse {
    struct sse *next;
    char id[40];
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    char corr[72];
    struct event *timer;
    int slot; /* the job's shm slot while it was live here (watchers count), or -1 */
    bool finishing;
};

static struct sse *streams;

static void sse_remove(struct sse *s)
{
    for (struct sse **pp = &streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    if (s->slot >= 0) {
        struct tk_job *job = shm_job(tk.shm, (uint32_t)s->slot);
        if (!strcmp(job->id, s->id) && atomic_load(&job->watchers) > 0)
            atomic_fetch_sub(&job->watchers, 1);
    }
    if (s->timer)
        event_free(s->timer);
    free(s);
    A.inflight--;
}

static void sse_event(struct sse *s, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
    json_decref(data);
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add_printf(buf, "event: %s\ndata: %s\n\n", event, text ? text : "null");
    free(text);
    evhttp_send_reply_chunk(s->req, buf);
    evbuffer_free(buf);
}

static void sse_end(struct sse *s)
{
    conns_set_closecb(s->conn, NULL, NULL);
    evhttp_send_reply_end(s->req);
    sse_remove(s);
    acceptor_maybe_exit();
}

/* The client went away: forget the stream (the request is libevent's to free). */
static void sse_closed(struct evhttp_connection *conn, void *arg)
{
    sse_remove(arg);
}

static void sse_timeout(evutil_socket_t fd, short ev, void *arg)
{
    struct sse *s = arg;
    sse_event(s, "timeout", json_pack("{s:s}", "job_id", s->id));
    sse_end(s);
}

static struct sse *sse_find(const char *id, struct sse *after)
{
    for (struct sse *s = after ? after->next : streams; s; s = s->next)
        if (!strcmp(s->id, id))
            return s;
    return NULL;
}

static void on_sse_result(const PGresult *res, const char *err, void *arg)
{
    char *id = arg;
    if (res && PQntuples(res) == 1 && is_terminal(PQgetvalue(res, 0, R_STATUS))) {
        struct sse *s, *next;
        for (s = sse_find(id, NULL); s; s = next) {
            next = sse_find(id, s);
            sse_event(s, "result", record_json(res, 0, true));
            sse_end(s);
        }
    }
    free(id);
}

static void sse_on_status(const char *id, const char *status)
{
    bool any = false;
    for (struct sse *s = sse_find(id, NULL); s; s = sse_find(id, s)) {
        sse_event(s, "status", json_pack("{s:s, s:s}", "job_id", id, "status", status));
        any = true;
    }
    char *copy = any && is_terminal(status) ? strdup(id) : NULL;
    if (copy && query_record(id, NULL, on_sse_result, copy) < 0)
        free(copy);
}

static void sse_on_output(const char *payload)
{
    char id[40];
    int stream, off = 0;
    if (sscanf(payload, "%39s %d %n", id, &stream, &off) != 2 || !sse_find(id, NULL))
        return;
    const char *b64 = payload + off;
    size_t blen = strlen(b64);
    unsigned char *raw = malloc(blen / 4 * 3 + 4);
    int n = raw ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)blen) : -1;
    if (n >= 0) {
        if (blen >= 1 && b64[blen - 1] == '=')
            n--;
        if (blen >= 2 && b64[blen - 2] == '=')
            n--;
        char *text = utf8_sanitize((const char *)raw, (size_t)n, NULL);
        for (struct sse *s = sse_find(id, NULL); s && text; s = sse_find(id, s))
            sse_event(s, stream == 2 ? "stderr" : "stdout", json_string(text));
        free(text);
    }
    free(raw);
}

static void on_sse_record(const PGresult *res, const char *err, void *arg)
{
    struct rec_req *r = arg;
    if (!res) {
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
        free(r);
        return;
    }
    if (PQntuples(res) != 1) {
        reply_error(r->req, 404, r->corr, "Job not found");
        free(r);
        return;
    }
    struct sse *s = calloc(1, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", r->id);
    snprintf(s->corr, sizeof s->corr, "%s", r->corr);
    s->req = r->req;
    s->conn = evhttp_request_get_connection(r->req);
    s->slot = find_live_job(r->id);
    free(r);
    if (s->slot >= 0)
        atomic_fetch_add(&shm_job(tk.shm, (uint32_t)s->slot)->watchers, 1);
    struct evkeyvalq *h = evhttp_request_get_output_headers(s->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Correlation-ID", s->corr);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_send_reply_start(s->req, 200, "OK");
    s->next = streams;
    streams = s;
    A.inflight++;
    conns_set_closecb(s->conn, sse_closed, s);
    s->timer = evtimer_new(A.base, sse_timeout, s);
    struct timeval tv = {(long)tk.cfg.limits_max_timeout + 120, 0};
    evtimer_add(s->timer, &tv);
    const char *status = PQgetvalue(res, 0, R_STATUS);
    sse_event(s, "status", json_pack("{s:s, s:s}", "job_id", s->id, "status", status));
    if (is_terminal(status)) {
        sse_event(s, "result", record_json(res, 0, true));
        sse_end(s);
    }
}

void api_job_events(struct evhttp_request *req, const char *corr, char **params)
{
    const char *id = params[0];
    if (!uuid_valid(id)) {
        reply_error(req, 404, corr, "Job not found");
        return;
    }
    if (A.stopping || A.draining) {
        reply_error(req, 503, corr, "takod is shutting down");
        return;
    }
    struct rec_req *r = rec_req_new(req, corr, id);
    if (query_record(id, auth_owner(), on_sse_record, r) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(r);
    }
}

void api_jobs_drop_streams(void)
{
    while (streams) {
        sse_event(streams, "shutdown", json_pack("{s:s}", "job_id", streams->id));
        sse_end(streams);
    }
}

/* ---- cancel and stop ---- */

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
void api_job_cancel(struct evhttp_request *req, const char *corr, char **params)
{
    const char *id = params[0];
    int idx = id && uuid_valid(id) ? find_live_job(id) : -1;
    const char *owner = auth_owner();
    if (idx >= 0 && owner && strcmp(shm_job(tk.shm, (uint32_t)idx)->key_id, owner) != 0)
        idx = -1; /* another key's job: as if it did not exist */
    if (idx >= 0 && atomic_load(&shm_job(tk.shm, (uint32_t)idx)->finishing))
        idx = -1; /* its result is being recorded: it has completed */
    if (idx < 0) {
        reply_error(req, 404, corr, "Job not found or already completed");
        return;
    }
    jobs_cancel(&(struct jobs_db){.pgq = A.pg}, (uint32_t)idx, &A.me->intent);
    log_info("msg=\"job cancelled\" job=%s", id);
    reply_json(req, 200, corr, json_pack("{s:s, s:s}", "status", "cancelled", "job_id", id));
}

void api_jobs_stop(void)
{
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++)
        if (A.pending[i].req)
            jobs_settle_unstarted(&(struct jobs_db){.pgq = A.pg}, i, "interrupted",
                                  "takod was stopped before the job started", &A.me->intent);
}
