/*
 * stats.h - counters without locks. Every listener and cluster has a stats block created by
 * the main thread and never freed, so workers can keep pointers across reloads; a proxy adds
 * detail blocks of its own (Redis per command, MetaProtocol per method) through
 * mt_stats_detail_t, which names them, so core never names a protocol. Each worker writes only its
 * own cache-line-aligned shard; the admin server sums the shards when it renders /stats/prometheus
 * (a torn read of an aligned 64-bit word cannot happen on the platforms we build for).
 */
#ifndef MELTEMI_STATS_H
#define MELTEMI_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MT_MAX_WORKERS 64

typedef enum mt_stats_kind {
    MT_STATS_LISTENER = 0,
    MT_STATS_CLUSTER = 1,
    MT_STATS_DETAIL = 2, /* a proxy's per listener and key block (mt_stats_detail_t) */
    MT_STATS_LUA = 3,    /* counters of Lua filters: name + label; created by workers too */
} mt_stats_kind_t;

/* Counter slots; which ones are meaningful depends on the block's kind. */
enum {
    /* listener */
    MT_ST_DOWNSTREAM_CX_TOTAL = 0,
    MT_ST_DOWNSTREAM_CX_ACTIVE, /* gauge: +1 / -1 */
    MT_ST_REQUESTS_TOTAL,
    MT_ST_REQUEST_ERRORS,  /* error replies sent to clients (local or upstream) */
    MT_ST_PROTOCOL_ERRORS, /* malformed frames */
    MT_ST_AUTH_FAILURES,
    MT_ST_CROSS_PROTOCOL,         /* connections closed for an HTTP request (POST / Host:) */
    MT_ST_AUTH_TIMEOUTS,          /* connections closed: no AUTH within settings.authTimeout */
    MT_ST_IDLE_TIMEOUTS,          /* connections closed: quiet for settings.idleTimeout */
    MT_ST_RATE_LIMITED,           /* requests refused by a local rate limit (response flag RL) */
    MT_ST_STREAMS_TOTAL,          /* MetaProtocol streams opened by clients (init frames routed) */
    MT_ST_STREAM_FRAMES,          /* stream frames relayed, both directions */
    MT_ST_PUBSUB_SLOW_CLOSED,     /* subscribers closed: too many messages unsent (Redis pub/sub) */
    MT_ST_TLS_HANDSHAKE_FAILURES, /* downstream TLS handshakes refused or failed */
    MT_ST_RBAC_DENIED,            /* requests an AuthorizationPolicy denied */
    MT_ST_DOWNSTREAM_CX_OVERFLOW, /* connections closed at accept: max_connections reached */
    MT_ST_RBAC_AUDITED,           /* requests an AUDIT AuthorizationPolicy matched */
    /* globalRateLimit (core/rls.h), on the listener asking */
    MT_ST_RLS_REQUESTS,    /* ShouldRateLimit requests sent */
    MT_ST_RLS_CALLS,       /* calls they covered: the sum of their hits_addend */
    MT_ST_RLS_OK,          /* requests answered OK */
    MT_ST_RLS_OVER_LIMIT,  /* requests answered OVER_LIMIT */
    MT_ST_RLS_ERRORS,      /* failed: no connection, reset, gRPC error, unreadable answer */
    MT_ST_RLS_TIMEOUTS,    /* batches not answered within requestTimeout */
    MT_ST_RLS_FAIL_OPEN,   /* calls let through because the service failed (denyOnFail false) */
    MT_ST_RLS_FAIL_CLOSED, /* calls refused because the service failed (denyOnFail true) */
    MT_ST_RLS_ACTIVE,      /* gauge: requests in flight */
    /* cluster */
    MT_ST_UPSTREAM_CX_TOTAL,
    MT_ST_UPSTREAM_CX_ACTIVE, /* gauge */
    MT_ST_UPSTREAM_CX_CONNECT_FAIL,
    MT_ST_UPSTREAM_RQ_TOTAL,
    MT_ST_UPSTREAM_RQ_ERRORS, /* failed because of the upstream: closed, timeout, auth */
    MT_ST_UPSTREAM_RQ_TIMEOUT,
    MT_ST_UPSTREAM_CX_LEASED,    /* gauge: exclusive connections leased (transactions, pub/sub) */
    MT_ST_UPSTREAM_CX_IDLE,      /* gauge: exclusive connections idle in the pool */
    MT_ST_OUTLIER_EJECTIONS,     /* endpoints ejected by outlier detection */
    MT_ST_UPSTREAM_RQ_RETRY,     /* requests sent again (MetaRouter retries) */
    MT_ST_UPSTREAM_TLS_FAILURES, /* upstream TLS handshakes refused or failed */
    MT_ST_UPSTREAM_TLS_RESUMED,  /* upstream TLS handshakes that resumed a session */
    MT_ST_UPSTREAM_CX_OVERFLOW,  /* refused: the cluster's connectionPool.tcp.maxConnections */
    MT_ST_UPSTREAM_CX_MAX_DURATION,     /* drained: older than tcp.maxConnectionDuration */
    MT_ST_UPSTREAM_CX_IDLE_TIMEOUT,     /* closed: idle for tcp.idleTimeout */
    MT_ST_UPSTREAM_CX_MAX_REQUESTS,     /* drained: http.maxRequestsPerConnection requests sent */
    MT_ST_UPSTREAM_RQ_PENDING_OVERFLOW, /* refused: http.http1MaxPendingRequests (flag UO) */
    MT_ST_UPSTREAM_RQ_PENDING, /* gauge: requests queued on a connection still connecting */
    MT_ST__COUNT
};

