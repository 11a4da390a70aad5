-- Redis policies run by meltemi.redis.worker (docs/lua-bridge.md): prefix routes, faults and
-- mirrors compiled from RedisService, checked through a recording stand-in for meltemi.core.
-- luacheck: max line length 120
local H = dofile("tests/lua/helper.lua")
local F = dofile("tests/lua/fake_core.lua")
local worker = require "meltemi.redis.worker"

local BLOG = "tests/lua/fixtures/blog/"
local SINGLE = "outbound|6379||redis-single.redis.svc.cluster.local"
local CLUSTER = "outbound|6379||redis-cluster.redis.svc.cluster.local"

local function blog(step)
  local snap, errors = H.compile_paths({ BLOG .. "services.yaml", BLOG .. step })
  if not snap then error("errors:\n  " .. table.concat(errors, "\n  "), 2) end
  return snap
end

-- Four Redis services a..d on 127.0.1.x, and a RedisService on "a" (spec given as YAML text,
-- indented under spec:).
local SERVICES = {}
for i, name in ipairs({ "a", "b", "c", "d" }) do
  SERVICES[#SERVICES + 1] = string.format([[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: %s, namespace: app}
spec:
  hosts: [%s.app.svc.cluster.local]
  addresses: [127.0.1.%d]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: %d}}]
]], name, name, i, 7000 + i)
end

local function cluster(name) return "outbound|6379||" .. name .. ".app.svc.cluster.local" end

local function with_redis_service(spec)
  local rs = "apiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\nmetadata: {name: rs, namespace: app}\n"
    .. "spec:\n  host: [a]\n" .. spec
  return H.snapshot_of({ ["a.yaml"] = table.concat(SERVICES, "---\n"), ["b.yaml"] = rs })
end

-- Listener index of service a (listeners are sorted by name: 127.0.1.1:6379 first).
local LA = 1

local function routed(verdict) return F.cluster_name(verdict) end

-- ---- routes ----------------------------------------------------------------------------------

H.test("blog prefix routing: keys beginning with cluster go to redis-cluster, others to redis-single", function()
  local snap = blog("step4-prefix.yaml")
  local chains = F.apply(worker, snap)
  H.eq(snap.listeners[2].service, "redis-cluster.redis.svc.cluster.local", "listener 2")
  H.ok(chains[2], "the redis-cluster listener has a chain")
  H.eq(chains[1], nil, "redis-single (no RedisService) stays in C")
  local v = F.request(worker, 2, { "set", "cluster-test-route", "x" }, { is_write = true })
  H.eq(v.route, nil, "cluster-test-route stays on the listener's own cluster (no core.route call)")
  H.eq(v.error, nil, "no error")
  v = F.request(worker, 2, { "set", "test-route", "x" }, { is_write = true })
  H.eq(routed(v), SINGLE, "test-route goes to redis-single")
  v = F.request(worker, 2, { "get", "clusterX" })
  H.eq(v.route, nil, "prefix match is on bytes: clusterX matches cluster")
  v = F.request(worker, 2, { "get", "Cluster-x" })
  H.eq(routed(v), SINGLE, "case-sensitive by default")
  local idx, strip = worker.route_key(2, "cluster-1")
  H.eq(F.names[idx], CLUSTER, "route_key: cluster-1"); H.eq(strip, 0, "no strip")
  idx, strip = worker.route_key(2, "other")
  H.eq(F.names[idx], SINGLE, "route_key: other"); H.eq(strip, 0, "no strip")
  idx, strip = worker.route_key(1, "cluster-1")
  H.eq(F.names[idx], SINGLE, "route_key on a listener without chain: its default"); H.eq(strip, 0, "strip")
end)

