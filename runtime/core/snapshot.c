/*
 * snapshot.c - Lua snapshot table -> immutable C structs. Reads only the fields of
 * docs/snapshot.md; missing optional fields take the defaults documented there.
 */
#include "runtime/core/snapshot.h"

#include "runtime/core/common.h"
#include "runtime/core/log.h"
#include "runtime/core/proxy.h"
#include "runtime/core/authz.h"
#include "runtime/core/tls.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <openssl/crypto.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000

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

char *mt_snap_field_str(lua_State *L, int t, const char *key)
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

int64_t mt_snap_field_int(lua_State *L, int t, const char *key, int64_t dflt)
{
    lua_getfield(L, t, key);
    int64_t v = lua_isnumber(L, -1) ? (int64_t)lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

uint32_t mt_snap_field_ms(lua_State *L, int t, const char *key, uint32_t dflt)
{
    int64_t v = mt_snap_field_int(L, t, key, dflt);
    return v < 0 ? 0 : v > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static uint32_t snap_clamp_u32(int64_t v)
{
    return v < 1 ? 1u : v > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

void mt_snap_token_bucket(lua_State *L, int t, mt_token_bucket_t *b, uint64_t now_ms)
{
    mt_token_bucket_init(b, snap_clamp_u32(mt_snap_field_int(L, t, "max_tokens", 1)),
                         snap_clamp_u32(mt_snap_field_int(L, t, "tokens_per_fill", 1)),
                         snap_clamp_u32(mt_snap_field_int(L, t, "fill_interval_ms", 1000)), now_ms);
}

uint64_t mt_snap_clock_ms(void)
{
    return uv_hrtime() / 1000000u;
}

bool mt_snap_field_bool(lua_State *L, int t, const char *key, bool dflt)
{
    lua_getfield(L, t, key);
    bool v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : dflt;
    lua_pop(L, 1);
    return v;
}

bool mt_snap_field_table(lua_State *L, int t, const char *key)
{
    lua_getfield(L, t, key);
    if (lua_istable(L, -1))
        return true;
    lua_pop(L, 1);
    return false;
}

void mt_snap_field_auth(lua_State *L, int t, const char *key, mt_auth_t *a)
{
    memset(a, 0, sizeof(*a));
    if (!mt_snap_field_table(L, t, key))
        return;
    int at = lua_gettop(L);
    a->username = field_bytes(L, at, "username", &a->username_len);
    a->password = field_bytes(L, at, "password", &a->password_len);
    lua_pop(L, 1);
}

void mt_auth_free(mt_auth_t *a)
{
    free(a->username);
    if (a->password) {
        /* Do not leave the secret in freed memory. */
        OPENSSL_cleanse(a->password, a->password_len);
        free(a->password);
    }
    memset(a, 0, sizeof(*a));
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

int mt_snap_endpoint(lua_State *L, int t, const char *what, mt_endpoint_conf_t *e)
{
    e->address = mt_snap_field_str(L, t, "address");
    e->port = (uint16_t)mt_snap_field_int(L, t, "port", 0);
    e->plain = mt_snap_field_bool(L, t, "plain", false);
    if (e->address && resolve(e->address, e->port, &e->sa, &e->salen, &e->resolve_error) == 0)
        return 0;
    if (!e->resolve_error && asprintf(&e->resolve_error, "%s without an address", what) < 0)
        e->resolve_error = NULL;
    return -1;
}

void mt_endpoint_conf_free(mt_endpoint_conf_t *e)
{
    free(e->address);
    free(e->resolve_error);
    e->address = e->resolve_error = NULL;
}

/* The proxy whose registry name the snapshot gives; plain TCP for any other. */
static mt_protocol_t parse_protocol(const char *p)
{
    for (const mt_proxy_ops_t *const *o = mt_proxies; p && *o; o++) {
        if ((*o)->accept && strcmp((*o)->name, p) == 0) /* the capture ports serve none */
            return (*o)->protocol;
    }
    return MT_PROTO_TCP;
}

/* The table at idx (an absolute stack index) as the compiler's Lua text, which is
 * deterministic: the snapshot source every worker's Lua side loads. */
static char *fingerprint_of(lua_State *L, int idx)
{
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

/* Pushes a shallow copy of the table at t (absolute) without the fields the workers' Lua side
 * never reads: `sources` (the YAML texts, kept for config_dump) and each listener's
 * `metaprotocol` (MetaRouter routes, which meta_snapshot.c compiles to C at snapshot time).
 * With a thousand routes those are most of the text every worker loads on every reload. */
static void push_worker_view(lua_State *L, int t)
{
    lua_newtable(L);
    int out = lua_gettop(L);
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) {
        if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "sources") == 0)
            continue;
        bool listeners =
            lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "listeners") == 0;
        lua_pushvalue(L, -2);
        if (!listeners || !lua_istable(L, -2)) {
            lua_pushvalue(L, -2);
            lua_rawset(L, out);
            continue;
        }
        int lt = lua_gettop(L) - 1; /* the listeners array */
        lua_newtable(L);
        size_t n = lua_objlen(L, lt);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, lt, (int)i);
            int l = lua_gettop(L);
            if (lua_istable(L, l)) {
                lua_newtable(L);
                int copy = lua_gettop(L);
                for (lua_pushnil(L); lua_next(L, l); lua_pop(L, 1)) {
                    if (lua_type(L, -2) == LUA_TSTRING &&
                        strcmp(lua_tostring(L, -2), "metaprotocol") == 0)
                        continue;
                    lua_pushvalue(L, -2);
                    lua_pushvalue(L, -2);
                    lua_rawset(L, copy);
                }
                lua_remove(L, l);
            }
            lua_rawseti(L, -2, (int)i);
        }
        lua_rawset(L, out); /* key (pushed above) = the copied array */
    }
}

