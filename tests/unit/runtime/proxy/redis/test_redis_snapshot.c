/*
 * test_redis_snapshot.c - the Redis part of a snapshot (runtime/proxy/redis/redis_snapshot.c)
 * as the data path reads it through mt_redis_listener() / mt_redis_cluster(): snapshots built
 * from the compiler's table shape (docs/snapshot.md) through mt_snapshot_from_lua, then the
 * RedisService defaults and settings, RedisDestination mode, auth as byte strings, discovery
 * seeds, endpoint roles, and what a cluster of another protocol reads as.
 */
#include "runtime/luajit/lua_env.h"
#include "runtime/proxy/redis/redis_conf.h"
#include "runtime/core/snapshot.h"
#include "runtime/core/stats.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <string.h>

static void rsnap_setup(void)
{
    mt_stats_init(1);
}

TestSuite(redis_snapshot, .init = rsnap_setup);

/* A snapshot from Lua source that returns the table; the test fails if it is refused. */
static mt_snapshot_t *snap_ok(const char *src)
{
    lua_State *L = mt_lua_new();
    cr_assert_not_null(L);
    cr_assert_eq(luaL_loadstring(L, src), 0, "%s", lua_tostring(L, -1));
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0, "%s", lua_tostring(L, -1));
    char *err = NULL;
    mt_snapshot_t *s = mt_snapshot_from_lua(L, -1, 1, &err);
    lua_close(L);
    cr_assert_not_null(s, "snapshot refused: %s", err ? err : "?");
    return s;
}

static const mt_listener_conf_t *listener_named(const mt_snapshot_t *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        if (strcmp(s->listeners[i].name, name) == 0)
            return &s->listeners[i];
    }
    cr_assert_fail("no listener %s", name);
    return NULL;
}

#define LISTENER(addr, extra)                                                                      \
    "{ name = '" addr ":6379', address = '" addr "', port = 6379, protocol = 'redis',"             \
    "  cluster = 'outbound|6379||r', fingerprint = 'fp-" addr "', " extra " }"

#define CLUSTER_R(extra)                                                                           \
    "['outbound|6379||r'] = { name = 'outbound|6379||r', service = 'r', protocol = 'redis',"       \
    "  fingerprint = 'fp-r', " extra " }"

/* A snapshot with the cluster outbound|6379||r (its fields spliced in) and listeners. */
#define SNAP(cluster_fields, listeners)                                                            \
    "return { clusters = { " CLUSTER_R(cluster_fields) " }, listeners = { " listeners " } }"

/* ---- listener.redis --------------------------------------------------------------------- */

static const char defaults_src[] = SNAP("endpoints = {}", LISTENER("127.0.0.71", ""));

Test(redis_snapshot, listener_without_redis_table_takes_the_documented_defaults)
{
    mt_snapshot_t *s = snap_ok(defaults_src);
    const mt_redis_listener_conf_t *rl = mt_redis_listener(listener_named(s, "127.0.0.71:6379"));
    cr_assert_not_null(rl);
    cr_assert_null(rl->auth.password);
    cr_assert_null(rl->auth.username);
    cr_assert_eq(rl->op_timeout_ms, 5000);
    cr_assert_eq(rl->read_policy, MT_READ_MASTER);
    cr_assert_not(rl->enable_command_stats);
    cr_assert_eq(rl->max_buffer_size_before_flush, 0);
    cr_assert(rl->enable_redirection);
    cr_assert(rl->enable_hashtagging);
    cr_assert_eq(rl->max_upstream_unknown_connections, 100);
    cr_assert_eq(rl->auth_timeout_ms, 10000);
    cr_assert_eq(rl->idle_timeout_ms, 0);
    mt_snapshot_unref(s);
}

