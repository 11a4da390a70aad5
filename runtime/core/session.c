/*
 * session.c - the client shell (session.h): accept, read, backpressure, finish, close.
 * The proxy sees bytes through ops->on_data and hands replies to s->out; everything about
 * the socket's life is here, once for every protocol.
 */
#include "runtime/core/session.h"

#include "runtime/core/log.h"
#include "runtime/core/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_MIN_ROOM 4096

uint32_t mt_session_tls_handshake_ms = MT_SESSION_TLS_HANDSHAKE_MS_DEFAULT;

static void session_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void session_on_write_done(mt_outq_t *q, int status);
static bool session_handshaking(const mt_session_t *s);
static void session_timeout_arm(mt_session_t *s);
static void session_eof(mt_session_t *s);

/* The TLS transport for s (its output queue is initialised first: it is sealed into it). */
static int session_tls_start(mt_session_t *s)
{
    char err[256];
    mt_outq_init(&s->out, &s->w->pool, session_on_write_done);
    s->tls = mt_tls_new(s->conf->tls, s->w->id, &s->out, &s->w->pool, NULL, err, sizeof(err));
    if (!s->tls) {
        mt_warn("listener %s: TLS: %s; closing the client", s->conf->name, err);
        return -1;
    }
    s->tls->raw.stream = (uv_stream_t *)&s->tcp;
    return 0;
}

static void session_on_write_done(mt_outq_t *q, int status)
{
    mt_session_t *s = MT_CONTAINER_OF(q, mt_session_t, out);
    if (s->closing)
        return;
    if (status < 0) {
        mt_session_close(s);
        return;
    }
    s->active_ms = uv_now(&s->w->loop); /* idle timeouts: written to is not idle */
    mt_session_count_sent(s);
    if (s->finishing)
        mt_session_maybe_finish(s);
    else
        mt_session_resume(s);
}

void mt_session_count_sent_from(mt_session_t *s, const mt_outq_t *q)
{
    if (q->written_bytes > s->sent_counted && s->istio_tcp) {
        s->istio_tcp->tcp[s->w->id].sent += q->written_bytes - s->sent_counted;
        s->sent_counted = q->written_bytes;
    }
}

mt_istio_set_t *mt_session_istio_slow(mt_session_t *s, const mt_cluster_conf_t *dest)
{
    mt_listener_conf_t *l = s->conf;
    mt_istio_set_t *set =
        mt_istio_set(l->name, l->istio_codes, dest ? dest->name : NULL,
                     dest ? (dest->service ? dest->service : dest->name) : NULL, NULL);
    uint32_t i = dest ? dest->index + 1 : 0;
    /* cached only for the listener's own snapshot's clusters (a session between two
     * snapshots may send to a cluster of the other: rare, and looked up each time) */
    if (i < l->n_istio && (!dest || &s->snap->clusters[dest->index] == dest))
        __atomic_store_n(&l->istio[i], set, __ATOMIC_RELEASE);
    return set;
}

mt_istio_set_t *mt_session_istio_peer(mt_session_t *s, const mt_cluster_conf_t *dest)
{
    const char *p = mt_session_principal(s);
    char principal[512];
    if (p)
        snprintf(principal, sizeof(principal), "spiffe://%s", p);
    mt_istio_set_t *set =
        mt_istio_set_peer(s->conf->istio_codes, dest ? dest->name : NULL,
                          dest ? (dest->service ? dest->service : dest->name) : NULL, NULL,
                          p ? principal : NULL, mt_session_security_policy(s));
    s->istio_peer = set;
    s->istio_peer_dest = dest;
    return set;
}

/* A TLS listener's client is known (handshake done, or PERMISSIVE's plain text): its
 * connection counts from now, in the set that names it. */
static void session_istio_identified(mt_session_t *s)
{
    if (s->istio_tcp)
        return;
    s->istio_tcp = mt_session_istio_peer(s, s->cluster ? s->cluster->conf : NULL);
    s->istio_tcp->tcp[s->w->id].opened++;
}

/* ---- the access log ------------------------------------------------------------------------ */

