/*
 * Unit suite for worker/conn.c, driven through conn.h over real loopback
 * TCP in a libuv loop, with fake handlers standing for the layer above
 * (struct conn_handlers): what conn hands up and when. Bytes read go to
 * feed; the client's EOF closes with closing then free; handshake_timeout
 * calls timed_out; the sweep calls the phase's sweep and, after a quiet
 * second, quiet; queued output reaches the client and close_after_flush
 * closes once it has.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "fakequeue.h"
#include "log.h"
#include "sendq.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;
static int client = -1;
static struct conn *accepted;

static char fed[256];
static size_t fed_len;
static char calls[256];

static void note(const char *what)
{
    strncat(calls, what, sizeof(calls) - strlen(calls) - 1);
    strncat(calls, " ", sizeof(calls) - strlen(calls) - 1);
}

static void fake_feed(struct conn *c, const char *data, size_t len)
{
    ck_assert_uint_le(fed_len + len, sizeof(fed));
    memcpy(fed + fed_len, data, len);
    fed_len += len;
}

static void fake_timed_out(struct conn *c)
{
    note("timed_out");
    conn_close_with(c, DISCONNECT_TIMEOUT, 0);
}

static void fake_sweep(struct conn *c, uint64_t now_ns, int64_t now_ms)
{
    note("sweep");
}

static void fake_quiet(struct conn *c)
{
    note("quiet");
}

static void fake_closing(struct conn *c)
{
    note("closing");
}

static void fake_free(struct conn *c)
{
    note("free");
    accepted = NULL;
}

static const struct conn_handlers fake_handlers = {
    .feed = fake_feed,
    .timed_out = fake_timed_out,
    .sweep = fake_sweep,
    .quiet = fake_quiet,
    .closing = fake_closing,
    .free = fake_free,
};

static void on_connection(uv_stream_t *server, int status)
{
    ck_assert_int_eq(status, 0);
    conn_accept(w, &fake_handlers);
    accepted = w->conns;
}

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    w = fakequeue_worker(&slot);
    fed_len = 0;
    calls[0] = '\0';
    accepted = NULL;
    ck_assert_int_eq(uv_loop_init(&w->loop), 0);
    ck_assert_int_eq(uv_tcp_init(&w->loop, &w->listener), 0);
    w->listener.data = w;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    ck_assert_int_eq(uv_tcp_bind(&w->listener, (const struct sockaddr *)&addr, 0), 0);
    conn_listener_setup(w);
    ck_assert_int_eq(uv_listen((uv_stream_t *)&w->listener, 8, on_connection), 0);
    int len = sizeof(addr);
    uv_tcp_getsockname(&w->listener, (struct sockaddr *)&addr, &len);
    client = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(client, (struct sockaddr *)&addr, sizeof(addr)), 0);
    for (int i = 0; i < 100 && !accepted; i++)
        uv_run(&w->loop, UV_RUN_ONCE);
    ck_assert_ptr_nonnull(accepted);
    ck_assert_int_eq(accepted->state, CONN_HTTP);
}

static void teardown(void)
{
    if (accepted)
        conn_close_with(accepted, DISCONNECT_SHUTDOWN, 0);
    uv_close((uv_handle_t *)&w->listener, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ck_assert_ptr_null(w->conns);
    ck_assert_int_eq(uv_loop_close(&w->loop), 0);
    if (client >= 0)
        close(client);
    client = -1;
    free(w);
}

static void run_until(int (*done)(void))
{
    for (int i = 0; i < 2000 && !done(); i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static int got_hello(void)
{
    return fed_len == 5;
}

static int is_freed(void)
{
    return accepted == NULL;
}

START_TEST(bytes_go_to_feed_and_eof_closes_through_the_handlers)
{
    ck_assert_int_eq(write(client, "hello", 5), 5);
    run_until(got_hello);
    ck_assert_int_eq(memcmp(fed, "hello", 5), 0);
    shutdown(client, SHUT_WR);
    run_until(is_freed);
    ck_assert_str_eq(calls, "closing free ");
    /* EOF before a request head: a client that changed its mind, no error. */
    ck_assert_uint_eq(slot.counters.connection_errors[CONN_ERROR_IO], 0);
}
END_TEST

START_TEST(the_sweep_asks_the_phase)
{
    w->cfg.handshake_timeout = 10;
    uint64_t t0 = accepted->accepted_ns;
    conn_sweep(w, t0 + 5ull * 1000000000ull);
    ck_assert_str_eq(calls, "");
    accepted->state = CONN_WS; /* as if upgraded */
    accepted->last_rx_ns = t0;
    conn_sweep(w, t0 + 500000000ull);
    ck_assert_str_eq(calls, "sweep ");
    conn_sweep(w, t0 + 2ull * 1000000000ull); /* quiet for over a second */
    ck_assert_str_eq(calls, "sweep sweep quiet ");
    accepted->state = CONN_HTTP;
    conn_sweep(w, t0 + 11ull * 1000000000ull);
    ck_assert_str_eq(calls, "sweep sweep quiet timed_out closing ");
    run_until(is_freed);
}
END_TEST

