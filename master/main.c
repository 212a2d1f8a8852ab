/*
 * main — wsgate's command line and start-up: load and validate the
 * config, make sure the port is ours, create the shared segment, then hand
 * over to the supervisor. The master never serves WebSocket traffic.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "segment.h"
#include "supervisor.h"
#include "tls.h"
#include "wsgate-build.h"

#define MAIN_DEFAULT_CONFIG "etc/websocket.yaml"

static void main_usage(FILE *out)
{
    fprintf(out,
            "usage: wsgate [-c FILE] [-t] [-V] [-h]\n"
            "\n"
            "  -c FILE  configuration (default " MAIN_DEFAULT_CONFIG "); connection_pool.yaml\n"
            "           is read from the same folder when present\n"
            "  -t       check the configuration (and that the TLS certificate and key\n"
            "           load and match) and exit (0: valid, 1: invalid)\n"
            "  -V       print the version and exit\n"
            "  -h       print this help and exit\n"
            "\n"
            "signals: SIGHUP reloads the configuration; SIGTERM or SIGINT drains and exits\n"
            "         (a second one exits at once)\n"
            "\n"
            "configuration keys (default, meaning):\n");
    if (out == stdout)
        config_print_keys();
}

int main(int argc, char **argv)
{
    const char *path = MAIN_DEFAULT_CONFIG;
    int test_only = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'V':
            printf("wsgate %s\n", WSGATE_VERSION);
            return 0;
        case 'h':
            main_usage(stdout);
            return 0;
        default:
            main_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wsgate: unexpected argument '%s'\n", argv[optind]);
        main_usage(stderr);
        return 2;
    }

    struct config cfg;
    struct tls_pair tls = {0};
    char err[2 * CONFIG_PATH_MAX + 256];
    if (config_load(path, &cfg, err, sizeof(err)) < 0 ||
        tls_config_check(&cfg, &tls, err, sizeof(err)) < 0) {
        if (test_only) {
            fprintf(stderr, "wsgate: configuration invalid: %s\n", err);
        } else {
            struct log_line l;
            log_begin(&l, LOG_ERROR, "error");
            log_str(&l, "error", err);
            log_str(&l, "message", "invalid configuration; fix it (check with wsgate -t -c FILE)");
            log_end(&l);
        }
        return 1;
    }
    if (test_only) {
        tls_pair_free(&tls);
        printf("wsgate: configuration %s is valid\n", path);
        return 0;
    }
    log_configure(cfg.log_format, cfg.log_level);

    struct log_line l;
    log_begin(&l, LOG_INFO, "start");
    log_str(&l, "version", WSGATE_VERSION);
    log_str(&l, "config", path);
    log_str(&l, "environment", cfg.environment);
    log_int(&l, "pid", getpid());
    log_end(&l);

    /* Every connection is a descriptor: take the whole hard limit, so
     * max_connections is the limit that bites, not the default 1024. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    int r = listener_probe(cfg.bind_address, (int)cfg.port);
    if (r < 0) {
        log_begin(&l, LOG_ERROR, "error");
        log_str(&l, "error", strerror(-r));
        log_str(&l, "bind_address", cfg.bind_address);
        log_int(&l, "port", cfg.port);
        log_str(&l, "message", "cannot bind the port: stop whatever holds it or change port");
        log_end(&l);
        tls_pair_free(&tls);
        return 1;
    }

    char shm_name[64];
    segment_name((int)cfg.port, shm_name, sizeof(shm_name));
    struct segment *seg = NULL;
    r = segment_create(shm_name, &cfg, &seg);
    if (r < 0) {
        log_msg(LOG_ERROR, "error", "cannot create shared memory %s: %s", shm_name, strerror(-r));
        tls_pair_free(&tls);
        return 1;
    }
    /* The token key: loaded here (config_load only checked that it
     * loads), shared with every worker, never written to the segment. */
    struct auth_keystore *keys = auth_keystore_create();
    if (!keys) {
        log_msg(LOG_ERROR, "error", "cannot map memory for the token key");
        segment_destroy(seg, shm_name);
        return 1;
    }
    if (cfg.auth_mode == CONFIG_AUTH_JWT) {
        struct auth_key *key = malloc(sizeof(*key));
        char why[256] = "out of memory";
        if (!key || auth_key_load(cfg.jwt_key_file, cfg.jwt_algorithm_mask, key, why,
                                  sizeof(why)) < 0) {
            log_begin(&l, LOG_ERROR, "error");
            log_str(&l, "error", why);
            log_str(&l, "message", "jwt_key_file cannot be used; fix it (check with wsgate -t -c FILE)");
            log_end(&l);
            free(key);
            auth_keystore_destroy(keys);
            segment_destroy(seg, shm_name);
            return 1;
        }
        auth_keystore_publish(keys, key);
        auth_key_clear(key);
        free(key);
    }
    segment_publish_config(seg, &cfg);

    log_begin(&l, LOG_INFO, "listen");
    log_str(&l, "bind_address", cfg.bind_address);
    log_int(&l, "port", cfg.port);
    log_str(&l, "tls", cfg.tls_cert_file[0] ? "on" : "off");
    log_str(&l, "segment", shm_name);
    log_end(&l);

    int status = supervisor_run(&cfg, &tls, seg, keys);
    auth_keystore_destroy(keys);
    segment_destroy(seg, shm_name);
    log_msg(LOG_INFO, "shutdown", "master exiting with status %d", status);
    return status;
}
