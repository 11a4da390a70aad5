/*
 * test_meta_router.c - MetaRouter decisions as the data path makes them: snapshots built from
 * the compiler's table shape (docs/snapshot.md) through mt_snapshot_from_lua, then route
 * matching (exact, prefix, whole-value regex, presence, order), weighted destinations,
 * DestinationRule subsets resolved against endpoint labels, the load-balancing policies and
 * the stability of ring hashing.
 */
#include "runtime/luajit/lua_env.h"
#include "runtime/proxy/meta/meta_router.h"
#include "runtime/core/snapshot.h"
#include "runtime/core/stats.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static mt_meta_match_data_t *match_data;

static void meta_setup(void)
{
    mt_stats_init(1);
    match_data = mt_meta_match_data_new();
    cr_assert_not_null(match_data);
}

static void meta_teardown(void)
{
    mt_meta_match_data_free(match_data);
    match_data = NULL;
}

TestSuite(meta, .init = meta_setup, .fini = meta_teardown);

/* A snapshot from Lua source that returns the table; NULL and *err on a refused one. */
static mt_snapshot_t *snap_build(const char *src, char **err)
{
    lua_State *L = mt_lua_new();
    cr_assert_not_null(L);
    cr_assert_eq(luaL_loadstring(L, src), 0, "%s", lua_tostring(L, -1));
    cr_assert_eq(lua_pcall(L, 0, 1, 0), 0, "%s", lua_tostring(L, -1));
    *err = NULL;
    mt_snapshot_t *s = mt_snapshot_from_lua(L, -1, 1, err);
    lua_close(L);
    return s;
}

static mt_snapshot_t *snap_ok(const char *src)
{
    char *err = NULL;
    mt_snapshot_t *s = snap_build(src, &err);
    cr_assert_not_null(s, "snapshot refused: %s", err ? err : "?");
    return s;
}

/* Three endpoints v1, v1, v2 and the listener's routes spliced in. */
#define CLUSTER_SVC                                                                                \
    "['outbound|9090||svc'] = { name = 'outbound|9090||svc', service = 'svc', port = 9090,"        \
    "  fingerprint = 'fp-svc',"                                                                    \
    "  protocol = 'metaprotocol', codec = 'thrift', lb_policy = LB, hash_key = HK,"                \
    "  endpoints = {"                                                                              \
    "    { address = '127.0.0.1', port = 7001, labels = { version = 'v1', zone = 'a' } },"         \
    "    { address = '127.0.0.1', port = 7002, labels = { version = 'v1', zone = 'b' } },"         \
    "    { address = '127.0.0.1', port = 7003, labels = { version = 'v2' } } },"                   \
    "  subsets = { v1 = { labels = { version = 'v1' } }, v2 = { labels = { version = 'v2' } },"    \
    "    v1a = { labels = { version = 'v1', zone = 'a' } }, none = { labels = { version = 'v9' } " \
    "},"                                                                                           \
    "    rr = { labels = { version = 'v1' }, policy = { lb_policy = 'ROUND_ROBIN' } } } },"

static char *snap_src(const char *lb, const char *hash_key, const char *routes)
{
    char *src = NULL;
    int n = asprintf(&src,
                     "local LB, HK = %s, %s\n"
                     "return { version = 1, clusters = { " CLUSTER_SVC " },\n"
                     "  listeners = { { name = '127.0.0.60:9090', address = '127.0.0.60',"
                     "    port = 9090, protocol = 'metaprotocol', codec = 'thrift',"
                     "    fingerprint = 'fp-l',"
                     "    service = 'svc', cluster = 'outbound|9090||svc',"
                     "    metaprotocol = { routes = { %s } } } } }",
                     lb, hash_key, routes);
    cr_assert_gt(n, 0);
    return src;
}

static mt_snapshot_t *snap_with(const char *lb, const char *hash_key, const char *routes)
{
    char *src = snap_src(lb, hash_key, routes);
    mt_snapshot_t *s = snap_ok(src);
    free(src);
    return s;
}

