/*
 * result.h — what one run produced, and how it becomes a job's row: the status and error
 * type from the sandbox's report (classify), and the row (result_row) from which the
 * jobstore writes the record and job_answer builds the answer takod sends and `tako run`
 * prints (build).
 */
#ifndef TAKO_RESULT_H
#define TAKO_RESULT_H

#include "tako/jobstore.h"
#include "tako/outputs.h"
#include "tako/sandbox.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct tk_result {
    const char *status; /* succeeded | failed | timeout | oom | cancelled */
    int exit_code;
    bool has_exit;
    char error_type[64];
    char error_msg[512];
    const char *error_phase; /* startup | execution | completed */
    struct sandbox_result sb;
    struct tk_outputs outputs;
    uint64_t t_popped_us, t_done_us; /* monotonic */
};

void result_set_error(struct tk_result *r, const char *type, const char *phase, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

/* Status and error from the sandbox's report and the outputs; `cfg` gives the artifact
 * limits a message names. */
struct tk_config;
void result_classify(struct tk_result *r, const struct tk_config *cfg, unsigned timeout_s,
                     int64_t memory_bytes);

/* What a row borrows from a result: result_row fills them, result_values_free lets go. */
struct result_values {
    json_t *timing, *error, *artifacts;
    char *stdout_text, *stderr_text; /* valid UTF-8 */
    char exit[16];
};

/* The job's row from its run (the FINISH fields; job_answer builds its answer from it). */
void result_row(const struct tk_result *r, const char *job_id, const char *job_type,
                uint64_t created_mono_us, struct job_row *row, struct result_values *v);
void result_values_free(struct result_values *v);

/* The response (POST /execute's body, job_answer of result_row), the error object (or JSON
 * null) and timing: for `tako run`, which has no record. */
void result_build(const struct tk_result *r, const char *job_id, const char *job_type,
                  uint64_t created_mono_us, json_t **response, json_t **error_obj, json_t **timing);

#endif
