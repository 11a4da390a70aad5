-- Every class of configuration error is reported as file:line: Kind/name: path: message,
-- luacheck: max line length 120 (expected messages are quoted whole)
-- at the line of the offending field, and all problems are collected in one pass.
local H = dofile("tests/lua/helper.lua")
local compiler = require "meltemi.compiler"

local SE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: redis-single
  namespace: redis
spec:
  hosts:
    - redis-single.redis.svc.cluster.local
  addresses:
    - 127.0.0.10
  ports:
    - number: 6379
      name: tcp-redis
  resolution: STATIC
  endpoints:
    - address: 127.0.0.1
      ports:
        tcp-redis: 6390
]]

H.test("unknown kind and unsupported apiVersion", function()
  local e = H.errors_of({ ["a.yaml"] = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
    .. "---\napiVersion: networking.istio.io/v9\nkind: ServiceEntry\nmetadata:\n  name: s\n" })
  H.find(e, 'a.yaml:2: Widget/w: kind: unknown kind "Widget" (apiVersion "example.com/v1")', "kind")
  H.find(e, 'a.yaml:6: ServiceEntry/s: apiVersion: ServiceEntry is not served at "networking.istio.io/v9" (use ',
    "apiVersion")
end)

H.test("kind and apiVersion are required", function()
  local e = H.errors_of({ ["a.yaml"] = "metadata:\n  name: x\n" })
  H.find(e, "a.yaml:1: ?/x: kind: required field missing", "kind")
  H.find(e, "a.yaml:1: ?/x: apiVersion: required field missing", "apiVersion")
end)

H.test("a document that is not a mapping", function()
  local e = H.errors_of({ ["a.yaml"] = "- 1\n- 2\n" })
  H.find(e, "a.yaml:1: yaml: a document must be a mapping (a Kubernetes object), got a list", "list doc")
end)

H.test("unknown field, with the field's line and full path", function()
  local e = H.errors_of({ ["se.yaml"] = SE:gsub("      name: tcp%-redis\n", "      name: tcp-redis\n      nmae: x\n") })
  H.eq(#e, 1, "one error: " .. table.concat(e, "; "))
  H.eq(e[1], "se.yaml:14: ServiceEntry/redis-single: spec.ports[0].nmae: unknown field", "message")
end)

H.test("wrong type", function()
  local e = H.errors_of({ ["se.yaml"] = SE:gsub("number: 6379", 'number: "6379"') })
  H.find(e, 'se.yaml:12: ServiceEntry/redis-single: spec.ports[0].number: expected an integer, got string "6379"',
    "string for int")
  e = H.errors_of({ ["se.yaml"] = SE:gsub("  hosts:\n    %- redis%-single.redis.svc.cluster.local\n",
    "  hosts: redis-single.redis.svc.cluster.local\n") })
  H.find(e, 'se.yaml:7: ServiceEntry/redis-single: spec.hosts: expected a list, got string', "scalar for list")
  e = H.errors_of({ ["se.yaml"] = SE:gsub("number: 6379", "number: 70000") })
  H.find(e, "se.yaml:12: ServiceEntry/redis-single: spec.ports[0].number: 70000 is out of range (from 1 to 65535)",
    "range")
end)

H.test("bad enum value", function()
  local e = H.errors_of({ ["se.yaml"] = SE:gsub("resolution: STATIC", "resolution: STATIK") })
  H.find(e, 'se.yaml:14: ServiceEntry/redis-single: spec.resolution: "STATIK" is not one of NONE, STATIC, DNS, '
    .. 'DNS_ROUND_ROBIN', "enum")
end)

H.test("missing required field, reported at its parent", function()
  local e = H.errors_of({ ["rd.yaml"] = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata:
  name: rd
  namespace: redis
spec:
  trafficPolicy:
    connectionPool:
      redis:
        auth:
          secret:
            usernameField: user
]] })
  H.find(e, "rd.yaml:6: RedisDestination/rd: spec.host: required field missing", "host")
  H.find(e, "rd.yaml:11: RedisDestination/rd: spec.trafficPolicy.connectionPool.redis.auth.secret.name: "
    .. "required field missing", "secret name")
  e = H.errors_of({ ["x.yaml"] = "apiVersion: v1\nkind: Secret\nmetadata:\n  namespace: a\n" })
  H.find(e, "x.yaml:3: Secret/?: metadata.name: required field missing", "name")
