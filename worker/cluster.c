#include "cluster.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "clock.h"
#include "conn.h"
#include "deflate.h"
#include "log.h"
#include "segment.h"
#include "sendq.h"
#include "session.h"
#include "streamlog.h"

/* Messages from other replicas carry the wall-clock time they were
 * accepted; latency is measured from it (millisecond resolution). */
static uint64_t cluster_origin_ns(int64_t ts_ms)
{
    int64_t age_ms = clock_wall_ms() - ts_ms;
    uint64_t now = clock_now_ns();
    uint64_t age = age_ms > 0 ? (uint64_t)age_ms * 1000000ull : 0;
    return age < now ? now - age : 1;
}

static char *cluster_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Replies sent a broker round trip after their request are timed from
 * that request, under its type (websocket_request_duration_seconds): the
 * connection's reply context (session_send_text) is set for the call. */
struct cluster_reply_ctx {
    uint64_t start_ns;
    enum segment_request_type type;
};

static struct cluster_reply_ctx cluster_reply_begin(struct conn *c, uint64_t received_ns,
                                                    enum segment_request_type type)
{
    struct cluster_reply_ctx saved = {c->msg_start_ns, c->msg_type};
    c->msg_start_ns = received_ns;
    c->msg_type = type;
    return saved;
}

static void cluster_reply_end(struct conn *c, struct cluster_reply_ctx saved)
{
    c->msg_start_ns = saved.start_ns;
    c->msg_type = saved.type;
}

/* ---- publish ------------------------------------------------------------ */

static void cluster_on_published(void *arg, int err, uint64_t seq, const char *epoch)
{
    struct hub_pub *p = arg;
    struct conn *c = p->conn;
    if (c) {
        if (p->prev)
            p->prev->next = p->next;
        else
            c->pubs = p->next;
        if (p->next)
            p->next->prev = p->prev;
        struct cluster_reply_ctx saved = cluster_reply_begin(c, p->received_ns, REQUEST_PUBLISH);
        if (err)
            c->app->reply_errno(c, p->id_json, -EAGAIN);
        else if (p->id_json)
            c->app->reply_ack(c, p->id_json, p->stream, p->len, seq);
        cluster_reply_end(c, saved);
    }
    free(p->id_json);
    free(p);
}

int cluster_publish(struct conn *c, struct hub_stream *hs, const char *data, size_t dlen,
                    const char *id_json)
{
    struct worker *w = c->w;
    if (!broker_is_up(w, hs->broker))
        return -EAGAIN;
    struct hub_pub *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->conn = c;
    p->id_json = cluster_strdup(id_json);
    p->received_ns = c->msg_start_ns;
    p->len = hs->name_len;
    memcpy(p->stream, hs->name, hs->name_len);
    p->next = c->pubs;
    if (c->pubs)
        c->pubs->prev = p;
    c->pubs = p;
    hs->last_used_ns = c->msg_start_ns;
    /* Keep the segment's entry for the stream (counted in streams_active
     * and max_streams) from looking idle while it is published to. */
    struct streamlog_stream *st = streamlog_stream_at(segment_streams(w->seg), hs->ref.index);
    if (atomic_load(&st->generation) == hs->ref.generation)
        atomic_store(&st->last_active_ms, clock_wall_ms());
    broker_publish(w, hs->broker, hs->name, hs->name_len, data, dlen, clock_wall_ms(),
                   cluster_on_published, p);
    return HUB_PENDING;
}

void cluster_conn_closed(struct conn *c)
{
    for (struct hub_pub *p = c->pubs; p; p = p->next)
        p->conn = NULL;
    c->pubs = NULL;
}

/* ---- delivery ----------------------------------------------------------- */

/* A frame for a subscriber whose replay is on its way; out of memory, the
 * subscriber is closed 1011 rather than miss it (hub_sub_lost). */
