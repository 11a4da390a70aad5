/*
 * meta_router.c - MetaRouter matching, weighted destinations and endpoint load balancing
 * (see meta_router.h). No I/O, no per-request allocation and no state of its own: the regex
 * scratch (PCRE2 match data) is the caller's, one per worker.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "runtime/proxy/meta/meta_router.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- regexes ----------------------------------------------------------------------------- */

int mt_meta_regex_compile(mt_meta_match_t *m, char *err, size_t errlen)
{
    /* Istio's StringMatch.regex matches the whole value (Envoy's safe_regex does): anchor at
     * both ends. Values may be any bytes (Thrift strings): invalid UTF-8 simply fails to
     * match instead of being undefined behaviour. */
    int code = 0;
    PCRE2_SIZE off = 0;
    uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)m->value.ptr, m->value.len, opts, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(err, errlen, "regex %s does not compile: %s at offset %zu", m->value.ptr,
                 (const char *)msg, (size_t)off);
        return -1;
    }
    /* JIT is an optimisation: without it (unsupported CPU) pcre2_match interprets. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    m->re = re;
    return 0;
}

void mt_meta_regex_free(void *re)
{
    if (re)
        pcre2_code_free((pcre2_code *)re);
}

/* A match only needs to know whether it matched: one data block of one pair per worker. */
mt_meta_match_data_t *mt_meta_match_data_new(void)
{
    return (mt_meta_match_data_t *)pcre2_match_data_create(1, NULL);
}

void mt_meta_match_data_free(mt_meta_match_data_t *md)
{
    if (md)
        pcre2_match_data_free((pcre2_match_data *)md);
}

static bool regex_match(const mt_meta_match_t *m, mt_str_t v, mt_meta_match_data_t *scratch)
{
    pcre2_match_data *md = (pcre2_match_data *)scratch;
    if (!md || !m->re)
        return false;
    /* pcre2_match uses the JIT code when there is some. An empty value has ptr possibly
     * NULL; PCRE2 wants a valid pointer even for length 0. */
    PCRE2_SPTR subject = v.ptr ? (PCRE2_SPTR)v.ptr : (PCRE2_SPTR) "";
    int rc = pcre2_match((const pcre2_code *)m->re, subject, v.len, 0, 0, md, NULL);
    return rc >= 0;
}

/* ---- matching ---------------------------------------------------------------------------- */

bool mt_meta_match_one(const mt_meta_match_t *m, const mt_msg_t *msg, mt_meta_match_data_t *md)
{
    const mt_str_t *v = mt_msg_get(msg, m->key.ptr, m->key.len);
    if (!v)
        return false;
    switch (m->kind) {
    case MT_META_MATCH_EXACT:
        return mt_str_eq(*v, m->value.ptr, m->value.len);
    case MT_META_MATCH_PREFIX:
        return v->len >= m->value.len &&
               (m->value.len == 0 || memcmp(v->ptr, m->value.ptr, m->value.len) == 0);
    case MT_META_MATCH_REGEX:
        return regex_match(m, *v, md);
    case MT_META_MATCH_PRESENT:
        return true;
    }
    return false;
}

const mt_meta_route_t *mt_meta_route_find(const mt_meta_listener_conf_t *lc, const mt_msg_t *msg,
                                          mt_meta_match_data_t *md)
{
    for (uint32_t i = 0; lc && i < lc->n_routes; i++) {
        const mt_meta_route_t *r = &lc->routes[i];
        uint32_t j = 0;
        while (j < r->n_match && mt_meta_match_one(&r->match[j], msg, md))
            j++;
        if (j == r->n_match)
            return r;
    }
    return NULL;
}

const mt_meta_dest_t *mt_meta_dest_pick(const mt_meta_route_t *r, uint64_t rnd)
{
    if (r->n_dests == 0)
        return NULL;
    if (r->n_dests == 1 || r->weight_total == 0)
        return &r->dests[0];
    uint64_t x = rnd % r->weight_total;
    for (uint32_t i = 0; i < r->n_dests; i++) {
        if (x < r->dests[i].weight)
            return &r->dests[i];
        x -= r->dests[i].weight;
    }
    return &r->dests[r->n_dests - 1];
}

