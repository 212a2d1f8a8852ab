#include "auth.h"

#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <math.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "streamlog.h"

static const char *const auth_status_texts[AUTH_STATUS_COUNT] = {
    [AUTH_OK] = "token accepted",
    [AUTH_MISSING] = "no token: send Authorization: Bearer <token>, or access_token=<token> "
                     "in the query string",
    [AUTH_MALFORMED] = "token is not a well-formed JWT",
    [AUTH_ALG_REFUSED] = "token algorithm (alg) is not accepted",
    [AUTH_BAD_SIGNATURE] = "token signature does not verify",
    [AUTH_NO_EXP] = "token has no exp claim",
    [AUTH_EXPIRED] = "token expired",
    [AUTH_NOT_YET_VALID] = "token is not valid yet (nbf)",
    [AUTH_WRONG_ISSUER] = "token issuer (iss) is not accepted",
    [AUTH_WRONG_AUDIENCE] = "token audience (aud) does not include this gateway",
    [AUTH_BAD_CLAIMS] = "token claims are malformed (sub must be a string; streams an object of "
                        "subscribe/publish pattern arrays)",
    [AUTH_NO_MEMORY] = "out of memory checking the token",
};

const char *auth_status_text(enum auth_status status)
{
    return (unsigned)status < AUTH_STATUS_COUNT ? auth_status_texts[status] : "unknown";
}

unsigned auth_alg_parse(const char *name)
{
    if (strcmp(name, "HS256") == 0)
        return AUTH_ALG_HS256;
    if (strcmp(name, "RS256") == 0)
        return AUTH_ALG_RS256;
    if (strcmp(name, "ES256") == 0)
        return AUTH_ALG_ES256;
    return 0;
}

unsigned auth_key_alg(enum auth_key_kind kind)
{
    switch (kind) {
    case AUTH_KEY_HMAC: return AUTH_ALG_HS256;
    case AUTH_KEY_RSA: return AUTH_ALG_RS256;
    case AUTH_KEY_EC: return AUTH_ALG_ES256;
    default: return 0;
    }
}

static const char *auth_alg_name(unsigned alg)
{
    switch (alg) {
    case AUTH_ALG_HS256: return "HS256";
    case AUTH_ALG_RS256: return "RS256";
    case AUTH_ALG_ES256: return "ES256";
    default: return "?";
    }
}

void auth_key_clear(struct auth_key *key)
{
    OPENSSL_cleanse(key, sizeof(*key));
}

/* Classify a PEM public key; -1 with err set when it is not one we use. */
static int auth_pem_kind(const struct auth_key *key, char *err, size_t errlen)
{
    BIO *bio = BIO_new_mem_buf(key->bytes, (int)key->len);
    if (!bio) {
        snprintf(err, errlen, "out of memory reading the key");
        return -1;
    }
    EVP_PKEY *pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!pk) {
        snprintf(err, errlen, "not a PEM public key (expected -----BEGIN PUBLIC KEY-----; "
                              "give the public half, never the private key)");
        return -1;
    }
    int kind = -1;
    int id = EVP_PKEY_get_base_id(pk);
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits < AUTH_RSA_MIN_BITS)
            snprintf(err, errlen, "RSA key of %d bits: RS256 needs at least %d", bits,
                     AUTH_RSA_MIN_BITS);
        else
            kind = AUTH_KEY_RSA;
    } else if (id == EVP_PKEY_EC) {
        char group[64] = "";
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(pk, group, sizeof(group), &glen) == 1 &&
            (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0))
            kind = AUTH_KEY_EC;
        else
            snprintf(err, errlen, "EC key on curve %s: ES256 needs P-256 (prime256v1)",
                     group[0] ? group : "?");
    } else {
        snprintf(err, errlen, "public key type is neither RSA (RS256) nor EC P-256 (ES256)");
    }
    EVP_PKEY_free(pk);
    ERR_clear_error();
    return kind;
}

