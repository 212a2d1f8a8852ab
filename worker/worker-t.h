/*
 * worker-t.h — the types of one worker process: its loop and connections.
 *
 * A worker is one libuv loop. It owns every struct conn it accepted; no
 * other process touches them. Shared state (counters, the connection
 * count, config generations) lives in the segment.
 */
#ifndef WSGATE_WORKER_T_H
#define WSGATE_WORKER_T_H

#include <openssl/ssl.h>
#include <stdint.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "auth-t.h"
#include "config-t.h"
#include "http-t.h"
#include "ratelimit.h"
#include "request.h"
#include "segment-t.h"
#include "streamlog-t.h"

/* A complete frame built once and referenced by every queue that sends
 * it (server frames are unmasked, so the bytes are the same for all). */
struct sendq_frame {
    uint32_t refs;
    uint32_t len;
    /* permessage-deflate (deflate.c): the compressed forms of this frame,
     * one per window size, chained through their own `twin`; each link
     * holds a reference. */
    struct sendq_frame *twin;
    uint8_t wbits;          /* a compressed form: the window it was built for
                               (DEFLATE_TWIN_CONTEXT: the stream's shared context) */
    uint8_t context_wanted; /* a connection in step took it: deflate the next against it */
    uint16_t incompressible; /* bit w: deflate with window w does not shrink it */
    /* Fed to its stream's shared context (deflate_context_feed); 0: not. */
    uint64_t context_id;    /* this message in the worker's context numbering */
    uint64_t context_prev;  /* the message before it in the context (its dictionary); 0: none */
    char bytes[];
};

/* One queued piece of output: its own bytes (data[]), or a reference to a
 * shared frame. */
struct sendq_chunk {
    struct sendq_chunk *next;
    struct sendq_frame *frame; /* NULL: the bytes are in data[] */
    uint64_t origin_ns; /* when the message entered the gateway; 0 = no latency */
    uint32_t len;
    uint32_t off;       /* bytes already handed to the kernel */
    uint16_t message;   /* 1: counts in websocket_messages_sent_total */
    uint16_t request;   /* a reply: 1 + its enum segment_request_type, observed as
                           request duration; 0: a stream message (latency) */
    char data[];
};

struct conn;
/* How a queue tells its owner that a write it waited for finished: status
 * 0 (the bytes reached the kernel, more may be flushed), or a negative
 * libuv error. Installed by the owner at sendq_init. */
typedef void (*sendq_write_cb)(struct conn *c, int status);

struct sendq {
    struct sendq_chunk *head, *tail;
    size_t bytes;        /* unsent bytes queued */
    uint64_t moved_ns;   /* when bytes last left (or first entered) the queue; 0: to be
                            stamped by the next slow-consumer check */
    unsigned inflight;   /* chunks at the head owned by a pending uv_write */
    unsigned sealed;     /* TLS: chunks at the head already encrypted, kept until
                            their ciphertext has reached the kernel */
    sendq_write_cb write_cb; /* the owner's; kept by sendq_free */
    /* The owner's slow-consumer marks (conn.c), meaningful while bytes wait. */
    uint64_t over_ns;    /* since when unsent bytes exceed max_send_buffer; 0: not */
    uint64_t acked;      /* TCP bytes the client acknowledged, at the last check */
};

/* TLS state of one connection (see tlsconn.h); NULL on a plain port. */
struct tlsconn_ops;

struct tlsconn {
    const struct tlsconn_ops *ops; /* the connection's (tlsconn.h) */
    SSL *ssl;
    BIO *rbio;              /* ciphertext from the socket, owned by ssl */
    BIO *wbio;              /* ciphertext for the socket, owned by ssl */
    char *pending;          /* ciphertext a uv_write owns (the kernel was full) */
    size_t pending_len;
    uint64_t cipher_sent;   /* ciphertext bytes handed to the kernel */
    uint64_t sealed_end;    /* cipher_sent once the sealed chunks' ciphertext is out */
    size_t sealed_bytes;    /* plaintext bytes of the sealed chunks */
    unsigned established : 1; /* handshake complete */
    unsigned failed : 1;      /* fatal TLS error: send what OpenSSL queued (an alert), close */
    unsigned shut : 1;        /* close_notify queued */
    unsigned writing : 1;     /* `pending` is in a uv_write */
    unsigned got_bytes : 1;   /* the client sent something */
    uv_write_t req;           /* carries `pending` while `writing` */
};

enum conn_state {
    CONN_HTTP = 0, /* reading the request head */
    CONN_WS,       /* WebSocket session */
    CONN_CLOSING,  /* close frame sent; waiting for the reply or the flush */
};

