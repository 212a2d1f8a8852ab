#include "worker.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "broker.h"
#include "cluster.h"
#include "conn.h"
#include "deflate.h"
#include "http.h"
#include "hub.h"
#include "log.h"
#include "rtt.h"
#include "segment.h"
#include "handshake.h"
#include "session.h"
#include "tlsconn.h"
#include "wsgate-build.h"

#define WORKER_TICK_MS 250
#define WORKER_BACKLOG 1024

static void worker_apply_config(struct worker *w)
{
    int had_auth = w->cfg.auth_mode == CONFIG_AUTH_JWT;
    uint64_t gen = segment_read_config(w->seg, &w->cfg);
    w->cfg_generation = gen;
    log_configure(w->cfg.log_format, w->cfg.log_level);
    if (w->tls_ctx)
        tlsconn_ctx_refresh(w);
    /* The master publishes the key before the generation: a new
     * generation is the moment to pick up a rotated key. */
    int auth = w->cfg.auth_mode == CONFIG_AUTH_JWT;
    if (auth)
        auth_keystore_read(w->keys, &w->auth_key);
    else if (w->auth_key.kind != AUTH_KEY_NONE)
        auth_key_clear(&w->auth_key);
    int closed = 0;
    for (struct conn *c = w->conns; c; c = c->next) {
        if (c->closed)
            continue;
        session_apply_limits(c);
        if (auth && !had_auth && c->state == CONN_WS && !c->grant) {
            /* Authentication was just turned on: a session that never
             * showed a token must not keep reading patient streams. */
            c->close_detail = "authentication required";
            session_close(c, 1008, "authentication required", DISCONNECT_PROTOCOL_ERROR);
            closed++;
        } else if (!auth && c->grant) {
            auth_grant_free(c->grant);
            c->grant = NULL;
        }
    }
    if (closed)
        log_msg(LOG_WARN, "reload",
                "auth_mode is now jwt: closed %d unauthenticated connection(s) with 1008; "
                "they reconnect with a token", closed);
    atomic_store(&w->slot->config_generation, gen);
}

static void worker_stop_listening(struct worker *w)
{
    if (!w->listening)
        return;
    w->listening = 0;
    uv_close((uv_handle_t *)&w->listener, NULL);
}

/* Start a graceful drain: tell every client when to come back (after_ms
 * spread over drain_window so a ward of dashboards does not reconnect in
 * the same millisecond), and close them with `code`.
 *
 * A shutdown keeps accepting until the worker exits: the port answers
 * /health 503 draining (what the readiness probe and the runbook expect),
 * /health/detailed 503 and upgrades 503 + Retry-After, where a closed
 * listener would refuse connections outright. A worker retired by a reload
 * stops accepting at once: the workers that stay serve its share. */
static void worker_drain(struct worker *w, enum segment_disconnect_reason reason, uint16_t code)
{
    if (w->draining)
        return;
    w->draining = (int)reason + 1;
    if (reason != DISCONNECT_SHUTDOWN)
        worker_stop_listening(w);
    atomic_store(&w->slot->state, WORKER_DRAINING);
    w->drain_deadline_ns = clock_now_ns() + (uint64_t)w->cfg.shutdown_timeout * 1000000000ull;
    unsigned seed = (unsigned)getpid() ^ (unsigned)clock_now_ns();
    uint32_t window = (uint32_t)w->cfg.drain_window * 1000u;
    int count = 0;
    for (struct conn *c = w->conns; c; c = c->next) {
        if (c->closed || c->state != CONN_WS)
            continue;
        uint32_t after = window ? (uint32_t)rand_r(&seed) % (window + 1) : 0;
        session_reconnect(c, code, after, reason);
        count++;
    }
    log_msg(LOG_INFO, "shutdown", "draining %d connection(s) (%s)", count,
            segment_disconnect_reason_name(reason));
}

static int worker_live_connections(const struct worker *w)
{
    int n = 0;
    for (const struct conn *c = w->conns; c; c = c->next)
        n += !c->closed;
    return n;
}

static void worker_finish_drain(struct worker *w, uint64_t now)
{
    if (worker_live_connections(w) == 0) {
        uv_stop(&w->loop);
        return;
    }
    if (now < w->drain_deadline_ns)
        return;
    enum segment_disconnect_reason reason = (enum segment_disconnect_reason)(w->draining - 1);
    for (struct conn *c = w->conns; c; c = c->next)
        conn_close_with(c, reason, 1006);
    uv_stop(&w->loop);
}

/* Give freed heap back to the kernel once the connection count has fallen
 * well below its peak (an attack or a reconnect storm is over): glibc
 * keeps freed small blocks (wslay contexts, queues, parsed messages)
 * otherwise, and a worker's RSS would stay at its high-water mark. At most
 * every 2 s, and only after a peak of 64 connections or more. */
#define WORKER_TRIM_EVERY_NS (2ull * 1000000000ull)

static void worker_maybe_trim(struct worker *w, uint64_t now)
{
    int64_t live = atomic_load_explicit(&w->slot->connections, memory_order_relaxed);
    if (live > w->trim_peak_conns)
        w->trim_peak_conns = live;
    if (now - w->trim_last_ns < WORKER_TRIM_EVERY_NS || w->trim_peak_conns < 64 ||
        live > w->trim_peak_conns / 2)
        return;
    malloc_trim(0);
    w->trim_last_ns = now;
    w->trim_peak_conns = live;
}

