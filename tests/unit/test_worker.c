/*
 * Unit suite for worker/worker.c, reached by including the .c (h2o's
 * habit) for its statics. worker_main is the module's interface: it runs
 * here in a child process on a real segment (shm) and a listening socket
 * made by the test, as the master would fork it, and is driven by raw
 * loopback clients and real signals. Below it everything is the real
 * worker: what is checked is what worker.c itself decides.
 *
 * Covered: serving, then SIGTERM draining (reconnect + 1001, /health 503
 * and upgrades 503 while draining, exit 0 once its sessions are closed);
 * SIGUSR1 retiring with 1012; a config generation that turns jwt on
 * closing unauthenticated sessions 1008; a socket it cannot listen on or a
 * TLS pair it cannot build exits 1; worker_maybe_trim's peak and pacing.
 *
 * Not here: the fault-injection crash timer (test builds only) is the
 * master's supervision test's (tests/integration/test_supervision.py);
 * what malloc_trim gives back to the kernel is measured, never asserted.
 */
#include "worker.c"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "config.h"
#include "unit.h"

static struct config cfg;
static struct segment *seg;
static char seg_name[64];
static struct auth_keystore *keys;
static int listen_fd = -1;
static int port;
static pid_t child = -1;

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    config_defaults(&cfg);
    cfg.max_streams = 4;
    cfg.log_level = LOG_ERROR;
    snprintf(seg_name, sizeof(seg_name), "/wsgate-unit-worker-%d", (int)getpid());
    ck_assert_int_eq(segment_create(seg_name, &cfg, &seg), 0);
    shm_unlink(seg_name); /* mapped, and gone from /dev/shm even if a test fails */
    segment_publish_config(seg, &cfg);
    seg->worker[0].wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    keys = auth_keystore_create();
    ck_assert_ptr_nonnull(keys);
    listen_fd = unit_listen(&port);
    child = -1;
}

static void teardown(void)
{
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    close(listen_fd);
    close(seg->worker[0].wake_fd);
    auth_keystore_destroy(keys);
    segment_destroy(seg, seg_name);
}

/* Fork the worker as the master does; return once it serves. */
static void start_worker(void)
{
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(worker_main(seg, keys, 0, listen_fd, NULL));
    }
    for (int i = 0; i < 500 && atomic_load(&seg->worker[0].state) != WORKER_RUNNING; i++)
        usleep(10000);
    ck_assert_int_eq(atomic_load(&seg->worker[0].state), WORKER_RUNNING);
}