struct worker;
struct hub_sub;
struct hub_pub;
struct broker_set;
struct sendq_frame;
struct deflate_context;

/* A client message waiting its turn: a large one is parsed on libuv's
 * thread pool meanwhile, and the connection is not read until its queue
 * is empty (see session.h). */
struct pending_msg {
    struct pending_msg *next;
    struct conn *conn;
    uv_work_t work;
    struct request req;         /* parsed: the request (free with request_free) */
    int parse_rc;               /* parsed: request_parse's result */
    uint64_t received_ns;
    unsigned parsing : 1;       /* on the thread pool */
    unsigned parsed : 1;
    unsigned orphan : 1;        /* its connection is gone: free on completion */
    unsigned compressed : 1;    /* data[] is deflated; inflated on the thread pool too */
    int inflate_err;            /* compressed: 0, or deflate_inflate's error */
    size_t max;                 /* compressed: max_message_size when it arrived */
    char *plain;                /* compressed: the inflated text */
    size_t plain_len;
    size_t len;
    char data[];
};

/* Where a client's byte stream stands between frames (see framescan.h). */
struct framescan {
    uint8_t hdr[14];
    uint8_t hdr_len;
    uint8_t fragmented;   /* a fragmented data message is in progress */
    uint8_t saw_close;    /* a close frame's header went by */
    uint64_t payload_left;
    uint64_t msg_len;     /* bytes announced for the current data message */
};

/* What a WebSocket connection holds only while its client talks: made
 * with the wslay context by the first bytes that need one, given back
 * (session_release_if_idle) once the connection has been quiet with
 * nothing half-read, waiting or owed to the rate limit, so an idle
 * connection is its struct conn alone. */
struct session_live {
    wslay_event_context_ptr ws;
    struct framescan scan;          /* frame boundaries of the client's stream */
    struct pending_msg *pending_head, *pending_tail; /* reading stops while non-empty */
    struct ratelimit rate;          /* max_messages_per_second bucket */
    uint64_t closing_since_ns;      /* CONN_CLOSING (which keeps its session state): since when */
};

/* What the layer above the transport does with a connection in its
 * current phase: the handshake's while the request head is read, the
 * WebSocket session's from the upgrade on (h2o's habit: the handshake
 * swaps them). conn calls only these, never a module above it by name.
 * A NULL entry: nothing to do in that phase. */
struct conn_handlers {
    /* Bytes from the client (plaintext, with TLS). */
    void (*feed)(struct conn *c, const char *data, size_t len);
    /* CONN_HTTP: no request head within handshake_timeout (TLS is up). */
    void (*timed_out)(struct conn *c);
    /* CONN_WS, once per sweep: the phase's own deadlines (token expiry,
     * idle timeout, heartbeat). */
    void (*sweep)(struct conn *c, uint64_t now_ns, int64_t now_ms);
    /* CONN_WS: the client does not read what is queued for it (`why`
     * names the rule); close it. */
    void (*slow)(struct conn *c, const char *why);
    /* CONN_WS: nothing came for a while; give back what the next bytes
     * can rebuild. */
    void (*quiet)(struct conn *c);
    /* conn_close_with: the connection is going; let go of it (no output
     * can be queued any more). */
    void (*closing)(struct conn *c);
    /* The handle is closed: free what the phase holds. */
    void (*free)(struct conn *c);
};

/* The application protocol on a WebSocket connection: the router's
 * (router_app), installed with the session's handlers at upgrade. The
 * session hands it each complete text message; the hub (cluster mode)
 * its answers to requests that completed later. */
struct app_ops {
    /* Touches nothing but its arguments: large messages are parsed on
     * libuv's thread pool. */
    int (*parse)(const char *msg, size_t len, struct request *req);
    /* On the loop, in arrival order, with parse's result (negative: not
     * JSON, req->error says why); frees req. */
    void (*process)(struct conn *c, const char *msg, size_t len, struct request *req, int parsed);
    /* A request refused with a negative errno (-EAGAIN: unavailable, …);
     * id_json is its id serialised, or NULL. */
    void (*reply_errno)(struct conn *c, const char *id_json, int err);
    /* A publish stored as seq. */
    void (*reply_ack)(struct conn *c, const char *id_json, const char *stream, size_t len,
                      uint64_t seq);
};

