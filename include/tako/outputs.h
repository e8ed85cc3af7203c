/*
 * outputs.h — what a finished job left behind: /output/result.json and artifacts, and
 * the error type read from a Python traceback.
 */
#ifndef TAKO_OUTPUTS_H
#define TAKO_OUTPUTS_H

#include <jansson.h>
#include <stddef.h>

struct tk_artifact {
    char name[256];
    char *data; /* the bytes, kept for the record (PostgreSQL) */
    size_t len;
};

struct tk_outputs {
    json_t *output;            /* parsed result.json, or NULL */
    char output_err[256];      /* why result.json was not used ("" when fine or absent) */
    json_t *artifacts;         /* [{name, size_bytes, sha256, content_type}] */
    struct tk_artifact *files; /* the same artifacts' bytes, in the same order */
    size_t n_files;
    size_t artifacts_skipped;    /* every file not kept: bad name, not regular, caps */
    size_t artifacts_over_limit; /* of those, the ones a cap cut: count, each, total */
};

/*
 * Read `dir` (the job's output directory on the host). Never follows a symlink: every
 * file is opened with O_NOFOLLOW relative to the directory fd; only top-level regular
 * files with safe names count; result.json is parsed, others are artifacts within the
 * caps (max_each, max_total bytes, max_count files: past it, entries are only counted,
 * never opened). 0 or -errno (the directory itself unreadable).
 */
int outputs_collect(const char *dir, size_t max_each, size_t max_total, size_t max_count,
                    struct tk_outputs *out);
void outputs_free(struct tk_outputs *out);

/* A safe artifact name: 1..255 of [A-Za-z0-9._-], not starting with '.'. */
int outputs_name_ok(const char *name);

/*
 * From a Python stderr, the exception of the final traceback line: e.g.
 * "ZeroDivisionError: division by zero" → type "zero_division_error", message the line.
 * ModuleNotFoundError maps to "import_error". Returns 1 if found, else 0.
 */
int outputs_python_error(const char *stderr_text, char *type, size_t tlen, char *msg, size_t mlen);

/* Content type guessed from a file name's extension. */
const char *outputs_content_type(const char *name);

#endif
