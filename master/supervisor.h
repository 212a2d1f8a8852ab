/*
 * supervisor — the master's life after start-up: fork workers into slots,
 * reap and respawn them (with backoff when they keep dying young), reload
 * the config on SIGHUP, and drain on SIGTERM/SIGINT.
 *
 * Signals reach the master through a signalfd on its libuv loop (never
 * uv_signal: its handler table would be inherited by forked workers).
 * The master never serves WebSocket traffic.
 */
#ifndef WSGATE_SUPERVISOR_H
#define WSGATE_SUPERVISOR_H

#include "auth-t.h"
#include "config-t.h"
#include "segment-t.h"
#include "tls-t.h"

/* Runs until the gateway has shut down; returns the exit status. Takes
 * over *tls (cfg's validated certificate and key, or an empty pair) and
 * leaves it empty. `keys` holds the token key already published for cfg;
 * reloads republish it. */
int supervisor_run(const struct config *cfg, struct tls_pair *tls, struct segment *seg,
                   struct auth_keystore *keys);

#endif
