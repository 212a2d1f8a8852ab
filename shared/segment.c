#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "iptable.h"
#include "streamlog.h"

_Static_assert(IPTABLE_SLOTS == SEGMENT_WORKER_SLOTS, "iptable counts one column per worker slot");

const double segment_latency_bounds[SEGMENT_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0, 1.0 / 0.0,
};

static const char *const segment_reason_names[DISCONNECT_REASON_COUNT] = {
    "client_close", "timeout",  "protocol_error", "too_large",   "slow_consumer",
    "shutdown",     "reload",   "worker_exit",    "error",
};

static const char *const segment_error_names[CONN_ERROR_TYPE_COUNT] = {
    "handshake", "capacity", "timeout", "auth", "origin", "tls", "io",
};

static const char *const segment_refusal_names[REFUSED_CODE_COUNT] = {
    "bad_request", "unauthorized", "forbidden", "too_large",
    "rate_limited", "capacity",    "unavailable", "internal",
};

const char *segment_refusal_name(enum segment_refusal r)
{
    return segment_refusal_names[r];
}

const char *segment_request_type_name(enum segment_request_type t)
{
    static const char *const names[REQUEST_TYPE_COUNT] = {
        "ping", "subscribe", "unsubscribe", "publish", "auth", "invalid",
    };
    return names[t];
}

static const char *const segment_state_names[WORKER_STATE_COUNT] = {
    "empty", "starting", "running", "draining", "dead",
};

const char *segment_disconnect_reason_name(enum segment_disconnect_reason r)
{
    return segment_reason_names[r];
}

const char *segment_connection_error_name(enum segment_connection_error e)
{
    return segment_error_names[e];
}

const char *segment_broker_error_name(enum segment_broker_error e)
{
    static const char *const names[BROKER_ERROR_TYPE_COUNT] = {"connect", "timeout", "command",
                                                                      "replicas", "subscription"};
    return names[e];
}

int segment_broker_up(const struct segment *seg, int broker)
{
    int up = 1, running = 0;
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        if (atomic_load(&seg->worker[i].state) != WORKER_RUNNING)
            continue;
        running++;
        up &= atomic_load(&seg->worker[i].broker[broker].up) != 0;
    }
    return up && running;
}

int segment_broker_sub_up(const struct segment *seg, int broker)
{
    int up = 1, running = 0;
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        if (atomic_load(&seg->worker[i].state) != WORKER_RUNNING)
            continue;
        running++;
        up &= atomic_load(&seg->worker[i].broker[broker].sub_up) != 0;
    }
    return up && running;
}

const char *segment_worker_state_name(enum segment_worker_state s)
{
    return s < WORKER_STATE_COUNT ? segment_state_names[s] : "unknown";
}

void segment_name(int port, char *buf, size_t len)
{
    snprintf(buf, len, "/wsgate-%d", port);
}

int segment_create(const char *name, const struct config *cfg, struct segment **out)
{
    /* A previous master killed with SIGKILL leaves its object behind; the
     * listening socket bound just before proves no live master owns it. */
    shm_unlink(name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0)
        return -errno;
    uint64_t page = 4096;
    uint64_t ips_offset = (sizeof(struct segment) + page - 1) / page * page;
    uint64_t ips_bytes = (iptable_bytes() + page - 1) / page * page;
    uint64_t streams_offset = ips_offset + ips_bytes;
    uint64_t streams_bytes =
        streamlog_bytes((uint32_t)cfg->max_streams, (uint64_t)cfg->stream_memory);
    size_t size = (size_t)(streams_offset + streams_bytes);
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        close(fd);
        shm_unlink(name);
        return -e;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        shm_unlink(name);
        return -e;
    }
    /* A new shm object reads as zeros: nothing to clear, and the history
     * rings cost memory only once streams write into them. */
    struct segment *seg = p;
    seg->streams_offset = streams_offset;
    seg->streams_bytes = streams_bytes;
    seg->ips_offset = ips_offset;
    seg->ips_bytes = ips_bytes;
    int r = iptable_init(segment_ips(seg));
    if (r < 0) {
        munmap(p, size);
        shm_unlink(name);
        return r;
    }
    r = streamlog_init(segment_streams(seg), (uint32_t)cfg->max_streams,
                           (uint64_t)cfg->stream_memory);
    if (r < 0) {
        munmap(p, size);
        shm_unlink(name);
        return r;
    }
    seg->magic = SEGMENT_MAGIC;
    seg->layout_version = SEGMENT_LAYOUT_VERSION;
    seg->worker_slots = SEGMENT_WORKER_SLOTS;
    seg->size = size;
    seg->created_at_ms = clock_wall_ms();
    atomic_store(&seg->master_pid, (int32_t)getpid());
    *out = seg;
    return 0;
}