/* Latency histogram bucket upper bounds in ms (Istio's), plus +Inf. */
#define MT_HIST_BUCKETS 15
extern const double mt_hist_bounds_ms[MT_HIST_BUCKETS];

typedef struct mt_stats_shard {
    int64_t c[MT_ST__COUNT];
    uint64_t hist[MT_HIST_BUCKETS + 1]; /* last: +Inf */
    double hist_sum_ms;
} __attribute__((aligned(64))) mt_stats_shard_t;

/*
 * A family of detail blocks a proxy defines (static, never freed): per listener and key, a
 * total (MT_ST_REQUESTS_TOTAL), an error count (MT_ST_REQUEST_ERRORS) and a duration
 * histogram, rendered as <prefix>_total, <prefix>_errors_total and
 * <prefix>_duration_milliseconds with the labels listener="..." and <label>="key".
 */
typedef struct mt_stats_detail {
    const char *prefix;     /* e.g. "meltemi_redis_command" */
    const char *scope;      /* the first label's name; NULL: "listener" ("cluster", ...) */
    const char *label;      /* e.g. "command" */
    bool total_only;        /* only <prefix>_total (events, not requests) */
    bool no_duration;       /* <prefix>_total and _errors_total, no duration histogram */
    const char *help_total; /* HELP texts of the three families */
    const char *help_errors;
    const char *help_duration;
} mt_stats_detail_t;

typedef struct mt_stats_block {
    mt_stats_kind_t kind;
    char *name;   /* listener or cluster name; for detail and Lua blocks "name\0key" */
    char *labels; /* Prometheus label set without braces, e.g. listener="127.0.0.1:6379" */
    const mt_stats_detail_t *detail; /* MT_STATS_DETAIL only */
    struct mt_stats_block *next;
    mt_stats_shard_t *shards; /* mt_stats_nworkers of them */
} mt_stats_block_t;

extern unsigned mt_stats_nworkers;

/* Main thread only, before or between snapshots. Finds or creates the block. */
void mt_stats_init(unsigned nworkers);
mt_stats_block_t *mt_stats_block(mt_stats_kind_t kind, const char *name, const char *extra);
/* A detail block of family d for listener and key (any thread; creation takes a lock). */
mt_stats_block_t *mt_stats_detail_block(const mt_stats_detail_t *d, const char *listener,
                                        const char *key);

static inline void mt_stat_add(mt_stats_block_t *b, unsigned worker, unsigned slot, int64_t d)
{
    b->shards[worker].c[slot] += d;
}
void mt_stat_observe_ms(mt_stats_block_t *b, unsigned worker, double ms);

/* Process-wide gauges and counters, written by the main thread only. */
typedef struct mt_stats_global {
    uint64_t config_generation;
    uint64_t config_reloads;
    uint64_t config_reload_failures;
    double start_time; /* seconds: wall clock (mt_stats_init sets it) or monotonic, e.g.
                          uv_now()/1000.0; the uptime is computed on the matching clock */
} mt_stats_global_t;
extern mt_stats_global_t mt_stats_global;

