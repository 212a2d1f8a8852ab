/*
 * streamlog-t.h — layout of the stream logs inside the shared segment.
 *
 * Every stream owns one fixed slice of the segment (stream_memory /
 * max_streams bytes) used as a byte ring of records, newest last. Records
 * are chained backwards (prev_pos), so replay walks from the newest record
 * to the oldest one still wanted; a record is held while it has not been
 * overwritten (write_pos - pos <= ring_bytes) and is among the newest
 * history_size. Positions are monotonic 64-bit byte counts, so "was this
 * overwritten?" is one subtraction and never ambiguous.
 *
 *   struct streamlog (at segment + streams_offset)
 *   +------------------------------------------------------------+
 *   | table_lock (robust, process-shared), sizes, offsets, active|
 *   +------------------------------------------------------------+
 *   | hash[hash_slots]: int32 (0 empty, -1 deleted, i+1 stream i) |
 *   +------------------------------------------------------------+
 *   | stream[0 .. max_streams-1]: lock, state, generation, name,  |
 *   |   epoch, last_seq, write_pos, last_pos, last_active_ms,     |
 *   |   worker_mask (workers with local subscribers)              |
 *   +------------------------------------------------------------+
 *   | ring[0]      ring_bytes: [record hdr | data | pad] ...      |
 *   | ring[1] ...                                                 |
 *   +------------------------------------------------------------+
 *
 * A stream's lock serialises appends and reads of its ring; the table
 * lock serialises creating and reclaiming streams. Both are robust
 * mutexes: a worker killed while holding one never wedges the stream,
 * because every append publishes its record only after it is complete.
 */
#ifndef WSGATE_STREAMLOG_T_H
#define WSGATE_STREAMLOG_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define STREAMLOG_NAME_MAX 128
#define STREAMLOG_EPOCH_LEN 8
#define STREAMLOG_NO_POS UINT64_MAX

enum streamlog_state {
    STREAMLOG_FREE = 0,
    STREAMLOG_LIVE = 1,
};

struct streamlog_record {
    uint64_t seq;
    int64_t ts_ms;        /* wall clock when the gateway accepted it */
    uint64_t origin_ns;   /* CLOCK_MONOTONIC when its last frame arrived */
    uint64_t prev_pos;    /* previous record of this stream, or STREAMLOG_NO_POS */
    uint32_t len;         /* data bytes that follow */
    uint32_t size;        /* whole record, 8-byte aligned */
};

struct streamlog_stream {
    pthread_mutex_t lock;
    _Atomic uint32_t state;
    _Atomic uint32_t generation; /* bumped when the slot is reclaimed */
    uint32_t name_len;
    char name[STREAMLOG_NAME_MAX + 1];
    char epoch[STREAMLOG_EPOCH_LEN + 1];
    _Atomic uint64_t last_seq;
    uint64_t write_pos;
    uint64_t last_pos;
    _Atomic int64_t last_active_ms;
    _Atomic uint64_t worker_mask;
};

struct streamlog {
    pthread_mutex_t table_lock;
    uint32_t max_streams;
    uint32_t hash_slots;
    uint64_t ring_bytes;
    uint64_t hash_offset;    /* from the start of struct streamlog */
    uint64_t streams_offset;
    uint64_t rings_offset;
    uint64_t total_bytes;
    _Atomic uint32_t active;
};

/* Which stream, and which incarnation of its slot. */
struct streamlog_ref {
    uint32_t index;
    uint32_t generation;
};

#endif
