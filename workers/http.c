/*
 * http.c — the acceptor's HTTP replies and request parsing: every answer goes through
 * reply_*() (common headers, the metrics count, keep-alive rules in one place), every body
 * through body_parse() and every query parameter through query_param()/query_int().
 *
 * It depends on nothing else of the acceptor: whether the process is going away (no
 * keep-alive), a request's route label and the metrics it counts in are given to
 * http_init(), so the route handlers, auth.c and acceptor.c all sit on top of it.
 */
#include "http.h"
#include "tako/metrics.h"
#include "tako/util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool (*closing)(void);
static int (*route_of)(struct evhttp_request *req);
static struct tk_metrics *counts;

void http_init(bool (*is_closing)(void), int (*route_index)(struct evhttp_request *req),
               struct tk_metrics *metrics)
{
    closing = is_closing;
    route_of = route_index;
    counts = metrics;
}

const char *http_method_name(enum evhttp_cmd_type m)
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

static void add_common_headers(struct evhttp_request *req, const char *corr)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (!evhttp_find_header(h, "Content-Type"))
        evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "X-Correlation-ID", corr);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    if (closing && closing()) /* this process is going away: no keep-alive */
        evhttp_add_header(h, "Connection", "close");
}

static void send_reply(struct evhttp_request *req, int code, const char *corr, struct evbuffer *buf)
{
    add_common_headers(req, corr);
    if (counts)
        metrics_request(counts, route_of ? route_of(req) : -1, code);
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
    /* JSON has no place for a raw NUL (not whitespace; escaped inside strings), but
     * jansson skips one after a number: refused here, so every body takod keeps is one
     * that json_member_span (the span of input_data, kept as sent) follows the same way. */
    const char *nul = body ? memchr(body, '\0', len) : NULL;
    if (nul) {
        char detail[120];
        snprintf(detail, sizeof detail, "Invalid JSON body: a NUL byte at offset %zu",
                 (size_t)(nul - body));
        *code = 400;
        *reply = error_body(detail, corr);
        return NULL;
    }
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
