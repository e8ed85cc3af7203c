/*
 * session_proto.c — the host side of the launcher's SESSION MODE (session_proto.h).
 */
#include "tako/session_proto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool session_proto_nonce_ok(const char *nonce)
{
    if (nonce == NULL)
        return false;
    size_t n = strspn(nonce, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
    return n > 0 && n <= 64 && nonce[n] == '\0';
}

static int finish_line(int n, size_t size)
{
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= size)
        return -ENOSPC;
    return n;
}

int session_proto_go_line(char *buf, size_t size, const char *nonce, uint64_t timeout_ms,
                          uint64_t stdout_cap, uint64_t stderr_cap)
{
    if (!session_proto_nonce_ok(nonce) || timeout_ms < 1 ||
        timeout_ms > SESSION_PROTO_TIMEOUT_MAX || stdout_cap > SESSION_PROTO_CAP_MAX ||
        stderr_cap > SESSION_PROTO_CAP_MAX)
        return -EINVAL;
    return finish_line(snprintf(buf, size,
                                "session=1 timeout_ms=%" PRIu64 " stdout_cap=%" PRIu64
                                " stderr_cap=%" PRIu64 " nonce=%s\n",
                                timeout_ms, stdout_cap, stderr_cap, nonce),
                       size);
}

int session_proto_cell_header(char *buf, size_t size, const struct session_proto_cell *c)
{
    if (c->n > SESSION_PROTO_N_MAX || c->timeout_ms < 1 ||
        c->timeout_ms > SESSION_PROTO_TIMEOUT_MAX || c->stdout_cap > SESSION_PROTO_CAP_MAX ||
        c->stderr_cap > SESSION_PROTO_CAP_MAX || c->code_len > SESSION_PROTO_BYTES_MAX ||
        c->stdin_len > SESSION_PROTO_BYTES_MAX)
        return -EINVAL;
    return finish_line(snprintf(buf, size,
                                "cell n=%" PRIu64 " timeout_ms=%" PRIu64 " stdout_cap=%" PRIu64
                                " stderr_cap=%" PRIu64 " code=%zu stdin=%zu\n",
                                c->n, c->timeout_ms, c->stdout_cap, c->stderr_cap, c->code_len,
                                c->stdin_len),
                       size);
}

int session_proto_interrupt_line(char *buf, size_t size)
{
    return finish_line(snprintf(buf, size, "interrupt\n"), size);
}

int session_proto_parser_init(struct session_proto_parser *p, const char *nonce,
                              const struct session_proto_callbacks *cb, void *arg)
{
    memset(p, 0, sizeof *p);
    if (!session_proto_nonce_ok(nonce))
        return -EINVAL;
    snprintf(p->nonce, sizeof p->nonce, "%s", nonce);
    p->cb = cb;
    p->arg = arg;
    p->state = SP_LINE;
    return 0;
}

void session_proto_parser_free(struct session_proto_parser *p)
{
    free(p->reply);
    p->reply = NULL;
}

bool session_proto_partial(const struct session_proto_parser *p)
{
    return p->state == SP_OUT || p->state == SP_REPLY || (p->state == SP_LINE && p->line_len);
}

static int fault(struct session_proto_parser *p, const char *what)
{
    if (p->state != SP_FAILED) {
        p->state = SP_FAILED;
        free(p->reply);
        p->reply = NULL;
        if (p->cb && p->cb->error)
            p->cb->error(p->arg, what);
    }
    return -EPROTO;
}

/* Decimal digits only, no leading zero, at most hi. */
static int num(const char *s, uint64_t hi, uint64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 20 || strspn(s, "0123456789") != len || (len > 1 && s[0] == '0'))
        return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v > hi)
        return -1;
    *out = v;
    return 0;
}

/* An int in [lo, hi]: a '-' and digits when lo < 0 ("-0" is not a number). */
static int num_int(const char *s, int lo, int hi, int *out)
{
    bool neg = s[0] == '-' && lo < 0;
    uint64_t v;
    if (num(s + neg, neg ? (uint64_t) - (int64_t)lo : (uint64_t)hi, &v) < 0 || (neg && v == 0))
        return -1;
    int64_t sv = neg ? -(int64_t)v : (int64_t)v;
    if (sv < lo || sv > hi)
        return -1;
    *out = (int)sv;
    return 0;
}

/* One key of a frame: where its value goes. */
enum kind { K_U64, K_INT, K_FLAG, K_WORD, K_NONCE, K_SIZE };
struct key {
    const char *name;
    enum kind kind;
    void *dst;
    int64_t lo;
    uint64_t hi;
    bool required;
};

/* Parse "k=v k=v ..." (single blanks) against keys: each known, each once, the
 * required ones there. 0, or a fault's description. */
