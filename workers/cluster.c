/*
 * cluster.c — the cluster process ("takod: cluster 0", only with cluster.enabled): this
 * node's side of the shared queue (docs/OPERATIONS.md, "Several nodes"). PostgreSQL is
 * the queue of record; shared memory stays this node's fast path.
 *
 *   - An async job an acceptor had no free executor for is INSERTed unowned (node NULL);
 *     a trigger NOTIFYs takod_queue. This process LISTENs, and while the node has free
 *     executors (jobs_free_executors) it claims the oldest unowned jobs, as many as it
 *     has room for, in one statement (JOBSTORE_SQL_CLAIM: FOR UPDATE SKIP LOCKED, so
 *     claimers never wait on each other; the claim sets node and lease_until), writes
 *     their spools and puts them on the dispatch ring (jobs_take_record). A claim that
 *     filled every free executor may have left more: it claims again as soon as one is
 *     free (shared memory is looked at every 20 ms, no SQL) — otherwise it sleeps on the
 *     notification socket, with one look every 2 s in case a notification was missed.
 *   - A cancel asked through another node arrives as NOTIFY takod_cancel "<node> <id>"
 *     (and as the record's cancel_requested, looked at every second): the job's slot
 *     here is cancelled as a local cancel would (jobs_cancel). A live-output stream of
 *     one of this node's jobs opened through another node arrives as takod_watch: the
 *     job's executor announces its output from then on (workers/api_wait.c relays it).
 *   - On QUIT it claims no more and gives this node's unstarted async jobs back to the
 *     shared queue at once (JOBSTORE_SQL_RELEASE), so other nodes run them while this one
 *     drains; an executor that pops one of them finds the record no longer this node's
 *     (jobs_start's fence) and drops it.
 * The lease of this node's jobs, the takeover of a dead node's and the heartbeat are the
 * settler's (workers/settler.c). Without the database nothing is claimed: a node cut off
 * from PostgreSQL stops claiming by itself, and its own jobs' leases run out.
 */
#include "tako/bgchild.h"
#include "tako/db.h"
#include "tako/jobs.h"
#include "tako/jobstore.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_MS 1000 /* between two connection attempts */
#define POLL_MS    2000 /* a claim attempt even without a notification */
#define ASKED_MS   1000 /* cancel_requested looked at */
#define BACKLOG_MS 20   /* free executors looked for while the queue may have more */
#define IDLE_MS    500  /* the longest sleep (the heartbeat the master watches) */

static struct {
    struct db *db;  /* statements */
    PGconn *listen; /* LISTEN takod_queue, takod_cancel */
    uint64_t next_connect_ms;
    bool failing; /* an outage is logged once */
    bool wake;    /* a job became claimable */
    bool backlog; /* the last claim filled every free executor */
    struct tk_proc *me;
    char lease[24];
} C;

static void drop_conns(void)
{
    db_close(C.db);
    C.db = NULL;
    if (C.listen)
        PQfinish(C.listen);
    C.listen = NULL;
}

/* Both connections, at most one attempt a second. true when they are up. */
static bool connected(void)
{
    if (C.db && C.listen && PQstatus(C.listen) == CONNECTION_OK)
        return true;
    uint64_t now = now_mono_ms();
    if (now < C.next_connect_ms)
        return false;
    drop_conns();
    char err[512] = "";
    if (db_open(&C.db, tk.conninfo, err, sizeof err) == 0) {
        C.listen = PQconnectdb(tk.conninfo);
        PGresult *r =
            PQstatus(C.listen) == CONNECTION_OK
                ? PQexec(C.listen, "LISTEN takod_queue; LISTEN takod_cancel; LISTEN takod_watch")
                : NULL;
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK)
            snprintf(err, sizeof err, "LISTEN: %s", PQerrorMessage(C.listen));
        PQclear(r);
    }
    if (err[0]) {
        if (!C.failing)
            log_error("msg=\"cluster: database connect failed; claiming nothing, retrying every "
                      "second\" err=\"%s\"",
                      err);
        C.failing = true;
        drop_conns();
        C.next_connect_ms = now + CONNECT_MS;
        return false;
    }
    if (C.failing)
        log_info("msg=\"cluster: database reachable again\"");
    C.failing = false;
    C.wake = true; /* whatever was queued meanwhile */
    return true;
}

/* Cancel this node's slot of job `id`, if it has one. */
static void cancel_here(const char *id)
{
    int idx = jobs_find_live(id);
    if (idx < 0)
        return;
    jobs_cancel(&(struct jobs_db){.db = C.db}, (uint32_t)idx, &C.me->intent);
    log_info("msg=\"job cancelled through another node\" job=%s", id);
}

/* Job `id` is streamed (GET /jobs/{id}/events) through another node: its executor
 * announces its output from now on (the count is the slot's until the job ends). */
static void watch_here(const char *id)
{
    int idx = jobs_find_live(id);
    if (idx >= 0)
        atomic_fetch_add(&shm_job(tk.shm, (uint32_t)idx)->watchers, 1);
}

