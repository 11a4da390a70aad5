/*
 * lua_env.c - a LuaJIT state with what meltemi's Lua code expects: the standard libraries,
 * lpeg and lua-cjson (both static), every embedded module of lua/ and policies/ in
 * package.preload, the C helpers of "meltemi.c" and the bounded pattern matcher
 * "meltemi.pattern" (lua_pattern.h). package.path and package.cpath are emptied so that
 * nothing is ever loaded from disk by accident: the binary carries all its Lua.
 */
#include "runtime/luajit/lua_env.h"
#include "runtime/luajit/base64.h"
#include "runtime/luajit/lua_embedded.h"
#include "runtime/luajit/lua_pattern.h"
#include "runtime/luajit/yaml.h"
#include "protocols/codec.h"
#include "protocols/redis/commands.h"

#include <dirent.h>
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int luaopen_lpeg(lua_State *L);
int luaopen_cjson(lua_State *L); /* lua-cjson-dev, linked statically like lpeg */

#define READFILE_MAX (64u << 20) /* config files and scripts; anything larger is a mistake */

/* ---- meltemi.c: helpers for the config compiler --------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* listdir(dir) -> sorted array of entry names (no "." / "..") | nil, "dir: reason" */
static int c_listdir(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    DIR *d = opendir(dir);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", dir, strerror(errno));
        return 2;
    }
    size_t n = 0, cap = 16;
    char **names = malloc(cap * sizeof *names);
    struct dirent *e;
    bool oom = names == NULL;
    while (!oom && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            char **grown = realloc(names, 2 * cap * sizeof *names);
            if (!grown) {
                oom = true;
                break;
            }
            names = grown;
            cap *= 2;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) {
            oom = true;
            break;
        }
        n++;
    }
    closedir(d);
    if (!oom)
        qsort(names, n, sizeof *names, name_cmp);
    /* Copy into Lua only after the C side is complete and sorted, then free it all. */
    lua_createtable(L, oom ? 0 : (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        if (!oom) {
            lua_pushstring(L, names[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        free(names[i]);
    }
    free(names);
    if (oom)
        return luaL_error(L, "listdir: out of memory");
    return 1;
}

/* readfile(path) -> contents | nil, "path: reason" */
static int c_readfile(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    struct stat sb;
    const char *why = NULL;
    if (!f) {
        why = strerror(errno);
    } else if (fstat(fileno(f), &sb) != 0) {
        why = strerror(errno);
    } else if (!S_ISREG(sb.st_mode)) {
        why = "not a regular file";
    } else if ((uint64_t)sb.st_size > READFILE_MAX) {
        why = "file too large";
    }
    if (why) {
        if (f)
            fclose(f);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, why);
        return 2;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        luaL_addlstring(&b, chunk, got);
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: read error", path);
        return 2;
    }
    luaL_pushresult(&b);
    return 1;
}

/* realpath(path) -> the absolute path with every symlink, "." and ".." resolved (the file
 * must exist) | nil, "path: reason". Used to keep scriptFile inside the config directory. */
static int c_realpath(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char *resolved = realpath(path, NULL);
    if (!resolved) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_pushstring(L, resolved);
    free(resolved);
    return 1;
}

/*
 * base64_decode(s) -> bytes | nil, reason. Standard alphabet with padding, as Kubernetes
 * Secret data uses; line breaks are skipped the way Go's decoder skips them. The result is a
 * byte string of the exact decoded length (NUL bytes kept). The buffers are one userdata, so
 * an error raised by Lua while pushing cannot leak them.
 */
static int c_base64_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    size_t max = mt_base64_decoded_max(len);
    unsigned char *out = lua_newuserdata(L, max + len);
    size_t n, bad_at = 0;
    mt_base64_status_t st = mt_base64_decode(s, len, out, &n, out + max, &bad_at);
    if (st == MT_BASE64_OK) {
        lua_pushlstring(L, (const char *)out, n);
        return 1;
    }
    lua_pushnil(L);
    if (st == MT_BASE64_BAD_BYTE)
        lua_pushfstring(L, "illegal base64 data at input byte %d", (int)bad_at);
    else
        lua_pushstring(L, "illegal base64 data: length is not a multiple of 4 or bad padding");
    return 2;
}

/* codec_known(name) -> true when a built-in codec answers to name (its own or an alias), so
 * that an ApplicationProtocol naming anything else is refused at compile time instead of
 * its ports silently becoming plain TCP. The first call registers the built-ins (main
 * thread; later calls find them registered and write nothing). */
static int c_codec_known(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_pushboolean(L, mt_codec_register_builtins() == MT_OK && mt_codec_find(name) != NULL);
    return 1;
}

/* redis_command_known(name) -> true when the Redis command table has it (any case). */
static int c_redis_command_known(lua_State *L)
{
    size_t n = 0;
    const char *name = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, redis_command_lookup(name, n) != NULL);
    return 1;
}

