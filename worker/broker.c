#include "broker.h"

#include <errno.h>
#include <hiredis/async.h>
#include <sys/socket.h>
#include <uv.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brokerurl.h"
#include "clock.h"
#include "hash.h"
#include "log.h"
#include "segment.h"
#include "streamlog.h"

#define BROKER_POOL_CAP 32          /* command connections per broker, whatever max_pool_size */
#define BROKER_BUSY_INFLIGHT 16     /* open another pooled connection beyond this */
#define BROKER_LANES 256            /* publish lanes: streams hashed onto them (broker_send) */
#define BROKER_BACKOFF_FIRST_MS 100
#define BROKER_BACKOFF_MAX_MS 5000
#define BROKER_PING_NS 1000000000ull /* the pub/sub connection's heartbeat */
/* Every pub/sub connection stays subscribed to this channel (nobody
 * publishes to it): hiredis 0.14 then keeps it in subscribed mode, where a
 * PING is answered ["pong", ""] and needs no callback of its own. */
#define BROKER_HEARTBEAT_CHANNEL "wsgate:heartbeat"

/* Sequence and store one message atomically. The Redis Stream entry id is
 * the seq itself, so XRANGE by seq needs no index. A stream whose sequence
 * (re)starts gets the epoch the caller proposes.
 *
 * KEYS[4] (":acked") is the highest seq announced on the channel: what
 * subscribers may see. With broker_replicas_ack 0 (ARGV[6] = "1") the
 * script announces at once. Otherwise the message is only stored: WAIT
 * follows on the same connection, and broker_announce_script publishes it
 * once enough replicas hold it, so no subscriber ever sees a message that
 * a failover can take back (and whose seq the next master would reuse). */
static const char broker_script[] =
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local epoch = redis.call('GET', KEYS[2])\n"
    "if not epoch then\n"
    "  epoch = ARGV[4]\n"
    "  redis.call('SET', KEYS[2], epoch)\n"
    "end\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'ts', ARGV[1], 'data', ARGV[2])\n"
    "if ARGV[6] == '1' then\n"
    "  redis.call('SET', KEYS[4], seq)\n"
    "  redis.call('PUBLISH', ARGV[5], seq .. ' ' .. ARGV[1] .. ' ' .. epoch .. ' ' .. ARGV[2])\n"
    "elseif redis.call('EXISTS', KEYS[4]) == 0 then\n"
    "  redis.call('SET', KEYS[4], seq - 1)\n"
    "end\n"
    "return {seq, epoch}\n";

/* Announce a stored message that WAIT confirmed: raise ":acked" (never
 * lower it: announces from several connections may cross) and publish. */
static const char broker_announce_script[] =
    "local a = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if tonumber(ARGV[1]) > a then redis.call('SET', KEYS[1], ARGV[1]) end\n"
    "redis.call('PUBLISH', ARGV[2], ARGV[3])\n"
    "return 1\n";

enum broker_req_kind { BROKER_REQ_PUBLISH, BROKER_REQ_HEAD, BROKER_REQ_RANGE };

struct broker;

struct broker_conn {
    redisAsyncContext *ac;
    struct broker *br;
    int pubsub;
    int connected;          /* ROLE said master: requests may go here */
    unsigned inflight;
    uint64_t idle_since_ns;
    uint64_t gen;           /* br->master_gen when opened */
    uint64_t heard_ns;      /* pub/sub: bytes last arrived (or the connection opened) */
    uint64_t ping_ns;       /* pub/sub: last PING sent */
    int ready;              /* pub/sub: the heartbeat channel's SUBSCRIBE was answered */
    int dropped;            /* shut down; its disconnect callback is on the way */
};

/* A connection to one Sentinel: a query for the master's address, or the
 * +switch-master subscription that follows failovers. */
struct broker_sentinel {
    redisAsyncContext *ac;
    struct broker *br;
    int watch;
    uint64_t opened_ns;
};

/* One request in flight; freed when hiredis is done with it (its reply,
 * or the connection's end), answered at most once before that. */
struct broker_req {
    struct broker_req *prev, *next;
    struct broker_conn *bc;
    enum broker_req_kind kind;
    int answered;
    uint64_t sent_ns;
    uint64_t deadline_ns;
    void *cb;
    void *arg;
    int parts; /* hiredis callbacks still to come (2: EVALSHA + WAIT) */
    /* Publishes waiting for WAIT: what the announce needs. */
    int wait_n;
    int stored;
    uint64_t seq;
    char epoch[BROKER_EPOCH_MAX + 1];
    char *announce_key, *channel, *payload_tail; /* payload_tail: "<ts> " */
    const char *data;
    size_t dlen;
    int lane;  /* publishes: the stream's lane; -1 for other requests */
};

struct broker {
    struct worker *w;
    int index;
    struct broker_url url;
    char label[96];
    char password[256];
    struct broker_conn *cmd[BROKER_POOL_CAP];
    int ncmd;
    /* Publishes whose script has not run yet, per lane, and the connection
     * they went over: a stream's next publish follows them there. */
    struct broker_conn *lane_conn[BROKER_LANES];
    unsigned lane_inflight[BROKER_LANES];
    struct broker_conn *sub;
    uv_timer_t reconnect;
    unsigned backoff_ms;
    int was_up, was_sub_up;
    /* Sentinel groups: the master's address is url.host/port once asked. */
    int resolved;            /* url.host/port is the master to use */
    uint64_t master_gen;     /* bumped when the master changes */
    int next_sentinel;       /* which Sentinel to ask next */
    char sentinel_password[256];
    struct broker_sentinel *query, *watch;
};

struct broker_set {
    struct broker *b[CONFIG_BROKERS_MAX];
    int n;
    struct broker_req *pending; /* requests not answered yet, for pool_timeout */
    int closing;                /* the worker is exiting: no reconnects */
    const struct broker_events *ev; /* the layer above's, from broker_init */
    char sha[SHA_DIGEST_LENGTH * 2 + 1];
    char announce_sha[SHA_DIGEST_LENGTH * 2 + 1];
};

static struct broker_set *broker_set(const struct worker *w)
{
    return w->broker;
}

static void broker_key(char *out, size_t len, const char *stream, size_t slen, const char *suffix)
{
    /* The braces keep a stream's keys in one Redis Cluster hash slot. */
    snprintf(out, len, "wsgate:{%.*s}%s", (int)slen, stream, suffix);
}

/* ---- libuv event hooks for hiredis ------------------------------------------
 *
 * hiredis ships a libuv adapter, but it drops uv_poll errors: a refused
 * connect (POLLERR) is never reported to hiredis, and the connection hangs
 * unnoticed forever. These hooks are the adapter with that fixed: on an
 * error the context is told to write (not connected yet: it finds the
 * socket error) or to read (it sees the broken connection and closes it).
 */
struct broker_uv {
    uv_poll_t poll;
    redisAsyncContext *ac;
    int events;
    uint64_t *heard; /* pub/sub connections: when bytes last arrived */
};