START_TEST(a_quiet_connection_gives_its_empty_queue_back)
{
    uint64_t t0 = accepted->accepted_ns;
    accepted->state = CONN_WS; /* as if upgraded */
    accepted->last_rx_ns = t0;
    ck_assert_ptr_null(accepted->out); /* nothing queued yet: no queue */
    ck_assert_int_eq(conn_send(accepted, "abc", 3, 0), 0);
    ck_assert_ptr_nonnull(accepted->out);
    conn_sweep(w, t0 + 2ull * 1000000000ull); /* quiet, but bytes wait: kept */
    ck_assert_ptr_nonnull(accepted->out);
    conn_flush_dirty(w);
    ck_assert(sendq_empty(accepted->out));
    conn_sweep(w, t0 + 500000000ull); /* empty, not yet quiet: kept */
    ck_assert_ptr_nonnull(accepted->out);
    conn_sweep(w, t0 + 3ull * 1000000000ull);
    ck_assert_ptr_null(accepted->out);
    ck_assert_int_eq(conn_send(accepted, "def", 3, 0), 0); /* a new one, as before */
    conn_flush_dirty(w);
    char buf[8];
    size_t got = 0;
    for (int i = 0; i < 1000 && got < 6; i++) {
        ssize_t n = recv(client, buf + got, sizeof(buf) - got, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else
            usleep(1000);
    }
    ck_assert_uint_eq(got, 6);
    ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
}
END_TEST

static int client_got_all(void)
{
    char buf[64];
    ssize_t n = recv(client, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0)
        fed_len += (size_t)n;
    return fed_len >= 11;
}

START_TEST(output_reaches_the_client_then_close_after_flush_closes)
{
    ck_assert_int_eq(conn_send(accepted, "HTTP/1.1 2", 10, 0), 0);
    ck_assert_int_eq(conn_send(accepted, "0", 1, 0), 0);
    accepted->close_after_flush = 1;
    conn_flush_dirty(w);
    run_until(client_got_all);
    ck_assert_uint_eq(fed_len, 11);
    run_until(is_freed);
    ck_assert_str_eq(calls, "closing free ");
}
END_TEST

START_TEST(nothing_is_queued_once_closed)
{
    struct conn *c = accepted;
    conn_close_with(c, DISCONNECT_SHUTDOWN, 0);
    ck_assert_int_eq(conn_send(c, "x", 1, 0), -ENOTCONN);
    conn_close_with(c, DISCONNECT_SHUTDOWN, 0); /* once only */
    ck_assert_str_eq(calls, "closing ");
    run_until(is_freed);
    ck_assert_str_eq(calls, "closing free ");
}
END_TEST

START_TEST(accepted_sockets_inherit_the_listeners_options)
{
    /* conn_accept sets nothing itself once the listener carries them:
     * the kernel's copy is what the connection runs with. */
    ck_assert_int_eq(w->sockopts_inherited, 1);
    uv_os_fd_t fd;
    ck_assert_int_eq(uv_fileno((uv_handle_t *)&accepted->tcp, &fd), 0);
    int v = 0;
    socklen_t len = sizeof(v);
    ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, &len), 0);
    ck_assert_int_eq(v, 128 * 1024);
}
END_TEST

START_TEST(the_remote_address_is_spelled_on_demand)
{
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    ck_assert_int_eq(getsockname(client, (struct sockaddr *)&me, &len), 0);
    char want[64], have[CONN_REMOTE_MAX];
    snprintf(want, sizeof(want), "127.0.0.1:%u", (unsigned)ntohs(me.sin_port));
    conn_remote_string(accepted, have, sizeof(have));
    ck_assert_str_eq(have, want);
    struct conn unknown = {0};
    conn_remote_string(&unknown, have, sizeof(have));
    ck_assert_str_eq(have, "?:0");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("conn");
    TCase *tc = unit_tcase(s, "conn");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, bytes_go_to_feed_and_eof_closes_through_the_handlers);
    tcase_add_test(tc, the_sweep_asks_the_phase);
    tcase_add_test(tc, a_quiet_connection_gives_its_empty_queue_back);
    tcase_add_test(tc, output_reaches_the_client_then_close_after_flush_closes);
    tcase_add_test(tc, nothing_is_queued_once_closed);
    tcase_add_test(tc, accepted_sockets_inherit_the_listeners_options);
    tcase_add_test(tc, the_remote_address_is_spelled_on_demand);
    return unit_run(s);
}
