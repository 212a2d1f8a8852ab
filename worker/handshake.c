#include "handshake.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "conn.h"
#include "endpoints.h"
#include "http.h"
#include "log.h"
#include "segment.h"
#include "session.h"

#define HANDSHAKE_WS_VERSION_HEADER "Sec-WebSocket-Version: 13\r\n"
/* Unsent bytes the kernel may hold for a WebSocket connection. */
#define HANDSHAKE_NOTSENT_LOWAT (128 * 1024)

static void handshake_respond(struct conn *c, int status, const char *content_type,
                              const char *extra, const char *body, size_t body_len, int head_only)
{
    char head[512];
    int n = http_format_head(head, sizeof(head), status, content_type, extra, body_len);
    if (n < 0)
        return;
    conn_send(c, head, (size_t)n, 0);
    if (!head_only && body_len)
        conn_send(c, body, body_len, 0);
}

/* Answer with a JSON error body saying what was wrong, log it, count it. */
static void handshake_refuse(struct conn *c, int status, enum segment_connection_error type,
                             const char *extra, const char *why)
{
    char body[384];
    int n = snprintf(body, sizeof(body), "{\"status\":%d,\"error\":\"%s\"}\n", status, why);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = 0;
    int head_only = c->req && c->req->method == HTTP_METHOD_HEAD_KIND;
    handshake_respond(c, status, "application/json", extra, body, (size_t)n, head_only);

    struct log_line l;
    conn_log_begin(&l, c, LOG_WARN, "error");
    log_str(&l, "error_type", segment_connection_error_name(type));
    log_int(&l, "status", status);
    log_str(&l, "message", why);
    log_end(&l);
    conn_refuse(c, type);
}

void handshake_timed_out(struct conn *c)
{
    handshake_refuse(c, 408, CONN_ERROR_TIMEOUT, NULL,
                     "request head not received within handshake_timeout");
}

static void handshake_log_connect(struct conn *c)
{
    struct log_line l;
    conn_log_begin(&l, c, LOG_INFO, "connect");
    if (c->subprotocol)
        log_str(&l, "subprotocol", "vitalstream.v1");
    log_end(&l);
}

/* max_send_buffer bounds what a slow subscriber may have waiting; without
 * this the kernel would quietly hold megabytes more (its send buffer
 * grows to tcp_wmem's maximum) before our own queue even starts. */
static void handshake_bound_kernel_queue(struct conn *c)
{
    uv_os_fd_t fd;
    int lowat = HANDSHAKE_NOTSENT_LOWAT;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat));
}

static void handshake_upgrade(struct conn *c, const char *rest, size_t rest_len)
{
    struct worker *w = c->w;
    struct http_ws_upgrade up;
    int status = http_ws_validate(c->req, &up);
    if (status != 101) {
        const char *extra = status == 426 ? "Upgrade: websocket\r\n" HANDSHAKE_WS_VERSION_HEADER
                                          : HANDSHAKE_WS_VERSION_HEADER;
        handshake_refuse(c, status, CONN_ERROR_HANDSHAKE, extra, up.why);
        return;
    }
    if (w->draining) {
        handshake_refuse(c, 503, CONN_ERROR_CAPACITY, "Retry-After: 1\r\n",
                         "this worker is shutting down; reconnect");
        return;
    }
    if (segment_connection_reserve(w->seg, w->slot, w->cfg.max_connections) < 0) {
        handshake_refuse(c, 503, CONN_ERROR_CAPACITY, "Retry-After: 1\r\n",
                         "max_connections reached on this replica; retry later or scale out");
        return;
    }
    c->counted = 1;
    c->subprotocol = up.subprotocol ? 1 : 0;
    handshake_bound_kernel_queue(c);

    char resp[256];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s"
                     "\r\n",
                     up.accept, c->subprotocol ? "Sec-WebSocket-Protocol: vitalstream.v1\r\n" : "");
    conn_send(c, resp, (size_t)n, 0);

    free(c->req);
    c->req = NULL;
    c->state = CONN_WS;
    c->upgraded_ns = c->last_rx_ns = c->last_ping_ns = clock_now_ns();
    segment_counter_add(&w->slot->counters.connections_total, 1);
    handshake_log_connect(c);
    /* The wslay context is created by the first bytes that need it. */
    if (rest_len)
        session_feed(c, (const uint8_t *)rest, rest_len);
}

void handshake_feed(struct conn *c, const char *data, size_t len)
{
    size_t consumed = 0;
    enum http_feed_result r = http_request_feed(c->req, data, len, &consumed);
    if (r == HTTP_FEED_MORE)
        return;
    if (r == HTTP_FEED_BAD) {
        handshake_refuse(c, 400, CONN_ERROR_HANDSHAKE, NULL, "malformed HTTP request");
        return;
    }
    if (r == HTTP_FEED_TOO_BIG) {
        handshake_refuse(c, 431, CONN_ERROR_HANDSHAKE, NULL,
                         "request head larger than 8 KiB or more than 64 headers");
        return;
    }

    char path[256];
    http_request_path(c->req, path, sizeof(path));
    enum http_method_kind method = c->req->method;
    int head_only = method == HTTP_METHOD_HEAD_KIND;

    if (method != HTTP_METHOD_OTHER && strcmp(path, "/ws") == 0) {
        handshake_upgrade(c, data + consumed, len - consumed);
        return;
    }

    struct endpoint_response resp;
    if (method != HTTP_METHOD_OTHER && endpoints_render(c->w->seg, path, c->w->draining != 0, &resp)) {
        if (resp.body.failed) {
            textbuf_free(&resp.body);
            handshake_respond(c, 500, "application/json", NULL, NULL, 0, head_only);
        } else {
            handshake_respond(c, resp.status, resp.content_type, resp.extra_headers,
                              resp.body.data, resp.body.len, head_only);
            textbuf_free(&resp.body);
        }
    } else {
        static const char body[] = "{\"status\":404,\"error\":\"not found: the gateway serves "
                                   "/ws, /health, /health/detailed and /metrics\"}\n";
        handshake_respond(c, 404, "application/json", NULL, body, sizeof(body) - 1, head_only);
    }
    c->close_after_flush = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
}
