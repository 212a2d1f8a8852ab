/*
 * iptable — open WebSocket connections per client IP, replica-wide, for
 * max_connections_per_ip.
 *
 * A fixed open-addressing table (linear probing, backward-shift deletion)
 * under one process-shared robust mutex: it is touched only at an upgrade
 * and at a close, never per message. Each entry counts its connections per
 * worker slot, so a worker's death costs nothing but the master's
 * iptable_forget_worker(): no count is ever stranded. A worker that dies
 * holding the lock leaves the table to be rebuilt by the next locker.
 *
 * Connections are counted whether or not the limit is on, so a reload
 * that turns it on sees the connections already open. When the table is
 * three-quarters full a new address is not tracked (and not limited):
 * max_connections still bounds the replica.
 */
#ifndef WSGATE_IPTABLE_H
#define WSGATE_IPTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "iptable-t.h"

size_t iptable_bytes(void);
/* Master: initialise a zeroed table. Returns 0 or a negative errno. */
int iptable_init(struct iptable *t);

/* Count one more connection of `ip` on worker `slot`, unless the address
 * already has `limit` (0: no limit) across the replica. Returns 0 when
 * counted (release it later), -EBUSY when over the limit (not counted),
 * -ENOSPC when not tracked (table full): the caller lets it in. */
int iptable_acquire(struct iptable *t, const uint8_t ip[16], int slot, uint32_t limit);
void iptable_release(struct iptable *t, const uint8_t ip[16], int slot);
/* Master: a worker died; drop every count it held. */
void iptable_forget_worker(struct iptable *t, int slot);
/* Open connections of `ip` across the replica. */
uint32_t iptable_count(struct iptable *t, const uint8_t ip[16]);
/* Addresses tracked. */
uint32_t iptable_used(struct iptable *t);

/* "address:port" of an address in the table's form (IPv4 as
 * ::ffff:a.b.c.d, printed as a.b.c.d); "?:0" when port is 0 (unknown). */
void iptable_format(const uint8_t ip[16], uint16_t port, char *out, size_t len);

#endif
