#include "config.h"

#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "brokerurl.h"
#include "auth.h"
#include "http.h"
#include "log.h"
#include "streamlog.h"

enum config_key_type {
    CONFIG_KEY_INT,
    CONFIG_KEY_STRING,
    CONFIG_KEY_BOOL, /* stored as int64_t 0/1 */
    CONFIG_KEY_BROKERS, /* "none" or a list of redis:// URLs */
    CONFIG_KEY_LIST, /* struct config_list: a libconfig array of strings */
};

/* One row per key: the single source of truth for names, defaults, ranges
 * and which file a key belongs in. */
struct config_key {
    const char *name;
    enum config_key_type type;
    size_t offset;
    int64_t def_int;
    const char *def_str;
    int64_t min, max;                /* ints: value range; strings: length range (the field
                                        holds max + 1 bytes); lists: item count range */
    const char *const *choices;      /* strings, list items: allowed values, NULL = any */
    const char *const *def_list;     /* lists: default items, NULL-terminated */
    int pool;                        /* 1: connection_pool.yaml */
    const char *help;
};

static const char *const config_log_formats[] = {"json", "text", NULL};
static const char *const config_log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const config_tls_versions[] = {"1.2", "1.3", NULL};
static const char *const config_auth_modes[] = {"none", "jwt", NULL};
static const char *const config_jwt_algorithms[] = {"HS256", "RS256", "ES256", NULL};
static const char *const config_jwt_algorithms_default[] = {"HS256", NULL};
static const char *const config_empty_list[] = {NULL};

