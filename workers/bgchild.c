/*
 * bgchild.c — see bgchild.h.
 */
#include "tako/bgchild.h"
#include "tako/log.h"
#include "tako/util.h"

#include <string.h>

volatile sig_atomic_t bgchild_stop;
static volatile sig_atomic_t reopen_logs;
static struct ring *poked;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        reopen_logs = 1;
    else
        bgchild_stop = 1;
    if (poked)
        ring_poke(poked); /* out of the sleep now */
}

void bgchild_signals(struct ring *poke)
{
    poked = poke;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

void bgchild_round(struct tk_proc *me)
{
    atomic_store(&me->heartbeat_ms, now_mono_ms());
    if (reopen_logs) {
        reopen_logs = 0;
        log_reopen();
    }
}
