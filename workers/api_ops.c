/*
 * api_ops.c — the operations routes: health, the cluster's nodes, pool stats, the
 * dead-letter queue, job types, metrics and the OpenAPI document. Nothing here blocks: live numbers
 * come from shared memory, the rest from PostgreSQL through the acceptor's async connection.
 */
#include "acceptor.h"
#include "tako/audit.h"
#include "tako/log.h"
#include "tako/metrics.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char tako_openapi_json[]; /* generated from docs/openapi.json */

/* Until every executor has been ready once, takod is "starting" (503). */
static bool all_started(void)
{
    if (atomic_load(&tk.shm->started))
        return true;
    uint32_t ready = 0;
    for (uint32_t i = 0; i < tk.shm->n_procs; i++) {
        struct tk_proc *p = shm_proc(tk.shm, i);
        if (p->role == TK_ROLE_EXECUTOR && atomic_load(&p->pid) > 0 && atomic_load(&p->ready))
            ready++;
    }
    if (ready < tk.shm->n_executors)
        return false;
    atomic_store(&tk.shm->started, 1);
    return true;
}

static json_t *queue_stats(void)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "pending",
                     (json_int_t)ring_count(shm_dispatch(tk.shm)), "running",
                     (json_int_t)atomic_load(&tk.shm->running), "max_workers",
                     (json_int_t)tk.shm->n_executors, "max_queue_size", (json_int_t)tk.shm->n_jobs);
}

void api_health(struct evhttp_request *req, const char *corr, char **params)
{
    if (!all_started()) {
        reply_json(req, 503, corr,
                   json_pack("{s:s, s:s}", "status", "starting", "version", TAKO_VERSION));
        return;
    }
    bool db_ok = pgq_connected(A.pg);
    bool docker_ok = atomic_load(&tk.shm->docker_ok) != 0;
    uint32_t acc_ready = 0; /* shared state: the acceptors taking connections */
    for (uint32_t i = 0; i < tk.shm->n_procs; i++) {
        struct tk_proc *p = shm_proc(tk.shm, i);
        if (p->role == TK_ROLE_ACCEPTOR && atomic_load(&p->pid) > 0 && atomic_load(&p->ready))
            acc_ready++;
    }
    /* the settler counts the live nodes in PostgreSQL (cluster mode); this one is live */
    uint32_t live = tk.cfg.cluster_enabled ? atomic_load(&tk.shm->live_nodes) : 1;
    reply_json(req, 200, corr,
               json_pack("{s:s, s:b, s:b, s:s, s:s, s:s, s:o, s:I, s:I, s:{s:I, s:I}, s:s, "
                         "s:{s:b, s:I}}",
                         "status", db_ok && docker_ok ? "healthy" : "degraded", "docker_available",
                         docker_ok, "database_available", db_ok, "version", TAKO_VERSION, "runtime",
                         tk.shm->runtime, "backend", tk.shm->backend, "queue_stats", queue_stats(),
                         "acceptors_ready", (json_int_t)acc_ready, "acceptors",
                         (json_int_t)tk.shm->n_acceptors, "sessions", "live",
                         (json_int_t)atomic_load(&tk.shm->sessions_live), "max_total",
                         (json_int_t)tk.cfg.sessions_max_total, "node", tk.node, "cluster",
                         "enabled", tk.cfg.cluster_enabled, "live_nodes",
                         (json_int_t)(live ? live : 1)));
}

void api_pool_stats(struct evhttp_request *req, const char *corr, char **params)
{
    reply_json(req, 200, corr, queue_stats());
}

/* ---- the routes answered from PostgreSQL: one request, one statement ---- */

struct ops_req {
    struct evhttp_request *req;
    char corr[72];
    long long limit, offset;
    char id[40];
};

static struct ops_req *ops_req_new(struct evhttp_request *req, const char *corr)
{
    struct ops_req *o = calloc(1, sizeof *o);
    o->req = req;
    snprintf(o->corr, sizeof o->corr, "%s", corr);
    return o;
}

