#include "request.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

static const char *const request_member_names[REQUEST_MEMBERS] = {
    [REQUEST_TYPE] = "type",   [REQUEST_STREAM] = "stream", [REQUEST_ID] = "id",
    [REQUEST_DATA] = "data",   [REQUEST_SINCE] = "since",   [REQUEST_EPOCH] = "epoch",
    [REQUEST_TOKEN] = "token",
};

/* The parse in progress. yajl reports no source spans, but its count of
 * bytes consumed, read inside a callback, is the offset just past the
 * token being reported; a member's value starts after its key's closing
 * quote, the colon and any whitespace. */
struct request_scan {
    struct request *r;
    yajl_handle yajl;
    const char *msg;
    size_t len;
    size_t depth;           /* 0 outside the top-level value, 1 inside its object */
    int member;             /* the top-level member whose value comes next, or -1 */
    size_t key_end;         /* offset past that member's key */
    int open;               /* member whose container value is being read, or -1 */
    size_t last_end;        /* offset past the last string or name (or the whole value) */
    int failed;             /* errno when a callback stopped the parse */
};

static size_t request_scan_offset(const struct request_scan *s)
{
    return yajl_get_bytes_consumed(s->yajl);
}

/* JSON's whitespace (RFC 8259: no form feed, no vertical tab). */
static int request_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static size_t request_scan_value_start(const struct request_scan *s)
{
    size_t p = s->key_end;
    while (p < s->len && s->msg[p] != ':')
        p++;
    for (p++; p < s->len && request_is_space(s->msg[p]); p++)
        ;
    return p;
}

/* yajl decodes an escaped lone UTF-16 surrogate ("\ud800") to '?' without
 * a word; JSON parsers differ on such strings (RFC 8259 8.2), and a
 * subscriber's that refuses one would lose the stream. So a string that
 * had escapes (yajl's text is then not in the message) is decoded again by
 * jansson, which refuses them. Rare: ECG data carries no escapes. 0: the
 * text is the message's own bytes; 1: it had escapes, all valid; -EINVAL
 * with the reason in r->error. */
