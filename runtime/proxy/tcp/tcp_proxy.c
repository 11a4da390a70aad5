/*
 * tcp_proxy.c - plain TCP proxying for ports whose name selects no known protocol: one
 * upstream connection per client, bytes relayed both ways without copying (read chunks are
 * queued by reference), half-closes passed through, and each direction paused while the
 * other side has more than TCP_MAX_QUEUED bytes waiting. The upstream connection is the
 * upstream shell's (core/upstream.h), a dedicated one per client (mt_upstream_connect): the
 * shell creates, connects, reads and closes the socket; this file relays.
 *
 * Kafka and ZooKeeper ports are relayed the same way; their bytes are also shown to a
 * passive decoder for request metrics (tcp_observe.h).
 */
#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/session.h"
#include "runtime/core/upstream.h"
#include "runtime/core/worker.h"
#include "runtime/proxy/tcp/tcp_observe.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define TCP_MAX_QUEUED (1u << 20)
#define TCP_READ_ROOM 16384

struct mt_tsess;

typedef struct tcp_dir {
    struct mt_tsess *t;
    uv_tcp_t *from;
    uv_tcp_t *to;
    mt_buf_t *rbuf;
    mt_outq_t out; /* bytes read from `from`, to be written to `to` */
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
    mt_wcluster_t *cluster;
    mt_wendpoint_t *own_ep; /* a passthrough's endpoint, its original destination: freed with t */
    tcp_observer_t *obs;    /* Kafka / ZooKeeper metrics, or NULL: plain TCP */
    bool connected;
    bool closing;
    int open_handles; /* the client's and, from its on_open to its on_closed, the upstream's */
} mt_tsess_t;

typedef struct tcp_up {
    mt_upstream_t base; /* first: the shell allocates and frees it */
    mt_tsess_t *t;
} tcp_up_t;

static void tsess_close(mt_tsess_t *t);

static void tsess_handle_closed(uv_handle_t *h)
{
    mt_tsess_t *t = h->data;
    if (--t->open_handles > 0)
        return;
    mt_worker_t *w = t->base.w;
    mt_outq_reset(&t->d2u.out);
    mt_session_count_sent_from(&t->base, &t->u2d.out);
    mt_outq_reset(&t->u2d.out);
    if (t->d2u.rbuf)
        mt_buf_unref(&w->pool, t->d2u.rbuf);
    if (t->own_ep)
        mt_wendpoint_free(t->own_ep); /* its upstream connection is closed: nothing refers to it */
    tcp_observer_free(t->obs);
    mt_session_release(&t->base);
    free(t);
}

static void tsess_close(mt_tsess_t *t)
{
    if (t->closing)
        return;
    t->closing = true;
    mt_worker_unschedule_flush(t->base.w, &t->d2u.out);
    mt_worker_unschedule_flush(t->base.w, &t->u2d.out);
    uv_close((uv_handle_t *)&t->base.tcp, tsess_handle_closed);
    if (t->up) {
        mt_upstream_t *u = t->up;
        t->up = NULL;
        mt_upstream_close(u); /* its on_closed counts the last handle down */
    }
}

/* The client's direction reads here; the upstream's reads through the shell (tcp_up_on_data). */
static void dir_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    mt_tsess_t *t = h->data;
    tcp_dir_t *d = &t->d2u;
    /* Everything read is queued by reference at once, so the unread part is always empty. */
    if (d->rbuf && mt_buf_room(d->rbuf) < 1024) {
        mt_buf_unref(&t->base.w->pool, d->rbuf);
        d->rbuf = NULL;
    }
    if (!d->rbuf)
        d->rbuf = mt_buf_get(&t->base.w->pool, TCP_READ_ROOM);
    if (!d->rbuf) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = d->rbuf->last;
    buf->len = mt_buf_room(d->rbuf);
}

static void dir_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void dir_pause(tcp_dir_t *d)
{
    if (d->reading) {
        if (d != &d->t->u2d)
            uv_read_stop((uv_stream_t *)d->from);
        else if (d->t->up)
            mt_upstream_read_stop(d->t->up);
        d->reading = false;
    }
}

static void dir_resume(tcp_dir_t *d)
{
    if (!d->reading && !d->eof && mt_outq_pending(&d->out) < TCP_MAX_QUEUED / 4) {
        d->reading = true;
        if (d != &d->t->u2d)
            uv_read_start((uv_stream_t *)d->from, dir_alloc, dir_on_read);
        else if (d->t->up)
            mt_upstream_read_start(d->t->up);
    }
}

static void dir_shutdown_cb(uv_shutdown_t *req, int status)
{
    mt_tsess_t *t = req->data;
    if (t->closing)
        return;
    if (t->d2u.shut && t->u2d.shut)
        tsess_close(t);
}

