/*
 * redis_proxy.c - the Redis data path: client sessions and the pipelined upstream
 * connections they share.
 *
 * A client's commands are parsed in place in its read chunk; a forwarded command is queued on
 * an upstream connection as a slice of that chunk (no copy), so the commands of many clients
 * leave in one writev per loop iteration. Every command gets a request record that sits in two
 * FIFOs: its session's (replies go back in request order) and its upstream connection's
 * (Redis answers in order). A reply for the session's oldest request is queued to the client
 * as a slice of the upstream's read chunk (again no copy); a reply that arrives early (another
 * upstream answered first) is held by reference until its turn.
 *
 * Ownership: a session owns its request records until they are handed to an upstream; when a
 * client goes away its in-flight records are orphaned (sess = NULL) and the upstream frees
 * them when their replies arrive. Upstream connections belong to their worker endpoint slot.
 */
#include "runtime/proxy/redis/redis_proxy.h"

#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/upstream.h"
#include "runtime/proxy/redis/lua_bridge.h"
#include "runtime/proxy/redis/redis_snapshot.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Before AUTH (where the listener requires it) a client gets only error replies; it may make
 * us queue this much of them before we stop reading it, so an unauthenticated connection
 * costs at most its read chunk (frames are capped by resp.h's RESP_UNAUTH_*) plus this. */
#define SESSION_UNAUTH_MAX_OUTPUT (64u << 10)

/* ---- per-command stats (enableCommandStats) ---------------------------------------------------
 */

/* This worker's blocks for one listener, indexed by command id; created on first use. */
struct cmd_stats {
    const mt_stats_block_t *listener;
    mt_stats_block_t *blocks[REDIS_COMMAND_COUNT];
    struct cmd_stats *next;
};
typedef struct cmd_stats cmd_stats_t;

static void cmd_stats_record(mt_worker_t *w, const mt_listener_conf_t *lc,
                             const redis_command_t *cmd, bool error, uint64_t start_ns)
{
    mt_redis_worker_t *rw = mt_rw(w);
    cmd_stats_t *cs = rw->cmd_stats;
    while (cs && cs->listener != lc->stats)
        cs = cs->next;
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return;
        cs->listener = lc->stats;
        cs->next = rw->cmd_stats;
        rw->cmd_stats = cs;
    }
    if (cmd->id >= REDIS_COMMAND_COUNT)
        return;
    mt_stats_block_t *b = cs->blocks[cmd->id];
    if (!b)
        b = cs->blocks[cmd->id] = mt_stats_block(MT_STATS_COMMAND, lc->name, cmd->name);
    mt_stat_add(b, w->id, MT_ST_REQUESTS_TOTAL, 1);
    if (error)
        mt_stat_add(b, w->id, MT_ST_REQUEST_ERRORS, 1);
    if (start_ns)
        mt_stat_observe_ms(b, w->id, (double)(uv_hrtime() - start_ns) / 1e6);
}

/* ---- request records ------------------------------------------------------------------------ */

mt_rreq_t *mt_rreq_new(mt_worker_t *w)
{
    mt_rreq_t *r = mt_rw(w)->req_free;
    if (r) {
        mt_rw(w)->req_free = r->next;
        mt_rw(w)->n_req_free--;
    } else {
        r = malloc(sizeof(*r));
        if (!r)
            return NULL;
    }
    memset(r, 0, sizeof(*r));
    return r;
}

void mt_rreq_free(mt_worker_t *w, mt_rreq_t *r)
{
    if (r->reply.buf)
        mt_buf_unref(&w->pool, r->reply.buf);
    if (r->frame.buf)
        mt_buf_unref(&w->pool, r->frame.buf);
    if (r->split)
        mt_rcluster_split_free(w, r->split);
    if (mt_rw(w)->n_req_free >= 4096) {
        free(r);
        return;
    }
    r->next = mt_rw(w)->req_free;
    mt_rw(w)->req_free = r;
    mt_rw(w)->n_req_free++;
}

/* ---- sessions: replies in order ----------------------------------------------------------------
 */

static void sess_hold_arm(mt_rsess_t *s, uint64_t at_ms);

/* Pops every completed request at the head of the session's FIFO into its output queue. */
static void sess_drain_done(mt_rsess_t *s)
{
    mt_worker_t *w = s->base.w;
    while (s->head && s->head->done) {
        mt_rreq_t *r = s->head;
        s->head = r->next;
        if (!s->head)
            s->tail = NULL;
        s->base.pending--;
        if (r->reply.buf) {
            mt_outq_add_slice(&s->base.out, r->reply);
            r->reply.buf = NULL;
        }
        mt_rreq_free(w, r);
    }
    mt_worker_schedule_flush(w, &s->base.out);
    mt_session_resume(&s->base);
}

/* Completes r with reply bytes living in chunk b (a reference is taken when kept). */
void mt_rreq_complete(mt_worker_t *w, mt_rreq_t *r, mt_buf_t *b, const char *p, size_t len)
{
    if (r->parent) {
        mt_rcluster_part_done(w, r, b, p, len);
        return;
    }
    mt_rsess_t *s = r->sess;
    if (!s) {
        mt_rreq_free(w, r);
        return;
    }
    if (MT_UNLIKELY(s->rconf->enable_command_stats) && r->cmd && !r->stats_done) {
        r->stats_done = true;
        cmd_stats_record(w, s->base.conf, r->cmd, len && p[0] == '-', r->start_ns);
    }
    if (MT_UNLIKELY(r->resp_chain)) {
        /* on_response filters may replace the reply (and hold it, with ctx:delay). */
        r->resp_chain = false;
        mt_bridge_response(&mt_rw(w)->bridge, s->base.li, r->cmd, p, len, s->base.id);
        mt_verdict_t *v = &mt_rw(w)->bridge.verdict;
        if (v->delay_ms) {
            uv_update_time(&w->loop);
            r->hold_until_ms = mt_worker_now_ms(w) + v->delay_ms + 1;
        }
        if (v->has_reply || v->has_error) {
            mt_rreq_complete_copy(w, r, v->reply.data, v->reply.len);
            return;
        }
    }
    if (MT_UNLIKELY(r->hold_until_ms != 0) && r->hold_until_ms > mt_worker_now_ms(w)) {
        mt_buf_ref(b);
        r->reply = (mt_slice_t){b, p, (uint32_t)len};
        r->held = true;
        sess_hold_arm(s, r->hold_until_ms);
        return;
    }
    mt_listener_conf_t *lc = s->base.conf;
    if (len && p[0] == '-')
        mt_stat_add(lc->stats, w->id, MT_ST_REQUEST_ERRORS, 1);
    if (r->start_ns)
        mt_stat_observe_ms(lc->stats, w->id, (double)(uv_hrtime() - r->start_ns) / 1e6);
    if (s->head == r) {
        s->head = r->next;
        if (!s->head)
            s->tail = NULL;
        s->base.pending--;
        mt_outq_add_ref(&s->base.out, b, p, len);
        mt_rreq_free(w, r);
        if (s->head && s->head->done)
            sess_drain_done(s);
        else {
            mt_worker_schedule_flush(w, &s->base.out);
            mt_session_resume(&s->base);
        }
        return;
    }
    mt_buf_ref(b);
    r->reply.buf = b;
    r->reply.p = p;
    r->reply.len = (uint32_t)len;
    r->done = true;
}

