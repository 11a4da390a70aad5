-- meltemi.meta.worker with a stand-in for `meltemi.meta.core` (runtime/proxy/meta/meta_lua.c):
-- which listeners get a chain, host/subset resolution for ctx:route, what on_response may not
-- do, msg being read-only, failures answered through core.failed and counted, and module state
-- kept across a reload that does not touch the filter.

local H = dofile("tests/lua/helper.lua")
local dump = require "meltemi.dump"
local worker = require "meltemi.meta.worker"

-- ---- the fake core: records the verdict as C does --------------------------------------------

local v, attrs
local counters = {}
local core = {}
local function fresh() v = { sets = {}, mirrors = {} } end
function core.get(k) if v.sets[k] ~= nil then return v.sets[k] or nil end return attrs[k] end
function core.attributes() local t = {} for k, x in pairs(attrs) do t[k] = x end return t end
function core.set(k, x) if x == nil then v.sets[k] = false else v.sets[k] = x end end
function core.route(i, sub) v.route, v.subset = i, sub end
function core.mirror(i, sub) v.mirrors[#v.mirrors + 1] = { i, sub } end
function core.error(text, kind)
  if kind ~= nil and kind ~= "unspecified" and kind ~= "over_limit" then error("unknown error kind", 2) end
  v.error, v.kind = text, kind
end
function core.failed(text) v.error, v.failed = text, true end
function core.delay(ms) v.delay = ms end
function core.log() end
function core.counter(name, d, label)
  local k = name .. "{" .. label .. "}"
  counters[k] = (counters[k] or 0) + d
end
function core.now_ms() return 0 end
package.loaded["meltemi.meta.core"] = core

local SERVICES = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: hello, namespace: meta}
spec:
  hosts: [hello.meta.svc.cluster.local]
  addresses: [127.0.3.1]
  ports: [{number: 20880, name: tcp-metaprotocol-dubbo-hello}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo-hello: 20881}, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: other, namespace: meta}
spec:
  hosts: [other.meta.svc.cluster.local]
  addresses: [127.0.3.2]
  ports: [{number: 20880, name: tcp-metaprotocol-dubbo-other}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo-other: 20882}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: hello, namespace: meta}
spec:
  host: hello.meta.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
]]

local function filter(code, name)
  local pad = ("\n" .. code):gsub("\n", "\n    ")
  return "apiVersion: meltemi.io/v1alpha1\nkind: LuaFilter\nmetadata: {name: " .. (name or "f")
    .. ", namespace: meta}\nspec:\n  hosts: [hello]\n  maxInstructions: 100000\n  script: |" .. pad .. "\n"
end

