/*
 * wsbench — load generator for wsgate, the VitalStream WebSocket gateway.
 *
 * It opens plain ws:// connections to the gateway on a loopback address
 * (default ws://127.0.0.1:8003/ws), with its own minimal RFC 6455 client
 * (handshake with Sec-WebSocket-Accept check, masked client frames, server
 * frames of any length, fragmentation, ping -> pong, close handshake), runs
 * one scenario for a fixed duration and reports the results: a human table
 * on stderr and exactly one JSON line on stdout.
 *
 * Scenarios (see usage()):
 *   ping    N connections, each one app-level ping in flight; RTT percentiles.
 *   idle    C idle connections (ramped, <= 256 handshakes in flight); the
 *           handshake rate, server CPU per handshake, server RSS per conn.
 *   fanout  1 stream, S subscribers, 1 publisher at R msg/s in total.
 *   ward    M streams, each with 1 publisher (50 msg/s, with id -> ack) and
 *           2 subscribers.
 *
 * A run goes through phases: CONNECT (ramp up, subscribe), WARMUP (traffic,
 * not counted), MEASURE (the window all rates and percentiles come from),
 * DRAIN (publishing stops; wait for in-flight messages so the tail can be
 * checked for loss), CLOSE (close handshake with every connection).
 *
 * Publish-to-receive latency: the publisher puts CLOCK_MONOTONIC ns into the
 * message data as "t" (client and server run on one machine, the subscriber
 * is this very process), the subscriber subtracts it from its receive time.
 * Every subscriber tracks the last seq of its stream and counts lost
 * messages (seq jumps), duplicates (seq repeats) and reordering.
 *
 * With --pid, the server's CPU time and RSS are read from /proc for that
 * process and all its descendants (the master and its workers).
 *
 * --payload ecg publishes tools/ecg-sim's shape (12 leads x 10 samples,
 * millivolts with 3 decimals and noise) instead of the compressible
 * letter padding; --deflate offers permessage-deflate (RFC 7692) on every
 * connection and inflates what arrives compressed, with one inflate stream
 * per connection kept from message to message as real clients do (the
 * server may keep its context); --deflate-alone offers it with
 * server_no_context_takeover, so every message is compressed on its own.
 * Wire bytes per delivered message are reported either way.
 *
 * Only loopback addresses are accepted as --host: this is a local benchmark,
 * never a tool to aim at somebody else's server.
 *
 * Build: part of the meson project (tools/meson.build), or standalone:
 *   gcc -O2 -Wall -Wextra -Wshadow -o wsbench wsbench.c -luv -lcrypto -lm -lz
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <zlib.h>

/* ------------------------------------------------------------------------ */
/* Limits and constants                                                     */
/* ------------------------------------------------------------------------ */

#define BENCH_MAX_INFLIGHT_HANDSHAKES 256
#define BENCH_READ_CHUNK              (64 * 1024)
#define BENCH_MAX_HANDSHAKE_BYTES     16384
#define BENCH_MAX_MESSAGE             (16u * 1024 * 1024) /* larger => protocol error */
#define BENCH_RBUF_KEEP               (64 * 1024)  /* read buffers above this are freed when empty */
#define BENCH_SETUP_BASE_MS           60000        /* + BENCH_SETUP_PER_CONN_MS per connection */
#define BENCH_SETUP_PER_CONN_MS       5
#define BENCH_DRAIN_TIMEOUT_MS        3000
#define BENCH_CLOSE_TIMEOUT_MS        2000
#define BENCH_CHECK_INTERVAL_MS       10
#define BENCH_PAD_LEN                 300
#define BENCH_PUB_BACKLOG_LIMIT       (1024 * 1024) /* unsent bytes before a publisher pauses */
#define BENCH_PUB_MAX_BATCH           1000          /* frames per publisher per tick */
#define BENCH_PUB_FRAME_MAX           1600          /* bytes of one encoded publish frame, max */
#define BENCH_ACK_RING                512           /* send times remembered per publisher */
#define BENCH_MAX_REASONS             32
#define BENCH_WS_GUID                 "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define BENCH_FANOUT_STREAM           "bench/fanout"
#define BENCH_BARRIER_PING_ID         0 /* publishers' end-of-run ping; app ping ids start at 1 */

enum bench_scenario { SC_PING, SC_IDLE, SC_FANOUT, SC_WARD };
static const char *const bench_scenario_names[] = { "ping", "idle", "fanout", "ward" };

enum bench_phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_CLOSE, PH_DONE };

enum client_role { ROLE_PING, ROLE_IDLE, ROLE_SUB, ROLE_PUB };

enum client_state {
    CS_NEW,        /* not started (handle not initialised) */
    CS_CONNECTING, /* TCP connect in progress */
    CS_HANDSHAKE,  /* upgrade request sent, waiting for the 101 head */
    CS_OPEN,       /* WebSocket open */
    CS_CLOSING,    /* a close frame was sent or received; waiting for the end */
    CS_CLOSED      /* uv_close() called */
};

/* ------------------------------------------------------------------------ */
/* Data structures                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Log-linear latency histogram, in nanoseconds: values below 256 have a
 * bucket each, above that every power of two is split into 128 buckets, so
 * any recorded value is known to within 1/128 (0.8 %). Fixed size (about
 * 60 KB), so a long run never grows memory.
 */
#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_SUB      (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_BUCKETS  (2 * BENCH_HIST_SUB + (63 - BENCH_HIST_SUB_BITS) * BENCH_HIST_SUB)

typedef struct bench_hist {
    uint64_t counts[BENCH_HIST_BUCKETS];
    uint64_t count;
    uint64_t min, max;
    long double sum;
} bench_hist;

typedef struct bench_opts {
    enum bench_scenario scenario;
    char host[INET6_ADDRSTRLEN];
    int port;
    int sub_ports[16];    /* --sub-ports: subscribers spread over these (cluster runs) */
    int nsub_ports;
    double duration_s;
    double warmup_s;
    long connections;  /* ping, idle */
    long streams;      /* ward */
    long subscribers;  /* fanout: total; ward: per stream */
    double rate;       /* fanout: total msg/s; ward: msg/s per stream */
    long pid;          /* 0: no server measurement */
    bool json_only;
    bool deflate;         /* offer permessage-deflate */
    bool deflate_alone;   /* ... with server_no_context_takeover */
    bool ecg;             /* --payload ecg */
} bench_opts;

typedef struct bench_client bench_client;

typedef struct bench_stream {
    char name[40];
    bench_client *pub; /* its publisher, if any */
} bench_stream;

struct bench_client {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uint32_t index;
    uint8_t role;         /* enum client_role */
    uint8_t state;        /* enum client_state */
    bool handle_inited;   /* uv_tcp_init done: must be uv_close()d */
    bool in_flight;       /* counted in bench.inflight (connect/handshake pending) */
    bool settled;         /* setup finished for it (ready or failed) */
    bool ready;           /* open (and subscribed, for subscribers) */
    bool failed;          /* counted as a failed connection */
    bool close_received;  /* the server's close frame arrived */
    bool close_sent;
    uint8_t frag_op;      /* opcode of the fragmented message being assembled, 0: none */
    bool frag_rsv1;       /* ... and it is compressed */
    z_stream *inf;        /* --deflate: this connection's inflate stream, from its first
                             compressed message on */
    char accept[29];      /* expected Sec-WebSocket-Accept */

    uint8_t *rbuf;        /* bytes of an incomplete head/frame */
    size_t rlen, rcap;
    uint8_t *frag;        /* payload of a fragmented message so far */
    size_t frag_len;

    int32_t stream;       /* index into bench.streams, -1: none */

    /* subscriber */
    bool subscribed;
    int64_t base_seq;     /* seq of the subscribed reply */
    int64_t last_seq;
    uint64_t seen_mask;   /* see client_track_seq */

    /* publisher */
    uint64_t pub_start_ns;
    uint64_t pub_sent;
    uint64_t pub_acks;
    uint64_t pub_errors;
    bool pub_barrier_sent, pub_drained;
    uint64_t *ack_ring;   /* send time by id % BENCH_ACK_RING (ward) */

    /* ping */
    uint64_t ping_id;
    uint64_t ping_sent_ns;
    bool ping_outstanding;
};

/* One uv_write: the request, and the frames it carries right behind it. */
typedef struct bench_write {
    uv_write_t req;
    bench_client *client;
    bool close_after;    /* uv_close the connection once written (close reply) */
    size_t len, cap;
    uint8_t data[];
} bench_write;

typedef struct bench_proc_sample {
    bool ok;
    int nprocs;
    double cpu_s;
    uint64_t rss_kib;
    uint64_t pss_kib;    /* 0 when smaps_rollup is unreadable */
} bench_proc_sample;

typedef struct bench_reason {
    char text[112];
    uint64_t count;
} bench_reason;

/* All the state of a run; there is exactly one. */
static struct bench {
    bench_opts opt;
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    struct sockaddr_storage sub_addr[16]; /* bench.addr with each --sub-ports port */
    char host_header[INET6_ADDRSTRLEN + 16];

    bench_client *clients;
    uint32_t nclients;
    bench_stream *streams;
    uint32_t nstreams;
    bench_client **pubs;
    uint32_t npubs;

    enum bench_phase phase;
    bool finished;
    uv_timer_t phase_timer, pub_timer, check_timer;
    uv_signal_t sigint;
    int sigint_count;

    /* ramp */
    uint32_t next_to_start;
    uint32_t inflight;
    bool in_ramp;
    uint32_t settled, ready;
    uint32_t open_handles;

    /* timeline */
    uint64_t start_ns, ramp_end_ns, measure_start_ns, measure_end_ns;
    bench_proc_sample proc_base, proc_ramp_end, proc_measure_start, proc_measure_end;
    double client_cpu_start, client_cpu_end;

    /* results */
    uint32_t handshakes_ok;
    uint32_t failed;
    bench_reason reasons[BENCH_MAX_REASONS];
    uint32_t nreasons;
    uint64_t reasons_dropped;
    bench_reason error_codes[BENCH_MAX_REASONS];
    uint32_t nerror_codes;

    uint64_t delivered_total, delivered_window;
    uint64_t published_total, published_window;
    uint64_t acks_total, acks_window;
    uint64_t errors_total;
    uint64_t pongs_total, pongs_window;
    uint64_t lost, duplicate, out_of_order, wrong_stream, early_messages;
    uint64_t missing_at_end;
    uint64_t gaps, reconnects, unknown_types, unparsed, binary_frames;
    uint64_t server_pings;
    uint64_t pub_backlog_skips;
    uint64_t bytes_sent, bytes_received;
    uint64_t bytes_received_start, bytes_received_end; /* at the measurement window's ends */
    uint64_t compressed_msgs;
    uint8_t *inf_buf;     /* --deflate: what the last compressed message inflated to */
    size_t inf_cap;
    bench_hist lat, ack_lat;

    char pad[BENCH_PAD_LEN + 1];
    uint64_t rng;
} bench;

static uint8_t bench_read_chunk[BENCH_READ_CHUNK]; /* shared by all reads, see client_on_alloc */

