#include "broker.h"

#include <errno.h>
#include <hiredis/async.h>
#include <uv.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brokerurl.h"
#include "clock.h"
#include "cluster.h"
#include "log.h"
#include "segment.h"
#include "streamlog.h"

#define BROKER_POOL_CAP 32          /* command connections per broker, whatever max_pool_size */
#define BROKER_BUSY_INFLIGHT 16     /* open another pooled connection beyond this */
#define BROKER_BACKOFF_FIRST_MS 100
#define BROKER_BACKOFF_MAX_MS 5000

/* Sequence, store and announce one message atomically. The Redis Stream
 * entry id is the seq itself, so XRANGE by seq needs no index. A stream
 * whose sequence (re)starts gets the epoch the caller proposes. */
static const char broker_script[] =
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local epoch = redis.call('GET', KEYS[2])\n"
    "if not epoch then\n"
    "  epoch = ARGV[4]\n"
    "  redis.call('SET', KEYS[2], epoch)\n"
    "end\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'ts', ARGV[1], 'data', ARGV[2])\n"
    "redis.call('PUBLISH', ARGV[5], seq .. ' ' .. ARGV[1] .. ' ' .. epoch .. ' ' .. ARGV[2])\n"
    "return {seq, epoch}\n";

enum broker_req_kind { BROKER_REQ_PUBLISH, BROKER_REQ_HEAD, BROKER_REQ_RANGE };

struct broker;

struct broker_conn {
    redisAsyncContext *ac;
    struct broker *br;
    int pubsub;
    int connected;
    unsigned inflight;
    uint64_t idle_since_ns;
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
};

struct broker {
    struct worker *w;
    int index;
    struct broker_url url;
    char label[96];
    char password[256];
    struct broker_conn *cmd[BROKER_POOL_CAP];
    int ncmd;
    struct broker_conn *sub;
    uv_timer_t reconnect;
    unsigned backoff_ms;
    int was_up;
};

struct broker_set {
    struct broker *b[CONFIG_BROKERS_MAX];
    int n;
    struct broker_req *pending; /* requests not answered yet, for pool_timeout */
    int closing;                /* the worker is exiting: no reconnects */
    char sha[SHA_DIGEST_LENGTH * 2 + 1];
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
};

static void broker_uv_on_poll(uv_poll_t *h, int status, int events)
{
    struct broker_uv *p = h->data;
    if (!p->ac)
        return;
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
    if (!p || uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return -1;
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
    for (int i = 0; i < br->ncmd; i++) {
        if (br->cmd[i] && br->cmd[i]->connected) {
            if (br->cmd[i]->inflight)
                in_use++;
            else
                idle++;
        }
    }
    int up = br->ncmd > 0 && br->cmd[0] && br->cmd[0]->connected && br->sub && br->sub->connected;
    atomic_store(&st->up, (uint32_t)up);
    atomic_store(&st->pool_in_use, in_use);
    atomic_store(&st->pool_idle, idle);
    if (up != br->was_up) {
        struct log_line l;
        log_begin(&l, up ? LOG_INFO : LOG_WARN, up ? "broker_up" : "error");
        log_str(&l, "broker", br->label);
        log_str(&l, "message", up ? "connected to the broker"
                                  : "lost the broker: publishes answer unavailable until it "
                                    "is back; reconnecting with backoff");
        log_end(&l);
        br->was_up = up;
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

static void broker_forget_conn(struct broker_conn *bc);

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
        broker_forget_conn(bc);
        return;
    }
    bc->connected = 1;
    bc->idle_since_ns = clock_now_ns();
    if (bc->pubsub) {
        br->backoff_ms = 0;
        cluster_on_reconnected(br->w, br->index);
    }
    broker_update_gauges(br);
}

static void broker_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct broker_conn *bc = ac->data;
    if (!bc)
        return;
    broker_forget_conn(bc);
}

