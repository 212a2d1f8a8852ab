/*
 * health — the replica's health, judged from the segment alone.
 *
 * Rendered the same by the master and by every worker, so a replica whose
 * workers are all down still tells the truth on the master's port.
 * "ok": every wanted worker is running. "degraded": some worker is dead or
 * in crash-loop backoff. "draining": shutting down.
 */
#ifndef WSGATE_HEALTH_H
#define WSGATE_HEALTH_H

#include "segment-t.h"
#include "textbuf.h"

enum health_status {
    HEALTH_OK = 0,
    HEALTH_DEGRADED,
    HEALTH_DRAINING,
};

enum health_status health_status(const struct segment *seg, const char **reason);
/* JSON body of /health/detailed; returns the HTTP status (200 or 503). */
int health_render_detailed(const struct segment *seg, struct textbuf *out);

#endif