/* "<node> <id>" for this node: the id, else NULL (the node id may hold spaces, the
 * uuid does not). */
static const char *for_here(const char *payload)
{
    const char *sp = strrchr(payload, ' ');
    if (!sp || (size_t)(sp - payload) != strlen(tk.node) ||
        strncmp(payload, tk.node, (size_t)(sp - payload)) != 0)
        return NULL;
    return sp + 1;
}

static void read_notifications(void)
{
    if (!C.listen || !PQconsumeInput(C.listen)) {
        if (C.listen)
            log_warn("msg=\"cluster: notification connection lost\" err=\"%s\"",
                     PQerrorMessage(C.listen));
        drop_conns();
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(C.listen)) != NULL) {
        if (!strcmp(n->relname, "takod_queue")) {
            C.wake = true;
        } else if (!strcmp(n->relname, "takod_cancel")) {
            const char *id = for_here(n->extra);
            if (id)
                cancel_here(id);
        } else if (!strcmp(n->relname, "takod_watch")) {
            const char *id = for_here(n->extra);
            if (id)
                watch_here(id);
        }
        PQfreemem(n);
    }
}

static void cancels_asked(void)
{
    const char *p[1] = {tk.node};
    PGresult *r = db_exec(C.db, JOBSTORE_SQL_CANCEL_ASKED, 1, p);
    for (int i = 0; r && i < PQntuples(r); i++)
        cancel_here(PQgetvalue(r, i, 0));
    PQclear(r);
}

/* Claim up to `room` jobs; how many were claimed. */
static int claim(int room)
{
    char n[24];
    snprintf(n, sizeof n, "%d", room);
    const char *p[3] = {tk.node, C.lease, n};
    PGresult *r = db_exec(C.db, JOBSTORE_SQL_CLAIM, 3, p);
    if (!r) {
        log_warn("msg=\"cluster: claim failed\" err=\"%s\"", db_last_error(C.db));
        return 0;
    }
    struct jobs_db jdb = {.db = C.db};
    int got = PQntuples(r);
    for (int i = 0; i < got; i++) {
        const char *id = PQgetvalue(r, i, JRUN_ID);
        /* never more than asked for, whatever the statement returned: the rest go back */
        int rc = i < room ? jobs_take_record(&jdb, r, i, false, &C.me->intent) : -ENOSPC;
        if (rc == 0) {
            log_debug("msg=\"claimed a job from the shared queue\" job=%s", id);
            continue;
        }
        /* no slot or no spool here: back to the queue for another node (or a later try) */
        const char *u[2] = {id, tk.node};
        PGresult *ur = db_exec(C.db, JOBSTORE_SQL_UNCLAIM, 2, u);
        if (!ur)
            log_error("msg=\"cluster: giving a claim back failed; it runs after its lease\" "
                      "job=%s err=\"%s\"",
                      id, db_last_error(C.db));
        PQclear(ur);
    }
    PQclear(r);
    return got;
}

/* QUIT: what this node holds and has not started goes back to the shared queue. */
static void release_unstarted(void)
{
    if (!connected())
        return; /* the lease runs out instead */
    const char *p[1] = {tk.node};
    PGresult *r = db_exec(C.db, JOBSTORE_SQL_RELEASE, 1, p);
    if (!r)
        log_warn("msg=\"cluster: giving unstarted jobs back failed; they run after their "
                 "lease\" err=\"%s\"",
                 db_last_error(C.db));
    else
        log_info("msg=\"stopping: unstarted jobs given back to the shared queue\" count=%d",
                 PQntuples(r));
    PQclear(r);
}

int cluster_main(int slot)
{
    bgchild_signals(NULL);
    C.me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    snprintf(C.lease, sizeof C.lease, "%lld", (long long)tk.cfg.cluster_lease);
    atomic_store(&C.me->ready, 1);
    log_info("msg=\"cluster process ready\" slot=%d node=\"%s\" lease_s=%s", slot, tk.node,
             C.lease);
    uint64_t next_poll = 0, next_asked = 0;
    while (!bgchild_stop) {
        bgchild_round(C.me);
        int timeout = IDLE_MS;
        if (connected()) {
            read_notifications();
            uint64_t now = now_mono_ms();
            if (C.db && now >= next_asked) {
                cancels_asked();
                next_asked = now + ASKED_MS;
            }
            int room = atomic_load(&tk.shm->docker_ok) ? jobs_free_executors() : 0;
            if (C.db && room > 0 && (C.wake || C.backlog || now >= next_poll)) {
                C.wake = false;
                C.backlog = claim(room) == room;
                next_poll = now + POLL_MS;
            }
            if (C.backlog || C.wake)
                timeout = BACKLOG_MS;
        }
        struct pollfd pfd = {.fd = C.listen ? PQsocket(C.listen) : -1, .events = POLLIN};
        if (pfd.fd >= 0)
            poll(&pfd, 1, timeout);
        else
            poll(NULL, 0, timeout);
    }
    release_unstarted();
    log_info("msg=\"cluster process stopping\" slot=%d", slot);
    drop_conns();
    return TK_EXIT_OK;
}
