/*
 * output.c — how a finished job is shown: the program's streams, then one status line
 * (and result.json, artifacts) on stderr. Used by `tako run` and by `--wait` on the
 * server commands, for both takod's record (error is {type, message, phase}) and the
 * result shape of POST /execute and `tako run --json` (error is a string, error_type
 * beside it).
 */
#include "tako.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str_field(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

void tako_error_parts(const json_t *rec, const char **type, const char **msg)
{
    json_t *e = json_object_get(rec, "error");
    *type = str_field(rec, "error_type");
    *msg = NULL;
    if (json_is_object(e)) {
        *type = str_field(e, "type");
        *msg = str_field(e, "message");
    } else if (json_is_string(e)) {
        *msg = json_string_value(e);
    }
}

double tako_duration_ms(const json_t *rec)
{
    json_t *d = json_object_get(rec, "duration_ms");
    if (json_is_number(d))
        return json_number_value(d);
    json_t *t = json_object_get(json_object_get(rec, "timing"), "execution_ms");
    if (json_is_number(t))
        return json_number_value(t);
    json_t *s = json_object_get(rec, "execution_time");
    return json_is_number(s) ? json_number_value(s) * 1000.0 : -1;
}

int tako_exit_for_status(const char *status)
{
    if (!status)
        return TAKO_EXIT_FAILED;
    if (!strcmp(status, "succeeded"))
        return TAKO_EXIT_OK;
    if (!strcmp(status, "queued") || !strcmp(status, "pending") || !strcmp(status, "running"))
        return TAKO_EXIT_PENDING;
    return TAKO_EXIT_FAILED;
}

static void write_text(FILE *f, const char *s, bool *ends_nl)
{
    if (!s || !*s)
        return;
    size_t n = strlen(s);
    fwrite(s, 1, n, f);
    *ends_nl = s[n - 1] == '\n';
}

void tako_print_artifact_list(FILE *f, const json_t *arts, const char *indent)
{
    size_t i;
    json_t *a;
    json_array_foreach(arts, i, a)
    {
        fprintf(f, "%s%-32s %10lld bytes  %-28s %.16s...\n", indent, str_field(a, "name"),
                (long long)json_integer_value(json_object_get(a, "size_bytes")),
                str_field(a, "content_type") ? str_field(a, "content_type") : "",
                str_field(a, "sha256") ? str_field(a, "sha256") : "");
    }
}

int tako_print_run_result(const json_t *rec, const char *job_id)
{
    bool nl = true;
    write_text(stdout, str_field(rec, "stdout"), &nl);
    fflush(stdout);
    nl = true;
    write_text(stderr, str_field(rec, "stderr"), &nl);
    if (!nl)
        fputc('\n', stderr);
    return tako_print_run_status(rec, job_id);
}

int tako_print_run_status(const json_t *rec, const char *job_id)
{
    const char *status = str_field(rec, "status");
    if (!status) /* the result shape without a status */
        status = json_is_true(json_object_get(rec, "success")) ? "succeeded" : "failed";
    char dur[48] = "";
    double ms = tako_duration_ms(rec);
    if (ms >= 0) {
        char t[32];
        tako_format_ms(ms, t, sizeof t);
        snprintf(dur, sizeof dur, " in %s", t);
    }
    char code[48] = "";
    json_t *ec = json_object_get(rec, "exit_code");
    if (json_is_integer(ec))
        snprintf(code, sizeof code, " (exit code %lld)", (long long)json_integer_value(ec));
    const char *etype, *emsg;
    tako_error_parts(rec, &etype, &emsg);
    fprintf(stderr, "tako: %s%s%s%s%s%s", job_id ? "job " : "", job_id ? job_id : "",
            job_id ? ": " : "", status, dur, code);
    if (etype || emsg)
        fprintf(stderr, ": %s%s%s", etype ? etype : "", etype && emsg ? ": " : "",
                emsg ? emsg : "");
    fputc('\n', stderr);
    json_t *out = json_object_get(rec, "output");
    if (out && !json_is_null(out)) {
        char *s = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
        fprintf(stderr, "tako: output: %s\n", s ? s : "?");
        free(s);
    }
    json_t *arts = json_object_get(rec, "artifacts");
    if (json_array_size(arts) > 0) {
        fprintf(stderr, "tako: artifacts%s%s%s:\n", job_id ? " (`tako artifacts " : "",
                job_id ? job_id : "", job_id ? " NAME`)" : "");
        tako_print_artifact_list(stderr, arts, "  ");
    }
    return tako_exit_for_status(status);
}
