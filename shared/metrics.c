#include "metrics.h"

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
                   "Time from a message entering the gateway (its last frame received) until "
                   "its bytes are handed to the kernel for one recipient.");
    metrics_histogram(out, name, env, "", t->latency_bucket, t->latency_sum_ns);
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

void metrics_render(const struct segment *seg, const struct procstat *proc, struct textbuf *out)
{
    char env[CONFIG_STR_MAX];
    struct segment_totals t;
    struct config cfg;
    segment_read_config(seg, &cfg);
    snprintf(env, sizeof(env), "%s", cfg.environment);
    segment_sum_counters(seg, &t);

    const char *name = "websocket_connections_active";
    metrics_header(out, name, "gauge", "Open WebSocket connections, per worker slot.");
    int any = 0;
    uint32_t states[WORKER_STATE_COUNT] = {0};
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        const struct segment_worker *w = &seg->worker[i];
        uint32_t state = atomic_load_explicit(&w->state, memory_order_relaxed);
        if (state == WORKER_EMPTY || state >= WORKER_STATE_COUNT)
            continue;
        states[state]++;
        char slot[16];
        snprintf(slot, sizeof(slot), "%d", i);
        int64_t c = atomic_load_explicit(&w->connections, memory_order_relaxed);
        metrics_sample(out, name, env, "worker", slot, c > 0 ? (uint64_t)c : 0);
        any = 1;
    }
    if (!any)
        metrics_sample(out, name, env, "worker", "0", 0);

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

    /* Not in DESIGN.md's table: dashboards annotate config changes with it
     * (a reload that changed nothing still bumps it). */
    metrics_header(out, "websocket_config_generation", "gauge",
                   "Configuration generation in force (1 at start, +1 per successful reload).");
    metrics_sample(out, "websocket_config_generation", env, NULL, NULL,
                   atomic_load(&seg->config_generation));

    metrics_header(out, "websocket_streams_active", "gauge", "Streams currently held.");
    const struct streamlog *sl = segment_streams(seg);
    metrics_sample(out, "websocket_streams_active", env, NULL, NULL,
                   sl ? atomic_load(&sl->active) : 0);

    metrics_header(out, "websocket_max_connections", "gauge",
                   "Configured replica-wide limit on WebSocket connections.");
    metrics_sample(out, "websocket_max_connections", env, NULL, NULL,
                   (uint64_t)cfg.max_connections);

    if (cfg.broker_count)
        metrics_brokers(out, env, seg, &cfg, &t);

    if (proc)
        metrics_process(out, env, proc);
}
