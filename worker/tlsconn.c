#include "tlsconn.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "segment.h"
#include "sendq.h"
#include "tls.h"

/* Plaintext encrypted per batch: enough for one writev-sized burst, small
 * enough that the write BIO (which keeps its largest size) stays modest. */
#define TLSCONN_SEAL_BYTES (64u * 1024u)
/* A quiet session's BIO holding more than this (the handshake leaves 1-3 KiB
 * in each) is replaced by an empty one. */
#define TLSCONN_BIO_KEEP 1024

int tlsconn_start(struct conn *c, const struct tlsconn_ops *ops)
{
    struct tlsconn *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->ops = ops;
    t->ssl = SSL_new(c->w->tls_ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return -ENOMEM;
    }
    /* An empty memory BIO means "no more bytes yet", not end of stream. */
    BIO_set_mem_eof_return(t->rbio, -1);
    BIO_set_mem_eof_return(t->wbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    c->tls = t;
    return 0;
}

void tlsconn_free(struct conn *c)
{
    struct tlsconn *t = c->tls;
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs and its reference to the SSL_CTX */
    free(t->pending);
    free(t);
    c->tls = NULL;
}

static void tlsconn_log_error(struct conn *c, const char *tls_error, const char *message)
{
    struct log_line l;
    c->tls->ops->log_begin(&l, c, LOG_WARN, "error");
    log_str(&l, "error_type", "tls");
    if (tls_error)
        log_str(&l, "tls_error", tls_error);
    log_str(&l, "message", message);
    log_end(&l);
}

/* The handshake is over, badly: count it, say so, send the alert OpenSSL
 * queued (if any) and close. */
static void tlsconn_fail(struct conn *c, const char *tls_error, const char *message)
{
    c->tls->failed = 1;
    tlsconn_log_error(c, tls_error, message);
    c->tls->ops->refuse(c, CONN_ERROR_TLS);
}

/* What an OpenSSL handshake reason means for whoever reads the log. */
static const char *tlsconn_explain(const char *reason)
{
    if (strcmp(reason, "http request") == 0 || strcmp(reason, "https proxy request") == 0)
        return "TLS handshake failed: the client sent plain HTTP to the TLS port "
               "(use https:// or wss://)";
    if (strcmp(reason, "wrong version number") == 0 || strcmp(reason, "packet length too long") == 0 ||
        strcmp(reason, "record layer failure") == 0)
        return "TLS handshake failed: the client did not speak TLS";
    if (strcmp(reason, "unsupported protocol") == 0)
        return "TLS handshake failed: the client offers no TLS version at or above "
               "tls_min_version";
    if (strncmp(reason, "tlsv1 alert", 11) == 0 || strncmp(reason, "sslv3 alert", 11) == 0)
        return "TLS handshake failed: the client refused it (an untrusted or wrong "
               "certificate, or no common parameters)";
    return "TLS handshake failed";
}

static void tlsconn_log_established(struct conn *c)
{
    struct tlsconn *t = c->tls;
    const unsigned char *alpn = NULL;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
    char proto[32];
    snprintf(proto, sizeof(proto), "%.*s", (int)alpn_len, alpn ? (const char *)alpn : "");
    const char *sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    struct log_line l;
    c->tls->ops->log_begin(&l, c, LOG_DEBUG, "tls");
    log_str(&l, "version", SSL_get_version(t->ssl));
    log_str(&l, "cipher", SSL_get_cipher_name(t->ssl));
    log_str(&l, "alpn", proto);
    log_str(&l, "sni", sni ? sni : "");
    log_end(&l);
}

/* Reading stopped under us: a response is on its way (HTTP), or closed. */
static int tlsconn_reading_done(const struct conn *c)
{
    return c->closed || c->tls->failed || (c->state == CONN_HTTP && c->close_after_flush);
}

/* A TLS error on an established connection (a bad record, a fatal alert). */
static void tlsconn_session_failed(struct conn *c)
{
    char why[160];
    tls_error_reason(why, sizeof(why), "TLS error");
    c->tls->failed = 1;
    if (c->state == CONN_HTTP) {
        tlsconn_log_error(c, why, "TLS error before the HTTP request was complete; closing");
        c->tls->ops->refuse(c, CONN_ERROR_TLS);
        return;
    }
    struct log_line l;
    c->tls->ops->log_begin(&l, c, LOG_WARN, "error");
    log_str(&l, "tls_error", why);
    log_str(&l, "message", "TLS error on an open session; closing, the client will reconnect");
    log_end(&l);
    c->tls->ops->close(c, c->state == CONN_CLOSING ? c->reason : DISCONNECT_ERROR, 1006);
}

/* Decrypt everything the read BIO holds, a buffer at a time. */
static void tlsconn_read_plaintext(struct conn *c)
{
    struct tlsconn *t = c->tls;
    char *buf = c->w->readbuf;
    size_t cap = sizeof(c->w->readbuf);
    /* Each round either fills the buffer (consuming ciphertext, of which
     * there is a finite amount) or ends the loop. */
    for (;;) {
        size_t filled = 0;
        int e = SSL_ERROR_NONE;
        while (filled < cap) {
            size_t n = 0;
            if (SSL_read_ex(t->ssl, buf + filled, cap - filled, &n) == 1) {
                filled += n;
                continue;
            }
            e = SSL_get_error(t->ssl, 0);
            break;
        }
        if (filled) {
            c->tls->ops->deliver(c, buf, filled);
            if (tlsconn_reading_done(c))
                return;
        }
        switch (e) {
        case SSL_ERROR_NONE:
            continue; /* the buffer filled up: there may be more */
        case SSL_ERROR_WANT_READ:
            return;
        case SSL_ERROR_ZERO_RETURN:
            /* close_notify: the client is leaving, as with a TCP EOF. */
            ERR_clear_error();
            c->tls->ops->read_failed(c, UV_EOF);
            return;
        default:
            tlsconn_session_failed(c);
            return;
        }
    }
}

void tlsconn_feed(struct conn *c, const char *data, size_t len)
{
    struct tlsconn *t = c->tls;
    t->got_bytes = 1;
    if (t->failed)
        return;
    ERR_clear_error();
    if (BIO_write(t->rbio, data, (int)len) != (int)len) {
        ERR_clear_error();
        log_msg(LOG_ERROR, "error", "out of memory buffering TLS input; closing a connection");
        if (c->state == CONN_HTTP)
            c->tls->ops->refuse(c, CONN_ERROR_TLS);
        else
            c->tls->ops->close(c, DISCONNECT_ERROR, 1006);
        return;
    }
    if (!t->established) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ) {
                if (BIO_ctrl_pending(t->wbio))
                    c->tls->ops->mark_dirty(c); /* our flight (ServerHello …) */
                return;
            }
            char why[160];
            tls_error_reason(why, sizeof(why), "handshake error");
            tlsconn_fail(c, why, tlsconn_explain(why));
            return;
        }
        t->established = 1;
        tlsconn_log_established(c);
    }
    tlsconn_read_plaintext(c);
    /* Reading can produce output too (the handshake's last flight, alerts,
     * key updates). */
    if (!c->closed && BIO_ctrl_pending(t->wbio))
        c->tls->ops->mark_dirty(c);
}

