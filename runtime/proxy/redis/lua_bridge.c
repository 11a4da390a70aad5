/*
 * lua_bridge.c - C side of the Lua policy/filter bridge (docs/lua-bridge.md).
 *
 * The per-command call pushes plain values (strings, integers) and the Lua side answers by
 * calling the `meltemi.core` C functions below, which fill the bridge's verdict (each C
 * function finds its bridge as its upvalue: no thread-local state). No table
 * is built per command on the C side, and the command's arguments are pushed only when a
 * filter asks for them.
 */
#include "runtime/proxy/redis/lua_bridge.h"

#include "protocols/redis/reply_reader.h"

#include "runtime/core/log.h"
#include "runtime/core/stats.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>

typedef struct mt_lua_counter {
    char *name;
    char *label;
    mt_stats_block_t *block;
    struct mt_lua_counter *next;
} mt_lua_counter_t;

/* ---- verdict ------------------------------------------------------------------------------- */

static void verdict_reset(mt_verdict_t *v)
{
    for (uint32_t i = 0; i < v->n_sets; i++)
        free(v->sets[i].value);
    v->n_sets = 0;
    v->route = 0;
    v->strip = 0;
    v->delay_ms = 0;
    v->has_error = false;
    v->has_reply = false;
    v->reply.len = 0;
    v->n_mirrors = 0;
    v->req = NULL;
}

static int core_route(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer i = luaL_checkinteger(L, 1);
    mt_worker_t *w = b->w;
    if (i < 1 || !w || (uint32_t)i > b->n_cluster_index)
        return luaL_error(L, "core.route: no cluster %d", (int)i);
    b->verdict.route = (uint32_t)i;
    return 0;
}

static int core_strip(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer n = luaL_checkinteger(L, 1);
    b->verdict.strip = n > 0 ? (uint32_t)n : 0;
    return 0;
}

static int core_error(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    mt_verdict_t *v = &b->verdict;
    v->reply.len = 0;
    resp_out_raw(&v->reply, "-", 1);
    /* An error line cannot hold CR or LF. */
    for (size_t i = 0; i < n && i < 1024; i++)
        resp_out_raw(&v->reply, (text[i] == '\r' || text[i] == '\n') ? " " : text + i, 1);
    resp_out_raw(&v->reply, "\r\n", 2);
    v->has_error = true;
    v->has_reply = false;
    return 0;
}

static int encode_value(lua_State *L, int idx, resp_out_t *o, int depth)
{
    if (depth > 16)
        return luaL_error(L, "core.reply: value nested too deeply");
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        resp_out_null(o);
        return 0;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            resp_out_simple(o, "OK");
        else
            resp_out_null(o);
        return 0;
    case LUA_TNUMBER:
        resp_out_integer(o, (int64_t)lua_tonumber(L, idx));
        return 0;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        resp_out_bulk(o, s, n);
        return 0;
    }
    case LUA_TTABLE: {
        lua_getfield(L, idx, "ok");
        if (lua_isstring(L, -1)) {
            resp_out_simple(o, lua_tostring(L, -1));
            lua_pop(L, 1);
            return 0;
        }
        lua_pop(L, 1);
        lua_getfield(L, idx, "err");
        if (lua_isstring(L, -1)) {
            resp_out_error(o, lua_tostring(L, -1));
            lua_pop(L, 1);
            return 0;
        }
        lua_pop(L, 1);
        size_t n = lua_objlen(L, idx);
        resp_out_array(o, (int64_t)n);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, (int)i);
            encode_value(L, lua_gettop(L), o, depth + 1);
            lua_pop(L, 1);
        }
        return 0;
    }
    default:
        return luaL_error(L, "core.reply: cannot send a %s", luaL_typename(L, idx));
    }
}

static int core_reply(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    mt_verdict_t *v = &b->verdict;
    v->reply.len = 0;
    encode_value(L, 1, &v->reply, 0);
    v->has_reply = true;
    v->has_error = false;
    return 0;
}

static int core_delay(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer ms = luaL_checkinteger(L, 1);
    b->verdict.delay_ms = ms > 0 ? (uint32_t)MT_MIN(ms, 3600000) : 0;
    return 0;
}

static int core_mirror(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer i = luaL_checkinteger(L, 1);
    mt_worker_t *w = b->w;
    if (i < 1 || !w || (uint32_t)i > b->n_cluster_index)
        return luaL_error(L, "core.mirror: no cluster %d", (int)i);
    if (b->verdict.n_mirrors < MT_VERDICT_MAX_MIRRORS)
        b->verdict.mirrors[b->verdict.n_mirrors++] = (uint32_t)i;
    return 0;
}

