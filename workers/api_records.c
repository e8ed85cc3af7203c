/*
 * api_records.c — reading job records: GET /jobs/{id} (status), /jobs/{id}/result (with
 * ?wait: parked in api_wait.c), /executions and /executions/{id}, and artifacts. Every
 * read of a record goes through one SELECT list (jobstore.h's JOBSTORE_RECORD_COLS, from
 * the field table) and one JSON shape (records_json); POST /execute's answer from a record
 * is job_answer's (jobstore.h).
 */
#include "api_jobs.h"
#include "tako/log.h"
#include "tako/outputs.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- records ---- */

static json_t *col_str(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_string(PQgetvalue(r, row, col));
}

static json_t *col_int(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_integer(atoll(PQgetvalue(r, row, col)));
}

static json_t *col_json(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return json_null();
    json_t *j = json_loads(PQgetvalue(r, row, col), JSON_DECODE_ANY, NULL);
    return j ? j : json_null();
}

static bool col_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

/* The record of GET /jobs/{id}/result and /executions; `full` adds view=full's fields. */
json_t *records_json(const PGresult *r, int row, bool full)
{
    const char *job_type = PQgetvalue(r, row, JR_job_type);
    char version[96]; /* the ref it ran: NAME@<version> when pinned, else NAME@latest */
    snprintf(version, sizeof version, strchr(job_type, '@') ? "%s" : "%s@latest", job_type);
    json_t *rec = json_object();
    json_object_set_new(rec, "execution_id", col_str(r, row, JR_id));
    json_object_set_new(rec, "job_id", col_str(r, row, JR_id));
    json_object_set_new(rec, "status", col_str(r, row, JR_status));
    json_object_set_new(rec, "job_type", json_string(job_type));
    json_object_set_new(rec, "job_version", json_string(version));
    json_object_set_new(rec, "created_at", col_str(r, row, JR_created_at));
    json_object_set_new(rec, "started_at", col_str(r, row, JR_started_at));
    json_object_set_new(rec, "ended_at", col_str(r, row, JR_ended_at));
    json_object_set_new(rec, "duration_ms", col_int(r, row, JR_DURATION));
    json_object_set_new(rec, "exit_code", col_int(r, row, JR_exit_code));
    json_object_set_new(rec, "stdout", col_str(r, row, JR_stdout));
    json_object_set_new(rec, "stderr", col_str(r, row, JR_stderr));
    json_object_set_new(rec, "output", col_json(r, row, JR_output));
    json_object_set_new(rec, "error", col_json(r, row, JR_error));
    json_object_set_new(rec, "timing", col_json(r, row, JR_timing));
    json_object_set_new(rec, "runtime", col_str(r, row, JR_runtime));
    json_object_set_new(rec, "mode", col_str(r, row, JR_mode));
    /* where it runs or ran (NULL: waiting unowned in the shared queue, cluster.enabled) */
    json_object_set_new(rec, "node", col_str(r, row, JR_node));
    if (!full)
        return rec;
    json_t *timing = json_object_get(rec, "timing");
    json_object_set_new(rec, "job_ref", json_string(version));
    json_t *arts = col_json(r, row, JR_artifacts);
    json_object_set_new(rec, "artifacts", json_is_array(arts) ? arts : json_array());
    if (!json_is_array(arts))
        json_decref(arts);
    json_object_set_new(rec, "resource_usage",
                        json_pack("{s:n, s:n, s:o}", "max_rss_mb", "cpu_time_ms", "wall_time_ms",
                                  json_is_object(timing)
                                      ? json_deep_copy(json_object_get(timing, "execution_ms"))
                                      : json_null()));
    json_object_set_new(rec, "code_hash", col_str(r, row, JR_code_hash));
    json_object_set_new(rec, "input_hash", col_str(r, row, JR_input_hash));
    json_object_set_new(rec, "parent_execution_id", col_str(r, row, JR_parent_id));
    json_object_set_new(rec, "relationship", col_str(r, row, JR_relationship));
    json_object_set_new(rec, "stdout_truncated",
                        json_boolean(col_bool(r, row, JR_stdout_truncated)));
    json_object_set_new(rec, "stderr_truncated",
                        json_boolean(col_bool(r, row, JR_stderr_truncated)));
    json_object_set_new(rec, "idempotency_key", col_str(r, row, JR_idempotency_key));
    json_object_set_new(rec, "attempt", col_int(r, row, JR_ATTEMPT));
    /* callback_url's delivery: status, attempts, and how the last attempt went */
    if (!PQgetisnull(r, row, JR_CALLBACK))
        json_object_set_new(rec, "callback", col_json(r, row, JR_CALLBACK));
    return rec;
}

