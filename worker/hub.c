#include "hub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "broker.h"
#include "cluster.h"
#include "conn.h"
#include "deflate.h"
#include "log.h"
#include "segment.h"
#include "sendq.h"
#include "session.h"
#include "streamlog.h"

/* Cached streams with no local subscriber are forgotten after this. */
#define HUB_IDLE_NS (60ull * 1000000000ull)

/* A message collected from the log, turned into its outgoing frame. */
struct hub_out {
    struct sendq_frame *frame;
    uint64_t seq;
    uint64_t origin_ns;
};

static uint32_t hub_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)name[i];
        h *= 16777619u;
    }
    return h % HUB_BUCKETS;
}

static void hub_on_wake(uv_poll_t *p, int status, int events)
{
    struct worker *w = p->data;
    uint64_t n;
    ssize_t r = read(w->hub.wake_fd, &n, sizeof(n));
    (void)r;
    /* Clear before scanning: a publish landing after this point sends a
     * new wake-up rather than being missed. */
    atomic_store(&w->slot->wake_pending, 0);
    w->hub.scan = 1;
}

int hub_init(struct worker *w, int wake_fd)
{
    w->hub.wake_fd = wake_fd;
    atomic_store(&w->slot->wake_pending, 0);
    int r = uv_poll_init(&w->loop, &w->hub.wake, wake_fd);
    if (r < 0)
        return r;
    w->hub.wake.data = w;
    return uv_poll_start(&w->hub.wake, UV_READABLE, hub_on_wake);
}

void hub_close(struct worker *w)
{
    if (!uv_is_closing((uv_handle_t *)&w->hub.wake))
        uv_close((uv_handle_t *)&w->hub.wake, NULL);
    for (int b = 0; b < HUB_BUCKETS; b++) {
        struct hub_stream *hs = w->hub.buckets[b];
        while (hs) {
            struct hub_stream *next = hs->next;
            free(hs);
            hs = next;
        }
        w->hub.buckets[b] = NULL;
    }
}

struct hub_stream *hub_find(struct worker *w, const char *name, size_t len)
{
    for (struct hub_stream *hs = w->hub.buckets[hub_hash(name, len)]; hs; hs = hs->next) {
        if (hs->name_len == len && memcmp(hs->name, name, len) == 0)
            return hs;
    }
    return NULL;
}

/* The worker's entry for a stream, creating the stream in the shared
 * table when needed. NULL with *err set on failure. */
struct hub_stream *hub_get(struct worker *w, const char *name, size_t len, int *err)
{
    struct hub_stream *hs = hub_find(w, name, len);
    if (hs)
        return hs;
    struct streamlog_ref ref;
    int r = streamlog_lookup(segment_streams(w->seg), name, len, 1, &ref);
    if (r < 0) {
        *err = r;
        return NULL;
    }
    hs = calloc(1, sizeof(*hs));
    if (!hs) {
        *err = -ENOMEM;
        return NULL;
    }
    hs->ref = ref;
    hs->name_len = (uint32_t)len;
    memcpy(hs->name, name, len);
    if (broker_enabled(w))
        hs->broker = broker_for_stream(w, name, len);
    uint32_t b = hub_hash(name, len);
    hs->next = w->hub.buckets[b];
    w->hub.buckets[b] = hs;
    w->hub.streams++;
    return hs;
}

static void hub_forget(struct worker *w, struct hub_stream *hs)
{
    struct hub_stream **pp = &w->hub.buckets[hub_hash(hs->name, hs->name_len)];
    while (*pp && *pp != hs)
        pp = &(*pp)->next;
    if (*pp)
        *pp = hs->next;
    w->hub.streams--;
    free(hs);
}

/* Lock the stream behind hs; if its slot was reclaimed and reused since
 * we cached it (no subscriber here, so we cannot have missed anything),
 * look the name up again. */
