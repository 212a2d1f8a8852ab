/*
 * session — a connection's WebSocket phase, on wslay.
 *
 * wslay parses and validates incoming frames (masking, RSV bits, opcodes,
 * control-frame rules, close codes, UTF-8 of text and close reasons, the
 * message size limit) and answers pings and closes. We add what it leaves
 * to the application: refusing binary data (1003), turning frame-level
 * protocol errors into a proper 1002, and handing text messages to the
 * router. Outgoing text messages bypass wslay's per-message copy: the frame
 * is built straight into the connection's send queue (server frames are
 * unmasked, so the bytes are final).
 *
 * With permessage-deflate negotiated (c->pmd_wbits), wslay lets RSV1
 * through on the first frame of a data message (and still refuses it
 * elsewhere with 1002) and skips its UTF-8 check of compressed text; the
 * assembled message is inflated here (deflate.h), which also bounds it by
 * max_message_size (1009) and checks the UTF-8 (1007).
 */
#ifndef WSGATE_SESSION_H
#define WSGATE_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

/* Messages of SESSION_BIG_MESSAGE bytes or more are parsed on libuv's
 * thread pool (at a lower thread priority), not on the loop: validating
 * the JSON takes milliseconds per MiB, and a burst of maximum-size messages must not hold up
 * every other patient's stream. The connection stops being read until its
 * queue of waiting messages is empty, so messages stay in order and the
 * queue stays short; everything but the parse (rate limit, dispatch,
 * replies) happens on the loop, in order. */
#define SESSION_BIG_MESSAGE 65536

/* Create the session state and its wslay context (the first bytes that
 * need one): 0 or -ENOMEM. */
int session_start(struct conn *c);
void session_feed(struct conn *c, const uint8_t *data, size_t len);
void session_free(struct conn *c);

/* Queue one text message; origin_ns is the receive time of the request it
 * answers (0: none), observed in websocket_request_duration_seconds under
 * c->msg_type. Returns 0, -ENOTCONN (no longer in CONN_WS) or -ENOMEM. */
int session_send_text(struct conn *c, const char *text, size_t len, uint64_t origin_ns);

/* Send a close frame with `code`, then close the connection once the
 * client answers (or after a short wait). `reason` is what gets counted. */
void session_close(struct conn *c, uint16_t code, const char *text,
                   enum segment_disconnect_reason reason);
/* Tell the client when to come back, then close with `code` (1001 on
 * shutdown, 1012 when a reload retires the worker). */
void session_reconnect(struct conn *c, uint16_t code, uint32_t after_ms,
                       enum segment_disconnect_reason reason);
/* Close 1013 slow_consumer after what already reached the kernel (a
 * contiguous prefix); `why` names the rule that fired, for the log. */
void session_close_slow_consumer(struct conn *c, const char *why);
/* From inside a message callback: close with 1008 (policy violation) and
 * read nothing more; the connection goes once the close frame is out. */
void session_close_policy(struct conn *c, const char *why);
void session_ping(struct conn *c, uint64_t now_ns);
/* The session's deadlines (conn_handlers.sweep): a token that expired
 * without a fresh {"type":"auth"} closes 1008, connection_timeout without
 * a byte closes 1001, else a heartbeat ping is due every
 * heartbeat_interval. */
void session_sweep(struct conn *c, uint64_t now_ns, int64_t now_ms);

/* Free the session state (struct session_live and its wslay context, about
 * 9.3 KiB of heap) of a connection that sits between frames with nothing
 * waiting and a full rate bucket; the next bytes bring new ones. Called for
 * connections quiet for a while, so busy ones keep theirs. */
void session_release_if_idle(struct conn *c);

/* The connection is going: drop its waiting messages (one still on the
 * thread pool is freed when it comes back). */
void session_drop_pending(struct conn *c);

/* Apply a new max_message_size to a live session. */
void session_apply_limits(struct conn *c);

#endif
