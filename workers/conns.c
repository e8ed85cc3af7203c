/*
 * conns.c — the acceptor's client connections, owned from accept to close.
 *
 * libevent 2.1's evhttp gives no hook at accept and no per-connection deadline (its
 * timeout is an idle timeout, re-armed by every byte). So every connection evhttp accepts
 * is made on a bufferevent this module creates (evhttp_set_bevcb); right after the
 * listener's callback returns, the module adopts it: it finds the evhttp_connection (the
 * bufferevent's callback argument), counts it (in total and per client address, both
 * over all acceptors through shm), answers 503 and closes it when over a cap, and arms one timer:
 * the whole request, headers and body, must arrive within server.request_timeout of the
 * accept (or of the end of the previous reply on a kept-alive connection), else 408 and
 * close. The gaps (an idle keep-alive connection, a stalled upload or reader) are bounded
 * by evhttp's own timeout, server.keepalive_timeout. The close callback of every
 * connection is this module's; others (the event streams) hook in through conns_set_closecb.
 *
 * Every close lingers (as nginx's lingering_close): evhttp sends its FIN, then this module
 * reads and drops what the client still sends for up to LINGER_MS before it closes the
 * socket, so an answer given before the whole request was read (413 for a declared body
 * over the limit, 400, 408, 503) reaches the client instead of being lost to a reset. The
 * module holds a reference on each connection's bufferevent (made with
 * BEV_OPT_CLOSE_ON_FREE, so evhttp only shuts the socket down) until its linger ends.
 */
#include "conns.h"
#include "acceptor.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINGER_MS 2000

enum conn_state {
    C_NEW,       /* made by evhttp, not adopted yet */
    C_READING,   /* waiting for (the rest of) a request: the deadline runs */
    C_ANSWERING, /* a request is with a handler, or its reply is being written */
    C_CLOSING,   /* answered with Connection: close; evhttp kept it (CONNECT): close it */
};

struct conn {
    struct conn *next, *prev;
    struct bufferevent *bev;
    struct evhttp_connection *evcon;
    struct event *timer;
    enum conn_state state;
    char addr[INET6_ADDRSTRLEN];
    conns_close_fn user_cb;
    void *user_arg;
};

static struct conn *fresh;      /* C_NEW, not adopted yet (each holds a ref on its bev) */
static struct conn *open_conns; /* adopted and counted */
static size_t n_open;
static struct event *adopt_ev;

struct lingerer {
    struct lingerer *next, *prev;
    struct bufferevent *bev;
    struct event *ev;
    uint64_t deadline_ms;
};
static struct lingerer *lingering;
static size_t n_linger;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void linger_end(struct lingerer *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        lingering = l->next;
    if (l->next)
        l->next->prev = l->prev;
    n_linger--;
    if (l->ev)
        event_free(l->ev);
    bufferevent_decref(l->bev); /* the last reference: the socket closes */
    free(l);
    acceptor_maybe_exit();
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    struct lingerer *l = arg;
    if (what & EV_READ) {
        char scratch[16384];
        for (;;) {
            ssize_t n = read(fd, scratch, sizeof scratch);
            if (n > 0)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            linger_end(l); /* the client closed its side (or the socket failed) */
            return;
        }
    }
    uint64_t now = mono_ms();
    if (!(what & EV_READ) || now >= l->deadline_ms) {
        linger_end(l);
        return;
    }
    uint64_t left = l->deadline_ms - now;
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    event_add(l->ev, &tv);
}

static void linger_start(struct bufferevent *bev)
{
    /* evhttp frees its side next; the bufferevent must not keep reading into its buffer */
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    int fd = bufferevent_getfd(bev);
    struct lingerer *l = fd >= 0 ? calloc(1, sizeof *l) : NULL;
    if (l)
        l->ev = event_new(A.base, fd, EV_READ, on_linger, l);
    if (!l || !l->ev) {
        free(l);
        bufferevent_decref(bev);
        return;
    }
    l->bev = bev;
    l->deadline_ms = mono_ms() + LINGER_MS;
    l->next = lingering;
    if (lingering)
        lingering->prev = l;
    lingering = l;
    n_linger++;
    struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
    event_add(l->ev, &tv);
}

static void unlink_from(struct conn **head, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static void push(struct conn **head, struct conn *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static struct conn *find(struct evhttp_connection *evcon)
{
    for (struct conn *c = open_conns; c; c = c->next)
        if (c->evcon == evcon)
            return c;
    return NULL;
}

static uint32_t total_open(void)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < tk.shm->n_procs; i++) {
        struct tk_proc *p = shm_proc(tk.shm, i);
        if (p->role == TK_ROLE_ACCEPTOR && atomic_load(&p->pid) > 0)
            n += atomic_load(&p->conns);
    }
    return n;
}

static size_t open_here(const char *addr)
{
    size_t n = 0;
    for (struct conn *c = open_conns; c; c = c->next)
        n += !strcmp(c->addr, addr);
    return n;
}

