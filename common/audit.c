/*
 * audit.c — the tamper-evident audit chain over finished jobs (see audit.h, docs/AUDIT.md).
 *
 * There is no C logic here, only SQL text: PostgreSQL appends to the chain (a trigger) and
 * checks it (one SELECT). Keeping it in the database means every writer (executors, the
 * master's recovery, acceptors, other nodes, a psql session) goes through the same code
 * path, and a job cannot become terminal without being chained.
 *
 * The chain
 * ---------
 *
 * When a job's status becomes terminal (succeeded, failed, timeout, oom, cancelled; takod
 * never changes a terminal status) the row gets three columns:
 *
 *     audit_seq   1, 2, 3, ... with no gaps: the position in the chain
 *     audit_prev  the audit_hash of the row at audit_seq - 1 (64 '0's for the first row)
 *     audit_hash  hex(sha256(audit_prev || canonical text of the audited fields))
 *
 * audit_prev is redundant (it equals the predecessor's hash) but it makes each row
 * self-checking: a row whose hash does not match its own content was *edited*; a row that
 * is self-consistent but whose audit_prev is not its predecessor's hash was *inserted* (or
 * its predecessor replaced); a missing audit_seq was *deleted*. With only two columns the
 * first two cases look the same.
 *
 * A one-row table, audit_head, holds the last (seq, hash) appended. It is what the next
 * append chains from, so deleting the newest rows leaves a visible gap (the next job gets
 * audit_seq N + 1, not the deleted N) and verify reports the deleted tail even before the
 * next append. Sequences are not used: a rolled-back transaction would burn a number,
 * which would look like a deletion. The head is updated in the appending transaction, so
 * a rollback undoes both.
 *
 * Serialization
 * -------------
 *
 * Appends take pg_advisory_xact_lock(AUDIT_LOCK_KEY), held until the transaction ends, so
 * one append's commit happens before the next one reads audit_head: processes and nodes
 * sharing the database form one chain, and audit_seq order is commit order. This assumes
 * READ COMMITTED (takod's, and PostgreSQL's default): each statement of the trigger after
 * the lock sees what the previous holder committed. Under REPEATABLE READ the appender
 * would read a stale head; the UNIQUE on audit_seq (and the row lock on audit_head) then
 * makes that transaction fail instead of forking the chain. The price: appends are
 * serialized through their commit, so the chain's throughput is about one append per
 * commit flush (WAL fsync), cluster-wide.
 *
 * BEFORE UPDATE, not AFTER
 * ------------------------
 *
 * The status change is chained by a BEFORE UPDATE OF status trigger that fills the three
 * columns in NEW: the hash covers exactly the row version that is written, in the same
 * write, with no second UPDATE (an AFTER trigger would write every finished row twice, a
 * full non-HOT update since audit_seq is indexed). It is named zz_jobs_audit because
 * BEFORE triggers run in name order and it must see the final NEW.
 *
 * Rows INSERTed already terminal (a spooled record written after an outage, say) are
 * chained by an AFTER INSERT trigger with an UPDATE: a BEFORE INSERT trigger runs before
 * ON CONFLICT is checked, so an "INSERT ... ON CONFLICT DO NOTHING" replay would consume a
 * number for a row that is never written, and the chain would show a false deletion.
 *
 * One caveat of BEFORE: a statement that finishes several jobs takes the lock at its first
 * row and then locks the others; if another session is finishing one of those others at
 * that moment (it holds that row and waits for the lock) the two deadlock, and PostgreSQL
 * aborts one after deadlock_timeout. Single-row finishing statements (all of takod's
 * except the fast-stop sweep, which runs after this node's executors are gone) cannot.
 * A multi-row one that may race can lock its rows first (SELECT ... FOR UPDATE) in the
 * same transaction.
 *
 * Canonical text
 * --------------
 *
 * 'takod-audit-v1' then, for each audited field in a fixed order, either '-' (NULL) or
 * "<char_length>:<text>" — so NULL differs from '' and no field can run into the next:
 *
 *     audit_seq id status job_type mode code input timeout_s memory_bytes cpus node
 *     client_ip correlation_id created_at started_at ended_at exit_code stdout stderr output
 *     error artifacts runtime attempt parent_id relationship idempotency_key api_key_id
 *     callback_url
 *
 * Integers and uuids as PostgreSQL prints them; cpus (double precision) as the 16 hex
 * digits of its IEEE 754 bits (float8send), since float text depends on
 * extra_float_digits; timestamps in UTC at microsecond precision
 * (2024-01-31T12:34:56.789012Z); jsonb as its ::text (canonical: keys sorted and
 * de-duplicated); the whole converted to UTF-8 before hashing. audit_seq is hashed too,
 * so rows cannot be renumbered. A new audited column needs a new version tag.
 *
 * The same expression (AUDIT_HASH, over a row named r) is used by the trigger, the
 * migration's back-fill, verify and retention, so they cannot drift apart. Verify and
 * retention inline it: they rely on no function stored in the database, so replacing the
 * trigger function does not make verify lie.
 */
