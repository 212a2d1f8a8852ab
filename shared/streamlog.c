#include "streamlog.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "hash.h"

#define STREAMLOG_ALIGN(n) (((n) + 7u) & ~(uint64_t)7u)
#define STREAMLOG_CHUNK_MASK ((uint64_t)STREAMLOG_CHUNK - 1)
/* Set on chunk owners while the repair pass walks the chains. */
#define STREAMLOG_SEEN 0x80000000u

static uint32_t *streamlog_hash(struct streamlog *sl)
{
    return (uint32_t *)((char *)sl + sl->hash_offset);
}

struct streamlog_stream *streamlog_stream_at(struct streamlog *sl, uint32_t index)
{
    return (struct streamlog_stream *)((char *)sl + sl->streams_offset) + index;
}

static struct streamlog_chunk *streamlog_chunk(struct streamlog *sl, uint32_t c)
{
    return (struct streamlog_chunk *)((char *)sl + sl->chunks_offset) + c;
}

static char *streamlog_chunk_data(struct streamlog *sl, uint32_t c)
{
    return (char *)sl + sl->data_offset + (uint64_t)c * STREAMLOG_CHUNK;
}

static uint32_t streamlog_index(struct streamlog *sl, const struct streamlog_stream *st)
{
    return (uint32_t)(st - streamlog_stream_at(sl, 0));
}

static uint32_t streamlog_hash_slots(uint32_t max_streams)
{
    uint32_t n = 16;
    while (n < 2u * max_streams)
        n <<= 1;
    return n;
}

uint64_t streamlog_pool_chunks(uint64_t stream_memory)
{
    uint64_t n = stream_memory / STREAMLOG_CHUNK;
    return n < STREAMLOG_NO_CHUNK ? n : STREAMLOG_NO_CHUNK - 1;
}

uint64_t streamlog_chunks_for(uint64_t len)
{
    /* A record may start in the last bytes of a chunk that still hold its
     * header: count that chunk, then whole chunks for the rest. */
    uint64_t size = STREAMLOG_ALIGN(sizeof(struct streamlog_record) + len);
    return 1 + (size + STREAMLOG_CHUNK - 1) / STREAMLOG_CHUNK;
}

static void streamlog_layout(struct streamlog *sl, uint32_t max_streams, uint64_t stream_memory)
{
    sl->max_streams = max_streams;
    sl->hash_slots = streamlog_hash_slots(max_streams);
    sl->chunk_count = (uint32_t)streamlog_pool_chunks(stream_memory);
    sl->hash_offset = STREAMLOG_ALIGN(sizeof(struct streamlog));
    sl->streams_offset =
        sl->hash_offset + STREAMLOG_ALIGN((uint64_t)sl->hash_slots * sizeof(uint32_t));
    sl->chunks_offset = sl->streams_offset +
                        STREAMLOG_ALIGN((uint64_t)max_streams * sizeof(struct streamlog_stream));
    /* Chunk data page-aligned, so an idle pool costs no resident memory. */
    sl->data_offset = (sl->chunks_offset +
                       (uint64_t)sl->chunk_count * sizeof(struct streamlog_chunk) + 4095) &
                      ~(uint64_t)4095;
    sl->total_bytes = sl->data_offset + (uint64_t)sl->chunk_count * STREAMLOG_CHUNK;
}

uint64_t streamlog_bytes(uint32_t max_streams, uint64_t stream_memory)
{
    struct streamlog sl;
    streamlog_layout(&sl, max_streams, stream_memory);
    return sl.total_bytes;
}

static int streamlog_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -r;
}

static void streamlog_free_push(struct streamlog *sl, uint32_t c)
{
    struct streamlog_chunk *ch = streamlog_chunk(sl, c);
    ch->owner = 0;
    ch->next = sl->free_top;
    sl->free_top = c;
    atomic_fetch_add_explicit(&sl->free_chunks, 1, memory_order_relaxed);
}