int auth_key_load(const char *path, unsigned algorithms, struct auth_key *out, char *err,
                  size_t errlen)
{
    memset(out, 0, offsetof(struct auth_key, bytes));
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(out->bytes, 1, sizeof(out->bytes), f);
    int more = fgetc(f) != EOF;
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err, errlen, "cannot read %s", path);
        auth_key_clear(out);
        return -1;
    }
    if (more) {
        snprintf(err, errlen, "%s is larger than %d bytes", path, AUTH_KEY_MAX);
        auth_key_clear(out);
        return -1;
    }
    out->len = (uint32_t)n;
    const char *text = (const char *)out->bytes;
    size_t skip = 0;
    while (skip < n && (text[skip] == ' ' || text[skip] == '\t' || text[skip] == '\r' ||
                        text[skip] == '\n'))
        skip++;
    if (n - skip >= 10 && memcmp(text + skip, "-----BEGIN", 10) == 0) {
        int kind = auth_pem_kind(out, err, errlen);
        if (kind < 0) {
            auth_key_clear(out);
            return -1;
        }
        out->kind = (uint32_t)kind;
    } else {
        /* An HMAC secret: the file's bytes, without the newline an editor
         * or `echo` leaves at the end. */
        while (out->len > 0 && (out->bytes[out->len - 1] == '\n' || out->bytes[out->len - 1] == '\r'))
            out->len--;
        if (out->len < AUTH_HMAC_MIN) {
            snprintf(err, errlen,
                     "HMAC secret of %u bytes: HS256 needs at least %d (or give a PEM public key)",
                     out->len, AUTH_HMAC_MIN);
            auth_key_clear(out);
            return -1;
        }
        out->kind = AUTH_KEY_HMAC;
    }
    unsigned alg = auth_key_alg((enum auth_key_kind)out->kind);
    if (!(algorithms & alg)) {
        snprintf(err, errlen, "holds %s, which verifies %s only, but jwt_algorithms does not list %s",
                 out->kind == AUTH_KEY_HMAC  ? "an HMAC secret"
                 : out->kind == AUTH_KEY_RSA ? "an RSA public key"
                                             : "an EC P-256 public key",
                 auth_alg_name(alg), auth_alg_name(alg));
        auth_key_clear(out);
        return -1;
    }
    return 0;
}

/* ---- token parsing ---- */

static int auth_b64url_value(char c)
{
    if ('A' <= c && c <= 'Z')
        return c - 'A';
    if ('a' <= c && c <= 'z')
        return c - 'a' + 26;
    if ('0' <= c && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decode unpadded base64url; out must hold len * 3 / 4 + 1 bytes. Returns
 * the decoded length, or -1. */
static long auth_b64url_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = auth_b64url_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    out[n] = '\0';
    return (long)n;
}

/* Decode one part and parse it as a JSON object (duplicates refused: two
 * "sub" or two "alg" members are an attack, not a typo). */
static json_t *auth_json_part(const char *part, size_t len)
{
    unsigned char *buf = malloc(len * 3 / 4 + 2);
    if (!buf)
        return NULL;
    long n = auth_b64url_decode(part, len, buf);
    json_t *j = NULL;
    if (n > 0)
        j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    free(buf);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

int auth_pattern_valid(const char *pattern, size_t len)
{
    if (len >= 3 && pattern[len - 1] == '*' && pattern[len - 2] == '/')
        return streamlog_name_valid(pattern, len - 1);
    return streamlog_name_valid(pattern, len);
}

int auth_pattern_match(const char *pattern, size_t plen, const char *name, size_t nlen)
{
    if (plen >= 3 && pattern[plen - 1] == '*' && pattern[plen - 2] == '/')
        return nlen >= plen - 1 && memcmp(name, pattern, plen - 1) == 0;
    return nlen == plen && memcmp(name, pattern, plen) == 0;
}

/* Check a patterns array; adds its text size to *bytes. */
static int auth_patterns_check(json_t *arr, size_t *bytes)
{
    if (!json_is_array(arr) || json_array_size(arr) > AUTH_PATTERNS_MAX)
        return -1;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_string(v) || !auth_pattern_valid(json_string_value(v), json_string_length(v)))
            return -1;
        *bytes += json_string_length(v) + 1;
    }
    return 0;
}

static int auth_audience_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0 &&
               json_string_length(aud) == strlen(want);
    if (json_is_array(aud)) {
        size_t i;
        json_t *v;
        json_array_foreach(aud, i, v) {
            if (json_is_string(v) && json_string_length(v) == strlen(want) &&
                strcmp(json_string_value(v), want) == 0)
                return 1;
        }
    }
    return 0;
}

