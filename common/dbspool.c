/*
 * dbspool.c — see dbspool.h. The statements and their parameters' order are the
 * jobstore's (TK_JOB_FIELDS); a spooled file is those parameters, replayed as they are.
 */
#include "tako/dbspool.h"
#include "tako/log.h"
#include "tako/jobstore.h"
#include "tako/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char spool_dir[4200]; /* <data_dir>/dbspool */

void dbspool_init(const char *data_dir)
{
    snprintf(spool_dir, sizeof spool_dir, "%s/dbspool", data_dir);
}

static const char JOBS_SQL_ARTIFACT[] =
    "INSERT INTO artifacts (job_id, name, size_bytes, sha256, content_type, data)"
    " VALUES ($1, $2, $3::bigint, $4, $5, $6)"
    " ON CONFLICT (job_id, name) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,"
    " sha256 = EXCLUDED.sha256, content_type = EXCLUDED.content_type, data = EXCLUDED.data";

static void spool_path(char *buf, size_t len, const char *job_id, const char *kind)
{
    snprintf(buf, len, "%s/%s.%s", spool_dir, job_id, kind);
}

json_t *dbspool_doc(const char *const *params, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, params[i] ? json_string(params[i]) : json_null());
    return json_pack("{s:o}", "params", a);
}

int dbspool_doc_params(const json_t *doc, const char **p, int max)
{
    const json_t *params = json_object_get(doc, "params");
    int n = (int)json_array_size(params);
    for (int i = 0; i < max; i++)
        p[i] = i < n ? json_string_value(json_array_get(params, (size_t)i)) : NULL;
    return n < max ? n : max;
}

/* tmp + fsync + rename: a spooled record survives a crash of the machine too */
static int write_doc(const char *job_id, const char *kind, json_t *doc)
{
    char path[4300], tmp[4400];
    spool_path(path, sizeof path, job_id, kind);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        return -ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = 0;
    if (fd < 0) {
        rc = -errno;
    } else {
        size_t len = strlen(text);
        if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
            rc = -errno ? -errno : -EIO;
        close(fd);
        if (rc == 0 && rename(tmp, path) < 0)
            rc = -errno;
    }
    free(text);
    if (rc < 0)
        log_crit("msg=\"spooling a record failed: it will be lost\" job=%s path=%s err=\"%s\"",
                 job_id, path, strerror(-rc));
    return rc;
}

int dbspool_write_insert(const char *job_id, const char *const *params)
{
    return write_doc(job_id, "insert", dbspool_doc(params, JOBS_INSERT_NPARAMS));
}

int dbspool_write_final(const char *job_id, const char *const *params, json_t *artifacts)
{
    json_t *doc = dbspool_doc(params, JOBS_FINISH_NPARAMS + JOBS_FENCE_NPARAMS);
    json_object_set_new(doc, "artifacts", artifacts ? artifacts : json_array());
    return write_doc(job_id, "final", doc);
}

bool dbspool_has_insert(const char *job_id)
{
    char path[4300];
    spool_path(path, sizeof path, job_id, "insert");
    return access(path, F_OK) == 0;
}

/*
 * A spooled statement changed no row. Its own row is there already (a replay that got
 * through before the file could be unlinked: an INSERT finds its id, a result finds the
 * job finished): that is written. Otherwise it conflicts with what PostgreSQL holds (an
 * INSERT whose idempotency key another job took, a result whose row is missing): the file
 * is kept beside the spool as <name>.conflict for an operator, logged, and never replayed
 * or counted as written. 0 (already there), -EEXIST (set aside) or -EIO (ask again).
 */
static int replay_unchanged(struct db *db, const char *path, bool insert, const char *job_id,
                            const char *idem)
{
    const char *p[1] = {job_id};
    PGresult *r = db_exec(db, JOBSTORE_SQL_STATUS, 1, p);
    if (!r)
        return -EIO;
    bool there = PQntuples(r) == 1;
    bool finished = there && strcmp(PQgetvalue(r, 0, 0), "queued") != 0 &&
                    strcmp(PQgetvalue(r, 0, 0), "running") != 0;
    PQclear(r);
    if (insert ? there : finished) {
        log_info("msg=\"spooled record was already written\" job=%s path=%s", job_id, path);
        return 0;
    }
    char aside[4600];
    snprintf(aside, sizeof aside, "%s.conflict", path);
    if (rename(path, aside) < 0) {
        log_error("msg=\"rename of a conflicting spooled record failed\" path=%s err=\"%s\"", path,
                  strerror(errno));
        return -EIO;
    }
    if (insert)
        log_crit("msg=\"spooled job record conflicts with PostgreSQL: not written, kept\""
                 " job=%s idempotency_key=%s kept=%s",
                 job_id, idem ? idem : "", aside);
    else
        log_crit("msg=\"spooled job result has no record to finish: not written, kept\""
                 " job=%s kept=%s",
                 job_id, aside);
    return -EEXIST;
}

