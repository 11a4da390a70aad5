/*
 * test_ring.c - the consistent-hash ring shared by MetaProtocol RING_HASH and Redis PROXY
 * mode: the same endpoints give the same ring, keys spread over every endpoint, and removing
 * one of N endpoints moves exactly the keys it owned (about 1/N), no other key.
 */
#include "runtime/core/ring.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define N_EPS 5
#define N_KEYS 20000

static mt_endpoint_conf_t eps[N_EPS];

static void ring_setup(void)
{
    static char addr[N_EPS][16];
    for (int i = 0; i < N_EPS; i++) {
        snprintf(addr[i], sizeof(addr[i]), "127.0.0.%d", 10 + i);
        memset(&eps[i], 0, sizeof(eps[i]));
        eps[i].address = addr[i];
        eps[i].port = 6379;
    }
}

TestSuite(ring, .init = ring_setup);

static uint32_t owner_of(const mt_ring_t *r, int key)
{
    char k[32];
    int n = snprintf(k, sizeof(k), "user:%d", key);
    return mt_ring_owner(r, mt_hash64(k, (size_t)n));
}

Test(ring, keys_spread_over_every_endpoint_and_the_ring_is_stable)
{
    uint32_t all[N_EPS] = {0, 1, 2, 3, 4};
    mt_ring_t a, b;
    cr_assert_eq(mt_ring_build(&a, eps, all, N_EPS, 0), 0);
    cr_assert_eq(mt_ring_build(&b, eps, all, N_EPS, 0), 0);
    cr_assert_eq(a.n, N_EPS * MT_RING_POINTS);
    int count[N_EPS] = {0};
    for (int k = 0; k < N_KEYS; k++) {
        uint32_t o = owner_of(&a, k);
        cr_assert_eq(o, owner_of(&b, k), "same endpoints, same owner");
        count[o]++;
    }
    for (int i = 0; i < N_EPS; i++) /* 256 points each: within +-25% of a fair 20% share */
        cr_assert(count[i] > N_KEYS / N_EPS * 3 / 4 && count[i] < N_KEYS / N_EPS * 5 / 4,
                  "endpoint %d owns %d of %d keys", i, count[i], N_KEYS);
    mt_ring_free(&a);
    mt_ring_free(&b);
}

Test(ring, removing_one_of_n_endpoints_moves_only_its_keys_about_one_nth)
{
    uint32_t all[N_EPS] = {0, 1, 2, 3, 4};
    uint32_t without2[N_EPS - 1] = {0, 1, 3, 4};
    mt_ring_t full, less;
    cr_assert_eq(mt_ring_build(&full, eps, all, N_EPS, 0), 0);
    cr_assert_eq(mt_ring_build(&less, eps, without2, N_EPS - 1, 0), 0);
    int moved = 0;
    for (int k = 0; k < N_KEYS; k++) {
        uint32_t before = owner_of(&full, k), after = owner_of(&less, k);
        if (before != 2)
            cr_assert_eq(after, before, "key %d of endpoint %u moved to %u", k, before, after);
        else
            moved++;
        cr_assert_neq(after, 2);
    }
    /* A modulo over 5 -> 4 endpoints would move 80% of the keys. */
    cr_assert(moved > N_KEYS * 15 / 100 && moved < N_KEYS * 25 / 100, "%d of %d keys moved", moved,
              N_KEYS);
    mt_ring_free(&full);
    mt_ring_free(&less);
}
