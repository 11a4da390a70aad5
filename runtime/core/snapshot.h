/*
 * snapshot.h - the C view of a compiled configuration (docs/snapshot.md). Built once by the
 * main thread from the compiler's Lua table, immutable afterwards, shared by every worker
 * through an atomic reference count. Requests keep the snapshot they started with alive.
 */
#ifndef MELTEMI_SNAPSHOT_H
#define MELTEMI_SNAPSHOT_H

#include "runtime/core/access_log.h"
#include "runtime/core/trace.h"
#include "runtime/core/outlier.h"
#include "runtime/core/ratelimit.h"
#include "runtime/core/stats.h"

#include "runtime/core/protocol.h"

#include "protocols/codec.h"

#include <lua.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Credentials are byte strings: a Secret's base64 data may hold any byte, NUL included, so
 * every user of these fields goes by the lengths, never strlen. Both strings are also
 * NUL-terminated (after len bytes) for convenience. The type lives in core, not in a proxy:
 * it is how any protocol's secrets are held (Redis AUTH in both directions today), and
 * mt_snap_field_auth / mt_auth_free keep the reading and the wiping written once. */
typedef struct mt_auth {
    char *username; /* NULL: none */
    size_t username_len;
    char *password; /* NULL: no auth configured */
    size_t password_len;
} mt_auth_t;

typedef struct mt_endpoint_conf {
    char *address;
    uint16_t port;
    struct sockaddr_storage sa; /* resolved when the snapshot was built */
    socklen_t salen;
    char *resolve_error; /* non-NULL: unusable, and why */
    bool plain; /* Istio auto-mTLS: no sidecar (no tlsMode: istio label), so plain text to this
                   endpoint although its cluster has tls */
} mt_endpoint_conf_t;

typedef struct mt_cluster_conf {
    char *name;
    char *service;
    mt_protocol_t protocol;
    mt_endpoint_conf_t *endpoints;
    uint32_t n_endpoints;
    uint32_t connect_timeout_ms;
    uint32_t max_connections;     /* Redis leases: the field, else 1024 */
    uint32_t max_connections_set; /* the field as written, 0: absent (TCP relays, RPC) */
    /* connectionPool.tcp.tcpKeepalive on every upstream socket; keepalive_time_s 0: none */
    uint32_t keepalive_time_s, keepalive_interval_s, keepalive_probes;
    uint32_t max_connection_duration_ms;  /* 0: none (upstream.c drains older connections) */
    uint32_t idle_timeout_ms;             /* 0: none (upstream.c closes idle connections) */
    uint32_t max_requests_per_connection; /* http.maxRequestsPerConnection (RPC), 0: none */
    uint32_t max_pending_requests;        /* http.http1MaxPendingRequests (RPC), 0: none */
    char *fingerprint;         /* equal fingerprints: a worker may keep this cluster's pools */
    mt_outlier_conf_t outlier; /* outlierDetection; its per-endpoint state is shared, mutable */
    mt_stats_block_t *stats;
    struct mt_tls_conf *tls; /* DestinationRule trafficPolicy.tls (core/tls.h), or NULL */
    void *proto;             /* the proxy's own part (mt_proxy_ops_t.read_cluster), or NULL */
    uint32_t index;          /* in its snapshot's clusters[] */
} mt_cluster_conf_t;