static void client_close(bench_client *c);
static void client_fail(bench_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bench_enter_warmup(void);
static void bench_enter_measure(void);
static void bench_enter_drain(void);
static void bench_enter_close(void);
static void bench_finish(void);
static void bench_ramp(void);

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bench_log(const char *fmt, ...)
{
    if (bench.opt.json_only)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("wsbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* xorshift64*: mask keys only need to be unpredictable to proxies, not secret. */
static uint32_t bench_rand32(void)
{
    uint64_t x = bench.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    bench.rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

static double bench_client_cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Counts one occurrence of a short text in a small table (failure reasons,
 * error codes). Distinct texts beyond the table size are only counted. */
static void bench_reason_add(bench_reason *table, uint32_t *n, const char *text)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (strcmp(table[i].text, text) == 0) {
            table[i].count++;
            return;
        }
    }
    if (*n == BENCH_MAX_REASONS) {
        bench.reasons_dropped++;
        return;
    }
    snprintf(table[*n].text, sizeof table[*n].text, "%s", text);
    table[*n].count = 1;
    (*n)++;
}

/* ------------------------------------------------------------------------ */
/* Histogram                                                                */
/* ------------------------------------------------------------------------ */

static unsigned bench_hist_index(uint64_t v)
{
    if (v < 2 * BENCH_HIST_SUB)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= SUB_BITS + 1 */
    unsigned sub = (unsigned)(v >> (e - BENCH_HIST_SUB_BITS)) & (BENCH_HIST_SUB - 1);
    return 2 * BENCH_HIST_SUB + (e - BENCH_HIST_SUB_BITS - 1) * BENCH_HIST_SUB + sub;
}

/* Lower bound and width of a bucket: the inverse of bench_hist_index. */
static void bench_hist_bucket(unsigned idx, uint64_t *low, uint64_t *width)
{
    if (idx < 2 * BENCH_HIST_SUB) {
        *low = idx;
        *width = 1;
        return;
    }
    unsigned k = idx - 2 * BENCH_HIST_SUB;
    unsigned e = k / BENCH_HIST_SUB + BENCH_HIST_SUB_BITS + 1;
    uint64_t sub = k % BENCH_HIST_SUB;
    *width = 1ull << (e - BENCH_HIST_SUB_BITS);
    *low = (BENCH_HIST_SUB + sub) << (e - BENCH_HIST_SUB_BITS);
}

static void bench_hist_record(bench_hist *h, uint64_t v)
{
    h->counts[bench_hist_index(v)]++;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += v;
}

/* Value at quantile q (0..1): the middle of the bucket holding the rank,
 * clamped to the exact min/max seen. */
static uint64_t bench_hist_quantile(const bench_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t low, width;
            bench_hist_bucket(i, &low, &width);
            uint64_t v = low + width / 2;
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------------ */
/* Server CPU and memory from /proc                                         */
/* ------------------------------------------------------------------------ */

typedef struct bench_proc_entry {
    pid_t pid, ppid;
    uint64_t ticks;     /* utime + stime */
    uint64_t rss_pages;
    bool in_tree;
} bench_proc_entry;

static ssize_t bench_read_small_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Parses /proc/PID/stat. The command name (field 2) may contain spaces and
 * parentheses, so fields are counted from the last ')'. */
static bool bench_proc_parse_stat(const char *text, bench_proc_entry *e)
{
    const char *p = strrchr(text, ')');
    if (!p)
        return false;
    p++;
    /* token 0 is field 3 (state); ppid is field 4, utime 14, stime 15, rss 24 */
    uint64_t utime = 0, stime = 0, rss = 0;
    long ppid = -1;
    for (int tok = 0; tok <= 21; tok++) {
        while (*p == ' ')
            p++;
        if (!*p)
            return false;
        char *end;
        if (tok == 1)
            ppid = strtol(p, &end, 10);
        else if (tok == 11)
            utime = strtoull(p, &end, 10);
        else if (tok == 12)
            stime = strtoull(p, &end, 10);
        else if (tok == 21)
            rss = strtoull(p, &end, 10);
        while (*p && *p != ' ')
            p++;
    }
    e->ppid = (pid_t)ppid;
    e->ticks = utime + stime;
    e->rss_pages = rss;
    return true;
}

static uint64_t bench_proc_pss_kib(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    if (bench_read_small_file(path, buf, sizeof buf) <= 0)
        return 0;
    const char *p = strstr(buf, "\nPss:");
    if (!p)
        return 0;
    return strtoull(p + 5, NULL, 10);
}

/*
 * Sums CPU time (utime+stime) and resident memory of the process `root` and
 * all its descendants. Descendants are found by walking every /proc/N/stat
 * and following ppid links, so workers forked by the master are included.
 * CPU of children that already exited is not included (it moved into the
 * parent's cutime, which also counts children reaped before the window).
 */
static bench_proc_sample bench_proc_sample_tree(pid_t root)
{
    bench_proc_sample s = { 0 };
    if (root <= 0)
        return s;
    DIR *d = opendir("/proc");
    if (!d)
        return s;
    size_t n = 0, cap = 512;
    bench_proc_entry *v = malloc(cap * sizeof *v);
    if (!v) {
        closedir(d);
        return s;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        if (bench_read_small_file(path, buf, sizeof buf) <= 0)
            continue;
        bench_proc_entry e = { .pid = (pid_t)atol(de->d_name) };
        if (!bench_proc_parse_stat(buf, &e))
            continue;
        if (n == cap) {
            bench_proc_entry *nv = realloc(v, 2 * cap * sizeof *v);
            if (!nv)
                break;
            v = nv;
            cap *= 2;
        }
        v[n++] = e;
    }
    closedir(d);

    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i].pid == root) {
            v[i].in_tree = true;
            found = true;
        }
    }
    if (found) {
        /* propagate tree membership down ppid links until nothing changes */
        bool changed = true;
        while (changed) {
            changed = false;
            for (size_t i = 0; i < n; i++) {
                if (v[i].in_tree)
                    continue;
                for (size_t j = 0; j < n; j++) {
                    if (v[j].in_tree && v[j].pid == v[i].ppid) {
                        v[i].in_tree = true;
                        changed = true;
                        break;
                    }
                }
            }
        }
        long tck = sysconf(_SC_CLK_TCK);
        long page_kib = sysconf(_SC_PAGESIZE) / 1024;
        uint64_t ticks = 0;
        for (size_t i = 0; i < n; i++) {
            if (!v[i].in_tree)
                continue;
            s.nprocs++;
            ticks += v[i].ticks;
            s.rss_kib += v[i].rss_pages * (uint64_t)page_kib;
            s.pss_kib += bench_proc_pss_kib(v[i].pid);
        }
        s.cpu_s = (double)ticks / (double)(tck > 0 ? tck : 100);
        s.ok = true;
    }
    free(v);
    return s;
}

/*
 * Two descriptors kept in reserve: when the connections use up the open
 * file limit, sampling /proc (a directory and a file open at a time) would
 * fail with EMFILE. They are released only while sampling, which is
 * synchronous, so no connection can take them meanwhile.
 */
static int bench_reserve_fd[2] = { -1, -1 };

static void bench_fd_reserve(bool hold)
{
    for (int i = 0; i < 2; i++) {
        if (hold && bench_reserve_fd[i] < 0)
            bench_reserve_fd[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        else if (!hold && bench_reserve_fd[i] >= 0) {
            close(bench_reserve_fd[i]);
            bench_reserve_fd[i] = -1;
        }
    }
}

static bench_proc_sample bench_proc_sample_server(void)
{
    bench_proc_sample s = { 0 };
    if (bench.opt.pid > 0) {
        bench_fd_reserve(false);
        s = bench_proc_sample_tree((pid_t)bench.opt.pid);
        bench_fd_reserve(true);
    }
    return s;
}

/* ------------------------------------------------------------------------ */
/* Minimal JSON scanning of server replies                                  */
/* ------------------------------------------------------------------------ */

/*
 * Returns a pointer to the value of "key" in p[0..n), or NULL. This is a
 * flat text search, not a parser: it finds the first `"key"` followed by
 * optional blanks and a colon. Good enough for the gateway's replies, whose
 * top-level keys are fixed and whose only nested object is our own `data`
 * ({"t":..,"pad":".."}: letters only, no key the caller looks for at the top
 * level). A key inside a string value would need `\"key\"`, which is
 * escaped and therefore does not match.
 */
static const char *bench_json_value(const char *p, size_t n, const char *key)
{
    char pat[40];
    int plen = snprintf(pat, sizeof pat, "\"%s\"", key);
    if (plen <= 0 || (size_t)plen >= sizeof pat)
        return NULL;
    const char *end = p + n;
    const char *s = p;
    while (s < end) {
        const char *hit = memmem(s, (size_t)(end - s), pat, (size_t)plen);
        if (!hit)
            return NULL;
        const char *q = hit + plen;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
            q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n'))
                q++;
            return q < end ? q : NULL;
        }
        s = hit + 1;
    }
    return NULL;
}

static bool bench_json_int(const char *p, size_t n, const char *key, int64_t *out)
{
    const char *v = bench_json_value(p, n, key);
    if (!v)
        return false;
    const char *end = p + n;
    bool neg = false;
    if (v < end && *v == '-') {
        neg = true;
        v++;
    }
    if (v >= end || !isdigit((unsigned char)*v))
        return false;
    uint64_t x = 0;
    while (v < end && isdigit((unsigned char)*v)) {
        if (x > (UINT64_MAX - 9) / 10)
            return false;
        x = x * 10 + (uint64_t)(*v - '0');
        v++;
    }
    if (x > (uint64_t)INT64_MAX)
        return false;
    *out = neg ? -(int64_t)x : (int64_t)x;
    return true;
}

/* String value of "key" without its quotes (escapes are left as they are). */
static bool bench_json_str(const char *p, size_t n, const char *key, const char **s, size_t *slen)
{
    const char *v = bench_json_value(p, n, key);
    const char *end = p + n;
    if (!v || *v != '"')
        return false;
    v++;
    const char *q = v;
    while (q < end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= end)
        return false;
    *s = v;
    *slen = (size_t)(q - v);
    return true;
}

static bool bench_str_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* Writes s as a JSON string literal (quotes included). */
static void bench_json_print_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* ------------------------------------------------------------------------ */
/* Frame output                                                             */
/* ------------------------------------------------------------------------ */

static size_t bench_frame_size(size_t payload_len)
{
    size_t h = 2 + 4;
    if (payload_len >= 126)
        h += payload_len > 65535 ? 8 : 2;
    return h + payload_len;
}

static bench_write *bench_write_new(bench_client *c, size_t cap)
{
    bench_write *w = malloc(sizeof *w + cap);
    if (!w) {
        fprintf(stderr, "wsbench: out of memory\n");
        exit(1);
    }
    w->client = c;
    w->close_after = false;
    w->len = 0;
    w->cap = cap;
    return w;
}

