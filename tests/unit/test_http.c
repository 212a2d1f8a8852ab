/*
 * Unit suite for shared/http.c: Sec-WebSocket-Accept (RFC 6455's sample),
 * reading a request head fed whole, byte by byte and split at every offset,
 * limits (8 KiB, 64 headers), malformed input, bytes after the head left
 * unconsumed, header lookup and token lists, every status of
 * http_ws_validate, http_request_path and http_format_head, query
 * parameters (access_token) and origin normalisation (allowed_origins).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "unit.h"

#define SAMPLE_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define SAMPLE_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char upgrade_req[] = "GET /ws?access_token=abc HTTP/1.1\r\n"
                                  "Host: localhost:8003\r\n"
                                  "Upgrade: websocket\r\n"
                                  "Connection: Upgrade\r\n"
                                  "Sec-WebSocket-Key: " SAMPLE_KEY "\r\n"
                                  "Sec-WebSocket-Version: 13\r\n"
                                  "\r\n";

/* Feed a whole head; expect it complete and fully consumed. */
static void feed_whole(struct http_request *req, const char *text)
{
    size_t len = strlen(text), consumed = 99999;
    http_request_init(req);
    enum http_feed_result r = http_request_feed(req, text, len, &consumed);
    ck_assert_msg(r == HTTP_FEED_DONE, "feed returned %d for:\n%s", (int)r, text);
    ck_assert_uint_eq(consumed, len);
}

/* Status of http_ws_validate for a request head. */
static int validate(const char *text, struct http_ws_upgrade *up)
{
    static struct http_request req; /* 8 KiB+: keep it off the stack */
    feed_whole(&req, text);
    return http_ws_validate(&req, up);
}

/* The standard upgrade with one header line replaced (or removed when
 * `replacement` is ""). `header` is the line's name, e.g. "Upgrade". */
static const char *upgrade_with(const char *header, const char *replacement)
{
    static char out[2048];
    char name[64];
    snprintf(name, sizeof(name), "\r\n%s:", header);
    const char *at = strstr(upgrade_req, name);
    ck_assert_ptr_nonnull(at);
    at += 2;
    const char *eol = strstr(at, "\r\n") + 2;
    snprintf(out, sizeof(out), "%.*s%s%s", (int)(at - upgrade_req), upgrade_req, replacement, eol);
    return out;
}

