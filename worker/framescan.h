/*
 * framescan — follow frame boundaries in a client's byte stream, ahead of
 * wslay.
 *
 * wslay reports a frame only once payload bytes arrive, so a client could
 * announce a 1 TiB message and then hold the connection; reading the
 * headers ourselves lets the session refuse it (1009) the moment the
 * length is known. Knowing the boundaries also tells the session when it
 * sits between frames, which is when an idle connection can give its
 * wslay context back, and when a client's close frame has started.
 */
#ifndef WSGATE_FRAMESCAN_H
#define WSGATE_FRAMESCAN_H

#include <stddef.h>
#include <stdint.h>

#include "worker-t.h"

enum framescan_result {
    FRAMESCAN_OK = 0,
    FRAMESCAN_TOO_BIG, /* a data message announced more than the limit */
};

/* Scan the next bytes; max_message bounds a whole (fragmented) message. */
enum framescan_result framescan_feed(struct framescan *fs, const uint8_t *data, size_t len,
                                     uint64_t max_message);

/* Between frames, with no fragmented message half received. */
static inline int framescan_idle(const struct framescan *fs)
{
    return fs->hdr_len == 0 && fs->payload_left == 0 && !fs->fragmented;
}

#endif
