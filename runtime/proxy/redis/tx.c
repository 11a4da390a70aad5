/*
 * tx.c - Redis transactions through the proxy (issue 10): MULTI / EXEC / DISCARD / WATCH /
 * UNWATCH on an exclusive upstream connection leased for the client (mt_upstream_lease,
 * bounded by the cluster's maxConnections) from its WATCH or MULTI until its EXEC, DISCARD
 * or UNWATCH; then given back clean once its last reply is in, or closed when its state is
 * unknown (the client went away, the connection failed).
 *
 * Where the lease goes: the one master of a single-master PROXY-mode service, leased at
 * MULTI (so a pool at its bound refuses MULTI itself, and nothing after it is applied); in
 * cluster mode the master of the transaction's slot, and in PROXY mode with several
 * endpoints (or with prefix routes) the endpoint of its keys, leased at WATCH or at the first
 * queued command (MULTI is answered here and sent on the lease just before it). Every key of
 * the transaction must go to that one place: another slot answers CROSSSLOT as Redis Cluster
 * does, another endpoint or service a clear error, and EXEC then answers EXECABORT (Redis
 * aborts a transaction with a queueing error) after a DISCARD upstream.
 *
 * Blocking commands (BLPOP, BZMPOP, XREAD ... BLOCK) take a lease of their own for one
 * command (tx_forward_blocking), from the same bounded pool: a pool at its bound answers at
 * once; a client that disconnects while blocked closes its lease (Redis forgets it).
 *
 * Queued commands go through the policy chain like any other (filters and faults see each
 * one; an error a filter or fault answers fails the transaction), but are not mirrored: a
 * mirror would apply them at once. Replies (+QUEUED, EXEC's array) are Redis's, relayed.
 *
 * Order: a client's commands reach Redis in the order it sent them, as on one connection. A
 * new lease waits until what the client sent before it (on shared connections) is answered
 * (the gate); after EXEC the lease stays the client's until its last reply is in, and what
 * goes to the same endpoint meanwhile goes on it.
 *
 * The lease dies (the server closed it, a timeout): what was on it fails with the upstream's
 * error; a transaction being queued then aborts at EXEC, and one whose keys were watched
 * answers EXEC with nil (the watched keys may have changed), so a client's WATCH retry loop
 * runs again. Nothing is ever re-sent, so nothing is applied twice.
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TX_MAX_KEYS 64

static const char EXECABORT[] = "EXECABORT Transaction discarded because of previous errors.";
static const char MULTI_CMD[] = "*1\r\n$5\r\nMULTI\r\n";
static const char DISCARD_CMD[] = "*1\r\n$7\r\nDISCARD\r\n";

static void tx_reset(mt_rsess_t *s)
{
    if (s->tx.shared) {
        s->tx.lease = NULL; /* the shared connection was never the session's */
        s->tx.shared = false;
    }
    s->tx.state = RTX_NONE;
    s->tx.multi_pending = false;
    s->tx.failed = false;
    s->tx.watch_lost = false;
    s->tx.slot = -1;
}

/* Gives the lease up now (it goes back after its last reply); only when nothing waits. */
static void tx_let_go(mt_rsess_t *s)
{
    mt_rup_t *u = s->tx.lease;
    s->tx.lease = NULL;
    if (u)
        mt_rup_release(u, true);
}

/* Puts r (bytes in r->frame) on the lease, or behind the gate. */
static void tx_put(mt_rsess_t *s, mt_rreq_t *r)
{
    mt_worker_t *w = s->base.w;
    if (s->tx.gate_ahead) {
        r->unext = NULL;
        if (s->tx.pending_tail)
            s->tx.pending_tail->unext = r;
        else
            s->tx.pending_head = r;
        s->tx.pending_tail = r;
        return;
    }
    if (mt_rup_send_kept(s->tx.lease, r))
        return;
    if (r->kind == RREQ_USER)
        mt_rreq_complete_error(w, r, "ERR meltemi: out of memory");
    else
        mt_rreq_free(w, r);
}

/* A command of the proxy's own on the lease (MULTI before the first queued command, DISCARD
 * of a failed transaction), its reply dropped. */
static int tx_internal(mt_rsess_t *s, const char *bytes, size_t len)
{
    mt_worker_t *w = s->base.w;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r || mt_slice_copy(&w->pool, &w->own, bytes, len, &r->frame) != 0) {
        if (r)
            mt_rreq_free(w, r);
        return -1;
    }
    r->kind = RREQ_IGNORE;
    r->deadline_ms = mt_worker_now_ms(w) + s->rconf->op_timeout_ms;
    tx_put(s, r);
    return 0;
}

/* The client's database on a new lease (its old one died): SELECT first, reply dropped. */
static int tx_select_internal(mt_rsess_t *s, mt_rup_t *u)
{
    char cmd[64];
    char num[16];
    int nlen = snprintf(num, sizeof(num), "%d", (int)s->tx.db);
    int n = snprintf(cmd, sizeof(cmd), "*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n", nlen, num);
    u->db = s->tx.db;
    return tx_internal(s, cmd, (size_t)n);
}

/* The client's CLIENT NO-EVICT / NO-TOUCH on a new lease (its old one died), replies dropped. */
static int tx_flags_internal(mt_rsess_t *s, mt_rup_t *u)
{
    static const char NO_EVICT_ON[] = "*3\r\n$6\r\nCLIENT\r\n$8\r\nNO-EVICT\r\n$2\r\non\r\n";
    static const char NO_TOUCH_ON[] = "*3\r\n$6\r\nCLIENT\r\n$8\r\nNO-TOUCH\r\n$2\r\non\r\n";
    u->client_flags = s->tx.client_flags;
    if ((s->tx.client_flags & RCONN_NO_EVICT) &&
        tx_internal(s, NO_EVICT_ON, sizeof(NO_EVICT_ON) - 1) != 0)
        return -1;
    if ((s->tx.client_flags & RCONN_NO_TOUCH) &&
        tx_internal(s, NO_TOUCH_ON, sizeof(NO_TOUCH_ON) - 1) != 0)
        return -1;
    return 0;
}

