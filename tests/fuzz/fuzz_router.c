/*
 * fuzz_router — libFuzzer target for the JSON application protocol
 * (worker/router.c): the input is one text message from a client.
 *
 * A fake worker and a WebSocket connection on a socketpair (fuzz_harness)
 * take router_handle's replies through the real send path (sendq, the
 * hub's fan-out, conn_flush_dirty); the harness reads them back from the
 * other end. The connection is subscribed to stream FUZZ_ROUTER_STREAM
 * first, so a publish to it comes back as a `message`.
 *
 * Oracles: the wire carries only well-formed text frames holding JSON
 * objects; a request gets at least one reply (docs/PROTOCOL.md: a refused
 * request always gets an `error`; only a publish without id may get
 * none); the first reply to a request carries an `id` equal to the
 * request's (stream `message`s and `gap`s, which docs/PROTOCOL.md lets come
 * before an ack, are not replies), and is spelled with bytes of the
 * request (the id is echoed verbatim, not re-encoded); a `message`
 * carries the publisher's `data` unchanged.
 * jansson is the independent oracle of what is valid JSON. Where it cannot
 * judge what the gateway accepts (docs/PROTOCOL.md 4: numbers beyond a
 * double, names repeated inside `data`), only the frame checks apply.
 * Everything is freed per input.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "fuzz_harness.h"
#include "router.h"

#define FUZZ_ROUTER_STREAM "s"

struct fuzz_router_replies {
    size_t count;   /* replies to the request (not stream traffic) */
    size_t messages;
    json_t *first;  /* the first reply */
    char *first_text; /* ... as sent, NUL-terminated */
    json_t *data;   /* the request's `data`, for checking `message` */
    int checkable;  /* the oracle understood the request */
};

static void fuzz_router_on_text(void *arg, const char *json, size_t len)
{
    struct fuzz_router_replies *r = arg;
    json_t *doc = fuzz_json_parse(json, len, 0);
    char type[32];
    if (fuzz_text_type(json, len, type, sizeof(type)) < 0)
        abort(); /* the harness checked it already */
    if (!doc && r->checkable) {
        fprintf(stderr, "fuzz_router: a reply jansson cannot read to a request it could\n");
        abort();
    }
    if (strcmp(type, "gap") == 0) {
        json_decref(doc);
        return;
    }
    if (strcmp(type, "message") == 0) {
        /* docs/PROTOCOL.md: `data` is the publisher's JSON, byte for byte. */
        if (r->checkable && (!r->data || !json_equal(r->data, json_object_get(doc, "data")) ||
                             strcmp(json_string_value(json_object_get(doc, "stream")),
                                    FUZZ_ROUTER_STREAM) != 0)) {
            fprintf(stderr, "fuzz_router: a message does not carry the published data\n");
            abort();
        }
        /* Stream traffic, not the reply: it may come before the ack. */
        r->messages++;
        json_decref(doc);
        return;
    }
    if (r->count++ == 0 && doc) {
        r->first = doc;
        r->first_text = strndup(json, len);
    } else
        json_decref(doc);
}

static void fuzz_router_subscribe(struct fuzz_worker *fw, struct conn *c, int peer)
{
    static const char sub[] = "{\"type\":\"subscribe\",\"stream\":\"" FUZZ_ROUTER_STREAM "\"}";
    router_handle(c, sub, sizeof(sub) - 1);
    fuzz_pump(fw, peer);
    static const char want[] = "{\"type\":\"subscribed\"";
    if (fw->out.len < 2 + sizeof(want) - 1 || memcmp(fw->out.data + 2, want, sizeof(want) - 1)) {
        fprintf(stderr, "fuzz_router: the harness's subscribe failed\n");
        abort();
    }
    fw->out.len = 0;
}

/* What the reply to this request must look like: *id is the request's id
 * (NULL when it had none); returns 0 when a reply may legitimately be
 * absent (a publish without id is acknowledged with nothing). *checkable
 * is 0 when jansson cannot judge the request (then nothing is expected). */
