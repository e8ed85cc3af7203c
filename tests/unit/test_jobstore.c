/*
 * test_jobstore.c — the statements derived from TK_JOB_FIELDS are the ones the spool's
 * files were written for (a spooled file is their parameters, positionally), a record's
 * SELECT list is the table's, and the one answer builder gives every path POST /execute's
 * shape — the same bytes from a run's row, from the result file the acceptor reads back,
 * and the same fields from a record.
 */
#include "tako/dbspool.h"
#include "tako/jobstore.h"
#include "tk_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What a parameter of the INSERT or the FINISH must read as (the statements before the
 * field table, and so every spooled file since: dbspool keeps the parameters' order). */
static void expect_has(const char *sql, const char *part)
{
    if (!strstr(sql, part))
        TK_FAIL("\"%s\" not in: %s", part, sql);
}

TK_TEST(insert_keeps_the_spooled_parameter_order)
{
    const char *sql = jobstore_sql_insert();
    expect_has(sql, "INSERT INTO jobs (id, status, job_type, code, input, timeout_s, memory_bytes,"
                    " cpus, node, client_ip, correlation_id, created_at, mode, idempotency_key,"
                    " request_hash, parent_id, relationship, code_hash, input_hash, stdin,"
                    " startup_timeout_s, callback_url, api_key_id, input_files, requirements,"
                    " callback_status)");
    expect_has(sql, "VALUES ($1, 'queued', $2, $3, $4::json, $5::integer, $6::bigint,"
                    " $7::double precision, $8, $9, $10, to_timestamp($11::double precision / 1e6),"
                    " $12, $13, $14, $15::uuid, $16, $17, $18, $19, $20::integer, $21, $22,"
                    " $23::jsonb, $24::jsonb,"
                    " CASE WHEN $21::text IS NULL THEN NULL ELSE 'pending' END)");
    expect_has(sql, "ON CONFLICT DO NOTHING RETURNING id");
    TK_ASSERT_EQ(jobstore_insert_param("id"), 0);
    TK_ASSERT_EQ(jobstore_insert_param("idempotency_key"), 12);
    TK_ASSERT_EQ(jobstore_insert_param("requirements"), JOBS_INSERT_NPARAMS - 1);
    TK_ASSERT_EQ(jobstore_insert_param("stdout"), -1);
}

TK_TEST(finish_keeps_the_spooled_parameter_order)
{
    const char *sql = jobstore_sql_finish();
    expect_has(sql,
               "UPDATE jobs SET status = $2, exit_code = $3::integer, stdout = $4,"
               " stderr = $5, stdout_truncated = $6::boolean, stderr_truncated = $7::boolean,"
               " output = $8::jsonb, error = $9::jsonb, timing = $10::jsonb,"
               " artifacts = $11::jsonb, runtime = $12, container_id = $13,"
               " ended_at = to_timestamp($14::double precision / 1e6),"
               " started_at = coalesce(started_at, to_timestamp($15::double precision / 1e6))");
    /* the fence (cluster.enabled; NULL parameters: none) after FINISH's own */
    expect_has(sql,
               "WHERE id = $1 AND status IN ('queued', 'running')"
               " AND ($16::text IS NULL OR node = $16::text)"
               " AND ($17::integer IS NULL OR attempt <= $17::integer) RETURNING callback_url");
}

