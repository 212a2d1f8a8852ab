/*
 * Unit suite for worker/framescan.c through framescan.h: masked client
 * frames fed whole and a byte at a time, 7-, 16- and 64-bit lengths, a
 * fragmented message summed against the limit, control frames between
 * fragments, idleness only between frames, and the close frame noticed
 * from its header.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "framescan.h"
#include "unit.h"

/* A masked client frame of `len` bytes of payload; returns its size. */
static size_t frame(uint8_t *out, int fin, int opcode, uint64_t len)
{
    return unit_client_frame(out, fin, opcode, NULL, len, len);
}

static uint8_t buf[300000];

START_TEST(lengths_whole_and_byte_by_byte)
{
    static const uint64_t lens[] = {0, 125, 126, 65535, 65536, 70000};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        struct framescan fs = {0};
        size_t n = frame(buf, 1, 1, lens[k]);
        ck_assert_int_eq(framescan_feed(&fs, buf, n, 1 << 20), FRAMESCAN_OK);
        ck_assert(framescan_idle(&fs));
        ck_assert_uint_eq(fs.msg_len, lens[k]);
        struct framescan one = {0};
        for (size_t i = 0; i < n; i++) {
            ck_assert_int_eq(framescan_feed(&one, buf + i, 1, 1 << 20), FRAMESCAN_OK);
            ck_assert_int_eq(framescan_idle(&one), i == n - 1);
        }
    }
}
END_TEST

START_TEST(a_too_big_message_is_known_from_its_header)
{
    struct framescan fs = {0};
    frame(buf, 1, 2, 5000);
    ck_assert_int_eq(framescan_feed(&fs, buf, 8, 4999), FRAMESCAN_TOO_BIG); /* the header only */
    struct framescan huge = {0};
    uint8_t hdr[14] = {0x81, 0x80 | 127, 0, 0, 1, 0, 0, 0, 0, 0}; /* 1 TiB announced */
    ck_assert_int_eq(framescan_feed(&huge, hdr, 14, 1 << 20), FRAMESCAN_TOO_BIG);
}
END_TEST

START_TEST(fragments_add_up_and_controls_do_not)
{
    struct framescan fs = {0};
    size_t n = frame(buf, 0, 1, 600);
    n += frame(buf + n, 1, 9, 4);        /* a ping between fragments */
    n += frame(buf + n, 0, 0, 300);
    ck_assert_int_eq(framescan_feed(&fs, buf, n, 1000), FRAMESCAN_OK);
    ck_assert(!framescan_idle(&fs));     /* a message is half received */
    ck_assert_uint_eq(fs.msg_len, 900);
    n = frame(buf, 1, 0, 101);
    ck_assert_int_eq(framescan_feed(&fs, buf, n, 1000), FRAMESCAN_TOO_BIG);
    struct framescan ok = {0};
    n = frame(buf, 0, 1, 600);
    n += frame(buf + n, 1, 0, 400);
    ck_assert_int_eq(framescan_feed(&ok, buf, n, 1000), FRAMESCAN_OK);
    ck_assert(framescan_idle(&ok));
}
END_TEST

START_TEST(a_close_is_seen_from_its_header)
{
    struct framescan fs = {0};
    size_t n = frame(buf, 1, 8, 2);
    ck_assert_int_eq(framescan_feed(&fs, buf, 2, 10), FRAMESCAN_OK);
    ck_assert(!fs.saw_close);
    ck_assert_int_eq(framescan_feed(&fs, buf + 2, 4, 10), FRAMESCAN_OK);
    ck_assert(fs.saw_close);
    ck_assert(!framescan_idle(&fs));
    ck_assert_int_eq(framescan_feed(&fs, buf + 6, n - 6, 10), FRAMESCAN_OK);
    ck_assert(framescan_idle(&fs));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("framescan");
    TCase *tc = unit_tcase(s, "framescan");
    tcase_add_test(tc, lengths_whole_and_byte_by_byte);
    tcase_add_test(tc, a_too_big_message_is_known_from_its_header);
    tcase_add_test(tc, fragments_add_up_and_controls_do_not);
    tcase_add_test(tc, a_close_is_seen_from_its_header);
    return unit_run(s);
}
