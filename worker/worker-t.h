/*
 * worker-t.h — the types of one worker process: its loop and connections.
 *
 * A worker is one libuv loop. It owns every struct conn it accepted; no
 * other process touches them. Shared state (counters, the connection
 * count, config generations) lives in the segment.
 */
#ifndef WSGATE_WORKER_T_H
#define WSGATE_WORKER_T_H

#include <stdint.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "config-t.h"
#include "http-t.h"
#include "segment-t.h"

/* One queued piece of output: bytes owned by the chunk. */
struct sendq_chunk {
    struct sendq_chunk *next;
    uint64_t origin_ns; /* when the message it answers entered; 0 = not a message */
    uint32_t len;
    uint32_t off;       /* bytes of data already handed to the kernel */
    char data[];
};

struct sendq {
    struct sendq_chunk *head, *tail;
    size_t bytes;        /* unsent bytes queued */
    unsigned inflight;   /* chunks at the head owned by a pending uv_write */
    uv_write_t req;
};

enum conn_state {
    CONN_HTTP = 0, /* reading the request head */
    CONN_WS,       /* WebSocket session */
    CONN_CLOSING,  /* close frame sent; waiting for the reply or the flush */
};

struct worker;

struct conn {
    uv_tcp_t tcp;
    struct worker *w;
    struct conn *prev, *next;       /* worker's list of all connections */
    struct conn *dirty_next;        /* worker's list of connections to flush */
    uint64_t id;
    enum conn_state state;
    unsigned dirty : 1;
    unsigned close_after_flush : 1; /* plain HTTP response or a final close frame */
    unsigned counted : 1;           /* holds a reserved replica-wide connection */
    unsigned closed : 1;            /* uv_close called */
    unsigned subprotocol : 1;
    unsigned close_wait : 1;        /* we sent a close frame and wait for the reply */
    struct http_request *req;       /* CONN_HTTP only */
    wslay_event_context_ptr ws;     /* CONN_WS only */
    const uint8_t *rx;              /* bytes being fed to wslay */
    size_t rx_len;
    uint64_t accepted_ns;
    uint64_t upgraded_ns;
    uint64_t last_rx_ns;
    uint64_t last_ping_ns;
    uint64_t closing_since_ns;
    uint64_t msg_start_ns;          /* receive time of the message being delivered */
    enum segment_disconnect_reason reason; /* set by whoever decides to close */
    uint16_t close_code;            /* close code we sent outside wslay, 0 = none */
    int text_message;               /* current incoming message is text */
    struct sendq out;
    char remote[56];
};

struct worker {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t tick;
    uv_timer_t drain_timer;
    uv_check_t flush;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sigusr1;
    struct segment *seg;
    struct segment_worker *slot;
    int slot_index;
    struct config cfg;
    uint64_t cfg_generation;
    struct conn *conns;          /* all connections */
    struct conn *dirty;          /* connections with output to flush */
    uint64_t next_conn_id;
    int listening;
    int draining;                /* 0, or the disconnect reason of the drain */
    uint64_t drain_deadline_ns;
    uint64_t last_handshake_second;
    char readbuf[65536];
};

#endif
