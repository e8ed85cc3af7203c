/*
 * dkframe.h — the Docker engine's multiplexed stream: how a container's stdout and stderr
 * arrive, both from GET /containers/{id}/logs and on an attach stream, when it was created
 * with Tty false. Each frame is an 8-byte header [stream, 0, 0, 0, size as 32-bit big
 * endian] and then `size` bytes of payload; stream 0 is stdin (echoed), 1 stdout, 2 stderr.
 *
 * One decoder for every reader (common/docker.c's logs, common/sandbox.c's launcher
 * protocol). It keeps no payload: each run of payload bytes goes to the caller's sink as
 * it arrives, so headers and payloads may be split across reads anywhere.
 */
#ifndef TAKO_DKFRAME_H
#define TAKO_DKFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dkframe {
    unsigned char hdr[8];
    size_t hdr_len; /* header bytes collected so far */
    uint32_t left;  /* payload bytes left in the current frame */
    int stream;     /* the current frame's stream (0, 1, 2) */
};

/* A sink for payload bytes of `stream`: 0 to go on, anything else stops the feed, which
 * returns it. */
typedef int (*dkframe_sink)(void *arg, int stream, const char *p, size_t n);

/* Decode p[0..n). 0 when all of it was taken; the sink's non-zero return, at once; or
 * -EPROTO for a header that is not a frame header (a Tty container's raw stream). */
int dkframe_feed(struct dkframe *f, const char *p, size_t n, dkframe_sink sink, void *arg);

/* True when the stream stopped inside a frame (its header or its payload). */
bool dkframe_partial(const struct dkframe *f);

#endif
