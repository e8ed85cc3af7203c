/*
 * test_ring_crash.c — processes SIGKILLed inside ring_push/ring_pop, and ring_repair().
 *
 * Built with -DTAKO_TEST_HOOKS (ring.c calls `ring_test_hook` at every numbered step of
 * push and pop). Three groups of cases:
 *
 *  1. Deterministic kill points: a child runs one push or pop on a shared ring with its
 *     intent record in shared memory, and its hook raises SIGKILL at one chosen point. The
 *     parent reaps it, calls ring_repair() with the dead record and the live ones, and
 *     checks the exact contents of the ring afterwards.
 *  2. Repair racing a live owner: the live records sit on a page the repairer has made
 *     PROT_NONE, so ring_repair()'s first look at a live record faults; the SIGSEGV handler
 *     lets the paused live process finish its operation right then, and resumes the
 *     repair. This pins the interleaving "repair read the cell, then the live owner
 *     completed, then repair checked the live records".
 *  3. A stress run: 4 producers and 4 consumers move 1,000,000 values while the parent
 *     SIGKILLs a random worker every 0.3-3 ms, repairs, and respawns it; every value must
 *     arrive exactly once (the accounting is explained at the top of section 3). The
 *     workers' hook gives up the CPU at random ring steps, so most kills land inside a
 *     push or a pop.
 *
 * Groups 1 and 2 need the hooks (to kill or pause a process at a chosen step); without
 * TAKO_TEST_HOOKS only group 3 is compiled, and its kills land wherever they land.
 */
