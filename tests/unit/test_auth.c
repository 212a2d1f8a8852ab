/*
 * Unit suite for shared/auth.c: stream patterns (exact, prefix, what is not
 * a pattern), grants per action, tokens signed here with HS256 (HMAC),
 * RS256 and ES256 (keys generated at test time with OpenSSL's EVP API, ES256
 * signatures converted from DER to r||s), every refusal (missing, malformed,
 * alg none, alg not listed, alg confusion with an RSA public key as HMAC
 * secret, bad signature, exp missing/passed, nbf, iss, aud, claim shapes,
 * duplicate members, crit), subjects, loading keys (HMAC length, trailing
 * newline, RSA size, EC curve, private keys, key/algorithm mismatch), the
 * shared key store, and arbitrary bytes never crashing the checker.
 */
#include <check.h>
#include <errno.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "unit.h"

#define NOW_MS 1700000000000LL /* a fixed "now": 2023-11-14 */
#define NOW_S (NOW_MS / 1000)

static const char secret[] = "0123456789abcdef0123456789abcdef-unit-test-secret";

/* ---- building tokens by hand ---- */

static void b64url(const unsigned char *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[n++] = tbl[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[n++] = tbl[(acc << (6 - bits)) & 63];
    out[n] = '\0';
}

/* header.payload, both raw JSON text (so tests can write duplicates). */
static char *signing_input(const char *header, const char *payload)
{
    char *out = malloc(strlen(header) * 2 + strlen(payload) * 2 + 8);
    b64url((const unsigned char *)header, strlen(header), out);
    strcat(out, ".");
    b64url((const unsigned char *)payload, strlen(payload), out + strlen(out));
    return out;
}

static char *append_sig(char *input, const unsigned char *sig, size_t siglen)
{
    char *out = malloc(strlen(input) + siglen * 2 + 8);
    sprintf(out, "%s.", input);
    b64url(sig, siglen, out + strlen(out));
    free(input);
    return out;
}

static char *hs256_with(const char *header, const char *payload, const void *key, size_t keylen)
{
    char *in = signing_input(header, payload);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)in, strlen(in), mac, &maclen);
    return append_sig(in, mac, maclen);
}

static char *hs256(const char *payload)
{
    return hs256_with("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, secret, strlen(secret));
}

/* RS256 / ES256 with an EVP private key. */
static char *pk_sign(const char *alg, EVP_PKEY *pk, const char *payload)
{
    char header[64];
    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    char *in = signing_input(header, payload);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ck_assert_int_eq(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk), 1);
    size_t siglen = 0;
    ck_assert_int_eq(EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)in, strlen(in)), 1);
    unsigned char *sig = malloc(siglen);
    ck_assert_int_eq(EVP_DigestSign(md, sig, &siglen, (const unsigned char *)in, strlen(in)), 1);
    EVP_MD_CTX_free(md);
    if (strcmp(alg, "ES256") == 0) {
        /* JWS wants r||s (RFC 7518 3.4), OpenSSL gives DER. */
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
        ck_assert_ptr_nonnull(es);
        unsigned char raw[64];
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        free(sig);
        return append_sig(in, raw, 64);
    }
    char *out = append_sig(in, sig, siglen);
    free(sig);
    return out;
}

/* ---- keys ---- */

static char tmpdir[256];

static void tmp_setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/wsgate-unit-auth-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(tmpdir))
        abort();
}

static void tmp_teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

static const char *write_file(const char *name, const void *data, size_t len)
{
    static char path[400];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    fclose(f);
    return path;
}

/* Write pk's public half as PEM; returns the path. */
static const char *write_public(const char *name, EVP_PKEY *pk)
{
    BIO *b = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_PUBKEY(b, pk), 1);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    const char *path = write_file(name, data, (size_t)n);
    BIO_free(b);
    return path;
}

static struct auth_key *load_key(const char *path, unsigned algs)
{
    struct auth_key *k = calloc(1, sizeof(*k));
    char err[256];
    int r = auth_key_load(path, algs, k, err, sizeof(err));
    ck_assert_msg(r == 0, "auth_key_load: %s", err);
    return k;
}

static struct auth_key *hmac_key(void)
{
    struct auth_key *k = calloc(1, sizeof(*k));
    k->kind = AUTH_KEY_HMAC;
    k->len = (uint32_t)strlen(secret);
    memcpy(k->bytes, secret, k->len);
    return k;
}

static enum auth_status check(const struct auth_key *key, unsigned algs, const char *token,
                              struct auth_grant **g)
{
    struct auth_policy p = {.algorithms = algs, .key = key};
    return auth_check_token(&p, token, strlen(token), NOW_MS, g);
}

