/*
 * Unit suite for shared/tls.c: loading certificate/key pairs (chains,
 * fingerprints), every way a pair can be wrong and which file the error
 * names, the master's config check (file, line and key), and what server
 * contexts do in a real handshake run in memory: tls_min_version, ALPN
 * http/1.1, SNI, no session tickets.
 *
 * Certificates are made here with the OpenSSL API (P-256 keys), in a
 * temporary folder per test process.
 */
#include <check.h>
#include <ftw.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "testcert.h"
#include "tls.h"
#include "unit.h"

/* ---- temp folder, removed by the (parent-side) unchecked teardown ---- */

static char tmp_root[256];

static void tmp_setup(void)
{
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/wsgate-unit-tls-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(tmp_root))
        abort();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tmp_teardown(void)
{
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* tmp_root/<name>, in one of a few rotating static buffers. */
static const char *tmp_file(const char *name)
{
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", tmp_root, name);
    return p;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(fputs(text, f), 0);
    ck_assert_int_eq(fclose(f), 0);
}

/* ---- writing keys and certificates (made by testcert.h) ---- */

static void write_key(const char *path, EVP_PKEY *k, const char *passphrase)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    if (passphrase)
        ck_assert_int_eq(PEM_write_PrivateKey(f, k, EVP_aes_256_cbc(), NULL, 0, NULL,
                                              (void *)passphrase), 1);
    else
        ck_assert_int_eq(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* Write certificates (in order) into one PEM file. */
static void write_certs(const char *path, X509 *a, X509 *b)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(PEM_write_X509(f, a), 1);
    if (b)
        ck_assert_int_eq(PEM_write_X509(f, b), 1);
    ck_assert_int_eq(fclose(f), 0);
}

/* A root CA, an intermediate, leaf A (chain file: A + intermediate) and a
 * self-signed leaf B, plus a stray key; all written to tmp_root. */
struct fixture {
    EVP_PKEY *root_key, *int_key, *a_key, *b_key, *stray_key;
    X509 *root, *inter, *a, *b;
    const char *root_pem, *a_chain, *a_key_pem, *b_pem, *b_key_pem, *stray_pem;
};

static struct fixture fx;

static void make_fixture(void)
{
    fx.root_key = testcert_key();
    fx.int_key = testcert_key();
    fx.a_key = testcert_key();
    fx.b_key = testcert_key();
    fx.stray_key = testcert_key();
    fx.root = testcert_cert("wsgate unit root", fx.root_key, NULL, NULL, 1);
    fx.inter = testcert_cert("wsgate unit intermediate", fx.int_key, fx.root, fx.root_key, 1);
    fx.a = testcert_cert("websocket.vitalstream.com", fx.a_key, fx.inter, fx.int_key, 0);
    fx.b = testcert_cert("websocket.vitalstream.com", fx.b_key, NULL, NULL, 0);
    fx.root_pem = strdup(tmp_file("root.pem"));
    fx.a_chain = strdup(tmp_file("a-chain.pem"));
    fx.a_key_pem = strdup(tmp_file("a.key"));
    fx.b_pem = strdup(tmp_file("b.pem"));
    fx.b_key_pem = strdup(tmp_file("b.key"));
    fx.stray_pem = strdup(tmp_file("stray.key"));
    write_certs(fx.root_pem, fx.root, NULL);
    write_certs(fx.a_chain, fx.a, fx.inter);
    write_key(fx.a_key_pem, fx.a_key, NULL);
    write_certs(fx.b_pem, fx.b, NULL);
    write_key(fx.b_key_pem, fx.b_key, NULL);
    write_key(fx.stray_pem, fx.stray_key, NULL);
}

static void free_fixture(void)
{
    EVP_PKEY_free(fx.root_key);
    EVP_PKEY_free(fx.int_key);
    EVP_PKEY_free(fx.a_key);
    EVP_PKEY_free(fx.b_key);
    EVP_PKEY_free(fx.stray_key);
    X509_free(fx.root);
    X509_free(fx.inter);
    X509_free(fx.a);
    X509_free(fx.b);
    free((void *)fx.root_pem);
    free((void *)fx.a_chain);
    free((void *)fx.a_key_pem);
    free((void *)fx.b_pem);
    free((void *)fx.b_key_pem);
    free((void *)fx.stray_pem);
    memset(&fx, 0, sizeof(fx));
}

/* Expect tls_pair_load to fail with `want`, naming `file` and saying `what`. */
static void expect_bad_pair(const char *cert, const char *key, enum tls_pair_result want,
                            const char *file, const char *what)
{
    struct tls_pair p;
    char err[1024] = "";
    enum tls_pair_result r = tls_pair_load(cert, key, &p, err, sizeof(err));
    ck_assert_msg(r == want, "result %d, want %d (%s)", r, want, err);
    ck_assert_msg(strncmp(err, file, strlen(file)) == 0, "\"%s\" does not start with %s", err, file);
    ck_assert_msg(strstr(err, what) != NULL, "\"%s\" lacks \"%s\"", err, what);
    ck_assert_ptr_null(p.cert_pem);
    ck_assert_ptr_null(p.key_pem);
    ck_assert_int_eq(ERR_peek_error(), 0); /* nothing left on the error queue */
}

/* ---- loading pairs ---- */

START_TEST(good_pair_loads_with_fingerprint)
{
    struct tls_pair p;
    char err[512] = "";
    ck_assert_msg(tls_pair_load(fx.a_chain, fx.a_key_pem, &p, err, sizeof(err)) == TLS_PAIR_OK,
                  "%s", err);
    ck_assert_ptr_nonnull(strstr(p.cert_pem, "BEGIN CERTIFICATE"));
    ck_assert_ptr_nonnull(strstr(p.key_pem, "PRIVATE KEY"));
    ck_assert_uint_eq(strlen(p.fingerprint), 64);
    ck_assert_uint_eq(strspn(p.fingerprint, "0123456789abcdef"), 64);
    struct tls_pair again;
    ck_assert_int_eq(tls_pair_load(fx.a_chain, fx.a_key_pem, &again, err, sizeof(err)),
                     TLS_PAIR_OK);
    ck_assert_str_eq(again.fingerprint, p.fingerprint);
    struct tls_pair other;
    ck_assert_int_eq(tls_pair_load(fx.b_pem, fx.b_key_pem, &other, err, sizeof(err)), TLS_PAIR_OK);
    ck_assert_str_ne(other.fingerprint, p.fingerprint);
    tls_pair_free(&p);
    tls_pair_free(&again);
    tls_pair_free(&other);
    ck_assert_ptr_null(p.key_pem);
    tls_pair_free(&p); /* an empty pair frees fine */
}
END_TEST

START_TEST(fingerprint_covers_the_key_file_too)
{
    /* Same certificate, same key, different bytes (text before the PEM
     * block, which PEM readers skip): the fingerprint is of the bytes, so
     * any change to the key file is seen. */
    const char *commented = tmp_file("a-commented.key");
    FILE *f = fopen(commented, "w");
    ck_assert_ptr_nonnull(f);
    fputs("rotated key, same as before\n", f);
    ck_assert_int_eq(PEM_write_PrivateKey(f, fx.a_key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    struct tls_pair p, q;
    char err[512] = "";
    ck_assert_int_eq(tls_pair_load(fx.a_chain, fx.a_key_pem, &p, err, sizeof(err)), TLS_PAIR_OK);
    ck_assert_msg(tls_pair_load(fx.a_chain, commented, &q, err, sizeof(err)) == TLS_PAIR_OK, "%s", err);
    ck_assert_str_ne(p.fingerprint, q.fingerprint);
    tls_pair_free(&p);
    tls_pair_free(&q);
}
END_TEST

START_TEST(mismatched_key_names_the_key_file)
{
    expect_bad_pair(fx.a_chain, fx.stray_pem, TLS_PAIR_BAD_KEY, fx.stray_pem, "does not match");
    expect_bad_pair(fx.a_chain, fx.b_key_pem, TLS_PAIR_BAD_KEY, fx.b_key_pem, fx.a_chain);
    expect_bad_pair(fx.b_pem, fx.a_key_pem, TLS_PAIR_BAD_KEY, fx.a_key_pem, "does not match");
}
END_TEST

START_TEST(unreadable_files_are_named)
{
    expect_bad_pair(tmp_file("none.pem"), fx.a_key_pem, TLS_PAIR_BAD_CERT, tmp_file("none.pem"),
                    "cannot read");
    expect_bad_pair(fx.a_chain, tmp_file("none.key"), TLS_PAIR_BAD_KEY, tmp_file("none.key"),
                    "cannot read");
    expect_bad_pair(tmp_root, fx.a_key_pem, TLS_PAIR_BAD_CERT, tmp_root, ""); /* a folder */
    const char *empty = tmp_file("empty.pem");
    write_text(empty, "");
    expect_bad_pair(empty, fx.a_key_pem, TLS_PAIR_BAD_CERT, empty, "empty");
    expect_bad_pair(fx.a_chain, empty, TLS_PAIR_BAD_KEY, empty, "empty");
}
END_TEST

START_TEST(swapped_or_wrong_contents_refused)
{
    expect_bad_pair(fx.a_key_pem, fx.a_key_pem, TLS_PAIR_BAD_CERT, fx.a_key_pem,
                    "no PEM certificate");
    expect_bad_pair(fx.a_chain, fx.a_chain, TLS_PAIR_BAD_KEY, fx.a_chain, "no PEM private key");
    const char *junk = tmp_file("junk.pem");
    write_text(junk, "hello, I am not a certificate\n");
    expect_bad_pair(junk, fx.a_key_pem, TLS_PAIR_BAD_CERT, junk, "no PEM certificate");
    expect_bad_pair(fx.a_chain, junk, TLS_PAIR_BAD_KEY, junk, "no PEM private key");
    /* A chain with a damaged second certificate. */
    const char *bad_chain = tmp_file("bad-chain.pem");
    write_text(bad_chain, "");
    FILE *f = fopen(bad_chain, "w");
    PEM_write_X509(f, fx.a);
    fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
    fclose(f);
    expect_bad_pair(bad_chain, fx.a_key_pem, TLS_PAIR_BAD_CERT, bad_chain, "chain");
}
END_TEST

START_TEST(encrypted_key_refused_without_a_prompt)
{
    const char *enc = tmp_file("enc.key");
    write_key(enc, fx.a_key, "secret-passphrase");
    /* stdin is not a terminal here either way; the point is the message. */
    expect_bad_pair(fx.a_chain, enc, TLS_PAIR_BAD_KEY, enc, "encrypted");
}
END_TEST

/* ---- the master's config check ---- */

START_TEST(config_check_off_leaves_everything_empty)
{
    struct config cfg;
    config_defaults(&cfg);
    snprintf(cfg.tls_fingerprint, sizeof(cfg.tls_fingerprint), "stale");
    struct tls_pair p;
    char err[512] = "";
    ck_assert_int_eq(tls_config_check(&cfg, &p, err, sizeof(err)), 0);
    ck_assert_str_eq(cfg.tls_fingerprint, "");
    ck_assert_ptr_null(p.cert_pem);
}
END_TEST

START_TEST(config_check_sets_the_fingerprint)
{
    char text[2048];
    snprintf(text, sizeof(text), "tls_cert_file: \"%s\"\ntls_key_file: \"%s\"\n", fx.a_chain,
             fx.a_key_pem);
    const char *path = tmp_file("good.yaml");
    write_text(path, text);
    struct config cfg;
    char err[1024] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    struct tls_pair p;
    ck_assert_msg(tls_config_check(&cfg, &p, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.tls_fingerprint, p.fingerprint);
    ck_assert_uint_eq(strlen(cfg.tls_fingerprint), 64);
    tls_pair_free(&p);
}
END_TEST

START_TEST(config_check_names_file_line_and_key)
{
    char text[2048];
    snprintf(text, sizeof(text), "port: 9000\ntls_cert_file: \"%s\"\n\ntls_key_file: \"%s\"\n",
             fx.a_chain, fx.stray_pem);
    const char *path = tmp_file("mismatch.yaml");
    write_text(path, text);
    struct config cfg;
    char err[1024] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    struct tls_pair p;
    ck_assert_int_lt(tls_config_check(&cfg, &p, err, sizeof(err)), 0);
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s:4: key 'tls_key_file': %s: does not match", path,
             fx.stray_pem);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "\"%s\" vs \"%s\"", err, prefix);
    ck_assert_str_eq(cfg.tls_fingerprint, "");
    ck_assert_ptr_null(p.key_pem);

    snprintf(text, sizeof(text), "tls_cert_file: \"%s\"\ntls_key_file: \"%s\"\n",
             tmp_file("gone.pem"), fx.a_key_pem);
    write_text(path, text);
    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_int_lt(tls_config_check(&cfg, &p, err, sizeof(err)), 0);
    snprintf(prefix, sizeof(prefix), "%s:1: key 'tls_cert_file': %s: cannot read", path,
             tmp_file("gone.pem"));
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "\"%s\" vs \"%s\"", err, prefix);
}
END_TEST

/* ---- server contexts in a real (in-memory) handshake ---- */

struct client_opts {
    int max_version;          /* 0: any */
    const char *alpn;         /* wire format, NULL: none */
    unsigned alpn_len;
    const char *sni;          /* NULL: none */
};

struct outcome {
    int ok;
    int version;
    char alpn[32];
    char sni[64];
    char subject_cn[64];
    int chain_len;
    int verify_result;
};

/* Move whatever `from` wrote to `to`'s input. */
static void shuttle(BIO *from, BIO *to)
{
    char buf[4096];
    int n;
    while ((n = BIO_read(from, buf, sizeof(buf))) > 0)
        ck_assert_int_eq(BIO_write(to, buf, n), n);
}

static struct outcome handshake(SSL_CTX *server_ctx, const struct client_opts *o)
{
    struct outcome out = {0};
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(cctx);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), fx.root);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL); /* check the result ourselves */
    if (o->max_version)
        SSL_CTX_set_max_proto_version(cctx, o->max_version);
    if (o->alpn)
        SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)o->alpn, o->alpn_len);
    SSL *c = SSL_new(cctx), *s = SSL_new(server_ctx);
    BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
    BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(c_in, -1);
    BIO_set_mem_eof_return(s_in, -1);
    SSL_set_bio(c, c_in, c_out);
    SSL_set_bio(s, s_in, s_out);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    if (o->sni)
        SSL_set_tlsext_host_name(c, o->sni);
    int cdone = 0, sdone = 0, failed = 0;
    for (int round = 0; round < 20 && !(cdone && sdone) && !failed; round++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                failed = 1;
        }
        shuttle(c_out, s_in);
        if (!sdone) {
            int r = SSL_do_handshake(s);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                failed = 1;
        }
        shuttle(s_out, c_in);
    }
    ERR_clear_error();
    out.ok = cdone && sdone && !failed;
    if (out.ok) {
        out.version = SSL_version(c);
        const unsigned char *p = NULL;
        unsigned len = 0;
        SSL_get0_alpn_selected(c, &p, &len);
        snprintf(out.alpn, sizeof(out.alpn), "%.*s", (int)len, p ? (const char *)p : "");
        const char *sni = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
        snprintf(out.sni, sizeof(out.sni), "%s", sni ? sni : "");
        X509 *peer = SSL_get1_peer_certificate(c);
        if (peer) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
                                      out.subject_cn, sizeof(out.subject_cn));
            X509_free(peer);
        }
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(c);
        out.chain_len = chain ? sk_X509_num(chain) : 0;
        out.verify_result = (int)SSL_get_verify_result(c);
    }
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
    return out;
}

