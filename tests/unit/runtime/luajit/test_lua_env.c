/*
 * test_lua_env.c - runtime/luajit/lua_env.c: the Lua state mt_lua_new makes (lpeg, the
 * embedded meltemi modules, no disk search paths) and mt_lua_call_module's error reporting.
 */
#include "runtime/luajit/lua_env.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <string.h>

static lua_State *L;

static void lua_env_setup(void)
{
    L = mt_lua_new();
    cr_assert_not_null(L);
}

static void lua_env_teardown(void)
{
    lua_close(L);
}

TestSuite(lua_env, .init = lua_env_setup, .fini = lua_env_teardown);

Test(lua_env, has_lpeg_and_no_disk_paths)
{
    cr_assert_eq(luaL_dostring(L, "local lpeg = require 'lpeg'\n"
                                  "assert(lpeg.match(lpeg.P'ab', 'abc') == 3)\n"
                                  "assert(package.path == '' and package.cpath == '')\n"
                                  "assert(require('meltemi.c').base64_decode('YQ==') == 'a')\n"
                                  "assert(type(require('meltemi.compiler').compile_dir) == "
                                  "'function')\n"),
                 0, "%s", lua_tostring(L, -1));
}

Test(lua_env, call_module_reports_errors_with_a_traceback)
{
    lua_pushliteral(L, "x");
    int status = mt_lua_call_module(L, "meltemi.compiler", "no_such_function", 1, 1);
    cr_assert_neq(status, 0);
    const char *msg = lua_tostring(L, -1);
    cr_assert(strstr(msg, "meltemi.compiler.no_such_function is not a function") != NULL, "%s",
              msg);
    cr_assert(strstr(msg, "stack traceback") != NULL, "%s", msg);
    lua_pop(L, 1);
    cr_assert_eq(lua_gettop(L), 0);
    status = mt_lua_call_module(L, "meltemi.dump", "lua", 0, 1);
    cr_assert_neq(status, 0, "dump.lua(nil) must fail: nil is not a table");
    lua_pop(L, 1);
    lua_newtable(L);
    cr_assert_eq(mt_lua_call_module(L, "meltemi.dump", "lua", 1, 1), 0);
    cr_assert_str_eq(lua_tostring(L, -1), "return {}\n");
}