local gen = 0
local function apply(code)
  local snap = H.snapshot_of({ ["se.yaml"] = SERVICES, ["f.yaml"] = filter(code) })
  local names = {}
  for n in pairs(snap.clusters) do names[#names + 1] = n end
  table.sort(names)
  local idx = {}
  for i, n in ipairs(names) do idx[n] = i end
  gen = gen + 1
  return worker.apply(dump.lua(snap), idx, gen), idx, snap
end

local function request(li, a)
  fresh()
  attrs = a or { method = "sayHello", interface = "I" }
  worker.request(li, 1, "request")
  return v
end

local function response(li, is_error)
  fresh()
  attrs = { status = is_error and "70" or "20" }
  worker.response(li, 1, is_error, "org.x.I.sayHello", 12.5)
  return v
end

-- the filtered listener is hello's (127.0.3.1 sorts first)
local LI = 1

H.test("only listeners of the filter's hosts get a chain; 2 with on_response", function()
  local chains = apply("return { on_request = function() end }")
  H.eq(chains[LI], 1, "hello"); H.eq(chains[2], nil, "other")
  chains = apply("return { on_response = function() end }")
  H.eq(chains[LI], 2, "on_response")
end)

H.test("reads, sets, route to a subset, mirror, delay, counters", function()
  local _, idx = apply([[
return { on_request = function(msg, ctx)
  if msg.method ~= "sayHello" or msg.interface ~= "I" or msg.type ~= "request" then error("fields") end
  msg:set("x-a", 1); msg:remove("secret")
  if msg:get("x-a") ~= "1" then error("set reads back") end
  ctx:route("hello", "v1"); ctx:mirror("other"); ctx:delay(5)
  ctx:counter("seen", 1, msg.method)
end }]])
  local r = request(LI)
  H.eq(r.error, nil, "no error: " .. tostring(r.error))
  H.eq(r.route, idx["outbound|20880||hello.meta.svc.cluster.local"], "route: hello's cluster")
  H.eq(r.subset, "v1", "subset"); H.eq(r.sets["x-a"], "1", "set"); H.eq(r.sets.secret, false, "removed")
  H.eq(r.mirrors[1][1], idx["outbound|20880||other.meta.svc.cluster.local"], "mirror")
  H.eq(r.delay, 5, "delay"); H.eq(counters["seen{sayHello}"], 1, "counter")
end)

H.test("an unknown subset or host is the filter's error, answered and counted", function()
  apply('return { on_request = function(msg, ctx) ctx:route("hello", msg:get("sub")) end }')
  local r = request(LI, { sub = "v9" })
  H.ok(r.failed and r.error:find("has no subset \"v9\"", 1, true), tostring(r.error))
  apply('return { on_request = function(msg, ctx) ctx:route("nowhere") end }')
  r = request(LI)
  H.ok(r.failed and r.error:find('unknown service "nowhere"', 1, true), tostring(r.error))
  H.ok((counters["filter_errors{f}"] or 0) >= 2, "counted")
end)

H.test("msg is read-only; ctx:reply is refused; reply_error takes a kind", function()
  apply('return { on_request = function(msg) msg.method = "x" end }')
  H.ok(request(LI).error:find("msg is read-only", 1, true), "read-only")
  apply('return { on_request = function(msg, ctx) ctx:reply("x") end }')
  H.ok(request(LI).error:find("ctx:reply_error", 1, true), "no ctx:reply")
  apply('return { on_request = function(msg, ctx) ctx:reply_error("full", "over_limit") end }')
  local r = request(LI)
  H.eq(r.error, "full", "text"); H.eq(r.kind, "over_limit", "kind")
  H.eq(r.failed, nil, "a deny, not a failure")
  apply('return { on_request = function(msg, ctx) ctx:reply_error("x", "bogus") end }')
  H.ok(request(LI).failed, "an unknown kind is the filter's error")
end)

H.test("on_response: request fields, duration; route/mirror/delay refused", function()
  apply([[
return { on_response = function(msg, ctx)
  if msg.interface ~= "org.x.I" or msg.method ~= "sayHello" then error("fields") end
  if msg.duration_ms ~= 12.5 then error("duration") end
  if msg.is_error then ctx:reply_error("hidden") end
  if msg.status == "20" then ctx:delay(1) end
end }]])
  H.eq(response(LI, true).error, "hidden", "replaces an error reply")
  local r = response(LI, false)
  H.ok(r.failed and r.error:find("only on_request can delay", 1, true), tostring(r.error))
end)

H.test("a runaway filter is stopped by its instruction budget", function()
  apply('return { on_request = function() while true do end end }')
  local r = request(LI)
  H.ok(r.failed and r.error:find("instruction budget exceeded", 1, true), tostring(r.error))
  H.ok((counters["filter_budget_kills{f}"] or 0) >= 1, "counted as a budget kill")
end)

H.test("module state survives a reload that does not change the filter", function()
  local code = 'local n = 0\n'
    .. 'return { on_request = function(msg, ctx) n = n + 1; ctx:counter("n", n, "s") end }'
  apply(code)
  counters["n{s}"] = nil
  request(LI); request(LI)
  apply(code)
  request(LI)
  H.eq(counters["n{s}"], 1 + 2 + 3, "n kept counting across the reload")
end)

H.run()