static bool db_failed(struct ops_req *o, const PGresult *res)
{
    if (res)
        return false;
    reply_db_unavailable(o->req, o->corr, "Database unavailable");
    free(o);
    return true;
}

/* ---- GET /nodes: every node that registered in the `nodes` table ----
 *
 * One statement: the nodes, whether each is live (not stopped, and seen within one
 * cluster.lease: the settler's heartbeat runs every ~2 s), and the unfinished jobs each
 * owns per PostgreSQL; queued_unowned counts the jobs waiting in the shared queue. The
 * outer one-row join makes a row even when the table is empty (then node_id is NULL).
 * With keys on, only the admin key may ask (it names every node's host and pid).
 */
static const char nodes_sql[] =
    "WITH u AS (SELECT node, count(*) FILTER (WHERE status = 'running') AS running,"
    " count(*) FILTER (WHERE status = 'queued') AS queued"
    " FROM jobs WHERE status IN ('queued', 'running') GROUP BY node)"
    " SELECT n.node_id, n.address, n.host, n.pid, n.executors, n.cluster,"
    " to_json(n.started_at)#>>'{}', to_json(n.last_seen)#>>'{}',"
    " to_json(n.stopped_at)#>>'{}',"
    " n.stopped_at IS NULL AND n.last_seen > now() - make_interval(secs => $1::int),"
    " coalesce(u.running, 0), coalesce(u.queued, 0),"
    " (SELECT coalesce(sum(queued), 0) FROM u WHERE node IS NULL)"
    " FROM (SELECT 1) one LEFT JOIN nodes n ON true LEFT JOIN u ON u.node = n.node_id"
    " ORDER BY n.node_id";

static json_t *text_or_null(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

static void on_nodes(const PGresult *res, const char *err, void *arg)
{
    struct ops_req *o = arg;
    if (db_failed(o, res))
        return;
    json_t *nodes = json_array();
    long long unowned = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        unowned = atoll(PQgetvalue(res, i, 12));
        if (PQgetisnull(res, i, 0))
            continue;
        json_array_append_new(
            nodes,
            json_pack("{s:s, s:o, s:s, s:I, s:I, s:b, s:s, s:s, s:o, s:b, s:I, s:I}", "node_id",
                      PQgetvalue(res, i, 0), "address", text_or_null(res, i, 1), "host",
                      PQgetvalue(res, i, 2), "pid", (json_int_t)atoll(PQgetvalue(res, i, 3)),
                      "executors", (json_int_t)atoll(PQgetvalue(res, i, 4)), "cluster",
                      PQgetvalue(res, i, 5)[0] == 't', "started_at", PQgetvalue(res, i, 6),
                      "last_seen", PQgetvalue(res, i, 7), "stopped_at", text_or_null(res, i, 8),
                      "live", PQgetvalue(res, i, 9)[0] == 't', "running",
                      (json_int_t)atoll(PQgetvalue(res, i, 10)), "queued",
                      (json_int_t)atoll(PQgetvalue(res, i, 11))));
    }
    reply_json(o->req, 200, o->corr,
               json_pack("{s:o, s:I, s:I}", "nodes", nodes, "lease_s",
                         (json_int_t)tk.cfg.cluster_lease, "queued_unowned", (json_int_t)unowned));
    free(o);
}

void api_nodes(struct evhttp_request *req, const char *corr, char **params)
{
    if (auth_enabled() && !current_auth.admin) {
        reply_error(req, 403, corr, "The node list needs the admin key (auth.admin_key)");
        return;
    }
    struct ops_req *o = ops_req_new(req, corr);
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)tk.cfg.cluster_lease);
    const char *p[1] = {lease};
    if (pgq_exec(A.pg, nodes_sql, 1, p, on_nodes, o) < 0)
        db_failed(o, NULL);
}

/* ---- dead-letter queue: jobs that failed inside takod itself ---- */

