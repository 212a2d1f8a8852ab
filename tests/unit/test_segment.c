/*
 * Unit suite for shared/segment.c: creating, attaching read-only to and
 * destroying the named shm segment (header, magic and layout checks), the
 * config seqlock (generations), the replica-wide connection reservation,
 * folding a dead worker into `retired` (totals preserved, open connections
 * counted as worker_exit), latency bucket boundaries, and summing counters.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "segment.h"
#include "streamlog.h"
#include "unit.h"

/* A unique shm name per test process (Check forks one per test). */
static const char *test_name(const char *tag)
{
    static char name[64];
    snprintf(name, sizeof(name), "/wsgate-test-%d-%s", (int)getpid(), tag);
    return name;
}

static int shm_exists(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* A real segment, sized for a few small streams. */
static int test_create(const char *name, struct segment **out)
{
    struct config cfg;
    config_defaults(&cfg);
    cfg.max_streams = 4;
    cfg.stream_memory = 1 << 20;
    return segment_create(name, &cfg, out);
}

/* An in-memory segment for the logic tests (no shm needed). */
static struct segment *mem_segment(void)
{
    struct segment *seg = calloc(1, sizeof(*seg));
    ck_assert_ptr_nonnull(seg);
    seg->magic = SEGMENT_MAGIC;
    seg->layout_version = SEGMENT_LAYOUT_VERSION;
    seg->worker_slots = SEGMENT_WORKER_SLOTS;
    seg->size = sizeof(*seg);
    return seg;
}

/* Fill a slot's counters with values derived from `base`. */
static void fill_counters(struct segment_counters *c, uint64_t base)
{
    atomic_store(&c->connections_total, base + 1);
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        atomic_store(&c->disconnections[i], base + 10 + (uint64_t)i);
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        atomic_store(&c->connection_errors[i], base + 20 + (uint64_t)i);
    atomic_store(&c->messages_received, base + 30);
    atomic_store(&c->messages_sent, base + 31);
    atomic_store(&c->bytes_received, base + 32);
    atomic_store(&c->bytes_sent, base + 33);
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        atomic_store(&c->latency_bucket[i], base + 40 + (uint64_t)i);
    atomic_store(&c->latency_sum_ns, base + 60);
    atomic_store(&c->latency_count, base + 61);
}

static void expect_totals_equal(const struct segment_totals *a, const struct segment_totals *b)
{
#define EQ(f) ck_assert_msg(a->f == b->f, #f ": %llu != %llu", (unsigned long long)a->f, \
                            (unsigned long long)b->f)
    EQ(connections_total);
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        EQ(disconnections[i]);
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        EQ(connection_errors[i]);
    EQ(messages_received);
    EQ(messages_sent);
    EQ(bytes_received);
    EQ(bytes_sent);
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        EQ(latency_bucket[i]);
    EQ(latency_sum_ns);
    EQ(latency_count);
#undef EQ
}

/* ---- create / attach / destroy ---- */

START_TEST(segment_name_is_wsgate_port)
{
    char buf[32];
    segment_name(8003, buf, sizeof(buf));
    ck_assert_str_eq(buf, "/wsgate-8003");
    segment_name(1, buf, sizeof(buf));
    ck_assert_str_eq(buf, "/wsgate-1");
}
END_TEST

