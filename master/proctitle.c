/*
 * proctitle.c — process titles in /proc/PID/cmdline, as nginx does (ngx_setproctitle):
 * the argv strings and the environment are contiguous; move the environment to the heap
 * and use the whole area for the title. Also sets the thread name (comm, 15 chars).
 */
#include "tako/takod.h"

#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

extern char **environ;

static char *title_start;
static size_t title_len;

void proctitle_init(int argc, char **argv)
{
    if (argc < 1)
        return;
    char *end = argv[0] + strlen(argv[0]) + 1;
    for (int i = 1; i < argc; i++)
        if (argv[i] == end)
            end = argv[i] + strlen(argv[i]) + 1;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 1, sizeof *env);
    for (size_t i = 0; env && i < n; i++) {
        if (environ[i] == end)
            end = environ[i] + strlen(environ[i]) + 1;
        env[i] = strdup(environ[i]);
    }
    if (env)
        environ = env;
    title_start = argv[0];
    title_len = (size_t)(end - argv[0]);
    /* the argv array itself may still be read (getopt ran already); keep argv[1..] valid
     * by copying them too */
    for (int i = 1; i < argc; i++)
        argv[i] = strdup(argv[i]);
    argv[0] = strdup(argv[0]);
}

void proctitle_set(const char *title)
{
    if (title_start && title_len > 1) {
        memset(title_start, 0, title_len);
        strncpy(title_start, title, title_len - 1);
    }
    char comm[16];
    strncpy(comm, title, sizeof comm - 1);
    comm[15] = '\0';
    prctl(PR_SET_NAME, comm, 0, 0, 0);
}
