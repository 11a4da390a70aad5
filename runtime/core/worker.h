/*
 * worker.h - a worker thread: its own uv loop, buffer pool, upstream pools, stats shard and
 * Lua state. Nothing here is shared with other threads except through the mailbox, which the
 * main thread fills and signals with uv_async (new snapshot, drain, stop).
 */
#ifndef MELTEMI_WORKER_H
#define MELTEMI_WORKER_H

#define MT_WORKER_TICK_MS 20

#include "runtime/core/access_log.h"
#include "runtime/core/buf.h"
#include "runtime/core/trace.h"
#include "runtime/core/outq.h"
#include "runtime/core/snapshot.h"
#include "runtime/core/timer.h"

#include <lua.h>
#include <pthread.h>
#include <uv.h>

typedef struct mt_worker mt_worker_t;
typedef struct mt_upstream mt_upstream_t; /* an upstream connection (upstream.h) */

/* A listener as one worker runs it. */
typedef struct mt_wlistener {
    uv_tcp_t tcp;
    mt_worker_t *w;
    mt_listener_conf_t *conf;    /* from the worker's current snapshot */
    struct mt_wcluster *cluster; /* default destination, resolved in this worker */
    struct mt_wlistener *next;
    bool closing;
} mt_wlistener_t;

/* One protocol's connections to one endpoint (upstream.c keeps it; keyed by protocol so that
 * connections of different proxies never mix). */
typedef struct mt_upstream_pool {
    mt_upstream_t **shared; /* pipelined / multiplexed connections by slot, lazily created */
    uint32_t n_shared;
    uint32_t n_exclusive; /* exclusive connections open: leased plus idle */
    mt_upstream_t *idle;  /* exclusive connections returned clean, most recent first */
} mt_upstream_pool_t;

/* An endpoint of a cluster as one worker sees it: its pooled connections and backoff. */
typedef struct mt_wendpoint {
    char address[64]; /* as configured or as the cluster topology named it */
    uint16_t port;
    struct sockaddr_storage sa;
    char resolve_error[160]; /* non-empty: unusable, and why */
    struct mt_wcluster *cluster;
    /* by protocol, then protocol variants (upstream.h: mt_upstream_pool_of) */
    mt_upstream_pool_t pools[MT_UPSTREAM_POOLS];
    uint64_t retry_at_ms; /* no new connection attempt before this (backoff) */
    uint32_t backoff_ms;
    char last_error[400];
    char lease_error[320]; /* why the last exclusive lease was refused (upstream.c) */
    void *tls_session;     /* SSL_SESSION * of the last TLS connection: resumption (tls.c) */
    uint32_t conf_index;   /* in cluster->conf->endpoints (outlier state); UINT32_MAX: found
                              at run time (Redis Cluster topology), no outlier detection */
} mt_wendpoint_t;

typedef struct mt_wcluster {
    mt_cluster_conf_t *conf;
    mt_snapshot_t *snap; /* keeps conf alive: the snapshot conf belongs to */
    mt_worker_t *w;
    uint32_t refs;        /* listeners and sessions using it, +1 while in w->clusters */
    uint32_t n_rups;      /* open upstream connections of its endpoints (upstream.c) */
    uint32_t n_pending;   /* requests queued on connections still connecting (upstream.c) */
    bool retired;         /* no longer in the live snapshot: freed once unused and idle */
    void *proxy_state;    /* the cluster's proxy's own part (Redis Cluster: its slot map),
                             released by mt_proxy_ops_t.cluster_free */
    mt_wendpoint_t **eps; /* the configured endpoints */
    uint32_t n_eps;
    uint32_t rr;
    struct mt_wcluster *next;
} mt_wcluster_t;

enum { MT_MAIL_SNAPSHOT = 1, MT_MAIL_DRAIN = 2, MT_MAIL_STOP = 4 };

/* What a worker publishes of its upstreams for the admin's /clusters (every
 * MT_WORKER_STATUS_MS): endpoints as this worker sees them, and each cluster's proxy part as
 * a JSON value (Redis Cluster: its slot map and node roles). Made by the worker, read by the
 * main thread under status_mu. */