static void cluster_queue(struct hub_sub *s, struct sendq_frame *f, uint64_t origin_ns)
{
    struct hub_frameq *q = malloc(sizeof(*q));
    if (!q) {
        if (s->conn)
            hub_sub_lost(s->conn, s->hs);
        return;
    }
    q->next = NULL;
    q->frame = f;
    q->origin_ns = origin_ns;
    f->refs++;
    if (s->queued_tail)
        s->queued_tail->next = q;
    else
        s->queued = q;
    s->queued_tail = q;
}

static int cluster_sub_live(const struct hub_sub *s)
{
    return s->conn && !s->conn->closed && s->conn->state == CONN_WS;
}

/* Queue a frame to a live subscriber, or close it 1011 (hub_sub_lost). */
static void cluster_push(struct hub_sub *s, struct sendq_frame *f, uint64_t origin_ns)
{
    if (conn_push_frame(s->conn, deflate_frame_for(s->conn, f), origin_ns) < 0)
        hub_sub_lost(s->conn, s->hs);
    conn_mark_dirty(s->conn);
}

static void cluster_deliver(struct hub_stream *hs, uint64_t seq, int64_t ts_ms, const char *data,
                            size_t len)
{
    struct sendq_frame *f = hub_frame_raw(hs, seq, ts_ms, data, len);
    if (f)
        hub_frame_compress(hs->owner, hs, f);
    hs->delivered_seq = seq;
    uint64_t origin = cluster_origin_ns(ts_ms);
    for (struct hub_sub *s = hs->subs; s; s = s->stream_next) {
        if (seq <= s->from_seq)
            continue;
        if (!f) {
            if (s->conn)
                hub_sub_lost(s->conn, hs); /* out of memory for the frame itself */
        } else if (s->replaying) {
            cluster_queue(s, f, origin);
        } else if (cluster_sub_live(s)) {
            cluster_push(s, f, origin);
        }
    }
    if (f)
        sendq_frame_unref(f);
}

/* Messages from..to are not held by the broker any more: say so. */
static void cluster_gap(struct hub_stream *hs, uint64_t from, uint64_t to)
{
    for (struct hub_sub *s = hs->subs; s; s = s->stream_next) {
        if (to <= s->from_seq)
            continue;
        uint64_t f = from > s->from_seq + 1 ? from : s->from_seq + 1;
        if (s->replaying) {
            struct sendq_frame *fr = hub_gap_frame(hs, f, to);
            if (fr) {
                cluster_queue(s, fr, 0);
                sendq_frame_unref(fr);
            } else if (s->conn) {
                hub_sub_lost(s->conn, hs);
            }
        } else if (cluster_sub_live(s)) {
            hub_send_gap(s->conn, hs, f, to);
        }
    }
    hs->delivered_seq = to;
}

static void cluster_hold(struct hub_stream *hs, const struct broker_entry *e)
{
    struct hub_held *h = malloc(sizeof(*h) + e->len);
    if (!h)
        return;
    h->next = NULL;
    h->seq = e->seq;
    h->ts_ms = e->ts_ms;
    h->len = (uint32_t)e->len;
    memcpy(h->data, e->data, e->len);
    /* Channel messages arrive in order; keep the list sorted anyway. */
    struct hub_held **pp = &hs->held;
    while (*pp && (*pp)->seq < h->seq)
        pp = &(*pp)->next;
    if (*pp && (*pp)->seq == h->seq) {
        free(h);
        return;
    }
    h->next = *pp;
    *pp = h;
    if (!h->next)
        hs->held_tail = h;
}

static void cluster_free_held(struct hub_stream *hs)
{
    struct hub_held *h = hs->held;
    while (h) {
        struct hub_held *next = h->next;
        free(h);
        h = next;
    }
    hs->held = hs->held_tail = NULL;
}

static void cluster_fill(struct worker *w, struct hub_stream *hs, uint64_t from, uint64_t to);

