/* test_session_proto.c — the host side of the launcher's SESSION MODE: the builders, the
 * parser on good transcripts split everywhere, and hostile input. */
#include "tako/session_proto.h"
#include "tk_test.h"

#include <errno.h>
#include <stdarg.h>

/* ---- an event log: what the callbacks saw, as text (consecutive output merged) */
struct log {
    char *s;
    size_t len, alloc;
    int last_out; /* the stream of the last event if it was output, else 0 */
    int errors;
};

static void log_add(struct log *l, const char *p, size_t n)
{
    if (l->len + n + 1 > l->alloc) {
        l->alloc = (l->len + n + 1) * 2;
        l->s = realloc(l->s, l->alloc);
        TK_ASSERT(l->s != NULL);
    }
    memcpy(l->s + l->len, p, n);
    l->len += n;
    l->s[l->len] = '\0';
}

static void log_fmt(struct log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_fmt(struct log *l, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_add(l, buf, (size_t)n);
    l->last_out = 0;
}

static void on_ready(void *arg)
{
    log_fmt(arg, "[ready]");
}

static void on_out(void *arg, int stream, const char *data, size_t len)
{
    struct log *l = arg;
    TK_ASSERT(len > 0);
    if (l->last_out != stream) {
        log_fmt(l, "[out%d]", stream);
        l->last_out = stream;
    }
    log_add(l, data, len);
}

static void on_cellend(void *arg, const struct session_proto_cellend *c, const char *reply,
                       size_t len)
{
    TK_ASSERT_EQ(len, c->reply_len);
    log_fmt(arg,
            "[cellend n=%llu exit=%d sig=%d to=%d int=%d re=%d oom=%d ob=%llu eb=%llu ot=%d et=%d "
            "t=%llu..%llu big=%d err=%s reply=",
            (unsigned long long)c->n, c->exit_code, c->signal, c->timed_out, c->interrupted,
            c->restarted, c->oom, (unsigned long long)c->stdout_bytes,
            (unsigned long long)c->stderr_bytes, c->stdout_truncated, c->stderr_truncated,
            (unsigned long long)c->start_us, (unsigned long long)c->end_us, c->reply_too_big,
            c->error);
    log_add(arg, reply, len);
    log_add(arg, "]", 1);
}

static void on_status(void *arg, const struct session_proto_status *s)
{
    log_fmt(arg, "[status exit=%d cg=%s err=%s errno=%d]", s->exit_code, s->cgroup, s->error,
            s->err_no);
}

static void on_error(void *arg, const char *what)
{
    struct log *l = arg;
    l->errors++;
    log_fmt(l, "[error %s]", what);
}

static const struct session_proto_callbacks cbs = {on_ready, on_out, on_cellend, on_status,
                                                   on_error};

#define NONCE "Zx81_-q"

static const char good[] =
    "takod-ready nonce=" NONCE "\n"
    "takod-out 1 6\nhello\n"
    "takod-out 2 4\ne\0r\n"
    "takod-out 1 3\n\n\n\n"
    "takod-cellend n=1 exit_code=-1 signal=0 timed_out=0 interrupted=0 restarted=0 oom=0 "
    "stdout_bytes=9 stderr_bytes=4 stdout_truncated=0 stderr_truncated=0 start_us=10 end_us=20 "
    "reply=43 nonce=" NONCE "\n"
    "{\"status\":\"ok\",\"value\":\"2\\n\",\"error\":null}\n"
    "takod-cellend n=2 exit_code=137 signal=9 timed_out=1 interrupted=0 restarted=1 oom=1 "
    "stdout_bytes=0 stderr_bytes=0 stdout_truncated=0 stderr_truncated=0 start_us=30 end_us=30 "
    "reply=0 nonce=" NONCE " error=driver_protocol reply_error=too_big\n"
    "takod-status exit_code=-1 signal=0 timed_out=0 oom=0 stdout_bytes=0 stderr_bytes=0 "
    "stdout_truncated=0 stderr_truncated=0 start_us=5 end_us=40 cgroup=v2 nonce=" NONCE
    " error=terminated errno=0\n";
#define GOOD_LEN (sizeof good - 1)

static const char good_log[] =
    "[ready][out1]hello\n[out2]e\0r\n[out1]\n\n\n"
    "[cellend n=1 exit=-1 sig=0 to=0 int=0 re=0 oom=0 ob=9 eb=4 ot=0 et=0 t=10..20 big=0 err= "
    "reply={\"status\":\"ok\",\"value\":\"2\\n\",\"error\":null}\n]"
    "[cellend n=2 exit=137 sig=9 to=1 int=0 re=1 oom=1 ob=0 eb=0 ot=0 et=0 t=30..30 big=1 "
    "err=driver_protocol reply=]"
    "[status exit=-1 cg=v2 err=terminated errno=0]";
#define GOOD_LOG_LEN (sizeof good_log - 1)

/* Feed data in pieces cut at cuts[0..ncuts) (ascending). Returns the last feed's rc. */
static int feed_cut(struct log *l, const char *data, size_t len, const size_t *cuts, size_t ncuts)
{
    struct session_proto_parser p;
    TK_ASSERT_EQ(session_proto_parser_init(&p, NONCE, &cbs, l), 0);
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        rc = session_proto_feed(&p, data + at, end - at);
        if (rc < 0)
            break;
        at = end;
    }
    session_proto_parser_free(&p);
    return rc;
}

