/*
 * meta_lua.c - C side of the MetaProtocol Lua filters (meta_lua.h, docs/lua-filters.md).
 *
 * Per request the call pushes the listener index and the connection id only; the filters read
 * attributes through `meltemi.meta.core.get`, one string pushed per key asked for, and answer
 * through the other core functions, which fill the verdict. Each core function finds its
 * bridge as its upvalue (no thread-local state).
 */
#include "runtime/proxy/meta/meta_lua.h"
#include "runtime/proxy/meta/meta_conf.h"

#include "runtime/core/log.h"
#include "runtime/core/stats.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

struct mt_meta_lua_counter {
    char *name;
    char *label;
    mt_stats_block_t *block;
    mt_meta_lua_counter_t *next;
};

/* ---- verdict ------------------------------------------------------------------------------- */

static void dest_clear(mt_meta_lua_dest_t *d)
{
    free(d->subset);
    d->subset = NULL;
    d->cluster = 0;
}

static void verdict_reset(mt_meta_verdict_t *v)
{
    v->seq++; /* a new message: the re-decoded copy of the last one is stale */
    dest_clear(&v->route);
    for (uint32_t i = 0; i < v->n_mirrors; i++)
        dest_clear(&v->mirrors[i]);
    v->n_mirrors = 0;
    for (uint32_t i = 0; i < v->n_sets; i++) {
        free((char *)v->sets[i].key.ptr);
        free((char *)v->sets[i].val.ptr);
    }
    v->n_sets = 0;
    v->delay_ms = 0;
    v->has_error = false;
    v->failed = false;
    v->error_kind = MT_ERR_UNSPECIFIED;
    v->error_text[0] = '\0';
    v->msg = NULL;
    v->msg_is_reply = false;
}

static mt_meta_lua_t *bridge_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static char *dup_bytes(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Reads (cluster index, subset or nil) at stack slots 1 and 2 into d. */
static void read_dest(lua_State *L, mt_meta_lua_t *b, mt_meta_lua_dest_t *d, const char *what)
{
    lua_Integer i = luaL_checkinteger(L, 1);
    if (i < 1 || (uint64_t)i > b->n_clusters)
        luaL_error(L, "core.%s: no cluster %d", what, (int)i);
    size_t n = 0;
    const char *sub = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &n);
    char *copy = sub ? dup_bytes(sub, n) : NULL;
    if (sub && !copy)
        luaL_error(L, "out of memory");
    dest_clear(d);
    d->cluster = (uint32_t)i;
    d->subset = copy;
}

/* ---- meltemi.meta.core --------------------------------------------------------------------- */

/* The current message decoded again with every attribute (the decoder kept only the keys of
 * msg->want: what the listener's C readers need), once per call; NULL when that fails. */
static const mt_msg_t *full_message(mt_meta_lua_t *b, const mt_msg_t *m)
{
    if (!m->want)
        return m;
    if (b->scratch_seq == b->verdict.seq)
        return b->scratch_ok ? &b->scratch : NULL;
    b->scratch_seq = b->verdict.seq;
    b->scratch_ok = false;
    const mt_codec_t *c = m->codec;
    void *st = c ? malloc(c->state_size ? c->state_size : 1) : NULL;
    if (!st)
        return NULL;
    if (!b->scratch_init) {
        mt_msg_init(&b->scratch);
        b->scratch_init = true;
    }
    if (mt_codec_init(c, st, NULL) == MT_OK) {
        mt_codec_err_t err;
        b->scratch.want = NULL;
        b->scratch_ok = c->decode(st, m->frame, m->frame_len, &b->scratch, &err) == MT_OK;
    }
    c->free(st);
    free(st);
    return b->scratch_ok ? &b->scratch : NULL;
}

/* get(key) -> the attribute's value, or nil: from the message as decoded when its filter
 * (want) kept the key, else from the frame decoded again (full_message). */
static int core_get(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    const mt_meta_verdict_t *v = &b->verdict;
    const mt_msg_t *m = v->msg;
    if (!m) {
        lua_pushnil(L);
        return 1;
    }
    for (uint32_t i = 0; i < v->n_sets; i++) { /* a value set by a filter reads back as such */
        if (mt_str_eq(v->sets[i].key, key, n)) {
            if (v->sets[i].val.ptr)
                lua_pushlstring(L, v->sets[i].val.ptr, v->sets[i].val.len);
            else
                lua_pushnil(L);
            return 1;
        }
    }
    if (m->want && !mt_attr_filter_has(m->want, key, n))
        m = full_message(b, m);
    const mt_str_t *val = m ? mt_msg__find(m, key, n) : NULL;
    if (val)
        lua_pushlstring(L, val->ptr, val->len);
    else
        lua_pushnil(L);
    return 1;
}

