/*
 * pgq.c — a FIFO of queries on one non-blocking libpq connection, driven by libevent.
 *
 * States: DOWN (waiting for the reconnect timer) → CONNECTING (PQconnectPoll) → IDLE ⇄
 * BUSY (one query in flight). Only one query is in flight; the rest wait in the FIFO.
 * When the connection fails, the in-flight and queued queries are answered with an error
 * at once (the caller decides: retry, 503, spool) and a reconnect is scheduled with
 * exponential backoff (100 ms .. 5 s). While DOWN, pgq_exec refuses fast (-ENOTCONN).
 * A statement queued by pgq_exec_prepared goes first as a Parse of its own (PREPARE tkN,
 * the item staying at the head, `preparing`), then by name; the texts prepared on this
 * connection are kept in `prep` until it is lost.
 * Modelled on PgBouncer's lib/usual/pgsocket.c.
 */
#include "tako/db.h"
#include "tako/log.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

enum pgq_state { PGQ_DOWN, PGQ_CONNECTING, PGQ_IDLE, PGQ_BUSY };

struct pgq_item {
    struct pgq_item *next;
    char *sql;
    int n;
    char **params;
    pgq_cb cb;
    void *arg;
    bool prepared; /* pgq_exec_prepared's: run by name once prepared */
};

struct pgq {
    struct event_base *base;
    char *conninfo;
    PGconn *conn;
    enum pgq_state state;
    struct event *io;    /* on PQsocket, re-created when the fd changes */
    struct event *timer; /* reconnect backoff */
    int io_fd;
    int backoff_ms;
    struct pgq_item *head, *tail; /* head is in flight when BUSY */
    PGresult *last;               /* the in-flight query's result so far */
    bool logged_down;
    char *listen_channel; /* LISTENed on every (re)connect */
    pgq_notify_cb on_notify;
    pgq_up_cb on_up;
    void *listen_arg;
    char *prep[PGQ_PREPARED_MAX]; /* prep[k] is prepared on this connection as "tk<k>" */
    int nprep;
    bool preparing; /* the head's Parse is in flight, not the head itself */
};

static void prep_forget(struct pgq *q)
{
    for (int k = 0; k < q->nprep; k++)
        free(q->prep[k]);
    q->nprep = 0;
    q->preparing = false;
}

static int prep_find(const struct pgq *q, const char *sql)
{
    for (int k = 0; k < q->nprep; k++)
        if (!strcmp(q->prep[k], sql))
            return k;
    return -1;
}

static void drain_notifies(struct pgq *q)
{
    PGnotify *n;
    while ((n = PQnotifies(q->conn)) != NULL) {
        if (q->on_notify)
            q->on_notify(n->relname, n->extra, q->listen_arg);
        PQfreemem(n);
    }
}

static void on_idle_read(evutil_socket_t fd, short ev, void *arg);

static void pgq_connect(struct pgq *q);
static void pgq_exec_front(struct pgq *q, const char *sql);
static void pgq_kick(struct pgq *q);

static void item_free(struct pgq_item *it)
{
    for (int i = 0; i < it->n; i++)
        free(it->params[i]);
    free(it->params);
    free(it->sql);
    free(it);
}

