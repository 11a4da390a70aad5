/*
 * upstream.c - the upstream shell (upstream.h): connect with backoff, connect timeout and
 * request deadline on the worker's timer wheel, read path, close, and the per-endpoint pools
 * (shared slots, exclusive leases). The proxy sees bytes through ops->on_data and queues requests
 * on u->out; everything about the socket's life is here, once for every protocol.
 */
#include "runtime/core/upstream.h"

#include "runtime/core/log.h"
#include "runtime/core/tls.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#define READ_MIN_ROOM 4096
#define TEXT_MAX 400

const char *mt_upstream_label(const mt_wendpoint_t *ep, char *buf, size_t n)
{
    const mt_cluster_conf_t *cc = ep->cluster->conf;
    snprintf(buf, n, "%s (%s:%u)", cc->service ? cc->service : cc->name, ep->address, ep->port);
    return buf;
}

void mt_upstream_outcome(mt_wendpoint_t *ep, mt_worker_t *w, mt_outlier_event_t ev)
{
    mt_cluster_conf_t *c = ep->cluster->conf;
    if (MT_LIKELY(!c->outlier.enabled))
        return;
    uint64_t now = mt_worker_now_ms(w);
    if (!mt_outlier_report(&c->outlier, ep->conf_index, ev, now))
        return;
    mt_stat_add(c->stats, w->id, MT_ST_OUTLIER_EJECTIONS, 1);
    char lbl[256];
    const mt_outlier_state_t *st = &c->outlier.eps[ep->conf_index];
    mt_warn("outlier detection: ejected %s for %llu ms (ejection %u)",
            mt_upstream_label(ep, lbl, sizeof(lbl)),
            (unsigned long long)(atomic_load(&st->ejected_until_ms) - now),
            (unsigned)atomic_load(&st->ejections));
}

void mt_upstream_backoff(mt_wendpoint_t *ep, mt_worker_t *w, const char *why)
{
    ep->backoff_ms = ep->backoff_ms ? MT_MIN(ep->backoff_ms * 2, MT_UPSTREAM_BACKOFF_MAX_MS)
                                    : MT_UPSTREAM_BACKOFF_MIN_MS;
    ep->retry_at_ms = mt_worker_now_ms(w) + ep->backoff_ms;
    snprintf(ep->last_error, sizeof(ep->last_error), "%s", why);
}

/* ---- close ------------------------------------------------------------------------------------
 */

static void upstream_closed(uv_handle_t *h)
{
    mt_upstream_t *u = h->data;
    mt_worker_t *w = u->w;
    u->ep->cluster->n_rups--;
    if (u->ops->on_closed)
        u->ops->on_closed(u);
    mt_outq_reset(&u->out);
    if (u->rbuf)
        mt_buf_unref(&w->pool, u->rbuf);
    mt_tls_free(u->tls);
    free(u);
}

static void pool_idle_remove(mt_upstream_pool_t *pool, mt_upstream_t *u)
{
    for (mt_upstream_t **pp = &pool->idle; *pp; pp = &(*pp)->idle_next) {
        if (*pp == u) {
            *pp = u->idle_next;
            break;
        }
    }
    u->idle_next = NULL;
}

/* The pool gauges follow a connection's kind: leased and idle exclusive ones. */
static void upstream_count_kind(mt_upstream_t *u, int64_t d)
{
    mt_stats_block_t *b = u->ep->cluster->conf->stats;
    if (u->kind == MT_UPSTREAM_LEASED)
        mt_stat_add(b, u->w->id, MT_ST_UPSTREAM_CX_LEASED, d);
    else if (u->kind == MT_UPSTREAM_IDLE)
        mt_stat_add(b, u->w->id, MT_ST_UPSTREAM_CX_IDLE, d);
}

void mt_upstream_pending_slow(mt_upstream_t *u)
{
    u->pending++;
    u->ep->cluster->n_pending++;
    mt_stat_add(u->ep->cluster->conf->stats, u->w->id, MT_ST_UPSTREAM_RQ_PENDING, 1);
}

/* The connection is ready or closing: what waited for it waits no more. */
static void upstream_pending_done(mt_upstream_t *u)
{
    if (u->pending) {
        u->ep->cluster->n_pending -= u->pending;
        mt_stat_add(u->ep->cluster->conf->stats, u->w->id, MT_ST_UPSTREAM_RQ_PENDING,
                    -(int64_t)u->pending);
    }
    u->pending = 0;
}