/* This acceptor's count of `addr` in shm moves by `delta` (+1 open, -1 close). The entry
 * of an address is found by scanning (256 entries: cheaper than any probing scheme that
 * would need deletions); a new address takes the first entry at 0. */
static void share_count(const char *addr, int delta)
{
    uint64_t h = str_hash(addr);
    int free_k = -1;
    for (int k = 0; k < TK_PROC_CLIENTS; k++) {
        uint32_t n = atomic_load(&A.me->client_open[k]);
        if (n && atomic_load(&A.me->client_hash[k]) == h) {
            atomic_store(&A.me->client_open[k], (uint32_t)((int)n + delta));
            return;
        }
        if (!n && free_k < 0)
            free_k = k;
    }
    if (delta > 0 && free_k >= 0) {
        atomic_store(&A.me->client_hash[free_k], h);
        atomic_store(&A.me->client_open[free_k], 1);
    }
}

/* Connections from `addr` open on every acceptor: this one's exactly, the others' from
 * their shm tables (a hash collision can only over-count, by the colliding client's). */
static size_t open_from(const char *addr)
{
    size_t n = open_here(addr);
    uint64_t h = str_hash(addr);
    for (uint32_t i = 0; i < tk.shm->n_procs; i++) {
        struct tk_proc *p = shm_proc(tk.shm, i);
        if (p == A.me || p->role != TK_ROLE_ACCEPTOR || atomic_load(&p->pid) <= 0)
            continue;
        for (int k = 0; k < TK_PROC_CLIENTS; k++) {
            uint32_t c = atomic_load(&p->client_open[k]);
            if (c && atomic_load(&p->client_hash[k]) == h)
                n += c;
        }
    }
    return n;
}

static void peer_name(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    snprintf(out, len, "local");
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)len);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)len);
}

/* A whole answer written straight to the socket, for a connection evhttp holds no request
 * of ours on (nothing else is being written on it). Best effort: the socket is closing. */
static void send_raw(int fd, int code, const char *reason, const char *detail)
{
    char msg[512];
    char body[256];
    int blen = snprintf(body, sizeof body, "{\"detail\":\"%s\"}", detail);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     "Connection: close\r\n%s\r\n%s",
                     code, reason, blen, code == 503 ? "Retry-After: 1\r\n" : "", body);
    if (n > 0 && send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN &&
        errno != EPIPE && errno != ECONNRESET)
        log_debug("msg=\"send failed\" fd=%d err=\"%s\"", fd, strerror(errno));
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    struct conn *c = arg;
    evhttp_connection_set_closecb(evcon, NULL, NULL); /* reset_ and free may both call it */
    unlink_from(&open_conns, c);
    n_open--;
    atomic_store(&A.me->conns, (uint32_t)n_open);
    share_count(c->addr, -1);
    if (c->timer)
        event_free(c->timer);
    if (c->user_cb)
        c->user_cb(evcon, c->user_arg);
    linger_start(c->bev); /* evhttp shuts it down and frees its side right after this */
    free(c);
    acceptor_maybe_exit();
}

/* A flood of refusals must not become a flood of log lines: one a second, with a count. */
static bool log_refusal_now(unsigned *skipped)
{
    static uint64_t last_ms;
    static unsigned n;
    uint64_t now = mono_ms();
    if (last_ms && now - last_ms < 1000) {
        n++;
        return false;
    }
    last_ms = now;
    *skipped = n;
    n = 0;
    return true;
}

/* Close a connection evhttp holds no handed-out request on (state C_READING). */
static void refuse(struct conn *c, int code, const char *reason, const char *detail)
{
    send_raw(bufferevent_getfd(c->bev), code, reason, detail);
    evhttp_connection_free(c->evcon); /* calls on_close, which frees c */
}

static void on_deadline(evutil_socket_t fd, short ev, void *arg)
{
    struct conn *c = arg;
    if (c->state == C_CLOSING) {
        evhttp_connection_free(c->evcon);
        return;
    }
    if (c->state != C_READING)
        return;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0) {
        /* an answer of evhttp's own (an error page) is still being written: just close */
        evhttp_connection_free(c->evcon);
        return;
    }
    unsigned skipped;
    if (log_refusal_now(&skipped))
        log_info("msg=\"request not received in time; closing\" client=%s timeout_s=%lld "
                 "unlogged_refusals=%u",
                 c->addr, (long long)tk.cfg.server_request_timeout, skipped);
    refuse(c, 408, "Request Timeout", "The whole request was not received in time");
}

static void arm(struct conn *c)
{
    c->state = C_READING;
    struct timeval tv = {(time_t)tk.cfg.server_request_timeout, 0};
    evtimer_add(c->timer, &tv);
}

