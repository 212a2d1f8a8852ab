#include "deflate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "log.h"
#include "pmdeflate.h"
#include "segment.h"
#include "sendq.h"
#include "wsframe.h"

#define DEFLATE_WBITS_MIN 8
#define DEFLATE_WBITS_COUNT 8 /* 8..15 */
/* After the streams for messages alone, the one for messages with their
 * stream's previous message as dictionary. */
#define DEFLATE_STREAM_CONTEXT DEFLATE_WBITS_COUNT
/* zlib's default: 128 KiB of hash tables; the streams are per worker. */
#define DEFLATE_MEM_LEVEL 8
/* The context stream reads a dictionary and a message of a few KiB:
 * 2048 hash heads (4 KiB to clear per message, not level 8's 64 KiB)
 * and 1024-symbol blocks compress ECG batches within 0.3% of level 8. */
#define DEFLATE_CONTEXT_MEM_LEVEL 4
/* What RFC 7692 7.2.1 strips from the end of every compressed message
 * (the empty stored block of a sync flush), and 7.2.2 puts back. */
static const uint8_t deflate_tail[4] = {0x00, 0x00, 0xff, 0xff};

struct deflate_worker {
    z_stream def[DEFLATE_WBITS_COUNT + 1];
    int def_level[DEFLATE_WBITS_COUNT + 1]; /* 0: stream not initialised */
    z_stream inf;
    int inf_ready;
    uint8_t *scratch;                   /* deflate output before its exact-size frame */
    size_t scratch_cap;
    uint64_t context_ids;               /* the last id given to a message fed to a context */
};

static struct deflate_worker *deflate_get(struct worker *w)
{
    if (!w->deflate)
        w->deflate = calloc(1, sizeof(*w->deflate));
    return w->deflate;
}

void deflate_worker_free(struct worker *w)
{
    struct deflate_worker *d = w->deflate;
    if (!d)
        return;
    for (int i = 0; i <= DEFLATE_STREAM_CONTEXT; i++) {
        if (d->def_level[i])
            deflateEnd(&d->def[i]);
    }
    if (d->inf_ready)
        inflateEnd(&d->inf);
    free(d->scratch);
    free(d);
    w->deflate = NULL;
}

/* Stream i of the worker at `level`, ready for a new message. */
static z_stream *deflate_stream_at(struct deflate_worker *d, unsigned i, int zwbits, int mem_level,
                                   int strategy, int level)
{
    z_stream *s = &d->def[i];
    if (!d->def_level[i]) {
        memset(s, 0, sizeof(*s));
        if (deflateInit2(s, level, Z_DEFLATED, -zwbits, mem_level, strategy) != Z_OK)
            return NULL;
        d->def_level[i] = level;
    } else if (d->def_level[i] != level) {
        /* compression_level changed on reload; the stream is between
         * messages (reset), so nothing is pending to flush. */
        if (deflateParams(s, level, strategy) != Z_OK)
            return NULL;
        d->def_level[i] = level;
    }
    return s;
}

/* The stream for messages alone with window `wbits`. zlib has no
 * 256-byte raw window: for 8 the stream codes literals only
 * (Huffman-only), which refers to nothing before and so fits any window. */
static z_stream *deflate_stream(struct deflate_worker *d, unsigned wbits, int level)
{
    int huffman = wbits == 8;
    return deflate_stream_at(d, wbits - DEFLATE_WBITS_MIN, huffman ? 9 : (int)wbits,
                             DEFLATE_MEM_LEVEL, huffman ? Z_HUFFMAN_ONLY : Z_DEFAULT_STRATEGY, level);
}

/* Payload offset and length of a frame this process built (unmasked). */
static size_t deflate_frame_payload(const struct sendq_frame *f, size_t *len)
{
    size_t hlen = wsframe_header_size_of((const uint8_t *)f->bytes);
    *len = f->len - hlen;
    return hlen;
}

/* Where f's payload starts, when f is a whole text message of at least
 * compression_min_size bytes: the only messages worth deflating (a frame
 * header is never empty, so 0 means "not worth it"). */