static enum auth_status check_hs(const char *payload)
{
    struct auth_key *k = hmac_key();
    char *t = hs256(payload);
    struct auth_grant *g = NULL;
    enum auth_status st = check(k, AUTH_ALG_HS256, t, &g);
    ck_assert(st == AUTH_OK ? g != NULL : g == NULL);
    auth_grant_free(g);
    free(t);
    free(k);
    return st;
}

/* ---- patterns ---- */

START_TEST(patterns_valid_and_invalid)
{
    const char *good[] = {"patient/4711/ecg", "patient/4711/*", "a", "a/*", "x.y:z_w-v/*"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        ck_assert_msg(auth_pattern_valid(good[i], strlen(good[i])), "%s", good[i]);
    const char *bad[] = {"", "*", "/*", "patient/*/ecg", "patient/4711*", "patient 4711", "p/*/*",
                         "p/**", "ä", "patient/4711/*x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(!auth_pattern_valid(bad[i], strlen(bad[i])), "%s", bad[i]);
    char longp[140];
    memset(longp, 'a', 128);
    longp[128] = '\0';
    ck_assert(auth_pattern_valid(longp, 128));
    longp[128] = 'a';
    ck_assert(!auth_pattern_valid(longp, 129));
}
END_TEST

START_TEST(patterns_match_exact_and_prefix)
{
#define M(p, n) auth_pattern_match(p, strlen(p), n, strlen(n))
    ck_assert(M("patient/4711/ecg", "patient/4711/ecg"));
    ck_assert(!M("patient/4711/ecg", "patient/4711/ecg2"));
    ck_assert(!M("patient/4711/ecg", "patient/4711/ec"));
    ck_assert(M("patient/4711/*", "patient/4711/ecg"));
    ck_assert(M("patient/4711/*", "patient/4711/a/b/c"));
    ck_assert(M("patient/4711/*", "patient/4711/"));
    ck_assert(!M("patient/4711/*", "patient/4711"));
    ck_assert(!M("patient/4711/*", "patient/47110/ecg"));
    ck_assert(!M("patient/4711/*", "patient/4712/ecg"));
    ck_assert(!M("patient/4711/*", "Patient/4711/ecg"));
#undef M
}
END_TEST

START_TEST(grants_are_per_action)
{
    struct auth_key *k = hmac_key();
    char *t = hs256("{\"exp\":1800000000,\"sub\":\"dr-a\",\"streams\":{\"subscribe\":"
                    "[\"patient/1/*\",\"ward/3/alerts\"],\"publish\":[\"patient/1/ecg\"]}}");
    struct auth_grant *g = NULL;
    ck_assert_int_eq(check(k, AUTH_ALG_HS256, t, &g), AUTH_OK);
    ck_assert_int_eq(g->exp, 1800000000);
#define A(a, n) auth_stream_allowed(g, a, n, strlen(n))
    ck_assert(A(AUTH_SUBSCRIBE, "patient/1/ecg"));
    ck_assert(A(AUTH_SUBSCRIBE, "patient/1/spo2"));
    ck_assert(A(AUTH_SUBSCRIBE, "ward/3/alerts"));
    ck_assert(!A(AUTH_SUBSCRIBE, "ward/3/alerts2"));
    ck_assert(!A(AUTH_SUBSCRIBE, "patient/2/ecg"));
    ck_assert(A(AUTH_PUBLISH, "patient/1/ecg"));
    ck_assert(!A(AUTH_PUBLISH, "patient/1/spo2"));
    ck_assert(!A(AUTH_PUBLISH, "ward/3/alerts"));
#undef A
    ck_assert(!auth_stream_allowed(NULL, AUTH_SUBSCRIBE, "a", 1));
    auth_grant_free(g);
    free(t);
    free(k);
}
END_TEST

START_TEST(no_streams_claim_grants_nothing)
{
    struct auth_key *k = hmac_key();
    const char *payloads[] = {"{\"exp\":1800000000}", "{\"exp\":1800000000,\"streams\":{}}",
                              "{\"exp\":1800000000,\"streams\":{\"subscribe\":[]}}",
                              "{\"exp\":1800000000,\"streams\":{\"publish\":[\"a\"],\"x\":1}}"};
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        char *t = hs256(payloads[i]);
        struct auth_grant *g = NULL;
        ck_assert_int_eq(check(k, AUTH_ALG_HS256, t, &g), AUTH_OK);
        ck_assert(!auth_stream_allowed(g, AUTH_SUBSCRIBE, "a", 1));
        ck_assert_int_eq(g->count[AUTH_SUBSCRIBE], 0);
        auth_grant_free(g);
        free(t);
    }
    free(k);
}
END_TEST

/* ---- claims ---- */

START_TEST(exp_required_and_checked)
{
    ck_assert_int_eq(check_hs("{\"sub\":\"a\"}"), AUTH_NO_EXP);
    ck_assert_int_eq(check_hs("{\"exp\":\"1800000000\"}"), AUTH_NO_EXP);
    ck_assert_int_eq(check_hs("{\"exp\":null}"), AUTH_NO_EXP);
    char p[64];
    snprintf(p, sizeof(p), "{\"exp\":%lld}", (long long)NOW_S);
    ck_assert_int_eq(check_hs(p), AUTH_EXPIRED); /* now == exp: expired */
    snprintf(p, sizeof(p), "{\"exp\":%lld}", (long long)NOW_S - 1);
    ck_assert_int_eq(check_hs(p), AUTH_EXPIRED);
    snprintf(p, sizeof(p), "{\"exp\":%lld}", (long long)NOW_S + 1);
    ck_assert_int_eq(check_hs(p), AUTH_OK);
    snprintf(p, sizeof(p), "{\"exp\":%lld.5}", (long long)NOW_S + 1);
    ck_assert_int_eq(check_hs(p), AUTH_OK); /* NumericDate may be fractional */
    ck_assert_int_eq(check_hs("{\"exp\":-5}"), AUTH_EXPIRED);
    ck_assert_int_eq(check_hs("{\"exp\":1e300}"), AUTH_OK); /* clamped, not overflowed */
}
END_TEST

START_TEST(grant_expiry_follows_exp)
{
    struct auth_key *k = hmac_key();
    char p[64];
    snprintf(p, sizeof(p), "{\"exp\":%lld}", (long long)NOW_S + 10);
    char *t = hs256(p);
    struct auth_grant *g = NULL;
    ck_assert_int_eq(check(k, AUTH_ALG_HS256, t, &g), AUTH_OK);
    ck_assert(!auth_grant_expired(g, NOW_MS));
    ck_assert(!auth_grant_expired(g, (NOW_S + 10) * 1000 - 1));
    ck_assert(auth_grant_expired(g, (NOW_S + 10) * 1000));
    auth_grant_free(g);
    free(t);
    free(k);
}
END_TEST

START_TEST(nbf_checked_when_present)
{
    char p[96];
    snprintf(p, sizeof(p), "{\"exp\":1800000000,\"nbf\":%lld}", (long long)NOW_S + 60);
    ck_assert_int_eq(check_hs(p), AUTH_NOT_YET_VALID);
    snprintf(p, sizeof(p), "{\"exp\":1800000000,\"nbf\":%lld}", (long long)NOW_S - 60);
    ck_assert_int_eq(check_hs(p), AUTH_OK);
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"nbf\":\"soon\"}"), AUTH_BAD_CLAIMS);
}
END_TEST