/* Sends what waited behind the gate, in order. */
static void tx_gate_open(mt_rsess_t *s)
{
    mt_rreq_t *r = s->tx.pending_head;
    s->tx.pending_head = s->tx.pending_tail = NULL;
    s->tx.gate_ahead = 0;
    while (r) {
        mt_rreq_t *next = r->unext;
        tx_put(s, r);
        r = next;
    }
}

void mt_rtx_popped(mt_rsess_t *s)
{
    if (--s->tx.gate_ahead == 0)
        tx_gate_open(s);
}

/* What waited behind the gate fails with text (the lease died before it was sent). */
static void tx_fail_pending(mt_rsess_t *s, const char *text)
{
    mt_worker_t *w = s->base.w;
    mt_rreq_t *r = s->tx.pending_head;
    s->tx.pending_head = s->tx.pending_tail = NULL;
    s->tx.gate_ahead = 0;
    while (r) {
        mt_rreq_t *next = r->unext;
        if (r->kind == RREQ_USER && r->sess)
            mt_rreq_complete_error(w, r, text);
        else
            mt_rreq_free(w, r);
        r = next;
    }
}

/* A queued command answered with an error here: Redis would flag the transaction. */
static void tx_queue_error(mt_rsess_t *s, const char *text, uint64_t hold_until_ms)
{
    mt_rsess_reply_error_at(s, text, hold_until_ms);
    if (s->tx.state == RTX_QUEUED)
        s->tx.failed = true;
}

void mt_rtx_answered_locally(mt_rsess_t *s, bool error)
{
    if (error && s->tx.state == RTX_QUEUED)
        s->tx.failed = true;
}

/* ---- where a transaction goes ------------------------------------------------------------ */

static bool is_replica(const mt_wcluster_t *c, uint32_t i)
{
    const bool *replica = mt_redis_cluster(c->conf)->replica;
    return replica && replica[i];
}

/* PROXY mode: the only master of c, or NULL when there are several. */
static mt_wendpoint_t *single_master(mt_wcluster_t *c)
{
    mt_wendpoint_t *found = NULL;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (is_replica(c, i))
            continue;
        if (found)
            return NULL;
        found = c->eps[i];
    }
    return found;
}

typedef struct tx_target {
    mt_wendpoint_t *ep; /* NULL: a keyless command, which may go to any master */
    int32_t slot;       /* cluster mode, keyed: the keys' slot; else -1 */
} tx_target_t;

static const char *service_of(const mt_wcluster_t *c)
{
    return c->conf->service ? c->conf->service : c->conf->name;
}

/* Where the keys of cmd go on cluster c. NULL, or the error to answer (text valid until the
 * next call). */
static const char *tx_target(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                             const resp_request_t *req, tx_target_t *t)
{
    static char text[300];
    t->ep = NULL;
    t->slot = -1;
    if (!c || c->n_eps == 0) {
        snprintf(text, sizeof(text), "ERR meltemi: no upstream host for %s",
                 c ? service_of(c) : s->base.conf->name);
        return text;
    }
    uint32_t idx[TX_MAX_KEYS];
    uint32_t nk = redis_command_keys(cmd, req->argc, req->argv, idx, TX_MAX_KEYS);
    if (nk > TX_MAX_KEYS)
        return "ERR meltemi: more than 64 keys in one command of a transaction";
    bool cluster = mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER;
    if (cluster) {
        if (nk == 0)
            return NULL;
        uint16_t slot = redis_slot_of_key(req->argv[idx[0]].ptr, req->argv[idx[0]].len);
        for (uint32_t i = 1; i < nk; i++) {
            if (redis_slot_of_key(req->argv[idx[i]].ptr, req->argv[idx[i]].len) != slot)
                return "CROSSSLOT Keys in request don't hash to the same slot";
        }
        t->slot = slot;
        t->ep = mt_rcluster_slot_master(c, slot);
        if (!t->ep) {
            snprintf(text, sizeof(text),
                     "TRYAGAIN meltemi: the slot map of %s is not known yet; retry", service_of(c));
            return text;
        }
        return NULL;
    }
    mt_wendpoint_t *one = single_master(c);
    if (one || nk == 0) {
        t->ep = one;
        return NULL;
    }
    /* several endpoints, keys hashed over them (as mt_rroute_endpoint does) */
    for (uint32_t i = 0; i < nk; i++) {
        mt_wendpoint_t *ep =
            mt_rproxy_endpoint(c, &req->argv[idx[i]], s->rconf->enable_hashtagging);
        if (t->ep && ep != t->ep) {
            snprintf(text, sizeof(text),
                     "ERR meltemi: the keys of a transaction must all go to one endpoint of %s "
                     "(use a {hash tag})",
                     service_of(c));
            return text;
        }
        t->ep = ep;
    }
    return NULL;
}

/* A master for a keyless first command: the slot map's first, or PROXY mode's first. */
static mt_wendpoint_t *any_master(mt_wcluster_t *c)
{
    if (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER)
        return mt_rcluster_slot_master(c, 0);
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (!is_replica(c, i))
            return c->eps[i];
    }
    return c->eps[0];
}

/* Whether a command for t may join the transaction leased on s->tx.lease; else the error. */
static const char *tx_compatible(mt_rsess_t *s, mt_wcluster_t *c, const tx_target_t *t)
{
    mt_rup_t *u = s->tx.lease;
    if (!t->ep)
        return NULL; /* keyless: runs where the transaction runs */
    if (u->base.ep->cluster != c)
        return "ERR meltemi: the keys of a transaction must all go to one destination (prefix "
               "routes send them to different services)";
    if (t->slot >= 0 && s->tx.slot >= 0 && t->slot != s->tx.slot)
        return "CROSSSLOT Keys in request don't hash to the same slot";
    if (t->ep != u->base.ep)
        return mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER
                   ? "CROSSSLOT Keys in request don't hash to the same slot"
                   : "ERR meltemi: the keys of a transaction must all go to one endpoint (use a "
                     "{hash tag})";
    return NULL;
}

