/*
 * ratelimit.h — token buckets in shared memory, so a limit holds across every acceptor.
 *
 * A fixed open-addressing table of buckets keyed by a 64-bit hash of the client identity
 * (the API key's id, or the client IP when no valid key was presented — so key guessing
 * is metered too). A bucket is one 64-bit word, (milli-tokens << 32 | time in ms), updated
 * with compare-and-swap: no locks, nothing to repair when a process dies.
 */
#ifndef TAKO_RATELIMIT_H
#define TAKO_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define RL_SLOTS 4096

struct tk_ratelimit {
    _Atomic uint64_t id[RL_SLOTS];    /* identity hash; 0 = free */
    _Atomic uint64_t state[RL_SLOTS]; /* milli-tokens << 32 | last refill (ms, wraps) */
};

struct rl_verdict {
    bool allowed;
    long remaining;     /* whole tokens left */
    long reset_s;       /* seconds until the bucket is full again */
    long retry_after_s; /* when refused: seconds until one token is there */
};

/* Take one token for `who` at `per_minute` with `burst` capacity. */
void ratelimit_take(struct tk_ratelimit *rl, const char *who, long per_minute, long burst,
                    struct rl_verdict *v);

#endif
