/*
 * Unit suite for worker/deflate.c: the compressed twin of a shared frame
 * (built once per window, valid RFC 7692 data that zlib reads back with
 * that window, RSV1 set, plain below compression_min_size, for
 * connections that did not negotiate and when deflate does not shrink the
 * message, counted); a stream's shared context (its twin shared by every
 * connection in step, and every connection's client — a zlib inflate
 * stream kept for the whole connection — reading every message right
 * while connections join late, miss messages, get other streams' and
 * plain messages in between, and the level changes); and inflating
 * client messages (round trip, the max_message_size bound, bombs,
 * corrupt data, final blocks, UTF-8).
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "deflate.h"
#include "pmdclient.h"
#include "segment-t.h"
#include "sendq.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;

static void setup(void)
{
    w = calloc(1, sizeof(*w));
    memset(&slot, 0, sizeof(slot));
    w->slot = &slot;
    w->cfg.compression_level = 6;
    w->cfg.compression_min_size = 256;
}

static void teardown(void)
{
    deflate_worker_free(w);
    free(w);
}

/* An ECG-shaped text frame as the hub builds it. */
static struct sendq_frame *text_frame(size_t *plen)
{
    char body[8192];
    size_t n = (size_t)snprintf(body, sizeof(body), "{\"type\":\"message\",\"data\":[");
    for (int i = 0; i < 900; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "%s%d", i ? "," : "", (i * 37) % 400 - 200);
    body[n++] = ']';
    body[n++] = '}';
    struct sendq_frame *f = pmdclient_frame((const uint8_t *)body, n);
    *plen = n;
    return f;
}

/* Does a client of window `wbits` that got nothing compressed before
 * read t as the `wlen` bytes at `want`? */
static int reads_alone(const struct sendq_frame *t, int wbits, const uint8_t *want, size_t wlen)
{
    z_stream s = {0};
    ck_assert_int_eq(inflateInit2(&s, -wbits), Z_OK);
    int r = pmdclient_read(&s, t, want, wlen);
    inflateEnd(&s);
    return r == 0;
}

static struct conn conn_with(uint8_t wbits)
{
    struct conn c;
    memset(&c, 0, sizeof(c));
    c.w = w;
    c.pmd_wbits = wbits;
    return c;
}

START_TEST(twin_built_once_and_shared)
{
    size_t plen;
    struct sendq_frame *f = text_frame(&plen);
    struct conn a = conn_with(15), b = conn_with(15);
    struct sendq_frame *t = deflate_frame_for(&a, f);
    ck_assert_ptr_ne(t, f);
    ck_assert_uint_eq((uint8_t)t->bytes[0], 0xc1); /* FIN + RSV1 + text */
    ck_assert_ptr_eq(deflate_frame_for(&b, f), t);
    const uint8_t *p;
    size_t clen = pmdclient_payload(t, &p);
    ck_assert_uint_lt(clen * 3, plen);
    uint8_t text[16384];
    memcpy(text, f->bytes + 4, plen);
    ck_assert(reads_alone(t, 15, text, plen));
    ck_assert_uint_eq(slot.counters.compression_bytes[COMPRESSION_OUT][COMPRESSION_BEFORE], 2 * plen);
    ck_assert_uint_eq(slot.counters.compression_bytes[COMPRESSION_OUT][COMPRESSION_AFTER], 2 * clen);
    /* the queue's reference outlives the builder's */
    t->refs++;
    sendq_frame_unref(f);
    ck_assert(reads_alone(t, 15, text, plen));
    sendq_frame_unref(t);
}
END_TEST

START_TEST(one_twin_per_window)
{
    size_t plen;
    struct sendq_frame *f = text_frame(&plen);
    struct sendq_frame *seen[16] = {0};
    for (int wb = 8; wb <= 15; wb++) {
        struct conn c = conn_with((uint8_t)wb);
        struct sendq_frame *t = deflate_frame_for(&c, f);
        ck_assert_ptr_ne(t, f);
        ck_assert_uint_eq(t->wbits, wb);
        seen[wb] = t;
        /* a client with exactly that window reads it */
        ck_assert(reads_alone(t, wb, (const uint8_t *)f->bytes + 4, plen));
    }
    for (int wb = 8; wb <= 15; wb++) {
        struct conn c = conn_with((uint8_t)wb);
        ck_assert_ptr_eq(deflate_frame_for(&c, f), seen[wb]);
    }
    sendq_frame_unref(f); /* frees the whole chain (the leak check says so) */
}
END_TEST