static int core_nargs(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    const resp_request_t *req = b->verdict.req;
    lua_pushinteger(L, req ? (lua_Integer)req->argc : 0);
    return 1;
}

static int core_arg(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer i = luaL_checkinteger(L, 1);
    const resp_request_t *req = b->verdict.req;
    if (!req || i < 1 || (uint64_t)i > req->argc) {
        lua_pushnil(L);
        return 1;
    }
    /* A replaced argument reads back as its new value. */
    for (uint32_t k = 0; k < b->verdict.n_sets; k++) {
        if (b->verdict.sets[k].index == (uint32_t)(i - 1)) {
            lua_pushlstring(L, b->verdict.sets[k].value, b->verdict.sets[k].len);
            return 1;
        }
    }
    lua_pushlstring(L, req->argv[i - 1].ptr, req->argv[i - 1].len);
    return 1;
}

/* The 1-based argument indexes of the current command's keys (Redis's own key specs). */
static int core_key_positions(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    const resp_request_t *req = b->verdict.req;
    const redis_command_t *cmd = b->verdict.cmd;
    lua_newtable(L);
    if (!req || !cmd)
        return 1;
    uint32_t idx[256];
    uint32_t n = redis_command_keys(cmd, req->argc, req->argv, idx, 256);
    for (uint32_t i = 0; i < n && i < 256; i++) {
        lua_pushinteger(L, (lua_Integer)idx[i] + 1);
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int core_set_arg(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer i = luaL_checkinteger(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    const resp_request_t *req = b->verdict.req;
    if (!req || i < 2 || (uint64_t)i > req->argc)
        return luaL_error(L, "core.set_arg: argument %d out of range", (int)i);
    mt_verdict_t *v = &b->verdict;
    uint32_t k = 0;
    while (k < v->n_sets && v->sets[k].index != (uint32_t)(i - 1))
        k++;
    if (k == v->n_sets) {
        if (v->n_sets == MT_VERDICT_MAX_SETS)
            return luaL_error(L, "core.set_arg: at most %d arguments can be replaced",
                              MT_VERDICT_MAX_SETS);
        v->n_sets++;
    } else {
        free(v->sets[k].value);
    }
    v->sets[k].index = (uint32_t)(i - 1);
    v->sets[k].value = malloc(n ? n : 1);
    if (!v->sets[k].value)
        return luaL_error(L, "out of memory");
    memcpy(v->sets[k].value, s, n);
    v->sets[k].len = n;
    return 0;
}

static int core_log(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    const char *level = luaL_checkstring(L, 1);
    const char *text = luaL_checkstring(L, 2);
    int l = mt_log_level_parse(level);
    if (l < 0 || l > MT_LOG_ERROR)
        l = MT_LOG_INFO;
    unsigned id = b->w ? b->w->id : 0;
    MT_LOG((mt_log_level_t)l, "lua[worker %u]: %.1500s", id, text);
    return 0;
}

static int core_counter(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    lua_Integer delta = luaL_optinteger(L, 2, 1);
    const char *label = luaL_optstring(L, 3, "");
    mt_worker_t *w = b->w;
    if (!w)
        return 0;
    mt_lua_counter_t *c = b->counters;
    while (c && (strcmp(c->name, name) != 0 || strcmp(c->label, label) != 0))
        c = c->next;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c)
            return luaL_error(L, "out of memory");
        c->name = strdup(name);
        c->label = strdup(label);
        c->block = mt_stats_block(MT_STATS_LUA, name, label);
        c->next = b->counters;
        b->counters = c;
    }
    mt_stat_add(c->block, w->id, MT_ST_REQUESTS_TOTAL, (int64_t)delta);
    return 0;
}

static int core_now_ms(lua_State *L)
{
    mt_bridge_t *b = lua_touserdata(L, lua_upvalueindex(1));
    mt_worker_t *w = b->w;
    lua_pushnumber(L, w ? (lua_Number)mt_worker_now_ms(w) : 0);
    return 1;
}

static const luaL_Reg core_functions[] = {
    {"route", core_route},
    {"strip", core_strip},
    {"error", core_error},
    {"reply", core_reply},
    {"delay", core_delay},
    {"mirror", core_mirror},
    {"nargs", core_nargs},
    {"arg", core_arg},
    {"set_arg", core_set_arg},
    {"log", core_log},
    {"counter", core_counter},
    {"now_ms", core_now_ms},
    {"key_positions", core_key_positions},
    {NULL, NULL},
};

/* require "meltemi.core": the functions, each with the bridge as its upvalue. */
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

void mt_bridge_open(mt_bridge_t *b, mt_worker_t *w)
{
    lua_State *L = w->L;
    b->w = w;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushlightuserdata(L, b);
    lua_pushcclosure(L, core_open, 1);
    lua_setfield(L, -2, "meltemi.core");
    lua_pop(L, 2);
    b->request_ref = b->route_key_ref = b->conn_closed_ref = LUA_NOREF;
    b->response_ref = LUA_NOREF;
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

void mt_bridge_apply(mt_bridge_t *b)
{
    mt_worker_t *w = b->w;
    lua_State *L = w->L;
    mt_snapshot_t *snap = w->snap;
    free(b->chains);
    b->chains = NULL;
    b->n_chains = 0;
    free(b->cluster_by_index);
    b->cluster_by_index = calloc(snap->n_clusters + 1, sizeof(*b->cluster_by_index));
    b->n_cluster_index = b->cluster_by_index ? snap->n_clusters : 0;
    for (uint32_t i = 0; i < b->n_cluster_index; i++)
        b->cluster_by_index[i] = mt_worker_cluster(w, &snap->clusters[i]);
    if (!L)
        return;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "meltemi.redis.worker");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        /* The policy modules are not part of this build: every listener forwards. */
        mt_debug("worker %u: no Lua policies: %s", w->id, lua_tostring(L, -1));
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
    if (lua_pcall(L, 3, 2, 0) != 0) {
        mt_error("worker %u: loading the Lua policies of generation %llu failed: %s", w->id,
                 (unsigned long long)snap->generation, lua_tostring(L, -1));
        lua_settop(L, top);
        return;
    }
    free(b->key_limits);
    b->key_limits = malloc(sizeof(uint32_t) * (snap->n_listeners + 1));
    bool have_limits = lua_istable(L, -1); /* the second result: key limits */
    for (uint32_t i = 0; b->key_limits && i < snap->n_listeners; i++) {
        if (!have_limits) {
            b->key_limits[i] = UINT32_MAX;
            continue;
        }
        lua_rawgeti(L, -1, (int)i + 1);
        b->key_limits[i] = lua_isnumber(L, -1) ? (uint32_t)lua_tointeger(L, -1) : UINT32_MAX;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    b->chains = calloc(snap->n_listeners + 1, sizeof(uint8_t));
    if (b->chains && lua_istable(L, -1)) {
        b->n_chains = snap->n_listeners;
        for (uint32_t i = 0; i < snap->n_listeners; i++) {
            lua_rawgeti(L, -1, (int)i + 1);
            b->chains[i] = lua_type(L, -1) == LUA_TNUMBER && lua_tointeger(L, -1) == 2 ? 2
                           : lua_toboolean(L, -1)                                      ? 1
                                                                                       : 0;
            lua_pop(L, 1);
        }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, b->request_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->route_key_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->conn_closed_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, b->response_ref);
    b->request_ref = ref_field(L, mod, "request");
    b->route_key_ref = ref_field(L, mod, "route_key");
    b->conn_closed_ref = ref_field(L, mod, "conn_closed");
    b->response_ref = ref_field(L, mod, "response");
    if (b->request_ref == LUA_NOREF)
        b->n_chains = 0;
    lua_settop(L, top);
}

/* ---- per command ------------------------------------------------------------------------------
 */

int mt_bridge_request(mt_bridge_t *b, uint32_t li, const redis_command_t *cmd,
                      const resp_request_t *req, uint64_t conn_id)
{
    mt_worker_t *w = b->w;
    lua_State *L = w->L;
    mt_verdict_t *v = &b->verdict;
    verdict_reset(v);
    v->req = req;
    v->cmd = cmd;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->request_ref);
    lua_pushinteger(L, (lua_Integer)li);
    lua_pushlstring(L, cmd->name, cmd->name_len);
    uint32_t k;
    uint32_t limit = b->key_limits && li <= b->n_chains ? b->key_limits[li - 1] : UINT32_MAX;
    if (limit && redis_command_keys(cmd, req->argc, req->argv, &k, 1) > 0)
        lua_pushlstring(L, req->argv[k].ptr, MT_MIN(req->argv[k].len, (size_t)limit));
    else
        lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)req->argc);
    lua_pushboolean(L, (cmd->flags & REDIS_CMD_WRITE) != 0);
    lua_pushnumber(L, (lua_Number)conn_id);
    if (lua_pcall(L, 6, 0, 0) != 0) {
        const char *msg = lua_tostring(L, -1);
        mt_error("worker %u: Lua policy failed on '%s': %s", w->id, cmd->name,
                 msg ? msg : "(no message)");
        v->reply.len = 0;
        resp_out_error(&v->reply, "ERR meltemi: policy error (see the proxy log)");
        v->has_error = true;
        lua_pop(L, 1);
        v->req = NULL;
        v->cmd = NULL;
        return -1;
    }
    v->req = NULL;
    v->cmd = NULL;
    return 0;
}

