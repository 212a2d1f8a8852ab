#include "supervisor.h"

#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "admin.h"
#include "auth.h"
#include "clock.h"
#include "config.h"
#include "listener.h"
#include "log.h"
#include "segment.h"
#include "streamlog.h"
#include "tls.h"
#include "watch.h"
#include "worker.h"

/* A worker that dies sooner than this after starting counts toward a
 * crash loop; one that lived longer is respawned at once. */
#define SUPERVISOR_YOUNG_NS (5ull * 1000000000ull)
#define SUPERVISOR_BACKOFF_FIRST_MS 250u
#define SUPERVISOR_BACKOFF_MAX_MS 30000u

struct supervisor;

struct supervisor_slot {
    struct supervisor *sup;
    int index;
    pid_t pid;
    int fd;                 /* listening socket, kept across respawns */
    int retiring;           /* SIGUSR1 sent: do not respawn */
    unsigned failures;      /* consecutive young deaths */
    uint64_t started_ns;
    uv_timer_t respawn;
    int respawn_armed;
};

struct supervisor {
    uv_loop_t loop;
    struct segment *seg;
    struct auth_keystore *keys;
    struct config cfg;
    struct tls_pair tls;    /* cfg's certificate and key, as validated; handed to every
                               worker forked (empty when TLS is off) */
    const char *shm_name;
    int signal_fd;
    uv_poll_t signal_poll;
    sigset_t orig_mask;
    struct supervisor_slot slots[SEGMENT_WORKER_SLOTS];
    int wanted;
    int shutting_down;
    uv_timer_t shutdown_timer;
    uv_timer_t reclaim_timer;
    struct admin *admin;
    struct watch *watch;
    int exit_status;
};

/* CPUs this process may really use: online CPUs, narrowed by its
 * affinity mask and by a cgroup v2 CPU quota (a pod limited to 2 CPUs on a
 * 64-core node must not start 64 workers). */
static long supervisor_cpu_budget(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        long c = CPU_COUNT(&set);
        if (c > 0 && c < n)
            n = c;
    }
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char quota[32];
        long period = 0;
        if (fscanf(f, "%31s %ld", quota, &period) == 2 && strcmp(quota, "max") != 0 &&
            period > 0) {
            long c = (atol(quota) + period - 1) / period;
            if (c > 0 && c < n)
                n = c;
        }
        fclose(f);
    }
    return n;
}

static int supervisor_workers_wanted(const struct config *cfg)
{
    long n = cfg->workers;
    if (n == 0)
        n = supervisor_cpu_budget();
    if (n < 1)
        n = 1;
    if (n > SEGMENT_WORKER_SLOTS)
        n = SEGMENT_WORKER_SLOTS;
    return (int)n;
}

static int supervisor_live_children(const struct supervisor *s)
{
    int n = 0;
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++)
        n += s->slots[i].pid > 0;
    return n;
}

/* A forked worker must not keep the master's other sockets (admin
 * connections, other slots' listeners) or its epoll and signalfd: a kept
 * admin socket would stay open after the master closes it. Pipes and
 * files stay: libuv re-creates its global lock pipe at fork. The wake-up
 * eventfds of every slot stay too: workers wake each other with them. */
static int supervisor_is_wake_fd(const struct segment *seg, int fd)
{
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        if (seg->worker[i].wake_fd == fd)
            return 1;
    }
    return 0;
}

static void supervisor_child_close_fds(const struct segment *seg, int keep)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    int dfd = dirfd(d);
    int victims[1024];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < (int)(sizeof(victims) / sizeof(victims[0]))) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (fd <= 2 || fd == keep || fd == dfd || supervisor_is_wake_fd(seg, fd))
            continue;
        struct stat st;
        char link[64] = "";
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t ln = readlink(path, link, sizeof(link) - 1);
        if (ln > 0)
            link[ln] = '\0';
        if ((fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) || strncmp(link, "anon_inode:", 11) == 0)
            victims[n++] = fd;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        close(victims[i]);
}

static void supervisor_arm_respawn(struct supervisor_slot *sl, uint64_t delay_ms);

