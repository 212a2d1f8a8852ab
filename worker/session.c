#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "conn.h"
#include "deflate.h"
#include "framescan.h"
#include "log.h"
#include "rtt.h"
#include "segment.h"
#include "sendq.h"
#include "wsframe.h"

static ssize_t session_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                               void *user)
{
    struct worker *w = ((struct conn *)user)->w;
    if (w->rx_len == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = w->rx_len < len ? w->rx_len : len;
    memcpy(buf, w->rx, n);
    w->rx += n;
    w->rx_len -= n;
    return (ssize_t)n;
}

/* wslay's own output (pongs, close frames) goes to the send queue whole:
 * accepting every byte keeps wslay from ever stopping mid-frame, which is
 * what lets session_send_text put frames between its writes. */
static ssize_t session_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                               int flags, void *user)
{
    struct conn *c = user;
    struct sendq *q = conn_queue(c);
    if (!q || sendq_append(q, data, len, 0) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    conn_mark_dirty(c);
    return (ssize_t)len;
}

static int session_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    memset(buf, 0, len); /* servers never mask; wslay only asks clients */
    return 0;
}

static void session_frame_start_cb(wslay_event_context_ptr ctx,
                                   const struct wslay_event_on_frame_recv_start_arg *arg,
                                   void *user)
{
    struct conn *c = user;
    if (arg->opcode == WSLAY_BINARY_FRAME && c->state == CONN_WS) {
        /* Refuse at the first frame header: a binary message is never
         * buffered, whatever its size. */
        static const char why[] = "binary frames are not accepted; send JSON text";
        wslay_event_queue_close(ctx, 1003, (const uint8_t *)why, sizeof(why) - 1);
        wslay_event_shutdown_read(ctx);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE && arg->payload_length == 1 &&
               c->state == CONN_WS) {
        /* A close body is empty or starts with a 2-byte code (RFC 6455
         * 5.5.1); wslay would answer a 1-byte body with an empty close. */
        wslay_event_queue_close(ctx, 1002, NULL, 0);
        wslay_event_shutdown_read(ctx);
        c->reason = DISCONNECT_PROTOCOL_ERROR;
    }
}

static uint16_t session_inflate_code(int err)
{
    return err == -EMSGSIZE ? 1009 : err == -ENOMEM ? 1011 : 1007;
}

static const char *session_inflate_why(int err)
{
    return err == -EMSGSIZE ? "message larger than max_message_size once inflated"
           : err == -EILSEQ ? "inflated text message is not valid UTF-8"
           : err == -EBADMSG ? "compressed message is not valid deflate data"
                             : "out of memory inflating a message";
}

/* Count an inflated message (0), or log why it could not be and return
 * err (the caller closes with session_inflate_code). */
static int session_inflated(struct conn *c, int err, size_t len, size_t inflated)
{
    if (err == 0) {
        struct segment_counters *ctr = &c->w->slot->counters;
        segment_counter_add(&ctr->compression_bytes[COMPRESSION_IN][COMPRESSION_BEFORE], len);
        segment_counter_add(&ctr->compression_bytes[COMPRESSION_IN][COMPRESSION_AFTER], inflated);
        return 0;
    }
    struct log_line l;
    conn_log_begin(&l, c, err == -ENOMEM ? LOG_ERROR : LOG_WARN, "error");
    log_int(&l, "close_code", session_inflate_code(err));
    log_int(&l, "compressed_bytes", (int64_t)len);
    log_str(&l, "message", session_inflate_why(err));
    log_end(&l);
    return err;
}

static enum segment_disconnect_reason session_inflate_reason(int err)
{
    return err == -EMSGSIZE ? DISCONNECT_TOO_LARGE
           : err == -ENOMEM ? DISCONNECT_ERROR
                            : DISCONNECT_PROTOCOL_ERROR;
}

/* Close for a message that could not be inflated: from inside wslay's
 * callback through wslay (session_after_io finishes), otherwise directly. */
