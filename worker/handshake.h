/*
 * handshake — a connection's HTTP phase: read the request head, answer the
 * plain endpoints, refuse bad upgrades with a precise status, and turn a
 * valid /ws upgrade into a WebSocket session.
 *
 * Every response but 101 closes the connection once written. A refusal
 * answers with its precise status and a JSON body saying why, logs one
 * line and counts one connection error (conn_refuse). Helpers inside
 * follow worker/'s convention: 0 or a positive meaning, failures as
 * negative errno codes.
 */
#ifndef WSGATE_HANDSHAKE_H
#define WSGATE_HANDSHAKE_H

#include <stddef.h>

#include "worker-t.h"

void handshake_feed(struct conn *c, const char *data, size_t len);
/* The head did not arrive within handshake_timeout: answer 408, close. */
void handshake_timed_out(struct conn *c);

/* A connection's handlers (conn.h) in each phase: the HTTP ones from
 * accept (worker.c passes them to conn_accept), the WebSocket session's
 * from the upgrade on, installed here with the router as the session's
 * app (router_app). */
extern const struct conn_handlers handshake_http_handlers;
extern const struct conn_handlers handshake_ws_handlers;

#endif