/* Appends one masked client frame (FIN set) to w. */
static void bench_write_frame(bench_write *w, unsigned opcode, const void *payload, size_t len)
{
    if (w->len + bench_frame_size(len) > w->cap)
        abort(); /* callers size their buffers; reaching this is a bug */
    uint8_t *o = w->data + w->len;
    size_t h = 0;
    o[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        o[h++] = (uint8_t)(0x80 | len);
    } else if (len <= 65535) {
        o[h++] = 0x80 | 126;
        o[h++] = (uint8_t)(len >> 8);
        o[h++] = (uint8_t)len;
    } else {
        o[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            o[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t m = bench_rand32();
    uint8_t mask[4];
    memcpy(mask, &m, 4);
    memcpy(o + h, mask, 4);
    h += 4;
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++)
        o[h + i] = src[i] ^ mask[i & 3];
    w->len += h + len;
}

static void client_on_write(uv_write_t *req, int status)
{
    bench_write *w = (bench_write *)req;
    bench_client *c = w->client;
    if (status < 0 && status != UV_ECANCELED)
        client_fail(c, "write: %s", uv_err_name(status));
    else if (w->close_after)
        client_close(c);
    free(w);
}

static void client_submit(bench_client *c, bench_write *w)
{
    if (c->state == CS_CLOSED || c->state == CS_NEW || c->state == CS_CONNECTING) {
        free(w);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    bench.bytes_sent += w->len;
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, client_on_write);
    if (r < 0) {
        free(w);
        client_fail(c, "write: %s", uv_err_name(r));
    }
}

static void client_send_frame(bench_client *c, unsigned opcode, const void *payload, size_t len,
                              bool close_after)
{
    bench_write *w = bench_write_new(c, bench_frame_size(len));
    bench_write_frame(w, opcode, payload, len);
    w->close_after = close_after;
    client_submit(c, w);
}

static void client_send_text(bench_client *c, const char *text, size_t len)
{
    client_send_frame(c, 0x1, text, len, false);
}

static void client_send_close(bench_client *c, unsigned code, bool close_after)
{
    uint8_t p[2] = { (uint8_t)(code >> 8), (uint8_t)code };
    c->close_sent = true;
    client_send_frame(c, 0x8, p, code ? 2 : 0, close_after);
}

/* ------------------------------------------------------------------------ */
/* Connection life cycle                                                    */
/* ------------------------------------------------------------------------ */

/* --deflate: end the connection's inflate stream, if it has one. */
static void client_inflate_free(bench_client *c)
{
    if (!c->inf)
        return;
    inflateEnd(c->inf);
    free(c->inf);
    c->inf = NULL;
}

static void client_on_closed(uv_handle_t *h)
{
    bench_client *c = h->data;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    free(c->frag);
    c->frag = NULL;
    c->frag_len = 0;
    client_inflate_free(c);
    bench.open_handles--;
    if (bench.phase == PH_CLOSE && bench.open_handles == 0)
        bench_finish();
}

static void client_close(bench_client *c)
{
    if (c->state == CS_CLOSED)
        return;
    c->state = CS_CLOSED;
    if (c->handle_inited)
        uv_close((uv_handle_t *)&c->tcp, client_on_closed);
}

/* A connection finished its setup (handshake, and subscribe for subscribers)
 * one way or the other: let the ramp start the next and see whether the
 * whole setup is done. */
static void client_settle(bench_client *c, bool ok)
{
    if (c->in_flight) {
        c->in_flight = false;
        bench.inflight--;
    }
    if (c->settled)
        return;
    c->settled = true;
    bench.settled++;
    if (ok) {
        c->ready = true;
        bench.ready++;
    }
    bench_ramp();
}

/*
 * Counts a connection as failed (once, with its reason) and closes it.
 * Closes during the final CLOSE phase are expected and not failures.
 */
static void client_fail(bench_client *c, const char *fmt, ...)
{
    if (bench.phase < PH_CLOSE && !c->failed && c->state != CS_CLOSED) {
        char reason[112];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, sizeof reason, fmt, ap);
        va_end(ap);
        c->failed = true;
        bench.failed++;
        bench_reason_add(bench.reasons, &bench.nreasons, reason);
    }
    client_close(c);
    client_settle(c, false);
}

/* ------------------------------------------------------------------------ */
/* Application protocol                                                     */
/* ------------------------------------------------------------------------ */

static bool bench_traffic_phase(void)
{
    return bench.phase == PH_WARMUP || bench.phase == PH_MEASURE;
}

static void client_send_ping(bench_client *c)
{
    char msg[64];
    c->ping_id++;
    int n = snprintf(msg, sizeof msg, "{\"type\":\"ping\",\"id\":%" PRIu64 "}", c->ping_id);
    c->ping_outstanding = true;
    c->ping_sent_ns = bench_now_ns();
    client_send_text(c, msg, (size_t)n);
}

static void client_send_subscribe(bench_client *c)
{
    char msg[128];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"stream\":\"%s\"}",
                     bench.streams[c->stream].name);
    client_send_text(c, msg, (size_t)n);
}

/* The publisher's end-of-run barrier: the server answers requests of one
 * connection in order, so when this pong arrives every earlier publish of
 * the connection has been answered (ack or error) or accepted. */
static void client_send_barrier(bench_client *c)
{
    char msg[64];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"ping\",\"id\":%d}", BENCH_BARRIER_PING_ID);
    c->pub_barrier_sent = true;
    client_send_text(c, msg, (size_t)n);
}

/*
 * Seq bookkeeping of one subscriber. seen_mask remembers which of the 64
 * seqs up to last_seq arrived (bit i: last_seq - i), so a message that comes
 * late is moved from "lost" (counted when the jump over it was seen) to
 * "out of order", and a real repeat is told apart from a late arrival.
 */
static void client_track_seq(bench_client *c, int64_t seq)
{
    if (seq > c->last_seq) {
        uint64_t d = (uint64_t)(seq - c->last_seq);
        bench.lost += d - 1;
        c->seen_mask = d >= 64 ? 1 : (c->seen_mask << d) | 1;
        c->last_seq = seq;
        return;
    }
    uint64_t back = (uint64_t)(c->last_seq - seq);
    if (back >= 64) {
        bench.out_of_order++; /* too old to know; "lost" keeps counting it */
    } else if (c->seen_mask & (1ull << back)) {
        bench.duplicate++;
    } else {
        c->seen_mask |= 1ull << back;
        bench.lost--;
        bench.out_of_order++;
    }
}

static void client_on_message(bench_client *c, const char *p, size_t n, uint64_t now)
{
    int64_t seq = 0, t = 0;
    if (!bench_json_int(p, n, "seq", &seq)) {
        bench.unparsed++;
        return;
    }
    const char *sname;
    size_t slen;
    if (c->stream >= 0 && bench_json_str(p, n, "stream", &sname, &slen) &&
        !bench_str_is(sname, slen, bench.streams[c->stream].name))
        bench.wrong_stream++;

    /* the publisher's timestamp lives inside "data" */
    const char *data = bench_json_value(p, n, "data");
    if (data && bench_json_int(data, (size_t)(p + n - data), "t", &t) && t > 0 &&
        (uint64_t)t <= now && bench.phase == PH_MEASURE)
        bench_hist_record(&bench.lat, now - (uint64_t)t);

    bench.delivered_total++;
    if (bench.phase == PH_MEASURE)
        bench.delivered_window++;

    if (!c->subscribed) {
        bench.early_messages++;
        return;
    }
    client_track_seq(c, seq);
}

static void client_on_ack(bench_client *c, const char *p, size_t n, uint64_t now)
{
    int64_t id = 0;
    bench.acks_total++;
    if (bench.phase == PH_MEASURE)
        bench.acks_window++;
    if (c->role != ROLE_PUB)
        return;
    c->pub_acks++;
    if (c->ack_ring && bench_json_int(p, n, "id", &id) && id > 0 && (uint64_t)id <= c->pub_sent &&
        (uint64_t)id + BENCH_ACK_RING > c->pub_sent && bench.phase == PH_MEASURE) {
        uint64_t sent = c->ack_ring[(uint64_t)id % BENCH_ACK_RING];
        if (sent && sent <= now)
            bench_hist_record(&bench.ack_lat, now - sent);
    }
}

static void client_on_pong(bench_client *c, const char *p, size_t n, uint64_t now)
{
    int64_t id = -1;
    bench.pongs_total++;
    if (!bench_json_int(p, n, "id", &id))
        return;
    if (c->role == ROLE_PUB) {
        if (id == BENCH_BARRIER_PING_ID && c->pub_barrier_sent)
            c->pub_drained = true;
        return;
    }
    if (c->role != ROLE_PING || !c->ping_outstanding || (uint64_t)id != c->ping_id)
        return;
    c->ping_outstanding = false;
    if (bench.phase == PH_MEASURE) {
        bench.pongs_window++;
        bench_hist_record(&bench.lat, now - c->ping_sent_ns);
    }
    if (bench_traffic_phase())
        client_send_ping(c);
}

static void client_on_subscribed(bench_client *c, const char *p, size_t n)
{
    int64_t seq = 0;
    if (c->role != ROLE_SUB || c->subscribed)
        return;
    if (!bench_json_int(p, n, "seq", &seq)) {
        client_fail(c, "subscribed reply without seq");
        return;
    }
    c->subscribed = true;
    c->base_seq = c->last_seq = seq;
    c->seen_mask = 1;
    client_settle(c, true);
}

static void client_on_error(bench_client *c, const char *p, size_t n)
{
    const char *code;
    size_t clen;
    char text[112];
    bench.errors_total++;
    if (c->role == ROLE_PUB)
        c->pub_errors++;
    if (bench_json_str(p, n, "code", &code, &clen))
        snprintf(text, sizeof text, "%.*s", (int)(clen > 64 ? 64 : clen), code);
    else
        snprintf(text, sizeof text, "(no code)");
    bench_reason_add(bench.error_codes, &bench.nerror_codes, text);
    /* a refused subscribe means this subscriber will never be ready */
    if (c->role == ROLE_SUB && !c->subscribed)
        client_fail(c, "subscribe refused: %s", text);
}

/* One complete text message from the server. */
static void client_on_text(bench_client *c, const char *p, size_t n)
{
    uint64_t now = bench_now_ns();
    const char *type;
    size_t tlen;
    if (!bench_json_str(p, n, "type", &type, &tlen)) {
        bench.unparsed++;
        return;
    }
    if (bench_str_is(type, tlen, "message"))
        client_on_message(c, p, n, now);
    else if (bench_str_is(type, tlen, "pong"))
        client_on_pong(c, p, n, now);
    else if (bench_str_is(type, tlen, "ack"))
        client_on_ack(c, p, n, now);
    else if (bench_str_is(type, tlen, "subscribed"))
        client_on_subscribed(c, p, n);
    else if (bench_str_is(type, tlen, "error"))
        client_on_error(c, p, n);
    else if (bench_str_is(type, tlen, "gap"))
        bench.gaps++;
    else if (bench_str_is(type, tlen, "reconnect"))
        bench.reconnects++;
    else if (!bench_str_is(type, tlen, "unsubscribed") && !bench_str_is(type, tlen, "authenticated"))
        bench.unknown_types++;
}

/* ------------------------------------------------------------------------ */
/* Frame input                                                              */
/* ------------------------------------------------------------------------ */

static bool client_buf_reserve(bench_client *c, size_t want)
{
    if (want <= c->rcap)
        return true;
    size_t cap = c->rcap ? c->rcap : 1024;
    while (cap < want)
        cap *= 2;
    uint8_t *nb = realloc(c->rbuf, cap);
    if (!nb)
        return false;
    c->rbuf = nb;
    c->rcap = cap;
    return true;
}

static bool client_buf_append(bench_client *c, const uint8_t *p, size_t n, size_t hint)
{
    size_t want = c->rlen + n;
    if (hint > want)
        want = hint;
    if (!client_buf_reserve(c, want))
        return false;
    memcpy(c->rbuf + c->rlen, p, n);
    c->rlen += n;
    return true;
}

static void client_on_close_frame(bench_client *c, const uint8_t *p, size_t len)
{
    c->close_received = true;
    if (c->state == CS_CLOSING && c->close_sent) {
        /* the answer to our close: the exchange is complete */
        client_close(c);
        return;
    }
    unsigned code = len >= 2 ? (unsigned)(p[0] << 8 | p[1]) : 1005;
    if (bench.phase < PH_CLOSE && !c->failed) {
        char reason[64];
        size_t rl = len > 2 ? len - 2 : 0;
        if (rl > sizeof reason - 1)
            rl = sizeof reason - 1;
        for (size_t i = 0; i < rl; i++)
            reason[i] = isprint(p[2 + i]) ? (char)p[2 + i] : '?';
        reason[rl] = '\0';
        /* count it, but answer the close before closing the socket */
        c->failed = true;
        bench.failed++;
        char text[112];
        snprintf(text, sizeof text, "closed by server: %u%s%s", code, rl ? " " : "", reason);
        bench_reason_add(bench.reasons, &bench.nreasons, text);
    }
    c->state = CS_CLOSING;
    client_send_close(c, code == 1005 ? 0 : code, true);
    client_settle(c, false); /* no-op when it was ready */
}