static void session_close_inflate(struct conn *c, int err)
{
    const char *why = session_inflate_why(err);
    uint16_t code = session_inflate_code(err);
    if (!c->in_message) {
        session_close(c, code, why, session_inflate_reason(err));
        return;
    }
    if (!c->live || wslay_event_get_close_sent(c->live->ws))
        return;
    wslay_event_queue_close(c->live->ws, code, (const uint8_t *)why, strlen(why));
    wslay_event_shutdown_read(c->live->ws);
}

/* ---- large messages: parsed off the loop ---- */

static void session_pump(struct conn *c);

/* A queued message's parse; a compressed one is inflated first (errors
 * are left in inflate_err for the loop to act on). */
static void session_inflate_and_parse(struct pending_msg *m)
{
    if (m->compressed) {
        uint8_t *plain = NULL;
        m->inflate_err = deflate_inflate_alone((const uint8_t *)m->data, m->len, m->max, &plain,
                                               &m->plain_len);
        m->plain = (char *)plain;
        if (m->inflate_err)
            return;
    }
    const struct app_ops *app = m->conn->app;
    m->parse_rc = m->plain ? app->parse(m->plain, m->plain_len, &m->req)
                           : app->parse(m->data, m->len, &m->req);
}

static void session_parse_work(uv_work_t *req)
{
    struct pending_msg *m = req->data;
    /* Parsing is bulk work: below the loop threads, which carry every
     * patient's stream (per-thread nice on Linux). */
    static __thread int lowered;
    if (!lowered) {
        lowered = 1;
        if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) < 0)
            lowered = 1; /* best effort */
    }
    session_inflate_and_parse(m);
}

static void session_parse_done(uv_work_t *req, int status)
{
    struct pending_msg *m = req->data;
    struct conn *c = m->conn;
    m->parsing = 0;
    c->parsing--;
    if (m->orphan) {
        request_free(&m->req);
        free(m->plain);
        free(m);
        if (c->zombie && c->parsing == 0)
            free(c);
        return;
    }
    m->parsed = 1;
    session_pump(c);
}

static void session_free_pending(struct pending_msg *m)
{
    if (m->parsing) {
        m->orphan = 1; /* the thread pool still has it */
        return;
    }
    request_free(&m->req);
    free(m->plain);
    free(m);
}

void session_drop_pending(struct conn *c)
{
    if (!c->live)
        return;
    struct pending_msg *m = c->live->pending_head;
    while (m) {
        struct pending_msg *next = m->next;
        session_free_pending(m);
        m = next;
    }
    c->live->pending_head = c->live->pending_tail = NULL;
}

/* A message small enough to parse on the loop, now. */
static void session_deliver(struct conn *c, const char *msg, size_t len)
{
    struct request req;
    int parsed = c->app->parse(msg, len, &req);
    c->app->process(c, msg, len, &req, parsed);
}

/* Handle the queue in order: a large message first goes to the thread
 * pool and the queue waits for it; when the queue is empty the
 * connection is read again. */
static void session_pump(struct conn *c)
{
    for (struct pending_msg *m; c->live && (m = c->live->pending_head) != NULL;) {
        if (c->closed || c->state != CONN_WS) {
            session_drop_pending(c);
            return;
        }
        if ((m->len >= SESSION_BIG_MESSAGE || m->compressed) && !m->parsed) {
            if (m->parsing)
                return;
            m->work.data = m;
            if (uv_queue_work(&c->w->loop, &m->work, session_parse_work, session_parse_done) == 0) {
                m->parsing = 1;
                c->parsing++;
                return;
            }
            /* no thread pool: parse here */
            session_inflate_and_parse(m);
            m->parsed = 1;
        }
        c->live->pending_head = m->next;
        if (!c->live->pending_head)
            c->live->pending_tail = NULL;
        c->msg_start_ns = m->received_ns;
        if (m->compressed && session_inflated(c, m->inflate_err, m->len, m->plain_len) < 0) {
            session_close_inflate(c, m->inflate_err);
            session_free_pending(m);
            session_drop_pending(c);
            return;
        }
        if (m->parsed) {
            c->app->process(c, m->plain ? m->plain : m->data, m->plain ? m->plain_len : m->len,
                            &m->req, m->parse_rc);
        } else {
            session_deliver(c, m->data, m->len);
        }
        free(m->plain);
        free(m);
    }
    /* Reading was stopped when the first message was queued. */
    if (!c->closed && c->state == CONN_WS)
        conn_resume_reading(c);
}

