/*
 * segment-t.h — layout of the shared-memory segment.
 *
 * The master creates the segment (POSIX shm object "/wsgate-<port>") before
 * forking, so every worker maps the same pages at the same address. Each
 * worker slot is written by its worker only, with relaxed atomic stores
 * (plain moves on x86-64: no lock, no syscall); readers sum across slots.
 * The master alone writes the header's config block and the retired block.
 *
 *   offset 0
 *   +---------------------------------------------------------------+
 *   | struct segment (header)                                       |
 *   |   magic "WSGATSEG", layout_version, size, created_at_ms       |
 *   |   master_pid, worker_slots, draining                          |
 *   |   config_seq (seqlock) + struct config  <- master writes      |
 *   |   config_generation                                           |
 *   |   connections (replica-wide, enforced against max_connections)|
 *   |   master counters: config reloads, worker restarts            |
 *   |   fold_seq (seqlock around folding a dead worker's counters)  |
 *   |   retired: struct segment_counters <- master folds dead slots |
 *   +---------------------------------------------------------------+
 *   | worker[0]   struct segment_worker: pid, state, started_at,    |
 *   |             restarts, connections, progress, queued frames,   |
 *   |             struct segment_counters (message latency, request |
 *   |             duration and heartbeat RTT histograms among them),|
 *   |             rtt_top: the slowest connections by RTT (seqlock, |
 *   |             refreshed each sweep)                             |
 *   | worker[1]   ...                      <- written by worker 1   |
 *   | ...                                                           |
 *   | worker[SEGMENT_WORKER_SLOTS-1]                                |
 *   +---------------------------------------------------------------+
 *   | per-IP connection counts (struct iptable, see iptable-t.h), at |
 *   | ips_offset, page-aligned                                      |
 *   +---------------------------------------------------------------+
 *   | stream logs (struct streamlog, see streamlog-t.h), at          |
 *   | streams_offset, page-aligned: stream table, chunk pool        |
 *   +---------------------------------------------------------------+
 *
 * Every struct here holds no pointers (addresses differ between processes
 * reading it from outside, like tools/wsstat).
 */
#ifndef WSGATE_SEGMENT_T_H
#define WSGATE_SEGMENT_T_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "config-t.h"
#include "streamlog-t.h"

#define SEGMENT_MAGIC 0x5753474154534547ull /* "WSGATSEG" */
#define SEGMENT_LAYOUT_VERSION 7u
#define SEGMENT_WORKER_SLOTS 64

/* Why a WebSocket connection ended: the `reason` label. */
enum segment_disconnect_reason {
    DISCONNECT_CLIENT_CLOSE = 0,
    DISCONNECT_TIMEOUT,
    DISCONNECT_PROTOCOL_ERROR,
    DISCONNECT_TOO_LARGE,
    DISCONNECT_SLOW_CONSUMER,
    DISCONNECT_SHUTDOWN,
    DISCONNECT_RELOAD,
    DISCONNECT_WORKER_EXIT,
    DISCONNECT_ERROR,
    DISCONNECT_REASON_COUNT
};

/* Why a connection was refused or failed before it was a WebSocket:
 * the `error_type` label. */
enum segment_connection_error {
    CONN_ERROR_HANDSHAKE = 0,
    CONN_ERROR_CAPACITY,
    CONN_ERROR_TIMEOUT,
    CONN_ERROR_AUTH,
    CONN_ERROR_ORIGIN,
    CONN_ERROR_TLS,
    CONN_ERROR_IO,
    CONN_ERROR_TYPE_COUNT
};

/* Why a request was refused with an `error` message: its `code` (the
 * `code` label of websocket_messages_refused_total; docs/PROTOCOL.md's codes). */
enum segment_refusal {
    REFUSED_BAD_REQUEST = 0,
    REFUSED_UNAUTHORIZED,
    REFUSED_FORBIDDEN,
    REFUSED_TOO_LARGE,
    REFUSED_RATE_LIMITED,
    REFUSED_CAPACITY,
    REFUSED_UNAVAILABLE,
    REFUSED_INTERNAL,
    REFUSED_CODE_COUNT
};

enum segment_worker_state {
    WORKER_EMPTY = 0, /* slot not in use */
    WORKER_STARTING,
    WORKER_RUNNING,
    WORKER_DRAINING,
    WORKER_DEAD,      /* exited; waiting to be respawned (maybe in backoff) */
    WORKER_STATE_COUNT
};

