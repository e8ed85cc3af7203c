/*
 * http.h — the acceptor's HTTP replies and request parsing (http.c).
 *
 * Every reply goes through reply_*() so headers, metrics and keep-alive rules are applied
 * in one place; every text that goes into an error answer is made valid UTF-8 there.
 */
#ifndef TAKO_HTTP_H
#define TAKO_HTTP_H

#include <event2/http.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct tk_metrics;
/* What a reply needs from the process: is it going away (no keep-alive), the route index
 * of a request (the metrics' label; -1 for none), and the metrics it counts in. */
void http_init(bool (*is_closing)(void), int (*route_index)(struct evhttp_request *req),
               struct tk_metrics *metrics);
const char *http_method_name(enum evhttp_cmd_type m);

void reply_json(struct evhttp_request *req, int code, const char *corr, json_t *body); /* steals */
void reply_raw(struct evhttp_request *req, int code, const char *corr, const char *body,
               size_t len);
void reply_error(struct evhttp_request *req, int code, const char *corr, const char *detail);
/* 503 {"detail", "error_type": "database_unavailable", "correlation_id"} + Retry-After: the
 * one answer for "PostgreSQL is away and this request needs it" (nothing was done). */
void reply_db_unavailable(struct evhttp_request *req, const char *corr, const char *detail);
/* 422 with FastAPI-shaped field errors: {"detail": [{"loc": [...], "msg", "type"}]} */
void reply_422(struct evhttp_request *req, const char *corr, json_t *errors);
void field_error(json_t *errors, const char *where, const char *field, const char *type,
                 const char *msg);
/* A single-field 422 in one call. */
void reply_field_error(struct evhttp_request *req, const char *corr, const char *where,
                       const char *field, const char *type, const char *msg);

/* Parse the JSON body into an object (an empty body is {} when allow_empty). On failure
 * it replies (400 malformed, 422 not an object) and returns NULL. */
json_t *body_object(struct evhttp_request *req, const char *corr, bool allow_empty);
/* The same on bytes, without a request: NULL with the status in *code and the error body
 * in *reply (the caller sends or frees it). */
json_t *body_parse(const char *body, size_t len, bool allow_empty, const char *corr, int *code,
                   json_t **reply);
/* The error bodies: {"detail": detail or errors (stolen), "correlation_id": corr} */
json_t *error_body(const char *detail, const char *corr);
json_t *errors_body(json_t *errors, const char *corr);
/* Reject keys not in `known` (NULL-terminated), adding errors. */
void check_known_fields(json_t *obj, const char *const *known, json_t *errors);

/* A query parameter (decoded) or NULL; the caller frees it. */
char *query_param(struct evhttp_request *req, const char *name);

/* Parse "limit"/"offset"-style integers: 422 and false on a bad value. */
bool query_int(struct evhttp_request *req, const char *corr, const char *name, long long dflt,
               long long lo, long long hi, long long *out);
/* The pagination envelope: {items, limit, offset, has_more, count}. */
json_t *page_envelope(json_t *items, long long limit, long long offset, bool has_more);

#endif