int streamlog_init(struct streamlog *sl, uint32_t max_streams, uint64_t stream_memory)
{
    streamlog_layout(sl, max_streams, stream_memory);
    sl->free_top = STREAMLOG_NO_CHUNK;
    atomic_store(&sl->free_chunks, 0);
    /* Pushed from the end, so chunk 0 is taken first and pages are touched
     * in order as the pool fills. */
    for (uint32_t c = sl->chunk_count; c-- > 0;)
        streamlog_free_push(sl, c);
    int r = streamlog_mutex_init(&sl->table_lock);
    if (r == 0)
        r = streamlog_mutex_init(&sl->pool_lock);
    for (uint32_t i = 0; r == 0 && i < max_streams; i++) {
        struct streamlog_stream *st = streamlog_stream_at(sl, i);
        st->head_chunk = st->tail_chunk = STREAMLOG_NO_CHUNK;
        r = streamlog_mutex_init(&st->lock);
    }
    return r;
}

/* Rebuild what the pool lock guards after its owner died inside: every
 * live stream's chain is walked from its head (fixing its tail and count),
 * and every chunk no chain reaches goes back on the free stack. Chain
 * changes only happen under the pool lock, so the walk sees them whole
 * but for the dead owner's step, which is exactly what gets repaired. */
static void streamlog_pool_repair(struct streamlog *sl)
{
    for (uint32_t i = 0; i < sl->max_streams; i++) {
        struct streamlog_stream *st = streamlog_stream_at(sl, i);
        uint32_t last = STREAMLOG_NO_CHUNK, n = 0;
        uint32_t c = atomic_load(&st->state) == STREAMLOG_LIVE ? st->head_chunk
                                                                : STREAMLOG_NO_CHUNK;
        while (c != STREAMLOG_NO_CHUNK && c < sl->chunk_count && n < sl->chunk_count) {
            struct streamlog_chunk *ch = streamlog_chunk(sl, c);
            if (ch->owner != i + 1)
                break;
            ch->owner |= STREAMLOG_SEEN;
            last = c;
            n++;
            c = ch->next;
        }
        if (last != STREAMLOG_NO_CHUNK)
            streamlog_chunk(sl, last)->next = STREAMLOG_NO_CHUNK;
        else
            st->head_chunk = STREAMLOG_NO_CHUNK;
        st->tail_chunk = last;
        st->chunks = n;
    }
    sl->free_top = STREAMLOG_NO_CHUNK;
    atomic_store(&sl->free_chunks, 0);
    for (uint32_t c = sl->chunk_count; c-- > 0;) {
        struct streamlog_chunk *ch = streamlog_chunk(sl, c);
        if (ch->owner & STREAMLOG_SEEN)
            ch->owner &= ~STREAMLOG_SEEN;
        else
            streamlog_free_push(sl, c);
    }
    atomic_fetch_add(&sl->pool_repairs, 1);
}

/* Lock a robust mutex; 1 when its previous owner died holding it. */
static int streamlog_mutex_lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        return 1;
    }
    return 0;
}

static void streamlog_pool_lock(struct streamlog *sl)
{
    if (streamlog_mutex_lock(&sl->pool_lock))
        streamlog_pool_repair(sl);
}

int streamlog_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > STREAMLOG_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!(('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '/' || c == '-'))
            return 0;
    }
    return 1;
}

uint32_t streamlog_name_hash(const char *name, size_t len)
{
    return hash_fnv1a(name, len);
}

void streamlog_new_epoch(char *epoch)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t raw[STREAMLOG_EPOCH_LEN];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        uint64_t t = clock_now_ns();
        memcpy(raw, &t, sizeof(raw));
    }
    for (int i = 0; i < STREAMLOG_EPOCH_LEN; i++)
        epoch[i] = alphabet[raw[i] & 31];
    epoch[STREAMLOG_EPOCH_LEN] = '\0';
}

/* A record's header never straddles two chunks: a position too close to
 * a chunk's end for one moves to the next chunk. */
static uint64_t streamlog_fit(uint64_t pos)
{
    uint64_t room = STREAMLOG_CHUNK - (pos & STREAMLOG_CHUNK_MASK);
    return room < sizeof(struct streamlog_record) ? pos + room : pos;
}