#define MT_WORKER_STATUS_MS 500
typedef struct mt_wstatus_ep {
    uint32_t cluster; /* index into mt_wstatus_t.clusters */
    char address[64];
    uint16_t port;
    bool resolved;
    bool healthy;         /* its last connect did not fail (no backoff) */
    uint64_t retry_in_ms; /* backing off: time left */
    char last_error[200];
    uint32_t shared, exclusive; /* open connections of the endpoint's pools */
} mt_wstatus_ep_t;
typedef struct mt_wstatus_cluster {
    char *name;
    char *proxy_json; /* NULL: nothing of the proxy's own */
} mt_wstatus_cluster_t;
typedef struct mt_wstatus {
    mt_wstatus_ep_t *eps;
    uint32_t n_eps;
    mt_wstatus_cluster_t *clusters;
    uint32_t n_clusters;
} mt_wstatus_t;
void mt_wstatus_free(mt_wstatus_t *st);

/* In the fds posted with a snapshot: the listener gets no socket of its own (transparent
 * capture: the capture ports hand it the connections whose original destination it is). */
#define MT_LISTENER_FD_VIRTUAL (-2)

/* A connection accepted by a capture port (runtime/proxy/capture) rather than by its
 * listener: w->handoff points at one only around the proxy's accept call it is handed to;
 * mt_session_accept takes the socket (and sets fd to -1). dst is the original destination. */
typedef struct mt_handoff {
    int fd;
    struct sockaddr_storage dst;
    /* A client whose TLS handshake is done (runtime/proxy/sni: routing by SNI), or NULL:
     * mt_session_accept adopts it (and sets it to NULL) instead of starting TLS. */
    struct mt_tls *tls;
} mt_handoff_t;

/* /ready reports a worker whose loop has not ticked (every 20 ms) for this long as stuck. A
 * filter call is bounded by its spec.timeout (at most 10 s), so a stuck worker comes back. */
#define MT_WORKER_STUCK_MS 2000

struct mt_worker {
    unsigned id;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t async;
    uv_check_t check;        /* flushes every queued write after the loop's I/O callbacks */
    uv_prepare_t prepare;    /* ... and what timers queued, before the loop blocks in poll */
    uv_timer_t tick;         /* every MT_WORKER_TICK_MS: each proxy's timeouts, reaping */
    mt_timer_wheel_t timers; /* every per-connection timer of this worker (timer.h) */
    mt_buf_pool_t pool;
    void *proxy[MT_PROTO_COUNT]; /* each proxy's per-worker state (mt_proxy_ops_t) */
    mt_buf_t *own;               /* chunk for small bytes made here (error replies, split parts) */
    lua_State *L;
    mt_snapshot_t *snap;
    mt_snapshot_t *snap_applying; /* during worker_apply_snapshot only */
    mt_wlistener_t *listeners;
    mt_wcluster_t *clusters; /* the live snapshot's clusters */
    mt_wcluster_t *retired;  /* replaced by a reload, still used by someone */
    mt_outq_t *flush_head;
    struct mt_session_link *sessions; /* every downstream connection (drain, reload) */
    uint32_t n_sessions;
    uint64_t next_client_id;
    /* uv_hrtime() at the first read callback (session or upstream shell) of this loop
     * iteration, or of the last timer run: the time requests start and end at, read once per
     * wake-up rather than once per request or per read (mt_worker_clock) */
    uint64_t now_ns;
    bool now_stale;          /* set before the loop polls: the next read takes the time again */
    mt_alog_worker_t alog;   /* this worker's access log lines (access_log.h) */
    mt_trace_worker_t trace; /* this worker's finished spans (trace.h) */
    mt_handoff_t *handoff;   /* see mt_handoff_t; NULL outside a capture port's accept */
    uint32_t rconns_per_endpoint;             /* shared connections per endpoint and protocol */
    mt_upstream_t *upstreams[MT_PROTO_COUNT]; /* every upstream connection, by protocol */
    bool draining;
    bool stopping;
    /* mailbox, guarded by mu */
    pthread_mutex_t mu;
    unsigned mail;
    struct mt_mail_snap *mail_snaps; /* snapshots to apply, oldest first */
    int ready;                       /* set once the first snapshot is applied */
    uint64_t pool_trimmed;           /* chunks freed by the tick since the last malloc_trim */
    uint64_t pool_trim_ms;           /* when the tick last gave memory back (malloc_trim) */
    uint64_t heartbeat_ms;           /* uv_hrtime() in ms at the loop's last tick (atomic): the main
                                        thread reads it for /ready, to tell a stuck worker */
    int exited;
    pthread_mutex_t status_mu;
    mt_wstatus_t *status; /* the last published (status_mu) */
    uint32_t status_ticks;
};