/* Deliver held messages that are next in line; a hole starts a fill. */
static void cluster_drain_held(struct worker *w, struct hub_stream *hs)
{
    while (hs->held && !hs->filling) {
        struct hub_held *h = hs->held;
        if (h->seq > hs->delivered_seq + 1) {
            cluster_fill(w, hs, hs->delivered_seq + 1, h->seq - 1);
            return;
        }
        hs->held = h->next;
        if (!hs->held)
            hs->held_tail = NULL;
        if (h->seq == hs->delivered_seq + 1)
            cluster_deliver(hs, h->seq, h->ts_ms, h->data, h->len);
        free(h);
    }
}

static void cluster_on_fill(void *arg, int err, const struct broker_entry *e, size_t n)
{
    struct hub_stream *hs = arg;
    struct worker *w = hs->owner;
    int open_ended = hs->filling == 2;
    hs->refs--;
    hs->filling = 0;
    if (err || hs->cstate != HUB_LIVE)
        return; /* refilled from delivered_seq when the broker is back */
    for (size_t i = 0; i < n; i++) {
        if (e[i].seq <= hs->delivered_seq)
            continue;
        if (e[i].seq > hs->delivered_seq + 1)
            cluster_gap(hs, hs->delivered_seq + 1, e[i].seq - 1);
        cluster_deliver(hs, e[i].seq, e[i].ts_ms, e[i].data, e[i].len);
    }
    /* An open-ended fill stops at the last announced seq, which may lag
     * what the channel already brought (an announce lost with a failed
     * master): ask for the hole by number before calling it a gap. */
    if (!open_ended && hs->held && hs->held->seq > hs->delivered_seq + 1)
        cluster_gap(hs, hs->delivered_seq + 1, hs->held->seq - 1);
    cluster_drain_held(w, hs);
}

static void cluster_fill(struct worker *w, struct hub_stream *hs, uint64_t from, uint64_t to)
{
    if (hs->filling)
        return;
    hs->filling = to ? 1 : 2; /* 2: up to the last announced seq */
    hs->refs++;
    hs->owner = w;
    if (to)
        broker_range(w, hs->broker, hs->name, hs->name_len, from, to, (size_t)(to - from + 1),
                     cluster_on_fill, hs);
    else
        broker_refill(w, hs->broker, hs->name, hs->name_len, from, hs->epoch,
                      (size_t)w->cfg.history_size, cluster_on_fill, hs);
}

static void cluster_on_message(struct worker *w, const char *stream, size_t len, const char *epoch,
                        const struct broker_entry *e)
{
    struct hub_stream *hs = hub_find(w, stream, len);
    if (!hs || hs->cstate == HUB_IDLE)
        return;
    if (hs->cstate == HUB_SUBSCRIBING) {
        cluster_hold(hs, e);
        return;
    }
    if (hs->epoch[0] && strcmp(epoch, hs->epoch) != 0) {
        /* The broker lost the stream and a new sequence began: every
         * position from the old epoch is void. */
        log_msg(LOG_WARN, "error", "stream %s restarted on the broker (new epoch): history lost",
                hs->name);
        snprintf(hs->epoch, sizeof(hs->epoch), "%s", epoch);
        hs->delivered_seq = 0;
        /* Tell every subscriber before the new epoch's seq 1 arrives: a
         * client must not take seq 1 for an old position repeated. */
        struct sendq_frame *reset = hub_reset_frame(hs, epoch);
        for (struct hub_sub *s = hs->subs; s; s = s->stream_next) {
            s->from_seq = 0;
            if (!reset) {
                if (s->conn)
                    hub_sub_lost(s->conn, hs);
            } else if (s->replaying) {
                cluster_queue(s, reset, 0);
            } else if (cluster_sub_live(s)) {
                if (conn_push_frame(s->conn, reset, 0) < 0)
                    hub_sub_lost(s->conn, hs);
                conn_mark_dirty(s->conn);
            }
        }
        if (reset)
            sendq_frame_unref(reset);
        else
            log_msg(LOG_ERROR, "error", "out of memory announcing the new epoch of stream %s; "
                    "its subscribers are closed 1011 and resubscribe", hs->name);
        cluster_free_held(hs);
    }
    if (hs->filling) {
        cluster_hold(hs, e);
        return;
    }
    if (e->seq <= hs->delivered_seq)
        return;
    if (e->seq == hs->delivered_seq + 1)
        cluster_deliver(hs, e->seq, e->ts_ms, e->data, e->len);
    else
        cluster_hold(hs, e);
    cluster_drain_held(w, hs);
}

