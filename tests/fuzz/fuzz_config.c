/*
 * fuzz_config — libFuzzer target for the config parser (shared/config.c on
 * libconfig): config_parse_text on the input as websocket.yaml and as
 * connection_pool.yaml.
 *
 * Oracles: an error always comes with a NUL-terminated message naming the
 * file; a success leaves strings NUL-terminated within their fields and the
 * derived log enums in range.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static void fuzz_config_check_str(const char *s, size_t cap)
{
    if (memchr(s, '\0', cap) == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* config_parse_text reads a C string, like config_load after its own
     * NUL check; an embedded NUL just ends the text early. */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    for (int pool = 0; pool <= 1; pool++) {
        struct config cfg;
        char err[512];
        err[0] = '\0';
        config_defaults(&cfg);
        int rc = config_parse_text(text, "fuzz.yaml", pool, &cfg, err, sizeof(err));
        if (rc < 0) {
            if (memchr(err, '\0', sizeof(err)) == NULL || strncmp(err, "fuzz.yaml:", 10) != 0)
                abort();
        } else {
            fuzz_config_check_str(cfg.bind_address, sizeof(cfg.bind_address));
            fuzz_config_check_str(cfg.environment, sizeof(cfg.environment));
            fuzz_config_check_str(cfg.log_format_name, sizeof(cfg.log_format_name));
            fuzz_config_check_str(cfg.log_level_name, sizeof(cfg.log_level_name));
            if ((unsigned)cfg.log_format > LOG_FORMAT_TEXT || (unsigned)cfg.log_level > LOG_ERROR)
                abort();
            if (cfg.port < 1 || cfg.port > 65535 || cfg.max_message_size < 16)
                abort();
        }
    }
    free(text);
    return 0;
}
