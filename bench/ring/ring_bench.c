/*
 * ring_bench.c — throughput of takod's shm MPMC ring (common/ring.c) against two classic
 * ways to pass 8-byte values between processes, in one run:
 *
 *   ring   ring_push/ring_pop_wait on a ring in MAP_SHARED memory, every process with
 *          its intent record (as in takod); a producer that finds the ring full yields
 *          and retries, a consumer sleeps on the ring's futex (100 ms timeout)
 *   ring-poll  the same, but a consumer that finds the ring empty yields and retries
 *          instead of sleeping (not how takod uses it: it shows what the futex costs)
 *   pipe   one pipe; producers write(2) 8 bytes per value, consumers read(2) 8 bytes;
 *          the pipe buffer is set to the same capacity (cap * 8 bytes, F_SETPIPE_SZ)
 *   mutex  a bounded queue of the same capacity in MAP_SHARED memory guarded by a
 *          PTHREAD_PROCESS_SHARED mutex with two condition variables (not full, not empty)
 *
 * For each P producers x C consumers configuration (processes, forked per run), each
 * producer sends N distinct values; after the producers exit the parent sends one stop
 * value per consumer. A run is timed from the start barrier (a pipe the parent closes) to
 * the last consumer's exit, and checked: every value arrived exactly once (count and sum).
 * Each (configuration, transport) runs R times; the table shows the median.
 *
 *   ring_bench [-n N] [-c CAP] [-r R] [-p 1:1,2:2,4:4] [-t ring,ring-poll,pipe,mutex]
 *
 * Output: one row per configuration and transport with values/s (a value = one push plus
 * one pop), then the ring's ratio to the pipe and to the mutex queue.
 */
#include "tako/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STOP      (UINT64_MAX - 1) /* the stop value (RING_TOMBSTONE may not be pushed) */
#define MAX_PROCS 64

enum { T_RING, T_RING_POLL, T_PIPE, T_MUTEX, T_COUNT };
static const char *const t_name[T_COUNT] = {"ring", "ring-poll", "pipe", "mutex"};

struct mqueue {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full;
    uint64_t head, tail; /* head: next to pop; tail: next to push */
    uint32_t cap;
    uint64_t buf[];
};

struct shared {
    _Atomic uint64_t count, sum;
    struct ring_intent intent[MAX_PROCS];
};

struct bench {
    int transport;
    int producers, consumers;
    uint64_t n; /* values per producer */
    uint32_t cap;
    struct shared *sh;
    struct ring *ring;
    struct mqueue *mq;
    int pipefd[2];
};

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void *shared_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        die("mmap");
    memset(p, 0, n);
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the mutex + condvar queue ---- */

static struct mqueue *mq_new(uint32_t cap)
{
    struct mqueue *q = shared_alloc(sizeof *q + (size_t)cap * sizeof q->buf[0]);
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&q->m, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    q->cap = cap;
    return q;
}

static void mq_free(struct mqueue *q)
{
    pthread_mutex_destroy(&q->m);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    munmap(q, sizeof *q + (size_t)q->cap * sizeof q->buf[0]);
}

static void mq_push(struct mqueue *q, uint64_t v)
{
    pthread_mutex_lock(&q->m);
    while (q->tail - q->head == q->cap)
        pthread_cond_wait(&q->not_full, &q->m);
    q->buf[q->tail % q->cap] = v;
    q->tail++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->m);
}

static uint64_t mq_pop(struct mqueue *q)
{
    pthread_mutex_lock(&q->m);
    while (q->tail == q->head)
        pthread_cond_wait(&q->not_empty, &q->m);
    uint64_t v = q->buf[q->head % q->cap];
    q->head++;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->m);
    return v;
}

/* ---- one value in, one value out, per transport ---- */

