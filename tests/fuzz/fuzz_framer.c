/*
 * fuzz_framer — what the executor reads from a warm container's attach stream
 * (common/sandbox.c): Docker's 8-byte frames, the launcher's protocol on its stdout (lines,
 * and "takod-out S N" followed by N raw bytes of live output) and, once "takod-status ..."
 * arrives, the status line's parser. Everything here comes from inside the sandbox.
 */
#include "../../common/sandbox.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_output(int stream, const char *p, size_t len, void *arg)
{
    size_t *seen = arg;
    if ((stream != 1 && stream != 2) || len == 0 || len > 4096)
        __builtin_trap(); /* live output comes in bounded pieces of a known stream */
    volatile char first = p[0], last = p[len - 1]; /* the bytes must be readable */
    (void)first, (void)last;
    *seen += len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t seen = 0;
    struct sandbox_job job = {.on_output = on_output, .output_arg = &seen};
    struct framer f = {.job = &job};
    /* the first byte picks the channel: the engine's framed attach stream, or the OCI
     * backend's plain pipe */
    bool raw = size > 0 && (data[0] & 1);
    size_t off = size > 0 ? 1 : 0;
    int got = 0;
    while (off < size && !got) {
        size_t n = (size_t)data[off] % 97 + 1; /* reads of any size */
        if (n > size - off)
            n = size - off;
        got = framer_feed(&f, raw, data + off, n);
        off += n;
    }
    if (got) {
        if (strlen(f.line) >= sizeof f.line)
            __builtin_trap();
        struct status s;
        parse_status(f.line + 13, &s);
    }
    return 0;
}
