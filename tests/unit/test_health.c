/*
 * Unit suite for shared/health.c and shared/endpoints.c: the replica's
 * status judged from the segment (ok; degraded when a wanted worker is dead
 * or in crash-loop backoff; draining), the JSON of /health/detailed and its
 * HTTP status, and endpoints_render for /health, /health/detailed, /metrics
 * and paths that are not endpoints.
 */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "endpoints.h"
#include "health.h"
#include "metrics.h"
#include "segment.h"
#include "unit.h"
#include "wsgate-build.h"

/* A segment with `wanted` workers all running, created 5 s ago. */
static struct segment *healthy_segment(uint32_t wanted)
{
    struct segment *seg = calloc(1, sizeof(*seg));
    ck_assert_ptr_nonnull(seg);
    seg->magic = SEGMENT_MAGIC;
    seg->layout_version = SEGMENT_LAYOUT_VERSION;
    seg->worker_slots = SEGMENT_WORKER_SLOTS;
    seg->size = sizeof(*seg);
    seg->created_at_ms = clock_wall_ms() - 5000;
    atomic_store(&seg->master_pid, 1);
    struct config cfg;
    config_defaults(&cfg);
    cfg.max_connections = 250;
    snprintf(cfg.environment, sizeof(cfg.environment), "test");
    segment_publish_config(seg, &cfg);
    atomic_store(&seg->workers_wanted, wanted);
    for (uint32_t i = 0; i < wanted; i++) {
        struct segment_worker *w = &seg->worker[i];
        atomic_store(&w->pid, (int32_t)(1000 + i));
        atomic_store(&w->state, WORKER_RUNNING);
        atomic_store(&w->started_at_ms, 1700000000000 + i);
        atomic_store(&w->restarts, i);
        atomic_store(&w->config_generation, 1);
    }
    return seg;
}

static json_t *parse_json(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", e.text, text);
    return j;
}

static const char *jstr(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_string(v), "%s is not a string", key);
    return json_string_value(v);
}

static json_int_t jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_integer(v), "%s is not an integer", key);
    return json_integer_value(v);
}

/* ---- health_status ---- */

START_TEST(all_wanted_workers_running_is_ok)
{
    struct segment *seg = healthy_segment(4);
    const char *reason = "x";
    ck_assert_int_eq(health_status(seg, &reason), HEALTH_OK);
    ck_assert_ptr_null(reason);
    free(seg);
}
END_TEST

START_TEST(dead_wanted_worker_is_degraded)
{
    struct segment *seg = healthy_segment(4);
    atomic_store(&seg->worker[2].state, WORKER_DEAD);
    const char *reason = NULL;
    ck_assert_int_eq(health_status(seg, &reason), HEALTH_DEGRADED);
    ck_assert_ptr_nonnull(reason);
    free(seg);
}
END_TEST

START_TEST(wanted_slot_never_started_is_degraded)
{
    struct segment *seg = healthy_segment(2);
    atomic_store(&seg->workers_wanted, 3); /* slot 2 still empty */
    const char *reason = NULL;
    ck_assert_int_eq(health_status(seg, &reason), HEALTH_DEGRADED);
    ck_assert_ptr_nonnull(reason);
    free(seg);
}
END_TEST

START_TEST(worker_in_backoff_is_degraded)
{
    struct segment *seg = healthy_segment(2);
    atomic_store(&seg->worker[1].state, WORKER_STARTING);
    atomic_store(&seg->worker[1].backoff_until_ms, clock_wall_ms() + 10000);
    const char *reason = NULL;
    ck_assert_int_eq(health_status(seg, &reason), HEALTH_DEGRADED);
    ck_assert_ptr_nonnull(reason);
    ck_assert_ptr_nonnull(strstr(reason, "backoff"));
    free(seg);
}
END_TEST

START_TEST(no_worker_running_is_degraded)
{
    struct segment *seg = healthy_segment(0);
    const char *reason = NULL;
    ck_assert_int_eq(health_status(seg, &reason), HEALTH_DEGRADED);
    ck_assert_ptr_nonnull(reason);
    free(seg);
}
END_TEST

