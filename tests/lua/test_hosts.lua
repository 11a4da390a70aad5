-- luacheck: max line length 120
-- Host names as Istio reads them (meltemi.hosts), and the same reading in the compiler's
-- references and in ctx:route of the Redis worker: a short name is qualified with the
-- namespace of the resource that names it.
local H = dofile("tests/lua/helper.lua")
local F = dofile("tests/lua/fake_core.lua")
local hosts = require "meltemi.hosts"
local worker = require "meltemi.redis.worker"

local function same_list(got, want, what)
  H.ok(H.same(got, want), string.format("%s: expected { %s }, got { %s }", what, table.concat(want, ", "),
    table.concat(got, ", ")))
end

-- ---- the reading --------------------------------------------------------------------------

H.test("candidates: short, svc.ns, svc.ns.svc, FQDN, wildcards and IPs", function()
  local cases = {
    { "cache", "app", { "cache.app.svc.cluster.local" } },
    { "cache", nil, { "cache.default.svc.cluster.local" } },
    { "cache.redis", "app", { "cache.redis", "cache.redis.svc.cluster.local" } },
    { "cache.redis.svc", "app", { "cache.redis.svc", "cache.redis.svc.cluster.local" } },
    { "cache.redis.svc.cluster.local", "app", { "cache.redis.svc.cluster.local" } },
    { "redis.example.com", "app", { "redis.example.com" } },
    { "*", "app", { "*" } },
    { "*.example.com", "app", { "*.example.com" } },
    { "*.redis", "app", { "*.redis" } },
    { "10.0.0.1", "app", { "10.0.0.1" } },
    { "::1", "app", { "::1" } },
  }
  for _, c in ipairs(cases) do
    same_list(hosts.candidates(c[1], c[2]), c[3], c[1] .. " in " .. tostring(c[2]))
  end
end)

H.test("qualify: only short names change; wildcards and IPs stay as written", function()
  H.eq(hosts.qualify("cache", "redis"), "cache.redis.svc.cluster.local", "short")
  H.eq(hosts.qualify("cache.redis", "app"), "cache.redis", "dotted names are declared as written")
  H.eq(hosts.qualify("*", "app"), "*", "the wildcard")
  H.eq(hosts.qualify("*.example.com", "app"), "*.example.com", "a wildcard domain")
  H.eq(hosts.qualify("::1", "app"), "::1", "IPv6")
end)

H.test("resolve: the first known candidate, else nil and what was looked for", function()
  local known = { ["cache.redis.svc.cluster.local"] = true, ["cache.redis"] = true }
  H.eq(hosts.resolve(known, "cache.redis", "app"), "cache.redis", "as written wins over the completion")
  H.eq(hosts.resolve(known, "cache.redis.svc", "app"), "cache.redis.svc.cluster.local", ".svc completed")
  H.eq(hosts.resolve(known, "cache", "redis"), "cache.redis.svc.cluster.local", "short, same namespace")
  local h, looked = hosts.resolve(known, "cache", "app")
  H.eq(h, nil, "short, other namespace")
  same_list(looked, { "cache.app.svc.cluster.local" }, "looked for")
end)

-- ---- the compiler -------------------------------------------------------------------------

-- Three Redis services of namespace redis: cache (declared short), *.example.com and *.
local SERVICES = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: cache, namespace: redis}
spec:
  hosts: [cache]
  addresses: [127.0.3.1]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: wild, namespace: redis}
spec:
  hosts: ["*.example.com"]
  addresses: [127.0.3.2]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: any, namespace: redis}
spec:
  hosts: ["*"]
  addresses: [127.0.3.3]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
]]

local function dr_in(ns, host)
  return H.compile({ ["a.yaml"] = SERVICES, ["b.yaml"] = string.format([[
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: dr, namespace: %s}
spec:
  host: "%s"
]], ns, host) })
end

H.test("compiler: ServiceEntry hosts are registered qualified only when short", function()
  local snap = H.snapshot_of({ ["a.yaml"] = SERVICES })
  for _, h in ipairs({ "cache.redis.svc.cluster.local", "*.example.com", "*" }) do
    H.ok(snap.services[h], "service " .. h)
  end
end)

H.test("compiler: references resolve with the namespace of the resource that names them", function()
  local ok = {
    { "redis", "cache" }, { "app", "cache.redis" }, { "app", "cache.redis.svc" },
    { "app", "cache.redis.svc.cluster.local" }, { "app", "*.example.com" }, { "app", "*" },
  }
  for _, c in ipairs(ok) do
    local snap, errs = dr_in(c[1], c[2])
    H.ok(snap, string.format("%s in %s: %s", c[2], c[1], table.concat(errs or {}, "; ")))
  end
  local _, errs = dr_in("app", "cache")
  H.find(errs, { 'unknown service "cache"', "looked for cache.app.svc.cluster.local" }, "short name, other namespace")
  _, errs = dr_in("app", "a.example.com")
  H.find(errs, 'unknown service "a.example.com"', "a concrete name is not matched against a wildcard")
end)

-- ---- the worker (ctx:route) ---------------------------------------------------------------

local function filter(ns, host, code)
  return string.format([[
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {name: f, namespace: %s}
spec:
  hosts: ["%s"]
  script: |
    %s
]], ns, host, code)
end

local ROUTE = [[return { on_request = function(msg, ctx) ctx:route(msg.key) end }]]
local CACHE = "outbound|6379||cache.redis.svc.cluster.local"
local ANY = "outbound|6379||*"

-- Compiles SERVICES + the filter and routes one GET of each key (a host name) through
-- listener li; returns key -> cluster name | false (the filter failed).
local function routes_of(ns, host, li, keys)
  local snap = H.snapshot_of({ ["a.yaml"] = SERVICES, ["b.yaml"] = filter(ns, host, ROUTE) })
  F.apply(worker, snap)
  local out = {}
  for _, k in ipairs(keys) do
    local v = F.request(worker, li, { "get", k })
    out[k] = not v.error and F.cluster_name(v) or false
  end
  return out
end

H.test("worker: ctx:route reads hosts as the compiler does, in the filter's namespace", function()
  -- listeners sort by name: 127.0.3.1 (cache) is 1
  local r = routes_of("redis", "cache", 1, { "cache", "cache.redis", "cache.redis.svc", "*", "*.example.com" })
  H.eq(r["cache"], CACHE, "short name in the filter's namespace")
  H.eq(r["cache.redis"], CACHE, "svc.ns")
  H.eq(r["cache.redis.svc"], CACHE, "svc.ns.svc")
  H.eq(r["*"], ANY, "the wildcard service")
  H.eq(r["*.example.com"], "outbound|6379||*.example.com", "a wildcard domain")
  r = routes_of("app", "cache.redis", 1, { "cache", "cache.redis" })
  H.eq(r["cache"], false, "short name from a filter of another namespace: unknown")
  H.eq(r["cache.redis"], CACHE, "namespaced name from another namespace")
end)

H.run()