static void expect_upgrade_parsed(const struct http_request *req)
{
    char path[64];
    size_t len = 0;
    ck_assert_int_eq(req->method, HTTP_METHOD_GET_KIND);
    ck_assert_uint_eq(req->http_major, 1);
    ck_assert_uint_eq(req->http_minor, 1);
    ck_assert_uint_eq(req->header_count, 5);
    http_request_path(req, path, sizeof(path));
    ck_assert_str_eq(path, "/ws");
    const char *v = http_request_header(req, "Host", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq((int)len, 14);
    ck_assert_int_eq(memcmp(v, "localhost:8003", 14), 0);
    v = http_request_header(req, "Sec-WebSocket-Key", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq((int)len, 24);
    ck_assert_int_eq(memcmp(v, SAMPLE_KEY, 24), 0);
    struct http_ws_upgrade up;
    ck_assert_int_eq(http_ws_validate(req, &up), 101);
    ck_assert_str_eq(up.accept, SAMPLE_ACCEPT);
}

/* ---- Sec-WebSocket-Accept ---- */

START_TEST(accept_key_of_rfc6455_sample)
{
    char out[29];
    memset(out, 'x', sizeof(out));
    ck_assert_int_eq(http_ws_accept_key(SAMPLE_KEY, strlen(SAMPLE_KEY), out), 0);
    ck_assert_str_eq(out, SAMPLE_ACCEPT);
}
END_TEST

START_TEST(accept_key_uses_only_key_len_bytes)
{
    char out[29];
    ck_assert_int_eq(http_ws_accept_key(SAMPLE_KEY "garbage", 24, out), 0);
    ck_assert_str_eq(out, SAMPLE_ACCEPT);
    /* A different key gives a different answer (expected value computed
     * independently: Python's hashlib.sha1 + base64). */
    ck_assert_int_eq(http_ws_accept_key("CSIRmL8dWYxeAdr/XpEHRw==", 24, out), 0);
    ck_assert_str_eq(out, "Cl08BPHCO6KrG+lBD2wp0+jmtMQ=");
}
END_TEST

/* ---- reading the head ---- */

START_TEST(head_fed_whole)
{
    static struct http_request req;
    feed_whole(&req, upgrade_req);
    ck_assert_int_eq(req.complete, 1);
    expect_upgrade_parsed(&req);
}
END_TEST

START_TEST(head_fed_byte_by_byte)
{
    static struct http_request req;
    size_t len = strlen(upgrade_req);
    http_request_init(&req);
    for (size_t i = 0; i < len; i++) {
        size_t consumed = 99;
        enum http_feed_result r = http_request_feed(&req, upgrade_req + i, 1, &consumed);
        if (i + 1 < len) {
            ck_assert_msg(r == HTTP_FEED_MORE, "byte %zu: %d", i, (int)r);
        } else {
            ck_assert_int_eq(r, HTTP_FEED_DONE);
        }
        ck_assert_msg(consumed == 1, "byte %zu: consumed %zu", i, consumed);
    }
    expect_upgrade_parsed(&req);
}
END_TEST

START_TEST(head_split_at_every_offset)
{
    static struct http_request req;
    size_t len = strlen(upgrade_req);
    for (size_t k = 1; k < len; k++) {
        size_t consumed = 0;
        http_request_init(&req);
        enum http_feed_result r = http_request_feed(&req, upgrade_req, k, &consumed);
        ck_assert_msg(r == HTTP_FEED_MORE, "split %zu: first part gave %d", k, (int)r);
        ck_assert_uint_eq(consumed, k);
        r = http_request_feed(&req, upgrade_req + k, len - k, &consumed);
        ck_assert_msg(r == HTTP_FEED_DONE, "split %zu: second part gave %d", k, (int)r);
        ck_assert_msg(consumed == len - k, "split %zu: consumed %zu", k, consumed);
        expect_upgrade_parsed(&req);
    }
}
END_TEST

START_TEST(feeding_after_done_consumes_nothing)
{
    static struct http_request req;
    feed_whole(&req, upgrade_req);
    size_t consumed = 5;
    ck_assert_int_eq(http_request_feed(&req, "\x81\x80", 2, &consumed), HTTP_FEED_DONE);
    ck_assert_uint_eq(consumed, 0);
}
END_TEST

START_TEST(bytes_after_upgrade_head_not_consumed)
{
    static struct http_request req;
    char buf[512];
    size_t head = strlen(upgrade_req);
    /* A masked text frame sent right behind the head. */
    static const char frame[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    memcpy(buf, upgrade_req, head);
    memcpy(buf + head, frame, sizeof(frame) - 1);
    size_t consumed = 0;
    http_request_init(&req);
    ck_assert_int_eq(http_request_feed(&req, buf, head + sizeof(frame) - 1, &consumed),
                     HTTP_FEED_DONE);
    ck_assert_uint_eq(consumed, head);
    expect_upgrade_parsed(&req);
}
END_TEST

START_TEST(bytes_after_split_head_not_consumed)
{
    /* Head split in two reads, the second carrying the frame too. */
    static struct http_request req;
    char buf[512];
    size_t head = strlen(upgrade_req);
    memcpy(buf, upgrade_req, head);
    memcpy(buf + head, "\x88\x80\x01\x02\x03\x04", 6);
    for (size_t k = 1; k < head; k += 7) {
        size_t consumed = 0;
        http_request_init(&req);
        ck_assert_int_eq(http_request_feed(&req, buf, k, &consumed), HTTP_FEED_MORE);
        ck_assert_int_eq(http_request_feed(&req, buf + k, head + 6 - k, &consumed), HTTP_FEED_DONE);
        ck_assert_msg(consumed == head - k, "split %zu: consumed %zu, want %zu", k, consumed,
                      head - k);
    }
}
END_TEST

START_TEST(bytes_after_plain_get_not_consumed)
{
    static struct http_request req;
    static const char text[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n";
    size_t head = strlen("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    size_t consumed = 0;
    http_request_init(&req);
    ck_assert_int_eq(http_request_feed(&req, text, sizeof(text) - 1, &consumed), HTTP_FEED_DONE);
    ck_assert_uint_eq(consumed, head);
    char path[32];
    http_request_path(&req, path, sizeof(path));
    ck_assert_str_eq(path, "/health");
}
END_TEST

START_TEST(head_of_exactly_8kib_accepted_one_byte_more_too_big)
{
    static struct http_request req;
    static char text[HTTP_HEAD_MAX + 2];
    const char *start = "GET /health HTTP/1.1\r\nX-Pad: ";
    size_t fixed = strlen(start) + 4; /* + "\r\n\r\n" */
    size_t pad = HTTP_HEAD_MAX - fixed;
    snprintf(text, sizeof(text), "%s", start);
    memset(text + strlen(start), 'a', pad);
    memcpy(text + strlen(start) + pad, "\r\n\r\n", 5);
    ck_assert_uint_eq(strlen(text), HTTP_HEAD_MAX);
    feed_whole(&req, text);
    size_t len = 0;
    ck_assert_ptr_nonnull(http_request_header(&req, "X-Pad", &len));
    ck_assert_uint_eq(len, pad);

    /* One more pad byte: the head no longer fits. */
    memset(text + strlen(start), 'a', pad + 1);
    memcpy(text + strlen(start) + pad + 1, "\r\n\r\n", 5);
    size_t consumed = 0;
    http_request_init(&req);
    ck_assert_int_eq(http_request_feed(&req, text, strlen(text), &consumed), HTTP_FEED_TOO_BIG);
}
END_TEST

START_TEST(head_over_8kib_too_big_whole_and_in_chunks)
{
    static struct http_request req;
    static char text[20000];
    int n = snprintf(text, sizeof(text), "GET /ws HTTP/1.1\r\nCookie: ");
    memset(text + n, 'c', 10000);
    memcpy(text + n + 10000, "\r\n\r\n", 5);
    size_t len = strlen(text), consumed = 0;

    http_request_init(&req);
    ck_assert_int_eq(http_request_feed(&req, text, len, &consumed), HTTP_FEED_TOO_BIG);

    /* In 1000-byte reads: MORE until the limit, then TOO_BIG. */
    http_request_init(&req);
    enum http_feed_result r = HTTP_FEED_MORE;
    size_t off = 0;
    while (r == HTTP_FEED_MORE && off < len) {
        size_t chunk = len - off < 1000 ? len - off : 1000;
        r = http_request_feed(&req, text + off, chunk, &consumed);
        off += chunk;
    }
    ck_assert_int_eq(r, HTTP_FEED_TOO_BIG);
    ck_assert_uint_le(off, HTTP_HEAD_MAX + 1000);
}
END_TEST

static void build_headers(char *text, size_t size, int count)
{
    int n = snprintf(text, size, "GET /ws HTTP/1.1\r\n");
    for (int i = 0; i < count; i++)
        n += snprintf(text + n, size - (size_t)n, "X-H%d: v%d\r\n", i, i);
    snprintf(text + n, size - (size_t)n, "\r\n");
}

START_TEST(sixty_four_headers_accepted_sixty_five_too_big)
{
    static struct http_request req;
    static char text[4096];
    build_headers(text, sizeof(text), HTTP_HEADERS_MAX);
    feed_whole(&req, text);
    ck_assert_uint_eq(req.header_count, HTTP_HEADERS_MAX);
    size_t len = 0;
    const char *v = http_request_header(&req, "x-h63", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(memcmp(v, "v63", 3), 0);

    build_headers(text, sizeof(text), HTTP_HEADERS_MAX + 1);
    size_t consumed = 0;
    http_request_init(&req);
    ck_assert_int_eq(http_request_feed(&req, text, strlen(text), &consumed), HTTP_FEED_TOO_BIG);
}
END_TEST

START_TEST(garbage_is_bad_request)
{
    static const char *const garbage[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
        "HELLO WORLD\r\n\r\n",
        "GET /ws HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET /ws HTTP/9.x\r\n\r\n",
        "GET /ws\x01 HTTP/1.1\r\n\r\n",
        "\r\n\r\n\r\n\r\n\x7f",
    };
    static struct http_request req;
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        size_t consumed = 0;
        http_request_init(&req);
        enum http_feed_result r = http_request_feed(&req, garbage[i], strlen(garbage[i]), &consumed);
        ck_assert_msg(r == HTTP_FEED_BAD, "garbage %zu gave %d", i, (int)r);
    }
}
END_TEST

START_TEST(garbage_fed_byte_by_byte_is_bad_request)
{
    static const char text[] = "GET /ws HTTP/1.1\r\nHost localhost\r\n\r\n";
    static struct http_request req;
    http_request_init(&req);
    enum http_feed_result r = HTTP_FEED_MORE;
    size_t i = 0, consumed = 0;
    for (; i < sizeof(text) - 1 && r == HTTP_FEED_MORE; i++)
        r = http_request_feed(&req, text + i, 1, &consumed);
    ck_assert_int_eq(r, HTTP_FEED_BAD);
}
END_TEST

START_TEST(request_line_needs_an_http_1_version)
{
    static const struct {
        const char *text;
        enum http_feed_result want;
        int no_version;
    } cases[] = {
        {"GET /health\r\n\r\n", HTTP_FEED_BAD, 1},
        {"GET /health\r\nHost: x\r\n\r\n", HTTP_FEED_BAD, 1},
        {"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", HTTP_FEED_VERSION, 0},
        {"GET /health HTTP/1.0\r\nHost: x\r\n\r\n", HTTP_FEED_DONE, 0},
        {"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", HTTP_FEED_DONE, 0},
    };
    static struct http_request req;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t consumed = 0;
        http_request_init(&req);
        enum http_feed_result r =
            http_request_feed(&req, cases[i].text, strlen(cases[i].text), &consumed);
        ck_assert_msg(r == cases[i].want, "case %zu gave %d", i, (int)r);
        ck_assert_int_eq(req.no_version, cases[i].no_version);
    }
    /* byte by byte, the same answer */
    static const char text[] = "GET /health\r\n\r\n";
    http_request_init(&req);
    enum http_feed_result r = HTTP_FEED_MORE;
    size_t consumed = 0;
    for (size_t i = 0; i < sizeof(text) - 1 && r == HTTP_FEED_MORE; i++)
        r = http_request_feed(&req, text + i, 1, &consumed);
    ck_assert_int_eq(r, HTTP_FEED_BAD);
    ck_assert_str_eq(http_status_text(505), "HTTP Version Not Supported");
}
END_TEST

/* ---- header lookup ---- */

START_TEST(header_names_case_insensitive)
{
    static struct http_request req;
    feed_whole(&req, "GET /ws HTTP/1.1\r\n"
                     "hOsT: example\r\n"
                     "uPgRaDe: WebSocket\r\n"
                     "connection: UPGRADE\r\n"
                     "sec-websocket-key: " SAMPLE_KEY "\r\n"
                     "SEC-WEBSOCKET-VERSION: 13\r\n\r\n");
    size_t len = 0;
    const char *v = http_request_header(&req, "HOST", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(memcmp(v, "example", len), 0);
    ck_assert_uint_eq(len, 7);
    ck_assert_ptr_null(http_request_header(&req, "Hos", &len));
    ck_assert_ptr_null(http_request_header(&req, "Hostx", &len));
    ck_assert_uint_eq(http_request_header_count(&req, "Sec-WebSocket-Key"), 1);
    struct http_ws_upgrade up;
    ck_assert_int_eq(http_ws_validate(&req, &up), 101);
    ck_assert_str_eq(up.accept, SAMPLE_ACCEPT);
}
END_TEST

START_TEST(header_lookup_returns_first_and_counts_all)
{
    static struct http_request req;
    feed_whole(&req, "GET / HTTP/1.1\r\nX-A: one\r\nx-a: two\r\nX-B: b\r\n\r\n");
    size_t len = 0;
    const char *v = http_request_header(&req, "x-a", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(memcmp(v, "one", 3), 0);
    ck_assert_uint_eq(http_request_header_count(&req, "X-A"), 2);
    ck_assert_uint_eq(http_request_header_count(&req, "X-B"), 1);
    ck_assert_uint_eq(http_request_header_count(&req, "X-C"), 0);
}
END_TEST

START_TEST(header_value_excludes_leading_and_trailing_whitespace)
{
    static struct http_request req;
    feed_whole(&req, "GET / HTTP/1.1\r\nX-A:    spaced value  \r\n\r\n");
    size_t len = 0;
    const char *v = http_request_header(&req, "X-A", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(len, 12);
    ck_assert_int_eq(memcmp(v, "spaced value", 12), 0);
}
END_TEST

START_TEST(token_lists_with_odd_spacing)
{
    static struct http_request req;
    feed_whole(&req, "GET / HTTP/1.1\r\n"
                     "Connection:   keep-alive ,\tUpgrade  \r\n"
                     "Upgrade:websocket\r\n"
                     "X-List: ,, a ,b,,  c\t,\r\n"
                     "\r\n");
    ck_assert_int_eq(http_request_header_has_token(&req, "Connection", "upgrade"), 1);
    ck_assert_int_eq(http_request_header_has_token(&req, "connection", "KEEP-ALIVE"), 1);
    ck_assert_int_eq(http_request_header_has_token(&req, "Connection", "close"), 0);
    ck_assert_int_eq(http_request_header_has_token(&req, "Upgrade", "websocket"), 1);
    ck_assert_int_eq(http_request_header_has_token(&req, "X-List", "a"), 1);
    ck_assert_int_eq(http_request_header_has_token(&req, "X-List", "b"), 1);
    ck_assert_int_eq(http_request_header_has_token(&req, "X-List", "c"), 1);
    ck_assert_int_eq(http_request_header_has_token(&req, "X-List", "d"), 0);
    ck_assert_int_eq(http_request_header_has_token(&req, "X-Missing", "a"), 0);
}
END_TEST

START_TEST(token_must_match_whole_item)
{
    static struct http_request req;
    feed_whole(&req, "GET / HTTP/1.1\r\nConnection: Upgraded, xupgrade, upgrad\r\n"
                     "Upgrade: websocketx, web socket\r\n\r\n");
    ck_assert_int_eq(http_request_header_has_token(&req, "Connection", "upgrade"), 0);
    ck_assert_int_eq(http_request_header_has_token(&req, "Upgrade", "websocket"), 0);
}
END_TEST

/* ---- http_ws_validate ---- */

START_TEST(validate_standard_upgrade_is_101)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_req, &up), 101);
    ck_assert_str_eq(up.accept, SAMPLE_ACCEPT);
    ck_assert_int_eq(up.subprotocol, 0);
    ck_assert_ptr_null(up.why);
}
END_TEST

START_TEST(validate_connection_keep_alive_upgrade_is_101)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Connection", "Connection: keep-alive, Upgrade\r\n"), &up),
                     101);
    ck_assert_str_eq(up.accept, SAMPLE_ACCEPT);
    ck_assert_int_eq(validate(upgrade_with("Connection", "Connection: keep-alive,upgrade\r\n"), &up),
                     101);
    ck_assert_int_eq(validate(upgrade_with("Connection", "Connection:Upgrade,keep-alive\r\n"), &up),
                     101);
}
END_TEST

START_TEST(validate_connection_split_over_two_headers_is_101)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Connection",
                                           "Connection: keep-alive\r\nConnection: Upgrade\r\n"),
                              &up),
                     101);
}
END_TEST

