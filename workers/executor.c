/*
 * executor.c — one executor process: pops a job from the dispatch ring, runs it in a
 * fresh container through the Docker Engine API, collects what it produced, records the
 * result in PostgreSQL, and hands the completion to the acceptor that waits for it.
 *
 * One job at a time; blocking calls (libcurl, libpq) are fine here because nothing else
 * shares this process. Signals only set flags (no SA_RESTART), checked between steps and
 * after every futex sleep.
 */
#include "tako/db.h"
#include "tako/docker.h"
#include "tako/jobs.h"
#include "tako/log.h"
#include "tako/outputs.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * TERM/INT: fast stop — a wait in progress is aborted (docker_set_abort_flag), the
 * container killed, the job recorded as cancelled (error.type "interrupted") and its
 * client answered; then exit. QUIT: finish the job in hand, then exit. USR1: reopen logs.
 */
static volatile sig_atomic_t stop_fast, stop_graceful, reopen_logs;

static void on_signal(int sig)
{
    if (sig == SIGQUIT)
        stop_graceful = 1;
    else if (sig == SIGUSR1)
        reopen_logs = 1;
    else
        stop_fast = 1;
}

struct exec_state {
    int slot;
    struct tk_proc *me;
    struct docker *docker;
    struct db *db;
};

/* What one run produced; becomes the DB record and the HTTP response. */
struct run_result {
    const char *status; /* succeeded | failed | timeout | oom | cancelled */
    int exit_code;      /* -1 when none */
    bool has_exit;
    char error_type[64];
    char error_msg[512];
    const char *error_phase; /* startup | execution | completed */
    struct tk_capbuf out, err;
    struct tk_outputs outputs;
    char container_id[65];
    uint64_t t_popped_us, t_started_us, t_exited_us, t_done_us; /* monotonic */
    uint64_t started_real_us;
};

static json_t *container_body(const struct tk_job *job, const char *dir)
{
    const struct tk_config *c = &tk.cfg;
    char code[4200], input[4200], output[4200], tmpfs[128];
    snprintf(code, sizeof code, "%s/code:/code:ro", dir);
    snprintf(input, sizeof input, "%s/input:/input:ro", dir);
    snprintf(output, sizeof output, "%s/output:/output:rw", dir);
    snprintf(tmpfs, sizeof tmpfs, "rw,noexec,nosuid,nodev,size=%lld",
             (long long)c->limits_tmpfs_size);
    json_int_t fsize = (json_int_t)c->limits_max_total_artifact_bytes + 1024 * 1024;
    return json_pack(
        "{s:s, s:[s,s,s], s:s, s:s, s:[s,s,s,s], s:{s:s, s:s}, s:b, s:b, s:b, s:b,"
        " s:{s:s, s:b, s:[s], s:[s], s:b, s:I, s:I, s:I, s:I,"
        "    s:[{s:s,s:i,s:i},{s:s,s:I,s:I}], s:{s:s}, s:[s,s,s],"
        "    s:{s:s, s:{s:s, s:s}}, s:b}}",
        "Image", c->docker_image, "Cmd", "python3", "-u", "/code/main.py", "User", c->docker_user,
        "WorkingDir", "/tmp", "Env", "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp",
        "LANG=C.UTF-8", "Labels", "takod.instance", tk.instance, "takod.job", job->id,
        "NetworkDisabled", 1, "Tty", 0, "OpenStdin", 0, "AttachStdin", 0, "HostConfig",
        "NetworkMode", "none", "ReadonlyRootfs", 1, "CapDrop", "ALL", "SecurityOpt",
        "no-new-privileges", "Init", 1, "Memory", (json_int_t)c->limits_memory, "MemorySwap",
        (json_int_t)c->limits_memory, "NanoCpus", (json_int_t)(c->limits_cpus * 1e9), "PidsLimit",
        (json_int_t)c->limits_pids, "Ulimits", "Name", "nofile", "Soft", 256, "Hard", 256, "Name",
        "fsize", "Soft", fsize, "Hard", fsize, "Tmpfs", "/tmp", tmpfs, "Binds", code, input, output,
        "LogConfig", "Type", "json-file", "Config", "max-size", "8m", "max-file", "1", "AutoRemove",
        0);
}