struct conn {
    uv_tcp_t tcp;
    /* 10,000 idle connections are 10,000 of these (see ARCHITECTURE.md,
     * "Memory per connection"): small fields share words, and what the
     * sweep reads of every connection every tick sits together, right
     * after the handle, in as few cache lines as it takes. */
    const struct conn_handlers *handlers;
    struct worker *w;
    struct conn *next;              /* worker's list of all connections */
    uint8_t state;                  /* enum conn_state */
    uint8_t pmd_wbits;              /* permessage-deflate: our window, 8..15; 0: not negotiated */
    uint16_t close_code;            /* close code we sent outside wslay, 0 = none */
    unsigned dirty : 1;
    unsigned close_after_flush : 1; /* plain HTTP response or a final close frame */
    unsigned counted : 1;           /* holds a reserved replica-wide connection */
    unsigned closed : 1;            /* uv_close called */
    unsigned subprotocol : 1;
    unsigned close_wait : 1;        /* we sent a close frame and wait for the reply */
    unsigned refused : 1;           /* a connection error is counted: count no other */
    unsigned ping_outstanding : 1;  /* the last heartbeat ping awaits its pong */
    unsigned ip_counted : 1;        /* holds a count in the segment's per-IP table */
    unsigned in_message : 1;        /* inside wslay's message callback */
    unsigned zombie : 1;            /* closed, freed when its last parse completes */
    unsigned pmd_takeover : 1;      /* permessage-deflate with server context takeover */
    uint64_t last_rx_ns;
    uint64_t last_ping_ns;          /* also the latest heartbeat ping's payload (rtt.h) */
    struct auth_grant *grant;       /* auth_mode jwt: what the token allows; NULL otherwise */
    struct sendq *out;              /* made by the first bytes queued (conn_queue), given
                                       back once empty and quiet: an idle connection has none */
    struct session_live *live;      /* from the upgrade on, while the client talks */
    struct tlsconn *tls;            /* NULL: plain TCP */
    /* The rest is read when something happens on the connection. */
    const struct app_ops *app;      /* CONN_WS on: set before the first message */
    struct conn *prev;              /* worker's list of all connections */
    struct conn *dirty_next;        /* worker's list of connections to flush */
    uint64_t id;
    uint8_t reason;                 /* enum segment_disconnect_reason: set by whoever
                                       decides to close */
    uint8_t msg_type;               /* enum segment_request_type: what the message being
                                       delivered asked for */
    uint16_t port;                  /* peer port; 0: address unknown */
    uint32_t refusals_unlogged;     /* refusals since the last refusal logged */
    struct http_request *req;       /* CONN_HTTP, a head split across reads only */
    union {
        uint64_t accepted_ns;       /* CONN_HTTP: the handshake_timeout clock */
        uint64_t upgraded_ns;       /* from the upgrade on: the session's start */
    };
    uint64_t msg_start_ns;          /* receive time of the message being delivered */
    struct hub_sub *subs;           /* this connection's subscriptions */
    struct hub_pub *pubs;           /* publishes waiting for the broker */
    uint32_t nsubs;
    uint32_t parsing;               /* messages of this connection on the thread pool */
    uint32_t rtt_us;                /* last heartbeat round trip (µs, at least 1), 0 = none yet */
    uint32_t refusal_log_s;         /* last refusal logged, monotonic seconds (one line per
                                       10 s at most); 0 = none */
    const char *close_detail;       /* why we closed, for the disconnect log (static text) */
    uint8_t ip[16];                 /* peer address, IPv4 as ::ffff:a.b.c.d */
    uint64_t pmd_last;              /* pmd_takeover: the message that last entered the client's
                                       window, as a context id (deflate.h); 0: none known */
};

/* One stream as this worker sees it: its local subscribers and how far
 * the worker has fanned it out. Also caches the name lookup for
 * publishers, so a publish costs no table lock. */
/* Cluster mode: where this worker stands with a stream's broker channel. */
enum hub_cluster_state {
    HUB_IDLE = 0,        /* not following the channel */
    HUB_SUBSCRIBING,     /* SUBSCRIBE sent; position not known yet */
    HUB_LIVE,            /* following; delivered_seq is exact */
};

/* A message from the broker that arrived before it could be delivered
 * (ahead of a hole, or while the position was being read). */
struct hub_held {
    struct hub_held *next;
    uint64_t seq;
    int64_t ts_ms;
    uint32_t len;
    char data[];
};

/* A frame kept for a subscriber whose replay is still on its way. */
struct hub_frameq {
    struct hub_frameq *next;
    struct sendq_frame *frame;
    uint64_t origin_ns;
};