static void adopt_fresh(void)
{
    while (fresh) {
        struct conn *c = fresh;
        unlink_from(&fresh, c);
        bufferevent_data_cb rcb = NULL;
        void *arg = NULL;
        bufferevent_getcb(c->bev, &rcb, NULL, NULL, &arg);
        int fd = bufferevent_getfd(c->bev);
        if (!rcb || fd < 0) { /* evhttp failed to set it up and freed it already */
            bufferevent_decref(c->bev);
            free(c);
            continue;
        }
        c->evcon = arg;
        peer_name(fd, c->addr, sizeof c->addr);
        c->timer = evtimer_new(A.base, on_deadline, c);
        push(&open_conns, c);
        n_open++;
        atomic_store(&A.me->conns, (uint32_t)n_open);
        share_count(c->addr, +1);
        evhttp_connection_set_closecb(c->evcon, on_close, c);
        c->state = C_READING;
        unsigned skipped = 0;
        if (!c->timer) {
            log_error("msg=\"evtimer_new failed\" client=%s", c->addr);
            refuse(c, 503, "Service Unavailable", "Out of memory");
        } else if (total_open() > (uint32_t)tk.cfg.server_max_connections) {
            if (log_refusal_now(&skipped))
                log_warn("msg=\"too many connections; refusing one\" client=%s max=%lld "
                         "unlogged_refusals=%u",
                         c->addr, (long long)tk.cfg.server_max_connections, skipped);
            refuse(c, 503, "Service Unavailable", "Too many open connections");
        } else if (open_from(c->addr) > (size_t)tk.cfg.server_max_connections_per_client) {
            if (log_refusal_now(&skipped))
                log_warn("msg=\"too many connections from one client; refusing one\" client=%s "
                         "max=%lld unlogged_refusals=%u",
                         c->addr, (long long)tk.cfg.server_max_connections_per_client, skipped);
            refuse(c, 503, "Service Unavailable", "Too many open connections from this address");
        } else {
            arm(c);
        }
    }
}

static void on_adopt(evutil_socket_t fd, short ev, void *arg)
{
    adopt_fresh();
}

/* evhttp asks for the bufferevent of a connection it is accepting (fd not set yet). */
static struct bufferevent *on_new_bev(struct event_base *base, void *arg)
{
    /* evhttp then only shuts the socket down; our reference (linger_start) closes it */
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    struct conn *c = bev ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        log_error("msg=\"cannot track a new connection: out of memory\"");
        return bev; /* evhttp serves it untracked rather than fail it */
    }
    c->bev = bev;
    c->state = C_NEW;
    bufferevent_incref(bev); /* held until the linger ends; adopt_fresh also relies on it */
    push(&fresh, c);
    event_active(adopt_ev, EV_TIMEOUT, 0);
    return bev;
}

int conns_init(void)
{
    adopt_ev = event_new(A.base, -1, 0, on_adopt, NULL);
    if (!adopt_ev) {
        log_error("msg=\"event_new failed\" what=conns");
        return -ENOMEM;
    }
    atomic_store(&A.me->conns, 0);
    evhttp_set_bevcb(A.http, on_new_bev, NULL);
    evhttp_set_timeout(A.http, (int)tk.cfg.server_keepalive_timeout);
    return 0;
}

void conns_free(void)
{
    while (fresh) {
        struct conn *c = fresh;
        unlink_from(&fresh, c);
        bufferevent_decref(c->bev);
        free(c);
    }
    while (lingering)
        linger_end(lingering);
    if (adopt_ev)
        event_free(adopt_ev);
    adopt_ev = NULL;
}

static void on_reply_done(struct evhttp_request *req, void *arg)
{
    struct conn *c = find(arg);
    if (!c || c->state != C_ANSWERING)
        return;
    const char *conn = evhttp_find_header(evhttp_request_get_output_headers(req), "Connection");
    if (conn && !evutil_ascii_strcasecmp(conn, "close")) {
        /* evhttp closes it after this, except where it keeps it regardless (CONNECT) */
        c->state = C_CLOSING;
        struct timeval now = {0, 0};
        evtimer_add(c->timer, &now);
        return;
    }
    arm(c); /* the next request on this connection gets the same whole-request bound */
}

void conns_request_started(struct evhttp_request *req)
{
    adopt_fresh(); /* its connection may have been read before the adoption ran */
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct conn *c = evcon ? find(evcon) : NULL;
    if (!c)
        return;
    c->state = C_ANSWERING;
    evtimer_del(c->timer);
    evhttp_request_set_on_complete_cb(req, on_reply_done, evcon);
}

void conns_set_closecb(struct evhttp_connection *evcon, conns_close_fn fn, void *arg)
{
    struct conn *c = evcon ? find(evcon) : NULL;
    if (c) {
        c->user_cb = fn;
        c->user_arg = arg;
    } else { /* an untracked connection (allocation failed at accept) */
        evhttp_connection_set_closecb(evcon, fn, arg);
    }
}

size_t conns_open(void)
{
    return n_open + n_linger;
}

size_t conns_reading(void)
{
    size_t n = 0;
    for (struct conn *c = open_conns; c; c = c->next)
        n += c->state == C_READING;
    return n;
}
