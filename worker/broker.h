/*
 * broker — this worker's connections to the cluster broker (Redis), for
 * cluster mode (`broker: ["redis://…", …]`).
 *
 * Redis is the sequencer and the history of every stream: a publish is one
 * Lua script (INCR the stream's seq, XADD the message to the stream's
 * Redis Stream trimmed to about history_size, PUBLISH it to the stream's
 * channel), so one round trip both stores and announces it. With
 * broker_replicas_ack N the script only stores; WAIT N follows on the same
 * connection, and only once N replicas hold the message is it acknowledged
 * and announced. Each worker subscribes to the channels of the streams it
 * has subscribers for, on one pub/sub connection per broker (pinged every
 * second, replaced when silent for broker_timeout), and fills holes with
 * XRANGE. Streams are sharded over the brokers by rendezvous hashing of
 * the name.
 *
 * A broker is one master: a redis:// address, or a redis-sentinel:// group
 * whose Sentinels name it (asked again after any connection error, and
 * followed through +switch-master). Every connection asks ROLE first and
 * carries requests only once the answer is "master"; READONLY drops it.
 *
 * Requests answer once, through their callback: with the reply, or with
 * an error when the connection drops or pool_timeout passes. The module
 * knows nothing of WebSocket connections; the hub drives it.
 */
#ifndef WSGATE_BROKER_H
#define WSGATE_BROKER_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

#define BROKER_EPOCH_MAX 16

/* One stored message, as XRANGE or the channel hands it over. */
struct broker_entry {
    uint64_t seq;
    int64_t ts_ms;
    const char *data;
    size_t len;
};

typedef void (*broker_publish_cb)(void *arg, int err, uint64_t seq, const char *epoch);
typedef void (*broker_head_cb)(void *arg, int err, uint64_t seq, const char *epoch);
typedef void (*broker_range_cb)(void *arg, int err, const struct broker_entry *e, size_t n);

/* Connect to every configured broker (none: nothing to do). */
int broker_init(struct worker *w);
void broker_close(struct worker *w);

static inline int broker_enabled(const struct worker *w)
{
    return w->cfg.broker_count > 0;
}

/* Which broker holds a stream. */
int broker_for_stream(const struct worker *w, const char *stream, size_t len);
/* Command connection to the master up: publishes and reads may go. */
int broker_is_up(const struct worker *w, int b);
/* This worker's pub/sub connection answers (the sub_up gauge): new
 * subscriptions can be followed. */
int broker_sub_is_up(const struct worker *w, int b);

/* Store, sequence and announce one message. err: 0, or -EAGAIN when the
 * broker is unreachable or did not answer within pool_timeout. */
void broker_publish(struct worker *w, int b, const char *stream, size_t len, const char *data,
                    size_t dlen, int64_t ts_ms, broker_publish_cb cb, void *arg);
/* The stream's latest seq (0 if none) and epoch. */
void broker_head(struct worker *w, int b, const char *stream, size_t len, broker_head_cb cb,
                 void *arg);
/* Held messages with from <= seq <= to, at most max of them, oldest first. */
void broker_range(struct worker *w, int b, const char *stream, size_t len, uint64_t from,
                  uint64_t to, size_t max, broker_range_cb cb, void *arg);
/* After a reconnect: held messages from `from` up to the newest announced
 * one. When the broker's sequence (same epoch) is behind from - 1 — a
 * failover lost messages this worker already delivered — it is moved up
 * to from - 1, so new messages never reuse a seq a subscriber has seen
 * (subscribers that missed the lost ones get `gap`). */
void broker_refill(struct worker *w, int b, const char *stream, size_t len, uint64_t from,
                   const char *epoch, size_t max, broker_range_cb cb, void *arg);

/* Follow a stream's channel on this worker's pub/sub connection; the hub
 * hears back through cluster_on_subscribed() and cluster_on_message(). */
void broker_subscribe(struct worker *w, int b, const char *stream, size_t len);
void broker_unsubscribe(struct worker *w, int b, const char *stream, size_t len);

/* Periodic: pool_timeout, max_idle_time, gauges. */
void broker_sweep(struct worker *w, uint64_t now_ns);

#endif
