/*
 * sessions.c — the sessions process (see sessions.h for its place, docs/SESSIONS.md for
 * the API it serves).
 *
 * Each session is one container made as a job's is (sandbox_prepare: the same defences,
 * either backend), whose launcher runs in session mode (image/launcher, SESSION MODE): it
 * keeps one Python interpreter and runs the cells it is sent. This process holds every
 * session's channel to its launcher (the go line, cells and interrupts out; live output,
 * `ready` and each cell's end in, parsed by session_proto.c) in one event loop, so an idle
 * session costs nothing here and a cell's path is: write the cell, relay its output, read
 * its end, answer.
 *
 * A session's states (its one writer is this file):
 *
 *   STARTING --ready--> READY --cell--> BUSY --cellend--> READY ... --end--> (gone)
 *
 * and ending from any state: DELETE (closed), idle or lifetime (expired), its container or
 * launcher gone or its channel malformed (lost), a start that failed (failed). An ended
 * session leaves memory at once; what it was stays in PostgreSQL (`sessions`, and its
 * audit record in `jobs`), which is what GET /sessions/{id} reads for it.
 *
 * Records: a session's row in `sessions` is written before its 201 (an answered session is
 * known to survive a crash of this process: the next one marks it lost) and when it ends;
 * each cell is a `jobs` row written whole after its answer is sent (the cell is not held
 * back by the database; the audit trigger chains the row). Nothing here waits for
 * PostgreSQL but the create.
 */
#include "sessions.h"
#include "http.h"
#include "tako/capbuf.h"
#include "tako/db.h"
#include "tako/dkframe.h"
#include "tako/jobstore.h"
#include "tako/jobtypes.h"
#include "tako/log.h"
#include "tako/sandbox.h"
#include "tako/sandbox_oci.h"
#include "tako/session_proto.h"
#include "tako/takod.h"
#include "tako/util.h"
#include "tako/wsfiles.h"

#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS          1000
#define KEEPALIVE_S      15
#define READY_TIMEOUT_MS 30000 /* the launcher's interpreter up, after the container started */
#define CELL_SLACK_MS    15000 /* past a cell's timeout: the launcher's interrupt, kill, restart */
#define REPLY_MAX        (1u << 20)
#define OUTPUT_JSON_MAX  (1u << 20)
#define BODY_MAX_JSON    (1u << 20)
#define RUN_UID          1000

enum sess_state { ST_STARTING, ST_READY, ST_BUSY };

struct watcher { /* GET /sessions/{id}/events */
    struct watcher *next;
    struct evhttp_request *req;
    struct session *s;
};

struct cell {
    struct evhttp_request *req; /* NULL once its client went away */
    char id[40];
    int n;
    char *code, *stdin_text;
    int timeout_ms;
    struct tk_capbuf out, err;
    uint64_t t0_us, created_real_us;
    char corr[72], client[64];
    char carry[2][4]; /* per stream: a character the last live chunk cut */
    size_t carry_len[2];
};

struct session {
    struct session *next;
    char id[40];
    char key_id[17];
    char job_type[64];
    char corr[72], client[64];
    enum sess_state state;
    struct warm w;
    char nonce[40];
    struct session_proto_parser parser;
    struct dkframe frames;
    struct event *rd_ev, *wr_ev, *start_ev;
    struct evbuffer *outq;
    int ws_fd;       /* the workspace (output/), O_PATH */
    json_t *ws_snap; /* what it held after the last cell or file call (files_changed) */
    uint64_t created_real_us, created_ms, last_ms, ready_deadline_ms;
    int idle_timeout, max_lifetime;
    int64_t memory;
    double cpus;
    int execution_count;
    struct cell *cell;
    uint64_t cell_deadline_ms;
    struct watcher *watchers;
    struct evhttp_request *create_req; /* answered 201 once ready and recorded */
    bool recorded;                     /* its `sessions` row is written */
    bool ending;
    /* inside the parser (its callbacks): an end waits until the feed has returned */
    bool in_feed;
    const char *doom_status;
    char doom_reason[200];
};

static struct {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct pgq *pg;
    struct docker *docker;
    struct sandbox_env env;
    struct tk_proc *me;
    struct session *list;
    int n_live;
    unsigned seq;
    bool stopping;
    struct event *tick_ev;
    uint64_t last_keepalive_ms;
    char sock[108];
} S;

/* ------------------------------------------------------------------ small helpers */

void sessions_socket_path(char *buf, size_t len)
{
    snprintf(buf, len, "/run/takod-sessions/%016llx.sock",
             (unsigned long long)str_hash(tk.instance));
}

struct who {
    const char *key; /* "" without authentication */
    bool admin;
    const char *client;
    char corr[72];
};

static void who_of(struct evhttp_request *req, struct who *w)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *k = evhttp_find_header(h, "X-Takod-Key");
    const char *a = evhttp_find_header(h, "X-Takod-Admin");
    const char *c = evhttp_find_header(h, "X-Takod-Client");
    const char *corr = evhttp_find_header(h, "X-Correlation-ID");
    w->key = k && strlen(k) < 17 ? k : "";
    w->admin = a && !strcmp(a, "1");
    w->client = c && strlen(c) < 64 ? c : "";
    if (corr && strlen(corr) < sizeof w->corr)
        snprintf(w->corr, sizeof w->corr, "%s", corr);
    else
        uuid_v4(w->corr);
}

static bool visible(const struct session *s, const struct who *w)
{
    return w->admin || !strcmp(s->key_id, w->key);
}

static void iso_us(uint64_t us, char *buf, size_t len)
{
    time_t t = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%06u+00:00", (unsigned)(us % 1000000u)); /* as to_json */
}

static struct session *find(const char *id)
{
    for (struct session *s = S.list; s; s = s->next)
        if (!strcmp(s->id, id))
            return s;
    return NULL;
}

static int live_of_key(const char *key)
{
    int n = 0;
    for (struct session *s = S.list; s; s = s->next)
        n += !strcmp(s->key_id, key);
    return n;
}

static const char *state_name(const struct session *s)
{
    return s->state == ST_BUSY ? "busy" : s->state == ST_READY ? "ready" : "starting";
}

/* ------------------------------------------------------------------ the answers */

/* A live session (GET /sessions, /sessions/{id}, the 201). */
static json_t *session_json(const struct session *s)
{
    char created[40], expires[40], idle[40];
    uint64_t now_ms = now_mono_ms(), now_us = now_real_us();
    iso_us(s->created_real_us, created, sizeof created);
    iso_us(s->created_real_us + (uint64_t)s->max_lifetime * 1000000u, expires, sizeof expires);
    uint64_t idle_at_ms = s->last_ms + (uint64_t)s->idle_timeout * 1000u;
    iso_us(now_us + (idle_at_ms > now_ms ? idle_at_ms - now_ms : 0) * 1000u, idle, sizeof idle);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:f, s:s, s:s, s:i, s:s, "
                     "s:s, s:n, s:n}",
                     "session_id", s->id, "status", state_name(s), "job_type", s->job_type,
                     "created_at", created, "expires_at", expires, "idle_expires_at", idle,
                     "idle_timeout", s->idle_timeout, "max_lifetime", s->max_lifetime,
                     "memory_bytes", (json_int_t)s->memory, "cpus", s->cpus, "runtime",
                     s->w.oci ? oci_runtime() : sandbox_runtime, "backend",
                     s->w.oci ? "oci" : "docker", "execution_count", s->execution_count,
                     "workspace", "/output", "node", tk.node, "ended_at", "end_reason");
}

/* An ended session, from its `sessions` row (SESSION_COLS). */
#define SESSION_COLS                                                                               \
    "id::text, status, job_type, to_json(created_at)#>>'{}', to_json(expires_at)#>>'{}',"          \
    " idle_timeout, max_lifetime, memory_bytes, cpus, runtime, backend, execution_count, node,"    \
    " to_json(ended_at)#>>'{}', end_reason, coalesce(api_key_id, '')"

static json_t *ended_json(const PGresult *r, int i)
{
    json_t *a = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:n, s:i, s:i, s:I, s:f, s:s?, s:s?, s:i, s:s, s:s, s:s?, s:s?}",
        "session_id", PQgetvalue(r, i, 0), "status", PQgetvalue(r, i, 1), "job_type",
        PQgetvalue(r, i, 2), "created_at", PQgetvalue(r, i, 3), "expires_at", PQgetvalue(r, i, 4),
        "idle_expires_at", "idle_timeout", atoi(PQgetvalue(r, i, 5)), "max_lifetime",
        atoi(PQgetvalue(r, i, 6)), "memory_bytes", (json_int_t)atoll(PQgetvalue(r, i, 7)), "cpus",
        atof(PQgetvalue(r, i, 8)), "runtime", PQgetisnull(r, i, 9) ? NULL : PQgetvalue(r, i, 9),
        "backend", PQgetisnull(r, i, 10) ? NULL : PQgetvalue(r, i, 10), "execution_count",
        atoi(PQgetvalue(r, i, 11)), "workspace", "/output", "node", PQgetvalue(r, i, 12),
        "ended_at", PQgetisnull(r, i, 13) ? NULL : PQgetvalue(r, i, 13), "end_reason",
        PQgetisnull(r, i, 14) ? NULL : PQgetvalue(r, i, 14));
    if (!strcmp(PQgetvalue(r, i, 1), "live")) /* its process died before it could say */
        json_object_set_new(a, "status", json_string("lost"));
    return a;
}

