-- The Aeraki blog's Redis walk-through (tests/lua/fixtures/blog, indentation restored,
-- luacheck: max line length 120 (expected messages are quoted whole)
-- content unchanged) compiles to the listeners, clusters, routes and auth it describes.
local H = dofile("tests/lua/helper.lua")

local DIR = "tests/lua/fixtures/blog/"
local SINGLE = "outbound|6379||redis-single.redis.svc.cluster.local"
local CLUSTER = "outbound|6379||redis-cluster.redis.svc.cluster.local"

local function compile(...)
  local paths = { DIR .. "services.yaml" }
  for _, f in ipairs({ ... }) do paths[#paths + 1] = DIR .. f end
  local snap, errors = H.compile_paths(paths)
  if not snap then error("errors:\n  " .. table.concat(errors, "\n  "), 2) end
  return snap
end

H.test("services: Service + EndpointSlice and ServiceEntry give listeners and clusters", function()
  local s = compile()
  H.eq(#s.listeners, 2, "listeners")
  local l = H.listener(s, "127.0.0.10:6379")
  H.eq(l.address, "127.0.0.10", "address"); H.eq(l.port, 6379, "port"); H.eq(l.protocol, "redis", "protocol")
  H.eq(l.service, "redis-single.redis.svc.cluster.local", "service"); H.eq(l.cluster, SINGLE, "cluster")
  H.eq(l.redis.routes[1].cluster, SINGLE, "default catch-all route to its own cluster")
  H.eq(l.redis.routes[1].prefix, "", "catch-all prefix"); H.eq(l.redis.auth, nil, "no client auth")
  H.eq(l.redis.read_policy, "MASTER", "default read policy"); H.eq(l.redis.op_timeout_ms, 5000, "op timeout")
  local cl = s.clusters[SINGLE]
  H.eq(cl.name, SINGLE, "name"); H.eq(cl.resolution, "STATIC", "resolution")
  H.eq(#cl.endpoints, 1, "endpoints"); H.eq(cl.endpoints[1].address, "127.0.0.1", "endpoint address")
  H.eq(cl.endpoints[1].port, 6390, "EndpointSlice port"); H.eq(cl.redis.mode, "PROXY", "mode")
  local rc = s.clusters[CLUSTER]
  H.eq(#rc.endpoints, 2, "ServiceEntry endpoints"); H.eq(rc.endpoints[2].address, "127.0.0.2", "second")
  H.eq(rc.endpoints[2].port, 7000, "port from the endpoint's ports map")
  H.eq(H.listener(s, "127.0.0.20:6379").cluster, CLUSTER, "cluster listener")
  H.eq(s.services["redis-single.redis.svc.cluster.local"].kind, "Service", "services map")
end)

H.test("step 1: RedisDestination takes the password from the Secret, newline and all", function()
  local s = compile("step1.yaml")
  local auth = s.clusters[SINGLE].redis.auth
  H.eq(auth.password, "testredis\n", "password kept exactly as decoded")
  H.eq(auth.username, nil, "no username key")
  H.find(s.warnings, { "tests/lua/fixtures/blog/step1.yaml:8: Secret/redis-service-secret: data.password: ",
    "value ends in a newline" }, "warning")
end)

H.test("step 2: RedisService sets the client password", function()
  local s = compile("step1.yaml", "step2.yaml")
  local l = H.listener(s, "127.0.0.10:6379")
  H.eq(l.redis.auth.password, "testredis123!", "client password")
  H.eq(#l.redis.routes, 1, "no redis[]: one catch-all"); H.eq(l.redis.routes[1].cluster, SINGLE, "to itself")
  H.eq(s.clusters[SINGLE].redis.auth.password, "testredis\n", "upstream password unchanged")
end)

H.test("step 3 + 8: CLUSTER mode on an external Redis reached through an EndpointSlice", function()
  local s = compile("step3.yaml", "step8-external.yaml")
  local cl = s.clusters["outbound|6379||external-redis.redis.svc.cluster.local"]
  H.eq(cl.redis.mode, "CLUSTER", "mode"); H.eq(cl.endpoints[1].address, "10.244.0.26", "endpoint")
  H.eq(cl.endpoints[1].port, 6379, "port")
  H.find(s.warnings, { "Service/external-redis", "no clusterIP" }, "no listener warning")
  H.eq(#s.listeners, 2, "no listener for the address-less Service")
end)

H.test("step 4: prefix routing, longest prefix first, catch-all last", function()
  local s = compile("step4-prefix.yaml")
  local r = H.listener(s, "127.0.0.20:6379").redis.routes
  H.eq(#r, 2, "routes"); H.eq(r[1].prefix, "cluster", "prefix route first"); H.eq(r[1].cluster, CLUSTER, "to cluster")
  H.eq(r[2].prefix, "", "catch-all last"); H.eq(r[2].cluster, SINGLE, "to single")
  H.eq(r[1].remove_prefix, false, "removePrefix default")
end)

H.test("step 5: readPolicy REPLICA", function()
  local s = compile("step5-read-policy.yaml")
  H.eq(H.listener(s, "127.0.0.20:6379").redis.read_policy, "REPLICA", "read policy")
end)

H.test("step 6: mirroring 100% to redis-single", function()
  local s = compile("step6-mirror.yaml")
  local r = H.listener(s, "127.0.0.20:6379").redis.routes
  H.eq(#r, 1, "routes"); H.eq(r[1].cluster, CLUSTER, "primary")
  H.eq(r[1].mirrors[1].cluster, SINGLE, "mirror"); H.eq(r[1].mirrors[1].percentage, 100, "percentage")
  H.eq(r[1].mirrors[1].exclude_read_commands, false, "excludeReadCommands")
end)

H.test("step 7: 50% of GET fail, commands lower case", function()
  local s = compile("step7-faults.yaml")
  local f = H.listener(s, "127.0.0.20:6379").redis.faults
  H.eq(#f, 1, "faults"); H.eq(f[1].type, "ERROR", "type"); H.eq(f[1].percentage, 50, "percentage")
  H.eq(f[1].commands[1], "get", "command"); H.eq(f[1].delay_ms, 0, "no delay")
end)

H.test("the shipped example compiles: Secret without the newline, listener on 127.0.0.10", function()
  local snap, errors = require("meltemi.compiler").compile_dir("examples/redis-demo")
  H.ok(snap, "errors: " .. table.concat(errors or {}, "; "))
  local l = H.listener(snap, "127.0.0.10:6379")
  H.eq(l.redis.auth.password, "testredis123!", "client password")
  local cl = snap.clusters["outbound|6379||redis-single.redis.svc.cluster.local"]
  H.eq(cl.redis.auth.password, "testredis", "upstream password")
  H.eq(cl.endpoints[1].address, "127.0.0.1", "endpoint"); H.eq(cl.endpoints[1].port, 6390, "endpoint port")
  H.eq(#snap.warnings, 0, "no warnings: " .. table.concat(snap.warnings, "; "))
end)

H.run()
