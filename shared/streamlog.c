#include "streamlog.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"

#define STREAMLOG_ALIGN(n) (((n) + 7u) & ~(uint64_t)7u)

static uint32_t *streamlog_hash(struct streamlog *sl)
{
    return (uint32_t *)((char *)sl + sl->hash_offset);
}

struct streamlog_stream *streamlog_stream_at(struct streamlog *sl, uint32_t index)
{
    return (struct streamlog_stream *)((char *)sl + sl->streams_offset) + index;
}

static char *streamlog_ring(struct streamlog *sl, uint32_t index)
{
    return (char *)sl + sl->rings_offset + (uint64_t)index * sl->ring_bytes;
}

static uint32_t streamlog_hash_slots(uint32_t max_streams)
{
    uint32_t n = 16;
    while (n < 2u * max_streams)
        n <<= 1;
    return n;
}

uint64_t streamlog_bytes(uint32_t max_streams, uint64_t stream_memory)
{
    uint64_t head = STREAMLOG_ALIGN(sizeof(struct streamlog));
    uint64_t hash = STREAMLOG_ALIGN((uint64_t)streamlog_hash_slots(max_streams) * sizeof(uint32_t));
    uint64_t streams = (uint64_t)max_streams * sizeof(struct streamlog_stream);
    uint64_t ring = (stream_memory / max_streams) & ~(uint64_t)7u;
    return head + hash + STREAMLOG_ALIGN(streams) + ring * max_streams;
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

int streamlog_init(struct streamlog *sl, uint32_t max_streams, uint64_t stream_memory)
{
    sl->max_streams = max_streams;
    sl->hash_slots = streamlog_hash_slots(max_streams);
    sl->ring_bytes = (stream_memory / max_streams) & ~(uint64_t)7u;
    sl->hash_offset = STREAMLOG_ALIGN(sizeof(struct streamlog));
    sl->streams_offset =
        sl->hash_offset + STREAMLOG_ALIGN((uint64_t)sl->hash_slots * sizeof(uint32_t));
    sl->rings_offset = sl->streams_offset +
                       STREAMLOG_ALIGN((uint64_t)max_streams * sizeof(struct streamlog_stream));
    sl->total_bytes = sl->rings_offset + sl->ring_bytes * max_streams;
    int r = streamlog_mutex_init(&sl->table_lock);
    for (uint32_t i = 0; r == 0 && i < max_streams; i++)
        r = streamlog_mutex_init(&streamlog_stream_at(sl, i)->lock);
    return r;
}

/* Lock a robust mutex. If its owner died holding it, the protected state
 * is still consistent (every writer publishes last), so mark it so. */
static void streamlog_mutex_lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) == EOWNERDEAD)
        pthread_mutex_consistent(m);
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

static uint32_t streamlog_name_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)name[i];
        h *= 16777619u;
    }
    return h;
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
        st->write_pos = 0;
        st->last_pos = STREAMLOG_NO_POS;
        atomic_store(&st->last_seq, 0);
        atomic_store(&st->worker_mask, 0);
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
    streamlog_mutex_lock(&st->lock);
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

static int streamlog_held(const struct streamlog *sl, const struct streamlog_stream *st,
                          uint64_t pos)
{
    return pos != STREAMLOG_NO_POS && st->write_pos - pos <= sl->ring_bytes;
}

int streamlog_append(struct streamlog *sl, struct streamlog_stream *st, const void *data,
                     uint32_t len, int64_t ts_ms, uint64_t origin_ns, uint64_t *seq)
{
    uint64_t size = STREAMLOG_ALIGN(sizeof(struct streamlog_record) + (uint64_t)len);
    if (size > sl->ring_bytes)
        return -E2BIG;
    uint32_t index = (uint32_t)(st - streamlog_stream_at(sl, 0));
    char *ring = streamlog_ring(sl, index);
    /* The newest record, not last_seq, says what comes next: a writer that
     * died after linking its record but before publishing last_seq must
     * not make the next one reuse its seq. */
    uint64_t next = atomic_load_explicit(&st->last_seq, memory_order_relaxed) + 1;
    if (streamlog_held(sl, st, st->last_pos)) {
        const struct streamlog_record *newest =
            (const struct streamlog_record *)(ring + st->last_pos % sl->ring_bytes);
        if (newest->seq + 1 > next)
            next = newest->seq + 1;
    }
    uint64_t prev = streamlog_held(sl, st, st->last_pos) ? st->last_pos : STREAMLOG_NO_POS;
    uint64_t off = st->write_pos % sl->ring_bytes;
    if (sl->ring_bytes - off < size) {
        st->write_pos += sl->ring_bytes - off; /* records never wrap */
        off = 0;
    }
    uint64_t pos = st->write_pos;
    /* Claim the space first: a writer dying below leaves a hole, never a
     * published record pointing at half-written bytes. */
    st->write_pos += size;
    struct streamlog_record *r = (struct streamlog_record *)(ring + off);
    r->seq = next;
    r->ts_ms = ts_ms;
    r->origin_ns = origin_ns;
    /* The previous record may just have been overwritten by this one. */
    r->prev_pos = prev != STREAMLOG_NO_POS && streamlog_held(sl, st, prev) ? prev : STREAMLOG_NO_POS;
    r->len = len;
    r->size = (uint32_t)size;
    memcpy(r + 1, data, len);
    st->last_pos = pos;
    atomic_store_explicit(&st->last_seq, next, memory_order_release);
    atomic_store_explicit(&st->last_active_ms, ts_ms, memory_order_relaxed);
    *seq = next;
    return 0;
}

size_t streamlog_collect(struct streamlog *sl, struct streamlog_stream *st, uint64_t after,
                         uint64_t cap, const struct streamlog_record **out, size_t max,
                         uint64_t *oldest_held)
{
    uint32_t index = (uint32_t)(st - streamlog_stream_at(sl, 0));
    const char *ring = streamlog_ring(sl, index);
    uint64_t pos = st->last_pos;
    uint64_t seen = 0;
    *oldest_held = 0;
    /* Walk newest to oldest; out[] is filled from its end so the result
     * comes out oldest first without a second pass over the ring. */
    size_t n = 0;
    while (streamlog_held(sl, st, pos) && seen < cap && n < max) {
        const struct streamlog_record *r =
            (const struct streamlog_record *)(ring + pos % sl->ring_bytes);
        seen++;
        *oldest_held = r->seq;
        if (r->seq <= after)
            break;
        n++;
        out[max - n] = r;
        pos = r->prev_pos;
    }
    if (n && n < max)
        memmove(out, out + (max - n), n * sizeof(*out));
    return n;
}

void streamlog_set_subscribed(struct streamlog_stream *st, int slot, int on)
{
    uint64_t bit = 1ull << slot;
    if (on)
        atomic_fetch_or(&st->worker_mask, bit);
    else
        atomic_fetch_and(&st->worker_mask, ~bit);
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
        streamlog_mutex_lock(&st->lock);
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
