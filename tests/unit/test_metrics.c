/*
 * Unit suite for shared/metrics.c: the Prometheus text rendered from a
 * hand-filled in-memory segment, compared byte for byte with a golden text;
 * then properties of any rendering: every series of docs/ARCHITECTURE.md's metrics
 * table with HELP and TYPE, every reason/error_type/state/result label at 0
 * from the start, the environment label on every sample, cumulative
 * histogram buckets with _count equal to +Inf, the process_* block only when
 * a procstat is given. Also prints (never asserts) the mean render time with
 * 64 worker slots in use.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "metrics.h"
#include "segment.h"
#include "unit.h"

static struct segment *new_segment(const char *environment, int64_t max_connections)
{
    struct segment *seg = calloc(1, sizeof(*seg));
    ck_assert_ptr_nonnull(seg);
    seg->magic = SEGMENT_MAGIC;
    seg->layout_version = SEGMENT_LAYOUT_VERSION;
    seg->worker_slots = SEGMENT_WORKER_SLOTS;
    seg->size = sizeof(*seg);
    struct config cfg;
    config_defaults(&cfg);
    snprintf(cfg.environment, sizeof(cfg.environment), "%s", environment);
    cfg.max_connections = max_connections;
    segment_publish_config(seg, &cfg);
    return seg;
}

/* The segment the golden text describes. */
static struct segment *golden_segment(void)
{
    struct segment *seg = new_segment("golden", 500);
    struct segment_worker *w0 = &seg->worker[0], *w2 = &seg->worker[2], *w5 = &seg->worker[5];
    atomic_store(&w0->state, WORKER_RUNNING);
    atomic_store(&w0->connections, 3);
    atomic_store(&w0->queued_frame_bytes, 4096);
    struct segment_counters *c = &w0->counters;
    segment_counter_add(&c->connections_total, 7);
    segment_counter_add(&c->disconnections[DISCONNECT_CLIENT_CLOSE], 2);
    segment_counter_add(&c->disconnections[DISCONNECT_TIMEOUT], 1);
    segment_counter_add(&c->connection_errors[CONN_ERROR_CAPACITY], 4);
    segment_counter_add(&c->messages_refused[REFUSED_FORBIDDEN], 3);
    segment_counter_add(&c->messages_received, 10);
    segment_counter_add(&c->messages_sent, 11);
    segment_counter_add(&c->bytes_received, 1000);
    segment_counter_add(&c->bytes_sent, 1100);
    segment_counter_add(&c->compression_bytes[COMPRESSION_OUT][COMPRESSION_BEFORE], 4000);
    segment_counter_add(&c->compression_bytes[COMPRESSION_OUT][COMPRESSION_AFTER], 1000);
    segment_observe_latency(c, 100000);  /* exactly 100 µs: le="0.0001" */
    segment_observe_latency(c, 3000000); /* 3 ms: le="0.005" */
    segment_observe_request(c, REQUEST_PING, 200000);      /* le="0.00025" */
    segment_observe_rtt(c, 1500000);                       /* 1.5 ms: le="0.0025" */

    atomic_store(&w2->state, WORKER_DEAD);
    atomic_store(&w5->state, WORKER_STARTING);
    segment_counter_add(&w5->counters.messages_received, 5);

    struct segment_counters *r = &seg->retired;
    segment_counter_add(&r->connections_total, 20);
    segment_counter_add(&r->disconnections[DISCONNECT_CLIENT_CLOSE], 14);
    segment_counter_add(&r->disconnections[DISCONNECT_WORKER_EXIT], 6);
    segment_counter_add(&r->connection_errors[CONN_ERROR_HANDSHAKE], 2);
    segment_counter_add(&r->messages_refused[REFUSED_RATE_LIMITED], 9);
    segment_counter_add(&r->messages_refused[REFUSED_FORBIDDEN], 1);
    segment_counter_add(&r->messages_received, 100);
    segment_counter_add(&r->compression_bytes[COMPRESSION_IN][COMPRESSION_BEFORE], 30);
    segment_counter_add(&r->compression_bytes[COMPRESSION_IN][COMPRESSION_AFTER], 90);
    segment_observe_latency(r, 12000000000ull); /* 12 s: only +Inf */
    segment_observe_request(r, REQUEST_PING, 200000);   /* folded: adds to the worker's */
    segment_observe_request(r, REQUEST_PUBLISH, 20000000);
    segment_observe_rtt(r, 20000000000ull);              /* 20 s: only +Inf */

