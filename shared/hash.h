/*
 * hash — the one string hash of the gateway: 32-bit FNV-1a.
 *
 * Stream names hash through streamlog_name_hash (the segment's name index,
 * the hub's buckets, the broker's publish lanes), addresses through the
 * segment's per-IP table. The segment's tables are read by every process
 * of one build, so the function must not change without a new layout.
 */
#ifndef WSGATE_HASH_H
#define WSGATE_HASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t hash_fnv1a(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    return h;
}

#endif
