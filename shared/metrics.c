#include "metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "brokerurl.h"
#include "segment.h"
#include "streamlog.h"

static void metrics_header(struct textbuf *out, const char *name, const char *type,
                           const char *help)
{
    textbuf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_sample(struct textbuf *out, const char *name, const char *env,
                           const char *label, const char *value, uint64_t n)
{
    if (label)
        textbuf_appendf(out, "%s{environment=\"%s\",%s=\"%s\"} %llu\n", name, env, label, value,
                       (unsigned long long)n);
    else
        textbuf_appendf(out, "%s{environment=\"%s\"} %llu\n", name, env, (unsigned long long)n);
}

static void metrics_counter(struct textbuf *out, const char *name, const char *help,
                            const char *env, uint64_t n)
{
    metrics_header(out, name, "counter", help);
    metrics_sample(out, name, env, NULL, NULL, n);
}

static void metrics_gauge_double(struct textbuf *out, const char *name, const char *type,
                                 const char *help, const char *env, double v)
{
    metrics_header(out, name, type, help);
    textbuf_appendf(out, "%s{environment=\"%s\"} %.17g\n", name, env, v);
}

/* One histogram's samples; `labels` is extra `name="value",` text or "". */
static void metrics_histogram(struct textbuf *out, const char *name, const char *env,
                              const char *labels, const uint64_t *buckets, uint64_t sum_ns)
{
    uint64_t cumulative = 0;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++) {
        cumulative += buckets[i];
        char le[32];
        if (i == SEGMENT_LATENCY_BUCKETS - 1)
            snprintf(le, sizeof(le), "+Inf");
        else
            snprintf(le, sizeof(le), "%g", segment_latency_bounds[i]);
        textbuf_appendf(out, "%s_bucket{environment=\"%s\",%sle=\"%s\"} %llu\n", name, env,
                        labels, le, (unsigned long long)cumulative);
    }
    char lab[160];
    size_t n = strlen(labels);
    /* Drop the trailing comma for _sum and _count. */
    snprintf(lab, sizeof(lab), "%s%.*s", n ? "," : "", n ? (int)n - 1 : 0, labels);
    textbuf_appendf(out, "%s_sum{environment=\"%s\"%s} %.9f\n", name, env, lab,
                    (double)sum_ns / 1e9);
    /* _count equals the +Inf bucket by construction (same snapshot). */
    textbuf_appendf(out, "%s_count{environment=\"%s\"%s} %llu\n", name, env, lab,
                    (unsigned long long)cumulative);
}

static void metrics_latency(struct textbuf *out, const char *env, const struct segment_totals *t)
{
    const char *name = "websocket_message_latency_seconds";
    metrics_header(out, name, "histogram",
                   "Time from a stream message entering the gateway (its publish's last frame "
                   "received) until its bytes are handed to the kernel, once per subscriber it "
                   "is delivered to live.");
    metrics_histogram(out, name, env, "", t->latency_bucket, t->latency_sum_ns);

    name = "websocket_request_duration_seconds";
    metrics_header(out, name, "histogram",
                   "Time from a client request received until its reply (pong, subscribed, "
                   "unsubscribed, ack, authenticated, error) is handed to the kernel, by "
                   "request type.");
    for (int r = 0; r < REQUEST_TYPE_COUNT; r++) {
        char labels[48];
        snprintf(labels, sizeof(labels), "type=\"%s\",", segment_request_type_name(r));
        metrics_histogram(out, name, env, labels, t->request_bucket[r], t->request_sum_ns[r]);
    }

    name = "websocket_client_rtt_seconds";
    metrics_header(out, name, "histogram",
                   "Round trip of the heartbeat: from a server ping queued for a client until "
                   "its pong (same payload) is read, one sample per pong.");
    metrics_histogram(out, name, env, "", t->rtt_bucket, t->rtt_sum_ns);
}

/* Cluster mode: one set of series per configured broker, labelled with
 * its host:port/db or sentinel:name/db (never its password). Its command
 * side is up when every running worker has a command connection to the
 * master; its subscription side when every worker's pub/sub connection
 * answers its pings: they fail apart, and both matter. */
