/*
 * test_lua_pattern.c - the bounded Lua pattern matcher (runtime/luajit/lua_pattern.c): it answers
 * exactly what LuaJIT's string.find / match / gmatch / gsub answer on ordinary patterns
 * (compared call by call on a corpus), reports malformed patterns with Lua's messages, and
 * stops a pathological backtracking pattern at its step budget or deadline.
 */
#include "runtime/luajit/lua_pattern.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

/* ---- C API ---------------------------------------------------------------------------------- */

static int find_c(const char *s, const char *p, size_t *st, size_t *en, mt_pat_state_t *ms)
{
    mt_pat_init(ms, s, strlen(s), p, strlen(p), UINT64_MAX, 0);
    return mt_pat_find(ms, p, 0, st, en);
}

Test(lua_pattern, finds_with_captures_and_anchors)
{
    mt_pat_state_t ms;
    size_t st, en;
    cr_assert_eq(find_c("session:beef", "^session:(%x+)$", &st, &en, &ms), 1);
    cr_assert_eq(st, 0);
    cr_assert_eq(en, 12);
    cr_assert_eq(ms.level, 1);
    cr_assert_eq(ms.capture[0].len, 4);
    cr_assert_eq(memcmp(ms.capture[0].init, "beef", 4), 0);
    cr_assert_eq(find_c("xsession:beef", "^session", &st, &en, &ms), 0, "anchored");
    cr_assert_eq(find_c("f(a(b)c)d", "%b()", &st, &en, &ms), 1);
    cr_assert_eq(st, 1);
    cr_assert_eq(en, 8);
    cr_assert_eq(find_c("THE (quick) fox", "%f[%a]%a+%f[%A]", &st, &en, &ms), 1);
    cr_assert_eq(st, 0);
    cr_assert_eq(en, 3);
}

