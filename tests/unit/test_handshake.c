/*
 * Unit suite for worker/handshake.c, reached by including the .c (its
 * token parser and extension negotiation are static), driven through
 * handshake.h with a fake of the transport below: conn_send writes into
 * `wire` (what the client would read), conn_refuse records the error type
 * it would count. The segment is a real one (shm), so the replica-wide and
 * per-IP connection limits are the real ones. Above the handshake, the
 * session, router and hub are the real modules.
 *
 * Covered: RFC 6455's example key gets its Sec-WebSocket-Accept and the
 * session's handlers; the head in pieces; the vitalstream.v1 subprotocol
 * and permessage-deflate negotiated or refused; every refusal with its
 * exact status, extra headers, JSON body and error type; jwt tokens found,
 * missing, ambiguous, bad or good (with the token parser's return codes);
 * the plain endpoints; bytes after the head reach the session.
 */
#include "handshake.c"

#include <check.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fakequeue.h"
#include "unit.h"

static struct worker *w;
static struct segment *seg;
static char seg_name[64];
static struct conn *c;

/* ---- the transport below ---------------------------------------------- */

static char wire[65536];
static size_t wire_len;
static int refused_type;
static int refusals;

int conn_send(struct conn *conn, const void *data, size_t len, uint64_t origin_ns)
{
    ck_assert_uint_lt(wire_len + len, sizeof(wire));
    memcpy(wire + wire_len, data, len);
    wire_len += len;
    wire[wire_len] = '\0';
    return 0;
}

/* The 101 goes out at once in conn.c; here, like everything else, to the wire. */
int conn_send_now(struct conn *conn, const void *data, size_t len)
{
    return conn_send(conn, data, len, 0);
}

void conn_refuse(struct conn *conn, enum segment_connection_error error_type)
{
    refused_type = (int)error_type;
    refusals++;
    conn->refused = 1;
    conn->close_after_flush = 1;
}

void conn_log_begin(struct log_line *l, const struct conn *conn, enum log_level level,
                    const char *event)
{
    log_begin(l, level, event);
}

void conn_close_after_flush(struct conn *conn, enum segment_disconnect_reason reason)
{
    conn->close_after_flush = 1;
}

void conn_close_with(struct conn *conn, enum segment_disconnect_reason reason, int code)
{
    conn->closed = 1;
}

void conn_mark_dirty(struct conn *conn)
{
}

void conn_resume_reading(struct conn *conn)
{
}

static void no_write_cb(struct conn *conn, int status)
{
}

/* conn.c's, without a socket (the session queues its own frames). */
struct sendq *conn_queue(struct conn *conn)
{
    if (!conn->out) {
        conn->out = calloc(1, sizeof(*conn->out));
        sendq_init(conn->out, no_write_cb);
    }
    return conn->out;
}

int conn_push_frame(struct conn *conn, struct sendq_frame *f, uint64_t origin_ns)
{
    return sendq_push_frame(conn_queue(conn), f, origin_ns);
}

/* ---- fixture ------------------------------------------------------------ */

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    w = calloc(1, sizeof(*w));
    config_defaults(&w->cfg);
    w->cfg.max_streams = 4;
    snprintf(seg_name, sizeof(seg_name), "/wsgate-unit-handshake-%d", (int)getpid());
    ck_assert_int_eq(segment_create(seg_name, &w->cfg, &seg), 0);
    shm_unlink(seg_name); /* mapped, and gone from /dev/shm even if a test fails */
    w->seg = seg;
    w->slot = segment_worker_slot(seg, 0);
    c = calloc(1, sizeof(*c));
    c->w = w;
    c->state = CONN_HTTP;
    c->handlers = &handshake_http_handlers;
    c->req = malloc(sizeof(*c->req));
    http_request_init(c->req);
    c->out = calloc(1, sizeof(*c->out));
    sendq_init(c->out, no_write_cb);
    static const uint8_t loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
    memcpy(c->ip, loopback, sizeof(loopback));
    wire_len = 0;
    wire[0] = '\0';
    refused_type = -1;
    refusals = 0;
}

