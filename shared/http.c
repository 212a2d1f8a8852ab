#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char http_ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static struct http_request *http_from_parser(http_parser *p)
{
    return (struct http_request *)((char *)p - offsetof(struct http_request, parser));
}

/* http-parser hands out pointers into the bytes being parsed, which are our
 * own head buffer; a token split across two feeds arrives as two adjacent
 * calls, so extending the span is enough. */
static void http_span_extend(struct http_request *req, struct http_span *span, const char *at,
                             size_t len, int fresh)
{
    uint16_t off = (uint16_t)(at - req->head);
    if (fresh) {
        span->off = off;
        span->len = (uint16_t)len;
    } else {
        span->len = (uint16_t)(span->len + len);
    }
}

static int http_on_url(http_parser *p, const char *at, size_t len)
{
    struct http_request *req = http_from_parser(p);
    http_span_extend(req, &req->url, at, len, req->url.len == 0);
    return 0;
}

static int http_on_header_field(http_parser *p, const char *at, size_t len)
{
    struct http_request *req = http_from_parser(p);
    if (req->header_count == 0 || req->last_was_value) {
        if (req->header_count == HTTP_HEADERS_MAX) {
            req->too_many_headers = 1;
            return -1;
        }
        req->header_count++;
        http_span_extend(req, &req->headers[req->header_count - 1].name, at, len, 1);
        req->headers[req->header_count - 1].value = (struct http_span){0, 0};
    } else {
        http_span_extend(req, &req->headers[req->header_count - 1].name, at, len, 0);
    }
    req->last_was_value = 0;
    return 0;
}

static int http_on_header_value(http_parser *p, const char *at, size_t len)
{
    struct http_request *req = http_from_parser(p);
    struct http_span *v = &req->headers[req->header_count - 1].value;
    http_span_extend(req, v, at, len, !req->last_was_value);
    req->last_was_value = 1;
    return 0;
}

static int http_on_headers_complete(http_parser *p)
{
    struct http_request *req = http_from_parser(p);
    req->http_major = p->http_major;
    req->http_minor = p->http_minor;
    /* http-parser reads a request line without a version as HTTP/0.9
     * (major 0), which has no headers and no status line to answer with:
     * RFC 9112 3 requires the version, so refuse it rather than serve it. */
    if (p->http_major == 0) {
        req->no_version = 1;
        return -1;
    }
    if (p->http_major != 1) {
        req->bad_version = 1;
        return -1;
    }
    req->complete = 1;
    if (p->method == HTTP_GET)
        req->method = HTTP_METHOD_GET_KIND;
    else if (p->method == HTTP_HEAD)
        req->method = HTTP_METHOD_HEAD_KIND;
    /* We never read request bodies: returning 1 tells http-parser there is
     * none to expect, and we stop right after the head. */
    return 1;
}