#define CK_INT(n, def, lo, hi, pool, help) \
    {#n, CONFIG_KEY_INT, offsetof(struct config, n), def, NULL, lo, hi, NULL, NULL, pool, help}
#define CK_BOOL(n, def, help) \
    {#n, CONFIG_KEY_BOOL, offsetof(struct config, n), def, NULL, 0, 1, NULL, NULL, 0, help}
#define CK_STR(n, def, lo, hi, choices, help) \
    {#n, CONFIG_KEY_STRING, offsetof(struct config, n), 0, def, lo, hi, choices, NULL, 0, help}
#define CK_LIST(n, def, lo, choices, help) \
    {#n, CONFIG_KEY_LIST, offsetof(struct config, n), 0, NULL, lo, CONFIG_LIST_MAX, choices, def, \
     0, help}
/* A file path: may be empty, up to CONFIG_PATH_MAX - 1 bytes. */
#define CK_PATH(n, help) \
    {#n, CONFIG_KEY_STRING, offsetof(struct config, n), 0, "", 0, CONFIG_PATH_MAX - 1, NULL, NULL, 0, help}

static const struct config_key config_keys[] = {
    CK_INT(port, 8003, 1, 65535, 0, "TCP port for WebSocket and HTTP (restart to change)"),
    CK_STR(bind_address, "0.0.0.0", 1, CONFIG_STR_MAX - 1, NULL,
           "IPv4 or IPv6 address to bind (restart to change)"),
    CK_INT(metrics_port, 8004, 0, 65535, 0, "master's /metrics and /health/detailed port; 0 disables"),
    CK_INT(workers, 0, 0, 64, 0, "worker processes; 0 = one per CPU this process may use (affinity, cgroup quota)"),
    CK_INT(max_connections, 10000, 1, 1000000, 0, "WebSocket connections per replica"),
    CK_INT(heartbeat_interval, 30, 1, 3600, 0, "seconds between server ping frames"),
    CK_INT(connection_timeout, 300, 1, 86400, 0, "seconds of client silence before closing"),
    CK_INT(handshake_timeout, 10, 1, 300, 0, "seconds to complete the HTTP request head"),
    CK_INT(max_message_size, 1048576, 16, 67108864, 0, "largest client message in bytes (1009 above)"),
    CK_INT(max_send_buffer, 4194304, 65536, 1073741824, 0,
           "unsent bytes per connection before closing it as a slow consumer (1013)"),
    CK_INT(send_timeout, 5, 1, 3600, 0,
           "seconds a connection's unsent bytes may stay above max_send_buffer, or not move "
           "at all, before it is closed as a slow consumer (1013)"),
    CK_INT(history_size, 1024, 1, 1000000, 0,
           "messages kept per stream for resume (bounds replay, never live delivery)"),
    CK_INT(history_max_bytes, 0, 0, 68719476736LL, 0,
           "bytes of history kept per stream for resume; 0 = only history_size bounds it"),
    CK_INT(shutdown_timeout, 30, 0, 3600, 0, "seconds a drain may take before closing the rest"),
    CK_INT(drain_window, 5, 0, 600, 0, "seconds over which reconnect after_ms is spread on drain"),
    CK_INT(max_streams, 1024, 1, 1000000, 0, "streams held per replica (restart to change)"),
    CK_INT(max_subscriptions, 64, 1, 100000, 0, "subscriptions per connection"),
    CK_INT(stream_memory, 536870912, 1048576, 68719476736LL, 0,
           "bytes of shared memory holding stream messages, one pool for every stream "
           "(restart to change)"),
    CK_INT(stream_ttl, 300, 1, 604800, 0,
           "seconds without subscriber or publish before a stream and its history are dropped"),
    {"broker", CONFIG_KEY_BROKERS, offsetof(struct config, broker), 0, "none", 0,
     CONFIG_BROKERS_MAX, NULL, NULL, 0,
     "\"none\" (single replica) or a list of redis:// or redis-sentinel:// URLs streams are "
     "sharded over "
     "(restart to change)"},
    CK_PATH(broker_password_file, "file holding the Redis password (never logged); empty: none"),
    CK_PATH(broker_sentinel_password_file,
            "file holding the Redis Sentinels' password (never logged); empty: none"),
    CK_INT(broker_replicas_ack, 0, 0, 16, 0,
           "replicas that must hold a publish (Redis WAIT) before it is acknowledged; "
           "0 = acknowledged once the master has it"),
    CK_INT(broker_timeout, 5, 1, 60, 0,
           "seconds WAIT may take, and a pub/sub connection may stay silent to its "
           "pings before it is replaced"),
    CK_BOOL(config_watch, 0,
            "reload by itself when the config files change (inotify; Kubernetes configmap swaps)"),
    CK_INT(max_messages_per_second, 10000, 0, 1000000, 0,
           "messages a connection may send per second (token bucket); 0 = no limit"),
    CK_INT(message_burst, 20000, 1, 1000000, 0,
           "messages a connection may send at once above the rate (the bucket's size)"),
    CK_INT(max_connections_per_ip, 0, 0, 1000000, 0,
           "WebSocket connections per client IP across the replica (429 above); 0 = no limit"),
    CK_BOOL(compression, 1,
            "accept permessage-deflate (RFC 7692) from new connections; stream messages are "
            "compressed once per worker"),
    CK_INT(compression_level, 3, 1, 9, 0, "zlib level for outgoing messages (1 fastest, 9 smallest)"),
    CK_INT(compression_min_size, 256, 0, 67108864, 0,
           "bytes: smaller outgoing messages are sent uncompressed"),
    CK_LIST(allowed_origins, config_empty_list, 0, NULL,
            "Origin values a browser handshake may carry (scheme://host[:port]); [] = any"),
    CK_STR(auth_mode_name, "none", 1, CONFIG_STR_MAX - 1, config_auth_modes,
           "none, or jwt: every handshake needs a valid token (401 otherwise)"),
    CK_LIST(jwt_algorithms, config_jwt_algorithms_default, 1, config_jwt_algorithms,
            "token algorithms accepted: HS256, RS256, ES256 (must suit jwt_key_file)"),
    CK_STR(jwt_key_file, "", 0, CONFIG_PATH_MAX - 1, NULL,
           "HMAC secret or PEM public key verifying tokens (relative: to this file's folder); "
           "reread on reload"),
    CK_STR(jwt_issuer, "", 0, CONFIG_LONGSTR_MAX - 1, NULL,
           "required iss claim; \"\" = not checked"),
    CK_STR(jwt_audience, "", 0, CONFIG_LONGSTR_MAX - 1, NULL,
           "required aud claim (or one of its items); \"\" = not checked"),
    CK_BOOL(view_enabled, 1,
            "serve the ward wall page at GET /view on port (off: 404); live on reload"),
    CK_STR(environment, "production", 1, CONFIG_STR_MAX - 1, NULL,
           "value of the environment label on every metric"),
    CK_STR(log_format_name, "json", 1, CONFIG_STR_MAX - 1, config_log_formats, "json or text"),
    CK_STR(log_level_name, "info", 1, CONFIG_STR_MAX - 1, config_log_levels,
           "debug, info, warn or error"),
    CK_PATH(tls_cert_file, "PEM certificate (chain allowed) for wss:// and https:// on port; "
                           "\"\" = plain; reread on SIGHUP (on/off: restart)"),
    CK_PATH(tls_key_file, "PEM private key of tls_cert_file (not encrypted); reread on SIGHUP"),
    CK_STR(tls_min_version, "1.2", 1, CONFIG_STR_MAX - 1, config_tls_versions,
           "oldest TLS version accepted: 1.2 or 1.3"),
    CK_INT(max_pool_size, 1000, 1, 100000, 1, "broker connections per worker (cluster mode)"),
    CK_INT(pool_timeout, 30, 1, 3600, 1, "seconds a publish may wait for a broker connection"),
    CK_INT(max_idle_time, 300, 1, 86400, 1, "seconds before an idle broker connection is closed"),
};

#define CONFIG_KEY_COUNT (sizeof(config_keys) / sizeof(config_keys[0]))

/* The config file spells the log keys without the _name suffix the struct
 * needs to sit beside the parsed enums. */
static const char *config_key_file_name(const struct config_key *k)
{
    if (strcmp(k->name, "log_format_name") == 0)
        return "log_format";
    if (strcmp(k->name, "log_level_name") == 0)
        return "log_level";
    if (strcmp(k->name, "auth_mode_name") == 0)
        return "auth_mode";
    return k->name;
}

static const struct config_key *config_key_find(const char *file_name)
{
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        if (strcmp(config_key_file_name(&config_keys[i]), file_name) == 0)
            return &config_keys[i];
    }
    return NULL;
}

static void config_derive(struct config *cfg)
{
    log_format_parse(cfg->log_format_name, &cfg->log_format);
    log_level_parse(cfg->log_level_name, &cfg->log_level);
    cfg->auth_mode = strcmp(cfg->auth_mode_name, "jwt") == 0 ? CONFIG_AUTH_JWT : CONFIG_AUTH_NONE;
    cfg->jwt_algorithm_mask = 0;
    for (uint32_t i = 0; i < cfg->jwt_algorithms.count; i++)
        cfg->jwt_algorithm_mask |= auth_alg_parse(cfg->jwt_algorithms.items[i]);
}

static void config_list_set(struct config_list *l, const char *const *items)
{
    memset(l, 0, sizeof(*l));
    for (; items && *items && l->count < CONFIG_LIST_MAX; items++)
        snprintf(l->items[l->count++], CONFIG_LONGSTR_MAX, "%s", *items);
}

void config_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        const struct config_key *k = &config_keys[i];
        char *field = (char *)cfg + k->offset;
        if (k->type == CONFIG_KEY_INT || k->type == CONFIG_KEY_BOOL)
            *(int64_t *)field = k->def_int;
        else if (k->type == CONFIG_KEY_LIST)
            config_list_set((struct config_list *)field, k->def_list);
        else if (k->type == CONFIG_KEY_STRING)
            snprintf(field, (size_t)k->max + 1, "%s", k->def_str);
    }
    config_derive(cfg);
}

static int config_fail(char *err, size_t errlen, const char *file, int line, const char *key,
                       const char *what)
{
    if (key)
        snprintf(err, errlen, "%s:%d: key '%s': %s", file, line, key, what);
    else
        snprintf(err, errlen, "%s:%d: %s", file, line, what);
    return -EINVAL;
}

static int config_check_environment(const char *value, const char *filename, int line, char *err,
                                    size_t errlen);

/* 1 when v is among a key's allowed values (or the key allows any). */
static int config_choice_allowed(const char *const *choices, const char *v)
{
    if (!choices)
        return 1;
    for (const char *const *c = choices; *c; c++) {
        if (strcmp(*c, v) == 0)
            return 1;
    }
    return 0;
}

/* `broker: "none"` or `broker: ["redis://…", …]`. */
static int config_apply_brokers(const config_setting_t *s, const char *filename, int line,
                                struct config *cfg, char *err, size_t errlen)
{
    char what[320];
    if (config_setting_type(s) == CONFIG_TYPE_STRING &&
        strcmp(config_setting_get_string(s), "none") == 0) {
        cfg->broker_count = 0;
        return 0;
    }
    if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST)
        return config_fail(err, errlen, filename, line, "broker",
                           "expected \"none\" or a list of redis:// URLs");
    int n = config_setting_length(s);
    if (n < 1 || n > CONFIG_BROKERS_MAX) {
        snprintf(what, sizeof(what), "between 1 and %d URLs expected", CONFIG_BROKERS_MAX);
        return config_fail(err, errlen, filename, line, "broker", what);
    }
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *url = config_setting_type(e) == CONFIG_TYPE_STRING ? config_setting_get_string(e)
                                                                       : NULL;
        struct broker_url u;
        const char *why = "expected a quoted redis:// URL";
        if (!url || strlen(url) >= CONFIG_URL_MAX || broker_url_parse(url, &u, &why) < 0) {
            /* Never echo the URL: it may carry a password. */
            snprintf(what, sizeof(what), "URL %d: %s", i + 1, why);
            return config_fail(err, errlen, filename, line, "broker", what);
        }
        snprintf(cfg->broker[i], CONFIG_URL_MAX, "%s", url);
    }
    cfg->broker_count = n;
    return 0;
}