Test(lua_pattern, malformed_patterns_are_errors_not_crashes)
{
    const char *bad[][2] = {
        {"a%", "malformed pattern (ends with '%')"},
        {"[a", "malformed pattern (missing ']')"},
        {"(a", NULL /* unfinished capture: reported when pushed */},
        {"a)", "invalid pattern capture"},
        {"%1", "invalid capture index"},
        {"%b", "unbalanced pattern"},
        {"%fa", "missing '[' after '%f' in pattern"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mt_pat_state_t ms;
        size_t st, en;
        int rc = find_c("a", bad[i][0], &st, &en, &ms);
        if (bad[i][1] == NULL) {
            cr_assert_eq(rc, 1, "%s", bad[i][0]);
            cr_assert_eq(ms.capture[0].len, MT_PAT_CAP_UNFINISHED);
            continue;
        }
        cr_assert_eq(rc, -1, "%s", bad[i][0]);
        cr_assert_eq(ms.status, MT_PAT_ERROR);
        cr_assert_str_eq(ms.error, bad[i][1]);
    }
}

Test(lua_pattern, pathological_pattern_stops_at_the_step_budget)
{
    char key[205];
    memset(key, 'a', 204);
    key[204] = '\0';
    mt_pat_state_t ms;
    size_t st, en;
    const char *p = ".-.-.-.-b";
    mt_pat_init(&ms, key, 204, p, strlen(p), 10 * 1000 * 1000, 0);
    cr_assert_eq(mt_pat_find(&ms, p, 0, &st, &en), -1);
    cr_assert_eq(ms.status, MT_PAT_ABORTED);
    cr_assert_str_eq(ms.error, "pattern step budget exceeded");
    /* the same pattern on a short subject is answered (no match) within the budget */
    mt_pat_init(&ms, key, 20, p, strlen(p), 10 * 1000 * 1000, 0);
    cr_assert_eq(mt_pat_find(&ms, p, 0, &st, &en), 0);
}

Test(lua_pattern, pathological_pattern_stops_at_the_deadline)
{
    char key[205];
    memset(key, 'a', 204);
    key[204] = '\0';
    mt_pat_state_t ms;
    size_t st, en;
    const char *p = ".-.-.-.-b";
    uint64_t t0 = mt_pat_now_ns();
    mt_pat_init(&ms, key, 204, p, strlen(p), UINT64_MAX, t0 + 20 * 1000000u);
    cr_assert_eq(mt_pat_find(&ms, p, 0, &st, &en), -1);
    cr_assert_eq(ms.status, MT_PAT_ABORTED);
    cr_assert_str_eq(ms.error, "time limit exceeded");
    cr_assert_geq(mt_pat_now_ns(), t0 + 20 * 1000000u, "stopped at, not before, the deadline");
}

Test(lua_pattern, deep_nesting_is_refused_not_a_stack_overflow)
{
    char p[2001];
    for (int i = 0; i < 1000; i++)
        memcpy(p + 2 * i, ".-", 2);
    p[2000] = '\0';
    mt_pat_state_t ms;
    size_t st, en;
    cr_assert_eq(find_c("aaaa", p, &st, &en, &ms), -1);
    cr_assert_str_eq(ms.error, "pattern too complex");
}

/* ---- Lua: equivalence with LuaJIT's string library ------------------------------------------ */

static const char EQUIVALENCE[] =
    "local P = ...\n"
    "local subjects = { '', 'a', 'hello world', 'session:beef42', 'THE (quick) [brown] fox',\n"
    "  'a,b,,c', '  trim me  ', 'key=val; k2=v2', 'x\\0y\\0z', 'f(a(b)c)d', '%%$^',\n"
    "  'aaa', 'abcabc', '12.5e-3', 'tenant-a:user:1001', 'A1 b2_C3\\tD4\\n' }\n"
    "local patterns = { '', 'a', 'o', '^h', 'd$', '^$', '.', '.-', '.*', 'l+', 'l*', 'x?',\n"
    "  '%a+', '%A+', '%d+', '%D', '%s+', '%S+', '%w+', '%W', '%x+', '%p', '%c', '%l+', '%u+',\n"
    "  '%g+', '%z', '[%a_][%w_]*', '[^,]*', '[a-c]+', '[%]]', '[]]', '[^%s]+', '[%-a]', '[a-]',\n"
    "  '(%w+)=(%w+)', '()', '()a()', '(a)(b)(c)', '((a)b)', '(a*(.)%w(%s*))', '^(%s*)(.-)(%s*)$',\n"
    "  '%b()', '%b[]', '%f[%a]%a+', '%f[%w]%w+%f[%W]', '(.)%1', '(a)%1', '^session:(%x+)$',\n"
    "  '^tenant%-(%a+):', '%.', '%%', '%$', '%^', '\\0y', '[\\0]', '%d*%.?%d+e?[-+]?%d*', 'a.-c',\n"
    "  '[%a%d]+', '.-b', '(.-)b', '^(.-)%s', 'b*', '$', '^', 'a$b', '%s*$', '[a-c]-c' }\n"
    "local function pack(...) return { n = select('#', ...), ... } end\n"
    "local function strip(v)  -- the two gmatch loops below sit on different lines\n"
    "  if type(v) == 'string' then return (v:gsub('^equivalence:%d+: ', '')) end\n"
    "  return v\n"
    "end\n"
    "local function same(a, b, what)\n"
    "  if a.n ~= b.n then error(what .. ': ' .. a.n .. ' results vs ' .. b.n, 0) end\n"
    "  for i = 1, a.n do\n"
    "    if strip(a[i]) ~= strip(b[i]) then error(what .. ': result ' .. i .. ': ' .. "
    "tostring(a[i]) .. ' vs '\n"
    "      .. tostring(b[i]), 0) end\n"
    "  end\n"
    "end\n"
    "local n = 0\n"
    "local repls = { '<%0>', '%1', '%%', '[%2]', 'x%yz', function(a) return a and #a end,\n"
    "  { a = 'A', ['hello'] = false, o = 1 } }\n"
    "for _, s in ipairs(subjects) do\n"
    "  for _, p in ipairs(patterns) do\n"
    "    local what = string.format('%q ~ %q', s, p)\n"
    "    for _, init in ipairs({ 1, 2, -3, 0, 40 }) do\n"
    "      same(pack(pcall(string.find, s, p, init)), pack(pcall(P.find, s, p, init)), 'find ' .. "
    "what)\n"
    "      same(pack(pcall(string.match, s, p, init)), pack(pcall(P.match, s, p, init)), 'match ' "
    ".. what)\n"
    "      same(pack(pcall(string.find, s, p, init, true)), pack(pcall(P.find, s, p, init, "
    "true)),\n"
    "        'plain ' .. what)\n"
    "      n = n + 3\n"
    "    end\n"
    "    local a, b = {}, {}\n"
    "    local ok1, e1 = pcall(function() for x, y in string.gmatch(s, p) do a[#a + 1] =\n"
    "      tostring(x) .. '|' .. tostring(y) end end)\n"
    "    local ok2, e2 = pcall(function() for x, y in P.gmatch(s, p) do b[#b + 1] =\n"
    "      tostring(x) .. '|' .. tostring(y) end end)\n"
    "    same(pack(ok1, e1, table.concat(a, ',')), pack(ok2, e2, table.concat(b, ',')), 'gmatch ' "
    ".. what)\n"
    "    for _, r in ipairs(repls) do\n"
    "      for _, max in ipairs({ 100, 1 }) do\n"
    "        same(pack(pcall(string.gsub, s, p, r, max)), pack(pcall(P.gsub, s, p, r, max)),\n"
    "          'gsub ' .. what .. ' ' .. tostring(r))\n"
    "        n = n + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return n\n";

Test(lua_pattern, answers_like_luajit_string_library)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    cr_assert_eq(luaL_loadbuffer(L, EQUIVALENCE, strlen(EQUIVALENCE), "=equivalence"), 0, "%s",
                 lua_tostring(L, -1));
    lua_pushcfunction(L, luaopen_meltemi_pattern);
    lua_call(L, 0, 1);
    int rc = lua_pcall(L, 1, 1, 0);
    cr_assert_eq(rc, 0, "%s", lua_tostring(L, -1));
    cr_assert_gt(lua_tointeger(L, -1), 10000, "compared %d calls", (int)lua_tointeger(L, -1));
    lua_close(L);
}

