#include "router.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>

#include "auth.h"
#include "clock.h"
#include "conn.h"
#include "hub.h"
#include "log.h"
#include "ratelimit.h"
#include "request.h"
#include "segment.h"
#include "streamlog.h"
#include "session.h"
#include "textbuf.h"

/* At most one log line per connection per this long about refused
 * requests (the rest are counted in the next line), so a hostile client
 * cannot flood the logs. */
#define ROUTER_REFUSAL_LOG_S 10

/* Append `"id":<value>` when the request had an id: the request's own
 * bytes (router_raw_id), so any JSON value comes back exactly as sent. */
static void router_append_id_json(struct textbuf *b, const char *id_json)
{
    if (!id_json)
        return;
    textbuf_appends(b, ",\"id\":");
    textbuf_appends(b, id_json);
}

static void router_send(struct conn *c, struct textbuf *b)
{
    if (!b->failed)
        session_send_text(c, b->data, b->len, c->msg_start_ns);
    textbuf_free(b);
}

/* Refuse a request: an `error` with the code, a message saying what to do,
 * and the request's id; counted by code. */
void router_reply_error(struct conn *c, const char *id_json, enum segment_refusal code,
                        const char *message)
{
    segment_counter_add(&c->w->slot->counters.messages_refused[code], 1);
    struct textbuf b;
    textbuf_init(&b, 160);
    textbuf_appendf(&b, "{\"type\":\"error\",\"code\":\"%s\",\"message\":",
                    segment_refusal_name(code));
    json_t *m = json_string(message);
    char *text = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
    textbuf_appends(&b, text ? text : "\"\"");
    free(text);
    json_decref(m);
    router_append_id_json(&b, id_json);
    textbuf_append(&b, "}", 1);
    router_send(c, &b);
}


void router_reply_ack(struct conn *c, const char *id_json, const char *stream, size_t len,
                      uint64_t seq)
{
    /* Every publish of a device gets one: written on the stack when it
     * fits (ids are short), a growing buffer otherwise. */
    char text[320];
    int n = snprintf(text, sizeof(text), "{\"type\":\"ack\"%s%s,\"stream\":\"%.*s\",\"seq\":%llu}",
                     id_json ? ",\"id\":" : "", id_json ? id_json : "", (int)len, stream,
                     (unsigned long long)seq);
    if (n > 0 && (size_t)n < sizeof(text)) {
        session_send_text(c, text, (size_t)n, c->msg_start_ns);
        return;
    }
    struct textbuf b;
    textbuf_init(&b, 96);
    textbuf_appends(&b, "{\"type\":\"ack\"");
    router_append_id_json(&b, id_json);
    textbuf_appendf(&b, ",\"stream\":\"%.*s\",\"seq\":%llu}", (int)len, stream,
                    (unsigned long long)seq);
    router_send(c, &b);
}

/* Log a refusal that an operator may need to see (permissions, limits),
 * throttled per connection. Never the stream name (it names a patient),
 * never the token or the payload. */
static void router_log_refusal(struct conn *c, enum segment_refusal code, const char *what)
{
    /* Seconds of the monotonic clock, which starts at boot: 0 only in
     * its first second, never again for 136 years. */
    uint32_t now = (uint32_t)(clock_now_ns() / 1000000000ull);
    if (c->refusal_log_s && now - c->refusal_log_s < ROUTER_REFUSAL_LOG_S) {
        c->refusals_unlogged++;
        return;
    }
    struct log_line l;
    conn_log_begin(&l, c, LOG_WARN, "error");
    log_str(&l, "code", segment_refusal_name(code));
    log_str(&l, "message", what);
    if (c->refusals_unlogged)
        log_int(&l, "refusals_not_logged", c->refusals_unlogged);
    log_end(&l);
    c->refusal_log_s = now ? now : 1;
    c->refusals_unlogged = 0;
}

static void router_pong(struct conn *c, const char *id)
{
    struct textbuf b;
    textbuf_init(&b, 96);
    textbuf_appendf(&b, "{\"type\":\"pong\"");
    router_append_id_json(&b, id);
    textbuf_appendf(&b, ",\"ts\":%lld}", (long long)clock_wall_ms());
    router_send(c, &b);
}

