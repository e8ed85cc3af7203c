/*
 * fuzz_docker — the Docker engine's HTTP answers as takod reads them: the transport's
 * incremental answer parser (common/dkhttp.c: dk_parse_feed, Content-Length, chunked with
 * extensions and trailers, or up to the end of the stream), fed in pieces whose sizes come
 * from the input, then the same bytes as a multiplexed log stream through docker_logs's
 * consumer (common/docker.c: dkframe.c's demuxer into two capped buffers). The engine is
 * trusted to be the engine, but its bytes still must not break takod.
 */
#include "../../common/docker.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
    uint64_t bytes;
};

static int count_body(void *arg, const char *p, size_t n)
{
    struct seen *s = arg;
    volatile char first = n ? p[0] : 0, last = n ? p[n - 1] : 0; /* readable */
    (void)first, (void)last;
    s->bytes += n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. an answer, as the reads would bring it */
    static struct dk_parse p;
    dk_parse_init(&p);
    struct seen s = {0};
    size_t step = size ? (size_t)data[0] % 64 + 1 : 1, off = 0;
    int done = 0;
    while (off < size && done == 0) {
        size_t n = size - off < step ? size - off : step, used = 0;
        done = dk_parse_feed(&p, (const char *)data + off, n, &used, count_body, &s);
        if (done >= 0 && (used > n || (done == 0 && used != n)))
            __builtin_trap(); /* the parser takes what it is given, and no more */
        off += used;
    }
    if (done == 0)
        done = dk_parse_eof(&p);
    if (s.bytes > size)
        __builtin_trap(); /* decoding never grows the body */
    if (done == 1 && (p.code < 100 || p.code > 999 || p.head_len < 4))
        __builtin_trap();

    /* 2. the log stream's frames, split where the input's bytes say */
    struct tk_capbuf out, err;
    capbuf_init(&out, 256);
    capbuf_init(&err, 4096);
    struct dk_logs l = {.out = &out, .err = &err};
    off = 0;
    while (off < size) {
        size_t n = (size_t)data[off] % 23 + 1;
        if (n > size - off)
            n = size - off;
        if (dk_logs_feed(&l, (const char *)data + off, n) < 0)
            break;
        off += n;
    }
    if (out.len > out.cap || err.len > err.cap)
        __builtin_trap();
    capbuf_free(&out);
    capbuf_free(&err);
    return 0;
}