/* Completes r with bytes made here (an error text or a local reply). */
void mt_rreq_complete_copy(mt_worker_t *w, mt_rreq_t *r, const char *p, size_t len)
{
    if (!r->sess && !r->parent) {
        mt_rreq_free(w, r);
        return;
    }
    mt_slice_t sl;
    if (mt_slice_copy(&w->pool, &w->own, p, len, &sl) != 0) {
        if (r->sess)
            mt_session_close(&r->sess->base);
        return;
    }
    mt_rreq_complete(w, r, sl.buf, sl.p, sl.len);
    mt_buf_unref(&w->pool, sl.buf);
}

void mt_rreq_complete_error(mt_worker_t *w, mt_rreq_t *r, const char *text)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "-%s\r\n", text);
    if (n < 0 || (size_t)n >= sizeof(line))
        n = (int)sizeof(line) - 1, line[n - 2] = '\r', line[n - 1] = '\n';
    mt_rreq_complete_copy(w, r, line, (size_t)n);
}

/* Queues a locally made reply behind whatever the client is still waiting for. */
static void sess_reply(mt_rsess_t *s, const char *p, size_t len)
{
    mt_worker_t *w = s->base.w;
    if (len && p[0] == '-')
        mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUEST_ERRORS, 1);
    if (!s->head) {
        mt_outq_add_copy(&s->base.out, p, len);
        mt_worker_schedule_flush(w, &s->base.out);
        return;
    }
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r) {
        mt_session_close(&s->base);
        return;
    }
    if (mt_slice_copy(&w->pool, &s->base.out.own, p, len, &r->reply) != 0) {
        mt_rreq_free(w, r);
        mt_session_close(&s->base);
        return;
    }
    r->done = true;
    r->sess = s;
    s->tail->next = r;
    s->tail = r;
    s->base.pending++;
}

void mt_rsess_reply_error(mt_rsess_t *s, const char *text)
{
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    o->len = 0;
    resp_out_error(o, text);
    sess_reply(s, o->data, o->len);
}

/* ---- held replies (DELAY faults) ------------------------------------------------------------- */

static void sess_hold_fire(mt_timer_t *t)
{
    mt_rsess_t *s = MT_CONTAINER_OF(t, mt_rsess_t, hold_timer);
    mt_worker_t *w = s->base.w;
    uint64_t now = mt_worker_now_ms(w), next = 0;
    for (mt_rreq_t *r = s->head; r; r = r->next) {
        if (!r->held)
            continue;
        if (r->hold_until_ms <= now) {
            r->held = false;
            r->done = true;
        } else if (!next || r->hold_until_ms < next) {
            next = r->hold_until_ms;
        }
    }
    if (next)
        sess_hold_arm(s, next);
    if (s->head && s->head->done)
        sess_drain_done(s);
}

/* The wheel fires at the first loop millisecond >= at_ms: a held reply never leaves early. */
static void sess_hold_arm(mt_rsess_t *s, uint64_t at_ms)
{
    if (mt_timer_pending(&s->hold_timer) && s->hold_timer.due_ms <= at_ms)
        return; /* an earlier release re-arms for the rest */
    mt_timer_start_at(&s->base.w->timers, &s->hold_timer, at_ms, sess_hold_fire);
}

/* A local reply that a DELAY fault holds back until hold_until_ms. */
static void sess_reply_held(mt_rsess_t *s, const char *p, size_t len, uint64_t hold_until_ms)
{
    mt_worker_t *w = s->base.w;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r || mt_slice_copy(&w->pool, &w->own, p, len, &r->reply) != 0) {
        if (r)
            mt_rreq_free(w, r);
        mt_session_close(&s->base);
        return;
    }
    if (len && p[0] == '-')
        mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUEST_ERRORS, 1);
    r->held = true;
    r->hold_until_ms = hold_until_ms;
    mt_rsess_push(s, r);
    sess_hold_arm(s, hold_until_ms);
}

/* ---- upstream connections -------------------------------------------------------------------- */

static void rup_push(mt_rup_t *u, mt_rreq_t *r);

const char *mt_rendpoint_label(mt_wendpoint_t *ep, char *buf, size_t n)
{
    return mt_upstream_label(ep, buf, n);
}

/* Fails every request queued on u with text and closes u. */
static void rup_fail(mt_rup_t *u, const char *text)
{
    mt_worker_t *w = u->base.w;
    mt_wcluster_t *c = u->base.ep->cluster;
    mt_cluster_conf_t *cc = c->conf;
    bool topology_lost = false;
    while (u->head) {
        mt_rreq_t *r = u->head;
        u->head = r->unext;
        u->base.inflight--;
        if (r->kind == RREQ_USER) {
            mt_stat_add(cc->stats, w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
            mt_rreq_complete_error(w, r, text);
        } else {
            topology_lost |= r->kind == RREQ_TOPOLOGY;
            mt_rreq_free(w, r);
        }
    }
    u->tail = NULL;
    mt_wendpoint_t *ep = u->base.ep;
    mt_upstream_close(&u->base);
    if (mt_rtopo(c)) {
        if (topology_lost)
            mt_rcluster_topology_failed(c, text);
        mt_rcluster_node_failed(c, ep);
    }
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
        rup_fail(u, "ERR meltemi: upstream protocol error");
        return;
    }
    u->head = r->unext;
    if (!u->head)
        u->tail = NULL;
    u->base.inflight--;
    if (r->kind == RREQ_TOPOLOGY) {
        mt_rreq_free(w, r);
        mt_rcluster_on_slots(ep->cluster, ep, p, len);
        return;
    }
    if (r->kind == RREQ_IGNORE) {
        mt_rreq_free(w, r);
        if (len && p[0] == '-') {
            char lbl[256];
            mt_warn("upstream %s: %.*s", mt_rendpoint_label(ep, lbl, sizeof(lbl)),
                    (int)MT_MIN(len - 3, 200), p + 1);
        }
        return;
    }
    if (r->kind == RREQ_AUTH) {
        mt_rreq_free(w, r);
        if (len && p[0] == '-') {
            char lbl[256], text[512];
            int n = (int)MT_MIN(len - 1, 200);
            while (n > 0 && (p[n] == '\r' || p[n] == '\n'))
                n--;
            mt_error("upstream %s rejected the proxy's credentials: %.*s",
                     mt_rendpoint_label(ep, lbl, sizeof(lbl)), n, p + 1);
            snprintf(text, sizeof(text),
                     "ERR meltemi: upstream %s rejected the proxy's credentials: %.*s", lbl, n,
                     p + 1);
            mt_upstream_backoff(ep, w, text + 4);
            rup_fail(u, text);
        }
        return;
    }
    mt_stat_add(ep->cluster->conf->stats, w->id, MT_ST_UPSTREAM_RQ_TOTAL, 1);
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
            rup_fail(u, text);
            return;
        }
        const char *p = b->pos;
        b->pos += flen;
        rup_on_reply(u, p, flen);
    }
}

