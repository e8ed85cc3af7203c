/*
 * mcp.c — `tako mcp`: a Model Context Protocol server on stdio, in front of takod's HTTP
 * API, so that an LLM client can run Python in takod's sandboxes.
 *
 * Transport (MCP 2025-06-18, "stdio"): JSON-RPC 2.0 messages on standard input and output,
 * one per line, UTF-8, never with an embedded newline (jansson's compact output escapes
 * them). stdout carries nothing but the protocol; logs go to stderr. Requests are answered
 * one at a time, in order.
 *
 * Methods: initialize, ping, tools/list, tools/call; the notifications
 * (notifications/initialized, notifications/cancelled, ...) are accepted and never
 * answered. Errors are JSON-RPC errors: -32700 a line that is not JSON, -32600 not a valid
 * request (a batch, a bad id, no method), -32601 an unknown method, -32602 bad params (an
 * unknown tool, arguments that do not match the tool's inputSchema). A tool that ran and
 * failed — takod refused or is unreachable, the code raised — is a result with
 * isError: true, so the model sees why.
 *
 * The tools and their JSON Schemas are one JSON text (TOOLS below); tools/list returns it
 * and tools/call checks the arguments against the same schemas (the subset they use:
 * type, properties, required, additionalProperties, minimum, minLength).
 */
#include "tako.h"
#include "tako/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef TAKO_VERSION
#define TAKO_VERSION "0.0.0"
#endif

#define MCP_PROTOCOL     "2025-06-18"
#define MCP_MAX_LINE     (64u << 20) /* one message; an upload's base64 is the largest */
#define MCP_MAX_DOWNLOAD (8u << 20)  /* session_download: larger files are refused */

#define RPC_PARSE_ERROR      -32700
#define RPC_INVALID_REQUEST  -32600
#define RPC_METHOD_NOT_FOUND -32601
#define RPC_INVALID_PARAMS   -32602
#define RPC_INTERNAL_ERROR   -32603

static const char *const protocol_versions[] = {"2025-06-18", "2025-03-26", "2024-11-05"};

/* clang-format off */
static const char TOOLS[] =
"[{\"name\": \"run_python\", \"title\": \"Run Python once\","
"  \"description\": \"Run a Python 3 program once in a fresh, locked-down container with no network access, and return its stdout, stderr, exit code and the JSON it writes to /output/result.json. Nothing survives the call: to keep variables, imports or files between steps, use session_create and session_run instead. The program reads input_data with json.load(open('/input/data.json')).\","
"  \"inputSchema\": {\"type\": \"object\", \"properties\": {"
"    \"code\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The Python source code to run.\"},"
"    \"input_data\": {\"type\": \"object\", \"description\": \"A JSON object the program can read from /input/data.json.\"},"
"    \"timeout\": {\"type\": \"integer\", \"minimum\": 1, \"description\": \"Seconds before the program is stopped (default: the job type's, usually 30).\"},"
"    \"job_type\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The environment to run in (its image, packages and limits); default 'default'.\"}},"
"   \"required\": [\"code\"], \"additionalProperties\": false}},"
" {\"name\": \"session_create\", \"title\": \"Start a Python session\","
"  \"description\": \"Start a stateful Python session: an interpreter in a container of its own that keeps variables, imports and files from one session_run to the next, like a notebook kernel. Returns session_id. Its working directory is a workspace for files (session_upload, session_download, session_files). It ends after idle_timeout seconds without a call, or with session_close: close it when done.\","
"  \"inputSchema\": {\"type\": \"object\", \"properties\": {"
"    \"job_type\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The environment (image, packages, limits); default 'default'.\"},"
"    \"idle_timeout\": {\"type\": \"integer\", \"minimum\": 1, \"description\": \"Seconds without a call after which the session ends (default: the server's, usually 600).\"}},"
"   \"additionalProperties\": false}},"
" {\"name\": \"session_run\", \"title\": \"Run code in a session\","
"  \"description\": \"Run a cell of Python code in a session made by session_create, in the same namespace as the cells before it. Returns its stdout and stderr, the repr of the value of its last line when that line is an expression (as in a notebook), and the error with its traceback if it raised. A cell that runs past its timeout is interrupted; the session stays usable.\","
"  \"inputSchema\": {\"type\": \"object\", \"properties\": {"
"    \"session_id\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The id session_create returned.\"},"
"    \"code\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The Python code of the cell.\"},"
"    \"timeout\": {\"type\": \"integer\", \"minimum\": 1, \"description\": \"Seconds before the cell is interrupted (default: the job type's).\"},"
"    \"stdin\": {\"type\": \"string\", \"description\": \"Text for the cell's standard input (default: empty).\"}},"
"   \"required\": [\"session_id\", \"code\"], \"additionalProperties\": false}},"
" {\"name\": \"session_upload\", \"title\": \"Write a file into a session\","
"  \"description\": \"Write a file into a session's workspace (the cells' working directory), creating parent directories and replacing an existing file. Give the bytes as content (UTF-8 text) or as content_base64 (binary), exactly one of the two.\","
"  \"inputSchema\": {\"type\": \"object\", \"properties\": {"
"    \"session_id\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The session.\"},"
"    \"path\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The file's path relative to the workspace, e.g. data/input.csv (no leading /, no ..).\"},"
"    \"content\": {\"type\": \"string\", \"description\": \"The file's content as text.\"},"
"    \"content_base64\": {\"type\": \"string\", \"description\": \"The file's content, base64-encoded.\"}},"
"   \"required\": [\"session_id\", \"path\"], \"additionalProperties\": false}},"
" {\"name\": \"session_download\", \"title\": \"Read a file from a session\","
"  \"description\": \"Read a file from a session's workspace (e.g. one a cell wrote). Text files come back as text; binary files as base64. Files over 8 MiB are refused.\","
"  \"inputSchema\": {\"type\": \"object\", \"properties\": {"
"    \"session_id\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The session.\"},"
"    \"path\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The file's path relative to the workspace.\"}},"
"   \"required\": [\"session_id\", \"path\"], \"additionalProperties\": false}},"
" {\"name\": \"session_files\", \"title\": \"List a session's files\","
"  \"description\": \"List a directory of a session's workspace: names, types (file or dir), sizes and modification times.\","
"  \"inputSchema\": {\"type\": \"object\", \"properties\": {"
"    \"session_id\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The session.\"},"
"    \"dir\": {\"type\": \"string\", \"description\": \"A directory relative to the workspace (default: its top).\"}},"
"   \"required\": [\"session_id\"], \"additionalProperties\": false}},"
" {\"name\": \"session_close\", \"title\": \"End a session\","
"  \"description\": \"End a session: its interpreter, container and workspace files are gone. Call it when the work is done.\","
"  \"inputSchema\": {\"type\": \"object\", \"properties\": {"
"    \"session_id\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"The session.\"}},"
"   \"required\": [\"session_id\"], \"additionalProperties\": false}}]";
/* clang-format on */