void segment_destroy(struct segment *seg, const char *name)
{
    if (!seg)
        return;
    munmap(seg, seg->size);
    shm_unlink(name);
}

int segment_attach_readonly(const char *name, const struct segment **out)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct segment)) {
        close(fd);
        return -EPROTO;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return -e;
    const struct segment *seg = p;
    if (seg->magic != SEGMENT_MAGIC || seg->layout_version != SEGMENT_LAYOUT_VERSION ||
        seg->size != (uint64_t)st.st_size) {
        munmap(p, (size_t)st.st_size);
        return -EPROTO;
    }
    *out = seg;
    return 0;
}

void segment_detach(const struct segment *seg)
{
    munmap((void *)seg, seg->size);
}

int segment_latency_bucket(uint64_t ns)
{
    /* The same bounds as segment_latency_bounds, in integer nanoseconds, so
     * an observation on the data path costs no floating point. */
    static const uint64_t bounds_ns[SEGMENT_LATENCY_BUCKETS - 1] = {
        100000ull,     250000ull,     500000ull,     1000000ull,    2500000ull,   5000000ull,
        10000000ull,   25000000ull,   50000000ull,   100000000ull,  250000000ull, 500000000ull,
        1000000000ull, 2500000000ull, 5000000000ull, 10000000000ull,
    };
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS - 1; i++) {
        if (ns <= bounds_ns[i])
            return i;
    }
    return SEGMENT_LATENCY_BUCKETS - 1;
}

void segment_observe_latency(struct segment_counters *c, uint64_t ns)
{
    segment_counter_add(&c->latency_bucket[segment_latency_bucket(ns)], 1);
    segment_counter_add(&c->latency_sum_ns, ns);
    segment_counter_add(&c->latency_count, 1);
}

void segment_observe_request(struct segment_counters *c, enum segment_request_type t, uint64_t ns)
{
    segment_counter_add(&c->request_bucket[t][segment_latency_bucket(ns)], 1);
    segment_counter_add(&c->request_sum_ns[t], ns);
}

void segment_observe_rtt(struct segment_counters *c, uint64_t ns)
{
    segment_counter_add(&c->rtt_bucket[segment_latency_bucket(ns)], 1);
    segment_counter_add(&c->rtt_sum_ns, ns);
}

uint64_t segment_histogram_count(const uint64_t *buckets)
{
    uint64_t n = 0;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        n += buckets[i];
    return n;
}

double segment_histogram_quantile(const uint64_t *buckets, double q)
{
    uint64_t total = segment_histogram_count(buckets);
    if (total == 0)
        return NAN;
    double rank = q * (double)total;
    uint64_t below = 0;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++) {
        if (buckets[i] == 0 || (double)(below + buckets[i]) < rank) {
            below += buckets[i];
            continue;
        }
        if (i == SEGMENT_LATENCY_BUCKETS - 1)
            return segment_latency_bounds[i - 1];
        double lo = i ? segment_latency_bounds[i - 1] : 0.0;
        double hi = segment_latency_bounds[i];
        return lo + (hi - lo) * (rank - (double)below) / (double)buckets[i];
    }
    return segment_latency_bounds[SEGMENT_LATENCY_BUCKETS - 2];
}

void segment_publish_rtt_top(struct segment_worker *w, const struct segment_rtt_entry *entries,
                             uint32_t count)
{
    struct segment_rtt_top *t = &w->rtt_top;
    if (count > SEGMENT_RTT_TOP)
        count = SEGMENT_RTT_TOP;
    atomic_fetch_add_explicit(&t->seq, 1, memory_order_acq_rel);
    atomic_thread_fence(memory_order_release);
    memcpy(t->entry, entries, count * sizeof(*entries));
    t->count = count;
    atomic_thread_fence(memory_order_release);
    atomic_fetch_add_explicit(&t->seq, 1, memory_order_acq_rel);
}

int segment_read_rtt_top(const struct segment_worker *w, struct segment_rtt_entry *out,
                         uint32_t *count)
{
    const struct segment_rtt_top *t = &w->rtt_top;
    /* Bounded: a worker killed mid-write leaves the sequence odd until the
     * master folds its slot. */
    for (int tries = 0; tries < 1000; tries++) {
        uint64_t before = atomic_load_explicit(&t->seq, memory_order_acquire);
        if (before & 1)
            continue;
        uint32_t n = t->count;
        if (n > SEGMENT_RTT_TOP)
            n = SEGMENT_RTT_TOP;
        memcpy(out, (const void *)t->entry, n * sizeof(*out));
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&t->seq, memory_order_acquire) == before) {
            *count = n;
            return 0;
        }
    }
    *count = 0;
    return -EAGAIN;
}