static const char settings_src[] = SNAP(
    "endpoints = {}",
    LISTENER("127.0.0.72", "redis = { auth = { username = 'u', password = 'p\\0w' },"
                           "  op_timeout_ms = 250, read_policy = 'PREFER_REPLICA',"
                           "  enable_command_stats = true, max_buffer_size_before_flush = 4096,"
                           "  buffer_flush_timeout_ms = 7, enable_redirection = false,"
                           "  enable_hashtagging = false, max_upstream_unknown_connections = 3,"
                           "  auth_timeout_ms = 1500, idle_timeout_ms = 60000 }"));

Test(redis_snapshot, listener_settings_are_read_and_auth_keeps_embedded_nuls)
{
    mt_snapshot_t *s = snap_ok(settings_src);
    const mt_redis_listener_conf_t *rl = mt_redis_listener(listener_named(s, "127.0.0.72:6379"));
    cr_assert_eq(rl->auth.username_len, 1);
    cr_assert_str_eq(rl->auth.username, "u");
    cr_assert_eq(rl->auth.password_len, 3);
    cr_assert_eq(memcmp(rl->auth.password, "p\0w", 3), 0);
    cr_assert_eq(rl->op_timeout_ms, 250);
    cr_assert_eq(rl->read_policy, MT_READ_PREFER_REPLICA);
    cr_assert(rl->enable_command_stats);
    cr_assert_eq(rl->max_buffer_size_before_flush, 4096);
    cr_assert_eq(rl->buffer_flush_timeout_ms, 7);
    cr_assert_not(rl->enable_redirection);
    cr_assert_not(rl->enable_hashtagging);
    cr_assert_eq(rl->max_upstream_unknown_connections, 3);
    cr_assert_eq(rl->auth_timeout_ms, 1500);
    cr_assert_eq(rl->idle_timeout_ms, 60000);
    mt_snapshot_unref(s);
}

static const char edge_src[] = SNAP(
    "endpoints = {}", LISTENER("127.0.0.73", "redis = { op_timeout_ms = 0, read_policy = 'NEAREST',"
                                             "  auth_timeout_ms = -5, idle_timeout_ms = 1e12 }"));

Test(redis_snapshot, zero_op_timeout_unknown_policy_and_out_of_range_durations)
{
    mt_snapshot_t *s = snap_ok(edge_src);
    const mt_redis_listener_conf_t *rl = mt_redis_listener(listener_named(s, "127.0.0.73:6379"));
    cr_assert_eq(rl->op_timeout_ms, 5000, "0 is no timeout to run on: the default");
    cr_assert_eq(rl->read_policy, MT_READ_MASTER);
    cr_assert_eq(rl->auth_timeout_ms, 0);
    cr_assert_eq(rl->idle_timeout_ms, UINT32_MAX);
    mt_snapshot_unref(s);
}

/* ---- cluster.redis ---------------------------------------------------------------------- */

static const char seeds_src[] =
    SNAP("endpoints = { { address = '127.0.0.1', port = 7000 } },"
         "redis = { mode = 'CLUSTER', auth = { password = 'sekret' },"
         "  discovery_endpoints = { { address = '127.0.0.1', port = 7001 }, 'junk',"
         "    { port = 7002 } } }",
         "");

Test(redis_snapshot, cluster_mode_auth_and_discovery_seeds)
{
    mt_snapshot_t *s = snap_ok(seeds_src);
    const mt_redis_cluster_conf_t *rc =
        mt_redis_cluster(mt_snapshot_cluster(s, "outbound|6379||r"));
    cr_assert_neq(rc, &mt_redis_cluster_none);
    cr_assert_eq(rc->mode, MT_REDIS_CLUSTER);
    cr_assert_null(rc->auth.username);
    cr_assert_eq(rc->auth.password_len, 6);
    cr_assert_str_eq(rc->auth.password, "sekret");
    cr_assert_eq(rc->n_discovery, 2, "a non-table seed is skipped");
    cr_assert_str_eq(rc->discovery[0].address, "127.0.0.1");
    cr_assert_eq(rc->discovery[0].port, 7001);
    cr_assert_null(rc->discovery[0].resolve_error);
    cr_assert_null(rc->discovery[1].address);
    cr_assert_str_eq(rc->discovery[1].resolve_error, "discovery endpoint without an address");
    cr_assert_eq(rc->n_replicas, 0);
    mt_snapshot_unref(s);
}

