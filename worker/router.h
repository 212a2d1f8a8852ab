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
#include <stdint.h>

#include "worker-t.h"

void router_handle(struct conn *c, const char *msg, size_t len);

/* Replies for requests the hub completes later (cluster mode); id_json is
 * the request's id serialised, or NULL. */
void router_reply_error(struct conn *c, const char *id_json, const char *code, const char *message);
/* The `error` for a negative errno from the hub (capacity, too_large,
 * unavailable, …). */
void router_reply_errno(struct conn *c, const char *id_json, int err);
void router_reply_ack(struct conn *c, const char *id_json, const char *stream, size_t len,
                      uint64_t seq);

#endif
