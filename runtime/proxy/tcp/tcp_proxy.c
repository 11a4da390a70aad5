/*
 * tcp_proxy.c - plain TCP proxying for ports whose name selects no known protocol: one
 * upstream connection per client, bytes relayed both ways without copying (read chunks are
 * queued by reference), half-closes passed through, and each direction paused while the
 * other side has more than TCP_MAX_QUEUED bytes waiting. The upstream connection is the
 * upstream shell's (core/upstream.h), a dedicated one per client (mt_upstream_connect): the
 * shell creates, connects, reads and closes the socket; this file relays.
 *
 * TLS: both queues are the shells' (s->out, u->out), so a listener that terminates TLS (or a
 * PERMISSIVE port) and a cluster that originates it seal and open records below the relay,
 * as for every protocol. A TLS client is read through the session shell (it decrypts into
 * s->rbuf); a plain one is read here, into chunks queued by reference without a copy.
 * Kafka and ZooKeeper ports are relayed the same way; their bytes are also shown to a
 * passive decoder for request metrics (tcp_observe.h).
 *
 * A relay is one upstream connection that lives as long as its client's, so the cluster's
 * connectionPool.tcp.maxConnectionDuration and idleTimeout (tcp. or http.) close the pair:
 * after that long since the accept, or after that long with no byte relayed either way
 * (one timer per relay on the worker's wheel, tcp_limits_arm).
 */
#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/session.h"
#include "runtime/core/tls.h"
#include "runtime/core/upstream.h"
#include "runtime/core/worker.h"
#include "runtime/proxy/tcp/tcp_observe.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define TCP_MAX_QUEUED (1u << 20)
#define TCP_READ_ROOM 16384

struct mt_tsess;

/* One direction of the relay: what `from` said, queued for the other side. The queues are the
 * shells' own: the upstream's u->out (client to upstream) and the session's s->out (upstream
 * to client), so a TLS transport below either (core/tls.h) seals what is queued, and this
 * file never sees ciphertext. */
typedef struct tcp_dir {
    struct mt_tsess *t;
    mt_outq_t *q; /* NULL once the upstream is closing (client to upstream) */
    uv_shutdown_t sreq;
    bool reading;
    bool eof;  /* `from` said EOF */
    bool shut; /* `to` was shut down for writing */
} tcp_dir_t;

typedef struct mt_tsess {
    mt_session_t base; /* downstream handle first */
    mt_upstream_t *up; /* the shell's (it also times the connect), NULL until connecting and
                        * once it starts closing */
    tcp_dir_t d2u, u2d;
    mt_buf_t *rbuf; /* the client's read chunk (plain text read here, not through the shell) */
    mt_wcluster_t *cluster;
    mt_wendpoint_t *own_ep; /* a passthrough's endpoint, its original destination: freed with t */
    tcp_observer_t *obs;    /* Kafka / ZooKeeper metrics, or NULL: plain TCP */
    bool connected;
    /* The listener has TLS (terminated or PERMISSIVE): the client is read through the session
     * shell, which decrypts (or sniffs) into s->rbuf and hands it to tsess_on_data. A plain
     * listener's client is read here, straight into chunks the relay queues by reference. */
    bool via_shell;
    uint64_t relayed_ms;    /* loop time of the last bytes relayed either way (idleTimeout) */
    mt_timer_t limit_timer; /* maxConnectionDuration and idleTimeout, at the earlier */
    int open_handles; /* the client's and, from its on_open to its on_closed, the upstream's */
} mt_tsess_t;

typedef struct tcp_up {
    mt_upstream_t base; /* first: the shell allocates and frees it */
    mt_tsess_t *t;
} tcp_up_t;

static void tsess_close(mt_tsess_t *t)
{
    mt_session_close(&t->base); /* its ops: tsess_on_close, then tsess_close_handles */
}

static void tsess_handle_closed(uv_handle_t *h)
{
    mt_tsess_t *t = h->data;
    if (--t->open_handles > 0)
        return;
    mt_worker_t *w = t->base.w;
    if (t->rbuf)
        mt_buf_unref(&w->pool, t->rbuf);
    if (t->own_ep)
        mt_wendpoint_free(t->own_ep); /* its upstream connection is closed: nothing refers to it */
    tcp_observer_free(t->obs);
    mt_session_release(&t->base); /* the client's queue and TLS transport too */
    free(t);
}