/* ---- Istio's standard metrics ------------------------------------------------------------
 *
 * One label set (mt_istio_set_t) per listener and destination cluster: everything Istio
 * labels a request with but its outcome. Under it, series by outcome: response_code (an
 * index into the listener protocol's code table, mt_istio_codes_t, which its proxy defines)
 * and response_flags (none, or the first of MT_RF_* in Envoy's order). Sets and series are
 * created on first use (the only step that formats or locks) and never freed; the request
 * path indexes arrays of pointers and adds to its own worker's shard.
 *
 * Cardinality: listeners x clusters x codes x (1 + MT_RF_COUNT) at most, and in practice the
 * pairs and outcomes that happen; no key, argument, method or client address is a label.
 */

/* Envoy's response flags that meltemi sets (Envoy's short codes, same meaning). */
enum {
    MT_RF_UH = 1u << 0,    /* no healthy upstream */
    MT_RF_UF = 1u << 1,    /* upstream connection failure */
    MT_RF_URX = 1u << 2,   /* retry / redirection limit exceeded */
    MT_RF_NR = 1u << 3,    /* no route, or no cluster */
    MT_RF_UT = 1u << 4,    /* upstream request timeout */
    MT_RF_DI = 1u << 5,    /* a delay was injected (fault) */
    MT_RF_FI = 1u << 6,    /* an abort was injected (fault) */
    MT_RF_RL = 1u << 7,    /* rate limited */
    MT_RF_UAEX = 1u << 8,  /* denied by an external authorizer */
    MT_RF_DC = 1u << 9,    /* the downstream connection went away */
    MT_RF_RBAC = 1u << 10, /* denied by a policy (a Lua filter's deny, an unauthenticated client) */
    MT_RF_UO = 1u << 11, /* upstream overflow: a connection pool bound (http1MaxPendingRequests) */
};
#define MT_RF_COUNT 12
extern const char *const mt_rflag_names[MT_RF_COUNT]; /* "UH", "UF", ... */

/* A protocol's response codes: index 0 is success. Static, defined by the proxy. */
#define MT_ISTIO_MAX_CODES 24
/* The code of a request that got no response (the client left first: flag DC), "0" as in
 * Envoy, whatever the protocol; a table has at most MT_ISTIO_MAX_CODES - 1 names. */
#define MT_ISTIO_CODE_NONE (MT_ISTIO_MAX_CODES - 1)
typedef struct mt_istio_codes {
    const char *protocol; /* request_protocol: "redis", "dubbo", "thrift", ... */
    const char *const *names;
    uint32_t n; /* at most MT_ISTIO_MAX_CODES */
} mt_istio_codes_t;

/* The response_code label of code in c's table (MT_ISTIO_CODE_NONE: "0"). */
static inline const char *mt_istio_code_name(const mt_istio_codes_t *c, uint32_t code)
{
    if (code == MT_ISTIO_CODE_NONE)
        return "0";
    return c->names[code < c->n ? code : c->n - 1];
}

/* Istio's byte histograms: 1, 10, ... 10^7 bytes, plus +Inf. */
#define MT_BYTES_BUCKETS 8

typedef struct mt_istio_shard {
    uint64_t dur[MT_HIST_BUCKETS + 1]; /* per bucket (not cumulative); last: +Inf */
    uint64_t dur_sum_ns;
    uint64_t req_bytes[MT_BYTES_BUCKETS + 1];
    uint64_t req_bytes_sum;
    uint64_t resp_bytes[MT_BYTES_BUCKETS + 1];
    uint64_t resp_bytes_sum;
} __attribute__((aligned(64))) mt_istio_shard_t;

typedef struct mt_istio_series {
    uint32_t code;
    uint32_t flag; /* 0: none, else 1 + the flag's bit */
    mt_istio_shard_t *shards;
    struct mt_istio_series *next; /* the set's series, in creation order */
} mt_istio_series_t;

typedef struct mt_istio_tcp_shard {
    uint64_t opened, closed, sent, received;
} __attribute__((aligned(64))) mt_istio_tcp_shard_t;

typedef struct mt_istio_set {
    char *key;    /* "listener\0cluster" */
    char *labels; /* every label but response_code and response_flags */
    const mt_istio_codes_t *codes;
    mt_istio_series_t *series[MT_ISTIO_MAX_CODES][1 + MT_RF_COUNT]; /* NULL until first use */
    mt_istio_series_t *first;                                       /* render order */
    mt_istio_tcp_shard_t *tcp;                                      /* connection counters */
    struct mt_istio_set *next;
} mt_istio_set_t;