/* A live session as it is ending now (the shape of ended_json's), from memory. */
static json_t *ended_now(const struct session *s, const char *status, const char *reason)
{
    char ended[40];
    iso_us(now_real_us(), ended, sizeof ended);
    json_t *e = session_json(s);
    json_object_set_new(e, "status", json_string(status));
    json_object_set_new(e, "idle_expires_at", json_null());
    json_object_set_new(e, "ended_at", json_string(ended));
    json_object_set_new(e, "end_reason", json_string(reason));
    return e;
}

/* ------------------------------------------------------------------ SSE watchers */

static void sse_send(struct session *s, const char *event, json_t *data)
{
    if (!s->watchers) {
        json_decref(data);
        return;
    }
    /* the precision of reply_json's: a `result` event is the execute answer, byte for byte */
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
    json_decref(data);
    for (struct watcher *w = s->watchers; w; w = w->next) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "event: %s\ndata: %s\n\n", event, text ? text : "null");
        evhttp_send_reply_chunk(w->req, b);
        evbuffer_free(b);
    }
    free(text);
}

static void watcher_closed(struct evhttp_connection *c, void *arg)
{
    struct watcher *w = arg;
    for (struct watcher **pp = &w->s->watchers; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    free(w);
}

static void watchers_end(struct session *s)
{
    while (s->watchers) {
        struct watcher *w = s->watchers;
        s->watchers = w->next;
        evhttp_connection_set_closecb(evhttp_request_get_connection(w->req), NULL, NULL);
        evhttp_send_reply_end(w->req);
        free(w);
    }
}

/* ------------------------------------------------------------------ records */

static void on_recorded(const PGresult *res, const char *err, void *arg)
{
    char *what = arg;
    if (!res)
        log_error("msg=\"recording failed\" what=\"%s\" err=\"%s\"", what, err ? err : "");
    free(what);
}

static void exec_logged(const char *sql, int n, const char *const *p, const char *what)
{
    char *w = strdup(what);
    if (pgq_exec(S.pg, sql, n, p, on_recorded, w) < 0) {
        log_error("msg=\"recording failed: database unavailable\" what=\"%s\"", what);
        free(w);
    }
}

/* A session's audit record, written whole when it ends (mode 'session'). */
static void record_session_job(const char *id, const char *key, const char *job_type,
                               uint64_t created_us, int max_lifetime, int idle_timeout,
                               int64_t memory, double cpus, const char *runtime, const char *client,
                               const char *corr, int count, const char *status, const char *reason)
{
    char timeout_s[24], mem_s[24], cpus_s[32], created_s[32], ended_s[32], ch[65], ih[65];
    snprintf(timeout_s, sizeof timeout_s, "%d", max_lifetime);
    snprintf(mem_s, sizeof mem_s, "%lld", (long long)memory);
    snprintf(cpus_s, sizeof cpus_s, "%g", cpus);
    snprintf(created_s, sizeof created_s, "%llu", (unsigned long long)created_us);
    uint64_t ended = now_real_us();
    snprintf(ended_s, sizeof ended_s, "%llu", (unsigned long long)ended);
    json_t *in =
        json_pack("{s:i, s:i}", "idle_timeout", idle_timeout, "max_lifetime", max_lifetime);
    char *in_text = json_dumps(in, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(in);
    sha256_hex("", 0, ch);
    sha256_hex(in_text, strlen(in_text), ih);
    const char *jstatus = !strcmp(status, "closed")    ? "succeeded"
                          : !strcmp(status, "expired") ? "timeout"
                                                       : "failed";
    char etype[40];
    snprintf(etype, sizeof etype, "session_%s", status);
    json_t *error = json_pack("{s:s, s:s}", "type", etype, "message", reason);
    json_t *timing = json_pack("{s:f}", "total_ms", (double)(ended - created_us) / 1000.0);
    json_t *output = json_pack("{s:i}", "execution_count", count);
    struct job_row row = {.id = id,
                          .job_type = job_type,
                          .code = "",
                          .input = in_text,
                          .timeout_s = timeout_s,
                          .memory_bytes = mem_s,
                          .cpus = cpus_s,
                          .node = tk.node,
                          .client_ip = client && client[0] ? client : NULL,
                          .correlation_id = corr,
                          .created_at = created_s,
                          .mode = "session",
                          .code_hash = ch,
                          .input_hash = ih,
                          .api_key_id = key && key[0] ? key : NULL,
                          .status = jstatus,
                          .stdout_truncated = "false", /* NOT NULL: a session has no output */
                          .stderr_truncated = "false",
                          .output = output,
                          .error = error,
                          .timing = timing,
                          .runtime = runtime,
                          .ended_at = ended_s,
                          .started_at = created_s};
    struct jobstore_stmt st;
    jobstore_record_whole(&st, &row);
    exec_logged(st.sql, st.n, st.params, "a session's audit record");
    jobstore_stmt_free(&st);
    json_decref(error);
    json_decref(timing);
    json_decref(output);
    free(in_text);
}

static const char SQL_END[] =
    "UPDATE sessions SET status = $2, ended_at = now(), end_reason = $3, execution_count = $4"
    " WHERE id = $1::uuid AND status = 'live'";

/* ------------------------------------------------------------------ ending */

static void cell_free(struct cell *c)
{
    if (!c)
        return;
    free(c->code);
    free(c->stdin_text);
    capbuf_free(&c->out);
    capbuf_free(&c->err);
    free(c);
}

static void cell_client_gone(struct evhttp_connection *conn, void *arg)
{
    struct cell *c = arg;
    c->req = NULL; /* the cell runs on; its record is written; nobody to answer */
}

static void cell_detach(struct cell *c)
{
    if (c->req)
        evhttp_connection_set_closecb(evhttp_request_get_connection(c->req), NULL, NULL);
}

static void cell_finish(struct session *s, const struct session_proto_cellend *e,
                        const char *reply_bytes, size_t reply_len, const char *ended,
                        const char *ended_reason);

static void reply_gone(struct evhttp_request *req, const char *corr, const char *status,
                       const char *reason)
{
    char detail[400];
    snprintf(detail, sizeof detail, "The session has ended (%s): %s", status, reason);
    reply_json(req, 410, corr,
               json_pack("{s:s, s:s, s:s, s:s}", "detail", detail, "status", status, "end_reason",
                         reason, "correlation_id", corr));
}

/*
 * End s: answer what waits on it, tell its watchers, remove its container, record how it
 * ended, forget it. `status`: closed | expired | lost | failed.
 */
static void session_end(struct session *s, const char *status, const char *reason)
{
    if (s->ending)
        return;
    s->ending = true;
    log_info("msg=\"session ended\" session=%s status=%s reason=\"%s\" cells=%d", s->id, status,
             reason, s->execution_count);
    if (s->cell) { /* answered 410, and recorded as cut short */
        struct session_proto_cellend e = {.n = (uint64_t)s->cell->n,
                                          .exit_code = -1,
                                          .start_us = s->cell->t0_us,
                                          .end_us = now_mono_us()};
        cell_finish(s, &e, NULL, 0, status, reason);
    }
    if (s->create_req) {
        reply_error(s->create_req, 503, s->corr, reason);
        s->create_req = NULL;
    }
    if (s->watchers) /* `end`: the ended session, as GET /sessions/{id} will answer */
        sse_send(s, "end", ended_now(s, status, reason));
    watchers_end(s);
    if (s->start_ev)
        event_free(s->start_ev);
    if (s->rd_ev)
        event_free(s->rd_ev);
    if (s->wr_ev)
        event_free(s->wr_ev);
    if (s->outq)
        evbuffer_free(s->outq);
    if (s->ws_fd >= 0)
        close(s->ws_fd);
    session_proto_parser_free(&s->parser);
    json_decref(s->ws_snap);
    char dir[sizeof s->w.dir];
    snprintf(dir, sizeof dir, "%s", s->w.dir);
    sandbox_discard(S.docker, &s->w);
    if (dir[0])
        sandbox_release_dir(&S.env, dir);
    if (s->recorded) { /* a session never recorded was never answered: nothing to close */
        char count[16];
        snprintf(count, sizeof count, "%d", s->execution_count);
        const char *p[4] = {s->id, status, reason, count};
        exec_logged(SQL_END, 4, p, "a session's end");
        record_session_job(s->id, s->key_id, s->job_type, s->created_real_us, s->max_lifetime,
                           s->idle_timeout, s->memory, s->cpus,
                           s->w.oci ? oci_runtime() : sandbox_runtime, s->client, s->corr,
                           s->execution_count, status, reason);
    }
    for (struct session **pp = &S.list; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    S.n_live--;
    atomic_store(&tk.shm->sessions_live, (uint32_t)S.n_live);
    free(s);
}

/* End s now, or, from inside its parser's callbacks, as soon as the feed returns (the
 * parser and s must outlive the call that is parsing). */
static void session_doom(struct session *s, const char *status, const char *reason)
{
    if (!s->in_feed) {
        session_end(s, status, reason);
        return;
    }
    if (!s->doom_status) {
        s->doom_status = status;
        snprintf(s->doom_reason, sizeof s->doom_reason, "%s", reason);
    }
}

/* ------------------------------------------------------------------ the channel */

/* Write what is queued for the launcher. -EPIPE when its channel is gone: s has ended
 * (and is freed). */
static int chan_flush(struct session *s)
{
    int fd = s->w.in_fd >= 0 ? s->w.in_fd : s->w.fd;
    while (evbuffer_get_length(s->outq) > 0) {
        int n = evbuffer_write(s->outq, fd);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        if (n <= 0) {
            session_end(s, "lost", "the session's container went away");
            return -EPIPE;
        }
    }
    if (evbuffer_get_length(s->outq) > 0)
        event_add(s->wr_ev, NULL);
    return 0;
}

static void on_writable(evutil_socket_t fd, short ev, void *arg)
{
    (void)chan_flush(arg);
}

static void chan_send(struct session *s, const void *p, size_t n)
{
    evbuffer_add(s->outq, p, n);
}

/* the cell ended: build its row, answer, tell watchers, record it */
static void cell_finish(struct session *s, const struct session_proto_cellend *e,
                        const char *reply_bytes, size_t reply_len, const char *ended,
                        const char *ended_reason)
{
    struct cell *c = s->cell;
    s->cell = NULL;
    s->state = ST_READY;
    s->last_ms = now_mono_ms();
    uint64_t t_end = now_real_us();
    json_t *reply = NULL;
    if (reply_len > 0 && reply_len <= REPLY_MAX)
        reply = json_loadb(reply_bytes, reply_len, JSON_REJECT_DUPLICATES, NULL);
    const char *rs = json_string_value(json_object_get(reply, "status"));
    json_t *rerr = json_object_get(reply, "error");
    const char *status;
    json_t *error = NULL;
    char msg_ended[400];
    if (ended) { /* the session ends under it (DELETE, expiry, a lost container) */
        status = "interrupted";
        snprintf(msg_ended, sizeof msg_ended, "The session ended (%s) while the cell ran: %s",
                 ended, ended_reason);
        error = json_pack("{s:s, s:s, s:n}", "type", "session_ended", "message", msg_ended,
                          "traceback");
    } else if (e->timed_out) {
        status = "timeout";
        error = json_pack("{s:s, s:s, s:n}", "type", "execution_timeout", "message",
                          e->restarted ? "The cell ran past its timeout and could not be "
                                         "interrupted; the interpreter was restarted"
                                       : "The cell ran past its timeout and was interrupted",
                          "traceback");
    } else if (e->interrupted && !(rs && !strcmp(rs, "ok"))) { /* else it came too late */
        status = "interrupted";
        error = json_pack("{s:s, s:s, s:n}", "type", "KeyboardInterrupt", "message",
                          e->restarted ? "Interrupted; the interpreter did not stop and was "
                                         "restarted"
                                       : "Interrupted",
                          "traceback");
    }
    /* where the interrupt found the cell: the driver's own traceback, when it sent one */
    const char *rtb = json_string_value(json_object_get(rerr, "traceback"));
    if (error && rtb && (e->timed_out || e->interrupted) && !e->restarted)
        json_object_set_new(error, "traceback", json_stringn(rtb, strnlen(rtb, 262144)));
    if (error) {
        /* decided above: the session's end, the timeout or the interrupt */
    } else if ((!reply || !rs) && e->exit_code < 0 && !e->restarted) {
        /* the interpreter lives on, but what it said of the cell is unreadable */
        status = "error";
        error = json_pack("{s:s, s:s, s:n}", "type", "internal_error", "message",
                          e->reply_too_big ? "The cell's answer was larger than 1 MiB"
                                           : "The cell's answer could not be read",
                          "traceback");
    } else if (!reply || !rs) {
        status = "crashed";
        char msg[200];
        const char *type = e->oom ? "oom" : e->signal ? "killed" : "interpreter_exit";
        if (e->oom)
            snprintf(msg, sizeof msg, "The interpreter ran out of memory and was restarted");
        else if (e->signal)
            snprintf(msg, sizeof msg, "The interpreter was killed by signal %d and was restarted",
                     e->signal);
        else
            snprintf(msg, sizeof msg, "The interpreter exited (code %d) and was restarted",
                     e->exit_code);
        error = json_pack("{s:s, s:s, s:n}", "type", type, "message", msg, "traceback");
    } else if (!strcmp(rs, "error") && json_is_object(rerr)) {
        status = "error";
        const char *ty = json_string_value(json_object_get(rerr, "type"));
        const char *ms = json_string_value(json_object_get(rerr, "message"));
        const char *tb = json_string_value(json_object_get(rerr, "traceback"));
        error = json_pack("{s:s%, s:s%, s:s%}", "type", ty ? ty : "Exception",
                          ty ? strnlen(ty, 200) : 9, "message", ms ? ms : "",
                          ms ? strnlen(ms, 65536) : 0, "traceback", tb ? tb : "",
                          tb ? strnlen(tb, 262144) : 0);
    } else {
        status = "ok";
    }
    const char *value = json_string_value(json_object_get(reply, "value"));
    /* what the cell changed in the workspace, and result.json if among it */
    json_t *snap = NULL;
    json_t *changed = wsfiles_changed(s->ws_fd, s->ws_snap, &snap);
    json_decref(s->ws_snap);
    s->ws_snap = snap;
    json_t *output = NULL;
    size_t i;
    json_t *it;
    json_array_foreach(changed, i, it)
    {
        if (!strcmp(json_string_value(json_object_get(it, "path")), "result.json")) {
            char *data = NULL;
            size_t len = 0;
            if (wsfiles_get(s->ws_fd, "result.json", OUTPUT_JSON_MAX, &data, &len, NULL) == 0)
                output = json_loadb(data, len, 0, NULL);
            free(data);
        }
    }
    json_t *out =
        json_pack("{s:s, s:i, s:s%, s:b, s:o, s:o}", "cell_status", status, "execution_count", c->n,
                  "result", value ? value : "", value ? strnlen(value, 65536) : 0, "restarted",
                  e->restarted, "files_changed", changed, "output", output ? output : json_null());
    if (!value)
        json_object_set_new(out, "result", json_null());
    double exec_ms = e->end_us > e->start_us ? (double)(e->end_us - e->start_us) / 1000.0 : 0;
    json_t *timing = json_pack("{s:f, s:f}", "execution_ms", exec_ms, "total_ms",
                               (double)(now_mono_us() - c->t0_us) / 1000.0);
    /* the row: one builder (cell_answer) for this answer and the history */
    char id_in[160], timeout_s[24], mem_s[24], cpus_s[32], created_s[32], ended_s[32], exit_s[16],
        ch[65], ih[65];
    snprintf(id_in, sizeof id_in, "{\"execution_count\": %d, \"session_id\": \"%s\"}", c->n, s->id);
    snprintf(timeout_s, sizeof timeout_s, "%d", (c->timeout_ms + 999) / 1000);
    snprintf(mem_s, sizeof mem_s, "%lld", (long long)s->memory);
    snprintf(cpus_s, sizeof cpus_s, "%g", s->cpus);
    snprintf(created_s, sizeof created_s, "%llu", (unsigned long long)c->created_real_us);
    snprintf(ended_s, sizeof ended_s, "%llu", (unsigned long long)t_end);
    snprintf(exit_s, sizeof exit_s, "%d", e->exit_code);
    sha256_hex(c->code, strlen(c->code), ch);
    sha256_hex(id_in, strlen(id_in), ih);
    bool out_trunc = e->stdout_truncated || c->out.truncated;
    bool err_trunc = e->stderr_truncated || c->err.truncated;
    size_t ol, el;
    char *so = utf8_sanitize(c->out.data ? c->out.data : "", c->out.len, &ol);
    char *se = utf8_sanitize(c->err.data ? c->err.data : "", c->err.len, &el);
    const char *jstatus = !strcmp(status, "ok")            ? "succeeded"
                          : !strcmp(status, "timeout")     ? "timeout"
                          : !strcmp(status, "interrupted") ? "cancelled"
                          : e->oom                         ? "oom"
                                                           : "failed";
    struct job_row row = {.id = c->id,
                          .job_type = s->job_type,
                          .code = c->code,
                          .input = id_in,
                          .timeout_s = timeout_s,
                          .memory_bytes = mem_s,
                          .cpus = cpus_s,
                          .node = tk.node,
                          .client_ip = c->client[0] ? c->client : NULL,
                          .correlation_id = c->corr,
                          .created_at = created_s,
                          .mode = "cell",
                          .parent_id = s->id,
                          .relationship = "session",
                          .code_hash = ch,
                          .input_hash = ih,
                          .stdin = c->stdin_text,
                          .api_key_id = s->key_id[0] ? s->key_id : NULL,
                          .status = jstatus,
                          .exit_code = e->exit_code >= 0 ? exit_s : NULL,
                          .stdout = so ? so : "",
                          .stderr = se ? se : "",
                          .stdout_truncated = out_trunc ? "true" : "false",
                          .stderr_truncated = err_trunc ? "true" : "false",
                          .output = out,
                          .error = error,
                          .timing = timing,
                          .runtime = s->w.oci ? oci_runtime() : sandbox_runtime,
                          .ended_at = ended_s,
                          .started_at = created_s};
    json_t *answer = cell_answer(&row);
    if (c->req) {
        cell_detach(c);
        if (ended)
            reply_gone(c->req, c->corr, ended, ended_reason);
        else
            reply_json(c->req, 200, c->corr, json_incref(answer));
    }
    sse_send(s, "result", answer);
    struct jobstore_stmt st;
    jobstore_record_whole(&st, &row);
    exec_logged(st.sql, st.n, st.params, "a cell's record");
    jobstore_stmt_free(&st);
    free(so);
    free(se);
    json_decref(out);
    json_decref(error);
    json_decref(timing);
    json_decref(reply);
    cell_free(c);
}

static void maybe_created(struct session *s);

static void on_ready(void *arg)
{
    struct session *s = arg;
    if (s->state != ST_STARTING)
        return;
    s->state = ST_READY;
    s->last_ms = now_mono_ms();
    log_info("msg=\"session ready\" session=%s ms=%llu", s->id,
             (unsigned long long)(now_mono_ms() - s->created_ms));
    maybe_created(s);
}

/* The bytes at the end of p[0..n) that start a UTF-8 character not yet complete (0-3). */
static size_t utf8_tail(const char *p, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = (unsigned char)p[n - k];
        if ((c & 0xc0) == 0x80)
            continue;
        size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

/* Live output: kept in the cell's buffers, and relayed to watchers in whole characters (a
 * character the launcher's chunk cut waits for the rest of it). */
static void on_out(void *arg, int stream, const char *p, size_t n)
{
    struct session *s = arg;
    if (!s->cell)
        return; /* between cells: dropped */
    struct cell *c = s->cell;
    capbuf_append(stream == 2 ? &c->err : &c->out, p, n);
    if (!s->watchers)
        return;
    int i = stream == 2;
    char *buf = malloc(c->carry_len[i] + n);
    if (!buf)
        return;
    memcpy(buf, c->carry[i], c->carry_len[i]);
    memcpy(buf + c->carry_len[i], p, n);
    size_t all = c->carry_len[i] + n, tail = utf8_tail(buf, all);
    memcpy(c->carry[i], buf + all - tail, tail);
    c->carry_len[i] = tail;
    size_t len;
    char *t = utf8_sanitize(buf, all - tail, &len);
    if (all > tail)
        sse_send(s, i ? "stderr" : "stdout", json_stringn(t ? t : "", t ? len : 0));
    free(t);
    free(buf);
}

static void on_cellend(void *arg, const struct session_proto_cellend *e, const char *reply,
                       size_t reply_len)
{
    struct session *s = arg;
    if (!s->cell || e->n != (uint64_t)s->cell->n) {
        session_doom(s, "lost", "the session's launcher sent a cell end nobody asked for");
        return;
    }
    cell_finish(s, e, reply, reply_len, NULL, NULL);
}

static void on_chan_error(void *arg, const char *why)
{
    struct session *s = arg;
    log_warn("msg=\"session channel malformed\" session=%s why=\"%s\"", s->id, why);
    session_doom(s, "lost", "the session's launcher sent something malformed");
}

static void on_exit_status(void *arg, const struct session_proto_status *st)
{
    struct session *s = arg;
    log_warn("msg=\"session launcher exited\" session=%s exit_code=%d error=\"%s\"", s->id,
             st->exit_code, st->error);
    session_doom(s, "lost", "the session's interpreter host exited");
}

static const struct session_proto_callbacks chan_cbs = {
    .ready = on_ready,
    .out = on_out,
    .cellend = on_cellend,
    .status = on_exit_status,
    .error = on_chan_error,
};

static int frame_sink(void *arg, int stream, const char *p, size_t n)
{
    struct session *s = arg;
    if (stream != 1)
        return 0; /* the launcher's stderr carries nothing we read */
    return session_proto_feed(&s->parser, p, n) < 0 ? -EPROTO : 0;
}

static void on_readable(evutil_socket_t fd, short ev, void *arg)
{
    struct session *s = arg;
    char buf[65536];
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            session_end(s, "lost", "the session's container went away");
            return;
        }
        s->in_feed = true;
        int rc = s->w.oci ? session_proto_feed(&s->parser, buf, (size_t)n)
                          : dkframe_feed(&s->frames, buf, (size_t)n, frame_sink, s);
        s->in_feed = false;
        if (s->doom_status) { /* a callback ended it */
            session_end(s, s->doom_status, s->doom_reason);
            return;
        }
        if (rc < 0) {
            log_warn("msg=\"session channel malformed\" session=%s why=\"%s\"", s->id,
                     s->w.oci ? "the launcher's protocol" : "not the engine's framing");
            session_end(s, "lost", "the session's launcher sent something malformed");
            return;
        }
    }
}

/* ------------------------------------------------------------------ create */

static const char *const CREATE_FIELDS[] = {
    "job_type", "idle_timeout", "max_lifetime", "memory", "cpus", "env", NULL};

#define ENV_MAX_VARS  16
#define ENV_MAX_VALUE 256
#define ENV_MAX_TEXT  2048

/* A session's own environment, {NAME: value}, as the job type's "K=V, K=V" list: names
 * [A-Z_][A-Z0-9_]* (not TAKO_*, PYTHON*, LD_*, PATH, HOME, LANG), values of at most 256
 * printable bytes without a comma (the list's separator) or surrounding blanks. NULL, or
 * why it is not one. */
static const char *env_text(const json_t *env, char *out, size_t outlen)
{
    if (!json_is_object(env))
        return "env must be an object of strings";
    if (json_object_size(env) > ENV_MAX_VARS)
        return "env may name at most 16 variables";
    size_t used = 0;
    out[0] = '\0';
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)env, k, v)
    {
        size_t kl = strlen(k);
        bool ok = kl > 0 && kl <= 64 && ((k[0] >= 'A' && k[0] <= 'Z') || k[0] == '_');
        for (size_t i = 0; ok && i < kl; i++)
            ok = (k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_';
        if (!ok)
            return "env names must match [A-Z_][A-Z0-9_]* (at most 64)";
        if (!strncmp(k, "TAKO_", 5) || !strncmp(k, "PYTHON", 6) || !strncmp(k, "LD_", 3) ||
            !strcmp(k, "PATH") || !strcmp(k, "HOME") || !strcmp(k, "LANG"))
            return "env may not set TAKO_*, PYTHON*, LD_*, PATH, HOME or LANG";
        const char *val = json_string_value(v);
        if (!val)
            return "env values must be strings";
        size_t vl = strlen(val);
        if (vl > ENV_MAX_VALUE || vl != json_string_length(v))
            return "env values are at most 256 bytes, without NUL";
        for (size_t i = 0; i < vl; i++)
            if ((unsigned char)val[i] < 0x20 || val[i] == 0x7f || val[i] == ',')
                return "env values may not hold a comma or a control character";
        if (vl && (val[0] == ' ' || val[vl - 1] == ' '))
            return "env values may not start or end with a blank";
        int n = snprintf(out + used, outlen - used, "%s%s=%s", used ? ", " : "", k, val);
        if (n < 0 || (size_t)n >= outlen - used)
            return "env is longer than 2048 bytes in all";
        used += (size_t)n;
    }
    return NULL;
}

static int parse_memory(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    const char *t = json_string_value(v);
    if (!t || !*t)
        return -EINVAL;
    char *end;
    errno = 0;
    double x = strtod(t, &end);
    if (errno || end == t || x <= 0)
        return -EINVAL;
    double mul = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1048576.0;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1073741824.0;
        end++;
        break;
    default:
        break;
    }
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return -EINVAL;
    *out = (int64_t)(x * mul);
    return 0;
}

