/*
 * Unit suite for worker/hub.c, driven through hub.h. Below the hub: a real
 * stream log in a segment made in plain memory (the local backend), or a
 * fake stream_backend that records the hub's calls; above it, connections
 * made in memory whose send queues are read back as WebSocket frames.
 * Covered: subscribed/ack/fan-out in seq order, one shared frame for every
 * subscriber, replay after `since` with the history cap announced as a
 * gap, a stale epoch, the refusals (-EEXIST, -EMLINK, -ENOENT), the hub's
 * calls to its backend, and nothing delivered after unsubscribe or close.
 */
#include <check.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "config.h"
#include "fakequeue.h"
#include "hub.h"
#include "segment.h"
#include "sendq.h"
#include "streamlog.h"
#include "unit.h"

#define T_MAX_STREAMS 16
#define T_STREAM_MEMORY (16 * STREAMLOG_CHUNK)
#define T_HISTORY 8

static struct worker *w;

static void no_write_cb(struct conn *c, int status)
{
}

static void setup_worker(const struct stream_backend *backend)
{
    w = calloc(1, sizeof(*w));
    config_defaults(&w->cfg);
    w->cfg.max_streams = T_MAX_STREAMS;
    w->cfg.stream_memory = T_STREAM_MEMORY;
    w->cfg.history_size = T_HISTORY;
    w->cfg.max_subscriptions = 3;
    /* The segment as segment_create lays it out, in plain memory. */
    uint64_t off = (sizeof(struct segment) + 4095) / 4096 * 4096;
    uint64_t bytes = streamlog_bytes(T_MAX_STREAMS, T_STREAM_MEMORY);
    struct segment *seg = calloc(1, (size_t)(off + bytes));
    seg->magic = SEGMENT_MAGIC;
    seg->layout_version = SEGMENT_LAYOUT_VERSION;
    seg->worker_slots = SEGMENT_WORKER_SLOTS;
    seg->size = off + bytes;
    seg->streams_offset = off;
    seg->streams_bytes = bytes;
    ck_assert_int_eq(streamlog_init(segment_streams(seg), T_MAX_STREAMS, T_STREAM_MEMORY), 0);
    w->seg = seg;
    w->slot = segment_worker_slot(seg, 0);
    w->slot->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ck_assert_int_eq(uv_loop_init(&w->loop), 0);
    ck_assert_int_eq(hub_init(w, w->slot->wake_fd, backend), 0);
}

static void setup(void)
{
    setup_worker(&hub_local_backend);
}

static void teardown(void)
{
    struct conn *next;
    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        hub_conn_closed(c);
        sendq_free(c->out);
        free(c->out);
        free(c);
    }
    hub_close(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&w->loop), 0);
    close(w->slot->wake_fd);
    free(w->seg);
    free(w);
    ck_assert_uint_eq(sendq_frame_bytes_held(), 0);
}

static struct conn *new_conn(void)
{
    return fakequeue_conn(w, no_write_cb);
}

/* Take the next text frame off the connection's queue, parsed. */
static json_t *next_msg(struct conn *c)
{
    struct sendq_chunk *ch = c->out->head;
    if (!ch)
        return NULL;
    const uint8_t *b = (const uint8_t *)sendq_chunk_bytes(ch);
    ck_assert_int_eq(b[0], 0x81);
    size_t len = b[1] & 0x7f, h = 2;
    ck_assert_int_eq(b[1] & 0x80, 0);
    if (len == 126) {
        len = (size_t)b[2] << 8 | b[3];
        h = 4;
    }
    ck_assert_uint_eq(h + len, ch->len);
    json_error_t err;
    json_t *j = json_loadb((const char *)b + h, len, 0, &err);
    ck_assert_msg(j != NULL, "not JSON: %.*s", (int)len, b + h);
    sendq_consume(c, ch->len);
    return j;
}

static const char *type_of(json_t *j)
{
    return json_string_value(json_object_get(j, "type"));
}

static uint64_t seq_of(json_t *j)
{
    return (uint64_t)json_integer_value(json_object_get(j, "seq"));
}

static int subscribe(struct conn *c, const char *stream, int has_since, uint64_t since,
                     const char *epoch)
{
    struct hub_subscribe_args a = {
        .stream = stream, .stream_len = strlen(stream), .has_since = has_since,
        .since = since, .epoch = epoch, .epoch_len = epoch ? strlen(epoch) : 0,
        .id_json = "7",
    };
    return hub_subscribe(c, &a);
}

static uint64_t publish(struct conn *c, const char *stream, const char *data)
{
    uint64_t seq = 0;
    ck_assert_int_eq(hub_publish(c, stream, strlen(stream), data, strlen(data), NULL, &seq), 0);
    return seq;
}