static const char *pairs(struct session_proto_parser *p, char *s, struct key *keys, size_t nkeys)
{
    uint64_t seen = 0;
    if (*s == '\0')
        return "no fields";
    for (;;) {
        char *end = strchr(s, ' ');
        if (end)
            *end = '\0';
        char *eq = strchr(s, '=');
        if (eq == NULL || eq == s)
            return "a field without '='";
        *eq = '\0';
        const char *v = eq + 1;
        size_t i;
        for (i = 0; i < nkeys && strcmp(keys[i].name, s); i++)
            ;
        if (i == nkeys)
            return "an unknown field";
        if (seen & (1ull << i))
            return "a repeated field";
        seen |= 1ull << i;
        struct key *k = &keys[i];
        uint64_t uv = 0;
        switch (k->kind) {
        case K_U64:
        case K_SIZE:
            if (num(v, k->hi, &uv) < 0)
                return "a bad number";
            if (k->kind == K_U64)
                *(uint64_t *)k->dst = uv;
            else
                *(size_t *)k->dst = (size_t)uv;
            break;
        case K_INT:
            if (num_int(v, (int)k->lo, (int)k->hi, k->dst) < 0)
                return "a bad number";
            break;
        case K_FLAG:
            if (strcmp(v, "0") && strcmp(v, "1"))
                return "a flag not 0 or 1";
            *(bool *)k->dst = v[0] == '1';
            break;
        case K_WORD: {
            size_t n = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
            if (n == 0 || v[n] != '\0' || n > k->hi)
                return "a bad word";
            memcpy(k->dst, v, n + 1);
            break;
        }
        case K_NONCE:
            if (strcmp(v, p->nonce))
                return "the wrong nonce";
            break;
        }
        if (!end)
            break;
        s = end + 1;
    }
    for (size_t i = 0; i < nkeys; i++)
        if (keys[i].required && !(seen & (1ull << i)))
            return "a missing field";
    return NULL;
}

static int on_line(struct session_proto_parser *p)
{
    char *l = p->line;
    const char *bad;
    if (!strncmp(l, "takod-out ", 10)) {
        if (!p->ready_seen)
            return fault(p, "takod-out before takod-ready");
        char *s = l + 10;
        if ((s[0] != '1' && s[0] != '2') || s[1] != ' ')
            return fault(p, "takod-out: a bad stream");
        uint64_t len;
        if (num(s + 2, SESSION_PROTO_OUT_MAX, &len) < 0 || len == 0)
            return fault(p, "takod-out: a bad length");
        p->out_stream = s[0] - '0';
        p->left = (size_t)len;
        p->state = SP_OUT;
        return 0;
    }
    if (!strncmp(l, "takod-ready ", 12)) {
        struct key k[] = {{"nonce", K_NONCE, NULL, 0, 0, true}};
        if ((bad = pairs(p, l + 12, k, 1)) != NULL)
            return fault(p, "takod-ready: malformed");
        if (p->ready_seen)
            return fault(p, "takod-ready twice");
        p->ready_seen = true;
        if (p->cb && p->cb->ready)
            p->cb->ready(p->arg);
        return 0;
    }
    if (!strncmp(l, "takod-cellend ", 14)) {
        if (!p->ready_seen)
            return fault(p, "takod-cellend before takod-ready");
        struct session_proto_cellend *c = &p->ce;
        memset(c, 0, sizeof *c);
        char reply_error[16] = "";
        struct key k[] = {
            {"n", K_U64, &c->n, 0, SESSION_PROTO_N_MAX, true},
            {"exit_code", K_INT, &c->exit_code, -1, 255, true},
            {"signal", K_INT, &c->signal, 0, 128, true},
            {"timed_out", K_FLAG, &c->timed_out, 0, 0, true},
            {"interrupted", K_FLAG, &c->interrupted, 0, 0, true},
            {"restarted", K_FLAG, &c->restarted, 0, 0, true},
            {"oom", K_FLAG, &c->oom, 0, 0, true},
            {"stdout_bytes", K_U64, &c->stdout_bytes, 0, UINT64_MAX, true},
            {"stderr_bytes", K_U64, &c->stderr_bytes, 0, UINT64_MAX, true},
            {"stdout_truncated", K_FLAG, &c->stdout_truncated, 0, 0, true},
            {"stderr_truncated", K_FLAG, &c->stderr_truncated, 0, 0, true},
            {"start_us", K_U64, &c->start_us, 0, UINT64_MAX, true},
            {"end_us", K_U64, &c->end_us, 0, UINT64_MAX, true},
            {"reply", K_SIZE, &c->reply_len, 0, SESSION_PROTO_REPLY_MAX, true},
            {"nonce", K_NONCE, NULL, 0, 0, true},
            {"error", K_WORD, c->error, 0, sizeof c->error - 1, false},
            {"reply_error", K_WORD, reply_error, 0, sizeof reply_error - 1, false},
        };
        if ((bad = pairs(p, l + 14, k, sizeof k / sizeof k[0])) != NULL)
            return fault(p, strcmp(bad, "a bad number") ? "takod-cellend: malformed"
                                                        : "takod-cellend: a bad number");
        if (reply_error[0] && strcmp(reply_error, "too_big"))
            return fault(p, "takod-cellend: an unknown reply_error");
        c->reply_too_big = reply_error[0] != '\0';
        if (c->end_us < c->start_us)
            return fault(p, "takod-cellend: it ends before it starts");
        if (c->reply_len == 0) {
            if (p->cb && p->cb->cellend)
                p->cb->cellend(p->arg, c, "", 0);
            return 0;
        }
        p->reply = malloc(c->reply_len);
        if (p->reply == NULL) {
            fault(p, "no memory for a reply");
            return -ENOMEM;
        }
        p->reply_fill = 0;
        p->left = c->reply_len;
        p->state = SP_REPLY;
        return 0;
    }
    if (!strncmp(l, "takod-status ", 13)) {
        struct session_proto_status *s = &(struct session_proto_status){0};
        struct key k[] = {
            {"exit_code", K_INT, &s->exit_code, -1, 255, true},
            {"signal", K_INT, &s->signal, 0, 128, true},
            {"timed_out", K_FLAG, &s->timed_out, 0, 0, true},
            {"oom", K_FLAG, &s->oom, 0, 0, true},
            {"stdout_bytes", K_U64, &s->stdout_bytes, 0, UINT64_MAX, true},
            {"stderr_bytes", K_U64, &s->stderr_bytes, 0, UINT64_MAX, true},
            {"stdout_truncated", K_FLAG, &s->stdout_truncated, 0, 0, true},
            {"stderr_truncated", K_FLAG, &s->stderr_truncated, 0, 0, true},
            {"start_us", K_U64, &s->start_us, 0, UINT64_MAX, true},
            {"end_us", K_U64, &s->end_us, 0, UINT64_MAX, true},
            {"cgroup", K_WORD, s->cgroup, 0, sizeof s->cgroup - 1, true},
            {"nonce", K_NONCE, NULL, 0, 0, true},
            {"error", K_WORD, s->error, 0, sizeof s->error - 1, false},
            {"errno", K_INT, &s->err_no, 0, 4095, false},
        };
        if ((bad = pairs(p, l + 13, k, sizeof k / sizeof k[0])) != NULL)
            return fault(p, "takod-status: malformed");
        if (strcmp(s->cgroup, "v1") && strcmp(s->cgroup, "v2") && strcmp(s->cgroup, "none"))
            return fault(p, "takod-status: an unknown cgroup");
        p->state = SP_DONE;
        if (p->cb && p->cb->status)
            p->cb->status(p->arg, s);
        return 1;
    }
    return fault(p, "an unknown frame");
}