static int fuzz_router_expect(const uint8_t *data, size_t size, json_t **root, json_t **id,
                              int *checkable)
{
    *id = NULL;
    if (memchr(data, '\0', size)) {
        /* Never JSON, but jansson reads a raw NUL as the end of some
         * values: not an oracle here. The gateway must still answer. */
        *root = NULL;
        *checkable = 0;
        return 1;
    }
    *root = fuzz_json_parse((const char *)data, size, 1);
    *checkable = 1;
    if (!*root) {
        json_error_t err;
        json_t *lax = json_loadb((const char *)data, size, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL,
                                 &err);
        /* Valid JSON jansson cannot hold (numbers beyond a double, nesting
         * past its depth limit, "\u0000" in a name), or bytes that are
         * not UTF-8, which the session refuses (1007) before the router
         * ever sees them. */
        static const char *const unjudged[] = {"overflow", "depth", "UTF-8", "decode byte",
                                               "NUL byte in object key"};
        int judged = 1;
        for (size_t i = 0; i < sizeof(unjudged) / sizeof(unjudged[0]); i++)
            judged &= strstr(err.text, unjudged[i]) == NULL;
        if (lax || !judged) {
            json_decref(lax);
            *checkable = 0;
            return 0;
        }
        return 1;
    }
    if (!json_is_object(*root))
        return 1;
    *id = json_object_get(*root, "id");
    const char *type = json_string_value(json_object_get(*root, "type"));
    if (type && strcmp(type, "publish") == 0 && !*id)
        return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int initialised;
    if (!initialised) {
        fuzz_harness_init();
        initialised = 1;
    }
    struct fuzz_worker *fw = fuzz_worker_new();
    int peer = -1;
    struct conn *c = fuzz_conn_socketpair(fw, CONN_WS, &peer);
    fuzz_router_subscribe(fw, c, peer);

    json_t *root, *id;
    int checkable;
    int must_reply = fuzz_router_expect(data, size, &root, &id, &checkable);

    router_handle(c, (const char *)data, size);
    fuzz_pump(fw, peer);

    struct fuzz_router_replies replies = {.data = root ? json_object_get(root, "data") : NULL,
                                          .checkable = checkable};
    fuzz_check_server_frames(fw->out.data, fw->out.len, fuzz_router_on_text, &replies);
    if (replies.messages > 1) {
        fprintf(stderr, "fuzz_router: one publish was delivered %zu times\n", replies.messages);
        abort();
    }
    if (must_reply && replies.count == 0) {
        fprintf(stderr, "fuzz_router: a request got no reply\n");
        abort();
    }
    if (replies.first && checkable) {
        /* An integer beyond 64 bits anywhere makes fuzz_json_parse read
         * every integer as a real: then only the byte check below applies. */
        json_error_t exact_err;
        json_t *exact = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &exact_err);
        json_t *got = json_object_get(replies.first, "id");
        if ((id == NULL) != (got == NULL) || (id && exact && !json_equal(id, got))) {
            fprintf(stderr, "fuzz_router: the reply's id differs from the request's\n");
            abort();
        }
        json_decref(exact);
    }
    if (id && replies.first_text) {
        /* The reply's id value as written: it follows the first "id": (the
         * fields the gateway writes before it never contain that text). */
        const char *at = strstr(replies.first_text, "\"id\":");
        json_error_t err;
        json_t *v = at ? json_loads(at + 5, JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK |
                                                JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err)
                       : NULL;
        if (!v || !memmem(data, size, at + 5, (size_t)err.position)) {
            fprintf(stderr, "fuzz_router: the reply's id is not the request's bytes\n");
            abort();
        }
        json_decref(v);
    }
    free(replies.first_text);
    json_decref(replies.first);
    json_decref(root);

    fuzz_worker_free(fw);
    close(peer);
    return 0;
}
