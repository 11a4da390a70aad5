/*
 * stats.c - the stats registry and its Prometheus rendering.
 *
 * Blocks are created by the main thread (find-or-create, keyed by kind + name + extra) and
 * never freed, so a worker may keep a block pointer across reloads. Each block owns one
 * cache-line-aligned shard per worker; a worker writes only its own shard and the main thread
 * sums the shards when it renders. The registry is a linked list in creation order (the order
 * rows are rendered in) plus an open-addressing index so that building a snapshot with many
 * command blocks stays linear.
 */
#include "runtime/core/stats.h"

#include "runtime/core/common.h"
#include "runtime/core/log.h"
#include "runtime/core/trace.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#define XXH_INLINE_ALL /* header-only XXH3 */
#include <xxhash.h>

const double mt_hist_bounds_ms[MT_HIST_BUCKETS] = {
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
};

unsigned mt_stats_nworkers = 0;
mt_stats_global_t mt_stats_global;

/* ---- registry ------------------------------------------------------------------------------ */

static mt_stats_block_t *stats_head;
static mt_stats_block_t *stats_tail;
static size_t stats_count;

/* Open addressing index over the blocks; capacity is a power of two, load kept under 1/2. */
static mt_stats_block_t **stats_index;
static size_t stats_index_cap;

static void stats_hist_bounds_init(void);
struct stats_buf;
static void istio_render_requests(struct stats_buf *sb);
static void istio_render_tcp(struct stats_buf *sb);

static double stats_wall_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static mt_stats_shard_t *stats_shards_alloc(unsigned n)
{
    void *p = NULL;
    size_t size = sizeof(mt_stats_shard_t) * n;
    if (posix_memalign(&p, 64, size) != 0)
        return NULL;
    memset(p, 0, size);
    return p;
}

static void stats_oom(void)
{
    mt_error("stats: out of memory");
    abort();
}

/* Re-sizes the shards of blocks created before mt_stats_init; counts are kept. Only valid
 * while no worker runs, which is what "call once, at startup" means. */
static void stats_reshard(unsigned old_n, unsigned new_n)
{
    for (mt_stats_block_t *b = stats_head; b != NULL; b = b->next) {
        mt_stats_shard_t *s = stats_shards_alloc(new_n);
        if (s == NULL)
            stats_oom();
        memcpy(s, b->shards, sizeof(mt_stats_shard_t) * MT_MIN(old_n, new_n));
        free(b->shards);
        b->shards = s;
    }
}

void mt_stats_init(unsigned nworkers)
{
    if (nworkers == 0)
        nworkers = 1;
    if (nworkers > MT_MAX_WORKERS) {
        mt_warn("stats: %u workers requested, the limit is %d", nworkers, MT_MAX_WORKERS);
        nworkers = MT_MAX_WORKERS;
    }
    if (stats_head != NULL && nworkers != mt_stats_nworkers)
        stats_reshard(mt_stats_nworkers, nworkers);
    stats_hist_bounds_init();
    mt_stats_nworkers = nworkers;
    if (mt_stats_global.start_time == 0)
        mt_stats_global.start_time = stats_wall_clock();
}

static uint64_t stats_hash(mt_stats_kind_t kind, const char *name, const char *extra)
{
    /* XXH3 over name seeded with the kind, then over extra seeded with that. */
    uint64_t h = XXH3_64bits_withSeed(name, strlen(name), (uint64_t)kind);
    return XXH3_64bits_withSeed(extra, strlen(extra), h);
}

static bool stats_kind_has_extra(mt_stats_kind_t kind)
{
    return kind == MT_STATS_DETAIL || kind == MT_STATS_LUA;
}

/* For detail and Lua blocks b->name is "name\0key"; for the others extra is "". */
static const char *stats_block_extra(const mt_stats_block_t *b)
{
    if (!stats_kind_has_extra(b->kind))
        return "";
    return b->name + strlen(b->name) + 1;
}

static bool stats_block_matches(const mt_stats_block_t *b, mt_stats_kind_t kind,
                                const mt_stats_detail_t *d, const char *name, const char *extra)
{
    return b->kind == kind && b->detail == d && strcmp(b->name, name) == 0 &&
           strcmp(stats_block_extra(b), extra) == 0;
}

static void stats_index_put(mt_stats_block_t **index, size_t cap, mt_stats_block_t *b)
{
    size_t i = (size_t)stats_hash(b->kind, b->name, stats_block_extra(b)) & (cap - 1);
    while (index[i] != NULL)
        i = (i + 1) & (cap - 1);
    index[i] = b;
}

static void stats_index_grow(void)
{
    size_t cap = stats_index_cap ? stats_index_cap * 2 : 64;
    mt_stats_block_t **index = calloc(cap, sizeof(*index));
    if (index == NULL)
        stats_oom();
    for (mt_stats_block_t *b = stats_head; b != NULL; b = b->next)
        stats_index_put(index, cap, b);
    free(stats_index);
    stats_index = index;
    stats_index_cap = cap;
}

static mt_stats_block_t *stats_find(mt_stats_kind_t kind, const mt_stats_detail_t *d,
                                    const char *name, const char *extra)
{
    if (stats_index_cap == 0)
        return NULL;
    size_t i = (size_t)stats_hash(kind, name, extra) & (stats_index_cap - 1);
    for (; stats_index[i] != NULL; i = (i + 1) & (stats_index_cap - 1)) {
        if (stats_block_matches(stats_index[i], kind, d, name, extra))
            return stats_index[i];
    }
    return NULL;
}

/* ---- a small growable string (render only) ------------------------------------------------- */

typedef struct stats_buf {
    char *data;
    size_t len;
    size_t cap;
} stats_buf_t;

static void stats_buf_reserve(stats_buf_t *sb, size_t extra)
{
    if (sb->len + extra + 1 <= sb->cap)
        return;
    size_t cap = sb->cap ? sb->cap : 4096;
    while (cap < sb->len + extra + 1)
        cap *= 2;
    char *p = realloc(sb->data, cap);
    if (p == NULL)
        stats_oom();
    sb->data = p;
    sb->cap = cap;
}

