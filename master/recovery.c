/*
 * recovery.c — settle what dead processes left behind (see recovery.h for the rules).
 * The master runs the shared-memory part between its loop iterations: it is the only
 * process touching the dead one's records, and it never dies without taking every child
 * with it (children have PR_SET_PDEATHSIG), so its own ring operations need no intent
 * record. What needs SQL or the engine it hands on without waiting: jobs to record on the
 * settle ring (the settler, workers/settler.c, runs recovery_settle), containers to remove
 * through the sweep word (the sweeper, workers/sweeper.c). Start-up and stop, outside the
 * loop, may block and do their SQL here.
 */
#include "tako/recovery.h"
#include "tako/sandbox.h"
#include "tako/sandbox_oci.h"
#include "tako/db.h"
#include "tako/docker.h"
#include "tako/jobs.h"
#include "tako/log.h"
#include "tako/nodes.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void recovery_remove_containers(const char *label_kv)
{
    if (!label_kv && sandbox_backend == SANDBOX_OCI)
        oci_sweep(NULL); /* the OCI backend's, under this instance's state root */
    struct docker *d = NULL;
    if (docker_open(&d, tk.cfg.docker_socket) < 0) {
        log_warn("msg=\"cannot reach the engine to remove containers\" err=\"%s\"",
                 docker_last_error(NULL));
        return;
    }
    char label[700];
    if (label_kv)
        snprintf(label, sizeof label, "%s", label_kv);
    else
        snprintf(label, sizeof label, "takod.instance=%s", tk.instance);
    json_t *ids = NULL;
    if (docker_list_by_label(d, label, &ids) == 0) {
        size_t i;
        json_t *id;
        json_array_foreach(ids, i, id)
        {
            int rc = docker_remove(d, json_string_value(id));
            if (rc < 0 && rc != -ENOENT)
                log_warn("msg=\"docker_remove failed\" container=%.12s err=\"%s\"",
                         json_string_value(id), docker_last_error(d));
            else
                log_info("msg=\"removed container\" container=%.12s label=%s",
                         json_string_value(id), label);
        }
        json_decref(ids);
    } else {
        log_warn("msg=\"listing containers failed\" label=%s err=\"%s\"", label,
                 docker_last_error(d));
    }
    docker_close(d);
}

/* The master hands a job a dead process left to the settler (never blocking on SQL). */
static void post_settle(uint32_t idx)
{
    uint64_t v = shm_val(idx, atomic_load(&shm_job(tk.shm, idx)->gen));
    while (ring_push(shm_settle(tk.shm), NULL, v) != 0)
        usleep(100); /* cannot be full: it has a cell for every job slot */
}

/* A run whose executor died: nobody runs it now (owner 0); the settler runs it again or
 * fails it (jobs_requeue, jobs_fail_lost). */
static void settle_lost_run(uint32_t idx)
{
    atomic_store(&shm_job(tk.shm, idx)->owner_pid, 0);
    post_settle(idx);
}

void recovery_settle(struct db *db, uint64_t v, struct ring_intent *me)
{
    uint32_t idx = shm_val_idx(v), gen = shm_val_gen(v);
    struct tk_job *job = idx < tk.shm->n_jobs ? shm_job(tk.shm, idx) : NULL;
    uint32_t state = job ? atomic_load(&job->state) : TK_JOB_FREE;
    /* settled already, or (a second entry for it) run again and taken by an executor */
    if (!job || atomic_load(&job->gen) != gen ||
        (state != TK_JOB_RUNNING && state != TK_JOB_FILLING) ||
        (state == TK_JOB_RUNNING && atomic_load(&job->owner_pid) != 0)) {
        ring_intent_clear_held(me);
        return;
    }
    struct jobs_db jdb = {.db = db};
    if (state == TK_JOB_FILLING) { /* its acceptor died before the job was queued */
        jobs_abandon(&jdb, idx, "the acceptor holding the request died before the job was queued",
                     me);
    } else if (job->attempt <= (uint32_t)tk.cfg.server_max_retry_attempts) {
        log_warn("msg=\"executor died during a job; running it again\" job=%s attempt=%u", job->id,
                 job->attempt);
        jobs_requeue(&jdb, idx, gen, me, 0);
    } else {
        log_error("msg=\"executor died during a job; no attempts left\" job=%s attempt=%u", job->id,
                  job->attempt);
        jobs_fail_lost(&jdb, idx, "the job's executor process died and no attempts remain", me);
    }
}