/* Handles one complete frame. */
/* --deflate: a compressed message (RFC 7692 7.2.2: the 4-byte tail put
 * back; the connection's window kept for the next one, which may refer
 * to it). *out points into bench.inf_buf. */
static bool bench_inflate(bench_client *c, const uint8_t *p, size_t len, const uint8_t **out,
                          size_t *outlen)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    if (!c->inf) {
        c->inf = calloc(1, sizeof(*c->inf));
        if (!c->inf || inflateInit2(c->inf, -15) != Z_OK) {
            free(c->inf);
            c->inf = NULL;
            client_fail(c, "out of memory");
            return false;
        }
    }
    z_stream *z = c->inf;
    size_t have = 0;
    bool tail_fed = false;
    z->next_in = (Bytef *)p;
    z->avail_in = (uInt)len;
    for (;;) {
        if (z->avail_in == 0 && !tail_fed) {
            z->next_in = (Bytef *)tail;
            z->avail_in = sizeof tail;
            tail_fed = true;
        }
        if (have == bench.inf_cap) {
            size_t ncap = bench.inf_cap ? bench.inf_cap * 2 : 65536;
            uint8_t *nb = ncap <= BENCH_MAX_MESSAGE * 2u ? realloc(bench.inf_buf, ncap) : NULL;
            if (!nb) {
                client_fail(c, "protocol: compressed message inflates past %u bytes", BENCH_MAX_MESSAGE);
                return false;
            }
            bench.inf_buf = nb;
            bench.inf_cap = ncap;
        }
        z->next_out = bench.inf_buf + have;
        z->avail_out = (uInt)(bench.inf_cap - have);
        int r = inflate(z, Z_SYNC_FLUSH);
        have = bench.inf_cap - z->avail_out;
        if (r == Z_STREAM_END || (tail_fed && z->avail_in == 0 && z->avail_out > 0))
            break;
        if (r != Z_OK && !(r == Z_BUF_ERROR && z->avail_out == 0)) {
            client_fail(c, "protocol: compressed message does not inflate (%d)", r);
            return false;
        }
    }
    bench.compressed_msgs++;
    *out = bench.inf_buf;
    *outlen = have;
    return true;
}

static void client_on_frame(bench_client *c, bool fin, unsigned op, bool rsv1, const uint8_t *p,
                            size_t len)
{
    if (op >= 0x8) {
        if (!fin || len > 125) {
            client_fail(c, "protocol: bad control frame from server");
            return;
        }
        if (op == 0x8) {
            client_on_close_frame(c, p, len);
        } else if (op == 0x9) {
            bench.server_pings++;
            if (c->state == CS_OPEN)
                client_send_frame(c, 0xA, p, len, false);
        } else if (op != 0xA) {
            client_fail(c, "protocol: reserved opcode %u from server", op);
        }
        return;
    }
    if (op == 0x1 || op == 0x2) {
        if (c->frag_op) {
            client_fail(c, "protocol: new message inside a fragmented one");
            return;
        }
        if (fin) {
            if (rsv1 && !bench_inflate(c, p, len, &p, &len))
                return;
            if (op == 0x1)
                client_on_text(c, (const char *)p, len);
            else
                bench.binary_frames++;
            return;
        }
        c->frag_op = (uint8_t)op;
        c->frag_rsv1 = rsv1;
    } else if (op != 0x0 || !c->frag_op) {
        client_fail(c, "protocol: %s opcode %u from server",
                    op == 0x0 ? "unexpected continuation," : "reserved", op);
        return;
    }
    /* fragment: accumulate */
    if (c->frag_len + len > BENCH_MAX_MESSAGE) {
        client_fail(c, "protocol: fragmented message larger than %u bytes", BENCH_MAX_MESSAGE);
        return;
    }
    if (len) {
        uint8_t *nf = realloc(c->frag, c->frag_len + len);
        if (!nf) {
            client_fail(c, "out of memory");
            return;
        }
        c->frag = nf;
        memcpy(c->frag + c->frag_len, p, len);
        c->frag_len += len;
    }
    if (fin) {
        const uint8_t *m = c->frag;
        size_t mlen = c->frag_len;
        if (c->frag_rsv1 && !bench_inflate(c, m, mlen, &m, &mlen))
            return;
        if (c->frag_op == 0x1)
            client_on_text(c, (const char *)m, mlen);
        else
            bench.binary_frames++;
        free(c->frag);
        c->frag = NULL;
        c->frag_len = 0;
        c->frag_op = 0;
    }
}

/*
 * Handles every complete frame in p[0..n) and returns how many bytes were
 * used; the rest is the start of a frame whose remainder has not arrived.
 * *need is set to the full size of that frame when its header is known, so
 * the caller can reserve room once instead of growing on every read.
 */
static size_t client_parse_frames(bench_client *c, const uint8_t *p, size_t n, size_t *need)
{
    size_t off = 0;
    *need = 0;
    while (n - off >= 2 && c->state != CS_CLOSED && !c->close_received) {
        const uint8_t *f = p + off;
        bool fin = f[0] & 0x80;
        unsigned rsv = f[0] & 0x70;
        unsigned op = f[0] & 0x0F;
        bool masked = f[1] & 0x80;
        uint64_t len = f[1] & 0x7F;
        size_t hdr = 2;
        if (len == 126)
            hdr = 4;
        else if (len == 127)
            hdr = 10;
        if (n - off < hdr)
            break;
        if (len == 126) {
            len = (uint64_t)f[2] << 8 | f[3];
        } else if (len == 127) {
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | f[2 + i];
        }
        /* RSV1: compressed, on the first frame of a data message only */
        if (rsv && !(rsv == 0x40 && bench.opt.deflate && (op == 0x1 || op == 0x2))) {
            client_fail(c, "protocol: RSV bits set %s", bench.opt.deflate ? "where RFC 7692 forbids them"
                                                                          : "without an extension");
            break;
        }
        if (masked) {
            client_fail(c, "protocol: masked frame from server");
            break;
        }
        if (len > BENCH_MAX_MESSAGE) {
            client_fail(c, "protocol: frame of %" PRIu64 " bytes (limit %u)", len, BENCH_MAX_MESSAGE);
            break;
        }
        if (n - off - hdr < len) {
            *need = hdr + (size_t)len;
            break;
        }
        client_on_frame(c, fin, op, rsv != 0, f + hdr, (size_t)len);
        off += hdr + (size_t)len;
    }
    return off;
}

/* Parses what the connection's own buffer holds and keeps the remainder. */
static void client_process_rbuf(bench_client *c)
{
    size_t need = 0;
    size_t used = client_parse_frames(c, c->rbuf, c->rlen, &need);
    if (c->state == CS_CLOSED || c->close_received)
        return;
    if (used) {
        memmove(c->rbuf, c->rbuf + used, c->rlen - used);
        c->rlen -= used;
    }
    if (c->rlen == 0 && c->rcap > BENCH_RBUF_KEEP) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    } else if (need && !client_buf_reserve(c, need)) {
        client_fail(c, "out of memory");
    }
}

/*
 * New bytes of an open connection. Usually nothing is pending, and frames
 * are parsed straight from the shared read chunk; only an incomplete frame
 * at the end is copied into the connection's own buffer. When something is
 * pending, the new bytes are appended to it first.
 */
static void client_consume(bench_client *c, const uint8_t *data, size_t n)
{
    if (c->rlen == 0) {
        size_t need = 0;
        size_t used = client_parse_frames(c, data, n, &need);
        if (c->state == CS_CLOSED || c->close_received || used == n)
            return;
        if (!client_buf_append(c, data + used, n - used, need))
            client_fail(c, "out of memory");
        return;
    }
    if (!client_buf_append(c, data, n, 0)) {
        client_fail(c, "out of memory");
        return;
    }
    client_process_rbuf(c);
}

/* ------------------------------------------------------------------------ */
/* Handshake                                                                */
/* ------------------------------------------------------------------------ */

/* Makes a random Sec-WebSocket-Key and the accept value the server must
 * answer with: base64(SHA-1(key + GUID)). */
static bool bench_ws_key(char key[25], char accept[29])
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        for (size_t i = 0; i < sizeof raw; i += 4) {
            uint32_t r = bench_rand32();
            memcpy(raw + i, &r, 4);
        }
    }
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
    char cat[24 + sizeof BENCH_WS_GUID];
    memcpy(cat, key, 24);
    memcpy(cat + 24, BENCH_WS_GUID, sizeof BENCH_WS_GUID);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(cat, 24 + strlen(BENCH_WS_GUID), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return false;
    EVP_EncodeBlock((unsigned char *)accept, md, 20);
    return true;
}

static char *bench_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Checks the response head (NUL-terminated, without the final blank line):
 * status 101, Upgrade: websocket, and the right Sec-WebSocket-Accept.
 * Returns NULL when fine, or a reason. */
static const char *client_check_head(bench_client *c, char *head, char *why, size_t whylen)
{
    char *save = NULL;
    char *line = strtok_r(head, "\r\n", &save);
    int status = 0;
    if (!line || sscanf(line, "HTTP/%*d.%*d %d", &status) != 1) {
        snprintf(why, whylen, "handshake: malformed status line");
        return why;
    }
    if (status != 101) {
        snprintf(why, whylen, "handshake: HTTP %d", status);
        return why;
    }
    bool upgrade = false, accept_ok = false, accept_seen = false, deflate = false;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = '\0';
        char *name = bench_trim(line);
        char *value = bench_trim(colon + 1);
        if (strcasecmp(name, "Upgrade") == 0 && strcasecmp(value, "websocket") == 0)
            upgrade = true;
        else if (strcasecmp(name, "Sec-WebSocket-Accept") == 0) {
            accept_seen = true;
            accept_ok = strcmp(value, c->accept) == 0;
        } else if (strcasecmp(name, "Sec-WebSocket-Extensions") == 0) {
            deflate = strncmp(value, "permessage-deflate", 18) == 0;
        }
    }
    if (deflate != bench.opt.deflate) {
        snprintf(why, whylen, "handshake: permessage-deflate %s", deflate ? "not offered but accepted"
                                                                        : "declined by the server");
        return why;
    }
    if (!upgrade) {
        snprintf(why, whylen, "handshake: no 'Upgrade: websocket' in 101 response");
        return why;
    }
    if (!accept_ok) {
        snprintf(why, whylen, "handshake: %s Sec-WebSocket-Accept", accept_seen ? "wrong" : "missing");
        return why;
    }
    return NULL;
}

static void client_on_open(bench_client *c)
{
    bench.handshakes_ok++;
    if (c->role == ROLE_SUB) {
        client_send_subscribe(c); /* ready once "subscribed" arrives */
        if (c->in_flight) {
            /* the handshake is done: it no longer counts against the ramp */
            c->in_flight = false;
            bench.inflight--;
            bench_ramp();
        }
    } else {
        client_settle(c, true);
    }
}

/* Bytes received while waiting for the 101 response. The head may arrive
 * in pieces, and the bytes after it already belong to the first frames. */
