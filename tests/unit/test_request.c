/*
 * Unit suite for worker/request.c: the members the protocol reads come out
 * as the client's own bytes (and strings decoded), whatever the spacing or
 * nesting; anything that is not strict JSON, or repeats a protocol member,
 * is refused with the byte where it went wrong.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "unit.h"

static struct request req;

static int parse(const char *text)
{
    request_free(&req);
    return request_parse(&req, text, strlen(text));
}

static void assert_raw(enum request_member m, enum request_kind kind, const char *raw)
{
    const struct request_value *v = &req.member[m];
    ck_assert_int_eq(v->kind, kind);
    ck_assert_uint_eq(v->raw_len, strlen(raw));
    ck_assert_msg(memcmp(v->raw, raw, v->raw_len) == 0, "got %.*s, want %s", (int)v->raw_len,
                  v->raw, raw);
}

START_TEST(members_are_the_clients_own_bytes)
{
    ck_assert_int_eq(parse("{\"type\":\"publish\",\"stream\":\"bed/1\",\"id\":12345678901234567890123,"
                           "\"data\":{\"lead\":\"II\",\"samples\":[1,-2.5e3,[{}]]},\"x\":[1]}"),
                     0);
    ck_assert_int_eq(req.is_object, 1);
    assert_raw(REQUEST_TYPE, REQUEST_STRING, "\"publish\"");
    assert_raw(REQUEST_STREAM, REQUEST_STRING, "\"bed/1\"");
    ck_assert_uint_eq(req.member[REQUEST_STREAM].text_len, 5);
    ck_assert(memcmp(req.member[REQUEST_STREAM].text, "bed/1", 5) == 0);
    assert_raw(REQUEST_ID, REQUEST_NUMBER, "12345678901234567890123");
    assert_raw(REQUEST_DATA, REQUEST_OBJECT, "{\"lead\":\"II\",\"samples\":[1,-2.5e3,[{}]]}");
    ck_assert_int_eq(req.member[REQUEST_SINCE].kind, REQUEST_ABSENT);
    ck_assert_int_eq(req.member[REQUEST_TOKEN].kind, REQUEST_ABSENT);
}
END_TEST

START_TEST(spacing_and_every_kind_of_value)
{
    ck_assert_int_eq(parse(" \n{ \"data\" :\t[ 1 , 2 ] ,\r\n \"id\" : null , \"since\":true,"
                           "\"epoch\" : false, \"token\": \"a\\\"b\" }  "),
                     0);
    assert_raw(REQUEST_DATA, REQUEST_ARRAY, "[ 1 , 2 ]");
    assert_raw(REQUEST_ID, REQUEST_NULL, "null");
    assert_raw(REQUEST_SINCE, REQUEST_BOOL, "true");
    assert_raw(REQUEST_EPOCH, REQUEST_BOOL, "false");
    assert_raw(REQUEST_TOKEN, REQUEST_STRING, "\"a\\\"b\"");
    ck_assert_uint_eq(req.member[REQUEST_TOKEN].text_len, 3);
    ck_assert(memcmp(req.member[REQUEST_TOKEN].text, "a\"b", 3) == 0);
    ck_assert_int_eq(parse("{\"data\":\"\\u0000x\",\"id\":-0.5e-3}"), 0);
    ck_assert_uint_eq(req.member[REQUEST_DATA].text_len, 2);
    ck_assert_int_eq(req.member[REQUEST_DATA].text[0], 0);
    assert_raw(REQUEST_ID, REQUEST_NUMBER, "-0.5e-3");
}
END_TEST

START_TEST(escaped_member_names_count)
{
    ck_assert_int_eq(parse("{\"\\u0074ype\":\"ping\"}"), 0);
    assert_raw(REQUEST_TYPE, REQUEST_STRING, "\"ping\"");
    ck_assert_int_eq(parse("{\"type\":\"ping\",\"\\u0074ype\":\"x\"}"), -EINVAL);
}
END_TEST

START_TEST(nested_members_are_not_the_requests)
{
    ck_assert_int_eq(parse("{\"data\":{\"type\":\"x\",\"type\":\"y\",\"id\":[{\"id\":1}]},\"type\":\"publish\"}"),
                     0);
    assert_raw(REQUEST_TYPE, REQUEST_STRING, "\"publish\"");
    ck_assert_int_eq(req.member[REQUEST_ID].kind, REQUEST_ABSENT);
}
END_TEST

START_TEST(not_an_object_is_valid_json)
{
    ck_assert_int_eq(parse("[1,2]"), 0);
    ck_assert_int_eq(req.is_object, 0);
    ck_assert_int_eq(parse("\"type\""), 0);
    ck_assert_int_eq(req.is_object, 0);
    ck_assert_int_eq(req.member[REQUEST_TYPE].kind, REQUEST_ABSENT);
}
END_TEST

START_TEST(invalid_json_says_where)
{
    static const char *const bad[] = {
        "",
        "not json",
        "{\"a\":1,}",
        "{\"a\":1} x",
        "{\"id\":6}\":6}",
        "{\"id\":6} \"",
        "{\"a\":1}{}",
        "{'a':1}",
        "{\"a\":01}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"\xff\"}",
        "{\"a\":NaN}",
        "{\"a\":[1,2}",
        "{\"a\":1 /* comment */}",
        "{\"data\":[1,2,3",
        "{\"data\":[1,\f2]}",
        "\v{\"data\":1}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(parse(bad[i]) == -EINVAL, "accepted %s", bad[i]);
        ck_assert_msg(strstr(req.error, " at byte ") != NULL, "%s: %s", bad[i], req.error);
        ck_assert_msg(strchr(req.error, '\n') == NULL, "%s: %s", bad[i], req.error);
    }
}
END_TEST

