/*
 * fuzz_http_head — libFuzzer target for the HTTP request-head reader and
 * the WebSocket upgrade validation (shared/http.c).
 *
 * The input is a client's first bytes. It is fed twice: whole, and split
 * in two at a position taken from the first byte (a head arriving in two
 * reads). Both runs then go through everything the handshake uses: the
 * path, header lookups, token lists, http_ws_validate and the response
 * formatting, and the ward wall's answer (worker/view.c: path lookup,
 * If-None-Match). Oracles: every span lies inside the copied head, `consumed`
 * never exceeds what was fed, and the split run agrees with the whole one
 * (but for 400 versus 431, see below).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http.h"
#include "view.h"

struct fuzz_http_result {
    enum http_feed_result r;
    size_t consumed;     /* head bytes among the input, on HTTP_FEED_DONE */
    char path[256];
    unsigned header_count;
    int status;          /* http_ws_validate, on HTTP_FEED_DONE */
    char accept[32];
    int subprotocol;
};

static void fuzz_http_check_span(const struct http_request *req, struct http_span s)
{
    if ((size_t)s.off + s.len > req->head_len)
        abort();
}

static void fuzz_http_inspect(const struct http_request *req, struct fuzz_http_result *res)
{
    fuzz_http_check_span(req, req->url);
    if (req->header_count > HTTP_HEADERS_MAX)
        abort();
    for (unsigned i = 0; i < req->header_count; i++) {
        fuzz_http_check_span(req, req->headers[i].name);
        fuzz_http_check_span(req, req->headers[i].value);
    }
    http_request_path(req, res->path, sizeof(res->path));
    if (strlen(res->path) >= sizeof(res->path))
        abort();
    res->header_count = req->header_count;

    static const char *const names[] = {"Host",      "Upgrade",           "Connection",
                                        "Origin",    "Sec-WebSocket-Key", "Sec-WebSocket-Version",
                                        "Sec-WebSocket-Protocol", "Authorization",
                                        "If-None-Match", ""};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t len = 0;
        const char *v = http_request_header(req, names[i], &len);
        if (v && (v < req->head || v + len > req->head + req->head_len))
            abort();
        unsigned count = http_request_header_count(req, names[i]);
        if ((v != NULL) != (count > 0))
            abort();
        http_request_header_has_token(req, names[i], "upgrade");
        http_request_header_has_token(req, names[i], "websocket");
        http_request_header_has_token(req, names[i], "vitalstream.v1");
    }

    struct http_ws_upgrade up;
    res->status = http_ws_validate(req, &up);
    if (res->status == 101) {
        if (strlen(up.accept) != 28)
            abort();
        memcpy(res->accept, up.accept, sizeof(res->accept));
        res->subprotocol = up.subprotocol;
    } else if (!up.why) {
        abort(); /* every refusal must say why */
    }

    /* The ward wall answers only for paths in its table, with one of
     * its files (or config.json) and a head that fits. */
    static struct config cfg;
    if (!cfg.view_enabled)
        config_defaults(&cfg);
    struct view_response v;
    if (view_render(req, res->path, &cfg, &v)) {
        int known = strcmp(res->path, "/view/") == 0 || strcmp(res->path, "/view/config.json") == 0;
        for (size_t i = 0; i < view_file_count; i++)
            known |= strcmp(res->path, view_files[i].path) == 0 && v.body == view_files[i].data &&
                     v.body_len == view_files[i].len;
        char vhead[1024];
        if (!known || (v.status != 200 && v.status != 304) ||
            http_format_head_cache(vhead, sizeof(vhead), v.status, v.content_type, v.cache_control,
                                   v.headers, v.body_len) < 0)
            abort();
    }

    /* The response the handshake would send, with the refusal as body. */
    char head[512];
    const char *why = up.why ? up.why : "";
    if (http_format_head(head, sizeof(head), res->status, "application/json",
                         "Sec-WebSocket-Version: 13\r\n", strlen(why)) < 0)
        abort();
}

static void fuzz_http_run(struct http_request *req, const uint8_t *data, size_t size, size_t split,
                          struct fuzz_http_result *res)
{
    memset(res, 0, sizeof(*res));
    http_request_init(req);
    size_t consumed = 0;
    res->r = http_request_feed(req, (const char *)data, split, &consumed);
    if (consumed > split)
        abort();
    if (res->r == HTTP_FEED_MORE && split < size) {
        size_t more = 0;
        res->r = http_request_feed(req, (const char *)data + split, size - split, &more);
        if (more > size - split)
            abort();
        consumed = split + more;
    }
    if (req->head_len > HTTP_HEAD_MAX)
        abort();
    if (res->r == HTTP_FEED_DONE) {
        res->consumed = consumed;
        fuzz_http_inspect(req, res);
        /* Feeding a complete request again changes nothing. */
        size_t again = 1;
        if (http_request_feed(req, "x", 1, &again) != HTTP_FEED_DONE || again != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Large (8 KiB head): static, not on the stack. */
    static struct http_request req;
    struct fuzz_http_result whole, split;

    fuzz_http_run(&req, data, size, size, &whole);
    size_t at = size ? (size_t)data[0] * size / 256 : 0;
    fuzz_http_run(&req, data, size, at, &split);

    /* A head read in two pieces means the same as the head read at once.
     * Only which refusal a head that is both malformed and oversized gets
     * (400 or 431) may depend on where it was cut: http-parser reports a
     * partial header name at the end of a piece, so the 65th header can
     * count before the bad byte in its name is seen. */
    int both_refused = whole.r < 0 && split.r < 0;
    if (whole.r != split.r && !both_refused) {
        fprintf(stderr, "fuzz_http_head: whole=%d split(%zu)=%d\n", whole.r, at, split.r);
        abort();
    }
    if (whole.r == HTTP_FEED_DONE &&
        (whole.consumed != split.consumed || strcmp(whole.path, split.path) != 0 ||
         whole.header_count != split.header_count || whole.status != split.status ||
         strcmp(whole.accept, split.accept) != 0 || whole.subprotocol != split.subprotocol)) {
        fprintf(stderr,
                "fuzz_http_head: split at %zu disagrees: consumed %zu/%zu path '%s'/'%s' "
                "headers %u/%u status %d/%d\n",
                at, whole.consumed, split.consumed, whole.path, split.path, whole.header_count,
                split.header_count, whole.status, split.status);
        abort();
    }
    return 0;
}