#include "tako/audit.h"

/* 'tkaudit1' as a big-endian integer; db_migrate's lock is another key. */
#define AUDIT_LOCK_KEY "8388905887731381297"
#define AUDIT_GENESIS  "'0000000000000000000000000000000000000000000000000000000000000000'"
#define AUDIT_TERMINAL "('succeeded','failed','timeout','oom','cancelled')"

/*
 * The SQL is laid out by hand: clang-format cannot see that the macros are strings.
 */
/* clang-format off */

/* One field of the canonical text: '-' for NULL, else "<length>:<text>". */
#define AUDIT_F(x) "coalesce(char_length(" x ")::text||':'||" x ",'-')"
/* A timestamptz field, in UTC with microseconds. */
#define AUDIT_TS(x) \
    AUDIT_F("to_char((" x ") AT TIME ZONE 'UTC','YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")

#define AUDIT_CANON                                         \
    "('takod-audit-v1'"                                     \
    "||" AUDIT_F("r.audit_seq::text")                       \
    "||" AUDIT_F("r.id::text")                              \
    "||" AUDIT_F("r.status")                                \
    "||" AUDIT_F("r.job_type")                              \
    "||" AUDIT_F("r.mode")                                  \
    "||" AUDIT_F("r.code")                                  \
    "||" AUDIT_F("r.input::text")                           \
    "||" AUDIT_F("r.timeout_s::text")                       \
    "||" AUDIT_F("r.memory_bytes::text")                    \
    "||" AUDIT_F("encode(float8send(r.cpus),'hex')")        \
    "||" AUDIT_F("r.node")                                  \
    "||" AUDIT_F("r.client_ip")                             \
    "||" AUDIT_F("r.correlation_id")                        \
    "||" AUDIT_TS("r.created_at")                           \
    "||" AUDIT_TS("r.started_at")                           \
    "||" AUDIT_TS("r.ended_at")                             \
    "||" AUDIT_F("r.exit_code::text")                       \
    "||" AUDIT_F("r.stdout")                                \
    "||" AUDIT_F("r.stderr")                                \
    "||" AUDIT_F("r.output::text")                          \
    "||" AUDIT_F("r.error::text")                           \
    "||" AUDIT_F("r.artifacts::text")                       \
    "||" AUDIT_F("r.runtime")                               \
    "||" AUDIT_F("r.attempt::text")                         \
    "||" AUDIT_F("r.parent_id::text")                       \
    "||" AUDIT_F("r.relationship")                          \
    "||" AUDIT_F("r.idempotency_key")                       \
    "||" AUDIT_F("r.api_key_id")                            \
    "||" AUDIT_F("r.callback_url")                          \
    "||" AUDIT_F("r.stdin")                                 \
    "||" AUDIT_F("r.input_files::text")                     \
    ")"

/* The hash a row r must carry, given its audit_seq and audit_prev. */
#define AUDIT_HASH "encode(sha256(convert_to(r.audit_prev||" AUDIT_CANON ",'UTF8')),'hex')"

/* Where the chain starts: the newest retention anchor, else (0, genesis). */
#define AUDIT_ANCHOR_CTE                                                                     \
    "a AS (SELECT coalesce((SELECT x.audit_seq FROM audit_anchor x"                          \
    "                       ORDER BY x.audit_seq DESC LIMIT 1), 0) AS seq,"                  \
    " coalesce((SELECT x.audit_hash FROM audit_anchor x ORDER BY x.audit_seq DESC LIMIT 1)," \
    "          " AUDIT_GENESIS ") AS hash)"

