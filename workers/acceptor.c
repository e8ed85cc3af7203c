/*
 * acceptor.c — one HTTP acceptor process: a libevent evhttp on the listening socket the
 * master bound (shared by all acceptors; no SO_REUSEPORT, so no connection is dropped on
 * reload). This file is the process: replies, request helpers, the route table,
 * completions from executors and stopping. The routes live in api_jobs.c and api_ops.c.
 *
 * A sync job's request is parked on its job slot until the executor's completion arrives
 * on this process's done ring (an eventfd wakes the loop); a long-poll is parked until
 * PostgreSQL announces the job's end (LISTEN/NOTIFY). Every parked request gets exactly
 * one reply, even when its client has gone (libevent then just frees it).
 */
#include "acceptor.h"
#include "conns.h"
#include "tako/jobs.h"
#include "tako/log.h"
#include "tako/metrics.h"
#include "tako/takod.h"
#include "tako/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <poll.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct acceptor_state A;

/* ---- routes ---- */

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
    {EVHTTP_REQ_GET, "/pool/stats", api_pool_stats},
    {EVHTTP_REQ_GET, "/dlq/stats", api_dlq_stats},
    {EVHTTP_REQ_GET, "/dlq", api_dlq_list},
    {EVHTTP_REQ_DELETE, "/dlq/{}", api_dlq_delete},
    {EVHTTP_REQ_GET, "/metrics", api_metrics},
    {EVHTTP_REQ_GET, "/openapi.json", api_openapi},
    {EVHTTP_REQ_GET, "/audit/verify", api_audit_verify},
};

#define MAX_PARAMS 4

const char *acceptor_route_name(int idx)
{
    return idx >= 0 && idx < (int)TK_ARRAY_LEN(routes) ? routes[idx].pattern : "other";
}

static const char *method_name(enum evhttp_cmd_type m);

const char *acceptor_route_method(int idx)
{
    return idx >= 0 && idx < (int)TK_ARRAY_LEN(routes) ? method_name(routes[idx].method) : "other";
}

int acceptor_route_count(void)
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
static int route_of(struct evhttp_request *req)
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

/* ---- replies ---- */

static void add_common_headers(struct evhttp_request *req, const char *corr)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (!evhttp_find_header(h, "Content-Type"))
        evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "X-Correlation-ID", corr);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    if (A.draining || A.stopping) /* this process is going away: no keep-alive */
        evhttp_add_header(h, "Connection", "close");
}

static void send_reply(struct evhttp_request *req, int code, const char *corr, struct evbuffer *buf)
{
    add_common_headers(req, corr);
    metrics_request(shm_metrics(tk.shm), route_of(req), code);
    evhttp_send_reply(req, code, NULL, buf);
}

void reply_raw(struct evhttp_request *req, int code, const char *corr, const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(buf, body, len);
    send_reply(req, code, corr, buf);
    evbuffer_free(buf);
}

void reply_json(struct evhttp_request *req, int code, const char *corr, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(body);
    if (!text) {
        reply_raw(req, 500, corr, "{\"detail\":\"out of memory\"}", 26);
        return;
    }
    reply_raw(req, code, corr, text, strlen(text));
    free(text);
}

/* A client's bytes reach error texts (a JSON parser's message quotes the bad input, a URL's
 * host is named): json_pack refuses invalid UTF-8 and would leave the answer without a
 * body, so every text that goes into an error answer is made valid here, in one place. */
static json_t *text_json(const char *s)
{
    char *clean = utf8_sanitize(s ? s : "", s ? strlen(s) : 0, NULL);
    json_t *j = json_string(clean ? clean : "");
    free(clean);
    return j;
}

json_t *error_body(const char *detail, const char *corr)
{
    return json_pack("{s:o, s:o}", "detail", text_json(detail), "correlation_id", text_json(corr));
}

json_t *errors_body(json_t *errors, const char *corr)
{
    return json_pack("{s:o, s:s}", "detail", errors, "correlation_id", corr);
}

void reply_error(struct evhttp_request *req, int code, const char *corr, const char *detail)
{
    reply_json(req, code, corr, error_body(detail, corr));
}

void reply_db_unavailable(struct evhttp_request *req, const char *corr, const char *detail)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    reply_json(req, 503, corr,
               json_pack("{s:s, s:s, s:s}", "detail", detail, "error_type", "database_unavailable",
                         "correlation_id", corr));
}

