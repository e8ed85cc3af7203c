/*
 * acceptor.h — what the acceptor's files share: the process state, replies, request
 * parsing helpers, and the route handlers (api_submit.c, api_records.c, api_wait.c,
 * api_ops.c).
 *
 * Every handler replies exactly once, now or later (a parked request: a sync job, a
 * long-poll); every reply goes through reply_*() so headers, metrics and keep-alive
 * rules are applied in one place.
 */
#ifndef TAKO_ACCEPTOR_H
#define TAKO_ACCEPTOR_H

#include "tako/db.h"
#include "tako/shm.h"

#include <event2/http.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct event;

/* A request parked on a job slot: a sync job's client, answered by the completion. */
struct pending {
    struct evhttp_request *req; /* NULL when nobody waits on this slot */
    uint64_t token;
    char corr[72];
};

struct acceptor_state {
    int slot;
    uint32_t gen;
    struct tk_proc *me;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct pgq *pg;
    struct event *done_ev;
    struct pending *pending; /* indexed by job slot */
    uint64_t next_token;
    size_t inflight;           /* parked requests (sync jobs, long-polls) */
    bool draining;             /* QUIT: no new connections; finish what we hold */
    bool stopping;             /* TERM: settle what we hold now, then exit */
    struct event *stop_timer;  /* bounds a fast stop */
    struct event *drain_timer; /* QUIT: take what is queued, then close the listener */
    int drain_polls;
    struct event *db_timer; /* start-up: accept once the database is up (bounded) */
    int db_waited_ms;
    bool fatal;
};

extern struct acceptor_state A;

/* ---- replies (acceptor.c) ---- */
void reply_json(struct evhttp_request *req, int code, const char *corr, json_t *body); /* steals */
void reply_raw(struct evhttp_request *req, int code, const char *corr, const char *body,
               size_t len);
void reply_error(struct evhttp_request *req, int code, const char *corr, const char *detail);
/* 503 {"detail", "error_type": "database_unavailable", "correlation_id"} + Retry-After: the
 * one answer for "PostgreSQL is away and this request needs it" (nothing was done). */
void reply_db_unavailable(struct evhttp_request *req, const char *corr, const char *detail);
/* 422 with FastAPI-shaped field errors: {"detail": [{"loc": [...], "msg", "type"}]} */
void reply_422(struct evhttp_request *req, const char *corr, json_t *errors);
void field_error(json_t *errors, const char *where, const char *field, const char *type,
                 const char *msg);
/* A single-field 422 in one call. */
void reply_field_error(struct evhttp_request *req, const char *corr, const char *where,
                       const char *field, const char *type, const char *msg);

/* Parse the JSON body into an object (an empty body is {} when allow_empty). On failure
 * it replies (400 malformed, 422 not an object) and returns NULL. */
json_t *body_object(struct evhttp_request *req, const char *corr, bool allow_empty);
/* The same on bytes, without a request: NULL with the status in *code and the error body
 * in *reply (the caller sends or frees it). */
json_t *body_parse(const char *body, size_t len, bool allow_empty, const char *corr, int *code,
                   json_t **reply);
/* The error bodies: {"detail": detail or errors (stolen), "correlation_id": corr} */
json_t *error_body(const char *detail, const char *corr);
json_t *errors_body(json_t *errors, const char *corr);
/* Reject keys not in `known` (NULL-terminated), adding errors. */
void check_known_fields(json_t *obj, const char *const *known, json_t *errors);

/* A query parameter (decoded) or NULL; the caller frees it. */
char *query_param(struct evhttp_request *req, const char *name);

void acceptor_maybe_exit(void);
const char *acceptor_route_name(int idx);
int acceptor_route_count(void);

/* ---- parked requests (A.pending and A.inflight are written only in acceptor.c) ---- */
/* A sync job's request waits on its slot for the completion (on_done answers it). */
void acceptor_park(uint32_t idx, struct evhttp_request *req, uint64_t token, const char *corr);
/* Slot idx's request (this token's) is no longer parked there: the caller answers it.
 * false when it was not parked (answered already). */
bool acceptor_unpark(uint32_t idx, uint64_t token);
bool acceptor_parked(uint32_t idx);
/* A request parked elsewhere (a long-poll, an event stream, a build): the acceptor does
 * not exit while any is held. */
void acceptor_hold(void);
void acceptor_let_go(void);
/* Answer slot idx's parked request with an error, and give the slot back. */
void fail_pending(uint32_t idx, int code, const char *detail);

/* ---- routes ---- */
typedef void (*route_fn)(struct evhttp_request *req, const char *corr, char **params);

/* the job routes: api_submit.c, api_records.c, api_wait.c (api_jobs.h) */
void api_execute(struct evhttp_request *req, const char *corr, char **params);
void api_execute_async(struct evhttp_request *req, const char *corr, char **params);
void api_job_status(struct evhttp_request *req, const char *corr, char **params);
void api_job_result(struct evhttp_request *req, const char *corr, char **params);
void api_job_cancel(struct evhttp_request *req, const char *corr, char **params);
void api_job_rerun(struct evhttp_request *req, const char *corr, char **params);
void api_job_fork(struct evhttp_request *req, const char *corr, char **params);
void api_artifact(struct evhttp_request *req, const char *corr, char **params);
void api_job_events(struct evhttp_request *req, const char *corr, char **params);
void api_executions(struct evhttp_request *req, const char *corr, char **params);
void api_execution(struct evhttp_request *req, const char *corr, char **params);
void api_jobs_init(void);
/* A TERM: queued jobs of ours become cancelled ("interrupted") and are answered. */
void api_jobs_stop(void);
/* Reply to every parked long-poll (fast stop deadline). */
void api_jobs_drop_waiters(void);

/* api_ops.c */
void api_health(struct evhttp_request *req, const char *corr, char **params);
void api_pool_stats(struct evhttp_request *req, const char *corr, char **params);
void api_dlq_stats(struct evhttp_request *req, const char *corr, char **params);
void api_dlq_list(struct evhttp_request *req, const char *corr, char **params);
void api_dlq_delete(struct evhttp_request *req, const char *corr, char **params);
void api_metrics(struct evhttp_request *req, const char *corr, char **params);
void api_openapi(struct evhttp_request *req, const char *corr, char **params);
void api_audit_verify(struct evhttp_request *req, const char *corr, char **params);

/* api_envs.c */
void api_job_types(struct evhttp_request *req, const char *corr, char **params);
void api_job_type(struct evhttp_request *req, const char *corr, char **params);
void api_job_type_build(struct evhttp_request *req, const char *corr, char **params);

/* ---- auth (auth.c) ---- */
struct request_auth {
    bool ok;    /* a configured key was presented */
    bool admin; /* it is the admin key */
    char key_id[17];
};
/* Who the request being handled is (valid during a handler call; copy it for later). */
extern struct request_auth current_auth;
void auth_init(void);
bool auth_enabled(void);
/* The key id whose jobs this request may see, or NULL when it may see all (admin, or no
 * authentication configured). */
const char *auth_owner(void);
/* Rate limit, then authentication (unless open_route). false: it has replied (429/401). */
bool auth_gate(struct evhttp_request *req, const char *corr, bool open_route);

/* ---- shared by the api files ---- */
/* Parse "limit"/"offset"-style integers: 422 and false on a bad value. */
bool query_int(struct evhttp_request *req, const char *corr, const char *name, long long dflt,
               long long lo, long long hi, long long *out);
/* The pagination envelope: {items, limit, offset, has_more, count}. */
json_t *page_envelope(json_t *items, long long limit, long long offset, bool has_more);

#endif
