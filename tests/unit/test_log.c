/*
 * Unit suite for shared/log.c: the shape of a JSON line (one line, valid
 * JSON, ts/level/event then worker or process), escaping of quotes,
 * backslashes, newlines and control characters, level filtering, the
 * key=value text format, and truncation of an over-long line that must
 * stay one valid line marked "truncated". stderr is captured by dup2'ing a
 * temp file over fd 2 around the calls.
 */
#include <check.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"

/* ---- stderr capture ---- */

static FILE *capture_file;
static int saved_stderr = -1;

static void capture_start(void)
{
    capture_file = tmpfile();
    ck_assert_ptr_nonnull(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    ck_assert_int_ge(saved_stderr, 0);
    ck_assert_int_eq(dup2(fileno(capture_file), STDERR_FILENO), STDERR_FILENO);
}

/* Stop capturing; returns everything written (caller frees). */
static char *capture_end(void)
{
    ck_assert_int_eq(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    /* The logger write(2)s to the fd directly: ask the fd, not the FILE. */
    off_t n = lseek(fileno(capture_file), 0, SEEK_END);
    ck_assert_int_ge(n, 0);
    char *text = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(pread(fileno(capture_file), text, (size_t)n, 0), n);
    text[n] = '\0';
    fclose(capture_file);
    capture_file = NULL;
    return text;
}

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

/* Parse exactly one JSON line. */
static json_t *one_json_line(const char *text)
{
    size_t len = strlen(text);
    ck_assert_msg(len > 0 && text[len - 1] == '\n', "not one line: \"%s\"", text);
    ck_assert_msg(count_char(text, '\n') == 1, "more than one line: \"%s\"", text);
    json_error_t e;
    json_t *j = json_loadb(text, len - 1, 0, &e);
    ck_assert_msg(j != NULL, "not JSON (%s at %d): %s", e.text, e.position, text);
    ck_assert(json_is_object(j));
    return j;
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

static int matches(const char *text, const char *pattern)
{
    regex_t re;
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* ---- JSON ---- */

START_TEST(json_line_shape_of_a_worker_event)
{
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(3);
    capture_start();
    struct log_line l;
    log_begin(&l, LOG_INFO, "disconnect");
    log_str(&l, "conn", "3-42");
    log_str(&l, "reason", "timeout");
    log_int(&l, "code", 1001);
    log_int(&l, "neg", -5);
    log_double(&l, "duration_s", 312.4);
    log_end(&l);
    char *out = capture_end();

    ck_assert_msg(matches(out, "^\\{\"ts\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                               "\\.[0-9]{3}Z\",\"level\":\"info\",\"event\":\"disconnect\","
                               "\"worker\":3,"),
                  "%s", out);
    json_t *j = one_json_line(out);
    ck_assert_str_eq(jstr(j, "level"), "info");
    ck_assert_str_eq(jstr(j, "event"), "disconnect");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 3);
    ck_assert_ptr_null(json_object_get(j, "process"));
    ck_assert_str_eq(jstr(j, "conn"), "3-42");
    ck_assert_str_eq(jstr(j, "reason"), "timeout");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "code")), 1001);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "neg")), -5);
    ck_assert_double_eq_tol(json_number_value(json_object_get(j, "duration_s")), 312.4, 1e-9);
    ck_assert_ptr_null(json_object_get(j, "truncated"));
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(json_line_of_the_master_names_the_process)
{
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(-1);
    capture_start();
    log_msg(LOG_WARN, "start", "wsgate %s starting with %d workers", "0.1.0", 4);
    char *out = capture_end();
    json_t *j = one_json_line(out);
    ck_assert_str_eq(jstr(j, "level"), "warn");
    ck_assert_str_eq(jstr(j, "event"), "start");
    ck_assert_str_eq(jstr(j, "process"), "master");
    ck_assert_ptr_null(json_object_get(j, "worker"));
    ck_assert_str_eq(jstr(j, "message"), "wsgate 0.1.0 starting with 4 workers");
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(json_ts_is_now)
{
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(0);
    time_t before = time(NULL);
    capture_start();
    log_msg(LOG_INFO, "listen", "x");
    char *out = capture_end();
    time_t after = time(NULL);
    json_t *j = one_json_line(out);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    ck_assert_ptr_nonnull(strptime(jstr(j, "ts"), "%Y-%m-%dT%H:%M:%S", &tm));
    time_t ts = timegm(&tm);
    ck_assert_int_ge(ts, before);
    ck_assert_int_le(ts, after);
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(json_escapes_quotes_backslashes_newlines_and_controls)
{
    static const char nasty[] = "a\"b\\c\nd\re\tf\x01g\x1fh\x7f caf\xc3\xa9 </script>";
    log_configure(LOG_FORMAT_JSON, LOG_DEBUG);
    log_set_worker(1);
    capture_start();
    struct log_line l;
    log_begin(&l, LOG_ERROR, "error");
    log_str(&l, "message", nasty);
    log_str(&l, "empty", "");
    log_str(&l, "null", NULL);
    log_end(&l);
    char *out = capture_end();
    json_t *j = one_json_line(out);
    ck_assert_str_eq(jstr(j, "message"), nasty);
    ck_assert_str_eq(jstr(j, "empty"), "");
    ck_assert_str_eq(jstr(j, "null"), "");
    ck_assert_ptr_nonnull(strstr(out, "\\u000a"));
    ck_assert_ptr_nonnull(strstr(out, "\\\""));
    ck_assert_int_eq(count_char(out, '\r'), 0);
    ck_assert_int_eq(count_char(out, '\t'), 0);
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(json_escapes_event_name)
{
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(0);
    capture_start();
    log_msg(LOG_INFO, "odd\"event\n", "m");
    char *out = capture_end();
    json_t *j = one_json_line(out);
    ck_assert_str_eq(jstr(j, "event"), "odd\"event\n");
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(log_msg_message_with_newlines_is_one_line)
{
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(2);
    capture_start();
    log_msg(LOG_ERROR, "error", "line one\nline two\n%s", "line three");
    char *out = capture_end();
    json_t *j = one_json_line(out);
    ck_assert_str_eq(jstr(j, "message"), "line one\nline two\nline three");
    json_decref(j);
    free(out);
}
END_TEST

/* ---- levels ---- */

START_TEST(level_filtering)
{
    log_set_worker(0);
    log_configure(LOG_FORMAT_JSON, LOG_WARN);
    capture_start();
    log_msg(LOG_DEBUG, "debug_event", "d");
    log_msg(LOG_INFO, "info_event", "i");
    struct log_line l;
    log_begin(&l, LOG_INFO, "info_line");
    ck_assert_int_eq(l.enabled, 0);
    log_str(&l, "k", "v");
    log_int(&l, "n", 1);
    log_double(&l, "d", 1.0);
    log_end(&l);
    log_msg(LOG_WARN, "warn_event", "w");
    log_msg(LOG_ERROR, "error_event", "e");
    char *out = capture_end();
    ck_assert_int_eq(count_char(out, '\n'), 2);
    ck_assert_ptr_null(strstr(out, "debug_event"));
    ck_assert_ptr_null(strstr(out, "info_event"));
    ck_assert_ptr_null(strstr(out, "info_line"));
    ck_assert_ptr_nonnull(strstr(out, "\"event\":\"warn_event\""));
    ck_assert_ptr_nonnull(strstr(out, "\"event\":\"error_event\""));
    free(out);

    log_configure(LOG_FORMAT_JSON, LOG_DEBUG);
    capture_start();
    log_msg(LOG_DEBUG, "debug_event", "d");
    log_msg(LOG_INFO, "info_event", "i");
    out = capture_end();
    ck_assert_int_eq(count_char(out, '\n'), 2);
    ck_assert_ptr_nonnull(strstr(out, "\"level\":\"debug\""));
    free(out);

    log_configure(LOG_FORMAT_JSON, LOG_ERROR);
    capture_start();
    log_msg(LOG_WARN, "warn_event", "w");
    out = capture_end();
    ck_assert_str_eq(out, "");
    free(out);
}
END_TEST

START_TEST(level_and_format_names_parse)
{
    enum log_level lv = LOG_ERROR;
    ck_assert_int_eq(log_level_parse("debug", &lv), 0);
    ck_assert_int_eq(lv, LOG_DEBUG);
    ck_assert_int_eq(log_level_parse("warn", &lv), 0);
    ck_assert_int_eq(lv, LOG_WARN);
    ck_assert_int_eq(log_level_parse("error", &lv), 0);
    ck_assert_int_eq(lv, LOG_ERROR);
    ck_assert_int_eq(log_level_parse("info", &lv), 0);
    ck_assert_int_eq(lv, LOG_INFO);
    ck_assert_int_eq(log_level_parse("warning", &lv), -1);
    ck_assert_int_eq(log_level_parse("", &lv), -1);
    ck_assert_int_eq(lv, LOG_INFO);
    enum log_format f = LOG_FORMAT_TEXT;
    ck_assert_int_eq(log_format_parse("json", &f), 0);
    ck_assert_int_eq(f, LOG_FORMAT_JSON);
    ck_assert_int_eq(log_format_parse("text", &f), 0);
    ck_assert_int_eq(f, LOG_FORMAT_TEXT);
    ck_assert_int_eq(log_format_parse("JSON", &f), -1);
}
END_TEST

/* ---- text ---- */

START_TEST(text_format_key_value)
{
    log_configure(LOG_FORMAT_TEXT, LOG_INFO);
    log_set_worker(5);
    capture_start();
    struct log_line l;
    log_begin(&l, LOG_INFO, "connect");
    log_str(&l, "conn", "5-1");
    log_str(&l, "remote", "10.0.0.7:51422");
    log_str(&l, "message", "has spaces and \"quotes\"");
    log_str(&l, "eq", "a=b");
    log_str(&l, "empty", "");
    log_int(&l, "code", 1000);
    log_double(&l, "duration_s", 1.25);
    log_end(&l);
    char *out = capture_end();
    ck_assert_msg(matches(out, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}\\.[0-9]{3}Z info connect "
                               "worker=5 conn=5-1 remote=10\\.0\\.0\\.7:51422 "
                               "message=\"has spaces and \\\\\"quotes\\\\\"\" eq=\"a=b\" "
                               "empty=\"\" code=1000 duration_s=1\\.250\n$"),
                  "%s", out);
    free(out);

    log_set_worker(-1);
    capture_start();
    log_msg(LOG_ERROR, "error", "boom");
    out = capture_end();
    ck_assert_msg(matches(out, "Z error error process=master message=boom\n$"), "%s", out);
    free(out);
}
END_TEST

START_TEST(text_format_never_writes_raw_newlines_or_controls)
{
    log_configure(LOG_FORMAT_TEXT, LOG_INFO);
    log_set_worker(0);
    capture_start();
    struct log_line l;
    log_begin(&l, LOG_INFO, "error");
    log_str(&l, "a", "x\ny");
    log_str(&l, "b", "p\rq\x01r");
    log_str(&l, "c", "back\\slash");
    log_end(&l);
    char *out = capture_end();
    ck_assert_msg(count_char(out, '\n') == 1, "raw newline in: %s", out);
    ck_assert_int_eq(count_char(out, '\r'), 0);
    ck_assert_int_eq(count_char(out, '\x01'), 0);
    ck_assert_msg(strstr(out, " a=\"x\\u000ay\"") != NULL, "%s", out);
    ck_assert_msg(strstr(out, " c=\"back\\\\slash\"") != NULL, "%s", out);
    free(out);
}
END_TEST

/* ---- truncation ---- */

START_TEST(overlong_value_truncated_line_stays_valid_json)
{
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(7);
    capture_start();
    struct log_line l;
    log_begin(&l, LOG_INFO, "disconnect");
    log_str(&l, "conn", "7-1");
    log_str(&l, "message", big);
    log_int(&l, "code", 1009);
    log_end(&l);
    char *out = capture_end();
    ck_assert_uint_le(strlen(out), sizeof(l.buf));
    json_t *j = one_json_line(out);
    ck_assert(json_is_true(json_object_get(j, "truncated")));
    ck_assert_str_eq(jstr(j, "conn"), "7-1");
    ck_assert_str_eq(jstr(j, "event"), "disconnect");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "worker")), 7);
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(overlong_escaped_message_truncated_stays_valid_json)
{
    char msg[700];
    memset(msg, '\n', sizeof(msg) - 1); /* each escapes to 6 bytes */
    msg[sizeof(msg) - 1] = '\0';
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(0);
    capture_start();
    log_msg(LOG_ERROR, "error", "%s", msg);
    char *out = capture_end();
    json_t *j = one_json_line(out);
    ck_assert(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
    free(out);
}
END_TEST

START_TEST(truncation_at_every_length_stays_valid_json)
{
    /* A first field of every size near the buffer's end, then one that
     * cannot fit: whatever the split, the line parses and says so. */
    log_configure(LOG_FORMAT_JSON, LOG_INFO);
    log_set_worker(12);
    char val[1100];
    for (size_t n = 850; n < 1050; n++) {
        memset(val, 'v', n);
        val[n] = '\0';
        capture_start();
        struct log_line l;
        log_begin(&l, LOG_INFO, "connect");
        log_str(&l, "a", val);
        log_str(&l, "b", "0123456789012345678901234567890123456789");
        log_int(&l, "c", 123456789);
        log_end(&l);
        char *out = capture_end();
        ck_assert_msg(count_char(out, '\n') == 1, "n=%zu: %s", n, out);
        json_error_t e;
        json_t *j = json_loadb(out, strlen(out) - 1, 0, &e);
        ck_assert_msg(j != NULL, "n=%zu: not JSON (%s): ...%s", n, e.text,
                      out + (strlen(out) > 60 ? strlen(out) - 60 : 0));
        /* Fields are either whole or absent; a line that lost any says so. */
        int whole = json_object_get(j, "c") != NULL;
        ck_assert_msg(whole || json_is_true(json_object_get(j, "truncated")),
                      "n=%zu: fields lost without \"truncated\":true: ...%s", n,
                      out + (strlen(out) > 60 ? strlen(out) - 60 : 0));
        if (json_object_get(j, "a"))
            ck_assert_str_eq(jstr(j, "a"), val);
        json_decref(j);
        free(out);
    }
}
END_TEST

START_TEST(text_format_truncated_line_is_marked)
{
    char big[2000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_configure(LOG_FORMAT_TEXT, LOG_INFO);
    log_set_worker(0);
    capture_start();
    struct log_line l;
    log_begin(&l, LOG_INFO, "error");
    log_str(&l, "conn", "0-1");
    log_str(&l, "message", big);
    log_end(&l);
    char *out = capture_end();
    ck_assert_int_eq(count_char(out, '\n'), 1);
    ck_assert_msg(matches(out, " conn=0-1 truncated=true\n$"), "%s", out);
    free(out);
}
END_TEST

static Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = unit_tcase(s, "json");
    tcase_add_test(tc, json_line_shape_of_a_worker_event);
    tcase_add_test(tc, json_line_of_the_master_names_the_process);
    tcase_add_test(tc, json_ts_is_now);
    tcase_add_test(tc, json_escapes_quotes_backslashes_newlines_and_controls);
    tcase_add_test(tc, json_escapes_event_name);
    tcase_add_test(tc, log_msg_message_with_newlines_is_one_line);

    tc = unit_tcase(s, "levels");
    tcase_add_test(tc, level_filtering);
    tcase_add_test(tc, level_and_format_names_parse);

    tc = unit_tcase(s, "text");
    tcase_add_test(tc, text_format_key_value);
    tcase_add_test(tc, text_format_never_writes_raw_newlines_or_controls);

    tc = unit_tcase(s, "truncation");
    tcase_add_test(tc, overlong_value_truncated_line_stays_valid_json);
    tcase_add_test(tc, overlong_escaped_message_truncated_stays_valid_json);
    tcase_add_test(tc, truncation_at_every_length_stays_valid_json);
    tcase_add_test(tc, text_format_truncated_line_is_marked);
    return s;
}

int main(void)
{
    return unit_run(log_suite());
}