/*
 * The chained rows after the anchor, each with its recomputed hash and its predecessor in
 * audit_seq order (pseq, phash, pid: NULL for the first, whose predecessor is the anchor).
 * dups counts the rows sharing its audit_seq.
 */
#define AUDIT_CHAIN_CTE(from, where)                                                     \
    "c AS (SELECT r.id, r.audit_seq AS seq, r.audit_prev AS prev, r.audit_hash AS hash," \
    " " AUDIT_HASH " AS recomputed,"                                                     \
    " lag(r.audit_seq) OVER w AS pseq, lag(r.audit_hash) OVER w AS phash,"               \
    " lag(r.id) OVER w AS pid, count(*) OVER (PARTITION BY r.audit_seq) AS dups"         \
    " FROM jobs r, a" from " WHERE r.audit_seq > a.seq" where                            \
    " WINDOW w AS (ORDER BY r.audit_seq, r.id))"

/*
 * The migration. The back-fill chains the terminal jobs already there, oldest ended
 * first; ALTER TABLE holds jobs exclusively until db_migrate commits, so no job can finish
 * unchained meanwhile. If audit_head is ever missing the trigger re-creates it from the
 * newest chained row or anchor (verify reports its absence until then) rather than failing
 * every job's completion.
 */
const char audit_migration_sql[] =
    "ALTER TABLE jobs ADD COLUMN audit_seq bigint UNIQUE,"
    " ADD COLUMN audit_prev text,"
    " ADD COLUMN audit_hash text;"
    "CREATE TABLE audit_head ("
    " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
    " last_seq bigint NOT NULL,"
    " last_hash text NOT NULL);"
    "CREATE TABLE audit_anchor ("
    " audit_seq bigint PRIMARY KEY,"
    " audit_hash text NOT NULL,"
    " deleted_rows bigint NOT NULL,"
    " cutoff timestamptz NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT now());"
    "DO $$"
    "DECLARE r jobs; n bigint := 0; prev text := " AUDIT_GENESIS ";"
    "BEGIN"
    "  PERFORM pg_advisory_xact_lock(" AUDIT_LOCK_KEY ");"
    "  FOR r IN SELECT * FROM jobs WHERE status IN " AUDIT_TERMINAL
    "           ORDER BY ended_at NULLS FIRST, created_at, id LOOP"
    "    n := n + 1;"
    "    r.audit_seq := n;"
    "    r.audit_prev := prev;"
    "    r.audit_hash := " AUDIT_HASH ";"
    "    UPDATE jobs SET audit_seq = r.audit_seq, audit_prev = r.audit_prev,"
    "                    audit_hash = r.audit_hash WHERE id = r.id;"
    "    prev := r.audit_hash;"
    "  END LOOP;"
    "  INSERT INTO audit_head (last_seq, last_hash) VALUES (n, prev);"
    "END $$;"
    /* Fills r's audit columns and advances the head; the lock is held until the caller's
     * transaction ends. */
    "CREATE FUNCTION takod_audit_next(INOUT r jobs) LANGUAGE plpgsql AS $$"
    "DECLARE h record;"
    "BEGIN"
    "  PERFORM pg_advisory_xact_lock(" AUDIT_LOCK_KEY ");"
    "  SELECT last_seq, last_hash INTO h FROM audit_head FOR UPDATE;"
    "  IF NOT FOUND THEN"
    "    RAISE WARNING 'takod audit: audit_head was missing; re-created from the jobs table';"
    "    INSERT INTO audit_head (last_seq, last_hash)"
    "    SELECT t.ts, t.th FROM (SELECT j.audit_seq AS ts, j.audit_hash AS th FROM jobs j"
    "                            WHERE j.audit_seq IS NOT NULL"
    "                            UNION ALL SELECT x.audit_seq, x.audit_hash FROM audit_anchor x"
    "                            UNION ALL SELECT 0, " AUDIT_GENESIS ") t"
    "    ORDER BY t.ts DESC LIMIT 1 RETURNING last_seq, last_hash INTO h;"
    "  END IF;"
    "  r.audit_seq := h.last_seq + 1;"
    "  r.audit_prev := h.last_hash;"
    "  r.audit_hash := " AUDIT_HASH ";"
    "  UPDATE audit_head SET last_seq = r.audit_seq, last_hash = r.audit_hash;"
    "END $$;"
    "CREATE FUNCTION takod_audit_on_update() RETURNS trigger LANGUAGE plpgsql AS $$"
    "BEGIN"
    "  RETURN takod_audit_next(NEW);"
    "END $$;"
    "CREATE FUNCTION takod_audit_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$"
    "DECLARE r jobs := takod_audit_next(NEW);"
    "BEGIN"
    "  UPDATE jobs SET audit_seq = r.audit_seq, audit_prev = r.audit_prev,"
    "                  audit_hash = r.audit_hash WHERE id = r.id;"
    "  RETURN NULL;"
    "END $$;"
    "CREATE TRIGGER zz_jobs_audit BEFORE UPDATE OF status ON jobs FOR EACH ROW"
    " WHEN (NEW.status IN " AUDIT_TERMINAL " AND NEW.audit_seq IS NULL)"
    " EXECUTE FUNCTION takod_audit_on_update();"
    "CREATE TRIGGER zz_jobs_audit_insert AFTER INSERT ON jobs FOR EACH ROW"
    " WHEN (NEW.status IN " AUDIT_TERMINAL " AND NEW.audit_seq IS NULL)"
    " EXECUTE FUNCTION takod_audit_on_insert();";