static enum auth_status check_iss_aud(const char *issuer, const char *audience, const char *payload)
{
    struct auth_key *k = hmac_key();
    char *t = hs256(payload);
    struct auth_policy p = {.algorithms = AUTH_ALG_HS256, .key = k, .issuer = issuer,
                            .audience = audience};
    struct auth_grant *g = NULL;
    enum auth_status st = auth_check_token(&p, t, strlen(t), NOW_MS, &g);
    auth_grant_free(g);
    free(t);
    free(k);
    return st;
}

START_TEST(issuer_checked_when_configured)
{
    const char *iss = "https://auth.vitalstream.example";
    ck_assert_int_eq(check_iss_aud(iss, NULL, "{\"exp\":1800000000,\"iss\":\"https://auth.vitalstream.example\"}"),
                     AUTH_OK);
    ck_assert_int_eq(check_iss_aud(iss, NULL, "{\"exp\":1800000000,\"iss\":\"https://evil.example\"}"),
                     AUTH_WRONG_ISSUER);
    ck_assert_int_eq(check_iss_aud(iss, NULL, "{\"exp\":1800000000}"), AUTH_WRONG_ISSUER);
    ck_assert_int_eq(check_iss_aud(iss, NULL, "{\"exp\":1800000000,\"iss\":[\"https://auth.vitalstream.example\"]}"),
                     AUTH_WRONG_ISSUER);
    /* a prefix is not the issuer */
    ck_assert_int_eq(check_iss_aud(iss, NULL, "{\"exp\":1800000000,\"iss\":\"https://auth.vitalstream.example.evil\"}"),
                     AUTH_WRONG_ISSUER);
    /* not configured: anything goes */
    ck_assert_int_eq(check_iss_aud("", NULL, "{\"exp\":1800000000,\"iss\":\"x\"}"), AUTH_OK);
    ck_assert_int_eq(check_iss_aud(NULL, NULL, "{\"exp\":1800000000}"), AUTH_OK);
}
END_TEST