/* The chunk of st's chain that covers pos: the hint when it still does,
 * else found by walking the chain. */
static uint32_t streamlog_locate(struct streamlog *sl, struct streamlog_stream *st, uint64_t pos,
                                 uint32_t hint)
{
    uint64_t base = pos & ~STREAMLOG_CHUNK_MASK;
    uint32_t owner = streamlog_index(sl, st) + 1;
    if (hint < sl->chunk_count) {
        const struct streamlog_chunk *ch = streamlog_chunk(sl, hint);
        if (ch->owner == owner && ch->base == base)
            return hint;
    }
    for (uint32_t c = st->head_chunk; c != STREAMLOG_NO_CHUNK; c = streamlog_chunk(sl, c)->next) {
        if (streamlog_chunk(sl, c)->base == base)
            return c;
    }
    return STREAMLOG_NO_CHUNK;
}

/* The chunk after c in its chain that covers pos (c covers an earlier
 * position of the same record). */
static uint32_t streamlog_advance(struct streamlog *sl, uint32_t c, uint64_t pos)
{
    while (pos >= streamlog_chunk(sl, c)->base + STREAMLOG_CHUNK)
        c = streamlog_chunk(sl, c)->next;
    return c;
}

/* Copy n bytes of st's log starting at pos into dst; c is a chunk of the
 * chain at or before pos. Records cross chunk ends freely. */
static void streamlog_copy_out(struct streamlog *sl, uint32_t c, uint64_t pos, char *dst, size_t n)
{
    while (n > 0) {
        c = streamlog_advance(sl, c, pos);
        size_t off = (size_t)(pos & STREAMLOG_CHUNK_MASK);
        size_t part = STREAMLOG_CHUNK - off < n ? STREAMLOG_CHUNK - off : n;
        memcpy(dst, streamlog_chunk_data(sl, c) + off, part);
        dst += part;
        pos += part;
        n -= part;
    }
}

static void streamlog_copy_in(struct streamlog *sl, uint32_t c, uint64_t pos, const char *src,
                              size_t n)
{
    while (n > 0) {
        c = streamlog_advance(sl, c, pos);
        size_t off = (size_t)(pos & STREAMLOG_CHUNK_MASK);
        size_t part = STREAMLOG_CHUNK - off < n ? STREAMLOG_CHUNK - off : n;
        memcpy(streamlog_chunk_data(sl, c) + off, src, part);
        src += part;
        pos += part;
        n -= part;
    }
}

/* A stream lock whose owner died: the records are safe (a record exists
 * only once commit_pos covers it), but a trim may have stopped between
 * moving head_pos and head_seq. The record at head_pos says which seq it
 * is. */
static void streamlog_stream_repair(struct streamlog *sl, struct streamlog_stream *st)
{
    uint64_t last = atomic_load(&st->last_seq);
    if (st->head_pos >= st->commit_pos) {
        st->head_pos = st->commit_pos;
        st->head_seq = last + 1;
        return;
    }
    uint64_t pos = streamlog_fit(st->head_pos);
    uint32_t c = streamlog_locate(sl, st, pos, STREAMLOG_NO_CHUNK);
    if (c == STREAMLOG_NO_CHUNK) {
        st->head_pos = st->commit_pos;
        st->head_seq = last + 1;
        return;
    }
    const struct streamlog_record *r =
        (const struct streamlog_record *)(streamlog_chunk_data(sl, c) + (pos & STREAMLOG_CHUNK_MASK));
    st->head_pos = pos;
    st->head_seq = r->seq;
}