struct hub_stream {
    struct hub_stream *next;        /* hash chain */
    struct hub_stream *ready_next;  /* hub.ready: published here since the last fan-out */
    uint8_t ready;
    struct streamlog_ref ref;
    uint64_t delivered_seq;         /* every seq <= this went to local subscribers */
    struct streamlog_iter it;       /* where the next record to fan out starts */
    struct hub_sub *subs;
    uint32_t nsubs;
    uint32_t name_len;
    uint64_t last_used_ns;
    struct deflate_context *pmd;    /* its compression context (deflate.h) while pmd_subs > 0 */
    uint32_t pmd_subs;              /* subscribers here that allow server context takeover */
    char name[STREAMLOG_NAME_MAX + 1];
    /* cluster mode */
    int broker;
    uint8_t cstate;                 /* enum hub_cluster_state */
    uint8_t filling;                /* an XRANGE fills a hole (2: open-ended) */
    uint32_t refs;                  /* broker requests in flight that point here */
    char epoch[STREAMLOG_EPOCH_LEN * 2 + 1];
    struct hub_held *held, *held_tail;
    struct hub_sub *waiting;        /* subscribes waiting for HUB_LIVE */
    struct worker *owner;           /* for broker callbacks, which carry only hs */
};

struct hub_sub {
    struct conn *conn;              /* NULL once the connection closed */
    struct hub_stream *hs;
    uint64_t from_seq;              /* deliver live messages with seq > from_seq */
    struct hub_sub *stream_prev, *stream_next;
    struct hub_sub *conn_next;
    /* cluster mode: the subscribe request until it is answered */
    uint8_t replaying;              /* live frames wait in `queued` */
    uint8_t has_since;
    uint8_t pmd_counted;            /* counted in hs->pmd_subs */
    uint64_t since;
    char *epoch;
    char *id_json;
    uint64_t received_ns;           /* the subscribe's receive time (its reply's duration) */
    struct hub_frameq *queued, *queued_tail;
};

/* A publish waiting for the broker's answer. */
struct hub_pub {
    struct hub_pub *next, *prev;    /* the connection's pending publishes */
    struct conn *conn;              /* NULL once the connection closed */
    char *id_json;
    uint64_t received_ns;           /* the publish's receive time (its reply's duration) */
    uint32_t len;
    char stream[STREAMLOG_NAME_MAX + 1];
};

#define HUB_BUCKETS 1024

struct hub {
    struct hub_stream *buckets[HUB_BUCKETS];
    uv_poll_t wake;                 /* this worker's eventfd */
    int wake_fd;
    int scan;                       /* fan out every stream at the next uv_check */
    struct hub_stream *ready;       /* fan out these at the next uv_check (local publishes) */
    uint64_t wake_mask;             /* other workers to wake at the next uv_check */
    uint64_t stuck_mask;            /* workers that made no progress for send_timeout */
    uint64_t streams;
    const struct stream_backend *backend; /* hub.h */
};

struct worker {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t tick;
    uv_timer_t fault_timer;          /* test builds only (fault_injection) */
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
    int draining;                /* 0, or 1 + the drain's enum segment_disconnect_reason */
    uint64_t drain_deadline_ns;
    uint64_t last_handshake_second;
    struct hub hub;
    struct broker_set *broker;      /* cluster mode only (broker.c) */
    struct deflate_worker *deflate; /* permessage-deflate streams, made on first use */
    SSL_CTX *tls_ctx;            /* for new connections; NULL: plain. Live sessions hold
                                    a reference to the context they started with */
    char tls_fingerprint[CONFIG_FINGERPRINT_MAX]; /* of the pair tls_ctx holds */
    char tls_min_version[CONFIG_STR_MAX];         /* tls_ctx's */
    /* Every read is consumed before its callback returns. With TLS it is
     * also where plaintext is decrypted to (the ciphertext is in the read
     * BIO by then) and where outgoing ciphertext is staged in a flush. */
    int64_t trim_peak_conns;         /* most connections since the heap was last trimmed */
    uint64_t trim_last_ns;
    uint64_t rtt_swept_ns;           /* slowest-by-RTT table last published */
    struct auth_keystore *keys;      /* the master's token key */
    struct auth_key auth_key;        /* this worker's copy, refreshed per config generation */
    int sockopts_inherited;          /* accepted sockets get the listener's options (conn.h) */
    struct http_request http_scratch; /* request heads that arrive whole (handshake.c) */
    const uint8_t *rx;               /* bytes being fed to wslay, one connection at a time */
    size_t rx_len;
    char readbuf[65536];
};

#endif
