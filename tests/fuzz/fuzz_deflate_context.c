/*
 * fuzz_deflate_context — libFuzzer target for the stream contexts of
 * worker/deflate.c (messages deflated against their stream's previous
 * one, shared by every connection in step).
 *
 * The input is a program: publishes on three streams (text taken from the
 * input, repeated to any length, so short, long, repetitive or not), four
 * clients with different windows and context-takeover permissions
 * subscribing and unsubscribing, missing a message (as after a resume or
 * a replay), reconnecting, and compression_level / compression_min_size
 * changing between messages. The streams' contexts live while a client
 * that allows takeover follows them, as the hub keeps them.
 *
 * Oracle: every client keeps one inflate stream for its whole life, as
 * RFC 7692 has it, and every frame deflate_frame_for picks for it must be
 * the message's text, plain or inflated. A compressed frame that refers to
 * text the client does not hold shows as an inflate error or wrong text.
 *
 * Seeds: tests/fuzz/corpus/fuzz_deflate_context/, from make_seeds.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deflate.h"
#include "segment-t.h"
#include "sendq.h"
#include "worker-t.h"
#include "../unit/pmdclient.h"

#define FUZZ_STREAMS 3
#define FUZZ_CLIENTS 4
#define FUZZ_TEXT_MAX 16384 /* below PMDCLIENT_TEXT_MAX */

struct fuzz_client {
    struct conn c;
    z_stream inf;
    int open;
    unsigned subscribed; /* bit s: follows stream s */
    int skip_next;
};

static const uint8_t fuzz_client_wbits[FUZZ_CLIENTS] = {15, 12, 15, 10};
static const uint8_t fuzz_client_takeover[FUZZ_CLIENTS] = {1, 1, 0, 0};

static struct worker fuzz_w;
static struct segment_worker fuzz_slot;

static void fuzz_client_open(struct fuzz_client *cl, int i)
{
    memset(&cl->c, 0, sizeof(cl->c));
    cl->c.w = &fuzz_w;
    cl->c.pmd_wbits = fuzz_client_wbits[i];
    cl->c.pmd_takeover = fuzz_client_takeover[i];
    memset(&cl->inf, 0, sizeof(cl->inf));
    if (inflateInit2(&cl->inf, -(int)fuzz_client_wbits[i]) != Z_OK)
        abort();
    cl->open = 1;
    cl->subscribed = 0;
    cl->skip_next = 0;
}

static void fuzz_client_close(struct fuzz_client *cl)
{
    if (cl->open)
        inflateEnd(&cl->inf);
    cl->open = 0;
}

/* The client reads what deflate_frame_for queues for it. */
static void fuzz_client_get(struct fuzz_client *cl, struct sendq_frame *f)
{
    const uint8_t *want;
    size_t wlen = pmdclient_payload(f, &want);
    struct sendq_frame *t = deflate_frame_for(&cl->c, f);
    if (!((uint8_t)t->bytes[0] & 0x40) && t != f)
        abort();
    if (pmdclient_read(&cl->inf, t, want, wlen) != 0)
        abort();
}

/* A message frame of stream s: the hub's envelope around `body`
 * repeated `times` times. */
static struct sendq_frame *fuzz_message(unsigned s, unsigned seq, const uint8_t *body, size_t blen,
                                        unsigned times)
{
    static char text[FUZZ_TEXT_MAX];
    size_t n = (size_t)snprintf(text, sizeof(text),
                                "{\"type\":\"message\",\"stream\":\"s%u\",\"seq\":%u,\"data\":", s, seq);
    for (unsigned i = 0; i < times && n + blen + 1 < sizeof(text); i++) {
        memcpy(text + n, body, blen);
        n += blen;
    }
    text[n++] = '}';
    return pmdclient_frame((const uint8_t *)text, n);
}

/* Does any client that allows takeover follow stream s (the hub keeps a
 * context only then)? */
static int fuzz_stream_has_takeover(const struct fuzz_client *cl, unsigned s)
{
    for (int i = 0; i < FUZZ_CLIENTS; i++) {
        if (cl[i].open && (cl[i].subscribed & (1u << s)) && cl[i].c.pmd_takeover)
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&fuzz_w, 0, sizeof(fuzz_w));
    memset(&fuzz_slot, 0, sizeof(fuzz_slot));
    fuzz_w.slot = &fuzz_slot;
    fuzz_w.cfg.compression_level = 3;
    fuzz_w.cfg.compression_min_size = 64;
    struct fuzz_client cl[FUZZ_CLIENTS];
    for (int i = 0; i < FUZZ_CLIENTS; i++)
        fuzz_client_open(&cl[i], i);
    struct deflate_context *ctx[FUZZ_STREAMS] = {NULL};
    unsigned seq[FUZZ_STREAMS] = {0};
    size_t pos = 0;
    while (pos < size) {
        uint8_t op = data[pos++];
        uint8_t arg = pos < size ? data[pos++] : 0;
        unsigned who = (op >> 3) % FUZZ_CLIENTS;
        switch (op & 7) {
        case 0:
        case 1:
        case 2: { /* publish on stream op&3 (0..2): body = next arg%64+1 bytes, repeated */
            unsigned s = op & 3u;
            size_t blen = (size_t)(arg % 64) + 1;
            if (blen > size - pos)
                blen = size - pos;
            const uint8_t *body = data + pos;
            pos += blen;
            unsigned times = 1 + (unsigned)(op >> 5) * 9;
            struct sendq_frame *f = fuzz_message(s, ++seq[s], body, blen, times);
            if (fuzz_stream_has_takeover(cl, s))
                deflate_context_feed(&fuzz_w, &ctx[s], f);
            for (int i = 0; i < FUZZ_CLIENTS; i++) {
                if (!(cl[i].subscribed & (1u << s)))
                    continue;
                if (cl[i].skip_next) {
                    cl[i].skip_next = 0;
                    continue;
                }
                fuzz_client_get(&cl[i], f);
            }
            sendq_frame_unref(f);
            break;
        }
        case 3: /* client `who` subscribes to or leaves stream arg%3 */
            cl[who].subscribed ^= 1u << (arg % FUZZ_STREAMS);
            break;
        case 4:
            cl[who].skip_next = 1;
            break;
        case 5:
            fuzz_w.cfg.compression_level = 1 + arg % 9;
            break;
        case 6:
            fuzz_w.cfg.compression_min_size = (int64_t)arg * 4;
            break;
        case 7: /* client `who` reconnects: a new connection, a new client window */
            fuzz_client_close(&cl[who]);
            fuzz_client_open(&cl[who], (int)who);
            break;
        }
        /* The hub frees a context when its last takeover subscriber goes. */
        for (unsigned s = 0; s < FUZZ_STREAMS; s++) {
            if (ctx[s] && !fuzz_stream_has_takeover(cl, s)) {
                deflate_context_free(ctx[s]);
                ctx[s] = NULL;
            }
        }
    }
    for (unsigned s = 0; s < FUZZ_STREAMS; s++)
        deflate_context_free(ctx[s]);
    for (int i = 0; i < FUZZ_CLIENTS; i++)
        fuzz_client_close(&cl[i]);
    deflate_worker_free(&fuzz_w);
    return 0;
}
