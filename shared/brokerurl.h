/*
 * brokerurl — parse the URLs of the `broker` key. Pure string handling,
 * shared by config validation and the workers that connect.
 *
 *   redis://[[user]:password@]host[:port][/db]
 *   redis-sentinel://[[user]:password@]host[:port][,host[:port]…]/master-name[/db]
 *
 * A Sentinel URL names one shard: the master the Sentinels monitor under
 * master-name (its address is asked for at run time). Its password, if
 * any, is the data nodes' password, like a redis:// URL's.
 */
#ifndef WSGATE_BROKERURL_H
#define WSGATE_BROKERURL_H

#include <stddef.h>

#define BROKER_SENTINELS_MAX 8
#define BROKER_MASTER_NAME_MAX 64

struct broker_addr {
    char host[128];
    int port;
};

struct broker_url {
    char host[128]; /* redis://: the node; redis-sentinel://: empty until resolved */
    int port;
    int db;
    char password[128]; /* from the URL; broker_password_file overrides */
    int nsentinels;     /* 0: a plain redis:// URL */
    struct broker_addr sentinel[BROKER_SENTINELS_MAX];
    char master_name[BROKER_MASTER_NAME_MAX];
};

/* 0, or -1 with *why set to what is wrong. */
int broker_url_parse(const char *url, struct broker_url *out, const char **why);
/* The `broker` label value, never containing a password: "host:port/db",
 * or "sentinel:master-name/db" for a Sentinel group. */
void broker_url_label(const char *url, char *out, size_t len);

#endif