static void on_session_row(const PGresult *res, const char *err, void *arg);
static void on_started(evutil_socket_t fd, short what, void *arg);
static void session_started(struct session *s);

static void api_create(struct evhttp_request *req, const struct who *w)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    int code = 0;
    json_t *fail = NULL;
    json_t *body = body_parse(len ? (const char *)evbuffer_pullup(in, -1) : "", len, true, w->corr,
                              &code, &fail);
    if (!body) {
        reply_json(req, code, w->corr, fail);
        return;
    }
    json_t *errors = json_array();
    check_known_fields(body, CREATE_FIELDS, errors);
    const char *jt_name = "default";
    json_t *v = json_object_get(body, "job_type");
    if (v && !json_is_string(v))
        field_error(errors, "body", "job_type", "string_type", "Input should be a valid string");
    else if (v)
        jt_name = json_string_value(v);
    const struct tk_job_type *jt = jobtype_lookup(&tk.cfg, jt_name, NULL);
    if (!jt && json_is_string(v))
        field_error(errors, "body", "job_type", "value_error", "Unknown job_type");
    else if (jt && jt->network_enabled)
        field_error(errors, "body", "job_type", "value_error",
                    "Sessions cannot use a job type with network access");
    long long maxl = tk.cfg.sessions_max_lifetime;
    long long idle = tk.cfg.sessions_idle_timeout < maxl ? tk.cfg.sessions_idle_timeout : maxl;
    long long life = maxl;
    struct {
        const char *name;
        long long *dst;
    } ints[] = {{"idle_timeout", &idle}, {"max_lifetime", &life}};
    for (size_t i = 0; i < 2; i++) {
        json_t *x = json_object_get(body, ints[i].name);
        if (!x)
            continue;
        if (!json_is_integer(x) || json_integer_value(x) < 1 || json_integer_value(x) > maxl) {
            char msg[120];
            snprintf(msg, sizeof msg,
                     "Input should be an integer from 1 to %lld (sessions.max_lifetime)", maxl);
            field_error(errors, "body", ints[i].name, "value_error", msg);
        } else {
            *ints[i].dst = json_integer_value(x);
        }
    }
    int64_t memory = jt ? jt->memory_limit : tk.cfg.limits_memory;
    double cpus = jt ? jt->cpu_limit : tk.cfg.limits_cpus;
    json_t *m = json_object_get(body, "memory");
    if (m) {
        int64_t want;
        if (parse_memory(m, &want) < 0 || want < 6291456 || want > memory)
            field_error(errors, "body", "memory", "value_error",
                        "memory must be like \"256m\" or bytes, at least 6m and at most the job "
                        "type's memory");
        else
            memory = want;
    }
    json_t *c = json_object_get(body, "cpus");
    if (c) {
        if (!json_is_number(c) || json_number_value(c) <= 0 || json_number_value(c) > cpus)
            field_error(errors, "body", "cpus", "value_error",
                        "cpus must be a number above 0, at most the job type's");
        else
            cpus = json_number_value(c);
    }
    char env_own[ENV_MAX_TEXT + 1] = "";
    json_t *je = json_object_get(body, "env");
    if (je && !json_is_null(je)) {
        const char *why = env_text(je, env_own, sizeof env_own);
        if (why)
            field_error(errors, "body", "env", "value_error", why);
    }
    if (json_array_size(errors) > 0) {
        json_decref(body);
        reply_422(req, w->corr, errors);
        return;
    }
    json_decref(errors);
    if (tk.cfg.sessions_max_total == 0) {
        json_decref(body);
        reply_error(req, 503, w->corr, "Sessions are turned off (sessions.max_total = 0)");
        return;
    }
    if (S.stopping) {
        json_decref(body);
        reply_error(req, 503, w->corr, "takod is shutting down; try again");
        return;
    }
    if (S.n_live >= tk.cfg.sessions_max_total) {
        json_decref(body);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
        reply_error(req, 503, w->corr,
                    "The server holds as many sessions as it may (sessions.max_total); try again "
                    "later");
        return;
    }
    if (live_of_key(w->key) >= tk.cfg.sessions_max_per_key) {
        json_decref(body);
        char detail[160];
        snprintf(detail, sizeof detail,
                 "Quota exceeded: this key already has %d live sessions (sessions.max_per_key)",
                 live_of_key(w->key));
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "5");
        reply_error(req, 429, w->corr, detail);
        return;
    }
    if (!pgq_connected(S.pg)) {
        json_decref(body);
        reply_db_unavailable(req, w->corr, "Database unavailable; the session was not created");
        return;
    }
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(body);
        reply_error(req, 500, w->corr, "Out of memory");
        return;
    }
    uuid_v4(s->id);
    snprintf(s->key_id, sizeof s->key_id, "%s", w->key);
    snprintf(s->job_type, sizeof s->job_type, "%s", jt->name);
    snprintf(s->corr, sizeof s->corr, "%s", w->corr);
    snprintf(s->client, sizeof s->client, "%s", w->client);
    json_decref(body);
    s->idle_timeout = (int)idle;
    s->max_lifetime = (int)life;
    s->memory = memory;
    s->cpus = cpus;
    s->ws_fd = -1;
    s->state = ST_STARTING;
    sandbox_warm_init(&s->w);
    s->next = S.list;
    S.list = s;
    S.n_live++;
    atomic_store(&tk.shm->sessions_live, (uint32_t)S.n_live);

    char image[256];
    jobtype_image(&tk.cfg, jt, "latest", image, sizeof image);
    struct sandbox_spec spec;
    sandbox_type_spec(&spec, jt, image);
    spec.memory = memory;
    spec.cpus = cpus;
    char env_all[ENV_MAX_TEXT + 4200];
    if (env_own[0]) { /* the job type's, then the session's own (a later one wins) */
        snprintf(env_all, sizeof env_all, "%s%s%s", spec.env && *spec.env ? spec.env : "",
                 spec.env && *spec.env ? ", " : "", env_own);
        spec.env = env_all;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/s%d-%x-%u", tk.slots_dir, tk.proc_idx,
             (unsigned)(now_real_us() & 0xffffff), ++S.seq);
    s->created_ms = now_mono_ms();
    /* until its container runs, its start's own timeout (start_ev) is the bound */
    s->ready_deadline_ms = s->created_ms + (uint64_t)jt->startup_timeout * 1000u + READY_TIMEOUT_MS;
    s->create_req = req; /* an end from here on answers it */
    /* the start is awaited in the loop (its answer on start_fd), not here: other sessions'
     * cells go on meanwhile */
    int rc = sandbox_prepare_async(S.docker, &S.env, &s->w, dir, &spec);
    if (rc < 0) {
        log_error("msg=\"starting a session's container failed\" session=%s err=\"%s\"", s->id,
                  docker_last_error(S.docker));
        session_end(s, "failed", "its container could not be started; try again later");
        return;
    }
    if (s->w.start_fd < 0) {
        session_started(s);
        return;
    }
    s->start_ev = event_new(S.base, s->w.start_fd, EV_READ, on_started, s);
    struct timeval tv = {jt->startup_timeout, 0};
    if (!s->start_ev || event_add(s->start_ev, &tv) < 0)
        session_end(s, "failed", "its container's start could not be awaited");
}

