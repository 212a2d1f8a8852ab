/*
 * view — the ward wall (GET /view): a browser page showing live ECG
 * streams through the JavaScript client library.
 *
 * Its files are compiled into the binary (view/embed.py generates the
 * view_files table at build time): a request is answered from that table
 * by exact path, never from the file system, so no path can reach a file
 * outside it. Every answer carries a Content-Security-Policy that allows
 * no inline script, X-Content-Type-Options: nosniff, an ETag and
 * Cache-Control: no-cache (the browser revalidates; If-None-Match that
 * names the current ETag gets 304). /view/config.json tells the page the
 * auth mode, so it asks for a token only when the gateway needs one.
 * With view_enabled false none of it exists (the caller answers 404).
 */
#ifndef WSGATE_VIEW_H
#define WSGATE_VIEW_H

#include <stddef.h>

#include "config-t.h"
#include "http-t.h"

struct view_file {
    const char *path;         /* "/view", "/view/wall.js", ... */
    const char *content_type;
    const char *etag;         /* quoted, strong */
    const unsigned char *data;
    size_t len;
};

/* The generated table (view-files.c). */
extern const struct view_file view_files[];
extern const size_t view_file_count;

#define VIEW_HEADERS_MAX 768

struct view_response {
    int status;                /* 200 or 304 */
    const char *content_type;
    const char *cache_control;
    char headers[VIEW_HEADERS_MAX]; /* "Name: value\r\n"... */
    const void *body;          /* not sent for 304 or HEAD; len still describes it */
    size_t body_len;
    char dynamic[64];          /* the body of config.json */
};

/* Answer GET/HEAD `path` (no query string) when it is one of the page's
 * files and `cfg` has view_enabled. Returns 1 with *resp filled, 0 when the
 * caller should answer as for any unknown path. */
int view_render(const struct http_request *req, const char *path, const struct config *cfg,
                struct view_response *resp);

/* 1 when an If-None-Match value (a comma-separated list of entity tags,
 * or "*") names `etag`; weak comparison, as RFC 9110 13.1.2 asks. */
int view_etag_matches(const char *value, size_t len, const char *etag);

#endif