/* The shell's close (mt_session_close) starts here: the upstream goes with the client. */
static void tsess_on_close(mt_session_t *s)
{
    mt_tsess_t *t = (mt_tsess_t *)s;
    mt_timer_stop(&s->w->timers, &t->limit_timer);
    if (t->up) {
        mt_upstream_t *u = t->up;
        t->up = NULL;
        t->d2u.q = NULL;
        mt_upstream_close(u); /* unschedules its queue; its on_closed counts the last handle */
    }
}

static void tsess_close_handles(mt_session_t *s)
{
    uv_close((uv_handle_t *)&s->tcp, tsess_handle_closed);
}

/* A plain client reads here; the upstream's reads through the shell (tcp_up_on_data). */
static void dir_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    MT_UNUSED(hint);
    mt_tsess_t *t = h->data;
    /* Everything read is queued by reference at once, so the unread part is always empty. */
    if (t->rbuf && mt_buf_room(t->rbuf) < 1024) {
        mt_buf_unref(&t->base.w->pool, t->rbuf);
        t->rbuf = NULL;
    }
    if (!t->rbuf)
        t->rbuf = mt_buf_get(&t->base.w->pool, TCP_READ_ROOM);
    if (!t->rbuf) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = t->rbuf->last;
    buf->len = mt_buf_room(t->rbuf);
}

static void dir_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void dir_pause(tcp_dir_t *d)
{
    mt_tsess_t *t = d->t;
    if (d->reading) {
        if (d == &t->u2d) {
            if (t->up)
                mt_upstream_read_stop(t->up);
        } else if (t->via_shell) {
            mt_session_pause(&t->base);
        } else {
            uv_read_stop((uv_stream_t *)&t->base.tcp);
        }
        d->reading = false;
    }
}

static void dir_resume(tcp_dir_t *d)
{
    mt_tsess_t *t = d->t;
    if (!d->reading && !d->eof && d->q && mt_outq_pending(d->q) < TCP_MAX_QUEUED / 4) {
        d->reading = true;
        if (d == &t->u2d) {
            if (t->up)
                mt_upstream_read_start(t->up);
        } else if (t->via_shell) {
            mt_session_resume(&t->base);
        } else {
            uv_read_start((uv_stream_t *)&t->base.tcp, dir_alloc, dir_on_read);
        }
    }
}

static void dir_shutdown_cb(uv_shutdown_t *req, int status)
{
    MT_UNUSED(status);
    mt_tsess_t *t = req->data;
    if (t->base.closing)
        return;
    if (t->d2u.shut && t->u2d.shut)
        tsess_close(t);
}

/* After `from` said EOF and everything queued reached `to`, half-close `to` (over TLS, a
 * close_notify first). */
static void dir_maybe_shutdown(mt_tsess_t *t, tcp_dir_t *d)
{
    if (!d->eof || d->shut || t->base.closing || !d->q || mt_outq_pending(d->q) > 0)
        return;
    if (d == &t->d2u && !t->connected)
        return;
    struct mt_tls *tls = d == &t->d2u ? t->up->tls : t->base.tls;
    uv_stream_t *to = d == &t->d2u ? (uv_stream_t *)&t->up->tcp : (uv_stream_t *)&t->base.tcp;
    d->shut = true;
    d->sreq.data = t;
    if (tls)
        mt_tls_shutdown(tls); /* written at once: the shutdown below waits for it */
    if (uv_shutdown(&d->sreq, to, dir_shutdown_cb) != 0)
        tsess_close(t);
}

static void dir_eof(mt_tsess_t *t, tcp_dir_t *d)
{
    d->eof = true;
    dir_pause(d);
    dir_maybe_shutdown(t, d);
}

/* n new bytes at p in b (all of b's unread part): queue them by reference for the other side. */
static void dir_relay(mt_tsess_t *t, tcp_dir_t *d, mt_buf_t *b, const char *p, size_t n)
{
    b->pos = b->last;
    t->relayed_ms = uv_now(&t->base.w->loop); /* idleTimeout: the loop's cached time */
    if (!d->q || mt_outq_add_ref(d->q, b, p, n) != 0) {
        tsess_close(t);
        return;
    }
    mt_worker_schedule_flush(t->base.w, d->q);
    if (mt_outq_pending(d->q) >= TCP_MAX_QUEUED)
        dir_pause(d);
}

