/*
 * Unit suite for worker/router.c, driven through router.h (router_handle,
 * router_app) with fakes of the layers below it: the session (texts sent,
 * policy closes) and the hub (subscribe, unsubscribe, publish answering
 * as told). The suite includes router.c and links only shared/, so the
 * fakes are the only hub and session there are.
 *
 * Covered: pong and every reply echoing the request's id byte for byte;
 * `data` handed to the hub as the publisher's own bytes; ack only with an
 * id; the hub's errnos as protocol codes (counted by code); a pending
 * publish answered later through router_app; malformed requests; the
 * rate limit and its 1008 on abuse.
 */
#include "router.c"

#include <check.h>
#include <stdio.h>
#include <unistd.h>

#include "config.h"
#include "unit.h"

static struct worker *w;
static struct conn *c;

/* ---- the session below: what was sent -------------------------------- */

static char sent[16][1024];
static int nsent;
static const char *policy_closed;

int session_send_text(struct conn *conn, const char *text, size_t len, uint64_t origin_ns)
{
    ck_assert_ptr_eq(conn, c);
    ck_assert_int_lt(nsent, 16);
    ck_assert_uint_lt(len, sizeof(sent[0]));
    memcpy(sent[nsent], text, len);
    sent[nsent][len] = '\0';
    nsent++;
    return 0;
}

void session_close_policy(struct conn *conn, const char *why)
{
    policy_closed = why;
}

void conn_log_begin(struct log_line *l, const struct conn *conn, enum log_level level,
                    const char *event)
{
    log_begin(l, level, event);
}

/* ---- the hub below: what it was asked, what it answers ---------------- */

static int hub_answer;
static uint64_t hub_seq;
static char hub_call[64];
static char hub_stream[STREAMLOG_NAME_MAX + 1];
static char hub_data[256];
static char hub_id[64];
static struct hub_subscribe_args hub_args;

int hub_subscribe(struct conn *conn, const struct hub_subscribe_args *a)
{
    snprintf(hub_call, sizeof(hub_call), "subscribe");
    snprintf(hub_stream, sizeof(hub_stream), "%.*s", (int)a->stream_len, a->stream);
    snprintf(hub_id, sizeof(hub_id), "%s", a->id_json ? a->id_json : "(none)");
    hub_args = *a;
    return hub_answer;
}

int hub_unsubscribe(struct conn *conn, const char *stream, size_t len)
{
    snprintf(hub_call, sizeof(hub_call), "unsubscribe");
    snprintf(hub_stream, sizeof(hub_stream), "%.*s", (int)len, stream);
    return hub_answer;
}

int hub_publish(struct conn *conn, const char *stream, size_t len, const char *data, size_t dlen,
                const char *id_json, uint64_t *seq)
{
    snprintf(hub_call, sizeof(hub_call), "publish");
    snprintf(hub_stream, sizeof(hub_stream), "%.*s", (int)len, stream);
    snprintf(hub_data, sizeof(hub_data), "%.*s", (int)dlen, data);
    snprintf(hub_id, sizeof(hub_id), "%s", id_json ? id_json : "(none)");
    *seq = hub_seq;
    return hub_answer;
}

static void setup(void)
{
    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    w = calloc(1, sizeof(*w));
    config_defaults(&w->cfg);
    w->slot = calloc(1, sizeof(*w->slot));
    c = calloc(1, sizeof(*c));
    c->w = w;
    c->state = CONN_WS;
    c->live = calloc(1, sizeof(*c->live)); /* a message came: the session is live */
    c->app = &router_app;
    c->msg_start_ns = 1000000000ull;
    nsent = 0;
    policy_closed = NULL;
    hub_answer = 0;
    hub_seq = 0;
    hub_call[0] = hub_stream[0] = hub_data[0] = hub_id[0] = '\0';
}

static void teardown(void)
{
    free(c->live);
    free(c);
    free(w->slot);
    free(w);
}

static void handle(const char *msg)
{
    c->msg_start_ns += 1000; /* well inside the default rate */
    router_handle(c, msg, strlen(msg));
}

START_TEST(ping_echoes_the_id_as_sent)
{
    handle("{\"type\":\"ping\",\"id\":1.50}");
    ck_assert_int_eq(nsent, 1);
    ck_assert_msg(strncmp(sent[0], "{\"type\":\"pong\",\"id\":1.50,\"ts\":", 30) == 0, "%s", sent[0]);
    ck_assert_int_eq(c->msg_type, REQUEST_PING);
    handle("{\"id\" : {\"a\": [1, \"}\"]} , \"type\":\"ping\"}");
    ck_assert_msg(strstr(sent[1], "\"id\":{\"a\": [1, \"}\"]}") != NULL, "%s", sent[1]);
    handle("{\"type\":\"ping\"}");
    ck_assert_ptr_null(strstr(sent[2], "\"id\""));
}
END_TEST

