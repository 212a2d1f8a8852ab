/*
 * Unit suite for shared/config.c: defaults, loading websocket.yaml and the
 * connection_pool.yaml beside it, every kind of error (syntax, unknown key,
 * wrong type, out of range, bad choice, bad environment label, key in the
 * wrong file) naming file, line and key, the runbook's configmap patch, the
 * shipped etc/ files, and which key changes need a restart.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "unit.h"

#ifndef WSGATE_SOURCE_ROOT
#error "WSGATE_SOURCE_ROOT must be defined by the build"
#endif

/* The configmap patch of the runbook, byte for byte. */
static const char runbook_patch[] =
    "max_connections: 10000\nheartbeat_interval: 30\nconnection_timeout: 300\nmax_message_size: "
    "1048576";

/* ---- temp directories: one per test, removed by the (parent-side)
 * unchecked teardown even when a test fails ---- */

static char tmp_root[256];

static void tmp_setup(void)
{
    snprintf(tmp_root, sizeof(tmp_root), "/tmp/wsgate-unit-config-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(tmp_root))
        abort();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void tmp_teardown(void)
{
    nftw(tmp_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Create tmp_root/<dir>/ and write `text` into <dir>/<file>; returns the
 * file's path in a static buffer (valid until the next call). */
static const char *write_file(const char *dir, const char *file, const char *text)
{
    static char path[512];
    char d[400];
    snprintf(d, sizeof(d), "%s/%s", tmp_root, dir);
    mkdir(d, 0700);
    snprintf(path, sizeof(path), "%s/%s", d, file);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fputs(text, f) >= 0, 1);
    ck_assert_int_eq(fclose(f), 0);
    return path;
}

/* Parse websocket.yaml text on top of the defaults. */
static int parse(const char *text, struct config *cfg, char *err, size_t errlen)
{
    config_defaults(cfg);
    err[0] = '\0';
    return config_parse_text(text, "websocket.yaml", 0, cfg, err, errlen);
}

/* Expect `text` to be refused with an error starting "websocket.yaml:<line>:
 * key '<key>':" and containing `what`. */
static void expect_error(const char *text, int line, const char *key, const char *what)
{
    struct config cfg;
    char err[512];
    int rc = parse(text, &cfg, err, sizeof(err));
    ck_assert_msg(rc < 0, "accepted: %s", text);
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "websocket.yaml:%d: key '%s': ", line, key);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "error \"%s\" does not start with \"%s\"",
                  err, prefix);
    if (what)
        ck_assert_msg(strstr(err, what) != NULL, "error \"%s\" lacks \"%s\"", err, what);
}

static void expect_defaults(const struct config *cfg)
{
    ck_assert_int_eq(cfg->port, 8003);
    ck_assert_str_eq(cfg->bind_address, "0.0.0.0");
    ck_assert_int_eq(cfg->metrics_port, 8004);
    ck_assert_int_eq(cfg->workers, 0);
    ck_assert_int_eq(cfg->max_connections, 10000);
    ck_assert_int_eq(cfg->heartbeat_interval, 30);
    ck_assert_int_eq(cfg->connection_timeout, 300);
    ck_assert_int_eq(cfg->handshake_timeout, 10);
    ck_assert_int_eq(cfg->max_message_size, 1048576);
    ck_assert_int_eq(cfg->max_send_buffer, 4194304);
    ck_assert_int_eq(cfg->history_size, 1024);
    ck_assert_int_eq(cfg->send_timeout, 5);
    ck_assert_int_eq(cfg->history_max_bytes, 0);
    ck_assert_int_eq(cfg->shutdown_timeout, 30);
    ck_assert_int_eq(cfg->drain_window, 5);
    ck_assert_str_eq(cfg->environment, "production");
    ck_assert_str_eq(cfg->log_format_name, "json");
    ck_assert_str_eq(cfg->log_level_name, "info");
    ck_assert_int_eq(cfg->log_format, LOG_FORMAT_JSON);
    ck_assert_int_eq(cfg->log_level, LOG_INFO);
    ck_assert_str_eq(cfg->tls_cert_file, "");
    ck_assert_str_eq(cfg->tls_key_file, "");
    ck_assert_str_eq(cfg->tls_min_version, "1.2");
    ck_assert_str_eq(cfg->tls_fingerprint, "");
    ck_assert_int_eq(cfg->max_pool_size, 1000);
    ck_assert_int_eq(cfg->pool_timeout, 30);
    ck_assert_int_eq(cfg->max_idle_time, 300);
    ck_assert_int_eq(cfg->max_messages_per_second, 10000);
    ck_assert_int_eq(cfg->message_burst, 20000);
    ck_assert_int_eq(cfg->max_connections_per_ip, 0);
    ck_assert_uint_eq(cfg->allowed_origins.count, 0);
    ck_assert_str_eq(cfg->auth_mode_name, "none");
    ck_assert_int_eq(cfg->auth_mode, CONFIG_AUTH_NONE);
    ck_assert_uint_eq(cfg->jwt_algorithms.count, 1);
    ck_assert_str_eq(cfg->jwt_algorithms.items[0], "HS256");
    ck_assert_uint_eq(cfg->jwt_algorithm_mask, AUTH_ALG_HS256);
    ck_assert_str_eq(cfg->jwt_key_file, "");
    ck_assert_str_eq(cfg->jwt_issuer, "");
    ck_assert_str_eq(cfg->jwt_audience, "");
}

/* ---- defaults and valid files ---- */

START_TEST(defaults_match_design)
{
    struct config cfg;
    memset(&cfg, 0xa5, sizeof(cfg));
    config_defaults(&cfg);
    expect_defaults(&cfg);
    ck_assert_str_eq(cfg.path, "");
    ck_assert_str_eq(cfg.pool_path, "");
}
END_TEST

START_TEST(empty_text_gives_defaults)
{
    struct config cfg;
    char err[256];
    ck_assert_int_eq(parse("", &cfg, err, sizeof(err)), 0);
    expect_defaults(&cfg);
    ck_assert_int_eq(parse("# only a comment\n\n", &cfg, err, sizeof(err)), 0);
    expect_defaults(&cfg);
}
END_TEST

START_TEST(missing_keys_take_defaults)
{
    struct config cfg;
    char err[256];
    ck_assert_int_eq(parse("port: 9000\nenvironment: \"staging\"\n", &cfg, err, sizeof(err)), 0);
    ck_assert_int_eq(cfg.port, 9000);
    ck_assert_str_eq(cfg.environment, "staging");
    /* Everything else untouched. */
    cfg.port = 8003;
    snprintf(cfg.environment, sizeof(cfg.environment), "production");
    expect_defaults(&cfg);
}
END_TEST

START_TEST(valid_file_with_every_key_loads)
{
    const char *path = write_file("all", "websocket.yaml",
                                  "# a comment line\n"
                                  "port: 9100                 # trailing comment\n"
                                  "bind_address: \"127.0.0.1\"\n"
                                  "metrics_port: 0\n"
                                  "workers: 4\n"
                                  "max_connections: 500\n"
                                  "heartbeat_interval: 15\n"
                                  "connection_timeout: 60\n"
                                  "handshake_timeout: 3\n"
                                  "max_message_size: 65536\n"
                                  "max_send_buffer: 131072\n"
                                  "history_size: 10\n"
                                  "shutdown_timeout: 0\n"
                                  "drain_window: 2\n"
                                  "environment: \"staging-eu.1_b\"\n"
                                  "log_format: \"text\"\n"
                                  "log_level: \"debug\"\n");
    struct config cfg;
    char err[512] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.port, 9100);
    ck_assert_str_eq(cfg.bind_address, "127.0.0.1");
    ck_assert_int_eq(cfg.metrics_port, 0);
    ck_assert_int_eq(cfg.workers, 4);
    ck_assert_int_eq(cfg.max_connections, 500);
    ck_assert_int_eq(cfg.heartbeat_interval, 15);
    ck_assert_int_eq(cfg.connection_timeout, 60);
    ck_assert_int_eq(cfg.handshake_timeout, 3);
    ck_assert_int_eq(cfg.max_message_size, 65536);
    ck_assert_int_eq(cfg.max_send_buffer, 131072);
    ck_assert_int_eq(cfg.history_size, 10);
    ck_assert_int_eq(cfg.shutdown_timeout, 0);
    ck_assert_int_eq(cfg.drain_window, 2);
    ck_assert_str_eq(cfg.environment, "staging-eu.1_b");
    ck_assert_str_eq(cfg.log_format_name, "text");
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_TEXT);
    ck_assert_str_eq(cfg.log_level_name, "debug");
    ck_assert_int_eq(cfg.log_level, LOG_DEBUG);
    /* No connection_pool.yaml beside it: pool keys keep their defaults. */
    ck_assert_int_eq(cfg.max_pool_size, 1000);
    ck_assert_int_eq(cfg.pool_timeout, 30);
    ck_assert_int_eq(cfg.max_idle_time, 300);
    ck_assert_str_eq(cfg.path, path);
    char pool[512];
    snprintf(pool, sizeof(pool), "%s/all/connection_pool.yaml", tmp_root);
    ck_assert_str_eq(cfg.pool_path, pool);
}
END_TEST

