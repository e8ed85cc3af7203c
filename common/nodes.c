/*
 * nodes.c — see nodes.h: the `nodes` table's statements.
 */
#include "tako/nodes.h"
#include "tako/log.h"
#include "tako/takod.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the row says of this node: $1 id, $2 host, $3 pid, $4 address, $5 executors,
 * $6 cluster */
static void row_params(const char *p[6], char bufs[3][32], char *host, size_t hlen)
{
    gethostname(host, hlen - 1);
    host[hlen - 1] = '\0';
    snprintf(bufs[0], sizeof bufs[0], "%d", (int)tk.master_pid);
    snprintf(bufs[1], sizeof bufs[1], "%lld", (long long)tk.cfg.server_executors);
    snprintf(bufs[2], sizeof bufs[2], "%s", tk.cfg.cluster_enabled ? "true" : "false");
    static char address[600];
    if (tk.cfg.cluster_address[0])
        snprintf(address, sizeof address, "%s", tk.cfg.cluster_address);
    else
        snprintf(address, sizeof address, "http://%s", tk.cfg.server_listen);
    p[0] = tk.node;
    p[1] = host;
    p[2] = bufs[0];
    p[3] = address;
    p[4] = bufs[1];
    p[5] = bufs[2];
}

static const char upsert_sql[] =
    "INSERT INTO nodes (node_id, host, pid, address, executors, cluster, started_at,"
    " last_seen) VALUES ($1, $2, $3::int, $4, $5::int, $6::boolean, now(), now())"
    " ON CONFLICT (node_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,"
    " address = EXCLUDED.address, executors = EXCLUDED.executors,"
    " cluster = EXCLUDED.cluster, started_at = now(), last_seen = now(), stopped_at = NULL";

int nodes_register(struct db *db, char *why, size_t wlen)
{
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)tk.cfg.cluster_lease);
    const char *q[2] = {tk.node, lease};
    PGresult *r = db_exec(db,
                          "SELECT host, pid, extract(epoch FROM now() - last_seen)::int"
                          " FROM nodes WHERE node_id = $1 AND stopped_at IS NULL"
                          " AND last_seen > now() - make_interval(secs => $2::int)",
                          2, q);
    if (!r) {
        snprintf(why, wlen, "reading nodes: %s", db_last_error(db));
        return -EIO;
    }
    char host[256];
    char bufs[3][32];
    const char *p[6];
    row_params(p, bufs, host, sizeof host);
    if (PQntuples(r) == 1) {
        const char *other_host = PQgetvalue(r, 0, 0);
        pid_t pid = (pid_t)atoi(PQgetvalue(r, 0, 1));
        /* the same host and a pid that no longer runs: this node's own earlier life */
        bool ours = !strcmp(other_host, host) &&
                    (pid == tk.master_pid || (kill(pid, 0) < 0 && errno == ESRCH));
        if (!ours) {
            snprintf(why, wlen,
                     "node_id \"%s\" is in use by a live node (host %s, pid %d, last seen %s s "
                     "ago): give each node its own server.node_id",
                     tk.node, other_host, (int)pid, PQgetvalue(r, 0, 2));
            PQclear(r);
            return -EADDRINUSE;
        }
    }
    PQclear(r);
    r = db_exec(db, upsert_sql, 6, p);
    if (!r) {
        snprintf(why, wlen, "registering the node: %s", db_last_error(db));
        return -EIO;
    }
    PQclear(r);
    return 0;
}

int nodes_heartbeat(struct db *db)
{
    const char *p[2] = {tk.node, NULL};
    char pid[24];
    snprintf(pid, sizeof pid, "%d", (int)tk.master_pid);
    p[1] = pid;
    PGresult *r = db_exec(db,
                          "UPDATE nodes SET last_seen = now() WHERE node_id = $1"
                          " AND pid = $2::int AND stopped_at IS NULL",
                          2, p);
    if (!r) {
        log_warn("msg=\"node heartbeat failed\" node=%s err=\"%s\"", tk.node, db_last_error(db));
        return -EIO;
    }
    bool gone = atoi(PQcmdTuples(r)) == 0;
    PQclear(r);
    if (gone) { /* deleted by hand, or the database was replaced: put it back */
        char host[256];
        char bufs[3][32];
        const char *q[6];
        row_params(q, bufs, host, sizeof host);
        r = db_exec(db, upsert_sql, 6, q);
        if (!r)
            return -EIO;
        PQclear(r);
    }
    return 0;
}

void nodes_stopped(struct db *db)
{
    char pid[24];
    snprintf(pid, sizeof pid, "%d", (int)tk.master_pid);
    const char *p[2] = {tk.node, pid};
    PGresult *r = db_exec(
        db, "UPDATE nodes SET stopped_at = now() WHERE node_id = $1 AND pid = $2::int", 2, p);
    if (!r)
        log_warn("msg=\"marking the node stopped failed\" node=%s err=\"%s\"", tk.node,
                 db_last_error(db));
    PQclear(r);
}

int nodes_live_count(struct db *db)
{
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)tk.cfg.cluster_lease);
    const char *p[2] = {tk.node, lease};
    PGresult *r = db_exec(db,
                          "SELECT count(*) FROM nodes WHERE node_id = $1 OR (stopped_at IS NULL"
                          " AND last_seen > now() - make_interval(secs => $2::int))",
                          2, p);
    if (!r || PQntuples(r) != 1) {
        PQclear(r);
        return -EIO;
    }
    int n = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}
