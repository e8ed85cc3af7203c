/*
 * jsonspan.c — see jsonspan.h. A single forward pass over the object: for each member, the
 * key is decoded into a small buffer (a key longer than it cannot be the one asked for),
 * and the value is skipped by tracking strings and bracket depth only — no recursion, so
 * nesting depth costs nothing.
 */
#include "tako/jsonspan.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

static size_t skip_ws(const char *t, size_t len, size_t i)
{
    while (i < len && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r'))
        i++;
    return i;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A string starting at t[i] == '"': returns the index just past its closing quote, or 0.
 * When `out` is given, the decoded bytes go there (ASCII escapes only: a \u escape of a
 * character above 0x7f, or a string longer than `cap`, sets *fits = false). */
static size_t scan_string(const char *t, size_t len, size_t i, char *out, size_t cap,
                          size_t *outlen, bool *fits)
{
    size_t n = 0;
    for (i++; i < len; i++) {
        char c = t[i];
        if (c == '"') {
            if (outlen)
                *outlen = n;
            return i + 1;
        }
        if (c == '\\') {
            if (++i >= len)
                return 0;
            char e = t[i];
            if (e == 'u') {
                if (i + 4 >= len)
                    return 0;
                int v = 0;
                for (int k = 1; k <= 4; k++) {
                    int h = hexval(t[i + k]);
                    if (h < 0)
                        return 0;
                    v = v * 16 + h;
                }
                i += 4;
                if (v > 0x7f && fits)
                    *fits = false;
                c = (char)v;
            } else {
                static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                const char *p = memchr(from, e, sizeof from - 1);
                if (!p)
                    return 0;
                c = to[p - from];
            }
        }
        if (out) {
            if (n < cap)
                out[n] = c;
            else if (fits)
                *fits = false;
        }
        n++;
    }
    return 0;
}

/* A value starting at t[i] (not whitespace): the index just past it, or 0. */
static size_t scan_value(const char *t, size_t len, size_t i)
{
    if (i >= len)
        return 0;
    if (t[i] == '"')
        return scan_string(t, len, i, NULL, 0, NULL, NULL);
    if (t[i] == '{' || t[i] == '[') {
        size_t depth = 0;
        while (i < len) {
            char c = t[i];
            if (c == '"') {
                i = scan_string(t, len, i, NULL, 0, NULL, NULL);
                if (!i)
                    return 0;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']')
                if (--depth == 0)
                    return i + 1;
            i++;
        }
        return 0;
    }
    size_t start = i; /* a number or a literal: up to the next delimiter */
    while (i < len && !strchr(",}] \t\r\n", t[i]) && t[i] != '\0')
        i++;
    return i > start ? i : 0;
}

int json_member_span(const char *text, size_t len, const char *key, size_t *off, size_t *vlen)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(text, len, 0);
    if (i >= len || text[i] != '{')
        return -EINVAL;
    i = skip_ws(text, len, i + 1);
    if (i < len && text[i] == '}')
        return -ENOENT;
    bool found = false;
    while (i < len) {
        if (text[i] != '"')
            return -EINVAL;
        char name[64];
        size_t nlen = 0;
        bool fits = true;
        i = scan_string(text, len, i, name, sizeof name, &nlen, &fits);
        if (!i)
            return -EINVAL;
        i = skip_ws(text, len, i);
        if (i >= len || text[i] != ':')
            return -EINVAL;
        i = skip_ws(text, len, i + 1);
        size_t end = scan_value(text, len, i);
        if (!end)
            return -EINVAL;
        if (fits && nlen == klen && memcmp(name, key, klen) == 0) {
            *off = i;
            *vlen = end - i;
            found = true;
        }
        i = skip_ws(text, len, end);
        if (i < len && text[i] == ',') {
            i = skip_ws(text, len, i + 1);
            continue;
        }
        if (i < len && text[i] == '}')
            return found ? 0 : -ENOENT;
        return -EINVAL;
    }
    return -EINVAL;
}
