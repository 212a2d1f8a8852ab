/*
 * watch — notice that the config files changed and ask for a reload, as
 * if SIGHUP had come (config_watch: true).
 *
 * Kubernetes updates a mounted configmap by swapping a symlinked folder,
 * so the watch is on the files' directory (inotify), not on the files;
 * events are debounced and only a change of content triggers the reload.
 */
#ifndef WSGATE_WATCH_H
#define WSGATE_WATCH_H

#include <uv.h>

struct watch;

typedef void (*watch_cb)(void *arg);

int watch_start(uv_loop_t *loop, const char *path, const char *pool_path, watch_cb cb, void *arg,
                struct watch **out);
/* The files were (re)loaded by other means: take their current content as
 * the new baseline, so the watch does not reload them again. */
void watch_rebase(struct watch *w);
void watch_stop(struct watch *w);

#endif