START_TEST(lone_surrogate_escapes_are_refused)
{
    static const char *const bad[] = {
        "{\"id\":\"\\ud800\"}",
        "{\"data\":[\"ok\",{\"k\":\"x\\udc00y\"}]}",
        "{\"data\":{\"\\ud800\":1}}",
        "{\"data\": \t\"\\ud83d\\u0041\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(parse(bad[i]) == -EINVAL, "accepted %s", bad[i]);
        ck_assert_msg(strstr(req.error, "Unicode") && strstr(req.error, " at byte "), "%s: %s",
                      bad[i], req.error);
    }
    /* a pair is one character; other escapes are fine wherever they are */
    ck_assert_int_eq(parse("{\"data\":[\"\\ud83d\\ude00\", \"\\n\\\\\\\"\", {\"a\\tb\":1}]}"), 0);
    assert_raw(REQUEST_DATA, REQUEST_ARRAY, "[\"\\ud83d\\ude00\", \"\\n\\\\\\\"\", {\"a\\tb\":1}]");
}
END_TEST

START_TEST(a_repeated_protocol_member_is_refused)
{
    ck_assert_int_eq(parse("{\"type\":\"publish\",\"data\":1,\"data\":2}"), -EINVAL);
    ck_assert_msg(strstr(req.error, "\"data\" appears twice") != NULL, "%s", req.error);
    ck_assert_int_eq(parse("{\"other\":1,\"other\":2,\"type\":\"ping\"}"), 0);
}
END_TEST

START_TEST(deep_nesting_is_validated_without_recursion)
{
    size_t depth = 200000;
    char *text = malloc(depth * 2 + 32);
    size_t n = (size_t)sprintf(text, "{\"data\":");
    memset(text + n, '[', depth);
    memset(text + n + depth, ']', depth);
    strcpy(text + n + 2 * depth, "}");
    ck_assert_int_eq(request_parse(&req, text, strlen(text)), 0);
    ck_assert_uint_eq(req.member[REQUEST_DATA].raw_len, 2 * depth);
    request_free(&req);
    text[n + 2 * depth - 1] = '}'; /* mismatched */
    ck_assert_int_eq(request_parse(&req, text, strlen(text)), -EINVAL);
    free(text);
}
END_TEST

START_TEST(since_must_be_a_non_negative_integer)
{
    static const struct {
        const char *json;
        int ok;
        uint64_t value;
    } cases[] = {
        {"{\"since\":0}", 1, 0},
        {"{\"since\":12}", 1, 12},
        {"{\"since\":-0}", 1, 0},
        {"{\"since\":9223372036854775807}", 1, 9223372036854775807ull},
        {"{\"since\":9223372036854775808}", 0, 0},
        {"{\"since\":99999999999999999999999}", 0, 0},
        {"{\"since\":-1}", 0, 0},
        {"{\"since\":1.0}", 0, 0},
        {"{\"since\":1e3}", 0, 0},
        {"{\"since\":\"5\"}", 0, 0},
        {"{\"since\":null}", 0, 0},
        {"{}", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_assert_int_eq(parse(cases[i].json), 0);
        uint64_t v = 7;
        int r = request_uint63(&req.member[REQUEST_SINCE], &v);
        ck_assert_msg((r == 0) == cases[i].ok, "%s: %d", cases[i].json, r);
        if (cases[i].ok)
            ck_assert_uint_eq(v, cases[i].value);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("request");
    TCase *tc = unit_tcase(s, "parse");
    tcase_add_test(tc, members_are_the_clients_own_bytes);
    tcase_add_test(tc, spacing_and_every_kind_of_value);
    tcase_add_test(tc, escaped_member_names_count);
    tcase_add_test(tc, nested_members_are_not_the_requests);
    tcase_add_test(tc, not_an_object_is_valid_json);
    tcase_add_test(tc, invalid_json_says_where);
    tcase_add_test(tc, lone_surrogate_escapes_are_refused);
    tcase_add_test(tc, a_repeated_protocol_member_is_refused);
    tcase_add_test(tc, deep_nesting_is_validated_without_recursion);
    tcase_add_test(tc, since_must_be_a_non_negative_integer);
    int rc = unit_run(s);
    request_free(&req);
    return rc;
}