void segment_publish_config(struct segment *seg, const struct config *cfg)
{
    atomic_fetch_add_explicit(&seg->config_seq, 1, memory_order_acq_rel);
    atomic_thread_fence(memory_order_release);
    memcpy(&seg->config, cfg, sizeof(*cfg));
    atomic_thread_fence(memory_order_release);
    atomic_fetch_add_explicit(&seg->config_seq, 1, memory_order_acq_rel);
    atomic_fetch_add_explicit(&seg->config_generation, 1, memory_order_acq_rel);
}

uint64_t segment_read_config(const struct segment *seg, struct config *out)
{
    for (;;) {
        uint64_t before = atomic_load_explicit(&seg->config_seq, memory_order_acquire);
        uint64_t gen = atomic_load_explicit(&seg->config_generation, memory_order_acquire);
        if (before & 1)
            continue;
        memcpy(out, (const void *)&seg->config, sizeof(*out));
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&seg->config_seq, memory_order_acquire) == before)
            return gen;
    }
}

int segment_connection_reserve(struct segment *seg, struct segment_worker *w, int64_t max)
{
    int64_t now = atomic_fetch_add_explicit(&seg->connections, 1, memory_order_acq_rel);
    if (now >= max) {
        atomic_fetch_sub_explicit(&seg->connections, 1, memory_order_acq_rel);
        return -EBUSY;
    }
    atomic_fetch_add_explicit(&w->connections, 1, memory_order_relaxed);
    return 0;
}

void segment_connection_release(struct segment *seg, struct segment_worker *w)
{
    atomic_fetch_sub_explicit(&w->connections, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&seg->connections, 1, memory_order_acq_rel);
}

