/*
 * auth-t.h — types of token checking and stream permissions (see auth.h).
 */
#ifndef WSGATE_AUTH_T_H
#define WSGATE_AUTH_T_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_KEY_MAX 16384     /* bytes of an HMAC secret or PEM public key */
#define AUTH_TOKEN_MAX 8192    /* a longer token is malformed (it would not fit a head anyway) */
#define AUTH_PATTERNS_MAX 256  /* stream patterns per action in one token */
#define AUTH_SUB_MAX 256       /* bytes of the sub claim */
#define AUTH_HMAC_MIN 32       /* RFC 7518 3.2: an HS256 key is at least 256 bits */
#define AUTH_RSA_MIN_BITS 2048

/* jwt_algorithms, as bits. */
enum auth_alg {
    AUTH_ALG_HS256 = 1u,
    AUTH_ALG_RS256 = 2u,
    AUTH_ALG_ES256 = 4u,
};

/* What jwt_key_file holds; each kind verifies exactly one algorithm, so a
 * token cannot choose how its signature is checked (no HS256 token "signed"
 * with an RSA public key taken as an HMAC secret). */
enum auth_key_kind {
    AUTH_KEY_NONE = 0,
    AUTH_KEY_HMAC, /* HS256 */
    AUTH_KEY_RSA,  /* RS256, PEM "PUBLIC KEY", at least 2048 bits */
    AUTH_KEY_EC,   /* ES256, PEM "PUBLIC KEY" on P-256 */
};

struct auth_key {
    uint32_t kind; /* enum auth_key_kind */
    uint32_t len;
    unsigned char bytes[AUTH_KEY_MAX];
};

/* What a token must satisfy. */
struct auth_policy {
    unsigned algorithms;          /* AUTH_ALG_* bits */
    const struct auth_key *key;
    const char *issuer;           /* NULL or "": iss not checked */
    const char *audience;         /* NULL or "": aud not checked */
};

enum auth_status {
    AUTH_OK = 0,
    AUTH_MISSING,        /* no token at all */
    AUTH_MALFORMED,      /* not header.payload.signature of base64url JSON objects */
    AUTH_ALG_REFUSED,    /* alg not in jwt_algorithms or not the key's algorithm */
    AUTH_BAD_SIGNATURE,  /* the signature does not verify with the key */
    AUTH_NO_EXP,         /* exp missing or not a number */
    AUTH_EXPIRED,        /* now >= exp */
    AUTH_NOT_YET_VALID,  /* now < nbf */
    AUTH_WRONG_ISSUER,
    AUTH_WRONG_AUDIENCE,
    AUTH_BAD_CLAIMS,     /* sub or streams of the wrong shape, a bad pattern */
    AUTH_NO_MEMORY,
    AUTH_STATUS_COUNT
};

enum auth_action {
    AUTH_SUBSCRIBE = 0,
    AUTH_PUBLISH = 1,
};

/* What a valid token grants, in one allocation: the subject's bytes, then
 * the subscribe patterns and the publish patterns, each NUL-terminated. */
struct auth_grant {
    int64_t exp;          /* Unix seconds (exp claim, rounded down) */
    int32_t has_sub;
    uint32_t sub_len;
    uint32_t count[2];    /* patterns per enum auth_action */
    uint32_t offset[2];   /* where each action's patterns start in text */
    uint32_t text_len;
    char text[];
};

/* The key as the master last loaded it, in an anonymous shared mapping
 * inherited by every worker (never in the named segment, which tools may
 * read). Written by the master only, under a seqlock. */
struct auth_keystore {
    _Atomic uint64_t seq;
    _Atomic uint64_t generation;
    struct auth_key key;
};

#endif
