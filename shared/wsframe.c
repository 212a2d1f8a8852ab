#include "wsframe.h"

size_t wsframe_header_size(uint64_t payload)
{
    return payload < 126 ? 2 : payload < 65536 ? 4 : 10;
}

size_t wsframe_put_header(uint8_t *out, uint8_t first, uint64_t payload)
{
    out[0] = first;
    if (payload < 126) {
        out[1] = (uint8_t)payload;
        return 2;
    }
    if (payload < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(payload >> 8);
        out[3] = (uint8_t)payload;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(payload >> (56 - 8 * i));
    return 10;
}

size_t wsframe_header_size_of(const uint8_t *frame)
{
    uint8_t len7 = frame[1] & 0x7f;
    return len7 < 126 ? 2 : len7 == 126 ? 4 : 10;
}
