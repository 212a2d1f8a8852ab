/*
 * textbuf — a growable byte buffer for rendering text (metrics, JSON bodies).
 * (Not "strbuf": libconfig exports strbuf_* symbols that would clash.)
 *
 * On allocation failure the buffer latches `failed` and stops growing, so a
 * renderer can append freely and check once at the end.
 */
#ifndef WSGATE_TEXTBUF_H
#define WSGATE_TEXTBUF_H

#include <stddef.h>

struct textbuf {
    char *data;
    size_t len;
    size_t cap;
    int failed;
};

void textbuf_init(struct textbuf *b, size_t initial);
void textbuf_free(struct textbuf *b);
void textbuf_append(struct textbuf *b, const char *s, size_t n);
void textbuf_appends(struct textbuf *b, const char *s);
void textbuf_appendf(struct textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
