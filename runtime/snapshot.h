/*
 * snapshot.h - the C view of a compiled configuration (docs/snapshot.md). Built once by the
 * main thread from the compiler's Lua table, immutable afterwards, shared by every worker
 * through an atomic reference count. Requests keep the snapshot they started with alive.
 */
#ifndef MELTEMI_SNAPSHOT_H
#define MELTEMI_SNAPSHOT_H

#include "runtime/stats.h"

#include "protocols/codec.h"

#include <lua.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef enum mt_protocol {
    MT_PROTO_TCP = 0,
    MT_PROTO_REDIS = 1,
    MT_PROTO_META = 2,
} mt_protocol_t;

typedef enum mt_redis_mode { MT_REDIS_PROXY = 0, MT_REDIS_CLUSTER = 1 } mt_redis_mode_t;

typedef enum mt_read_policy {
    MT_READ_MASTER = 0,
    MT_READ_PREFER_MASTER,
    MT_READ_REPLICA,
    MT_READ_PREFER_REPLICA,
    MT_READ_ANY,
} mt_read_policy_t;

/* Credentials are byte strings: a Secret's base64 data may hold any byte, NUL included, so
 * every user of these fields goes by the lengths, never strlen. Both strings are also
 * NUL-terminated (after len bytes) for convenience. */
typedef struct mt_auth {
    char *username; /* NULL: none */
    size_t username_len;
    char *password; /* NULL: no auth configured */
    size_t password_len;
} mt_auth_t;

struct mt_meta_cluster_conf;
struct mt_meta_listener_conf;

typedef struct mt_endpoint_conf {
    char *address;
    uint16_t port;
    struct sockaddr_storage sa; /* resolved when the snapshot was built */
    socklen_t salen;
    char *resolve_error; /* non-NULL: unusable, and why */
    bool replica;        /* label role (or redis-role) = replica | slave: a read replica */
} mt_endpoint_conf_t;

typedef struct mt_cluster_conf {
    char *name;
    char *service;
    mt_protocol_t protocol;
    mt_endpoint_conf_t *endpoints;
    uint32_t n_endpoints;
    uint32_t connect_timeout_ms;
    uint32_t max_connections;
    mt_redis_mode_t redis_mode;
    mt_auth_t redis_auth;          /* proxy -> Redis */
    mt_endpoint_conf_t *discovery; /* RedisDestination discoveryEndpoints (cluster seeds) */
    uint32_t n_discovery;
    char *fingerprint; /* equal fingerprints: a worker may keep this cluster's pools */
    mt_stats_block_t *stats;
    struct mt_meta_cluster_conf *meta; /* protocol metaprotocol only, else NULL */
} mt_cluster_conf_t;

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
    uint32_t
        idle_timeout_ms; /* close after this long with no traffic, nothing in flight; 0: never */
} mt_redis_listener_conf_t;

typedef struct mt_listener_conf {
    char *name; /* address:port */
    char *address;
    uint16_t port;
    struct sockaddr_storage sa;
    socklen_t salen;
    mt_protocol_t protocol;
    char *codec;
    char *service;
    mt_cluster_conf_t *cluster; /* default destination; NULL if it names no cluster */
    mt_redis_listener_conf_t redis;
    char *fingerprint;
    mt_stats_block_t *stats;
    struct mt_meta_listener_conf *meta; /* protocol metaprotocol only, else NULL */
} mt_listener_conf_t;

typedef struct mt_snapshot {
    int refs; /* atomic */
    uint64_t generation;
    mt_listener_conf_t *listeners;
    uint32_t n_listeners;
    mt_cluster_conf_t *clusters;
    uint32_t n_clusters;
    char *lua_source; /* the whole snapshot as Lua source, for the workers' Lua states */
    size_t lua_source_len;
} mt_snapshot_t;

/*
 * Builds a snapshot from the table at stack index idx (main thread: creates stats blocks,
 * resolves endpoint host names). Returns NULL and a malloc'd message in *err on failure.
 */
mt_snapshot_t *mt_snapshot_from_lua(lua_State *L, int idx, uint64_t generation, char **err);
mt_snapshot_t *mt_snapshot_ref(mt_snapshot_t *s);
void mt_snapshot_unref(mt_snapshot_t *s);
mt_cluster_conf_t *mt_snapshot_cluster(const mt_snapshot_t *s, const char *name);

/* ---- metaprotocol ------------------------------------------------------------------------
 * listener.metaprotocol and the cluster fields MetaRouter traffic needs (docs/snapshot.md,
 * docs/metaprotocol.md), read by snapshot.c, used by meta_router.c and meta_proxy.c. Every
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

/* A consistent-hash ring: n points sorted by hash, each naming an endpoint index. */
typedef struct mt_meta_ring {
    uint64_t *hash;
    uint32_t *ep;
    uint32_t n;
} mt_meta_ring_t;

/* A DestinationRule subset (or the whole cluster): the endpoints whose labels match. */
typedef struct mt_meta_subset {
    char *name;    /* NULL for the whole cluster */
    uint32_t *eps; /* endpoint indices into mt_cluster_conf_t.endpoints */
    uint32_t n_eps;
    mt_lb_policy_t lb_policy; /* the subset's trafficPolicy, else the cluster's */
    mt_str_t hash_key;        /* RING_HASH: the metadata attribute hashed; ptr NULL: none */
    mt_meta_ring_t ring;      /* RING_HASH only */
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
    int32_t subset;    /* index into cluster->meta->subsets; -1: all, -2: unknown */
    uint32_t weight;
    double percentage; /* mirrors: share of requests copied, 0-100 */
} mt_meta_dest_t;

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
} mt_meta_route_t;

typedef struct mt_meta_listener_conf {
    mt_meta_route_t *routes; /* in order, first match wins; none: the default cluster */
    uint32_t n_routes;
    uint32_t request_timeout_ms; /* listener.metaprotocol.request_timeout_ms, default 5000 */
    const mt_codec_t *codec;     /* resolved at snapshot time; NULL: unknown (relayed as TCP) */
} mt_meta_listener_conf_t;

#endif
