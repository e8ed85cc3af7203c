/*
 * log.c — see log.h. Small on purpose: format into a stack buffer, one write(2).
 */
#include "tako/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static int log_level = TK_INFO;
static char log_role[32] = "takod";
static char log_path[4096];

static const char *const level_names[] = {"debug", "info", "warn", "error", "crit"};

void log_set_role(const char *role)
{
    snprintf(log_role, sizeof log_role, "%s", role);
}

void log_set_level(int level)
{
    log_level = level;
}

int log_get_level(void)
{
    return log_level;
}

int log_open(const char *path)
{
    if (!path || !*path) {
        if (log_fd > 2)
            close(log_fd);
        log_fd = 2;
        log_path[0] = '\0';
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        int e = errno;
        tk_log(TK_ERROR, "msg=\"open log file failed\" path=%s err=\"%s\"", path, strerror(e));
        return -e;
    }
    if (log_fd > 2)
        close(log_fd);
    log_fd = fd;
    snprintf(log_path, sizeof log_path, "%s", path);
    return 0;
}

int log_reopen(void)
{
    if (!log_path[0])
        return 0;
    char path[sizeof log_path];
    memcpy(path, log_path, sizeof path);
    return log_open(path);
}

void tk_log(int level, const char *fmt, ...)
{
    if (level < log_level)
        return;
    int saved_errno = errno;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s pid=%d role=\"%s\" ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (long)(tv.tv_usec / 1000),
                     level_names[level < 0         ? 0
                                 : level > TK_CRIT ? TK_CRIT
                                                   : level],
                     (int)getpid(), log_role);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(log_fd, line, len);
    (void)w;
    errno = saved_errno;
}