#include "tako/ring.h"
#include "tako/shm.h"
#include "tk_test.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *shared_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    TK_ASSERT(p != MAP_FAILED);
    return p;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void reap_ok(pid_t pid)
{
    int st = 0;
    TK_ASSERT_EQ(waitpid(pid, &st, 0), pid);
    TK_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

#ifdef TAKO_TEST_HOOKS
/* What one child process does, and where it stops or dies. Lives in shared memory. */
struct hookctl {
    _Atomic int kill_at;  /* RING_HOOK_* point at which to raise SIGKILL (0: never) */
    _Atomic int kill_nth; /* ... on the nth time that point is reached (1-based) */
    _Atomic int pause_at; /* point at which to wait for `go` the first time */
    _Atomic int paused;   /* set by the child once it waits there */
    _Atomic int go;
    _Atomic int hits[16]; /* times each point was reached */
    _Atomic int out_rc;   /* the child's ring_push/ring_pop result */
    _Atomic uint64_t out; /* the value it popped */
};

enum { OP_PUSH = 1, OP_POP = 2 };

static struct ring *new_ring(uint32_t cap)
{
    struct ring *r = shared_alloc(ring_bytes(cap));
    ring_init(r, cap, 7);
    return r;
}

static struct hookctl *new_hookctl(void)
{
    struct hookctl *hc = shared_alloc(sizeof *hc);
    atomic_store(&hc->kill_nth, 1);
    atomic_store(&hc->out_rc, 1);
    atomic_store(&hc->out, RING_NONE);
    return hc;
}

static struct hookctl *g_hc; /* the calling child's control block */

static void test_hook(int point)
{
    int n = atomic_fetch_add(&g_hc->hits[point], 1) + 1;
    if (atomic_load(&g_hc->kill_at) == point && n == atomic_load(&g_hc->kill_nth))
        raise(SIGKILL);
    if (atomic_load(&g_hc->pause_at) == point && n == 1) {
        atomic_store(&g_hc->paused, 1);
        for (int i = 0; i < 10000 && !atomic_load(&g_hc->go); i++)
            sleep_us(1000);
    }
}

/*
 * Fork a child that runs one operation with intent record `me`. If `hold` is set, the
 * child first records the value it is about to push as held (as an acceptor does with a
 * job index it took from the free ring), so the hand-over in ring_push is exercised.
 */
static pid_t child_op(struct ring *r, struct ring_intent *me, struct hookctl *hc, int op,
                      uint64_t val, bool hold)
{
    pid_t pid = fork();
    TK_ASSERT(pid >= 0);
    if (pid == 0) {
        alarm(20);
        g_hc = hc;
        ring_test_hook = test_hook;
        uint64_t v = RING_NONE;
        int rc;
        if (op == OP_PUSH) {
            if (hold)
                atomic_store(&me->held, val);
            rc = ring_push(r, me, val);
        } else {
            rc = ring_pop(r, me, &v);
        }
        atomic_store(&hc->out, v);
        atomic_store(&hc->out_rc, rc);
        _exit(0);
    }
    return pid;
}

static void wait_paused(struct hookctl *hc)
{
    for (int i = 0; i < 10000 && !atomic_load(&hc->paused); i++)
        sleep_us(1000);
    TK_ASSERT(atomic_load(&hc->paused));
}

static void reap_killed(pid_t pid)
{
    int st = 0;
    TK_ASSERT_EQ(waitpid(pid, &st, 0), pid);
    TK_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static void expect_pop(struct ring *r, struct ring_intent *me, uint64_t want)
{
    uint64_t v = RING_NONE;
    TK_ASSERT_EQ(ring_pop(r, me, &v), 0);
    TK_ASSERT_EQ(v, want);
    ring_intent_clear_held(me);
}

static void expect_empty(struct ring *r, struct ring_intent *me)
{
    uint64_t v;
    TK_ASSERT_EQ(ring_pop(r, me, &v), -EAGAIN);
    TK_ASSERT_EQ(ring_count(r), 0);
}

static int repair(struct ring *r, struct ring_intent *dead, struct ring_intent *const *live,
                  size_t n_live, uint64_t *recovered)
{
    int rc;
    for (int i = 0; i < 2000; i++) {
        rc = ring_repair(r, dead, live, n_live, recovered);
        if (rc != -EAGAIN)
            return rc;
        sleep_us(500);
    }
    return rc;
}

/*
 * The ring still works for other processes: a fresh producer process (record `prec`)
 * pushes 20000 values while this process (record `crec`) pops them. One producer, so
 * they must come out in order; then the ring must be empty.
 */
static void check_flows(struct ring *r, struct ring_intent *prec, struct ring_intent *crec)
{
    const uint64_t n = 20000, base = 1000000;
    pid_t pid = fork();
    TK_ASSERT(pid >= 0);
    if (pid == 0) {
        alarm(20);
        for (uint64_t i = 0; i < n; i++)
            while (ring_push(r, prec, base + i) != 0)
                sched_yield();
        _exit(0);
    }
    uint64_t deadline = now_us() + 10000000u;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = RING_NONE;
        while (ring_pop_wait(r, crec, &v, 20) != 0)
            TK_ASSERT(now_us() < deadline); /* a stall */
        TK_ASSERT_EQ(v, base + i);
        ring_intent_clear_held(crec);
    }
    reap_ok(pid);
    expect_empty(r, crec);
}

/* ---------------------------------------------------------------------------------- */
/* 1. Deterministic kill points                                                         */
/* ---------------------------------------------------------------------------------- */

/* recs[0]: the victim; recs[1]: this process (a live producer and consumer); recs[2]: a
 * live process that is idle; recs[3]: the producer of check_flows. */
struct fx {
    struct ring *r;
    struct ring_intent *recs;
    struct ring_intent *dead;
    struct ring_intent *me;
    struct ring_intent *live[2];
    struct hookctl *hc;
};

static struct fx fx_new(uint32_t cap)
{
    struct fx f;
    f.r = new_ring(cap);
    f.recs = shared_alloc(4 * sizeof *f.recs);
    for (int i = 0; i < 4; i++)
        ring_intent_init(&f.recs[i]);
    f.dead = &f.recs[0];
    f.me = &f.recs[1];
    f.live[0] = &f.recs[1];
    f.live[1] = &f.recs[2];
    f.hc = new_hookctl();
    return f;
}

/*
 * A producer pushing 100 (and holding it, so the hand-over is tested too) dies at `point`
 * on a ring of 4 that already holds 1 and 2. The outcome must be exact: 100 arrives once,
 * in the place the protocol gives it, and the dead record holds nothing afterwards.
 */
static void push_killed_at(int point)
{
    struct fx f = fx_new(4);
    TK_ASSERT_EQ(ring_push(f.r, f.me, 1), 0);
    TK_ASSERT_EQ(ring_push(f.r, f.me, 2), 0);
    atomic_store(&f.hc->kill_at, point);
    reap_killed(child_op(f.r, f.dead, f.hc, OP_PUSH, 100, true));
    TK_ASSERT_EQ(atomic_load(&f.hc->hits[point]), 1);

    uint64_t rec = atomic_load(&f.dead->rec);
    TK_ASSERT_EQ(RING_REC_POS(rec), 2);
    TK_ASSERT_EQ(atomic_load(&f.dead->val), 100);
    bool claimed = point != RING_HOOK_PUSH_INTENT;
    TK_ASSERT_EQ(atomic_load(&f.r->enq_pos), claimed ? 3 : 2);
    TK_ASSERT_EQ(RING_REC_OP(rec), point == RING_HOOK_PUSH_INTENT || point == RING_HOOK_PUSH_CLAIMED
                                       ? RING_OP_ENQ_TRY
                                       : RING_OP_ENQ_WON);

    /* Before repair, other producers are not blocked: 3 goes to the next free position
     * (position 2 itself when the dead producer never won it). */
    TK_ASSERT_EQ(ring_push(f.r, f.me, 3), 0);
    expect_pop(f.r, f.me, 1);
    expect_pop(f.r, f.me, 2);
    bool published = point == RING_HOOK_PUSH_PUBLISHED;
    if (claimed && !published) {
        uint64_t v; /* consumers wait at the dead producer's unpublished cell */
        TK_ASSERT_EQ(ring_pop(f.r, f.me, &v), -EAGAIN);
    }

    uint64_t got = 0;
    TK_ASSERT_EQ(repair(f.r, f.dead, f.live, 2, &got), 0);
    TK_ASSERT_EQ(got, RING_NONE);
    TK_ASSERT_EQ(atomic_load(&f.dead->rec), 0);
    TK_ASSERT_EQ(atomic_load(&f.dead->held), RING_NONE); /* handed on: in the ring */

    if (claimed) { /* it owned position 2: its value is there, before 3 */
        expect_pop(f.r, f.me, 100);
        expect_pop(f.r, f.me, 3);
    } else { /* 3 took position 2; the dead push never happened and is redone */
        expect_pop(f.r, f.me, 3);
        expect_pop(f.r, f.me, 100);
    }
    expect_empty(f.r, f.me);
    /* A second repair of the same record is a no-op. */
    TK_ASSERT_EQ(ring_repair(f.r, f.dead, f.live, 2, &got), 0);
    TK_ASSERT_EQ(got, RING_NONE);
    expect_empty(f.r, f.me);
    check_flows(f.r, &f.recs[3], f.me);
}

TK_TEST(crash_push_at_intent)
{
    push_killed_at(RING_HOOK_PUSH_INTENT);
}

TK_TEST(crash_push_at_claimed)
{
    push_killed_at(RING_HOOK_PUSH_CLAIMED);
}

TK_TEST(crash_push_at_won)
{
    push_killed_at(RING_HOOK_PUSH_WON);
}

TK_TEST(crash_push_at_published)
{
    push_killed_at(RING_HOOK_PUSH_PUBLISHED);
}

/*
 * A consumer dies at `point` popping from a ring of 4 that holds 1, 2, 3. Afterwards the
 * value it took (1), if it took one, is reported exactly once: in dead->held (and in
 * `recovered` when repair itself released the cell), and no live consumer ever gets it.
 */
static void pop_killed_at(int point)
{
    struct fx f = fx_new(4);
    for (uint64_t i = 1; i <= 3; i++)
        TK_ASSERT_EQ(ring_push(f.r, f.me, i), 0);
    atomic_store(&f.hc->kill_at, point);
    reap_killed(child_op(f.r, f.dead, f.hc, OP_POP, 0, false));
    TK_ASSERT_EQ(atomic_load(&f.hc->hits[point]), 1);

    uint64_t rec = atomic_load(&f.dead->rec);
    TK_ASSERT_EQ(RING_REC_POS(rec), 0);
    bool claimed = point != RING_HOOK_POP_INTENT;
    bool released = point == RING_HOOK_POP_RELEASED;
    TK_ASSERT_EQ(RING_REC_OP(rec), point == RING_HOOK_POP_INTENT || point == RING_HOOK_POP_CLAIMED
                                       ? RING_OP_DEQ_TRY
                                       : RING_OP_DEQ_WON);
    TK_ASSERT_EQ(atomic_load(&f.r->deq_pos), claimed ? 1 : 0);
    TK_ASSERT_EQ(atomic_load(&f.dead->held),
                 point == RING_HOOK_POP_WON || released ? 1 : RING_NONE);

    uint64_t got = 0;
    if (!claimed) {
        /* A live consumer takes position 0, the one the dead record names. */
        expect_pop(f.r, f.me, 1);
        TK_ASSERT_EQ(repair(f.r, f.dead, f.live, 2, &got), 0);
        TK_ASSERT_EQ(got, RING_NONE);
        TK_ASSERT_EQ(atomic_load(&f.dead->held), RING_NONE);
        expect_pop(f.r, f.me, 2);
        expect_pop(f.r, f.me, 3);
    } else {
        /* Other consumers go on; the dead one's value is never theirs. */
        expect_pop(f.r, f.me, 2);
        expect_pop(f.r, f.me, 3);
        TK_ASSERT_EQ(ring_push(f.r, f.me, 4), 0);  /* position 3 */
        int rc5 = ring_push(f.r, f.me, 5);         /* position 4: the dead one's cell */
        TK_ASSERT_EQ(rc5, released ? 0 : -EAGAIN); /* producers wait only if unreleased */
        TK_ASSERT_EQ(repair(f.r, f.dead, f.live, 2, &got), 0);
        TK_ASSERT_EQ(got, released ? RING_NONE : 1); /* repair released it: reported */
        TK_ASSERT_EQ(atomic_load(&f.dead->held), 1); /* the one place that says it */
        TK_ASSERT_EQ(atomic_load(&f.dead->held_ring), f.r->id);
        if (rc5 != 0)
            TK_ASSERT_EQ(ring_push(f.r, f.me, 5), 0);
        expect_pop(f.r, f.me, 4);
        expect_pop(f.r, f.me, 5);
    }
    TK_ASSERT_EQ(atomic_load(&f.dead->rec), 0);
    expect_empty(f.r, f.me);
    TK_ASSERT_EQ(ring_repair(f.r, f.dead, f.live, 2, &got), 0); /* idempotent */
    TK_ASSERT_EQ(got, RING_NONE);
    expect_empty(f.r, f.me);
    check_flows(f.r, &f.recs[3], f.me);
}

TK_TEST(crash_pop_at_intent)
{
    pop_killed_at(RING_HOOK_POP_INTENT);
}

TK_TEST(crash_pop_at_claimed)
{
    pop_killed_at(RING_HOOK_POP_CLAIMED);
}

TK_TEST(crash_pop_at_won)
{
    pop_killed_at(RING_HOOK_POP_WON);
}

TK_TEST(crash_pop_at_released)
{
    pop_killed_at(RING_HOOK_POP_RELEASED);
}

/*
 * A full ring: a producer dies at its intent step on the way to finding it full. Repair
 * must push the dead producer's value anew, so while the ring stays full it answers
 * -ENOSPC and leaves the record for a later call; once there is room, the value arrives.
 */
TK_TEST(crash_push_on_full_ring)
{
    struct fx f = fx_new(2);
    TK_ASSERT_EQ(ring_push(f.r, f.me, 1), 0);
    TK_ASSERT_EQ(ring_push(f.r, f.me, 2), 0);
    atomic_store(&f.hc->kill_at, RING_HOOK_PUSH_INTENT);
    reap_killed(child_op(f.r, f.dead, f.hc, OP_PUSH, 100, true));
    TK_ASSERT_EQ(atomic_load(&f.dead->held), RING_NONE); /* handed to the record */
    TK_ASSERT_EQ(atomic_load(&f.dead->rec), RING_REC(RING_OP_ENQ_TRY, 2));
    uint64_t got = 0;
    TK_ASSERT_EQ(ring_repair(f.r, f.dead, f.live, 2, &got), -ENOSPC);
    TK_ASSERT(atomic_load(&f.dead->rec) != 0); /* not done: call again */
    expect_pop(f.r, f.me, 1);                  /* room again */
    TK_ASSERT_EQ(repair(f.r, f.dead, f.live, 2, &got), 0);
    TK_ASSERT_EQ(got, RING_NONE);
    TK_ASSERT_EQ(atomic_load(&f.dead->rec), 0);
    TK_ASSERT_EQ(atomic_load(&f.dead->held), RING_NONE);
    expect_pop(f.r, f.me, 2);
    expect_pop(f.r, f.me, 100);
    expect_empty(f.r, f.me);
}

/* A live producer paused after winning the same position: repair must wait for it. */
TK_TEST(crash_repair_waits_for_live_owner)
{
    struct fx f = fx_new(4);
    struct hookctl *lhc = new_hookctl();
    atomic_store(&f.hc->kill_at, RING_HOOK_PUSH_INTENT);
    reap_killed(child_op(f.r, f.dead, f.hc, OP_PUSH, 100, false)); /* ENQ_TRY|0 */
    atomic_store(&lhc->pause_at, RING_HOOK_PUSH_WON);
    pid_t live = child_op(f.r, &f.recs[2], lhc, OP_PUSH, 200, false); /* wins 0 */
    wait_paused(lhc);
    uint64_t got = 0;
    for (int i = 0; i < 3; i++)
        TK_ASSERT_EQ(ring_repair(f.r, f.dead, f.live, 2, &got), -EAGAIN);
    uint64_t v;
    TK_ASSERT_EQ(ring_pop(f.r, f.me, &v), -EAGAIN); /* 0 not yet published */
    atomic_store(&lhc->go, 1);
    reap_ok(live);
    TK_ASSERT_EQ(atomic_load(&lhc->out_rc), 0);
    TK_ASSERT_EQ(repair(f.r, f.dead, f.live, 2, &got), 0);
    expect_pop(f.r, f.me, 200);
    expect_pop(f.r, f.me, 100);
    expect_empty(f.r, f.me);
}

/* The same with a consumer: a live one paused after winning position 0. */
TK_TEST(crash_repair_waits_for_live_consumer)
{
    struct fx f = fx_new(4);
    struct hookctl *lhc = new_hookctl();
    TK_ASSERT_EQ(ring_push(f.r, f.me, 10), 0);
    TK_ASSERT_EQ(ring_push(f.r, f.me, 20), 0);
    atomic_store(&f.hc->kill_at, RING_HOOK_POP_INTENT);
    reap_killed(child_op(f.r, f.dead, f.hc, OP_POP, 0, false)); /* DEQ_TRY|0 */
    atomic_store(&lhc->pause_at, RING_HOOK_POP_CLAIMED);
    pid_t live = child_op(f.r, &f.recs[2], lhc, OP_POP, 0, false);
    wait_paused(lhc);
    uint64_t got = 0;
    TK_ASSERT_EQ(ring_repair(f.r, f.dead, f.live, 2, &got), -EAGAIN);
    atomic_store(&lhc->go, 1);
    reap_ok(live);
    TK_ASSERT_EQ(atomic_load(&lhc->out), 10);
    TK_ASSERT_EQ(repair(f.r, f.dead, f.live, 2, &got), 0);
    TK_ASSERT_EQ(got, RING_NONE);
    TK_ASSERT_EQ(atomic_load(&f.dead->held), RING_NONE);
    expect_pop(f.r, f.me, 20);
    expect_empty(f.r, f.me);
}

/* ---------------------------------------------------------------------------------- */
/* 2. Repair racing a live owner (needs the hooks to pause the live process)            */
/* ---------------------------------------------------------------------------------- */

static struct {
    char *page; /* the live records; PROT_NONE while the race is armed */
    size_t len;
    struct hookctl *hc; /* the paused live process */
    struct ring_intent *live_rec;
    struct ring *r;
    uint64_t push_after; /* pushed by the handler once the live op is done (or RING_NONE) */
    _Atomic int faults;
} g_race;

static void race_segv(int sig, siginfo_t *si, void *uc)
{
    char *a = si->si_addr;
    if (a < g_race.page || a >= g_race.page + g_race.len) {
        signal(SIGSEGV, SIG_DFL); /* a real crash: fault again, die */
        return;
    }
    mprotect(g_race.page, g_race.len, PROT_READ | PROT_WRITE);
    atomic_fetch_add(&g_race.faults, 1);
    atomic_store(&g_race.hc->go, 1); /* the live owner completes its operation now */
    for (int i = 0; i < 10000 && atomic_load(&g_race.live_rec->rec) != 0; i++)
        sleep_us(1000);
    if (g_race.push_after != RING_NONE)
        ring_push(g_race.r, NULL, g_race.push_after);
}

static struct ring_intent *race_arm(struct ring *r, struct hookctl *hc, uint64_t push_after)
{
    long pg = sysconf(_SC_PAGESIZE);
    g_race.len = (size_t)pg;
    g_race.page = shared_alloc(g_race.len);
    g_race.live_rec = (struct ring_intent *)g_race.page;
    ring_intent_init(g_race.live_rec);
    g_race.hc = hc;
    g_race.r = r;
    g_race.push_after = push_after;
    atomic_store(&g_race.faults, 0);
    struct sigaction sa = {0};
    sa.sa_sigaction = race_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    TK_ASSERT_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
    return g_race.live_rec;
}

/*
 * A dead producer's record says ENQ_TRY|0 but it never won position 0: a live producer did
 * and is paused before publishing. Repair looks at the cell (unpublished), then at the
 * live records; in between, the live producer publishes 200 and clears its record. Repair
 * must see that the position was not the dead one's: 200 stays, and the dead producer's
 * 100 is pushed anew. (Deciding on the first look at the cell overwrote 200 with 100.)
 */
TK_TEST(crash_repair_race_live_producer_completes)
{
    struct ring *r = new_ring(2);
    struct ring_intent *dead = shared_alloc(sizeof *dead);
    ring_intent_init(dead);
    struct hookctl *dhc = new_hookctl(), *lhc = new_hookctl();
    atomic_store(&dhc->kill_at, RING_HOOK_PUSH_INTENT);
    reap_killed(child_op(r, dead, dhc, OP_PUSH, 100, true));
    struct ring_intent *lrec = race_arm(r, lhc, RING_NONE);
    atomic_store(&lhc->pause_at, RING_HOOK_PUSH_WON);
    pid_t live = child_op(r, lrec, lhc, OP_PUSH, 200, false);
    wait_paused(lhc);

    struct ring_intent *lv[1] = {lrec};
    uint64_t got = 0;
    TK_ASSERT_EQ(mprotect(g_race.page, g_race.len, PROT_NONE), 0);
    int rc = ring_repair(r, dead, lv, 1, &got);
    TK_ASSERT_EQ(atomic_load(&g_race.faults), 1); /* the race really happened */
    reap_ok(live);
    TK_ASSERT_EQ(atomic_load(&lhc->out_rc), 0); /* 200 was pushed: it must arrive */
    while (rc == -EAGAIN || rc == -ENOSPC)
        rc = ring_repair(r, dead, lv, 1, &got);
    TK_ASSERT_EQ(rc, 0);
    TK_ASSERT_EQ(atomic_load(&dead->held), RING_NONE);
    struct ring_intent me;
    ring_intent_init(&me);
    expect_pop(r, &me, 200);
    expect_pop(r, &me, 100);
    expect_empty(r, &me);
    check_flows(r, lrec, &me);
}

/*
 * A dead consumer's record says DEQ_TRY|0 but a live consumer won position 0 and is paused
 * before releasing it. Between repair's look at the cell and its look at the live
 * records, the live consumer releases the cell (it got 10) and a producer reuses the cell
 * for 30. Repair must do nothing: 10 was delivered once, 30 is still queued. (Deciding on
 * the first look reported 30 as the dead one's and rewound the cell, stalling the ring.)
 */
TK_TEST(crash_repair_race_live_consumer_completes)
{
    struct ring *r = new_ring(2);
    struct ring_intent *dead = shared_alloc(sizeof *dead);
    ring_intent_init(dead);
    TK_ASSERT_EQ(ring_push(r, NULL, 10), 0);
    TK_ASSERT_EQ(ring_push(r, NULL, 20), 0);
    struct hookctl *dhc = new_hookctl(), *lhc = new_hookctl();
    atomic_store(&dhc->kill_at, RING_HOOK_POP_INTENT);
    reap_killed(child_op(r, dead, dhc, OP_POP, 0, false));
    struct ring_intent *lrec = race_arm(r, lhc, 30);
    atomic_store(&lhc->pause_at, RING_HOOK_POP_WON);
    pid_t live = child_op(r, lrec, lhc, OP_POP, 0, false);
    wait_paused(lhc);

    struct ring_intent *lv[1] = {lrec};
    uint64_t got = 0;
    TK_ASSERT_EQ(mprotect(g_race.page, g_race.len, PROT_NONE), 0);
    int rc = ring_repair(r, dead, lv, 1, &got);
    TK_ASSERT_EQ(atomic_load(&g_race.faults), 1);
    reap_ok(live);
    TK_ASSERT_EQ(atomic_load(&lhc->out), 10);
    while (rc == -EAGAIN)
        rc = ring_repair(r, dead, lv, 1, &got);
    TK_ASSERT_EQ(rc, 0);
    TK_ASSERT_EQ(got, RING_NONE);                      /* 10 was the live one's */
    TK_ASSERT_EQ(atomic_load(&dead->held), RING_NONE); /* ... and 30 nobody's yet */
    struct ring_intent me;
    ring_intent_init(&me);
    expect_pop(r, &me, 20);
    expect_pop(r, &me, 30);
    expect_empty(r, &me);
    check_flows(r, lrec, &me);
}
#endif /* TAKO_TEST_HOOKS */

/* ---------------------------------------------------------------------------------- */
/* 3. Stress: 4 producers, 4 consumers, random SIGKILLs, repair, respawn                */
/* ---------------------------------------------------------------------------------- */
/*
 * Accounting. Values are 0 .. ST_TOTAL-1; producer p owns the range [p*Q, (p+1)*Q).
 *
 * Producer incarnation (record `me` in the shm proc table, progress `next` in shm):
 *     v = next;  me->held = v;  next = v + 1;  ring_push(v) until it returns 0
 * Setting `held` first makes the producer own v the way an acceptor owns a job index it
 * took from the free ring; ring_push hands it over (the record carries it from its first
 * step, and held is cleared). So at every instruction v is tracked by exactly one of:
 * `next` (not yet taken), `held` (taken, not handed over), the intent record (being
 * pushed: repair finishes the push), or the ring. After the parent has reaped and repaired
 * a dead producer, it looks at `held`:
 *     held == NONE        nothing pending: v is in the ring, or still `next`;
 *     held == next        died between the two stores: drop it, the replacement pushes v;
 *     held == next - 1    died before its push recorded anything: the parent pushes v
 *                         (the master re-queueing a job).
 * So every value must be delivered exactly once, including the in-flight ones.
 *
 * Consumer incarnation (unique serial s > 0):
 *     ring_pop(&v)  [sets me->held = v];  CAS who[v]: 0 -> s (else: a duplicate);
 *     ring_intent_clear_held(me)
 * After repair, a dead consumer's `held` (the one place that says what it had taken; it
 * equals `recovered` when repair released the cell itself) is settled by the parent:
 *     who[held] == s      it had recorded the value and died before clearing held;
 *     who[held] == 0      taken from the ring, never recorded: mark it RECOVERED;
 *     anything else       delivered twice: fail.
 *
 * At the end (all producers done, ring drained, consumers stopped): who[v] != 0 for every
 * v, and no CAS ever failed. One process is killed at a time, and repaired with every
 * other worker's record as live before the next kill.
 */
#define ST_PROD      4
#define ST_CONS      4
#define ST_WORKERS   (ST_PROD + ST_CONS)
#define ST_TOTAL     1000000u
#define ST_CAP       64u
#define ST_RECOVERED UINT32_MAX

struct st_prod {
    _Alignas(64) _Atomic uint64_t next;
    uint64_t end;
};

struct st_shared {
    struct st_prod prod[ST_PROD];
    _Atomic uint32_t stop;
    _Atomic uint64_t dups, bad, delivered;
    _Atomic uint64_t first_dup;
    _Atomic uint32_t who[ST_TOTAL];
};

struct st_worker {
    pid_t pid; /* 0: not running */
    int proc;  /* proc-table entry */
    uint32_t serial;
    bool done; /* producer finished its range */
};

struct st {
    struct tk_shm *shm;
    struct ring *r;
    struct st_shared *S;
    struct st_worker wk[ST_WORKERS];
    uint32_t serial;
    uint64_t rng;
    /* counters */
    unsigned kills_prod, kills_cons, repairs, repair_eagain, repair_enospc;
    unsigned rec_op[8], recovered, held_recovered, held_recorded, handed_by_parent, held_dropped,
        respawns;
};

static uint64_t st_rand(struct st *T)
{
    T->rng ^= T->rng << 13;
    T->rng ^= T->rng >> 7;
    T->rng ^= T->rng << 17;
    return T->rng;
}

static void st_producer(struct st *T, struct ring_intent *me, int w)
{
    struct st_prod *p = &T->S->prod[w];
    for (;;) {
        uint64_t v = atomic_load(&p->next);
        if (v >= p->end)
            _exit(0);
        atomic_store(&me->held, v);
        atomic_store(&p->next, v + 1);
        unsigned spins = 0;
        while (ring_push(T->r, me, v) != 0) {
            if (++spins < 64)
                sched_yield();
            else
                sleep_us(50);
        }
    }
}

static void st_consumer(struct st *T, struct ring_intent *me, uint32_t serial)
{
    struct st_shared *S = T->S;
    for (;;) {
        uint64_t v;
        if (ring_pop_wait(T->r, me, &v, 5) != 0) {
            if (atomic_load(&S->stop))
                _exit(0);
            continue;
        }
        if (v >= ST_TOTAL) {
            atomic_fetch_add(&S->bad, 1);
        } else {
            uint32_t z = 0;
            if (!atomic_compare_exchange_strong(&S->who[v], &z, serial)) {
                atomic_fetch_add(&S->dups, 1);
                atomic_store(&S->first_dup, v);
            }
        }
        atomic_fetch_add(&S->delivered, 1);
        ring_intent_clear_held(me);
    }
}

#ifdef TAKO_TEST_HOOKS
/* In stress workers: at a random 1 in 4 ring steps give up the CPU, and at 1 in 256
 * sleep 200 us, so that a kill often lands in the middle of a push or a pop. */
static uint64_t g_st_rng;

static void stress_hook(int point)
{
    g_st_rng ^= g_st_rng << 13;
    g_st_rng ^= g_st_rng >> 7;
    g_st_rng ^= g_st_rng << 17;
    if ((g_st_rng & 255) == 0)
        sleep_us(200);
    else if ((g_st_rng & 3) == 0)
        sched_yield();
}
#endif

static void st_spawn(struct st *T, int w)
{
    struct st_worker *k = &T->wk[w];
    k->serial = ++T->serial;
    k->proc =
        shm_proc_claim(T->shm, -1, w < ST_PROD ? TK_ROLE_ACCEPTOR : TK_ROLE_EXECUTOR, (uint16_t)w);
    TK_ASSERT(k->proc >= 0);
    struct tk_proc *pr = shm_proc(T->shm, (uint32_t)k->proc);
    pid_t pid = fork();
    TK_ASSERT(pid >= 0);
    if (pid == 0) {
        alarm(120);
#ifdef TAKO_TEST_HOOKS
        g_st_rng = T->rng ^ ((uint64_t)k->serial << 32) ^ (uint64_t)getpid();
        ring_test_hook = stress_hook;
#endif
        if (w < ST_PROD)
            st_producer(T, &pr->intent, w);
        else
            st_consumer(T, &pr->intent, k->serial);
        _exit(0);
    }
    atomic_store(&pr->pid, pid);
    k->pid = pid;
}

/* Push a value on behalf of a dead producer (the master re-queueing it). */
static void st_push_for_dead(struct st *T, uint64_t v)
{
    uint64_t deadline = now_us() + 10000000u;
    while (ring_push(T->r, NULL, v) != 0) {
        TK_ASSERT(now_us() < deadline);
        sleep_us(20);
    }
    T->handed_by_parent++;
}

/* Worker w's process has been reaped: repair, settle what it held, free its entry. */
static void st_settle(struct st *T, int w)
{
    struct st_worker *k = &T->wk[w];
    struct tk_proc *pr = shm_proc(T->shm, (uint32_t)k->proc);
    struct ring_intent *dead = &pr->intent;
    struct ring_intent *live[ST_WORKERS];
    size_t n = 0;
    for (int o = 0; o < ST_WORKERS; o++)
        if (o != w && T->wk[o].pid > 0)
            live[n++] = &shm_proc(T->shm, (uint32_t)T->wk[o].proc)->intent;
    uint64_t rec = atomic_load(&dead->rec);
    T->rec_op[RING_REC_OP(rec) & 7]++;
    uint64_t got = RING_NONE;
    int rc;
    uint64_t deadline = now_us() + 10000000u;
    while ((rc = ring_repair(T->r, dead, live, n, &got)) != 0) {
        TK_ASSERT(rc == -EAGAIN || rc == -ENOSPC); /* ENOSPC: full, re-push later */
        if (rc == -EAGAIN)
            T->repair_eagain++;
        else
            T->repair_enospc++;
        TK_ASSERT(now_us() < deadline);
        sleep_us(20);
    }
    T->repairs++;
    TK_ASSERT_EQ(atomic_load(&dead->rec), 0);
    uint64_t held = atomic_load(&dead->held);
    if (w < ST_PROD) {
        TK_ASSERT_EQ(got, RING_NONE);
        uint64_t next = atomic_load(&T->S->prod[w].next);
        if (held == next) {
            T->held_dropped++;
        } else if (held != RING_NONE) {
            TK_ASSERT_EQ(held, next - 1);
            st_push_for_dead(T, held);
        }
    } else {
        if (got != RING_NONE) {
            T->recovered++;
            TK_ASSERT_EQ(got, held);
        }
        if (held != RING_NONE) {
            TK_ASSERT(held < ST_TOTAL);
            TK_ASSERT_EQ(atomic_load(&dead->held_ring), T->r->id);
            uint32_t z = 0;
            if (atomic_compare_exchange_strong(&T->S->who[held], &z, ST_RECOVERED)) {
                T->held_recovered++;
            } else {
                TK_ASSERT_EQ(z, k->serial); /* recorded by itself: not a duplicate */
                T->held_recorded++;
            }
        }
    }
    ring_intent_init(dead);
    atomic_store(&pr->pid, 0);
    k->pid = 0;
}

static int st_find(struct st *T, pid_t pid)
{
    for (int w = 0; w < ST_WORKERS; w++)
        if (T->wk[w].pid == pid)
            return w;
    return -1;
}

static bool st_producers_done(struct st *T)
{
    for (int w = 0; w < ST_PROD; w++)
        if (!T->wk[w].done)
            return false;
    return true;
}

/* Reap whatever exited by itself: only producers that finished their range may. */
static void st_reap_exited(struct st *T)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        int w = st_find(T, pid);
        TK_ASSERT(w >= 0 && w < ST_PROD);
        TK_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        st_settle(T, w);
        TK_ASSERT(atomic_load(&T->S->prod[w].next) >= T->S->prod[w].end);
        T->wk[w].done = true;
    }
}