/* ---- subscribe ------------------------------------------------------------ */

/* Unlink a subscription from its connection's list (it may not be in the
 * stream's list yet). */
static void cluster_unlink_conn(struct hub_sub *sub)
{
    struct conn *c = sub->conn;
    if (!c)
        return;
    struct hub_sub **pp = &c->subs;
    while (*pp && *pp != sub)
        pp = &(*pp)->conn_next;
    if (*pp) {
        *pp = sub->conn_next;
        c->nsubs--;
    }
    sub->conn = NULL;
}

static void cluster_on_replay(void *arg, int err, const struct broker_entry *e, size_t n)
{
    struct hub_sub *s = arg;
    struct hub_stream *hs = s->hs;
    hs->refs--;
    if (!s->conn) {
        hub_free_sub(s); /* the connection went while we waited */
        return;
    }
    struct conn *c = s->conn;
    uint64_t after = s->since, last = s->from_seq;
    uint64_t first = (!err && n) ? e[0].seq : last + 1;
    uint64_t gap_to = first > after + 1 ? first - 1 : 0;
    int recovered = s->has_since == 2 && !gap_to && !err;
    struct cluster_reply_ctx saved = cluster_reply_begin(c, s->received_ns, REQUEST_SUBSCRIBE);
    hub_send_subscribed(c, hs, hs->epoch, last, 1, recovered, s->id_json);
    cluster_reply_end(c, saved);
    if (gap_to)
        hub_send_gap(c, hs, after + 1, gap_to);
    /* Nothing may follow our close frame: a subscriber closed while its
     * replay was on its way (timeout, slow consumer, out of memory) gets
     * no more of it. */
    for (size_t i = 0; !err && i < n && cluster_sub_live(s); i++) {
        if (e[i].seq <= after || e[i].seq > last)
            continue;
        struct sendq_frame *f = hub_frame_raw(hs, e[i].seq, e[i].ts_ms, e[i].data, e[i].len);
        if (!f) {
            hub_sub_lost(c, hs);
            break;
        }
        cluster_push(s, f, 0);
        sendq_frame_unref(f);
    }
    for (struct hub_frameq *q = s->queued; q && cluster_sub_live(s); q = q->next)
        cluster_push(s, q->frame, q->origin_ns);
    hub_free_queue(s);
    s->replaying = 0;
    free(s->id_json);
    s->id_json = NULL;
    conn_mark_dirty(c);
}

/* The stream is live here: answer the subscribe, replaying from the
 * broker's history when `since` asks for it. */
