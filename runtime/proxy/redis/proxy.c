/*
 * proxy.c - the Redis proxy's registry entry (core/proxy.h) and its
 * per-worker state (mt_redis_worker_t): start, snapshot applied, tick (cluster topology
 * refresh, retired connections; op timeouts are on the worker's timer wheel, upstream.c),
 * stop and free.
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/upstream.h"
#include "runtime/proxy/redis/redis_snapshot.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- per-worker upkeep: the tick (topology refresh, retired connections) and shutdown ----- */

static void redis_tick(mt_worker_t *w, uint64_t now_ms)
{
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        if (mt_rtopo(c))
            mt_rcluster_tick(c, now_ms);
        else if (MT_UNLIKELY(mt_redis_cluster(c->conf)->sentinel_master != NULL))
            mt_rsentinel_tick(c, now_ms);
    }
    for (mt_wcluster_t *c = w->retired; c; c = c->next)
        mt_rsentinel_stop(c); /* a retired cluster's Sentinel connections close */
    mt_upstream_tick(w, MT_PROTO_REDIS, now_ms); /* op timeouts: the shell's deadline timer */
}

static void redis_worker_stop(mt_worker_t *w)
{
    mt_rpubsub_stop(w);
    for (mt_wcluster_t *c = w->clusters; c; c = c->next)
        mt_rsentinel_stop(c);
    for (mt_wcluster_t *c = w->retired; c; c = c->next)
        mt_rsentinel_stop(c);
    while (w->upstreams[MT_PROTO_REDIS])
        mt_rup_fail((mt_rup_t *)w->upstreams[MT_PROTO_REDIS], "ERR meltemi: proxy shutting down");
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
    resp_req_parser_free(&mt_rw(w)->lookahead);
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
    resp_req_parser_init(&rw->lookahead, &resp_default_limits);
    if (w->L)
        mt_bridge_open(&rw->bridge, w);
    return 0;
}

static void redis_snapshot_applied(mt_worker_t *w)
{
    mt_bridge_apply(&mt_rw(w)->bridge);
    /* Sentinel discovery starts now rather than at the next tick */
    for (mt_wcluster_t *c = w->clusters; c; c = c->next) {
        if (mt_redis_cluster(c->conf)->sentinel_master)
            mt_rsentinel_tick(c, mt_worker_now_ms(w));
    }
}

static void redis_worker_free(mt_worker_t *w)
{
    mt_redis_worker_t *rw = mt_rw(w);
    if (!rw)
        return;
    mt_bridge_close(&rw->bridge);
    mt_rpubsub_free(w);
    free(rw->spare_args.argv);
    free(rw->spare_args.arg_off);
    free(rw);
    w->proxy[MT_PROTO_REDIS] = NULL;
}

static void redis_cluster_free(mt_wcluster_t *c)
{
    if (mt_rsentinel(c))
        mt_rsentinel_free(c);
    if (mt_rtopo(c))
        mt_rcluster_free(mt_rtopo(c));
    c->proxy_state = NULL;
}

static void redis_cluster_status(mt_wcluster_t *c, FILE *f)
{
    if (mt_redis_cluster(c->conf)->sentinel_master)
        mt_rsentinel_status(c, f);
    else
        mt_rcluster_status(c, f);
}

const mt_proxy_ops_t mt_proxy_redis = {
    .name = "redis",
    .protocol = MT_PROTO_REDIS,
    .worker_start = redis_worker_start,
    .accept = mt_rsess_accept,
    .snapshot_applied = redis_snapshot_applied,
    .tick = redis_tick,
    .worker_stop = redis_worker_stop,
    .worker_free = redis_worker_free,
    .cluster_free = redis_cluster_free,
    .cluster_status = redis_cluster_status,
    .read_cluster = mt_redis_read_cluster,
    .read_listener = mt_redis_read_listener,
    .free_cluster = mt_redis_free_cluster,
    .free_listener = mt_redis_free_listener,
};
