#include "pmdeflate.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A quoted value longer than this is no window size: the offer is
 * declined, the header still parsed. */
#define PMDEFLATE_VALUE_MAX 16

enum pmdeflate_param {
    PMDEFLATE_SERVER_NO_TAKEOVER = 1 << 0,
    PMDEFLATE_CLIENT_NO_TAKEOVER = 1 << 1,
    PMDEFLATE_SERVER_WBITS = 1 << 2,
    PMDEFLATE_CLIENT_WBITS = 1 << 3,
};

struct pmdeflate_cursor {
    const char *s;
    size_t len, pos;
};

/* RFC 7230 3.2.6 tchar. */
static int pmdeflate_tchar(unsigned char ch)
{
    if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'))
        return 1;
    return ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static void pmdeflate_ows(struct pmdeflate_cursor *c)
{
    while (c->pos < c->len && (c->s[c->pos] == ' ' || c->s[c->pos] == '\t'))
        c->pos++;
}

static int pmdeflate_peek(const struct pmdeflate_cursor *c)
{
    return c->pos < c->len ? (unsigned char)c->s[c->pos] : -1;
}

/* A token; its length (0: none there). */
static size_t pmdeflate_token(struct pmdeflate_cursor *c, const char **tok)
{
    *tok = c->s + c->pos;
    size_t start = c->pos;
    while (c->pos < c->len && pmdeflate_tchar((unsigned char)c->s[c->pos]))
        c->pos++;
    return c->pos - start;
}

/* A quoted-string (RFC 7230 3.2.6), unescaped into buf; *vlen is
 * PMDEFLATE_VALUE_MAX + 1 when it did not fit. -1 when unterminated or
 * holding a byte a quoted-string may not. */
static int pmdeflate_quoted(struct pmdeflate_cursor *c, char *buf, size_t *vlen)
{
    size_t n = 0;
    c->pos++; /* the opening quote */
    while (c->pos < c->len) {
        unsigned char ch = (unsigned char)c->s[c->pos++];
        if (ch == '"') {
            *vlen = n;
            return 0;
        }
        if (ch == '\\') {
            if (c->pos >= c->len)
                return -1;
            ch = (unsigned char)c->s[c->pos++];
        }
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return -1;
        if (n < PMDEFLATE_VALUE_MAX)
            buf[n] = (char)ch;
        n += n <= PMDEFLATE_VALUE_MAX;
    }
    return -1;
}

/* A window size: a decimal 8..15 without leading zeros (RFC 7692 7.1.2). */
static int pmdeflate_wbits(const char *v, size_t n)
{
    if (n == 1 && (v[0] == '8' || v[0] == '9'))
        return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + (v[1] - '0');
    return -1;
}

static int pmdeflate_is(const char *tok, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(tok, name, n) == 0;
}

/* One parameter of a permessage-deflate offer; 0 when the offer stays
 * acceptable, -1 when it must be declined. */
static int pmdeflate_param(const char *name, size_t nlen, const char *value, size_t vlen,
                           int has_value, unsigned *seen, struct pmdeflate_agreement *a)
{
    unsigned bit;
    if (pmdeflate_is(name, nlen, "server_no_context_takeover"))
        bit = PMDEFLATE_SERVER_NO_TAKEOVER;
    else if (pmdeflate_is(name, nlen, "client_no_context_takeover"))
        bit = PMDEFLATE_CLIENT_NO_TAKEOVER;
    else if (pmdeflate_is(name, nlen, "server_max_window_bits"))
        bit = PMDEFLATE_SERVER_WBITS;
    else if (pmdeflate_is(name, nlen, "client_max_window_bits"))
        bit = PMDEFLATE_CLIENT_WBITS;
    else
        return -1;
    if (*seen & bit)
        return -1;
    *seen |= bit;
    switch (bit) {
    case PMDEFLATE_SERVER_NO_TAKEOVER:
    case PMDEFLATE_CLIENT_NO_TAKEOVER:
        return has_value ? -1 : 0;
    case PMDEFLATE_SERVER_WBITS: {
        int w = has_value ? pmdeflate_wbits(value, vlen) : -1;
        if (w < 0)
            return -1;
        a->server_wbits = (uint8_t)w;
        a->server_wbits_asked = 1;
        return 0;
    }
    default: /* client_max_window_bits: the value is optional */
        return !has_value || pmdeflate_wbits(value, vlen) >= 0 ? 0 : -1;
    }
}

int pmdeflate_negotiate(const char *value, size_t len, struct pmdeflate_agreement *out,
                        const char **why)
{
    struct pmdeflate_cursor c = {value, len, 0};
    int accepted = 0;
    for (;;) {
        while (c.pos < c.len && (c.s[c.pos] == ',' || c.s[c.pos] == ' ' || c.s[c.pos] == '\t'))
            c.pos++;
        if (c.pos >= c.len)
            break;
        const char *ext;
        size_t elen = pmdeflate_token(&c, &ext);
        if (elen == 0) {
            *why = "Sec-WebSocket-Extensions is malformed: an extension name is expected";
            return -EINVAL;
        }
        int offer = !accepted && pmdeflate_is(ext, elen, "permessage-deflate");
        int declined = 0;
        unsigned seen = 0;
        struct pmdeflate_agreement a = {15, 0, 0};
        for (;;) {
            pmdeflate_ows(&c);
            int ch = pmdeflate_peek(&c);
            if (ch == -1 || ch == ',')
                break;
            if (ch != ';') {
                *why = "Sec-WebSocket-Extensions is malformed: ';' or ',' expected after an "
                       "extension or parameter";
                return -EINVAL;
            }
            c.pos++;
            pmdeflate_ows(&c);
            const char *name;
            size_t nlen = pmdeflate_token(&c, &name);
            if (nlen == 0) {
                *why = "Sec-WebSocket-Extensions is malformed: a parameter name is expected "
                       "after ';'";
                return -EINVAL;
            }
            pmdeflate_ows(&c);
            char buf[PMDEFLATE_VALUE_MAX];
            const char *val = NULL;
            size_t vlen = 0;
            int has_value = pmdeflate_peek(&c) == '=';
            if (has_value) {
                c.pos++;
                pmdeflate_ows(&c);
                if (pmdeflate_peek(&c) == '"') {
                    if (pmdeflate_quoted(&c, buf, &vlen) < 0) {
                        *why = "Sec-WebSocket-Extensions is malformed: a quoted parameter value "
                               "is not terminated";
                        return -EINVAL;
                    }
                    val = buf;
                    /* RFC 6455 9.1: unescaped, it must still be a token. */
                    for (size_t i = 0; i < vlen && i < PMDEFLATE_VALUE_MAX; i++)
                        declined |= !pmdeflate_tchar((unsigned char)buf[i]);
                    declined |= vlen == 0 || vlen > PMDEFLATE_VALUE_MAX;
                } else if ((vlen = pmdeflate_token(&c, &val)) == 0) {
                    *why = "Sec-WebSocket-Extensions is malformed: a parameter value is expected "
                           "after '='";
                    return -EINVAL;
                }
            }
            if (offer && !declined &&
                pmdeflate_param(name, nlen, val, vlen, has_value, &seen, &a) < 0)
                declined = 1;
        }
        if (offer && !declined) {
            a.server_takeover = !(seen & PMDEFLATE_SERVER_NO_TAKEOVER) &&
                                a.server_wbits >= PMDEFLATE_CONTEXT_WBITS;
            *out = a;
            accepted = 1;
        }
    }
    return accepted;
}

int pmdeflate_response(const struct pmdeflate_agreement *a, char *out, size_t cap)
{
    char wbits[40] = "";
    if (a->server_wbits_asked)
        snprintf(wbits, sizeof(wbits), "; server_max_window_bits=%u", a->server_wbits);
    int n = snprintf(out, cap,
                     "Sec-WebSocket-Extensions: permessage-deflate; %sclient_no_context_takeover%s\r\n",
                     a->server_takeover ? "" : "server_no_context_takeover; ", wbits);
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}
