#include "procstat.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* Boot time, to turn /proc/<pid>/stat's start time (ticks since boot) into
 * the epoch seconds Prometheus expects of process_start_time_seconds. */
static double procstat_boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    char line[256];
    double bt = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtod(line + 6, NULL);
            break;
        }
    }
    fclose(f);
    return bt;
}

static int procstat_read_stat(pid_t pid, struct procstat *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may contain spaces and parentheses: fields start
     * after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -EPROTO;
    p += 2;
    unsigned long utime = 0, stime = 0, vsize = 0;
    unsigned long long starttime = 0;
    long rss = 0;
    /* Fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice threads
     * itrealvalue starttime vsize rss */
    int got = sscanf(p,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
                     "%*d %llu %lu %ld",
                     &utime, &stime, &starttime, &vsize, &rss);
    if (got != 5)
        return -EPROTO;
    double tck = (double)sysconf(_SC_CLK_TCK);
    out->cpu_seconds = (double)(utime + stime) / tck;
    out->start_time_seconds = procstat_boot_time() + (double)starttime / tck;
    out->virtual_bytes = (double)vsize;
    out->resident_bytes = (double)rss * (double)sysconf(_SC_PAGESIZE);
    return 0;
}

static int procstat_read_fds(pid_t pid, struct procstat *out)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            count++;
    }
    closedir(d);
    out->open_fds = count;

    struct rlimit rl;
    if (prlimit(pid, RLIMIT_NOFILE, NULL, &rl) == 0)
        out->max_fds = rl.rlim_cur == RLIM_INFINITY ? 0 : (double)rl.rlim_cur;
    return 0;
}

int procstat_read(pid_t pid, struct procstat *out)
{
    memset(out, 0, sizeof(*out));
    int rc = procstat_read_stat(pid, out);
    if (rc < 0)
        return rc;
    return procstat_read_fds(pid, out);
}