/*
 * Verify. Every check yields candidate problems with a position in the chain (pos) and a
 * rank among checks at the same position (k); the first one wins:
 *
 *   k=0 inserted  a chained row at or below the newest anchor (retention deleted that range)
 *   k=1 deleted   audit_seq jumps: the missing numbers' rows were deleted
 *   k=2 inserted  two rows share an audit_seq (only possible if the UNIQUE was dropped)
 *   k=3 edited    the stored hash differs from the one recomputed from the row itself
 *                 (its content, audit_seq, audit_prev or audit_hash was changed)
 *   k=4 inserted  the row is self-consistent but does not chain from its predecessor's hash:
 *                 a forged row, or its predecessor was replaced by a self-consistent forgery
 *   k=5 deleted   audit_head says more rows were appended than exist: the tail was deleted
 *   k=6 inserted  a row beyond audit_head: it did not come through the trigger
 *   k=7 inserted  the newest row (or anchor) disagrees with audit_head's hash: replaced
 *   k=8 inserted  a terminal job with no audit_seq: written with the trigger bypassed
 *                 (reported after every chain problem: it has no position)
 *   deleted       audit_head itself is missing (pos -1: reported first)
 *
 * A row edited in place keeps its successor's link intact (the stored hash is unchanged),
 * so an edit shows as exactly one 'edited'. All of it is one statement: one snapshot.
 */