static const char *session_peer_text(mt_session_t *s)
{
    if (!s->peer_text) {
        char peer[INET6_ADDRSTRLEN + 8];
        s->peer_text = strdup(mt_session_peer(s, peer, sizeof(peer)));
    }
    return s->peer_text;
}

void mt_session_access_log(mt_session_t *s, const mt_request_end_t *e, const mt_istio_set_t *set)
{
    const mt_cluster_conf_t *d = e->dest;
    mt_alog_entry_t le = {
        .start_ns = e->start_ns,
        .end_ns = s->w->now_ns,
        .listener = s->conf->name,
        .protocol = set->codes ? set->codes->protocol : "tcp",
        .peer = session_peer_text(s),
        .upstream_addr = e->ep ? e->ep->address : NULL,
        .upstream_addr_len = e->ep ? strnlen(e->ep->address, sizeof(e->ep->address)) : 0,
        .upstream_port = e->ep ? e->ep->port : 0,
        .cluster = d ? d->name : NULL,
        .service = d && d->service ? d->service : s->conf->service,
        .route = e->route,
        .subset = e->subset,
        .op = e->op,
        .op_len = e->op_len,
        .code = set->codes ? mt_istio_code_name(set->codes, e->code) : NULL,
        .flags = e->flags,
        .bytes_in = e->req_bytes,
        .bytes_out = e->resp_bytes,
        .connection_id = s->id,
        .trace_id = e->trace_id,
        .stream_end = e->stream_end,
        .frames_in = e->frames_in,
        .frames_out = e->frames_out,
    };
    mt_alog_write(s->snap->access_log, &s->w->alog, &le);
}

/* Plain TCP has no requests: its line is the connection's, written when it closes. */
static void session_access_log_connection(mt_session_t *s)
{
    const mt_alog_conf_t *al = s->snap->access_log;
    if (!al || s->conf->istio_codes || !mt_alog_sampled(al, &s->w->alog))
        return;
    uint64_t received = s->received_bytes;
    mt_alog_entry_t le = {
        .start_ns = s->accepted_ns,
        .end_ns = uv_hrtime(),
        .listener = s->conf->name,
        .protocol = "tcp",
        .peer = session_peer_text(s),
        .cluster = s->cluster ? s->cluster->conf->name : NULL,
        .service = s->conf->service,
        .bytes_in = received,
        .bytes_out = s->sent_counted,
        .connection_id = s->id,
    };
    mt_alog_write(al, &s->w->alog, &le);
}

static void session_drain(mt_session_link_t *l)
{
    mt_session_t *s = mt_session_of_link(l);
    if (s->ops->drain)
        s->ops->drain(s);
    else
        mt_session_finish(s);
}

/* 1-based index of conf in snap->listeners; 0 for a listener outside the snapshot (the
 * capture ports' PassthroughCluster). */
static uint32_t session_listener_index(const mt_snapshot_t *snap, const mt_listener_conf_t *conf)
{
    uintptr_t first = (uintptr_t)snap->listeners, p = (uintptr_t)conf;
    if (p < first || p >= (uintptr_t)(snap->listeners + snap->n_listeners))
        return 0;
    return (uint32_t)((p - first) / sizeof(*conf)) + 1;
}

