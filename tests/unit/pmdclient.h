/*
 * pmdclient — a permessage-deflate client's side of server frames, for the
 * deflate unit suite and fuzz_deflate_context. Header-only (static
 * inline), like unit.h; no Check, so a fuzz target can use it too.
 *
 *   pmdclient_frame(p, n)        a text frame as the hub builds it, around
 *                                n payload bytes (n < 65536)
 *   pmdclient_payload(f, &p)     a server frame's payload and its length
 *   pmdclient_read(inf, t, w, n) what a client with one inflate stream for
 *                                its whole life (RFC 7692 7.2.2) reads from
 *                                frame t: 0 when it is the n bytes at w
 *                                (inflated when t has RSV1), -1 otherwise
 */
#ifndef WSGATE_TEST_PMDCLIENT_H
#define WSGATE_TEST_PMDCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "sendq.h"
#include "worker-t.h"

#define PMDCLIENT_TEXT_MAX 65536

static inline struct sendq_frame *pmdclient_frame(const uint8_t *payload, size_t n)
{
    size_t h = n < 126 ? 2 : 4;
    struct sendq_frame *f = sendq_frame_new(h + n);
    if (!f)
        abort();
    f->bytes[0] = (char)0x81;
    if (h == 2) {
        f->bytes[1] = (char)n;
    } else {
        f->bytes[1] = 126;
        f->bytes[2] = (char)(n >> 8);
        f->bytes[3] = (char)n;
    }
    memcpy(f->bytes + h, payload, n);
    return f;
}

static inline size_t pmdclient_payload(const struct sendq_frame *f, const uint8_t **p)
{
    const uint8_t *b = (const uint8_t *)f->bytes;
    size_t h = (b[1] & 0x7f) < 126 ? 2 : (b[1] & 0x7f) == 126 ? 4 : 10;
    *p = b + h;
    return f->len - h;
}

static inline int pmdclient_read(z_stream *inf, const struct sendq_frame *t, const uint8_t *want,
                                 size_t wlen)
{
    const uint8_t *p;
    size_t n = pmdclient_payload(t, &p);
    if (!((uint8_t)t->bytes[0] & 0x40))
        return n == wlen && memcmp(p, want, n) == 0 ? 0 : -1;
    static uint8_t in[PMDCLIENT_TEXT_MAX + 4], out[PMDCLIENT_TEXT_MAX];
    if (n > PMDCLIENT_TEXT_MAX)
        return -1;
    memcpy(in, p, n);
    memcpy(in + n, "\x00\x00\xff\xff", 4);
    inf->next_in = in;
    inf->avail_in = (uInt)n + 4;
    inf->next_out = out;
    inf->avail_out = sizeof(out);
    if (inflate(inf, Z_SYNC_FLUSH) != Z_OK || inf->avail_in != 0)
        return -1;
    size_t got = sizeof(out) - inf->avail_out;
    return got == wlen && memcmp(out, want, wlen) == 0 ? 0 : -1;
}

#endif