static void cluster_start_sub(struct worker *w, struct hub_stream *hs, struct hub_sub *s)
{
    uint64_t last = hs->delivered_seq;
    s->from_seq = last;
    hub_link_stream(hs, s);
    struct conn *c = s->conn;
    if (!s->has_since) {
        struct cluster_reply_ctx saved = cluster_reply_begin(c, s->received_ns, REQUEST_SUBSCRIBE);
        hub_send_subscribed(c, hs, hs->epoch, last, 0, 0, s->id_json);
        cluster_reply_end(c, saved);
        free(s->id_json);
        s->id_json = NULL;
        return;
    }
    int same_epoch = !s->epoch || strcmp(s->epoch, hs->epoch) == 0;
    free(s->epoch);
    s->epoch = NULL;
    uint64_t after = same_epoch ? s->since : 0;
    if (after >= last) {
        struct cluster_reply_ctx saved = cluster_reply_begin(c, s->received_ns, REQUEST_SUBSCRIBE);
        hub_send_subscribed(c, hs, hs->epoch, last, 1, same_epoch && s->since <= last, s->id_json);
        cluster_reply_end(c, saved);
        free(s->id_json);
        s->id_json = NULL;
        return;
    }
    uint64_t cap = (uint64_t)w->cfg.history_size;
    uint64_t from = last - after > cap ? last - cap + 1 : after + 1;
    s->since = after;
    s->has_since = same_epoch ? 2 : 1; /* 2: recovered is possible */
    s->replaying = 1;
    hs->refs++;
    broker_range(w, hs->broker, hs->name, hs->name_len, from, last, (size_t)(last - from + 1),
                 cluster_on_replay, s);
}

static void cluster_fail_waiting(struct hub_stream *hs)
{
    struct hub_sub *s = hs->waiting;
    hs->waiting = NULL;
    while (s) {
        struct hub_sub *next = s->stream_next;
        if (s->conn) {
            struct cluster_reply_ctx saved =
                cluster_reply_begin(s->conn, s->received_ns, REQUEST_SUBSCRIBE);
            s->conn->app->reply_errno(s->conn, s->id_json, -EAGAIN);
            cluster_reply_end(s->conn, saved);
            cluster_unlink_conn(s);
        }
        hub_free_sub(s);
        s = next;
    }
}

static void cluster_on_head(void *arg, int err, uint64_t seq, const char *epoch)
{
    struct hub_stream *hs = arg;
    struct worker *w = hs->owner;
    hs->refs--;
    if (hs->cstate != HUB_SUBSCRIBING)
        return;
    if (err) {
        hs->cstate = HUB_IDLE;
        broker_unsubscribe(w, hs->broker, hs->name, hs->name_len);
        cluster_free_held(hs);
        cluster_fail_waiting(hs);
        return;
    }
    hs->delivered_seq = seq;
    snprintf(hs->epoch, sizeof(hs->epoch), "%s", epoch);
    hs->cstate = HUB_LIVE;
    struct hub_sub *s = hs->waiting;
    hs->waiting = NULL;
    while (s) {
        struct hub_sub *next = s->stream_next;
        cluster_start_sub(w, hs, s);
        s = next;
    }
    cluster_drain_held(w, hs);
}

static void cluster_on_subscribed(struct worker *w, int b, const char *stream, size_t len)
{
    struct hub_stream *hs = hub_find(w, stream, len);
    if (!hs)
        return;
    hs->owner = w;
    if (hs->cstate == HUB_SUBSCRIBING) {
        hs->refs++;
        broker_head(w, b, hs->name, hs->name_len, cluster_on_head, hs);
    } else if (hs->cstate == HUB_LIVE) {
        /* Back after losing the broker: fetch what was published since. */
        cluster_fill(w, hs, hs->delivered_seq + 1, 0);
    }
}

int cluster_subscribe(struct conn *c, struct hub_stream *hs, const struct hub_subscribe_args *a)
{
    struct worker *w = c->w;
    if (!broker_is_up(w, hs->broker) || !broker_sub_is_up(w, hs->broker))
        return -EAGAIN;
    struct hub_sub *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->has_since = (uint8_t)a->has_since;
    s->since = a->since;
    if (a->epoch)
        s->epoch = strndup(a->epoch, a->epoch_len);
    s->id_json = cluster_strdup(a->id_json);
    s->received_ns = c->msg_start_ns;
    hub_link_conn(c, s);
    s->hs = hs;
    /* The segment's stream entry counts the stream (max_streams, streams
     * active) and keeps it from being reclaimed while we subscribe. */
    struct streamlog_stream *st = streamlog_lock(segment_streams(w->seg), hs->ref);
    if (st) {
        streamlog_follow(st, w->slot_index, 1);
        streamlog_unlock(st);
    }
    hs->owner = w;
    if (hs->cstate == HUB_LIVE) {
        cluster_start_sub(w, hs, s);
        return 0;
    }
    s->stream_next = hs->waiting;
    hs->waiting = s;
    if (hs->cstate == HUB_IDLE) {
        hs->cstate = HUB_SUBSCRIBING;
        broker_subscribe(w, hs->broker, hs->name, hs->name_len);
    }
    return 0;
}