START_TEST(subscribed_then_every_message_in_order)
{
    struct conn *a = new_conn(), *b = new_conn(), *p = new_conn();
    ck_assert_int_eq(subscribe(a, "ward/1", 0, 0, NULL), 0);
    json_t *j = next_msg(a);
    ck_assert_str_eq(type_of(j), "subscribed");
    ck_assert_str_eq(json_string_value(json_object_get(j, "stream")), "ward/1");
    ck_assert_uint_eq(seq_of(j), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), 7);
    ck_assert_ptr_null(json_object_get(j, "recovered"));
    json_decref(j);
    ck_assert_int_eq(subscribe(b, "ward/1", 0, 0, NULL), 0);
    json_decref(next_msg(b));

    ck_assert_uint_eq(publish(p, "ward/1", "{\"hr\":71}"), 1);
    ck_assert_uint_eq(publish(p, "ward/1", "[1,2,3]"), 2);
    ck_assert_ptr_null(a->out->head); /* fan-out waits for the loop's check phase */
    hub_run(w);
    ck_assert_ptr_nonnull(a->out->head);
    /* One frame, shared by both queues. */
    ck_assert_ptr_nonnull(a->out->head->frame);
    ck_assert_ptr_eq(a->out->head->frame, b->out->head->frame);
    for (uint64_t s = 1; s <= 2; s++) {
        j = next_msg(a);
        ck_assert_str_eq(type_of(j), "message");
        ck_assert_uint_eq(seq_of(j), s);
        json_t *d = json_object_get(j, "data");
        ck_assert(s == 1 ? json_is_object(d) : json_is_array(d));
        json_decref(j);
        j = next_msg(b);
        ck_assert_uint_eq(seq_of(j), s);
        json_decref(j);
    }
    ck_assert_ptr_null(next_msg(a));
    ck_assert_ptr_null(next_msg(p)); /* the publisher is not a subscriber */
}
END_TEST

START_TEST(since_replays_what_is_held_and_announces_the_rest)
{
    struct conn *p = new_conn(), *c = new_conn();
    for (int i = 0; i < 12; i++)
        publish(p, "bed/3", "{}");
    ck_assert_int_eq(subscribe(c, "bed/3", 1, 2, NULL), 0);
    json_t *j = next_msg(c);
    ck_assert_str_eq(type_of(j), "subscribed");
    ck_assert_uint_eq(seq_of(j), 12);
    ck_assert(json_is_false(json_object_get(j, "recovered")));
    json_decref(j);
    /* history_size 8: seqs 5..12 replayed, 3..4 announced. */
    j = next_msg(c);
    ck_assert_str_eq(type_of(j), "gap");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "from")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "to")), 4);
    json_decref(j);
    for (uint64_t s = 5; s <= 12; s++) {
        j = next_msg(c);
        ck_assert_str_eq(type_of(j), "message");
        ck_assert_uint_eq(seq_of(j), s);
        json_decref(j);
    }
    ck_assert_ptr_null(next_msg(c));
    publish(p, "bed/3", "{}");
    hub_run(w);
    j = next_msg(c);
    ck_assert_uint_eq(seq_of(j), 13);
    json_decref(j);
}
END_TEST

START_TEST(since_within_history_is_recovered)
{
    struct conn *p = new_conn(), *c = new_conn(), *d = new_conn();
    for (int i = 0; i < 3; i++)
        publish(p, "bed/4", "{}");
    ck_assert_int_eq(subscribe(c, "bed/4", 1, 1, NULL), 0);
    json_t *j = next_msg(c);
    ck_assert(json_is_true(json_object_get(j, "recovered")));
    char epoch[64];
    snprintf(epoch, sizeof(epoch), "%s", json_string_value(json_object_get(j, "epoch")));
    json_decref(j);
    for (uint64_t s = 2; s <= 3; s++) {
        j = next_msg(c);
        ck_assert_uint_eq(seq_of(j), s);
        json_decref(j);
    }
    ck_assert_ptr_null(next_msg(c));
    /* Another epoch's since: everything of this one, not recovered. */
    char stale[64];
    snprintf(stale, sizeof(stale), "%s", epoch);
    stale[0] = stale[0] == 'a' ? 'b' : 'a';
    ck_assert_int_eq(subscribe(d, "bed/4", 1, 2, stale), 0);
    j = next_msg(d);
    ck_assert(json_is_false(json_object_get(j, "recovered")));
    json_decref(j);
    for (uint64_t s = 1; s <= 3; s++) {
        j = next_msg(d);
        ck_assert_uint_eq(seq_of(j), s);
        json_decref(j);
    }
}
END_TEST

