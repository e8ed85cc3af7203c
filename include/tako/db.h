/*
 * db.h — PostgreSQL access.
 *
 * Blocking side (master start-up, executors): one PGconn per process, connected after
 * fork (a libpq connection must never cross fork), re-connected once on loss.
 * Async side (acceptors): pgq, a FIFO of queries on one non-blocking connection driven
 * by the acceptor's libevent loop, so a query never blocks HTTP.
 *
 * The schema is created by numbered migrations (db_migrate) under an advisory lock, so
 * several takod nodes starting together apply each migration once.
 */
#ifndef TAKO_DB_H
#define TAKO_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;

/* ---- blocking ---- */
struct db;

/* Connect. 0 or -ECONNREFUSED with the reason in err. */
int db_open(struct db **out, const char *conninfo, char *err, size_t errlen);
void db_close(struct db *d);
/*
 * Run one parameterised statement (text params; NULL = SQL NULL). Re-connects and retries
 * once if the connection was lost. Returns the result (caller PQclear()s) when its status
 * is COMMAND_OK or TUPLES_OK, else NULL with the reason in db_last_error().
 */
PGresult *db_exec(struct db *d, const char *sql, int n, const char *const *params);
/* The same with binary parameters where formats[i] == 1 (lengths[i] bytes). */
PGresult *db_exec_bin(struct db *d, const char *sql, int n, const char *const *params,
                      const int *lengths, const int *formats);
/* db_exec_bin for a statement built at run time (never prepared: sql may be freed after). */
PGresult *db_exec_bin_once(struct db *d, const char *sql, int n, const char *const *params,
                           const int *lengths, const int *formats);
const char *db_last_error(const struct db *d);

/* Apply missing migrations under pg_advisory_xact_lock. 0 or -EIO with err. */
int db_migrate(const char *conninfo, char *err, size_t errlen);
/* The newest schema version this binary knows. */
int db_schema_version(void);

/* ---- async (libevent) ---- */
struct pgq;
/* res is NULL on failure, with err saying why; res is freed after the callback returns. */
typedef void (*pgq_cb)(const PGresult *res, const char *err, void *arg);

struct pgq *pgq_new(struct event_base *base, const char *conninfo);
void pgq_free(struct pgq *q);
/* Queue a statement (params are copied). 0, or -ENOTCONN when the database is down (the
 * callback is then not called). */
int pgq_exec(struct pgq *q, const char *sql, int n, const char *const *params, pgq_cb cb,
             void *arg);
/* The same for one of a fixed set of statements (a constant, or text built once and never
 * changed): prepared on the connection at its first use (a Parse of its own) and run by
 * name from then on, so PostgreSQL does not parse and plan it again for every job. At most
 * PGQ_PREPARED_MAX such texts per connection; past them, or when preparing fails, it runs
 * as pgq_exec runs it. A reconnect forgets them (a new connection prepares again). */
#define PGQ_PREPARED_MAX 16
int pgq_exec_prepared(struct pgq *q, const char *sql, int n, const char *const *params, pgq_cb cb,
                      void *arg);
bool pgq_connected(const struct pgq *q);

/*
 * LISTEN on `channel` now and after every reconnect; on_notify(channel, payload, arg) for
 * each notification; on_up(arg) after each (re)connect, since notifications sent while
 * the connection was down are lost (callers re-check what they wait for).
 */
typedef void (*pgq_notify_cb)(const char *channel, const char *payload, void *arg);
typedef void (*pgq_up_cb)(void *arg);
void pgq_listen(struct pgq *q, const char *channel, pgq_notify_cb on_notify, pgq_up_cb on_up,
                void *arg);

#endif
