/*
 * api_wait.c — waiting for a job, without a sleep-and-poll anywhere: PostgreSQL announces
 * every status change (a trigger NOTIFYs "takod_job" with "<id> <status>"; an executor
 * sends "out <id> <stream> <base64>" for live output); each acceptor LISTENs and wakes
 * what waits on that job here:
 *   long-polls (GET /jobs/{id}/result?wait=true) and duplicate submits of a job still
 *   running, answered once its record is final (re-checked after every reconnect, since
 *   notifications sent while the connection was down are lost);
 *   GET /jobs/{id}/events streams (Server-Sent Events).
 */
#include "api_jobs.h"
#include "tako/jobs.h"
#include "conns.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- long-poll waiters ---- */

struct waiter {
    struct waiter *next;
    char id[40];
    struct evhttp_request *req;
    char corr[72];
    bool full;
    enum wait_kind kind;
    struct event *timer;
};

static struct waiter *waiters;

static void waiter_remove(struct waiter *w)
{
    for (struct waiter **pp = &waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    if (w->timer)
        event_free(w->timer);
    free(w);
    acceptor_release();
}

static void on_wait_timeout(evutil_socket_t fd, short ev, void *arg)
{
    struct waiter *w = arg;
    reply_error(w->req, 408, w->corr, "Timeout waiting for job");
    waiter_remove(w);
    acceptor_maybe_exit();
}

/* The record of a job some requests wait for: answer them if it has finished. */
static void on_waited_record(const PGresult *res, const char *err, void *arg)
{
    char *id = arg;
    if (res && PQntuples(res) == 1 && is_terminal(PQgetvalue(res, 0, JR_status))) {
        struct waiter *w = waiters, *next;
        for (; w; w = next) {
            next = w->next;
            if (strcmp(w->id, id) != 0)
                continue;
            reply_json(w->req, 200, w->corr,
                       w->kind == WAIT_EXECUTE ? records_answer(res, 0)
                                               : records_json(res, 0, w->full));
            waiter_remove(w);
        }
        acceptor_maybe_exit();
    }
    free(id);
}

static void check_waited(const char *id)
{
    char *copy = strdup(id);
    if (copy && records_query(id, NULL, on_waited_record, copy) < 0)
        free(copy);
}

void wait_add(struct evhttp_request *req, const char *corr, const char *id, enum wait_kind kind,
              bool full, int timeout_ms)
{
    struct waiter *w = calloc(1, sizeof *w);
    if (!w) {
        reply_error(req, 500, corr, "out of memory");
        return;
    }
    snprintf(w->id, sizeof w->id, "%s", id);
    snprintf(w->corr, sizeof w->corr, "%s", corr);
    w->req = req;
    w->kind = kind;
    w->full = full;
    w->timer = evtimer_new(A.base, on_wait_timeout, w);
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(w->timer, &tv);
    w->next = waiters;
    waiters = w;
    acceptor_hold();
    check_waited(id); /* it may have finished between our read and now */
}

static void sse_on_status(const char *id, const char *status);
static void sse_on_output(const char *payload);

/* "takod_job": "<id> <status>" from the trigger, or "out <id> <stream> <b64>" (live). */
static void on_notify(const char *channel, const char *payload, void *arg)
{
    if (!strncmp(payload, "out ", 4)) {
        sse_on_output(payload + 4);
        return;
    }
    char id[40], status[16];
    if (sscanf(payload, "%39s %15s", id, status) != 2)
        return;
    sse_on_status(id, status);
    for (struct waiter *w = waiters; w; w = w->next)
        if (!strcmp(w->id, id)) {
            check_waited(id);
            return;
        }
}

/* Reconnected: notifications may have been missed; look at everything we wait for. */
static void on_db_up(void *arg)
{
    for (struct waiter *w = waiters; w; w = w->next)
        check_waited(w->id);
}

void api_jobs_init(void)
{
    pgq_listen(A.pg, "takod_job", on_notify, on_db_up, NULL);
}

void api_jobs_drop_streams(void);

void api_jobs_drop_waiters(void)
{
    api_jobs_drop_streams();
    while (waiters) {
        reply_error(waiters->req, 503, waiters->corr, "takod is shutting down");
        waiter_remove(waiters);
    }
}

/* ---- GET /jobs/{id}/events: Server-Sent Events (ext) ----
 *
 * A chunked text/event-stream: "status" events as the job moves (queued, running, ...),
 * "stdout"/"stderr" events with live output while it runs (data: a JSON string), and a
 * final "result" event with the full record, after which the stream ends. Status and
 * output come through PostgreSQL notifications, so it works for any job of any node.
 */
struct sse {
    struct sse *next;
    char id[40];
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    char corr[72];
    struct event *timer;
    int slot; /* the job's shm slot while it was live here (watchers count), or -1 */
    bool finishing;
    char last[16]; /* the last status sent */
};

static struct sse *streams;

static void sse_remove(struct sse *s)
{
    for (struct sse **pp = &streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    if (s->slot >= 0) {
        struct tk_job *job = shm_job(tk.shm, (uint32_t)s->slot);
        if (!strcmp(job->id, s->id) && atomic_load(&job->watchers) > 0)
            atomic_fetch_sub(&job->watchers, 1);
    }
    if (s->timer)
        event_free(s->timer);
    free(s);
    acceptor_release();
}

static void sse_event(struct sse *s, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
    json_decref(data);
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add_printf(buf, "event: %s\ndata: %s\n\n", event, text ? text : "null");
    free(text);
    evhttp_send_reply_chunk(s->req, buf);
    evbuffer_free(buf);
}

static void sse_end(struct sse *s)
{
    conns_set_closecb(s->conn, NULL, NULL);
    evhttp_send_reply_end(s->req);
    sse_remove(s);
    acceptor_maybe_exit();
}

/* The client went away: forget the stream (the request is libevent's to free). */
static void sse_closed(struct evhttp_connection *conn, void *arg)
{
    sse_remove(arg);
}

static void sse_timeout(evutil_socket_t fd, short ev, void *arg)
{
    struct sse *s = arg;
    sse_event(s, "timeout", json_pack("{s:s}", "job_id", s->id));
    sse_end(s);
}

static struct sse *sse_find(const char *id, struct sse *after)
{
    for (struct sse *s = after ? after->next : streams; s; s = s->next)
        if (!strcmp(s->id, id))
            return s;
    return NULL;
}

static void on_watch_sent(const PGresult *res, const char *err, void *arg)
{
    if (!res)
        log_warn("msg=\"asking another node for a job's live output failed\" err=\"%s\"", err);
}

/* A stream here of a job another node runs (cluster.enabled): ask that node to announce
 * its output (NOTIFY takod_watch "<node> <id>"; workers/cluster.c marks the job watched).
 * Sent when the stream starts and again when the job starts running, since a job that
 * waited unowned in the shared queue has no node before. */
static void sse_watch_remote(const struct sse *s)
{
    if (!tk.cfg.cluster_enabled || jobs_find_live(s->id) >= 0)
        return;
    const char *p[1] = {s->id};
    pgq_exec(A.pg,
             "SELECT pg_notify('takod_watch', node || ' ' || id::text) FROM jobs"
             " WHERE id = $1::uuid AND node IS NOT NULL AND status IN ('queued', 'running')",
             1, p, on_watch_sent, NULL);
}

static void on_sse_result(const PGresult *res, const char *err, void *arg)
{
    char *id = arg;
    if (res && PQntuples(res) == 1 && is_terminal(PQgetvalue(res, 0, JR_status))) {
        struct sse *s, *next;
        for (s = sse_find(id, NULL); s; s = next) {
            next = sse_find(id, s);
            sse_event(s, "result", records_json(res, 0, true));
            sse_end(s);
        }
    }
    free(id);
}

static void sse_on_status(const char *id, const char *status)
{
    bool any = false;
    for (struct sse *s = sse_find(id, NULL); s; s = sse_find(id, s)) {
        if (!strcmp(s->last, status))
            continue; /* sent already (the recheck after the stream's start found it) */
        snprintf(s->last, sizeof s->last, "%s", status);
        sse_event(s, "status", json_pack("{s:s, s:s}", "job_id", id, "status", status));
        if (!any && !strcmp(status, "running"))
            sse_watch_remote(s);
        any = true;
    }
    char *copy = any && is_terminal(status) ? strdup(id) : NULL;
    if (copy && records_query(id, NULL, on_sse_result, copy) < 0)
        free(copy);
}

static void sse_on_output(const char *payload)
{
    char id[40];
    int stream, off = 0;
    if (sscanf(payload, "%39s %d %n", id, &stream, &off) != 2 || !sse_find(id, NULL))
        return;
    const char *b64 = payload + off;
    size_t blen = strlen(b64);
    unsigned char *raw = malloc(blen / 4 * 3 + 4);
    int n = raw ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)blen) : -1;
    if (n >= 0) {
        if (blen >= 1 && b64[blen - 1] == '=')
            n--;
        if (blen >= 2 && b64[blen - 2] == '=')
            n--;
        char *text = utf8_sanitize((const char *)raw, (size_t)n, NULL);
        for (struct sse *s = sse_find(id, NULL); s && text; s = sse_find(id, s))
            sse_event(s, stream == 2 ? "stderr" : "stdout", json_string(text));
        free(text);
    }
    free(raw);
}