/* Who this process is (Istio's injector sets these variables; flags override). */
typedef struct mt_stats_identity {
    const char *workload;  /* ISTIO_META_WORKLOAD_NAME, else POD_NAME's deployment part */
    const char *namespace; /* POD_NAMESPACE */
    const char *pod;       /* POD_NAME */
    const char *principal; /* spiffe://... when known, else "unknown" */
} mt_stats_identity_t;
/* Main thread, before the first label set is made; strings are copied. NULL: from env. */
void mt_stats_set_identity(const mt_stats_identity_t *id);
const mt_stats_identity_t *mt_stats_identity(void);

/* The label set of listener (protocol codes) -> cluster (NULL: no destination). Finds or
 * creates; any thread (a lock, formatting): call it once and keep the pointer. */
mt_istio_set_t *mt_istio_set(const char *listener, const mt_istio_codes_t *codes,
                             const char *cluster, const char *service, const char *version);
/* The same for the clients of a listener that has TLS: source_principal is the client's
 * verified identity (principal, "spiffe://..." or NULL: "unknown"), connection_security_policy
 * is policy ("mutual_tls", "tls", "none"). */
mt_istio_set_t *mt_istio_set_peer(const mt_istio_codes_t *codes, const char *cluster,
                                  const char *service, const char *version, const char *principal,
                                  const char *policy);
/* The series of an outcome, created on first use (lock). */
mt_istio_series_t *mt_istio_series_slow(mt_istio_set_t *set, uint32_t code, uint32_t flag);

static inline uint32_t mt_rflag_index(uint32_t flags)
{
    return flags ? 1u + (uint32_t)__builtin_ctz(flags) : 0;
}

/* Index of n's bucket (bounds 1, 10, ... 10^7, then +Inf): a chain of compares, most
 * frames are short. */
static inline unsigned mt_bytes_bucket(uint64_t n)
{
    if (n <= 100)
        return n <= 1 ? 0 : n <= 10 ? 1 : 2;
    if (n <= 100000)
        return n <= 1000 ? 3 : n <= 10000 ? 4 : 5;
    return n <= 1000000 ? 6 : n <= 10000000 ? 7 : 8;
}

extern uint64_t mt_hist_bounds_ns[MT_HIST_BUCKETS];

/* One request's outcome: what the shells record (session.c). */
static inline __attribute__((always_inline)) void
mt_istio_record(mt_istio_set_t *set, unsigned worker, uint32_t code, uint32_t flags,
                uint64_t dur_ns, uint64_t req_bytes, uint64_t resp_bytes)
{
    uint32_t f = mt_rflag_index(flags);
    if (code >= set->codes->n && code != MT_ISTIO_CODE_NONE)
        code = set->codes->n - 1; /* the table's last entry: anything else */
    mt_istio_series_t *se = __atomic_load_n(&set->series[code][f], __ATOMIC_ACQUIRE);
    if (__builtin_expect(se == NULL, 0) && (se = mt_istio_series_slow(set, code, f)) == NULL)
        return;
    mt_istio_shard_t *sh = &se->shards[worker];
    unsigned i = 0;
    while (i < MT_HIST_BUCKETS && dur_ns > mt_hist_bounds_ns[i])
        i++;
    sh->dur[i]++;
    sh->dur_sum_ns += dur_ns;
    sh->req_bytes[mt_bytes_bucket(req_bytes)]++;
    sh->req_bytes_sum += req_bytes;
    sh->resp_bytes[mt_bytes_bucket(resp_bytes)]++;
    sh->resp_bytes_sum += resp_bytes;
}

/* Seconds since the process started (mt_stats_global.start_time, on its clock). */
double mt_stats_uptime(void);

/* Sum of one counter over all workers (admin, tests). */
int64_t mt_stats_sum(const mt_stats_block_t *b, unsigned slot);
/* The first block in creation order (follow ->next); main thread only (admin /clusters). */
mt_stats_block_t *mt_stats_first(void);
/* Renders every block in Prometheus text format into a malloc'd string (caller frees). */
char *mt_stats_render_prometheus(size_t *len);

#endif