static size_t deflate_worth(const struct worker *w, const struct sendq_frame *f, size_t *plen)
{
    if ((uint8_t)f->bytes[0] != 0x81)
        return 0;
    size_t hlen = deflate_frame_payload(f, plen);
    return *plen < (uint64_t)w->cfg.compression_min_size ? 0 : hlen;
}

/* Deflate `len` bytes with a sync flush into the scratch buffer and take
 * the flush's empty stored block off (RFC 7692 7.2.1). Returns the
 * compressed length, or 0 when zlib failed or memory ran out. */
static size_t deflate_sync_flush(struct deflate_worker *d, z_stream *s, const uint8_t *in,
                                 size_t len)
{
    /* Room for the worst case: stored blocks plus the flush marker. */
    size_t need = deflateBound(s, len) + 16;
    if (need > d->scratch_cap) {
        uint8_t *p = realloc(d->scratch, need);
        if (!p)
            return 0;
        d->scratch = p;
        d->scratch_cap = need;
    }
    s->next_in = (Bytef *)in;
    s->avail_in = (uInt)len;
    s->next_out = d->scratch;
    s->avail_out = (uInt)d->scratch_cap;
    int r = deflate(s, Z_SYNC_FLUSH);
    size_t out = d->scratch_cap - s->avail_out;
    /* avail_out == 0: the bound did not hold and output may be pending. */
    if (r != Z_OK || s->avail_in != 0 || s->avail_out == 0 || out < sizeof(deflate_tail) ||
        memcmp(d->scratch + out - sizeof(deflate_tail), deflate_tail, sizeof(deflate_tail)) != 0)
        return 0;
    return out - sizeof(deflate_tail);
}

/* One message through stream s, deflated against `dict` (the previous
 * message of its stream; NULL: nothing), as deflate_sync_flush returns
 * it. s is reset on every path, ready for the next message: no stream
 * keeps a context from one message to the next. zlib keeps the
 * dictionary's last window of bytes: no more than a client holds of that
 * message if it got it last. */
static size_t deflate_message(struct deflate_worker *d, z_stream *s, const uint8_t *dict,
                              size_t dlen, const uint8_t *in, size_t len)
{
    size_t out = 0;
    if (!dict || deflateSetDictionary(s, dict, (uInt)dlen) == Z_OK)
        out = deflate_sync_flush(d, s, in, len);
    deflateReset(s);
    return out;
}

/* A compressed frame of the scratch buffer's first clen bytes, hung on
 * f's twin chain (which owns its first reference) with mark `wbits`. */
static struct sendq_frame *deflate_twin_attach(struct deflate_worker *d, struct sendq_frame *f,
                                               size_t clen, uint8_t wbits)
{
    struct sendq_frame *t = sendq_frame_new(wsframe_header_size(clen) + clen);
    if (!t)
        return NULL;
    size_t th = wsframe_put_header((uint8_t *)t->bytes, WSFRAME_TEXT | WSFRAME_RSV1, clen);
    memcpy(t->bytes + th, d->scratch, clen);
    t->wbits = wbits;
    t->twin = f->twin;
    f->twin = t;
    return t;
}

static void deflate_count(struct conn *c, int dir, uint64_t before, uint64_t after)
{
    struct segment_counters *ctr = &c->w->slot->counters;
    segment_counter_add(&ctr->compression_bytes[dir][COMPRESSION_BEFORE], before);
    segment_counter_add(&ctr->compression_bytes[dir][COMPRESSION_AFTER], after);
}

/* A stream's shared context: the last message fed, whose text the next
 * one is deflated against (as a preset dictionary). Messages fed are
 * numbered in the worker's context numbering, so a connection's pmd_last
 * can name one without a pointer that could be reused. */
struct deflate_context {
    struct sendq_frame *prev; /* the message fed last (a reference); NULL: none */
};

void deflate_context_free(struct deflate_context *x)
{
    if (!x)
        return;
    if (x->prev)
        sendq_frame_unref(x->prev);
    free(x);
}

