/*
 * test_ring.c — the shm MPMC ring: single-process semantics, multi-process no loss / no
 * duplication, futex waits, and crash repair with an intent record.
 */
#include "tako/ring.h"
#include "tako/shm.h"
#include "tako/util.h"
#include "tk_test.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static struct ring *ring_new_shared(uint32_t cap)
{
    void *p =
        mmap(NULL, ring_bytes(cap), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    TK_ASSERT(p != MAP_FAILED);
    ring_init(p, cap, 7);
    return p;
}

TK_TEST(ring_fifo_full_empty)
{
    struct ring *r = ring_new_shared(8);
    uint64_t v;
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), -EAGAIN);
    for (uint64_t i = 0; i < 8; i++)
        TK_ASSERT_EQ(ring_push(r, NULL, i * 10), 0);
    TK_ASSERT_EQ(ring_push(r, NULL, 99), -EAGAIN);
    TK_ASSERT_EQ(ring_count(r), 8);
    for (uint64_t i = 0; i < 8; i++) {
        TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
        TK_ASSERT_EQ(v, i * 10);
    }
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), -EAGAIN);
    /* wrap around many laps */
    for (uint64_t i = 0; i < 1000; i++) {
        TK_ASSERT_EQ(ring_push(r, NULL, i), 0);
        TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
        TK_ASSERT_EQ(v, i);
    }
}

TK_TEST(ring_intent_records)
{
    struct ring *r = ring_new_shared(8);
    struct ring_intent me;
    ring_intent_init(&me);
    uint64_t v;
    TK_ASSERT_EQ(ring_push(r, &me, 5), 0);
    TK_ASSERT_EQ(atomic_load(&me.rec), 0);
    TK_ASSERT_EQ(ring_pop(r, &me, &v), 0);
    TK_ASSERT_EQ(v, 5);
    TK_ASSERT_EQ(atomic_load(&me.rec), 0);
    TK_ASSERT_EQ(atomic_load(&me.held), 5);
    ring_intent_clear_held(&me);
    TK_ASSERT_EQ(atomic_load(&me.held), RING_NONE);
}

TK_TEST(ring_wait_times_out_and_wakes)
{
    struct ring *r = ring_new_shared(8);
    uint64_t v;
    TK_ASSERT_EQ(ring_pop_wait(r, NULL, &v, 50), -EAGAIN);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100 * 1000);
        ring_push(r, NULL, 42);
        _exit(0);
    }
    int got = -1;
    for (int i = 0; i < 40 && got != 0; i++)
        got = ring_pop_wait(r, NULL, &v, 500);
    TK_ASSERT_EQ(got, 0);
    TK_ASSERT_EQ(v, 42);
    waitpid(pid, NULL, 0);
}

/* ring_pop_wait_from sleeps only while the word is what the caller saw: a kick or poke
 * after the sample (nothing pushed) ends the wait at once, as does one during it. */
TK_TEST(ring_wait_from_ends_on_kick_and_poke)
{
    struct ring *r = ring_new_shared(8);
    uint64_t v;
    uint32_t seen = ring_seq(r);
    ring_poke(r); /* after the sample: no sleep at all */
    uint64_t t0 = now_mono_ms();
    TK_ASSERT_EQ(ring_pop_wait_from(r, NULL, &v, 2000, NULL, seen), -EAGAIN);
    TK_ASSERT(now_mono_ms() - t0 < 1000);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100 * 1000);
        ring_kick(r); /* during the sleep: wakes it, with nothing to pop */
        _exit(0);
    }
    seen = ring_seq(r);
    t0 = now_mono_ms();
    TK_ASSERT_EQ(ring_pop_wait_from(r, NULL, &v, 5000, NULL, seen), -EAGAIN);
    TK_ASSERT(now_mono_ms() - t0 < 4000);
    waitpid(pid, NULL, 0);
    TK_ASSERT_EQ(ring_push(r, NULL, 7), 0); /* and a push still wakes as before */
    TK_ASSERT_EQ(ring_pop_wait_from(r, NULL, &v, 10, NULL, ring_seq(r)), 0);
    TK_ASSERT_EQ(v, 7);
}

/* A blocked signal that is let in for the sleep ends it, whether it was pending before
 * (its handler pokes the word) or arrives during it; it stays blocked afterwards. */
