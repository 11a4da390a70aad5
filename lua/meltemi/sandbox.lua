-- meltemi.sandbox: loading and calling user Lua (LuaFilter code) without trusting it.
--
--   local sandbox = require "meltemi.sandbox"
--   local mod, err = sandbox.load(code, chunkname, config)   -- module table | nil, message
--   local ok, err = sandbox.call(fn, a, b)                    -- fn(a, b) within the limits
--
-- What user code gets (docs/lua-bridge.md, "Sandbox"): its own globals table holding only
--   assert error ipairs next pairs pcall select tonumber tostring type unpack xpcall
--   setmetatable getmetatable (tables only)  string (no dump; plus starts_with, ends_with,
--   contains)  table  math (no randomseed)
--   os.time os.clock os.date
-- No io, os.execute/exit/getenv, package, require, load*, dofile, debug, ffi, jit,
-- collectgarbage, setfenv/getfenv, rawset. Source text only: bytecode is refused.
--
-- Limits, per call into user code (the chunk itself at load time, every on_request):
--   * JIT off for the user's functions (jit.off(chunk, true) covers every function the
--     chunk defines), because compiled traces run no hooks;
--   * an instruction-count hook every HOOK_EVERY instructions raises
--     "instruction budget exceeded" after limits.instructions,
--     "time limit exceeded" once the call's wall-clock deadline (limits.timeout_ms) passed,
--     and "memory limit exceeded" when the state's heap stays over limits.memory_kb after a
--     full collection. The sandbox's pcall/xpcall re-raise all three, so user code cannot
--     swallow them and keep going.
--   * No C function user code can reach runs unbounded: a hook cannot interrupt C, so
--     string.find/match/gmatch/gsub (also as string methods) are meltemi.pattern's, a Lua 5.1
--     matcher that checks the same deadline as it backtracks; a long table.sort compares
--     through a Lua function (the hook sees it), and so do long table.insert/remove shifts;
--     string.rep checks its size up front.
-- The memory cap is measured at hook time; between two hooks one C call could ask for much
-- more (table.concat, s .. s), so the state's allocator also refuses, while user code runs,
-- anything past HARD_CAP_FACTOR times the cap (string.rep is checked up front as well).
--
-- The shared string metatable (what `("x"):upper()` uses) is pointed at a read-only copy of
-- string without dump, once, for the whole state: trusted code in this repository never
-- calls string methods it would lose (dump) through the colon syntax.

local jit_ok, jit = pcall(require, "jit")
local P = require "meltemi.pattern"
local wd_arm, wd_disarm, wd_expired, wd_tripped = P.arm, P.disarm, P.expired, P.tripped
local debug = debug
local sethook = debug.sethook
local collectgarbage = collectgarbage
local pcall, xpcall, error, type, tostring = pcall, xpcall, error, type, tostring
local setmetatable, getmetatable, rawget = setmetatable, getmetatable, rawget
local loadstring, setfenv, load = loadstring, setfenv, load
local byte, format = string.byte, string.format

local S = {}