static void worker_on_tick(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (atomic_load(&w->seg->config_generation) != w->cfg_generation)
        worker_apply_config(w);
    /* Read after applying the config: applying may close connections,
     * stamping them later than an earlier `now` (and the sweep's
     * unsigned differences must not go negative). */
    uint64_t now = clock_now_ns();
    conn_sweep(w, now);
    hub_sweep(w, now);
    broker_sweep(w, now);
    worker_maybe_trim(w, now);
    /* What the sweep queued (heartbeat pings, timeout closes) goes now: the
     * uv_check flush runs only after the next poll, which may sleep until
     * the next tick, and a heartbeat's round trip is timed from here. */
    conn_flush_dirty(w);
    /* After the flush: unsent bytes are then what the kernel would not take. */
    rtt_sweep(w, now);
    if (w->draining)
        worker_finish_drain(w, now);
}

static void worker_on_check(uv_check_t *h)
{
    struct worker *w = h->data;
    hub_run(w);
    conn_flush_dirty(w);
}

static void worker_on_connection(uv_stream_t *server, int status)
{
    struct worker *w = server->data;
    if (status < 0) {
        log_msg(LOG_WARN, "error", "accept failed: %s", uv_strerror(status));
        return;
    }
    conn_accept(w, &handshake_http_handlers);
}

static void worker_on_signal(uv_signal_t *h, int signum)
{
    struct worker *w = h->data;
    if (signum == SIGTERM)
        worker_drain(w, DISCONNECT_SHUTDOWN, 1001);
    else if (signum == SIGUSR1)
        worker_drain(w, DISCONNECT_RELOAD, 1012);
}

#if WSGATE_FAULT_INJECTION
/* Test-only: WSGATE_FAULT_CRASH_SLOT=N makes worker N die
 * WSGATE_FAULT_CRASH_AFTER_MS (default 100) after it starts, every time,
 * so tests can watch the master's crash-loop backoff. */
static void worker_fault_crash(uv_timer_t *t)
{
    _exit(3);
}

static void worker_arm_faults(struct worker *w)
{
    const char *slot = getenv("WSGATE_FAULT_CRASH_SLOT");
    if (!slot || atoi(slot) != w->slot_index)
        return;
    const char *after = getenv("WSGATE_FAULT_CRASH_AFTER_MS");
    uv_timer_init(&w->loop, &w->fault_timer);
    uv_timer_start(&w->fault_timer, worker_fault_crash, after ? (uint64_t)atoi(after) : 100, 0);
}
#endif

static void worker_close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int worker_main(struct segment *seg, struct auth_keystore *keys, int slot, int listen_fd,
                const struct tls_pair *tls)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    log_set_worker(slot);

    struct worker *w = calloc(1, sizeof(*w));
    if (!w) {
        log_msg(LOG_ERROR, "error", "out of memory starting worker %d", slot);
        return 1;
    }
    w->seg = seg;
    w->keys = keys;
    w->slot_index = slot;
    w->slot = segment_worker_slot(seg, slot);
    uv_loop_init(&w->loop);
    worker_apply_config(w);
    if (http_ws_init() < 0)
        log_msg(LOG_ERROR, "error", "worker %d cannot set up SHA-1 for WebSocket handshakes "
                "(OpenSSL's default provider); upgrades will fail until it is fixed", slot);
    if (tlsconn_ctx_init(w, tls) < 0) {
        uv_loop_close(&w->loop);
        free(w);
        return 1;
    }

    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    int r = uv_tcp_open(&w->listener, listen_fd);
    if (r == 0) {
        conn_listener_setup(w);
        r = uv_listen((uv_stream_t *)&w->listener, WORKER_BACKLOG, worker_on_connection);
    }
    if (r < 0) {
        log_msg(LOG_ERROR, "error", "worker %d cannot listen on its socket: %s", slot,
                uv_strerror(r));
        uv_close((uv_handle_t *)&w->listener, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        tlsconn_ctx_free(w);
        free(w);
        return 1;
    }
    w->listening = 1;

    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    uv_timer_start(&w->tick, worker_on_tick, WORKER_TICK_MS, WORKER_TICK_MS);
    uv_check_init(&w->loop, &w->flush);
    w->flush.data = w;
    uv_check_start(&w->flush, worker_on_check);
    uv_signal_init(&w->loop, &w->sigterm);
    w->sigterm.data = w;
    uv_signal_start(&w->sigterm, worker_on_signal, SIGTERM);
    uv_signal_init(&w->loop, &w->sigusr1);
    w->sigusr1.data = w;
    uv_signal_start(&w->sigusr1, worker_on_signal, SIGUSR1);

    r = hub_init(w, w->slot->wake_fd, broker_enabled(w) ? &cluster_backend : &hub_local_backend);
    if (r < 0)
        log_msg(LOG_ERROR, "error", "worker %d cannot poll its wake-up eventfd: %s; "
                "it will only deliver messages published on itself", slot, uv_strerror(r));

    r = broker_init(w, &cluster_broker_events);
    if (r < 0)
        log_msg(LOG_ERROR, "error", "worker %d cannot set up its broker connections: %s", slot,
                strerror(-r));
#if WSGATE_FAULT_INJECTION
    worker_arm_faults(w);
#endif
    atomic_store(&w->slot->state, WORKER_RUNNING);
    log_msg(LOG_INFO, "listen", "worker %d serving (pid %d)", slot, (int)getpid());

    uv_run(&w->loop, UV_RUN_DEFAULT);

    /* Drained (or told to stop): close every handle and let their close
     * callbacks free what they own, so nothing leaks at exit. */
    broker_close(w);
    hub_close(w);
    uv_walk(&w->loop, worker_close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    tlsconn_ctx_free(w);
    deflate_worker_free(w);
    auth_key_clear(&w->auth_key);
    free(w);
    return 0;
}
