/*
 * dkframe.c — the engine's 8-byte stream framing, decoded in one place (see dkframe.h).
 * A header is taken byte by byte into f->hdr until it is whole; a payload is passed on in
 * the largest runs the input allows, never copied here.
 */
#include "tako/dkframe.h"

#include <errno.h>
#include <string.h>

int dkframe_feed(struct dkframe *f, const char *p, size_t n, dkframe_sink sink, void *arg)
{
    while (n > 0) {
        if (f->left == 0) {
            size_t take = 8 - f->hdr_len < n ? 8 - f->hdr_len : n;
            memcpy(f->hdr + f->hdr_len, p, take);
            f->hdr_len += take;
            p += take;
            n -= take;
            if (f->hdr_len < 8)
                break;
            f->hdr_len = 0;
            if (f->hdr[0] > 2 || f->hdr[1] || f->hdr[2] || f->hdr[3])
                return -EPROTO;
            f->stream = f->hdr[0];
            f->left = (uint32_t)f->hdr[4] << 24 | (uint32_t)f->hdr[5] << 16 |
                      (uint32_t)f->hdr[6] << 8 | (uint32_t)f->hdr[7];
            continue;
        }
        size_t take = f->left < n ? f->left : n;
        f->left -= (uint32_t)take;
        int rc = sink(arg, f->stream, p, take);
        if (rc != 0)
            return rc;
        p += take;
        n -= take;
    }
    return 0;
}

bool dkframe_partial(const struct dkframe *f)
{
    return f->hdr_len > 0 || f->left > 0;
}
