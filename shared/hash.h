/*
 * hash — the one string hash of the gateway: FNV-1a.
 *
 * Stream names hash through streamlog_name_hash (the segment's name index,
 * the hub's buckets, the broker's publish lanes), addresses through the
 * segment's per-IP table. The segment's tables are read by every process
 * of one build, so the function must not change without a new layout.
 * The 64-bit form, fed piece by piece, ranks brokers for a stream
 * (rendezvous hashing in broker.c): every replica must rank them alike.
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

#define HASH_FNV1A64_INIT 14695981039346656037ull

static inline uint64_t hash_fnv1a64_add(uint64_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

#endif
