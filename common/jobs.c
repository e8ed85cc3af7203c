/*
 * jobs.c — see jobs.h: the transitions of a job, each with its statement.
 */
#include "tako/jobs.h"
#include "tako/dbspool.h"
#include "tako/log.h"
#include "tako/util.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static struct jobs_ctx J;

void jobs_init(const struct jobs_ctx *ctx)
{
    J = *ctx;
}

/* The fence of a run of `job` (jobstore.h): this node and the run's attempt. */
struct fence {
    struct jobstore_fence f;
    char attempt[16];
};
static const struct jobstore_fence *fence_of(const struct tk_job *job, struct fence *out)
{
    if (!J.fenced)
        return NULL;
    snprintf(out->attempt, sizeof out->attempt, "%u", job->attempt);
    out->f.node = J.node;
    out->f.attempt = out->attempt;
    return &out->f;
}

/* <spool>/<job id> */
static int job_dir(char *buf, size_t len, const char *job_id)
{
    int n = snprintf(buf, len, "%s/%s", J.spool_dir, job_id);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

void jobs_release(uint32_t idx, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    char dir[4096];
    if (job->id[0] && job_dir(dir, sizeof dir, job->id) == 0)
        rm_rf_aside(dir, J.quarantine_dir); /* logs a failure */
    job->id[0] = '\0';
    atomic_store(&job->stale_votes, 0);
    atomic_store(&job->finishing, 0);
    atomic_store(&job->state, TK_JOB_FREE);
    while (ring_push(shm_free(J.shm), me, shm_val(idx, 0)) != 0)
        usleep(100); /* cannot be full: it has a cell for every slot */
}

void jobs_done_with(uint32_t idx, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    uint32_t votes = atomic_load(&job->stale_votes);
    if (votes == 0) {
        jobs_release(idx, me); /* the only holder */
        return;
    }
    /* Let go of `held` before voting: a death between the two loses a vote (the slot stays
     * out until the next start), which is safe; voting twice would free it too early. */
    ring_intent_clear_held(me);
    while (votes > 0 && !atomic_compare_exchange_weak(&job->stale_votes, &votes, votes - 1)) {
    }
    if (votes == 1) /* we were the last */
        jobs_release(idx, me);
}

/* A dispatch entry of a job settled while it was queued. */
static bool is_stale(uint64_t v, void *arg)
{
    uint32_t idx = shm_val_idx(v);
    if (idx >= J.shm->n_jobs)
        return false;
    struct tk_job *job = shm_job(J.shm, idx);
    return atomic_load(&job->gen) == shm_val_gen(v) && atomic_load(&job->state) == TK_JOB_DONE &&
           atomic_load(&job->stale_votes) > 0;
}

void jobs_drain_stale(struct ring_intent *me)
{
    uint64_t v;
    while (ring_pop_if(shm_dispatch(J.shm), me, is_stale, NULL, &v) == 0)
        jobs_done_with(shm_val_idx(v), me);
}

void jobs_complete(uint32_t idx, uint32_t gen, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    atomic_store(&job->state, TK_JOB_DONE);
    uint32_t a = job->acceptor_proc;
    if (a == TK_NO_ACCEPTOR || a >= J.shm->n_procs) {
        jobs_done_with(idx, me);
        return;
    }
    while (ring_push(shm_done(J.shm, a), me, shm_val(idx, gen)) != 0)
        usleep(100); /* cannot be full: it has a cell for every job slot */
    uint64_t one = 1;
    if (write(J.done_efd[a], &one, sizeof one) < 0)
        log_warn("msg=\"eventfd write failed\" proc=%u err=\"%s\"", a, strerror(errno));
}

int jobs_write_spool(const char *id, const char *code, const char *input, const char *stdin_text,
                     const char *files_json, const char *requirements, char *why, size_t wlen)
{
    char dir[4096], path[4300];
    job_dir(dir, sizeof dir, id);
    static const char *const subs[] = {"", "/code", "/input"};
    for (size_t i = 0; i < TK_ARRAY_LEN(subs); i++) { /* the job's dir, then its subdirs */
        snprintf(path, sizeof path, "%s%s", dir, subs[i]);
        int rc = mkdir_p(path, 0755);
        if (rc < 0) {
            snprintf(why, wlen, "mkdir %s: %s", path, strerror(-rc));
            return rc;
        }
    }
    struct {
        const char *name;
        const char *data;
        size_t len;
    } files[4] = {{"code/main.py", code, strlen(code)},
                  {"input/data.json", input, strlen(input)},
                  {"input/stdin", stdin_text, stdin_text ? strlen(stdin_text) : 0},
                  /* not mounted: the executor reads it (runtime requirements) */
                  {"requirements.json", requirements, requirements ? strlen(requirements) : 0}};
    for (size_t i = 0; i < 4; i++) {
        if (!files[i].data)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        int rc = write_file(path, files[i].data, files[i].len, 0644);
        if (rc < 0) {
            snprintf(why, wlen, "write %s: %s", path, strerror(-rc));
            return rc;
        }
    }
    if (!files_json)
        return 0;
    /* extra input files: {name: base64}, names checked at validation */
    json_t *files_obj = json_loads(files_json, 0, NULL);
    const char *name;
    json_t *val;
    int rc = 0;
    json_object_foreach(files_obj, name, val)
    {
        const char *b64 = json_string_value(val);
        size_t blen = strlen(b64);
        unsigned char *raw = malloc(blen / 4 * 3 + 4);
        int n = raw ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)blen) : -1;
        if (n >= 0) { /* EVP_DecodeBlock counts padding bytes: trim them */
            if (blen >= 1 && b64[blen - 1] == '=')
                n--;
            if (blen >= 2 && b64[blen - 2] == '=')
                n--;
            snprintf(path, sizeof path, "%s/input/%s", dir, name);
            rc = write_file(path, raw, (size_t)n, 0644);
        }
        free(raw);
        if (n < 0 || rc < 0) {
            snprintf(why, wlen, "write input file %s", name);
            rc = rc < 0 ? rc : -EINVAL;
            break;
        }
    }
    json_decref(files_obj);
    return rc;
}

