-- The rule "no accepted field silently does nothing" (meltemi.fields): every field of every
-- kind's schema is declared consumed, unenforced (warns) or informational, exactly once;
-- the unenforced ones warn with file, kind/name and field; docs/configuration.md lists them.
-- luacheck: max line length 130
local H = dofile("tests/lua/helper.lua")
local C = require "meltemi.c"
local fields = require "meltemi.fields"

local KINDS = { "application_protocol", "secret", "endpoint_slice", "service_entry", "service",
  "destination_rule", "redis_destination", "redis_service", "meta_router", "sidecar", "lua_filter",
  "gateway", "peer_authentication", "authorization_policy" }

-- Warnings of a compile, whether it succeeded (snap.warnings) or not (third result).
local function warnings(files)
  local snap, _, warns = H.compile(files)
  return snap and snap.warnings or warns or {}
end

local function mods()
  local out = {}
  for _, n in ipairs(KINDS) do out[#out + 1] = require("meltemi.kinds." .. n) end
  return out
end

H.test("every schema field is consumed, warned or informational, exactly once", function()
  local problems = {}
  for _, mod in ipairs(mods()) do
    for _, path in ipairs(fields.leaves(mod.schema)) do
      local cat, d, ties = fields.classify(mod, path)
      if not cat then
        problems[#problems + 1] = string.format("%s: %s is neither consumed nor warned", mod.kind, path)
      elseif #ties > 0 then
        problems[#problems + 1] = string.format("%s: %s is both %s (%s) and %s (%s)", mod.kind, path, cat,
          d.pat, ties[1].cat, ties[1].pat)
      end
    end
  end
  H.ok(#problems == 0, table.concat(problems, "\n"))
end)

H.test("every declaration names a field of its kind (no stale entries)", function()
  local problems = {}
  for _, mod in ipairs(mods()) do
    local leaves = fields.leaves(mod.schema)
    for _, d in ipairs(fields.declarations(mod)) do
      if not d.shared then
        local hit = false
        for _, path in ipairs(leaves) do
          local segs = fields.segments(path)
          -- a declaration covers its path and everything under it: it matches a prefix
          if fields.match_len(d.segs, segs) then hit = true end
        end
        if not hit then problems[#problems + 1] = mod.kind .. ": " .. d.pat .. " matches no field" end
      end
    end
  end
  H.ok(#problems == 0, table.concat(problems, "\n"))
end)

H.test("the walker sees a field added to a schema without a declaration", function()
  local T = require "meltemi.schema"
  local mod = { kind = "X", schema = T.obj({ spec = T.obj({ a = T.str(), b = T.list(T.obj({ c = T.int() })) }) }),
    consumed = { "spec.a" } }
  H.eq(fields.classify(mod, "spec.a"), "consumed", "declared")
  H.eq(fields.classify(mod, "spec.b[].c"), nil, "undeclared")
  H.eq(table.concat(fields.leaves(mod.schema), ","), "spec.a,spec.b[].c", "leaves")
end)

local SE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: dubbo, namespace: meta}
spec:
  hosts: [dubbo.meta.svc.cluster.local]
  addresses: [127.0.0.41]
  ports: [{number: 20880, name: tcp-metaprotocol-dubbo}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
    - {address: 127.0.0.1, ports: {tcp-metaprotocol-dubbo: 20881}, weight: 3, labels: {v: "1"}}
]]

local DR = [[
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: dubbo, namespace: meta}
spec:
  host: dubbo
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: c}}}
    connectionPool: {tcp: {connectTimeout: 1s, maxConnections: 5}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s}
    tls: {mode: DISABLE}
  subsets:
    - name: v1
      labels: {v: "1"}
      trafficPolicy: {connectionPool: {tcp: {connectTimeout: 2s}}}
]]

