/*
 * test_jsonspan.c — json_member_span finds a member's value as written (spacing, key order
 * and number spelling kept), decodes escaped keys, takes the last of duplicate keys, and
 * stays inside its input on anything truncated or malformed.
 */
#include "tako/jsonspan.h"
#include "tk_test.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *span_of(const char *text, const char *key, int *rc)
{
    size_t off = 0, n = 0;
    *rc = json_member_span(text, strlen(text), key, &off, &n);
    if (*rc < 0)
        return NULL;
    char *s = strndup(text + off, n);
    TK_ASSERT(s);
    return s;
}

TK_TEST(value_kept_byte_for_byte)
{
    int rc;
    const char *body = "{ \"code\" : \"print(1)\",\n  \"input_data\" :  {\"b\": 1,  \"a\": "
                       "[1, 2.50, {\"z\":true}], \"s\": \"}\\\"]\"}  , \"timeout\": 5 }";
    char *v = span_of(body, "input_data", &rc);
    TK_ASSERT_EQ(rc, 0);
    TK_ASSERT(!strcmp(v, "{\"b\": 1,  \"a\": [1, 2.50, {\"z\":true}], \"s\": \"}\\\"]\"}"));
    free(v);
    v = span_of(body, "timeout", &rc);
    TK_ASSERT(v && !strcmp(v, "5"));
    free(v);
    v = span_of(body, "code", &rc);
    TK_ASSERT(v && !strcmp(v, "\"print(1)\""));
    free(v);
}

TK_TEST(escaped_keys_are_decoded_and_last_duplicate_wins)
{
    int rc;
    char *v = span_of("{\"input\\u005fdata\": {\"x\": 1}}", "input_data", &rc);
    TK_ASSERT(v && !strcmp(v, "{\"x\": 1}"));
    free(v);
    v = span_of("{\"input_data\": 1, \"input_data\": [2]}", "input_data", &rc);
    TK_ASSERT(v && !strcmp(v, "[2]"));
    free(v);
    /* a non-ASCII escape or a long key is never the ASCII key asked for */
    TK_ASSERT(!span_of("{\"input_dat\\u00e1\": 1}", "input_data", &rc) && rc == -ENOENT);
    TK_ASSERT(!span_of("{\"input_datainput_datainput_datainput_datainput_datainput_datainput_"
                       "data\": 1}",
                       "input_data", &rc) &&
              rc == -ENOENT);
}

TK_TEST(absent_empty_and_literals)
{
    int rc;
    TK_ASSERT(!span_of("{}", "input_data", &rc) && rc == -ENOENT);
    TK_ASSERT(!span_of(" { } ", "input_data", &rc) && rc == -ENOENT);
    char *v = span_of("{\"a\":null,\"input_data\":null}", "input_data", &rc);
    TK_ASSERT(v && !strcmp(v, "null"));
    free(v);
    v = span_of("{\"input_data\":-1.5e+3}", "input_data", &rc);
    TK_ASSERT(v && !strcmp(v, "-1.5e+3"));
    free(v);
}

TK_TEST(malformed_or_cut_short_input_is_einval)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{",
        "{\"a\"",
        "{\"a\":",
        "{\"a\":1",
        "{\"a\":1,",
        "{\"a\" 1}",
        "{a:1}",
        "{\"a\":{\"b\":[1,2}",
        "{\"a\":\"x",
        "{\"a\\",
        "{\"\\u12\":1}",
        "{\"\\q\":1}",
        "{\"a\":1 \"b\":2}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc;
        TK_ASSERT(!span_of(bad[i], "a", &rc));
        TK_ASSERT_EQ(rc, -EINVAL);
    }
    /* a length shorter than the text: nothing past it is read */
    size_t off, n;
    TK_ASSERT_EQ(json_member_span("{\"a\":123}", 7, "a", &off, &n), -EINVAL);
}

TK_TEST(deep_nesting_costs_no_stack)
{
    size_t depth = 200000, len = 2 * depth + 32;
    char *t = malloc(len);
    TK_ASSERT(t);
    size_t i = 0;
    i += (size_t)sprintf(t, "{\"input_data\":");
    for (size_t k = 0; k < depth; k++)
        t[i++] = '[';
    for (size_t k = 0; k < depth; k++)
        t[i++] = ']';
    t[i++] = '}';
    size_t off, n;
    TK_ASSERT_EQ(json_member_span(t, i, "input_data", &off, &n), 0);
    TK_ASSERT_EQ(n, 2 * depth);
    free(t);
}

int main(int argc, char **argv)
{
    return tk_test_main(argc, argv);
}