static void segment_fold_counter(_Atomic uint64_t *dst, _Atomic uint64_t *src)
{
    atomic_store_explicit(dst,
                          atomic_load_explicit(dst, memory_order_relaxed) +
                              atomic_load_explicit(src, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(src, 0, memory_order_relaxed);
}

void segment_fold_worker(struct segment *seg, int slot)
{
    struct segment_worker *w = &seg->worker[slot];
    struct segment_counters *c = &w->counters;
    struct segment_counters *r = &seg->retired;

    /* Outside the fold seqlock: readers of counters need not wait on it. */
    if (segment_ips(seg))
        iptable_forget_worker(segment_ips(seg), slot);

    atomic_fetch_add_explicit(&seg->fold_seq, 1, memory_order_acq_rel);
    atomic_thread_fence(memory_order_seq_cst);

    int64_t open = atomic_exchange(&w->connections, 0);
    if (open > 0) {
        atomic_fetch_sub(&seg->connections, open);
        atomic_fetch_add_explicit(&c->disconnections[DISCONNECT_WORKER_EXIT], (uint64_t)open,
                                  memory_order_relaxed);
    }
    segment_fold_counter(&r->connections_total, &c->connections_total);
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        segment_fold_counter(&r->disconnections[i], &c->disconnections[i]);
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        segment_fold_counter(&r->connection_errors[i], &c->connection_errors[i]);
    for (int i = 0; i < REFUSED_CODE_COUNT; i++)
        segment_fold_counter(&r->messages_refused[i], &c->messages_refused[i]);
    segment_fold_counter(&r->messages_received, &c->messages_received);
    segment_fold_counter(&r->messages_sent, &c->messages_sent);
    segment_fold_counter(&r->bytes_received, &c->bytes_received);
    segment_fold_counter(&r->bytes_sent, &c->bytes_sent);
    for (int d = 0; d < 2; d++)
        for (int st = 0; st < 2; st++)
            segment_fold_counter(&r->compression_bytes[d][st], &c->compression_bytes[d][st]);
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        segment_fold_counter(&r->latency_bucket[i], &c->latency_bucket[i]);
    segment_fold_counter(&r->latency_sum_ns, &c->latency_sum_ns);
    segment_fold_counter(&r->latency_count, &c->latency_count);
    for (int t = 0; t < REQUEST_TYPE_COUNT; t++) {
        for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
            segment_fold_counter(&r->request_bucket[t][i], &c->request_bucket[t][i]);
        segment_fold_counter(&r->request_sum_ns[t], &c->request_sum_ns[t]);
    }
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        segment_fold_counter(&r->rtt_bucket[i], &c->rtt_bucket[i]);
    segment_fold_counter(&r->rtt_sum_ns, &c->rtt_sum_ns);
    for (int b = 0; b < CONFIG_BROKERS_MAX; b++) {
        for (int i = 0; i < BROKER_ERROR_TYPE_COUNT; i++)
            segment_fold_counter(&r->broker[b].errors[i], &c->broker[b].errors[i]);
        for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
            segment_fold_counter(&r->broker[b].latency_bucket[i], &c->broker[b].latency_bucket[i]);
        segment_fold_counter(&r->broker[b].latency_sum_ns, &c->broker[b].latency_sum_ns);
        segment_fold_counter(&r->broker[b].latency_count, &c->broker[b].latency_count);
        atomic_store(&w->broker[b].up, 0);
        atomic_store(&w->broker[b].sub_up, 0);
        atomic_store(&w->broker[b].pool_in_use, 0);
        atomic_store(&w->broker[b].pool_idle, 0);
    }

    atomic_thread_fence(memory_order_seq_cst);
    atomic_fetch_add_explicit(&seg->fold_seq, 1, memory_order_acq_rel);

    /* Its connections are gone: so is its slowest list (and a sequence
     * left odd by a death mid-write is made even again). */
    uint64_t seq = atomic_load(&w->rtt_top.seq);
    w->rtt_top.count = 0;
    atomic_store(&w->rtt_top.seq, (seq | 1) + 1);
}

static void segment_add_counters(struct segment_totals *t, const struct segment_counters *c)
{
#define SEGMENT_LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
    t->connections_total += SEGMENT_LOAD(c->connections_total);
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        t->disconnections[i] += SEGMENT_LOAD(c->disconnections[i]);
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        t->connection_errors[i] += SEGMENT_LOAD(c->connection_errors[i]);
    for (int i = 0; i < REFUSED_CODE_COUNT; i++)
        t->messages_refused[i] += SEGMENT_LOAD(c->messages_refused[i]);
    t->messages_received += SEGMENT_LOAD(c->messages_received);
    t->messages_sent += SEGMENT_LOAD(c->messages_sent);
    t->bytes_received += SEGMENT_LOAD(c->bytes_received);
    t->bytes_sent += SEGMENT_LOAD(c->bytes_sent);
    for (int d = 0; d < 2; d++)
        for (int st = 0; st < 2; st++)
            t->compression_bytes[d][st] += SEGMENT_LOAD(c->compression_bytes[d][st]);
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        t->latency_bucket[i] += SEGMENT_LOAD(c->latency_bucket[i]);
    t->latency_sum_ns += SEGMENT_LOAD(c->latency_sum_ns);
    t->latency_count += SEGMENT_LOAD(c->latency_count);
    for (int r = 0; r < REQUEST_TYPE_COUNT; r++) {
        for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
            t->request_bucket[r][i] += SEGMENT_LOAD(c->request_bucket[r][i]);
        t->request_sum_ns[r] += SEGMENT_LOAD(c->request_sum_ns[r]);
    }
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        t->rtt_bucket[i] += SEGMENT_LOAD(c->rtt_bucket[i]);
    t->rtt_sum_ns += SEGMENT_LOAD(c->rtt_sum_ns);
    for (int b = 0; b < CONFIG_BROKERS_MAX; b++) {
        for (int i = 0; i < BROKER_ERROR_TYPE_COUNT; i++)
            t->broker[b].errors[i] += SEGMENT_LOAD(c->broker[b].errors[i]);
        for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
            t->broker[b].latency_bucket[i] += SEGMENT_LOAD(c->broker[b].latency_bucket[i]);
        t->broker[b].latency_sum_ns += SEGMENT_LOAD(c->broker[b].latency_sum_ns);
        t->broker[b].latency_count += SEGMENT_LOAD(c->broker[b].latency_count);
    }
#undef SEGMENT_LOAD
}

void segment_read_counters(const struct segment_counters *c, struct segment_totals *out)
{
    memset(out, 0, sizeof(*out));
    segment_add_counters(out, c);
}

void segment_sum_counters(const struct segment *seg, struct segment_totals *out)
{
    for (;;) {
        uint64_t before = atomic_load_explicit(&seg->fold_seq, memory_order_acquire);
        if (before & 1)
            continue;
        memset(out, 0, sizeof(*out));
        segment_add_counters(out, &seg->retired);
        for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++)
            segment_add_counters(out, &seg->worker[i].counters);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&seg->fold_seq, memory_order_acquire) == before)
            return;
    }
}
