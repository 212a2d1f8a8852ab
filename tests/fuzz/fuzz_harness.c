/*
 * fuzz_harness — the fake worker shared by fuzz_router and fuzz_session
 * (see fuzz_harness.h for the contract).
 */
#include "fuzz_harness.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>
#include <zlib.h>

#include "clock.h"
#include "config.h"
#include "conn.h"
#include "deflate.h"
#include "handshake.h"
#include "http.h"
#include "hub.h"
#include "log.h"
#include "router.h"
#include "segment.h"
#include "sendq.h"
#include "session.h"
#include "streamlog.h"

/* Keep at most this much of the server's output for the oracles. */
#define FUZZ_OUTPUT_MAX (1u << 20)
/* A pump stops after this many iterations even if the worker is busy. */
#define FUZZ_PUMP_MAX 64
/* Stream logs of the fake segment: few, small streams with a short
 * history, so that creation limits, ring overwrites and gaps are all
 * within a fuzz input's reach. */
#define FUZZ_MAX_STREAMS 4
#define FUZZ_STREAM_MEMORY (16 * STREAMLOG_CHUNK)
#define FUZZ_HISTORY_SIZE 8

static unsigned fuzz_listen_seq;

void fuzz_harness_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
}

struct fuzz_worker *fuzz_worker_new(void)
{
    struct fuzz_worker *fw = calloc(1, sizeof(*fw));
    struct worker *w = calloc(1, sizeof(*w));
    if (!fw || !w)
        abort();
    config_defaults(&w->cfg);
    w->cfg.max_streams = FUZZ_MAX_STREAMS;
    w->cfg.stream_memory = FUZZ_STREAM_MEMORY;
    w->cfg.history_size = FUZZ_HISTORY_SIZE;

    /* The segment as segment_create lays it out, in plain memory: header,
     * then the stream logs at a page-aligned offset. */
    uint64_t streams_offset = (sizeof(struct segment) + 4095) / 4096 * 4096;
    uint64_t streams_bytes = streamlog_bytes(FUZZ_MAX_STREAMS, FUZZ_STREAM_MEMORY);
    struct segment *seg = calloc(1, (size_t)(streams_offset + streams_bytes));
    if (!seg)
        abort();
    seg->magic = SEGMENT_MAGIC;
    seg->layout_version = SEGMENT_LAYOUT_VERSION;
    seg->worker_slots = SEGMENT_WORKER_SLOTS;
    seg->size = streams_offset + streams_bytes;
    seg->streams_offset = streams_offset;
    seg->streams_bytes = streams_bytes;
    if (streamlog_init(segment_streams(seg), FUZZ_MAX_STREAMS, FUZZ_STREAM_MEMORY) < 0)
        abort();
    w->seg = seg;
    w->slot_index = 0;
    w->slot = segment_worker_slot(seg, 0);
    w->slot->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->slot->wake_fd < 0 || uv_loop_init(&w->loop) != 0 ||
        hub_init(w, w->slot->wake_fd, &hub_local_backend) < 0)
        abort();
    fw->w = w;
    fw->listen_fd = -1;
    return fw;
}

static void fuzz_conn_link(struct worker *w, struct conn *c)
{
    c->next = w->conns;
    c->prev = NULL;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
}

struct conn *fuzz_conn_socketpair(struct fuzz_worker *fw, enum conn_state state, int *peer)
{
    struct worker *w = fw->w;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->w = w;
    c->handlers = &handshake_http_handlers;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_tcp_open(&c->tcp, sv[0]) != 0)
        abort();
    fuzz_conn_link(w, c);
    c->id = ++w->next_conn_id;
    c->state = CONN_HTTP;
    c->accepted_ns = clock_now_ns();
    /* The send queue is made on first use (conn_queue) and a request head
     * is read into the worker's scratch request, as for an accepted
     * connection; the peer address stays unknown (a socketpair has none). */
    if (state != CONN_HTTP) {
        /* What handshake_upgrade does once the 101 is decided. */
        if (segment_connection_reserve(w->seg, w->slot, w->cfg.max_connections) < 0)
            abort();
        c->counted = 1;
        c->state = CONN_WS;
        c->handlers = &handshake_ws_handlers;
        c->app = &router_app;
        c->upgraded_ns = c->last_rx_ns = c->last_ping_ns = clock_now_ns();
        segment_counter_add(&w->slot->counters.connections_total, 1);
        if (session_start(c) < 0)
            abort();
    }
    *peer = sv[1];
    return c;
}