/* The connection's context is gone (hiredis frees it after the
 * callback): drop it from the broker and reconnect when needed. */
static void broker_forget_conn(struct broker_conn *bc)
{
    struct broker *br = bc->br;
    int status = REDIS_ERR;
    bc->ac = NULL;
    bc->connected = 0;
    if (br->sub == bc) {
        br->sub = NULL;
        if (!broker_set(br->w)->closing)
            cluster_on_lost(br->w, br->index);
    } else {
        for (int i = 0; i < br->ncmd; i++) {
            if (br->cmd[i] == bc) {
                br->cmd[i] = br->cmd[--br->ncmd];
                br->cmd[br->ncmd] = NULL;
                break;
            }
        }
    }
    free(bc);
    if (broker_set(br->w)->closing)
        return;
    broker_update_gauges(br);
    if (status != REDIS_OK || br->ncmd == 0 || !br->sub)
        broker_schedule_reconnect(br);
}

static struct broker_conn *broker_open(struct broker *br, int pubsub)
{
    struct broker_conn *bc = calloc(1, sizeof(*bc));
    if (!bc)
        return NULL;
    bc->br = br;
    bc->pubsub = pubsub;
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
    redisAsyncSetConnectCallback(ac, broker_on_connect);
    redisAsyncSetDisconnectCallback(ac, broker_on_disconnect);
    /* Queued ahead of everything else: hiredis sends them once connected. */
    if (br->password[0])
        redisAsyncCommand(ac, NULL, NULL, "AUTH %s", br->password);
    if (br->url.db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", br->url.db);
    /* Load the publish script before any publish on this connection (a
     * restarted Redis forgets it, and a restart means a new connection). */
    if (!pubsub)
        redisAsyncCommand(ac, NULL, NULL, "SCRIPT LOAD %s", broker_script);
    else
        redisAsyncCommand(ac, NULL, NULL, "PING"); /* gets the connect noticed */
    return bc;
}

static void broker_connect_all(struct broker *br)
{
    if (br->ncmd == 0) {
        struct broker_conn *bc = broker_open(br, 0);
        if (bc)
            br->cmd[br->ncmd++] = bc;
    }
    if (!br->sub)
        br->sub = broker_open(br, 1);
    if (br->ncmd == 0 || !br->sub)
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
    free(req);
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

static int broker_send(struct broker *br, struct broker_req *req, int argc, const char **argv,
                       const size_t *lens)
{
    struct broker_conn *bc = broker_pick(br);
    if (!bc || redisAsyncCommandArgv(bc->ac, broker_on_reply, req, argc, argv, lens) != REDIS_OK)
        return -EAGAIN;
    req->bc = bc;
    bc->inflight++;
    return 0;
}

/* Allocate, send and track one request; every failure is answered
 * through the callback like any other, so callers have one path. */
static void broker_request(struct worker *w, int b, enum broker_req_kind kind, void *cb, void *arg,
                           int argc, const char **argv, const size_t *lens)
{
    struct broker_req *req = broker_req_new(w, kind, cb, arg);
    if (!req) {
        struct broker_req unsent = {.kind = kind, .cb = cb, .arg = arg};
        broker_req_fail(w, &unsent, -ENOMEM);
        return;
    }
    if (broker_send(broker_set(w)->b[b], req, argc, argv, lens) < 0) {
        broker_req_fail(w, req, -EAGAIN);
        broker_req_free(req);
    }
}

static void broker_answer(struct worker *w, struct broker *br, struct broker_req *req,
                          redisReply *reply)
{
    struct segment_broker_counters *ctr = &w->slot->counters.broker[br->index];
    if (req->kind == BROKER_REQ_PUBLISH) {
        uint64_t ns = clock_now_ns() - req->sent_ns;
        segment_counter_add(&ctr->latency_bucket[segment_latency_bucket(ns)], 1);
        segment_counter_add(&ctr->latency_sum_ns, ns);
        segment_counter_add(&ctr->latency_count, 1);
    }
    if (req->kind == BROKER_REQ_PUBLISH || req->kind == BROKER_REQ_HEAD) {
        /* Both scripts answer {seq, epoch}; the callbacks share a type. */
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
            reply->element[0]->type == REDIS_REPLY_INTEGER &&
            reply->element[1]->type == REDIS_REPLY_STRING) {
            char epoch[BROKER_EPOCH_MAX + 1];
            snprintf(epoch, sizeof(epoch), "%.*s", (int)reply->element[1]->len,
                     reply->element[1]->str);
            ((broker_publish_cb)req->cb)(req->arg, 0, (uint64_t)reply->element[0]->integer, epoch);
            return;
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
    if (reply->type == REDIS_REPLY_ERROR)
        log_msg(LOG_WARN, "error", "broker %s refused a request: %.200s", br->label, reply->str);
    req->answered = 0;
    broker_req_fail(w, req, -EAGAIN);
}

static void broker_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    struct broker_req *req = privdata;
    struct broker_conn *bc = req->bc;
    struct broker *br = bc->br;
    struct worker *w = br->w;
    redisReply *reply = r;
    if (bc->inflight)
        bc->inflight--;
    bc->idle_since_ns = clock_now_ns();
    if (!reply) {
        /* The connection is going away: hiredis flushes its callbacks. */
        if (!req->answered)
            segment_counter_add(&w->slot->counters.broker[br->index].errors[BROKER_ERROR_CONNECT], 1);
        broker_req_fail(w, req, -EAGAIN);
        broker_req_free(req);
        return;
    }
    if (req->answered) { /* timed out before: nobody waits */
        broker_req_free(req);
        return;
    }
    req->answered = 1;
    broker_req_unlink(broker_set(w), req);
    broker_answer(w, br, req, reply);
    broker_req_free(req);
}

/* ---- public API -------------------------------------------------------- */

int broker_for_stream(const struct worker *w, const char *stream, size_t len)
{
    struct broker_set *set = broker_set(w);
    int best = 0;
    uint64_t best_score = 0;
    /* Rendezvous hashing: adding a broker moves only the streams it wins. */
    for (int i = 0; i < set->n; i++) {
        uint64_t h = 14695981039346656037ull;
        for (const char *p = set->b[i]->label; *p; p++)
            h = (h ^ (uint8_t)*p) * 1099511628211ull;
        h = (h ^ '#') * 1099511628211ull;
        for (size_t k = 0; k < len; k++)
            h = (h ^ (uint8_t)stream[k]) * 1099511628211ull;
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

void broker_publish(struct worker *w, int b, const char *stream, size_t len, const char *data,
                    size_t dlen, int64_t ts_ms, broker_publish_cb cb, void *arg)
{
    struct broker_set *set = broker_set(w);
    char seqk[STREAMLOG_NAME_MAX + 32], epochk[STREAMLOG_NAME_MAX + 32],
        logk[STREAMLOG_NAME_MAX + 32], channel[STREAMLOG_NAME_MAX + 32], ts[24], maxlen[24],
        epoch[STREAMLOG_EPOCH_LEN + 1];
    broker_key(seqk, sizeof(seqk), stream, len, ":seq");
    broker_key(epochk, sizeof(epochk), stream, len, ":epoch");
    broker_key(logk, sizeof(logk), stream, len, ":log");
    broker_key(channel, sizeof(channel), stream, len, "");
    snprintf(ts, sizeof(ts), "%lld", (long long)ts_ms);
    snprintf(maxlen, sizeof(maxlen), "%lld", (long long)w->cfg.history_size);
    streamlog_new_epoch(epoch);
    const char *argv[] = {"EVALSHA", set->sha, "3", seqk, epochk, logk, ts, data, maxlen, epoch,
                          channel};
    size_t lens[] = {7,          strlen(set->sha), 1,          strlen(seqk),
                     strlen(epochk), strlen(logk), strlen(ts), dlen,
                     strlen(maxlen), strlen(epoch), strlen(channel)};
    broker_request(w, b, BROKER_REQ_PUBLISH, (void *)cb, arg, 11, argv, lens);
}

void broker_head(struct worker *w, int b, const char *stream, size_t len, broker_head_cb cb,
                 void *arg)
{
    char seqk[STREAMLOG_NAME_MAX + 32], epochk[STREAMLOG_NAME_MAX + 32];
    broker_key(seqk, sizeof(seqk), stream, len, ":seq");
    broker_key(epochk, sizeof(epochk), stream, len, ":epoch");
    /* The epoch is made here when the stream has none yet, so a
     * subscriber's position means something before the first publish. */
    static const char script[] =
        "local e = redis.call('GET', KEYS[2])\n"
        "if not e then e = ARGV[1]; redis.call('SET', KEYS[2], e) end\n"
        "return {tonumber(redis.call('GET', KEYS[1]) or '0'), e}\n";
    char epoch[STREAMLOG_EPOCH_LEN + 1];
    streamlog_new_epoch(epoch);
    const char *argv[] = {"EVAL", script, "2", seqk, epochk, epoch};
    size_t lens[] = {4, sizeof(script) - 1, 1, strlen(seqk), strlen(epochk), strlen(epoch)};
    broker_request(w, b, BROKER_REQ_HEAD, (void *)cb, arg, 6, argv, lens);
}

void broker_range(struct worker *w, int b, const char *stream, size_t len, uint64_t from,
                  uint64_t to, size_t max, broker_range_cb cb, void *arg)
{
    char logk[STREAMLOG_NAME_MAX + 32], start[32], end[32], count[24];
    broker_key(logk, sizeof(logk), stream, len, ":log");
    snprintf(start, sizeof(start), "%llu-0", (unsigned long long)from);
    if (to)
        snprintf(end, sizeof(end), "%llu-0", (unsigned long long)to);
    else
        snprintf(end, sizeof(end), "+");
    snprintf(count, sizeof(count), "%zu", max);
    const char *argv[] = {"XRANGE", logk, start, end, "COUNT", count};
    size_t lens[] = {6, strlen(logk), strlen(start), strlen(end), 5, strlen(count)};
    broker_request(w, b, BROKER_REQ_RANGE, (void *)cb, arg, 6, argv, lens);
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
    /* "wsgate:{<stream>}" */
    if (clen < 9 || strncmp(channel, "wsgate:{", 8) != 0 || channel[clen - 1] != '}')
        return;
    const char *stream = channel + 8;
    size_t slen = clen - 9;
    if (strcmp(kind, "subscribe") == 0) {
        cluster_on_subscribed(br->w, br->index, stream, slen);
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
    cluster_on_message(br->w, stream, slen, epoch, &e);
}

void broker_subscribe(struct worker *w, int b, const char *stream, size_t len)
{
    struct broker *br = broker_set(w)->b[b];
    if (!br->sub || !br->sub->connected)
        return; /* cluster_on_reconnected() subscribes again */
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
    for (int b = 0; b < set->n; b++) {
        struct broker *br = set->b[b];
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
        return -1;
    size_t n = fread(out, 1, len - 1, f);
    fclose(f);
    out[n] = '\0';
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    return 0;
}

int broker_init(struct worker *w)
{
    if (!broker_enabled(w))
        return 0;
    struct broker_set *set = calloc(1, sizeof(*set));
    if (!set)
        return -ENOMEM;
    w->broker = set;
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)broker_script, sizeof(broker_script) - 1, digest);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        sprintf(set->sha + 2 * i, "%02x", digest[i]);
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
        uv_close((uv_handle_t *)&br->reconnect, broker_on_closed);
    }
    w->broker = NULL;
    free(set);
}
