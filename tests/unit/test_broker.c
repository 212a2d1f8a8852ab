/*
 * Unit suite for worker/broker.c through broker.h, against a real
 * redis-server the suite starts on a free loopback port (killed with the
 * test process, whatever happens to it). Above the broker, fake
 * broker_events record what it tells of its own accord; request callbacks
 * record their answers. Every wait is bounded.
 *
 * Covered: both connections up with the gauges and the reconnected event;
 * publishes sequenced 1, 2, 3 in one epoch, announced on the channel to a
 * subscriber and stored for head and range; refill moving a sequence that
 * fell behind what was seen; nothing after unsubscribe; an unreachable
 * broker answering -EAGAIN at once; Redis lost (lost event, in-flight
 * request answered -EAGAIN) and back (reconnected); a request past
 * pool_timeout answered -EAGAIN once, counted, its late reply ignored;
 * rendezvous sharding stable and spread.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "broker.h"
#include "clock.h"
#include "config.h"
#include "fakequeue.h"
#include "log.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;
static pid_t redis_pid = -1;
static int redis_port;

/* ---- a real Redis ------------------------------------------------------- */

/* A port nobody listens on (just now). */
static int free_port(void)
{
    int port;
    close(unit_listen(&port));
    return port;
}

static int redis_answers(int port)
{
    int s = unit_connect(port);
    char buf[16] = "";
    int ok = s >= 0 && write(s, "PING\r\n", 6) == 6 && read(s, buf, sizeof(buf) - 1) > 0 &&
             strncmp(buf, "+PONG", 5) == 0;
    if (s >= 0)
        close(s);
    return ok;
}

static void redis_start(int port)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    redis_pid = fork();
    ck_assert_int_ge(redis_pid, 0);
    if (redis_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no Redis behind */
        if (!freopen("/dev/null", "w", stdout))
            _exit(127);
        execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && !redis_answers(port); i++)
        usleep(10000);
    ck_assert_msg(redis_answers(port), "redis-server did not start on port %d", port);
}

static void redis_stop(void)
{
    if (redis_pid <= 0)
        return;
    kill(redis_pid, SIGKILL); /* stopped or not: never a reply after this */
    waitpid(redis_pid, NULL, 0);
    redis_pid = -1;
}

/* ---- the layer above (fake broker_events) ------------------------------- */

static char subscribed[8][64];
static int nsubscribed, reconnected, lost;
static struct {
    uint64_t seq;
    char epoch[BROKER_EPOCH_MAX + 1];
    char data[64];
} messages[16];
static int nmessages;

static void ev_subscribed(struct worker *wk, int b, const char *stream, size_t len)
{
    ck_assert_int_lt(nsubscribed, 8);
    snprintf(subscribed[nsubscribed++], sizeof(subscribed[0]), "%d:%.*s", b, (int)len, stream);
}

static void ev_message(struct worker *wk, const char *stream, size_t len, const char *epoch,
                       const struct broker_entry *e)
{
    ck_assert_int_lt(nmessages, 16);
    messages[nmessages].seq = e->seq;
    snprintf(messages[nmessages].epoch, sizeof(messages[0].epoch), "%s", epoch);
    snprintf(messages[nmessages].data, sizeof(messages[0].data), "%.*s", (int)e->len, e->data);
    nmessages++;
}

static void ev_reconnected(struct worker *wk, int b)
{
    reconnected++;
}

static void ev_lost(struct worker *wk, int b)
{
    lost++;
}

static const struct broker_events events = {
    .subscribed = ev_subscribed,
    .message = ev_message,
    .reconnected = ev_reconnected,
    .lost = ev_lost,
};

/* ---- request answers ---------------------------------------------------- */

struct answer {
    int calls;
    int err;
    uint64_t seq;
    char epoch[BROKER_EPOCH_MAX + 1];
    size_t n;
    uint64_t seqs[16];
    char data[16][32];
};

