/*
 * tako.c — the `tako` command: library-mode runs (`tako run`) and a client for takod's
 * HTTP API. This file holds main(), the command table, option parsing and the help texts;
 * see tako.h for the modules and the exit codes.
 */
#include "tako.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TAKO_VERSION
#define TAKO_VERSION "0.0.0"
#endif

struct opt_spec {
    const char *name;
    char short_name;
    bool has_arg;
    bool multi;
};

static const struct opt_spec opts[O_COUNT] = {
    [O_URL] = {"url", 0, true, false},
    [O_API_KEY] = {"api-key", 0, true, false},
    [O_JSON] = {"json", 0, false, false},
    [O_HELP] = {"help", 'h', false, false},
    [O_INPUT] = {"input", 'i', true, false},
    [O_STDIN] = {"stdin", 0, true, false},
    [O_TIMEOUT] = {"timeout", 't', true, false},
    [O_JOB_TYPE] = {"job-type", 0, true, false},
    [O_MEMORY] = {"memory", 'm', true, false},
    [O_CPUS] = {"cpus", 0, true, false},
    [O_IMAGE] = {"image", 0, true, false},
    [O_NETWORK] = {"network", 0, false, false},
    [O_PACKAGE_DIR] = {"package-dir", 0, true, true},
    [O_REQUIREMENT] = {"requirement", 'r', true, true},
    [O_OUTPUT_DIR] = {"output-dir", 0, true, false},
    [O_CONFIG] = {"config", 'c', true, false},
    [O_WAIT] = {"wait", 'w', false, false},
    [O_STATUS] = {"status", 0, true, false},
    [O_LIMIT] = {"limit", 'n', true, false},
    [O_OFFSET] = {"offset", 0, true, false},
    [O_OUT] = {"output", 'o', true, false},
    [O_FORCE] = {"force", 'f', false, false},
    [O_IDEMPOTENCY_KEY] = {"idempotency-key", 0, true, false},
    [O_OVERRIDE] = {"override", 'o', true, true},
    [O_MIRROR] = {"mirror", 0, true, false},
    [O_REGISTRY_BASE] = {"registry-base", 0, true, false},
    [O_VERSION_TAG] = {"version-tag", 0, true, false},
    [O_IDLE_TIMEOUT] = {"idle-timeout", 0, true, false},
    [O_MAX_LIFETIME] = {"max-lifetime", 0, true, false},
};

const char *tako_opt_name(int id)
{
    return id >= 0 && id < O_COUNT ? opts[id].name : "?";
}

#define BIT(o) (1ull << (o))
#define GLOBAL_OPTS                                                                                \
    (BIT(O_URL) | BIT(O_API_KEY) | BIT(O_JSON) | BIT(O_HELP)) /* accepted by every command */

struct command {
    const char *name;
    int (*fn)(struct args *);
    unsigned long long allowed;
    int min_pos, max_pos;
    const char *usage;
    const char *help;
};

