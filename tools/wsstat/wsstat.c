/*
 * wsstat — a live view of a running wsgate, read from its shared segment,
 * like varnishstat.
 *
 *   wsstat [-p PORT] [-i SECONDS] [-n COUNT] [-1] [-j]
 *
 * It attaches read-only (PROT_READ) to the segment "/wsgate-<port>" that the
 * master creates, and never writes to it, opens no socket and takes no
 * lock: the gateway cannot tell it is being watched. Per worker slot in use
 * it shows pid, state, connections, messages per second in and out, p50
 * and p99 message latency and restarts; then the replica's totals
 * (connections, disconnections by reason, errors by type, config
 * generation, reloads); then the slowest connections by heartbeat round
 * trip ("top by RTT": conn id, remote address, last RTT, unsent bytes,
 * subscriptions), from the tables workers refresh every second, with the
 * replica's RTT p50/p99 since start.
 *
 * Rates and percentiles are over the last refresh interval, from the deltas
 * of the counters and of the latency histogram (a percentile is the upper
 * bound of the bucket it falls in). The first view has no previous sample:
 * its rates are averages since the worker (or the master) started and its
 * percentiles cover every message since then.
 *
 * Output: a refreshing screen on a terminal; plain successive views when
 * stdout is not a terminal; `-1` prints one view and exits (for scripts);
 * `-j` prints one JSON object per refresh, one per line. Exit status 0, or
 * 1 when there is no gateway to watch (with a message saying why).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "segment.h"

struct wsstat_options {
    int port;
    double interval_s;
    long count; /* refreshes; <= 0: until interrupted */
    int once;
    int json;
};

/* One sample of the segment: what a view is computed from. */
struct wsstat_sample {
    uint64_t at_ns; /* CLOCK_MONOTONIC */
    int64_t wall_ms;
    int32_t pid[SEGMENT_WORKER_SLOTS];
    struct segment_totals slot[SEGMENT_WORKER_SLOTS];
    struct segment_totals total;
};

/* The figures of one row (a worker, or the whole replica). */
struct wsstat_rates {
    double in_per_s, out_per_s;
    double p50_s, p99_s; /* NAN when no message in the window */
};

static volatile sig_atomic_t wsstat_stop;

static void wsstat_on_signal(int sig)
{
    (void)sig;
    wsstat_stop = 1;
}

static void wsstat_usage(FILE *f)
{
    fprintf(f,
            "usage: wsstat [-p PORT] [-i SECONDS] [-n COUNT] [-1] [-j]\n"
            "Live statistics of the wsgate on PORT, read from its shared segment.\n"
            "  -p PORT     the gateway's port (segment /wsgate-PORT; default 8003)\n"
            "  -i SECONDS  refresh interval (default 1; fractions allowed)\n"
            "  -n COUNT    number of refreshes, then exit (default: until Ctrl-C)\n"
            "  -1          print one view and exit (no screen control)\n"
            "  -j          one JSON object per refresh, one per line\n"
            "  -h          this help\n");
}

static int wsstat_parse_args(int argc, char **argv, struct wsstat_options *o)
{
    o->port = 8003;
    o->interval_s = 1.0;
    o->count = 0;
    o->once = 0;
    o->json = 0;
    int opt;
    char *end;
    while ((opt = getopt(argc, argv, "p:i:n:1jh")) != -1) {
        switch (opt) {
        case 'p': {
            long p = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || p < 1 || p > 65535) {
                fprintf(stderr, "wsstat: -p: '%s' is not a port (1-65535)\n", optarg);
                return -1;
            }
            o->port = (int)p;
            break;
        }
        case 'i':
            o->interval_s = strtod(optarg, &end);
            if (*optarg == '\0' || *end || !(o->interval_s >= 0.01 && o->interval_s <= 86400)) {
                fprintf(stderr, "wsstat: -i: '%s' is not an interval (0.01-86400 seconds)\n",
                        optarg);
                return -1;
            }
            break;
        case 'n':
            o->count = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || o->count < 1) {
                fprintf(stderr, "wsstat: -n: '%s' is not a positive count\n", optarg);
                return -1;
            }
            break;
        case '1':
            o->once = 1;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'h':
            wsstat_usage(stdout);
            exit(0);
        default:
            wsstat_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wsstat: unexpected argument '%s'\n", argv[optind]);
        wsstat_usage(stderr);
        return -1;
    }
    if (o->once)
        o->count = 1;
    return 0;
}

