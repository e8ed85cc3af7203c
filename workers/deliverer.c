/*
 * deliverer.c — the callbacks process: it delivers callback_url POSTs, so no executor
 * ever waits on a receiver (callbacks.h says what is promised).
 *
 * The loop: claim due deliveries from PostgreSQL (FOR UPDATE SKIP LOCKED, a lease in
 * next_at, so two processes — a reload's generations, or several nodes — never send one
 * at once, and one this process held when it died goes out again when the lease ends),
 * send them all at once with libcurl multi, and record each outcome as it ends. Every
 * attempt is bounded (callbacks.connect_timeout_ms, callbacks.timeout_ms); at most
 * callbacks.max_in_flight are in flight. Unless callbacks.allow_private_addresses, every
 * address a name resolves to is checked before the socket is opened.
 *
 * The body is the job's answer, built when it is sent by the one builder (job_answer)
 * from the job's record (JOBSTORE_SQL_RECORD): the database queues a delivery without a
 * body (migration 11), so a callback and POST /execute cannot answer a job differently.
 */
#include "tako/bgchild.h"
#include "tako/callbacks.h"
#include "tako/db.h"
#include "tako/jobstore.h"
#include "tako/log.h"
#include "tako/metrics.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_MS        500            /* how often due deliveries are looked for */
#define LEASE_SLACK_MS 30000          /* a claim outlives its attempt's bound by this */
#define BACKOFF_MAX_MS (3600 * 1000u) /* the longest wait between two attempts */

struct delivery {
    struct delivery *next;
    CURL *h;
    struct curl_slist *hdrs;
    char job_id[40];
    char *url, *body;
    int attempt;       /* this one's number (the row's attempts after the claim) */
    char refused[128]; /* the address the check refused, if it did */
};

static struct {
    struct db *db;
    CURLM *multi;
    struct delivery *inflight;
    int n_inflight;
} D;

static void delivery_free(struct delivery *d)
{
    if (d->h) {
        curl_multi_remove_handle(D.multi, d->h);
        curl_easy_cleanup(d->h);
    }
    curl_slist_free_all(d->hdrs);
    free(d->url);
    free(d->body);
    free(d);
}

/* libcurl asks for each socket it would connect: the check on the address it resolved */
static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct delivery *d = arg;
    (void)purpose;
    if (!tk.cfg.callbacks_allow_private_addresses && !callbacks_addr_global(&a->addr)) {
        char ip[INET6_ADDRSTRLEN] = "?";
        if (a->family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&a->addr)->sin_addr, ip, sizeof ip);
        else if (a->family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&a->addr)->sin6_addr, ip,
                      sizeof ip);
        snprintf(d->refused, sizeof d->refused, "%s", ip);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static size_t discard(char *p, size_t size, size_t nmemb, void *arg)
{
    (void)p;
    (void)arg;
    return size * nmemb;
}

static int start(struct delivery *d)
{
    d->h = curl_easy_init();
    d->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *more = d->hdrs ? curl_slist_append(d->hdrs, "User-Agent: takod") : NULL;
    if (!d->h || !more)
        return -ENOMEM;
    d->hdrs = more;
    CURL *h = d->h;
    curl_easy_setopt(h, CURLOPT_URL, d->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect could go anywhere */
    curl_easy_setopt(h, CURLOPT_PROXY, "");          /* straight to the receiver: no *_proxy */
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, d->body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, d->hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)tk.cfg.callbacks_connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)tk.cfg.callbacks_timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, d);
    curl_easy_setopt(h, CURLOPT_PRIVATE, d);
    if (curl_multi_add_handle(D.multi, h) != CURLM_OK)
        return -ENOMEM;
    return 0;
}

/*
 * Record one attempt. state: delivered | pending (retry after delay_ms) | failed. Fenced
 * by the attempt number: if the lease ran out and another process claimed the row since,
 * its record wins. The job's callback_status follows the row's state.
 */
static void record(const struct delivery *d, const char *state, long http_status, const char *err,
                   uint64_t delay_ms)
{
    char code[24], delay[24], attempt[16];
    snprintf(code, sizeof code, "%ld", http_status);
    snprintf(delay, sizeof delay, "%llu", (unsigned long long)delay_ms);
    snprintf(attempt, sizeof attempt, "%d", d->attempt);
    const char *p[6] = {d->job_id, state, http_status ? code : NULL, err, delay, attempt};
    PGresult *r = db_exec(
        D.db,
        "WITH d AS (UPDATE callback_deliveries SET state = $2, last_http_status = $3::integer,"
        " last_error = $4, delivered_at = CASE WHEN $2 = 'delivered' THEN now() END,"
        " next_at = CASE WHEN $2 = 'pending' THEN now() + $5::bigint * interval '1 millisecond'"
        " ELSE next_at END"
        " WHERE job_id = $1::uuid AND attempts = $6::integer AND state = 'pending'"
        " RETURNING job_id, state)"
        " UPDATE jobs SET callback_status = d.state FROM d WHERE jobs.id = d.job_id"
        " AND jobs.callback_status IS DISTINCT FROM d.state",
        6, p);
    if (!r)
        log_error("msg=\"recording a callback attempt failed; it goes again when its lease "
                  "ends\" job=%s err=\"%s\"",
                  d->job_id, db_last_error(D.db));
    PQclear(r);
}

