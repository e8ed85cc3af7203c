/*
 * fuzz_docker — the Docker engine's HTTP answers as takod reads them (common/docker.c):
 * dk_answer_span (where an answer on the kept connection ends: Content-Length or chunked),
 * dk_answer_body (the status and the body, chunked decoding) and the multiplexed log
 * stream's demultiplexer dk_demux_feed, fed in pieces whose sizes come from the input.
 * The engine is trusted to be the engine, but its bytes still must not break takod.
 */
#include "../../common/docker.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. an answer on the kept connection: grown as the reads would grow it */
    char *a = malloc(size + 1);
    if (!a)
        return 0;
    size_t step = size ? (size_t)data[0] % 64 + 1 : 1;
    for (size_t len = size < step ? size : step;; len = len + step > size ? size : len + step) {
        memcpy(a, data, len);
        a[len] = '\0';
        size_t hl = 0, total = 0;
        int done = dk_answer_span(a, len, &hl, &total);
        if (done == 1) {
            if (hl > total || total > len || hl < 4)
                __builtin_trap(); /* the span must lie within what was read */
            long code;
            bool closing;
            long n = dk_answer_body(a, hl, total, &code, &closing);
            if (n > (long)(total - hl))
                __builtin_trap(); /* decoding never grows the body */
            break;
        }
        if (done < 0 || len == size)
            break;
    }
    free(a);

    /* 2. the log stream's frames, split where the input's bytes say */
    struct tk_capbuf out, err;
    capbuf_init(&out, 256);
    capbuf_init(&err, 4096);
    struct dk_demux m = {.out = &out, .err = &err};
    size_t off = 0;
    while (off < size) {
        size_t n = (size_t)data[off] % 23 + 1;
        if (n > size - off)
            n = size - off;
        if (dk_demux_feed(&m, (const char *)data + off, n) < 0)
            break;
        off += n;
    }
    if (out.len > out.cap || err.len > err.cap)
        __builtin_trap();
    capbuf_free(&out);
    capbuf_free(&err);
    return 0;
}