/* The master still runs: it exists (signal 0) and is not a zombie that
 * nobody has reaped yet. */
static int wsstat_master_alive(const struct segment *seg)
{
    pid_t pid = atomic_load_explicit(&seg->master_pid, memory_order_relaxed);
    if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
        return 0;
    char path[64], stat[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1; /* no /proc: trust kill() */
    size_t n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = '\0';
    const char *paren = strrchr(stat, ')'); /* "pid (comm) S ..." */
    return !(paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'));
}

/* Attach to the port's segment; on failure print why and return -1. */
static int wsstat_attach(int port, const struct segment **out)
{
    char name[64];
    segment_name(port, name, sizeof(name));
    int r = segment_attach_readonly(name, out);
    if (r == -ENOENT) {
        fprintf(stderr,
                "wsstat: no gateway on port %d: shared segment %s does not exist "
                "(is wsgate running with port: %d?)\n",
                port, name, port);
        return -1;
    }
    if (r == -EPROTO) {
        fprintf(stderr,
                "wsstat: %s is not a wsgate segment this wsstat can read (wrong magic, "
                "layout version or size; wsstat knows layout %u)\n",
                name, SEGMENT_LAYOUT_VERSION);
        return -1;
    }
    if (r < 0) {
        fprintf(stderr, "wsstat: cannot attach to %s: %s\n", name, strerror(-r));
        return -1;
    }
    if (!wsstat_master_alive(*out)) {
        fprintf(stderr,
                "wsstat: no gateway on port %d: %s was left by master pid %d, which is not "
                "running\n",
                port, name, (int)atomic_load(&(*out)->master_pid));
        segment_detach(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static void wsstat_take(const struct segment *seg, struct wsstat_sample *s)
{
    s->at_ns = clock_now_ns();
    s->wall_ms = clock_wall_ms();
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        s->pid[i] = atomic_load_explicit(&seg->worker[i].pid, memory_order_relaxed);
        segment_read_counters(&seg->worker[i].counters, &s->slot[i]);
    }
    segment_sum_counters(seg, &s->total);
}

/* Counter delta; a slot whose counters went back (the master folded a dead
 * worker's counters into the retired block) starts again from 0. */
static uint64_t wsstat_delta(uint64_t now, uint64_t before)
{
    return now >= before ? now - before : now;
}

/* Upper bound of the bucket holding quantile q of a (non-cumulative)
 * histogram, in seconds; NAN when empty. */
static double wsstat_quantile(const uint64_t *buckets, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
        total += buckets[i];
    if (total == 0)
        return NAN;
    double rank = q * (double)total;
    uint64_t seen = 0;
    for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++) {
        seen += buckets[i];
        if ((double)seen >= rank)
            return segment_latency_bounds[i];
    }
    return segment_latency_bounds[SEGMENT_LATENCY_BUCKETS - 1];
}

/* Rates of one row: over the window since `prev`, or (prev == NULL) over
 * `lifetime_s` with the whole histogram. */
static void wsstat_rates(const struct segment_totals *now, const struct segment_totals *prev,
                         double window_s, struct wsstat_rates *r)
{
    uint64_t buckets[SEGMENT_LATENCY_BUCKETS];
    uint64_t in, out;
    if (prev) {
        in = wsstat_delta(now->messages_received, prev->messages_received);
        out = wsstat_delta(now->messages_sent, prev->messages_sent);
        for (int i = 0; i < SEGMENT_LATENCY_BUCKETS; i++)
            buckets[i] = wsstat_delta(now->latency_bucket[i], prev->latency_bucket[i]);
    } else {
        in = now->messages_received;
        out = now->messages_sent;
        memcpy(buckets, now->latency_bucket, sizeof(buckets));
    }
    r->in_per_s = window_s > 0 ? (double)in / window_s : 0.0;
    r->out_per_s = window_s > 0 ? (double)out / window_s : 0.0;
    r->p50_s = wsstat_quantile(buckets, 0.50);
    r->p99_s = wsstat_quantile(buckets, 0.99);
}

static void wsstat_row_rates(const struct segment *seg, const struct wsstat_sample *cur,
                             const struct wsstat_sample *prev, int slot, struct wsstat_rates *r)
{
    if (prev && prev->pid[slot] == cur->pid[slot]) {
        wsstat_rates(&cur->slot[slot], &prev->slot[slot],
                     (double)(cur->at_ns - prev->at_ns) / 1e9, r);
        return;
    }
    /* No earlier sample of this worker: average over its life. */
    int64_t started = atomic_load_explicit(&seg->worker[slot].started_at_ms, memory_order_relaxed);
    double life = started > 0 ? (double)(cur->wall_ms - started) / 1000.0 : 0.0;
    wsstat_rates(&cur->slot[slot], NULL, life > 0 ? life : 0.0, r);
}

static void wsstat_total_rates(const struct segment *seg, const struct wsstat_sample *cur,
                               const struct wsstat_sample *prev, struct wsstat_rates *r)
{
    if (prev) {
        wsstat_rates(&cur->total, &prev->total, (double)(cur->at_ns - prev->at_ns) / 1e9, r);
        return;
    }
    double life = (double)(cur->wall_ms - seg->created_at_ms) / 1000.0;
    wsstat_rates(&cur->total, NULL, life > 0 ? life : 0.0, r);
}

static void wsstat_format_latency(double s, char *out, size_t len)
{
    if (isnan(s))
        snprintf(out, len, "-");
    else if (isinf(s))
        snprintf(out, len, ">%gs", segment_latency_bounds[SEGMENT_LATENCY_BUCKETS - 2]);
    else if (s < 1e-3)
        snprintf(out, len, "%gus", s * 1e6);
    else if (s < 1.0)
        snprintf(out, len, "%gms", s * 1e3);
    else
        snprintf(out, len, "%gs", s);
}

static void wsstat_format_uptime(double s, char *out, size_t len)
{
    long t = s > 0 ? (long)s : 0;
    if (t >= 86400)
        snprintf(out, len, "%ldd%02ldh%02ldm", t / 86400, t % 86400 / 3600, t % 3600 / 60);
    else if (t >= 3600)
        snprintf(out, len, "%ldh%02ldm%02lds", t / 3600, t % 3600 / 60, t % 60);
    else
        snprintf(out, len, "%ldm%02lds", t / 60, t % 60);
}

/* The slowest connections of the replica by last heartbeat RTT, slowest
 * first: every worker's table merged. */
#define WSSTAT_TOP_RTT 10

struct wsstat_slow {
    int slot;
    struct segment_rtt_entry e;
};

static int wsstat_slow_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct wsstat_slow *)a)->e.rtt_ns;
    uint64_t y = ((const struct wsstat_slow *)b)->e.rtt_ns;
    return x < y ? 1 : x > y ? -1 : 0;
}

