#include "view.h"

#include <stdio.h>
#include <string.h>

#include "http.h"

#define VIEW_CONFIG_PATH "/view/config.json"
/* Scripts and styles only from the gateway's own files, never inline or
 * eval'd; the page talks to its own origin only (the WebSocket included:
 * CSP 3 lets 'self' match ws:/wss: on the same host and port). */
#define VIEW_CSP                                                                      \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; " \
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "       \
    "frame-ancestors 'none'\r\n"
#define VIEW_COMMON_HEADERS VIEW_CSP "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"

static const struct view_file *view_find(const char *path)
{
    /* "/view/" is the page too: people type the slash. */
    if (strcmp(path, "/view/") == 0)
        path = "/view";
    for (size_t i = 0; i < view_file_count; i++) {
        if (strcmp(view_files[i].path, path) == 0)
            return &view_files[i];
    }
    return NULL;
}

int view_etag_matches(const char *value, size_t len, const char *etag)
{
    size_t etag_len = strlen(etag);
    size_t i = 0;
    while (i < len) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        if (i >= len)
            break;
        if (value[i] == '*')
            return 1;
        if (len - i >= 2 && value[i] == 'W' && value[i + 1] == '/')
            i += 2;
        size_t start = i;
        if (i < len && value[i] == '"') {
            i++;
            while (i < len && value[i] != '"')
                i++;
            if (i < len)
                i++;
        } else {
            while (i < len && value[i] != ',' && value[i] != ' ' && value[i] != '\t')
                i++;
        }
        if (i - start == etag_len && memcmp(value + start, etag, etag_len) == 0)
            return 1;
        /* Skip anything up to the next list separator. */
        while (i < len && value[i] != ',')
            i++;
    }
    return 0;
}

int view_render(const struct http_request *req, const char *path, const struct config *cfg,
                struct view_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    if (!cfg->view_enabled)
        return 0;
    if (strcmp(path, VIEW_CONFIG_PATH) == 0) {
        int n = snprintf(resp->dynamic, sizeof(resp->dynamic), "{\"auth_mode\":\"%s\"}\n",
                         cfg->auth_mode == CONFIG_AUTH_JWT ? "jwt" : "none");
        resp->status = 200;
        resp->content_type = "application/json";
        resp->cache_control = "no-store";
        snprintf(resp->headers, sizeof(resp->headers), "%s", VIEW_COMMON_HEADERS);
        resp->body = resp->dynamic;
        resp->body_len = (size_t)n;
        return 1;
    }
    const struct view_file *f = view_find(path);
    if (!f)
        return 0;
    resp->content_type = f->content_type;
    /* Revalidate every time (a new binary may serve new files), but a
     * matching ETag costs only a 304. */
    resp->cache_control = "no-cache";
    snprintf(resp->headers, sizeof(resp->headers), VIEW_COMMON_HEADERS "ETag: %s\r\n", f->etag);
    resp->body = f->data;
    resp->body_len = f->len;
    size_t inm_len = 0;
    const char *inm = http_request_header(req, "If-None-Match", &inm_len);
    resp->status = inm && view_etag_matches(inm, inm_len, f->etag) ? 304 : 200;
    return 1;
}
