/*
 * unit — what every Check suite in tests/unit shares. Header-only (static
 * inline), like fakequeue.h, so a suite stays one executable that may also
 * #include the .c it tests.
 *
 *   unit_tcase(s, name)   a test case added to suite s
 *   unit_run(s)           run suite s (Check forks each test, with
 *                         CK_DEFAULT_TIMEOUT), free it; main's exit status
 *   unit_client_frame()   a WebSocket frame as a client sends it (masked)
 */
#ifndef WSGATE_TEST_UNIT_H
#define WSGATE_TEST_UNIT_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

static inline TCase *unit_tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    suite_add_tcase(s, tc);
    return tc;
}

static inline int unit_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* One client frame into out: FIN as given, `opcode`, a header announcing
 * `announce` payload bytes (7-, 16- or 64-bit length, the shortest), the
 * mask key 12 34 56 78, then the first `len` bytes of payload masked
 * (payload NULL: `len` bytes of 'p'). Announcing more than is written
 * gives a header alone. Returns the bytes written. */
static inline size_t unit_client_frame(uint8_t *out, int fin, int opcode, const void *payload,
                                       uint64_t len, uint64_t announce)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (announce < 126) {
        out[n++] = (uint8_t)(0x80 | announce);
    } else if (announce <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(announce >> 8);
        out[n++] = (uint8_t)announce;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)(announce >> (8 * i));
    }
    for (int i = 0; i < 4; i++)
        out[n++] = key[i];
    for (uint64_t i = 0; i < len; i++)
        out[n++] = (uint8_t)((payload ? ((const uint8_t *)payload)[i] : 'p') ^ key[i % 4]);
    return n;
}

#endif
