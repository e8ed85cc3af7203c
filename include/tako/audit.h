/*
 * audit.h — the tamper-evident audit chain over finished jobs (docs/AUDIT.md).
 *
 * All of it is SQL that PostgreSQL runs; takod only holds the text. When a job's status
 * becomes terminal, a trigger gives the row the next audit_seq and
 *
 *     audit_hash = sha256(audit_prev || canonical text of the audited fields)
 *
 * where audit_prev is the previous row's audit_hash. Appends from every process and node
 * are serialized by one advisory lock, so there is one chain per database.
 *
 * The texts are arrays, not pointers, so that db.c's static migrations[] can list
 * audit_migration_sql (an array's address is a constant initializer; a pointer
 * variable's value is not). Everywhere else they read as const char *.
 */
#ifndef TAKO_AUDIT_H
#define TAKO_AUDIT_H

/*
 * The schema migration (several statements, no parameters). It must run after the
 * migration that adds jobs.api_key_id, since that column is hashed. It adds
 * jobs.audit_seq/audit_prev/audit_hash, the tables audit_head and audit_anchor, the
 * triggers, and chains the terminal jobs already present (in ended_at order).
 */
extern const char audit_migration_sql[];

/*
 * Recompute the chain. One row (problem, audit_seq, job_id, detail) describing the first
 * problem — problem is 'edited', 'deleted' or 'inserted' — or no row when it verifies.
 * No parameters; reads only, and relies on no function stored in the database.
 */
extern const char audit_verify_sql[];

/* One row (rows_checked bigint, last_seq bigint, last_hash text). No parameters. */
extern const char audit_summary_sql[];

/*
 * Retention. $1 = days (integer). Deletes the finished jobs older than that (artifacts
 * follow by ON DELETE CASCADE), as a prefix of the chain, and records in audit_anchor
 * where the remaining chain starts. Never deletes queued or running jobs, nor a row at or
 * after the first problem the chain shows. One row: the number of jobs deleted.
 */
extern const char audit_retention_sql[];

/*
 * Check a previously exported (last_seq, last_hash): $1 = seq (bigint), $2 = hash (text).
 * One row (state text): 'match', 'mismatch', 'pruned' (retention deleted that row and no
 * anchor was taken there) or 'missing' (no such row: the chain is shorter than that).
 */
extern const char audit_checkpoint_sql[];

#endif
