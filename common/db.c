/*
 * db.c — blocking libpq access and the schema migrations (see db.h).
 */
#include "tako/db.h"
#include "tako/audit.h"
#include "tako/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Every statement a process runs through db_exec is prepared once per connection and
 * then executed by name: the SQL texts are constants, so the text's address identifies
 * it. A reconnect starts a new session, which forgets them: the cache is emptied then.
 */
#define DB_PREPARED_MAX 32

struct db {
    PGconn *conn;
    char *conninfo;
    char err[512];
    const char *prepared[DB_PREPARED_MAX]; /* statement "s<i>" is this SQL text */
    int n_prepared;
};

/* The prepared statement's name for sql, preparing it if needed; NULL if it cannot be. */
static const char *prepared_name(struct db *d, const char *sql, int n, char *name, size_t len)
{
    for (int i = 0; i < d->n_prepared; i++)
        if (d->prepared[i] == sql) {
            snprintf(name, len, "s%d", i);
            return name;
        }
    if (d->n_prepared == DB_PREPARED_MAX)
        return NULL;
    snprintf(name, len, "s%d", d->n_prepared);
    PGresult *r = PQprepare(d->conn, name, sql, n, NULL);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok)
        return NULL;
    d->prepared[d->n_prepared++] = sql;
    return name;
}

/* Connect with a bound: a database that does not answer must not hang a process that has
 * other duties (the master's loop, an executor's jobs). */
static PGconn *connect_bounded(const char *conninfo)
{
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {conninfo, "3", NULL};
    return PQconnectdbParams(keys, vals, 1);
}

static void set_err(char *err, size_t len, const char *what, const char *msg)
{
    snprintf(err, len, "%s: %s", what, msg ? msg : "unknown error");
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

static void notice_ignore(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

int db_open(struct db **out, const char *conninfo, char *err, size_t errlen)
{
    struct db *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->conninfo = strdup(conninfo);
    d->conn = connect_bounded(conninfo);
    if (!d->conn || PQstatus(d->conn) != CONNECTION_OK) {
        set_err(err, errlen, "connect", d->conn ? PQerrorMessage(d->conn) : "out of memory");
        PQfinish(d->conn);
        free(d->conninfo);
        free(d);
        return -ECONNREFUSED;
    }
    PQsetNoticeProcessor(d->conn, notice_ignore, NULL);
    *out = d;
    return 0;
}

void db_close(struct db *d)
{
    if (!d)
        return;
    PQfinish(d->conn);
    free(d->conninfo);
    free(d);
}

const char *db_last_error(const struct db *d)
{
    return d->err;
}

PGresult *db_exec(struct db *d, const char *sql, int n, const char *const *params)
{
    return db_exec_bin(d, sql, n, params, NULL, NULL);
}

/* prepare: keep it as a named statement (sql is a constant: the cache keys on its address) */
static PGresult *exec_bin(struct db *d, const char *sql, int n, const char *const *params,
                          const int *lengths, const int *formats, bool prepare)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (PQstatus(d->conn) != CONNECTION_OK) {
            PQreset(d->conn);
            if (PQstatus(d->conn) != CONNECTION_OK) {
                set_err(d->err, sizeof d->err, "reconnect", PQerrorMessage(d->conn));
                return NULL;
            }
            PQsetNoticeProcessor(d->conn, notice_ignore, NULL);
            d->n_prepared = 0; /* a new session */
        }
        char name[16];
        const char *stmt = prepare ? prepared_name(d, sql, n, name, sizeof name) : NULL;
        PGresult *r = stmt ? PQexecPrepared(d->conn, stmt, n, params, lengths, formats, 0)
                           : PQexecParams(d->conn, sql, n, NULL, params, lengths, formats, 0);
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
            return r;
        set_err(d->err, sizeof d->err, "query",
                r ? PQresultErrorMessage(r) : PQerrorMessage(d->conn));
        PQclear(r);
        if (PQstatus(d->conn) == CONNECTION_OK)
            return NULL; /* a real SQL error: do not retry */
    }
    return NULL;
}

PGresult *db_exec_bin(struct db *d, const char *sql, int n, const char *const *params,
                      const int *lengths, const int *formats)
{
    return exec_bin(d, sql, n, params, lengths, formats, true);
}

