#include "hub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "deflate.h"
#include "log.h"
#include "segment.h"
#include "sendq.h"
#include "session.h"
#include "streamlog.h"
#include "wsframe.h"

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
    return streamlog_name_hash(name, len) % HUB_BUCKETS;
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

int hub_init(struct worker *w, int wake_fd, const struct stream_backend *backend)
{
    w->hub.backend = backend;
    w->hub.wake_fd = wake_fd;
    atomic_store(&w->slot->wake_pending, 0);
    /* From now on this worker may follow streams: others judge whether it
     * is stuck from this stamp, renewed by every tick. */
    atomic_store(&w->slot->progress_ns, clock_now_ns());
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
            deflate_context_free(hs->pmd);
            free(hs);
            hs = next;
        }
        w->hub.buckets[b] = NULL;
    }
    w->hub.ready = NULL;
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
static struct hub_stream *hub_get(struct worker *w, const char *name, size_t len, int *err)
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
    if (w->hub.backend->stream_new)
        w->hub.backend->stream_new(w, hs);
    uint32_t b = hub_hash(name, len);
    hs->next = w->hub.buckets[b];
    w->hub.buckets[b] = hs;
    w->hub.streams++;
    return hs;
}

/* A stream this worker published to and follows: fanned out at the next
 * uv_check without scanning every other stream. */
static void hub_mark_ready(struct worker *w, struct hub_stream *hs)
{
    if (hs->ready)
        return;
    hs->ready = 1;
    hs->ready_next = w->hub.ready;
    w->hub.ready = hs;
}