void recovery_settle_left(void)
{
    if (ring_count(shm_settle(tk.shm)) == 0)
        return;
    char err[512];
    struct db *db = NULL;
    if (db_open(&db, tk.conninfo, err, sizeof err) < 0) {
        log_error("msg=\"settling what dead processes left: database\" err=\"%s\"", err);
        db = NULL; /* settled in shared memory all the same */
    }
    uint64_t v;
    while (ring_pop(shm_settle(tk.shm), NULL, &v) == 0)
        recovery_settle(db, v, NULL);
    db_close(db);
}

void recovery_ask_sweep(void)
{
    futex_word_wake(&tk.shm->sweep_word); /* bumps it: the sweeper looks at once */
}

/* Rule 2: hand on the value the dead process had taken from a ring. */
static void hand_on_held(struct tk_proc *p, pid_t pid)
{
    uint64_t held = atomic_load(&p->intent.held);
    if (held == RING_NONE)
        return;
    uint32_t from = atomic_load(&p->intent.held_ring);
    uint32_t idx = shm_val_idx(held), gen = shm_val_gen(held);
    atomic_store(&p->intent.held, RING_NONE);
    if (idx >= tk.shm->n_jobs)
        return;
    struct tk_job *job = shm_job(tk.shm, idx);
    uint32_t state = atomic_load(&job->state);
    if (from == TK_RING_ID_FREE) {
        if (state == TK_JOB_FREE)
            ring_push(shm_free(tk.shm), NULL, shm_val(idx, 0));
    } else if (from >= TK_RING_ID_DONE0) {
        if (state == TK_JOB_DONE && atomic_load(&job->gen) == gen)
            jobs_done_with(idx, NULL);
        else if (state == TK_JOB_FREE)
            ring_push(shm_free(tk.shm), NULL, shm_val(idx, 0));
    } else if (from == TK_RING_ID_DISPATCH && atomic_load(&job->gen) == gen) {
        if (state == TK_JOB_QUEUED)
            ring_push(shm_dispatch(tk.shm), NULL, held);
        else if (state == TK_JOB_RUNNING &&
                 (atomic_load(&job->owner_pid) == 0 || atomic_load(&job->owner_pid) == pid))
            settle_lost_run(idx);
        else if (state == TK_JOB_DONE && atomic_load(&job->stale_votes) > 0)
            jobs_done_with(idx, NULL); /* it had popped a settled job's stale entry */
        else if (state == TK_JOB_DONE)
            jobs_complete(idx, gen, NULL);
    } else if (from == TK_RING_ID_SETTLE && atomic_load(&job->gen) == gen) {
        /* the settler died settling it: take it up where it stopped (recovery_settle) */
        if (state == TK_JOB_RUNNING || state == TK_JOB_FILLING)
            post_settle(idx); /* again: its SQL may run twice, it changes nothing twice */
        else if (state == TK_JOB_QUEUED)
            ring_push(shm_dispatch(tk.shm), NULL, held);
        else if (state == TK_JOB_DONE)
            jobs_complete(idx, gen, NULL);
        else if (state == TK_JOB_FREE)
            ring_push(shm_free(tk.shm), NULL, shm_val(idx, 0));
    }
}

static void drain_done_ring(uint32_t proc_idx)
{
    uint64_t v;
    while (ring_pop(shm_done(tk.shm, proc_idx), NULL, &v) == 0) {
        uint32_t idx = shm_val_idx(v);
        struct tk_job *job = shm_job(tk.shm, idx);
        if (atomic_load(&job->state) == TK_JOB_DONE && atomic_load(&job->gen) == shm_val_gen(v))
            jobs_done_with(idx, NULL);
    }
}