/* Queue a copy of a message behind the ones waiting; reading stops until
 * the queue is empty, so its length stays bounded (one large message and
 * what followed it in the same read). */
static int session_enqueue(struct conn *c, const uint8_t *msg, size_t len, uint64_t now,
                           int compressed)
{
    struct pending_msg *m = calloc(1, sizeof(*m) + len);
    if (!m)
        return -ENOMEM;
    m->conn = c;
    m->compressed = compressed ? 1 : 0;
    m->max = (size_t)c->w->cfg.max_message_size;
    m->received_ns = now;
    m->len = len;
    memcpy(m->data, msg, len);
    if (!c->live->pending_head)
        uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->live->pending_tail)
        c->live->pending_tail->next = m;
    else
        c->live->pending_head = m;
    c->live->pending_tail = m;
    return 0;
}

/* A compressed message (RSV1, permitted by wslay only once negotiated).
 * Inflated here up to SESSION_BIG_MESSAGE, like a plain message is parsed
 * here up to that size: returns 0 with *out set. Larger: 1, and the
 * compressed bytes go to the thread pool, which inflates them under
 * max_message_size (a few bytes must not buy milliseconds of the loop).
 * On failure the close is queued (wslay sends it after this callback) and
 * deflate_inflate's negative errno returned. */
static int session_inflate(struct conn *c, wslay_event_context_ptr ctx, const uint8_t *in,
                           size_t len, uint8_t **out, size_t *out_len)
{
    size_t max = (size_t)c->w->cfg.max_message_size;
    size_t here = max < SESSION_BIG_MESSAGE - 1 ? max : SESSION_BIG_MESSAGE - 1;
    int r = deflate_inflate(c->w, in, len, here, out, out_len);
    if (r == -EMSGSIZE && here < max)
        return 1;
    if (session_inflated(c, r, len, r == 0 ? *out_len : 0) == 0)
        return 0;
    const char *why = session_inflate_why(r);
    wslay_event_queue_close(ctx, session_inflate_code(r), (const uint8_t *)why, strlen(why));
    wslay_event_shutdown_read(ctx);
    return r;
}

static void session_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                           void *user)
{
    struct conn *c = user;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        if (c->state != CONN_WS)
            return;
        const uint8_t *msg = arg->msg;
        size_t len = arg->msg_length;
        uint8_t *inflated = NULL;
        int big = 0;
        if (arg->rsv & WSLAY_RSV1_BIT) {
            big = session_inflate(c, ctx, msg, len, &inflated, &len);
            if (big < 0)
                return;
        }
        if (inflated)
            msg = inflated;
        segment_counter_add(&c->w->slot->counters.messages_received, 1);
        uint64_t now = clock_now_ns();
        c->in_message = 1;
        if (big) {
            /* Still compressed: only the thread pool may inflate it. */
            if (session_enqueue(c, msg, len, now, 1) == 0) {
                session_pump(c);
            } else {
                session_inflated(c, -ENOMEM, len, 0);
                session_close_inflate(c, -ENOMEM);
            }
        } else if ((c->live->pending_head || len >= SESSION_BIG_MESSAGE) &&
                   session_enqueue(c, msg, len, now, 0) == 0) {
            session_pump(c);
        } else {
            c->msg_start_ns = now;
            session_deliver(c, (const char *)msg, len);
        }
        c->in_message = 0;
        free(inflated);
    } else if (arg->opcode == WSLAY_PONG) {
        /* last_rx_ns: when these bytes were read, before any work on them. */
        rtt_pong(c, arg->msg, arg->msg_length, c->last_rx_ns);
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        if (!c->close_wait && c->reason != DISCONNECT_PROTOCOL_ERROR)
            c->reason = DISCONNECT_CLIENT_CLOSE;
    }
}