START_TEST(publish_hands_the_hub_the_publishers_bytes)
{
    hub_seq = 42;
    handle("{\"type\":\"publish\",\"stream\":\"ward/7\",\"data\": {\"hr\" : 7.10, \"s\":\"\\u00e9\"},"
           "\"id\":\"p1\"}");
    ck_assert_str_eq(hub_call, "publish");
    ck_assert_str_eq(hub_stream, "ward/7");
    ck_assert_str_eq(hub_data, "{\"hr\" : 7.10, \"s\":\"\\u00e9\"}");
    ck_assert_str_eq(hub_id, "\"p1\"");
    ck_assert_int_eq(nsent, 1);
    ck_assert_str_eq(sent[0], "{\"type\":\"ack\",\"id\":\"p1\",\"stream\":\"ward/7\",\"seq\":42}");
    /* Without an id: no ack. */
    handle("{\"type\":\"publish\",\"stream\":\"ward/7\",\"data\":1}");
    ck_assert_str_eq(hub_id, "(none)");
    ck_assert_int_eq(nsent, 1);
}
END_TEST

START_TEST(a_pending_publish_is_answered_later_through_router_app)
{
    hub_answer = HUB_PENDING;
    handle("{\"type\":\"publish\",\"stream\":\"s\",\"data\":0,\"id\":9}");
    ck_assert_int_eq(nsent, 0);
    c->app->reply_ack(c, "9", "s", 1, 3);
    ck_assert_str_eq(sent[0], "{\"type\":\"ack\",\"id\":9,\"stream\":\"s\",\"seq\":3}");
    c->app->reply_errno(c, "9", -EAGAIN);
    ck_assert_msg(strncmp(sent[1], "{\"type\":\"error\",\"code\":\"unavailable\"", 36) == 0, "%s",
                  sent[1]);
    ck_assert_uint_eq(w->slot->counters.messages_refused[REFUSED_UNAVAILABLE], 1);
    /* an id too long for the ack's stack buffer still comes back whole */
    char id[402], want[600];
    memset(id + 1, 'x', 399);
    id[0] = id[400] = '"';
    id[401] = '\0';
    c->app->reply_ack(c, id, "s", 1, 4);
    snprintf(want, sizeof(want), "{\"type\":\"ack\",\"id\":%s,\"stream\":\"s\",\"seq\":4}", id);
    ck_assert_str_eq(sent[2], want);
}
END_TEST

