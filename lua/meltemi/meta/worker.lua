-- meltemi.meta.worker: the Lua side of LuaFilters on MetaProtocol listeners (Dubbo, Thrift, any
-- codec), in every worker's LuaJIT state; runtime/proxy/meta/meta_lua.c is the C side and
-- docs/lua-filters.md the user's guide.
--
--   local worker = require "meltemi.meta.worker"
--   local chains = worker.apply(snapshot_source, cluster_index, generation)
--   worker.request(li, conn_id, msg_type)                    -- per request of a filtered listener
--   worker.response(li, conn_id, is_error, op, duration_ms)  -- per reply, when a filter has on_response
--   worker.conn_closed(conn_id)
--
-- apply loads the snapshot's filters with the workers' sandbox (meltemi.sandbox: the same
-- limits, instruction budget and wall-clock watchdog as the Redis filters) and returns
-- { [li] = 1 } for listeners whose service has filters, 2 where one also has on_response. The
-- filters read and decide through meltemi.filter_api (msg, ctx) over meltemi.meta.core.
--
-- A filter that throws, or that a limit stops, is logged and counted (Lua counters
-- filter_errors, filter_budget_kills, labelled with the filter's name), and its request is
-- answered with the codec's native error; a filter that does not load at all fails closed
-- the same way for every request of its listeners. Other listeners are unaffected.

local hosts = require "meltemi.hosts"
local sandbox = require "meltemi.sandbox"
local api = require "meltemi.filter_api"

local type, format, tostring, pcall, rawset = type, string.format, tostring, pcall, rawset
local loadstring, setfenv = loadstring, setfenv
local sandbox_call_with = sandbox.call_with
local api_begin_meta, api_enter, api_answered, api_finish =
  api.begin_meta, api.enter, api.answered, api.finish

local W = {}

local chains = {}       -- listener index -> chain
local filter_cache = {} -- identity of a filter -> loaded filter (module state survives reloads)
local core              -- meltemi.meta.core
local generation_live

W.load_errors = {}

local function load_snapshot(source)
  if type(source) ~= "string" or source:byte(1) == 27 then
    error("meta.worker.apply: snapshot source must be text", 0)
  end
  local fn, err = loadstring(source, "=snapshot")
  if not fn then error("meta.worker.apply: snapshot does not load: " .. err, 0) end
  setfenv(fn, { math = { huge = math.huge } })
  local ok, snap = pcall(fn)
  if not ok or type(snap) ~= "table" then
    error("meta.worker.apply: snapshot does not run: " .. tostring(snap), 0)
  end
  return snap
end

local function log(level, text)
  local ok = core and pcall(core.log, level, text)
  if not ok then io.stderr:write("meltemi: ", text, "\n") end
end

-- ---- host (+ subset) -> cluster index for ctx:route / ctx:mirror --------------------------

-- Per service host: its metaprotocol clusters by port (outbound|PORT||HOST) and their subsets.
local function index_services(snap, cluster_index)
  local services = {}
  for name, cl in pairs(snap.clusters or {}) do
    local idx = cluster_index[name]
    if idx and cl.protocol == "metaprotocol" and cl.service
        and name == format("outbound|%d||%s", cl.port or 0, cl.service) then
      local s = services[cl.service] or { by_port = {}, ports = {}, subsets = {} }
      services[cl.service] = s
      s.by_port[cl.port] = idx
      s.subsets[idx] = cl.subsets or {}
      s.ports[#s.ports + 1] = cl.port
    end
  end
  for _, s in pairs(services) do table.sort(s.ports) end
  return services
end

-- host, namespace, subset -> cluster index, subset | nil, why. The listener's own port first
-- (a service on several ports), else the service's lowest.
local function make_resolver(services, port)
  local cache = {}
  return function(host, ns, subset)
    local ck = (ns or "") .. "\0" .. host .. "\0" .. (subset or "")
    local hit = cache[ck]
    if hit then return hit, subset end
    for _, h in ipairs(hosts.candidates(host, ns)) do
      local s = services[h]
      if s then
        local idx = s.by_port[port] or s.by_port[s.ports[1] or 0]
        if subset and not s.subsets[idx][subset] then
          return nil, format("service %s has no subset %q (define it in a DestinationRule)", h, subset)
        end
        cache[ck] = idx
        return idx, subset
      end
    end
    return nil, format("unknown service %q: no MetaProtocol service of the configuration has "
      .. "this host", host)
  end
end

-- ---- filters ------------------------------------------------------------------------------

local function config_identity(config)
  if config == nil then return "" end
  local ok, dump = pcall(require, "meltemi.dump")
  if not ok then return tostring(config) end
  local ok2, text = pcall(dump.lua, config)
  return ok2 and text or tostring(config)
end

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
        lf.on_request, lf.on_response = mod.on_request, mod.on_response
      else
        lf.failed = "does not load: " .. err
        W.load_errors[#W.load_errors + 1] = format("filter %s %s", tostring(f.name), lf.failed)
        log("error", format("LuaFilter %s: %s (its listeners answer every request with an error)",
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

local function filters_of(filters, service, with)
  local out = {}
  for _, f in ipairs(filters) do
    if f.hosts[service] and (f[with] or f.failed) then out[#out + 1] = f end
  end
  return out
end

local function filter_failed(f, err, what)
  local e = sandbox.error_text(err)
  core.failed(format("meltemi: filter %s failed: %s", f.name, e))
  log("error", format("LuaFilter %s failed on %s: %s", f.name, what, e))
  pcall(core.counter, "filter_errors", 1, f.name)
  if e:find(sandbox.BUDGET_EXCEEDED, 1, true) or e:find(sandbox.TIME_EXCEEDED, 1, true)
      or e:find(sandbox.MEMORY_EXCEEDED, 1, true) then
    pcall(core.counter, "filter_budget_kills", 1, f.name)
  end
end

-- Runs fname (on_request / on_response) of each filter in order until one answers or fails.
local function run(filters, fname, msg, ctx, what)
  for i = 1, #filters do
    local f = filters[i]
    api_enter(f)
    local ok, err
    if f.failed then
      ok, err = false, f.failed
    else
      ok, err = sandbox_call_with(f.limits, f[fname], msg, ctx)
    end
    if not ok then
      filter_failed(f, err, what)
      return
    end
    if api_answered() then return end
  end
end

-- ---- apply / per message --------------------------------------------------------------------

function W.apply(source, cluster_index, generation)
  local snap = load_snapshot(source)
  core = require("meltemi.meta.core")
  cluster_index = cluster_index or {}
  local filters = load_filters(snap)
  local services = index_services(snap, cluster_index)
  local new_chains, result = {}, {}
  for li, l in ipairs(snap.listeners or {}) do
    if l.protocol == "metaprotocol" and l.service then
      local req = filters_of(filters, l.service, "on_request")
      local resp = filters_of(filters, l.service, "on_response")
      if #req > 0 or #resp > 0 then
        new_chains[li] = { name = l.name, service = l.service, filters = req,
          response_filters = #resp > 0 and resp or nil, cluster_of = make_resolver(services, l.port) }
        result[li] = #resp > 0 and 2 or 1
      end
    end
  end
  chains = new_chains
  generation_live = generation
  return result
end

-- One msg table per phase, refilled per message (fields only; filters cannot write it).
local req_msg = api.new_meta_msg({ type = "request", is_reply = false })
local resp_msg = api.new_meta_msg({ is_reply = true, is_error = false, status = false,
  interface = false, method = false, duration_ms = 0 })

function W.request(li, conn_id, msg_type)
  local ch = chains[li]
  if ch == nil then return end
  rawset(req_msg, "type", msg_type)
  local msg, ctx = api_begin_meta(ch, core, conn_id, "request", req_msg)
  run(ch.filters, "on_request", msg, ctx, "a request")
  api_finish()
end

-- A reply: msg.is_error, msg.status (Dubbo's status byte; nil for Thrift), msg.interface and
-- msg.method of the request it answers, msg.duration_ms since the request arrived; other
-- attributes of the reply through msg:get.
function W.response(li, conn_id, is_error, op, duration_ms)
  local ch = chains[li]
  if ch == nil or ch.response_filters == nil then return end
  local iface, method = op:match("^(.*)%.([^.]*)$")
  if not iface and op ~= "" and op ~= "?" then method = op end
  -- existing keys only (rawset of nil keeps the slot): the table never grows
  rawset(resp_msg, "is_error", is_error)
  rawset(resp_msg, "status", core.get("status"))
  rawset(resp_msg, "interface", iface ~= "" and iface or nil)
  rawset(resp_msg, "method", method)
  rawset(resp_msg, "duration_ms", duration_ms)
  local msg, ctx = api_begin_meta(ch, core, conn_id, "response", resp_msg)
  run(ch.response_filters, "on_response", msg, ctx, "a reply")
  api_finish()
end

function W.conn_closed(conn_id)
  api.conn_closed(conn_id)
end

function W.generation()
  return generation_live
end

function W.chain(li)
  return chains[li]
end

return W
