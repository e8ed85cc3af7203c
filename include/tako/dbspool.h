/*
 * dbspool.h — records written to disk while PostgreSQL is unreachable, replayed when it
 * is back, so a synchronous job run during an outage still leaves its record.
 *
 * <data_dir>/dbspool/<job id>.insert   the job's INSERT (its parameters)
 * <data_dir>/dbspool/<job id>.final    its result: the finishing UPDATE and its artifacts
 * Each file is written whole (tmp + fsync + rename). The master replays them every few
 * seconds, INSERT before result; a file goes once PostgreSQL has taken it.
 *
 * A file is a document {"params": [text or null, ...], "artifacts": [...]}: a statement's
 * text parameters in the jobstore's order. The same document carries a job's result from
 * its executor to the acceptor that answers it (jobs.c): one format for a result on disk.
 */
#ifndef TAKO_DBSPOOL_H
#define TAKO_DBSPOOL_H

#include "tako/db.h"
#include "tako/jobstore.h"

#include <jansson.h>
#include <stdbool.h>

/* Where the files go: <data_dir>/dbspool (set once, before the children fork). */
void dbspool_init(const char *data_dir);

/* {"params": [...]}: n text parameters (NULL: JSON null). */
json_t *dbspool_doc(const char *const *params, int n);
/* A document's parameters into p[0..max) (borrowed from doc; missing ones NULL): how many
 * it has, at most max. */
int dbspool_doc_params(const json_t *doc, const char **p, int max);

/* Spool the INSERT's parameters (JOBS_INSERT_NPARAMS; NULL entries are SQL NULL). 0 or -errno. */
int dbspool_write_insert(const char *job_id, const char *const *params);
/* Spool a result: the FINISH parameters (JOBS_FINISH_NPARAMS) and [{name, sha256, content_type,
 * data (base64)}]. */
int dbspool_write_final(const char *job_id, const char *const *params, json_t *artifacts);
/* Is this job's INSERT still waiting on disk? (its result must wait behind it) */
bool dbspool_has_insert(const char *job_id);
/* Replay what is spooled. Returns how many files are left (0 when all went through). */
int dbspool_replay(struct db *db);
/* Files waiting (cheap: for the master's tick). */
int dbspool_count(void);

#endif
