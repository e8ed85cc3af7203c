/*
 * jobstore.h — every statement on the `jobs` table, built from one description of a job's
 * fields. Nothing here runs SQL by itself or knows a connection: a statement is built
 * (SQL text + text parameters) and the caller's connection runs it — the acceptor's async
 * pgq, an executor's or the master's blocking db — through jobs.c, which pairs each
 * statement with its shared-memory transition and is the only writer of `status`.
 *
 * The field table TK_JOB_FIELDS lists the columns a job's owner writes, in the order of
 * their parameters: X(name, type, rep, set, rec)
 *   name  the column and the member of struct job_row
 *   type  how the text parameter is cast (JF_TEXT, JF_UUID, JF_INT, JF_BIGINT, JF_DOUBLE,
 *         JF_BOOL, JF_JSON, JF_JSONB, JF_TIME_US: microseconds since the epoch), and so how
 *         a record read selects it (a time as the API writes it: ISO 8601, to_json's)
 *   rep   the value in struct job_row: TEXT (const char *, NULL = SQL NULL) or JSON
 *         (json_t *, borrowed; the jobstore serializes it; NULL or JSON null = SQL NULL)
 *   set   who writes it: KEY (the id, $1 of every statement), ADMIT (the INSERT, when the
 *         acceptor takes the job), FINISH (the finishing UPDATE, when the executor has its
 *         result), FINISH_KEEP (the same, but a value already there is kept)
 *   rec   REC: a record read selects it (JOBSTORE_RECORD_COLS: GET /jobs/{id}, /executions,
 *         a job's answer read back); NOREC: it is not shown (the job's inputs, bulky or
 *         private, and what only takod itself uses)
 * From it derive: the INSERT's column list and its parameters, the FINISH UPDATE, and so
 * the spooled records (common/dbspool.c keeps a statement's parameters in this order, and
 * replays them against the same SQL); the SELECT list of a record (JOBSTORE_RECORD_COLS,
 * its column numbers JR_<name>) and a row read back from it or from FINISH's parameters
 * (jobstore_row_from_record, jobstore_row_from_finish). `status` is a field of FINISH only
 * (the result says it); every other statement below sets it itself, and says so in its
 * name. A new field is one line here (and, if an answer shows it, one in job_answer).
 *
 * The reply body of a job is built from a job_row by one function, job_answer
 * (common/jobstore.c), whichever way the row was filled, and wherever it is sent:
 *   POST /execute        the executor writes FINISH's parameters into the job's spool dir
 *                        (jobs.c, dbspool's format); the acceptor that answers reads them
 *                        back (jobstore_row_from_finish) and builds the body
 *   a settled job        the same file, from the row jobs.c makes for it
 *   a duplicate submit   from its record (jobstore_row_from_record)
 *   a callback           the trigger of migration 11 (common/db.c) queues the delivery
 *                        without a body, whoever wrote the final status (an executor,
 *                        recovery, a cancel, a replay); the deliverer (workers/deliverer.c)
 *                        reads the record (JOBSTORE_SQL_RECORD) when it sends it
 * Its field order is the API's (docs/API.md), so it is written out there rather than
 * derived from this table's parameter order.
 */
#ifndef TAKO_JOBSTORE_H
#define TAKO_JOBSTORE_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>