static void upstream_set_kind(mt_upstream_t *u, mt_upstream_kind_t kind)
{
    if (u->kind != kind || !u->kind_counted) {
        if (u->kind_counted)
            upstream_count_kind(u, -1);
        u->kind = kind;
        u->kind_counted = true;
        upstream_count_kind(u, 1);
    }
}

void mt_upstream_close(mt_upstream_t *u)
{
    if (u->state == MT_UPSTREAM_CLOSING)
        return;
    mt_worker_t *w = u->w;
    mt_protocol_t p = u->ops->protocol;
    mt_upstream_pool_t *pool = mt_upstream_pool_of(u->ep, u->ops);
    bool was_connected = u->state == MT_UPSTREAM_READY;
    upstream_pending_done(u);
    u->state = MT_UPSTREAM_CLOSING;
    if (u->kind_counted)
        upstream_count_kind(u, -1);
    u->kind_counted = false;
    if (u->kind == MT_UPSTREAM_SHARED) {
        if (u->slot < pool->n_shared && pool->shared[u->slot] == u)
            pool->shared[u->slot] = NULL;
    } else if (u->kind != MT_UPSTREAM_DEDICATED) {
        if (u->kind == MT_UPSTREAM_IDLE)
            pool_idle_remove(pool, u);
        pool->n_exclusive--;
    }
    if (u->prev)
        u->prev->next = u->next;
    else
        w->upstreams[p] = u->next;
    if (u->next)
        u->next->prev = u->prev;
    u->prev = u->next = NULL;
    mt_worker_unschedule_flush(w, &u->out);
    mt_timer_stop(&w->timers, &u->connect_timer);
    mt_timer_stop(&w->timers, &u->deadline_timer);
    if (u->ops->on_close)
        u->ops->on_close(u);
    if (was_connected)
        mt_stat_add(u->ep->cluster->conf->stats, w->id, MT_ST_UPSTREAM_CX_ACTIVE, -1);
    if (u->tls)
        mt_tls_shutdown(u->tls); /* best effort: the close cancels what has not left */
    uv_close((uv_handle_t *)&u->tcp, upstream_closed);
}

/* Ends u for ev: logs (as the proxies always did), backs the endpoint off after a failed
 * connect, lets the proxy fail what is in flight, closes. */
static void upstream_end(mt_upstream_t *u, mt_upstream_event_t ev, const char *text, bool warn)
{
    const char *pfx = u->ops->text_prefix ? u->ops->text_prefix : "";
    if (warn && !u->ops->quiet)
        mt_warn("%s%s", pfx, text);
    if (ev == MT_UPSTREAM_CONNECT_FAILED || ev == MT_UPSTREAM_CONNECT_TIMEOUT) {
        char why[TEXT_MAX + 16];
        snprintf(why, sizeof(why), "%s%s", pfx, text);
        mt_stat_add(u->ep->cluster->conf->stats, u->w->id, MT_ST_UPSTREAM_CX_CONNECT_FAIL, 1);
        if (!u->ops->ignore_backoff)
            mt_upstream_backoff(u->ep, u->w, why);
    }
    /* A connection lost with nothing in flight (an idle one the server closed) is no failure. */
    if (ev == MT_UPSTREAM_CONNECT_FAILED || ev == MT_UPSTREAM_CONNECT_TIMEOUT || u->inflight)
        mt_upstream_outcome(u->ep, u->w, MT_OUTLIER_GATEWAY);
    u->ops->on_error(u, ev, text);
    mt_upstream_close(u);
}

/* ---- read, write, connect ------------------------------------------------------------------- */

/* New bytes are in u->rbuf: the proxy takes its frames. */
static void upstream_consume(mt_upstream_t *u)
{
    mt_worker_clock(u->w); /* replies end requests: their time, once per wake-up */
    u->active_ms = mt_worker_now_ms(u->w);
    u->ops->on_data(u);
    /* Everything consumed and nobody holds a slice of it: reuse the chunk from its start. */
    mt_buf_t *b = u->rbuf;
    if (u->state == MT_UPSTREAM_READY && b && b->pos == b->last && b->refs == 1)
        b->pos = b->last = b->data;
}