START_TEST(create_fills_header_and_zeroes_the_rest)
{
    const char *name = test_name("create");
    struct segment *seg = NULL;
    int64_t before = clock_wall_ms();
    ck_assert_int_eq(test_create(name, &seg), 0);
    int64_t after = clock_wall_ms();
    ck_assert_ptr_nonnull(seg);
    ck_assert_int_eq(shm_exists(name), 1);
    ck_assert_uint_eq(seg->magic, SEGMENT_MAGIC);
    ck_assert_int_eq(memcmp(&seg->magic, "GESTAGSW", 8), 0); /* "WSGATSEG" little-endian */
    ck_assert_uint_eq(seg->layout_version, SEGMENT_LAYOUT_VERSION);
    ck_assert_uint_eq(seg->worker_slots, SEGMENT_WORKER_SLOTS);
    ck_assert_uint_gt(seg->size, sizeof(struct segment));
    ck_assert_uint_eq(seg->streams_offset % 4096, 0);
    ck_assert_uint_eq(seg->streams_offset + seg->streams_bytes, seg->size);
    ck_assert_uint_eq(segment_streams(seg)->max_streams, 4);
    ck_assert_uint_eq(segment_streams(seg)->chunk_count, (1 << 20) / STREAMLOG_CHUNK);
    ck_assert_uint_eq(streamlog_free_chunks(segment_streams(seg)), (1 << 20) / STREAMLOG_CHUNK);
    ck_assert_int_ge(seg->created_at_ms, before);
    ck_assert_int_le(seg->created_at_ms, after);
    ck_assert_int_eq(atomic_load(&seg->master_pid), getpid());
    ck_assert_uint_eq(atomic_load(&seg->config_generation), 0);
    ck_assert_int_eq(atomic_load(&seg->connections), 0);
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        ck_assert_uint_eq(atomic_load(&seg->worker[i].state), WORKER_EMPTY);
        ck_assert_uint_eq(atomic_load(&seg->worker[i].counters.connections_total), 0);
    }
    struct stat st;
    int fd = shm_open(name, O_RDONLY, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fstat(fd, &st), 0);
    close(fd);
    ck_assert_int_eq((size_t)st.st_size, seg->size);

    segment_destroy(seg, name);
    ck_assert_int_eq(shm_exists(name), 0);
}
END_TEST

START_TEST(create_replaces_a_stale_object)
{
    const char *name = test_name("stale");
    struct segment *old = NULL, *seg = NULL;
    ck_assert_int_eq(test_create(name, &old), 0);
    atomic_store(&old->connections, 42);
    /* The old master "died" without destroying: create again. */
    ck_assert_int_eq(test_create(name, &seg), 0);
    ck_assert_int_eq(atomic_load(&seg->connections), 0);
    ck_assert_int_eq(atomic_load(&old->connections), 42); /* a different object */
    munmap(old, old->size);
    segment_destroy(seg, name);
    ck_assert_int_eq(shm_exists(name), 0);
}
END_TEST

/* Permissions of the mapping that contains `addr`, from /proc/self/maps. */
static void mapping_perms(const void *addr, char perms[5])
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    perms[0] = '\0';
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && (unsigned long)addr >= lo &&
            (unsigned long)addr < hi) {
            memcpy(perms, p, 5);
            break;
        }
    }
    fclose(f);
}

START_TEST(attach_readonly_sees_master_writes)
{
    const char *name = test_name("attach");
    struct segment *seg = NULL;
    ck_assert_int_eq(test_create(name, &seg), 0);
    const struct segment *ro = NULL;
    ck_assert_int_eq(segment_attach_readonly(name, &ro), 0);
    ck_assert_ptr_nonnull(ro);
    ck_assert_ptr_ne(ro, seg);
    ck_assert_uint_eq(ro->magic, SEGMENT_MAGIC);
    ck_assert_int_eq(ro->created_at_ms, seg->created_at_ms);

    /* Writes through the master's mapping appear in the reader's. */
    atomic_store(&seg->worker[3].pid, 4242);
    segment_counter_add(&seg->worker[3].counters.messages_sent, 7);
    ck_assert_int_eq(atomic_load(&ro->worker[3].pid), 4242);
    ck_assert_uint_eq(atomic_load(&ro->worker[3].counters.messages_sent), 7);

    char perms[5];
    mapping_perms(ro, perms);
    ck_assert_str_eq(perms, "r--s");
    mapping_perms(seg, perms);
    ck_assert_str_eq(perms, "rw-s");

    segment_detach(ro);
    segment_destroy(seg, name);
}
END_TEST

START_TEST(attach_missing_name_fails_enoent)
{
    const struct segment *ro = (const struct segment *)0x1;
    ck_assert_int_eq(segment_attach_readonly(test_name("missing"), &ro), -ENOENT);
    ck_assert_ptr_eq(ro, (const struct segment *)0x1); /* untouched */
}
END_TEST

