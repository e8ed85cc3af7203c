/*
 * session_proto.h — the host side of the launcher's SESSION MODE (image/launcher/
 * tako-launcher.c, "SESSION MODE" in its header comment: the grammar is defined there).
 * Pure C, no I/O: it builds what the host writes on the launcher's stdin (the go line, a
 * cell's header, the interrupt line) and parses what the launcher writes on its stdout,
 * already demultiplexed from the engine's frames by the caller (dkframe.h) or read from
 * the OCI backend's plain pipe.
 *
 * The parser is incremental (bytes may be split anywhere) and strict, like the status
 * parser of common/sandbox.c: known frames only, known keys only, each once, decimal
 * numbers within their bounds, the session's nonce on every frame that carries one, no
 * NUL, lines of at most SESSION_PROTO_LINE_MAX bytes. Its memory is bounded: the struct
 * plus one reply of at most SESSION_PROTO_REPLY_MAX bytes while it arrives; live output
 * is passed on as it comes, never buffered. The first malformed byte makes it fail for
 * good: one call of the error callback, then every feed returns -EPROTO (the session is
 * then to be ended: its channel cannot be trusted to be in step any more).
 */
#ifndef TAKO_SESSION_PROTO_H
#define TAKO_SESSION_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_PROTO_LINE_MAX    1023u                 /* a line without its '\n' */
#define SESSION_PROTO_BYTES_MAX   (16u << 20)           /* a cell's code, and its stdin */
#define SESSION_PROTO_CAP_MAX     (16u << 20)           /* stdout_cap, stderr_cap */
#define SESSION_PROTO_OUT_MAX     (16u << 20)           /* one takod-out frame */
#define SESSION_PROTO_REPLY_MAX   (1u << 20)            /* a cell's reply */
#define SESSION_PROTO_TIMEOUT_MAX 86400000ull           /* timeout_ms */
#define SESSION_PROTO_N_MAX       999999999999999999ull /* a cell's n */

/* A nonce is 1..64 of [A-Za-z0-9_-]. */
bool session_proto_nonce_ok(const char *nonce);

/* The go line: "session=1 timeout_ms=T stdout_cap=C stderr_cap=C nonce=N\n" (the cells'
 * defaults). Its length, or -EINVAL (a value out of bounds, a bad nonce), -ENOSPC. */
int session_proto_go_line(char *buf, size_t size, const char *nonce, uint64_t timeout_ms,
                          uint64_t stdout_cap, uint64_t stderr_cap);

struct session_proto_cell {
    uint64_t n;                      /* execution_count, 0..SESSION_PROTO_N_MAX */
    uint64_t timeout_ms;             /* 1..SESSION_PROTO_TIMEOUT_MAX */
    uint64_t stdout_cap, stderr_cap; /* 0..SESSION_PROTO_CAP_MAX */
    size_t code_len, stdin_len;      /* 0..SESSION_PROTO_BYTES_MAX each */
};

/* "cell n=.. timeout_ms=.. stdout_cap=.. stderr_cap=.. code=.. stdin=..\n": write it, then
 * exactly code_len code bytes and stdin_len stdin bytes. Its length, -EINVAL, -ENOSPC. */
int session_proto_cell_header(char *buf, size_t size, const struct session_proto_cell *c);

/* "interrupt\n". Its length, or -ENOSPC. */
int session_proto_interrupt_line(char *buf, size_t size);

struct session_proto_cellend {
    uint64_t n;
    int exit_code; /* -1: the driver lives on; else its exit status (128+signal) */
    int signal;
    bool timed_out, interrupted, restarted, oom;
    uint64_t stdout_bytes, stderr_bytes; /* produced, kept or not */
    bool stdout_truncated, stderr_truncated;
    uint64_t start_us, end_us; /* CLOCK_MONOTONIC, the host's clock too */
    size_t reply_len;          /* the reply passed with it (0: none) */
    bool reply_too_big;        /* reply_error=too_big: the driver's reply was dropped */
    char error[64];            /* error=WORD, or "" */
};

/* The final line (the launcher exits after it). */
struct session_proto_status {
    int exit_code, signal;
    bool timed_out, oom, stdout_truncated, stderr_truncated;
    uint64_t stdout_bytes, stderr_bytes, start_us, end_us;
    char cgroup[8]; /* v1, v2, none */
    char error[64]; /* "" when it ended without one (EOF) */
    int err_no;
};

/* The events. Any may be NULL. `reply` (JSON from inside the sandbox: untrusted) and
 * `data` are valid only during the call. `what` names the fault, for a log line. */
struct session_proto_callbacks {
    void (*ready)(void *arg);
    void (*out)(void *arg, int stream, const char *data, size_t len); /* 1 stdout, 2 stderr */
    void (*cellend)(void *arg, const struct session_proto_cellend *ce, const char *reply,
                    size_t reply_len);
    void (*status)(void *arg, const struct session_proto_status *st);
    void (*error)(void *arg, const char *what);
};

enum session_proto_state { SP_LINE, SP_OUT, SP_REPLY, SP_DONE, SP_FAILED };

struct session_proto_parser {
    const struct session_proto_callbacks *cb;
    void *arg;
    char nonce[65];
    enum session_proto_state state;
    bool ready_seen;
    char line[SESSION_PROTO_LINE_MAX + 1];
    size_t line_len;
    int out_stream;
    size_t left; /* bytes still to come of a takod-out frame or a reply */
    struct session_proto_cellend ce;
    char *reply;
    size_t reply_fill;
};

/* 0, or -EINVAL for a bad nonce. */
int session_proto_parser_init(struct session_proto_parser *p, const char *nonce,
                              const struct session_proto_callbacks *cb, void *arg);

/* Parse data[0..len). 0: all taken, more to come; 1: the status line has been parsed (the
 * launcher is done; bytes after it are a fault); -EPROTO: malformed (now or before);
 * -ENOMEM: no memory for a reply (the parser has failed too). */
int session_proto_feed(struct session_proto_parser *p, const void *data, size_t len);

/* True when the stream stopped inside a frame (a line, output, or a reply). */
bool session_proto_partial(const struct session_proto_parser *p);

void session_proto_parser_free(struct session_proto_parser *p);

#endif