const char audit_verify_sql[] =
    "WITH " AUDIT_ANCHOR_CTE ","
    "hd AS (SELECT (SELECT count(*) FROM audit_head) AS n,"
    " (SELECT h.last_seq FROM audit_head h LIMIT 1) AS seq,"
    " (SELECT h.last_hash FROM audit_head h LIMIT 1) AS hash),"
    " " AUDIT_CHAIN_CTE("", "") ","
    "m AS (SELECT coalesce(max(c.seq), (SELECT a.seq FROM a)) AS seq FROM c),"
    "p AS ("
    " SELECT 'deleted'::text AS problem, NULL::bigint AS audit_seq, NULL::text AS job_id,"
    "  'the audit_head row is missing'::text AS detail, (-1)::bigint AS pos, 0 AS k"
    "  FROM hd WHERE hd.n <> 1"
    " UNION ALL"
    " SELECT 'inserted', r.audit_seq, r.id::text,"
    "  format('audit_seq %s is at or below the retention anchor (%s), whose rows were"
    " deleted, yet it is present', r.audit_seq, a.seq), r.audit_seq, 0"
    "  FROM jobs r, a WHERE r.audit_seq <= a.seq"
    " UNION ALL"
    " SELECT 'deleted', coalesce(c.pseq, a.seq) + 1, NULL,"
    "  format('audit_seq %s..%s missing (%s rows); the next present is %s (job %s)',"
    "         coalesce(c.pseq, a.seq) + 1, c.seq - 1, c.seq - coalesce(c.pseq, a.seq) - 1,"
    "         c.seq, c.id), coalesce(c.pseq, a.seq) + 1, 1"
    "  FROM c, a WHERE c.seq > coalesce(c.pseq, a.seq) + 1"
    " UNION ALL"
    " SELECT 'inserted', c.seq, c.id::text,"
    "  format('audit_seq %s is held by %s rows', c.seq, c.dups), c.seq, 2"
    "  FROM c WHERE c.dups > 1"
    " UNION ALL"
    " SELECT 'edited', c.seq, c.id::text,"
    "  format('stored audit_hash %s, recomputed from the row %s', coalesce(c.hash, 'NULL'),"
    "         coalesce(c.recomputed, 'NULL')), c.seq, 3"
    "  FROM c WHERE c.recomputed IS DISTINCT FROM c.hash"
    " UNION ALL"
    " SELECT 'inserted', c.seq, c.id::text,"
    "  format('the row is self-consistent but was chained after %s, while its predecessor"
    " (audit_seq %s, %s) has %s: this row is forged or its predecessor was replaced',"
    "         coalesce(c.prev, 'NULL'), coalesce(c.pseq, a.seq),"
    "         coalesce('job ' || c.pid::text, 'the retention anchor'),"
    "         coalesce(c.phash, a.hash)), c.seq, 4"
    "  FROM c, a WHERE c.seq = coalesce(c.pseq, a.seq) + 1"
    "  AND c.prev IS DISTINCT FROM coalesce(c.phash, a.hash)"
    " UNION ALL"
    " SELECT 'deleted', m.seq + 1, NULL,"
    "  format('audit_seq %s..%s missing at the end of the chain: audit_head records %s"
    " appends', m.seq + 1, hd.seq, hd.seq), m.seq + 1, 5"
    "  FROM m, hd WHERE hd.seq > m.seq"
    " UNION ALL"
    " SELECT 'inserted', c.seq, c.id::text,"
    "  format('audit_seq %s is beyond the last append recorded in audit_head (%s): it did"
    " not come through the audit trigger', c.seq, hd.seq), c.seq, 6"
    "  FROM c, hd WHERE c.seq > hd.seq"
    " UNION ALL"
    " SELECT 'inserted', c.seq, c.id::text,"
    "  format('the newest row''s hash %s differs from the one audit_head recorded at append"
    " time (%s): the row was replaced', c.hash, hd.hash), c.seq, 7"
    "  FROM c, hd WHERE c.seq = hd.seq AND c.hash IS DISTINCT FROM hd.hash"
    " UNION ALL"
    " SELECT 'inserted', a.seq, NULL,"
    "  format('the retention anchor at audit_seq %s has hash %s but audit_head recorded %s',"
    "         a.seq, a.hash, hd.hash), a.seq, 7"
    "  FROM a, hd WHERE a.seq > 0 AND hd.seq = a.seq AND a.hash IS DISTINCT FROM hd.hash"
    " UNION ALL"
    " SELECT 'inserted', NULL, r.id::text,"
    "  format('job is %s but has no audit_seq: it was written with the audit trigger"
    " bypassed', r.status), 9223372036854775807, 8"
    "  FROM jobs r WHERE r.audit_seq IS NULL AND r.status IN " AUDIT_TERMINAL ")"
    "SELECT p.problem, p.audit_seq, p.job_id, p.detail FROM p"
    " ORDER BY p.pos, p.k, p.job_id LIMIT 1";

/*
 * Summary: the rows verify checks (those after the newest anchor) and the newest link —
 * the (last_seq, last_hash) worth exporting (audit_checkpoint_sql checks it later). It is
 * a second statement: run it with verify in one REPEATABLE READ transaction for the two to
 * describe the same snapshot; otherwise appends in between only make last_seq larger.
 */
const char audit_summary_sql[] =
    "WITH " AUDIT_ANCHOR_CTE ","
    "c AS (SELECT count(*) AS n, max(r.audit_seq) AS m FROM jobs r, a"
    "      WHERE r.audit_seq > a.seq)"
    "SELECT c.n AS rows_checked, coalesce(c.m, a.seq) AS last_seq,"
    " coalesce((SELECT r.audit_hash FROM jobs r WHERE r.audit_seq = c.m ORDER BY r.id LIMIT 1),"
    "          a.hash) AS last_hash"
    " FROM a, c";

