/*
 * Unit suite for shared/brokerurl.c: redis:// and redis-sentinel:// URLs
 * (hosts, ports, database, password, Sentinel lists and master name), what
 * is refused and why, and the `broker` label that never shows a password.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "brokerurl.h"
#include "unit.h"

START_TEST(plain_url)
{
    struct broker_url u;
    const char *why = NULL;
    ck_assert_int_eq(broker_url_parse("redis://:pw@10.0.0.1:6380/3", &u, &why), 0);
    ck_assert_str_eq(u.host, "10.0.0.1");
    ck_assert_int_eq(u.port, 6380);
    ck_assert_int_eq(u.db, 3);
    ck_assert_str_eq(u.password, "pw");
    ck_assert_int_eq(u.nsentinels, 0);
    ck_assert_int_eq(broker_url_parse("redis://redis-1", &u, &why), 0);
    ck_assert_int_eq(u.port, 6379);
    ck_assert_int_eq(u.db, 0);
}
END_TEST

START_TEST(sentinel_url)
{
    struct broker_url u;
    const char *why = NULL;
    ck_assert_int_eq(
        broker_url_parse("redis-sentinel://user:s3cret@s1:26379,s2,10.0.0.3:26400/ecg-master/5",
                         &u, &why), 0);
    ck_assert_int_eq(u.nsentinels, 3);
    ck_assert_str_eq(u.sentinel[0].host, "s1");
    ck_assert_int_eq(u.sentinel[0].port, 26379);
    ck_assert_str_eq(u.sentinel[1].host, "s2");
    ck_assert_int_eq(u.sentinel[1].port, 26379); /* Sentinel's default port */
    ck_assert_str_eq(u.sentinel[2].host, "10.0.0.3");
    ck_assert_int_eq(u.sentinel[2].port, 26400);
    ck_assert_str_eq(u.master_name, "ecg-master");
    ck_assert_int_eq(u.db, 5);
    ck_assert_str_eq(u.password, "s3cret");
    ck_assert_str_eq(u.host, ""); /* asked of the Sentinels at run time */
    ck_assert_int_eq(broker_url_parse("redis-sentinel://s1/m", &u, &why), 0);
    ck_assert_int_eq(u.db, 0);
    ck_assert_int_eq(broker_url_parse("redis-sentinel://s1/m/", &u, &why), 0);
}
END_TEST

START_TEST(bad_urls_say_why)
{
    static const char *const bad[][2] = {
        {"http://x", "redis:// or redis-sentinel://"},
        {"redis-sentinel://s1:26379", "master-name"},
        {"redis-sentinel://s1:26379/", "master name"},
        {"redis-sentinel:///m", "Sentinel address"},
        {"redis-sentinel://s1,,s2/m", "host"},
        {"redis-sentinel://s1:0/m", "port"},
        {"redis-sentinel://s1:2x/m", "port"},
        {"redis-sentinel://s1/m/16", "database"},
        {"redis-sentinel://s1/m/1/2", "database"},
        {"redis-sentinel://a,b,c,d,e,f,g,h,i/m", "at most 8"},
        {"redis-sentinel://s1/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "master name"},
        {"redis://h:70000/0", "port"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct broker_url u;
        const char *why = NULL;
        ck_assert_msg(broker_url_parse(bad[i][0], &u, &why) < 0, "%s accepted", bad[i][0]);
        ck_assert_msg(why && strstr(why, bad[i][1]), "%s: %s", bad[i][0], why ? why : "(null)");
    }
}
END_TEST

START_TEST(labels_never_show_the_password)
{
    char label[96];
    broker_url_label("redis://:pw@h:6380/2", label, sizeof(label));
    ck_assert_str_eq(label, "h:6380/2");
    broker_url_label("redis-sentinel://:pw@s1,s2/ecg/1", label, sizeof(label));
    ck_assert_str_eq(label, "sentinel:ecg/1");
    broker_url_label("nonsense", label, sizeof(label));
    ck_assert_str_eq(label, "invalid");
}
END_TEST

static Suite *brokerurl_suite(void)
{
    Suite *s = suite_create("brokerurl");
    TCase *tc = unit_tcase(s, "parse");
    tcase_add_test(tc, plain_url);
    tcase_add_test(tc, sentinel_url);
    tcase_add_test(tc, bad_urls_say_why);
    tcase_add_test(tc, labels_never_show_the_password);
    return s;
}

int main(void)
{
    return unit_run(brokerurl_suite());
}