static void send_one(struct bench *b, struct ring_intent *me, uint64_t v)
{
    switch (b->transport) {
    case T_RING:
    case T_RING_POLL:
        while (ring_push(b->ring, me, v) != 0)
            sched_yield(); /* full */
        break;
    case T_PIPE:
        for (;;) {
            ssize_t w = write(b->pipefd[1], &v, sizeof v);
            if (w == (ssize_t)sizeof v)
                break;
            if (w < 0 && errno == EINTR)
                continue;
            die("write (pipe)"); /* 8 bytes < PIPE_BUF: all or nothing */
        }
        break;
    case T_MUTEX:
        mq_push(b->mq, v);
        break;
    }
}

static uint64_t recv_one(struct bench *b, struct ring_intent *me)
{
    uint64_t v = 0;
    switch (b->transport) {
    case T_RING:
        while (ring_pop_wait(b->ring, me, &v, 100) != 0) {
        }
        ring_intent_clear_held(me);
        break;
    case T_RING_POLL:
        while (ring_pop(b->ring, me, &v) != 0)
            sched_yield(); /* empty */
        ring_intent_clear_held(me);
        break;
    case T_PIPE:
        for (;;) {
            ssize_t r = read(b->pipefd[0], &v, sizeof v);
            if (r == (ssize_t)sizeof v)
                break;
            if (r < 0 && errno == EINTR)
                continue;
            die("read (pipe)"); /* every write is 8 bytes, so every read is too */
        }
        break;
    case T_MUTEX:
        v = mq_pop(b->mq);
        break;
    }
    return v;
}

static void wait_start(int fd)
{
    char c;
    while (read(fd, &c, 1) < 0 && errno == EINTR) {
    }
}

