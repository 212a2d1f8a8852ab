/*
 * Unit suite for shared/pmdeflate.c: the permessage-deflate offer (RFC
 * 7692) — every parameter with and without a value, bad values, duplicate
 * and unknown parameters (offer declined, the next one tried), several
 * offers and other extensions, header syntax errors (-EINVAL, a 400), and
 * the response line.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pmdeflate.h"
#include "unit.h"

static int nego(const char *v, struct pmdeflate_agreement *a)
{
    const char *why = NULL;
    memset(a, 0xee, sizeof(*a));
    int r = pmdeflate_negotiate(v, strlen(v), a, &why);
    if (r < 0)
        ck_assert_ptr_nonnull(why);
    return r;
}

static const char *answer(const struct pmdeflate_agreement *a)
{
    static char buf[PMDEFLATE_RESPONSE_MAX];
    ck_assert_int_gt(pmdeflate_response(a, buf, sizeof(buf)), 0);
    return buf;
}

START_TEST(plain_offer_accepted_with_server_context_takeover)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("permessage-deflate", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 15);
    ck_assert_uint_eq(a.server_wbits_asked, 0);
    ck_assert_uint_eq(a.server_takeover, 1);
    /* the client keeps no context of its own, whatever it offered */
    ck_assert_str_eq(answer(&a), "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "client_no_context_takeover\r\n");
}
END_TEST

START_TEST(server_context_takeover_only_when_allowed_with_room)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("permessage-deflate; server_no_context_takeover", &a), 1);
    ck_assert_uint_eq(a.server_takeover, 0);
    ck_assert_str_eq(answer(&a), "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "server_no_context_takeover; client_no_context_takeover\r\n");
    /* the shared contexts' window is 2^PMDEFLATE_CONTEXT_WBITS */
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=12", &a), 1);
    ck_assert_uint_eq(a.server_takeover, 1);
    ck_assert_str_eq(answer(&a), "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "client_no_context_takeover; server_max_window_bits=12\r\n");
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=11", &a), 1);
    ck_assert_uint_eq(a.server_takeover, 0);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=13; "
                          "server_no_context_takeover",
                          &a),
                     1);
    ck_assert_uint_eq(a.server_takeover, 0);
    ck_assert_int_eq(nego("permessage-deflate; client_no_context_takeover", &a), 1);
    ck_assert_uint_eq(a.server_takeover, 1);
}
END_TEST

START_TEST(no_offer)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("", &a), 0);
    ck_assert_int_eq(nego(" , ,", &a), 0);
    ck_assert_int_eq(nego("x-webkit-deflate-frame", &a), 0);
    ck_assert_int_eq(nego("Permessage-Deflate", &a), 0); /* tokens are exact */
}
END_TEST

START_TEST(context_takeover_parameters)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("permessage-deflate; server_no_context_takeover", &a), 1);
    ck_assert_int_eq(nego("permessage-deflate;client_no_context_takeover", &a), 1);
    ck_assert_int_eq(nego("permessage-deflate; server_no_context_takeover; "
                          "client_no_context_takeover",
                          &a),
                     1);
    /* they take no value */
    ck_assert_int_eq(nego("permessage-deflate; server_no_context_takeover=1", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; client_no_context_takeover=\"x\"", &a), 0);
}
END_TEST

START_TEST(server_max_window_bits)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=10", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 10);
    ck_assert_uint_eq(a.server_wbits_asked, 1);
    ck_assert_str_eq(answer(&a), "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "server_no_context_takeover; client_no_context_takeover; "
                                 "server_max_window_bits=10\r\n");
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=8", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 8);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=15", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 15);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=\"9\"", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 9);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits = 12", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 12);
    /* the value is required and must be 8..15 without leading zeros */
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=7", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=16", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=010", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=1x", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=\"\"", &a), 0);
}
END_TEST

START_TEST(client_max_window_bits)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 15);
    /* never answered: the worker inflates with 15, which reads any window */
    ck_assert_ptr_null(strstr(answer(&a), "client_max_window_bits"));
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits=9", &a), 1);
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits=\"15\"", &a), 1);
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits=20", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits=\"1 0\"", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits=\"123456789012345678\"",
                          &a),
                     0);
}
END_TEST

