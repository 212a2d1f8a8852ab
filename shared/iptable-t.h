/*
 * iptable-t.h — replica-wide connection counts per client IP, in the
 * shared segment (see iptable.h).
 */
#ifndef WSGATE_IPTABLE_T_H
#define WSGATE_IPTABLE_T_H

#include <pthread.h>
#include <stdint.h>

#define IPTABLE_ENTRIES 16384u /* a power of two */
#define IPTABLE_SLOTS 64       /* = SEGMENT_WORKER_SLOTS (checked in segment.c) */

/* One client address (IPv4 as ::ffff:a.b.c.d) and its open connections
 * per worker slot: each worker's share is kept apart so the master can
 * give back exactly what a dead worker held. */
struct iptable_entry {
    uint8_t ip[16];
    uint32_t used;
    uint32_t total;                 /* sum of count[] */
    uint16_t count[IPTABLE_SLOTS];
};

struct iptable {
    pthread_mutex_t lock;           /* process-shared, robust */
    uint32_t capacity;              /* IPTABLE_ENTRIES */
    uint32_t used;
    struct iptable_entry entry[IPTABLE_ENTRIES];
};

#endif