static void on_seq(void *arg, int err, uint64_t seq, const char *epoch)
{
    struct answer *a = arg;
    a->calls++;
    a->err = err;
    a->seq = seq;
    snprintf(a->epoch, sizeof(a->epoch), "%s", epoch ? epoch : "");
}

static void on_range(void *arg, int err, const struct broker_entry *e, size_t n)
{
    struct answer *a = arg;
    a->calls++;
    a->err = err;
    a->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        a->seqs[i] = e[i].seq;
        snprintf(a->data[i], sizeof(a->data[0]), "%.*s", (int)e[i].len, e[i].data);
    }
}

/* ---- fixture ------------------------------------------------------------ */

static void make_worker(int nbrokers, const int *ports)
{
    w = fakequeue_worker(&slot);
    w->cfg.broker_count = nbrokers;
    for (int i = 0; i < nbrokers; i++)
        snprintf(w->cfg.broker[i], sizeof(w->cfg.broker[i]), "redis://127.0.0.1:%d/0", ports[i]);
    ck_assert_int_eq(uv_loop_init(&w->loop), 0);
    nsubscribed = reconnected = lost = nmessages = 0;
    ck_assert_int_eq(broker_init(w, &events), 0);
}

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    redis_port = free_port();
    redis_start(redis_port);
    make_worker(1, &redis_port);
}

static void teardown(void)
{
    broker_close(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&w->loop), 0);
    free(w);
    redis_stop();
}

/* Run the loop until cond() or ms pass; returns cond(). */
static int run_until(int (*cond)(void), int ms)
{
    for (int i = 0; i < ms && !cond(); i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    return cond();
}

static int both_up(void)
{
    return broker_is_up(w, 0) && broker_sub_is_up(w, 0);
}

static struct answer *watched;

static int answered(void)
{
    return watched->calls > 0;
}

static void wait_answer(struct answer *a)
{
    watched = a;
    ck_assert_msg(run_until(answered, 5000), "no answer within 5 s");
}

/* Publish `data` to stream s on broker 0 and wait for the answer. */
static void publish_wait(const char *s, const char *data, struct answer *a)
{
    broker_publish(w, 0, s, strlen(s), data, strlen(data), 1, on_seq, a);
    wait_answer(a);
}

/* Refill s from `from` in `epoch` and wait for the answer. */
static void refill_wait(const char *s, uint64_t from, const char *epoch, struct answer *a)
{
    broker_refill(w, 0, s, strlen(s), from, epoch, 10, on_range, a);
    wait_answer(a);
}

static int nsub_want, nmsg_want;

static int got_subscribed(void)
{
    return nsubscribed >= nsub_want;
}

static int got_messages(void)
{
    return nmessages >= nmsg_want;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(both_connections_come_up)
{
    ck_assert(broker_enabled(w));
    ck_assert(run_until(both_up, 5000));
    ck_assert_int_eq(reconnected, 1);
    ck_assert_int_eq(lost, 0);
    ck_assert_uint_eq(atomic_load(&slot.broker[0].up), 1);
    ck_assert_uint_eq(atomic_load(&slot.broker[0].sub_up), 1);
    ck_assert_uint_eq(atomic_load(&slot.broker[0].pool_idle), 1);
}
END_TEST

START_TEST(publishes_are_sequenced_announced_and_stored)
{
    ck_assert(run_until(both_up, 5000));
    const char *s = "patient/7/ecg";
    size_t sl = strlen(s);
    broker_subscribe(w, 0, s, sl);
    nsub_want = 1;
    ck_assert(run_until(got_subscribed, 5000));
    ck_assert_str_eq(subscribed[0], "0:patient/7/ecg");

    struct answer p[3] = {{0}};
    const char *data[3] = {"{\"v\":1}", "[2]", "\"three\""};
    for (int i = 0; i < 3; i++)
        broker_publish(w, 0, s, sl, data[i], strlen(data[i]), 1700000000000 + i, on_seq, &p[i]);
    wait_answer(&p[2]);
    wait_answer(&p[0]);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(p[i].calls, 1);
        ck_assert_int_eq(p[i].err, 0);
        ck_assert_uint_eq(p[i].seq, (uint64_t)i + 1);
        ck_assert_uint_gt(strlen(p[i].epoch), 0);
        ck_assert_str_eq(p[i].epoch, p[0].epoch);
    }
    nmsg_want = 3;
    ck_assert(run_until(got_messages, 5000));
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(messages[i].seq, (uint64_t)i + 1);
        ck_assert_str_eq(messages[i].data, data[i]);
        ck_assert_str_eq(messages[i].epoch, p[0].epoch);
    }

    struct answer head = {0};
    broker_head(w, 0, s, sl, on_seq, &head);
    wait_answer(&head);
    ck_assert_int_eq(head.err, 0);
    ck_assert_uint_eq(head.seq, 3);
    ck_assert_str_eq(head.epoch, p[0].epoch);

    struct answer all = {0}, two = {0};
    broker_range(w, 0, s, sl, 1, 3, 10, on_range, &all);
    broker_range(w, 0, s, sl, 2, 2, 10, on_range, &two);
    wait_answer(&all);
    wait_answer(&two);
    ck_assert_uint_eq(all.n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(all.seqs[i], (uint64_t)i + 1);
        ck_assert_str_eq(all.data[i], data[i]);
    }
    ck_assert_uint_eq(two.n, 1);
    ck_assert_str_eq(two.data[0], "[2]");
    ck_assert_uint_eq(slot.counters.broker[0].latency_count, 3); /* one round trip each */
}
END_TEST

