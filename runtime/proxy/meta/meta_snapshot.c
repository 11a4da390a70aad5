/*
 * meta_snapshot.c - the MetaProtocol part of a snapshot: listener.metaprotocol (MetaRouter
 * routes) and the cluster fields of DestinationRule that MetaProtocol load balancing needs
 * (subsets resolved to endpoint indices, lb_policy, hash_key, rings). snapshot.c calls these
 * through the registry (mt_proxy_meta) for metaprotocol listeners and clusters; they run on
 * the main thread at load and reload.
 */
#include "runtime/core/log.h"
#include "runtime/proxy/meta/lua_codec.h"
#include "runtime/proxy/meta/meta_router.h"
#include "runtime/proxy/meta/meta_methods.h"
#include "runtime/proxy/meta/meta_snapshot.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_DEFAULT_REQUEST_TIMEOUT_MS 5000

static mt_str_t meta_str(lua_State *L, int t, const char *key)
{
    char *v = mt_snap_field_str(L, t, key);
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
    char *lb = t ? mt_snap_field_str(L, t, "lb_policy") : NULL;
    ss->lb_policy = meta_parse_lb(lb, dflt ? dflt->lb_policy : MT_LB_ROUND_ROBIN);
    free(lb);
    ss->hash_key = t ? meta_str(L, t, "hash_key") : (mt_str_t){NULL, 0};
    /* useSourceIp: a policy's own key (attribute or source IP) wins over the cluster's. */
    bool own_ip = t && mt_snap_field_bool(L, t, "hash_source_ip", false);
    ss->hash_source_ip = own_ip || (!ss->hash_key.ptr && dflt && dflt->hash_source_ip);
    if (!ss->hash_key.ptr && !own_ip && dflt && dflt->hash_key.ptr) {
        char *k = strdup(dflt->hash_key.ptr);
        ss->hash_key = (mt_str_t){k, k ? dflt->hash_key.len : 0};
    }
    if (t)
        *ring_size = (uint32_t)mt_snap_field_int(L, t, "ring_size", *ring_size);
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
    if (!mt_snap_field_table(L, ct, "endpoints"))
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
    mt_meta_cluster_conf_t *mc = c->proto;
    if (!mt_snap_field_table(L, ct, "subsets"))
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
        if (mt_snap_field_table(L, sub, "policy")) {
            meta_read_lb(L, lua_gettop(L), ss, &mc->all, &ring);
            lua_pop(L, 1);
        } else {
            meta_read_lb(L, 0, ss, &mc->all, &ring);
        }
        int sel = mt_snap_field_table(L, sub, "labels") ? lua_gettop(L) : 0;
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

int mt_meta_read_cluster(lua_State *L, int ct, mt_cluster_conf_t *c, char **err)
{
    mt_meta_cluster_conf_t *mc = calloc(1, sizeof(*mc));
    if (!mc) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    c->proto = mc;
    mc->codec = mt_snap_field_str(L, ct, "codec");
    /* The registry is written here, on the main thread, before any worker sees a snapshot;
     * workers only use the resolved pointers. */
    if (mt_lua_codec_named(mc->codec)) {
        mc->codec_impl = mt_lua_codec_from_snapshot(L, ct, err);
        if (!mc->codec_impl)
            return -1;
    } else if (mt_codec_register_builtins() == MT_OK && mc->codec) {
        mc->codec_impl = mt_codec_find(mc->codec);
    }
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

void mt_meta_free_cluster(mt_cluster_conf_t *c)
{
    mt_meta_cluster_conf_t *mc = c->proto;
    if (!mc)
        return;
    meta_free_subset(&mc->all);
    for (uint32_t i = 0; i < mc->n_subsets; i++)
        meta_free_subset(&mc->subsets[i]);
    free(mc->subsets);
    free(mc->codec);
    mt_lua_codec_release(mc->codec_impl);
    free(mc);
    c->proto = NULL;
}

static int meta_read_dest(lua_State *L, int t, mt_snapshot_t *s, mt_meta_dest_t *d)
{
    d->cluster_name = mt_snap_field_str(L, t, "cluster");
    d->subset_name = mt_snap_field_str(L, t, "subset");
    d->weight = (uint32_t)mt_snap_field_int(L, t, "weight", 0);
    lua_getfield(L, t, "percentage");
    d->percentage = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 100.0;
    lua_pop(L, 1);
    d->cluster = d->cluster_name ? mt_snapshot_cluster(s, d->cluster_name) : NULL;
    d->subset = -1;
    if (d->subset_name) {
        d->subset = -2;
        const mt_meta_cluster_conf_t *mc = d->cluster ? mt_meta_cluster(d->cluster) : NULL;
        for (uint32_t i = 0; mc && i < mc->n_subsets; i++) {
            if (strcmp(mc->subsets[i].name, d->subset_name) == 0)
                d->subset = (int32_t)i;
        }
    }
    return 0;
}

static int meta_read_mutation(lua_State *L, int rt, const char *key, mt_attr_t **out, uint32_t *n)
{
    if (!mt_snap_field_table(L, rt, key))
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

/* t.match (a list of attribute conditions, a route's or a rate limit condition's) into
 * *out / *n_out. */
static int meta_read_match(lua_State *L, int t, mt_meta_match_t **out, uint32_t *n_out, char *msg,
                           size_t msglen)
{
    if (!mt_snap_field_table(L, t, "match"))
        return 0;
    int mt = lua_gettop(L);
    size_t cnt = lua_objlen(L, mt);
    *out = calloc(cnt ? cnt : 1, sizeof(**out));
    int rc = *out ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < cnt; i++) {
        lua_rawgeti(L, mt, (int)i + 1);
        int e = lua_gettop(L);
        if (lua_istable(L, e)) {
            mt_meta_match_t *m = &(*out)[(*n_out)++];
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

/* route.retries { attempts, per_try_timeout_ms, retry_on = { "connect-failure", ... } } at yt. */
static void meta_read_retries(lua_State *L, int yt, mt_meta_route_t *r)
{
    static const struct {
        const char *name;
        uint32_t bits;
    } conds[] = {
        {"connect-failure", MT_RETRY_CONNECT_FAILURE},
        {"reset", MT_RETRY_RESET},
        {"gateway-error", MT_RETRY_CONNECT_FAILURE | MT_RETRY_RESET | MT_RETRY_TIMEOUT},
        {"5xx",
         MT_RETRY_CONNECT_FAILURE | MT_RETRY_RESET | MT_RETRY_TIMEOUT | MT_RETRY_ERROR_ANSWER},
    };
    r->retry_attempts = mt_snap_field_ms(L, yt, "attempts", 0);
    r->per_try_timeout_ms = mt_snap_field_ms(L, yt, "per_try_timeout_ms", 0);
    if (!mt_snap_field_table(L, yt, "retry_on"))
        return;
    int ot = lua_gettop(L);
    for (size_t i = 1; i <= lua_objlen(L, ot); i++) {
        lua_rawgeti(L, ot, (int)i);
        const char *c = lua_tostring(L, -1);
        for (size_t k = 0; c && k < MT_ARRAY_LEN(conds); k++) {
            if (strcmp(c, conds[k].name) == 0)
                r->retry_on |= conds[k].bits;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static int meta_read_route(lua_State *L, int rt, mt_snapshot_t *s, mt_meta_route_t *r, char *msg,
                           size_t msglen)
{
    r->name = mt_snap_field_str(L, rt, "name");
    if (meta_read_match(L, rt, &r->match, &r->n_match, msg, msglen) != 0)
        return -1;
    if (mt_snap_field_table(L, rt, "route")) {
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
    if (mt_snap_field_table(L, rt, "mirror")) {
        r->mirror = calloc(1, sizeof(*r->mirror));
        if (r->mirror)
            meta_read_dest(L, lua_gettop(L), s, r->mirror);
        lua_pop(L, 1);
    }
    r->timeout_ms = mt_snap_field_ms(L, rt, "timeout_ms", 0);
    if (mt_snap_field_table(L, rt, "fault_abort")) {
        int ft = lua_gettop(L);
        lua_getfield(L, ft, "percentage");
        r->abort_percentage = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 100.0;
        lua_pop(L, 1);
        char *kind = mt_snap_field_str(L, ft, "error_kind");
        r->abort_kind = MT_ERR_UNSPECIFIED;
        for (int k = 0; kind && k <= MT_ERR_UNSPECIFIED; k++) {
            if (strcmp(kind, mt_error_kind_name((mt_error_kind_t)k)) == 0)
                r->abort_kind = (mt_error_kind_t)k;
        }
        free(kind);
        lua_pop(L, 1);
    }
    if (mt_snap_field_table(L, rt, "fault_delay")) {
        int ft = lua_gettop(L);
        lua_getfield(L, ft, "percentage");
        r->delay_percentage = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 100.0;
        lua_pop(L, 1);
        r->delay_ms = mt_snap_field_ms(L, ft, "delay_ms", 0);
        lua_pop(L, 1);
    }
    if (mt_snap_field_table(L, rt, "retries")) {
        meta_read_retries(L, lua_gettop(L), r);
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

static int meta_want_hash_keys(mt_attr_filter_t *f, const mt_cluster_conf_t *c)
{
    const mt_meta_cluster_conf_t *mc = mt_meta_cluster(c);
    if (!mc)
        return 0;
    int rc = mt_attr_filter_add(f, mc->all.hash_key.ptr, mc->all.hash_key.len) == MT_OK ? 0 : -1;
    for (uint32_t i = 0; rc == 0 && i < mc->n_subsets; i++) {
        const mt_meta_subset_t *ss = &mc->subsets[i];
        rc = mt_attr_filter_add(f, ss->hash_key.ptr, ss->hash_key.len) == MT_OK ? 0 : -1;
    }
    return rc;
}

/* The attribute filter of a listener (mt_meta_listener_conf_t.want): what meta_router.c and
 * meta_proxy.c read from its requests, compiled once here: the routes' and localRateLimit
 * conditions' match keys, the hash keys of the subsets it can pick from, the error texts'
 * interface and method, the trace context's headers. A new reader of request attributes
 * adds its keys here (mt_msg_get asserts that it did). */
static int meta_build_want(mt_meta_listener_conf_t *ml, const mt_listener_conf_t *l)
{
    mt_attr_filter_t *f = &ml->want;
    /* interface/method: error texts; interface/service/method: AuthorizationPolicy's paths
     * and methods (sess_authorized); traceparent and B3: the trace context a request carries
     * (meta_trace_ctx), read when tracing is on - always wanted, as cheap as that. */
    static const char *const always[] = {"interface",   "service",      "method",
                                         "traceparent", "x-b3-traceid", "x-b3-spanid",
                                         "x-b3-sampled"};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < MT_ARRAY_LEN(always); i++)
        rc = mt_attr_filter_add(f, always[i], strlen(always[i])) == MT_OK ? 0 : -1;
    if (rc == 0)
        rc = meta_want_hash_keys(f, l->cluster);
    for (uint32_t i = 0; rc == 0 && i < ml->n_routes; i++) {
        const mt_meta_route_t *r = &ml->routes[i];
        for (uint32_t k = 0; rc == 0 && k < r->n_match; k++)
            rc = mt_attr_filter_add(f, r->match[k].key.ptr, r->match[k].key.len) == MT_OK ? 0 : -1;
        for (uint32_t k = 0; rc == 0 && k < r->n_dests; k++)
            rc = meta_want_hash_keys(f, r->dests[k].cluster);
        if (rc == 0 && r->mirror)
            rc = meta_want_hash_keys(f, r->mirror->cluster);
    }
    for (uint32_t i = 0; rc == 0 && i < ml->n_rate_conds; i++) {
        const mt_meta_rate_cond_t *c = &ml->rate_conds[i];
        for (uint32_t k = 0; rc == 0 && k < c->n_match; k++)
            rc = mt_attr_filter_add(f, c->match[k].key.ptr, c->match[k].key.len) == MT_OK ? 0 : -1;
    }
    if (rc == 0 && ml->global_rl) {
        const mt_meta_global_rate_limit_t *g = ml->global_rl;
        for (uint32_t k = 0; rc == 0 && k < g->n_match; k++)
            rc = mt_attr_filter_add(f, g->match[k].key.ptr, g->match[k].key.len) == MT_OK ? 0 : -1;
        for (uint32_t k = 0; rc == 0 && k < g->n_descriptors; k++)
            rc = mt_attr_filter_add(f, g->descriptors[k].property.ptr,
                                    g->descriptors[k].property.len) == MT_OK
                     ? 0
                     : -1;
    }
    return rc;
}

/* listener.metaprotocol.global_rate_limit (mp: its table's index) into ml->global_rl. */
static int meta_read_global_rate_limit(lua_State *L, int mp, mt_snapshot_t *s,
                                       mt_meta_listener_conf_t *ml, char *msg, size_t msglen)
{
    if (!mt_snap_field_table(L, mp, "global_rate_limit"))
        return 0;
    int gt = lua_gettop(L);
    mt_meta_global_rate_limit_t *g = calloc(1, sizeof(*g));
    ml->global_rl = g;
    int rc = g ? 0 : -1;
    if (rc == 0) {
        g->domain = mt_snap_field_str(L, gt, "domain");
        g->service = mt_snap_field_str(L, gt, "rate_limit_service");
        char *cl = mt_snap_field_str(L, gt, "rate_limit_cluster");
        g->cluster = cl ? mt_snapshot_cluster(s, cl) : NULL;
        free(cl);
        g->authority = g->cluster && g->cluster->service ? strdup(g->cluster->service) : NULL;
        int64_t tmo = mt_snap_field_int(L, gt, "request_timeout_ms", 20);
        g->timeout_ms = tmo > 0 ? (uint32_t)tmo : 20;
        g->deny_on_fail = mt_snap_field_bool(L, gt, "deny_on_fail", false);
        if (!g->domain || !g->service || !g->cluster) {
            snprintf(msg, msglen, "rate limit service %s names no cluster",
                     g->service ? g->service : "(none)");
            rc = -1;
        }
    }
    if (rc == 0)
        rc = meta_read_match(L, gt, &g->match, &g->n_match, msg, msglen);
    if (rc == 0 && mt_snap_field_table(L, gt, "descriptors")) {
        int dt = lua_gettop(L);
        size_t cnt = lua_objlen(L, dt);
        g->descriptors = calloc(cnt ? cnt : 1, sizeof(*g->descriptors));
        rc = g->descriptors ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < cnt; i++) {
            lua_rawgeti(L, dt, (int)i + 1);
            int e = lua_gettop(L);
            if (lua_istable(L, e)) {
                mt_meta_grl_descriptor_t *d = &g->descriptors[g->n_descriptors++];
                d->property = meta_str(L, e, "property");
                d->key = meta_str(L, e, "descriptor_key");
                if (!d->property.ptr || !d->key.ptr) {
                    snprintf(msg, msglen, "a descriptor without property or descriptorKey");
                    rc = -1;
                }
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static void meta_free_global_rate_limit(mt_meta_global_rate_limit_t *g);

/* listener.metaprotocol.local_rate_limit (mp: its table's index) into ml. */
static int meta_read_rate_limit(lua_State *L, int mp, mt_meta_listener_conf_t *ml, char *msg,
                                size_t msglen)
{
    if (!mt_snap_field_table(L, mp, "local_rate_limit"))
        return 0;
    int rl = lua_gettop(L);
    uint64_t now_ms = mt_snap_clock_ms();
    int rc = 0;
    if (mt_snap_field_table(L, rl, "token_bucket")) {
        ml->rate_bucket = calloc(1, sizeof(*ml->rate_bucket));
        if (ml->rate_bucket)
            mt_snap_token_bucket(L, lua_gettop(L), ml->rate_bucket, now_ms);
        else
            rc = -1;
        lua_pop(L, 1);
    }
    if (rc == 0 && mt_snap_field_table(L, rl, "conditions")) {
        int ct = lua_gettop(L);
        size_t cnt = lua_objlen(L, ct);
        ml->rate_conds = calloc(cnt ? cnt : 1, sizeof(*ml->rate_conds));
        rc = ml->rate_conds ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < cnt; i++) {
            lua_rawgeti(L, ct, (int)i + 1);
            int e = lua_gettop(L);
            if (lua_istable(L, e)) {
                mt_meta_rate_cond_t *c = &ml->rate_conds[ml->n_rate_conds++];
                rc = meta_read_match(L, e, &c->match, &c->n_match, msg, msglen);
                if (mt_snap_field_table(L, e, "token_bucket")) {
                    mt_snap_token_bucket(L, lua_gettop(L), &c->bucket, now_ms);
                    lua_pop(L, 1);
                }
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

/* ---- Istio's response_code per codec -------------------------------------------------------- */

/* Dubbo's status byte as a number; index 0 (20, OK) is success. */
static const char *const dubbo_code_names[] = {"20", "30", "31", "40",  "50",   "60",
                                               "70", "80", "90", "100", "OTHER"};
const mt_istio_codes_t mt_meta_dubbo_codes = {"dubbo", dubbo_code_names,
                                              MT_ARRAY_LEN(dubbo_code_names)};
/* Thrift: OK for a REPLY; for an EXCEPTION its TApplicationException type by Apache Thrift's
 * name (the codec's status attribute), EXCEPTION when it has no type the codec knows. */
static const char *const thrift_code_names[] = {"OK",
                                                "UNKNOWN",
                                                "UNKNOWN_METHOD",
                                                "INVALID_MESSAGE_TYPE",
                                                "WRONG_METHOD_NAME",
                                                "BAD_SEQUENCE_ID",
                                                "MISSING_RESULT",
                                                "INTERNAL_ERROR",
                                                "PROTOCOL_ERROR",
                                                "INVALID_TRANSFORM",
                                                "INVALID_PROTOCOL",
                                                "UNSUPPORTED_CLIENT_TYPE",
                                                "EXCEPTION"};
const mt_istio_codes_t mt_meta_thrift_codes = {"thrift", thrift_code_names,
                                               MT_ARRAY_LEN(thrift_code_names)};
_Static_assert(MT_ARRAY_LEN(thrift_code_names) < MT_ISTIO_CODE_NONE &&
                   MT_ARRAY_LEN(dubbo_code_names) < MT_ISTIO_CODE_NONE,
               "room for the code \"0\" (a request the client left)");
static const char *const generic_code_names[] = {"OK", "ERROR"};

/* Label sets keep their codes for good: other codecs' tables are made once, never freed.
 * They are found by the codec's name, which they copy: a Lua codec is a new table (and its
 * name a new string, freed with it) after every reload that changes its source. Main
 * thread only (snapshot reading). */
const mt_istio_codes_t *mt_meta_istio_codes(const mt_codec_t *codec)
{
    static mt_istio_codes_t generic[16];
    if (!codec)
        return NULL;
    if (strcmp(codec->name, "dubbo") == 0)
        return &mt_meta_dubbo_codes;
    if (strcmp(codec->name, "thrift") == 0)
        return &mt_meta_thrift_codes;
    for (size_t i = 0; i < MT_ARRAY_LEN(generic); i++) {
        if (generic[i].protocol && strcmp(generic[i].protocol, codec->name) == 0)
            return &generic[i];
        if (!generic[i].protocol) {
            char *name = strdup(codec->name);
            if (!name)
                return NULL;
            generic[i] =
                (mt_istio_codes_t){name, generic_code_names, MT_ARRAY_LEN(generic_code_names)};
            return &generic[i];
        }
    }
    return NULL; /* more than 16 codecs: requests of the others go uncounted by Istio's names */
}

int mt_meta_read_listener(lua_State *L, int t, mt_snapshot_t *s, mt_listener_conf_t *l, char **err)
{
    mt_meta_listener_conf_t *ml = calloc(1, sizeof(*ml));
    if (!ml) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    l->proto = ml;
    ml->request_timeout_ms = META_DEFAULT_REQUEST_TIMEOUT_MS;
    if (mt_lua_codec_named(l->codec)) {
        ml->codec = mt_lua_codec_from_snapshot(L, t, err);
        if (!ml->codec)
            return -1;
    } else if (mt_codec_register_builtins() == MT_OK && l->codec) {
        ml->codec = mt_codec_find(l->codec);
    }
    if (!ml->codec)
        mt_warn("listener %s: no codec named %s is built in; relaying it as plain TCP", l->name,
                l->codec ? l->codec : "(none)");
    l->istio_codes = mt_meta_istio_codes(ml->codec);
    if (ml->codec)
        ml->methods = mt_meta_methods_for(l->name);
    if (!mt_snap_field_table(L, t, "metaprotocol")) {
        if (meta_build_want(ml, l) == 0)
            return 0;
        *err = strdup("snapshot: out of memory");
        return -1;
    }
    int mp = lua_gettop(L);
    /* meltemi.kinds.lua_filter marks the listeners its filters run on (meta_lua.c loads the
     * filters only when one is marked; their reads outside want re-decode the frame). */
    ml->lua_filtered = mt_snap_field_bool(L, mp, "lua_filters", false);
    int64_t tmo = mt_snap_field_int(L, mp, "request_timeout_ms", META_DEFAULT_REQUEST_TIMEOUT_MS);
    ml->request_timeout_ms = tmo > 0 ? (uint32_t)tmo : META_DEFAULT_REQUEST_TIMEOUT_MS;
    int rc = 0;
    char msg[300] = "";
    if (mt_snap_field_table(L, mp, "routes")) {
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
    if (rc == 0 && meta_read_rate_limit(L, mp, ml, msg, sizeof(msg)) != 0) {
        lua_pop(L, 1);
        if (asprintf(err, "listener %s: localRateLimit: %s", l->name,
                     msg[0] ? msg : "out of memory") < 0)
            *err = NULL;
        return -1;
    }
    if (rc == 0 && meta_read_global_rate_limit(L, mp, s, ml, msg, sizeof(msg)) != 0) {
        lua_pop(L, 1);
        if (asprintf(err, "listener %s: globalRateLimit: %s", l->name,
                     msg[0] ? msg : "out of memory") < 0)
            *err = NULL;
        return -1;
    }
    lua_pop(L, 1);
    if (rc == 0 && meta_build_want(ml, l) != 0) {
        *err = strdup("snapshot: out of memory");
        return -1;
    }
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

static void meta_free_match(mt_meta_match_t *m, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free((char *)m[i].key.ptr);
        free((char *)m[i].value.ptr);
        mt_meta_regex_free(m[i].re);
    }
    free(m);
}

static void meta_free_route(mt_meta_route_t *r)
{
    meta_free_match(r->match, r->n_match);
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

static void meta_free_global_rate_limit(mt_meta_global_rate_limit_t *g)
{
    if (!g)
        return;
    meta_free_match(g->match, g->n_match);
    for (uint32_t i = 0; i < g->n_descriptors; i++) {
        free((char *)g->descriptors[i].property.ptr);
        free((char *)g->descriptors[i].key.ptr);
    }
    free(g->descriptors);
    free(g->domain);
    free(g->service);
    free(g->authority);
    free(g);
}

void mt_meta_free_listener(mt_listener_conf_t *l)
{
    mt_meta_listener_conf_t *ml = l->proto;
    if (!ml)
        return;
    for (uint32_t i = 0; i < ml->n_routes; i++)
        meta_free_route(&ml->routes[i]);
    free(ml->routes);
    mt_attr_filter_free(&ml->want);
    for (uint32_t i = 0; i < ml->n_rate_conds; i++)
        meta_free_match(ml->rate_conds[i].match, ml->rate_conds[i].n_match);
    free(ml->rate_conds);
    free(ml->rate_bucket);
    meta_free_global_rate_limit(ml->global_rl);
    mt_lua_codec_release(ml->codec);
    free(ml);
    l->proto = NULL;
}
