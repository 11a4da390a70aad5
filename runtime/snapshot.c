/*
 * snapshot.c - Lua snapshot table -> immutable C structs. Reads only the fields of
 * docs/snapshot.md; missing optional fields take the defaults documented there.
 */
#include "runtime/snapshot.h"

#include "runtime/common.h"
#include "runtime/log.h"
#include "runtime/meta_router.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_OP_TIMEOUT_MS 5000
#define DEFAULT_AUTH_TIMEOUT_MS 10000 /* RedisService settings.authTimeout */

/* t[key] as a malloc'd NUL-terminated copy (NULL if absent); *len (if given) gets the byte
 * length, which counts embedded NULs. */
static char *field_bytes(lua_State *L, int t, const char *key, size_t *len)
{
    lua_getfield(L, t, key);
    char *v = NULL;
    size_t n = 0;
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        const char *s = lua_tolstring(L, -1, &n);
        v = malloc(n + 1);
        if (v) {
            memcpy(v, s, n);
            v[n] = '\0';
        }
    }
    lua_pop(L, 1);
    if (len)
        *len = v ? n : 0;
    return v;
}

static char *field_str(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    char *v = NULL;
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        v = malloc(n + 1);
        if (v) {
            memcpy(v, s, n);
            v[n] = '\0';
        }
    }
    lua_pop(L, 1);
    return v;
}