/* The claims, once the signature verified. */
static enum auth_status auth_check_claims(const struct auth_policy *p, json_t *claims,
                                          int64_t now_ms, struct auth_grant **out)
{
    json_t *exp = json_object_get(claims, "exp");
    if (!json_is_number(exp) || !isfinite(json_number_value(exp)))
        return AUTH_NO_EXP;
    double expv = json_number_value(exp);
    if (expv < 0)
        expv = 0;
    if (expv > 9e15)
        expv = 9e15;
    int64_t exp_s = (int64_t)floor(expv);
    if (now_ms >= exp_s * 1000)
        return AUTH_EXPIRED;
    json_t *nbf = json_object_get(claims, "nbf");
    if (nbf) {
        if (!json_is_number(nbf) || !isfinite(json_number_value(nbf)))
            return AUTH_BAD_CLAIMS;
        if ((double)now_ms < json_number_value(nbf) * 1000.0)
            return AUTH_NOT_YET_VALID;
    }
    if (p->issuer && p->issuer[0]) {
        json_t *iss = json_object_get(claims, "iss");
        if (!json_is_string(iss) || json_string_length(iss) != strlen(p->issuer) ||
            strcmp(json_string_value(iss), p->issuer) != 0)
            return AUTH_WRONG_ISSUER;
    }
    if (p->audience && p->audience[0] &&
        !auth_audience_matches(json_object_get(claims, "aud"), p->audience))
        return AUTH_WRONG_AUDIENCE;

    json_t *sub = json_object_get(claims, "sub");
    if (sub && (!json_is_string(sub) || json_string_length(sub) > AUTH_SUB_MAX))
        return AUTH_BAD_CLAIMS;
    json_t *lists[2] = {NULL, NULL};
    json_t *streams = json_object_get(claims, "streams");
    size_t bytes = sub ? json_string_length(sub) : 0;
    if (streams) {
        if (!json_is_object(streams))
            return AUTH_BAD_CLAIMS;
        lists[AUTH_SUBSCRIBE] = json_object_get(streams, "subscribe");
        lists[AUTH_PUBLISH] = json_object_get(streams, "publish");
        for (int a = 0; a < 2; a++) {
            if (lists[a] && auth_patterns_check(lists[a], &bytes) < 0)
                return AUTH_BAD_CLAIMS;
        }
    }

    struct auth_grant *g = malloc(sizeof(*g) + bytes + 1);
    if (!g)
        return AUTH_NO_MEMORY;
    memset(g, 0, sizeof(*g));
    g->exp = exp_s;
    size_t off = 0;
    if (sub) {
        g->has_sub = 1;
        g->sub_len = (uint32_t)json_string_length(sub);
        memcpy(g->text, json_string_value(sub), g->sub_len);
        off = g->sub_len;
    }
    for (int a = 0; a < 2; a++) {
        g->offset[a] = (uint32_t)off;
        if (!lists[a])
            continue;
        size_t i;
        json_t *v;
        json_array_foreach(lists[a], i, v) {
            size_t n = json_string_length(v);
            memcpy(g->text + off, json_string_value(v), n);
            g->text[off + n] = '\0';
            off += n + 1;
            g->count[a]++;
        }
    }
    g->text_len = (uint32_t)off;
    g->text[off] = '\0';
    *out = g;
    return AUTH_OK;
}

static int auth_token_char(char c)
{
    return auth_b64url_value(c) >= 0 || c == '.';
}