START_TEST(libconfig_separators_and_semicolons_accepted)
{
    struct config cfg;
    char err[256];
    ck_assert_msg(parse("port = 9001;\nworkers: 2;\n", &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.port, 9001);
    ck_assert_int_eq(cfg.workers, 2);
}
END_TEST

START_TEST(runbook_patch_is_valid_on_its_own)
{
    struct config cfg;
    char err[256];
    ck_assert_msg(parse(runbook_patch, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.max_connections, 10000);
    ck_assert_int_eq(cfg.heartbeat_interval, 30);
    ck_assert_int_eq(cfg.connection_timeout, 300);
    ck_assert_int_eq(cfg.max_message_size, 1048576);
    expect_defaults(&cfg);
}
END_TEST

/* What `kubectl patch` really writes from the runbook's single-quoted
 * JSON: backslash-n pairs, not line breaks, all on one line. */
START_TEST(runbook_patch_as_kubectl_writes_it_is_valid)
{
    static const char literal[] = "max_connections: 10000\\nheartbeat_interval: 30\\n"
                                  "connection_timeout: 300\\nmax_message_size: 1048576";
    struct config cfg;
    char err[256];
    ck_assert_ptr_null(strchr(literal, '\n'));
    ck_assert_msg(parse(literal, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.max_connections, 10000);
    ck_assert_int_eq(cfg.heartbeat_interval, 30);
    ck_assert_int_eq(cfg.connection_timeout, 300);
    ck_assert_int_eq(cfg.max_message_size, 1048576);
    /* Inside a quoted string a backslash-n stays what it is. */
    ck_assert_int_ne(parse("environment: \"a\\nb\"", &cfg, err, sizeof(err)), 0);
}
END_TEST

START_TEST(runbook_patch_loads_as_a_file)
{
    const char *path = write_file("patch", "websocket.yaml", runbook_patch);
    struct config cfg;
    char err[512] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    expect_defaults(&cfg);
}
END_TEST

/* Compare two configs key by key so a failure names the key. */
static void expect_same_config(const struct config *a, const struct config *b)
{
#define SAME_INT(f) ck_assert_msg(a->f == b->f, #f ": %lld != %lld", (long long)a->f, (long long)b->f)
#define SAME_STR(f) ck_assert_msg(strcmp(a->f, b->f) == 0, #f ": \"%s\" != \"%s\"", a->f, b->f)
    SAME_INT(port);
    SAME_STR(bind_address);
    SAME_INT(metrics_port);
    SAME_INT(workers);
    SAME_INT(max_connections);
    SAME_INT(heartbeat_interval);
    SAME_INT(connection_timeout);
    SAME_INT(handshake_timeout);
    SAME_INT(max_message_size);
    SAME_INT(max_send_buffer);
    SAME_INT(history_size);
    SAME_INT(shutdown_timeout);
    SAME_INT(drain_window);
    SAME_STR(environment);
    SAME_STR(tls_cert_file);
    SAME_STR(tls_key_file);
    SAME_STR(tls_min_version);
    SAME_STR(log_format_name);
    SAME_STR(log_level_name);
    SAME_INT(log_format);
    SAME_INT(log_level);
    SAME_INT(max_pool_size);
    SAME_INT(pool_timeout);
    SAME_INT(max_idle_time);
#undef SAME_INT
#undef SAME_STR
}

START_TEST(shipped_etc_files_load_and_equal_defaults)
{
    const char *path = WSGATE_SOURCE_ROOT "/etc/websocket.yaml";
    struct config cfg, def;
    char err[512] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    config_defaults(&def);
    expect_same_config(&cfg, &def);
    ck_assert_str_eq(cfg.pool_path, WSGATE_SOURCE_ROOT "/etc/connection_pool.yaml");
    ck_assert_int_eq(access(cfg.pool_path, R_OK), 0);
}
END_TEST

START_TEST(shipped_files_state_every_key)
{
    /* Every key is written out (not merely defaulted): change each default
     * in a copy and check that the file overrides it. */
    static const char *const ws_keys[] = {
        "port", "bind_address", "metrics_port", "workers", "max_connections",
        "heartbeat_interval", "connection_timeout", "handshake_timeout", "max_message_size",
        "max_send_buffer", "send_timeout", "history_size", "history_max_bytes", "shutdown_timeout", "drain_window", "environment",
        "log_format", "log_level", "tls_cert_file", "tls_key_file", "tls_min_version",
        "max_messages_per_second", "message_burst",
        "max_connections_per_ip", "allowed_origins", "auth_mode", "jwt_algorithms", "jwt_key_file",
        "jwt_issuer", "jwt_audience",
    };
    static const char *const pool_keys[] = {"max_pool_size", "pool_timeout", "max_idle_time"};
    char text[8192];
    const char *files[2] = {WSGATE_SOURCE_ROOT "/etc/websocket.yaml",
                            WSGATE_SOURCE_ROOT "/etc/connection_pool.yaml"};
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        ck_assert_ptr_nonnull(fp);
        size_t n = fread(text, 1, sizeof(text) - 1, fp);
        fclose(fp);
        text[n] = '\0';
        const char *const *keys = f == 0 ? ws_keys : pool_keys;
        size_t count = f == 0 ? sizeof(ws_keys) / sizeof(ws_keys[0]) : 3;
        for (size_t i = 0; i < count; i++) {
            char needle[64];
            snprintf(needle, sizeof(needle), "\n%s:", keys[i]);
            ck_assert_msg(strstr(text, needle) != NULL, "%s lacks key %s", files[f], keys[i]);
        }
    }
}
END_TEST

/* ---- connection_pool.yaml ---- */

START_TEST(connection_pool_read_from_same_folder)
{
    write_file("pool", "connection_pool.yaml",
               "max_pool_size: 7\npool_timeout: 9\nmax_idle_time: 11\n");
    const char *path = write_file("pool", "websocket.yaml", "workers: 3\n");
    struct config cfg;
    char err[512] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.workers, 3);
    ck_assert_int_eq(cfg.max_pool_size, 7);
    ck_assert_int_eq(cfg.pool_timeout, 9);
    ck_assert_int_eq(cfg.max_idle_time, 11);
}
END_TEST

START_TEST(connection_pool_missing_keys_take_defaults)
{
    write_file("pool2", "connection_pool.yaml", "pool_timeout: 5\n");
    const char *path = write_file("pool2", "websocket.yaml", "");
    struct config cfg;
    char err[512] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.pool_timeout, 5);
    ck_assert_int_eq(cfg.max_pool_size, 1000);
    ck_assert_int_eq(cfg.max_idle_time, 300);
}
END_TEST