/* A snapshot for a worker, with its listening sockets for the listeners it adds (by index in
 * the snapshot; -1 where the worker already has the listener). */
typedef struct mt_mail_snap {
    mt_snapshot_t *snap;
    int *fds;
    struct mt_mail_snap *next;
} mt_mail_snap_t;

/* Worker lifecycle (called by the main thread). */
int mt_worker_start(mt_worker_t *w, unsigned id);
void mt_worker_post(mt_worker_t *w, unsigned mail, mt_snapshot_t *snap, int *fds);
void mt_worker_join(mt_worker_t *w);

/* Inside the worker. */
static inline void mt_worker_schedule_flush(mt_worker_t *w, mt_outq_t *q)
{
    if (!q->flush_listed) {
        q->flush_listed = true;
        q->flush_next = w->flush_head;
        w->flush_head = q;
    }
}
void mt_worker_unschedule_flush(mt_worker_t *w, mt_outq_t *q);
/* Writes every scheduled output queue (the worker runs it once per loop iteration). */
void mt_worker_flush(mt_worker_t *w);

/* Brings w->now_ns to the present once per loop iteration: the first read callback after a
 * poll takes the time, later ones in the same wake-up reuse it (an iteration's callbacks run
 * within microseconds; the histograms' finest bucket is 0.5 ms). */
static inline void mt_worker_clock(mt_worker_t *w)
{
    if (w->now_stale) {
        w->now_ns = uv_hrtime();
        w->now_stale = false;
    }
}
uint64_t mt_worker_now_ms(mt_worker_t *w);
/* How the worker knows a downstream connection: the session shell (session.h) embeds one,
 * so that the worker walks and drains its connections without knowing the shell. */
typedef struct mt_session_link {
    struct mt_session_link *prev, *next;
    void (*drain)(struct mt_session_link *l); /* the worker drains: finish once idle */
} mt_session_link_t;
void mt_worker_session_add(mt_worker_t *w, mt_session_link_t *l);
void mt_worker_session_remove(mt_worker_t *w, mt_session_link_t *l);
mt_wcluster_t *mt_worker_cluster(mt_worker_t *w, mt_cluster_conf_t *conf);
void mt_wcluster_ref(mt_wcluster_t *c);
void mt_wcluster_unref(mt_wcluster_t *c);
/* At a reload (w->snap_applying = snap): clusters whose name and fingerprint did not change
 * keep their endpoints and pooled connections and take snap's conf; the others are retired
 * (their connections finish what is in flight, then close: mt_upstream_tick). */
void mt_worker_swap_clusters(mt_worker_t *w, mt_snapshot_t *snap);
/* Retired clusters whose last user and connection are gone are freed by the tick. */
void mt_worker_reap_clusters(mt_worker_t *w);
/* The worker's listener of that name, or NULL. */
mt_wlistener_t *mt_worker_find_listener(mt_worker_t *w, const char *name);
mt_wendpoint_t *mt_wendpoint_new(mt_wcluster_t *c, const char *address, uint16_t port,
                                 const struct sockaddr_storage *sa, const char *resolve_error);
/* Frees an endpoint no connection refers to any more. */
void mt_wendpoint_free(mt_wendpoint_t *ep);

/* A drain ends once no session is left and no proxy is busy (mt_proxy_ops_t.busy): a proxy
 * calls this when its busy state may have turned false. */
void mt_worker_maybe_finish(mt_worker_t *w);

#endif
