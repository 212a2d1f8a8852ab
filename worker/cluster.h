/*
 * cluster — streams in cluster mode (`broker` set): their sequence and
 * history live in Redis, shared by every replica.
 *
 * Publishing is one broker round trip; its answer (seq or `unavailable`)
 * is the ack. This worker follows the channel of every stream it has
 * subscribers for and delivers each message exactly once, in seq order:
 * duplicates are dropped, a hole (a message seen after a gap, a
 * reconnect) is filled with XRANGE before anything after it goes out, and
 * what the broker no longer holds is announced with `gap`. Subscribing
 * reads the stream's position (seq, epoch) after the channel subscription
 * is confirmed, so nothing falls between the two; `since` replays from
 * the broker's history.
 */
#ifndef WSGATE_CLUSTER_H
#define WSGATE_CLUSTER_H

#include <stddef.h>

#include "hub.h"
#include "worker-t.h"

struct broker_events;

int cluster_publish(struct conn *c, struct hub_stream *hs, const char *data, size_t dlen,
                    const char *id_json);
int cluster_subscribe(struct conn *c, struct hub_stream *hs, const struct hub_subscribe_args *a);
/* The stream's last local subscriber left: stop following its channel. */
void cluster_stream_unused(struct worker *w, struct hub_stream *hs);
/* The connection is closing: forget its pending publishes and requests. */
void cluster_conn_closed(struct conn *c);
/* hub_unlink's cluster part: subscriptions still waiting for the stream's
 * position or their replay are freed here; returns 1 when it handled sub. */
int cluster_unlink_sub(struct worker *w, struct hub_sub *sub);

/* The hub's stream_backend in cluster mode. */
extern const struct stream_backend cluster_backend;

/* What broker.c tells the streams (broker_init's events). */
extern const struct broker_events cluster_broker_events;

#endif