static void hub_forget(struct worker *w, struct hub_stream *hs)
{
    if (hs->ready) {
        struct hub_stream **rp = &w->hub.ready;
        while (*rp && *rp != hs)
            rp = &(*rp)->ready_next;
        if (*rp)
            *rp = hs->ready_next;
    }
    struct hub_stream **pp = &w->hub.buckets[hub_hash(hs->name, hs->name_len)];
    while (*pp && *pp != hs)
        pp = &(*pp)->next;
    if (*pp)
        *pp = hs->next;
    w->hub.streams--;
    deflate_context_free(hs->pmd);
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

/* A message frame with room for `len` bytes of data: the header and the
 * envelope are written, *data points where the publisher's bytes go (the
 * caller copies them, verbatim), followed by the closing brace. */
static struct sendq_frame *hub_frame_alloc(const struct hub_stream *hs, uint64_t seq,
                                           int64_t ts_ms, size_t len, char **data)
{
    char env[STREAMLOG_NAME_MAX + 96];
    int n = snprintf(env, sizeof(env), "{\"type\":\"message\",\"stream\":\"%s\",\"seq\":%llu,\"ts\":%lld,\"data\":",
                     hs->name, (unsigned long long)seq, (long long)ts_ms);
    size_t payload = (size_t)n + len + 1;
    struct sendq_frame *f = sendq_frame_new(wsframe_header_size(payload) + payload);
    if (!f)
        return NULL;
    uint8_t *p = (uint8_t *)f->bytes;
    size_t hlen = wsframe_put_header(p, WSFRAME_TEXT, payload);
    memcpy(p + hlen, env, (size_t)n);
    *data = (char *)p + hlen + n;
    p[hlen + (size_t)n + len] = '}';
    return f;
}

struct sendq_frame *hub_frame_raw(const struct hub_stream *hs, uint64_t seq, int64_t ts_ms,
                                  const char *data, size_t len)
{
    char *dst;
    struct sendq_frame *f = hub_frame_alloc(hs, seq, ts_ms, len, &dst);
    if (f)
        memcpy(dst, data, len);
    return f;
}

/* What the stream log may let go of, from this worker's configuration. */
static struct streamlog_policy hub_policy(const struct worker *w)
{
    struct streamlog_policy pol = {
        .history_records = (uint64_t)w->cfg.history_size,
        .history_bytes = (uint64_t)w->cfg.history_max_bytes,
        .stuck_mask = w->hub.stuck_mask,
    };
    return pol;
}

/* Build the frames of the records from *it to the end of the log whose
 * seq is at least `from`, moving *it past them. Stream locked by the
 * caller. *out is `local` when the records fit its nlocal entries (the
 * live path: usually one record), else allocated for the caller to free.
 * Returns the count, or -ENOMEM with *it unmoved. */
static long hub_collect(struct worker *w, struct hub_stream *hs, struct streamlog_stream *st,
                        struct streamlog_iter *it, uint64_t from, struct hub_out **out,
                        struct hub_out *local, size_t nlocal)
{
    struct streamlog *sl = segment_streams(w->seg);
    uint64_t last = atomic_load(&st->last_seq);
    uint64_t first = from > st->head_seq ? from : st->head_seq;
    *out = NULL;
    if (last < first)
        return 0;
    struct hub_out *o = last - first + 1 <= nlocal ? local : malloc((last - first + 1) * sizeof(*o));
    if (!o)
        return -ENOMEM;
    struct streamlog_iter at = *it;
    long n = 0;
    const struct streamlog_record *r;
    while ((r = streamlog_peek(sl, st, &at)) != NULL) {
        if (r->seq < first) {
            streamlog_take(sl, st, &at, NULL);
            continue;
        }
        char *dst;
        o[n].frame = hub_frame_alloc(hs, r->seq, r->ts_ms, r->len, &dst);
        if (!o[n].frame) {
            while (n > 0)
                sendq_frame_unref(o[--n].frame);
            if (o != local)
                free(o);
            return -ENOMEM;
        }
        o[n].seq = r->seq;
        o[n].origin_ns = r->origin_ns;
        n++;
        streamlog_take(sl, st, &at, dst);
    }
    *it = at;
    *out = o;
    return n;
}

/* The one place a gap message is written. */
static int hub_format_gap(char *msg, size_t cap, const struct hub_stream *hs, uint64_t from,
                          uint64_t to)
{
    return snprintf(msg, cap, "{\"type\":\"gap\",\"stream\":\"%s\",\"from\":%llu,\"to\":%llu}",
                    hs->name, (unsigned long long)from, (unsigned long long)to);
}

void hub_send_gap(struct conn *c, const struct hub_stream *hs, uint64_t from, uint64_t to)
{
    char msg[HUB_GAP_MAX];
    int n = hub_format_gap(msg, sizeof(msg), hs, from, to);
    session_send_text(c, msg, (size_t)n, 0);
}

/* A shared text frame holding `text`. */
static struct sendq_frame *hub_text_frame(const char *text, size_t n)
{
    struct sendq_frame *f = sendq_frame_new(wsframe_header_size(n) + n);
    if (!f)
        return NULL;
    size_t hlen = wsframe_put_header((uint8_t *)f->bytes, WSFRAME_TEXT, n);
    memcpy(f->bytes + hlen, text, n);
    return f;
}

struct sendq_frame *hub_gap_frame(const struct hub_stream *hs, uint64_t from, uint64_t to)
{
    char msg[HUB_GAP_MAX];
    size_t n = (size_t)hub_format_gap(msg, sizeof(msg), hs, from, to);
    return hub_text_frame(msg, n);
}

struct sendq_frame *hub_reset_frame(const struct hub_stream *hs, const char *epoch)
{
    char msg[HUB_GAP_MAX];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"reset\",\"stream\":\"%s\",\"epoch\":\"%s\"}",
                     hs->name, epoch);
    return hub_text_frame(msg, (size_t)n);
}

void hub_sub_lost(struct conn *c, const struct hub_stream *hs)
{
    if (c->closed || c->state != CONN_WS)
        return;
    struct log_line l;
    conn_log_begin(&l, c, LOG_ERROR, "error");
    log_str(&l, "message", "out of memory queueing a stream message for this subscriber; "
                           "closing 1011, it should reconnect and resume with since");
    log_end(&l);
    session_close(c, 1011, "out of memory", DISCONNECT_ERROR);
}

