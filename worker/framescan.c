#include "framescan.h"

static uint8_t framescan_header_size(const uint8_t *hdr)
{
    uint8_t len7 = hdr[1] & 0x7f;
    uint8_t size = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
    return (uint8_t)(size + ((hdr[1] & 0x80) ? 4 : 0));
}

static uint64_t framescan_payload_length(const uint8_t *hdr)
{
    uint8_t len7 = hdr[1] & 0x7f;
    if (len7 < 126)
        return len7;
    uint64_t n = 0;
    int bytes = len7 == 126 ? 2 : 8;
    for (int i = 0; i < bytes; i++)
        n = (n << 8) | hdr[2 + i];
    return n;
}

enum framescan_result framescan_feed(struct framescan *fs, const uint8_t *data, size_t len,
                                     uint64_t max_message)
{
    size_t i = 0;
    while (i < len) {
        if (fs->payload_left) {
            size_t take = len - i < fs->payload_left ? len - i : (size_t)fs->payload_left;
            fs->payload_left -= take;
            i += take;
            continue;
        }
        fs->hdr[fs->hdr_len++] = data[i++];
        if (fs->hdr_len < 2 || fs->hdr_len < framescan_header_size(fs->hdr))
            continue;
        uint8_t opcode = fs->hdr[0] & 0x0f;
        int fin = (fs->hdr[0] & 0x80) != 0;
        uint64_t payload = framescan_payload_length(fs->hdr);
        fs->hdr_len = 0;
        fs->payload_left = payload;
        if (opcode == 0x1 || opcode == 0x2) {
            fs->msg_len = payload;
            fs->fragmented = !fin;
        } else if (opcode == 0x0) {
            fs->msg_len += payload;
            if (fin)
                fs->fragmented = 0;
        } else if (opcode == 0x8) {
            fs->saw_close = 1;
        }
        if (opcode <= 0x2 && fs->msg_len > max_message)
            return FRAMESCAN_TOO_BIG;
    }
    return FRAMESCAN_OK;
}