/* The compiler's `fingerprint` of a cluster or listener table (meltemi.fingerprint): equal
 * ones let workers keep pools and sockets across a reload. A missing one refuses the
 * snapshot: it is a compiler bug, and an empty stand-in would compare equal to every other
 * and keep the pools of changed clusters. */
static int read_fingerprint(lua_State *L, int t, const char *what, const char *name, char **fp,
                            char **err)
{
    *fp = mt_snap_field_str(L, t, "fingerprint");
    if (*fp && **fp)
        return 0;
    if (asprintf(err, "snapshot: %s %s has no fingerprint", what, name) < 0)
        *err = NULL;
    return -1;
}

/* cluster.outlier_detection (docs/snapshot.md) into c->outlier, state for every endpoint. */
static int read_outlier(lua_State *L, int t, mt_cluster_conf_t *c)
{
    if (!mt_snap_field_table(L, t, "outlier_detection"))
        return 0;
    int ot = lua_gettop(L);
    mt_outlier_conf_t *o = &c->outlier;
    o->consecutive_errors = mt_snap_field_ms(L, ot, "consecutive_errors", 5);
    o->consecutive_gateway = mt_snap_field_ms(L, ot, "consecutive_gateway_errors", 0);
    o->interval_ms = mt_snap_field_ms(L, ot, "interval_ms", 10000);
    o->base_ejection_ms = mt_snap_field_ms(L, ot, "base_ejection_time_ms", 30000);
    o->max_ejection_pct = mt_snap_field_ms(L, ot, "max_ejection_percent", 10);
    o->min_health_pct = mt_snap_field_ms(L, ot, "min_health_percent", 0);
    lua_pop(L, 1);
    o->enabled = o->consecutive_errors || o->consecutive_gateway;
    return o->enabled ? mt_outlier_init(o, c->n_endpoints) : 0;
}

void mt_snapshot_carry_outlier_state(mt_snapshot_t *to, const mt_snapshot_t *from)
{
    for (uint32_t i = 0; i < to->n_clusters; i++) {
        mt_cluster_conf_t *c = &to->clusters[i];
        const mt_cluster_conf_t *o = mt_snapshot_cluster(from, c->name);
        if (!c->outlier.enabled || !o || !o->outlier.enabled ||
            strcmp(o->fingerprint, c->fingerprint) != 0 || o->outlier.n_eps != c->outlier.n_eps)
            continue;
        for (uint32_t j = 0; j < c->outlier.n_eps; j++) {
            mt_outlier_state_t *d = &c->outlier.eps[j];
            mt_outlier_state_t *s = &o->outlier.eps[j];
            atomic_store(&d->errors, atomic_load(&s->errors));
            atomic_store(&d->gateway, atomic_load(&s->gateway));
            atomic_store(&d->ejections, atomic_load(&s->ejections));
            atomic_store(&d->ejected_until_ms, atomic_load(&s->ejected_until_ms));
        }
    }
}