Test(lua_pattern, armed_watchdog_aborts_and_trips)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    const char *code = "local P = ...\n"
                       "local key = string.rep('a', 204)\n"
                       "P.arm(20)\n"
                       "local ok, err = pcall(P.find, key, '.-.-.-.-b')\n"
                       "local tripped = P.tripped()\n"
                       "P.disarm()\n"
                       "return ok, err, tripped, P.tripped(), P.find(key, 'a+$')\n";
    cr_assert_eq(luaL_loadbuffer(L, code, strlen(code), "=armed"), 0);
    lua_pushcfunction(L, luaopen_meltemi_pattern);
    lua_call(L, 0, 1);
    cr_assert_eq(lua_pcall(L, 1, 6, 0), 0, "%s", lua_tostring(L, -1));
    cr_assert_eq(lua_toboolean(L, 1), 0);
    cr_assert(strstr(lua_tostring(L, 2), "time limit exceeded"), "%s", lua_tostring(L, 2));
    cr_assert_str_eq(lua_tostring(L, 3), "time limit exceeded");
    cr_assert(lua_isnil(L, 4), "disarm clears it");
    cr_assert_eq(lua_tointeger(L, 5), 1);
    cr_assert_eq(lua_tointeger(L, 6), 204);
    lua_close(L);
}

Test(lua_pattern, armed_memory_cap_refuses_growth_and_trips)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    const char *code = "local P = ...\n"
                       "collectgarbage('collect')\n"
                       "local heap = P.heap()\n"
                       "local same = math.abs(heap - collectgarbage('count') * 1024) < 1\n"
                       "local s = string.rep('x', 1024)\n"
                       "P.arm(10000, heap + 4 * 1024 * 1024)\n"
                       "local ok = pcall(function() for _ = 1, 20 do s = s .. s end end)\n"
                       "local tripped = P.tripped()\n"
                       "P.disarm()\n"
                       "s = nil\n"
                       "local big = #string.rep('y', 16 * 1024 * 1024)\n"
                       "return same, ok, tripped, big\n";
    cr_assert_eq(luaL_loadbuffer(L, code, strlen(code), "=memcap"), 0);
    lua_pushcfunction(L, luaopen_meltemi_pattern);
    lua_call(L, 0, 1);
    cr_assert_eq(lua_pcall(L, 1, 4, 0), 0, "%s", lua_tostring(L, -1));
    cr_assert(lua_toboolean(L, 1), "the allocator counts what Lua counts");
    cr_assert_eq(lua_toboolean(L, 2), 0, "1 GiB of doubling refused under a 4 MiB cap");
    cr_assert_str_eq(lua_tostring(L, 3), "memory limit exceeded");
    cr_assert_eq(lua_tointeger(L, 4), 16 * 1024 * 1024, "unarmed, nothing is refused");
    lua_close(L); /* the watchdog's __gc hands the allocator back first */
}