static int config_apply_setting(const config_setting_t *s, const char *filename, int pool,
                                struct config *cfg, char *err, size_t errlen)
{
    const char *name = config_setting_name(s);
    int line = config_setting_source_line(s);
    const struct config_key *k = config_key_find(name);
    char what[256];

    if (!k)
        return config_fail(err, errlen, filename, line, name,
                           "unknown key (see `wsgate -h` for the list of keys)");
    if (k->pool != pool) {
        snprintf(what, sizeof(what), "belongs in %s, not in this file",
                 k->pool ? "connection_pool.yaml" : "websocket.yaml");
        return config_fail(err, errlen, filename, line, name, what);
    }

    char *field = (char *)cfg + k->offset;
    int type = config_setting_type(s);
    if (k->type == CONFIG_KEY_BROKERS)
        return config_apply_brokers(s, filename, line, cfg, err, errlen);
    if (k->type == CONFIG_KEY_BOOL) {
        if (type != CONFIG_TYPE_BOOL)
            return config_fail(err, errlen, filename, line, name, "expected true or false");
        *(int64_t *)field = config_setting_get_bool(s) ? 1 : 0;
    } else if (k->type == CONFIG_KEY_INT) {
        if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
            return config_fail(err, errlen, filename, line, name, "expected an integer");
        int64_t v = config_setting_get_int64(s);
        if (v < k->min || v > k->max) {
            snprintf(what, sizeof(what), "%lld is out of range [%lld, %lld]", (long long)v,
                     (long long)k->min, (long long)k->max);
            return config_fail(err, errlen, filename, line, name, what);
        }
        *(int64_t *)field = v;
    } else if (k->type == CONFIG_KEY_LIST) {
        if (type != CONFIG_TYPE_ARRAY)
            return config_fail(err, errlen, filename, line, name,
                               "expected a list of quoted strings, e.g. [\"a\", \"b\"]");
        int n = config_setting_length(s);
        if (n < k->min || n > k->max) {
            snprintf(what, sizeof(what), "%d item(s) is out of range [%lld, %lld]", n,
                     (long long)k->min, (long long)k->max);
            return config_fail(err, errlen, filename, line, name, what);
        }
        struct config_list *l = (struct config_list *)field;
        memset(l, 0, sizeof(*l));
        for (int i = 0; i < n; i++) {
            const config_setting_t *item = config_setting_get_elem(s, (unsigned)i);
            if (config_setting_type(item) != CONFIG_TYPE_STRING)
                return config_fail(err, errlen, filename, line, name,
                                   "expected a list of quoted strings, e.g. [\"a\", \"b\"]");
            const char *v = config_setting_get_string(item);
            size_t vlen = strlen(v);
            if (vlen == 0 || vlen >= CONFIG_LONGSTR_MAX) {
                snprintf(what, sizeof(what), "item %d: length %zu is out of range [1, %d]", i + 1,
                         vlen, CONFIG_LONGSTR_MAX - 1);
                return config_fail(err, errlen, filename, line, name, what);
            }
            if (!config_choice_allowed(k->choices, v)) {
                snprintf(what, sizeof(what), "item \"%.64s\" is not one of the allowed values", v);
                return config_fail(err, errlen, filename, line, name, what);
            }
            if (strcmp(k->name, "allowed_origins") == 0) {
                char norm[CONFIG_LONGSTR_MAX];
                if (http_origin_normalize(v, vlen, norm, sizeof(norm)) < 0) {
                    snprintf(what, sizeof(what),
                             "item \"%.64s\" is not an origin: scheme://host[:port], no path", v);
                    return config_fail(err, errlen, filename, line, name, what);
                }
            }
            snprintf(l->items[l->count++], CONFIG_LONGSTR_MAX, "%s", v);
        }
    } else {
        if (type != CONFIG_TYPE_STRING)
            return config_fail(err, errlen, filename, line, name, "expected a quoted string");
        const char *v = config_setting_get_string(s);
        size_t n = strlen(v);
        if ((int64_t)n < k->min || (int64_t)n > k->max) {
            snprintf(what, sizeof(what), "length %zu is out of range [%lld, %lld]", n,
                     (long long)k->min, (long long)k->max);
            return config_fail(err, errlen, filename, line, name, what);
        }
        if (!config_choice_allowed(k->choices, v)) {
            snprintf(what, sizeof(what), "\"%.64s\" is not one of the allowed values", v);
            return config_fail(err, errlen, filename, line, name, what);
        }
        if (strcmp(k->name, "environment") == 0 &&
            config_check_environment(v, filename, line, err, errlen) < 0)
            return -EINVAL;
        snprintf(field, (size_t)k->max + 1, "%s", v);
        if (strcmp(k->name, "jwt_key_file") == 0)
            cfg->jwt_key_file_line = line;
    }
    return 0;
}