/* The shell ends the connection (connect failed or timed out, peer closed, write failed). */
static void rup_on_error(mt_upstream_t *base, mt_upstream_event_t ev, const char *text)
{
    MT_UNUSED(ev);
    char full[420];
    snprintf(full, sizeof(full), "ERR meltemi: %s", text);
    rup_fail((mt_rup_t *)base, full);
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
    mt_worker_t *w = u->base.w;
    resp_out_t *o = &mt_rw(w)->scratch;
    o->len = 0;
    resp_out_command(o, argc, argv);
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r || mt_outq_add_copy(&u->base.out, o->data, o->len) != 0) {
        if (r)
            mt_rreq_free(w, r);
        return -1;
    }
    /* Wipe the password from the scratch buffer. */
    OPENSSL_cleanse(o->data, o->len);
    r->kind = RREQ_AUTH;
    r->deadline_ms = u->base.connect_deadline_ms;
    rup_push(u, r);
    return 0;
}

static int rup_queue_internal(mt_rup_t *u, rreq_kind_t kind, const char *cmd, size_t len);

/* The shell's on_open: AUTH (when the cluster has credentials) and READONLY (cluster mode)
 * go first, before any command queued while connecting. */
static int rup_on_open(mt_upstream_t *base, void *arg)
{
    MT_UNUSED(arg);
    mt_rup_t *u = (mt_rup_t *)base;
    mt_wcluster_t *c = base->ep->cluster;
    resp_reply_scanner_init(&u->scanner, &resp_default_limits);
    const mt_auth_t *a = &mt_redis_cluster(c->conf)->auth;
    if (a->password && rup_queue_auth(u, a) != 0)
        return -1;
    if (mt_rtopo(c) && rup_queue_internal(u, RREQ_IGNORE, "*1\r\n$8\r\nREADONLY\r\n", 18) != 0)
        return -1;
    return 0;
}

static void rup_on_close(mt_upstream_t *base)
{
    mt_rup_t *u = (mt_rup_t *)base;
    if (u->flush_timer) {
        uv_close((uv_handle_t *)u->flush_timer, (uv_close_cb)free);
        u->flush_timer = NULL;
    }
}

/* Requests still queued when the handle closes without a fail (they were failed first
 * everywhere; this frees what a failed on_open left). */
static void rup_on_closed(mt_upstream_t *base)
{
    mt_rup_t *u = (mt_rup_t *)base;
    while (u->head) {
        mt_rreq_t *r = u->head;
        u->head = r->unext;
        mt_rreq_free(base->w, r);
    }
}

static const mt_upstream_ops_t rup_ops = {
    .protocol = MT_PROTO_REDIS,
    .size = sizeof(mt_rup_t),
    .text_prefix = "meltemi: ",
    .on_open = rup_on_open,
    .on_data = rup_on_data,
    .on_error = rup_on_error,
    .on_close = rup_on_close,
    .on_closed = rup_on_closed,
};

static void rup_flush_timer_fired(uv_timer_t *t)
{
    mt_rup_t *u = t->data;
    mt_upstream_schedule(&u->base);
}

/*
 * After queueing a command on u: flush at the end of this loop iteration, or, when the
 * listener asks for it (maxBufferSizeBeforeFlush), once that many bytes are queued or
 * bufferFlushTimeout has passed, whichever comes first.
 */
static void rup_schedule(mt_rup_t *u, const mt_redis_listener_conf_t *rl)
{
    if (u->base.state != MT_UPSTREAM_READY)
        return;
    uint32_t max = rl ? rl->max_buffer_size_before_flush : 0;
    if (MT_LIKELY(max == 0) || u->base.out.queued_bytes >= max) {
        if (u->flush_timer)
            uv_timer_stop(u->flush_timer);
        mt_worker_schedule_flush(u->base.w, &u->base.out);
        return;
    }
    if (!u->flush_timer) {
        u->flush_timer = malloc(sizeof(*u->flush_timer));
        if (!u->flush_timer) {
            mt_worker_schedule_flush(u->base.w, &u->base.out);
            return;
        }
        uv_timer_init(&u->base.w->loop, u->flush_timer);
        u->flush_timer->data = u;
    }
    if (!uv_is_active((uv_handle_t *)u->flush_timer))
        uv_timer_start(u->flush_timer, rup_flush_timer_fired, rl->buffer_flush_timeout_ms, 0);
}

static void rup_push(mt_rup_t *u, mt_rreq_t *r)
{
    r->unext = NULL;
    if (u->tail)
        u->tail->unext = r;
    else
        u->head = r;
    u->tail = r;
    u->base.inflight++;
}

/* Queues a command of the proxy's own (READONLY, ASKING, CLUSTER SLOTS). */
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
    rup_push(u, r);
    mt_upstream_schedule(&u->base);
    return 0;
}

/* The shared connection for a session on endpoint ep, connecting if needed; NULL + why on
 * failure. */
static inline mt_rup_t *rup_for(mt_wendpoint_t *ep, uint64_t sess_id, const char **why)
{
    return (mt_rup_t *)mt_upstream_shared(ep, &rup_ops, sess_id, NULL, why);
}

bool mt_rendpoint_healthy(mt_wendpoint_t *ep, uint64_t now_ms)
{
    return mt_upstream_healthy(ep, now_ms);
}

bool mt_rreq_send(mt_rreq_t *r, mt_wendpoint_t *ep, bool asking, const char **why)
{
    mt_rsess_t *s = r->sess ? r->sess : (r->parent ? r->parent->sess : NULL);
    mt_rup_t *u = rup_for(ep, s ? s->base.id : ep->cluster->rr++, why);
    if (!u)
        return false;
    if (asking && rup_queue_internal(u, RREQ_IGNORE, "*1\r\n$6\r\nASKING\r\n", 16) != 0) {
        *why = "out of memory";
        return false;
    }
    mt_buf_ref(r->frame.buf);
    if (mt_outq_add_slice(&u->base.out, r->frame) != 0) {
        *why = "out of memory";
        return false;
    }
    rup_push(u, r);
    mt_upstream_schedule(&u->base);
    return true;
}

/* Asks ep for the cluster's slot map. */
bool mt_rcluster_send_slots(mt_wendpoint_t *ep, const char **why)
{
    mt_rup_t *u = rup_for(ep, ep->cluster->rr++, why);
    if (!u)
        return false;
    if (rup_queue_internal(u, RREQ_TOPOLOGY, "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n", 28) != 0) {
        *why = "out of memory";
        return false;
    }
    return true;
}

void mt_rsess_push(mt_rsess_t *s, mt_rreq_t *r)
{
    r->sess = s;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->base.pending++;
}

