/*
 * sendq — a connection's outgoing bytes, written in batches.
 *
 * Callers append whole frames or responses; nothing is written at append
 * time. The worker flushes every dirty connection once per loop iteration
 * (uv_check), handing up to SENDQ_IOV_MAX chunks to one writev via
 * uv_try_write, and falls back to uv_write only for what the kernel would
 * not take. A connection holds its queue only while it has something to
 * send (conn_queue makes it, the sweep gives an empty one back).
 */
#ifndef WSGATE_SENDQ_H
#define WSGATE_SENDQ_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

#define SENDQ_IOV_MAX 64

/* write_cb hears of every uv_write that completes (or fails) after
 * sendq_flush or tlsconn_flush had to wait for the kernel; not of a write
 * libuv cancelled because the handle is closing. */
void sendq_init(struct sendq *q, sendq_write_cb write_cb);
/* Drop everything (connection closed). */
void sendq_free(struct sendq *q);
/* Append a copy of data; origin_ns (0 = none) is the receive time of the
 * message this answers, observed as latency when the bytes leave.
 * Returns 0 or -ENOMEM, like sendq_push_frame. */
int sendq_append(struct sendq *q, const void *data, size_t len, uint64_t origin_ns);
/* Append a chunk the caller filled (from sendq_chunk_new). */
void sendq_push(struct sendq *q, struct sendq_chunk *c);
/* A chunk with room for len bytes. With origin_ns (0: none) it counts as
 * a message sent and origin_ns is observed when it leaves: as request
 * duration when the caller sets the chunk's `request`, else as message
 * latency. */
struct sendq_chunk *sendq_chunk_new(size_t len, uint64_t origin_ns);

/* Shared frames: refs start at 1 (the builder's); every queue holding it
 * takes one more. */
struct sendq_frame *sendq_frame_new(size_t len);
void sendq_frame_unref(struct sendq_frame *f);
int sendq_push_frame(struct sendq *q, struct sendq_frame *f, uint64_t origin_ns);
/* Memory held by this process's live shared frames (the queued-frames gauge). */
size_t sendq_frame_bytes_held(void);

static inline char *sendq_chunk_bytes(struct sendq_chunk *c)
{
    return c->frame ? c->frame->bytes : c->data;
}

/* Drop every chunk no byte of which has been handed to the kernel, so a
 * close frame can follow what is already on its way. */
void sendq_drop_unsent(struct sendq *q);

/* Account for `n` bytes of the head chunks having reached the kernel: pop
 * finished chunks, counting each finished message and observing its
 * latency. sendq_flush calls it; tlsconn calls it once a batch's
 * ciphertext has gone. */
void sendq_consume(struct conn *c, size_t n);

/* Write what the kernel takes now (plain connections; TLS ones flush
 * through tlsconn_flush). Returns 0, or a negative libuv error
 * when the connection is broken. Completed messages are counted in the
 * worker's slot (bytes, messages, latency). */
int sendq_flush(struct conn *c);

static inline int sendq_empty(const struct sendq *q)
{
    return q->head == NULL;
}

#endif