/*
 * Retention deletes a prefix of the chain, never a middle, so what remains still chains
 * from one point, recorded in audit_anchor as the (audit_seq, audit_hash) of the last row
 * deleted. The prefix ends before the first chained row that is recent (created_at within
 * $1 days) or not terminal; an old job that finished after a recent one waits for a later
 * sweep. It also ends before the first problem in the rows it would delete (the same
 * checks as verify; for a broken link, before the predecessor), so retention never
 * launders tampering: the evidence stays for verify.
 *
 * No lock is needed: a chained row is visible in a snapshot only if all lower ones are
 * (appends are serialized through commit), so the prefix is consistent; two sweeps racing
 * delete each row once (the loser's DELETE skips rows already gone) and ON CONFLICT keeps
 * one anchor per audit_seq. Terminal jobs that bypassed the trigger (no audit_seq) are
 * never deleted: verify reports them.
 */
const char audit_retention_sql[] =
    "WITH " AUDIT_ANCHOR_CTE ","
    "cut AS (SELECT now() - make_interval(days => $1::integer) AS t),"
    "lim AS (SELECT coalesce("
    "  (SELECT min(r.audit_seq) - 1 FROM jobs r WHERE r.audit_seq > a.seq"
    "   AND (r.created_at >= cut.t OR r.status NOT IN " AUDIT_TERMINAL ")),"
    "  (SELECT max(r.audit_seq) FROM jobs r)) AS seq FROM a, cut),"
    " " AUDIT_CHAIN_CTE(", lim", " AND r.audit_seq <= lim.seq") ","
    "bad AS (SELECT min(x.pos) AS pos FROM ("
    " SELECT coalesce(c.pseq, a.seq) + 1 AS pos FROM c, a"
    "  WHERE c.seq > coalesce(c.pseq, a.seq) + 1"
    " UNION ALL SELECT c.seq FROM c WHERE c.dups > 1 OR c.recomputed IS DISTINCT FROM c.hash"
    " UNION ALL SELECT c.seq - 1 FROM c, a WHERE c.seq = coalesce(c.pseq, a.seq) + 1"
    "  AND c.prev IS DISTINCT FROM coalesce(c.phash, a.hash)) x),"
    "s AS (SELECT least(lim.seq, bad.pos - 1) AS seq FROM lim, bad),"
    "del AS (DELETE FROM jobs r USING a, s, cut"
    " WHERE r.audit_seq > a.seq AND r.audit_seq <= s.seq"
    " AND r.status IN " AUDIT_TERMINAL " AND r.created_at < cut.t"
    " RETURNING r.audit_seq, r.audit_hash),"
    "anc AS (INSERT INTO audit_anchor (audit_seq, audit_hash, deleted_rows, cutoff)"
    " SELECT d.audit_seq, d.audit_hash, (SELECT count(*) FROM del), (SELECT cut.t FROM cut)"
    " FROM del d ORDER BY d.audit_seq DESC LIMIT 1"
    " ON CONFLICT (audit_seq) DO NOTHING)"
    "SELECT count(*) AS deleted FROM del";

/*
 * An exported (seq, hash) still in the database — as a row or as a retention anchor —
 * proves nothing up to it was rewritten since the export, which verify alone cannot
 * (someone able to rewrite the whole chain from some row on, head included, passes
 * verify). 'missing' means the chain is now shorter than it was: rows deleted from the
 * end and the head rewound, or a restore from an older backup.
 */
const char audit_checkpoint_sql[] =
    "WITH " AUDIT_ANCHOR_CTE
    "SELECT CASE"
    " WHEN EXISTS (SELECT 1 FROM jobs r WHERE r.audit_seq = $1::bigint AND r.audit_hash = $2)"
    "  OR EXISTS (SELECT 1 FROM audit_anchor x WHERE x.audit_seq = $1::bigint"
    "             AND x.audit_hash = $2)"
    "  OR ($1::bigint = 0 AND $2 = " AUDIT_GENESIS ") THEN 'match'"
    " WHEN EXISTS (SELECT 1 FROM jobs r WHERE r.audit_seq = $1::bigint)"
    "  OR EXISTS (SELECT 1 FROM audit_anchor x WHERE x.audit_seq = $1::bigint)"
    "  OR $1::bigint = 0 THEN 'mismatch'"
    " WHEN $1::bigint < a.seq THEN 'pruned'"
    " ELSE 'missing' END AS state"
    " FROM a";

/* clang-format on */
