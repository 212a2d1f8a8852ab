/*
 * config-t.h — the gateway's configuration as one flat, fixed-size struct.
 *
 * Fixed-size on purpose: the master copies it into the shared segment on
 * every reload and workers copy it out, so it holds no pointers.
 */
#ifndef WSGATE_CONFIG_T_H
#define WSGATE_CONFIG_T_H

#include <stdint.h>

#include "log-t.h"

#define CONFIG_PATH_MAX 512
#define CONFIG_STR_MAX 64
#define CONFIG_BROKERS_MAX 8
#define CONFIG_URL_MAX 256
/* Hex SHA-256 and its NUL. */
#define CONFIG_FINGERPRINT_MAX 65
/* Longer strings (issuer, audience, origins: URLs). */
#define CONFIG_LONGSTR_MAX 256
/* A list key holds at most this many strings, each shorter than
 * CONFIG_LONGSTR_MAX (libconfig arrays: `key: ["a", "b"]`, also YAML). */
#define CONFIG_LIST_MAX 32

struct config_list {
    uint32_t count;
    char items[CONFIG_LIST_MAX][CONFIG_LONGSTR_MAX];
};

enum config_auth_mode {
    CONFIG_AUTH_NONE = 0,
    CONFIG_AUTH_JWT,
};

struct config {
    /* websocket.yaml */
    int64_t port;
    char bind_address[CONFIG_STR_MAX];
    int64_t metrics_port;
    int64_t workers;
    int64_t max_connections;
    int64_t heartbeat_interval;  /* seconds */
    int64_t connection_timeout;  /* seconds */
    int64_t handshake_timeout;   /* seconds */
    int64_t max_message_size;    /* bytes */
    int64_t max_send_buffer;     /* bytes */
    int64_t history_size;        /* messages per stream */
    int64_t history_max_bytes;   /* bytes of history per stream; 0 = no cap */
    int64_t send_timeout;        /* seconds a queue may stay over max_send_buffer */
    int64_t shutdown_timeout;    /* seconds */
    int64_t drain_window;        /* seconds over which reconnect after_ms is spread */
    int64_t max_streams;         /* streams per replica (restart to change) */
    int64_t max_subscriptions;   /* per connection */
    int64_t stream_memory;       /* bytes of segment for stream logs (restart to change) */
    int64_t stream_ttl;          /* seconds before an unused stream is reclaimed */
    int64_t config_watch;        /* 1: reload when the files change */
    int64_t broker_count;        /* 0: "none", a single replica */
    char broker[CONFIG_BROKERS_MAX][CONFIG_URL_MAX]; /* Redis URLs (restart to change) */
    char broker_password_file[CONFIG_PATH_MAX];
    char broker_sentinel_password_file[CONFIG_PATH_MAX];
    int64_t broker_replicas_ack;  /* publishes acked once WAIT saw this many replicas hold them */
    int64_t broker_timeout;       /* seconds: WAIT's bound, a silent pub/sub connection's life */
    int64_t max_messages_per_second; /* per connection, token bucket; 0 = off */
    int64_t message_burst;           /* bucket size */
    int64_t max_connections_per_ip;  /* replica-wide; 0 = off */
    int64_t compression;             /* 1: accept permessage-deflate offers (new connections) */
    int64_t compression_level;       /* zlib level 1..9 for outgoing messages */
    int64_t compression_min_size;    /* bytes: smaller messages go plain */
    struct config_list allowed_origins; /* empty = any Origin */
    char auth_mode_name[CONFIG_STR_MAX];
    struct config_list jwt_algorithms;
    char jwt_key_file[CONFIG_PATH_MAX];  /* resolved against the config's folder by config_load */
    char jwt_issuer[CONFIG_LONGSTR_MAX];   /* "" = not checked */
    char jwt_audience[CONFIG_LONGSTR_MAX]; /* "" = not checked */
    int64_t view_enabled;          /* 1: GET /view serves the ward wall */
    char environment[CONFIG_STR_MAX];
    char log_format_name[CONFIG_STR_MAX];
    char log_level_name[CONFIG_STR_MAX];
    enum log_format log_format;
    enum log_level log_level;
    /* TLS on the serving port: both files set, or neither (plain). Paths
     * are used as written (relative ones from the working directory). */
    char tls_cert_file[CONFIG_PATH_MAX];
    char tls_key_file[CONFIG_PATH_MAX];
    char tls_min_version[CONFIG_STR_MAX]; /* "1.2" or "1.3" */
    /* Not a key: set by the master once it has loaded and checked the pair
     * (tls_config_check), the SHA-256 of the bytes it read. A worker that
     * rereads the files on a reload uses them only if they still hash to
     * this, so every worker serves the pair the master validated. "" when
     * TLS is off. */
    char tls_fingerprint[CONFIG_FINGERPRINT_MAX];
    enum config_auth_mode auth_mode;
    unsigned jwt_algorithm_mask;   /* AUTH_ALG_* bits of jwt_algorithms */

    /* connection_pool.yaml */
    int64_t max_pool_size;
    int64_t pool_timeout;  /* seconds */
    int64_t max_idle_time; /* seconds */

    /* Where it came from, for reloads and error messages. */
    char path[CONFIG_PATH_MAX];
    char pool_path[CONFIG_PATH_MAX];
    int32_t jwt_key_file_line;     /* source line of jwt_key_file (or auth_mode), for errors */
};

#endif