static struct streamlog_stream *hub_lock(struct worker *w, struct hub_stream *hs, int *err)
{
    struct streamlog *sl = segment_streams(w->seg);
    struct streamlog_stream *st = streamlog_lock(sl, hs->ref);
    if (st || hs->nsubs)
        return st;
    int r = streamlog_lookup(sl, hs->name, hs->name_len, 1, &hs->ref);
    if (r < 0) {
        *err = r;
        return NULL;
    }
    return streamlog_lock(sl, hs->ref);
}

struct sendq_frame *hub_frame_raw(const struct hub_stream *hs, uint64_t seq, int64_t ts_ms,
                                  const char *data, size_t len)
{
    char env[STREAMLOG_NAME_MAX + 96];
    int n = snprintf(env, sizeof(env), "{\"type\":\"message\",\"stream\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"data\":",
                     hs->name, (unsigned long long)seq, (long long)ts_ms);
    size_t payload = (size_t)n + len + 1;
    size_t hlen = payload < 126 ? 2 : payload < 65536 ? 4 : 10;
    struct sendq_frame *f = sendq_frame_new(hlen + payload);
    if (!f)
        return NULL;
    uint8_t *p = (uint8_t *)f->bytes;
    p[0] = 0x81;
    if (hlen == 2) {
        p[1] = (uint8_t)payload;
    } else if (hlen == 4) {
        p[1] = 126;
        p[2] = (uint8_t)(payload >> 8);
        p[3] = (uint8_t)payload;
    } else {
        p[1] = 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (uint8_t)((uint64_t)payload >> (56 - 8 * i));
    }
    memcpy(p + hlen, env, (size_t)n);
    memcpy(p + hlen + n, data, len);
    p[hlen + (size_t)n + len] = '}';
    return f;
}

/* Frame for one record: the header and envelope around the publisher's
 * bytes, which are copied verbatim. */
static struct sendq_frame *hub_frame(const struct hub_stream *hs, const struct streamlog_record *r)
{
    return hub_frame_raw(hs, r->seq, r->ts_ms, streamlog_record_data(r), r->len);
}

/* Collect the records after `after` (at most `cap`: history_size for a
 * replay, unbounded for live fan-out, which must never skip what the ring
 * still holds) and build their frames; *gap_to > 0 when messages after
 * `after` are no longer held. Stream locked by the caller. Returns the
 * count, or -ENOMEM. */
static long hub_collect(struct worker *w, struct hub_stream *hs, struct streamlog_stream *st,
                        uint64_t after, uint64_t cap, struct hub_out **out, uint64_t *gap_to)
{
    struct streamlog *sl = segment_streams(w->seg);
    uint64_t last = atomic_load(&st->last_seq);
    *out = NULL;
    *gap_to = 0;
    if (last <= after)
        return 0;
    uint64_t want = last - after < cap ? last - after : cap;
    const struct streamlog_record **recs = malloc(want * sizeof(*recs));
    struct hub_out *o = malloc(want * sizeof(*o));
    if (!recs || !o) {
        free(recs);
        free(o);
        return -ENOMEM;
    }
    uint64_t oldest;
    size_t n = streamlog_collect(sl, st, after, cap, recs, (size_t)want, &oldest);
    uint64_t first = n ? recs[0]->seq : last + 1;
    if (first > after + 1)
        *gap_to = first - 1;
    for (size_t i = 0; i < n; i++) {
        o[i].frame = hub_frame(hs, recs[i]);
        o[i].seq = recs[i]->seq;
        o[i].origin_ns = recs[i]->origin_ns;
        if (!o[i].frame) {
            for (size_t j = 0; j < i; j++)
                sendq_frame_unref(o[j].frame);
            free(recs);
            free(o);
            return -ENOMEM;
        }
    }
    free(recs);
    *out = o;
    return (long)n;
}