/* Numbers f in its stream's context; deflates it against the previous
 * message only when a connection in step took that one, so a stream
 * whose subscribers all read several streams (a ward wall's) costs no
 * deflate here: their windows never end with this stream's previous
 * message. A connection that comes in step gets the message after next
 * deflated against its dictionary. */
void deflate_context_feed(struct worker *w, struct deflate_context **ctx, struct sendq_frame *f)
{
    size_t plen;
    size_t hlen = deflate_worth(w, f, &plen);
    if (!hlen)
        return;
    struct deflate_worker *d = deflate_get(w);
    if (!d)
        return;
    if (!*ctx && !(*ctx = calloc(1, sizeof(**ctx))))
        return;
    struct deflate_context *x = *ctx;
    int wanted = x->prev && x->prev->context_wanted;
    z_stream *s = wanted ? deflate_stream_at(d, DEFLATE_STREAM_CONTEXT, PMDEFLATE_CONTEXT_WBITS,
                                             DEFLATE_CONTEXT_MEM_LEVEL, Z_DEFAULT_STRATEGY,
                                             (int)w->cfg.compression_level)
                         : NULL;
    size_t clen = 0;
    if (s) {
        size_t dlen;
        size_t doff = deflate_frame_payload(x->prev, &dlen);
        clen = deflate_message(d, s, (const uint8_t *)x->prev->bytes + doff, dlen,
                               (const uint8_t *)f->bytes + hlen, plen);
    }
    uint64_t prev_id = x->prev ? x->prev->context_id : 0;
    if (x->prev)
        sendq_frame_unref(x->prev);
    x->prev = NULL;
    if (wanted && !clen)
        return; /* zlib failed: no twin, and the next message starts a new chain */
    f->context_id = ++d->context_ids;
    f->context_prev = prev_id;
    /* Even when it did not shrink: a connection in step stays in step. */
    if (clen)
        deflate_twin_attach(d, f, clen, DEFLATE_TWIN_CONTEXT);
    f->refs++;
    x->prev = f;
}

/* What entered c's client window with f compressed: f's context message
 * (its whole text), or one no context knows. */
static void deflate_note_window(struct conn *c, const struct sendq_frame *f)
{
    if (c->pmd_takeover)
        c->pmd_last = f->context_id;
}

/* f's context twin when c's client window ends with the message before
 * f in its context; NULL otherwise, or when it has none (nobody was in
 * step for the message before). A connection in step asks for the next
 * message's twin. */
static struct sendq_frame *deflate_context_twin(const struct conn *c, struct sendq_frame *f)
{
    if (!c->pmd_takeover || !f->context_id)
        return NULL;
    if (f->context_prev && c->pmd_last != f->context_prev)
        return NULL;
    f->context_wanted = 1;
    for (struct sendq_frame *t = f->twin; t; t = t->twin) {
        if (t->wbits == DEFLATE_TWIN_CONTEXT)
            return t;
    }
    return NULL;
}

static size_t deflate_frame_length(const struct sendq_frame *t)
{
    size_t len;
    deflate_frame_payload(t, &len);
    return len;
}

struct sendq_frame *deflate_frame_for(struct conn *c, struct sendq_frame *f)
{
    unsigned wbits = c->pmd_wbits;
    size_t plen;
    size_t hlen = wbits ? deflate_worth(c->w, f, &plen) : 0;
    if (!hlen)
        return f;
    struct sendq_frame *t = deflate_context_twin(c, f);
    if (!t) {
        for (t = f->twin; t && t->wbits != wbits; t = t->twin)
            ;
    }
    if (!t) {
        uint16_t bit = (uint16_t)(1u << wbits);
        struct deflate_worker *d = deflate_get(c->w);
        z_stream *s = d && !(f->incompressible & bit)
                          ? deflate_stream(d, wbits, (int)c->w->cfg.compression_level)
                          : NULL;
        size_t clen =
            s ? deflate_message(d, s, NULL, 0, (const uint8_t *)f->bytes + hlen, plen) : 0;
        t = clen && clen < plen ? deflate_twin_attach(d, f, clen, (uint8_t)wbits) : NULL;
        if (!t) {
            /* Not smaller (or out of memory): this window sends it plain,
             * and nothing enters the client's window. */
            if (s)
                f->incompressible |= bit;
            deflate_count(c, COMPRESSION_OUT, plen, plen);
            return f;
        }
    }
    deflate_note_window(c, f);
    deflate_count(c, COMPRESSION_OUT, plen, deflate_frame_length(t));
    return t;
}