static void broker_uv_on_poll(uv_poll_t *h, int status, int events)
{
    struct broker_uv *p = h->data;
    if (!p->ac)
        return;
    /* Any bytes prove the pub/sub connection alive, whatever hiredis
     * makes of them (a pong has no callback in subscribed mode). */
    if (p->heard && status == 0 && (events & UV_READABLE))
        *p->heard = clock_now_ns();
    if (status < 0) {
        if (!(p->ac->c.flags & REDIS_CONNECTED))
            redisAsyncHandleWrite(p->ac);
        else
            redisAsyncHandleRead(p->ac);
        return;
    }
    if (events & UV_READABLE)
        redisAsyncHandleRead(p->ac);
    if (p->ac && (events & UV_WRITABLE))
        redisAsyncHandleWrite(p->ac);
}

static void broker_uv_update(struct broker_uv *p, int add, int remove)
{
    p->events = (p->events | add) & ~remove;
    if (p->events)
        uv_poll_start(&p->poll, p->events, broker_uv_on_poll);
    else
        uv_poll_stop(&p->poll);
}

static void broker_uv_add_read(void *d) { broker_uv_update(d, UV_READABLE, 0); }
static void broker_uv_del_read(void *d) { broker_uv_update(d, 0, UV_READABLE); }
static void broker_uv_add_write(void *d) { broker_uv_update(d, UV_WRITABLE, 0); }
static void broker_uv_del_write(void *d) { broker_uv_update(d, 0, UV_WRITABLE); }

static void broker_uv_closed(uv_handle_t *h)
{
    free(h->data);
}

static void broker_uv_cleanup(void *d)
{
    struct broker_uv *p = d;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, broker_uv_closed);
}

static int broker_uv_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    struct broker_uv *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    int r = uv_poll_init(loop, &p->poll, ac->c.fd);
    if (r != 0) {
        free(p);
        return r;
    }
    p->poll.data = p;
    p->ac = ac;
    ac->ev.data = p;
    ac->ev.addRead = broker_uv_add_read;
    ac->ev.delRead = broker_uv_del_read;
    ac->ev.addWrite = broker_uv_add_write;
    ac->ev.delWrite = broker_uv_del_write;
    ac->ev.cleanup = broker_uv_cleanup;
    return 0;
}

/* ---- connection management ------------------------------------------ */

static void broker_connect_all(struct broker *br);

static void broker_update_gauges(struct broker *br)
{
    struct segment_broker_state *st = &br->w->slot->broker[br->index];
    unsigned in_use = 0, idle = 0;
    int up = 0;
    for (int i = 0; i < br->ncmd; i++) {
        if (br->cmd[i] && br->cmd[i]->connected) {
            up = 1;
            if (br->cmd[i]->inflight)
                in_use++;
            else
                idle++;
        }
    }
    /* The subscription counts as up once it answered its first SUBSCRIBE,
     * and stops counting as soon as a ping goes unanswered for a second
     * (it is replaced after broker_timeout). */
    struct broker_conn *sub = br->sub;
    int sub_up = sub && sub->connected && sub->ready &&
                 !(sub->ping_ns > sub->heard_ns && clock_now_ns() - sub->ping_ns > BROKER_PING_NS);
    atomic_store(&st->up, (uint32_t)up);
    atomic_store(&st->sub_up, (uint32_t)sub_up);
    atomic_store(&st->pool_in_use, in_use);
    atomic_store(&st->pool_idle, idle);
    if (up != br->was_up) {
        struct log_line l;
        log_begin(&l, up ? LOG_INFO : LOG_WARN, up ? "broker_up" : "error");
        log_str(&l, "broker", br->label);
        log_str(&l, "host", br->url.host);
        log_int(&l, "port", br->url.port);
        log_str(&l, "message", up ? "connected to the broker's master"
                                  : "lost the broker: publishes answer unavailable until it "
                                    "is back; reconnecting with backoff");
        log_end(&l);
        br->was_up = up;
    }
    if (sub_up != br->was_sub_up) {
        struct log_line l;
        log_begin(&l, sub_up ? LOG_INFO : LOG_WARN, sub_up ? "broker_up" : "error");
        log_str(&l, "broker", br->label);
        log_str(&l, "message", sub_up ? "broker subscription up: followed streams refill "
                                        "from their last delivered seq"
                                      : "broker subscription down: subscribers receive "
                                        "nothing new until it is replaced (degraded)");
        log_end(&l);
        br->was_sub_up = sub_up;
    }
}

static void broker_on_reconnect_timer(uv_timer_t *t)
{
    broker_connect_all(t->data);
}

static void broker_schedule_reconnect(struct broker *br)
{
    if (uv_is_active((uv_handle_t *)&br->reconnect))
        return;
    br->backoff_ms = br->backoff_ms ? br->backoff_ms * 2 : BROKER_BACKOFF_FIRST_MS;
    if (br->backoff_ms > BROKER_BACKOFF_MAX_MS)
        br->backoff_ms = BROKER_BACKOFF_MAX_MS;
    uv_timer_start(&br->reconnect, broker_on_reconnect_timer, br->backoff_ms, 0);
}

/* Close a connection now, whatever is queued on it (a stalled peer never
 * answers, so a graceful disconnect would wait forever): hiredis sees the
 * end on its next read and runs the usual disconnect path. */
static void broker_drop(struct broker_conn *bc, const char *why)
{
    struct broker *br = bc->br;
    if (bc->dropped)
        return;
    bc->dropped = 1;
    struct log_line l;
    log_begin(&l, LOG_WARN, "error");
    log_str(&l, "broker", br->label);
    log_str(&l, "host", br->url.host);
    log_int(&l, "port", br->url.port);
    log_str(&l, "connection", bc->pubsub ? "subscription" : "command");
    log_str(&l, "message", why);
    log_end(&l);
    bc->connected = 0;
    if (bc->ac && bc->ac->c.fd >= 0)
        shutdown(bc->ac->c.fd, SHUT_RDWR);
}

static void broker_drop_all(struct broker *br, const char *why)
{
    for (int i = 0; i < br->ncmd; i++)
        broker_drop(br->cmd[i], why);
    if (br->sub)
        broker_drop(br->sub, why);
    broker_update_gauges(br);
}

static void broker_forget_conn(struct broker_conn *bc, int failed);
static void broker_on_pubsub(redisAsyncContext *ac, void *r, void *privdata);

/* ROLE, asked first on every connection: only a master gets requests
 * (a replica would answer READONLY, or serve a stale stream). */
