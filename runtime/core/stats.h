/*
 * stats.h - counters without locks. Every listener, cluster and (optionally) Redis command
 * has a stats block created by the main thread and never freed, so workers can keep pointers
 * across reloads. Each worker writes only its own cache-line-aligned shard; the admin server
 * sums the shards when it renders /stats/prometheus (a torn read of an aligned 64-bit word
 * cannot happen on the platforms we build for).
 */
#ifndef MELTEMI_STATS_H
#define MELTEMI_STATS_H

#include <stddef.h>
#include <stdint.h>

#define MT_MAX_WORKERS 64

typedef enum mt_stats_kind {
    MT_STATS_LISTENER = 0,
    MT_STATS_CLUSTER = 1,
    MT_STATS_COMMAND = 2, /* per listener and Redis command: enableCommandStats */
    MT_STATS_LUA = 3,     /* counters of Lua filters: name + label; created by workers too */
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
    MT_ST_TLS_HANDSHAKE_FAILURES, /* downstream TLS handshakes refused or failed */
    MT_ST_RBAC_DENIED,            /* requests an AuthorizationPolicy denied */
    MT_ST_DOWNSTREAM_CX_OVERFLOW, /* connections closed at accept: max_connections reached */
    MT_ST_RBAC_AUDITED,           /* requests an AUDIT AuthorizationPolicy matched */
    /* cluster */
    MT_ST_UPSTREAM_CX_TOTAL,
    MT_ST_UPSTREAM_CX_ACTIVE, /* gauge */
    MT_ST_UPSTREAM_CX_CONNECT_FAIL,
    MT_ST_UPSTREAM_RQ_TOTAL,
    MT_ST_UPSTREAM_RQ_ERRORS, /* failed because of the upstream: closed, timeout, auth */
    MT_ST_UPSTREAM_RQ_TIMEOUT,
    MT_ST_UPSTREAM_TLS_FAILURES, /* upstream TLS handshakes refused or failed */
    MT_ST_UPSTREAM_TLS_RESUMED,  /* upstream TLS handshakes that resumed a session */
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

typedef struct mt_stats_block {
    mt_stats_kind_t kind;
    char *name;   /* listener or cluster name; for commands "listener\0command" */
    char *labels; /* Prometheus label set without braces, e.g. listener="127.0.0.1:6379" */
    struct mt_stats_block *next;
    mt_stats_shard_t *shards; /* mt_stats_nworkers of them */
} mt_stats_block_t;

extern unsigned mt_stats_nworkers;

/* Main thread only, before or between snapshots. Finds or creates the block. */
void mt_stats_init(unsigned nworkers);
mt_stats_block_t *mt_stats_block(mt_stats_kind_t kind, const char *name, const char *extra);

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

/* Sum of one counter over all workers (admin, tests). */
int64_t mt_stats_sum(const mt_stats_block_t *b, unsigned slot);
/* The first block in creation order (follow ->next); main thread only (admin /clusters). */
mt_stats_block_t *mt_stats_first(void);
/* Renders every block in Prometheus text format into a malloc'd string (caller frees). */
char *mt_stats_render_prometheus(size_t *len);

#endif