static void dir_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    MT_UNUSED(buf);
    mt_tsess_t *t = st->data;
    tcp_dir_t *d = &t->d2u;
    if (nread == UV_EOF) {
        dir_eof(t, d);
        return;
    }
    if (nread < 0) {
        tsess_close(t);
        return;
    }
    if (nread == 0)
        return;
    mt_buf_t *b = t->rbuf;
    const char *p = b->last;
    b->last += nread;
    mt_session_count_received(&t->base, (uint64_t)nread);
    t->base.received_bytes += (uint64_t)nread;
    if (t->obs) {
        t->base.w->now_ns = uv_hrtime(); /* requests start at their read (plain TCP has none) */
        tcp_observe(t->obs, true, p, (size_t)nread);
    }
    dir_relay(t, d, b, p, (size_t)nread);
}

/* ---- the client through the shell (a TLS or PERMISSIVE listener) ---------------------------- */

/* Plaintext in s->rbuf (decrypted, or a PERMISSIVE port's plain text): relayed as read. */
static void tsess_on_data(mt_session_t *s)
{
    mt_tsess_t *t = (mt_tsess_t *)s;
    mt_buf_t *b = s->rbuf;
    size_t n = b ? mt_buf_unread(b) : 0;
    if (n == 0)
        return;
    t->base.received_bytes += n; /* the shell counted the Istio bytes */
    if (t->obs) /* a Kafka / ZooKeeper port behind TLS: its decoder sees the plaintext */
        tcp_observe(t->obs, true, b->pos, n);
    dir_relay(t, &t->d2u, b, b->pos, n);
}

/* EOF or close_notify: a half-close, passed on. The shell then marks the session finishing,
 * which closes nothing while the relay's one "request" is pending (tcp_accept). */
static bool tsess_on_eof(mt_session_t *s)
{
    mt_tsess_t *t = (mt_tsess_t *)s;
    dir_eof(t, &t->d2u);
    return false;
}

/* ---- write completions: the other direction may read again ---------------------------------- */

static void dir_written(tcp_dir_t *d, int status)
{
    mt_tsess_t *t = d->t;
    if (t->base.closing)
        return;
    if (status < 0) {
        tsess_close(t);
        return;
    }
    if (d == &t->u2d)
        mt_session_count_sent(&t->base);
    dir_resume(d);
    dir_maybe_shutdown(t, d);
}

static void client_written(mt_outq_t *q, int status)
{
    mt_session_t *s = MT_CONTAINER_OF(q, mt_session_t, out);
    dir_written(&((mt_tsess_t *)s)->u2d, status);
}

static void upstream_written(mt_outq_t *q, int status)
{
    mt_upstream_t *u = MT_CONTAINER_OF(q, mt_upstream_t, out);
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    if (t && !t->base.closing && t->up == u)
        dir_written(&t->d2u, status);
}

/* ---- the upstream, on the shell ---------------------------------------------------------- */

static int tcp_up_on_open(mt_upstream_t *u, void *arg)
{
    tcp_up_t *up = (tcp_up_t *)u;
    up->t = arg;
    up->t->open_handles++; /* on_closed follows every on_open */
    up->t->d2u.q = &u->out;
    u->out.on_done = upstream_written; /* over TLS too: the transport reports raw's as out's */
    return 0;
}

static void tcp_up_on_connected(mt_upstream_t *u)
{
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    if (t->base.closing)
        return;
    t->connected = true;   /* the shell flushes what the client sent meanwhile */
    t->u2d.reading = true; /* the shell started reading */
    dir_maybe_shutdown(t, &t->d2u);
}

static void tcp_up_on_data(mt_upstream_t *u)
{
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    mt_buf_t *b = u->rbuf;
    if (t->base.closing || !b || b->last == b->pos)
        return;
    if (t->obs)
        tcp_observe(t->obs, false, b->pos, (size_t)(b->last - b->pos));
    dir_relay(t, &t->u2d, b, b->pos, (size_t)(b->last - b->pos));
}

static void tcp_up_on_eof(mt_upstream_t *u)
{
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    if (!t->base.closing)
        dir_eof(t, &t->u2d);
}