static void set_error(struct run_result *r, const char *type, const char *phase, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
static void set_error(struct run_result *r, const char *type, const char *phase, const char *fmt,
                      ...)
{
    snprintf(r->error_type, sizeof r->error_type, "%s", type);
    r->error_phase = phase;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error_msg, sizeof r->error_msg, fmt, ap);
    va_end(ap);
}

/* Create, start, wait (with the deadline), kill on timeout, collect logs and outputs. */
static void run_container(struct exec_state *st, struct tk_job *job, const char *dir,
                          struct run_result *r)
{
    struct docker *d = st->docker;
    char name[96];
    snprintf(name, sizeof name, "tako-%s-%u", job->id, job->attempt);
    json_t *body = container_body(job, dir);
    int rc = docker_create(d, name, body, r->container_id);
    json_decref(body);
    atomic_store(&tk.shm->docker_ok, rc != -ECONNREFUSED && rc != -ETIMEDOUT);
    if (rc < 0) {
        log_error("msg=\"docker_create failed\" job=%s image=%s err=\"%s\"", job->id,
                  tk.cfg.docker_image, docker_last_error(d));
        set_error(r, "docker_error", "startup", "could not create the container: %s",
                  docker_last_error(d));
        r->status = "failed";
        return;
    }
    memcpy(job->container_id, r->container_id, sizeof job->container_id);
    rc = docker_start(d, r->container_id);
    r->t_started_us = now_mono_us();
    if (rc < 0) {
        log_error("msg=\"docker_start failed\" job=%s container=%.12s err=\"%s\"", job->id,
                  r->container_id, docker_last_error(d));
        set_error(r, "docker_error", "startup", "could not start the container: %s",
                  docker_last_error(d));
        r->status = "failed";
        return;
    }
    int code = -1;
    bool timed_out = false, interrupted = false;
    rc = docker_wait(d, r->container_id, (int)job->timeout_s * 1000, &code);
    if (rc == -ETIMEDOUT || rc == -EINTR) {
        timed_out = rc == -ETIMEDOUT;
        interrupted = rc == -EINTR;
        if (docker_kill(d, r->container_id, "SIGKILL") < 0 && rc != -EEXIST)
            log_warn("msg=\"docker_kill failed\" job=%s container=%.12s err=\"%s\"", job->id,
                     r->container_id, docker_last_error(d));
        docker_set_abort_flag(d, NULL);
        rc = docker_wait(d, r->container_id, 10000, &code);
        docker_set_abort_flag(d, &stop_fast);
    }
    r->t_exited_us = now_mono_us();
    if (rc < 0) {
        log_error("msg=\"docker_wait failed\" job=%s container=%.12s err=\"%s\"", job->id,
                  r->container_id, docker_last_error(d));
        set_error(r, "docker_error", "execution", "lost track of the container: %s",
                  docker_last_error(d));
        r->status = "failed";
        return;
    }
    bool oom = false;
    json_t *info = NULL;
    if (docker_inspect(d, r->container_id, &info) == 0) {
        oom = json_is_true(json_object_get(json_object_get(info, "State"), "OOMKilled"));
        json_decref(info);
    }
    if (docker_logs(d, r->container_id, &r->out, &r->err) < 0)
        log_warn("msg=\"docker_logs failed\" job=%s container=%.12s err=\"%s\"", job->id,
                 r->container_id, docker_last_error(d));
    char outdir[4200];
    snprintf(outdir, sizeof outdir, "%s/output", dir);
    if (outputs_collect(outdir, (size_t)tk.cfg.limits_max_artifact_bytes,
                        (size_t)tk.cfg.limits_max_total_artifact_bytes, &r->outputs) < 0)
        log_warn("msg=\"collecting outputs failed\" job=%s dir=%s", job->id, outdir);