struct mcp {
    struct remote r;
    json_t *tools; /* TOOLS, parsed */
};

/* ---- output: one JSON-RPC message per line ---- */

static void send_msg(json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (!s) {
        fprintf(stderr, "tako mcp: json_dumps failed; message dropped\n");
        return;
    }
    fputs(s, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(s);
}

static void reply_result(json_t *id, json_t *result)
{
    json_t *m = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                          "result", result);
    send_msg(m);
    json_decref(m);
}

static void reply_error(json_t *id, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(json_t *id, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *text = json_string(msg);
    if (!text) /* a caller's text that was not UTF-8 */
        text = json_string("invalid request");
    json_t *m = json_pack("{s:s, s:O, s:{s:i, s:o}}", "jsonrpc", "2.0", "id", id ? id : json_null(),
                          "error", "code", code, "message", text);
    send_msg(m);
    json_decref(m);
}

/* ---- text helpers ---- */

struct text {
    char *buf;
    size_t len;
    FILE *f;
};

static void text_open(struct text *t)
{
    t->buf = NULL;
    t->len = 0;
    t->f = open_memstream(&t->buf, &t->len);
}

/* Close the stream; the text (never NULL; caller frees). */
static char *text_close(struct text *t)
{
    if (t->f)
        fclose(t->f);
    t->f = NULL;
    return t->buf ? t->buf : strdup("");
}

static const char *str_of(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* "label:\n<s>\n" when s is not empty. */
static void text_section(FILE *f, const char *label, const char *s)
{
    if (!s || !*s)
        return;
    size_t n = strlen(s);
    fprintf(f, "%s:\n%s%s", label, s, s[n - 1] == '\n' ? "" : "\n");
}

/* A tools/call result: content [{type: text, text}], structuredContent (an object; taken),
 * isError. */
static json_t *tool_result(const char *text, json_t *structured, bool is_error)
{
    json_t *t = json_string(text);
    if (!t)
        t = json_string("(the answer is not valid UTF-8)");
    json_t *res = json_pack("{s:[{s:s, s:o}], s:b}", "content", "type", "text", "text", t,
                            "isError", is_error);
    if (structured && json_is_object(structured))
        json_object_set_new(res, "structuredContent", structured);
    else
        json_decref(structured);
    return res;
}

static json_t *tool_error(json_t *structured, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *tool_error(json_t *structured, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    json_t *res = tool_result(s ? s : "error", structured, true);
    free(s);
    return res;
}

/* ---- base64 (RFC 4648, standard alphabet, padded) ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const unsigned char *p, size_t n)
{
    size_t olen = (n + 2) / 3 * 4;
    char *o = malloc(olen + 1), *w = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        *w++ = B64[(v >> 18) & 63];
        *w++ = B64[(v >> 12) & 63];
        *w++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *w++ = i + 2 < n ? B64[v & 63] : '=';
    }
    *w = '\0';
    return o;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Strict: length a multiple of 4, only the alphabet, '=' only as the last one or two. */
static int b64_decode(const char *s, size_t n, unsigned char **out, size_t *olen)
{
    if (n % 4)
        return -EINVAL;
    unsigned char *o = malloc(n / 4 * 3 + 1);
    if (!o)
        return -ENOMEM;
    size_t w = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = s[i + (size_t)k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad || (v[k] = b64_value(c)) < 0) {
                free(o);
                return -EINVAL;
            }
        }
        uint32_t x =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        o[w++] = (unsigned char)(x >> 16);
        if (pad < 2)
            o[w++] = (unsigned char)(x >> 8);
        if (pad < 1)
            o[w++] = (unsigned char)x;
    }
    *out = o;
    *olen = w;
    return 0;
}

/* ---- arguments against a tool's inputSchema ---- */

static bool integral(const json_t *v)
{
    if (json_is_integer(v))
        return true;
    if (!json_is_real(v))
        return false;
    double d = json_real_value(v);
    return d == (double)(long long)d && d > -9e15 && d < 9e15;
}

static long long int_of(const json_t *v)
{
    return json_is_integer(v) ? (long long)json_integer_value(v) : (long long)json_real_value(v);
}

/* 0, or -1 with the reason in why. */
static int check_args(const json_t *schema, const json_t *args, char *why, size_t len)
{
    json_t *props = json_object_get(schema, "properties");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)args, k, v)
    {
        json_t *p = json_object_get(props, k);
        if (!p) {
            snprintf(why, len, "unknown argument \"%.100s\"", k);
            return -1;
        }
        const char *type = str_of(p, "type");
        bool ok = !strcmp(type, "string")    ? json_is_string(v)
                  : !strcmp(type, "integer") ? integral(v)
                  : !strcmp(type, "number")  ? json_is_number(v)
                  : !strcmp(type, "object")  ? json_is_object(v)
                  : !strcmp(type, "boolean") ? json_is_boolean(v)
                                             : false;
        if (!ok) {
            snprintf(why, len, "\"%s\" must be %s %s", k, !strcmp(type, "integer") ? "an" : "a",
                     type);
            return -1;
        }
        json_t *min = json_object_get(p, "minimum");
        if (min && int_of(v) < (long long)json_integer_value(min)) {
            snprintf(why, len, "\"%s\" must be at least %lld", k,
                     (long long)json_integer_value(min));
            return -1;
        }
        json_t *minlen = json_object_get(p, "minLength");
        if (minlen && json_string_length(v) < (size_t)json_integer_value(minlen)) {
            snprintf(why, len, "\"%s\" must not be empty", k);
            return -1;
        }
    }
    size_t i;
    json_array_foreach(json_object_get(schema, "required"), i, v)
    {
        if (!json_object_get(args, json_string_value(v))) {
            snprintf(why, len, "\"%s\" is required", json_string_value(v));
            return -1;
        }
    }
    return 0;
}

