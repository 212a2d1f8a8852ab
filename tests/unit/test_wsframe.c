/*
 * Unit suite for shared/wsframe.c: the header of every length form, at
 * the edges RFC 6455 draws (125/126, 65535/65536), never masked, and the
 * first byte (FIN, RSV, opcode) written as given.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "wsframe.h"

static void expect_header(uint64_t payload, const uint8_t *want, size_t want_len)
{
    uint8_t out[WSFRAME_HEADER_MAX + 1];
    memset(out, 0xee, sizeof(out));
    size_t n = wsframe_put_header(out, WSFRAME_TEXT, payload);
    ck_assert_uint_eq(n, want_len);
    ck_assert_uint_eq(wsframe_header_size(payload), want_len);
    ck_assert_int_eq(memcmp(out, want, want_len), 0);
    ck_assert_uint_eq(out[want_len], 0xee); /* nothing written past it */
    ck_assert_uint_eq(out[1] & 0x80, 0);    /* a server frame is never masked */
    ck_assert_uint_eq(wsframe_header_size_of(out), want_len); /* and reads back */
}

START_TEST(lengths_at_every_edge)
{
    expect_header(0, (const uint8_t[]){0x81, 0}, 2);
    expect_header(125, (const uint8_t[]){0x81, 125}, 2);
    expect_header(126, (const uint8_t[]){0x81, 126, 0, 126}, 4);
    expect_header(200, (const uint8_t[]){0x81, 126, 0, 200}, 4);
    expect_header(65535, (const uint8_t[]){0x81, 126, 0xff, 0xff}, 4);
    expect_header(65536, (const uint8_t[]){0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}, 10);
    expect_header(0x0102030405ull, (const uint8_t[]){0x81, 127, 0, 0, 0, 1, 2, 3, 4, 5}, 10);
}
END_TEST

START_TEST(first_byte_as_given)
{
    uint8_t out[WSFRAME_HEADER_MAX];
    wsframe_put_header(out, 0xc1, 10); /* FIN + RSV1 + text */
    ck_assert_uint_eq(out[0], 0xc1);
    wsframe_put_header(out, 0x88, 2); /* close */
    ck_assert_uint_eq(out[0], 0x88);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wsframe");
    TCase *tc = unit_tcase(s, "wsframe");
    tcase_add_test(tc, lengths_at_every_edge);
    tcase_add_test(tc, first_byte_as_given);
    return unit_run(s);
}
