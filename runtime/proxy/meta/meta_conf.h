/*
 * meta_conf.h - the MetaProtocol part of a snapshot: what mt_listener_conf_t.proto and
 * mt_cluster_conf_t.proto point to on metaprotocol listeners and clusters.
 */
#ifndef MELTEMI_META_CONF_H
#define MELTEMI_META_CONF_H

#include "runtime/core/ratelimit.h"
#include "runtime/core/ring.h"
#include "runtime/core/snapshot.h"

#include "protocols/codec.h"

/* ---- metaprotocol ------------------------------------------------------------------------
 * listener.metaprotocol and the cluster fields MetaRouter traffic needs (docs/snapshot.md,
 * docs/metaprotocol.md), read by meta_snapshot.c, used by meta_router.c and meta_proxy.c. Every
 * string is malloc'd and NUL terminated; lengths are kept for matching without strlen. */

typedef enum mt_meta_match_kind {
    MT_META_MATCH_EXACT = 0,
    MT_META_MATCH_PREFIX,
    MT_META_MATCH_REGEX, /* whole-value match, PCRE2 (JIT) */
    MT_META_MATCH_PRESENT,
} mt_meta_match_kind_t;

typedef struct mt_meta_match {
    mt_str_t key;
    mt_meta_match_kind_t kind;
    mt_str_t value; /* exact text, prefix, or regex source */
    void *re;       /* pcre2_code_8 *: compiled once, shared read-only by every worker */
} mt_meta_match_t;

typedef enum mt_lb_policy {
    MT_LB_ROUND_ROBIN = 0,
    MT_LB_LEAST_REQUEST,
    MT_LB_RANDOM,
    MT_LB_RING_HASH,
} mt_lb_policy_t;

/* A consistent-hash ring (runtime/core/ring.h): points sorted by hash naming endpoints. */
typedef mt_ring_t mt_meta_ring_t;

/* A DestinationRule subset (or the whole cluster): the endpoints whose labels match. */
typedef struct mt_meta_subset {
    char *name;    /* NULL for the whole cluster */
    uint32_t *eps; /* endpoint indices into mt_cluster_conf_t.endpoints */
    uint32_t n_eps;
    mt_lb_policy_t lb_policy; /* the subset's trafficPolicy, else the cluster's */
    mt_str_t hash_key;        /* RING_HASH: the metadata attribute hashed; ptr NULL: none */
    bool hash_source_ip;      /* RING_HASH: consistentHash.useSourceIp, the client's IP */
    mt_meta_ring_t ring;      /* RING_HASH only */
    /* Istio's label set of requests to this subset (destination_version = its name), made on
     * first use by a worker (meta_proxy.c); sets are never freed */
    mt_istio_set_t *istio;
} mt_meta_subset_t;

typedef struct mt_meta_cluster_conf {
    char *codec;                  /* NULL: use the listener's */
    const mt_codec_t *codec_impl; /* resolved at snapshot time; NULL: unknown or none */
    mt_meta_subset_t all;         /* every endpoint, with the cluster's policy */
    mt_meta_subset_t *subsets;
    uint32_t n_subsets;
} mt_meta_cluster_conf_t;

typedef struct mt_meta_dest {
    mt_cluster_conf_t *cluster; /* NULL: the snapshot has no cluster of that name */
    char *cluster_name;
    char *subset_name; /* NULL: every endpoint */
    int32_t subset;    /* index into mt_meta_cluster(cluster)->subsets; -1: all, -2: unknown */
    uint32_t weight;
    double percentage; /* mirrors: share of requests copied, 0-100 */
} mt_meta_dest_t;

/* retries.retryOn conditions (meltemi's reading of Istio's for RPC, docs/metaprotocol.md). */
enum {
    MT_RETRY_CONNECT_FAILURE = 1u << 0, /* could not connect: the request never left */
    MT_RETRY_RESET = 1u << 1,           /* the connection was lost with the request on it */
    MT_RETRY_TIMEOUT = 1u << 2,         /* no answer within perTryTimeout */
    MT_RETRY_ERROR_ANSWER = 1u << 3,    /* an error answer (Dubbo status, Thrift exception) */
};

