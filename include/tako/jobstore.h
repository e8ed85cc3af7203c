/*
 * jobstore.h — every statement on the `jobs` table, built from one description of a job's
 * fields. Nothing here runs SQL by itself or knows a connection: a statement is built
 * (SQL text + text parameters) and the caller's connection runs it — the acceptor's async
 * pgq, an executor's or the master's blocking db — through jobs.c, which pairs each
 * statement with its shared-memory transition and is the only writer of `status`.
 *
 * The field table TK_JOB_FIELDS lists the columns a job's owner writes, in the order of
 * their parameters: X(name, type, rep, set)
 *   name  the column and the member of struct job_row
 *   type  how the text parameter is cast (JF_TEXT, JF_UUID, JF_INT, JF_BIGINT, JF_DOUBLE,
 *         JF_BOOL, JF_JSON, JF_JSONB, JF_TIME_US: microseconds since the epoch)
 *   rep   the value in struct job_row: TEXT (const char *, NULL = SQL NULL) or JSON
 *         (json_t *, borrowed; the jobstore serializes it; NULL or JSON null = SQL NULL)
 *   set   who writes it: KEY (the id, $1 of every statement), ADMIT (the INSERT, when the
 *         acceptor takes the job), FINISH (the finishing UPDATE, when the executor has its
 *         result), FINISH_KEEP (the same, but a value already there is kept)
 * From it derive: the INSERT's column list and its parameters, the FINISH UPDATE, and so
 * the spooled records (common/dbspool.c keeps a statement's parameters in this order, and
 * replays them against the same SQL). `status` is a field of FINISH only (the result says
 * it); every other statement below sets it itself, and says so in its name.
 *
 * The reply body of a job (POST /execute, a duplicate submit, a settled job) is built from
 * a job_row by one function, job_answer (common/jobstore.c), whichever way the row was
 * filled: from a run's result (result.c:result_row), from a PostgreSQL record, or for a
 * job that never ran. Its field order is the API's (docs/API.md), so it is written out
 * there rather than derived from this table's parameter order.
 *
 * Not folded in yet: a callback's body is built by the database itself, by the trigger
 * of migration 10 (common/db.c, takod_callback_queue) from the same columns and in the
 * same shape, so that any writer of a final status (an executor, recovery, a replay)
 * queues it. Building it here would take a new migration (the trigger queues the delivery
 * without a body) and the deliverer (workers/deliverer.c) reading the row and calling
 * job_answer; until then a field added to job_answer must be added to that trigger too.
 */
#ifndef TAKO_JOBSTORE_H
#define TAKO_JOBSTORE_H

#include <jansson.h>
#include <stdbool.h>

