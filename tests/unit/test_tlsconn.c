/*
 * Unit suite for worker/tlsconn.c through tlsconn.h. The server side is a
 * connection on a real loopback TCP socket (its output goes through
 * uv_try_write/uv_write as in the worker); the client is an OpenSSL client
 * on memory BIOs, its ciphertext handed to tlsconn_feed as the socket's
 * reads would be, tlsconn's read from the client's end of the socket.
 * Above tlsconn, fake tlsconn_ops record what it asks of the connection.
 *
 * Covered: the handshake (ALPN http/1.1) then plaintext both ways; a large
 * output in batches, retired only once written; plain HTTP and garbage on
 * the TLS port refused once as "tls"; a port probe is no error, a hang-up
 * mid-handshake is; the handshake timeout; the client's close_notify as
 * EOF; close_after_flush sends close_notify; a bad record on an open
 * session closes 1006; a quiet session's grown BIOs are replaced; the
 * SSL_CTX from the master's pair, kept on a refresh with the same pair.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "fakequeue.h"
#include "log.h"
#include "sendq.h"
#include "testcert.h"
#include "tls.h"
#include "tlsconn.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;
static struct conn *c;
static int client_fd = -1;
static SSL_CTX *client_ctx;
static SSL *client;
static BIO *client_in, *client_out; /* the client's read and write BIOs */

/* ---- the connection above (fake tlsconn_ops) --------------------------- */

static char plain[1 << 16];
static size_t plain_len;
static int dirty, refused = -1, refusals, read_failed_status, closed_reason = -1, closed_code;

static void fake_deliver(struct conn *conn, const char *data, size_t len)
{
    ck_assert_uint_le(plain_len + len, sizeof(plain));
    memcpy(plain + plain_len, data, len);
    plain_len += len;
}

static void fake_read_failed(struct conn *conn, int status)
{
    read_failed_status = status;
}

static void fake_refuse(struct conn *conn, enum segment_connection_error type)
{
    refused = (int)type;
    refusals++;
    conn->close_after_flush = 1;
}

static void fake_close(struct conn *conn, enum segment_disconnect_reason reason, int code)
{
    closed_reason = (int)reason;
    closed_code = code;
    conn->closed = 1;
}

static void fake_mark_dirty(struct conn *conn)
{
    dirty = 1;
}

static void fake_log_begin(struct log_line *l, const struct conn *conn, enum log_level level,
                           const char *event)
{
    log_begin(l, level, event);
}

/* What conn_write_done does: a write the kernel finished lets the rest go. */
static int write_status;

static void write_cb(struct conn *conn, int status);

static const struct tlsconn_ops fake_ops = {
    .deliver = fake_deliver,
    .read_failed = fake_read_failed,
    .refuse = fake_refuse,
    .close = fake_close,
    .mark_dirty = fake_mark_dirty,
    .log_begin = fake_log_begin,
    .write_done = write_cb,
};

static void write_cb(struct conn *conn, int status)
{
    write_status = status;
    if (status == 0)
        ck_assert_int_eq(tlsconn_flush(conn), 0);
}

/* ---- fixture ------------------------------------------------------------ */

