-- luacheck: no max line length (inline YAML fixtures and expected messages)
-- Per-kind behaviour beyond the blog: DestinationRule, MetaRouter, Sidecar, LuaFilter,
-- Service/EndpointSlice details, RedisDestination pools, v1 List and multi-document files.
local H = dofile("tests/lua/helper.lua")

local THRIFT = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: hello, namespace: thrift}
spec:
  hosts: [hello.thrift.svc.cluster.local]
  addresses: [127.0.0.40]
  ports: [{number: 9090, name: tcp-metaprotocol-thrift-hello}]
  resolution: STATIC
  endpoints:
    - {address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-hello: 9190}, labels: {version: v1}}
    - {address: 127.0.0.2, ports: {tcp-metaprotocol-thrift-hello: 9190}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: hello, namespace: thrift}
spec:
  host: hello
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: user}
    connectionPool:
      tcp: {maxConnections: 10, connectTimeout: 250ms, tcpKeepalive: {time: 1m}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 1m, maxEjectionPercent: 50}
  subsets:
    - {name: v1, labels: {version: v1}}
    - name: v2
      labels: {version: v2}
      trafficPolicy: {loadBalancer: {simple: RANDOM}}
]]

local ROUTER = [[
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: hello, namespace: thrift}
spec:
  hosts: [hello.thrift.svc.cluster.local]
  routes:
    - name: by-method
      match:
        attributes:
          method: {exact: sayHello}
          user: {}
      route:
        - {destination: {host: hello, subset: v1}, weight: 20}
        - {destination: {host: hello, subset: v2}, weight: 80}
      mirror: {host: hello, subset: v2}
      mirrorPercentage: {value: 10}
      requestMutation: [{key: foo, value: bar}]
    - name: rest
      route: [{destination: {host: hello}}]
  localRateLimit:
    tokenBucket: {maxTokens: 10, fillInterval: 1s}
    conditions:
      - match: {attributes: {method: {prefix: say}}}
        tokenBucket: {maxTokens: 2, tokensPerFill: 2, fillInterval: 100ms}
]]

H.test("DestinationRule: subsets, consistent hash, pool, outlier detection", function()
  local s = H.snapshot_of({ ["a.yaml"] = THRIFT })
  local cl = s.clusters["outbound|9090||hello.thrift.svc.cluster.local"]
  H.eq(cl.protocol, "metaprotocol", "protocol"); H.eq(cl.codec, "thrift", "codec")
  H.eq(cl.lb_policy, "RING_HASH", "ring hash"); H.eq(cl.hash_key, "user", "hash key")
  H.eq(cl.max_connections, 10, "max connections"); H.eq(cl.connect_timeout_ms, 250, "connect timeout")
  H.eq(cl.tcp_keepalive.time_s, 60, "keepalive time"); H.eq(cl.tcp_keepalive.probes, 9, "default probes")
  H.eq(cl.outlier_detection.consecutive_errors, 3, "outlier"); H.eq(cl.outlier_detection.base_ejection_time_ms, 60000, "ejection")
  H.eq(cl.subsets.v1.labels.version, "v1", "subset labels"); H.eq(cl.subsets.v2.policy.lb_policy, "RANDOM", "subset policy")
  H.eq(cl.endpoints[2].labels.version, "v2", "endpoint labels"); H.eq(cl.endpoints[1].port, 9190, "endpoint port")
end)

H.test("DestinationRule: a subset selecting nothing warns; duplicates and dangling hosts error", function()
  local s = H.snapshot_of({ ["a.yaml"] = THRIFT:gsub("{name: v1, labels: {version: v1}}", "{name: v1, labels: {version: v9}}") })
  H.find(s.warnings, { "DestinationRule/hello: spec.subsets[0].labels: subset \"v1\" selects no endpoint" }, "warning")
  local e = H.errors_of({ ["a.yaml"] = THRIFT, ["b.yaml"] = THRIFT:match("%-%-%-\n(.*)$"):gsub("name: hello, namespace", "name: again, namespace") })
  H.find(e, "b.yaml:5: DestinationRule/again: spec.host: host hello.thrift.svc.cluster.local already has a DestinationRule: DestinationRule/hello (a.yaml:13)", "dup")
  e = H.errors_of({ ["a.yaml"] = THRIFT:gsub("host: hello\n", "host: nowhere\n") })
  H.find(e, 'a.yaml:17: DestinationRule/hello: spec.host: unknown service "nowhere"', "dangling")
end)

