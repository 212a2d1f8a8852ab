/*
 * streamlog-t.h — layout of the stream logs inside the shared segment.
 *
 * stream_memory is one pool of fixed-size chunks shared by every stream.
 * A stream's log is a byte sequence addressed by monotonic 64-bit
 * positions (never reused, so "is this still held?" is one comparison);
 * it is stored in a chain of chunks, oldest first, each chunk covering
 * [base, base + STREAMLOG_CHUNK) of that stream's positions. A record is
 * a header followed by its data; the header never straddles two chunks,
 * the data may cross as many as it needs, so any message up to
 * max_message_size fits while the pool has room.
 *
 *   struct streamlog (at segment + streams_offset)
 *   +------------------------------------------------------------------+
 *   | table_lock, pool_lock (robust, process-shared), sizes, offsets,  |
 *   | free-chunk stack top, free count, active streams, releases       |
 *   +------------------------------------------------------------------+
 *   | hash[hash_slots]: uint32 (0 empty, UINT32_MAX deleted, i+1 = i)  |
 *   +------------------------------------------------------------------+
 *   | stream[0 .. max_streams-1]: lock, state, generation, name,       |
 *   |   epoch, last_seq, head_seq/head_pos (oldest held record),       |
 *   |   commit_pos (end of the newest record), head/tail chunk,        |
 *   |   worker_mask (workers following it), released_mask,             |
 *   |   cursor[64] (per worker: position of the next record it reads)  |
 *   +------------------------------------------------------------------+
 *   | chunk[0 .. chunk_count-1]: next, owner (stream+1, 0 free), base  |
 *   +------------------------------------------------------------------+
 *   | data: chunk_count x STREAMLOG_CHUNK bytes                         |
 *   +------------------------------------------------------------------+
 *
 *   one stream:  head_pos               cursor[w1]      commit_pos
 *                 |  rec  | rec | rec  | rec |  rec   |     :
 *   chunks:      [ base=0    ][ base=16K  ][ base=32K  ]
 *                 ^head_chunk               ^tail_chunk
 *
 * A record before every following worker's cursor may be dropped once
 * the stream holds more than history_size records (or its byte cap), or
 * at once when the pool runs short; a record some following worker has
 * not read is never dropped — unless that worker stopped making progress
 * for send_timeout while the pool is exhausted, in which case its cursor
 * is released (released_mask) and its subscribers are told with a gap.
 *
 * Locks: a stream's lock serialises its appends, reads and trims; the
 * table lock serialises creating and reclaiming streams; the pool lock
 * guards the free stack and every change to any chunk chain, and is
 * always taken last. All are robust: a record becomes visible only when
 * commit_pos moves past it, and a pool lock whose owner died triggers a
 * repair pass that rebuilds the free stack and every chain's tail, so a
 * worker killed anywhere never wedges a stream or leaks a chunk.
 */
#ifndef WSGATE_STREAMLOG_T_H
#define WSGATE_STREAMLOG_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define STREAMLOG_NAME_MAX 128
#define STREAMLOG_EPOCH_LEN 8
#define STREAMLOG_CHUNK 16384u
#define STREAMLOG_NO_CHUNK UINT32_MAX
#define STREAMLOG_SLOTS 64

enum streamlog_state {
    STREAMLOG_FREE = 0,
    STREAMLOG_LIVE = 1,
};

struct streamlog_record {
    uint64_t seq;
    int64_t ts_ms;        /* wall clock when the gateway accepted it */
    uint64_t origin_ns;   /* CLOCK_MONOTONIC when its last frame arrived */
    uint32_t len;         /* data bytes that follow */
    uint32_t size;        /* header + data, 8-byte aligned */
};

struct streamlog_stream {
    pthread_mutex_t lock;
    _Atomic uint32_t state;
    _Atomic uint32_t generation; /* bumped when the slot is reclaimed */
    uint32_t name_len;
    char name[STREAMLOG_NAME_MAX + 1];
    char epoch[STREAMLOG_EPOCH_LEN + 1];
    _Atomic uint64_t last_seq;   /* newest committed record; 0 = none yet */
    uint64_t head_seq;           /* oldest held record; > last_seq when none */
    uint64_t head_pos;           /* its position (== commit_pos when none) */
    uint64_t commit_pos;         /* end of the newest committed record */
    uint32_t head_chunk;         /* chain, oldest first, or STREAMLOG_NO_CHUNK */
    uint32_t tail_chunk;
    uint32_t chunks;             /* chunks in the chain */
    uint32_t pad;
    _Atomic int64_t last_active_ms;
    _Atomic uint64_t worker_mask;   /* workers following the stream */
    uint64_t released_mask;         /* followers whose cursor the pool took back */
    uint64_t cursor[STREAMLOG_SLOTS];
};

struct streamlog_chunk {
    uint32_t next;   /* next chunk of the same chain, or of the free stack */
    uint32_t owner;  /* stream index + 1; 0 = free */
    uint64_t base;   /* first stream position it covers */
};

struct streamlog {
    pthread_mutex_t table_lock;
    pthread_mutex_t pool_lock;
    uint32_t max_streams;
    uint32_t hash_slots;
    uint32_t chunk_count;
    uint32_t free_top;           /* free stack, or STREAMLOG_NO_CHUNK */
    _Atomic uint32_t free_chunks;
    _Atomic uint32_t active;
    _Atomic uint32_t evict_next; /* where the next eviction scan starts (a hint) */
    uint32_t pad;
    uint64_t hash_offset;        /* from the start of struct streamlog */
    uint64_t streams_offset;
    uint64_t chunks_offset;
    uint64_t data_offset;
    uint64_t total_bytes;
    _Atomic uint64_t cursor_releases; /* cursors released from stuck workers */
    _Atomic uint64_t pool_repairs;    /* pool lock recovered from a dead owner */
};

/* Which stream, and which incarnation of its slot. */
struct streamlog_ref {
    uint32_t index;
    uint32_t generation;
};

/* A reading position: a record start and the chunk holding it (a hint,
 * checked before use and looked up again when stale). */
struct streamlog_iter {
    uint64_t pos;
    uint32_t chunk;
};

/* What a trim or an append may drop, from the caller's configuration. */
struct streamlog_policy {
    uint64_t history_records;    /* history_size */
    uint64_t history_bytes;      /* history_max_bytes; 0 = no byte cap */
    uint64_t stuck_mask;         /* workers that made no progress for send_timeout */
};

#endif