/* The `stream` field, checked against docs/PROTOCOL.md's naming rule. */
static const char *router_stream(struct conn *c, const struct request *req, const char *id,
                                 size_t *len)
{
    const struct request_value *stream = &req->member[REQUEST_STREAM];
    if (stream->kind != REQUEST_STRING) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST, "missing or non-string field \"stream\"");
        return NULL;
    }
    const char *name = stream->text;
    *len = stream->text_len;
    if (!streamlog_name_valid(name, *len)) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST,
                     "invalid stream name: 1-128 characters of A-Z a-z 0-9 _ . : / -");
        return NULL;
    }
    return name;
}

/* The hub's negative errnos as protocol refusals; `log` marks those an
 * operator may need to see (limits reached, broker down). */
static const struct {
    int err;
    enum segment_refusal code;
    int log;
    const char *message;
} router_errno_refusals[] = {
    {-ENOSPC, REFUSED_CAPACITY, 1, "max_streams reached on this replica"},
    {-EMLINK, REFUSED_CAPACITY, 1, "max_subscriptions reached on this connection"},
    {-EEXIST, REFUSED_BAD_REQUEST, 0, "already subscribed to this stream"},
    {-ENOENT, REFUSED_BAD_REQUEST, 0, "not subscribed to this stream"},
    {-E2BIG, REFUSED_TOO_LARGE, 0, "data larger than the stream memory pool (stream_memory)"},
    {-ENOBUFS, REFUSED_UNAVAILABLE, 1,
     "stream memory is full of messages a subscriber has not received yet: not accepted, "
     "retry shortly"},
    {-EAGAIN, REFUSED_UNAVAILABLE, 1,
     "the cluster broker for this stream is unreachable: not accepted, retry"},
};

void router_reply_errno(struct conn *c, const char *id_json, int err)
{
    for (size_t i = 0; i < sizeof(router_errno_refusals) / sizeof(router_errno_refusals[0]); i++) {
        if (router_errno_refusals[i].err != err)
            continue;
        router_reply_error(c, id_json, router_errno_refusals[i].code,
                           router_errno_refusals[i].message);
        if (router_errno_refusals[i].log)
            router_log_refusal(c, router_errno_refusals[i].code, router_errno_refusals[i].message);
        return;
    }
    router_reply_error(c, id_json, REFUSED_INTERNAL, "the gateway could not complete the request");
}


static void router_subscribe(struct conn *c, const struct request *req, const char *id)
{
    struct hub_subscribe_args a;
    memset(&a, 0, sizeof(a));
    a.stream = router_stream(c, req, id, &a.stream_len);
    if (!a.stream)
        return;
    if (c->grant && !auth_stream_allowed(c->grant, AUTH_SUBSCRIBE, a.stream, a.stream_len)) {
        router_reply_error(c, id, REFUSED_FORBIDDEN,
                     "the token does not grant subscribe on this stream (streams.subscribe)");
        router_log_refusal(c, REFUSED_FORBIDDEN, "subscribe outside the token's grant");
        return;
    }
    const struct request_value *since = &req->member[REQUEST_SINCE];
    if (since->kind != REQUEST_ABSENT) {
        if (request_uint63(since, &a.since) < 0) {
            router_reply_error(c, id, REFUSED_BAD_REQUEST, "\"since\" must be a non-negative integer seq");
            return;
        }
        a.has_since = 1;
    }
    const struct request_value *epoch = &req->member[REQUEST_EPOCH];
    if (epoch->kind != REQUEST_ABSENT && epoch->kind != REQUEST_NULL) {
        if (epoch->kind != REQUEST_STRING) {
            router_reply_error(c, id, REFUSED_BAD_REQUEST, "\"epoch\" must be a string");
            return;
        }
        a.epoch = epoch->text;
        a.epoch_len = epoch->text_len;
    }
    a.id_json = id;
    int r = hub_subscribe(c, &a);
    if (r < 0)
        router_reply_errno(c, id, r);
}

static void router_unsubscribe(struct conn *c, const struct request *req, const char *id)
{
    size_t len;
    const char *name = router_stream(c, req, id, &len);
    if (!name)
        return;
    int r = hub_unsubscribe(c, name, len);
    if (r < 0) {
        router_reply_errno(c, id, r);
        return;
    }
    struct textbuf b;
    textbuf_init(&b, 96);
    textbuf_appendf(&b, "{\"type\":\"unsubscribed\",\"stream\":\"%.*s\"", (int)len, name);
    router_append_id_json(&b, id);
    textbuf_append(&b, "}", 1);
    router_send(c, &b);
}