START_TEST(pool_keys_refused_in_websocket_yaml)
{
    expect_error("port: 8003\nmax_pool_size: 10\n", 2, "max_pool_size", "connection_pool.yaml");
    expect_error("pool_timeout: 10\n", 1, "pool_timeout", "connection_pool.yaml");
    expect_error("\n\n\nmax_idle_time: 10\n", 4, "max_idle_time", "connection_pool.yaml");
}
END_TEST

START_TEST(websocket_keys_refused_in_connection_pool_yaml)
{
    struct config cfg;
    char err[512] = "";
    config_defaults(&cfg);
    int rc = config_parse_text("max_pool_size: 10\nport: 9000\n", "connection_pool.yaml", 1, &cfg,
                               err, sizeof(err));
    ck_assert_int_lt(rc, 0);
    ck_assert_msg(strncmp(err, "connection_pool.yaml:2: key 'port': ", 36) == 0, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "websocket.yaml"));
}
END_TEST

START_TEST(error_in_connection_pool_names_that_file)
{
    write_file("pool3", "connection_pool.yaml", "max_pool_size: 10\npool_timeout: 0\n");
    const char *path = write_file("pool3", "websocket.yaml", "workers: 1\n");
    struct config cfg;
    char err[512] = "";
    ck_assert_int_lt(config_load(path, &cfg, err, sizeof(err)), 0);
    char prefix[512];
    snprintf(prefix, sizeof(prefix), "%s/pool3/connection_pool.yaml:2: key 'pool_timeout': ",
             tmp_root);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s", err);
}
END_TEST