START_TEST(validate_odd_spacing_and_case_is_101)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Upgrade", "Upgrade:   WebSocket   \r\n"), &up), 101);
    ck_assert_int_eq(validate(upgrade_with("Connection", "Connection:\tkeep-alive ,  UPGRADE\t\r\n"),
                              &up),
                     101);
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key:   " SAMPLE_KEY "\r\n"),
                              &up),
                     101);
    ck_assert_str_eq(up.accept, SAMPLE_ACCEPT);
    /* Trailing whitespace is not part of a value (RFC 7230 §3.2.4). */
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key: " SAMPLE_KEY " \t \r\n"),
                              &up),
                     101);
    ck_assert_str_eq(up.accept, SAMPLE_ACCEPT);
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13  \r\n"),
                              &up),
                     101);
}
END_TEST

START_TEST(validate_missing_upgrade_is_426)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Upgrade", ""), &up), 426);
    ck_assert_ptr_nonnull(up.why);
    ck_assert_int_eq(validate(upgrade_with("Upgrade", "Upgrade: h2c\r\n"), &up), 426);
}
END_TEST

START_TEST(validate_missing_connection_is_426)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Connection", ""), &up), 426);
    ck_assert_ptr_nonnull(up.why);
    ck_assert_int_eq(validate(upgrade_with("Connection", "Connection: keep-alive\r\n"), &up), 426);
}
END_TEST

