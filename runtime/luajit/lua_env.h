/*
 * lua_env.h - creating a LuaJIT state with everything meltemi's Lua code expects:
 * standard libraries, lpeg and lua-cjson (linked statically, preloaded as "lpeg" and "cjson"),
 * every embedded module of lua/ and policies/ in package.preload, and the C helper module
 * "meltemi.c" (YAML loading, directory listing, file reading, base64 through
 * runtime/luajit/base64.h) used by the config compiler.
 */
#ifndef MELTEMI_LUA_ENV_H
#define MELTEMI_LUA_ENV_H

#include <lua.h>

/* Returns a new state or NULL when out of memory. The caller closes it with lua_close. */
lua_State *mt_lua_new(void);

/* Calls require(name)[fn](...) with nargs arguments already pushed; returns lua_pcall's status
 * and leaves nresults results (or an error message) on the stack. */
int mt_lua_call_module(lua_State *L, const char *module, const char *fn, int nargs, int nresults);

#endif