    r->has_exit = true;
    r->exit_code = code;
    if (interrupted) {
        r->status = "cancelled";
        set_error(r, "interrupted", "execution",
                  "takod was stopped while the job ran; the container was killed");
    } else if (timed_out) {
        r->status = "timeout";
        r->exit_code = 124; /* as timeout(1) and Tako VM report it */
        set_error(r, "execution_timeout", "execution", "Execution timed out after %u seconds",
                  job->timeout_s);
    } else if (oom) {
        r->status = "oom";
        set_error(r, "oom", "execution", "Out of memory: the job exceeded its %lld MiB limit",
                  (long long)(tk.cfg.limits_memory >> 20));
    } else if (code == 0) {
        r->status = "succeeded";
        r->error_phase = "completed";
        if (r->outputs.output_err[0])
            set_error(r, "output_error", "completed", "%s", r->outputs.output_err);
    } else {
        r->status = "failed";
        char type[64], msg[512];
        if (outputs_python_error(r->err.data, type, sizeof type, msg, sizeof msg))
            set_error(r, type, "execution", "%s", msg);
        else if (code == 137)
            set_error(r, "killed", "execution", "The program was killed (SIGKILL)");
        else if (code == 139)
            set_error(r, "segfault", "execution", "The program crashed (SIGSEGV)");
        else if (code > 128 && code < 160)
            set_error(r, "killed", "execution", "The program was killed by signal %d", code - 128);
        else
            set_error(r, "nonzero_exit", "execution", "The program exited with code %d", code);
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
static void build_result(const struct tk_job *job, struct run_result *r, json_t **response,
                         json_t **error_obj, json_t **timing)
{
    double queue_ms = ms_between(job->created_mono_us, r->t_popped_us);
    double startup_ms = ms_between(r->t_popped_us, r->t_started_us);
    double exec_ms = ms_between(r->t_started_us, r->t_exited_us);
    double total_ms = ms_between(job->created_mono_us, r->t_done_us);
    *timing = json_pack("{s:f, s:f, s:f, s:f}", "queue_ms", queue_ms, "startup_ms", startup_ms,
                        "execution_ms", exec_ms, "total_ms", total_ms);
    *error_obj = r->error_type[0]
                     ? json_pack("{s:s, s:s, s:s}", "type", r->error_type, "message", r->error_msg,
                                 "phase", r->error_phase ? r->error_phase : "execution")
                     : json_null();
    bool success = !strcmp(r->status, "succeeded");
    json_t *resp = json_object();
    json_object_set_new(resp, "success", json_boolean(success));
    json_object_set(resp, "output", r->outputs.output ? r->outputs.output : json_null());
    json_object_set_new(resp, "execution_time", json_real(exec_ms / 1000.0));
    json_object_set_new(resp, "stdout", json_text(&r->out));
    json_object_set_new(resp, "stderr", json_text(&r->err));
    json_object_set_new(resp, "exit_code", r->has_exit ? json_integer(r->exit_code) : json_null());
    json_object_set_new(resp, "error", r->error_type[0] ? json_string(r->error_msg) : json_null());
    json_object_set_new(resp, "error_type",
                        r->error_type[0] ? json_string(r->error_type) : json_null());
    json_object_set_new(resp, "job_type", json_string(job->job_type));
    json_object_set_new(resp, "execution_id", json_string(job->id));
    json_object_set_new(resp, "job_id", json_string(job->id));
    json_object_set_new(resp, "runtime", json_string("runc"));
    json_object_set_new(resp, "status", json_string(r->status));
    json_object_set(resp, "timing", *timing);
    json_object_set_new(resp, "stdout_truncated", json_boolean(r->out.truncated));
    json_object_set_new(resp, "stderr_truncated", json_boolean(r->err.truncated));
    json_object_set(resp, "artifacts", r->outputs.artifacts ? r->outputs.artifacts : json_array());
    *response = resp;
}

static void db_mark_running(struct exec_state *st, const struct tk_job *job)
{
    const char *p[1] = {job->id};
    PGresult *res = db_exec(st->db,
                            "UPDATE jobs SET status = 'running', started_at = now(),"
                            " attempt = attempt + 1 WHERE id = $1 AND status = 'queued'",
                            1, p);
    if (!res)
        log_error("msg=\"recording job start failed\" job=%s err=\"%s\"", job->id,
                  db_last_error(st->db));
    PQclear(res);
}

static void db_finish(struct exec_state *st, const struct tk_job *job, struct run_result *r,
                      json_t *resp, json_t *error_obj, json_t *timing)
{
    char exit_s[16], *out_json = NULL, *err_json, *timing_json, *art_json;
    snprintf(exit_s, sizeof exit_s, "%d", r->exit_code);
    if (r->outputs.output)
        out_json = json_dumps(r->outputs.output, JSON_COMPACT | JSON_ENCODE_ANY);
    err_json = json_dumps(error_obj, JSON_COMPACT | JSON_ENCODE_ANY);
    timing_json = json_dumps(timing, JSON_COMPACT);
    art_json = json_dumps(json_object_get(resp, "artifacts"), JSON_COMPACT);
    const char *p[13] = {
        job->id,
        r->status,
        r->has_exit ? exit_s : NULL,
        json_string_value(json_object_get(resp, "stdout")),
        json_string_value(json_object_get(resp, "stderr")),
        r->out.truncated ? "true" : "false",
        r->err.truncated ? "true" : "false",
        out_json,
        json_is_null(error_obj) ? NULL : err_json,
        timing_json,
        art_json,
        "runc",
        r->container_id[0] ? r->container_id : NULL,
    };
    PGresult *res = db_exec(
        st->db,
        "UPDATE jobs SET status = $2, ended_at = now(), exit_code = $3::integer, stdout = $4,"
        " stderr = $5, stdout_truncated = $6::boolean, stderr_truncated = $7::boolean,"
        " output = $8::jsonb, error = $9::jsonb, timing = $10::jsonb, artifacts = $11::jsonb,"
        " runtime = $12, container_id = $13,"
        " started_at = coalesce(started_at, now())"
        " WHERE id = $1 AND status IN ('queued', 'running')",
        13, p);
    if (!res)
        log_error("msg=\"recording job result failed\" job=%s err=\"%s\"", job->id,
                  db_last_error(st->db));
    PQclear(res);
    free(out_json);
    free(err_json);
    free(timing_json);
    free(art_json);
}

static void run_job(struct exec_state *st, uint32_t idx, uint32_t gen)
{
    struct tk_job *job = shm_job(tk.shm, idx);
    uint32_t expect = TK_JOB_QUEUED;
    if (atomic_load(&job->gen) != gen ||
        !atomic_compare_exchange_strong(&job->state, &expect, TK_JOB_RUNNING)) {
        log_debug("msg=\"stale job slot popped\" idx=%u gen=%u", idx, gen);
        ring_intent_clear_held(&st->me->intent);
        return;
    }
    atomic_store(&job->owner_pid, getpid());
    ring_intent_clear_held(&st->me->intent); /* the job table says who has it now */
    job->attempt++;
    atomic_fetch_add(&tk.shm->running, 1);

    struct run_result r;
    memset(&r, 0, sizeof r);
    r.t_popped_us = now_mono_us();
    r.started_real_us = now_real_us();
    capbuf_init(&r.out, (size_t)tk.cfg.limits_max_stdout_bytes);
    capbuf_init(&r.err, (size_t)tk.cfg.limits_max_stderr_bytes);
    r.outputs.artifacts = NULL;

    char dir[4096], outdir[4200];
    spool_job_dir(dir, sizeof dir, job->id);
    log_debug("msg=\"job started\" job=%s attempt=%u", job->id, job->attempt);
    if (job->attempt > 1) { /* a retry starts from an empty /output */
        snprintf(outdir, sizeof outdir, "%s/output", dir);
        rm_rf(outdir);
        unsigned uid = 1000, gid = 1000;
        sscanf(tk.cfg.docker_user, "%u:%u", &uid, &gid);
        if (mkdir_p(outdir, 0755) < 0 || chown(outdir, uid, gid) < 0)
            log_warn("msg=\"resetting the output dir failed\" job=%s dir=%s", job->id, outdir);
    }
    db_mark_running(st, job);
    run_container(st, job, dir, &r);
    r.t_done_us = now_mono_us();

    json_t *resp, *error_obj, *timing;
    build_result(job, &r, &resp, &error_obj, &timing);
    db_finish(st, job, &r, resp, error_obj, timing);

    char path[4200];
    snprintf(path, sizeof path, "%s/response.json", dir);
    char *text = json_dumps(resp, JSON_COMPACT | JSON_REAL_PRECISION(9));
    int wrc = text ? write_file(path, text, strlen(text), 0600) : -ENOMEM;
    if (wrc < 0)
        log_error("msg=\"writing the response failed\" job=%s path=%s err=\"%s\"", job->id, path,
                  strerror(-wrc));
    free(text);
    log_info("msg=\"job finished\" job=%s status=%s exit=%d queue_ms=%.1f startup_ms=%.1f "
             "exec_ms=%.1f total_ms=%.1f",
             job->id, r.status, r.exit_code, json_real_value(json_object_get(timing, "queue_ms")),
             json_real_value(json_object_get(timing, "startup_ms")),
             json_real_value(json_object_get(timing, "execution_ms")),
             json_real_value(json_object_get(timing, "total_ms")));
    json_decref(resp);
    json_decref(error_obj);
    json_decref(timing);

    atomic_store(&job->owner_pid, 0);
    atomic_fetch_sub(&tk.shm->running, 1);
    atomic_fetch_add(&st->me->jobs, 1);
    jobs_complete(idx, gen, &st->me->intent);

    /* After the reply is on its way: the container goes. */
    if (r.container_id[0] && docker_remove(st->docker, r.container_id) < 0)
        log_warn("msg=\"docker_remove failed\" container=%.12s err=\"%s\"", r.container_id,
                 docker_last_error(st->docker));
    capbuf_free(&r.out);
    capbuf_free(&r.err);
    outputs_free(&r.outputs);
}

int executor_main(int slot)
{
    struct exec_state st = {.slot = slot, .me = shm_proc(tk.shm, (uint32_t)tk.proc_idx)};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: blocking calls return EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    int rc = docker_open(&st.docker, tk.cfg.docker_socket);
    if (rc < 0) {
        log_error("msg=\"docker_open failed\" socket=%s err=\"%s\"", tk.cfg.docker_socket,
                  docker_last_error(NULL));
        return 1; /* infrastructure: the master respawns with backoff */
    }
    char err[512];
    if (db_open(&st.db, tk.conninfo, err, sizeof err) < 0) {
        log_error("msg=\"database connect failed\" err=\"%s\"", err);
        docker_close(st.docker);
        return 1;
    }
    atomic_store(&st.me->ready, 1);
    docker_set_abort_flag(st.docker, &stop_fast);
    log_info("msg=\"executor ready\" slot=%d docker_api=%s", slot, docker_api_version(st.docker));
    while (!stop_fast && !stop_graceful) {
        atomic_store(&st.me->heartbeat_ms, now_mono_ms());
        if (reopen_logs) {
            reopen_logs = 0;
            log_reopen();
        }
        uint64_t v;
        if (ring_pop_wait(shm_dispatch(tk.shm), &st.me->intent, &v, 500) != 0)
            continue;
        run_job(&st, shm_val_idx(v), shm_val_gen(v));
    }
    log_info("msg=\"executor stopping\" slot=%d", slot);
    db_close(st.db);
    docker_close(st.docker);
    return TK_EXIT_OK;
}