START_TEST(validate_missing_key_is_426)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key", ""), &up), 426);
    ck_assert_ptr_nonnull(up.why);
}
END_TEST

START_TEST(validate_missing_version_is_426)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Version", ""), &up), 426);
    ck_assert_ptr_nonnull(up.why);
}
END_TEST

START_TEST(validate_plain_get_is_426)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", &up), 426);
    ck_assert_ptr_nonnull(up.why);
}
END_TEST

START_TEST(validate_head_and_post_are_426)
{
    char text[1024];
    struct http_ws_upgrade up;
    snprintf(text, sizeof(text), "HEAD%s", upgrade_req + 3);
    ck_assert_int_eq(validate(text, &up), 426);
    ck_assert_ptr_nonnull(up.why);
    static struct http_request req;
    feed_whole(&req, text);
    ck_assert_int_eq(req.method, HTTP_METHOD_HEAD_KIND);

    snprintf(text, sizeof(text), "POST%s", upgrade_req + 3);
    ck_assert_int_eq(validate(text, &up), 426);
    feed_whole(&req, text);
    ck_assert_int_eq(req.method, HTTP_METHOD_OTHER);
}
END_TEST

START_TEST(validate_key_of_wrong_length_is_400)
{
    struct http_ws_upgrade up;
    /* base64 of 10 bytes */
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"),
                              &up),
                     400);
    ck_assert_ptr_nonnull(up.why);
    /* base64 of 17 bytes */
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAA\r\n"),
                              &up),
                     400);
    /* base64 of 18 bytes (24 characters, no padding) */
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAB\r\n"),
                              &up),
                     400);
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: \r\n"), &up), 400);
}
END_TEST

