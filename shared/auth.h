/*
 * auth — JWT checking (libjwt for the signature) and stream permissions.
 *
 * Pure functions over bytes: nothing here knows connections, sockets or
 * processes, so a fuzz target can call auth_check_token() on arbitrary
 * input. A token is accepted when
 *   - it is header.payload.signature, each part base64url, header and
 *     payload JSON objects without duplicate members, no "crit" header;
 *   - its alg is listed in the policy AND is the one algorithm the key
 *     verifies (HMAC secret: HS256; RSA public key: RS256; P-256 public
 *     key: ES256) — the token never picks how it is checked;
 *   - the signature verifies (libjwt);
 *   - exp is a number and now is before it; nbf, when present, has passed;
 *   - iss and aud match when the policy names them (aud: a string, or an
 *     array holding the audience);
 *   - sub, when present, is a string; streams, when present, is an object
 *     whose "subscribe" and "publish" members (each optional) are arrays of
 *     patterns.
 * A pattern is a stream name (exact match) or a prefix ending in a slash
 * and a star ("patient/4711/" followed by "*" grants every stream whose
 * name starts with "patient/4711/"). A token without streams grants
 * nothing. Nothing here
 * ever logs, and no error text contains any part of the token.
 */
#ifndef WSGATE_AUTH_H
#define WSGATE_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "auth-t.h"

/* "HS256" -> AUTH_ALG_HS256 ...; 0 for anything else. */
unsigned auth_alg_parse(const char *name);
/* The one algorithm a key kind verifies (0 for AUTH_KEY_NONE). */
unsigned auth_key_alg(enum auth_key_kind kind);

/* Read jwt_key_file: a PEM public key (RSA >= 2048 bits, or EC P-256) or
 * else an HMAC secret (its bytes, trailing CR/LF removed; >= 32 bytes).
 * The key's algorithm must be among `algorithms`. Returns 0, or -1 with
 * what is wrong in err (never the key's bytes). */
int auth_key_load(const char *path, unsigned algorithms, struct auth_key *out, char *err,
                  size_t errlen);
/* Wipe a key (secrets do not linger in freed memory). */
void auth_key_clear(struct auth_key *key);

/* Check a token (len bytes, need not be NUL-terminated) at Unix time
 * now_ms. On AUTH_OK, *out is the grant (free with auth_grant_free). */
enum auth_status auth_check_token(const struct auth_policy *policy, const char *token, size_t len,
                                  int64_t now_ms, struct auth_grant **out);
/* What is wrong, for a 401 body or an error message: a constant string
 * that never contains the token. */
const char *auth_status_text(enum auth_status status);

void auth_grant_free(struct auth_grant *g);

/* 1 when the grant allows `action` on stream `name` (len bytes). */
int auth_stream_allowed(const struct auth_grant *g, enum auth_action action, const char *name,
                        size_t len);
/* 1 when both grants have the same sub claim (both without one counts as
 * the same). */
int auth_same_subject(const struct auth_grant *a, const struct auth_grant *b);
/* 1 when `pattern` is a valid stream pattern. */
int auth_pattern_valid(const char *pattern, size_t len);
/* 1 when a valid pattern matches stream `name`. */
int auth_pattern_match(const char *pattern, size_t plen, const char *name, size_t nlen);
/* 1 when now_ms is at or past the grant's exp. */
int auth_grant_expired(const struct auth_grant *g, int64_t now_ms);

/* The master's key, shared with the workers (see auth-t.h). */
struct auth_keystore *auth_keystore_create(void);
void auth_keystore_destroy(struct auth_keystore *ks);
/* Master: publish a key (NULL: none). */
void auth_keystore_publish(struct auth_keystore *ks, const struct auth_key *key);
/* Worker: a consistent copy; returns the generation copied. */
uint64_t auth_keystore_read(const struct auth_keystore *ks, struct auth_key *out);

#endif
