#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

static enum log_format log_current_format = LOG_FORMAT_JSON;
static enum log_level log_current_level = LOG_INFO;
static int log_worker = -1;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void log_configure(enum log_format format, enum log_level level)
{
    log_current_format = format;
    log_current_level = level;
}

void log_set_worker(int worker)
{
    log_worker = worker;
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
        if (strcmp(name, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *name, enum log_format *out)
{
    if (strcmp(name, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else if (strcmp(name, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else
        return -1;
    return 0;
}

#define LOG_TRUNCATED_JSON ",\"truncated\":true"
#define LOG_TRUNCATED_TEXT " truncated=true"

static void log_append(struct log_line *l, const char *s, size_t n)
{
    /* Keep room for the truncation marker, the closing brace and the
     * newline, so that log_end can always finish the line. */
    size_t room = sizeof(l->buf) - (sizeof(LOG_TRUNCATED_JSON) - 1) - 2 - l->len;
    if (n > room) {
        n = room;
        l->truncated = 1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void log_appendf(struct log_line *l, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        log_append(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* JSON string escaping; also used for text format so a value can never
 * break the line apart (no raw newline ever reaches the log). */
static void log_append_escaped(struct log_line *l, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            log_append(l, e, 2);
        } else if (c < 0x20) {
            log_appendf(l, "\\u%04x", c);
        } else {
            log_append(l, (const char *)&c, 1);
        }
    }
}

static void log_field_done(struct log_line *l)
{
    if (!l->truncated)
        l->complete = l->len;
}

static void log_key(struct log_line *l, const char *key)
{
    if (log_current_format == LOG_FORMAT_JSON) {
        log_append(l, ",\"", 2);
        log_append(l, key, strlen(key));
        log_append(l, "\":", 2);
    } else {
        log_append(l, " ", 1);
        log_append(l, key, strlen(key));
        log_append(l, "=", 1);
    }
}

void log_begin(struct log_line *l, enum log_level level, const char *event)
{
    l->len = 0;
    l->complete = 0;
    l->truncated = 0;
    l->enabled = level >= log_current_level;
    if (!l->enabled)
        return;

    int64_t ms = clock_wall_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char ts[64];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));

    if (log_current_format == LOG_FORMAT_JSON) {
        log_appendf(l, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"", ts, log_level_names[level]);
        log_append_escaped(l, event);
        log_append(l, "\"", 1);
    } else {
        log_appendf(l, "%s %s %s", ts, log_level_names[level], event);
    }
    if (log_worker >= 0) {
        log_key(l, "worker");
        log_appendf(l, "%d", log_worker);
        log_field_done(l);
    } else {
        log_key(l, "process");
        log_current_format == LOG_FORMAT_JSON ? log_append(l, "\"master\"", 8)
                                              : log_append(l, "master", 6);
        log_field_done(l);
    }
}

/* A text-format value goes out unquoted only when it needs neither quotes
 * nor escapes: no space, control character, '"', '=' or backslash. */
static int log_text_bare(const char *v)
{
    if (!v || !v[0])
        return 0;
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c <= ' ' || c == '"' || c == '=' || c == '\\')
            return 0;
    }
    return 1;
}

void log_str(struct log_line *l, const char *key, const char *value)
{
    if (!l->enabled)
        return;
    log_key(l, key);
    if (log_current_format == LOG_FORMAT_JSON) {
        log_append(l, "\"", 1);
        log_append_escaped(l, value ? value : "");
        log_append(l, "\"", 1);
    } else if (log_text_bare(value)) {
        log_append(l, value, strlen(value));
    } else {
        log_append(l, "\"", 1);
        log_append_escaped(l, value ? value : "");
        log_append(l, "\"", 1);
    }
    log_field_done(l);
}

void log_int(struct log_line *l, const char *key, int64_t value)
{
    if (!l->enabled)
        return;
    log_key(l, key);
    log_appendf(l, "%lld", (long long)value);
    log_field_done(l);
}

void log_double(struct log_line *l, const char *key, double value)
{
    if (!l->enabled)
        return;
    log_key(l, key);
    log_appendf(l, "%.3f", value);
    log_field_done(l);
}

void log_end(struct log_line *l)
{
    if (!l->enabled)
        return;
    if (l->truncated) {
        /* Keep the line parseable: drop the field that did not fit. */
        const char *marker =
            log_current_format == LOG_FORMAT_JSON ? LOG_TRUNCATED_JSON : LOG_TRUNCATED_TEXT;
        l->len = l->complete;
        memcpy(l->buf + l->len, marker, strlen(marker)); /* into the kept room */
        l->len += strlen(marker);
    }
    if (log_current_format == LOG_FORMAT_JSON)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, l->buf, l->len);
    (void)ignored;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
    struct log_line l;
    log_begin(&l, level, event);
    if (!l.enabled)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_str(&l, "message", msg);
    log_end(&l);
}
