/*
 * log — one line per event on stderr.
 *
 * A line is built field by field on the caller's stack and written with a
 * single write(2), so lines from the master and every worker never
 * interleave. JSON by default (`{"ts":…,"level":…,"event":…,"worker":N,…}`),
 * or `key=value` text. Callers must never pass message payloads, tokens or
 * secrets as field values: the logger cannot tell them apart.
 */
#ifndef WSGATE_LOG_H
#define WSGATE_LOG_H

#include <stdint.h>

#include "log-t.h"

/* Process-wide settings: applied at start and on every config generation. */
void log_configure(enum log_format format, enum log_level level);
/* -1 for the master; the worker's slot index otherwise. */
void log_set_worker(int worker);

int log_level_parse(const char *name, enum log_level *out);
int log_format_parse(const char *name, enum log_format *out);

void log_begin(struct log_line *l, enum log_level level, const char *event);
void log_str(struct log_line *l, const char *key, const char *value);
void log_int(struct log_line *l, const char *key, int64_t value);
void log_double(struct log_line *l, const char *key, double value);
void log_end(struct log_line *l);

/* The common case: an event with a human-readable message. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