static int supervisor_spawn(struct supervisor *s, int index)
{
    struct supervisor_slot *sl = &s->slots[index];
    struct segment_worker *w = segment_worker_slot(s->seg, index);
    if (sl->fd < 0) {
        sl->fd = listener_open(s->cfg.bind_address, (int)s->cfg.port);
        if (sl->fd < 0) {
            log_msg(LOG_ERROR, "error", "cannot open a listening socket for worker %d: %s", index,
                    strerror(-sl->fd));
            return sl->fd;
        }
    }
    atomic_store(&w->state, WORKER_STARTING);
    atomic_store(&w->backoff_until_ms, 0);
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        log_msg(LOG_ERROR, "error", "fork failed for worker %d: %s; retrying", index, strerror(e));
        atomic_store(&w->state, WORKER_DEAD);
        return -e;
    }
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &s->orig_mask, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != master)
            _exit(1); /* the master died between fork and prctl */
        supervisor_child_close_fds(s->seg, sl->fd);
        atomic_store(&w->pid, (int32_t)getpid());
        exit(worker_main(s->seg, s->keys, index, sl->fd, s->tls.cert_pem ? &s->tls : NULL));
    }
    sl->pid = pid;
    sl->started_ns = clock_now_ns();
    atomic_store(&w->pid, (int32_t)pid);
    atomic_store(&w->started_at_ms, clock_wall_ms());
    struct log_line l;
    log_begin(&l, LOG_INFO, "worker_spawn");
    log_int(&l, "slot", index);
    log_int(&l, "pid", pid);
    log_end(&l);
    return 0;
}

static void supervisor_on_respawn(uv_timer_t *t)
{
    struct supervisor_slot *sl = t->data;
    struct supervisor *s = sl->sup;
    sl->respawn_armed = 0;
    if (s->shutting_down || sl->retiring || sl->pid > 0)
        return;
    struct segment_worker *w = segment_worker_slot(s->seg, sl->index);
    atomic_fetch_add(&w->restarts, 1);
    atomic_fetch_add(&s->seg->worker_restarts, 1);
    if (supervisor_spawn(s, sl->index) < 0)
        supervisor_arm_respawn(sl, SUPERVISOR_BACKOFF_FIRST_MS);
}

static void supervisor_arm_respawn(struct supervisor_slot *sl, uint64_t delay_ms)
{
    struct segment_worker *w = segment_worker_slot(sl->sup->seg, sl->index);
    atomic_store(&w->backoff_until_ms, delay_ms ? clock_wall_ms() + (int64_t)delay_ms : 0);
    sl->respawn_armed = 1;
    uv_timer_start(&sl->respawn, supervisor_on_respawn, delay_ms, 0);
}

static void supervisor_finish(struct supervisor *s)
{
    uv_timer_stop(&s->shutdown_timer);
    uv_stop(&s->loop);
}

static void supervisor_log_exit(int index, pid_t pid, int status, const char *what)
{
    struct log_line l;
    log_begin(&l, WIFEXITED(status) && WEXITSTATUS(status) == 0 ? LOG_INFO : LOG_WARN,
              "worker_exit");
    log_int(&l, "slot", index);
    log_int(&l, "pid", pid);
    if (WIFEXITED(status))
        log_int(&l, "exit_status", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        log_str(&l, "signal", strsignal(WTERMSIG(status)));
    log_str(&l, "action", what);
    log_end(&l);
}

static void supervisor_reap(struct supervisor *s)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int index = -1;
        for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
            if (s->slots[i].pid == pid)
                index = i;
        }
        if (index < 0)
            continue;
        struct supervisor_slot *sl = &s->slots[index];
        struct segment_worker *w = segment_worker_slot(s->seg, index);
        sl->pid = 0;
        segment_fold_worker(s->seg, index);
        streamlog_forget_worker(segment_streams(s->seg), index);
        atomic_store(&w->pid, 0);

        if (s->shutting_down || sl->retiring) {
            supervisor_log_exit(index, pid, status, s->shutting_down ? "shutdown" : "retired");
            atomic_store(&w->state, sl->retiring && !s->shutting_down ? WORKER_EMPTY : WORKER_DEAD);
            if (sl->retiring && !s->shutting_down) {
                if (sl->fd >= 0)
                    close(sl->fd);
                sl->fd = -1;
                sl->retiring = 0;
                /* `workers` grew again while this slot drained: the grow
                 * left it to us, so start its new worker now. */
                if (index < s->wanted) {
                    sl->failures = 0;
                    if (supervisor_spawn(s, index) < 0)
                        supervisor_arm_respawn(sl, SUPERVISOR_BACKOFF_FIRST_MS);
                }
            }
            continue;
        }
        atomic_store(&w->state, WORKER_DEAD);
        uint64_t lived = clock_now_ns() - sl->started_ns;
        sl->failures = lived < SUPERVISOR_YOUNG_NS ? sl->failures + 1 : 0;
        uint64_t delay = 0;
        if (sl->failures > 1) {
            delay = (uint64_t)SUPERVISOR_BACKOFF_FIRST_MS << (sl->failures - 2 < 10 ? sl->failures - 2 : 10);
            if (delay > SUPERVISOR_BACKOFF_MAX_MS)
                delay = SUPERVISOR_BACKOFF_MAX_MS;
        }
        if (delay && sl->fd >= 0) {
            /* While the slot waits out its backoff, its socket would hold
             * 1/N of new clients in a queue nobody accepts: leave the
             * SO_REUSEPORT group until the respawn opens a new one. */
            close(sl->fd);
            sl->fd = -1;
        }
        char what[64];
        snprintf(what, sizeof(what), delay ? "respawn in %llu ms (crash loop)" : "respawn",
                 (unsigned long long)delay);
        supervisor_log_exit(index, pid, status, what);
        supervisor_arm_respawn(sl, delay);
    }
    if (s->shutting_down && supervisor_live_children(s) == 0)
        supervisor_finish(s);
}

