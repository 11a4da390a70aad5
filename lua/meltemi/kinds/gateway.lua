-- Gateway (networking.istio.io): meltemi as an ingress gateway. Each of spec.servers[] is a
-- listener on `bind` (default 0.0.0.0) and port.number for traffic entering from outside the
-- mesh, its protocol from port.name / port.protocol as for any port, forwarding to the one
-- service its hosts name (meltemi proxies below HTTP: without a Host header or SNI to tell
-- services apart, a gateway port serves one service). MetaRouters and RedisServices apply
-- to it when their `gateways` name this Gateway (Istio's rule for VirtualServices); without
-- one, the port routes everything to the service's cluster with the protocol's defaults.
-- `selector` is accepted and not used: the meltemi that reads the file is the gateway.
--
-- TLS: servers[].tls (Istio's ServerTLSSettings, as Sidecar ingress tls, meltemi.tls)
-- terminates TLS on the port; the destination's own DestinationRule tls originates it
-- upstream (termination and origination on one hop). A TLS server may list several hosts:
-- the first is the destination, all are its SNI names; several TLS servers on one port
-- choose their certificate by the client's SNI and must lead to the same service (no routing
-- by SNI).

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local compiler = require "meltemi.compiler"
local tls = require "meltemi.tls"

local K = {
  kind = "Gateway",
  api_versions = { "networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1" },
  phase = 25, -- after the services (their clusters), before RedisService / MetaRouter
}

K.schema = shapes.document({
  spec = T.obj({
    selector = shapes.labels,
    servers = T.list(T.obj({
      port = T.obj({
        number = T.with(shapes.port_number, { required = true }),
        name = T.str(),
        protocol = T.str(),
        targetPort = shapes.port_number,
      }, { required = true }),
      hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
      bind = T.str{ non_empty = true },
      name = T.str(),
      tls = tls.server_schema,
      defaultEndpoint = T.any(),
    }), { required = true, min_items = 1 }),
  }, { required = true }),
})

-- meltemi.fields: what every accepted field does (gateway_server reads the consumed ones).
K.consumed = {
  "spec.servers[].port.number", "spec.servers[].port.name", "spec.servers[].port.protocol",
  "spec.servers[].port.targetPort", "spec.servers[].hosts", "spec.servers[].bind",
}
K.unenforced = {
  ["spec.selector"] = "the meltemi that reads this Gateway serves it, whatever its labels",
  ["spec.servers[].defaultEndpoint"] = "a gateway server forwards to its host's endpoints",
}
tls.server_declarations("spec.servers[].tls", K.consumed, K.unenforced)
K.informational = { "spec.servers[].name" }

function K.index(obj, c)
  c.gateways[obj.namespace .. "/" .. obj.name] = obj
end

-- "namespace/dnsName" or "dnsName" (Istio's Gateway host syntax) -> the service host, or nil.
local function server_host(obj, c, path, h)
  local ns, name = h:match("^([^/]+)/(.+)$")
  if not ns then ns, name = obj.namespace, h end
  if ns == "." then ns = obj.namespace end
  if name:find("*", 1, true) then
    c:error(obj, path, string.format("%q: a wildcard host is not supported; a gateway port forwards to one "
      .. "service, name it", h))
    return nil
  end
  if ns ~= "*" and not name:find(".", 1, true) then
    name = name .. "." .. ns .. "." .. compiler.CLUSTER_DOMAIN
  end
  return c:ref_host(obj, path, name)
end

-- The host's cluster that serves protocol: the only one, else the one on the server's port.
local function server_cluster(obj, c, path, host, protocol, port)
  local found, ports = {}, {}
  for p, cl in pairs(c.clusters_by_host[host] or {}) do
    if cl.protocol == protocol then
      found[#found + 1] = cl
      ports[#ports + 1] = p
    end
  end
  if #found == 1 then return found[1] end
  for _, cl in ipairs(found) do
    if cl.port == port then return cl end
  end
  table.sort(ports)
  c:error(obj, path, #found == 0 and string.format("%s has no %s port", host, protocol) or
    string.format("%s has several %s ports (%s): give the server the number of the one to use",
      host, protocol, table.concat(ports, ", ")))
  return nil
end

-- A TLS server on a port an earlier TLS server of this Gateway holds: its certificate is
-- chosen by SNI (its hosts). Returns true when handled (added or reported).
local function sni_server(obj, c, path, srv, prev, cl)
  if prev.cluster ~= cl.name then
    c:error(obj, T.join(path, "hosts"), string.format("servers on port %d lead to %s and %s: routing "
      .. "by SNI is not supported (one destination per port)", srv.port.number, prev.service, cl.service))
    return true
  end
  if not (srv.tls and prev.tls) then
    c:error(obj, T.join(path, "tls"), "servers sharing a port all need tls (their certificates are "
      .. "chosen by SNI)")
    return true
  end
  local one = tls.server(obj, c, T.join(path, "tls"), srv.tls)
  if not one then return true end
  local names = {}
  for _, h in ipairs(srv.hosts) do names[#names + 1] = h:match("^[^/]+/(.+)$") or h end
  prev.tls.sni_certs = prev.tls.sni_certs or {}
  table.insert(prev.tls.sni_certs, { server_names = names, cert_file = one.cert_file,
    key_file = one.key_file, cert_pem = one.cert_pem, key_pem = one.key_pem })
  return true
end

local function gateway_server(obj, c, i, srv, by_port)
  local path = T.join("spec.servers", i)
  local key = obj.namespace .. "/" .. obj.name
  if #srv.hosts > 1 and not srv.tls then
    c:error(obj, T.join(path, "hosts"), string.format("%d hosts: a gateway port forwards to one service "
      .. "(list one host per server)", #srv.hosts))
    return
  end
  local p = srv.port
  local protocol, codec = c:port_protocol(obj, T.join(path, "port.name"), p.name, p.protocol)
  if not protocol then return end
  local host = server_host(obj, c, T.join(T.join(path, "hosts"), 1), srv.hosts[1])
  if not host then return end
  local address = srv.bind and c:listen_address(obj, T.join(path, "bind"), srv.bind) or "0.0.0.0"
  if not address then return end
  local cl = server_cluster(obj, c, T.join(T.join(path, "hosts"), 1), host, protocol,
    p.targetPort or p.number)
  if not cl then return end
  local lkey = address .. ":" .. p.number
  if by_port[lkey] then
    sni_server(obj, c, path, srv, by_port[lkey], cl)
    return
  end
  local ltls
  if srv.tls then
    ltls = tls.server(obj, c, T.join(path, "tls"), srv.tls)
    if not ltls then return end
  end
  local l = c:add_listener(obj, T.join(path, "port.number"), {
    address = address, port = p.number, protocol = protocol, codec = cl.codec or codec,
    service = host, cluster = cl.name, gateway = key, tls = ltls,
  })
  if l then by_port[lkey] = { cluster = cl.name, service = host, tls = ltls } end
end

function K.build(obj, c)
  local by_port = {}
  for i, srv in ipairs(obj.doc.spec.servers) do gateway_server(obj, c, i, srv, by_port) end
end

function K.taint(obj, c)
  c.gateways[obj.namespace .. "/" .. obj.name] = obj -- known: references to it are not reported twice
end

return K