static int http_on_message_complete(http_parser *p)
{
    /* Pause so that nothing after the first request is parsed: pipelined
     * requests are not served (every response closes the connection). */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings http_settings = {
    .on_url = http_on_url,
    .on_header_field = http_on_header_field,
    .on_header_value = http_on_header_value,
    .on_headers_complete = http_on_headers_complete,
    .on_message_complete = http_on_message_complete,
};

void http_request_init(struct http_request *req)
{
    memset(req, 0, offsetof(struct http_request, head));
    req->head_len = 0;
    req->url = (struct http_span){0, 0};
    req->header_count = 0;
    req->last_was_value = 0;
    req->complete = 0;
    req->too_many_headers = 0;
    req->no_version = 0;
    req->bad_version = 0;
    req->method = HTTP_METHOD_OTHER;
    http_parser_init(&req->parser, HTTP_REQUEST);
}

enum http_feed_result http_request_feed(struct http_request *req, const char *data, size_t len,
                                        size_t *consumed)
{
    *consumed = 0;
    if (req->complete)
        return HTTP_FEED_DONE;
    size_t room = HTTP_HEAD_MAX - req->head_len;
    size_t take = len < room ? len : room;
    char *start = req->head + req->head_len;
    memcpy(start, data, take);
    req->head_len += take;

    size_t n = http_parser_execute(&req->parser, &http_settings, start, take);
    enum http_errno err = HTTP_PARSER_ERRNO(&req->parser);
    if (req->complete) {
        /* With upgrade or a bodiless request http-parser stops at the end
         * of the head; n counts the head's bytes among these. */
        *consumed = n;
        return HTTP_FEED_DONE;
    }
    if (req->too_many_headers)
        return HTTP_FEED_TOO_BIG;
    if (req->bad_version)
        return HTTP_FEED_VERSION;
    if (err == HPE_HEADER_OVERFLOW)
        return HTTP_FEED_TOO_BIG;
    if (err != HPE_OK && err != HPE_PAUSED)
        return HTTP_FEED_BAD;
    if (req->head_len == HTTP_HEAD_MAX)
        return HTTP_FEED_TOO_BIG;
    *consumed = take;
    return HTTP_FEED_MORE;
}

void http_request_path(const struct http_request *req, char *out, size_t outlen)
{
    struct http_parser_url u;
    http_parser_url_init(&u);
    const char *url = req->head + req->url.off;
    size_t n = req->url.len;
    if (n && http_parser_parse_url(url, n, 0, &u) == 0 && (u.field_set & (1 << UF_PATH))) {
        url += u.field_data[UF_PATH].off;
        n = u.field_data[UF_PATH].len;
    } else {
        /* An unparseable target: keep the raw bytes, cut at '?' so the
         * caller's routing still answers 404 rather than matching. */
        const char *q = memchr(url, '?', n);
        if (q)
            n = (size_t)(q - url);
    }
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, url, n);
    out[n] = '\0';
}

static int http_span_equals_nocase(const struct http_request *req, struct http_span s,
                                   const char *name)
{
    size_t n = strlen(name);
    return s.len == n && strncasecmp(req->head + s.off, name, n) == 0;
}

const char *http_request_header(const struct http_request *req, const char *name, size_t *len)
{
    for (unsigned i = 0; i < req->header_count; i++) {
        if (http_span_equals_nocase(req, req->headers[i].name, name)) {
            /* http-parser strips leading whitespace only; trailing OWS is
             * not part of the value either (RFC 7230 §3.2.4). */
            const char *v = req->head + req->headers[i].value.off;
            size_t n = req->headers[i].value.len;
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            *len = n;
            return v;
        }
    }
    return NULL;
}

unsigned http_request_header_count(const struct http_request *req, const char *name)
{
    unsigned n = 0;
    for (unsigned i = 0; i < req->header_count; i++)
        n += http_span_equals_nocase(req, req->headers[i].name, name);
    return n;
}

int http_request_header_join(const struct http_request *req, const char *name, char *out,
                             size_t cap)
{
    size_t n = 0;
    for (unsigned i = 0; i < req->header_count; i++) {
        if (!http_span_equals_nocase(req, req->headers[i].name, name))
            continue;
        const char *v = req->head + req->headers[i].value.off;
        size_t vlen = req->headers[i].value.len;
        if (n + vlen + 3 > cap)
            return -ENOSPC;
        if (n) {
            memcpy(out + n, ", ", 2);
            n += 2;
        }
        memcpy(out + n, v, vlen);
        n += vlen;
    }
    if (cap)
        out[n] = '\0';
    return (int)n;
}

/* Split a header value on commas and look for a token, ignoring case and
 * the optional whitespace around list items (RFC 7230 §7). */
static int http_value_has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == tlen && strncasecmp(v + start, token, tlen) == 0)
            return 1;
    }
    return 0;
}

int http_request_header_has_token(const struct http_request *req, const char *name,
                                  const char *token)
{
    for (unsigned i = 0; i < req->header_count; i++) {
        if (http_span_equals_nocase(req, req->headers[i].name, name) &&
            http_value_has_token(req->head + req->headers[i].value.off,
                                 req->headers[i].value.len, token))
            return 1;
    }
    return 0;
}

/* A valid key is base64 of exactly 16 bytes: 22 characters and "==". */
static int http_ws_key_valid(const char *key, size_t len)
{
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    unsigned char raw[24];
    return EVP_DecodeBlock(raw, (const unsigned char *)key, 24) == 18;
}

