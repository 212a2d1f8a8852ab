#include "health.h"

#include <jansson.h>
#include <string.h>

#include "clock.h"
#include "brokerurl.h"
#include "segment.h"
#include "streamlog.h"
#include "wsgate-build.h"

enum health_status health_status(const struct segment *seg, const char **reason)
{
    *reason = NULL;
    if (atomic_load(&seg->draining)) {
        *reason = "shutting down";
        return HEALTH_DRAINING;
    }
    uint32_t wanted = atomic_load(&seg->workers_wanted);
    int running = 0, dead = 0, backoff = 0;
    for (uint32_t i = 0; i < wanted && i < SEGMENT_WORKER_SLOTS; i++) {
        const struct segment_worker *w = &seg->worker[i];
        uint32_t st = atomic_load(&w->state);
        if (st == WORKER_RUNNING)
            running++;
        else if (st == WORKER_DEAD || st == WORKER_EMPTY)
            dead++;
        if (atomic_load(&w->backoff_until_ms) > 0)
            backoff++;
    }
    if (backoff) {
        *reason = "worker crash loop: respawning with backoff";
        return HEALTH_DEGRADED;
    }
    if (dead) {
        *reason = "worker down";
        return HEALTH_DEGRADED;
    }
    if (running == 0) {
        *reason = "no worker running";
        return HEALTH_DEGRADED;
    }
    struct config cfg;
    segment_read_config(seg, &cfg);
    for (int b = 0; b < cfg.broker_count; b++) {
        if (!segment_broker_up(seg, b)) {
            *reason = "cluster broker unreachable: publishes to its streams are refused";
            return HEALTH_DEGRADED;
        }
        if (!segment_broker_sub_up(seg, b)) {
            *reason = "cluster broker subscription down: subscribers to its streams receive "
                      "nothing new until it is replaced";
            return HEALTH_DEGRADED;
        }
    }
    return HEALTH_OK;
}

int health_render_detailed(const struct segment *seg, struct textbuf *out)
{
    static const char *const names[] = {"ok", "degraded", "draining"};
    const char *reason;
    enum health_status st = health_status(seg, &reason);
    struct config cfg;
    uint64_t generation = segment_read_config(seg, &cfg);
    int64_t now = clock_wall_ms();

    json_t *root = json_object();
    json_object_set_new(root, "status", json_string(names[st]));
    if (reason)
        json_object_set_new(root, "reason", json_string(reason));
    json_object_set_new(root, "version", json_string(WSGATE_VERSION));
    json_object_set_new(root, "environment", json_string(cfg.environment));
    /* `uptime` is PROTOCOL.md's name; `uptime_s` stays for existing readers. */
    double uptime = (double)(now - seg->created_at_ms) / 1000.0;
    json_object_set_new(root, "uptime", json_real(uptime));
    json_object_set_new(root, "uptime_s", json_real(uptime));
    json_object_set_new(root, "config_generation", json_integer((json_int_t)generation));
    json_object_set_new(root, "master_pid", json_integer(atomic_load(&seg->master_pid)));

    json_t *workers = json_array();
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        const struct segment_worker *w = &seg->worker[i];
        uint32_t state = atomic_load(&w->state);
        if (state == WORKER_EMPTY)
            continue;
        json_t *jw = json_object();
        json_object_set_new(jw, "slot", json_integer(i));
        json_object_set_new(jw, "pid", json_integer(atomic_load(&w->pid)));
        json_object_set_new(jw, "state", json_string(segment_worker_state_name(state)));
        json_object_set_new(jw, "connections", json_integer(atomic_load(&w->connections)));
        json_object_set_new(jw, "restarts", json_integer(atomic_load(&w->restarts)));
        json_object_set_new(jw, "started_at", json_integer(atomic_load(&w->started_at_ms)));
        json_object_set_new(jw, "config_generation",
                            json_integer((json_int_t)atomic_load(&w->config_generation)));
        int64_t backoff = atomic_load(&w->backoff_until_ms);
        if (backoff > 0)
            json_object_set_new(jw, "backoff_until", json_integer(backoff));
        json_array_append_new(workers, jw);
    }
    json_object_set_new(root, "workers", workers);

    json_t *conns = json_object();
    json_object_set_new(conns, "active", json_integer(atomic_load(&seg->connections)));
    json_object_set_new(conns, "limit", json_integer(cfg.max_connections));
    json_object_set_new(root, "connections", conns);

    /* Heartbeat round trips since start, from the RTT histogram (as
     * histogram_quantile computes them); null until a pong came back. */
    struct segment_totals t;
    segment_sum_counters(seg, &t);
    json_t *rtt = json_object();
    uint64_t samples = segment_histogram_count(t.rtt_bucket);
    json_object_set_new(rtt, "p50", samples ? json_real(segment_histogram_quantile(t.rtt_bucket, 0.5))
                                            : json_null());
    json_object_set_new(rtt, "p99", samples ? json_real(segment_histogram_quantile(t.rtt_bucket, 0.99))
                                            : json_null());
    json_object_set_new(rtt, "samples", json_integer((json_int_t)samples));
    json_object_set_new(root, "rtt", rtt);

    json_t *streams = json_object();
    const struct streamlog *sl = segment_streams(seg);
    json_object_set_new(streams, "active", json_integer(sl ? atomic_load(&sl->active) : 0));
    json_object_set_new(streams, "limit", json_integer(sl ? sl->max_streams : 0));
    json_object_set_new(streams, "stream_memory", json_integer((json_int_t)seg->streams_bytes));
    uint64_t free_bytes = sl ? (uint64_t)streamlog_free_chunks(sl) * STREAMLOG_CHUNK : 0;
    uint64_t pool_bytes = sl ? (uint64_t)sl->chunk_count * STREAMLOG_CHUNK : 0;
    json_object_set_new(streams, "memory_used_bytes", json_integer((json_int_t)(pool_bytes - free_bytes)));
    json_object_set_new(streams, "memory_free_bytes", json_integer((json_int_t)free_bytes));
    json_object_set_new(streams, "cursor_releases",
                        json_integer(sl ? (json_int_t)atomic_load(&sl->cursor_releases) : 0));
    json_object_set_new(streams, "history_size", json_integer(cfg.history_size));
    json_object_set_new(root, "streams", streams);

    if (cfg.broker_count == 0) {
        json_object_set_new(root, "broker", json_string("none"));
    } else {
        json_t *brokers = json_array();
        for (int b = 0; b < cfg.broker_count; b++) {
            char label[96];
            broker_url_label(cfg.broker[b], label, sizeof(label));
            json_t *jb = json_object();
            json_object_set_new(jb, "broker", json_string(label));
            int cmd = segment_broker_up(seg, b), subscription = segment_broker_sub_up(seg, b);
            json_object_set_new(jb, "up", json_boolean(cmd && subscription));
            json_object_set_new(jb, "commands_up", json_boolean(cmd));
            json_object_set_new(jb, "subscription_up", json_boolean(subscription));
            json_array_append_new(brokers, jb);
        }
        json_object_set_new(root, "broker", brokers);
    }

    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text) {
        textbuf_appends(out, text);
        textbuf_append(out, "\n", 1);
        free(text);
    } else {
        out->failed = 1;
    }
    return st == HEALTH_OK ? 200 : 503;
}
