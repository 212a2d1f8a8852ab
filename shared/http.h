/*
 * http — read one HTTP/1.1 request head (http-parser), validate a
 * WebSocket upgrade (RFC 6455 §4.2.1), and format responses.
 *
 * Pure functions over bytes: no sockets, no allocation beyond the caller's
 * struct http_request. The head is copied into the request (at most
 * HTTP_HEAD_MAX bytes), so callers may feed it from a reused read buffer.
 * Header names are compared case-insensitively; list-valued headers
 * (Connection, Upgrade, Sec-WebSocket-Protocol) are split on commas.
 */
#ifndef WSGATE_HTTP_H
#define WSGATE_HTTP_H

#include <stddef.h>

#include "http-t.h"

void http_request_init(struct http_request *req);

/* Feed the next bytes of the connection. On HTTP_FEED_DONE, *consumed says
 * how many of these bytes belong to the head; the rest are the first bytes
 * of the WebSocket stream (a client may send a frame right behind it). */
enum http_feed_result http_request_feed(struct http_request *req, const char *data, size_t len,
                                        size_t *consumed);

/* The request path without query string (NUL-terminated copy). */
void http_request_path(const struct http_request *req, char *out, size_t outlen);
/* The raw value of the first header named `name`, or NULL. */
const char *http_request_header(const struct http_request *req, const char *name, size_t *len);
/* Number of headers named `name`. */
unsigned http_request_header_count(const struct http_request *req, const char *name);
/* Every header named `name`, in order, joined with ", " into out (NUL
 * terminated): one list, as RFC 7230 3.2.2 allows. Returns its length (0:
 * none), or -ENOSPC. */
int http_request_header_join(const struct http_request *req, const char *name, char *out,
                             size_t cap);
/* 1 when a comma-separated header (any instance) contains `token`. */
int http_request_header_has_token(const struct http_request *req, const char *name,
                                  const char *token);

/* Validate an upgrade to WebSocket. Returns 101 and fills *up, or the HTTP
 * status to refuse with: 426 (not an upgrade: missing Upgrade/Connection/
 * key/version headers), 400 (malformed key, unsupported version, only
 * unknown subprotocols offered, duplicated key). */
int http_ws_validate(const struct http_request *req, struct http_ws_upgrade *up);

/* Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)).
 * out must hold 29 bytes. Returns 0, or -1 on a crypto failure. */
int http_ws_accept_key(const char *key, size_t key_len, char *out);
/* Fetch SHA-1 and compute one key, so the first client's handshake does
 * not pay OpenSSL's provider setup (and its pages are touched once, at
 * start). Not thread-safe: one thread computes keys. Returns 0 or -1;
 * http_ws_accept_key calls it when it was not called. */
int http_ws_init(void);

/* Format a response head with Content-Length (body_len) and
 * Connection: close; the caller sends the body after it (not for HEAD).
 * `extra` is additional header lines ("Name: value\r\n"...), or NULL.
 * Returns bytes written, or -1 when out is too small. */
int http_format_head(char *out, size_t outlen, int status, const char *content_type,
                     const char *extra, size_t body_len);

/* The same with a chosen Cache-Control value (http_format_head says
 * no-store: its answers are live state). */
int http_format_head_cache(char *out, size_t outlen, int status, const char *content_type,
                           const char *cache_control, const char *extra, size_t body_len);

const char *http_status_text(int status);

/* The value of query parameter `name` in the request target, percent-
 * decoded into out (NUL-terminated). Returns how many times the parameter
 * occurs (the first one is decoded), 0 when absent, or -1 when the first
 * occurrence does not fit in out or is badly encoded. */
int http_request_query_param(const struct http_request *req, const char *name, char *out,
                             size_t outlen);

/* An origin as RFC 6454 serialises it: "scheme://host[:port]", scheme and
 * host lower-cased, a default port (http 80, https 443, ws 80, wss 443)
 * dropped, no path, query, user info or trailing slash. Writes the
 * normalised form into out; returns its length, or -1 when `in` is not
 * such an origin (the literal "null" is not one either). */
int http_origin_normalize(const char *in, size_t len, char *out, size_t outlen);

#endif
