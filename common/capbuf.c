/*
 * capbuf.c — the capped buffer (see capbuf.h).
 *
 * Its allocation is a pure function of len (a power of two >= len + 1, at least 256,
 * never above cap + 1), so the struct needs no capacity field and a buffer that never
 * got a byte allocates nothing: its data is a shared static "".
 */
#include "tako/capbuf.h"

#include <stdlib.h>
#include <string.h>

static char capbuf_empty[1]; /* data of a buffer with nothing allocated: always "" */

static size_t capbuf_alloc_for(size_t len, size_t cap)
{
    if (len == 0)
        return 0;
    size_t a = 256;
    while (a < len + 1 && a < cap + 1)
        a <<= 1;
    return a < cap + 1 ? a : cap + 1;
}

void capbuf_init(struct tk_capbuf *b, size_t cap)
{
    b->data = capbuf_empty;
    b->len = 0;
    b->cap = cap;
    b->total = 0;
    b->truncated = false;
}

void capbuf_free(struct tk_capbuf *b)
{
    if (b->data && b->data != capbuf_empty)
        free(b->data);
    capbuf_init(b, b->cap);
}

void capbuf_append(struct tk_capbuf *b, const char *p, size_t n)
{
    if (n == 0)
        return;
    b->total += n;
    if (b->total > b->cap)
        b->truncated = true;
    size_t take = b->cap - b->len < n ? b->cap - b->len : n;
    if (take == 0)
        return;
    size_t have = b->data == capbuf_empty ? 0 : capbuf_alloc_for(b->len, b->cap);
    size_t need = capbuf_alloc_for(b->len + take, b->cap);
    if (need > have) {
        char *nd = realloc(b->data == capbuf_empty ? NULL : b->data, need);
        if (!nd) {
            /* Out of memory: keep what we have; total still counts every byte. */
            b->truncated = true;
            return;
        }
        b->data = nd;
    }
    memcpy(b->data + b->len, p, take);
    b->len += take;
    b->data[b->len] = '\0';
}

bool capbuf_short(const struct tk_capbuf *b)
{
    return b->len < (b->total < b->cap ? b->total : b->cap);
}