int session_proto_feed(struct session_proto_parser *p, const void *data, size_t len)
{
    const char *d = data;
    for (size_t i = 0; i < len;) {
        switch (p->state) {
        case SP_FAILED:
            return -EPROTO;
        case SP_DONE:
            return fault(p, "bytes after takod-status");
        case SP_OUT: {
            size_t take = len - i < p->left ? len - i : p->left;
            if (p->cb && p->cb->out)
                p->cb->out(p->arg, p->out_stream, d + i, take);
            i += take;
            p->left -= take;
            if (p->left == 0)
                p->state = SP_LINE;
            break;
        }
        case SP_REPLY: {
            size_t take = len - i < p->left ? len - i : p->left;
            memcpy(p->reply + p->reply_fill, d + i, take);
            p->reply_fill += take;
            i += take;
            p->left -= take;
            if (p->left == 0) {
                p->state = SP_LINE;
                if (p->cb && p->cb->cellend)
                    p->cb->cellend(p->arg, &p->ce, p->reply, p->reply_fill);
                free(p->reply);
                p->reply = NULL;
            }
            break;
        }
        case SP_LINE: {
            const char *nl = memchr(d + i, '\n', len - i);
            size_t take = nl ? (size_t)(nl - (d + i)) : len - i;
            if (memchr(d + i, '\0', take))
                return fault(p, "a NUL in a line");
            if (take > SESSION_PROTO_LINE_MAX - p->line_len)
                return fault(p, "a line too long");
            memcpy(p->line + p->line_len, d + i, take);
            p->line_len += take;
            i += take;
            if (!nl)
                break;
            i++; /* the '\n' */
            p->line[p->line_len] = '\0';
            p->line_len = 0;
            int rc = on_line(p);
            if (rc < 0)
                return rc;
            break;
        }
        }
    }
    if (p->state == SP_FAILED)
        return -EPROTO;
    return p->state == SP_DONE ? 1 : 0;
}
