/*
 * ring_repair.pml — a Promela model of common/ring.c: Vyukov's MPMC push/pop with
 * per-process intent records (TRY/WON, the value being pushed, `held`), one process
 * SIGKILLed at any step, and the master's ring_repair() + settling of `held` after it.
 *
 *   spin -a ring_repair.pml && gcc -O2 -o pan pan.c && ./pan        (tests/model/check.sh)
 *
 * Sizes: a ring of N = 2 cells; NPROD = 2 producers, producer 0 pushing VALS0 values and
 * producer 1 VALS1 (values 1..NVAL; with 3 or more the ring laps, so a cell is reused and
 * a producer can find a dead consumer's cell in its way); NCONS = 1 or 2 consumers.
 * check.sh runs (VALS0, VALS1, NCONS) = (2, 1, 1) and (1, 1, 2).
 * -DBUGGY models ring_repair() as it was before the fix: it decided on the cell's `seq`
 * read before checking the live records, so a live owner finishing in between was taken
 * for the dead one (check.sh expects that model to fail).
 *
 * Granularity: every statement is one shared-memory access (or one atomic RMW such as the
 * position CAS), so a death can fall between any two of them and the repairer interleaves
 * with the live processes at that grain. Statements that only touch the process's own
 * record fields that nobody reads while it lives (rval, held) are merged with a neighbour.
 * Waiting (futex sleeps, retries after EAGAIN) is modelled as blocking until the process
 * can make progress (a consumer: the cell at deq_pos is published; a producer: the cell at
 * its position is free or enq_pos moved; the repairer: the live owner moved on), so a
 * permanent stall is a deadlock, which spin reports. A consumer can still find the ring
 * empty (another consumer won the race), and a TRY record that owns nothing still shows.
 *
 * Properties:
 *   - no value is delivered twice: delivered[v] <= 1 whenever a consumer returns v or the
 *     master settles a dead consumer's `held` (assert);
 *   - nothing is lost: at the end, every value a producer took (created) was delivered
 *     exactly once, including the one a dead producer was pushing and the one a dead
 *     consumer held (assert in init; a value stuck in the ring also keeps the consumers
 *     waiting, which is the next property);
 *   - no permanent stall after repair: no invalid end state (every process terminates),
 *     and the LTL property `done` (check.sh runs it with weak fairness).
 * Like the master, the repairer respawns the dead process's slot once the repair is done
 * (so a lone consumer's death does not leave the ring without one).
 */
#ifndef NCONS
#define NCONS 1
#endif
#ifndef VALS0
#define VALS0 2 /* values producer 0 pushes: 1 .. VALS0 */
#endif
#ifndef VALS1
#define VALS1 1 /* values producer 1 pushes: VALS0+1 .. VALS0+VALS1 */
#endif
#define NPROD  2
#define NPROC  (NPROD + NCONS)
#define MASTER NPROC /* the repairer's slot in the arrays (it has no intent record) */
#define NVAL   (VALS0 + VALS1)
#define QUOTA(p) ((p) == 0 -> VALS0 : VALS1)
#define BASE(p)  ((p) == 0 -> 0 : VALS0)
#define N      2
#define NONE   255

#define OP_NONE 0
#define ENQ_TRY 1
#define ENQ_WON 2
#define DEQ_TRY 3
#define DEQ_WON 4

/* the ring */
byte enq_pos, deq_pos;
byte seq[N];
byte val[N];
/* intent records: rec = (rop, rpos) is one 64-bit word in C; rval = val; held */
byte rop[NPROC + 1], rpos[NPROC + 1], rval[NPROC + 1], held[NPROC + 1];
/* accounting */
byte created[NVAL + 1], delivered[NVAL + 1];
byte created_total, delivered_total;
/* producers' progress: values taken so far (a respawned producer continues from it) */
byte taken[NPROD];
/* death, repair, respawn */
byte victim = NONE; /* who will die (chosen at the start), or NONE: nobody */
byte dead = NONE;   /* set by the killer at the moment of death; NONE again once replaced */
bool killed, killer_done, repair_done;
bool finished[NPROC]; /* the slot's work is done (by whichever incarnation) */

#define all_done (finished[0] && finished[1] && repair_done && delivered_total == created_total)

/*
 * ring_push(r, rec ? &me : NULL, v). ok = 1 when pushed; ok = 0 when full (-EAGAIN), with
 * pos/s the position and seq it saw full.
 */