static void tcp_up_on_error(mt_upstream_t *u, mt_upstream_event_t ev, const char *text)
{
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    if (t->base.closing)
        return;
    if (ev == MT_UPSTREAM_CONNECT_FAILED && u->error)
        mt_warn("listener %s: upstream %s unavailable: %s; closing the client", t->base.conf->name,
                t->cluster->conf->name, uv_strerror(u->error));
    else if (ev == MT_UPSTREAM_CONNECT_FAILED) /* the TLS handshake: the shell's text says why */
        mt_warn("listener %s: %s; closing the client", t->base.conf->name, text);
    else if (ev == MT_UPSTREAM_CONNECT_TIMEOUT)
        mt_warn("listener %s: upstream %s connect timed out after %u ms; closing the client",
                t->base.conf->name, t->cluster->conf->name, t->cluster->conf->connect_timeout_ms);
    else if (u->tls && text)
        mt_info("listener %s: %s; closing the client", t->base.conf->name, text);
    tsess_close(t);
}

static void tcp_up_on_closed(mt_upstream_t *u)
{
    /* The shell frees u; the session goes once the client's handle is closed too. */
    tsess_handle_closed((uv_handle_t *)&((tcp_up_t *)u)->t->base.tcp);
}

/* The shell logs nothing (the texts above are plain TCP's since it began), and every client's
 * connect is tried: the endpoint's backoff is Redis's and MetaProtocol's, for shared and
 * leased connections. */
static const mt_upstream_ops_t tcp_up_ops = {
    .protocol = MT_PROTO_TCP,
    .size = sizeof(tcp_up_t),
    .text_prefix = "",
    .quiet = true,
    .ignore_backoff = true,
    .on_open = tcp_up_on_open,
    .on_connected = tcp_up_on_connected,
    .on_data = tcp_up_on_data,
    .on_eof = tcp_up_on_eof,
    .on_error = tcp_up_on_error,
    .on_closed = tcp_up_on_closed,
};

/* Round robin over the resolved endpoints, skipping those outlier detection ejected unless
 * every resolved one is (then one is tried anyway: a client is better served by a try). */
static mt_wendpoint_t *tcp_pick(mt_wcluster_t *c)
{
    if (!c)
        return NULL;
    uint64_t now = mt_worker_now_ms(c->w);
    mt_wendpoint_t *fallback = NULL;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        mt_wendpoint_t *ep = c->eps[c->rr++ % c->n_eps];
        if (ep->resolve_error[0])
            continue;
        if (!mt_outlier_ejected(&c->conf->outlier, ep->conf_index, now))
            return ep;
        if (!fallback)
            fallback = ep;
    }
    return fallback;
}

/* A capture port's passthrough (runtime/proxy/capture): a cluster without endpoints, each
 * session relayed to the original destination it was redirected from. */
static mt_wendpoint_t *tcp_passthrough_endpoint(mt_wcluster_t *c,
                                                const struct sockaddr_storage *dst)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (dst->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)dst;
        uv_ip6_name(in6, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
    } else {
        const struct sockaddr_in *in = (const struct sockaddr_in *)dst;
        uv_ip4_name(in, ip, sizeof(ip));
        port = ntohs(in->sin_port);
    }
    return mt_wendpoint_new(c, ip, port, dst, NULL);
}

/* ---- connectionPool.tcp.maxConnectionDuration and idleTimeout ------------------------------ */

static void tcp_limits_fire(mt_timer_t *tm);

/* (Re)arms the relay's timer at the earlier of its two deadlines; none set: no timer. */
static void tcp_limits_arm(mt_tsess_t *t)
{
    const mt_cluster_conf_t *cc = t->cluster->conf;
    uint64_t due = UINT64_MAX;
    if (cc->max_connection_duration_ms)
        due = t->base.accepted_ms + cc->max_connection_duration_ms;
    if (cc->idle_timeout_ms)
        due = MT_MIN(due, t->relayed_ms + cc->idle_timeout_ms);
    if (due != UINT64_MAX)
        mt_timer_start_at(&t->base.w->timers, &t->limit_timer, due, tcp_limits_fire);
}

/* Closes the pair when a deadline is reached, counted on the cluster; bytes relayed since the
 * timer was armed moved the idle deadline on, so it re-arms for the rest instead. */
