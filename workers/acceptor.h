/*
 * acceptor.h — the acceptor process's state (acceptor.c): its loop, its database
 * connection, the requests parked on job slots, draining and stopping.
 *
 * The layers above it: http.h (replies and request parsing), auth.h (who is asking),
 * routes.h (the route table and the handlers in api_*.c). Every handler replies exactly
 * once, now or later (a parked request: a sync job, a long-poll).
 */
#ifndef TAKO_ACCEPTOR_H
#define TAKO_ACCEPTOR_H

#include "auth.h"
#include "http.h"
#include "routes.h"
#include "tako/db.h"
#include "tako/shm.h"

#include <event2/http.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct event;

/* A request parked on a job slot: a sync job's client, answered by the completion. */
struct pending {
    struct evhttp_request *req; /* NULL when nobody waits on this slot */
    uint64_t token;
    char corr[72];
};

struct acceptor_state {
    int slot;
    uint32_t gen;
    struct tk_proc *me;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct pgq *pg;
    struct event *done_ev;
    struct pending *pending; /* indexed by job slot */
    uint64_t next_token;
    size_t inflight;           /* parked requests (sync jobs, long-polls) */
    bool draining;             /* QUIT: no new connections; finish what we hold */
    bool stopping;             /* TERM: settle what we hold now, then exit */
    struct event *stop_timer;  /* bounds a fast stop */
    struct event *drain_timer; /* QUIT: take what is queued, then close the listener */
    int drain_polls;
    struct event *db_timer; /* start-up: accept once the database is up (bounded) */
    int db_waited_ms;
    bool fatal;
};

extern struct acceptor_state A;

void acceptor_maybe_exit(void);
/* Is this process going away (drain or stop)? Its replies then close the connection. */
bool acceptor_closing(void);

/*
 * ---- held requests ----
 * A request answered later is held: the process does not exit while it holds any
 * (acceptor_maybe_exit). A sync job's client is parked on its job slot and answered by the
 * completion on the done ring (or by fail_pending); `token` tells this admission of the
 * slot from an earlier one. Other later answers (long-polls, SSE streams, builds, the
 * audit check) are held with acceptor_hold/acceptor_release. Only these functions touch
 * A.pending and A.inflight.
 */
void acceptor_park(uint32_t idx, struct evhttp_request *req, uint64_t token, const char *corr);
/* Let go of the client parked on `idx` for `token` without answering it; false when none. */
bool acceptor_unpark(uint32_t idx, uint64_t token);
/* Is a client parked on `idx`? */
bool acceptor_parked(uint32_t idx);
void acceptor_hold(void);
void acceptor_release(void);
/* Answer the client parked on `idx` (if any) with an error and free the slot. */
void fail_pending(uint32_t idx, int code, const char *detail);

#endif
