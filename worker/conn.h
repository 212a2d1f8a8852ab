/*
 * conn — one accepted TCP connection, from accept to close.
 *
 * Reads, timeouts and the close go to the connection's handlers (struct
 * conn_handlers), installed by the layer above: the handshake's at accept,
 * the session's at upgrade (on a TLS port, bytes pass tlsconn first).
 * conn knows no module above it by name. Every close goes
 * through conn_close_with(), which is the one place that counts the
 * disconnection, logs it and gives back the replica-wide connection slot.
 * A connection that fails before it is a WebSocket counts exactly one
 * connection error (conn_refuse, or an I/O error), whatever follows.
 */
#ifndef WSGATE_CONN_H
#define WSGATE_CONN_H

#include "log-t.h"
#include "worker-t.h"

/* "address:port" of the peer fits in this. */
#define CONN_REMOTE_MAX 56

/* Set on the worker's listening socket the options every connection gets
 * (TCP_NODELAY, TCP_NOTSENT_LOWAT): Linux copies them to each accepted
 * socket, which saves two system calls per connection. Where that fails,
 * conn_accept sets them on each connection. */
void conn_listener_setup(struct worker *w);

/* Accept one pending connection from the worker's listener; `handlers`
 * serve it until the layer above installs others. */
void conn_accept(struct worker *w, const struct conn_handlers *handlers);

/* Bytes from the client (plaintext, with TLS): to the handlers' feed. */
void conn_deliver(struct conn *c, const char *data, size_t len);
/* The client's side ended (UV_EOF) or failed (a libuv error). */
void conn_read_failed(struct conn *c, int status);

/* The connection's send queue, made on first use: NULL only when out of
 * memory. An idle connection holds none (given back by the sweep). */
struct sendq *conn_queue(struct conn *c);
/* Queue a shared frame (a reference; see sendq_push_frame). The caller
 * marks the connection dirty. Returns 0 or -ENOMEM. */
int conn_push_frame(struct conn *c, struct sendq_frame *f, uint64_t origin_ns);

/* Queue output and make sure it is flushed this loop iteration. Returns 0,
 * -ENOTCONN (closed) or -ENOMEM. */
int conn_send(struct conn *c, const void *data, size_t len, uint64_t origin_ns);
void conn_mark_dirty(struct conn *c);

/* Write now, before anything else is queued, where nothing is queued ahead
 * on a plain socket (the handshake's one response, which then needs no
 * queue at all); what the kernel does not take is queued as by conn_send.
 * Returns 0, -ENOTCONN or -ENOMEM. */
int conn_send_now(struct conn *c, const void *data, size_t len);

/* Close now: count `reason` (WebSocket) and log the disconnect with `code`
 * (0 when no close frame was exchanged). Pending output is dropped. */
void conn_close_with(struct conn *c, enum segment_disconnect_reason reason, int code);

/* Refuse a connection still in its HTTP phase: count `error_type` (unless
 * this connection already has its one error counted) and close once the
 * response (if any) is flushed. */
void conn_refuse(struct conn *c, enum segment_connection_error error_type);

/* Read again after a pause (queued messages handled). */
void conn_resume_reading(struct conn *c);

/* Close once everything queued has been written. */
void conn_close_after_flush(struct conn *c, enum segment_disconnect_reason reason);

/* The write callback conn installs on its queue (sendq_write_cb): flush
 * what followed, close after the last byte, or count an I/O error. */
void conn_write_done(struct conn *c, int status);

/* Flush all dirty connections (the worker's uv_check). */
void conn_flush_dirty(struct worker *w);

/* Periodic checks: handshake and idle timeouts, heartbeats, close waits. */
void conn_sweep(struct worker *w, uint64_t now_ns);

/* "address:port" of the peer, "?:0" when unknown (out: CONN_REMOTE_MAX). */
void conn_remote_string(const struct conn *c, char *out, size_t len);
/* "<worker>-<n>", the id used in logs. */
void conn_id_string(const struct conn *c, char *out, size_t len);
/* Start a log line about this connection: its id and remote address. */
void conn_log_begin(struct log_line *l, const struct conn *c, enum log_level level,
                    const char *event);

#endif