static void teardown(void)
{
    if (c->state != CONN_HTTP)
        handshake_ws_free(c);
    if (c->ip_counted)
        iptable_release(segment_ips(seg), c->ip, 0);
    if (c->counted)
        segment_connection_release(seg, w->slot);
    auth_grant_free(c->grant);
    free(c->req);
    sendq_free(c->out);
    free(c->out);
    free(c);
    auth_key_clear(&w->auth_key);
    free(w);
    segment_destroy(seg, seg_name);
}

/* ---- helpers ------------------------------------------------------------ */

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* A valid upgrade of `target` with RFC 6455's example key, plus `extra`
 * header lines. */
static const char *upgrade(const char *target, const char *extra)
{
    static char req[12000];
    snprintf(req, sizeof(req),
             "GET %s HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
             target, extra);
    return req;
}

static void feed_str(const char *s)
{
    handshake_feed(c, s, strlen(s));
}

static int status(void)
{
    ck_assert_msg(strncmp(wire, "HTTP/1.1 ", 9) == 0, "no response: %s", wire);
    return atoi(wire + 9);
}

static int has_line(const char *line)
{
    return strstr(wire, line) != NULL;
}

/* The refusal's JSON body: its status matches the head's, and `error`
 * contains `why`. */
static void expect_refusal(int want, int type, const char *why)
{
    ck_assert_int_eq(status(), want);
    ck_assert_int_eq(refused_type, type);
    ck_assert_int_eq(refusals, 1);
    ck_assert(c->close_after_flush);
    ck_assert_int_eq(c->state, CONN_HTTP);
    ck_assert(!c->counted);
    const char *body = strstr(wire, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    json_error_t err;
    json_t *j = json_loads(body + 4, 0, &err);
    ck_assert_msg(j != NULL, "body is not JSON: %s", body + 4);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "status")), want);
    const char *e = json_string_value(json_object_get(j, "error"));
    ck_assert_msg(e && strstr(e, why), "error %s lacks %s", e ? e : "(none)", why);
    json_decref(j);
}

/* ---- the upgrade -------------------------------------------------------- */

START_TEST(the_rfc_6455_key_is_accepted_and_the_session_installed)
{
    feed_str(upgrade("/ws", ""));
    ck_assert_str_eq(wire, "HTTP/1.1 101 Switching Protocols\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"
                           "\r\n");
    ck_assert_int_eq(c->state, CONN_WS);
    ck_assert_ptr_eq(c->handlers, &handshake_ws_handlers);
    ck_assert_ptr_eq(c->app, &router_app);
    ck_assert_ptr_null(c->req);
    ck_assert(c->counted);
    ck_assert(c->ip_counted);
    ck_assert(!c->subprotocol);
    ck_assert_uint_eq(c->pmd_wbits, 0);
    ck_assert_int_eq(refusals, 0);
    ck_assert_uint_eq(w->slot->counters.connections_total, 1);
    ck_assert_int_eq(atomic_load(&seg->connections), 1);
    ck_assert_uint_gt(c->upgraded_ns, 0);
}
END_TEST

START_TEST(a_head_in_pieces_is_answered_once_complete)
{
    const char *req = upgrade("/ws", "");
    size_t n = strlen(req);
    for (size_t i = 0; i + 1 < n; i++) {
        handshake_feed(c, req + i, 1);
        ck_assert_uint_eq(wire_len, 0);
    }
    handshake_feed(c, req + n - 1, 1);
    ck_assert_int_eq(status(), 101);
    ck_assert(has_line("Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n"));
}
END_TEST

START_TEST(bytes_after_the_head_reach_the_session)
{
    const char *req = upgrade("/ws", "");
    uint8_t buf[12100];
    size_t n = strlen(req);
    memcpy(buf, req, n);
    n += unit_client_frame(buf + n, 1, 9, "hi", 2, 2); /* a ping in the same read */
    handshake_feed(c, (const char *)buf, n);
    ck_assert_int_eq(status(), 101);
    char f[4][256];
    ck_assert_int_eq(fakequeue_frames(c->out, f, 4), 1);
    ck_assert_str_eq(f[0], "10:hi");
}
END_TEST

