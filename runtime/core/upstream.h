/*
 * upstream.h - the upstream shell every proxy builds its server-side connections on: the
 * connect (with the endpoint's backoff and health), the connect timeout, the read buffer and
 * read path, the output queue, the close, a request-deadline timer for the proxy, and the
 * per-endpoint pools:
 *
 *   - shared connections by slot (pipelined or id-multiplexed: Redis, MetaProtocol), one
 *     pool per protocol on each endpoint, so connections of different proxies never mix;
 *     they live with their endpoint, so a cluster kept across a reload (same fingerprint)
 *     keeps them, and a retired cluster's connections close once nothing is in flight;
 *   - exclusive leases: a connection dedicated to one user (a transaction, a subscriber, a
 *     blocking command), taken from a bounded per-endpoint pool of idle ones or connected
 *     anew, and given back clean (kept for the next lease) or dirty (closed).
 *
 * A proxy embeds mt_upstream_t first in its own connection struct, fills one
 * mt_upstream_ops_t (static, with the struct's size) and never touches the socket itself. The
 * shell allocates and frees the struct; the proxy's on_open initialises its own parts and
 * on_closed releases them.
 *
 * Ownership: a connection belongs to its endpoint's pool slot (shared), to its lessee (leased)
 * or to the pool's idle list (exclusive, returned clean); every connection is also on its
 * worker's list (w->upstreams[protocol]) until its handle starts closing, and counts in its
 * cluster's n_rups until the handle is closed.
 */
#ifndef MELTEMI_CORE_UPSTREAM_H
#define MELTEMI_CORE_UPSTREAM_H

#include "runtime/core/common.h"
#include "runtime/core/worker.h"

#define MT_UPSTREAM_BACKOFF_MIN_MS 50   /* first retry delay after a failed connect */
#define MT_UPSTREAM_BACKOFF_MAX_MS 1000 /* doubling stops here */
#define MT_UPSTREAM_IDLE_MS 60000       /* idle exclusive connections close after this */

typedef enum mt_upstream_state {
    MT_UPSTREAM_CONNECTING = 0,
    MT_UPSTREAM_READY,
    MT_UPSTREAM_CLOSING,
} mt_upstream_state_t;

/* Why the shell ends a connection (ops->on_error). */
typedef enum mt_upstream_event {
    MT_UPSTREAM_CONNECT_FAILED = 0, /* the connect failed (the endpoint backs off) */
    MT_UPSTREAM_CONNECT_TIMEOUT,    /* not connected by its deadline (the endpoint backs off) */
    MT_UPSTREAM_PEER_CLOSED,        /* EOF or a read error */
    MT_UPSTREAM_WRITE_FAILED,
} mt_upstream_event_t;

typedef enum mt_upstream_kind {
    MT_UPSTREAM_SHARED = 0, /* in a pool slot, used by many */
    MT_UPSTREAM_LEASED,     /* dedicated to one lessee */
    MT_UPSTREAM_IDLE,       /* exclusive, returned clean, waiting for the next lease */
    MT_UPSTREAM_DEDICATED,  /* one user's (mt_upstream_connect): never pooled, not bounded */
} mt_upstream_kind_t;

