/*
 * Unit suite for shared/hash.h: FNV-1a's published 32-bit test vectors,
 * so the segment's hash tables keep the function every process of a build
 * agrees on.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "unit.h"

START_TEST(fnv1a_vectors)
{
    ck_assert_uint_eq(hash_fnv1a("", 0), 0x811c9dc5u);
    ck_assert_uint_eq(hash_fnv1a("a", 1), 0xe40c292cu);
    ck_assert_uint_eq(hash_fnv1a("foobar", 6), 0xbf9cf968u);
    const uint8_t high[2] = {0xff, 0x80}; /* bytes above 127 are not sign-extended */
    ck_assert_uint_eq(hash_fnv1a(high, 2), ((0x811c9dc5u ^ 0xffu) * 16777619u ^ 0x80u) * 16777619u);
}
END_TEST

START_TEST(fnv1a64_vectors_piece_by_piece)
{
    ck_assert_uint_eq(hash_fnv1a64_add(HASH_FNV1A64_INIT, "", 0), 0xcbf29ce484222325ull);
    ck_assert_uint_eq(hash_fnv1a64_add(HASH_FNV1A64_INIT, "a", 1), 0xaf63dc4c8601ec8cull);
    ck_assert_uint_eq(hash_fnv1a64_add(HASH_FNV1A64_INIT, "foobar", 6), 0x85944171f73967e8ull);
    uint64_t h = hash_fnv1a64_add(HASH_FNV1A64_INIT, "foo", 3);
    ck_assert_uint_eq(hash_fnv1a64_add(h, "bar", 3), 0x85944171f73967e8ull);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("hash");
    TCase *tc = unit_tcase(s, "fnv1a");
    tcase_add_test(tc, fnv1a_vectors);
    tcase_add_test(tc, fnv1a64_vectors_piece_by_piece);
    return unit_run(s);
}