/* ---- errors ---- */

START_TEST(unknown_key_names_file_line_and_key)
{
    expect_error("port: 8003\nworkers: 2\nmax_conections: 5\n", 3, "max_conections", "unknown key");
    expect_error("heartbeat: 30\n", 1, "heartbeat", "unknown key");
}
END_TEST

START_TEST(unknown_key_error_from_config_load_names_the_path)
{
    const char *path = write_file("unknown", "websocket.yaml", "port: 8003\n\nbogus: 1\n");
    char expect[512];
    snprintf(expect, sizeof(expect), "%s:3: key 'bogus': ", path);
    struct config cfg;
    char err[512] = "";
    ck_assert_int_lt(config_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strncmp(err, expect, strlen(expect)) == 0, "%s", err);
}
END_TEST

START_TEST(file_suffix_keys_log_format_name_are_unknown)
{
    /* The struct's internal field names are not config keys. */
    expect_error("log_level_name: \"info\"\n", 1, "log_level_name", "unknown key");
    expect_error("log_format_name: \"json\"\n", 1, "log_format_name", "unknown key");
}
END_TEST

START_TEST(wrong_type_refused)
{
    expect_error("port: \"8003\"\n", 1, "port", "integer");
    expect_error("workers: 2.5\n", 1, "workers", "integer");
    expect_error("workers: true\n", 1, "workers", "integer");
    expect_error("max_connections: [1, 2]\n", 1, "max_connections", "integer");
    expect_error("environment: 5\n", 1, "environment", "string");
    expect_error("bind_address: 127\n", 1, "bind_address", "string");
    expect_error("log_level: true\n", 1, "log_level", "string");
}
END_TEST

START_TEST(out_of_range_low_refused)
{
    expect_error("port: 0\n", 1, "port", "out of range");
    expect_error("port: -1\n", 1, "port", "out of range");
    expect_error("max_connections: 0\n", 1, "max_connections", "out of range");
    expect_error("heartbeat_interval: 0\n", 1, "heartbeat_interval", "out of range");
    expect_error("max_message_size: 15\n", 1, "max_message_size", "out of range");
    expect_error("max_send_buffer: 65535\n", 1, "max_send_buffer", "out of range");
    expect_error("workers: -1\n", 1, "workers", "out of range");
}
END_TEST

START_TEST(out_of_range_high_refused)
{
    expect_error("port: 65536\n", 1, "port", "out of range");
    expect_error("metrics_port: 70000\n", 1, "metrics_port", "out of range");
    expect_error("workers: 65\n", 1, "workers", "out of range");
    expect_error("max_message_size: 67108865\n", 1, "max_message_size", "out of range");
    expect_error("connection_timeout: 86401\n", 1, "connection_timeout", "out of range");
    /* Beyond 32 bits: libconfig reads it as a 64-bit integer. */
    expect_error("max_connections: 9999999999\n", 1, "max_connections", "out of range");
}
END_TEST

