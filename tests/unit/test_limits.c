/*
 * Unit suite for the abuse limits' pure parts: shared/ratelimit.c (token
 * bucket: burst, refill, rate changes, off; the abuse window) and
 * shared/iptable.c (per-IP counts per worker slot: the limit, release,
 * a dead worker's counts given back, probe runs surviving deletions, a
 * full table, a lock whose owner died).
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iptable.h"
#include "ratelimit.h"
#include "unit.h"

#define S 1000000000ull

/* ---- token bucket ---- */

START_TEST(bucket_allows_burst_then_refuses)
{
    struct ratelimit r = {0};
    uint64_t t = 5 * S;
    int passed = 0;
    for (int i = 0; i < 50; i++)
        passed += ratelimit_take(&r, t, 10, 20);
    ck_assert_int_eq(passed, 20);
}
END_TEST

START_TEST(bucket_refills_at_the_rate)
{
    struct ratelimit r = {0};
    uint64_t t = 5 * S;
    for (int i = 0; i < 20; i++)
        ck_assert(ratelimit_take(&r, t, 10, 20));
    ck_assert(!ratelimit_take(&r, t, 10, 20));
    /* 10/s: one token per 100 ms */
    ck_assert(!ratelimit_take(&r, t + 50000000ull, 10, 20));
    ck_assert(ratelimit_take(&r, t + 100000000ull, 10, 20));
    ck_assert(!ratelimit_take(&r, t + 100000000ull, 10, 20));
    /* a long pause refills to the burst, never beyond */
    int passed = 0;
    for (int i = 0; i < 100; i++)
        passed += ratelimit_take(&r, t + 3600 * S, 10, 20);
    ck_assert_int_eq(passed, 20);
    /* a steady sender at the rate is never refused */
    struct ratelimit s = {0};
    for (int i = 0; i < 1000; i++)
        ck_assert(ratelimit_take(&s, t + (uint64_t)i * 100000000ull, 10, 1));
}
END_TEST

START_TEST(bucket_off_and_rate_changes)
{
    struct ratelimit r = {0};
    for (int i = 0; i < 10000; i++)
        ck_assert(ratelimit_take(&r, S, 0, 1));
    /* turned on by a reload: starts with a full bucket */
    struct ratelimit q = {0};
    ck_assert(ratelimit_take(&q, S, 1, 2));
    ck_assert(ratelimit_take(&q, S, 1, 2));
    ck_assert(!ratelimit_take(&q, S, 1, 2));
    /* a smaller burst applies at once */
    struct ratelimit b = {0};
    for (int i = 0; i < 5; i++)
        ratelimit_take(&b, S, 100, 100);
    ck_assert(ratelimit_take(&b, S, 100, 1));
    ck_assert(!ratelimit_take(&b, S, 100, 1));
}
END_TEST

START_TEST(abuse_window)
{
    struct ratelimit r = {0};
    uint64_t t = 100 * S;
    for (int i = 0; i < RATELIMIT_ABUSE_REFUSALS; i++)
        ck_assert(!ratelimit_refused(&r, t + (uint64_t)i * 1000));
    ck_assert(ratelimit_refused(&r, t + 9 * S));
    /* refusals spread thinner than the window never add up */
    struct ratelimit q = {0};
    for (int i = 0; i < 10 * RATELIMIT_ABUSE_REFUSALS; i++)
        ck_assert(!ratelimit_refused(&q, t + (uint64_t)i * (RATELIMIT_ABUSE_WINDOW_NS / 40)));
}
END_TEST

/* ---- per-IP table ---- */