    atomic_store(&seg->worker_restarts, 3);
    atomic_store(&seg->config_reloads_success, 2);
    atomic_store(&seg->config_reloads_failure, 1);
    return seg;
}

#define E "{environment=\"golden\""
static const char golden_text[] =
    "# HELP websocket_connections_active Open WebSocket connections, per worker slot.\n"
    "# TYPE websocket_connections_active gauge\n"
    "websocket_connections_active" E ",worker=\"0\"} 3\n"
    "websocket_connections_active" E ",worker=\"2\"} 0\n"
    "websocket_connections_active" E ",worker=\"5\"} 0\n"
    "# HELP websocket_queued_frame_bytes Memory held by message frames waiting in send queues, "
    "per worker slot (a frame shared by many subscribers counts once).\n"
    "# TYPE websocket_queued_frame_bytes gauge\n"
    "websocket_queued_frame_bytes" E ",worker=\"0\"} 4096\n"
    "websocket_queued_frame_bytes" E ",worker=\"2\"} 0\n"
    "websocket_queued_frame_bytes" E ",worker=\"5\"} 0\n"
    "# HELP websocket_connections_total WebSocket connections accepted (upgraded) since start.\n"
    "# TYPE websocket_connections_total counter\n"
    "websocket_connections_total" E "} 27\n"
    "# HELP websocket_disconnections_total WebSocket connections closed, by reason.\n"
    "# TYPE websocket_disconnections_total counter\n"
    "websocket_disconnections_total" E ",reason=\"client_close\"} 16\n"
    "websocket_disconnections_total" E ",reason=\"timeout\"} 1\n"
    "websocket_disconnections_total" E ",reason=\"protocol_error\"} 0\n"
    "websocket_disconnections_total" E ",reason=\"too_large\"} 0\n"
    "websocket_disconnections_total" E ",reason=\"slow_consumer\"} 0\n"
    "websocket_disconnections_total" E ",reason=\"shutdown\"} 0\n"
    "websocket_disconnections_total" E ",reason=\"reload\"} 0\n"
    "websocket_disconnections_total" E ",reason=\"worker_exit\"} 6\n"
    "websocket_disconnections_total" E ",reason=\"error\"} 0\n"
    "# HELP websocket_connection_errors_total Connections refused or failed before becoming a "
    "WebSocket, by type.\n"
    "# TYPE websocket_connection_errors_total counter\n"
    "websocket_connection_errors_total" E ",error_type=\"handshake\"} 2\n"
    "websocket_connection_errors_total" E ",error_type=\"capacity\"} 4\n"
    "websocket_connection_errors_total" E ",error_type=\"timeout\"} 0\n"
    "websocket_connection_errors_total" E ",error_type=\"auth\"} 0\n"
    "websocket_connection_errors_total" E ",error_type=\"origin\"} 0\n"
    "websocket_connection_errors_total" E ",error_type=\"tls\"} 0\n"
    "websocket_connection_errors_total" E ",error_type=\"io\"} 0\n"
    "# HELP websocket_messages_refused_total Client requests answered with an error message "
    "(connection kept), by code.\n"
    "# TYPE websocket_messages_refused_total counter\n"
    "websocket_messages_refused_total" E ",code=\"bad_request\"} 0\n"
    "websocket_messages_refused_total" E ",code=\"unauthorized\"} 0\n"
    "websocket_messages_refused_total" E ",code=\"forbidden\"} 4\n"
    "websocket_messages_refused_total" E ",code=\"too_large\"} 0\n"
    "websocket_messages_refused_total" E ",code=\"rate_limited\"} 9\n"
    "websocket_messages_refused_total" E ",code=\"capacity\"} 0\n"
    "websocket_messages_refused_total" E ",code=\"unavailable\"} 0\n"
    "websocket_messages_refused_total" E ",code=\"internal\"} 0\n"
    "# HELP websocket_message_latency_seconds Time from a stream message entering the gateway (its "
    "publish's last frame received) until its bytes are handed to the kernel, once per subscriber "
    "it is delivered to live.\n"
    "# TYPE websocket_message_latency_seconds histogram\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.0001\"} 1\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.00025\"} 1\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.0005\"} 1\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.001\"} 1\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.0025\"} 1\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.005\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.01\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.025\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.05\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.1\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.25\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"0.5\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"1\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"2.5\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"5\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"10\"} 2\n"
    "websocket_message_latency_seconds_bucket" E ",le=\"+Inf\"} 3\n"
    "websocket_message_latency_seconds_sum" E "} 12.003100000\n"
    "websocket_message_latency_seconds_count" E "} 3\n"
    "# HELP websocket_request_duration_seconds Time from a client request received until its "
    "reply (pong, subscribed, unsubscribed, ack, authenticated, error) is handed to the kernel, by "
    "request type.\n"
    "# TYPE websocket_request_duration_seconds histogram\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.0001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.00025\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.0005\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.001\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.0025\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.005\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.01\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.025\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.05\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.1\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.25\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"0.5\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"1\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"2.5\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"5\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"10\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"ping\",le=\"+Inf\"} 2\n"
    "websocket_request_duration_seconds_sum" E ",type=\"ping\"} 0.000400000\n"
    "websocket_request_duration_seconds_count" E ",type=\"ping\"} 2\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.0001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.00025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.0005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.0025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.01\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.05\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.25\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"0.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"2.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"10\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"subscribe\",le=\"+Inf\"} 0\n"
    "websocket_request_duration_seconds_sum" E ",type=\"subscribe\"} 0.000000000\n"
    "websocket_request_duration_seconds_count" E ",type=\"subscribe\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.0001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.00025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.0005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.0025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.01\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.05\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.25\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"0.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"2.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"10\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"unsubscribe\",le=\"+Inf\"} 0\n"
    "websocket_request_duration_seconds_sum" E ",type=\"unsubscribe\"} 0.000000000\n"
    "websocket_request_duration_seconds_count" E ",type=\"unsubscribe\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.0001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.00025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.0005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.0025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.01\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.025\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.05\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.1\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.25\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"0.5\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"1\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"2.5\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"5\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"10\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"publish\",le=\"+Inf\"} 1\n"
    "websocket_request_duration_seconds_sum" E ",type=\"publish\"} 0.020000000\n"
    "websocket_request_duration_seconds_count" E ",type=\"publish\"} 1\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.0001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.00025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.0005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.0025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.01\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.05\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.25\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"0.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"2.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"10\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"auth\",le=\"+Inf\"} 0\n"
    "websocket_request_duration_seconds_sum" E ",type=\"auth\"} 0.000000000\n"
    "websocket_request_duration_seconds_count" E ",type=\"auth\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.0001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.00025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.0005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.001\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.0025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.005\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.01\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.025\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.05\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.25\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"0.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"1\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"2.5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"5\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"10\"} 0\n"
    "websocket_request_duration_seconds_bucket" E ",type=\"invalid\",le=\"+Inf\"} 0\n"
    "websocket_request_duration_seconds_sum" E ",type=\"invalid\"} 0.000000000\n"
    "websocket_request_duration_seconds_count" E ",type=\"invalid\"} 0\n"
    "# HELP websocket_client_rtt_seconds Round trip of the heartbeat: from a server ping queued for "
    "a client until its pong (same payload) is read, one sample per pong.\n"
    "# TYPE websocket_client_rtt_seconds histogram\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.0001\"} 0\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.00025\"} 0\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.0005\"} 0\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.001\"} 0\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.0025\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.005\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.01\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.025\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.05\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.1\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.25\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"0.5\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"1\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"2.5\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"5\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"10\"} 1\n"
    "websocket_client_rtt_seconds_bucket" E ",le=\"+Inf\"} 2\n"
    "websocket_client_rtt_seconds_sum" E "} 20.001500000\n"
    "websocket_client_rtt_seconds_count" E "} 2\n"
    "# HELP websocket_messages_received_total WebSocket data messages received from clients.\n"
    "# TYPE websocket_messages_received_total counter\n"
    "websocket_messages_received_total" E "} 115\n"
    "# HELP websocket_messages_sent_total WebSocket data messages sent to clients.\n"
    "# TYPE websocket_messages_sent_total counter\n"
    "websocket_messages_sent_total" E "} 11\n"
    "# HELP websocket_bytes_received_total Bytes received on WebSocket connections (frames "
    "included).\n"
    "# TYPE websocket_bytes_received_total counter\n"
    "websocket_bytes_received_total" E "} 1000\n"
    "# HELP websocket_bytes_sent_total Bytes sent on WebSocket connections (frames included).\n"
    "# TYPE websocket_bytes_sent_total counter\n"
    "websocket_bytes_sent_total" E "} 1100\n"
    "# HELP websocket_compression_bytes_total Payload bytes of messages on permessage-deflate "
    "connections, by direction (in, out) and stage (before: uncompressed, after: on the wire).\n"
    "# TYPE websocket_compression_bytes_total counter\n"
    "websocket_compression_bytes_total" E ",direction=\"in\",stage=\"before\"} 30\n"
    "websocket_compression_bytes_total" E ",direction=\"in\",stage=\"after\"} 90\n"
    "websocket_compression_bytes_total" E ",direction=\"out\",stage=\"before\"} 4000\n"
    "websocket_compression_bytes_total" E ",direction=\"out\",stage=\"after\"} 1000\n"
    "# HELP websocket_workers Worker processes, by state.\n"
    "# TYPE websocket_workers gauge\n"
    "websocket_workers" E ",state=\"starting\"} 1\n"
    "websocket_workers" E ",state=\"running\"} 1\n"
    "websocket_workers" E ",state=\"draining\"} 0\n"
    "websocket_workers" E ",state=\"dead\"} 1\n"
    "# HELP websocket_worker_restarts_total Workers respawned after exiting unexpectedly.\n"
    "# TYPE websocket_worker_restarts_total counter\n"
    "websocket_worker_restarts_total" E "} 3\n"
    "# HELP websocket_config_reloads_total Configuration reloads, by result.\n"
    "# TYPE websocket_config_reloads_total counter\n"
    "websocket_config_reloads_total" E ",result=\"success\"} 2\n"
    "websocket_config_reloads_total" E ",result=\"failure\"} 1\n"
    "# HELP websocket_config_generation Configuration generation in force (1 at start, +1 per "
    "successful reload).\n"
    "# TYPE websocket_config_generation gauge\n"
    "websocket_config_generation" E "} 1\n"
    "# HELP websocket_streams_active Streams currently held.\n"
    "# TYPE websocket_streams_active gauge\n"
    "websocket_streams_active" E "} 0\n"
    "# HELP websocket_stream_memory_bytes Stream memory pool (stream_memory), by state.\n"
    "# TYPE websocket_stream_memory_bytes gauge\n"
    "websocket_stream_memory_bytes" E ",state=\"used\"} 0\n"
    "websocket_stream_memory_bytes" E ",state=\"free\"} 0\n"
    "# HELP websocket_stream_cursor_releases_total Times a worker that made no progress for "
    "send_timeout had its place in a stream given up because stream memory was full (its "
    "subscribers got a gap).\n"
    "# TYPE websocket_stream_cursor_releases_total counter\n"
    "websocket_stream_cursor_releases_total" E "} 0\n"
    "# HELP websocket_max_connections Configured replica-wide limit on WebSocket connections.\n"
    "# TYPE websocket_max_connections gauge\n"
    "websocket_max_connections" E "} 500\n";

