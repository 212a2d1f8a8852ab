/*
 * tls-t.h — a certificate and private key as the master validated them.
 *
 * The PEM bytes themselves, not paths: a worker forked later builds its
 * SSL_CTX from exactly these bytes, whatever the files hold by then.
 */
#ifndef WSGATE_TLS_T_H
#define WSGATE_TLS_T_H

#include <stddef.h>

#include "config-t.h"

struct tls_pair {
    char *cert_pem; /* leaf first, then any intermediates */
    size_t cert_len;
    char *key_pem;  /* cleansed before it is freed */
    size_t key_len;
    char fingerprint[CONFIG_FINGERPRINT_MAX]; /* hex SHA-256 of both */
};

#endif