typedef struct mt_upstream_ops {
    mt_protocol_t protocol; /* which pool of an endpoint (unless pool says), which worker list */
    /* 0: the protocol's own pool; else a variant's (MT_UPSTREAM_POOL_*, worker.h), e.g.
     * Redis's RESP3 connections */
    uint8_t pool;
    size_t size; /* of the proxy's struct, mt_upstream_t first */
    /* Prefixed to the shell's texts in logs and in ep->last_error (what later callers are
     * told while the endpoint backs off): Redis "meltemi: ", MetaProtocol "". */
    const char *text_prefix;
    /* The shell logs nothing: the proxy says what happened from on_error (plain TCP keeps its
     * own texts). */
    bool quiet;
    /* Connect even while the endpoint backs off, and let a failed connect not back it off
     * (nor a successful one reset it): plain TCP tries every client's connect. */
    bool ignore_backoff;
    /* The cluster's connectionPool.tcp.maxConnections (when written) bounds its shared
     * connections on each worker (MetaProtocol): at the bound mt_upstream_shared reuses
     * another open connection to the endpoint, or fails (mt_upstream_at_bound). */
    bool bound_shared;
    /* The connect is about to start: set up the proxy's parts (arg is what the caller of
     * mt_upstream_shared / mt_upstream_lease passed) and queue what must leave first (Redis:
     * AUTH, READONLY), before anyone else queues. -1 gives the connection up (the caller is
     * told "out of memory"); on_closed runs even then (it follows every on_open). May be NULL. */
    int (*on_open)(mt_upstream_t *u, void *arg);
    /* The connection is READY (reading started, the queue scheduled). May be NULL. */
    void (*on_connected)(mt_upstream_t *u);
    /* New bytes are in u->rbuf: consume every whole frame, advancing u->rbuf->pos. Called only
     * while READY. */
    void (*on_data)(mt_upstream_t *u);
    /* The peer half-closed: reading has stopped, the connection stays up for writing until
     * the proxy closes it. NULL: EOF ends the connection (MT_UPSTREAM_PEER_CLOSED). */
    void (*on_eof)(mt_upstream_t *u);
    /* The shell ends the connection for ev; text is "upstream <label> ..." (the part after a
     * protocol's own prefix). Fail what is in flight; the shell closes u afterwards (the
     * proxy may close it itself first). */
    void (*on_error)(mt_upstream_t *u, mt_upstream_event_t ev, const char *text);
    /* The request deadline armed with mt_upstream_arm_deadline is reached (now_ms, loop
     * time): fail what is overdue, arm again for what is left. May be NULL if the proxy never
     * arms one. */
    void (*on_deadline)(mt_upstream_t *u, uint64_t now_ms);
    /* True while the proxy holds more on u than its inflight requests (MetaProtocol: open
     * streams): the tick neither closes it idle nor closes it drained meanwhile. May be NULL. */
    bool (*busy)(const mt_upstream_t *u);
    /* The connection starts closing (state CLOSING, out of its pool and the worker's list):
     * stop the proxy's timers. May be NULL. */
    void (*on_close)(mt_upstream_t *u);
    /* The handle is closed: free the proxy's own parts (not u: the shell frees it). May be
     * NULL. */
    void (*on_closed)(mt_upstream_t *u);
} mt_upstream_ops_t;

struct mt_upstream {
    uv_tcp_t tcp; /* first: the uv handle's data points back here */
    uv_connect_t creq;
    mt_worker_t *w;
    mt_wendpoint_t *ep;
    const mt_upstream_ops_t *ops;
    mt_buf_t *rbuf;    /* unread replies */
    mt_outq_t out;     /* requests, in the order they leave */
    uint32_t inflight; /* requests sent or queued, waiting for their reply: the proxy counts */
    /* client requests queued while CONNECTING (mt_upstream_queued): in the cluster's
     * n_pending (http1MaxPendingRequests) and its pending gauge until u is ready or closes */
    uint32_t pending;
    uint32_t slot; /* shared: the pool slot */
    int error;     /* the libuv status behind the last on_error (0: a timeout) */
    uint64_t connect_deadline_ms;
    mt_timer_t connect_timer;  /* the shell's, on the worker's wheel, until connected */
    mt_timer_t deadline_timer; /* the proxy's request deadline (mt_upstream_arm_deadline) */
    uint64_t idle_since_ms;    /* MT_UPSTREAM_IDLE: when it was returned */
    uint64_t opened_ms;        /* when it became READY (maxConnectionDuration counts from it) */
    uint64_t active_ms;        /* last request queued or reply read (idleTimeout) */
    uint32_t requests;         /* requests sent (mt_upstream_request_sent) */
    /* No new user: out of its pool slot (shared) or closed when given back (leased); closes
     * once nothing is in flight and its queue is written (maxConnectionDuration,
     * maxRequestsPerConnection). */
    bool draining;
    mt_upstream_state_t state;
    mt_upstream_kind_t kind;
    bool kind_counted;          /* in the cluster's leased/idle gauges (upstream.c) */
    mt_upstream_t *prev, *next; /* the worker's list */
    mt_upstream_t *idle_next;   /* the pool's idle list */
    struct mt_tls *tls;         /* the TLS transport (cluster tls), or NULL: plain TCP; a TLS
                                   connection stays CONNECTING until its handshake is done */
};

