/*
 * http.c — the CLI's HTTP client: one libcurl easy handle per request, JSON bodies,
 * X-API-Key, the headers the CLI reads back (ETag, Content-Type, X-Correlation-ID), and an
 * elapsed-time line on stderr while a long request runs (only when stderr is a TTY).
 */
#include "tako.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#ifndef TAKO_VERSION
#define TAKO_VERSION "0.0.0"
#endif

#define HTTP_MAX_BODY (256u << 20) /* artifacts are at most 10 MB by default */

double mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

char *http_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    char *copy = e ? strdup(e) : NULL;
    curl_free(e);
    return copy;
}

struct sink {
    struct http_resp *r;
    bool too_big;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t add = size * n;
    if (s->r->len + add > HTTP_MAX_BODY) {
        s->too_big = true;
        return 0;
    }
    char *grown = realloc(s->r->body, s->r->len + add + 1);
    if (!grown)
        return 0;
    memcpy(grown + s->r->len, p, add);
    s->r->body = grown;
    s->r->len += add;
    s->r->body[s->r->len] = '\0';
    return add;
}

/* Copy a header's value (trimmed, quotes removed for ETag) when its name matches. */
static void header_value(const char *line, size_t n, const char *name, char *out, size_t olen,
                         bool unquote)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1, *end = line + n;
    while (v < end && isspace((unsigned char)*v))
        v++;
    while (end > v && isspace((unsigned char)end[-1]))
        end--;
    if (unquote && end - v >= 2 && *v == '"' && end[-1] == '"') {
        v++;
        end--;
    }
    snprintf(out, olen, "%.*s", (int)(end - v), v);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct http_resp *r = ud;
    size_t len = size * n;
    header_value(p, len, "ETag", r->etag, sizeof r->etag, true);
    header_value(p, len, "Content-Type", r->content_type, sizeof r->content_type, false);
    header_value(p, len, "X-Correlation-ID", r->correlation_id, sizeof r->correlation_id, false);
    header_value(p, len, "Retry-After", r->retry_after, sizeof r->retry_after, false);
    return len;
}

struct progress {
    const struct http_client *c;
    long last_shown;
};

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct progress *p = ud;
    if (p->c->tick)
        p->c->tick(p->c->tick_ud);
    if (!p->c->progress)
        return 0;
    long elapsed = (long)(mono_seconds() - p->c->progress_start);
    if (elapsed != p->last_shown && elapsed >= 1) {
        p->last_shown = elapsed;
        fprintf(stderr, "\r\033[K%s %lds", p->c->progress_label ? p->c->progress_label : "",
                elapsed);
        fflush(stderr);
    }
    return 0;
}

int http_request(const struct http_client *c, const char *method, const char *path,
                 const char *body, long timeout_s, struct http_resp *r)
{
    return http_request_raw(c, method, path, body, body ? strlen(body) : 0,
                            body ? "application/json" : NULL, timeout_s, r);
}

int http_request_raw(const struct http_client *c, const char *method, const char *path,
                     const void *body, size_t body_len, const char *content_type, long timeout_s,
                     struct http_resp *r)
{
    memset(r, 0, sizeof *r);
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(r->err, sizeof r->err, "curl_easy_init failed");
        return -1;
    }
    char *url = NULL, keyhdr[1100], cthdr[160], errbuf[CURL_ERROR_SIZE] = "";
    if (asprintf(&url, "%s%s", c->base_url, path) < 0) {
        curl_easy_cleanup(h);
        snprintf(r->err, sizeof r->err, "out of memory");
        return -1;
    }
    struct curl_slist *hdrs = NULL;
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (body && content_type) {
        snprintf(cthdr, sizeof cthdr, "Content-Type: %s", content_type);
        hdrs = curl_slist_append(hdrs, cthdr);
    }
    if (c->api_key && *c->api_key) {
        snprintf(keyhdr, sizeof keyhdr, "X-API-Key: %s", c->api_key);
        hdrs = curl_slist_append(hdrs, keyhdr);
    }
    hdrs = curl_slist_append(hdrs, "Expect:"); /* no 100-continue round trip */
    struct sink sink = {.r = r};
    struct progress prog = {.c = c, .last_shown = -1};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "tako/" TAKO_VERSION);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s > 0 ? timeout_s : 60L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    if (c->progress || c->tick) {
        curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(h, CURLOPT_XFERINFODATA, &prog);
    }
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    } else {
        r->status = 0;
        snprintf(r->err, sizeof r->err, "%s",
                 sink.too_big ? "the answer is too large"
                 : errbuf[0]  ? errbuf
                              : curl_easy_strerror(rc));
    }
    if (!r->body) {
        r->body = calloc(1, 1);
        r->len = 0;
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(url);
    return rc == CURLE_OK ? 0 : -1;
}

void http_resp_free(struct http_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}