static struct ring *poked_ring;
static void poke_handler(int sig)
{
    (void)sig;
    ring_poke(poked_ring);
}

TK_TEST(ring_wait_from_lets_in_a_blocked_signal)
{
    struct ring *r = poked_ring = ring_new_shared(8);
    struct sigaction sa = {.sa_handler = poke_handler}; /* no SA_RESTART */
    sigaction(SIGIO, &sa, NULL);
    sigset_t io;
    sigemptyset(&io);
    sigaddset(&io, SIGIO);
    sigprocmask(SIG_BLOCK, &io, NULL);
    uint64_t v;
    uint32_t seen = ring_seq(r);
    raise(SIGIO); /* pending: delivered when the wait lets it in */
    uint64_t t0 = now_mono_ms();
    TK_ASSERT_EQ(ring_pop_wait_from(r, NULL, &v, 3000, &io, seen), -EAGAIN);
    TK_ASSERT(now_mono_ms() - t0 < 2000);
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        usleep(100 * 1000);
        kill(parent, SIGIO);
        _exit(0);
    }
    t0 = now_mono_ms();
    TK_ASSERT_EQ(ring_pop_wait_from(r, NULL, &v, 5000, &io, ring_seq(r)), -EAGAIN);
    TK_ASSERT(now_mono_ms() - t0 < 4000);
    waitpid(pid, NULL, 0);
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    TK_ASSERT(sigismember(&now, SIGIO));
}

/* futex_word_wait: returns at once when the word moved since the sample, else on a wake. */
TK_TEST(futex_word_wait_and_wake)
{
    _Atomic uint32_t *w =
        mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    TK_ASSERT(w != MAP_FAILED);
    uint32_t seen = atomic_load(w);
    atomic_fetch_add(w, 1);
    uint64_t t0 = now_mono_ms();
    futex_word_wait(w, seen, 3000);
    TK_ASSERT(now_mono_ms() - t0 < 2000);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(100 * 1000);
        futex_word_wake(w);
        _exit(0);
    }
    t0 = now_mono_ms();
    futex_word_wait(w, atomic_load(w), 5000);
    TK_ASSERT(now_mono_ms() - t0 < 4000);
    waitpid(pid, NULL, 0);
    t0 = now_mono_ms();
    futex_word_wait(w, atomic_load(w), 50); /* nobody wakes it: the timeout */
    TK_ASSERT(now_mono_ms() - t0 >= 40);
}

/* Several producer and consumer processes; every value must arrive exactly once. */
static void mpmc_run(int producers, int consumers, uint32_t per_producer, uint32_t cap)
{
    struct ring *r = ring_new_shared(cap);
    size_t total = (size_t)producers * per_producer;
    _Atomic uint8_t *seen =
        mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    _Atomic uint64_t *consumed =
        mmap(NULL, 64, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    TK_ASSERT(seen != MAP_FAILED && consumed != MAP_FAILED);
    pid_t pids[64];
    int n = 0;
    for (int p = 0; p < producers; p++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (uint32_t i = 0; i < per_producer; i++) {
                uint64_t val = (uint64_t)p * per_producer + i;
                while (ring_push(r, NULL, val) != 0)
                    sched_yield();
            }
            _exit(0);
        }
        pids[n++] = pid;
    }
    for (int c = 0; c < consumers; c++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) {
                if (atomic_load(consumed) >= total)
                    _exit(0);
                uint64_t v;
                if (ring_pop_wait(r, NULL, &v, 20) != 0)
                    continue;
                if (v >= total)
                    _exit(3);
                if (atomic_fetch_add(&seen[v], 1) != 0)
                    _exit(4); /* duplicate */
                atomic_fetch_add(consumed, 1);
            }
        }
        pids[n++] = pid;
    }
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        TK_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    for (size_t i = 0; i < total; i++)
        TK_ASSERT_EQ(atomic_load(&seen[i]), 1);
}

TK_TEST(ring_mpmc_4x4_no_loss_no_dup)
{
    mpmc_run(4, 4, 250000, 1024);
}

TK_TEST(ring_mpmc_small_ring_contention)
{
    mpmc_run(3, 2, 50000, 8);
}

/* A producer that claimed a cell and died before recording the win: consumers are stuck
 * at that cell until ring_repair() publishes the value the dead producer was pushing. */