int streamlog_lookup(struct streamlog *sl, const char *name, size_t len, int create,
                     struct streamlog_ref *out)
{
    uint32_t *hash = streamlog_hash(sl);
    uint32_t mask = sl->hash_slots - 1;
    uint32_t h = streamlog_name_hash(name, len) & mask;
    int rc = -ENOENT;
    streamlog_mutex_lock(&sl->table_lock);
    int64_t tomb = -1;
    for (uint32_t probe = 0; probe < sl->hash_slots; probe++, h = (h + 1) & mask) {
        uint32_t v = hash[h];
        if (v == 0)
            break;
        if (v == UINT32_MAX) {
            if (tomb < 0)
                tomb = h;
            continue;
        }
        struct streamlog_stream *st = streamlog_stream_at(sl, v - 1);
        if (st->name_len == len && memcmp(st->name, name, len) == 0) {
            out->index = v - 1;
            out->generation = atomic_load(&st->generation);
            rc = 0;
            goto done;
        }
    }
    if (!create)
        goto done;
    rc = -ENOSPC;
    for (uint32_t i = 0; i < sl->max_streams; i++) {
        struct streamlog_stream *st = streamlog_stream_at(sl, i);
        if (atomic_load(&st->state) != STREAMLOG_FREE)
            continue;
        streamlog_mutex_lock(&st->lock);
        memcpy(st->name, name, len);
        st->name[len] = '\0';
        st->name_len = (uint32_t)len;
        streamlog_new_epoch(st->epoch);
        /* Positions go on from where the slot's last incarnation ended:
         * they only ever grow, so no stale iterator can match. */
        st->head_pos = st->commit_pos;
        st->head_seq = 1;
        atomic_store(&st->last_seq, 0);
        atomic_store(&st->worker_mask, 0);
        st->released_mask = 0;
        atomic_store(&st->last_active_ms, clock_wall_ms());
        atomic_store(&st->state, STREAMLOG_LIVE);
        pthread_mutex_unlock(&st->lock);
        hash[tomb >= 0 ? (uint32_t)tomb : h] = i + 1;
        atomic_fetch_add(&sl->active, 1);
        out->index = i;
        out->generation = atomic_load(&st->generation);
        rc = 0;
        break;
    }
done:
    pthread_mutex_unlock(&sl->table_lock);
    return rc;
}

struct streamlog_stream *streamlog_lock(struct streamlog *sl, struct streamlog_ref ref)
{
    struct streamlog_stream *st = streamlog_stream_at(sl, ref.index);
    if (streamlog_mutex_lock(&st->lock))
        streamlog_stream_repair(sl, st);
    if (atomic_load(&st->generation) != ref.generation ||
        atomic_load(&st->state) != STREAMLOG_LIVE) {
        pthread_mutex_unlock(&st->lock);
        return NULL;
    }
    return st;
}

void streamlog_unlock(struct streamlog_stream *st)
{
    pthread_mutex_unlock(&st->lock);
}

/* Position of the oldest record some follower still has to read
 * (UINT64_MAX when none is behind). Released cursors do not count. */
static uint64_t streamlog_min_cursor(const struct streamlog_stream *st)
{
    uint64_t m = atomic_load(&st->worker_mask) & ~st->released_mask;
    uint64_t min = UINT64_MAX;
    while (m) {
        int slot = __builtin_ctzll(m);
        m &= m - 1;
        if (st->cursor[slot] < min)
            min = st->cursor[slot];
    }
    return min;
}

/* Give back the chunks that lie wholly before head_pos (and, when
 * `empty_too`, the last one of a log that holds no record). */
static void streamlog_free_front(struct streamlog *sl, struct streamlog_stream *st, int empty_too)
{
    uint32_t c = st->head_chunk;
    if (c == STREAMLOG_NO_CHUNK)
        return;
    int empty = st->head_seq > atomic_load(&st->last_seq);
    if (streamlog_chunk(sl, c)->base + STREAMLOG_CHUNK > st->head_pos && !(empty && empty_too))
        return;
    streamlog_pool_lock(sl);
    while ((c = st->head_chunk) != STREAMLOG_NO_CHUNK) {
        struct streamlog_chunk *ch = streamlog_chunk(sl, c);
        if (ch->base + STREAMLOG_CHUNK > st->head_pos && !(empty && empty_too))
            break;
        st->head_chunk = ch->next;
        if (st->head_chunk == STREAMLOG_NO_CHUNK)
            st->tail_chunk = STREAMLOG_NO_CHUNK;
        st->chunks--;
        streamlog_free_push(sl, c);
    }
    pthread_mutex_unlock(&sl->pool_lock);
}

