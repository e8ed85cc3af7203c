/*
 * jobstore.c — see jobstore.h. The INSERT and the FINISH UPDATE are written once, at their
 * first use, from TK_JOB_FIELDS, and a record's SELECT list by the preprocessor from the
 * same table (jobstore.h); the other statements are short enough to read as they are.
 */
#include "tako/jobstore.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum jf_type {
    JF_TEXT,
    JF_UUID,
    JF_INT,
    JF_BIGINT,
    JF_DOUBLE,
    JF_BOOL,
    JF_JSON,
    JF_JSONB,
    JF_TIME_US
};
enum jf_set { JF_SET_KEY, JF_SET_ADMIT, JF_SET_FINISH, JF_SET_FINISH_KEEP };
enum jf_rep { JF_AS_TEXT, JF_AS_JSON };

static const struct jf_field {
    const char *column;
    enum jf_type type;
    enum jf_rep rep;
    enum jf_set set;
    int record_col; /* its column in JOBSTORE_RECORD_COLS, or -1 */
    size_t offset;  /* in struct job_row */
} fields[] = {
#define JF_COL_REC(name)   JR_##name
#define JF_COL_NOREC(name) -1
#define JF_ROW(name, type, rep, set, rec)                                                          \
    {#name, type, JF_AS_##rep, JF_SET_##set, JF_COL_##rec(name), offsetof(struct job_row, name)},
    TK_JOB_FIELDS(JF_ROW)
#undef JF_ROW
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* The parameter counts the spool and the callers rely on, checked against the table. */
#define JF_IN_INSERT_KEY                           1
#define JF_IN_INSERT_ADMIT                         1
#define JF_IN_INSERT_FINISH                        0
#define JF_IN_INSERT_FINISH_KEEP                   0
#define JF_COUNT_INSERT(name, type, rep, set, rec) +JF_IN_INSERT_##set
#define JF_COUNT_FINISH(name, type, rep, set, rec) +(1 - JF_IN_INSERT_##set)
_Static_assert(0 TK_JOB_FIELDS(JF_COUNT_INSERT) == JOBS_INSERT_NPARAMS, "INSERT parameters");
_Static_assert(1 + 0 TK_JOB_FIELDS(JF_COUNT_FINISH) == JOBS_FINISH_NPARAMS, "FINISH parameters");

static bool in_insert(const struct jf_field *f)
{
    return f->set == JF_SET_KEY || f->set == JF_SET_ADMIT;
}

static bool in_finish(const struct jf_field *f)
{
    return f->set == JF_SET_KEY || f->set == JF_SET_FINISH || f->set == JF_SET_FINISH_KEEP;
}

/* The parameter $n as the column's type wants it. */
static int param_expr(char *buf, size_t len, enum jf_type type, int n)
{
    static const char *const casts[] = {[JF_TEXT] = "",
                                        [JF_UUID] = "::uuid",
                                        [JF_INT] = "::integer",
                                        [JF_BIGINT] = "::bigint",
                                        [JF_DOUBLE] = "::double precision",
                                        [JF_BOOL] = "::boolean",
                                        [JF_JSON] = "::json",
                                        [JF_JSONB] = "::jsonb"};
    if (type == JF_TIME_US)
        return snprintf(buf, len, "to_timestamp($%d::double precision / 1e6)", n);
    return snprintf(buf, len, "$%d%s", n, casts[type]);
}

static char sql_insert[2048], sql_insert_quota[2560], sql_finish[2300], sql_whole[3072];

/* The column list and parameters of the INSERT, and the SET list of the FINISH. */
static void build_sql(void)
{
    char cols[1024] = "id, status", vals[1536] = "$1, 'queued'", expr[96];
    int n = 1, cb = 0;
    for (size_t i = 1; i < N_FIELDS; i++) {
        if (!in_insert(&fields[i]))
            continue;
        param_expr(expr, sizeof expr, fields[i].type, ++n);
        snprintf(cols + strlen(cols), sizeof cols - strlen(cols), ", %s", fields[i].column);
        snprintf(vals + strlen(vals), sizeof vals - strlen(vals), ", %s", expr);
        if (!strcmp(fields[i].column, "callback_url"))
            cb = n;
    }
    /* a callback's delivery is pending from the start (common/callbacks.c) */
    snprintf(sql_insert, sizeof sql_insert,
             "INSERT INTO jobs (%s, callback_status) VALUES (%s,"
             " CASE WHEN $%d::text IS NULL THEN NULL ELSE 'pending' END)"
             " ON CONFLICT DO NOTHING RETURNING id",
             cols, vals, cb);
    /* the quota's form: a SELECT, so its parameters carry their types themselves */
    char qvals[1800] = "$1::uuid, 'queued'";
    int key = 0;
    n = 1;
    for (size_t i = 1; i < N_FIELDS; i++) {
        if (!in_insert(&fields[i]))
            continue;
        param_expr(expr, sizeof expr, fields[i].type, ++n);
        snprintf(qvals + strlen(qvals), sizeof qvals - strlen(qvals), ", %s%s", expr,
                 fields[i].type == JF_TEXT ? "::text" : "");
        if (!strcmp(fields[i].column, "api_key_id"))
            key = n;
    }
    snprintf(sql_insert_quota, sizeof sql_insert_quota,
             "INSERT INTO jobs (%s, callback_status) SELECT %s,"
             " CASE WHEN $%d::text IS NULL THEN NULL ELSE 'pending' END"
             " WHERE takod_quota_ok($%d::text, $%d::integer, $%d::integer)"
             " ON CONFLICT DO NOTHING RETURNING id",
             cols, qvals, cb, key, JOBS_INSERT_NPARAMS + 1, JOBS_INSERT_NPARAMS + 2);

    char sets[1536] = "";
    n = 1;
    for (size_t i = 1; i < N_FIELDS; i++) {
        if (!in_finish(&fields[i]))
            continue;
        param_expr(expr, sizeof expr, fields[i].type, ++n);
        size_t off = strlen(sets);
        if (fields[i].set == JF_SET_FINISH_KEEP)
            snprintf(sets + off, sizeof sets - off, "%s%s = coalesce(%s, %s)", off ? ", " : "",
                     fields[i].column, fields[i].column, expr);
        else
            snprintf(sets + off, sizeof sets - off, "%s%s = %s", off ? ", " : "", fields[i].column,
                     expr);
    }
    /* a record written whole, already ended (a session, a cell): every field, status
     * among them; the audit trigger on INSERT chains it */
    char wcols[1536] = "", wvals[2048] = "";
    for (size_t i = 0; i < N_FIELDS; i++) {
        param_expr(expr, sizeof expr, fields[i].type, (int)i + 1);
        snprintf(wcols + strlen(wcols), sizeof wcols - strlen(wcols), "%s%s", i ? ", " : "",
                 fields[i].column);
        snprintf(wvals + strlen(wvals), sizeof wvals - strlen(wvals), "%s%s", i ? ", " : "", expr);
    }
    snprintf(sql_whole, sizeof sql_whole,
             "INSERT INTO jobs (%s, attempt) VALUES (%s, 1) ON CONFLICT DO NOTHING", wcols, wvals);

    snprintf(sql_finish, sizeof sql_finish,
             "UPDATE jobs SET %s WHERE id = $1 AND status IN ('queued', 'running')"
             " AND ($%d::text IS NULL OR node = $%d::text)"
             " AND ($%d::integer IS NULL OR attempt <= $%d::integer)"
             " RETURNING callback_url",
             sets, JOBS_FINISH_NPARAMS + 1, JOBS_FINISH_NPARAMS + 1, JOBS_FINISH_NPARAMS + 2,
             JOBS_FINISH_NPARAMS + 2);
}

int jobstore_insert_param(const char *column)
{
    int n = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (!in_insert(&fields[i]))
            continue;
        if (!strcmp(fields[i].column, column))
            return n;
        n++;
    }
    return -1;
}

const char *jobstore_sql_insert(void)
{
    if (!sql_insert[0])
        build_sql();
    return sql_insert;
}

const char *jobstore_sql_finish(void)
{
    if (!sql_finish[0])
        build_sql();
    return sql_finish;
}

void jobstore_stmt_free(struct jobstore_stmt *st)
{
    for (int i = 0; i < st->n_owned; i++)
        free(st->owned[i]);
    st->n_owned = 0;
}

/* The row's values of the fields `want` selects, in table order. */
static void gather(struct jobstore_stmt *st, const struct job_row *row,
                   bool (*want)(const struct jf_field *))
{
    st->n = 0;
    st->n_owned = 0;
    for (size_t i = 0; i < N_FIELDS; i++) {
        const struct jf_field *f = &fields[i];
        if (!want(f))
            continue;
        const void *at = (const char *)row + f->offset;
        const char *v;
        if (f->rep == JF_AS_TEXT) {
            v = *(const char *const *)at;
        } else {
            json_t *j = *(json_t *const *)at;
            char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            if (text && st->n_owned < (int)(sizeof st->owned / sizeof st->owned[0]))
                st->owned[st->n_owned++] = text;
            v = text;
        }
        st->params[st->n++] = v;
    }
}

void jobstore_insert(struct jobstore_stmt *st, const struct job_row *row)
{
    gather(st, row, in_insert);
    st->sql = jobstore_sql_insert();
    st->what = "recording the job";
}

void jobstore_insert_quota(struct jobstore_stmt *st, const struct job_row *row,
                           const char *max_queued, const char *max_unfinished)
{
    jobstore_insert(st, row);
    st->sql = sql_insert_quota;
    st->params[st->n++] = max_queued;
    st->params[st->n++] = max_unfinished;
}

static bool in_whole(const struct jf_field *f)
{
    (void)f;
    return true;
}

_Static_assert(N_FIELDS <= JOBSTORE_MAX_PARAMS, "a whole record's parameters");

void jobstore_record_whole(struct jobstore_stmt *st, const struct job_row *row)
{
    if (!sql_whole[0])
        build_sql();
    gather(st, row, in_whole);
    st->sql = sql_whole;
    st->what = "recording an ended session or cell";
}

void jobstore_finish(struct jobstore_stmt *st, const struct job_row *row,
                     const struct jobstore_fence *f)
{
    gather(st, row, in_finish);
    st->params[st->n++] = f ? f->node : NULL;
    st->params[st->n++] = f ? f->attempt : NULL;
    st->sql = jobstore_sql_finish();
    st->what = "recording the job's result";
}

static void one(struct jobstore_stmt *st, const char *sql, const char *what, int n, const char *a,
                const char *b, const char *c)
{
    st->sql = sql;
    st->what = what;
    st->n = n;
    st->n_owned = 0;
    st->params[0] = a;
    st->params[1] = b;
    st->params[2] = c;
}

void jobstore_start(struct jobstore_stmt *st, const char *id, const struct jobstore_fence *f)
{
    static const char sql[] = "UPDATE jobs SET status = 'running', started_at = now(),"
                              " attempt = attempt + 1 WHERE id = $1 AND status = 'queued'"
                              " AND ($2::text IS NULL OR node = $2::text)";
    one(st, sql, "recording the job's start", 2, id, f ? f->node : NULL, NULL);
}

void jobstore_requeue(struct jobstore_stmt *st, const char *id, const struct jobstore_fence *f)
{
    static const char sql[] =
        "UPDATE jobs SET status = 'queued' WHERE id = $1 AND status IN ('queued', 'running')"
        " AND ($2::text IS NULL OR node = $2::text)";
    one(st, sql, "re-queueing the job", 2, id, f ? f->node : NULL, NULL);
}

void jobstore_settle(struct jobstore_stmt *st, const char *id, const char *status,
                     const char *error_json)
{
    static const char sql[] = "UPDATE jobs SET status = $2, ended_at = now(), error = $3::jsonb"
                              " WHERE id = $1 AND status IN ('queued', 'running')";
    one(st, sql, "settling the job", 3, id, status, error_json);
}

void jobstore_settle_node_sync(struct jobstore_stmt *st, const char *node)
{
    static const char sql[] =
        "UPDATE jobs SET status = 'cancelled', ended_at = now(), error ="
        " '{\"type\":\"interrupted\",\"message\":\"takod was stopped before the job finished\","
        "\"phase\":\"execution\"}'::jsonb"
        " WHERE node = $1 AND mode = 'sync' AND status IN ('queued', 'running')";
    one(st, sql, "cancelling the node's unfinished synchronous jobs", 1, node, NULL, NULL);
}

const char *const JOBSTORE_SQL_RECORD =
    "SELECT " JOBSTORE_RECORD_COLS " FROM jobs WHERE id = $1::uuid"
    " AND ($2::text IS NULL OR api_key_id = $2)";

const char *const JOBSTORE_SQL_UNFINISHED = "SELECT " JOBSTORE_RUN_COLS " FROM jobs"
                                            " WHERE node = $1 AND status IN ('queued', 'running')"
                                            " ORDER BY created_at";

/* The shared queue. Claims take the oldest first and skip rows another claimer holds; the
 * outer WHERE repeats the inner one, so a row settled between the two is not claimed. The
 * rows are picked in a MATERIALIZED CTE, not in `WHERE id IN (SELECT ... LIMIT n)`: when
 * the UPDATE meets a row another claimer changed meanwhile, PostgreSQL rechecks it
 * (EvalPlanQual) by running the IN subquery again, and with SKIP LOCKED that run picks
 * other rows, so one claim of LIMIT 4 updated 5, 7, 19 rows under concurrent claims and
 * inserts (tests/integration/test_cluster.py saw one node take 194 jobs for 4 executors).
 * The CTE is run once; a recheck reads its stored rows. */
const char *const JOBSTORE_SQL_CLAIM =
    "WITH pick AS MATERIALIZED ("
    "   SELECT id AS pick_id FROM jobs WHERE status = 'queued' AND node IS NULL"
    "   ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT $3::int)"
    " UPDATE jobs SET node = $1, lease_until = now() + make_interval(secs => $2::int)"
    " FROM pick WHERE id = pick_id AND status = 'queued' AND node IS NULL"
    " RETURNING " JOBSTORE_RUN_COLS;

const char *const JOBSTORE_SQL_UNCLAIM = "UPDATE jobs SET node = NULL, lease_until = NULL"
                                         " WHERE id = $1::uuid AND node = $2 AND status = 'queued'";

const char *const JOBSTORE_SQL_RELEASE =
    "UPDATE jobs SET node = NULL, lease_until = NULL"
    " WHERE node = $1 AND status = 'queued' AND mode = 'async' RETURNING id";

const char *const JOBSTORE_SQL_RENEW =
    "UPDATE jobs SET lease_until = now() + make_interval(secs => $2::int)"
    " WHERE node = $1 AND status IN ('queued', 'running')";

/* what every takeover statement holds: another node's unfinished job whose lease ran out
 * (a job its node took at once has no lease until the node's first renewal: its
 * created_at stands in) and whose node no longer heartbeats. `was` is the row before the
 * UPDATE (a self-join), so RETURNING can name the node that had it. */
#define TAKEOVER_FROM_WHERE                                                                        \
    " FROM jobs was WHERE was.id = jobs.id"                                                        \
    " AND jobs.status IN ('queued', 'running') AND jobs.node IS NOT NULL AND jobs.node <> $1"      \
    " AND coalesce(jobs.lease_until, jobs.created_at + make_interval(secs => $2::int)) < now()"    \
    " AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = jobs.node"                           \
    "   AND n.stopped_at IS NULL AND n.last_seen > now() - make_interval(secs => $2::int))"

const char *const JOBSTORE_SQL_TAKEOVER =
    "UPDATE jobs SET node = NULL, lease_until = NULL, status = 'queued'" TAKEOVER_FROM_WHERE
    " AND jobs.mode = 'async' AND jobs.attempt <= $3::int RETURNING jobs.id, was.node";

const char *const JOBSTORE_SQL_TAKEOVER_FAIL =
    "UPDATE jobs SET status = 'failed', ended_at = now(), lease_until = NULL, error ="
    " jsonb_build_object('type', 'interrupted', 'phase', 'execution', 'message',"
    " 'the job''s node (' || jobs.node || ') stopped answering and no attempts "
    "remain')" TAKEOVER_FROM_WHERE " AND jobs.mode = 'async' AND jobs.attempt > $3::int"
    " RETURNING jobs.id, was.node";

const char *const JOBSTORE_SQL_TAKEOVER_SYNC =
    "UPDATE jobs SET status = 'cancelled', ended_at = now(), lease_until = NULL, error ="
    " jsonb_build_object('type', 'interrupted', 'phase', 'execution', 'message',"
    " 'the node holding the request (' || jobs.node || ') stopped answering')" TAKEOVER_FROM_WHERE
    " AND jobs.mode = 'sync' AND $3::int >= 0 RETURNING jobs.id, was.node";

const char *const JOBSTORE_SQL_CANCEL_ANYWHERE =
    "WITH c AS (UPDATE jobs SET cancel_requested = true,"
    "   status = CASE WHEN node IS NULL THEN 'cancelled' ELSE status END,"
    "   ended_at = CASE WHEN node IS NULL THEN now() ELSE ended_at END,"
    "   error = CASE WHEN node IS NULL THEN '{\"type\":\"cancelled\",\"message\":"
    "\"The job was cancelled before it started\",\"phase\":\"startup\"}'::jsonb"
    "           ELSE error END"
    "  WHERE id = $1::uuid AND status IN ('queued', 'running')"
    "   AND ($2::text IS NULL OR api_key_id = $2) RETURNING id, node, status)"
    " SELECT node, status, CASE WHEN node IS NOT NULL"
    "   THEN pg_notify('takod_cancel', node || ' ' || id::text) END FROM c";

const char *const JOBSTORE_SQL_CANCEL_ASKED =
    "SELECT id::text FROM jobs WHERE node = $1 AND cancel_requested"
    " AND status IN ('queued', 'running')";

const char *const JOBSTORE_SQL_STATUS = "SELECT status FROM jobs WHERE id = $1::uuid";

const char *const JOBSTORE_SQL_BY_IDEMPOTENCY_KEY =
    "SELECT id::text, request_hash, status FROM jobs"
    " WHERE idempotency_key = $1 AND coalesce(api_key_id, '') = $2";

/* A field's value read back from text: a TEXT member borrows it, a JSON member parses it
 * (its own: jobstore_row_release). */
static void set_from_text(struct job_row *row, const struct jf_field *f, const char *text)
{
    void *at = (char *)row + f->offset;
    if (f->rep == JF_AS_TEXT)
        *(const char **)at = text;
    else
        *(json_t **)at = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
}

void jobstore_row_from_record(struct job_row *row, const PGresult *r, int tuple)
{
    memset(row, 0, sizeof *row);
    for (size_t i = 0; i < N_FIELDS; i++) {
        int col = fields[i].record_col;
        if (col >= 0)
            set_from_text(row, &fields[i],
                          PQgetisnull(r, tuple, col) ? NULL : PQgetvalue(r, tuple, col));
    }
}

void jobstore_row_from_finish(struct job_row *row, const char *const *params)
{
    memset(row, 0, sizeof *row);
    int n = 0;
    for (size_t i = 0; i < N_FIELDS; i++)
        if (in_finish(&fields[i]))
            set_from_text(row, &fields[i], params[n++]);
}

void jobstore_row_release(struct job_row *row)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        if (fields[i].rep != JF_AS_JSON)
            continue;
        json_t **at = (json_t **)(void *)((char *)row + fields[i].offset);
        json_decref(*at);
        *at = NULL;
    }
}