static void sess_on_data(mt_session_t *base);
static void sess_on_close(mt_session_t *base);
static void sess_on_closed(mt_session_t *base);
static const mt_session_ops_t redis_sess_ops = {
    .on_data = sess_on_data,
    .on_close = sess_on_close,
    .on_closed = sess_on_closed,
};

static void redis_tick(mt_worker_t *w, uint64_t now_ms)
{
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        if (mt_rtopo(c))
            mt_rcluster_tick(c, now_ms);
    }
    mt_upstream_tick(w, MT_PROTO_REDIS, now_ms);
    mt_upstream_t *next;
    char lbl[256], text[400];
    for (mt_upstream_t *b = w->upstreams[MT_PROTO_REDIS]; b; b = next) {
        next = b->next;
        mt_rup_t *u = (mt_rup_t *)b;
        if (b->state == MT_UPSTREAM_READY && u->head && u->head->deadline_ms &&
            now_ms >= u->head->deadline_ms) {
            snprintf(text, sizeof(text), "ERR meltemi: upstream %s timed out",
                     mt_rendpoint_label(b->ep, lbl, sizeof(lbl)));
            mt_warn("%s (%u commands in flight failed)", text + 4, b->inflight);
            mt_stat_add(b->ep->cluster->conf->stats, w->id, MT_ST_UPSTREAM_RQ_TIMEOUT, b->inflight);
            rup_fail(u, text);
            if (next && next->state == MT_UPSTREAM_CLOSING)
                next = w->upstreams[MT_PROTO_REDIS]; /* the fail closed it too: start over */
        }
    }
}

static void redis_worker_stop(mt_worker_t *w)
{
    while (w->upstreams[MT_PROTO_REDIS])
        rup_fail((mt_rup_t *)w->upstreams[MT_PROTO_REDIS], "ERR meltemi: proxy shutting down");
    mt_redis_worker_t *rw = mt_rw(w);
    while (rw->cmd_stats) {
        cmd_stats_t *cs = rw->cmd_stats;
        rw->cmd_stats = cs->next;
        free(cs);
    }
    while (mt_rw(w)->req_free) {
        mt_rreq_t *r = mt_rw(w)->req_free;
        mt_rw(w)->req_free = r->next;
        free(r);
    }
    mt_rw(w)->n_req_free = 0;
    resp_out_free(&mt_rw(w)->scratch);
}

/* ---- routing ------------------------------------------------------------------------------------
 */

static uint32_t key_hash(const char *p, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a: spreads keys over a PROXY-mode cluster's endpoints */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 16777619u;
    return h;
}

mt_wendpoint_t *mt_rproxy_endpoint(mt_wcluster_t *c, const resp_arg_t *key, bool hashtag)
{
    if (c->n_eps == 1)
        return c->eps[0];
    if (!key)
        return c->eps[c->rr++ % c->n_eps];
    const char *p = key->ptr;
    size_t n = key->len;
    if (hashtag) {
        /* enableHashtagging: only the first non-empty {tag} is hashed, as Redis Cluster does,
         * so related keys meet on one endpoint. */
        const char *open = memchr(p, '{', n);
        const char *close = open ? memchr(open + 1, '}', n - (size_t)(open + 1 - p)) : NULL;
        if (close && close > open + 1) {
            p = open + 1;
            n = (size_t)(close - p);
        }
    }
    return c->eps[key_hash(p, n) % c->n_eps];
}

/* The k-th endpoint of one role (replica or not), k < the number of them. */
static mt_wendpoint_t *nth_of_role(mt_wcluster_t *c, bool replica, uint32_t k)
{
    const bool *role = mt_redis_cluster(c->conf)->replica; /* set: the cluster has replicas */
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (role[i] == replica && k-- == 0)
            return c->eps[i];
    }
    return NULL;
}

/* An endpoint of one role, starting at `start` and skipping unhealthy ones when asked. */
static mt_wendpoint_t *pick_role(mt_wcluster_t *c, bool replica, uint32_t start, bool healthy)
{
    uint32_t n_replicas = mt_redis_cluster(c->conf)->n_replicas;
    uint32_t n = replica ? n_replicas : c->n_eps - n_replicas;
    uint64_t now = mt_worker_now_ms(c->w);
    for (uint32_t t = 0; t < n; t++) {
        mt_wendpoint_t *ep = nth_of_role(c, replica, (start + t) % n);
        if (!healthy || mt_rendpoint_healthy(ep, now))
            return ep;
    }
    return NULL;
}

/*
 * PROXY mode. Without roles: keys hash over the endpoints. With endpoints labelled as
 * replicas (a plain primary/replica setup): writes go to the primary, reads follow the
 * listener's readPolicy; NULL when REPLICA finds no healthy replica.
 */
static mt_wendpoint_t *route_endpoint(mt_wcluster_t *c, const redis_command_t *cmd,
                                      const resp_request_t *req, mt_read_policy_t policy,
                                      bool hashtag)
{
    if (c->n_eps == 1)
        return c->eps[0];
    uint32_t n_replicas = mt_redis_cluster(c->conf)->n_replicas;
    if (n_replicas == 0 || n_replicas == c->n_eps) {
        uint32_t idx[1];
        if (redis_command_keys(cmd, req->argc, req->argv, idx, 1) > 0)
            return mt_rproxy_endpoint(c, &req->argv[idx[0]], hashtag);
        return mt_rproxy_endpoint(c, NULL, hashtag);
    }
    uint32_t start = c->rr++;
    bool read = (cmd->flags & REDIS_CMD_READONLY) && !(cmd->flags & REDIS_CMD_WRITE);
    mt_wendpoint_t *ep = NULL;
    if (!read || policy == MT_READ_MASTER)
        return pick_role(c, false, start, false);
    switch (policy) {
    case MT_READ_PREFER_MASTER:
        ep = pick_role(c, false, start, true);
        ep = ep ? ep : pick_role(c, true, start, true);
        break;
    case MT_READ_REPLICA:
        return pick_role(c, true, start, true);
    case MT_READ_PREFER_REPLICA:
        ep = pick_role(c, true, start, true);
        ep = ep ? ep : pick_role(c, false, start, true);
        break;
    case MT_READ_ANY:
        for (uint32_t t = 0; t < c->n_eps && !ep; t++) {
            mt_wendpoint_t *e = c->eps[(start + t) % c->n_eps];
            if (mt_rendpoint_healthy(e, mt_worker_now_ms(c->w)))
                ep = e;
        }
        break;
    default:
        break;
    }
    return ep ? ep : pick_role(c, false, start, false);
}

/*
 * Forwards a command to cluster c. Bytes: a reference to the client's read chunk, or, for
 * inline commands and rewritten ones (req->is_inline), a re-encoding of req->argv.
 * hold_until_ms (DELAY faults) holds the reply back until then.
 */
/* An error for the command being handled: now, or held until hold_until_ms (a DELAY fault
 * delays errors too: the client never learns of the failure early). */