START_TEST(refusals)
{
    struct conn *c = new_conn();
    ck_assert_int_eq(subscribe(c, "s/1", 0, 0, NULL), 0);
    ck_assert_int_eq(subscribe(c, "s/1", 0, 0, NULL), -EEXIST);
    ck_assert_int_eq(subscribe(c, "s/2", 0, 0, NULL), 0);
    ck_assert_int_eq(subscribe(c, "s/3", 0, 0, NULL), 0);
    ck_assert_int_eq(subscribe(c, "s/4", 0, 0, NULL), -EMLINK);
    ck_assert_int_eq(hub_unsubscribe(c, "s/9", 3), -ENOENT);
    ck_assert_int_eq(hub_unsubscribe(c, "s/2", 3), 0);
    ck_assert_uint_eq(c->nsubs, 2);
    ck_assert_int_eq(subscribe(c, "s/4", 0, 0, NULL), 0);
}
END_TEST

START_TEST(nothing_after_unsubscribe_or_close)
{
    struct conn *p = new_conn(), *a = new_conn(), *b = new_conn();
    subscribe(a, "x", 0, 0, NULL);
    subscribe(b, "x", 0, 0, NULL);
    json_decref(next_msg(a));
    json_decref(next_msg(b));
    ck_assert_int_eq(hub_unsubscribe(a, "x", 1), 0);
    hub_conn_closed(b);
    ck_assert_ptr_null(b->subs);
    publish(p, "x", "1");
    hub_run(w);
    ck_assert_ptr_null(next_msg(a));
    ck_assert_ptr_null(next_msg(b));
}
END_TEST

/* ---- a fake backend: what the hub asks of it ---------------------------- */

static char calls[512];

static void note(const char *what)
{
    strncat(calls, what, sizeof(calls) - strlen(calls) - 1);
    strncat(calls, " ", sizeof(calls) - strlen(calls) - 1);
}

static void fake_stream_new(struct worker *wk, struct hub_stream *hs)
{
    note("new");
    hs->broker = 5;
}

static int fake_publish(struct conn *c, struct hub_stream *hs, const char *data, size_t dlen,
                        const char *id_json, uint64_t *seq)
{
    ck_assert_int_eq(hs->broker, 5);
    note(dlen == 1 && data[0] == 'F' ? "publish-fail" : "publish");
    return dlen == 1 && data[0] == 'F' ? -EAGAIN : HUB_PENDING;
}

static int fake_subscribe(struct conn *c, struct hub_stream *hs, const struct hub_subscribe_args *a)
{
    note("subscribe");
    struct hub_sub *sub = calloc(1, sizeof(*sub));
    hub_link_stream(hs, sub);
    hub_link_conn(c, sub);
    return 0;
}

static int fake_unlink_sub(struct worker *wk, struct hub_sub *sub)
{
    note("unlink");
    return 0;
}

static void fake_stream_unused(struct worker *wk, struct hub_stream *hs)
{
    note("unused");
}

static void fake_conn_closed(struct conn *c)
{
    note("closed");
}

static const struct stream_backend fake_backend = {
    .stream_new = fake_stream_new,
    .publish = fake_publish,
    .subscribe = fake_subscribe,
    .unlink_sub = fake_unlink_sub,
    .stream_unused = fake_stream_unused,
    .conn_closed = fake_conn_closed,
};

static void setup_fake(void)
{
    calls[0] = '\0';
    setup_worker(&fake_backend);
}

START_TEST(the_hub_asks_its_backend)
{
    struct conn *c = new_conn();
    uint64_t seq = 99;
    ck_assert_int_eq(hub_publish(c, "r/1", 3, "{}", 2, "1", &seq), HUB_PENDING);
    ck_assert_int_eq(hub_publish(c, "r/1", 3, "F", 1, NULL, &seq), -EAGAIN);
    ck_assert_int_eq(subscribe(c, "r/1", 0, 0, NULL), 0);
    ck_assert_int_eq(subscribe(c, "r/1", 0, 0, NULL), -EEXIST); /* the hub's own check */
    ck_assert_int_eq(subscribe(c, "r/2", 0, 0, NULL), 0);
    ck_assert_int_eq(hub_unsubscribe(c, "r/1", 3), 0);
    hub_conn_closed(c);
    ck_assert_str_eq(calls, "new publish publish-fail subscribe new subscribe unlink unused "
                            "closed unlink unused ");
    ck_assert_ptr_null(c->out->head); /* the backend answers, not the hub */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hub");
    TCase *tc = unit_tcase(s, "local");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, subscribed_then_every_message_in_order);
    tcase_add_test(tc, since_replays_what_is_held_and_announces_the_rest);
    tcase_add_test(tc, since_within_history_is_recovered);
    tcase_add_test(tc, refusals);
    tcase_add_test(tc, nothing_after_unsubscribe_or_close);
    TCase *fake = unit_tcase(s, "backend");
    tcase_add_checked_fixture(fake, setup_fake, teardown);
    tcase_add_test(fake, the_hub_asks_its_backend);
    return unit_run(s);
}