static void notice_ignore(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static void wait_io(struct pgq *q, short what, event_callback_fn fn)
{
    int fd = PQsocket(q->conn);
    if (q->io)
        event_free(q->io);
    q->io = event_new(q->base, fd, what, fn, q);
    q->io_fd = fd;
    event_add(q->io, NULL);
}

static void fail_all(struct pgq *q, const char *why)
{
    struct pgq_item *it = q->head;
    q->head = q->tail = NULL;
    while (it) {
        struct pgq_item *next = it->next;
        it->cb(NULL, why, it->arg);
        item_free(it);
        it = next;
    }
}

/* why may be PQerrorMessage(q->conn), which PQfinish frees: it is copied first. */
static void conn_lost(struct pgq *q, const char *why_in)
{
    char why[256];
    snprintf(why, sizeof why, "%s", why_in);
    if (!q->logged_down)
        log_error("msg=\"database connection lost\" err=\"%s\"", why);
    q->logged_down = true;
    if (q->io) {
        event_free(q->io);
        q->io = NULL;
    }
    PQclear(q->last);
    q->last = NULL;
    PQfinish(q->conn);
    q->conn = NULL;
    q->state = PGQ_DOWN;
    prep_forget(q);
    fail_all(q, why);
    struct timeval tv = {q->backoff_ms / 1000, (q->backoff_ms % 1000) * 1000};
    evtimer_add(q->timer, &tv);
    q->backoff_ms = q->backoff_ms * 2 > 5000 ? 5000 : q->backoff_ms * 2;
}

static void on_timer(evutil_socket_t fd, short ev, void *arg)
{
    pgq_connect(arg);
}

/*
 * A query (or a Parse) has ended: idle, and on to the next one, unless the connection is
 * gone. The notifications are drained once more: one that came in the same read as the
 * query's end, after its ReadyForQuery, is parsed by libpq only in PQgetResult — after
 * on_result drained that read's — and would otherwise wait in libpq until the next byte
 * arrives (a long-poll then missed its job's end; tests/integration/test_pgq.py).
 */
static void next_query(struct pgq *q)
{
    if (PQstatus(q->conn) != CONNECTION_OK) {
        conn_lost(q, PQerrorMessage(q->conn));
        return;
    }
    q->state = PGQ_IDLE;
    drain_notifies(q); /* its callbacks may queue queries (pgq_exec starts one) */
    pgq_kick(q);
}

static void on_result(evutil_socket_t fd, short ev, void *arg)
{
    struct pgq *q = arg;
    /* As libpq's non-blocking mode asks: read when readable, and flush after any wake
     * while output is left — a query bigger than the socket buffer whose wake was a
     * notification (read only) was otherwise never sent in full, and hung. */
    if (ev & EV_READ) {
        if (!PQconsumeInput(q->conn)) {
            conn_lost(q, PQerrorMessage(q->conn));
            return;
        }
        drain_notifies(q);
    }
    int f = PQflush(q->conn);
    if (f < 0) {
        conn_lost(q, PQerrorMessage(q->conn));
        return;
    }
    if (f == 1) { /* still sending */
        wait_io(q, EV_WRITE | EV_READ, on_result);
        return;
    }
    /* A query's result (CommandComplete) and the end of it (ReadyForQuery) can come in
     * different reads: the result is kept in q->last across them, never dropped — dropping
     * it answered a query that had succeeded (an INSERT whose row exists) with an error. */
    bool complete = false;
    while (!PQisBusy(q->conn)) {
        PGresult *res = PQgetResult(q->conn);
        if (!res) {
            complete = true;
            break;
        }
        PQclear(q->last);
        q->last = res;
    }
    if (!complete) {
        wait_io(q, EV_READ, on_result);
        return;
    }
    PGresult *last = q->last;
    q->last = NULL;
    struct pgq_item *it = q->head;
    if (q->preparing) { /* the head's Parse: then the head itself, by name or not */
        q->preparing = false;
        char *copy = NULL;
        if (last && PQresultStatus(last) == PGRES_COMMAND_OK && (copy = strdup(it->sql)))
            q->prep[q->nprep++] = copy;
        else /* run unnamed: its own error, if it has one, goes to its caller */
            it->prepared = false;
        PQclear(last);
        next_query(q);
        return;
    }
    q->head = it->next;
    if (!q->head)
        q->tail = NULL;
    ExecStatusType st = PQresultStatus(last);
    if (last && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK))
        it->cb(last, NULL, it->arg);
    else
        it->cb(NULL, last ? PQresultErrorMessage(last) : PQerrorMessage(q->conn), it->arg);
    /* "cached plan must not change result type": another node's migration changed a
     * table under a prepared statement, which then fails on this connection for ever;
     * they are all dropped (before what the callback queued) and prepared again */
    const char *state = last ? PQresultErrorField(last, PG_DIAG_SQLSTATE) : NULL;
    if (it->prepared && state && !strcmp(state, "0A000") && prep_find(q, it->sql) >= 0) {
        log_warn("msg=\"a prepared statement's plan went stale; preparing them again\" "
                 "err=\"%s\"",
                 PQresultErrorMessage(last));
        prep_forget(q);
        pgq_exec_front(q, "DEALLOCATE ALL");
    }
    PQclear(last);
    item_free(it);
    next_query(q);
}

/* Idle: notifications may still arrive; keep reading the socket for them. */
static void on_idle_read(evutil_socket_t fd, short ev, void *arg)
{
    struct pgq *q = arg;
    if (q->state != PGQ_IDLE)
        return;
    if (!PQconsumeInput(q->conn)) {
        conn_lost(q, PQerrorMessage(q->conn));
        return;
    }
    drain_notifies(q);
    if (q->state == PGQ_IDLE && !q->head)
        wait_io(q, EV_READ, on_idle_read);
}

static void pgq_kick(struct pgq *q)
{
    if (q->state == PGQ_IDLE && !q->head && q->listen_channel) {
        wait_io(q, EV_READ, on_idle_read);
        return;
    }
    if (q->state != PGQ_IDLE || !q->head)
        return;
    struct pgq_item *it = q->head;
    int k = it->prepared ? prep_find(q, it->sql) : -1;
    char name[16];
    int sent;
    if (it->prepared && k < 0 && q->nprep < PGQ_PREPARED_MAX) {
        snprintf(name, sizeof name, "tk%d", q->nprep);
        sent = PQsendPrepare(q->conn, name, it->sql, it->n, NULL);
        q->preparing = true;
    } else if (k >= 0) {
        snprintf(name, sizeof name, "tk%d", k);
        sent = PQsendQueryPrepared(q->conn, name, it->n, (const char *const *)it->params, NULL,
                                   NULL, 0);
    } else {
        sent = PQsendQueryParams(q->conn, it->sql, it->n, NULL, (const char *const *)it->params,
                                 NULL, NULL, 0);
    }
    if (!sent) {
        conn_lost(q, PQerrorMessage(q->conn));
        return;
    }
    q->state = PGQ_BUSY;
    int f = PQflush(q->conn);
    wait_io(q, f == 1 ? EV_WRITE | EV_READ : EV_READ, on_result);
}

