/*
 * test_authz.c - runtime/core/authz.c: AuthorizationPolicy tables read from a snapshot (a
 * Lua table as the compiler writes it) and checked: Istio's order (DENY, then ALLOW if any),
 * AUDIT marking only, wildcards in values, not* fields, keys (all of an ALLOWed command, any
 * of a DENYed one), CIDR blocks (IPv4 and IPv6), ports, `when` conditions, and the empty
 * policies Istio gives meaning to (ALLOW with no rules denies all; a rule {} matches all).
 */
#include "runtime/core/authz.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <string.h>

/* Loads `return { authz = { policies = ... } }` and reads it. */
static mt_authz_t *load(lua_State *L, const char *policies)
{
    char src[4096];
    snprintf(src, sizeof(src), "return { authz = { policies = %s } }", policies);
    cr_assert_eq(luaL_dostring(L, src), 0, "%s", lua_tostring(L, -1));
    char *err = NULL;
    mt_authz_t *a = mt_authz_from_lua(L, lua_gettop(L), &err);
    cr_assert_not_null(a, "%s", err ? err : "?");
    lua_settop(L, 0);
    return a;
}

typedef struct req {
    mt_authz_request_t r;
    struct sockaddr_storage sa;
    const char *keys[4];
    size_t lens[4];
} req_t;

static req_t *mkreq(req_t *q, const char *ip, const char *principal, const char *method,
                    const char *path, const char *k1, const char *k2)
{
    memset(q, 0, sizeof(*q));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&q->sa;
        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &a->sin6_addr);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&q->sa;
        a->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &a->sin_addr);
    }
    q->r.peer = (struct sockaddr *)&q->sa;
    q->r.principal = principal;
    q->r.port = 6379;
    q->r.method = method;
    q->r.method_len = method ? strlen(method) : 0;
    q->r.method_nocase = true;
    q->r.path = path;
    q->r.path_len = path ? strlen(path) : 0;
    const char *ks[2] = {k1, k2};
    for (int i = 0; i < 2; i++) {
        if (ks[i]) {
            q->keys[q->r.n_keys] = ks[i];
            q->lens[q->r.n_keys++] = strlen(ks[i]);
        }
    }
    q->r.keys = q->keys;
    q->r.key_lens = q->lens;
    return q;
}

static bool allowed(const mt_authz_t *a, req_t *q)
{
    return mt_authz_check(a, &q->r).allowed;
}

Test(authz, deny_then_allow_then_audit)
{
    lua_State *L = luaL_newstate();
    mt_authz_t *a = load(L, "{"
                            "{ name = 'ns/allow', action = 'ALLOW', rules = { { to = { { "
                            "methods = { 'GET', 'SET' } } } } } },"
                            "{ name = 'ns/deny', action = 'DENY', rules = { { to = { { "
                            "keys = { 'secret:' } } } } } },"
                            "{ name = 'ns/audit', action = 'AUDIT', rules = { { to = { { "
                            "methods = { 'SET' } } } } } } }");
    req_t q;
    cr_assert(allowed(a, mkreq(&q, "127.0.0.1", NULL, "get", NULL, "k", NULL)), "any case");
    cr_assert_not(allowed(a, mkreq(&q, "127.0.0.1", NULL, "DEL", NULL, "k", NULL)),
                  "matches no ALLOW policy");
    mt_authz_verdict_t v =
        mt_authz_check(a, &mkreq(&q, "127.0.0.1", NULL, "GET", NULL, "ok", "secret:x")->r);
    cr_assert_not(v.allowed, "DENY wins over ALLOW, one key is enough");
    cr_assert_str_eq(v.policy, "ns/deny");
    v = mt_authz_check(a, &mkreq(&q, "127.0.0.1", NULL, "SET", NULL, "k", NULL)->r);
    cr_assert(v.allowed && v.audited, "AUDIT marks, does not deny");
    cr_assert_str_eq(v.policy, "ns/audit");
    mt_authz_free(a);
    lua_close(L);
}

Test(authz, allow_keys_must_all_match_and_wildcards)
{
    lua_State *L = luaL_newstate();
    mt_authz_t *a =
        load(L, "{ { name = 'a', action = 'ALLOW', rules = { { "
                "from = { { principals = { 'cluster.local/ns/app/*' } } },"
                "to = { { keys = { 'app:*' }, not_methods = { 'FLUSHALL' } } } } } } }");
    req_t q;
    const char *me = "cluster.local/ns/app/sa/web";
    cr_assert(allowed(a, mkreq(&q, "10.0.0.1", me, "MGET", NULL, "app:1", "app:2")));
    cr_assert_not(allowed(a, mkreq(&q, "10.0.0.1", me, "MGET", NULL, "app:1", "db:2")),
                  "every key of an allowed command");
    cr_assert_not(allowed(a, mkreq(&q, "10.0.0.1", me, "flushall", NULL, "app:1", NULL)),
                  "notMethods");
    cr_assert_not(
        allowed(a, mkreq(&q, "10.0.0.1", "cluster.local/ns/db/sa/x", "GET", NULL, "app:1", NULL)),
        "prefix wildcard on principals");
    cr_assert_not(allowed(a, mkreq(&q, "10.0.0.1", NULL, "GET", NULL, "app:1", NULL)),
                  "no principal: plain text");
    mt_authz_free(a);
    lua_close(L);
}