void tlsconn_read_failed(struct conn *c, int status)
{
    struct tlsconn *t = c->tls;
    if (!t->got_bytes) {
        /* Nothing sent at all: a port probe, handled as on a plain port. */
        c->tls->ops->read_failed(c, status);
        return;
    }
    tlsconn_log_error(c, status == UV_EOF ? NULL : uv_strerror(status),
                      "client closed the connection during the TLS handshake (it may not "
                      "trust the certificate)");
    t->failed = 1;
    c->tls->ops->refuse(c, CONN_ERROR_TLS);
    c->tls->ops->close(c, DISCONNECT_ERROR, 0);
}

void tlsconn_timed_out(struct conn *c)
{
    tlsconn_fail(c, NULL, c->tls->got_bytes
                              ? "TLS handshake not completed within handshake_timeout; closing"
                              : "no TLS handshake within handshake_timeout (nothing received); "
                                "closing");
}

static void tlsconn_write_done(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    struct tlsconn *t = c->tls;
    t->writing = 0;
    free(t->pending);
    t->pending = NULL;
    if (status < 0) {
        /* UV_ECANCELED: the handle is closing. */
        if (status != UV_ECANCELED)
            t->ops->write_done(c, status);
        return;
    }
    t->cipher_sent += t->pending_len;
    t->pending_len = 0;
    t->ops->write_done(c, 0);
}

/* Move the write BIO's ciphertext to the kernel, a buffer at a time.
 * Returns 0 when all of it went, 1 when the rest waits in a uv_write,
 * or a negative libuv error. */
