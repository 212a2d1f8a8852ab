/*
 * worker — one worker process: a libuv loop serving the connections the
 * kernel balances onto its listening socket.
 *
 * The master forks and calls worker_main() in the child; it returns the
 * process exit status once the worker has drained. A worker never forks and
 * never binds: its listening socket comes from the master, so a respawned
 * worker inherits the queue of the one it replaces.
 *
 * Signals (sent by the master): SIGTERM drains for shutdown (reconnect +
 * 1001), SIGUSR1 retires the worker after a reload (reconnect + 1012).
 * SIGINT and SIGHUP are the master's business and are ignored here.
 */
#ifndef WSGATE_WORKER_H
#define WSGATE_WORKER_H

#include "auth-t.h"
#include "segment-t.h"
#include "tls-t.h"

/* `tls` is the certificate and key the master validated for the current
 * config generation (inherited across fork), or NULL when TLS is off.
 * `keys` is the master's token key store (read on every config generation). */
int worker_main(struct segment *seg, struct auth_keystore *keys, int slot, int listen_fd,
                const struct tls_pair *tls);

#endif