START_TEST(dead_worker_outside_wanted_is_ignored)
{
    /* A worker retired by a reload that lowered `workers`. */
    struct segment *seg = healthy_segment(2);
    atomic_store(&seg->worker[2].state, WORKER_DEAD);
    const char *reason = "x";
    ck_assert_int_eq(health_status(seg, &reason), HEALTH_OK);
    ck_assert_ptr_null(reason);
    free(seg);
}
END_TEST

START_TEST(draining_wins_over_everything)
{
    struct segment *seg = healthy_segment(2);
    atomic_store(&seg->worker[1].state, WORKER_DEAD);
    atomic_store(&seg->draining, 1);
    const char *reason = NULL;
    ck_assert_int_eq(health_status(seg, &reason), HEALTH_DRAINING);
    ck_assert_ptr_nonnull(reason);
    free(seg);
}
END_TEST

/* ---- /health/detailed ---- */

START_TEST(detailed_ok_is_200_with_every_field)
{
    struct segment *seg = healthy_segment(2);
    atomic_store(&seg->worker[0].connections, 3);
    atomic_store(&seg->worker[1].connections, 4);
    atomic_store(&seg->connections, 7);
    struct textbuf b;
    textbuf_init(&b, 0);
    ck_assert_int_eq(health_render_detailed(seg, &b), 200);
    ck_assert_int_eq(b.failed, 0);
    ck_assert_int_eq(b.data[b.len - 1], '\n');
    json_t *j = parse_json(b.data);

    ck_assert_str_eq(jstr(j, "status"), "ok");
    ck_assert_ptr_null(json_object_get(j, "reason"));
    ck_assert_str_eq(jstr(j, "version"), WSGATE_VERSION);
    json_t *uptime = json_object_get(j, "uptime_s");
    ck_assert(json_is_number(uptime));
    ck_assert_double_ge(json_number_value(uptime), 4.9);
    ck_assert_double_le(json_number_value(uptime), 60);
    ck_assert_int_eq(jint(j, "config_generation"), 1);

    json_t *workers = json_object_get(j, "workers");
    ck_assert(json_is_array(workers));
    ck_assert_uint_eq(json_array_size(workers), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *w = json_array_get(workers, i);
        ck_assert_int_eq(jint(w, "pid"), 1000 + (json_int_t)i);
        ck_assert_str_eq(jstr(w, "state"), "running");
        ck_assert_int_eq(jint(w, "connections"), 3 + (json_int_t)i);
        ck_assert_int_eq(jint(w, "restarts"), (json_int_t)i);
        ck_assert_int_eq(jint(w, "started_at"), 1700000000000 + (json_int_t)i);
    }

    json_t *conns = json_object_get(j, "connections");
    ck_assert(json_is_object(conns));
    ck_assert_int_eq(jint(conns, "active"), 7);
    ck_assert_int_eq(jint(conns, "limit"), 250);
    json_decref(j);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(detailed_degraded_is_503_with_reason_and_dead_worker)
{
    struct segment *seg = healthy_segment(3);
    atomic_store(&seg->worker[1].state, WORKER_DEAD);
    atomic_store(&seg->worker[1].backoff_until_ms, 1700000009999);
    struct textbuf b;
    textbuf_init(&b, 0);
    ck_assert_int_eq(health_render_detailed(seg, &b), 503);
    json_t *j = parse_json(b.data);
    ck_assert_str_eq(jstr(j, "status"), "degraded");
    ck_assert_ptr_nonnull(json_object_get(j, "reason"));
    json_t *workers = json_object_get(j, "workers");
    ck_assert_uint_eq(json_array_size(workers), 3);
    json_t *w1 = json_array_get(workers, 1);
    ck_assert_str_eq(jstr(w1, "state"), "dead");
    ck_assert_int_eq(jint(w1, "pid"), 1001);
    json_decref(j);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(detailed_draining_is_503)
{
    struct segment *seg = healthy_segment(1);
    atomic_store(&seg->draining, 1);
    atomic_store(&seg->worker[0].state, WORKER_DRAINING);
    struct textbuf b;
    textbuf_init(&b, 0);
    ck_assert_int_eq(health_render_detailed(seg, &b), 503);
    json_t *j = parse_json(b.data);
    ck_assert_str_eq(jstr(j, "status"), "draining");
    ck_assert_str_eq(jstr(json_array_get(json_object_get(j, "workers"), 0), "state"), "draining");
    json_decref(j);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(detailed_lists_only_slots_in_use)
{
    struct segment *seg = healthy_segment(1);
    atomic_store(&seg->worker[40].state, WORKER_STARTING);
    atomic_store(&seg->worker[40].pid, 4040);
    struct textbuf b;
    textbuf_init(&b, 0);
    health_render_detailed(seg, &b);
    json_t *j = parse_json(b.data);
    json_t *workers = json_object_get(j, "workers");
    ck_assert_uint_eq(json_array_size(workers), 2);
    ck_assert_int_eq(jint(json_array_get(workers, 1), "pid"), 4040);
    ck_assert_str_eq(jstr(json_array_get(workers, 1), "state"), "starting");
    json_decref(j);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(detailed_config_generation_follows_publications)
{
    struct segment *seg = healthy_segment(1);
    struct config cfg;
    segment_read_config(seg, &cfg);
    cfg.max_connections = 99;
    segment_publish_config(seg, &cfg);
    segment_publish_config(seg, &cfg);
    struct textbuf b;
    textbuf_init(&b, 0);
    health_render_detailed(seg, &b);
    json_t *j = parse_json(b.data);
    ck_assert_int_eq(jint(j, "config_generation"), 3);
    ck_assert_int_eq(jint(json_object_get(j, "connections"), "limit"), 99);
    json_decref(j);
    textbuf_free(&b);
    free(seg);
}
END_TEST

/* ---- endpoints_render ---- */

START_TEST(endpoint_health_ok_and_degraded_are_200)
{
    struct segment *seg = healthy_segment(2);
    struct endpoint_response r;
    ck_assert_int_eq(endpoints_render(seg, "/health", 0, &r), 1);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.content_type, "application/json");
    ck_assert_str_eq(r.body.data, "{\"status\":\"ok\"}\n");
    textbuf_free(&r.body);

    /* /health is the probe: a replica with a worker down still serves. */
    atomic_store(&seg->worker[1].state, WORKER_DEAD);
    ck_assert_int_eq(endpoints_render(seg, "/health", 0, &r), 1);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body.data, "{\"status\":\"ok\"}\n");
    textbuf_free(&r.body);
    free(seg);
}
END_TEST

START_TEST(endpoint_health_draining_is_503)
{
    struct segment *seg = healthy_segment(1);
    struct endpoint_response r;
    atomic_store(&seg->draining, 1);
    ck_assert_int_eq(endpoints_render(seg, "/health", 0, &r), 1);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.body.data, "{\"status\":\"draining\"}\n");
    textbuf_free(&r.body);
    free(seg);
}
END_TEST

START_TEST(endpoint_health_self_draining_is_503)
{
    struct segment *seg = healthy_segment(1);
    struct endpoint_response r;
    ck_assert_int_eq(endpoints_render(seg, "/health", 1, &r), 1);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.body.data, "{\"status\":\"draining\"}\n");
    textbuf_free(&r.body);
    free(seg);
}
END_TEST