/* Leases a connection to ep for s; NULL after answering why (with the error text Redis
 * clients show). */
static mt_rup_t *tx_lease(mt_rsess_t *s, mt_wendpoint_t *ep, uint64_t hold_until_ms)
{
    const char *why = NULL;
    mt_rup_t *u = ep ? mt_rup_lease(ep, s, &why) : NULL;
    if (u) {
        s->tx.lease = u;
        /* what the client sent before is answered first (it went on other connections) */
        s->tx.gate_ahead = s->base.pending;
        if ((s->tx.db && tx_select_internal(s, u) != 0) ||
            (s->tx.client_flags && tx_flags_internal(s, u) != 0)) {
            mt_session_close(&s->base);
            return NULL;
        }
        return u;
    }
    char text[400], lbl[256];
    if (!ep)
        snprintf(text, sizeof(text),
                 "ERR meltemi: no master for the transaction (slot map not "
                 "known yet)");
    else if (why && strncmp(why, "meltemi: ", 9) == 0)
        snprintf(text, sizeof(text), "ERR %s", why);
    else
        snprintf(text, sizeof(text), "ERR meltemi: upstream %s unavailable: %s",
                 mt_rendpoint_label(ep, lbl, sizeof(lbl)), why ? why : "?");
    mt_stat_add(ep ? ep->cluster->conf->stats : s->base.conf->stats, s->base.w->id,
                MT_ST_UPSTREAM_RQ_ERRORS, 1);
    mt_rsess_reply_error_at(s, text, hold_until_ms);
    return NULL;
}

/* A client's command on the lease (kept by reference, or re-encoded when inline), answered
 * by deadline_ms (0: whenever Redis answers). */
static void tx_send_until(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                          const char *frame, uint64_t hold_until_ms, uint64_t deadline_ms)
{
    mt_worker_t *w = s->base.w;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r) {
        mt_session_close(&s->base);
        return;
    }
    r->cmd = cmd;
    r->deadline_ms = deadline_ms;
    r->hold_until_ms = hold_until_ms;
    if (req->is_inline) {
        resp_out_t *o = &mt_rw(w)->scratch;
        o->len = 0;
        resp_out_command(o, req->argc, req->argv);
        if (mt_slice_copy(&w->pool, &w->own, o->data, o->len, &r->frame) != 0) {
            mt_rreq_free(w, r);
            mt_session_close(&s->base);
            return;
        }
    } else {
        mt_buf_ref(s->base.rbuf);
        r->frame = (mt_slice_t){s->base.rbuf, frame, (uint32_t)req->frame_len};
    }
    mt_rsess_push(s, r);
    tx_put(s, r);
}

static void tx_send(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                    const char *frame, uint64_t hold_until_ms)
{
    tx_send_until(s, cmd, req, frame, hold_until_ms,
                  mt_worker_now_ms(s->base.w) + s->rconf->op_timeout_ms);
}

/* ---- the hook in mt_rforward_to -------------------------------------------------------- */

/* Between WATCH and MULTI, and after EXEC until the lease goes back: what goes to the
 * lease's endpoint goes on it (ordered with the transaction, as on one connection to Redis);
 * the rest is forwarded. */
static bool tx_forward_pinned(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                              const resp_request_t *req, const char *frame, uint64_t hold)
{
    bool selected = s->tx.db != 0 || s->tx.selects_in_flight || s->tx.client_flags;
    if (!s->tx.lease && !selected)
        return false;
    tx_target_t t;
    if (tx_target(s, c, cmd, req, &t) != NULL)
        return false; /* the normal path answers the same error */
    mt_wendpoint_t *at =
        t.ep ? t.ep
             : (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER ? NULL : single_master(c));
    if (!s->tx.lease && at && at == single_master(s->base.cluster) && !tx_lease(s, at, hold))
        return true; /* the database's lease died: a new one, selected, or the reason */
    if (!s->tx.lease || at != s->tx.lease->base.ep || s->tx.lease->base.ep->cluster != c) {
        if (!selected)
            return false;
        char text[300];
        if (s->tx.db || !s->tx.client_flags)
            snprintf(text, sizeof(text),
                     "ERR meltemi: database %d is selected on %s; '%s' goes elsewhere (a prefix "
                     "route), where only database 0 is served",
                     (int)s->tx.db, service_of(s->base.cluster), cmd->name);
        else
            snprintf(text, sizeof(text),
                     "ERR meltemi: CLIENT NO-EVICT/NO-TOUCH is set on this client's connection "
                     "to %s; '%s' goes elsewhere (a prefix route)",
                     service_of(s->base.cluster), cmd->name);
        mt_rsess_reply_error_at(s, text, hold);
        return true;
    }
    tx_send(s, cmd, req, frame, hold);
    return true;
}

/*
 * A command that can block (BLPOP, BZMPOP, XREAD ... BLOCK): on a connection leased for it
 * until it answers, so nobody else waits behind it. Its reply is due by its own timeout plus
 * opTimeout (never, for a timeout of 0). Behind a lease the session already holds (keys
 * watched, a transaction draining) when it goes to the same endpoint, as on one connection.
 */
