/*
 * shm.c — lays out and initialises the shared segment (see shm.h).
 */
#include "tako/shm.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#define ALIGN64(x) (((x) + 63u) & ~(size_t)63u)

uint32_t shm_pow2(uint32_t n)
{
    uint32_t p = 8;
    while (p < n && p < (1u << 30))
        p <<= 1;
    return p;
}

int shm_create(struct tk_shm **out, uint32_t n_jobs, uint32_t n_acceptors, uint32_t n_executors)
{
    if (n_acceptors == 0 || n_acceptors > TK_MAX_ACCEPTORS || n_executors == 0)
        return -EINVAL;
    n_jobs = shm_pow2(n_jobs);
    /* per generation +3: the callbacks process, the sweeper and the settler; once: the
     * sessions and the cluster processes */
    uint32_t n_procs = 2 * (n_acceptors + n_executors + 4) + 6;
    size_t ring_sz = ALIGN64(ring_bytes(n_jobs));
    size_t off = ALIGN64(sizeof(struct tk_shm));
    size_t procs_off = off;
    off += ALIGN64((size_t)n_procs * sizeof(struct tk_proc));
    size_t jobs_off = off;
    off += ALIGN64((size_t)n_jobs * sizeof(struct tk_job));
    size_t dispatch_off = off;
    off += ring_sz;
    size_t free_off = off;
    off += ring_sz;
    size_t settle_off = off;
    off += ring_sz;
    size_t done_off = off;
    off += ring_sz * n_procs;
    size_t metrics_off = off;
    off += ALIGN64(sizeof(struct tk_metrics));
    size_t ratelimit_off = off;
    off += ALIGN64(sizeof(struct tk_ratelimit));

    void *p = mmap(NULL, off, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    struct tk_shm *s = p; /* mmap'd anonymous memory is zeroed */
    memcpy(s->magic, TK_SHM_MAGIC, sizeof s->magic);
    s->n_jobs = n_jobs;
    s->n_acceptors = n_acceptors;
    s->n_executors = n_executors;
    s->n_procs = n_procs;
    s->size = off;
    s->procs_off = procs_off;
    s->jobs_off = jobs_off;
    s->dispatch_off = dispatch_off;
    s->free_off = free_off;
    s->settle_off = settle_off;
    s->done_off = done_off;
    s->done_stride = ring_sz;
    s->metrics_off = metrics_off;
    s->ratelimit_off = ratelimit_off;
    for (uint32_t i = 0; i < n_procs; i++)
        ring_intent_init(&shm_proc(s, i)->intent);
    ring_init(shm_dispatch(s), n_jobs, TK_RING_ID_DISPATCH);
    ring_init(shm_free(s), n_jobs, TK_RING_ID_FREE);
    ring_init(shm_settle(s), n_jobs, TK_RING_ID_SETTLE);
    for (uint32_t i = 0; i < n_procs; i++)
        ring_init(shm_done(s, i), n_jobs, TK_RING_ID_DONE0 + i);
    for (uint32_t i = 0; i < n_jobs; i++) {
        struct tk_job *j = shm_job(s, i);
        atomic_store(&j->state, TK_JOB_FREE);
        ring_push(shm_free(s), NULL, shm_val(i, 0));
    }
    *out = s;
    return 0;
}

void shm_destroy(struct tk_shm *s)
{
    if (s)
        munmap(s, s->size);
}

int shm_proc_claim(struct tk_shm *s, int32_t pid, uint8_t role, uint16_t slot)
{
    for (uint32_t i = 0; i < s->n_procs; i++) {
        struct tk_proc *p = shm_proc(s, i);
        int32_t zero = 0;
        if (atomic_load(&p->pid) == 0 && atomic_compare_exchange_strong(&p->pid, &zero, pid)) {
            p->role = role;
            p->slot = slot;
            atomic_fetch_add(&p->gen, 1);
            atomic_store(&p->heartbeat_ms, 0);
            atomic_store(&p->ready, 0);
            atomic_store(&p->starting, 0);
            atomic_store(&p->conns, 0);
            for (int k = 0; k < TK_PROC_CLIENTS; k++)
                atomic_store(&p->client_open[k], 0);
            ring_intent_init(&p->intent);
            return (int)i;
        }
    }
    return -ENOSPC;
}

int shm_proc_find(struct tk_shm *s, int32_t pid)
{
    for (uint32_t i = 0; i < s->n_procs; i++)
        if (atomic_load(&shm_proc(s, i)->pid) == pid)
            return (int)i;
    return -ENOENT;
}