PGresult *db_exec_bin_once(struct db *d, const char *sql, int n, const char *const *params,
                           const int *lengths, const int *formats)
{
    return exec_bin(d, sql, n, params, lengths, formats, false);
}

/*
 * Migrations: append only. Each runs in the one transaction that holds the advisory lock,
 * so a failure rolls all of them back and the master exits with the reason.
 */
static const char *const migrations[] = {
    /* 1: the job record */
    "CREATE TABLE jobs ("
    " id uuid PRIMARY KEY,"
    " status text NOT NULL CHECK (status IN ('queued','running','succeeded','failed',"
    "   'timeout','oom','cancelled')),"
    " mode text NOT NULL DEFAULT 'sync' CHECK (mode IN ('sync','async')),"
    " job_type text NOT NULL DEFAULT 'default',"
    " code text NOT NULL,"
    " input jsonb NOT NULL DEFAULT '{}',"
    " timeout_s integer NOT NULL,"
    " memory_bytes bigint NOT NULL,"
    " cpus double precision NOT NULL,"
    " node text NOT NULL,"
    " client_ip text,"
    " correlation_id text,"
    " attempt integer NOT NULL DEFAULT 0,"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " started_at timestamptz,"
    " ended_at timestamptz,"
    " exit_code integer,"
    " stdout text,"
    " stderr text,"
    " stdout_truncated boolean NOT NULL DEFAULT false,"
    " stderr_truncated boolean NOT NULL DEFAULT false,"
    " output jsonb,"
    " error jsonb,"
    " timing jsonb,"
    " artifacts jsonb,"
    " runtime text,"
    " container_id text"
    ");"
    "CREATE INDEX jobs_created_at_idx ON jobs (created_at DESC);"
    "CREATE INDEX jobs_status_created_idx ON jobs (status, created_at);",
    /* 2: artifacts, stored with the record so any node can serve them */
    "CREATE TABLE artifacts ("
    " job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
    " name text NOT NULL,"
    " size_bytes bigint NOT NULL,"
    " sha256 text NOT NULL,"
    " content_type text NOT NULL,"
    " data bytea NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (job_id, name)"
    ");",
    /* 3: the whole API: idempotency, lineage, hashes, stdin; completions announced with
     * NOTIFY (every writer: executors, the master, acceptors — one trigger); the
     * dead-letter queue of jobs that failed inside takod itself. */
    "ALTER TABLE jobs ADD COLUMN idempotency_key text,"
    " ADD COLUMN request_hash text,"
    " ADD COLUMN parent_id uuid,"
    " ADD COLUMN relationship text CHECK (relationship IN ('rerun', 'fork')),"
    " ADD COLUMN code_hash text,"
    " ADD COLUMN input_hash text,"
    " ADD COLUMN stdin text,"
    " ADD COLUMN startup_timeout_s integer;"
    "CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL;"
    "CREATE INDEX jobs_job_type_created_idx ON jobs (job_type, created_at);"
    "CREATE TABLE dlq ("
    " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
    " job_id uuid NOT NULL,"
    " job_data jsonb NOT NULL,"
    " error_type text NOT NULL,"
    " error_message text,"
    " retry_count integer NOT NULL DEFAULT 0,"
    " client_ip text,"
    " correlation_id text,"
    " created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX dlq_created_idx ON dlq (created_at DESC);"
    "CREATE FUNCTION takod_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN"
    "  IF NEW.status IS DISTINCT FROM OLD.status THEN"
    "    PERFORM pg_notify('takod_job', NEW.id::text || ' ' || NEW.status);"
    "    IF NEW.status IN ('failed', 'cancelled')"
    "       AND NEW.error->>'type' IN ('interrupted', 'docker_error', 'internal_error') THEN"
    "      INSERT INTO dlq (job_id, job_data, error_type, error_message, retry_count,"
    "                       client_ip, correlation_id)"
    "      VALUES (NEW.id, jsonb_build_object('job_type', NEW.job_type, 'mode', NEW.mode,"
    "              'timeout', NEW.timeout_s, 'code_hash', NEW.code_hash,"
    "              'input_hash', NEW.input_hash),"
    "              NEW.error->>'type', NEW.error->>'message', greatest(NEW.attempt - 1, 0),"
    "              NEW.client_ip, NEW.correlation_id);"
    "    END IF;"
    "  END IF;"
    "  RETURN NEW;"
    "END $$;"
    "CREATE TRIGGER jobs_changed AFTER UPDATE OF status ON jobs"
    " FOR EACH ROW EXECUTE FUNCTION takod_job_changed();",
    /* 4: callbacks (ext): where to POST the final result, and how that went */
    "ALTER TABLE jobs ADD COLUMN callback_url text,"
    " ADD COLUMN callback_status text CHECK (callback_status IN ('pending', 'delivered',"
    " 'failed'));",
    /* 5: who submitted (an API key's id, never the key) */
    "ALTER TABLE jobs ADD COLUMN api_key_id text;"
    "CREATE INDEX jobs_api_key_created_idx ON jobs (api_key_id, created_at DESC);"
    /* idempotency keys are per API key: one key's cannot reveal or block another's */
    "DROP INDEX jobs_idempotency_key_idx;"
    "CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs ((coalesce(api_key_id, '')),"
    " idempotency_key) WHERE idempotency_key IS NOT NULL;",
    /* 6: extra input files (ext) kept with the record, so a rerun or fork has them */
    "ALTER TABLE jobs ADD COLUMN input_files jsonb;",
    /* 7: the tamper-evident audit chain (common/audit.c, docs/AUDIT.md) */
    audit_migration_sql,
    /* 8: environments (common/jobtypes.c): a job's runtime requirements, and every build
     * of a job type's image, whose version a job may pin (NAME@version) */
    "ALTER TABLE jobs ADD COLUMN requirements jsonb;"
    "CREATE TABLE job_type_builds ("
    " job_type text NOT NULL,"
    " version text NOT NULL,"
    " digest text NOT NULL,"
    " image_ref text NOT NULL,"
    " requirements text NOT NULL DEFAULT '',"
    " packages text NOT NULL DEFAULT '',"
    " build_seconds double precision,"
    " version_tag text,"
    " built_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (job_type, version));"
    "CREATE UNIQUE INDEX job_type_builds_tag_idx ON job_type_builds (job_type, version_tag)"
    " WHERE version_tag IS NOT NULL;",
    /* 9: input_data as the client sent it (json keeps the text; jsonb re-spelled it), so
     * /input/data.json of a rerun, a fork or a retry is byte for byte the original's. An
     * existing row keeps jsonb's text of it, which is what input::text always gave, so the
     * audit chain's hashes of old records still verify. */
    "ALTER TABLE jobs ALTER COLUMN input TYPE json USING input::json;",
    /* 10: callbacks are durable deliveries (common/callbacks.c). A job's status becoming
     * final queues its delivery, whoever wrote it (an executor, the master's recovery, an
     * acceptor's cancel, the spool's replay: one trigger), with the body POST /execute
     * answers (the same fields as the acceptor's execute_response); the callbacks process
     * sends it, retries it with backoff under a lease (next_at), and records each attempt */
    "CREATE TABLE callback_deliveries ("
    " job_id uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,"
    " url text NOT NULL,"
    " body text NOT NULL,"
    " state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),"
    " attempts integer NOT NULL DEFAULT 0,"
    " next_at timestamptz NOT NULL DEFAULT now(),"
    " last_attempt_at timestamptz,"
    " last_http_status integer,"
    " last_error text,"
    " delivered_at timestamptz,"
    " created_at timestamptz NOT NULL DEFAULT now());"
    "CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_at)"
    " WHERE state = 'pending';"
    "CREATE FUNCTION takod_callback_queue() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN"
    "  INSERT INTO callback_deliveries (job_id, url, body)"
    "  VALUES (NEW.id, NEW.callback_url, jsonb_build_object("
    "    'success', NEW.status = 'succeeded', 'output', NEW.output,"
    "    'execution_time',"
    "      coalesce((NEW.timing->>'execution_ms')::double precision, 0) / 1000,"
    "    'stdout', NEW.stdout, 'stderr', NEW.stderr, 'exit_code', NEW.exit_code,"
    "    'error', NEW.error->'message', 'error_type', NEW.error->'type',"
    "    'job_type', NEW.job_type, 'execution_id', NEW.id, 'job_id', NEW.id,"
    "    'runtime', NEW.runtime, 'status', NEW.status, 'timing', NEW.timing,"
    "    'stdout_truncated', NEW.stdout_truncated, 'stderr_truncated', NEW.stderr_truncated,"
    "    'artifacts', CASE WHEN jsonb_typeof(NEW.artifacts) = 'array' THEN NEW.artifacts"
    "                 ELSE '[]'::jsonb END)::text)"
    "  ON CONFLICT (job_id) DO NOTHING;"
    "  RETURN NEW;"
    "END $$;"
    "CREATE TRIGGER jobs_callback AFTER UPDATE OF status ON jobs FOR EACH ROW"
    " WHEN (NEW.callback_url IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status"
    "       AND NEW.status IN ('succeeded', 'failed', 'timeout', 'oom', 'cancelled'))"
    " EXECUTE FUNCTION takod_callback_queue();",
    /* 11: a callback's body is built by takod's one answer builder (jobstore.c:job_answer),
     * not by the database: the trigger queues the delivery without one, and the callbacks
     * process reads the job's record when it sends it (workers/deliverer.c). The queue, its
     * lease and backoff and the record of attempts are as migration 10 made them; the body
     * of a delivery still pending from before is built the same way. */
    "CREATE OR REPLACE FUNCTION takod_callback_queue() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN"
    "  INSERT INTO callback_deliveries (job_id, url) VALUES (NEW.id, NEW.callback_url)"
    "  ON CONFLICT (job_id) DO NOTHING;"
    "  RETURN NEW;"
    "END $$;"
    "ALTER TABLE callback_deliveries DROP COLUMN body;",
    /* 12: sessions (docs/SESSIONS.md). A session's live state is a row of `sessions`,
     * written when it starts and when it ends, so a restart can say what became of it.
     * Its audit record, and each cell's, is a row of `jobs` written whole once it has
     * ended (mode 'session' / 'cell', a cell's parent_id its session): the audit trigger
     * on INSERT chains them like jobs, and no unfinished one is ever left for recovery. */
    "ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_mode_check,"
    " ADD CONSTRAINT jobs_mode_check CHECK (mode IN ('sync', 'async', 'session', 'cell')),"
    " DROP CONSTRAINT IF EXISTS jobs_relationship_check,"
    " ADD CONSTRAINT jobs_relationship_check"
    "   CHECK (relationship IN ('rerun', 'fork', 'session'));"
    "CREATE INDEX jobs_session_cells ON jobs (parent_id, created_at) WHERE mode = 'cell';"
    "CREATE TABLE sessions ("
    " id uuid PRIMARY KEY,"
    " node text NOT NULL,"
    " api_key_id text,"
    " job_type text NOT NULL,"
    " status text NOT NULL CHECK (status IN ('live', 'closed', 'expired', 'lost', 'failed')),"
    " created_at timestamptz NOT NULL,"
    " expires_at timestamptz NOT NULL,"
    " idle_timeout integer NOT NULL,"
    " max_lifetime integer NOT NULL,"
    " memory_bytes bigint NOT NULL,"
    " cpus double precision NOT NULL,"
    " runtime text,"
    " backend text,"
    " client_ip text,"
    " correlation_id text,"
    " execution_count integer NOT NULL DEFAULT 0,"
    " ended_at timestamptz,"
    " end_reason text);"
    "CREATE INDEX sessions_live ON sessions (node) WHERE status = 'live';",
    /* 13: several nodes on one database (docs/OPERATIONS.md, "Several nodes"). Every node
     * registers in `nodes` and heartbeats last_seen. With cluster.enabled a job may wait
     * unowned (node NULL) in the shared queue until a node claims it (FOR UPDATE SKIP
     * LOCKED, common/jobstore.c); a node's hold on a job is lease_until, renewed in one
     * statement for all its jobs; cancel_requested carries a cancel to the job's node.
     * Channel takod_queue announces a job that became claimable; takod_cancel a cancel
     * ("<node> <job id>"). takod_quota_ok takes a per-key advisory lock for the rest of the
     * INSERT's transaction and then counts (a volatile function: a fresh snapshot, so it
     * sees every INSERT that held the lock before), so two nodes admitting at once cannot
     * both pass the last free place of a key's quota. */
    "CREATE TABLE nodes ("
    " node_id text PRIMARY KEY,"
    " host text NOT NULL,"
    " pid integer NOT NULL,"
    " address text,"
    " executors integer NOT NULL,"
    " cluster boolean NOT NULL,"
    " started_at timestamptz NOT NULL,"
    " last_seen timestamptz NOT NULL,"
    " stopped_at timestamptz);"
    "ALTER TABLE jobs ALTER COLUMN node DROP NOT NULL,"
    " ADD COLUMN lease_until timestamptz,"
    " ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;"
    "CREATE INDEX jobs_shared_queue ON jobs (created_at) WHERE status = 'queued' AND node IS NULL;"
    "CREATE INDEX jobs_unfinished_node ON jobs (node) WHERE status IN ('queued', 'running');"
    "CREATE INDEX jobs_unfinished_key ON jobs (api_key_id) WHERE status IN ('queued', 'running');"
    "CREATE FUNCTION takod_job_claimable() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN"
    "  PERFORM pg_notify('takod_queue', '');"
    "  RETURN NEW;"
    "END $$;"
    "CREATE TRIGGER jobs_claimable AFTER INSERT OR UPDATE OF node, status ON jobs"
    " FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.node IS NULL)"
    " EXECUTE FUNCTION takod_job_claimable();"
    "CREATE FUNCTION takod_quota_ok(key text, max_queued integer, max_unfinished integer)"
    " RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$"
    "DECLARE q bigint; u bigint;"
    "BEGIN"
    "  IF key IS NULL OR (max_queued = 0 AND max_unfinished = 0) THEN RETURN true; END IF;"
    "  PERFORM pg_advisory_xact_lock(hashtext('takod-key:' || key));"
    "  SELECT count(*) FILTER (WHERE status = 'queued'), count(*) INTO q, u FROM jobs"
    "   WHERE api_key_id = key AND status IN ('queued', 'running');"
    "  RETURN (max_queued = 0 OR q < max_queued) AND (max_unfinished = 0 OR u < max_unfinished);"
    "END $$;",
};

