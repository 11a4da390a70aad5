-- meltemi.redis.worker: the Lua side of the Redis data path, in every worker's LuaJIT state
-- (docs/lua-bridge.md is the contract with runtime/proxy/redis/lua_bridge.c).
--
--   local worker = require "meltemi.redis.worker"
--   local chains = worker.apply(snapshot_source, cluster_index, generation) -- per generation
--   worker.request(li, cmd, key, nargs, is_write, conn_id)   -- per command, listeners with a chain
--   local idx, strip = worker.route_key(li, key)             -- per key of a multi-key command
--   worker.conn_closed(conn_id)
--
-- apply compiles everything a command will need: per listener a chain of faults
-- (meltemi.policies.redis_fault), routes with their mirrors (redis_route, redis_mirror) and
-- the user filters attached to its service, loaded in the sandbox (meltemi.sandbox) and
-- driven through meltemi.filter_api. request only walks those tables: without user filters
-- it allocates nothing (no table, closure or string of its own).
--
-- A filter that fails to load here (the compiler loads every filter with the same sandbox,
-- so this is rare: a load-time limit, a state under memory pressure) is logged and fails
-- closed: each command of its listeners is answered with the filter's error, as a filter
-- that fails at run time is. Other listeners and the built-in policies are unaffected.

local hosts = require "meltemi.hosts"
local sandbox = require "meltemi.sandbox"
local api = require "meltemi.filter_api"
local redis_route = require "meltemi.policies.redis_route"
local redis_fault = require "meltemi.policies.redis_fault"
local redis_mirror = require "meltemi.policies.redis_mirror"

local type, format = type, string.format
local loadstring, setfenv, pcall = loadstring, setfenv, pcall

local route_run, route_match = redis_route.run, redis_route.match
local fault_run, mirror_run = redis_fault.run, redis_mirror.run
local sandbox_call_with = sandbox.call_with
local api_begin, api_enter, api_answered, api_finish =
  api.begin, api.enter, api.answered, api.finish

local rawset = rawset
local W = {}

local chains = {}          -- listener index -> chain (only listeners that need Lua)
local defaults = {}        -- listener index -> default cluster index (every redis listener)
local generation_live = nil
local filter_cache = {}    -- identity of a filter (name, namespace, code, config) -> loaded filter
local core                 -- meltemi.core as bound by the last apply
local core_error, core_log, core_counter, core_delay

-- Errors of the last apply (filters that failed to load), for tests and introspection.
W.load_errors = {}

-- ---- snapshot loading -----------------------------------------------------------------------

-- The snapshot source is data (`return { ... }` from meltemi.dump): it runs with no globals
-- but math.huge, which dump prints for infinities.
local function load_snapshot(source)
  if type(source) ~= "string" then error("worker.apply: snapshot source must be a string", 0) end
  if source:byte(1) == 27 then error("worker.apply: snapshot source must be text", 0) end
  local fn, err = loadstring(source, "=snapshot")
  if not fn then error("worker.apply: snapshot does not load: " .. err, 0) end
  setfenv(fn, { math = { huge = math.huge } })
  local ok, snap = pcall(fn)
  if not ok then error("worker.apply: snapshot does not run: " .. tostring(snap), 0) end
  if type(snap) ~= "table" then error("worker.apply: snapshot source must return a table", 0) end
  return snap
end

local function bind_core()
  core = require("meltemi.core")
  core_error, core_log, core_counter, core_delay = core.error, core.log, core.counter, core.delay
  redis_route.bind(core)
  redis_fault.bind(core)
  redis_mirror.bind(core)
end

local function log(level, text)
  local ok = pcall(core_log, level, text)
  if not ok then io.stderr:write("meltemi: ", text, "\n") end
end

-- ---- host -> cluster for ctx:route / ctx:mirror ---------------------------------------------