static void broker_on_role(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct broker_conn *bc = privdata;
    redisReply *reply = r;
    if (!reply)
        return; /* going away: the disconnect callback tidies up */
    struct broker *br = bc->br;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "master") != 0) {
        char why[256];
        snprintf(why, sizeof(why), "%s:%d is not a master (ROLE: %.40s): %s", br->url.host,
                 br->url.port,
                 reply->type == REDIS_REPLY_ARRAY && reply->elements &&
                         reply->element[0]->type == REDIS_REPLY_STRING
                     ? reply->element[0]->str
                     : (reply->type == REDIS_REPLY_ERROR ? reply->str : "?"),
                 br->url.nsentinels ? "asking the Sentinels again"
                                    : "nothing is written to it; retrying with backoff");
        segment_counter_add(&br->w->slot->counters.broker[br->index].errors[BROKER_ERROR_COMMAND], 1);
        if (br->url.nsentinels && bc->gen == br->master_gen)
            br->resolved = 0;
        broker_drop(bc, why);
        return;
    }
    /* Load the scripts before any publish on this connection (a restarted
     * Redis forgets them, and a restart means a new connection). */
    if (!bc->pubsub) {
        redisAsyncCommand(bc->ac, NULL, NULL, "SCRIPT LOAD %s", broker_script);
        redisAsyncCommand(bc->ac, NULL, NULL, "SCRIPT LOAD %s", broker_announce_script);
    }
    bc->connected = 1;
    bc->idle_since_ns = clock_now_ns();
    if (bc->pubsub) {
        br->backoff_ms = 0;
        redisAsyncCommand(bc->ac, broker_on_pubsub, br, "SUBSCRIBE " BROKER_HEARTBEAT_CHANNEL);
        bc->ping_ns = bc->heard_ns = clock_now_ns();
        broker_set(br->w)->ev->reconnected(br->w, br->index);
    }
    broker_update_gauges(br);
}

static void broker_on_connect(const redisAsyncContext *ac, int status)
{
    struct broker_conn *bc = ac->data;
    if (!bc)
        return;
    struct broker *br = bc->br;
    if (status != REDIS_OK) {
        /* hiredis frees a context that never connected without calling
         * the disconnect callback: forget it here and try again later. */
        segment_counter_add(&br->w->slot->counters.broker[br->index].errors[BROKER_ERROR_CONNECT], 1);
        broker_forget_conn(bc, 1);
        return;
    }
    bc->idle_since_ns = clock_now_ns();
}

static void broker_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct broker_conn *bc = ac->data;
    if (!bc)
        return;
    broker_forget_conn(bc, status != REDIS_OK);
}

/* The connection's context is gone (hiredis frees it after the
 * callback): drop it from the broker and reconnect when needed. A
 * connection to a Sentinel group's master that failed sends the next
 * reconnect to the Sentinels first: the master may have changed. */
static void broker_forget_conn(struct broker_conn *bc, int failed)
{
    struct broker *br = bc->br;
    bc->ac = NULL;
    bc->connected = 0;
    if (failed && br->url.nsentinels && bc->gen == br->master_gen)
        br->resolved = 0;
    if (br->sub == bc) {
        br->sub = NULL;
        if (!broker_set(br->w)->closing)
            broker_set(br->w)->ev->lost(br->w, br->index);
    } else {
        for (int i = 0; i < br->ncmd; i++) {
            if (br->cmd[i] == bc) {
                br->cmd[i] = br->cmd[--br->ncmd];
                br->cmd[br->ncmd] = NULL;
                break;
            }
        }
        /* hiredis has called back every request of this connection by now;
         * no lane may keep pointing at it. */
        for (int l = 0; l < BROKER_LANES; l++) {
            if (br->lane_conn[l] == bc) {
                br->lane_conn[l] = NULL;
                br->lane_inflight[l] = 0;
            }
        }
    }
    free(bc);
    if (broker_set(br->w)->closing)
        return;
    broker_update_gauges(br);
    if (br->ncmd == 0 || !br->sub)
        broker_schedule_reconnect(br);
}

static struct broker_conn *broker_open(struct broker *br, int pubsub)
{
    struct broker_conn *bc = calloc(1, sizeof(*bc));
    if (!bc)
        return NULL;
    bc->br = br;
    bc->pubsub = pubsub;
    bc->gen = br->master_gen;
    bc->heard_ns = clock_now_ns();
    redisAsyncContext *ac = redisAsyncConnect(br->url.host, br->url.port);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        free(bc);
        segment_counter_add(&br->w->slot->counters.broker[br->index].errors[BROKER_ERROR_CONNECT], 1);
        return NULL;
    }
    ac->data = bc;
    bc->ac = ac;
    if (broker_uv_attach(ac, &br->w->loop) < 0) {
        redisAsyncFree(ac);
        free(bc);
        return NULL;
    }
    if (pubsub)
        ((struct broker_uv *)ac->ev.data)->heard = &bc->heard_ns;
    redisAsyncSetConnectCallback(ac, broker_on_connect);
    redisAsyncSetDisconnectCallback(ac, broker_on_disconnect);
    /* Queued ahead of everything else: hiredis sends them once connected. */
    if (br->password[0])
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", br->password);
    if (br->url.db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", br->url.db);
    redisAsyncCommand(ac, broker_on_role, bc, "ROLE");
    return bc;
}

/* ---- Sentinel groups ------------------------------------------------------ */

static void broker_sentinel_forget(struct broker_sentinel *bs)
{
    struct broker *br = bs->br;
    int watch = bs->watch;
    if (br->query == bs)
        br->query = NULL;
    if (br->watch == bs)
        br->watch = NULL;
    free(bs);
    if (broker_set(br->w)->closing)
        return;
    /* A query that ended without an answer: ask the next Sentinel. A
     * lost watch is opened again, on the next Sentinel, by connect_all. */
    if (!br->resolved || watch)
        br->next_sentinel = (br->next_sentinel + 1) % br->url.nsentinels;
    if (!br->resolved || watch)
        broker_schedule_reconnect(br);
}

static void broker_sentinel_on_connect(const redisAsyncContext *ac, int status)
{
    struct broker_sentinel *bs = ac->data;
    if (!bs || status == REDIS_OK)
        return;
    struct broker *br = bs->br;
    const struct broker_addr *a = &br->url.sentinel[br->next_sentinel];
    log_msg(LOG_WARN, "error", "broker %s: cannot reach Sentinel %s:%d; trying the next one",
            br->label, a->host, a->port);
    broker_sentinel_forget(bs);
}

static void broker_sentinel_on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct broker_sentinel *bs = ac->data;
    if (bs)
        broker_sentinel_forget(bs);
}

/* The master changed (or was named for the first time): connections to
 * any other address are closed, and new ones go to it. */
static void broker_set_master(struct broker *br, const char *host, size_t hlen, int port,
                              const char *source)
{
    br->resolved = 1;
    if (hlen < sizeof(br->url.host) && port > 0 &&
        (strlen(br->url.host) != hlen || strncmp(br->url.host, host, hlen) != 0 ||
         br->url.port != port)) {
        memcpy(br->url.host, host, hlen);
        br->url.host[hlen] = '\0';
        br->url.port = port;
        br->master_gen++;
        struct log_line l;
        log_begin(&l, LOG_INFO, "broker_master");
        log_str(&l, "broker", br->label);
        log_str(&l, "host", br->url.host);
        log_int(&l, "port", port);
        log_str(&l, "message", source);
        log_end(&l);
        broker_drop_all(br, "the Sentinels named another master: reconnecting to it");
    }
}