typedef struct mt_listener_conf {
    char *name; /* address:port */
    char *address;
    uint16_t port;
    struct sockaddr_storage sa;
    socklen_t salen;
    mt_protocol_t protocol;
    char *codec;
    char *service;
    char *sni_of; /* a Gateway server of a port routed by SNI: the name of the port's bound
                     listener (protocol "sni"), which hands it its clients; this one has no
                     socket of its own */
    bool inbound; /* a Sidecar ingress listener (direction "inbound"): the inbound capture
                     port serves it, the outbound one never does */
    mt_cluster_conf_t *cluster; /* default destination; NULL if it names no cluster */
    char *fingerprint;
    mt_stats_block_t *stats;
    struct mt_tls_conf *tls;  /* the listener terminates TLS (core/tls.h), or NULL */
    struct mt_authz *authz;   /* AuthorizationPolicy (core/authz.h), or NULL: allow all */
    uint32_t max_connections; /* accepted connections open at once (all workers); 0: no cap */
    void *proto;              /* the proxy's own part (mt_proxy_ops_t.read_listener), or NULL */
    /* Istio's metrics: the protocol's response codes (set by the proxy's read_listener; NULL:
     * connection metrics only, as for plain TCP) and the label sets by destination, [0] none,
     * [1 + i] the snapshot's cluster i, filled on first use (session.c). */
    const mt_istio_codes_t *istio_codes;
    mt_istio_set_t **istio;
    uint32_t n_istio;
} mt_listener_conf_t;

typedef struct mt_snapshot {
    int refs; /* atomic */
    uint64_t generation;
    uint64_t reload_start_ns; /* uv_hrtime() when the reload that built it began; 0: startup */
    mt_listener_conf_t *listeners;
    uint32_t n_listeners;
    mt_cluster_conf_t *clusters;
    uint32_t n_clusters;
    mt_alog_conf_t *access_log; /* NULL: no access log */
    mt_trace_conf_t *tracing;   /* NULL: no tracing */
    char *lua_source; /* the snapshot as Lua source for the workers' Lua states: all of it but
                         `sources` and listeners' `metaprotocol`, which they never read */
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

/* Readers for the proxies' own snapshot parts (table at absolute index t). */
char *mt_snap_field_str(lua_State *L, int t, const char *key); /* malloc'd, or NULL */
int64_t mt_snap_field_int(lua_State *L, int t, const char *key, int64_t dflt);
bool mt_snap_field_bool(lua_State *L, int t, const char *key, bool dflt);
/* Pushes t[key] if it is a table and returns true; pushes nothing otherwise. */
bool mt_snap_field_table(lua_State *L, int t, const char *key);
/* A duration in ms, clamped to what a uint32_t holds (~49 days: "never" for a timeout). */
uint32_t mt_snap_field_ms(lua_State *L, int t, const char *key, uint32_t dflt);
/* t[key] = { username =, password = } as byte strings (mt_auth_t); all zero when absent. */
void mt_snap_field_auth(lua_State *L, int t, const char *key, mt_auth_t *a);
/* Outlier detection state (ejections, error streaks) of every cluster of `from` whose name
 * and fingerprint `to` has too is copied into `to`'s, so a reload does not bring ejected
 * endpoints back. Main thread, before `to` is handed to the workers. */
void mt_snapshot_carry_outlier_state(mt_snapshot_t *to, const mt_snapshot_t *from);
/* The token bucket table { max_tokens, tokens_per_fill, fill_interval_ms } at absolute index t
 * into b, full as of now (the clock of mt_snap_clock_ms; values clamped to 1..UINT32_MAX). */
void mt_snap_token_bucket(lua_State *L, int t, mt_token_bucket_t *b, uint64_t now_ms);
/* The workers' clock (uv_now's base: monotonic ms) as read on the main thread. */
uint64_t mt_snap_clock_ms(void);
/* Frees a's strings, wiping the password first, and zeroes a. */
void mt_auth_free(mt_auth_t *a);
/* The endpoint table { address =, port = } at absolute index t into e (zeroed by the caller),
 * resolved now. Returns 0, or -1 with e->resolve_error saying why e is unusable ("<what>
 * without an address" when it has none). */
int mt_snap_endpoint(lua_State *L, int t, const char *what, mt_endpoint_conf_t *e);
/* Frees what mt_snap_endpoint allocated in e. */
void mt_endpoint_conf_free(mt_endpoint_conf_t *e);

#endif
