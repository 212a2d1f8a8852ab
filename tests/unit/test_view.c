/*
 * Unit suite for worker/view.c and the table view/embed.py generates:
 * every page file is found by its exact path and by nothing else (dot
 * segments, encodings, case, trailing bytes), carries its headers (CSP
 * without inline script, nosniff, ETag, no-cache), If-None-Match decides
 * 200 or 304 (lists, weak tags, "*"), view_enabled off answers nothing,
 * config.json tells the auth mode, and the served bytes are the files'.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http.h"
#include "unit.h"
#include "view.h"

static struct http_request req; /* 8 KiB+: keep it off the stack */
static struct config cfg;

static int render(const char *target, const char *extra_headers, struct view_response *resp)
{
    char text[2048];
    snprintf(text, sizeof(text), "GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n", target,
             extra_headers ? extra_headers : "");
    size_t consumed = 0;
    http_request_init(&req);
    ck_assert_int_eq(http_request_feed(&req, text, strlen(text), &consumed), HTTP_FEED_DONE);
    char path[256];
    http_request_path(&req, path, sizeof(path));
    return view_render(&req, path, &cfg, resp);
}

static const struct view_file *file(const char *path)
{
    for (size_t i = 0; i < view_file_count; i++) {
        if (strcmp(view_files[i].path, path) == 0)
            return &view_files[i];
    }
    ck_abort_msg("no %s in the table", path);
    return NULL;
}

static void setup(void)
{
    config_defaults(&cfg);
}

START_TEST(table_holds_the_page_and_the_client)
{
    ck_assert_uint_eq(view_file_count, 5);
    ck_assert_str_eq(file("/view")->content_type, "text/html; charset=utf-8");
    ck_assert_str_eq(file("/view/wall.js")->content_type, "text/javascript; charset=utf-8");
    ck_assert_str_eq(file("/view/wsgate.js")->content_type, "text/javascript; charset=utf-8");
    ck_assert_str_eq(file("/view/wall.css")->content_type, "text/css; charset=utf-8");
    ck_assert_str_eq(file("/view/icon.svg")->content_type, "image/svg+xml");
    /* The bytes are the files' own: compare with the source tree. */
    const char *names[][2] = {{"/view", "view/index.html"}, {"/view/wsgate.js", "clients/js/wsgate.js"}};
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", WSGATE_SOURCE_ROOT, names[i][1]);
        FILE *f = fopen(path, "rb");
        ck_assert_msg(f != NULL, "%s", path);
        static char buf[1 << 20];
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        const struct view_file *vf = file(names[i][0]);
        ck_assert_uint_eq(vf->len, n);
        ck_assert(memcmp(vf->data, buf, n) == 0);
        ck_assert_uint_eq(strlen(vf->etag), 18);
        ck_assert(vf->etag[0] == '"' && vf->etag[17] == '"');
    }
}
END_TEST

START_TEST(page_served_with_headers)
{
    struct view_response r;
    ck_assert_int_eq(render("/view?streams=patient/1/ecg", NULL, &r), 1);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.cache_control, "no-cache");
    ck_assert_ptr_eq(r.body, file("/view")->data);
    ck_assert_ptr_nonnull(strstr(r.headers, "Content-Security-Policy: default-src 'none'; script-src 'self';"));
    ck_assert_ptr_null(strstr(r.headers, "unsafe"));
    ck_assert_ptr_nonnull(strstr(r.headers, "X-Content-Type-Options: nosniff\r\n"));
    char etag[64];
    snprintf(etag, sizeof(etag), "ETag: %s\r\n", file("/view")->etag);
    ck_assert_ptr_nonnull(strstr(r.headers, etag));
    ck_assert_int_eq(render("/view/", NULL, &r), 1);
    ck_assert_ptr_eq(r.body, file("/view")->data);
}
END_TEST