/* attributes() -> { key = value } of the message as decoded (before any set). */
static int core_attributes(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    const mt_msg_t *m = b->verdict.msg ? full_message(b, b->verdict.msg) : NULL;
    lua_createtable(L, 0, m ? (int)m->nattrs : 0);
    for (uint32_t i = 0; m && i < m->nattrs; i++) {
        lua_pushlstring(L, m->attrs[i].key.ptr, m->attrs[i].key.len);
        lua_pushlstring(L, m->attrs[i].val.ptr, m->attrs[i].val.len);
        lua_rawset(L, -3);
    }
    return 1;
}

/* set(key, value | nil): a mutation of the frame sent on (nil removes the key). */
static int core_set(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    mt_meta_verdict_t *v = &b->verdict;
    size_t kn, vn = 0;
    const char *key = luaL_checklstring(L, 1, &kn);
    const char *val = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &vn);
    uint32_t k = 0;
    while (k < v->n_sets && !mt_str_eq(v->sets[k].key, key, kn))
        k++;
    if (k == v->n_sets && v->n_sets == MT_META_VERDICT_MAX_SETS)
        return luaL_error(L, "core.set: at most %d attributes can be set per message",
                          MT_META_VERDICT_MAX_SETS);
    char *vcopy = val ? dup_bytes(val, vn) : NULL;
    char *kcopy = k == v->n_sets ? dup_bytes(key, kn) : NULL;
    if ((val && !vcopy) || (k == v->n_sets && !kcopy)) {
        free(vcopy);
        free(kcopy);
        return luaL_error(L, "out of memory");
    }
    if (k == v->n_sets) {
        v->sets[k].key = (mt_str_t){kcopy, kn};
        v->n_sets++;
    } else {
        free((char *)v->sets[k].val.ptr);
    }
    v->sets[k].val = (mt_str_t){vcopy, vn};
    return 0;
}

static int core_route(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    read_dest(L, b, &b->verdict.route, "route");
    return 0;
}

static int core_mirror(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    mt_meta_verdict_t *v = &b->verdict;
    if (v->n_mirrors >= MT_META_VERDICT_MAX_MIRRORS)
        return luaL_error(L, "core.mirror: at most %d mirrors per request",
                          MT_META_VERDICT_MAX_MIRRORS);
    mt_meta_lua_dest_t d = {0};
    read_dest(L, b, &d, "mirror");
    v->mirrors[v->n_mirrors++] = d;
    return 0;
}

/* The error kind a filter names ("unspecified", "over_limit", ... as mt_error_kind_name). */
static bool kind_named(const char *name, mt_error_kind_t *out)
{
    for (int k = MT_ERR_ROUTE_NOT_FOUND; k <= MT_ERR_UNSPECIFIED; k++) {
        if (strcmp(mt_error_kind_name((mt_error_kind_t)k), name) == 0) {
            *out = (mt_error_kind_t)k;
            return true;
        }
    }
    return false;
}

/* error(text [, kind]): answer the request with the codec's native error of kind. */
static int core_error(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    mt_meta_verdict_t *v = &b->verdict;
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    mt_error_kind_t kind = MT_ERR_UNSPECIFIED;
    if (!lua_isnoneornil(L, 2) && !kind_named(luaL_checkstring(L, 2), &kind))
        return luaL_error(L,
                          "core.error: unknown error kind '%s' (route_not_found, "
                          "cluster_not_found, no_healthy_upstream, upstream_timeout, "
                          "bad_response, over_limit, unspecified)",
                          lua_tostring(L, 2));
    n = MT_MIN(n, sizeof(v->error_text) - 1);
    memcpy(v->error_text, text, n);
    v->error_text[n] = '\0';
    v->error_kind = kind;
    v->has_error = true;
    return 0;
}

/* failed(text): a filter threw; the request gets a native error saying so. */
static int core_failed(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    core_error(L);
    b->verdict.failed = true;
    b->verdict.error_kind = MT_ERR_UNSPECIFIED;
    b->verdict.delay_ms = 0;
    return 0;
}

static int core_delay(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    lua_Integer ms = luaL_checkinteger(L, 1);
    b->verdict.delay_ms = ms > 0 ? (uint32_t)MT_MIN(ms, 3600000) : 0;
    return 0;
}