static SSL_CTX *server_ctx(const char *cert, const char *key, const char *min_version)
{
    struct tls_pair p;
    char err[1024] = "";
    ck_assert_msg(tls_pair_load(cert, key, &p, err, sizeof(err)) == TLS_PAIR_OK, "%s", err);
    SSL_CTX *ctx = tls_server_ctx_new(&p, min_version, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "%s", err);
    tls_pair_free(&p);
    return ctx;
}

START_TEST(server_serves_the_chain_and_verifies)
{
    SSL_CTX *ctx = server_ctx(fx.a_chain, fx.a_key_pem, "1.2");
    struct client_opts o = {.sni = "websocket.vitalstream.com"};
    struct outcome r = handshake(ctx, &o);
    ck_assert(r.ok);
    ck_assert_int_eq(r.version, TLS1_3_VERSION);
    ck_assert_str_eq(r.subject_cn, "websocket.vitalstream.com");
    ck_assert_int_eq(r.chain_len, 2); /* leaf + intermediate */
    ck_assert_int_eq(r.verify_result, X509_V_OK);
    ck_assert_str_eq(r.sni, "websocket.vitalstream.com"); /* SNI accepted */
    /* Any other name is accepted too: one certificate for every name. */
    o.sni = "other.example";
    r = handshake(ctx, &o);
    ck_assert(r.ok);
    ck_assert_str_eq(r.sni, "other.example");
    SSL_CTX_free(ctx);
}
END_TEST

