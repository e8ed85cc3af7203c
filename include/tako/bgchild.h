/*
 * bgchild.h — what the master's background children (callbacks, sweeper, settler) share:
 * their signals (TERM, INT, QUIT: stop; USR1: reopen the logs) and their per-round
 * bookkeeping (heartbeat, log reopening). Handlers set flags only; no SA_RESTART, so a
 * sleep or a blocking call returns at once with EINTR.
 */
#ifndef TAKO_BGCHILD_H
#define TAKO_BGCHILD_H

#include "tako/ring.h"
#include "tako/shm.h"

#include <signal.h>

extern volatile sig_atomic_t bgchild_stop;

/* Install the handlers; `poke`, if not NULL, is a ring whose sleeper a signal wakes. */
void bgchild_signals(struct ring *poke);

/* Once a round: the heartbeat, and the logs reopened if USR1 asked. */
void bgchild_round(struct tk_proc *me);

#endif
