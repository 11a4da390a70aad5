/*
 * ring.c - the consistent-hash ring (ring.h).
 */
#include "runtime/core/ring.h"

/* Header-only XXH3: inlined into mt_hash64, no library call on the request path. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* XXH3 spreads short keys that differ in one byte without the extra mixer FNV-1a needed, and
 * costs fewer instructions past a few bytes. */
uint64_t mt_hash64(const void *p, size_t n)
{
    return XXH3_64bits(p, n);
}

typedef struct ring_point {
    uint64_t hash;
    uint32_t ep;
} ring_point_t;

static int ring_point_cmp(const void *a, const void *b)
{
    const ring_point_t *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->ep < y->ep ? -1 : (x->ep > y->ep);
}

int mt_ring_build(mt_ring_t *ring, const mt_endpoint_conf_t *endpoints, const uint32_t *eps,
                  uint32_t n, uint32_t min_points)
{
    memset(ring, 0, sizeof(*ring));
    if (n == 0)
        return 0;
    if (min_points > MT_RING_MAX)
        min_points = MT_RING_MAX;
    uint32_t per = min_points ? (min_points + n - 1) / n : MT_RING_POINTS;
    if (per == 0 || (uint64_t)per * n > MT_RING_MAX)
        per = MT_RING_MAX / n ? MT_RING_MAX / n : 1;
    size_t total = (size_t)per * n;
    ring_point_t *pts = malloc(total * sizeof(*pts));
    ring->hash = malloc(total * sizeof(*ring->hash));
    ring->ep = malloc(total * sizeof(*ring->ep));
    if (!pts || !ring->hash || !ring->ep) {
        free(pts);
        mt_ring_free(ring);
        return -1;
    }
    size_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const mt_endpoint_conf_t *e = &endpoints[eps[i]];
        char label[128];
        for (uint32_t j = 0; j < per; j++) {
            int len = snprintf(label, sizeof(label), "%s:%u#%u", e->address ? e->address : "?",
                               e->port, j);
            pts[k].hash = mt_hash64(label, (size_t)len);
            pts[k].ep = eps[i];
            k++;
        }
    }
    qsort(pts, total, sizeof(*pts), ring_point_cmp);
    for (size_t i = 0; i < total; i++) {
        ring->hash[i] = pts[i].hash;
        ring->ep[i] = pts[i].ep;
    }
    ring->n = (uint32_t)total;
    free(pts);
    return 0;
}

void mt_ring_free(mt_ring_t *ring)
{
    free(ring->hash);
    free(ring->ep);
    memset(ring, 0, sizeof(*ring));
}

uint32_t mt_ring_pos(const mt_ring_t *ring, uint64_t h)
{
    uint32_t lo = 0, hi = ring->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ring->hash[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == ring->n ? 0 : lo;
}