TK_TEST(fenced_statements_carry_node_and_attempt)
{
    struct job_row row = {.id = "11111111-1111-1111-1111-111111111111", .status = "succeeded"};
    struct jobstore_fence f = {.node = "node-a", .attempt = "2"};
    struct jobstore_stmt st;
    jobstore_finish(&st, &row, &f);
    TK_ASSERT_EQ(st.n, JOBS_FINISH_NPARAMS + JOBS_FENCE_NPARAMS);
    TK_ASSERT_STREQ(st.params[JOBS_FINISH_NPARAMS], "node-a");
    TK_ASSERT_STREQ(st.params[JOBS_FINISH_NPARAMS + 1], "2");
    jobstore_stmt_free(&st);
    jobstore_start(&st, row.id, &f);
    TK_ASSERT_EQ(st.n, 2);
    TK_ASSERT_STREQ(st.params[1], "node-a");
    expect_has(st.sql, "AND ($2::text IS NULL OR node = $2::text)");
    jobstore_start(&st, row.id, NULL);
    TK_ASSERT(st.params[1] == NULL);
    /* the quota's INSERT: the same columns, from a SELECT gated by takod_quota_ok */
    jobstore_insert_quota(&st, &row, "3", "2");
    TK_ASSERT_EQ(st.n, JOBS_INSERT_NPARAMS + 2);
    expect_has(st.sql, "SELECT $1::uuid, 'queued', $2::text,");
    expect_has(st.sql, "WHERE takod_quota_ok($22::text, $25::integer, $26::integer)"
                       " ON CONFLICT DO NOTHING RETURNING id");
    TK_ASSERT_STREQ(st.params[JOBS_INSERT_NPARAMS], "3");
    jobstore_stmt_free(&st);
}

TK_TEST(statements_take_the_row_in_table_order)
{
    json_t *timing = json_pack("{s:f}", "execution_ms", 1500.0);
    struct job_row row = {.id = "j1",
                          .status = "succeeded",
                          .exit_code = "0",
                          .stdout = "hi\n",
                          .timing = timing,
                          .runtime = "crun",
                          .ended_at = "2",
                          .started_at = "1"};
    struct jobstore_stmt st;
    jobstore_finish(&st, &row, NULL);
    TK_ASSERT_EQ(st.n, JOBS_FINISH_NPARAMS + JOBS_FENCE_NPARAMS);
    TK_ASSERT_STREQ(st.params[0], "j1");
    TK_ASSERT_STREQ(st.params[1], "succeeded");
    TK_ASSERT_STREQ(st.params[3], "hi\n");
    TK_ASSERT(st.params[7] == NULL); /* no output: SQL NULL */
    TK_ASSERT(st.params[8] == NULL); /* no error */
    TK_ASSERT_STREQ(st.params[9], "{\"execution_ms\":1500.0}");
    TK_ASSERT_STREQ(st.params[11], "crun");
    TK_ASSERT_STREQ(st.params[14], "1");
    jobstore_stmt_free(&st);
    jobstore_insert(&st, &row);
    TK_ASSERT_EQ(st.n, JOBS_INSERT_NPARAMS);
    TK_ASSERT_STREQ(st.params[0], "j1");
    json_decref(timing);
}

TK_TEST(one_answer_for_a_result_a_record_and_a_settled_job)
{
    json_t *timing = json_pack("{s:f}", "execution_ms", 250.0);
    json_t *error = json_pack("{s:s, s:s, s:s}", "type", "nonzero_exit", "message", "exit 3",
                              "phase", "execution");
    struct job_row row = {.id = "j2",
                          .job_type = "default",
                          .status = "failed",
                          .exit_code = "3",
                          .stdout = "",
                          .stderr = "boom",
                          .stdout_truncated = "false",
                          .stderr_truncated = "t", /* as PostgreSQL spells true */
                          .error = error,
                          .timing = timing,
                          .runtime = "runc"};
    json_t *a = job_answer(&row);
    char *text = json_dumps(a, JSON_COMPACT | JSON_REAL_PRECISION(9));
    TK_ASSERT_STREQ(
        text, "{\"success\":false,\"output\":null,\"execution_time\":0.25,\"stdout\":\"\","
              "\"stderr\":\"boom\",\"exit_code\":3,\"error\":\"exit 3\",\"error_type\":"
              "\"nonzero_exit\",\"job_type\":\"default\",\"execution_id\":\"j2\",\"job_id\":"
              "\"j2\",\"runtime\":\"runc\",\"node\":null,\"status\":\"failed\",\"timing\":{"
              "\"execution_ms\":"
              "250.0},\"stdout_truncated\":false,\"stderr_truncated\":true,\"artifacts\":[]}");
    free(text);
    json_decref(a);
    /* a record read back with NULL columns: nulls, never a failed build */
    struct job_row bare = {.id = "j3", .status = "succeeded"};
    a = job_answer(&bare);
    TK_ASSERT(a != NULL);
    TK_ASSERT(json_is_true(json_object_get(a, "success")));
    TK_ASSERT(json_is_null(json_object_get(a, "stdout")));
    TK_ASSERT(json_is_null(json_object_get(a, "error")));
    TK_ASSERT(json_is_array(json_object_get(a, "artifacts")));
    json_decref(a);
    json_decref(error);
    json_decref(timing);
}