static void on_connect(evutil_socket_t fd, short ev, void *arg)
{
    struct pgq *q = arg;
    switch (PQconnectPoll(q->conn)) {
    case PGRES_POLLING_READING:
        wait_io(q, EV_READ, on_connect);
        return;
    case PGRES_POLLING_WRITING:
        wait_io(q, EV_WRITE, on_connect);
        return;
    case PGRES_POLLING_OK:
        PQsetnonblocking(q->conn, 1);
        PQsetNoticeProcessor(q->conn, notice_ignore, NULL);
        if (q->logged_down)
            log_info("msg=\"database connection restored\"");
        q->logged_down = false;
        q->backoff_ms = 100;
        q->state = PGQ_IDLE;
        if (q->io) {
            event_free(q->io);
            q->io = NULL;
        }
        if (q->listen_channel) {
            char sql[160];
            char *esc = PQescapeIdentifier(q->conn, q->listen_channel, strlen(q->listen_channel));
            snprintf(sql, sizeof sql, "LISTEN %s", esc ? esc : "takod");
            PQfreemem(esc);
            pgq_exec_front(q, sql);
            if (q->on_up) /* what happened while we were not listening is unknown */
                q->on_up(q->listen_arg);
        }
        pgq_kick(q);
        return;
    default:
        conn_lost(q, PQerrorMessage(q->conn));
    }
}

static void ignore_result(const PGresult *res, const char *err, void *arg)
{
    if (!res)
        log_warn("msg=\"an internal statement (LISTEN, DEALLOCATE) failed\" err=\"%s\"", err);
}

/* Put an internal statement at the front of the FIFO (LISTEN after a connect). */
static void pgq_exec_front(struct pgq *q, const char *sql)
{
    struct pgq_item *it = calloc(1, sizeof *it);
    if (!it)
        return;
    it->sql = strdup(sql);
    it->params = calloc(1, sizeof(char *));
    it->cb = ignore_result;
    it->next = q->head;
    q->head = it;
    if (!q->tail)
        q->tail = it;
}

static void pgq_connect(struct pgq *q)
{
    q->conn = PQconnectStart(q->conninfo);
    if (!q->conn || PQstatus(q->conn) == CONNECTION_BAD) {
        conn_lost(q, q->conn ? PQerrorMessage(q->conn) : "out of memory");
        return;
    }
    q->state = PGQ_CONNECTING;
    wait_io(q, EV_WRITE, on_connect);
}

struct pgq *pgq_new(struct event_base *base, const char *conninfo)
{
    struct pgq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->base = base;
    q->conninfo = strdup(conninfo);
    q->timer = evtimer_new(base, on_timer, q);
    q->backoff_ms = 100;
    q->io_fd = -1;
    pgq_connect(q);
    return q;
}

void pgq_listen(struct pgq *q, const char *channel, pgq_notify_cb on_notify, pgq_up_cb on_up,
                void *arg)
{
    free(q->listen_channel);
    q->listen_channel = strdup(channel);
    q->on_notify = on_notify;
    q->on_up = on_up;
    q->listen_arg = arg;
    if (q->state == PGQ_IDLE || q->state == PGQ_BUSY) {
        char sql[160];
        snprintf(sql, sizeof sql, "LISTEN %s", channel);
        pgq_exec(q, sql, 0, NULL, ignore_result, NULL);
    }
}

void pgq_free(struct pgq *q)
{
    if (!q)
        return;
    fail_all(q, "shutting down");
    if (q->io)
        event_free(q->io);
    event_free(q->timer);
    PQclear(q->last);
    PQfinish(q->conn);
    prep_forget(q);
    free(q->conninfo);
    free(q->listen_channel);
    free(q);
}

static int enqueue(struct pgq *q, const char *sql, int n, const char *const *params, pgq_cb cb,
                   void *arg, bool prepared)
{
    if (q->state == PGQ_DOWN)
        return -ENOTCONN;
    struct pgq_item *it = calloc(1, sizeof *it);
    if (!it)
        return -ENOMEM;
    it->sql = strdup(sql);
    it->n = n;
    it->params = calloc((size_t)(n > 0 ? n : 1), sizeof(char *));
    for (int i = 0; i < n; i++)
        it->params[i] = params[i] ? strdup(params[i]) : NULL;
    it->cb = cb;
    it->arg = arg;
    it->prepared = prepared && it->sql;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    pgq_kick(q);
    return 0;
}

int pgq_exec(struct pgq *q, const char *sql, int n, const char *const *params, pgq_cb cb, void *arg)
{
    return enqueue(q, sql, n, params, cb, arg, false);
}

int pgq_exec_prepared(struct pgq *q, const char *sql, int n, const char *const *params, pgq_cb cb,
                      void *arg)
{
    return enqueue(q, sql, n, params, cb, arg, true);
}

bool pgq_connected(const struct pgq *q)
{
    return q->state == PGQ_IDLE || q->state == PGQ_BUSY;
}
