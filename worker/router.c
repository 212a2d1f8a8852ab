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
#include "segment.h"
#include "streamlog.h"
#include "session.h"
#include "textbuf.h"

/* At most one log line per connection per this long about refused
 * requests (the rest are counted in the next line), so a hostile client
 * cannot flood the logs. */
#define ROUTER_REFUSAL_LOG_NS (10ull * 1000000000ull)

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
    uint64_t now = clock_now_ns();
    if (c->refusal_log_ns && now - c->refusal_log_ns < ROUTER_REFUSAL_LOG_NS) {
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
    c->refusal_log_ns = now;
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

/* Skip one JSON value starting at p (already validated by jansson, so
 * this only has to find where it ends); returns the end. */
static const char *router_skip_value(const char *p, const char *end)
{
    if (*p == '"') {
        for (p++; p < end; p++) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                return p + 1;
        }
        return end;
    }
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                p = router_skip_value(p, end) - 1;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
        }
        return end;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
           *p != '\n' && *p != '\r')
        p++;
    return p;
}

static const char *router_skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The raw bytes of the index-th member value of the top-level object, so
 * a publisher's `data` reaches subscribers byte for byte (jansson keeps
 * members in document order but cannot give their source spans). */
static int router_raw_member(const char *msg, size_t len, size_t index, const char **out,
                             size_t *out_len)
{
    const char *p = msg, *end = msg + len;
    p = router_skip_space(p, end);
    if (p == end || *p != '{')
        return -1;
    p++;
    for (size_t i = 0;; i++) {
        p = router_skip_space(p, end);
        if (p == end || *p != '"')
            return -1;
        p = router_skip_value(p, end); /* the key */
        p = router_skip_space(p, end);
        if (p == end || *p != ':')
            return -1;
        p = router_skip_space(p + 1, end);
        const char *v = p;
        p = router_skip_value(p, end);
        if (i == index) {
            *out = v;
            *out_len = (size_t)(p - v);
            return 0;
        }
        p = router_skip_space(p, end);
        if (p == end || *p != ',')
            return -1;
        p++;
    }
}


/* The `stream` field, checked against docs/PROTOCOL.md's naming rule. */
static const char *router_stream(struct conn *c, json_t *root, const char *id, size_t *len)
{
    json_t *stream = json_object_get(root, "stream");
    if (!json_is_string(stream)) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST, "missing or non-string field \"stream\"");
        return NULL;
    }
    const char *name = json_string_value(stream);
    *len = json_string_length(stream);
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


static void router_subscribe(struct conn *c, json_t *root, const char *id)
{
    struct hub_subscribe_args a;
    memset(&a, 0, sizeof(a));
    a.stream = router_stream(c, root, id, &a.stream_len);
    if (!a.stream)
        return;
    if (c->grant && !auth_stream_allowed(c->grant, AUTH_SUBSCRIBE, a.stream, a.stream_len)) {
        router_reply_error(c, id, REFUSED_FORBIDDEN,
                     "the token does not grant subscribe on this stream (streams.subscribe)");
        router_log_refusal(c, REFUSED_FORBIDDEN, "subscribe outside the token's grant");
        return;
    }
    json_t *since = json_object_get(root, "since");
    if (since) {
        if (!json_is_integer(since) || json_integer_value(since) < 0) {
            router_reply_error(c, id, REFUSED_BAD_REQUEST, "\"since\" must be a non-negative integer seq");
            return;
        }
        a.has_since = 1;
        a.since = (uint64_t)json_integer_value(since);
    }
    json_t *epoch = json_object_get(root, "epoch");
    if (epoch && !json_is_null(epoch)) {
        if (!json_is_string(epoch)) {
            router_reply_error(c, id, REFUSED_BAD_REQUEST, "\"epoch\" must be a string");
            return;
        }
        a.epoch = json_string_value(epoch);
        a.epoch_len = json_string_length(epoch);
    }
    a.id_json = id;
    int r = hub_subscribe(c, &a);
    if (r < 0)
        router_reply_errno(c, id, r);
}

static void router_unsubscribe(struct conn *c, json_t *root, const char *id)
{
    size_t len;
    const char *name = router_stream(c, root, id, &len);
    if (!name)
        return;
    int r = hub_unsubscribe(c, name, len);
    if (r < 0) {
        router_reply_errno(c, id, r);
        return;
    }
    struct textbuf b;
    textbuf_init(&b, 96);
    textbuf_appendf(&b, "{\"type\":\"unsubscribed\",\"stream\":\"%s\"", name);
    router_append_id_json(&b, id);
    textbuf_append(&b, "}", 1);
    router_send(c, &b);
}