static int feed_all(struct log *l, const char *data, size_t len)
{
    return feed_cut(l, data, len, NULL, 0);
}

static void log_free(struct log *l)
{
    free(l->s);
    memset(l, 0, sizeof *l);
}

TK_TEST(builders)
{
    char b[256];
    int gl = session_proto_go_line(b, sizeof b, "abc", 30000, 65536, 1024);
    TK_ASSERT_STREQ(b, "session=1 timeout_ms=30000 stdout_cap=65536 stderr_cap=1024 nonce=abc\n");
    TK_ASSERT_EQ(gl, (int)strlen(b));
    TK_ASSERT_EQ(session_proto_go_line(b, sizeof b, "a b", 1, 1, 1), -EINVAL);
    TK_ASSERT_EQ(session_proto_go_line(b, sizeof b, "", 1, 1, 1), -EINVAL);
    TK_ASSERT_EQ(session_proto_go_line(b, sizeof b, "n", 0, 1, 1), -EINVAL);
    TK_ASSERT_EQ(session_proto_go_line(b, sizeof b, "n", 1, (16u << 20) + 1, 1), -EINVAL);
    char n65[66];
    memset(n65, 'a', 65);
    n65[65] = '\0';
    TK_ASSERT_EQ(session_proto_go_line(b, sizeof b, n65, 1, 1, 1), -EINVAL);
    n65[64] = '\0';
    TK_ASSERT(session_proto_go_line(b, sizeof b, n65, 1, 1, 1) > 0);
    TK_ASSERT_EQ(session_proto_go_line(b, 10, "abc", 30000, 65536, 1024), -ENOSPC);

    struct session_proto_cell c = {.n = 3,
                                   .timeout_ms = 500,
                                   .stdout_cap = 10,
                                   .stderr_cap = 0,
                                   .code_len = 7,
                                   .stdin_len = 0};
    int n = session_proto_cell_header(b, sizeof b, &c);
    TK_ASSERT_STREQ(b, "cell n=3 timeout_ms=500 stdout_cap=10 stderr_cap=0 code=7 stdin=0\n");
    TK_ASSERT_EQ(n, (int)strlen(b));
    c.code_len = (16u << 20) + 1;
    TK_ASSERT_EQ(session_proto_cell_header(b, sizeof b, &c), -EINVAL);
    c.code_len = 16u << 20;
    c.stdin_len = 16u << 20;
    TK_ASSERT(session_proto_cell_header(b, sizeof b, &c) > 0);
    c.timeout_ms = 0;
    TK_ASSERT_EQ(session_proto_cell_header(b, sizeof b, &c), -EINVAL);
    c.timeout_ms = 86400001;
    TK_ASSERT_EQ(session_proto_cell_header(b, sizeof b, &c), -EINVAL);
    c.timeout_ms = 1;
    c.n = SESSION_PROTO_N_MAX + 1;
    TK_ASSERT_EQ(session_proto_cell_header(b, sizeof b, &c), -EINVAL);
    c.n = 1;
    TK_ASSERT_EQ(session_proto_cell_header(b, 20, &c), -ENOSPC);
    TK_ASSERT_EQ(session_proto_interrupt_line(b, sizeof b), 10);
    TK_ASSERT_STREQ(b, "interrupt\n");
    TK_ASSERT_EQ(session_proto_interrupt_line(b, 10), -ENOSPC);

    struct session_proto_parser p;
    TK_ASSERT_EQ(session_proto_parser_init(&p, "bad nonce", &cbs, NULL), -EINVAL);
}

TK_TEST(good_transcript_whole)
{
    struct log l = {0};
    int grc = feed_all(&l, good, GOOD_LEN);
    if (grc != 1)
        TK_FAIL("rc %d: %s", grc, l.s);
    TK_ASSERT_EQ(l.len, GOOD_LOG_LEN);
    TK_ASSERT(memcmp(l.s, good_log, GOOD_LOG_LEN) == 0);
    log_free(&l);
}