static void fuzz_on_connection(uv_stream_t *server, int status)
{
    if (status == 0)
        conn_accept(server->data, &handshake_http_handlers);
}

int fuzz_worker_connect(struct fuzz_worker *fw)
{
    struct worker *w = fw->w;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    /* Abstract namespace: nothing in the file system, gone on close. */
    int n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "wsgate-fuzz-%d-%u", (int)getpid(),
                     ++fuzz_listen_seq);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);

    if (!w->listening) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, salen) < 0)
            abort();
        uv_tcp_init(&w->loop, &w->listener);
        w->listener.data = w;
        if (uv_tcp_open(&w->listener, fd) != 0 ||
            uv_listen((uv_stream_t *)&w->listener, 16, fuzz_on_connection) != 0)
            abort();
        w->listening = 1;
        fw->listen_fd = fd;
    } else {
        socklen_t len = sizeof(sa);
        if (getsockname(fw->listen_fd, (struct sockaddr *)&sa, &len) < 0)
            abort();
        salen = len;
    }
    int client = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&sa, salen) < 0)
        abort();
    return client;
}

static size_t fuzz_drain(struct fuzz_worker *fw, int peer)
{
    if (peer < 0)
        return 0;
    size_t total = 0;
    char buf[16384];
    for (;;) {
        ssize_t n = recv(peer, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        total += (size_t)n;
        struct fuzz_output *o = &fw->out;
        size_t keep = (size_t)n;
        if (o->len + keep > FUZZ_OUTPUT_MAX)
            keep = FUZZ_OUTPUT_MAX - o->len;
        if (keep && o->len + keep > o->cap) {
            size_t cap = o->cap ? o->cap : 4096;
            while (cap < o->len + keep)
                cap *= 2;
            uint8_t *p = realloc(o->data, cap);
            if (!p)
                abort();
            o->data = p;
            o->cap = cap;
        }
        if (keep) {
            memcpy(o->data + o->len, buf, keep);
            o->len += keep;
        }
    }
    return total;
}

void fuzz_pump(struct fuzz_worker *fw, int peer)
{
    struct worker *w = fw->w;
    for (int i = 0; i < FUZZ_PUMP_MAX; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        /* What the worker's uv_check does: fan out, then flush. */
        hub_run(w);
        conn_flush_dirty(w);
        size_t got = fuzz_drain(fw, peer);
        if (i > 0 && got == 0 && w->dirty == NULL)
            break;
    }
}

int fuzz_live_conns(const struct fuzz_worker *fw)
{
    int n = 0;
    for (const struct conn *c = fw->w->conns; c; c = c->next)
        n += !c->closed;
    return n;
}

static void fuzz_count_handle(uv_handle_t *h, void *arg)
{
    (*(int *)arg)++;
}

void fuzz_worker_free(struct fuzz_worker *fw)
{
    struct worker *w = fw->w;
    struct conn *next;
    for (struct conn *c = w->conns; c; c = next) {
        next = c->next;
        conn_close_with(c, DISCONNECT_SHUTDOWN, 0);
    }
    if (w->listening) {
        uv_close((uv_handle_t *)&w->listener, NULL);
        w->listening = 0;
    }
    hub_close(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->conns != NULL) {
        fprintf(stderr, "fuzz_harness: a connection was not freed after its close\n");
        abort();
    }
    int open = 0;
    uv_walk(&w->loop, fuzz_count_handle, &open);
    if (open != 0 || uv_loop_close(&w->loop) != 0) {
        fprintf(stderr, "fuzz_harness: %d libuv handle(s) left open\n", open);
        abort();
    }
    if (atomic_load(&w->seg->connections) != 0 || atomic_load(&w->slot->connections) != 0) {
        fprintf(stderr, "fuzz_harness: replica connection count did not return to 0\n");
        abort();
    }
    /* Every WebSocket connection ends counted exactly once (issue 3). */
    struct segment_totals t;
    segment_read_counters(&w->slot->counters, &t);
    uint64_t ended = 0;
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        ended += t.disconnections[i];
    if (ended != t.connections_total) {
        fprintf(stderr, "fuzz_harness: %llu connection(s) upgraded but %llu disconnection(s) counted\n",
                (unsigned long long)t.connections_total, (unsigned long long)ended);
        abort();
    }
    close(w->slot->wake_fd);
    deflate_worker_free(w);
    free(fw->out.data);
    free(w->seg);
    free(w);
    free(fw);
}

json_t *fuzz_json_parse(const char *text, size_t len, int strict)
{
    size_t flags = JSON_ALLOW_NUL | (strict ? JSON_REJECT_DUPLICATES : 0);
    json_error_t err;
    json_t *doc = json_loadb(text, len, flags, &err);
    if (!doc && strstr(err.text, "too big"))
        doc = json_loadb(text, len, flags | JSON_DECODE_INT_AS_REAL, &err);
    return doc;
}

int fuzz_text_type(const char *text, size_t len, char *type, size_t cap)
{
    json_t *doc = fuzz_json_parse(text, len, 0);
    if (doc) {
        const char *t = json_string_value(json_object_get(doc, "type"));
        int ok = json_is_object(doc) && t && strlen(t) < cap;
        if (ok)
            strcpy(type, t);
        json_decref(doc);
        return ok ? 0 : -1;
    }
    /* Valid JSON that jansson cannot hold (a forwarded 1e400, nesting past
     * its depth limit): yajl's tree parser judges it instead. */
    char *copy = strndup(text, len);
    if (!copy || memchr(text, '\0', len) || memchr(text, '\f', len) || memchr(text, '\v', len)) {
        free(copy);
        return -1;
    }
    char err[128];
    yajl_val root = yajl_tree_parse(copy, err, sizeof(err));
    free(copy);
    static const char *path[] = {"type", NULL};
    yajl_val t = root && YAJL_IS_OBJECT(root) ? yajl_tree_get(root, path, yajl_t_string) : NULL;
    int ok = t && strlen(YAJL_GET_STRING(t)) < cap;
    if (ok)
        strcpy(type, YAJL_GET_STRING(t));
    yajl_tree_free(root);
    return ok ? 0 : -1;
}

int fuzz_deflate_wbits;

/* A server's compressed message as a client with window fuzz_deflate_wbits
 * reads it (RFC 7692 7.2.2, no context takeover); NULL when it does not
 * inflate. *out_len gets its length; free() it. */
static uint8_t *fuzz_inflate_payload(const uint8_t *p, size_t len, size_t *out_len)
{
    z_stream s;
    memset(&s, 0, sizeof(s));
    if (inflateInit2(&s, -fuzz_deflate_wbits) != Z_OK)
        return NULL;
    uint8_t *in = malloc(len + 4);
    size_t cap = 4096 + len * 8;
    uint8_t *out = malloc(cap);
    int r = Z_DATA_ERROR;
    if (in && out) {
        memcpy(in, p, len);
        memcpy(in + len, "\x00\x00\xff\xff", 4);
        s.next_in = in;
        s.avail_in = (uInt)len + 4;
        s.next_out = out;
        s.avail_out = (uInt)cap;
        r = inflate(&s, Z_SYNC_FLUSH);
    }
    *out_len = cap - s.avail_out;
    int ok = (r == Z_OK || r == Z_STREAM_END) && s.avail_in == 0 && s.avail_out > 0;
    inflateEnd(&s);
    free(in);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

static const uint8_t *fuzz_wire_start;
static size_t fuzz_wire_len;

static void fuzz_wire_violation(const char *what, size_t at)
{
    fprintf(stderr, "fuzz_harness: server output violates RFC 6455/docs/PROTOCOL.md at byte %zu: %s\n",
            at, what);
    fprintf(stderr, "fuzz_harness: server frames (hex):");
    for (size_t i = 0; i < fuzz_wire_len && i < 512; i++)
        fprintf(stderr, "%s%02x", i % 32 ? " " : "\n  ", fuzz_wire_start[i]);
    fprintf(stderr, "\n");
    abort();
}

static int fuzz_close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

size_t fuzz_check_server_frames(const uint8_t *p, size_t len, fuzz_text_fn on_text, void *arg)
{
    size_t off = 0, frames = 0;
    int closed = 0;
    fuzz_wire_start = p;
    fuzz_wire_len = len;
    while (off < len) {
        size_t start = off;
        if (closed)
            fuzz_wire_violation("bytes after the close frame", start);
        if (len - off < 2)
            fuzz_wire_violation("truncated frame header", start);
        uint8_t b0 = p[off], b1 = p[off + 1];
        off += 2;
        unsigned opcode = b0 & 0x0f;
        if (!(b0 & 0x80))
            fuzz_wire_violation("server frame without FIN (the gateway never fragments)", start);
        int compressed = (b0 & 0x40) && fuzz_deflate_wbits && opcode == 0x1;
        if ((b0 & 0x70) && !compressed)
            fuzz_wire_violation("RSV bits set (RSV1 is for compressed text, when negotiated)",
                                start);
        if (b1 & 0x80)
            fuzz_wire_violation("masked server frame", start);
        uint64_t plen = b1 & 0x7f;
        size_t ext = plen == 126 ? 2 : plen == 127 ? 8 : 0;
        if (len - off < ext)
            fuzz_wire_violation("truncated extended length", start);
        if (ext) {
            plen = 0;
            for (size_t i = 0; i < ext; i++)
                plen = plen << 8 | p[off + i];
            off += ext;
            if ((ext == 2 && plen < 126) || (ext == 8 && plen < 65536))
                fuzz_wire_violation("length not in its shortest encoding", start);
        }
        if (plen > len - off)
            fuzz_wire_violation("truncated payload", start);
        const uint8_t *payload = p + off;
        off += (size_t)plen;
        frames++;
        switch (opcode) {
        case 0x1: {
            uint8_t *inflated = NULL;
            size_t tlen = (size_t)plen;
            if (compressed) {
                inflated = fuzz_inflate_payload(payload, tlen, &tlen);
                if (!inflated)
                    fuzz_wire_violation("compressed text does not inflate with the negotiated "
                                        "window",
                                        start);
            }
            const char *text = inflated ? (const char *)inflated : (const char *)payload;
            char type[32];
            if (fuzz_text_type(text, tlen, type, sizeof(type)) < 0)
                fuzz_wire_violation("text message is not a JSON object with a string type", start);
            if (on_text)
                on_text(arg, text, tlen);
            free(inflated);
            break;
        }
        case 0x8:
            if (plen == 1)
                fuzz_wire_violation("close payload of 1 byte", start);
            if (plen >= 2 && !fuzz_close_code_valid((unsigned)payload[0] << 8 | payload[1]))
                fuzz_wire_violation("invalid close code sent", start);
            closed = 1;
            /* fall through */
        case 0x9:
        case 0xa:
            if (plen > 125)
                fuzz_wire_violation("control frame payload over 125 bytes", start);
            break;
        default:
            fuzz_wire_violation("unexpected opcode", start);
        }
    }
    return frames;
}