-- Per service host: its Redis clusters by port, and the default cluster of its first
-- Redis listener (listeners are sorted by name).
local function index_services(snap, cluster_index)
  local services = {}
  for name, cl in pairs(snap.clusters or {}) do
    local idx = cluster_index[name]
    if idx and cl.protocol == "redis" and cl.service then
      local s = services[cl.service] or { by_port = {}, ports = {} }
      services[cl.service] = s
      -- outbound|PORT||HOST is the service's own cluster; subset-named ones are looked up
      -- by name.
      if name == format("outbound|%d||%s", cl.port or 0, cl.service) then
        s.by_port[cl.port] = idx
        s.ports[#s.ports + 1] = cl.port
      end
    end
  end
  for _, s in pairs(services) do table.sort(s.ports) end
  for _, l in ipairs(snap.listeners or {}) do
    local s = l.protocol == "redis" and l.service and services[l.service]
    if s and not s.default then s.default = cluster_index[l.cluster] end
  end
  return services
end

-- The resolver of one listener: host (+ subset) -> cluster index | nil, why. Answers are
-- cached per listener for the generation.
local function make_resolver(services, cluster_index, port)
  local cache = {}
  return function(host, ns, subset)
    local ck = (ns or "") .. "\0" .. host .. "\0" .. (subset or "")
    local hit = cache[ck]
    if hit then return hit end
    -- The compiler's reading (meltemi.hosts), in the namespace of the calling filter.
    for _, h in ipairs(hosts.candidates(host, ns)) do
      local s = services[h]
      if s then
        local idx
        if subset then
          local p = s.by_port[port] and port or s.ports[1]
          idx = cluster_index[format("outbound|%d|%s|%s", p or 0, subset, h)]
          if not idx then
            return nil, format("service %s has no routable subset %q (subsets are not separate "
              .. "clusters in this version)", h, subset)
          end
        else
          idx = s.by_port[port] or s.default or s.by_port[s.ports[1] or 0]
        end
        if idx then
          cache[ck] = idx
          return idx
        end
      end
    end
    return nil, format("unknown service %q: no Redis service of the configuration has this host", host)
  end
end

-- ---- user filters ---------------------------------------------------------------------------

local function config_identity(config)
  if config == nil then return "" end
  local ok, dump = pcall(require, "meltemi.dump")
  if not ok then return tostring(config) end
  local ok2, text = pcall(dump.lua, config)
  return ok2 and text or tostring(config)
end

-- Loads (or reuses, when unchanged since the last generation, so that a filter's module
-- state survives reloads that do not touch it) every LuaFilter of the snapshot.
-- Returns { loaded filter... } in order; a loaded filter is
--   { name, namespace, hosts = { host = true }, config, limits, on_request = f | nil,
--     on_response = f | nil, failed = msg | nil }
local function load_filters(snap)
  local cache, list = {}, {}
  W.load_errors = {}
  for _, f in ipairs(snap.lua_filters or {}) do
    local code = f.code or f.script
    local chunk = f.chunkname or ("LuaFilter/" .. tostring(f.name))
    local lim = f.limits or {}
    local id = table.concat({ tostring(f.name), tostring(f.namespace), chunk, tostring(code),
      config_identity(f.config), tostring(lim.timeout_ms), tostring(lim.instructions) }, "\0")
    local lf = filter_cache[id]
    if not lf then
      lf = { name = f.name, namespace = f.namespace, config = f.config, limits = f.limits }
      local mod, err = sandbox.load(code, chunk, f.config, f.limits)
      if mod then
        lf.on_request = mod.on_request
        lf.on_response = mod.on_response
      else
        lf.failed = "does not load: " .. err
        W.load_errors[#W.load_errors + 1] = format("filter %s %s", tostring(f.name), lf.failed)
        log("error", format("LuaFilter %s: %s (its listeners answer every command with an error)",
          tostring(f.name), lf.failed))
      end
    end
    cache[id] = lf
    lf.hosts = {}
    for _, h in ipairs(f.hosts or {}) do lf.hosts[h] = true end
    list[#list + 1] = lf
  end
  filter_cache = cache
  return list
end

local function filters_of(filters, service)
  local out = {}
  for _, f in ipairs(filters) do
    if f.hosts[service] and (f.on_request or f.on_response or f.failed) then
      out[#out + 1] = f
    end
  end
  if #out == 0 then return nil end
  return out
end

local function filter_failed(f, err, cmd)
  core_delay(0)
  core_error(format("ERR meltemi: filter %s failed: %s", f.name, err))
  log("error", format("LuaFilter %s failed on %s: %s", f.name, cmd, err))
  pcall(core_counter, "filter_errors", 1, f.name)
  -- the sandbox's limits (instructions, time, memory) stopped it: counted apart as well
  local e = tostring(err)
  if e:find(sandbox.BUDGET_EXCEEDED, 1, true) or e:find(sandbox.TIME_EXCEEDED, 1, true)
      or e:find(sandbox.MEMORY_EXCEEDED, 1, true) then
    pcall(core_counter, "filter_budget_kills", 1, f.name)
  end
end

local function run_filters(ch, filters, cmd, key, nargs, is_write, conn_id)
  local msg, ctx = api_begin(ch, cmd, key, nargs, is_write, conn_id)
  for i = 1, #filters do
    local f = filters[i]
    api_enter(f)
    local ok, err
    if f.failed then
      ok, err = false, f.failed
    elseif f.on_request then
      ok, err = sandbox_call_with(f.limits, f.on_request, msg, ctx)
    else
      ok = true
    end
    if not ok then
      filter_failed(f, err, cmd)
      break
    end
    if api_answered() then break end
  end
  api_finish()
end

-- The filters of a listener that look at replies (on_response), in order; nil when none.
local function response_filters_of(filters)
  if not filters then return nil end
  local out = {}
  for _, f in ipairs(filters) do
    if f.on_response then out[#out + 1] = f end
  end
  if #out == 0 then return nil end
  return out
end

-- ---- apply ----------------------------------------------------------------------------------

local function build_chain(l, default_idx, services, cluster_index, filters)
  local redis = l.redis or {}
  local ch = {
    name = l.name,
    service = l.service,
    default_idx = default_idx,
    faults = redis_fault.compile(redis.faults),
    route = redis_route.compile(redis, cluster_index, default_idx),
    filters = filters_of(filters, l.service),
    cluster_of = make_resolver(services, cluster_index, l.port),
  }
  ch.response_filters = response_filters_of(ch.filters)
  -- Without filters only the route looks at the key, and only at its first bytes: C need
  -- not hand over more than the longest prefix (so keys are not interned one by one).
  if not ch.filters then
    local n = 0
    for _, r in ipairs(ch.route.list or {}) do
      if #r.prefix > n then n = #r.prefix end
    end
    ch.key_limit = n
  end
  if ch.faults or ch.route.active or ch.filters then return ch end
  return nil
end

-- Replaces the previous generation entirely. Returns { [li] = true } for every listener
-- that needs Lua per command, { [li] = 2 } where a filter also wants the replies; and
-- { [li] = n } for chains that read at most the first n bytes of the key (0: not at all).
function W.apply(source, cluster_index, generation)
  local snap = load_snapshot(source)
  bind_core()
  cluster_index = cluster_index or {}
  local filters = load_filters(snap)
  local services = index_services(snap, cluster_index)
  local new_chains, new_defaults, result, key_limits = {}, {}, {}, {}
  for li, l in ipairs(snap.listeners or {}) do
    local default_idx = cluster_index[l.cluster]
    if l.protocol == "redis" and default_idx then
      new_defaults[li] = default_idx
      -- One listener's broken policy (a cluster missing from the index: a bug) costs only
      -- that listener its chain.
      local ok, ch = pcall(build_chain, l, default_idx, services, cluster_index, filters)
      if not ok then
        log("error", format("listener %s: policies not loaded, forwarding without them: %s",
          tostring(l.name), tostring(ch)))
      elseif ch then
        new_chains[li] = ch
        result[li] = ch.response_filters and 2 or true
        key_limits[li] = ch.key_limit
      end
    end
  end
  chains, defaults = new_chains, new_defaults
  generation_live = generation
  return result, key_limits
end

function W.generation()
  return generation_live
end

-- ---- per command ----------------------------------------------------------------------------

function W.request(li, cmd, key, nargs, is_write, conn_id)
  local ch = chains[li]
  if ch == nil then return end
  local faults = ch.faults
  if faults ~= nil and fault_run(faults, cmd) then return end
  local r = route_run(ch.route, key)
  local mirrors = r.mirrors
  if mirrors ~= nil then mirror_run(mirrors, is_write) end
  local filters = ch.filters
  if filters ~= nil then run_filters(ch, filters, cmd, key, nargs, is_write, conn_id) end
end

-- A reply to a command of listener li, for the filters with on_response: msg.command,
-- msg.reply (string for simple/bulk/error replies, number for integers, nil for a null,
-- the raw RESP text for arrays), msg.reply_type ("simple", "error", "integer", "bulk",
-- "null", "array"), msg.is_error. ctx:reply / ctx:reply_error replace the reply.
function W.response(li, cmd, conn_id, reply_type, reply)
  local ch = chains[li]
  if ch == nil or ch.response_filters == nil then return end
  local filters = ch.response_filters
  local msg, ctx = api_begin(ch, cmd, nil, 0, false, conn_id)
  rawset(msg, "reply", reply)
  rawset(msg, "reply_type", reply_type)
  rawset(msg, "is_error", reply_type == "error")
  for i = 1, #filters do
    local f = filters[i]
    api_enter(f)
    local ok, err = sandbox_call_with(f.limits, f.on_response, msg, ctx)
    if not ok then
      filter_failed(f, err, cmd)
      break
    end
    if api_answered() then break end
  end
  api_finish()
end

-- For multi-key commands: the cluster index and prefix strip of one key.
function W.route_key(li, key)
  local ch = chains[li]
  if ch == nil then return defaults[li], 0 end -- no chain: everything to the default
  local r = route_match(ch.route, key)
  return r.idx, r.strip
end

function W.conn_closed(conn_id)
  api.conn_closed(conn_id)
end

-- For tests: the compiled chain of a listener.
function W.chain(li)
  return chains[li]
end

return W