START_TEST(endpoint_health_detailed_matches_renderer)
{
    struct segment *seg = healthy_segment(2);
    atomic_store(&seg->worker[0].state, WORKER_DEAD);
    struct endpoint_response r;
    ck_assert_int_eq(endpoints_render(seg, "/health/detailed", 0, &r), 1);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.content_type, "application/json");
    json_t *j = parse_json(r.body.data);
    ck_assert_str_eq(jstr(j, "status"), "degraded");
    ck_assert_uint_eq(json_array_size(json_object_get(j, "workers")), 2);
    json_decref(j);
    textbuf_free(&r.body);
    free(seg);
}
END_TEST

START_TEST(endpoint_metrics_renders_exposition_with_master_process)
{
    struct segment *seg = healthy_segment(1);
    atomic_store(&seg->master_pid, (int32_t)getpid());
    atomic_store(&seg->worker[0].connections, 6);
    struct endpoint_response r;
    ck_assert_int_eq(endpoints_render(seg, "/metrics", 0, &r), 1);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.content_type, METRICS_CONTENT_TYPE);
    ck_assert_str_eq(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    ck_assert_ptr_nonnull(
        strstr(r.body.data, "\nwebsocket_connections_active{environment=\"test\",worker=\"0\"} 6\n"));
    ck_assert_ptr_nonnull(strstr(r.body.data, "\n# TYPE process_open_fds gauge\n"));
    ck_assert_ptr_nonnull(strstr(r.body.data, "\nprocess_max_fds{environment=\"test\"} "));

    /* Identical to metrics_render but for the process block. */
    struct textbuf direct;
    textbuf_init(&direct, 0);
    metrics_render(seg, NULL, &direct);
    ck_assert_int_eq(strncmp(r.body.data, direct.data, direct.len), 0);
    ck_assert_int_eq(strncmp(r.body.data + direct.len, "# HELP process_", 15), 0);
    textbuf_free(&direct);
    textbuf_free(&r.body);
    free(seg);
}
END_TEST