static void broker_sentinel_on_master(redisAsyncContext *ac, void *r, void *privdata)
{
    struct broker_sentinel *bs = privdata;
    redisReply *reply = r;
    if (!reply)
        return;
    struct broker *br = bs->br;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_STRING &&
        reply->element[1]->type == REDIS_REPLY_STRING) {
        broker_set_master(br, reply->element[0]->str, reply->element[0]->len,
                          atoi(reply->element[1]->str), "a Sentinel named the master");
        uv_timer_stop(&br->reconnect);
        redisAsyncDisconnect(ac);
        broker_connect_all(br);
        return;
    }
    const struct broker_addr *a = &br->url.sentinel[br->next_sentinel];
    log_msg(LOG_WARN, "error",
            "broker %s: Sentinel %s:%d does not name a master for %s (%.100s); asking the next "
            "one (check master-name and broker_sentinel_password_file)",
            br->label, a->host, a->port, br->url.master_name,
            reply->type == REDIS_REPLY_ERROR ? reply->str : "no such master");
    redisAsyncDisconnect(ac);
}

/* "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>" */
static void broker_sentinel_on_switch(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct broker_sentinel *bs = privdata;
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    struct broker *br = bs->br;
    char name[BROKER_MASTER_NAME_MAX], host[128];
    int port;
    if (sscanf(reply->element[2]->str, "%63s %*s %*d %127s %d", name, host, &port) != 3 ||
        strcmp(name, br->url.master_name) != 0)
        return;
    br->backoff_ms = 0;
    broker_set_master(br, host, strlen(host), port, "failover: +switch-master from a Sentinel");
    uv_timer_stop(&br->reconnect);
    broker_connect_all(br);
}

static struct broker_sentinel *broker_sentinel_open(struct broker *br, int watch)
{
    const struct broker_addr *a = &br->url.sentinel[br->next_sentinel];
    struct broker_sentinel *bs = calloc(1, sizeof(*bs));
    if (!bs)
        return NULL;
    bs->br = br;
    bs->watch = watch;
    bs->opened_ns = clock_now_ns();
    redisAsyncContext *ac = redisAsyncConnect(a->host, a->port);
    if (!ac || ac->err || broker_uv_attach(ac, &br->w->loop) < 0) {
        if (ac)
            redisAsyncFree(ac);
        free(bs);
        return NULL;
    }
    ac->data = bs;
    bs->ac = ac;
    redisAsyncSetConnectCallback(ac, broker_sentinel_on_connect);
    redisAsyncSetDisconnectCallback(ac, broker_sentinel_on_disconnect);
    if (br->sentinel_password[0])
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", br->sentinel_password);
    if (watch)
        redisAsyncCommand(ac, broker_sentinel_on_switch, bs, "SUBSCRIBE +switch-master");
    else
        redisAsyncCommand(ac, broker_sentinel_on_master, bs, "SENTINEL get-master-addr-by-name %s",
                          br->url.master_name);
    return bs;
}

static void broker_connect_all(struct broker *br)
{
    if (br->url.nsentinels) {
        if (!br->watch)
            br->watch = broker_sentinel_open(br, 1);
        if (!br->resolved) {
            if (!br->query)
                br->query = broker_sentinel_open(br, 0);
            if (!br->query)
                broker_schedule_reconnect(br);
            return; /* broker_sentinel_on_master comes back here */
        }
    }
    if (br->ncmd == 0) {
        struct broker_conn *bc = broker_open(br, 0);
        if (bc)
            br->cmd[br->ncmd++] = bc;
    }
    if (!br->sub)
        br->sub = broker_open(br, 1);
    if (br->ncmd == 0 || !br->sub || (br->url.nsentinels && !br->watch))
        broker_schedule_reconnect(br);
}

/* A command connection for one more request: the least busy connected
 * one, opening another (up to max_pool_size) when all are busy. */
static struct broker_conn *broker_pick(struct broker *br)
{
    struct broker_conn *best = NULL;
    for (int i = 0; i < br->ncmd; i++) {
        struct broker_conn *bc = br->cmd[i];
        if (bc->connected && (!best || bc->inflight < best->inflight))
            best = bc;
    }
    int cap = (int)br->w->cfg.max_pool_size < BROKER_POOL_CAP ? (int)br->w->cfg.max_pool_size
                                                              : BROKER_POOL_CAP;
    if (best && best->inflight >= BROKER_BUSY_INFLIGHT && br->ncmd < cap) {
        struct broker_conn *bc = broker_open(br, 0);
        if (bc)
            br->cmd[br->ncmd++] = bc;
    }
    return best;
}

/* ---- requests ---------------------------------------------------------- */

static void broker_req_unlink(struct broker_set *set, struct broker_req *req)
{
    if (req->prev)
        req->prev->next = req->next;
    else if (set->pending == req)
        set->pending = req->next;
    if (req->next)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
}

static void broker_req_free(struct broker_req *req)
{
    free(req->announce_key);
    free(req->channel);
    free(req->payload_tail);
    free((char *)req->data);
    free(req);
}

/* One of the request's hiredis callbacks ran: the last one frees it. */
static void broker_req_put(struct broker_req *req)
{
    if (--req->parts <= 0)
        broker_req_free(req);
}

/* Answer a request with an error (its reply will not come, or too late). */
static void broker_req_fail(struct worker *w, struct broker_req *req, int err)
{
    if (req->answered)
        return;
    req->answered = 1;
    broker_req_unlink(broker_set(w), req);
    switch (req->kind) {
    case BROKER_REQ_PUBLISH:
        ((broker_publish_cb)req->cb)(req->arg, err, 0, NULL);
        break;
    case BROKER_REQ_HEAD:
        ((broker_head_cb)req->cb)(req->arg, err, 0, NULL);
        break;
    case BROKER_REQ_RANGE:
        ((broker_range_cb)req->cb)(req->arg, err, NULL, 0);
        break;
    }
}

static struct broker_req *broker_req_new(struct worker *w, enum broker_req_kind kind, void *cb,
                                         void *arg)
{
    struct broker_req *req = calloc(1, sizeof(*req));
    if (!req)
        return NULL;
    req->kind = kind;
    req->cb = cb;
    req->arg = arg;
    req->parts = 1;
    req->lane = -1;
    req->sent_ns = clock_now_ns();
    req->deadline_ns = req->sent_ns + (uint64_t)w->cfg.pool_timeout * 1000000000ull;
    struct broker_set *set = broker_set(w);
    req->next = set->pending;
    if (set->pending)
        set->pending->prev = req;
    set->pending = req;
    return req;
}

static void broker_on_reply(redisAsyncContext *ac, void *r, void *privdata);
static void broker_on_wait(redisAsyncContext *ac, void *r, void *privdata);

/* Send over the pool. A publish goes where the previous publishes of its
 * lane still wait for their script to run: Redis runs one connection's
 * commands in order, and the script gives the seq, so a device's pipelined
 * publishes get seqs in the order it sent them. Spread over connections
 * they could overtake each other. */
