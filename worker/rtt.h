/*
 * rtt — heartbeat round trips (the runbook's network latency monitoring).
 *
 * Every heartbeat ping carries its send time as an 8-byte payload; the pong
 * that echoes the latest ping's payload (RFC 6455 5.5.3: a pong answers
 * the most recent ping) gives the connection's round trip, counted once in
 * websocket_client_rtt_seconds and kept as the connection's last RTT.
 * Pongs that match nothing (unsolicited, stale, forged) are ignored. The
 * round trip runs from the ping queued to its pong read, so output queued
 * ahead of the ping counts: it is the delay the client lives with.
 *
 * Once a second the worker publishes its SEGMENT_RTT_TOP slowest
 * connections in its segment slot (tools/wsstat "top by RTT").
 */
#ifndef WSGATE_RTT_H
#define WSGATE_RTT_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

#define RTT_PAYLOAD_LEN 8

/* The payload of the heartbeat ping sent now; from then on only its pong
 * counts. */
void rtt_ping_payload(struct conn *c, uint64_t now_ns, uint8_t out[RTT_PAYLOAD_LEN]);
/* A pong read at now_ns. */
void rtt_pong(struct conn *c, const uint8_t *payload, size_t len, uint64_t now_ns);
/* The worker's tick: refresh the slowest-connections table (at most once
 * a second). */
void rtt_sweep(struct worker *w, uint64_t now_ns);

#endif