static const char golden_process[] =
    "# HELP process_cpu_seconds_total Total user and system CPU time spent by the master in "
    "seconds.\n"
    "# TYPE process_cpu_seconds_total counter\n"
    "process_cpu_seconds_total" E "} 1.5\n"
    "# HELP process_resident_memory_bytes Resident memory size of the master in bytes.\n"
    "# TYPE process_resident_memory_bytes gauge\n"
    "process_resident_memory_bytes" E "} 1048576\n"
    "# HELP process_virtual_memory_bytes Virtual memory size of the master in bytes.\n"
    "# TYPE process_virtual_memory_bytes gauge\n"
    "process_virtual_memory_bytes" E "} 4194304\n"
    "# HELP process_open_fds Number of open file descriptors of the master.\n"
    "# TYPE process_open_fds gauge\n"
    "process_open_fds" E "} 12\n"
    "# HELP process_max_fds Maximum number of open file descriptors of the master.\n"
    "# TYPE process_max_fds gauge\n"
    "process_max_fds" E "} 1024\n"
    "# HELP process_start_time_seconds Start time of the master since unix epoch in seconds.\n"
    "# TYPE process_start_time_seconds gauge\n"
    "process_start_time_seconds" E "} 1700000000.25\n";
#undef E

static const struct procstat golden_proc = {
    .cpu_seconds = 1.5,
    .start_time_seconds = 1700000000.25,
    .resident_bytes = 1048576,
    .virtual_bytes = 4194304,
    .open_fds = 12,
    .max_fds = 1024,
};

