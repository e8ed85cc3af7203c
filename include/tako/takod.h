/*
 * takod.h — what the master sets up before forking and every child inherits: the
 * configuration, the shared segment, the acceptors' eventfds, and names. Processes talk
 * only through shm and PostgreSQL; this struct is read-only after fork.
 */
#ifndef TAKO_TAKOD_H
#define TAKO_TAKOD_H

#include "tako/config.h"
#include "tako/shm.h"

#include <signal.h>

/* Exit codes (nginx's contract): 0 asked to stop, 2 fatal (config, environment): the
 * master does not respawn a child that exits 2. */
#define TK_EXIT_OK    0
#define TK_EXIT_FATAL 2

struct tk_ctx {
    struct tk_config cfg;
    struct tk_shm *shm;
    int listen_fd;
    int *done_efd;             /* one eventfd per proc-table entry */
    char conninfo[1024];       /* the database actually used */
    char node[512];            /* this node: "host:data_dir", stored with every job */
    char instance[512];        /* docker label value: node + data_dir */
    char spool_dir[4096];      /* <spool>/jobs: each job's code and input */
    char slots_dir[4096];      /* <spool>/slots: the warm containers' directories */
    char quarantine_dir[4096]; /* <spool>/quarantine: what could not be removed */
    char rootfs_dir[4096];     /* executor.rootfs_dir or <data_dir>/rootfs (OCI backend) */
    pid_t master_pid;
    int proc_idx; /* in a child: its entry in the shm proc table */
};

extern struct tk_ctx tk;

/* Child entry points; they return the process exit code. */
int acceptor_main(int slot);
int executor_main(int slot);
int deliverer_main(int slot); /* the callbacks process (workers/deliverer.c) */
int sweeper_main(int slot);   /* the master's engine work (workers/sweeper.c) */
int settler_main(int slot);   /* the master's database work (workers/settler.c) */
int sessions_main(int slot);  /* every session's container (workers/sessions.c) */
int cluster_main(int slot);   /* claims from the shared queue (workers/cluster.c) */

/* Set the process title shown in /proc/PID/cmdline (e.g. "takod: executor 1"). */
void proctitle_init(int argc, char **argv);
void proctitle_set(const char *title);

/* Spool layout for a job id. */
int spool_job_dir(char *buf, size_t len, const char *job_id);

#endif