/* ---- statements on the caller's connection ---- */

struct async_note { /* what a queued statement was, for its failure's log line */
    const char *what;
    char job[40];
};

static void on_async_done(const PGresult *res, const char *err, void *arg)
{
    struct async_note *n = arg;
    if (!res)
        log_warn("msg=\"%s failed\" job=%s err=\"%s\"", n->what, n->job, err);
    free(n);
}

/* Run st on the caller's connection, logging a failure. 0, -EIO or -ENOTCONN. */
static int run(const struct jobs_db *jdb, const struct jobstore_stmt *st, const char *job,
               PGresult **out)
{
    if (jdb && jdb->db) {
        PGresult *r = db_exec(jdb->db, st->sql, st->n, st->params);
        if (!r) {
            log_error("msg=\"%s failed\" job=%s err=\"%s\"", st->what, job, db_last_error(jdb->db));
            return -EIO;
        }
        if (out)
            *out = r;
        else
            PQclear(r);
        return 0;
    }
    if (jdb && jdb->pgq) {
        struct async_note *n = malloc(sizeof *n);
        if (!n)
            return -ENOMEM;
        n->what = st->what;
        snprintf(n->job, sizeof n->job, "%s", job);
        if (pgq_exec(jdb->pgq, st->sql, st->n, st->params, on_async_done, n) < 0) {
            log_warn("msg=\"%s failed: database unavailable\" job=%s", st->what, job);
            free(n);
            return -ENOTCONN;
        }
        return 0;
    }
    return -ENOTCONN; /* no connection: the caller said why */
}

/* A record's settling: status with the error object {type, message, phase}. */
static void settle_record(const struct jobs_db *jdb, const char *id, const char *status,
                          json_t *error)
{
    char *text = json_dumps(error, JSON_COMPACT);
    struct jobstore_stmt st;
    jobstore_settle(&st, id, status, text);
    run(jdb, &st, id, NULL);
    free(text);
}

static json_t *error_json(const char *type, const char *message, const char *phase)
{
    return json_pack("{s:s, s:s, s:s}", "type", type, "message", message, "phase", phase);
}

/* ---- answers ---- */

/*
 * The executor spools a job's result, the acceptor builds the answer: <spool>/<id>/
 * finish.json is the FINISH statement's parameters as dbspool keeps a spooled result
 * (without the artifacts' bytes: the answer names them, the record holds them).
 */
static void result_path(char *buf, size_t len, const char *id)
{
    char dir[4096];
    job_dir(dir, sizeof dir, id);
    snprintf(buf, len, "%s/finish.json", dir);
}

