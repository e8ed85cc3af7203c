/*
 * metrics.h — counters and histograms in shared memory, so every acceptor and executor
 * adds to the same numbers and any acceptor can render them for GET /metrics
 * (Prometheus text format). Only atomic adds on the hot path.
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

struct tk_metrics {
    _Atomic uint64_t requests[METRICS_ROUTES][METRICS_CODES];
    _Atomic uint64_t jobs[METRICS_STATUS];
    _Atomic uint64_t errors[METRICS_ERRORS];
    _Atomic uint64_t hist[METRICS_PHASES][METRICS_BUCKETS + 1]; /* +Inf last */
    _Atomic uint64_t hist_sum_us[METRICS_PHASES];
    _Atomic uint64_t hist_count[METRICS_PHASES];
    _Atomic uint64_t restarts[4];  /* acceptor, executor, database, callbacks */
    _Atomic uint64_t retries;      /* jobs run again after an infrastructure failure */
    _Atomic uint64_t callbacks[4]; /* delivery attempts: enum metrics_callback */
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
void metrics_request(int route, int code);
/* Count a finished job: status, error type (or NULL), phases in ms. */
void metrics_job(const char *status, const char *error_type, double queue_ms, double startup_ms,
                 double execution_ms, double total_ms);
/* role: 0 acceptor, 1 executor, 2 database, 3 callbacks */
void metrics_restart(int role);
/* Count a callback delivery attempt's outcome. */
void metrics_callback(enum metrics_callback outcome);
void metrics_retry(void);

/* Render everything (plus live gauges from shm) as Prometheus text; malloc'd. */
char *metrics_render(size_t *len);

#endif
