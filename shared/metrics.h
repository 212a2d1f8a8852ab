/*
 * metrics — render the segment as Prometheus text exposition format 0.0.4.
 *
 * One function, called by the master's admin listener and by every worker's
 * /metrics, so both always say the same thing. Every series carries
 * environment="<config environment>"; every label value that can occur is
 * emitted from the start (counters at 0) so rate() works from the first
 * scrape. Nothing here allocates per series beyond the output buffer.
 */
#ifndef WSGATE_METRICS_H
#define WSGATE_METRICS_H

#include "procstat.h"
#include "segment-t.h"
#include "textbuf.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Render everything. The process_* block describes `proc` (the master);
 * pass NULL to leave it out. */
void metrics_render(const struct segment *seg, const struct procstat *proc, struct textbuf *out);

#endif