/* Drop records from the head while the policy lets go of them and every
 * live follower has read them. Under pressure (need > 0) the policy does
 * not count: records go, oldest first, until the pool has `need` free
 * chunks — and no further, so a hot stream gives up only what is needed. */
static void streamlog_trim(struct streamlog *sl, struct streamlog_stream *st,
                           const struct streamlog_policy *pol, uint32_t need)
{
    uint64_t last = atomic_load(&st->last_seq);
    uint64_t min = streamlog_min_cursor(st);
    uint32_t hint = st->head_chunk;
    while (st->head_seq <= last && st->head_pos < min) {
        if (need) {
            if (streamlog_free_chunks(sl) >= need)
                return;
        } else {
            uint64_t held = last - st->head_seq + 1;
            if (held <= pol->history_records &&
                (pol->history_bytes == 0 || st->commit_pos - st->head_pos <= pol->history_bytes))
                break;
        }
        hint = streamlog_locate(sl, st, st->head_pos, hint);
        const struct streamlog_record *r =
            (const struct streamlog_record *)(streamlog_chunk_data(sl, hint) +
                                              (st->head_pos & STREAMLOG_CHUNK_MASK));
        uint64_t next = st->head_pos + r->size;
        /* Position first: a trim cut short here is repaired from it. */
        st->head_pos = next < st->commit_pos ? streamlog_fit(next) : st->commit_pos;
        st->head_seq++;
        if (need)
            streamlog_free_front(sl, st, 1);
    }
    streamlog_free_front(sl, st, need > 0);
}

/* Take back cursors of stuck followers of st that hold records back.
 * Returns 1 when one was released. */
static int streamlog_release_stuck(struct streamlog *sl, struct streamlog_stream *st,
                                   uint64_t stuck_mask)
{
    uint64_t m = atomic_load(&st->worker_mask) & stuck_mask & ~st->released_mask;
    int released = 0;
    while (m) {
        int slot = __builtin_ctzll(m);
        m &= m - 1;
        if (st->cursor[slot] < st->commit_pos) {
            st->released_mask |= 1ull << slot;
            atomic_fetch_add(&sl->cursor_releases, 1);
            released = 1;
        }
    }
    return released;
}

/* Free chunks for `need` more by dropping history nobody needs: first
 * from streams holding more than their share of the pool (a hot stream
 * gives up its oldest history before a quiet one loses its little), then
 * from any, starting where the last scan stopped. `own` is locked by the
 * caller; other streams are only tried (a stream lock held elsewhere is
 * skipped, never waited for, so two appenders cannot deadlock). With
 * `stuck_mask`, stuck followers' cursors are released first. */
static void streamlog_evict(struct streamlog *sl, struct streamlog_stream *own, uint32_t need,
                            const struct streamlog_policy *pol, uint64_t stuck_mask)
{
    uint32_t n = sl->max_streams;
    uint32_t live = atomic_load(&sl->active);
    uint32_t share = live ? (sl->chunk_count - streamlog_free_chunks(sl)) / live : 0;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t start = atomic_load_explicit(&sl->evict_next, memory_order_relaxed) % n;
        for (uint32_t k = 0; k < n && streamlog_free_chunks(sl) < need; k++) {
            uint32_t i = (start + k) % n;
            struct streamlog_stream *st = streamlog_stream_at(sl, i);
            if (atomic_load(&st->state) != STREAMLOG_LIVE || st->chunks == 0 ||
                (pass == 0 && st->chunks <= share))
                continue;
            if (st != own) {
                int r = pthread_mutex_trylock(&st->lock);
                if (r == EOWNERDEAD) {
                    pthread_mutex_consistent(&st->lock);
                    streamlog_stream_repair(sl, st);
                } else if (r != 0) {
                    continue;
                }
            }
            if (atomic_load(&st->state) == STREAMLOG_LIVE) {
                if (stuck_mask)
                    streamlog_release_stuck(sl, st, stuck_mask);
                streamlog_trim(sl, st, pol, need);
            }
            if (st != own)
                pthread_mutex_unlock(&st->lock);
            atomic_store_explicit(&sl->evict_next, i + 1, memory_order_relaxed);
        }
    }
}