TK_TEST(good_transcript_split_everywhere)
{
    /* one cut at every byte boundary, then two cuts at many pairs, then byte by byte */
    for (size_t k = 0; k <= GOOD_LEN; k++) {
        struct log l = {0};
        size_t cut[1] = {k};
        TK_ASSERT_EQ(feed_cut(&l, good, GOOD_LEN, cut, 1), 1);
        if (l.len != GOOD_LOG_LEN || memcmp(l.s, good_log, GOOD_LOG_LEN))
            TK_FAIL("cut at %zu: %s", k, l.s);
        log_free(&l);
    }
    for (size_t a = 0; a <= GOOD_LEN; a += 7)
        for (size_t b = a; b <= GOOD_LEN; b += 13) {
            struct log l = {0};
            size_t cut[2] = {a, b};
            TK_ASSERT_EQ(feed_cut(&l, good, GOOD_LEN, cut, 2), 1);
            if (l.len != GOOD_LOG_LEN || memcmp(l.s, good_log, GOOD_LOG_LEN))
                TK_FAIL("cuts at %zu, %zu: %s", a, b, l.s);
            log_free(&l);
        }
    size_t cuts[GOOD_LEN];
    for (size_t i = 0; i < GOOD_LEN; i++)
        cuts[i] = i;
    struct log l = {0};
    TK_ASSERT_EQ(feed_cut(&l, good, GOOD_LEN, cuts, GOOD_LEN), 1);
    TK_ASSERT(l.len == GOOD_LOG_LEN && memcmp(l.s, good_log, GOOD_LOG_LEN) == 0);
    log_free(&l);
}

/* A transcript made of `ready` then `tail`: it must fail with one error naming `what`. */
static void expect_fault(const char *tail, size_t tail_len, const char *what)
{
    static const char ready[] = "takod-ready nonce=" NONCE "\n";
    size_t len = sizeof ready - 1 + tail_len;
    char *d = malloc(len);
    TK_ASSERT(d != NULL);
    memcpy(d, ready, sizeof ready - 1);
    memcpy(d + sizeof ready - 1, tail, tail_len);
    /* whole, and byte by byte: the same verdict */
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct log l = {0};
        struct session_proto_parser p;
        TK_ASSERT_EQ(session_proto_parser_init(&p, NONCE, &cbs, &l), 0);
        int rc = 0;
        if (bytewise) {
            for (size_t i = 0; i < len && rc >= 0; i++)
                rc = session_proto_feed(&p, d + i, 1);
        } else {
            rc = session_proto_feed(&p, d, len);
        }
        if (rc != -EPROTO || l.errors != 1 || !memmem(l.s, l.len, what, strlen(what)))
            TK_FAIL("%.*s: rc %d, log %s (want %s)", (int)tail_len, tail, rc, l.s, what);
        /* failed for good */
        TK_ASSERT_EQ(session_proto_feed(&p, "takod-ready nonce=" NONCE "\n", 26), -EPROTO);
        TK_ASSERT_EQ(l.errors, 1);
        session_proto_parser_free(&p);
        log_free(&l);
    }
    free(d);
}

#define FAULT(s, what) expect_fault(s, sizeof(s) - 1, what)

#define CE_HEAD                                                                                    \
    "takod-cellend n=1 exit_code=0 signal=0 timed_out=0 interrupted=0 restarted=0 oom=0 "          \
    "stdout_bytes=1 stderr_bytes=1 stdout_truncated=0 stderr_truncated=0 start_us=1 end_us=2 "
#define ST_HEAD                                                                                    \
    "takod-status exit_code=-1 signal=0 timed_out=0 oom=0 stdout_bytes=0 stderr_bytes=0 "          \
    "stdout_truncated=0 stderr_truncated=0 start_us=5 end_us=40 cgroup=v2 "