static int core_log(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    const char *level = luaL_checkstring(L, 1);
    const char *text = luaL_checkstring(L, 2);
    int l = mt_log_level_parse(level);
    if (l < 0 || l > MT_LOG_ERROR)
        l = MT_LOG_INFO;
    MT_LOG((mt_log_level_t)l, "lua[worker %u]: %.1500s", b->w ? b->w->id : 0, text);
    return 0;
}

static int core_counter(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    const char *name = luaL_checkstring(L, 1);
    lua_Integer delta = luaL_optinteger(L, 2, 1);
    const char *label = luaL_optstring(L, 3, "");
    if (!b->w)
        return 0;
    mt_meta_lua_counter_t *c = b->counters;
    while (c && (strcmp(c->name, name) != 0 || strcmp(c->label, label) != 0))
        c = c->next;
    if (!c) {
        c = calloc(1, sizeof(*c));
        char *nm = strdup(name), *lb = strdup(label);
        if (!c || !nm || !lb) {
            free(c);
            free(nm);
            free(lb);
            return luaL_error(L, "out of memory");
        }
        c->name = nm;
        c->label = lb;
        c->block = mt_stats_block(MT_STATS_LUA, name, label);
        c->next = b->counters;
        b->counters = c;
    }
    mt_stat_add(c->block, b->w->id, MT_ST_REQUESTS_TOTAL, (int64_t)delta);
    return 0;
}

static int core_now_ms(lua_State *L)
{
    mt_meta_lua_t *b = bridge_of(L);
    lua_pushnumber(L, b->w ? (lua_Number)mt_worker_now_ms(b->w) : 0);
    return 1;
}

static const luaL_Reg core_functions[] = {
    {"get", core_get},         {"attributes", core_attributes}, {"set", core_set},
    {"route", core_route},     {"mirror", core_mirror},         {"error", core_error},
    {"failed", core_failed},   {"delay", core_delay},           {"log", core_log},
    {"counter", core_counter}, {"now_ms", core_now_ms},         {NULL, NULL},
};

static int core_open(lua_State *L)
{
    void *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_newtable(L);
    for (const luaL_Reg *r = core_functions; r->name; r++) {
        lua_pushlightuserdata(L, b);
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -2, r->name);
    }
    return 1;
}

void mt_meta_lua_open(mt_meta_lua_t *b, mt_worker_t *w)
{
    b->w = w;
    b->request_ref = b->response_ref = b->conn_closed_ref = LUA_NOREF;
    lua_State *L = w->L;
    if (!L)
        return;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushlightuserdata(L, b);
    lua_pushcclosure(L, core_open, 1);
    lua_setfield(L, -2, "meltemi.meta.core");
    lua_pop(L, 2);
}

/* ---- loading a snapshot --------------------------------------------------------------------- */

static int ref_field(lua_State *L, int t, const char *name)
{
    lua_getfield(L, t, name);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static void unref_all(mt_meta_lua_t *b, lua_State *L)
{
    luaL_unref(L, LUA_REGISTRYINDEX, b->request_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->response_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->conn_closed_ref);
    b->request_ref = b->response_ref = b->conn_closed_ref = LUA_NOREF;
}

/* Whether the snapshot has a filtered metaprotocol listener (else no Lua is loaded at all). */
static bool snapshot_has_filters(const mt_snapshot_t *snap)
{
    for (uint32_t i = 0; i < snap->n_listeners; i++) {
        const mt_listener_conf_t *l = &snap->listeners[i];
        const mt_meta_listener_conf_t *ml =
            l->protocol == MT_PROTO_META ? mt_meta_listener(l) : NULL;
        if (ml && ml->lua_filtered)
            return true;
    }
    return false;
}

void mt_meta_lua_apply(mt_meta_lua_t *b)
{
    mt_worker_t *w = b->w;
    lua_State *L = w->L;
    mt_snapshot_t *snap = w->snap;
    free(b->chains);
    b->chains = NULL;
    b->n_chains = 0;
    b->n_clusters = snap->n_clusters;
    if (!L)
        return;
    if (!snapshot_has_filters(snap)) {
        unref_all(b, L);
        return;
    }
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "meltemi.meta.worker");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        mt_error("worker %u: the MetaProtocol Lua filters cannot load: %s", w->id,
                 lua_tostring(L, -1));
        lua_settop(L, top);
        return;
    }
    int mod = lua_gettop(L);
    lua_getfield(L, mod, "apply");
    lua_pushlstring(L, snap->lua_source, snap->lua_source_len);
    lua_createtable(L, 0, (int)snap->n_clusters);
    for (uint32_t i = 0; i < snap->n_clusters; i++) {
        lua_pushinteger(L, (lua_Integer)i + 1);
        lua_setfield(L, -2, snap->clusters[i].name);
    }
    lua_pushnumber(L, (lua_Number)snap->generation);
    if (lua_pcall(L, 3, 1, 0) != 0) {
        mt_error("worker %u: loading the MetaProtocol Lua filters of generation %llu failed: %s",
                 w->id, (unsigned long long)snap->generation, lua_tostring(L, -1));
        lua_settop(L, top);
        return;
    }
    b->chains = calloc(snap->n_listeners + 1, 1);
    if (b->chains && lua_istable(L, -1)) {
        b->n_chains = snap->n_listeners;
        for (uint32_t i = 0; i < snap->n_listeners; i++) {
            lua_rawgeti(L, -1, (int)i + 1);
            lua_Integer c = lua_tointeger(L, -1);
            b->chains[i] = c == 2 ? 2 : c == 1 ? 1 : 0;
            lua_pop(L, 1);
        }
    }
    unref_all(b, L);
    b->request_ref = ref_field(L, mod, "request");
    b->response_ref = ref_field(L, mod, "response");
    b->conn_closed_ref = ref_field(L, mod, "conn_closed");
    if (b->request_ref == LUA_NOREF)
        b->n_chains = 0;
    lua_settop(L, top);
}

