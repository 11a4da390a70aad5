/*
 * ratelimit.h - a token bucket shared by every worker (MetaRouter localRateLimit, RedisService
 * rate limits): written once here, above the protocols.
 *
 * One bucket is one number for the whole proxy, as users read `maxTokens: 100`: it lives in
 * the snapshot (built on the main thread, shared read-only by the workers) and its state is
 * one 64-bit atomic word, (fill epoch << 32) | tokens, changed by compare-and-swap. Refill is
 * lazy: a taker that sees the clock in a later fill interval adds tokensPerFill per interval
 * passed (capped at maxTokens) in the same CAS that takes its token, so nothing runs between
 * requests and no worker waits for another. Cost: one load and one CAS when uncontended
 * (measured in docs/metaprotocol.md).
 *
 * A reload builds new buckets, which start full. Epochs are fill intervals since the bucket
 * was built, kept modulo 2^32: a bucket idle for 2^32 intervals may refill less than full
 * once (49 days at 1ms intervals).
 */
#ifndef MELTEMI_RATELIMIT_H
#define MELTEMI_RATELIMIT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct mt_token_bucket {
    _Atomic uint64_t state; /* (epoch << 32) | tokens */
    uint64_t start_ms;      /* read-only after init: epoch 0 starts here */
    uint32_t max_tokens;
    uint32_t tokens_per_fill;
    uint32_t fill_interval_ms;
} mt_token_bucket_t;

/* A full bucket. max_tokens >= 1 (larger than UINT32_MAX is clamped by the caller),
 * tokens_per_fill 0 is taken as 1, fill_interval_ms 0 as 1. now_ms: the clock the takers
 * pass (uv_now's: monotonic milliseconds, the same base in every loop of the process). */
void mt_token_bucket_init(mt_token_bucket_t *b, uint32_t max_tokens, uint32_t tokens_per_fill,
                          uint32_t fill_interval_ms, uint64_t now_ms);

/* Takes one token: true if there was one (the request may go), false if it is limited. Safe
 * from any thread at once. */
bool mt_token_bucket_take(mt_token_bucket_t *b, uint64_t now_ms);

/* Tokens left as of now_ms (for /config_dump and tests; a racing taker may change it). */
uint32_t mt_token_bucket_tokens(mt_token_bucket_t *b, uint64_t now_ms);

#endif