H.test("unenforced fields warn with file, line, kind/name and field; enforced ones do not", function()
  H.snapshot_of({ ["se.yaml"] = SE, ["dr.yaml"] = DR })
  local warns = warnings({ ["se.yaml"] = SE, ["dr.yaml"] = DR })
  local want = {
    "se.yaml:9: ServiceEntry/dubbo: spec.location: accepted but not enforced:",
    "se.yaml:11: ServiceEntry/dubbo: spec.endpoints[0].weight: accepted but not enforced:",
    "dr.yaml:7: DestinationRule/dubbo: spec.trafficPolicy.loadBalancer.consistentHash.httpCookie: accepted but not enforced:",
    "dr.yaml:14: DestinationRule/dubbo: spec.subsets[0].trafficPolicy.connectionPool: accepted but not enforced:",
  }
  for _, w in ipairs(want) do H.find(warns, w, "warning") end
  H.none(warns, "connectTimeout: accepted", "connectTimeout is enforced")
  H.none(warns, "maxConnections: accepted", "maxConnections bounds MetaProtocol connections")
  H.none(warns, "tls", "tls.mode DISABLE is enforced (plain text)")
  H.none(warns, "metadata", "metadata is bookkeeping")
end)

H.test("an empty object of an unenforced field still warns; a subset's outlierDetection warns", function()
  local dr = DR:gsub("    tls: {mode: DISABLE}\n", "    tls: {mode: DISABLE}\n    tunnel: {}\n")
    :gsub("trafficPolicy: {connectionPool: {tcp: {connectTimeout: 2s}}}",
      "trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}")
  local warns = warnings({ ["se.yaml"] = SE, ["dr.yaml"] = dr })
  H.find(warns, "spec.trafficPolicy.tunnel: accepted but not enforced", "empty object")
  H.find(warns, "spec.subsets[0].trafficPolicy.outlierDetection: accepted but not enforced", "subset")
  H.none(warns, "spec.trafficPolicy.outlierDetection", "the rule's outlierDetection is enforced")
end)

H.test("TLS origination modes are enforced (runtime/core/tls.c), caCrl too", function()
  for _, mode in ipairs({ "SIMPLE", "ISTIO_MUTUAL" }) do
    local snap, errs = H.compile({ ["se.yaml"] = SE, ["dr.yaml"] = DR:gsub("mode: DISABLE", "mode: " .. mode) })
    H.ok(snap, mode .. " compiles: " .. table.concat(errs or {}, "; "))
    local any
    for _, cl in pairs(snap.clusters) do any = any or (cl.tls and cl.tls.mode == mode) end
    H.ok(any, mode .. " reaches the cluster")
    H.none(snap.warnings, "tls", mode .. ": no tls field warned")
  end
  local _, errs = H.compile({ ["se.yaml"] = SE, ["dr.yaml"] = DR:gsub("mode: DISABLE", "mode: MUTUAL") })
  H.find(errs, "mode MUTUAL needs clientCertificate and privateKey", "MUTUAL without a certificate")
  local snap = H.compile({ ["se.yaml"] = SE, ["dr.yaml"] = DR:gsub("mode: DISABLE", "mode: SIMPLE, caCrl: crl.pem") })
  H.none(snap.warnings, "caCrl", "caCrl is enforced")
  local crl
  for _, cl in pairs(snap.clusters) do crl = crl or (cl.tls and cl.tls.crl_file) end
  H.ok(crl and crl:find("crl.pem$"), "caCrl reaches the cluster")
end)

H.test("values that ask for nothing do not warn (kubectl's defaults)", function()
  local svc = [[
apiVersion: v1
kind: Service
metadata: {name: r, namespace: ns}
spec:
  clusterIP: 127.0.0.42
  clusterIPs: [127.0.0.42]
  sessionAffinity: None
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  internalTrafficPolicy: Cluster
  ports: [{name: tcp-redis, port: 6379, protocol: TCP}]
]]
  local warns = warnings({ ["svc.yaml"] = svc })
  H.none(warns, "accepted but not enforced", "defaults")
  warns = warnings({ ["svc.yaml"] = svc:gsub("sessionAffinity: None", "sessionAffinity: ClientIP")
    :gsub("protocol: TCP", "protocol: UDP") })
  H.find(warns, "spec.sessionAffinity: accepted but not enforced: no client affinity", "ClientIP")
  H.find(warns, "spec.ports[0].protocol: accepted but not enforced: only TCP is proxied", "UDP")
end)