/* ---- takod ---- */

struct call {
    struct http_resp resp;
    json_t *json; /* the answer, when it is JSON */
    int ok;       /* 1: a 2xx answer */
};

/* One request. On failure, *err is a tool error result (the reason as text). */
static int api(struct mcp *m, const char *method, const char *path, const void *body,
               size_t body_len, const char *content_type, long timeout_s, struct call *c,
               json_t **err)
{
    memset(c, 0, sizeof *c);
    *err = NULL;
    int trc =
        http_request_raw(&m->r.c, method, path, body, body_len, content_type, timeout_s, &c->resp);
    if (trc < 0) {
        fprintf(stderr, "tako mcp: %s %s: cannot reach takod at %s: %s\n", method, path, m->r.base,
                c->resp.err);
        *err = tool_error(NULL, "cannot reach takod at %s: %s", m->r.base, c->resp.err);
        return -1;
    }
    if (c->resp.len > 0)
        c->json = json_loadb(c->resp.body, c->resp.len, 0, NULL);
    if (c->resp.status >= 200 && c->resp.status < 300) {
        c->ok = 1;
        return 0;
    }
    char detail[1024];
    remote_format_detail(&c->resp, detail, sizeof detail);
    const char *extra = str_of(c->json, "end_reason");
    fprintf(stderr, "tako mcp: %s %s: HTTP %ld: %s\n", method, path, c->resp.status, detail);
    json_t *st = json_is_object(c->json) ? json_deep_copy(c->json) : json_object();
    json_object_set_new(st, "status_code", json_integer(c->resp.status));
    const char *hint = c->resp.status == 401 || c->resp.status == 403
                           ? " (takod wants a valid API key: `tako mcp --api-key KEY` or "
                             "TAKO_API_KEY)"
                       : c->resp.status == 409 ? " (a cell is running in this session)"
                       : c->resp.status == 410 ? " (the session has ended: create a new one)"
                                               : "";
    *err = tool_error(st, "takod answered HTTP %ld: %s%s%s%s", c->resp.status, detail,
                      extra ? ": " : "", extra ? extra : "", hint);
    return -1;
}