/* Render into a fresh buffer (caller frees). */
static struct textbuf render(const struct segment *seg, const struct procstat *proc)
{
    struct textbuf b;
    textbuf_init(&b, 0);
    metrics_render(seg, proc, &b);
    ck_assert_int_eq(b.failed, 0);
    ck_assert_ptr_nonnull(b.data);
    return b;
}

/* Report the first differing line, so a failure is readable. */
static void expect_text(const char *got, const char *want)
{
    if (strcmp(got, want) == 0)
        return;
    int line = 1;
    const char *g = got, *w = want;
    while (*g && *g == *w) {
        if (*g == '\n')
            line++;
        g++;
        w++;
    }
    const char *gl = g, *wl = w;
    while (gl > got && gl[-1] != '\n')
        gl--;
    while (wl > want && wl[-1] != '\n')
        wl--;
    ck_abort_msg("line %d differs:\n got: %.*s\nwant: %.*s", line, (int)strcspn(gl, "\n"), gl,
                 (int)strcspn(wl, "\n"), wl);
}

/* Value of the sample line that starts with `prefix` (the name and the
 * labels up to the closing brace); fails when there is not exactly one. */
static double sample_value(const char *text, const char *prefix)
{
    size_t plen = strlen(prefix);
    const char *found = NULL;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, prefix, plen) == 0 && p[plen] == ' ') {
            ck_assert_msg(found == NULL, "two samples %s", prefix);
            found = p + plen + 1;
        }
    }
    ck_assert_msg(found != NULL, "no sample %s", prefix);
    return strtod(found, NULL);
}