START_TEST(duplicate_and_unknown_parameters_decline)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("permessage-deflate; server_no_context_takeover; "
                          "server_no_context_takeover",
                          &a),
                     0);
    ck_assert_int_eq(nego("permessage-deflate; client_max_window_bits; client_max_window_bits=10",
                          &a),
                     0);
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=10; "
                          "server_max_window_bits=10",
                          &a),
                     0);
    ck_assert_int_eq(nego("permessage-deflate; mux", &a), 0);
    ck_assert_int_eq(nego("permessage-deflate; Server_No_Context_Takeover", &a), 0);
}
END_TEST

START_TEST(offers_tried_in_order)
{
    struct pmdeflate_agreement a;
    /* the first acceptable one wins */
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=10, permessage-deflate", &a),
                     1);
    ck_assert_uint_eq(a.server_wbits, 10);
    /* a declined offer passes to the next */
    ck_assert_int_eq(nego("permessage-deflate; unknown, permessage-deflate; "
                          "server_max_window_bits=12",
                          &a),
                     1);
    ck_assert_uint_eq(a.server_wbits, 12);
    ck_assert_int_eq(nego("x-webkit-deflate-frame; no_context_takeover, permessage-deflate; "
                          "client_max_window_bits",
                          &a),
                     1);
    ck_assert_uint_eq(a.server_wbits, 15);
    ck_assert_int_eq(nego("permessage-deflate; x, permessage-deflate; server_max_window_bits=3",
                          &a),
                     0);
    /* several header lines arrive joined with ", " */
    ck_assert_int_eq(nego("foo, permessage-deflate; server_max_window_bits=9", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 9);
}
END_TEST

START_TEST(malformed_header_is_einval)
{
    struct pmdeflate_agreement a;
    static const char *const bad[] = {
        "permessage-deflate;",
        "permessage-deflate; ;",
        "permessage-deflate; =10",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate; server_max_window_bits=\"1\\",
        "permessage-deflate server_no_context_takeover",
        "permessage-deflate; a=b=c",
        "@",
        ";permessage-deflate",
        "permessage-deflate, foo; bar=\"unterminated",
        "permessage-deflate; x=\"\x01\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(nego(bad[i], &a) == -EINVAL, "accepted: %s", bad[i]);
}
END_TEST

START_TEST(quoted_escapes)
{
    struct pmdeflate_agreement a;
    ck_assert_int_eq(nego("permessage-deflate; server_max_window_bits=\"1\\1\"", &a), 1);
    ck_assert_uint_eq(a.server_wbits, 11);
    /* other extensions' quoted values may hold what a token cannot */
    ck_assert_int_eq(nego("foo; bar=\"a, b; c\", permessage-deflate", &a), 1);
}
END_TEST

START_TEST(response_needs_room)
{
    struct pmdeflate_agreement a = {10, 1, 0};
    char small[40];
    ck_assert_int_eq(pmdeflate_response(&a, small, sizeof(small)), -ENOSPC);
}
END_TEST

static Suite *pmdeflate_suite(void)
{
    Suite *s = suite_create("pmdeflate");
    TCase *tc = unit_tcase(s, "negotiate");
    tcase_add_test(tc, plain_offer_accepted_with_server_context_takeover);
    tcase_add_test(tc, server_context_takeover_only_when_allowed_with_room);
    tcase_add_test(tc, no_offer);
    tcase_add_test(tc, context_takeover_parameters);
    tcase_add_test(tc, server_max_window_bits);
    tcase_add_test(tc, client_max_window_bits);
    tcase_add_test(tc, duplicate_and_unknown_parameters_decline);
    tcase_add_test(tc, offers_tried_in_order);
    tcase_add_test(tc, malformed_header_is_einval);
    tcase_add_test(tc, quoted_escapes);
    tcase_add_test(tc, response_needs_room);
    return s;
}

int main(void)
{
    return unit_run(pmdeflate_suite());
}