static void sess_reply_error_at(mt_rsess_t *s, const char *text, uint64_t hold_until_ms)
{
    if (!hold_until_ms) {
        mt_rsess_reply_error(s, text);
        return;
    }
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    o->len = 0;
    resp_out_error(o, text);
    sess_reply_held(s, o->data, o->len, hold_until_ms);
}

static void forward_to(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                       const resp_request_t *req, const char *frame, uint64_t hold_until_ms)
{
    mt_worker_t *w = s->base.w;
    char text[400];
    if (!c || c->n_eps == 0) {
        snprintf(text, sizeof(text), "ERR meltemi: no upstream host for %s",
                 c && c->conf->service
                     ? c->conf->service
                     : (s->base.conf->service ? s->base.conf->service : s->base.conf->name));
        sess_reply_error_at(s, text, hold_until_ms);
        return;
    }
    if (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER) {
        mt_rreq_t *tail = s->tail;
        mt_rcluster_forward(s, c, cmd, req, frame);
        if (hold_until_ms && s->tail && s->tail != tail) {
            s->tail->hold_until_ms = hold_until_ms;
            if (s->tail->done) {
                s->tail->done = false;
                s->tail->held = true;
                sess_hold_arm(s, hold_until_ms);
            }
        }
        return;
    }
    mt_wendpoint_t *ep =
        route_endpoint(c, cmd, req, s->rconf->read_policy, s->rconf->enable_hashtagging);
    if (!ep) {
        snprintf(text, sizeof(text), "ERR meltemi: no healthy replica for %s (readPolicy REPLICA)",
                 c->conf->service ? c->conf->service : c->conf->name);
        sess_reply_error_at(s, text, hold_until_ms);
        return;
    }
    const char *why = NULL;
    mt_rup_t *u = rup_for(ep, s->base.id, &why);
    if (!u) {
        char lbl[256];
        mt_stat_add(c->conf->stats, w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        if (strncmp(why, "meltemi: ", 9) == 0)
            snprintf(text, sizeof(text), "ERR %s", why);
        else
            snprintf(text, sizeof(text), "ERR meltemi: upstream %s unavailable: %s",
                     mt_rendpoint_label(ep, lbl, sizeof(lbl)), why);
        sess_reply_error_at(s, text, hold_until_ms);
        return;
    }
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r) {
        mt_session_close(&s->base);
        return;
    }
    r->sess = s;
    r->cmd = cmd;
    r->start_ns = uv_hrtime();
    r->deadline_ms = mt_worker_now_ms(w) + s->rconf->op_timeout_ms;
    r->hold_until_ms = hold_until_ms;
    int rc;
    if (req->is_inline) {
        resp_out_t *o = &mt_rw(s->base.w)->scratch;
        o->len = 0;
        resp_out_command(o, req->argc, req->argv);
        rc = mt_outq_add_copy(&u->base.out, o->data, o->len);
    } else {
        rc = mt_outq_add_ref(&u->base.out, s->base.rbuf, frame, req->frame_len);
    }
    if (rc != 0) {
        mt_rreq_free(w, r);
        mt_session_close(&s->base);
        return;
    }
    mt_rsess_push(s, r);
    rup_push(u, r);
    rup_schedule(u, s->rconf);
}

static void sess_forward(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                         const char *frame)
{
    forward_to(s, s->base.cluster, cmd, req, frame, 0);
}