static int write_result(const char *id, const struct jobstore_stmt *st)
{
    char path[4200];
    result_path(path, sizeof path, id);
    json_t *doc = dbspool_doc(st->params, st->n);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    int rc = text ? write_file(path, text, strlen(text), 0600) : -ENOMEM;
    if (rc < 0)
        log_error("msg=\"writing the job's result failed\" job=%s path=%s err=\"%s\"", id, path,
                  strerror(-rc));
    free(text);
    return rc;
}

json_t *jobs_answer(uint32_t idx)
{
    const struct tk_job *job = shm_job(J.shm, idx);
    char path[4200];
    result_path(path, sizeof path, job->id);
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        log_error("msg=\"reading the job's result failed\" job=%s path=%s err=\"%s\"", job->id,
                  path, jerr.text);
        return NULL;
    }
    const char *p[JOBS_FINISH_NPARAMS];
    dbspool_doc_params(doc, p, JOBS_FINISH_NPARAMS);
    struct job_row row;
    jobstore_row_from_finish(&row, p);
    row.job_type = job->job_type; /* ADMIT fields: the slot and the node have them */
    row.node = J.node;
    json_t *answer = job_answer(&row);
    jobstore_row_release(&row);
    json_decref(doc);
    return answer;
}

/* The result of a job that ends without a normal run (cancelled before it started,
 * interrupted, lost its executor): the same fields as a real result's. */
static void write_settled_result(const struct tk_job *job, const char *status, json_t *error)
{
    double total_ms = (double)(now_mono_us() - job->created_mono_us) / 1000.0;
    json_t *timing = json_pack("{s:f, s:f, s:f, s:f}", "queue_ms", total_ms, "startup_ms", 0.0,
                               "execution_ms", 0.0, "total_ms", total_ms);
    struct job_row row = {.id = job->id,
                          .job_type = job->job_type,
                          .status = status,
                          .stdout = "",
                          .stderr = "",
                          .stdout_truncated = "false",
                          .stderr_truncated = "false",
                          .error = error,
                          .timing = timing,
                          .runtime = J.shm->runtime};
    struct jobstore_stmt st;
    jobstore_finish(&st, &row, NULL); /* the answer's file only: never run */
    write_result(job->id, &st);
    jobstore_stmt_free(&st);
    json_decref(timing);
}

/* ---- transitions ---- */

int jobs_admit(const struct jobs_admission *a, struct ring_intent *me, uint32_t *idx_out,
               uint32_t *gen_out)
{
    uint64_t v;
    if (ring_pop(shm_free(J.shm), me, &v) != 0)
        return -EAGAIN;
    uint32_t idx = shm_val_idx(v);
    struct tk_job *job = shm_job(J.shm, idx);
    /* Ownership goes into the job table before `held` lets go of it (recovery.h). */
    uint32_t gen = atomic_fetch_add(&job->gen, 1) + 1;
    job->acceptor_proc = a->acceptor_proc;
    job->acceptor_gen = a->acceptor_gen;
    atomic_store(&job->state, TK_JOB_FILLING);
    ring_intent_clear_held(me);
    if (a->id)
        snprintf(job->id, sizeof job->id, "%s", a->id);
    else
        uuid_v4(job->id);
    job->attempt = a->attempt;
    job->req_token = a->req_token;
    atomic_store(&job->owner_pid, 0);
    atomic_store(&job->cancel, 0);
    atomic_store(&job->watchers, 0);
    job->timeout_s = a->timeout_s;
    job->startup_timeout_s = a->startup_timeout_s;
    job->created_real_us = now_real_us();
    job->created_mono_us = now_mono_us();
    snprintf(job->job_type, sizeof job->job_type, "%s", a->job_type);
    snprintf(job->correlation_id, sizeof job->correlation_id, "%s",
             a->correlation_id ? a->correlation_id : "");
    job->container_id[0] = '\0';
    snprintf(job->key_id, sizeof job->key_id, "%s", a->key_id ? a->key_id : "");
    *idx_out = idx;
    *gen_out = gen;
    return 0;
}

int jobs_enqueue(uint32_t idx, uint32_t gen, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    atomic_store(&job->state, TK_JOB_QUEUED);
    if (ring_push(shm_dispatch(J.shm), me, shm_val(idx, gen)) == 0)
        return 0;
    /* cannot happen: the dispatch ring has a cell for every slot, and a slot comes back
     * only once its old entry has left the ring (jobs_done_with) */
    log_crit("msg=\"dispatch ring full\" job=%s", job->id);
    atomic_store(&job->state, TK_JOB_FILLING);
    return -ENOSPC;
}

