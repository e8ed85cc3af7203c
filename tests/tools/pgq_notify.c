/*
 * pgq_notify — does a pgq listener (common/pgq.c) see every notification while it is
 * otherwise idle? Built for tests only (tests/integration/test_pgq.py runs it against a
 * PostgreSQL of its own).
 *
 *   pgq_notify CONNINFO [SIDE_CONNINFO]
 *
 * It LISTENs on "tk_check" through a pgq on CONNINFO, then three times: runs a query on
 * that connection and sends NOTIFY tk_check, '<i>' — with SIDE_CONNINFO from a second
 * (plain, blocking) connection 20 ms after the query was queued, when it has been sent
 * and answered, so the notification follows the query's ReadyForQuery; without it, as the query itself (pg_notify: its own
 * session's notification, which PostgreSQL sends before ReadyForQuery). Nothing else
 * touches the listening connection: after each query's answer the tool waits up to 3 s
 * for the notification before the next round. test_pgq.py puts a proxy in front of
 * CONNINFO that delivers what the server sends in one write per 100 ms, so a result and
 * the notification behind it come in one read. On stdout, one line per event ("up",
 * "result i", "notify i"). Exit 0 when all three came, 1 when one did not, 2 on a usage
 * error.
 */
#include "tako/db.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct event_base *base;
static struct pgq *q;
static struct event *timer;
static int sent, answered, notified, failed;
static PGconn *side; /* NULL: the query notifies itself */
static struct event *side_timer;

static void next(void);

static void on_timeout(evutil_socket_t fd, short ev, void *arg)
{
    printf("no notification %d within 3 s\n", answered);
    failed = 1;
    event_base_loopbreak(base);
}

static void on_result(const PGresult *res, const char *err, void *arg)
{
    if (!res) {
        printf("query failed: %s\n", err ? err : "?");
        failed = 1;
        event_base_loopbreak(base);
        return;
    }
    answered++;
    printf("result %d\n", answered);
    fflush(stdout);
    if (notified >= answered) {
        next();
        return;
    }
    struct timeval tv = {3, 0};
    evtimer_add(timer, &tv);
}

static void on_notify(const char *channel, const char *payload, void *arg)
{
    notified++;
    printf("notify %s\n", payload);
    fflush(stdout);
    if (notified <= answered) {
        evtimer_del(timer);
        next();
    }
}

static void next(void)
{
    if (sent == 3) {
        event_base_loopbreak(base);
        return;
    }
    char payload[16];
    snprintf(payload, sizeof payload, "%d", ++sent);
    const char *p[1] = {payload};
    int rc = side ? pgq_exec(q, "SELECT 1", 0, NULL, on_result, NULL)
                  : pgq_exec(q, "SELECT pg_notify('tk_check', $1)", 1, p, on_result, NULL);
    if (rc < 0) {
        printf("pgq_exec: not connected\n");
        failed = 1;
        event_base_loopbreak(base);
        return;
    }
    if (side) { /* once the query has gone out and been answered */
        struct timeval tv = {0, 20 * 1000};
        evtimer_add(side_timer, &tv);
    }
}

static void on_side_timer(evutil_socket_t fd, short ev, void *arg)
{
    char payload[16];
    snprintf(payload, sizeof payload, "%d", sent);
    const char *p[1] = {payload};
    PGresult *res = PQexecParams(side, "SELECT pg_notify('tk_check', $1)", 1, NULL, p, NULL,
                                 NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        printf("side NOTIFY: %s\n", PQerrorMessage(side));
        failed = 1;
        event_base_loopbreak(base);
    }
    PQclear(res);
}

static void on_up(void *arg)
{
    printf("up\n");
    fflush(stdout);
    if (sent == 0)
        next();
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: pgq_notify CONNINFO [SIDE_CONNINFO]\n");
        return 2;
    }
    if (argc == 3 && PQstatus(side = PQconnectdb(argv[2])) != CONNECTION_OK) {
        printf("side connection: %s\n", PQerrorMessage(side));
        return 1;
    }
    base = event_base_new();
    timer = evtimer_new(base, on_timeout, NULL);
    side_timer = evtimer_new(base, on_side_timer, NULL);
    q = pgq_new(base, argv[1]);
    pgq_listen(q, "tk_check", on_notify, on_up, NULL);
    struct event *overall = evtimer_new(base, on_timeout, NULL);
    struct timeval all = {30, 0};
    evtimer_add(overall, &all);
    event_base_dispatch(base);
    if (!failed && notified != 3) {
        printf("%d of 3 notifications\n", notified);
        failed = 1;
    }
    pgq_free(q);
    event_free(overall);
    event_free(timer);
    event_free(side_timer);
    event_base_free(base);
    PQfinish(side);
    return failed;
}
