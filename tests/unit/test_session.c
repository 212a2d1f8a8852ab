/*
 * Unit suite for worker/session.c, reached by including the .c, driven
 * through session.h with a fake of the transport below (conn_*: closes
 * and flush requests recorded) and a fake application above (struct
 * app_ops: the messages it is handed). Frames go in as a client would
 * send them (masked) and come out of the send queue as the client would
 * read them.
 *
 * Covered: a text message reaches the app parsed, once, counted; binary
 * data closes 1003; a message announced above max_message_size closes
 * 1009 from its header alone; a client ping is answered; the heartbeat's
 * pong gives the RTT; the sweep's deadlines (expired token 1008, idle
 * 1001, heartbeat due); nothing is sent once the session is closing.
 */
#include "session.c"

#include <check.h>

#include "config.h"
#include "fakequeue.h"
#include "unit.h"

static struct worker *w;
static struct segment_worker slot;
static struct conn *c;

/* ---- the transport below ---------------------------------------------- */

static int closed_after_flush = -1;
static int closed_now = -1, closed_code;
static int resumed;

void conn_close_after_flush(struct conn *conn, enum segment_disconnect_reason reason)
{
    conn->reason = reason;
    conn->close_after_flush = 1;
    closed_after_flush = (int)reason;
}

void conn_close_with(struct conn *conn, enum segment_disconnect_reason reason, int code)
{
    conn->closed = 1;
    closed_now = (int)reason;
    closed_code = code;
}

void conn_mark_dirty(struct conn *conn)
{
}

void conn_resume_reading(struct conn *conn)
{
    resumed++;
}

static void no_write_cb(struct conn *conn, int status);

/* conn.c's, without a socket: the queue is made the same way. */
struct sendq *conn_queue(struct conn *conn)
{
    if (!conn->out) {
        conn->out = calloc(1, sizeof(*conn->out));
        sendq_init(conn->out, no_write_cb);
    }
    return conn->out;
}

void conn_log_begin(struct log_line *l, const struct conn *conn, enum log_level level,
                    const char *event)
{
    log_begin(l, level, event);
}

/* ---- the application above -------------------------------------------- */

static char got[8][256];
static int ngot;

static void fake_process(struct conn *conn, const char *msg, size_t len, struct request *req,
                         int parsed)
{
    ck_assert_int_lt(ngot, 8);
    snprintf(got[ngot++], sizeof(got[0]), "%s:%.*s",
             parsed == 0 && req->is_object ? "object" : "not-json", (int)len, msg);
    request_free(req);
}

static int fake_parse(const char *msg, size_t len, struct request *req)
{
    return request_parse(req, msg, len);
}

static const struct app_ops fake_app = {.parse = fake_parse, .process = fake_process};

static void no_write_cb(struct conn *conn, int status)
{
}

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    w = fakequeue_worker(&slot);
    c = calloc(1, sizeof(*c));
    c->w = w;
    c->state = CONN_WS;
    c->app = &fake_app;
    c->out = calloc(1, sizeof(*c->out));
    sendq_init(c->out, no_write_cb);
    closed_after_flush = closed_now = -1;
    resumed = ngot = 0;
}

static void teardown(void)
{
    session_drop_pending(c);
    session_free(c);
    sendq_free(c->out);
    free(c->out);
    free(c);
    free(w);
}

static void feed(int opcode, const char *payload)
{
    uint8_t buf[512];
    size_t n = unit_client_frame(buf, 1, opcode, payload, strlen(payload), strlen(payload));
    session_feed(c, buf, n);
}

/* What the client reads, frame by frame: "opcode:payload" ("8:<code>"). */
static int sent(char out[][256], int max)
{
    return fakequeue_frames(c->out, out, max);
}

START_TEST(a_text_message_reaches_the_app_once)
{
    feed(1, "{\"type\":\"ping\"}");
    feed(1, "not json");
    ck_assert_int_eq(ngot, 2);
    ck_assert_str_eq(got[0], "object:{\"type\":\"ping\"}");
    ck_assert_str_eq(got[1], "not-json:not json");
    ck_assert_uint_eq(slot.counters.messages_received, 2);
    ck_assert_int_eq(c->state, CONN_WS);
    ck_assert_ptr_null(c->out->head);
}
END_TEST

START_TEST(a_quiet_session_gives_its_state_back_once_nothing_is_owed)
{
    feed(1, "{\"type\":\"ping\"}");
    ck_assert_ptr_nonnull(c->live);
    /* A rate bucket still refilling would be full again if recreated:
     * the state stays until it has refilled. */
    w->cfg.max_messages_per_second = 10;
    w->cfg.message_burst = 20;
    c->live->rate.last_ns = clock_now_ns();
    c->live->rate.tokens = 0;
    session_release_if_idle(c);
    ck_assert_ptr_nonnull(c->live);
    c->live->rate.tokens = 20;
    session_release_if_idle(c);
    ck_assert_ptr_null(c->live);
    /* The next message brings a fresh one and is handled as before. */
    feed(1, "{\"type\":\"ping\"}");
    ck_assert_ptr_nonnull(c->live);
    ck_assert_int_eq(ngot, 2);
}
END_TEST

