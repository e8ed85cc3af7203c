/*
 * metrics.c — see metrics.h. Fixed label sets keep the shm layout static: HTTP codes and
 * job error types outside the lists are counted as "other".
 */
#include "tako/metrics.h"
#include "tako/shm.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int codes[METRICS_CODES - 1] = {200, 304, 400, 401, 403, 404, 405, 408,
                                             409, 413, 422, 429, 500, 502, 503};
static const char *const statuses[METRICS_STATUS] = {"succeeded", "failed", "timeout", "oom",
                                                     "cancelled"};
static const char *const error_types[METRICS_ERRORS - 1] = {
    "execution_timeout", "oom",          "cancelled",      "interrupted",  "killed",
    "segfault",          "syntax_error", "import_error",   "nonzero_exit", "output_limit",
    "output_error",      "docker_error", "internal_error", "name_error",   "value_error"};
static const double buckets_ms[METRICS_BUCKETS] = {5,   10,  25,   50,   75,   100,   150,
                                                   250, 500, 1000, 2500, 5000, 10000, 30000};
static const char *const phases[METRICS_PHASES] = {"queue", "startup", "execution", "total"};
static const char *const roles[METRICS_ROLES] = {"acceptor", "executor", "database", "callbacks",
                                                 "sweeper",  "settler",  "sessions", "cluster"};
static const char *const cb_outcomes[4] = {"delivered", "retry", "failed", "refused"};

static const char *(*route_name)(int idx);
static const char *(*route_method)(int idx);
static int route_count;

void metrics_set_routes(const char *(*name)(int idx), const char *(*method)(int idx), int count)
{
    route_name = name;
    route_method = method;
    route_count = count < METRICS_ROUTES - 1 ? count : METRICS_ROUTES - 1;
}

void metrics_request(struct tk_metrics *m, int route, int code)
{
    if (!m)
        return;
    int r = route >= 0 && route < METRICS_ROUTES - 1 ? route : METRICS_ROUTES - 1;
    int c = METRICS_CODES - 1;
    for (int i = 0; i < METRICS_CODES - 1; i++)
        if (codes[i] == code)
            c = i;
    atomic_fetch_add_explicit(&m->requests[r][c], 1, memory_order_relaxed);
}

static void observe(struct tk_metrics *m, int phase, double ms)
{
    int b = METRICS_BUCKETS;
    for (int i = 0; i < METRICS_BUCKETS; i++)
        if (ms <= buckets_ms[i]) {
            b = i;
            break;
        }
    atomic_fetch_add_explicit(&m->hist[phase][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->hist_sum_us[phase], (uint64_t)(ms * 1000.0),
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&m->hist_count[phase], 1, memory_order_relaxed);
}

void metrics_job(struct tk_metrics *m, const char *status, const char *error_type, double queue_ms,
                 double startup_ms, double execution_ms, double total_ms)
{
    if (!m)
        return;
    for (int i = 0; i < METRICS_STATUS; i++)
        if (!strcmp(status, statuses[i]))
            atomic_fetch_add_explicit(&m->jobs[i], 1, memory_order_relaxed);
    if (error_type && *error_type) {
        int e = METRICS_ERRORS - 1;
        for (int i = 0; i < METRICS_ERRORS - 1; i++)
            if (!strcmp(error_type, error_types[i]))
                e = i;
        atomic_fetch_add_explicit(&m->errors[e], 1, memory_order_relaxed);
    }
    double v[METRICS_PHASES] = {queue_ms, startup_ms, execution_ms, total_ms};
    for (int p = 0; p < METRICS_PHASES; p++)
        observe(m, p, v[p]);
}

void metrics_restart(struct tk_metrics *m, enum metrics_role role)
{
    if (m && (int)role >= 0 && role < METRICS_ROLES)
        atomic_fetch_add_explicit(&m->restarts[role], 1, memory_order_relaxed);
}

void metrics_callback(struct tk_metrics *m, enum metrics_callback outcome)
{
    if (m && (int)outcome >= 0 && (int)outcome < 4)
        atomic_fetch_add_explicit(&m->callbacks[outcome], 1, memory_order_relaxed);
}

void metrics_retry(struct tk_metrics *m)
{
    if (m)
        atomic_fetch_add_explicit(&m->retries, 1, memory_order_relaxed);
}

struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n) * 2;
        char *p = realloc(o->p, cap);
        if (!p)
            return;
        o->p = p;
        o->cap = cap;
    }
}