static int tlsconn_write_cipher(struct conn *c)
{
    struct tlsconn *t = c->tls;
    uv_stream_t *stream = (uv_stream_t *)&c->tcp;
    char *buf = c->w->readbuf;
    while (BIO_ctrl_pending(t->wbio) > 0) {
        int n = BIO_read(t->wbio, buf, (int)sizeof(c->w->readbuf));
        if (n <= 0)
            break;
        uv_buf_t b = uv_buf_init(buf, (unsigned)n);
        int r = uv_try_write(stream, &b, 1);
        if (r == UV_EAGAIN)
            r = 0;
        if (r < 0)
            return r;
        t->cipher_sent += (uint64_t)r;
        if (r == n)
            continue;
        /* The kernel's buffer is full: the rest of this buffer goes with
         * uv_write (it needs bytes that stay put), whose callback flushes
         * what follows. */
        t->pending_len = (size_t)(n - r);
        t->pending = malloc(t->pending_len);
        if (!t->pending)
            return UV_ENOMEM;
        memcpy(t->pending, buf + r, t->pending_len);
        b = uv_buf_init(t->pending, (unsigned)t->pending_len);
        t->req.data = c;
        r = uv_write(&t->req, stream, &b, 1, tlsconn_write_done);
        if (r < 0) {
            free(t->pending);
            t->pending = NULL;
            return r;
        }
        t->writing = 1;
        return 1;
    }
    return 0;
}

/* Encrypt a batch of whole chunks from the head of the send queue. With
 * memory BIOs SSL_write takes everything at once or fails. Returns 0, or
 * -EPROTO (OpenSSL's error queue says why). */
static int tlsconn_seal(struct conn *c)
{
    struct tlsconn *t = c->tls;
    struct sendq *q = c->out; /* tlsconn_flush seals only a queue with chunks */
    size_t bytes = 0;
    unsigned n = 0;
    for (struct sendq_chunk *ch = q->head;
         ch && n < SENDQ_IOV_MAX && (n == 0 || bytes < TLSCONN_SEAL_BYTES); ch = ch->next, n++) {
        size_t len = ch->len - ch->off;
        size_t written = 0;
        if (len && SSL_write_ex(t->ssl, sendq_chunk_bytes(ch) + ch->off, len, &written) != 1)
            return -EPROTO;
        bytes += len;
    }
    /* We seal only with the write BIO empty and no write pending, so the
     * batch ends where what the BIO holds now ends. (Not the BIO's own
     * byte counter: a quiet session gets a fresh BIO that starts over.) */
    q->sealed = n;
    t->sealed_bytes = bytes;
    t->sealed_end = t->cipher_sent + BIO_ctrl_pending(t->wbio);
    return 0;
}

int tlsconn_flush(struct conn *c)
{
    struct tlsconn *t = c->tls;
    struct sendq *q = c->out; /* NULL: nothing queued (TLS may still have bytes of its own) */
    if (t->writing)
        return 0; /* the pending uv_write's callback continues */
    ERR_clear_error();
    /* Every round retires a batch, writes ciphertext, seals a batch or
     * queues close_notify (once); it ends when the kernel is full or
     * nothing is left. */
    for (;;) {
        if (q && q->sealed && t->cipher_sent >= t->sealed_end) {
            q->sealed = 0;
            sendq_consume(c, t->sealed_bytes);
            t->sealed_bytes = 0;
        }
        if (BIO_ctrl_pending(t->wbio) > 0) {
            int r = tlsconn_write_cipher(c);
            if (r != 0)
                return r < 0 ? r : 0;
            continue;
        }
        if (q && q->head && !q->sealed) {
            if (!t->established || t->failed) {
                /* Nothing readable can be sent on this connection. */
                sendq_drop_unsent(q);
                continue;
            }
            if (tlsconn_seal(c) < 0) {
                char why[160];
                log_msg(LOG_ERROR, "error", "TLS encryption failed (%s); closing a connection",
                        tls_error_reason(why, sizeof(why), "unknown"));
                t->failed = 1;
                return UV_EPROTO;
            }
            continue;
        }
        if ((!q || !q->head) && c->close_after_flush && t->established && !t->failed && !t->shut) {
            /* Say goodbye in TLS too, so clients see a clean end, not a
             * truncation. We do not wait for the client's own. */
            t->shut = 1;
            SSL_shutdown(t->ssl);
            ERR_clear_error();
            continue;
        }
        return 0;
    }
}

int tlsconn_output_left(const struct conn *c)
{
    const struct tlsconn *t = c->tls;
    return t->writing || BIO_ctrl_pending(t->wbio) > 0 ||
           (c->close_after_flush && t->established && !t->failed && !t->shut);
}

