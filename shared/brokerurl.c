#include "brokerurl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* host[:port] from p up to end; 0 or -1 with *why. */
static int broker_url_addr(const char *p, const char *end, struct broker_addr *out,
                           int default_port, const char **why)
{
    const char *colon = memchr(p, ':', (size_t)(end - p));
    size_t hlen = (size_t)((colon ? colon : end) - p);
    if (hlen == 0 || hlen >= sizeof(out->host)) {
        *why = "missing or too long host";
        return -1;
    }
    memcpy(out->host, p, hlen);
    out->host[hlen] = '\0';
    out->port = default_port;
    if (colon) {
        char *stop;
        long port = strtol(colon + 1, &stop, 10);
        if (stop == colon + 1 || stop != end || port < 1 || port > 65535) {
            *why = "port must be 1-65535";
            return -1;
        }
        out->port = (int)port;
    }
    return 0;
}

/* "[/db]" at the end of the URL. */
static int broker_url_db(const char *p, struct broker_url *out, const char **why)
{
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 15) {
            *why = "database must be 0-15";
            return -1;
        }
        out->db = (int)db;
        return 0;
    }
    if (*p == '/')
        p++;
    if (*p) {
        *why = "unexpected characters after host, port or database";
        return -1;
    }
    return 0;
}

int broker_url_parse(const char *url, struct broker_url *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    static const char scheme[] = "redis://";
    static const char sentinel_scheme[] = "redis-sentinel://";
    int sentinel = 0;
    const char *p;
    if (strncmp(url, scheme, sizeof(scheme) - 1) == 0) {
        p = url + sizeof(scheme) - 1;
    } else if (strncmp(url, sentinel_scheme, sizeof(sentinel_scheme) - 1) == 0) {
        p = url + sizeof(sentinel_scheme) - 1;
        sentinel = 1;
    } else {
        *why = "a broker must be a redis:// or redis-sentinel:// URL";
        return -1;
    }
    /* The password ends at the last '@' before the path. */
    const char *path = strchr(p, '/');
    const char *at = NULL;
    for (const char *q = p; *q && (!path || q < path); q++)
        if (*q == '@')
            at = q;
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
    if (!sentinel) {
        const char *end = p + strcspn(p, "/");
        struct broker_addr a;
        if (broker_url_addr(p, end, &a, 6379, why) < 0)
            return -1;
        memcpy(out->host, a.host, sizeof(out->host));
        out->port = a.port;
        return broker_url_db(end, out, why);
    }
    if (!path) {
        *why = "a redis-sentinel:// URL needs /master-name after the Sentinel addresses";
        return -1;
    }
    while (p < path) {
        const char *end = memchr(p, ',', (size_t)(path - p));
        if (!end)
            end = path;
        if (out->nsentinels == BROKER_SENTINELS_MAX) {
            *why = "at most 8 Sentinel addresses";
            return -1;
        }
        if (broker_url_addr(p, end, &out->sentinel[out->nsentinels], 26379, why) < 0)
            return -1;
        out->nsentinels++;
        p = end < path ? end + 1 : end;
    }
    if (out->nsentinels == 0) {
        *why = "missing Sentinel address";
        return -1;
    }
    p = path + 1;
    size_t nlen = strcspn(p, "/");
    if (nlen == 0 || nlen >= sizeof(out->master_name)) {
        *why = "missing or too long master name";
        return -1;
    }
    for (size_t i = 0; i < nlen; i++) {
        if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f) {
            *why = "the master name may not hold spaces or control characters";
            return -1;
        }
    }
    memcpy(out->master_name, p, nlen);
    return broker_url_db(p + nlen, out, why);
}

void broker_url_label(const char *url, char *out, size_t len)
{
    struct broker_url u;
    const char *why;
    if (broker_url_parse(url, &u, &why) < 0)
        snprintf(out, len, "invalid");
    else if (u.nsentinels)
        snprintf(out, len, "sentinel:%s/%d", u.master_name, u.db);
    else
        snprintf(out, len, "%s:%d/%d", u.host, u.port, u.db);
}