static int broker_send(struct broker *br, struct broker_req *req, int argc, const char **argv,
                       const size_t *lens)
{
    struct broker_conn *bc = NULL;
    if (req->lane >= 0 && br->lane_inflight[req->lane] > 0 && br->lane_conn[req->lane] &&
        br->lane_conn[req->lane]->connected)
        bc = br->lane_conn[req->lane];
    if (!bc)
        bc = broker_pick(br);
    if (!bc || redisAsyncCommandArgv(bc->ac, broker_on_reply, req, argc, argv, lens) != REDIS_OK)
        return -EAGAIN;
    req->bc = bc;
    bc->inflight++;
    if (req->lane >= 0) {
        if (br->lane_conn[req->lane] != bc)
            br->lane_inflight[req->lane] = 0;
        br->lane_conn[req->lane] = bc;
        br->lane_inflight[req->lane]++;
    }
    if (req->wait_n) {
        /* Same connection, right behind the script: WAIT covers exactly
         * the writes this connection made so far, this message included
         * (WAIT cannot run inside the script). */
        char n[16], ms[24];
        snprintf(n, sizeof(n), "%d", req->wait_n);
        snprintf(ms, sizeof(ms), "%lld", (long long)br->w->cfg.broker_timeout * 1000);
        const char *wargv[] = {"WAIT", n, ms};
        size_t wlens[] = {4, strlen(n), strlen(ms)};
        if (redisAsyncCommandArgv(bc->ac, broker_on_wait, req, 3, wargv, wlens) == REDIS_OK)
            req->parts = 2;
        else
            req->stored = -1; /* no WAIT: the script's reply fails the publish */
    }
    return 0;
}

/* Allocate, send and track one request; every failure is answered
 * through the callback like any other, so callers have one path. */
static void broker_request(struct worker *w, int b, struct broker_req *req, int argc,
                           const char **argv, const size_t *lens)
{
    if (broker_send(broker_set(w)->b[b], req, argc, argv, lens) < 0) {
        broker_req_fail(w, req, -EAGAIN);
        broker_req_free(req);
    }
}

/* The request failed before it was sent: its callback hears it now. */
static void broker_request_nomem(struct worker *w, enum broker_req_kind kind, void *cb, void *arg)
{
    struct broker_req unsent = {.kind = kind, .cb = cb, .arg = arg, .answered = 0};
    unsent.prev = unsent.next = NULL;
    broker_req_fail(w, &unsent, -ENOMEM);
}

static void broker_latency(struct worker *w, struct broker *br, struct broker_req *req)
{
    struct segment_broker_counters *ctr = &w->slot->counters.broker[br->index];
    uint64_t ns = clock_now_ns() - req->sent_ns;
    segment_counter_add(&ctr->latency_bucket[segment_latency_bucket(ns)], 1);
    segment_counter_add(&ctr->latency_sum_ns, ns);
    segment_counter_add(&ctr->latency_count, 1);
}

static void broker_answer(struct worker *w, struct broker *br, struct broker_req *req,
                          redisReply *reply)
{
    struct segment_broker_counters *ctr = &w->slot->counters.broker[br->index];
    if (req->kind == BROKER_REQ_PUBLISH && !req->wait_n)
        broker_latency(w, br, req);
    if (req->kind == BROKER_REQ_PUBLISH || req->kind == BROKER_REQ_HEAD) {
        /* Both scripts answer {seq, epoch}; the callbacks share a type. */
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
            reply->element[0]->type == REDIS_REPLY_INTEGER &&
            reply->element[1]->type == REDIS_REPLY_STRING) {
            char epoch[BROKER_EPOCH_MAX + 1];
            snprintf(epoch, sizeof(epoch), "%.*s", (int)reply->element[1]->len,
                     reply->element[1]->str);
            if (req->kind == BROKER_REQ_PUBLISH && req->wait_n) {
                if (req->stored == 0) { /* the ack waits for WAIT */
                    req->stored = 1;
                    req->seq = (uint64_t)reply->element[0]->integer;
                    memcpy(req->epoch, epoch, sizeof(epoch));
                    return;
                }
            } else {
                ((broker_publish_cb)req->cb)(req->arg, 0, (uint64_t)reply->element[0]->integer,
                                             epoch);
                return;
            }
        }
    } else if (reply->type == REDIS_REPLY_ARRAY) {
        size_t n = reply->elements;
        struct broker_entry *e = calloc(n ? n : 1, sizeof(*e));
        size_t k = 0;
        for (size_t i = 0; e && i < n; i++) {
            redisReply *item = reply->element[i];
            if (item->type != REDIS_REPLY_ARRAY || item->elements != 2 ||
                item->element[0]->type != REDIS_REPLY_STRING ||
                item->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            e[k].seq = strtoull(item->element[0]->str, NULL, 10);
            redisReply *f = item->element[1];
            for (size_t j = 0; j + 1 < f->elements; j += 2) {
                if (f->element[j]->type != REDIS_REPLY_STRING)
                    continue;
                if (strcmp(f->element[j]->str, "ts") == 0)
                    e[k].ts_ms = strtoll(f->element[j + 1]->str, NULL, 10);
                else if (strcmp(f->element[j]->str, "data") == 0) {
                    e[k].data = f->element[j + 1]->str;
                    e[k].len = f->element[j + 1]->len;
                }
            }
            if (e[k].data)
                k++;
        }
        ((broker_range_cb)req->cb)(req->arg, e ? 0 : -ENOMEM, e, k);
        free(e);
        return;
    }
    segment_counter_add(&ctr->errors[BROKER_ERROR_COMMAND], 1);
    if (reply->type == REDIS_REPLY_ERROR) {
        log_msg(LOG_WARN, "error", "broker %s refused a request: %.200s", br->label, reply->str);
        /* A master demoted under us: never write here again. */
        if (strncmp(reply->str, "READONLY", 8) == 0 && req->bc) {
            if (br->url.nsentinels && req->bc->gen == br->master_gen)
                br->resolved = 0;
            broker_drop(req->bc, "the broker answered READONLY (a replica now): reconnecting "
                                 "to the master");
        }
    }
    req->answered = 0;
    broker_req_fail(w, req, -EAGAIN);
}

static void broker_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct broker_req *req = privdata;
    struct broker_conn *bc = req->bc;
    struct broker *br = bc->br;
    struct worker *w = br->w;
    redisReply *reply = r;
    if (bc->inflight && req->parts == 1)
        bc->inflight--;
    if (req->lane >= 0 && br->lane_conn[req->lane] == bc && br->lane_inflight[req->lane])
        br->lane_inflight[req->lane]--;
    bc->idle_since_ns = clock_now_ns();
    if (!reply) {
        /* The connection is going away: hiredis flushes its callbacks. */
        if (!req->answered)
            segment_counter_add(&w->slot->counters.broker[br->index].errors[BROKER_ERROR_CONNECT], 1);
        broker_req_fail(w, req, -EAGAIN);
    } else if (!req->answered) {
        if (req->wait_n && req->stored != -1) {
            broker_answer(w, br, req, reply); /* keeps seq and epoch, or fails */
        } else {
            req->answered = 1;
            broker_req_unlink(broker_set(w), req);
            broker_answer(w, br, req, reply);
        }
    }
    broker_req_put(req);
}