/* A message with attributes given as "key", "value", ..., NULL. */
static void msg_with(mt_msg_t *m, ...)
{
    static const uint8_t frame[1] = {0};
    mt_msg_init(m);
    mt_msg__begin(m, NULL, frame, sizeof(frame));
    va_list ap;
    va_start(ap, m);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        cr_assert_eq(mt_msg__add_attr(m, (mt_str_t){k, strlen(k)}, (mt_str_t){v, strlen(v)}),
                     MT_OK);
    }
    va_end(ap);
}

static const char *route_of(const mt_snapshot_t *s, const mt_msg_t *m)
{
    const mt_meta_route_t *r =
        mt_meta_route_find(mt_meta_listener(&s->listeners[0]), m, match_data);
    return r ? r->name : "(none)";
}

#define ROUTE(name, match, dests)                                                                  \
    "{ name = '" name "', match = { " match " }, route = { " dests " } },"
#define TO(subset, w) "{ cluster = 'outbound|9090||svc', subset = " subset ", weight = " #w " },"

/* ---- matching ----------------------------------------------------------------------------- */

Test(meta, exact_prefix_regex_and_presence_each_decide_a_route)
{
    mt_snapshot_t *s = snap_with(
        "'ROUND_ROBIN'", "nil",
        ROUTE("exact", "{ key = 'method', exact = 'sayHello' }", TO("'v1'", 100))
            ROUTE("prefix", "{ key = 'method', prefix = 'get' }", TO("'v1'", 100))
                ROUTE("regex", "{ key = 'user', regex = 'u[0-9]+' }", TO("'v2'", 100))
                    ROUTE("present", "{ key = 'canary', present = true }", TO("'v2'", 100)));
    mt_msg_t m;
    msg_with(&m, "method", "sayHello", NULL);
    cr_expect_str_eq(route_of(s, &m), "exact");
    mt_msg_free(&m);
    msg_with(&m, "method", "sayHello2", NULL);
    cr_expect_str_eq(route_of(s, &m), "(none)", "exact is not a prefix match");
    mt_msg_free(&m);
    msg_with(&m, "method", "getUser", NULL);
    cr_expect_str_eq(route_of(s, &m), "prefix");
    mt_msg_free(&m);
    msg_with(&m, "method", "ge", NULL);
    cr_expect_str_eq(route_of(s, &m), "(none)", "a value shorter than the prefix");
    mt_msg_free(&m);
    msg_with(&m, "user", "u42", NULL);
    cr_expect_str_eq(route_of(s, &m), "regex");
    mt_msg_free(&m);
    msg_with(&m, "canary", "", NULL);
    cr_expect_str_eq(route_of(s, &m), "present", "an empty value is still present");
    mt_msg_free(&m);
    msg_with(&m, "other", "x", NULL);
    cr_expect_str_eq(route_of(s, &m), "(none)");
    mt_msg_free(&m);
    mt_snapshot_unref(s);
}

Test(meta, regex_matches_the_whole_value_like_envoy_safe_regex)
{
    mt_snapshot_t *s =
        snap_with("'ROUND_ROBIN'", "nil",
                  ROUTE("re", "{ key = 'user', regex = 'u[0-9]+' }", TO("'v1'", 100)));
    const char *yes[] = {"u1", "u0123456789"};
    const char *no[] = {"xu1", "u1x", "u", "U1", ""};
    for (size_t i = 0; i < 2; i++) {
        mt_msg_t m;
        msg_with(&m, "user", yes[i], NULL);
        cr_expect_str_eq(route_of(s, &m), "re", "%s", yes[i]);
        mt_msg_free(&m);
    }
    for (size_t i = 0; i < 5; i++) {
        mt_msg_t m;
        msg_with(&m, "user", no[i], NULL);
        cr_expect_str_eq(route_of(s, &m), "(none)", "'%s' must not match", no[i]);
        mt_msg_free(&m);
    }
    /* invalid UTF-8 (Thrift strings are bytes) fails to match instead of misbehaving */
    mt_msg_t m;
    msg_with(&m, "user", "u1\xff\xfe", NULL);
    cr_expect_str_eq(route_of(s, &m), "(none)");
    mt_msg_free(&m);
    mt_snapshot_unref(s);
}