int streamlog_append(struct streamlog *sl, struct streamlog_stream *st, const void *data,
                     uint32_t len, int64_t ts_ms, uint64_t origin_ns,
                     const struct streamlog_policy *pol, uint64_t *seq)
{
    uint64_t size = STREAMLOG_ALIGN(sizeof(struct streamlog_record) + (uint64_t)len);
    if (streamlog_chunks_for(len) > sl->chunk_count)
        return -E2BIG;
    uint64_t pos = streamlog_fit(st->commit_pos);
    uint64_t end = pos + size;
    uint64_t covered = st->tail_chunk == STREAMLOG_NO_CHUNK
                           ? pos & ~STREAMLOG_CHUNK_MASK
                           : streamlog_chunk(sl, st->tail_chunk)->base + STREAMLOG_CHUNK;
    uint32_t hint = st->tail_chunk;
    uint32_t need = end > covered ? (uint32_t)((end - covered + STREAMLOG_CHUNK - 1) / STREAMLOG_CHUNK)
                                  : 0;
    if (need > streamlog_free_chunks(sl))
        streamlog_evict(sl, st, need, pol, 0);
    if (need > streamlog_free_chunks(sl) && pol->stuck_mask)
        streamlog_evict(sl, st, need, pol, pol->stuck_mask);
    if (need) {
        streamlog_pool_lock(sl);
        /* Eviction may have given the stream's own last chunk back (an
         * empty log under pressure): count again from the chain. */
        covered = st->tail_chunk == STREAMLOG_NO_CHUNK
                      ? pos & ~STREAMLOG_CHUNK_MASK
                      : streamlog_chunk(sl, st->tail_chunk)->base + STREAMLOG_CHUNK;
        need = (uint32_t)((end - covered + STREAMLOG_CHUNK - 1) / STREAMLOG_CHUNK);
        if (atomic_load(&sl->free_chunks) < need) {
            pthread_mutex_unlock(&sl->pool_lock);
            return -ENOBUFS;
        }
        uint32_t owner = streamlog_index(sl, st) + 1;
        while (covered < end) {
            uint32_t c = sl->free_top;
            struct streamlog_chunk *ch = streamlog_chunk(sl, c);
            sl->free_top = ch->next;
            atomic_fetch_sub_explicit(&sl->free_chunks, 1, memory_order_relaxed);
            ch->owner = owner;
            ch->base = covered;
            ch->next = STREAMLOG_NO_CHUNK;
            if (st->tail_chunk == STREAMLOG_NO_CHUNK)
                st->head_chunk = c;
            else
                streamlog_chunk(sl, st->tail_chunk)->next = c;
            st->tail_chunk = c;
            st->chunks++;
            covered += STREAMLOG_CHUNK;
        }
        pthread_mutex_unlock(&sl->pool_lock);
    }
    uint64_t next = atomic_load_explicit(&st->last_seq, memory_order_relaxed) + 1;
    struct streamlog_record r = {
        .seq = next, .ts_ms = ts_ms, .origin_ns = origin_ns, .len = len, .size = (uint32_t)size};
    uint32_t c = streamlog_locate(sl, st, pos, hint);
    memcpy(streamlog_chunk_data(sl, c) + (pos & STREAMLOG_CHUNK_MASK), &r, sizeof(r));
    streamlog_copy_in(sl, c, pos + sizeof(r), data, len);
    /* Publish last: until commit_pos covers it, the record does not exist,
     * so a writer dying above leaves nothing half-written behind. */
    if (st->head_seq > next - 1)
        st->head_pos = pos;
    st->commit_pos = end;
    atomic_store_explicit(&st->last_seq, next, memory_order_release);
    atomic_store_explicit(&st->last_active_ms, ts_ms, memory_order_relaxed);
    *seq = next;
    streamlog_trim(sl, st, pol, 0);
    return 0;
}

