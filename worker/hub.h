/*
 * hub — this worker's side of the streams: local subscriptions, publishing
 * into the shared stream logs, and fan-out.
 *
 * A publish appends to the stream's log under its lock and marks the other
 * workers that have subscribers for a wake-up; wake-ups go out once per
 * loop iteration (one eventfd write per worker per burst, and none while
 * one is already pending). Fan-out runs in the uv_check phase, before the
 * send queues are flushed: each new message is turned into one frame,
 * shared by reference by every local subscriber's queue.
 *
 * A subscriber receives every message whose seq is above the `seq` of its
 * `subscribed` reply, in order, exactly once; what the log no longer holds
 * is announced with a `gap`, never skipped silently.
 */
#ifndef WSGATE_HUB_H
#define WSGATE_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

int hub_init(struct worker *w, int wake_fd);
void hub_close(struct worker *w);

/* The subscribe request, validated by the router. */
struct hub_subscribe_args {
    const char *stream;
    size_t stream_len;
    int has_since;
    uint64_t since;
    const char *epoch;      /* NULL when the client gave none */
    size_t epoch_len;
    const char *id_json;    /* the request's id, serialised, or NULL */
};

/* Subscribe and send `subscribed`, then any gap and replay. Returns 0, or
 * -EEXIST (already subscribed), -EMLINK (max_subscriptions), -ENOSPC
 * (max_streams); nothing is sent on error. */
int hub_subscribe(struct conn *c, const struct hub_subscribe_args *a);
/* Returns 0 or -ENOENT (not subscribed). */
int hub_unsubscribe(struct conn *c, const char *stream, size_t len);
/* Append `data` (the publisher's raw JSON) to the stream; *seq gets its
 * number. Returns 0, -ENOSPC (max_streams) or -E2BIG (larger than the
 * stream's history memory). */
int hub_publish(struct conn *c, const char *stream, size_t len, const char *data, size_t dlen,
                uint64_t *seq);
/* The connection is closing: drop its subscriptions. */
void hub_conn_closed(struct conn *c);

/* uv_check: fan out what arrived, then wake the other workers. */
void hub_run(struct worker *w);
/* Periodic: forget cached streams nobody used for a while. */
void hub_sweep(struct worker *w, uint64_t now_ns);

#endif