START_TEST(validate_key_bad_base64_is_400)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!!==\r\n"),
                              &up),
                     400);
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ==\r\n"),
                              &up),
                     400);
    /* 17 bytes: one '=' only */
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQA=\r\n"),
                              &up),
                     400);
}
END_TEST

START_TEST(validate_key_without_padding_is_400)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key",
                                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n"),
                              &up),
                     400);
}
END_TEST

START_TEST(validate_two_keys_is_400)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Key", "Sec-WebSocket-Key: " SAMPLE_KEY
                                                                "\r\nSec-WebSocket-Key: " SAMPLE_KEY
                                                                "\r\n"),
                              &up),
                     400);
    ck_assert_ptr_nonnull(up.why);
}
END_TEST

START_TEST(validate_version_12_is_400)
{
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 12\r\n"),
                              &up),
                     400);
    ck_assert_ptr_nonnull(up.why);
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 130\r\n"),
                              &up),
                     400);
    ck_assert_int_eq(validate(upgrade_with("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n"),
                              &up),
                     400);
}
END_TEST

START_TEST(validate_http_1_0_is_400)
{
    char text[1024];
    const char *eol = strstr(upgrade_req, "HTTP/1.1");
    snprintf(text, sizeof(text), "%.*sHTTP/1.0%s", (int)(eol - upgrade_req), upgrade_req, eol + 8);
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(text, &up), 400);
    ck_assert_ptr_nonnull(up.why);
}
END_TEST

