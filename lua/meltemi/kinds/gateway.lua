-- Gateway (networking.istio.io): meltemi as an ingress gateway. Each of spec.servers[] is a
-- listener on `bind` (default 0.0.0.0) and port.number for traffic entering from outside the
-- mesh, its protocol from port.name / port.protocol as for any port, forwarding to the one
-- service its hosts name (meltemi proxies below HTTP: without a Host header, only TLS's SNI
-- tells services apart, so a plain-text gateway port serves one service). MetaRouters and RedisServices apply
-- to it when their `gateways` name this Gateway (Istio's rule for VirtualServices); without
-- one, the port routes everything to the service's cluster with the protocol's defaults.
-- `selector` is accepted and not used: the meltemi that reads the file is the gateway.
--
-- TLS: servers[].tls (Istio's ServerTLSSettings, as Sidecar ingress tls, meltemi.tls)
-- terminates TLS on the port; the destination's own DestinationRule tls originates it
-- upstream (termination and origination on one hop). A TLS server may list several hosts:
-- the first is the destination, all are its SNI names; several TLS servers on one port
-- choose their certificate by the client's SNI, and when they lead to different services the
-- connection is routed by SNI as well (shared_port below; runtime/proxy/sni).

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

-- The SNI names of a server: its hosts without their namespace.
local function sni_names(srv)
  local names = {}
  for _, h in ipairs(srv.hosts) do names[#names + 1] = h:match("^[^/]+/(.+)$") or h end
  return names
end

-- What decides whether a client certificate is accepted: servers sharing a port share one
-- handshake, so they must agree on it.
local function verification_key(t)
  local function list(v) return v and table.concat(v, ",") or "" end
  return table.concat({ t.mode or "", t.ca_file or "", t.ca_pem or "", t.crl_file or "",
    list(t.subject_alt_names), list(t.pin_spki_sha256), list(t.pin_cert_sha256) }, "|")
end

-- One server, checked and resolved: { srv, path, host, cluster, protocol, codec, tls,
-- address }, or nil after reporting.
local function gateway_server(obj, c, i, srv)
  local path = T.join("spec.servers", i)
  if #srv.hosts > 1 and not srv.tls then
    c:error(obj, T.join(path, "hosts"), string.format("%d hosts: a gateway port without tls forwards "
      .. "to one service (list one host per server, or terminate TLS to route by SNI)", #srv.hosts))
    return nil
  end
  local p = srv.port
  local protocol, codec = c:port_protocol(obj, T.join(path, "port.name"), p.name, p.protocol)
  if not protocol then return nil end
  local host = server_host(obj, c, T.join(T.join(path, "hosts"), 1), srv.hosts[1])
  if not host then return nil end
  local address = srv.bind and c:listen_address(obj, T.join(path, "bind"), srv.bind) or "0.0.0.0"
  if not address then return nil end
  local cl = server_cluster(obj, c, T.join(T.join(path, "hosts"), 1), host, protocol,
    p.targetPort or p.number)
  if not cl then return nil end
  local ltls
  if srv.tls then
    ltls = tls.server(obj, c, T.join(path, "tls"), srv.tls)
    if not ltls then return nil end
  end
  return { srv = srv, path = path, host = host, cluster = cl, protocol = protocol,
    codec = cl.codec or codec, tls = ltls, address = address }
end

-- Several TLS servers on one port: certificates chosen by SNI, and when their hosts lead to
-- different services, the connection routed by SNI too (runtime/proxy/sni): the port's bound
-- listener only runs the handshake and hands each client to its server's listener, which has
-- no socket. A ClientHello whose SNI names no server of the port, or that has none, is
-- refused (Envoy's "no matching filter chain": meltemi has no wildcard "*" server to catch it).
local function shared_port(obj, c, key, group)
  local first = group[1]
  for k = 2, #group do
    local g = group[k]
    if not (g.tls and first.tls) then
      c:error(obj, T.join(g.path, "tls"), "servers sharing a port all need tls (their certificates "
        .. "and destinations are chosen by SNI)")
      return
    end
    if verification_key(g.tls) ~= verification_key(first.tls) then
      c:error(obj, T.join(g.path, "tls"), string.format("servers sharing port %d share one TLS "
        .. "handshake: their client verification (mode, caCertificates, subjectAltNames, caCrl, "
        .. "verifyCertificateSpki / verifyCertificateHash) must be the same as %s's",
        g.srv.port.number, first.path))
      return
    end
  end
  local front = {}
  for k, v in pairs(first.tls) do front[k] = v end
  front.sni_certs = nil
  local certs = {}
  for _, sc in ipairs(first.tls.sni_certs or {}) do certs[#certs + 1] = sc end
  for k = 2, #group do
    local t = group[k].tls
    certs[#certs + 1] = { server_names = sni_names(group[k].srv), cert_file = t.cert_file,
      key_file = t.key_file, cert_pem = t.cert_pem, key_pem = t.key_pem }
    for _, sc in ipairs(t.sni_certs or {}) do certs[#certs + 1] = sc end
  end
  front.sni_certs = #certs > 0 and certs or nil
  local routed = false
  for k = 2, #group do routed = routed or group[k].cluster.name ~= first.cluster.name end
  if not routed then -- one destination: certificates by SNI only
    c:add_listener(obj, T.join(first.path, "port.number"), {
      address = first.address, port = first.srv.port.number, protocol = first.protocol,
      codec = first.codec, service = first.host, cluster = first.cluster.name, gateway = key,
      tls = front,
    })
    return
  end
  local fl = c:add_listener(obj, T.join(first.path, "port.number"), {
    address = first.address, port = first.srv.port.number, protocol = "sni", gateway = key,
    tls = front,
  })
  if not fl then return end
  front.sni_routes = {}
  local by_cluster, by_name = {}, {}
  for _, g in ipairs(group) do
    for _, n in ipairs(sni_names(g.srv)) do
      local prev = by_name[n:lower()]
      if prev and prev.cluster.name ~= g.cluster.name then
        c:error(obj, T.join(g.path, "hosts"), string.format("SNI name %q leads to %s here and to "
          .. "%s in %s: one name, one destination", n, g.cluster.name, prev.cluster.name, prev.path))
        return
      end
      by_name[n:lower()] = prev or g
    end
  end
  for _, g in ipairs(group) do
    local l = by_cluster[g.cluster.name]
    if not l then
      l = c:add_listener(obj, T.join(g.path, "hosts"), {
        address = g.address, port = g.srv.port.number, protocol = g.protocol, codec = g.codec,
        service = g.host, cluster = g.cluster.name, gateway = key, tls = g.tls, sni_of = fl.name,
        sni_port = g.cluster.port,
      })
      if not l then return end
      by_cluster[g.cluster.name] = l
    end
    table.insert(front.sni_routes, { server_names = sni_names(g.srv), listener = l.name })
  end
end

function K.build(obj, c)
  local key = obj.namespace .. "/" .. obj.name
  local by_port, order = {}, {}
  for i, srv in ipairs(obj.doc.spec.servers) do
    local g = gateway_server(obj, c, i, srv)
    if g then
      local lkey = g.address .. ":" .. srv.port.number
      if not by_port[lkey] then
        by_port[lkey] = {}
        order[#order + 1] = lkey
      end
      table.insert(by_port[lkey], g)
    end
  end
  for _, lkey in ipairs(order) do
    local group = by_port[lkey]
    if #group == 1 then
      local g = group[1]
      c:add_listener(obj, T.join(g.path, "port.number"), {
        address = g.address, port = g.srv.port.number, protocol = g.protocol, codec = g.codec,
        service = g.host, cluster = g.cluster.name, gateway = key, tls = g.tls,
      })
    else
      shared_port(obj, c, key, group)
    end
  end
end

function K.taint(obj, c)
  c.gateways[obj.namespace .. "/" .. obj.name] = obj -- known: references to it are not reported twice
end

return K