H.test("an ApplicationProtocol naming a codec that is not built in is an error", function()
  local ap = [[
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: vp, namespace: meta}
spec: {protocol: videopacket, codec: aeraki.meta_protocol.codec.videopacket}
]]
  local se = SE:gsub("tcp%-metaprotocol%-dubbo", "tcp-metaprotocol-videopacket")
  local snap, errs = H.compile({ ["ap.yaml"] = ap, ["se.yaml"] = se })
  H.eq(snap, nil, "refused")
  H.find(errs, 'ap.yaml:4: ApplicationProtocol/vp: spec.codec: codec "aeraki.meta_protocol.codec.videopacket" '
    .. "is not built in", "codec")
  H.none(errs, "unknown application protocol", "the port is not reported a second time")
  snap = H.compile({ ["ap.yaml"] = ap:gsub("videopacket$", "dubbo"):gsub("codec%.videopacket", "codec.dubbo"),
    ["se.yaml"] = se })
  H.ok(snap, "a built-in codec under another protocol name is fine")
  H.ok(C.codec_known("thrift") and C.codec_known("aeraki.meta_protocol.codec.dubbo") ~= nil, "registry")
end)

H.test("MetaRouter globalRateLimit is enforced (no warning) and must name a cluster; gateways too", function()
  local mr = [[
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: r, namespace: meta}
spec:
  hosts: [dubbo]
  gateways: [mesh]
  globalRateLimit: {domain: d, rateLimitService: %s, match: {}, requestTimeout: 50ms, denyOnFail: true,
    descriptors: [{property: method, descriptorKey: m}]}
  routes: [{route: [{destination: {host: dubbo}}]}]
]]
  local rls = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: rls, namespace: meta}
spec:
  hosts: [rls.meta.svc.cluster.local]
  ports: [{number: 8081, name: grpc-rls}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {grpc-rls: 18081}}]
]]
  local files = { ["se.yaml"] = SE, ["rls.yaml"] = rls,
    ["mr.yaml"] = mr:format("outbound|8081||rls.meta.svc.cluster.local") }
  local warns = warnings(files)
  for _, w in ipairs(warns) do
    H.ok(not w:find("spec.gateways", 1, true), "gateways [mesh] applies: " .. w)
    H.ok(not w:find("globalRateLimit", 1, true), "globalRateLimit is enforced: " .. w)
  end
  local snap = H.snapshot_of(files)
  local g = H.listener(snap, "127.0.0.41:20880").metaprotocol.global_rate_limit
  H.eq(g.rate_limit_cluster, "outbound|8081||rls.meta.svc.cluster.local", "cluster")
  H.eq(g.request_timeout_ms, 50, "requestTimeout")
  H.eq(g.deny_on_fail, true, "denyOnFail")
  H.eq(g.descriptors[1].descriptor_key, "m", "descriptorKey")
  files["mr.yaml"] = mr:format("rls.meta.svc.cluster.local:8081")
  H.eq(H.listener(H.snapshot_of(files), "127.0.0.41:20880").metaprotocol.global_rate_limit
    .rate_limit_cluster, "outbound|8081||rls.meta.svc.cluster.local", "HOST:PORT")
  files["mr.yaml"] = mr:format("outbound|8081||nowhere")
  H.find(H.errors_of(files), { "mr.yaml", "spec.globalRateLimit.rateLimitService",
    '"outbound|8081||nowhere" names no cluster' }, "unknown cluster")
