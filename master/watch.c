#include "watch.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "config-t.h"

/* Editors and kubelet write in several steps: wait for them to settle. */
#define WATCH_DEBOUNCE_MS 300

struct watch {
    uv_poll_t poll;
    uv_timer_t debounce;
    int fd;
    int closing;
    watch_cb cb;
    void *arg;
    uint64_t fingerprint;
    char path[CONFIG_PATH_MAX];
    char pool_path[CONFIG_PATH_MAX];
};

/* FNV-1a over a file's bytes (a missing file hashes as empty). */
static uint64_t watch_hash_file(const char *path, uint64_t h)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return h ^ 0x9e3779b97f4a7c15ull;
    int c;
    while ((c = fgetc(f)) != EOF) {
        h ^= (uint8_t)c;
        h *= 1099511628211ull;
    }
    fclose(f);
    return h;
}

static uint64_t watch_fingerprint(const struct watch *w)
{
    return watch_hash_file(w->pool_path, watch_hash_file(w->path, 14695981039346656037ull));
}

void watch_rebase(struct watch *w)
{
    if (w)
        w->fingerprint = watch_fingerprint(w);
}

static void watch_on_settled(uv_timer_t *t)
{
    struct watch *w = t->data;
    uint64_t now = watch_fingerprint(w);
    if (now == w->fingerprint)
        return;
    w->fingerprint = now;
    w->cb(w->arg);
}

static void watch_on_event(uv_poll_t *p, int status, int events)
{
    struct watch *w = p->data;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    while (read(w->fd, buf, sizeof(buf)) > 0)
        ;
    uv_timer_start(&w->debounce, watch_on_settled, WATCH_DEBOUNCE_MS, 0);
}

int watch_start(uv_loop_t *loop, const char *path, const char *pool_path, watch_cb cb, void *arg,
                struct watch **out)
{
    struct watch *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    snprintf(w->path, sizeof(w->path), "%s", path);
    snprintf(w->pool_path, sizeof(w->pool_path), "%s", pool_path);
    char dir[CONFIG_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0 ||
        inotify_add_watch(w->fd, dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_ATTRIB) < 0) {
        int e = errno;
        if (w->fd >= 0)
            close(w->fd);
        free(w);
        return -e;
    }
    w->cb = cb;
    w->arg = arg;
    w->fingerprint = watch_fingerprint(w);
    uv_timer_init(loop, &w->debounce);
    w->debounce.data = w;
    uv_poll_init(loop, &w->poll, w->fd);
    w->poll.data = w;
    uv_poll_start(&w->poll, UV_READABLE, watch_on_event);
    *out = w;
    return 0;
}

static void watch_on_closed(uv_handle_t *h)
{
    struct watch *w = h->data;
    if (++w->closing == 3) {
        close(w->fd);
        free(w);
    }
}

void watch_stop(struct watch *w)
{
    if (!w)
        return;
    w->closing = 1;
    uv_close((uv_handle_t *)&w->poll, watch_on_closed);
    uv_close((uv_handle_t *)&w->debounce, watch_on_closed);
}