int mt_session_accept(mt_session_t *s, mt_wlistener_t *l, uv_stream_t *server,
                      const mt_session_ops_t *ops)
{
    mt_worker_t *w = l->w;
    uv_tcp_init(&w->loop, &s->tcp);
    s->tcp.data = s;
    /* server NULL: a capture port accepted the socket already (worker.h, mt_handoff_t). */
    int rc = UV_EINVAL;
    if (server)
        rc = uv_accept(server, (uv_stream_t *)&s->tcp);
    else if (w->handoff && w->handoff->fd >= 0 && (rc = uv_tcp_open(&s->tcp, w->handoff->fd)) == 0)
        w->handoff->fd = -1;
    if (rc != 0) {
        uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
        return -1;
    }
    s->w = w;
    s->lst = l;
    s->conf = l->conf;
    if (l->conf->tls && !l->conf->tls->permissive && session_tls_start(s) != 0) {
        uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
        return -1;
    }
    s->sniffing = l->conf->tls && l->conf->tls->permissive;
    s->snap = mt_snapshot_ref(w->snap);
    s->cluster = l->cluster;
    mt_wcluster_ref(l->cluster);
    s->li = session_listener_index(w->snap, l->conf);
    s->ops = ops;
    s->id = w->next_client_id++;
    s->max_output = MT_SESSION_MAX_OUTPUT;
    s->accepted_ms = s->active_ms = mt_worker_now_ms(w);
    s->accepted_ns = w->now_ns;
    if (!s->tls)
        mt_outq_init(&s->out, &w->pool, session_on_write_done);
    s->out.lend_slices = true; /* an idle client holds no slice array */
    s->out.stream = (uv_stream_t *)&s->tcp;
    s->link.drain = session_drain;
    mt_worker_session_add(w, &s->link);
    int salen = sizeof(s->peer_sa);
    if (uv_tcp_getpeername(&s->tcp, &s->peer_sa.sa, &salen) != 0 || salen > (int)sizeof(s->peer_sa))
        s->peer_sa.sa.sa_family = AF_UNSPEC; /* (a longer address was cut short: not ours) */
    mt_stat_add(l->conf->stats, w->id, MT_ST_DOWNSTREAM_CX_TOTAL, 1);
    mt_stat_add(l->conf->stats, w->id, MT_ST_DOWNSTREAM_CX_ACTIVE, 1);
    if (!l->conf->tls) {
        s->istio_tcp = mt_session_istio_slow(s, l->cluster ? l->cluster->conf : NULL);
        s->istio_tcp->tcp[w->id].opened++;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    if (session_handshaking(s))
        session_timeout_arm(s);
    return 0;
}

static void session_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    mt_session_t *s = h->data;
    if (s->tls) { /* ciphertext: fed to the SSL at once, decrypted into s->rbuf */
        buf->base = mt_tls_scratch();
        buf->len = MT_TLS_SCRATCH;
        return;
    }
    if (mt_buf_make_room(&s->w->pool, &s->rbuf, READ_MIN_ROOM, 0) != 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = s->rbuf->last;
    buf->len = mt_buf_room(s->rbuf);
}

void mt_session_pause(mt_session_t *s)
{
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

void mt_session_resume(mt_session_t *s)
{
    if (s->reading || s->closing || s->finishing || s->held)
        return;
    if (s->pending > MT_SESSION_MAX_PENDING / 2 || mt_outq_pending(&s->out) > s->max_output / 2)
        return;
    s->reading = true;
    uv_read_start((uv_stream_t *)&s->tcp, session_alloc, session_on_read);
}

void mt_session_check_bounds(mt_session_t *s)
{
    if (s->pending >= MT_SESSION_MAX_PENDING || mt_outq_pending(&s->out) >= s->max_output)
        mt_session_pause(s);
}

void mt_session_maybe_finish(mt_session_t *s)
{
    if (s->finishing && !s->closing && s->pending == 0 && mt_outq_pending(&s->out) == 0)
        mt_session_close(s);
}

void mt_session_finish(mt_session_t *s)
{
    s->finishing = true;
    mt_session_pause(s);
    mt_session_maybe_finish(s);
}

void mt_session_release(mt_session_t *s)
{
    mt_worker_t *w = s->w;
    mt_timer_stop(&w->timers, &s->timeout_timer);
    mt_outq_reset(&s->out);
    if (s->rbuf)
        mt_buf_unref(&w->pool, s->rbuf);
    mt_stat_add(s->conf->stats, w->id, MT_ST_DOWNSTREAM_CX_ACTIVE, -1);
    mt_session_count_sent(s);
    if (s->istio_tcp) /* a TLS client that never finished its handshake was never counted */
        s->istio_tcp->tcp[w->id].closed++;
    session_access_log_connection(s);
    free(s->peer_text);
    s->peer_text = NULL;
    mt_wcluster_unref(s->cluster);
    mt_snapshot_unref(s->snap);
    mt_worker_session_remove(w, &s->link);
    mt_tls_free(s->tls); /* raw's write callbacks have run: the handle is closed */
    s->tls = NULL;
}

static void session_closed(uv_handle_t *h)
{
    mt_session_t *s = h->data;
    if (s->ops->on_closed)
        s->ops->on_closed(s);
    mt_session_release(s);
    free(s);
}

void mt_session_close(mt_session_t *s)
{
    if (s->closing)
        return;
    s->closing = true;
    mt_session_pause(s);
    if (s->ops->on_close)
        s->ops->on_close(s);
    s->pending = 0;
    mt_timer_stop(&s->w->timers, &s->timeout_timer);
    mt_worker_unschedule_flush(s->w, &s->out);
    if (s->tls)
        mt_tls_shutdown(s->tls); /* best effort: the close cancels what has not left */
    if (s->ops->close)
        s->ops->close(s);
    else
        uv_close((uv_handle_t *)&s->tcp, session_closed);
}

/* ---- TLS in ---------------------------------------------------------------------------------- */

static void session_tls_failed(mt_session_t *s, const char *why)
{
    char peer[INET6_ADDRSTRLEN + 8];
    mt_warn("listener %s: closing %s: %s", s->conf->name, mt_session_peer(s, peer, sizeof(peer)),
            why);
    mt_stat_add(s->conf->stats, s->w->id, MT_ST_TLS_HANDSHAKE_FAILURES, 1);
    mt_session_close(s);
}

/* Ciphertext read from the client: the handshake moves on, plaintext goes to s->rbuf.
 * Returns the plaintext bytes added, or -1 when s is closing; *eof on close_notify. */
static long session_tls_in(mt_session_t *s, const char *p, size_t n, bool *eof)
{
    mt_tls_t *t = s->tls;
    if (mt_tls_feed(t, p, n) != 0) {
        session_tls_failed(s, t->error);
        return -1;
    }
    if (!t->handshake_done) {
        int r = mt_tls_handshake(t);
        if (r < 0) {
            session_tls_failed(s, t->error);
            return -1;
        }
        if (r == 0)
            return 0;
        char peer[INET6_ADDRSTRLEN + 8];
        mt_debug("listener %s: TLS from %s: %s%s%s", s->conf->name,
                 mt_session_peer(s, peer, sizeof(peer)), mt_tls_security_policy(t),
                 t->principal ? ", principal " : "", t->principal ? t->principal : "");
        if (s->out.n > 0)
            mt_worker_schedule_flush(s->w, &s->out); /* queued while the handshake ran */
        session_istio_identified(s);
    }
    size_t got;
    int rc = mt_tls_read_all(t, &s->w->pool, &s->rbuf, READ_MIN_ROOM, &got);
    if (rc == -1) {
        char peer[INET6_ADDRSTRLEN + 8];
        mt_info("listener %s: closing %s: %s", s->conf->name,
                mt_session_peer(s, peer, sizeof(peer)), t->error);
        mt_session_close(s);
        return -1;
    }
    *eof = rc == MT_TLS_EOF;
    return (long)got;
}

/* PERMISSIVE: the first bytes read (plain, in s->rbuf) decide. A ClientHello moves them into
 * a TLS transport; anything else stays plain text. Returns 0 to go on as plain, 1 when the
 * read is handled (more bytes needed, TLS started, or closing). */
static int session_sniff(mt_session_t *s)
{
    mt_buf_t *b = s->rbuf;
    int r = mt_tls_sniff((const unsigned char *)b->pos, mt_buf_unread(b));
    if (r < 0)
        return 1;
    s->sniffing = false;
    if (r == 0) {
        session_istio_identified(s);
        return 0;
    }
    if (session_tls_start(s) != 0) {
        mt_session_close(s);
        return 1;
    }
    size_t n = mt_buf_unread(b);
    char *copy = mt_tls_scratch(); /* the read chunk becomes the plaintext buffer */
    memcpy(copy, b->pos, n);
    b->pos = b->last = b->data;
    bool eof = false;
    long got = session_tls_in(s, copy, n, &eof);
    if (got > 0 && !s->finishing)
        s->ops->on_data(s);
    if (got >= 0 && eof)
        session_eof(s);
    return 1;
}

/* The client said EOF (a TCP FIN, or a TLS close_notify): the proxy decides (ops->on_eof). */
static void session_eof(mt_session_t *s)
{
    if (s->closing)
        return;
    if (s->ops->on_eof && s->ops->on_eof(s))
        mt_session_close(s);
    else
        mt_session_finish(s);
}

static void session_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    mt_session_t *s = st->data;
    if (nread < 0) {
        if (nread == UV_EOF)
            session_eof(s);
        else
            mt_session_close(s);
        return;
    }
    if (nread == 0)
        return;
    s->active_ms = uv_now(&s->w->loop); /* idle timeouts: the loop's cached time */
    mt_worker_clock(s->w);
    bool eof = false;
    if (s->tls) { /* the byte counters count plaintext, as for what is sent */
        long got = session_tls_in(s, buf->base, (size_t)nread, &eof);
        if (got < 0)
            return; /* closing */
        mt_session_count_received(s, (uint64_t)got);
        if (got > 0 && !s->finishing)
            s->ops->on_data(s);
    } else {
        s->rbuf->last += nread;
        if (s->sniffing) {
            int r = session_sniff(s);
            if (r != 0)
                return; /* waiting for more, closing, or switched to TLS (which called on_data) */
        }
        mt_session_count_received(s, (uint64_t)nread);
        if (!s->finishing)
            s->ops->on_data(s);
    }
    mt_buf_t *b = s->rbuf;
    if (b && b->pos == b->last && !s->closing) {
        /* Nothing unread: give the chunk back (it stays alive while slices reference it). */
        mt_buf_unref(&s->w->pool, b);
        s->rbuf = NULL;
    }
    mt_session_check_bounds(s);
    if (eof)
        session_eof(s);
    mt_session_maybe_finish(s);
}

/* ---- auth and idle timeouts ---------------------------------------------------------------- */

static void session_on_timeout(mt_timer_t *t);

/* A TLS client that has not finished its handshake, or a PERMISSIVE one that sent nothing. */
static bool session_handshaking(const mt_session_t *s)
{
    return s->sniffing || (s->tls && !s->tls->handshake_done);
}

static void session_timeout_arm(mt_session_t *s)
{
    uint64_t due = UINT64_MAX;
    if (session_handshaking(s))
        due = s->accepted_ms + mt_session_tls_handshake_ms;
    if (s->auth_timeout_ms)
        due = s->accepted_ms + s->auth_timeout_ms;
    if (s->idle_timeout_ms)
        due = MT_MIN(due, s->active_ms + s->idle_timeout_ms);
    if (due == UINT64_MAX)
        mt_timer_stop(&s->w->timers, &s->timeout_timer);
    else if (!mt_timer_pending(&s->timeout_timer) || s->timeout_timer.due_ms != due)
        mt_timer_start_at(&s->w->timers, &s->timeout_timer, due, session_on_timeout);
}

/* Fires at the earlier deadline; reads moved active_ms on meanwhile, so it re-arms for the
 * rest instead of being restarted on every read. */
static void session_on_timeout(mt_timer_t *t)
{
    mt_session_t *s = MT_CONTAINER_OF(t, mt_session_t, timeout_timer);
    uint64_t now = uv_now(&s->w->loop);
    char peer[INET6_ADDRSTRLEN + 8];
    if (s->closing)
        return;
    if (session_handshaking(s) && now - s->accepted_ms >= mt_session_tls_handshake_ms) {
        mt_info("listener %s: closing %s: TLS handshake not done after %u ms", s->conf->name,
                mt_session_peer(s, peer, sizeof(peer)), mt_session_tls_handshake_ms);
        mt_stat_add(s->conf->stats, s->w->id, MT_ST_TLS_HANDSHAKE_FAILURES, 1);
        mt_session_close(s);
        return;
    }
    if (s->auth_timeout_ms && now - s->accepted_ms >= s->auth_timeout_ms) {
        mt_info("listener %s: closing %s: not authenticated after %u ms", s->conf->name,
                mt_session_peer(s, peer, sizeof(peer)), s->auth_timeout_ms);
        mt_stat_add(s->conf->stats, s->w->id, MT_ST_AUTH_TIMEOUTS, 1);
        mt_session_close(s);
        return;
    }
    if (s->idle_timeout_ms) {
        if (s->pending || mt_outq_pending(&s->out)) { /* working, not idle */
            s->active_ms = now;
        } else if (now - s->active_ms >= s->idle_timeout_ms) {
            mt_debug("listener %s: closing %s: idle for %u ms", s->conf->name,
                     mt_session_peer(s, peer, sizeof(peer)), s->idle_timeout_ms);
            mt_stat_add(s->conf->stats, s->w->id, MT_ST_IDLE_TIMEOUTS, 1);
            mt_session_close(s);
            return;
        }
    }
    session_timeout_arm(s);
}

void mt_session_set_timeouts(mt_session_t *s, uint32_t auth_ms, uint32_t idle_ms)
{
    s->auth_timeout_ms = auth_ms;
    s->idle_timeout_ms = idle_ms;
    if (!s->closing)
        session_timeout_arm(s);
}

void mt_session_rebind(mt_session_t *s)
{
    mt_worker_t *w = s->w;
    mt_wlistener_t *l = mt_worker_find_listener(w, s->conf->name);
    if (!l || l->conf->protocol != s->conf->protocol)
        return; /* the listener is gone: this connection keeps the snapshot it has */
    mt_wcluster_ref(l->cluster);
    mt_wcluster_unref(s->cluster);
    s->cluster = l->cluster;
    s->conf = l->conf;
    s->li = session_listener_index(w->snap, l->conf);
    mt_snapshot_t *old = s->snap;
    s->snap = mt_snapshot_ref(w->snap);
    mt_snapshot_unref(old);
}

bool mt_session__authorize(mt_session_t *s, mt_authz_request_t *r)
{
    r->principal = mt_session_principal(s);
    r->peer = s->peer_sa.sa.sa_family == AF_UNSPEC ? NULL : &s->peer_sa.sa;
    r->port = s->conf->port;
    mt_authz_verdict_t v = mt_authz_check(s->conf->authz, r);
    if (v.allowed && !v.audited)
        return true;
    char peer[INET6_ADDRSTRLEN + 8];
    mt_info("listener %s: RBAC: %s %s%s%s: %.*s %.*s (%s)", s->conf->name,
            v.allowed ? "audited" : "denied", mt_session_peer(s, peer, sizeof(peer)),
            r->principal ? " " : "", r->principal ? r->principal : "",
            (int)MT_MIN(r->path_len, 200), r->path ? r->path : "", (int)MT_MIN(r->method_len, 100),
            r->method ? r->method : "", v.policy ? v.policy : "no ALLOW policy matched");
    mt_stat_add(s->conf->stats, s->w->id, v.allowed ? MT_ST_RBAC_AUDITED : MT_ST_RBAC_DENIED, 1);
    return v.allowed;
}

const char *mt_session_principal(const mt_session_t *s)
{
    return s->tls ? s->tls->principal : NULL;
}

const char *mt_session_security_policy(const mt_session_t *s)
{
    return s->tls ? mt_tls_security_policy(s->tls) : "none";
}

const char *mt_session_peer(const mt_session_t *s, char *out, size_t cap)
{
    struct sockaddr_storage sa;
    int salen = sizeof(sa);
    char ip[INET6_ADDRSTRLEN] = "?";
    snprintf(out, cap, "?");
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&sa, &salen) != 0)
        return out;
    if (sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        uv_ip4_name(in, ip, sizeof(ip));
        snprintf(out, cap, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
        uv_ip6_name(in6, ip, sizeof(ip));
        snprintf(out, cap, "[%s]:%u", ip, ntohs(in6->sin6_port));
    }
    return out;
}