bool jobstore_is_terminal(const char *status)
{
    static const char *const terminal[] = {"succeeded", "failed", "timeout", "oom", "cancelled"};
    for (size_t i = 0; i < sizeof terminal / sizeof terminal[0]; i++)
        if (!strcmp(status, terminal[i]))
            return true;
    return false;
}

static json_t *text_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *json_or_null(json_t *j)
{
    return j ? json_incref(j) : json_null();
}

static json_t *member_or_null(json_t *obj, const char *key)
{
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    return v ? json_deep_copy(v) : json_null();
}

json_t *job_answer(const struct job_row *row)
{
    double exec_ms = json_number_value(json_object_get(row->timing, "execution_ms"));
    json_t *a = json_object();
    json_object_set_new(a, "success",
                        json_boolean(row->status && !strcmp(row->status, "succeeded")));
    json_object_set_new(a, "output", json_or_null(row->output));
    json_object_set_new(a, "execution_time", json_real(exec_ms / 1000.0));
    json_object_set_new(a, "stdout", text_or_null(row->stdout));
    json_object_set_new(a, "stderr", text_or_null(row->stderr));
    json_object_set_new(a, "exit_code",
                        row->exit_code ? json_integer(atoll(row->exit_code)) : json_null());
    json_object_set_new(a, "error", member_or_null(row->error, "message"));
    json_object_set_new(a, "error_type", member_or_null(row->error, "type"));
    json_object_set_new(a, "job_type", text_or_null(row->job_type));
    json_object_set_new(a, "execution_id", text_or_null(row->id));
    json_object_set_new(a, "job_id", text_or_null(row->id));
    json_object_set_new(a, "runtime", text_or_null(row->runtime));
    json_object_set_new(a, "node", text_or_null(row->node));
    json_object_set_new(a, "status", text_or_null(row->status));
    json_object_set_new(a, "timing", json_or_null(row->timing));
    json_object_set_new(a, "stdout_truncated",
                        json_boolean(row->stdout_truncated && row->stdout_truncated[0] == 't'));
    json_object_set_new(a, "stderr_truncated",
                        json_boolean(row->stderr_truncated && row->stderr_truncated[0] == 't'));
    json_object_set_new(a, "artifacts",
                        json_is_array(row->artifacts) ? json_incref(row->artifacts) : json_array());
    return a;
}