/* Create a raw shm object of `size` bytes; returns a writable mapping. */
static struct segment *raw_object(const char *name, size_t size)
{
    shm_unlink(name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ck_assert_ptr_ne(p, MAP_FAILED);
    return p;
}

START_TEST(attach_refuses_wrong_magic)
{
    const char *name = test_name("magic");
    struct segment *raw = raw_object(name, sizeof(struct segment));
    raw->magic = SEGMENT_MAGIC ^ 1;
    raw->layout_version = SEGMENT_LAYOUT_VERSION;
    const struct segment *ro = NULL;
    int rc = segment_attach_readonly(name, &ro);
    munmap(raw, sizeof(struct segment));
    shm_unlink(name);
    ck_assert_int_eq(rc, -EPROTO);
    ck_assert_ptr_null(ro);
}
END_TEST

START_TEST(attach_refuses_wrong_layout_version)
{
    const char *name = test_name("version");
    struct segment *raw = raw_object(name, sizeof(struct segment));
    raw->magic = SEGMENT_MAGIC;
    raw->layout_version = SEGMENT_LAYOUT_VERSION + 1;
    const struct segment *ro = NULL;
    int rc = segment_attach_readonly(name, &ro);
    munmap(raw, sizeof(struct segment));
    shm_unlink(name);
    ck_assert_int_eq(rc, -EPROTO);
    ck_assert_ptr_null(ro);
}
END_TEST

START_TEST(attach_refuses_too_small_object)
{
    const char *name = test_name("small");
    struct segment *raw = raw_object(name, 4096);
    raw->magic = SEGMENT_MAGIC;
    raw->layout_version = SEGMENT_LAYOUT_VERSION;
    const struct segment *ro = NULL;
    int rc = segment_attach_readonly(name, &ro);
    munmap(raw, 4096);
    shm_unlink(name);
    ck_assert_int_eq(rc, -EPROTO);
}
END_TEST

START_TEST(destroy_null_is_harmless)
{
    segment_destroy(NULL, test_name("none"));
    ck_assert_int_eq(shm_exists(test_name("none")), 0);
}
END_TEST

/* ---- config publication ---- */

START_TEST(publish_and_read_config_generations)
{
    struct segment *seg = mem_segment();
    struct config a, b, out;
    config_defaults(&a);
    config_defaults(&b);
    b.max_connections = 77;
    snprintf(b.environment, sizeof(b.environment), "staging");

    memset(&out, 0, sizeof(out));
    ck_assert_uint_eq(segment_read_config(seg, &out), 0);

    segment_publish_config(seg, &a);
    ck_assert_uint_eq(atomic_load(&seg->config_generation), 1);
    ck_assert_uint_eq(segment_read_config(seg, &out), 1);
    ck_assert_int_eq(memcmp(&out, &a, sizeof(out)), 0);
    ck_assert_uint_eq(atomic_load(&seg->config_seq) % 2, 0);

    segment_publish_config(seg, &b);
    ck_assert_uint_eq(segment_read_config(seg, &out), 2);
    ck_assert_int_eq(out.max_connections, 77);
    ck_assert_str_eq(out.environment, "staging");
    ck_assert_int_eq(memcmp(&out, &b, sizeof(out)), 0);
    ck_assert_uint_eq(atomic_load(&seg->config_seq) % 2, 0);

    /* Publishing the same config again still makes a new generation. */
    segment_publish_config(seg, &b);
    ck_assert_uint_eq(segment_read_config(seg, &out), 3);
    free(seg);
}
END_TEST

START_TEST(published_config_visible_through_readonly_attach)
{
    const char *name = test_name("config");
    struct segment *seg = NULL;
    ck_assert_int_eq(test_create(name, &seg), 0);
    const struct segment *ro = NULL;
    ck_assert_int_eq(segment_attach_readonly(name, &ro), 0);
    struct config cfg, out;
    config_defaults(&cfg);
    cfg.port = 9123;
    segment_publish_config(seg, &cfg);
    ck_assert_uint_eq(segment_read_config(ro, &out), 1);
    ck_assert_int_eq(out.port, 9123);
    segment_detach(ro);
    segment_destroy(seg, name);
}
END_TEST

/* ---- connection reservation ---- */

START_TEST(reserve_and_release_against_max)
{
    struct segment *seg = mem_segment();
    struct segment_worker *w0 = segment_worker_slot(seg, 0);
    struct segment_worker *w1 = segment_worker_slot(seg, 1);
    ck_assert_ptr_eq(w1, &seg->worker[1]);

    ck_assert_int_eq(segment_connection_reserve(seg, w0, 3), 0);
    ck_assert_int_eq(segment_connection_reserve(seg, w0, 3), 0);
    ck_assert_int_eq(segment_connection_reserve(seg, w1, 3), 0);
    /* The limit is replica-wide: both workers are refused now. */
    ck_assert_int_eq(segment_connection_reserve(seg, w1, 3), -EBUSY);
    ck_assert_int_eq(segment_connection_reserve(seg, w0, 3), -EBUSY);
    ck_assert_int_eq(atomic_load(&seg->connections), 3);
    ck_assert_int_eq(atomic_load(&w0->connections), 2);
    ck_assert_int_eq(atomic_load(&w1->connections), 1);

    segment_connection_release(seg, w0);
    ck_assert_int_eq(atomic_load(&seg->connections), 2);
    ck_assert_int_eq(atomic_load(&w0->connections), 1);
    ck_assert_int_eq(segment_connection_reserve(seg, w1, 3), 0);
    ck_assert_int_eq(atomic_load(&w1->connections), 2);
    ck_assert_int_eq(atomic_load(&seg->connections), 3);

    /* A lowered limit (reload) refuses new ones without touching old. */
    ck_assert_int_eq(segment_connection_reserve(seg, w0, 1), -EBUSY);
    ck_assert_int_eq(atomic_load(&seg->connections), 3);
    free(seg);
}
END_TEST

START_TEST(reserve_with_max_one)
{
    struct segment *seg = mem_segment();
    struct segment_worker *w = segment_worker_slot(seg, 5);
    ck_assert_int_eq(segment_connection_reserve(seg, w, 1), 0);
    ck_assert_int_eq(segment_connection_reserve(seg, w, 1), -EBUSY);
    segment_connection_release(seg, w);
    ck_assert_int_eq(atomic_load(&seg->connections), 0);
    ck_assert_int_eq(atomic_load(&w->connections), 0);
    ck_assert_int_eq(segment_connection_reserve(seg, w, 1), 0);
    free(seg);
}
END_TEST

/* ---- folding a dead worker ---- */

START_TEST(fold_moves_counters_to_retired_and_keeps_totals)
{
    struct segment *seg = mem_segment();
    fill_counters(&seg->retired, 1000);
    fill_counters(&seg->worker[0].counters, 100);
    fill_counters(&seg->worker[2].counters, 200);
    struct segment_totals before, after, slot2;
    segment_read_counters(&seg->worker[2].counters, &slot2);
    segment_sum_counters(seg, &before);

    segment_fold_worker(seg, 2);
    segment_sum_counters(seg, &after);
    expect_totals_equal(&before, &after);

    /* The dead slot is empty; retired grew by exactly its counters. */
    struct segment_totals dead, retired;
    segment_read_counters(&seg->worker[2].counters, &dead);
    struct segment_totals zero;
    memset(&zero, 0, sizeof(zero));
    expect_totals_equal(&dead, &zero);
    segment_read_counters(&seg->retired, &retired);
    ck_assert_uint_eq(retired.connections_total, 1001 + slot2.connections_total);
    ck_assert_uint_eq(retired.messages_sent, 1031 + slot2.messages_sent);
    ck_assert_uint_eq(retired.latency_bucket[16], 1056 + slot2.latency_bucket[16]);
    ck_assert_uint_eq(retired.latency_sum_ns, 1060 + slot2.latency_sum_ns);
    /* The live worker is untouched. */
    ck_assert_uint_eq(atomic_load(&seg->worker[0].counters.connections_total), 101);
    ck_assert_uint_eq(atomic_load(&seg->fold_seq) % 2, 0);
    ck_assert_uint_ne(atomic_load(&seg->fold_seq), 0);
    free(seg);
}
END_TEST

START_TEST(fold_counts_open_connections_as_worker_exit)
{
    struct segment *seg = mem_segment();
    struct segment_worker *w1 = segment_worker_slot(seg, 1);
    struct segment_worker *w4 = segment_worker_slot(seg, 4);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(segment_connection_reserve(seg, w4, 100), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(segment_connection_reserve(seg, w1, 100), 0);
    segment_counter_add(&w4->counters.connections_total, 9);
    segment_counter_add(&w4->counters.disconnections[DISCONNECT_CLIENT_CLOSE], 4);
    ck_assert_int_eq(atomic_load(&seg->connections), 7);

    struct segment_totals before, after;
    segment_sum_counters(seg, &before);
    segment_fold_worker(seg, 4);
    segment_sum_counters(seg, &after);

    ck_assert_int_eq(atomic_load(&w4->connections), 0);
    ck_assert_int_eq(atomic_load(&seg->connections), 2);
    ck_assert_int_eq(atomic_load(&w1->connections), 2);
    ck_assert_uint_eq(after.disconnections[DISCONNECT_WORKER_EXIT],
                      before.disconnections[DISCONNECT_WORKER_EXIT] + 5);
    ck_assert_uint_eq(after.disconnections[DISCONNECT_WORKER_EXIT], 5);
    ck_assert_uint_eq(after.disconnections[DISCONNECT_CLIENT_CLOSE], 4);
    ck_assert_uint_eq(after.connections_total, 9);
    /* Everything else unchanged. */
    after.disconnections[DISCONNECT_WORKER_EXIT] -= 5;
    expect_totals_equal(&before, &after);
    /* 9 opened = 4 closed by clients + 5 lost with the worker. */
    uint64_t closed = 0;
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        closed += seg->retired.disconnections[i];
    ck_assert_uint_eq(atomic_load(&seg->retired.connections_total), closed);
    free(seg);
}
END_TEST

START_TEST(fold_twice_changes_nothing)
{
    struct segment *seg = mem_segment();
    fill_counters(&seg->worker[7].counters, 50);
    ck_assert_int_eq(segment_connection_reserve(seg, &seg->worker[7], 10), 0);
    segment_fold_worker(seg, 7);
    struct segment_totals once, twice;
    segment_sum_counters(seg, &once);
    segment_fold_worker(seg, 7);
    segment_sum_counters(seg, &twice);
    expect_totals_equal(&once, &twice);
    ck_assert_int_eq(atomic_load(&seg->connections), 0);
    free(seg);
}
END_TEST

START_TEST(totals_monotonic_across_respawn)
{
    struct segment *seg = mem_segment();
    struct segment_worker *w = segment_worker_slot(seg, 0);
    segment_counter_add(&w->counters.messages_received, 10);
    segment_observe_latency(&w->counters, 1000);
    segment_fold_worker(seg, 0);
    /* The respawned worker starts its slot from zero. */
    segment_counter_add(&w->counters.messages_received, 3);
    segment_observe_latency(&w->counters, 1000);
    struct segment_totals t;
    segment_sum_counters(seg, &t);
    ck_assert_uint_eq(t.messages_received, 13);
    ck_assert_uint_eq(t.latency_count, 2);
    ck_assert_uint_eq(t.latency_bucket[0], 2);
    ck_assert_uint_eq(t.latency_sum_ns, 2000);
    free(seg);
}
END_TEST

/* ---- latency histogram ---- */

START_TEST(latency_bounds_are_100us_to_10s_then_inf)
{
    ck_assert_double_eq(segment_latency_bounds[0], 0.0001);
    ck_assert_double_eq(segment_latency_bounds[SEGMENT_LATENCY_BUCKETS - 2], 10.0);
    ck_assert_double_infinite(segment_latency_bounds[SEGMENT_LATENCY_BUCKETS - 1]);
    for (int i = 1; i < SEGMENT_LATENCY_BUCKETS; i++)
        ck_assert_double_gt(segment_latency_bounds[i], segment_latency_bounds[i - 1]);
}
END_TEST

START_TEST(latency_bucket_boundaries)
{
    ck_assert_int_eq(segment_latency_bucket(0), 0);
    ck_assert_int_eq(segment_latency_bucket(100000), 0);       /* exactly 100 µs */
    ck_assert_int_eq(segment_latency_bucket(100001), 1);       /* just above */
    ck_assert_int_eq(segment_latency_bucket(250000), 1);
    ck_assert_int_eq(segment_latency_bucket(250001), 2);
    ck_assert_int_eq(segment_latency_bucket(1000000000ull), 12); /* 1 s */
    ck_assert_int_eq(segment_latency_bucket(10000000000ull), SEGMENT_LATENCY_BUCKETS - 2);
    ck_assert_int_eq(segment_latency_bucket(10000000001ull), SEGMENT_LATENCY_BUCKETS - 1);
    ck_assert_int_eq(segment_latency_bucket(UINT64_MAX), SEGMENT_LATENCY_BUCKETS - 1);
}
END_TEST

START_TEST(latency_buckets_agree_with_published_bounds)
{
    /* Every integer bound lands in its own bucket, one ns more in the
     * next: the data path's ns table matches the rendered `le` values. */
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS - 1; i++) {
        uint64_t ns = (uint64_t)(segment_latency_bounds[i] * 1e9 + 0.5);
        ck_assert_msg(segment_latency_bucket(ns) == i, "bound %d (%llu ns) -> %d", i,
                      (unsigned long long)ns, segment_latency_bucket(ns));
        ck_assert_msg(segment_latency_bucket(ns + 1) == i + 1, "bound %d + 1 ns -> %d", i,
                      segment_latency_bucket(ns + 1));
    }
}
END_TEST

START_TEST(observe_latency_updates_bucket_sum_and_count)
{
    struct segment_counters c;
    memset(&c, 0, sizeof(c));
    segment_observe_latency(&c, 100000);
    segment_observe_latency(&c, 100001);
    segment_observe_latency(&c, 20000000000ull);
    ck_assert_uint_eq(atomic_load(&c.latency_bucket[0]), 1);
    ck_assert_uint_eq(atomic_load(&c.latency_bucket[1]), 1);
    ck_assert_uint_eq(atomic_load(&c.latency_bucket[SEGMENT_LATENCY_BUCKETS - 1]), 1);
    ck_assert_uint_eq(atomic_load(&c.latency_count), 3);
    ck_assert_uint_eq(atomic_load(&c.latency_sum_ns), 100000 + 100001 + 20000000000ull);
}
END_TEST

/* ---- request duration, RTT and the slowest-connections table ---- */

START_TEST(observe_request_and_rtt_fold_and_sum)
{
    struct segment *seg = mem_segment();
    struct segment_counters *c = &seg->worker[3].counters;
    segment_observe_request(c, REQUEST_SUBSCRIBE, 300000);     /* le 0.0005 */
    segment_observe_request(c, REQUEST_INVALID, 30000000000ull); /* +Inf */
    segment_observe_rtt(c, 2000000);                            /* le 0.0025 */
    ck_assert_uint_eq(atomic_load(&c->request_bucket[REQUEST_SUBSCRIBE][2]), 1);
    ck_assert_uint_eq(atomic_load(&c->request_sum_ns[REQUEST_SUBSCRIBE]), 300000);
    ck_assert_uint_eq(atomic_load(&c->request_bucket[REQUEST_INVALID][SEGMENT_LATENCY_BUCKETS - 1]), 1);
    ck_assert_uint_eq(atomic_load(&c->rtt_bucket[4]), 1);
    segment_fold_worker(seg, 3);
    segment_observe_rtt(c, 2000000);
    struct segment_totals t;
    segment_sum_counters(seg, &t);
    ck_assert_uint_eq(t.rtt_bucket[4], 2);
    ck_assert_uint_eq(t.rtt_sum_ns, 4000000);
    ck_assert_uint_eq(segment_histogram_count(t.rtt_bucket), 2);
    ck_assert_uint_eq(t.request_bucket[REQUEST_SUBSCRIBE][2], 1);
    ck_assert_uint_eq(segment_histogram_count(t.request_bucket[REQUEST_PING]), 0);
    ck_assert_str_eq(segment_request_type_name(REQUEST_PING), "ping");
    ck_assert_str_eq(segment_request_type_name(REQUEST_INVALID), "invalid");
    free(seg);
}
END_TEST

START_TEST(histogram_quantile_interpolates_like_prometheus)
{
    uint64_t b[SEGMENT_LATENCY_BUCKETS] = {0};
    ck_assert(isnan(segment_histogram_quantile(b, 0.5)));
    /* 95 in (0.25, 0.5], 5 in (0.5, 1]: p50 inside the first, p99 at
     * 0.5 + 0.5 * (99 - 95) / 5 = 0.9 (what promtool's test computes). */
    b[11] = 95;
    b[12] = 5;
    ck_assert_double_eq_tol(segment_histogram_quantile(b, 0.99), 0.9, 1e-9);
    ck_assert_double_eq_tol(segment_histogram_quantile(b, 0.5), 0.25 + 0.25 * 50 / 95, 1e-9);
    /* the first bucket's lower bound is 0 */
    uint64_t f[SEGMENT_LATENCY_BUCKETS] = {0};
    f[0] = 10;
    ck_assert_double_eq_tol(segment_histogram_quantile(f, 0.5), 0.00005, 1e-12);
    /* only +Inf: the highest finite bound, as histogram_quantile answers */
    uint64_t inf[SEGMENT_LATENCY_BUCKETS] = {0};
    inf[SEGMENT_LATENCY_BUCKETS - 1] = 3;
    ck_assert_double_eq(segment_histogram_quantile(inf, 0.99), 10.0);
}
END_TEST

START_TEST(rtt_top_publish_read_and_fold)
{
    struct segment *seg = mem_segment();
    struct segment_worker *w = &seg->worker[1];
    struct segment_rtt_entry e[SEGMENT_RTT_TOP + 2], out[SEGMENT_RTT_TOP];
    memset(e, 0, sizeof(e));
    for (int i = 0; i < SEGMENT_RTT_TOP + 2; i++) {
        e[i].conn_id = (uint64_t)i + 1;
        e[i].rtt_ns = 1000000ull * (uint64_t)(20 - i);
        snprintf(e[i].remote, sizeof(e[i].remote), "10.0.0.%d:4000", i);
    }
    uint32_t n = 99;
    ck_assert_int_eq(segment_read_rtt_top(w, out, &n), 0);
    ck_assert_uint_eq(n, 0);
    segment_publish_rtt_top(w, e, SEGMENT_RTT_TOP + 2); /* clipped */
    ck_assert_int_eq(segment_read_rtt_top(w, out, &n), 0);
    ck_assert_uint_eq(n, SEGMENT_RTT_TOP);
    ck_assert_uint_eq(out[0].conn_id, 1);
    ck_assert_str_eq(out[SEGMENT_RTT_TOP - 1].remote, "10.0.0.7:4000");
    ck_assert_uint_eq(atomic_load(&w->rtt_top.seq) % 2, 0);
    /* a writer that died mid-write: readers give up, the fold repairs it */
    atomic_fetch_add(&w->rtt_top.seq, 1);
    ck_assert_int_eq(segment_read_rtt_top(w, out, &n), -EAGAIN);
    ck_assert_uint_eq(n, 0);
    segment_fold_worker(seg, 1);
    ck_assert_int_eq(segment_read_rtt_top(w, out, &n), 0);
    ck_assert_uint_eq(n, 0);
    free(seg);
}
END_TEST

/* ---- sums and names ---- */

START_TEST(sum_counters_adds_retired_and_every_slot)
{
    struct segment *seg = mem_segment();
    fill_counters(&seg->retired, 1000);
    fill_counters(&seg->worker[0].counters, 0);
    fill_counters(&seg->worker[SEGMENT_WORKER_SLOTS - 1].counters, 500);
    struct segment_totals t;
    memset(&t, 0xff, sizeof(t));
    segment_sum_counters(seg, &t);
    ck_assert_uint_eq(t.connections_total, 1001 + 1 + 501);
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        ck_assert_uint_eq(t.disconnections[i], 3 * (uint64_t)i + 1010 + 10 + 510);
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        ck_assert_uint_eq(t.connection_errors[i], 3 * (uint64_t)i + 1020 + 20 + 520);
    ck_assert_uint_eq(t.messages_received, 1030 + 30 + 530);
    ck_assert_uint_eq(t.messages_sent, 1031 + 31 + 531);
    ck_assert_uint_eq(t.bytes_received, 1032 + 32 + 532);
    ck_assert_uint_eq(t.bytes_sent, 1033 + 33 + 533);
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        ck_assert_uint_eq(t.latency_bucket[i], 3 * (uint64_t)i + 1040 + 40 + 540);
    ck_assert_uint_eq(t.latency_sum_ns, 1060 + 60 + 560);
    ck_assert_uint_eq(t.latency_count, 1061 + 61 + 561);

    struct segment_totals one;
    segment_read_counters(&seg->worker[SEGMENT_WORKER_SLOTS - 1].counters, &one);
    ck_assert_uint_eq(one.connections_total, 501);
    ck_assert_uint_eq(one.latency_count, 561);
    free(seg);
}
END_TEST

START_TEST(sum_of_empty_segment_is_zero)
{
    struct segment *seg = mem_segment();
    struct segment_totals t, zero;
    memset(&t, 0xff, sizeof(t));
    memset(&zero, 0, sizeof(zero));
    segment_sum_counters(seg, &t);
    expect_totals_equal(&t, &zero);
    free(seg);
}
END_TEST

START_TEST(label_names_match_design)
{
    static const char *const reasons[] = {"client_close", "timeout", "protocol_error",
                                          "too_large",    "slow_consumer", "shutdown",
                                          "reload",       "worker_exit",   "error"};
    static const char *const errors[] = {"handshake", "capacity", "timeout", "auth",
                                         "origin",    "tls",      "io"};
    ck_assert_int_eq(DISCONNECT_REASON_COUNT, 9);
    ck_assert_int_eq(CONN_ERROR_TYPE_COUNT, 7);
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        ck_assert_str_eq(segment_disconnect_reason_name(i), reasons[i]);
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        ck_assert_str_eq(segment_connection_error_name(i), errors[i]);
    ck_assert_str_eq(segment_worker_state_name(WORKER_STARTING), "starting");
    ck_assert_str_eq(segment_worker_state_name(WORKER_RUNNING), "running");
    ck_assert_str_eq(segment_worker_state_name(WORKER_DRAINING), "draining");
    ck_assert_str_eq(segment_worker_state_name(WORKER_DEAD), "dead");
    ck_assert_str_eq(segment_worker_state_name(WORKER_STATE_COUNT), "unknown");
}
END_TEST

START_TEST(counter_add_is_single_writer_increment)
{
    _Atomic uint64_t c = 5;
    segment_counter_add(&c, 3);
#if WSGATE_METRICS_UPDATES
    ck_assert_uint_eq(atomic_load(&c), 8);
#else
    ck_assert_uint_eq(atomic_load(&c), 5);
#endif
}
END_TEST

static Suite *segment_suite(void)
{
    Suite *s = suite_create("segment");
    TCase *tc = unit_tcase(s, "shm");
    tcase_add_test(tc, segment_name_is_wsgate_port);
    tcase_add_test(tc, create_fills_header_and_zeroes_the_rest);
    tcase_add_test(tc, create_replaces_a_stale_object);
    tcase_add_test(tc, attach_readonly_sees_master_writes);
    tcase_add_test(tc, attach_missing_name_fails_enoent);
    tcase_add_test(tc, attach_refuses_wrong_magic);
    tcase_add_test(tc, attach_refuses_wrong_layout_version);
    tcase_add_test(tc, attach_refuses_too_small_object);
    tcase_add_test(tc, destroy_null_is_harmless);

    tc = unit_tcase(s, "config");
    tcase_add_test(tc, publish_and_read_config_generations);
    tcase_add_test(tc, published_config_visible_through_readonly_attach);

    tc = unit_tcase(s, "connections");
    tcase_add_test(tc, reserve_and_release_against_max);
    tcase_add_test(tc, reserve_with_max_one);

    tc = unit_tcase(s, "fold");
    tcase_add_test(tc, fold_moves_counters_to_retired_and_keeps_totals);
    tcase_add_test(tc, fold_counts_open_connections_as_worker_exit);
    tcase_add_test(tc, fold_twice_changes_nothing);
    tcase_add_test(tc, totals_monotonic_across_respawn);

    tc = unit_tcase(s, "latency");
    tcase_add_test(tc, latency_bounds_are_100us_to_10s_then_inf);
    tcase_add_test(tc, latency_bucket_boundaries);
    tcase_add_test(tc, latency_buckets_agree_with_published_bounds);
    tcase_add_test(tc, observe_latency_updates_bucket_sum_and_count);
    tcase_add_test(tc, observe_request_and_rtt_fold_and_sum);
    tcase_add_test(tc, histogram_quantile_interpolates_like_prometheus);
    tcase_add_test(tc, rtt_top_publish_read_and_fold);

    tc = unit_tcase(s, "sums");
    tcase_add_test(tc, sum_counters_adds_retired_and_every_slot);
    tcase_add_test(tc, sum_of_empty_segment_is_zero);
    tcase_add_test(tc, label_names_match_design);
    tcase_add_test(tc, counter_add_is_single_writer_increment);
    return s;
}

int main(void)
{
    return unit_run(segment_suite());
}
