/*
 * ring.h - a consistent-hash ring over a cluster's endpoints (ketama's idea: many points per
 * endpoint, a key goes to the first point at or after its hash), written once for every
 * protocol: MetaProtocol RING_HASH load balancing and Redis PROXY mode's key spread.
 *
 * Points are XXH3 hashes of "address:port#i", so the same endpoints give the same ring in
 * every process, build and snapshot, and removing one of N endpoints moves only the keys it
 * owned (about 1/N of them); nobody else's keys move. Built on the main thread at snapshot
 * time, read-only afterwards (shared by the workers).
 */
#ifndef MELTEMI_RING_H
#define MELTEMI_RING_H

#include "runtime/core/snapshot.h"

#include <stddef.h>
#include <stdint.h>

/* Points per endpoint when the configuration names no minimum ring size. */
#define MT_RING_POINTS 256u
#define MT_RING_MAX (1u << 20)

/* n points sorted by hash, each naming an endpoint index (into the cluster's endpoints). */
typedef struct mt_ring {
    uint64_t *hash;
    uint32_t *ep;
    uint32_t n;
} mt_ring_t;

/* Stable 64-bit hash (XXH3 64-bit, unseeded): fixed since xxHash 0.8.0. */
uint64_t mt_hash64(const void *p, size_t n);

/* A ring over endpoints[eps[0..n)] with at least min_points points in all (0: MT_RING_POINTS
 * per endpoint; at most MT_RING_MAX). Returns 0, or -1 out of memory (ring left empty). */
int mt_ring_build(mt_ring_t *ring, const mt_endpoint_conf_t *endpoints, const uint32_t *eps,
                  uint32_t n, uint32_t min_points);
void mt_ring_free(mt_ring_t *ring);

/* Position of the first point with hash >= h (0 after the last: the ring wraps). n > 0. */
uint32_t mt_ring_pos(const mt_ring_t *ring, uint64_t h);

/* The endpoint owning hash h. n > 0. */
static inline uint32_t mt_ring_owner(const mt_ring_t *ring, uint64_t h)
{
    return ring->ep[mt_ring_pos(ring, h)];
}

#endif
