/*
 * ring.h — a bounded lock-free MPMC queue of 64-bit values that lives in shared memory
 * and survives the death of any process at any instruction.
 *
 * Algorithm: Dmitry Vyukov's bounded MPMC queue. Each cell carries its own sequence
 * number, so there is no shared "tail" that must advance in order: a process that dies in
 * the middle of an operation blocks at most the one cell it held, and nobody else spins on
 * it. The dispatch ring, the free-index ring and each acceptor's done ring are all this type.
 *
 * Crash repair ("intent records", see shared/reference/architecture.md §2.6): every
 * process owns a record in the shm proc table and publishes each step of an operation in
 * it before taking the step, in two phases:
 *   push:  val = v; rec = ENQ_TRY|pos; held = NONE   (the value is handed to the record)
 *          CAS enq_pos → rec = ENQ_WON|pos → write the cell, publish → rec = NONE
 *   pop:   rec = DEQ_TRY|pos; CAS deq_pos → held = cell value; held_ring = id;
 *          rec = DEQ_WON|pos → release the cell → rec = NONE
 * After the master has reaped a dead process (so it can never write again), ring_repair()
 * finishes what the record says was half-done, never guessing:
 *   ENQ_WON|P        the dead process owned P: publish its value there if it had not.
 *   ENQ_TRY|P        if P is claimed but unpublished and no live process shows TRY/WON|P,
 *                    the dead process won the CAS: publish its value at P. Otherwise its
 *                    push did not happen: push the value anew. Either way the value the
 *                    dead producer was handing over arrives exactly once.
 *   DEQ_WON|P        the value is in `held`; release the cell if it was not released.
 *   DEQ_TRY|P        if P is published but unreleased and no live process shows TRY/WON|P,
 *                    the dead process won it: move the value to `held`, release the cell.
 * A live process that shows the same TRY/WON position may be the real owner: repair then
 * answers -EAGAIN and is retried (it resolves within microseconds).
 * So after repair, what the dead process had taken from a ring and not handed on is in
 * `held` (ring `held_ring`); a value is handed on either by pushing it (the push clears
 * `held` when it records its intent) or by ring_intent_clear_held() once the caller has
 * recorded ownership elsewhere (e.g. in the job table).
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

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free for shm");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free for shm");

#define RING_TOMBSTONE UINT64_MAX /* a value no producer may push */
#define RING_NONE      UINT64_MAX /* `held` when nothing is held */

enum {
    RING_OP_NONE = 0,
    RING_OP_ENQ_TRY = 1,
    RING_OP_ENQ_WON = 2,
    RING_OP_DEQ_TRY = 3,
    RING_OP_DEQ_WON = 4,
};
#define RING_REC(op, pos) (((uint64_t)(op) << 61) | (pos))
#define RING_REC_OP(rec)  ((unsigned)((rec) >> 61))
#define RING_REC_POS(rec) ((rec) & ((UINT64_C(1) << 61) - 1))

/* One process's in-flight ring operation. Lives in the shm proc table. */
struct ring_intent {
    _Atomic uint64_t rec;       /* RING_REC(op, pos) or 0 */
    _Atomic uint32_t ring;      /* id of the ring `rec` refers to */
    _Atomic uint32_t held_ring; /* id of the ring `held` came from */
    _Atomic uint64_t val;       /* the value being pushed while rec is ENQ_* */
    _Atomic uint64_t held;      /* last value popped and not yet handed on, or RING_NONE */
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
/*
 * The futex word: it changes with every push, poke and kick. ring_pop_wait_from sleeps
 * only while it is still `seen`: sample it before looking at what else ends the wait, and
 * nothing that happens after the look is missed. Signals in `unblock` (blocked otherwise)
 * are let in for the sleep; their handler calls ring_poke.
 */
uint32_t ring_seq(struct ring *r);
int ring_pop_wait_from(struct ring *r, struct ring_intent *me, uint64_t *val, int timeout_ms,
                       const sigset_t *unblock, uint32_t seen);
/* Make a sleeper that is about to sleep return at once (async-signal-safe). */
void ring_poke(struct ring *r);
/* Wake every sleeper, with nothing pushed: they look again at what they wait for. */
void ring_kick(struct ring *r);

/* A futex word of one's own (in shared memory): sleep up to timeout_ms while it is still
 * `seen`; bump it and wake every sleeper. */
void futex_word_wait(_Atomic uint32_t *word, uint32_t seen, int timeout_ms);
void futex_word_wake(_Atomic uint32_t *word);
/* Pop the head only if pred(value) says so: 0 (value in *val and me->held), or -EAGAIN
 * (empty, not wanted, or lost a race). */
int ring_pop_if(struct ring *r, struct ring_intent *me, bool (*pred)(uint64_t v, void *arg),
                void *arg, uint64_t *val);

/* Values currently queued (approximate under concurrency). */
uint64_t ring_count(const struct ring *r);

/*
 * Repair after the death of the process whose intent record is `dead` (already reaped).
 * `live` lists the intent records of every other process that may touch this ring.
 * Returns 0 when done (the dead producer's value is now in the ring; a value the dead
 * consumer had claimed is in dead->held and *recovered, else *recovered = RING_NONE), or
 * -EAGAIN when a live process may still own the position (call again shortly), or
 * -ENOSPC when the dead producer's push must be redone on a full ring (call again once a
 * value has been taken; takod's rings have a cell for every value, so never there). Clears
 * dead->rec when done. The caller must not run it concurrently for the same dead record.
 */
int ring_repair(struct ring *r, struct ring_intent *dead, struct ring_intent *const *live,
                size_t n_live, uint64_t *recovered);

#ifdef TAKO_TEST_HOOKS
/* Test builds only: called at each numbered step of push/pop so tests can kill there. */
extern void (*ring_test_hook)(int point);
enum {
    RING_HOOK_PUSH_INTENT = 1, /* ENQ_TRY published, before the claim */
    RING_HOOK_PUSH_CLAIMED,    /* position claimed, ENQ_WON not yet recorded */
    RING_HOOK_PUSH_WON,        /* ENQ_WON recorded, value not written */
    RING_HOOK_PUSH_PUBLISHED,  /* published, intent not cleared */
    RING_HOOK_POP_INTENT,      /* DEQ_TRY published, before the claim */
    RING_HOOK_POP_CLAIMED,     /* claimed, value not yet in held */
    RING_HOOK_POP_WON,         /* held and DEQ_WON recorded, cell not released */
    RING_HOOK_POP_RELEASED     /* released, intent not cleared */
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
