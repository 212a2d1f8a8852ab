/*
 * Unit suite for shared/streamlog.c: stream names, lookup and creation up
 * to max_streams, sequence numbers, collecting history (order, the
 * history_size cap, records overwritten when a ring wraps), records too
 * big for a ring, subscriber masks, reclaiming idle streams (new epoch,
 * seq from 1), and recovery of a lock whose owner died holding it.
 * The log lives in ordinary memory here: it holds no pointers, so the same
 * code serves the shared segment.
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

#include "streamlog.h"

/* A zeroed, process-shared mapping (the robust-lock test forks). */
static struct streamlog *new_log(uint32_t max_streams, uint64_t memory)
{
    uint64_t bytes = streamlog_bytes(max_streams, memory);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    ck_assert_int_eq(streamlog_init(p, max_streams, memory), 0);
    ck_assert_uint_eq(((struct streamlog *)p)->total_bytes, bytes);
    return p;
}

static struct streamlog_ref lookup(struct streamlog *sl, const char *name, int create)
{
    struct streamlog_ref ref;
    ck_assert_int_eq(streamlog_lookup(sl, name, strlen(name), create, &ref), 0);
    return ref;
}

static uint64_t append(struct streamlog *sl, struct streamlog_ref ref, const char *data)
{
    struct streamlog_stream *st = streamlog_lock(sl, ref);
    ck_assert_ptr_nonnull(st);
    uint64_t seq = 0;
    ck_assert_int_eq(streamlog_append(sl, st, data, (uint32_t)strlen(data), 1000, 7, &seq), 0);
    streamlog_unlock(st);
    return seq;
}

START_TEST(names_follow_the_protocol)
{
    ck_assert(streamlog_name_valid("patient/4711/ecg", 16));
    ck_assert(streamlog_name_valid("a-b_c.d:e", 9));
    ck_assert(!streamlog_name_valid("", 0));
    ck_assert(!streamlog_name_valid("with space", 10));
    ck_assert(!streamlog_name_valid("caf\xc3\xa9", 5));
    char longname[130];
    memset(longname, 'x', sizeof(longname));
    ck_assert(streamlog_name_valid(longname, 128));
    ck_assert(!streamlog_name_valid(longname, 129));
}
END_TEST

START_TEST(lookup_creates_up_to_max_streams)
{
    struct streamlog *sl = new_log(2, 64 * 1024);
    struct streamlog_ref a = lookup(sl, "a", 1), b = lookup(sl, "b", 1), again;
    ck_assert_uint_ne(a.index, b.index);
    ck_assert_int_eq(streamlog_lookup(sl, "c", 1, 1, &again), -ENOSPC);
    ck_assert_int_eq(streamlog_lookup(sl, "c", 1, 0, &again), -ENOENT);
    again = lookup(sl, "a", 0);
    ck_assert_uint_eq(again.index, a.index);
    ck_assert_uint_eq(atomic_load(&sl->active), 2);
    struct streamlog_stream *st = streamlog_lock(sl, a);
    ck_assert_int_eq(strlen(st->epoch), STREAMLOG_EPOCH_LEN);
    streamlog_unlock(st);
}
END_TEST

START_TEST(seq_starts_at_one_and_collect_is_oldest_first)
{
    struct streamlog *sl = new_log(4, 64 * 1024);
    struct streamlog_ref r = lookup(sl, "s", 1);
    for (int i = 1; i <= 5; i++) {
        char msg[16];
        snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
        ck_assert_uint_eq(append(sl, r, msg), (uint64_t)i);
    }
    struct streamlog_stream *st = streamlog_lock(sl, r);
    const struct streamlog_record *out[8];
    uint64_t oldest;
    size_t n = streamlog_collect(sl, st, 2, 100, out, 8, &oldest);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(out[0]->seq, 3);
    ck_assert_uint_eq(out[2]->seq, 5);
    ck_assert_int_eq(memcmp(streamlog_record_data(out[0]), "{\"n\":3}", out[0]->len), 0);
    ck_assert_int_eq(out[0]->ts_ms, 1000);
    ck_assert_uint_eq(out[0]->origin_ns, 7);
    ck_assert_uint_eq(streamlog_collect(sl, st, 5, 100, out, 8, &oldest), 0);
    streamlog_unlock(st);
}
END_TEST

START_TEST(history_size_caps_what_is_held)
{
    struct streamlog *sl = new_log(4, 64 * 1024);
    struct streamlog_ref r = lookup(sl, "s", 1);
    for (int i = 0; i < 20; i++)
        append(sl, r, "x");
    struct streamlog_stream *st = streamlog_lock(sl, r);
    const struct streamlog_record *out[20];
    uint64_t oldest;
    size_t n = streamlog_collect(sl, st, 0, 10, out, 20, &oldest);
    ck_assert_uint_eq(n, 10);
    ck_assert_uint_eq(out[0]->seq, 11);
    ck_assert_uint_eq(oldest, 11);
    streamlog_unlock(st);
}
END_TEST

