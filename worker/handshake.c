#include "handshake.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "clock.h"
#include "conn.h"
#include "endpoints.h"
#include "http.h"
#include "hub.h"
#include "iptable.h"
#include "log.h"
#include "pmdeflate.h"
#include "router.h"
#include "segment.h"
#include "session.h"
#include "view.h"

#define HANDSHAKE_WS_VERSION_HEADER "Sec-WebSocket-Version: 13\r\n"

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
    if (c->pmd_wbits)
        log_int(&l, "deflate_window_bits", c->pmd_wbits);
    log_end(&l);
}

/* allowed_origins: a browser (it sends Origin) from a page not listed must
 * not open a session with the user's credentials (cross-site WebSocket
 * hijacking). Clients that send no Origin are not browsers: allowed. */
static int handshake_origin_allowed(const struct conn *c)
{
    const struct config_list *allowed = &c->w->cfg.allowed_origins;
    if (allowed->count == 0)
        return 1;
    size_t len = 0;
    const char *origin = http_request_header(c->req, "Origin", &len);
    if (!origin)
        return 1;
    char want[CONFIG_LONGSTR_MAX], have[CONFIG_LONGSTR_MAX];
    if (http_request_header_count(c->req, "Origin") != 1 ||
        http_origin_normalize(origin, len, have, sizeof(have)) < 0)
        return 0;
    for (uint32_t i = 0; i < allowed->count; i++) {
        const char *item = allowed->items[i];
        if (http_origin_normalize(item, strlen(item), want, sizeof(want)) >= 0 &&
            strcmp(want, have) == 0)
            return 1;
    }
    return 0;
}

/* Where the token is: Authorization: Bearer, or access_token in the query
 * (browsers cannot set headers on a WebSocket). One place only (RFC 6750
 * 2: a client must not use more than one method). Returns 1 with the token
 * in buf, 0 when there is none (or it is empty), -EINVAL with *why set
 * when the request is ambiguous or malformed, -E2BIG with *why set when
 * the token does not fit in cap. */
static int handshake_find_token(const struct conn *c, char *buf, size_t cap, size_t *len,
                                const char **why)
{
    size_t hlen = 0;
    const char *h = http_request_header(c->req, "Authorization", &hlen);
    unsigned headers = http_request_header_count(c->req, "Authorization");
    char query[AUTH_TOKEN_MAX + 1];
    int nquery = http_request_query_param(c->req, "access_token", query, sizeof(query));
    if (headers > 1 || nquery > 1) {
        *why = "more than one token: send exactly one Authorization header or access_token";
        return -EINVAL;
    }
    if (h && nquery != 0) {
        *why = "token given both in Authorization and in access_token; send one";
        return -EINVAL;
    }
    if (h) {
        /* The scheme is case-insensitive (RFC 7235 2.1); trailing
         * whitespace is already gone, so "Bearer " arrives as "Bearer". */
        if (hlen < 6 || strncasecmp(h, "Bearer", 6) != 0 ||
            (hlen > 6 && h[6] != ' ' && h[6] != '\t')) {
            *why = "Authorization must use the Bearer scheme: Authorization: Bearer <token>";
            return -EINVAL;
        }
        h += 6;
        hlen -= 6;
        while (hlen && (*h == ' ' || *h == '\t')) {
            h++;
            hlen--;
        }
        if (hlen >= cap) {
            *why = auth_status_text(AUTH_MALFORMED);
            return -E2BIG;
        }
        memcpy(buf, h, hlen);
        buf[hlen] = '\0';
        *len = hlen;
        return hlen > 0;
    }
    if (nquery < 0) {
        *why = "access_token is too long or badly percent-encoded";
        return -EINVAL;
    }
    if (nquery == 0)
        return 0;
    size_t qlen = strlen(query);
    if (qlen >= cap) {
        *why = auth_status_text(AUTH_MALFORMED);
        return -E2BIG;
    }
    memcpy(buf, query, qlen + 1);
    *len = qlen;
    return qlen > 0;
}

/* auth_mode jwt: a valid token or 401 before anything is upgraded.
 * Returns 0 with *grant set, or -EACCES having answered 401. */
static int handshake_authenticate(struct conn *c, struct auth_grant **grant)
{
    struct worker *w = c->w;
    char token[AUTH_TOKEN_MAX + 1];
    size_t len = 0;
    const char *why = NULL;
    int found = handshake_find_token(c, token, sizeof(token), &len, &why);
    enum auth_status st = AUTH_MISSING;
    if (found > 0) {
        struct auth_policy policy = {
            .algorithms = w->cfg.jwt_algorithm_mask,
            .key = &w->auth_key,
            .issuer = w->cfg.jwt_issuer,
            .audience = w->cfg.jwt_audience,
        };
        st = auth_check_token(&policy, token, len, clock_wall_ms(), grant);
        why = auth_status_text(st);
    } else if (found == 0) {
        why = auth_status_text(AUTH_MISSING);
    }
    memset(token, 0, sizeof(token));
    if (found > 0 && st == AUTH_OK)
        return 0;
    const char *challenge = found < 0 ? "WWW-Authenticate: Bearer realm=\"wsgate\", error=\"invalid_request\"\r\n"
                            : found == 0 ? "WWW-Authenticate: Bearer realm=\"wsgate\"\r\n"
                                         : "WWW-Authenticate: Bearer realm=\"wsgate\", error=\"invalid_token\"\r\n";
    handshake_refuse(c, 401, CONN_ERROR_AUTH, challenge, why);
    return -EACCES;
}