static void on_started(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    event_free(s->start_ev);
    s->start_ev = NULL;
    if (what & EV_TIMEOUT) {
        session_end(s, "failed", "its container did not start in time (startup_timeout)");
        return;
    }
    if (sandbox_started(S.docker, &s->w, 1000) < 0) {
        log_error("msg=\"starting a session's container failed\" session=%s err=\"%s\"", s->id,
                  docker_last_error(S.docker));
        session_end(s, "failed", "its container could not be started; try again later");
        return;
    }
    session_started(s);
}

/* Its container runs: open its workspace and channel, send the go line, record it. */
static void session_started(struct session *s)
{
    char ws[4300];
    snprintf(ws, sizeof ws, "%s/output", s->w.dir);
    s->ws_fd = open(ws, O_PATH | O_DIRECTORY | O_CLOEXEC);
    uuid_v4(s->nonce);
    s->nonce[8] = s->nonce[13] = s->nonce[18] = s->nonce[23] = 'x';
    session_proto_parser_init(&s->parser, s->nonce, &chan_cbs, s);
    int rfd = s->w.fd, wfd = s->w.in_fd >= 0 ? s->w.in_fd : s->w.fd;
    fcntl(rfd, F_SETFL, fcntl(rfd, F_GETFL) | O_NONBLOCK);
    fcntl(wfd, F_SETFL, fcntl(wfd, F_GETFL) | O_NONBLOCK);
    s->outq = evbuffer_new();
    s->rd_ev = event_new(S.base, rfd, EV_READ | EV_PERSIST, on_readable, s);
    s->wr_ev = event_new(S.base, wfd, EV_WRITE, on_writable, s);
    if (s->ws_fd < 0 || !s->outq || !s->rd_ev || !s->wr_ev) {
        session_end(s, "failed", "its workspace or channel could not be set up");
        return;
    }
    event_add(s->rd_ev, NULL);
    char go[256];
    int n = session_proto_go_line(go, sizeof go, s->nonce, (uint64_t)tk.cfg.limits_timeout * 1000u,
                                  (uint64_t)tk.cfg.limits_max_stdout_bytes,
                                  (uint64_t)tk.cfg.limits_max_stderr_bytes);
    if (n < 0) {
        session_end(s, "failed", "its go line could not be made");
        return;
    }
    chan_send(s, go, (size_t)n);
    if (chan_flush(s) < 0)
        return; /* ended (and answered) */
    s->created_real_us = now_real_us();
    s->last_ms = now_mono_ms();
    s->ready_deadline_ms = s->last_ms + READY_TIMEOUT_MS;
    /* the durable record first; the 201 once it is written and the interpreter is up */
    char created[32], exp_s[32], idle_s[16], life_s[16], mem_s[24], cpus_s[32];
    snprintf(created, sizeof created, "%llu", (unsigned long long)s->created_real_us);
    snprintf(exp_s, sizeof exp_s, "%llu",
             (unsigned long long)(s->created_real_us + (uint64_t)s->max_lifetime * 1000000u));
    snprintf(idle_s, sizeof idle_s, "%d", s->idle_timeout);
    snprintf(life_s, sizeof life_s, "%d", s->max_lifetime);
    snprintf(mem_s, sizeof mem_s, "%lld", (long long)s->memory);
    snprintf(cpus_s, sizeof cpus_s, "%g", s->cpus);
    const char *p[13] = {s->id,
                         tk.node,
                         s->key_id[0] ? s->key_id : NULL,
                         s->job_type,
                         created,
                         exp_s,
                         idle_s,
                         life_s,
                         mem_s,
                         cpus_s,
                         s->w.oci ? oci_runtime() : sandbox_runtime,
                         s->w.oci ? "oci" : "docker",
                         s->client[0] ? s->client : NULL};
    static const char sql[] =
        "INSERT INTO sessions (id, node, api_key_id, job_type, status, created_at, expires_at,"
        " idle_timeout, max_lifetime, memory_bytes, cpus, runtime, backend, client_ip,"
        " correlation_id) VALUES ($1::uuid, $2, $3, $4, 'live',"
        " to_timestamp($5::double precision / 1e6), to_timestamp($6::double precision / 1e6),"
        " $7::integer, $8::integer, $9::bigint, $10::double precision, $11, $12, $13, $14)";
    const char *p14[14];
    memcpy(p14, p, sizeof p);
    p14[13] = s->corr;
    char *id = strdup(s->id);
    if (!id || pgq_exec(S.pg, sql, 14, p14, on_session_row, id) < 0) {
        free(id);
        session_end(s, "failed", "the database is unavailable; try again later");
    }
}

