#include "endpoints.h"

#include <string.h>

#include "health.h"
#include "metrics.h"
#include "procstat.h"

#define ENDPOINTS_JSON "application/json"

int endpoints_render(const struct segment *seg, const char *path, int self_draining,
                     struct endpoint_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    if (strcmp(path, "/health") == 0) {
        const char *reason;
        int draining = self_draining || health_status(seg, &reason) == HEALTH_DRAINING;
        textbuf_init(&resp->body, 64);
        /* Degraded still serves: /health is the liveness and readiness
         * probe, and a replica with one worker down still carries traffic. */
        textbuf_appends(&resp->body, draining ? "{\"status\":\"draining\"}\n" : "{\"status\":\"ok\"}\n");
        resp->status = draining ? 503 : 200;
        resp->content_type = ENDPOINTS_JSON;
        return 1;
    }
    if (strcmp(path, "/health/detailed") == 0) {
        textbuf_init(&resp->body, 1024);
        resp->status = health_render_detailed(seg, &resp->body);
        resp->content_type = ENDPOINTS_JSON;
        return 1;
    }
    if (strcmp(path, "/metrics") == 0) {
        struct procstat proc;
        const struct procstat *pp = NULL;
        if (procstat_read(atomic_load(&seg->master_pid), &proc) == 0)
            pp = &proc;
        textbuf_init(&resp->body, 16384);
        metrics_render(seg, pp, &resp->body);
        resp->status = 200;
        resp->content_type = METRICS_CONTENT_TYPE;
        return 1;
    }
    return 0;
}