/* The record read again once the stream is registered: a status change announced between
 * the first read and the registration reached no stream (as wait_add's check_waited). */
static void on_sse_recheck(const PGresult *res, const char *err, void *arg)
{
    char *id = arg;
    if (res && PQntuples(res) == 1)
        sse_on_status(id, PQgetvalue(res, 0, JR_status));
    free(id);
}

static void on_sse_record(const PGresult *res, const char *err, void *arg)
{
    struct rec_req *r = arg;
    if (!res) {
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
        free(r);
        return;
    }
    if (PQntuples(res) != 1) {
        reply_error(r->req, 404, r->corr, "Job not found");
        free(r);
        return;
    }
    struct sse *s = calloc(1, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", r->id);
    snprintf(s->corr, sizeof s->corr, "%s", r->corr);
    s->req = r->req;
    s->conn = evhttp_request_get_connection(r->req);
    s->slot = jobs_find_live(r->id);
    free(r);
    if (s->slot >= 0)
        atomic_fetch_add(&shm_job(tk.shm, (uint32_t)s->slot)->watchers, 1);
    struct evkeyvalq *h = evhttp_request_get_output_headers(s->req);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Correlation-ID", s->corr);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_send_reply_start(s->req, 200, "OK");
    s->next = streams;
    streams = s;
    acceptor_hold();
    conns_set_closecb(s->conn, sse_closed, s);
    s->timer = evtimer_new(A.base, sse_timeout, s);
    struct timeval tv = {(long)tk.cfg.limits_max_timeout + 120, 0};
    evtimer_add(s->timer, &tv);
    const char *status = PQgetvalue(res, 0, JR_status);
    snprintf(s->last, sizeof s->last, "%s", status);
    sse_event(s, "status", json_pack("{s:s, s:s}", "job_id", s->id, "status", status));
    if (is_terminal(status)) {
        sse_event(s, "result", records_json(res, 0, true));
        sse_end(s);
        return;
    }
    if (s->slot < 0)
        sse_watch_remote(s);
    char *copy = strdup(s->id);
    if (copy && records_query(s->id, NULL, on_sse_recheck, copy) < 0)
        free(copy);
}

void api_job_events(struct evhttp_request *req, const char *corr, char **params)
{
    const char *id = params[0];
    if (!uuid_valid(id)) {
        reply_error(req, 404, corr, "Job not found");
        return;
    }
    if (A.stopping || A.draining) {
        reply_error(req, 503, corr, "takod is shutting down");
        return;
    }
    struct rec_req *r = rec_req_new(req, corr, id);
    if (records_query(id, auth_owner(), on_sse_record, r) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(r);
    }
}

void api_jobs_drop_streams(void)
{
    while (streams) {
        sse_event(streams, "shutdown", json_pack("{s:s}", "job_id", streams->id));
        sse_end(streams);
    }
}
