/*
 * ratelimit.c - the shared token bucket (ratelimit.h says why it is one atomic word).
 */
#include "runtime/core/ratelimit.h"

#define BUCKET_TOKENS(s) ((uint32_t)((s)&0xffffffffu))
#define BUCKET_EPOCH(s) ((uint32_t)((s) >> 32))
#define BUCKET_STATE(e, t) (((uint64_t)(e) << 32) | (uint64_t)(t))

void mt_token_bucket_init(mt_token_bucket_t *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                          uint32_t fill_interval_ms, uint64_t now_ms)
{
    b->max_tokens = max_tokens ? max_tokens : 1;
    b->tokens_per_fill = tokens_per_fill ? tokens_per_fill : 1;
    b->fill_interval_ms = fill_interval_ms ? fill_interval_ms : 1;
    b->start_ms = now_ms;
    atomic_init(&b->state, BUCKET_STATE(0, b->max_tokens));
}

static uint32_t bucket_epoch_at(const mt_token_bucket_t *b, uint64_t now_ms)
{
    /* A worker's cached clock may lag the main thread's by a loop iteration. */
    if (now_ms <= b->start_ms)
        return 0;
    return (uint32_t)((now_ms - b->start_ms) / b->fill_interval_ms);
}

/* The state s becomes at epoch `now`: tokens refilled for the intervals passed. */
static uint64_t bucket_refill(const mt_token_bucket_t *b, uint64_t s, uint32_t now)
{
    uint32_t passed = now - BUCKET_EPOCH(s); /* modulo 2^32, see ratelimit.h */
    if (passed == 0 || passed > 0x7fffffffu) /* 0, or a clock that lags this state's */
        return s;
    uint64_t t = (uint64_t)BUCKET_TOKENS(s) + (uint64_t)passed * b->tokens_per_fill;
    if (t > b->max_tokens)
        t = b->max_tokens;
    return BUCKET_STATE(now, t);
}

bool mt_token_bucket_take(mt_token_bucket_t *b, uint64_t now_ms)
{
    uint32_t now = bucket_epoch_at(b, now_ms);
    uint64_t s = atomic_load_explicit(&b->state, memory_order_relaxed);
    for (;;) {
        uint64_t r = bucket_refill(b, s, now);
        if (BUCKET_TOKENS(r) == 0)
            return false; /* nothing to take; the refill (none) need not be stored */
        uint64_t n = BUCKET_STATE(BUCKET_EPOCH(r), BUCKET_TOKENS(r) - 1);
        if (atomic_compare_exchange_weak_explicit(&b->state, &s, n, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
}

uint32_t mt_token_bucket_tokens(mt_token_bucket_t *b, uint64_t now_ms)
{
    uint64_t s = atomic_load_explicit(&b->state, memory_order_relaxed);
    return BUCKET_TOKENS(bucket_refill(b, s, bucket_epoch_at(b, now_ms)));
}