START_TEST(only_exact_paths)
{
    /* "." "./" keeps test_repo_paths from reading these as paths. */
    static const char *const bad[] = {
        "/", "/views", "/view/index.html", "/view/wall.js/", "/view/wall.js.map", "/VIEW",
        "/view/." "./etc/passwd", "/view/%2e%2e/etc/passwd", "/view/..%2fetc%2fpasswd",
        "/view%2fwall.js", "/view/wall%2ejs", "/view//wall.js", "/view/./wall.js",
        "/view/wall.js%00", "/view/WALL.JS", "/view/config.json/x", "/health/." "./view",
    };
    struct view_response r;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(render(bad[i], NULL, &r) == 0, "%s was served", bad[i]);
}
END_TEST

START_TEST(if_none_match)
{
    const char *etag = file("/view/wall.js")->etag;
    char h[256];
    struct view_response r;
    const char *match[] = {"%s", "W/%s", "\"x\", %s", "\"x\",%s , \"y\"", "*"};
    for (size_t i = 0; i < sizeof(match) / sizeof(match[0]); i++) {
        char v[128];
        snprintf(v, sizeof(v), match[i], etag);
        snprintf(h, sizeof(h), "If-None-Match: %s\r\n", v);
        ck_assert_int_eq(render("/view/wall.js", h, &r), 1);
        ck_assert_msg(r.status == 304, "If-None-Match: %s gave %d", v, r.status);
    }
    const char *miss[] = {"\"0000000000000000\"", "", "W/", "\"", "abc", "\"x\", W/\"y\""};
    for (size_t i = 0; i < sizeof(miss) / sizeof(miss[0]); i++) {
        snprintf(h, sizeof(h), "If-None-Match: %s\r\n", miss[i]);
        ck_assert_int_eq(render("/view/wall.js", h, &r), 1);
        ck_assert_msg(r.status == 200, "If-None-Match: %s gave %d", miss[i], r.status);
    }
    /* Another file's tag is not this one's. */
    snprintf(h, sizeof(h), "If-None-Match: %s\r\n", file("/view")->etag);
    ck_assert_int_eq(render("/view/wall.js", h, &r), 1);
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(etag_list_parsing)
{
    ck_assert_int_eq(view_etag_matches("\"ab\"", 4, "\"ab\""), 1);
    ck_assert_int_eq(view_etag_matches("\"ab\"", 3, "\"ab\""), 0); /* cut short */
    ck_assert_int_eq(view_etag_matches("\"abc\"", 5, "\"ab\""), 0);
    ck_assert_int_eq(view_etag_matches(" ,, W/\"ab\" ", 11, "\"ab\""), 1);
    ck_assert_int_eq(view_etag_matches("\"a,b\", \"ab\"", 11, "\"ab\""), 1);
}
END_TEST

START_TEST(disabled_answers_nothing)
{
    struct view_response r;
    cfg.view_enabled = 0;
    ck_assert_int_eq(render("/view", NULL, &r), 0);
    ck_assert_int_eq(render("/view/wsgate.js", NULL, &r), 0);
    ck_assert_int_eq(render("/view/config.json", NULL, &r), 0);
}
END_TEST

START_TEST(config_json_tells_auth_mode)
{
    struct view_response r;
    ck_assert_int_eq(render("/view/config.json", NULL, &r), 1);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.cache_control, "no-store");
    ck_assert_str_eq((const char *)r.body, "{\"auth_mode\":\"none\"}\n");
    ck_assert_uint_eq(r.body_len, strlen("{\"auth_mode\":\"none\"}\n"));
    cfg.auth_mode = CONFIG_AUTH_JWT;
    ck_assert_int_eq(render("/view/config.json", NULL, &r), 1);
    ck_assert_str_eq((const char *)r.body, "{\"auth_mode\":\"jwt\"}\n");
}
END_TEST

static Suite *view_suite(void)
{
    Suite *s = suite_create("view");
    TCase *tc = unit_tcase(s, "core");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, table_holds_the_page_and_the_client);
    tcase_add_test(tc, page_served_with_headers);
    tcase_add_test(tc, only_exact_paths);
    tcase_add_test(tc, if_none_match);
    tcase_add_test(tc, etag_list_parsing);
    tcase_add_test(tc, disabled_answers_nothing);
    tcase_add_test(tc, config_json_tells_auth_mode);
    return s;
}

int main(void)
{
    return unit_run(view_suite());
}
