/*
 * route.c - where a Redis command goes: forwarding to a cluster (cluster
 * mode hands over to redis_cluster.c), the PROXY-mode endpoint choice (key hashing, roles,
 * readPolicy), and the refusal of commands that would hold a shared upstream connection.
 *
 * A forwarded command is queued on an upstream connection as a slice of the client's read
 * chunk (no copy), so the commands of many clients leave in one writev per loop iteration.
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include <stdio.h>
#include <string.h>

/* ---- routing ------------------------------------------------------------------------------------
 */

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
    /* A consistent-hash ring (runtime/core/ring.h), not a modulo: removing one of N endpoints
     * moves only its keys (about 1/N), every other key stays where its data is. */
    const mt_ring_t *ring = &mt_redis_cluster(c->conf)->ring;
    if (MT_UNLIKELY(ring->n == 0))
        return c->eps[0];
    uint32_t i = mt_ring_owner(ring, mt_hash64(p, n));
    return i < c->n_eps ? c->eps[i] : c->eps[0];
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

mt_wendpoint_t *mt_rroute_channel(mt_wcluster_t *c, const resp_arg_t *channel)
{
    if (c->n_eps == 1)
        return c->eps[0];
    uint32_t n_replicas = mt_redis_cluster(c->conf)->n_replicas;
    if (n_replicas == 0 || n_replicas == c->n_eps)
        return mt_rproxy_endpoint(c, channel, false);
    return pick_role(c, false, 0, false); /* a replica relays what its primary publishes */
}

/*
 * PROXY mode. Without roles: keys hash over the endpoints. With endpoints labelled as
 * replicas (a plain primary/replica setup): writes go to the primary, reads follow the
 * listener's readPolicy; NULL when REPLICA finds no healthy replica.
 */