S.HOOK_EVERY = 1000
S.DEFAULT_INSTRUCTIONS = 1e7
S.DEFAULT_MEMORY_KB = 64 * 1024
S.DEFAULT_TIMEOUT_MS = 100
-- While user code runs, no allocation may take the state past this many times memory_kb
-- (meltemi.pattern's allocator): room for garbage the collector has not reached yet.
S.HARD_CAP_FACTOR = 2

-- Current limits; set_limits changes them for every later call (tests). A LuaFilter's
-- spec.timeout / spec.maxInstructions override them for that filter (S.call_with).
local limits = {
  instructions = S.DEFAULT_INSTRUCTIONS, memory_kb = S.DEFAULT_MEMORY_KB,
  timeout_ms = S.DEFAULT_TIMEOUT_MS,
}
local budget_ticks = limits.instructions / S.HOOK_EVERY

function S.set_limits(t)
  if t.instructions then limits.instructions = t.instructions end
  if t.memory_kb then limits.memory_kb = t.memory_kb end
  if t.timeout_ms then limits.timeout_ms = t.timeout_ms end
end

function S.limits()
  return { instructions = limits.instructions, memory_kb = limits.memory_kb,
    timeout_ms = limits.timeout_ms }
end

S.BUDGET_EXCEEDED = "instruction budget exceeded"
S.MEMORY_EXCEEDED = "memory limit exceeded"
S.TIME_EXCEEDED = "time limit exceeded"

-- ---- the limits hook ----------------------------------------------------------------------

local ticks = 0
local tripped = nil -- the limit message once a limit tripped during the current call
local depth = 0     -- nested S.call (a filter's code calling back into trusted code that
                    -- calls user code again never happens today, but stay correct)

local function over_memory()
  if collectgarbage("count") <= limits.memory_kb then return false end
  collectgarbage("collect")
  return collectgarbage("count") > limits.memory_kb
end

local function limits_hook()
  ticks = ticks + 1
  if tripped then error(tripped, 0) end
  if ticks > budget_ticks then
    tripped = S.BUDGET_EXCEEDED
    error(tripped, 0)
  end
  local t = wd_expired() -- the deadline, or an allocation the hard cap refused
  if t then
    tripped = t
    error(tripped, 0)
  end
  if over_memory() then
    tripped = S.MEMORY_EXCEEDED
    error(tripped, 0)
  end
end

-- pcall/xpcall results in user code: a tripped limit is not theirs to catch (the pattern
-- matcher trips the C watchdog, the hook trips `tripped`).
local function recheck(ok, ...)
  if not ok then
    tripped = tripped or wd_tripped()
    if tripped then error(tripped, 0) end
  end
  return ok, ...
end

local function sandbox_pcall(f, ...)
  return recheck(pcall(f, ...))
end

-- The handler of an error raised by the hook runs inside the hook, where LuaJIT runs no
-- hooks: a looping handler would never be stopped. So a tripped limit skips the user's
-- handler; any other error reaches it with the hook armed as usual.
local function sandbox_xpcall(f, handler, ...)
  return recheck(xpcall(f, function(e)
    if tripped or wd_tripped() then return e end
    return handler(e)
  end, ...))
end

-- A message for any error value, without running user metamethods (__tostring could loop
-- outside the hook).
local function error_text(err)
  if type(err) == "string" then return err end
  if type(err) == "number" or type(err) == "boolean" or err == nil then return tostring(err) end
  return "(error object is a " .. type(err) .. " value)"
end
S.error_text = error_text

-- Calls fn(...) with the hook armed. Returns true, results... | false, message.
local function finish(...)
  depth = depth - 1
  if depth == 0 then
    sethook()
    tripped = tripped or wd_tripped()
    wd_disarm()
  end
  return ...
end

local function settle(ok, ...)
  if depth == 0 then
    local t = tripped
    tripped = nil
    if t then
      -- What the user allocated is garbage now; give it back before the next request.
      if t == S.MEMORY_EXCEEDED then collectgarbage("collect") end
      return false, t
    end
  end
  if not ok then return false, error_text((...)) end
  return true, ...
end

-- lim: { instructions = n, timeout_ms = n } for this call (either may be nil: the current
-- defaults); a nested call runs within the outer one's limits.
function S.call_with(lim, fn, ...)
  if depth == 0 then
    ticks, tripped = 0, nil
    budget_ticks = ((lim and lim.instructions) or limits.instructions) / S.HOOK_EVERY
    wd_arm((lim and lim.timeout_ms) or limits.timeout_ms, S.HARD_CAP_FACTOR * limits.memory_kb * 1024)
    sethook(limits_hook, "", S.HOOK_EVERY)
  end
  depth = depth + 1
  return settle(finish(pcall(fn, ...)))
end

function S.call(fn, ...)
  return S.call_with(nil, fn, ...)
end

-- ---- the environment ----------------------------------------------------------------------

local function copy(t, without)
  local c = {}
  for k, v in pairs(t) do
    if not (without and without[k]) then c[k] = v end
  end
  return c
end

local real_rep = string.rep

-- string.rep builds its result in one C call, before any hook can look: check the size.
local function safe_rep(s, n, sep)
  if type(s) == "number" then s = tostring(s) end
  if type(s) == "string" and type(n) == "number" and n > 0 then
    local each = #s + (type(sep) == "string" and #sep or 0)
    local room = limits.memory_kb * 1024 - collectgarbage("count") * 1024
    if each * n > room then
      if depth > 0 then tripped = S.MEMORY_EXCEEDED end
      error(S.MEMORY_EXCEEDED, 0)
    end
  end
  return real_rep(s, n, sep)
end

local SAFE_STRING = copy(string, { dump = true })
SAFE_STRING.rep = safe_rep
SAFE_STRING.find, SAFE_STRING.match = P.find, P.match
SAFE_STRING.gmatch, SAFE_STRING.gsub = P.gmatch, P.gsub
-- Matching helpers that cannot backtrack (plain byte comparisons), also as methods:
-- key:starts_with("session:"), key:ends_with(":lock"), key:contains("tmp").
SAFE_STRING.starts_with, SAFE_STRING.ends_with = P.starts_with, P.ends_with
SAFE_STRING.contains = P.contains

-- table.sort without a comparator compares in C, where the hook cannot stop a long sort:
-- past SORT_IN_C_MAX elements (about 15 ms of sorting in C) give it one in Lua (JIT off, so
-- that the hook runs in it). Smaller sorts stay in C: 3x faster, and well within a deadline.
S.SORT_IN_C_MAX = 50000
local real_sort = table.sort
local function lua_less(a, b) return a < b end
if jit_ok and jit then jit.off(lua_less) end
local function safe_sort(t, cmp)
  if cmp == nil and type(t) == "table" and #t > S.SORT_IN_C_MAX then cmp = lua_less end
  return real_sort(t, cmp)
end

-- table.insert(t, pos, v) and table.remove(t, pos) move every element after pos in one call
-- (C, or a JIT-compiled loop): 200 inserts at the front of a 2M-element table are 0.35 s
-- between two hooks. Past SHIFT_IN_C_MAX moved elements the move runs here, interpreted,
-- with the same steps (raw sets for insert, as LuaJIT's; indexing for remove, as its).
S.SHIFT_IN_C_MAX = 10000
local real_insert, real_remove = table.insert, table.remove
local rawset = rawset
local function shift_up(t, e, pos)
  for i = e, pos + 1, -1 do rawset(t, i, rawget(t, i - 1)) end
end
local function shift_down(t, pos, len)
  for i = pos + 1, len do t[i - 1] = t[i] end
end
if jit_ok and jit then
  jit.off(shift_up)
  jit.off(shift_down)
end

local function safe_insert(t, ...)
  if select("#", ...) == 2 and type(t) == "table" then
    local pos, v = ...
    if type(pos) == "number" and pos % 1 == 0 and #t + 1 - pos > S.SHIFT_IN_C_MAX then
      shift_up(t, #t + 1, pos)
      rawset(t, pos, v)
      return
    end
  end
  return real_insert(t, ...)
end

local function safe_remove(t, pos, ...)
  if type(t) == "table" and type(pos) == "number" and pos % 1 == 0 then
    local len = #t
    if pos >= 1 and pos <= len and len - pos > S.SHIFT_IN_C_MAX then
      local old = t[pos]
      shift_down(t, pos, len)
      t[len] = nil
      return old
    end
  end
  return real_remove(t, pos, ...)
end

-- What ("x"):method() finds: read-only, so one filter cannot change another's methods.
local STRING_METHODS = setmetatable({}, {
  __index = SAFE_STRING,
  __newindex = function() error("string methods are read-only", 2) end,
  __metatable = false,
})
getmetatable("").__index = STRING_METHODS

local function safe_getmetatable(v)
  if type(v) ~= "table" then return nil end
  return getmetatable(v)
end

local BASE = {
  "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
  "unpack", "setmetatable",
}

-- A fresh globals table for one filter: each filter sees its own copies, so what one
-- assigns (string.x = ..., a global) never reaches another or the trusted code.
function S.env()
  local env = {}
  for _, name in ipairs(BASE) do env[name] = _G[name] end
  env.pcall, env.xpcall = sandbox_pcall, sandbox_xpcall
  env.getmetatable = safe_getmetatable
  env.string = copy(SAFE_STRING)
  env.table = copy(table)
  env.table.sort = safe_sort
  env.table.insert, env.table.remove = safe_insert, safe_remove
  env.math = copy(math, { randomseed = true })
  env.os = { time = os.time, clock = os.clock, date = os.date }
  env._G = env
  env._VERSION = _VERSION
  return env
end

-- ---- loading ------------------------------------------------------------------------------

-- Compiles code (text only) into a function whose globals are a fresh sandbox env, with the
-- JIT off for it and everything it defines. Returns fn, env | nil, message.
function S.compile(code, chunkname)
  if type(code) ~= "string" then return nil, "code must be a string" end
  if byte(code, 1) == 27 then return nil, "bytecode is not accepted; give Lua source text" end
  local fn, err
  if load then
    fn, err = load(code, "=" .. chunkname, "t")
  else
    fn, err = loadstring(code, "=" .. chunkname)
  end
  if not fn then return nil, err end
  local env = S.env()
  setfenv(fn, env)
  if jit_ok and jit then jit.off(fn, true) end
  return fn, env
end

-- Loads a filter module: compiles code, runs it within the limits with config as its
-- argument (`local config = ...`), and checks what it returns. Returns the module table
-- ({ on_request = f, on_response = f }) | nil, message.
-- Plain data copied so the filter owns its config: what it changes stays in it.
local function copy_data(v, seen)
  if type(v) ~= "table" then return v end
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do c[copy_data(k, seen)] = copy_data(x, seen) end
  return c
end
S.copy_data = copy_data

-- A module's top level runs once per worker and reload, and may precompute: its deadline is
-- at least LOAD_TIMEOUT_MS, so that a busy machine does not reject a config that validated.
S.LOAD_TIMEOUT_MS = 1000

function S.load(code, chunkname, config, lim)
  local fn, err = S.compile(code, chunkname)
  if not fn then return nil, err end
  local timeout = (lim and lim.timeout_ms) or limits.timeout_ms
  if timeout < S.LOAD_TIMEOUT_MS then timeout = S.LOAD_TIMEOUT_MS end
  local load_lim = { instructions = lim and lim.instructions, timeout_ms = timeout }
  local ok, mod = S.call_with(load_lim, fn, copy_data(config, {}))
  if not ok then return nil, mod end
  if type(mod) ~= "table" then
    return nil, format("must return a table with on_request and/or on_response, got %s", type(mod))
  end
  -- rawget: a metatable on the module must not run outside the hook.
  local m = { on_request = rawget(mod, "on_request"), on_response = rawget(mod, "on_response") }
  for _, name in ipairs({ "on_request", "on_response" }) do
    if m[name] ~= nil and type(m[name]) ~= "function" then
      return nil, format("%s must be a function, got %s", name, type(m[name]))
    end
  end
  if not m.on_request and not m.on_response then
    return nil, "the returned table has neither on_request nor on_response"
  end
  return m
end

-- For tests: how many ticks the last call used, and whether a call is running.
function S.state()
  return { ticks = ticks, depth = depth, tripped = tripped }
end

return S
