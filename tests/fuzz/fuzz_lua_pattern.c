/*
 * fuzz_lua_pattern.c - libFuzzer harness for the bounded Lua pattern matcher
 * (runtime/luajit/lua_pattern.c): no crash and no read past the subject or the pattern (both are
 * exact-size copies, so ASan sees any overrun), and the same answers as LuaJIT's own
 * string.find / match / gsub, errors included, whenever our matcher finishes within a 50 ms
 * deadline (the two backtrack alike, so the native one then finishes too).
 * Input: byte 0 is the pattern's length (mod 32), then the pattern, then the subject.
 * Build: see tests/fuzz/README.md.
 */
#include "runtime/luajit/lua_pattern.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char COMPARE[] =
    "local P = ...\n"
    "local function pack(...) return { n = select('#', ...), ... } end\n"
    "local function same(a, b)\n"
    "  if a.n ~= b.n then return false end\n"
    "  for i = 1, a.n do if a[i] ~= b[i] then return false end end\n"
    "  return true\n"
    "end\n"
    "return function(s, p)\n"
    "  for _, f in ipairs({ 'find', 'match', 'gsub' }) do\n"
    "    local extra = f == 'gsub' and '<%0>' or nil\n"
    "    P.arm(50)\n"
    "    local mine = pack(pcall(P[f], s, p, extra))\n"
    "    local stopped = P.tripped()\n"
    "    P.disarm()\n"
    "    local complex = not mine[1] and tostring(mine[2]):find('pattern too complex', 1, true)\n"
    "    if not stopped and not complex then\n"
    "      local native = pack(pcall(string[f], s, p, extra))\n"
    "      if not same(mine, native) then\n"
    "        error(string.format('%s(%q, %q): %s %s vs %s %s', f, s, p, tostring(mine[1]),\n"
    "          tostring(mine[2]), tostring(native[1]), tostring(native[2])), 0)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n";

static lua_State *L;

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_loadbuffer(L, COMPARE, strlen(COMPARE), "=compare") != 0)
        abort();
    lua_pushcfunction(L, luaopen_meltemi_pattern);
    lua_call(L, 0, 1);
    lua_call(L, 1, 1);
    lua_setglobal(L, "compare");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    if (!L)
        setup();
    if (len < 1)
        return 0;
    size_t lp = data[0] % 32;
    if (lp > len - 1)
        lp = len - 1;
    size_t ls = len - 1 - lp;
    if (ls > 256)
        ls = 256;
    char *p = malloc(lp ? lp : 1), *s = malloc(ls ? ls : 1);
    if (!p || !s)
        abort();
    memcpy(p, data + 1, lp);
    memcpy(s, data + 1 + lp, ls);

    /* The C API on exact-size buffers, with a step budget. */
    mt_pat_state_t ms;
    mt_pat_init(&ms, s, ls, p, lp, 100000, 0);
    size_t st = 0, en = 0;
    int rc = mt_pat_find(&ms, p, 0, &st, &en);
    if (rc == 1 && !(st <= en && en <= ls))
        abort();
    if (rc < 0 && ms.error == NULL)
        abort();

    /* The Lua functions against LuaJIT's. */
    lua_getglobal(L, "compare");
    lua_pushlstring(L, s, ls);
    lua_pushlstring(L, p, lp);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    free(p);
    free(s);
    return 0;
}
