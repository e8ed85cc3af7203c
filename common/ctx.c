/*
 * ctx.c — the process-wide context (see takod.h) and the spool layout.
 */
#include "tako/takod.h"

#include <stdio.h>

struct tk_ctx tk = {.listen_fd = -1, .proc_idx = -1};

int spool_job_dir(char *buf, size_t len, const char *job_id)
{
    int n = snprintf(buf, len, "%s/%s", tk.spool_dir, job_id);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