/* POST /execute's shape, from a finished record (a duplicate submit of a known job). */
json_t *records_answer(const PGresult *r, int row)
{
    struct job_row jr;
    jobstore_row_from_record(&jr, r, row);
    json_t *resp = job_answer(&jr);
    jobstore_row_release(&jr);
    return resp;
}

/* ---- reading one record asynchronously ---- */

/* owner: the key id the caller may see, or NULL for any (admin, no auth, internal). */
int records_query(const char *id, const char *owner, record_cb cb, void *arg)
{
    const char *p[2] = {id, owner};
    return pgq_exec_prepared(A.pg, JOBSTORE_SQL_RECORD, 2, p, cb, arg);
}

struct rec_req *rec_req_new(struct evhttp_request *req, const char *corr, const char *id)
{
    struct rec_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->req = req;
    snprintf(r->corr, sizeof r->corr, "%s", corr);
    snprintf(r->id, sizeof r->id, "%s", id);
    return r;
}

/* ---- status, result, executions ---- */

static void on_record(const PGresult *res, const char *err, void *arg)
{
    struct rec_req *r = arg;
    if (!res) {
        reply_db_unavailable(r->req, r->corr, "Database unavailable");
    } else if (PQntuples(res) != 1) {
        reply_error(r->req, 404, r->corr, r->kind == 2 ? "Execution not found" : "Job not found");
    } else if (r->kind == 0) { /* GET /jobs/{id} */
        json_t *rec = records_json(res, 0, false);
        json_t *body = json_pack(
            "{s:O, s:O, s:O, s:O, s:O, s:O, s:o, s:O}", "job_id", json_object_get(rec, "job_id"),
            "status", json_object_get(rec, "status"), "created_at",
            json_object_get(rec, "created_at"), "started_at", json_object_get(rec, "started_at"),
            "ended_at", json_object_get(rec, "ended_at"), "duration_ms",
            json_object_get(rec, "duration_ms"), "queue_position", col_int(res, 0, JR_QUEUE_POS),
            "node", json_object_get(rec, "node"));
        json_decref(rec);
        reply_json(r->req, 200, r->corr, body);
    } else if (r->kind == 2 || is_terminal(PQgetvalue(res, 0, JR_status))) {
        reply_json(r->req, 200, r->corr, records_json(res, 0, r->full));
    } else if (!r->wait) {
        reply_json(r->req, 200, r->corr,
                   json_pack("{s:s, s:s, s:s, s:o, s:o}", "job_id", r->id, "status",
                             PQgetvalue(res, 0, JR_status), "message", "Job still in progress",
                             "queue_position", col_int(res, 0, JR_QUEUE_POS), "node",
                             col_str(res, 0, JR_node)));
    } else {
        wait_add(r->req, r->corr, r->id, WAIT_RESULT, r->full, r->wait_ms);
    }
    free(r);
}

static bool parse_view(struct evhttp_request *req, const char *corr, bool *full)
{
    char *view = query_param(req, "view");
    *full = view && !strcmp(view, "full");
    bool ok = !view || !strcmp(view, "full") || !strcmp(view, "slim");
    free(view);
    if (!ok)
        reply_field_error(req, corr, "query", "view", "enum", "view must be full or slim");
    return ok;
}

