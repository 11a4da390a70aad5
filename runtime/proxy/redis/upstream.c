/*
 * upstream.c - the Redis upstream connections (mt_rup_t on the upstream
 * shell, upstream.h): the reply scanner, the FIFO of requests each connection owes replies to
 * (Redis answers in order), the proxy's AUTH and READONLY on open, its own commands (ASKING,
 * CLUSTER SLOTS), the buffered flush (maxBufferSizeBeforeFlush) and failing what a closed or
 * timed-out connection still owed. Upstream connections belong to their worker endpoint
 * slot.
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include "runtime/core/log.h"
#include "runtime/core/upstream.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- upstream connections -------------------------------------------------------------------- */

const char *mt_rendpoint_label(mt_wendpoint_t *ep, char *buf, size_t n)
{
    return mt_upstream_label(ep, buf, n);
}

/* Fails every request queued on u with text and closes u. */
void mt_rup_fail(mt_rup_t *u, const char *text)
{
    mt_worker_t *w = u->base.w;
    mt_wcluster_t *c = u->base.ep->cluster;
    mt_cluster_conf_t *cc = c->conf;
    bool topology_lost = false;
    if (u->lessee) {
        /* first, so the session forgets u before its requests' errors reach it */
        mt_rsess_t *s = u->lessee;
        u->lessee = NULL;
        mt_rtx_lease_lost(s, text);
    }
    /* A cluster node that never connected was sent nothing: its commands are routed again
     * once it is closed (and backing off), instead of failing (a dead replica under
     * PREFER_REPLICA, each time its backoff expires). Shared connections only: what was queued
     * on a lease belongs to a transaction and must not run outside it. */
    bool resend = u->never_connected && mt_rtopo(c) != NULL && u->base.kind == MT_UPSTREAM_SHARED;
    mt_rreq_t *again = NULL, **again_tail = &again;
    while (u->head) {
        mt_rreq_t *r = u->head;
        u->head = r->unext;
        u->base.inflight--;
        if (r->kind == RREQ_USER && resend && r->frame.buf) {
            r->unext = NULL;
            *again_tail = r;
            again_tail = &r->unext;
        } else if (r->kind == RREQ_USER) {
            mt_stat_add(cc->stats, w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
            r->rflags |= u->failing_flag ? u->failing_flag : MT_RF_UF;
            mt_rreq_complete_error(w, r, text);
        } else {
            topology_lost |= r->kind == RREQ_TOPOLOGY;
            mt_rreq_free(w, r);
        }
    }
    u->tail = NULL;
    mt_wendpoint_t *ep = u->base.ep;
    mt_upstream_close(&u->base);
    mt_rsentinel_node_failed(c, ep); /* the master gone: the Sentinels are asked soon */
    if (mt_rtopo(c)) {
        if (topology_lost)
            mt_rcluster_topology_failed(c, text);
        mt_rcluster_node_failed(c, ep);
    }
    while (again) {
        mt_rreq_t *r = again;
        again = r->unext;
        r->unext = NULL;
        mt_rcluster_resend(c, r, text);
    }
}

/* The reply owed to the proxy's own AUTH or READONLY/ASKING at the head of u's FIFO: an error
 * to AUTH backs the endpoint off and fails u; other errors are logged. */
bool mt_rup_internal_reply(mt_rup_t *u, const char *p, size_t len)
{
    mt_rreq_t *r = u->head;
    if (!r || (r->kind != RREQ_AUTH && r->kind != RREQ_IGNORE && r->kind != RREQ_DROP))
        return false;
    mt_worker_t *w = u->base.w;
    mt_wendpoint_t *ep = u->base.ep;
    u->head = r->unext;
    if (!u->head)
        u->tail = NULL;
    u->base.inflight--;
    rreq_kind_t kind = (rreq_kind_t)r->kind;
    mt_rreq_free(w, r);
    if (!len || p[0] != '-' || kind == RREQ_DROP)
        return true;
    char lbl[256];
    if (kind == RREQ_IGNORE) {
        mt_warn("upstream %s: %.*s", mt_rendpoint_label(ep, lbl, sizeof(lbl)),
                (int)MT_MIN(len - 3, 200), p + 1);
        return true;
    }
    char text[512];
    int n = (int)MT_MIN(len - 1, 200);
    while (n > 0 && (p[n] == '\r' || p[n] == '\n'))
        n--;
    mt_error("upstream %s rejected the proxy's credentials: %.*s",
             mt_rendpoint_label(ep, lbl, sizeof(lbl)), n, p + 1);
    snprintf(text, sizeof(text), "ERR meltemi: upstream %s rejected the proxy's credentials: %.*s",
             lbl, n, p + 1);
    mt_upstream_backoff(ep, w, text + 4);
    mt_rup_fail(u, text);
    return true;
}

static void rup_on_reply(mt_rup_t *u, const char *p, size_t len)
{
    mt_worker_t *w = u->base.w;
    mt_wendpoint_t *ep = u->base.ep;
    mt_rreq_t *r = u->head;
    if (!r) {
        char lbl[256];
        mt_warn("upstream %s: reply with no request outstanding; closing",
                mt_rendpoint_label(ep, lbl, sizeof(lbl)));
        mt_rup_fail(u, "ERR meltemi: upstream protocol error");
        return;
    }
    rreq_kind_t head_kind = (rreq_kind_t)r->kind;
    if (mt_rup_internal_reply(u, p, len)) {
        if ((head_kind == RREQ_IGNORE || head_kind == RREQ_DROP) &&
            u->base.kind == MT_UPSTREAM_LEASED)
            mt_rtx_after_reply(u); /* a lease's own READONLY / ASKING answered */
        return;
    }
    u->head = r->unext;
    if (!u->head)
        u->tail = NULL;
    else if (MT_UNLIKELY(!mt_upstream_deadline_armed(&u->base)) && u->head->deadline_ms)
        mt_upstream_arm_deadline(&u->base, u->head->deadline_ms); /* r had none */
    /* Any reply, -ERR included, shows the server up: only connection errors and timeouts
     * count against it (outlier detection, runtime/core/outlier.h). */
    mt_upstream_outcome(ep, w, MT_OUTLIER_SUCCESS);
    u->base.inflight--;
    if (r->kind == RREQ_TOPOLOGY) {
        mt_rreq_free(w, r);
        mt_rcluster_on_slots(ep->cluster, ep, p, len);
        return;
    }
    mt_stat_add(ep->cluster->conf->stats, w->id, MT_ST_UPSTREAM_RQ_TOTAL, 1);
    if (MT_UNLIKELY(u->base.kind == MT_UPSTREAM_LEASED)) {
        /* A transaction's reply: relayed as it is (a MOVED inside MULTI is Redis's
         * queueing error, and EXEC will say EXECABORT), then the lease goes back once its
         * transaction has ended and nothing more is owed. */
        if (MT_UNLIKELY(r->is_select))
            mt_rtx_select_answered(u, r, len && p[0] == '+');
        if (MT_UNLIKELY(r->lease_first) && len > 7 && p[0] == '-' && mt_rtx_moved(u, r, p, len))
            return;
        if (MT_UNLIKELY(r->queued) && len > 5 && p[0] == '-' && mt_rtx_redirected(u, r, p, len)) {
            mt_rtx_after_reply(u);
            return;
        }
        mt_rreq_complete(w, r, u->base.rbuf, p, len);
        mt_rtx_after_reply(u);
        return;
    }
    if (MT_UNLIKELY(mt_rtopo(ep->cluster) != NULL) && len > 4 && p[0] == '-' &&
        mt_rcluster_redirect(ep->cluster, r, p, len))
        return;
    mt_rreq_complete(w, r, u->base.rbuf, p, len);
}

/* The shell's on_data: every whole reply in the read chunk, in order. */
static void rup_on_data(mt_upstream_t *base)
{
    mt_rup_t *u = (mt_rup_t *)base;
    mt_buf_t *b = base->rbuf;
    while (b->pos < b->last && base->state == MT_UPSTREAM_READY) {
        size_t flen = 0;
        const char *err = NULL;
        mt_status_t rc = resp_scan_reply(&u->scanner, b->pos, mt_buf_unread(b), &flen, &err);
        if (rc == MT_AGAIN)
            break;
        if (rc == MT_ERROR) {
            char lbl[256], text[400];
            snprintf(text, sizeof(text), "ERR meltemi: upstream %s sent a malformed reply: %s",
                     mt_rendpoint_label(base->ep, lbl, sizeof(lbl)), err ? err : "?");
            mt_error("%s", text + 4);
            mt_rup_fail(u, text);
            return;
        }
        const char *p = b->pos;
        b->pos += flen;
        if (MT_UNLIKELY(p[0] == '>')) {
            /* RESP3 out-of-band data (an invalidation) on a connection shared by many: no
             * request's reply and nobody's in particular */
            mt_debug("upstream: push message dropped on a shared RESP3 connection");
            continue;
        }
        rup_on_reply(u, p, flen);
    }
}

/* The shell ends the connection (connect failed or timed out, peer closed, write failed). */
static void rup_on_error(mt_upstream_t *base, mt_upstream_event_t ev, const char *text)
{
    char full[420];
    snprintf(full, sizeof(full), "ERR meltemi: %s", text);
    mt_rup_t *u = (mt_rup_t *)base;
    u->never_connected = ev == MT_UPSTREAM_CONNECT_FAILED || ev == MT_UPSTREAM_CONNECT_TIMEOUT;
    mt_rup_fail(u, full);
}

/* Queues a connect-time command of the proxy's (AUTH, HELLO 3) first on u, owed a reply of
 * kind; the bytes may carry the password, so the scratch copy is wiped. */
static int rup_queue_opening(mt_rup_t *u, uint32_t argc, const resp_arg_t *argv, rreq_kind_t kind)
{
    mt_worker_t *w = u->base.w;
    resp_out_t *o = &mt_rw(w)->scratch;
    o->len = 0;
    resp_out_command(o, argc, argv);
    mt_rreq_t *r = mt_rreq_new(w);
    int rc = !r || mt_outq_add_copy(&u->base.out, o->data, o->len) != 0 ? -1 : 0;
    OPENSSL_cleanse(o->data, o->len);
    if (rc != 0) {
        if (r)
            mt_rreq_free(w, r);
        return -1;
    }
    r->kind = (uint8_t)kind;
    r->deadline_ms = u->base.connect_deadline_ms;
    mt_rup_push(u, r);
    return 0;
}

/* RESP3 connections: HELLO 3 first, carrying the proxy's credentials when it has some (an
 * error to it then fails the connection as a refused AUTH does). */
static int rup_queue_hello3(mt_rup_t *u, const mt_auth_t *a)
{
    resp_arg_t argv[5] = {{"HELLO", 5}, {"3", 1}};
    uint32_t argc = 2;
    if (a->password) {
        argv[argc++] = (resp_arg_t){"AUTH", 4};
        argv[argc++] =
            a->username ? (resp_arg_t){a->username, a->username_len} : (resp_arg_t){"default", 7};
        argv[argc++] = (resp_arg_t){a->password, a->password_len};
    }
    return rup_queue_opening(u, argc, argv, a->password ? RREQ_AUTH : RREQ_IGNORE);
}

/* Queues the proxy's AUTH as the connection's first command. */
static int rup_queue_auth(mt_rup_t *u, const mt_auth_t *a)
{
    resp_arg_t argv[3];
    uint32_t argc = 0;
    argv[argc++] = (resp_arg_t){"AUTH", 4};
    if (a->username)
        argv[argc++] = (resp_arg_t){a->username, a->username_len};
    argv[argc++] = (resp_arg_t){a->password, a->password_len};
    return rup_queue_opening(u, argc, argv, RREQ_AUTH);
}

static int rup_queue_internal(mt_rup_t *u, rreq_kind_t kind, const char *cmd, size_t len);

/* The shell's on_open: AUTH (when the cluster has credentials) and READONLY (cluster mode)
 * go first, before any command queued while connecting. */
int mt_rup_open(mt_rup_t *u)
{
    mt_wcluster_t *c = u->base.ep->cluster;
    resp_reply_scanner_init(&u->scanner, &resp_default_limits);
    const mt_auth_t *a = &mt_redis_cluster(c->conf)->auth;
    if (u->base.ops->pool == MT_UPSTREAM_POOL_REDIS_RESP3) {
        u->resp3 = u->scanner.resp3 = true;
        if (rup_queue_hello3(u, a) != 0)
            return -1;
    } else if (a->password && rup_queue_auth(u, a) != 0) {
        return -1;
    }
    if (mt_rtopo(c) && rup_queue_internal(u, RREQ_IGNORE, "*1\r\n$8\r\nREADONLY\r\n", 18) != 0)
        return -1;
    return 0;
}

static int rup_on_open(mt_upstream_t *base, void *arg)
{
    MT_UNUSED(arg);
    return mt_rup_open((mt_rup_t *)base);
}

static void rup_on_close(mt_upstream_t *base)
{
    mt_rup_t *u = (mt_rup_t *)base;
    mt_timer_stop(&base->w->timers, &u->flush_timer);
}

/* The head's deadline (the shell's timer, armed lazily at the head's deadline): a reply
 * cannot be skipped on a pipelined connection, so an overdue head fails everything in flight
 * and closes the connection. Otherwise arm again for the head as it is now. While the
 * connection is still connecting, its connect timeout decides first. */
void mt_rup_on_deadline(mt_upstream_t *base, uint64_t now_ms)
{
    mt_rup_t *u = (mt_rup_t *)base;
    mt_rreq_t *h = u->head;
    if (!h || !h->deadline_ms)
        return; /* rearmed by the next push or reply */
    if (base->state == MT_UPSTREAM_READY && now_ms >= h->deadline_ms) {
        char lbl[256], text[400];
        snprintf(text, sizeof(text), "ERR meltemi: upstream %s timed out",
                 mt_rendpoint_label(base->ep, lbl, sizeof(lbl)));
        mt_warn("%s (%u commands in flight failed)", text + 4, base->inflight);
        mt_stat_add(base->ep->cluster->conf->stats, base->w->id, MT_ST_UPSTREAM_RQ_TIMEOUT,
                    base->inflight);
        u->failing_flag = MT_RF_UT;
        mt_upstream_outcome(base->ep, base->w, MT_OUTLIER_GATEWAY);
        mt_rup_fail(u, text);
        return;
    }
    uint64_t due = h->deadline_ms;
    if (base->state != MT_UPSTREAM_READY)
        due = MT_MAX(due, base->connect_deadline_ms + 1);
    mt_upstream_arm_deadline(base, MT_MAX(due, now_ms + 1));
}

/* Requests still queued when the handle closes without a fail (they were failed first
 * everywhere; this frees what a failed on_open left). */
void mt_rup_free_requests(mt_rup_t *u)
{
    while (u->head) {
        mt_rreq_t *r = u->head;
        u->head = r->unext;
        mt_rreq_free(u->base.w, r);
    }
}

static void rup_on_closed(mt_upstream_t *base)
{
    mt_rup_free_requests((mt_rup_t *)base);
}

static const mt_upstream_ops_t rup_ops = {
    .protocol = MT_PROTO_REDIS,
    .size = sizeof(mt_rup_t),
    .text_prefix = "meltemi: ",
    .on_open = rup_on_open,
    .on_data = rup_on_data,
    .on_error = rup_on_error,
    .on_deadline = mt_rup_on_deadline,
    .on_close = rup_on_close,
    .on_closed = rup_on_closed,
};

/* The same, for clients that said HELLO 3: connections of their own pool, opened with HELLO 3. */
static const mt_upstream_ops_t rup3_ops = {
    .protocol = MT_PROTO_REDIS,
    .pool = MT_UPSTREAM_POOL_REDIS_RESP3,
    .size = sizeof(mt_rup_t),
    .text_prefix = "meltemi: ",
    .on_open = rup_on_open,
    .on_data = rup_on_data,
    .on_error = rup_on_error,
    .on_deadline = mt_rup_on_deadline,
    .on_close = rup_on_close,
    .on_closed = rup_on_closed,
};

static void rup_flush_timer_fired(mt_timer_t *t)
{
    mt_rup_t *u = MT_CONTAINER_OF(t, mt_rup_t, flush_timer);
    mt_upstream_schedule(&u->base);
}

/*
 * After queueing a command on u: flush at the end of this loop iteration, or, when the
 * listener asks for it (maxBufferSizeBeforeFlush), once that many bytes are queued or
 * bufferFlushTimeout has passed, whichever comes first.
 */
void mt_rup_schedule(mt_rup_t *u, const mt_redis_listener_conf_t *rl)
{
    if (u->base.state != MT_UPSTREAM_READY)
        return;
    uint32_t max = rl ? rl->max_buffer_size_before_flush : 0;
    mt_timer_wheel_t *wh = &u->base.w->timers;
    if (MT_LIKELY(max == 0) || u->base.out.queued_bytes >= max) {
        mt_timer_stop(wh, &u->flush_timer);
        mt_worker_schedule_flush(u->base.w, &u->base.out);
        return;
    }
    if (!mt_timer_pending(&u->flush_timer))
        mt_timer_start(wh, &u->flush_timer, rl->buffer_flush_timeout_ms, rup_flush_timer_fired);
}

void mt_rup_push(mt_rup_t *u, mt_rreq_t *r)
{
    r->unext = NULL;
    r->ep = u->base.ep;
    if (u->tail)
        u->tail->unext = r;
    else
        u->head = r;
    u->tail = r;
    u->base.inflight++;
    if (MT_UNLIKELY(!mt_upstream_deadline_armed(&u->base)) && r->deadline_ms)
        mt_upstream_arm_deadline(&u->base, r->deadline_ms);
}

/* Queues a command of the proxy's own (READONLY, ASKING, CLUSTER SLOTS). */
int mt_rup_queue_ignored(mt_rup_t *u, const char *cmd, size_t len)
{
    return rup_queue_internal(u, RREQ_IGNORE, cmd, len);
}

static int rup_queue_internal(mt_rup_t *u, rreq_kind_t kind, const char *cmd, size_t len)
{
    mt_worker_t *w = u->base.w;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r || mt_outq_add_copy(&u->base.out, cmd, len) != 0) {
        if (r)
            mt_rreq_free(w, r);
        return -1;
    }
    r->kind = (uint8_t)kind;
    r->deadline_ms = mt_worker_now_ms(w) + u->base.ep->cluster->conf->connect_timeout_ms;
    mt_rup_push(u, r);
    mt_upstream_schedule(&u->base);
    return 0;
}