void reply_422(struct evhttp_request *req, const char *corr, json_t *errors)
{
    reply_json(req, 422, corr, errors_body(errors, corr));
}

void field_error(json_t *errors, const char *where, const char *field, const char *type,
                 const char *msg)
{
    json_array_append_new(errors, json_pack("{s:[o,o], s:o, s:s}", "loc", text_json(where),
                                            text_json(field), "msg", text_json(msg), "type", type));
}

void reply_field_error(struct evhttp_request *req, const char *corr, const char *where,
                       const char *field, const char *type, const char *msg)
{
    json_t *errors = json_array();
    field_error(errors, where, field, type, msg);
    reply_422(req, corr, errors);
}

json_t *body_parse(const char *body, size_t len, bool allow_empty, const char *corr, int *code,
                   json_t **reply)
{
    if (len == 0 && allow_empty)
        return json_object();
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        char detail[300];
        snprintf(detail, sizeof detail, "Invalid JSON body: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        *code = 400;
        *reply = error_body(detail, corr);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        json_t *errors = json_array();
        field_error(errors, "body", "body", "model_attributes_type",
                    "Input should be a JSON object");
        *code = 422;
        *reply = errors_body(errors, corr);
        return NULL;
    }
    return root;
}

json_t *body_object(struct evhttp_request *req, const char *corr, bool allow_empty)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    int code = 0;
    json_t *reply = NULL;
    json_t *root = body_parse(len ? (const char *)evbuffer_pullup(in, -1) : NULL, len, allow_empty,
                              corr, &code, &reply);
    if (!root)
        reply_json(req, code, corr, reply);
    return root;
}

void check_known_fields(json_t *obj, const char *const *known, json_t *errors)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        bool ok = false;
        for (const char *const *k = known; *k; k++)
            ok |= !strcmp(key, *k);
        if (!ok)
            field_error(errors, "body", key, "extra_forbidden", "Extra inputs are not permitted");
    }
}

char *query_param(struct evhttp_request *req, const char *name)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (!q)
        return NULL;
    struct evkeyvalq params;
    TAILQ_INIT(&params);
    if (evhttp_parse_query_str(q, &params) < 0)
        return NULL;
    const char *v = evhttp_find_header(&params, name);
    char *out = v ? strdup(v) : NULL;
    evhttp_clear_headers(&params);
    return out;
}

bool query_int(struct evhttp_request *req, const char *corr, const char *name, long long dflt,
               long long lo, long long hi, long long *out)
{
    char *v = query_param(req, name);
    *out = dflt;
    if (!v)
        return true;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    bool ok = !errno && end != v && !*end && n >= lo && n <= hi;
    free(v);
    if (!ok) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld", name, lo, hi);
        reply_field_error(req, corr, "query", name, "out_of_range", msg);
        return false;
    }
    *out = n;
    return true;
}

json_t *page_envelope(json_t *items, long long limit, long long offset, bool has_more)
{
    return json_pack("{s:o, s:I, s:I, s:b, s:I}", "items", items, "limit", (json_int_t)limit,
                     "offset", (json_int_t)offset, "has_more", has_more, "count",
                     (json_int_t)json_array_size(items));
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

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "OTHER";
    }
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

static void on_request(struct evhttp_request *req, void *arg)
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
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m == EVHTTP_REQ_CONNECT) { /* not a proxy; evhttp would keep the connection open */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        reply_error(req, 501, corr, "Not Implemented: takod is not a proxy");
        return;
    }
    if (!path)
        path = "/";
    log_debug("msg=\"request\" method=%s path=%s corr=%s", method_name(m), path, corr);
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
            !strstr(allow, method_name(routes[i].method))) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, method_name(routes[i].method));
        }
    }
    if (allow[0]) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        reply_error(req, 405, corr, "Method Not Allowed");
        return;
    }
    reply_error(req, 404, corr, "Not Found");
}

/* ---- completions ---- */

void fail_pending(uint32_t idx, int code, const char *detail)
{
    struct pending *p = &A.pending[idx];
    if (p->req) {
        reply_error(p->req, code, p->corr, detail);
        p->req = NULL;
        A.inflight--;
    }
    jobs_release(idx, &A.me->intent);
    acceptor_maybe_exit();
}