/* SHA-1 fetched once: an implicit fetch per digest (EVP_sha1() in
 * EVP_DigestInit_ex) walks OpenSSL 3's provider tables under a lock on
 * every handshake. One context, reset per digest, serves the worker's one
 * thread. */
static EVP_MD *http_sha1;
static EVP_MD_CTX *http_sha1_ctx;

int http_ws_init(void)
{
    if (!http_sha1)
        http_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
    if (http_sha1 && !http_sha1_ctx)
        http_sha1_ctx = EVP_MD_CTX_new();
    if (!http_sha1 || !http_sha1_ctx)
        return -1;
    char accept[32];
    return http_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, accept);
}

int http_ws_accept_key(const char *key, size_t key_len, char *out)
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    if ((!http_sha1 || !http_sha1_ctx) && http_ws_init() < 0)
        return -1;
    EVP_MD_CTX *md = http_sha1_ctx;
    if (!EVP_DigestInit_ex2(md, http_sha1, NULL) || !EVP_DigestUpdate(md, key, key_len) ||
        !EVP_DigestUpdate(md, http_ws_guid, sizeof(http_ws_guid) - 1) ||
        !EVP_DigestFinal_ex(md, digest, NULL))
        return -1;
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
    return 0;
}

int http_ws_validate(const struct http_request *req, struct http_ws_upgrade *up)
{
    memset(up, 0, sizeof(*up));
    if (req->method != HTTP_METHOD_GET_KIND) {
        up->why = "a WebSocket upgrade must be a GET request";
        return 426;
    }
    if (!http_request_header_has_token(req, "Upgrade", "websocket") ||
        !http_request_header_has_token(req, "Connection", "upgrade")) {
        up->why = "not a WebSocket upgrade: send Upgrade: websocket and Connection: Upgrade";
        return 426;
    }
    size_t klen = 0, vlen = 0;
    const char *key = http_request_header(req, "Sec-WebSocket-Key", &klen);
    const char *version = http_request_header(req, "Sec-WebSocket-Version", &vlen);
    if (!key || !version) {
        up->why = "Sec-WebSocket-Key and Sec-WebSocket-Version: 13 are required";
        return 426;
    }
    if (req->http_major != 1 || req->http_minor < 1) {
        up->why = "WebSocket needs HTTP/1.1";
        return 400;
    }
    if (http_request_header_count(req, "Sec-WebSocket-Key") != 1 || !http_ws_key_valid(key, klen)) {
        up->why = "Sec-WebSocket-Key must be one base64-encoded 16-byte value";
        return 400;
    }
    if (vlen != 2 || memcmp(version, "13", 2) != 0) {
        up->why = "unsupported Sec-WebSocket-Version: only 13 is supported";
        return 400;
    }
    if (http_request_header_count(req, "Sec-WebSocket-Protocol") > 0) {
        if (!http_request_header_has_token(req, "Sec-WebSocket-Protocol", "vitalstream.v1")) {
            up->why = "no supported subprotocol offered: the gateway speaks vitalstream.v1";
            return 400;
        }
        up->subprotocol = 1;
    }
    if (http_ws_accept_key(key, klen, up->accept) < 0) {
        up->why = "could not compute Sec-WebSocket-Accept";
        return 500;
    }
    return 101;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

int http_format_head(char *out, size_t outlen, int status, const char *content_type,
                     const char *extra, size_t body_len)
{
    return http_format_head_cache(out, outlen, status, content_type, "no-store", extra, body_len);
}

int http_format_head_cache(char *out, size_t outlen, int status, const char *content_type,
                           const char *cache_control, const char *extra, size_t body_len)
{
    int n = snprintf(out, outlen,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: wsgate\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Cache-Control: %s\r\n"
                     "Connection: close\r\n"
                     "%s\r\n",
                     status, http_status_text(status), content_type, body_len, cache_control,
                     extra ? extra : "");
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    return n;
}

static int http_hex(char c)
{
    if ('0' <= c && c <= '9')
        return c - '0';
    if ('a' <= c && c <= 'f')
        return c - 'a' + 10;
    if ('A' <= c && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode (and '+' as space, as forms encode it); -1 when it does
 * not fit or a %XX is malformed. */
static int http_percent_decode(const char *in, size_t len, char *out, size_t outlen)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= len || http_hex(in[i + 1]) < 0 || http_hex(in[i + 2]) < 0)
                return -1;
            c = (char)(http_hex(in[i + 1]) * 16 + http_hex(in[i + 2]));
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (n + 1 >= outlen)
            return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return (int)n;
}

int http_request_query_param(const struct http_request *req, const char *name, char *out,
                             size_t outlen)
{
    const char *url = req->head + req->url.off;
    size_t n = req->url.len;
    const char *q = memchr(url, '?', n);
    if (!q)
        return 0;
    const char *p = q + 1, *end = url + n;
    const char *hash = memchr(p, '#', (size_t)(end - p));
    if (hash)
        end = hash;
    size_t name_len = strlen(name);
    int count = 0, bad = 0;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *item_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(item_end - p));
        const char *key_end = eq ? eq : item_end;
        if ((size_t)(key_end - p) == name_len && memcmp(p, name, name_len) == 0) {
            if (count == 0) {
                const char *v = eq ? eq + 1 : item_end;
                if (http_percent_decode(v, (size_t)(item_end - v), out, outlen) < 0)
                    bad = 1;
            }
            count++;
        }
        p = item_end + (amp ? 1 : 0);
    }
    return bad ? -1 : count;
}