void recovery_drain_orphans(void)
{
    /* Entries of cancelled queued jobs at the head of the dispatch ring: take them out now
     * rather than when an executor is free, so their slots come back at once. */
    jobs_drain_stale(NULL);
    for (uint32_t i = 0; i < tk.shm->n_procs; i++)
        if (atomic_load(&shm_proc(tk.shm, i)->pid) == 0 && ring_count(shm_done(tk.shm, i)) > 0)
            drain_done_ring(i);
}

void recovery_after_death(int proc_idx, pid_t pid)
{
    struct tk_proc *dead = shm_proc(tk.shm, (uint32_t)proc_idx);
    uint32_t dead_gen = atomic_load(&dead->gen);

    /* 1. ring repair, against every live process's record */
    struct ring_intent **live = calloc(tk.shm->n_procs, sizeof *live);
    size_t n_live = 0;
    for (uint32_t i = 0; live && i < tk.shm->n_procs; i++)
        if ((int)i != proc_idx && atomic_load(&shm_proc(tk.shm, i)->pid) != 0)
            live[n_live++] = &shm_proc(tk.shm, i)->intent;
    struct ring *rings[4] = {shm_dispatch(tk.shm), shm_free(tk.shm), shm_settle(tk.shm),
                             shm_done(tk.shm, (uint32_t)proc_idx)};

    uint32_t rid = atomic_load(&dead->intent.ring);
    struct ring *r = NULL;
    for (int i = 0; i < 4; i++)
        if (rings[i]->id == rid)
            r = rings[i];
    if (!r && rid >= TK_RING_ID_DONE0 && rid - TK_RING_ID_DONE0 < tk.shm->n_procs)
        r = shm_done(tk.shm, rid - TK_RING_ID_DONE0);
    if (r && atomic_load(&dead->intent.rec) != 0) {
        uint64_t rec;
        int rc, tries = 0;
        while ((rc = ring_repair(r, &dead->intent, live, n_live, &rec)) == -EAGAIN &&
               tries++ < 10000)
            usleep(100);
        if (rc < 0)
            log_crit("msg=\"ring repair failed\" ring=%u err=%d", r->id, rc);
        else
            log_warn("msg=\"repaired a ring operation a dead process left half-done\" ring=%u "
                     "pid=%d",
                     r->id, (int)pid);
    }
    free(live);

    /* 2. what it held */
    hand_on_held(dead, pid);

    /* its containers (the warm one, the one of the job it ran): the sweeper's, at once */
    if (dead->role == TK_ROLE_EXECUTOR || dead->role == TK_ROLE_SESSIONS)
        recovery_ask_sweep();

    /* 3. what the job table says it owned */
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++) {
        struct tk_job *job = shm_job(tk.shm, i);
        uint32_t state = atomic_load(&job->state);
        if (dead->role == TK_ROLE_EXECUTOR && state == TK_JOB_RUNNING &&
            atomic_load(&job->owner_pid) == pid) {
            settle_lost_run(i);
        } else if (dead->role == TK_ROLE_ACCEPTOR && state == TK_JOB_FILLING &&
                   job->acceptor_proc == (uint16_t)proc_idx && job->acceptor_gen == dead_gen) {
            post_settle(i); /* recorded failed and released by the settler */
        }
    }

    /* 4. its done ring: nobody will answer those clients now */
    drain_done_ring((uint32_t)proc_idx);
    ring_intent_init(&dead->intent);
}

