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
 * is announced with a `gap`, never skipped silently, and a subscriber that
 * cannot be given a message for want of memory is closed 1011
 * (hub_sub_lost), to resume with since.
 *
 * The streams themselves are a stream_backend's: the hub keeps the local
 * subscriptions and hands publishing and subscribing to it.
 */
#ifndef WSGATE_HUB_H
#define WSGATE_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

struct hub_subscribe_args;

/* Where the hub's streams live: their sequence, history and the delivery
 * of what others publish. Two implementations: hub_local_backend (the
 * shared segment's stream logs, this file) and cluster_backend (Redis,
 * cluster.h). The hub calls only these; a NULL entry: nothing to do. */
struct stream_backend {
    /* A stream enters this worker's table. */
    void (*stream_new)(struct worker *w, struct hub_stream *hs);
    /* hub_publish and hub_subscribe for an existing entry (same returns). */
    int (*publish)(struct conn *c, struct hub_stream *hs, const char *data, size_t dlen,
                   const char *id_json, uint64_t *seq);
    int (*subscribe)(struct conn *c, struct hub_stream *hs, const struct hub_subscribe_args *a);
    /* hub_unlink: returns 1 when it freed sub itself (still pending). */
    int (*unlink_sub)(struct worker *w, struct hub_sub *sub);
    /* The stream's last local subscriber left. */
    void (*stream_unused)(struct worker *w, struct hub_stream *hs);
    /* The connection is closing, before its subscriptions are dropped. */
    void (*conn_closed)(struct conn *c);
};

extern const struct stream_backend hub_local_backend;

/* Start the hub on `backend` (worker.c picks it from the config). */
int hub_init(struct worker *w, int wake_fd, const struct stream_backend *backend);
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
 * stream's history memory), or HUB_PENDING in cluster mode: the broker's
 * answer arrives later and the hub sends the ack or the error itself. */
#define HUB_PENDING 1
int hub_publish(struct conn *c, const char *stream, size_t len, const char *data, size_t dlen,
                const char *id_json, uint64_t *seq);
/* The connection is closing: drop its subscriptions. */
void hub_conn_closed(struct conn *c);

/* uv_check: fan out what arrived, then wake the other workers. */
void hub_run(struct worker *w);
/* Periodic: forget cached streams nobody used for a while. */
void hub_sweep(struct worker *w, uint64_t now_ns);

/* Shared with cluster.c (cluster mode). */
struct sendq_frame *hub_frame_raw(const struct hub_stream *hs, uint64_t seq, int64_t ts_ms,
                                  const char *data, size_t len);
/* A gap message: its longest form (128-character name, two 20-digit seqs). */
#define HUB_GAP_MAX (STREAMLOG_NAME_MAX + 96)
void hub_send_gap(struct conn *c, const struct hub_stream *hs, uint64_t from, uint64_t to);
/* A subscriber that cannot be given a message it must get (out of
 * memory): closed 1011 after what it already has, so it resumes with
 * since instead of missing the message unaware. */
void hub_sub_lost(struct conn *c, const struct hub_stream *hs);
/* The same message as a shared frame, for queues that hold frames. */
struct sendq_frame *hub_gap_frame(const struct hub_stream *hs, uint64_t from, uint64_t to);
/* `reset`: the stream's sequence restarted in a new epoch (cluster mode,
 * the broker lost it); every earlier position is void. */
struct sendq_frame *hub_reset_frame(const struct hub_stream *hs, const char *epoch);
void hub_send_subscribed(struct conn *c, const struct hub_stream *hs, const char *epoch,
                         uint64_t seq, int has_since, int recovered, const char *id_json);
struct hub_stream *hub_find(struct worker *w, const char *name, size_t len);
void hub_link_stream(struct hub_stream *hs, struct hub_sub *sub);
void hub_link_conn(struct conn *c, struct hub_sub *sub);
void hub_unlink_stream(struct hub_stream *hs, struct hub_sub *sub);
/* A live message of hs, framed once for the worker, about to go to its
 * subscribers in seq order: compressed with the stream's shared context
 * while some subscriber allows context takeover (deflate.h). */
void hub_frame_compress(struct worker *w, struct hub_stream *hs, struct sendq_frame *f);
/* Drop the frames kept for a subscription whose replay is on its way. */
void hub_free_queue(struct hub_sub *sub);
/* Free a subscription and what a pending cluster subscribe still holds. */
void hub_free_sub(struct hub_sub *sub);


#endif
