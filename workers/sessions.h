/*
 * sessions.h — the sessions process ("takod: sessions 0", workers/sessions.c) and how an
 * acceptor reaches it (workers/api_sessions.c).
 *
 * A session (docs/SESSIONS.md) is a container that lives for many requests, so it cannot
 * belong to an acceptor (any of them takes a client's next request) or to an executor (each
 * runs one job at a time, blocking). One process holds them all, with one event loop: the
 * containers' launcher channels, their timers, the files API and their records. It serves
 * HTTP on a unix socket only root can reach; an acceptor, after its usual checks (headers,
 * rate limit, authentication), forwards each /sessions request there with who asked in
 * headers the sessions process trusts because nobody else can connect:
 *
 *   X-Takod-Key    the caller's key id ("" without authentication)
 *   X-Takod-Admin  "1" for the admin key (sees every key's sessions)
 *   X-Takod-Client the client's address, for the records
 *   X-Correlation-ID
 *
 * It is not part of a reload's new generation: a HUP leaves it, and its sessions, running
 * on the configuration it started with. It stops with takod (its sessions end as "lost").
 */
#ifndef TAKO_WORKERS_SESSIONS_H
#define TAKO_WORKERS_SESSIONS_H

#include <stddef.h>

/* The unix socket's path: /run/takod-sessions/<instance hash>.sock (the directory 0700). */
void sessions_socket_path(char *buf, size_t len);

#endif