START_TEST(validate_subprotocol_selected_among_others)
{
    char text[1024];
    const char *end = upgrade_req + strlen(upgrade_req) - 2;
    snprintf(text, sizeof(text), "%.*sSec-WebSocket-Protocol: chat, vitalstream.v1, superchat\r\n\r\n",
             (int)(end - upgrade_req), upgrade_req);
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(text, &up), 101);
    ck_assert_int_eq(up.subprotocol, 1);
    ck_assert_str_eq(up.accept, SAMPLE_ACCEPT);

    /* Offered alone, and in a second header line. */
    snprintf(text, sizeof(text), "%.*sSec-WebSocket-Protocol: vitalstream.v1\r\n\r\n",
             (int)(end - upgrade_req), upgrade_req);
    ck_assert_int_eq(validate(text, &up), 101);
    ck_assert_int_eq(up.subprotocol, 1);
    snprintf(text, sizeof(text),
             "%.*sSec-WebSocket-Protocol: chat\r\nsec-websocket-protocol: VitalStream.V1\r\n\r\n",
             (int)(end - upgrade_req), upgrade_req);
    ck_assert_int_eq(validate(text, &up), 101);
    ck_assert_int_eq(up.subprotocol, 1);
}
END_TEST

START_TEST(validate_only_other_subprotocols_is_400)
{
    char text[1024];
    const char *end = upgrade_req + strlen(upgrade_req) - 2;
    snprintf(text, sizeof(text), "%.*sSec-WebSocket-Protocol: chat, vitalstream.v2\r\n\r\n",
             (int)(end - upgrade_req), upgrade_req);
    struct http_ws_upgrade up;
    ck_assert_int_eq(validate(text, &up), 400);
    ck_assert_int_eq(up.subprotocol, 0);
    ck_assert_ptr_nonnull(up.why);
}
END_TEST

/* ---- path and response ---- */