/* ---- golden text ---- */

START_TEST(golden_text_without_process_block)
{
    struct segment *seg = golden_segment();
    struct textbuf b = render(seg, NULL);
    expect_text(b.data, golden_text);
    ck_assert_uint_eq(b.len, strlen(golden_text));
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(golden_text_with_process_block)
{
    struct segment *seg = golden_segment();
    struct textbuf b = render(seg, &golden_proc);
    char want[sizeof(golden_text) + sizeof(golden_process)];
    snprintf(want, sizeof(want), "%s%s", golden_text, golden_process);
    expect_text(b.data, want);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(render_appends_to_existing_buffer)
{
    struct segment *seg = golden_segment();
    struct textbuf b;
    textbuf_init(&b, 8);
    textbuf_appends(&b, "# prefix\n");
    metrics_render(seg, NULL, &b);
    ck_assert_int_eq(strncmp(b.data, "# prefix\n", 9), 0);
    expect_text(b.data + 9, golden_text);
    textbuf_free(&b);
    free(seg);
}
END_TEST

/* ---- properties ---- */

static const struct {
    const char *name;
    const char *type;
} design_series[] = {
    {"websocket_connections_active", "gauge"},
    {"websocket_connections_total", "counter"},
    {"websocket_disconnections_total", "counter"},
    {"websocket_connection_errors_total", "counter"},
    /* Not in the original design's table (docs/ARCHITECTURE.md): added with the abuse limits (issue 7), so
     * refusals (forbidden, rate_limited, ...) are counted. */
    {"websocket_messages_refused_total", "counter"},
    {"websocket_message_latency_seconds", "histogram"},
    {"websocket_messages_received_total", "counter"},
    {"websocket_messages_sent_total", "counter"},
    {"websocket_bytes_received_total", "counter"},
    {"websocket_bytes_sent_total", "counter"},
    {"websocket_workers", "gauge"},
    {"websocket_worker_restarts_total", "counter"},
    {"websocket_config_reloads_total", "counter"},
    {"websocket_streams_active", "gauge"},
    {"websocket_max_connections", "gauge"},
};

/* Beyond the original design's table (docs/ARCHITECTURE.md), for dashboards' config-change annotations. */
static const struct {
    const char *name;
    const char *type;
} extra_series[] = {
    {"websocket_config_generation", "gauge"},
    {"websocket_queued_frame_bytes", "gauge"},
    {"websocket_stream_memory_bytes", "gauge"},
    {"websocket_stream_cursor_releases_total", "counter"},
    /* replies apart from stream latency; heartbeat round trips */
    {"websocket_request_duration_seconds", "histogram"},
    {"websocket_client_rtt_seconds", "histogram"},
    {"websocket_compression_bytes_total", "counter"},
};

static const struct {
    const char *name;
    const char *type;
} process_series[] = {
    {"process_cpu_seconds_total", "counter"},
    {"process_resident_memory_bytes", "gauge"},
    {"process_virtual_memory_bytes", "gauge"},
    {"process_open_fds", "gauge"},
    {"process_max_fds", "gauge"},
    {"process_start_time_seconds", "gauge"},
};

static int count_occurrences(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* HELP (non-empty), then TYPE, then at least one sample, each family once. */
static void expect_family(const char *text, const char *name, const char *type)
{
    char help[128], typeline[128], sample[128];
    snprintf(help, sizeof(help), "\n# HELP %s ", name);
    snprintf(typeline, sizeof(typeline), "\n# TYPE %s %s\n", name, type);
    snprintf(sample, sizeof(sample), "\n%s%s{", name, strcmp(type, "histogram") == 0 ? "_bucket" : "");
    /* Prefix a newline so the first line matches like the others. */
    size_t n = strlen(text);
    char *t = malloc(n + 2);
    ck_assert_ptr_nonnull(t);
    t[0] = '\n';
    memcpy(t + 1, text, n + 1);
    ck_assert_msg(count_occurrences(t, help) == 1, "HELP of %s", name);
    ck_assert_msg(count_occurrences(t, typeline) == 1, "TYPE %s %s", name, type);
    const char *h = strstr(t, help), *ty = strstr(t, typeline), *s = strstr(t, sample);
    ck_assert_msg(s != NULL, "no sample of %s", name);
    ck_assert_msg(h < ty && ty < s, "%s: HELP, TYPE and samples out of order", name);
    ck_assert_msg(h[strlen(help)] != '\n', "%s: empty HELP", name);
    free(t);
}

START_TEST(every_design_series_has_help_and_type)
{
    struct segment *seg = new_segment("prod", 10000);
    struct textbuf b = render(seg, &golden_proc);
    for (size_t i = 0; i < sizeof(design_series) / sizeof(design_series[0]); i++)
        expect_family(b.data, design_series[i].name, design_series[i].type);
    for (size_t i = 0; i < sizeof(process_series) / sizeof(process_series[0]); i++)
        expect_family(b.data, process_series[i].name, process_series[i].type);
    for (size_t i = 0; i < sizeof(extra_series) / sizeof(extra_series[0]); i++)
        expect_family(b.data, extra_series[i].name, extra_series[i].type);
    /* Nothing else is declared. */
    size_t families = sizeof(design_series) / sizeof(design_series[0]) +
                      sizeof(extra_series) / sizeof(extra_series[0]) +
                      sizeof(process_series) / sizeof(process_series[0]);
    ck_assert_int_eq(count_occurrences(b.data, "# TYPE "), (int)families);
    ck_assert_int_eq(count_occurrences(b.data, "# HELP "), (int)families);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(every_label_value_emitted_at_zero_from_start)
{
    struct segment *seg = new_segment("prod", 10000);
    struct textbuf b = render(seg, NULL);
    char prefix[160];
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++) {
        snprintf(prefix, sizeof(prefix),
                 "websocket_disconnections_total{environment=\"prod\",reason=\"%s\"}",
                 segment_disconnect_reason_name(i));
        ck_assert_double_eq(sample_value(b.data, prefix), 0);
    }
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++) {
        snprintf(prefix, sizeof(prefix),
                 "websocket_connection_errors_total{environment=\"prod\",error_type=\"%s\"}",
                 segment_connection_error_name(i));
        ck_assert_double_eq(sample_value(b.data, prefix), 0);
    }
    static const char *const states[] = {"starting", "running", "draining", "dead"};
    for (int i = 0; i < 4; i++) {
        snprintf(prefix, sizeof(prefix), "websocket_workers{environment=\"prod\",state=\"%s\"}",
                 states[i]);
        ck_assert_double_eq(sample_value(b.data, prefix), 0);
    }
    ck_assert_double_eq(sample_value(b.data, "websocket_config_reloads_total{environment=\"prod\","
                                             "result=\"success\"}"),
                        0);
    ck_assert_double_eq(sample_value(b.data, "websocket_config_reloads_total{environment=\"prod\","
                                             "result=\"failure\"}"),
                        0);
    /* With no worker yet, connections_active still has a sample. */
    ck_assert_double_eq(
        sample_value(b.data, "websocket_connections_active{environment=\"prod\",worker=\"0\"}"), 0);
    ck_assert_double_eq(sample_value(b.data, "websocket_message_latency_seconds_bucket{environment="
                                             "\"prod\",le=\"+Inf\"}"),
                        0);
    ck_assert_double_eq(sample_value(b.data, "websocket_max_connections{environment=\"prod\"}"),
                        10000);
    textbuf_free(&b);
    free(seg);
}
END_TEST

/* Every sample line carries environment="<env>" as a label. */
static void expect_environment_everywhere(const char *text, const char *env)
{
    char label[96];
    snprintf(label, sizeof(label), "{environment=\"%s\"", env);
    int samples = 0;
    const char *p = text;
    while (*p) {
        const char *eol = strchr(p, '\n');
        ck_assert_msg(eol != NULL, "last line has no newline");
        ck_assert_msg(eol > p, "empty line in exposition");
        if (*p != '#') {
            const char *brace = memchr(p, '{', (size_t)(eol - p));
            ck_assert_msg(brace != NULL, "sample without labels: %.*s", (int)(eol - p), p);
            ck_assert_msg(strncmp(brace, label, strlen(label)) == 0 &&
                              (brace[strlen(label)] == '}' || brace[strlen(label)] == ','),
                          "no %s in: %.*s", label, (int)(eol - p), p);
            samples++;
        }
        p = eol + 1;
    }
    ck_assert_int_gt(samples, 40);
}

START_TEST(environment_label_on_every_sample)
{
    struct segment *seg = golden_segment();
    struct config cfg;
    segment_read_config(seg, &cfg);
    snprintf(cfg.environment, sizeof(cfg.environment), "staging-eu.2");
    segment_publish_config(seg, &cfg);
    struct textbuf b = render(seg, &golden_proc);
    expect_environment_everywhere(b.data, "staging-eu.2");
    ck_assert_ptr_null(strstr(b.data, "golden"));
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(histogram_buckets_cumulative_and_count_is_inf)
{
    struct segment *seg = new_segment("prod", 10000);
    /* Spread observations over every bucket, slots and retired. */
    uint64_t expect_bucket[SEGMENT_LATENCY_BUCKETS] = {0};
    uint64_t n = 0, sum_ns = 0;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++) {
        uint64_t ns = i == SEGMENT_LATENCY_BUCKETS - 1
                          ? 30000000000ull
                          : (uint64_t)(segment_latency_bounds[i] * 1e9 + 0.5);
        for (int k = 0; k <= i % 4; k++) {
            struct segment_counters *c = k == 3 ? &seg->retired : &seg->worker[k * 7].counters;
            segment_observe_latency(c, ns);
            expect_bucket[i]++;
            n++;
            sum_ns += ns;
        }
    }
    struct textbuf b = render(seg, NULL);
    uint64_t cumulative = 0;
    double prev = -1;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++) {
        char prefix[160], le[32];
        if (i == SEGMENT_LATENCY_BUCKETS - 1)
            snprintf(le, sizeof(le), "+Inf");
        else
            snprintf(le, sizeof(le), "%g", segment_latency_bounds[i]);
        snprintf(prefix, sizeof(prefix),
                 "websocket_message_latency_seconds_bucket{environment=\"prod\",le=\"%s\"}", le);
        cumulative += expect_bucket[i];
        double v = sample_value(b.data, prefix);
        ck_assert_msg(v == (double)cumulative, "le=%s: %g, want %llu", le, v,
                      (unsigned long long)cumulative);
        ck_assert_double_ge(v, prev);
        prev = v;
    }
    ck_assert_uint_eq(cumulative, n);
    double count =
        sample_value(b.data, "websocket_message_latency_seconds_count{environment=\"prod\"}");
    double inf = sample_value(
        b.data, "websocket_message_latency_seconds_bucket{environment=\"prod\",le=\"+Inf\"}");
    ck_assert_double_eq(count, inf);
    ck_assert_double_eq(count, (double)n);
    double sum = sample_value(b.data, "websocket_message_latency_seconds_sum{environment=\"prod\"}");
    ck_assert_double_eq_tol(sum, (double)sum_ns / 1e9, 1e-6);
    ck_assert_int_eq(count_occurrences(b.data, "websocket_message_latency_seconds_bucket{"),
                     SEGMENT_LATENCY_BUCKETS);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(count_follows_buckets_even_when_latency_count_lags)
{
    /* A scrape may land between a worker's bucket and count updates:
     * _count must still equal the +Inf bucket. */
    struct segment *seg = new_segment("prod", 10000);
    segment_counter_add(&seg->worker[1].counters.latency_bucket[3], 5);
    segment_counter_add(&seg->worker[1].counters.latency_count, 4);
    struct textbuf b = render(seg, NULL);
    ck_assert_double_eq(
        sample_value(b.data, "websocket_message_latency_seconds_count{environment=\"prod\"}"), 5);
    ck_assert_double_eq(sample_value(b.data, "websocket_message_latency_seconds_bucket{environment="
                                             "\"prod\",le=\"+Inf\"}"),
                        5);
    textbuf_free(&b);
    free(seg);
}
END_TEST

START_TEST(process_block_only_with_procstat)
{
    struct segment *seg = new_segment("prod", 10000);
    struct textbuf without = render(seg, NULL);
    ck_assert_ptr_null(strstr(without.data, "process_"));
    struct textbuf with = render(seg, &golden_proc);
    for (size_t i = 0; i < sizeof(process_series) / sizeof(process_series[0]); i++)
        expect_family(with.data, process_series[i].name, process_series[i].type);
    ck_assert_double_eq(sample_value(with.data, "process_open_fds{environment=\"prod\"}"), 12);
    ck_assert_double_eq(sample_value(with.data, "process_start_time_seconds{environment=\"prod\"}"),
                        1700000000.25);
    /* The process block comes after the rest. */
    ck_assert_int_eq(strncmp(with.data, without.data, without.len), 0);
    textbuf_free(&without);
    textbuf_free(&with);
    free(seg);
}
END_TEST

START_TEST(connections_active_one_sample_per_slot_in_use)
{
    struct segment *seg = new_segment("prod", 10000);
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i += 9) {
        atomic_store(&seg->worker[i].state, WORKER_RUNNING);
        atomic_store(&seg->worker[i].connections, i * 10);
    }
    atomic_store(&seg->worker[1].connections, -2); /* a torn read never shows negative */
    atomic_store(&seg->worker[1].state, WORKER_DRAINING);
    struct textbuf b = render(seg, NULL);
    ck_assert_int_eq(count_occurrences(b.data, "websocket_connections_active{"), 9);
    char prefix[128];
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i += 9) {
        snprintf(prefix, sizeof(prefix),
                 "websocket_connections_active{environment=\"prod\",worker=\"%d\"}", i);
        ck_assert_double_eq(sample_value(b.data, prefix), i * 10);
    }
    ck_assert_double_eq(
        sample_value(b.data, "websocket_connections_active{environment=\"prod\",worker=\"1\"}"), 0);
    ck_assert_double_eq(sample_value(b.data, "websocket_workers{environment=\"prod\",state=\"running\"}"),
                        8);
    ck_assert_double_eq(
        sample_value(b.data, "websocket_workers{environment=\"prod\",state=\"draining\"}"), 1);
    textbuf_free(&b);
    free(seg);
}
END_TEST

