/*
 * segment — create, attach to and read the shared-memory segment.
 *
 * The master creates it; workers inherit the mapping across fork(); tools
 * attach read-only by name. Counter updates are single-writer relaxed
 * atomics (segment_counter_add); anything summed across slots goes through
 * segment_sum_counters, which retries around the master's folding of a dead
 * worker so that no total is ever seen going backwards.
 */
#ifndef WSGATE_SEGMENT_H
#define WSGATE_SEGMENT_H

#include <stddef.h>

#include "iptable-t.h"
#include "segment-t.h"
#include "wsgate-build.h"

/* "/wsgate-<port>" */
void segment_name(int port, char *buf, size_t len);

/* Master: create (replacing a stale object of a dead master) and map,
 * with room for the stream logs that cfg sizes. */
int segment_create(const char *name, const struct config *cfg, struct segment **out);
/* Master: unmap and remove the name. */
void segment_destroy(struct segment *seg, const char *name);
/* Tools: map an existing segment read-only; checks magic and version. */
int segment_attach_readonly(const char *name, const struct segment **out);
void segment_detach(const struct segment *seg);

/* The stream logs; NULL for a segment made without them (unit tests). */
static inline struct streamlog *segment_streams(const struct segment *seg)
{
    return seg->streams_offset ? (struct streamlog *)((char *)seg + seg->streams_offset) : NULL;
}

/* The per-IP connection counts; NULL for a segment made without them. */
static inline struct iptable *segment_ips(const struct segment *seg)
{
    return seg->ips_offset ? (struct iptable *)((char *)seg + seg->ips_offset) : NULL;
}

static inline struct segment_worker *segment_worker_slot(struct segment *seg, int slot)
{
    return &seg->worker[slot];
}

/* Single-writer increment: a load and a store, never a locked RMW. */
static inline void segment_counter_add(_Atomic uint64_t *c, uint64_t n)
{
#if WSGATE_METRICS_UPDATES
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
#else
    (void)c;
    (void)n;
#endif
}

/* Latency histogram: bucket bounds in seconds (the last is +Inf). */
extern const double segment_latency_bounds[SEGMENT_LATENCY_BUCKETS];
int segment_latency_bucket(uint64_t ns);
void segment_observe_latency(struct segment_counters *c, uint64_t ns);
void segment_observe_request(struct segment_counters *c, enum segment_request_type t, uint64_t ns);
void segment_observe_rtt(struct segment_counters *c, uint64_t ns);
/* The count of a non-cumulative histogram (the sum of its buckets). */
uint64_t segment_histogram_count(const uint64_t *buckets);
/* Prometheus' histogram_quantile over non-cumulative buckets: linear
 * interpolation inside the bucket holding rank q; the +Inf bucket answers
 * its lower bound (10 s). NAN when empty. */
double segment_histogram_quantile(const uint64_t *buckets, double q);

/* Worker: rewrite its slowest-by-RTT table (seqlock write). */
void segment_publish_rtt_top(struct segment_worker *w, const struct segment_rtt_entry *entries,
                             uint32_t count);
/* Anyone: a consistent copy of one worker's table; 0, or -EAGAIN when it
 * kept changing (or its writer died mid-write: the fold clears it). */
int segment_read_rtt_top(const struct segment_worker *w, struct segment_rtt_entry *out,
                         uint32_t *count);

/* Master: publish a new config generation (seqlock write). */
void segment_publish_config(struct segment *seg, const struct config *cfg);
/* Anyone: consistent copy of the current config; returns its generation. */
uint64_t segment_read_config(const struct segment *seg, struct config *out);

/* Worker: reserve one replica-wide connection against max; 0 or -EBUSY. */
int segment_connection_reserve(struct segment *seg, struct segment_worker *w, int64_t max);
void segment_connection_release(struct segment *seg, struct segment_worker *w);

/* Master: a worker died. Count its open connections as worker_exit, give
 * back its replica-wide connections and its per-IP counts, and fold its
 * counters into `retired`. */
void segment_fold_worker(struct segment *seg, int slot);

/* Sum retired + every slot. */
void segment_sum_counters(const struct segment *seg, struct segment_totals *out);
/* One slot's counters (for per-worker views). */
void segment_read_counters(const struct segment_counters *c, struct segment_totals *out);

const char *segment_disconnect_reason_name(enum segment_disconnect_reason r);
const char *segment_connection_error_name(enum segment_connection_error e);
const char *segment_worker_state_name(enum segment_worker_state s);
const char *segment_broker_error_name(enum segment_broker_error e);
/* A cluster broker's command side is up when every running worker has a
 * command connection to its master; its subscription side when every
 * running worker's pub/sub connection to it answers. */
int segment_broker_up(const struct segment *seg, int broker);
int segment_broker_sub_up(const struct segment *seg, int broker);
const char *segment_refusal_name(enum segment_refusal r);
const char *segment_request_type_name(enum segment_request_type t);

#endif
