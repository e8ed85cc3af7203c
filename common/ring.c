/*
 * ring.c — Vyukov's bounded MPMC queue in shared memory, with intent records for crash
 * repair and a futex for sleeping consumers. See ring.h for the design.
 */
#include "tako/ring.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef TAKO_TEST_HOOKS
void (*ring_test_hook)(int point);
#endif

size_t ring_bytes(uint32_t cap)
{
    return sizeof(struct ring) + (size_t)cap * sizeof(struct ring_cell);
}

void ring_init(struct ring *r, uint32_t cap, uint32_t id)
{
    atomic_store(&r->enq_pos, 0);
    atomic_store(&r->deq_pos, 0);
    atomic_store(&r->futex, 0);
    atomic_store(&r->waiters, 0);
    r->id = id;
    r->cap = cap;
    r->mask = cap - 1;
    for (uint32_t i = 0; i < cap; i++) {
        atomic_store(&r->cell[i].seq, i);
        atomic_store(&r->cell[i].val, RING_TOMBSTONE);
    }
}

void ring_intent_init(struct ring_intent *me)
{
    atomic_store(&me->rec, 0);
    atomic_store(&me->ring, 0);
    atomic_store(&me->held, RING_NONE);
}

static inline void intent_set(struct ring_intent *me, const struct ring *r, unsigned op,
                              uint64_t pos)
{
    if (!me)
        return;
    atomic_store_explicit(&me->ring, r->id, memory_order_relaxed);
    atomic_store(&me->rec, RING_REC(op, pos)); /* seq_cst: visible before the claim */
}

static inline void intent_clear(struct ring_intent *me)
{
    if (me)
        atomic_store(&me->rec, 0);
}

static long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

static void ring_wake(struct ring *r)
{
    atomic_fetch_add(&r->futex, 1);
    if (atomic_load(&r->waiters) > 0)
        futex(&r->futex, FUTEX_WAKE, 1, NULL);
}

int ring_push(struct ring *r, struct ring_intent *me, uint64_t val)
{
    uint64_t pos = atomic_load_explicit(&r->enq_pos, memory_order_relaxed);
    for (;;) {
        intent_set(me, r, RING_OP_ENQ, pos);
        RING_HOOK(RING_HOOK_PUSH_INTENT);
        struct ring_cell *c = &r->cell[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak(&r->enq_pos, &pos, pos + 1)) {
                RING_HOOK(RING_HOOK_PUSH_CLAIMED);
                atomic_store_explicit(&c->val, val, memory_order_relaxed);
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                RING_HOOK(RING_HOOK_PUSH_PUBLISHED);
                break;
            }
            /* pos was reloaded by the failed CAS */
        } else if (diff < 0) {
            intent_clear(me);
            return -EAGAIN; /* full */
        } else {
            pos = atomic_load_explicit(&r->enq_pos, memory_order_relaxed);
        }
    }
    intent_clear(me);
    ring_wake(r);
    return 0;
}

int ring_pop(struct ring *r, struct ring_intent *me, uint64_t *val)
{
    uint64_t pos = atomic_load_explicit(&r->deq_pos, memory_order_relaxed);
    for (;;) {
        intent_set(me, r, RING_OP_DEQ, pos);
        RING_HOOK(RING_HOOK_POP_INTENT);
        struct ring_cell *c = &r->cell[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - (pos + 1));
        if (diff == 0) {
            if (atomic_compare_exchange_weak(&r->deq_pos, &pos, pos + 1)) {
                RING_HOOK(RING_HOOK_POP_CLAIMED);
                uint64_t v = atomic_load_explicit(&c->val, memory_order_relaxed);
                if (me && v != RING_TOMBSTONE)
                    atomic_store(&me->held, v);
                atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
                RING_HOOK(RING_HOOK_POP_RELEASED);
                if (v == RING_TOMBSTONE) { /* a repaired dead push: skip it */
                    pos = atomic_load_explicit(&r->deq_pos, memory_order_relaxed);
                    continue;
                }
                intent_clear(me);
                *val = v;
                return 0;
            }
        } else if (diff < 0) {
            intent_clear(me);
            return -EAGAIN; /* empty (or the next cell's producer is mid-push) */
        } else {
            pos = atomic_load_explicit(&r->deq_pos, memory_order_relaxed);
        }
    }
}

int ring_pop_wait(struct ring *r, struct ring_intent *me, uint64_t *val, int timeout_ms)
{
    if (ring_pop(r, me, val) == 0)
        return 0;
    /*
     * Lost-wakeup-free: announce ourselves, sample the futex word, try once more, then
     * sleep only if the word is unchanged. A producer publishes, bumps the word, then
     * reads `waiters`; either we see its element or it sees us (architecture.md §2.5).
     */
    atomic_fetch_add(&r->waiters, 1);
    uint32_t v = atomic_load(&r->futex);
    if (ring_pop(r, me, val) == 0) {
        atomic_fetch_sub(&r->waiters, 1);
        return 0;
    }
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    futex(&r->futex, FUTEX_WAIT, v, &ts);
    atomic_fetch_sub(&r->waiters, 1);
    return ring_pop(r, me, val);
}

uint64_t ring_count(const struct ring *r)
{
    uint64_t e = atomic_load(&r->enq_pos), d = atomic_load(&r->deq_pos);
    return e > d ? e - d : 0;
}

static bool live_has(struct ring_intent *const *live, size_t n, uint32_t ring_id, uint64_t rec)
{
    for (size_t i = 0; i < n; i++)
        if (live[i] && atomic_load(&live[i]->rec) == rec && atomic_load(&live[i]->ring) == ring_id)
            return true;
    return false;
}

int ring_repair(struct ring *r, struct ring_intent *dead, struct ring_intent *const *live,
                size_t n_live, uint64_t *recovered)
{
    *recovered = RING_NONE;
    uint64_t rec = atomic_load(&dead->rec);
    if (rec == 0 || atomic_load(&dead->ring) != r->id)
        return 0;
    unsigned op = RING_REC_OP(rec);
    uint64_t pos = RING_REC_POS(rec);
    struct ring_cell *c = &r->cell[pos & r->mask];
    uint64_t seq = atomic_load(&c->seq);

    if (op == RING_OP_ENQ) {
        if (seq == pos && atomic_load(&r->enq_pos) > pos) {
            /* Claimed by someone, unpublished. Is a live process the claimer? */
            if (live_has(live, n_live, r->id, rec))
                return -EAGAIN;
            atomic_store_explicit(&c->val, RING_TOMBSTONE, memory_order_relaxed);
            atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
            ring_wake(r);
        }
    } else if (op == RING_OP_DEQ) {
        if (seq == pos + 1 && atomic_load(&r->deq_pos) > pos) {
            if (live_has(live, n_live, r->id, rec))
                return -EAGAIN;
            uint64_t v = atomic_load_explicit(&c->val, memory_order_relaxed);
            if (v != RING_TOMBSTONE) {
                atomic_store(&dead->held, v);
                *recovered = v;
            }
            atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
        }
    }
    atomic_store(&dead->rec, 0);
    return 0;
}