int db_schema_version(void)
{
    return (int)(sizeof migrations / sizeof migrations[0]);
}

int db_migrate(const char *conninfo, char *err, size_t errlen)
{
    PGconn *c = connect_bounded(conninfo);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        set_err(err, errlen, "connect", c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return -ECONNREFUSED;
    }
    PQsetNoticeProcessor(c, notice_ignore, NULL);
    int rc = 0;
    PGresult *r = PQexec(c, "BEGIN; SELECT pg_advisory_xact_lock(7297303948237469); "
                            "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            " version integer PRIMARY KEY,"
                            " applied_at timestamptz NOT NULL DEFAULT now());");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        set_err(err, errlen, "migration lock", PQresultErrorMessage(r));
        rc = -EIO;
        goto out;
    }
    PQclear(r);
    r = PQexec(c, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        set_err(err, errlen, "read schema version", PQresultErrorMessage(r));
        rc = -EIO;
        goto out;
    }
    int have = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    r = NULL;
    if (have > db_schema_version()) {
        snprintf(err, errlen,
                 "database schema version %d is newer than this takod knows (%d): upgrade takod",
                 have, db_schema_version());
        rc = -EPROTO;
        goto out;
    }
    for (int v = have + 1; v <= db_schema_version(); v++) {
        r = PQexec(c, migrations[v - 1]);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char what[64];
            snprintf(what, sizeof what, "migration %d", v);
            set_err(err, errlen, what, PQresultErrorMessage(r));
            rc = -EIO;
            goto out;
        }
        PQclear(r);
        char vs[16];
        snprintf(vs, sizeof vs, "%d", v);
        const char *p[1] = {vs};
        r = PQexecParams(c, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, NULL, p, NULL,
                         NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            set_err(err, errlen, "record migration", PQresultErrorMessage(r));
            rc = -EIO;
            goto out;
        }
        PQclear(r);
        r = NULL;
        log_info("msg=\"applied migration\" version=%d", v);
    }
    r = PQexec(c, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        set_err(err, errlen, "commit migrations", PQresultErrorMessage(r));
        rc = -EIO;
    }
out:
    PQclear(r);
    PQfinish(c);
    return rc;
}