static int read_cluster(lua_State *L, int t, mt_cluster_conf_t *c, char **err)
{
    c->name = mt_snap_field_str(L, t, "name");
    c->service = mt_snap_field_str(L, t, "service");
    char *proto = mt_snap_field_str(L, t, "protocol");
    c->protocol = parse_protocol(proto);
    free(proto);
    c->connect_timeout_ms =
        (uint32_t)mt_snap_field_int(L, t, "connect_timeout_ms", DEFAULT_CONNECT_TIMEOUT_MS);
    c->max_connections_set = (uint32_t)mt_snap_field_int(L, t, "max_connections", 0);
    c->max_connections = c->max_connections_set ? c->max_connections_set : 1024;
    c->max_connection_duration_ms =
        (uint32_t)mt_snap_field_int(L, t, "max_connection_duration_ms", 0);
    c->idle_timeout_ms = (uint32_t)mt_snap_field_int(L, t, "idle_timeout_ms", 0);
    c->max_requests_per_connection =
        (uint32_t)mt_snap_field_int(L, t, "max_requests_per_connection", 0);
    c->max_pending_requests = (uint32_t)mt_snap_field_int(L, t, "max_pending_requests", 0);
    if (mt_snap_field_table(L, t, "tcp_keepalive")) {
        int kt = lua_gettop(L);
        c->keepalive_time_s = (uint32_t)mt_snap_field_int(L, kt, "time_s", 7200);
        c->keepalive_interval_s = (uint32_t)mt_snap_field_int(L, kt, "interval_s", 75);
        c->keepalive_probes = (uint32_t)mt_snap_field_int(L, kt, "probes", 9);
        lua_pop(L, 1);
    }
    if (!c->name) {
        *err = strdup("snapshot: cluster without a name");
        return -1;
    }
    if (mt_snap_field_table(L, t, "endpoints")) {
        int et = lua_gettop(L);
        size_t n = lua_objlen(L, et);
        c->endpoints = calloc(n ? n : 1, sizeof(*c->endpoints));
        for (size_t i = 0; c->endpoints && i < n; i++) {
            lua_rawgeti(L, et, (int)i + 1);
            mt_endpoint_conf_t *e = &c->endpoints[c->n_endpoints++];
            int bad = mt_snap_endpoint(L, lua_gettop(L), "endpoint", e);
            lua_pop(L, 1);
            if (bad != 0) {
                mt_warn("cluster %s: endpoint %s:%u: %s", c->name, e->address ? e->address : "?",
                        e->port, e->resolve_error);
            }
        }
        lua_pop(L, 1);
    }
    if (read_outlier(L, t, c) != 0) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    if (read_fingerprint(L, t, "cluster", c->name, &c->fingerprint, err) != 0)
        return -1;
    char what[300];
    snprintf(what, sizeof(what), "cluster %s", c->name);
    c->tls = mt_tls_conf_from_lua(L, t, false, what, err);
    if (*err)
        return -1;
    c->stats = mt_stats_block(MT_STATS_CLUSTER, c->name, NULL);
    const mt_proxy_ops_t *ops = mt_proxy_for(c->protocol);
    return ops->read_cluster ? ops->read_cluster(L, t, c, err) : 0;
}

static int read_listener(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l, char **err)
{
    l->name = mt_snap_field_str(L, t, "name");
    l->address = mt_snap_field_str(L, t, "address");
    l->port = (uint16_t)mt_snap_field_int(L, t, "port", 0);
    char *proto = mt_snap_field_str(L, t, "protocol");
    l->protocol = parse_protocol(proto);
    free(proto);
    l->codec = mt_snap_field_str(L, t, "codec");
    l->service = mt_snap_field_str(L, t, "service");
    l->sni_of = mt_snap_field_str(L, t, "sni_of");
    char *direction = mt_snap_field_str(L, t, "direction");
    l->inbound = direction && strcmp(direction, "inbound") == 0;
    free(direction);
    char *cluster = mt_snap_field_str(L, t, "cluster");
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
    if (read_fingerprint(L, t, "listener", l->name, &l->fingerprint, err) != 0)
        return -1;
    char what[300];
    snprintf(what, sizeof(what), "listener %s", l->name);
    l->tls = mt_tls_conf_from_lua(L, t, true, what, err);
    if (*err)
        return -1;
    l->max_connections = (uint32_t)mt_snap_field_int(L, t, "max_connections", 0);
    l->authz = mt_authz_from_lua(L, t, err);
    if (*err) {
        char *e = *err;
        if (asprintf(err, "listener %s: %s", l->name, e) < 0)
            *err = NULL;
        free(e);
        return -1;
    }
    l->stats = mt_stats_block(MT_STATS_LISTENER, l->name, NULL);
    l->n_istio = s->n_clusters + 1;
    l->istio = calloc(l->n_istio, sizeof(*l->istio));
    if (!l->istio) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    const mt_proxy_ops_t *ops = mt_proxy_for(l->protocol);
    return ops->read_listener ? ops->read_listener(L, t, s, l, err) : 0;
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
        for (uint32_t j = 0; j < c->n_endpoints; j++)
            mt_endpoint_conf_free(&c->endpoints[j]);
        free(c->endpoints);
        mt_outlier_free(&c->outlier);
        const mt_proxy_ops_t *ops = mt_proxy_for(c->protocol);
        if (c->proto && ops->free_cluster)
            ops->free_cluster(c);
        mt_tls_conf_free(c->tls);
        free(c->name);
        free(c->service);
        free(c->fingerprint);
    }
    for (uint32_t i = 0; i < s->n_listeners; i++) {
        mt_listener_conf_t *l = &s->listeners[i];
        const mt_proxy_ops_t *lops = mt_proxy_for(l->protocol);
        if (l->proto && lops->free_listener)
            lops->free_listener(l);
        mt_tls_conf_free(l->tls);
        mt_authz_free(l->authz);
        free(l->name);
        free(l->address);
        free(l->codec);
        free(l->service);
        free(l->sni_of);
        free(l->fingerprint);
        free(l->istio);
    }
    mt_alog_conf_free(s->access_log);
    mt_trace_conf_free(s->tracing);
    free(s->clusters);
    free(s->listeners);
    free(s->lua_source);
    free(s);
}

