/*
 * log.h — structured logging: one line per event, `key=value` pairs.
 *
 *   ts=2026-11-21T21:00:00.123Z level=error pid=123 role=executor msg="docker_start failed"
 *   container=3f2a.. err="No such container"
 *
 * tk_log(level, fmt, ...) takes a printf format for the rest of the line after msg; by
 * convention it starts with the quoted message and then names the call and the object:
 *   tk_log(TK_ERROR, "msg=\"open failed\" path=%s err=\"%s\"", path, strerror(e));
 * Logs go to stderr or to server.log_file (O_APPEND; reopened on USR1). One write(2) per
 * line so lines from several processes never interleave.
 */
#ifndef TAKO_LOG_H
#define TAKO_LOG_H

enum { TK_DEBUG = 0, TK_INFO = 1, TK_WARN = 2, TK_ERROR = 3, TK_CRIT = 4 };

/* Set the process's role tag (e.g. "master", "acceptor 1") and the minimum level. */
void log_set_role(const char *role);
void log_set_level(int level);
int log_get_level(void);

/* Direct output to `path` (empty or NULL: stderr). 0 or -errno; on error keeps the old. */
int log_open(const char *path);
/* Reopen the current log file (USR1 / logrotate). 0 or -errno. */
int log_reopen(void);

void tk_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) tk_log(TK_DEBUG, __VA_ARGS__)
#define log_info(...)  tk_log(TK_INFO, __VA_ARGS__)
#define log_warn(...)  tk_log(TK_WARN, __VA_ARGS__)
#define log_error(...) tk_log(TK_ERROR, __VA_ARGS__)
#define log_crit(...)  tk_log(TK_CRIT, __VA_ARGS__)

#endif
