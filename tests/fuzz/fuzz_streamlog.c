/*
 * fuzz_streamlog — the stream pool under arbitrary sequences of appends
 * (sizes from 0 to 70,000 bytes, history policies, stuck followers),
 * followers starting and stopping, reading and moving their cursors,
 * reclaims and dead workers. After every step: no chunk is lost or owned
 * twice, every held record reads back intact (its bytes derive from its
 * seq), seqs are consecutive, and a follower that was not released never
 * misses a record.
 *
 * Input: a sequence of 4-byte steps [op, a, b, c].
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "streamlog.h"

#define FZ_STREAMS 4
#define FZ_SLOTS 3
#define FZ_MEMORY (24 * STREAMLOG_CHUNK)

static void fz_pattern(char *buf, uint32_t len, uint64_t seq)
{
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (char)(seq * 31 + i);
}

static void fz_check_pool(struct streamlog *sl)
{
    uint64_t held = 0;
    for (uint32_t i = 0; i < sl->max_streams; i++)
        held += streamlog_stream_at(sl, i)->chunks;
    if (held + streamlog_free_chunks(sl) != sl->chunk_count)
        abort();
}

/* Read every record from *it to the end, checking bytes and order;
 * returns the last seq read (or `after` when none). */
static uint64_t fz_read(struct streamlog *sl, struct streamlog_stream *st,
                        struct streamlog_iter *it, uint64_t after, char *buf)
{
    const struct streamlog_record *r;
    char *want = buf + 80000;
    while ((r = streamlog_peek(sl, st, it)) != NULL) {
        if (after && r->seq != after + 1)
            abort();
        uint32_t len = r->len;
        uint64_t seq = r->seq;
        streamlog_take(sl, st, it, buf);
        fz_pattern(want, len, seq);
        if (memcmp(buf, want, len) != 0)
            abort();
        after = seq;
    }
    return after;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct streamlog *sl;
    static char *buf;
    uint64_t bytes = streamlog_bytes(FZ_STREAMS, FZ_MEMORY);
    if (!sl) {
        sl = aligned_alloc(4096, (bytes + 4095) & ~(uint64_t)4095);
        buf = malloc(160000);
    }
    memset(sl, 0, bytes);
    if (streamlog_init(sl, FZ_STREAMS, FZ_MEMORY) < 0)
        abort();
    struct streamlog_ref refs[FZ_STREAMS];
    char name[2] = {'a', 0};
    for (int i = 0; i < FZ_STREAMS; i++) {
        name[0] = (char)('a' + i);
        if (streamlog_lookup(sl, name, 1, 1, &refs[i]) < 0)
            abort();
    }
    struct streamlog_iter its[FZ_SLOTS][FZ_STREAMS];
    uint64_t seen[FZ_SLOTS][FZ_STREAMS];
    int following[FZ_SLOTS][FZ_STREAMS];
    memset(following, 0, sizeof(following));

    for (size_t i = 0; i + 4 <= size; i += 4) {
        uint8_t op = data[i] % 6, a = data[i + 1], b = data[i + 2], c = data[i + 3];
        int s = a % FZ_STREAMS, slot = (a >> 4) % FZ_SLOTS;
        struct streamlog_stream *st = streamlog_lock(sl, refs[s]);
        if (!st) { /* reclaimed: look it up again */
            name[0] = (char)('a' + s);
            if (streamlog_lookup(sl, name, 1, 1, &refs[s]) < 0)
                abort();
            continue;
        }
        switch (op) {
        case 0: {
            uint32_t len = (uint32_t)b * (c & 1 ? 280u : 7u);
            struct streamlog_policy pol = {.history_records = c >> 5,
                                           .history_bytes = c & 2 ? 20000 : 0,
                                           .stuck_mask = c & 4 ? 1u << ((c >> 3) % FZ_SLOTS) : 0};
            uint64_t seq = 0;
            fz_pattern(buf, len, atomic_load(&st->last_seq) + 1);
            int r = streamlog_append(sl, st, buf, len, 1, 1, &pol, &seq);
            if (r != 0 && r != -ENOBUFS && r != -E2BIG)
                abort();
            break;
        }
        case 1:
            following[slot][s] = !following[slot][s];
            streamlog_follow(st, slot, following[slot][s]);
            its[slot][s].pos = st->commit_pos;
            its[slot][s].chunk = st->tail_chunk;
            seen[slot][s] = atomic_load(&st->last_seq);
            break;
        case 2:
            if (following[slot][s]) {
                uint64_t next = seen[slot][s] + 1;
                if (next < st->head_seq) {
                    /* Only a released follower may have lost records. */
                    if (!(st->released_mask & (1ull << slot)))
                        abort();
                    streamlog_iter_head(st, &its[slot][s]);
                    seen[slot][s] = st->head_seq - 1;
                }
                seen[slot][s] = fz_read(sl, st, &its[slot][s], seen[slot][s], buf);
                struct streamlog_policy pol = {.history_records = b};
                streamlog_consumed(sl, st, slot, its[slot][s].pos, &pol);
            }
            break;
        case 3: {
            struct streamlog_iter it;
            streamlog_iter_head(st, &it);
            fz_read(sl, st, &it, 0, buf);
            break;
        }
        case 4:
        case 5:
            break;
        }
        streamlog_unlock(st);
        if (op == 4) {
            for (int k = 0; k < FZ_STREAMS; k++)
                following[b % FZ_SLOTS][k] = 0;
            streamlog_forget_worker(sl, b % FZ_SLOTS);
        } else if (op == 5) {
            for (int k = 0; k < FZ_STREAMS; k++) {
                struct streamlog_stream *t = streamlog_stream_at(sl, refs[k].index);
                atomic_store(&t->last_active_ms, 0);
            }
            streamlog_reclaim(sl, 1000000, 1);
            for (int k = 0; k < FZ_SLOTS; k++)
                for (int j = 0; j < FZ_STREAMS; j++)
                    if (atomic_load(&streamlog_stream_at(sl, refs[j].index)->state) !=
                        STREAMLOG_LIVE)
                        following[k][j] = 0;
        }
        fz_check_pool(sl);
    }
    return 0;
}