/* A fire-and-forget copy to a mirror cluster: nobody waits for its reply. */
static void mirror_send(mt_worker_t *w, mt_wcluster_t *c, const redis_command_t *cmd,
                        const resp_request_t *req)
{
    if (!c || c->n_eps == 0)
        return;
    if (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER) {
        mt_rcluster_mirror(c, cmd, req);
        return;
    }
    mt_wendpoint_t *ep = route_endpoint(c, cmd, req, MT_READ_MASTER, true);
    const char *why = NULL;
    mt_rup_t *u = rup_for(ep, c->rr++, &why);
    mt_rreq_t *r = u ? mt_rreq_new(w) : NULL;
    resp_out_t *o = &mt_rw(w)->scratch;
    o->len = 0;
    resp_out_command(o, req->argc, req->argv);
    if (!r || mt_outq_add_copy(&u->base.out, o->data, o->len) != 0) {
        if (r)
            mt_rreq_free(w, r);
        mt_stat_add(c->conf->stats, w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        return;
    }
    r->cmd = cmd;
    r->deadline_ms = mt_worker_now_ms(w) + c->conf->connect_timeout_ms;
    rup_push(u, r);
    mt_upstream_schedule(&u->base);
}

/*
 * The command as the verdict rewrote it (keys stripped of a prefix, arguments replaced):
 * fills argv (req->argc entries) and returns a request marked inline so it is re-encoded.
 */
static void verdict_rewrite(const mt_verdict_t *v, const redis_command_t *cmd,
                            const resp_request_t *req, resp_arg_t *argv, resp_request_t *out)
{
    memcpy(argv, req->argv, sizeof(resp_arg_t) * req->argc);
    if (v->strip) {
        uint32_t idx[64];
        uint32_t n = redis_command_keys(cmd, req->argc, req->argv, idx, 64);
        for (uint32_t i = 0; i < n && i < 64; i++) {
            resp_arg_t *k = &argv[idx[i]];
            uint32_t cut = (uint32_t)MT_MIN(v->strip, k->len);
            k->ptr += cut;
            k->len -= cut;
        }
    }
    for (uint32_t i = 0; i < v->n_sets; i++) {
        if (v->sets[i].index < req->argc)
            argv[v->sets[i].index] = (resp_arg_t){v->sets[i].value, v->sets[i].len};
    }
    *out = *req;
    out->argv = argv;
    out->is_inline = true;
}

static mt_wcluster_t *cluster_at(mt_worker_t *w, uint32_t idx, mt_wcluster_t *dflt)
{
    return idx && idx <= mt_rw(w)->bridge.n_cluster_index
               ? mt_rw(w)->bridge.cluster_by_index[idx - 1]
               : dflt;
}

/*
 * Prefix routing on a command with several keys: when they do not all take the first key's
 * route, MGET/MSET/DEL/UNLINK/EXISTS/TOUCH are split per service, anything else is refused
 * (it would need the keys in one place). Returns true when it answered or split.
 */
static bool sess_split_by_route(mt_rsess_t *s, const redis_command_t *cmd,
                                const resp_request_t *req, mt_wcluster_t *first,
                                uint32_t first_strip, uint64_t hold)
{
    mt_worker_t *w = s->base.w;
    uint32_t idx[64];
    uint32_t nk = redis_command_keys(cmd, req->argc, req->argv, idx, 64);
    if (nk < 2)
        return false;
    bool splittable = cmd->proxy == REDIS_PROXY_MULTI_KEY;
    uint32_t step = mt_rcmd_is(cmd, "mset") ? 2 : 1;
    if (splittable && (req->argc - 1) / step != nk)
        splittable = false;
    mt_wcluster_t *tsmall[64], **targets = tsmall;
    uint32_t ssmall[64], *strips = ssmall;
    if (nk > 64) {
        if (!splittable)
            nk = 64; /* checking the first 64 keys is enough to refuse */
        else {
            targets = malloc(sizeof(*targets) * nk);
            strips = malloc(sizeof(*strips) * nk);
            if (!targets || !strips) {
                free(targets); /* both came from malloc here (or are NULL) */
                free(strips);
                mt_rsess_reply_error(s, "ERR meltemi: out of memory");
                return true;
            }
        }
    }
    bool same = true;
    for (uint32_t i = 0; i < nk; i++) {
        const resp_arg_t *k = &req->argv[splittable ? 1 + i * step : idx[i]];
        uint32_t strip = 0;
        uint32_t ci =
            i == 0 ? 0 : mt_bridge_route_key(&mt_rw(w)->bridge, s->base.li, k->ptr, k->len, &strip);
        targets[i] = i == 0 ? first : cluster_at(w, ci, s->base.cluster);
        strips[i] = i == 0 ? first_strip : strip;
        same = same && targets[i] == first && strips[i] == first_strip;
    }
    bool handled = false;
    if (!same && !splittable) {
        mt_rsess_reply_error(s, "ERR meltemi: the keys of this command are routed to different "
                                "services");
        handled = true;
    } else if (!same) {
        mt_rreq_t *r = mt_rreq_new(w);
        if (!r) {
            mt_session_close(&s->base);
        } else {
            r->cmd = cmd;
            r->start_ns = uv_hrtime();
            r->deadline_ms = mt_worker_now_ms(w) + s->rconf->op_timeout_ms;
            r->hold_until_ms = hold;
            mt_rsess_push(s, r);
            mt_rsplit_by_route(r, req, step, targets, strips);
        }
        handled = true;
    }
    if (targets != tsmall)
        free(targets);
    if (strips != ssmall)
        free(strips);
    return handled;
}

/* form: "" or how this use differs from the command's supported one (" with BLOCK") */
static void sess_refuse(mt_rsess_t *s, const char *name, const char *form)
{
    char text[256];
    snprintf(text, sizeof(text),
             "ERR meltemi: '%s'%s is not supported through the proxy (it needs a dedicated "
             "upstream connection)",
             name, form);
    mt_rsess_reply_error(s, text);
}

/*
 * A command that would hold its shared upstream connection (and every client pipelined
 * behind it) until something happens elsewhere: XREAD/XREADGROUP ... BLOCK. The other
 * blocking commands are UNSUPPORTED in the table and never get here. Answers and returns
 * true when refused.
 */
static bool sess_refuse_blocking(mt_rsess_t *s, const redis_command_t *cmd,
                                 const resp_request_t *req)
{
    if (MT_LIKELY(!(cmd->flags & REDIS_CMD_BLOCKING)) ||
        !redis_command_can_block(cmd, req->argc, req->argv))
        return false;
    sess_refuse(s, cmd->name, " with BLOCK");
    return true;
}

/* A command on a listener with policies or filters: ask Lua, then carry out the verdict. */
static void sess_policy(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                        const char *frame)
{
    mt_worker_t *w = s->base.w;
    s->ran_chain = true;
    mt_bridge_request(&mt_rw(w)->bridge, s->base.li, cmd, req, s->base.id);
    mt_verdict_t *v = &mt_rw(w)->bridge.verdict;
    uint64_t hold = 0;
    if (v->delay_ms) {
        /* The loop clock is cached and whole milliseconds: refresh it and round up, so the
         * hold is never shorter than asked. */
        uv_update_time(&w->loop);
        hold = mt_worker_now_ms(w) + v->delay_ms + 1;
    }
    if (v->has_error || v->has_reply) {
        if (hold)
            sess_reply_held(s, v->reply.data, v->reply.len, hold);
        else
            sess_reply(s, v->reply.data, v->reply.len);
        return;
    }
    mt_wcluster_t *c = v->route && v->route <= mt_rw(w)->bridge.n_cluster_index
                           ? mt_rw(w)->bridge.cluster_by_index[v->route - 1]
                           : s->base.cluster;
    /* Only commands that can name several keys (first key != last key in the table, or
     * keys found by a procedure) need each key's route: SET, GET... skip the check. */
    bool many_keys = cmd->last_key != cmd->first_key || (cmd->flags & REDIS_CMD_MOVABLE_KEYS);
    if (many_keys && req->argc > 2 && !v->n_sets &&
        sess_split_by_route(s, cmd, req, c, v->strip, hold))
        return;
    const resp_request_t *use = req;
    resp_request_t rewritten;
    resp_arg_t small[16], *argv = NULL;
    if (v->strip || v->n_sets) {
        argv = req->argc <= 16 ? small : malloc(sizeof(resp_arg_t) * req->argc);
        if (!argv) {
            mt_rsess_reply_error(s, "ERR meltemi: out of memory");
            return;
        }
        verdict_rewrite(v, cmd, req, argv, &rewritten);
        use = &rewritten;
        /* a filter's msg:set may have written BLOCK into XREAD's options */
        if (v->n_sets && sess_refuse_blocking(s, cmd, use)) {
            if (argv != small)
                free(argv);
            return;
        }
    }
    for (uint32_t i = 0; i < v->n_mirrors; i++) {
        if (v->mirrors[i] <= mt_rw(w)->bridge.n_cluster_index)
            mirror_send(w, mt_rw(w)->bridge.cluster_by_index[v->mirrors[i] - 1], cmd, use);
    }
    mt_rreq_t *tail = s->tail;
    forward_to(s, c, cmd, use, frame, hold);
    if (mt_bridge_has_response(&mt_rw(w)->bridge, s->base.li) && s->tail && s->tail != tail &&
        !s->tail->done)
        s->tail->resp_chain = true;
    if (argv && argv != small)
        free(argv);
}
/* ---- local commands -----------------------------------------------------------------------------
 */

/* Constant-time: compares digests, so neither content nor length leaks through timing. Byte
 * strings with lengths: a password may contain NUL. */
static bool secret_equal(const char *want, size_t want_len, const char *got, size_t got_len)
{
    unsigned char a[EVP_MAX_MD_SIZE], b[EVP_MAX_MD_SIZE];
    unsigned int alen = 0, blen = 0;
    if (!EVP_Digest(want, want_len, a, &alen, EVP_sha256(), NULL) ||
        !EVP_Digest(got, got_len, b, &blen, EVP_sha256(), NULL) || alen != blen)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

/* Lifts the pre-auth parser limits (resp.h: RESP_UNAUTH_*) once the client has proved who it is. */
/* Before AUTH the parser keeps Redis's pre-auth frame limits and the client may have only a
 * little output queued (NOAUTH replies it does not read). */
static void sess_set_unauthenticated(mt_rsess_t *s, bool unauthenticated)
{
    s->parser.unauthenticated = unauthenticated;
    s->base.max_output = unauthenticated ? SESSION_UNAUTH_MAX_OUTPUT : MT_SESSION_MAX_OUTPUT;
}

static void sess_authenticated(mt_rsess_t *s)
{
    s->authenticated = true;
    sess_set_unauthenticated(s, false);
    mt_session_authenticated(&s->base);
}

/* RedisService authTimeout (only while a password is required and not given) and
 * idleTimeout, run by the session shell; again after a reload rebinds the session. */
static void sess_apply_timeouts(mt_rsess_t *s)
{
    const mt_redis_listener_conf_t *rc = s->rconf;
    bool auth_pending = rc->auth.password && !s->authenticated;
    mt_session_set_timeouts(&s->base, auth_pending ? rc->auth_timeout_ms : 0, rc->idle_timeout_ms);
}

static bool sess_check_credentials(mt_rsess_t *s, const resp_arg_t *user, const resp_arg_t *pass)
{
    const mt_auth_t *a = &s->rconf->auth;
    const char *want_user = a->username ? a->username : "default";
    size_t want_user_len = a->username ? a->username_len : strlen("default");
    bool user_ok =
        user ? secret_equal(want_user, want_user_len, user->ptr, user->len) : a->username == NULL;
    bool pass_ok = secret_equal(a->password, a->password_len, pass->ptr, pass->len);
    return user_ok && pass_ok;
}

static void sess_auth(mt_rsess_t *s, const resp_request_t *req)
{
    const mt_auth_t *a = &s->rconf->auth;
    if (req->argc > 3) {
        mt_rsess_reply_error(s, "ERR syntax error");
        return;
    }
    if (!a->password) {
        mt_rsess_reply_error(s,
                             "ERR AUTH <password> called without any password configured for the "
                             "default user. Are you sure your configuration is correct?");
        return;
    }
    const resp_arg_t *user = req->argc == 3 ? &req->argv[1] : NULL;
    const resp_arg_t *pass = &req->argv[req->argc - 1];
    if (sess_check_credentials(s, user, pass)) {
        sess_authenticated(s);
        sess_reply(s, "+OK\r\n", 5);
        return;
    }
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_AUTH_FAILURES, 1);
    if (user)
        mt_rsess_reply_error(s, "WRONGPASS invalid username-password pair or user is disabled.");
    else
        mt_rsess_reply_error(s, "ERR invalid password");
}

/* HELLO [protover [AUTH user pass] [SETNAME name]]: authenticates here, then answers locally. */
static void sess_hello(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    bool needs_auth = s->rconf->auth.password && !s->authenticated;
    for (uint32_t i = 2; i < req->argc; i++) {
        const resp_arg_t *a = &req->argv[i];
        if (a->len == 4 && strncasecmp(a->ptr, "auth", 4) == 0 && i + 2 < req->argc) {
            if (!s->rconf->auth.password) {
                mt_rsess_reply_error(s,
                                     "ERR AUTH <password> called without any password configured "
                                     "for the default user. Are you sure your configuration is "
                                     "correct?");
                return;
            }
            if (!sess_check_credentials(s, &req->argv[i + 1], &req->argv[i + 2])) {
                mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_AUTH_FAILURES, 1);
                mt_rsess_reply_error(s, "WRONGPASS invalid username-password pair or user is "
                                        "disabled.");
                return;
            }
            sess_authenticated(s);
            needs_auth = false;
            i += 2;
        }
    }
    if (needs_auth) {
        mt_rsess_reply_error(s,
                             "NOAUTH HELLO must be called with the client already authenticated, "
                             "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                             "authenticate the client and select the RESP protocol version at the "
                             "same time");
        return;
    }
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    o->len = 0;
    redis_local_reply(&s->lctx, cmd, req->argc, req->argv, o);
    sess_reply(s, o->data, o->len);
}

