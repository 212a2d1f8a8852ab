/*
 * admin — the master's own small HTTP listener on metrics_port.
 *
 * Serves /metrics, /health and /health/detailed from the segment, exactly
 * as the workers do on the main port, so Prometheus and probes still get
 * the truth when every worker is down. Never serves WebSocket traffic.
 */
#ifndef WSGATE_ADMIN_H
#define WSGATE_ADMIN_H

#include <uv.h>

#include "segment-t.h"

struct admin;

/* Listen on address:port (port 0: disabled, *out = NULL). */
int admin_start(uv_loop_t *loop, struct segment *seg, const char *address, int port,
                struct admin **out);
/* Close the listener and every admin connection. */
void admin_stop(struct admin *a);

#endif
