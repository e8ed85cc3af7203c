/*
 * jobs.h — a job slot's life across processes, shared by acceptors, executors and the
 * master (which settles what a dead process left behind).
 *
 *   FREE → FILLING (acceptor) → QUEUED → RUNNING (executor) → DONE → FREE
 *
 * Every state change that hands a job to another process is a CAS on job->state, so when
 * two parties race to settle one job (an executor starting it while an acceptor cancels
 * it at shutdown), exactly one wins.
 */
#ifndef TAKO_JOBS_H
#define TAKO_JOBS_H

#include "tako/shm.h"

#include <jansson.h>
#include <stdint.h>

/* The DB statement that settles a job that did not finish by itself:
 * $1 id, $2 status, $3 error JSON. Leaves finished records alone. */
extern const char *const JOBS_SQL_SETTLE;

/* Remove the spool dir, mark FREE, push the index back on the free ring. */
void jobs_release(uint32_t idx, struct ring_intent *me);

/*
 * A holder of a finished job lets go of it; the slot is released when the last one does.
 * Normally there is one holder (whoever consumes the completion). A job settled while
 * queued (cancelled, or interrupted by a stop) still has its entry in the dispatch ring:
 * it then has two — the completion's consumer and the executor that pops the stale entry
 * (stale_votes = 2) — so the slot never comes back while an old entry for it is queued.
 */
void jobs_done_with(uint32_t idx, struct ring_intent *me);

/* Take the stale entries of settled jobs off the head of the dispatch ring (voting for
 * each), so their slots come back at once instead of when an executor is free. */
void jobs_drain_stale(struct ring_intent *me);

/*
 * The job is finished: mark DONE and hand it to the acceptor that waits (its done ring,
 * then its eventfd). When nobody waits (TK_NO_ACCEPTOR), release it instead.
 */
void jobs_complete(uint32_t idx, uint32_t gen, struct ring_intent *me);

/*
 * Write a job's spool: code/main.py, input/data.json, input/stdin (if any), the extra
 * input files ({name: base64}, names already checked) and requirements.json (the
 * runtime requirements, a JSON array, if any). 0 or -errno with why.
 */
int jobs_write_spool(const char *id, const char *code, const char *input, const char *stdin_text,
                     const char *files_json, const char *requirements, char *why, size_t wlen);

/* The error object {type, message, phase}. */
json_t *jobs_error_json(const char *type, const char *message, const char *phase);

/*
 * Write <spool>/response.json for a job that ends without a normal run (interrupted,
 * cancelled before it started, lost its executor): the same shape as a real result.
 * 0 or -errno.
 */
int jobs_write_settled_response(const struct tk_job *job, const char *status, const char *type,
                                const char *message);

#endif
