/*
 * log-t.h — types of the structured logger (see log.h).
 */
#ifndef WSGATE_LOG_T_H
#define WSGATE_LOG_T_H

#include <stddef.h>

enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR,
};

enum log_format {
    LOG_FORMAT_JSON = 0,
    LOG_FORMAT_TEXT,
};

/* One line being built; lives on the caller's stack. */
struct log_line {
    char buf[1024];
    size_t len;
    size_t complete; /* length up to the last whole field */
    int enabled;
    int truncated;
};

#endif
