#include "sendq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "clock.h"
#include "segment.h"

static void sendq_reset(struct sendq *q)
{
    q->head = q->tail = NULL;
    q->bytes = 0;
    q->moved_ns = 0;
    q->inflight = 0;
    q->sealed = 0;
}

void sendq_init(struct sendq *q, sendq_write_cb write_cb)
{
    sendq_reset(q);
    q->write_cb = write_cb;
    q->over_ns = 0;
    q->acked = 0;
}

static void sendq_chunk_free(struct sendq_chunk *c)
{
    if (c->frame)
        sendq_frame_unref(c->frame);
    free(c);
}

void sendq_free(struct sendq *q)
{
    struct sendq_chunk *c = q->head;
    while (c) {
        struct sendq_chunk *next = c->next;
        sendq_chunk_free(c);
        c = next;
    }
    sendq_reset(q);
}

/* Bytes of live shared frames in this worker process (one worker per
 * process, one thread touching frames): what subscribers' queues really
 * hold, since a frame queued to a thousand subscribers exists once. */
static size_t sendq_frame_bytes;

size_t sendq_frame_bytes_held(void)
{
    return sendq_frame_bytes;
}

struct sendq_frame *sendq_frame_new(size_t len)
{
    struct sendq_frame *f = malloc(sizeof(*f) + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    sendq_frame_bytes += sizeof(*f) + len;
    f->twin = NULL;
    f->wbits = 0;
    f->incompressible = 0;
    f->context_wanted = 0;
    f->context_id = 0;
    f->context_prev = 0;
    return f;
}

void sendq_frame_unref(struct sendq_frame *f)
{
    if (--f->refs == 0) {
        sendq_frame_bytes -= sizeof(*f) + f->len;
        if (f->twin)
            sendq_frame_unref(f->twin);
        free(f);
    }
}

int sendq_push_frame(struct sendq *q, struct sendq_frame *f, uint64_t origin_ns)
{
    struct sendq_chunk *c = malloc(sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->next = NULL;
    c->frame = f;
    c->origin_ns = origin_ns;
    c->len = f->len;
    c->off = 0;
    c->message = 1;
    c->request = 0;
    f->refs++;
    sendq_push(q, c);
    return 0;
}

void sendq_drop_unsent(struct sendq *q)
{
    /* Keep the chunks a pending uv_write owns (or, with TLS, that are
     * already encrypted), and a head chunk the kernel has part of: a frame
     * cut in the middle would corrupt the stream. */
    unsigned keep = q->inflight + q->sealed;
    if (keep == 0 && q->head && q->head->off > 0)
        keep = 1;
    struct sendq_chunk **pp = &q->head;
    struct sendq_chunk *last = NULL;
    for (unsigned i = 0; i < keep && *pp; i++) {
        last = *pp;
        pp = &(*pp)->next;
    }
    struct sendq_chunk *c = *pp;
    *pp = NULL;
    q->tail = last;
    while (c) {
        struct sendq_chunk *next = c->next;
        q->bytes -= c->len - c->off;
        sendq_chunk_free(c);
        c = next;
    }
}

struct sendq_chunk *sendq_chunk_new(size_t len, uint64_t origin_ns)
{
    struct sendq_chunk *c = malloc(sizeof(*c) + len);
    if (!c)
        return NULL;
    c->next = NULL;
    c->frame = NULL;
    c->origin_ns = origin_ns;
    c->len = (uint32_t)len;
    c->off = 0;
    c->message = origin_ns != 0;
    c->request = 0;
    return c;
}

void sendq_push(struct sendq *q, struct sendq_chunk *c)
{
    if (!q->head)
        q->moved_ns = 0;
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->bytes += c->len;
}

int sendq_append(struct sendq *q, const void *data, size_t len, uint64_t origin_ns)
{
    struct sendq_chunk *c = sendq_chunk_new(len, origin_ns);
    if (!c)
        return -ENOMEM;
    memcpy(c->data, data, len);
    sendq_push(q, c);
    return 0;
}

void sendq_consume(struct conn *conn, size_t n)
{
    struct sendq *q = conn->out;
    struct segment_counters *ctr = &conn->w->slot->counters;
    uint64_t now = 0;
    q->bytes -= n;
    if (n > 0)
        q->moved_ns = now = clock_now_ns();
    if (conn->state != CONN_HTTP)
        segment_counter_add(&ctr->bytes_sent, n);
    while (n > 0 && q->head) {
        struct sendq_chunk *c = q->head;
        size_t left = c->len - c->off;
        if (n < left) {
            c->off += (uint32_t)n;
            return;
        }
        n -= left;
        if (c->message)
            segment_counter_add(&ctr->messages_sent, 1);
        if (c->origin_ns) {
            if (!now)
                now = clock_now_ns();
            if (c->request)
                segment_observe_request(ctr, c->request - 1, now - c->origin_ns);
            else
                segment_observe_latency(ctr, now - c->origin_ns);
        }
        q->head = c->next;
        if (!q->head)
            q->tail = NULL;
        sendq_chunk_free(c);
    }
}

static void sendq_write_done(uv_write_t *req, int status)
{
    struct conn *conn = req->data;
    free(req);
    struct sendq *q = conn->out;
    size_t n = 0;
    struct sendq_chunk *c = q->head;
    for (unsigned i = 0; i < q->inflight && c; i++, c = c->next)
        n += c->len - c->off;
    q->inflight = 0;
    if (status < 0) {
        /* UV_ECANCELED: the handle is closing; the chunks go with it. */
        if (status != UV_ECANCELED)
            q->write_cb(conn, status);
        return;
    }
    sendq_consume(conn, n);
    q->write_cb(conn, 0);
}

/* Write what the kernel takes now: bytes written, 0 when its buffer is
 * full, or a negative errno. send/sendmsg rather than libuv's write/writev:
 * a socket call skips the file layer's position lock and dispatch, a
 * measurable share of a delivery's cost when every message is its own
 * write (uv_buf_t is struct iovec on Unix). */
static ssize_t sendq_try_send(struct conn *conn, uv_buf_t *bufs, unsigned n)
{
    uv_os_fd_t fd;
    int r = uv_fileno((const uv_handle_t *)&conn->tcp, &fd);
    if (r < 0)
        return r;
    for (;;) {
        ssize_t sent;
        if (n == 1) {
            sent = send(fd, bufs[0].base, bufs[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            struct msghdr mh = {.msg_iov = (struct iovec *)bufs, .msg_iovlen = n};
            sent = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
        if (sent >= 0)
            return sent;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    }
}

/* The next batch of unsent bytes as an iovec: its count, *asked its bytes. */
static unsigned sendq_batch(const struct sendq *q, uv_buf_t *bufs, size_t *asked)
{
    unsigned n = 0;
    *asked = 0;
    for (struct sendq_chunk *c = q->head; c && n < SENDQ_IOV_MAX; c = c->next, n++) {
        bufs[n] = uv_buf_init(sendq_chunk_bytes(c) + c->off, c->len - c->off);
        *asked += bufs[n].len;
    }
    return n;
}

int sendq_flush(struct conn *conn)
{
    struct sendq *q = conn->out;
    if (!q || q->inflight)
        return 0; /* nothing queued, or the pending uv_write's callback continues */
    while (q->head) {
        uv_buf_t bufs[SENDQ_IOV_MAX];
        size_t asked;
        unsigned n = sendq_batch(q, bufs, &asked);
        ssize_t r = sendq_try_send(conn, bufs, n);
        if (r < 0)
            return (int)r;
        sendq_consume(conn, (size_t)r);
        if ((size_t)r == asked)
            continue;
        /* The kernel's buffer is full: let libuv wait for writability with
         * the rest of this batch; its callback flushes what follows. */
        n = sendq_batch(q, bufs, &asked);
        /* The request lives only while the kernel is full: an idle
         * connection carries none. */
        uv_write_t *req = malloc(sizeof(*req));
        if (!req)
            return UV_ENOMEM;
        req->data = conn;
        int wr = uv_write(req, (uv_stream_t *)&conn->tcp, bufs, n, sendq_write_done);
        if (wr < 0) {
            free(req);
            return wr;
        }
        q->inflight = n;
        return 0;
    }
    return 0;
}