START_TEST(the_subprotocol_is_chosen_or_refused)
{
    feed_str(upgrade("/ws", "Sec-WebSocket-Protocol: chat, vitalstream.v1\r\n"));
    ck_assert_int_eq(status(), 101);
    ck_assert(has_line("\r\nSec-WebSocket-Protocol: vitalstream.v1\r\n"));
    ck_assert(c->subprotocol);
}
END_TEST

START_TEST(an_unknown_subprotocol_only_is_400)
{
    feed_str(upgrade("/ws", "Sec-WebSocket-Protocol: chat\r\n"));
    expect_refusal(400, CONN_ERROR_HANDSHAKE, "vitalstream.v1");
    ck_assert(has_line("\r\nSec-WebSocket-Version: 13\r\n"));
}
END_TEST

START_TEST(permessage_deflate_is_agreed_when_compression_is_on)
{
    w->cfg.compression = 1;
    feed_str(upgrade("/ws", "Sec-WebSocket-Extensions: x-other, permessage-deflate\r\n"));
    ck_assert_int_eq(status(), 101);
    ck_assert(has_line("\r\nSec-WebSocket-Extensions: permessage-deflate; "
                       "client_no_context_takeover\r\n\r\n"));
    ck_assert_uint_eq(c->pmd_wbits, 15);
    ck_assert_uint_eq(c->pmd_takeover, 1);
}
END_TEST

START_TEST(permessage_deflate_without_server_context_when_the_client_says_so)
{
    w->cfg.compression = 1;
    feed_str(upgrade("/ws", "Sec-WebSocket-Extensions: permessage-deflate; "
                            "server_no_context_takeover\r\n"));
    ck_assert_int_eq(status(), 101);
    ck_assert(has_line("\r\nSec-WebSocket-Extensions: permessage-deflate; "
                       "server_no_context_takeover; client_no_context_takeover\r\n\r\n"));
    ck_assert_uint_eq(c->pmd_wbits, 15);
    ck_assert_uint_eq(c->pmd_takeover, 0);
}
END_TEST

START_TEST(permessage_deflate_is_ignored_when_compression_is_off)
{
    w->cfg.compression = 0;
    feed_str(upgrade("/ws", "Sec-WebSocket-Extensions: permessage-deflate\r\n"));
    ck_assert_int_eq(status(), 101);
    ck_assert(!has_line("Sec-WebSocket-Extensions"));
    ck_assert_uint_eq(c->pmd_wbits, 0);
}
END_TEST

START_TEST(a_malformed_extensions_header_is_400_and_minus_einval)
{
    w->cfg.compression = 1;
    const char *req = upgrade("/ws", "Sec-WebSocket-Extensions: permessage-deflate; =1\r\n");
    size_t consumed = 0;
    ck_assert_int_eq(http_request_feed(c->req, req, strlen(req), &consumed), HTTP_FEED_DONE);
    char ext[PMDEFLATE_RESPONSE_MAX];
    ck_assert_int_eq(handshake_extensions(c, ext, sizeof(ext)), -EINVAL);
    expect_refusal(400, CONN_ERROR_HANDSHAKE, "Sec-WebSocket-Extensions is malformed");
    ck_assert(has_line("\r\nSec-WebSocket-Version: 13\r\n"));
}
END_TEST

/* ---- refusals ----------------------------------------------------------- */

START_TEST(not_an_upgrade_is_426_with_upgrade_header)
{
    feed_str("GET /ws HTTP/1.1\r\nHost: gw\r\n\r\n");
    expect_refusal(426, CONN_ERROR_HANDSHAKE, "Upgrade: websocket");
    ck_assert(has_line("\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"));
}
END_TEST