TK_TEST(hostile_frames)
{
    FAULT("takod-hello x=1\n", "unknown frame");
    FAULT("\n", "unknown frame");
    FAULT("takod-ready nonce=" NONCE "\n", "twice");
    FAULT("takod-out 3 1\nx", "stream");
    FAULT("takod-out 1 0\n", "length");
    FAULT("takod-out 1 -1\n", "length");
    FAULT("takod-out 1 16777217\n", "length");
    FAULT("takod-out 1 99999999999999999999999\n", "length");
    FAULT("takod-out 1  1\n", "length");
    FAULT("takod-out 1 1 \n", "length");
    FAULT("takod-out 1 01\n", "length");
    FAULT(CE_HEAD "reply=0 nonce=wrong\n", "malformed");
    FAULT(CE_HEAD "reply=0\n", "malformed");                        /* no nonce */
    FAULT(CE_HEAD "reply=1048577 nonce=" NONCE "\n", "bad number"); /* over 1 MiB */
    FAULT(CE_HEAD "reply=18446744073709551616 nonce=" NONCE "\n", "bad number");
    FAULT(CE_HEAD "reply=0 nonce=" NONCE " n=2\n", "malformed"); /* repeated */
    FAULT(CE_HEAD "reply=0 nonce=" NONCE " extra=1\n", "malformed");
    FAULT(CE_HEAD "reply=0 nonce=" NONCE " error=a-b\n", "malformed");
    FAULT(CE_HEAD "reply=0 nonce=" NONCE " reply_error=huge\n", "reply_error");
    FAULT(CE_HEAD "reply=x nonce=" NONCE "\n", "bad number");
    FAULT(CE_HEAD "reply=0 nonce=" NONCE " \n", "malformed");
    FAULT("takod-cellend n=1 exit_code=0 signal=0 timed_out=2 interrupted=0 restarted=0 oom=0 "
          "stdout_bytes=1 stderr_bytes=1 stdout_truncated=0 stderr_truncated=0 start_us=1 "
          "end_us=2 reply=0 nonce=" NONCE "\n",
          "malformed");
    FAULT("takod-cellend n=1 exit_code=-2 signal=0 timed_out=0 interrupted=0 restarted=0 oom=0 "
          "stdout_bytes=1 stderr_bytes=1 stdout_truncated=0 stderr_truncated=0 start_us=1 "
          "end_us=2 reply=0 nonce=" NONCE "\n",
          "bad number");
    FAULT("takod-cellend n=1 exit_code=-0 signal=0 timed_out=0 interrupted=0 restarted=0 oom=0 "
          "stdout_bytes=1 stderr_bytes=1 stdout_truncated=0 stderr_truncated=0 start_us=1 "
          "end_us=2 reply=0 nonce=" NONCE "\n",
          "bad number");
    FAULT("takod-cellend n=1 exit_code=0 signal=0 timed_out=0 interrupted=0 restarted=0 oom=0 "
          "stdout_bytes=-1 stderr_bytes=1 stdout_truncated=0 stderr_truncated=0 start_us=1 "
          "end_us=2 reply=0 nonce=" NONCE "\n",
          "bad number");
    FAULT("takod-cellend n=1 exit_code=0 signal=0 timed_out=0 interrupted=0 restarted=0 oom=0 "
          "stdout_bytes=1 stderr_bytes=1 stdout_truncated=0 stderr_truncated=0 start_us=3 "
          "end_us=2 reply=0 nonce=" NONCE "\n",
          "before it starts");
    FAULT(ST_HEAD "nonce=nope\n", "malformed");
    FAULT(ST_HEAD "nonce=" NONCE " errno=x\n", "malformed");
    FAULT("takod-status exit_code=-1 signal=0 timed_out=0 oom=0 stdout_bytes=0 stderr_bytes=0 "
          "stdout_truncated=0 stderr_truncated=0 start_us=5 end_us=40 cgroup=v3 nonce=" NONCE "\n",
          "cgroup");
    FAULT(ST_HEAD "nonce=" NONCE "\nx", "after takod-status");
    FAULT("takod-ready\0 nonce=x\n", "NUL");
    FAULT("takod-out 1 5\nab\0de"
          "takod\0",
          "NUL"); /* a NUL in output is fine, in a line not */
    char longline[1100];
    memset(longline, 'a', sizeof longline);
    expect_fault(longline, sizeof longline, "too long");
    memcpy(longline, "takod-out 1 1 ", 14);
    expect_fault(longline, sizeof longline, "too long");
}

TK_TEST(before_ready_and_nonce)
{
    static const char *bad[] = {
        "takod-out 1 1\nx",
        CE_HEAD "reply=0 nonce=" NONCE "\n",
        "takod-ready nonce=" NONCE "x\n",
        "takod-ready nonce=" NONCE " x=1\n",
        "takod-ready \n",
        "takod-ready\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct log l = {0};
        if (feed_all(&l, bad[i], strlen(bad[i])) != -EPROTO || l.errors != 1)
            TK_FAIL("accepted %s: %s", bad[i], l.s ? l.s : "");
        log_free(&l);
    }
    /* a status before ready (the driver never came up) is fine */
    struct log l = {0};
    static const char st[] = ST_HEAD "nonce=" NONCE " error=driver_start errno=110\n";
    TK_ASSERT_EQ(feed_all(&l, st, sizeof st - 1), 1);
    TK_ASSERT_STREQ(l.s, "[status exit=-1 cg=v2 err=driver_start errno=110]");
    log_free(&l);
}

