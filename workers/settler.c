/*
 * settler.c — the settler process ("takod: settler 0"): the master's database work, so the
 * master's loop never waits on PostgreSQL. The master supervises it like any child
 * (respawned with backoff; its ring operations repaired by recovery.h's rules).
 *
 * It does three things, each one PostgreSQL statement or a few, on one connection it
 * keeps (db_exec reconnects by itself):
 *   - settles the jobs dead processes left, which the master put on the settle ring
 *     (recovery_settle: the SQL, then the shared-memory transition); it sleeps on that
 *     ring, so a job the master hands on is taken at once;
 *   - every 2 s, writes the records spooled while PostgreSQL was down (dbspool_replay);
 *   - every hour, deletes records older than database.execution_record_ttl_days (the
 *     audit chain's retention, docs/AUDIT.md);
 *   - every 2 s (cluster.enabled: every lease/3, if shorter), this node's heartbeat in
 *     `nodes` (common/nodes.c); with cluster.enabled also the lease of every unfinished
 *     job of this node (one statement), the takeover of other nodes' jobs whose lease ran
 *     out while their node stopped heartbeating (run again unowned if attempts remain,
 *     else failed; a sync one cancelled: its client was on that node), and the live node
 *     count the rate limit divides by (shm live_nodes).
 * When the database cannot be reached a job is settled in shared memory all the same (its
 * client is answered; start-up recovery fixes the record later), as the master did.
 */
#include "tako/audit.h"
#include "tako/bgchild.h"
#include "tako/db.h"
#include "tako/dbspool.h"
#include "tako/jobstore.h"
#include "tako/log.h"
#include "tako/nodes.h"
#include "tako/recovery.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WAIT_MS      250  /* the longest sleep on the settle ring */
#define REPLAY_MS    2000 /* how often the database spool is looked at */
#define CONNECT_MS   1000 /* between two connection attempts */
#define RETENTION_MS (3600 * 1000u)

static struct {
    struct db *db;
    uint64_t next_connect_ms;
    bool failing; /* an outage is logged once, not every second */
} S;

/* The connection, opened when there is work; at most one attempt a second. */
static struct db *conn(void)
{
    uint64_t now = now_mono_ms();
    if (S.db || now < S.next_connect_ms)
        return S.db;
    char err[512];
    if (db_open(&S.db, tk.conninfo, err, sizeof err) < 0) {
        if (!S.failing)
            log_error("msg=\"database connect failed; retrying every second\" err=\"%s\"", err);
        S.failing = true;
        S.db = NULL;
        S.next_connect_ms = now + CONNECT_MS;
        return NULL;
    }
    S.failing = false;
    return S.db;
}

/* Delete records older than database.execution_record_ttl_days (never unfinished ones). */
static void sweep_old_records(struct db *db)
{
    if (tk.cfg.database_execution_record_ttl_days <= 0 || !db)
        return;
    char days[24];
    snprintf(days, sizeof days, "%lld", (long long)tk.cfg.database_execution_record_ttl_days);
    const char *p[1] = {days};
    /* the audit chain's retention: deletes only an old prefix of the chain and anchors it,
     * so the chain still verifies (docs/AUDIT.md); unfinished records always stay */
    PGresult *r = db_exec(db, audit_retention_sql, 1, p);
    if (!r)
        log_warn("msg=\"retention sweep failed\" err=\"%s\"", db_last_error(db));
    else if (PQntuples(r) == 1 && atoll(PQgetvalue(r, 0, 0)) > 0) {
        log_info("msg=\"old job records deleted\" count=%s days=%s", PQgetvalue(r, 0, 0), days);
        PGresult *a = db_exec(db,
                              "SELECT audit_seq, audit_hash FROM audit_anchor"
                              " ORDER BY audit_seq DESC LIMIT 1",
                              0, NULL);
        if (a && PQntuples(a) == 1) /* a checkpoint worth exporting */
            log_info("msg=\"audit chain anchored\" audit_seq=%s audit_hash=%s", PQgetvalue(a, 0, 0),
                     PQgetvalue(a, 0, 1));
        PQclear(a);
    }
    PQclear(r);
}