Test(meta, every_condition_must_hold_and_the_first_matching_route_wins)
{
    mt_snapshot_t *s = snap_with(
        "'ROUND_ROBIN'", "nil",
        ROUTE("both", "{ key = 'method', exact = 'm' }, { key = 'user', prefix = 'a' }",
              TO("'v1'", 100)) ROUTE("method", "{ key = 'method', exact = 'm' }", TO("'v2'", 100))
            ROUTE("all", "", TO("nil", 100)) ROUTE("unreachable", "", TO("'v2'", 100)));
    mt_msg_t m;
    msg_with(&m, "method", "m", "user", "alice", NULL);
    cr_expect_str_eq(route_of(s, &m), "both");
    mt_msg_free(&m);
    msg_with(&m, "method", "m", "user", "bob", NULL);
    cr_expect_str_eq(route_of(s, &m), "method");
    mt_msg_free(&m);
    msg_with(&m, "user", "alice", NULL);
    cr_expect_str_eq(route_of(s, &m), "all", "a route without conditions matches anything");
    mt_msg_free(&m);
    mt_snapshot_unref(s);
}

Test(meta, a_regex_that_does_not_compile_refuses_the_snapshot_and_names_the_route)
{
    char *src = snap_src("'ROUND_ROBIN'", "nil",
                         ROUTE("broken", "{ key = 'user', regex = 'u[0-9' }", TO("'v1'", 100)));
    char *err = NULL;
    mt_snapshot_t *s = snap_build(src, &err);
    free(src);
    cr_assert_null(s);
    cr_assert_not_null(err);
    cr_expect(strstr(err, "broken") && strstr(err, "u[0-9") && strstr(err, "127.0.0.60:9090"), "%s",
              err);
    free(err);
}

/* core/snapshot.c, tested here for want of a core snapshot suite: the compiler gives every
 * cluster and listener a fingerprint; a table without one is a compiler bug, not "unchanged". */
Test(meta, a_cluster_or_listener_without_a_fingerprint_refuses_the_snapshot)
{
    static const char *const srcs[] = {
        "return { version = 1, clusters = { c = { name = 'c', protocol = 'metaprotocol',"
        "  codec = 'thrift' } }, listeners = {} }",
        "return { version = 1, clusters = {}, listeners = { { name = '127.0.0.60:1',"
        "  address = '127.0.0.60', port = 1, protocol = 'tcp', fingerprint = '' } } }",
    };
    for (size_t i = 0; i < MT_ARRAY_LEN(srcs); i++) {
        char *err = NULL;
        mt_snapshot_t *s = snap_build(srcs[i], &err);
        cr_assert_null(s, "snapshot %zu accepted", i);
        cr_assert_not_null(err);
        cr_expect(strstr(err, "has no fingerprint"), "%s", err);
        free(err);
    }
}

/* ---- destinations and subsets ------------------------------------------------------------- */

Test(meta, weights_split_requests_in_proportion_and_zero_weight_gets_none)
{
    mt_snapshot_t *s = snap_with("'ROUND_ROBIN'", "nil",
                                 ROUTE("split", "", TO("'v1'", 20) TO("'v2'", 80) TO("'v1a'", 0)));
    const mt_meta_route_t *r = &mt_meta_listener(&s->listeners[0])->routes[0];
    cr_assert_eq(r->n_dests, 3);
    cr_assert_eq(r->weight_total, 100);
    uint32_t n[3] = {0};
    for (uint64_t rnd = 0; rnd < 1000; rnd++)
        n[mt_meta_dest_pick(r, rnd) - r->dests]++;
    cr_expect_eq(n[0], 200);
    cr_expect_eq(n[1], 800);
    cr_expect_eq(n[2], 0);
    mt_snapshot_unref(s);
}