static void call_free(struct call *c)
{
    json_decref(c->json);
    http_resp_free(&c->resp);
}

static char *file_route(const char *id, const char *path, char *why, size_t len)
{
    char *ep = tako_workspace_escape(path, why, len), *suffix = NULL, *route = NULL;
    if (ep && asprintf(&suffix, "/files/%s", ep) >= 0)
        route = tako_session_route(id, suffix);
    free(ep);
    free(suffix);
    return route;
}

/* ---- the tools ---- */

static json_t *tool_run_python(struct mcp *m, json_t *args)
{
    json_t *body = json_object();
    const char *keys[] = {"code", "input_data", "timeout", "job_type"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(args, keys[i]);
        if (v)
            json_object_set_new(body, keys[i],
                                integral(v) && !json_is_integer(v) ? json_integer(int_of(v))
                                                                   : json_incref(v));
    }
    json_t *t = json_object_get(args, "timeout");
    long timeout = t ? (long)int_of(t) + 180 : 960;
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct call c;
    json_t *err;
    int rc = api(m, "POST", "/execute", text, text ? strlen(text) : 0, "application/json", timeout,
                 &c, &err);
    free(text);
    if (rc < 0) {
        call_free(&c);
        return err;
    }
    if (!json_is_object(c.json)) {
        call_free(&c);
        return tool_error(NULL, "takod's answer to POST /execute is not a JSON object");
    }
    json_t *a = c.json;
    const char *status = str_of(a, "status");
    bool success = json_is_true(json_object_get(a, "success"));
    if (!status)
        status = success ? "succeeded" : "failed";
    else
        success = !strcmp(status, "succeeded");
    struct text tx;
    text_open(&tx);
    fprintf(tx.f, "status: %s", status);
    json_t *ec = json_object_get(a, "exit_code");
    if (json_is_integer(ec))
        fprintf(tx.f, ", exit code %lld", (long long)json_integer_value(ec));
    double ms = tako_duration_ms(a);
    if (ms >= 0)
        fprintf(tx.f, ", %.0f ms", ms);
    const char *id = str_of(a, "execution_id") ? str_of(a, "execution_id") : str_of(a, "job_id");
    if (id)
        fprintf(tx.f, " (job %s)", id);
    fputc('\n', tx.f);
    text_section(tx.f, "stdout", str_of(a, "stdout"));
    text_section(tx.f, "stderr", str_of(a, "stderr"));
    json_t *out = json_object_get(a, "output");
    if (out && !json_is_null(out)) {
        char *s = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
        fprintf(tx.f, "output (/output/result.json): %s\n", s ? s : "?");
        free(s);
    }
    const char *etype, *emsg;
    tako_error_parts(a, &etype, &emsg);
    if (!success && (etype || emsg))
        fprintf(tx.f, "error: %s%s%s\n", etype ? etype : "", etype && emsg ? ": " : "",
                emsg ? emsg : "");
    char *s = text_close(&tx);
    json_t *res = tool_result(s, json_incref(a), !success);
    free(s);
    call_free(&c);
    return res;
}

