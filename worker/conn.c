#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "http.h"
#include "iptable.h"
#include "log.h"
#include "segment.h"
#include "sendq.h"
#include "tcpinfo.h"
#include "tlsconn.h"

/* How long we wait for the client's close frame after sending ours. */
#define CONN_CLOSE_WAIT_NS (2ull * 1000000000ull)
/* A connection silent this long gives its wslay context back. */
#define CONN_QUIET_NS (1ull * 1000000000ull)
/* Unsent bytes beyond this many max_send_buffers close a connection at once. */
#define CONN_SEND_CEILING 4u
/* Unsent bytes the kernel may hold for a connection: max_send_buffer
 * bounds what a slow subscriber may have waiting; without this the kernel
 * would quietly hold megabytes more (its send buffer grows to tcp_wmem's
 * maximum) before our own queue even starts. */
#define CONN_NOTSENT_LOWAT (128 * 1024)

void conn_remote_string(const struct conn *c, char *out, size_t len)
{
    iptable_format(c->ip, c->port, out, len);
}

void conn_id_string(const struct conn *c, char *out, size_t len)
{
    snprintf(out, len, "%d-%llu", c->w->slot_index, (unsigned long long)c->id);
}

void conn_log_begin(struct log_line *l, const struct conn *c, enum log_level level,
                    const char *event)
{
    log_begin(l, level, event);
    if (!l->enabled)
        return; /* a line below log_level costs no formatting */
    char id[32], remote[CONN_REMOTE_MAX];
    conn_id_string(c, id, sizeof(id));
    conn_remote_string(c, remote, sizeof(remote));
    log_str(l, "conn", id);
    log_str(l, "remote", remote);
}

static void conn_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    /* Every read is consumed before the callback returns (wslay copies
     * what it keeps), so one buffer per worker serves every connection
     * and an idle connection owns no read buffer. */
    struct conn *c = handle->data;
    buf->base = c->w->readbuf;
    buf->len = sizeof(c->w->readbuf);
}

static void conn_link(struct worker *w, struct conn *c)
{
    c->next = w->conns;
    c->prev = NULL;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
}

static void conn_unlink(struct worker *w, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->dirty) {
        struct conn **pp = &w->dirty;
        while (*pp && *pp != c)
            pp = &(*pp)->dirty_next;
        if (*pp)
            *pp = c->dirty_next;
    }
}

static void conn_on_close(uv_handle_t *handle)
{
    struct conn *c = handle->data;
    conn_unlink(c->w, c);
    if (c->out) {
        sendq_free(c->out);
        free(c->out);
        c->out = NULL;
    }
    tlsconn_free(c);
    if (c->handlers->free)
        c->handlers->free(c);
    auth_grant_free(c->grant);
    free(c->req);
    c->req = NULL;
    c->grant = NULL;
    if (c->parsing) {
        c->zombie = 1; /* the last parse to come back frees it */
        return;
    }
    free(c);
}

void conn_mark_dirty(struct conn *c)
{
    if (c->dirty || c->closed)
        return;
    c->dirty = 1;
    c->dirty_next = c->w->dirty;
    c->w->dirty = c;
}

struct sendq *conn_queue(struct conn *c)
{
    if (!c->out) {
        c->out = malloc(sizeof(*c->out));
        if (!c->out)
            return NULL;
        sendq_init(c->out, conn_write_done);
    }
    return c->out;
}

int conn_push_frame(struct conn *c, struct sendq_frame *f, uint64_t origin_ns)
{
    struct sendq *q = conn_queue(c);
    return q ? sendq_push_frame(q, f, origin_ns) : -ENOMEM;
}

int conn_send_now(struct conn *c, const void *data, size_t len)
{
    if (c->closed)
        return -ENOTCONN;
    if (!c->tls && (!c->out || sendq_empty(c->out))) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r > 0) {
            data = (const char *)data + r;
            len -= (size_t)r;
        }
        if (len == 0)
            return 0;
        /* The kernel took part or none (or failed: the flush will say). */
    }
    return conn_send(c, data, len, 0);
}

/* A queue with nothing in it and nothing in flight holds no state worth
 * keeping; the next bytes queued make a new one. */
