/*
 * fuzz_http — an HTTP request as an acceptor sees it: the bytes go through libevent's
 * evhttp (the parser takod's acceptors use, with their limits), then into what takod does
 * with the parsed request before any database or job slot is involved: the correlation-id
 * header check, the route table's matching (workers/routes.c), the query parameters the
 * routes read (query_param, query_int) and, for POST /execute and /execute/async, the body's
 * validation into a job spec (execute_spec_parse in workers/api_submit.c).
 * The connection is a Unix socket pair: the input is written, the write side shut, and
 * the loop runs until the server side is done with it.
 */
#include "../../workers/acceptor.c"
#include "../../workers/http.c"
#include "../../workers/routes.c"
#include "../../workers/api_submit.c"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *fz_base;
static struct evhttp *fz_http;
static bool fz_done;

static void fz_request(struct evhttp_request *req, void *arg)
{
    char corr[72];
    correlation_id(req, corr, sizeof corr);
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path)
        path = "/";
    int matched = -1;
    for (size_t i = 0; i < TK_ARRAY_LEN(routes); i++) {
        char *params[MAX_PARAMS] = {0};
        int np = 0;
        bool match = route_match(routes[i].pattern, path, params, &np);
        if (np < 0 || np > MAX_PARAMS)
            __builtin_trap();
        free_params(params, np);
        if (match && matched < 0 && routes[i].method == evhttp_request_get_command(req))
            matched = (int)i;
    }
    static const char *const names[] = {"wait",       "timeout", "view",     "limit",
                                        "offset",     "status",  "job_type", "version_tag",
                                        "error_type", "expect"};
    for (size_t i = 0; i < TK_ARRAY_LEN(names); i++)
        free(query_param(req, names[i]));
    int code = 200;
    json_t *reply = NULL;
    if (matched == 0 || matched == 1) { /* /execute, /execute/async */
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t len = evbuffer_get_length(in);
        struct job_spec *s = execute_spec_parse(len ? (const char *)evbuffer_pullup(in, -1) : NULL,
                                                len, matched == 1, corr, &code, &reply);
        if (s) {
            /* an accepted body's input_data is kept as sent: its span must be found */
            const char *body = len ? (const char *)evbuffer_pullup(in, -1) : NULL;
            json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
            json_t *jin = json_object_get(root, "input_data");
            size_t off, n;
            if (jin && !json_is_null(jin) && json_member_span(body, len, "input_data", &off, &n))
                __builtin_trap();
            json_decref(root);
            spec_hash(s);
            spec_free(s);
        } else if (!reply || (code != 400 && code != 422)) {
            __builtin_trap(); /* a refusal is a 4xx with a body */
        }
    }
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    struct evbuffer *buf = evbuffer_new();
    evbuffer_add(buf, text ? text : "{}", text ? strlen(text) : 2);
    free(text);
    evhttp_send_reply(req, code, NULL, buf);
    evbuffer_free(buf);
}

static void fz_client_read(evutil_socket_t fd, short ev, void *arg)
{
    char buf[4096];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        fz_done = true; /* EOF or an error: the server is done with this connection */
        return;
    }
}

static struct sockaddr_un fz_addr;

static void fz_unlink(void)
{
    unlink(fz_addr.sun_path);
}

static void fz_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    config_defaults(&tk.cfg);
    tk.cfg.environments_allow_runtime_requirements = true; /* the requirements grammar too */
    fz_base = event_base_new();
    fz_http = evhttp_new(fz_base);
    /* the acceptor's settings (acceptor_main) */
    evhttp_set_max_body_size(fz_http, (ev_ssize_t)tk.cfg.limits_max_payload_bytes);
    evhttp_set_max_headers_size(fz_http, 16384);
    evhttp_set_timeout(fz_http, 5);
    evhttp_set_allowed_methods(fz_http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(fz_http, fz_request, NULL);
    /* a Unix listening socket: loopback without ports or TIME_WAIT */
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    fz_addr.sun_family = AF_UNIX;
    snprintf(fz_addr.sun_path, sizeof fz_addr.sun_path, "/tmp/tako-fuzz-http.%d", (int)getpid());
    unlink(fz_addr.sun_path);
    atexit(fz_unlink);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&fz_addr, sizeof fz_addr) < 0 ||
        listen(lfd, 64) < 0 || !evhttp_accept_socket_with_handle(fz_http, lfd)) {
        fprintf(stderr, "fuzz_http: cannot listen on %s: %s\n", fz_addr.sun_path, strerror(errno));
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fz_base)
        fz_init();
    if (size > 65536)
        return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int sndbuf = 1 << 18;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (fd < 0 || connect(fd, (struct sockaddr *)&fz_addr, sizeof fz_addr) < 0) {
        fprintf(stderr, "fuzz_http: connect: %s\n", strerror(errno));
        abort();
    }
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    fz_done = false;
    struct event *ev = event_new(fz_base, fd, EV_READ | EV_PERSIST, fz_client_read, NULL);
    event_add(ev, NULL);
    while (!fz_done)
        event_base_loop(fz_base, EVLOOP_ONCE);
    event_free(ev);
    close(fd);
    return 0;
}
