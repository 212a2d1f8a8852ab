/*
 * Unit suite for worker/rtt.c, driven through rtt.h with connections and
 * a segment slot made in memory: a pong echoing the latest ping's payload
 * counts once; stale, forged, short, unsolicited and early pongs do not;
 * the sweep publishes the slowest WebSocket connections, slowest first,
 * at most SEGMENT_RTT_TOP of them and at most once a second.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtt.h"
#include "segment.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;

static void setup(void)
{
    w = calloc(1, sizeof(*w));
    memset(&slot, 0, sizeof(slot));
    w->slot = &slot;
}

static void teardown(void)
{
    while (w->conns) {
        struct conn *c = w->conns;
        w->conns = c->next;
        free(c->out);
        free(c);
    }
    free(w);
}

static struct conn *new_conn(uint64_t id, uint32_t rtt_us)
{
    struct conn *c = calloc(1, sizeof(*c));
    c->w = w;
    c->id = id;
    c->state = CONN_WS;
    c->rtt_us = rtt_us;
    static const uint8_t loopback[16] = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1};
    memcpy(c->ip, loopback, sizeof(loopback));
    c->port = (uint16_t)(40000 + id);
    c->next = w->conns;
    w->conns = c;
    return c;
}

static uint64_t rtt_samples(void)
{
    uint64_t n = 0;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        n += slot.counters.rtt_bucket[i];
    return n;
}

START_TEST(the_latest_pings_pong_counts_once)
{
    struct conn *c = new_conn(1, 0);
    uint8_t p[RTT_PAYLOAD_LEN];
    rtt_ping_payload(c, 1000000000ull, p);
    ck_assert_int_eq(p[RTT_PAYLOAD_LEN - 1], 1000000000ull & 0xff);
    rtt_pong(c, p, sizeof(p), 1003000000ull);
    ck_assert_uint_eq(c->rtt_us, 3000);
    ck_assert_uint_eq(rtt_samples(), 1);
    ck_assert_uint_eq(slot.counters.rtt_sum_ns, 3000000);
    rtt_pong(c, p, sizeof(p), 1009000000ull); /* a repeat */
    ck_assert_uint_eq(c->rtt_us, 3000);
    ck_assert_uint_eq(rtt_samples(), 1);
}
END_TEST

START_TEST(pongs_that_match_nothing_are_ignored)
{
    struct conn *c = new_conn(1, 0);
    uint8_t old[RTT_PAYLOAD_LEN], cur[RTT_PAYLOAD_LEN];
    rtt_pong(c, (const uint8_t *)"12345678", 8, 5); /* unsolicited */
    rtt_ping_payload(c, 2000, old);
    rtt_ping_payload(c, 5000, cur);
    rtt_pong(c, old, sizeof(old), 9000);        /* stale: an earlier ping's */
    rtt_pong(c, cur, 7, 9000);                  /* short */
    rtt_pong(c, cur, sizeof(cur), 4000);        /* before it was sent */
    uint8_t forged[RTT_PAYLOAD_LEN];
    memcpy(forged, cur, sizeof(forged));
    forged[0] ^= 1;
    rtt_pong(c, forged, sizeof(forged), 9000);
    ck_assert_uint_eq(c->rtt_us, 0);
    ck_assert_uint_eq(rtt_samples(), 0);
    ck_assert(c->ping_outstanding);
    rtt_pong(c, cur, sizeof(cur), 5000);        /* same nanosecond: still "some" */
    ck_assert_uint_eq(c->rtt_us, 1);
    ck_assert_uint_eq(rtt_samples(), 1);
}
END_TEST

START_TEST(the_sweep_publishes_the_slowest_first)
{
    uint32_t rtts[] = {5, 90, 0, 40, 70, 10, 80, 20, 60, 30, 50};
    for (uint64_t i = 0; i < sizeof(rtts) / sizeof(rtts[0]); i++)
        new_conn(i + 1, rtts[i] * 1000);
    struct conn *gone = new_conn(100, 999000);
    gone->closed = 1;
    struct conn *http = new_conn(101, 998000);
    http->state = CONN_HTTP;
    for (struct conn *c = w->conns; c; c = c->next)
        if (c->id == 2) {
            c->out = calloc(1, sizeof(*c->out));
            c->out->bytes = 4242;
            c->nsubs = 3;
        }

    rtt_sweep(w, 5000000000ull);
    struct segment_rtt_entry e[SEGMENT_RTT_TOP];
    uint32_t n = 0;
    ck_assert_int_eq(segment_read_rtt_top(&slot, e, &n), 0);
    ck_assert_uint_eq(n, SEGMENT_RTT_TOP);
    uint64_t want[SEGMENT_RTT_TOP] = {90, 80, 70, 60, 50, 40, 30, 20};
    for (uint32_t i = 0; i < n; i++)
        ck_assert_uint_eq(e[i].rtt_ns, want[i] * 1000000);
    ck_assert_uint_eq(e[0].conn_id, 2);
    ck_assert_uint_eq(e[0].unsent_bytes, 4242);
    ck_assert_uint_eq(e[0].subscriptions, 3);
    ck_assert_str_eq(e[0].remote, "127.0.0.1:40002");

    /* Within the second: not republished. */
    new_conn(50, 500000);
    rtt_sweep(w, 5500000000ull);
    ck_assert_int_eq(segment_read_rtt_top(&slot, e, &n), 0);
    ck_assert_uint_eq(e[0].rtt_ns, 90000000);
    rtt_sweep(w, 6000000000ull);
    ck_assert_int_eq(segment_read_rtt_top(&slot, e, &n), 0);
    ck_assert_uint_eq(e[0].conn_id, 50);
    ck_assert_uint_eq(e[1].conn_id, 2);
}
END_TEST

START_TEST(few_connections_fill_part_of_the_table)
{
    new_conn(1, 0);
    new_conn(2, 7);
    new_conn(3, 9);
    rtt_sweep(w, 2000000000ull);
    struct segment_rtt_entry e[SEGMENT_RTT_TOP];
    uint32_t n = 99;
    ck_assert_int_eq(segment_read_rtt_top(&slot, e, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(e[0].conn_id, 3);
    ck_assert_uint_eq(e[1].conn_id, 2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rtt");
    TCase *tc = unit_tcase(s, "rtt");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, the_latest_pings_pong_counts_once);
    tcase_add_test(tc, pongs_that_match_nothing_are_ignored);
    tcase_add_test(tc, the_sweep_publishes_the_slowest_first);
    tcase_add_test(tc, few_connections_fill_part_of_the_table);
    return unit_run(s);
}
