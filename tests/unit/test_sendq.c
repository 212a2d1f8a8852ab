/*
 * Unit suite for worker/sendq.c, driven through sendq.h over a real
 * socket pair in a libuv loop (the layer below), with the owner's write
 * callback faked: shared frames' references, what consume counts (bytes,
 * messages, latency, request durations), drop_unsent keeping a frame the
 * kernel has part of, writev batches in order, the uv_write fallback when
 * the kernel is full reporting 0 through the callback, and an error after
 * the peer is gone reported as a negative libuv code.
 */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "segment-t.h"
#include "sendq.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;
static struct conn *c;
static int peer = -1;
static int calls;
static int last_status;

static void fake_write_cb(struct conn *conn, int status)
{
    ck_assert_ptr_eq(conn, c);
    calls++;
    last_status = status;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    w = calloc(1, sizeof(*w));
    memset(&slot, 0, sizeof(slot));
    w->slot = &slot;
    ck_assert_int_eq(uv_loop_init(&w->loop), 0);
    c = calloc(1, sizeof(*c));
    c->w = w;
    c->state = CONN_WS;
    c->out = calloc(1, sizeof(*c->out));
    sendq_init(c->out, fake_write_cb);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    ck_assert_int_eq(uv_tcp_init(&w->loop, &c->tcp), 0);
    ck_assert_int_eq(uv_tcp_open(&c->tcp, sv[0]), 0);
    c->tcp.data = c;
    peer = sv[1];
    calls = 0;
    last_status = 1;
}

