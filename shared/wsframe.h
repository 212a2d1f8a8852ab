/*
 * wsframe — the one encoder of RFC 6455 frame headers the gateway writes
 * itself (server frames: never masked). Every frame built outside wslay —
 * stream messages shared by subscribers, replies, gaps — gets its header
 * here, so the three length forms (7-bit, 16-bit, 64-bit) exist once.
 */
#ifndef WSGATE_WSFRAME_H
#define WSGATE_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

#define WSFRAME_HEADER_MAX 10
#define WSFRAME_TEXT 0x81 /* FIN + text */
#define WSFRAME_RSV1 0x40 /* permessage-deflate: the payload is compressed */

/* Header bytes for a payload of `payload` bytes: 2, 4 or 10. */
size_t wsframe_header_size(uint64_t payload);
/* Write the header (first byte `first`: FIN, RSV and opcode bits) into
 * out (room for WSFRAME_HEADER_MAX); returns its size. */
size_t wsframe_put_header(uint8_t *out, uint8_t first, uint64_t payload);
/* The size of the header wsframe_put_header wrote at the start of frame. */
size_t wsframe_header_size_of(const uint8_t *frame);

#endif