static bool tx_forward_blocking(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                                const resp_request_t *req, const char *frame, uint64_t hold)
{
    tx_target_t t;
    const char *err = tx_target(s, c, cmd, req, &t);
    if (err) {
        mt_rsess_reply_error_at(s, err, hold);
        return true;
    }
    mt_wendpoint_t *ep = t.ep ? t.ep : any_master(c);
    mt_rup_t *u = s->tx.lease;
    if (u && (u->base.ep != ep || u->base.ep->cluster != c)) {
        if (s->tx.state != RTX_NONE || s->tx.pending_head) {
            char text[300];
            snprintf(text, sizeof(text),
                     "ERR meltemi: '%s' goes to another master than the keys this connection "
                     "watches",
                     cmd->name);
            mt_rsess_reply_error_at(s, text, hold);
            return true;
        }
        tx_let_go(s);
    }
    if (!s->tx.lease && !tx_lease(s, ep, hold))
        return true; /* the pool is at its bound, or the endpoint down: said at once */
    uint64_t timeout_ms = 0, deadline = 0;
    if (redis_command_block_timeout_ms(cmd, req->argc, req->argv, &timeout_ms) && timeout_ms)
        deadline = mt_worker_now_ms(s->base.w) + timeout_ms + s->rconf->op_timeout_ms;
    tx_send_until(s, cmd, req, frame, hold, deadline);
    if (s->tail)
        s->tail->blocking = true;
    return true; /* the lease goes back after the reply (mt_rtx_after_reply) */
}

bool mt_rtx_forward(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                    const resp_request_t *req, const char *frame, uint64_t hold_until_ms)
{
    bool watch = mt_rcmd_is(cmd, "watch");
    if (watch && s->tx.state == RTX_QUEUED) {
        mt_rsess_reply_error_at(s, "ERR WATCH inside MULTI is not allowed", hold_until_ms);
        return true;
    }
    if (!watch && s->tx.state != RTX_QUEUED) {
        if (MT_UNLIKELY(cmd->flags & REDIS_CMD_BLOCKING) &&
            redis_command_can_block(cmd, req->argc, req->argv))
            return tx_forward_blocking(s, c, cmd, req, frame, hold_until_ms);
        return tx_forward_pinned(s, c, cmd, req, frame, hold_until_ms);
    }
    tx_target_t t;
    const char *err = tx_target(s, c, cmd, req, &t);
    if (!err && watch && s->tx.state == RTX_NONE && s->tx.lease && !s->tx.pending_head &&
        (t.ep != s->tx.lease->base.ep || s->tx.lease->base.ep->cluster != c))
        tx_let_go(s); /* a finished transaction's lease elsewhere: this one needs another */
    if (!err && s->tx.lease)
        err = tx_compatible(s, c, &t);
    if (err) {
        tx_queue_error(s, err, hold_until_ms);
        return true;
    }
    bool fresh = !s->tx.lease;
    if (!s->tx.lease) {
        if (!tx_lease(s, t.ep ? t.ep : any_master(c), hold_until_ms)) {
            if (s->tx.state == RTX_QUEUED) {
                /* nothing is applied until EXEC or DISCARD (session.c's refused state) */
                tx_reset(s);
                s->tx_refused = true;
            }
            return true;
        }
        if (s->tx.multi_pending && tx_internal(s, MULTI_CMD, sizeof(MULTI_CMD) - 1) != 0) {
            mt_session_close(&s->base);
            return true;
        }
    }
    s->tx.multi_pending = false;
    if (t.slot >= 0)
        s->tx.slot = t.slot;
    if (watch)
        s->tx.state = RTX_WATCHING;
    bool queued = s->tx.state == RTX_QUEUED;
    tx_send(s, cmd, req, frame, hold_until_ms);
    if (queued && s->tail)
        s->tail->queued = true;
    /* cluster mode: a stale slot map's MOVED to this first command is followed (tx_moved) */
    if (fresh && t.ep && s->tail && mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER &&
        s->rconf->enable_redirection)
        s->tail->lease_first = true;
    return true;
}

/*
 * The first command on a new lease (WATCH, or the first queued one after MULTI) was answered
 * MOVED: the slot map was stale. Nothing was applied (a MOVED inside MULTI only flags the
 * transaction, which the DISCARD here drops), so the lease goes to the master MOVED names and
 * the command is sent again there (after MULTI, when queueing). Only when nothing else is
 * owed on the old lease: otherwise Redis's MOVED stands and EXEC aborts.
 */
/* The transaction's commands still owed on u after r (the client pipelined them: queued
 * ones, then at most its EXEC or DISCARD, nothing else), or false. */
static bool tx_rest_movable(mt_rsess_t *s, mt_rup_t *u, bool queued)
{
    for (mt_rreq_t *x = u->head; x; x = x->unext) {
        if (!queued || x->kind != RREQ_USER || x->sess != s || !x->frame.buf ||
            !(x->queued || (x->tx_end && !x->unext)))
            return false;
    }
    return true;
}

/* Moves what tx_rest_movable accepted from u to n, in order; on u a silent stand-in takes
 * each one's place (Redis still answers it there: MOVED, EXECABORT; nothing is applied). */
static bool tx_move_rest(mt_worker_t *w, mt_rup_t *u, mt_rup_t *n, bool *ended)
{
    mt_rreq_t *x = u->head;
    u->head = u->tail = NULL;
    u->base.inflight = 0; /* the stand-ins count again */
    bool ok = true;
    while (x) {
        mt_rreq_t *next = x->unext;
        mt_rreq_t *stand_in = mt_rreq_new(w);
        if (stand_in) {
            stand_in->kind = RREQ_DROP;
            stand_in->deadline_ms = x->deadline_ms;
            mt_rup_push(u, stand_in);
        }
        ok = ok && stand_in;
        *ended = *ended || x->tx_end;
        x->unext = NULL;
        x->redirects++;
        if (!mt_rup_send_kept(n, x)) {
            mt_rreq_complete_error(w, x, "ERR meltemi: out of memory");
            ok = false;
        }
        x = next;
    }
    return ok;
}