START_TEST(the_hubs_errnos_become_codes)
{
    static const struct {
        int err;
        const char *code;
        enum segment_refusal counted;
    } cases[] = {
        {-ENOSPC, "capacity", REFUSED_CAPACITY},   {-EMLINK, "capacity", REFUSED_CAPACITY},
        {-EEXIST, "bad_request", REFUSED_BAD_REQUEST},
        {-E2BIG, "too_large", REFUSED_TOO_LARGE},  {-ENOBUFS, "unavailable", REFUSED_UNAVAILABLE},
        {-EAGAIN, "unavailable", REFUSED_UNAVAILABLE}, {-ENOMEM, "internal", REFUSED_INTERNAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        nsent = 0;
        hub_answer = cases[i].err;
        uint64_t before = w->slot->counters.messages_refused[cases[i].counted];
        handle("{\"type\":\"subscribe\",\"stream\":\"a.b\",\"id\":[1]}");
        ck_assert_int_eq(nsent, 1);
        char want[96];
        snprintf(want, sizeof(want), "{\"type\":\"error\",\"code\":\"%s\"", cases[i].code);
        ck_assert_msg(strncmp(sent[0], want, strlen(want)) == 0, "%d: %s", cases[i].err, sent[0]);
        ck_assert_msg(strstr(sent[0], ",\"id\":[1]}") != NULL, "%s", sent[0]);
        ck_assert_uint_eq(w->slot->counters.messages_refused[cases[i].counted], before + 1);
    }
}
END_TEST

START_TEST(subscribe_and_unsubscribe_reach_the_hub)
{
    handle("{\"type\":\"subscribe\",\"stream\":\"bed/1\",\"since\":12,\"epoch\":\"ab\",\"id\":5}");
    ck_assert_str_eq(hub_call, "subscribe");
    ck_assert_str_eq(hub_stream, "bed/1");
    ck_assert_int_eq(hub_args.has_since, 1);
    ck_assert_uint_eq(hub_args.since, 12);
    ck_assert_uint_eq(hub_args.epoch_len, 2);
    ck_assert_str_eq(hub_id, "5");
    ck_assert_int_eq(nsent, 0); /* the hub sends `subscribed` */
    handle("{\"type\":\"unsubscribe\",\"stream\":\"bed/1\"}");
    ck_assert_str_eq(hub_call, "unsubscribe");
    ck_assert_str_eq(sent[0], "{\"type\":\"unsubscribed\",\"stream\":\"bed/1\"}");
    hub_answer = -ENOENT;
    handle("{\"type\":\"unsubscribe\",\"stream\":\"bed/1\",\"id\":null}");
    ck_assert_msg(strstr(sent[1], "\"code\":\"bad_request\"") && strstr(sent[1], "\"id\":null}"),
                  "%s", sent[1]);
}
END_TEST

START_TEST(malformed_requests_never_reach_the_hub)
{
    const char *bad[] = {
        "not json",
        "[1,2]",
        "{\"id\":1}",
        "{\"type\":7}",
        "{\"type\":\"fly\"}",
        "{\"type\":\"auth\",\"token\":\"x\"}", /* auth_mode none */
        "{\"type\":\"subscribe\"}",
        "{\"type\":\"subscribe\",\"stream\":\"bad name\"}",
        "{\"type\":\"subscribe\",\"stream\":\"s\",\"since\":-1}",
        "{\"type\":\"subscribe\",\"stream\":\"s\",\"epoch\":3}",
        "{\"type\":\"publish\",\"stream\":\"s\"}",
        "{\"type\":\"ping\",\"type\":\"ping\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        nsent = 0;
        handle(bad[i]);
        ck_assert_msg(nsent == 1, "%s: %d replies", bad[i], nsent);
        ck_assert_msg(strncmp(sent[0], "{\"type\":\"error\",\"code\":\"bad_request\"", 36) == 0,
                      "%s: %s", bad[i], sent[0]);
    }
    ck_assert_str_eq(hub_call, "");
    ck_assert_uint_eq(w->slot->counters.messages_refused[REFUSED_BAD_REQUEST],
                      sizeof(bad) / sizeof(bad[0]));
    ck_assert_int_eq(c->msg_type, REQUEST_INVALID); /* the last one's: not JSON */
}
END_TEST

START_TEST(the_rate_limit_refuses_then_closes)
{
    w->cfg.max_messages_per_second = 5;
    w->cfg.message_burst = 2;
    int limited = 0;
    for (int i = 0; i < 200 && !policy_closed; i++) {
        nsent = 0;
        router_handle(c, "{\"type\":\"ping\",\"id\":1}", 22); /* all at one instant */
        if (strstr(sent[0], "rate_limited")) {
            limited++;
            ck_assert_msg(strstr(sent[0], "\"id\":1}") != NULL, "%s", sent[0]);
        }
    }
    ck_assert_int_ge(limited, 1);
    ck_assert_ptr_nonnull(policy_closed);
    ck_assert_str_eq(c->close_detail, "rate limit abuse");
    ck_assert_uint_eq(w->slot->counters.messages_refused[REFUSED_RATE_LIMITED], (uint64_t)limited);
}
END_TEST

/* What the log wrote to stderr while `fn` ran, and how many lines. */
static int captured_log_lines(void (*fn)(void), char *out, size_t cap)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += out[i] == '\n';
    return lines;
}

static void five_refused_subscribes(void)
{
    for (int i = 0; i < 5; i++)
        handle("{\"type\":\"subscribe\",\"stream\":\"s\"}");
}

START_TEST(refusals_are_logged_once_per_ten_seconds_and_counted)
{
    log_configure(LOG_FORMAT_JSON, LOG_WARN);
    hub_answer = -EMLINK;
    char out[4096];
    ck_assert_int_eq(captured_log_lines(five_refused_subscribes, out, sizeof(out)), 1);
    ck_assert_ptr_nonnull(strstr(out, "\"code\":\"capacity\""));
    ck_assert_ptr_null(strstr(out, "refusals_not_logged"));
    ck_assert_int_eq(nsent, 5); /* every one answered */
    /* ten seconds on, the next line says how many went unlogged */
    c->refusal_log_s -= ROUTER_REFUSAL_LOG_S;
    nsent = 0;
    ck_assert_int_eq(captured_log_lines(five_refused_subscribes, out, sizeof(out)), 1);
    ck_assert_ptr_nonnull(strstr(out, "\"refusals_not_logged\":4"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("router");
    TCase *tc = unit_tcase(s, "router");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, ping_echoes_the_id_as_sent);
    tcase_add_test(tc, publish_hands_the_hub_the_publishers_bytes);
    tcase_add_test(tc, a_pending_publish_is_answered_later_through_router_app);
    tcase_add_test(tc, the_hubs_errnos_become_codes);
    tcase_add_test(tc, subscribe_and_unsubscribe_reach_the_hub);
    tcase_add_test(tc, malformed_requests_never_reach_the_hub);
    tcase_add_test(tc, the_rate_limit_refuses_then_closes);
    tcase_add_test(tc, refusals_are_logged_once_per_ten_seconds_and_counted);
    return unit_run(s);
}
