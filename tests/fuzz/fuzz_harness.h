/*
 * fuzz_harness — a fake worker for the fuzz targets that drive worker code
 * (fuzz_router, fuzz_session).
 *
 * A real struct worker around its own libuv loop and hub (eventfd and
 * all), with a segment laid out like segment_create's but in plain memory
 * (no shm), stream logs included.
 * Connections are real libuv streams over AF_UNIX sockets, so everything
 * the server writes goes through sendq and uv_try_write/uv_write exactly as
 * in production; the harness holds the client end ("peer") and reads back
 * what the server sent.
 *
 * Everything a harness function creates is freed by fuzz_worker_free(),
 * which also checks that no libuv handle is left open: libFuzzer runs with
 * leak detection, so a connection the server forgets to free is a finding.
 */
#ifndef WSGATE_FUZZ_HARNESS_H
#define WSGATE_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

/* Everything the server wrote to the peer, for the targets' oracles. */
struct fuzz_output {
    uint8_t *data;
    size_t len, cap;
};

struct fuzz_worker {
    struct worker *w;
    int listen_fd;              /* fuzz_worker_listen: bound AF_UNIX socket, or -1 */
    struct fuzz_output out;     /* bytes read from peers by fuzz_pump */
};

/* Quiet logs (errors only), SIGPIPE ignored; call once per process. */
void fuzz_harness_init(void);

/* A worker with a fresh loop, segment (stream logs included: a few small
 * streams with a short history) and otherwise the default config. */
struct fuzz_worker *fuzz_worker_new(void);

/* Close every connection and the listener, run the loop until every close
 * callback has run, and free it all. Aborts if a handle stays open. */
void fuzz_worker_free(struct fuzz_worker *fw);

/* A connection on one end of a socketpair (uv_tcp_open), linked into the
 * worker like an accepted one. In CONN_WS it holds a reserved connection
 * and a wslay session (session_start); in CONN_HTTP a fresh request head.
 * *peer gets the other end (non-blocking; the caller closes it). */
struct conn *fuzz_conn_socketpair(struct fuzz_worker *fw, enum conn_state state, int *peer);

/* Make the worker listen on a fresh abstract AF_UNIX address with the
 * production accept path (conn_accept → conn_on_read → handshake/session)
 * and return a connected client socket (non-blocking), or -1. */
int fuzz_worker_connect(struct fuzz_worker *fw);

/* Run the worker until it is quiet: loop iterations (UV_RUN_NOWAIT), the
 * flush the worker's uv_check would do, and reading whatever the server
 * wrote to `peer` (appended to fw->out; peer may be -1). */
void fuzz_pump(struct fuzz_worker *fw, int peer);

/* Live (not yet closed) connections of the worker. */
int fuzz_live_conns(const struct fuzz_worker *fw);

/* Oracle for what a server may put on the wire after the handshake: whole
 * frames only, FIN set, unmasked, no RSV bits (but see fuzz_deflate_wbits), opcodes text/close/ping/pong,
 * control payloads <= 125 bytes, a close frame with no payload or a valid
 * code, nothing after the close frame, and every text payload a JSON object
 * with a string "type". Calls on_text (may be NULL) with each parsed text
 * message. Aborts with a description on the first violation. Returns the
 * number of frames. */
typedef void (*fuzz_text_fn)(void *arg, const char *json, size_t len);
/* 0: RSV bits are a violation. 8..15: permessage-deflate was negotiated
 * with that server window: RSV1 text frames must inflate with it (no
 * context takeover) and are checked as their inflated text. */
extern int fuzz_deflate_wbits;

/* Parse JSON as the gateway accepts it (router_handle): "\u0000" allowed,
 * integers beyond 64 bits read as reals, duplicate keys refused when
 * `strict`. NULL when it is not JSON. */
struct json_t;
struct json_t *fuzz_json_parse(const char *text, size_t len, int strict);
/* The `type` of a server text message into type (cap bytes): 0, or -1 when
 * the text is not a JSON object with a string type. */
int fuzz_text_type(const char *text, size_t len, char *type, size_t cap);
size_t fuzz_check_server_frames(const uint8_t *p, size_t len, fuzz_text_fn on_text, void *arg);

#endif