int jobs_adopt(const struct jobs_db *jdb, uint32_t idx, uint32_t gen)
{
    struct tk_job *job = shm_job(J.shm, idx);
    struct jobstore_stmt st;
    struct fence fb;
    jobstore_requeue(&st, job->id, fence_of(job, &fb));
    run(jdb, &st, job->id, NULL);
    return jobs_enqueue(idx, gen, NULL);
}

static const char *col(const PGresult *r, int row, int c)
{
    return PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c);
}

int jobs_take_record(const struct jobs_db *jdb, const PGresult *r, int row, bool adopt,
                     struct ring_intent *me)
{
    const char *id = PQgetvalue(r, row, JRUN_ID);
    uint32_t idx, gen;
    struct jobs_admission a = {.id = id,
                               .acceptor_proc = TK_NO_ACCEPTOR,
                               .attempt = (uint32_t)atoi(PQgetvalue(r, row, JRUN_ATTEMPT)),
                               .timeout_s = (uint32_t)atoi(PQgetvalue(r, row, JRUN_TIMEOUT)),
                               .startup_timeout_s =
                                   (uint32_t)atoi(PQgetvalue(r, row, JRUN_STARTUP_TIMEOUT)),
                               .job_type = PQgetvalue(r, row, JRUN_JOB_TYPE),
                               .correlation_id = col(r, row, JRUN_CORRELATION),
                               .key_id = col(r, row, JRUN_KEY)};
    if (jobs_admit(&a, me, &idx, &gen) < 0)
        return -EAGAIN;
    /* its timing counts from its submit, not from when this node took it (a wait in the
     * shared queue, or a restart, is queue time too) */
    struct tk_job *job = shm_job(J.shm, idx);
    uint64_t created = (uint64_t)atoll(PQgetvalue(r, row, JRUN_CREATED));
    uint64_t real = now_real_us(), mono = now_mono_us();
    if (created > 0 && created <= real && real - created < mono) {
        job->created_real_us = created;
        job->created_mono_us = mono - (real - created);
    }
    char why[512];
    if (jobs_write_spool(id, PQgetvalue(r, row, JRUN_CODE), PQgetvalue(r, row, JRUN_INPUT),
                         col(r, row, JRUN_STDIN), col(r, row, JRUN_FILES),
                         col(r, row, JRUN_REQUIREMENTS), why, sizeof why) < 0) {
        log_error("msg=\"taking a job's record failed: spool\" job=%s err=\"%s\"", id, why);
        jobs_release(idx, me);
        return -EIO;
    }
    if (adopt)
        return jobs_adopt(jdb, idx, gen);
    return jobs_enqueue(idx, gen, me);
}

int jobs_find_live(const char *id)
{
    for (uint32_t i = 0; i < J.shm->n_jobs; i++) {
        struct tk_job *job = shm_job(J.shm, i);
        uint32_t st = atomic_load(&job->state);
        if ((st == TK_JOB_QUEUED || st == TK_JOB_RUNNING) && !strcmp(job->id, id))
            return (int)i;
    }
    return -1;
}

int jobs_free_executors(void)
{
    int ready = 0;
    for (uint32_t i = 0; i < J.shm->n_procs; i++) {
        const struct tk_proc *p = shm_proc(J.shm, i);
        if (p->role == TK_ROLE_EXECUTOR && atomic_load(&p->pid) != 0 && atomic_load(&p->ready))
            ready++;
    }
    /* two generations of executors during a reload: never more than one set's worth */
    if (ready > (int)J.shm->n_executors)
        ready = (int)J.shm->n_executors;
    /* every slot being filled, queued or run wants an executor: a submit whose INSERT is
     * still in flight (FILLING) counts, or a burst would all take the fast path */
    int busy = 0;
    for (uint32_t i = 0; i < J.shm->n_jobs; i++) {
        uint32_t st = atomic_load(&shm_job(J.shm, i)->state);
        busy += st == TK_JOB_FILLING || st == TK_JOB_QUEUED || st == TK_JOB_RUNNING;
    }
    return ready - busy;
}