/* The snapshot's access_log table (docs/snapshot.md) at absolute index t: NULL when it is
 * off, or when it is invalid (then *err says why). */
static mt_alog_conf_t *read_access_log(lua_State *L, int t, char **err)
{
    if (!mt_snap_field_bool(L, t, "enabled", true))
        return NULL;
    mt_alog_conf_t *c = calloc(1, sizeof(*c));
    if (!c) {
        *err = strdup("access_log: out of memory");
        return NULL;
    }
    char *format = mt_snap_field_str(L, t, "format");
    bool json = !format || strcmp(format, "json") == 0;
    free(format);
    char *text = json ? NULL : mt_snap_field_str(L, t, "text");
    if (!json && (!text || mt_alog_parse_format(c, text, err) != 0)) {
        if (!text)
            *err = strdup("access_log: text format without text");
        free(text);
        mt_alog_conf_free(c);
        return NULL;
    }
    free(text);
    c->json = json;
    c->path = mt_snap_field_str(L, t, "path");
    if (!c->path)
        c->path = strdup("/dev/stdout");
    lua_getfield(L, t, "sampling");
    double rate = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 1.0;
    lua_pop(L, 1);
    c->sample_all = rate >= 1.0;
    c->sample_below = rate <= 0 ? 0 : (uint64_t)(rate * 18446744073709551615.0);
    return c;
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
    if (mt_snap_field_table(L, t, "clusters")) {
        int ct = lua_gettop(L);
        size_t n = 0;
        for (lua_pushnil(L); lua_next(L, ct); lua_pop(L, 1))
            n++;
        s->clusters = calloc(n ? n : 1, sizeof(*s->clusters));
        for (lua_pushnil(L); rc == 0 && lua_next(L, ct); lua_pop(L, 1)) {
            if (lua_istable(L, -1)) {
                s->clusters[s->n_clusters].index = s->n_clusters;
                rc = read_cluster(L, lua_gettop(L), &s->clusters[s->n_clusters++], err);
            }
        }
    }
    lua_settop(L, top);
    if (rc == 0 && mt_snap_field_table(L, t, "listeners")) {
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
    if (rc == 0 && mt_snap_field_table(L, t, "access_log")) {
        s->access_log = read_access_log(L, lua_gettop(L), err);
        rc = *err ? -1 : 0;
    }
    lua_settop(L, top);
    if (rc == 0 && mt_snap_field_table(L, t, "tracing")) {
        int tt = lua_gettop(L);
        mt_trace_conf_t *tc = calloc(1, sizeof(*tc));
        if (tc) {
            tc->host = mt_snap_field_str(L, tt, "host");
            tc->path = mt_snap_field_str(L, tt, "path");
            tc->port = (uint16_t)mt_snap_field_int(L, tt, "port", 9411);
            lua_getfield(L, tt, "sampling");
            double rate = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 1.0;
            lua_pop(L, 1);
            tc->sample_all = rate >= 1.0;
            tc->sample_below = rate <= 0 ? 0 : (uint64_t)(rate * 18446744073709551615.0);
        }
        if (!tc || !tc->host || !tc->path) {
            mt_trace_conf_free(tc);
            *err = strdup("tracing: out of memory or no collector");
            rc = -1;
        } else {
            s->tracing = tc;
        }
    }
    lua_settop(L, top);
    if (rc == 0) {
        push_worker_view(L, t);
        s->lua_source = fingerprint_of(L, lua_gettop(L));
        s->lua_source_len = s->lua_source ? strlen(s->lua_source) : 0;
        lua_settop(L, top);
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