static void on_dlq_stats(const PGresult *res, const char *err, void *arg)
{
    struct ops_req *o = arg;
    if (db_failed(o, res))
        return;
    json_t *by = json_object();
    long long total = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        long long n = atoll(PQgetvalue(res, i, 1));
        json_object_set_new(by, PQgetvalue(res, i, 0), json_integer(n));
        total += n;
    }
    reply_json(o->req, 200, o->corr,
               json_pack("{s:I, s:o}", "total", (json_int_t)total, "by_error_type", by));
    free(o);
}

void api_dlq_stats(struct evhttp_request *req, const char *corr, char **params)
{
    struct ops_req *o = ops_req_new(req, corr);
    const char *p[1] = {auth_owner()};
    if (pgq_exec(A.pg,
                 "SELECT d.error_type, count(*) FROM dlq d LEFT JOIN jobs j ON j.id = d.job_id"
                 " WHERE $1::text IS NULL OR j.api_key_id = $1 GROUP BY d.error_type",
                 1, p, on_dlq_stats, o) < 0)
        db_failed(o, NULL);
}

static void on_dlq_list(const PGresult *res, const char *err, void *arg)
{
    struct ops_req *o = arg;
    if (db_failed(o, res))
        return;
    json_t *items = json_array();
    int n = PQntuples(res);
    for (int i = 0; i < n && i < o->limit; i++) {
        json_t *data = json_loads(PQgetvalue(res, i, 2), 0, NULL);
        json_array_append_new(
            items,
            json_pack("{s:s, s:s, s:o, s:s, s:s?, s:I, s:s, s:s?, s:s?}", "id",
                      PQgetvalue(res, i, 0), "job_id", PQgetvalue(res, i, 1), "job_data",
                      data ? data : json_object(), "error_type", PQgetvalue(res, i, 3),
                      "error_message", PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4),
                      "retry_count", (json_int_t)atoll(PQgetvalue(res, i, 5)), "created_at",
                      PQgetvalue(res, i, 6), "client_ip",
                      PQgetisnull(res, i, 7) ? NULL : PQgetvalue(res, i, 7), "correlation_id",
                      PQgetisnull(res, i, 8) ? NULL : PQgetvalue(res, i, 8)));
    }
    long long fetched = n ? atoll(PQgetvalue(res, 0, 9)) : 0; /* rows before the byte cut */
    reply_json(o->req, 200, o->corr,
               page_envelope(items, o->limit, o->offset, n > o->limit || fetched > n));
    free(o);
}

void api_dlq_list(struct evhttp_request *req, const char *corr, char **params)
{
    struct ops_req *o = ops_req_new(req, corr);
    if (!query_int(req, corr, "limit", 100, 1, 1000, &o->limit) ||
        !query_int(req, corr, "offset", 0, 0, 1000000000, &o->offset)) {
        free(o);
        return;
    }
    char *type = query_param(req, "error_type");
    char lim[24], off[24];
    snprintf(lim, sizeof lim, "%lld", o->limit + 1);
    snprintf(off, sizeof off, "%lld", o->offset);
    char cap[24];
    snprintf(cap, sizeof cap, "%lld", (long long)tk.cfg.limits_max_page_bytes);
    const char *p[5] = {type, lim, off, auth_owner(), cap};
    /* job_data holds a job's code and input: a page is cut at limits.max_page_bytes of
     * it (the first entry always), like /executions */
    if (pgq_exec(A.pg,
                 "SELECT id, job_id, job_data, error_type, error_message, retry_count, created_at,"
                 " client_ip, correlation_id, fetched FROM ("
                 "SELECT x.*, count(*) OVER () AS fetched, sum(page_bytes) OVER (ORDER BY"
                 " created_ts DESC, id ROWS UNBOUNDED PRECEDING) - page_bytes AS before FROM ("
                 "SELECT d.id::text AS id, d.job_id::text AS job_id, d.job_data::text AS job_data,"
                 " d.error_type, d.error_message, d.retry_count,"
                 " to_json(d.created_at)#>>'{}' AS created_at, d.client_ip, d.correlation_id,"
                 " d.created_at AS created_ts, octet_length(d.job_data::text) AS page_bytes"
                 " FROM dlq d LEFT JOIN jobs j ON j.id = d.job_id"
                 " WHERE ($1::text IS NULL OR d.error_type = $1)"
                 " AND ($4::text IS NULL OR j.api_key_id = $4)"
                 " ORDER BY d.created_at DESC, d.id LIMIT $2::integer OFFSET $3::integer) x) y"
                 " WHERE before = 0 OR before + page_bytes <= $5::bigint"
                 " ORDER BY created_ts DESC, id",
                 5, p, on_dlq_list, o) < 0)
        db_failed(o, NULL);
    free(type);
}

