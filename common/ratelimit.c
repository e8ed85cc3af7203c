/*
 * ratelimit.c — see ratelimit.h.
 */
#include "tako/ratelimit.h"
#include "tako/util.h"

#include <string.h>

/* The bucket for h: find it, or claim a free slot; when the table is full, share the slot
 * h lands on (a limit that errs on the strict side, never a crash). */
static uint32_t slot_for(struct tk_ratelimit *rl, uint64_t h)
{
    uint32_t start = (uint32_t)(h % RL_SLOTS);
    for (uint32_t i = 0; i < RL_SLOTS; i++) {
        uint32_t s = (start + i) % RL_SLOTS;
        uint64_t cur = atomic_load(&rl->id[s]);
        if (cur == h)
            return s;
        if (cur == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(&rl->id[s], &zero, h) || zero == h)
                return s;
        }
    }
    return start;
}

void ratelimit_take(struct tk_ratelimit *rl, const char *who, long per_minute, long burst,
                    struct rl_verdict *v)
{
    uint32_t s = slot_for(rl, str_hash(who));
    uint64_t cap = (uint64_t)burst * 1000;
    uint32_t now = (uint32_t)now_mono_ms();
    uint64_t old = atomic_load(&rl->state[s]), next;
    uint64_t tokens;
    do {
        if (old == 0) { /* a new bucket starts full */
            tokens = cap;
        } else {
            uint32_t elapsed = now - (uint32_t)(old & 0xffffffffu);
            tokens = (old >> 32) + (uint64_t)elapsed * (uint64_t)per_minute / 60;
            if (tokens > cap)
                tokens = cap;
        }
        v->allowed = tokens >= 1000;
        if (v->allowed)
            tokens -= 1000;
        next = (tokens << 32) | now;
        if (next == 0)
            next = 1;
    } while (!atomic_compare_exchange_weak(&rl->state[s], &old, next));
    v->remaining = (long)(tokens / 1000);
    /* milli-tokens refill at per_minute/60 per ms */
    uint64_t per_ms = (uint64_t)per_minute / 60 ? (uint64_t)per_minute / 60 : 1;
    v->reset_s = (long)((cap - tokens) / per_ms / 1000 + 1);
    v->retry_after_s = v->allowed ? 0 : (long)((1000 - tokens) / per_ms / 1000 + 1);
}