end)

H.test("dangling Secret references in RedisDestination and RedisService", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["z.yaml"] = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata:
  name: redis-single
  namespace: redis
spec:
  host: redis-single.redis.svc.cluster.local
  trafficPolicy:
    connectionPool:
      redis:
        auth:
          secret:
            name: no-such-secret
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-single
  namespace: redis
spec:
  host: [redis-single]
  settings:
    auth:
      secret:
        name: other-secret
]] })
  H.find(e, 'z.yaml:13: RedisDestination/redis-single: spec.trafficPolicy.connectionPool.redis.auth.secret.name: '
    .. 'Secret "no-such-secret" not found in namespace redis', "RedisDestination")
  H.find(e, 'z.yaml:25: RedisService/redis-single: spec.settings.auth.secret.name: Secret "other-secret" not '
    .. 'found in namespace redis', "RedisService")
end)

H.test("a Secret in another namespace does not count", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["s.yaml"] = [[
apiVersion: v1
kind: Secret
metadata: {name: pw, namespace: default}
stringData: {password: x}
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: rd, namespace: redis}
spec:
  host: redis-single
  trafficPolicy: {connectionPool: {redis: {auth: {secret: {name: pw}}}}}
]] })
  H.find(e, 'Secret "pw" not found in namespace redis', "namespace scoped")
end)

H.test("Secret keys: passwordField must exist; password else token", function()
  local base = SE .. [[
---
apiVersion: v1
kind: Secret
metadata: {name: pw, namespace: redis}
stringData: {token: tok, user: alice}
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: rd, namespace: redis}
spec:
  host: redis-single
  trafficPolicy: {connectionPool: {redis: {auth: {secret: {name: pw, usernameField: user}}}}}
]]
  local s = H.snapshot_of({ ["a.yaml"] = base })
  local auth = s.clusters["outbound|6379||redis-single.redis.svc.cluster.local"].redis.auth
  H.eq(auth.password, "tok", "token when there is no password"); H.eq(auth.username, "alice", "usernameField")
  local e = H.errors_of({ ["a.yaml"] = base:gsub("usernameField: user", "passwordField: pass") })
  H.find(e, 'a.yaml:30: RedisDestination/rd: spec.trafficPolicy.connectionPool.redis.auth.secret.passwordField: '
    .. 'Secret pw has no key "pass"', "missing passwordField key")
  e = H.errors_of({ ["a.yaml"] = base:gsub("token: tok", "other: tok") })
  H.find(e, 'Secret pw has neither a "password" nor a "token" key', "neither")
end)

H.test("plain and secret together are rejected", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["r.yaml"] = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: rs, namespace: redis}
spec:
  host: [redis-single]
  settings:
    auth:
      plain: {password: a}
      secret: {name: b}
]] })
  H.find(e, "r.yaml:9: RedisService/rs: spec.settings.auth.secret: only one of plain, secret may be set", "one of")
end)

H.test("route hosts must be known services; short names resolve in the namespace", function()
  local rs = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: rs, namespace: redis}
spec:
  host: [redis-single.redis]
  redis:
    - match: {key: {prefix: a}}
      route: {host: redis-single}
    - route:
        host: redis-nowhere
]]
  local e = H.errors_of({ ["se.yaml"] = SE, ["rs.yaml"] = rs })
  H.eq(#e, 1, "only the unknown host: " .. table.concat(e, "; "))
  H.eq(e[1], 'rs.yaml:10: RedisService/rs: spec.redis[1].route.host: unknown service "redis-nowhere" (looked for '
    .. 'redis-nowhere.redis.svc.cluster.local); define it with a ServiceEntry or a Service', "message")
  local s = H.snapshot_of({ ["se.yaml"] = SE, ["rs.yaml"] = rs:gsub("redis%-nowhere", "redis-single.redis.svc") })
  local r = H.listener(s, "127.0.0.10:6379").redis.routes
  H.eq(r[1].cluster, "outbound|6379||redis-single.redis.svc.cluster.local", "short name resolved")
  H.eq(r[2].cluster, "outbound|6379||redis-single.redis.svc.cluster.local", "name.ns.svc resolved")
end)