bool mt_rtx_moved(mt_rup_t *u, mt_rreq_t *r, const char *p, size_t len)
{
    mt_rsess_t *s = u->lessee;
    bool queued = r->queued;
    if (!s || s->tx.lease != u || r->sess != s || s->tx.pending_head || !r->frame.buf ||
        r->redirects || (u->head && !tx_rest_movable(s, u, queued)))
        return false;
    mt_wcluster_t *c = u->base.ep->cluster;
    mt_wendpoint_t *ep = mt_rcluster_moved(c, p, len);
    if (!ep || ep == u->base.ep)
        return false;
    s->tx.lease = NULL;
    r->redirects++;
    r->lease_first = false;
    r->unext = NULL;
    const char *why = NULL;
    mt_rup_t *n = mt_rup_lease(ep, s, &why);
    bool on_n = n && (!queued || mt_rup_queue_ignored(n, MULTI_CMD, sizeof(MULTI_CMD) - 1) == 0) &&
                mt_rup_send_kept(n, r);
    bool ended = false, all_moved = true;
    if (on_n && u->head)
        all_moved = tx_move_rest(u->base.w, u, n, &ended);
    /* the old lease: a transaction still open there is discarded (its MULTI was flagged by
     * the MOVED), then it goes back after its last reply; closed if that could not be said */
    bool clean =
        !queued || ended || mt_rup_queue_ignored(u, DISCARD_CMD, sizeof(DISCARD_CMD) - 1) == 0;
    mt_rup_release(u, clean);
    if (!on_n) {
        char text[400];
        snprintf(text, sizeof(text), "ERR meltemi: redirected to %s:%u, which is unavailable: %s",
                 ep->address, ep->port, why ? why : "out of memory");
        if (n)
            mt_rup_release(n, false);
        n = NULL;
        mt_rreq_complete_error(u->base.w, r, text);
    }
    if (!on_n || !all_moved) {
        if (queued)
            s->tx.failed = true;
        else
            s->tx.watch_lost = true; /* the WATCH did not happen: EXEC answers nil */
    }
    s->tx.lease = n;
    s->tx.gate_ahead = 0;
    return true;
}

