/*
 * routes.c — the acceptor's route table and its dispatcher: which handler answers a
 * method and path, and the checks every request passes before one does (sound headers,
 * a correlation id, rate limit and authentication). The handlers live in api_*.c.
 */
#include "routes.h"
#include "auth.h"
#include "conns.h"
#include "http.h"
#include "tako/log.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A flat table of (method, pattern): a "{}" segment matches one path segment and is
 * passed to the handler. A path that matches a pattern with another method is a 405 with
 * Allow listing the methods that would match. The index is the metrics' route label.
 */
static const struct route {
    enum evhttp_cmd_type method;
    const char *pattern;
    route_fn fn;
} routes[] = {
    {EVHTTP_REQ_POST, "/execute", api_execute},
    {EVHTTP_REQ_POST, "/execute/async", api_execute_async},
    {EVHTTP_REQ_GET, "/jobs/{}", api_job_status},
    {EVHTTP_REQ_GET, "/jobs/{}/result", api_job_result},
    {EVHTTP_REQ_POST, "/jobs/{}/cancel", api_job_cancel},
    {EVHTTP_REQ_POST, "/jobs/{}/rerun", api_job_rerun},
    {EVHTTP_REQ_POST, "/jobs/{}/fork", api_job_fork},
    {EVHTTP_REQ_GET, "/jobs/{}/events", api_job_events},
    {EVHTTP_REQ_GET, "/jobs/{}/artifacts/{}", api_artifact},
    {EVHTTP_REQ_HEAD, "/jobs/{}/artifacts/{}", api_artifact},
    {EVHTTP_REQ_GET, "/executions", api_executions},
    {EVHTTP_REQ_GET, "/executions/{}", api_execution},
    {EVHTTP_REQ_GET, "/job-types", api_job_types},
    {EVHTTP_REQ_GET, "/job-types/{}", api_job_type},
    {EVHTTP_REQ_POST, "/job-types/{}/build", api_job_type_build},
    {EVHTTP_REQ_GET, "/health", api_health},
    {EVHTTP_REQ_GET, "/nodes", api_nodes},
    {EVHTTP_REQ_GET, "/pool/stats", api_pool_stats},
    {EVHTTP_REQ_GET, "/dlq/stats", api_dlq_stats},
    {EVHTTP_REQ_GET, "/dlq", api_dlq_list},
    {EVHTTP_REQ_DELETE, "/dlq/{}", api_dlq_delete},
    {EVHTTP_REQ_GET, "/metrics", api_metrics},
    {EVHTTP_REQ_GET, "/openapi.json", api_openapi},
    {EVHTTP_REQ_GET, "/audit/verify", api_audit_verify},
    /* sessions (docs/SESSIONS.md): all answered by the sessions process (api_sessions.c) */
    {EVHTTP_REQ_POST, "/sessions", api_sessions},
    {EVHTTP_REQ_GET, "/sessions", api_sessions},
    {EVHTTP_REQ_GET, "/sessions/{}", api_sessions},
    {EVHTTP_REQ_DELETE, "/sessions/{}", api_sessions},
    {EVHTTP_REQ_POST, "/sessions/{}/execute", api_sessions},
    {EVHTTP_REQ_POST, "/sessions/{}/interrupt", api_sessions},
    {EVHTTP_REQ_GET, "/sessions/{}/events", api_sessions},
    {EVHTTP_REQ_GET, "/sessions/{}/cells", api_sessions},
    {EVHTTP_REQ_GET, "/sessions/{}/files", api_sessions},
    {EVHTTP_REQ_PUT, "/sessions/{}/files/{*}", api_sessions},
    {EVHTTP_REQ_GET, "/sessions/{}/files/{*}", api_sessions},
    {EVHTTP_REQ_HEAD, "/sessions/{}/files/{*}", api_sessions},
    {EVHTTP_REQ_DELETE, "/sessions/{}/files/{*}", api_sessions},
};

#define MAX_PARAMS 4

const char *routes_name(int idx)
{
    return idx >= 0 && idx < (int)TK_ARRAY_LEN(routes) ? routes[idx].pattern : "other";
}

const char *routes_method(int idx)
{
    return idx >= 0 && idx < (int)TK_ARRAY_LEN(routes) ? http_method_name(routes[idx].method)
                                                       : "other";
}

int routes_count(void)
{
    return (int)TK_ARRAY_LEN(routes);
}