void streamlog_iter_head(const struct streamlog_stream *st, struct streamlog_iter *it)
{
    it->pos = st->head_pos;
    it->chunk = st->head_chunk;
}

const struct streamlog_record *streamlog_peek(struct streamlog *sl, struct streamlog_stream *st,
                                              struct streamlog_iter *it)
{
    if (it->pos >= st->commit_pos)
        return NULL;
    it->pos = streamlog_fit(it->pos);
    it->chunk = streamlog_locate(sl, st, it->pos, it->chunk);
    if (it->chunk == STREAMLOG_NO_CHUNK)
        return NULL;
    return (const struct streamlog_record *)(streamlog_chunk_data(sl, it->chunk) +
                                             (it->pos & STREAMLOG_CHUNK_MASK));
}

void streamlog_take(struct streamlog *sl, struct streamlog_stream *st, struct streamlog_iter *it,
                    char *dst)
{
    const struct streamlog_record *r = streamlog_peek(sl, st, it);
    if (!r)
        return;
    if (dst)
        streamlog_copy_out(sl, it->chunk, it->pos + sizeof(*r), dst, r->len);
    it->pos += r->size;
}

void streamlog_follow(struct streamlog_stream *st, int slot, int on)
{
    uint64_t bit = 1ull << slot;
    st->released_mask &= ~bit;
    if (on) {
        st->cursor[slot] = st->commit_pos;
        atomic_fetch_or(&st->worker_mask, bit);
    } else {
        atomic_fetch_and(&st->worker_mask, ~bit);
    }
}

void streamlog_consumed(struct streamlog *sl, struct streamlog_stream *st, int slot, uint64_t pos,
                        const struct streamlog_policy *pol)
{
    st->cursor[slot] = pos;
    st->released_mask &= ~(1ull << slot);
    streamlog_trim(sl, st, pol, 0);
}

void streamlog_forget_worker(struct streamlog *sl, int slot)
{
    for (uint32_t i = 0; i < sl->max_streams; i++)
        atomic_fetch_and(&streamlog_stream_at(sl, i)->worker_mask, ~(1ull << slot));
}

unsigned streamlog_reclaim(struct streamlog *sl, int64_t now_ms, int64_t ttl_ms)
{
    uint32_t *hash = streamlog_hash(sl);
    unsigned reclaimed = 0;
    streamlog_mutex_lock(&sl->table_lock);
    for (uint32_t i = 0; i < sl->max_streams; i++) {
        struct streamlog_stream *st = streamlog_stream_at(sl, i);
        if (atomic_load(&st->state) != STREAMLOG_LIVE || atomic_load(&st->worker_mask) != 0 ||
            now_ms - atomic_load(&st->last_active_ms) < ttl_ms)
            continue;
        if (streamlog_mutex_lock(&st->lock))
            streamlog_stream_repair(sl, st);
        if (atomic_load(&st->worker_mask) == 0 &&
            now_ms - atomic_load(&st->last_active_ms) >= ttl_ms) {
            uint32_t mask = sl->hash_slots - 1;
            uint32_t h = streamlog_name_hash(st->name, st->name_len) & mask;
            for (uint32_t probe = 0; probe < sl->hash_slots; probe++, h = (h + 1) & mask) {
                if (hash[h] == i + 1) {
                    hash[h] = UINT32_MAX;
                    break;
                }
                if (hash[h] == 0)
                    break;
            }
            st->head_pos = st->commit_pos;
            st->head_seq = atomic_load(&st->last_seq) + 1;
            streamlog_free_front(sl, st, 1);
            atomic_fetch_add(&st->generation, 1);
            atomic_store(&st->state, STREAMLOG_FREE);
            atomic_fetch_sub(&sl->active, 1);
            reclaimed++;
        }
        pthread_mutex_unlock(&st->lock);
    }
    pthread_mutex_unlock(&sl->table_lock);
    return reclaimed;
}
