/*
 * acceptor.c — one HTTP acceptor process: a libevent evhttp on the listening socket the
 * master bound (shared by all acceptors; no SO_REUSEPORT, so no connection is dropped on
 * reload). This file is the process: its loop, completions from executors, draining and
 * stopping. Replies and request parsing are http.c, the route table routes.c, the
 * handlers api_*.c (the job routes: api_submit.c, api_records.c, api_wait.c).
 *
 * A sync job's request is parked on its job slot until the executor's completion arrives
 * on this process's done ring (an eventfd wakes the loop); a long-poll is parked until
 * PostgreSQL announces the job's end (LISTEN/NOTIFY). Every parked request gets exactly
 * one reply, even when its client has gone (libevent then just frees it).
 */
#include "acceptor.h"
#include "conns.h"
#include "tako/jobs.h"
#include "tako/log.h"
#include "tako/metrics.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <poll.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct acceptor_state A;

/* ---- held requests ---- */

void acceptor_park(uint32_t idx, struct evhttp_request *req, uint64_t token, const char *corr)
{
    struct pending *p = &A.pending[idx];
    p->req = req;
    p->token = token;
    snprintf(p->corr, sizeof p->corr, "%s", corr);
    A.inflight++;
}

/* The parked request of `idx`, taken off its slot; NULL when none (or not for `token`). */
static struct pending *unpark(uint32_t idx, const uint64_t *token)
{
    struct pending *p = &A.pending[idx];
    if (!p->req || (token && p->token != *token))
        return NULL;
    A.inflight--;
    return p;
}

bool acceptor_unpark(uint32_t idx, uint64_t token)
{
    struct pending *p = unpark(idx, &token);
    if (p)
        p->req = NULL;
    return p != NULL;
}

bool acceptor_parked(uint32_t idx)
{
    return A.pending[idx].req != NULL;
}

void acceptor_hold(void)
{
    A.inflight++;
}

void acceptor_release(void)
{
    A.inflight--;
}

/* Answer a parked client with an error (the one place that does). */
static void answer_error(uint32_t idx, int code, const char *detail)
{
    struct pending *p = unpark(idx, NULL);
    if (p) {
        reply_error(p->req, code, p->corr, detail);
        p->req = NULL;
    }
}

/* ---- completions ---- */

void fail_pending(uint32_t idx, int code, const char *detail)
{
    answer_error(idx, code, detail);
    jobs_release(idx, &A.me->intent);
    acceptor_maybe_exit();
}

static void on_done(evutil_socket_t fd, short ev, void *arg)
{
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_warn("msg=\"eventfd read failed\" err=\"%s\"", strerror(errno));
    uint64_t v;
    while (ring_pop(shm_done(tk.shm, (uint32_t)tk.proc_idx), &A.me->intent, &v) == 0) {
        uint32_t idx = shm_val_idx(v);
        struct tk_job *job = shm_job(tk.shm, idx);
        struct pending *p = job->acceptor_gen == A.gen ? unpark(idx, &job->req_token) : NULL;
        if (p) { /* the answer, built here from the result its executor left (jobs.h) */
            json_t *answer = jobs_answer(idx);
            if (answer)
                reply_json(p->req, 200, p->corr, answer);
            else
                reply_error(p->req, 500, p->corr, "Execution error: the result was lost");
            p->req = NULL;
        }
        /* a completion for an earlier generation of this slot: the client left with it;
         * the record is in PostgreSQL. Either way we are done with the slot. */
        jobs_done_with(idx, &A.me->intent);
    }
    acceptor_maybe_exit();
}

/* ---- stopping ---- */

bool acceptor_closing(void)
{
    return A.draining || A.stopping;
}

/* Leave the loop once nothing is held; 100 ms more lets the last replies flush. */
void acceptor_maybe_exit(void)
{
    /* a drain also waits for the connections it accepted (each bounded by its deadline) */
    if (A.inflight == 0 && (A.stopping || (A.draining && !A.bound && conns_open() == 0))) {
        struct timeval tv = {0, 100 * 1000};
        event_base_loopexit(A.base, &tv);
    }
}

static void stop_accepting(void)
{
    if (A.bound) {
        evhttp_del_accept_socket(A.http, A.bound); /* closes only our copy of the socket */
        A.bound = NULL;
    }
}

/*
 * A drain closes this process's copy of the listening socket only once the connections
 * already queued on it are taken (the listener accepts them on this loop), so that none
 * is reset at exit: a connect either gets an answer or, once every copy is closed, a
 * refusal. Bounded: under a steady stream of connects it closes after 2 s anyway.
 */
static void on_drain_accept(evutil_socket_t fd, short ev, void *arg)
{
    struct pollfd pfd = {.fd = tk.listen_fd, .events = POLLIN};
    bool queued = A.bound && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
    if (queued && ++A.drain_polls < 400) {
        struct timeval tv = {0, 5 * 1000};
        evtimer_add(A.drain_timer, &tv);
        return;
    }
    stop_accepting();
    acceptor_maybe_exit();
}

static void on_stop_deadline(evutil_socket_t fd, short ev, void *arg)
{
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++)
        answer_error(i, 503, "takod is shutting down; the job's result is not known yet");
    api_jobs_drop_waiters();
    acceptor_maybe_exit();
}

