/*
 * session.c - the client shell (session.h): accept, read, backpressure, finish, close.
 * The proxy sees bytes through ops->on_data and hands replies to s->out; everything about
 * the socket's life is here, once for every protocol.
 */
#include "runtime/core/session.h"

#include "runtime/core/log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_MIN_ROOM 4096

static void session_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

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
    char up[96];
    const mt_cluster_conf_t *d = e->dest;
    if (e->ep) { /* address:port without printf (one line per request) */
        size_t n = strnlen(e->ep->address, sizeof(e->ep->address)), i = n + 6;
        memcpy(up, e->ep->address, n);
        up[n] = ':';
        up[i] = '\0';
        unsigned port = e->ep->port;
        do {
            up[--i] = (char)('0' + port % 10);
            port /= 10;
        } while (port);
        memmove(up + n + 1, up + i, n + 6 - i + 1);
    }
    mt_alog_entry_t le = {
        .start_ns = e->start_ns,
        .end_ns = s->w->now_ns,
        .listener = s->conf->name,
        .protocol = set->codes ? set->codes->protocol : "tcp",
        .peer = session_peer_text(s),
        .upstream_host = e->ep ? up : NULL,
        .cluster = d ? d->name : NULL,
        .service = d && d->service ? d->service : s->conf->service,
        .route = e->route,
        .subset = e->subset,
        .op = e->op,
        .op_len = e->op_len,
        .code = set->codes ? set->codes->names[MT_MIN(e->code, set->codes->n - 1)] : NULL,
        .flags = e->flags,
        .bytes_in = e->req_bytes,
        .bytes_out = e->resp_bytes,
        .connection_id = s->id,
        .trace_id = e->trace_id,
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
    s->snap = mt_snapshot_ref(w->snap);
    s->cluster = l->cluster;
    mt_wcluster_ref(l->cluster);
    s->li = session_listener_index(w->snap, l->conf);
    s->ops = ops;
    s->id = w->next_client_id++;
    s->max_output = MT_SESSION_MAX_OUTPUT;
    s->accepted_ms = s->active_ms = mt_worker_now_ms(w);
    s->accepted_ns = w->now_ns;
    mt_outq_init(&s->out, &w->pool, session_on_write_done);
    s->out.stream = (uv_stream_t *)&s->tcp;
    s->link.drain = session_drain;
    mt_worker_session_add(w, &s->link);
    mt_stat_add(l->conf->stats, w->id, MT_ST_DOWNSTREAM_CX_TOTAL, 1);
    mt_stat_add(l->conf->stats, w->id, MT_ST_DOWNSTREAM_CX_ACTIVE, 1);
    s->istio_tcp = mt_session_istio_slow(s, l->cluster ? l->cluster->conf : NULL);
    s->istio_tcp->tcp[w->id].opened++;
    uv_tcp_nodelay(&s->tcp, 1);
    return 0;
}

static void session_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    mt_session_t *s = h->data;
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
    if (s->reading || s->closing || s->finishing)
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
    s->istio_tcp->tcp[w->id].closed++;
    session_access_log_connection(s);
    free(s->peer_text);
    s->peer_text = NULL;
    mt_wcluster_unref(s->cluster);
    mt_snapshot_unref(s->snap);
    mt_worker_session_remove(w, &s->link);
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
    uv_close((uv_handle_t *)&s->tcp, session_closed);
}

static void session_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    mt_session_t *s = st->data;
    if (nread < 0) {
        if (nread == UV_EOF && !(s->ops->on_eof && s->ops->on_eof(s)))
            mt_session_finish(s);
        else
            mt_session_close(s);
        return;
    }
    if (nread == 0)
        return;
    s->rbuf->last += nread;
    s->active_ms = uv_now(&s->w->loop); /* idle timeouts: the loop's cached time */
    s->w->now_ns = uv_hrtime();
    mt_session_count_received(s, (uint64_t)nread);
    if (!s->finishing)
        s->ops->on_data(s);
    mt_buf_t *b = s->rbuf;
    if (b && b->pos == b->last && !s->closing) {
        /* Nothing unread: give the chunk back (it stays alive while slices reference it). */
        mt_buf_unref(&s->w->pool, b);
        s->rbuf = NULL;
    }
    mt_session_check_bounds(s);
    mt_session_maybe_finish(s);
}

/* ---- auth and idle timeouts ---------------------------------------------------------------- */

static void session_on_timeout(mt_timer_t *t);

static void session_timeout_arm(mt_session_t *s)
{
    uint64_t due = UINT64_MAX;
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
