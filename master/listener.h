/*
 * listener — the master's listening sockets on bind_address:port.
 *
 * One SO_REUSEPORT socket per worker slot, so the kernel spreads new
 * connections across workers and a respawned worker inherits the accept
 * queue of the one it replaces (the master keeps every socket open).
 * Because SO_REUSEPORT would let a second gateway share the port silently,
 * listener_probe() first binds without it: a port already in use is an
 * error, never a shared port.
 */
#ifndef WSGATE_LISTENER_H
#define WSGATE_LISTENER_H

/* 0 when bind_address:port is free, else a negative errno. */
int listener_probe(const char *address, int port);
/* A listening SO_REUSEPORT socket, or a negative errno. */
int listener_open(const char *address, int port);

#endif
