#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* A certificate chain or key is a few KiB; the cap keeps a wrong path (a
 * device, a log file) from eating memory. */
#define TLS_FILE_MAX (1u << 20)

static const unsigned char tls_alpn_http11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

const char *tls_error_reason(char *buf, size_t len, const char *fallback)
{
    unsigned long e = ERR_get_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", reason ? reason : fallback);
    ERR_clear_error();
    return buf;
}

int tls_version_value(const char *name)
{
    if (strcmp(name, "1.2") == 0)
        return TLS1_2_VERSION;
    if (strcmp(name, "1.3") == 0)
        return TLS1_3_VERSION;
    return 0;
}

/* Never prompt on a terminal for a passphrase: an encrypted key is an
 * error, reported as one. */
static int tls_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int tls_read_file(const char *path, char **out, size_t *out_len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(TLS_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t n = fread(buf, 1, TLS_FILE_MAX + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed || n > TLS_FILE_MAX || n == 0) {
        OPENSSL_cleanse(buf, n > TLS_FILE_MAX ? TLS_FILE_MAX + 1 : n);
        free(buf);
        snprintf(err, errlen, "%s: %s", path,
                 failed ? "read error" : n == 0 ? "empty file" : "larger than 1 MiB");
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
}

/* Install the pair's chain and key in ctx. `cert_name` and `key_name` are
 * what error messages call the two (file paths, or generic words). */
static enum tls_pair_result tls_ctx_use_pair(SSL_CTX *ctx, const struct tls_pair *p,
                                             const char *cert_name, const char *key_name,
                                             char *err, size_t errlen)
{
    char why[160];
    enum tls_pair_result rc = TLS_PAIR_BAD_CERT;
    EVP_PKEY *pkey = NULL;
    BIO *b = BIO_new_mem_buf(p->cert_pem, (int)p->cert_len);
    if (!b) {
        snprintf(err, errlen, "%s: out of memory", cert_name);
        return rc;
    }
    ERR_clear_error();
    X509 *leaf = PEM_read_bio_X509_AUX(b, NULL, tls_no_passphrase, NULL);
    if (!leaf) {
        snprintf(err, errlen, "%s: no PEM certificate found (%s)", cert_name,
                 tls_error_reason(why, sizeof(why), "unreadable"));
        goto out;
    }
    int ok = SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    if (ok != 1) {
        snprintf(err, errlen, "%s: certificate refused (%s)", cert_name,
                 tls_error_reason(why, sizeof(why), "unusable"));
        goto out;
    }
    SSL_CTX_clear_chain_certs(ctx);
    /* The intermediates follow the leaf; the loop ends at the first read
     * that finds no further PEM block, which is the normal end. */
    for (int i = 0; i < 32; i++) {
        X509 *ca = PEM_read_bio_X509(b, NULL, tls_no_passphrase, NULL);
        if (!ca)
            break;
        if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
            X509_free(ca);
            snprintf(err, errlen, "%s: chain certificate %d refused (%s)", cert_name, i + 2,
                     tls_error_reason(why, sizeof(why), "unusable"));
            goto out;
        }
    }
    unsigned long e = ERR_peek_last_error();
    if (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        snprintf(err, errlen, "%s: bad certificate in the chain (%s)", cert_name,
                 tls_error_reason(why, sizeof(why), "unreadable"));
        goto out;
    }
    ERR_clear_error();

    rc = TLS_PAIR_BAD_KEY;
    BIO_free(b);
    b = BIO_new_mem_buf(p->key_pem, (int)p->key_len);
    if (!b) {
        snprintf(err, errlen, "%s: out of memory", key_name);
        goto out;
    }
    pkey = PEM_read_bio_PrivateKey(b, NULL, tls_no_passphrase, NULL);
    if (!pkey) {
        /* OpenSSL's reasons here ("unsupported", "bad password read") say
         * little; the two cases worth telling apart are these. */
        if (memmem(p->key_pem, p->key_len, "ENCRYPTED", 9))
            snprintf(err, errlen, "%s: the private key is encrypted and wsgate cannot ask for "
                     "a passphrase; store it unencrypted, readable only by wsgate", key_name);
        else
            snprintf(err, errlen, "%s: no PEM private key found", key_name);
        goto out;
    }
    /* SSL_CTX_use_PrivateKey already refuses a key that is not the leaf's;
     * the explicit check says so in words. */
    if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s: does not match the certificate in %s", key_name, cert_name);
        goto out;
    }
    rc = TLS_PAIR_OK;
out:
    EVP_PKEY_free(pkey);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    /* The client's list is length-prefixed names; pick http/1.1 if it is
     * there. A client offering only others (h2) gets no ALPN answer and
     * may go on with HTTP/1.1 or give up: its choice. */
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n + 1 == sizeof(tls_alpn_http11) && memcmp(in + i, tls_alpn_http11, n + 1) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *tls_server_ctx_new(const struct tls_pair *pair, const char *min_version, char *err,
                            size_t errlen)
{
    int version = tls_version_value(min_version);
    if (!version) {
        snprintf(err, errlen, "tls_min_version \"%s\" is not 1.2 or 1.3", min_version);
        return NULL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        char why[160];
        snprintf(err, errlen, "cannot create a TLS context (%s)",
                 tls_error_reason(why, sizeof(why), "out of memory"));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
    /* Idle connections give their record buffers back (about 34 KiB each). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
    if (tls_ctx_use_pair(ctx, pair, "certificate", "private key", err, errlen) != TLS_PAIR_OK) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* SHA-256 over both files, each preceded by its length, as hex. */
static int tls_fingerprint(struct tls_pair *p)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    uint64_t lens[2] = {p->cert_len, p->key_len};
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    int ok = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) &&
             EVP_DigestUpdate(h, &lens[0], sizeof(lens[0])) &&
             EVP_DigestUpdate(h, p->cert_pem, p->cert_len) &&
             EVP_DigestUpdate(h, &lens[1], sizeof(lens[1])) &&
             EVP_DigestUpdate(h, p->key_pem, p->key_len) && EVP_DigestFinal_ex(h, md, &mdlen);
    EVP_MD_CTX_free(h);
    if (!ok || mdlen * 2 + 1 > sizeof(p->fingerprint))
        return -1;
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(p->fingerprint + 2 * i, 3, "%02x", md[i]);
    return 0;
}

void tls_pair_free(struct tls_pair *p)
{
    if (p->key_pem) {
        OPENSSL_cleanse(p->key_pem, p->key_len);
        free(p->key_pem);
    }
    free(p->cert_pem);
    memset(p, 0, sizeof(*p));
}

enum tls_pair_result tls_pair_load(const char *cert_file, const char *key_file,
                                   struct tls_pair *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (tls_read_file(cert_file, &out->cert_pem, &out->cert_len, err, errlen) < 0)
        return TLS_PAIR_BAD_CERT;
    if (tls_read_file(key_file, &out->key_pem, &out->key_len, err, errlen) < 0) {
        tls_pair_free(out);
        return TLS_PAIR_BAD_KEY;
    }
    /* Check the pair the way a worker will use it. */
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "%s: cannot create a TLS context to check it", cert_file);
        tls_pair_free(out);
        return TLS_PAIR_BAD_CERT;
    }
    enum tls_pair_result rc = tls_ctx_use_pair(ctx, out, cert_file, key_file, err, errlen);
    SSL_CTX_free(ctx);
    if (rc == TLS_PAIR_OK && tls_fingerprint(out) < 0) {
        snprintf(err, errlen, "%s: cannot compute its SHA-256", cert_file);
        rc = TLS_PAIR_BAD_CERT;
    }
    if (rc != TLS_PAIR_OK)
        tls_pair_free(out);
    return rc;
}

int tls_config_check(struct config *cfg, struct tls_pair *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    cfg->tls_fingerprint[0] = '\0';
    if (cfg->tls_cert_file[0] == '\0')
        return 0;
    char what[2 * CONFIG_PATH_MAX + 160];
    enum tls_pair_result r = tls_pair_load(cfg->tls_cert_file, cfg->tls_key_file, out, what,
                                           sizeof(what));
    if (r != TLS_PAIR_OK) {
        const char *key = r == TLS_PAIR_BAD_CERT ? "tls_cert_file" : "tls_key_file";
        snprintf(err, errlen, "%s:%d: key '%s': %s", cfg->path, config_key_line(cfg->path, key),
                 key, what);
        return -EINVAL;
    }
    memcpy(cfg->tls_fingerprint, out->fingerprint, sizeof(cfg->tls_fingerprint));
    return 0;
}
