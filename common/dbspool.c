/*
 * dbspool.c — see dbspool.h.
 */
#include "tako/dbspool.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *const JOBS_SQL_INSERT =
    "INSERT INTO jobs (id, status, job_type, code, input, timeout_s, memory_bytes, cpus,"
    " node, client_ip, correlation_id, created_at, mode, idempotency_key, request_hash,"
    " parent_id, relationship, code_hash, input_hash, stdin, startup_timeout_s,"
    " callback_url, callback_status, api_key_id, input_files, requirements)"
    " VALUES ($1, 'queued', $2, $3, $4::jsonb, $5::integer, $6::bigint,"
    " $7::double precision, $8, $9, $10, to_timestamp($11::double precision / 1e6), $12,"
    " $13, $14, $15::uuid, $16, $17, $18, $19, $20::integer, $21,"
    " CASE WHEN $21::text IS NULL THEN NULL ELSE 'pending' END, $22, $23::jsonb, $24::jsonb)"
    " ON CONFLICT DO NOTHING RETURNING id";

const char *const JOBS_SQL_FINISH =
    "UPDATE jobs SET status = $2, ended_at = to_timestamp($14::double precision / 1e6),"
    " exit_code = $3::integer, stdout = $4, stderr = $5, stdout_truncated = $6::boolean,"
    " stderr_truncated = $7::boolean, output = $8::jsonb, error = $9::jsonb,"
    " timing = $10::jsonb, artifacts = $11::jsonb, runtime = $12, container_id = $13,"
    " started_at = coalesce(started_at, to_timestamp($15::double precision / 1e6))"
    " WHERE id = $1 AND status IN ('queued', 'running') RETURNING callback_url";

const char *const JOBS_SQL_ARTIFACT =
    "INSERT INTO artifacts (job_id, name, size_bytes, sha256, content_type, data)"
    " VALUES ($1, $2, $3::bigint, $4, $5, $6)"
    " ON CONFLICT (job_id, name) DO UPDATE SET size_bytes = EXCLUDED.size_bytes,"
    " sha256 = EXCLUDED.sha256, content_type = EXCLUDED.content_type, data = EXCLUDED.data";

static void spool_path(char *buf, size_t len, const char *job_id, const char *kind)
{
    snprintf(buf, len, "%s/dbspool/%s.%s", tk.cfg.server_data_dir, job_id, kind);
}

static json_t *params_json(const char *const *params, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, params[i] ? json_string(params[i]) : json_null());
    return a;
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
    return write_doc(job_id, "insert",
                     json_pack("{s:o}", "params", params_json(params, JOBS_INSERT_NPARAMS)));
}

int dbspool_write_final(const char *job_id, const char *const *params, json_t *artifacts)
{
    return write_doc(job_id, "final",
                     json_pack("{s:o, s:o}", "params", params_json(params, JOBS_FINISH_NPARAMS),
                               "artifacts", artifacts ? artifacts : json_array()));
}

bool dbspool_has_insert(const char *job_id)
{
    char path[4300];
    spool_path(path, sizeof path, job_id, "insert");
    return access(path, F_OK) == 0;
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
    json_t *params = json_object_get(doc, "params");
    const char *p[JOBS_INSERT_NPARAMS] = {0};
    size_t n = json_array_size(params);
    for (size_t i = 0; i < n && i < JOBS_INSERT_NPARAMS; i++)
        p[i] = json_string_value(json_array_get(params, i));
    PGresult *r = db_exec(db, insert ? JOBS_SQL_INSERT : JOBS_SQL_FINISH, (int)n, p);
    int rc = r ? 0 : -EIO;
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
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/dbspool", tk.cfg.server_data_dir);
    int left = 0, done = 0;
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
            if (replay_file(db, path, pass == 0) == 0) {
                unlink(path);
                done++;
            } else {
                left++;
            }
        }
        closedir(d);
    }
    if (done)
        log_info("msg=\"spooled records written to PostgreSQL\" count=%d left=%d", done, left);
    return left;
}

int dbspool_count(void)
{
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/dbspool", tk.cfg.server_data_dir);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.' && !strstr(de->d_name, ".tmp");
    closedir(d);
    return n;
}