START_TEST(a_sequence_behind_what_was_seen_is_moved_past_it)
{
    ck_assert(run_until(both_up, 5000));
    const char *s = "patient/8/ecg";
    struct answer p = {0};
    publish_wait(s, "1", &p);
    ck_assert_uint_eq(p.seq, 1);
    /* This worker delivered up to 9 in this epoch; the broker says 1 (a
     * failover lost 2..9): the refill finds nothing and moves it to 9. */
    struct answer r = {0};
    refill_wait(s, 10, p.epoch, &r);
    ck_assert_int_eq(r.err, 0);
    ck_assert_uint_eq(r.n, 0);
    struct answer next = {0};
    publish_wait(s, "10", &next);
    ck_assert_uint_eq(next.seq, 10);
    /* From a position it has, the refill returns what is held. */
    struct answer held = {0};
    refill_wait(s, 1, p.epoch, &held);
    ck_assert_uint_eq(held.n, 2);
    ck_assert_uint_eq(held.seqs[0], 1);
    ck_assert_uint_eq(held.seqs[1], 10);
}
END_TEST

START_TEST(nothing_arrives_after_unsubscribe)
{
    ck_assert(run_until(both_up, 5000));
    const char *s = "patient/9/ecg";
    broker_subscribe(w, 0, s, strlen(s));
    nsub_want = 1;
    ck_assert(run_until(got_subscribed, 5000));
    broker_unsubscribe(w, 0, s, strlen(s));
    struct answer p = {0};
    publish_wait(s, "1", &p);
    ck_assert_int_eq(p.err, 0);
    nmsg_want = 1;
    ck_assert(!run_until(got_messages, 300));
}
END_TEST

START_TEST(redis_lost_then_back)
{
    ck_assert(run_until(both_up, 5000));
    kill(redis_pid, SIGSTOP); /* requests go out and are not answered */
    struct answer p = {0};
    const char *s = "patient/10/ecg";
    broker_publish(w, 0, s, strlen(s), "1", 1, 1, on_seq, &p);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    ck_assert_int_eq(p.calls, 0);
    redis_stop();
    wait_answer(&p);
    ck_assert_int_eq(p.err, -EAGAIN);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(lost, 1);
    ck_assert(!broker_is_up(w, 0));
    ck_assert_uint_gt(slot.counters.broker[0].errors[BROKER_ERROR_CONNECT], 0);
    struct answer down = {0};
    broker_publish(w, 0, s, strlen(s), "2", 1, 2, on_seq, &down);
    ck_assert_int_eq(down.calls, 1); /* at once: no connection to send it on */
    ck_assert_int_eq(down.err, -EAGAIN);

    redis_start(redis_port);
    ck_assert(run_until(both_up, 10000)); /* reconnected with backoff */
    ck_assert_int_eq(reconnected, 2);
    struct answer again = {0};
    publish_wait(s, "3", &again);
    ck_assert_int_eq(again.err, 0);
    ck_assert_uint_eq(again.seq, 1); /* a new Redis, a new sequence */
}
END_TEST