/* After `from` said EOF and everything queued reached `to`, half-close `to`. */
static void dir_maybe_shutdown(mt_tsess_t *t, tcp_dir_t *d)
{
    if (!d->eof || d->shut || mt_outq_pending(&d->out) > 0 || t->closing)
        return;
    if (d == &t->d2u && !t->connected)
        return;
    d->shut = true;
    d->sreq.data = t;
    if (uv_shutdown(&d->sreq, (uv_stream_t *)d->to, dir_shutdown_cb) != 0)
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
    if (mt_outq_add_ref(&d->out, b, p, n) != 0) {
        tsess_close(t);
        return;
    }
    mt_worker_schedule_flush(t->base.w, &d->out);
    if (mt_outq_pending(&d->out) >= TCP_MAX_QUEUED)
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
    mt_buf_t *b = d->rbuf;
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

static void dir_on_write_done(mt_outq_t *q, int status)
{
    tcp_dir_t *d = MT_CONTAINER_OF(q, tcp_dir_t, out);
    mt_tsess_t *t = d->t;
    if (t->closing)
        return;
    if (status < 0) {
        tsess_close(t);
        return;
    }
    if (d == &t->u2d)
        mt_session_count_sent_from(&t->base, &d->out);
    dir_resume(d);
    dir_maybe_shutdown(t, d);
}

/* ---- the upstream, on the shell ---------------------------------------------------------- */

static int tcp_up_on_open(mt_upstream_t *u, void *arg)
{
    tcp_up_t *up = (tcp_up_t *)u;
    up->t = arg;
    up->t->open_handles++; /* on_closed follows every on_open */
    return 0;
}

static void tcp_up_on_connected(mt_upstream_t *u)
{
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    if (t->closing)
        return;
    mt_worker_t *w = t->base.w;
    t->connected = true;
    t->d2u.out.stream = (uv_stream_t *)&u->tcp;
    mt_worker_schedule_flush(w, &t->d2u.out);
    t->u2d.reading = true; /* the shell started reading */
    dir_maybe_shutdown(t, &t->d2u);
}

static void tcp_up_on_data(mt_upstream_t *u)
{
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    mt_buf_t *b = u->rbuf;
    if (t->closing || b->last == b->pos)
        return;
    if (t->obs)
        tcp_observe(t->obs, false, b->pos, (size_t)(b->last - b->pos));
    dir_relay(t, &t->u2d, b, b->pos, (size_t)(b->last - b->pos));
}

static void tcp_up_on_eof(mt_upstream_t *u)
{
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    if (!t->closing)
        dir_eof(t, &t->u2d);
}

static void tcp_up_on_error(mt_upstream_t *u, mt_upstream_event_t ev, const char *text)
{
    MT_UNUSED(text);
    mt_tsess_t *t = ((tcp_up_t *)u)->t;
    if (t->closing)
        return;
    if (ev == MT_UPSTREAM_CONNECT_FAILED)
        mt_warn("listener %s: upstream %s unavailable: %s; closing the client", t->base.conf->name,
                t->cluster->conf->name, uv_strerror(u->error));
    else if (ev == MT_UPSTREAM_CONNECT_TIMEOUT)
        mt_warn("listener %s: upstream %s connect timed out after %u ms; closing the client",
                t->base.conf->name, t->cluster->conf->name, t->cluster->conf->connect_timeout_ms);
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

static void tsess_drain(mt_session_t *base)
{
    /* Plain TCP has no request boundary: the connection runs until it ends or the drain
     * timeout closes it. */
    (void)base;
}

/* The shell gives the accept and the release; both directions' reading, writing and
 * closing are this file's own (two sockets, no frames). */
static const mt_session_ops_t tsess_ops = {.drain = tsess_drain};

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
    t->d2u.t = t->u2d.t = t;
    t->d2u.from = &t->base.tcp;
    t->u2d.to = &t->base.tcp;
    mt_outq_init(&t->d2u.out, &w->pool, dir_on_write_done);
    mt_outq_init(&t->u2d.out, &w->pool, dir_on_write_done);
    t->u2d.out.stream = (uv_stream_t *)&t->base.tcp;
    mt_wendpoint_t *ep = tcp_pick(t->cluster);
    if (!ep && w->handoff && t->cluster && t->cluster->n_eps == 0)
        ep = t->own_ep = tcp_passthrough_endpoint(t->cluster, &w->handoff->dst);
    if (!ep) {
        mt_warn("listener %s: no upstream host; closing the client", l->conf->name);
        tsess_close(t);
        return;
    }
    const char *why = NULL;
    t->up = mt_upstream_connect(ep, &tcp_up_ops, t, &why);
    if (!t->up) {
        tsess_close(t);
        return;
    }
    t->d2u.to = &t->up->tcp;
    t->u2d.from = &t->up->tcp;
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
