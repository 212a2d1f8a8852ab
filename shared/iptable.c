#include "iptable.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

size_t iptable_bytes(void)
{
    return sizeof(struct iptable);
}

int iptable_init(struct iptable *t)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int r = pthread_mutex_init(&t->lock, &a);
    pthread_mutexattr_destroy(&a);
    t->capacity = IPTABLE_ENTRIES;
    t->used = 0;
    return -r;
}

static uint32_t iptable_hash(const uint8_t ip[16])
{
    return hash_fnv1a(ip, 16) & (IPTABLE_ENTRIES - 1);
}

/* Index of ip's entry, or of the empty entry where it would go. */
static uint32_t iptable_probe(const struct iptable *t, const uint8_t ip[16])
{
    uint32_t i = iptable_hash(ip);
    for (uint32_t n = 0; n < IPTABLE_ENTRIES; n++) {
        const struct iptable_entry *e = &t->entry[i];
        if (!e->used || memcmp(e->ip, ip, 16) == 0)
            return i;
        i = (i + 1) & (IPTABLE_ENTRIES - 1);
    }
    return IPTABLE_ENTRIES; /* unreachable: the table is never full */
}

/* Remove entry i, shifting back the entries of its probe run. */
static void iptable_remove_at(struct iptable *t, uint32_t i)
{
    uint32_t mask = IPTABLE_ENTRIES - 1;
    uint32_t j = i;
    for (uint32_t n = 0; n < IPTABLE_ENTRIES; n++) {
        j = (j + 1) & mask;
        struct iptable_entry *e = &t->entry[j];
        if (!e->used)
            break;
        uint32_t k = iptable_hash(e->ip);
        /* e stays when its home k lies cyclically in (i, j]. */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            t->entry[i] = *e;
            i = j;
        }
    }
    memset(&t->entry[i], 0, sizeof(t->entry[i]));
    t->used--;
}

/* Re-insert every entry that still counts something (after a worker's
 * death, or when a worker died holding the lock mid-update): recomputes
 * each total and restores the probing invariant. Touches only used
 * entries, so unused pages of the table stay unallocated. */
static void iptable_rebuild(struct iptable *t)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < IPTABLE_ENTRIES; i++)
        n += t->entry[i].used != 0;
    struct iptable_entry *keep = n ? malloc(n * sizeof(*keep)) : NULL;
    uint32_t k = 0;
    for (uint32_t i = 0; i < IPTABLE_ENTRIES; i++) {
        struct iptable_entry *e = &t->entry[i];
        if (!e->used)
            continue;
        uint32_t total = 0;
        for (int s = 0; s < IPTABLE_SLOTS; s++)
            total += e->count[s];
        e->total = total;
        if (keep && total)
            keep[k++] = *e;
        memset(e, 0, sizeof(*e));
    }
    t->used = 0;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t at = iptable_probe(t, keep[i].ip);
        if (at < IPTABLE_ENTRIES && !t->entry[at].used) {
            t->entry[at] = keep[i];
            t->used++;
        }
    }
    free(keep);
}

static void iptable_lock(struct iptable *t)
{
    if (pthread_mutex_lock(&t->lock) == EOWNERDEAD) {
        iptable_rebuild(t);
        pthread_mutex_consistent(&t->lock);
    }
}

int iptable_acquire(struct iptable *t, const uint8_t ip[16], int slot, uint32_t limit)
{
    if (slot < 0 || slot >= IPTABLE_SLOTS)
        return -ENOSPC;
    iptable_lock(t);
    int r = 0;
    uint32_t i = iptable_probe(t, ip);
    struct iptable_entry *e = i < IPTABLE_ENTRIES ? &t->entry[i] : NULL;
    if (!e || (!e->used && t->used >= IPTABLE_ENTRIES / 4 * 3)) {
        r = -ENOSPC;
    } else if (limit && e->used && e->total >= limit) {
        r = -EBUSY;
    } else if (e->used && e->count[slot] == UINT16_MAX) {
        r = -ENOSPC;
    } else {
        if (!e->used) {
            memcpy(e->ip, ip, 16);
            e->used = 1;
            t->used++;
        }
        e->count[slot]++;
        e->total++;
    }
    pthread_mutex_unlock(&t->lock);
    return r;
}

void iptable_release(struct iptable *t, const uint8_t ip[16], int slot)
{
    if (slot < 0 || slot >= IPTABLE_SLOTS)
        return;
    iptable_lock(t);
    uint32_t i = iptable_probe(t, ip);
    if (i < IPTABLE_ENTRIES && t->entry[i].used && t->entry[i].count[slot] > 0) {
        struct iptable_entry *e = &t->entry[i];
        e->count[slot]--;
        e->total--;
        if (e->total == 0)
            iptable_remove_at(t, i);
    }
    pthread_mutex_unlock(&t->lock);
}

void iptable_forget_worker(struct iptable *t, int slot)
{
    if (slot < 0 || slot >= IPTABLE_SLOTS)
        return;
    iptable_lock(t);
    int any = 0;
    for (uint32_t i = 0; i < IPTABLE_ENTRIES; i++) {
        struct iptable_entry *e = &t->entry[i];
        if (e->used && e->count[slot]) {
            e->count[slot] = 0;
            any = 1;
        }
    }
    if (any)
        iptable_rebuild(t);
    pthread_mutex_unlock(&t->lock);
}

uint32_t iptable_count(struct iptable *t, const uint8_t ip[16])
{
    iptable_lock(t);
    uint32_t i = iptable_probe(t, ip);
    uint32_t n = i < IPTABLE_ENTRIES && t->entry[i].used ? t->entry[i].total : 0;
    pthread_mutex_unlock(&t->lock);
    return n;
}

uint32_t iptable_used(struct iptable *t)
{
    iptable_lock(t);
    uint32_t n = t->used;
    pthread_mutex_unlock(&t->lock);
    return n;
}

void iptable_format(const uint8_t ip[16], uint16_t port, char *out, size_t len)
{
    static const uint8_t v4mapped[12] = {[10] = 0xff, [11] = 0xff};
    char host[INET6_ADDRSTRLEN] = "?";
    if (port) {
        if (memcmp(ip, v4mapped, sizeof(v4mapped)) == 0)
            inet_ntop(AF_INET, ip + 12, host, sizeof(host));
        else
            inet_ntop(AF_INET6, ip, host, sizeof(host));
    }
    snprintf(out, len, "%s:%u", host, (unsigned)port);
}