static json_t *tool_session_create(struct mcp *m, json_t *args)
{
    json_t *body = json_object();
    json_t *jt = json_object_get(args, "job_type"), *idle = json_object_get(args, "idle_timeout");
    if (jt)
        json_object_set(body, "job_type", jt);
    if (idle)
        json_object_set_new(body, "idle_timeout", json_integer(int_of(idle)));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct call c;
    json_t *err;
    int rc = api(m, "POST", "/sessions", text, text ? strlen(text) : 0, "application/json", 180, &c,
                 &err);
    free(text);
    if (rc < 0) {
        call_free(&c);
        return err;
    }
    const char *id = str_of(c.json, "session_id");
    if (!id) {
        call_free(&c);
        return tool_error(NULL, "takod's answer to POST /sessions has no session_id");
    }
    struct text tx;
    text_open(&tx);
    fprintf(tx.f, "session_id: %s\n", id);
    fprintf(tx.f, "status: %s; job type %s", str_of(c.json, "status") ?: "?",
            str_of(c.json, "job_type") ?: "default");
    json_t *it = json_object_get(c.json, "idle_timeout");
    if (json_is_integer(it))
        fprintf(tx.f, "; ends after %lld s without a call", (long long)json_integer_value(it));
    if (str_of(c.json, "expires_at"))
        fprintf(tx.f, " and at %s at the latest", str_of(c.json, "expires_at"));
    fprintf(tx.f, "\nworking directory (the workspace): %s\n",
            str_of(c.json, "workspace") ?: "/output");
    char *s = text_close(&tx);
    json_t *res = tool_result(s, json_incref(c.json), false);
    free(s);
    call_free(&c);
    return res;
}

static json_t *tool_session_run(struct mcp *m, json_t *args)
{
    const char *id = str_of(args, "session_id");
    json_t *body = json_object();
    json_object_set(body, "code", json_object_get(args, "code"));
    json_t *t = json_object_get(args, "timeout"), *in = json_object_get(args, "stdin");
    if (t)
        json_object_set_new(body, "timeout", json_integer(int_of(t)));
    if (in)
        json_object_set(body, "stdin", in);
    char *text = json_dumps(body, JSON_COMPACT), *route = tako_session_route(id, "/execute");
    json_decref(body);
    struct call c;
    json_t *err;
    int rc = api(m, "POST", route ? route : "/", text, text ? strlen(text) : 0, "application/json",
                 t ? (long)int_of(t) + 60 : 960, &c, &err);
    free(text);
    free(route);
    if (rc < 0) {
        call_free(&c);
        return err;
    }
    json_t *a = c.json;
    const char *status = str_of(a, "status");
    if (!status) {
        call_free(&c);
        return tool_error(NULL, "takod's cell answer has no status");
    }
    bool ok = !strcmp(status, "ok");
    struct text tx;
    text_open(&tx);
    json_t *n = json_object_get(a, "execution_count");
    fprintf(tx.f, "cell [%lld]: %s\n", (long long)json_integer_value(n), status);
    text_section(tx.f, "stdout", str_of(a, "stdout"));
    text_section(tx.f, "stderr", str_of(a, "stderr"));
    if (str_of(a, "result"))
        fprintf(tx.f, "result (repr of the last expression): %s\n", str_of(a, "result"));
    json_t *e = json_object_get(a, "error");
    if (json_is_object(e)) {
        const char *tb = str_of(e, "traceback");
        if (tb && *tb)
            text_section(tx.f, "error", tb);
        else
            fprintf(tx.f, "error: %s: %s\n", str_of(e, "type") ?: "error",
                    str_of(e, "message") ?: "");
    }
    if (json_is_true(json_object_get(a, "stdout_truncated")) ||
        json_is_true(json_object_get(a, "stderr_truncated")))
        fprintf(tx.f, "note: the output was truncated\n");
    if (json_is_true(json_object_get(a, "restarted")))
        fprintf(tx.f, "note: the interpreter was restarted; variables and imports are gone, "
                      "workspace files stay\n");
    json_t *fc = json_object_get(a, "files_changed"), *f;
    size_t i;
    if (json_array_size(fc) > 0) {
        fprintf(tx.f, "files changed:");
        json_array_foreach(fc, i, f)
        {
            fprintf(tx.f, "%s %s (%lld bytes)", i ? "," : "", str_of(f, "path") ?: "?",
                    (long long)json_integer_value(json_object_get(f, "size")));
        }
        fputc('\n', tx.f);
    }
    char *s = text_close(&tx);
    json_t *res = tool_result(s, json_incref(a), !ok);
    free(s);
    call_free(&c);
    return res;
}

