/*
 * metrics.h — counters and histograms in shared memory, so every acceptor and executor
 * adds to the same numbers and any acceptor can render them for GET /metrics
 * (Prometheus text format). Only atomic adds on the hot path.
 *
 * Context passed, not read: every counter takes the `struct tk_metrics` it adds to
 * (shm_metrics(shm); NULL counts nothing, e.g. library mode without shared memory), and
 * metrics_render takes the segment whose live gauges it shows. Nothing here reads `tk`.
 */
#ifndef TAKO_METRICS_H
#define TAKO_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_ROUTES  32 /* route index from the acceptor's table; the last is "other" */
#define METRICS_CODES   16
#define METRICS_STATUS  5
#define METRICS_ERRORS  16
#define METRICS_BUCKETS 14
#define METRICS_PHASES  4 /* queue, startup, execution, total */

/* Whose restarts are counted (takod_process_restarts_total{role}). */
enum metrics_role {
    METRICS_ROLE_ACCEPTOR = 0,
    METRICS_ROLE_EXECUTOR,
    METRICS_ROLE_DATABASE, /* the managed PostgreSQL */
    METRICS_ROLE_CALLBACKS,
    METRICS_ROLE_SWEEPER,
    METRICS_ROLE_SETTLER,
    METRICS_ROLE_SESSIONS,
    METRICS_ROLE_CLUSTER,
    METRICS_ROLES
};

struct tk_shm;

struct tk_metrics {
    _Atomic uint64_t requests[METRICS_ROUTES][METRICS_CODES];
    _Atomic uint64_t jobs[METRICS_STATUS];
    _Atomic uint64_t errors[METRICS_ERRORS];
    _Atomic uint64_t hist[METRICS_PHASES][METRICS_BUCKETS + 1]; /* +Inf last */
    _Atomic uint64_t hist_sum_us[METRICS_PHASES];
    _Atomic uint64_t hist_count[METRICS_PHASES];
    _Atomic uint64_t restarts[METRICS_ROLES]; /* enum metrics_role */
    _Atomic uint64_t retries;                 /* jobs run again after an infrastructure failure */
    _Atomic uint64_t callbacks[4];            /* delivery attempts: enum metrics_callback */
};

enum metrics_callback {
    METRICS_CB_DELIVERED = 0, /* the receiver answered 2xx */
    METRICS_CB_RETRY,         /* failed; another attempt is due later */
    METRICS_CB_FAILED,        /* failed; the last attempt: recorded failed */
    METRICS_CB_REFUSED,       /* the address is not global: refused, recorded failed */
};

/* The acceptor's route table, for the labels (set once per process). */
void metrics_set_routes(const char *(*name)(int idx), const char *(*method)(int idx), int count);

/* Count a reply (route index or -1, HTTP status). */
void metrics_request(struct tk_metrics *m, int route, int code);
/* Count a finished job: status, error type (or NULL), phases in ms. */
void metrics_job(struct tk_metrics *m, const char *status, const char *error_type, double queue_ms,
                 double startup_ms, double execution_ms, double total_ms);
/* Count a respawn of a process of `role`. */
void metrics_restart(struct tk_metrics *m, enum metrics_role role);
/* Count a callback delivery attempt's outcome. */
void metrics_callback(struct tk_metrics *m, enum metrics_callback outcome);
void metrics_retry(struct tk_metrics *m);

/* Render everything (plus live gauges from the segment) as Prometheus text; malloc'd. */
char *metrics_render(struct tk_shm *shm, size_t *len);

#endif
