/*
 * policy.c - the Lua policy chain on a Redis command: asking the bridge
 * (lua_bridge.c) for a verdict and carrying it out (local replies, DELAY holds, rewrites,
 * prefix routes and the splits they need, mirrors, on_response filters).
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include <stdlib.h>
#include <string.h>

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
    mt_wendpoint_t *ep = mt_rroute_endpoint(c, cmd, req, MT_READ_MASTER, true);
    const char *why = NULL;
    mt_rup_t *u = mt_rup_for(ep, c->rr++, &why);
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
    mt_rup_push(u, r);
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
    if (!same && s->tx.state == RTX_QUEUED) {
        /* a transaction runs on one connection to one destination */
        mt_rsess_reply_error(s, "ERR meltemi: the keys of a transaction must all go to one "
                                "destination (prefix routes send them to different services)");
        mt_rtx_answered_locally(s, true);
        handled = true;
    } else if (!same && !splittable) {
        mt_rsess_reply_error(s, "ERR meltemi: the keys of this command are routed to different "
                                "services");
        handled = true;
    } else if (!same) {
        mt_rreq_t *r = mt_rreq_new(w);
        if (!r) {
            mt_session_close(&s->base);
        } else {
            r->cmd = cmd;
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

/* A command on a listener with policies or filters: ask Lua, then carry out the verdict. */
void mt_rsess_policy(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
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
        s->cmd_flags |= MT_RF_DI;
    }
    if (v->has_error)
        s->cmd_flags |= MT_RF_FI; /* an abort fault or a filter's deny */
    if (v->has_error || v->has_reply) {
        mt_rtx_answered_locally(s, v->has_error || (v->reply.len && v->reply.data[0] == '-'));
        if (hold)
            mt_rsess_reply_held(s, v->reply.data, v->reply.len, hold);
        else
            mt_rsess_reply(s, v->reply.data, v->reply.len);
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
        use = &rewritten; /* a BLOCK a filter wrote into XREAD is seen by mt_rforward_to */
    }
    /* A queued command is not mirrored: the mirror would apply it now, whether or not the
     * transaction runs. Nor is one that can block: the copy would hold the mirror's shared
     * connection. */
    bool no_mirror =
        s->tx.state == RTX_QUEUED ||
        ((cmd->flags & REDIS_CMD_BLOCKING) && redis_command_can_block(cmd, use->argc, use->argv));
    for (uint32_t i = 0; i < v->n_mirrors && !no_mirror; i++) {
        if (v->mirrors[i] <= mt_rw(w)->bridge.n_cluster_index)
            mirror_send(w, mt_rw(w)->bridge.cluster_by_index[v->mirrors[i] - 1], cmd, use);
    }
    mt_rreq_t *tail = s->tail;
    mt_rforward_to(s, c, cmd, use, frame, hold);
    if (mt_bridge_has_response(&mt_rw(w)->bridge, s->base.li) && s->tail && s->tail != tail &&
        !s->tail->done)
        s->tail->resp_chain = true;
    if (argv && argv != small)
        free(argv);
}

void mt_rsess_dispatch(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req,
                       const char *frame)
{
    mt_worker_t *w = s->base.w;
    if (MT_UNLIKELY(mt_bridge_has_chain(&mt_rw(w)->bridge, s->base.li)) && s->base.snap == w->snap)
        mt_rsess_policy(s, cmd, req, frame);
    else
        mt_rsess_forward(s, cmd, req, frame);
}