static int wsstat_slowest(const struct segment *seg, struct wsstat_slow *out)
{
    static struct wsstat_slow all[SEGMENT_WORKER_SLOTS * SEGMENT_RTT_TOP];
    int n = 0;
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        uint32_t state = atomic_load_explicit(&seg->worker[i].state, memory_order_relaxed);
        if (state != WORKER_RUNNING && state != WORKER_DRAINING)
            continue;
        struct segment_rtt_entry e[SEGMENT_RTT_TOP];
        uint32_t count = 0;
        if (segment_read_rtt_top(&seg->worker[i], e, &count) < 0)
            continue;
        for (uint32_t k = 0; k < count; k++) {
            all[n].slot = i;
            all[n].e = e[k];
            all[n].e.remote[SEGMENT_REMOTE_MAX - 1] = '\0';
            n++;
        }
    }
    qsort(all, (size_t)n, sizeof(all[0]), wsstat_slow_cmp);
    if (n > WSSTAT_TOP_RTT)
        n = WSSTAT_TOP_RTT;
    memcpy(out, all, (size_t)n * sizeof(*out));
    return n;
}

static void wsstat_print_text(const struct wsstat_options *o, const struct segment *seg,
                              const struct config *cfg, uint64_t generation,
                              const struct wsstat_sample *cur, const struct wsstat_sample *prev)
{
    char uptime[32], p50[16], p99[16];
    wsstat_format_uptime((double)(cur->wall_ms - seg->created_at_ms) / 1000.0, uptime,
                         sizeof(uptime));
    printf("wsgate on port %d: master pid %d, environment %s, up %s%s\n", o->port,
           (int)atomic_load(&seg->master_pid), cfg->environment, uptime,
           atomic_load(&seg->draining) ? ", DRAINING" : "");
    printf("config generation %llu; reloads %llu ok, %llu failed; rates %s\n",
           (unsigned long long)generation,
           (unsigned long long)atomic_load(&seg->config_reloads_success),
           (unsigned long long)atomic_load(&seg->config_reloads_failure),
           prev ? "over the last interval" : "averaged since start");
    printf("\n%4s %8s %-9s %7s %10s %10s %8s %8s %8s\n", "SLOT", "PID", "STATE", "CONNS",
           "MSG/S IN", "MSG/S OUT", "P50", "P99", "RESTARTS");
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        const struct segment_worker *w = &seg->worker[i];
        uint32_t state = atomic_load_explicit(&w->state, memory_order_relaxed);
        if (state == WORKER_EMPTY)
            continue;
        struct wsstat_rates r;
        wsstat_row_rates(seg, cur, prev, i, &r);
        wsstat_format_latency(r.p50_s, p50, sizeof(p50));
        wsstat_format_latency(r.p99_s, p99, sizeof(p99));
        printf("%4d %8d %-9s %7lld %10.1f %10.1f %8s %8s %8u\n", i, (int)cur->pid[i],
               segment_worker_state_name(state),
               (long long)atomic_load_explicit(&w->connections, memory_order_relaxed),
               r.in_per_s, r.out_per_s, p50, p99,
               (unsigned)atomic_load_explicit(&w->restarts, memory_order_relaxed));
    }
    struct wsstat_rates r;
    wsstat_total_rates(seg, cur, prev, &r);
    wsstat_format_latency(r.p50_s, p50, sizeof(p50));
    wsstat_format_latency(r.p99_s, p99, sizeof(p99));
    printf("%4s %8s %-9s %7lld %10.1f %10.1f %8s %8s %8llu\n", "ALL", "", "",
           (long long)atomic_load(&seg->connections), r.in_per_s, r.out_per_s, p50, p99,
           (unsigned long long)atomic_load(&seg->worker_restarts));

    const struct segment_totals *t = &cur->total;
    printf("\nconnections %lld of max %lld; accepted since start %llu\n",
           (long long)atomic_load(&seg->connections), (long long)cfg->max_connections,
           (unsigned long long)t->connections_total);
    printf("messages in %llu, out %llu; bytes in %llu, out %llu\n",
           (unsigned long long)t->messages_received, (unsigned long long)t->messages_sent,
           (unsigned long long)t->bytes_received, (unsigned long long)t->bytes_sent);
    printf("disconnections:");
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        printf(" %s %llu", segment_disconnect_reason_name(i),
               (unsigned long long)t->disconnections[i]);
    printf("\nerrors:");
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        printf(" %s %llu", segment_connection_error_name(i),
               (unsigned long long)t->connection_errors[i]);
    printf("\n");

    char rtt[16];
    wsstat_format_latency(segment_histogram_quantile(t->rtt_bucket, 0.5), p50, sizeof(p50));
    wsstat_format_latency(segment_histogram_quantile(t->rtt_bucket, 0.99), p99, sizeof(p99));
    printf("\ntop by RTT (heartbeat round trip; since start p50 %s, p99 %s, %llu pongs)\n", p50,
           p99, (unsigned long long)segment_histogram_count(t->rtt_bucket));
    struct wsstat_slow slow[WSSTAT_TOP_RTT];
    int n = wsstat_slowest(seg, slow);
    if (n == 0) {
        printf("  no round trip measured yet (one per heartbeat_interval per connection)\n");
        return;
    }
    printf("%-12s %-47s %10s %12s %5s\n", "CONN", "REMOTE", "RTT", "UNSENT", "SUBS");
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%d-%llu", slow[i].slot, (unsigned long long)slow[i].e.conn_id);
        wsstat_format_latency((double)slow[i].e.rtt_ns / 1e9, rtt, sizeof(rtt));
        printf("%-12s %-47s %10s %12llu %5u\n", id, slow[i].e.remote, rtt,
               (unsigned long long)slow[i].e.unsent_bytes, slow[i].e.subscriptions);
    }
}