static void running_done(void)
{
    uint32_t n = atomic_load(&J.shm->running);
    while (n > 0 && !atomic_compare_exchange_weak(&J.shm->running, &n, n - 1)) {
    }
}

int jobs_start(const struct jobs_db *jdb, uint32_t idx, uint32_t gen, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    uint32_t expect = TK_JOB_QUEUED;
    if (atomic_load(&job->gen) != gen ||
        !atomic_compare_exchange_strong(&job->state, &expect, TK_JOB_RUNNING)) {
        log_debug("msg=\"stale job slot popped\" idx=%u gen=%u", idx, gen);
        /* a job settled while it was queued: this was its last holder but one */
        if (atomic_load(&job->gen) == gen && atomic_load(&job->state) == TK_JOB_DONE &&
            atomic_load(&job->stale_votes) > 0)
            jobs_done_with(idx, me);
        ring_intent_clear_held(me);
        return -ESTALE;
    }
    atomic_store(&job->owner_pid, getpid());
    ring_intent_clear_held(me); /* the job table says who has it now */
    job->attempt++;
    atomic_fetch_add(&J.shm->running, 1);
    log_debug("msg=\"job started\" job=%s attempt=%u", job->id, job->attempt);
    struct jobstore_stmt st;
    struct fence fb;
    jobstore_start(&st, job->id, fence_of(job, &fb));
    PGresult *r = NULL;
    if (run(jdb, &st, job->id, J.fenced ? &r : NULL) == 0 && r && atoi(PQcmdTuples(r)) == 0 &&
        !dbspool_has_insert(job->id) /* no record yet: its INSERT waits on disk */) {
        /* the record is not ours now (or not queued): it runs wherever it is, not here */
        PQclear(r);
        log_warn("msg=\"job not run here: its record belongs to another node now, or is "
                 "settled\" job=%s",
                 job->id);
        json_t *err =
            error_json("interrupted", "the job was taken over by another node", "startup");
        atomic_store(&job->owner_pid, 0);
        running_done();
        write_settled_result(job, "cancelled", err); /* a waiting client's answer */
        json_decref(err);
        jobs_complete(idx, gen, me);
        return -EOWNERDEAD;
    }
    PQclear(r);
    return 0;
}

void jobs_requeue(const struct jobs_db *jdb, uint32_t idx, uint32_t gen, struct ring_intent *me,
                  unsigned backoff_ms)
{
    struct tk_job *job = shm_job(J.shm, idx);
    struct jobstore_stmt st;
    struct fence fb;
    jobstore_requeue(&st, job->id, fence_of(job, &fb));
    run(jdb, &st, job->id, NULL);
    if (backoff_ms)
        usleep(backoff_ms * 1000u); /* another executor may have a container */
    /* Hold it in the intent record first: if this process dies before the push, the
     * master finds a QUEUED job in `held` and queues it (recovery.h, rule 2). */
    if (me) {
        atomic_store(&me->held_ring, TK_RING_ID_DISPATCH);
        atomic_store(&me->held, shm_val(idx, gen));
    }
    atomic_store(&job->owner_pid, 0);
    running_done();
    atomic_store(&job->state, TK_JOB_QUEUED);
    ring_push(shm_dispatch(J.shm), me, shm_val(idx, gen));
}

void jobs_hand_back(const struct jobs_db *jdb, uint32_t idx, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    struct jobstore_stmt st;
    struct fence fb;
    jobstore_requeue(&st, job->id, fence_of(job, &fb));
    run(jdb, &st, job->id, NULL);
    running_done();
    jobs_release(idx, me);
}

/* The artifacts as the spool keeps them: [{name, sha256, content_type, data (base64)}] */
static json_t *artifacts_for_spool(const struct tk_outputs *o)
{
    json_t *arr = json_array();
    for (size_t i = 0; o && i < o->n_files; i++) {
        const struct tk_artifact *a = &o->files[i];
        json_t *meta = json_array_get(o->artifacts, i);
        char *b64 = malloc(a->len / 3 * 4 + 8);
        if (!b64)
            continue;
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)a->data, (int)a->len);
        json_array_append_new(arr, json_pack("{s:s, s:O, s:O, s:s}", "name", a->name, "sha256",
                                             json_object_get(meta, "sha256"), "content_type",
                                             json_object_get(meta, "content_type"), "data", b64));
        free(b64);
    }
    return arr;
}