/* Answer the create once both are true: the row is written and the interpreter is up. */
static void maybe_created(struct session *s)
{
    if (!s->create_req || s->state == ST_STARTING || !s->recorded)
        return;
    struct evhttp_request *req = s->create_req;
    s->create_req = NULL;
    reply_json(req, 201, s->corr, session_json(s));
}

static void on_session_row(const PGresult *res, const char *err, void *arg)
{
    char *id = arg;
    struct session *s = find(id);
    if (!s) { /* it ended while its row was on its way: close the row too */
        if (res) {
            const char *p[4] = {id, "failed", "it ended while starting", "0"};
            exec_logged(SQL_END, 4, p, "a session's end");
        }
        free(id);
        return;
    }
    free(id);
    if (!res) {
        log_error("msg=\"recording a session failed\" session=%s err=\"%s\"", s->id,
                  err ? err : "");
        session_end(s, "failed", "the database is unavailable; try again later");
        return;
    }
    s->recorded = true;
    maybe_created(s);
}

/* ------------------------------------------------------------------ cells */

static const char *const EXEC_FIELDS[] = {"code", "timeout", "stdin", NULL};

static void api_execute(struct evhttp_request *req, const struct who *w, struct session *s)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    int code = 0;
    json_t *fail = NULL;
    json_t *body = body_parse(len ? (const char *)evbuffer_pullup(in, -1) : "", len, false, w->corr,
                              &code, &fail);
    if (!body) {
        reply_json(req, code, w->corr, fail);
        return;
    }
    json_t *errors = json_array();
    check_known_fields(body, EXEC_FIELDS, errors);
    json_t *jc = json_object_get(body, "code");
    if (!jc)
        field_error(errors, "body", "code", "missing", "Field required");
    else if (!json_is_string(jc))
        field_error(errors, "body", "code", "string_type", "Input should be a valid string");
    else if (json_string_length(jc) == 0 ||
             json_string_length(jc) > (size_t)tk.cfg.limits_max_code_bytes ||
             memchr(json_string_value(jc), 0, json_string_length(jc)))
        field_error(errors, "body", "code", "value_error",
                    "code must be 1 .. limits.max_code_bytes bytes without NUL");
    const struct tk_job_type *jt = jobtype_lookup(&tk.cfg, s->job_type, NULL);
    long long timeout = jt ? jt->timeout : tk.cfg.limits_timeout;
    json_t *jto = json_object_get(body, "timeout");
    if (jto) {
        if (!json_is_integer(jto) || json_integer_value(jto) < 1 ||
            json_integer_value(jto) > tk.cfg.limits_max_timeout)
            field_error(errors, "body", "timeout", "value_error",
                        "timeout must be an integer from 1 to limits.max_timeout");
        else
            timeout = json_integer_value(jto);
    }
    json_t *jin = json_object_get(body, "stdin");
    if (jin && !json_is_null(jin) &&
        (!json_is_string(jin) || json_string_length(jin) > (size_t)tk.cfg.limits_max_input_bytes))
        field_error(errors, "body", "stdin", "value_error",
                    "stdin must be a string of at most limits.max_input_bytes");
    if (json_array_size(errors) > 0) {
        json_decref(body);
        reply_422(req, w->corr, errors);
        return;
    }
    json_decref(errors);
    if (s->state == ST_BUSY) {
        json_decref(body);
        char detail[120];
        snprintf(detail, sizeof detail,
                 "The session is running cell %d; wait for its answer or interrupt it",
                 s->cell ? s->cell->n : s->execution_count);
        reply_error(req, 409, w->corr, detail);
        return;
    }
    if (s->state == ST_STARTING) {
        json_decref(body);
        reply_error(req, 409, w->corr, "The session is still starting");
        return;
    }
    struct cell *c = calloc(1, sizeof *c);
    if (!c) {
        json_decref(body);
        reply_error(req, 500, w->corr, "Out of memory");
        return;
    }
    c->code = strdup(json_string_value(jc));
    c->stdin_text = json_is_string(jin) ? strdup(json_string_value(jin)) : NULL;
    json_decref(body);
    uuid_v4(c->id);
    c->n = ++s->execution_count;
    c->timeout_ms = (int)timeout * 1000;
    c->req = req;
    snprintf(c->corr, sizeof c->corr, "%s", w->corr);
    snprintf(c->client, sizeof c->client, "%s", w->client);
    capbuf_init(&c->out, (size_t)tk.cfg.limits_max_stdout_bytes);
    capbuf_init(&c->err, (size_t)tk.cfg.limits_max_stderr_bytes);
    c->t0_us = now_mono_us();
    c->created_real_us = now_real_us();
    s->cell = c;
    s->state = ST_BUSY;
    s->last_ms = now_mono_ms();
    s->cell_deadline_ms = s->last_ms + (uint64_t)c->timeout_ms + CELL_SLACK_MS;
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), cell_client_gone, c);
    char head[256];
    size_t code_len = strlen(c->code), stdin_len = c->stdin_text ? strlen(c->stdin_text) : 0;
    struct session_proto_cell pc = {.n = (uint64_t)c->n,
                                    .timeout_ms = (uint64_t)c->timeout_ms,
                                    .stdout_cap = (uint64_t)tk.cfg.limits_max_stdout_bytes,
                                    .stderr_cap = (uint64_t)tk.cfg.limits_max_stderr_bytes,
                                    .code_len = code_len,
                                    .stdin_len = stdin_len};
    int n = session_proto_cell_header(head, sizeof head, &pc);
    if (n < 0) { /* bounded above already: cannot happen */
        n = 0;
    }
    sse_send(s, "cell", json_pack("{s:s, s:i}", "session_id", s->id, "execution_count", c->n));
    chan_send(s, head, (size_t)n);
    chan_send(s, c->code, code_len);
    if (stdin_len)
        chan_send(s, c->stdin_text, stdin_len);
    chan_flush(s);
}