/* A session's cell: its answer (POST /sessions/{id}/execute, the SSE `result`, GET
 * /sessions/{id}/cells), from its row, however the row was filled (docs/SESSIONS.md). The
 * cell-only parts travel in `output`: {cell_status, execution_count, result, restarted,
 * files_changed, output}. */
json_t *cell_answer(const struct job_row *row)
{
    const json_t *o = row->output;
    double exec_ms = json_number_value(json_object_get(row->timing, "execution_ms"));
    const char *st = json_string_value(json_object_get(o, "cell_status"));
    json_t *a = json_object();
    json_object_set_new(a, "session_id", text_or_null(row->parent_id));
    json_object_set_new(a, "cell_id", text_or_null(row->id));
    json_object_set_new(a, "execution_count",
                        json_integer(json_integer_value(json_object_get(o, "execution_count"))));
    json_object_set_new(a, "status", json_string(st ? st : "error"));
    json_object_set_new(a, "stdout", json_string(row->stdout ? row->stdout : ""));
    json_object_set_new(a, "stderr", json_string(row->stderr ? row->stderr : ""));
    json_object_set_new(a, "stdout_truncated",
                        json_boolean(row->stdout_truncated && row->stdout_truncated[0] == 't'));
    json_object_set_new(a, "stderr_truncated",
                        json_boolean(row->stderr_truncated && row->stderr_truncated[0] == 't'));
    json_object_set_new(a, "result", json_or_null(json_object_get(o, "result")));
    json_object_set_new(a, "error", json_or_null(row->error));
    json_object_set_new(a, "restarted",
                        json_boolean(json_is_true(json_object_get(o, "restarted"))));
    json_object_set_new(a, "timed_out", json_boolean(st && !strcmp(st, "timeout")));
    json_object_set_new(a, "interrupted", json_boolean(st && !strcmp(st, "interrupted")));
    json_object_set_new(a, "exit_code",
                        row->exit_code ? json_integer(atoll(row->exit_code)) : json_null());
    json_object_set_new(a, "execution_time", json_real(exec_ms / 1000.0));
    json_object_set_new(a, "timing", json_or_null(row->timing));
    const json_t *fc = json_object_get(o, "files_changed");
    json_object_set_new(a, "files_changed",
                        json_is_array(fc) ? json_incref((json_t *)fc) : json_array());
    json_object_set_new(a, "output", json_or_null(json_object_get(o, "output")));
    return a;
}