char *metrics_render(struct tk_shm *shm, size_t *len)
{
    struct tk_metrics *m = shm ? shm_metrics(shm) : NULL;
    struct out o = {malloc(16384), 0, 16384};
    if (!o.p || !m)
        return o.p;
    o.p[0] = '\0';
    put(&o, "# HELP takod_http_requests_total HTTP requests answered, by route and status.\n"
            "# TYPE takod_http_requests_total counter\n");
    for (int r = 0; r < METRICS_ROUTES; r++)
        for (int c = 0; c < METRICS_CODES; c++) {
            uint64_t n = atomic_load(&m->requests[r][c]);
            if (!n)
                continue;
            bool known = r < route_count && route_name;
            const char *rn = known ? route_name(r) : "other";
            const char *rm = known && route_method ? route_method(r) : "other";
            char code[16];
            snprintf(code, sizeof code, c < METRICS_CODES - 1 ? "%d" : "other",
                     c < METRICS_CODES - 1 ? codes[c] : 0);
            put(&o, "takod_http_requests_total{method=\"%s\",route=\"%s\",code=\"%s\"} %llu\n", rm,
                rn, code, (unsigned long long)n);
        }
    put(&o, "# HELP takod_jobs_total Jobs finished, by status.\n# TYPE takod_jobs_total counter\n");
    for (int i = 0; i < METRICS_STATUS; i++)
        put(&o, "takod_jobs_total{status=\"%s\"} %llu\n", statuses[i],
            (unsigned long long)atomic_load(&m->jobs[i]));
    put(&o, "# HELP takod_job_errors_total Jobs finished with an error, by error type.\n"
            "# TYPE takod_job_errors_total counter\n");
    for (int i = 0; i < METRICS_ERRORS; i++) {
        uint64_t n = atomic_load(&m->errors[i]);
        if (n || i < METRICS_ERRORS - 1)
            put(&o, "takod_job_errors_total{type=\"%s\"} %llu\n",
                i < METRICS_ERRORS - 1 ? error_types[i] : "other", (unsigned long long)n);
    }
    put(&o, "# HELP takod_job_phase_seconds Time a job spent in each phase.\n"
            "# TYPE takod_job_phase_seconds histogram\n");
    for (int p = 0; p < METRICS_PHASES; p++) {
        uint64_t cum = 0;
        for (int b = 0; b <= METRICS_BUCKETS; b++) {
            cum += atomic_load(&m->hist[p][b]);
            if (b < METRICS_BUCKETS)
                put(&o, "takod_job_phase_seconds_bucket{phase=\"%s\",le=\"%g\"} %llu\n", phases[p],
                    buckets_ms[b] / 1000.0, (unsigned long long)cum);
            else
                put(&o, "takod_job_phase_seconds_bucket{phase=\"%s\",le=\"+Inf\"} %llu\n",
                    phases[p], (unsigned long long)cum);
        }
        put(&o, "takod_job_phase_seconds_sum{phase=\"%s\"} %.6f\n", phases[p],
            (double)atomic_load(&m->hist_sum_us[p]) / 1e6);
        put(&o, "takod_job_phase_seconds_count{phase=\"%s\"} %llu\n", phases[p],
            (unsigned long long)atomic_load(&m->hist_count[p]));
    }
    uint32_t warm = 0, execs = 0, starts = 0;
    for (uint32_t i = 0; i < shm->n_procs; i++) {
        struct tk_proc *p = shm_proc(shm, i);
        if (p->role == TK_ROLE_EXECUTOR && atomic_load(&p->pid) > 0) {
            execs++;
            warm += atomic_load(&p->warm); /* each executor's pool size */
            starts += atomic_load(&p->starting) == TK_SLOT_HELD;
        }
    }
    put(&o,
        "# HELP takod_ring_depth Jobs waiting in the dispatch ring.\n# TYPE takod_ring_depth "
        "gauge\n"
        "takod_ring_depth %llu\n"
        "# HELP takod_free_slots Job slots free for admission.\n# TYPE takod_free_slots gauge\n"
        "takod_free_slots %llu\n"
        "# HELP takod_running_jobs Jobs executors hold.\n# TYPE takod_running_jobs gauge\n"
        "takod_running_jobs %u\n"
        "# HELP takod_executors Executor processes alive.\n# TYPE takod_executors gauge\n"
        "takod_executors %u\n"
        "# HELP takod_sessions_live Sessions (stateful interpreters) alive.\n"
        "# TYPE takod_sessions_live gauge\ntakod_sessions_live %u\n"
        "# HELP takod_warm_containers Containers started and waiting for a job.\n"
        "# TYPE takod_warm_containers gauge\ntakod_warm_containers %u\n"
        "# HELP takod_container_starts Containers being created and started now (at most "
        "server.container_starts).\n"
        "# TYPE takod_container_starts gauge\ntakod_container_starts %u\n"
        "# HELP takod_jobs_admitted_total Jobs admitted.\n# TYPE takod_jobs_admitted_total "
        "counter\n"
        "takod_jobs_admitted_total %llu\n"
        "# HELP takod_jobs_rejected_total Jobs refused because every slot was taken.\n"
        "# TYPE takod_jobs_rejected_total counter\ntakod_jobs_rejected_total %llu\n"
        "# HELP takod_job_retries_total Jobs run again after an infrastructure failure.\n"
        "# TYPE takod_job_retries_total counter\ntakod_job_retries_total %llu\n",
        (unsigned long long)ring_count(shm_dispatch(shm)),
        (unsigned long long)ring_count(shm_free(shm)), atomic_load(&shm->running), execs,
        atomic_load(&shm->sessions_live), warm, starts,
        (unsigned long long)atomic_load(&shm->jobs_admitted),
        (unsigned long long)atomic_load(&shm->jobs_rejected_full),
        (unsigned long long)atomic_load(&m->retries));
    put(&o, "# HELP takod_process_restarts_total Child processes respawned after dying.\n"
            "# TYPE takod_process_restarts_total counter\n");
    for (int i = 0; i < METRICS_ROLES; i++)
        put(&o, "takod_process_restarts_total{role=\"%s\"} %llu\n", roles[i],
            (unsigned long long)atomic_load(&m->restarts[i]));
    put(&o, "# HELP takod_callback_attempts_total Callback delivery attempts, by outcome.\n"
            "# TYPE takod_callback_attempts_total counter\n");
    for (int i = 0; i < 4; i++)
        put(&o, "takod_callback_attempts_total{outcome=\"%s\"} %llu\n", cb_outcomes[i],
            (unsigned long long)atomic_load(&m->callbacks[i]));
    put(&o,
        "# HELP takod_docker_available The container engine answered the last call.\n"
        "# TYPE takod_docker_available gauge\ntakod_docker_available %u\n",
        atomic_load(&shm->docker_ok));
    *len = o.len;
    return o.p;
}