static void upstream_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    MT_UNUSED(hint);
    mt_upstream_t *u = h->data;
    if (u->tls) { /* ciphertext: fed to the SSL at once, decrypted into u->rbuf */
        buf->base = mt_tls_scratch();
        buf->len = MT_TLS_SCRATCH;
        return;
    }
    if (mt_buf_make_room(&u->w->pool, &u->rbuf, READ_MIN_ROOM, 0) != 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = u->rbuf->last;
    buf->len = mt_buf_room(u->rbuf);
}

static void upstream_ready(mt_upstream_t *u);

/* A TLS connection's handshake or read failed: why is t->error. */
static void upstream_tls_failed(mt_upstream_t *u, const char *why)
{
    char lbl[256], text[TEXT_MAX];
    bool handshake = u->state == MT_UPSTREAM_CONNECTING;
    snprintf(text, sizeof(text), "upstream %s %s: %s", mt_upstream_label(u->ep, lbl, sizeof(lbl)),
             handshake ? "unavailable" : "closed the connection", why);
    if (handshake)
        mt_stat_add(u->ep->cluster->conf->stats, u->w->id, MT_ST_UPSTREAM_TLS_FAILURES, 1);
    upstream_end(u, handshake ? MT_UPSTREAM_CONNECT_FAILED : MT_UPSTREAM_PEER_CLOSED, text,
                 handshake || u->inflight > 0);
}

/* Ciphertext from the server: the handshake moves on (READY once done), plaintext goes to
 * u->rbuf. Returns the plaintext bytes added, -1 when u is ending, MT_TLS_EOF on close_notify. */
static long upstream_tls_in(mt_upstream_t *u, const char *p, size_t n)
{
    mt_tls_t *t = u->tls;
    if (mt_tls_feed(t, p, n) != 0) {
        upstream_tls_failed(u, t->error);
        return -1;
    }
    if (!t->handshake_done) {
        int r = mt_tls_handshake(t);
        if (r < 0) {
            upstream_tls_failed(u, t->error);
            return -1;
        }
        if (r == 0)
            return 0;
        upstream_ready(u);
        if (u->state != MT_UPSTREAM_READY)
            return -1;
    }
    size_t got;
    int rc = mt_tls_read_all(t, &u->w->pool, &u->rbuf, READ_MIN_ROOM, &got);
    if (rc == -1) {
        upstream_tls_failed(u, t->error);
        return -1;
    }
    /* close_notify after data: the data first; the TCP EOF that follows ends u. */
    return got > 0 || rc == 0 ? (long)got : MT_TLS_EOF;
}

static void upstream_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    mt_upstream_t *u = st->data;
    if (u->tls && nread > 0) {
        long got = upstream_tls_in(u, buf->base, (size_t)nread);
        if (got == 0 || got == -1 || u->state != MT_UPSTREAM_READY)
            return;
        if (got == MT_TLS_EOF) {
            nread = UV_EOF; /* close_notify: as a TCP EOF */
            if (u->ops->on_eof)
                uv_read_stop((uv_stream_t *)&u->tcp);
        } else {
            upstream_consume(u);
            return;
        }
    }
    if (u->tls && nread < 0 && u->state == MT_UPSTREAM_CONNECTING) {
        upstream_tls_failed(u, "TLS handshake: the server closed the connection");
        return;
    }
    if (nread == UV_EOF && u->ops->on_eof) {
        u->ops->on_eof(u); /* libuv has stopped reading */
        return;
    }
    if (nread < 0) {
        u->error = nread == UV_EOF ? 0 : (int)nread;
        char lbl[256], text[TEXT_MAX];
        snprintf(text, sizeof(text), "upstream %s closed the connection%s%s",
                 mt_upstream_label(u->ep, lbl, sizeof(lbl)), nread == UV_EOF ? "" : ": ",
                 nread == UV_EOF ? "" : uv_strerror((int)nread));
        upstream_end(u, MT_UPSTREAM_PEER_CLOSED, text, u->inflight > 0);
        return;
    }
    if (nread == 0)
        return;
    u->rbuf->last += nread;
    upstream_consume(u);
}

static void upstream_on_write_done(mt_outq_t *q, int status)
{
    mt_upstream_t *u = MT_CONTAINER_OF(q, mt_upstream_t, out);
    if (status < 0 && status != UV_ECANCELED && u->state != MT_UPSTREAM_CLOSING) {
        char lbl[256], text[TEXT_MAX];
        u->error = status;
        snprintf(text, sizeof(text), "upstream %s write failed: %s",
                 mt_upstream_label(u->ep, lbl, sizeof(lbl)), uv_strerror(status));
        upstream_end(u, MT_UPSTREAM_WRITE_FAILED, text, false);
    }
}

