/*
 * callbacks.h — POSTing a finished job's result to the callback_url its request named
 * (ext), and what such a URL may reach.
 *
 * Delivery is never on an executor's path. A job's status becoming final queues its
 * callback: a database trigger (migrations 10 and 11, common/db.c) inserts the
 * callback_deliveries row in the same transaction, whoever wrote the status (an executor,
 * the master's recovery, an acceptor's cancel, the spool's replay), so it is as durable as
 * the result. The row has no body: the callbacks process (workers/deliverer.c, supervised
 * by the master like the others) builds it when it sends it, from the job's record, with
 * the one answer builder (jobstore.h: job_answer), so it is POST /execute's answer field
 * for field. It claims due rows under a lease, sends many at once with libcurl multi, each
 * attempt bounded by callbacks.connect_timeout_ms and callbacks.timeout_ms, retries with
 * exponential backoff (callbacks.backoff_ms, doubling) up to callbacks.max_attempts, and
 * records every attempt (attempts, last_http_status, last_error, delivered_at) in the row
 * and the outcome in jobs.callback_status (pending | delivered | failed).
 *
 * Unless callbacks.allow_private_addresses, a callback may only reach global addresses:
 * submit time refuses literal non-global addresses and localhost names; connect time
 * checks every address the name resolved to (DNS may say anything), and a refusal is
 * final (recorded, not retried).
 */
#ifndef TAKO_CALLBACKS_H
#define TAKO_CALLBACKS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/*
 * Is this an acceptable callback URL? http or https, at most 2048 bytes, no blanks, a
 * host; and unless allow_private, a host that is not a non-global literal address or a
 * localhost name. 0, or -EINVAL with why (a sentence for the client).
 */
int callbacks_url_check(const char *url, bool allow_private, char *why, size_t whylen);

/* May a callback connect to this address? false for loopback, link-local, private
 * (RFC 1918, CGNAT, unique-local), multicast, unspecified, reserved and documentation
 * ranges, and IPv6 forms embedding such an IPv4 address (mapped, compatible, NAT64,
 * 6to4). */
bool callbacks_addr_global(const struct sockaddr *sa);

#endif