/*       name               type         rep   set          rec */
#define TK_JOB_FIELDS(X)                                                                           \
    X(id, JF_TEXT, TEXT, KEY, REC)                                                                 \
    X(job_type, JF_TEXT, TEXT, ADMIT, REC)                                                         \
    X(code, JF_TEXT, TEXT, ADMIT, NOREC)                                                           \
    X(input, JF_JSON, TEXT, ADMIT, NOREC)                                                          \
    X(timeout_s, JF_INT, TEXT, ADMIT, NOREC)                                                       \
    X(memory_bytes, JF_BIGINT, TEXT, ADMIT, NOREC)                                                 \
    X(cpus, JF_DOUBLE, TEXT, ADMIT, NOREC)                                                         \
    X(node, JF_TEXT, TEXT, ADMIT, REC)                                                             \
    X(client_ip, JF_TEXT, TEXT, ADMIT, NOREC)                                                      \
    X(correlation_id, JF_TEXT, TEXT, ADMIT, NOREC)                                                 \
    X(created_at, JF_TIME_US, TEXT, ADMIT, REC)                                                    \
    X(mode, JF_TEXT, TEXT, ADMIT, REC)                                                             \
    X(idempotency_key, JF_TEXT, TEXT, ADMIT, REC)                                                  \
    X(request_hash, JF_TEXT, TEXT, ADMIT, NOREC)                                                   \
    X(parent_id, JF_UUID, TEXT, ADMIT, REC)                                                        \
    X(relationship, JF_TEXT, TEXT, ADMIT, REC)                                                     \
    X(code_hash, JF_TEXT, TEXT, ADMIT, REC)                                                        \
    X(input_hash, JF_TEXT, TEXT, ADMIT, REC)                                                       \
    X(stdin, JF_TEXT, TEXT, ADMIT, NOREC)                                                          \
    X(startup_timeout_s, JF_INT, TEXT, ADMIT, NOREC)                                               \
    X(callback_url, JF_TEXT, TEXT, ADMIT, NOREC)                                                   \
    X(api_key_id, JF_TEXT, TEXT, ADMIT, NOREC)                                                     \
    X(input_files, JF_JSONB, TEXT, ADMIT, NOREC)                                                   \
    X(requirements, JF_JSONB, TEXT, ADMIT, NOREC)                                                  \
    X(status, JF_TEXT, TEXT, FINISH, REC)                                                          \
    X(exit_code, JF_INT, TEXT, FINISH, REC)                                                        \
    X(stdout, JF_TEXT, TEXT, FINISH, REC)                                                          \
    X(stderr, JF_TEXT, TEXT, FINISH, REC)                                                          \
    X(stdout_truncated, JF_BOOL, TEXT, FINISH, REC)                                                \
    X(stderr_truncated, JF_BOOL, TEXT, FINISH, REC)                                                \
    X(output, JF_JSONB, JSON, FINISH, REC)                                                         \
    X(error, JF_JSONB, JSON, FINISH, REC)                                                          \
    X(timing, JF_JSONB, JSON, FINISH, REC)                                                         \
    X(artifacts, JF_JSONB, JSON, FINISH, REC)                                                      \
    X(runtime, JF_TEXT, TEXT, FINISH, REC)                                                         \
    X(container_id, JF_TEXT, TEXT, FINISH, NOREC)                                                  \
    X(ended_at, JF_TIME_US, TEXT, FINISH, REC)                                                     \
    X(started_at, JF_TIME_US, TEXT, FINISH_KEEP, REC)

#define JF_REP_TEXT const char *
#define JF_REP_JSON json_t *

/* One job's values (all borrowed: the row owns nothing). */
struct job_row {
#define JF_MEMBER(name, type, rep, set, rec) JF_REP_##rep name;
    TK_JOB_FIELDS(JF_MEMBER)
#undef JF_MEMBER
};

#define JOBS_INSERT_NPARAMS 24 /* KEY + ADMIT fields (checked in jobstore.c) */
#define JOBS_FINISH_NPARAMS 15 /* KEY + FINISH fields */
#define JOBS_FENCE_NPARAMS  2  /* after FINISH's: the fence (node, attempt) */
#define JOBSTORE_MAX_PARAMS 40 /* a whole record: every field */

/* A statement ready to run: the SQL (a constant: db_exec prepares it by address) and its
 * text parameters. Free it with jobstore_stmt_free (it owns serialized JSON values). */
struct jobstore_stmt {
    const char *sql;
    int n;
    const char *params[JOBSTORE_MAX_PARAMS];
    char *owned[8];
    int n_owned;
    const char *what; /* what it does, for the log: "recording the job's start" */
};
void jobstore_stmt_free(struct jobstore_stmt *st);

/* The SQL of the spooled statements (common/dbspool.c replays their parameters). */
const char *jobstore_sql_insert(void); /* KEY + ADMIT, status 'queued'; RETURNING id */
const char *jobstore_sql_finish(void); /* KEY + FINISH, if unfinished; RETURNING callback_url */
/* The index of a column among the INSERT's parameters, or -1. */
int jobstore_insert_param(const char *column);

/* ---- the statements (jobs.c runs them; their names say what `status` becomes) ---- */
/* queued: the record of an admitted job (ON CONFLICT on the idempotency key: nothing) */
void jobstore_insert(struct jobstore_stmt *st, const struct job_row *row);
/* the same, inserted only if the submitting key is within its quotas counted over the
 * whole database (takod_quota_ok, migration 13): no row when it is not. The quota values
 * are text the caller keeps alive. */
void jobstore_insert_quota(struct jobstore_stmt *st, const struct job_row *row,
                           const char *max_queued, const char *max_unfinished);
/* a record INSERTed whole with its final status: a session's or a cell's, once it ended
 * (docs/SESSIONS.md); every field is a parameter, in table order */