Test(authz, namespaces_ip_blocks_ports_and_when)
{
    lua_State *L = luaL_newstate();
    mt_authz_t *a = load(L, "{ { name = 'd', action = 'DENY', rules = {"
                            " { from = { { namespaces = { 'evil' } } } },"
                            " { from = { { ip_blocks = { '192.168.0.0/16', 'fd00::/8' }, "
                            "not_ip_blocks = { '192.168.1.1' } } } },"
                            " { to = { { ports = { '6380' } } } },"
                            " { when = { { remote_ip_blocks = { '10.9.9.9' } }, "
                            "{ not_principals = { '*' } } } } } } }");
    req_t q;
    cr_assert_not(allowed(a, mkreq(&q, "10.0.0.1", "td/ns/evil/sa/x", "GET", NULL, NULL, NULL)));
    cr_assert(allowed(a, mkreq(&q, "10.0.0.1", "td/ns/good/sa/x", "GET", NULL, NULL, NULL)));
    cr_assert_not(allowed(a, mkreq(&q, "192.168.3.4", NULL, "GET", NULL, NULL, NULL)));
    cr_assert(allowed(a, mkreq(&q, "192.168.1.1", NULL, "GET", NULL, NULL, NULL)), "notIpBlocks");
    cr_assert_not(allowed(a, mkreq(&q, "fd12::1", NULL, "GET", NULL, NULL, NULL)), "IPv6 block");
    cr_assert(allowed(a, mkreq(&q, "fe80::1", NULL, "GET", NULL, NULL, NULL)));
    mkreq(&q, "10.0.0.1", NULL, "GET", NULL, NULL, NULL)->r.port = 6380;
    cr_assert_not(allowed(a, &q), "port");
    cr_assert_not(allowed(a, mkreq(&q, "10.9.9.9", NULL, "GET", NULL, NULL, NULL)),
                  "when: that address and no principal");
    cr_assert(allowed(a, mkreq(&q, "10.9.9.9", "td/ns/good/sa/x", "GET", NULL, NULL, NULL)),
              "when is AND: a principal makes the second condition false");
    mt_authz_free(a);
    lua_close(L);
}

Test(authz, empty_policies_mean_what_istio_says)
{
    lua_State *L = luaL_newstate();
    req_t q;
    mt_authz_t *a = load(L, "{ { name = 'none', action = 'ALLOW', rules = {} } }");
    cr_assert_not(allowed(a, mkreq(&q, "10.0.0.1", NULL, "GET", NULL, NULL, NULL)),
                  "ALLOW without rules: deny all");
    mt_authz_free(a);
    a = load(L, "{ { name = 'all', action = 'ALLOW', rules = { {} } } }");
    cr_assert(allowed(a, mkreq(&q, "10.0.0.1", NULL, "GET", NULL, NULL, NULL)), "{} matches all");
    mt_authz_free(a);
    a = load(L, "{ { name = 'd', action = 'DENY', rules = {} } }");
    cr_assert(allowed(a, mkreq(&q, "10.0.0.1", NULL, "GET", NULL, NULL, NULL)),
              "DENY without rules: no effect");
    mt_authz_free(a);
    a = load(L, "{ { name = 'p', action = 'ALLOW', rules = { { to = { { paths = { "
                "'org.example.*' }, methods = { 'sayHello' } } } } } } }");
    mkreq(&q, "10.0.0.1", NULL, "sayHello", "org.example.Demo", NULL, NULL)->r.method_nocase =
        false;
    cr_assert(allowed(a, &q), "paths and methods (RPC)");
    mkreq(&q, "10.0.0.1", NULL, "sayhello", "org.example.Demo", NULL, NULL)->r.method_nocase =
        false;
    cr_assert_not(allowed(a, &q), "RPC methods are case-sensitive");
    mt_authz_free(a);
    cr_assert_eq(luaL_dostring(L, "return { authz = { policies = { { name = 'x', rules = { { from "
                                  "= { { ip_blocks = { '10.0.0.0/33' } } } } } } } } }"),
                 0);
    char *err = NULL;
    cr_assert_null(mt_authz_from_lua(L, lua_gettop(L), &err));
    cr_assert(err && strstr(err, "\"10.0.0.0/33\" is not an address or CIDR block"), "%s", err);
    free(err);
    lua_close(L);
}
