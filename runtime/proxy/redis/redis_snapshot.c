/*
 * redis_snapshot.c - the Redis part of a snapshot: listener.redis (RedisService settings)
 * and cluster.redis (RedisDestination: mode, auth, discovery endpoints). snapshot.c calls
 * these through the registry (mt_proxy_redis) for redis listeners and clusters; they run on
 * the main thread at load and reload. Missing fields take the defaults of docs/snapshot.md.
 */
#include "runtime/proxy/redis/redis_snapshot.h"

#include "runtime/core/common.h"

#include "protocols/redis/commands.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REDIS_DEFAULT_OP_TIMEOUT_MS 5000
#define REDIS_DEFAULT_AUTH_TIMEOUT_MS 10000 /* RedisService settings.authTimeout */
#define REDIS_DEFAULT_FLUSH_TIMEOUT_MS 3
#define REDIS_DEFAULT_MAX_UNKNOWN 100

const mt_redis_cluster_conf_t mt_redis_cluster_none = {.mode = MT_REDIS_PROXY};

static mt_read_policy_t redis_parse_read_policy(const char *p)
{
    static const char *const names[] = {"MASTER", "PREFER_MASTER", "REPLICA", "PREFER_REPLICA",
                                        "ANY"};
    for (size_t i = 0; p && i < MT_ARRAY_LEN(names); i++) {
        if (strcmp(p, names[i]) == 0)
            return (mt_read_policy_t)i;
    }
    return MT_READ_MASTER;
}

/* redis.discovery_endpoints: { {address=, port=}, ... } -> resolved seeds. One that does not
 * resolve is kept with its resolve_error and skipped by the topology. */
