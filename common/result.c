/*
 * result.c — see result.h.
 */
#include "tako/result.h"
#include "tako/config.h"
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

void result_classify(struct tk_result *r, const struct tk_config *cfg, unsigned timeout_s,
                     int64_t memory_bytes)
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
                             (long long)cfg->limits_max_artifacts,
                             (long long)cfg->limits_max_artifact_bytes,
                             (long long)cfg->limits_max_total_artifact_bytes);
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

static double ms_between(uint64_t a, uint64_t b)
{
    return b > a && a ? (double)(b - a) / 1000.0 : 0.0;
}

void result_row(const struct tk_result *r, const char *job_id, const char *job_type,
                uint64_t created_mono_us, struct job_row *row, struct result_values *v)
{
    memset(v, 0, sizeof *v);
    double queue_ms = ms_between(created_mono_us, r->t_popped_us);
    double startup_ms = ms_between(r->t_popped_us, r->sb.t_go_us);
    double exec_ms = ms_between(r->sb.t_go_us, r->sb.t_end_us);
    double total_ms = ms_between(created_mono_us, r->t_done_us);
    v->timing = json_pack("{s:f, s:f, s:f, s:f}", "queue_ms", queue_ms, "startup_ms", startup_ms,
                          "execution_ms", exec_ms, "total_ms", total_ms);
    if (r->error_type[0]) {
        v->error = json_pack("{s:s, s:s, s:s}", "type", r->error_type, "message", r->error_msg,
                             "phase", r->error_phase ? r->error_phase : "execution");
        if (r->outputs.artifacts_skipped) /* kept in the record */
            json_object_set_new(v->error, "artifacts_skipped",
                                json_integer((json_int_t)r->outputs.artifacts_skipped));
    }
    v->stdout_text = utf8_sanitize(r->sb.out.data ? r->sb.out.data : "", r->sb.out.len, NULL);
    v->stderr_text = utf8_sanitize(r->sb.err.data ? r->sb.err.data : "", r->sb.err.len, NULL);
    v->artifacts = r->outputs.artifacts ? json_incref(r->outputs.artifacts) : json_array();
    snprintf(v->exit, sizeof v->exit, "%d", r->exit_code);
    memset(row, 0, sizeof *row);
    row->id = job_id;
    row->job_type = job_type;
    row->status = r->status;
    row->exit_code = r->has_exit ? v->exit : NULL;
    row->stdout = v->stdout_text ? v->stdout_text : "";
    row->stderr = v->stderr_text ? v->stderr_text : "";
    row->stdout_truncated = r->sb.out.truncated ? "true" : "false";
    row->stderr_truncated = r->sb.err.truncated ? "true" : "false";
    row->output = r->outputs.output;
    row->error = v->error;
    row->timing = v->timing;
    row->artifacts = v->artifacts;
    row->runtime = r->sb.runtime ? r->sb.runtime : sandbox_runtime_in_use();
}

void result_values_free(struct result_values *v)
{
    json_decref(v->timing);
    json_decref(v->error);
    json_decref(v->artifacts);
    free(v->stdout_text);
    free(v->stderr_text);
    memset(v, 0, sizeof *v);
}

void result_build(const struct tk_result *r, const char *job_id, const char *job_type,
                  uint64_t created_mono_us, json_t **response, json_t **error_obj, json_t **timing)
{
    struct job_row row;
    struct result_values v;
    result_row(r, job_id, job_type, created_mono_us, &row, &v);
    *response = job_answer(&row);
    *error_obj = v.error ? json_incref(v.error) : json_null();
    *timing = json_incref(v.timing);
    result_values_free(&v);
}