/* websocket_message_latency_seconds buckets: 100 µs … 10 s, plus +Inf.
 * The request-duration and RTT histograms use the same bounds. */
#define SEGMENT_LATENCY_BUCKETS 17

/* What a client request asked for: the `type` label of
 * websocket_request_duration_seconds. `invalid`: not JSON, no type or an
 * unknown one (answered with an error). */
enum segment_request_type {
    REQUEST_PING = 0,
    REQUEST_SUBSCRIBE,
    REQUEST_UNSUBSCRIBE,
    REQUEST_PUBLISH,
    REQUEST_AUTH,
    REQUEST_INVALID,
    REQUEST_TYPE_COUNT
};

/* One connection among a worker's slowest by heartbeat round trip. */
#define SEGMENT_RTT_TOP 8
#define SEGMENT_REMOTE_MAX 56

struct segment_rtt_entry {
    uint64_t conn_id;           /* "<slot>-<conn_id>", as in the logs */
    uint64_t rtt_ns;            /* its last heartbeat ping → pong */
    uint64_t unsent_bytes;      /* queued for it, not yet handed to the kernel */
    uint32_t subscriptions;
    char remote[SEGMENT_REMOTE_MAX]; /* "address:port" */
};

/* Seqlock: odd while the worker rewrites; readers copy and retry. */
struct segment_rtt_top {
    _Atomic uint64_t seq;
    uint32_t count;
    struct segment_rtt_entry entry[SEGMENT_RTT_TOP]; /* slowest first */
};

/* websocket_compression_bytes_total: payload bytes of permessage-deflate
 * messages, compressed or not, by direction and stage. */
enum segment_compression_direction { COMPRESSION_IN = 0, COMPRESSION_OUT };
enum segment_compression_stage { COMPRESSION_BEFORE = 0, COMPRESSION_AFTER };

/* Why a broker request failed: the `error_type` label of
 * websocket_broker_errors_total. */
enum segment_broker_error {
    BROKER_ERROR_CONNECT = 0, /* connection lost or refused */
    BROKER_ERROR_TIMEOUT,     /* no answer within pool_timeout */
    BROKER_ERROR_COMMAND,     /* Redis answered with an error */
    BROKER_ERROR_REPLICAS,    /* WAIT saw fewer than broker_replicas_ack replicas */
    BROKER_ERROR_SUBSCRIPTION, /* the pub/sub connection went silent and was replaced */
    BROKER_ERROR_TYPE_COUNT
};

/* Counters of one broker (Redis URL), per worker. */
struct segment_broker_counters {
    _Atomic uint64_t errors[BROKER_ERROR_TYPE_COUNT];
    _Atomic uint64_t latency_bucket[SEGMENT_LATENCY_BUCKETS];
    _Atomic uint64_t latency_sum_ns;
    _Atomic uint64_t latency_count;
};

/* Gauges of one broker, per worker. */
struct segment_broker_state {
    _Atomic uint32_t up;          /* 1: this worker's command connection to it is up */
    _Atomic uint32_t sub_up;      /* 1: this worker's pub/sub connection to it is up */
    _Atomic uint32_t pool_in_use; /* command connections with requests in flight */
    _Atomic uint32_t pool_idle;   /* open command connections with none */
};

struct segment_counters {
    _Atomic uint64_t connections_total;
    _Atomic uint64_t disconnections[DISCONNECT_REASON_COUNT];
    _Atomic uint64_t connection_errors[CONN_ERROR_TYPE_COUNT];
    _Atomic uint64_t messages_refused[REFUSED_CODE_COUNT];
    _Atomic uint64_t messages_received;
    _Atomic uint64_t messages_sent;
    _Atomic uint64_t bytes_received;
    _Atomic uint64_t bytes_sent;
    /* permessage-deflate payload bytes [direction][stage], see segment_compression_*. */
    _Atomic uint64_t compression_bytes[2][2];
    /* Non-cumulative: bucket i counts observations in (le[i-1], le[i]]. */
    _Atomic uint64_t latency_bucket[SEGMENT_LATENCY_BUCKETS];
    _Atomic uint64_t latency_sum_ns;
    _Atomic uint64_t latency_count;
    /* websocket_request_duration_seconds{type}: request received → reply
     * handed to the kernel (same bucket scheme as latency). */
    _Atomic uint64_t request_bucket[REQUEST_TYPE_COUNT][SEGMENT_LATENCY_BUCKETS];
    _Atomic uint64_t request_sum_ns[REQUEST_TYPE_COUNT];
    /* websocket_client_rtt_seconds: heartbeat ping queued → its pong read. */
    _Atomic uint64_t rtt_bucket[SEGMENT_LATENCY_BUCKETS];
    _Atomic uint64_t rtt_sum_ns;
    struct segment_broker_counters broker[CONFIG_BROKERS_MAX];
};

