-- Sidecar (networking.istio.io): inbound listeners for the workload this proxy sits next to
-- (ingress[]: port -> defaultEndpoint), plus egress binds and the outbound traffic policy,
-- which are validated and kept in snapshot.sidecars for the runtime to use later.
-- An ingress listener binds `bind` (default 0.0.0.0) and forwards to the cluster
-- inbound|PORT|| whose one endpoint is defaultEndpoint (default 127.0.0.1:PORT).

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local compiler = require "meltemi.compiler"
local tls = require "meltemi.tls"

local K = {
  kind = "Sidecar",
  api_versions = { "networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1" },
  phase = 60,
}

local port = T.obj({
  number = T.with(shapes.port_number, { required = true }),
  protocol = T.str(),
  name = T.str(),
  targetPort = shapes.port_number,
}, { required = true })

local capture = T.enum({ "DEFAULT", "IPTABLES", "NONE" })

local function check_endpoint(ing, report)
  local ep = ing.defaultEndpoint
  if not ep then return end
  if ep:match("^unix://") then
    report("defaultEndpoint", "unix domain sockets are not supported yet; use IP:PORT")
    return
  end
  local h = compiler.split_host_port(ep)
  if not h or not compiler.is_ip(h) then
    report("defaultEndpoint", string.format("%q is not IP:PORT (e.g. 127.0.0.1:8080)", ep))
  end
end

local function check_egress(eg, report)
  for i, h in ipairs(eg.hosts) do
    if not h:find("/", 1, true) then
      report(T.join("hosts", i), string.format("%q must be namespace/dnsName (e.g. ./*, istio-system/*)", h))
    end
  end
end

K.schema = shapes.document({
  spec = T.obj({
    workloadSelector = T.obj({ labels = shapes.labels }),
    ingress = T.list(T.obj({
      port = port,
      bind = T.str{ non_empty = true },
      captureMode = capture,
      defaultEndpoint = T.str{ non_empty = true },
      tls = tls.server_schema,
      connectionPool = T.obj({ tcp = shapes.tcp_settings, http = T.any() }),
    }, { check = check_endpoint })),
    egress = T.list(T.obj({
      port = T.with(port, { required = false }),
      bind = T.str{ non_empty = true },
      captureMode = capture,
      hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
    }, { check = check_egress })),
    outboundTrafficPolicy = T.obj({ mode = T.enum({ "REGISTRY_ONLY", "ALLOW_ANY" }), egressProxy = T.any() }),
    inboundConnectionPool = T.obj({ tcp = shapes.tcp_settings, http = T.any() }),
  }, { required = true }),
})

-- meltemi.fields: what every accepted field does (ingress_listener reads the consumed ones).
K.consumed = {
  "spec.ingress[].port.number", "spec.ingress[].port.protocol", "spec.ingress[].port.name",
  "spec.ingress[].port.targetPort", "spec.ingress[].bind", "spec.ingress[].defaultEndpoint",
  "spec.ingress[].connectionPool.tcp.maxConnections", -- the port's connection cap
  "spec.inboundConnectionPool.tcp.maxConnections",
}
local PER_PROXY = "capture is chosen for the whole proxy (meltemi run --capture-inbound), not per "
  .. "ingress port"
K.unenforced = {}
tls.server_declarations("spec.ingress[].tls", K.consumed, K.unenforced)
local unenforced = {
  ["spec.ingress[].captureMode"] = { reason = PER_PROXY, when = function(v) return v ~= "DEFAULT" end,
    when_text = "(IPTABLES, NONE)" },
  ["spec.ingress[].connectionPool"] = "only tcp.maxConnections applies to an inbound port",
  ["spec.inboundConnectionPool"] = "only tcp.maxConnections applies to an inbound port",
  ["spec.egress"] = "outbound listeners come from the services' addresses; egress binds and host "
    .. "scopes are kept in snapshot.sidecars only",
  ["spec.outboundTrafficPolicy"] = { reason = "with capture ports, destinations no listener claims "
    .. "always pass through (ALLOW_ANY); REGISTRY_ONLY and egressProxy are not enforced",
    when = function(v) return v.mode == "REGISTRY_ONLY" or v.egressProxy ~= nil end,
    when_text = "(REGISTRY_ONLY, egressProxy)" },
  ["spec.workloadSelector"] = "the Sidecar applies to this proxy whatever its workload labels",
}
for k, v in pairs(unenforced) do K.unenforced[k] = v end

local function ingress_listener(obj, c, i, ing)
  local path = T.join("spec.ingress", i)
  local p = ing.port
  local protocol, codec = c:port_protocol(obj, T.join(path, "port.name"), p.name, p.protocol)
  local address = ing.bind and c:listen_address(obj, T.join(path, "bind"), ing.bind) or "0.0.0.0"
  if not address then return end
  local ep_addr, ep_port = "127.0.0.1", p.targetPort or p.number
  if ing.defaultEndpoint then
    ep_addr, ep_port = compiler.split_host_port(ing.defaultEndpoint)
    if ep_addr == "0.0.0.0" then ep_addr = "127.0.0.1" end
  end
  local name = string.format("inbound|%d||", p.number)
  if c.snapshot.clusters[name] then
    c:error(obj, T.join(path, "port.number"), string.format("port %d has two ingress entries", p.number))
    return
  end
  local cl = c:add_cluster(obj, "inbound", p.number, protocol, codec)
  c.snapshot.clusters[cl.name] = nil
  cl.name, cl.service = name, nil
  cl.endpoints = { { address = ep_addr, port = ep_port, labels = {} } }
  c.snapshot.clusters[name] = cl
  local ltls
  if ing.tls then
    ltls = tls.server(obj, c, T.join(path, "tls"), ing.tls)
    if not ltls then return end
  end
  local l = c:add_listener(obj, T.join(path, "port.number"), {
    address = address, port = p.number, protocol = protocol, codec = codec,
    service = nil, direction = "inbound", cluster = name, tls = ltls,
  })
  -- Connections the port accepts at most (Istio: ingress connectionPool, else the Sidecar's
  -- inboundConnectionPool); past it a new connection is closed at once. (The other pool
  -- fields are warned through K.unenforced.)
  local spec = obj.doc.spec
  local max = (ing.connectionPool and ing.connectionPool.tcp and ing.connectionPool.tcp.maxConnections)
    or (spec.inboundConnectionPool and spec.inboundConnectionPool.tcp
      and spec.inboundConnectionPool.tcp.maxConnections)
  if l and max then l.max_connections = max end
end

function K.build(obj, c)
  local spec = obj.doc.spec
  for i, ing in ipairs(spec.ingress or {}) do ingress_listener(obj, c, i, ing) end
  local egress = {}
  for _, eg in ipairs(spec.egress or {}) do
    egress[#egress + 1] = {
      port = eg.port and { number = eg.port.number, protocol = eg.port.protocol, name = eg.port.name },
      bind = eg.bind, capture_mode = eg.captureMode or "DEFAULT", hosts = eg.hosts,
    }
  end
  table.insert(c.snapshot.sidecars, {
    name = obj.name, namespace = obj.namespace,
    workload_labels = spec.workloadSelector and spec.workloadSelector.labels,
    egress = egress,
    outbound_traffic_policy = spec.outboundTrafficPolicy and spec.outboundTrafficPolicy.mode or "ALLOW_ANY",
    source = compiler.source_of(obj),
  })
end

return K