Test(meta, subsets_select_endpoints_by_every_label)
{
    mt_snapshot_t *s = snap_with("'ROUND_ROBIN'", "nil",
                                 ROUTE("r", "",
                                       TO("'v1'", 25) TO("'v2'", 25) TO("'v1a'", 25)
                                           TO("'none'", 25) TO("nil", 0)));
    const mt_meta_route_t *r = &mt_meta_listener(&s->listeners[0])->routes[0];
    const mt_meta_subset_t *v1 = mt_meta_dest_subset(&r->dests[0]);
    const mt_meta_subset_t *v2 = mt_meta_dest_subset(&r->dests[1]);
    const mt_meta_subset_t *v1a = mt_meta_dest_subset(&r->dests[2]);
    const mt_meta_subset_t *none = mt_meta_dest_subset(&r->dests[3]);
    const mt_meta_subset_t *all = mt_meta_dest_subset(&r->dests[4]);
    cr_assert(v1 && v2 && v1a && none && all);
    cr_expect_eq(v1->n_eps, 2);
    cr_expect_eq(v1->eps[0], 0);
    cr_expect_eq(v1->eps[1], 1);
    cr_expect_eq(v2->n_eps, 1);
    cr_expect_eq(v2->eps[0], 2);
    cr_expect_eq(v1a->n_eps, 1, "both labels must match");
    cr_expect_eq(v1a->eps[0], 0);
    cr_expect_eq(none->n_eps, 0);
    cr_expect_eq(all->n_eps, 3);
    uint32_t rr = 0;
    mt_meta_lb_env_t env = {.rr = &rr};
    cr_expect_eq(mt_meta_lb_pick(none, &env), -1, "an empty subset has no endpoint to give");
    mt_snapshot_unref(s);
}

Test(meta, a_destination_to_an_unknown_subset_or_cluster_has_no_endpoints)
{
    mt_snapshot_t *s = snap_with(
        "'ROUND_ROBIN'", "nil",
        ROUTE("r", "", TO("'v7'", 50) "{ cluster = 'outbound|1||nowhere', weight = 50 },"));
    const mt_meta_route_t *r = &mt_meta_listener(&s->listeners[0])->routes[0];
    cr_expect_eq(r->dests[0].subset, -2);
    cr_expect_null(mt_meta_dest_subset(&r->dests[0]));
    cr_expect_null(r->dests[1].cluster);
    cr_expect_null(mt_meta_dest_subset(&r->dests[1]));
    mt_snapshot_unref(s);
}

Test(meta, mutations_mirror_timeout_and_codecs_are_read_from_the_snapshot)
{
    mt_snapshot_t *s = snap_with(
        "'ROUND_ROBIN'", "nil",
        "{ name = 'm', match = {}, route = { " TO(
            "'v1'",
            100) " },"
                 "  mirror = { cluster = 'outbound|9090||svc', subset = 'v2', percentage = 12.5 },"
                 "  request_mutation = { { key = 'a', value = '1' }, { key = 'b', value = '2' } },"
                 "  response_mutation = { { key = 'c', value = '3' } } },");
    const mt_meta_listener_conf_t *lc = mt_meta_listener(&s->listeners[0]);
    cr_assert_not_null(lc);
    cr_expect_eq(lc->request_timeout_ms, 5000);
    cr_expect_eq(lc->codec, &mt_codec_thrift);
    cr_expect_eq(mt_meta_cluster(&s->clusters[0])->codec_impl, &mt_codec_thrift);
    const mt_meta_route_t *r = &lc->routes[0];
    cr_assert_eq(r->n_request_mutation, 2);
    cr_expect(mt_str_eq(r->request_mutation[1].key, "b", 1));
    cr_expect(mt_str_eq(r->request_mutation[1].val, "2", 1));
    cr_assert_eq(r->n_response_mutation, 1);
    cr_expect(mt_str_eq(r->response_mutation[0].val, "3", 1));
    cr_assert_not_null(r->mirror);
    cr_expect_float_eq(r->mirror->percentage, 12.5, 1e-9);
    cr_expect_eq(mt_meta_dest_subset(r->mirror)->eps[0], 2);
    mt_snapshot_unref(s);
}

Test(meta, an_unknown_codec_resolves_to_none_and_aeraki_names_resolve)
{
    mt_snapshot_t *s = snap_ok(
        "return { version = 1, clusters = {}, listeners = {"
        "  { name = '127.0.0.60:1', address = '127.0.0.60', port = 1, protocol = 'metaprotocol',"
        "    codec = 'nope', fingerprint = 'fp-1' },"
        "  { name = '127.0.0.60:2', address = '127.0.0.60', port = 2, protocol = 'metaprotocol',"
        "    codec = 'aeraki.meta_protocol.codec.dubbo', fingerprint = 'fp-2', metaprotocol = {"
        "    request_timeout_ms = 250 } } } }");
    cr_expect_null(mt_meta_listener(&s->listeners[0])->codec);
    cr_expect_eq(mt_meta_listener(&s->listeners[1])->codec, &mt_codec_dubbo);
    cr_expect_eq(mt_meta_listener(&s->listeners[1])->request_timeout_ms, 250);
    mt_snapshot_unref(s);
}

