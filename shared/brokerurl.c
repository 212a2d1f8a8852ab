#include "brokerurl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int broker_url_parse(const char *url, struct broker_url *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    static const char scheme[] = "redis://";
    if (strncmp(url, scheme, sizeof(scheme) - 1) != 0) {
        *why = "a broker must be a redis:// URL";
        return -1;
    }
    const char *p = url + sizeof(scheme) - 1;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        size_t n = (size_t)(at - pw);
        if (n >= sizeof(out->password)) {
            *why = "password too long";
            return -1;
        }
        memcpy(out->password, pw, n);
        p = at + 1;
    }
    size_t hlen = strcspn(p, ":/");
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        *why = "missing or too long host";
        return -1;
    }
    memcpy(out->host, p, hlen);
    p += hlen;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) {
            *why = "port must be 1-65535";
            return -1;
        }
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 15) {
            *why = "database must be 0-15";
            return -1;
        }
        out->db = (int)db;
        p = end;
    } else if (*p == '/') {
        p++;
    }
    if (*p) {
        *why = "unexpected characters after host, port or database";
        return -1;
    }
    return 0;
}

void broker_url_label(const char *url, char *out, size_t len)
{
    struct broker_url u;
    const char *why;
    if (broker_url_parse(url, &u, &why) < 0)
        snprintf(out, len, "invalid");
    else
        snprintf(out, len, "%s:%d/%d", u.host, u.port, u.db);
}