/* One takeover statement; logs what it changed. */
static void takeover(struct db *db, const char *sql, const char *what, const char *const *p)
{
    PGresult *r = db_exec(db, sql, 3, p);
    if (!r) {
        log_warn("msg=\"takeover of expired leases failed\" err=\"%s\"", db_last_error(db));
        return;
    }
    for (int i = 0; i < PQntuples(r); i++)
        log_warn("msg=\"%s\" job=%s node=\"%s\"", what, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
    PQclear(r);
}

/* The heartbeat; in a cluster the leases, the takeover and the live node count too. */
static void heartbeat(struct db *db)
{
    if (!db || nodes_heartbeat(db) < 0)
        return;
    if (!tk.cfg.cluster_enabled)
        return;
    char lease[24], attempts[24];
    snprintf(lease, sizeof lease, "%lld", (long long)tk.cfg.cluster_lease);
    snprintf(attempts, sizeof attempts, "%lld", (long long)tk.cfg.server_max_retry_attempts);
    const char *p[3] = {tk.node, lease, attempts};
    PGresult *r = db_exec(db, JOBSTORE_SQL_RENEW, 2, p);
    if (!r)
        log_warn("msg=\"renewing this node's leases failed\" err=\"%s\"", db_last_error(db));
    PQclear(r);
    takeover(db, JOBSTORE_SQL_TAKEOVER,
             "took over a job whose node stopped answering; it runs again", p);
    takeover(db, JOBSTORE_SQL_TAKEOVER_FAIL,
             "a job whose node stopped answering has no attempts left; failed", p);
    takeover(db, JOBSTORE_SQL_TAKEOVER_SYNC,
             "a synchronous job whose node stopped answering cancelled", p);
    int n = nodes_live_count(db);
    if (n > 0)
        atomic_store(&tk.shm->live_nodes, (uint32_t)n);
}

/* Everything on the settle ring now. */
static void settle_posted(struct ring_intent *me)
{
    uint64_t v;
    while (ring_pop(shm_settle(tk.shm), me, &v) == 0)
        recovery_settle(conn(), v, me);
}

int settler_main(int slot)
{
    bgchild_signals(shm_settle(tk.shm));
    struct tk_proc *me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    atomic_store(&me->ready, 1); /* it serves without a database too */
    log_info("msg=\"settler ready\" slot=%d", slot);
    uint64_t next_replay = 0, next_retention = 0, next_beat = 0;
    uint64_t beat_ms = 2000;
    if (tk.cfg.cluster_enabled && (uint64_t)tk.cfg.cluster_lease * 1000 / 3 < beat_ms)
        beat_ms = (uint64_t)tk.cfg.cluster_lease * 1000 / 3;
    while (!bgchild_stop) {
        bgchild_round(me);
        uint64_t now = now_mono_ms();
        settle_posted(&me->intent);
        if (now >= next_replay) { /* records spooled during a database outage */
            if (dbspool_count() > 0 && conn())
                dbspool_replay(S.db);
            next_replay = now + REPLAY_MS;
        }
        if (now >= next_beat) {
            heartbeat(conn());
            next_beat = now + beat_ms;
        }
        if (now >= next_retention) {
            sweep_old_records(conn());
            next_retention = now + RETENTION_MS;
        }
        uint64_t v;
        if (ring_pop_wait(shm_settle(tk.shm), &me->intent, &v, WAIT_MS) == 0)
            recovery_settle(conn(), v, &me->intent);
    }
    settle_posted(&me->intent); /* what the last deaths left (the master takes the rest) */
    log_info("msg=\"settler stopping\" slot=%d", slot);
    db_close(S.db);
    return TK_EXIT_OK;
}
