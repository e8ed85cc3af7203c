/*
 * routes.h — the acceptor's route table (routes.c) and the handlers it calls (api_*.c).
 */
#ifndef TAKO_ROUTES_H
#define TAKO_ROUTES_H

#include <event2/http.h>

/* The evhttp callback: checks, authentication, then the handler of the matching route
 * (405 with Allow for another method, 404 for none). */
void routes_dispatch(struct evhttp_request *req, void *arg);
/* The route a request matched (its metrics label), -1 if none. */
int routes_index(struct evhttp_request *req);
const char *routes_name(int idx);
const char *routes_method(int idx);
int routes_count(void);

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
void api_nodes(struct evhttp_request *req, const char *corr, char **params);
void api_pool_stats(struct evhttp_request *req, const char *corr, char **params);
void api_dlq_stats(struct evhttp_request *req, const char *corr, char **params);
void api_dlq_list(struct evhttp_request *req, const char *corr, char **params);
void api_dlq_delete(struct evhttp_request *req, const char *corr, char **params);
void api_metrics(struct evhttp_request *req, const char *corr, char **params);
void api_openapi(struct evhttp_request *req, const char *corr, char **params);
void api_audit_verify(struct evhttp_request *req, const char *corr, char **params);
/* every /sessions route: relayed to the sessions process (api_sessions.c) */
void api_sessions(struct evhttp_request *req, const char *corr, char **params);

/* api_envs.c */
void api_job_types(struct evhttp_request *req, const char *corr, char **params);
void api_job_type(struct evhttp_request *req, const char *corr, char **params);
void api_job_type_build(struct evhttp_request *req, const char *corr, char **params);

#endif
