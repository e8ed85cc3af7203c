/*
 * ring.h — a bounded lock-free MPMC queue of 64-bit values that lives in shared memory
 * and survives the death of any process at any instruction.
 *
 * Algorithm: Dmitry Vyukov's bounded MPMC queue. Each cell carries its own sequence
 * number, so there is no shared "tail" that must advance in order: a process that dies in
 * the middle of an operation blocks at most the one cell it held, and nobody else spins on
 * it. The dispatch ring, the free-index ring and each acceptor's done ring are all this type.
 *
 * Crash repair ("intent records", see shared/reference/architecture.md §2.6): before every
 * claim attempt a process publishes `rec = OP << 62 | pos` in its own intent record
 * (a per-process slot in the shm proc table), and clears it when the operation is
 * complete. After the master has reaped a dead process (so it can never write again),
 * ring_repair() uses the dead process's record to finish what it left half-done:
 *   - ENQ|P, cell P still unpublished, enq_pos > P, and no live process shows ENQ|P:
 *     the dead process owned P. Publish a tombstone there; consumers skip tombstones.
 *   - DEQ|P, cell P published but not released, deq_pos > P, and no live process shows
 *     DEQ|P: the dead process had claimed P. Release the cell and hand its value back to
 *     the caller, which decides what the value (a job) needs.
 * A value a consumer had fully taken is in `held` until it calls ring_intent_clear_held().
 *
 * Waiting: consumers without an event loop sleep on a futex word in the ring (shared,
 * not FUTEX_PRIVATE), woken by producers; always with a timeout so a stuck or dead waiter
 * costs nothing but a spurious wake.
 *
 * Positions are 64-bit and never wrap in practice, so no ABA. Only 32/64-bit atomics are
 * used: they are address-free (lock-free) on x86-64 and aarch64; 16-byte ones are not.
 */
#ifndef TAKO_RING_H
#define TAKO_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free for shm");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free for shm");

#define RING_TOMBSTONE UINT64_MAX /* a value no producer may push */
#define RING_NONE      UINT64_MAX /* `held` when nothing is held */

enum { RING_OP_NONE = 0, RING_OP_ENQ = 1, RING_OP_DEQ = 2 };
#define RING_REC(op, pos) (((uint64_t)(op) << 62) | (pos))
#define RING_REC_OP(rec)  ((unsigned)((rec) >> 62))
#define RING_REC_POS(rec) ((rec) & ((UINT64_C(1) << 62) - 1))

/* One process's in-flight ring operation. Lives in the shm proc table. */
struct ring_intent {
    _Atomic uint64_t rec;  /* RING_REC(op, pos) or 0 */
    _Atomic uint32_t ring; /* id of the ring `rec` refers to */
    uint32_t pad;
    _Atomic uint64_t held; /* last value popped and not yet settled, or RING_NONE */
};

struct ring_cell {
    _Atomic uint64_t seq;
    _Atomic uint64_t val;
};

struct ring {
    _Alignas(64) _Atomic uint64_t enq_pos;
    _Alignas(64) _Atomic uint64_t deq_pos;
    _Alignas(64) _Atomic uint32_t futex;
    _Atomic uint32_t waiters;
    uint32_t id;
    uint32_t cap;
    uint64_t mask;
    _Alignas(64) struct ring_cell cell[];
};

/* Bytes needed for a ring of `cap` cells (cap a power of two). */
size_t ring_bytes(uint32_t cap);
/* Initialise in place (before any process uses it). */
void ring_init(struct ring *r, uint32_t cap, uint32_t id);

void ring_intent_init(struct ring_intent *me);
static inline void ring_intent_clear_held(struct ring_intent *me)
{
    if (me)
        atomic_store(&me->held, RING_NONE);
}

/*
 * Push `val` (never RING_TOMBSTONE). 0, or -EAGAIN when full. Wakes one futex waiter.
 * `me` may be NULL in single-process use (no crash repair then).
 */
int ring_push(struct ring *r, struct ring_intent *me, uint64_t val);
/* Pop into *val, skipping tombstones. 0, or -EAGAIN when empty. Sets me->held. */
int ring_pop(struct ring *r, struct ring_intent *me, uint64_t *val);
/* Like ring_pop but sleeps up to timeout_ms on the futex when empty; -EAGAIN on timeout
 * or when a signal interrupted the sleep (the caller checks its flags and loops). */
int ring_pop_wait(struct ring *r, struct ring_intent *me, uint64_t *val, int timeout_ms);
/* Values currently queued (approximate under concurrency). */
uint64_t ring_count(const struct ring *r);

/*
 * Repair after the death of the process whose intent record is `dead` (already reaped).
 * `live` lists the intent records of every other process that may touch this ring.
 * Returns 0 (nothing to do, or done: *recovered = RING_NONE, or the value a dead consumer
 * had claimed but not released, which is also stored in dead->held), or -EAGAIN when a
 * live process may still own the position (call again shortly). Clears dead->rec when
 * done. After it, dead->held is the one place that says what the dead process had taken.
 */
int ring_repair(struct ring *r, struct ring_intent *dead, struct ring_intent *const *live,
                size_t n_live, uint64_t *recovered);

#ifdef TAKO_TEST_HOOKS
/* Test builds only: called at each numbered step of push/pop so tests can kill there. */
extern void (*ring_test_hook)(int point);
enum {
    RING_HOOK_PUSH_INTENT = 1, /* intent published, before the claim */
    RING_HOOK_PUSH_CLAIMED,    /* position claimed, value not written */
    RING_HOOK_PUSH_PUBLISHED,  /* published, intent not cleared */
    RING_HOOK_POP_INTENT,
    RING_HOOK_POP_CLAIMED, /* claimed, cell not released */
    RING_HOOK_POP_RELEASED /* released, intent not cleared */
};
#define RING_HOOK(p)                                                                               \
    do {                                                                                           \
        if (ring_test_hook)                                                                        \
            ring_test_hook(p);                                                                     \
    } while (0)
#else
#define RING_HOOK(p) ((void)0)
#endif

#endif