/* permessage-deflate: with compression on, accept the first acceptable
 * offer (see pmdeflate.h) and write the response line into ext. Returns
 * 0, or -EINVAL having refused a malformed header with 400. */
static int handshake_extensions(struct conn *c, char *ext, size_t cap)
{
    ext[0] = '\0';
    c->pmd_wbits = 0;
    c->pmd_takeover = 0;
    if (!c->w->cfg.compression)
        return 0;
    char value[HTTP_HEAD_MAX];
    int n = http_request_header_join(c->req, "Sec-WebSocket-Extensions", value, sizeof(value));
    if (n <= 0)
        return 0;
    struct pmdeflate_agreement a;
    const char *why = NULL;
    int r = pmdeflate_negotiate(value, (size_t)n, &a, &why);
    if (r < 0) {
        handshake_refuse(c, 400, CONN_ERROR_HANDSHAKE, HANDSHAKE_WS_VERSION_HEADER, why);
        return -EINVAL;
    }
    if (r > 0 && pmdeflate_response(&a, ext, cap) > 0) {
        c->pmd_wbits = a.server_wbits;
        c->pmd_takeover = a.server_takeover;
    }
    return 0;
}

/* The request head is done with: a copy of its own is freed, the
 * worker's scratch request just let go. */
static void handshake_drop_request(struct conn *c)
{
    if (c->req != &c->w->http_scratch)
        free(c->req);
    c->req = NULL;
}

static size_t handshake_put(char *out, size_t at, const char *s, size_t len)
{
    memcpy(out + at, s, len);
    return at + len;
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
    char ext[PMDEFLATE_RESPONSE_MAX];
    if (handshake_extensions(c, ext, sizeof(ext)) < 0)
        return;
    if (w->draining) {
        handshake_refuse(c, 503, CONN_ERROR_CAPACITY, "Retry-After: 1\r\n",
                         "this worker is shutting down; reconnect");
        return;
    }
    if (!handshake_origin_allowed(c)) {
        handshake_refuse(c, 403, CONN_ERROR_ORIGIN, NULL,
                         "Origin is not in allowed_origins: this page may not open the gateway");
        return;
    }
    struct auth_grant *grant = NULL;
    if (w->cfg.auth_mode == CONFIG_AUTH_JWT && handshake_authenticate(c, &grant) < 0)
        return;
    struct iptable *ips = segment_ips(w->seg);
    if (ips) {
        int r = iptable_acquire(ips, c->ip, w->slot_index, (uint32_t)w->cfg.max_connections_per_ip);
        if (r == -EBUSY) {
            auth_grant_free(grant);
            handshake_refuse(c, 429, CONN_ERROR_CAPACITY, "Retry-After: 1\r\n",
                             "max_connections_per_ip reached for this client address; close "
                             "another connection first");
            return;
        }
        c->ip_counted = r == 0;
    }
    if (segment_connection_reserve(w->seg, w->slot, w->cfg.max_connections) < 0) {
        auth_grant_free(grant);
        if (c->ip_counted) {
            iptable_release(ips, c->ip, w->slot_index);
            c->ip_counted = 0;
        }
        handshake_refuse(c, 503, CONN_ERROR_CAPACITY, "Retry-After: 1\r\n",
                         "max_connections reached on this replica; retry later or scale out");
        return;
    }
    c->counted = 1;
    c->grant = grant;
    c->subprotocol = up.subprotocol ? 1 : 0;

    /* Pieces of known length, copied: no format string to interpret on
     * every handshake. Fits: the fixed lines, a 28-character key and
     * an extension line of at most PMDEFLATE_RESPONSE_MAX. */
    static const char head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: ";
    static const char proto[] = "Sec-WebSocket-Protocol: vitalstream.v1\r\n";
    char resp[256 + PMDEFLATE_RESPONSE_MAX];
    size_t n = 0;
    n = handshake_put(resp, n, head, sizeof(head) - 1);
    n = handshake_put(resp, n, up.accept, strlen(up.accept));
    n = handshake_put(resp, n, "\r\n", 2);
    if (c->subprotocol)
        n = handshake_put(resp, n, proto, sizeof(proto) - 1);
    n = handshake_put(resp, n, ext, strlen(ext));
    n = handshake_put(resp, n, "\r\n", 2);
    conn_send_now(c, resp, n);

    handshake_drop_request(c);
    c->state = CONN_WS;
    c->handlers = &handshake_ws_handlers;
    c->app = &router_app;
    c->upgraded_ns = c->last_rx_ns = c->last_ping_ns = clock_now_ns();
    segment_counter_add(&w->slot->counters.connections_total, 1);
    handshake_log_connect(c);
    /* The wslay context is created by the first bytes that need it. */
    if (rest_len)
        session_feed(c, (const uint8_t *)rest, rest_len);
}