void hub_send_gap(struct conn *c, const struct hub_stream *hs, uint64_t from, uint64_t to)
{
    char msg[STREAMLOG_NAME_MAX + 96];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"gap\",\"stream\":\"%s\",\"from\":%llu,\"to\":%llu}",
                     hs->name, (unsigned long long)from, (unsigned long long)to);
    session_send_text(c, msg, (size_t)n, 0);
}

/* Fan out everything new on one stream to this worker's subscribers. */
static void hub_deliver(struct worker *w, struct hub_stream *hs)
{
    struct streamlog *sl = segment_streams(w->seg);
    struct streamlog_stream *st = streamlog_stream_at(sl, hs->ref.index);
    if (atomic_load_explicit(&st->last_seq, memory_order_acquire) <= hs->delivered_seq)
        return; /* nothing new: no lock taken */
    st = streamlog_lock(sl, hs->ref);
    if (!st)
        return;
    struct hub_out *out;
    uint64_t gap_to;
    uint64_t last = atomic_load(&st->last_seq);
    long n = hub_collect(w, hs, st, hs->delivered_seq, UINT64_MAX, &out, &gap_to);
    streamlog_unlock(st);
    if (n < 0) {
        log_msg(LOG_ERROR, "error", "out of memory fanning out stream %s; will retry", hs->name);
        w->hub.scan = 1;
        return;
    }
    uint64_t from = hs->delivered_seq + 1;
    for (struct hub_sub *s = hs->subs; s; s = s->stream_next) {
        struct conn *c = s->conn;
        if (c->closed || c->state != CONN_WS)
            continue;
        if (gap_to && s->from_seq < gap_to)
            hub_send_gap(c, hs, from > s->from_seq + 1 ? from : s->from_seq + 1, gap_to);
        for (long i = 0; i < n; i++) {
            if (out[i].seq > s->from_seq)
                sendq_push_frame(&c->out, deflate_frame_for(c, out[i].frame), out[i].origin_ns);
        }
        conn_mark_dirty(c);
    }
    for (long i = 0; i < n; i++)
        sendq_frame_unref(out[i].frame);
    free(out);
    hs->delivered_seq = last;
}

void hub_run(struct worker *w)
{
    if (w->hub.scan) {
        w->hub.scan = 0;
        for (int b = 0; b < HUB_BUCKETS; b++) {
            for (struct hub_stream *hs = w->hub.buckets[b]; hs; hs = hs->next) {
                if (hs->nsubs)
                    hub_deliver(w, hs);
            }
        }
    }
    uint64_t mask = w->hub.wake_mask;
    w->hub.wake_mask = 0;
    while (mask) {
        int slot = __builtin_ctzll(mask);
        mask &= mask - 1;
        struct segment_worker *sw = segment_worker_slot(w->seg, slot);
        if (atomic_exchange(&sw->wake_pending, 1) == 0) {
            uint64_t one = 1;
            ssize_t r = write(sw->wake_fd, &one, sizeof(one));
            (void)r;
        }
    }
}

int hub_publish(struct conn *c, const char *stream, size_t len, const char *data, size_t dlen,
                const char *id_json, uint64_t *seq)
{
    struct worker *w = c->w;
    int err = 0;
    struct hub_stream *hs = hub_get(w, stream, len, &err);
    if (!hs)
        return err;
    if (broker_enabled(w))
        return cluster_publish(c, hs, data, dlen, id_json);
    struct streamlog_stream *st = hub_lock(w, hs, &err);
    if (!st)
        return err ? err : -ENOSPC;
    if (dlen > UINT32_MAX) {
        streamlog_unlock(st);
        return -E2BIG;
    }
    int r = streamlog_append(segment_streams(w->seg), st, data, (uint32_t)dlen, clock_wall_ms(),
                             c->msg_start_ns, seq);
    uint64_t mask = atomic_load(&st->worker_mask);
    streamlog_unlock(st);
    hs->last_used_ns = c->msg_start_ns;
    if (r < 0)
        return r;
    w->hub.wake_mask |= mask & ~(1ull << w->slot_index);
    /* This worker's own subscribers get it now, before the next append
     * of the same read could push it out of a small ring. */
    if (hs->nsubs)
        hub_deliver(w, hs);
    return 0;
}