static void redis_read_discovery(lua_State *L, int rt, mt_redis_cluster_conf_t *rc)
{
    if (!mt_snap_field_table(L, rt, "discovery_endpoints"))
        return;
    int dt = lua_gettop(L);
    size_t n = lua_objlen(L, dt);
    rc->discovery = calloc(n ? n : 1, sizeof(*rc->discovery));
    for (size_t i = 0; rc->discovery && i < n; i++) {
        lua_rawgeti(L, dt, (int)i + 1);
        if (lua_istable(L, -1))
            mt_snap_endpoint(L, lua_gettop(L), "discovery endpoint",
                             &rc->discovery[rc->n_discovery++]);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* redis.sentinel: { master_name =, addresses = { {address=, port=}, ... }, auth = } (the
 * compiler checked it: a master name and at least one address). */
static void redis_read_sentinel(lua_State *L, int rt, mt_redis_cluster_conf_t *rc)
{
    if (!mt_snap_field_table(L, rt, "sentinel"))
        return;
    int st = lua_gettop(L);
    rc->sentinel_master = mt_snap_field_str(L, st, "master_name");
    mt_snap_field_auth(L, st, "auth", &rc->sentinel_auth);
    if (mt_snap_field_table(L, st, "addresses")) {
        int at = lua_gettop(L);
        size_t n = lua_objlen(L, at);
        rc->sentinels = calloc(n ? n : 1, sizeof(*rc->sentinels));
        for (size_t i = 0; rc->sentinels && i < n; i++) {
            lua_rawgeti(L, at, (int)i + 1);
            if (lua_istable(L, -1))
                mt_snap_endpoint(L, lua_gettop(L), "sentinel", &rc->sentinels[rc->n_sentinels++]);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Whether the endpoint table at index ep is labelled as a replica. */
static bool redis_endpoint_is_replica(lua_State *L, int ep)
{
    static const char *const keys[] = {"role", "redis-role", "redis.io/role"};
    bool replica = false;
    if (!mt_snap_field_table(L, ep, "labels"))
        return false;
    for (size_t i = 0; i < MT_ARRAY_LEN(keys) && !replica; i++) {
        char *v = mt_snap_field_str(L, lua_gettop(L), keys[i]);
        replica = v && (strcmp(v, "replica") == 0 || strcmp(v, "slave") == 0);
        free(v);
    }
    lua_pop(L, 1);
    return replica;
}

/* The roles of the endpoints core has read into c->endpoints, in the same order (the
 * cluster table's endpoints array). */
static int redis_read_roles(lua_State *L, int t, const mt_cluster_conf_t *c,
                            mt_redis_cluster_conf_t *rc)
{
    if (c->n_endpoints == 0 || !mt_snap_field_table(L, t, "endpoints"))
        return 0;
    int et = lua_gettop(L);
    rc->replica = calloc(c->n_endpoints, sizeof(*rc->replica));
    for (uint32_t i = 0; rc->replica && i < c->n_endpoints; i++) {
        lua_rawgeti(L, et, (int)i + 1);
        rc->replica[i] = lua_istable(L, -1) && redis_endpoint_is_replica(L, lua_gettop(L));
        rc->n_replicas += rc->replica[i];
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc->replica ? 0 : -1;
}

static int redis_read_cluster_fields(lua_State *L, int t, mt_cluster_conf_t *c, char **err)
{
    mt_redis_cluster_conf_t *rc = calloc(1, sizeof(*rc));
    if (!rc) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    c->proto = rc;
    if (redis_read_roles(L, t, c, rc) != 0) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    if (!mt_snap_field_table(L, t, "redis"))
        return 0;
    int rt = lua_gettop(L);
    char *mode = mt_snap_field_str(L, rt, "mode");
    rc->mode = mode && strcmp(mode, "CLUSTER") == 0 ? MT_REDIS_CLUSTER : MT_REDIS_PROXY;
    free(mode);
    mt_snap_field_auth(L, rt, "auth", &rc->auth);
    redis_read_discovery(L, rt, rc);
    redis_read_sentinel(L, rt, rc);
    lua_pop(L, 1);
    return 0;
}

/* PROXY mode's ring over every endpoint (route.c hashes keys on it). */
static int redis_build_ring(mt_cluster_conf_t *c, mt_redis_cluster_conf_t *rc)
{
    if (rc->mode != MT_REDIS_PROXY || c->n_endpoints < 2)
        return 0;
    uint32_t *eps = malloc(c->n_endpoints * sizeof(*eps));
    if (!eps)
        return -1;
    for (uint32_t i = 0; i < c->n_endpoints; i++)
        eps[i] = i;
    int rc2 = mt_ring_build(&rc->ring, c->endpoints, eps, (uint32_t)c->n_endpoints, 0);
    free(eps);
    return rc2;
}

int mt_redis_read_cluster(lua_State *L, int t, mt_cluster_conf_t *c, char **err)
{
    if (redis_read_cluster_fields(L, t, c, err) != 0)
        return -1;
    if (redis_build_ring(c, c->proto) != 0) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    return 0;
}

void mt_redis_free_cluster(mt_cluster_conf_t *c)
{
    mt_redis_cluster_conf_t *rc = c->proto;
    if (!rc)
        return;
    for (uint32_t i = 0; i < rc->n_discovery; i++)
        mt_endpoint_conf_free(&rc->discovery[i]);
    free(rc->discovery);
    for (uint32_t i = 0; i < rc->n_sentinels; i++)
        mt_endpoint_conf_free(&rc->sentinels[i]);
    free(rc->sentinels);
    free(rc->sentinel_master);
    mt_auth_free(&rc->sentinel_auth);
    free(rc->replica);
    mt_ring_free(&rc->ring);
    mt_auth_free(&rc->auth);
    free(rc);
    c->proto = NULL;
}

static void redis_read_settings(lua_State *L, int rt, mt_redis_listener_conf_t *rl)
{
    mt_snap_field_auth(L, rt, "auth", &rl->auth);
    rl->op_timeout_ms =
        (uint32_t)mt_snap_field_int(L, rt, "op_timeout_ms", REDIS_DEFAULT_OP_TIMEOUT_MS);
    if (rl->op_timeout_ms == 0)
        rl->op_timeout_ms = REDIS_DEFAULT_OP_TIMEOUT_MS;
    char *rp = mt_snap_field_str(L, rt, "read_policy");
    rl->read_policy = redis_parse_read_policy(rp);
    free(rp);
    rl->enable_command_stats = mt_snap_field_bool(L, rt, "enable_command_stats", false);
    rl->max_buffer_size_before_flush =
        (uint32_t)mt_snap_field_int(L, rt, "max_buffer_size_before_flush", 0);
    rl->buffer_flush_timeout_ms = (uint32_t)mt_snap_field_int(L, rt, "buffer_flush_timeout_ms",
                                                              REDIS_DEFAULT_FLUSH_TIMEOUT_MS);
    rl->enable_redirection = mt_snap_field_bool(L, rt, "enable_redirection", true);
    rl->enable_hashtagging = mt_snap_field_bool(L, rt, "enable_hashtagging", true);
    rl->max_upstream_unknown_connections = (uint32_t)mt_snap_field_int(
        L, rt, "max_upstream_unknown_connections", REDIS_DEFAULT_MAX_UNKNOWN);
    rl->auth_timeout_ms = mt_snap_field_ms(L, rt, "auth_timeout_ms", REDIS_DEFAULT_AUTH_TIMEOUT_MS);
    rl->idle_timeout_ms = mt_snap_field_ms(L, rt, "idle_timeout_ms", 0);
}

/* One condition { commands = { "get", ... }, command_class = "READ" | "WRITE", token_bucket }
 * at index e into c. Returns 0, or -1 with the unknown command's name in msg. */
static int redis_read_rate_cond(lua_State *L, int e, mt_redis_rate_cond_t *c, uint64_t now_ms,
                                char *msg, size_t msglen)
{
    char *cls = mt_snap_field_str(L, e, "command_class");
    if (cls)
        c->flags = strcmp(cls, "WRITE") == 0 ? REDIS_CMD_WRITE : REDIS_CMD_READONLY;
    free(cls);
    int rc = 0;
    if (mt_snap_field_table(L, e, "commands")) {
        int ct = lua_gettop(L);
        for (size_t i = 1; rc == 0 && i <= lua_objlen(L, ct); i++) {
            lua_rawgeti(L, ct, (int)i);
            size_t n = 0;
            const char *name = lua_tolstring(L, -1, &n);
            const redis_command_t *cmd = name ? redis_command_lookup(name, n) : NULL;
            if (cmd) {
                c->ids[cmd->id / 64] |= 1ull << (cmd->id % 64);
            } else {
                snprintf(msg, msglen, "unknown command %s", name ? name : "?");
                rc = -1;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (mt_snap_field_table(L, e, "token_bucket")) {
        mt_snap_token_bucket(L, lua_gettop(L), &c->bucket, now_ms);
        lua_pop(L, 1);
    }
    return rc;
}

/* listener.redis.local_rate_limit at index rt into rl. */
static int redis_read_rate_limit(lua_State *L, int rt, mt_redis_listener_conf_t *rl, char *msg,
                                 size_t msglen)
{
    if (!mt_snap_field_table(L, rt, "local_rate_limit"))
        return 0;
    int t = lua_gettop(L);
    uint64_t now_ms = mt_snap_clock_ms();
    int rc = 0;
    if (mt_snap_field_table(L, t, "token_bucket")) {
        rl->rate_bucket = calloc(1, sizeof(*rl->rate_bucket));
        if (rl->rate_bucket)
            mt_snap_token_bucket(L, lua_gettop(L), rl->rate_bucket, now_ms);
        else
            rc = -1;
        lua_pop(L, 1);
    }
    if (rc == 0 && mt_snap_field_table(L, t, "conditions")) {
        int ct = lua_gettop(L);
        size_t cnt = lua_objlen(L, ct);
        rl->rate_conds = calloc(cnt ? cnt : 1, sizeof(*rl->rate_conds));
        rc = rl->rate_conds ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < cnt; i++) {
            lua_rawgeti(L, ct, (int)i + 1);
            if (lua_istable(L, -1))
                rc = redis_read_rate_cond(L, lua_gettop(L), &rl->rate_conds[rl->n_rate_conds++],
                                          now_ms, msg, msglen);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

/* One name of settings.deniedCommands: "flushall" or "config|set" (the compiler lower-cased
 * it and turned a space into '|'). False when Redis has no such command. */
static bool redis_deny_one(mt_redis_listener_conf_t *rl, const char *name, size_t len)
{
    const redis_command_t *cmd = redis_command_lookup_fullname(name, len);
    if (!cmd)
        return false;
    const redis_command_t *subs = redis_command__subcommands;
    if (cmd >= subs && cmd < subs + redis_command__subcommand_count) {
        size_t i = (size_t)(cmd - subs);
        rl->denied_sub[i / 8] |= (uint8_t)(1u << (i % 8));
    } else {
        rl->denied[cmd->id / 8] |= (uint8_t)(1u << (cmd->id % 8));
    }
    rl->n_denied++;
    return true;
}

static int redis_read_denied(lua_State *L, int rt, mt_redis_listener_conf_t *rl, char **err)
{
    if (!mt_snap_field_table(L, rt, "denied_commands"))
        return 0;
    int dt = lua_gettop(L);
    size_t n = lua_objlen(L, dt);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        lua_rawgeti(L, dt, (int)i + 1);
        size_t len = 0;
        const char *name = lua_tolstring(L, -1, &len);
        if (!name || !redis_deny_one(rl, name, len)) {
            char text[200];
            snprintf(text, sizeof(text),
                     "RedisService settings.deniedCommands[%zu]: Redis 7.0 has no command '%.*s'",
                     i, (int)MT_MIN(len, 100), name ? name : "?");
            *err = strdup(text);
            rc = -1;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

int mt_redis_read_listener(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l, char **err)
{
    (void)s;
    mt_redis_listener_conf_t *rl = calloc(1, sizeof(*rl));
    if (!rl) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    l->proto = rl;
    l->istio_codes = &mt_redis_istio_codes;
    /* A listener without a redis table (no RedisService) runs on these defaults. */
    rl->op_timeout_ms = REDIS_DEFAULT_OP_TIMEOUT_MS;
    rl->enable_redirection = true;
    rl->enable_hashtagging = true;
    rl->max_upstream_unknown_connections = REDIS_DEFAULT_MAX_UNKNOWN;
    rl->auth_timeout_ms = REDIS_DEFAULT_AUTH_TIMEOUT_MS;
    if (mt_snap_field_table(L, t, "redis")) {
        char msg[160] = "";
        redis_read_settings(L, lua_gettop(L), rl);
        int rc = redis_read_rate_limit(L, lua_gettop(L), rl, msg, sizeof(msg));
        if (rc != 0) {
            lua_pop(L, 1);
            if (asprintf(err, "listener %s: localRateLimit: %s", l->name,
                         msg[0] ? msg : "out of memory") < 0)
                *err = NULL;
            return -1;
        }
        rc = redis_read_denied(L, lua_gettop(L), rl, err);
        lua_pop(L, 1);
        return rc;
    }
    return 0;
}

void mt_redis_free_listener(mt_listener_conf_t *l)
{
    mt_redis_listener_conf_t *rl = l->proto;
    if (!rl)
        return;
    mt_auth_free(&rl->auth);
    free(rl->rate_bucket);
    free(rl->rate_conds);
    free(rl);
    l->proto = NULL;
}
