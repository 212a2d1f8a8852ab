/*
 * router — the application protocol (PROTOCOL.md "Messages"): one JSON
 * object per text message, dispatched on "type".
 *
 * Every request that is refused gets an `error` with a precise code and the
 * request's `id` when it had one; the connection stays open. Replies echo
 * `id` as the exact JSON value the client sent (null included).
 */
#ifndef WSGATE_ROUTER_H
#define WSGATE_ROUTER_H

#include <stddef.h>

#include "worker-t.h"

void router_handle(struct conn *c, const char *msg, size_t len);

/* max_messages_per_second: 1 when the message may be handled; 0 when it
 * was refused (`rate_limited` sent, with the request's id when it had
 * one). Past RATELIMIT_ABUSE_REFUSALS refusals in RATELIMIT_ABUSE_WINDOW_NS
 * the connection is closed with 1008. */
int router_admit(struct conn *c, const char *msg, size_t len);

#endif
