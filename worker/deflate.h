/*
 * deflate — permessage-deflate (RFC 7692) for one worker, on zlib.
 *
 * Out: a stream message is framed once per worker (hub); its compressed
 * form — the "twin", a complete frame with RSV1 — is built the first time
 * a connection that negotiated the extension needs it, attached to the
 * plain frame, and queued by reference for every such connection with the
 * same window size. No context takeover makes that valid: each message is
 * deflated on its own, so its bytes do not depend on what the connection
 * got before. Messages below compression_min_size, and those deflate would
 * not shrink, go plain. Replies (ack, pong, subscribed, errors) never come
 * here.
 *
 * In: a client message with RSV1 is inflated whole (wslay has assembled
 * its fragments), its inflated size bounded by max_message_size while
 * inflating, and checked to be UTF-8.
 *
 * One deflate stream per window size in use and one inflate stream serve
 * the whole worker; a connection holds no zlib state.
 */
#ifndef WSGATE_DEFLATE_H
#define WSGATE_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

/* Free the worker's streams (worker exit). */
void deflate_worker_free(struct worker *w);

/* The frame to queue for `c`: its compressed twin when c negotiated
 * permessage-deflate and f is a text message of at least
 * compression_min_size payload bytes that deflate shrinks; f otherwise
 * (also when memory runs out: the message then goes plain). Counts
 * websocket_compression_bytes_total{direction="out"}. */
struct sendq_frame *deflate_frame_for(struct conn *c, struct sendq_frame *f);

/* Inflate one compressed message of `len` bytes into a new buffer
 * (*out, free() it), producing at most `max` bytes. Returns 0, -EMSGSIZE
 * (more than max once inflated: nothing above max + 1 bytes was ever
 * allocated), -EBADMSG (not valid deflate data), -EILSEQ (inflated text
 * is not UTF-8) or -ENOMEM. */
int deflate_inflate(struct worker *w, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                    size_t *out_len);
/* The same with a stream of its own, for libuv's thread pool (one
 * inflate per message of SESSION_BIG_MESSAGE or more: the ~44 KiB of
 * setup is small beside it). */
int deflate_inflate_alone(const uint8_t *in, size_t len, size_t max, uint8_t **out,
                          size_t *out_len);

#endif