static void record_route(struct evhttp_request *req, const char *corr, const char *id, int kind)
{
    struct rec_req *r = rec_req_new(req, corr, id);
    r->kind = kind;
    if (kind != 0 && !parse_view(req, corr, &r->full)) {
        free(r);
        return;
    }
    if (kind == 1) {
        char *wait = query_param(req, "wait"), *timeout = query_param(req, "timeout");
        bool ok = true;
        if (wait) {
            r->wait = !strcmp(wait, "true") || !strcmp(wait, "1");
            ok = r->wait || !strcmp(wait, "false") || !strcmp(wait, "0");
            if (!ok)
                reply_field_error(req, corr, "query", "wait", "bool_parsing",
                                  "wait must be true or false");
        }
        double t = 30;
        if (ok && timeout) {
            char *end;
            t = strtod(timeout, &end);
            if (end == timeout || *end || !isfinite(t) || t < 1 || t > 300) {
                ok = false;
                reply_field_error(req, corr, "query", "timeout", "out_of_range",
                                  "timeout must be a number of seconds from 1 to 300");
            }
        }
        r->wait_ms = (int)(t * 1000);
        free(wait);
        free(timeout);
        if (!ok) {
            free(r);
            return;
        }
    }
    if (!uuid_valid(id)) {
        reply_error(req, 404, corr, kind == 2 ? "Execution not found" : "Job not found");
        free(r);
        return;
    }
    if (records_query(id, auth_owner(), on_record, r) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(r);
    }
}

void api_job_status(struct evhttp_request *req, const char *corr, char **params)
{
    record_route(req, corr, params[0], 0);
}

void api_job_result(struct evhttp_request *req, const char *corr, char **params)
{
    record_route(req, corr, params[0], 1);
}

void api_execution(struct evhttp_request *req, const char *corr, char **params)
{
    record_route(req, corr, params[0], 2);
}

struct list_req {
    struct evhttp_request *req;
    char corr[72];
    long long limit, offset;
    bool full;
};

static void on_list(const PGresult *res, const char *err, void *arg)
{
    struct list_req *l = arg;
    if (!res) {
        reply_db_unavailable(l->req, l->corr, "Database unavailable");
    } else {
        json_t *items = json_array();
        int n = PQntuples(res);
        /* the page the filters selected had `rows` rows; the byte cap may have cut it */
        long long rows = n > 0 ? atoll(PQgetvalue(res, 0, JR_NCOLS)) : 0;
        for (int i = 0; i < n && i < l->limit; i++)
            json_array_append_new(items, records_json(res, i, l->full));
        bool more = rows > l->limit || (long long)json_array_size(items) < rows;
        reply_json(l->req, 200, l->corr, page_envelope(items, l->limit, l->offset, more));
    }
    free(l);
}

void api_executions(struct evhttp_request *req, const char *corr, char **params)
{
    struct list_req *l = calloc(1, sizeof *l);
    l->req = req;
    snprintf(l->corr, sizeof l->corr, "%s", corr);
    if (!query_int(req, corr, "limit", 100, 1, 1000, &l->limit) ||
        !query_int(req, corr, "offset", 0, 0, 1000000000, &l->offset) ||
        !parse_view(req, corr, &l->full)) {
        free(l);
        return;
    }
    char *status = query_param(req, "status"), *job_type = query_param(req, "job_type");
    char *mode = query_param(req, "mode");
    if (mode && strcmp(mode, "sync") && strcmp(mode, "async") && strcmp(mode, "session") &&
        strcmp(mode, "cell")) {
        reply_field_error(req, corr, "query", "mode", "enum",
                          "mode must be sync, async, session or cell");
        free(mode);
        free(status);
        free(job_type);
        free(l);
        return;
    }
    if (status && !is_terminal(status) && strcmp(status, "queued") && strcmp(status, "running")) {
        reply_field_error(req, corr, "query", "status", "enum",
                          "status must be queued, running, succeeded, failed, timeout, oom or "
                          "cancelled");
        free(mode);
        free(status);
        free(job_type);
        free(l);
        return;
    }
    char lim[24], off[24], cap[24];
    snprintf(lim, sizeof lim, "%lld", l->limit + 1); /* one more tells has_more */
    snprintf(off, sizeof off, "%lld", l->offset);
    snprintf(cap, sizeof cap, "%lld", (long long)tk.cfg.limits_max_page_bytes);
    const char *p[7] = {status, job_type, lim, off, auth_owner(), cap, mode};
    /* A page stops before the record that would take its bulky columns past
     * limits.max_page_bytes (the first record is always sent): the acceptor never holds
     * more than that (plus one record) of a listing. The database only measures the
     * columns (octet_length reads a TOASTed value's size without fetching it). */
    if (pgq_exec(
            A.pg,
            "SELECT * FROM (SELECT " JOBSTORE_RECORD_COLS ", count(*) OVER () AS page_rows,"
            "  sum(sz) OVER w - sz AS before, row_number() OVER w AS rn"
            " FROM (SELECT *, octet_length(coalesce(stdout, ''))"
            "   + octet_length(coalesce(stderr, '')) + octet_length(coalesce(output::text, ''))"
            "   + octet_length(coalesce(artifacts::text, '')) AS sz FROM jobs"
            "  WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR job_type = $2)"
            "  AND ($5::text IS NULL OR api_key_id = $5)"
            "  AND (($7::text IS NULL AND mode IN ('sync', 'async')) OR mode = $7)"
            "  ORDER BY created_at DESC, id LIMIT $3::integer OFFSET $4::integer) jobs"
            " WINDOW w AS (ORDER BY created_at DESC, id ROWS UNBOUNDED PRECEDING)) page"
            " WHERE rn = 1 OR before < $6::bigint ORDER BY rn",
            7, p, on_list, l) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(l);
    }
    free(status);
    free(job_type);
    free(mode);
}