static int config_check_environment(const char *value, const char *filename, int line, char *err,
                                    size_t errlen)
{
    /* The environment is a Prometheus label value: keep it to characters
     * that need no escaping anywhere (URLs, PromQL, dashboards). */
    for (const char *p = value; *p; p++) {
        if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return config_fail(err, errlen, filename, line, "environment",
                               "only letters, digits, '_', '-' and '.' are allowed");
    }
    return 0;
}

/* The key a syntax error's line starts with (libconfig reports only the
 * line), so that the message names file, line and key; NULL when the line
 * does not start with a name. */
static const char *config_line_key(const char *text, int line, char *key, size_t keylen)
{
    for (int n = 1; n < line && text; n++) {
        text = strchr(text, '\n');
        if (text)
            text++;
    }
    if (!text || line < 1)
        return NULL;
    while (*text == ' ' || *text == '\t')
        text++;
    size_t len = 0;
    while ((('a' <= text[len] && text[len] <= 'z') || ('A' <= text[len] && text[len] <= 'Z') ||
            text[len] == '_' || (len > 0 && '0' <= text[len] && text[len] <= '9')) &&
           len + 1 < keylen)
        len++;
    if (len == 0)
        return NULL;
    memcpy(key, text, len);
    key[len] = '\0';
    return key;
}