START_TEST(wrapping_ring_drops_the_oldest)
{
    /* 4 streams over 16 KiB: 4 KiB rings; 100-byte records. */
    struct streamlog *sl = new_log(4, 16 * 1024);
    struct streamlog_ref r = lookup(sl, "s", 1);
    char data[101];
    memset(data, 'd', 100);
    data[100] = '\0';
    for (int i = 0; i < 200; i++)
        append(sl, r, data);
    struct streamlog_stream *st = streamlog_lock(sl, r);
    const struct streamlog_record *out[200];
    uint64_t oldest;
    size_t n = streamlog_collect(sl, st, 0, 1000, out, 200, &oldest);
    ck_assert_uint_gt(n, 10);
    ck_assert_uint_lt(n, 200);
    ck_assert_uint_eq(out[n - 1]->seq, 200);
    for (size_t i = 1; i < n; i++)
        ck_assert_uint_eq(out[i]->seq, out[i - 1]->seq + 1);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(memcmp(streamlog_record_data(out[i]), data, 100), 0);
    ck_assert_uint_eq(oldest, out[0]->seq);
    streamlog_unlock(st);
}
END_TEST

START_TEST(record_larger_than_ring_is_refused)
{
    struct streamlog *sl = new_log(4, 16 * 1024);
    struct streamlog_ref r = lookup(sl, "s", 1);
    char *big = malloc(5000);
    memset(big, 'b', 5000);
    struct streamlog_stream *st = streamlog_lock(sl, r);
    uint64_t seq = 99;
    ck_assert_int_eq(streamlog_append(sl, st, big, 5000, 1, 1, &seq), -E2BIG);
    ck_assert_uint_eq(atomic_load(&st->last_seq), 0);
    streamlog_unlock(st);
    free(big);
}
END_TEST

START_TEST(reclaim_takes_idle_unsubscribed_streams_only)
{
    struct streamlog *sl = new_log(4, 64 * 1024);
    struct streamlog_ref idle = lookup(sl, "idle", 1), sub = lookup(sl, "sub", 1);
    append(sl, idle, "1");
    struct streamlog_stream *st = streamlog_lock(sl, sub);
    streamlog_set_subscribed(st, 3, 1);
    atomic_store(&st->last_active_ms, 0);
    streamlog_unlock(st);
    st = streamlog_lock(sl, idle);
    char old_epoch[STREAMLOG_EPOCH_LEN + 1];
    memcpy(old_epoch, st->epoch, sizeof(old_epoch));
    atomic_store(&st->last_active_ms, 0);
    streamlog_unlock(st);

    ck_assert_uint_eq(streamlog_reclaim(sl, 1000000, 1000), 1);
    ck_assert_ptr_null(streamlog_lock(sl, idle)); /* stale generation */
    ck_assert_uint_eq(atomic_load(&sl->active), 1);

    struct streamlog_ref again = lookup(sl, "idle", 1);
    ck_assert_uint_eq(append(sl, again, "x"), 1); /* a new sequence */
    st = streamlog_lock(sl, again);
    ck_assert_str_ne(st->epoch, old_epoch);
    streamlog_unlock(st);

    /* Once its last subscriber leaves (or its worker dies) it can go, as
     * does the new "idle", whose only publish was at t=1000 ms. */
    streamlog_forget_worker(sl, 3);
    ck_assert_uint_eq(streamlog_reclaim(sl, 1000000, 1000), 2);
    ck_assert_uint_eq(atomic_load(&sl->active), 0);
}
END_TEST

START_TEST(lock_of_a_dead_owner_is_recovered)
{
    struct streamlog *sl = new_log(2, 64 * 1024);
    struct streamlog_ref r = lookup(sl, "s", 1);
    append(sl, r, "before");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct streamlog_stream *st = streamlog_lock(sl, r);
        (void)st;
        _exit(0); /* dies holding the lock */
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert_uint_eq(append(sl, r, "after"), 2);
    ck_assert_uint_eq(append(sl, r, "again"), 3);
}
END_TEST

static Suite *streamlog_suite(void)
{
    Suite *s = suite_create("streamlog");
    TCase *tc = tcase_create("streamlog");
    tcase_add_test(tc, names_follow_the_protocol);
    tcase_add_test(tc, lookup_creates_up_to_max_streams);
    tcase_add_test(tc, seq_starts_at_one_and_collect_is_oldest_first);
    tcase_add_test(tc, history_size_caps_what_is_held);
    tcase_add_test(tc, wrapping_ring_drops_the_oldest);
    tcase_add_test(tc, record_larger_than_ring_is_refused);
    tcase_add_test(tc, reclaim_takes_idle_unsubscribed_streams_only);
    tcase_add_test(tc, lock_of_a_dead_owner_is_recovered);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(streamlog_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