end)

H.test("MetaRouter route extensions: timeout, retries, fault.abort compile; bad ones are errors", function()
  local mr = [[
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: r, namespace: meta}
spec:
  hosts: [dubbo]
  routes:
  - route: [{destination: {host: dubbo}}]
    timeout: 250ms
    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: "connect-failure,5xx"}
    fault: {abort: {percentage: {value: 5}, errorCode: 503}}
]]
  local snap = H.snapshot_of({ ["se.yaml"] = SE, ["mr.yaml"] = mr })
  local rt = H.listener(snap, "127.0.0.41:20880").metaprotocol.routes[1]
  H.eq(rt.timeout_ms, 250, "timeout")
  H.ok(H.same(rt.retries, { attempts = 2, per_try_timeout_ms = 100, retry_on = { "connect-failure", "5xx" } }),
    "retries")
  H.ok(H.same(rt.fault_abort, { percentage = 5, error_kind = "no_healthy_upstream" }), "abort")
  local e = H.errors_of({ ["se.yaml"] = SE, ["mr.yaml"] = mr:gsub("connect%-failure,5xx", "retriable-4xx") })
  H.find(e, 'spec.routes[0].retries.retryOn: "retriable-4xx" does not apply to RPC', "retryOn")
  snap = H.snapshot_of({ ["se.yaml"] = SE, ["mr.yaml"] = mr:gsub("fault: {abort: {percentage: {value: 5}, errorCode: 503}}",
    "fault: {delay: {fixedDelay: 1.5s}}") })
  rt = H.listener(snap, "127.0.0.41:20880").metaprotocol.routes[1]
  H.ok(H.same(rt.fault_delay, { percentage = 100, delay_ms = 1500 }) and rt.fault_abort == nil, "delay")
  e = H.errors_of({ ["se.yaml"] = SE, ["mr.yaml"] = mr:gsub("fault: {abort: {percentage: {value: 5}, errorCode: 503}}",
    "fault: {}") })
  H.find(e, "spec.routes[0].fault: needs abort or delay", "empty fault")
end)

H.test("maxConnections bounds Redis leases and MetaProtocol connections; loadBalancer on Redis warns", function()
  local se = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: r, namespace: meta}
spec:
  hosts: [r.meta.svc.cluster.local]
  addresses: [127.0.0.42]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
]]
  local dr = [[
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: r, namespace: meta}
spec:
  host: r
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 8}}
    loadBalancer: {simple: RANDOM}
]]
  local snap = H.snapshot_of({ ["se.yaml"] = se, ["dr.yaml"] = dr })
  H.eq(snap.clusters["outbound|6379||r.meta.svc.cluster.local"].max_connections, 8, "compiled")
  H.none(snap.warnings, "maxConnections", "enforced for Redis")
  H.find(snap.warnings, "dr.yaml:8: DestinationRule/r: spec.trafficPolicy.loadBalancer: accepted but not enforced: "
    .. "Redis clusters do not use loadBalancer", "lb on redis")
  local warns = warnings({ ["se.yaml"] = SE, ["dr.yaml"] = DR })
  H.none(warns, "maxConnections", "enforced for MetaProtocol")
end)

H.test("connection pool: compiled per protocol; TCP relays warn for age and idle, Redis and TCP for requests", function()
  local se = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: r, namespace: meta}
spec:
  hosts: [r.meta.svc.cluster.local]
  addresses: [127.0.0.42]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: t, namespace: meta}
