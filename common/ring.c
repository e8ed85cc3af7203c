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
    atomic_store(&me->held_ring, 0);
    atomic_store(&me->val, RING_NONE);
    atomic_store(&me->held, RING_NONE);
}

/* Record the next step before taking it (seq_cst: visible before the CAS). */
static inline void intent_set(struct ring_intent *me, const struct ring *r, unsigned op,
                              uint64_t pos)
{
    if (!me)
        return;
    atomic_store_explicit(&me->ring, r->id, memory_order_relaxed);
    atomic_store(&me->rec, RING_REC(op, pos));
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
    uint64_t prev_held = me ? atomic_load(&me->held) : RING_NONE;
    if (me)
        atomic_store(&me->val, val);
    uint64_t pos = atomic_load_explicit(&r->enq_pos, memory_order_relaxed);
    for (;;) {
        intent_set(me, r, RING_OP_ENQ_TRY, pos);
        if (me) /* the record now carries the value: hand it over */
            atomic_store(&me->held, RING_NONE);
        RING_HOOK(RING_HOOK_PUSH_INTENT);
        struct ring_cell *c = &r->cell[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - pos);
        if (diff == 0) {
            if (atomic_compare_exchange_weak(&r->enq_pos, &pos, pos + 1)) {
                RING_HOOK(RING_HOOK_PUSH_CLAIMED);
                intent_set(me, r, RING_OP_ENQ_WON, pos);
                RING_HOOK(RING_HOOK_PUSH_WON);
                atomic_store_explicit(&c->val, val, memory_order_relaxed);
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                RING_HOOK(RING_HOOK_PUSH_PUBLISHED);
                break;
            }
            /* pos was reloaded by the failed CAS */
        } else if (diff < 0) {
            if (me) /* full: the caller still holds what it held */
                atomic_store(&me->held, prev_held);
            intent_clear(me);
            return -EAGAIN;
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
        intent_set(me, r, RING_OP_DEQ_TRY, pos);
        RING_HOOK(RING_HOOK_POP_INTENT);
        struct ring_cell *c = &r->cell[pos & r->mask];
        uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        int64_t diff = (int64_t)(seq - (pos + 1));
        if (diff == 0) {
            if (atomic_compare_exchange_weak(&r->deq_pos, &pos, pos + 1)) {
                RING_HOOK(RING_HOOK_POP_CLAIMED);
                uint64_t v = atomic_load_explicit(&c->val, memory_order_relaxed);
                if (me) {
                    if (v != RING_TOMBSTONE) {
                        atomic_store(&me->held_ring, r->id);
                        atomic_store(&me->held, v);
                    }
                    intent_set(me, r, RING_OP_DEQ_WON, pos);
                }
                RING_HOOK(RING_HOOK_POP_WON);
                atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
                RING_HOOK(RING_HOOK_POP_RELEASED);
                if (v == RING_TOMBSTONE) { /* never pushed by takod; kept for safety */
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

int ring_pop_if(struct ring *r, struct ring_intent *me, bool (*pred)(uint64_t v, void *arg),
                void *arg, uint64_t *val)
{
    uint64_t pos = atomic_load_explicit(&r->deq_pos, memory_order_relaxed);
    intent_set(me, r, RING_OP_DEQ_TRY, pos);
    struct ring_cell *c = &r->cell[pos & r->mask];
    uint64_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
    /* While seq == pos + 1 nobody can change the cell: the value judged is the value taken
     * if the CAS succeeds. */
    uint64_t v = atomic_load_explicit(&c->val, memory_order_relaxed);
    if (seq != pos + 1 || !pred(v, arg) ||
        !atomic_compare_exchange_strong(&r->deq_pos, &pos, pos + 1)) {
        intent_clear(me);
        return -EAGAIN; /* empty, not wanted, or someone else took the head */
    }
    if (me) {
        atomic_store(&me->held_ring, r->id);
        atomic_store(&me->held, v);
        intent_set(me, r, RING_OP_DEQ_WON, pos);
    }
    atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
    intent_clear(me);
    *val = v;
    return 0;
}

int ring_pop_wait(struct ring *r, struct ring_intent *me, uint64_t *val, int timeout_ms)
{
    return ring_pop_wait_from(r, me, val, timeout_ms, NULL, ring_seq(r));
}

uint32_t ring_seq(struct ring *r)
{
    return atomic_load(&r->futex);
}

int ring_pop_wait_from(struct ring *r, struct ring_intent *me, uint64_t *val, int timeout_ms,
                       const sigset_t *unblock, uint32_t seen)
{
    if (ring_pop(r, me, val) == 0)
        return 0;
    /*
     * Lost-wakeup-free: announce ourselves, then sleep only while the futex word is still
     * `seen` (sampled before the caller last looked at what it waits for), after one more
     * try. A producer publishes, bumps the word, then reads `waiters`; either we see its
     * element or it sees us (architecture.md §2.5). Signals in `unblock` are let in only
     * for the sleep: a pending one runs its handler now, and a handler that pokes the word
     * (ring_poke) makes the sleep return at once instead of being lost.
     */
    atomic_fetch_add(&r->waiters, 1);
    if (ring_pop(r, me, val) == 0) {
        atomic_fetch_sub(&r->waiters, 1);
        return 0;
    }
    sigset_t old;
    if (unblock)
        sigprocmask(SIG_UNBLOCK, unblock, &old);
    futex_word_wait(&r->futex, seen, timeout_ms);
    if (unblock)
        sigprocmask(SIG_SETMASK, &old, NULL);
    atomic_fetch_sub(&r->waiters, 1);
    return ring_pop(r, me, val);
}

void ring_poke(struct ring *r)
{
    atomic_fetch_add(&r->futex, 1);
}

void ring_kick(struct ring *r)
{
    atomic_fetch_add(&r->futex, 1);
    if (atomic_load(&r->waiters) > 0)
        futex(&r->futex, FUTEX_WAKE, INT_MAX, NULL);
}

void futex_word_wait(_Atomic uint32_t *word, uint32_t seen, int timeout_ms)
{
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    futex(word, FUTEX_WAIT, seen, &ts);
}

void futex_word_wake(_Atomic uint32_t *word)
{
    atomic_fetch_add(word, 1);
    futex(word, FUTEX_WAKE, INT_MAX, NULL);
}

uint64_t ring_count(const struct ring *r)
{
    uint64_t e = atomic_load(&r->enq_pos), d = atomic_load(&r->deq_pos);
    return e > d ? e - d : 0;
}

/* Does a live process show a TRY or WON record of the same kind at pos? */
static bool live_owns(struct ring_intent *const *live, size_t n, uint32_t ring_id, unsigned try_op,
                      uint64_t pos)
{
    for (size_t i = 0; i < n; i++) {
        if (!live[i] || atomic_load(&live[i]->ring) != ring_id)
            continue;
        uint64_t rec = atomic_load(&live[i]->rec);
        if (rec == RING_REC(try_op, pos) || rec == RING_REC(try_op + 1, pos))
            return true;
    }
    return false;
}

static void publish_at(struct ring *r, struct ring_cell *c, uint64_t pos, uint64_t v)
{
    atomic_store_explicit(&c->val, v, memory_order_relaxed);
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
    ring_wake(r);
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
    uint64_t v = atomic_load(&dead->val);

    switch (op) {
    case RING_OP_ENQ_WON: /* it owned pos */
        if (seq == pos)
            publish_at(r, c, pos, v);
        break;
    case RING_OP_ENQ_TRY:
        if (seq == pos && atomic_load(&r->enq_pos) > pos) {
            if (live_owns(live, n_live, r->id, RING_OP_ENQ_TRY, pos))
                return -EAGAIN;
            /* Look again: a live owner may have published and cleared its record since
             * `seq` was read. Only a cell still unpublished now is the dead one's. */
            if (atomic_load(&c->seq) == pos) {
                publish_at(r, c, pos, v); /* it won the CAS and died before recording it */
                break;
            }
        }
        if (v != RING_NONE) {
            /* Its push did not happen. It had handed the value over (held was cleared),
             * so finish the hand-over. Cannot be full: every takod ring has a cell for
             * every value that can exist. */
            if (ring_push(r, NULL, v) != 0)
                return -ENOSPC;
        }
        break;
    }
    if ((op == RING_OP_ENQ_WON || op == RING_OP_ENQ_TRY) && atomic_load(&dead->held) == v)
        atomic_store(&dead->held, RING_NONE); /* died between recording and handing over */
    switch (op) {
    case RING_OP_DEQ_WON: /* held has the value */
        if (seq == pos + 1) {
            atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
            *recovered = atomic_load(&dead->held);
        }
        break;
    case RING_OP_DEQ_TRY:
        if (seq == pos + 1 && atomic_load(&r->deq_pos) > pos) {
            if (live_owns(live, n_live, r->id, RING_OP_DEQ_TRY, pos))
                return -EAGAIN;
            if (atomic_load(&c->seq) != pos + 1)
                break; /* a live owner released it since `seq` was read: not the dead one's */
            uint64_t got = atomic_load_explicit(&c->val, memory_order_relaxed);
            if (got != RING_TOMBSTONE) {
                atomic_store(&dead->held_ring, r->id);
                atomic_store(&dead->held, got);
                *recovered = got;
            }
            atomic_store_explicit(&c->seq, pos + r->mask + 1, memory_order_release);
        }
        break;
    }
    atomic_store(&dead->rec, 0);
    atomic_store(&dead->val, RING_NONE);
    return 0;
}