/* Publish a message WAIT confirmed, as "<seq> <ts> <epoch> <data>". */
static void broker_announce(struct broker_conn *bc, struct broker_req *req)
{
    struct broker_set *set = broker_set(bc->br->w);
    char seq[24];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)req->seq);
    size_t tl = strlen(req->payload_tail), el = strlen(req->epoch), sl = strlen(seq);
    size_t plen = sl + 1 + tl + el + 1 + req->dlen;
    char *payload = malloc(plen);
    if (!payload) {
        log_msg(LOG_ERROR, "error", "out of memory announcing a publish on broker %s: "
                "subscribers get it with the stream's next message", bc->br->label);
        return;
    }
    char *p = payload;
    memcpy(p, seq, sl);
    p += sl;
    *p++ = ' ';
    memcpy(p, req->payload_tail, tl);
    p += tl;
    memcpy(p, req->epoch, el);
    p += el;
    *p++ = ' ';
    memcpy(p, req->data, req->dlen);
    const char *argv[] = {"EVALSHA", set->announce_sha, "1", req->announce_key, seq,
                          req->channel, payload};
    size_t lens[] = {7, strlen(set->announce_sha), 1, strlen(req->announce_key), sl,
                     strlen(req->channel), plen};
    redisAsyncCommandArgv(bc->ac, NULL, NULL, 7, argv, lens);
    free(payload);
}

/* WAIT's answer: how many replicas hold everything this connection wrote. */
static void broker_on_wait(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    struct broker_req *req = privdata;
    struct broker_conn *bc = req->bc;
    struct broker *br = bc->br;
    struct worker *w = br->w;
    redisReply *reply = r;
    if (bc->inflight)
        bc->inflight--;
    bc->idle_since_ns = clock_now_ns();
    if (!reply) {
        if (!req->answered)
            segment_counter_add(&w->slot->counters.broker[br->index].errors[BROKER_ERROR_CONNECT], 1);
        broker_req_fail(w, req, -EAGAIN);
    } else if (!req->answered) {
        if (req->stored == 1 && reply->type == REDIS_REPLY_INTEGER &&
            reply->integer >= req->wait_n) {
            req->answered = 1;
            broker_req_unlink(broker_set(w), req);
            broker_latency(w, br, req);
            ((broker_publish_cb)req->cb)(req->arg, 0, req->seq, req->epoch);
            broker_announce(bc, req);
        } else {
            segment_counter_add(&w->slot->counters.broker[br->index].errors[BROKER_ERROR_REPLICAS], 1);
            log_msg(LOG_WARN, "error",
                    "broker %s: %lld of %d replicas confirmed a publish within broker_timeout: "
                    "answered unavailable (it may still be stored); check the Redis replicas",
                    br->label, reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1LL,
                    req->wait_n);
            broker_req_fail(w, req, -EAGAIN);
        }
    }
    broker_req_put(req);
}

/* ---- public API -------------------------------------------------------- */

int broker_for_stream(const struct worker *w, const char *stream, size_t len)
{
    struct broker_set *set = broker_set(w);
    int best = 0;
    uint64_t best_score = 0;
    /* Rendezvous hashing: adding a broker moves only the streams it wins. */
    for (int i = 0; i < set->n; i++) {
        uint64_t h = hash_fnv1a64_add(HASH_FNV1A64_INIT, set->b[i]->label,
                                      strlen(set->b[i]->label));
        h = hash_fnv1a64_add(h, "#", 1);
        h = hash_fnv1a64_add(h, stream, len);
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
        if (i == 0 || h > best_score) {
            best = i;
            best_score = h;
        }
    }
    return best;
}

int broker_is_up(const struct worker *w, int b)
{
    return atomic_load(&w->slot->broker[b].up) != 0;
}

int broker_sub_is_up(const struct worker *w, int b)
{
    /* What the gauge says: a subscription that is not answering would
     * leave a new subscriber waiting for messages that do not come. */
    return atomic_load(&w->slot->broker[b].sub_up) != 0;
}

void broker_publish(struct worker *w, int b, const char *stream, size_t len, const char *data,
                    size_t dlen, int64_t ts_ms, broker_publish_cb cb, void *arg)
{
    struct broker_set *set = broker_set(w);
    char seqk[STREAMLOG_NAME_MAX + 32], epochk[STREAMLOG_NAME_MAX + 32],
        logk[STREAMLOG_NAME_MAX + 32], ackedk[STREAMLOG_NAME_MAX + 32],
        channel[STREAMLOG_NAME_MAX + 32], ts[24], maxlen[24], epoch[STREAMLOG_EPOCH_LEN + 1];
    broker_key(seqk, sizeof(seqk), stream, len, ":seq");
    broker_key(epochk, sizeof(epochk), stream, len, ":epoch");
    broker_key(logk, sizeof(logk), stream, len, ":log");
    broker_key(ackedk, sizeof(ackedk), stream, len, ":acked");
    broker_key(channel, sizeof(channel), stream, len, "");
    snprintf(ts, sizeof(ts), "%lld", (long long)ts_ms);
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)w->cfg.history_size);
    streamlog_new_epoch(epoch);
    int wait_n = (int)w->cfg.broker_replicas_ack;
    struct broker_req *req = broker_req_new(w, BROKER_REQ_PUBLISH, (void *)cb, arg);
    if (req && wait_n) {
        /* The announce after WAIT needs the message again; data stays
         * valid until the callback (the caller's buffer), not after. */
        char tail[32];
        snprintf(tail, sizeof(tail), "%s ", ts);
        req->wait_n = wait_n;
        req->announce_key = strdup(ackedk);
        req->channel = strdup(channel);
        req->payload_tail = strdup(tail);
        char *copy = malloc(dlen ? dlen : 1);
        if (!req->announce_key || !req->channel || !req->payload_tail || !copy) {
            free(copy);
            broker_req_fail(w, req, -ENOMEM);
            broker_req_free(req);
            return;
        }
        memcpy(copy, data, dlen);
        req->data = copy;
        req->dlen = dlen;
    }
    if (!req) {
        broker_request_nomem(w, BROKER_REQ_PUBLISH, (void *)cb, arg);
        return;
    }
    req->lane = (int)(streamlog_name_hash(stream, len) % BROKER_LANES);
    const char *argv[] = {"EVALSHA", set->sha, "4", seqk, epochk, logk, ackedk, ts, data,
                          maxlen, epoch, channel, wait_n ? "0" : "1"};
    size_t lens[] = {7,          strlen(set->sha), 1,           strlen(seqk),  strlen(epochk),
                     strlen(logk), strlen(ackedk), strlen(ts),  dlen,          strlen(maxlen),
                     strlen(epoch), strlen(channel), 1};
    broker_request(w, b, req, 13, argv, lens);
}

