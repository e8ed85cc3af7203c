/*
 * callbacks.h — POSTing a finished job's result to the callback_url its request named
 * (ext). An executor delivers them itself, off the job's critical path: right after the
 * reply and the next warm container, and then whenever it is idle, with backoff (1 s,
 * 5 s, 25 s: three attempts, each bounded to 5 s). The outcome is recorded in
 * jobs.callback_status (delivered | failed). A callback is best effort: one pending when
 * its executor stops or dies is recorded as failed, or lost with the process.
 */
#ifndef TAKO_CALLBACKS_H
#define TAKO_CALLBACKS_H

#include "tako/db.h"

#include <stddef.h>
#include <stdint.h>

struct callback;

struct callbacks {
    struct callback *head;
    size_t n;
};

/* Queue one (takes `url` and `body`). Past 256 queued, the oldest is dropped as failed. */
void callbacks_add(struct callbacks *q, const char *job_id, char *url, char *body);
/* Attempt every callback that is due. */
void callbacks_run(struct callbacks *q, struct db *db);
/* Record everything still queued as failed (the executor is stopping). */
void callbacks_abandon(struct callbacks *q, struct db *db);

/* Is this an acceptable callback URL? (http or https, at most 2048 bytes, no blanks) */
int callbacks_url_ok(const char *url);

#endif
