/*
 * brokerurl — parse the Redis URLs of the `broker` key:
 * redis://[[user]:password@]host[:port][/db]. Pure string handling, shared
 * by config validation and the workers that connect.
 */
#ifndef WSGATE_BROKERURL_H
#define WSGATE_BROKERURL_H

#include <stddef.h>

struct broker_url {
    char host[128];
    int port;
    int db;
    char password[128]; /* from the URL; broker_password_file overrides */
};

/* 0, or -1 with *why set to what is wrong. */
int broker_url_parse(const char *url, struct broker_url *out, const char **why);
/* "host:port/db": the `broker` label value; never contains the password. */
void broker_url_label(const char *url, char *out, size_t len);

#endif
