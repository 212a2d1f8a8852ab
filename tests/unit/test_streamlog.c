/*
 * Unit suite for shared/streamlog.c: stream names, lookup and creation up
 * to max_streams, sequence numbers, reading oldest first, records that
 * cross chunks, the history_size and byte caps, followers' cursors
 * holding records back, one pool shared by every stream (eviction of
 * history, never of unread records, release of stuck followers),
 * fragmentation under churn, reclaiming idle streams, and recovery when
 * a process dies holding a stream lock or the pool lock.
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
#include "unit.h"

static const struct streamlog_policy keep_all = {.history_records = 1000000};

/* A zeroed, process-shared mapping (the robust-lock tests fork). */
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

static int append_len(struct streamlog *sl, struct streamlog_ref ref, const char *data,
                      uint32_t len, const struct streamlog_policy *pol, uint64_t *seq)
{
    struct streamlog_stream *st = streamlog_lock(sl, ref);
    ck_assert_ptr_nonnull(st);
    int r = streamlog_append(sl, st, data, len, 1000, 7, pol, seq);
    streamlog_unlock(st);
    return r;
}

static uint64_t append(struct streamlog *sl, struct streamlog_ref ref, const char *data,
                       const struct streamlog_policy *pol)
{
    uint64_t seq = 0;
    ck_assert_int_eq(append_len(sl, ref, data, (uint32_t)strlen(data), pol, &seq), 0);
    return seq;
}

/* A record's bytes, derived from its seq and length, so a read can check
 * every byte wherever the record lies. */
static void pattern(char *buf, uint32_t len, uint64_t seq)
{
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (char)('a' + (seq * 7 + i) % 26);
}

/* Every record held, oldest first: checks seqs are consecutive and data
 * matches pattern(); returns how many, *first gets the oldest seq. */
static uint64_t read_all(struct streamlog *sl, struct streamlog_ref ref, uint64_t *first)
{
    struct streamlog_stream *st = streamlog_lock(sl, ref);
    ck_assert_ptr_nonnull(st);
    struct streamlog_iter it;
    streamlog_iter_head(st, &it);
    const struct streamlog_record *r;
    uint64_t n = 0, prev = 0;
    *first = 0;
    while ((r = streamlog_peek(sl, st, &it)) != NULL) {
        if (n == 0)
            *first = r->seq;
        else
            ck_assert_uint_eq(r->seq, prev + 1);
        prev = r->seq;
        uint32_t len = r->len;
        char *got = malloc(len + 1), *want = malloc(len + 1);
        pattern(want, len, r->seq);
        streamlog_take(sl, st, &it, got);
        ck_assert_int_eq(memcmp(got, want, len), 0);
        free(got);
        free(want);
        n++;
    }
    if (n)
        ck_assert_uint_eq(prev, atomic_load(&st->last_seq));
    streamlog_unlock(st);
    return n;
}

static uint64_t append_pattern(struct streamlog *sl, struct streamlog_ref ref, uint32_t len,
                               const struct streamlog_policy *pol, int expect)
{
    struct streamlog_stream *st = streamlog_lock(sl, ref);
    uint64_t next = atomic_load(&st->last_seq) + 1, seq = 0;
    streamlog_unlock(st);
    char *buf = malloc(len + 1);
    pattern(buf, len, next);
    int r = append_len(sl, ref, buf, len, pol, &seq);
    free(buf);
    ck_assert_int_eq(r, expect);
    return seq;
}