/* The runbook patches the configmap with
 *   kubectl patch … -p '{"data":{"websocket.yaml":"max_connections: 10000\\nheartbeat_interval: 30…"}}'
 * whose single-quoted \\n reaches the file as a backslash and an 'n', not a
 * line break. A backslash is never valid outside a quoted string in this
 * syntax, so reading that pair as a line break there is unambiguous and lets
 * the runbook work as written. Returns a malloc'd copy, or NULL. */
static char *config_unescape_newlines(const char *text)
{
    size_t n = strlen(text);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    int quoted = 0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (quoted) {
            if (c == '\\' && i + 1 < n)
                out[j++] = text[i++];
            else if (c == '"')
                quoted = 0;
        } else if (c == '"') {
            quoted = 1;
        } else if (c == '#') {
            /* A comment runs to the end of the line: copy it untouched. */
            while (i < n && text[i] != '\n')
                out[j++] = text[i++];
            if (i == n)
                break;
            c = text[i];
        } else if (c == '\\' && i + 1 < n && text[i + 1] == 'n') {
            i++;
            c = '\n';
        }
        out[j++] = c;
    }
    out[j] = '\0';
    return out;
}

int config_parse_text(const char *text, const char *filename, int pool, struct config *cfg,
                      char *err, size_t errlen)
{
    config_t lc;
    config_init(&lc);
    int rc = 0;
    char *unescaped = config_unescape_newlines(text);
    if (!unescaped) {
        config_destroy(&lc);
        return config_fail(err, errlen, filename, 0, NULL, "out of memory");
    }
    text = unescaped;
    if (!config_read_string(&lc, text)) {
        char key[64];
        int line = config_error_line(&lc);
        rc = config_fail(err, errlen, filename, line, config_line_key(text, line, key, sizeof(key)),
                         config_error_text(&lc));
        goto out;
    }
    const config_setting_t *root = config_root_setting(&lc);
    for (int i = 0; i < config_setting_length(root); i++) {
        rc = config_apply_setting(config_setting_get_elem(root, (unsigned)i), filename, pool, cfg,
                                  err, errlen);
        if (rc < 0)
            goto out;
    }
    if (!pool && streamlog_pool_chunks((uint64_t)cfg->stream_memory) <
                     streamlog_chunks_for((uint64_t)cfg->max_message_size)) {
        const config_setting_t *at = config_lookup(&lc, "stream_memory");
        if (!at)
            at = config_lookup(&lc, "max_message_size");
        char why[160];
        snprintf(why, sizeof(why),
                 "cannot hold one message of max_message_size (%lld bytes): needs at least "
                 "%llu bytes; raise it or lower max_message_size",
                 (long long)cfg->max_message_size,
                 (unsigned long long)(streamlog_chunks_for((uint64_t)cfg->max_message_size) *
                                      STREAMLOG_CHUNK));
        rc = config_fail(err, errlen, filename, at ? config_setting_source_line(at) : 0,
                         "stream_memory", why);
        goto out;
    }
    if (!pool && (cfg->tls_cert_file[0] == '\0') != (cfg->tls_key_file[0] == '\0')) {
        /* Half a pair is a mistake, never "plain after all": name the key
         * that is missing, at the line of the one that is there. */
        int cert_set = cfg->tls_cert_file[0] != '\0';
        const config_setting_t *at = config_lookup(&lc, cert_set ? "tls_cert_file" : "tls_key_file");
        rc = config_fail(err, errlen, filename, at ? config_setting_source_line(at) : 0,
                         cert_set ? "tls_key_file" : "tls_cert_file",
                         cert_set ? "missing: tls_cert_file is set, so tls_key_file must name "
                                    "its private key (or set both to \"\" for plain)"
                                  : "missing: tls_key_file is set, so tls_cert_file must name "
                                    "its certificate (or set both to \"\" for plain)");
        goto out;
    }
    if (!pool && strcmp(cfg->auth_mode_name, "jwt") == 0 && cfg->jwt_key_file[0] == '\0') {
        const config_setting_t *at = config_lookup(&lc, "auth_mode");
        rc = config_fail(err, errlen, filename, at ? config_setting_source_line(at) : 0,
                         "jwt_key_file",
                         "required when auth_mode is \"jwt\": the HMAC secret or PEM public key "
                         "that verifies tokens");
        goto out;
    }
    config_derive(cfg);
out:
    config_destroy(&lc);
    free(unescaped);
    return rc;
}