/* The shared connection for a session on endpoint ep, connecting if needed; NULL + why on
 * failure. */
mt_rup_t *mt_rup_for(mt_wendpoint_t *ep, uint64_t sess_id, bool resp3, const char **why)
{
    return (mt_rup_t *)mt_upstream_shared(ep, resp3 ? &rup3_ops : &rup_ops, sess_id, NULL, why);
}

mt_rup_t *mt_rup_lease(mt_wendpoint_t *ep, mt_rsess_t *s, const char **why)
{
    mt_rup_t *u =
        (mt_rup_t *)mt_upstream_lease(ep, s && s->resp3 ? &rup3_ops : &rup_ops, NULL, why);
    if (u) {
        u->lessee = s;
        u->returning = false;
        u->db = 0; /* a connection selected elsewhere is closed, never pooled */
        u->client_flags = 0;
    }
    return u;
}

void mt_rup_release(mt_rup_t *u, bool clean)
{
    u->lessee = NULL;
    clean = clean && u->db == 0 && u->client_flags == 0;
    if (clean && u->base.inflight > 0) {
        u->returning = true; /* rup_on_reply gives it back after the last reply */
        return;
    }
    u->returning = false;
    /* Closed (whatever clean says) when not READY or still owed replies: then the requests
     * left on it are freed by on_closed, their sessions already gone or failed. */
    mt_upstream_return(&u->base, clean);
}