inline ring_push(me, v, rec)
{
    d_step {
        if
        :: rec -> prev = held[me]; rval[me] = v
        :: else -> skip
        fi;
        pos = enq_pos
    };
    do
    :: if
       :: rec -> d_step { rop[me] = ENQ_TRY; rpos[me] = pos };
                 held[me] = NONE /* handed over to the record */
       :: else -> skip
       fi;
       s = seq[pos % N];
       if
       :: s == pos ->
           d_step {
               if
               :: enq_pos == pos -> enq_pos++; ok = 1
               :: else -> pos = enq_pos; ok = 0
               fi
           };
           if
           :: ok ->
               if
               :: rec -> rop[me] = ENQ_WON
               :: else -> skip
               fi;
               val[pos % N] = v;
               seq[pos % N] = pos + 1;
               break
           :: else -> skip
           fi
       :: s < pos ->
           if
           :: rec -> held[me] = prev;
                     rop[me] = OP_NONE
           :: else -> skip
           fi;
           ok = 0;
           break
       :: s > pos -> pos = enq_pos
       fi
    od;
    if
    :: ok && rec -> rop[me] = OP_NONE
    :: else -> skip
    fi
}

/* ring_pop(r, &me, &v). ok = 1 with v; ok = 0 when empty at pos (seq s). */
inline ring_pop(me)
{
    pos = deq_pos;
    do
    :: d_step { rop[me] = DEQ_TRY; rpos[me] = pos };
       s = seq[pos % N];
       if
       :: s == pos + 1 ->
           d_step {
               if
               :: deq_pos == pos -> deq_pos++; ok = 1
               :: else -> pos = deq_pos; ok = 0
               fi
           };
           if
           :: ok ->
               d_step { v = val[pos % N]; held[me] = v };
               rop[me] = DEQ_WON;
               seq[pos % N] = pos + N;
               rop[me] = OP_NONE;
               break
           :: else -> skip
           fi
       :: s < pos + 1 ->
           rop[me] = OP_NONE;
           ok = 0;
           break
       :: s > pos + 1 -> pos = deq_pos
       fi
    od
}

proctype Producer(byte me)
{
    byte pos, s, v, prev;
    bool ok;
    {
        do
        :: taken[me] < QUOTA(me) ->
            /* take ownership of a new value (an acceptor taking a free job index) */
            d_step {
                v = BASE(me) + taken[me] + 1;
                taken[me]++;
                created[v] = 1;
                created_total++;
                held[me] = v
            };
            do
            :: ring_push(me, v, 1);
               if
               :: d_step { ok -> pos = 0; s = 0; v = 0; prev = 0; ok = 0 }; break
               :: else -> (seq[pos % N] == pos || enq_pos != pos) /* full: wait for room */
               fi
            od
        :: else -> break
        od;
        finished[me] = 1
    } unless { dead == me };
    if
    :: dead == me -> killed = 1 /* reaped: it will never write again */
    :: else -> skip
    fi
}

proctype Consumer(byte me)
{
    byte pos, s, v;
    bool ok;
    {
        do
        :: (seq[deq_pos % N] == deq_pos + 1) -> /* woken: something to take (futex) */
           ring_pop(me);
           if
           :: ok -> /* returned v: record it, then clear held (one step in the model) */
               d_step {
                   delivered[v]++;
                   assert(delivered[v] == 1);
                   delivered_total++;
                   held[me] = NONE;
                   pos = 0;
                   s = 0;
                   v = 0;
                   ok = 0
               }
           :: else -> d_step { pos = 0; s = 0 } /* empty: another consumer was faster */
           fi
        :: all_done -> break
        od;
        finished[me] = 1
    } unless { dead == me };
    if
    :: dead == me -> killed = 1
    :: else -> skip
    fi
}

/* The victim (chosen in init) dies at any moment, at any step of its work. */
proctype Killer()
{
    atomic {
        if
        :: !finished[victim] -> dead = victim
        :: finished[victim] -> skip /* too late: it finished */
        fi;
        killer_done = 1
    }
}

/* Does a live process show TRY or WON of this kind at position rp? One record per step. */
inline live_owns(try)
{
    owned = 0;
    q = 0;
    do
    :: q < NPROC ->
        if
        :: q != d -> owned = owned || ((rop[q] == try || rop[q] == try + 1) && rpos[q] == rp)
        :: else -> skip
        fi;
        q++
    :: else -> break
    od
}

#define lown(k, try) (k != d && (rop[k] == try || rop[k] == try + 1) && rpos[k] == rp)
#if NCONS > 1
#define some_live_owns(try) (lown(0, try) || lown(1, try) || lown(2, try) || lown(3, try))
#define consumers_over      (finished[2] && finished[3])
#else
#define some_live_owns(try) (lown(0, try) || lown(1, try) || lown(2, try))
#define consumers_over      finished[2]
#endif

/*
 * The master: after the death (and the reap), ring_repair() with every other process as
 * live, retried on -EAGAIN/-ENOSPC; then it settles what the dead process held, and
 * respawns the slot (a producer continues the dead one's share).
 */