static struct hub_sub *hub_conn_sub(struct conn *c, const char *stream, size_t len)
{
    for (struct hub_sub *s = c->subs; s; s = s->conn_next) {
        if (s->hs->name_len == len && memcmp(s->hs->name, stream, len) == 0)
            return s;
    }
    return NULL;
}

void hub_send_subscribed(struct conn *c, const struct hub_stream *hs, const char *epoch,
                         uint64_t seq, int has_since, int recovered, const char *id_json)
{
    char msg[STREAMLOG_NAME_MAX + 160];
    int n = snprintf(msg, sizeof(msg),
                     "{\"type\":\"subscribed\",\"stream\":\"%s\",\"epoch\":\"%s\",\"seq\":%llu",
                     hs->name, epoch, (unsigned long long)seq);
    if (has_since)
        n += snprintf(msg + n, sizeof(msg) - (size_t)n, ",\"recovered\":%s",
                      recovered ? "true" : "false");
    size_t idlen = id_json ? strlen(id_json) : 0;
    char *buf = msg;
    if (idlen) {
        buf = malloc((size_t)n + idlen + 8);
        if (!buf)
            return;
        memcpy(buf, msg, (size_t)n);
        n += sprintf(buf + n, ",\"id\":%s", id_json);
    }
    buf[n++] = '}';
    session_send_text(c, buf, (size_t)n, c->msg_start_ns);
    if (buf != msg)
        free(buf);
}

void hub_link_stream(struct hub_stream *hs, struct hub_sub *sub)
{
    sub->hs = hs;
    sub->stream_prev = NULL;
    sub->stream_next = hs->subs;
    if (hs->subs)
        hs->subs->stream_prev = sub;
    hs->subs = sub;
    hs->nsubs++;
}

void hub_link_conn(struct conn *c, struct hub_sub *sub)
{
    sub->conn = c;
    sub->conn_next = c->subs;
    c->subs = sub;
    c->nsubs++;
}

int hub_subscribe(struct conn *c, const struct hub_subscribe_args *a)
{
    struct worker *w = c->w;
    if (hub_conn_sub(c, a->stream, a->stream_len))
        return -EEXIST;
    if (c->nsubs >= (uint32_t)w->cfg.max_subscriptions)
        return -EMLINK;
    int err = 0;
    struct hub_stream *hs = hub_get(w, a->stream, a->stream_len, &err);
    if (!hs)
        return err;
    if (broker_enabled(w))
        return cluster_subscribe(c, hs, a);
    struct hub_sub *sub = calloc(1, sizeof(*sub));
    if (!sub)
        return -ENOMEM;
    struct streamlog_stream *st = hub_lock(w, hs, &err);
    if (!st) {
        free(sub);
        return err ? err : -ENOSPC;
    }
    uint64_t last = atomic_load(&st->last_seq);
    char epoch[STREAMLOG_EPOCH_LEN + 1];
    memcpy(epoch, st->epoch, sizeof(epoch));
    if (hs->nsubs == 0) {
        /* Under the lock: every publish after this wakes us, and
         * everything up to `last` is not ours to deliver. */
        streamlog_set_subscribed(st, w->slot_index, 1);
        hs->delivered_seq = last;
    }

    /* Replay: with the client's epoch gone stale, everything held of the
     * current epoch; otherwise what is held after `since`. */
    int recovered = 0;
    long n = 0;
    struct hub_out *out = NULL;
    uint64_t gap_to = 0, after = 0;
    if (a->has_since) {
        int same_epoch = !a->epoch || (a->epoch_len == STREAMLOG_EPOCH_LEN &&
                                       memcmp(a->epoch, epoch, STREAMLOG_EPOCH_LEN) == 0);
        after = same_epoch ? a->since : 0;
        if (after < last) {
            n = hub_collect(w, hs, st, after, (uint64_t)w->cfg.history_size, &out, &gap_to);
            if (n < 0)
                n = 0, gap_to = last; /* out of memory: say what was not replayed */
        }
        recovered = same_epoch && gap_to == 0 && a->since <= last;
    }
    streamlog_unlock(st);

    sub->from_seq = last;
    hub_link_stream(hs, sub);
    hub_link_conn(c, sub);

    hub_send_subscribed(c, hs, epoch, last, a->has_since, recovered, a->id_json);
    if (gap_to)
        hub_send_gap(c, hs, after + 1, gap_to);
    for (long i = 0; i < n; i++) {
        sendq_push_frame(&c->out, deflate_frame_for(c, out[i].frame), 0);
        sendq_frame_unref(out[i].frame);
    }
    free(out);
    conn_mark_dirty(c);
    return 0;
}

