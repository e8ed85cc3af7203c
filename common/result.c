/*
 * result.c — see result.h.
 */
#include "tako/result.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void result_set_error(struct tk_result *r, const char *type, const char *phase, const char *fmt,
                      ...)
{
    snprintf(r->error_type, sizeof r->error_type, "%s", type);
    r->error_phase = phase;
    /* the message may quote the job's text: formatted whole, then cut as UTF-8 */
    char full[4 * sizeof r->error_msg];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(full, sizeof full, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    utf8_copy(r->error_msg, sizeof r->error_msg, full,
              (size_t)n < sizeof full ? (size_t)n : sizeof full - 1);
}

void result_classify(struct tk_result *r, unsigned timeout_s, int64_t memory_bytes)
{
    const struct sandbox_result *sb = &r->sb;
    r->has_exit = sb->exit_code >= 0;
    r->exit_code = sb->exit_code;
    if (sb->interrupted) {
        r->status = "cancelled";
        result_set_error(r, "interrupted", "execution",
                         "takod was stopped while the job ran; the program was killed");
    } else if (sb->cancelled) {
        r->status = "cancelled";
        result_set_error(r, "cancelled", "execution",
                         "The job was cancelled; the program was killed");
    } else if (sb->oom) {
        r->status = "oom";
        result_set_error(r, "oom", "execution",
                         "Out of memory: the job exceeded its %lld MiB limit",
                         (long long)(memory_bytes >> 20));
    } else if (sb->timed_out) {
        r->status = "timeout";
        r->exit_code = 124; /* as timeout(1) and Tako VM report it */
        r->has_exit = true;
        result_set_error(r, "execution_timeout", "execution",
                         "Execution timed out after %u seconds", timeout_s);
    } else if (sb->lost) {
        r->status = "failed";
        result_set_error(r, "killed", "execution",
                         "The sandbox stopped before the program finished (%s)",
                         sb->error[0] ? sb->error : "its launcher was killed");
    } else if (sb->error[0] && sb->exit_code < 0) {
        r->status = "failed";
        result_set_error(r, "internal_error", "startup", "The program could not be started (%s)",
                         sb->error);
    } else if (sb->exit_code == 0) {
        r->status = "succeeded";
        r->error_phase = "completed";
        if (r->outputs.output_err[0])
            result_set_error(r, "output_error", "completed", "%s", r->outputs.output_err);
        else if (sb->out.truncated || sb->err.truncated)
            result_set_error(r, "output_limit", "completed",
                             "Output over the limit was dropped (stdout %zu of %zu bytes kept, "
                             "stderr %zu of %zu)",
                             sb->out.len, sb->out.truncated ? sb->out.total : sb->out.len,
                             sb->err.len, sb->err.truncated ? sb->err.total : sb->err.len);
        else if (r->outputs.artifacts_over_limit)
            result_set_error(r, "output_limit", "completed",
                             "Artifacts over the limits were skipped (%zu kept, %zu skipped; "
                             "limits: %lld files, %lld bytes each, %lld in all)",
                             r->outputs.n_files, r->outputs.artifacts_over_limit,
                             (long long)tk.cfg.limits_max_artifacts,
                             (long long)tk.cfg.limits_max_artifact_bytes,
                             (long long)tk.cfg.limits_max_total_artifact_bytes);
    } else {
        r->status = "failed";
        char type[64], msg[512];
        int code = sb->exit_code;
        if (outputs_python_error(sb->err.data, type, sizeof type, msg, sizeof msg))
            result_set_error(r, type, "execution", "%s", msg);
        else if (sb->signal == 9 || code == 137)
            result_set_error(r, "killed", "execution", "The program was killed (SIGKILL)");
        else if (sb->signal == 11 || code == 139)
            result_set_error(r, "segfault", "execution", "The program crashed (SIGSEGV)");
        else if (sb->signal > 0)
            result_set_error(r, "killed", "execution", "The program was killed by signal %d",
                             sb->signal);
        else
            result_set_error(r, "nonzero_exit", "execution", "The program exited with code %d",
                             code);
    }
}

static json_t *json_text(const struct tk_capbuf *b)
{
    char *s = utf8_sanitize(b->data ? b->data : "", b->len, NULL);
    json_t *j = json_string(s ? s : "");
    free(s);
    return j;
}

static double ms_between(uint64_t a, uint64_t b)
{
    return b > a && a ? (double)(b - a) / 1000.0 : 0.0;
}

/* The record fields common to the DB row and the response. */
void result_build(const struct tk_result *r, const char *job_id, const char *job_type,
                  uint64_t created_mono_us, json_t **response, json_t **error_obj, json_t **timing)
{
    double queue_ms = ms_between(created_mono_us, r->t_popped_us);
    double startup_ms = ms_between(r->t_popped_us, r->sb.t_go_us);
    double exec_ms = ms_between(r->sb.t_go_us, r->sb.t_end_us);
    double total_ms = ms_between(created_mono_us, r->t_done_us);
    *timing = json_pack("{s:f, s:f, s:f, s:f}", "queue_ms", queue_ms, "startup_ms", startup_ms,
                        "execution_ms", exec_ms, "total_ms", total_ms);
    *error_obj = r->error_type[0]
                     ? json_pack("{s:s, s:s, s:s}", "type", r->error_type, "message", r->error_msg,
                                 "phase", r->error_phase ? r->error_phase : "execution")
                     : json_null();
    if (r->outputs.artifacts_skipped && json_is_object(*error_obj)) /* kept in the record */
        json_object_set_new(*error_obj, "artifacts_skipped",
                            json_integer((json_int_t)r->outputs.artifacts_skipped));
    bool success = !strcmp(r->status, "succeeded");
    json_t *resp = json_object();
    json_object_set_new(resp, "success", json_boolean(success));
    json_object_set(resp, "output", r->outputs.output ? r->outputs.output : json_null());
    json_object_set_new(resp, "execution_time", json_real(exec_ms / 1000.0));
    json_object_set_new(resp, "stdout", json_text(&r->sb.out));
    json_object_set_new(resp, "stderr", json_text(&r->sb.err));
    json_object_set_new(resp, "exit_code", r->has_exit ? json_integer(r->exit_code) : json_null());
    json_object_set_new(resp, "error", r->error_type[0] ? json_string(r->error_msg) : json_null());
    json_object_set_new(resp, "error_type",
                        r->error_type[0] ? json_string(r->error_type) : json_null());
    json_object_set_new(resp, "job_type", json_string(job_type));
    json_object_set_new(resp, "execution_id", json_string(job_id));
    json_object_set_new(resp, "job_id", json_string(job_id));
    json_object_set_new(resp, "runtime", json_string(sandbox_runtime));
    json_object_set_new(resp, "status", json_string(r->status));
    json_object_set(resp, "timing", *timing);
    json_object_set_new(resp, "stdout_truncated", json_boolean(r->sb.out.truncated));
    json_object_set_new(resp, "stderr_truncated", json_boolean(r->sb.err.truncated));
    json_object_set(resp, "artifacts", r->outputs.artifacts ? r->outputs.artifacts : json_array());
    *response = resp;
}
