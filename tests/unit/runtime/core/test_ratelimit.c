/*
 * test_ratelimit.c - the shared token bucket: token arithmetic, lazy refill, the cap, a
 * clock that lags, and exactly maxTokens taken by several threads at once.
 */
#include "runtime/core/ratelimit.h"

#include <criterion/criterion.h>
#include <pthread.h>

Test(ratelimit, starts_full_and_refuses_when_empty)
{
    mt_token_bucket_t b;
    mt_token_bucket_init(&b, 3, 1, 1000, 5000);
    for (int i = 0; i < 3; i++)
        cr_assert(mt_token_bucket_take(&b, 5000 + (uint64_t)i), "token %d", i);
    cr_assert_not(mt_token_bucket_take(&b, 5999), "empty within the first interval");
    cr_assert_eq(mt_token_bucket_tokens(&b, 5999), 0);
}

Test(ratelimit, refills_tokens_per_fill_per_interval_up_to_max)
{
    mt_token_bucket_t b;
    mt_token_bucket_init(&b, 10, 4, 100, 0);
    for (int i = 0; i < 10; i++)
        cr_assert(mt_token_bucket_take(&b, 1));
    cr_assert_not(mt_token_bucket_take(&b, 99));
    cr_assert_eq(mt_token_bucket_tokens(&b, 100), 4, "one interval: tokensPerFill");
    cr_assert_eq(mt_token_bucket_tokens(&b, 250), 8, "two intervals");
    cr_assert_eq(mt_token_bucket_tokens(&b, 100000), 10, "capped at maxTokens");
    for (int i = 0; i < 4; i++)
        cr_assert(mt_token_bucket_take(&b, 150));
    cr_assert_not(mt_token_bucket_take(&b, 199), "the refill was stored with the take");
    cr_assert(mt_token_bucket_take(&b, 200));
}

Test(ratelimit, a_lagging_clock_neither_refills_nor_breaks)
{
    mt_token_bucket_t b;
    mt_token_bucket_init(&b, 1, 1, 10, 1000);
    cr_assert(mt_token_bucket_take(&b, 1050));     /* epoch 5 */
    cr_assert_not(mt_token_bucket_take(&b, 1020)); /* a worker whose clock is behind */
    cr_assert_not(mt_token_bucket_take(&b, 500));  /* before the bucket was built */
    cr_assert(mt_token_bucket_take(&b, 1060));
}

typedef struct {
    mt_token_bucket_t *b;
    int tries;
    int taken;
} taker_t;

static void *taker(void *arg)
{
    taker_t *t = arg;
    for (int i = 0; i < t->tries; i++)
        t->taken += mt_token_bucket_take(t->b, 42) ? 1 : 0;
    return NULL;
}

Test(ratelimit, threads_at_once_take_exactly_max_tokens)
{
    mt_token_bucket_t b;
    mt_token_bucket_init(&b, 12345, 1, 3600000, 0);
    pthread_t th[4];
    taker_t t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (taker_t){&b, 10000, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, taker, &t[i]), 0);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += t[i].taken;
    }
    cr_assert_eq(total, 12345,
                 "40000 tries over 4 threads take the bucket's 12345 tokens, no more");
}
