/*
 * testcert — keys and certificates for the TLS suites, made with the
 * OpenSSL API (P-256 keys, SHA-256 signatures), valid from a minute ago for
 * a day. Header-only (static inline), like fakequeue.h.
 *
 *   testcert_key()                           a new P-256 key
 *   testcert_cert(cn, key, issuer, ikey, ca) a certificate for cn; self-
 *                                            signed when issuer is NULL
 */
#ifndef WSGATE_TEST_TESTCERT_H
#define WSGATE_TEST_TESTCERT_H

#include <check.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

static inline EVP_PKEY *testcert_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    ck_assert_ptr_nonnull(k);
    return k;
}

/* A certificate for `cn` with `key`, signed by issuer/issuer_key (self-
 * signed when issuer is NULL); `ca` marks it as a CA. */
static inline X509 *testcert_cert(const char *cn, EVP_PKEY *key, X509 *issuer,
                                  EVP_PKEY *issuer_key, int ca)
{
    X509 *x = X509_new();
    ck_assert_ptr_nonnull(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(rand() & 0x7fffffff) + 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, key);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                                              ca ? "critical,CA:TRUE" : "CA:FALSE");
    ck_assert_ptr_nonnull(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (!ca) {
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                                  "DNS:websocket.vitalstream.com,IP:127.0.0.1");
        ck_assert_ptr_nonnull(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    ck_assert_int_gt(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()), 0);
    return x;
}

#endif
