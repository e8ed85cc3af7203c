/*
 * callbacks.c — see callbacks.h.
 */
#include "tako/callbacks.h"
#include "tako/log.h"
#include "tako/util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct callback {
    struct callback *next;
    char job_id[40];
    char *url, *body;
    int attempts;
    uint64_t due_ms;
};

static const unsigned backoff_ms[] = {1000, 5000, 25000};
#define MAX_ATTEMPTS 3
#define MAX_QUEUED   256

int callbacks_url_ok(const char *url)
{
    size_t n = strlen(url);
    if (n == 0 || n > 2048 || (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)))
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f)
            return 0;
    return 1;
}

static void record(struct db *db, const char *job_id, const char *status)
{
    const char *p[2] = {job_id, status};
    PGresult *r = db_exec(db, "UPDATE jobs SET callback_status = $2 WHERE id = $1", 2, p);
    PQclear(r);
}

static void drop(struct callback *c)
{
    free(c->url);
    free(c->body);
    free(c);
}

void callbacks_add(struct callbacks *q, const char *job_id, char *url, char *body)
{
    struct callback *c = calloc(1, sizeof *c);
    if (!c || !body) {
        free(url);
        free(body);
        free(c);
        return;
    }
    snprintf(c->job_id, sizeof c->job_id, "%s", job_id);
    c->url = url;
    c->body = body;
    c->due_ms = now_mono_ms();
    struct callback **pp = &q->head;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    q->n++;
    if (q->n > MAX_QUEUED) { /* the oldest goes */
        struct callback *old = q->head;
        q->head = old->next;
        q->n--;
        log_warn("msg=\"too many undelivered callbacks; dropping one\" job=%s", old->job_id);
        drop(old);
    }
}

static size_t discard(char *p, size_t size, size_t nmemb, void *arg)
{
    return size * nmemb;
}

/* One POST; true when the receiver answered 2xx. */
static bool post(const struct callback *c, char *why, size_t wlen)
{
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(why, wlen, "out of memory");
        return false;
    }
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "User-Agent: takod");
    curl_easy_setopt(h, CURLOPT_URL, c->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK) {
        snprintf(why, wlen, "%s", curl_easy_strerror(cc));
        return false;
    }
    if (code < 200 || code >= 300) {
        snprintf(why, wlen, "HTTP %ld", code);
        return false;
    }
    return true;
}

void callbacks_run(struct callbacks *q, struct db *db)
{
    uint64_t now = now_mono_ms();
    for (struct callback **pp = &q->head; *pp;) {
        struct callback *c = *pp;
        if (c->due_ms > now) {
            pp = &c->next;
            continue;
        }
        char why[256];
        bool ok = post(c, why, sizeof why);
        c->attempts++;
        if (ok || c->attempts >= MAX_ATTEMPTS) {
            if (ok)
                log_info("msg=\"callback delivered\" job=%s attempts=%d", c->job_id, c->attempts);
            else
                log_warn("msg=\"callback failed; giving up\" job=%s url=%s err=\"%s\"", c->job_id,
                         c->url, why);
            record(db, c->job_id, ok ? "delivered" : "failed");
            *pp = c->next;
            q->n--;
            drop(c);
            continue;
        }
        log_info("msg=\"callback failed; will retry\" job=%s attempt=%d err=\"%s\"", c->job_id,
                 c->attempts, why);
        c->due_ms = now_mono_ms() + backoff_ms[c->attempts - 1];
        pp = &c->next;
    }
}

void callbacks_abandon(struct callbacks *q, struct db *db)
{
    while (q->head) {
        struct callback *c = q->head;
        q->head = c->next;
        record(db, c->job_id, "failed");
        drop(c);
    }
    q->n = 0;
}