/* ---- cost (printed, never asserted) ---- */

START_TEST(render_time_with_64_slots)
{
    struct segment *seg = new_segment("production", 10000);
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        struct segment_worker *w = &seg->worker[i];
        atomic_store(&w->state, WORKER_RUNNING);
        atomic_store(&w->connections, 100 + i);
        for (int k = 0; k < 1000; k++)
            segment_observe_latency(&w->counters, (uint64_t)k * 7919u * (uint64_t)(i + 1));
        segment_counter_add(&w->counters.messages_received, 123456789);
    }
    const int rounds = 1000;
    size_t bytes = 0;
    uint64_t start = clock_now_ns();
    for (int r = 0; r < rounds; r++) {
        struct textbuf b;
        textbuf_init(&b, 16384); /* as endpoints_render does */
        metrics_render(seg, &golden_proc, &b);
        bytes = b.len;
        ck_assert_int_eq(b.failed, 0);
        textbuf_free(&b);
    }
    uint64_t elapsed = clock_now_ns() - start;
    printf("metrics_render, 64 worker slots in use: mean %.1f us per render over %d renders "
           "(%zu bytes)\n",
           (double)elapsed / rounds / 1000.0, rounds, bytes);
    fflush(stdout);
    ck_assert_uint_gt(bytes, 0);
    free(seg);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = unit_tcase(s, "golden");
    tcase_add_test(tc, golden_text_without_process_block);
    tcase_add_test(tc, golden_text_with_process_block);
    tcase_add_test(tc, render_appends_to_existing_buffer);

    tc = unit_tcase(s, "properties");
    tcase_add_test(tc, every_design_series_has_help_and_type);
    tcase_add_test(tc, every_label_value_emitted_at_zero_from_start);
    tcase_add_test(tc, environment_label_on_every_sample);
    tcase_add_test(tc, histogram_buckets_cumulative_and_count_is_inf);
    tcase_add_test(tc, count_follows_buckets_even_when_latency_count_lags);
    tcase_add_test(tc, process_block_only_with_procstat);
    tcase_add_test(tc, connections_active_one_sample_per_slot_in_use);

    tc = unit_tcase(s, "cost");
    tcase_add_test(tc, render_time_with_64_slots);
    return s;
}

int main(void)
{
    return unit_run(metrics_suite());
}