H.test("a route to a port the service does not have", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["rs.yaml"] = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: rs, namespace: redis}
spec:
  host: [redis-single]
  redis:
    - route: {host: redis-single, port: 7000}
]] })
  H.find(e, "rs.yaml:7: RedisService/rs: spec.redis[0].route.port: service redis-single.redis.svc.cluster.local "
    .. "has no port 7000", "port")
end)

H.test("two services on one address:port", function()
  local other = SE:gsub("name: redis%-single", "name: other"):gsub("redis%-single%.redis", "other.redis")
  local e = H.errors_of({ ["a.yaml"] = SE, ["b.yaml"] = other })
  H.eq(#e, 1, "one error: " .. table.concat(e, "; "))
  H.eq(e[1], "b.yaml:12: ServiceEntry/other: spec.ports[0].number: 127.0.0.10:6379 is already used by "
    .. "ServiceEntry/redis-single (a.yaml:1)", "message")
end)

H.test("a wildcard listener overlaps specific addresses on the same port", function()
  local e = H.errors_of({ ["a.yaml"] = SE, ["b.yaml"] = [[
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: sc, namespace: redis}
spec:
  ingress:
    - port: {number: 6379, name: tcp-redis}
      defaultEndpoint: 127.0.0.1:6390
]] })
  H.find(e, "b.yaml:6: Sidecar/sc: spec.ingress[0].port.number: 0.0.0.0:6379 overlaps 127.0.0.10:6379", "overlap")
end)

H.test("the same host defined twice", function()
  local e = H.errors_of({ ["a.yaml"] = SE, ["b.yaml"] = SE:gsub("name: redis%-single", "name: again")
    :gsub("127%.0%.0%.10", "127.0.0.11") })
  H.find(e, "b.yaml:8: ServiceEntry/again: spec.hosts[0]: host redis-single.redis.svc.cluster.local is already "
    .. "defined by ServiceEntry/redis-single (a.yaml:1)", "host")
end)

H.test("durations: 100ms, 1.5s, 2m, 1h accepted; others rejected", function()
  local function rs(timeout)
    return SE .. "---\napiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\nmetadata: {name: rs, namespace: "
      .. "redis}\nspec:\n  host: [redis-single]\n  settings:\n    opTimeout: " .. timeout .. "\n"
  end
  for text, ms in pairs({ ["100ms"] = 100, ["1.5s"] = 1500, ["2m"] = 120000, ["1h"] = 3600000, ["1m30s"] = 90000 }) do
    local s = H.snapshot_of({ ["a.yaml"] = rs(text) })
    H.eq(H.listener(s, "127.0.0.10:6379").redis.op_timeout_ms, ms, text)
  end
  for _, bad in ipairs({ "5", "1.5 s", "s", "-1s", "1d", '"10"' }) do
    local e = H.errors_of({ ["a.yaml"] = rs(bad) })
    H.find(e, { "a.yaml:26: RedisService/rs: spec.settings.opTimeout: invalid duration",
      "(use e.g. 100ms, 1.5s, 2m, 1h)" }, bad)
  end
end)