START_TEST(a_request_past_pool_timeout_is_answered_once)
{
    ck_assert(run_until(both_up, 5000));
    kill(redis_pid, SIGSTOP);
    struct answer p = {0};
    broker_head(w, 0, "s", 1, on_seq, &p);
    uv_run(&w->loop, UV_RUN_NOWAIT);
    broker_sweep(w, clock_now_ns() + (uint64_t)w->cfg.pool_timeout * 1000000000ull - 1000000000ull);
    ck_assert_int_eq(p.calls, 0); /* not yet */
    broker_sweep(w, clock_now_ns() + (uint64_t)w->cfg.pool_timeout * 1000000000ull + 1000000000ull);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.err, -EAGAIN);
    ck_assert_uint_eq(slot.counters.broker[0].errors[BROKER_ERROR_TIMEOUT], 1);
    kill(redis_pid, SIGCONT);
    /* The late reply comes and is dropped: no second answer. */
    struct answer after = {0};
    broker_head(w, 0, "s", 1, on_seq, &after);
    wait_answer(&after);
    ck_assert_int_eq(after.err, 0);
    ck_assert_int_eq(p.calls, 1);
}
END_TEST

static void unreachable_setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    int ports[2] = {free_port(), free_port()};
    make_worker(2, ports);
}

static void unreachable_teardown(void)
{
    broker_close(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&w->loop), 0);
    free(w);
}

static int connect_errors(void)
{
    return slot.counters.broker[0].errors[BROKER_ERROR_CONNECT] > 0;
}

START_TEST(an_unreachable_broker_answers_eagain_at_once)
{
    ck_assert(run_until(connect_errors, 5000));
    ck_assert(!broker_is_up(w, 0));
    ck_assert(!broker_sub_is_up(w, 0));
    struct answer p = {0}, r = {0};
    broker_publish(w, 0, "s", 1, "1", 1, 1, on_seq, &p);
    broker_range(w, 1, "s", 1, 1, 2, 2, on_range, &r);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.err, -EAGAIN);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.err, -EAGAIN);
    ck_assert_int_eq(reconnected, 0);
}
END_TEST

START_TEST(streams_shard_stably_over_the_brokers)
{
    int count[2] = {0, 0};
    char name[32];
    for (int i = 0; i < 64; i++) {
        int n = snprintf(name, sizeof(name), "patient/%d/ecg", i);
        int b = broker_for_stream(w, name, (size_t)n);
        ck_assert(b == 0 || b == 1);
        ck_assert_int_eq(broker_for_stream(w, name, (size_t)n), b);
        count[b]++;
    }
    ck_assert_int_gt(count[0], 8);
    ck_assert_int_gt(count[1], 8);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("broker");
    TCase *tc = unit_tcase(s, "redis");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, both_connections_come_up);
    tcase_add_test(tc, publishes_are_sequenced_announced_and_stored);
    tcase_add_test(tc, a_sequence_behind_what_was_seen_is_moved_past_it);
    tcase_add_test(tc, nothing_arrives_after_unsubscribe);
    tcase_add_test(tc, redis_lost_then_back);
    tcase_add_test(tc, a_request_past_pool_timeout_is_answered_once);
    TCase *none = unit_tcase(s, "unreachable");
    tcase_add_checked_fixture(none, unreachable_setup, unreachable_teardown);
    tcase_add_test(none, an_unreachable_broker_answers_eagain_at_once);
    tcase_add_test(none, streams_shard_stably_over_the_brokers);
    return unit_run(s);
}