int cluster_unlink_sub(struct worker *w, struct hub_sub *sub)
{
    struct hub_stream *hs = sub->hs;
    /* Still waiting for the stream's position: not in the stream's list. */
    for (struct hub_sub **pp = &hs->waiting; *pp; pp = &(*pp)->stream_next) {
        if (*pp == sub) {
            *pp = sub->stream_next;
            cluster_unlink_conn(sub);
            hub_free_sub(sub);
            if (!hs->waiting && hs->nsubs == 0)
                cluster_stream_unused(w, hs);
            return 1;
        }
    }
    if (!sub->replaying)
        return 0;
    /* Waiting for its replay: leave the stream's list now, and let the
     * replay callback free it. */
    hub_unlink_stream(hs, sub);
    cluster_unlink_conn(sub);
    if (hs->nsubs == 0)
        cluster_stream_unused(w, hs);
    return 1;
}

void cluster_stream_unused(struct worker *w, struct hub_stream *hs)
{
    if (hs->waiting || hs->nsubs || hs->cstate == HUB_IDLE)
        return;
    hs->cstate = HUB_IDLE;
    broker_unsubscribe(w, hs->broker, hs->name, hs->name_len);
    cluster_free_held(hs);
}

static void cluster_on_lost(struct worker *w, int b)
{
    for (int i = 0; i < HUB_BUCKETS; i++) {
        for (struct hub_stream *hs = w->hub.buckets[i]; hs; hs = hs->next) {
            if (hs->broker != b || hs->cstate != HUB_SUBSCRIBING)
                continue;
            /* Subscribers already answered stay; new ones cannot be told
             * their position: refuse them now rather than leave them
             * waiting for a broker that may not come back soon. */
            hs->cstate = HUB_IDLE;
            cluster_free_held(hs);
            cluster_fail_waiting(hs);
        }
    }
}

static void cluster_on_reconnected(struct worker *w, int b)
{
    for (int i = 0; i < HUB_BUCKETS; i++) {
        for (struct hub_stream *hs = w->hub.buckets[i]; hs; hs = hs->next) {
            if (hs->broker == b && hs->cstate == HUB_LIVE)
                broker_subscribe(w, b, hs->name, hs->name_len);
        }
    }
}

const struct broker_events cluster_broker_events = {
    .subscribed = cluster_on_subscribed,
    .message = cluster_on_message,
    .reconnected = cluster_on_reconnected,
    .lost = cluster_on_lost,
};

static void cluster_stream_new(struct worker *w, struct hub_stream *hs)
{
    hs->broker = broker_for_stream(w, hs->name, hs->name_len);
}

/* The seq is not known yet: the broker's answer sends the ack (HUB_PENDING). */
static int cluster_backend_publish(struct conn *c, struct hub_stream *hs, const char *data,
                                   size_t dlen, const char *id_json, uint64_t *seq)
{
    return cluster_publish(c, hs, data, dlen, id_json);
}

const struct stream_backend cluster_backend = {
    .stream_new = cluster_stream_new,
    .publish = cluster_backend_publish,
    .subscribe = cluster_subscribe,
    .unlink_sub = cluster_unlink_sub,
    .stream_unused = cluster_stream_unused,
    .conn_closed = cluster_conn_closed,
};