static void client_on_handshake_data(bench_client *c, const uint8_t *data, size_t n)
{
    /* everything is kept: frames may follow the head in the same read */
    if (!client_buf_append(c, data, n, 0)) {
        client_fail(c, "out of memory");
        return;
    }
    uint8_t *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    size_t head_len = end ? (size_t)(end - c->rbuf) + 4 : 0;
    if (!end || head_len > BENCH_MAX_HANDSHAKE_BYTES) {
        if (!end && c->rlen < BENCH_MAX_HANDSHAKE_BYTES)
            return; /* wait for the rest of the head */
        client_fail(c, "handshake: response head larger than %d bytes", BENCH_MAX_HANDSHAKE_BYTES);
        return;
    }
    char head[BENCH_MAX_HANDSHAKE_BYTES + 1];
    memcpy(head, c->rbuf, head_len - 4);
    head[head_len - 4] = '\0';
    char why[112];
    if (client_check_head(c, head, why, sizeof why)) {
        client_fail(c, "%s", why);
        return;
    }
    memmove(c->rbuf, c->rbuf + head_len, c->rlen - head_len);
    c->rlen -= head_len;
    c->state = CS_OPEN;
    client_on_open(c);
    if (c->state == CS_OPEN && c->rlen)
        client_process_rbuf(c);
}

/*
 * libuv asks for a buffer before every read. All connections share one
 * static chunk: libuv calls the read callback right after filling it, and
 * client_on_read copies anything it must keep, so 10000 idle connections
 * do not hold 64 KiB each.
 */
static void client_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init((char *)bench_read_chunk, sizeof bench_read_chunk);
}

static void client_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    bench_client *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->state == CS_CLOSING || bench.phase >= PH_CLOSE)
            client_close(c);
        else if (nread == UV_EOF)
            client_fail(c, c->state == CS_HANDSHAKE ? "handshake: connection closed by server"
                                                    : "connection closed by server without close frame");
        else
            client_fail(c, "read: %s", uv_err_name((int)nread));
        return;
    }
    bench.bytes_received += (uint64_t)nread;
    if (c->state == CS_HANDSHAKE)
        client_on_handshake_data(c, (const uint8_t *)buf->base, (size_t)nread);
    else if (c->state == CS_OPEN || c->state == CS_CLOSING)
        client_consume(c, (const uint8_t *)buf->base, (size_t)nread);
}

static void client_on_connect(uv_connect_t *req, int status)
{
    bench_client *c = req->data;
    if (c->state != CS_CONNECTING)
        return; /* closed meanwhile (setup timeout) */
    if (status < 0) {
        client_fail(c, "connect: %s", uv_err_name(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_read_start((uv_stream_t *)&c->tcp, client_on_alloc, client_on_read);
    if (r < 0) {
        client_fail(c, "read start: %s", uv_err_name(r));
        return;
    }
    char key[25];
    if (!bench_ws_key(key, c->accept)) {
        client_fail(c, "handshake: SHA-1 unavailable");
        return;
    }
    char reqbuf[512];
    int n = snprintf(reqbuf, sizeof reqbuf,
                     "GET /ws HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "User-Agent: wsbench\r\n"
                     "%s"
                     "\r\n",
                     bench.host_header, key,
                     !bench.opt.deflate ? ""
                     : bench.opt.deflate_alone
                         ? "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                           "client_max_window_bits\r\n"
                         : "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    c->state = CS_HANDSHAKE;
    bench_write *w = bench_write_new(c, (size_t)n);
    memcpy(w->data, reqbuf, (size_t)n);
    w->len = (size_t)n;
    client_submit(c, w);
}

static void client_start(bench_client *c)
{
    int r = uv_tcp_init(bench.loop, &c->tcp);
    if (r < 0) {
        client_fail(c, "tcp init: %s", uv_err_name(r));
        return;
    }
    c->tcp.data = c;
    c->connect_req.data = c;
    c->handle_inited = true;
    bench.open_handles++;
    c->state = CS_CONNECTING;
    c->in_flight = true;
    bench.inflight++;
    /* Cluster runs: publishers on --port, subscribers round-robin over
     * --sub-ports (other replicas). */
    const struct sockaddr_storage *to = &bench.addr;
    if (c->role == ROLE_SUB && bench.opt.nsub_ports)
        to = &bench.sub_addr[c->index % (uint32_t)bench.opt.nsub_ports];
    r = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)to, client_on_connect);
    if (r < 0)
        client_fail(c, "connect: %s", uv_err_name(r));
}

/* ------------------------------------------------------------------------ */
/* Ramp and phases                                                          */
/* ------------------------------------------------------------------------ */

static void bench_setup_done(void)
{
    bench.ramp_end_ns = bench_now_ns();
    bench.proc_ramp_end = bench_proc_sample_server();
    uv_timer_stop(&bench.phase_timer);
    bench_log("setup done: %u of %u connections ready, %u failed, %.2f s", bench.ready, bench.nclients,
              bench.failed, (double)(bench.ramp_end_ns - bench.start_ns) / 1e9);
    if (bench.ready == 0)
        bench_enter_close();
    else
        bench_enter_warmup();
}

/*
 * Starts connections while fewer than BENCH_MAX_INFLIGHT_HANDSHAKES are in
 * flight, and moves on once every connection is settled. Called again
 * whenever a handshake ends; the in_ramp guard turns nested calls (a
 * connect failing synchronously) into iterations of the outer loop.
 */
static void bench_ramp(void)
{
    if (bench.in_ramp || bench.phase != PH_CONNECT)
        return;
    bench.in_ramp = true;
    while (bench.next_to_start < bench.nclients && bench.inflight < BENCH_MAX_INFLIGHT_HANDSHAKES)
        client_start(&bench.clients[bench.next_to_start++]);
    bench.in_ramp = false;
    if (bench.settled == bench.nclients)
        bench_setup_done();
}

static void bench_on_setup_timeout(uv_timer_t *t)
{
    (void)t;
    bench_log("setup timeout: %u of %u connections not ready", bench.nclients - bench.ready, bench.nclients);
    bench.in_ramp = true;
    bench.next_to_start = bench.nclients; /* no new connections from here */
    for (uint32_t i = 0; i < bench.nclients; i++) {
        bench_client *c = &bench.clients[i];
        if (!c->settled)
            client_fail(c, c->state == CS_NEW ? "not started: setup timeout"
                                              : "setup timeout (handshake/subscribe not completed)");
    }
    bench.in_ramp = false;
    bench_ramp();
}

/* --payload ecg: the "leads" object of one tools/ecg-sim batch (12 leads,
 * 10 samples at 500 Hz, a PQRST shape at ~72 bpm plus noise, millivolts
 * with 3 decimals), for batch number k. */
static void bench_ecg_leads(char *out, size_t cap, uint64_t k)
{
    static const char *const leads[12] = {"I", "II", "III", "aVR", "aVL", "aVF",
                                          "V1", "V2", "V3", "V4", "V5", "V6"};
    size_t n = 0;
    out[n++] = '{';
    for (int l = 0; l < 12; l++) {
        double gain = 0.6 + 0.05 * l;
        n += (size_t)snprintf(out + n, cap - n, "%s\"%s\":[", l ? "," : "", leads[l]);
        for (int i = 0; i < 10; i++) {
            double t = (double)(k * 10 + (uint64_t)i) / 500.0;
            double ph = fmod(t * 1.2, 1.0);
            double v = 0.15 * exp(-pow((ph - 0.2) / 0.025, 2)) + 1.2 * exp(-pow((ph - 0.4) / 0.01, 2)) -
                       0.2 * exp(-pow((ph - 0.37) / 0.01, 2)) + 0.3 * exp(-pow((ph - 0.65) / 0.05, 2));
            /* noise, about N(0, 0.01): a sum of 4 uniforms */
            double u = 0;
            for (int j = 0; j < 4; j++)
                u += (double)(bench_rand32() % 10000) / 10000.0;
            v = gain * v + (u - 2.0) * 0.017;
            n += (size_t)snprintf(out + n, cap - n, "%s%.3f", i ? "," : "", v);
        }
        out[n++] = ']';
    }
    out[n++] = '}';
    out[n] = '\0';
}

/* Paces publishers: each sends the messages due by now (its rate times the
 * time since its start), several in one write, so rates above one message
 * per tick work and a late tick catches up. */
static void bench_on_pub_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = bench_now_ns();
    double rate = bench.opt.rate; /* fanout: the one publisher's; ward: each stream's */
    bool with_id = bench.opt.scenario == SC_WARD;
    for (uint32_t i = 0; i < bench.npubs; i++) {
        bench_client *c = bench.pubs[i];
        if (c->state != CS_OPEN || now < c->pub_start_ns)
            continue;
        uint64_t due = (uint64_t)((double)(now - c->pub_start_ns) / 1e9 * rate) + 1;
        if (due <= c->pub_sent)
            continue;
        if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > BENCH_PUB_BACKLOG_LIMIT) {
            bench.pub_backlog_skips++;
            continue;
        }
        uint64_t count = due - c->pub_sent;
        if (count > BENCH_PUB_MAX_BATCH)
            count = BENCH_PUB_MAX_BATCH;
        bench_write *w = bench_write_new(c, (size_t)count * BENCH_PUB_FRAME_MAX);
        const char *sname = bench.streams[c->stream].name;
        for (uint64_t k = 0; k < count; k++) {
            char msg[BENCH_PUB_FRAME_MAX - 16];
            uint64_t id = c->pub_sent + 1;
            int n;
            char tail[1300];
            if (bench.opt.ecg) {
                char ecg[1200];
                bench_ecg_leads(ecg, sizeof ecg, c->pub_sent);
                snprintf(tail, sizeof tail, ",\"device\":\"bedside\",\"rate_hz\":500,\"leads\":%s}}", ecg);
            } else {
                snprintf(tail, sizeof tail, ",\"pad\":\"%s\"}}", bench.pad);
            }
            if (with_id)
                n = snprintf(msg, sizeof msg,
                             "{\"type\":\"publish\",\"stream\":\"%s\",\"id\":%" PRIu64
                             ",\"data\":{\"t\":%" PRIu64 "%s",
                             sname, id, now, tail);
            else
                n = snprintf(msg, sizeof msg,
                             "{\"type\":\"publish\",\"stream\":\"%s\",\"data\":{\"t\":%" PRIu64 "%s",
                             sname, now, tail);
            if (n <= 0 || (size_t)n >= sizeof msg)
                abort();
            bench_write_frame(w, 0x1, msg, (size_t)n);
            if (c->ack_ring)
                c->ack_ring[id % BENCH_ACK_RING] = now;
            c->pub_sent++;
            bench.published_total++;
            if (bench.phase == PH_MEASURE)
                bench.published_window++;
        }
        client_submit(c, w);
    }
}

static void bench_on_phase_timer(uv_timer_t *t)
{
    (void)t;
    switch (bench.phase) {
    case PH_WARMUP: bench_enter_measure(); break;
    case PH_MEASURE: bench_enter_drain(); break;
    case PH_DRAIN: bench_enter_close(); break;
    case PH_CLOSE:
        /* the close handshake timed out: close what is left */
        for (uint32_t i = 0; i < bench.nclients; i++)
            client_close(&bench.clients[i]);
        if (bench.open_handles == 0)
            bench_finish();
        break;
    default: break;
    }
}