/* RFC 3629: shortest forms only, no surrogates, nothing above U+10FFFF. */
static int deflate_utf8_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if ((b & 0xe0) == 0xc0) {
            k = 1, cp = b & 0x1f, min = 0x80;
        } else if ((b & 0xf0) == 0xe0) {
            k = 2, cp = b & 0x0f, min = 0x800;
        } else if ((b & 0xf8) == 0xf0) {
            k = 3, cp = b & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Inflate with a stream ready for a new message. */
static int deflate_inflate_on(z_stream *s, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                              size_t *out_len)
{
    /* Start near the likely size; grow by doubling, never past max + 1
     * (the one byte that proves the message too large). */
    size_t limit = max + 1;
    size_t cap = len < limit / 4 ? len * 4 : limit;
    if (cap < 256)
        cap = limit < 256 ? limit : 256;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    s->next_in = (Bytef *)in;
    s->avail_in = (uInt)len;
    s->next_out = buf;
    s->avail_out = (uInt)cap;
    int tail_fed = 0, err = 0;
    for (;;) {
        if (s->avail_in == 0 && !tail_fed) {
            s->next_in = (Bytef *)deflate_tail;
            s->avail_in = sizeof(deflate_tail);
            tail_fed = 1;
        }
        if (s->avail_out == 0) {
            if (cap >= limit) {
                err = -EMSGSIZE;
                break;
            }
            size_t ncap = cap * 2 < limit ? cap * 2 : limit;
            uint8_t *p = realloc(buf, ncap);
            if (!p) {
                err = -ENOMEM;
                break;
            }
            buf = p;
            s->next_out = buf + cap;
            s->avail_out = (uInt)(ncap - cap);
            cap = ncap;
        }
        int r = inflate(s, Z_SYNC_FLUSH);
        if (r == Z_STREAM_END) {
            /* A final block (BFINAL) may end the message; nothing of the
             * message may follow it. */
            if (!tail_fed && s->avail_in)
                err = -EBADMSG;
            break;
        }
        if (r == Z_MEM_ERROR) {
            err = -ENOMEM;
            break;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            err = -EBADMSG;
            break;
        }
        if (tail_fed && s->avail_in == 0 && s->avail_out > 0)
            break; /* all input read, all output out */
        if (r == Z_BUF_ERROR && s->avail_out > 0 && s->avail_in > 0) {
            err = -EBADMSG; /* no progress possible */
            break;
        }
    }
    size_t n = cap - s->avail_out;
    if (!err && n > max)
        err = -EMSGSIZE;
    if (!err && !deflate_utf8_valid(buf, n))
        err = -EILSEQ;
    if (err) {
        free(buf);
        return err;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

int deflate_inflate(struct worker *w, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                    size_t *out_len)
{
    struct deflate_worker *d = deflate_get(w);
    if (!d)
        return -ENOMEM;
    z_stream *s = &d->inf;
    if (!d->inf_ready) {
        memset(s, 0, sizeof(*s));
        /* A 32 KiB window reads whatever window the client deflated with. */
        if (inflateInit2(s, -15) != Z_OK)
            return -ENOMEM;
        d->inf_ready = 1;
    } else {
        inflateReset(s);
    }
    return deflate_inflate_on(s, in, len, max, out, out_len);
}

int deflate_inflate_alone(const uint8_t *in, size_t len, size_t max, uint8_t **out,
                          size_t *out_len)
{
    z_stream s;
    memset(&s, 0, sizeof(s));
    if (inflateInit2(&s, -15) != Z_OK)
        return -ENOMEM;
    int r = deflate_inflate_on(&s, in, len, max, out, out_len);
    inflateEnd(&s);
    return r;
}