static void metrics_brokers(struct textbuf *out, const char *env, const struct segment *seg,
                            const struct config *cfg, const struct segment_totals *t)
{
    metrics_header(out, "websocket_broker_up", "gauge",
                   "1 when every running worker's connection of this kind (command: to the "
                   "master, for publishes and reads; subscription: pub/sub, answering its "
                   "pings) to this cluster broker is up.");
    for (int b = 0; b < cfg->broker_count; b++) {
        char label[96];
        broker_url_label(cfg->broker[b], label, sizeof(label));
        textbuf_appendf(out,
                        "websocket_broker_up{environment=\"%s\",broker=\"%s\","
                        "connection=\"command\"} %d\n"
                        "websocket_broker_up{environment=\"%s\",broker=\"%s\","
                        "connection=\"subscription\"} %d\n",
                        env, label, segment_broker_up(seg, b), env, label,
                        segment_broker_sub_up(seg, b));
    }
    metrics_header(out, "websocket_broker_latency_seconds", "histogram",
                   "Round trip of a publish to the cluster broker (store, sequence, announce; with "
                   "broker_replicas_ack, until WAIT confirms).");
    for (int b = 0; b < cfg->broker_count; b++) {
        char label[96], labels[128];
        broker_url_label(cfg->broker[b], label, sizeof(label));
        snprintf(labels, sizeof(labels), "broker=\"%s\",", label);
        metrics_histogram(out, "websocket_broker_latency_seconds", env, labels,
                          t->broker[b].latency_bucket, t->broker[b].latency_sum_ns);
    }
    metrics_header(out, "websocket_broker_errors_total", "counter",
                   "Cluster broker failures: connect (lost or refused), timeout (pool_timeout), "
                   "command (Redis refused), replicas (WAIT saw too few replicas), "
                   "subscription (pub/sub connection silent, replaced).");
    for (int b = 0; b < cfg->broker_count; b++) {
        char label[96];
        broker_url_label(cfg->broker[b], label, sizeof(label));
        for (int e = 0; e < BROKER_ERROR_TYPE_COUNT; e++)
            textbuf_appendf(out,
                            "websocket_broker_errors_total{environment=\"%s\",broker=\"%s\","
                            "error_type=\"%s\"} %llu\n",
                            env, label, segment_broker_error_name(e),
                            (unsigned long long)t->broker[b].errors[e]);
    }
    metrics_header(out, "websocket_broker_pool_connections", "gauge",
                   "Command connections to the cluster broker, by state (in_use, idle).");
    for (int b = 0; b < cfg->broker_count; b++) {
        char label[96];
        broker_url_label(cfg->broker[b], label, sizeof(label));
        uint64_t in_use = 0, idle = 0;
        for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
            in_use += atomic_load(&seg->worker[i].broker[b].pool_in_use);
            idle += atomic_load(&seg->worker[i].broker[b].pool_idle);
        }
        textbuf_appendf(out,
                        "websocket_broker_pool_connections{environment=\"%s\",broker=\"%s\","
                        "state=\"in_use\"} %llu\n"
                        "websocket_broker_pool_connections{environment=\"%s\",broker=\"%s\","
                        "state=\"idle\"} %llu\n",
                        env, label, (unsigned long long)in_use, env, label,
                        (unsigned long long)idle);
    }
}

static void metrics_process(struct textbuf *out, const char *env, const struct procstat *p)
{
    metrics_gauge_double(out, "process_cpu_seconds_total", "counter",
                         "Total user and system CPU time spent by the master in seconds.", env,
                         p->cpu_seconds);
    metrics_gauge_double(out, "process_resident_memory_bytes", "gauge",
                         "Resident memory size of the master in bytes.", env, p->resident_bytes);
    metrics_gauge_double(out, "process_virtual_memory_bytes", "gauge",
                         "Virtual memory size of the master in bytes.", env, p->virtual_bytes);
    metrics_gauge_double(out, "process_open_fds", "gauge",
                         "Number of open file descriptors of the master.", env, p->open_fds);
    metrics_gauge_double(out, "process_max_fds", "gauge",
                         "Maximum number of open file descriptors of the master.", env,
                         p->max_fds);
    metrics_gauge_double(out, "process_start_time_seconds", "gauge",
                         "Start time of the master since unix epoch in seconds.", env,
                         p->start_time_seconds);
}