mt_rreq_t *mt_rup_send_user(mt_rup_t *u, mt_rsess_t *s, const redis_command_t *cmd,
                            const resp_request_t *req, const char *frame, uint64_t hold_until_ms)
{
    mt_worker_t *w = s->base.w;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r)
        return NULL;
    r->sess = s;
    r->cmd = cmd;
    r->dest = u->base.ep->cluster->conf; /* Istio's destination labels */
    r->deadline_ms = mt_worker_now_ms(w) + s->rconf->op_timeout_ms;
    r->hold_until_ms = hold_until_ms;
    int rc;
    if (req->is_inline) {
        resp_out_t *o = &mt_rw(w)->scratch;
        o->len = 0;
        resp_out_command(o, req->argc, req->argv);
        rc = mt_outq_add_copy(&u->base.out, o->data, o->len);
    } else {
        rc = mt_outq_add_ref(&u->base.out, s->base.rbuf, frame, req->frame_len);
    }
    if (rc != 0) {
        mt_rreq_free(w, r);
        return NULL;
    }
    mt_rsess_push(s, r);
    mt_rup_push(u, r);
    mt_upstream_queued(&u->base);
    mt_upstream_request_sent(&u->base); /* http.maxRequestsPerConnection: drains at the bound */
    mt_rup_schedule(u, s->rconf);
    return r;
}