bool mt_rtx_redirected(mt_rup_t *u, mt_rreq_t *r, const char *p, size_t len)
{
    bool moved = len > 7 && memcmp(p, "-MOVED ", 7) == 0;
    bool ask = len > 5 && memcmp(p, "-ASK ", 5) == 0;
    mt_wcluster_t *c = u->base.ep->cluster;
    if ((!moved && !ask) || !mt_rtopo(c))
        return false;
    if (moved)
        mt_rcluster_moved(c, p, len); /* the slot map learns where the slot is now */
    mt_rsess_t *s = r->sess;
    if (s && s->tx.lease == u && s->tx.state == RTX_QUEUED)
        s->tx.failed = true; /* EXEC, if not sent yet, is a DISCARD here and EXECABORT */
    /* "-MOVED 3999 127.0.0.1:7002\r\n": what follows the word, without the CRLF */
    const char *rest = memchr(p, ' ', len);
    int n = rest ? (int)MT_MIN((size_t)(p + len - 2 - (rest + 1)), 200) : 0;
    char text[400];
    snprintf(text, sizeof(text),
             "ERR meltemi: the slot of this command moved to another master during the "
             "transaction (%s %.*s): the transaction is discarded (EXEC answers EXECABORT); "
             "retry it",
             moved ? "MOVED" : "ASK", n > 0 ? n : 0, rest ? rest + 1 : "");
    mt_stat_add(c->conf->stats, u->base.w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
    mt_rreq_complete_error(u->base.w, r, text);
    return true;
}

/* ---- MULTI / EXEC / DISCARD / UNWATCH ------------------------------------------------------ */

/* MULTI on a single-master PROXY-mode service without prefix routes: the lease is taken now,
 * so a pool at its bound refuses MULTI itself. */
static mt_wendpoint_t *eager_target(mt_rsess_t *s)
{
    mt_wcluster_t *c = s->base.cluster;
    if (!c || c->n_eps == 0 || mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER ||
        mt_bridge_has_chain(&mt_rw(s->base.w)->bridge, s->base.li))
        return NULL;
    return single_master(c);
}

/* Whether c may run in a transaction on a shared connection: a data command with keys that
 * the proxy forwards as it is, which changes nothing of its connection's state (no
 * administration, no pub/sub, nothing that can block, nothing answered here that could end
 * the read loop, as QUIT does). */
static bool tx_shareable(const redis_command_t *c)
{
    return (c->proxy == REDIS_PROXY_FORWARD || c->proxy == REDIS_PROXY_MULTI_KEY) &&
           (c->first_key > 0 || c->key_spec_count > 0) && c->sub_count == 0 &&
           !(c->flags &
             (REDIS_CMD_ADMIN | REDIS_CMD_PUBSUB | REDIS_CMD_BLOCKING | REDIS_CMD_NO_MULTI));
}

/*
 * After MULTI (req, at frame in the session's read chunk): true when the rest of the
 * transaction is already read, whole, up to its EXEC or DISCARD, and every command in it is
 * tx_shareable. Such a transaction is handled in the same sess_on_data call as its MULTI, so
 * it can go back to back on the session's shared pipelined connection: no other client's
 * command can be written between its MULTI and its EXEC, and Redis's MULTI state on that
 * connection ends with it. Reads ahead with the worker's own parser; consumes nothing.
 */
#define TX_SHARED_MAX_COMMANDS 256
static bool tx_whole_in_hand(mt_rsess_t *s, const resp_request_t *req, const char *frame)
{
    resp_req_parser_t *lp = &mt_rw(s->base.w)->lookahead;
    const char *p = frame + req->frame_len;
    const char *end = s->base.rbuf->last;
    for (uint32_t n = 0; n <= TX_SHARED_MAX_COMMANDS && p < end && *p == '*'; n++) {
        resp_request_t q;
        const char *err = NULL;
        mt_status_t rc = resp_parse_request(lp, p, (size_t)(end - p), &q, &err);
        if (rc != MT_OK) {
            if (rc == MT_AGAIN) { /* not all read yet: the parser forgets the partial frame */
                resp_req_parser_free(lp);
                resp_req_parser_init(lp, &resp_default_limits);
            }
            return false;
        }
        const redis_command_t *c =
            q.argc ? redis_command_lookup(q.argv[0].ptr, q.argv[0].len) : NULL;
        if (!c)
            return false;
        if (mt_rcmd_is(c, "exec") || mt_rcmd_is(c, "discard"))
            return q.argc == 1;
        if (!tx_shareable(c))
            return false;
        p += q.frame_len;
    }
    return false;
}

/* The transaction of MULTI goes on the session's shared connection to ep (tx_whole_in_hand
 * said it may); false when there is none to have (then it is leased as usual). */
static bool tx_multi_shared(mt_rsess_t *s, mt_wendpoint_t *ep, const redis_command_t *cmd,
                            const resp_request_t *req, const char *frame)
{
    const char *why = NULL;
    mt_rup_t *u = mt_rup_for(ep, s->base.id, s->resp3, &why);
    if (!u)
        return false;
    s->tx.lease = u;
    s->tx.shared = true;
    s->tx.gate_ahead = 0;
    s->tx.state = RTX_QUEUED;
    s->tx.failed = false;
    tx_send(s, cmd, req, frame, 0);
    return true;
}

static void tx_multi(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                     const char *frame)
{
    if (s->tx.state == RTX_QUEUED) {
        mt_rsess_reply_error(s, "ERR MULTI calls can not be nested");
        return;
    }
    mt_wendpoint_t *ep = eager_target(s);
    /* a transaction already read whole, after everything sent before it was answered (so
     * nothing of the client's is in flight on another connection) */
    if (ep && s->tx.state == RTX_NONE && !s->tx.lease && !s->tx.pending_head && !s->tx.db &&
        !s->tx.selects_in_flight && !s->tx.client_flags && s->base.pending == 0 &&
        tx_whole_in_hand(s, req, frame) && tx_multi_shared(s, ep, cmd, req, frame))
        return;
    /* a finished transaction's lease still draining: kept if this one goes there too */
    if (s->tx.state == RTX_NONE && s->tx.lease && !s->tx.pending_head && s->tx.lease->base.ep != ep)
        tx_let_go(s);
    s->tx.state = RTX_QUEUED;
    s->tx.failed = false;
    if (s->tx.lease) {
        tx_send(s, cmd, req, frame, 0);
        return;
    }
    if (ep) {
        if (!tx_lease(s, ep, 0)) {
            tx_reset(s);
            s->tx_refused = true;
            return;
        }
        tx_send(s, cmd, req, frame, 0);
        return;
    }
    s->tx.multi_pending = true;
    mt_rsess_reply(s, "+OK\r\n", 5);
}

static void tx_exec(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                    const char *frame)
{
    if (s->tx.state != RTX_QUEUED) {
        mt_rsess_reply_error(s, "ERR EXEC without MULTI");
        return;
    }
    bool failed = s->tx.failed, watch_lost = s->tx.watch_lost;
    if ((failed || watch_lost) && s->tx.lease &&
        tx_internal(s, DISCARD_CMD, sizeof(DISCARD_CMD) - 1) != 0) {
        mt_session_close(&s->base);
        return;
    }
    if (failed)
        mt_rsess_reply_error(s, EXECABORT);
    else if (watch_lost)
        mt_rsess_reply(s, "*-1\r\n", 5); /* as when a watched key changed: clients retry */
    else if (!s->tx.lease)
        mt_rsess_reply(s, "*0\r\n", 4); /* nothing was queued */
    else if (tx_send(s, cmd, req, frame, 0), s->tail)
        s->tail->tx_end = true;
    tx_reset(s); /* the lease drains, then goes back (mt_rtx_after_reply) */
}

static void tx_discard(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                       const char *frame)
{
    if (s->tx.state != RTX_QUEUED) {
        mt_rsess_reply_error(s, "ERR DISCARD without MULTI");
        return;
    }
    if (s->tx.lease) {
        tx_send(s, cmd, req, frame, 0);
        if (s->tail)
            s->tail->tx_end = true;
    } else {
        mt_rsess_reply(s, "+OK\r\n", 5);
    }
    tx_reset(s);
}

void mt_rtx_command(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                    const char *frame)
{
    if (mt_rcmd_is(cmd, "multi")) {
        tx_multi(s, cmd, req, frame);
    } else if (mt_rcmd_is(cmd, "exec")) {
        tx_exec(s, cmd, req, frame);
    } else if (mt_rcmd_is(cmd, "discard")) {
        tx_discard(s, cmd, req, frame);
    } else if (mt_rcmd_is(cmd, "unwatch")) {
        if (s->tx.state == RTX_QUEUED) {
            mt_rsess_dispatch(s, cmd, req, frame); /* queued, as Redis does */
        } else if (s->tx.lease) {
            tx_send(s, cmd, req, frame, 0);
            tx_reset(s);
        } else {
            tx_reset(s);
            mt_rsess_reply(s, "+OK\r\n", 5);
        }
    } else {
        mt_rsess_dispatch(s, cmd, req, frame); /* WATCH */
    }
}

/* ---- commands while MULTI queues ---------------------------------------------------------- */

bool mt_rtx_queued(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                   const char *frame)
{
    char text[300];
    switch (cmd->proxy) {
    case REDIS_PROXY_LOCAL:
        if (mt_rcmd_is(cmd, "quit"))
            return false;
        if (mt_rcmd_is(cmd, "ping") || mt_rcmd_is(cmd, "echo")) {
            mt_rsess_dispatch(s, cmd, req, frame); /* EXEC's array has their replies */
            return true;
        }
        snprintf(text, sizeof(text),
                 "ERR meltemi: '%s' cannot be queued in a transaction: it is answered by the "
                 "proxy, not by Redis",
                 cmd->name);
        tx_queue_error(s, text, 0);
        return true;
    case REDIS_PROXY_UNSUPPORTED:
        /* inside MULTI a blocking command does not block: Redis runs it at EXEC */
        if ((cmd->flags & REDIS_CMD_BLOCKING) || mt_rcmd_is(cmd, "wait")) {
            mt_rsess_dispatch(s, cmd, req, frame);
            return true;
        }
        if (mt_radmin_refuse(s, cmd, req))
            s->tx.failed = true;
        return true;
    case REDIS_PROXY_BROADCAST:
    case REDIS_PROXY_ALL_MASTERS:
        if (mt_radmin_refuse(s, cmd, req)) {
            s->tx.failed = true;
            return true;
        }
        if (!s->base.cluster || mt_redis_cluster(s->base.cluster->conf)->mode == MT_REDIS_CLUSTER ||
            !single_master(s->base.cluster)) {
            snprintf(text, sizeof(text),
                     "ERR meltemi: '%s' goes to every master, which a transaction cannot do",
                     cmd->name);
            tx_queue_error(s, text, 0);
            return true;
        }
        mt_rsess_dispatch(s, cmd, req, frame);
        return true;
    case REDIS_PROXY_PUBSUB:
        /* a subscription made at EXEC would be the lease's, which goes back to a pool */
        snprintf(text, sizeof(text),
                 "ERR meltemi: '%s' cannot be queued in a transaction: subscriptions are the "
                 "proxy's, one per channel shared by its clients",
                 cmd->name);
        tx_queue_error(s, text, 0);
        return true;
    default:
        mt_rsess_dispatch(s, cmd, req, frame);
        return true;
    }
}

/* ---- the lease's life ---------------------------------------------------------------------- */

void mt_rtx_lease_lost(mt_rsess_t *s, const char *text)
{
    s->tx.lease = NULL;
    s->tx.selects_in_flight = 0; /* they fail with the rest; s->tx.db stays: re-selected */
    tx_fail_pending(s, text);
    if (s->tx.state == RTX_QUEUED)
        s->tx.failed = true;
    else if (s->tx.state == RTX_WATCHING)
        s->tx.watch_lost = true;
}

void mt_rtx_after_reply(mt_rup_t *u)
{
    if (u->base.inflight)
        return;
    mt_rsess_t *s = u->lessee;
    if (!s) {
        if (u->returning)
            mt_rup_release(u, true);
        return;
    }
    if (s->tx.lease == u && s->tx.state == RTX_NONE && !s->tx.pending_head && s->tx.db == 0 &&
        s->tx.selects_in_flight == 0 && s->tx.client_flags == 0) {
        s->tx.lease = NULL;
        mt_rup_release(u, true);
    }
}

bool mt_rtx_wait_for_map(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    mt_wcluster_t *c = s->base.cluster;
    bool leased =
        s->tx.state != RTX_NONE || cmd->proxy == REDIS_PROXY_TRANSACTION ||
        cmd->proxy == REDIS_PROXY_BLOCKING ||
        ((cmd->flags & REDIS_CMD_BLOCKING) && redis_command_can_block(cmd, req->argc, req->argv));
    if (!leased || !c || mt_redis_cluster(c->conf)->mode != MT_REDIS_CLUSTER ||
        mt_rcluster_has_map(c))
        return false;
    uint64_t now = mt_worker_now_ms(s->base.w);
    if (!s->map_wait_since_ms)
        s->map_wait_since_ms = now;
    /* at most connectTimeout: then it goes on and answers TRYAGAIN (tx_target) */
    return now < s->map_wait_since_ms + c->conf->connect_timeout_ms;
}

bool mt_rtx_close_on_eof(mt_rsess_t *s)
{
    if (!s->tx.lease && !s->tx.pending_head)
        return false;
    if (s->tx.state != RTX_NONE)
        return true;
    for (mt_rreq_t *r = s->tx.lease ? s->tx.lease->head : NULL; r; r = r->unext) {
        if (r->blocking)
            return true;
    }
    for (mt_rreq_t *r = s->tx.pending_head; r; r = r->unext) {
        if (r->blocking)
            return true;
    }
    return false;
}

void mt_rtx_session_closed(mt_rsess_t *s)
{
    mt_worker_t *w = s->base.w;
    mt_rup_t *u = s->tx.lease;
    if (s->tx.shared) {
        /* closed (out of memory) between MULTI and EXEC on a shared connection: the
         * transaction is discarded there before anyone else's command, or the connection
         * fails */
        if (s->tx.state == RTX_QUEUED &&
            mt_rup_queue_ignored(u, DISCARD_CMD, sizeof(DISCARD_CMD) - 1) != 0)
            mt_rup_fail(u, "ERR meltemi: out of memory");
        u = NULL;
    }
    s->tx.lease = NULL;
    tx_reset(s);
    /* never sent: nobody's (the session orphaned them), freed here */
    mt_rreq_t *r = s->tx.pending_head;
    s->tx.pending_head = s->tx.pending_tail = NULL;
    s->tx.gate_ahead = 0;
    while (r) {
        mt_rreq_t *next = r->unext;
        mt_rreq_free(w, r);
        r = next;
    }
    /* Redis discards a transaction whose connection closes: so does closing the lease. */
    if (u)
        mt_rup_release(u, false);
}

/* ---- SELECT ---------------------------------------------------------------------------- */

/*
 * SELECT n through the proxy (PROXY mode, a service with one master): the client's database
 * lives on a lease of its own, kept while it is not 0 and selected again on a new lease if
 * the old one dies (so it survives upstream reconnects). A lease rather than shared pools
 * per database: Redis keeps the database per connection, a lease is that connection, and it
 * needs nothing new from the upstream shell; the cost is one upstream connection per client
 * outside database 0 (bounded by maxConnections; the error says so at the bound). A lease
 * that served another database is closed, never pooled. Cluster mode has database 0 only
 * (Redis Cluster's rule); several endpoints: only 0 (each would need its own lease).
 */
void mt_rtx_select(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                   const char *frame)
{
    resp_out_t *o = &mt_rw(s->base.w)->scratch;
    char num[24];
    snprintf(num, sizeof(num), "%.*s", (int)MT_MIN(req->argv[1].len, 23), req->argv[1].ptr);
    char *end = NULL;
    long long id = strtoll(num, &end, 10);
    mt_wcluster_t *c = s->base.cluster;
    bool valid = end && *end == '\0' && num[0] != '\0' && id >= INT32_MIN && id <= INT32_MAX;
    bool cluster = c && mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER;
    mt_wendpoint_t *ep = c && c->n_eps && !cluster ? single_master(c) : NULL;
    if (valid && cluster && id != 0) {
        mt_rsess_reply_error(s, "ERR SELECT is not allowed in cluster mode"); /* Redis's text */
        return;
    }
    if (!valid || cluster || (id == 0 && !s->tx.lease && s->tx.db == 0)) {
        o->len = 0; /* Redis's texts: not an integer, out of range, cluster mode, or OK */
        redis_local_reply(&s->lctx, cmd, req->argc, req->argv, o);
        mt_rsess_reply(s, o->data, o->len);
        return;
    }
    if (!ep) {
        mt_rsess_reply_error(s, "ERR meltemi: SELECT other than 0 needs a service with one "
                                "endpoint (a client's database is kept on a connection of its "
                                "own)");
        return;
    }
    if (!s->tx.lease) {
        if (!tx_lease(s, ep, 0))
            return; /* the pool at its bound: said at once */
    } else if (s->tx.lease->base.ep != ep) {
        mt_rsess_reply_error(s, "ERR meltemi: SELECT on a connection whose transaction runs "
                                "elsewhere");
        return;
    }
    tx_send(s, cmd, req, frame, 0);
    if (s->tail) {
        s->tail->is_select = true;
        s->tail->select_db = (int32_t)id;
        s->tx.selects_in_flight++;
    }
}

void mt_rtx_select_answered(mt_rup_t *u, mt_rreq_t *r, bool ok)
{
    uint8_t bit = r->conn_flag;
    if (ok && bit)
        u->client_flags =
            r->conn_flag_on ? (uint8_t)(u->client_flags | bit) : (uint8_t)(u->client_flags & ~bit);
    else if (ok)
        u->db = r->select_db;
    mt_rsess_t *s = r->sess;
    if (!s || s->tx.lease != u)
        return;
    if (s->tx.selects_in_flight)
        s->tx.selects_in_flight--;
    if (ok && bit)
        s->tx.client_flags = u->client_flags;
    else if (ok)
        s->tx.db = r->select_db;
}

/* ---- CLIENT NO-EVICT / NO-TOUCH ---------------------------------------------------------- */

static bool arg_is(const resp_arg_t *a, const char *word)
{
    size_t n = strlen(word);
    return a->len == n && strncasecmp(a->ptr, word, n) == 0;
}

/*
 * CLIENT NO-EVICT|NO-TOUCH on|off: flags of the client's own connection in Redis (whether
 * client eviction may close it; whether its reads touch the keys' LRU/LFU). Set on a shared
 * upstream connection they would hold for every client on it, so, like SELECT n, they are
 * Redis's on a connection leased for the client (PROXY mode, one master), kept while a flag
 * is on and set again on a new lease if that one dies; a lease that had one is closed, never
 * pooled. Redis answers (an unknown subcommand on a Redis older than the flag, e.g. NO-TOUCH
 * before 7.2). OFF with nothing set is answered here: a new connection has both off.
 */
bool mt_rtx_client_flag(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                        const char *frame)
{
    if (req->argc != 3 || !(arg_is(&req->argv[1], "no-evict") || arg_is(&req->argv[1], "no-touch")))
        return false;
    bool on = arg_is(&req->argv[2], "on");
    if (!on && !arg_is(&req->argv[2], "off"))
        return false; /* Redis's syntax error, from the local reply */
    uint8_t bit = arg_is(&req->argv[1], "no-evict") ? RCONN_NO_EVICT : RCONN_NO_TOUCH;
    mt_wcluster_t *c = s->base.cluster;
    bool cluster = c && mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER;
    mt_wendpoint_t *ep = c && c->n_eps && !cluster ? single_master(c) : NULL;
    if (!on && !s->tx.lease && !(s->tx.client_flags & bit)) {
        mt_rsess_reply(s, "+OK\r\n", 5);
        return true;
    }
    if (!ep) {
        char text[200];
        snprintf(text, sizeof(text),
                 "ERR meltemi: CLIENT %s needs a service with one master (the flag is kept on "
                 "an upstream connection of the client's own)",
                 bit == RCONN_NO_EVICT ? "NO-EVICT" : "NO-TOUCH");
        mt_rsess_reply_error(s, text);
        return true;
    }
    if (!s->tx.lease) {
        if (!tx_lease(s, ep, 0))
            return true; /* the pool at its bound: said at once */
    } else if (s->tx.lease->base.ep != ep) {
        mt_rsess_reply_error(s, "ERR meltemi: CLIENT NO-EVICT/NO-TOUCH on a connection whose "
                                "transaction runs elsewhere");
        return true;
    }
    tx_send(s, cmd, req, frame, 0);
    if (s->tail) {
        s->tail->is_select = true;
        s->tail->conn_flag = bit;
        s->tail->conn_flag_on = on;
        s->tx.selects_in_flight++;
    }
    return true;
}