static void teardown(void)
{
    sendq_free(c->out);
    uv_close((uv_handle_t *)&c->tcp, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    if (peer >= 0)
        close(peer);
    peer = -1;
    free(c->out);
    free(c);
    free(w);
    ck_assert_uint_eq(sendq_frame_bytes_held(), 0);
}

/* Read what the peer can get without blocking, up to cap. */
static size_t drain_peer(char *out, size_t cap)
{
    size_t n = 0;
    while (n < cap) {
        ssize_t r = recv(peer, out + n, cap - n, MSG_DONTWAIT);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    return n;
}

START_TEST(frame_refs_follow_the_queues)
{
    struct sendq_frame *f = sendq_frame_new(100);
    ck_assert_uint_eq(f->refs, 1);
    ck_assert_uint_eq(sendq_frame_bytes_held(), sizeof(*f) + 100);
    struct sendq other;
    sendq_init(&other, fake_write_cb);
    ck_assert_int_eq(sendq_push_frame(c->out, f, 0), 0);
    ck_assert_int_eq(sendq_push_frame(&other, f, 0), 0);
    ck_assert_uint_eq(f->refs, 3);
    sendq_frame_unref(f);
    ck_assert_uint_eq(c->out->bytes, 100);
    sendq_free(&other);
    ck_assert_uint_eq(f->refs, 1);
    ck_assert(sendq_empty(&other));
    ck_assert_ptr_eq(other.write_cb, fake_write_cb);
    sendq_free(c->out);
    ck_assert_uint_eq(sendq_frame_bytes_held(), 0);
    ck_assert_ptr_eq(c->out->write_cb, fake_write_cb);
}
END_TEST

START_TEST(consume_counts_whole_messages_only)
{
    ck_assert_int_eq(sendq_append(c->out, "abcdef", 6, 1), 0);
    struct sendq_chunk *r = sendq_chunk_new(4, 1);
    memcpy(r->data, "wxyz", 4);
    r->request = 1 + REQUEST_PUBLISH;
    sendq_push(c->out, r);
    ck_assert_int_eq(sendq_append(c->out, "--", 2, 0), 0); /* not a message */
    ck_assert_uint_eq(c->out->bytes, 12);

    sendq_consume(c, 4);
    ck_assert_uint_eq(slot.counters.bytes_sent, 4);
    ck_assert_uint_eq(slot.counters.messages_sent, 0);
    ck_assert_uint_eq(c->out->head->off, 4);
    ck_assert_uint_ne(c->out->moved_ns, 0);

    sendq_consume(c, 2 + 4);
    ck_assert_uint_eq(slot.counters.messages_sent, 2);
    ck_assert_uint_eq(slot.counters.latency_count, 1);
    uint64_t requests = 0;
    for (int b = 0; b < SEGMENT_LATENCY_BUCKETS; b++)
        requests += slot.counters.request_bucket[REQUEST_PUBLISH][b];
    ck_assert_uint_eq(requests, 1);

    sendq_consume(c, 2);
    ck_assert_uint_eq(slot.counters.messages_sent, 2);
    ck_assert_uint_eq(slot.counters.bytes_sent, 12);
    ck_assert(sendq_empty(c->out));
    ck_assert_uint_eq(c->out->bytes, 0);
}
END_TEST

START_TEST(bytes_before_the_upgrade_are_not_websocket_bytes)
{
    c->state = CONN_HTTP;
    ck_assert_int_eq(sendq_append(c->out, "HTTP/1.1 101\r\n\r\n", 16, 0), 0);
    sendq_consume(c, 16);
    ck_assert_uint_eq(slot.counters.bytes_sent, 0);
}
END_TEST

START_TEST(drop_unsent_keeps_a_frame_in_the_middle)
{
    ck_assert_int_eq(sendq_append(c->out, "0123456789", 10, 0), 0);
    ck_assert_int_eq(sendq_append(c->out, "abc", 3, 0), 0);
    ck_assert_int_eq(sendq_append(c->out, "def", 3, 0), 0);
    sendq_consume(c, 3);
    sendq_drop_unsent(c->out);
    ck_assert_uint_eq(c->out->bytes, 7);
    ck_assert_ptr_eq(c->out->head, c->out->tail);
    ck_assert_int_eq(sendq_append(c->out, "Z", 1, 0), 0); /* the close frame follows */
    ck_assert_int_eq(sendq_flush(c), 0);
    char got[16];
    ck_assert_uint_eq(drain_peer(got, sizeof(got)), 8);
    ck_assert_int_eq(memcmp(got, "3456789Z", 8), 0);

    /* Nothing sent yet: everything goes. */
    ck_assert_int_eq(sendq_append(c->out, "abc", 3, 0), 0);
    sendq_drop_unsent(c->out);
    ck_assert(sendq_empty(c->out));
    ck_assert_ptr_null(c->out->tail);
    ck_assert_uint_eq(c->out->bytes, 0);
}
END_TEST

START_TEST(flush_writes_more_than_one_batch_in_order)
{
    for (int i = 0; i < 3 * SENDQ_IOV_MAX; i++) {
        char b = (char)('A' + i % 26);
        ck_assert_int_eq(sendq_append(c->out, &b, 1, 1), 0);
    }
    ck_assert_int_eq(sendq_flush(c), 0);
    ck_assert(sendq_empty(c->out));
    ck_assert_int_eq(calls, 0); /* the kernel took it all: no callback */
    char got[3 * SENDQ_IOV_MAX];
    ck_assert_uint_eq(drain_peer(got, sizeof(got)), sizeof(got));
    for (int i = 0; i < 3 * SENDQ_IOV_MAX; i++)
        ck_assert_int_eq(got[i], 'A' + i % 26);
    ck_assert_uint_eq(slot.counters.messages_sent, 3 * SENDQ_IOV_MAX);
}
END_TEST

static void big_queue(size_t chunks, size_t each)
{
    char *buf = malloc(each);
    for (size_t i = 0; i < chunks; i++) {
        memset(buf, (int)('a' + i % 26), each);
        ck_assert_int_eq(sendq_append(c->out, buf, each, 0), 0);
    }
    free(buf);
}

START_TEST(a_full_kernel_waits_and_reports_through_the_callback)
{
    const size_t chunks = 40, each = 16384;
    big_queue(chunks, each);
    ck_assert_int_eq(sendq_flush(c), 0);
    ck_assert_uint_gt(c->out->inflight, 0);
    ck_assert_int_eq(sendq_flush(c), 0); /* the pending write continues, nothing doubles */
    size_t got = 0;
    unsigned char *all = malloc(chunks * each);
    for (int rounds = 0; rounds < 100000 && got < chunks * each; rounds++) {
        got += drain_peer((char *)all + got, chunks * each - got);
        uv_run(&w->loop, UV_RUN_NOWAIT);
        if (calls && last_status == 0 && !sendq_empty(c->out) && !c->out->inflight) {
            /* What the owner does on 0: flush what followed. */
            ck_assert_int_eq(sendq_flush(c), 0);
        }
    }
    ck_assert_uint_eq(got, chunks * each);
    ck_assert_int_ge(calls, 1);
    ck_assert_int_eq(last_status, 0);
    ck_assert(sendq_empty(c->out));
    for (size_t i = 0; i < chunks; i++)
        ck_assert_int_eq(all[i * each], 'a' + i % 26);
    free(all);
}
END_TEST

START_TEST(a_broken_peer_is_a_negative_code)
{
    big_queue(40, 16384);
    ck_assert_int_eq(sendq_flush(c), 0);
    ck_assert_uint_gt(c->out->inflight, 0);
    close(peer);
    peer = -1;
    for (int rounds = 0; rounds < 1000 && calls == 0; rounds++)
        uv_run(&w->loop, UV_RUN_ONCE);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_lt(last_status, 0);
    ck_assert_uint_eq(c->out->inflight, 0);
    /* A flush now fails at once, as a libuv error, without the callback. */
    ck_assert_int_lt(sendq_flush(c), 0);
    ck_assert_int_eq(calls, 1);
}
END_TEST

START_TEST(a_cancelled_write_is_not_reported)
{
    big_queue(40, 16384);
    ck_assert_int_eq(sendq_flush(c), 0);
    ck_assert_uint_gt(c->out->inflight, 0);
    /* teardown closes the handle: libuv cancels the write (UV_ECANCELED). */
}
END_TEST

static void cancelled_teardown(void)
{
    uv_close((uv_handle_t *)&c->tcp, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(calls, 0);
    sendq_free(c->out);
    uv_loop_close(&w->loop);
    close(peer);
    peer = -1;
    free(c->out);
    free(c);
    free(w);
    ck_assert_uint_eq(sendq_frame_bytes_held(), 0);
}

int main(void)
{
    Suite *s = suite_create("sendq");
    TCase *tc = unit_tcase(s, "queue");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, frame_refs_follow_the_queues);
    tcase_add_test(tc, consume_counts_whole_messages_only);
    tcase_add_test(tc, bytes_before_the_upgrade_are_not_websocket_bytes);
    tcase_add_test(tc, drop_unsent_keeps_a_frame_in_the_middle);
    TCase *io = unit_tcase(s, "io");
    tcase_add_checked_fixture(io, setup, teardown);
    tcase_add_test(io, flush_writes_more_than_one_batch_in_order);
    tcase_add_test(io, a_full_kernel_waits_and_reports_through_the_callback);
    tcase_add_test(io, a_broken_peer_is_a_negative_code);
    TCase *cancel = unit_tcase(s, "cancel");
    tcase_add_checked_fixture(cancel, setup, cancelled_teardown);
    tcase_add_test(cancel, a_cancelled_write_is_not_reported);
    return unit_run(s);
}