static void bench_enter_warmup(void)
{
    bench.phase = PH_WARMUP;
    uint64_t now = bench_now_ns();
    bench_log("warmup %.1f s", bench.opt.warmup_s);
    if (bench.npubs) {
        /* spread publishers over one message interval so they do not all
         * send in the same tick */
        double interval_ns = 1e9 / bench.opt.rate;
        for (uint32_t i = 0; i < bench.npubs; i++)
            bench.pubs[i]->pub_start_ns = now + (uint64_t)(interval_ns * i / bench.npubs);
        uv_timer_start(&bench.pub_timer, bench_on_pub_tick, 1, 1);
    }
    if (bench.opt.scenario == SC_PING) {
        for (uint32_t i = 0; i < bench.nclients; i++)
            if (bench.clients[i].state == CS_OPEN)
                client_send_ping(&bench.clients[i]);
    }
    uv_timer_start(&bench.phase_timer, bench_on_phase_timer, (uint64_t)(bench.opt.warmup_s * 1000.0), 0);
}

static void bench_enter_measure(void)
{
    bench.phase = PH_MEASURE;
    bench_log("measuring %.1f s", bench.opt.duration_s);
    bench.proc_measure_start = bench_proc_sample_server();
    bench.client_cpu_start = bench_client_cpu_s();
    bench.measure_start_ns = bench_now_ns();
    bench.bytes_received_start = bench.bytes_received;
    uv_timer_start(&bench.phase_timer, bench_on_phase_timer, (uint64_t)(bench.opt.duration_s * 1000.0), 0);
}

/* True when everything sent during the run has come back (or cannot). */
static bool bench_drained(void)
{
    for (uint32_t i = 0; i < bench.nclients; i++) {
        bench_client *c = &bench.clients[i];
        if (c->state != CS_OPEN)
            continue;
        if (c->role == ROLE_PING && c->ping_outstanding)
            return false;
        if (c->role == ROLE_PUB && !c->pub_drained)
            return false;
        if (c->role == ROLE_SUB && c->subscribed) {
            bench_client *p = bench.streams[c->stream].pub;
            if (p && p->state == CS_OPEN &&
                c->last_seq < c->base_seq + (int64_t)p->pub_sent - (int64_t)p->pub_errors)
                return false;
        }
    }
    return true;
}

static void bench_on_check(uv_timer_t *t)
{
    (void)t;
    if (bench.phase == PH_DRAIN && bench_drained())
        bench_enter_close();
}

static void bench_enter_drain(void)
{
    bench.measure_end_ns = bench_now_ns();
    bench.bytes_received_end = bench.bytes_received;
    bench.client_cpu_end = bench_client_cpu_s();
    bench.proc_measure_end = bench_proc_sample_server();
    uv_timer_stop(&bench.pub_timer);
    if (bench.opt.scenario == SC_IDLE) {
        bench_enter_close();
        return;
    }
    bench.phase = PH_DRAIN;
    bench_log("draining");
    for (uint32_t i = 0; i < bench.npubs; i++)
        if (bench.pubs[i]->state == CS_OPEN)
            client_send_barrier(bench.pubs[i]);
    uv_timer_start(&bench.phase_timer, bench_on_phase_timer, BENCH_DRAIN_TIMEOUT_MS, 0);
    uv_timer_start(&bench.check_timer, bench_on_check, BENCH_CHECK_INTERVAL_MS, BENCH_CHECK_INTERVAL_MS);
}

/* Counts, per subscriber, the messages it should have had by the end of the
 * drain (its publisher's accepted publishes since it subscribed) but never
 * got. Only meaningful for subscribers whose publisher stayed connected. */
static void bench_count_missing(void)
{
    for (uint32_t i = 0; i < bench.nclients; i++) {
        bench_client *c = &bench.clients[i];
        if (c->role != ROLE_SUB || !c->subscribed || c->failed)
            continue;
        bench_client *p = bench.streams[c->stream].pub;
        if (!p || p->failed || !p->pub_drained)
            continue;
        int64_t expect = c->base_seq + (int64_t)p->pub_sent - (int64_t)p->pub_errors;
        if (c->last_seq < expect)
            bench.missing_at_end += (uint64_t)(expect - c->last_seq);
    }
}

static void bench_enter_close(void)
{
    if (bench.phase == PH_CONNECT || bench.phase == PH_WARMUP) {
        /* interrupted or nothing connected: no window was measured */
        uint64_t now = bench_now_ns();
        if (!bench.measure_start_ns)
            bench.measure_start_ns = now;
        bench.measure_end_ns = now;
        if (!bench.ramp_end_ns)
            bench.ramp_end_ns = now;
    }
    if (bench.phase == PH_DRAIN)
        bench_count_missing();
    bench.phase = PH_CLOSE;
    uv_timer_stop(&bench.pub_timer);
    uv_timer_stop(&bench.check_timer);
    bench_log("closing connections");
    for (uint32_t i = 0; i < bench.nclients; i++) {
        bench_client *c = &bench.clients[i];
        if (c->state == CS_OPEN) {
            c->state = CS_CLOSING;
            client_send_close(c, 1000, false);
        } else if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE) {
            client_close(c);
        }
    }
    if (bench.open_handles == 0) {
        bench_finish();
        return;
    }
    uv_timer_start(&bench.phase_timer, bench_on_phase_timer, BENCH_CLOSE_TIMEOUT_MS, 0);
}

static void bench_finish(void)
{
    if (bench.finished)
        return;
    bench.finished = true;
    bench.phase = PH_DONE;
    uv_close((uv_handle_t *)&bench.phase_timer, NULL);
    uv_close((uv_handle_t *)&bench.pub_timer, NULL);
    uv_close((uv_handle_t *)&bench.check_timer, NULL);
    uv_close((uv_handle_t *)&bench.sigint, NULL);
}

/* Ctrl-C ends the current phase early (the report still comes); a second
 * one skips the close handshake. */
static void bench_on_sigint(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    bench.sigint_count++;
    if (bench.sigint_count > 1 || bench.phase == PH_CLOSE) {
        for (uint32_t i = 0; i < bench.nclients; i++)
            client_close(&bench.clients[i]);
        if (bench.phase != PH_CLOSE)
            bench.phase = PH_CLOSE;
        if (bench.open_handles == 0)
            bench_finish();
        return;
    }
    bench_log("interrupted");
    if (bench.phase == PH_MEASURE)
        bench_enter_drain();
    else
        bench_enter_close();
}

/* ------------------------------------------------------------------------ */
/* Report                                                                   */
/* ------------------------------------------------------------------------ */

static void bench_json_num(FILE *f, const char *name, double v, bool valid)
{
    if (!valid || !isfinite(v))
        fprintf(f, ",\"%s\":null", name);
    else if (v == floor(v) && fabs(v) < 1e15)
        fprintf(f, ",\"%s\":%.0f", name, v);
    else
        fprintf(f, ",\"%s\":%.3f", name, v);
}

static void bench_json_hist(FILE *f, const char *name, const bench_hist *h)
{
    if (h->count == 0) {
        fprintf(f, ",\"%s\":null", name);
        return;
    }
    fprintf(f, ",\"%s\":{\"count\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
            name, h->count, (double)(h->sum / h->count) / 1e3, bench_hist_quantile(h, 0.50) / 1e3,
            bench_hist_quantile(h, 0.99) / 1e3, bench_hist_quantile(h, 0.999) / 1e3, h->max / 1e3);
}

static void bench_human_hist(const char *label, const bench_hist *h)
{
    if (h->count == 0) {
        fprintf(stderr, "  %-22s (no samples)\n", label);
        return;
    }
    fprintf(stderr, "  %-22s p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (n=%" PRIu64 ")\n", label,
            bench_hist_quantile(h, 0.50) / 1e3, bench_hist_quantile(h, 0.99) / 1e3,
            bench_hist_quantile(h, 0.999) / 1e3, h->max / 1e3, h->count);
}