/* Match `path` against `pattern`; captured segments go to params (heap, decoded). */
static bool route_match(const char *pattern, const char *path, char **params, int *np)
{
    *np = 0;
    while (*pattern && *path) {
        if (*pattern != '/' || *path != '/')
            return false;
        pattern++;
        path++;
        size_t plen = strcspn(pattern, "/"), slen = strcspn(path, "/");
        if (plen == 3 && !strncmp(pattern, "{*}", 3)) { /* the rest of the path, >= 1 byte */
            if (!*path || *np >= MAX_PARAMS)
                return false;
            params[(*np)++] = evhttp_uridecode(path, 0, NULL);
            return pattern[3] == '\0';
        }
        if (plen == 2 && !strncmp(pattern, "{}", 2)) {
            if (slen == 0 || *np >= MAX_PARAMS)
                return false;
            char *seg = strndup(path, slen);
            params[(*np)++] = seg ? evhttp_uridecode(seg, 0, NULL) : NULL;
            free(seg);
        } else if (plen != slen || strncmp(pattern, path, plen) != 0) {
            return false;
        }
        pattern += plen;
        path += slen;
    }
    return !*pattern && !*path;
}

static void free_params(char **params, int n)
{
    for (int i = 0; i < n; i++)
        free(params[i]);
}

/* The route (path and method) a request matched, for metrics; -1 ("other") if none. */
int routes_index(struct evhttp_request *req)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    for (size_t i = 0; path && i < TK_ARRAY_LEN(routes); i++) {
        char *params[MAX_PARAMS] = {0};
        int np = 0;
        bool match = route_match(routes[i].pattern, path, params, &np);
        free_params(params, np);
        if (match && routes[i].method == m)
            return (int)i;
    }
    return -1;
}

static void correlation_id(struct evhttp_request *req, char *out, size_t len)
{
    const char *in = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Correlation-ID");
    if (in && *in && strlen(in) < len && strlen(in) <= 64) {
        bool ok = true;
        for (const char *p = in; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
                ok = false;
        if (ok) {
            snprintf(out, len, "%s", in);
            return;
        }
    }
    uuid_v4(out);
}

/* A header evhttp accepted that HTTP does not: an empty name, a name that is not a token,
 * or a control byte (other than tab) in a value. NULL when every header is sound. */
static const char *bad_header(struct evhttp_request *req)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, evhttp_request_get_input_headers(req), next)
    {
        if (!kv->key[0])
            return "Invalid header: empty name";
        for (const unsigned char *p = (const unsigned char *)kv->key; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || (*p && strchr(tchar, *p))))
                return "Invalid header: the name is not a token";
        for (const unsigned char *p = (const unsigned char *)kv->value; *p; p++)
            if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
                return "Invalid header: control character in the value";
    }
    return NULL;
}

/* PUT /sessions/{id}/files/{path}: the one route whose body may be larger than
 * limits.max_payload_bytes (up to sessions.max_file_bytes). */
static bool is_session_upload(struct evhttp_request *req)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (evhttp_request_get_command(req) != EVHTTP_REQ_PUT || !path)
        return false;
    char *params[MAX_PARAMS] = {0};
    int np = 0;
    bool match = route_match("/sessions/{}/files/{*}", path, params, &np);
    free_params(params, np);
    return match;
}

void routes_dispatch(struct evhttp_request *req, void *arg)
{
    char corr[72];
    conns_request_started(req);
    const char *bad = bad_header(req);
    if (bad) {
        uuid_v4(corr);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_error(req, 400, corr, bad);
        return;
    }
    correlation_id(req, corr, sizeof corr);
    /* evhttp's own bound on a body is the largest any route takes (a session file's
     * upload); every other route keeps limits.max_payload_bytes */
    if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) >
            (size_t)tk.cfg.limits_max_payload_bytes &&
        !is_session_upload(req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_error(req, 413, corr, "Request body too large (limits.max_payload_bytes)");
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m == EVHTTP_REQ_CONNECT) { /* not a proxy; evhttp would keep the connection open */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_error(req, 501, corr, "Not Implemented: takod is not a proxy");
        return;
    }
    if (!path)
        path = "/";
    log_debug("msg=\"request\" method=%s path=%s corr=%s", http_method_name(m), path, corr);
    char allow[64] = "";
    for (size_t i = 0; i < TK_ARRAY_LEN(routes); i++) {
        char *params[MAX_PARAMS] = {0};
        int np = 0;
        bool match = route_match(routes[i].pattern, path, params, &np);
        if (match && routes[i].method == m) {
            /* /health is always open; /metrics when auth.metrics_public */
            bool open = routes[i].fn == api_health ||
                        (routes[i].fn == api_metrics && tk.cfg.auth_metrics_public);
            if (auth_gate(req, corr, open))
                routes[i].fn(req, corr, params);
            free_params(params, np);
            return;
        }
        free_params(params, np);
        if (match && strlen(allow) + 10 < sizeof allow &&
            !strstr(allow, http_method_name(routes[i].method))) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, http_method_name(routes[i].method));
        }
    }
    if (allow[0]) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        reply_error(req, 405, corr, "Method Not Allowed");
        return;
    }
    reply_error(req, 404, corr, "Not Found");
}