START_TEST(audience_string_or_array)
{
    const char *aud = "wsgate";
    ck_assert_int_eq(check_iss_aud(NULL, aud, "{\"exp\":1800000000,\"aud\":\"wsgate\"}"), AUTH_OK);
    ck_assert_int_eq(check_iss_aud(NULL, aud, "{\"exp\":1800000000,\"aud\":[\"api\",\"wsgate\"]}"),
                     AUTH_OK);
    ck_assert_int_eq(check_iss_aud(NULL, aud, "{\"exp\":1800000000,\"aud\":[\"api\"]}"),
                     AUTH_WRONG_AUDIENCE);
    ck_assert_int_eq(check_iss_aud(NULL, aud, "{\"exp\":1800000000,\"aud\":\"wsgate2\"}"),
                     AUTH_WRONG_AUDIENCE);
    ck_assert_int_eq(check_iss_aud(NULL, aud, "{\"exp\":1800000000}"), AUTH_WRONG_AUDIENCE);
    ck_assert_int_eq(check_iss_aud(NULL, "", "{\"exp\":1800000000,\"aud\":\"x\"}"), AUTH_OK);
}
END_TEST

START_TEST(claim_shapes_refused)
{
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"sub\":42}"), AUTH_BAD_CLAIMS);
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"streams\":[\"a\"]}"), AUTH_BAD_CLAIMS);
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"streams\":{\"subscribe\":\"a\"}}"),
                     AUTH_BAD_CLAIMS);
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"streams\":{\"subscribe\":[1]}}"),
                     AUTH_BAD_CLAIMS);
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"streams\":{\"publish\":[\"*\"]}}"),
                     AUTH_BAD_CLAIMS);
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"streams\":{\"subscribe\":[\"a/*/b\"]}}"),
                     AUTH_BAD_CLAIMS);
    /* more than AUTH_PATTERNS_MAX patterns */
    size_t cap = 16 + (AUTH_PATTERNS_MAX + 1) * 6 + 64;
    char *p = malloc(cap);
    strcpy(p, "{\"exp\":1800000000,\"streams\":{\"subscribe\":[");
    for (int i = 0; i <= AUTH_PATTERNS_MAX; i++)
        strcat(p, i ? ",\"s\"" : "\"s\"");
    strcat(p, "]}}");
    ck_assert_int_eq(check_hs(p), AUTH_BAD_CLAIMS);
    free(p);
    /* a sub longer than AUTH_SUB_MAX */
    char big[AUTH_SUB_MAX + 64];
    int n = snprintf(big, sizeof(big), "{\"exp\":1800000000,\"sub\":\"");
    memset(big + n, 'x', AUTH_SUB_MAX + 1);
    strcpy(big + n + AUTH_SUB_MAX + 1, "\"}");
    ck_assert_int_eq(check_hs(big), AUTH_BAD_CLAIMS);
}
END_TEST

START_TEST(duplicate_members_refused)
{
    /* A second sub or exp is how one parser is made to see another token
     * than the next one: refused outright. */
    ck_assert_int_eq(check_hs("{\"exp\":1800000000,\"sub\":\"a\",\"sub\":\"b\"}"), AUTH_MALFORMED);
    ck_assert_int_eq(check_hs("{\"exp\":1,\"exp\":1800000000}"), AUTH_MALFORMED);
    struct auth_key *k = hmac_key();
    char *t = hs256_with("{\"alg\":\"none\",\"alg\":\"HS256\"}", "{\"exp\":1800000000}", secret,
                         strlen(secret));
    struct auth_grant *g = NULL;
    ck_assert_int_eq(check(k, AUTH_ALG_HS256, t, &g), AUTH_MALFORMED);
    free(t);
    free(k);
}
END_TEST