static struct iptable *new_table(void)
{
    void *p = mmap(NULL, iptable_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    ck_assert_int_eq(iptable_init(p), 0);
    return p;
}

static void free_table(struct iptable *t)
{
    munmap(t, iptable_bytes());
}

static void ip4(uint8_t ip[16], uint32_t a)
{
    memset(ip, 0, 16);
    ip[10] = ip[11] = 0xff;
    ip[12] = (uint8_t)(a >> 24);
    ip[13] = (uint8_t)(a >> 16);
    ip[14] = (uint8_t)(a >> 8);
    ip[15] = (uint8_t)a;
}

START_TEST(limit_is_replica_wide)
{
    struct iptable *t = new_table();
    uint8_t a[16], b[16];
    ip4(a, 0x0a000001);
    ip4(b, 0x0a000002);
    ck_assert_int_eq(iptable_acquire(t, a, 0, 3), 0);
    ck_assert_int_eq(iptable_acquire(t, a, 1, 3), 0);
    ck_assert_int_eq(iptable_acquire(t, a, 5, 3), 0);
    ck_assert_int_eq(iptable_acquire(t, a, 0, 3), -EBUSY); /* whatever the worker */
    ck_assert_int_eq(iptable_acquire(t, a, 7, 3), -EBUSY);
    ck_assert_int_eq(iptable_acquire(t, b, 0, 3), 0);      /* another address is unaffected */
    ck_assert_uint_eq(iptable_count(t, a), 3);
    ck_assert_uint_eq(iptable_count(t, b), 1);
    iptable_release(t, a, 1);
    ck_assert_uint_eq(iptable_count(t, a), 2);
    ck_assert_int_eq(iptable_acquire(t, a, 7, 3), 0);
    /* limit 0: counted, never refused */
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(iptable_acquire(t, b, 2, 0), 0);
    ck_assert_uint_eq(iptable_count(t, b), 101);
    /* a lower limit from a reload applies to the next handshake */
    ck_assert_int_eq(iptable_acquire(t, b, 2, 50), -EBUSY);
    free_table(t);
}
END_TEST

START_TEST(release_removes_empty_entries)
{
    struct iptable *t = new_table();
    uint8_t a[16];
    ip4(a, 0xc0a80001);
    ck_assert_int_eq(iptable_acquire(t, a, 3, 0), 0);
    ck_assert_uint_eq(iptable_used(t), 1);
    iptable_release(t, a, 3);
    ck_assert_uint_eq(iptable_used(t), 0);
    ck_assert_uint_eq(iptable_count(t, a), 0);
    /* releasing what a slot does not hold changes nothing */
    ck_assert_int_eq(iptable_acquire(t, a, 3, 0), 0);
    iptable_release(t, a, 4);
    ck_assert_uint_eq(iptable_count(t, a), 1);
    free_table(t);
}
END_TEST

START_TEST(dead_worker_counts_given_back)
{
    struct iptable *t = new_table();
    uint8_t a[16], b[16];
    ip4(a, 0x01020304);
    ip4(b, 0x05060708);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(iptable_acquire(t, a, 2, 5), 0);
    ck_assert_int_eq(iptable_acquire(t, a, 3, 5), 0);
    ck_assert_int_eq(iptable_acquire(t, b, 2, 5), 0);
    ck_assert_int_eq(iptable_acquire(t, a, 3, 5), -EBUSY);
    iptable_forget_worker(t, 2);
    ck_assert_uint_eq(iptable_count(t, a), 1);
    ck_assert_uint_eq(iptable_count(t, b), 0);
    ck_assert_uint_eq(iptable_used(t), 1);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(iptable_acquire(t, a, 2, 5), 0);
    /* the respawned worker 2 then releases what it holds now, no more */
    iptable_release(t, a, 3);
    ck_assert_uint_eq(iptable_count(t, a), 4);
    free_table(t);
}
END_TEST

START_TEST(many_addresses_and_deletions_keep_lookups_right)
{
    struct iptable *t = new_table();
    enum { N = 5000 };
    uint8_t ip[16];
    for (uint32_t i = 0; i < N; i++) {
        ip4(ip, i * 2654435761u);
        ck_assert_int_eq(iptable_acquire(t, ip, (int)(i % 64), 0), 0);
    }
    /* remove every third: backward-shift deletion must keep the rest
     * reachable along their probe runs */
    for (uint32_t i = 0; i < N; i += 3) {
        ip4(ip, i * 2654435761u);
        iptable_release(t, ip, (int)(i % 64));
    }
    for (uint32_t i = 0; i < N; i++) {
        ip4(ip, i * 2654435761u);
        ck_assert_uint_eq(iptable_count(t, ip), i % 3 ? 1u : 0u);
    }
    ck_assert_uint_eq(iptable_used(t), N - (N + 2) / 3);
    iptable_forget_worker(t, 1);
    for (uint32_t i = 0; i < N; i++) {
        ip4(ip, i * 2654435761u);
        ck_assert_uint_eq(iptable_count(t, ip), (i % 3 && i % 64 != 1) ? 1u : 0u);
    }
    free_table(t);
}
END_TEST

START_TEST(full_table_stops_tracking)
{
    struct iptable *t = new_table();
    uint8_t ip[16];
    uint32_t tracked = 0, untracked = 0;
    for (uint32_t i = 0; i < IPTABLE_ENTRIES; i++) {
        ip4(ip, 0x0b000000u + i);
        int r = iptable_acquire(t, ip, 0, 1);
        ck_assert(r == 0 || r == -ENOSPC);
        tracked += r == 0;
        untracked += r == -ENOSPC;
    }
    ck_assert_uint_eq(tracked, IPTABLE_ENTRIES / 4 * 3);
    ck_assert_uint_gt(untracked, 0);
    /* an address already tracked still counts (and is limited) */
    ip4(ip, 0x0b000000u);
    ck_assert_int_eq(iptable_acquire(t, ip, 1, 1), -EBUSY);
    ck_assert_int_eq(iptable_acquire(t, ip, 1, 2), 0);
    free_table(t);
}
END_TEST

START_TEST(lock_of_a_dead_owner_is_recovered)
{
    struct iptable *t = new_table();
    uint8_t a[16];
    ip4(a, 0x7f000001);
    ck_assert_int_eq(iptable_acquire(t, a, 0, 0), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* a worker that dies holding the lock, mid-update */
        pthread_mutex_lock(&t->lock);
        for (uint32_t i = 0; i < IPTABLE_ENTRIES; i++) {
            if (t->entry[i].used)
                t->entry[i].total = 999;
        }
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert_int_eq(iptable_acquire(t, a, 1, 0), 0);
    ck_assert_uint_eq(iptable_count(t, a), 2);
    free_table(t);
}
END_TEST

START_TEST(a_bucket_is_at_rest_once_full_and_forgiven)
{
    struct ratelimit r = {0};
    ck_assert_int_eq(ratelimit_at_rest(&r, 1, 10, 20), 1); /* never used */
    const uint64_t s = 1000000000ull;
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(ratelimit_take(&r, 10 * s, 10, 20), 1);
    ck_assert_int_eq(ratelimit_at_rest(&r, 10 * s, 10, 20), 0);
    ck_assert_int_eq(ratelimit_at_rest(&r, 11 * s, 10, 20), 0); /* 10 of 20 back */
    ck_assert_int_eq(ratelimit_at_rest(&r, 12 * s, 10, 20), 1);
    ck_assert_int_eq(ratelimit_at_rest(&r, 10 * s, 0, 20), 1); /* no limit */
    ratelimit_refused(&r, 12 * s);
    ck_assert_int_eq(ratelimit_at_rest(&r, 12 * s + RATELIMIT_ABUSE_WINDOW_NS, 10, 20), 0);
    ck_assert_int_eq(ratelimit_at_rest(&r, 13 * s + RATELIMIT_ABUSE_WINDOW_NS, 10, 20), 1);
}
END_TEST

START_TEST(addresses_are_spelled_as_clients_know_them)
{
    char out[64];
    const uint8_t v4[16] = {[10] = 0xff, [11] = 0xff, [12] = 10, [15] = 7};
    iptable_format(v4, 51422, out, sizeof(out));
    ck_assert_str_eq(out, "10.0.0.7:51422");
    const uint8_t v6[16] = {[0] = 0x20, [1] = 0x01, [2] = 0x0d, [3] = 0xb8, [15] = 1};
    iptable_format(v6, 443, out, sizeof(out));
    ck_assert_str_eq(out, "2001:db8::1:443");
    iptable_format(v6, 0, out, sizeof(out));
    ck_assert_str_eq(out, "?:0");
}
END_TEST

static Suite *limits_suite(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = unit_tcase(s, "ratelimit");
    tcase_add_test(tc, bucket_allows_burst_then_refuses);
    tcase_add_test(tc, bucket_refills_at_the_rate);
    tcase_add_test(tc, bucket_off_and_rate_changes);
    tcase_add_test(tc, abuse_window);
    tcase_add_test(tc, a_bucket_is_at_rest_once_full_and_forgiven);

    tc = unit_tcase(s, "iptable");
    tcase_add_test(tc, limit_is_replica_wide);
    tcase_add_test(tc, release_removes_empty_entries);
    tcase_add_test(tc, dead_worker_counts_given_back);
    tcase_add_test(tc, many_addresses_and_deletions_keep_lookups_right);
    tcase_add_test(tc, full_table_stops_tracking);
    tcase_add_test(tc, lock_of_a_dead_owner_is_recovered);
    tcase_add_test(tc, addresses_are_spelled_as_clients_know_them);
    return s;
}

int main(void)
{
    return unit_run(limits_suite());
}