/* clang-format off */
static const struct command commands[] = {
    {"run", cmd_run,
     BIT(O_INPUT) | BIT(O_STDIN) | BIT(O_TIMEOUT) | BIT(O_JOB_TYPE) | BIT(O_MEMORY) | BIT(O_CPUS) |
     BIT(O_IMAGE) | BIT(O_NETWORK) | BIT(O_PACKAGE_DIR) | BIT(O_REQUIREMENT) | BIT(O_OUTPUT_DIR) |
     BIT(O_CONFIG), 1, 1,
     "tako run FILE.py [options]",
     "Run one program locally, without a server or a database, in a fresh hardened container\n"
     "(the same executor code, limits and defences as takod). FILE.py may be - (standard input).\n"
     "\n"
     "  -i, --input FILE      JSON object for /input/data.json (- for standard input)\n"
     "      --stdin FILE      feed FILE to the program's standard input\n"
     "  -t, --timeout N       seconds before the program is killed (default 30)\n"
     "      --job-type T      run in job type T's image with its limits (built on first use)\n"
     "  -m, --memory SIZE     memory limit, e.g. 512m, 1g (default 512m)\n"
     "      --cpus N          CPU limit, e.g. 0.5 (default 1.0)\n"
     "      --image IMAGE     executor image (default code-executor:latest)\n"
     "      --network         allow network access (off by default)\n"
     "      --package-dir DIR make the Python package DIR importable as `import <basename>`\n"
     "                        (read-only; repeatable)\n"
     "  -r, --requirement R   a pip requirement, repeatable: the set is installed once into a\n"
     "                        cached image (a failed install: error_type dependency_error)\n"
     "      --output-dir DIR  also save result.json and the artifacts into DIR\n"
     "  -c, --config FILE     read limits, image and runtime from a tako.conf\n"
     "      --json            print one JSON object: stdout, stderr, exit_code, success, output,\n"
     "                        error, error_type, status, duration_ms, artifacts, timing, ...\n"
     "\n"
     "Without --json the program's stdout goes to stdout and its stderr to stderr as it runs,\n"
     "then a status line (and result.json, artifacts) to stderr.\n"
     "Exit: 0 succeeded, 1 the program failed (error, timeout, OOM, interrupted), 2 usage,\n"
     "3 Docker or the image is missing or the container could not be started.\n"},
    {"submit", cmd_submit,
     BIT(O_INPUT) | BIT(O_STDIN) | BIT(O_TIMEOUT) | BIT(O_JOB_TYPE) | BIT(O_REQUIREMENT) |
     BIT(O_WAIT) | BIT(O_IDEMPOTENCY_KEY), 1, 1,
     "tako submit FILE.py [--input F] [--timeout N] [--job-type T] [--wait]",
     "Queue a job on takod (POST /execute/async) and print its id. FILE.py may be -.\n"
     "\n"
     "  -i, --input FILE          JSON object for /input/data.json\n"
     "      --stdin FILE          the program's standard input\n"
     "  -t, --timeout N           execution timeout in seconds\n"
     "      --job-type T          job type (environment)\n"
     "  -r, --requirement R       runtime requirement (if the server allows them; repeatable)\n"
     "      --idempotency-key K   default: a new random key; retries reuse it\n"
     "  -w, --wait                wait for the result and print it like `tako run`\n"
     "\n"
     "The submission is retried (same idempotency key) on connection errors, 429 (after its\n"
     "Retry-After) and 502/503/504.\n"},
    {"status", cmd_status, 0, 1, 1, "tako status ID",
     "Show a job's status (GET /jobs/ID): status, times, queue position.\n"},
    {"result", cmd_result, BIT(O_WAIT) | BIT(O_TIMEOUT), 1, 1,
     "tako result ID [--wait] [--timeout N]",
     "Show a job's result (GET /jobs/ID/result?view=full): status, exit code, error, output\n"
     "(result.json) and artifacts. The program's streams: `tako logs ID`.\n"
     "\n"
     "  -w, --wait        wait until the job has finished (long-poll)\n"
     "  -t, --timeout N   give up waiting after N seconds (exit 5)\n"
     "\n"
     "Exit: 0 succeeded, 1 failed/timeout/oom/cancelled or not found, 5 not finished.\n"},
    {"logs", cmd_logs, BIT(O_WAIT) | BIT(O_TIMEOUT), 1, 1, "tako logs ID [--wait]",
     "Print a finished job's stdout (to stdout) and stderr (to stderr).\n"
     "\n"
     "  -w, --wait        wait until the job has finished\n"
     "  -t, --timeout N   give up waiting after N seconds (exit 5)\n"},
    {"cancel", cmd_cancel, 0, 1, 1, "tako cancel ID",
     "Cancel a queued or running job (POST /jobs/ID/cancel); its container is killed.\n"},
    {"rerun", cmd_rerun, BIT(O_TIMEOUT) | BIT(O_JOB_TYPE) | BIT(O_WAIT), 1, 1,
     "tako rerun ID [--timeout N] [--job-type T] [--wait]",
     "Run a finished job again: same code and input (POST /jobs/ID/rerun). Prints the new id;\n"
     "with --wait, waits and prints the result like `tako run`.\n"},
    {"fork", cmd_fork, BIT(O_TIMEOUT) | BIT(O_JOB_TYPE) | BIT(O_WAIT), 2, 2,
     "tako fork ID FILE.py [--timeout N] [--job-type T] [--wait]",
     "Run new code on a job's input (POST /jobs/ID/fork). Prints the new id; with --wait,\n"
     "waits and prints the result like `tako run`.\n"},
    {"artifacts", cmd_artifacts, BIT(O_OUT) | BIT(O_FORCE), 1, 2,
     "tako artifacts ID [NAME] [-o FILE]",
     "Without NAME: list the files the job left in /output. With NAME: download one\n"
     "(GET /jobs/ID/artifacts/NAME), check its sha256 against the ETag, and save it.\n"
     "\n"
     "  -o, --output FILE  where to save it (default ./NAME; - for standard output)\n"
     "  -f, --force        overwrite an existing file\n"},
    {"jobs", cmd_jobs, BIT(O_STATUS) | BIT(O_LIMIT) | BIT(O_OFFSET) | BIT(O_JOB_TYPE), 0, 0,
     "tako jobs [--status S] [--job-type T] [--limit N] [--offset N]",
     "List past jobs, newest first (GET /executions).\n"
     "\n"
     "      --status S    queued, running, succeeded, failed, timeout, oom or cancelled\n"
     "      --job-type T  only this job type\n"
     "  -n, --limit N     at most N (1..1000, default 20)\n"
     "      --offset N    skip the first N\n"},
    {"job-types", cmd_job_types, 0, 0, 1, "tako job-types [NAME]",
     "List the job types (environments) takod knows, or show one.\n"},
    {"build", cmd_build, BIT(O_VERSION_TAG), 1, 1, "tako build NAME [--version-tag TAG]",
     "Build job type NAME's image on the server (POST /job-types/NAME/build) and print the\n"
     "version it records; run that exact build with --job-type NAME@VERSION (or @TAG).\n"
     "Waits for the build (minutes for large packages).\n"
     "\n"
     "      --version-tag TAG  also name this build TAG ([A-Za-z0-9._-]; tags never move)\n"
     "\n"
     "Exit: 0 built, 1 the build failed (its output's tail is printed), 3 takod unreachable.\n"},
    {"health", cmd_health, 0, 0, 0, "tako health",
     "Ask takod whether it is healthy (GET /health). Exit: 0 healthy, 1 degraded, 3 down.\n"},
    {"session", cmd_session,
     BIT(O_JOB_TYPE) | BIT(O_MEMORY) | BIT(O_CPUS) | BIT(O_TIMEOUT) | BIT(O_IDLE_TIMEOUT) |
     BIT(O_MAX_LIFETIME) | BIT(O_STDIN) | BIT(O_OUT) | BIT(O_FORCE) |
     BIT(O_LIMIT) | BIT(O_OFFSET), 1, 4,
     "tako session SUBCOMMAND [ARGS]",
     "A session is a Python interpreter on takod that keeps its state (variables, imports,\n"
     "files) from one cell to the next, in a container of its own (docs/SESSIONS.md).\n"
     "\n"
     "  new [--job-type T] [--memory M] [--cpus N] [--timeout S] [--max-lifetime S]\n"
     "                    create one (POST /sessions) and print its id (--json: the session).\n"
     "                    --timeout (or --idle-timeout) is the idle timeout in seconds: no\n"
     "                    cell and no file call for that long ends it; --max-lifetime: it\n"
     "                    ends that long after its creation at the latest\n"
     "  run ID [FILE|-] [-t S] [--stdin F]\n"
     "                    run a cell: the code of FILE (default -, standard input). Prints its\n"
     "                    stdout and the value of its last expression to stdout, its stderr\n"
     "                    and the error's traceback to stderr. -t: the cell's timeout\n"
     "  put ID LOCAL [REMOTE]\n"
     "                    upload LOCAL (- for standard input, then REMOTE is needed) to the\n"
     "                    workspace as REMOTE (default: LOCAL's file name)\n"
     "  get ID REMOTE [-o LOCAL|-] [--force]\n"
     "                    download a workspace file (checked against its sha256) to ./NAME,\n"
     "                    LOCAL, or standard output; an existing file needs --force\n"
     "  ls               your live sessions\n"
     "  ls ID [DIR]      the workspace (or its directory DIR)\n"
     "  rm ID            end the session (DELETE): its container and workspace go\n"
     "  rm ID PATH       remove a workspace file (or an empty directory)\n"
     "  cells ID [--limit N] [--offset N]\n"
     "                    the cells run so far, oldest first\n"
     "  info ID          the session (status, expiry, cell count) as JSON\n"
     "  interrupt ID     interrupt the running cell (KeyboardInterrupt)\n"
     "\n"
     "Workspace paths are relative to the workspace (/output, the cells' working directory).\n"
     "Exit: 0 ok, 1 the cell failed (error, timeout, interrupted, crashed) or takod refused\n"
     "(404, 409 a cell is running, 410 the session has ended, 429 too many sessions), 2 usage,\n"
     "3 takod unreachable or 5xx (503: no room for a session), 4 not authorized.\n"},
    {"repl", cmd_repl,
     BIT(O_JOB_TYPE) | BIT(O_MEMORY) | BIT(O_CPUS) | BIT(O_TIMEOUT) | BIT(O_IDLE_TIMEOUT) |
     BIT(O_MAX_LIFETIME), 0, 1,
     "tako repl [ID] [-t S] [--job-type T] [--memory M] [--cpus N] [--idle-timeout S]",
     "An interactive Python prompt on takod: each statement runs as a cell of a session, so\n"
     "state is kept. Without ID a new session is created (with --job-type, --memory, --cpus,\n"
     "--idle-timeout, --max-lifetime) and closed when the REPL ends; with ID,\n"
     "the REPL joins that session and leaves it open.\n"
     "\n"
     "Lines come from standard input, a terminal or a pipe. A complete simple statement runs at\n"
     "once; a compound one (a line ending with ':', a decorator) or an open bracket or string\n"
     "collects lines until a blank line, or until a new statement starts at column 0. End of\n"
     "input runs what is left. :quit leaves. Ctrl-C interrupts the running cell (at the prompt:\n"
     "drops the lines typed). Prompts (>>> and ...) go to stderr, and only on a terminal.\n"
     "\n"
     "  -t, --timeout S   each cell's timeout (default: the job type's)\n"
     "\n"
     "Exit: 0 the input ended (failed cells do not change it), 1 the session ended under the\n"
     "REPL or takod refused, 3 takod unreachable or 5xx, 4 not authorized.\n"},
    {"mcp", cmd_mcp, 0, 0, 0, "tako mcp [--url URL] [--api-key KEY]",
     "A Model Context Protocol server on standard input and output (JSON-RPC 2.0, one message\n"
     "per line; protocol version 2025-06-18, also 2025-03-26 and 2024-11-05) that gives an\n"
     "LLM client takod's tools: run_python (one job, POST /execute), session_create,\n"
     "session_run, session_upload, session_download, session_files and session_close.\n"
     "Logs go to stderr; stdout carries only the protocol. Example client configuration:\n"
     "\n"
     "  {\"mcpServers\": {\"takod\": {\"command\": \"tako\",\n"
     "                                \"args\": [\"mcp\", \"--url\", \"http://127.0.0.1:8000\"]}}}\n"
     "\n"
     "Exit: 0 when standard input ends, 2 usage.\n"},
    {"setup", cmd_setup,
     BIT(O_FORCE) | BIT(O_IMAGE) | BIT(O_MIRROR) | BIT(O_REGISTRY_BASE) | BIT(O_CONFIG) |
     BIT(O_OVERRIDE), 0, 0,
     "tako setup [--force] [--image NAME] [--mirror URL] [--registry-base IMAGE] [-c FILE]",
     "Build the executor image (default: docker.image of the configuration, code-executor:latest)\n"
     "with no registry: debootstrap a minimal Debian with python3 from this machine's apt mirror,\n"
     "`docker import` it as takod-base:<codename> (cached), then build takod's layer (image/) on\n"
     "it with the static launcher. An image whose launcher label matches is left alone: then\n"
     "this says \"NAME is up to date\" and exits at once. The recipe is scripts/build-image.sh of\n"
     "the source tree ($TAKO_SOURCE_DIR, else the tree tako was built from).\n"
     "\n"
     "  -f, --force              rebuild everything (debootstrap again, no build cache)\n"
     "      --image NAME         tag to build (default docker.image, code-executor:latest)\n"
     "      --mirror URL         Debian mirror for debootstrap (default: apt's own)\n"
     "      --registry-base IMG  first try `docker pull IMG` (e.g. python:3.11-slim; 30 s without\n"
     "                           progress is a failure) and build on it: no debootstrap. If the\n"
     "                           pull fails, a local copy of IMG is used, else debootstrap\n"
     "  -c, --config FILE        tako.conf for docker.socket and docker.image (default:\n"
     "                           ./conf/tako.conf, else /etc/takod/tako.conf, else built-in)\n"
     "  -o, --override S.K=V     override one key of it, like takod -o (repeatable)\n"
     "      --json               print {image, id, status: up_to_date|built, seconds} on stdout\n"
     "\n"
     "Checked first, each with a one-line error: a Docker engine answers on docker.socket; and,\n"
     "only when something must be built, 2 GiB free in the Docker root and (for debootstrap)\n"
     "in $TAKOD_BUILD_TMPDIR (default /var/tmp), debootstrap installed, root.\n"
     "Progress goes to stderr, each line prefixed with the seconds elapsed.\n"
     "Exit: 0 built or up to date, 1 a check or the build failed, 2 usage, 3 no Docker engine.\n"},
    {"doctor", cmd_doctor, BIT(O_CONFIG) | BIT(O_OVERRIDE), 0, 0,
     "tako doctor [-c FILE] [-o SECTION.KEY=VALUE]... [--json]",
     "Check what takod needs on this machine, one line each: `PASS|WARN|FAIL  check: detail`,\n"
     "and for WARN and FAIL a `fix:` line. The checks: the configuration loads; a Docker engine\n"
     "answers on docker.socket; docker.image is present; gVisor's runsc is registered (FAIL\n"
     "only when docker.runtime = runsc or security_mode = strict); the database answers\n"
     "SELECT 1 (database.url, or the managed PostgreSQL in <data_dir>/pgsock, a WARN when\n"
     "takod is not running); data_dir is writable; free disk space in data_dir and the Docker\n"
     "root (WARN under 2 GiB, FAIL under 200 MiB). Last, when a takod is there to ask (--url or\n"
     "TAKO_URL given, or the pidfile names a live takod, asked at server.listen): the nodes on\n"
     "its PostgreSQL (GET /nodes, with --api-key or else auth.admin_key), then one line each,\n"
     "`      node ID: live|stopped|STALE, R running, Q queued, ...`; WARN when a node is STALE\n"
     "(neither stopped nor seen within cluster.lease) or takod cannot be asked.\n"
     "\n"
     "  -c, --config FILE        the tako.conf to check (default: ./conf/tako.conf, else\n"
     "                           /etc/takod/tako.conf, else the built-in defaults)\n"
     "  -o, --override S.K=V     override one key, like takod -o (repeatable)\n"
     "      --json               {\"checks\": [{name, status, detail, fix}], \"ok\": bool}, and\n"
     "                           \"nodes\": GET /nodes's answer when the nodes check got one\n"
     "\n"
     "Exit: 0 no FAIL (WARNs allowed), 1 at least one FAIL, 2 usage.\n"},
    {"audit", cmd_audit, 0, 1, 2, "tako audit verify [SEQ:HASH]",
     "Recompute the tamper-evident chain of job records (GET /audit/verify; the admin key\n"
     "when keys are on) and report the first edited, inserted or deleted record. With\n"
     "SEQ:HASH, also check a previously exported (audit_seq, audit_hash).\n"
     "Exit: 0 verified, 1 not.\n"},
};
/* clang-format on */