static void on_signal(evutil_socket_t sig, short ev, void *arg)
{
    if (sig == SIGUSR1) {
        log_reopen();
        return;
    }
    if (sig == SIGQUIT) { /* graceful: no new connections, finish what we hold */
        if (!A.draining && !A.stopping) {
            A.draining = true;
            A.drain_timer = evtimer_new(A.base, on_drain_accept, NULL);
            if (A.drain_timer)
                on_drain_accept(-1, 0, NULL);
            else
                stop_accepting();
            log_info("msg=\"acceptor draining\" inflight=%zu", A.inflight);
        }
        acceptor_maybe_exit();
        return;
    }
    /* TERM/INT: fast. Jobs not started yet end now; running ones are being killed by
     * their executors, whose completions we wait for (bounded). */
    if (A.stopping)
        return;
    A.stopping = true;
    stop_accepting();
    log_info("msg=\"acceptor stopping fast\" inflight=%zu", A.inflight);
    api_jobs_stop();
    struct timeval tv = {2, 500 * 1000};
    A.stop_timer = evtimer_new(A.base, on_stop_deadline, NULL);
    evtimer_add(A.stop_timer, &tv);
    on_done(tk.done_efd[tk.proc_idx], EV_READ, NULL);
}

/*
 * An acceptor takes connections only once it can serve them: its PostgreSQL connection is
 * up, or the wait is over (then /health says database_available=false). Until then
 * connects wait in the backlog for an acceptor that is ready.
 */
#define DB_WAIT_MS 10000

static void start_accepting(void)
{
    A.bound = evhttp_accept_socket_with_handle(A.http, tk.listen_fd);
    if (!A.bound) {
        log_error("msg=\"evhttp_accept_socket_with_handle failed\" fd=%d", tk.listen_fd);
        event_base_loopbreak(A.base);
        A.fatal = true;
        return;
    }
    atomic_store(&A.me->ready, 1);
    log_info("msg=\"acceptor ready\" slot=%d gen=%u database=%s", A.slot, A.gen,
             pgq_connected(A.pg) ? "up" : "down");
}

static void on_db_wait(evutil_socket_t fd, short ev, void *arg)
{
    if (A.draining || A.stopping)
        return;
    if (pgq_connected(A.pg) || (A.db_waited_ms += 20) >= DB_WAIT_MS) {
        if (!pgq_connected(A.pg))
            log_warn("msg=\"database not up; accepting anyway\" waited_ms=%d", DB_WAIT_MS);
        start_accepting();
        return;
    }
    struct timeval tv = {0, 20 * 1000};
    evtimer_add(A.db_timer, &tv);
}

int acceptor_main(int slot)
{
    A.slot = slot;
    A.gen = atomic_load(&shm_proc(tk.shm, (uint32_t)tk.proc_idx)->gen);
    A.me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    A.pending = calloc(tk.shm->n_jobs, sizeof *A.pending);
    A.base = event_base_new();
    A.http = evhttp_new(A.base);
    if (!A.pending || !A.base || !A.http) {
        log_error("msg=\"acceptor init failed\" slot=%d", slot);
        return 1;
    }
    /* the largest body of any route: a session file's upload (routes.c holds every other
     * route to limits.max_payload_bytes) */
    long long max_body = tk.cfg.limits_max_payload_bytes;
    if (tk.cfg.sessions_max_total > 0 && tk.cfg.sessions_max_file_bytes > max_body)
        max_body = tk.cfg.sessions_max_file_bytes;
    evhttp_set_max_body_size(A.http, (ev_ssize_t)max_body);
    evhttp_set_max_headers_size(A.http, 16384);
    evhttp_set_timeout(A.http, (int)tk.cfg.server_request_timeout);
    /* No EVHTTP_SERVER_LINGERING_CLOSE: it reads a whole declared body over the limit before
     * answering (and never answers if it does not come); the 413 goes at once and conns.c
     * lingers on the close so it is not lost to a reset. */
    evhttp_set_allowed_methods(A.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                           EVHTTP_REQ_PATCH | EVHTTP_REQ_CONNECT);
    evhttp_set_gencb(A.http, routes_dispatch, NULL);
    if (conns_init() < 0)
        return 1;
    A.pg = pgq_new(A.base, tk.conninfo);
    metrics_set_routes(routes_name, routes_method, routes_count());
    http_init(acceptor_closing, routes_index, shm_metrics(tk.shm));
    auth_init();
    api_jobs_init();
    A.done_ev = event_new(A.base, tk.done_efd[tk.proc_idx], EV_READ | EV_PERSIST, on_done, NULL);
    event_add(A.done_ev, NULL);
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
    struct event *sev[4];
    for (int i = 0; i < 4; i++) {
        sev[i] = evsignal_new(A.base, sigs[i], on_signal, NULL);
        event_add(sev[i], NULL);
    }
    /* completions left in this entry's ring by its previous owner */
    on_done(tk.done_efd[tk.proc_idx], EV_READ, NULL);
    A.db_timer = evtimer_new(A.base, on_db_wait, NULL);
    if (!A.db_timer)
        start_accepting();
    else
        on_db_wait(-1, 0, NULL);
    event_base_dispatch(A.base);
    log_info("msg=\"acceptor stopping\" slot=%d inflight=%zu", slot, A.inflight);
    for (int i = 0; i < 4; i++)
        event_free(sev[i]);
    if (A.stop_timer)
        event_free(A.stop_timer);
    if (A.drain_timer)
        event_free(A.drain_timer);
    if (A.db_timer)
        event_free(A.db_timer);
    event_free(A.done_ev);
    pgq_free(A.pg);
    evhttp_free(A.http);
    conns_free();
    event_base_free(A.base);
    free(A.pending);
    return A.fatal ? TK_EXIT_FATAL : TK_EXIT_OK;
}