static void router_publish(struct conn *c, const struct request *req, const char *id)
{
    size_t slen;
    const char *name = router_stream(c, req, id, &slen);
    if (!name)
        return;
    if (c->grant && !auth_stream_allowed(c->grant, AUTH_PUBLISH, name, slen)) {
        router_reply_error(c, id, REFUSED_FORBIDDEN,
                     "the token does not grant publish on this stream (streams.publish)");
        router_log_refusal(c, REFUSED_FORBIDDEN, "publish outside the token's grant");
        return;
    }
    const struct request_value *data = &req->member[REQUEST_DATA];
    if (data->kind == REQUEST_ABSENT) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST, "missing field \"data\"");
        return;
    }
    uint64_t seq;
    int r = hub_publish(c, name, slen, data->raw, data->raw_len, id, &seq);
    if (r < 0)
        router_reply_errno(c, id, r);
    else if (r == 0 && id)
        router_reply_ack(c, id, name, slen, seq);
}

/* {"type":"auth","token":T}: replace the connection's token before it
 * expires. The fresh token must pass every check of the handshake, be for
 * the same subject, and still grant every stream the connection is
 * subscribed to (so a refresh never silently ends a subscription); when
 * refused, the connection keeps its current token. */
static void router_auth(struct conn *c, const struct request *req, const char *id)
{
    struct worker *w = c->w;
    const struct request_value *token = &req->member[REQUEST_TOKEN];
    if (token->kind != REQUEST_STRING) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST, "missing or non-string field \"token\"");
        return;
    }
    struct auth_policy policy = {
        .algorithms = w->cfg.jwt_algorithm_mask,
        .key = &w->auth_key,
        .issuer = w->cfg.jwt_issuer,
        .audience = w->cfg.jwt_audience,
    };
    struct auth_grant *g = NULL;
    enum auth_status st = auth_check_token(&policy, token->text, token->text_len,
                                           clock_wall_ms(), &g);
    if (st != AUTH_OK) {
        char why[300];
        snprintf(why, sizeof(why), "%s; the connection keeps its current token",
                 auth_status_text(st));
        router_reply_error(c, id, REFUSED_UNAUTHORIZED, why);
        router_log_refusal(c, REFUSED_UNAUTHORIZED, auth_status_text(st));
        return;
    }
    if (c->grant && !auth_same_subject(c->grant, g)) {
        auth_grant_free(g);
        router_reply_error(c, id, REFUSED_FORBIDDEN,
                     "the fresh token is for a different subject (sub); the connection keeps its "
                     "current token");
        router_log_refusal(c, REFUSED_FORBIDDEN, "fresh token for a different subject");
        return;
    }
    for (struct hub_sub *s = c->subs; s; s = s->conn_next) {
        if (!auth_stream_allowed(g, AUTH_SUBSCRIBE, s->hs->name, s->hs->name_len)) {
            auth_grant_free(g);
            router_reply_error(c, id, REFUSED_FORBIDDEN,
                         "the fresh token does not grant a stream this connection is subscribed "
                         "to; unsubscribe from it first (the connection keeps its current token)");
            router_log_refusal(c, REFUSED_FORBIDDEN, "fresh token narrower than the subscriptions");
            return;
        }
    }
    auth_grant_free(c->grant);
    c->grant = g;
    struct textbuf b;
    textbuf_init(&b, 96);
    textbuf_appendf(&b, "{\"type\":\"authenticated\",\"exp\":%lld", (long long)g->exp);
    router_append_id_json(&b, id);
    textbuf_append(&b, "}", 1);
    router_send(c, &b);
}

/* max_messages_per_second, at the moment a message is handled (its
 * receive time): 1 to handle it; 0 when refused (rate_limited sent with
 * the request's id when it had one; past RATELIMIT_ABUSE_REFUSALS in the
 * window the connection is closed 1008). */
static int router_admit(struct conn *c, const char *id)
{
    const struct config *cfg = &c->w->cfg;
    if (ratelimit_take(&c->live->rate, c->msg_start_ns, (double)cfg->max_messages_per_second,
                       (double)cfg->message_burst))
        return 1;
    char why[200];
    snprintf(why, sizeof(why),
             "more than max_messages_per_second (%lld per second, burst %lld): this message was "
             "not handled; slow down",
             (long long)cfg->max_messages_per_second, (long long)cfg->message_burst);
    router_reply_error(c, id, REFUSED_RATE_LIMITED, why);
    if (ratelimit_refused(&c->live->rate, c->msg_start_ns)) {
        struct log_line l;
        conn_log_begin(&l, c, LOG_WARN, "error");
        log_str(&l, "code", "rate_limited");
        log_int(&l, "refusals", c->live->rate.refusals);
        log_str(&l, "message", "client keeps exceeding max_messages_per_second after being told "
                               "rate_limited; closing it with 1008");
        log_end(&l);
        c->close_detail = "rate limit abuse";
        session_close_policy(c, "rate limit exceeded");
    } else {
        router_log_refusal(c, REFUSED_RATE_LIMITED, "more than max_messages_per_second");
    }
    return 0;
}