START_TEST(range_bounds_are_inclusive)
{
    struct config cfg;
    char err[256];
    ck_assert_msg(parse("port: 1\nworkers: 64\nmax_message_size: 16\nmetrics_port: 0\n", &cfg, err,
                        sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(cfg.port, 1);
    ck_assert_int_eq(cfg.workers, 64);
    ck_assert_int_eq(cfg.max_message_size, 16);
    ck_assert_int_eq(cfg.metrics_port, 0);
    ck_assert_msg(parse("port: 65535\nmax_message_size: 67108864\n", &cfg, err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_int_eq(cfg.port, 65535);
    ck_assert_int_eq(cfg.max_message_size, 67108864);
}
END_TEST

START_TEST(log_level_and_format_choices)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    static const enum log_level level_values[] = {LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR};
    struct config cfg;
    char err[256], text[64];
    for (int i = 0; i < 4; i++) {
        snprintf(text, sizeof(text), "log_level: \"%s\"\n", levels[i]);
        ck_assert_msg(parse(text, &cfg, err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(cfg.log_level, level_values[i]);
        ck_assert_str_eq(cfg.log_level_name, levels[i]);
    }
    ck_assert_int_eq(parse("log_format: \"text\"\n", &cfg, err, sizeof(err)), 0);
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_TEXT);
    ck_assert_int_eq(parse("log_format: \"json\"\n", &cfg, err, sizeof(err)), 0);
    ck_assert_int_eq(cfg.log_format, LOG_FORMAT_JSON);

    expect_error("log_level: \"verbose\"\n", 1, "log_level", "not one of the allowed values");
    expect_error("log_level: \"INFO\"\n", 1, "log_level", "not one of the allowed values");
    expect_error("log_level: \"warning\"\n", 1, "log_level", "not one of the allowed values");
    expect_error("log_format: \"xml\"\n", 1, "log_format", "not one of the allowed values");
    expect_error("log_format: \"\"\n", 1, "log_format", NULL);
}
END_TEST

START_TEST(environment_label_characters)
{
    struct config cfg;
    char err[256];
    ck_assert_msg(parse("environment: \"Prod_2.eu-west\"\n", &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.environment, "Prod_2.eu-west");

    expect_error("environment: \"prod env\"\n", 1, "environment", "letters, digits");
    expect_error("\nenvironment: \"a\\\"b\"\n", 2, "environment", "letters, digits");
    expect_error("port: 8003\nenvironment: \"a{b}\"\n", 2, "environment", "letters, digits");
    expect_error("environment: \"a,b\"\n", 1, "environment", "letters, digits");
    expect_error("environment: \"caf\xc3\xa9\"\n", 1, "environment", "letters, digits");
    expect_error("environment: \"\"\n", 1, "environment", "length");
}
END_TEST

START_TEST(string_too_long_refused)
{
    char text[256];
    char val[100];
    memset(val, 'a', 64);
    val[64] = '\0';
    snprintf(text, sizeof(text), "environment: \"%s\"\n", val);
    expect_error(text, 1, "environment", "length");
    val[63] = '\0';
    struct config cfg;
    char err[256];
    snprintf(text, sizeof(text), "environment: \"%s\"\n", val);
    ck_assert_msg(parse(text, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.environment, val);
}
END_TEST

START_TEST(syntax_error_names_the_line)
{
    struct config cfg;
    char err[256];
    ck_assert_int_lt(parse("port: 8003\nworkers: = 3\n", &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strncmp(err, "websocket.yaml:2: ", 18) == 0, "%s", err);
    ck_assert_int_lt(parse("port: 8003\nworkers: 2\n\nhistory_size 10\n", &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strncmp(err, "websocket.yaml:4: ", 18) == 0, "%s", err);
    ck_assert_int_lt(parse("port 8003\nworkers: 2\n", &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strncmp(err, "websocket.yaml:1: ", 18) == 0, "%s", err);
}
END_TEST

START_TEST(duplicate_key_refused_naming_its_line)
{
    struct config cfg;
    char err[256];
    ck_assert_int_lt(parse("port: 8003\nworkers: 2\nport: 9000\n", &cfg, err, sizeof(err)), 0);
    ck_assert_msg(strncmp(err, "websocket.yaml:3: ", 18) == 0, "%s", err);
}
END_TEST

START_TEST(missing_file_is_an_error_naming_it)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/none/websocket.yaml", tmp_root);
    struct config cfg;
    char err[512] = "";
    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), -ENOENT);
    ck_assert_msg(strncmp(err, path, strlen(path)) == 0, "%s", err);
}
END_TEST

START_TEST(nul_byte_in_file_refused)
{
    char dir[400], path[450];
    snprintf(dir, sizeof(dir), "%s/nul", tmp_root);
    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/websocket.yaml", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fwrite("port: 1\0\nworkers: 2\n", 1, 20, f);
    fclose(f);
    struct config cfg;
    char err[512] = "";
    ck_assert_int_lt(config_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "NUL"));
}
END_TEST

/* ---- restart keys ---- */

/* ---- lists, auth and limits (issue 7) ---- */

START_TEST(string_lists_parse)
{
    struct config cfg;
    char err[512];
    ck_assert_int_eq(parse("allowed_origins: [\"https://dash.example\", \"http://localhost:3000\"]\n"
                           "jwt_algorithms: [\"RS256\", \"ES256\"]\n",
                           &cfg, err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg.allowed_origins.count, 2);
    ck_assert_str_eq(cfg.allowed_origins.items[0], "https://dash.example");
    ck_assert_str_eq(cfg.allowed_origins.items[1], "http://localhost:3000");
    ck_assert_uint_eq(cfg.jwt_algorithm_mask, AUTH_ALG_RS256 | AUTH_ALG_ES256);
    /* empty list, and the libconfig spelling with '=' and ';' */
    ck_assert_int_eq(parse("allowed_origins = [];\n", &cfg, err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg.allowed_origins.count, 0);
    /* a later file value replaces the list, it does not append */
    ck_assert_int_eq(parse("jwt_algorithms: [\"ES256\"]\n", &cfg, err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg.jwt_algorithms.count, 1);
    ck_assert_uint_eq(cfg.jwt_algorithm_mask, AUTH_ALG_ES256);
    /* as many items as allowed */
    char text[4096] = "allowed_origins: [";
    for (int i = 0; i < CONFIG_LIST_MAX; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s\"http://h%d.example\"",
                 i ? ", " : "", i);
    strcat(text, "]\n");
    ck_assert_int_eq(parse(text, &cfg, err, sizeof(err)), 0);
    ck_assert_uint_eq(cfg.allowed_origins.count, CONFIG_LIST_MAX);
}
END_TEST

START_TEST(string_list_errors_name_the_key)
{
    expect_error("log_level: \"info\"\nallowed_origins: \"https://a.example\"\n", 2,
                 "allowed_origins", "expected a list");
    expect_error("allowed_origins: [1, 2]\n", 1, "allowed_origins", "expected a list");
    expect_error("allowed_origins: [\"https://a.example/path\"]\n", 1, "allowed_origins",
                 "not an origin");
    expect_error("allowed_origins: [\"\"]\n", 1, "allowed_origins", "length");
    expect_error("jwt_algorithms: [\"HS512\"]\n", 1, "jwt_algorithms", "not one of the allowed");
    expect_error("jwt_algorithms: [\"none\"]\n", 1, "jwt_algorithms", "not one of the allowed");
    expect_error("jwt_algorithms: []\n", 1, "jwt_algorithms", "out of range");
    char text[4096] = "allowed_origins: [";
    for (int i = 0; i <= CONFIG_LIST_MAX; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s\"http://h%d.example\"",
                 i ? ", " : "", i);
    strcat(text, "]\n");
    expect_error(text, 1, "allowed_origins", "out of range");
}
END_TEST

START_TEST(auth_and_limit_keys_checked)
{
    expect_error("auth_mode: \"basic\"\n", 1, "auth_mode", "not one of the allowed");
    expect_error("workers: 2\nauth_mode: \"jwt\"\n", 2, "jwt_key_file", "required when auth_mode");
    expect_error("max_messages_per_second: -1\n", 1, "max_messages_per_second", "out of range");
    expect_error("message_burst: 0\n", 1, "message_burst", "out of range");
    expect_error("max_connections_per_ip: -1\n", 1, "max_connections_per_ip", "out of range");
    struct config cfg;
    char err[512];
    ck_assert_int_eq(parse("auth_mode: \"jwt\"\njwt_key_file: \"k\"\njwt_issuer: "
                           "\"https://auth.example/realms/clinical\"\njwt_audience: \"wsgate\"\n"
                           "max_messages_per_second: 0\nmax_connections_per_ip: 20\n",
                           &cfg, err, sizeof(err)), 0);
    ck_assert_int_eq(cfg.auth_mode, CONFIG_AUTH_JWT);
    ck_assert_str_eq(cfg.jwt_issuer, "https://auth.example/realms/clinical");
    ck_assert_str_eq(cfg.jwt_audience, "wsgate");
    ck_assert_int_eq(cfg.max_messages_per_second, 0);
    ck_assert_int_eq(cfg.max_connections_per_ip, 20);
    ck_assert_int_eq(cfg.jwt_key_file_line, 2);
}
END_TEST

START_TEST(stream_memory_must_hold_one_message_of_max_message_size)
{
    /* One pool for every stream: it must take the largest message the
     * config allows, wherever a stream's log stands (one chunk spare). */
    expect_error("stream_memory: 1048576\n", 1, "stream_memory", "cannot hold one message");
    expect_error("max_message_size: 2097152\nstream_memory: 2097152\n", 2, "stream_memory",
                 "needs at least 2129920 bytes");
    struct config cfg;
    char err[512];
    ck_assert_int_eq(parse("max_message_size: 2097152\n", &cfg, err, sizeof(err)), 0);
    ck_assert_int_eq(parse("stream_memory: 1048576\nmax_message_size: 1000000\n", &cfg, err,
                           sizeof(err)), 0);
    expect_error("send_timeout: 0\n", 1, "send_timeout", "out of range");
    expect_error("history_max_bytes: -1\n", 1, "history_max_bytes", "out of range");
}
END_TEST

START_TEST(jwt_key_file_loaded_relative_to_the_config)
{
    write_file("auth", "hmac.secret", "0123456789abcdef0123456789abcdef0123\n");
    const char *path = write_file("auth", "websocket.yaml",
                                  "auth_mode: \"jwt\"\njwt_key_file: \"hmac.secret\"\n");
    struct config cfg;
    char err[512] = "";
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    char want[600];
    snprintf(want, sizeof(want), "%s/auth/hmac.secret", tmp_root);
    ck_assert_str_eq(cfg.jwt_key_file, want);
    /* an absolute path stays as it is */
    char text[800];
    snprintf(text, sizeof(text), "auth_mode: \"jwt\"\njwt_key_file: \"%s\"\n", want);
    path = write_file("auth2", "websocket.yaml", text);
    ck_assert_msg(config_load(path, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.jwt_key_file, want);
}
END_TEST

START_TEST(jwt_key_file_problems_name_the_key)
{
    char err[512];
    struct config cfg;
    const char *path = write_file("nokey", "websocket.yaml",
                                  "auth_mode: \"jwt\"\n\njwt_key_file: \"missing.secret\"\n");
    ck_assert_int_lt(config_load(path, &cfg, err, sizeof(err)), 0);
    char prefix[600];
    snprintf(prefix, sizeof(prefix), "%s:3: key 'jwt_key_file': ", path);
    ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0, "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "missing.secret"));

    write_file("short", "hmac.secret", "short-secret\n");
    path = write_file("short", "websocket.yaml", "auth_mode: \"jwt\"\njwt_key_file: \"hmac.secret\"\n");
    ck_assert_int_lt(config_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "key 'jwt_key_file'"));
    ck_assert_ptr_nonnull(strstr(err, "at least 32"));
    ck_assert_ptr_null(strstr(err, "short-secret")); /* the secret is never echoed */

    /* an HMAC secret while only RS256 is accepted */
    write_file("alg", "hmac.secret", "0123456789abcdef0123456789abcdef0123\n");
    path = write_file("alg", "websocket.yaml",
                      "auth_mode: \"jwt\"\njwt_algorithms: [\"RS256\"]\njwt_key_file: \"hmac.secret\"\n");
    ck_assert_int_lt(config_load(path, &cfg, err, sizeof(err)), 0);
    ck_assert_ptr_nonnull(strstr(err, "key 'jwt_key_file'"));
    ck_assert_ptr_nonnull(strstr(err, "HS256"));

    /* with auth_mode none the key file is not read at all */
    path = write_file("off", "websocket.yaml", "jwt_key_file: \"missing.secret\"\n");
    ck_assert_int_eq(config_load(path, &cfg, err, sizeof(err)), 0);
}
END_TEST

START_TEST(restart_key_changed_reports_port_and_bind_address)
{
    struct config a, b;
    config_defaults(&a);
    config_defaults(&b);
    ck_assert_ptr_null(config_restart_key_changed(&a, &b));

    b.max_connections = 5;
    b.heartbeat_interval = 7;
    b.workers = 9;
    snprintf(b.environment, sizeof(b.environment), "staging");
    ck_assert_ptr_null(config_restart_key_changed(&a, &b));

    b.port = 9000;
    ck_assert_str_eq(config_restart_key_changed(&a, &b), "port");
    b.port = a.port;
    snprintf(b.bind_address, sizeof(b.bind_address), "127.0.0.1");
    ck_assert_str_eq(config_restart_key_changed(&a, &b), "bind_address");
    b.port = 1;
    ck_assert_str_eq(config_restart_key_changed(&a, &b), "port");
}
END_TEST

/* ---- TLS keys (the pair itself is checked by shared/tls.c) ---- */

START_TEST(tls_keys_parse_with_long_paths)
{
    struct config cfg;
    char err[512];
    char path[CONFIG_PATH_MAX];
    memset(path, 'p', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    char text[3 * CONFIG_PATH_MAX];
    snprintf(text, sizeof(text), "tls_cert_file: \"%s\"\ntls_key_file: \"/k.pem\"\n"
             "tls_min_version: \"1.3\"\n", path);
    ck_assert_msg(parse(text, &cfg, err, sizeof(err)) == 0, "%s", err);
    ck_assert_str_eq(cfg.tls_cert_file, path); /* 511 bytes: the whole path */
    ck_assert_str_eq(cfg.tls_key_file, "/k.pem");
    ck_assert_str_eq(cfg.tls_min_version, "1.3");
    /* One byte more is refused, not cut. */
    snprintf(text, sizeof(text), "tls_key_file: \"/k\"\ntls_cert_file: \"%sp\"\n", path);
    expect_error(text, 2, "tls_cert_file", "length");
    /* Both empty is plain, the default. */
    ck_assert_int_eq(parse("tls_cert_file: \"\"\ntls_key_file: \"\"\n", &cfg, err, sizeof(err)), 0);
    ck_assert_str_eq(cfg.tls_cert_file, "");
}
END_TEST

START_TEST(tls_half_a_pair_names_the_missing_key)
{
    expect_error("port: 9000\ntls_cert_file: \"/c.pem\"\n", 2, "tls_key_file",
                 "tls_cert_file is set");
    expect_error("tls_key_file: \"/k.pem\"\n", 1, "tls_cert_file", "tls_key_file is set");
    expect_error("tls_cert_file: \"/c.pem\"\ntls_key_file: \"\"\n", 1, "tls_key_file", "missing");
}
END_TEST

START_TEST(tls_min_version_choices)
{
    struct config cfg;
    char err[256];
    ck_assert_int_eq(parse("tls_min_version: \"1.2\"\n", &cfg, err, sizeof(err)), 0);
    ck_assert_int_eq(parse("tls_min_version: \"1.3\"\n", &cfg, err, sizeof(err)), 0);
    expect_error("tls_min_version: \"1.1\"\n", 1, "tls_min_version", "not one of");
    expect_error("tls_min_version: \"TLSv1.3\"\n", 1, "tls_min_version", "not one of");
    expect_error("tls_min_version: 1.3\n", 1, "tls_min_version", "quoted string");
}
END_TEST

START_TEST(tls_on_off_is_a_restart_key_a_new_pair_is_not)
{
    struct config a, b;
    config_defaults(&a);
    config_defaults(&b);
    snprintf(b.tls_cert_file, sizeof(b.tls_cert_file), "/c.pem");
    snprintf(b.tls_key_file, sizeof(b.tls_key_file), "/k.pem");
    ck_assert_str_eq(config_restart_key_changed(&a, &b), "tls_cert_file");
    ck_assert_str_eq(config_restart_key_changed(&b, &a), "tls_cert_file");
    a = b;
    snprintf(b.tls_cert_file, sizeof(b.tls_cert_file), "/other/c.pem");
    snprintf(b.tls_key_file, sizeof(b.tls_key_file), "/other/k.pem");
    snprintf(b.tls_min_version, sizeof(b.tls_min_version), "1.3");
    ck_assert_ptr_null(config_restart_key_changed(&a, &b));
}
END_TEST

START_TEST(key_line_finds_a_key_in_a_file)
{
    const char *path = write_file("keyline", "websocket.yaml",
                                  "# comment\nport: 9000\n\ntls_key_file: \"/k\"\n");
    ck_assert_int_eq(config_key_line(path, "port"), 2);
    ck_assert_int_eq(config_key_line(path, "tls_key_file"), 4);
    ck_assert_int_eq(config_key_line(path, "tls_cert_file"), 0);
    ck_assert_int_eq(config_key_line("/nonexistent/websocket.yaml", "port"), 0);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = unit_tcase(s, "config");
    tcase_add_unchecked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, defaults_match_design);
    tcase_add_test(tc, empty_text_gives_defaults);
    tcase_add_test(tc, missing_keys_take_defaults);
    tcase_add_test(tc, valid_file_with_every_key_loads);
    tcase_add_test(tc, libconfig_separators_and_semicolons_accepted);
    tcase_add_test(tc, runbook_patch_is_valid_on_its_own);
    tcase_add_test(tc, runbook_patch_loads_as_a_file);
    tcase_add_test(tc, runbook_patch_as_kubectl_writes_it_is_valid);
    tcase_add_test(tc, shipped_etc_files_load_and_equal_defaults);
    tcase_add_test(tc, shipped_files_state_every_key);
    tcase_add_test(tc, connection_pool_read_from_same_folder);
    tcase_add_test(tc, connection_pool_missing_keys_take_defaults);
    tcase_add_test(tc, pool_keys_refused_in_websocket_yaml);
    tcase_add_test(tc, websocket_keys_refused_in_connection_pool_yaml);
    tcase_add_test(tc, error_in_connection_pool_names_that_file);
    tcase_add_test(tc, unknown_key_names_file_line_and_key);
    tcase_add_test(tc, unknown_key_error_from_config_load_names_the_path);
    tcase_add_test(tc, file_suffix_keys_log_format_name_are_unknown);
    tcase_add_test(tc, wrong_type_refused);
    tcase_add_test(tc, out_of_range_low_refused);
    tcase_add_test(tc, out_of_range_high_refused);
    tcase_add_test(tc, range_bounds_are_inclusive);
    tcase_add_test(tc, log_level_and_format_choices);
    tcase_add_test(tc, environment_label_characters);
    tcase_add_test(tc, string_too_long_refused);
    tcase_add_test(tc, syntax_error_names_the_line);
    tcase_add_test(tc, duplicate_key_refused_naming_its_line);
    tcase_add_test(tc, missing_file_is_an_error_naming_it);
    tcase_add_test(tc, nul_byte_in_file_refused);
    tcase_add_test(tc, restart_key_changed_reports_port_and_bind_address);
    tcase_add_test(tc, tls_keys_parse_with_long_paths);
    tcase_add_test(tc, tls_half_a_pair_names_the_missing_key);
    tcase_add_test(tc, tls_min_version_choices);
    tcase_add_test(tc, tls_on_off_is_a_restart_key_a_new_pair_is_not);
    tcase_add_test(tc, key_line_finds_a_key_in_a_file);
    tcase_add_test(tc, string_lists_parse);
    tcase_add_test(tc, string_list_errors_name_the_key);
    tcase_add_test(tc, auth_and_limit_keys_checked);
    tcase_add_test(tc, stream_memory_must_hold_one_message_of_max_message_size);
    tcase_add_test(tc, jwt_key_file_loaded_relative_to_the_config);
    tcase_add_test(tc, jwt_key_file_problems_name_the_key);
    return s;
}

int main(void)
{
    return unit_run(config_suite());
}