/* Chunks held by every stream plus the free ones: the whole pool, always. */
static void assert_no_chunk_lost(struct streamlog *sl)
{
    uint64_t held = 0;
    for (uint32_t i = 0; i < sl->max_streams; i++)
        held += streamlog_stream_at(sl, i)->chunks;
    ck_assert_uint_eq(held + streamlog_free_chunks(sl), sl->chunk_count);
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
    struct streamlog *sl = new_log(2, 1 << 20);
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

START_TEST(seq_starts_at_one_and_reads_are_oldest_first)
{
    struct streamlog *sl = new_log(4, 1 << 20);
    struct streamlog_ref r = lookup(sl, "s", 1);
    for (int i = 1; i <= 5; i++) {
        char msg[16];
        snprintf(msg, sizeof(msg), "{\"n\":%d}", i);
        ck_assert_uint_eq(append(sl, r, msg, &keep_all), (uint64_t)i);
    }
    struct streamlog_stream *st = streamlog_lock(sl, r);
    struct streamlog_iter it;
    streamlog_iter_head(st, &it);
    const struct streamlog_record *rec = streamlog_peek(sl, st, &it);
    ck_assert_uint_eq(rec->seq, 1);
    ck_assert_int_eq(rec->ts_ms, 1000);
    ck_assert_uint_eq(rec->origin_ns, 7);
    streamlog_take(sl, st, &it, NULL);
    streamlog_take(sl, st, &it, NULL);
    rec = streamlog_peek(sl, st, &it);
    ck_assert_uint_eq(rec->seq, 3);
    char buf[16];
    streamlog_take(sl, st, &it, buf);
    ck_assert_int_eq(memcmp(buf, "{\"n\":3}", 7), 0);
    streamlog_take(sl, st, &it, NULL);
    streamlog_take(sl, st, &it, NULL);
    ck_assert_ptr_null(streamlog_peek(sl, st, &it));
    streamlog_unlock(st);
}
END_TEST

START_TEST(records_cross_chunks_intact)
{
    struct streamlog *sl = new_log(4, 1 << 20);
    struct streamlog_ref r = lookup(sl, "s", 1);
    /* Sizes around the chunk size and its edges, including headers that
     * would have straddled a chunk end. */
    uint32_t sizes[] = {1, 40000, STREAMLOG_CHUNK - 32, STREAMLOG_CHUNK - 40, 3, STREAMLOG_CHUNK,
                        STREAMLOG_CHUNK + 1, 100000, 17, 600000 / 8};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        append_pattern(sl, r, sizes[i], &keep_all, 0);
    uint64_t first;
    ck_assert_uint_eq(read_all(sl, r, &first), sizeof(sizes) / sizeof(sizes[0]));
    ck_assert_uint_eq(first, 1);
    assert_no_chunk_lost(sl);
}
END_TEST

START_TEST(a_message_as_large_as_the_config_allows_fits)
{
    /* The config check's promise: a pool of streamlog_chunks_for(max)
     * chunks takes a max-size message wherever the log stands. */
    uint64_t max = 600 * 1000;
    uint64_t memory = streamlog_chunks_for(max) * STREAMLOG_CHUNK;
    for (uint32_t lead = 0; lead < 3; lead++) {
        struct streamlog *sl = new_log(2, memory);
        struct streamlog_ref r = lookup(sl, "s", 1);
        struct streamlog_policy none = {.history_records = 0};
        append_pattern(sl, r, STREAMLOG_CHUNK - 48 - lead * 8, &none, 0);
        append_pattern(sl, r, (uint32_t)max, &none, 0);
        append_pattern(sl, r, (uint32_t)max, &none, 0);
        uint64_t first;
        ck_assert_uint_eq(read_all(sl, r, &first), 0); /* history 0: nothing kept */
        assert_no_chunk_lost(sl);
    }
    struct streamlog *sl = new_log(2, memory - STREAMLOG_CHUNK);
    struct streamlog_ref r = lookup(sl, "s", 1);
    append_pattern(sl, r, (uint32_t)max + STREAMLOG_CHUNK, &keep_all, -E2BIG);
}
END_TEST

START_TEST(history_size_caps_what_is_kept)
{
    struct streamlog *sl = new_log(4, 1 << 20);
    struct streamlog_ref r = lookup(sl, "s", 1);
    struct streamlog_policy ten = {.history_records = 10};
    for (int i = 0; i < 20; i++)
        append_pattern(sl, r, 100, &ten, 0);
    uint64_t first;
    ck_assert_uint_eq(read_all(sl, r, &first), 10);
    ck_assert_uint_eq(first, 11);
    struct streamlog_policy bytes = {.history_records = 1000, .history_bytes = 1000};
    append_pattern(sl, r, 100, &bytes, 0);
    ck_assert_uint_le(read_all(sl, r, &first), 8);
    ck_assert_uint_eq(first, 21 - read_all(sl, r, &first) + 1);
    assert_no_chunk_lost(sl);
}
END_TEST

START_TEST(a_follower_holds_records_until_it_has_read_them)
{
    struct streamlog *sl = new_log(4, 1 << 20);
    struct streamlog_ref r = lookup(sl, "s", 1);
    struct streamlog_policy two = {.history_records = 2};
    struct streamlog_stream *st = streamlog_lock(sl, r);
    streamlog_follow(st, 5, 1);
    struct streamlog_iter mine = {.pos = st->commit_pos, .chunk = STREAMLOG_NO_CHUNK};
    streamlog_unlock(st);
    for (int i = 0; i < 50; i++)
        append_pattern(sl, r, 1000, &two, 0);
    uint64_t first;
    ck_assert_uint_eq(read_all(sl, r, &first), 50); /* all waiting for slot 5 */
    st = streamlog_lock(sl, r);
    int n = 0;
    while (streamlog_peek(sl, st, &mine)) {
        streamlog_take(sl, st, &mine, NULL);
        n++;
        if (n == 30)
            streamlog_consumed(sl, st, 5, mine.pos, &two);
    }
    streamlog_unlock(st);
    ck_assert_int_eq(n, 50);
    ck_assert_uint_eq(read_all(sl, r, &first), 20); /* slot 5 read 30 of them */
    ck_assert_uint_eq(first, 31);
    st = streamlog_lock(sl, r);
    streamlog_consumed(sl, st, 5, mine.pos, &two);
    streamlog_unlock(st);
    ck_assert_uint_eq(read_all(sl, r, &first), 2);
    ck_assert_uint_eq(first, 49);
    assert_no_chunk_lost(sl);
}
END_TEST

START_TEST(one_pool_serves_hot_streams_by_giving_up_history)
{
    /* 64 chunks; a hot stream fills the pool with history, then another
     * stream publishes: the hot stream's oldest history makes room. */
    struct streamlog *sl = new_log(4, 1 << 20);
    struct streamlog_ref hot = lookup(sl, "hot", 1), cold = lookup(sl, "cold", 1);
    for (int i = 0; i < 60; i++)
        append_pattern(sl, hot, 16000, &keep_all, 0);
    ck_assert_uint_le(streamlog_free_chunks(sl), 5);
    for (int i = 0; i < 10; i++)
        append_pattern(sl, cold, 16000, &keep_all, 0);
    uint64_t first;
    ck_assert_uint_eq(read_all(sl, cold, &first), 10);
    uint64_t kept = read_all(sl, hot, &first);
    ck_assert_uint_lt(kept, 60);
    ck_assert_uint_eq(first, 60 - kept + 1);
    assert_no_chunk_lost(sl);
}
END_TEST

START_TEST(unread_records_are_never_evicted_unless_their_reader_is_stuck)
{
    struct streamlog *sl = new_log(4, 1 << 20);
    struct streamlog_ref a = lookup(sl, "a", 1), b = lookup(sl, "b", 1);
    struct streamlog_stream *st = streamlog_lock(sl, a);
    streamlog_follow(st, 2, 1); /* slot 2 never reads */
    streamlog_unlock(st);
    int n = 0;
    struct streamlog_policy none = {.history_records = 0};
    char *buf = malloc(16000);
    uint64_t seq;
    for (;;) {
        pattern(buf, 16000, (uint64_t)n + 1);
        if (append_len(sl, a, buf, 16000, &none, &seq) == -ENOBUFS)
            break;
        n++;
    }
    free(buf);
    ck_assert_int_gt(n, 50);
    append_pattern(sl, b, 16000, &none, -ENOBUFS);
    uint64_t first;
    ck_assert_uint_eq(read_all(sl, a, &first), (uint64_t)n); /* nothing lost */
    ck_assert_uint_eq(first, 1);

    /* Slot 2 stops making progress: its cursor is released, a's records
     * go, b publishes. */
    struct streamlog_policy stuck = {.history_records = 0, .stuck_mask = 1ull << 2};
    ck_assert_uint_eq(append_pattern(sl, b, 16000, &stuck, 0), 1);
    ck_assert_uint_eq(atomic_load(&sl->cursor_releases), 1);
    st = streamlog_lock(sl, a);
    ck_assert_uint_ne(st->released_mask & (1ull << 2), 0);
    ck_assert_uint_gt(st->head_seq, 1); /* slot 2 will see a gap from 1 */
    /* When slot 2 reads again, its cursor counts again. */
    streamlog_consumed(sl, st, 2, st->commit_pos, &none);
    ck_assert_uint_eq(st->released_mask, 0);
    streamlog_unlock(st);
    assert_no_chunk_lost(sl);
}
END_TEST

START_TEST(churn_over_many_streams_loses_no_chunk)
{
    struct streamlog *sl = new_log(16, 2 << 20);
    struct streamlog_ref refs[16];
    char name[8];
    for (int i = 0; i < 16; i++) {
        snprintf(name, sizeof(name), "s%d", i);
        refs[i] = lookup(sl, name, 1);
    }
    srand(42);
    for (int round = 0; round < 4000; round++) {
        int i = rand() % 16;
        struct streamlog_policy pol = {.history_records = (uint64_t)(rand() % 40),
                                       .history_bytes = rand() % 3 ? 0 : 200000};
        uint32_t len = (uint32_t)(rand() % 4 == 0 ? rand() % 70000 : rand() % 2000);
        append_pattern(sl, refs[i], len, &pol, 0);
        if (round % 500 == 0)
            assert_no_chunk_lost(sl);
    }
    uint64_t first;
    for (int i = 0; i < 16; i++)
        read_all(sl, refs[i], &first);
    assert_no_chunk_lost(sl);
}
END_TEST

START_TEST(reclaim_takes_idle_unfollowed_streams_and_their_chunks)
{
    struct streamlog *sl = new_log(4, 1 << 20);
    struct streamlog_ref idle = lookup(sl, "idle", 1), sub = lookup(sl, "sub", 1);
    append_pattern(sl, idle, 40000, &keep_all, 0);
    uint32_t free_before = streamlog_free_chunks(sl);
    struct streamlog_stream *st = streamlog_lock(sl, sub);
    streamlog_follow(st, 3, 1);
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
    ck_assert_uint_gt(streamlog_free_chunks(sl), free_before);
    ck_assert_uint_eq(streamlog_free_chunks(sl), sl->chunk_count);

    struct streamlog_ref again = lookup(sl, "idle", 1);
    ck_assert_uint_eq(append(sl, again, "x", &keep_all), 1); /* a new sequence */
    st = streamlog_lock(sl, again);
    ck_assert_str_ne(st->epoch, old_epoch);
    streamlog_unlock(st);

    streamlog_forget_worker(sl, 3);
    ck_assert_uint_eq(streamlog_reclaim(sl, 1000000, 1000), 2);
    ck_assert_uint_eq(atomic_load(&sl->active), 0);
    assert_no_chunk_lost(sl);
}
END_TEST

START_TEST(stream_lock_of_a_dead_owner_is_recovered)
{
    struct streamlog *sl = new_log(2, 1 << 20);
    struct streamlog_ref r = lookup(sl, "s", 1);
    append(sl, r, "before", &keep_all);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct streamlog_stream *st = streamlog_lock(sl, r);
        /* Dies mid-trim: head_pos moved, head_seq not yet. */
        st->head_pos = st->commit_pos;
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert_uint_eq(append(sl, r, "after", &keep_all), 2);
    ck_assert_uint_eq(append(sl, r, "again", &keep_all), 3);
    struct streamlog_stream *st = streamlog_lock(sl, r);
    ck_assert_uint_eq(st->head_seq, 2); /* repaired from head_pos */
    streamlog_unlock(st);
}
END_TEST

START_TEST(pool_lock_of_a_dead_owner_is_repaired_without_a_leak)
{
    struct streamlog *sl = new_log(2, 1 << 20);
    struct streamlog_ref r = lookup(sl, "s", 1);
    for (int i = 0; i < 5; i++)
        append_pattern(sl, r, 20000, &keep_all, 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Dies between taking chunks off the free stack and linking them
         * into a chain: two chunks owned by nobody reachable, one popped
         * and not even marked. */
        struct streamlog_stream *st = streamlog_lock(sl, r);
        pthread_mutex_lock(&sl->pool_lock);
        for (int i = 0; i < 3; i++) {
            uint32_t c = sl->free_top;
            struct streamlog_chunk *ch =
                (struct streamlog_chunk *)((char *)sl + sl->chunks_offset) + c;
            sl->free_top = ch->next;
            atomic_fetch_sub(&sl->free_chunks, 1);
            if (i < 2)
                ch->owner = r.index + 1;
        }
        (void)st;
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    append_pattern(sl, r, 20000, &keep_all, 0);
    ck_assert_uint_eq(atomic_load(&sl->pool_repairs), 1);
    assert_no_chunk_lost(sl);
    uint64_t first;
    ck_assert_uint_eq(read_all(sl, r, &first), 6);
}
END_TEST

static Suite *streamlog_suite(void)
{
    Suite *s = suite_create("streamlog");
    TCase *tc = unit_tcase(s, "streamlog");
    tcase_add_test(tc, names_follow_the_protocol);
    tcase_add_test(tc, lookup_creates_up_to_max_streams);
    tcase_add_test(tc, seq_starts_at_one_and_reads_are_oldest_first);
    tcase_add_test(tc, records_cross_chunks_intact);
    tcase_add_test(tc, a_message_as_large_as_the_config_allows_fits);
    tcase_add_test(tc, history_size_caps_what_is_kept);
    tcase_add_test(tc, a_follower_holds_records_until_it_has_read_them);
    tcase_add_test(tc, one_pool_serves_hot_streams_by_giving_up_history);
    tcase_add_test(tc, unread_records_are_never_evicted_unless_their_reader_is_stuck);
    tcase_add_test(tc, churn_over_many_streams_loses_no_chunk);
    tcase_add_test(tc, reclaim_takes_idle_unfollowed_streams_and_their_chunks);
    tcase_add_test(tc, stream_lock_of_a_dead_owner_is_recovered);
    tcase_add_test(tc, pool_lock_of_a_dead_owner_is_repaired_without_a_leak);
    return s;
}

int main(void)
{
    return unit_run(streamlog_suite());
}
