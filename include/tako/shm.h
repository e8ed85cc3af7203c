/*
 * shm.h — the shared-memory segment every takod process maps: header, process table,
 * job table, and the rings (dispatch, free-index, one done ring per acceptor slot).
 *
 * The master maps it (MAP_SHARED|MAP_ANONYMOUS) before forking, so children inherit it at
 * the same address; still, nothing in it is a pointer: everything is an index or offset.
 *
 *   acceptor: pop a free job index      (free ring; empty → 503)
 *             fill job[k], push (k,gen) (dispatch ring)
 *   executor: pop (k,gen), run, fill result, push (k,gen) to done[job.acceptor_proc],
 *             write that proc entry's eventfd
 *   acceptor: pop done, reply, push k back to the free ring
 *
 * Done rings and eventfds belong to proc-table entries, not to acceptor slots: during a
 * reload two generations of acceptor N run side by side, each with its own done ring. A
 * job remembers the entry and its generation; a completion for an entry whose process
 * has died is released by whoever finds it (the entry's next owner or the master).
 *
 * Job payloads (code, input, outputs) live in the job's spool directory, not in shm.
 */
#ifndef TAKO_SHM_H
#define TAKO_SHM_H

#include "tako/metrics.h"
#include "tako/ratelimit.h"
#include "tako/config.h"
#include "tako/ring.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TK_SHM_MAGIC        "TAKOSHM1"
#define TK_MAX_ACCEPTORS    64
#define TK_RING_ID_DISPATCH 1u
#define TK_RING_ID_FREE     2u
#define TK_RING_ID_SETTLE   3u   /* jobs a dead process left, for the settler (recovery.h) */
#define TK_RING_ID_DONE0    100u /* + proc entry */
#define TK_NO_ACCEPTOR      0xffffu

enum tk_role {
    TK_ROLE_NONE = 0,
    TK_ROLE_ACCEPTOR = 1,
    TK_ROLE_EXECUTOR = 2,
    TK_ROLE_CALLBACKS = 3, /* the callbacks process: delivers callback_url POSTs */
    TK_ROLE_SWEEPER = 4,   /* the master's engine work: containers, job type images */
    TK_ROLE_SETTLER = 5,   /* the master's database work: dead processes' jobs, spool, retention */
    TK_ROLE_SESSIONS = 6,  /* holds every session's container (workers/sessions.c) */
    TK_ROLE_CLUSTER = 7,   /* claims shared-queue jobs for this node (workers/cluster.c) */
};

/* A job slot's life: FREE → FILLING (acceptor) → QUEUED → RUNNING (executor) → DONE → FREE */
enum tk_job_state {
    TK_JOB_FREE = 0,
    TK_JOB_FILLING = 1,
    TK_JOB_QUEUED = 2,
    TK_JOB_RUNNING = 3,
    TK_JOB_DONE = 4,
};

/* An executor's hold on one of server.container_starts' start slots (workers/executor.c). */
enum tk_start_slot { TK_SLOT_NONE = 0, TK_SLOT_CLAIMING, TK_SLOT_HELD, TK_SLOT_WAITING };

/* One process. Slot index = position in the proc table; 64-byte aligned (no false sharing). */
#define TK_PROC_CLIENTS 256

struct tk_proc {
    _Alignas(64) _Atomic int32_t pid; /* 0 = free slot */
    uint8_t role;
    uint8_t pad0;
    uint16_t slot;        /* acceptor or executor number */
    _Atomic uint32_t gen; /* bumps on every respawn of this slot */
    _Atomic uint64_t heartbeat_ms;
    struct ring_intent intent; /* its in-flight ring operation (crash repair) */
    _Atomic uint64_t jobs;     /* jobs handled, for stats */
    _Atomic uint32_t ready;    /* set once the process serves (executor: engine + db up) */
    _Atomic uint32_t warm;     /* executor: a container is started and waiting */
    _Atomic uint32_t starting; /* executor: TK_SLOT_*, its hold on a start slot */
    _Atomic uint32_t conns;    /* acceptor: client connections it holds open */
    /* acceptor: its open connections per client address (hash → count; count 0 = a free
     * entry), written only by it, summed by every acceptor for
     * server.max_connections_per_client. More distinct clients than entries are counted
     * by their own acceptor only. */
    _Atomic uint64_t client_hash[TK_PROC_CLIENTS];
    _Atomic uint32_t client_open[TK_PROC_CLIENTS];
};

