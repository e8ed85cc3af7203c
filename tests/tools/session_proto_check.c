/*
 * session_proto_check — run the host-side codec (common/session_proto.c) over a real
 * launcher transcript: the launcher's stdout of one session, on stdin. Built for tests
 * only (tests/integration/test_launcher_session.py feeds it every session it ran).
 *
 *   session_proto_check NONCE < transcript
 *
 * The bytes are fed in pieces of varying sizes (1 byte, then growing, wrapping at 4 KiB),
 * so frames are split everywhere. On stdout, one line per event: "ready", "out S LEN"
 * (merged per run of one stream), "cellend N REPLY_LEN", "status ERROR-or--". Exit 0
 * when it parsed with no fault, 1 with the fault on stderr, 2 on a usage error.
 */
#include "tako/session_proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int last_stream;
static size_t run_len;

static void flush_out(void)
{
    if (last_stream)
        printf("out %d %zu\n", last_stream, run_len);
    last_stream = 0;
    run_len = 0;
}

static void on_ready(void *arg)
{
    (void)arg;
    flush_out();
    printf("ready\n");
}

static void on_out(void *arg, int stream, const char *data, size_t len)
{
    (void)arg;
    (void)data;
    if (stream != last_stream)
        flush_out();
    last_stream = stream;
    run_len += len;
}

static void on_cellend(void *arg, const struct session_proto_cellend *c, const char *reply,
                       size_t len)
{
    (void)arg;
    (void)reply;
    flush_out();
    printf("cellend %llu %zu\n", (unsigned long long)c->n, len);
}

static void on_status(void *arg, const struct session_proto_status *s)
{
    (void)arg;
    flush_out();
    printf("status %s\n", s->error[0] ? s->error : "-");
}

static void on_error(void *arg, const char *what)
{
    (void)arg;
    flush_out();
    fprintf(stderr, "session_proto_check: %s\n", what);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: session_proto_check NONCE < transcript\n");
        return 2;
    }
    static const struct session_proto_callbacks cb = {on_ready, on_out, on_cellend, on_status,
                                                      on_error};
    struct session_proto_parser p;
    if (session_proto_parser_init(&p, argv[1], &cb, NULL) < 0) {
        fprintf(stderr, "session_proto_check: a bad nonce\n");
        return 2;
    }
    static char buf[1 << 16];
    size_t piece = 1;
    int rc = 0;
    ssize_t n;
    while (rc >= 0 && (n = read(0, buf, sizeof buf)) > 0) {
        for (size_t at = 0; at < (size_t)n && rc >= 0;) {
            size_t take = (size_t)n - at < piece ? (size_t)n - at : piece;
            rc = session_proto_feed(&p, buf + at, take);
            at += take;
            piece = piece % 4096 + 1 + piece / 3;
        }
    }
    flush_out();
    session_proto_parser_free(&p);
    return rc < 0 ? 1 : 0;
}