H.test("authTimeout / idleTimeout: defaults, values, validation, warning without auth", function()
  local function rs(settings)
    return SE .. "---\napiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\nmetadata: {name: rs, namespace: "
      .. "redis}\nspec:\n  host: [redis-single]\n  settings:\n" .. settings
  end
  local auth = "    auth: {plain: {password: pw}}\n"
  local r = H.listener(H.snapshot_of({ ["a.yaml"] = rs(auth) }), "127.0.0.10:6379").redis
  H.eq(r.auth_timeout_ms, 10000, "auth timeout default"); H.eq(r.idle_timeout_ms, 0, "idle timeout off by default")
  local s = H.snapshot_of({ ["a.yaml"] = rs(auth .. "    authTimeout: 1500ms\n    idleTimeout: 1h\n") })
  r = H.listener(s, "127.0.0.10:6379").redis
  H.eq(r.auth_timeout_ms, 1500, "authTimeout"); H.eq(r.idle_timeout_ms, 3600000, "idleTimeout")
  H.none(s.warnings, "authTimeout", "no warning with auth set")
  r = H.listener(H.snapshot_of({ ["a.yaml"] = rs(auth .. "    authTimeout: 0s\n") }), "127.0.0.10:6379").redis
  H.eq(r.auth_timeout_ms, 0, "0s turns it off")
  s = H.snapshot_of({ ["a.yaml"] = rs("    authTimeout: 5s\n") })
  H.find(s.warnings, "spec.settings.authTimeout: ignored: clients need no password here", "no auth: warned")
  for _, f in ipairs({ "authTimeout", "idleTimeout" }) do
    local e = H.errors_of({ ["a.yaml"] = rs("    " .. f .. ": 10\n") })
    H.find(e, "spec.settings." .. f .. ": invalid duration", f)
  end
end)

H.test("deniedCommands: normalised names, unknown commands refused", function()
  local function rs(settings)
    return SE .. "---\napiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\nmetadata: {name: rs, namespace: "
      .. "redis}\nspec:\n  host: [redis-single]\n  settings:\n" .. settings
  end
  local denied = "    deniedCommands: [FLUSHALL, \"Config Set\", object|encoding]\n"
  local r = H.listener(H.snapshot_of({ ["a.yaml"] = rs(denied) }), "127.0.0.10:6379").redis
  H.eq(r.denied_commands[1], "flushall", "lower case"); H.eq(r.denied_commands[2], "config|set", "space -> |")
  H.eq(r.denied_commands[3], "object|encoding", "as written")
  r = H.listener(H.snapshot_of({ ["a.yaml"] = rs("    opTimeout: 1s\n") }), "127.0.0.10:6379").redis
  H.eq(r.denied_commands, nil, "none by default")
  for _, bad in ipairs({ "flushal", "config nosuch", "debug segfault", "get x y" }) do
    local e = H.errors_of({ ["a.yaml"] = rs("    deniedCommands: [\"" .. bad .. "\"]\n") })
    H.find(e, { "spec.settings.deniedCommands[0]", "is not a Redis 7.0 command" }, bad)
  end
end)

H.test("faults: DELAY needs a delay; bad type", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["f.yaml"] = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: rs, namespace: redis}
spec:
  host: [redis-single]
  faults:
    - type: DELAY
      percentage: {value: 10}
    - type: SLOW
]] })
  H.find(e, "f.yaml:7: RedisService/rs: spec.faults[0].delay: required for a DELAY fault", "delay")
  H.find(e, 'f.yaml:9: RedisService/rs: spec.faults[1].type: "SLOW" is not one of DELAY, ERROR', "type")
end)

H.test("duplicate prefixes and two catch-alls", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["r.yaml"] = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: rs, namespace: redis}
spec:
  host: [redis-single]
  redis:
    - match: {key: {prefix: a}}
      route: {host: redis-single}
    - match: {key: {prefix: a}}
      route: {host: redis-single}
    - route: {host: redis-single}
    - route: {host: redis-single}
]] })
  H.find(e, 'r.yaml:9: RedisService/rs: spec.redis[1].match: prefix "a" is already routed by redis[0]', "prefix")
  H.find(e, "r.yaml:12: RedisService/rs: spec.redis[3]: a second catch-all route (the first is redis[2])", "catch-all")
end)

H.test("invalid base64 in a Secret; a broken Secret is not reported again where used", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["s.yaml"] = [[
apiVersion: v1
kind: Secret
metadata: {name: pw, namespace: redis}
data:
  password: "not base64!"
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: rd, namespace: redis}
spec:
  host: redis-single
  trafficPolicy: {connectionPool: {redis: {auth: {secret: {name: pw}}}}}
]] })
  H.eq(#e, 1, "one error: " .. table.concat(e, "; "))
  H.eq(e[1], "s.yaml:5: Secret/pw: data.password: invalid base64: illegal base64 data at input byte 3", "message")
end)

