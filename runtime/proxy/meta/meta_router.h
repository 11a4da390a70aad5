/*
 * meta_router.h - MetaRouter decisions without I/O: which route a message takes (attribute
 * matches: exact, prefix, regex, presence), which weighted destination, which endpoint of the
 * destination's subset (round robin, least request, random, ring hash), and the builders the
 * snapshot uses for the parts that are compiled once (regexes, hash rings).
 *
 * Everything here is pure: state that changes per request (round-robin cursors, in-flight
 * counts, health, random numbers) is passed in by the caller (meta_proxy.c), so the unit
 * tests drive it directly. Snapshot parts are read-only and shared by every worker.
 */
#ifndef MELTEMI_META_ROUTER_H
#define MELTEMI_META_ROUTER_H

#include "runtime/proxy/meta/meta_conf.h"

#include "protocols/codec.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Points per endpoint when the DestinationRule names no minimumRingSize (runtime/core/ring.h).
 * A fixed count per endpoint (not a ring size divided among them) keeps every endpoint's
 * points where they are when endpoints come and go, so only the keys of the added or removed
 * one move. */
#define MT_META_RING_POINTS MT_RING_POINTS
#define MT_META_RING_MAX MT_RING_MAX

/* ---- building (main thread, snapshot time) ----------------------------------------------- */

/* Compiles m->value as a whole-value regex into m->re. Returns 0, or -1 with a message. */
int mt_meta_regex_compile(mt_meta_match_t *m, char *err, size_t errlen);
void mt_meta_regex_free(void *re);

/*
 * Builds a ring over endpoints eps[0..n) of cluster c: every endpoint gets the same number of
 * points, placed by hashing "address:port#i" - MT_META_RING_POINTS each, or enough for
 * min_points in all when min_points (minimumRingSize) is not 0. Returns 0, or -1 on out of
 * memory.
 */
int mt_meta_ring_build(mt_meta_ring_t *ring, const mt_cluster_conf_t *c, const uint32_t *eps,
                       uint32_t n, uint32_t min_points);
void mt_meta_ring_free(mt_meta_ring_t *ring);

/* ---- per request ------------------------------------------------------------------------ */

/* Stable 64-bit hash (XXH3 64-bit, unseeded); the same in every process and build. */
uint64_t mt_meta_hash(const void *p, size_t n);

/* Scratch for regex matches (PCRE2 match data), one per worker: the caller owns it. */
typedef struct mt_meta_match_data mt_meta_match_data_t;
mt_meta_match_data_t *mt_meta_match_data_new(void);
void mt_meta_match_data_free(mt_meta_match_data_t *md);

/* Whether one attribute condition holds for msg (md: the caller's regex scratch). */
bool mt_meta_match_one(const mt_meta_match_t *m, const mt_msg_t *msg, mt_meta_match_data_t *md);

/* The first route of lc whose conditions all hold; NULL when none does. */
const mt_meta_route_t *mt_meta_route_find(const mt_meta_listener_conf_t *lc, const mt_msg_t *msg,
                                          mt_meta_match_data_t *md);

/* A destination of r by weight; rnd is any uniformly random number. NULL if r has none. */
const mt_meta_dest_t *mt_meta_dest_pick(const mt_meta_route_t *r, uint64_t rnd);

/* The endpoint set a destination names (the cluster's when it names no subset); NULL for
 * a subset the cluster does not define or a destination without a cluster. */
const mt_meta_subset_t *mt_meta_dest_subset(const mt_meta_dest_t *d);

/* Whether a mirror copy should be sent, for percentage pct (0-100) and random rnd. */
bool mt_meta_mirror_roll(double pct, uint64_t rnd);

/* The caller's view of endpoint state for a pick; indices are cluster endpoint indices. */
typedef struct mt_meta_lb_env {
    bool (*healthy)(void *ctx, uint32_t ep);
    uint32_t (*load)(void *ctx, uint32_t ep); /* requests in flight (LEAST_REQUEST) */
    void *ctx;
    uint32_t *rr;               /* the subset's round-robin cursor (per worker) */
    uint64_t rnd;               /* a fresh random number */
    const mt_str_t *hash_value; /* RING_HASH: the hashed attribute's value; NULL: absent */
} mt_meta_lb_env_t;

/*
 * Picks an endpoint of subset ss, skipping unhealthy ones. Returns the endpoint index, or -1
 * when none is healthy. RING_HASH without a hash value picks at random (as Envoy does); a
 * key whose ring point is unhealthy moves to the next healthy endpoint on the ring.
 */
int64_t mt_meta_lb_pick(const mt_meta_subset_t *ss, const mt_meta_lb_env_t *env);

/* Ring lookup only: the endpoint owning hash h (first point at or after h, wrapping). */
uint32_t mt_meta_ring_owner(const mt_meta_ring_t *ring, uint64_t h);

#endif