struct tk_job {
    _Alignas(64) _Atomic uint32_t state;
    _Atomic uint32_t gen;   /* bumps each time the slot is allocated */
    char id[40];            /* job uuid */
    uint16_t acceptor_proc; /* proc entry of the acceptor waiting, or TK_NO_ACCEPTOR */
    uint32_t acceptor_gen;  /* that entry's generation when the job was admitted */
    uint64_t req_token;     /* the acceptor's pending-request token */
    uint32_t attempt;       /* runs started so far (retries after infrastructure failures) */
    _Atomic int32_t owner_pid;
    _Atomic uint32_t cancel;
    _Atomic uint32_t watchers;    /* GET /jobs/{id}/events streams open: send live output */
    _Atomic uint32_t stale_votes; /* settled while queued: its dispatch entry and its reply
                                     must both let go before the slot is free (jobs.h) */
    _Atomic uint32_t finishing;   /* the executor has the result: too late to cancel */
    uint32_t timeout_s;
    uint32_t startup_timeout_s; /* 0: the job type's */
    uint64_t created_real_us;
    uint64_t created_mono_us;
    char job_type[64];
    char correlation_id[72];
    char container_id[65];
    char key_id[17]; /* the API key that submitted it ("" without authentication) */
};

struct tk_shm {
    char magic[8];
    uint32_t n_jobs; /* power of two */
    uint32_t n_acceptors;
    uint32_t n_executors;
    uint32_t n_procs;
    size_t size;
    size_t procs_off, jobs_off, dispatch_off, free_off, settle_off, done_off, done_stride,
        metrics_off, ratelimit_off;
    /* whose job types' latest images exist (the master looks every 10 s; a build sets
     * its own at once): name "" ends the table */
    struct {
        char name[48];
        _Atomic uint32_t exists;
    } jt_images[TK_MAX_JOB_TYPES];
    /* what the master learned of the executor image (for GET /job-types) */
    _Atomic uint32_t image_exists;
    char python_version[16];
    char runtime[8]; /* "runc", "crun" or "runsc", as the executors use it */
    char backend[8]; /* "docker" or "oci" (executor.backend as chosen at start) */
    _Atomic uint64_t jobs_admitted, jobs_rejected_full, jobs_completed;
    _Atomic uint32_t running;       /* jobs executors hold right now */
    _Atomic uint32_t docker_ok;     /* last executor call to the engine worked */
    _Atomic uint32_t sessions_live; /* the sessions process's live sessions (its one writer) */
    _Atomic uint32_t live_nodes;    /* cluster.enabled: live nodes on the database (the
                                       settler's, from `nodes`); 1 otherwise */
    _Atomic uint32_t started;       /* every executor has been ready once: /health stops
                                       answering 503 "starting" */
    _Atomic uint32_t slot_word;     /* futex: bumped when an executor gives a start slot back */
    _Atomic uint32_t sweep_word;    /* futex: bumped by the master when an executor died, so the
                                       sweeper removes its containers now */
};

/* Round up to a power of two (>= 8). */
uint32_t shm_pow2(uint32_t n);

/*
 * Create and initialise the segment for `n_jobs` (rounded up), `n_acceptors`,
 * `n_executors`. The proc table has room for two generations of each. 0 or -errno.
 */
int shm_create(struct tk_shm **out, uint32_t n_jobs, uint32_t n_acceptors, uint32_t n_executors);
void shm_destroy(struct tk_shm *s);

static inline struct tk_proc *shm_proc(struct tk_shm *s, uint32_t i)
{
    return (struct tk_proc *)((char *)s + s->procs_off) + i;
}
static inline struct tk_job *shm_job(struct tk_shm *s, uint32_t i)
{
    return (struct tk_job *)((char *)s + s->jobs_off) + i;
}
static inline struct tk_metrics *shm_metrics(struct tk_shm *s)
{
    return (struct tk_metrics *)((char *)s + s->metrics_off);
}
static inline struct tk_ratelimit *shm_ratelimit(struct tk_shm *s)
{
    return (struct tk_ratelimit *)((char *)s + s->ratelimit_off);
}
static inline struct ring *shm_dispatch(struct tk_shm *s)
{
    return (struct ring *)((char *)s + s->dispatch_off);
}
static inline struct ring *shm_free(struct tk_shm *s)
{
    return (struct ring *)((char *)s + s->free_off);
}
/* (job, gen) of jobs a dead process left half-settled: the master pushes, the settler pops */
static inline struct ring *shm_settle(struct tk_shm *s)
{
    return (struct ring *)((char *)s + s->settle_off);
}
static inline struct ring *shm_done(struct tk_shm *s, uint32_t proc_idx)
{
    return (struct ring *)((char *)s + s->done_off + (size_t)proc_idx * s->done_stride);
}

/* Ring values are (generation << 32 | job index). */
static inline uint64_t shm_val(uint32_t idx, uint32_t gen)
{
    return ((uint64_t)gen << 32) | idx;
}
static inline uint32_t shm_val_idx(uint64_t v)
{
    return (uint32_t)(v & 0xffffffffu);
}
static inline uint32_t shm_val_gen(uint64_t v)
{
    return (uint32_t)(v >> 32);
}

/* Claim a free proc-table entry for pid (the master, before fork: pid -1) and bump its
 * generation. Returns the entry index or -ENOSPC when full. */
int shm_proc_claim(struct tk_shm *s, int32_t pid, uint8_t role, uint16_t slot);
/* Index of the proc entry for pid, or -ENOENT. */
int shm_proc_find(struct tk_shm *s, int32_t pid);

#endif
