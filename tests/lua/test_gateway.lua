-- luacheck: no max line length (inline YAML fixtures and expected messages)
-- Gateway (lua/meltemi/kinds/gateway.lua): servers become listeners with `gateway` set and the
-- host's cluster of their protocol; MetaRouter and RedisService `gateways` choose the mesh's
-- listeners or a Gateway's, Istio's VirtualService rule. End to end: tests/integration/test_gateway.py.
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
  endpoints: [{address: 127.0.0.1, ports: {tcp-metaprotocol-thrift-hello: 9190}}]
]]

local GATEWAY = [[
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: edge, namespace: thrift}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 19090, name: tcp-metaprotocol-thrift-hello, protocol: TCP}
      hosts: [thrift/hello.thrift.svc.cluster.local]
]]

-- True when listener l's first route writes attribute via (the router above applied).
local function tagged(l)
  local r = l.metaprotocol and l.metaprotocol.routes and l.metaprotocol.routes[1]
  for _, m in ipairs(r and r.request_mutation or {}) do
    if m.key == "via" then return true end
  end
  return false
end

local function router(gateways)
  return [[
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: MetaRouter
metadata: {name: hello-edge, namespace: thrift}
spec:
  hosts: [hello.thrift.svc.cluster.local]
]] .. (gateways and ("  gateways: [" .. gateways .. "]\n") or "") .. [[
  routes:
    - name: tag
      route: [{destination: {host: hello}}]
      requestMutation: [{key: via, value: edge}]
]]
end

H.test("a Gateway server is a wildcard listener with gateway set and the host's cluster", function()
  local snap = H.snapshot_of({ ["se.yaml"] = THRIFT, ["gw.yaml"] = GATEWAY })
  local l = H.listener(snap, "0.0.0.0:19090")
  H.eq(l.gateway, "thrift/edge", "gateway")
  H.eq(l.protocol, "metaprotocol", "protocol")
  H.eq(l.codec, "thrift", "codec")
  H.eq(l.cluster, "outbound|9090||hello.thrift.svc.cluster.local", "the service's cluster")
  H.eq(#snap.listeners, 2, "the mesh listener and the gateway's")
end)

H.test("gateways: a MetaRouter applies where it says, the mesh by default", function()
  local snap = H.snapshot_of({ ["se.yaml"] = THRIFT, ["gw.yaml"] = GATEWAY, ["mr.yaml"] = router("edge") })
  local gw, mesh = H.listener(snap, "0.0.0.0:19090"), H.listener(snap, "127.0.0.40:9090")
  H.ok(tagged(gw), "the gateway got the router")
  H.ok(not tagged(mesh), "the mesh did not")
  snap = H.snapshot_of({ ["se.yaml"] = THRIFT, ["gw.yaml"] = GATEWAY, ["mr.yaml"] = router(nil) })
  gw, mesh = H.listener(snap, "0.0.0.0:19090"), H.listener(snap, "127.0.0.40:9090")
  H.ok(tagged(mesh), "without gateways: the mesh")
  H.ok(not tagged(gw), "... and not the gateway")
  snap = H.snapshot_of({ ["se.yaml"] = THRIFT, ["gw.yaml"] = GATEWAY, ["mr.yaml"] = router("mesh, thrift/edge") })
  H.ok(tagged(H.listener(snap, "127.0.0.40:9090")), "mesh listed")
  H.ok(tagged(H.listener(snap, "0.0.0.0:19090")), "namespace/name listed")
end)

H.test("gateways: an unknown Gateway and two hosts on one server are errors", function()
  local errs = H.errors_of({ ["se.yaml"] = THRIFT, ["mr.yaml"] = router("nowhere") })
  H.find(errs, { "mr.yaml:6: MetaRouter/hello-edge: spec.gateways[0]: unknown Gateway \"nowhere\" (looked for thrift/nowhere)" }, "unknown")
  errs = H.errors_of({ ["se.yaml"] = THRIFT, ["gw.yaml"] = GATEWAY:gsub("hosts: %[thrift/hello.thrift.svc.cluster.local%]",
    "hosts: [hello, other]") })
  H.find(errs, { "Gateway/edge: spec.servers[0].hosts: 2 hosts: a gateway port without tls forwards to one service" }, "two hosts")
end)

H.run()