START_TEST(endpoint_metrics_without_readable_master_omits_process)
{
    struct segment *seg = healthy_segment(1);
    atomic_store(&seg->master_pid, 0x7ffffff0); /* no such process */
    struct endpoint_response r;
    ck_assert_int_eq(endpoints_render(seg, "/metrics", 0, &r), 1);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(strstr(r.body.data, "process_"));
    ck_assert_ptr_nonnull(strstr(r.body.data, "websocket_max_connections{environment=\"test\"} 250\n"));
    textbuf_free(&r.body);
    free(seg);
}
END_TEST

START_TEST(unknown_paths_are_not_endpoints)
{
    static const char *const paths[] = {"/",         "/ws",       "/nope",    "/health/",
                                        "/healthz",  "/metrics/", "/Metrics", "/health/detailed/x",
                                        "",          "/metricsx"};
    struct segment *seg = healthy_segment(1);
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct endpoint_response r;
        memset(&r, 0x5a, sizeof(r));
        ck_assert_msg(endpoints_render(seg, paths[i], 0, &r) == 0, "%s served", paths[i]);
        ck_assert_int_eq(r.status, 0);
        ck_assert_ptr_null(r.body.data);
    }
    free(seg);
}
END_TEST

static Suite *health_suite(void)
{
    Suite *s = suite_create("health");
    TCase *tc = unit_tcase(s, "status");
    tcase_add_test(tc, all_wanted_workers_running_is_ok);
    tcase_add_test(tc, dead_wanted_worker_is_degraded);
    tcase_add_test(tc, wanted_slot_never_started_is_degraded);
    tcase_add_test(tc, worker_in_backoff_is_degraded);
    tcase_add_test(tc, no_worker_running_is_degraded);
    tcase_add_test(tc, dead_worker_outside_wanted_is_ignored);
    tcase_add_test(tc, draining_wins_over_everything);

    tc = unit_tcase(s, "detailed");
    tcase_add_test(tc, detailed_ok_is_200_with_every_field);
    tcase_add_test(tc, detailed_degraded_is_503_with_reason_and_dead_worker);
    tcase_add_test(tc, detailed_draining_is_503);
    tcase_add_test(tc, detailed_lists_only_slots_in_use);
    tcase_add_test(tc, detailed_config_generation_follows_publications);

    tc = unit_tcase(s, "endpoints");
    tcase_add_test(tc, endpoint_health_ok_and_degraded_are_200);
    tcase_add_test(tc, endpoint_health_draining_is_503);
    tcase_add_test(tc, endpoint_health_self_draining_is_503);
    tcase_add_test(tc, endpoint_health_detailed_matches_renderer);
    tcase_add_test(tc, endpoint_metrics_renders_exposition_with_master_process);
    tcase_add_test(tc, endpoint_metrics_without_readable_master_omits_process);
    tcase_add_test(tc, unknown_paths_are_not_endpoints);
    return s;
}

int main(void)
{
    return unit_run(health_suite());
}