static void tcp_limits_fire(mt_timer_t *tm)
{
    mt_tsess_t *t = MT_CONTAINER_OF(tm, mt_tsess_t, limit_timer);
    const mt_cluster_conf_t *cc = t->cluster->conf;
    mt_worker_t *w = t->base.w;
    uint64_t now = uv_now(&w->loop);
    if (t->base.closing)
        return;
    if (cc->max_connection_duration_ms &&
        now - t->base.accepted_ms >= cc->max_connection_duration_ms) {
        mt_debug("listener %s: closing a relay to %s after %u ms "
                 "(connectionPool.tcp.maxConnectionDuration)",
                 t->base.conf->name, cc->name, cc->max_connection_duration_ms);
        mt_stat_add(cc->stats, w->id, MT_ST_UPSTREAM_CX_MAX_DURATION, 1);
        tsess_close(t);
        return;
    }
    if (cc->idle_timeout_ms && now - t->relayed_ms >= cc->idle_timeout_ms) {
        mt_debug("listener %s: closing a relay to %s idle for %u ms (connectionPool idleTimeout)",
                 t->base.conf->name, cc->name, cc->idle_timeout_ms);
        mt_stat_add(cc->stats, w->id, MT_ST_UPSTREAM_CX_IDLE_TIMEOUT, 1);
        tsess_close(t);
        return;
    }
    tcp_limits_arm(t);
}

static void tsess_drain(mt_session_t *base)
{
    /* Plain TCP has no request boundary: the connection runs until it ends or the drain
     * timeout closes it. */
    (void)base;
}

/* The shell gives the accept, the release and the close; a TLS (or PERMISSIVE) client is
 * also read by it (on_data, on_eof). The relay's reading, writing and half-closes are this
 * file's own (two sockets, no frames). */
static const mt_session_ops_t tsess_ops = {
    .on_data = tsess_on_data,
    .on_close = tsess_on_close,
    .drain = tsess_drain,
    .on_eof = tsess_on_eof,
    .close = tsess_close_handles,
};

static void tcp_accept(mt_wlistener_t *l, uv_stream_t *server)
{
    mt_worker_t *w = l->w;
    mt_tsess_t *t = calloc(1, sizeof(*t));
    if (!t)
        return;
    if (mt_session_accept(&t->base, l, server, &tsess_ops) != 0)
        return;
    t->cluster = l->cluster;
    t->open_handles = 1;
    t->obs = tcp_observer_new(w, t->base.conf);
    t->via_shell = l->conf->tls != NULL;
    t->d2u.t = t->u2d.t = t;
    /* The relay is one request that lasts the connection: the shell's finish after a client's
     * EOF (tsess_on_eof) then waits for it, and the relay closes when both sides are done. */
    t->base.pending = 1;
    t->base.out.on_done = client_written; /* over TLS too: raw's completions are reported */
    t->u2d.q = &t->base.out;
    mt_wendpoint_t *ep = tcp_pick(t->cluster);
    if (!ep && l->w->handoff && !l->conf->sni_of && t->cluster && t->cluster->n_eps == 0)
        ep = t->own_ep = tcp_passthrough_endpoint(t->cluster, &l->w->handoff->dst);
    if (!ep) {
        mt_warn("listener %s: no upstream host; closing the client", l->conf->name);
        tsess_close(t);
        return;
    }
    /* connectionPool.tcp.maxConnections: relays open to the cluster on this worker (each is
     * one upstream connection); the client over the bound is refused, counted. */
    uint32_t max = t->cluster ? t->cluster->conf->max_connections_set : 0;
    if (max && t->cluster->n_rups >= max) {
        mt_stat_add(t->cluster->conf->stats, w->id, MT_ST_UPSTREAM_CX_OVERFLOW, 1);
        mt_debug("listener %s: cluster %s has %u upstream connections on this worker "
                 "(connectionPool.tcp.maxConnections): closing the client",
                 l->conf->name, t->cluster->conf->name, max);
        tsess_close(t);
        return;
    }
    const char *why = NULL;
    t->up = mt_upstream_connect(ep, &tcp_up_ops, t, &why);
    if (!t->up) {
        t->d2u.q = NULL; /* on_open may have pointed it at the connection that is closing */
        tsess_close(t);
        return;
    }
    t->relayed_ms = t->base.accepted_ms;
    tcp_limits_arm(t);
    dir_resume(&t->d2u);
}

/* The loop is stopping (a drain that timed out: plain TCP never finishes by itself): close
 * every relay of this worker, so that the close callbacks that follow free them. */
static void tcp_worker_stop(mt_worker_t *w)
{
    mt_session_link_t *next;
    for (mt_session_link_t *l = w->sessions; l; l = next) {
        next = l->next;
        mt_session_t *s = mt_session_of_link(l);
        if (s->ops == &tsess_ops)
            tsess_close((mt_tsess_t *)s);
    }
}

const mt_proxy_ops_t mt_proxy_tcp = {
    .name = "tcp",
    .protocol = MT_PROTO_TCP,
    .accept = tcp_accept,
    .worker_stop = tcp_worker_stop,
};