TK_TEST(record_select_list_is_the_tables_rec_fields)
{
    expect_has("SELECT " JOBSTORE_RECORD_COLS,
               "SELECT id, job_type, node, to_json(created_at)#>>'{}', mode, idempotency_key,"
               " parent_id::text, relationship, code_hash, input_hash, status, exit_code, stdout,"
               " stderr, stdout_truncated, stderr_truncated, output::text, error::text,"
               " timing::text, artifacts::text, runtime, to_json(ended_at)#>>'{}',"
               " to_json(started_at)#>>'{}', attempt, (extract(epoch");
    TK_ASSERT(strstr(JOBSTORE_RECORD_COLS, " code,") == NULL); /* NOREC: not shown */
    TK_ASSERT(strstr(JOBSTORE_RECORD_COLS, "input_files") == NULL);
    TK_ASSERT_EQ(JR_id, 0);
    TK_ASSERT_EQ(JR_node, 2); /* every record names its node (several nodes, migration 13) */
    TK_ASSERT_EQ(JR_status, 10);
    TK_ASSERT_EQ(JR_started_at, 22);
    TK_ASSERT_EQ(JR_ATTEMPT, 23);
    TK_ASSERT_EQ(JR_NCOLS, 27);
    expect_has(JOBSTORE_SQL_RECORD, " FROM jobs WHERE id = $1::uuid");
}

/* A finished run's row, as result.c makes it (floats that need all 17 digits, too). */
static json_t *answer_text_of(const struct job_row *row, char **text)
{
    json_t *a = job_answer(row);
    *text = json_dumps(a, JSON_COMPACT | JSON_REAL_PRECISION(9)); /* reply_json's */
    return a;
}

TK_TEST(the_answer_from_the_result_file_is_the_runs_byte_for_byte)
{
    json_t *timing = json_pack("{s:f, s:f, s:f, s:f}", "queue_ms", 0.1 + 0.2, "startup_ms",
                               12.3456789012345, "execution_ms", 1234.56789, "total_ms", 1e-7);
    json_t *output =
        json_loads("{\"z\": [1, 2.5, {\"k\": null}], \"a\": \"\\u00e9\", \"n\": 1e300}",
                   JSON_DECODE_ANY, NULL);
    json_t *arts = json_pack("[{s:s, s:i, s:s, s:s}]", "name", "a.txt", "size_bytes", 5,
                             "content_type", "text/plain", "sha256", "ab");
    json_t *error = json_pack("{s:s, s:s, s:s, s:i}", "type", "output_limit", "message",
                              "Output over the limit \"was\" dropped", "phase", "completed",
                              "artifacts_skipped", 2);
    struct job_row row = {.id = "0f0e0d0c-0000-4000-8000-000000000001",
                          .job_type = "default",
                          .status = "succeeded",
                          .exit_code = "0",
                          .stdout = "line\n\ttab \xc3\xa9\n",
                          .stderr = "",
                          .stdout_truncated = "true",
                          .stderr_truncated = "false",
                          .output = output,
                          .error = error,
                          .timing = timing,
                          .artifacts = arts,
                          .runtime = "crun",
                          .container_id = "c1",
                          .ended_at = "2",
                          .started_at = "1"};
    char *want;
    json_decref(answer_text_of(&row, &want));

    /* what jobs.c writes (FINISH's parameters in dbspool's document) and reads back */
    struct jobstore_stmt st;
    jobstore_finish(&st, &row, NULL);
    json_t *doc = dbspool_doc(st.params, st.n);
    char *file = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    jobstore_stmt_free(&st);
    doc = json_loads(file, 0, NULL);
    TK_ASSERT(doc != NULL);
    const char *p[JOBS_FINISH_NPARAMS];
    TK_ASSERT_EQ(dbspool_doc_params(doc, p, JOBS_FINISH_NPARAMS), JOBS_FINISH_NPARAMS);
    struct job_row back;
    jobstore_row_from_finish(&back, p);
    TK_ASSERT(back.job_type == NULL); /* an ADMIT field: the acceptor's slot has it */
    back.job_type = "default";
    char *got;
    json_decref(answer_text_of(&back, &got));
    TK_ASSERT_STREQ(got, want);
    jobstore_row_release(&back);
    TK_ASSERT(back.output == NULL && back.timing == NULL);
    free(got);
    free(want);
    free(file);
    json_decref(doc);
    json_decref(timing);
    json_decref(output);
    json_decref(arts);
    json_decref(error);
}

