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

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/* For command blocks b->name is "listener\0command"; for the others extra is "". */
static const char *stats_block_extra(const mt_stats_block_t *b)
{
    if (b->kind != MT_STATS_COMMAND && b->kind != MT_STATS_LUA)
        return "";
    return b->name + strlen(b->name) + 1;
}

static bool stats_block_matches(const mt_stats_block_t *b, mt_stats_kind_t kind, const char *name,
                                const char *extra)
{
    return b->kind == kind && strcmp(b->name, name) == 0 &&
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

static mt_stats_block_t *stats_find(mt_stats_kind_t kind, const char *name, const char *extra)
{
    if (stats_index_cap == 0)
        return NULL;
    size_t i = (size_t)stats_hash(kind, name, extra) & (stats_index_cap - 1);
    for (; stats_index[i] != NULL; i = (i + 1) & (stats_index_cap - 1)) {
        if (stats_block_matches(stats_index[i], kind, name, extra))
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

static char *stats_make_labels(mt_stats_kind_t kind, const char *name, const char *extra)
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
    stats_buf_puts(&sb, kind == MT_STATS_CLUSTER ? "cluster=\"" : "listener=\"");
    stats_buf_label_value(&sb, name);
    stats_buf_puts(&sb, "\"");
    if (kind == MT_STATS_COMMAND) {
        stats_buf_puts(&sb, ",command=\"");
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

static mt_stats_block_t *stats_block_locked(mt_stats_kind_t kind, const char *name,
                                            const char *extra);

mt_stats_block_t *mt_stats_block(mt_stats_kind_t kind, const char *name, const char *extra)
{
    pthread_mutex_lock(&stats_create_mu);
    mt_stats_block_t *b = stats_block_locked(kind, name, extra);
    pthread_mutex_unlock(&stats_create_mu);
    return b;
}

static mt_stats_block_t *stats_block_locked(mt_stats_kind_t kind, const char *name,
                                            const char *extra)
{
    assert(name != NULL);
    assert(kind == MT_STATS_LISTENER || kind == MT_STATS_CLUSTER || kind == MT_STATS_COMMAND ||
           kind == MT_STATS_LUA);
    if (mt_stats_nworkers == 0)
        mt_stats_init(1);
    /* Only command and Lua blocks have a second key part. */
    if ((kind != MT_STATS_COMMAND && kind != MT_STATS_LUA) || extra == NULL)
        extra = "";

    mt_stats_block_t *b = stats_find(kind, name, extra);
    if (b != NULL)
        return b;

    b = calloc(1, sizeof(*b));
    if (b == NULL)
        stats_oom();
    b->kind = kind;
    b->name = stats_make_name(name, extra);
    b->labels = stats_make_labels(kind, name, extra);
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
    {"meltemi_downstream_connections_overflow_total", "counter", MT_STATS_LISTENER,
     MT_ST_DOWNSTREAM_CX_OVERFLOW,
     "Connections closed as soon as accepted: the listener's maxConnections were open."},
    {"meltemi_rbac_denied_total", "counter", MT_STATS_LISTENER, MT_ST_RBAC_DENIED,
     "Requests denied by an AuthorizationPolicy (answered with the protocol's error)."},
    {"meltemi_rbac_audited_total", "counter", MT_STATS_LISTENER, MT_ST_RBAC_AUDITED,
     "Requests an AUDIT AuthorizationPolicy matched (logged, not denied)."},
    {"meltemi_tls_handshake_failures_total", "counter", MT_STATS_LISTENER,
     MT_ST_TLS_HANDSHAKE_FAILURES,
     "Downstream TLS handshakes that failed or whose client certificate was refused."},
    {"istio_requests_total", "counter", MT_STATS_LISTENER, MT_ST_REQUESTS_TOTAL,
     "Requests handled by the listener (Istio-compatible name)."},
    {"istio_request_duration_milliseconds", "histogram", MT_STATS_LISTENER, -1,
     "Request duration in milliseconds, downstream request to response (Istio-compatible)."},
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
    {"meltemi_upstream_tls_handshake_failures_total", "counter", MT_STATS_CLUSTER,
     MT_ST_UPSTREAM_TLS_FAILURES,
     "Upstream TLS handshakes that failed or whose server certificate was refused."},
    {"meltemi_upstream_tls_resumed_total", "counter", MT_STATS_CLUSTER, MT_ST_UPSTREAM_TLS_RESUMED,
     "Upstream TLS handshakes that resumed an earlier session (no full handshake)."},
    {"meltemi_lua_counter_total", "counter", MT_STATS_LUA, MT_ST_REQUESTS_TOTAL,
     "Counters incremented by Lua filters (ctx:counter)."},
    {"meltemi_redis_command_total", "counter", MT_STATS_COMMAND, MT_ST_REQUESTS_TOTAL,
     "Redis commands handled, per listener and command (enableCommandStats)."},
    {"meltemi_redis_command_errors_total", "counter", MT_STATS_COMMAND, MT_ST_REQUEST_ERRORS,
     "Redis commands answered with an error, per listener and command."},
    {"meltemi_redis_command_duration_milliseconds", "histogram", MT_STATS_COMMAND, -1,
     "Redis command duration in milliseconds, per listener and command."},
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
    stats_render_header(sb, "meltemi_workers", "gauge", "Number of worker threads.");
    stats_buf_printf(sb, "meltemi_workers %u\n", mt_stats_nworkers);
    stats_render_header(sb, "meltemi_build_info", "gauge",
                        "Always 1; the version label says which build is running.");
    stats_buf_puts(sb, "meltemi_build_info{version=\"");
    stats_buf_label_value(sb, MELTEMI_VERSION);
    stats_buf_puts(sb, "\"} 1\n");
}

char *mt_stats_render_prometheus(size_t *len)
{
    stats_buf_t sb = {0};
    stats_buf_reserve(&sb, 4096);
    for (size_t i = 0; i < MT_ARRAY_LEN(stats_families); i++)
        stats_render_family(&sb, &stats_families[i]);
    stats_render_global(&sb);
    if (len != NULL)
        *len = sb.len;
    return sb.data;
}