static void supervisor_on_shutdown_timeout(uv_timer_t *t)
{
    struct supervisor *s = t->data;
    log_msg(LOG_WARN, "shutdown", "workers still running after shutdown_timeout; killing them");
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        if (s->slots[i].pid > 0)
            kill(s->slots[i].pid, SIGKILL);
    }
}

static void supervisor_shutdown(struct supervisor *s, int signo)
{
    if (s->shutting_down) {
        log_msg(LOG_WARN, "shutdown", "second %s: stopping now", strsignal(signo));
        supervisor_on_shutdown_timeout(&s->shutdown_timer);
        return;
    }
    s->shutting_down = 1;
    atomic_store(&s->seg->draining, 1);
    log_msg(LOG_INFO, "shutdown", "%s received: draining workers (shutdown_timeout %llds)",
            strsignal(signo), (long long)s->cfg.shutdown_timeout);
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        struct supervisor_slot *sl = &s->slots[i];
        if (sl->respawn_armed) {
            uv_timer_stop(&sl->respawn);
            sl->respawn_armed = 0;
        }
        if (sl->pid > 0)
            kill(sl->pid, SIGTERM);
        /* The workers keep accepting while they drain, answering 503
         * (draining) until they exit; our copy would keep the port
         * listening after that with a queue nobody accepts from, so new
         * clients would hang instead of being refused. */
        if (sl->fd >= 0) {
            close(sl->fd);
            sl->fd = -1;
        }
    }
    /* Workers close what is left at shutdown_timeout; the extra second is
     * theirs to exit before the master stops waiting. */
    uv_timer_start(&s->shutdown_timer, supervisor_on_shutdown_timeout,
                   (uint64_t)s->cfg.shutdown_timeout * 1000 + 1000, 0);
    if (supervisor_live_children(s) == 0)
        supervisor_finish(s);
}

static void supervisor_set_workers(struct supervisor *s, int wanted)
{
    int old = s->wanted;
    s->wanted = wanted;
    atomic_store(&s->seg->workers_wanted, (uint32_t)wanted);
    for (int i = old; i < wanted; i++) {
        struct supervisor_slot *sl = &s->slots[i];
        if (sl->pid > 0 && sl->retiring)
            continue; /* still draining from an earlier shrink; respawned when it exits */
        sl->failures = 0;
        if (sl->pid == 0 && supervisor_spawn(s, i) < 0)
            supervisor_arm_respawn(sl, SUPERVISOR_BACKOFF_FIRST_MS);
    }
    for (int i = wanted; i < old; i++) {
        struct supervisor_slot *sl = &s->slots[i];
        if (sl->respawn_armed) {
            uv_timer_stop(&sl->respawn);
            sl->respawn_armed = 0;
        }
        if (sl->pid > 0) {
            sl->retiring = 1;
            kill(sl->pid, SIGUSR1);
            /* The retiree stops accepting; its socket must leave the
             * SO_REUSEPORT group now, or the kernel keeps queueing new
             * clients on it that nobody accepts until it has drained. */
            if (sl->fd >= 0) {
                close(sl->fd);
                sl->fd = -1;
            }
        } else {
            atomic_store(&segment_worker_slot(s->seg, i)->state, WORKER_EMPTY);
            if (sl->fd >= 0) {
                close(sl->fd);
                sl->fd = -1;
            }
        }
    }
}