TK_TEST(a_record_reads_back_into_the_same_answer)
{
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc att[JR_NCOLS];
    memset(att, 0, sizeof att);
    for (int i = 0; i < JR_NCOLS; i++)
        att[i].name = (char *)"c";
    TK_ASSERT(PQsetResultAttrs(r, JR_NCOLS, att));
    /* as PostgreSQL spells them: booleans t/f, jsonb's own text */
    static const struct {
        int col;
        const char *v;
    } cols[] = {
        {JR_id, "0f0e0d0c-0000-4000-8000-000000000002"},
        {JR_job_type, "default"},
        {JR_created_at, "2026-12-02T19:50:55.123456+00:00"},
        {JR_status, "failed"},
        {JR_exit_code, "1"},
        {JR_stdout, "out\n"},
        {JR_stderr, "Traceback\n"},
        {JR_stdout_truncated, "f"},
        {JR_stderr_truncated, "t"},
        {JR_output, "{\"a\": 1}"},
        {JR_error, "{\"type\": \"ValueError\", \"phase\": \"execution\", \"message\": \"bad\"}"},
        {JR_timing, "{\"total_ms\": 3.5, \"queue_ms\": 1, \"startup_ms\": 0.5, "
                    "\"execution_ms\": 2000.25}"},
        {JR_runtime, "runc"}};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
        TK_ASSERT(PQsetvalue(r, 0, cols[i].col, (char *)cols[i].v, (int)strlen(cols[i].v)));
    for (int c = 0; c < JR_NCOLS; c++) /* the rest are SQL NULL */
        if (PQgetisnull(r, 0, c) && !PQsetvalue(r, 0, c, NULL, -1))
            TK_FAIL("column %d", c);
    struct job_row row;
    jobstore_row_from_record(&row, r, 0);
    TK_ASSERT_STREQ(row.created_at, "2026-12-02T19:50:55.123456+00:00");
    TK_ASSERT(row.code == NULL && row.artifacts == NULL);
    char *text;
    json_decref(answer_text_of(&row, &text));
    TK_ASSERT_STREQ(
        text,
        "{\"success\":false,\"output\":{\"a\":1},\"execution_time\":2.00025,\"stdout\":"
        "\"out\\n\",\"stderr\":\"Traceback\\n\",\"exit_code\":1,\"error\":\"bad\","
        "\"error_type\":\"ValueError\",\"job_type\":\"default\",\"execution_id\":"
        "\"0f0e0d0c-0000-4000-8000-000000000002\",\"job_id\":"
        "\"0f0e0d0c-0000-4000-8000-000000000002\",\"runtime\":\"runc\",\"node\":null,\"status\":"
        "\"failed\",\"timing\":{\"total_ms\":3.5,\"queue_ms\":1,\"startup_ms\":0.5,"
        "\"execution_ms\":2000.25},\"stdout_truncated\":false,\"stderr_truncated\":true,"
        "\"artifacts\":[]}");
    free(text);
    jobstore_row_release(&row);
    PQclear(r);
}

TK_TEST(terminal_statuses)
{
    static const char *const yes[] = {"succeeded", "failed", "timeout", "oom", "cancelled"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        TK_ASSERT(jobstore_is_terminal(yes[i]));
    TK_ASSERT(!jobstore_is_terminal("queued"));
    TK_ASSERT(!jobstore_is_terminal("running"));
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