static void router_publish(struct conn *c, const char *msg, size_t len, json_t *root, const char *id)
{
    size_t slen;
    const char *name = router_stream(c, root, id, &slen);
    if (!name)
        return;
    if (c->grant && !auth_stream_allowed(c->grant, AUTH_PUBLISH, name, slen)) {
        router_reply_error(c, id, REFUSED_FORBIDDEN,
                     "the token does not grant publish on this stream (streams.publish)");
        router_log_refusal(c, REFUSED_FORBIDDEN, "publish outside the token's grant");
        return;
    }
    size_t index = 0;
    const char *key;
    json_t *value;
    int found = 0;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "data") == 0) {
            found = 1;
            break;
        }
        index++;
    }
    const char *data;
    size_t dlen;
    if (!found || router_raw_member(msg, len, index, &data, &dlen) < 0) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST, "missing field \"data\"");
        return;
    }
    uint64_t seq;
    int r = hub_publish(c, name, slen, data, dlen, id, &seq);
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
static void router_auth(struct conn *c, json_t *root, const char *id)
{
    struct worker *w = c->w;
    json_t *token = json_object_get(root, "token");
    if (!json_is_string(token)) {
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
    enum auth_status st = auth_check_token(&policy, json_string_value(token),
                                           json_string_length(token), clock_wall_ms(), &g);
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

json_t *router_parse(const char *msg, size_t len, json_error_t *err)
{
    /* NUL escapes are valid JSON (a publisher's data may hold "\u0000");
     * integers beyond 64 bits are too, so a second pass reads them as
     * reals rather than refusing the message (data is never re-encoded). */
    json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, err);
    if (!root && strstr(err->text, "too big"))
        root = json_loadb(msg, len,
                          JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, err);
    return root;
}

/* The request's `id` as its own bytes, NUL-terminated (NULL: no id, or
 * not an object). Echoing the source text rather than re-encoding the
 * parsed value keeps what jansson would change: integers beyond 64 bits
 * (read as reals), the spelling of floats, escapes in strings. */
static char *router_raw_id(const char *msg, size_t len, json_t *root)
{
    if (!json_is_object(root) || !json_object_get(root, "id"))
        return NULL;
    size_t index = 0;
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "id") == 0)
            break;
        index++;
    }
    const char *raw;
    size_t raw_len;
    if (router_raw_member(msg, len, index, &raw, &raw_len) < 0)
        return NULL;
    char *out = malloc(raw_len + 1);
    if (!out)
        return NULL;
    memcpy(out, raw, raw_len);
    out[raw_len] = '\0';
    return out;
}

/* The `type` label its reply's duration is observed under. */
static enum segment_request_type router_request_type(json_t *root)
{
    json_t *type = json_is_object(root) ? json_object_get(root, "type") : NULL;
    const char *t = json_is_string(type) ? json_string_value(type) : "";
    for (int i = 0; i < REQUEST_INVALID; i++) {
        if (strcmp(t, segment_request_type_name((enum segment_request_type)i)) == 0)
            return (enum segment_request_type)i;
    }
    return REQUEST_INVALID;
}

void router_process(struct conn *c, const char *msg, size_t len, json_t *root,
                    const json_error_t *err)
{
    c->msg_type = router_request_type(root);
    char *id = router_raw_id(msg, len, root);
    if (!router_admit(c, id)) {
        free(id);
        json_decref(root);
        return;
    }
    if (!root) {
        char why[200];
        snprintf(why, sizeof(why), "not JSON: %s at line %d column %d", err->text, err->line,
                 err->column);
        router_reply_error(c, NULL, REFUSED_BAD_REQUEST, why);
        return;
    }
    if (!json_is_object(root)) {
        router_reply_error(c, NULL, REFUSED_BAD_REQUEST, "a message must be a JSON object");
        json_decref(root);
        return;
    }
    json_t *type = json_object_get(root, "type");
    if (!json_is_string(type) || strlen(json_string_value(type)) != json_string_length(type)) {
        router_reply_error(c, id, REFUSED_BAD_REQUEST, "missing or non-string field \"type\"");
    } else {
        const char *t = json_string_value(type);
        if (strcmp(t, "ping") == 0) {
            router_pong(c, id);
        } else if (strcmp(t, "publish") == 0) {
            router_publish(c, msg, len, root, id);
        } else if (strcmp(t, "subscribe") == 0) {
            router_subscribe(c, root, id);
        } else if (strcmp(t, "unsubscribe") == 0) {
            router_unsubscribe(c, root, id);
        } else if (strcmp(t, "auth") == 0 && c->w->cfg.auth_mode == CONFIG_AUTH_JWT) {
            router_auth(c, root, id);
        } else if (strcmp(t, "auth") == 0) {
            router_reply_error(c, id, REFUSED_BAD_REQUEST,
                         "type \"auth\" is not supported: authentication is not enabled");
        } else {
            router_reply_error(c, id, REFUSED_BAD_REQUEST,
                         "unknown type; expected ping, subscribe, unsubscribe, publish or auth");
        }
    }
    json_decref(root);
    free(id);
}

void router_handle(struct conn *c, const char *msg, size_t len)
{
    json_error_t err;
    json_t *root = router_parse(msg, len, &err);
    router_process(c, msg, len, root, &err);
}

const struct app_ops router_app = {
    .parse = router_parse,
    .process = router_process,
    .reply_errno = router_reply_errno,
    .reply_ack = router_reply_ack,
};
