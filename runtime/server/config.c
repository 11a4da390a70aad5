/*
 * config.c - the C face of the configuration compiler: `meltemi validate`, `meltemi compile`,
 * `meltemi lua`, and mt_config_compile for the runtime. The compiling itself is Lua
 * (lua/meltemi/compiler.lua); this file only calls it under pcall and prints what it says.
 */
#include "runtime/server/config.h"
#include "runtime/core/common.h"
#include "runtime/luajit/lua_env.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* Pushes an array holding the one string on top of the stack (which it replaces). */
static void config_wrap_error(lua_State *L)
{
    lua_createtable(L, 1, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
}

int mt_config_compile(lua_State *L, const char *dir)
{
    if (!lua_checkstack(L, 8))
        return -1; /* cannot push even the error: the caller's stack is exhausted */
    lua_pushstring(L, dir);
    int top = lua_gettop(L) - 1;
    if (mt_lua_call_module(L, "meltemi.compiler", "compile_dir", 1, 3) != 0) {
        lua_pushfstring(L, "internal error in the config compiler: %s", lua_tostring(L, -1));
        lua_remove(L, -2);
        config_wrap_error(L);
        return -1;
    }
    /* top+1: snapshot | nil, top+2: errors, top+3: warnings */
    if (lua_istable(L, top + 1)) {
        lua_settop(L, top + 1);
        return 0;
    }
    lua_settop(L, top + 2);
    lua_remove(L, top + 1);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "internal error: the config compiler returned neither a snapshot "
                           "nor errors");
        config_wrap_error(L);
    }
    return -1;
}

/* Prints every string of the array at idx to f, each after prefix, one per line. */
static size_t config_print_list(lua_State *L, int idx, FILE *f, const char *prefix)
{
    if (!lua_istable(L, idx))
        return 0;
    size_t n = lua_objlen(L, idx);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (int)i);
        const char *s = lua_tostring(L, -1);
        fprintf(f, "%s%s\n", prefix, s ? s : "(not a string)");
        lua_pop(L, 1);
    }
    return n;
}

static size_t config_field_len(lua_State *L, int idx, const char *field)
{
    lua_getfield(L, idx, field);
    size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
    lua_pop(L, 1);
    return n;
}

static size_t config_map_len(lua_State *L, int idx, const char *field)
{
    size_t n = 0;
    lua_getfield(L, idx, field);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            n++;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return n;
}

/*
 * Compiles dir in a fresh state. On success leaves the snapshot at index 1 and returns 0;
 * on failure prints warnings and errors to stderr and returns the exit code.
 */
static int config_compile_or_report(lua_State *L, const char *dir)
{
    lua_pushstring(L, dir);
    if (mt_lua_call_module(L, "meltemi.compiler", "compile_dir", 1, 3) != 0) {
        fprintf(stderr, "meltemi: internal error in the config compiler: %s\n",
                lua_tostring(L, -1));
        return MT_EXIT_INVALID_CONFIG;
    }
    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "warnings");
        config_print_list(L, -1, stderr, "warning: ");
        lua_settop(L, 1);
        return MT_EXIT_OK;
    }
    config_print_list(L, 3, stderr, "warning: ");
    if (config_print_list(L, 2, stderr, "") == 0)
        fprintf(stderr, "meltemi: %s: invalid configuration\n", dir);
    return MT_EXIT_INVALID_CONFIG;
}

int mt_cmd_validate(const char *dir)
{
    lua_State *L = mt_lua_new();
    if (!L) {
        fprintf(stderr, "meltemi: cannot create a Lua state\n");
        return MT_EXIT_INVALID_CONFIG;
    }
    int rc = config_compile_or_report(L, dir);
    if (rc == MT_EXIT_OK) {
        printf("ok: %zu objects, %zu listeners, %zu clusters\n", config_field_len(L, 1, "sources"),
               config_field_len(L, 1, "listeners"), config_map_len(L, 1, "clusters"));
    }
    lua_close(L);
    return rc;
}

int mt_cmd_compile(const char *dir)
{
    lua_State *L = mt_lua_new();
    if (!L) {
        fprintf(stderr, "meltemi: cannot create a Lua state\n");
        return MT_EXIT_INVALID_CONFIG;
    }
    int rc = config_compile_or_report(L, dir);
    if (rc == MT_EXIT_OK) {
        /* Passwords redacted, as in /config_dump: the output lands in terminals and CI logs. */
        if (mt_lua_call_module(L, "meltemi.dump", "lua_redacted", 1, 1) != 0) {
            fprintf(stderr, "meltemi: internal error while printing: %s\n", lua_tostring(L, -1));
            rc = MT_EXIT_INVALID_CONFIG;
        } else {
            size_t len;
            const char *text = lua_tolstring(L, -1, &len);
            fwrite(text, 1, len, stdout);
        }
    }
    lua_close(L);
    return rc;
}

static int config_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    lua_pushstring(L, msg ? msg : "(error object is not a string)");
    lua_pushinteger(L, 2);
    lua_call(L, 2, 1);
    return 1;
}

int mt_cmd_lua(const char *file, int argc, char **argv)
{
    lua_State *L = mt_lua_new();
    if (!L) {
        fprintf(stderr, "meltemi: cannot create a Lua state\n");
        return MT_EXIT_INVALID_CONFIG;
    }
    /* arg as the stand-alone interpreter sets it: arg[0] the script, arg[1..] its arguments */
    lua_createtable(L, argc, 1);
    lua_pushstring(L, file);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");

    int rc = MT_EXIT_OK;
    lua_pushcfunction(L, config_traceback);
    if (luaL_loadfile(L, file) != 0) {
        fprintf(stderr, "meltemi: %s\n", lua_tostring(L, -1));
        rc = MT_EXIT_INVALID_CONFIG;
    } else {
        for (int i = 0; i < argc; i++)
            lua_pushstring(L, argv[i]);
        if (lua_pcall(L, argc, 0, 1) != 0) {
            fprintf(stderr, "%s\n", lua_tostring(L, -1));
            rc = MT_EXIT_INVALID_CONFIG;
        }
    }
    fflush(stdout);
    lua_close(L);
    return rc;
}