/* The page's files live in the binary: the body is sent from there (the
 * send queue copies it), never for HEAD or 304. The head always fits: its
 * other lines are short constants. */
static void handshake_send_view(struct conn *c, const struct view_response *v, int head_only)
{
    char head[VIEW_HEADERS_MAX + 512];
    int n = http_format_head_cache(head, sizeof(head), v->status, v->content_type,
                                   v->cache_control, v->headers, v->body_len);
    if (n < 0)
        return;
    conn_send(c, head, (size_t)n, 0);
    if (!head_only && v->status == 200 && v->body_len)
        conn_send(c, v->body, v->body_len, 0);
}

/* Parse what arrived and answer once the head is complete; returns
 * HTTP_FEED_MORE while it is not. */
static enum http_feed_result handshake_read_head(struct conn *c, const char *data, size_t len)
{
    size_t consumed = 0;
    enum http_feed_result r = http_request_feed(c->req, data, len, &consumed);
    if (r == HTTP_FEED_MORE)
        return r;
    if (r == HTTP_FEED_BAD) {
        handshake_refuse(c, 400, CONN_ERROR_HANDSHAKE, NULL,
                         c->req->no_version
                             ? "request line without HTTP version: send e.g. GET /health HTTP/1.1"
                             : "malformed HTTP request");
        return r;
    }
    if (r == HTTP_FEED_VERSION) {
        handshake_refuse(c, 505, CONN_ERROR_HANDSHAKE, NULL,
                         "HTTP version not supported: send HTTP/1.1 (or HTTP/1.0)");
        return r;
    }
    if (r == HTTP_FEED_TOO_BIG) {
        handshake_refuse(c, 431, CONN_ERROR_HANDSHAKE, NULL,
                         "request head larger than 8 KiB or more than 64 headers");
        return r;
    }

    char path[256];
    http_request_path(c->req, path, sizeof(path));
    enum http_method_kind method = c->req->method;
    int head_only = method == HTTP_METHOD_HEAD_KIND;

    if (method != HTTP_METHOD_OTHER && strcmp(path, "/ws") == 0) {
        handshake_upgrade(c, data + consumed, len - consumed);
        return r;
    }

    struct view_response view;
    if (method != HTTP_METHOD_OTHER && view_render(c->req, path, &c->w->cfg, &view)) {
        handshake_send_view(c, &view, head_only);
        c->close_after_flush = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
        return r;
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
                                   "/ws, /health, /health/detailed, /metrics and /view\"}\n";
        handshake_respond(c, 404, "application/json", NULL, body, sizeof(body) - 1, head_only);
    }
    c->close_after_flush = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    return r;
}

/* Most request heads arrive in one read: they are parsed in the worker's
 * one scratch request and never copied. Only a head split across reads
 * gets a request of its own (8.8 KiB) until it is complete. */
void handshake_feed(struct conn *c, const char *data, size_t len)
{
    if (c->close_after_flush)
        return; /* answered: what follows the head is not read */
    struct http_request *scratch = &c->w->http_scratch;
    if (!c->req) {
        http_request_init(scratch);
        c->req = scratch;
    }
    enum http_feed_result r = handshake_read_head(c, data, len);
    if (c->req != scratch)
        return;
    if (r != HTTP_FEED_MORE || c->closed) {
        c->req = NULL;
        return;
    }
    struct http_request *own = malloc(sizeof(*own));
    if (!own) {
        handshake_refuse(c, 503, CONN_ERROR_CAPACITY, "Retry-After: 1\r\n",
                         "out of memory reading the request head; retry");
        c->req = NULL;
        return;
    }
    memcpy(own, scratch, sizeof(*own));
    c->req = own;
}

static void handshake_ws_feed(struct conn *c, const char *data, size_t len)
{
    session_feed(c, (const uint8_t *)data, len);
}

/* The session holds its wslay context and the messages waiting their turn. */
static void handshake_ws_free(struct conn *c)
{
    session_drop_pending(c);
    session_free(c);
}

const struct conn_handlers handshake_http_handlers = {
    .feed = handshake_feed,
    .timed_out = handshake_timed_out,
};

/* The connection's subscriptions and pending publishes are the hub's: let
 * go of (closing) as soon as the connection goes, so nothing more is queued
 * to it. */
const struct conn_handlers handshake_ws_handlers = {
    .feed = handshake_ws_feed,
    .sweep = session_sweep,
    .slow = session_close_slow_consumer,
    .quiet = session_release_if_idle,
    .closing = hub_conn_closed,
    .free = handshake_ws_free,
};