int router_parse(const char *msg, size_t len, struct request *req)
{
    return request_parse(req, msg, len);
}

/* The `type` label its reply's duration is observed under. */
static enum segment_request_type router_request_type(const struct request *req)
{
    const struct request_value *type = &req->member[REQUEST_TYPE];
    if (type->kind != REQUEST_STRING)
        return REQUEST_INVALID;
    for (int i = 0; i < REQUEST_INVALID; i++) {
        const char *name = segment_request_type_name((enum segment_request_type)i);
        if (strlen(name) == type->text_len && memcmp(name, type->text, type->text_len) == 0)
            return (enum segment_request_type)i;
    }
    return REQUEST_INVALID;
}

/* The request's `id` as its own bytes, NUL-terminated, so any JSON value
 * comes back exactly as sent (integers beyond 64 bits, the spelling of
 * floats, escapes in strings): in buf when it fits, else allocated
 * (*owned). NULL: no id. */
static const char *router_id(const struct request *req, char *buf, size_t size, char **owned)
{
    const struct request_value *id = &req->member[REQUEST_ID];
    *owned = NULL;
    if (id->kind == REQUEST_ABSENT)
        return NULL;
    char *out = buf;
    if (id->raw_len >= size) {
        out = *owned = malloc(id->raw_len + 1);
        if (!out)
            return NULL;
    }
    memcpy(out, id->raw, id->raw_len);
    out[id->raw_len] = '\0';
    return out;
}

/* Dispatch on the type router_request_type found (c->msg_type). */
static void router_dispatch(struct conn *c, const struct request *req, const char *id)
{
    const struct request_value *type = &req->member[REQUEST_TYPE];
    if (type->kind != REQUEST_STRING || memchr(type->text, '\0', type->text_len)) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST, "missing or non-string field \"type\"");
        return;
    }
    switch (c->msg_type) {
    case REQUEST_PUBLISH:
        router_publish(c, req, id);
        break;
    case REQUEST_PING:
        router_pong(c, id);
        break;
    case REQUEST_SUBSCRIBE:
        router_subscribe(c, req, id);
        break;
    case REQUEST_UNSUBSCRIBE:
        router_unsubscribe(c, req, id);
        break;
    case REQUEST_AUTH:
        if (c->w->cfg.auth_mode == CONFIG_AUTH_JWT)
            router_auth(c, req, id);
        else
            router_reply_error(c, id, REFUSED_BAD_REQUEST,
                               "type \"auth\" is not supported: authentication is not enabled");
        break;
    default:
        router_reply_error(c, id, REFUSED_BAD_REQUEST,
                           "unknown type; expected ping, subscribe, unsubscribe, publish or auth");
    }
}

void router_process(struct conn *c, const char *msg, size_t len, struct request *req, int parsed)
{
    (void)msg;
    (void)len;
    c->msg_type = parsed == 0 ? router_request_type(req) : REQUEST_INVALID;
    char id_buf[64], *id_owned = NULL;
    const char *id = parsed == 0 ? router_id(req, id_buf, sizeof(id_buf), &id_owned) : NULL;
    if (!router_admit(c, id)) {
        /* refused before being read */
    } else if (parsed < 0) {
        char why[200];
        snprintf(why, sizeof(why), "not JSON: %s", req->error);
        router_reply_error(c, NULL, REFUSED_BAD_REQUEST, why);
    } else if (!req->is_object) {
        router_reply_error(c, NULL, REFUSED_BAD_REQUEST, "a message must be a JSON object");
    } else {
        router_dispatch(c, req, id);
    }
    request_free(req);
    free(id_owned);
}

void router_handle(struct conn *c, const char *msg, size_t len)
{
    struct request req;
    int parsed = router_parse(msg, len, &req);
    router_process(c, msg, len, &req, parsed);
}

const struct app_ops router_app = {
    .parse = router_parse,
    .process = router_process,
    .reply_errno = router_reply_errno,
    .reply_ack = router_reply_ack,
};
