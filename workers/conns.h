/*
 * conns.h — the acceptor's client connections (conns.c): caps at accept (in total and per
 * client address), a whole-request deadline, and the one close callback of each.
 */
#ifndef TAKO_CONNS_H
#define TAKO_CONNS_H

#include <event2/http.h>
#include <stddef.h>

typedef void (*conns_close_fn)(struct evhttp_connection *evcon, void *arg);

/* Hook into A.http (call before the listener is added); 0 or -ENOMEM. */
int conns_init(void);
void conns_free(void);
/* A whole request arrived and goes to a handler: its deadline stops until its reply. */
void conns_request_started(struct evhttp_request *req);
/* Be told when a connection closes (instead of evhttp_connection_set_closecb, which this
 * module owns); fn NULL to stop. */
void conns_set_closecb(struct evhttp_connection *evcon, conns_close_fn fn, void *arg);
/* Connections this process holds open; those waiting for a request. */
size_t conns_open(void);
size_t conns_reading(void);

#endif