static json_t *tool_session_upload(struct mcp *m, json_t *args)
{
    const char *id = str_of(args, "session_id"), *path = str_of(args, "path");
    json_t *text = json_object_get(args, "content"), *b64 = json_object_get(args, "content_base64");
    if (!!text == !!b64)
        return tool_error(NULL, "give the file's bytes as exactly one of content (text) and "
                                "content_base64");
    char why[256];
    char *route = file_route(id, path, why, sizeof why);
    if (!route)
        return tool_error(NULL, "path \"%s\": %s", path, why);
    unsigned char *data = NULL;
    size_t len = 0;
    if (b64) {
        int drc = b64_decode(json_string_value(b64), json_string_length(b64), &data, &len);
        if (drc < 0) {
            free(route);
            return tool_error(NULL, "content_base64 is not valid base64 (RFC 4648: A-Z a-z 0-9 "
                                    "+ /, padded with =, no whitespace)");
        }
    }
    struct call c;
    json_t *err;
    int rc = api(m, "PUT", route, b64 ? (const void *)data : json_string_value(text),
                 b64 ? len : json_string_length(text), "application/octet-stream", 600, &c, &err);
    free(route);
    free(data);
    if (rc < 0) {
        call_free(&c);
        return err;
    }
    json_t *st = json_is_object(c.json) ? json_incref(c.json) : json_object();
    json_t *size = json_object_get(st, "size");
    char *s = NULL;
    if (asprintf(&s, "uploaded %s (%lld bytes, sha256 %s)", str_of(st, "path") ?: path,
                 json_is_integer(size) ? (long long)json_integer_value(size)
                                       : (long long)(b64 ? len : json_string_length(text)),
                 str_of(st, "sha256") ?: "?") < 0)
        s = NULL;
    json_t *res = tool_result(s ? s : "uploaded", st, false);
    free(s);
    call_free(&c);
    return res;
}

static json_t *tool_session_download(struct mcp *m, json_t *args)
{
    const char *id = str_of(args, "session_id"), *path = str_of(args, "path");
    char why[256];
    char *route = file_route(id, path, why, sizeof why);
    if (!route)
        return tool_error(NULL, "path \"%s\": %s", path, why);
    struct call c;
    json_t *err;
    int rc = api(m, "GET", route, NULL, 0, NULL, 600, &c, &err);
    free(route);
    if (rc < 0) {
        call_free(&c);
        return err;
    }
    char hex[65];
    sha256_hex(c.resp.body, c.resp.len, hex);
    if (c.resp.etag[0] && strlen(c.resp.etag) == 64 && strcasecmp(c.resp.etag, hex) != 0) {
        call_free(&c);
        return tool_error(NULL, "%s: the bytes do not match the ETag (sha256)", path);
    }
    if (c.resp.len > MCP_MAX_DOWNLOAD) {
        size_t n = c.resp.len;
        call_free(&c);
        return tool_error(NULL,
                          "%s is %zu bytes, more than the %u MiB an answer may carry; read "
                          "parts of it with session_run instead",
                          path, n, MCP_MAX_DOWNLOAD >> 20);
    }
    /* text when it is UTF-8 without NULs (jansson refuses invalid UTF-8) */
    json_t *content =
        memchr(c.resp.body, '\0', c.resp.len) ? NULL : json_stringn(c.resp.body, c.resp.len);
    bool is_text = content != NULL;
    char *b64 = NULL;
    if (!is_text) {
        b64 = b64_encode((const unsigned char *)c.resp.body, c.resp.len);
        content = b64 ? json_string(b64) : NULL;
    }
    if (!content) {
        free(b64);
        call_free(&c);
        return tool_error(NULL, "out of memory");
    }
    json_t *st =
        json_pack("{s:s, s:I, s:s, s:s, s:o}", "path", path, "size", (json_int_t)c.resp.len,
                  "sha256", hex, "encoding", is_text ? "utf-8" : "base64", "content", content);
    char *s = NULL;
    if (is_text) {
        s = strndup(c.resp.body, c.resp.len);
    } else if (asprintf(&s, "%s is binary (%zu bytes, sha256 %s); its content, base64:\n%s", path,
                        c.resp.len, hex, b64) < 0) {
        s = NULL;
    }
    json_t *res = tool_result(s ? s : "", st, false);
    free(s);
    free(b64);
    call_free(&c);
    return res;
}

static json_t *tool_session_files(struct mcp *m, json_t *args)
{
    const char *id = str_of(args, "session_id"), *dir = str_of(args, "dir");
    char *suffix = NULL;
    if (dir && *dir) {
        char why[256];
        char *ed = tako_workspace_escape(dir, why, sizeof why);
        if (!ed)
            return tool_error(NULL, "dir \"%s\": %s", dir, why);
        char *q = http_escape(dir);
        if (!q || asprintf(&suffix, "/files?dir=%s", q) < 0)
            suffix = NULL;
        free(q);
        free(ed);
        if (!suffix)
            return tool_error(NULL, "out of memory");
    }
    char *route = tako_session_route(id, suffix ? suffix : "/files");
    free(suffix);
    struct call c;
    json_t *err;
    int rc = api(m, "GET", route ? route : "/", NULL, 0, NULL, 60, &c, &err);
    free(route);
    if (rc < 0) {
        call_free(&c);
        return err;
    }
    struct text tx;
    text_open(&tx);
    json_t *items = json_object_get(c.json, "items"), *f;
    size_t i;
    if (json_array_size(items) == 0)
        fprintf(tx.f, "(empty)\n");
    json_array_foreach(items, i, f)
    {
        const char *type = str_of(f, "type");
        bool isdir = type && !strcmp(type, "dir");
        fprintf(tx.f, "%s%s", str_of(f, "path") ?: str_of(f, "name") ?: "?", isdir ? "/" : "");
        if (!isdir)
            fprintf(tx.f, " (%lld bytes)",
                    (long long)json_integer_value(json_object_get(f, "size")));
        fputc('\n', tx.f);
    }
    if (json_is_true(json_object_get(c.json, "truncated")))
        fprintf(tx.f, "(the listing was cut)\n");
    char *s = text_close(&tx);
    json_t *res =
        tool_result(s, json_is_object(c.json) ? json_incref(c.json) : json_object(), false);
    free(s);
    call_free(&c);
    return res;
}