static void bench_report(void)
{
    const bench_opts *o = &bench.opt;
    bool idle = o->scenario == SC_IDLE, ping = o->scenario == SC_PING;
    bool pubsub = o->scenario == SC_FANOUT || o->scenario == SC_WARD;
    double dur = (double)(bench.measure_end_ns - bench.measure_start_ns) / 1e9;
    bool measured = dur > 0;
    double ramp_s = (double)(bench.ramp_end_ns - bench.start_ns) / 1e9;
    double client_cpu = bench.client_cpu_end - bench.client_cpu_start;

    bool srv = bench.proc_measure_start.ok && bench.proc_measure_end.ok;
    double srv_cpu = srv ? bench.proc_measure_end.cpu_s - bench.proc_measure_start.cpu_s : 0;
    uint64_t msgs = ping ? bench.pongs_window : bench.delivered_window;
    bool rss_ok = bench.proc_base.ok && bench.proc_measure_end.ok && bench.ready > 0;
    double rss_per_conn = rss_ok ? ((double)bench.proc_measure_end.rss_kib - (double)bench.proc_base.rss_kib) /
                                       bench.ready : 0;
    double pss_per_conn = rss_ok && bench.proc_measure_end.pss_kib
                              ? ((double)bench.proc_measure_end.pss_kib - (double)bench.proc_base.pss_kib) /
                                    bench.ready : 0;
    bool hs_ok = idle && bench.handshakes_ok > 0 && ramp_s > 0;
    bool hs_cpu_ok = hs_ok && bench.proc_base.ok && bench.proc_ramp_end.ok;
    double hs_cpu = hs_cpu_ok ? bench.proc_ramp_end.cpu_s - bench.proc_base.cpu_s : 0;

    /* ---- human table ---- */
    if (!o->json_only) {
        fprintf(stderr, "\nwsbench %s: ws://%s/ws, measured %.2f s (warmup %.1f s)\n",
                bench_scenario_names[o->scenario], bench.host_header, dur, o->warmup_s);
        fprintf(stderr, "  %-22s %u ready at setup, %u failed (of %u)\n", "connections", bench.ready, bench.failed,
                bench.nclients);
        for (uint32_t i = 0; i < bench.nreasons; i++)
            fprintf(stderr, "    %6" PRIu64 " x %s\n", bench.reasons[i].count, bench.reasons[i].text);
        if (ping) {
            fprintf(stderr, "  %-22s %" PRIu64 " (%.1f/s)\n", "round trips", bench.pongs_window,
                    measured ? bench.pongs_window / dur : 0.0);
            bench_human_hist("rtt us", &bench.lat);
        }
        if (idle) {
            fprintf(stderr, "  %-22s %.2f s for %u handshakes: %.1f/s\n", "ramp", ramp_s, bench.handshakes_ok,
                    hs_ok ? bench.handshakes_ok / ramp_s : 0.0);
            fprintf(stderr, "  %-22s %" PRIu64 "\n", "server pings answered", bench.server_pings);
        }
        if (pubsub) {
            fprintf(stderr, "  %-22s %" PRIu64 " in window (%.1f/s), %" PRIu64 " in total\n", "published",
                    bench.published_window, measured ? bench.published_window / dur : 0.0, bench.published_total);
            fprintf(stderr, "  %-22s %" PRIu64 " in window (%.1f/s), %" PRIu64 " in total\n", "delivered",
                    bench.delivered_window, measured ? bench.delivered_window / dur : 0.0, bench.delivered_total);
            fprintf(stderr, "  %-22s %" PRIu64 " acks, %" PRIu64 " errors\n", "replies", bench.acks_total,
                    bench.errors_total);
            if (bench.delivered_window)
                fprintf(stderr, "  %-22s %.1f received per delivered message%s (%" PRIu64 " compressed messages)\n",
                        "wire bytes",
                        (double)(bench.bytes_received_end - bench.bytes_received_start) / bench.delivered_window,
                        !o->deflate ? "" : o->deflate_alone ? ", permessage-deflate, each alone"
                                                            : ", permessage-deflate",
                        bench.compressed_msgs);
            bench_human_hist("latency us", &bench.lat);
            if (o->scenario == SC_WARD)
                bench_human_hist("ack latency us", &bench.ack_lat);
            fprintf(stderr, "  %-22s lost %" PRIu64 ", duplicate %" PRIu64 ", out of order %" PRIu64
                            ", missing at end %" PRIu64 ", gaps %" PRIu64 "\n",
                    "integrity", bench.lost, bench.duplicate, bench.out_of_order, bench.missing_at_end, bench.gaps);
            if (bench.pub_backlog_skips)
                fprintf(stderr, "  %-22s %" PRIu64 " ticks skipped (server not reading fast enough)\n",
                        "publisher backlog", bench.pub_backlog_skips);
        }
        for (uint32_t i = 0; i < bench.nerror_codes; i++)
            fprintf(stderr, "    error %-14s %" PRIu64 "\n", bench.error_codes[i].text, bench.error_codes[i].count);
        if (srv) {
            fprintf(stderr, "  %-22s %.3f s in window (%d processes)", "server cpu", srv_cpu,
                    bench.proc_measure_end.nprocs);
            if (msgs)
                fprintf(stderr, ", %.2f us per %s", srv_cpu * 1e6 / msgs, ping ? "round trip" : "delivered msg");
            fputc('\n', stderr);
            fprintf(stderr, "  %-22s %" PRIu64 " KiB (before connecting %" PRIu64 " KiB)", "server rss",
                    bench.proc_measure_end.rss_kib, bench.proc_base.rss_kib);
            if (rss_ok)
                fprintf(stderr, ", %.2f KiB per connection", rss_per_conn);
            fputc('\n', stderr);
            if (hs_cpu_ok)
                fprintf(stderr, "  %-22s %.1f us per handshake\n", "server cpu (ramp)", hs_cpu * 1e6 / bench.handshakes_ok);
        } else if (o->pid) {
            fprintf(stderr, "  server                 pid %ld not readable in /proc\n", o->pid);
        }
        fprintf(stderr, "  %-22s %.3f s in window (%.0f%% of one core)%s\n", "client cpu", client_cpu,
                measured ? 100.0 * client_cpu / dur : 0.0,
                measured && client_cpu / dur > 0.9 ? "  <-- client-bound: numbers are a lower bound" : "");
        if (bench.unparsed || bench.unknown_types || bench.wrong_stream || bench.early_messages || bench.reconnects)
            fprintf(stderr, "  %-22s unparsed %" PRIu64 ", unknown type %" PRIu64 ", wrong stream %" PRIu64
                            ", before subscribed %" PRIu64 ", reconnect %" PRIu64 "\n",
                    "oddities", bench.unparsed, bench.unknown_types, bench.wrong_stream, bench.early_messages,
                    bench.reconnects);
        fputc('\n', stderr);
    }

    /* ---- one JSON line ---- */
    FILE *f = stdout;
    fprintf(f, "{\"scenario\":\"%s\"", bench_scenario_names[o->scenario]);
    bench_json_num(f, "duration_s", dur, measured);
    bench_json_num(f, "warmup_s", o->warmup_s, true);
    bench_json_num(f, "connections", bench.nclients, true);
    bench_json_num(f, "connections_ready", bench.ready, true);
    bench_json_num(f, "connections_failed", bench.failed, true);
    fputs(",\"failures\":{", f);
    for (uint32_t i = 0; i < bench.nreasons; i++) {
        if (i)
            fputc(',', f);
        bench_json_print_string(f, bench.reasons[i].text);
        fprintf(f, ":%" PRIu64, bench.reasons[i].count);
    }
    fputc('}', f);
    if (ping) {
        bench_json_num(f, "round_trips", (double)bench.pongs_window, true);
        bench_json_num(f, "round_trips_per_s", measured ? bench.pongs_window / dur : 0, measured);
    }
    if (pubsub) {
        if (o->scenario == SC_FANOUT)
            bench_json_num(f, "subscribers", (double)o->subscribers, true);
        else {
            bench_json_num(f, "streams", (double)o->streams, true);
            bench_json_num(f, "subscribers_per_stream", (double)o->subscribers, true);
        }
        bench_json_num(f, "rate", o->rate, true);
        bench_json_num(f, "delivered", (double)bench.delivered_window, true);
        bench_json_num(f, "delivered_per_s", measured ? bench.delivered_window / dur : 0, measured);
        bench_json_num(f, "delivered_total", (double)bench.delivered_total, true);
        bench_json_num(f, "wire_bytes_per_delivered",
                       bench.delivered_window
                           ? (double)(bench.bytes_received_end - bench.bytes_received_start) / bench.delivered_window
                           : 0,
                       bench.delivered_window > 0);
        bench_json_num(f, "compressed_msgs", (double)bench.compressed_msgs, true);
        bench_json_num(f, "published", (double)bench.published_window, true);
        bench_json_num(f, "published_per_s", measured ? bench.published_window / dur : 0, measured);
        bench_json_num(f, "published_total", (double)bench.published_total, true);
        bench_json_num(f, "acks", (double)bench.acks_total, true);
    }
    bench_json_num(f, "errors", (double)bench.errors_total, true);
    fputs(",\"error_codes\":{", f);
    for (uint32_t i = 0; i < bench.nerror_codes; i++) {
        if (i)
            fputc(',', f);
        bench_json_print_string(f, bench.error_codes[i].text);
        fprintf(f, ":%" PRIu64, bench.error_codes[i].count);
    }
    fputc('}', f);
    if (!idle)
        bench_json_hist(f, "lat_us", &bench.lat);
    if (o->scenario == SC_WARD)
        bench_json_hist(f, "ack_lat_us", &bench.ack_lat);
    if (pubsub) {
        bench_json_num(f, "lost", (double)bench.lost, true);
        bench_json_num(f, "duplicate", (double)bench.duplicate, true);
        bench_json_num(f, "out_of_order", (double)bench.out_of_order, true);
        bench_json_num(f, "missing_at_end", (double)bench.missing_at_end, true);
        bench_json_num(f, "gaps", (double)bench.gaps, true);
        bench_json_num(f, "wrong_stream", (double)bench.wrong_stream, true);
        bench_json_num(f, "publisher_backlog_skips", (double)bench.pub_backlog_skips, true);
    }
    bench_json_num(f, "reconnect_msgs", (double)bench.reconnects, true);
    bench_json_num(f, "server_pings", (double)bench.server_pings, true);
    bench_json_num(f, "server_procs", bench.proc_measure_end.nprocs, srv);
    bench_json_num(f, "server_cpu_s", srv_cpu, srv);
    bench_json_num(f, "server_cpu_us_per_msg", msgs ? srv_cpu * 1e6 / msgs : 0, srv && msgs && !idle);
    bench_json_num(f, "server_rss_kib", (double)bench.proc_measure_end.rss_kib, bench.proc_measure_end.ok);
    bench_json_num(f, "server_rss_base_kib", (double)bench.proc_base.rss_kib, bench.proc_base.ok);
    bench_json_num(f, "rss_per_conn_kib", rss_per_conn, rss_ok);
    bench_json_num(f, "pss_per_conn_kib", pss_per_conn, rss_ok && bench.proc_measure_end.pss_kib);
    if (idle) {
        bench_json_num(f, "ramp_s", ramp_s, true);
        bench_json_num(f, "handshakes_per_s", hs_ok ? bench.handshakes_ok / ramp_s : 0, hs_ok);
        bench_json_num(f, "server_cpu_us_per_handshake", hs_cpu_ok ? hs_cpu * 1e6 / bench.handshakes_ok : 0,
                       hs_cpu_ok);
    }
    bench_json_num(f, "client_cpu_s", client_cpu, measured);
    bench_json_num(f, "bytes_sent", (double)bench.bytes_sent, true);
    bench_json_num(f, "bytes_received", (double)bench.bytes_received, true);
    fputs("}\n", f);
    fflush(f);
}

/* ------------------------------------------------------------------------ */
/* Command line and set-up                                                  */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: wsbench SCENARIO [options]\n"
            "\n"
            "scenarios:\n"
            "  ping    N connections, each with one {\"type\":\"ping\"} in flight; app-level RTT\n"
            "  idle    C idle connections (<= %d handshakes in flight); handshakes/s, server\n"
            "          CPU per handshake, server RSS per connection (needs --pid)\n"
            "  fanout  S subscribers of stream \"" BENCH_FANOUT_STREAM "\", one publisher at R msg/s in total\n"
            "  ward    M streams \"ward/<i>\", each with one publisher at R msg/s (with id, acked)\n"
            "          and S subscribers\n"
            "\n"
            "options:\n"
            "  --host ADDR        server address, loopback only (default 127.0.0.1)\n"
            "  --port PORT        (default 8003)\n"
            "  --sub-ports P,Q    subscribers connect round-robin to these ports (fanout, ward:\n"
            "                     other replicas of a cluster); publishers stay on --port\n"
            "  --duration SEC     measurement window (default 10)\n"
            "  --warmup SEC       traffic before the window, not counted (default 1)\n"
            "  --connections N    ping: connections (default 1); idle: (default 10000)\n"
            "  --streams M        ward: streams (default 500)\n"
            "  --subscribers S    fanout: subscribers (default 1000); ward: per stream (default 2)\n"
            "  --rate R           fanout: total msg/s (default 30); ward: msg/s per stream (default 50)\n"
            "  --pid PID          server master pid: measure CPU and RSS of it and its descendants\n"
            "  --payload KIND     fanout, ward: pad (300 letters, default) or ecg (a 12-lead,\n"
            "                     10-sample batch shaped like tools/ecg-sim's)\n"
            "  --deflate          offer permessage-deflate on every connection (fails if declined)\n"
            "  --deflate-alone    the same with server_no_context_takeover: each message\n"
            "                     compressed on its own\n"
            "  --json-only        no human table or progress on stderr\n"
            "  --help\n"
            "\n"
            "Output: a table on stderr and one JSON line on stdout. Exit 0 when the run completed,\n"
            "1 when connections failed, 2 on a usage error.\n",
            BENCH_MAX_INFLIGHT_HANDSHAKES);
}

static bool bench_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool bench_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Resolves --host into bench.addr; only loopback addresses are accepted. */
static bool bench_resolve_host(const char *host, int port, char *why, size_t whylen)
{
    const char *h = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&bench.addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&bench.addr;
    memset(&bench.addr, 0, sizeof bench.addr);
    if (inet_pton(AF_INET, h, &a4->sin_addr) == 1) {
        if ((ntohl(a4->sin_addr.s_addr) >> 24) != 127) {
            snprintf(why, whylen, "--host %s is not a loopback address (127.0.0.0/8, ::1)", host);
            return false;
        }
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        snprintf(bench.host_header, sizeof bench.host_header, "%s:%d", h, port);
        return true;
    }
    if (inet_pton(AF_INET6, h, &a6->sin6_addr) == 1) {
        bool loop = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr) ||
                    (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) && a6->sin6_addr.s6_addr[12] == 127);
        if (!loop) {
            snprintf(why, whylen, "--host %s is not a loopback address (127.0.0.0/8, ::1)", host);
            return false;
        }
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        snprintf(bench.host_header, sizeof bench.host_header, "[%s]:%d", h, port);
        return true;
    }
    snprintf(why, whylen, "--host %s: not a numeric loopback address", host);
    return false;
}

/* Parses argv into bench.opt; returns 0, or 2 for a usage error (after
 * printing why), or -1 for --help. */