START_TEST(subjects_compared_exactly)
{
    struct auth_key *k = hmac_key();
    const char *payloads[] = {"{\"exp\":1800000000,\"sub\":\"dr-a\"}",
                              "{\"exp\":1800000000,\"sub\":\"dr-a\",\"streams\":{}}",
                              "{\"exp\":1800000000,\"sub\":\"dr-b\"}",
                              "{\"exp\":1800000000,\"sub\":\"dr-a \"}",
                              "{\"exp\":1800000000}",
                              "{\"exp\":1900000000}",
                              "{\"exp\":1800000000,\"sub\":\"\"}"};
    struct auth_grant *g[7];
    for (int i = 0; i < 7; i++) {
        char *t = hs256(payloads[i]);
        ck_assert_int_eq(check(k, AUTH_ALG_HS256, t, &g[i]), AUTH_OK);
        free(t);
    }
    ck_assert(auth_same_subject(g[0], g[1]));
    ck_assert(!auth_same_subject(g[0], g[2]));
    ck_assert(!auth_same_subject(g[0], g[3]));
    ck_assert(!auth_same_subject(g[0], g[4]));
    ck_assert(!auth_same_subject(g[4], g[0]));
    ck_assert(auth_same_subject(g[4], g[5])); /* both without sub */
    ck_assert(!auth_same_subject(g[6], g[4])); /* "" is a subject; none is not */
    for (int i = 0; i < 7; i++)
        auth_grant_free(g[i]);
    free(k);
}
END_TEST

/* ---- algorithms and signatures ---- */

START_TEST(hs256_wrong_secret_fails)
{
    struct auth_key *k = hmac_key();
    const char other[] = "another-secret-of-enough-length-0123456789";
    char *t = hs256_with("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", "{\"exp\":1800000000}", other,
                         strlen(other));
    struct auth_grant *g = NULL;
    ck_assert_int_eq(check(k, AUTH_ALG_HS256, t, &g), AUTH_BAD_SIGNATURE);
    ck_assert_ptr_null(g);
    free(t);
    /* a flipped payload byte under the right secret */
    t = hs256("{\"exp\":1800000000,\"sub\":\"a\"}");
    char *dot = strchr(t, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    ck_assert_int_ne(check(k, AUTH_ALG_HS256, t, &g), AUTH_OK);
    free(t);
    /* no signature at all */
    char *in = signing_input("{\"alg\":\"HS256\"}", "{\"exp\":1800000000}");
    char *nosig = malloc(strlen(in) + 2);
    sprintf(nosig, "%s.", in);
    ck_assert_int_eq(check(k, AUTH_ALG_HS256, nosig, &g), AUTH_BAD_SIGNATURE);
    free(in);
    free(nosig);
    free(k);
}
END_TEST

START_TEST(alg_none_refused)
{
    struct auth_key *k = hmac_key();
    char *in = signing_input("{\"alg\":\"none\"}", "{\"exp\":1800000000}");
    char *t = malloc(strlen(in) + 2);
    sprintf(t, "%s.", in);
    struct auth_grant *g = NULL;
    ck_assert_int_eq(check(k, AUTH_ALG_HS256 | AUTH_ALG_RS256 | AUTH_ALG_ES256, t, &g),
                     AUTH_ALG_REFUSED);
    free(in);
    free(t);
    const char *headers[] = {"{\"alg\":\"HS512\"}", "{\"alg\":\"hs256\"}", "{\"typ\":\"JWT\"}",
                             "{\"alg\":256}", "{\"alg\":\"HS256\",\"crit\":[\"exp\"]}"};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        t = hs256_with(headers[i], "{\"exp\":1800000000}", secret, strlen(secret));
        enum auth_status st = check(k, AUTH_ALG_HS256, t, &g);
        ck_assert_msg(st == AUTH_ALG_REFUSED || st == AUTH_MALFORMED, "%s: %d", headers[i], st);
        ck_assert_ptr_null(g);
        free(t);
    }
    free(k);
}
END_TEST

START_TEST(rs256_and_es256_verify)
{
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ck_assert_ptr_nonnull(rsa);
    ck_assert_ptr_nonnull(ec);
    struct auth_key *krsa = load_key(write_public("rsa.pub", rsa), AUTH_ALG_RS256);
    struct auth_key *kec = load_key(write_public("ec.pub", ec), AUTH_ALG_ES256);
    ck_assert_int_eq(krsa->kind, AUTH_KEY_RSA);
    ck_assert_int_eq(kec->kind, AUTH_KEY_EC);
    const char *payload = "{\"exp\":1800000000,\"sub\":\"dev-9\",\"streams\":{\"publish\":[\"patient/9/ecg\"]}}";
    char *trs = pk_sign("RS256", rsa, payload);
    char *tes = pk_sign("ES256", ec, payload);
    struct auth_grant *g = NULL;
    unsigned all = AUTH_ALG_HS256 | AUTH_ALG_RS256 | AUTH_ALG_ES256;
    ck_assert_int_eq(check(krsa, all, trs, &g), AUTH_OK);
    ck_assert(auth_stream_allowed(g, AUTH_PUBLISH, "patient/9/ecg", 13));
    auth_grant_free(g);
    ck_assert_int_eq(check(kec, all, tes, &g), AUTH_OK);
    auth_grant_free(g);
    /* the algorithm must be listed */
    ck_assert_int_eq(check(krsa, AUTH_ALG_HS256 | AUTH_ALG_ES256, trs, &g), AUTH_ALG_REFUSED);
    ck_assert_int_eq(check(kec, AUTH_ALG_RS256, tes, &g), AUTH_ALG_REFUSED);
    /* and be the key's: an ES256 token against the RSA key */
    ck_assert_int_eq(check(krsa, all, tes, &g), AUTH_ALG_REFUSED);
    /* a signature by another key of the right kind */
    EVP_PKEY *ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *tes2 = pk_sign("ES256", ec2, payload);
    ck_assert_int_eq(check(kec, all, tes2, &g), AUTH_BAD_SIGNATURE);
    /* a truncated ES256 signature */
    tes[strlen(tes) - 4] = '\0';
    ck_assert_int_ne(check(kec, all, tes, &g), AUTH_OK);
    ck_assert_ptr_null(g);
    free(trs);
    free(tes);
    free(tes2);
    free(krsa);
    free(kec);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(ec2);
}
END_TEST