Test(meta, mirror_percentage_rolls)
{
    uint32_t n = 0;
    for (uint64_t rnd = 0; rnd < 100000000u; rnd += 1000)
        n += mt_meta_mirror_roll(25.0, rnd);
    cr_expect_eq(n, 25000);
    cr_expect(!mt_meta_mirror_roll(0.0, 0));
    cr_expect(mt_meta_mirror_roll(100.0, 99999999));
}

/* ---- load balancing ------------------------------------------------------------------------ */

typedef struct lb_state {
    bool down[8];
    uint32_t load[8];
} lb_state_t;

static bool st_healthy(void *ctx, uint32_t ep)
{
    return !((lb_state_t *)ctx)->down[ep];
}

static uint32_t st_load(void *ctx, uint32_t ep)
{
    return ((lb_state_t *)ctx)->load[ep];
}

Test(meta, round_robin_cycles_and_skips_unhealthy_endpoints)
{
    mt_snapshot_t *s = snap_with("'ROUND_ROBIN'", "nil", ROUTE("r", "", TO("nil", 100)));
    const mt_meta_subset_t *all = &mt_meta_cluster(&s->clusters[0])->all;
    lb_state_t st = {.down = {false}};
    uint32_t rr = 0;
    mt_meta_lb_env_t env = {.healthy = st_healthy, .load = st_load, .ctx = &st, .rr = &rr};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(mt_meta_lb_pick(all, &env), i % 3);
    st.down[1] = true;
    uint32_t n[3] = {0};
    for (int i = 0; i < 10; i++)
        n[mt_meta_lb_pick(all, &env)]++;
    cr_expect_eq(n[1], 0);
    cr_expect(n[0] >= 4 && n[2] >= 4, "%u %u", n[0], n[2]);
    st.down[0] = st.down[2] = true;
    cr_expect_eq(mt_meta_lb_pick(all, &env), -1, "no healthy upstream");
    mt_snapshot_unref(s);
}

Test(meta, least_request_prefers_the_least_loaded_healthy_endpoint)
{
    mt_snapshot_t *s = snap_with("'LEAST_REQUEST'", "nil", ROUTE("r", "", TO("nil", 100)));
    const mt_meta_subset_t *all = &mt_meta_cluster(&s->clusters[0])->all;
    cr_assert_eq(all->lb_policy, MT_LB_LEAST_REQUEST);
    lb_state_t st = {.load = {5, 1, 3}};
    uint32_t rr = 0;
    mt_meta_lb_env_t env = {.healthy = st_healthy, .load = st_load, .ctx = &st, .rr = &rr};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(mt_meta_lb_pick(all, &env), 1);
    st.down[1] = true;
    cr_expect_eq(mt_meta_lb_pick(all, &env), 2);
    /* equal loads take turns */
    memset(&st, 0, sizeof(st));
    uint32_t n[3] = {0};
    for (int i = 0; i < 30; i++)
        n[mt_meta_lb_pick(all, &env)]++;
    cr_expect(n[0] == 10 && n[1] == 10 && n[2] == 10, "%u %u %u", n[0], n[1], n[2]);
    mt_snapshot_unref(s);
}

Test(meta, random_reaches_every_endpoint_and_only_healthy_ones)
{
    mt_snapshot_t *s = snap_with("'RANDOM'", "nil", ROUTE("r", "", TO("nil", 100)));
    const mt_meta_subset_t *all = &mt_meta_cluster(&s->clusters[0])->all;
    lb_state_t st = {.down = {false, false, true}};
    uint32_t rr = 0, n[3] = {0};
    mt_meta_lb_env_t env = {.healthy = st_healthy, .ctx = &st, .rr = &rr};
    for (uint64_t i = 0; i < 300; i++) {
        env.rnd = mt_meta_hash(&i, sizeof(i));
        n[mt_meta_lb_pick(all, &env)]++;
    }
    cr_expect_eq(n[2], 0);
    cr_expect(n[0] > 50 && n[1] > 50, "%u %u", n[0], n[1]);
    mt_snapshot_unref(s);
}