void jobstore_record_whole(struct jobstore_stmt *st, const struct job_row *row);
/*
 * The fence (cluster.enabled): a node's statements on a job it runs hold only while the
 * record still says the job is that node's and no later attempt has started — a node
 * whose lease ran out and whose job another node took over must not write over the new
 * owner's run. NULL members: no fence (one node).
 */
struct jobstore_fence {
    const char *node;
    const char *attempt; /* the run's attempt, as text */
};
/* queued → running, attempt + 1 (fenced: only while the record is fence->node's) */
void jobstore_start(struct jobstore_stmt *st, const char *id, const struct jobstore_fence *f);
/* queued | running → queued (a retry, or a run handed back to the queue) */
void jobstore_requeue(struct jobstore_stmt *st, const char *id, const struct jobstore_fence *f);
/* queued | running → row.status, with the result; fenced by node and attempt (the record's
 * attempt may be lower: a start whose statement was lost) */
void jobstore_finish(struct jobstore_stmt *st, const struct job_row *row,
                     const struct jobstore_fence *f);
/* queued | running → status ("failed", "cancelled") with error_json {type, message, phase} */
void jobstore_settle(struct jobstore_stmt *st, const char *id, const char *status,
                     const char *error_json);
/* queued | running → cancelled ("interrupted") for every synchronous job of `node` */
void jobstore_settle_node_sync(struct jobstore_stmt *st, const char *node);

/* ---- reads ---- */

/*
 * A record's SELECT list: the REC fields in table order (a time as to_json writes it, a
 * uuid or a JSON value as text), then the columns no field describes — attempt (written
 * by jobstore_start), the duration, the queue position of a queued job and the callback's
 * delivery ({url, status, attempts, ...} or NULL). JR_<name> are its column numbers; a
 * query's own columns after it start at JR_NCOLS.
 */
#define JF_SELECT_JF_TEXT(name)       #name
#define JF_SELECT_JF_UUID(name)       #name "::text"
#define JF_SELECT_JF_INT(name)        #name
#define JF_SELECT_JF_BIGINT(name)     #name
#define JF_SELECT_JF_DOUBLE(name)     #name
#define JF_SELECT_JF_BOOL(name)       #name
#define JF_SELECT_JF_JSON(name)       #name "::text"
#define JF_SELECT_JF_JSONB(name)      #name "::text"
#define JF_SELECT_JF_TIME_US(name)    "to_json(" #name ")#>>'{}'"
#define JF_RECORD_COL_REC(name, type) JF_SELECT_##type(name) ", "
#define JF_RECORD_COL_NOREC(name, type)
#define JF_RECORD_COL(name, type, rep, set, rec) JF_RECORD_COL_##rec(name, type)
#define JOBSTORE_RECORD_COLS                                                                       \
    TK_JOB_FIELDS(JF_RECORD_COL)                                                                   \
    "attempt,"                                                                                     \
    " (extract(epoch FROM (coalesce(ended_at, now()) - coalesce(started_at, created_at)))"         \
    "  * 1000)::bigint,"                                                                           \
    " CASE WHEN status = 'queued' THEN (SELECT count(*) FROM jobs q WHERE q.status = 'queued'"     \
    "  AND q.created_at < jobs.created_at) END,"                                                   \
    " CASE WHEN callback_url IS NOT NULL THEN (jsonb_build_object('url', callback_url,"            \
    "  'status', callback_status, 'attempts', 0) || coalesce((SELECT jsonb_build_object("          \
    "  'attempts', d.attempts, 'last_attempt_at', d.last_attempt_at, 'last_http_status',"          \
    "  d.last_http_status, 'last_error', d.last_error, 'delivered_at', d.delivered_at)"            \
    "  FROM callback_deliveries d WHERE d.job_id = jobs.id), '{}'::jsonb))::text END"

#define JF_RECORD_NUM_REC(name) JR_##name,
#define JF_RECORD_NUM_NOREC(name)
#define JF_RECORD_NUM(name, type, rep, set, rec) JF_RECORD_NUM_##rec(name)
enum jobstore_record_col {
    TK_JOB_FIELDS(JF_RECORD_NUM) /* the REC fields: JR_id, JR_job_type, JR_created_at, ... */
    JR_ATTEMPT,
    JR_DURATION,
    JR_QUEUE_POS,
    JR_CALLBACK,
    JR_NCOLS /* a query's own columns after JOBSTORE_RECORD_COLS start here */
};

/* One record: $1 id, $2 the api key id it must have, or NULL for any */
extern const char *const JOBSTORE_SQL_RECORD;

