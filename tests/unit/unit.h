/*
 * unit — what every Check suite in tests/unit shares. Header-only (static
 * inline), like fakequeue.h, so a suite stays one executable that may also
 * #include the .c it tests.
 *
 *   unit_tcase(s, name)   a test case added to suite s
 *   unit_run(s)           run suite s (Check forks each test, with
 *                         CK_DEFAULT_TIMEOUT), free it; main's exit status
 *   unit_client_frame()   a WebSocket frame as a client sends it (masked)
 *   unit_listen(&port)    a TCP socket listening on 127.0.0.1, a free port
 *   unit_connect(port)    a TCP connection to 127.0.0.1:port, or -1
 *   unit_tcp_pair(&s, &c) both ends of one loopback TCP connection
 */
#ifndef WSGATE_TEST_UNIT_H
#define WSGATE_TEST_UNIT_H

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static inline TCase *unit_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    suite_add_tcase(s, tc);
    return tc;
}

static inline int unit_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* One client frame into out: FIN as given, `opcode`, a header announcing
 * `announce` payload bytes (7-, 16- or 64-bit length, the shortest), the
 * mask key 12 34 56 78, then the first `len` bytes of payload masked
 * (payload NULL: `len` bytes of 'p'). Announcing more than is written
 * gives a header alone. Returns the bytes written. */
static inline size_t unit_client_frame(uint8_t *out, int fin, int opcode, const void *payload,
                                       uint64_t len, uint64_t announce)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (announce < 126) {
        out[n++] = (uint8_t)(0x80 | announce);
    } else if (announce <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(announce >> 8);
        out[n++] = (uint8_t)announce;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)(announce >> (8 * i));
    }
    for (int i = 0; i < 4; i++)
        out[n++] = key[i];
    for (uint64_t i = 0; i < len; i++)
        out[n++] = (uint8_t)((payload ? ((const uint8_t *)payload)[i] : 'p') ^ key[i % 4]);
    return n;
}

static inline int unit_listen(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    socklen_t len = sizeof(a);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static inline int unit_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static inline void unit_tcp_pair(int *server, int *client)
{
    int port;
    int listener = unit_listen(&port);
    *client = unit_connect(port);
    ck_assert_int_ge(*client, 0);
    *server = accept(listener, NULL, NULL);
    ck_assert_int_ge(*server, 0);
    close(listener);
}

#endif