static void conn_release_queue_if_idle(struct conn *c)
{
    struct sendq *q = c->out;
    if (!q || !sendq_empty(q) || q->inflight || q->sealed)
        return;
    free(q);
    c->out = NULL;
}

int conn_send(struct conn *c, const void *data, size_t len, uint64_t origin_ns)
{
    if (c->closed)
        return -ENOTCONN;
    struct sendq *q = conn_queue(c);
    if (!q)
        return -ENOMEM;
    int r = sendq_append(q, data, len, origin_ns);
    if (r < 0)
        return r;
    conn_mark_dirty(c);
    return 0;
}

static void conn_log_disconnect(struct conn *c, enum segment_disconnect_reason reason, int code)
{
    struct log_line l;
    conn_log_begin(&l, c, LOG_INFO, "disconnect");
    log_str(&l, "reason", segment_disconnect_reason_name(reason));
    log_int(&l, "code", code);
    if (c->close_detail)
        log_str(&l, "detail", c->close_detail);
    log_double(&l, "duration_s", (double)(clock_now_ns() - c->upgraded_ns) / 1e9);
    log_end(&l);
}

void conn_close_with(struct conn *c, enum segment_disconnect_reason reason, int code)
{
    if (c->closed)
        return;
    c->closed = 1;
    if (c->handlers->closing)
        c->handlers->closing(c);
    if (c->counted) {
        struct worker *w = c->w;
        segment_counter_add(&w->slot->counters.disconnections[reason], 1);
        segment_connection_release(w->seg, w->slot);
        c->counted = 0;
        conn_log_disconnect(c, reason, code);
    }
    if (c->ip_counted) {
        iptable_release(segment_ips(c->w->seg), c->ip, c->w->slot_index);
        c->ip_counted = 0;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

void conn_refuse(struct conn *c, enum segment_connection_error error_type)
{
    if (!c->refused)
        segment_counter_add(&c->w->slot->counters.connection_errors[error_type], 1);
    c->refused = 1;
    c->close_after_flush = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    conn_mark_dirty(c);
}

void conn_close_after_flush(struct conn *c, enum segment_disconnect_reason reason)
{
    c->reason = reason;
    c->close_after_flush = 1;
    conn_mark_dirty(c);
}

/* The close code a WebSocket connection ended with, for the log. */
static int conn_close_code(const struct conn *c)
{
    if (c->close_code)
        return c->close_code;
    if (c->state == CONN_HTTP)
        return 0;
    if (!c->live)
        return 1006;
    if (wslay_event_get_close_sent(c->live->ws))
        return wslay_event_get_status_code_sent(c->live->ws);
    return 1006;
}

/* Bytes still to go: queued plaintext, or (TLS) ciphertext and goodbyes. */
static int conn_output_left(const struct conn *c)
{
    return (c->out && !sendq_empty(c->out)) || (c->tls && tlsconn_output_left(c));
}

static void conn_after_write(struct conn *c)
{
    if (c->closed)
        return;
    if (conn_output_left(c))
        conn_mark_dirty(c);
    else if (c->close_after_flush)
        conn_close_with(c, c->reason, conn_close_code(c));
}

static void conn_io_failed(struct conn *c, int status)
{
    if (c->state == CONN_HTTP) {
        /* A refused connection whose client left before reading the answer
         * already has its one error counted. A socket that fails while we
         * write our TLS handshake flight is a failed handshake. */
        enum segment_connection_error type =
            c->tls && !tlsconn_established(c) ? CONN_ERROR_TLS : CONN_ERROR_IO;
        if (!c->refused)
            segment_counter_add(&c->w->slot->counters.connection_errors[type], 1);
        c->refused = 1;
        conn_close_with(c, DISCONNECT_ERROR, 0);
        return;
    }
    /* A reset after our close frame is the client finishing the close its
     * own way, not an error. */
    enum segment_disconnect_reason reason = c->state == CONN_CLOSING ? c->reason : DISCONNECT_ERROR;
    if (reason == DISCONNECT_ERROR && status != UV_ECONNRESET && status != UV_EPIPE) {
        struct log_line l;
        conn_log_begin(&l, c, LOG_WARN, "error");
        log_str(&l, "error", uv_strerror(status));
        log_str(&l, "message", "socket error; the client will have to reconnect");
        log_end(&l);
    }
    conn_close_with(c, reason, conn_close_code(c));
}

void conn_write_done(struct conn *c, int status)
{
    if (status < 0)
        conn_io_failed(c, status);
    else
        conn_after_write(c);
}

void conn_read_failed(struct conn *c, int status)
{
    if (c->state == CONN_HTTP) {
        /* EOF before a complete head is a client that changed its
         * mind (or a TCP port probe), not an error worth an alert. */
        if (status != UV_EOF && !c->refused)
            segment_counter_add(&c->w->slot->counters.connection_errors[CONN_ERROR_IO], 1);
        c->refused = 1;
        conn_close_with(c, DISCONNECT_ERROR, 0);
    } else if (status == UV_EOF) {
        /* A client that closes TCP without a close frame still chose
         * to leave; after our own close frame it is the normal end. */
        conn_close_with(c, c->state == CONN_CLOSING ? c->reason : DISCONNECT_CLIENT_CLOSE,
                        conn_close_code(c));
    } else {
        conn_io_failed(c, status);
    }
}

void conn_deliver(struct conn *c, const char *data, size_t len)
{
    c->handlers->feed(c, data, len);
}

static void conn_on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    if (nread == 0 || c->closed)
        return;
    if (nread < 0) {
        if (c->tls && !tlsconn_established(c))
            tlsconn_read_failed(c, (int)nread);
        else
            conn_read_failed(c, (int)nread);
        return;
    }
    if (c->tls)
        tlsconn_feed(c, buf->base, (size_t)nread);
    else
        conn_deliver(c, buf->base, (size_t)nread);
}

/* The peer's address, kept as 18 bytes: the text form is made only for
 * the rare log line that shows it. */
static void conn_read_peer(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        c->ip[10] = c->ip[11] = 0xff;
        memcpy(c->ip + 12, &in->sin_addr, 4);
        c->port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        memcpy(c->ip, &in6->sin6_addr, 16);
        c->port = ntohs(in6->sin6_port);
    }
}