/* The worker's exit status, waiting at most 10 s; -1 if still running. */
static int worker_exit_status(void)
{
    for (int i = 0; i < 1000; i++) {
        int st;
        if (waitpid(child, &st, WNOHANG) == child) {
            child = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    return -1;
}

/* ---- a raw client ------------------------------------------------------- */

static int client_connect(void)
{
    int fd = unit_connect(port);
    ck_assert_int_ge(fd, 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static void send_str(int fd, const char *s)
{
    ck_assert_int_eq(send(fd, s, strlen(s), 0), (ssize_t)strlen(s));
}

/* Read a response head; returns its status. */
static int read_head(int fd)
{
    char head[4096];
    size_t n = 0;
    while (n < sizeof(head) - 1) {
        ssize_t r = recv(fd, head + n, 1, 0);
        ck_assert_int_eq(r, 1);
        n++;
        head[n] = '\0';
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    ck_assert_msg(strncmp(head, "HTTP/1.1 ", 9) == 0, "not a response: %s", head);
    return atoi(head + 9);
}

static int http_get(const char *path)
{
    int fd = client_connect();
    char req[256];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: gw\r\n\r\n", path);
    send_str(fd, req);
    int status = read_head(fd);
    close(fd);
    return status;
}

static const char upgrade_req[] = "GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n";

static int ws_open(void)
{
    int fd = client_connect();
    send_str(fd, upgrade_req);
    ck_assert_int_eq(read_head(fd), 101);
    return fd;
}

static void recv_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        ck_assert_msg(r > 0, "connection ended or timed out after %zu of %zu bytes", got, n);
        got += (size_t)r;
    }
}

/* One server frame: its opcode, its payload into out (NUL-terminated). */
static int ws_frame(int fd, char *out, size_t cap)
{
    uint8_t h[4];
    recv_exact(fd, h, 2);
    ck_assert_int_eq(h[1] & 0x80, 0);
    size_t len = h[1] & 0x7f;
    if (len == 126) {
        recv_exact(fd, h + 2, 2);
        len = (size_t)h[2] << 8 | h[3];
    }
    ck_assert_uint_lt(len, cap);
    recv_exact(fd, out, len);
    out[len] = '\0';
    return h[0] & 0x0f;
}

/* A close frame's code, after any text frames (the last one into text). */
static int ws_close_code(int fd, char *text, size_t cap)
{
    char buf[512];
    for (int i = 0; i < 8; i++) {
        int op = ws_frame(fd, buf, sizeof(buf));
        if (op == 8)
            return (uint8_t)buf[0] << 8 | (uint8_t)buf[1];
        if (op == 1)
            snprintf(text, cap, "%s", buf);
    }
    return -1;
}

/* Answer the server's close as a client must, then hang up. */
static void ws_close_reply(int fd, int code)
{
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    uint8_t frame[16];
    size_t n = unit_client_frame(frame, 1, 8, payload, 2, 2);
    send(fd, frame, n, MSG_NOSIGNAL);
    close(fd);
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(sigterm_drains_then_exits_0)
{
    start_worker();
    ck_assert_int_eq(http_get("/health"), 200);
    int ws = ws_open();
    kill(child, SIGTERM);
    char text[512] = "";
    ck_assert_int_eq(ws_close_code(ws, text, sizeof(text)), 1001);
    ck_assert_msg(strstr(text, "\"type\":\"reconnect\"") && strstr(text, "\"reason\":\"shutdown\""),
                  "%s", text);
    ck_assert_int_eq(atomic_load(&seg->worker[0].state), WORKER_DRAINING);
    /* Still accepting while draining: readiness says so, upgrades wait. */
    ck_assert_int_eq(http_get("/health"), 503);
    int late = client_connect();
    send_str(late, upgrade_req);
    ck_assert_int_eq(read_head(late), 503);
    close(late);
    ws_close_reply(ws, 1001);
    ck_assert_int_eq(worker_exit_status(), 0);
}
END_TEST

START_TEST(sigusr1_retires_with_1012)
{
    start_worker();
    int ws = ws_open();
    kill(child, SIGUSR1);
    char text[512] = "";
    ck_assert_int_eq(ws_close_code(ws, text, sizeof(text)), 1012);
    ck_assert_msg(strstr(text, "\"reason\":\"reload\""), "%s", text);
    ws_close_reply(ws, 1012);
    ck_assert_int_eq(worker_exit_status(), 0);
}
END_TEST

START_TEST(turning_jwt_on_closes_unauthenticated_sessions_1008)
{
    start_worker();
    int ws = ws_open();
    cfg.auth_mode = CONFIG_AUTH_JWT;
    segment_publish_config(seg, &cfg); /* picked up by the next tick */
    char text[512] = "";
    ck_assert_int_eq(ws_close_code(ws, text, sizeof(text)), 1008);
    close(ws);
    for (int i = 0; i < 500 && atomic_load(&seg->worker[0].config_generation) !=
                                   atomic_load(&seg->config_generation); i++)
        usleep(10000);
    ck_assert_uint_eq(atomic_load(&seg->worker[0].config_generation),
                      atomic_load(&seg->config_generation));
}
END_TEST

START_TEST(a_socket_it_cannot_listen_on_exits_1)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(worker_main(seg, keys, 0, p[0], NULL), 1);
    close(p[1]);
}
END_TEST

START_TEST(a_tls_pair_it_cannot_build_exits_1)
{
    snprintf(cfg.tls_cert_file, sizeof(cfg.tls_cert_file), "%s", "/nonexistent/cert.pem");
    snprintf(cfg.tls_key_file, sizeof(cfg.tls_key_file), "%s", "/nonexistent/key.pem");
    snprintf(cfg.tls_fingerprint, sizeof(cfg.tls_fingerprint), "%s", "unit");
    segment_publish_config(seg, &cfg);
    ck_assert_int_eq(worker_main(seg, keys, 0, listen_fd, NULL), 1);
}
END_TEST

START_TEST(the_heap_is_trimmed_after_a_peak_and_not_often)
{
    struct worker w = {0};
    w.slot = &seg->worker[0];
    uint64_t s = 1000000000ull;
    atomic_store(&w.slot->connections, 40);
    worker_maybe_trim(&w, 10 * s);
    ck_assert_int_eq(w.trim_peak_conns, 40);
    atomic_store(&w.slot->connections, 10);
    worker_maybe_trim(&w, 11 * s); /* a peak under 64: never */
    ck_assert_uint_eq(w.trim_last_ns, 0);

    atomic_store(&w.slot->connections, 100);
    worker_maybe_trim(&w, 12 * s);
    ck_assert_int_eq(w.trim_peak_conns, 100);
    atomic_store(&w.slot->connections, 51);
    worker_maybe_trim(&w, 13 * s); /* still above half the peak */
    ck_assert_uint_eq(w.trim_last_ns, 0);
    atomic_store(&w.slot->connections, 50);
    worker_maybe_trim(&w, 14 * s);
    ck_assert_uint_eq(w.trim_last_ns, 14 * s);
    ck_assert_int_eq(w.trim_peak_conns, 50); /* the next peak starts from here */

    atomic_store(&w.slot->connections, 200);
    worker_maybe_trim(&w, 15 * s);
    atomic_store(&w.slot->connections, 0);
    worker_maybe_trim(&w, 15 * s + s / 2); /* within 2 s of the last trim */
    ck_assert_uint_eq(w.trim_last_ns, 14 * s);
    worker_maybe_trim(&w, 16 * s);
    ck_assert_uint_eq(w.trim_last_ns, 16 * s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("worker");
    TCase *tc = unit_tcase(s, "worker");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, sigterm_drains_then_exits_0);
    tcase_add_test(tc, sigusr1_retires_with_1012);
    tcase_add_test(tc, turning_jwt_on_closes_unauthenticated_sessions_1008);
    tcase_add_test(tc, a_socket_it_cannot_listen_on_exits_1);
    tcase_add_test(tc, a_tls_pair_it_cannot_build_exits_1);
    tcase_add_test(tc, the_heap_is_trimmed_after_a_peak_and_not_often);
    return unit_run(s);
}