START_TEST(min_version_12_and_13)
{
    SSL_CTX *ctx12 = server_ctx(fx.a_chain, fx.a_key_pem, "1.2");
    SSL_CTX *ctx13 = server_ctx(fx.a_chain, fx.a_key_pem, "1.3");
    ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx12), TLS1_2_VERSION);
    ck_assert_int_eq(SSL_CTX_get_min_proto_version(ctx13), TLS1_3_VERSION);
    struct client_opts only12 = {.max_version = TLS1_2_VERSION};
    struct outcome r = handshake(ctx12, &only12);
    ck_assert(r.ok);
    ck_assert_int_eq(r.version, TLS1_2_VERSION);
    r = handshake(ctx13, &only12);
    ck_assert(!r.ok);
    struct client_opts any = {0};
    r = handshake(ctx13, &any);
    ck_assert(r.ok);
    ck_assert_int_eq(r.version, TLS1_3_VERSION);
    SSL_CTX_free(ctx12);
    SSL_CTX_free(ctx13);

    struct tls_pair p;
    char err[512] = "";
    ck_assert_int_eq(tls_pair_load(fx.a_chain, fx.a_key_pem, &p, err, sizeof(err)), TLS_PAIR_OK);
    ck_assert_ptr_null(tls_server_ctx_new(&p, "1.1", err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "1.1"));
    tls_pair_free(&p);
    ck_assert_int_eq(tls_version_value("1.2"), TLS1_2_VERSION);
    ck_assert_int_eq(tls_version_value("1.3"), TLS1_3_VERSION);
    ck_assert_int_eq(tls_version_value("1.0"), 0);
    ck_assert_int_eq(tls_version_value(""), 0);
}
END_TEST

