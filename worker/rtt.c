#include "rtt.h"

#include <stdio.h>
#include <string.h>

#include "iptable.h"
#include "segment.h"

#define RTT_SWEEP_EVERY_NS 1000000000ull

void rtt_ping_payload(struct conn *c, uint64_t now_ns, uint8_t out[RTT_PAYLOAD_LEN])
{
    for (int i = 0; i < RTT_PAYLOAD_LEN; i++)
        out[i] = (uint8_t)(now_ns >> (56 - 8 * i));
    c->last_ping_ns = now_ns;
    c->ping_outstanding = 1;
}

void rtt_pong(struct conn *c, const uint8_t *payload, size_t len, uint64_t now_ns)
{
    if (!c->ping_outstanding || len != RTT_PAYLOAD_LEN)
        return;
    uint64_t sent = 0;
    for (int i = 0; i < RTT_PAYLOAD_LEN; i++)
        sent = sent << 8 | payload[i];
    if (sent != c->last_ping_ns || now_ns < sent)
        return;
    c->ping_outstanding = 0;
    uint64_t rtt_ns = now_ns - sent;
    /* Kept in µs (a connection's bytes count 10,000 times over); the
     * histogram gets the nanoseconds. 0 means "none yet". */
    uint64_t us = rtt_ns / 1000;
    c->rtt_us = us == 0 ? 1 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    segment_observe_rtt(&c->w->slot->counters, rtt_ns);
}

void rtt_sweep(struct worker *w, uint64_t now_ns)
{
    if (now_ns - w->rtt_swept_ns < RTT_SWEEP_EVERY_NS)
        return;
    w->rtt_swept_ns = now_ns;
    /* The slowest first; a connection enters when it beats the last. */
    const struct conn *top[SEGMENT_RTT_TOP];
    uint32_t n = 0;
    for (const struct conn *c = w->conns; c; c = c->next) {
        if (c->closed || c->state != CONN_WS || !c->rtt_us)
            continue;
        if (n == SEGMENT_RTT_TOP && c->rtt_us <= top[n - 1]->rtt_us)
            continue;
        uint32_t i = n < SEGMENT_RTT_TOP ? n++ : n - 1;
        for (; i > 0 && top[i - 1]->rtt_us < c->rtt_us; i--)
            top[i] = top[i - 1];
        top[i] = c;
    }
    struct segment_rtt_entry e[SEGMENT_RTT_TOP];
    memset(e, 0, sizeof(e));
    for (uint32_t i = 0; i < n; i++) {
        e[i].conn_id = top[i]->id;
        e[i].rtt_ns = (uint64_t)top[i]->rtt_us * 1000;
        e[i].unsent_bytes = top[i]->out ? top[i]->out->bytes : 0;
        e[i].subscriptions = top[i]->nsubs;
        iptable_format(top[i]->ip, top[i]->port, e[i].remote, sizeof(e[i].remote));
    }
    segment_publish_rtt_top(w->slot, e, n);
}