/* ---- per message ---------------------------------------------------------------------------- */

/* The driver itself failed (not a filter: those are caught in Lua): fail closed. */
static void call_failed(mt_meta_lua_t *b, lua_State *L, const char *what)
{
    const char *m = lua_tostring(L, -1);
    mt_error("worker %u: Lua %s failed: %s", b->w->id, what, m ? m : "(no message)");
    lua_pop(L, 1);
    mt_meta_verdict_t *v = &b->verdict;
    verdict_reset(v);
    snprintf(v->error_text, sizeof(v->error_text), "meltemi: filter error (see the proxy log)");
    v->has_error = true;
    v->failed = true;
}

void mt_meta_lua_request(mt_meta_lua_t *b, uint32_t li, const mt_msg_t *msg, uint64_t conn_id)
{
    lua_State *L = b->w->L;
    mt_meta_verdict_t *v = &b->verdict;
    verdict_reset(v);
    v->msg = msg;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->request_ref);
    lua_pushinteger(L, (lua_Integer)li);
    lua_pushnumber(L, (lua_Number)conn_id);
    lua_pushstring(L, mt_msg_type_name(msg->type));
    if (lua_pcall(L, 3, 0, 0) != 0)
        call_failed(b, L, "on_request");
    v->msg = NULL;
}

void mt_meta_lua_response(mt_meta_lua_t *b, uint32_t li, const mt_msg_t *msg, const char *op,
                          double duration_ms, uint64_t conn_id)
{
    lua_State *L = b->w->L;
    mt_meta_verdict_t *v = &b->verdict;
    verdict_reset(v);
    if (b->response_ref == LUA_NOREF)
        return;
    v->msg = msg;
    v->msg_is_reply = true;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->response_ref);
    lua_pushinteger(L, (lua_Integer)li);
    lua_pushnumber(L, (lua_Number)conn_id);
    lua_pushboolean(L, msg->type == MT_MSG_ERROR);
    lua_pushstring(L, op ? op : "");
    lua_pushnumber(L, (lua_Number)duration_ms);
    if (lua_pcall(L, 5, 0, 0) != 0)
        call_failed(b, L, "on_response");
    v->msg = NULL;
    v->msg_is_reply = false;
}

void mt_meta_lua_conn_closed(mt_meta_lua_t *b, uint64_t conn_id)
{
    lua_State *L = b->w ? b->w->L : NULL;
    if (!L || b->conn_closed_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->conn_closed_ref);
    lua_pushnumber(L, (lua_Number)conn_id);
    if (lua_pcall(L, 1, 0, 0) != 0)
        lua_pop(L, 1);
}

void mt_meta_lua_close(mt_meta_lua_t *b)
{
    free(b->chains);
    b->chains = NULL;
    b->n_chains = 0;
    verdict_reset(&b->verdict);
    if (b->scratch_init)
        mt_msg_free(&b->scratch);
    b->scratch_init = false;
    while (b->counters) {
        mt_meta_lua_counter_t *c = b->counters;
        b->counters = c->next;
        free(c->name);
        free(c->label);
        free(c);
    }
}