/* TCP_NODELAY, and TCP_NOTSENT_LOWAT to bound the kernel's share of a
 * slow reader's backlog. 0 or a negative errno. */
static int conn_set_socket_options(uv_os_fd_t fd)
{
    int one = 1, lowat = CONN_NOTSENT_LOWAT;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)) < 0)
        return -errno;
    return 0;
}

void conn_listener_setup(struct worker *w)
{
    uv_os_fd_t fd;
    w->sockopts_inherited = uv_fileno((uv_handle_t *)&w->listener, &fd) == 0 &&
                            conn_set_socket_options(fd) == 0;
}

void conn_resume_reading(struct conn *c)
{
    if (!c->closed && !c->close_after_flush)
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
}

static const struct tlsconn_ops conn_tls_ops = {
    .deliver = conn_deliver,
    .read_failed = conn_read_failed,
    .refuse = conn_refuse,
    .close = conn_close_with,
    .mark_dirty = conn_mark_dirty,
    .log_begin = conn_log_begin,
    .write_done = conn_write_done,
};

void conn_accept(struct worker *w, const struct conn_handlers *handlers)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        log_msg(LOG_ERROR, "error", "out of memory accepting a connection; it stays queued");
        return;
    }
    c->w = w;
    c->handlers = handlers;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    conn_link(w, c);
    if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&c->tcp) < 0) {
        c->closed = 1;
        uv_close((uv_handle_t *)&c->tcp, conn_on_close);
        return;
    }
    c->id = ++w->next_conn_id;
    c->state = CONN_HTTP;
    c->accepted_ns = clock_now_ns();
    uv_os_fd_t fd;
    if (!w->sockopts_inherited && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        conn_set_socket_options(fd);
    conn_read_peer(c);
    if (w->tls_ctx && tlsconn_start(c, &conn_tls_ops) < 0) {
        log_msg(LOG_ERROR, "error", "out of memory starting TLS on a connection; closing it");
        conn_refuse(c, CONN_ERROR_TLS);
        conn_close_with(c, DISCONNECT_ERROR, 0);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read);
}