mt_wendpoint_t *mt_rroute_endpoint(mt_wcluster_t *c, const redis_command_t *cmd,
                                   const resp_request_t *req, mt_read_policy_t policy, bool hashtag)
{
    /* Sentinel: c->eps is the master alone; reads a readPolicy sends elsewhere pick from the
     * replicas the Sentinels listed */
    if (MT_UNLIKELY(policy != MT_READ_MASTER) && mt_rsentinel(c) &&
        (cmd->flags & REDIS_CMD_READONLY) && !(cmd->flags & REDIS_CMD_WRITE))
        return mt_rsentinel_read_endpoint(c, policy);
    if (c->n_eps == 1)
        return c->eps[0];
    if (MT_UNLIKELY(cmd->flags & REDIS_CMD_PUBSUB) && mt_rcmd_is(cmd, "publish"))
        return mt_rroute_channel(c, &req->argv[1]); /* where its subscribers' hub listens */
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
void mt_rforward_to(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                    const resp_request_t *req, const char *frame, uint64_t hold_until_ms)
{
    char text[400];
    if (MT_UNLIKELY(c && c->n_eps == 0 && mt_rsentinel(c))) {
        s->cmd_flags |= MT_RF_UH;
        mt_rsess_reply_error_at(s, mt_rsentinel_no_master(c, text, sizeof(text)), hold_until_ms);
        return;
    }
    if (!c || c->n_eps == 0) {
        s->cmd_flags |= c ? MT_RF_UH : MT_RF_NR;
        snprintf(text, sizeof(text), "ERR meltemi: no upstream host for %s",
                 c && c->conf->service
                     ? c->conf->service
                     : (s->base.conf->service ? s->base.conf->service : s->base.conf->name));
        mt_rsess_reply_error_at(s, text, hold_until_ms);
        return;
    }
    /* WATCH, and everything while a transaction is open, go on its leased connection */
    if (MT_UNLIKELY(s->tx.state != RTX_NONE || s->tx.lease || s->tx.db || s->tx.client_flags ||
                    cmd->proxy == REDIS_PROXY_TRANSACTION || (cmd->flags & REDIS_CMD_BLOCKING)) &&
        mt_rtx_forward(s, c, cmd, req, frame, hold_until_ms))
        return;
    if (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER) {
        mt_rreq_t *tail = s->tail;
        mt_rcluster_forward(s, c, cmd, req, frame);
        if (hold_until_ms && s->tail && s->tail != tail) {
            s->tail->hold_until_ms = hold_until_ms;
            if (s->tail->done) {
                s->tail->done = false;
                s->tail->held = true;
                mt_rsess_hold_arm(s, hold_until_ms);
            }
        }
        return;
    }
    if (MT_UNLIKELY(cmd->proxy == REDIS_PROXY_BROADCAST || cmd->proxy == REDIS_PROXY_ALL_MASTERS) &&
        mt_radmin_forward(s, c, cmd, req, frame, hold_until_ms))
        return;
    mt_wendpoint_t *ep =
        mt_rroute_endpoint(c, cmd, req, s->rconf->read_policy, s->rconf->enable_hashtagging);
    if (!ep) {
        s->cmd_flags |= MT_RF_UH;
        snprintf(text, sizeof(text), "ERR meltemi: no healthy replica for %s (readPolicy REPLICA)",
                 c->conf->service ? c->conf->service : c->conf->name);
        mt_rsess_reply_error_at(s, text, hold_until_ms);
        return;
    }
    mt_debug("listener %s: %s -> cluster %s, endpoint %s:%u (%s)", s->base.conf->name, cmd->name,
             c->conf->name, ep->address, ep->port,
             c != s->base.cluster ? "a policy's route" : "the listener's destination");
    mt_rforward_endpoint(s, ep, cmd, req, frame, hold_until_ms);
}

void mt_rforward_endpoint(mt_rsess_t *s, mt_wendpoint_t *ep, const redis_command_t *cmd,
                          const resp_request_t *req, const char *frame, uint64_t hold_until_ms)
{
    mt_worker_t *w = s->base.w;
    mt_wcluster_t *c = ep->cluster;
    char text[400];
    const char *why = NULL;
    mt_rup_t *u = mt_rup_for(ep, s->base.id, s->resp3, &why);
    if (!u) {
        char lbl[256];
        mt_stat_add(c->conf->stats, w->id, MT_ST_UPSTREAM_RQ_ERRORS, 1);
        s->cmd_flags |= MT_RF_UF;
        if (strncmp(why, "meltemi: ", 9) == 0)
            snprintf(text, sizeof(text), "ERR %s", why);
        else
            snprintf(text, sizeof(text), "ERR meltemi: upstream %s unavailable: %s",
                     mt_rendpoint_label(ep, lbl, sizeof(lbl)), why);
        mt_rsess_reply_error_at(s, text, hold_until_ms);
        return;
    }
    if (MT_UNLIKELY(mt_upstream_pending_full(&u->base))) {
        /* http.http1MaxPendingRequests: enough of the cluster's commands already wait for a
         * connection still connecting on this worker; this one is answered now (UO). */
        char lbl[256];
        mt_stat_add(c->conf->stats, w->id, MT_ST_UPSTREAM_RQ_PENDING_OVERFLOW, 1);
        s->cmd_flags |= MT_RF_UO;
        snprintf(text, sizeof(text),
                 "ERR meltemi: upstream %s: %u requests already wait for a connection "
                 "(connectionPool.http.http1MaxPendingRequests)",
                 mt_rendpoint_label(ep, lbl, sizeof(lbl)), c->conf->max_pending_requests);
        mt_rsess_reply_error_at(s, text, hold_until_ms);
        return;
    }
    if (!mt_rup_send_user(u, s, cmd, req, frame, hold_until_ms))
        mt_session_close(&s->base);
}

void mt_rsess_forward(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                      const char *frame)
{
    mt_rforward_to(s, s->base.cluster, cmd, req, frame, 0);
}

/* ---- refusals: commands that would hold a shared upstream connection ----------------------- */

/* form: "" or how this use differs from the command's supported one (" with BLOCK") */
void mt_rsess_refuse(mt_rsess_t *s, const char *name, const char *form)
{
    char text[256];
    snprintf(text, sizeof(text),
             "ERR meltemi: '%s'%s is not supported through the proxy (it needs a dedicated "
             "upstream connection)",
             name, form);
    mt_rsess_reply_error(s, text);
}