static void stats_buf_append(stats_buf_t *sb, const char *s, size_t n)
{
    stats_buf_reserve(sb, n);
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

static void stats_buf_puts(stats_buf_t *sb, const char *s)
{
    stats_buf_append(sb, s, strlen(s));
}

static void stats_buf_printf(stats_buf_t *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void stats_buf_printf(stats_buf_t *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    stats_buf_reserve(sb, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

/* Prometheus label value escaping: backslash, double quote and line feed. */
static void stats_buf_label_value(stats_buf_t *sb, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            stats_buf_puts(sb, "\\\\");
        else if (*v == '"')
            stats_buf_puts(sb, "\\\"");
        else if (*v == '\n')
            stats_buf_puts(sb, "\\n");
        else
            stats_buf_append(sb, v, 1);
    }
}

/* ---- block creation ------------------------------------------------------------------------ */

static char *stats_make_labels(mt_stats_kind_t kind, const mt_stats_detail_t *d, const char *name,
                               const char *extra)
{
    stats_buf_t sb = {0};
    if (kind == MT_STATS_LUA) {
        stats_buf_puts(&sb, "name=\"");
        stats_buf_label_value(&sb, name);
        stats_buf_puts(&sb, "\",label=\"");
        stats_buf_label_value(&sb, extra);
        stats_buf_puts(&sb, "\"");
        return sb.data;
    }
    const char *scope = kind == MT_STATS_CLUSTER ? "cluster" : "listener";
    if (kind == MT_STATS_DETAIL && d->scope)
        scope = d->scope;
    stats_buf_printf(&sb, "%s=\"", scope);
    stats_buf_label_value(&sb, name);
    stats_buf_puts(&sb, "\"");
    if (kind == MT_STATS_DETAIL) {
        stats_buf_printf(&sb, ",%s=\"", d->label);
        stats_buf_label_value(&sb, extra);
        stats_buf_puts(&sb, "\"");
    }
    return sb.data;
}

static char *stats_make_name(const char *name, const char *extra)
{
    size_t n = strlen(name), e = strlen(extra);
    char *p = malloc(n + 1 + e + 1);
    if (p == NULL)
        stats_oom();
    memcpy(p, name, n + 1);
    memcpy(p + n + 1, extra, e + 1);
    return p;
}

/* Creation is rare (config load, a Lua counter's first use) but may come from any thread. */
static pthread_mutex_t stats_create_mu = PTHREAD_MUTEX_INITIALIZER;

static mt_stats_block_t *stats_block_locked(mt_stats_kind_t kind, const mt_stats_detail_t *d,
                                            const char *name, const char *extra);

mt_stats_block_t *mt_stats_block(mt_stats_kind_t kind, const char *name, const char *extra)
{
    assert(kind != MT_STATS_DETAIL); /* mt_stats_detail_block names its family */
    pthread_mutex_lock(&stats_create_mu);
    mt_stats_block_t *b = stats_block_locked(kind, NULL, name, extra);
    pthread_mutex_unlock(&stats_create_mu);
    return b;
}

mt_stats_block_t *mt_stats_detail_block(const mt_stats_detail_t *d, const char *listener,
                                        const char *key)
{
    assert(d != NULL && key != NULL);
    pthread_mutex_lock(&stats_create_mu);
    mt_stats_block_t *b = stats_block_locked(MT_STATS_DETAIL, d, listener, key);
    pthread_mutex_unlock(&stats_create_mu);
    return b;
}

static mt_stats_block_t *stats_block_locked(mt_stats_kind_t kind, const mt_stats_detail_t *d,
                                            const char *name, const char *extra)
{
    assert(name != NULL);
    assert(kind == MT_STATS_LISTENER || kind == MT_STATS_CLUSTER || kind == MT_STATS_DETAIL ||
           kind == MT_STATS_LUA);
    if (mt_stats_nworkers == 0)
        mt_stats_init(1);
    /* Only detail and Lua blocks have a second key part. */
    if (!stats_kind_has_extra(kind) || extra == NULL)
        extra = "";

    mt_stats_block_t *b = stats_find(kind, d, name, extra);
    if (b != NULL)
        return b;

    b = calloc(1, sizeof(*b));
    if (b == NULL)
        stats_oom();
    b->kind = kind;
    b->detail = d;
    b->name = stats_make_name(name, extra);
    b->labels = stats_make_labels(kind, d, name, extra);
    b->shards = stats_shards_alloc(mt_stats_nworkers);
    if (b->shards == NULL)
        stats_oom();

    /* Published with a release store: the renderer walks the list without the lock. */
    if (stats_tail != NULL)
        __atomic_store_n(&stats_tail->next, b, __ATOMIC_RELEASE);
    else
        __atomic_store_n(&stats_head, b, __ATOMIC_RELEASE);
    stats_tail = b;
    stats_count++;
    if (stats_count * 2 > stats_index_cap)
        stats_index_grow(); /* re-inserts every block, this one included */
    else
        stats_index_put(stats_index, stats_index_cap, b);
    return b;
}

mt_stats_block_t *mt_stats_first(void)
{
    return stats_head;
}

/* ---- recording and reading ----------------------------------------------------------------- */

void mt_stat_observe_ms(mt_stats_block_t *b, unsigned worker, double ms)
{
    assert(worker < mt_stats_nworkers);
    if (!(ms >= 0)) /* negative or NaN: a clock went backwards; count it as 0 */
        ms = 0;
    unsigned i = 0;
    while (i < MT_HIST_BUCKETS && ms > mt_hist_bounds_ms[i])
        i++;
    mt_stats_shard_t *s = &b->shards[worker];
    s->hist[i]++;
    s->hist_sum_ms += ms;
}

int64_t mt_stats_sum(const mt_stats_block_t *b, unsigned slot)
{
    assert(slot < MT_ST__COUNT);
    int64_t sum = 0;
    for (unsigned w = 0; w < mt_stats_nworkers; w++)
        sum += b->shards[w].c[slot];
    return sum;
}

/* Per-bucket (not cumulative) counts and the sum, over all workers. */
static void stats_hist_sum(const mt_stats_block_t *b, uint64_t buckets[MT_HIST_BUCKETS + 1],
                           double *sum_ms)
{
    memset(buckets, 0, sizeof(uint64_t) * (MT_HIST_BUCKETS + 1));
    *sum_ms = 0;
    for (unsigned w = 0; w < mt_stats_nworkers; w++) {
        const mt_stats_shard_t *s = &b->shards[w];
        for (unsigned i = 0; i <= MT_HIST_BUCKETS; i++)
            buckets[i] += s->hist[i];
        *sum_ms += s->hist_sum_ms;
    }
}

/* ---- Prometheus text format 0.0.4 ---------------------------------------------------------- */

typedef struct stats_family {
    const char *name;
    const char *type; /* "counter" | "gauge" | "histogram" */
    mt_stats_kind_t kind;
    int slot; /* counter slot; -1 for histograms */
    const char *help;
} stats_family_t;

static const stats_family_t stats_families[] = {
    {"meltemi_downstream_connections_total", "counter", MT_STATS_LISTENER,
     MT_ST_DOWNSTREAM_CX_TOTAL, "Downstream connections accepted by the listener."},
    {"meltemi_downstream_connections_active", "gauge", MT_STATS_LISTENER,
     MT_ST_DOWNSTREAM_CX_ACTIVE, "Downstream connections currently open on the listener."},
    {"meltemi_requests_total", "counter", MT_STATS_LISTENER, MT_ST_REQUESTS_TOTAL,
     "Requests decoded from downstream clients."},
    {"meltemi_request_errors_total", "counter", MT_STATS_LISTENER, MT_ST_REQUEST_ERRORS,
     "Error replies sent to downstream clients (local or from the upstream)."},
    {"meltemi_protocol_errors_total", "counter", MT_STATS_LISTENER, MT_ST_PROTOCOL_ERRORS,
     "Malformed frames received from downstream clients."},
    {"meltemi_auth_failures_total", "counter", MT_STATS_LISTENER, MT_ST_AUTH_FAILURES,
     "Downstream authentication failures."},
    {"meltemi_cross_protocol_closed_total", "counter", MT_STATS_LISTENER, MT_ST_CROSS_PROTOCOL,
     "Connections closed because they sent an HTTP request (POST or Host:) to a Redis listener."},
    {"meltemi_auth_timeouts_total", "counter", MT_STATS_LISTENER, MT_ST_AUTH_TIMEOUTS,
     "Connections closed because they did not authenticate within the auth timeout."},
    {"meltemi_idle_timeouts_total", "counter", MT_STATS_LISTENER, MT_ST_IDLE_TIMEOUTS,
     "Connections closed because they were idle for the idle timeout."},
    {"meltemi_rate_limited_total", "counter", MT_STATS_LISTENER, MT_ST_RATE_LIMITED,
     "Requests refused by a local or global rate limit, answered with the protocol's error "
     "(flag RL)."},
    {"meltemi_streams_total", "counter", MT_STATS_LISTENER, MT_ST_STREAMS_TOTAL,
     "Streams opened by downstream clients (MetaProtocol stream init frames routed)."},
    {"meltemi_stream_frames_total", "counter", MT_STATS_LISTENER, MT_ST_STREAM_FRAMES,
     "Stream frames relayed between clients and upstreams, both directions."},
    {"meltemi_pubsub_slow_subscribers_closed_total", "counter", MT_STATS_LISTENER,
     MT_ST_PUBSUB_SLOW_CLOSED,
     "Pub/sub subscribers closed because too many of their messages were still unsent."},
    {"meltemi_downstream_connections_overflow_total", "counter", MT_STATS_LISTENER,
     MT_ST_DOWNSTREAM_CX_OVERFLOW,
     "Connections closed as soon as accepted: the listener's maxConnections were open."},
    {"meltemi_rbac_denied_total", "counter", MT_STATS_LISTENER, MT_ST_RBAC_DENIED,
     "Requests denied by an AuthorizationPolicy (answered with the protocol's error)."},
    {"meltemi_rbac_audited_total", "counter", MT_STATS_LISTENER, MT_ST_RBAC_AUDITED,
     "Requests an AUDIT AuthorizationPolicy matched (logged, not denied)."},
    {"meltemi_rls_requests_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_REQUESTS,
     "ShouldRateLimit requests sent to the rate limit service (globalRateLimit); calls waiting "
     "for the same descriptor share one."},
    {"meltemi_rls_calls_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_CALLS,
     "Calls covered by the ShouldRateLimit requests sent: the sum of their hits_addend."},
    {"meltemi_rls_ok_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_OK,
     "ShouldRateLimit requests answered OK."},
    {"meltemi_rls_over_limit_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_OVER_LIMIT,
     "ShouldRateLimit requests answered OVER_LIMIT (every call they covered refused)."},
    {"meltemi_rls_errors_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_ERRORS,
     "Rate limit service failures: no connection, a reset, a gRPC error, an unreadable answer."},
    {"meltemi_rls_timeouts_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_TIMEOUTS,
     "Batches of calls the rate limit service did not answer within requestTimeout."},
    {"meltemi_rls_fail_open_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_FAIL_OPEN,
     "Calls let through because the rate limit service failed or timed out (denyOnFail false)."},
    {"meltemi_rls_fail_closed_total", "counter", MT_STATS_LISTENER, MT_ST_RLS_FAIL_CLOSED,
     "Calls refused because the rate limit service failed or timed out (denyOnFail true)."},
    {"meltemi_rls_requests_active", "gauge", MT_STATS_LISTENER, MT_ST_RLS_ACTIVE,
     "ShouldRateLimit requests in flight."},
    {"meltemi_tls_handshake_failures_total", "counter", MT_STATS_LISTENER,
     MT_ST_TLS_HANDSHAKE_FAILURES,
     "Downstream TLS handshakes that failed or whose client certificate was refused."},
    {"meltemi_upstream_connections_total", "counter", MT_STATS_CLUSTER, MT_ST_UPSTREAM_CX_TOTAL,
     "Upstream connections established to the cluster's endpoints."},
    {"meltemi_upstream_connections_active", "gauge", MT_STATS_CLUSTER, MT_ST_UPSTREAM_CX_ACTIVE,
     "Upstream connections currently open to the cluster's endpoints."},
    {"meltemi_upstream_connect_failures_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_CX_CONNECT_FAIL, "Failed connection attempts to the cluster's endpoints."},
    {"meltemi_upstream_requests_total", "counter", MT_STATS_CLUSTER, MT_ST_UPSTREAM_RQ_TOTAL,
     "Requests sent to the cluster."},
    {"meltemi_upstream_request_errors_total", "counter", MT_STATS_CLUSTER, MT_ST_UPSTREAM_RQ_ERRORS,
     "Requests that failed because of the upstream (closed, timed out, auth)."},
    {"meltemi_upstream_request_timeouts_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_RQ_TIMEOUT, "Requests to the cluster that timed out."},
    {"meltemi_upstream_connections_leased", "gauge", MT_STATS_CLUSTER, MT_ST_UPSTREAM_CX_LEASED,
     "Exclusive upstream connections leased to one client (transactions, pub/sub, blocking)."},
    {"meltemi_upstream_connections_idle", "gauge", MT_STATS_CLUSTER, MT_ST_UPSTREAM_CX_IDLE,
     "Exclusive upstream connections idle in the pool, ready for the next lease."},
    {"meltemi_upstream_requests_pending", "gauge", MT_STATS_CLUSTER, MT_ST_UPSTREAM_RQ_PENDING,
     "Requests waiting for an upstream connection: queued on one still connecting (Envoy's "
     "upstream_rq_pending_active)."},
    {"meltemi_outlier_ejections_total", "counter", MT_STATS_CLUSTER, MT_ST_OUTLIER_EJECTIONS,
     "Endpoints of the cluster ejected by outlier detection (outlierDetection)."},
    {"meltemi_upstream_request_retries_total", "counter", MT_STATS_CLUSTER, MT_ST_UPSTREAM_RQ_RETRY,
     "Requests sent to the cluster again by a route's retries."},
    {"meltemi_upstream_tls_handshake_failures_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_TLS_FAILURES,
     "Upstream TLS handshakes that failed or whose server certificate was refused."},
    {"meltemi_upstream_tls_resumed_total", "counter", MT_STATS_CLUSTER, MT_ST_UPSTREAM_TLS_RESUMED,
     "Upstream TLS handshakes that resumed an earlier session (no full handshake)."},
    {"meltemi_upstream_connection_overflow_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_CX_OVERFLOW,
     "Connections or requests refused: the cluster's connectionPool.tcp.maxConnections were open."},
    {"meltemi_upstream_connection_max_duration_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_CX_MAX_DURATION,
     "Upstream connections drained and replaced: older than "
     "connectionPool.tcp.maxConnectionDuration."},
    {"meltemi_upstream_connection_idle_timeouts_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_CX_IDLE_TIMEOUT,
     "Upstream connections closed: idle for connectionPool.tcp.idleTimeout."},
    {"meltemi_upstream_connection_max_requests_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_CX_MAX_REQUESTS,
     "Upstream connections drained and replaced: http.maxRequestsPerConnection requests sent."},
    {"meltemi_upstream_request_pending_overflow_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_RQ_PENDING_OVERFLOW,
     "Requests refused (response flag UO): http.http1MaxPendingRequests were waiting for a "
     "connection."},
    {"meltemi_lua_counter_total", "counter", MT_STATS_LUA, MT_ST_REQUESTS_TOTAL,
     "Counters incremented by Lua filters (ctx:counter)."},
};

/* Go's ParseFloat (what Prometheus uses) reads these; %.17g keeps doubles exact. */
static void stats_buf_double(stats_buf_t *sb, double v)
{
    if (isnan(v))
        stats_buf_puts(sb, "NaN");
    else if (isinf(v))
        stats_buf_puts(sb, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        stats_buf_printf(sb, "%.0f", v);
    else
        stats_buf_printf(sb, "%.17g", v);
}

static void stats_render_header(stats_buf_t *sb, const char *name, const char *type,
                                const char *help)
{
    stats_buf_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void stats_render_histogram(stats_buf_t *sb, const char *name, const mt_stats_block_t *b)
{
    uint64_t buckets[MT_HIST_BUCKETS + 1];
    double sum_ms;
    stats_hist_sum(b, buckets, &sum_ms);
    uint64_t cumulative = 0;
    for (unsigned i = 0; i <= MT_HIST_BUCKETS; i++) {
        cumulative += buckets[i];
        stats_buf_printf(sb, "%s_bucket{%s,le=\"", name, b->labels);
        if (i < MT_HIST_BUCKETS)
            stats_buf_double(sb, mt_hist_bounds_ms[i]);
        else
            stats_buf_puts(sb, "+Inf");
        stats_buf_printf(sb, "\"} %" PRIu64 "\n", cumulative);
    }
    stats_buf_printf(sb, "%s_sum{%s} ", name, b->labels);
    stats_buf_double(sb, sum_ms);
    stats_buf_printf(sb, "\n%s_count{%s} %" PRIu64 "\n", name, b->labels, cumulative);
}

static void stats_render_family(stats_buf_t *sb, const stats_family_t *f)
{
    stats_render_header(sb, f->name, f->type, f->help);
    for (const mt_stats_block_t *b = stats_head; b != NULL; b = b->next) {
        if (b->kind != f->kind)
            continue;
        if (f->slot < 0)
            stats_render_histogram(sb, f->name, b);
        else
            stats_buf_printf(sb, "%s{%s} %" PRId64 "\n", f->name, b->labels,
                             mt_stats_sum(b, (unsigned)f->slot));
    }
}

/*
 * start_time may be on the wall clock (mt_stats_init's default) or on a monotonic clock
 * (uv_now() / 1000.0, what the server writes); a monotonic clock counts from boot, which is
 * never 10^9 s (31 years) ago, so the magnitude says which clock to compare against.
 */
static double stats_uptime(double start_time)
{
    if (start_time <= 0)
        return 0;
    double now;
    if (start_time > 1e9) {
        now = stats_wall_clock();
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    return now > start_time ? now - start_time : 0;
}

/* ---- process metrics (the names Prometheus' client libraries use) ---------------------------- */

/* CPU time (the process CPU clock, else utime + stime in clock ticks), vsize (bytes) and rss
 * (pages) from /proc/self/stat. */
static bool stats_proc_stat(double *cpu_s, double *vsize, double *rss_bytes)
{
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return false;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long utime, stime, vs;
    long rss;
    if (!p || sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
                     "%*d %*u %lu %ld",
                     &utime, &stime, &vs, &rss) != 4)
        return false;
    /* The tick counts are 10 ms steps: a process that started a moment ago reads 0. The
     * process CPU clock counts every thread's time to the nanosecond. */
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0) {
        *cpu_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    } else {
        double hz = (double)sysconf(_SC_CLK_TCK);
        *cpu_s = (double)(utime + stime) / (hz > 0 ? hz : 100);
    }
    *vsize = (double)vs;
    *rss_bytes = (double)rss * (double)sysconf(_SC_PAGESIZE);
    return true;
}

static long stats_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    long n = 0;
    for (struct dirent *e = readdir(d); e; e = readdir(d))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void stats_render_process(stats_buf_t *sb, double start_wall)
{
    double cpu, vsize, rss;
    if (stats_proc_stat(&cpu, &vsize, &rss)) {
        stats_render_header(sb, "process_cpu_seconds_total", "counter",
                            "User and system CPU time spent in seconds.");
        stats_buf_puts(sb, "process_cpu_seconds_total ");
        stats_buf_double(sb, cpu);
        stats_buf_puts(sb, "\n");
        stats_render_header(sb, "process_resident_memory_bytes", "gauge",
                            "Resident memory size in bytes.");
        stats_buf_puts(sb, "process_resident_memory_bytes ");
        stats_buf_double(sb, rss);
        stats_buf_puts(sb, "\n");
        stats_render_header(sb, "process_virtual_memory_bytes", "gauge",
                            "Virtual memory size in bytes.");
        stats_buf_puts(sb, "process_virtual_memory_bytes ");
        stats_buf_double(sb, vsize);
        stats_buf_puts(sb, "\n");
    }
    long fds = stats_open_fds();
    if (fds >= 0) {
        stats_render_header(sb, "process_open_fds", "gauge", "Number of open file descriptors.");
        stats_buf_printf(sb, "process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        stats_render_header(sb, "process_max_fds", "gauge",
                            "Maximum number of open file descriptors.");
        stats_buf_printf(sb, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
    stats_render_header(sb, "process_start_time_seconds", "gauge",
                        "Start time of the process since the Unix epoch in seconds.");
    stats_buf_printf(sb, "process_start_time_seconds %.3f\n", start_wall);
}

double mt_stats_uptime(void)
{
    return stats_uptime(mt_stats_global.start_time);
}

static void stats_render_global(stats_buf_t *sb)
{
    const mt_stats_global_t *g = &mt_stats_global;
    double uptime = stats_uptime(g->start_time);

    stats_render_header(sb, "meltemi_config_generation", "gauge",
                        "Generation of the configuration snapshot being served.");
    stats_buf_printf(sb, "meltemi_config_generation %" PRIu64 "\n", g->config_generation);
    stats_render_header(sb, "meltemi_config_reloads_total", "counter",
                        "Configuration reloads that were applied.");
    stats_buf_printf(sb, "meltemi_config_reloads_total %" PRIu64 "\n", g->config_reloads);
    stats_render_header(
        sb, "meltemi_config_reload_failures_total", "counter",
        "Configuration reloads rejected as invalid; the old snapshot kept serving.");
    stats_buf_printf(sb, "meltemi_config_reload_failures_total %" PRIu64 "\n",
                     g->config_reload_failures);
    stats_render_header(sb, "meltemi_start_time_seconds", "gauge",
                        "Start time of the process since the Unix epoch in seconds.");
    stats_buf_puts(sb, "meltemi_start_time_seconds ");
    stats_buf_printf(sb, "%.3f\n", stats_wall_clock() - uptime);
    stats_render_header(sb, "meltemi_uptime_seconds", "gauge",
                        "Seconds since the process started.");
    stats_buf_puts(sb, "meltemi_uptime_seconds ");
    stats_buf_printf(sb, "%.3f\n", uptime);
    stats_render_process(sb, stats_wall_clock() - uptime);
    stats_render_header(sb, "meltemi_trace_spans_exported_total", "counter",
                        "Spans the collector accepted (Tracing).");
    stats_buf_printf(sb, "meltemi_trace_spans_exported_total %" PRIu64 "\n",
                     mt_trace_spans_exported());
    stats_render_header(sb, "meltemi_trace_spans_dropped_total", "counter",
                        "Spans dropped: the exporter's queue was full or the collector failed.");
    stats_buf_printf(sb, "meltemi_trace_spans_dropped_total %" PRIu64 "\n",
                     mt_trace_spans_dropped());
    stats_render_header(sb, "meltemi_workers", "gauge", "Number of worker threads.");
    stats_buf_printf(sb, "meltemi_workers %u\n", mt_stats_nworkers);
    stats_render_header(sb, "meltemi_build_info", "gauge",
                        "Always 1; the version label says which build is running.");
    stats_buf_puts(sb, "meltemi_build_info{version=\"");
    stats_buf_label_value(sb, MELTEMI_VERSION);
    stats_buf_puts(sb, "\"} 1\n");
}

/* The detail blocks of d: three families, every block of d in each (Prometheus wants the
 * samples of one family together). */
static void stats_render_detail(stats_buf_t *sb, const mt_stats_detail_t *d)
{
    char name[128];
    static const char *const suffix[3] = {"_total", "_errors_total", "_duration_milliseconds"};
    const char *const help[3] = {d->help_total, d->help_errors, d->help_duration};
    for (int k = 0; k < (d->total_only ? 1 : d->no_duration ? 2 : 3); k++) {
        snprintf(name, sizeof(name), "%s%s", d->prefix, suffix[k]);
        stats_render_header(sb, name, k == 2 ? "histogram" : "counter", help[k]);
        for (const mt_stats_block_t *b = stats_head; b != NULL; b = b->next) {
            if (b->kind != MT_STATS_DETAIL || b->detail != d)
                continue;
            if (k == 2)
                stats_render_histogram(sb, name, b);
            else
                stats_buf_printf(
                    sb, "%s{%s} %" PRId64 "\n", name, b->labels,
                    mt_stats_sum(b, k == 0 ? MT_ST_REQUESTS_TOTAL : MT_ST_REQUEST_ERRORS));
        }
    }
}

/* Every family of detail blocks, in the order their first block was created. */
static void stats_render_details(stats_buf_t *sb)
{
    const mt_stats_detail_t *done[64]; /* families: 17 today (Kafka and ZooKeeper have 15) */
    size_t n = 0;
    for (const mt_stats_block_t *b = stats_head; b != NULL; b = b->next) {
        if (b->kind != MT_STATS_DETAIL)
            continue;
        size_t i = 0;
        while (i < n && done[i] != b->detail)
            i++;
        if (i < n)
            continue;
        stats_render_detail(sb, b->detail);
        if (n < MT_ARRAY_LEN(done))
            done[n++] = b->detail;
    }
}

char *mt_stats_render_prometheus(size_t *len)
{
    stats_buf_t sb = {0};
    stats_buf_reserve(&sb, 4096);
    for (size_t i = 0; i < MT_ARRAY_LEN(stats_families); i++)
        stats_render_family(&sb, &stats_families[i]);
    stats_render_details(&sb);
    istio_render_requests(&sb);
    istio_render_tcp(&sb);
    stats_render_global(&sb);
    if (len != NULL)
        *len = sb.len;
    return sb.data;
}

/* ---- Istio's standard metrics ---------------------------------------------------------------- */

const char *const mt_rflag_names[MT_RF_COUNT] = {"UH", "UF", "URX",  "NR", "UT",   "DI",
                                                 "FI", "RL", "UAEX", "DC", "RBAC", "UO"};
uint64_t mt_hist_bounds_ns[MT_HIST_BUCKETS];

static mt_istio_set_t *istio_head, *istio_tail;
static mt_stats_identity_t stats_identity;
static bool stats_identity_set;

static void stats_hist_bounds_init(void)
{
    for (unsigned i = 0; i < MT_HIST_BUCKETS; i++)
        mt_hist_bounds_ns[i] = (uint64_t)(mt_hist_bounds_ms[i] * 1e6);
}

static char *stats_strdup_or(const char *s, const char *dflt)
{
    char *p = strdup(s && *s ? s : dflt);
    if (p == NULL)
        stats_oom();
    return p;
}

/* POD_NAME of a Deployment's pod is <deployment>-<replicaset hash>-<pod hash>: Istio's
 * fallback for the workload name drops the last two parts. */
static char *stats_workload_from_pod(const char *pod)
{
    if (pod == NULL || *pod == '\0')
        return NULL;
    char *w = stats_strdup_or(pod, "unknown");
    for (int cut = 0; cut < 2; cut++) {
        char *dash = strrchr(w, '-');
        if (dash == NULL || dash == w)
            break;
        *dash = '\0';
    }
    return w;
}

void mt_stats_set_identity(const mt_stats_identity_t *id)
{
    const char *pod = id && id->pod ? id->pod : getenv("POD_NAME");
    const char *ns = id && id->namespace ? id->namespace : getenv("POD_NAMESPACE");
    const char *wl = id && id->workload ? id->workload : getenv("ISTIO_META_WORKLOAD_NAME");
    const char *pr = id && id->principal ? id->principal : NULL;
    char *derived = (wl && *wl) ? NULL : stats_workload_from_pod(pod);
    stats_identity.pod = stats_strdup_or(pod, "unknown");
    stats_identity.namespace = stats_strdup_or(ns, "unknown");
    stats_identity.workload = stats_strdup_or(derived ? derived : wl, "unknown");
    stats_identity.principal = stats_strdup_or(pr, "unknown");
    free(derived);
    stats_identity_set = true;
}

const mt_stats_identity_t *mt_stats_identity(void)
{
    if (!stats_identity_set)
        mt_stats_set_identity(NULL);
    return &stats_identity;
}

static void stats_label(stats_buf_t *sb, const char *name, const char *v, size_t n)
{
    stats_buf_printf(sb, "%s%s=\"", sb->len ? "," : "", name);
    char tmp[256];
    n = MT_MIN(n, sizeof(tmp) - 1);
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    stats_buf_label_value(sb, tmp);
    stats_buf_puts(sb, "\"");
}

static void stats_label_str(stats_buf_t *sb, const char *name, const char *v)
{
    stats_label(sb, name, v, strlen(v));
}

/* Envoy's cluster name outbound|PORT|SUBSET|HOST: the subset, or "unknown". */
static void stats_label_version(stats_buf_t *sb, const char *cluster)
{
    const char *p = cluster ? strchr(cluster, '|') : NULL;
    p = p ? strchr(p + 1, '|') : NULL;
    const char *e = p ? strchr(p + 1, '|') : NULL;
    if (e && e > p + 1)
        stats_label(sb, "destination_version", p + 1, (size_t)(e - p - 1));
    else
        stats_label_str(sb, "destination_version", "unknown");
}

/* name.namespace.svc.cluster.local: its first two DNS labels; other hosts have no namespace. */
static void stats_label_service(stats_buf_t *sb, const char *service)
{
    const char *host = service && *service ? service : "unknown";
    stats_label_str(sb, "destination_service", host);
    const char *dot = strchr(host, '.');
    stats_label(sb, "destination_service_name", host, dot ? (size_t)(dot - host) : strlen(host));
    const char *ns = dot ? dot + 1 : NULL;
    const char *dot2 = ns ? strchr(ns, '.') : NULL;
    if (dot2 && strncmp(dot2, ".svc", 4) == 0 && (dot2[4] == '\0' || dot2[4] == '.'))
        stats_label(sb, "destination_service_namespace", ns, (size_t)(dot2 - ns));
    else
        stats_label_str(sb, "destination_service_namespace", "unknown");
}

/* Istio's labels of a request from this workload (reporter "source": meltemi is the client's
 * sidecar, its clusters are outbound ones). */
static char *stats_istio_labels(const mt_istio_codes_t *codes, const char *cluster,
                                const char *service, const char *version, const char *principal,
                                const char *policy)
{
    const mt_stats_identity_t *id = mt_stats_identity();
    stats_buf_t sb = {0};
    stats_buf_reserve(&sb, 512);
    stats_label_str(&sb, "reporter", "source");
    stats_label_str(&sb, "source_workload", id->workload);
    stats_label_str(&sb, "source_workload_namespace", id->namespace);
    stats_label_str(&sb, "source_principal", principal ? principal : id->principal);
    stats_label_str(&sb, "destination_workload", "unknown");
    stats_label_service(&sb, cluster ? service : NULL);
    if (version)
        stats_label_str(&sb, "destination_version", version);
    else
        stats_label_version(&sb, cluster);
    stats_label_str(&sb, "request_protocol", codes ? codes->protocol : "tcp");
    stats_label_str(&sb, "connection_security_policy", policy ? policy : "unknown");
    return sb.data;
}

static mt_istio_set_t *istio_set_of(char *labels, const mt_istio_codes_t *codes);

mt_istio_set_t *mt_istio_set(const char *listener, const mt_istio_codes_t *codes,
                             const char *cluster, const char *service, const char *version)
{
    MT_UNUSED(listener); /* sets are keyed by their labels: listeners to one cluster share */
    return istio_set_of(stats_istio_labels(codes, cluster, service, version, NULL, NULL), codes);
}

mt_istio_set_t *mt_istio_set_peer(const mt_istio_codes_t *codes, const char *cluster,
                                  const char *service, const char *version, const char *principal,
                                  const char *policy)
{
    return istio_set_of(stats_istio_labels(codes, cluster, service, version,
                                           principal ? principal : "unknown", policy),
                        codes);
}

/* Finds or makes the set of labels (taken over). */
static mt_istio_set_t *istio_set_of(char *labels, const mt_istio_codes_t *codes)
{
    pthread_mutex_lock(&stats_create_mu);
    if (mt_stats_nworkers == 0)
        mt_stats_init(1);
    mt_istio_set_t *set = istio_head;
    while (set && strcmp(set->labels, labels) != 0)
        set = set->next;
    if (set) {
        pthread_mutex_unlock(&stats_create_mu);
        free(labels);
        return set;
    }
    set = calloc(1, sizeof(*set));
    if (set == NULL)
        stats_oom();
    set->labels = labels;
    set->codes = codes;
    size_t size = sizeof(mt_istio_tcp_shard_t) * mt_stats_nworkers;
    if (posix_memalign((void **)&set->tcp, 64, size) != 0)
        stats_oom();
    memset(set->tcp, 0, size);
    if (istio_tail)
        __atomic_store_n(&istio_tail->next, set, __ATOMIC_RELEASE);
    else
        __atomic_store_n(&istio_head, set, __ATOMIC_RELEASE);
    istio_tail = set;
    pthread_mutex_unlock(&stats_create_mu);
    return set;
}

mt_istio_series_t *mt_istio_series_slow(mt_istio_set_t *set, uint32_t code, uint32_t flag)
{
    if (set->codes == NULL || code >= MT_ISTIO_MAX_CODES || flag > MT_RF_COUNT)
        return NULL;
    pthread_mutex_lock(&stats_create_mu);
    mt_istio_series_t *se = set->series[code][flag];
    if (se == NULL) {
        se = calloc(1, sizeof(*se));
        size_t size = sizeof(mt_istio_shard_t) * mt_stats_nworkers;
        if (se == NULL || posix_memalign((void **)&se->shards, 64, size) != 0)
            stats_oom();
        memset(se->shards, 0, size);
        se->code = code;
        se->flag = flag;
        /* appended to the render list first, then published for the request path */
        mt_istio_series_t **pp = &set->first;
        while (*pp)
            pp = &(*pp)->next;
        __atomic_store_n(pp, se, __ATOMIC_RELEASE);
        __atomic_store_n(&set->series[code][flag], se, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&stats_create_mu);
    return se;
}

/* ---- Istio rendering ------------------------------------------------------------------------ */

typedef struct istio_sum {
    uint64_t dur[MT_HIST_BUCKETS + 1], req[MT_BYTES_BUCKETS + 1], resp[MT_BYTES_BUCKETS + 1];
    uint64_t dur_sum_ns, req_sum, resp_sum, count;
} istio_sum_t;

static void istio_series_sum(const mt_istio_series_t *se, istio_sum_t *t)
{
    memset(t, 0, sizeof(*t));
    for (unsigned w = 0; w < mt_stats_nworkers; w++) {
        const mt_istio_shard_t *sh = &se->shards[w];
        for (unsigned i = 0; i <= MT_HIST_BUCKETS; i++) {
            t->dur[i] += sh->dur[i];
            t->count += sh->dur[i];
        }
        for (unsigned i = 0; i <= MT_BYTES_BUCKETS; i++) {
            t->req[i] += sh->req_bytes[i];
            t->resp[i] += sh->resp_bytes[i];
        }
        t->dur_sum_ns += sh->dur_sum_ns;
        t->req_sum += sh->req_bytes_sum;
        t->resp_sum += sh->resp_bytes_sum;
    }
}

/* The series' labels: the set's, then its outcome. */
static void istio_series_labels(stats_buf_t *sb, const mt_istio_set_t *set,
                                const mt_istio_series_t *se)
{
    stats_buf_puts(sb, set->labels);
    stats_buf_puts(sb, ",response_code=\"");
    stats_buf_label_value(sb, mt_istio_code_name(set->codes, se->code));
    stats_buf_printf(sb, "\",response_flags=\"%s\"", se->flag ? mt_rflag_names[se->flag - 1] : "-");
}

static void istio_render_buckets(stats_buf_t *sb, const char *name, const char *labels,
                                 const uint64_t *b, unsigned n, bool bytes)
{
    uint64_t cumulative = 0;
    double bound = 1;
    for (unsigned i = 0; i <= n; i++) {
        cumulative += b[i];
        stats_buf_printf(sb, "%s_bucket{%s,le=\"", name, labels);
        if (i == n)
            stats_buf_puts(sb, "+Inf");
        else if (bytes)
            stats_buf_double(sb, bound);
        else
            stats_buf_double(sb, mt_hist_bounds_ms[i]);
        stats_buf_printf(sb, "\"} %" PRIu64 "\n", cumulative);
        bound *= 10;
    }
}

enum { ISTIO_REQUESTS, ISTIO_DURATION, ISTIO_REQ_BYTES, ISTIO_RESP_BYTES };

static void istio_render_series(stats_buf_t *sb, int which, const char *name,
                                const mt_istio_set_t *set, const mt_istio_series_t *se)
{
    istio_sum_t t;
    istio_series_sum(se, &t);
    stats_buf_t lb = {0};
    istio_series_labels(&lb, set, se);
    if (which == ISTIO_REQUESTS) {
        stats_buf_printf(sb, "%s{%s} %" PRIu64 "\n", name, lb.data, t.count);
    } else {
        const uint64_t *b = which == ISTIO_DURATION    ? t.dur
                            : which == ISTIO_REQ_BYTES ? t.req
                                                       : t.resp;
        istio_render_buckets(sb, name, lb.data, b,
                             which == ISTIO_DURATION ? MT_HIST_BUCKETS : MT_BYTES_BUCKETS,
                             which != ISTIO_DURATION);
        stats_buf_printf(sb, "%s_sum{%s} ", name, lb.data);
        if (which == ISTIO_DURATION)
            stats_buf_double(sb, (double)t.dur_sum_ns / 1e6);
        else
            stats_buf_printf(sb, "%" PRIu64, which == ISTIO_REQ_BYTES ? t.req_sum : t.resp_sum);
        stats_buf_printf(sb, "\n%s_count{%s} %" PRIu64 "\n", name, lb.data, t.count);
    }
    free(lb.data);
}

static void istio_render_requests(stats_buf_t *sb)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"istio_requests_total", "counter", "Requests answered, every reply counted (Istio)."},
        {"istio_request_duration_milliseconds", "histogram",
         "Request duration in milliseconds, local replies included (Istio)."},
        {"istio_request_bytes", "histogram", "Request sizes in bytes (Istio)."},
        {"istio_response_bytes", "histogram", "Response sizes in bytes (Istio)."},
    };
    for (int k = 0; k < (int)MT_ARRAY_LEN(fam); k++) {
        stats_render_header(sb, fam[k].name, fam[k].type, fam[k].help);
        for (const mt_istio_set_t *set = __atomic_load_n(&istio_head, __ATOMIC_ACQUIRE); set;
             set = __atomic_load_n(&set->next, __ATOMIC_ACQUIRE)) {
            for (const mt_istio_series_t *se = __atomic_load_n(&set->first, __ATOMIC_ACQUIRE); se;
                 se = __atomic_load_n(&se->next, __ATOMIC_ACQUIRE))
                istio_render_series(sb, k, fam[k].name, set, se);
        }
    }
}

static void istio_render_tcp(stats_buf_t *sb)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } fam[] = {
        {"istio_tcp_connections_opened_total", "Downstream connections opened (Istio).",
         offsetof(mt_istio_tcp_shard_t, opened)},
        {"istio_tcp_connections_closed_total", "Downstream connections closed (Istio).",
         offsetof(mt_istio_tcp_shard_t, closed)},
        {"istio_tcp_received_bytes_total", "Bytes received from downstream clients (Istio).",
         offsetof(mt_istio_tcp_shard_t, received)},
        {"istio_tcp_sent_bytes_total", "Bytes sent to downstream clients (Istio).",
         offsetof(mt_istio_tcp_shard_t, sent)},
    };
    for (size_t k = 0; k < MT_ARRAY_LEN(fam); k++) {
        stats_render_header(sb, fam[k].name, "counter", fam[k].help);
        for (const mt_istio_set_t *set = __atomic_load_n(&istio_head, __ATOMIC_ACQUIRE); set;
             set = __atomic_load_n(&set->next, __ATOMIC_ACQUIRE)) {
            uint64_t v = 0;
            for (unsigned w = 0; w < mt_stats_nworkers; w++)
                v += *(const uint64_t *)((const char *)&set->tcp[w] + fam[k].off);
            stats_buf_printf(sb, "%s{%s} %" PRIu64 "\n", fam[k].name, set->labels, v);
        }
    }
}