/*
 * An HTTP request sent to a Redis port (a browser form, an SSRF) arrives as inline commands:
 * "POST / HTTP/1.1", "Host: ...", headers, then a body that would run with the credentials
 * meltemi holds for the upstream. Like redis-server (securityWarningCommand) the connection
 * is closed at the first POST or Host: command, before anything after it is read. Only
 * unknown commands get here, so known commands pay nothing for the check.
 */
static bool sess_cross_protocol(mt_rsess_t *s, const resp_request_t *req)
{
    const resp_arg_t *a = &req->argv[0];
    if (!((a->len == 4 && strncasecmp(a->ptr, "post", 4) == 0) ||
          (a->len == 5 && strncasecmp(a->ptr, "host:", 5) == 0)))
        return false;
    char peer[INET6_ADDRSTRLEN + 8];
    mt_warn("listener %s: possible security attack from %s: an HTTP request ('%.*s') was sent "
            "to a Redis port (cross-protocol scripting); connection closed",
            s->base.conf->name, mt_session_peer(&s->base, peer, sizeof(peer)), (int)a->len, a->ptr);
    mt_stat_add(s->base.conf->stats, s->base.w->id, MT_ST_CROSS_PROTOCOL, 1);
    mt_session_close(&s->base);
    return true;
}

/*
 * After a refused MULTI the client may believe it is queueing a transaction: until its EXEC
 * or DISCARD nothing is applied. Commands are answered an error saying so (Redis would have
 * queued them), EXEC gets Redis's answer for a transaction with errors, DISCARD +OK (what
 * Redis answers to a DISCARD after MULTI, and what clients check for), a nested MULTI
 * Redis's text. QUIT still closes. Answers and returns true unless the command is QUIT.
 */
static bool sess_in_refused_tx(mt_rsess_t *s, const redis_command_t *cmd)
{
    if (mt_rcmd_is(cmd, "exec")) {
        s->tx_refused = false;
        mt_rsess_reply_error(s, "EXECABORT Transaction discarded because of previous errors.");
    } else if (mt_rcmd_is(cmd, "discard")) {
        s->tx_refused = false;
        sess_reply(s, "+OK\r\n", 5);
    } else if (mt_rcmd_is(cmd, "multi")) {
        mt_rsess_reply_error(s, "ERR MULTI calls can not be nested");
    } else if (mt_rcmd_is(cmd, "quit")) {
        return false;
    } else {
        char text[256];
        snprintf(text, sizeof(text),
                 "ERR meltemi: '%s' not applied: MULTI was refused on this connection, so "
                 "nothing is sent to Redis until EXEC or DISCARD",
                 cmd->name);
        mt_rsess_reply_error(s, text);
    }
    return true;
}