enum auth_status auth_check_token(const struct auth_policy *p, const char *token, size_t len,
                                  int64_t now_ms, struct auth_grant **out)
{
    *out = NULL;
    if (len == 0)
        return AUTH_MISSING;
    if (len > AUTH_TOKEN_MAX)
        return AUTH_MALFORMED;
    size_t dots[2], ndots = 0;
    for (size_t i = 0; i < len; i++) {
        if (!auth_token_char(token[i]))
            return AUTH_MALFORMED;
        if (token[i] == '.') {
            if (ndots == 2)
                return AUTH_MALFORMED;
            dots[ndots++] = i;
        }
    }
    if (ndots != 2 || dots[0] == 0 || dots[1] == dots[0] + 1)
        return AUTH_MALFORMED;

    json_t *header = auth_json_part(token, dots[0]);
    if (!header)
        return AUTH_MALFORMED;
    json_t *alg = json_object_get(header, "alg");
    int crit = json_object_get(header, "crit") != NULL;
    unsigned bit = json_is_string(alg) ? auth_alg_parse(json_string_value(alg)) : 0;
    json_decref(header); /* alg goes with it: only `bit` is used below */
    if (crit)
        return AUTH_MALFORMED;
    const struct auth_key *key = p->key;
    if (!bit || !(p->algorithms & bit) || !key || auth_key_alg((enum auth_key_kind)key->kind) != bit)
        return AUTH_ALG_REFUSED;
    if (dots[1] + 1 == len)
        return AUTH_BAD_SIGNATURE; /* no signature */

    json_t *claims = auth_json_part(token + dots[0] + 1, dots[1] - dots[0] - 1);
    if (!claims)
        return AUTH_MALFORMED;

    /* libjwt checks the signature (with the algorithm we just allowed:
     * the key kind and alg agree, so it cannot be talked into another). */
    char *copy = malloc(len + 1);
    if (!copy) {
        json_decref(claims);
        return AUTH_NO_MEMORY;
    }
    memcpy(copy, token, len);
    copy[len] = '\0';
    jwt_t *jwt = NULL;
    int r = jwt_decode(&jwt, copy, key->bytes, (int)key->len);
    int alg_ok = r == 0 && jwt &&
                 ((bit == AUTH_ALG_HS256 && jwt_get_alg(jwt) == JWT_ALG_HS256) ||
                  (bit == AUTH_ALG_RS256 && jwt_get_alg(jwt) == JWT_ALG_RS256) ||
                  (bit == AUTH_ALG_ES256 && jwt_get_alg(jwt) == JWT_ALG_ES256));
    jwt_free(jwt);
    free(copy);
    ERR_clear_error();
    if (!alg_ok) {
        json_decref(claims);
        return AUTH_BAD_SIGNATURE;
    }
    enum auth_status st = auth_check_claims(p, claims, now_ms, out);
    json_decref(claims);
    return st;
}

void auth_grant_free(struct auth_grant *g)
{
    free(g);
}

int auth_stream_allowed(const struct auth_grant *g, enum auth_action action, const char *name,
                        size_t len)
{
    if (!g || (unsigned)action > AUTH_PUBLISH)
        return 0;
    const char *p = g->text + g->offset[action];
    for (uint32_t i = 0; i < g->count[action]; i++) {
        size_t plen = strlen(p);
        if (auth_pattern_match(p, plen, name, len))
            return 1;
        p += plen + 1;
    }
    return 0;
}

int auth_same_subject(const struct auth_grant *a, const struct auth_grant *b)
{
    if (a->has_sub != b->has_sub)
        return 0;
    return !a->has_sub || (a->sub_len == b->sub_len && memcmp(a->text, b->text, a->sub_len) == 0);
}

int auth_grant_expired(const struct auth_grant *g, int64_t now_ms)
{
    return now_ms >= g->exp * 1000;
}

/* ---- the key shared between master and workers ---- */

struct auth_keystore *auth_keystore_create(void)
{
    void *p = mmap(NULL, sizeof(struct auth_keystore), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* A core dump must not carry the secret. */
    madvise(p, sizeof(struct auth_keystore), MADV_DONTDUMP);
    return p;
}

void auth_keystore_destroy(struct auth_keystore *ks)
{
    if (!ks)
        return;
    OPENSSL_cleanse(&ks->key, sizeof(ks->key));
    munmap(ks, sizeof(*ks));
}

void auth_keystore_publish(struct auth_keystore *ks, const struct auth_key *key)
{
    atomic_fetch_add_explicit(&ks->seq, 1, memory_order_acq_rel);
    atomic_thread_fence(memory_order_release);
    if (key) {
        ks->key.kind = key->kind;
        ks->key.len = key->len;
        memcpy(ks->key.bytes, key->bytes, key->len);
        OPENSSL_cleanse(ks->key.bytes + key->len, sizeof(ks->key.bytes) - key->len);
    } else {
        OPENSSL_cleanse(&ks->key, sizeof(ks->key));
    }
    atomic_thread_fence(memory_order_release);
    atomic_fetch_add_explicit(&ks->seq, 1, memory_order_acq_rel);
    atomic_fetch_add_explicit(&ks->generation, 1, memory_order_acq_rel);
}

uint64_t auth_keystore_read(const struct auth_keystore *ks, struct auth_key *out)
{
    for (;;) {
        uint64_t before = atomic_load_explicit(&ks->seq, memory_order_acquire);
        uint64_t gen = atomic_load_explicit(&ks->generation, memory_order_acquire);
        if (before & 1)
            continue;
        out->kind = ks->key.kind;
        out->len = ks->key.len;
        if (out->len > sizeof(out->bytes))
            out->len = 0;
        memcpy(out->bytes, ks->key.bytes, out->len);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&ks->seq, memory_order_acquire) == before)
            return gen;
    }
}