/* Read a whole file; a config is small, so a hard cap keeps a wrong path
 * (a device, a huge log) from eating memory. */
static int config_read_file_text(const char *path, char **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, errlen, "%s:0: cannot open: %s", path, strerror(e));
        return -e;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s:0: out of memory", path);
        return -ENOMEM;
    }
    len = fread(buf, 1, cap, f);
    int too_big = !feof(f);
    int failed = ferror(f);
    fclose(f);
    if (failed || too_big) {
        free(buf);
        snprintf(err, errlen, "%s:0: %s", path, failed ? "read error" : "larger than 1 MiB");
        return -EINVAL;
    }
    buf[len] = '\0';
    if (strlen(buf) != len) {
        free(buf);
        snprintf(err, errlen, "%s:0: contains a NUL byte", path);
        return -EINVAL;
    }
    *out = buf;
    return 0;
}

static int config_load_file(const char *path, int pool, struct config *cfg, char *err,
                            size_t errlen)
{
    char *text = NULL;
    int rc = config_read_file_text(path, &text, err, errlen);
    if (rc < 0)
        return rc;
    rc = config_parse_text(text, path, pool, cfg, err, errlen);
    free(text);
    return rc;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
    config_defaults(cfg);
    if (strlen(path) >= CONFIG_PATH_MAX - 32) {
        snprintf(err, errlen, "%.64s…:0: path too long", path);
        return -ENAMETOOLONG;
    }
    snprintf(cfg->path, sizeof(cfg->path), "%s", path);
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    snprintf(cfg->pool_path, sizeof(cfg->pool_path), "%.*sconnection_pool.yaml", dirlen, path);

    int rc = config_load_file(path, 0, cfg, err, errlen);
    if (rc < 0)
        return rc;
    if (access(cfg->pool_path, F_OK) == 0)
        rc = config_load_file(cfg->pool_path, 1, cfg, err, errlen);
    if (rc < 0 || cfg->auth_mode != CONFIG_AUTH_JWT)
        return rc;

    /* The key must load now, so that `wsgate -t`, a start and a reload
     * all refuse a key the workers could not use. */
    if (cfg->jwt_key_file[0] != '/' && dirlen > 0) {
        char resolved[CONFIG_PATH_MAX];
        int n = snprintf(resolved, sizeof(resolved), "%.*s%s", dirlen, path, cfg->jwt_key_file);
        if (n < 0 || (size_t)n >= sizeof(resolved))
            return config_fail(err, errlen, path, cfg->jwt_key_file_line, "jwt_key_file",
                               "path too long once resolved against the config's folder");
        memcpy(cfg->jwt_key_file, resolved, (size_t)n + 1);
    }
    struct auth_key *key = malloc(sizeof(*key));
    if (!key) {
        snprintf(err, errlen, "%s:0: out of memory", path);
        return -ENOMEM;
    }
    char why[256];
    rc = auth_key_load(cfg->jwt_key_file, cfg->jwt_algorithm_mask, key, why, sizeof(why));
    auth_key_clear(key);
    free(key);
    if (rc < 0)
        return config_fail(err, errlen, path, cfg->jwt_key_file_line, "jwt_key_file", why);
    return 0;
}