/*
 * Store the artifacts' bytes with the record (within the caps outputs_collect applied),
 * all in ONE statement: INSERT ... VALUES ($1, $2, $3, ...), ... with the job id shared as
 * $1 and five parameters a row (the data binary). At most limits.max_artifacts (≤ 10000)
 * rows, so at most 50001 parameters: under libpq's 65535.
 */
static int store_artifacts(struct db *db, const char *job_id, const struct tk_outputs *o)
{
    if (!o || o->n_files == 0)
        return 0;
    size_t n = o->n_files, np = 1 + 5 * n;
    if (np > 65535)
        return -E2BIG;
    const char **p = calloc(np, sizeof *p);
    int *lengths = calloc(np, sizeof *lengths), *formats = calloc(np, sizeof *formats);
    char(*sizes)[24] = calloc(n, sizeof *sizes);
    size_t cap = 256 + n * 80;
    char *sql = malloc(cap);
    int rc = 0;
    if (!p || !lengths || !formats || !sizes || !sql) {
        rc = -ENOMEM;
        goto out;
    }
    size_t off = (size_t)snprintf(sql, cap,
                                  "INSERT INTO artifacts (job_id, name, size_bytes, "
                                  "sha256, content_type, data) VALUES ");
    p[0] = job_id;
    for (size_t i = 0; i < n; i++) {
        const struct tk_artifact *a = &o->files[i];
        json_t *meta = json_array_get(o->artifacts, i);
        size_t b = 1 + 5 * i; /* $b+1 .. $b+5 */
        snprintf(sizes[i], sizeof sizes[i], "%zu", a->len);
        p[b] = a->name;
        p[b + 1] = sizes[i];
        p[b + 2] = json_string_value(json_object_get(meta, "sha256"));
        p[b + 3] = json_string_value(json_object_get(meta, "content_type"));
        p[b + 4] = a->data ? a->data : "";
        lengths[b + 4] = (int)a->len;
        formats[b + 4] = 1;
        off +=
            (size_t)snprintf(sql + off, cap - off, "%s($1, $%zu, $%zu::bigint, $%zu, $%zu, $%zu)",
                             i ? ", " : "", b + 1, b + 2, b + 3, b + 4, b + 5);
    }
    snprintf(sql + off, cap - off,
             " ON CONFLICT (job_id, name) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,"
             " sha256 = EXCLUDED.sha256, content_type = EXCLUDED.content_type,"
             " data = EXCLUDED.data");
    PGresult *res = db_exec_bin_once(db, sql, (int)np, p, lengths, formats);
    if (!res) {
        log_error("msg=\"storing artifacts failed\" job=%s count=%zu err=\"%s\"", job_id, n,
                  db_last_error(db));
        rc = -EIO;
    }
    PQclear(res);
out:
    free(p);
    free(lengths);
    free(formats);
    free(sizes);
    free(sql);
    return rc;
}

/*
 * Record the result: artifacts, then the finishing UPDATE. When PostgreSQL cannot take it
 * (down, or the job's own INSERT still waits in the spool), the whole result goes to the
 * spool and the master writes it later. A callback_url's delivery is queued by the
 * database itself when the status becomes final (common/callbacks.c): nothing to do here.
 */
static void record_result(const struct jobs_db *jdb, const struct jobstore_stmt *st, const char *id,
                          const struct tk_outputs *o)
{
    bool spool = dbspool_has_insert(id);
    int rc = -EIO;
    const char *fence_node = st->params[JOBS_FINISH_NPARAMS];
    if (!spool && jdb && jdb->db && fence_node && o && o->n_files > 0) {
        /* a fenced run stores no artifacts over the new owner's */
        const char *p[2] = {id, fence_node};
        PGresult *res = db_exec(jdb->db,
                                "SELECT 1 FROM jobs WHERE id = $1::uuid AND node = $2"
                                " AND status IN ('queued', 'running')",
                                2, p);
        bool ours = res && PQntuples(res) == 1;
        if (res && !ours) {
            log_warn("msg=\"result not recorded: another node owns the job now\" job=%s", id);
            PQclear(res);
            return;
        }
        PQclear(res);
    }
    if (!spool && jdb && jdb->db && store_artifacts(jdb->db, id, o) == 0) {
        PGresult *res = db_exec(jdb->db, st->sql, st->n, st->params);
        rc = res ? 0 : -EIO;
        if (res && fence_node && PQntuples(res) == 0)
            log_warn("msg=\"result not recorded: the record is finished or another node owns "
                     "the job now\" job=%s",
                     id);
        PQclear(res);
    }
    if (rc < 0) {
        if (!spool)
            log_error("msg=\"recording job result failed; spooling it\" job=%s err=\"%s\"", id,
                      jdb && jdb->db ? db_last_error(jdb->db) : "no connection");
        dbspool_write_final(id, st->params, artifacts_for_spool(o));
    }
}

