#include "admin.h"

#include <stdlib.h>
#include <string.h>

#include "endpoints.h"
#include "http.h"
#include "log.h"

#define ADMIN_READ_MAX 4096

struct admin_conn {
    uv_tcp_t tcp;
    struct admin *admin;
    struct admin_conn *next, *prev;
    struct http_request req;
    uv_write_t write;
    char head[512];
    struct textbuf body;
    int responded;
};

struct admin {
    uv_tcp_t listener;
    struct segment *seg;
    struct admin_conn *conns;
    int listener_closed;
};

/* The admin struct goes once its listener and every connection are closed
 * (close callbacks run in no promised order). */
static void admin_maybe_free(struct admin *a)
{
    if (a->listener_closed && !a->conns)
        free(a);
}

static void admin_conn_closed(uv_handle_t *h)
{
    struct admin_conn *ac = h->data;
    struct admin *a = ac->admin;
    if (ac->prev)
        ac->prev->next = ac->next;
    else
        a->conns = ac->next;
    if (ac->next)
        ac->next->prev = ac->prev;
    if (ac->responded)
        textbuf_free(&ac->body);
    free(ac);
    admin_maybe_free(a);
}

static void admin_conn_close(struct admin_conn *ac)
{
    if (!uv_is_closing((uv_handle_t *)&ac->tcp))
        uv_close((uv_handle_t *)&ac->tcp, admin_conn_closed);
}

static void admin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char readbuf[ADMIN_READ_MAX];
    buf->base = readbuf;
    buf->len = sizeof(readbuf);
}

static void admin_written(uv_write_t *req, int status)
{
    admin_conn_close(req->data);
}

/* Answer the request, or (error_status != 0) refuse a head that could not
 * be read with that status and a JSON body saying why. */
static void admin_respond(struct admin_conn *ac, int error_status, const char *why)
{
    char path[256];
    http_request_path(&ac->req, path, sizeof(path));
    int head_only = !error_status && ac->req.method == HTTP_METHOD_HEAD_KIND;
    struct endpoint_response resp;
    memset(&resp, 0, sizeof(resp));
    ac->responded = 1;
    if (!error_status && ac->req.method != HTTP_METHOD_OTHER &&
        endpoints_render(ac->admin->seg, path, 0, &resp) && !resp.body.failed) {
        ac->body = resp.body;
    } else {
        if (resp.status)
            textbuf_free(&resp.body);
        textbuf_init(&ac->body, 128);
        if (!error_status) {
            error_status = 404;
            why = "not found: the metrics port serves /metrics, /health and /health/detailed";
        }
        textbuf_appendf(&ac->body, "{\"status\":%d,\"error\":\"%s\"}\n", error_status, why);
        resp.status = error_status;
        resp.content_type = "application/json";
        resp.extra_headers = NULL;
    }
    int n = http_format_head(ac->head, sizeof(ac->head), resp.status, resp.content_type,
                             resp.extra_headers, ac->body.len);
    uv_buf_t bufs[2] = {uv_buf_init(ac->head, n > 0 ? (unsigned)n : 0),
                        uv_buf_init(ac->body.data, head_only ? 0 : (unsigned)ac->body.len)};
    ac->write.data = ac;
    if (uv_write(&ac->write, (uv_stream_t *)&ac->tcp, bufs, 2, admin_written) < 0)
        admin_conn_close(ac);
}

static void admin_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct admin_conn *ac = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        admin_conn_close(ac);
        return;
    }
    size_t consumed;
    enum http_feed_result r = http_request_feed(&ac->req, buf->base, (size_t)nread, &consumed);
    if (r == HTTP_FEED_MORE)
        return;
    uv_read_stop(s);
    if (r == HTTP_FEED_BAD)
        admin_respond(ac, 400, ac->req.no_version ? "request line without HTTP version"
                                                  : "malformed HTTP request");
    else if (r == HTTP_FEED_TOO_BIG)
        admin_respond(ac, 431, "request head larger than 8 KiB or more than 64 headers");
    else if (r == HTTP_FEED_VERSION)
        admin_respond(ac, 505, "HTTP version not supported: send HTTP/1.1");
    else
        admin_respond(ac, 0, NULL);
}

static void admin_on_connection(uv_stream_t *server, int status)
{
    struct admin *a = server->data;
    if (status < 0)
        return;
    struct admin_conn *ac = calloc(1, sizeof(*ac));
    if (!ac)
        return;
    ac->admin = a;
    uv_tcp_init(server->loop, &ac->tcp);
    ac->tcp.data = ac;
    ac->next = a->conns;
    if (a->conns)
        a->conns->prev = ac;
    a->conns = ac;
    if (uv_accept(server, (uv_stream_t *)&ac->tcp) < 0) {
        admin_conn_close(ac);
        return;
    }
    http_request_init(&ac->req);
    uv_read_start((uv_stream_t *)&ac->tcp, admin_alloc, admin_read);
}

static void admin_listener_closed(uv_handle_t *h)
{
    struct admin *a = h->data;
    a->listener_closed = 1;
    admin_maybe_free(a);
}

int admin_start(uv_loop_t *loop, struct segment *seg, const char *address, int port,
                struct admin **out)
{
    *out = NULL;
    if (port == 0)
        return 0;
    struct admin *a = calloc(1, sizeof(*a));
    if (!a)
        return UV_ENOMEM;
    a->seg = seg;
    uv_tcp_init(loop, &a->listener);
    a->listener.data = a;

    struct sockaddr_storage ss;
    int r = uv_ip4_addr(address, port, (struct sockaddr_in *)&ss);
    if (r < 0)
        r = uv_ip6_addr(address, port, (struct sockaddr_in6 *)&ss);
    if (r == 0)
        r = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&a->listener, 128, admin_on_connection);
    if (r < 0) {
        uv_close((uv_handle_t *)&a->listener, admin_listener_closed);
        return r;
    }
    *out = a;
    return 0;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    for (struct admin_conn *ac = a->conns; ac; ac = ac->next)
        admin_conn_close(ac);
    uv_close((uv_handle_t *)&a->listener, admin_listener_closed);
}
