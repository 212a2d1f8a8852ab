/*
 * clock — the two clocks of wsgate.
 *
 * clock_now_ns() is CLOCK_MONOTONIC in nanoseconds: every duration
 * (latency, timeouts, uptime) is measured with it. clock_wall_ms() is the
 * Unix epoch in milliseconds: only for values a client or an operator reads
 * (`ts` fields, log timestamps, started_at).
 */
#ifndef WSGATE_CLOCK_H
#define WSGATE_CLOCK_H

#include <stdint.h>

uint64_t clock_now_ns(void);
int64_t clock_wall_ms(void);

#endif