/* Judge a connection by the progress of its queue, not by the size of
 * one burst: slow when the unsent bytes stay above max_send_buffer for
 * send_timeout, or do not move at all for send_timeout while some wait;
 * past CONN_SEND_CEILING x max_send_buffer at once, since that much held
 * for one client is a risk to every other. Returns 1 when closed. */
static int conn_check_slow(struct worker *w, struct conn *c, uint64_t now_ns)
{
    struct sendq *q = c->out;
    if (c->state != CONN_WS || !q)
        return 0;
    if (q->bytes == 0) {
        q->over_ns = 0;
        return 0;
    }
    uint64_t limit = (uint64_t)w->cfg.max_send_buffer;
    uint64_t timeout = (uint64_t)w->cfg.send_timeout * 1000000000ull;
    if (!q->moved_ns)
        q->moved_ns = now_ns;
    const char *why = NULL;
    if (q->bytes > limit * CONN_SEND_CEILING) {
        why = "unsent bytes above the ceiling (4 x max_send_buffer)";
    } else if (q->bytes > limit) {
        if (!q->over_ns)
            q->over_ns = now_ns;
        else if (now_ns - q->over_ns > timeout)
            why = "unsent bytes above max_send_buffer for send_timeout";
    } else {
        q->over_ns = 0;
    }
    if (!why && now_ns > q->moved_ns && now_ns - q->moved_ns > timeout / 2 && q->inflight) {
        /* A pending uv_write reports only when all of it has gone: a client
         * reading slowly through a large batch is still making progress,
         * which the bytes it acknowledged show (the kernel's queue stays
         * full while libuv refills it, so its length says nothing). */
        uv_os_fd_t fd;
        uint64_t acked;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && tcpinfo_bytes_acked(fd, &acked) == 0 &&
            acked != q->acked) {
            q->acked = acked;
            q->moved_ns = now_ns;
        }
    }
    if (!why && now_ns > q->moved_ns && now_ns - q->moved_ns > timeout)
        why = "no byte accepted for send_timeout while data waits";
    if (!why)
        return 0;
    c->handlers->slow(c, why);
    return 1;
}

void conn_flush_dirty(struct worker *w)
{
    uint64_t now_ns = 0;
    while (w->dirty) {
        struct conn *c = w->dirty;
        w->dirty = c->dirty_next;
        c->dirty = 0;
        c->dirty_next = NULL;
        if (c->closed)
            continue;
        int r = c->tls ? tlsconn_flush(c) : sendq_flush(c);
        if (r < 0) {
            conn_io_failed(c, r);
            continue;
        }
        if (!conn_output_left(c)) {
            if (c->close_after_flush)
                conn_close_with(c, c->reason, conn_close_code(c));
        } else {
            if (!now_ns)
                now_ns = clock_now_ns();
            conn_check_slow(w, c, now_ns);
        }
    }
}

void conn_sweep(struct worker *w, uint64_t now_ns)
{
    uint64_t handshake_ns = (uint64_t)w->cfg.handshake_timeout * 1000000000ull;
    int64_t now_ms = clock_wall_ms();
    struct conn *next;
    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        if (c->closed)
            continue;
        switch (c->state) {
        case CONN_HTTP:
            if (c->close_after_flush || now_ns - c->accepted_ns <= handshake_ns)
                break;
            /* Before the TLS handshake is done there is no way to answer
             * 408: the client would not be able to read it. */
            if (c->tls && !tlsconn_established(c))
                tlsconn_timed_out(c);
            else
                c->handlers->timed_out(c);
            break;
        case CONN_WS:
            c->handlers->sweep(c, now_ns, now_ms);
            if (!c->closed && conn_check_slow(w, c, now_ns))
                break;
            if (now_ns - c->last_rx_ns > CONN_QUIET_NS) {
                if (c->handlers->quiet)
                    c->handlers->quiet(c);
                conn_release_queue_if_idle(c);
                if (c->tls)
                    tlsconn_release_if_idle(c);
            }
            break;
        case CONN_CLOSING:
            if ((!c->live || now_ns - c->live->closing_since_ns > CONN_CLOSE_WAIT_NS))
                conn_close_with(c, c->reason, conn_close_code(c));
            break;
        }
    }
}