H.test("MetaRouter: matches, weighted subsets, mirror, mutations, rate limits", function()
  local s = H.snapshot_of({ ["a.yaml"] = THRIFT, ["r.yaml"] = ROUTER })
  local mp = H.listener(s, "127.0.0.40:9090").metaprotocol
  local r = mp.routes[1]
  H.eq(r.name, "by-method", "name"); H.eq(#r.match, 2, "two attributes")
  H.eq(r.match[1].key, "method", "sorted by key"); H.eq(r.match[1].exact, "sayHello", "exact")
  H.eq(r.match[2].present, true, "empty match means present")
  H.eq(r.route[1].subset, "v1", "subset"); H.eq(r.route[2].weight, 80, "weight")
  H.eq(r.route[1].cluster, "outbound|9090||hello.thrift.svc.cluster.local", "cluster")
  H.eq(r.mirror.subset, "v2", "mirror"); H.eq(r.mirror.percentage, 10, "mirror percentage")
  H.eq(r.request_mutation[1].key, "foo", "mutation")
  H.eq(mp.routes[2].route[1].weight, 100, "single destination weighs 100")
  H.eq(mp.local_rate_limit.token_bucket.fill_interval_ms, 1000, "bucket")
  H.eq(mp.local_rate_limit.token_bucket.tokens_per_fill, 1, "tokensPerFill default")
  H.eq(mp.local_rate_limit.conditions[1].match[1].prefix, "say", "condition")
end)

H.test("MetaRouter: Aeraki's validation rules", function()
  local function errs(a, b) return H.errors_of({ ["a.yaml"] = THRIFT, ["r.yaml"] = ROUTER:gsub(a, b) }) end
  H.find(errs("weight: 80", "weight: 70"),
    "r.yaml:12: MetaRouter/hello: spec.routes[0].route: weights add up to 90; they must add up to 100", "weights")
  H.find(errs("      mirror: {host: hello, subset: v2}\n", ""),
    "r.yaml:15: MetaRouter/hello: spec.routes[0].mirrorPercentage: set without a mirror", "mirror")
  H.find(errs("key: foo, value: bar", "key: foo, value: ''"),
    "r.yaml:17: MetaRouter/hello: spec.routes[0].requestMutation[0].value: must not be empty", "mutation")
  H.find(errs("method: {exact: sayHello}", "method: {regex: 'say(Hello'}"),
    "r.yaml:10: MetaRouter/hello: spec.routes[0].match.attributes.method.regex: regex has an unclosed (", "regex")
  H.find(errs("method: {exact: sayHello}", "method: {regex: a, exact: b}"),
    "r.yaml:10: MetaRouter/hello: spec.routes[0].match.attributes.method.regex: only one of exact, prefix, regex may be set", "one of")
  H.find(errs("subset: v1}", "subset: v7}"), 'r.yaml:13: MetaRouter/hello: spec.routes[0].route[0].destination.subset: subset "v7" of hello.thrift.svc.cluster.local is not defined by a DestinationRule', "subset")
  local e = H.errors_of({ ["r.yaml"] = "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata: {name: x}\nspec:\n  hosts: [a]\n" })
  H.find(e, "r.yaml:4: MetaRouter/x: spec: needs routes, localRateLimit or globalRateLimit", "empty router")
end)

H.test("MetaRouter: a route after a match-everything route is unreachable (warning)", function()
  local router = ROUTER:gsub("  localRateLimit:", "    - name: never\n      route: [{destination: {host: hello}}]\n  localRateLimit:")
  local s = H.snapshot_of({ ["a.yaml"] = THRIFT, ["r.yaml"] = router })
  H.find(s.warnings, "r.yaml:20: MetaRouter/hello: spec.routes[2]: unreachable: routes[1] before it matches every request", "unreachable")
end)

H.test("Sidecar: ingress listeners to defaultEndpoint; egress kept", function()
  local s = H.snapshot_of({ ["s.yaml"] = [[
apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: default, namespace: app}
spec:
  ingress:
    - port: {number: 16379, protocol: TCP, name: tcp-redis}
      bind: 127.0.0.1
      defaultEndpoint: 127.0.0.1:6379
    - port: {number: 18080, name: tcp-plain}
  egress:
    - hosts: ["./*", "istio-system/*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
]] })
  local l = H.listener(s, "127.0.0.1:16379")
  H.eq(l.protocol, "redis", "protocol"); H.eq(l.direction, "inbound", "direction"); H.eq(l.cluster, "inbound|16379||", "cluster")
  H.eq(l.redis.routes[1].cluster, "inbound|16379||", "redis routes to the app")
  local cl = s.clusters["inbound|16379||"]
  H.eq(cl.endpoints[1].address, "127.0.0.1", "endpoint"); H.eq(cl.endpoints[1].port, 6379, "endpoint port")
  H.eq(H.listener(s, "0.0.0.0:18080").protocol, "tcp", "default bind, plain tcp")
  H.eq(s.clusters["inbound|18080||"].endpoints[1].port, 18080, "default endpoint port")
  H.eq(s.sidecars[1].egress[1].hosts[2], "istio-system/*", "egress kept")
  H.eq(s.sidecars[1].outbound_traffic_policy, "REGISTRY_ONLY", "policy kept")
  local e = H.errors_of({ ["s.yaml"] = "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {name: d}\nspec:\n  egress:\n    - hosts: [foo]\n  ingress:\n    - port: {number: 1}\n      defaultEndpoint: localhost\n" })
  H.find(e, 's.yaml:6: Sidecar/d: spec.egress[0].hosts[0]: "foo" must be namespace/dnsName', "egress host")
  H.find(e, 's.yaml:9: Sidecar/d: spec.ingress[0].defaultEndpoint: "localhost" is not IP:PORT', "endpoint")
end)

H.test("LuaFilter: code compiled at config time, hosts resolved, ordered", function()
  local f = [[
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {name: NAME, namespace: thrift}
spec:
  hosts: [hello]
  order: ORDER
  config: {limit: 3}
  code: |
    return {
      on_request = function(msg, ctx) return nil end,
    }
]]
  local s = H.snapshot_of({ ["a.yaml"] = THRIFT, ["f.yaml"] = f:gsub("NAME", "b"):gsub("ORDER", "1") .. "---\n"
    .. f:gsub("NAME", "a"):gsub("ORDER", "5") })
  H.eq(#s.lua_filters, 2, "filters"); H.eq(s.lua_filters[1].name, "b", "order 1 first")
  H.eq(s.lua_filters[1].hosts[1], "hello.thrift.svc.cluster.local", "host"); H.eq(s.lua_filters[1].config.limit, 3, "config")
  local e = H.errors_of({ ["a.yaml"] = THRIFT, ["f.yaml"] = f:gsub("NAME", "x"):gsub("ORDER", "1"):gsub("end,", "end end,") })
  H.find(e, "f.yaml:8: LuaFilter/x: spec.code: does not compile: LuaFilter/x:2:", "syntax error")
end)

H.test("Service: several ports need names; ExternalName; headless; not-ready endpoints", function()
  local svc = [[
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 127.0.0.50
  ports:
    - {name: tcp-redis-cache, port: 6379, targetPort: 16379}
    - {name: tcp-other, port: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web, version: v1}
addressType: IPv4
ports: [{name: tcp-redis-cache, port: 16379}]
endpoints:
  - addresses: [127.0.0.1]
  - addresses: [127.0.0.2]
    conditions: {ready: false}
]]
  local s = H.snapshot_of({ ["a.yaml"] = svc })
  local cl = s.clusters["outbound|6379||web.shop.svc.cluster.local"]
  H.eq(#cl.endpoints, 1, "not-ready endpoint skipped"); H.eq(cl.endpoints[1].port, 16379, "port from slice")
  H.eq(cl.endpoints[1].labels.version, "v1", "slice labels on endpoints")
  H.eq(cl.endpoints[1].labels["kubernetes.io/service-name"], nil, "Kubernetes labels dropped")
  H.eq(#s.clusters["outbound|8080||web.shop.svc.cluster.local"].endpoints, 0, "slice lists no such port")
  H.find(s.warnings, "has no endpoints", "empty cluster warning")
  local e = H.errors_of({ ["a.yaml"] = svc:gsub("name: tcp%-other, ", "") })
  H.find(e, "a.yaml:8: Service/web: spec.ports[1].name: a Service with several ports must name each of them", "names")
  s = H.snapshot_of({ ["a.yaml"] = "apiVersion: v1\nkind: Service\nmetadata: {name: ext}\nspec:\n  type: ExternalName\n  externalName: redis.example.com\n  ports: [{port: 6379, name: tcp-redis}]\n" })
  cl = s.clusters["outbound|6379||ext.default.svc.cluster.local"]
  H.eq(cl.resolution, "DNS", "ExternalName is DNS"); H.eq(cl.endpoints[1].address, "redis.example.com", "name")
  s = H.snapshot_of({ ["a.yaml"] = svc:gsub("127%.0%.0%.50", "None") })
  H.find(s.warnings, "headless Service (clusterIP: None): no listener is bound", "headless")
  H.eq(#s.listeners, 0, "no listener")
end)

H.test("an EndpointSlice for a Service that does not exist warns", function()
  local s = H.snapshot_of({ ["a.yaml"] = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: x\n  labels: {kubernetes.io/service-name: ghost}\naddressType: IPv4\n" })
  H.find(s.warnings, "a.yaml:5: EndpointSlice/x: metadata.labels: no Service ghost in namespace default", "orphan")
end)

H.test("RedisDestination: tcp pool, discovery endpoints, no-redis-port warning", function()
  local se = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: r}\nspec:\n  hosts: [r.default.svc.cluster.local]\n  addresses: [127.0.0.60]\n  ports: [{number: 7000, name: tcp-redis}, {number: 80, name: http}]\n  resolution: STATIC\n  endpoints: [{address: 127.0.0.1}]\n"
  local rd = "---\napiVersion: redis.aeraki.io/v1alpha1\nkind: RedisDestination\nmetadata: {name: r}\nspec:\n  host: r\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 4, connectTimeout: 1s}\n      redis: {mode: CLUSTER, discoveryEndpoints: ['127.0.0.1:7001', '[::1]:7002']}\n"
  local s = H.snapshot_of({ ["a.yaml"] = se .. rd })
  local cl = s.clusters["outbound|7000||r.default.svc.cluster.local"]
  H.eq(cl.max_connections, 4, "pool"); H.eq(cl.connect_timeout_ms, 1000, "timeout"); H.eq(cl.redis.mode, "CLUSTER", "mode")
  H.eq(cl.redis.discovery_endpoints[2].address, "::1", "v6 seed"); H.eq(cl.redis.discovery_endpoints[1].port, 7001, "seed port")
  H.eq(s.clusters["outbound|80||r.default.svc.cluster.local"].redis, nil, "http port untouched")
  local e = H.errors_of({ ["a.yaml"] = se .. rd:gsub("127.0.0.1:7001", "nohost") })
  H.find(e, 'spec.trafficPolicy.connectionPool.redis.discoveryEndpoints[0]: "nohost" is not host:port', "seed")
  s = H.snapshot_of({ ["a.yaml"] = se:gsub("tcp%-redis", "tcp-plain") .. rd })
  H.find(s.warnings, "has no redis port", "no redis port")
end)

H.test("RedisDestination sentinel: master name, addresses, auth; refused with CLUSTER mode", function()
  local se = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: r}\nspec:\n  hosts: [r.default.svc.cluster.local]\n  addresses: [127.0.0.60]\n  ports: [{number: 7000, name: tcp-redis}]\n  resolution: STATIC\n"
  local rd = "---\napiVersion: redis.aeraki.io/v1alpha1\nkind: RedisDestination\nmetadata: {name: r}\nspec:\n  host: r\n  trafficPolicy:\n    connectionPool:\n      redis:\n        sentinel: {masterName: mymaster, addresses: ['127.0.0.1:26379', '127.0.0.2:26380'], auth: {plain: {password: sp}}}\n"
  local s = H.snapshot_of({ ["a.yaml"] = se .. rd })
  local cl = s.clusters["outbound|7000||r.default.svc.cluster.local"]
  H.eq(cl.redis.sentinel.master_name, "mymaster", "master name")
  H.eq(cl.redis.sentinel.addresses[2].address, "127.0.0.2", "second sentinel")
  H.eq(cl.redis.sentinel.addresses[1].port, 26379, "sentinel port")
  H.eq(cl.redis.sentinel.auth.password, "sp", "sentinel password")
  for _, w in ipairs(s.warnings) do
    H.ok(not w:find("has no endpoints"), "a Sentinel service needs no endpoints: " .. w)
  end
  local e = H.errors_of({ ["a.yaml"] = se .. rd:gsub("redis:\n", "redis:\n        mode: CLUSTER\n") })
  H.find(e, "spec.trafficPolicy.connectionPool.redis.sentinel: Sentinel names the master of a primary/replica set: it needs mode PROXY", "cluster mode")
  e = H.errors_of({ ["a.yaml"] = se .. rd:gsub("'127.0.0.1:26379'", "'nohost'") })
  H.find(e, 'sentinel.addresses[0]: "nohost" is not host:port', "address")
  e = H.errors_of({ ["a.yaml"] = se .. rd:gsub("masterName: mymaster", "masterName: 'my master'") })
  H.find(e, "sentinel.masterName: a Sentinel master name is at most 200 characters", "name")
end)

H.test("v1 List, multi-document files and empty documents", function()
  local s = H.snapshot_of({ ["a.yaml"] = [[
---
# an empty document first
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Secret
    metadata: {name: one}
    stringData: {password: x}
  - apiVersion: v1
    kind: Secret
    metadata: {name: two}
---
---
apiVersion: v1
kind: Secret
metadata: {name: three}
...
]] })
  H.eq(#s.sources, 3, "three objects")
  H.eq(s.sources[1].name, "one", "from the List"); H.eq(s.sources[1].line, 7, "line of the item")
  H.eq(s.sources[3].name, "three", "after empty documents")
end)

H.test("an empty configuration is valid with a warning", function()
  local s, e, w = require("meltemi.compiler").compile_sources({})
  H.ok(s, "valid"); H.eq(#s.listeners, 0, "no listeners"); H.find(s.warnings, "configuration is empty", "warning")
  H.eq(e, nil, "no errors"); H.eq(w, nil, "warnings live in the snapshot")
end)

H.test("compile_dir reads only *.yaml / *.yml, not hidden files or subdirectories", function()
  local d = H.tmpdir()
  H.write(d .. "/a.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n")
  H.write(d .. "/b.yml", "apiVersion: v1\nkind: Secret\nmetadata: {name: b}\n")
  H.write(d .. "/notes.txt", "not: yaml: at all: [")
  H.write(d .. "/.hidden.yaml", "broken: [")
  os.execute("mkdir '" .. d .. "/sub.yaml'")
  local s, e = require("meltemi.compiler").compile_dir(d .. "/")
  H.ok(s, table.concat(e or {}, "; ")); H.eq(#s.sources, 2, "two objects")
  H.eq(s.sources[1].file, d .. "/a.yaml", "file names are dir/name")
  os.execute("rm -rf '" .. d .. "'")
end)

H.run()