Test(meta, a_subset_policy_overrides_the_cluster_policy)
{
    mt_snapshot_t *s = snap_with("'RING_HASH'", "'user'", ROUTE("r", "", TO("'rr'", 100)));
    const mt_meta_cluster_conf_t *mc = mt_meta_cluster(&s->clusters[0]);
    cr_expect_eq(mc->all.lb_policy, MT_LB_RING_HASH);
    cr_expect_gt(mc->all.ring.n, 0);
    const mt_meta_subset_t *rr =
        mt_meta_dest_subset(&mt_meta_listener(&s->listeners[0])->routes[0].dests[0]);
    cr_expect_eq(rr->lb_policy, MT_LB_ROUND_ROBIN);
    cr_expect_eq(rr->ring.n, 0, "no ring where none is used");
    const mt_meta_subset_t *v1 = &mc->subsets[0];
    cr_expect_eq(v1->lb_policy, MT_LB_RING_HASH, "subsets inherit the cluster's policy");
    cr_expect(mt_str_eq(v1->hash_key, "user", 4));
    mt_snapshot_unref(s);
}

/* ---- ring hash ---------------------------------------------------------------------------- */

static int64_t ring_pick(const mt_meta_subset_t *ss, lb_state_t *st, const char *key)
{
    uint32_t rr = 0;
    mt_str_t v = {key, strlen(key)};
    mt_meta_lb_env_t env = {
        .healthy = st_healthy, .ctx = st, .rr = &rr, .hash_value = &v, .rnd = (uint64_t)rand()};
    return mt_meta_lb_pick(ss, &env);
}

Test(meta, ring_hash_sends_one_key_to_one_endpoint_and_spreads_keys)
{
    mt_snapshot_t *s = snap_with("'RING_HASH'", "'user'", ROUTE("r", "", TO("nil", 100)));
    const mt_meta_subset_t *all = &mt_meta_cluster(&s->clusters[0])->all;
    cr_assert_eq(all->ring.n, 3 * MT_META_RING_POINTS);
    lb_state_t st = {.down = {false}};
    uint32_t n[3] = {0};
    for (int i = 0; i < 3000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user-%d", i);
        int64_t first = ring_pick(all, &st, key);
        for (int j = 0; j < 3; j++)
            cr_assert_eq(ring_pick(all, &st, key), first, "key %s moved", key);
        n[first]++;
    }
    for (int e = 0; e < 3; e++)
        cr_expect(n[e] > 600 && n[e] < 1400, "endpoint %d got %u of 3000 keys", e, n[e]);
    mt_snapshot_unref(s);
}

Test(meta, ring_hash_is_the_same_in_every_snapshot_and_moves_few_keys_when_one_is_added)
{
    mt_snapshot_t *a = snap_with("'RING_HASH'", "'user'", ROUTE("r", "", TO("nil", 100)));
    mt_snapshot_t *b = snap_with("'RING_HASH'", "'user'", ROUTE("r", "", TO("nil", 100)));
    const mt_cluster_conf_t *c = &a->clusters[0];
    const mt_meta_subset_t *ra = &mt_meta_cluster(c)->all,
                           *rb = &mt_meta_cluster(&b->clusters[0])->all;
    /* the same endpoints plus a fourth, built directly */
    mt_cluster_conf_t c4 = *c;
    mt_endpoint_conf_t eps[4];
    memcpy(eps, c->endpoints, 3 * sizeof(eps[0]));
    eps[3] = eps[2];
    eps[3].port = 7004;
    c4.endpoints = eps;
    c4.n_endpoints = 4;
    uint32_t idx[4] = {0, 1, 2, 3};
    mt_meta_ring_t r4;
    cr_assert_eq(mt_meta_ring_build(&r4, &c4, idx, 4, 0), 0);
    uint32_t moved = 0, keys = 4000;
    for (uint32_t i = 0; i < keys; i++) {
        char key[32];
        int len = snprintf(key, sizeof key, "k%u", i);
        uint64_t h = mt_meta_hash(key, (size_t)len);
        uint32_t before = mt_meta_ring_owner(&ra->ring, h);
        cr_assert_eq(mt_meta_ring_owner(&rb->ring, h), before, "snapshots disagree on %s", key);
        uint32_t after = mt_meta_ring_owner(&r4, h);
        if (after != before) {
            moved++;
            cr_expect_eq(after, 3, "key %s moved between old endpoints", key);
        }
    }
    /* ideal: a quarter of the keys move to the new endpoint */
    cr_expect(moved > keys / 8 && moved < keys * 2 / 5, "%u of %u keys moved", moved, keys);
    mt_meta_ring_free(&r4);
    mt_snapshot_unref(a);
    mt_snapshot_unref(b);
}