/* ---- artifacts ---- */

struct art_req {
    struct evhttp_request *req;
    char corr[72];
    bool head;
};

/* Does an If-None-Match header name this ETag (or "*")? */
static bool etag_matches(const char *header, const char *sha)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", header);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!strncmp(tok, "W/", 2))
            tok += 2;
        if (*tok == '"')
            tok++;
        size_t n = strcspn(tok, "\" ");
        if ((n == 1 && *tok == '*') || (n == strlen(sha) && !strncmp(tok, sha, n)))
            return true;
    }
    return false;
}

static void on_artifact(const PGresult *res, const char *err, void *arg)
{
    struct art_req *a = arg;
    struct evhttp_request *req = a->req;
    if (!res) {
        reply_db_unavailable(req, a->corr, "Database unavailable");
    } else if (PQntuples(res) != 1) {
        reply_error(req, 404, a->corr, "Job not found");
    } else if (PQgetisnull(res, 0, 1)) {
        reply_error(req, 404, a->corr, "Artifact not found");
    } else {
        const char *sha = PQgetvalue(res, 0, 2);
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        char etag[80], disp[320];
        snprintf(etag, sizeof etag, "\"%s\"", sha);
        evhttp_add_header(h, "ETag", etag);
        const char *inm =
            evhttp_find_header(evhttp_request_get_input_headers(req), "If-None-Match");
        if (inm && etag_matches(inm, sha)) {
            reply_raw(req, 304, a->corr, "", 0);
        } else {
            evhttp_add_header(h, "Content-Type", PQgetvalue(res, 0, 3));
            snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", PQgetvalue(res, 0, 4));
            evhttp_add_header(h, "Content-Disposition", disp);
            if (a->head) {
                evhttp_add_header(h, "Content-Length", PQgetvalue(res, 0, 1));
                reply_raw(req, 200, a->corr, "", 0);
            } else {
                size_t len = 0;
                unsigned char *data =
                    PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 5), &len);
                reply_raw(req, 200, a->corr, (const char *)data, len);
                PQfreemem(data);
            }
        }
    }
    free(a);
}

void api_artifact(struct evhttp_request *req, const char *corr, char **params)
{
    const char *id = params[0], *name = params[1];
    if (!uuid_valid(id)) {
        reply_error(req, 404, corr, "Job not found");
        return;
    }
    if (!name || !outputs_name_ok(name)) {
        reply_error(req, 400, corr, "Invalid artifact path");
        return;
    }
    struct art_req *a = calloc(1, sizeof *a);
    a->req = req;
    a->head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
    snprintf(a->corr, sizeof a->corr, "%s", corr);
    const char *p[4] = {id, name, a->head ? "f" : "t", auth_owner()};
    if (pgq_exec(A.pg,
                 "SELECT j.id, a.size_bytes, a.sha256, a.content_type, a.name,"
                 " CASE WHEN $3::boolean THEN a.data END"
                 " FROM jobs j LEFT JOIN artifacts a ON a.job_id = j.id AND a.name = $2"
                 " WHERE j.id = $1::uuid AND ($4::text IS NULL OR j.api_key_id = $4)",
                 4, p, on_artifact, a) < 0) {
        reply_db_unavailable(req, corr, "Database unavailable");
        free(a);
    }
}