static const char *path_of(const char *target, size_t outlen)
{
    static struct http_request req;
    static char out[256];
    char text[512];
    snprintf(text, sizeof(text), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", target);
    feed_whole(&req, text);
    http_request_path(&req, out, outlen);
    return out;
}

/* (count, value) of a query parameter in a request target. */
static int param_of(const char *target, const char *name, char *out, size_t outlen)
{
    static struct http_request req;
    char text[1024];
    snprintf(text, sizeof(text), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", target);
    feed_whole(&req, text);
    out[0] = '\0';
    return http_request_query_param(&req, name, out, outlen);
}

START_TEST(query_param_found_decoded_and_counted)
{
    char v[64];
    ck_assert_int_eq(param_of("/ws?access_token=abc.def-_", "access_token", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "abc.def-_");
    ck_assert_int_eq(param_of("/ws?x=1&access_token=a%2Eb&y", "access_token", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "a.b");
    ck_assert_int_eq(param_of("/ws?access_token=", "access_token", v, sizeof(v)), 1);
    ck_assert_str_eq(v, "");
    ck_assert_int_eq(param_of("/ws?access_token", "access_token", v, sizeof(v)), 1);
    ck_assert_int_eq(param_of("/ws?access_token=a&access_token=b", "access_token", v, sizeof(v)), 2);
    ck_assert_str_eq(v, "a");
    ck_assert_int_eq(param_of("/ws", "access_token", v, sizeof(v)), 0);
    ck_assert_int_eq(param_of("/ws?xaccess_token=a&access_tokenx=b", "access_token", v, sizeof(v)),
                     0);
    ck_assert_int_eq(param_of("/ws?a=1#access_token=b", "access_token", v, sizeof(v)), 0);
    ck_assert_int_eq(param_of("/ws?access_token=a%2", "access_token", v, sizeof(v)), -1);
    ck_assert_int_eq(param_of("/ws?access_token=a%zz", "access_token", v, sizeof(v)), -1);
    ck_assert_int_eq(param_of("/ws?access_token=0123456789", "access_token", v, 5), -1);
}
END_TEST

static const char *origin(const char *in)
{
    static char out[128];
    return http_origin_normalize(in, strlen(in), out, sizeof(out)) < 0 ? NULL : out;
}

START_TEST(origin_normalised)
{
    ck_assert_str_eq(origin("https://dash.vitalstream.com"), "https://dash.vitalstream.com");
    ck_assert_str_eq(origin("HTTPS://Dash.VitalStream.COM"), "https://dash.vitalstream.com");
    ck_assert_str_eq(origin("https://dash.example:443"), "https://dash.example");
    ck_assert_str_eq(origin("http://dash.example:80"), "http://dash.example");
    ck_assert_str_eq(origin("http://dash.example:443"), "http://dash.example:443");
    ck_assert_str_eq(origin("https://dash.example:8443"), "https://dash.example:8443");
    ck_assert_str_eq(origin("http://127.0.0.1:3000"), "http://127.0.0.1:3000");
    ck_assert_str_eq(origin("http://[::1]:3000"), "http://[::1]:3000");
    const char *bad[] = {"null", "", "dash.example", "https://", "https://dash.example/",
                         "https://dash.example/path", "https://user@dash.example",
                         "https://dash.example:", "https://dash.example:0",
                         "https://dash.example:65536", "https://dash.example:12a",
                         "https://dash example", "://dash.example", "1http://x",
                         "https://dash.example?x=1", "http://[::1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(origin(bad[i]) == NULL, "%s accepted as %s", bad[i], origin(bad[i]));
    char small[8];
    ck_assert_int_lt(http_origin_normalize("https://dash.example", 20, small, sizeof(small)), 0);
}
END_TEST

START_TEST(request_path_strips_query)
{
    ck_assert_str_eq(path_of("/ws?access_token=abc.def", 256), "/ws");
    ck_assert_str_eq(path_of("/ws?", 256), "/ws");
    ck_assert_str_eq(path_of("/health", 256), "/health");
    ck_assert_str_eq(path_of("/health/detailed?verbose=1&x=2", 256), "/health/detailed");
    ck_assert_str_eq(path_of("/metrics?a=/b?c", 256), "/metrics");
    ck_assert_str_eq(path_of("http://gw.example:8003/metrics?x=1", 256), "/metrics");
}
END_TEST

START_TEST(request_path_truncated_to_buffer)
{
    ck_assert_str_eq(path_of("/health/detailed", 8), "/health");
    ck_assert_str_eq(path_of("/ws?x", 1), "");
}
END_TEST

START_TEST(request_path_of_split_url)
{
    static const char text[] = "GET /health/detailed?x=1 HTTP/1.1\r\n\r\n";
    static struct http_request req;
    size_t consumed;
    for (size_t k = 5; k < 24; k++) {
        http_request_init(&req);
        ck_assert_int_eq(http_request_feed(&req, text, k, &consumed), HTTP_FEED_MORE);
        ck_assert_int_eq(http_request_feed(&req, text + k, sizeof(text) - 1 - k, &consumed),
                         HTTP_FEED_DONE);
        char out[64];
        http_request_path(&req, out, sizeof(out));
        ck_assert_msg(strcmp(out, "/health/detailed") == 0, "split %zu: %s", k, out);
    }
}
END_TEST

START_TEST(format_head_exact_bytes)
{
    char out[512];
    int n = http_format_head(out, sizeof(out), 200, "application/json", NULL, 17);
    static const char want[] = "HTTP/1.1 200 OK\r\n"
                               "Server: wsgate\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 17\r\n"
                               "Cache-Control: no-store\r\n"
                               "Connection: close\r\n"
                               "\r\n";
    ck_assert_int_eq(n, (int)strlen(want));
    ck_assert_str_eq(out, want);
}
END_TEST

START_TEST(format_head_with_extra_headers)
{
    char out[512];
    int n = http_format_head(out, sizeof(out), 503, "text/plain", "Retry-After: 1\r\nX-A: b\r\n", 0);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(strncmp(out, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    ck_assert_ptr_nonnull(strstr(out, "\r\nContent-Length: 0\r\n"));
    /* Extra headers come last, then the blank line. */
    const char *tail = "Connection: close\r\nRetry-After: 1\r\nX-A: b\r\n\r\n";
    ck_assert_str_eq(out + n - strlen(tail), tail);
    ck_assert_int_eq((int)strlen(out), n);
}
END_TEST

START_TEST(format_head_too_small_buffer)
{
    char out[64];
    ck_assert_int_eq(http_format_head(out, sizeof(out), 200, "text/plain", NULL, 1), -1);
    char exact[256];
    int n = http_format_head(exact, sizeof(exact), 404, "text/plain", NULL, 10);
    ck_assert_int_gt(n, 0);
    /* Exactly n bytes plus the NUL fit; one less does not. */
    ck_assert_int_eq(http_format_head(exact, (size_t)n + 1, 404, "text/plain", NULL, 10), n);
    ck_assert_int_eq(http_format_head(exact, (size_t)n, 404, "text/plain", NULL, 10), -1);
}
END_TEST

START_TEST(status_texts)
{
    ck_assert_str_eq(http_status_text(101), "Switching Protocols");
    ck_assert_str_eq(http_status_text(400), "Bad Request");
    ck_assert_str_eq(http_status_text(404), "Not Found");
    ck_assert_str_eq(http_status_text(426), "Upgrade Required");
    ck_assert_str_eq(http_status_text(431), "Request Header Fields Too Large");
    ck_assert_str_eq(http_status_text(503), "Service Unavailable");
    ck_assert_str_eq(http_status_text(304), "Not Modified");
    ck_assert_str_eq(http_status_text(299), "Unknown");
}
END_TEST

START_TEST(format_head_with_cache_control)
{
    char out[256];
    int n = http_format_head_cache(out, sizeof(out), 304, "text/css", "no-cache", "ETag: \"a\"\r\n", 12);
    ck_assert_int_gt(n, 0);
    ck_assert_str_eq(out, "HTTP/1.1 304 Not Modified\r\n"
                          "Server: wsgate\r\n"
                          "Content-Type: text/css\r\n"
                          "Content-Length: 12\r\n"
                          "Cache-Control: no-cache\r\n"
                          "Connection: close\r\n"
                          "ETag: \"a\"\r\n"
                          "\r\n");
}
END_TEST

static Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = unit_tcase(s, "accept");
    tcase_add_test(tc, accept_key_of_rfc6455_sample);
    tcase_add_test(tc, accept_key_uses_only_key_len_bytes);

    tc = unit_tcase(s, "feed");
    tcase_add_test(tc, head_fed_whole);
    tcase_add_test(tc, request_line_needs_an_http_1_version);
    tcase_add_test(tc, head_fed_byte_by_byte);
    tcase_add_test(tc, head_split_at_every_offset);
    tcase_add_test(tc, feeding_after_done_consumes_nothing);
    tcase_add_test(tc, bytes_after_upgrade_head_not_consumed);
    tcase_add_test(tc, bytes_after_split_head_not_consumed);
    tcase_add_test(tc, bytes_after_plain_get_not_consumed);
    tcase_add_test(tc, head_of_exactly_8kib_accepted_one_byte_more_too_big);
    tcase_add_test(tc, head_over_8kib_too_big_whole_and_in_chunks);
    tcase_add_test(tc, sixty_four_headers_accepted_sixty_five_too_big);
    tcase_add_test(tc, garbage_is_bad_request);
    tcase_add_test(tc, garbage_fed_byte_by_byte_is_bad_request);

    tc = unit_tcase(s, "headers");
    tcase_add_test(tc, header_names_case_insensitive);
    tcase_add_test(tc, header_lookup_returns_first_and_counts_all);
    tcase_add_test(tc, header_value_excludes_leading_and_trailing_whitespace);
    tcase_add_test(tc, token_lists_with_odd_spacing);
    tcase_add_test(tc, token_must_match_whole_item);

    tc = unit_tcase(s, "validate");
    tcase_add_test(tc, validate_standard_upgrade_is_101);
    tcase_add_test(tc, validate_connection_keep_alive_upgrade_is_101);
    tcase_add_test(tc, validate_connection_split_over_two_headers_is_101);
    tcase_add_test(tc, validate_odd_spacing_and_case_is_101);
    tcase_add_test(tc, validate_missing_upgrade_is_426);
    tcase_add_test(tc, validate_missing_connection_is_426);
    tcase_add_test(tc, validate_missing_key_is_426);
    tcase_add_test(tc, validate_missing_version_is_426);
    tcase_add_test(tc, validate_plain_get_is_426);
    tcase_add_test(tc, validate_head_and_post_are_426);
    tcase_add_test(tc, validate_key_of_wrong_length_is_400);
    tcase_add_test(tc, validate_key_bad_base64_is_400);
    tcase_add_test(tc, validate_key_without_padding_is_400);
    tcase_add_test(tc, validate_two_keys_is_400);
    tcase_add_test(tc, validate_version_12_is_400);
    tcase_add_test(tc, validate_http_1_0_is_400);
    tcase_add_test(tc, validate_subprotocol_selected_among_others);
    tcase_add_test(tc, validate_only_other_subprotocols_is_400);

    tc = unit_tcase(s, "format");
    tcase_add_test(tc, request_path_strips_query);
    tcase_add_test(tc, query_param_found_decoded_and_counted);
    tcase_add_test(tc, origin_normalised);
    tcase_add_test(tc, request_path_truncated_to_buffer);
    tcase_add_test(tc, request_path_of_split_url);
    tcase_add_test(tc, format_head_exact_bytes);
    tcase_add_test(tc, format_head_with_extra_headers);
    tcase_add_test(tc, format_head_too_small_buffer);
    tcase_add_test(tc, status_texts);
    tcase_add_test(tc, format_head_with_cache_control);
    return s;
}

int main(void)
{
    return unit_run(http_suite());
}