/* connectionPool.tcp.tcpKeepalive: SO_KEEPALIVE with the rule's idle time, probe interval
 * and probe count. Best effort: a socket option the kernel refuses is logged, not fatal. */
static void upstream_keepalive(mt_upstream_t *u, const mt_cluster_conf_t *cc)
{
    if (!cc->keepalive_time_s)
        return;
    uv_os_fd_t fd;
    int rc = uv_tcp_keepalive(&u->tcp, 1, cc->keepalive_time_s);
    if (rc == 0)
        rc = uv_fileno((uv_handle_t *)&u->tcp, &fd);
    if (rc == 0) {
        int intvl = cc->keepalive_interval_s ? (int)cc->keepalive_interval_s : 1;
        int cnt = cc->keepalive_probes ? (int)cc->keepalive_probes : 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) != 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) != 0)
            rc = -1;
    }
    if (rc != 0)
        mt_debug("cluster %s: tcpKeepalive not set on an upstream socket", cc->name);
}

/* The TLS settings of u's connection: its cluster's, unless auto-mTLS found no sidecar at
 * its endpoint (mt_endpoint_conf_t.plain). */
static struct mt_tls_conf *upstream_tls_conf(const mt_upstream_t *u)
{
    const mt_cluster_conf_t *cc = u->ep->cluster->conf;
    uint32_t i = u->ep->conf_index;
    if (cc->tls && i < cc->n_endpoints && cc->endpoints[i].plain)
        return NULL;
    return cc->tls;
}

static void upstream_on_connect(uv_connect_t *req, int status)
{
    mt_upstream_t *u = req->data;
    if (u->state == MT_UPSTREAM_CLOSING)
        return;
    mt_worker_t *w = u->w;
    struct mt_tls_conf *tc = upstream_tls_conf(u);
    if (status < 0 || !tc) /* a TLS handshake is part of the connect (its deadline) */
        mt_timer_stop(&w->timers, &u->connect_timer);
    if (status < 0) {
        u->error = status;
        char lbl[256], text[TEXT_MAX];
        snprintf(text, sizeof(text), "upstream %s unavailable: %s",
                 mt_upstream_label(u->ep, lbl, sizeof(lbl)), uv_strerror(status));
        upstream_end(u, MT_UPSTREAM_CONNECT_FAILED, text, true);
        return;
    }
    uv_tcp_nodelay(&u->tcp, 1);
    upstream_keepalive(u, u->ep->cluster->conf);
    u->out.stream = (uv_stream_t *)&u->tcp;
    if (!tc) {
        uv_read_start((uv_stream_t *)&u->tcp, upstream_alloc, upstream_on_read);
        upstream_ready(u);
        return;
    }
    /* TLS: still CONNECTING (its deadline covers the handshake) until the handshake is done;
     * what the proxy queued meanwhile is sealed once it is. */
    char err[256];
    u->tls = mt_tls_new(tc, w->id, &u->out, &w->pool, &u->ep->tls_session, err, sizeof(err));
    if (!u->tls) {
        upstream_tls_failed(u, err);
        return;
    }
    u->tls->raw.stream = (uv_stream_t *)&u->tcp;
    uv_read_start((uv_stream_t *)&u->tcp, upstream_alloc, upstream_on_read);
    if (mt_tls_handshake(u->tls) < 0)
        upstream_tls_failed(u, u->tls->error);
}

/* Connected (and, over TLS, the handshake done): reading, the queue, the proxy's hook. */
static void upstream_ready(mt_upstream_t *u)
{
    mt_worker_t *w = u->w;
    mt_cluster_conf_t *cc = u->ep->cluster->conf;
    mt_timer_stop(&w->timers, &u->connect_timer);
    u->state = MT_UPSTREAM_READY;
    u->opened_ms = u->active_ms = mt_worker_now_ms(w);
    upstream_pending_done(u);
    if (!u->ops->ignore_backoff)
        u->ep->backoff_ms = 0;
    mt_stat_add(cc->stats, w->id, MT_ST_UPSTREAM_CX_TOTAL, 1);
    mt_stat_add(cc->stats, w->id, MT_ST_UPSTREAM_CX_ACTIVE, 1);
    if (u->tls && u->tls->resumed)
        mt_stat_add(cc->stats, w->id, MT_ST_UPSTREAM_TLS_RESUMED, 1);
    mt_worker_schedule_flush(w, &u->out);
    if (u->ops->on_connected)
        u->ops->on_connected(u);
}

