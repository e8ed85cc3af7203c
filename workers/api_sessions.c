/*
 * api_sessions.c — the acceptor's side of /sessions (docs/SESSIONS.md): every such request,
 * once routes.c has checked it (headers, rate limit, authentication), goes to the sessions
 * process over its unix socket (sessions.h) with who asked, and its answer comes back as
 * it is. Nothing about sessions is decided here.
 *
 * The hop is HTTP/1.0, one request per connection: the request is written whole (its body
 * as the client sent it, within limits.max_payload_bytes or, for a file upload,
 * sessions.max_file_bytes), and the answer is read to the close. An answer of type
 * text/event-stream (GET /sessions/{id}/events) is relayed as it arrives, chunk by chunk;
 * any other is read whole (bounded) and sent with the acceptor's usual headers. A client
 * that goes away closes the hop, which the sessions process sees (a watcher leaves; a
 * running cell runs on and is recorded).
 */
#include "acceptor.h"
#include "auth.h"
#include "conns.h"
#include "http.h"
#include "routes.h"
#include "sessions.h"
#include "tako/log.h"
#include "tako/takod.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HEAD_MAX           (32u << 10)
#define STREAM_BACKLOG_MAX (4u << 20) /* unread event-stream bytes held for a client */

struct proxy {
    struct evhttp_request *req; /* NULL once the client has gone */
    struct bufferevent *bev;
    char corr[72];
    bool head_done, streaming;
    int code;
    char reason[64];
    char content_type[128], etag[80], retry_after[16], content_length[24];
    size_t body_max;
};

static void proxy_free(struct proxy *p)
{
    if (p->req) /* not answered: its client went away (client_gone) or it never will */
        conns_set_closecb(evhttp_request_get_connection(p->req), NULL, NULL);
    if (p->bev)
        bufferevent_free(p->bev);
    free(p);
    acceptor_release();
    acceptor_maybe_exit();
}

/* The client's request, no longer watched for its close: the caller answers it (which may
 * free it), and p forgets it first. */
static struct evhttp_request *take_req(struct proxy *p)
{
    struct evhttp_request *req = p->req;
    if (req)
        conns_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
    p->req = NULL;
    return req;
}

static void client_gone(struct evhttp_connection *c, void *arg)
{
    struct proxy *p = arg;
    p->req = NULL; /* libevent frees the request */
    proxy_free(p);
}

/* Parse the answer's head (status line and the headers we pass on). 0, or -EPROTO. */
static int parse_head(struct proxy *p, char *head)
{
    char *save = NULL, *line = strtok_r(head, "\r\n", &save);
    if (!line || sscanf(line, "HTTP/1.%*1[01] %3d %63[^\r\n]", &p->code, p->reason) < 1 ||
        p->code < 100 || p->code > 599)
        return -EPROTO;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        if (!colon)
            return -EPROTO;
        *colon = '\0';
        const char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (!strcasecmp(line, "Content-Type"))
            snprintf(p->content_type, sizeof p->content_type, "%s", v);
        else if (!strcasecmp(line, "ETag"))
            snprintf(p->etag, sizeof p->etag, "%s", v);
        else if (!strcasecmp(line, "Retry-After"))
            snprintf(p->retry_after, sizeof p->retry_after, "%s", v);
        else if (!strcasecmp(line, "Content-Length") && strspn(v, "0123456789") == strlen(v) &&
                 strlen(v) < sizeof p->content_length)
            snprintf(p->content_length, sizeof p->content_length, "%s", v);
    }
    return 0;
}

static void add_passed_headers(struct proxy *p)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(p->req);
    if (p->content_type[0])
        evhttp_add_header(h, "Content-Type", p->content_type);
    if (p->etag[0])
        evhttp_add_header(h, "ETag", p->etag);
    if (p->retry_after[0])
        evhttp_add_header(h, "Retry-After", p->retry_after);
    /* a HEAD's answer has no body to count: its Content-Length is the sessions process's */
    if (p->content_length[0] && evhttp_request_get_command(p->req) == EVHTTP_REQ_HEAD)
        evhttp_add_header(h, "Content-Length", p->content_length);
}

