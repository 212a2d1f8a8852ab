/*
 * tlsconn — TLS between a connection's socket and its HTTP/WebSocket
 * layers: OpenSSL driven through two memory BIOs, so the socket stays a
 * non-blocking libuv stream and nothing here ever blocks.
 *
 * In: ciphertext read from the socket is written to the read BIO; the
 * handshake runs as bytes arrive; once it is complete, SSL_read's plaintext
 * goes to the connection (its tlsconn_ops' deliver, conn_deliver) exactly
 * as a plain connection's bytes would. tlsconn knows the connection only
 * through those ops and its send queue's write callback.
 *
 * Out: the send queue holds plaintext as on a plain connection. A flush
 * (still once per loop iteration, from the worker's uv_check) encrypts a
 * batch of chunks at the head of the queue with SSL_write, moves the
 * ciphertext from the write BIO to the kernel with uv_try_write (uv_write
 * for what the kernel would not take), and retires the batch only when its
 * last ciphertext byte is in the kernel: messages sent and the latency
 * histogram keep meaning "handed to the kernel". A plain connection never
 * comes here (c->tls is NULL) and pays nothing for it.
 *
 * Failures before the handshake completes (plain HTTP or garbage on the
 * port, a handshake OpenSSL refuses, one that stalls past
 * handshake_timeout, a client that hangs up mid-handshake) count
 * websocket_connection_errors_total{error_type="tls"} once, log one warn
 * line with OpenSSL's reason, send whatever alert OpenSSL queued, and
 * close. A client that connects and closes without sending a byte is a
 * port probe, not an error, as on a plain port.
 *
 * Each worker builds its own SSL_CTX from the config generation; a reload
 * that brings a new pair builds a new one for new connections, while live
 * sessions keep a reference to the context they started with.
 */
#ifndef WSGATE_TLSCONN_H
#define WSGATE_TLSCONN_H

#include <stddef.h>

#include "log-t.h"
#include "tls-t.h"
#include "worker-t.h"

/* What tlsconn asks of the connection it serves (conn.c's): plaintext
 * read, the end of the client's side after the handshake, a refusal or a
 * close, output to flush, the connection's log line. */
struct tlsconn_ops {
    void (*deliver)(struct conn *c, const char *data, size_t len);
    void (*read_failed)(struct conn *c, int status);
    void (*refuse)(struct conn *c, enum segment_connection_error type);
    void (*close)(struct conn *c, enum segment_disconnect_reason reason, int code);
    void (*mark_dirty)(struct conn *c);
    void (*log_begin)(struct log_line *l, const struct conn *c, enum log_level level,
                      const char *event);
    /* A ciphertext write that had to wait finished (status as
     * sendq_write_cb's). */
    void (*write_done)(struct conn *c, int status);
};

/* Attach TLS to an accepted connection (w->tls_ctx is set), serving it
 * through `ops`; 0 or -ENOMEM. */
int tlsconn_start(struct conn *c, const struct tlsconn_ops *ops);
/* Free the connection's TLS state (from the close callback). */
void tlsconn_free(struct conn *c);

/* Ciphertext read from the socket. */
void tlsconn_feed(struct conn *c, const char *data, size_t len);
/* The socket failed or hit EOF while the handshake was incomplete. */
void tlsconn_read_failed(struct conn *c, int status);
/* handshake_timeout passed before the handshake completed. */
void tlsconn_timed_out(struct conn *c);

/* Encrypt and write what the kernel takes now; 0, or a negative libuv
 * error when the connection is broken. */
int tlsconn_flush(struct conn *c);
/* Ciphertext still to be written (or a close_notify still to be sent). */
int tlsconn_output_left(const struct conn *c);

static inline int tlsconn_established(const struct conn *c)
{
    return c->tls->established;
}

/* A quiet session gives back BIO buffers grown by an earlier burst. */
void tlsconn_release_if_idle(struct conn *c);

/* Worker: build the first SSL_CTX from the pair the master validated
 * (inherited across fork); 0, or -EINVAL (logged) when TLS is on and none
 * could be built. Does nothing when TLS is off. */
int tlsconn_ctx_init(struct worker *w, const struct tls_pair *pair);
/* Worker: a new config generation; build a new SSL_CTX if its pair or
 * tls_min_version changed (rereading the files, used only if they still
 * hash to what the master validated). */
void tlsconn_ctx_refresh(struct worker *w);
void tlsconn_ctx_free(struct worker *w);

#endif