static void supervisor_update_watch(struct supervisor *s);

static void supervisor_reload_failed(struct supervisor *s, const char *why)
{
    atomic_fetch_add(&s->seg->config_reloads_failure, 1);
    struct log_line l;
    log_begin(&l, LOG_ERROR, "reload");
    log_str(&l, "result", "failure");
    log_str(&l, "error", why);
    log_str(&l, "message", "configuration unchanged; fix the file and send SIGHUP again");
    log_end(&l);
}

static void supervisor_reload(struct supervisor *s)
{
    struct config next;
    char err[2 * CONFIG_PATH_MAX + 256];
    if (config_load(s->cfg.path, &next, err, sizeof(err)) < 0) {
        supervisor_reload_failed(s, err);
        return;
    }
    const char *key = config_restart_key_changed(&s->cfg, &next);
    if (key) {
        char why[CONFIG_PATH_MAX + 128];
        snprintf(why, sizeof(why), "%s: key '%s' changed; it only takes effect on restart",
                 s->cfg.path, key);
        supervisor_reload_failed(s, why);
        return;
    }
    /* An unreadable or mismatched pair fails the whole reload: the old
     * pair stays in use everywhere. */
    struct tls_pair pair;
    if (tls_config_check(&next, &pair, err, sizeof(err)) < 0) {
        supervisor_reload_failed(s, err);
        return;
    }
    /* The token key is read again on every reload (key rotation), and
     * published before the generation that makes workers look at it. */
    struct auth_key *tkey = NULL;
    if (next.auth_mode == CONFIG_AUTH_JWT) {
        tkey = malloc(sizeof(*tkey));
        char why[256];
        if (!tkey || auth_key_load(next.jwt_key_file, next.jwt_algorithm_mask, tkey, why,
                                  sizeof(why)) < 0) {
            char msg[CONFIG_PATH_MAX + 320];
            snprintf(msg, sizeof(msg), "%s:%d: key 'jwt_key_file': %s", s->cfg.path,
                     (int)next.jwt_key_file_line, tkey ? why : "out of memory");
            if (tkey) {
                auth_key_clear(tkey);
                free(tkey);
            }
            tls_pair_free(&pair);
            supervisor_reload_failed(s, msg);
            return;
        }
    }
    tls_pair_free(&s->tls);
    s->tls = pair;
    int metrics_port_changed = next.metrics_port != s->cfg.metrics_port;
    s->cfg = next;
    log_configure(s->cfg.log_format, s->cfg.log_level);
    auth_keystore_publish(s->keys, tkey);
    if (tkey) {
        auth_key_clear(tkey);
        free(tkey);
    }
    segment_publish_config(s->seg, &s->cfg);
    atomic_fetch_add(&s->seg->config_reloads_success, 1);
    if (metrics_port_changed) {
        admin_stop(s->admin);
        s->admin = NULL;
        int r = admin_start(&s->loop, s->seg, s->cfg.bind_address, (int)s->cfg.metrics_port,
                            &s->admin);
        if (r < 0)
            log_msg(LOG_ERROR, "error", "cannot listen on metrics_port %lld: %s",
                    (long long)s->cfg.metrics_port, uv_strerror(r));
    }
    supervisor_set_workers(s, supervisor_workers_wanted(&s->cfg));
    supervisor_update_watch(s);
    struct log_line l;
    log_begin(&l, LOG_INFO, "reload");
    log_str(&l, "result", "success");
    log_int(&l, "generation", (int64_t)atomic_load(&s->seg->config_generation));
    log_int(&l, "workers", s->wanted);
    log_end(&l);
}

static void supervisor_on_config_changed(void *arg)
{
    struct supervisor *s = arg;
    log_msg(LOG_INFO, "reload", "config_watch: %s changed; reloading", s->cfg.path);
    if (!s->shutting_down)
        supervisor_reload(s);
}