TK_TEST(ring_repair_dead_producer_after_claim)
{
    struct ring *r = ring_new_shared(8);
    struct ring_intent dead;
    ring_intent_init(&dead);
    uint64_t pos = atomic_load(&r->enq_pos);
    atomic_store(&dead.ring, r->id);
    atomic_store(&dead.val, 111);
    atomic_store(&dead.rec, RING_REC(RING_OP_ENQ_TRY, pos));
    atomic_store(&r->enq_pos, pos + 1); /* it won the CAS, then died */
    TK_ASSERT_EQ(ring_push(r, NULL, 222), 0);
    uint64_t v;
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), -EAGAIN); /* blocked behind the dead claim */
    uint64_t rec;
    TK_ASSERT_EQ(ring_repair(r, &dead, NULL, 0, &rec), 0);
    TK_ASSERT_EQ(rec, RING_NONE);
    TK_ASSERT_EQ(atomic_load(&dead.rec), 0);
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
    TK_ASSERT_EQ(v, 111);
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
    TK_ASSERT_EQ(v, 222);
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), -EAGAIN);
}

/* A producer that recorded its intent but never won the CAS: its value is pushed anew. */
TK_TEST(ring_repair_dead_producer_before_claim)
{
    struct ring *r = ring_new_shared(8);
    struct ring_intent dead;
    ring_intent_init(&dead);
    TK_ASSERT_EQ(ring_push(r, NULL, 1), 0); /* someone else took position 0 */
    atomic_store(&dead.ring, r->id);
    atomic_store(&dead.val, 333);
    atomic_store(&dead.held, 333); /* died between recording and clearing held */
    atomic_store(&dead.rec, RING_REC(RING_OP_ENQ_TRY, 0));
    uint64_t rec, v;
    TK_ASSERT_EQ(ring_repair(r, &dead, NULL, 0, &rec), 0);
    TK_ASSERT_EQ(atomic_load(&dead.held), RING_NONE); /* delivered once: not also held */
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
    TK_ASSERT_EQ(v, 1);
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
    TK_ASSERT_EQ(v, 333);
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), -EAGAIN);
}

/* A live process showing the same position may be the real claimer: repair must wait. */
TK_TEST(ring_repair_defers_to_live_claimer)
{
    struct ring *r = ring_new_shared(8);
    struct ring_intent dead, live;
    ring_intent_init(&dead);
    ring_intent_init(&live);
    uint64_t pos = atomic_load(&r->enq_pos);
    atomic_store(&dead.ring, r->id);
    atomic_store(&dead.val, 5);
    atomic_store(&dead.rec, RING_REC(RING_OP_ENQ_TRY, pos));
    atomic_store(&live.ring, r->id);
    atomic_store(&live.val, 6);
    atomic_store(&live.rec, RING_REC(RING_OP_ENQ_WON, pos));
    atomic_store(&r->enq_pos, pos + 1);
    struct ring_intent *lv[1] = {&live};
    uint64_t rec, v;
    TK_ASSERT_EQ(ring_repair(r, &dead, lv, 1, &rec), -EAGAIN);
    /* the live one publishes; then the dead one's push is seen not to have happened */
    atomic_store(&r->cell[pos & r->mask].val, 6);
    atomic_store(&r->cell[pos & r->mask].seq, pos + 1);
    atomic_store(&live.rec, 0);
    TK_ASSERT_EQ(ring_repair(r, &dead, lv, 1, &rec), 0);
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
    TK_ASSERT_EQ(v, 6);
    TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
    TK_ASSERT_EQ(v, 5);
}

/* A consumer that claimed a cell and died before releasing it: producers would block when
 * they lap to it; repair releases it and the value is in `held`. */
TK_TEST(ring_repair_dead_consumer)
{
    struct ring *r = ring_new_shared(8);
    struct ring_intent dead;
    ring_intent_init(&dead);
    TK_ASSERT_EQ(ring_push(r, NULL, 77), 0);
    uint64_t pos = atomic_load(&r->deq_pos);
    atomic_store(&dead.ring, r->id);
    atomic_store(&dead.rec, RING_REC(RING_OP_DEQ_TRY, pos));
    atomic_store(&r->deq_pos, pos + 1); /* claimed, never released */
    for (int i = 0; i < 7; i++)
        TK_ASSERT_EQ(ring_push(r, NULL, (uint64_t)i), 0);
    TK_ASSERT_EQ(ring_push(r, NULL, 100), -EAGAIN); /* lapped onto the held cell */
    uint64_t rec;
    TK_ASSERT_EQ(ring_repair(r, &dead, NULL, 0, &rec), 0);
    TK_ASSERT_EQ(rec, 77);
    TK_ASSERT_EQ(atomic_load(&dead.held), 77);
    TK_ASSERT_EQ(atomic_load(&dead.held_ring), r->id);
    TK_ASSERT_EQ(ring_push(r, NULL, 100), 0);
}

