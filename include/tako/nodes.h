/*
 * nodes.h — this node's row in `nodes` (migration 13): who it is, that it is alive, and
 * how many nodes are. The one writer of the table: the master registers the node at start
 * (refusing a node_id a live node holds) and marks it stopped at the end; the settler
 * heartbeats it. docs/OPERATIONS.md, "Several nodes".
 *
 * A node is live while stopped_at is NULL and last_seen is within cluster.lease. A row
 * left by a node that died (kill -9, a power cut) stays "live" for up to one lease; the
 * same node starting again on the same host takes it over at once when the pid it
 * recorded is no longer running.
 */
#ifndef TAKO_NODES_H
#define TAKO_NODES_H

#include "tako/db.h"

#include <stddef.h>

/* Register this node (tk.node, pid, executors, cluster, address). 0; -EADDRINUSE with
 * why when another live node holds the id; -EIO (why) when the database fails. */
int nodes_register(struct db *db, char *why, size_t wlen);
/* last_seen = now (the row put back if it went missing). 0 or -EIO (logged by db). */
int nodes_heartbeat(struct db *db);
/* stopped_at = now, if the row is still this process's. */
void nodes_stopped(struct db *db);
/* Live nodes (this one counted even if its heartbeat lags), or -EIO. */
int nodes_live_count(struct db *db);

#endif