uint32_t mt_bridge_route_key(mt_bridge_t *b, uint32_t li, const char *key, size_t len,
                             uint32_t *strip)
{
    mt_worker_t *w = b->w;
    lua_State *L = w->L;
    *strip = 0;
    if (b->route_key_ref == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->route_key_ref);
    lua_pushinteger(L, (lua_Integer)li);
    lua_pushlstring(L, key, len);
    if (lua_pcall(L, 2, 2, 0) != 0) {
        mt_error("worker %u: Lua route_key failed: %s", w->id, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    lua_Integer idx = lua_tointeger(L, -2);
    lua_Integer s = lua_tointeger(L, -1);
    lua_pop(L, 2);
    *strip = s > 0 ? (uint32_t)s : 0;
    return idx > 0 && (uint32_t)idx <= b->n_cluster_index ? (uint32_t)idx : 0;
}

/* Pushes a reply's type name and value (see worker.response). */
static void push_reply(lua_State *L, const char *p, size_t len)
{
    size_t body = len >= 3 ? len - 3 : 0; /* type byte and CRLF */
    switch (len ? p[0] : 0) {
    case '+':
        lua_pushliteral(L, "simple");
        lua_pushlstring(L, p + 1, body);
        return;
    case '-':
        lua_pushliteral(L, "error");
        lua_pushlstring(L, p + 1, body);
        return;
    case ':': {
        redis_reader_t rd = redis_reader(p, len);
        int64_t v = redis_read_num(&rd, ':');
        lua_pushliteral(L, "integer");
        lua_pushnumber(L, rd.bad ? 0 : (lua_Number)v);
        return;
    }
    case '$': {
        redis_reader_t rd = redis_reader(p, len);
        const char *s = NULL;
        size_t n = 0;
        if (!redis_read_bulk(&rd, &s, &n) || !s) {
            lua_pushliteral(L, "null");
            lua_pushnil(L);
        } else {
            lua_pushliteral(L, "bulk");
            lua_pushlstring(L, s, n);
        }
        return;
    }
    default:
        lua_pushliteral(L, "array");
        lua_pushlstring(L, p, len);
        return;
    }
}

void mt_bridge_response(mt_bridge_t *b, uint32_t li, const redis_command_t *cmd, const char *p,
                        size_t len, uint64_t conn_id)
{
    mt_worker_t *w = b->w;
    lua_State *L = w->L;
    mt_verdict_t *v = &b->verdict;
    verdict_reset(v);
    if (b->response_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->response_ref);
    lua_pushinteger(L, (lua_Integer)li);
    lua_pushstring(L, cmd->name);
    lua_pushnumber(L, (lua_Number)conn_id);
    push_reply(L, p, len);
    if (lua_pcall(L, 5, 0, 0) != 0) {
        mt_error("worker %u: Lua on_response failed on '%s': %s", w->id, cmd->name,
                 lua_tostring(L, -1) ? lua_tostring(L, -1) : "(no message)");
        lua_pop(L, 1);
        verdict_reset(v);
    }
}

void mt_bridge_close(mt_bridge_t *b)
{
    free(b->chains);
    free(b->cluster_by_index);
    free(b->key_limits);
    b->chains = NULL;
    b->cluster_by_index = NULL;
    b->key_limits = NULL;
    b->n_chains = b->n_cluster_index = 0;
    verdict_reset(&b->verdict);
    resp_out_free(&b->verdict.reply);
    while (b->counters) {
        mt_lua_counter_t *c = b->counters;
        b->counters = c->next;
        free(c->name);
        free(c->label);
        free(c);
    }
}

void mt_bridge_conn_closed(mt_bridge_t *b, uint64_t conn_id)
{
    mt_worker_t *w = b->w;
    lua_State *L = w->L;
    if (!L || b->conn_closed_ref == LUA_NOREF)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, b->conn_closed_ref);
    lua_pushnumber(L, (lua_Number)conn_id);
    if (lua_pcall(L, 1, 0, 0) != 0)
        lua_pop(L, 1);
}