/*
 * A row read back: from tuple `tuple` of a result whose first columns are
 * JOBSTORE_RECORD_COLS (the NOREC fields are NULL; times are ISO 8601 text, not
 * JF_TIME_US's microseconds: such a row is for answers, never written back), or from a
 * FINISH statement's parameters (JOBS_FINISH_NPARAMS, as jobstore_finish gathered them and
 * the spool keeps them; the other fields are NULL). Its TEXT members are borrowed from the
 * result or the parameters; its JSON members are its own: jobstore_row_release lets go.
 */
void jobstore_row_from_record(struct job_row *row, const PGresult *r, int tuple);
void jobstore_row_from_finish(struct job_row *row, const char *const *params);
void jobstore_row_release(struct job_row *row);

/* The unfinished records of a node, oldest first: id, code, input, timeout_s, attempt,
 * job_type, stdin, input_files, requirements, startup_timeout_s (0 for the type's). */
extern const char *const JOBSTORE_SQL_UNFINISHED;
/* The status of one record ($1 id) */
extern const char *const JOBSTORE_SQL_STATUS;
/* The job that holds an idempotency key: $1 key, $2 api key id ("" for none) →
 * id, request_hash, status */
extern const char *const JOBSTORE_SQL_BY_IDEMPOTENCY_KEY;

/* ---- the shared queue (cluster.enabled; docs/OPERATIONS.md, "Several nodes") ---- */

/* The columns of a record a node takes to run it (start-up recovery, a claim):
 * JOBSTORE_RUN_COLS, numbered JRUN_*. */
#define JOBSTORE_RUN_COLS                                                                          \
    "id, code, input::text, timeout_s, attempt, job_type, stdin, input_files::text,"               \
    " requirements::text, coalesce(startup_timeout_s, 0), api_key_id, correlation_id,"             \
    " (extract(epoch FROM created_at) * 1e6)::bigint"
enum {
    JRUN_ID,
    JRUN_CODE,
    JRUN_INPUT,
    JRUN_TIMEOUT,
    JRUN_ATTEMPT,
    JRUN_JOB_TYPE,
    JRUN_STDIN,
    JRUN_FILES,
    JRUN_REQUIREMENTS,
    JRUN_STARTUP_TIMEOUT,
    JRUN_KEY,
    JRUN_CORRELATION,
    JRUN_CREATED, /* microseconds since the epoch: the job's queue time counts from it */
};
/* Claim up to $3 of the oldest unowned queued jobs for node $1 with a lease of $2 s
 * (FOR UPDATE SKIP LOCKED: claimers never wait on each other) → JOBSTORE_RUN_COLS */
extern const char *const JOBSTORE_SQL_CLAIM;
/* A claim given back ($1 id, $2 node): it could not be taken after all */
extern const char *const JOBSTORE_SQL_UNCLAIM;
/* Node $1's unstarted async jobs back to the shared queue (a graceful stop) → id */
extern const char *const JOBSTORE_SQL_RELEASE;
/* Renew the lease ($2 s) of every unfinished job of node $1 */
extern const char *const JOBSTORE_SQL_RENEW;
/* Expired holds of other nodes than $1 (lease $2 s; a node that still heartbeats keeps
 * its jobs), attempts allowed $3: async jobs with attempts left → queued unowned (id,
 * node); without → failed; sync jobs (their client was on that node) → cancelled */
extern const char *const JOBSTORE_SQL_TAKEOVER;
extern const char *const JOBSTORE_SQL_TAKEOVER_FAIL;
extern const char *const JOBSTORE_SQL_TAKEOVER_SYNC;
/* Cancel $1 wherever it is (key $2 or NULL for any): an unowned queued one is settled
 * cancelled here; another node's is flagged and its node told (NOTIFY takod_cancel
 * "<node> <id>") → node, status */
extern const char *const JOBSTORE_SQL_CANCEL_ANYWHERE;
/* Node $1's jobs with a cancel asked through another node → id */
extern const char *const JOBSTORE_SQL_CANCEL_ASKED;

bool jobstore_is_terminal(const char *status);

/*
 * A job's answer — POST /execute's body — from a row: status, output, stdout, stderr,
 * exit_code, error ({type, message}), job_type, id, runtime, timing, the truncation flags
 * and artifacts (NULL text: JSON null; a NULL artifacts: []). The one builder of it.
 */
json_t *job_answer(const struct job_row *row);
/* A session cell's answer from its row (mode 'cell'; docs/SESSIONS.md). */
json_t *cell_answer(const struct job_row *row);

#endif