H.test("an object defined twice", function()
  local e = H.errors_of({ ["a.yaml"] = SE, ["b.yaml"] = SE })
  H.find(e, "b.yaml:4: ServiceEntry/redis-single: metadata.name: ServiceEntry redis/redis-single is defined twice; "
    .. "the other is at a.yaml:1", "duplicate")
end)

H.test("all problems of all files are collected, sorted by file and line", function()
  local e = H.errors_of({
    ["a.yaml"] = "a: [1\n",
    ["b.yaml"] = SE:gsub("resolution: STATIC", "resolution: X"):gsub("name: tcp%-redis", "name: 5"),
    ["c.yaml"] = "apiVersion: v1\nkind: Nope\nmetadata: {name: n}\n",
  })
  H.eq(#e, 4, "errors: " .. table.concat(e, "; "))
  H.ok(e[1]:match("^a%.yaml:2: yaml: "), e[1])
  H.ok(e[2]:match("^b%.yaml:13: ServiceEntry/redis%-single: spec%.ports%[0%]%.name: expected a string"), e[2])
  H.ok(e[3]:match("^b%.yaml:14: "), e[3]); H.ok(e[4]:match("^c%.yaml:2: Nope/n: kind: unknown kind"), e[4])
end)

H.test("ServiceEntry rules: endpoints need STATIC or DNS; STATIC needs IPs", function()
  local e = H.errors_of({ ["a.yaml"] = SE:gsub("  resolution: STATIC\n", "") })
  H.find(e, "a.yaml:14: ServiceEntry/redis-single: spec.endpoints: endpoints need resolution STATIC or DNS", "NONE")
  e = H.errors_of({ ["a.yaml"] = SE:gsub("address: 127.0.0.1", "address: redis.example.com") })
  H.find(e, 'a.yaml:16: ServiceEntry/redis-single: spec.endpoints[0].address: "redis.example.com" is not an IP',
    "STATIC")
  local s = H.snapshot_of({ ["a.yaml"] = SE:gsub("address: 127.0.0.1", "address: redis.example.com")
    :gsub("resolution: STATIC", "resolution: DNS") })
  local cl = s.clusters["outbound|6379||redis-single.redis.svc.cluster.local"]
  H.eq(cl.resolution, "DNS", "DNS kept"); H.eq(cl.endpoints[1].address, "redis.example.com", "hostname kept")
end)

H.test("listener addresses must be single IPs", function()
  local e = H.errors_of({ ["a.yaml"] = SE:gsub("127%.0%.0%.10", "10.0.0.0/24") })
  H.find(e, 'a.yaml:10: ServiceEntry/redis-single: spec.addresses[0]: "10.0.0.0/24" is a range', "cidr")
  local s = H.snapshot_of({ ["a.yaml"] = SE:gsub("127%.0%.0%.10", "127.0.0.10/32") })
  H.eq(s.listeners[1].name, "127.0.0.10:6379", "/32 is one address")
end)

H.test("a missing directory is an error, not a crash", function()
  local snap, e = compiler.compile_dir("tests/lua/no-such-dir")
  H.eq(snap, nil, "no snapshot")
  H.eq(e[1], "tests/lua/no-such-dir: No such file or directory (cannot read the configuration directory)", "message")
end)

H.test("metaprotocol: unknown protocol is an error; ApplicationProtocol names the codec", function()
  local svc = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: rpc, namespace: demo}
spec:
  hosts: [rpc.demo.svc.cluster.local]
  addresses: [127.0.0.30]
  ports:
    - {number: 9090, name: tcp-metaprotocol-videopacket-server}
    - {number: 9091, name: tcp-metaprotocol-thrift-hello}
    - {number: 9092, name: tcp-metaprotocol-dubbo}
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
]]
  local e = H.errors_of({ ["a.yaml"] = svc })
  H.find(e, 'a.yaml:8: ServiceEntry/rpc: spec.ports[0].name: unknown application protocol "videopacket"', "unknown")
  local ap = [[
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: videopacket, namespace: istio-system}
spec:
  protocol: videopacket
  codec: aeraki.meta_protocol.codec.videopacket
]]
  -- A codec that is not built in is refused (its ports would silently be plain TCP).
  e = H.errors_of({ ["a.yaml"] = svc, ["b.yaml"] = ap })
  H.find(e, 'b.yaml:6: ApplicationProtocol/videopacket: spec.codec: codec "aeraki.meta_protocol.codec.videopacket" '
    .. "is not built in", "codec not built in")
  local s = H.snapshot_of({ ["a.yaml"] = svc, ["b.yaml"] = ap:gsub("codec%.videopacket", "codec.dubbo") })
  local l = H.listener(s, "127.0.0.30:9090")
  H.eq(l.protocol, "metaprotocol", "protocol"); H.eq(l.codec, "dubbo", "codec from ApplicationProtocol")
  H.eq(H.listener(s, "127.0.0.30:9091").codec, "thrift", "built-in thrift")
  H.eq(H.listener(s, "127.0.0.30:9092").codec, "dubbo", "built-in dubbo")
  H.eq(l.metaprotocol.routes[1].route[1].cluster, "outbound|9090||rpc.demo.svc.cluster.local", "default route")
