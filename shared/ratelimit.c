#include "ratelimit.h"

int ratelimit_take(struct ratelimit *r, uint64_t now_ns, double rate, double burst)
{
    if (rate <= 0)
        return 1;
    if (r->last_ns == 0) {
        r->tokens = burst;
    } else if (now_ns > r->last_ns) {
        r->tokens += (double)(now_ns - r->last_ns) * rate / 1e9;
    }
    if (r->tokens > burst)
        r->tokens = burst;
    r->last_ns = now_ns ? now_ns : 1;
    if (r->tokens >= 1.0) {
        r->tokens -= 1.0;
        return 1;
    }
    return 0;
}

int ratelimit_refused(struct ratelimit *r, uint64_t now_ns)
{
    if (r->refusals == 0 || now_ns - r->window_ns > RATELIMIT_ABUSE_WINDOW_NS) {
        r->window_ns = now_ns;
        r->refusals = 0;
    }
    r->refusals++;
    return r->refusals > RATELIMIT_ABUSE_REFUSALS;
}

int ratelimit_at_rest(const struct ratelimit *r, uint64_t now_ns, double rate, double burst)
{
    if (r->refusals && now_ns - r->window_ns <= RATELIMIT_ABUSE_WINDOW_NS)
        return 0;
    if (r->last_ns == 0 || rate <= 0)
        return 1;
    double tokens = r->tokens;
    if (now_ns > r->last_ns)
        tokens += (double)(now_ns - r->last_ns) * rate / 1e9;
    return tokens >= burst;
}
