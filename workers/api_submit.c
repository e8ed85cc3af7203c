/*
 * api_submit.c — the job routes that write: submit (sync, async, rerun, fork), cancel,
 * and the stop's settling of what this acceptor holds. Each state change is a jobs.h
 * transition; this file validates, decides what to answer, and parks sync requests.
 *
 * Submitting: validate → jobs_admit into a free shm slot (none: 503; the idempotency key
 * is not burned) → spool files → INSERT the record (jobstore_insert; ON CONFLICT on the
 * idempotency key does nothing) → jobs_enqueue. A sync request is parked on its slot until
 * the executor's completion; an async one is answered once the INSERT has committed. A
 * duplicate of a known request waits for that job's record (api_wait.c).
 */
#include "api_jobs.h"
#include "tako/callbacks.h"
#include "tako/dbspool.h"
#include "tako/jobs.h"
#include "tako/jobtypes.h"
#include "tako/jsonspan.h"
#include "tako/log.h"
#include "tako/outputs.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    /* the INSERT's parameters point here (and into the fields above) until spec_free, so
     * an unkeyed sync job whose INSERT is lost with the connection can still be spooled */
    struct jobstore_stmt ins;
    bool quota; /* the INSERT is the quota's (cluster.enabled): no row = over it */
    char max_q[24], max_c[24];
    char id[40]; /* an unowned job's (it has no slot) */
    char timeout_s[24], startup_s[24], mem_s[24], cpus_s[32], created_s[32];
    char code_hash[65], input_hash[65];
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

/* 429: the key is over a quota counted over every node (cluster.enabled). */
static void reply_quota(struct job_spec *s)
{
    char detail[200];
    snprintf(detail, sizeof detail,
             "Quota exceeded: this key already has %s queued or %s unfinished jobs on the "
             "cluster (auth.max_queued_jobs, auth.max_concurrent_jobs)",
             s->max_q, s->max_c);
    evhttp_add_header(evhttp_request_get_output_headers(s->req), "Retry-After", "1");
    reply_error(s->req, 429, s->corr, detail);
}

/* No row from the INSERT: the idempotency key's job (a repeat), or the quota. */
static void not_inserted(struct job_spec *s, pgq_cb then);