START_TEST(head_on_ws_is_426_without_a_body)
{
    feed_str("HEAD /ws HTTP/1.1\r\nHost: gw\r\n\r\n");
    ck_assert_int_eq(status(), 426);
    ck_assert_int_eq(refused_type, CONN_ERROR_HANDSHAKE);
    const char *end = strstr(wire, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    ck_assert_str_eq(end, "\r\n\r\n"); /* the head only */
}
END_TEST

START_TEST(bad_key_version_or_http_version_is_400)
{
    static const char *const reqs[] = {
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 8\r\n\r\n",
        "GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: " RFC_KEY "\r\nSec-WebSocket-Version: 13\r\n\r\n",
    };
    static const char *const why[] = {"Sec-WebSocket-Key", "only 13", "HTTP/1.1"};
    for (int i = 0; i < 3; i++) {
        teardown();
        setup();
        feed_str(reqs[i]);
        expect_refusal(400, CONN_ERROR_HANDSHAKE, why[i]);
    }
}
END_TEST

START_TEST(malformed_heads_get_400_505_431)
{
    feed_str("BLAH\r\n\r\n");
    expect_refusal(400, CONN_ERROR_HANDSHAKE, "malformed HTTP request");
    teardown();
    setup();
    feed_str("GET /health HTTP/2.0\r\n\r\n");
    expect_refusal(505, CONN_ERROR_HANDSHAKE, "HTTP/1.1");
    teardown();
    setup();
    static char big[10000];
    memset(big, 0, sizeof(big));
    strcpy(big, "GET /ws HTTP/1.1\r\nX-Pad: ");
    memset(big + strlen(big), 'a', 9000);
    strcat(big, "\r\n\r\n");
    feed_str(big);
    expect_refusal(431, CONN_ERROR_HANDSHAKE, "8 KiB");
}
END_TEST

START_TEST(no_head_in_time_is_408)
{
    feed_str("GET /ws HT");
    ck_assert_uint_eq(wire_len, 0);
    handshake_timed_out(c);
    expect_refusal(408, CONN_ERROR_TIMEOUT, "handshake_timeout");
}
END_TEST

START_TEST(a_draining_worker_is_503_retry_after)
{
    w->draining = 1 + DISCONNECT_SHUTDOWN;
    feed_str(upgrade("/ws", ""));
    expect_refusal(503, CONN_ERROR_CAPACITY, "shutting down");
    ck_assert(has_line("\r\nRetry-After: 1\r\n"));
}
END_TEST

START_TEST(an_origin_not_allowed_is_403)
{
    w->cfg.allowed_origins.count = 1;
    snprintf(w->cfg.allowed_origins.items[0], sizeof(w->cfg.allowed_origins.items[0]), "%s",
             "https://ward.example");
    feed_str(upgrade("/ws", "Origin: https://evil.example\r\n"));
    expect_refusal(403, CONN_ERROR_ORIGIN, "allowed_origins");
    teardown();
    setup();
    w->cfg.allowed_origins.count = 1;
    snprintf(w->cfg.allowed_origins.items[0], sizeof(w->cfg.allowed_origins.items[0]), "%s",
             "https://ward.example");
    feed_str(upgrade("/ws", "Origin: https://WARD.example:443\r\n"));
    ck_assert_int_eq(status(), 101);
}
END_TEST

START_TEST(the_connection_limits_are_503_and_429)
{
    w->cfg.max_connections = 1;
    ck_assert_int_eq(segment_connection_reserve(seg, w->slot, 1), 0);
    feed_str(upgrade("/ws", ""));
    expect_refusal(503, CONN_ERROR_CAPACITY, "max_connections");
    ck_assert(has_line("\r\nRetry-After: 1\r\n"));
    ck_assert(!c->ip_counted); /* its per-IP count was given back */
    segment_connection_release(seg, w->slot);

    teardown();
    setup();
    w->cfg.max_connections_per_ip = 1;
    ck_assert_int_eq(iptable_acquire(segment_ips(seg), c->ip, 1, 1), 0); /* another worker's */
    feed_str(upgrade("/ws", ""));
    expect_refusal(429, CONN_ERROR_CAPACITY, "max_connections_per_ip");
    iptable_release(segment_ips(seg), c->ip, 1);
}
END_TEST

/* ---- jwt ---------------------------------------------------------------- */

#define T_SECRET "unit-handshake-secret-0123456789abcdef"
/* HS256 over {"exp":4102444800,"sub":"dr-a"} (the year 2100) with T_SECRET. */
#define T_TOKEN                                                                                   \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjQxMDI0NDQ4MDAsInN1YiI6ImRyLWEifQ."           \
    "RJbkX8QvOj6-vF2V-HBqOtTC836ctNVAA_VJCWZKa0M"

static void jwt_setup(void)
{
    setup();
    char path[] = "/tmp/wsgate-unit-handshake-keyXXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, T_SECRET, strlen(T_SECRET)), (ssize_t)strlen(T_SECRET));
    close(fd);
    char err[256];
    int r = auth_key_load(path, AUTH_ALG_HS256, &w->auth_key, err, sizeof(err));
    unlink(path);
    ck_assert_msg(r == 0, "auth_key_load: %s", err);
    w->cfg.auth_mode = CONFIG_AUTH_JWT;
    w->cfg.jwt_algorithm_mask = AUTH_ALG_HS256;
}

/* Parse a request head into c->req without answering it. */
static void head_only(const char *req)
{
    size_t consumed = 0;
    ck_assert_int_eq(http_request_feed(c->req, req, strlen(req), &consumed), HTTP_FEED_DONE);
}

START_TEST(the_token_parser_says_where_the_token_is)
{
    char buf[AUTH_TOKEN_MAX + 1];
    size_t len = 0;
    const char *why = NULL;
    head_only(upgrade("/ws", "Authorization: bearer   abc.def\r\n"));
    ck_assert_int_eq(handshake_find_token(c, buf, sizeof(buf), &len, &why), 1);
    ck_assert_str_eq(buf, "abc.def");
    ck_assert_uint_eq(len, 7);
    ck_assert_int_eq(handshake_find_token(c, buf, 7, &len, &why), -E2BIG);

    http_request_init(c->req);
    head_only(upgrade("/ws?access_token=q%2Ey", ""));
    ck_assert_int_eq(handshake_find_token(c, buf, sizeof(buf), &len, &why), 1);
    ck_assert_str_eq(buf, "q.y");
    ck_assert_int_eq(handshake_find_token(c, buf, 3, &len, &why), -E2BIG);

    http_request_init(c->req);
    head_only(upgrade("/ws", ""));
    ck_assert_int_eq(handshake_find_token(c, buf, sizeof(buf), &len, &why), 0);
    http_request_init(c->req);
    head_only(upgrade("/ws", "Authorization: Bearer \r\n"));
    ck_assert_int_eq(handshake_find_token(c, buf, sizeof(buf), &len, &why), 0);

    static const char *const ambiguous[][2] = {
        {"/ws?access_token=a", "Authorization: Bearer b\r\n"},
        {"/ws?access_token=a&access_token=b", ""},
        {"/ws", "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"},
        {"/ws", "Authorization: Basic dXNlcjpwdw==\r\n"},
        {"/ws", "Authorization: Bearerabc\r\n"},
        {"/ws?access_token=%zz", ""},
    };
    for (size_t i = 0; i < sizeof(ambiguous) / sizeof(ambiguous[0]); i++) {
        http_request_init(c->req);
        head_only(upgrade(ambiguous[i][0], ambiguous[i][1]));
        why = NULL;
        ck_assert_int_eq(handshake_find_token(c, buf, sizeof(buf), &len, &why), -EINVAL);
        ck_assert_ptr_nonnull(why);
    }
}
END_TEST

START_TEST(no_token_is_401_with_the_bearer_challenge)
{
    feed_str(upgrade("/ws", ""));
    expect_refusal(401, CONN_ERROR_AUTH, "");
    ck_assert(has_line("\r\nWWW-Authenticate: Bearer realm=\"wsgate\"\r\n"));
}
END_TEST

START_TEST(two_tokens_are_401_invalid_request)
{
    feed_str(upgrade("/ws?access_token=" T_TOKEN, "Authorization: Bearer " T_TOKEN "\r\n"));
    expect_refusal(401, CONN_ERROR_AUTH, "send one");
    ck_assert(has_line("\r\nWWW-Authenticate: Bearer realm=\"wsgate\", "
                       "error=\"invalid_request\"\r\n"));
    struct auth_grant *grant = NULL;
    ck_assert_int_eq(handshake_authenticate(c, &grant), -EACCES);
    ck_assert_ptr_null(grant);
}
END_TEST

START_TEST(a_bad_token_is_401_invalid_token)
{
    feed_str(upgrade("/ws", "Authorization: Bearer " T_TOKEN "x\r\n"));
    expect_refusal(401, CONN_ERROR_AUTH, "");
    ck_assert(has_line("\r\nWWW-Authenticate: Bearer realm=\"wsgate\", "
                       "error=\"invalid_token\"\r\n"));
    ck_assert_ptr_null(c->grant);
}
END_TEST

START_TEST(a_good_token_upgrades_with_its_grant)
{
    feed_str(upgrade("/ws?access_token=" T_TOKEN, ""));
    ck_assert_int_eq(status(), 101);
    ck_assert_ptr_nonnull(c->grant);
    ck_assert_int_eq(refusals, 0);
}
END_TEST

/* ---- the plain endpoints ------------------------------------------------ */

START_TEST(unknown_paths_are_404_and_close)
{
    feed_str("GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n");
    ck_assert_int_eq(status(), 404);
    ck_assert(has_line("\r\n\r\n{\"status\":404,\"error\":\"not found: the gateway serves /ws"));
    ck_assert(c->close_after_flush);
    ck_assert_int_eq(refusals, 0); /* not a connection error */
    teardown();
    setup();
    feed_str("HEAD /nope HTTP/1.1\r\nHost: gw\r\n\r\n");
    ck_assert_int_eq(status(), 404);
    ck_assert_str_eq(strstr(wire, "\r\n\r\n"), "\r\n\r\n");
}
END_TEST

START_TEST(metrics_are_served_and_close)
{
    feed_str("GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n");
    ck_assert_int_eq(status(), 200);
    ck_assert(has_line("websocket_connections_total"));
    ck_assert(c->close_after_flush);
    ck_assert_int_eq(c->state, CONN_HTTP);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("handshake");
    TCase *tc = unit_tcase(s, "upgrade");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_rfc_6455_key_is_accepted_and_the_session_installed);
    tcase_add_test(tc, a_head_in_pieces_is_answered_once_complete);
    tcase_add_test(tc, bytes_after_the_head_reach_the_session);
    tcase_add_test(tc, the_subprotocol_is_chosen_or_refused);
    tcase_add_test(tc, an_unknown_subprotocol_only_is_400);
    tcase_add_test(tc, permessage_deflate_is_agreed_when_compression_is_on);
    tcase_add_test(tc, permessage_deflate_without_server_context_when_the_client_says_so);
    tcase_add_test(tc, permessage_deflate_is_ignored_when_compression_is_off);
    tcase_add_test(tc, a_malformed_extensions_header_is_400_and_minus_einval);
    TCase *refuse = unit_tcase(s, "refusals");
    tcase_add_checked_fixture(refuse, setup, teardown);
    tcase_add_test(refuse, not_an_upgrade_is_426_with_upgrade_header);
    tcase_add_test(refuse, head_on_ws_is_426_without_a_body);
    tcase_add_test(refuse, bad_key_version_or_http_version_is_400);
    tcase_add_test(refuse, malformed_heads_get_400_505_431);
    tcase_add_test(refuse, no_head_in_time_is_408);
    tcase_add_test(refuse, a_draining_worker_is_503_retry_after);
    tcase_add_test(refuse, an_origin_not_allowed_is_403);
    tcase_add_test(refuse, the_connection_limits_are_503_and_429);
    TCase *jwt = unit_tcase(s, "jwt");
    tcase_add_checked_fixture(jwt, jwt_setup, teardown);
    tcase_add_test(jwt, the_token_parser_says_where_the_token_is);
    tcase_add_test(jwt, no_token_is_401_with_the_bearer_challenge);
    tcase_add_test(jwt, two_tokens_are_401_invalid_request);
    tcase_add_test(jwt, a_bad_token_is_401_invalid_token);
    tcase_add_test(jwt, a_good_token_upgrades_with_its_grant);
    TCase *plain = unit_tcase(s, "endpoints");
    tcase_add_checked_fixture(plain, setup, teardown);
    tcase_add_test(plain, unknown_paths_are_404_and_close);
    tcase_add_test(plain, metrics_are_served_and_close);
    return unit_run(s);
}