static int bench_parse_args(int argc, char **argv)
{
    bench_opts *o = &bench.opt;
    snprintf(o->host, sizeof o->host, "127.0.0.1");
    o->port = 8003;
    o->duration_s = 10;
    o->warmup_s = 1;
    o->connections = o->streams = o->subscribers = -1;
    o->rate = -1;

    enum { OPT_HOST = 256, OPT_PORT, OPT_SUB_PORTS, OPT_DURATION, OPT_CONNECTIONS, OPT_STREAMS, OPT_SUBSCRIBERS, OPT_RATE,
           OPT_PID, OPT_WARMUP, OPT_JSON_ONLY, OPT_DEFLATE, OPT_DEFLATE_ALONE, OPT_PAYLOAD, OPT_HELP };
    static const struct option longopts[] = {
        { "host", required_argument, NULL, OPT_HOST },
        { "port", required_argument, NULL, OPT_PORT },
        { "sub-ports", required_argument, NULL, OPT_SUB_PORTS },
        { "duration", required_argument, NULL, OPT_DURATION },
        { "connections", required_argument, NULL, OPT_CONNECTIONS },
        { "streams", required_argument, NULL, OPT_STREAMS },
        { "subscribers", required_argument, NULL, OPT_SUBSCRIBERS },
        { "rate", required_argument, NULL, OPT_RATE },
        { "pid", required_argument, NULL, OPT_PID },
        { "warmup", required_argument, NULL, OPT_WARMUP },
        { "json-only", no_argument, NULL, OPT_JSON_ONLY },
        { "deflate", no_argument, NULL, OPT_DEFLATE },
        { "deflate-alone", no_argument, NULL, OPT_DEFLATE_ALONE },
        { "payload", required_argument, NULL, OPT_PAYLOAD },
        { "help", no_argument, NULL, OPT_HELP },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    long port = 0;
    const char *bad = NULL;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_HOST:
            if (strlen(optarg) >= sizeof o->host)
                bad = "--host";
            else
                snprintf(o->host, sizeof o->host, "%s", optarg);
            break;
        case OPT_PORT:
            if (!bench_parse_long(optarg, 1, 65535, &port))
                bad = "--port (1..65535)";
            o->port = (int)port;
            break;
        case OPT_SUB_PORTS: {
            char *list = optarg, *tok, *save = NULL;
            o->nsub_ports = 0;
            while ((tok = strtok_r(list, ",", &save)) != NULL && o->nsub_ports < 16) {
                list = NULL;
                if (!bench_parse_long(tok, 1, 65535, &port)) {
                    bad = "--sub-ports (comma-separated ports)";
                    break;
                }
                o->sub_ports[o->nsub_ports++] = (int)port;
            }
            break;
        }
        case OPT_DURATION:
            if (!bench_parse_double(optarg, 0.001, 86400 * 7, &o->duration_s))
                bad = "--duration (seconds > 0)";
            break;
        case OPT_WARMUP:
            if (!bench_parse_double(optarg, 0, 3600, &o->warmup_s))
                bad = "--warmup (seconds >= 0)";
            break;
        case OPT_CONNECTIONS:
            if (!bench_parse_long(optarg, 1, 1000000, &o->connections))
                bad = "--connections (1..1000000)";
            break;
        case OPT_STREAMS:
            if (!bench_parse_long(optarg, 1, 100000, &o->streams))
                bad = "--streams (1..100000)";
            break;
        case OPT_SUBSCRIBERS:
            if (!bench_parse_long(optarg, 1, 1000000, &o->subscribers))
                bad = "--subscribers (1..1000000)";
            break;
        case OPT_RATE:
            if (!bench_parse_double(optarg, 0.001, 10000000, &o->rate))
                bad = "--rate (msg/s > 0)";
            break;
        case OPT_PID:
            if (!bench_parse_long(optarg, 1, 0x7fffffff, &o->pid))
                bad = "--pid";
            break;
        case OPT_JSON_ONLY: o->json_only = true; break;
        case OPT_DEFLATE: o->deflate = true; break;
        case OPT_DEFLATE_ALONE: o->deflate = o->deflate_alone = true; break;
        case OPT_PAYLOAD:
            if (strcmp(optarg, "ecg") == 0)
                o->ecg = true;
            else if (strcmp(optarg, "pad") != 0)
                bad = "--payload (pad or ecg)";
            break;
        case 'h':
        case OPT_HELP: usage(stdout); return -1;
        default:
            fprintf(stderr, "wsbench: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "wsbench: bad value '%s' for %s\n", optarg, bad);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "wsbench: %s\n", optind >= argc ? "missing SCENARIO" : "more than one SCENARIO");
        usage(stderr);
        return 2;
    }
    const char *sc = argv[optind];
    bool found = false;
    for (int i = 0; i < 4; i++) {
        if (strcmp(sc, bench_scenario_names[i]) == 0) {
            o->scenario = (enum bench_scenario)i;
            found = true;
        }
    }
    if (!found) {
        fprintf(stderr, "wsbench: unknown scenario '%s' (ping, idle, fanout, ward)\n", sc);
        return 2;
    }
    char why[160];
    if (!bench_resolve_host(o->host, o->port, why, sizeof why)) {
        fprintf(stderr, "wsbench: %s\n", why);
        return 2;
    }
    for (int k = 0; k < o->nsub_ports; k++) {
        bench.sub_addr[k] = bench.addr;
        struct sockaddr *sa = (struct sockaddr *)&bench.sub_addr[k];
        if (sa->sa_family == AF_INET)
            ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)o->sub_ports[k]);
        else
            ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)o->sub_ports[k]);
    }
    if (o->pid) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%ld/stat", o->pid);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "wsbench: --pid %ld: no such process\n", o->pid);
            return 2;
        }
    }
    /* per-scenario defaults */
    switch (o->scenario) {
    case SC_PING:
        if (o->connections < 0)
            o->connections = 1;
        break;
    case SC_IDLE:
        if (o->connections < 0)
            o->connections = 10000;
        break;
    case SC_FANOUT:
        if (o->subscribers < 0)
            o->subscribers = 1000;
        if (o->rate < 0)
            o->rate = 30;
        break;
    case SC_WARD:
        if (o->streams < 0)
            o->streams = 500;
        if (o->subscribers < 0)
            o->subscribers = 2;
        if (o->rate < 0)
            o->rate = 50;
        break;
    }
    long total = o->scenario == SC_FANOUT ? o->subscribers + 1
                 : o->scenario == SC_WARD ? o->streams * (o->subscribers + 1)
                                          : o->connections;
    if (total > 1000000) {
        fprintf(stderr, "wsbench: %ld connections is more than the 1000000 supported\n", total);
        return 2;
    }
    return 0;
}

/* Raises the descriptor limit to the hard maximum: 10000 connections need
 * more than the usual soft limit of 1024. */
static void bench_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)bench.nclients + 64)
        bench_log("warning: open file limit %lu is below %u connections; raise the hard limit (ulimit -Hn)",
                  (unsigned long)rl.rlim_cur, bench.nclients);
}

/* Allocates the connections and streams of the scenario and assigns roles. */
static void bench_build(void)
{
    const bench_opts *o = &bench.opt;
    uint32_t n = 0, nstreams = 0, npubs = 0;
    switch (o->scenario) {
    case SC_PING:
    case SC_IDLE: n = (uint32_t)o->connections; break;
    case SC_FANOUT: n = (uint32_t)o->subscribers + 1; nstreams = 1; npubs = 1; break;
    case SC_WARD:
        nstreams = (uint32_t)o->streams;
        n = nstreams * (uint32_t)(o->subscribers + 1);
        npubs = nstreams;
        break;
    }
    bench.nclients = n;
    bench.clients = calloc(n, sizeof *bench.clients);
    bench.nstreams = nstreams;
    bench.streams = nstreams ? calloc(nstreams, sizeof *bench.streams) : NULL;
    bench.pubs = npubs ? calloc(npubs, sizeof *bench.pubs) : NULL;
    if (!bench.clients || (nstreams && (!bench.streams || !bench.pubs))) {
        fprintf(stderr, "wsbench: out of memory\n");
        exit(1);
    }
    for (uint32_t i = 0; i < n; i++) {
        bench_client *c = &bench.clients[i];
        c->index = i;
        c->stream = -1;
        c->role = o->scenario == SC_PING ? ROLE_PING : ROLE_IDLE;
    }
    if (o->scenario == SC_FANOUT) {
        snprintf(bench.streams[0].name, sizeof bench.streams[0].name, "%s", BENCH_FANOUT_STREAM);
        for (uint32_t i = 0; i < n; i++) {
            bench.clients[i].stream = 0;
            bench.clients[i].role = i == 0 ? ROLE_PUB : ROLE_SUB;
        }
    } else if (o->scenario == SC_WARD) {
        uint32_t per = (uint32_t)o->subscribers + 1;
        for (uint32_t s = 0; s < nstreams; s++) {
            snprintf(bench.streams[s].name, sizeof bench.streams[s].name, "ward/%u", s);
            for (uint32_t k = 0; k < per; k++) {
                bench_client *c = &bench.clients[s * per + k];
                c->stream = (int32_t)s;
                c->role = k == 0 ? ROLE_PUB : ROLE_SUB;
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        bench_client *c = &bench.clients[i];
        if (c->role != ROLE_PUB)
            continue;
        bench.streams[c->stream].pub = c;
        bench.pubs[bench.npubs++] = c;
        if (o->scenario == SC_WARD) {
            c->ack_ring = calloc(BENCH_ACK_RING, sizeof *c->ack_ring);
            if (!c->ack_ring) {
                fprintf(stderr, "wsbench: out of memory\n");
                exit(1);
            }
        }
    }
    for (size_t i = 0; i < BENCH_PAD_LEN; i++)
        bench.pad[i] = (char)('a' + i % 26);
    bench.pad[BENCH_PAD_LEN] = '\0';
}

static void bench_free(void)
{
    for (uint32_t i = 0; i < bench.nclients; i++) {
        free(bench.clients[i].ack_ring);
        free(bench.clients[i].rbuf);
        free(bench.clients[i].frag);
        client_inflate_free(&bench.clients[i]);
    }
    free(bench.clients);
    free(bench.streams);
    free(bench.pubs);
    free(bench.inf_buf);
}

int main(int argc, char **argv)
{
    int rc = bench_parse_args(argc, argv);
    if (rc == -1)
        return 0;
    if (rc)
        return rc;
    signal(SIGPIPE, SIG_IGN);

    uint64_t seed = 0;
    if (RAND_bytes((unsigned char *)&seed, sizeof seed) != 1 || seed == 0)
        seed = bench_now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ull;
    bench.rng = seed ? seed : 1;

    bench_build();
    bench_raise_nofile();
    if (bench.opt.pid > 0)
        bench_fd_reserve(true);
    bench.loop = uv_default_loop();
    uv_timer_init(bench.loop, &bench.phase_timer);
    uv_timer_init(bench.loop, &bench.pub_timer);
    uv_timer_init(bench.loop, &bench.check_timer);
    uv_signal_init(bench.loop, &bench.sigint);
    uv_signal_start(&bench.sigint, bench_on_sigint, SIGINT);

    bench_log("%s: %u connections to ws://%s/ws", bench_scenario_names[bench.opt.scenario], bench.nclients,
              bench.host_header);
    bench.proc_base = bench_proc_sample_server();
    bench.start_ns = bench_now_ns();
    bench.phase = PH_CONNECT;
    uv_timer_start(&bench.phase_timer, bench_on_setup_timeout,
                   BENCH_SETUP_BASE_MS + (uint64_t)bench.nclients * BENCH_SETUP_PER_CONN_MS, 0);
    bench_ramp();

    uv_run(bench.loop, UV_RUN_DEFAULT);

    bench_report();
    rc = bench.failed ? 1 : 0;
    bench_fd_reserve(false);
    uv_loop_close(bench.loop);
    uv_library_shutdown();
    bench_free();
    return rc;
}
