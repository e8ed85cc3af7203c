/*
 * recovery.h — what the master does when a process dies, at start-up and at a fast stop,
 * so that no job is lost or left hanging (DESIGN.md "Failure model").
 *
 * The master never blocks on the engine or the database in its loop, so recovery is in two
 * halves. The master's half is shared memory only and happens at once, in the order below;
 * what must be recorded in PostgreSQL or removed from the engine is handed on:
 *   - a job to record goes on the settle ring (shm_settle) as (idx, gen), its state left
 *     as the dead process left it (RUNNING with owner_pid 0, or FILLING). The settler
 *     (workers/settler.c) pops it and runs recovery_settle: the SQL first, then the
 *     shared-memory transition (re-queue, or answer and complete, or release) — the order
 *     the old master kept, so a client answered finds the record already written. The
 *     settler holds the value in its intent record while it works; if it dies, rule 2
 *     (from the settle ring) takes the job up where it stopped.
 *   - a dead executor's containers: the master bumps the sweep word (recovery_ask_sweep);
 *     the sweeper (workers/sweeper.c) removes every container of this instance whose
 *     executor is not alive, at once and again 3 s later.
 *
 * The rules, in the order they are applied after a child is reaped:
 *   1. Ring repair (ring.h): finish or undo the ring operation it was in the middle of.
 *   2. What it held (intent->held, from which ring) is handed on by its job's state:
 *        from the free ring, job FREE        → back to the free ring
 *        from a done ring, job DONE          → released (spool removed, slot freed)
 *        from a done ring, job FREE          → its release had begun: back to the free ring
 *        from the dispatch ring, job QUEUED  → back to the dispatch ring (never started)
 *        from the dispatch ring, job RUNNING → settled as a lost run (below)
 *        from the dispatch ring, job DONE    → its completion is delivered again
 *        from the settle ring (the settler died settling it):
 *          job RUNNING or FILLING → back on the settle ring (its SQL is idempotent)
 *          job QUEUED → onto the dispatch ring; DONE → its completion is delivered
 *          again; FREE → back to the free ring
 *   3. Jobs the job table says it owned:
 *        executor: RUNNING with owner_pid = it → to the settler: run again if attempts
 *                  remain (server.max_retry_attempts), else failed, "interrupted"; its
 *                  containers to the sweeper
 *        acceptor: FILLING with acceptor_proc = it → to the settler: record settled
 *                  failed, slot released
 *   4. Its done ring is drained by the master (and on every tick, the done rings of all
 *      free proc entries): completions nobody can answer any more are released; their
 *      records are in PostgreSQL already.
 */
#ifndef TAKO_RECOVERY_H
#define TAKO_RECOVERY_H

#include <stdint.h>
#include <sys/types.h>

struct db;
struct ring_intent;

/* Apply rules 1–4 for the process that was in proc entry `proc_idx` (pid already reaped). */
void recovery_after_death(int proc_idx, pid_t pid);

/* Rule 4 for every proc entry without a process (master tick). */
void recovery_drain_orphans(void);

/*
 * The settler's half: record the job a value of the settle ring names (db may be NULL
 * when the database is unreachable: logged, and settled in shared memory all the same),
 * then finish its transition. `me` holds the value (popped with it) and lets go of it.
 */
void recovery_settle(struct db *db, uint64_t v, struct ring_intent *me);

/* After the loop (the settler is gone): settle whatever is still on the settle ring. */
void recovery_settle_left(void);

/* Wake the sweeper: an executor died, its containers go now. */
void recovery_ask_sweep(void);

/*
 * Start-up: jobs PostgreSQL says this node left queued or running. Each is run again
 * (re-queued into shm from its stored code and input) if attempts remain, else failed
 * "interrupted". Needs shm and the spool dir. Returns how many were re-queued.
 */
int recovery_startup(void);

/* Fast stop: this node's unfinished synchronous jobs become cancelled, "interrupted"
 * (their clients were answered). Asynchronous ones stay queued for the next start. */
void recovery_stop(void);

/* Remove the containers carrying a label ("key=value"), or with NULL every container of
 * this instance. */
void recovery_remove_containers(const char *label_kv);

/* Periodic: remove this instance's containers whose executor is not alive any more. */
void recovery_sweep_containers(void);

#endif
