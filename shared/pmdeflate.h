/*
 * pmdeflate — the permessage-deflate offer (RFC 7692) in a WebSocket
 * handshake: which offer the gateway accepts and what it answers.
 *
 * The gateway's choice is fixed and shapes every answer:
 * - what it sends may use context takeover (RFC 7692 7.1.1.1), with a
 *   window of PMDEFLATE_CONTEXT_WBITS: a stream message may be deflated
 *   against the stream's previous message, once per worker, for every
 *   subscriber that got that previous message last. It says
 *   server_no_context_takeover only when the client asked for it or
 *   allowed a window smaller than that: then every message it gets is
 *   compressed on its own;
 * - what clients send must use no context takeover (it says
 *   client_no_context_takeover even when not offered, 7.1.1.2): a client
 *   context would cost each connection a 32 KiB window plus ~7 KiB of
 *   inflate state for its whole life, most of them silent subscribers;
 *   without it one inflate stream per worker serves them all;
 * - client_max_window_bits is never answered: the worker inflates with a
 *   32 KiB window, which reads any window the client picks;
 * - server_max_window_bits=N is honoured for every N in 8..15 (8 with
 *   Huffman-only coding, since zlib's raw deflate has no 256-byte window).
 *
 * Offers are tried in order; one with an unknown or duplicated parameter
 * or a bad value is declined (RFC 7692 5) and the next one is considered.
 * A header that does not parse as an extension list (RFC 6455 9.1) at all
 * is refused with 400: what was offered cannot be told.
 */
#ifndef WSGATE_PMDEFLATE_H
#define WSGATE_PMDEFLATE_H

#include <stddef.h>
#include <stdint.h>

/* The response header line this module writes, at most. */
#define PMDEFLATE_RESPONSE_MAX 160

/* The window of the gateway's shared compression contexts: 4 KiB holds
 * the previous message of an ECG stream (1-4 KB), where nearly all the
 * gain of context takeover is; a client that allows less gets no
 * context takeover. */
#define PMDEFLATE_CONTEXT_WBITS 12

struct pmdeflate_agreement {
    uint8_t server_wbits;        /* window the gateway deflates with, 8..15 */
    uint8_t server_wbits_asked;  /* 1: the offer named server_max_window_bits: echo it */
    uint8_t server_takeover;     /* 1: the gateway may keep its context between messages */
};

/* Look through one Sec-WebSocket-Extensions value (several header lines
 * joined with ", " in their order). Returns 1 with *out filled when a
 * permessage-deflate offer is accepted, 0 when none is (none made, or all
 * declined), or -EINVAL with *why set when the header is malformed. */
int pmdeflate_negotiate(const char *value, size_t len, struct pmdeflate_agreement *out,
                        const char **why);

/* The whole "Sec-WebSocket-Extensions: ...\r\n" line for an agreement.
 * Returns its length, or -ENOSPC. */
int pmdeflate_response(const struct pmdeflate_agreement *a, char *out, size_t cap);

#endif