static int replay_file(struct db *db, const char *path, bool insert)
{
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (!doc) {
        log_error("msg=\"unreadable spooled record; keeping it\" path=%s err=\"%s\"", path,
                  jerr.text);
        return -EINVAL;
    }
    const char *p[JOBS_INSERT_NPARAMS];
    int n = dbspool_doc_params(doc, p, JOBS_INSERT_NPARAMS);
    if (!insert && n < JOBS_FINISH_NPARAMS + JOBS_FENCE_NPARAMS)
        n = JOBS_FINISH_NPARAMS + JOBS_FENCE_NPARAMS; /* spooled before the fence: none */
    PGresult *r = db_exec(db, insert ? jobstore_sql_insert() : jobstore_sql_finish(), n, p);
    int rc = r ? 0 : -EIO;
    /* Both statements return a row when they changed one. None is not "written":
     * ON CONFLICT DO NOTHING and the UPDATE's status guard say nothing of why. */
    if (r && PQntuples(r) == 0 && p[0]) {
        PQclear(r);
        int idem = jobstore_insert_param("idempotency_key");
        rc = replay_unchanged(db, path, insert, p[0],
                              insert && idem >= 0 && idem < n ? p[idem] : NULL);
        if (rc < 0) {
            json_decref(doc);
            return rc;
        }
        r = NULL;
    }
    PQclear(r);
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(doc, "artifacts"), i, a)
    {
        if (rc < 0)
            break;
        const char *b64 = json_string_value(json_object_get(a, "data"));
        size_t blen = b64 ? strlen(b64) : 0;
        unsigned char *raw = malloc(blen / 4 * 3 + 4);
        int len =
            raw ? EVP_DecodeBlock(raw, (const unsigned char *)(b64 ? b64 : ""), (int)blen) : -1;
        if (len >= 0 && blen >= 1 && b64[blen - 1] == '=')
            len--;
        if (len >= 0 && blen >= 2 && b64[blen - 2] == '=')
            len--;
        char size[24];
        snprintf(size, sizeof size, "%d", len < 0 ? 0 : len);
        const char *ap[6] = {p[0],
                             json_string_value(json_object_get(a, "name")),
                             size,
                             json_string_value(json_object_get(a, "sha256")),
                             json_string_value(json_object_get(a, "content_type")),
                             (const char *)raw};
        int lengths[6] = {0, 0, 0, 0, 0, len < 0 ? 0 : len};
        int formats[6] = {0, 0, 0, 0, 0, 1};
        PGresult *ar =
            len >= 0 ? db_exec_bin(db, JOBS_SQL_ARTIFACT, 6, ap, lengths, formats) : NULL;
        rc = ar ? 0 : -EIO;
        PQclear(ar);
        free(raw);
    }
    json_decref(doc);
    if (rc < 0)
        log_warn("msg=\"replaying a spooled record failed; will retry\" path=%s err=\"%s\"", path,
                 db_last_error(db));
    return rc;
}

/* INSERTs first (a result must find its row), then results. */
int dbspool_replay(struct db *db)
{
    const char *dir = spool_dir;
    int left = 0, done = 0, conflicts = 0;
    for (int pass = 0; pass < 2; pass++) {
        DIR *d = opendir(dir);
        if (!d)
            return 0;
        const char *want = pass == 0 ? ".insert" : ".final";
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            size_t n = strlen(de->d_name), w = strlen(want);
            if (n <= w || strcmp(de->d_name + n - w, want) != 0)
                continue;
            char path[4500];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            if (pass == 1) { /* its INSERT did not go through yet: wait behind it */
                char id[64];
                snprintf(id, sizeof id, "%.*s", (int)(n - w), de->d_name);
                if (dbspool_has_insert(id)) {
                    left++;
                    continue;
                }
            }
            int rc = replay_file(db, path, pass == 0);
            if (rc == 0) {
                unlink(path);
                done++;
            } else if (rc == -EEXIST) {
                conflicts++; /* set aside as .conflict (replay_unchanged) */
            } else {
                left++;
            }
        }
        closedir(d);
    }
    if (done || conflicts)
        log_info("msg=\"spooled records written to PostgreSQL\" count=%d conflicts=%d left=%d",
                 done, conflicts, left);
    return left;
}

int dbspool_count(void)
{
    const char *dir = spool_dir;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n +=
            de->d_name[0] != '.' && !strstr(de->d_name, ".tmp") && !strstr(de->d_name, ".conflict");
    closedir(d);
    return n;
}
