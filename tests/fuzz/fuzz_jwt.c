/*
 * fuzz_jwt — the JWT claims check (shared/auth.c) on arbitrary bytes.
 *
 * The input is a token checked against a fixed HS256 secret with an issuer
 * and an audience required, at a fixed time, so the fuzzer can reach every
 * refusal (layout, base64url, JSON, duplicate members, alg, signature,
 * exp/nbf, iss/aud, sub, streams) and, with the seeds' valid tokens, the
 * grant. A grant is then asked about a few stream names. Any crash, leak
 * or sanitizer report is a finding; the result itself is not judged here
 * (tests/unit/test_auth.c does that).
 */
#include <stdint.h>
#include <string.h>

#include "auth.h"

/* Shared with tests/fuzz/make_seeds.py, which signs the seed tokens. */
static const char fuzz_jwt_secret[] = "fuzz-secret-of-at-least-thirty-two-bytes";
#define FUZZ_JWT_NOW_MS 1800000000000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct auth_key key;
    if (key.kind == AUTH_KEY_NONE) {
        key.kind = AUTH_KEY_HMAC;
        key.len = (uint32_t)(sizeof(fuzz_jwt_secret) - 1);
        memcpy(key.bytes, fuzz_jwt_secret, key.len);
    }
    struct auth_policy policy = {
        .algorithms = AUTH_ALG_HS256 | AUTH_ALG_RS256,
        .key = &key,
        .issuer = "https://idp.vitalstream.test",
        .audience = "wsgate",
    };
    struct auth_grant *grant = NULL;
    enum auth_status st =
        auth_check_token(&policy, (const char *)data, size, FUZZ_JWT_NOW_MS, &grant);
    (void)auth_status_text(st);
    if (st == AUTH_OK) {
        static const char *const names[] = {"patient/4711/ecg", "patient/4712/ecg", "ward/3",
                                            "patient/4711/"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            auth_stream_allowed(grant, AUTH_SUBSCRIBE, names[i], strlen(names[i]));
            auth_stream_allowed(grant, AUTH_PUBLISH, names[i], strlen(names[i]));
        }
        (void)auth_same_subject(grant, grant);
        (void)auth_grant_expired(grant, FUZZ_JWT_NOW_MS);
        auth_grant_free(grant);
    }
    /* The same bytes as a pattern against a name, and the other way. */
    size_t half = size / 2;
    if (auth_pattern_valid((const char *)data, half))
        (void)auth_pattern_match((const char *)data, half, (const char *)data + half, size - half);
    return 0;
}
