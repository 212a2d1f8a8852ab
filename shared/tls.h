/*
 * tls — load and check certificate/key pairs, and build server SSL_CTXs.
 *
 * All of wsgate's OpenSSL configuration lives here; nothing here knows of
 * processes, sockets or the event loop (the worker's tlsconn drives the
 * connections). A pair is checked the way a server uses it: the
 * certificate chain parses, the key parses without a passphrase (never a
 * prompt), and the key belongs to the leaf certificate. Error messages name
 * the file at fault and never include key material.
 *
 * Server contexts select ALPN "http/1.1" when the client offers it, accept
 * any SNI name (one certificate serves every name it covers), refuse
 * renegotiation, and keep no session cache and send no tickets: each
 * worker would hold its own keys, so resumption would only work for the
 * 1/N of reconnects that land on the same worker.
 */
#ifndef WSGATE_TLS_H
#define WSGATE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "config-t.h"
#include "tls-t.h"

enum tls_pair_result {
    TLS_PAIR_OK = 0,
    TLS_PAIR_BAD_CERT = -1, /* the certificate file: unreadable, not PEM, empty */
    TLS_PAIR_BAD_KEY = -2,  /* the key file: unreadable, not PEM, encrypted, not the leaf's */
};

/* Read both files and check them. On success fills *out (free it with
 * tls_pair_free). On failure writes "<file>: what is wrong" into err. */
enum tls_pair_result tls_pair_load(const char *cert_file, const char *key_file,
                                   struct tls_pair *out, char *err, size_t errlen);
/* Cleanses the key bytes; leaves *p empty (freeing an empty pair is fine). */
void tls_pair_free(struct tls_pair *p);

/* The master's check of a loaded config: with TLS on, load the pair into
 * *out and set cfg->tls_fingerprint; with TLS off, leave both empty.
 * Errors read "<config>:<line>: key 'tls_key_file': <file>: what is wrong". */
int tls_config_check(struct config *cfg, struct tls_pair *out, char *err, size_t errlen);

/* A server context from a pair; min_version is "1.2" or "1.3". NULL and err
 * on failure. The caller owns the reference (SSL_CTX_free). */
SSL_CTX *tls_server_ctx_new(const struct tls_pair *pair, const char *min_version, char *err,
                            size_t errlen);

/* TLS1_2_VERSION or TLS1_3_VERSION; 0 for anything else. */
int tls_version_value(const char *name);

/* The reason of the oldest error on this thread's OpenSSL error queue
 * (e.g. "wrong version number"), or `fallback`; clears the queue. */
const char *tls_error_reason(char *buf, size_t len, const char *fallback);

#endif
