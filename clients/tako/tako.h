/*
 * tako.h — the `tako` command line: shared pieces of its modules.
 *
 *   tako.c    main(): the command table, option parsing, --help texts
 *   local.c   `tako run`: one job in library mode, through takocommon's sandbox (no
 *             server, no database)
 *   remote.c  the server client: submit, status, result, logs, cancel, rerun, fork,
 *             artifacts, jobs, job-types, health
 *   session.c `tako session ...` and `tako repl`: a stateful interpreter on takod
 *   mcp.c     `tako mcp`: a Model Context Protocol server (stdio) over takod's API
 *   http.c    a small libcurl client for takod's JSON API
 *   setup.c   `tako setup`: preflight checks, then scripts/build-image.sh (the image recipe)
 *             with its progress; helpers shared with doctor.c (config, engine, disk)
 *   doctor.c  `tako doctor`: one PASS/WARN/FAIL line per thing takod needs on this machine
 *
 * Exit codes (the same for every command; README "Exit codes"):
 */
#ifndef TAKO_CLI_H
#define TAKO_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define TAKO_EXIT_OK      0 /* done; the job (if any) succeeded */
#define TAKO_EXIT_FAILED  1 /* the job failed / timed out / was cancelled; not found; refused */
#define TAKO_EXIT_USAGE   2 /* bad command line, unreadable or malformed local file */
#define TAKO_EXIT_INFRA   3 /* takod unreachable or 5xx; Docker or the image missing */
#define TAKO_EXIT_AUTH    4 /* 401 / 403 */
#define TAKO_EXIT_PENDING 5 /* waited, but the job has not finished */

/* Every option any command knows; each command allows a subset (tako.c). */
enum opt_id {
    O_URL,
    O_API_KEY,
    O_JSON,
    O_HELP,
    O_INPUT,
    O_STDIN,
    O_TIMEOUT,
    O_JOB_TYPE,
    O_MEMORY,
    O_CPUS,
    O_IMAGE,
    O_NETWORK,
    O_PACKAGE_DIR,
    O_REQUIREMENT,
    O_OUTPUT_DIR,
    O_CONFIG,
    O_WAIT,
    O_STATUS,
    O_LIMIT,
    O_OFFSET,
    O_OUT,
    O_FORCE,
    O_IDEMPOTENCY_KEY,
    O_OVERRIDE,      /* -o section.key=value (setup, doctor; -o is --output elsewhere) */
    O_MIRROR,        /* setup */
    O_REGISTRY_BASE, /* setup */
    O_VERSION_TAG,   /* build */
    O_IDLE_TIMEOUT,  /* session new, repl */
    O_MAX_LIFETIME,  /* session new, repl */
    O_COUNT
};

#define TAKO_MAX_MULTI 64
#define TAKO_MAX_POS   4

struct args {
    const char *cmd;
    const char *pos[TAKO_MAX_POS];
    int npos;
    const char *val[O_COUNT]; /* last value given (or "1" for a flag) */
    const char *multi[O_COUNT][TAKO_MAX_MULTI];
    int nmulti[O_COUNT];
    /* globals, resolved: --url / TAKO_URL, --api-key / TAKO_API_KEY */
    const char *url;
    const char *api_key;
    bool json;
};

static inline bool opt_set(const struct args *a, enum opt_id id)
{
    return a->val[id] != NULL;
}

/* tako.c */
/* The long name of an option ("timeout"). */
const char *tako_opt_name(int id);
void tako_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Strict integer in [min, max]; on error prints a usage error naming `what`. */
int tako_parse_long(const char *cmd, const char *what, const char *s, long min, long max,
                    long *out);
/* Read a whole file ("-" = standard input), at most max bytes. 0 or -errno (-EFBIG). */
int tako_read_file(const char *path, size_t max, char **out, size_t *len);
/* Read a JSON object from a file (or "-"); prints the error and returns NULL. */
json_t *tako_read_json_object(const char *cmd, const char *path, size_t max);
/* Print JSON to stdout (indented), with a newline. */
void tako_print_json(const json_t *j);
/* "52 ms", "1.25 s", "3 min 4 s" */
void tako_format_ms(double ms, char *buf, size_t len);

/* output.c: showing a finished job (takod's record or the POST /execute result shape) */
void tako_error_parts(const json_t *rec, const char **type, const char **msg);
double tako_duration_ms(const json_t *rec); /* -1 when unknown */
int tako_exit_for_status(const char *status);
void tako_print_artifact_list(FILE *f, const json_t *arts, const char *indent);
/* The program's stdout and stderr, then a status line (and output, artifacts) on stderr.
 * Returns the exit code for the job's status. job_id may be NULL (library mode). */
int tako_print_run_result(const json_t *rec, const char *job_id);
/* Only the status line (and output, artifacts), for output already shown live. */
int tako_print_run_status(const json_t *rec, const char *job_id);

/* local.c */
int cmd_run(struct args *a);