START_TEST(alpn_selects_http11_only)
{
    SSL_CTX *ctx = server_ctx(fx.b_pem, fx.b_key_pem, "1.2");
    struct client_opts o = {.alpn = "\x02h2\x08http/1.1", .alpn_len = 12};
    struct outcome r = handshake(ctx, &o);
    ck_assert(r.ok);
    ck_assert_str_eq(r.alpn, "http/1.1");
    o.alpn = "\x08http/1.1\x02h2";
    r = handshake(ctx, &o);
    ck_assert_str_eq(r.alpn, "http/1.1");
    /* Only h2: no ALPN answer, the handshake still completes. */
    o.alpn = "\x02h2";
    o.alpn_len = 3;
    r = handshake(ctx, &o);
    ck_assert(r.ok);
    ck_assert_str_eq(r.alpn, "");
    /* A name that merely starts like ours is not ours. */
    o.alpn = "\x09http/1.1x";
    o.alpn_len = 10;
    r = handshake(ctx, &o);
    ck_assert(r.ok);
    ck_assert_str_eq(r.alpn, "");
    struct client_opts none = {0};
    r = handshake(ctx, &none);
    ck_assert(r.ok);
    ck_assert_str_eq(r.alpn, "");
    SSL_CTX_free(ctx);
}
END_TEST

