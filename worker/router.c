#include "router.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>

#include "clock.h"
#include "hub.h"
#include "streamlog.h"
#include "session.h"
#include "textbuf.h"

static char *router_id_json(json_t *id)
{
    return id ? json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

/* Append `"id":<value>` when the request had an id: serialised from the
 * parsed value so that any JSON value (object, string, null) comes back
 * equal to what the client sent. */
static void router_append_id_json(struct textbuf *b, const char *id_json)
{
    if (!id_json)
        return;
    textbuf_appends(b, ",\"id\":");
    textbuf_appends(b, id_json);
}

static void router_append_id(struct textbuf *b, json_t *id)
{
    if (!id)
        return;
    char *text = router_id_json(id);
    if (!text) {
        b->failed = 1;
        return;
    }
    router_append_id_json(b, text);
    free(text);
}

static void router_send(struct conn *c, struct textbuf *b)
{
    if (!b->failed)
        session_send_text(c, b->data, b->len, c->msg_start_ns);
    textbuf_free(b);
}

void router_reply_error(struct conn *c, const char *id_json, const char *code, const char *message)
{
    struct textbuf b;
    textbuf_init(&b, 160);
    textbuf_appendf(&b, "{\"type\":\"error\",\"code\":\"%s\",\"message\":", code);
    json_t *m = json_string(message);
    char *text = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
    textbuf_appends(&b, text ? text : "\"\"");
    free(text);
    json_decref(m);
    router_append_id_json(&b, id_json);
    textbuf_append(&b, "}", 1);
    router_send(c, &b);
}

static void router_error(struct conn *c, json_t *id, const char *code, const char *message)
{
    char *id_json = router_id_json(id);
    router_reply_error(c, id_json, code, message);
    free(id_json);
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

static void router_pong(struct conn *c, json_t *id)
{
    struct textbuf b;
    textbuf_init(&b, 96);
    textbuf_appendf(&b, "{\"type\":\"pong\"");
    router_append_id(&b, id);
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

/* The `stream` field, checked against PROTOCOL.md's naming rule. */
static const char *router_stream(struct conn *c, json_t *root, json_t *id, size_t *len)
{
    json_t *stream = json_object_get(root, "stream");
    if (!json_is_string(stream)) {
        router_error(c, id, "bad_request", "missing or non-string field \"stream\"");
        return NULL;
    }
    const char *name = json_string_value(stream);
    *len = json_string_length(stream);
    if (!streamlog_name_valid(name, *len)) {
        router_error(c, id, "bad_request",
                     "invalid stream name: 1-128 characters of A-Z a-z 0-9 _ . : / -");
        return NULL;
    }
    return name;
}

void router_reply_errno(struct conn *c, const char *id_json, int err)
{
    switch (err) {
    case -ENOSPC:
        router_reply_error(c, id_json, "capacity", "max_streams reached on this replica");
        break;
    case -EMLINK:
        router_reply_error(c, id_json, "capacity", "max_subscriptions reached on this connection");
        break;
    case -EEXIST:
        router_reply_error(c, id_json, "bad_request", "already subscribed to this stream");
        break;
    case -ENOENT:
        router_reply_error(c, id_json, "bad_request", "not subscribed to this stream");
        break;
    case -E2BIG:
        router_reply_error(c, id_json, "too_large",
                           "data larger than a stream's history memory (stream_memory / max_streams)");
        break;
    case -EAGAIN:
        router_reply_error(c, id_json, "unavailable",
                           "the cluster broker for this stream is unreachable: not accepted, retry");
        break;
    default:
        router_reply_error(c, id_json, "internal", "the gateway could not complete the request");
        break;
    }
}

static void router_stream_error(struct conn *c, json_t *id, int err)
{
    char *id_json = router_id_json(id);
    router_reply_errno(c, id_json, err);
    free(id_json);
}

static void router_subscribe(struct conn *c, json_t *root, json_t *id)
{
    struct hub_subscribe_args a;
    memset(&a, 0, sizeof(a));
    a.stream = router_stream(c, root, id, &a.stream_len);
    if (!a.stream)
        return;
    json_t *since = json_object_get(root, "since");
    if (since) {
        if (!json_is_integer(since) || json_integer_value(since) < 0) {
            router_error(c, id, "bad_request", "\"since\" must be a non-negative integer seq");
            return;
        }
        a.has_since = 1;
        a.since = (uint64_t)json_integer_value(since);
    }
    json_t *epoch = json_object_get(root, "epoch");
    if (epoch && !json_is_null(epoch)) {
        if (!json_is_string(epoch)) {
            router_error(c, id, "bad_request", "\"epoch\" must be a string");
            return;
        }
        a.epoch = json_string_value(epoch);
        a.epoch_len = json_string_length(epoch);
    }
    char *id_json = router_id_json(id);
    a.id_json = id_json;
    int r = hub_subscribe(c, &a);
    free(id_json);
    if (r < 0)
        router_stream_error(c, id, r);
}

static void router_unsubscribe(struct conn *c, json_t *root, json_t *id)
{
    size_t len;
    const char *name = router_stream(c, root, id, &len);
    if (!name)
        return;
    int r = hub_unsubscribe(c, name, len);
    if (r < 0) {
        router_stream_error(c, id, r);
        return;
    }
    struct textbuf b;
    textbuf_init(&b, 96);
    textbuf_appendf(&b, "{\"type\":\"unsubscribed\",\"stream\":\"%s\"", name);
    router_append_id(&b, id);
    textbuf_append(&b, "}", 1);
    router_send(c, &b);
}

static void router_publish(struct conn *c, const char *msg, size_t len, json_t *root, json_t *id)
{
    size_t slen;
    const char *name = router_stream(c, root, id, &slen);
    if (!name)
        return;
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
        router_error(c, id, "bad_request", "missing field \"data\"");
        return;
    }
    char *id_json = router_id_json(id);
    uint64_t seq;
    int r = hub_publish(c, name, slen, data, dlen, id_json, &seq);
    if (r < 0)
        router_reply_errno(c, id_json, r);
    else if (r == 0 && id_json)
        router_reply_ack(c, id_json, name, slen, seq);
    free(id_json);
}

void router_handle(struct conn *c, const char *msg, size_t len)
{
    json_error_t err;
    /* NUL escapes are valid JSON (a publisher's data may hold "\u0000");
     * integers beyond 64 bits are too, so a second pass reads them as
     * reals rather than refusing the message (data is never re-encoded). */
    json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!root && strstr(err.text, "too big"))
        root = json_loadb(msg, len,
                          JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
    if (!root) {
        char why[200];
        snprintf(why, sizeof(why), "not JSON: %s at line %d column %d", err.text, err.line,
                 err.column);
        router_error(c, NULL, "bad_request", why);
        return;
    }
    if (!json_is_object(root)) {
        router_error(c, NULL, "bad_request", "a message must be a JSON object");
        json_decref(root);
        return;
    }
    json_t *id = json_object_get(root, "id");
    json_t *type = json_object_get(root, "type");
    if (!json_is_string(type) || strlen(json_string_value(type)) != json_string_length(type)) {
        router_error(c, id, "bad_request", "missing or non-string field \"type\"");
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
        } else if (strcmp(t, "auth") == 0) {
            router_error(c, id, "bad_request",
                         "type \"auth\" is not supported: authentication is not enabled");
        } else {
            router_error(c, id, "bad_request",
                         "unknown type; expected ping, subscribe, unsubscribe, publish or auth");
        }
    }
    json_decref(root);
}