Test(meta, ring_hash_walks_past_an_unhealthy_owner_and_keeps_the_other_keys)
{
    mt_snapshot_t *s = snap_with("'RING_HASH'", "'user'", ROUTE("r", "", TO("nil", 100)));
    const mt_meta_subset_t *all = &mt_meta_cluster(&s->clusters[0])->all;
    lb_state_t up = {.down = {false}}, down1 = {.down = {false, true, false}};
    for (int i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user-%d", i);
        int64_t a = ring_pick(all, &up, key), b = ring_pick(all, &down1, key);
        cr_assert_neq(b, 1);
        if (a != 1)
            cr_assert_eq(a, b, "key %s moved although its endpoint is healthy", key);
    }
    lb_state_t none = {.down = {true, true, true}};
    cr_expect_eq(ring_pick(all, &none, "x"), -1);
    /* no hash value: any healthy endpoint */
    uint32_t rr = 0;
    mt_meta_lb_env_t env = {.healthy = st_healthy, .ctx = &down1, .rr = &rr, .rnd = 7};
    int64_t e = mt_meta_lb_pick(all, &env);
    cr_expect(e == 0 || e == 2);
    mt_snapshot_unref(s);
}

Test(meta, ring_hash_function_is_xxh3_and_spreads_one_byte_differences)
{
    /* Every process and build must place keys alike: XXH3 64-bit, unseeded. The empty input's
     * value is xxHash's published test vector. */
    cr_assert_eq(mt_meta_hash("", 0), 0x2d06800538d394c2ull);
    cr_assert_eq(mt_meta_hash("user-042", 8), 0x66a6ca577d72d3fbull);
    /* keys that differ only in the last byte differ in about half of the hash bits */
    char a[] = "user-000", b[] = "user-000";
    unsigned flipped = 0;
    for (int c = 0; c < 255; c++) {
        a[7] = (char)c;
        b[7] = (char)(c + 1);
        flipped += (unsigned)__builtin_popcountll(mt_meta_hash(a, 8) ^ mt_meta_hash(b, 8));
    }
    cr_expect(flipped > 255 * 28 && flipped < 255 * 36, "%u bits flipped over 255 pairs", flipped);
}

/* ---- localRateLimit ----------------------------------------------------------------------- */

Test(meta, local_rate_limit_buckets_and_conditions_are_read_from_the_snapshot)
{
    /* local_rate_limit sits next to routes in listener.metaprotocol (docs/snapshot.md). */
    mt_snapshot_t *s = snap_with(
        "'ROUND_ROBIN'", "nil",
        ROUTE("all", "",
              TO("nil", 100)) " }, local_rate_limit = {"
                              "  token_bucket = { max_tokens = 3, tokens_per_fill = 2, "
                              "fill_interval_ms = 1000 },"
                              "  conditions = { { match = { { key = 'method', exact = 'bye' } },"
                              "    token_bucket = { max_tokens = 1, tokens_per_fill = 1, "
                              "fill_interval_ms = 60000 } } } },"
                              " _unused = {");
    const mt_meta_listener_conf_t *lc = mt_meta_listener(&s->listeners[0]);
    cr_assert_not_null(lc->rate_bucket);
    cr_expect_eq(lc->rate_bucket->max_tokens, 3);
    cr_expect_eq(lc->rate_bucket->tokens_per_fill, 2);
    cr_expect_eq(lc->rate_bucket->fill_interval_ms, 1000);
    cr_assert_eq(lc->n_rate_conds, 1);
    const mt_meta_rate_cond_t *c = &lc->rate_conds[0];
    cr_expect_eq(c->bucket.max_tokens, 1);
    cr_expect_eq(c->bucket.fill_interval_ms, 60000);
    mt_msg_t bye, hello;
    msg_with(&bye, "method", "bye", NULL);
    msg_with(&hello, "method", "hello", NULL);
    cr_assert_eq(c->n_match, 1);
    cr_expect(mt_meta_match_one(&c->match[0], &bye, match_data));
    cr_expect_not(mt_meta_match_one(&c->match[0], &hello, match_data));
    mt_msg_free(&bye);
    mt_msg_free(&hello);
    mt_snapshot_unref(s);
}

