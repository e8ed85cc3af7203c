/*
 * jobs.h — a job's life: the one owner of its state, in shared memory and in PostgreSQL.
 *
 *   FREE → FILLING (acceptor) → QUEUED → RUNNING (executor) → DONE → FREE
 *
 *   jobs_admit            FREE → FILLING         a slot for a new (or adopted) job
 *   (jobstore_insert)                            its record, 'queued' (the acceptor runs it:
 *                                                it needs the answer — a key conflict)
 *   jobs_enqueue          FILLING → QUEUED       onto the dispatch ring
 *   jobs_adopt            FILLING → QUEUED       a record left unfinished becomes ours again
 *   jobs_start            QUEUED → RUNNING       'running', attempt + 1
 *   jobs_requeue          RUNNING → QUEUED       'queued' (a retry: no container, a lost run)
 *   jobs_hand_back        RUNNING → FREE         'queued' in PostgreSQL only (run after a start)
 *   jobs_finish           RUNNING → DONE         the record and the result (jobs_answer)
 *   jobs_settle_unstarted QUEUED → DONE          'cancelled' (a cancel, a stop)
 *   jobs_cancel                                  the flag a running job's executor sees, and
 *                                                jobs_settle_unstarted for a queued one
 *   jobs_fail_lost        RUNNING → DONE         'failed' (its executor died, no attempts left)
 *   jobs_abandon          FILLING → FREE         'failed' (its acceptor died before the push)
 *   jobs_settle_record, jobs_settle_node_sync    records without a slot (start-up, fast stop)
 *
 * Each transition pairs its shared-memory step with its statement (common/jobstore.c holds
 * every statement on `jobs`; nothing else writes `status`) and logs its own failures. The
 * statement runs on the caller's connection, given as a struct jobs_db: an acceptor's
 * async pgq, or an executor's or the master's blocking db (neither: the caller could not
 * connect and said so; the shared-memory step still happens). A failed statement is
 * logged and the transition goes on: shared memory is what answers the client now, and
 * PostgreSQL's record is repaired by recovery (a record left queued or running is settled
 * or run again at the next start).
 *
 * Every state change that hands a job to another process is a CAS on job->state, so when
 * two parties race to settle one job (an executor starting it while an acceptor cancels
 * it at shutdown), exactly one wins.
 *
 * Several nodes (cluster.enabled, docs/OPERATIONS.md "Several nodes"): "queued" belongs to
 * PostgreSQL and shared memory is this node's fast path. The seams above carry it: an
 * async job this node has no free executor for (jobs_free_executors) is INSERTed unowned
 * without a slot; the cluster process claims such records (JOBSTORE_SQL_CLAIM) and takes
 * them with jobs_take_record, as start-up recovery takes this node's own; jobs_start,
 * jobs_requeue, jobs_hand_back and jobs_finish run fenced statements (node + attempt:
 * struct jobstore_fence), so a node whose job was taken over writes nothing over the new
 * owner's run, and a start the fence refuses drops the job (-EOWNERDEAD).
 */
#ifndef TAKO_JOBS_H
#define TAKO_JOBS_H

#include "tako/db.h"
#include "tako/jobstore.h"
#include "tako/outputs.h"
#include "tako/shm.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* What the module needs of its process, set once before the children fork. */
struct jobs_ctx {
    struct tk_shm *shm;
    const int *done_efd;        /* an eventfd per process slot: wakes an acceptor */
    const char *spool_dir;      /* <spool>/<job id>: a job's files and its result */
    const char *quarantine_dir; /* where a spool dir that cannot be removed goes */
    const char *node;           /* this node's id (server.node_id), on its answers */
    bool fenced;                /* cluster.enabled: statements fenced by node + attempt */
};
void jobs_init(const struct jobs_ctx *ctx);

/* Where a transition's statement runs: the caller's connection (one of them, or none). */
struct jobs_db {
    struct db *db;
    struct pgq *pgq;
};

/* A new job's slot (or an adopted record's: id set). */
struct jobs_admission {
    const char *id; /* NULL: a new uuid */
    uint16_t acceptor_proc;
    uint32_t acceptor_gen;
    uint64_t req_token;
    uint32_t attempt;
    uint32_t timeout_s, startup_timeout_s;
    const char *job_type, *correlation_id, *key_id;
};

/* FREE → FILLING. 0 with the slot, -EAGAIN when none is free (counted as rejected). The
 * slot's id is in shm_job(idx)->id. */