static int request_scan_escapes(struct request_scan *s, const unsigned char *text, size_t len)
{
    uintptr_t t = (uintptr_t)text, m = (uintptr_t)s->msg;
    if (t >= m && t + len <= m + s->len)
        return 0;
    size_t start = s->last_end, end = request_scan_offset(s);
    while (start < end && s->msg[start] != '"')
        start++; /* past the tokens since the last string: none holds a quote */
    json_error_t err;
    json_t *v = json_loadb(s->msg + start, end - start, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (v) {
        json_decref(v);
        return 1;
    }
    snprintf(s->r->error, sizeof(s->r->error), "%.100s at byte %zu", err.text, end);
    s->failed = EINVAL;
    return -EINVAL;
}

/* A top-level member's value begins (containers) or is complete (scalars).
 * Most tokens are inside `data` (sample after sample): those return at the
 * first test. */
static void request_scan_value(struct request_scan *s, enum request_kind kind)
{
    if (s->depth != 1 || s->member < 0)
        return;
    struct request_value *v = &s->r->member[s->member];
    size_t start = request_scan_value_start(s);
    size_t end = request_scan_offset(s);
    v->kind = kind;
    v->raw = s->msg + start;
    v->raw_len = end > start ? end - start : 0;
    if (kind == REQUEST_OBJECT || kind == REQUEST_ARRAY)
        s->open = s->member;
    s->member = -1;
}

/* Scalars need no last_end: request_scan_escapes looks for the opening
 * quote of a string from the end of the token before it, and no token but
 * a string contains a quote. */
static int request_on_null(void *ctx)
{
    request_scan_value(ctx, REQUEST_NULL);
    return 1;
}

static int request_on_bool(void *ctx, int value)
{
    (void)value;
    request_scan_value(ctx, REQUEST_BOOL);
    return 1;
}

static int request_on_number(void *ctx, const char *text, size_t len)
{
    (void)text;
    (void)len;
    request_scan_value(ctx, REQUEST_NUMBER);
    return 1;
}

/* yajl hands a string's decoded text: a pointer into the message when it
 * had no escapes, its own scratch buffer (valid only now) otherwise. */
static int request_on_string(void *ctx, const unsigned char *text, size_t len)
{
    struct request_scan *s = ctx;
    int escaped = request_scan_escapes(s, text, len);
    if (escaped < 0)
        return 0;
    s->last_end = request_scan_offset(s);
    if (s->depth != 1 || s->member < 0)
        return 1;
    int m = s->member;
    request_scan_value(s, REQUEST_STRING);
    struct request_value *v = &s->r->member[m];
    const char *t = (const char *)text;
    if (!escaped) {
        v->text = t;
    } else {
        char *copy = malloc(len ? len : 1);
        if (!copy) {
            s->failed = ENOMEM;
            return 0;
        }
        memcpy(copy, t, len);
        s->r->decoded[m] = copy;
        v->text = copy;
    }
    v->text_len = len;
    return 1;
}

static int request_on_key(void *ctx, const unsigned char *key, size_t len)
{
    struct request_scan *s = ctx;
    if (request_scan_escapes(s, key, len) < 0)
        return 0;
    s->last_end = request_scan_offset(s);
    if (s->depth != 1)
        return 1;
    s->member = -1;
    for (int m = 0; m < REQUEST_MEMBERS; m++) {
        if (strlen(request_member_names[m]) != len || memcmp(request_member_names[m], key, len))
            continue;
        if (s->r->member[m].kind != REQUEST_ABSENT) {
            snprintf(s->r->error, sizeof(s->r->error), "member \"%s\" appears twice at byte %zu",
                     request_member_names[m], request_scan_offset(s));
            s->failed = EINVAL;
            return 0;
        }
        s->member = m;
        s->key_end = request_scan_offset(s);
        break;
    }
    return 1;
}

static int request_on_open(void *ctx, enum request_kind kind)
{
    struct request_scan *s = ctx;
    if (s->depth == 0 && kind == REQUEST_OBJECT)
        s->r->is_object = 1;
    request_scan_value(s, kind);
    s->depth++;
    return 1;
}

static int request_on_close(void *ctx)
{
    struct request_scan *s = ctx;
    s->depth--;
    if (s->depth == 0)
        s->last_end = request_scan_offset(s); /* the end of the whole value */
    if (s->depth == 1 && s->open >= 0) {
        struct request_value *v = &s->r->member[s->open];
        v->raw_len = (size_t)(s->msg + request_scan_offset(s) - v->raw);
        s->open = -1;
    }
    return 1;
}

static int request_on_start_map(void *ctx)
{
    return request_on_open(ctx, REQUEST_OBJECT);
}

static int request_on_start_array(void *ctx)
{
    return request_on_open(ctx, REQUEST_ARRAY);
}

static const yajl_callbacks request_callbacks = {
    .yajl_null = request_on_null,
    .yajl_boolean = request_on_bool,
    .yajl_number = request_on_number, /* raw text: never converted, any size */
    .yajl_string = request_on_string,
    .yajl_start_map = request_on_start_map,
    .yajl_map_key = request_on_key,
    .yajl_end_map = request_on_close,
    .yajl_start_array = request_on_start_array,
    .yajl_end_array = request_on_close,
};

/* yajl's message for a failed parse, on one line, with the byte it
 * stopped at. */
static void request_scan_error(struct request_scan *s)
{
    unsigned char *text = yajl_get_error(s->yajl, 0, (const unsigned char *)s->msg, s->len);
    size_t n = text ? strcspn((const char *)text, "\n") : 0;
    snprintf(s->r->error, sizeof(s->r->error), "%.*s at byte %zu", (int)n,
             text ? (const char *)text : "invalid JSON", request_scan_offset(s));
    if (text)
        yajl_free_error(s->yajl, text);
}

/* yajl also takes form feed and vertical tab for whitespace; RFC 8259 does
 * not, nor do subscribers' parsers, which would then refuse a forwarded
 * `data`. Neither byte is valid anywhere else in JSON text (raw control
 * characters are not allowed in strings), so finding one is enough. */
static const char *request_bad_space(const char *msg, size_t len)
{
    if (len == 0)
        return NULL; /* wslay hands an empty message as NULL */
    const char *ff = memchr(msg, '\f', len);
    const char *vt = memchr(msg, '\v', ff ? (size_t)(ff - msg) : len);
    return vt ? vt : ff;
}

int request_parse(struct request *r, const char *msg, size_t len)
{
    memset(r, 0, sizeof(*r));
    const char *bad = request_bad_space(msg, len);
    if (bad) {
        snprintf(r->error, sizeof(r->error),
                 "lexical error: form feed or vertical tab outside a string at byte %zu",
                 (size_t)(bad - msg) + 1);
        return -EINVAL;
    }
    struct request_scan s = {.r = r, .msg = msg, .len = len, .member = -1, .open = -1};
    s.yajl = yajl_alloc(&request_callbacks, NULL, &s);
    if (!s.yajl) {
        snprintf(r->error, sizeof(r->error), "out of memory");
        return -ENOMEM;
    }
    yajl_status st = yajl_parse(s.yajl, (const unsigned char *)msg, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(s.yajl);
    int rc = 0;
    if (st != yajl_status_ok) {
        if (s.failed == ENOMEM) {
            snprintf(r->error, sizeof(r->error), "out of memory");
            rc = -ENOMEM;
        } else {
            if (!s.failed)
                request_scan_error(&s);
            rc = -EINVAL;
        }
    } else if (r->is_object) {
        /* yajl ends a parse once the value is complete without lexing a
         * trailing token it has only the start of ('{} "x'): whatever
         * follows the object must be whitespace. */
        size_t p = s.last_end;
        while (p < len && request_is_space(msg[p]))
            p++;
        if (p < len) {
            snprintf(r->error, sizeof(r->error), "parse error: trailing garbage at byte %zu",
                     p + 1);
            rc = -EINVAL;
        }
    }
    yajl_free(s.yajl);
    return rc;
}

void request_free(struct request *r)
{
    for (int m = 0; m < REQUEST_MEMBERS; m++) {
        free(r->decoded[m]);
        r->decoded[m] = NULL;
    }
}

int request_uint63(const struct request_value *v, uint64_t *out)
{
    if (v->kind != REQUEST_NUMBER || v->raw_len == 0)
        return -EINVAL;
    const char *p = v->raw, *end = v->raw + v->raw_len;
    int negative = *p == '-';
    if (negative)
        p++;
    uint64_t n = 0;
    if (p == end)
        return -EINVAL;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL; /* a fraction or an exponent: not an integer */
        n = n * 10 + (uint64_t)(*p - '0');
        if (n > (uint64_t)INT64_MAX)
            return -EINVAL;
    }
    if (negative && n != 0)
        return -EINVAL;
    *out = n;
    return 0;
}
