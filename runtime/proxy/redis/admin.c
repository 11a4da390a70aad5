/*
 * admin.c - administration through the Redis proxy (issue 10): the commands refused by default
 * (what stops, crashes or re-roles a server, with why), the listener's own deny list
 * (RedisService settings.deniedCommands, a meltemi extension), and PROXY mode's fan-out of
 * administration commands over several masters. Cluster mode's fan-out is redis_cluster.c's
 * (cluster_route); both follow the rules of protocols/redis/admin.c.
 */

#include "runtime/proxy/redis/redis_proxy.h"

#include "protocols/redis/admin.h"

#include <stdio.h>
#include <stdlib.h>

/* "debug|segfault" -> "debug segfault" (what the client typed), at most n - 1 bytes. */
static void spoken_name(const char *name, char *out, size_t n)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++)
        out[i] = name[i] == '|' ? ' ' : name[i];
    out[i] = '\0';
}

bool mt_radmin_refuse(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    const redis_admin_rule_t *rule = redis_admin_rule(cmd, req->argc, req->argv);
    if (cmd->proxy != REDIS_PROXY_UNSUPPORTED && (!rule || rule->kind != REDIS_PROXY_UNSUPPORTED))
        return false;
    if (!rule || rule->kind != REDIS_PROXY_UNSUPPORTED || !rule->why) {
        mt_rsess_refuse(s, cmd->name, "");
        return true;
    }
    char name[64], text[400];
    spoken_name(rule->name, name, sizeof(name));
    snprintf(text, sizeof(text), "ERR meltemi: '%s' is refused: %s", name, rule->why);
    mt_rsess_reply_error(s, text);
    return true;
}

static bool bit_set(const uint8_t *bits, size_t i)
{
    return (bits[i / 8] >> (i % 8)) & 1u;
}

bool mt_radmin_denied(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    const mt_redis_listener_conf_t *rc = s->rconf;
    const redis_command_t *sub = NULL;
    bool denied = bit_set(rc->denied, cmd->id);
    if (!denied && cmd->sub_count && req->argc >= 2) {
        sub = redis_command_find_subcommand(cmd, req->argv[1].ptr, req->argv[1].len);
        denied = sub && bit_set(rc->denied_sub, (size_t)(sub - redis_command__subcommands));
    }
    if (!denied)
        return false;
    char name[64], text[300];
    spoken_name(sub ? sub->name : cmd->name, name, sizeof(name));
    snprintf(text, sizeof(text),
             "NOPERM meltemi: '%s' is denied on this listener (RedisService "
             "settings.deniedCommands)",
             name);
    mt_rsess_reply_error(s, text);
    return true;
}

/* PROXY mode: the endpoints of c that are not labelled replicas, into out (c->n_eps long). */
static uint32_t proxy_masters(mt_wcluster_t *c, mt_wendpoint_t **out)
{
    const bool *replica = mt_redis_cluster(c->conf)->replica;
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        if (!replica || !replica[i])
            out[n++] = c->eps[i];
    }
    return n;
}

/* The parent of a fan-out: in the session's FIFO, answered when every part is. */
static mt_rreq_t *fanout_parent(mt_rsess_t *s, const redis_command_t *cmd, uint64_t hold_until_ms)
{
    mt_worker_t *w = s->base.w;
    mt_rreq_t *r = mt_rreq_new(w);
    if (!r)
        return NULL;
    r->sess = s;
    r->cmd = cmd;
    r->deadline_ms = mt_worker_now_ms(w) + s->rconf->op_timeout_ms;
    r->hold_until_ms = hold_until_ms;
    mt_rsess_push(s, r);
    return r;
}

bool mt_radmin_forward(mt_rsess_t *s, mt_wcluster_t *c, const redis_command_t *cmd,
                       const resp_request_t *req, const char *frame, uint64_t hold_until_ms)
{
    if (c->n_eps <= 1)
        return false;
    mt_wendpoint_t **masters = malloc(sizeof(*masters) * c->n_eps);
    if (!masters) {
        mt_rsess_reply_error_at(s, "ERR meltemi: out of memory", hold_until_ms);
        return true;
    }
    uint32_t n = proxy_masters(c, masters);
    if (n <= 1) {
        free(masters);
        return false;
    }
    const redis_admin_rule_t *rule = redis_admin_rule(cmd, req->argc, req->argv);
    redis_merge_t m = rule ? (redis_merge_t)rule->merge : REDIS_MERGE_ONE;
    if (m == REDIS_MERGE_ONE || m == REDIS_MERGE_BY_KEY) {
        /* A key's endpoint is where PROXY mode hashes it (without replicas every endpoint
         * holds a share of the keys); the reports go to the first master. */
        mt_wendpoint_t *ep = masters[0];
        if (m == REDIS_MERGE_BY_KEY && rule->key_arg < req->argc &&
            mt_redis_cluster(c->conf)->n_replicas == 0)
            ep = mt_rproxy_endpoint(c, &req->argv[rule->key_arg], s->rconf->enable_hashtagging);
        free(masters);
        mt_rforward_endpoint(s, ep, cmd, req, frame, hold_until_ms);
        return true;
    }
    mt_rreq_t *parent = fanout_parent(s, cmd, hold_until_ms);
    if (!parent) {
        free(masters);
        mt_session_close(&s->base);
        return true;
    }
    if (m == REDIS_MERGE_SCAN)
        mt_rsplit_scan(c, parent, req, masters, n);
    else
        mt_rsplit_fanout(c, parent, req, masters, n, m);
    free(masters);
    return true;
}

/* COMMAND DOCS: Redis's documentation of the commands, from one master (the first of the slot
 * map, or PROXY mode's first), without what meltemi refuses (redis_cluster.c split_docs). */
bool mt_radmin_command_docs(mt_rsess_t *s, const redis_command_t *cmd, const resp_request_t *req)
{
    mt_wcluster_t *c = s->base.cluster;
    if (!c || c->n_eps == 0)
        return false;
    mt_wendpoint_t *ep = NULL;
    if (mt_redis_cluster(c->conf)->mode == MT_REDIS_CLUSTER) {
        ep = mt_rcluster_slot_master(c, 0);
        ep = ep ? ep : c->eps[0]; /* before the slot map: a seed (every node answers alike) */
    } else {
        mt_wendpoint_t **masters = malloc(sizeof(*masters) * c->n_eps);
        if (masters && proxy_masters(c, masters) > 0)
            ep = masters[0];
        free(masters);
    }
    if (!ep)
        return false;
    mt_rreq_t *parent = fanout_parent(s, cmd, 0);
    if (!parent) {
        mt_session_close(&s->base);
        return true;
    }
    mt_rsplit_command_docs(c, parent, req, ep);
    return true;
}