/* remote.c */
int cmd_submit(struct args *a);
int cmd_status(struct args *a);
int cmd_result(struct args *a);
int cmd_logs(struct args *a);
int cmd_cancel(struct args *a);
int cmd_rerun(struct args *a);
int cmd_fork(struct args *a);
int cmd_artifacts(struct args *a);
int cmd_jobs(struct args *a);
int cmd_job_types(struct args *a);
int cmd_build(struct args *a);
int cmd_health(struct args *a);
int cmd_audit(struct args *a);

/* session.c: `tako session SUBCOMMAND` and `tako repl` (docs/SESSIONS.md) */
int cmd_session(struct args *a);
int cmd_repl(struct args *a);
/* "/sessions/<escaped id><suffix>" (suffix may be NULL), or NULL (out of memory). */
char *tako_session_route(const char *id, const char *suffix);
/*
 * Check a workspace path (docs/SESSIONS.md "Files": 1..1024 bytes, relative, components of
 * 1..255 bytes, no "." or ".."; a trailing "/" is dropped) and percent-escape it component
 * by component, keeping the slashes. Caller frees; NULL with the reason in why.
 */
char *tako_workspace_escape(const char *path, char *why, size_t len);

/* mcp.c: `tako mcp`, a Model Context Protocol server on stdio */
int cmd_mcp(struct args *a);

/* setup.c */
int cmd_setup(struct args *a);

/* doctor.c */
int cmd_doctor(struct args *a);

/* setup.c: pieces shared by `tako setup` and `tako doctor` */
struct tk_config;
/*
 * The configuration a machine-level command acts on: -c FILE, else ./conf/tako.conf when
 * it exists, else /etc/takod/tako.conf when it exists, else the built-in defaults; then
 * the -o overrides. `source` says which ("conf/tako.conf", "built-in defaults", ...).
 * 0, or config_load's -errno with its "FILE:LINE: reason" in err (cfg is then zeroed).
 */
int tako_machine_config(const struct args *a, struct tk_config *cfg, char *source, size_t slen,
                        char *err, size_t errlen);
/* Free space (for unprivileged users) of the file system holding `path`, or of its nearest
 * existing ancestor when it does not exist yet (`at` gets the path measured). 0 or -errno. */
int tako_free_bytes(const char *path, unsigned long long *bytes, char *at, size_t atlen);
/* "1.5 GiB", "312 MiB" */
void tako_format_bytes(unsigned long long bytes, char *buf, size_t len);
struct docker;
/* The engine's DockerRootDir (GET /info), else /var/lib/docker (also when d is NULL). */
void tako_docker_root(struct docker *d, char *out, size_t len);
/* The reason at the end of a docker.h error ("cannot connect ... at unix://X: No such file
 * or directory" -> "No such file or directory"), for messages that name the socket already. */
const char *tako_engine_reason(const char *err);

/* http.c */
struct http_client {
    const char *base_url; /* without a trailing slash */
    const char *api_key;  /* NULL: none */
    bool progress;        /* show elapsed time on stderr while a request runs (TTY only) */
    const char *progress_label;
    double progress_start; /* monotonic seconds */
    /* Called about once a second while a request runs (NULL: not): `tako repl` sends an
     * interrupt from it when Ctrl-C was pressed. It may make requests of its own. */
    void (*tick)(void *ud);
    void *tick_ud;
};

struct http_resp {
    long status; /* 0 when the request never got an answer */
    char *body;  /* NUL-terminated (may contain NULs for binary bodies) */
    size_t len;
    char err[256];  /* transport error (status 0) */
    char etag[160]; /* without quotes */
    char content_type[128];
    char correlation_id[128];
    char retry_after[32];
};

int http_global_init(void);
/* method + path (already escaped) + optional JSON body; timeout_s bounds the whole request.
 * Returns 0 when an HTTP answer came (any status), -1 on transport failure (r->err). */
int http_request(const struct http_client *c, const char *method, const char *path,
                 const char *body, long timeout_s, struct http_resp *r);
/* The same with a raw body of `len` bytes (may hold NULs) sent as `content_type`. */
int http_request_raw(const struct http_client *c, const char *method, const char *path,
                     const void *body, size_t len, const char *content_type, long timeout_s,
                     struct http_resp *r);
void http_resp_free(struct http_resp *r);
/* Escape one path segment (a job id, an artifact name). Caller frees. */
char *http_escape(const char *s);
double mono_seconds(void);

/* remote.c: the shared pieces of the server commands (also session.c, mcp.c) */
struct remote {
    struct args *a;
    struct http_client c;
    char base[2048];
};
/* Check --url and set up the client. 0, or -1 after a usage error. */
int remote_init(struct args *a, struct remote *r);
/* The server's `detail` of an error answer as one line. */
void remote_format_detail(const struct http_resp *resp, char *buf, size_t len);
/* 0 for 2xx (or ok_also), else prints why (naming `what`) and returns the exit code:
 * no answer 3, 401/403 4, 5xx 3, other 4xx 1. */
int remote_check(struct remote *r, int transport_rc, const struct http_resp *resp, const char *what,
                 long ok_also);
/* A request whose answer must be JSON: *out is the parsed body. Returns the exit code. */
int remote_call_json(struct remote *r, const char *method, const char *path, const json_t *body,
                     long timeout_s, const char *what, json_t **out);

#endif
