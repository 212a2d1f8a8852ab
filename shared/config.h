/*
 * config — read, validate and default the gateway's configuration.
 *
 * websocket.yaml is libconfig syntax written as flat `key: value` lines
 * (also valid YAML); connection_pool.yaml is read from the same folder when
 * it exists. Missing keys take their defaults. Syntax errors, unknown keys,
 * wrong types and out-of-range values are errors whose message names the
 * file, the line and the key. Nothing here touches processes or sockets.
 */
#ifndef WSGATE_CONFIG_H
#define WSGATE_CONFIG_H

#include <stddef.h>

#include "config-t.h"

/* Fill every key with its default. */
void config_defaults(struct config *cfg);

/* Load `path` (and connection_pool.yaml beside it). On error returns a
 * negative value, writes "file:line: key 'x': what is wrong" into err and
 * leaves *cfg unspecified; use a scratch struct when the old one matters. */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);

/* Parse one file's text into cfg (used by config_load and the fuzzer).
 * `pool` selects the connection_pool.yaml key set. */
int config_parse_text(const char *text, const char *filename, int pool, struct config *cfg,
                      char *err, size_t errlen);

/* Keys whose change needs a restart ("port", "bind_address", "max_streams",
 * "stream_memory": they size the socket and the segment; "tls_cert_file"
 * when TLS is switched on or off): returns the first such key that
 * differs, or NULL. */
const char *config_restart_key_changed(const struct config *old_cfg, const struct config *new_cfg);

/* The line `key` is set on in the file at `path`, for error messages about
 * values checked after loading (TLS files); 0 when unknown. */
int config_key_line(const char *path, const char *key);

/* Human-readable list of keys, defaults and ranges (for -h and the README). */
void config_print_keys(void);

#endif