Test(redis_snapshot, cluster_without_redis_table_is_proxy_mode_without_auth)
{
    mt_snapshot_t *s = snap_ok(SNAP("endpoints = {}", ""));
    const mt_redis_cluster_conf_t *rc =
        mt_redis_cluster(mt_snapshot_cluster(s, "outbound|6379||r"));
    cr_assert_neq(rc, &mt_redis_cluster_none);
    cr_assert_eq(rc->mode, MT_REDIS_PROXY);
    cr_assert_null(rc->auth.password);
    cr_assert_eq(rc->n_discovery, 0);
    cr_assert_null(rc->replica);
    mt_snapshot_unref(s);
}

static const char roles_src[] =
    SNAP("endpoints = {"
         "  { address = '127.0.0.1', port = 7000, labels = { role = 'primary' } },"
         "  { address = '127.0.0.1', port = 7001, labels = { role = 'replica' } },"
         "  { address = '127.0.0.1', port = 7002 },"
         "  { address = '127.0.0.1', port = 7003, labels = { ['redis-role'] = 'slave' } },"
         "  { address = '127.0.0.1', port = 7004, labels = { ['redis.io/role'] = 'replica' } },"
         "  { address = '127.0.0.1', port = 7005, labels = { version = 'replica' } } }",
         "");

Test(redis_snapshot, endpoint_roles_come_from_the_role_labels_in_endpoint_order)
{
    mt_snapshot_t *s = snap_ok(roles_src);
    const mt_cluster_conf_t *c = mt_snapshot_cluster(s, "outbound|6379||r");
    const mt_redis_cluster_conf_t *rc = mt_redis_cluster(c);
    cr_assert_eq(c->n_endpoints, 6);
    cr_assert_not_null(rc->replica);
    const bool want[] = {false, true, false, true, true, false};
    for (uint32_t i = 0; i < c->n_endpoints; i++)
        cr_assert_eq(rc->replica[i], want[i], "endpoint %u (port %u)", i, c->endpoints[i].port);
    cr_assert_eq(rc->n_replicas, 3);
    mt_snapshot_unref(s);
}

/* ---- other protocols -------------------------------------------------------------------- */

Test(redis_snapshot, clusters_of_other_protocols_read_as_the_empty_redis_part)
{
    mt_snapshot_t *s = snap_ok(
        "return { clusters = {"
        "  t = { name = 't', protocol = 'tcp', fingerprint = 'fp-t', endpoints = {},"
        "        redis = { mode = 'CLUSTER', auth = { password = 'x' } } },"
        "  m = { name = 'm', protocol = 'metaprotocol', codec = 'thrift', fingerprint = 'fp-m',"
        "        endpoints = { { address = '127.0.0.1', port = 7000, labels = { role = "
        "'replica' } } } } },"
        "  listeners = {} }");
    const mt_cluster_conf_t *t = mt_snapshot_cluster(s, "t");
    const mt_cluster_conf_t *m = mt_snapshot_cluster(s, "m");
    cr_assert_null(t->proto, "core reads no redis table: the TCP proxy has no part");
    cr_assert_not_null(m->proto, "MetaProtocol's own part");
    cr_assert_eq(mt_redis_cluster(t), &mt_redis_cluster_none);
    cr_assert_eq(mt_redis_cluster(m), &mt_redis_cluster_none);
    cr_assert_eq(mt_redis_cluster_none.mode, MT_REDIS_PROXY);
    cr_assert_null(mt_redis_cluster_none.auth.password);
    cr_assert_eq(mt_redis_cluster_none.n_replicas, 0);
    mt_snapshot_unref(s);
}