void broker_head(struct worker *w, int b, const char *stream, size_t len, broker_head_cb cb,
                 void *arg)
{
    char seqk[STREAMLOG_NAME_MAX + 32], epochk[STREAMLOG_NAME_MAX + 32],
        ackedk[STREAMLOG_NAME_MAX + 32];
    broker_key(seqk, sizeof(seqk), stream, len, ":seq");
    broker_key(epochk, sizeof(epochk), stream, len, ":epoch");
    broker_key(ackedk, sizeof(ackedk), stream, len, ":acked");
    /* The epoch is made here when the stream has none yet, so a
     * subscriber's position means something before the first publish.
     * The position is the last announced seq: a stored message still
     * waiting for its replicas is not the subscriber's yet. (":seq" for a
     * stream stored before ":acked" existed.) */
    static const char script[] =
        "local e = redis.call('GET', KEYS[2])\n"
        "if not e then e = ARGV[1]; redis.call('SET', KEYS[2], e) end\n"
        "local s = redis.call('GET', KEYS[3]) or redis.call('GET', KEYS[1]) or '0'\n"
        "return {tonumber(s), e}\n";
    char epoch[STREAMLOG_EPOCH_LEN + 1];
    streamlog_new_epoch(epoch);
    struct broker_req *req = broker_req_new(w, BROKER_REQ_HEAD, (void *)cb, arg);
    if (!req) {
        broker_request_nomem(w, BROKER_REQ_HEAD, (void *)cb, arg);
        return;
    }
    const char *argv[] = {"EVAL", script, "3", seqk, epochk, ackedk, epoch};
    size_t lens[] = {4, sizeof(script) - 1, 1, strlen(seqk), strlen(epochk), strlen(ackedk),
                     strlen(epoch)};
    broker_request(w, b, req, 7, argv, lens);
}

void broker_range(struct worker *w, int b, const char *stream, size_t len, uint64_t from,
                  uint64_t to, size_t max, broker_range_cb cb, void *arg)
{
    char logk[STREAMLOG_NAME_MAX + 32], start[32], end[32], count[24];
    broker_key(logk, sizeof(logk), stream, len, ":log");
    snprintf(start, sizeof(start), "%llu-0", (unsigned long long)from);
    snprintf(end, sizeof(end), "%llu-0", (unsigned long long)to);
    snprintf(count, sizeof(count), "%zu", max);
    struct broker_req *req = broker_req_new(w, BROKER_REQ_RANGE, (void *)cb, arg);
    if (!req) {
        broker_request_nomem(w, BROKER_REQ_RANGE, (void *)cb, arg);
        return;
    }
    const char *argv[] = {"XRANGE", logk, start, end, "COUNT", count};
    size_t lens[] = {6, strlen(logk), strlen(start), strlen(end), 5, strlen(count)};
    broker_request(w, b, req, 6, argv, lens);
}

void broker_refill(struct worker *w, int b, const char *stream, size_t len, uint64_t from,
                   const char *epoch, size_t max, broker_range_cb cb, void *arg)
{
    char logk[STREAMLOG_NAME_MAX + 32], ackedk[STREAMLOG_NAME_MAX + 32],
        seqk[STREAMLOG_NAME_MAX + 32], epochk[STREAMLOG_NAME_MAX + 32], start[32], seen[24],
        count[24];
    broker_key(logk, sizeof(logk), stream, len, ":log");
    broker_key(ackedk, sizeof(ackedk), stream, len, ":acked");
    broker_key(seqk, sizeof(seqk), stream, len, ":seq");
    broker_key(epochk, sizeof(epochk), stream, len, ":epoch");
    snprintf(start, sizeof(start), "%llu-0", (unsigned long long)from);
    snprintf(seen, sizeof(seen), "%llu", (unsigned long long)(from ? from - 1 : 0));
    snprintf(count, sizeof(count), "%zu", max);
    struct broker_req *req = broker_req_new(w, BROKER_REQ_RANGE, (void *)cb, arg);
    if (!req) {
        broker_request_nomem(w, BROKER_REQ_RANGE, (void *)cb, arg);
        return;
    }
    /* Up to the newest announced message, never beyond: a stored message
     * waiting for its replicas reaches subscribers through its announce
     * (or a later one's hole fill), once a failover cannot take it back.
     * A sequence behind what was seen, in the same epoch, lost its tail
     * (asynchronous replication): move it past what was seen. */
    static const char script[] =
        "local seq = tonumber(redis.call('GET', KEYS[3]) or '0')\n"
        "local seen = tonumber(ARGV[3])\n"
        "if seq < seen and redis.call('GET', KEYS[4]) == ARGV[4] then\n"
        "  redis.call('SET', KEYS[3], seen)\n"
        "  redis.call('SET', KEYS[2], seen)\n"
        "  return {}\n"
        "end\n"
        "local hi = redis.call('GET', KEYS[2]) or redis.call('GET', KEYS[3])\n"
        "if not hi then return {} end\n"
        "return redis.call('XRANGE', KEYS[1], ARGV[1], hi .. '-0', 'COUNT', ARGV[2])\n";
    const char *e = epoch ? epoch : "";
    const char *argv[] = {"EVAL", script, "4", logk, ackedk, seqk, epochk, start, count, seen, e};
    size_t lens[] = {4,          sizeof(script) - 1, 1,           strlen(logk),
                     strlen(ackedk), strlen(seqk),   strlen(epochk), strlen(start),
                     strlen(count), strlen(seen),    strlen(e)};
    broker_request(w, b, req, 11, argv, lens);
}

/* Every reply on the pub/sub connection: subscribe confirmations and
 * messages "<seq> <ts> <epoch> <data>" from the publish script. */
static void broker_on_pubsub(redisAsyncContext *ac, void *r, void *privdata)
{
    struct broker *br = privdata;
    redisReply *reply = r;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    const char *channel = reply->element[1]->str;
    size_t clen = reply->element[1]->len;
    if (strcmp(kind, "subscribe") == 0 && strcmp(channel, BROKER_HEARTBEAT_CHANNEL) == 0) {
        if (br->sub) {
            br->sub->ready = 1;
            broker_update_gauges(br);
        }
        return;
    }
    /* "wsgate:{<stream>}" */
    if (clen < 9 || strncmp(channel, "wsgate:{", 8) != 0 || channel[clen - 1] != '}')
        return;
    const char *stream = channel + 8;
    size_t slen = clen - 9;
    if (strcmp(kind, "subscribe") == 0) {
        broker_set(br->w)->ev->subscribed(br->w, br->index, stream, slen);
        return;
    }
    if (strcmp(kind, "message") != 0 || reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *p = reply->element[2]->str, *end = p + reply->element[2]->len;
    char *q;
    uint64_t seq = strtoull(p, &q, 10);
    if (q == p || q >= end || *q != ' ')
        return;
    p = q + 1;
    int64_t ts = strtoll(p, &q, 10);
    if (q == p || q >= end || *q != ' ')
        return;
    p = q + 1;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp || sp - p > BROKER_EPOCH_MAX)
        return;
    char epoch[BROKER_EPOCH_MAX + 1];
    memcpy(epoch, p, (size_t)(sp - p));
    epoch[sp - p] = '\0';
    struct broker_entry e = {seq, ts, sp + 1, (size_t)(end - sp - 1)};
    broker_set(br->w)->ev->message(br->w, stream, slen, epoch, &e);
}