static const struct wslay_event_callbacks session_callbacks = {
    .recv_callback = session_recv_cb,
    .send_callback = session_send_cb,
    .genmask_callback = session_genmask_cb,
    .on_frame_recv_start_callback = session_frame_start_cb,
    .on_msg_recv_callback = session_msg_cb,
};

int session_start(struct conn *c)
{
    struct session_live *live = calloc(1, sizeof(*live));
    if (!live || wslay_event_context_server_init(&live->ws, &session_callbacks, c) != 0) {
        free(live);
        log_msg(LOG_ERROR, "error", "out of memory creating a WebSocket session");
        return -ENOMEM;
    }
    c->live = live;
    if (c->pmd_wbits)
        wslay_event_config_set_allowed_rsv_bits(live->ws, WSLAY_RSV1_BIT);
    session_apply_limits(c);
    return 0;
}

void session_apply_limits(struct conn *c)
{
    if (c->live)
        wslay_event_config_set_max_recv_msg_length(c->live->ws,
                                                   (uint64_t)c->w->cfg.max_message_size);
}

/* An idle connection keeps no wslay context (about 9.2 KiB of heap) and
 * no struct session_live: once every byte fed to wslay belongs to a
 * finished frame, no message is half assembled or waiting, nothing is
 * queued by wslay and the rate bucket has refilled, none of it holds
 * state worth keeping, and the next bytes get fresh ones. */
void session_release_if_idle(struct conn *c)
{
    struct session_live *live = c->live;
    if (!live || c->closed || c->state != CONN_WS || c->close_after_flush)
        return;
    wslay_event_context_ptr ws = live->ws;
    const struct config *cfg = &c->w->cfg;
    if (live->pending_head || !framescan_idle(&live->scan) || wslay_event_want_write(ws) ||
        wslay_event_get_close_sent(ws) || wslay_event_get_close_received(ws) ||
        !wslay_event_get_read_enabled(ws) ||
        !ratelimit_at_rest(&live->rate, clock_now_ns(), (double)cfg->max_messages_per_second,
                           (double)cfg->message_burst))
        return;
    session_free(c);
}

void session_free(struct conn *c)
{
    if (c->live) {
        wslay_event_context_free(c->live->ws);
        free(c->live);
        c->live = NULL;
    }
}

static enum segment_disconnect_reason session_reason_for_code(uint16_t code)
{
    switch (code) {
    case 1002:
    case 1003:
    case 1007:
    case 1008:
        return DISCONNECT_PROTOCOL_ERROR;
    case 1009:
        return DISCONNECT_TOO_LARGE;
    default:
        return DISCONNECT_ERROR;
    }
}

/* Close on a frame-level protocol error that wslay reports only as a
 * callback failure (oversized or fragmented control frame, bad length
 * encoding): it has queued a close without a status code, so we skip its
 * queue and write the 1002 frame ourselves. */
static void session_protocol_error(struct conn *c)
{
    static const uint8_t frame[] = {0x88, 0x02, 0x03, 0xea};
    if (wslay_event_get_close_sent(c->live->ws)) {
        /* Our close frame is already out (e.g. a timeout close waiting for
         * the reply): a second close frame would break RFC 6455. Hang up. */
        conn_close_after_flush(c, c->close_wait ? c->reason : DISCONNECT_PROTOCOL_ERROR);
        return;
    }
    struct sendq *q = conn_queue(c);
    if (q)
        sendq_append(q, frame, sizeof(frame), 0);
    c->close_code = 1002;
    c->state = CONN_CLOSING;
    c->live->closing_since_ns = clock_now_ns();
    conn_close_after_flush(c, DISCONNECT_PROTOCOL_ERROR);
}