static int luaopen_meltemi_c(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"yaml_load", mt_yaml_load},
        {"listdir", c_listdir},
        {"readfile", c_readfile},
        {"base64_decode", c_base64_decode},
        {"realpath", c_realpath},
        {"codec_known", c_codec_known},
        {"redis_command_known", c_redis_command_known},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}

/* ---- embedded modules ----------------------------------------------------------------- */

/* package.preload loader: upvalue 1 is the mt_lua_modules index. */
static int embedded_loader(lua_State *L)
{
    const mt_lua_module_t *m = &mt_lua_modules[lua_tointeger(L, lua_upvalueindex(1))];
    if (luaL_loadbuffer(L, m->source, m->len, m->chunkname) != 0)
        return lua_error(L);
    lua_pushstring(L, m->name);
    lua_call(L, 1, 1);
    return 1;
}

static int lua_env_setup(lua_State *L)
{
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "cpath");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_lpeg);
    lua_setfield(L, -2, "lpeg");
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushcfunction(L, luaopen_meltemi_c);
    lua_setfield(L, -2, "meltemi.c");
    lua_pushcfunction(L, luaopen_meltemi_pattern);
    lua_setfield(L, -2, "meltemi.pattern");
    for (int i = 0; mt_lua_modules[i].name != NULL; i++) {
        lua_pushinteger(L, i);
        lua_pushcclosure(L, embedded_loader, 1);
        lua_setfield(L, -2, mt_lua_modules[i].name);
    }
    lua_pop(L, 2);
    return 0;
}

lua_State *mt_lua_new(void)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    if (lua_cpcall(L, lua_env_setup, NULL) != 0) {
        lua_close(L);
        return NULL;
    }
    return L;
}

/* ---- calling into modules ------------------------------------------------------------- */

static int lua_env_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_isnoneornil(L, 1) ? "(error object is nil)" : "(error object is not a string)";
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushstring(L, msg);
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

/* Runs inside the pcall: upvalues are the module and function names. */
static int lua_env_trampoline(lua_State *L)
{
    int nargs = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 1, 1);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_gettable(L, -2);
    if (!lua_isfunction(L, -1))
        return luaL_error(L, "%s.%s is not a function", lua_tostring(L, lua_upvalueindex(1)),
                          lua_tostring(L, lua_upvalueindex(2)));
    lua_remove(L, -2);
    lua_insert(L, 1);
    lua_call(L, nargs, LUA_MULTRET);
    return lua_gettop(L);
}

int mt_lua_call_module(lua_State *L, const char *module, const char *fn, int nargs, int nresults)
{
    if (!lua_checkstack(L, 4)) {
        lua_pop(L, nargs);
        lua_pushliteral(L, "mt_lua_call_module: out of Lua stack");
        return LUA_ERRMEM;
    }
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, lua_env_traceback);
    lua_insert(L, base + 1);
    lua_pushstring(L, module);
    lua_pushstring(L, fn);
    lua_pushcclosure(L, lua_env_trampoline, 2);
    lua_insert(L, base + 2);
    int status = lua_pcall(L, nargs, nresults, base + 1);
    lua_remove(L, base + 1);
    return status;
}