Test(meta, a_listener_without_local_rate_limit_has_no_bucket)
{
    mt_snapshot_t *s = snap_with("'ROUND_ROBIN'", "nil", ROUTE("all", "", TO("nil", 100)));
    const mt_meta_listener_conf_t *lc = mt_meta_listener(&s->listeners[0]);
    cr_expect_null(lc->rate_bucket);
    cr_expect_eq(lc->n_rate_conds, 0);
    mt_snapshot_unref(s);
}

/* ---- the attributes a listener's requests are decoded for ---------------------------------- */

Test(meta, the_listener_wants_its_match_keys_hash_keys_and_error_names_only)
{
    mt_snapshot_t *s =
        snap_with("'RING_HASH'", "'user'",
                  ROUTE("a", "{ key = 'group', exact = 'blue' }, { key = 'zone', prefix = 'eu' }",
                        TO("'v1'", 100)) ROUTE("b", "{ key = 'tenant' }", TO("'v2'", 100)));
    const mt_attr_filter_t *f = &mt_meta_listener(&s->listeners[0])->want;
    const char *const wanted[] = {"interface",    "service",     "method",       "traceparent",
                                  "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "group",
                                  "zone",         "tenant",      "user"};
    for (size_t i = 0; i < MT_ARRAY_LEN(wanted); i++)
        cr_expect(mt_attr_filter_has(f, wanted[i], strlen(wanted[i])), "%s", wanted[i]);
    cr_expect_eq(f->n, MT_ARRAY_LEN(wanted), "nothing else: %u keys", f->n);
    cr_expect_not(mt_attr_filter_has(f, "version", 7));
    cr_expect_not(mt_attr_filter_has(f, "seq_id", 6));
    /* a request decoded through the filter still routes as without one */
    mt_msg_t m;
    msg_with(&m, NULL);
    m.want = f;
    cr_assert_eq(mt_msg__add_attr(&m, MT_STR("tenant"), MT_STR("t1")), MT_OK);
    cr_assert_eq(mt_msg__add_attr(&m, MT_STR("timeout"), MT_STR("30")), MT_OK);
    cr_expect_eq(m.nattrs, 1);
    cr_expect_str_eq(route_of(s, &m), "b");
    mt_msg_free(&m);
    mt_snapshot_unref(s);
}

Test(meta, route_timeout_and_fault_abort_are_read_from_the_snapshot)
{
    mt_snapshot_t *s = snap_with(
        "'ROUND_ROBIN'", "nil",
        "{ name = 'f', match = {}, route = { " TO(
            "nil", 100) " },"
                        "  timeout_ms = 250,"
                        "  fault_abort = { percentage = 12.5, error_kind = 'over_limit' } },");
    const mt_meta_route_t *r = &mt_meta_listener(&s->listeners[0])->routes[0];
    cr_expect_eq(r->timeout_ms, 250);
    cr_expect_float_eq(r->abort_percentage, 12.5, 1e-9);
    cr_expect_eq(r->abort_kind, MT_ERR_OVER_LIMIT);
    mt_snapshot_unref(s);
    s = snap_with("'ROUND_ROBIN'", "nil", ROUTE("plain", "", TO("nil", 100)));
    r = &mt_meta_listener(&s->listeners[0])->routes[0];
    cr_expect_eq(r->timeout_ms, 0, "no timeout: the listener's");
    cr_expect_float_eq(r->abort_percentage, 0.0, 1e-9, "no fault");
    mt_snapshot_unref(s);
}
