/*
 * claim_bench.c — claims per second of the shared queue's claim statement, with N claimer
 * connections at once (bench/cluster/claims.py drives it; see its README).
 *
 *   claim_bench CONNINFO THREADS SECONDS BATCH
 *
 * Each thread opens its own connection, prepares the claim, waits for the others, then
 * runs it back to back as node "bench-<thread>" with a 30 s lease and LIMIT BATCH until
 * SECONDS have passed or the queue is empty (a claim that returns no row). It prints one
 * JSON object: claims (rows), calls, the wall time from the common start to the last
 * thread's end, claims/s, and the per-call latency p50/p99 (ms) over all threads.
 * libpq only, one statement per round trip: what is measured is PostgreSQL's side of the
 * claim (the SKIP LOCKED scan, the UPDATE, its commit) plus one loopback round trip.
 * The statement is takod's own: JOBSTORE_SQL_CLAIM of common/jobstore.c ($1 node, $2 lease
 * seconds, $3 how many), linked from takocommon, so the bench cannot drift from it.
 */
#include "tako/jobstore.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct worker {
    pthread_t th;
    int idx;
    PGconn *c;
    long claims, calls, max_rows; /* max_rows: the most one claim returned (<= BATCH) */
    double *lat;                  /* ms per call */
    size_t nlat, caplat;
    double end;
    int failed;
};

static const char *conninfo;
static int batch;
static double seconds;
static pthread_barrier_t ready, go; /* all prepared; t0 is set */
static double t0;
static atomic_int empty;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    char node[32], lim[16];
    snprintf(node, sizeof node, "bench-%d", w->idx);
    snprintf(lim, sizeof lim, "%d", batch);
    const char *p[3] = {node, "30", lim};
    PGresult *r = PQprepare(w->c, "claim", JOBSTORE_SQL_CLAIM, 3, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "claim_bench: prepare: %s", PQerrorMessage(w->c));
        w->failed = 1;
    }
    PQclear(r);
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&go);
    if (w->failed)
        return NULL;
    double deadline = t0 + seconds;
    while (!atomic_load(&empty)) {
        double a = now_s();
        if (a >= deadline)
            break;
        r = PQexecPrepared(w->c, "claim", 3, p, NULL, NULL, 0);
        double b = now_s();
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "claim_bench: claim: %s", PQerrorMessage(w->c));
            PQclear(r);
            w->failed = 1;
            break;
        }
        int n = PQntuples(r);
        PQclear(r);
        w->calls++;
        w->claims += n;
        if (n > w->max_rows)
            w->max_rows = n;
        if (w->nlat == w->caplat) {
            w->caplat = w->caplat ? w->caplat * 2 : 4096;
            w->lat = realloc(w->lat, w->caplat * sizeof *w->lat);
            if (!w->lat) {
                fprintf(stderr, "claim_bench: out of memory\n");
                exit(1);
            }
        }
        w->lat[w->nlat++] = (b - a) * 1000.0;
        if (n == 0)
            atomic_store(&empty, 1); /* the queue is drained: everyone stops */
    }
    w->end = now_s();
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double p)
{
    if (!n)
        return 0;
    double k = (double)(n - 1) * p / 100.0;
    size_t lo = (size_t)k, hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (k - (double)lo);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: claim_bench CONNINFO THREADS SECONDS BATCH\n");
        return 2;
    }
    conninfo = argv[1];
    int threads = atoi(argv[2]);
    seconds = atof(argv[3]);
    batch = atoi(argv[4]);
    if (threads < 1 || threads > 256 || seconds <= 0 || batch < 1) {
        fprintf(stderr, "claim_bench: THREADS 1..256, SECONDS > 0, BATCH >= 1\n");
        return 2;
    }
    struct worker *w = calloc((size_t)threads, sizeof *w);
    for (int i = 0; i < threads; i++) {
        w[i].idx = i;
        w[i].c = PQconnectdb(conninfo);
        if (PQstatus(w[i].c) != CONNECTION_OK) {
            fprintf(stderr, "claim_bench: connect: %s", PQerrorMessage(w[i].c));
            return 1;
        }
    }
    pthread_barrier_init(&ready, NULL, (unsigned)threads + 1);
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        pthread_create(&w[i].th, NULL, run, &w[i]);
    pthread_barrier_wait(&ready);
    t0 = now_s(); /* the workers read it after `go` */
    pthread_barrier_wait(&go);
    long claims = 0, calls = 0, max_rows = 0;
    size_t nlat = 0;
    double end = t0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].th, NULL);
        claims += w[i].claims;
        calls += w[i].calls;
        if (w[i].max_rows > max_rows)
            max_rows = w[i].max_rows;
        nlat += w[i].nlat;
        failed |= w[i].failed;
        if (w[i].end > end)
            end = w[i].end;
    }
    double *all = malloc((nlat ? nlat : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        if (w[i].nlat)
            memcpy(all + k, w[i].lat, w[i].nlat * sizeof *all);
        k += w[i].nlat;
        free(w[i].lat);
        PQfinish(w[i].c);
    }
    qsort(all, nlat, sizeof *all, cmp_double);
    double wall = end - t0;
    printf("{\"threads\": %d, \"batch\": %d, \"claims\": %ld, \"calls\": %ld, \"seconds\": %.3f,"
           " \"claims_per_s\": %.1f, \"calls_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f,"
           " \"max_rows\": %ld, \"drained\": %s, \"failed\": %s}\n",
           threads, batch, claims, calls, wall, wall > 0 ? (double)claims / wall : 0.0,
           wall > 0 ? (double)calls / wall : 0.0, pct(all, nlat, 50), pct(all, nlat, 99), max_rows,
           atomic_load(&empty) ? "true" : "false", failed ? "true" : "false");
    free(all);
    free(w);
    return failed ? 1 : 0;
}