static void print_main_help(FILE *f)
{
    fprintf(f, "usage: tako [--url URL] [--api-key KEY] [--json] COMMAND [ARGS]\n"
               "\n"
               "Library mode (no server, no database):\n"
               "  run FILE.py         run a program in a fresh hardened container\n"
               "\n"
               "takod client:\n"
               "  submit FILE.py      queue a job (--wait: and wait for its result)\n"
               "  status ID           a job's status\n"
               "  result ID           a job's result (--wait: long-poll until it finishes)\n"
               "  logs ID             a job's stdout and stderr\n"
               "  cancel ID           cancel a queued or running job\n"
               "  rerun ID            run a job again\n"
               "  fork ID FILE.py     run new code on a job's input\n"
               "  artifacts ID [NAME] list or download a job's output files\n"
               "  audit verify        check the tamper-evident chain of records\n"
               "  jobs                list past jobs\n"
               "  job-types [NAME]    list the environments\n"
               "  build NAME          build a job type's image, print its version\n"
               "  health              is takod up?\n"
               "\n"
               "Sessions (a Python interpreter that keeps its state):\n"
               "  session new         create one, print its id\n"
               "  session run ID [F]  run a cell (code from F or standard input)\n"
               "  session put|get|ls|rm|cells|info|interrupt ...\n"
               "                      its workspace files, history, end it\n"
               "  repl [ID]           an interactive prompt on a session\n"
               "  mcp                 a Model Context Protocol server (stdio) for LLM clients\n"
               "\n"
               "This machine:\n"
               "  setup               build the executor image if it is missing or stale\n"
               "                      (--force, --image NAME, --mirror URL, --registry-base IMG)\n"
               "  doctor              check config, Docker, image, gVisor, database, disk,\n"
               "                      the cluster's nodes (-c FILE, -o SECTION.KEY=VALUE)\n"
               "\n"
               "Options for every command:\n"
               "  --url URL       takod's address (env TAKO_URL; default http://127.0.0.1:8000)\n"
               "  --api-key KEY   sent as X-API-Key (env TAKO_API_KEY)\n"
               "  --json          machine-readable output on stdout\n"
               "  -h, --help      help (`tako COMMAND --help` for a command)\n"
               "  --version       print the version\n"
               "\n"
               "Exit codes: 0 ok, 1 the job failed or was not found, 2 usage error,\n"
               "3 takod unreachable or a server error (run: Docker/image missing),\n"
               "4 not authorized (401/403), 5 the job has not finished yet.\n"
               "setup and doctor: 1 a check or the build failed, 3 no Docker engine (setup).\n");
}