TK_TEST(largest_reply_and_output)
{
    /* a 1 MiB reply passes whole; 16 MiB of output pass without being buffered */
    static const char head[] =
        "takod-ready nonce=" NONCE "\n" CE_HEAD "reply=1048576 nonce=" NONCE "\n";
    size_t len = sizeof head - 1 + (1u << 20);
    char *d = malloc(len);
    TK_ASSERT(d != NULL);
    memcpy(d, head, sizeof head - 1);
    memset(d + sizeof head - 1, 'r', 1u << 20);
    struct log l = {0};
    TK_ASSERT_EQ(feed_all(&l, d, len), 0);
    TK_ASSERT_EQ(l.errors, 0);
    TK_ASSERT(strstr(l.s, "reply=rrrr") != NULL);
    TK_ASSERT(l.len > (1u << 20));
    log_free(&l);
    free(d);

    struct session_proto_parser p;
    TK_ASSERT_EQ(session_proto_parser_init(&p, NONCE, &cbs, &l), 0);
    static const char o[] = "takod-ready nonce=" NONCE "\ntakod-out 2 16777216\n";
    TK_ASSERT_EQ(session_proto_feed(&p, o, sizeof o - 1), 0);
    char chunk[65536];
    memset(chunk, 'o', sizeof chunk);
    for (int i = 0; i < 256; i++) {
        TK_ASSERT(session_proto_partial(&p));
        TK_ASSERT_EQ(session_proto_feed(&p, chunk, sizeof chunk), 0);
    }
    TK_ASSERT(!session_proto_partial(&p));
    TK_ASSERT_EQ(l.len, 7 + 6 + (16u << 20));
    session_proto_parser_free(&p);
    log_free(&l);
}

TK_TEST(partial_and_free_midway)
{
    struct session_proto_parser p;
    struct log l = {0};
    TK_ASSERT_EQ(session_proto_parser_init(&p, NONCE, &cbs, &l), 0);
    TK_ASSERT(!session_proto_partial(&p));
    TK_ASSERT_EQ(session_proto_feed(&p, "takod-re", 8), 0);
    TK_ASSERT(session_proto_partial(&p));
    static const char rest[] = "ady nonce=" NONCE "\n" CE_HEAD "reply=10 nonce=" NONCE "\nabc";
    TK_ASSERT_EQ(session_proto_feed(&p, rest, sizeof rest - 1), 0);
    TK_ASSERT(session_proto_partial(&p));
    session_proto_parser_free(&p); /* mid-reply: frees it (ASan twin checks) */
    TK_ASSERT_STREQ(l.s, "[ready]");
    log_free(&l);
}

/* Random bytes and random mutations of the good transcript: never a crash, a leak or an
 * out-of-bounds access (the ASan twin), and either a clean run or one error. */
TK_TEST_T(random_input, 120)
{
    unsigned seed = 12345;
    char buf[4096];
    for (int round = 0; round < 20000; round++) {
        size_t len;
        if (round % 2) {
            len = (size_t)(rand_r(&seed) % (int)sizeof buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = (char)rand_r(&seed);
            if (round % 4 == 1)
                memcpy(buf, "takod-ready nonce=" NONCE "\n", 26 < len ? 26 : len);
        } else {
            len = GOOD_LEN;
            memcpy(buf, good, len);
            int muts = 1 + rand_r(&seed) % 4;
            for (int m = 0; m < muts; m++)
                buf[(size_t)rand_r(&seed) % len] = "0 1=\n-9aZ\0x"[rand_r(&seed) % 11];
        }
        struct log l = {0};
        size_t cuts[3];
        for (int c = 0; c < 3; c++)
            cuts[c] = len ? (size_t)rand_r(&seed) % len : 0;
        if (cuts[0] > cuts[1]) {
            size_t t = cuts[0];
            cuts[0] = cuts[1], cuts[1] = t;
        }
        if (cuts[1] > cuts[2]) {
            size_t t = cuts[1];
            cuts[1] = cuts[2], cuts[2] = t;
        }
        if (cuts[0] > cuts[1]) {
            size_t t = cuts[0];
            cuts[0] = cuts[1], cuts[1] = t;
        }
        int rc = feed_cut(&l, buf, len, cuts, 3);
        TK_ASSERT(rc == 0 || rc == 1 || rc == -EPROTO);
        TK_ASSERT(l.errors == (rc == -EPROTO));
        log_free(&l);
    }
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
