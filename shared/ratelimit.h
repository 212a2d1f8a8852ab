/*
 * ratelimit — a token bucket per connection (max_messages_per_second with
 * message_burst), and a sliding count of refusals to spot sustained abuse.
 *
 * Pure arithmetic on the caller's struct and a monotonic time: the caller
 * passes the limits in force now, so a reload applies to live connections.
 */
#ifndef WSGATE_RATELIMIT_H
#define WSGATE_RATELIMIT_H

#include <stdint.h>

/* Refusals within RATELIMIT_ABUSE_WINDOW_NS beyond which a connection is
 * closed (1008): a client that keeps sending after being told
 * `rate_limited` this often is not going to slow down. */
#define RATELIMIT_ABUSE_REFUSALS 50
#define RATELIMIT_ABUSE_WINDOW_NS (10ull * 1000000000ull)

struct ratelimit {
    double tokens;
    uint64_t last_ns;       /* last refill; 0 = bucket not started (full) */
    uint64_t window_ns;     /* start of the current refusal window */
    uint32_t refusals;      /* refusals in that window */
};

/* Take one token at now_ns. rate 0 means no limit. Returns 1 when the
 * message may pass, 0 when it is refused. */
int ratelimit_take(struct ratelimit *r, uint64_t now_ns, double rate, double burst);

/* Count a refusal; returns 1 when the refusals in the window now exceed
 * RATELIMIT_ABUSE_REFUSALS (time to close the connection). */
int ratelimit_refused(struct ratelimit *r, uint64_t now_ns);

/* 1 when a fresh (zeroed) bucket would behave exactly as this one from
 * now_ns on: full again, and no refusal window still counting. Such a
 * bucket may be dropped and recreated. */
int ratelimit_at_rest(const struct ratelimit *r, uint64_t now_ns, double rate, double burst);

#endif