static void on_done(evutil_socket_t fd, short ev, void *arg)
{
    uint64_t n;
    if (read(fd, &n, sizeof n) < 0 && errno != EAGAIN)
        log_warn("msg=\"eventfd read failed\" err=\"%s\"", strerror(errno));
    uint64_t v;
    while (ring_pop(shm_done(tk.shm, (uint32_t)tk.proc_idx), &A.me->intent, &v) == 0) {
        uint32_t idx = shm_val_idx(v);
        struct tk_job *job = shm_job(tk.shm, idx);
        struct pending *p = &A.pending[idx];
        if (job->acceptor_gen == A.gen && p->req && p->token == job->req_token) {
            char dir[4096], path[4200];
            spool_job_dir(dir, sizeof dir, job->id);
            snprintf(path, sizeof path, "%s/response.json", dir);
            char *body = NULL;
            size_t len = 0;
            int rc = read_file(path, 256u << 20, &body, &len);
            if (rc == 0)
                reply_raw(p->req, 200, p->corr, body, len);
            else {
                log_error("msg=\"reading the response failed\" job=%s path=%s err=\"%s\"", job->id,
                          path, strerror(-rc));
                reply_error(p->req, 500, p->corr, "Execution error: the result was lost");
            }
            free(body);
            p->req = NULL;
            A.inflight--;
        }
        /* a completion for an earlier generation of this slot: the client left with it;
         * the record is in PostgreSQL. Either way we are done with the slot. */
        jobs_done_with(idx, &A.me->intent);
    }
    acceptor_maybe_exit();
}

/* ---- stopping ---- */

/* Leave the loop once nothing is held; 100 ms more lets the last replies flush. */
void acceptor_maybe_exit(void)
{
    /* a drain also waits for the connections it accepted (each bounded by its deadline) */
    if (A.inflight == 0 && (A.stopping || (A.draining && !A.bound && conns_open() == 0))) {
        struct timeval tv = {0, 100 * 1000};
        event_base_loopexit(A.base, &tv);
    }
}

static void stop_accepting(void)
{
    if (A.bound) {
        evhttp_del_accept_socket(A.http, A.bound); /* closes only our copy of the socket */
        A.bound = NULL;
    }
}

/*
 * A drain closes this process's copy of the listening socket only once the connections
 * already queued on it are taken (the listener accepts them on this loop), so that none
 * is reset at exit: a connect either gets an answer or, once every copy is closed, a
 * refusal. Bounded: under a steady stream of connects it closes after 2 s anyway.
 */
static void on_drain_accept(evutil_socket_t fd, short ev, void *arg)
{
    struct pollfd pfd = {.fd = tk.listen_fd, .events = POLLIN};
    bool queued = A.bound && poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
    if (queued && ++A.drain_polls < 400) {
        struct timeval tv = {0, 5 * 1000};
        evtimer_add(A.drain_timer, &tv);
        return;
    }
    stop_accepting();
    acceptor_maybe_exit();
}

static void on_stop_deadline(evutil_socket_t fd, short ev, void *arg)
{
    for (uint32_t i = 0; i < tk.shm->n_jobs; i++) {
        struct pending *p = &A.pending[i];
        if (p->req) {
            reply_error(p->req, 503, p->corr,
                        "takod is shutting down; the job's result is not known yet");
            p->req = NULL;
            A.inflight--;
        }
    }
    api_jobs_drop_waiters();
    acceptor_maybe_exit();
}

static void on_signal(evutil_socket_t sig, short ev, void *arg)
{
    if (sig == SIGUSR1) {
        log_reopen();
        return;
    }
    if (sig == SIGQUIT) { /* graceful: no new connections, finish what we hold */
        if (!A.draining && !A.stopping) {
            A.draining = true;
            A.drain_timer = evtimer_new(A.base, on_drain_accept, NULL);
            if (A.drain_timer)
                on_drain_accept(-1, 0, NULL);
            else
                stop_accepting();
            log_info("msg=\"acceptor draining\" inflight=%zu", A.inflight);
        }
        acceptor_maybe_exit();
        return;
    }
    /* TERM/INT: fast. Jobs not started yet end now; running ones are being killed by
     * their executors, whose completions we wait for (bounded). */
    if (A.stopping)
        return;
    A.stopping = true;
    stop_accepting();
    log_info("msg=\"acceptor stopping fast\" inflight=%zu", A.inflight);
    api_jobs_stop();
    struct timeval tv = {2, 500 * 1000};
    A.stop_timer = evtimer_new(A.base, on_stop_deadline, NULL);
    evtimer_add(A.stop_timer, &tv);
    on_done(tk.done_efd[tk.proc_idx], EV_READ, NULL);
}