static void on_dlq_delete(const PGresult *res, const char *err, void *arg)
{
    struct ops_req *o = arg;
    if (db_failed(o, res))
        return;
    if (atoi(PQcmdTuples((PGresult *)res)) == 0)
        reply_error(o->req, 404, o->corr, "DLQ entry not found");
    else
        reply_json(o->req, 200, o->corr,
                   json_pack("{s:s, s:s}", "status", "removed", "entry_id", o->id));
    free(o);
}

void api_dlq_delete(struct evhttp_request *req, const char *corr, char **params)
{
    if (!uuid_valid(params[0])) {
        reply_error(req, 404, corr, "DLQ entry not found");
        return;
    }
    struct ops_req *o = ops_req_new(req, corr);
    snprintf(o->id, sizeof o->id, "%s", params[0]);
    const char *p[2] = {o->id, auth_owner()};
    if (pgq_exec(A.pg,
                 "DELETE FROM dlq d WHERE d.id = $1::uuid AND ($2::text IS NULL OR EXISTS"
                 " (SELECT 1 FROM jobs j WHERE j.id = d.job_id AND j.api_key_id = $2))",
                 2, p, on_dlq_delete, o) < 0)
        db_failed(o, NULL);
}

/* ---- metrics and the contract ---- */

void api_metrics(struct evhttp_request *req, const char *corr, char **params)
{
    size_t len = 0;
    char *text = metrics_render(tk.shm, &len);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    reply_raw(req, 200, corr, text ? text : "", len);
    free(text);
}

void api_openapi(struct evhttp_request *req, const char *corr, char **params)
{
    reply_raw(req, 200, corr, tako_openapi_json, strlen(tako_openapi_json));
}

/* ---- GET /audit/verify?expect=SEQ:HASH ----
 *
 * Recomputes the tamper-evident chain (docs/AUDIT.md). It reads every chained record, so
 * it runs on a connection of its own (the acceptor's shared one stays free for the API),
 * in one REPEATABLE READ READ ONLY transaction so the check and the summary describe the
 * same moment. With keys on, only the admin key may run it (it names every key's jobs).
 */
struct audit_req {
    struct evhttp_request *req;
    char corr[72];
    struct pgq *q;
    json_t *problem, *summary;
    char checkpoint[16];
    bool failed;
    char err[256];
};

static void audit_free_later(evutil_socket_t fd, short ev, void *arg)
{
    struct audit_req *a = arg;
    pgq_free(a->q);
    json_decref(a->problem);
    json_decref(a->summary);
    free(a);
}

static void audit_step(const PGresult *res, const char *err, void *arg)
{
    struct audit_req *a = arg;
    if (!res && !a->failed) {
        a->failed = true;
        snprintf(a->err, sizeof a->err, "%s", err ? err : "database error");
    }
}

static void audit_problem(const PGresult *res, const char *err, void *arg)
{
    struct audit_req *a = arg;
    audit_step(res, err, arg);
    if (res && PQntuples(res) == 1)
        a->problem = json_pack(
            "{s:s, s:o, s:o, s:s?}", "kind", PQgetvalue(res, 0, 0), "audit_seq",
            PQgetisnull(res, 0, 1) ? json_null() : json_integer(atoll(PQgetvalue(res, 0, 1))),
            "job_id", PQgetisnull(res, 0, 2) ? json_null() : json_string(PQgetvalue(res, 0, 2)),
            "detail", PQgetisnull(res, 0, 3) ? NULL : PQgetvalue(res, 0, 3));
}

