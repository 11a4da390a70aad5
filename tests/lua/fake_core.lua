-- A stand-in for the C module `meltemi.core` (runtime/proxy/redis/lua_bridge.c) for tests of
-- meltemi.redis.worker, the policies and user filters: it records every call into a verdict the
-- way C does (last route / error / reply wins, mirrors add up, set_arg replaces), so tests
-- can assert what C would carry out. Loaded with dofile; installs itself in
-- package.loaded["meltemi.core"].

local dump = require "meltemi.dump"

local F = {}

local v          -- the verdict of the current command
local args = {}  -- the current command's arguments (1 = command name)
F.logs, F.counters = {}, {}
F.clock = 0

local function fresh()
  return { route = nil, strip = nil, error = nil, reply = nil, has_reply = false, delay = nil,
    mirrors = {}, sets = {}, calls = {} }
end
v = fresh()

local function rec(name, a)
  v.calls[#v.calls + 1] = name
  return a
end

local function check_int(x, what)
  if type(x) ~= "number" or x ~= math.floor(x) then error(what .. ": expected an integer", 2) end
end

local core = {}

function core.route(i)
  check_int(i, "core.route")
  if i < 1 or i > F.n_clusters then error("core.route: no cluster " .. i, 2) end
  v.route = rec("route", i)
end

function core.strip(n)
  check_int(n, "core.strip")
  v.strip = rec("strip", n > 0 and n or nil)
end

function core.error(text)
  if type(text) ~= "string" then error("core.error: expected a string", 2) end
  v.error, v.reply, v.has_reply = rec("error", text), nil, false
end

function core.reply(value)
  local t = type(value)
  if t ~= "nil" and t ~= "string" and t ~= "number" and t ~= "boolean" and t ~= "table" then
    error("core.reply: cannot send a " .. t, 2)
  end
  v.reply, v.has_reply, v.error = rec("reply", value), true, nil
end

function core.delay(ms)
  check_int(ms, "core.delay")
  v.delay = rec("delay", ms > 0 and ms or nil)
end

function core.mirror(i)
  check_int(i, "core.mirror")
  if i < 1 or i > F.n_clusters then error("core.mirror: no cluster " .. i, 2) end
  v.mirrors[#v.mirrors + 1] = rec("mirror", i)
end

function core.nargs() return #args end

function core.arg(i)
  check_int(i, "core.arg")
  if v.sets[i] then return v.sets[i] end
  return args[i]
end

function core.set_arg(i, s)
  check_int(i, "core.set_arg")
  if type(s) ~= "string" then error("core.set_arg: expected a string", 2) end
  if i < 2 or i > #args then error("core.set_arg: argument " .. i .. " out of range", 2) end
  v.sets[i] = rec("set_arg", s)
end

function core.log(level, text)
  F.logs[#F.logs + 1] = { level = level, text = text }
end

function core.counter(name, delta, label)
  local k = name .. "{" .. (label or "") .. "}"
  F.counters[k] = (F.counters[k] or 0) + (delta or 1)
end

function core.now_ms() return F.clock end

F.core = core
F.n_clusters = 0
package.loaded["meltemi.core"] = core

-- ---- driving the worker ---------------------------------------------------------------------

-- cluster_index as C builds it: 1-based, in the order of the sorted cluster names.
function F.cluster_index(snap)
  local names = {}
  for name in pairs(snap.clusters) do names[#names + 1] = name end
  table.sort(names)
  local idx = {}
  for i, n in ipairs(names) do idx[n] = i end
  F.n_clusters = #names
  F.names = names
  return idx
end

-- Applies a compiled snapshot to worker through its text form, as C does. Returns chains,
-- cluster_index.
F.generation = 0
function F.apply(worker, snap)
  local idx = F.cluster_index(snap)
  F.generation = F.generation + 1
  return worker.apply(dump.lua(snap), idx, F.generation), idx
end

-- Runs one command: argv = { "get", "key", ... } (command lower case). opts: key (default
-- argv[2]; false for keyless), is_write, conn_id. Returns the verdict; an error raised by the
-- worker (C would answer "ERR meltemi: policy error") is in verdict.raised.
function F.request(worker, li, argv, opts)
  opts = opts or {}
  v = fresh()
  args = argv
  local key = argv[2]
  if opts.key ~= nil then key = opts.key or nil end
  local ok, err = pcall(worker.request, li, argv[1], key, #argv, opts.is_write or false,
    opts.conn_id or 1)
  if not ok then v.raised = err end
  local out = v
  v = fresh()
  return out
end

-- The cluster name a verdict routes to (nil: the listener's default).
function F.cluster_name(verdict)
  return verdict.route and F.names[verdict.route]
end

function F.reset_stats()
  F.logs, F.counters = {}, {}
end

return F
