/*
 * router — the application protocol (docs/PROTOCOL.md "Messages"): one JSON
 * object per text message, dispatched on "type".
 *
 * Every request that is refused gets an `error` with a precise code and the
 * request's `id` when it had one; the connection stays open. Replies echo
 * `id` as the very bytes the client sent (any JSON value, null included),
 * as `data` reaches subscribers.
 */
#ifndef WSGATE_ROUTER_H
#define WSGATE_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "request.h"
#include "segment-t.h"
#include "worker-t.h"

/* Parse, admit (max_messages_per_second) and dispatch one message. */
void router_handle(struct conn *c, const char *msg, size_t len);

/* Replies, also to requests the hub completes later (cluster mode, through
 * router_app); id_json is the request's id serialised, or NULL. */
void router_reply_error(struct conn *c, const char *id_json, enum segment_refusal code,
                        const char *message);
/* The `error` for a negative errno from the hub (capacity, too_large,
 * unavailable, …). */
void router_reply_errno(struct conn *c, const char *id_json, int err);
void router_reply_ack(struct conn *c, const char *id_json, const char *stream, size_t len,
                      uint64_t seq);
/* The same in two steps, for a message parsed off the loop (session.h):
 * router_parse touches nothing but its arguments (any thread) and returns
 * request_parse's result; router_process takes the request and that
 * result (negative: not JSON, req->error says why) and frees the request. Rate limiting happens in
 * router_process, at the message's receive time (c->msg_start_ns); a
 * refused message gets `rate_limited` with its id and is not handled, and
 * past RATELIMIT_ABUSE_REFUSALS refusals in the window the connection is
 * closed with 1008. */
int router_parse(const char *msg, size_t len, struct request *req);
void router_process(struct conn *c, const char *msg, size_t len, struct request *req, int parsed);

/* The router as a connection's application (struct app_ops). */
extern const struct app_ops router_app;

#endif