/* The endpoint's pool for protocol p. */
static inline mt_upstream_pool_t *mt_upstream_pool(mt_wendpoint_t *ep, mt_protocol_t p)
{
    return &ep->pools[p];
}
/* The endpoint's pool for connections made with ops. */
static inline mt_upstream_pool_t *mt_upstream_pool_of(mt_wendpoint_t *ep,
                                                      const mt_upstream_ops_t *ops)
{
    return &ep->pools[ops->pool ? ops->pool : (uint32_t)ops->protocol];
}

/* "service (address:port)" of ep, for logs and error texts. */
const char *mt_upstream_label(const mt_wendpoint_t *ep, char *buf, size_t n);

/* True while ep may be tried: resolved, not backing off, not ejected by outlier detection. */
static inline bool mt_upstream_healthy(const mt_wendpoint_t *ep, uint64_t now_ms)
{
    return !ep->resolve_error[0] && ep->retry_at_ms <= now_ms &&
           !mt_outlier_ejected(&ep->cluster->conf->outlier, ep->conf_index, now_ms);
}

/* Outlier detection: what a request to ep came to (outlier.h says what counts). Counts and
 * logs an ejection. The shell itself reports failed connects and connections lost under
 * requests; proxies report answers (success or error) and request timeouts. */
void mt_upstream_outcome(mt_wendpoint_t *ep, mt_worker_t *w, mt_outlier_event_t ev);
/* A connect to ep failed with why: no new attempt for 50 ms, doubling up to 1 s while it
 * keeps failing; why is what callers are told meanwhile. A connect that succeeds resets it. */
void mt_upstream_backoff(mt_wendpoint_t *ep, mt_worker_t *w, const char *why);

/*
 * The shared connection of ep in slot key % rconns_per_endpoint, connecting it when the slot
 * is empty. NULL and why (valid until the next call on ep) when none can be had: unresolved,
 * backing off, or the connect could not start. A connection that is still CONNECTING is
 * returned: queue on it, the shell writes once connected.
 */
mt_upstream_t *mt_upstream_shared(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops, uint64_t key,
                                  void *arg, const char **why);

/* True when ops->bound_shared and ep's cluster has its max_connections_set connections open
 * on this worker. A NULL from mt_upstream_shared whose why is ep->lease_error is that bound
 * (response flag UO). */
bool mt_upstream_at_bound(const mt_wendpoint_t *ep, const mt_upstream_ops_t *ops);

/*
 * An exclusive connection to ep for one lessee: the most recently returned idle one, or a new
 * one when none is idle and fewer than the cluster's max_connections exclusive connections of
 * this protocol are open to ep (leased plus idle). Never waits: at the bound it fails at
 * once, NULL and why ("meltemi: upstream <label>: all <n> exclusive connections are in use
 * (connectionPool.tcp.maxConnections)"); also NULL and why as mt_upstream_shared.
 * The lessee owns it until mt_upstream_return; if the shell ends it first (on_error), the
 * lessee hears it through its ops and must forget u.
 */
mt_upstream_t *mt_upstream_lease(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops, void *arg,
                                 const char **why);
/*
 * A connection to ep for one user, outside every pool: not counted against max_connections,
 * never reused, and (with ops->ignore_backoff) tried whatever the endpoint's backoff says.
 * NULL and why as mt_upstream_shared. The user closes it with mt_upstream_close; if the shell
 * ends it first (on_error, also MT_UPSTREAM_CONNECT_TIMEOUT as for every connection), the
 * user hears it through its ops and must forget u. The user may write to u->tcp through an
 * outq of its own and shut it down for writing (a relay's half-close).
 */
mt_upstream_t *mt_upstream_connect(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops, void *arg,
                                   const char **why);
/* Stops / restarts reading u (a relay's back-pressure); no-ops unless u is READY. The shell
 * starts reading when u connects. */
void mt_upstream_read_stop(mt_upstream_t *u);
void mt_upstream_read_start(mt_upstream_t *u);