/* One timed run: fork, start, wait, check. Returns seconds, or < 0 on a failed check. */
static double run_once(struct bench *b)
{
    int start[2];
    if (pipe(start) != 0)
        die("pipe");
    atomic_store(&b->sh->count, 0);
    atomic_store(&b->sh->sum, 0);
    for (int i = 0; i < MAX_PROCS; i++)
        ring_intent_init(&b->sh->intent[i]);
    if (b->transport == T_RING || b->transport == T_RING_POLL)
        ring_init(b->ring, b->cap, 1);
    if (b->transport == T_MUTEX)
        b->mq = mq_new(b->cap);
    if (b->transport == T_PIPE) {
        if (pipe(b->pipefd) != 0)
            die("pipe");
        int sz = (int)(b->cap * sizeof(uint64_t));
        if (fcntl(b->pipefd[1], F_SETPIPE_SZ, sz < 4096 ? 4096 : sz) < 0)
            die("F_SETPIPE_SZ");
    }
    pid_t pids[MAX_PROCS];
    int np = 0;
    for (int p = 0; p < b->producers; p++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            close(start[1]);
            wait_start(start[0]);
            struct ring_intent *me = &b->sh->intent[p];
            for (uint64_t i = 0; i < b->n; i++)
                send_one(b, me, (uint64_t)p * b->n + i);
            _exit(0);
        }
        pids[np++] = pid;
    }
    for (int c = 0; c < b->consumers; c++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            close(start[1]);
            wait_start(start[0]);
            struct ring_intent *me = &b->sh->intent[b->producers + c];
            uint64_t count = 0, sum = 0;
            for (;;) {
                uint64_t v = recv_one(b, me);
                if (v == STOP)
                    break;
                count++;
                sum += v;
            }
            atomic_fetch_add(&b->sh->count, count);
            atomic_fetch_add(&b->sh->sum, sum);
            _exit(0);
        }
        pids[np++] = pid;
    }
    close(start[0]);
    double t0 = now_s();
    close(start[1]); /* go */
    int ok = 1, st;
    for (int i = 0; i < b->producers; i++)
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ok = 0;
    for (int c = 0; c < b->consumers; c++)
        send_one(b, NULL, STOP);
    for (int i = b->producers; i < np; i++)
        if (waitpid(pids[i], &st, 0) != pids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ok = 0;
    double t = now_s() - t0;

    uint64_t total = (uint64_t)b->producers * b->n;
    uint64_t want_sum = total * (total - 1) / 2; /* values are 0 .. total-1 */
    if (atomic_load(&b->sh->count) != total || atomic_load(&b->sh->sum) != want_sum) {
        fprintf(stderr, "%s %dp%dc: check failed: %llu values (want %llu)\n", t_name[b->transport],
                b->producers, b->consumers, (unsigned long long)atomic_load(&b->sh->count),
                (unsigned long long)total);
        ok = 0;
    }
    if (b->transport == T_PIPE) {
        close(b->pipefd[0]);
        close(b->pipefd[1]);
    }
    if (b->transport == T_MUTEX)
        mq_free(b->mq);
    return ok ? t : -1.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Is `name` one of the comma-separated words of `list`? */
static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return 1;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: ring_bench [-n values_per_producer] [-c capacity] [-r repeats] "
                    "[-p P:C,P:C,...] [-t ring,ring-poll,pipe,mutex]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    uint64_t n = 200000;
    uint32_t cap = 1024;
    int reps = 3;
    const char *configs = "1:1,2:2,4:4";
    const char *only = "ring,ring-poll,pipe,mutex";
    int opt;
    while ((opt = getopt(argc, argv, "n:c:r:p:t:h")) != -1) {
        switch (opt) {
        case 'n':
            n = strtoull(optarg, NULL, 10);
            break;
        case 'c':
            cap = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            reps = atoi(optarg);
            break;
        case 'p':
            configs = optarg;
            break;
        case 't':
            only = optarg;
            break;
        default:
            usage();
        }
    }
    if (n == 0 || reps < 1 || reps > 99 || cap < 2 || (cap & (cap - 1)) != 0)
        usage();

    struct bench b = {0};
    b.n = n;
    b.cap = cap;
    b.sh = shared_alloc(sizeof *b.sh);
    b.ring = shared_alloc(ring_bytes(cap));

    printf("ring_bench: %llu values per producer, capacity %u, median of %d runs\n",
           (unsigned long long)n, cap, reps);
    printf("%-6s %-10s %10s %10s %14s\n", "procs", "queue", "values", "seconds", "values/s");
    char *list = strdup(configs);
    int failed = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int p, c;
        if (sscanf(tok, "%d:%d", &p, &c) != 2 || p < 1 || c < 1 || p + c > MAX_PROCS)
            usage();
        b.producers = p;
        b.consumers = c;
        double rate[T_COUNT] = {0};
        for (int t = 0; t < T_COUNT; t++) {
            if (!in_list(only, t_name[t]))
                continue;
            b.transport = t;
            double secs[99];
            int bad = 0;
            for (int r = 0; r < reps; r++) {
                secs[r] = run_once(&b);
                bad |= secs[r] < 0;
            }
            qsort(secs, (size_t)reps, sizeof secs[0], cmp_double);
            double med = secs[reps / 2];
            uint64_t total = (uint64_t)p * n;
            rate[t] = bad ? 0 : (double)total / med;
            failed |= bad;
            char procs[16];
            snprintf(procs, sizeof procs, "%dp%dc", p, c);
            printf("%-6s %-10s %10llu %10.3f %14.0f%s\n", procs, t_name[t],
                   (unsigned long long)total, med, rate[t], bad ? "  CHECK FAILED" : "");
            fflush(stdout);
        }
        if (rate[T_RING] > 0 && rate[T_PIPE] > 0 && rate[T_MUTEX] > 0)
            printf("%-6s ring/pipe %.2fx, ring/mutex %.2fx\n", "", rate[T_RING] / rate[T_PIPE],
                   rate[T_RING] / rate[T_MUTEX]);
        if (rate[T_RING_POLL] > 0 && rate[T_PIPE] > 0 && rate[T_MUTEX] > 0)
            printf("%-6s ring-poll/pipe %.2fx, ring-poll/mutex %.2fx\n", "",
                   rate[T_RING_POLL] / rate[T_PIPE], rate[T_RING_POLL] / rate[T_MUTEX]);
    }
    free(list);
    return failed ? 1 : 0;
}