int recovery_startup(void)
{
    char err[512];
    struct db *db = NULL;
    if (db_open(&db, tk.conninfo, err, sizeof err) < 0) {
        log_error("msg=\"start-up recovery: database\" err=\"%s\"", err);
        return -ECONNREFUSED;
    }
    const char *p[1] = {tk.node};
    PGresult *r = db_exec(db, JOBSTORE_SQL_UNFINISHED, 1, p);
    struct jobs_db jdb = {.db = db};
    if (!r) {
        log_error("msg=\"start-up recovery query failed\" err=\"%s\"", db_last_error(db));
        db_close(db);
        return -EIO;
    }
    int requeued = 0;
    for (int row = 0; row < PQntuples(r); row++) {
        const char *id = PQgetvalue(r, row, JRUN_ID);
        int attempt = atoi(PQgetvalue(r, row, JRUN_ATTEMPT));
        int rc = attempt > tk.cfg.server_max_retry_attempts
                     ? -EAGAIN
                     : jobs_take_record(&jdb, r, row, true, NULL);
        if (rc == -EAGAIN) {
            jobs_settle_record(&jdb, id, "failed", "interrupted",
                               "takod stopped before the job finished and no attempts remain",
                               "execution");
            log_warn("msg=\"job interrupted by the previous stop marked failed\" job=%s", id);
            continue;
        }
        if (rc < 0)
            continue; /* logged; the record waits for the next start */
        log_warn("msg=\"job interrupted by the previous stop queued again\" job=%s attempt=%d", id,
                 attempt);
        requeued++;
    }
    PQclear(r);
    db_close(db);
    return requeued;
}

void recovery_stop(void)
{
    char err[512];
    struct db *db = NULL;
    if (db_open(&db, tk.conninfo, err, sizeof err) < 0) {
        log_warn("msg=\"fast stop: database\" err=\"%s\"", err);
        return;
    }
    struct jobs_db jdb = {.db = db};
    jobs_settle_node_sync(&jdb, tk.node);
    if (tk.cfg.cluster_enabled) {
        /* what this node holds and will not run now (interrupted by a fast stop, or left
         * queued): back to the shared queue, for the other nodes at once */
        const char *p[1] = {tk.node};
        PGresult *r = db_exec(db, JOBSTORE_SQL_RELEASE, 1, p);
        if (r && PQntuples(r) > 0)
            log_info("msg=\"stopped: unfinished async jobs given back to the shared queue\" "
                     "count=%d",
                     PQntuples(r));
        PQclear(r);
    }
    nodes_stopped(db);
    db_close(db);
}

/* Whether pid is a live owner of containers of ours, an executor or the sessions process
 * (its containers stay). */
static bool executor_alive(pid_t pid)
{
    int idx = pid > 0 ? shm_proc_find(tk.shm, pid) : -1;
    uint8_t role = idx >= 0 ? shm_proc(tk.shm, (uint32_t)idx)->role : TK_ROLE_NONE;
    return role == TK_ROLE_EXECUTOR || role == TK_ROLE_SESSIONS;
}

void recovery_sweep_containers(void)
{
    if (sandbox_backend == SANDBOX_OCI) {
        int n = oci_sweep(executor_alive);
        if (n > 0)
            log_warn("msg=\"removed leaked containers\" count=%d runtime=%s", n, oci_runtime());
    }
    struct docker *d = NULL;
    if (docker_open(&d, tk.cfg.docker_socket) < 0)
        return;
    char label[700];
    snprintf(label, sizeof label, "takod.instance=%s", tk.instance);
    json_t *items = NULL;
    if (docker_list_with_labels(d, label, &items) == 0) {
        size_t i;
        json_t *it;
        json_array_foreach(items, i, it)
        {
            const char *owner =
                json_string_value(json_object_get(json_object_get(it, "labels"), "takod.executor"));
            pid_t pid = owner ? (pid_t)atoi(owner) : 0;
            if (executor_alive(pid))
                continue; /* a live executor's warm or running container */
            const char *id = json_string_value(json_object_get(it, "id"));
            if (docker_remove(d, id) == 0)
                log_warn("msg=\"removed a leaked container\" container=%.12s executor=%d", id,
                         (int)pid);
        }
        json_decref(items);
    }
    docker_close(d);
}