/* The idempotency key was taken: same request → that job; another request → 409. */
static void on_existing(const PGresult *res, const char *err, void *arg)
{
    struct job_spec *s = arg;
    if (res && PQntuples(res) == 0 && s->quota) {
        reply_quota(s);
    } else if (!res || PQntuples(res) != 1) {
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
        wait_add(s->req, s->corr, PQgetvalue(res, 0, 0), WAIT_EXECUTE, true,
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
    if (!res && !s->async && !s->idem && !A.stopping && !pgq_connected(A.pg) &&
        dbspool_write_insert(job->id, s->ins.params) == 0) {
        /* PostgreSQL went away with the INSERT in flight: as for a job submitted while it
         * is down, the unkeyed sync job runs and its record waits on disk (if the INSERT
         * did commit, the replay finds the row and drops the file) */
        log_warn("msg=\"database lost while recording; record spooled\" job=%s err=\"%s\"", job->id,
                 err ? err : "");
        if (jobs_enqueue(s->idx, s->gen, &A.me->intent) < 0)
            fail_pending(s->idx, 503, "Job queue is full, try again later");
        spec_free(s);
        return;
    }
    if (!res || PQntuples(res) == 0 || A.stopping) {
        /* not admitted after all: give the slot back without answering through it */
        if (!s->async)
            acceptor_unpark(s->idx, s->token);
        jobs_release(s->idx, &A.me->intent);
        if (!res) {
            log_error("msg=\"recording job failed\" err=\"%s\"", err);
            reply_db_unavailable(s->req, s->corr, "Database unavailable; the job was not run");
        } else if (A.stopping) {
            reply_error(s->req, 503, s->corr, "takod is shutting down; the job was not run");
        } else {
            not_inserted(s, on_existing);
            acceptor_maybe_exit();
            return;
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

static void not_inserted(struct job_spec *s, pgq_cb then)
{
    if (!s->idem && s->quota) {
        reply_quota(s);
        spec_free(s);
        return;
    }
    const char *qp[2] = {s->idem, s->key_id};
    if (pgq_exec(A.pg, JOBSTORE_SQL_BY_IDEMPOTENCY_KEY, 2, qp, then, s) == 0)
        return;
    reply_db_unavailable(s->req, s->corr, "Database unavailable; the job was not run");
    spec_free(s);
}

/* An unowned job's INSERT (cluster.enabled): answered once it has committed. */
static void on_inserted_unowned(const PGresult *res, const char *err, void *arg)
{
    struct job_spec *s = arg;
    if (!res) {
        log_error("msg=\"recording job failed\" err=\"%s\"", err);
        reply_db_unavailable(s->req, s->corr, "Database unavailable; the job was not queued");
    } else if (PQntuples(res) == 0) {
        not_inserted(s, on_existing);
        return;
    } else {
        log_debug("msg=\"job queued in the shared queue\" job=%s", s->id);
        submit_reply_async(s, s->id, "queued");
    }
    spec_free(s);
}

/*
 * Per-key quotas (auth.max_queued_jobs, auth.max_concurrent_jobs), counted in the job
 * table, so they hold across acceptors (with cluster.enabled: in PostgreSQL, over every
 * node — the INSERT itself checks them, jobstore_insert_quota): waiting jobs, and unfinished jobs
 * (waiting or running). Over either: 429 and the spec is freed.
 */
static bool quota_ok(struct evhttp_request *req, struct job_spec *s)
{
    long long max_q = tk.cfg.auth_max_queued_jobs, max_c = tk.cfg.auth_max_concurrent_jobs;
    if (!s->key_id[0] || (!max_q && !max_c))
        return true;
    if (tk.cfg.cluster_enabled && pgq_connected(A.pg)) {
        s->quota = true;
        snprintf(s->max_q, sizeof s->max_q, "%lld", max_q);
        snprintf(s->max_c, sizeof s->max_c, "%lld", max_c);
        return true;
    }
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

/* The job's INSERT into s->ins (the quota's form when s->quota): its id, when it was
 * admitted, and the node that holds it (NULL: unowned, in the shared queue). */
static void record_stmt(struct job_spec *s, const char *id, uint64_t created_us, const char *node)
{
    char *timeout_s = s->timeout_s, *startup_s = s->startup_s, *mem_s = s->mem_s,
         *cpus_s = s->cpus_s, *created_s = s->created_s, *code_hash = s->code_hash,
         *input_hash = s->input_hash;
    snprintf(timeout_s, sizeof s->timeout_s, "%lld", s->timeout);
    snprintf(startup_s, sizeof s->startup_s, "%lld", s->startup_timeout);
    const struct tk_job_type *jt = jobtype_lookup(&tk.cfg, s->job_type, NULL);
    if (!jt) /* a rerun's parent may name a type no longer configured: its executor says so */
        jt = &tk.cfg.job_types[0];
    snprintf(mem_s, sizeof s->mem_s, "%lld", (long long)jt->memory_limit);
    snprintf(cpus_s, sizeof s->cpus_s, "%g", jt->cpu_limit);
    snprintf(created_s, sizeof s->created_s, "%llu", (unsigned long long)created_us);
    sha256_hex(s->code, strlen(s->code), code_hash);
    /* the input's hash is of its canonical form (keys sorted, compact), so a rerun, whose
     * input comes back from PostgreSQL's jsonb, hashes the same as the original */
    json_t *in_json = json_loads(s->input_text, 0, NULL);
    char *canon = in_json ? json_dumps(in_json, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(in_json);
    sha256_hex(canon ? canon : s->input_text, strlen(canon ? canon : s->input_text), input_hash);
    free(canon);
    struct job_row row = {.id = id,
                          .job_type = s->job_type,
                          .code = s->code,
                          .input = s->input_text,
                          .timeout_s = timeout_s,
                          .memory_bytes = mem_s,
                          .cpus = cpus_s,
                          .node = node,
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
    if (s->quota)
        jobstore_insert_quota(&s->ins, &row, s->max_q, s->max_c);
    else
        jobstore_insert(&s->ins, &row);
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
    if (!atomic_load(&tk.shm->docker_ok) && !(tk.cfg.cluster_enabled && s->async)) {
        /* circuit breaker (in a cluster an async job may still wait for another node) */
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
    if (tk.cfg.cluster_enabled && s->async &&
        (jobs_free_executors() <= 0 || !atomic_load(&tk.shm->docker_ok))) {
        /* no executor free here: it waits in PostgreSQL, and the first node with a free
         * executor claims it (workers/cluster.c) */
        uuid_v4(s->id);
        record_stmt(s, s->id, now_real_us(), NULL);
        if (pgq_exec_prepared(A.pg, s->ins.sql, s->ins.n, s->ins.params, on_inserted_unowned, s) <
            0) {
            reply_db_unavailable(req, s->corr, "Database unavailable; the job was not queued");
            spec_free(s);
        }
        return;
    }
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
    if (!s->async)
        acceptor_park(idx, req, job->req_token, s->corr);

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
    record_stmt(s, job->id, job->created_real_us, tk.node);
    struct jobstore_stmt *ins = &s->ins;
    if (!s->async && !s->idem && !pgq_connected(A.pg)) {
        /* PostgreSQL is down: an unkeyed sync job still runs; its record waits on disk */
        if (dbspool_write_insert(job->id, ins->params) == 0) {
            log_warn("msg=\"database unavailable; record spooled\" job=%s", job->id);
            jobs_enqueue(idx, gen, &A.me->intent);
            spec_free(s);
            return;
        }
    }
    if (pgq_exec_prepared(A.pg, ins->sql, ins->n, ins->params, on_inserted, s) < 0) {
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

/* ---- cancel and stop ---- */

/*
 * POST /jobs/{id}/cancel: a queued job never runs (settled here, its waiting client
 * answered); a running job's executor sees the flag within 250 ms, stops the program
 * (TERM, then KILL) and records it cancelled. A finished or unknown job is a 404, as in
 * Tako VM.
 */
struct remote_cancel {
    struct evhttp_request *req;
    char corr[72], id[40];
};

static void on_cancel_anywhere(const PGresult *res, const char *err, void *arg)
{
    struct remote_cancel *c = arg;
    if (!res) {
        log_warn("msg=\"cancel through the database failed\" job=%s err=\"%s\"", c->id, err);
        reply_db_unavailable(c->req, c->corr, "Database unavailable; the job was not cancelled");
    } else if (PQntuples(res) == 0) {
        reply_error(c->req, 404, c->corr, "Job not found or already completed");
    } else {
        log_info("msg=\"job cancelled\" job=%s node=\"%s\"", c->id,
                 PQgetisnull(res, 0, 0) ? "(shared queue)" : PQgetvalue(res, 0, 0));
        reply_json(c->req, 200, c->corr,
                   json_pack("{s:s, s:s}", "status", "cancelled", "job_id", c->id));
    }
    free(c);
}

void api_job_cancel(struct evhttp_request *req, const char *corr, char **params)
{
    const char *id = params[0];
    int idx = id && uuid_valid(id) ? jobs_find_live(id) : -1;
    bool here = idx >= 0; /* a slot of this node, whoever's it is */
    const char *owner = auth_owner();
    if (idx >= 0 && owner && strcmp(shm_job(tk.shm, (uint32_t)idx)->key_id, owner) != 0)
        idx = -1; /* another key's job: as if it did not exist */
    if (idx >= 0 && atomic_load(&shm_job(tk.shm, (uint32_t)idx)->finishing))
        idx = -1; /* its result is being recorded: it has completed */
    if (!here && tk.cfg.cluster_enabled && id && uuid_valid(id)) {
        /* not here: queued in the shared queue, or another node's (it is told) */
        struct remote_cancel *c = calloc(1, sizeof *c);
        const char *p[2] = {id, owner};
        if (c) {
            c->req = req;
            snprintf(c->corr, sizeof c->corr, "%s", corr);
            snprintf(c->id, sizeof c->id, "%s", id);
            if (pgq_exec(A.pg, JOBSTORE_SQL_CANCEL_ANYWHERE, 2, p, on_cancel_anywhere, c) == 0)
                return;
            free(c);
        }
        reply_db_unavailable(req, corr, "Database unavailable; the job was not cancelled");
        return;
    }
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
        if (acceptor_parked(i))
            jobs_settle_unstarted(&(struct jobs_db){.pgq = A.pg}, i, "interrupted",
                                  "takod was stopped before the job started", &A.me->intent);
}
