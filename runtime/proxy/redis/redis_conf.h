/*
 * redis_conf.h - the Redis part of a snapshot: what mt_listener_conf_t.proto and
 * mt_cluster_conf_t.proto point to on redis listeners and clusters (listener.redis and
 * cluster.redis of docs/snapshot.md). Read by redis_snapshot.c on the main thread, immutable
 * afterwards, used by the data path (the files of redis_proxy.h, redis_cluster.c among them)
 * through the two accessors below.
 */
#ifndef MELTEMI_REDIS_CONF_H
#define MELTEMI_REDIS_CONF_H

#include "runtime/core/ring.h"
#include "runtime/core/snapshot.h"

#include "protocols/redis/commands.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum mt_redis_mode { MT_REDIS_PROXY = 0, MT_REDIS_CLUSTER = 1 } mt_redis_mode_t;

typedef enum mt_read_policy {
    MT_READ_MASTER = 0,
    MT_READ_PREFER_MASTER,
    MT_READ_REPLICA,
    MT_READ_PREFER_REPLICA,
    MT_READ_ANY,
} mt_read_policy_t;

/* RedisService localRateLimit conditions[] (a meltemi extension): a command of the class
 * (REDIS_CMD_WRITE / REDIS_CMD_READONLY in `flags`) or named in `ids` takes a token from this
 * condition's bucket; the first matching condition wins. */
typedef struct mt_redis_rate_cond {
    uint32_t flags;           /* any of these command flags matches; 0: none */
    uint64_t ids[4];          /* bit redis_command_t.id: named commands */
    mt_token_bucket_t bucket; /* shared by every worker (runtime/core/ratelimit.h) */
} mt_redis_rate_cond_t;

/* RedisService settings of one listener (listener.redis). */
typedef struct mt_redis_listener_conf {
    mt_auth_t auth; /* client -> proxy */
    uint32_t op_timeout_ms;
    mt_read_policy_t read_policy;
    bool enable_command_stats;
    uint32_t max_buffer_size_before_flush; /* 0: flush every loop iteration */
    uint32_t buffer_flush_timeout_ms;
    bool enable_redirection;                   /* follow MOVED / ASK (cluster mode) */
    bool enable_hashtagging;                   /* PROXY mode: hash only the {tag} of a key */
    uint32_t max_upstream_unknown_connections; /* nodes first met through a redirection */
    uint32_t auth_timeout_ms; /* close if not authenticated by then (auth required); 0: never */
    uint32_t idle_timeout_ms; /* close after this long with no traffic, nothing in flight; 0:
                                 never */
    mt_token_bucket_t *rate_bucket; /* localRateLimit.tokenBucket; NULL: no default limit */
    mt_redis_rate_cond_t *rate_conds;
    uint32_t n_rate_conds;
    /* settings.deniedCommands (a meltemi extension): bit i of denied = command id i, of
     * denied_sub = the i-th entry of the subcommand table; answered NOPERM before anything
     * acts on them. n_denied = 0: none (the data path checks only that). */
    uint32_t n_denied;
    uint8_t denied[(REDIS_COMMAND_COUNT + 7) / 8];
    uint8_t denied_sub[(REDIS_SUBCOMMAND_MAX + 7) / 8];
} mt_redis_listener_conf_t;

/* RedisDestination settings of one cluster (cluster.redis). */
typedef struct mt_redis_cluster_conf {
    mt_redis_mode_t mode;
    mt_auth_t auth;                /* proxy -> Redis */
    mt_endpoint_conf_t *discovery; /* discoveryEndpoints: more cluster seeds, resolved */
    uint32_t n_discovery;
    /* PROXY mode, a plain primary/replica pair: replica[i] says whether endpoints[i] of the
     * cluster (and so mt_wcluster_t.eps[i]) is a read replica, from its labels (role,
     * redis-role or redis.io/role = replica | slave). NULL when the cluster has none. */
    bool *replica;
    uint32_t n_replicas;
    /* PROXY mode without roles: the consistent-hash ring keys are spread over (every
     * endpoint, MT_RING_POINTS each); n == 0 when the cluster has fewer than two. */
    mt_ring_t ring;
    /* redis.sentinel (a meltemi extension, PROXY mode only): the master is the one the
     * Sentinels name for sentinel_master (sentinel.c); NULL: no Sentinel. The sentinels are
     * resolved like the seeds; sentinel_auth is what the proxy says to them. */
    char *sentinel_master;
    mt_endpoint_conf_t *sentinels;
    uint32_t n_sentinels;
    mt_auth_t sentinel_auth;
} mt_redis_cluster_conf_t;

/* What a cluster without a Redis part reads as (a snapshot where a Redis route names a
 * cluster of another protocol): PROXY mode, no auth, no seeds. */
extern const mt_redis_cluster_conf_t mt_redis_cluster_none;

/* The Redis part of a listener. Redis sessions only run on redis listeners (the worker
 * dispatches accepts by protocol and a rebind keeps it), whose part redis_snapshot.c always
 * sets, so this is one load. */
static inline const mt_redis_listener_conf_t *mt_redis_listener(const mt_listener_conf_t *l)
{
    return l->proto;
}

/* The Redis part of a cluster. A Redis route may only name redis clusters (the compiler
 * checks the port's protocol), but proto is another proxy's struct on any other cluster, so
 * the protocol is checked rather than trusted. A redis cluster always has its part (a
 * snapshot where mt_redis_read_cluster failed is refused). */
static inline const mt_redis_cluster_conf_t *mt_redis_cluster(const mt_cluster_conf_t *c)
{
    return c->protocol == MT_PROTO_REDIS ? c->proto : &mt_redis_cluster_none;
}

/* Istio's response_code values of Redis replies (reply.c): OK or the error's prefix. */
extern const mt_istio_codes_t mt_redis_istio_codes;

#endif