static json_t *tool_session_close(struct mcp *m, json_t *args)
{
    const char *id = str_of(args, "session_id");
    char *route = tako_session_route(id, NULL);
    struct call c;
    json_t *err;
    int rc = api(m, "DELETE", route ? route : "/", NULL, 0, NULL, 60, &c, &err);
    free(route);
    if (rc < 0) {
        call_free(&c);
        return err;
    }
    char *s = NULL;
    if (asprintf(&s, "session %s: %s", id, str_of(c.json, "status") ?: "closed") < 0)
        s = NULL;
    json_t *res = tool_result(s ? s : "closed",
                              json_is_object(c.json) ? json_incref(c.json) : json_object(), false);
    free(s);
    call_free(&c);
    return res;
}

static const struct {
    const char *name;
    json_t *(*fn)(struct mcp *, json_t *);
} tool_fns[] = {
    {"run_python", tool_run_python},
    {"session_create", tool_session_create},
    {"session_run", tool_session_run},
    {"session_upload", tool_session_upload},
    {"session_download", tool_session_download},
    {"session_files", tool_session_files},
    {"session_close", tool_session_close},
};

/* ---- methods ---- */

static void do_initialize(json_t *id, json_t *params)
{
    json_t *v = json_object_get(params, "protocolVersion");
    if (!json_is_string(v)) {
        reply_error(id, RPC_INVALID_PARAMS,
                    "initialize: params.protocolVersion (a string) is "
                    "required");
        return;
    }
    const char *want = json_string_value(v), *chosen = MCP_PROTOCOL;
    for (size_t i = 0; i < sizeof protocol_versions / sizeof protocol_versions[0]; i++)
        if (!strcmp(want, protocol_versions[i]))
            chosen = protocol_versions[i];
    json_t *res = json_pack(
        "{s:s, s:{s:{s:b}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", chosen, "capabilities",
        "tools", "listChanged", 0, "serverInfo", "name", "tako-mcp", "title",
        "takod code execution", "version", TAKO_VERSION, "instructions",
        "Run Python in takod's sandboxes: run_python for a one-off program; session_create, "
        "then session_run for step-by-step work that keeps state (close it with session_close). "
        "Containers have no network access.");
    reply_result(id, res);
}

static void do_tools_call(struct mcp *m, json_t *id, json_t *params)
{
    json_t *name = json_object_get(params, "name"), *args = json_object_get(params, "arguments");
    if (!json_is_string(name)) {
        reply_error(id, RPC_INVALID_PARAMS, "tools/call: params.name (a string) is required");
        return;
    }
    if (args && !json_is_object(args) && !json_is_null(args)) {
        reply_error(id, RPC_INVALID_PARAMS, "tools/call: params.arguments must be an object");
        return;
    }
    const char *n = json_string_value(name);
    json_t *tool = NULL, *t;
    size_t i;
    json_array_foreach(m->tools, i, t)
    {
        if (!strcmp(str_of(t, "name"), n))
            tool = t;
    }
    if (!tool) {
        reply_error(id, RPC_INVALID_PARAMS, "Unknown tool: %.200s", n);
        return;
    }
    json_t *empty = json_object();
    if (!args || json_is_null(args))
        args = empty;
    char why[512];
    if (check_args(json_object_get(tool, "inputSchema"), args, why, sizeof why) < 0) {
        reply_error(id, RPC_INVALID_PARAMS, "Invalid arguments for %s: %s", n, why);
        json_decref(empty);
        return;
    }
    json_t *res = NULL;
    for (size_t k = 0; k < sizeof tool_fns / sizeof tool_fns[0]; k++)
        if (!strcmp(tool_fns[k].name, n))
            res = tool_fns[k].fn(m, args);
    json_decref(empty);
    if (!res) {
        reply_error(id, RPC_INTERNAL_ERROR, "%s: no result", n);
        return;
    }
    reply_result(id, res);
}