/* A gauge with one sample per worker slot in use, read from the int64
 * field at `field` of each slot (negative values, a counter briefly
 * behind, show as 0); a lone worker="0" sample before any worker ran, so
 * the series exists from the first scrape. */
static void metrics_per_worker(struct textbuf *out, const char *env, const struct segment *seg,
                               const char *name, const char *help, size_t field)
{
    metrics_header(out, name, "gauge", help);
    int any = 0;
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        const struct segment_worker *w = &seg->worker[i];
        uint32_t state = atomic_load_explicit(&w->state, memory_order_relaxed);
        if (state == WORKER_EMPTY || state >= WORKER_STATE_COUNT)
            continue;
        char slot[16];
        snprintf(slot, sizeof(slot), "%d", i);
        const _Atomic int64_t *v = (const _Atomic int64_t *)((const char *)w + field);
        int64_t n = atomic_load_explicit(v, memory_order_relaxed);
        metrics_sample(out, name, env, "worker", slot, n > 0 ? (uint64_t)n : 0);
        any = 1;
    }
    if (!any)
        metrics_sample(out, name, env, "worker", "0", 0);
}

void metrics_render(const struct segment *seg, const struct procstat *proc, struct textbuf *out)
{
    char env[CONFIG_STR_MAX];
    struct segment_totals t;
    struct config cfg;
    segment_read_config(seg, &cfg);
    snprintf(env, sizeof(env), "%s", cfg.environment);
    segment_sum_counters(seg, &t);

    uint32_t states[WORKER_STATE_COUNT] = {0};
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        uint32_t state = atomic_load_explicit(&seg->worker[i].state, memory_order_relaxed);
        if (state != WORKER_EMPTY && state < WORKER_STATE_COUNT)
            states[state]++;
    }
    metrics_per_worker(out, env, seg, "websocket_connections_active",
                       "Open WebSocket connections, per worker slot.",
                       offsetof(struct segment_worker, connections));
    metrics_per_worker(out, env, seg, "websocket_queued_frame_bytes",
                       "Memory held by message frames waiting in send queues, per worker slot "
                       "(a frame shared by many subscribers counts once).",
                       offsetof(struct segment_worker, queued_frame_bytes));
    const char *name;

    metrics_counter(out, "websocket_connections_total",
                    "WebSocket connections accepted (upgraded) since start.", env,
                    t.connections_total);

    name = "websocket_disconnections_total";
    metrics_header(out, name, "counter", "WebSocket connections closed, by reason.");
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        metrics_sample(out, name, env, "reason", segment_disconnect_reason_name(i),
                       t.disconnections[i]);

    name = "websocket_connection_errors_total";
    metrics_header(out, name, "counter",
                   "Connections refused or failed before becoming a WebSocket, by type.");
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        metrics_sample(out, name, env, "error_type", segment_connection_error_name(i),
                       t.connection_errors[i]);

    name = "websocket_messages_refused_total";
    metrics_header(out, name, "counter",
                   "Client requests answered with an error message (connection kept), by code.");
    for (int i = 0; i < REFUSED_CODE_COUNT; i++)
        metrics_sample(out, name, env, "code", segment_refusal_name(i), t.messages_refused[i]);

    metrics_latency(out, env, &t);

    metrics_counter(out, "websocket_messages_received_total",
                    "WebSocket data messages received from clients.", env, t.messages_received);
    metrics_counter(out, "websocket_messages_sent_total",
                    "WebSocket data messages sent to clients.", env, t.messages_sent);
    metrics_counter(out, "websocket_bytes_received_total",
                    "Bytes received on WebSocket connections (frames included).", env,
                    t.bytes_received);
    metrics_counter(out, "websocket_bytes_sent_total",
                    "Bytes sent on WebSocket connections (frames included).", env, t.bytes_sent);

    /* before/after of the same direction give the compression ratio; "out"
     * counts each delivery to a connection that negotiated permessage-deflate
     * (the deflate itself runs once per message per worker). */
    name = "websocket_compression_bytes_total";
    metrics_header(out, name, "counter",
                   "Payload bytes of messages on permessage-deflate connections, by direction "
                   "(in, out) and stage (before: uncompressed, after: on the wire).");
    static const char *const dirs[2] = {"in", "out"};
    static const char *const stages[2] = {"before", "after"};
    for (int d = 0; d < 2; d++)
        for (int st = 0; st < 2; st++)
            textbuf_appendf(out, "%s{environment=\"%s\",direction=\"%s\",stage=\"%s\"} %llu\n",
                            name, env, dirs[d], stages[st],
                            (unsigned long long)t.compression_bytes[d][st]);

    name = "websocket_workers";
    metrics_header(out, name, "gauge", "Worker processes, by state.");
    for (int s = WORKER_STARTING; s < WORKER_STATE_COUNT; s++)
        metrics_sample(out, name, env, "state", segment_worker_state_name(s), states[s]);

    metrics_counter(out, "websocket_worker_restarts_total",
                    "Workers respawned after exiting unexpectedly.", env,
                    atomic_load(&seg->worker_restarts));

    name = "websocket_config_reloads_total";
    metrics_header(out, name, "counter", "Configuration reloads, by result.");
    metrics_sample(out, name, env, "result", "success", atomic_load(&seg->config_reloads_success));
    metrics_sample(out, name, env, "result", "failure", atomic_load(&seg->config_reloads_failure));

    /* Not in the original design's table (docs/ARCHITECTURE.md, Metrics): dashboards annotate config changes with it
     * (a reload that changed nothing still bumps it). */
    metrics_header(out, "websocket_config_generation", "gauge",
                   "Configuration generation in force (1 at start, +1 per successful reload).");
    metrics_sample(out, "websocket_config_generation", env, NULL, NULL,
                   atomic_load(&seg->config_generation));

    metrics_header(out, "websocket_streams_active", "gauge", "Streams currently held.");
    const struct streamlog *sl = segment_streams(seg);
    metrics_sample(out, "websocket_streams_active", env, NULL, NULL,
                   sl ? atomic_load(&sl->active) : 0);

    /* The stream pool: "used" holds unread messages and history; when
     * "free" reaches 0, history is given up first, then stuck workers'
     * cursors (websocket_stream_cursor_releases_total). */
    name = "websocket_stream_memory_bytes";
    metrics_header(out, name, "gauge", "Stream memory pool (stream_memory), by state.");
    uint64_t pool = sl ? (uint64_t)sl->chunk_count * STREAMLOG_CHUNK : 0;
    uint64_t pool_free = sl ? (uint64_t)streamlog_free_chunks(sl) * STREAMLOG_CHUNK : 0;
    metrics_sample(out, name, env, "state", "used", pool - pool_free);
    metrics_sample(out, name, env, "state", "free", pool_free);
    metrics_counter(out, "websocket_stream_cursor_releases_total",
                    "Times a worker that made no progress for send_timeout had its place in a "
                    "stream given up because stream memory was full (its subscribers got a gap).",
                    env, sl ? atomic_load(&sl->cursor_releases) : 0);

    metrics_header(out, "websocket_max_connections", "gauge",
                   "Configured replica-wide limit on WebSocket connections.");
    metrics_sample(out, "websocket_max_connections", env, NULL, NULL,
                   (uint64_t)cfg.max_connections);

    if (cfg.broker_count)
        metrics_brokers(out, env, seg, &cfg, &t);

    if (proc)
        metrics_process(out, env, proc);
}