static void upstream_connect_timed_out(mt_timer_t *t)
{
    mt_upstream_t *u = MT_CONTAINER_OF(t, mt_upstream_t, connect_timer);
    if (u->state != MT_UPSTREAM_CONNECTING)
        return;
    char lbl[256], text[TEXT_MAX];
    snprintf(text, sizeof(text), "upstream %s unavailable: connect timed out after %u ms",
             mt_upstream_label(u->ep, lbl, sizeof(lbl)), u->ep->cluster->conf->connect_timeout_ms);
    upstream_end(u, MT_UPSTREAM_CONNECT_TIMEOUT, text, true);
}

static void upstream_deadline_reached(mt_timer_t *t)
{
    mt_upstream_t *u = MT_CONTAINER_OF(t, mt_upstream_t, deadline_timer);
    if (u->state != MT_UPSTREAM_CLOSING && u->ops->on_deadline)
        u->ops->on_deadline(u, mt_worker_now_ms(u->w));
}

void mt_upstream_arm_deadline(mt_upstream_t *u, uint64_t due_ms)
{
    if (u->state != MT_UPSTREAM_CLOSING && !mt_timer_pending(&u->deadline_timer))
        mt_timer_start_at(&u->w->timers, &u->deadline_timer, due_ms, upstream_deadline_reached);
}

/* A new connection to ep, connecting; NULL and why when it cannot be had. */
static mt_upstream_t *upstream_new(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops,
                                   mt_upstream_kind_t kind, uint32_t slot, void *arg,
                                   const char **why)
{
    mt_worker_t *w = ep->cluster->w;
    if (ep->resolve_error[0]) {
        *why = ep->resolve_error;
        return NULL;
    }
    uint64_t now = mt_worker_now_ms(w);
    if (!ops->ignore_backoff && ep->retry_at_ms > now) {
        *why = ep->last_error;
        return NULL;
    }
    mt_upstream_t *u = calloc(1, ops->size);
    if (!u) {
        *why = "out of memory";
        return NULL;
    }
    u->w = w;
    u->ep = ep;
    u->ops = ops;
    upstream_set_kind(u, kind);
    u->slot = slot;
    u->state = MT_UPSTREAM_CONNECTING;
    u->connect_deadline_ms = now + ep->cluster->conf->connect_timeout_ms;
    ep->cluster->n_rups++; /* dropped in upstream_closed, whichever way the connection ends */
    mt_outq_init(&u->out, &w->pool, upstream_on_write_done);
    mt_timer_init(&u->connect_timer);
    mt_timer_init(&u->deadline_timer);
    uv_tcp_init(&w->loop, &u->tcp);
    u->tcp.data = u;
    u->creq.data = u;
    /* on_open first: what it queues leaves first, and on_closed always follows an on_open. */
    int rc = 0;
    if (ops->on_open && ops->on_open(u, arg) != 0) {
        *why = "out of memory";
        rc = -1;
    } else {
        rc = uv_tcp_connect(&u->creq, &u->tcp, (const struct sockaddr *)&ep->sa,
                            upstream_on_connect);
        if (rc != 0 && ops->ignore_backoff) {
            *why = uv_strerror(rc); /* ep->last_error is what a backing-off endpoint says */
        } else if (rc != 0) {
            snprintf(ep->last_error, sizeof(ep->last_error), "connect: %s", uv_strerror(rc));
            *why = ep->last_error;
        }
    }
    if (rc != 0) {
        u->state = MT_UPSTREAM_CLOSING;
        uv_close((uv_handle_t *)&u->tcp, upstream_closed);
        return NULL;
    }
    mt_timer_start_at(&w->timers, &u->connect_timer, u->connect_deadline_ms,
                      upstream_connect_timed_out);
    mt_protocol_t p = ops->protocol;
    u->next = w->upstreams[p];
    if (w->upstreams[p])
        w->upstreams[p]->prev = u;
    w->upstreams[p] = u;
    return u;
}

/* ---- pools ------------------------------------------------------------------------------------
 */

bool mt_upstream_at_bound(const mt_wendpoint_t *ep, const mt_upstream_ops_t *ops)
{
    uint32_t max = ep->cluster->conf->max_connections_set;
    return ops->bound_shared && max && ep->cluster->n_rups >= max;
}