static void audit_summary(const PGresult *res, const char *err, void *arg)
{
    struct audit_req *a = arg;
    audit_step(res, err, arg);
    if (res && PQntuples(res) == 1)
        a->summary = json_pack(
            "{s:I, s:o, s:o}", "rows_checked", (json_int_t)atoll(PQgetvalue(res, 0, 0)), "last_seq",
            PQgetisnull(res, 0, 1) ? json_null() : json_integer(atoll(PQgetvalue(res, 0, 1))),
            "last_hash", PQgetisnull(res, 0, 2) ? json_null() : json_string(PQgetvalue(res, 0, 2)));
}

static void audit_checkpoint(const PGresult *res, const char *err, void *arg)
{
    struct audit_req *a = arg;
    audit_step(res, err, arg);
    if (res && PQntuples(res) == 1)
        snprintf(a->checkpoint, sizeof a->checkpoint, "%s", PQgetvalue(res, 0, 0));
}

static void audit_done(const PGresult *res, const char *err, void *arg)
{
    struct audit_req *a = arg;
    audit_step(res, err, arg);
    if (a->failed || !a->summary) {
        reply_error(a->req, 503, a->corr, a->failed ? a->err : "audit check failed");
    } else {
        bool ok = !a->problem && (!a->checkpoint[0] || !strcmp(a->checkpoint, "match"));
        json_t *body = json_deep_copy(a->summary);
        json_object_set_new(body, "ok", json_boolean(ok));
        json_object_set(body, "problem", a->problem ? a->problem : json_null());
        if (a->checkpoint[0])
            json_object_set_new(body, "checkpoint", json_string(a->checkpoint));
        reply_json(a->req, 200, a->corr, body);
    }
    acceptor_release();
    event_base_once(A.base, -1, EV_TIMEOUT, audit_free_later, a, NULL); /* not from within */
    acceptor_maybe_exit();
}

void api_audit_verify(struct evhttp_request *req, const char *corr, char **params)
{
    if (auth_enabled() && !current_auth.admin) {
        reply_error(req, 403, corr, "The audit check needs the admin key (auth.admin_key)");
        return;
    }
    char *expect = query_param(req, "expect");
    char seq[24] = "", hash[80] = "";
    if (expect && (sscanf(expect, "%23[0-9]:%79[0-9a-f]", seq, hash) != 2 || strlen(hash) != 64)) {
        free(expect);
        reply_field_error(req, corr, "query", "expect", "pattern",
                          "expect must be SEQ:HASH (an exported audit_seq and its 64-hex hash)");
        return;
    }
    struct audit_req *a = calloc(1, sizeof *a);
    a->req = req;
    snprintf(a->corr, sizeof a->corr, "%s", corr);
    a->q = pgq_new(A.base, tk.conninfo);
    acceptor_hold();
    const char *cp[2] = {seq, hash};
    if (pgq_exec(a->q, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, audit_step, a) <
            0 ||
        pgq_exec(a->q, audit_verify_sql, 0, NULL, audit_problem, a) < 0 ||
        pgq_exec(a->q, audit_summary_sql, 0, NULL, audit_summary, a) < 0 ||
        (expect && pgq_exec(a->q, audit_checkpoint_sql, 2, cp, audit_checkpoint, a) < 0) ||
        pgq_exec(a->q, "COMMIT", 0, NULL, audit_done, a) < 0) {
        /* the connection failed at once: the queued callbacks already ran (or none did) */
        if (!a->failed) {
            reply_db_unavailable(req, corr, "Database unavailable");
            acceptor_release();
            event_base_once(A.base, -1, EV_TIMEOUT, audit_free_later, a, NULL);
        }
    }
    free(expect);
}