/* Fan out everything new on one stream to this worker's subscribers,
 * then move this worker's cursor past it so the log can let it go. What
 * the log dropped before we read it (our cursor was released while this
 * worker was stuck) is announced as a gap. */
static void hub_deliver(struct worker *w, struct hub_stream *hs)
{
    struct streamlog *sl = segment_streams(w->seg);
    struct streamlog_stream *st = streamlog_stream_at(sl, hs->ref.index);
    if (atomic_load_explicit(&st->last_seq, memory_order_acquire) <= hs->delivered_seq)
        return; /* nothing new: no lock taken */
    st = streamlog_lock(sl, hs->ref);
    if (!st)
        return;
    uint64_t last = atomic_load(&st->last_seq);
    uint64_t from = hs->delivered_seq + 1;
    uint64_t gap_to = 0;
    if (from < st->head_seq) {
        gap_to = st->head_seq - 1 < last ? st->head_seq - 1 : last;
        streamlog_iter_head(st, &hs->it);
    }
    struct hub_out *out;
    struct hub_out local[8];
    long n = hub_collect(w, hs, st, &hs->it, from, &out, local, sizeof(local) / sizeof(local[0]));
    if (n >= 0) {
        struct streamlog_policy pol = hub_policy(w);
        streamlog_consumed(sl, st, w->slot_index, hs->it.pos, &pol);
    }
    streamlog_unlock(st);
    if (n < 0) {
        log_msg(LOG_ERROR, "error", "out of memory fanning out stream %s; will retry", hs->name);
        w->hub.scan = 1;
        return;
    }
    if (gap_to) {
        struct log_line l;
        log_begin(&l, LOG_WARN, "stream_gap");
        log_str(&l, "stream", hs->name);
        log_int(&l, "from", (int64_t)from);
        log_int(&l, "to", (int64_t)gap_to);
        log_str(&l, "message", "this worker stopped making progress for send_timeout while stream "
                               "memory was full; its subscribers are told with a gap");
        log_end(&l);
    }
    for (struct hub_sub *s = hs->subs; s; s = s->stream_next) {
        struct conn *c = s->conn;
        if (gap_to && s->from_seq < gap_to && !c->closed && c->state == CONN_WS)
            hub_send_gap(c, hs, from > s->from_seq + 1 ? from : s->from_seq + 1, gap_to);
    }
    /* Message by message: a connection in step with the stream's
     * compression context asks for the next message's twin (deflate.h)
     * before that one is built. */
    for (long i = 0; i < n; i++) {
        hub_frame_compress(w, hs, out[i].frame);
        for (struct hub_sub *s = hs->subs; s; s = s->stream_next) {
            struct conn *c = s->conn;
            if (c->closed || c->state != CONN_WS || out[i].seq <= s->from_seq)
                continue;
            if (conn_push_frame(c, deflate_frame_for(c, out[i].frame), out[i].origin_ns) < 0)
                hub_sub_lost(c, hs);
        }
        sendq_frame_unref(out[i].frame);
    }
    for (struct hub_sub *s = hs->subs; s; s = s->stream_next)
        conn_mark_dirty(s->conn);
    if (out != local)
        free(out);
    hs->delivered_seq = last;
}

/* Fan out: every followed stream after a wake-up from another worker
 * (which does not say which streams), else only those published to here. */