/* Replace a grown, empty memory BIO with a new one. */
static void tlsconn_shrink_bio(struct tlsconn *t, int read_side)
{
    BIO *old = read_side ? t->rbio : t->wbio;
    BUF_MEM *bm = NULL;
    BIO_get_mem_ptr(old, &bm);
    if (!bm || bm->max <= TLSCONN_BIO_KEEP)
        return;
    BIO *fresh = BIO_new(BIO_s_mem());
    if (!fresh)
        return;
    BIO_set_mem_eof_return(fresh, -1);
    if (read_side) {
        SSL_set0_rbio(t->ssl, fresh); /* frees the old one */
        t->rbio = fresh;
    } else {
        SSL_set0_wbio(t->ssl, fresh);
        t->wbio = fresh;
    }
}

void tlsconn_release_if_idle(struct conn *c)
{
    struct tlsconn *t = c->tls;
    if (!t->established || t->failed || t->writing || (c->out && c->out->sealed) ||
        BIO_ctrl_pending(t->rbio) > 0 || BIO_ctrl_pending(t->wbio) > 0)
        return;
    tlsconn_shrink_bio(t, 1);
    tlsconn_shrink_bio(t, 0);
}

/* ---- the worker's SSL_CTX ---- */

static void tlsconn_ctx_install(struct worker *w, SSL_CTX *ctx, const char *fingerprint)
{
    /* Live sessions hold their own reference: the old context goes when
     * the last of them does. */
    SSL_CTX_free(w->tls_ctx);
    w->tls_ctx = ctx;
    snprintf(w->tls_fingerprint, sizeof(w->tls_fingerprint), "%s", fingerprint);
    snprintf(w->tls_min_version, sizeof(w->tls_min_version), "%s", w->cfg.tls_min_version);
}

int tlsconn_ctx_init(struct worker *w, const struct tls_pair *pair)
{
    if (w->cfg.tls_cert_file[0] == '\0')
        return 0;
    if (!pair || !pair->cert_pem || strcmp(pair->fingerprint, w->cfg.tls_fingerprint) != 0) {
        /* Not the pair this generation names (should not happen): read
         * the files, checked against the master's fingerprint. */
        tlsconn_ctx_refresh(w);
        return w->tls_ctx ? 0 : -EINVAL;
    }
    char err[2 * CONFIG_PATH_MAX + 200];
    SSL_CTX *ctx = tls_server_ctx_new(pair, w->cfg.tls_min_version, err, sizeof(err));
    if (!ctx) {
        log_msg(LOG_ERROR, "error", "worker %d cannot set up TLS: %s", w->slot_index, err);
        return -EINVAL;
    }
    tlsconn_ctx_install(w, ctx, pair->fingerprint);
    return 0;
}

void tlsconn_ctx_refresh(struct worker *w)
{
    const struct config *cfg = &w->cfg;
    /* Switching TLS on or off is refused by the master (restart only). */
    if (cfg->tls_cert_file[0] == '\0')
        return;
    if (w->tls_ctx && strcmp(w->tls_fingerprint, cfg->tls_fingerprint) == 0 &&
        strcmp(w->tls_min_version, cfg->tls_min_version) == 0)
        return;
    char err[2 * CONFIG_PATH_MAX + 200];
    struct tls_pair pair;
    if (tls_pair_load(cfg->tls_cert_file, cfg->tls_key_file, &pair, err, sizeof(err)) !=
        TLS_PAIR_OK) {
        log_msg(LOG_ERROR, "error",
                "worker %d cannot load the TLS pair of the new configuration: %s; it keeps "
                "serving the previous certificate",
                w->slot_index, err);
        return;
    }
    if (strcmp(pair.fingerprint, cfg->tls_fingerprint) != 0) {
        log_msg(LOG_ERROR, "error",
                "worker %d: %s or %s changed after the master checked them; it keeps serving "
                "the previous certificate: send SIGHUP again",
                w->slot_index, cfg->tls_cert_file, cfg->tls_key_file);
        tls_pair_free(&pair);
        return;
    }
    SSL_CTX *ctx = tls_server_ctx_new(&pair, cfg->tls_min_version, err, sizeof(err));
    tls_pair_free(&pair);
    if (!ctx) {
        log_msg(LOG_ERROR, "error",
                "worker %d cannot build a TLS context for the new configuration: %s; it keeps "
                "serving the previous one",
                w->slot_index, err);
        return;
    }
    int first = w->tls_ctx == NULL;
    tlsconn_ctx_install(w, ctx, cfg->tls_fingerprint);
    if (!first)
        log_msg(LOG_INFO, "reload", "worker %d: new connections get the new TLS configuration; "
                "open sessions keep theirs", w->slot_index);
}

void tlsconn_ctx_free(struct worker *w)
{
    SSL_CTX_free(w->tls_ctx);
    w->tls_ctx = NULL;
}