/* At the cluster's bound: another open connection of ops to ep (one that is not draining
 * first, else a draining one, kept in use: the bound wins over its replacement), or NULL and
 * why. A walk of the worker's list, only at the bound. */
static mt_upstream_t *shared_at_bound(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops,
                                      const char **why)
{
    mt_worker_t *w = ep->cluster->w;
    mt_upstream_t *drained = NULL;
    for (mt_upstream_t *u = w->upstreams[ops->protocol]; u; u = u->next) {
        if (u->ep != ep || u->ops != ops || u->kind != MT_UPSTREAM_SHARED ||
            u->state == MT_UPSTREAM_CLOSING)
            continue;
        if (!u->draining)
            return u;
        drained = u;
    }
    if (drained)
        return drained;
    char lbl[256];
    mt_stat_add(ep->cluster->conf->stats, w->id, MT_ST_UPSTREAM_CX_OVERFLOW, 1);
    snprintf(ep->lease_error, sizeof(ep->lease_error),
             "upstream %s: the cluster's %u connections are open and none is to this endpoint "
             "(connectionPool.tcp.maxConnections)",
             mt_upstream_label(ep, lbl, sizeof(lbl)), ep->cluster->conf->max_connections_set);
    *why = ep->lease_error;
    return NULL;
}

mt_upstream_t *mt_upstream_shared(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops, uint64_t key,
                                  void *arg, const char **why)
{
    mt_upstream_pool_t *pool = mt_upstream_pool_of(ep, ops);
    if (MT_UNLIKELY(!pool->shared)) {
        uint32_t n = ep->cluster->w->rconns_per_endpoint;
        pool->shared = calloc(n ? n : 1, sizeof(*pool->shared));
        if (!pool->shared) {
            *why = "out of memory";
            return NULL;
        }
        pool->n_shared = n ? n : 1;
    }
    uint32_t slot = (uint32_t)(key % pool->n_shared);
    mt_upstream_t *u = pool->shared[slot];
    if (MT_LIKELY(u != NULL))
        return u;
    if (MT_UNLIKELY(mt_upstream_at_bound(ep, ops)))
        return shared_at_bound(ep, ops, why);
    u = upstream_new(ep, ops, MT_UPSTREAM_SHARED, slot, arg, why);
    if (u)
        pool->shared[slot] = u;
    return u;
}

mt_upstream_t *mt_upstream_lease(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops, void *arg,
                                 const char **why)
{
    mt_upstream_pool_t *pool = mt_upstream_pool_of(ep, ops);
    mt_upstream_t *u = pool->idle;
    if (u) {
        pool->idle = u->idle_next;
        u->idle_next = NULL;
        upstream_set_kind(u, MT_UPSTREAM_LEASED);
        return u;
    }
    uint32_t max = ep->cluster->conf->max_connections;
    if (max && pool->n_exclusive >= max) {
        char lbl[256];
        snprintf(ep->lease_error, sizeof(ep->lease_error),
                 "meltemi: upstream %s: all %u exclusive connections are in use "
                 "(connectionPool.tcp.maxConnections)",
                 mt_upstream_label(ep, lbl, sizeof(lbl)), max);
        *why = ep->lease_error;
        return NULL;
    }
    u = upstream_new(ep, ops, MT_UPSTREAM_LEASED, 0, arg, why);
    if (u)
        pool->n_exclusive++;
    return u;
}

mt_upstream_t *mt_upstream_connect(mt_wendpoint_t *ep, const mt_upstream_ops_t *ops, void *arg,
                                   const char **why)
{
    return upstream_new(ep, ops, MT_UPSTREAM_DEDICATED, 0, arg, why);
}

void mt_upstream_read_stop(mt_upstream_t *u)
{
    if (u->state == MT_UPSTREAM_READY)
        uv_read_stop((uv_stream_t *)&u->tcp);
}

void mt_upstream_read_start(mt_upstream_t *u)
{
    if (u->state == MT_UPSTREAM_READY)
        uv_read_start((uv_stream_t *)&u->tcp, upstream_alloc, upstream_on_read);
}

