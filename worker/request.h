/*
 * request — a client's JSON request, validated whole and read only at its
 * top level (docs/PROTOCOL.md "Messages").
 *
 * yajl's streaming parser checks every byte of the message (strict JSON,
 * UTF-8, no trailing text) without building a tree: a publish's `data` is
 * validated and then forwarded as the publisher's own bytes, so decoding
 * its hundreds of sample integers into values nobody reads would be waste.
 * Of the top-level object only the members the protocol names are kept,
 * each as its own bytes and, for strings, its decoded text. A repeated
 * protocol member makes the request invalid (which one would count is
 * ambiguous); nested objects are forwarded as sent, repeats included.
 *
 * Touches nothing but its arguments: large messages are parsed on libuv's
 * thread pool.
 */
#ifndef WSGATE_REQUEST_H
#define WSGATE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

enum request_kind {
    REQUEST_ABSENT = 0,
    REQUEST_STRING,
    REQUEST_NUMBER,
    REQUEST_BOOL,
    REQUEST_NULL,
    REQUEST_OBJECT,
    REQUEST_ARRAY,
};

/* The top-level members the protocol reads. */
enum request_member {
    REQUEST_TYPE,
    REQUEST_STREAM,
    REQUEST_ID,
    REQUEST_DATA,
    REQUEST_SINCE,
    REQUEST_EPOCH,
    REQUEST_TOKEN,
    REQUEST_MEMBERS
};

struct request_value {
    enum request_kind kind;
    const char *raw;  /* the value's bytes in the message */
    size_t raw_len;
    const char *text; /* REQUEST_STRING: decoded (may hold NUL), not NUL-terminated */
    size_t text_len;
};

struct request {
    int is_object; /* the message is one JSON object */
    struct request_value member[REQUEST_MEMBERS];
    char *decoded[REQUEST_MEMBERS]; /* storage of texts that had escapes */
    char error[160];                /* why request_parse failed */
};

/* Validate msg and fill r (which request_free must release whatever the
 * result). 0, or -EINVAL (not JSON, or a repeated protocol member: r->error
 * says what and at which byte) or -ENOMEM. */
int request_parse(struct request *r, const char *msg, size_t len);
void request_free(struct request *r);

/* A member's value as a non-negative integer that fits 63 bits: 0, or
 * -EINVAL (absent, not a number, a fraction, an exponent, negative, too
 * large). */
int request_uint63(const struct request_value *v, uint64_t *out);

#endif