static void handle(struct mcp *m, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!msg) {
        reply_error(NULL, RPC_PARSE_ERROR, "Parse error: %s (column %d)", jerr.text, jerr.column);
        return;
    }
    if (json_is_array(msg)) {
        reply_error(NULL, RPC_INVALID_REQUEST,
                    "Invalid Request: batches are not supported (MCP 2025-06-18)");
        goto out;
    }
    if (!json_is_object(msg)) {
        reply_error(NULL, RPC_INVALID_REQUEST, "Invalid Request: not a JSON object");
        goto out;
    }
    json_t *id = json_object_get(msg, "id"), *method = json_object_get(msg, "method");
    if (id && !json_is_string(id) && !json_is_integer(id)) {
        reply_error(NULL, RPC_INVALID_REQUEST,
                    "Invalid Request: id must be a string or an integer");
        goto out;
    }
    const char *ver = str_of(msg, "jsonrpc");
    if (!ver || strcmp(ver, "2.0") != 0) {
        if (id)
            reply_error(id, RPC_INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"");
        goto out;
    }
    if (!method) {
        /* a response (to a request we never send) or garbage; only a request has an id */
        if (id && !json_object_get(msg, "result") && !json_object_get(msg, "error"))
            reply_error(id, RPC_INVALID_REQUEST, "Invalid Request: no method");
        goto out;
    }
    if (!json_is_string(method)) {
        if (id)
            reply_error(id, RPC_INVALID_REQUEST, "Invalid Request: method must be a string");
        goto out;
    }
    const char *name = json_string_value(method);
    if (!id) /* a notification: notifications/initialized, cancelled, ...: nothing to say */
        goto out;
    json_t *params = json_object_get(msg, "params");
    if (params && !json_is_object(params)) {
        reply_error(id, RPC_INVALID_PARAMS, "Invalid params: params must be an object");
        goto out;
    }
    if (!strcmp(name, "initialize"))
        do_initialize(id, params);
    else if (!strcmp(name, "ping"))
        reply_result(id, json_object());
    else if (!strcmp(name, "tools/list"))
        reply_result(id, json_pack("{s:O}", "tools", m->tools));
    else if (!strcmp(name, "tools/call"))
        do_tools_call(m, id, params);
    else
        reply_error(id, RPC_METHOD_NOT_FOUND, "Method not found: %.200s", name);
out:
    json_decref(msg);
}

/* One line of at most MCP_MAX_LINE bytes (without its newline); longer ones are read to
 * their end and reported with *too_long. 0, or -1 at the end of input. */
static int read_message(char **buf, size_t *cap, size_t *len, bool *too_long)
{
    *len = 0;
    *too_long = false;
    int c;
    bool any = false;
    while ((c = getc_unlocked(stdin)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        if (*len >= MCP_MAX_LINE) {
            *too_long = true;
            continue;
        }
        if (*len + 1 >= *cap) {
            size_t ncap = *cap ? *cap * 2 : 65536;
            char *g = realloc(*buf, ncap);
            if (!g) {
                *too_long = true;
                continue;
            }
            *buf = g;
            *cap = ncap;
        }
        (*buf)[(*len)++] = (char)c;
    }
    if (!any)
        return -1;
    if (*len > 0 && (*buf)[*len - 1] == '\r')
        (*len)--;
    if (*buf)
        (*buf)[*len] = '\0';
    return 0;
}

int cmd_mcp(struct args *a)
{
    struct mcp m;
    if (a->json) {
        tako_usage_error(a->cmd, "--json does not apply: the protocol is JSON already");
        return TAKO_EXIT_USAGE;
    }
    if (remote_init(a, &m.r) < 0)
        return TAKO_EXIT_USAGE;
    json_error_t jerr;
    m.tools = json_loads(TOOLS, 0, &jerr);
    if (!m.tools) {
        fprintf(stderr, "tako mcp: the built-in tool list does not parse: %s (column %d)\n",
                jerr.text, jerr.column);
        return TAKO_EXIT_INFRA;
    }
    fprintf(stderr, "tako mcp: serving takod at %s on stdio (MCP %s)\n", m.r.base, MCP_PROTOCOL);
    char *buf = NULL;
    size_t cap = 0, len;
    bool too_long;
    while (read_message(&buf, &cap, &len, &too_long) == 0) {
        if (too_long) {
            reply_error(NULL, RPC_PARSE_ERROR, "Parse error: a message is larger than %u MiB",
                        MCP_MAX_LINE >> 20);
            continue;
        }
        if (len == 0 || strspn(buf, " \t\r") == len)
            continue;
        handle(&m, buf, len);
    }
    free(buf);
    json_decref(m.tools);
    fprintf(stderr, "tako mcp: standard input ended\n");
    return TAKO_EXIT_OK;
}
