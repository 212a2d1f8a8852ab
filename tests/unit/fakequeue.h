/*
 * fakequeue — what the worker unit suites read back from a connection's
 * send queue, and the bare worker and connection they queue to.
 * Header-only (static functions), so each suite stays one executable that
 * may also #include the .c it tests (inline: a suite may use one and not
 * the other).
 *
 *   fakequeue_worker(slot)        a worker with the default config, no
 *                                 loop, counting into *slot (zeroed)
 *   fakequeue_conn(w, write_cb)   a WebSocket-state connection of worker w
 *   fakequeue_frames(q, out, max) the server frames queued in q, in order,
 *                                 each "opcode:payload" ("8:<code>" for a
 *                                 close); a frame may span chunks (wslay
 *                                 writes a close frame in two)
 */
#ifndef WSGATE_TEST_FAKEQUEUE_H
#define WSGATE_TEST_FAKEQUEUE_H

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "sendq.h"
#include "worker-t.h"

static inline struct worker *fakequeue_worker(struct segment_worker *slot)
{
    struct worker *w = calloc(1, sizeof(*w));
    ck_assert_ptr_nonnull(w);
    config_defaults(&w->cfg);
    memset(slot, 0, sizeof(*slot));
    w->slot = slot;
    return w;
}

static inline struct conn *fakequeue_conn(struct worker *w, sendq_write_cb write_cb)
{
    struct conn *c = calloc(1, sizeof(*c));
    ck_assert_ptr_nonnull(c);
    c->w = w;
    c->state = CONN_WS;
    c->id = ++w->next_conn_id;
    c->out = calloc(1, sizeof(*c->out));
    sendq_init(c->out, write_cb);
    c->next = w->conns;
    w->conns = c;
    return c;
}

static inline int fakequeue_frames(const struct sendq *q, char out[][256], int max)
{
    static uint8_t all[65536];
    size_t total = 0;
    for (struct sendq_chunk *ch = q->head; ch; ch = ch->next) {
        ck_assert_uint_le(total + ch->len, sizeof(all));
        memcpy(all + total, sendq_chunk_bytes(ch), ch->len);
        total += ch->len;
    }
    int n = 0;
    for (size_t at = 0; at < total && n < max; n++) {
        const uint8_t *b = all + at;
        ck_assert_int_eq(b[1] & 0x80, 0); /* server frames are never masked */
        size_t len = b[1] & 0x7f, h = 2;
        if (len == 126) {
            len = (size_t)b[2] << 8 | b[3];
            h = 4;
        }
        if ((b[0] & 0x0f) == 8)
            snprintf(out[n], 256, "8:%u", len >= 2 ? (unsigned)(b[h] << 8 | b[h + 1]) : 0);
        else
            snprintf(out[n], 256, "%d:%.*s", b[0] & 0x0f, (int)len, b + h);
        at += h + len;
    }
    return n;
}

#endif