void mt_upstream_return(mt_upstream_t *u, bool reusable)
{
    if (u->state == MT_UPSTREAM_CLOSING || u->kind != MT_UPSTREAM_LEASED)
        return;
    if (!reusable || u->draining || u->state != MT_UPSTREAM_READY || u->inflight ||
        u->ep->cluster->retired || mt_outq_pending(&u->out)) {
        mt_upstream_close(u);
        return;
    }
    mt_upstream_pool_t *pool = mt_upstream_pool_of(u->ep, u->ops);
    upstream_set_kind(u, MT_UPSTREAM_IDLE);
    u->idle_since_ms = mt_worker_now_ms(u->w);
    u->idle_next = pool->idle;
    pool->idle = u;
}

void mt_upstream_drain(mt_upstream_t *u)
{
    if (u->draining || u->state == MT_UPSTREAM_CLOSING)
        return;
    u->draining = true;
    mt_upstream_pool_t *pool = mt_upstream_pool_of(u->ep, u->ops);
    if (u->kind == MT_UPSTREAM_SHARED && u->slot < pool->n_shared && pool->shared[u->slot] == u)
        pool->shared[u->slot] = NULL; /* the next caller connects anew in this slot */
}

void mt_upstream__request_counted(mt_upstream_t *u, uint32_t max)
{
    /* Only a connected one is replaced: what was queued on it is written in this loop pass,
     * before its successor can finish connecting, so a Redis client's pipelined commands
     * reach the server in the order sent. Two connections connecting at once could connect in
     * either order and the second one's commands would run first. */
    if (++u->requests >= max && u->kind == MT_UPSTREAM_SHARED && !u->draining &&
        u->state == MT_UPSTREAM_READY) {
        mt_stat_add(u->ep->cluster->conf->stats, u->w->id, MT_ST_UPSTREAM_CX_MAX_REQUESTS, 1);
        mt_upstream_drain(u);
    }
}

/* What the tick does with one pooled connection (it may close it). */
static void upstream_tick_one(mt_upstream_t *u, uint64_t now_ms)
{
    const mt_cluster_conf_t *cc = u->ep->cluster->conf;
    bool empty =
        u->inflight == 0 && !mt_outq_pending(&u->out) && !(u->ops->busy && u->ops->busy(u));
    if (u->kind == MT_UPSTREAM_DEDICATED)
        return;
    if ((u->kind == MT_UPSTREAM_SHARED || u->kind == MT_UPSTREAM_IDLE) && empty &&
        (u->ep->cluster->retired || u->draining)) {
        mt_upstream_close(u); /* replaced (a reload, its age, its requests) and now empty */
        return;
    }
    if (u->state != MT_UPSTREAM_READY)
        return;
    if (cc->max_connection_duration_ms && !u->draining &&
        now_ms - u->opened_ms >= cc->max_connection_duration_ms) {
        mt_stat_add(cc->stats, u->w->id, MT_ST_UPSTREAM_CX_MAX_DURATION, 1);
        if (u->kind == MT_UPSTREAM_IDLE) {
            mt_upstream_close(u);
            return;
        }
        mt_upstream_drain(u); /* shared: closes on a later tick once empty; leased: on return */
        return;
    }
    if (u->kind == MT_UPSTREAM_IDLE) {
        uint64_t idle = cc->idle_timeout_ms ? cc->idle_timeout_ms : MT_UPSTREAM_IDLE_MS;
        if (now_ms - u->idle_since_ms >= idle) {
            if (cc->idle_timeout_ms)
                mt_stat_add(cc->stats, u->w->id, MT_ST_UPSTREAM_CX_IDLE_TIMEOUT, 1);
            mt_upstream_close(u);
        }
    } else if (u->kind == MT_UPSTREAM_SHARED && cc->idle_timeout_ms && empty &&
               now_ms - u->active_ms >= cc->idle_timeout_ms) {
        mt_stat_add(cc->stats, u->w->id, MT_ST_UPSTREAM_CX_IDLE_TIMEOUT, 1);
        mt_upstream_close(u);
    }
}

void mt_upstream_tick(mt_worker_t *w, mt_protocol_t p, uint64_t now_ms)
{
    mt_upstream_t *next;
    for (mt_upstream_t *u = w->upstreams[p]; u; u = next) {
        next = u->next;
        upstream_tick_one(u, now_ms);
        /* upstream_end / close may have closed next as well (a proxy failing one connection
         * can end others of the same cluster): it is out of the list then, start over. */
        if (next && next->state == MT_UPSTREAM_CLOSING) {
            next = w->upstreams[p];
        }
    }
}
