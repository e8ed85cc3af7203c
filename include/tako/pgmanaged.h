/*
 * pgmanaged.h — takod's own PostgreSQL, used when database.url is empty.
 *
 * On first start, initdb into <data_dir>/pg (superuser "takod", trust auth: the server
 * listens on a unix socket only, in <data_dir>/pgsock, mode 0700, no TCP at all). When
 * takod runs as root, PostgreSQL runs as database.managed_user (it refuses root). The
 * postmaster is a child of the master in its own process group, with a parent-death
 * signal so it never outlives a killed master; the master restarts it if it dies
 * (pgm_respawn, with backoff) and stops it (fast shutdown) after every other child has exited.
 */
#ifndef TAKO_PGMANAGED_H
#define TAKO_PGMANAGED_H

#include "tako/config.h"

#include <stddef.h>
#include <sys/types.h>

/*
 * Make sure the cluster exists, start the postmaster and wait until it accepts
 * connections and the "takod" database exists. On success *pid is the postmaster and
 * conninfo is how to reach it. 0 or -errno with a one-line reason in err.
 */
int pgm_start(const struct tk_config *cfg, pid_t *pid, char *conninfo, size_t clen, char *err,
              size_t errlen);

/*
 * The master's restart after the postmaster died: fork a new one on the existing cluster
 * and return at once, without waiting for it to accept connections (every process
 * reconnects by itself), so the master's loop never waits on the database. *pid is the
 * new postmaster. 0 or -errno with why.
 */
int pgm_respawn(const struct tk_config *cfg, pid_t *pid, char *err, size_t errlen);

/* Fast shutdown (SIGINT), escalating to immediate (SIGQUIT) after timeout_ms. Reaps it. */
void pgm_stop(pid_t pid, int timeout_ms);

#endif
