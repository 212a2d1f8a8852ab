/*
 * Unit suite for worker/cluster.c's delivery, reached by including the .c
 * (its statics) with cluster.c's own malloc replaced, so that running out
 * of memory can be made to happen where it matters. The broker below is
 * not involved: the tests hand cluster.c the broker's events and replies
 * directly. Connections are made in memory and their queues read back.
 *
 * Covered: a live message reaches a live subscriber and waits in a
 * replaying one's queue; out of memory for a replaying subscriber's queue
 * closes it 1011 instead of dropping the message unannounced (hub.h's
 * promise); a replay that completes after its subscriber was closed sends
 * nothing after the close frame; a gap queued during a replay with a
 * 128-character stream name is one well-formed frame (16-bit length).
 */
#include <stdlib.h>

static int cluster_malloc_fails;

static void *test_malloc(size_t n)
{
    return cluster_malloc_fails ? NULL : malloc(n);
}

#define malloc test_malloc
#include "cluster.c"
#undef malloc

#include <check.h>

#include "config.h"
#include "fakequeue.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;
static struct hub_stream *hs;

static void no_write_cb(struct conn *c, int status)
{
}

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    cluster_malloc_fails = 0;
    w = fakequeue_worker(&slot);
    hs = calloc(1, sizeof(*hs));
    hs->owner = w;
    hs->cstate = HUB_LIVE;
    hs->name_len = 6;
    memcpy(hs->name, "ward/1", 7);
    snprintf(hs->epoch, sizeof(hs->epoch), "e1");
}

static struct conn *new_conn(void)
{
    return fakequeue_conn(w, no_write_cb);
}

static struct hub_sub *new_sub(struct conn *c, uint64_t from_seq, int replaying)
{
    struct hub_sub *s = calloc(1, sizeof(*s));
    s->from_seq = from_seq;
    s->replaying = (uint8_t)replaying;
    hub_link_stream(hs, s);
    hub_link_conn(c, s);
    return s;
}

static void teardown(void)
{
    struct conn *next;
    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        struct hub_sub *s = c->subs, *sn;
        for (; s; s = sn) {
            sn = s->conn_next;
            hub_free_sub(s);
        }
        session_free(c);
        sendq_free(c->out);
        free(c->out);
        free(c);
    }
    free(hs);
    free(w);
    ck_assert_uint_eq(sendq_frame_bytes_held(), 0);
}

/* The frames queued to c, in order, as "opcode:text" ("8:code" for a close). */
static int frames(struct conn *c, char out[][256], int max)
{
    return fakequeue_frames(c->out, out, max);
}

START_TEST(live_and_replaying_subscribers)
{
    struct conn *a = new_conn(), *b = new_conn();
    new_sub(a, 0, 0);
    struct hub_sub *sb = new_sub(b, 0, 1);
    cluster_deliver(hs, 1, 1000, "{\"x\":1}", 7);
    char f[8][256];
    ck_assert_int_eq(frames(a, f, 8), 1);
    ck_assert_msg(strstr(f[0], "\"seq\":1") && strstr(f[0], "\"data\":{\"x\":1}"), "%s", f[0]);
    ck_assert_int_eq(frames(b, f, 8), 0);
    ck_assert_ptr_nonnull(sb->queued);
    ck_assert_uint_eq(hs->delivered_seq, 1);
}
END_TEST

START_TEST(no_memory_for_a_replaying_queue_closes_1011)
{
    struct conn *b = new_conn();
    struct hub_sub *sb = new_sub(b, 0, 1);
    sb->has_since = 1;
    sb->since = 0;
    hs->refs = 1;
    cluster_malloc_fails = 1;
    cluster_deliver(hs, 1, 1000, "{}", 2);
    cluster_malloc_fails = 0;
    ck_assert_ptr_null(sb->queued);
    ck_assert_int_eq(b->state, CONN_CLOSING);
    char f[8][256];
    int k = frames(b, f, 8);
    ck_assert_msg(k == 1, "%d frames: %s | %s", k, f[0], f[1]);
    ck_assert_str_eq(f[0], "8:1011");
    ck_assert_uint_eq(slot.counters.disconnections[DISCONNECT_ERROR], 0); /* counted at close */

    /* Its replay comes back afterwards: nothing may follow the close. */
    struct broker_entry e = {1, 1000, "{}", 2};
    sb->from_seq = 1;
    cluster_on_replay(sb, 0, &e, 1);
    int n = frames(b, f, 8);
    ck_assert_msg(n == 1, "%d frames, the last: %s", n, f[n - 1]);
    ck_assert_int_eq(sb->replaying, 0);
}
END_TEST

START_TEST(a_replay_ends_with_what_was_queued_meanwhile)
{
    struct conn *b = new_conn();
    struct hub_sub *sb = new_sub(b, 2, 1);
    sb->has_since = 1;
    sb->since = 0;
    hs->refs = 1;
    cluster_deliver(hs, 3, 1000, "3", 1);
    struct broker_entry e[2] = {{1, 1000, "1", 1}, {2, 1000, "2", 1}};
    cluster_on_replay(sb, 0, e, 2);
    char f[8][256];
    int n = frames(b, f, 8);
    ck_assert_int_eq(n, 4);
    ck_assert_msg(strstr(f[0], "\"type\":\"subscribed\"") != NULL, "%s", f[0]);
    for (int i = 1; i <= 3; i++) {
        char want[32];
        snprintf(want, sizeof(want), "\"seq\":%d", i);
        ck_assert_msg(strstr(f[i], want) != NULL, "%d: %s", i, f[i]);
    }
}
END_TEST

/* The bug of 0.2.0's first cluster builds: a gap queued for a replaying
 * subscriber had its length written into one byte; a 128-character
 * stream name takes the text past 125 bytes. */
START_TEST(a_long_named_gap_queued_during_replay_is_one_whole_frame)
{
    hs->name_len = STREAMLOG_NAME_MAX;
    memset(hs->name, 'n', STREAMLOG_NAME_MAX);
    hs->name[STREAMLOG_NAME_MAX] = '\0';
    struct conn *b = new_conn();
    struct hub_sub *sb = new_sub(b, 2, 1);
    sb->has_since = 1;
    sb->since = 2;
    hs->refs = 1;
    cluster_gap(hs, 3, 18446744073709551000ull);
    cluster_on_replay(sb, 0, NULL, 0);
    char f[8][256];
    ck_assert_int_eq(frames(b, f, 8), 2);
    ck_assert_msg(strncmp(f[1], "1:{\"type\":\"gap\"", 15) == 0, "%s", f[1]);
    ck_assert_msg(strstr(f[1], "\"to\":18446744073709551000}") != NULL, "%s", f[1]);
    const uint8_t *h = (const uint8_t *)sendq_chunk_bytes(b->out->tail);
    ck_assert_int_eq(h[1], 126); /* 16-bit length, no mask bit */
    ck_assert_uint_gt((size_t)h[2] << 8 | h[3], 125);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = unit_tcase(s, "delivery");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, live_and_replaying_subscribers);
    tcase_add_test(tc, no_memory_for_a_replaying_queue_closes_1011);
    tcase_add_test(tc, a_replay_ends_with_what_was_queued_meanwhile);
    tcase_add_test(tc, a_long_named_gap_queued_during_replay_is_one_whole_frame);
    return unit_run(s);
}