static void api_interrupt(struct evhttp_request *req, const struct who *w, struct session *s)
{
    bool running = s->state == ST_BUSY && s->cell;
    if (running) {
        char line[32];
        int n = session_proto_interrupt_line(line, sizeof line);
        chan_send(s, line, (size_t)n);
        chan_flush(s);
    }
    reply_json(req, 200, w->corr, json_pack("{s:b}", "interrupted", running));
}

/* ------------------------------------------------------------------ reads from PostgreSQL */

struct pending_read {
    struct evhttp_request *req;
    char corr[72];
    char key[17];
    bool admin;
    long long limit, offset;
    char id[40];
};

static void on_ended_session(const PGresult *res, const char *err, void *arg)
{
    struct pending_read *r = arg;
    if (!res)
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
    else if (PQntuples(res) != 1 || (!r->admin && strcmp(PQgetvalue(res, 0, 15), r->key) != 0))
        reply_error(r->req, 404, r->corr, "Session not found");
    else
        reply_json(r->req, 200, r->corr, ended_json(res, 0));
    free(r);
}

static void on_ended_for_action(const PGresult *res, const char *err, void *arg)
{
    struct pending_read *r = arg;
    if (!res)
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
    else if (PQntuples(res) != 1 || (!r->admin && strcmp(PQgetvalue(res, 0, 15), r->key) != 0))
        reply_error(r->req, 404, r->corr, "Session not found");
    else if (!strcmp(PQgetvalue(res, 0, 1), "live") && strcmp(PQgetvalue(res, 0, 12), tk.node)) {
        /* several nodes: a session's container and interpreter are on the node that made
         * it; its requests must go there (docs/SESSIONS.md, "Several nodes") */
        char detail[700];
        snprintf(detail, sizeof detail,
                 "Session %s lives on node %s: send its requests to that node", r->id,
                 PQgetvalue(res, 0, 12));
        reply_json(r->req, 421, r->corr,
                   json_pack("{s:s, s:s, s:s}", "detail", detail, "node", PQgetvalue(res, 0, 12),
                             "correlation_id", r->corr));
    } else {
        json_t *e = ended_json(res, 0);
        reply_gone(r->req, r->corr, json_string_value(json_object_get(e, "status")),
                   json_string_value(json_object_get(e, "end_reason"))
                       ? json_string_value(json_object_get(e, "end_reason"))
                       : "its process died");
        json_decref(e);
    }
    free(r);
}

static struct pending_read *pending(struct evhttp_request *req, const struct who *w, const char *id)
{
    struct pending_read *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->req = req;
    snprintf(r->corr, sizeof r->corr, "%s", w->corr);
    snprintf(r->key, sizeof r->key, "%s", w->key);
    r->admin = w->admin;
    snprintf(r->id, sizeof r->id, "%s", id);
    return r;
}

/* A session not live here: 404, or what PostgreSQL says of it (an answer, or 410 when
 * `action` asks something of it). */
static void not_live(struct evhttp_request *req, const struct who *w, const char *id, bool action)
{
    if (!uuid_valid(id)) {
        reply_error(req, 404, w->corr, "Session not found");
        return;
    }
    struct pending_read *r = pending(req, w, id);
    const char *p[1] = {id};
    if (!r || pgq_exec(S.pg, "SELECT " SESSION_COLS " FROM sessions WHERE id = $1::uuid", 1, p,
                       action ? on_ended_for_action : on_ended_session, r) < 0) {
        free(r);
        reply_db_unavailable(req, w->corr, "Database unavailable");
    }
}

static void on_cells(const PGresult *res, const char *err, void *arg)
{
    struct pending_read *r = arg;
    if (!res) {
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
        free(r);
        return;
    }
    int n = PQntuples(res);
    json_t *items = json_array();
    for (int i = 0; i < n && i < r->limit; i++) {
        struct job_row row;
        jobstore_row_from_record(&row, res, i);
        json_t *a = cell_answer(&row);
        int nc = PQnfields(res);
        json_object_set_new(a, "code", json_string(PQgetvalue(res, i, nc - 1)));
        json_object_set_new(a, "created_at", json_string(row.created_at ? row.created_at : ""));
        json_object_set_new(a, "ended_at", row.ended_at ? json_string(row.ended_at) : json_null());
        json_array_append_new(items, a);
        jobstore_row_release(&row);
    }
    reply_json(r->req, 200, r->corr, page_envelope(items, r->limit, r->offset, n > r->limit));
    free(r);
}

static void on_cells_owner(const PGresult *res, const char *err, void *arg)
{
    struct pending_read *r = arg;
    if (!res) {
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
        free(r);
        return;
    }
    if (PQntuples(res) != 1 || (!r->admin && strcmp(PQgetvalue(res, 0, 15), r->key) != 0)) {
        reply_error(r->req, 404, r->corr, "Session not found");
        free(r);
        return;
    }
    char lim[24], off[24];
    snprintf(lim, sizeof lim, "%lld", r->limit + 1);
    snprintf(off, sizeof off, "%lld", r->offset);
    const char *p[3] = {r->id, lim, off};
    if (pgq_exec(S.pg,
                 "SELECT " JOBSTORE_RECORD_COLS ", code FROM jobs WHERE parent_id = $1::uuid"
                 " AND mode = 'cell' ORDER BY created_at, id LIMIT $2::bigint OFFSET $3::bigint",
                 3, p, on_cells, r) < 0) {
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
        free(r);
    }
}