spec:
  hosts: [t.meta.svc.cluster.local]
  addresses: [127.0.0.43]
  ports: [{number: 7000, name: tcp-other}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
]]
  local pool = "    connectionPool:\n      tcp: {tcpKeepalive: {time: 30s, probes: 3}, maxConnectionDuration: 10s, "
    .. "idleTimeout: 2s, maxConnections: 4}\n      http: {maxRequestsPerConnection: 7, http1MaxPendingRequests: 3, "
    .. "idleTimeout: 9s}\n"
  local dr = "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: r, namespace: meta}\n"
    .. "spec:\n  host: r.meta.svc.cluster.local\n  trafficPolicy:\n" .. pool
  local snap = H.snapshot_of({ ["se.yaml"] = se, ["dr.yaml"] = dr })
  local cl = snap.clusters["outbound|6379||r.meta.svc.cluster.local"]
  H.eq(cl.tcp_keepalive.time_s, 30, "keepalive time"); H.eq(cl.tcp_keepalive.interval_s, 75, "default interval")
  H.eq(cl.tcp_keepalive.probes, 3, "probes"); H.eq(cl.max_connection_duration_ms, 10000, "duration")
  H.eq(cl.idle_timeout_ms, 2000, "tcp idleTimeout wins over http's")
  H.none(snap.warnings, "maxConnectionDuration", "pooled on Redis")
  H.eq(cl.max_requests_per_connection, 7, "redis: requests per connection")
  H.eq(cl.max_pending_requests, 3, "redis: pending requests")
  H.none(snap.warnings, "maxRequestsPerConnection", "enforced on Redis")
  H.none(snap.warnings, "http1MaxPendingRequests", "enforced on Redis")
  local tdr = dr:gsub("host: r%.meta", "host: t.meta")
  snap = H.snapshot_of({ ["se.yaml"] = se, ["dr.yaml"] = tdr })
  H.eq(snap.clusters["outbound|7000||t.meta.svc.cluster.local"].max_connections, 4, "tcp bound")
  H.none(snap.warnings, "maxConnections:", "enforced for TCP")
  local tcl = snap.clusters["outbound|7000||t.meta.svc.cluster.local"]
  H.eq(tcl.max_connection_duration_ms, 10000, "tcp relays: duration")
  H.eq(tcl.idle_timeout_ms, 2000, "tcp relays: idle")
  for _, f in ipairs({ "maxConnectionDuration", "idleTimeout" }) do
    H.none(snap.warnings, f, "enforced on TCP relays: " .. f)
  end
  H.find(snap.warnings, "http.maxRequestsPerConnection: accepted but not enforced: plain TCP has no requests", "tcp")
  H.find(snap.warnings, "http.http1MaxPendingRequests: accepted but not enforced: plain TCP has no requests", "tcp")
end)

H.test("a LuaFilter on a MetaProtocol service takes effect; on a TCP-only service it warns", function()
  local lf = [[
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {name: f, namespace: meta}
spec: {hosts: [dubbo], script: "return { on_request = function() end }"}
]]
  local snap = H.snapshot_of({ ["se.yaml"] = SE, ["lf.yaml"] = lf })
  H.none(snap.warnings, "LuaFilter/f", "meta host: no warning")
  local l = snap.listeners[1]
  H.eq(l.protocol, "metaprotocol", "the dubbo listener")
  H.eq(l.metaprotocol.lua_filters, true, "marked: its requests decode every attribute")
  local tcp = SE:gsub("tcp%-metaprotocol%-dubbo", "tcp-plain")
  local warns = warnings({ ["se.yaml"] = tcp, ["lf.yaml"] = lf })
  H.find(warns, { "LuaFilter/f: spec.hosts[0]: accepted but not enforced", "no redis or metaprotocol port" },
    "tcp host")
end)

H.test("docs/configuration.md lists exactly the unenforced fields", function()
  local doc = assert(C.readfile("docs/configuration.md"))
  local section = doc:match("<!%-%- fields:begin %-%->\n(.-)<!%-%- fields:end %-%->")
  H.ok(section, "markers in docs/configuration.md")
  local want = fields.markdown(mods())
  if section ~= want then
    error("docs/configuration.md is stale; regenerate the table with "
      .. "`build/meltemi lua tools/fields-doc.lua` and paste:\n" .. want)
  end
end)

H.run()