START_TEST(binary_data_closes_1003)
{
    feed(2, "abc");
    ck_assert_int_eq(ngot, 0);
    char f[4][256];
    ck_assert_int_eq(sent(f, 4), 1);
    ck_assert_str_eq(f[0], "8:1003");
    ck_assert_int_eq(c->state, CONN_CLOSING);
    ck_assert_int_eq(closed_after_flush, DISCONNECT_PROTOCOL_ERROR);
    ck_assert_int_eq(session_send_text(c, "x", 1, 0), -ENOTCONN);
}
END_TEST

START_TEST(too_large_is_refused_from_the_header)
{
    w->cfg.max_message_size = 1000;
    uint8_t buf[16];
    size_t n = unit_client_frame(buf, 1, 1, "", 0, 5000); /* the header only: no payload yet */
    session_feed(c, buf, n);
    char f[4][256];
    ck_assert_int_eq(sent(f, 4), 1);
    ck_assert_str_eq(f[0], "8:1009");
    ck_assert_int_eq(closed_after_flush, DISCONNECT_TOO_LARGE);
}
END_TEST

START_TEST(a_client_ping_is_answered_and_a_heartbeat_pong_gives_the_rtt)
{
    feed(9, "hi");
    char f[4][256];
    ck_assert_int_eq(sent(f, 4), 1);
    ck_assert_str_eq(f[0], "10:hi");
    sendq_free(c->out);

    session_ping(c, 5000000000ull);
    ck_assert_int_eq(sent(f, 4), 1);
    ck_assert_int_eq(f[0][0], '9');
    const uint8_t *ping = (const uint8_t *)sendq_chunk_bytes(c->out->head);
    uint8_t payload[RTT_PAYLOAD_LEN];
    memcpy(payload, ping + 2, RTT_PAYLOAD_LEN);
    uint8_t buf[64];
    size_t n = unit_client_frame(buf, 1, 10, payload, RTT_PAYLOAD_LEN, RTT_PAYLOAD_LEN);
    session_feed(c, buf, n);
    ck_assert_uint_gt(c->rtt_us, 0);
    ck_assert(!c->ping_outstanding);
}
END_TEST

START_TEST(the_sweep_keeps_the_sessions_deadlines)
{
    uint64_t now = 100ull * 1000000000ull;
    w->cfg.connection_timeout = 60;
    w->cfg.heartbeat_interval = 30;
    c->last_rx_ns = now - 10ull * 1000000000ull;
    c->last_ping_ns = now - 31ull * 1000000000ull;
    session_sweep(c, now, 0);
    char f[4][256];
    ck_assert_int_eq(sent(f, 4), 1);
    ck_assert_int_eq(f[0][0], '9'); /* heartbeat due */
    ck_assert_uint_eq(c->last_ping_ns, now);
    session_sweep(c, now, 0);
    ck_assert_int_eq(sent(f, 4), 1); /* not twice */

    c->last_rx_ns = now - 61ull * 1000000000ull;
    session_sweep(c, now, 0);
    ck_assert_int_eq(sent(f, 4), 2);
    ck_assert_str_eq(f[1], "8:1001");
    ck_assert_int_eq(c->state, CONN_CLOSING);
    ck_assert_int_eq(c->reason, DISCONNECT_TIMEOUT);
}
END_TEST

START_TEST(an_expired_token_closes_1008)
{
    struct auth_grant *g = calloc(1, sizeof(*g));
    g->exp = 1000; /* seconds */
    c->grant = g;
    c->last_rx_ns = c->last_ping_ns = 100;
    session_sweep(c, 200, 999999);
    char f[4][256];
    ck_assert_int_eq(sent(f, 4), 0);
    session_sweep(c, 200, 1000001);
    ck_assert_int_eq(sent(f, 4), 1);
    ck_assert_str_eq(f[0], "8:1008");
    ck_assert_str_eq(c->close_detail, "token expired");
    c->grant = NULL;
    free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("session");
    TCase *tc = unit_tcase(s, "session");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_text_message_reaches_the_app_once);
    tcase_add_test(tc, a_quiet_session_gives_its_state_back_once_nothing_is_owed);
    tcase_add_test(tc, binary_data_closes_1003);
    tcase_add_test(tc, too_large_is_refused_from_the_header);
    tcase_add_test(tc, a_client_ping_is_answered_and_a_heartbeat_pong_gives_the_rtt);
    tcase_add_test(tc, the_sweep_keeps_the_sessions_deadlines);
    tcase_add_test(tc, an_expired_token_closes_1008);
    return unit_run(s);
}