static void api_cells(struct evhttp_request *req, const struct who *w, const char *id)
{
    long long limit, offset;
    if (!query_int(req, w->corr, "limit", 100, 1, 1000, &limit) ||
        !query_int(req, w->corr, "offset", 0, 0, 1000000000, &offset))
        return;
    if (!uuid_valid(id)) {
        reply_error(req, 404, w->corr, "Session not found");
        return;
    }
    struct pending_read *r = pending(req, w, id);
    const char *p[1] = {id};
    if (r) {
        r->limit = limit;
        r->offset = offset;
    }
    if (!r || pgq_exec(S.pg, "SELECT " SESSION_COLS " FROM sessions WHERE id = $1::uuid", 1, p,
                       on_cells_owner, r) < 0) {
        free(r);
        reply_db_unavailable(req, w->corr, "Database unavailable");
    }
}

/* ------------------------------------------------------------------ events */

static void api_events(struct evhttp_request *req, const struct who *w, struct session *s)
{
    struct watcher *wt = calloc(1, sizeof *wt);
    if (!wt) {
        reply_error(req, 500, w->corr, "Out of memory");
        return;
    }
    wt->req = req;
    wt->s = s;
    wt->next = s->watchers;
    s->watchers = wt;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Correlation-ID", w->corr);
    evhttp_send_reply_start(req, 200, "OK");
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), watcher_closed, wt);
    struct evbuffer *b = evbuffer_new();
    json_t *now = session_json(s);
    char *t = json_dumps(now, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(now);
    evbuffer_add_printf(b, "event: session\ndata: %s\n\n", t ? t : "null");
    free(t);
    evhttp_send_reply_chunk(req, b);
    evbuffer_free(b);
}

/* ------------------------------------------------------------------ files */

static int http_of_errno(int rc)
{
    switch (rc) {
    case -EINVAL:
        return 422;
    case -ENOENT:
        return 404;
    case -EXDEV:
    case -ELOOP:
    case -EPERM:
    case -EACCES:
        return 403;
    case -EFBIG:
    case -ENOSPC:
    case -EDQUOT:
        return 413;
    case -EISDIR:
    case -ENOTDIR:
    case -ENOTEMPTY:
    case -EEXIST:
        return 409;
    default:
        return 500;
    }
}

static const char *why_of_errno(int rc)
{
    switch (rc) {
    case -ENOENT:
        return "No such file or directory in the workspace";
    case -EXDEV:
    case -ELOOP:
        return "The path leads outside the session's workspace";
    case -EPERM:
    case -EACCES:
        return "Not a regular file or directory";
    case -EFBIG:
        return "The file is larger than sessions.max_file_bytes";
    case -ENOSPC:
    case -EDQUOT:
        return "The session's workspace is full (limits.workspace_size)";
    case -EISDIR:
        return "The path is a directory";
    case -ENOTDIR:
        return "A component of the path is not a directory";
    case -ENOTEMPTY:
        return "The directory is not empty";
    default:
        return "The file operation failed";
    }
}

static void file_error(struct evhttp_request *req, const char *corr, int rc)
{
    if (http_of_errno(rc) == 500)
        log_error("msg=\"a session file operation failed\" err=\"%s\"", strerror(-rc));
    reply_error(req, http_of_errno(rc), corr, why_of_errno(rc));
}

/* A file call changed the workspace: what the next cell changes is measured from here
 * (while a cell runs, the call's change is that cell's to report). */
static void resnap(struct session *s)
{
    if (s->state == ST_BUSY)
        return;
    json_decref(s->ws_snap);
    s->ws_snap = wsfiles_snapshot(s->ws_fd);
}

static void api_files(struct evhttp_request *req, const struct who *w, struct session *s,
                      const char *path)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    s->last_ms = now_mono_ms();
    const char *why = NULL;
    if (path && wsfiles_check_path(path, 0, &why) < 0) {
        reply_field_error(req, w->corr, "path", "path", "value_error", why);
        return;
    }
    if (!path) { /* the listing */
        char *dir = query_param(req, "dir");
        if (wsfiles_check_path(dir ? dir : "", 1, &why) < 0) {
            reply_field_error(req, w->corr, "query", "dir", "value_error", why);
            free(dir);
            return;
        }
        json_t *items = NULL;
        int trunc = 0;
        int rc = wsfiles_list(s->ws_fd, dir ? dir : "", &items, &trunc);
        if (rc < 0)
            file_error(req, w->corr, rc);
        else
            reply_json(req, 200, w->corr,
                       json_pack("{s:s, s:o, s:b}", "dir", dir ? dir : "", "items", items,
                                 "truncated", trunc));
        free(dir);
        return;
    }
    if (m == EVHTTP_REQ_PUT) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        if (len > (size_t)tk.cfg.sessions_max_file_bytes) {
            file_error(req, w->corr, -EFBIG);
            return;
        }
        char sha[65];
        int rc = wsfiles_put(s->ws_fd, path, len ? evbuffer_pullup(in, -1) : (unsigned char *)"",
                             len, RUN_UID, RUN_UID, sha);
        if (rc == 0)
            resnap(s);
        if (rc < 0)
            file_error(req, w->corr, rc);
        else
            reply_json(
                req, 201, w->corr,
                json_pack("{s:s, s:I, s:s}", "path", path, "size", (json_int_t)len, "sha256", sha));
        return;
    }
    if (m == EVHTTP_REQ_DELETE) {
        int rc = wsfiles_remove(s->ws_fd, path);
        if (rc == 0)
            resnap(s);
        if (rc < 0)
            file_error(req, w->corr, rc);
        else
            reply_raw(req, 204, w->corr, "", 0);
        return;
    }
    /* GET / HEAD */
    char *data = NULL, sha[65], etag[70];
    size_t len = 0;
    int rc = wsfiles_get(s->ws_fd, path, (size_t)tk.cfg.sessions_max_file_bytes, &data, &len, sha);
    if (rc < 0) {
        file_error(req, w->corr, rc);
        return;
    }
    snprintf(etag, sizeof etag, "\"%s\"", sha);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "ETag", etag);
    const char *inm = evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
    if (inm && (!strcmp(inm, etag) || !strcmp(inm, sha))) {
        reply_raw(req, 304, w->corr, "", 0);
        free(data);
        return;
    }
    evhttp_add_header(oh, "Content-Type", "application/octet-stream");
    if (m == EVHTTP_REQ_HEAD) { /* no body: the size is told (and relayed) all the same */
        char cl[24];
        snprintf(cl, sizeof cl, "%zu", len);
        evhttp_add_header(oh, "Content-Length", cl);
    }
    reply_raw(req, 200, w->corr, data, len);
    free(data);
}

/* ------------------------------------------------------------------ the router */

static void api_list(struct evhttp_request *req, const struct who *w)
{
    json_t *items = json_array();
    for (struct session *s = S.list; s; s = s->next)
        if (visible(s, w) && s->state != ST_STARTING)
            json_array_append_new(items, session_json(s));
    size_t n = json_array_size(items);
    reply_json(req, 200, w->corr, json_pack("{s:o, s:I}", "items", items, "count", (json_int_t)n));
}

static void route(struct evhttp_request *req, void *arg)
{
    struct who w;
    who_of(req, &w);
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || strncmp(path, "/sessions", 9) != 0) {
        reply_error(req, 404, w.corr, "Not Found");
        return;
    }
    const char *rest = path + 9;
    if (!*rest) {
        if (m == EVHTTP_REQ_POST)
            api_create(req, &w);
        else if (m == EVHTTP_REQ_GET)
            api_list(req, &w);
        else
            reply_error(req, 405, w.corr, "Method Not Allowed");
        return;
    }
    if (*rest != '/') {
        reply_error(req, 404, w.corr, "Not Found");
        return;
    }
    rest++;
    char id[40];
    size_t il = strcspn(rest, "/");
    if (il == 0 || il >= sizeof id) {
        reply_error(req, 404, w.corr, "Session not found");
        return;
    }
    memcpy(id, rest, il);
    id[il] = '\0';
    const char *sub = rest + il; /* "", "/execute", "/files/..." */
    struct session *s = find(id);
    if (s && (!visible(s, &w) || s->state == ST_STARTING))
        s = NULL; /* another key's is as if it did not exist; a starting one has no id yet */
    if (!strcmp(sub, "/cells") && m == EVHTTP_REQ_GET) {
        api_cells(req, &w, id);
        return;
    }
    if (!*sub) {
        if (m == EVHTTP_REQ_GET) {
            if (s)
                reply_json(req, 200, w.corr, session_json(s));
            else
                not_live(req, &w, id, false);
        } else if (m == EVHTTP_REQ_DELETE) {
            if (!s) {
                not_live(req, &w, id, false);
                return;
            }
            /* the answer is its row, read after the end is written (GET's answer from now on);
             * without the database, the same shape from memory */
            json_t *ended = ended_now(s, "closed", "closed by the client");
            session_end(s, "closed", "closed by the client");
            const char *p[1] = {id};
            struct pending_read *r = pending(req, &w, id);
            if (!r || pgq_exec(S.pg, "SELECT " SESSION_COLS " FROM sessions WHERE id = $1::uuid", 1,
                               p, on_ended_session, r) < 0) {
                free(r);
                reply_json(req, 200, w.corr, ended);
            } else {
                json_decref(ended);
            }
        } else {
            reply_error(req, 405, w.corr, "Method Not Allowed");
        }
        return;
    }
    bool is_files = !strncmp(sub, "/files", 6) && (sub[6] == '\0' || sub[6] == '/');
    if (!s) {
        not_live(req, &w, id, true);
        return;
    }
    if (!strcmp(sub, "/execute") && m == EVHTTP_REQ_POST)
        api_execute(req, &w, s);
    else if (!strcmp(sub, "/interrupt") && m == EVHTTP_REQ_POST)
        api_interrupt(req, &w, s);
    else if (!strcmp(sub, "/events") && m == EVHTTP_REQ_GET)
        api_events(req, &w, s);
    else if (is_files && sub[6] == '\0' && m == EVHTTP_REQ_GET)
        api_files(req, &w, s, NULL);
    else if (is_files && sub[6] == '/' &&
             (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD || m == EVHTTP_REQ_PUT ||
              m == EVHTTP_REQ_DELETE)) {
        size_t dl = 0;
        char *p = evhttp_uridecode(sub + 7, 0, &dl);
        if (!p || dl != strlen(p)) /* a %00 in it */
            reply_field_error(req, w.corr, "path", "path", "value_error",
                              "the path has a NUL byte");
        else
            api_files(req, &w, s, p);
        free(p);
    } else
        reply_error(req, 404, w.corr, "Not Found");
}