START_TEST(plain_when_not_worth_it)
{
    size_t plen;
    struct sendq_frame *f = text_frame(&plen);
    struct conn none = conn_with(0), c = conn_with(15);
    ck_assert_ptr_eq(deflate_frame_for(&none, f), f);
    w->cfg.compression_min_size = (int64_t)plen + 1;
    ck_assert_ptr_eq(deflate_frame_for(&c, f), f);
    ck_assert_uint_eq(slot.counters.compression_bytes[COMPRESSION_OUT][COMPRESSION_BEFORE], 0);
    w->cfg.compression_min_size = (int64_t)plen;
    ck_assert_ptr_ne(deflate_frame_for(&c, f), f);
    sendq_frame_unref(f);

    /* bytes deflate cannot shrink: plain, and not tried again */
    uint8_t noise[1000];
    srandom(7);
    for (int i = 0; i < 1000; i++)
        noise[i] = (uint8_t)random();
    struct sendq_frame *r = pmdclient_frame(noise, sizeof(noise));
    w->cfg.compression_min_size = 0;
    ck_assert_ptr_eq(deflate_frame_for(&c, r), r);
    ck_assert_uint_ne(r->incompressible & (1u << 15), 0);
    ck_assert_ptr_eq(deflate_frame_for(&c, r), r);
    sendq_frame_unref(r);
}
END_TEST

START_TEST(level_change_applies)
{
    size_t plen;
    struct sendq_frame *f = text_frame(&plen), *g = text_frame(&plen);
    struct conn c = conn_with(15);
    w->cfg.compression_level = 1;
    const uint8_t *p;
    size_t fast = pmdclient_payload(deflate_frame_for(&c, f), &p);
    w->cfg.compression_level = 9;
    struct sendq_frame *t = deflate_frame_for(&c, g);
    size_t best = pmdclient_payload(t, &p);
    ck_assert_uint_le(best, fast);
    ck_assert(reads_alone(t, 15, (const uint8_t *)g->bytes + 4, plen));
    sendq_frame_unref(f);
    sendq_frame_unref(g);
}
END_TEST

/* Raw deflate as a client sends it: sync flush, tail stripped; or a final
 * block (Z_FINISH) when `final`. */