static uint64_t backoff_ms(int attempt) /* before attempt + 1 */
{
    uint64_t ms = (uint64_t)tk.cfg.callbacks_backoff_ms;
    for (int i = 1; i < attempt && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < BACKOFF_MAX_MS ? ms : BACKOFF_MAX_MS;
}

static void finished(struct delivery *d, CURLcode cc)
{
    long code = 0;
    curl_easy_getinfo(d->h, CURLINFO_RESPONSE_CODE, &code);
    char why[512];
    if (d->refused[0]) {
        snprintf(why, sizeof why,
                 "refused: %s is a loopback, link-local, private or other non-global address "
                 "(callbacks.allow_private_addresses)",
                 d->refused);
        log_warn("msg=\"callback refused\" job=%s url=%s addr=%s", d->job_id, d->url, d->refused);
        metrics_callback(shm_metrics(tk.shm), METRICS_CB_REFUSED);
        record(d, "failed", 0, why, 0);
        return;
    }
    if (cc == CURLE_OK && code >= 200 && code < 300) {
        log_info("msg=\"callback delivered\" job=%s attempt=%d status=%ld", d->job_id, d->attempt,
                 code);
        metrics_callback(shm_metrics(tk.shm), METRICS_CB_DELIVERED);
        record(d, "delivered", code, NULL, 0);
        return;
    }
    if (cc != CURLE_OK)
        snprintf(why, sizeof why, "%s", curl_easy_strerror(cc));
    else
        snprintf(why, sizeof why, "HTTP %ld", code);
    if (d->attempt >= tk.cfg.callbacks_max_attempts) {
        log_warn("msg=\"callback failed; giving up\" job=%s url=%s attempts=%d err=\"%s\"",
                 d->job_id, d->url, d->attempt, why);
        metrics_callback(shm_metrics(tk.shm), METRICS_CB_FAILED);
        record(d, "failed", code, why, 0);
        return;
    }
    uint64_t delay = backoff_ms(d->attempt);
    log_info("msg=\"callback failed; will retry\" job=%s attempt=%d retry_in_ms=%llu err=\"%s\"",
             d->job_id, d->attempt, (unsigned long long)delay, why);
    metrics_callback(shm_metrics(tk.shm), METRICS_CB_RETRY);
    record(d, "pending", code, why, delay);
}

/* The job's answer from its record, as POST /execute sends it (reply_json's text), or
 * NULL (logged). */
static char *answer_body(const char *job_id)
{
    const char *p[2] = {job_id, NULL};
    PGresult *r = db_exec(D.db, JOBSTORE_SQL_RECORD, 2, p);
    if (!r || PQntuples(r) != 1) {
        log_error("msg=\"reading the job's record for its callback failed; it goes again when its "
                  "lease ends\" job=%s err=\"%s\"",
                  job_id, r ? "no such record" : db_last_error(D.db));
        PQclear(r);
        return NULL;
    }
    struct job_row row;
    jobstore_row_from_record(&row, r, 0);
    json_t *answer = job_answer(&row);
    jobstore_row_release(&row);
    PQclear(r);
    char *body = json_dumps(answer, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(answer);
    if (!body)
        log_error("msg=\"out of memory building a callback's body\" job=%s", job_id);
    return body;
}

/* Claim up to `room` due deliveries and start them. Returns how many were claimed, or
 * -EIO when the database did not answer. */
static int claim(int room)
{
    char lim[16], lease[24];
    snprintf(lim, sizeof lim, "%d", room);
    snprintf(lease, sizeof lease, "%lld",
             (long long)tk.cfg.callbacks_timeout_ms + (long long)LEASE_SLACK_MS);
    const char *p[2] = {lim, lease};
    PGresult *r = db_exec(
        D.db,
        "UPDATE callback_deliveries d SET attempts = d.attempts + 1, last_attempt_at = now(),"
        " next_at = now() + $2::bigint * interval '1 millisecond'"
        " FROM (SELECT job_id FROM callback_deliveries WHERE state = 'pending'"
        " AND next_at <= now() ORDER BY next_at LIMIT $1::integer FOR UPDATE SKIP LOCKED) due"
        " WHERE d.job_id = due.job_id RETURNING d.job_id::text, d.url, d.attempts",
        2, p);
    static bool failing; /* an outage is logged once, not every second */
    if (!r) {
        if (!failing)
            log_error("msg=\"claiming due callbacks failed; retrying every second\" err=\"%s\"",
                      db_last_error(D.db));
        failing = true;
        return -EIO;
    }
    if (failing)
        log_info("msg=\"claiming due callbacks works again\"");
    failing = false;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) {
        struct delivery *d = calloc(1, sizeof *d);
        if (d) {
            snprintf(d->job_id, sizeof d->job_id, "%s", PQgetvalue(r, i, 0));
            d->url = strdup(PQgetvalue(r, i, 1));
            d->attempt = atoi(PQgetvalue(r, i, 2));
        }
        if (!d || !d->url) { /* its lease ends and it goes again */
            log_error("msg=\"out of memory starting a callback\" job=%s", PQgetvalue(r, i, 0));
            if (d)
                delivery_free(d);
            continue;
        }
        if (d->attempt > tk.cfg.callbacks_max_attempts) { /* the last one was cut short */
            record(d, "failed", 0, "gave up: the last attempt was interrupted", 0);
            metrics_callback(shm_metrics(tk.shm), METRICS_CB_FAILED);
            delivery_free(d);
            continue;
        }
        if (!(d->body = answer_body(d->job_id))) { /* logged; its lease ends and it goes again */
            delivery_free(d);
            continue;
        }
        if (start(d) < 0) {
            log_error("msg=\"starting a callback failed\" job=%s", d->job_id);
            delivery_free(d);
            continue;
        }
        d->next = D.inflight;
        D.inflight = d;
        D.n_inflight++;
    }
    PQclear(r);
    return n;
}

static void take_finished(void)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(D.multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct delivery *d = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&d);
        CURLcode cc = m->data.result;
        if (!d)
            continue;
        finished(d, cc);
        for (struct delivery **pp = &D.inflight; *pp; pp = &(*pp)->next)
            if (*pp == d) {
                *pp = d->next;
                break;
            }
        D.n_inflight--;
        delivery_free(d);
    }
}

