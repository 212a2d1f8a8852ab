/*
 * deflate — permessage-deflate (RFC 7692) for one worker, on zlib.
 *
 * Out: a stream message is framed once per worker (hub); its compressed
 * forms — "twins", complete frames with RSV1 — hang off the plain frame
 * and are queued by reference, so a compressed message costs one deflate
 * per worker however many subscribers get it:
 * - the context twin: while a stream has subscribers that allow context
 *   takeover, the hub feeds each of its messages, in order, to the
 *   stream's shared context, which deflates it with the stream's previous
 *   message as preset dictionary: the message refers back to the one
 *   before, where ECG batches repeat nearly everything but their samples.
 *   Those bytes are right for every connection whose client window ends
 *   with that previous message — one that got it last, compressed. conn
 *   keeps which message that was (pmd_last), so this is one compare. A
 *   message is deflated so only when some connection in step took the
 *   previous one (sendq_frame.context_wanted): a stream read only by
 *   connections that interleave streams (ward walls) costs no deflate
 *   here.
 * - the independent twin, one per window size: the message deflated on
 *   its own, valid on any connection. A connection out of step with the
 *   context (it just subscribed, resumed, or gets several streams
 *   interleaved) gets this one, which also puts it back in step: the
 *   stream's next message can refer to it.
 * Messages below compression_min_size, and those deflate would not
 * shrink, go plain (outside any client window). Replies (ack, pong,
 * subscribed, errors) never come here.
 *
 * In: a client message with RSV1 is inflated whole (wslay has assembled
 * its fragments), its inflated size bounded by max_message_size while
 * inflating, and checked to be UTF-8. Clients keep no context
 * (client_no_context_takeover), so one inflate stream serves the worker.
 */
#ifndef WSGATE_DEFLATE_H
#define WSGATE_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

/* Free the worker's streams (worker exit). */
void deflate_worker_free(struct worker *w);

/* The twin chain's mark for the context twin (struct sendq_frame.wbits). */
#define DEFLATE_TWIN_CONTEXT 0xff

/* A stream's shared compression context in this worker. */
struct deflate_context;

/* Feed the text message in f (a stream's next message, in the order its
 * subscribers get them) to the stream's context *ctx, made on first use,
 * attaching the context twin to f. Not fed: messages below
 * compression_min_size (they go plain). On a zlib or memory failure the
 * context starts over and f goes without a context twin. */
void deflate_context_feed(struct worker *w, struct deflate_context **ctx, struct sendq_frame *f);

/* Free a stream's context (NULL: nothing). */
void deflate_context_free(struct deflate_context *x);

/* The frame to queue for `c`, to be queued next: the context twin when c
 * allows context takeover and is in step with f's context; else its
 * independent twin when c negotiated permessage-deflate and f is a text
 * message of at least compression_min_size payload bytes that deflate
 * shrinks; f otherwise (also when memory runs out: the message then goes
 * plain). Notes what entered c's client window. Counts
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