/*       name               type         rep   set */
#define TK_JOB_FIELDS(X)                                                                           \
    X(id, JF_TEXT, TEXT, KEY)                                                                      \
    X(job_type, JF_TEXT, TEXT, ADMIT)                                                              \
    X(code, JF_TEXT, TEXT, ADMIT)                                                                  \
    X(input, JF_JSON, TEXT, ADMIT)                                                                 \
    X(timeout_s, JF_INT, TEXT, ADMIT)                                                              \
    X(memory_bytes, JF_BIGINT, TEXT, ADMIT)                                                        \
    X(cpus, JF_DOUBLE, TEXT, ADMIT)                                                                \
    X(node, JF_TEXT, TEXT, ADMIT)                                                                  \
    X(client_ip, JF_TEXT, TEXT, ADMIT)                                                             \
    X(correlation_id, JF_TEXT, TEXT, ADMIT)                                                        \
    X(created_at, JF_TIME_US, TEXT, ADMIT)                                                         \
    X(mode, JF_TEXT, TEXT, ADMIT)                                                                  \
    X(idempotency_key, JF_TEXT, TEXT, ADMIT)                                                       \
    X(request_hash, JF_TEXT, TEXT, ADMIT)                                                          \
    X(parent_id, JF_UUID, TEXT, ADMIT)                                                             \
    X(relationship, JF_TEXT, TEXT, ADMIT)                                                          \
    X(code_hash, JF_TEXT, TEXT, ADMIT)                                                             \
    X(input_hash, JF_TEXT, TEXT, ADMIT)                                                            \
    X(stdin, JF_TEXT, TEXT, ADMIT)                                                                 \
    X(startup_timeout_s, JF_INT, TEXT, ADMIT)                                                      \
    X(callback_url, JF_TEXT, TEXT, ADMIT)                                                          \
    X(api_key_id, JF_TEXT, TEXT, ADMIT)                                                            \
    X(input_files, JF_JSONB, TEXT, ADMIT)                                                          \
    X(requirements, JF_JSONB, TEXT, ADMIT)                                                         \
    X(status, JF_TEXT, TEXT, FINISH)                                                               \
    X(exit_code, JF_INT, TEXT, FINISH)                                                             \
    X(stdout, JF_TEXT, TEXT, FINISH)                                                               \
    X(stderr, JF_TEXT, TEXT, FINISH)                                                               \
    X(stdout_truncated, JF_BOOL, TEXT, FINISH)                                                     \
    X(stderr_truncated, JF_BOOL, TEXT, FINISH)                                                     \
    X(output, JF_JSONB, JSON, FINISH)                                                              \
    X(error, JF_JSONB, JSON, FINISH)                                                               \
    X(timing, JF_JSONB, JSON, FINISH)                                                              \
    X(artifacts, JF_JSONB, JSON, FINISH)                                                           \
    X(runtime, JF_TEXT, TEXT, FINISH)                                                              \
    X(container_id, JF_TEXT, TEXT, FINISH)                                                         \
    X(ended_at, JF_TIME_US, TEXT, FINISH)                                                          \
    X(started_at, JF_TIME_US, TEXT, FINISH_KEEP)

#define JF_REP_TEXT const char *
#define JF_REP_JSON json_t *

/* One job's values (all borrowed: the row owns nothing). */
struct job_row {
#define JF_MEMBER(name, type, rep, set) JF_REP_##rep name;
    TK_JOB_FIELDS(JF_MEMBER)
#undef JF_MEMBER
};

#define JOBS_INSERT_NPARAMS 24 /* KEY + ADMIT fields (checked in jobstore.c) */
#define JOBS_FINISH_NPARAMS 15 /* KEY + FINISH fields */
#define JOBSTORE_MAX_PARAMS 24

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
/* queued → running, attempt + 1 */
void jobstore_start(struct jobstore_stmt *st, const char *id);
/* queued | running → queued (a retry, or a run handed back to the queue) */
void jobstore_requeue(struct jobstore_stmt *st, const char *id);
/* queued | running → row.status, with the result */
void jobstore_finish(struct jobstore_stmt *st, const struct job_row *row);
/* queued | running → status ("failed", "cancelled") with error_json {type, message, phase} */
void jobstore_settle(struct jobstore_stmt *st, const char *id, const char *status,
                     const char *error_json);
/* queued | running → cancelled ("interrupted") for every synchronous job of `node` */
void jobstore_settle_node_sync(struct jobstore_stmt *st, const char *node);

/* ---- reads ---- */
/* The unfinished records of a node, oldest first: id, code, input, timeout_s, attempt,
 * job_type, stdin, input_files, requirements, startup_timeout_s (0 for the type's). */
extern const char *const JOBSTORE_SQL_UNFINISHED;
/* The status of one record ($1 id) */
extern const char *const JOBSTORE_SQL_STATUS;
/* The job that holds an idempotency key: $1 key, $2 api key id ("" for none) →
 * id, request_hash, status */
extern const char *const JOBSTORE_SQL_BY_IDEMPOTENCY_KEY;

bool jobstore_is_terminal(const char *status);

/*
 * A job's answer — POST /execute's body — from a row: status, output, stdout, stderr,
 * exit_code, error ({type, message}), job_type, id, runtime, timing, the truncation flags
 * and artifacts (NULL text: JSON null; a NULL artifacts: []). The one builder of it.
 */
json_t *job_answer(const struct job_row *row);

#endif
