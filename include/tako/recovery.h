/*
 * recovery.h — what the master does when a process dies, at start-up and at a fast stop,
 * so that no job is lost or left hanging (DESIGN.md "Failure model").
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
 *   3. Jobs the job table says it owned:
 *        executor: RUNNING with owner_pid = it → container removed; run again if attempts
 *                  remain (server.max_retry_attempts), else failed, "interrupted"
 *        acceptor: FILLING with acceptor_proc = it → record settled, slot released
 *   4. Its done ring is drained by the master (and on every tick, the done rings of all
 *      free proc entries): completions nobody can answer any more are released; their
 *      records are in PostgreSQL already.
 */
#ifndef TAKO_RECOVERY_H
#define TAKO_RECOVERY_H

#include <sys/types.h>

/* Apply rules 1–4 for the process that was in proc entry `proc_idx` (pid already reaped). */
void recovery_after_death(int proc_idx, pid_t pid);

/* Rule 4 for every proc entry without a process (master tick). */
void recovery_drain_orphans(void);

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
