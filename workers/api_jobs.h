/*
 * api_jobs.h — what the job routes' three files share (routes.h declares their routes):
 *
 *   api_submit.c   POST /execute, /execute/async, rerun, fork (validate → jobs_admit →
 *                  spool → INSERT → jobs_enqueue), cancel, and the stop's settling
 *   api_records.c  reading records: GET /jobs/{id}, /jobs/{id}/result, /executions,
 *                  artifacts, and a record's JSON (records_json) or answer (records_answer)
 *   api_wait.c     waiting for a job: long-polls and duplicate submits parked until its
 *                  record is final, GET /jobs/{id}/events (SSE), and the LISTEN that wakes
 *                  both ("takod_job" notifications)
 */
#ifndef TAKO_API_JOBS_H
#define TAKO_API_JOBS_H

#include "acceptor.h"
#include "tako/jobstore.h"

#include <libpq-fe.h>
#include <stdbool.h>

#define is_terminal jobstore_is_terminal

/* ---- api_records.c ---- */

/* The record of GET /jobs/{id}/result and /executions; `full` adds view=full's fields. */
json_t *records_json(const PGresult *r, int row, bool full);
/* POST /execute's answer, from a finished record (a duplicate submit of a known job). */
json_t *records_answer(const PGresult *r, int row);

typedef void (*record_cb)(const PGresult *res, const char *err, void *arg);
/* Read one record (JOBSTORE_SQL_RECORD: its columns are JR_*); owner: the key id the caller may
 * see, or NULL for any (admin, no auth, internal). 0 or -ENOTCONN (cb not called). */
int records_query(const char *id, const char *owner, record_cb cb, void *arg);

/* A request that needs one record: keeps the request and how to answer. */
struct rec_req {
    struct evhttp_request *req;
    char corr[72];
    char id[40];
    bool full, wait;
    int wait_ms;
    int kind; /* 0 status, 1 result, 2 execution */
};

struct rec_req *rec_req_new(struct evhttp_request *req, const char *corr, const char *id);

/* ---- api_wait.c ---- */

enum wait_kind { WAIT_RESULT, WAIT_EXECUTE };
/* Park req until job id's record is final (answered as kind says), or 408 after timeout_ms. */
void wait_add(struct evhttp_request *req, const char *corr, const char *id, enum wait_kind kind,
              bool full, int timeout_ms);

#endif