TK_TEST_T(crash_stress_4p4c_random_kills, 180)
{
    struct st *T = calloc(1, sizeof *T);
    TK_ASSERT(T);
    TK_ASSERT_EQ(shm_create(&T->shm, ST_CAP, ST_PROD, ST_CONS), 0);
    T->r = shm_dispatch(T->shm);
    TK_ASSERT_EQ(T->r->cap, ST_CAP);
    T->S = shared_alloc(sizeof *T->S);
    const char *seed = getenv("TK_SEED");
    T->rng = seed ? strtoull(seed, NULL, 0) : (now_us() ^ (uint64_t)getpid() << 20);
    if (T->rng == 0)
        T->rng = 1;
    printf("  stress: seed %llu (TK_SEED to repeat)\n", (unsigned long long)T->rng);
    const uint64_t q = ST_TOTAL / ST_PROD;
    for (int p = 0; p < ST_PROD; p++) {
        atomic_store(&T->S->prod[p].next, q * (uint64_t)p);
        T->S->prod[p].end = p == ST_PROD - 1 ? ST_TOTAL : q * (uint64_t)(p + 1);
    }
    uint64_t t0 = now_us();
    for (int w = 0; w < ST_WORKERS; w++)
        st_spawn(T, w);

    /* Kill phase: one random worker every 0.3-3 ms, until every producer is done. */
    uint64_t deadline = t0 + 100000000u;
    while (!st_producers_done(T)) {
        TK_ASSERT(now_us() < deadline);
        sleep_us(300 + (long)(st_rand(T) % 2700));
        st_reap_exited(T);
        int w = (int)(st_rand(T) % ST_WORKERS);
        struct st_worker *k = &T->wk[w];
        if (k->pid <= 0)
            continue;
        kill(k->pid, SIGKILL);
        int st;
        TK_ASSERT_EQ(waitpid(k->pid, &st, 0), k->pid);
        if (WIFSIGNALED(st)) {
            TK_ASSERT_EQ(WTERMSIG(st), SIGKILL);
            if (w < ST_PROD)
                T->kills_prod++;
            else
                T->kills_cons++;
        } else {
            TK_ASSERT(w < ST_PROD && WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        st_settle(T, w);
        if (w >= ST_PROD || atomic_load(&T->S->prod[w].next) < T->S->prod[w].end) {
            st_spawn(T, w);
            T->respawns++;
        } else {
            k->done = true;
        }
    }
    uint64_t t1 = now_us();

    /* Drain: every position claimed by a consumer, then stop them. */
    uint64_t drain_deadline = now_us() + 20000000u;
    while (ring_count(T->r) > 0) {
        if (now_us() > drain_deadline) {
            fprintf(stderr, "  stall: enq_pos %llu deq_pos %llu\n",
                    (unsigned long long)atomic_load(&T->r->enq_pos),
                    (unsigned long long)atomic_load(&T->r->deq_pos));
            TK_ASSERT(!"ring drained");
        }
        sleep_us(1000);
    }
    atomic_store(&T->S->stop, 1);
    for (int w = ST_PROD; w < ST_WORKERS; w++) {
        reap_ok(T->wk[w].pid);
        T->wk[w].pid = 0;
    }
    uint64_t t2 = now_us();

    struct st_shared *S = T->S;
    uint64_t missing = 0, recovered = 0;
    for (uint32_t v = 0; v < ST_TOTAL; v++) {
        uint32_t who = atomic_load(&S->who[v]);
        if (who == 0 && missing++ == 0)
            fprintf(stderr, "  first missing value: %u\n", v);
        recovered += who == ST_RECOVERED;
    }
    printf("  stress: %u values in %.2f s (+%.2f s drain); kills: %u producers, %u consumers; "
           "repairs: %u (dead records: none %u, ENQ_TRY %u, ENQ_WON %u, DEQ_TRY %u, DEQ_WON %u; "
           "EAGAIN retries %u, ENOSPC retries %u)\n",
           ST_TOTAL, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6, T->kills_prod, T->kills_cons,
           T->repairs, T->rec_op[RING_OP_NONE], T->rec_op[RING_OP_ENQ_TRY],
           T->rec_op[RING_OP_ENQ_WON], T->rec_op[RING_OP_DEQ_TRY], T->rec_op[RING_OP_DEQ_WON],
           T->repair_eagain, T->repair_enospc);
    printf("  stress: consumers delivered %llu; dead consumers' values: %u recovered by repair, "
           "%u settled from held (%u already recorded); producers' held: %u pushed by the "
           "parent, %u dropped; respawns %u\n",
           (unsigned long long)atomic_load(&S->delivered), T->recovered, T->held_recovered,
           T->held_recorded, T->handed_by_parent, T->held_dropped, T->respawns);
    TK_ASSERT_EQ(atomic_load(&S->bad), 0);
    TK_ASSERT_EQ(atomic_load(&S->dups), 0);
    TK_ASSERT_EQ(missing, 0);
    TK_ASSERT_EQ(recovered, T->held_recovered);
    TK_ASSERT(T->kills_prod + T->kills_cons > 0);
    shm_destroy(T->shm);
    free(T);
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