static struct tls_pair make_pair(void)
{
    EVP_PKEY *key = testcert_key();
    X509 *cert = testcert_cert("websocket.vitalstream.com", key, NULL, NULL, 0);
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_X509(cb, cert), 1);
    ck_assert_int_eq(PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL), 1);
    struct tls_pair p = {0};
    char *data;
    p.cert_len = (size_t)BIO_get_mem_data(cb, &data);
    p.cert_pem = malloc(p.cert_len + 1);
    memcpy(p.cert_pem, data, p.cert_len);
    p.cert_pem[p.cert_len] = '\0';
    p.key_len = (size_t)BIO_get_mem_data(kb, &data);
    p.key_pem = malloc(p.key_len + 1);
    memcpy(p.key_pem, data, p.key_len);
    p.key_pem[p.key_len] = '\0';
    snprintf(p.fingerprint, sizeof(p.fingerprint), "%s", "unit-pair");
    BIO_free(cb);
    BIO_free(kb);
    X509_free(cert);
    EVP_PKEY_free(key);
    return p;
}

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    w = fakequeue_worker(&slot);
    snprintf(w->cfg.tls_cert_file, sizeof(w->cfg.tls_cert_file), "%s", "unit.pem");
    snprintf(w->cfg.tls_fingerprint, sizeof(w->cfg.tls_fingerprint), "%s", "unit-pair");
    ck_assert_int_eq(uv_loop_init(&w->loop), 0);
    struct tls_pair pair = make_pair();
    ck_assert_int_eq(tlsconn_ctx_init(w, &pair), 0);
    tls_pair_free(&pair);
    ck_assert_ptr_nonnull(w->tls_ctx);

    int server_fd;
    unit_tcp_pair(&server_fd, &client_fd);
    ck_assert_int_eq(fcntl(client_fd, F_SETFL, O_NONBLOCK), 0);

    c = calloc(1, sizeof(*c));
    c->w = w;
    c->state = CONN_HTTP;
    ck_assert_int_eq(uv_tcp_init(&w->loop, &c->tcp), 0);
    ck_assert_int_eq(uv_tcp_open(&c->tcp, server_fd), 0);
    c->out = calloc(1, sizeof(*c->out));
    sendq_init(c->out, write_cb);
    ck_assert_int_eq(tlsconn_start(c, &fake_ops), 0);

    client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(client_ctx, alpn, sizeof(alpn) - 1);
    client = SSL_new(client_ctx);
    client_in = BIO_new(BIO_s_mem());
    client_out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(client_in, -1);
    BIO_set_mem_eof_return(client_out, -1);
    SSL_set_bio(client, client_in, client_out);
    SSL_set_tlsext_host_name(client, "websocket.vitalstream.com");
    SSL_set_connect_state(client);

    plain_len = 0;
    dirty = 0;
    refused = closed_reason = -1;
    refusals = read_failed_status = closed_code = write_status = 0;
}