static void print_command_help(const struct command *c, FILE *f)
{
    fprintf(f, "usage: %s\n\n%s", c->usage, c->help);
    fprintf(f, "\nAlso: --url URL, --api-key KEY, --json, -h/--help (see `tako --help`).\n");
}

void tako_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "tako%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry `tako %s%s--help`.\n", cmd ? cmd : "", cmd ? " " : "");
}

int tako_parse_long(const char *cmd, const char *what, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        tako_usage_error(cmd, "%s must be a whole number from %ld to %ld, not \"%s\"", what, min,
                         max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int tako_read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return -errno;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    int rc = 0;
    while (buf) {
        if (n == cap) {
            if (cap > max) {
                rc = -EFBIG;
                break;
            }
            char *grown = realloc(buf, cap * 2 + 1);
            if (!grown) {
                rc = -ENOMEM;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f))
                rc = -EIO;
            break;
        }
    }
    if (f != stdin)
        fclose(f);
    if (!buf)
        return -ENOMEM;
    if (rc == 0 && n > max)
        rc = -EFBIG;
    if (rc < 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

json_t *tako_read_json_object(const char *cmd, const char *path, size_t max)
{
    char *text = NULL;
    size_t len = 0;
    int rc = tako_read_file(path, max, &text, &len);
    if (rc < 0) {
        tako_usage_error(cmd, "cannot read the input %s: %s", path,
                         rc == -EFBIG ? "too large" : strerror(-rc));
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!j) {
        tako_usage_error(cmd, "the input %s is not JSON: line %d: %s", path, jerr.line, jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        tako_usage_error(cmd, "the input %s must be a JSON object ({...})", path);
        json_decref(j);
        return NULL;
    }
    return j;
}

void tako_print_json(const json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

void tako_format_ms(double ms, char *buf, size_t len)
{
    if (ms < 1000)
        snprintf(buf, len, "%.0f ms", ms);
    else if (ms < 60000)
        snprintf(buf, len, "%.2f s", ms / 1000);
    else
        snprintf(buf, len, "%d min %d s", (int)(ms / 60000), (int)(ms / 1000) % 60);
}

/* The option called `name` (n bytes) or `short_name`. A short name may mean different
 * options to different commands (-o: --output for artifacts, --override for setup and
 * doctor), so the one the command allows wins; else the first, reported as unknown. */
static int find_opt(const char *name, size_t n, char short_name, unsigned long long allowed)
{
    int first = -1;
    for (int i = 0; i < O_COUNT; i++) {
        if (short_name ? opts[i].short_name == short_name
                       : (strlen(opts[i].name) == n && !strncmp(opts[i].name, name, n))) {
            if (allowed & BIT(i))
                return i;
            if (first < 0)
                first = i;
        }
    }
    return first;
}

/* Parse argv[start..] for command c (NULL: only global options before the command). */
static int parse_args(int argc, char **argv, int *i, const struct command *c, struct args *a)
{
    const char *cname = c ? c->name : NULL;
    unsigned long long allowed = GLOBAL_OPTS | (c ? c->allowed : 0);
    bool only_pos = false;
    for (; *i < argc; (*i)++) {
        const char *s = argv[*i];
        if (only_pos || s[0] != '-' || !strcmp(s, "-")) {
            if (!c)
                return 0; /* the command name */
            if (a->npos >= c->max_pos || a->npos >= TAKO_MAX_POS) {
                tako_usage_error(cname, "unexpected argument \"%s\"", s);
                return -1;
            }
            a->pos[a->npos++] = s;
            continue;
        }
        if (!strcmp(s, "--")) {
            only_pos = true;
            continue;
        }
        if (!c && !strcmp(s, "--version")) {
            printf("tako %s\n", TAKO_VERSION);
            exit(TAKO_EXIT_OK);
        }
        int id;
        const char *inline_val = NULL;
        if (s[1] == '-') {
            const char *eq = strchr(s + 2, '=');
            size_t n = eq ? (size_t)(eq - (s + 2)) : strlen(s + 2);
            id = find_opt(s + 2, n, 0, allowed);
            if (eq)
                inline_val = eq + 1;
        } else {
            id = s[2] == '\0' ? find_opt(NULL, 0, s[1], allowed) : -1;
        }
        if (id < 0 || !(allowed & BIT(id))) {
            tako_usage_error(cname, "unknown option \"%s\"", s);
            return -1;
        }
        const char *val = "1";
        if (opts[id].has_arg) {
            if (inline_val) {
                val = inline_val;
            } else if (*i + 1 < argc) {
                val = argv[++*i];
            } else {
                tako_usage_error(cname, "option --%s needs a value", opts[id].name);
                return -1;
            }
        } else if (inline_val) {
            tako_usage_error(cname, "option --%s takes no value", opts[id].name);
            return -1;
        }
        if (opts[id].multi) {
            if (a->nmulti[id] >= TAKO_MAX_MULTI) {
                tako_usage_error(cname, "too many --%s", opts[id].name);
                return -1;
            }
            a->multi[id][a->nmulti[id]++] = val;
        }
        a->val[id] = val;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct args a; /* large: static */
    int i = 1;
    if (parse_args(argc, argv, &i, NULL, &a) < 0)
        return TAKO_EXIT_USAGE;
    if (i >= argc) {
        if (opt_set(&a, O_HELP)) {
            print_main_help(stdout);
            return TAKO_EXIT_OK;
        }
        print_main_help(stderr);
        return TAKO_EXIT_USAGE;
    }
    const char *name = argv[i++];
    if (!strcmp(name, "help")) {
        name = i < argc ? argv[i++] : NULL;
        for (size_t k = 0; name && k < sizeof commands / sizeof commands[0]; k++)
            if (!strcmp(commands[k].name, name)) {
                print_command_help(&commands[k], stdout);
                return TAKO_EXIT_OK;
            }
        print_main_help(name ? stderr : stdout);
        return name ? TAKO_EXIT_USAGE : TAKO_EXIT_OK;
    }
    const struct command *c = NULL;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        if (!strcmp(commands[k].name, name))
            c = &commands[k];
    if (!c) {
        fprintf(stderr, "tako: unknown command \"%s\"\nTry `tako --help`.\n", name);
        return TAKO_EXIT_USAGE;
    }
    a.cmd = c->name;
    if (parse_args(argc, argv, &i, c, &a) < 0)
        return TAKO_EXIT_USAGE;
    if (opt_set(&a, O_HELP)) {
        print_command_help(c, stdout);
        return TAKO_EXIT_OK;
    }
    if (a.npos < c->min_pos) {
        tako_usage_error(c->name, "missing argument (usage: %s)", c->usage);
        return TAKO_EXIT_USAGE;
    }
    a.json = opt_set(&a, O_JSON);
    a.url = a.val[O_URL] ? a.val[O_URL] : getenv("TAKO_URL");
    if (!a.url || !*a.url)
        a.url = "http://127.0.0.1:8000";
    a.api_key = a.val[O_API_KEY] ? a.val[O_API_KEY] : getenv("TAKO_API_KEY");
    if (http_global_init() < 0) {
        fprintf(stderr, "tako: libcurl could not be initialised\n");
        return TAKO_EXIT_INFRA;
    }
    return c->fn(&a);
}
