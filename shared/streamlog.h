/*
 * streamlog — per-stream sequence numbers, live hand-over between workers
 * and bounded history, in one chunk pool shared by every worker through
 * the segment (layout and rules in streamlog-t.h).
 *
 * The only code that touches stream logs. Knows nothing of connections or
 * workers beyond a worker slot number (followers, cursors). Callers lock a
 * stream (streamlog_lock), append or read, and unlock; a lock whose
 * previous owner died is recovered (and what it guarded repaired) here.
 *
 * The contract that live delivery rests on: a record stays until every
 * worker following the stream has moved its cursor past it. history_size
 * and history_max_bytes bound only what is kept after that, for replay.
 */
#ifndef WSGATE_STREAMLOG_H
#define WSGATE_STREAMLOG_H

#include <stddef.h>
#include <stdint.h>

#include "streamlog-t.h"

/* Bytes needed for max_streams streams sharing a pool of stream_memory
 * bytes (rounded down to whole chunks). */
uint64_t streamlog_bytes(uint32_t max_streams, uint64_t stream_memory);
/* Set up the table in zeroed memory of streamlog_bytes() bytes. */
int streamlog_init(struct streamlog *sl, uint32_t max_streams, uint64_t stream_memory);
/* Chunks a record of `len` data bytes may need, wherever it starts. */
uint64_t streamlog_chunks_for(uint64_t len);
/* Pool chunks in stream_memory bytes. */
uint64_t streamlog_pool_chunks(uint64_t stream_memory);

/* A fresh random epoch: STREAMLOG_EPOCH_LEN characters and a NUL. */
void streamlog_new_epoch(char *epoch);

/* The one hash of stream names (FNV-1a), for every table keyed by them. */
uint32_t streamlog_name_hash(const char *name, size_t len);

/* 1 when name is 1–128 characters of [A-Za-z0-9_.:/-]. */
int streamlog_name_valid(const char *name, size_t len);

/* Find a stream by name, creating it (with a fresh epoch) when `create`.
 * Returns 0, -ENOENT (absent, not created) or -ENOSPC (max_streams). */
int streamlog_lookup(struct streamlog *sl, const char *name, size_t len, int create,
                     struct streamlog_ref *out);

/* Lock the stream; NULL when the slot was reclaimed since `ref` was taken. */
struct streamlog_stream *streamlog_lock(struct streamlog *sl, struct streamlog_ref ref);
void streamlog_unlock(struct streamlog_stream *st);

/* Append one message; *seq receives its sequence number. When the pool is
 * short, history nobody needs is dropped first (any stream's), then the
 * cursors of followers in pol->stuck_mask are released. Returns 0,
 * -E2BIG (the record can never fit the pool) or -ENOBUFS (the pool is
 * full of records a live follower has not read yet: retry later).
 * Stream locked by the caller, who must not hold another stream's lock. */
int streamlog_append(struct streamlog *sl, struct streamlog_stream *st, const void *data,
                     uint32_t len, int64_t ts_ms, uint64_t origin_ns,
                     const struct streamlog_policy *pol, uint64_t *seq);

/* Reading. An iterator starts at st->head_pos (streamlog_iter_head) or
 * at a position a previous read ended on. peek returns the record at the
 * iterator, or NULL at the end of the log; take copies its data into dst
 * (NULL: skip it) and moves past it. Stream locked by the caller. */
void streamlog_iter_head(const struct streamlog_stream *st, struct streamlog_iter *it);
const struct streamlog_record *streamlog_peek(struct streamlog *sl, struct streamlog_stream *st,
                                              struct streamlog_iter *it);
void streamlog_take(struct streamlog *sl, struct streamlog_stream *st, struct streamlog_iter *it,
                    char *dst);

/* Worker `slot` starts (on) or stops following the stream: publishers
 * wake the workers that follow, and records wait for their cursors. A
 * new follower's cursor starts at the end of the log. Stream locked. */
void streamlog_follow(struct streamlog_stream *st, int slot, int on);
/* Worker `slot` has read everything before `pos`: move its cursor, take
 * back a released cursor, and drop what the policy no longer keeps.
 * Stream locked. */
void streamlog_consumed(struct streamlog *sl, struct streamlog_stream *st, int slot, uint64_t pos,
                        const struct streamlog_policy *pol);
/* A worker died: it follows nothing any more. */
void streamlog_forget_worker(struct streamlog *sl, int slot);
/* Reclaim streams with no follower and no publish for ttl_ms: their
 * history goes back to the pool and a later publish starts a new epoch.
 * Returns how many. */
unsigned streamlog_reclaim(struct streamlog *sl, int64_t now_ms, int64_t ttl_ms);

static inline uint32_t streamlog_free_chunks(const struct streamlog *sl)
{
    return atomic_load_explicit(&sl->free_chunks, memory_order_relaxed);
}

struct streamlog_stream *streamlog_stream_at(struct streamlog *sl, uint32_t index);

#endif