/* ------------------------------------------------------------------ time */

static void on_tick(evutil_socket_t fd, short ev, void *arg)
{
    atomic_store(&S.me->heartbeat_ms, now_mono_ms());
    uint64_t now = now_mono_ms(), now_us = now_real_us();
    bool keepalive = now - S.last_keepalive_ms >= KEEPALIVE_S * 1000u;
    if (keepalive)
        S.last_keepalive_ms = now;
    struct session *next;
    for (struct session *s = S.list; s; s = next) {
        next = s->next;
        char reason[120];
        if (s->state == ST_STARTING && now > s->ready_deadline_ms) {
            session_end(s, "failed", "its interpreter did not start in time");
        } else if (s->created_real_us &&
                   now_us >= s->created_real_us + (uint64_t)s->max_lifetime * 1000000u) {
            snprintf(reason, sizeof reason, "max_lifetime of %d s reached", s->max_lifetime);
            session_end(s, "expired", reason);
        } else if (s->state == ST_READY && now >= s->last_ms + (uint64_t)s->idle_timeout * 1000u) {
            snprintf(reason, sizeof reason, "idle for %d s", s->idle_timeout);
            session_end(s, "expired", reason);
        } else if (s->state == ST_BUSY && now > s->cell_deadline_ms) {
            session_end(s, "lost", "its launcher did not end a cell in time");
        } else if (keepalive && s->watchers) {
            for (struct watcher *w = s->watchers; w; w = w->next) {
                struct evbuffer *b = evbuffer_new();
                evbuffer_add_printf(b, ": keep-alive\n\n");
                evhttp_send_reply_chunk(w->req, b);
                evbuffer_free(b);
            }
        }
    }
    if (S.stopping && !S.list)
        event_base_loopexit(S.base, NULL);
}

static void on_stop(evutil_socket_t sig, short ev, void *arg)
{
    if (sig == SIGUSR1) {
        log_reopen();
        return;
    }
    if (S.stopping)
        return;
    S.stopping = true;
    log_info("msg=\"sessions process stopping\" live=%d", S.n_live);
    if (S.bound) {
        evhttp_del_accept_socket(S.http, S.bound);
        S.bound = NULL;
    }
    while (S.list)
        session_end(S.list, "lost", "takod stopped; sessions do not survive a restart");
    /* let the records go out (bounded): the loop ends at the next tick with none live */
}

/* ------------------------------------------------------------------ start */

/* Sessions a dead predecessor (or takod before a restart) left: they are gone. */
static void on_stale(const PGresult *res, const char *err, void *arg)
{
    if (!res) {
        log_error("msg=\"marking sessions of a previous run lost failed\" err=\"%s\"",
                  err ? err : "");
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        const char *reason = PQgetvalue(res, i, 12);
        record_session_job(
            PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
            (uint64_t)atoll(PQgetvalue(res, i, 3)), atoi(PQgetvalue(res, i, 4)),
            atoi(PQgetvalue(res, i, 5)), atoll(PQgetvalue(res, i, 6)), atof(PQgetvalue(res, i, 7)),
            PQgetisnull(res, i, 8) ? NULL : PQgetvalue(res, i, 8), PQgetvalue(res, i, 9),
            PQgetvalue(res, i, 10), atoi(PQgetvalue(res, i, 11)), "lost", reason);
    }
    if (PQntuples(res) > 0)
        log_warn("msg=\"sessions of a previous run marked lost\" count=%d", PQntuples(res));
}

static void mark_stale(void)
{
    static const char sql[] =
        "UPDATE sessions s SET status = 'lost', ended_at = now(), end_reason = $2,"
        " execution_count = (SELECT count(*) FROM jobs j WHERE j.parent_id = s.id"
        "                    AND j.mode = 'cell')"
        " WHERE node = $1 AND status = 'live' RETURNING id::text, coalesce(api_key_id, ''),"
        " job_type, (extract(epoch FROM created_at) * 1e6)::bigint, max_lifetime, idle_timeout,"
        " memory_bytes, cpus, runtime, coalesce(client_ip, ''), coalesce(correlation_id, ''),"
        " execution_count, end_reason";
    const char *p[2] = {tk.node, "takod restarted (or its sessions process died); sessions do "
                                 "not survive a restart"};
    if (pgq_exec(S.pg, sql, 2, p, on_stale, NULL) < 0)
        log_error("msg=\"marking sessions of a previous run lost failed: database unavailable\"");
}

/* What a predecessor left in the slots directory: its sessions' directories (its
 * containers are the sweeper's: their owner is dead). */
static void remove_left_dirs(void)
{
    DIR *d = opendir(tk.slots_dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] != 's')
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", tk.slots_dir, de->d_name);
        sandbox_umount_under(path);
        sandbox_release_dir(&S.env, path);
    }
    if (d)
        closedir(d);
}

static int listen_unix(void)
{
    sessions_socket_path(S.sock, sizeof S.sock);
    char dir[sizeof S.sock];
    snprintf(dir, sizeof dir, "%s", S.sock);
    *strrchr(dir, '/') = '\0';
    int rc = mkdir_p(dir, 0700);
    if (rc < 0 || chmod(dir, 0700) < 0) {
        log_error("msg=\"sessions socket directory\" dir=%s err=\"%s\"", dir,
                  strerror(rc < 0 ? -rc : errno));
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", S.sock);
    unlink(S.sock);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || chmod(S.sock, 0600) < 0 ||
        listen(fd, 128) < 0) {
        log_error("msg=\"sessions socket\" path=%s err=\"%s\"", S.sock, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static bool sessions_closing(void)
{
    return true; /* one request per connection: the acceptor's proxy reads to the close */
}

int sessions_main(int slot)
{
    S.me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    S.env = (struct sandbox_env){.cfg = &tk.cfg,
                                 .instance = tk.instance,
                                 .quarantine_dir = tk.quarantine_dir,
                                 .rootfs_dir = tk.rootfs_dir};
    signal(SIGPIPE, SIG_IGN);
    signal(SIGIO, SIG_IGN); /* the OCI backend's start FIFO may raise it */
    S.base = event_base_new();
    S.http = S.base ? evhttp_new(S.base) : NULL;
    if (!S.http) {
        log_error("msg=\"sessions process init failed\"");
        return 1;
    }
    int rc = docker_open(&S.docker, tk.cfg.docker_socket);
    if (rc < 0) {
        log_error("msg=\"docker_open failed\" socket=%s err=\"%s\"", tk.cfg.docker_socket,
                  docker_last_error(NULL));
        return 1;
    }
    int fd = listen_unix();
    if (fd < 0)
        return 1;
    evhttp_set_max_body_size(S.http, (ev_ssize_t)(tk.cfg.sessions_max_file_bytes + 65536));
    evhttp_set_max_headers_size(S.http, 32768);
    evhttp_set_allowed_methods(S.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
    evhttp_set_gencb(S.http, route, NULL);
    http_init(sessions_closing, NULL, NULL);
    S.pg = pgq_new(S.base, tk.conninfo);
    atomic_store(&tk.shm->sessions_live, 0); /* a predecessor's died with it */
    remove_left_dirs();
    mark_stale();
    S.bound = evhttp_accept_socket_with_handle(S.http, fd);
    if (!S.bound) {
        log_error("msg=\"evhttp_accept_socket_with_handle failed\" path=%s", S.sock);
        return 1;
    }
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
    struct event *sev[4];
    for (int i = 0; i < 4; i++) {
        sev[i] = evsignal_new(S.base, sigs[i], on_stop, NULL);
        event_add(sev[i], NULL);
    }
    S.tick_ev = event_new(S.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    event_add(S.tick_ev, &tv);
    atomic_store(&S.me->heartbeat_ms, now_mono_ms());
    atomic_store(&S.me->ready, 1);
    log_info("msg=\"sessions process ready\" socket=%s max_total=%lld backend=%s", S.sock,
             (long long)tk.cfg.sessions_max_total, sandbox_backend_name());
    event_base_dispatch(S.base);
    for (int i = 0; i < 4; i++)
        event_free(sev[i]);
    event_free(S.tick_ev);
    unlink(S.sock);
    pgq_free(S.pg);
    evhttp_free(S.http);
    event_base_free(S.base);
    docker_close(S.docker);
    return TK_EXIT_OK;
}
