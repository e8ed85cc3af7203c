/*
 * jobs.c — see jobs.h.
 */
#include "tako/jobs.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const JOBS_SQL_SETTLE =
    "UPDATE jobs SET status = $2, ended_at = now(), error = $3::jsonb"
    " WHERE id = $1 AND status IN ('queued', 'running')";

void jobs_release(uint32_t idx, struct ring_intent *me)
{
    struct tk_job *job = shm_job(tk.shm, idx);
    char dir[4096];
    if (job->id[0] && spool_job_dir(dir, sizeof dir, job->id) == 0)
        rm_rf_aside(dir, tk.quarantine_dir); /* logs a failure */
    job->id[0] = '\0';
    atomic_store(&job->stale_votes, 0);
    atomic_store(&job->finishing, 0);
    atomic_store(&job->state, TK_JOB_FREE);
    while (ring_push(shm_free(tk.shm), me, shm_val(idx, 0)) != 0)
        usleep(100); /* cannot be full: it has a cell for every slot */
}

void jobs_done_with(uint32_t idx, struct ring_intent *me)
{
    struct tk_job *job = shm_job(tk.shm, idx);
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
    if (idx >= tk.shm->n_jobs)
        return false;
    struct tk_job *job = shm_job(tk.shm, idx);
    return atomic_load(&job->gen) == shm_val_gen(v) && atomic_load(&job->state) == TK_JOB_DONE &&
           atomic_load(&job->stale_votes) > 0;
}

void jobs_drain_stale(struct ring_intent *me)
{
    uint64_t v;
    while (ring_pop_if(shm_dispatch(tk.shm), me, is_stale, NULL, &v) == 0)
        jobs_done_with(shm_val_idx(v), me);
}

void jobs_complete(uint32_t idx, uint32_t gen, struct ring_intent *me)
{
    struct tk_job *job = shm_job(tk.shm, idx);
    atomic_store(&job->state, TK_JOB_DONE);
    uint32_t a = job->acceptor_proc;
    if (a == TK_NO_ACCEPTOR || a >= tk.shm->n_procs) {
        jobs_done_with(idx, me);
        return;
    }
    while (ring_push(shm_done(tk.shm, a), me, shm_val(idx, gen)) != 0)
        usleep(100); /* cannot be full: it has a cell for every job slot */
    uint64_t one = 1;
    if (write(tk.done_efd[a], &one, sizeof one) < 0)
        log_warn("msg=\"eventfd write failed\" proc=%u err=\"%s\"", a, strerror(errno));
}

json_t *jobs_error_json(const char *type, const char *message, const char *phase)
{
    return json_pack("{s:s, s:s, s:s}", "type", type, "message", message, "phase", phase);
}

int jobs_write_settled_response(const struct tk_job *job, const char *status, const char *type,
                                const char *message)
{
    double total_ms = (double)(now_mono_us() - job->created_mono_us) / 1000.0;
    json_t *resp =
        json_pack("{s:b, s:n, s:f, s:s, s:s, s:n, s:s, s:s, s:s, s:s, s:s, s:s, s:s,"
                  " s:{s:f, s:f, s:f, s:f}, s:b, s:b, s:[]}",
                  "success", 0, "output", "execution_time", 0.0, "stdout", "", "stderr", "",
                  "exit_code", "error", message, "error_type", type, "job_type", job->job_type,
                  "execution_id", job->id, "job_id", job->id, "runtime", "runc", "status", status,
                  "timing", "queue_ms", total_ms, "startup_ms", 0.0, "execution_ms", 0.0,
                  "total_ms", total_ms, "stdout_truncated", 0, "stderr_truncated", 0, "artifacts");
    if (!resp)
        return -ENOMEM;
    char dir[4096], path[4200];
    spool_job_dir(dir, sizeof dir, job->id);
    snprintf(path, sizeof path, "%s/response.json", dir);
    char *text = json_dumps(resp, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(resp);
    int rc = text ? write_file(path, text, strlen(text), 0600) : -ENOMEM;
    free(text);
    return rc;
}

int jobs_write_spool(const char *id, const char *code, const char *input, const char *stdin_text,
                     const char *files_json, const char *requirements, char *why, size_t wlen)
{
    char dir[4096], path[4300];
    spool_job_dir(dir, sizeof dir, id);
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