int jobs_admit(const struct jobs_admission *a, struct ring_intent *me, uint32_t *idx,
               uint32_t *gen);
/* FILLING → QUEUED, onto the dispatch ring. 0 or -ENOSPC (logged; left FILLING). */
int jobs_enqueue(uint32_t idx, uint32_t gen, struct ring_intent *me);
/* An unfinished record taken again (start-up): 'queued' in the record, then jobs_enqueue. */
int jobs_adopt(const struct jobs_db *jdb, uint32_t idx, uint32_t gen);
/*
 * A record this node runs: tuple `row` of a result with JOBSTORE_RUN_COLS (start-up
 * recovery's unfinished records, or a claim from the shared queue): a slot, its spool,
 * then onto the dispatch ring — `adopt` first puts the record back to 'queued' (start-up;
 * a claim's is queued already). 0; -EAGAIN no free slot (nothing done: the caller gives
 * the record back); -EIO its spool could not be written (logged; slot released).
 */
int jobs_take_record(const struct jobs_db *jdb, const PGresult *r, int row, bool adopt,
                     struct ring_intent *me);
/* Executors that could take a job now: ready ones minus the slots being filled, queued or
 * run (what a node may claim, and whether a submit takes the fast path). */
int jobs_free_executors(void);
/* The slot of a live (queued or running) job of this node by id, or -1. */
int jobs_find_live(const char *id);
/* QUEUED → RUNNING for the executor that popped (idx, gen); -ESTALE for the stale entry
 * of a job settled while queued (its vote is cast here); -EOWNERDEAD (fenced) when the
 * record is no longer this node's — another node took the job over, or a stop gave it
 * back to the shared queue: it does not run here (its slot is done with). */
int jobs_start(const struct jobs_db *jdb, uint32_t idx, uint32_t gen, struct ring_intent *me);
/* RUNNING → QUEUED after backoff_ms: run it again (the caller decided attempts remain). */
void jobs_requeue(const struct jobs_db *jdb, uint32_t idx, uint32_t gen, struct ring_intent *me,
                  unsigned backoff_ms);
/* RUNNING → FREE, the record back to 'queued': it runs again after the next start. */
void jobs_hand_back(const struct jobs_db *jdb, uint32_t idx, struct ring_intent *me);
/*
 * RUNNING → DONE with its result: the artifacts and the finishing UPDATE (or, when
 * PostgreSQL cannot take them or the job's INSERT still waits on disk, the spool), the
 * result for the waiting client's acceptor (jobs_answer), then the completion
 * (jobs_complete).
 */
void jobs_finish(const struct jobs_db *jdb, uint32_t idx, uint32_t gen, const struct job_row *row,
                 const struct tk_outputs *o, struct ring_intent *me);
/* QUEUED → DONE as 'cancelled' with error `type`, answered like a completion. false when
 * an executor has it (its completion will come). */
bool jobs_settle_unstarted(const struct jobs_db *jdb, uint32_t idx, const char *type,
                           const char *msg, struct ring_intent *me);
/* POST /jobs/{id}/cancel of a live job. */
void jobs_cancel(const struct jobs_db *jdb, uint32_t idx, struct ring_intent *me);
/* RUNNING → DONE as 'failed' ("interrupted"): its executor died and no attempts remain. */
void jobs_fail_lost(const struct jobs_db *jdb, uint32_t idx, const char *msg,
                    struct ring_intent *me);
/* FILLING → FREE, the record (if any) 'failed' ("interrupted"): its acceptor died. */
void jobs_abandon(const struct jobs_db *jdb, uint32_t idx, const char *msg, struct ring_intent *me);
/* A record without a slot: queued | running → status with error {type, message, phase}. */
void jobs_settle_record(const struct jobs_db *jdb, const char *id, const char *status,
                        const char *type, const char *msg, const char *phase);
/* Every unfinished synchronous record of `node` → 'cancelled' ("interrupted"). */
void jobs_settle_node_sync(const struct jobs_db *jdb, const char *node);

/* ---- the slot's holders ---- */

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

/*
 * The answer (job_answer) to the client of a finished job, built by the acceptor that has
 * its completion from the result the job's executor (or whoever settled it) left in the
 * job's spool dir — FINISH's parameters, in dbspool's format. NULL (logged) if it is lost.
 */
json_t *jobs_answer(uint32_t idx);

#endif