/*
 * An acceptor takes connections only once it can serve them: its PostgreSQL connection is
 * up, or the wait is over (then /health says database_available=false). Until then
 * connects wait in the backlog for an acceptor that is ready.
 */
#define DB_WAIT_MS 10000

static void start_accepting(void)
{
    A.bound = evhttp_accept_socket_with_handle(A.http, tk.listen_fd);
    if (!A.bound) {
        log_error("msg=\"evhttp_accept_socket_with_handle failed\" fd=%d", tk.listen_fd);
        event_base_loopbreak(A.base);
        A.fatal = true;
        return;
    }
    atomic_store(&A.me->ready, 1);
    log_info("msg=\"acceptor ready\" slot=%d gen=%u database=%s", A.slot, A.gen,
             pgq_connected(A.pg) ? "up" : "down");
}

static void on_db_wait(evutil_socket_t fd, short ev, void *arg)
{
    if (A.draining || A.stopping)
        return;
    if (pgq_connected(A.pg) || (A.db_waited_ms += 20) >= DB_WAIT_MS) {
        if (!pgq_connected(A.pg))
            log_warn("msg=\"database not up; accepting anyway\" waited_ms=%d", DB_WAIT_MS);
        start_accepting();
        return;
    }
    struct timeval tv = {0, 20 * 1000};
    evtimer_add(A.db_timer, &tv);
}

int acceptor_main(int slot)
{
    A.slot = slot;
    A.gen = atomic_load(&shm_proc(tk.shm, (uint32_t)tk.proc_idx)->gen);
    A.me = shm_proc(tk.shm, (uint32_t)tk.proc_idx);
    A.pending = calloc(tk.shm->n_jobs, sizeof *A.pending);
    A.base = event_base_new();
    A.http = evhttp_new(A.base);
    if (!A.pending || !A.base || !A.http) {
        log_error("msg=\"acceptor init failed\" slot=%d", slot);
        return 1;
    }
    evhttp_set_max_body_size(A.http, (ev_ssize_t)tk.cfg.limits_max_payload_bytes);
    evhttp_set_max_headers_size(A.http, 16384);
    evhttp_set_timeout(A.http, (int)tk.cfg.server_request_timeout);
    /* No EVHTTP_SERVER_LINGERING_CLOSE: it reads a whole declared body over the limit before
     * answering (and never answers if it does not come); the 413 goes at once and conns.c
     * lingers on the close so it is not lost to a reset. */
    evhttp_set_allowed_methods(A.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                           EVHTTP_REQ_PATCH | EVHTTP_REQ_CONNECT);
    evhttp_set_gencb(A.http, on_request, NULL);
    if (conns_init() < 0)
        return 1;
    A.pg = pgq_new(A.base, tk.conninfo);
    metrics_set_routes(acceptor_route_name, acceptor_route_method, acceptor_route_count());
    auth_init();
    api_jobs_init();
    A.done_ev = event_new(A.base, tk.done_efd[tk.proc_idx], EV_READ | EV_PERSIST, on_done, NULL);
    event_add(A.done_ev, NULL);
    int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
    struct event *sev[4];
    for (int i = 0; i < 4; i++) {
        sev[i] = evsignal_new(A.base, sigs[i], on_signal, NULL);
        event_add(sev[i], NULL);
    }
    /* completions left in this entry's ring by its previous owner */
    on_done(tk.done_efd[tk.proc_idx], EV_READ, NULL);
    A.db_timer = evtimer_new(A.base, on_db_wait, NULL);
    if (!A.db_timer)
        start_accepting();
    else
        on_db_wait(-1, 0, NULL);
    event_base_dispatch(A.base);
    log_info("msg=\"acceptor stopping\" slot=%d inflight=%zu", slot, A.inflight);
    for (int i = 0; i < 4; i++)
        event_free(sev[i]);
    if (A.stop_timer)
        event_free(A.stop_timer);
    if (A.drain_timer)
        event_free(A.drain_timer);
    if (A.db_timer)
        event_free(A.db_timer);
    event_free(A.done_ev);
    pgq_free(A.pg);
    evhttp_free(A.http);
    conns_free();
    event_base_free(A.base);
    free(A.pending);
    return A.fatal ? TK_EXIT_FATAL : TK_EXIT_OK;
}