void hub_run(struct worker *w)
{
    /* Popped one at a time: a delivery that closes a connection may
     * forget a stream still on the list (hub_forget unlinks it). */
    struct hub_stream *hs;
    while ((hs = w->hub.ready) != NULL) {
        w->hub.ready = hs->ready_next;
        hs->ready = 0;
        hs->ready_next = NULL;
        if (hs->nsubs && !w->hub.scan)
            hub_deliver(w, hs);
    }
    if (w->hub.scan) {
        w->hub.scan = 0;
        for (int b = 0; b < HUB_BUCKETS; b++) {
            for (hs = w->hub.buckets[b]; hs; hs = hs->next) {
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
    int err = 0;
    struct hub_stream *hs = hub_get(c->w, stream, len, &err);
    if (!hs)
        return err;
    return c->w->hub.backend->publish(c, hs, data, dlen, id_json, seq);
}

static int hub_local_publish(struct conn *c, struct hub_stream *hs, const char *data, size_t dlen,
                             const char *id_json, uint64_t *seq)
{
    struct worker *w = c->w;
    int err = 0;
    struct streamlog_stream *st = hub_lock(w, hs, &err);
    if (!st)
        return err ? err : -ENOSPC;
    if (dlen > UINT32_MAX) {
        streamlog_unlock(st);
        return -E2BIG;
    }
    struct streamlog_policy pol = hub_policy(w);
    int r = streamlog_append(segment_streams(w->seg), st, data, (uint32_t)dlen, clock_wall_ms(),
                             c->msg_start_ns, &pol, seq);
    uint64_t mask = atomic_load(&st->worker_mask);
    streamlog_unlock(st);
    hs->last_used_ns = c->msg_start_ns;
    if (r < 0)
        return r;
    w->hub.wake_mask |= mask & ~(1ull << w->slot_index);
    /* This worker's own subscribers get it in this iteration's uv_check,
     * with whatever else this read brought: the record waits for our
     * cursor, so nothing can push it out meanwhile. */
    if (hs->nsubs)
        hub_mark_ready(w, hs);
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
    sub->pmd_counted = sub->conn && sub->conn->pmd_takeover;
    hs->pmd_subs += sub->pmd_counted;
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
    return w->hub.backend->subscribe(c, hs, a);
}

static int hub_local_subscribe(struct conn *c, struct hub_stream *hs,
                               const struct hub_subscribe_args *a)
{
    struct worker *w = c->w;
    int err = 0;
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
        /* Under the lock: every publish after this wakes us and waits for
         * our cursor, and everything up to `last` is not ours to deliver. */
        streamlog_follow(st, w->slot_index, 1);
        hs->delivered_seq = last;
        hs->it.pos = st->commit_pos;
        hs->it.chunk = st->tail_chunk;
    }

    /* Replay: with the client's epoch gone stale, everything held of the
     * current epoch; otherwise what is held after `since` — at most the
     * newest history_size, the rest announced as a gap. */
    int recovered = 0;
    long n = 0;
    struct hub_out *out = NULL;
    uint64_t gap_to = 0, after = 0;
    if (a->has_since) {
        int same_epoch = !a->epoch || (a->epoch_len == STREAMLOG_EPOCH_LEN &&
                                       memcmp(a->epoch, epoch, STREAMLOG_EPOCH_LEN) == 0);
        after = same_epoch ? a->since : 0;
        if (after < last) {
            uint64_t cap = (uint64_t)w->cfg.history_size;
            uint64_t first = after + 1;
            if (last - after > cap)
                first = last - cap + 1;
            if (first < st->head_seq)
                first = st->head_seq;
            struct streamlog_iter it;
            streamlog_iter_head(st, &it);
            n = first <= last ? hub_collect(w, hs, st, &it, first, &out, NULL, 0) : 0;
            if (n < 0)
                n = 0, first = last + 1; /* out of memory: say what was not replayed */
            if (first > after + 1)
                gap_to = first - 1;
        }
        recovered = same_epoch && gap_to == 0 && a->since <= last;
    }
    streamlog_unlock(st);

    sub->from_seq = last;
    hub_link_conn(c, sub);
    hub_link_stream(hs, sub);

    hub_send_subscribed(c, hs, epoch, last, a->has_since, recovered, a->id_json);
    if (gap_to)
        hub_send_gap(c, hs, after + 1, gap_to);
    int lost = 0;
    for (long i = 0; i < n; i++) {
        if (!lost && conn_push_frame(c, deflate_frame_for(c, out[i].frame), 0) < 0)
            lost = 1;
        sendq_frame_unref(out[i].frame);
    }
    if (lost)
        hub_sub_lost(c, hs);
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
    if (sub->pmd_counted && --hs->pmd_subs == 0) {
        deflate_context_free(hs->pmd);
        hs->pmd = NULL;
    }
    sub->pmd_counted = 0;
}

void hub_frame_compress(struct worker *w, struct hub_stream *hs, struct sendq_frame *f)
{
    if (hs->pmd_subs)
        deflate_context_feed(w, &hs->pmd, f);
}

static void hub_unlink(struct worker *w, struct hub_sub *sub)
{
    struct hub_stream *hs = sub->hs;
    const struct stream_backend *be = w->hub.backend;
    if (be->unlink_sub && be->unlink_sub(w, sub))
        return;
    hub_unlink_stream(hs, sub);
    hs->last_used_ns = clock_now_ns();
    if (hs->nsubs == 0 && be->stream_unused)
        be->stream_unused(w, hs);
    if (hs->nsubs == 0) {
        struct streamlog_stream *st = streamlog_lock(segment_streams(w->seg), hs->ref);
        if (st) {
            streamlog_follow(st, w->slot_index, 0);
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
    if (c->w->hub.backend->conn_closed)
        c->w->hub.backend->conn_closed(c);
    struct hub_sub *s = c->subs;
    while (s) {
        struct hub_sub *next = s->conn_next;
        hub_unlink(c->w, s);
        s = next;
    }
    c->subs = NULL;
    c->nsubs = 0;
}

/* Which other workers have not ticked for send_timeout: when the stream
 * pool runs out, their cursors may be released so that one stopped
 * process cannot stall every stream (streamlog_append). */
static uint64_t hub_stuck_workers(struct worker *w, uint64_t now_ns)
{
    uint64_t limit = (uint64_t)w->cfg.send_timeout * 1000000000ull;
    uint64_t mask = 0;
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        const struct segment_worker *sw = segment_worker_slot(w->seg, i);
        uint32_t state = atomic_load_explicit(&sw->state, memory_order_relaxed);
        if (i == w->slot_index || (state != WORKER_RUNNING && state != WORKER_DRAINING))
            continue;
        uint64_t seen = atomic_load_explicit(&sw->progress_ns, memory_order_relaxed);
        if (seen && now_ns > seen && now_ns - seen > limit)
            mask |= 1ull << i;
    }
    return mask;
}

void hub_sweep(struct worker *w, uint64_t now_ns)
{
    atomic_store_explicit(&w->slot->progress_ns, now_ns, memory_order_relaxed);
    atomic_store_explicit(&w->slot->queued_frame_bytes, (int64_t)sendq_frame_bytes_held(),
                          memory_order_relaxed);
    uint64_t stuck = hub_stuck_workers(w, now_ns);
    uint64_t newly = stuck & ~w->hub.stuck_mask;
    while (newly) {
        int slot = __builtin_ctzll(newly);
        newly &= newly - 1;
        struct log_line l;
        log_begin(&l, LOG_WARN, "worker_stuck");
        log_int(&l, "stuck_worker", slot);
        log_str(&l, "message", "that worker has made no progress for send_timeout; if stream "
                               "memory fills, its place in streams is given up and its "
                               "subscribers get a gap");
        log_end(&l);
    }
    w->hub.stuck_mask = stuck;
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

/* The shared segment's stream logs: publishing appends under the stream's
 * lock and fan-out (hub_run) follows the log, so a local stream needs no
 * other hook. */
const struct stream_backend hub_local_backend = {
    .publish = hub_local_publish,
    .subscribe = hub_local_subscribe,
};
