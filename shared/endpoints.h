/*
 * endpoints — the plain-HTTP endpoints every wsgate port answers from the
 * segment: /health, /health/detailed, /metrics.
 *
 * Shared by the worker (port 8003) and the master's admin listener
 * (metrics_port) so the two can never disagree.
 */
#ifndef WSGATE_ENDPOINTS_H
#define WSGATE_ENDPOINTS_H

#include "segment-t.h"
#include "textbuf.h"

struct endpoint_response {
    int status;
    const char *content_type;
    const char *extra_headers; /* "Name: value\r\n"…, or NULL */
    struct textbuf body;        /* caller frees with textbuf_free */
};

/* Render the response for `path` (no query string). `self_draining` makes
 * /health answer 503 even before the segment says so (a retiring worker).
 * Returns 1 when the path is one of these endpoints, 0 otherwise (nothing
 * to free then). Only GET and HEAD are served: callers route the rest. */
int endpoints_render(const struct segment *seg, const char *path, int self_draining,
                     struct endpoint_response *resp);

#endif