static json_t *wsstat_json_seconds(double s)
{
    /* +Inf (beyond the last finite bound) is not JSON: say so as a string. */
    if (isnan(s))
        return json_null();
    if (isinf(s))
        return json_string("+Inf");
    return json_real(s);
}

static void wsstat_json_rates(json_t *o, const struct wsstat_rates *r)
{
    json_object_set_new(o, "msgs_in_per_s", json_real(r->in_per_s));
    json_object_set_new(o, "msgs_out_per_s", json_real(r->out_per_s));
    json_object_set_new(o, "latency_p50_s", wsstat_json_seconds(r->p50_s));
    json_object_set_new(o, "latency_p99_s", wsstat_json_seconds(r->p99_s));
}

static int wsstat_print_json(const struct wsstat_options *o, const struct segment *seg,
                             const struct config *cfg, uint64_t generation,
                             const struct wsstat_sample *cur, const struct wsstat_sample *prev)
{
    const struct segment_totals *t = &cur->total;
    json_t *root = json_object();
    json_object_set_new(root, "ts", json_integer(cur->wall_ms));
    json_object_set_new(root, "port", json_integer(o->port));
    json_object_set_new(root, "master_pid", json_integer(atomic_load(&seg->master_pid)));
    json_object_set_new(root, "environment", json_string(cfg->environment));
    json_object_set_new(root, "uptime_s",
                        json_real((double)(cur->wall_ms - seg->created_at_ms) / 1000.0));
    json_object_set_new(root, "draining", json_boolean(atomic_load(&seg->draining)));
    json_object_set_new(root, "interval_s",
                        json_real(prev ? (double)(cur->at_ns - prev->at_ns) / 1e9 : 0.0));
    json_object_set_new(root, "config_generation", json_integer((json_int_t)generation));
    json_t *reloads = json_object();
    json_object_set_new(reloads, "success",
                        json_integer((json_int_t)atomic_load(&seg->config_reloads_success)));
    json_object_set_new(reloads, "failure",
                        json_integer((json_int_t)atomic_load(&seg->config_reloads_failure)));
    json_object_set_new(root, "config_reloads", reloads);
    json_object_set_new(root, "worker_restarts",
                        json_integer((json_int_t)atomic_load(&seg->worker_restarts)));
    json_object_set_new(root, "connections", json_integer(atomic_load(&seg->connections)));
    json_object_set_new(root, "max_connections", json_integer(cfg->max_connections));
    json_object_set_new(root, "connections_total", json_integer((json_int_t)t->connections_total));
    json_t *disc = json_object();
    for (int i = 0; i < DISCONNECT_REASON_COUNT; i++)
        json_object_set_new(disc, segment_disconnect_reason_name(i),
                            json_integer((json_int_t)t->disconnections[i]));
    json_object_set_new(root, "disconnections", disc);
    json_t *errs = json_object();
    for (int i = 0; i < CONN_ERROR_TYPE_COUNT; i++)
        json_object_set_new(errs, segment_connection_error_name(i),
                            json_integer((json_int_t)t->connection_errors[i]));
    json_object_set_new(root, "connection_errors", errs);
    json_object_set_new(root, "messages_received", json_integer((json_int_t)t->messages_received));
    json_object_set_new(root, "messages_sent", json_integer((json_int_t)t->messages_sent));
    json_object_set_new(root, "bytes_received", json_integer((json_int_t)t->bytes_received));
    json_object_set_new(root, "bytes_sent", json_integer((json_int_t)t->bytes_sent));
    json_object_set_new(root, "latency_count", json_integer((json_int_t)t->latency_count));
    struct wsstat_rates r;
    wsstat_total_rates(seg, cur, prev, &r);
    wsstat_json_rates(root, &r);

    json_t *workers = json_array();
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        const struct segment_worker *w = &seg->worker[i];
        uint32_t state = atomic_load_explicit(&w->state, memory_order_relaxed);
        if (state == WORKER_EMPTY)
            continue;
        json_t *jw = json_object();
        json_object_set_new(jw, "slot", json_integer(i));
        json_object_set_new(jw, "pid", json_integer(cur->pid[i]));
        json_object_set_new(jw, "state", json_string(segment_worker_state_name(state)));
        json_object_set_new(jw, "connections",
                            json_integer(atomic_load_explicit(&w->connections, memory_order_relaxed)));
        json_object_set_new(jw, "restarts",
                            json_integer(atomic_load_explicit(&w->restarts, memory_order_relaxed)));
        json_object_set_new(jw, "messages_received",
                            json_integer((json_int_t)cur->slot[i].messages_received));
        json_object_set_new(jw, "messages_sent", json_integer((json_int_t)cur->slot[i].messages_sent));
        wsstat_row_rates(seg, cur, prev, i, &r);
        wsstat_json_rates(jw, &r);
        json_array_append_new(workers, jw);
    }
    json_object_set_new(root, "workers", workers);

    json_t *rtt = json_object();
    json_object_set_new(rtt, "p50_s", wsstat_json_seconds(segment_histogram_quantile(t->rtt_bucket, 0.5)));
    json_object_set_new(rtt, "p99_s", wsstat_json_seconds(segment_histogram_quantile(t->rtt_bucket, 0.99)));
    json_object_set_new(rtt, "samples", json_integer((json_int_t)segment_histogram_count(t->rtt_bucket)));
    json_t *slowest = json_array();
    struct wsstat_slow slow[WSSTAT_TOP_RTT];
    int n = wsstat_slowest(seg, slow);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%d-%llu", slow[i].slot, (unsigned long long)slow[i].e.conn_id);
        json_t *js = json_object();
        json_object_set_new(js, "conn", json_string(id));
        json_object_set_new(js, "remote", json_string(slow[i].e.remote));
        json_object_set_new(js, "rtt_s", json_real((double)slow[i].e.rtt_ns / 1e9));
        json_object_set_new(js, "unsent_bytes", json_integer((json_int_t)slow[i].e.unsent_bytes));
        json_object_set_new(js, "subscriptions", json_integer(slow[i].e.subscriptions));
        json_array_append_new(slowest, js);
    }
    json_object_set_new(rtt, "slowest", slowest);
    json_object_set_new(root, "rtt", rtt);

    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (!text)
        return -1;
    puts(text);
    free(text);
    return 0;
}