/* After wslay has read and written: decide whether the session is over. */
static void session_after_io(struct conn *c)
{
    wslay_event_context_ptr ws = c->live->ws;
    if (!wslay_event_get_close_sent(ws))
        return;
    if (wslay_event_get_close_received(ws)) {
        /* Both closes exchanged: the handshake is complete. Nothing may
         * follow our close frame (RFC 6455 §5.5.1): leaving CONN_WS stops
         * replies and stream fan-out to this connection. */
        if (c->state == CONN_WS) {
            c->state = CONN_CLOSING;
            c->live->closing_since_ns = clock_now_ns();
        }
        conn_close_after_flush(c, c->close_wait || c->reason == DISCONNECT_PROTOCOL_ERROR
                                      ? c->reason
                                      : DISCONNECT_CLIENT_CLOSE);
        return;
    }
    if (c->close_wait)
        return; /* our graceful close: wait for the client's reply */
    /* wslay closed on a protocol violation: do not wait for a reply. */
    if (c->state == CONN_WS) {
        c->state = CONN_CLOSING;
        c->live->closing_since_ns = clock_now_ns();
    }
    conn_close_after_flush(c, session_reason_for_code(wslay_event_get_status_code_sent(ws)));
}

void session_feed(struct conn *c, const uint8_t *data, size_t len)
{
    struct segment_counters *ctr = &c->w->slot->counters;
    c->w->rx = data;
    c->w->rx_len = len;
    c->last_rx_ns = clock_now_ns();
    segment_counter_add(&ctr->bytes_received, len);
    if (!c->live && session_start(c) < 0) {
        conn_close_with(c, DISCONNECT_ERROR, 1011);
        return;
    }
    if (c->state == CONN_CLOSING && c->close_wait) {
        /* After our close frame only the client's close matters; wslay
         * refuses codes it does not know (1012-1014), which would leave
         * us waiting, so its header is enough to finish. */
        framescan_feed(&c->live->scan, data, len, UINT64_MAX);
        if (c->live->scan.saw_close) {
            conn_close_after_flush(c, c->reason);
            return;
        }
    } else if (framescan_feed(&c->live->scan, data, len, (uint64_t)c->w->cfg.max_message_size) ==
               FRAMESCAN_TOO_BIG) {
        /* Refuse as soon as the length is known, not when wslay sees the
         * first payload byte (a client may never send one). */
        static const char why[] = "message larger than max_message_size";
        wslay_event_queue_close(c->live->ws, 1009, (const uint8_t *)why, sizeof(why) - 1);
        wslay_event_shutdown_read(c->live->ws);
        if (wslay_event_send(c->live->ws) != 0) {
            conn_close_with(c, DISCONNECT_TOO_LARGE, 1009);
            return;
        }
        session_after_io(c);
        return;
    }

    int r = wslay_event_recv(c->live->ws);
    if (c->closed)
        return;
    if (r == WSLAY_ERR_CALLBACK_FAILURE) {
        session_protocol_error(c);
        return;
    }
    if (r != 0) {
        log_msg(LOG_ERROR, "error", "wslay failed reading a frame (%d); closing with 1011", r);
        c->close_code = 1011;
        conn_close_with(c, DISCONNECT_ERROR, 1011);
        return;
    }
    if (wslay_event_send(c->live->ws) != 0) {
        conn_close_with(c, DISCONNECT_ERROR, 1011);
        return;
    }
    session_after_io(c);
}

int session_send_text(struct conn *c, const char *text, size_t len, uint64_t origin_ns)
{
    if (c->state != CONN_WS || c->closed)
        return -ENOTCONN;
    struct sendq *q = conn_queue(c);
    if (!q)
        return -ENOMEM;
    uint8_t hdr[WSFRAME_HEADER_MAX];
    size_t hlen = wsframe_put_header(hdr, WSFRAME_TEXT, len);
    struct sendq_chunk *chunk = sendq_chunk_new(hlen + len, origin_ns);
    if (!chunk)
        return -ENOMEM;
    memcpy(chunk->data, hdr, hlen);
    memcpy(chunk->data + hlen, text, len);
    /* Text built here answers a request (stream messages are shared frames,
     * sendq_push_frame): its time counts as request duration, not latency. */
    chunk->request = origin_ns ? (uint16_t)(c->msg_type + 1) : 0;
    sendq_push(q, chunk);
    conn_mark_dirty(c);
    return 0;
}