bool mt_rendpoint_healthy(mt_wendpoint_t *ep, uint64_t now_ms)
{
    return mt_upstream_healthy(ep, now_ms);
}

bool mt_rreq_send(mt_rreq_t *r, mt_wendpoint_t *ep, bool asking, const char **why)
{
    mt_rsess_t *s = r->sess ? r->sess : (r->parent ? r->parent->sess : NULL);
    mt_rup_t *u = mt_rup_for(ep, s ? s->base.id : ep->cluster->rr++, s && s->resp3, why);
    if (!u)
        return false;
    if (asking && rup_queue_internal(u, RREQ_IGNORE, "*1\r\n$6\r\nASKING\r\n", 16) != 0) {
        *why = "out of memory";
        return false;
    }
    if (!mt_rup_send_kept(u, r)) {
        *why = "out of memory";
        return false;
    }
    return true;
}

bool mt_rup_send_kept(mt_rup_t *u, mt_rreq_t *r)
{
    mt_buf_ref(r->frame.buf);
    if (mt_outq_add_slice(&u->base.out, r->frame) != 0)
        return false;
    mt_rup_push(u, r);
    mt_upstream_queued(&u->base);
    mt_upstream_request_sent(&u->base);
    mt_upstream_schedule(&u->base);
    return true;
}

/* Asks ep for the cluster's slot map. */
bool mt_rcluster_send_slots(mt_wendpoint_t *ep, const char **why)
{
    mt_rup_t *u = mt_rup_for(ep, ep->cluster->rr++, false, why);
    if (!u)
        return false;
    if (rup_queue_internal(u, RREQ_TOPOLOGY, "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n", 28) != 0) {
        *why = "out of memory";
        return false;
    }
    return true;
}
