/*
 * streamlog — per-stream sequence numbers and bounded history, shared by
 * every worker through the segment (layout in streamlog-t.h).
 *
 * The only code that touches stream rings. Knows nothing of connections or
 * workers beyond a worker slot number in the subscriber mask. Callers lock
 * a stream (streamlog_lock), append or read, and unlock; a lock whose
 * previous owner died is recovered transparently.
 */
#ifndef WSGATE_STREAMLOG_H
#define WSGATE_STREAMLOG_H

#include <stddef.h>
#include <stdint.h>

#include "streamlog-t.h"

/* Bytes needed for max_streams streams sharing stream_memory bytes of
 * rings (rounded down to a whole number of 8-byte-aligned rings). */
uint64_t streamlog_bytes(uint32_t max_streams, uint64_t stream_memory);
/* Set up the table in zeroed memory of streamlog_bytes() bytes. */
int streamlog_init(struct streamlog *sl, uint32_t max_streams, uint64_t stream_memory);

/* A fresh random epoch: STREAMLOG_EPOCH_LEN characters and a NUL. */
void streamlog_new_epoch(char *epoch);

/* 1 when name is 1–128 characters of [A-Za-z0-9_.:/-]. */
int streamlog_name_valid(const char *name, size_t len);

/* Find a stream by name, creating it (with a fresh epoch) when `create`.
 * Returns 0, -ENOENT (absent, not created) or -ENOSPC (max_streams). */
int streamlog_lookup(struct streamlog *sl, const char *name, size_t len, int create,
                     struct streamlog_ref *out);

/* Lock the stream; NULL when the slot was reclaimed since `ref` was taken. */
struct streamlog_stream *streamlog_lock(struct streamlog *sl, struct streamlog_ref ref);
void streamlog_unlock(struct streamlog_stream *st);

/* Append one message; *seq receives its sequence number. -E2BIG when the
 * record cannot fit the stream's ring. Stream locked by the caller. */
int streamlog_append(struct streamlog *sl, struct streamlog_stream *st, const void *data,
                     uint32_t len, int64_t ts_ms, uint64_t origin_ns, uint64_t *seq);

/* The held records with seq > after, oldest first, at most `cap` of them
 * (history_size) and at most `max` written to out[]. *oldest_held is the
 * seq of the oldest held record (0 when none). Stream locked by caller.
 * Returns how many records were written to out[]. */
size_t streamlog_collect(struct streamlog *sl, struct streamlog_stream *st, uint64_t after,
                         uint64_t cap, const struct streamlog_record **out, size_t max,
                         uint64_t *oldest_held);

static inline const char *streamlog_record_data(const struct streamlog_record *r)
{
    return (const char *)(r + 1);
}

/* Mark whether worker `slot` has local subscribers (publishers wake the
 * workers in the mask). Stream locked by the caller. */
void streamlog_set_subscribed(struct streamlog_stream *st, int slot, int on);
/* A worker died: it has no subscribers any more. */
void streamlog_forget_worker(struct streamlog *sl, int slot);
/* Reclaim streams with no subscriber and no publish for ttl_ms: their
 * history goes and a later publish starts a new epoch. Returns how many. */
unsigned streamlog_reclaim(struct streamlog *sl, int64_t now_ms, int64_t ttl_ms);

struct streamlog_stream *streamlog_stream_at(struct streamlog *sl, uint32_t index);

#endif
