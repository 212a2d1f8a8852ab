#include "router.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "session.h"
#include "textbuf.h"

/* Append `"id":<value>` when the request had an id: serialised from the
 * parsed value so that any JSON value (object, string, null) comes back
 * equal to what the client sent. */
static void router_append_id(struct textbuf *b, json_t *id)
{
    if (!id)
        return;
    char *text = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        b->failed = 1;
        return;
    }
    textbuf_appends(b, ",\"id\":");
    textbuf_appends(b, text);
    free(text);
}

static void router_send(struct conn *c, struct textbuf *b)
{
    if (!b->failed)
        session_send_text(c, b->data, b->len, c->msg_start_ns);
    textbuf_free(b);
}

static void router_error(struct conn *c, json_t *id, const char *code, const char *message)
{
    struct textbuf b;
    textbuf_init(&b, 160);
    textbuf_appendf(&b, "{\"type\":\"error\",\"code\":\"%s\",\"message\":", code);
    json_t *m = json_string(message);
    char *text = m ? json_dumps(m, JSON_ENCODE_ANY) : NULL;
    textbuf_appends(&b, text ? text : "\"\"");
    free(text);
    json_decref(m);
    router_append_id(&b, id);
    textbuf_append(&b, "}", 1);
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

void router_handle(struct conn *c, const char *msg, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &err);
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
    if (!json_is_string(type)) {
        router_error(c, id, "bad_request", "missing or non-string field \"type\"");
    } else {
        const char *t = json_string_value(type);
        if (strcmp(t, "ping") == 0) {
            router_pong(c, id);
        } else if (strcmp(t, "subscribe") == 0 || strcmp(t, "unsubscribe") == 0 ||
                   strcmp(t, "publish") == 0 || strcmp(t, "auth") == 0) {
            char why[96];
            snprintf(why, sizeof(why), "type \"%s\" is not supported by this gateway yet", t);
            router_error(c, id, "bad_request", why);
        } else {
            router_error(c, id, "bad_request",
                         "unknown type; expected ping, subscribe, unsubscribe, publish or auth");
        }
    }
    json_decref(root);
}
