/*
 * Unit suite for worker/tcpinfo.c through tcpinfo.h, on real loopback TCP
 * sockets: what the peer acknowledged, counted from the connection's own
 * start value, grows by exactly the bytes sent (whether or not the peer's
 * application read them), never by what was not sent; a descriptor that is
 * no TCP socket gets a negative errno and leaves *out alone.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tcpinfo.h"
#include "unit.h"

static int server = -1, client = -1;

static void setup(void)
{
    unit_tcp_pair(&server, &client);
}

static void teardown(void)
{
    close(server);
    close(client);
}

/* Poll (bounded: 2 s) until the server's acked count is `want`. */
static uint64_t acked_reaches(uint64_t want)
{
    uint64_t got = 0;
    for (int i = 0; i < 2000; i++) {
        ck_assert_int_eq(tcpinfo_bytes_acked(server, &got), 0);
        if (got >= want)
            break;
        usleep(1000);
    }
    return got;
}

static void send_all(size_t n)
{
    static char buf[65536];
    memset(buf, 'a', sizeof(buf));
    while (n) {
        size_t k = n < sizeof(buf) ? n : sizeof(buf);
        ssize_t w = send(server, buf, k, 0);
        ck_assert_int_gt(w, 0);
        n -= (size_t)w;
    }
}

static void recv_all(size_t n)
{
    static char buf[65536];
    while (n) {
        ssize_t r = recv(client, buf, n < sizeof(buf) ? n : sizeof(buf), 0);
        ck_assert_int_gt(r, 0);
        n -= (size_t)r;
    }
}

START_TEST(acked_grows_by_what_the_peer_received)
{
    uint64_t start = 0;
    ck_assert_int_eq(tcpinfo_bytes_acked(server, &start), 0);
    ck_assert_uint_le(start, 1); /* nothing sent yet (the SYN at most) */

    /* A small write the peer's application does not read: the kernel
     * acknowledges it all the same. */
    send_all(1000);
    ck_assert_uint_eq(acked_reaches(start + 1000), start + 1000);

    /* More than the socket buffers hold at once: read as it goes. */
    recv_all(1000);
    const size_t big = 1u << 20;
    pid_t reader = fork();
    ck_assert_int_ge(reader, 0);
    if (reader == 0) {
        recv_all(big);
        _exit(0);
    }
    send_all(big);
    ck_assert_uint_eq(acked_reaches(start + 1000 + big), start + 1000 + big);
    int st = 0;
    ck_assert_int_eq(waitpid(reader, &st, 0), reader);
    ck_assert_int_eq(st, 0);
}
END_TEST

START_TEST(nothing_sent_nothing_acked)
{
    uint64_t a = 0, b = 0;
    ck_assert_int_eq(tcpinfo_bytes_acked(server, &a), 0);
    /* The peer sends; our side's count is of what *we* sent. */
    ck_assert_int_eq(send(client, "hello", 5, 0), 5);
    char buf[8];
    ck_assert_int_eq(recv(server, buf, sizeof(buf), 0), 5);
    ck_assert_int_eq(tcpinfo_bytes_acked(server, &b), 0);
    ck_assert_uint_eq(b, a);
}
END_TEST

START_TEST(not_a_tcp_socket_is_a_negative_errno)
{
    uint64_t out = 77;
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(tcpinfo_bytes_acked(p[0], &out), -ENOTSOCK);
    close(p[0]);
    close(p[1]);
    ck_assert_int_eq(tcpinfo_bytes_acked(p[0], &out), -EBADF);
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_ge(u, 0);
    int r = tcpinfo_bytes_acked(u, &out);
    close(u);
    ck_assert_int_eq(r, -EOPNOTSUPP); /* TCP_INFO on UDP */
    ck_assert_uint_eq(out, 77);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tcpinfo");
    TCase *tc = unit_tcase(s, "tcpinfo");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, acked_grows_by_what_the_peer_received);
    tcase_add_test(tc, nothing_sent_nothing_acked);
    tcase_add_test(tc, not_a_tcp_socket_is_a_negative_errno);
    return unit_run(s);
}