void broker_subscribe(struct worker *w, int b, const char *stream, size_t len)
{
    struct broker *br = broker_set(w)->b[b];
    if (!br->sub || !br->sub->connected)
        return; /* the reconnected event subscribes again */
    char channel[STREAMLOG_NAME_MAX + 32];
    broker_key(channel, sizeof(channel), stream, len, "");
    redisAsyncCommand(br->sub->ac, broker_on_pubsub, br, "SUBSCRIBE %s", channel);
}

void broker_unsubscribe(struct worker *w, int b, const char *stream, size_t len)
{
    struct broker *br = broker_set(w)->b[b];
    if (!br->sub || !br->sub->connected)
        return;
    char channel[STREAMLOG_NAME_MAX + 32];
    broker_key(channel, sizeof(channel), stream, len, "");
    redisAsyncCommand(br->sub->ac, broker_on_pubsub, br, "UNSUBSCRIBE %s", channel);
}

void broker_sweep(struct worker *w, uint64_t now_ns)
{
    struct broker_set *set = broker_set(w);
    if (!set)
        return;
    struct broker_req *req = set->pending, *next;
    for (; req; req = next) {
        next = req->next;
        if (now_ns > req->deadline_ns) {
            struct broker *br = req->bc ? req->bc->br : NULL;
            if (br)
                segment_counter_add(&w->slot->counters.broker[br->index].errors[BROKER_ERROR_TIMEOUT], 1);
            broker_req_fail(w, req, -EAGAIN);
        }
    }
    uint64_t idle_ns = (uint64_t)w->cfg.max_idle_time * 1000000000ull;
    uint64_t silent_ns = (uint64_t)w->cfg.broker_timeout * 1000000000ull;
    for (int b = 0; b < set->n; b++) {
        struct broker *br = set->b[b];
        /* A Sentinel that does not answer its query in broker_timeout (a
         * blackholed address: hiredis has no connect timeout) is given up
         * for the next one. */
        if (br->query && now_ns - br->query->opened_ns > silent_ns && br->query->ac->c.fd >= 0) {
            br->query->opened_ns = now_ns;
            shutdown(br->query->ac->c.fd, SHUT_RDWR);
        }
        struct broker_conn *sub = br->sub;
        /* The pub/sub connection is watched, not assumed: a PING every
         * second, and silence past broker_timeout since bytes last came
         * (a ping unanswered, or no ROLE answer yet) replaces it; the
         * streams it followed refill from their last delivered seq. */
        if (sub && sub->ac && !sub->dropped && now_ns - sub->heard_ns > silent_ns &&
            (!sub->connected || sub->ping_ns > sub->heard_ns)) {
            segment_counter_add(&w->slot->counters.broker[br->index].errors[BROKER_ERROR_SUBSCRIPTION], 1);
            if (br->url.nsentinels && sub->gen == br->master_gen)
                br->resolved = 0;
            broker_drop(sub, "the pub/sub connection did not answer within broker_timeout: "
                             "replacing it");
            broker_update_gauges(br);
        } else if (sub && sub->connected && now_ns - sub->ping_ns >= BROKER_PING_NS &&
                   (sub->ac->c.flags & REDIS_SUBSCRIBED)) {
            /* Raw, without a callback: in subscribed mode hiredis 0.14
             * would park one per PING on a list it never empties. */
            static const char ping[] = "*1\r\n$4\r\nPING\r\n";
            if (redisAppendFormattedCommand(&sub->ac->c, ping, sizeof(ping) - 1) == REDIS_OK)
                sub->ac->ev.addWrite(sub->ac->ev.data);
            sub->ping_ns = now_ns;
        }
        /* Keep the first connection; close pooled ones left idle. */
        for (int i = br->ncmd - 1; i >= 1; i--) {
            struct broker_conn *bc = br->cmd[i];
            if (bc->connected && bc->inflight == 0 && now_ns - bc->idle_since_ns > idle_ns)
                redisAsyncDisconnect(bc->ac);
        }
        broker_update_gauges(br);
    }
}

static int broker_read_password(const char *path, char *out, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(out, 1, len - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    return 0;
}

int broker_init(struct worker *w, const struct broker_events *events)
{
    if (!broker_enabled(w))
        return 0;
    struct broker_set *set = calloc(1, sizeof(*set));
    if (!set)
        return -ENOMEM;
    set->ev = events;
    w->broker = set;
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)broker_script, sizeof(broker_script) - 1, digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        sprintf(set->sha + 2 * i, "%02x", digest[i]);
    SHA1((const unsigned char *)broker_announce_script, sizeof(broker_announce_script) - 1,
         digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        sprintf(set->announce_sha + 2 * i, "%02x", digest[i]);
    for (int i = 0; i < w->cfg.broker_count; i++) {
        struct broker *br = calloc(1, sizeof(*br));
        if (!br)
            return -ENOMEM;
        const char *why;
        broker_url_parse(w->cfg.broker[i], &br->url, &why);
        broker_url_label(w->cfg.broker[i], br->label, sizeof(br->label));
        snprintf(br->password, sizeof(br->password), "%s", br->url.password);
        if (w->cfg.broker_password_file[0] &&
            broker_read_password(w->cfg.broker_password_file, br->password,
                                 sizeof(br->password)) < 0)
            log_msg(LOG_ERROR, "error", "cannot read broker_password_file; connecting to %s "
                    "without a password", br->label);
        if (w->cfg.broker_sentinel_password_file[0] &&
            broker_read_password(w->cfg.broker_sentinel_password_file, br->sentinel_password,
                                 sizeof(br->sentinel_password)) < 0)
            log_msg(LOG_ERROR, "error", "cannot read broker_sentinel_password_file; asking the "
                    "Sentinels of %s without a password", br->label);
        br->resolved = br->url.nsentinels == 0;
        br->w = w;
        br->index = i;
        uv_timer_init(&w->loop, &br->reconnect);
        br->reconnect.data = br;
        set->b[set->n++] = br;
        broker_connect_all(br);
    }
    return 0;
}

static void broker_on_closed(uv_handle_t *h)
{
    free(h->data);
}

void broker_close(struct worker *w)
{
    struct broker_set *set = broker_set(w);
    if (!set)
        return;
    set->closing = 1;
    for (int b = 0; b < set->n; b++) {
        struct broker *br = set->b[b];
        /* redisAsyncFree answers what is in flight with NULL replies; the
         * connection structs stay valid until it returns. */
        for (int i = 0; i < br->ncmd; i++) {
            struct broker_conn *bc = br->cmd[i];
            bc->ac->data = NULL;
            redisAsyncFree(bc->ac);
            free(bc);
        }
        br->ncmd = 0;
        if (br->sub) {
            br->sub->ac->data = NULL;
            redisAsyncFree(br->sub->ac);
            free(br->sub);
            br->sub = NULL;
        }
        struct broker_sentinel *sentinels[] = {br->query, br->watch};
        for (int i = 0; i < 2; i++) {
            if (!sentinels[i])
                continue;
            sentinels[i]->ac->data = NULL;
            redisAsyncFree(sentinels[i]->ac);
            free(sentinels[i]);
        }
        br->query = br->watch = NULL;
        uv_close((uv_handle_t *)&br->reconnect, broker_on_closed);
    }
    w->broker = NULL;
    free(set);
}