void jobs_finish(const struct jobs_db *jdb, uint32_t idx, uint32_t gen, const struct job_row *row,
                 const struct tk_outputs *o, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    struct jobstore_stmt st; /* the record's UPDATE, and the result the acceptor answers from */
    struct fence fb;
    jobstore_finish(&st, row, fence_of(job, &fb));
    record_result(jdb, &st, row->id, o);
    write_result(job->id, &st);
    jobstore_stmt_free(&st);
    /* Hand the completion on. `held` covers a death between DONE and the push (the
     * master delivers it again); owner_pid stays until the job is DONE. */
    if (me) {
        atomic_store(&me->held_ring, TK_RING_ID_DISPATCH);
        atomic_store(&me->held, shm_val(idx, gen));
    }
    running_done();
    jobs_complete(idx, gen, me);
    int32_t mine = getpid(); /* the slot may already serve a new job: only undo our mark */
    atomic_compare_exchange_strong(&job->owner_pid, &mine, 0);
}

/*
 * A queued job no executor has taken will not run. The CAS decides against an executor
 * starting it at the same moment; its value stays in the dispatch ring, and the executor
 * that pops it finds the slot no longer QUEUED and drops it.
 */
bool jobs_settle_unstarted(const struct jobs_db *jdb, uint32_t idx, const char *type,
                           const char *msg, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    uint32_t gen = atomic_load(&job->gen);
    uint32_t expect = TK_JOB_QUEUED;
    atomic_store(&job->stale_votes, 2); /* its dispatch entry stays queued (jobs.h) */
    if (!atomic_compare_exchange_strong(&job->state, &expect, TK_JOB_DONE)) {
        atomic_store(&job->stale_votes, 0);
        return false; /* an executor has it: its completion will come */
    }
    json_t *err = error_json(type, msg, "startup");
    write_settled_result(job, "cancelled", err);
    settle_record(jdb, job->id, "cancelled", err);
    json_decref(err);
    jobs_complete(idx, gen, me);
    return true;
}

void jobs_cancel(const struct jobs_db *jdb, uint32_t idx, struct ring_intent *me)
{
    atomic_store(&shm_job(J.shm, idx)->cancel, 1); /* seen by its executor */
    jobs_settle_unstarted(jdb, idx, "cancelled", "The job was cancelled before it started", me);
    jobs_drain_stale(me);
}

void jobs_fail_lost(const struct jobs_db *jdb, uint32_t idx, const char *msg,
                    struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    uint32_t gen = atomic_load(&job->gen);
    atomic_store(&job->owner_pid, 0);
    running_done();
    json_t *err = error_json("interrupted", msg, "execution");
    settle_record(jdb, job->id, "failed", err);
    write_settled_result(job, "failed", err);
    json_decref(err);
    jobs_complete(idx, gen, me);
}

void jobs_abandon(const struct jobs_db *jdb, uint32_t idx, const char *msg, struct ring_intent *me)
{
    struct tk_job *job = shm_job(J.shm, idx);
    json_t *err = error_json("interrupted", msg, "startup");
    settle_record(jdb, job->id, "failed", err);
    json_decref(err);
    jobs_release(idx, me);
}

void jobs_settle_record(const struct jobs_db *jdb, const char *id, const char *status,
                        const char *type, const char *msg, const char *phase)
{
    json_t *err = error_json(type, msg, phase);
    settle_record(jdb, id, status, err);
    json_decref(err);
}

void jobs_settle_node_sync(const struct jobs_db *jdb, const char *node)
{
    struct jobstore_stmt st;
    jobstore_settle_node_sync(&st, node);
    PGresult *r = NULL;
    if (jdb && jdb->db && run(jdb, &st, "-", &r) == 0) {
        if (atoi(PQcmdTuples(r)) > 0)
            log_info("msg=\"unfinished synchronous jobs marked cancelled\" count=%s",
                     PQcmdTuples(r));
        PQclear(r);
    }
}