static void teardown(void)
{
    tlsconn_free(c);
    uv_close((uv_handle_t *)&c->tcp, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    sendq_free(c->out);
    free(c->out);
    free(c);
    tlsconn_ctx_free(w);
    ck_assert_int_eq(uv_loop_close(&w->loop), 0);
    free(w);
    SSL_free(client);
    SSL_CTX_free(client_ctx);
    close(client_fd);
    ERR_clear_error();
}

/* ---- moving bytes ------------------------------------------------------- */

/* The client's pending ciphertext, fed to tlsconn as the socket would. */
static size_t client_to_server(void)
{
    char buf[16384];
    size_t total = 0;
    int n;
    while ((n = BIO_read(client_out, buf, sizeof(buf))) > 0) {
        tlsconn_feed(c, buf, (size_t)n);
        total += (size_t)n;
    }
    return total;
}

/* What the server wrote to the socket, into the client's read BIO. */
static size_t server_to_client(void)
{
    char buf[65536];
    size_t total = 0;
    ssize_t n;
    while ((n = recv(client_fd, buf, sizeof(buf), 0)) > 0) {
        ck_assert_int_eq(BIO_write(client_in, buf, (int)n), (int)n);
        total += (size_t)n;
    }
    return total;
}

/* One round: tlsconn flushes if asked to, the loop runs its writes, bytes
 * cross both ways. Returns the bytes that moved. */
static size_t pump(void)
{
    if (dirty) {
        dirty = 0;
        ck_assert_int_eq(tlsconn_flush(c), 0);
    }
    uv_run(&w->loop, UV_RUN_NOWAIT);
    struct pollfd p = {.fd = client_fd, .events = POLLIN};
    poll(&p, 1, 5);
    return server_to_client() + client_to_server();
}

static void handshake(void)
{
    for (int i = 0; i < 200 && !(SSL_is_init_finished(client) && c->tls->established); i++) {
        int r = SSL_do_handshake(client);
        if (r != 1)
            ck_assert_int_eq(SSL_get_error(client, r), SSL_ERROR_WANT_READ);
        pump();
    }
    ck_assert(SSL_is_init_finished(client));
    ck_assert(tlsconn_established(c));
}

/* Read what the client can decrypt into out (bounded rounds). */
static size_t client_read(char *out, size_t want)
{
    size_t got = 0;
    for (int i = 0; i < 2000 && got < want; i++) {
        size_t n = 0;
        while (got < want && SSL_read_ex(client, out + got, want - got, &n) == 1)
            got += n;
        if (got < want)
            pump();
    }
    return got;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(the_handshake_then_plaintext_both_ways)
{
    handshake();
    const unsigned char *proto = NULL;
    unsigned proto_len = 0;
    SSL_get0_alpn_selected(client, &proto, &proto_len);
    ck_assert_uint_eq(proto_len, 8);
    ck_assert_int_eq(memcmp(proto, "http/1.1", 8), 0);
    ck_assert_int_eq(refusals, 0);

    static const char req[] = "GET /ws HTTP/1.1\r\nHost: gw\r\n\r\n";
    ck_assert_int_eq(SSL_write(client, req, (int)strlen(req)), (int)strlen(req));
    client_to_server();
    ck_assert_uint_eq(plain_len, strlen(req));
    ck_assert_int_eq(memcmp(plain, req, plain_len), 0);

    ck_assert_int_eq(sendq_append(c->out, "hello, ", 7, 0), 0);
    ck_assert_int_eq(sendq_append(c->out, "clinician", 9, 0), 0);
    ck_assert_int_eq(tlsconn_flush(c), 0);
    ck_assert(sendq_empty(c->out)); /* written to the kernel: retired */
    ck_assert(!tlsconn_output_left(c));
    char got[32] = "";
    ck_assert_uint_eq(client_read(got, 16), 16);
    ck_assert_int_eq(memcmp(got, "hello, clinician", 16), 0);
}
END_TEST

START_TEST(a_large_output_goes_in_batches_and_in_order)
{
    handshake();
    /* Small socket buffers: the kernel cannot take 2 MB at once. */
    uv_os_fd_t fd;
    ck_assert_int_eq(uv_fileno((uv_handle_t *)&c->tcp, &fd), 0);
    int small = 16384;
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    ck_assert_int_eq(setsockopt(client_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    enum { CHUNK = 1000, CHUNKS = 2000 };
    char chunk[CHUNK];
    for (int i = 0; i < CHUNKS; i++) {
        memset(chunk, 'a' + i % 26, sizeof(chunk));
        ck_assert_int_eq(sendq_append(c->out, chunk, sizeof(chunk), 0), 0);
    }
    ck_assert_int_eq(tlsconn_flush(c), 0);
    ck_assert(!sendq_empty(c->out)); /* the kernel took only part: a uv_write waits */
    ck_assert(c->tls->writing);
    static char got[CHUNK * CHUNKS];
    ck_assert_uint_eq(client_read(got, sizeof(got)), sizeof(got));
    for (int i = 0; i < CHUNKS; i++)
        ck_assert_int_eq(got[i * CHUNK], 'a' + i % 26);
    for (int i = 0; i < 100 && !sendq_empty(c->out); i++)
        pump();
    ck_assert(sendq_empty(c->out));
    ck_assert_int_eq(write_status, 0);
    ck_assert(!tlsconn_output_left(c));

    /* Quiet now: the BIOs grown by the burst are replaced by empty ones,
     * and the session goes on. */
    BIO *old_wbio = c->tls->wbio;
    tlsconn_release_if_idle(c);
    ck_assert_ptr_ne(c->tls->wbio, old_wbio);
    ck_assert_int_eq(sendq_append(c->out, "after", 5, 0), 0);
    ck_assert_int_eq(tlsconn_flush(c), 0);
    char after[8] = "";
    ck_assert_uint_eq(client_read(after, 5), 5);
    ck_assert_int_eq(memcmp(after, "after", 5), 0);
}
END_TEST

START_TEST(plain_http_on_the_tls_port_is_refused_once)
{
    static const char req[] = "GET /health HTTP/1.1\r\nHost: gw\r\n\r\n";
    tlsconn_feed(c, req, strlen(req));
    ck_assert_int_eq(refused, CONN_ERROR_TLS);
    ck_assert(c->tls->failed);
    tlsconn_feed(c, req, strlen(req)); /* nothing more is read */
    ck_assert_int_eq(refusals, 1);
    ck_assert_uint_eq(plain_len, 0);
    /* A response queued anyway is not sent in the clear. */
    ck_assert_int_eq(sendq_append(c->out, "HTTP/1.1 400", 12, 0), 0);
    ck_assert_int_eq(tlsconn_flush(c), 0);
    ck_assert(sendq_empty(c->out));
    char buf[256];
    ssize_t n = recv(client_fd, buf, sizeof(buf), 0);
    if (n > 0)
        ck_assert_ptr_null(memmem(buf, (size_t)n, "HTTP/1.1", 8));
}
END_TEST

START_TEST(a_port_probe_is_no_error_a_hang_up_mid_handshake_is)
{
    tlsconn_read_failed(c, UV_EOF);
    ck_assert_int_eq(read_failed_status, UV_EOF);
    ck_assert_int_eq(refusals, 0);

    SSL_do_handshake(client);
    client_to_server(); /* the ClientHello */
    ck_assert_int_eq(refusals, 0);
    read_failed_status = 0;
    tlsconn_read_failed(c, UV_ECONNRESET);
    ck_assert_int_eq(read_failed_status, 0);
    ck_assert_int_eq(refused, CONN_ERROR_TLS);
    ck_assert_int_eq(closed_reason, DISCONNECT_ERROR);
    ck_assert_int_eq(closed_code, 0);
}
END_TEST

START_TEST(a_stalled_handshake_times_out_as_tls)
{
    SSL_do_handshake(client);
    client_to_server();
    tlsconn_timed_out(c);
    ck_assert_int_eq(refused, CONN_ERROR_TLS);
    ck_assert(c->tls->failed);
}
END_TEST

START_TEST(the_clients_close_notify_is_eof)
{
    handshake();
    ck_assert_int_eq(SSL_shutdown(client), 0);
    client_to_server();
    ck_assert_int_eq(read_failed_status, UV_EOF);
    ck_assert_int_eq(refusals, 0);
}
END_TEST

START_TEST(close_after_flush_says_close_notify)
{
    handshake();
    ck_assert_int_eq(sendq_append(c->out, "bye", 3, 0), 0);
    c->close_after_flush = 1;
    ck_assert(tlsconn_output_left(c));
    ck_assert_int_eq(tlsconn_flush(c), 0);
    ck_assert(!tlsconn_output_left(c));
    char buf[8] = "";
    ck_assert_uint_eq(client_read(buf, 3), 3);
    ck_assert_int_eq(memcmp(buf, "bye", 3), 0);
    ck_assert_int_le(SSL_read(client, buf, sizeof(buf)), 0);
    ck_assert_int_eq(SSL_get_error(client, 0), SSL_ERROR_ZERO_RETURN);
}
END_TEST

START_TEST(a_bad_record_on_an_open_session_closes_1006)
{
    handshake();
    c->state = CONN_WS;
    /* An application-data record header followed by bytes no key made. */
    static const char bad[] = "\x17\x03\x03\x00\x20"
                              "0123456789abcdef0123456789abcdef";
    tlsconn_feed(c, bad, sizeof(bad) - 1);
    ck_assert_int_eq(closed_reason, DISCONNECT_ERROR);
    ck_assert_int_eq(closed_code, 1006);
    ck_assert_int_eq(refusals, 0);
    ck_assert(c->tls->failed);
}
END_TEST

START_TEST(the_context_is_rebuilt_only_for_another_pair)
{
    SSL_CTX *first = w->tls_ctx;
    tlsconn_ctx_refresh(w); /* same fingerprint and version: kept */
    ck_assert_ptr_eq(w->tls_ctx, first);
    struct worker off = {0};
    config_defaults(&off.cfg); /* TLS off: nothing to build */
    ck_assert_int_eq(tlsconn_ctx_init(&off, NULL), 0);
    ck_assert_ptr_null(off.tls_ctx);
    /* A pair that is not the one this generation names, and files that
     * cannot be read: no context. */
    struct worker bad = {0};
    config_defaults(&bad.cfg);
    snprintf(bad.cfg.tls_cert_file, sizeof(bad.cfg.tls_cert_file), "%s", "/nonexistent.pem");
    snprintf(bad.cfg.tls_key_file, sizeof(bad.cfg.tls_key_file), "%s", "/nonexistent.key");
    snprintf(bad.cfg.tls_fingerprint, sizeof(bad.cfg.tls_fingerprint), "%s", "other");
    struct tls_pair pair = make_pair();
    ck_assert_int_eq(tlsconn_ctx_init(&bad, &pair), -EINVAL);
    ck_assert_ptr_null(bad.tls_ctx);
    tls_pair_free(&pair);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tlsconn");
    TCase *tc = unit_tcase(s, "tlsconn");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_handshake_then_plaintext_both_ways);
    tcase_add_test(tc, a_large_output_goes_in_batches_and_in_order);
    tcase_add_test(tc, plain_http_on_the_tls_port_is_refused_once);
    tcase_add_test(tc, a_port_probe_is_no_error_a_hang_up_mid_handshake_is);
    tcase_add_test(tc, a_stalled_handshake_times_out_as_tls);
    tcase_add_test(tc, the_clients_close_notify_is_eof);
    tcase_add_test(tc, close_after_flush_says_close_notify);
    tcase_add_test(tc, a_bad_record_on_an_open_session_closes_1006);
    tcase_add_test(tc, the_context_is_rebuilt_only_for_another_pair);
    return unit_run(s);
}