static void wsstat_sleep(double seconds)
{
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    /* A signal cuts the sleep short; the loop then sees wsstat_stop. */
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    struct wsstat_options o;
    if (wsstat_parse_args(argc, argv, &o) < 0)
        return 2;

    const struct segment *seg = NULL;
    if (wsstat_attach(o.port, &seg) < 0)
        return 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = wsstat_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int screen = !o.once && !o.json && isatty(STDOUT_FILENO);
    struct wsstat_sample *cur = calloc(1, sizeof(*cur));
    struct wsstat_sample *prev = calloc(1, sizeof(*prev));
    if (!cur || !prev) {
        fprintf(stderr, "wsstat: out of memory\n");
        return 1;
    }
    int have_prev = 0, status = 0;
    for (long n = 0; !wsstat_stop && (o.count <= 0 || n < o.count); n++) {
        if (n > 0)
            wsstat_sleep(o.interval_s);
        if (wsstat_stop)
            break;
        if (!wsstat_master_alive(seg)) {
            /* The master exited (its segment is unlinked) or was killed. */
            fprintf(stderr, "wsstat: the gateway on port %d is gone (master pid %d exited)\n",
                    o.port, (int)atomic_load(&seg->master_pid));
            status = 1;
            break;
        }
        struct config cfg;
        uint64_t generation = segment_read_config(seg, &cfg);
        wsstat_take(seg, cur);
        const struct wsstat_sample *p = have_prev ? prev : NULL;
        if (o.json) {
            if (wsstat_print_json(&o, seg, &cfg, generation, cur, p) < 0) {
                fprintf(stderr, "wsstat: out of memory\n");
                status = 1;
                break;
            }
        } else {
            if (screen)
                fputs("\033[H\033[2J", stdout);
            else if (n > 0)
                putchar('\n');
            wsstat_print_text(&o, seg, &cfg, generation, cur, p);
        }
        fflush(stdout);
        struct wsstat_sample *tmp = prev;
        prev = cur;
        cur = tmp;
        have_prev = 1;
    }
    free(cur);
    free(prev);
    segment_detach(seg);
    return status;
}