H.test("longest prefix wins, catch-all takes the rest and keyless commands, removePrefix strips", function()
  local snap = with_redis_service([[
  redis:
  - match: {key: {prefix: "user:"}}
    route: {host: b}
  - match: {key: {prefix: "user:vip:", removePrefix: true}}
    route: {host: c}
  - match: {key: {prefix: "u"}}
    route: {host: a}
  - route: {host: d}
]])
  F.apply(worker, snap)
  local v = F.request(worker, LA, { "get", "user:vip:42" })
  H.eq(routed(v), cluster("c"), "user:vip: beats user:"); H.eq(v.strip, #"user:vip:", "strip")
  v = F.request(worker, LA, { "get", "user:1" })
  H.eq(routed(v), cluster("b"), "user:"); H.eq(v.strip, nil, "no strip without removePrefix")
  v = F.request(worker, LA, { "get", "ux" })
  H.eq(v.route, nil, "u -> a, the listener's own cluster: no core.route call")
  v = F.request(worker, LA, { "get", "zzz" })
  H.eq(routed(v), cluster("d"), "catch-all")
  v = F.request(worker, LA, { "get", "" })
  H.eq(routed(v), cluster("d"), "empty key: catch-all")
  v = F.request(worker, LA, { "dbsize" }, { key = false })
  H.eq(routed(v), cluster("d"), "keyless command: catch-all")
  v = F.request(worker, LA, { "get", "USER:vip:1" })
  H.eq(routed(v), cluster("d"), "case-sensitive")
  local idx, strip = worker.route_key(LA, "user:vip:7")
  H.eq(F.names[idx], cluster("c"), "route_key"); H.eq(strip, 9, "route_key strip")
end)

H.test("without a catch-all, unmatched keys stay on the service's own cluster", function()
  local snap = with_redis_service([[
  redis:
  - match: {key: {prefix: "b"}}
    route: {host: b}
]])
  F.apply(worker, snap)
  H.eq(routed(F.request(worker, LA, { "get", "bee" })), cluster("b"), "prefix b")
  H.eq(F.request(worker, LA, { "get", "x" }).route, nil, "unmatched: default")
end)

H.test("caseInsensitive: prefixes match whatever the case, strip keeps the key's own bytes", function()
  local snap = with_redis_service([[
  settings: {caseInsensitive: true}
  redis:
  - match: {key: {prefix: "Tenant-A:", removePrefix: true}}
    route: {host: b}
  - match: {key: {prefix: "x.y*z"}}
    route: {host: c}
  - route: {host: a}
]])
  F.apply(worker, snap)
  for _, key in ipairs({ "tenant-a:1", "TENANT-A:1", "TeNaNt-a:1" }) do
    local v = F.request(worker, LA, { "get", key })
    H.eq(routed(v), cluster("b"), key); H.eq(v.strip, 9, key .. " strip")
  end
  H.eq(F.request(worker, LA, { "get", "tenant-b:1" }).route, nil, "other tenant: default")
  H.eq(routed(F.request(worker, LA, { "get", "X.Y*Z1" })), cluster("c"), "magic characters are literal")
  H.eq(F.request(worker, LA, { "get", "xzy*z" }).route, nil, ". is not a wildcard")
end)

H.test("prefix patterns: every byte literal, NUL included", function()
  local route = require "meltemi.policies.redis_route"
  H.eq(route.prefix_pattern("a.b%", false), "^a%.b%%", "escaped")
  H.eq(route.prefix_pattern("aB1", true), "^[aA][bB]1", "case classes")
  H.ok(("k\0x"):find(route.prefix_pattern("k\0", false)), "NUL prefix matches")
  H.ok(not ("kx"):find(route.prefix_pattern("k\0", false)), "NUL prefix does not match other bytes")
end)

H.test("a listener whose RedisService changes nothing makes no Lua call (0% faults and mirrors too)", function()
  local snap = with_redis_service([[
  redis:
  - route: {host: a}
    mirror:
    - route: {host: b}
      percentage: {value: 0}
  faults:
  - type: ERROR
    percentage: {value: 0}
]])
  local chains = F.apply(worker, snap)
  H.eq(chains[LA], nil, "no chain")
  local idx, strip = worker.route_key(LA, "k")
  H.eq(F.names[idx], cluster("a"), "route_key: default"); H.eq(strip, 0, "strip")
  snap = with_redis_service("  redis:\n  - route: {host: b}\n")
  chains = F.apply(worker, snap)
  H.ok(chains[LA], "a single catch-all to another service needs the chain")
  H.eq(routed(F.request(worker, LA, { "get", "k" })), cluster("b"), "routed")
end)

-- ---- faults ----------------------------------------------------------------------------------

H.test("blog faults: about half of 10,000 GETs answer Fault Injected: Error; SET never", function()
  F.apply(worker, blog("step7-faults.yaml"))
  math.randomseed(7)
  local errors = 0
  for i = 1, 10000 do
    local v = F.request(worker, 2, { "get", "k" .. i })
    if v.error then
      errors = errors + 1
      H.eq(v.error, "Fault Injected: Error", "error text")
      H.eq(v.route, nil, "nothing routed after the error")
    end
  end
  H.ok(errors > 4600 and errors < 5400, "50% of 10000 should land in 4600..5400, got " .. errors)
  for i = 1, 200 do
    H.eq(F.request(worker, 2, { "set", "k" .. i, "v" }, { is_write = true }).error, nil, "SET is not faulted")
  end
end)

H.test("faults without commands hit every command but AUTH and PING; DELAY holds and forwards", function()
  local snap = with_redis_service([[
  redis:
  - route: {host: b}
  faults:
  - type: DELAY
    delay: 250ms
    commands: [SET]
  - type: ERROR
]])
  F.apply(worker, snap)
  H.eq(F.request(worker, LA, { "get", "k" }).error, "Fault Injected: Error", "GET")
  H.eq(F.request(worker, LA, { "incr", "k" }).error, "Fault Injected: Error", "INCR")
  H.eq(F.request(worker, LA, { "dbsize" }, { key = false }).error, "Fault Injected: Error", "DBSIZE")
  local v = F.request(worker, LA, { "auth", "secret" }, { key = false })
  H.eq(v.error, nil, "AUTH exempt"); H.eq(routed(v), cluster("b"), "AUTH routed")
  H.eq(F.request(worker, LA, { "ping" }, { key = false }).error, nil, "PING exempt")
  -- SET: the DELAY fault is 100% and listed first for SET, so SET is delayed, never failed.
  for _ = 1, 50 do
    v = F.request(worker, LA, { "set", "k", "v" }, { is_write = true })
    H.eq(v.error, nil, "SET not failed"); H.eq(v.delay, 250, "SET delayed 250 ms")
    H.eq(routed(v), cluster("b"), "delayed SET still routed")
  end
end)

H.test("at most one fault per command: two 50% faults on GET split the draws (Envoy's rule)", function()
  local snap = with_redis_service([[
  faults:
  - type: DELAY
    delay: 1s
    percentage: {value: 50}
    commands: [get]
  - type: ERROR
    percentage: {value: 50}
    commands: [GET]
]])
  F.apply(worker, snap)
  math.randomseed(11)
  local delayed, failed = 0, 0
  for _ = 1, 4000 do
    local v = F.request(worker, LA, { "get", "k" })
    if v.delay then delayed = delayed + 1 end
    if v.error then failed = failed + 1 end
    H.ok(not (v.delay and v.error), "never both")
  end
  H.eq(delayed + failed, 4000, "every GET gets exactly one fault")
  H.ok(delayed > 1800 and delayed < 2200, "about half delayed: " .. delayed)
  H.eq(F.request(worker, LA, { "set", "k", "v" }).delay, nil, "SET untouched")
end)

H.test("faults naming AUTH explicitly do apply to AUTH", function()
  F.apply(worker, with_redis_service("  faults:\n  - type: ERROR\n    commands: [AUTH]\n"))
  H.eq(F.request(worker, LA, { "auth", "pw" }, { key = false }).error, "Fault Injected: Error", "AUTH")
  H.eq(F.request(worker, LA, { "get", "k" }).error, nil, "GET untouched")
end)

-- ---- mirrors ---------------------------------------------------------------------------------

H.test("blog mirroring: every command to redis-cluster is also sent to redis-single", function()
  F.apply(worker, blog("step6-mirror.yaml"))
  local v = F.request(worker, 2, { "set", "test-traffic-mirroring", "x" }, { is_write = true })
  H.eq(#v.mirrors, 1, "one mirror"); H.eq(F.names[v.mirrors[1]], SINGLE, "mirrored to redis-single")
  H.eq(v.route, nil, "primary stays the listener's own cluster")
  v = F.request(worker, 2, { "get", "test-traffic-mirroring" })
  H.eq(#v.mirrors, 1, "reads are mirrored too without excludeReadCommands")
end)

H.test("mirror percentage and excludeReadCommands, per route", function()
  local snap = with_redis_service([[
  redis:
  - match: {key: {prefix: "w:"}}
    route: {host: a}
    mirror:
    - route: {host: c}
      excludeReadCommands: true
  - route: {host: a}
    mirror:
    - route: {host: b}
      percentage: {value: 30}
]])
  F.apply(worker, snap)
  math.randomseed(3)
  local n = 0
  for i = 1, 10000 do
    local v = F.request(worker, LA, { "set", "k" .. i, "v" }, { is_write = true })
    if #v.mirrors == 1 then
      n = n + 1
      H.eq(F.names[v.mirrors[1]], cluster("b"), "mirror target")
    end
  end
  H.ok(n > 2700 and n < 3300, "30% of 10000 should land in 2700..3300, got " .. n)
  local v = F.request(worker, LA, { "get", "w:1" })
  H.eq(#v.mirrors, 0, "read on w: not mirrored")
  v = F.request(worker, LA, { "set", "w:1", "v" }, { is_write = true })
  H.eq(#v.mirrors, 1, "write on w: mirrored"); H.eq(F.names[v.mirrors[1]], cluster("c"), "to c")
end)

H.test("fault error wins over mirrors: nothing is mirrored for an answered command", function()
  local snap = with_redis_service([[
  redis:
  - route: {host: a}
    mirror:
    - route: {host: b}
  faults:
  - type: ERROR
    commands: [get]
]])
  F.apply(worker, snap)
  local v = F.request(worker, LA, { "get", "k" })
  H.eq(v.error, "Fault Injected: Error", "faulted"); H.eq(#v.mirrors, 0, "no mirror")
  v = F.request(worker, LA, { "set", "k", "v" }, { is_write = true })
  H.eq(#v.mirrors, 1, "SET mirrored")
end)

-- ---- hot path ---------------------------------------------------------------------------------

H.test("the policy path allocates nothing per command", function()
  local snap = with_redis_service([[
  settings: {caseInsensitive: true}
  redis:
  - match: {key: {prefix: "cluster", removePrefix: true}}
    route: {host: b}
    mirror:
    - route: {host: c}
      percentage: {value: 50}
  - route: {host: a}
    mirror:
    - route: {host: d}
      excludeReadCommands: true
  faults:
  - type: DELAY
    delay: 1ms
    percentage: {value: 10}
    commands: [get]
  - type: ERROR
    percentage: {value: 1}
]])
  local noop = function() end
  local quiet = { route = noop, strip = noop, error = noop, reply = noop, delay = noop, mirror = noop,
    log = noop, counter = noop, nargs = function() return 2 end, arg = noop, set_arg = noop,
    now_ms = function() return 0 end }
  package.loaded["meltemi.core"] = quiet
  F.apply(worker, snap)
  local keys = { "cluster-1", "CLUSTER-2", "other", "x" }
  local cmds = { "get", "set", "incr", "ping" }
  local function drive(n)
    for i = 1, n do worker.request(LA, cmds[i % 4 + 1], keys[i % 4 + 1], 2, i % 2 == 0, 1) end
  end
  drive(100000) -- warm up: the JIT allocates its traces (GC objects) while compiling this loop
  collectgarbage("collect")
  collectgarbage("stop")
  local before = collectgarbage("count")
  drive(100000)
  local grew = collectgarbage("count") - before
  collectgarbage("restart")
  package.loaded["meltemi.core"] = F.core
  F.apply(worker, snap)
  H.ok(grew < 1, string.format("100000 commands allocated %.1f KiB", grew))
end)

-- ---- apply -----------------------------------------------------------------------------------

H.test("apply replaces the previous generation and rejects a source that is not data", function()
  F.apply(worker, blog("step4-prefix.yaml"))
  H.ok(worker.chain(2), "chain")
  local chains = F.apply(worker, blog("step2.yaml"))
  H.eq(chains[2], nil, "step 2 has no routes: no chain any more")
  H.eq(worker.chain(2), nil, "old chain dropped")
  H.eq(worker.generation(), F.generation, "generation")
  local ok, err = pcall(worker.apply, "return os.exit(3)", {}, 9)
  H.ok(not ok and err:find("snapshot does not run", 1, true), tostring(err))
  ok, err = pcall(worker.apply, string.dump(function() return {} end), {}, 9)
  H.ok(not ok and err:find("must be text", 1, true), tostring(err))
end)

H.run()

-- ---- chains C decides alone (worker.lua's c_route_table, lua_bridge.c's croute_match) -----------

-- What lua_bridge.c does with a c_route_table: the first route (longest prefix first) whose
-- prefix the key starts with (ASCII letters folded when case-insensitive), else the catch-all.
local function c_match(t, key)
  if key ~= nil then
    for _, r in ipairs(t.list) do
      local p = r[1]
      local head = key:sub(1, #p)
      if #key >= #p and (head == p or (t.case_insensitive and head:lower() == p:lower())) then
        return r[2], r[3]
      end
    end
  end
  return t.catch_idx, t.catch_strip
end

local function c_routes_of(snap)
  F.generation = F.generation + 1
  local _, _, c_routes = worker.apply(require("meltemi.dump").lua(snap), F.cluster_index(snap),
    F.generation)
  return c_routes
end

H.test("prefix routes alone are handed to C as data that routes every key as Lua does", function()
  for _, ci in ipairs({ false, true }) do
    local snap = with_redis_service((ci and "  settings: {caseInsensitive: true}\n" or "") .. [[
  redis:
  - match: {key: {prefix: "user:"}}
    route: {host: b}
  - match: {key: {prefix: "user:vip:", removePrefix: true}}
    route: {host: c}
  - match: {key: {prefix: "u"}}
    route: {host: a}
  - route: {host: d}
  faults:
  - type: ERROR
    percentage: {value: 0}
]])
    local t = c_routes_of(snap)[LA]
    H.ok(t, "a 0% fault cannot fire: the chain is routes only")
    H.eq(t.case_insensitive, ci, "case_insensitive")
    H.eq(#t.list, 3, "three prefixes, the catch-all apart")
    H.eq(t.list[1][1], "user:vip:", "longest first")
    for _, key in ipairs({ "user:vip:42", "USER:VIP:1", "user:1", "uX", "u", "", "zzz", "Us", false }) do
      local k = key or nil
      local idx, strip = worker.route_key(LA, k or "")
      if k == nil then idx, strip = t.catch_idx, t.catch_strip end
      local cidx, cstrip = c_match(t, k)
      H.eq(cidx, idx, "cluster of " .. tostring(key) .. (ci and " (ci)" or ""))
      H.eq(cstrip, strip, "strip of " .. tostring(key))
    end
  end
end)

H.test("a fault that can fire, a mirror or a filter keeps the chain in Lua", function()
  local routes = "  redis:\n  - match: {key: {prefix: \"x\"}}\n    route: {host: b}\n"
  H.ok(c_routes_of(with_redis_service(routes))[LA], "routes alone: C")
  H.eq(c_routes_of(with_redis_service(routes .. [[
  faults:
  - type: ERROR
    percentage: {value: 1}
]]))[LA], nil, "a 1% fault: Lua")
  H.eq(c_routes_of(with_redis_service([[
  redis:
  - route: {host: b}
    mirror:
    - route: {host: c}
      percentage: {value: 5}
]]))[LA], nil, "a 5% mirror: Lua")
  H.ok(c_routes_of(with_redis_service([[
  redis:
  - route: {host: b}
    mirror:
    - route: {host: c}
      percentage: {value: 0}
]]))[LA], "a 0% mirror never fires: C")
end)