static int64_t field_int(lua_State *L, int t, const char *key, int64_t dflt)
{
    lua_getfield(L, t, key);
    int64_t v = lua_isnumber(L, -1) ? (int64_t)lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* A duration in ms, clamped to what a uint32_t holds (~49 days: "never" for a timeout). */
static uint32_t field_ms(lua_State *L, int t, const char *key, uint32_t dflt)
{
    int64_t v = field_int(L, t, key, dflt);
    return v < 0 ? 0 : v > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static bool field_bool(lua_State *L, int t, const char *key, bool dflt)
{
    lua_getfield(L, t, key);
    bool v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

/* Pushes t[key] if it is a table and returns true; pushes nothing otherwise. */
static bool field_table(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    if (lua_istable(L, -1))
        return true;
    lua_pop(L, 1);
    return false;
}

static void read_auth(lua_State *L, int t, mt_auth_t *a)
{
    memset(a, 0, sizeof(*a));
    if (!field_table(L, t, "auth"))
        return;
    int at = lua_gettop(L);
    a->username = field_bytes(L, at, "username", &a->username_len);
    a->password = field_bytes(L, at, "password", &a->password_len);
    lua_pop(L, 1);
}

static void free_auth(mt_auth_t *a)
{
    free(a->username);
    if (a->password) {
        /* Do not leave the secret in freed memory. */
        OPENSSL_cleanse(a->password, a->password_len);
        free(a->password);
    }
}

/* Numeric addresses parse directly; host names go through the resolver (DNS resolution). */
static int resolve(const char *host, uint16_t port, struct sockaddr_storage *sa, socklen_t *len,
                   char **err)
{
    memset(sa, 0, sizeof(*sa));
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *len = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len = sizeof(*s6);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        if (err && asprintf(err, "cannot resolve %s: %s", host, gai_strerror(rc)) < 0)
            *err = NULL;
        return -1;
    }
    /* Prefer IPv4: "localhost" often lists ::1 first while servers bind 127.0.0.1. */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    memcpy(sa, pick->ai_addr, pick->ai_addrlen);
    *len = pick->ai_addrlen;
    if (sa->ss_family == AF_INET)
        s4->sin_port = htons(port);
    else
        s6->sin6_port = htons(port);
    freeaddrinfo(res);
    return 0;
}

static mt_protocol_t parse_protocol(const char *p)
{
    if (p && strcmp(p, "redis") == 0)
        return MT_PROTO_REDIS;
    if (p && strcmp(p, "metaprotocol") == 0)
        return MT_PROTO_META;
    return MT_PROTO_TCP;
}

static mt_read_policy_t parse_read_policy(const char *p)
{
    static const char *const names[] = {"MASTER", "PREFER_MASTER", "REPLICA", "PREFER_REPLICA",
                                        "ANY"};
    for (size_t i = 0; p && i < MT_ARRAY_LEN(names); i++) {
        if (strcmp(p, names[i]) == 0)
            return (mt_read_policy_t)i;
    }
    return MT_READ_MASTER;
}

/* idx is an absolute stack index. */
static char *fingerprint_of(lua_State *L, int idx)
{
    /* The compiler's dump is deterministic, so it doubles as a structural fingerprint. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "meltemi.dump");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1);
        return strdup("");
    }
    lua_getfield(L, -1, "lua");
    lua_remove(L, -2);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != 0 || !lua_isstring(L, -1)) {
        lua_pop(L, 1);
        return strdup("");
    }
    char *fp = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    return fp;
}

/* ---- metaprotocol --------------------------------------------------------------------------
 * listener.metaprotocol (MetaRouter routes) and the cluster fields of DestinationRule that
 * MetaProtocol load balancing needs: subsets resolved to endpoint indices, lb_policy,
 * hash_key, rings. Owned by meta_router.c / meta_proxy.c's author; kept in these functions. */

#define META_DEFAULT_REQUEST_TIMEOUT_MS 5000

static mt_str_t meta_str(lua_State *L, int t, const char *key)
{
    char *v = field_str(L, t, key);
    return (mt_str_t){v, v ? strlen(v) : 0};
}

static mt_lb_policy_t meta_parse_lb(const char *p, mt_lb_policy_t dflt)
{
    static const char *const names[] = {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH"};
    for (size_t i = 0; p && i < MT_ARRAY_LEN(names); i++) {
        if (strcmp(p, names[i]) == 0)
            return (mt_lb_policy_t)i;
    }
    return dflt;
}

/* Reads lb_policy / hash_key / ring_size of table t (0: none) into ss; what t does not say
 * comes from dflt (the cluster's policy; NULL for the cluster itself). */
static void meta_read_lb(lua_State *L, int t, mt_meta_subset_t *ss, const mt_meta_subset_t *dflt,
                         uint32_t *ring_size)
{
    char *lb = t ? field_str(L, t, "lb_policy") : NULL;
    ss->lb_policy = meta_parse_lb(lb, dflt ? dflt->lb_policy : MT_LB_ROUND_ROBIN);
    free(lb);
    ss->hash_key = t ? meta_str(L, t, "hash_key") : (mt_str_t){NULL, 0};
    if (!ss->hash_key.ptr && dflt && dflt->hash_key.ptr) {
        char *k = strdup(dflt->hash_key.ptr);
        ss->hash_key = (mt_str_t){k, k ? dflt->hash_key.len : 0};
    }
    if (t)
        *ring_size = (uint32_t)field_int(L, t, "ring_size", *ring_size);
}

/* Whether the endpoint table at index ep has every label of the selector table at sel. */
static bool meta_labels_match(lua_State *L, int sel, int ep)
{
    lua_getfield(L, ep, "labels");
    int lt = lua_gettop(L);
    bool have = lua_istable(L, lt), ok = true;
    for (lua_pushnil(L); lua_next(L, sel); lua_pop(L, 1)) {
        ok = have && lua_type(L, -2) == LUA_TSTRING;
        if (ok) {
            lua_pushvalue(L, -2);
            lua_rawget(L, lt);
            ok = lua_isstring(L, -1) && lua_equal(L, -1, -2);
            lua_pop(L, 1);
        }
        if (!ok) {
            lua_pop(L, 2); /* value and key: the traversal stops here */
            break;
        }
    }
    lua_pop(L, 1);
    return ok;
}

/* Fills ss->eps with the endpoints matching the label selector at index sel (0: all). */
static int meta_select_endpoints(lua_State *L, int ct, int sel, const mt_cluster_conf_t *c,
                                 mt_meta_subset_t *ss)
{
    ss->eps = calloc(c->n_endpoints ? c->n_endpoints : 1, sizeof(*ss->eps));
    if (!ss->eps)
        return -1;
    if (!field_table(L, ct, "endpoints"))
        return 0;
    int et = lua_gettop(L);
    for (uint32_t i = 0; i < c->n_endpoints; i++) {
        lua_rawgeti(L, et, (int)i + 1);
        bool take = lua_istable(L, -1) && (sel == 0 || meta_labels_match(L, sel, lua_gettop(L)));
        lua_pop(L, 1);
        if (take)
            ss->eps[ss->n_eps++] = i;
    }
    lua_pop(L, 1);
    return 0;
}

static int meta_finish_subset(const mt_cluster_conf_t *c, mt_meta_subset_t *ss, uint32_t ring)
{
    if (ss->lb_policy != MT_LB_RING_HASH)
        return 0;
    return mt_meta_ring_build(&ss->ring, c, ss->eps, ss->n_eps, ring);
}

static int meta_compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Subsets in name order (the Lua table is a map): labels -> endpoints, own lb policy. */
static int meta_read_subsets(lua_State *L, int ct, mt_cluster_conf_t *c, uint32_t ring_size)
{
    mt_meta_cluster_conf_t *mc = c->meta;
    if (!field_table(L, ct, "subsets"))
        return 0;
    int st = lua_gettop(L);
    size_t n = 0;
    for (lua_pushnil(L); lua_next(L, st); lua_pop(L, 1))
        n += lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1);
    char **names = calloc(n ? n : 1, sizeof(*names));
    mc->subsets = calloc(n ? n : 1, sizeof(*mc->subsets));
    int rc = names && mc->subsets ? 0 : -1;
    size_t k = 0;
    for (lua_pushnil(L); rc == 0 && lua_next(L, st); lua_pop(L, 1)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1) && k < n)
            names[k++] = strdup(lua_tostring(L, -2));
    }
    qsort(names, k, sizeof(*names), meta_compare_names);
    for (size_t i = 0; rc == 0 && i < k; i++) {
        mt_meta_subset_t *ss = &mc->subsets[mc->n_subsets++];
        ss->name = names[i];
        names[i] = NULL;
        lua_getfield(L, st, ss->name);
        int sub = lua_gettop(L);
        uint32_t ring = ring_size;
        if (field_table(L, sub, "policy")) {
            meta_read_lb(L, lua_gettop(L), ss, &mc->all, &ring);
            lua_pop(L, 1);
        } else {
            meta_read_lb(L, 0, ss, &mc->all, &ring);
        }
        int sel = field_table(L, sub, "labels") ? lua_gettop(L) : 0;
        rc = meta_select_endpoints(L, ct, sel, c, ss);
        if (rc == 0)
            rc = meta_finish_subset(c, ss, ring);
        lua_settop(L, sub - 1);
    }
    for (size_t i = 0; names && i < k; i++)
        free(names[i]);
    free(names);
    lua_settop(L, st - 1);
    return rc;
}

static int meta_read_cluster(lua_State *L, int ct, mt_cluster_conf_t *c, char **err)
{
    if (c->protocol != MT_PROTO_META)
        return 0;
    mt_meta_cluster_conf_t *mc = calloc(1, sizeof(*mc));
    if (!mc) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    c->meta = mc;
    mc->codec = field_str(L, ct, "codec");
    /* The registry is written here, on the main thread, before any worker sees a snapshot;
     * workers only use the resolved pointers. */
    if (mt_codec_register_builtins() == MT_OK && mc->codec)
        mc->codec_impl = mt_codec_find(mc->codec);
    uint32_t ring = 0; /* minimumRingSize; 0: MT_META_RING_POINTS per endpoint */
    meta_read_lb(L, ct, &mc->all, NULL, &ring);
    if (meta_select_endpoints(L, ct, 0, c, &mc->all) != 0 ||
        meta_finish_subset(c, &mc->all, ring) != 0 || meta_read_subsets(L, ct, c, ring) != 0) {
        if (asprintf(err, "cluster %s: out of memory", c->name) < 0)
            *err = NULL;
        return -1;
    }
    return 0;
}

static void meta_free_subset(mt_meta_subset_t *ss)
{
    free(ss->name);
    free(ss->eps);
    free((char *)ss->hash_key.ptr);
    mt_meta_ring_free(&ss->ring);
}

static void meta_free_cluster(mt_cluster_conf_t *c)
{
    mt_meta_cluster_conf_t *mc = c->meta;
    if (!mc)
        return;
    meta_free_subset(&mc->all);
    for (uint32_t i = 0; i < mc->n_subsets; i++)
        meta_free_subset(&mc->subsets[i]);
    free(mc->subsets);
    free(mc->codec);
    free(mc);
    c->meta = NULL;
}

static int meta_read_dest(lua_State *L, int t, mt_snapshot_t *s, mt_meta_dest_t *d)
{
    d->cluster_name = field_str(L, t, "cluster");
    d->subset_name = field_str(L, t, "subset");
    d->weight = (uint32_t)field_int(L, t, "weight", 0);
    lua_getfield(L, t, "percentage");
    d->percentage = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 100.0;
    lua_pop(L, 1);
    d->cluster = d->cluster_name ? mt_snapshot_cluster(s, d->cluster_name) : NULL;
    d->subset = -1;
    if (d->subset_name) {
        d->subset = -2;
        const mt_meta_cluster_conf_t *mc = d->cluster ? d->cluster->meta : NULL;
        for (uint32_t i = 0; mc && i < mc->n_subsets; i++) {
            if (strcmp(mc->subsets[i].name, d->subset_name) == 0)
                d->subset = (int32_t)i;
        }
    }
    return 0;
}

static int meta_read_mutation(lua_State *L, int rt, const char *key, mt_attr_t **out, uint32_t *n)
{
    if (!field_table(L, rt, key))
        return 0;
    int mt = lua_gettop(L);
    size_t cnt = lua_objlen(L, mt);
    *out = calloc(cnt ? cnt : 1, sizeof(**out));
    if (!*out)
        return -1;
    for (size_t i = 0; i < cnt; i++) {
        lua_rawgeti(L, mt, (int)i + 1);
        if (lua_istable(L, -1)) {
            mt_attr_t *a = &(*out)[(*n)++];
            a->key = meta_str(L, lua_gettop(L), "key");
            a->val = meta_str(L, lua_gettop(L), "value");
            if (!a->key.ptr) /* the compiler guarantees a key; never send an empty one */
                (*n)--;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

static int meta_read_match(lua_State *L, int rt, mt_meta_route_t *r, char *msg, size_t msglen)
{
    if (!field_table(L, rt, "match"))
        return 0;
    int mt = lua_gettop(L);
    size_t cnt = lua_objlen(L, mt);
    r->match = calloc(cnt ? cnt : 1, sizeof(*r->match));
    int rc = r->match ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < cnt; i++) {
        lua_rawgeti(L, mt, (int)i + 1);
        int e = lua_gettop(L);
        if (lua_istable(L, e)) {
            mt_meta_match_t *m = &r->match[r->n_match++];
            m->key = meta_str(L, e, "key");
            mt_str_t v;
            if ((v = meta_str(L, e, "exact")).ptr) {
                m->kind = MT_META_MATCH_EXACT;
            } else if ((v = meta_str(L, e, "prefix")).ptr) {
                m->kind = MT_META_MATCH_PREFIX;
            } else if ((v = meta_str(L, e, "regex")).ptr) {
                m->kind = MT_META_MATCH_REGEX;
            } else {
                m->kind = MT_META_MATCH_PRESENT;
            }
            m->value = v;
            if (!m->key.ptr) {
                snprintf(msg, msglen, "a match without a key");
                rc = -1;
            } else if (m->kind == MT_META_MATCH_REGEX) {
                rc = mt_meta_regex_compile(m, msg, msglen);
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static int meta_read_route(lua_State *L, int rt, mt_snapshot_t *s, mt_meta_route_t *r, char *msg,
                           size_t msglen)
{
    r->name = field_str(L, rt, "name");
    if (meta_read_match(L, rt, r, msg, msglen) != 0)
        return -1;
    if (field_table(L, rt, "route")) {
        int dt = lua_gettop(L);
        size_t cnt = lua_objlen(L, dt);
        r->dests = calloc(cnt ? cnt : 1, sizeof(*r->dests));
        for (size_t i = 0; r->dests && i < cnt; i++) {
            lua_rawgeti(L, dt, (int)i + 1);
            if (lua_istable(L, -1)) {
                mt_meta_dest_t *d = &r->dests[r->n_dests++];
                meta_read_dest(L, lua_gettop(L), s, d);
                r->weight_total += d->weight;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (field_table(L, rt, "mirror")) {
        r->mirror = calloc(1, sizeof(*r->mirror));
        if (r->mirror)
            meta_read_dest(L, lua_gettop(L), s, r->mirror);
        lua_pop(L, 1);
    }
    if (meta_read_mutation(L, rt, "request_mutation", &r->request_mutation,
                           &r->n_request_mutation) != 0 ||
        meta_read_mutation(L, rt, "response_mutation", &r->response_mutation,
                           &r->n_response_mutation) != 0) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    return 0;
}

static int meta_read_listener(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l,
                              char **err)
{
    if (l->protocol != MT_PROTO_META)
        return 0;
    mt_meta_listener_conf_t *ml = calloc(1, sizeof(*ml));
    if (!ml) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    l->meta = ml;
    ml->request_timeout_ms = META_DEFAULT_REQUEST_TIMEOUT_MS;
    if (mt_codec_register_builtins() == MT_OK && l->codec)
        ml->codec = mt_codec_find(l->codec);
    if (!ml->codec)
        mt_warn("listener %s: no codec named %s is built in; relaying it as plain TCP", l->name,
                l->codec ? l->codec : "(none)");
    if (!field_table(L, t, "metaprotocol"))
        return 0;
    int mp = lua_gettop(L);
    int64_t tmo = field_int(L, mp, "request_timeout_ms", META_DEFAULT_REQUEST_TIMEOUT_MS);
    ml->request_timeout_ms = tmo > 0 ? (uint32_t)tmo : META_DEFAULT_REQUEST_TIMEOUT_MS;
    int rc = 0;
    char msg[300] = "";
    if (field_table(L, mp, "routes")) {
        int rt = lua_gettop(L);
        size_t cnt = lua_objlen(L, rt);
        ml->routes = calloc(cnt ? cnt : 1, sizeof(*ml->routes));
        rc = ml->routes ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < cnt; i++) {
            lua_rawgeti(L, rt, (int)i + 1);
            if (lua_istable(L, -1))
                rc = meta_read_route(L, lua_gettop(L), s, &ml->routes[ml->n_routes++], msg,
                                     sizeof(msg));
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (rc != 0) {
        const mt_meta_route_t *r = ml->n_routes ? &ml->routes[ml->n_routes - 1] : NULL;
        if (asprintf(err, "listener %s: route %s: %s", l->name, r && r->name ? r->name : "?",
                     msg[0] ? msg : "out of memory") < 0)
            *err = NULL;
    }
    return rc;
}

static void meta_free_dest(mt_meta_dest_t *d)
{
    free(d->cluster_name);
    free(d->subset_name);
}

static void meta_free_attrs(mt_attr_t *a, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free((char *)a[i].key.ptr);
        free((char *)a[i].val.ptr);
    }
    free(a);
}

static void meta_free_route(mt_meta_route_t *r)
{
    for (uint32_t i = 0; i < r->n_match; i++) {
        free((char *)r->match[i].key.ptr);
        free((char *)r->match[i].value.ptr);
        mt_meta_regex_free(r->match[i].re);
    }
    free(r->match);
    for (uint32_t i = 0; i < r->n_dests; i++)
        meta_free_dest(&r->dests[i]);
    free(r->dests);
    if (r->mirror)
        meta_free_dest(r->mirror);
    free(r->mirror);
    meta_free_attrs(r->request_mutation, r->n_request_mutation);
    meta_free_attrs(r->response_mutation, r->n_response_mutation);
    free(r->name);
}

static void meta_free_listener(mt_listener_conf_t *l)
{
    mt_meta_listener_conf_t *ml = l->meta;
    if (!ml)
        return;
    for (uint32_t i = 0; i < ml->n_routes; i++)
        meta_free_route(&ml->routes[i]);
    free(ml->routes);
    free(ml);
    l->meta = NULL;
}

/* ---- end of metaprotocol ------------------------------------------------------------------- */

/* redis.discovery_endpoints: { {address=, port=}, ... } -> resolved seeds. */
static void read_discovery(lua_State *L, int rt, mt_cluster_conf_t *c)
{
    if (!field_table(L, rt, "discovery_endpoints"))
        return;
    int dt = lua_gettop(L);
    size_t n = lua_objlen(L, dt);
    c->discovery = calloc(n ? n : 1, sizeof(*c->discovery));
    for (size_t i = 0; c->discovery && i < n; i++) {
        lua_rawgeti(L, dt, (int)i + 1);
        if (lua_istable(L, -1)) {
            mt_endpoint_conf_t *e = &c->discovery[c->n_discovery++];
            e->address = field_str(L, lua_gettop(L), "address");
            e->port = (uint16_t)field_int(L, lua_gettop(L), "port", 0);
            if (!e->address ||
                resolve(e->address, e->port, &e->sa, &e->salen, &e->resolve_error) != 0) {
                if (!e->resolve_error)
                    e->resolve_error = strdup("discovery endpoint without an address");
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* A plain primary/replica pair: the role comes from the endpoint's labels. */
static bool endpoint_is_replica(lua_State *L, int ep)
{
    static const char *const keys[] = {"role", "redis-role", "redis.io/role"};
    bool replica = false;
    if (!field_table(L, ep, "labels"))
        return false;
    for (size_t i = 0; i < MT_ARRAY_LEN(keys) && !replica; i++) {
        char *v = field_str(L, lua_gettop(L), keys[i]);
        replica = v && (strcmp(v, "replica") == 0 || strcmp(v, "slave") == 0);
        free(v);
    }
    lua_pop(L, 1);
    return replica;
}

static int read_cluster(lua_State *L, int t, mt_cluster_conf_t *c, char **err)
{
    c->name = field_str(L, t, "name");
    c->service = field_str(L, t, "service");
    char *proto = field_str(L, t, "protocol");
    c->protocol = parse_protocol(proto);
    free(proto);
    c->connect_timeout_ms =
        (uint32_t)field_int(L, t, "connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS);
    c->max_connections = (uint32_t)field_int(L, t, "max_connections", 1024);
    if (!c->name) {
        *err = strdup("snapshot: cluster without a name");
        return -1;
    }
    if (field_table(L, t, "endpoints")) {
        int et = lua_gettop(L);
        size_t n = lua_objlen(L, et);
        c->endpoints = calloc(n ? n : 1, sizeof(*c->endpoints));
        for (size_t i = 0; c->endpoints && i < n; i++) {
            lua_rawgeti(L, et, (int)i + 1);
            mt_endpoint_conf_t *e = &c->endpoints[c->n_endpoints++];
            e->address = field_str(L, lua_gettop(L), "address");
            e->port = (uint16_t)field_int(L, lua_gettop(L), "port", 0);
            e->replica = endpoint_is_replica(L, lua_gettop(L));
            lua_pop(L, 1);
            if (!e->address || resolve(e->address, e->port, &e->sa, &e->salen, &e->resolve_error)) {
                if (!e->resolve_error)
                    e->resolve_error = strdup("endpoint without an address");
                mt_warn("cluster %s: endpoint %s:%u: %s", c->name, e->address ? e->address : "?",
                        e->port, e->resolve_error);
            }
        }
        lua_pop(L, 1);
    }
    if (field_table(L, t, "redis")) {
        int rt = lua_gettop(L);
        char *mode = field_str(L, rt, "mode");
        c->redis_mode = mode && strcmp(mode, "CLUSTER") == 0 ? MT_REDIS_CLUSTER : MT_REDIS_PROXY;
        free(mode);
        read_auth(L, rt, &c->redis_auth);
        read_discovery(L, rt, c);
        lua_pop(L, 1);
    }
    c->fingerprint = fingerprint_of(L, t);
    c->stats = mt_stats_block(MT_STATS_CLUSTER, c->name, NULL);
    return meta_read_cluster(L, t, c, err);
}

static int read_listener(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l, char **err)
{
    l->name = field_str(L, t, "name");
    l->address = field_str(L, t, "address");
    l->port = (uint16_t)field_int(L, t, "port", 0);
    char *proto = field_str(L, t, "protocol");
    l->protocol = parse_protocol(proto);
    free(proto);
    l->codec = field_str(L, t, "codec");
    l->service = field_str(L, t, "service");
    char *cluster = field_str(L, t, "cluster");
    l->cluster = cluster ? mt_snapshot_cluster(s, cluster) : NULL;
    free(cluster);
    if (!l->name || !l->address || l->port == 0) {
        *err = strdup("snapshot: listener without name, address or port");
        return -1;
    }
    char *rerr = NULL;
    if (resolve(l->address, l->port, &l->sa, &l->salen, &rerr) != 0) {
        if (asprintf(err, "listener %s: %s", l->name, rerr ? rerr : "bad address") < 0)
            *err = NULL;
        free(rerr);
        return -1;
    }
    l->redis.op_timeout_ms = DEFAULT_OP_TIMEOUT_MS;
    l->redis.enable_redirection = true;
    l->redis.enable_hashtagging = true;
    l->redis.max_upstream_unknown_connections = 100;
    l->redis.auth_timeout_ms = DEFAULT_AUTH_TIMEOUT_MS;
    if (field_table(L, t, "redis")) {
        int rt = lua_gettop(L);
        read_auth(L, rt, &l->redis.auth);
        l->redis.op_timeout_ms = (uint32_t)field_int(L, rt, "op_timeout_ms", DEFAULT_OP_TIMEOUT_MS);
        if (l->redis.op_timeout_ms == 0)
            l->redis.op_timeout_ms = DEFAULT_OP_TIMEOUT_MS;
        char *rp = field_str(L, rt, "read_policy");
        l->redis.read_policy = parse_read_policy(rp);
        free(rp);
        l->redis.enable_command_stats = field_bool(L, rt, "enable_command_stats", false);
        l->redis.max_buffer_size_before_flush =
            (uint32_t)field_int(L, rt, "max_buffer_size_before_flush", 0);
        l->redis.buffer_flush_timeout_ms = (uint32_t)field_int(L, rt, "buffer_flush_timeout_ms", 3);
        l->redis.enable_redirection = field_bool(L, rt, "enable_redirection", true);
        l->redis.enable_hashtagging = field_bool(L, rt, "enable_hashtagging", true);
        l->redis.max_upstream_unknown_connections =
            (uint32_t)field_int(L, rt, "max_upstream_unknown_connections", 100);
        l->redis.auth_timeout_ms = field_ms(L, rt, "auth_timeout_ms", DEFAULT_AUTH_TIMEOUT_MS);
        l->redis.idle_timeout_ms = field_ms(L, rt, "idle_timeout_ms", 0);
        lua_pop(L, 1);
    }
    l->fingerprint = fingerprint_of(L, t);
    l->stats = mt_stats_block(MT_STATS_LISTENER, l->name, NULL);
    return meta_read_listener(L, t, s, l, err);
}

mt_cluster_conf_t *mt_snapshot_cluster(const mt_snapshot_t *s, const char *name)
{
    for (uint32_t i = 0; i < s->n_clusters; i++) {
        if (strcmp(s->clusters[i].name, name) == 0)
            return &s->clusters[i];
    }
    return NULL;
}

static void snapshot_free(mt_snapshot_t *s)
{
    for (uint32_t i = 0; i < s->n_clusters; i++) {
        mt_cluster_conf_t *c = &s->clusters[i];
        for (uint32_t j = 0; j < c->n_endpoints; j++) {
            free(c->endpoints[j].address);
            free(c->endpoints[j].resolve_error);
        }
        free(c->endpoints);
        for (uint32_t j = 0; j < c->n_discovery; j++) {
            free(c->discovery[j].address);
            free(c->discovery[j].resolve_error);
        }
        free(c->discovery);
        free_auth(&c->redis_auth);
        meta_free_cluster(c);
        free(c->name);
        free(c->service);
        free(c->fingerprint);
    }
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        mt_listener_conf_t *l = &s->listeners[i];
        free_auth(&l->redis.auth);
        meta_free_listener(l);
        free(l->name);
        free(l->address);
        free(l->codec);
        free(l->service);
        free(l->fingerprint);
    }
    free(s->clusters);
    free(s->listeners);
    free(s->lua_source);
    free(s);
}

mt_snapshot_t *mt_snapshot_from_lua(lua_State *L, int idx, uint64_t generation, char **err)
{
    *err = NULL;
    int top = lua_gettop(L);
    int t = idx < 0 ? top + idx + 1 : idx;
    mt_snapshot_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->refs = 1;
    s->generation = generation;
    int rc = 0;
    if (field_table(L, t, "clusters")) {
        int ct = lua_gettop(L);
        size_t n = 0;
        for (lua_pushnil(L); lua_next(L, ct); lua_pop(L, 1))
            n++;
        s->clusters = calloc(n ? n : 1, sizeof(*s->clusters));
        for (lua_pushnil(L); rc == 0 && lua_next(L, ct); lua_pop(L, 1)) {
            if (lua_istable(L, -1))
                rc = read_cluster(L, lua_gettop(L), &s->clusters[s->n_clusters++], err);
        }
    }
    lua_settop(L, top);
    if (rc == 0 && field_table(L, t, "listeners")) {
        int lt = lua_gettop(L);
        size_t n = lua_objlen(L, lt);
        s->listeners = calloc(n ? n : 1, sizeof(*s->listeners));
        for (size_t i = 0; rc == 0 && i < n; i++) {
            lua_rawgeti(L, lt, (int)i + 1);
            if (lua_istable(L, -1))
                rc = read_listener(L, lua_gettop(L), s, &s->listeners[s->n_listeners++], err);
            lua_pop(L, 1);
        }
    }
    lua_settop(L, top);
    if (rc == 0) {
        s->lua_source = fingerprint_of(L, t);
        s->lua_source_len = s->lua_source ? strlen(s->lua_source) : 0;
    }
    if (rc != 0 || !s->lua_source) {
        snapshot_free(s);
        return NULL;
    }
    return s;
}

mt_snapshot_t *mt_snapshot_ref(mt_snapshot_t *s)
{
    __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void mt_snapshot_unref(mt_snapshot_t *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        snapshot_free(s);
}