typedef struct mt_meta_route {
    char *name;
    mt_meta_match_t *match; /* all must hold */
    uint32_t n_match;
    mt_meta_dest_t *dests;
    uint32_t n_dests;
    uint32_t weight_total;
    mt_meta_dest_t *mirror; /* NULL: none */
    mt_attr_t *request_mutation;
    uint32_t n_request_mutation;
    mt_attr_t *response_mutation;
    uint32_t n_response_mutation;
    uint32_t timeout_ms;         /* route timeout (meltemi extension); 0: the listener's */
    double abort_percentage;     /* fault.abort share of requests, 0-100; 0: none */
    mt_error_kind_t abort_kind;  /* the codec error fault.abort answers with */
    uint32_t retry_attempts;     /* retries.attempts: tries after the first; 0: none */
    uint32_t retry_on;           /* MT_RETRY_* */
    uint32_t per_try_timeout_ms; /* 0: the route's (or listener's) timeout */
    double delay_percentage;     /* fault.delay share of requests, 0-100; 0: none */
    uint32_t delay_ms;           /* fault.delay.fixedDelay */
} mt_meta_route_t;

/* MetaRouter localRateLimit conditions[]: the first whose matches all hold takes a token from
 * its own bucket; a request no condition matches takes one from the default bucket. */
typedef struct mt_meta_rate_cond {
    mt_meta_match_t *match;
    uint32_t n_match;
    mt_token_bucket_t bucket; /* shared by every worker (ratelimit.h) */
} mt_meta_rate_cond_t;

/* MetaRouter globalRateLimit (docs/metaprotocol.md): requests its match selects are asked of
 * an Envoy rate limit service (runtime/core/rls.h) with one descriptor, whose entries are
 * {descriptorKey: the request's property attribute}. */
typedef struct mt_meta_grl_descriptor {
    mt_str_t property; /* the request attribute read */
    mt_str_t key;      /* the descriptor entry's key */
} mt_meta_grl_descriptor_t;

typedef struct mt_meta_global_rate_limit {
    mt_meta_match_t *match; /* all must hold; none: every request */
    uint32_t n_match;
    char *domain;
    uint32_t timeout_ms; /* requestTimeout, default 20 */
    bool deny_on_fail;   /* an error or timeout of the service refuses the request */
    mt_meta_grl_descriptor_t *descriptors;
    uint32_t n_descriptors;
    char *service;              /* rateLimitService as written (logs) */
    mt_cluster_conf_t *cluster; /* the cluster it names: its first usable endpoint is asked */
    char *authority;            /* :authority sent: the cluster's service host */
} mt_meta_global_rate_limit_t;

typedef struct mt_meta_listener_conf {
    mt_meta_route_t *routes; /* in order, first match wins; none: the default cluster */
    uint32_t n_routes;
    mt_token_bucket_t *rate_bucket; /* localRateLimit.tokenBucket; NULL: unlimited */
    mt_meta_rate_cond_t *rate_conds;
    uint32_t n_rate_conds;
    mt_meta_global_rate_limit_t *global_rl; /* globalRateLimit; NULL: none */
    uint32_t request_timeout_ms; /* listener.metaprotocol.request_timeout_ms, default 5000 */
    const mt_codec_t *codec;     /* resolved at snapshot time; NULL: unknown (relayed as TCP) */
    /* Every attribute this listener's requests can be asked for: the routes' match keys, the
     * hash keys of the subsets its routes, mirrors and default cluster pick from, and
     * "interface"/"method" (error texts). Request decoders store only these (codec.h). */
    mt_attr_filter_t want;
    struct mt_meta_methods *methods; /* per-method counts (meta_methods.h); NULL: none */
    /* A LuaFilter runs on this listener (listener.metaprotocol.lua_filters): workers load
     * their Lua filters only when some listener has one. A filter may read any attribute;
     * what want leaves out it finds by decoding the frame again (meta_lua.c), so want stays
     * as cheap as the listener's C readers need. */
    bool lua_filtered;
} mt_meta_listener_conf_t;

static inline mt_meta_cluster_conf_t *mt_meta_cluster(const mt_cluster_conf_t *c)
{
    return c ? c->proto : NULL;
}

static inline mt_meta_listener_conf_t *mt_meta_listener(const mt_listener_conf_t *l)
{
    return l ? l->proto : NULL;
}

#endif