struct segment_worker {
    _Atomic int32_t pid;
    _Atomic uint32_t state;        /* enum segment_worker_state */
    _Atomic int64_t started_at_ms; /* wall clock */
    _Atomic uint32_t restarts;     /* respawns of this slot */
    _Atomic int64_t connections;   /* open WebSocket connections */
    _Atomic uint64_t config_generation; /* last generation this worker applied */
    _Atomic int64_t backoff_until_ms;   /* wall clock; crash-loop backoff, 0 = none */
    int32_t wake_fd;                    /* eventfd that wakes this worker (same number in
                                           every forked worker; meaningless elsewhere) */
    _Atomic uint32_t wake_pending;      /* 1: a wake-up is already on its way */
    _Atomic uint64_t progress_ns;       /* CLOCK_MONOTONIC of the worker's last loop tick:
                                           others judge from it whether it is stuck */
    _Atomic int64_t queued_frame_bytes; /* memory held by frames waiting in send queues
                                           (each shared frame counted once) */
    struct segment_broker_state broker[CONFIG_BROKERS_MAX];
    struct segment_counters counters;
    struct segment_rtt_top rtt_top;
    char pad[64];
};

struct segment {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t worker_slots;
    uint64_t size;
    int64_t created_at_ms;
    _Atomic int32_t master_pid;
    _Atomic uint32_t draining;
    _Atomic uint32_t workers_wanted;

    /* Seqlock: odd while the master rewrites `config`. */
    _Atomic uint64_t config_seq;
    _Atomic uint64_t config_generation;
    struct config config;

    _Atomic int64_t connections;

    _Atomic uint64_t config_reloads_success;
    _Atomic uint64_t config_reloads_failure;
    _Atomic uint64_t worker_restarts;

    /* Seqlock: odd while the master folds a dead worker into `retired`. */
    _Atomic uint64_t fold_seq;
    struct segment_counters retired;

    struct segment_worker worker[SEGMENT_WORKER_SLOTS];

    /* struct streamlog lives here, page-aligned, sized at creation. */
    uint64_t streams_offset;
    uint64_t streams_bytes;
    /* struct iptable, page-aligned, before the streams. */
    uint64_t ips_offset;
    uint64_t ips_bytes;
};

/* A plain (non-atomic) copy of counters, summed across slots, for rendering. */
struct segment_totals {
    uint64_t connections_total;
    uint64_t disconnections[DISCONNECT_REASON_COUNT];
    uint64_t connection_errors[CONN_ERROR_TYPE_COUNT];
    uint64_t messages_refused[REFUSED_CODE_COUNT];
    uint64_t messages_received;
    uint64_t messages_sent;
    uint64_t bytes_received;
    uint64_t bytes_sent;
    uint64_t compression_bytes[2][2];
    uint64_t latency_bucket[SEGMENT_LATENCY_BUCKETS];
    uint64_t latency_sum_ns;
    uint64_t latency_count;
    uint64_t request_bucket[REQUEST_TYPE_COUNT][SEGMENT_LATENCY_BUCKETS];
    uint64_t request_sum_ns[REQUEST_TYPE_COUNT];
    uint64_t rtt_bucket[SEGMENT_LATENCY_BUCKETS];
    uint64_t rtt_sum_ns;
    struct {
        uint64_t errors[BROKER_ERROR_TYPE_COUNT];
        uint64_t latency_bucket[SEGMENT_LATENCY_BUCKETS];
        uint64_t latency_sum_ns;
        uint64_t latency_count;
    } broker[CONFIG_BROKERS_MAX];
};

#endif