void hub_free_queue(struct hub_sub *sub)
{
    struct hub_frameq *q = sub->queued;
    while (q) {
        struct hub_frameq *next = q->next;
        sendq_frame_unref(q->frame);
        free(q);
        q = next;
    }
    sub->queued = sub->queued_tail = NULL;
}

void hub_free_sub(struct hub_sub *sub)
{
    hub_free_queue(sub);
    free(sub->epoch);
    free(sub->id_json);
    free(sub);
}

void hub_unlink_stream(struct hub_stream *hs, struct hub_sub *sub)
{
    if (sub->stream_prev)
        sub->stream_prev->stream_next = sub->stream_next;
    else
        hs->subs = sub->stream_next;
    if (sub->stream_next)
        sub->stream_next->stream_prev = sub->stream_prev;
    hs->nsubs--;
}

void hub_unlink(struct worker *w, struct hub_sub *sub)
{
    struct hub_stream *hs = sub->hs;
    if (broker_enabled(w) && cluster_unlink_sub(w, sub))
        return;
    hub_unlink_stream(hs, sub);
    hs->last_used_ns = clock_now_ns();
    if (hs->nsubs == 0 && broker_enabled(w))
        cluster_stream_unused(w, hs);
    if (hs->nsubs == 0) {
        struct streamlog_stream *st = streamlog_lock(segment_streams(w->seg), hs->ref);
        if (st) {
            streamlog_set_subscribed(st, w->slot_index, 0);
            atomic_store(&st->last_active_ms, clock_wall_ms());
            streamlog_unlock(st);
        }
    }
    hub_free_sub(sub);
}

int hub_unsubscribe(struct conn *c, const char *stream, size_t len)
{
    struct hub_sub **pp = &c->subs;
    while (*pp && !((*pp)->hs->name_len == len && memcmp((*pp)->hs->name, stream, len) == 0))
        pp = &(*pp)->conn_next;
    if (!*pp)
        return -ENOENT;
    struct hub_sub *sub = *pp;
    *pp = sub->conn_next;
    c->nsubs--;
    hub_unlink(c->w, sub);
    return 0;
}

void hub_conn_closed(struct conn *c)
{
    if (broker_enabled(c->w))
        cluster_conn_closed(c);
    struct hub_sub *s = c->subs;
    while (s) {
        struct hub_sub *next = s->conn_next;
        hub_unlink(c->w, s);
        s = next;
    }
    c->subs = NULL;
    c->nsubs = 0;
}

void hub_sweep(struct worker *w, uint64_t now_ns)
{
    for (int b = 0; b < HUB_BUCKETS; b++) {
        struct hub_stream *hs = w->hub.buckets[b];
        while (hs) {
            struct hub_stream *next = hs->next;
            if (hs->nsubs == 0 && hs->refs == 0 && !hs->waiting &&
                now_ns - hs->last_used_ns > HUB_IDLE_NS)
                hub_forget(w, hs);
            hs = next;
        }
    }
}