static void unavailable(struct proxy *p, const char *why)
{
    log_warn("msg=\"sessions process unreachable\" why=\"%s\" corr=%s", why, p->corr);
    struct evhttp_request *req = take_req(p);
    if (req && p->streaming) /* its head went out already: end the stream */
        evhttp_send_reply_end(req);
    else if (req)
        reply_error(req, 503, p->corr,
                    "The sessions process is unavailable; try again in a moment");
    proxy_free(p);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct proxy *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!p->head_done) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0) {
            if (evbuffer_get_length(in) > HEAD_MAX)
                unavailable(p, "answer head too long");
            return;
        }
        size_t hl = (size_t)end.pos + 4;
        char *head = malloc(hl + 1);
        if (!head) {
            unavailable(p, "out of memory");
            return;
        }
        evbuffer_remove(in, head, hl);
        head[hl] = '\0';
        int rc = parse_head(p, head);
        free(head);
        if (rc < 0) {
            unavailable(p, "malformed answer head");
            return;
        }
        p->head_done = true;
        if (!strncmp(p->content_type, "text/event-stream", 17) && p->req) {
            p->streaming = true;
            add_passed_headers(p);
            struct evkeyvalq *h = evhttp_request_get_output_headers(p->req);
            evhttp_add_header(h, "Cache-Control", "no-cache");
            evhttp_add_header(h, "X-Correlation-ID",
                              p->corr); /* as send_reply's, as api_wait.c's */
            evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
            evhttp_add_header(h, "X-Frame-Options", "DENY");
            evhttp_send_reply_start(p->req, p->code, p->reason[0] ? p->reason : "OK");
        }
    }
    if (p->streaming) {
        if (p->req && evbuffer_get_length(in) > 0) {
            /* a client that does not read its stream is dropped, not buffered for */
            struct bufferevent *cb =
                evhttp_connection_get_bufferevent(evhttp_request_get_connection(p->req));
            if (cb && evbuffer_get_length(bufferevent_get_output(cb)) > STREAM_BACKLOG_MAX) {
                log_warn("msg=\"event stream client not reading; dropped\" corr=%s", p->corr);
                evhttp_send_reply_end(take_req(p));
                proxy_free(p);
                return;
            }
            evhttp_send_reply_chunk(p->req, in);
        }
        evbuffer_drain(in, evbuffer_get_length(in));
    } else if (evbuffer_get_length(in) > p->body_max) {
        unavailable(p, "answer body too long");
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct proxy *p = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (!(what & BEV_EVENT_EOF) && !p->head_done) {
        unavailable(p, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return;
    }
    if (!p->head_done) {
        unavailable(p, "closed before its answer");
        return;
    }
    if (p->req) {
        if (p->streaming) {
            evhttp_send_reply_end(take_req(p));
        } else {
            add_passed_headers(p);
            struct evbuffer *in = bufferevent_get_input(bev);
            size_t len = evbuffer_get_length(in);
            reply_raw(take_req(p), p->code, p->corr,
                      len ? (const char *)evbuffer_pullup(in, -1) : "", len);
        }
    }
    proxy_free(p);
}

void api_sessions(struct evhttp_request *req, const char *corr, char **params)
{
    (void)params;
    struct proxy *p = calloc(1, sizeof *p);
    if (!p) {
        reply_error(req, 500, corr, "Out of memory");
        return;
    }
    acceptor_hold();
    p->req = req;
    snprintf(p->corr, sizeof p->corr, "%s", corr);
    p->body_max = (size_t)tk.cfg.sessions_max_file_bytes + (2u << 20);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    sessions_socket_path(sa.sun_path, sizeof sa.sun_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (fd >= 0)
            close(fd);
        unavailable(p, strerror(errno));
        return;
    }
    p->bev = bufferevent_socket_new(A.base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!p->bev) {
        close(fd);
        unavailable(p, "bufferevent_socket_new failed");
        return;
    }
    bufferevent_setcb(p->bev, on_read, NULL, on_event, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    conns_set_closecb(evhttp_request_get_connection(req), client_gone, p);

    struct evbuffer *out = bufferevent_get_output(p->bev);
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = evhttp_uri_get_path(u), *query = evhttp_uri_get_query(u);
    struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
    const char *ct = evhttp_find_header(ih, "Content-Type");
    const char *inm = evhttp_find_header(ih, "If-None-Match");
    char *host = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &host, &port);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    evbuffer_add_printf(out,
                        "%s %s%s%s HTTP/1.0\r\nHost: takod-sessions\r\nX-Takod-Key: %s\r\n"
                        "X-Takod-Admin: %d\r\nX-Takod-Client: %s\r\nX-Correlation-ID: %s\r\n",
                        http_method_name(evhttp_request_get_command(req)), path ? path : "/",
                        query && !strpbrk(query, "\r\n \t") ? "?" : "",
                        query && !strpbrk(query, "\r\n \t") ? query : "",
                        current_auth.ok ? current_auth.key_id : "",
                        current_auth.ok && current_auth.admin ? 1 : 0, host ? host : "", corr);

    if (ct && !strpbrk(ct, "\r\n"))
        evbuffer_add_printf(out, "Content-Type: %s\r\n", ct);
    if (inm && !strpbrk(inm, "\r\n"))
        evbuffer_add_printf(out, "If-None-Match: %s\r\n", inm);
    evbuffer_add_printf(out, "Content-Length: %zu\r\n\r\n", evbuffer_get_length(body));
    evbuffer_add_buffer(out, body);
}
