/*
 * jobs.c — see jobs.h.
 */
#include "tako/jobs.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
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
        rm_rf(dir);
    job->id[0] = '\0';
    atomic_store(&job->state, TK_JOB_FREE);
    while (ring_push(shm_free(tk.shm), me, shm_val(idx, 0)) != 0)
        usleep(100); /* cannot be full: it has a cell for every slot */
}

void jobs_complete(uint32_t idx, uint32_t gen, struct ring_intent *me)
{
    struct tk_job *job = shm_job(tk.shm, idx);
    atomic_store(&job->state, TK_JOB_DONE);
    uint32_t a = job->acceptor_proc;
    if (a == TK_NO_ACCEPTOR || a >= tk.shm->n_procs) {
        jobs_release(idx, me);
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