/* Stopping: what is in flight goes back, due at once and its attempt not counted. */
static void hand_back(void)
{
    while (D.inflight) {
        struct delivery *d = D.inflight;
        D.inflight = d->next;
        char attempt[16];
        snprintf(attempt, sizeof attempt, "%d", d->attempt);
        const char *p[2] = {d->job_id, attempt};
        PGresult *r = db_exec(D.db,
                              "UPDATE callback_deliveries SET attempts = attempts - 1,"
                              " next_at = now() WHERE job_id = $1::uuid"
                              " AND attempts = $2::integer AND state = 'pending'",
                              2, p);
        PQclear(r);
        delivery_free(d);
    }
    D.n_inflight = 0;
}

int deliverer_main(int slot)
{
    bgchild_signals(NULL);
    struct tk_proc *me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(D.multi = curl_multi_init())) {
        log_error("msg=\"curl_multi_init failed\"");
        return 1;
    }
    uint64_t next_claim = 0, next_connect = 0;
    bool said_ready = false;
    while (!bgchild_stop) {
        bgchild_round(me);
        uint64_t now = now_mono_ms();
        if (!D.db && now >= next_connect) {
            char err[512];
            if (db_open(&D.db, tk.conninfo, err, sizeof err) < 0) {
                log_error("msg=\"database connect failed\" err=\"%s\"", err);
                D.db = NULL;
                next_connect = now + 1000;
            } else if (!said_ready) {
                said_ready = true;
                atomic_store(&me->ready, 1);
                log_info("msg=\"callbacks process ready\" slot=%d", slot);
            }
        }
        int room = (int)tk.cfg.callbacks_max_in_flight - D.n_inflight;
        if (D.db && room > 0 && now >= next_claim) {
            int n = claim(room);
            /* a full batch: more may be due at once */
            next_claim = n == room ? now : now + (n < 0 ? 1000 : POLL_MS);
        }
        int running = 0;
        curl_multi_perform(D.multi, &running);
        take_finished();
        now = now_mono_ms();
        int wait = POLL_MS;
        if (D.db && D.n_inflight < tk.cfg.callbacks_max_in_flight)
            wait = next_claim > now ? (int)(next_claim - now < POLL_MS ? next_claim - now : POLL_MS)
                                    : 0;
        if (wait > 0)
            curl_multi_poll(D.multi, NULL, 0, wait, NULL);
    }
    log_info("msg=\"callbacks process stopping\" slot=%d in_flight=%d", slot, D.n_inflight);
    if (D.db)
        hand_back();
    else
        while (D.inflight) {
            struct delivery *d = D.inflight;
            D.inflight = d->next;
            delivery_free(d);
        }
    curl_multi_cleanup(D.multi);
    db_close(D.db);
    return TK_EXIT_OK;
}
