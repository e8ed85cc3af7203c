/*
 * capbuf.h — a growable byte buffer that keeps at most `cap` bytes (the head) and counts
 * the rest: how a job's stdout, stderr and the engine's log streams are held, so that
 * nothing a container sends can grow takod beyond a bound set in advance.
 */
#ifndef TAKO_CAPBUF_H
#define TAKO_CAPBUF_H

#include <stdbool.h>
#include <stddef.h>

struct tk_capbuf {
    char *data;     /* NUL-terminated; may contain other NULs */
    size_t len;     /* bytes kept, <= cap */
    size_t cap;     /* most bytes kept */
    size_t total;   /* bytes offered in all */
    bool truncated; /* total > cap */
};

void capbuf_init(struct tk_capbuf *b, size_t cap);
void capbuf_free(struct tk_capbuf *b);
/* Keep what fits under cap, count all of it. Out of memory keeps what it has (len then
 * stays below min(total, cap): capbuf_short() tells). */
void capbuf_append(struct tk_capbuf *b, const char *p, size_t n);
/* True when the buffer lost bytes it had room for (an allocation failed). */
bool capbuf_short(const struct tk_capbuf *b);

#endif
