/*
 * procstat — the standard process_* figures of one process, from /proc.
 *
 * Used to expose the master's process metrics from any process that renders
 * /metrics (the master itself or a worker): both read /proc/<master pid>.
 */
#ifndef WSGATE_PROCSTAT_H
#define WSGATE_PROCSTAT_H

#include <sys/types.h>

struct procstat {
    double cpu_seconds;
    double start_time_seconds; /* since the Unix epoch */
    double resident_bytes;
    double virtual_bytes;
    double open_fds;
    double max_fds;
};

/* Returns 0, or a negative errno when /proc/<pid> cannot be read. */
int procstat_read(pid_t pid, struct procstat *out);

#endif