void session_close(struct conn *c, uint16_t code, const char *text,
                   enum segment_disconnect_reason reason)
{
    if (c->state != CONN_WS || c->closed)
        return;
    if (!c->live && session_start(c) < 0) {
        conn_close_with(c, reason, 1006);
        return;
    }
    wslay_event_queue_close(c->live->ws, code, (const uint8_t *)text, strlen(text));
    c->reason = reason;
    c->close_wait = 1;
    c->state = CONN_CLOSING;
    c->live->closing_since_ns = clock_now_ns();
    if (wslay_event_send(c->live->ws) != 0)
        conn_close_with(c, reason, code);
}

void session_reconnect(struct conn *c, uint16_t code, uint32_t after_ms,
                       enum segment_disconnect_reason reason)
{
    const char *why = reason == DISCONNECT_RELOAD ? "reload" : "shutdown";
    char msg[128];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"reconnect\",\"after_ms\":%u,\"reason\":\"%s\"}",
                     after_ms, why);
    session_send_text(c, msg, (size_t)n, 0);
    session_close(c, code, why, reason);
}

void session_close_slow_consumer(struct conn *c, const char *why)
{
    struct log_line l;
    conn_log_begin(&l, c, LOG_WARN, "error");
    log_int(&l, "unsent_bytes", c->out ? (int64_t)c->out->bytes : 0);
    log_str(&l, "slow_consumer", why);
    log_str(&l, "message", "client is not reading fast enough (max_send_buffer, send_timeout); "
                           "closing 1013, it should reconnect and resume with since");
    log_end(&l);
    if (c->out)
        sendq_drop_unsent(c->out);
    session_close(c, 1013, "slow_consumer", DISCONNECT_SLOW_CONSUMER);
}

void session_close_policy(struct conn *c, const char *why)
{
    if (c->state != CONN_WS || c->closed)
        return;
    if (!c->in_message) {
        /* A message parsed off the loop: outside wslay, a plain close. */
        session_close(c, 1008, why, DISCONNECT_PROTOCOL_ERROR);
        return;
    }
    if (!c->live || wslay_event_get_close_sent(c->live->ws))
        return;
    /* Like a protocol violation: wslay sends the close after this
     * callback, and session_after_io() closes without waiting. */
    wslay_event_queue_close(c->live->ws, 1008, (const uint8_t *)why, strlen(why));
    wslay_event_shutdown_read(c->live->ws);
}

void session_sweep(struct conn *c, uint64_t now_ns, int64_t now_ms)
{
    const struct config *cfg = &c->w->cfg;
    uint64_t idle_ns = (uint64_t)cfg->connection_timeout * 1000000000ull;
    uint64_t ping_ns = (uint64_t)cfg->heartbeat_interval * 1000000000ull;
    if (c->grant && auth_grant_expired(c->grant, now_ms)) {
        /* No fresh token came in time ({"type":"auth"}): the session's
         * authorisation is over. A policy close. */
        c->close_detail = "token expired";
        session_close(c, 1008, "token expired", DISCONNECT_PROTOCOL_ERROR);
    } else if (now_ns - c->last_rx_ns > idle_ns) {
        session_close(c, 1001, "timeout", DISCONNECT_TIMEOUT);
    } else if (now_ns - c->last_ping_ns >= ping_ns) {
        session_ping(c, now_ns);
    }
}

void session_ping(struct conn *c, uint64_t now_ns)
{
    uint8_t ping[2 + RTT_PAYLOAD_LEN] = {0x89, RTT_PAYLOAD_LEN}; /* FIN + ping, unmasked */
    rtt_ping_payload(c, now_ns, ping + 2);
    c->last_ping_ns = now_ns;
    /* Written directly: a heartbeat must not bring back the wslay context
     * of an idle connection, and wslay never stops mid-frame. */
    struct sendq *q = conn_queue(c);
    if (q)
        sendq_append(q, ping, sizeof(ping), 0);
    conn_mark_dirty(c);
}