const char *config_restart_key_changed(const struct config *old_cfg, const struct config *new_cfg)
{
    if (old_cfg->port != new_cfg->port)
        return "port";
    if (strcmp(old_cfg->bind_address, new_cfg->bind_address) != 0)
        return "bind_address";
    if (old_cfg->max_streams != new_cfg->max_streams)
        return "max_streams";
    if (old_cfg->stream_memory != new_cfg->stream_memory)
        return "stream_memory";
    if (old_cfg->broker_count != new_cfg->broker_count ||
        memcmp(old_cfg->broker, new_cfg->broker, sizeof(old_cfg->broker)) != 0)
        return "broker";
    /* Turning TLS on or off changes what the port speaks under every
     * client at once; a new certificate or key is a live change. */
    if ((old_cfg->tls_cert_file[0] == '\0') != (new_cfg->tls_cert_file[0] == '\0'))
        return "tls_cert_file";
    return NULL;
}

int config_key_line(const char *path, const char *key)
{
    char *text = NULL;
    char err[CONFIG_PATH_MAX + 64];
    if (config_read_file_text(path, &text, err, sizeof(err)) < 0)
        return 0;
    config_t lc;
    config_init(&lc);
    int line = 0;
    if (config_read_string(&lc, text)) {
        const config_setting_t *s = config_lookup(&lc, key);
        if (s)
            line = config_setting_source_line(s);
    }
    config_destroy(&lc);
    free(text);
    return line;
}

void config_print_keys(void)
{
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        const struct config_key *k = &config_keys[i];
        char def[80];
        if (k->type == CONFIG_KEY_INT)
            snprintf(def, sizeof(def), "%lld", (long long)k->def_int);
        else if (k->type == CONFIG_KEY_BOOL)
            snprintf(def, sizeof(def), "%s", k->def_int ? "true" : "false");
        else if (k->type == CONFIG_KEY_BROKERS)
            snprintf(def, sizeof(def), "\"none\"");
        else if (k->type == CONFIG_KEY_LIST) {
            size_t n = 0;
            def[n++] = '[';
            for (const char *const *d = k->def_list; *d && n + strlen(*d) + 5 < sizeof(def); d++)
                n += (size_t)snprintf(def + n, sizeof(def) - n, "%s\"%s\"", d == k->def_list ? "" : ", ",
                                      *d);
            def[n++] = ']';
            def[n] = '\0';
        }
        else
            snprintf(def, sizeof(def), "\"%s\"", k->def_str);
        printf("  %-24s %-12s %s%s\n", config_key_file_name(k), def, k->help,
               k->pool ? " [connection_pool.yaml]" : "");
    }
}