TK_TEST(ring_push_clears_held_and_full_restores_it)
{
    struct ring *r = ring_new_shared(8);
    struct ring_intent me;
    ring_intent_init(&me);
    uint64_t v;
    TK_ASSERT_EQ(ring_push(r, NULL, 9), 0);
    TK_ASSERT_EQ(ring_pop(r, &me, &v), 0);
    TK_ASSERT_EQ(atomic_load(&me.held), 9);
    TK_ASSERT_EQ(ring_push(r, &me, 9), 0); /* handed on */
    TK_ASSERT_EQ(atomic_load(&me.held), RING_NONE);
    for (int i = 0; i < 7; i++)
        TK_ASSERT_EQ(ring_push(r, NULL, (uint64_t)i), 0);
    atomic_store(&me.held, 42);
    TK_ASSERT_EQ(ring_push(r, &me, 42), -EAGAIN);
    TK_ASSERT_EQ(atomic_load(&me.held), 42);
}

/* Real SIGKILLs of a pushing process at random moments. The producer pushes 0, 1, 2, ...
 * and records in shm the last value whose push returned; after repair the ring must hold
 * every value up to that one, in order, plus at most the one in flight — none twice. */
TK_TEST(ring_kill_producers_randomly)
{
    struct ring *r = ring_new_shared(64);
    struct ring_intent *rec_ =
        mmap(NULL, sizeof *rec_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    _Atomic uint64_t *done =
        mmap(NULL, sizeof *done, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t next = 0;
    for (int round = 0; round < 200; round++) {
        ring_intent_init(rec_);
        atomic_store(done, UINT64_MAX);
        uint64_t start = next;
        pid_t pid = fork();
        if (pid == 0) {
            for (uint64_t i = start;; i++) {
                while (ring_push(r, rec_, i) != 0)
                    sched_yield();
                atomic_store(done, i);
            }
        }
        usleep((useconds_t)(rand() % 300));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        uint64_t rec, last_done = atomic_load(done), v;
        int rc;
        /* a push cut short on a full ring is finished by repair once there is room */
        while ((rc = ring_repair(r, rec_, NULL, 0, &rec)) == -ENOSPC) {
            TK_ASSERT_EQ(ring_pop(r, NULL, &v), 0);
            TK_ASSERT_EQ(v, next);
            next++;
        }
        TK_ASSERT_EQ(rc, 0);
        while (ring_pop(r, NULL, &v) == 0) {
            TK_ASSERT_EQ(v, next); /* in order, nothing twice, nothing skipped */
            next++;
        }
        TK_ASSERT(last_done == UINT64_MAX || next > last_done);
        TK_ASSERT(last_done == UINT64_MAX ? next <= start + 1 : next <= last_done + 2);
        TK_ASSERT_EQ(ring_count(r), 0);
    }
    TK_ASSERT(next > 0);
}

TK_TEST(shm_layout_and_free_ring)
{
    struct tk_shm *s;
    TK_ASSERT_EQ(shm_create(&s, 100, 2, 4), 0);
    TK_ASSERT_EQ(s->n_jobs, 128);
    TK_ASSERT_EQ(ring_count(shm_free(s)), 128);
    TK_ASSERT_EQ(ring_count(shm_dispatch(s)), 0);
    uint64_t v;
    TK_ASSERT_EQ(ring_pop(shm_free(s), NULL, &v), 0);
    TK_ASSERT_EQ(shm_val_idx(v), 0);
    TK_ASSERT_EQ(((uintptr_t)shm_job(s, 1)) % 64, 0);
    TK_ASSERT_EQ(((uintptr_t)shm_done(s, 1)) % 64, 0);
    int i = shm_proc_claim(s, 1234, TK_ROLE_EXECUTOR, 3);
    TK_ASSERT(i >= 0);
    TK_ASSERT_EQ(shm_proc_find(s, 1234), i);
    shm_destroy(s);
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