end)


H.test("a schema error does not hide a dangling reference in the same object", function()
  local e = H.errors_of({ ["se.yaml"] = SE, ["d.yaml"] = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: redis-single, namespace: redis}
spec:
  host: redis-single.redis.svc.cluster.local
  trafficPolicy:
    connectionPool:
      redis:
        mode: CLUSTR
        auth:
          secret: {name: nope}
]] })
  H.find(e, 'd.yaml:9: RedisDestination/redis-single: spec.trafficPolicy.connectionPool.redis.mode: '
    .. '"CLUSTR" is not one of PROXY, CLUSTER', "enum")
  H.find(e, 'd.yaml:11: RedisDestination/redis-single: spec.trafficPolicy.connectionPool.redis.auth.secret.name: '
    .. 'Secret "nope" not found in namespace redis', "dangling secret")
end)

H.test("RedisService localRateLimit: command names are checked, compiled lower case", function()
  local rs = [[
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: redis-single, namespace: redis}
spec:
  host: [redis-single.redis.svc.cluster.local]
  localRateLimit:
    tokenBucket: {maxTokens: 5, fillInterval: 1s}
    conditions:
    - match: {commands: [GET, GTE]}
      tokenBucket: {maxTokens: 1, tokensPerFill: 2, fillInterval: 1m}
    - match: {commandClass: WRITE}
      tokenBucket: {maxTokens: 3, fillInterval: 1h}
]]
  local e = H.errors_of({ ["se.yaml"] = SE, ["rs.yaml"] = rs })
  H.find(e, 'rs.yaml:9: RedisService/redis-single: spec.localRateLimit.conditions[0].match.commands[1]: '
    .. 'unknown Redis command "GTE"', "unknown command")
  local s = H.snapshot_of({ ["se.yaml"] = SE, ["rs.yaml"] = rs:gsub("GTE", "mget") })
  local rl = H.listener(s, "127.0.0.10:6379").redis.local_rate_limit
  H.ok(H.same(rl, { token_bucket = { max_tokens = 5, tokens_per_fill = 1, fill_interval_ms = 1000 },
    conditions = {
      { commands = { "get", "mget" }, token_bucket = { max_tokens = 1, tokens_per_fill = 2,
        fill_interval_ms = 60000 } },
      { command_class = "WRITE", token_bucket = { max_tokens = 3, tokens_per_fill = 1,
        fill_interval_ms = 3600000 } } } }), "compiled")
  e = H.errors_of({ ["se.yaml"] = SE, ["rs.yaml"] = rs:gsub("{commands: %[GET, GTE%]}",
    "{commands: [GET], commandClass: READ}") })
  H.find(e, "match.commands: only one of commandClass, commands may be set", "one of")
end)

H.run()