int http_origin_normalize(const char *in, size_t len, char *out, size_t outlen)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < len; i++) {
        if (in[i] == ':' && in[i + 1] == '/' && in[i + 2] == '/') {
            sep = in + i;
            break;
        }
    }
    if (!sep || sep == in)
        return -1;
    size_t scheme_len = (size_t)(sep - in);
    char scheme[16];
    if (scheme_len >= sizeof(scheme))
        return -1;
    for (size_t i = 0; i < scheme_len; i++) {
        char c = (char)tolower((unsigned char)in[i]);
        if (!(('a' <= c && c <= 'z') || (i > 0 && (('0' <= c && c <= '9') || c == '+' ||
                                                   c == '-' || c == '.'))))
            return -1;
        scheme[i] = c;
    }
    scheme[scheme_len] = '\0';
    const char *host = sep + 3, *end = in + len;
    if (host == end)
        return -1;
    /* host: a name, an IPv4 address or a bracketed IPv6 address; then an
     * optional :port; nothing else (no user info, path, query). */
    const char *host_end;
    if (*host == '[') {
        const char *close = memchr(host, ']', (size_t)(end - host));
        if (!close || close == host + 1)
            return -1;
        for (const char *p = host + 1; p < close; p++) {
            if (!(isxdigit((unsigned char)*p) || *p == ':' || *p == '.'))
                return -1;
        }
        host_end = close + 1;
    } else {
        host_end = host;
        while (host_end < end && *host_end != ':') {
            char c = *host_end;
            if (!(isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_'))
                return -1;
            host_end++;
        }
        if (host_end == host)
            return -1;
    }
    long port = -1;
    if (host_end < end) {
        if (*host_end != ':' || host_end + 1 == end || end - host_end > 6)
            return -1;
        port = 0;
        for (const char *p = host_end + 1; p < end; p++) {
            if (!isdigit((unsigned char)*p))
                return -1;
            port = port * 10 + (*p - '0');
        }
        if (port < 1 || port > 65535)
            return -1;
    }
    if ((port == 80 && (strcmp(scheme, "http") == 0 || strcmp(scheme, "ws") == 0)) ||
        (port == 443 && (strcmp(scheme, "https") == 0 || strcmp(scheme, "wss") == 0)))
        port = -1;
    size_t host_len = (size_t)(host_end - host);
    char portbuf[8] = "";
    if (port > 0)
        snprintf(portbuf, sizeof(portbuf), ":%ld", port);
    size_t total = scheme_len + 3 + host_len + strlen(portbuf);
    if (total + 1 > outlen)
        return -1;
    size_t n = 0;
    memcpy(out + n, scheme, scheme_len);
    n += scheme_len;
    memcpy(out + n, "://", 3);
    n += 3;
    for (size_t i = 0; i < host_len; i++)
        out[n++] = (char)tolower((unsigned char)host[i]);
    memcpy(out + n, portbuf, strlen(portbuf));
    n += strlen(portbuf);
    out[n] = '\0';
    return (int)n;
}