const mt_meta_subset_t *mt_meta_dest_subset(const mt_meta_dest_t *d)
{
    if (!mt_meta_cluster(d->cluster))
        return NULL;
    const mt_meta_cluster_conf_t *mc = mt_meta_cluster(d->cluster);
    if (d->subset == -1)
        return &mc->all;
    if (d->subset < 0 || (uint32_t)d->subset >= mc->n_subsets)
        return NULL;
    return &mc->subsets[d->subset];
}

bool mt_meta_mirror_roll(double pct, uint64_t rnd)
{
    if (pct >= 100.0)
        return true;
    if (pct <= 0.0)
        return false;
    /* millionths of a percent are plenty: mirrorPercentage is a double in the API */
    return (double)(rnd % 100000000u) < pct * 1000000.0;
}

/* ---- hashing and rings ------------------------------------------------------------------- */

/* The ring itself is runtime/core/ring.c's, shared with Redis PROXY mode. */
uint64_t mt_meta_hash(const void *p, size_t n)
{
    return mt_hash64(p, n);
}

int mt_meta_ring_build(mt_meta_ring_t *ring, const mt_cluster_conf_t *c, const uint32_t *eps,
                       uint32_t n, uint32_t min_points)
{
    return mt_ring_build(ring, c->endpoints, eps, n, min_points);
}

void mt_meta_ring_free(mt_meta_ring_t *ring)
{
    mt_ring_free(ring);
}

uint32_t mt_meta_ring_owner(const mt_meta_ring_t *ring, uint64_t h)
{
    return mt_ring_owner(ring, h);
}

/* ---- load balancing ---------------------------------------------------------------------- */

static bool lb_healthy(const mt_meta_lb_env_t *env, uint32_t ep)
{
    return !env->healthy || env->healthy(env->ctx, ep);
}

static int64_t lb_round_robin(const mt_meta_subset_t *ss, const mt_meta_lb_env_t *env)
{
    for (uint32_t i = 0; i < ss->n_eps; i++) {
        uint32_t ep = ss->eps[(*env->rr)++ % ss->n_eps];
        if (lb_healthy(env, ep))
            return ep;
    }
    return -1;
}

static int64_t lb_random(const mt_meta_subset_t *ss, const mt_meta_lb_env_t *env)
{
    uint32_t start = (uint32_t)(env->rnd % ss->n_eps);
    for (uint32_t i = 0; i < ss->n_eps; i++) {
        uint32_t ep = ss->eps[(start + i) % ss->n_eps];
        if (lb_healthy(env, ep))
            return ep;
    }
    return -1;
}

/* Fewest requests in flight; ties go round robin so equal endpoints share the load. */
static int64_t lb_least_request(const mt_meta_subset_t *ss, const mt_meta_lb_env_t *env)
{
    uint32_t start = (*env->rr)++;
    int64_t best = -1;
    uint32_t best_load = UINT32_MAX;
    for (uint32_t i = 0; i < ss->n_eps; i++) {
        uint32_t ep = ss->eps[(start + i) % ss->n_eps];
        if (!lb_healthy(env, ep))
            continue;
        uint32_t load = env->load ? env->load(env->ctx, ep) : 0;
        if (load < best_load) {
            best = ep;
            best_load = load;
        }
    }
    return best;
}

static int64_t lb_ring_hash(const mt_meta_subset_t *ss, const mt_meta_lb_env_t *env)
{
    const mt_meta_ring_t *ring = &ss->ring;
    if (!env->hash_value || ring->n == 0)
        return lb_random(ss, env);
    uint32_t pos = mt_ring_pos(ring, mt_meta_hash(env->hash_value->ptr, env->hash_value->len));
    for (uint32_t i = 0; i < ring->n; i++) {
        uint32_t ep = ring->ep[(pos + i) % ring->n];
        if (lb_healthy(env, ep))
            return ep;
    }
    return -1;
}

int64_t mt_meta_lb_pick(const mt_meta_subset_t *ss, const mt_meta_lb_env_t *env)
{
    if (!ss || ss->n_eps == 0)
        return -1;
    switch (ss->lb_policy) {
    case MT_LB_LEAST_REQUEST:
        return lb_least_request(ss, env);
    case MT_LB_RANDOM:
        return lb_random(ss, env);
    case MT_LB_RING_HASH:
        return lb_ring_hash(ss, env);
    default:
        return lb_round_robin(ss, env);
    }
}