/* Start or stop watching the config files as config_watch says. */
static void supervisor_update_watch(struct supervisor *s)
{
    if (s->cfg.config_watch && !s->watch) {
        int r = watch_start(&s->loop, s->cfg.path, s->cfg.pool_path, supervisor_on_config_changed,
                            s, &s->watch);
        if (r < 0)
            log_msg(LOG_ERROR, "error",
                    "config_watch: cannot watch %s: %s; reload with SIGHUP instead", s->cfg.path,
                    strerror(-r));
    } else if (!s->cfg.config_watch && s->watch) {
        watch_stop(s->watch);
        s->watch = NULL;
    }
    watch_rebase(s->watch);
}

static void supervisor_on_signal(uv_poll_t *h, int status, int events)
{
    struct supervisor *s = h->data;
    struct signalfd_siginfo si;
    while (read(s->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            supervisor_reap(s);
            break;
        case SIGHUP:
            if (!s->shutting_down)
                supervisor_reload(s);
            break;
        case SIGTERM:
        case SIGINT:
            supervisor_shutdown(s, (int)si.ssi_signo);
            break;
        default:
            break;
        }
    }
}

/* Streams nobody subscribes to or publishes on for stream_ttl go, with
 * their history; done by the master so it happens even with idle workers. */
static void supervisor_on_reclaim(uv_timer_t *t)
{
    struct supervisor *s = t->data;
    unsigned n = streamlog_reclaim(segment_streams(s->seg), clock_wall_ms(),
                                   s->cfg.stream_ttl * 1000);
    if (n)
        log_msg(LOG_DEBUG, "streams", "reclaimed %u idle stream(s)", n);
}

static void supervisor_close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int supervisor_run(const struct config *cfg, struct tls_pair *tls, struct segment *seg,
                   struct auth_keystore *keys,
                   const char *shm_name)
{
    static struct supervisor s;
    memset(&s, 0, sizeof(s));
    s.seg = seg;
    s.keys = keys;
    s.cfg = *cfg;
    s.tls = *tls;
    memset(tls, 0, sizeof(*tls));
    s.shm_name = shm_name;
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        s.slots[i].sup = &s;
        s.slots[i].index = i;
        s.slots[i].fd = -1;
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, &s.orig_mask);
    signal(SIGPIPE, SIG_IGN);
    s.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.signal_fd < 0) {
        log_msg(LOG_ERROR, "error", "signalfd failed: %s", strerror(errno));
        tls_pair_free(&s.tls);
        return 1;
    }

    uv_loop_init(&s.loop);
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        uv_timer_init(&s.loop, &s.slots[i].respawn);
        s.slots[i].respawn.data = &s.slots[i];
    }
    uv_timer_init(&s.loop, &s.shutdown_timer);
    s.shutdown_timer.data = &s;
    uv_timer_init(&s.loop, &s.reclaim_timer);
    s.reclaim_timer.data = &s;
    uv_timer_start(&s.reclaim_timer, supervisor_on_reclaim, 1000, 1000);
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        seg->worker[i].wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (seg->worker[i].wake_fd < 0) {
            log_msg(LOG_ERROR, "error", "eventfd failed: %s", strerror(errno));
            tls_pair_free(&s.tls);
            return 1;
        }
    }
    uv_poll_init(&s.loop, &s.signal_poll, s.signal_fd);
    s.signal_poll.data = &s;
    uv_poll_start(&s.signal_poll, UV_READABLE, supervisor_on_signal);

    int r = admin_start(&s.loop, seg, s.cfg.bind_address, (int)s.cfg.metrics_port, &s.admin);
    if (r < 0) {
        log_msg(LOG_ERROR, "error",
                "cannot listen on metrics_port %lld: %s; set metrics_port to a free port or 0",
                (long long)s.cfg.metrics_port, uv_strerror(r));
        s.exit_status = 1;
    } else {
        if (s.admin)
            log_msg(LOG_INFO, "listen", "metrics and health on %s:%lld", s.cfg.bind_address,
                    (long long)s.cfg.metrics_port);
        supervisor_set_workers(&s, supervisor_workers_wanted(&s.cfg));
        supervisor_update_watch(&s);
        uv_run(&s.loop, UV_RUN_DEFAULT);
    }

    admin_stop(s.admin);
    watch_stop(s.watch);
    uv_walk(&s.loop, supervisor_close_walk, NULL);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s.loop);
    tls_pair_free(&s.tls);
    close(s.signal_fd);
    for (int i = 0; i < SEGMENT_WORKER_SLOTS; i++) {
        if (s.slots[i].fd >= 0)
            close(s.slots[i].fd);
        close(seg->worker[i].wake_fd);
    }
    return s.exit_status;
}
