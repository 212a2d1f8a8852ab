#include "textbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void textbuf_init(struct textbuf *b, size_t initial)
{
    b->len = 0;
    b->failed = 0;
    b->cap = initial ? initial : 256;
    b->data = malloc(b->cap);
    if (!b->data) {
        b->cap = 0;
        b->failed = 1;
    }
}

void textbuf_free(struct textbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int textbuf_reserve(struct textbuf *b, size_t extra)
{
    if (b->failed)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void textbuf_append(struct textbuf *b, const char *s, size_t n)
{
    if (textbuf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void textbuf_appends(struct textbuf *b, const char *s)
{
    textbuf_append(b, s, strlen(s));
}

void textbuf_appendf(struct textbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        textbuf_append(b, tmp, (size_t)n);
        return;
    }
    if (textbuf_reserve(b, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}