START_TEST(no_tickets_no_session_cache)
{
    SSL_CTX *ctx = server_ctx(fx.b_pem, fx.b_key_pem, "1.2");
    ck_assert_uint_eq(SSL_CTX_get_num_tickets(ctx), 0);
    ck_assert_int_eq(SSL_CTX_get_session_cache_mode(ctx), SSL_SESS_CACHE_OFF);
    ck_assert(SSL_CTX_get_options(ctx) & SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_free(ctx);
}
END_TEST

START_TEST(error_reason_reads_and_clears_the_queue)
{
    char buf[64];
    ERR_clear_error();
    ck_assert_str_eq(tls_error_reason(buf, sizeof(buf), "fallback"), "fallback");
    BIO *b = BIO_new_mem_buf("not pem", -1);
    ck_assert_ptr_null(PEM_read_bio_X509(b, NULL, NULL, NULL));
    BIO_free(b);
    ck_assert_str_eq(tls_error_reason(buf, sizeof(buf), "fallback"), "no start line");
    ck_assert_int_eq(ERR_peek_error(), 0);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = unit_tcase(s, "tls");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_checked_fixture(tc, make_fixture, free_fixture);
    tcase_add_test(tc, good_pair_loads_with_fingerprint);
    tcase_add_test(tc, fingerprint_covers_the_key_file_too);
    tcase_add_test(tc, mismatched_key_names_the_key_file);
    tcase_add_test(tc, unreadable_files_are_named);
    tcase_add_test(tc, swapped_or_wrong_contents_refused);
    tcase_add_test(tc, encrypted_key_refused_without_a_prompt);
    tcase_add_test(tc, config_check_off_leaves_everything_empty);
    tcase_add_test(tc, config_check_sets_the_fingerprint);
    tcase_add_test(tc, config_check_names_file_line_and_key);
    tcase_add_test(tc, server_serves_the_chain_and_verifies);
    tcase_add_test(tc, min_version_12_and_13);
    tcase_add_test(tc, alpn_selects_http11_only);
    tcase_add_test(tc, no_tickets_no_session_cache);
    tcase_add_test(tc, error_reason_reads_and_clears_the_queue);
    return s;
}

int main(void)
{
    return unit_run(tls_suite());
}