/*
 * Gives a leased connection back. reusable: its state is clean (nothing in flight, no
 * session state left on the server, e.g. after EXEC); it waits idle for the next lease, and
 * closes after MT_UPSTREAM_IDLE_MS. Otherwise (a client vanished mid-transaction) it is
 * closed. A connection that is not READY, still has requests in flight or whose cluster is
 * retired is closed whatever reusable says.
 */
void mt_upstream_return(mt_upstream_t *u, bool reusable);

/* Schedules u's output for the worker's flush pass if it is connected (a CONNECTING
 * connection writes what is queued once connected). Something was queued: u is not idle. */
static inline void mt_upstream_schedule(mt_upstream_t *u)
{
    u->active_ms = mt_worker_now_ms(u->w);
    if (u->state == MT_UPSTREAM_READY)
        mt_worker_schedule_flush(u->w, &u->out);
}

/* The proxy queued one request on shared connection u: counts it against the cluster's
 * max_requests_per_connection (http.maxRequestsPerConnection); the request that reaches it
 * drains u, so the next caller of mt_upstream_shared gets a new connection. A connection
 * still connecting is drained by the first request counted once it is connected (it may
 * carry a few more than the bound: the ones queued while it connected). */
void mt_upstream__request_counted(mt_upstream_t *u, uint32_t max);
static inline void mt_upstream_request_sent(mt_upstream_t *u)
{
    uint32_t max = u->ep->cluster->conf->max_requests_per_connection;
    if (MT_UNLIKELY(max)) /* the request path pays one load and a branch without the field */
        mt_upstream__request_counted(u, max);
}

/* True when one more request queued on u would go over the cluster's max_pending_requests
 * (http.http1MaxPendingRequests): u is still connecting and that many requests of the
 * cluster (this worker's) already wait for their connections. The proxy answers it natively
 * with response flag UO instead. Requests on READY connections are never pending. */
static inline bool mt_upstream_pending_full(const mt_upstream_t *u)
{
    uint32_t max = u->ep->cluster->conf->max_pending_requests;
    return max && u->state == MT_UPSTREAM_CONNECTING && u->ep->cluster->n_pending >= max;
}

/* Takes u out of use: no new requests go to it; it closes once what is in flight is answered
 * and its queue is written (mt_upstream_tick), never under a reply. A leased connection
 * closes when it is given back. */
void mt_upstream_drain(mt_upstream_t *u);

/* A client's request was queued on u: while u is still connecting it waits for the
 * connection, in the cluster's pending gauge until u is ready or closes (the shell takes it
 * out). The proxies call it for every client request they queue, not for their own. */
void mt_upstream_pending_slow(mt_upstream_t *u);
static inline void mt_upstream_queued(mt_upstream_t *u)
{
    if (MT_UNLIKELY(u->state == MT_UPSTREAM_CONNECTING))
        mt_upstream_pending_slow(u);
}

/* Closes u (idempotent): out of its pool and the worker's list at once, ops->on_close, the
 * handle closes, then ops->on_closed and the memory goes. Requests still on u are the
 * proxy's to fail first. */
void mt_upstream_close(mt_upstream_t *u);

/*
 * The proxy's request deadline on u, on the worker's timer wheel: ops->on_deadline(u, now)
 * runs once the loop time reaches due_ms. Lazy: while a deadline is armed, arming again keeps
 * the earlier one (requests queue in deadline order, so the head's is the earliest); the
 * callback looks at what is at the head and arms again for it. Stopped when u closes.
 */
void mt_upstream_arm_deadline(mt_upstream_t *u, uint64_t due_ms);
static inline bool mt_upstream_deadline_armed(const mt_upstream_t *u)
{
    return mt_timer_pending(&u->deadline_timer);
}

/*
 * The worker's tick for protocol p's connections (housekeeping, not timeouts: those are on
 * the wheel): connections of retired clusters with nothing in flight close; idle exclusive
 * connections close after the cluster's idle_timeout_ms (MT_UPSTREAM_IDLE_MS if unset);
 * shared ones with nothing in flight close after idle_timeout_ms (if set); connections older
 * than max_connection_duration_ms drain (mt_upstream_drain); drained ones close once empty.
 * Connections outside the pools (mt_upstream_connect) are their user's: not looked at.
 */
void mt_upstream_tick(mt_worker_t *w, mt_protocol_t p, uint64_t now_ms);

#endif