START_TEST(alg_confusion_refused)
{
    /* libjwt alone verifies an HS256 token with whatever bytes it is
     * given as the key: an attacker who knows the RSA public key (it is
     * public) signs HS256 with the PEM text as the HMAC secret. */
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    struct auth_key *krsa = load_key(write_public("rsa.pub", rsa), AUTH_ALG_RS256);
    char *t = hs256_with("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                         "{\"exp\":1800000000,\"streams\":{\"subscribe\":[\"patient/1/*\"]}}",
                         krsa->bytes, krsa->len);
    struct auth_grant *g = NULL;
    ck_assert_int_eq(check(krsa, AUTH_ALG_HS256 | AUTH_ALG_RS256, t, &g), AUTH_ALG_REFUSED);
    ck_assert_ptr_null(g);
    free(t);
    free(krsa);
    EVP_PKEY_free(rsa);
}
END_TEST

START_TEST(malformed_tokens)
{
    struct auth_key *k = hmac_key();
    char *good = hs256("{\"exp\":1800000000}");
    struct auth_grant *g = NULL;
    struct auth_policy p = {.algorithms = AUTH_ALG_HS256, .key = k};
    ck_assert_int_eq(auth_check_token(&p, good, 0, NOW_MS, &g), AUTH_MISSING);
    const char *bad[] = {"abc", "a.b", "a.b.c.d", ".b.c", "a..c", "!!!.b.c", "a b.c.d", "a.b.c ",
                         "eyJhbGciOiJIUzI1NiJ9", "e.e.e"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_int_eq(auth_check_token(&p, bad[i], strlen(bad[i]), NOW_MS, &g), AUTH_MALFORMED);
        ck_assert_ptr_null(g);
    }
    /* a NUL inside: length says more than strlen */
    size_t n = strlen(good);
    char *withnul = malloc(n + 4);
    memcpy(withnul, good, n);
    memcpy(withnul + n, "\0xx", 3);
    ck_assert_int_eq(auth_check_token(&p, withnul, n + 3, NOW_MS, &g), AUTH_MALFORMED);
    /* the good one, not NUL-terminated: only len bytes count */
    memcpy(withnul, good, n);
    withnul[n] = 'Q';
    ck_assert_int_eq(auth_check_token(&p, withnul, n, NOW_MS, &g), AUTH_OK);
    auth_grant_free(g);
    free(withnul);
    /* payload that is JSON but not an object, header not JSON */
    char *t = hs256_with("{\"alg\":\"HS256\"}", "[1,2]", secret, strlen(secret));
    ck_assert_int_eq(auth_check_token(&p, t, strlen(t), NOW_MS, &g), AUTH_MALFORMED);
    free(t);
    t = hs256_with("not json", "{\"exp\":1800000000}", secret, strlen(secret));
    ck_assert_int_eq(auth_check_token(&p, t, strlen(t), NOW_MS, &g), AUTH_MALFORMED);
    free(t);
    /* too long */
    char *huge = malloc(AUTH_TOKEN_MAX + 2);
    memset(huge, 'a', AUTH_TOKEN_MAX + 1);
    huge[AUTH_TOKEN_MAX + 1] = '\0';
    ck_assert_int_eq(auth_check_token(&p, huge, AUTH_TOKEN_MAX + 1, NOW_MS, &g), AUTH_MALFORMED);
    free(huge);
    /* no key at all */
    struct auth_policy nokey = {.algorithms = AUTH_ALG_HS256, .key = NULL};
    ck_assert_int_eq(auth_check_token(&nokey, good, strlen(good), NOW_MS, &g), AUTH_ALG_REFUSED);
    free(good);
    free(k);
}
END_TEST

START_TEST(arbitrary_bytes_never_crash)
{
    /* A few thousand random and mutated tokens (a fuzz target runs this
     * for real): every answer is a status, every grant freed. */
    struct auth_key *k = hmac_key();
    struct auth_policy p = {.algorithms = AUTH_ALG_HS256, .key = k, .issuer = "i", .audience = "a"};
    char *good = hs256("{\"exp\":1800000000,\"iss\":\"i\",\"aud\":\"a\",\"streams\":{\"subscribe\":[\"x/*\"]}}");
    size_t n = strlen(good);
    unsigned seed = 12345;
    char buf[1024];
    for (int i = 0; i < 3000; i++) {
        size_t len;
        if (i % 2) {
            len = (size_t)rand_r(&seed) % sizeof(buf);
            for (size_t j = 0; j < len; j++)
                buf[j] = (char)rand_r(&seed);
        } else {
            len = n;
            memcpy(buf, good, n);
            for (int m = 0; m < 1 + i % 4; m++)
                buf[(size_t)rand_r(&seed) % n] = "AZaz09-_.=\0/"[rand_r(&seed) % 12];
        }
        struct auth_grant *g = NULL;
        enum auth_status st = auth_check_token(&p, buf, len, NOW_MS, &g);
        ck_assert_int_lt(st, AUTH_STATUS_COUNT);
        ck_assert(st == AUTH_OK ? g != NULL : g == NULL);
        auth_grant_free(g);
    }
    struct auth_grant *g = NULL;
    ck_assert_int_eq(auth_check_token(&p, good, n, NOW_MS, &g), AUTH_OK);
    auth_grant_free(g);
    free(good);
    free(k);
}
END_TEST

START_TEST(status_texts_exist_and_say_no_token)
{
    for (int s = 0; s < AUTH_STATUS_COUNT; s++) {
        const char *t = auth_status_text((enum auth_status)s);
        ck_assert_ptr_nonnull(t);
        ck_assert_int_gt(strlen(t), 5);
        ck_assert_ptr_null(strstr(t, "eyJ")); /* no token text in any message */
    }
    ck_assert_str_eq(auth_status_text(AUTH_EXPIRED), "token expired");
    ck_assert_str_eq(auth_status_text((enum auth_status)999), "unknown");
}
END_TEST

/* ---- keys ---- */

static int load_error(const char *path, unsigned algs, char *err, size_t errlen)
{
    struct auth_key *k = calloc(1, sizeof(*k));
    int r = auth_key_load(path, algs, k, err, errlen);
    if (r < 0) {
        /* nothing of the key is left behind */
        static const struct auth_key zero;
        ck_assert_int_eq(memcmp(k, &zero, sizeof(zero)), 0);
    }
    free(k);
    return r;
}

START_TEST(hmac_secret_loading)
{
    char err[256];
    const char *p = write_file("short", "tooshort\n", 9);
    ck_assert_int_lt(load_error(p, AUTH_ALG_HS256, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "at least 32"));
    /* exactly 32 bytes plus the editor's newline (and a CR) */
    p = write_file("ok", "0123456789abcdef0123456789abcdef\r\n", 34);
    struct auth_key *k = load_key(p, AUTH_ALG_HS256);
    ck_assert_int_eq(k->kind, AUTH_KEY_HMAC);
    ck_assert_uint_eq(k->len, 32);
    ck_assert_int_eq(memcmp(k->bytes, "0123456789abcdef0123456789abcdef", 32), 0);
    free(k);
    /* an HMAC secret while jwt_algorithms has no HS256 */
    ck_assert_int_lt(load_error(p, AUTH_ALG_RS256, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "HS256"));
    ck_assert_ptr_null(strstr(err, "0123456789abcdef")); /* the secret is never in an error */
    /* missing file */
    snprintf(err, sizeof(err), "%s", "");
    ck_assert_int_lt(load_error("/nonexistent/wsgate.key", AUTH_ALG_HS256, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/wsgate.key"));
    /* larger than AUTH_KEY_MAX */
    char *big = malloc(AUTH_KEY_MAX + 10);
    memset(big, 'k', AUTH_KEY_MAX + 10);
    p = write_file("big", big, AUTH_KEY_MAX + 10);
    ck_assert_int_lt(load_error(p, AUTH_ALG_HS256, err, sizeof(err)), 0);
    free(big);
}
END_TEST

START_TEST(pem_key_loading)
{
    char err[256];
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    ck_assert_int_lt(load_error(write_public("rsa1024", small), AUTH_ALG_RS256, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "1024"));
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    ck_assert_int_lt(load_error(write_public("p384", p384), AUTH_ALG_ES256, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "P-256"));
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    /* a private key is refused: the gateway only ever needs the public half */
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, ec, NULL, NULL, 0, NULL, NULL);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    const char *path = write_file("ec.key", data, (size_t)n);
    BIO_free(b);
    ck_assert_int_lt(load_error(path, AUTH_ALG_ES256, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "public"));
    /* an EC key while only RS256 is listed */
    ck_assert_int_lt(load_error(write_public("ec.pub", ec), AUTH_ALG_RS256, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "ES256"));
    /* garbage after a PEM header */
    path = write_file("junk.pem", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", 57);
    ck_assert_int_lt(load_error(path, AUTH_ALG_RS256, err, sizeof(err)), 0);
    EVP_PKEY_free(small);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(ec);
}
END_TEST

START_TEST(keystore_round_trip_across_fork)
{
    struct auth_keystore *ks = auth_keystore_create();
    ck_assert_ptr_nonnull(ks);
    struct auth_key *k = hmac_key();
    struct auth_key *out = calloc(1, sizeof(*out));
    uint64_t g0 = auth_keystore_read(ks, out);
    ck_assert_int_eq(out->kind, AUTH_KEY_NONE);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* a "worker" forked before the publish sees it */
        for (int i = 0; i < 2000; i++) {
            struct auth_key tmp;
            if (auth_keystore_read(ks, &tmp) != g0 && tmp.kind == AUTH_KEY_HMAC &&
                tmp.len == strlen(secret) && memcmp(tmp.bytes, secret, tmp.len) == 0)
                _exit(0);
            usleep(1000);
        }
        _exit(1);
    }
    auth_keystore_publish(ks, k);
    int status = 0;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_uint_gt(auth_keystore_read(ks, out), g0);
    ck_assert_uint_eq(out->len, k->len);
    auth_keystore_publish(ks, NULL);
    auth_keystore_read(ks, out);
    ck_assert_int_eq(out->kind, AUTH_KEY_NONE);
    ck_assert_uint_eq(out->len, 0);
    auth_keystore_destroy(ks);
    free(k);
    free(out);
}
END_TEST

START_TEST(alg_names)
{
    ck_assert_uint_eq(auth_alg_parse("HS256"), AUTH_ALG_HS256);
    ck_assert_uint_eq(auth_alg_parse("RS256"), AUTH_ALG_RS256);
    ck_assert_uint_eq(auth_alg_parse("ES256"), AUTH_ALG_ES256);
    ck_assert_uint_eq(auth_alg_parse("none"), 0);
    ck_assert_uint_eq(auth_alg_parse("HS384"), 0);
    ck_assert_uint_eq(auth_key_alg(AUTH_KEY_NONE), 0);
    ck_assert_uint_eq(auth_key_alg(AUTH_KEY_EC), AUTH_ALG_ES256);
}
END_TEST

static Suite *auth_suite(void)
{
    Suite *s = suite_create("auth");
    TCase *tc = unit_tcase(s, "patterns");
    tcase_add_test(tc, patterns_valid_and_invalid);
    tcase_add_test(tc, patterns_match_exact_and_prefix);
    tcase_add_test(tc, grants_are_per_action);
    tcase_add_test(tc, no_streams_claim_grants_nothing);

    tc = unit_tcase(s, "claims");
    tcase_add_test(tc, exp_required_and_checked);
    tcase_add_test(tc, grant_expiry_follows_exp);
    tcase_add_test(tc, nbf_checked_when_present);
    tcase_add_test(tc, issuer_checked_when_configured);
    tcase_add_test(tc, audience_string_or_array);
    tcase_add_test(tc, claim_shapes_refused);
    tcase_add_test(tc, duplicate_members_refused);
    tcase_add_test(tc, subjects_compared_exactly);

    tc = unit_tcase(s, "algorithms");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, hs256_wrong_secret_fails);
    tcase_add_test(tc, alg_none_refused);
    tcase_add_test(tc, rs256_and_es256_verify);
    tcase_add_test(tc, alg_confusion_refused);
    tcase_add_test(tc, malformed_tokens);
    tcase_add_test(tc, arbitrary_bytes_never_crash);
    tcase_add_test(tc, status_texts_exist_and_say_no_token);
    tcase_add_test(tc, alg_names);

    tc = unit_tcase(s, "keys");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, hmac_secret_loading);
    tcase_add_test(tc, pem_key_loading);
    tcase_add_test(tc, keystore_round_trip_across_fork);
    return s;
}

int main(void)
{
    return unit_run(auth_suite());
}