proctype Repairer()
{
    byte d, op, rp, pos, s, v, got, q, prev;
    bool ok, owned;
    killer_done;
    if
    :: dead == NONE -> goto out
    :: else -> killed
    fi;
    d = dead;
again:
    skip;
    d_step { op = rop[d]; rp = rpos[d]; v = rval[d]; got = NONE }; /* frozen: it is dead */
    if
    :: op == OP_NONE -> goto settle
    :: else -> skip
    fi;
    s = seq[rp % N];
    if
    :: op == ENQ_WON -> /* it owned rp */
        if
        :: s == rp -> val[rp % N] = v;
                      seq[rp % N] = rp + 1
        :: else -> skip
        fi
    :: op == ENQ_TRY ->
        if
        :: s == rp && enq_pos > rp ->
            live_owns(ENQ_TRY);
            if
            :: owned -> !some_live_owns(ENQ_TRY); goto again /* -EAGAIN: call again */
            :: else -> skip
            fi;
#ifdef BUGGY
            val[rp % N] = v;
            seq[rp % N] = rp + 1;
            goto enq_done
#else
            if
            :: seq[rp % N] == rp -> val[rp % N] = v;
                                    seq[rp % N] = rp + 1;
                                    goto enq_done
            :: else -> skip
            fi
#endif
        :: else -> skip
        fi;
        /* its push did not happen: push its value anew (no intent record) */
        ring_push(MASTER, v, 0);
        if
        :: !ok -> (seq[pos % N] == pos || enq_pos != pos); goto again /* -ENOSPC */
        :: else -> skip
        fi
    :: op == DEQ_WON -> /* the value is in held */
        if
        :: s == rp + 1 -> seq[rp % N] = rp + N;
                          got = held[d]
        :: else -> skip
        fi
    :: op == DEQ_TRY ->
        if
        :: s == rp + 1 && deq_pos > rp ->
            live_owns(DEQ_TRY);
            if
            :: owned -> !some_live_owns(DEQ_TRY); goto again
            :: else -> skip
            fi;
#ifndef BUGGY
            if
            :: seq[rp % N] != rp + 1 -> goto deq_done
            :: else -> skip
            fi;
#endif
            d_step { got = val[rp % N]; held[d] = got };
            seq[rp % N] = rp + N
        :: else -> skip
        fi
    fi;
enq_done:
    if
    :: (op == ENQ_TRY || op == ENQ_WON) && held[d] == v -> held[d] = NONE
    :: else -> skip
    fi;
deq_done:
    skip;
    d_step { rop[d] = OP_NONE; assert(got == NONE || got == held[d]) };
settle:
    if
    :: d < NPROD && held[d] != NONE -> /* a value it had not handed over: re-queue it */
        d_step { v = held[d]; held[d] = NONE };
        do
        :: ring_push(MASTER, v, 0);
           if
           :: ok -> break
           :: else -> (seq[pos % N] == pos || enq_pos != pos)
           fi
        od
    :: d >= NPROD && held[d] != NONE -> /* a value it had taken: the master settles it */
        d_step {
            v = held[d];
            delivered[v]++;
            assert(delivered[v] == 1);
            delivered_total++;
            held[d] = NONE
        }
    :: else -> skip
    fi;
    skip; /* (a jump target may not be a d_step) */
    d_step { op = 0; rp = 0; pos = 0; s = 0; v = 0; got = 0; q = 0; prev = 0; ok = 0; owned = 0 };
    atomic {
        dead = NONE;
        if
        :: d < NPROD -> run Producer(d)
        :: else -> run Consumer(d)
        fi
    };
out:
    repair_done = 1
}

init
{
    byte i;
    d_step {
        i = 0;
        do
        :: i < N -> seq[i] = i; i++
        :: else -> break
        od;
        i = 0;
        do
        :: i <= NPROC -> held[i] = NONE; rval[i] = NONE; i++
        :: else -> break
        od;
        i = 0
    };
    atomic {
        if
        :: killer_done = 1 /* nobody dies */
#ifndef CONSUMER_DEATHS_ONLY
        :: victim = 0
        :: victim = 1
#endif
        :: victim = 2
#if NCONS > 1
        :: victim = 3
#endif
        fi;
        run Producer(0);
        run Producer(1);
        run Consumer(2);
#if NCONS > 1
        run Consumer(3);
#endif
        if
        :: victim != NONE -> run Killer()
        :: else -> skip
        fi;
        run Repairer()
    };
    /* the end: everyone finished or dead, repair done, consumers gone */
    (finished[0] && finished[1] && consumers_over && repair_done);
    d_step {
        i = 1;
        do
        :: i <= NVAL -> assert(delivered[i] == created[i]); i++
        :: else -> break
        od
    }
}

/* Liveness: the run always completes (under weak fairness): nothing stalls for good. */
ltl done { <> (repair_done && finished[0] && finished[1] && consumers_over && delivered_total == created_total) }
