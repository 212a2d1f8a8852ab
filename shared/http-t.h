/*
 * http-t.h — types of the HTTP request-head reader (see http.h).
 */
#ifndef WSGATE_HTTP_T_H
#define WSGATE_HTTP_T_H

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX 8192
#define HTTP_HEADERS_MAX 64

/* A piece of the head buffer: offsets, so the buffer may move. */
struct http_span {
    uint16_t off;
    uint16_t len;
};

struct http_header {
    struct http_span name;
    struct http_span value;
};

enum http_method_kind {
    HTTP_METHOD_OTHER = 0,
    HTTP_METHOD_GET_KIND,
    HTTP_METHOD_HEAD_KIND,
};

struct http_request {
    http_parser parser;
    char head[HTTP_HEAD_MAX];
    size_t head_len;
    struct http_span url;
    struct http_header headers[HTTP_HEADERS_MAX];
    unsigned header_count;
    int last_was_value;
    int complete;
    int too_many_headers;
    int no_version;         /* request line without HTTP-version (HTTP/0.9 style) */
    int bad_version;        /* HTTP-version other than 1.x */
    enum http_method_kind method;
    unsigned short http_major, http_minor;
};

/* What a request for /ws asks for, once validated. */
struct http_ws_upgrade {
    char accept[32];    /* Sec-WebSocket-Accept value */
    int subprotocol;    /* 1: answer with vitalstream.v1 */
    const char *why;    /* on refusal: what was wrong, for the log and body */
};

/* Outcome of feeding bytes. */
enum http_feed_result {
    HTTP_FEED_MORE = 0,      /* head incomplete: wait for more bytes */
    HTTP_FEED_DONE = 1,      /* head complete */
    HTTP_FEED_BAD = -400,    /* malformed request (no_version: no HTTP-version) */
    HTTP_FEED_TOO_BIG = -431, /* head over HTTP_HEAD_MAX or too many headers */
    HTTP_FEED_VERSION = -505 /* HTTP/2 or later on a request line: only 1.x is spoken */
};

#endif