static void sess_command(mt_rsess_t *s, const resp_request_t *req, const char *frame)
{
    mt_worker_t *w = s->base.w;
    /* A reload is picked up at the next command; commands in flight keep the route they
     * were sent on. */
    if (MT_UNLIKELY(s->base.snap != w->snap)) {
        mt_session_rebind(&s->base);
        s->rconf = mt_redis_listener(s->base.conf);
        sess_set_unauthenticated(s, !s->authenticated && s->rconf->auth.password);
        sess_apply_timeouts(s);
    }
    mt_stat_add(s->base.conf->stats, w->id, MT_ST_REQUESTS_TOTAL, 1);
    const redis_command_t *cmd = redis_command_lookup(req->argv[0].ptr, req->argv[0].len);
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    if (!cmd) {
        if (sess_cross_protocol(s, req))
            return;
        o->len = 0;
        redis_reply_unknown_command(o, req->argc, req->argv);
        sess_reply(s, o->data, o->len);
        return;
    }
    if (!redis_command_arity_ok(cmd, req->argc)) {
        o->len = 0;
        redis_reply_wrong_arity(o, cmd->name);
        sess_reply(s, o->data, o->len);
        return;
    }
    bool local = cmd->proxy == REDIS_PROXY_LOCAL;
    if (!s->authenticated && s->rconf->auth.password &&
        !(local &&
          (mt_rcmd_is(cmd, "auth") || mt_rcmd_is(cmd, "hello") || mt_rcmd_is(cmd, "quit")))) {
        mt_rsess_reply_error(s, "NOAUTH Authentication required.");
        return;
    }
    /* Before anything can act on the command: local answers, Lua (a filter could mirror
     * it), splitting, cluster routing. */
    if (MT_UNLIKELY(s->tx_refused) && sess_in_refused_tx(s, cmd))
        return;
    switch (cmd->proxy) {
    case REDIS_PROXY_LOCAL:
        if (mt_rcmd_is(cmd, "auth")) {
            sess_auth(s, req);
        } else if (mt_rcmd_is(cmd, "hello")) {
            sess_hello(s, cmd, req);
        } else {
            o->len = 0;
            redis_local_reply(&s->lctx, cmd, req->argc, req->argv, o);
            sess_reply(s, o->data, o->len);
            if (s->lctx.quit)
                s->base.finishing = true;
        }
        return;
    case REDIS_PROXY_UNSUPPORTED: {
        if (mt_rcmd_is(cmd, "cluster") && s->base.cluster &&
            mt_redis_cluster(s->base.cluster->conf)->mode == MT_REDIS_CLUSTER) {
            sess_forward(s, cmd, req, frame);
            return;
        }
        if (mt_rcmd_is(cmd, "multi"))
            s->tx_refused = true;
        sess_refuse(s, cmd->name, "");
        return;
    }
    default:
        if (sess_refuse_blocking(s, cmd, req))
            return;
        if (MT_UNLIKELY(mt_bridge_has_chain(&mt_rw(w)->bridge, s->base.li)) &&
            s->base.snap == w->snap)
            sess_policy(s, cmd, req, frame);
        else
            sess_forward(s, cmd, req, frame);
        return;
    }
}

/* ---- session I/O --------------------------------------------------------------------------------
 */

/* ---- session shell hooks */

/* Orphan what upstreams still owe us; free what is already answered. */
static void sess_on_close(mt_session_t *base)
{
    mt_rsess_t *s = (mt_rsess_t *)base;
    mt_worker_t *w = base->w;
    mt_rreq_t *next;
    for (mt_rreq_t *r = s->head; r; r = next) {
        next = r->next;
        if (r->done)
            mt_rreq_free(w, r);
        else
            r->sess = NULL;
    }
    s->head = s->tail = NULL;
    mt_timer_stop(&w->timers, &s->hold_timer);
    if (s->ran_chain)
        mt_bridge_conn_closed(&mt_rw(w)->bridge, base->id);
}

static void sess_on_closed(mt_session_t *base)
{
    mt_rsess_t *s = (mt_rsess_t *)base;
    resp_req_parser_free(&s->parser);
    free(s->lctx.client_name);
}

static void sess_on_data(mt_session_t *base)
{
    mt_rsess_t *s = (mt_rsess_t *)base;
    mt_buf_t *b = base->rbuf;
    while (b && b->pos < b->last && !base->finishing && !base->closing) {
        resp_request_t req;
        const char *err = NULL;
        mt_status_t rc = resp_parse_request(&s->parser, b->pos, mt_buf_unread(b), &req, &err);
        if (rc == MT_AGAIN)
            break;
        if (rc == MT_ERROR) {
            char text[300];
            snprintf(text, sizeof(text), "ERR %s", err ? err : "Protocol error");
            mt_stat_add(base->conf->stats, base->w->id, MT_ST_PROTOCOL_ERRORS, 1);
            mt_rsess_reply_error(s, text);
            base->finishing = true;
            mt_session_pause(base);
            break;
        }
        const char *frame = b->pos;
        if (req.argc > 0)
            sess_command(s, &req, frame);
        b->pos += req.frame_len;
    }
}

static void redis_accept(mt_wlistener_t *l, uv_stream_t *server)
{
    mt_rsess_t *s = calloc(1, sizeof(*s));
    if (!s || mt_session_accept(&s->base, l, server, &redis_sess_ops) != 0)
        return;
    s->rconf = mt_redis_listener(s->base.conf);
    s->lctx.client_id = s->base.id;
    s->lctx.mode = "standalone";
    resp_req_parser_init(&s->parser, &resp_default_limits);
    sess_set_unauthenticated(s, s->rconf->auth.password != NULL);
    sess_apply_timeouts(s);
    mt_session_resume(&s->base);
}

/* ---- the proxy's registry entry ------------------------------------------------------------ */

static int redis_worker_start(mt_worker_t *w)
{
    mt_redis_worker_t *rw = calloc(1, sizeof(*rw));
    if (!rw)
        return -1;
    w->proxy[MT_PROTO_REDIS] = rw;
    rw->bridge.w = w;
    rw->bridge.request_ref = rw->bridge.route_key_ref = LUA_NOREF;
    rw->bridge.conn_closed_ref = rw->bridge.response_ref = LUA_NOREF;
    if (w->L)
        mt_bridge_open(&rw->bridge, w);
    return 0;
}

static void redis_snapshot_applied(mt_worker_t *w)
{
    mt_bridge_apply(&mt_rw(w)->bridge);
}

static void redis_worker_free(mt_worker_t *w)
{
    mt_redis_worker_t *rw = mt_rw(w);
    if (!rw)
        return;
    mt_bridge_close(&rw->bridge);
    free(rw);
    w->proxy[MT_PROTO_REDIS] = NULL;
}

static void redis_cluster_free(mt_wcluster_t *c)
{
    if (mt_rtopo(c))
        mt_rcluster_free(mt_rtopo(c));
    c->proxy_state = NULL;
}

const mt_proxy_ops_t mt_proxy_redis = {
    .name = "redis",
    .protocol = MT_PROTO_REDIS,
    .worker_start = redis_worker_start,
    .accept = redis_accept,
    .snapshot_applied = redis_snapshot_applied,
    .tick = redis_tick,
    .worker_stop = redis_worker_stop,
    .worker_free = redis_worker_free,
    .cluster_free = redis_cluster_free,
    .read_cluster = mt_redis_read_cluster,
    .read_listener = mt_redis_read_listener,
    .free_cluster = mt_redis_free_cluster,
    .free_listener = mt_redis_free_listener,
};