static size_t client_deflate(const void *in, size_t len, uint8_t *out, size_t cap, int final)
{
    z_stream s = {0};
    ck_assert_int_eq(deflateInit2(&s, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    s.next_in = (Bytef *)in;
    s.avail_in = (uInt)len;
    s.next_out = out;
    s.avail_out = (uInt)cap;
    int r = deflate(&s, final ? Z_FINISH : Z_SYNC_FLUSH);
    ck_assert_int_eq(r, final ? Z_STREAM_END : Z_OK);
    size_t n = cap - s.avail_out;
    deflateEnd(&s);
    if (!final) {
        ck_assert_mem_eq(out + n - 4, "\x00\x00\xff\xff", 4);
        n -= 4;
    }
    return n;
}

START_TEST(inflate_round_trip)
{
    static const char msg[] = "{\"type\":\"publish\",\"stream\":\"p\",\"data\":[1,2,3,1,2,3,1,2,3]}";
    uint8_t c[256];
    for (int final = 0; final <= 1; final++) {
        size_t n = client_deflate(msg, sizeof(msg) - 1, c, sizeof(c), final);
        uint8_t *out = NULL;
        size_t len = 0;
        ck_assert_int_eq(deflate_inflate(w, c, n, 1024, &out, &len), 0);
        ck_assert_uint_eq(len, sizeof(msg) - 1);
        ck_assert_mem_eq(out, msg, len);
        free(out);
    }
    /* an empty message: an empty stored block, or nothing at all */
    uint8_t *out = NULL;
    size_t len = 7;
    ck_assert_int_eq(deflate_inflate(w, (const uint8_t *)"\x00", 1, 1024, &out, &len), 0);
    ck_assert_uint_eq(len, 0);
    free(out);
    ck_assert_int_eq(deflate_inflate(w, NULL, 0, 1024, &out, &len), 0);
    ck_assert_uint_eq(len, 0);
    free(out);
}
END_TEST

START_TEST(inflate_limit_is_exact)
{
    char msg[1000];
    memset(msg, 'a', sizeof(msg));
    uint8_t c[256];
    size_t n = client_deflate(msg, sizeof(msg), c, sizeof(c), 0);
    uint8_t *out = NULL;
    size_t len = 0;
    ck_assert_int_eq(deflate_inflate(w, c, n, 1000, &out, &len), 0);
    ck_assert_uint_eq(len, 1000);
    free(out);
    ck_assert_int_eq(deflate_inflate(w, c, n, 999, &out, &len), -EMSGSIZE);
    ck_assert_int_eq(deflate_inflate(w, c, n, 16, &out, &len), -EMSGSIZE);
}
END_TEST

START_TEST(inflate_bomb_stops_at_the_limit)
{
    /* 64 MiB of spaces deflates to ~64 KiB */
    size_t big = 64u << 20;
    char *msg = malloc(big);
    memset(msg, ' ', big);
    size_t cap = big / 500;
    uint8_t *c = malloc(cap);
    size_t n = client_deflate(msg, big, c, cap, 0);
    free(msg);
    ck_assert_uint_lt(n, 128 * 1024);
    uint8_t *out = NULL;
    size_t len = 0;
    ck_assert_int_eq(deflate_inflate(w, c, n, 1 << 20, &out, &len), -EMSGSIZE);
    /* the thread pool's own stream: the same bound */
    ck_assert_int_eq(deflate_inflate_alone(c, n, 1 << 20, &out, &len), -EMSGSIZE);
    ck_assert_int_eq(deflate_inflate_alone(c, n, 64u << 20, &out, &len), 0);
    ck_assert_uint_eq(len, big);
    free(out);
    /* the worker's stream is fine for the next message */
    static const char ok[] = "{\"type\":\"ping\"}";
    size_t m = client_deflate(ok, sizeof(ok) - 1, c, cap, 0);
    ck_assert_int_eq(deflate_inflate(w, c, m, 1 << 20, &out, &len), 0);
    ck_assert_mem_eq(out, ok, len);
    free(out);
    free(c);
}
END_TEST

START_TEST(inflate_rejects_bad_data)
{
    uint8_t *out = NULL;
    size_t len = 0;
    /* BTYPE 11 is reserved */
    ck_assert_int_eq(deflate_inflate(w, (const uint8_t *)"\xff\xff\xff", 3, 1024, &out, &len),
                     -EBADMSG);
    /* something after a final block */
    static const char msg[] = "{\"a\":1}";
    uint8_t c[64];
    size_t n = client_deflate(msg, sizeof(msg) - 1, c, sizeof(c) - 3, 1);
    memcpy(c + n, "xyz", 3);
    ck_assert_int_eq(deflate_inflate(w, c, n + 3, 1024, &out, &len), -EBADMSG);
    /* valid deflate, invalid UTF-8 text (an overlong '/', a lone surrogate) */
    static const char *const bad[] = {"\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"",
                                      "\"\xe2\x82\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = client_deflate(bad[i], strlen(bad[i]), c, sizeof(c), 0);
        ck_assert_int_eq(deflate_inflate(w, c, n, 1024, &out, &len), -EILSEQ);
    }
    static const char good[] = "\"\xe2\x82\xac \xf0\x9f\x92\x93\"";
    n = client_deflate(good, strlen(good), c, sizeof(c), 0);
    ck_assert_int_eq(deflate_inflate(w, c, n, 1024, &out, &len), 0);
    free(out);
}
END_TEST

/* Message k of a stream: an ECG-like batch (seq, a slowly moving trace
 * with noise), or `kind` 1: random bytes deflate cannot shrink, 2: a
 * message below compression_min_size. */
static size_t stream_message(uint8_t *out, size_t cap, const char *stream, unsigned k, int kind)
{
    if (kind == 1) {
        for (size_t i = 0; i < 700; i++)
            out[i] = (uint8_t)random();
        return 700;
    }
    size_t n = (size_t)snprintf((char *)out, cap, "{\"type\":\"message\",\"stream\":\"%s\",\"seq\":%u,\"data\":[", stream, k);
    int samples = kind == 2 ? 3 : 80 + (int)(random() % 200);
    for (int i = 0; i < samples; i++)
        n += (size_t)snprintf((char *)out + n, cap - n, "%s%.3f", i ? "," : "",
                              0.4 * ((k * 80 + (unsigned)i) % 300 < 40) + (random() % 50) / 1000.0);
    n += (size_t)snprintf((char *)out + n, cap - n, "]}");
    return n;
}

/* A client of one connection: one inflate stream for its whole life, as
 * RFC 7692 has it when the server keeps its context. */
struct client {
    struct conn c;
    z_stream inf;
    unsigned compressed, from_context;
};

static void client_open(struct client *cl, uint8_t wbits, int takeover)
{
    memset(cl, 0, sizeof(*cl));
    cl->c = conn_with(wbits);
    cl->c.pmd_takeover = (unsigned)takeover != 0;
    ck_assert_int_eq(inflateInit2(&cl->inf, -(int)wbits), Z_OK);
}

/* Queue f to the client as deflate_frame_for picks, and check what the
 * client reads is f's payload; the frame it got. */
static struct sendq_frame *client_get(struct client *cl, struct sendq_frame *f)
{
    const uint8_t *want;
    size_t wlen = pmdclient_payload(f, &want);
    struct sendq_frame *t = deflate_frame_for(&cl->c, f);
    if ((uint8_t)t->bytes[0] & 0x40) {
        cl->compressed++;
        cl->from_context += t->wbits == DEFLATE_TWIN_CONTEXT;
    } else {
        ck_assert_ptr_eq(t, f);
    }
    ck_assert_msg(pmdclient_read(&cl->inf, t, want, wlen) == 0,
                  "message %u of the client is not what was sent", cl->compressed);
    return t;
}

static void client_close(struct client *cl)
{
    inflateEnd(&cl->inf);
}

START_TEST(context_twin_shared_by_connections_in_step)
{
    struct deflate_context *ctx = NULL;
    struct client a, b, solo;
    client_open(&a, 15, 1);
    client_open(&b, 12, 1);
    client_open(&solo, 15, 0); /* server_no_context_takeover */
    uint8_t msg[8192];
    size_t wire = 0, alone = 0;
    srandom(11);
    for (unsigned k = 1; k <= 60; k++) {
        struct sendq_frame *f = pmdclient_frame(msg, stream_message(msg, sizeof(msg), "s", k, 0));
        deflate_context_feed(w, &ctx, f);
        ck_assert_uint_ne(f->context_id, 0);
        struct sendq_frame *ta = client_get(&a, f);
        struct sendq_frame *tb = client_get(&b, f);
        /* never for a connection that said server_no_context_takeover */
        struct sendq_frame *ts = client_get(&solo, f);
        ck_assert_uint_eq(ts->wbits, 15);
        if (k > 1) {
            /* in step after the first message (each alone, per window):
             * the same bytes for both */
            ck_assert_ptr_eq(ta, tb);
            ck_assert_uint_eq(ta->wbits, DEFLATE_TWIN_CONTEXT);
            const uint8_t *p;
            wire += pmdclient_payload(ta, &p);
            alone += pmdclient_payload(ts, &p);
        }
        sendq_frame_unref(f);
    }
    /* the point of it: smaller than each message compressed alone */
    ck_assert_uint_lt(wire * 10, alone * 9);
    deflate_context_free(ctx);
    client_close(&a);
    client_close(&b);
    client_close(&solo);
}
END_TEST

/* The promise: whatever happens between a connection and the context,
 * its client reads every compressed message right. Connections join
 * late, skip messages (a resume, another worker's turn), get other
 * streams' messages and plain ones in between; a stream's context
 * restarts at a level change. */
START_TEST(every_client_reads_every_message_right)
{
    enum { CLIENTS = 8, MESSAGES = 400 };
    struct deflate_context *ctx = NULL, *other = NULL;
    struct client cl[CLIENTS];
    static const uint8_t wb[CLIENTS] = {15, 12, 13, 15, 15, 12, 10, 15};
    int joined[CLIENTS] = {0};
    for (int i = 0; i < CLIENTS; i++)
        client_open(&cl[i], wb[i], wb[i] >= 12 && i != 4);
    uint8_t msg[8192];
    srandom(5);
    for (unsigned k = 1; k <= MESSAGES; k++) {
        if (k == 200)
            w->cfg.compression_level = 1;
        int kind = random() % 23 == 0 ? 1 : random() % 11 == 0 ? 2 : 0;
        struct sendq_frame *f = pmdclient_frame(msg, stream_message(msg, sizeof(msg), "s", k, kind));
        deflate_context_feed(w, &ctx, f);
        struct sendq_frame *g = NULL;
        if (random() % 5 == 0) {
            g = pmdclient_frame(msg, stream_message(msg, sizeof(msg), "t", k, 0));
            if (random() % 2)
                deflate_context_feed(w, &other, g);
        }
        for (int i = 0; i < CLIENTS; i++) {
            /* client i joins at message 40 * i */
            if (k < 40u * (unsigned)i)
                continue;
            joined[i] = 1;
            if (i == 3 && random() % 4 == 0)
                continue; /* misses this one */
            if (g && (i % 2 == 1))
                client_get(&cl[i], g);
            client_get(&cl[i], f);
        }
        sendq_frame_unref(f);
        if (g)
            sendq_frame_unref(g);
    }
    for (int i = 0; i < CLIENTS; i++) {
        ck_assert(joined[i]);
        ck_assert_uint_gt(cl[i].compressed, 0);
        /* those that may and stay in step mostly get the context's bytes */
        if (cl[i].c.pmd_takeover && i % 2 == 0 && i != 3)
            ck_assert_uint_gt(cl[i].from_context * 10, cl[i].compressed * 8);
        if (!cl[i].c.pmd_takeover)
            ck_assert_uint_eq(cl[i].from_context, 0);
        client_close(&cl[i]);
    }
    /* interleaved with another stream or missing messages: back in step
     * between them, sometimes */
    ck_assert_uint_gt(cl[3].from_context, 0);
    deflate_context_free(ctx);
    deflate_context_free(other);
}
END_TEST

static int has_context_twin(const struct sendq_frame *f)
{
    for (const struct sendq_frame *t = f->twin; t; t = t->twin) {
        if (t->wbits == DEFLATE_TWIN_CONTEXT)
            return 1;
    }
    return 0;
}

/* A ward wall reads several streams on one connection: its window never
 * ends with a stream's previous message, so those streams cost no
 * context deflate — until a connection reading one of them alone comes
 * in step. */
START_TEST(streams_read_only_interleaved_cost_no_context_deflate)
{
    struct deflate_context *ctx[2] = {NULL, NULL};
    struct client wall[2], bedside;
    client_open(&wall[0], 15, 1);
    client_open(&wall[1], 15, 1);
    client_open(&bedside, 15, 1);
    uint8_t msg[8192];
    srandom(13);
    unsigned twins = 0;
    for (unsigned k = 1; k <= 40; k++) {
        for (int s = 0; s < 2; s++) {
            struct sendq_frame *f =
                pmdclient_frame(msg, stream_message(msg, sizeof(msg), s ? "b" : "a", k, 0));
            deflate_context_feed(w, &ctx[s], f);
            if (k > 2 && k <= 20)
                twins += has_context_twin(f);
            if (k > 22 && s == 0)
                ck_assert_msg(has_context_twin(f), "message %u of the bedside's stream", k);
            client_get(&wall[0], f);
            client_get(&wall[1], f);
            if (k > 20 && s == 0)
                client_get(&bedside, f);
            sendq_frame_unref(f);
        }
    }
    ck_assert_uint_eq(twins, 0);
    ck_assert_uint_eq(wall[0].from_context, 0);
    ck_assert_uint_ge(bedside.from_context, 17);
    for (int s = 0; s < 2; s++)
        deflate_context_free(ctx[s]);
    client_close(&wall[0]);
    client_close(&wall[1]);
    client_close(&bedside);
}
END_TEST

START_TEST(messages_below_the_minimum_are_not_fed)
{
    struct deflate_context *ctx = NULL;
    uint8_t msg[8192];
    srandom(3);
    struct sendq_frame *f = pmdclient_frame(msg, stream_message(msg, sizeof(msg), "s", 1, 2));
    deflate_context_feed(w, &ctx, f);
    ck_assert_ptr_null(ctx);
    ck_assert_uint_eq(f->context_id, 0);
    ck_assert_ptr_null(f->twin);
    sendq_frame_unref(f);
    f = pmdclient_frame(msg, stream_message(msg, sizeof(msg), "s", 2, 0));
    deflate_context_feed(w, &ctx, f);
    ck_assert_ptr_nonnull(ctx);
    ck_assert_uint_eq(f->context_id, 1);
    ck_assert_uint_eq(f->context_prev, 0);
    sendq_frame_unref(f);
    deflate_context_free(ctx);
}
END_TEST

static Suite *deflate_suite(void)
{
    Suite *s = suite_create("deflate");
    TCase *tc = unit_tcase(s, "out");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, twin_built_once_and_shared);
    tcase_add_test(tc, one_twin_per_window);
    tcase_add_test(tc, plain_when_not_worth_it);
    tcase_add_test(tc, level_change_applies);
    tc = unit_tcase(s, "context");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, context_twin_shared_by_connections_in_step);
    tcase_add_test(tc, every_client_reads_every_message_right);
    tcase_add_test(tc, messages_below_the_minimum_are_not_fed);
    tcase_add_test(tc, streams_read_only_interleaved_cost_no_context_deflate);
    tc = unit_tcase(s, "in");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, inflate_round_trip);
    tcase_add_test(tc, inflate_limit_is_exact);
    tcase_add_test(tc, inflate_bomb_stops_at_the_limit);
    tcase_add_test(tc, inflate_rejects_bad_data);
    return s;
}

int main(void)
{
    return unit_run(deflate_suite());
}
