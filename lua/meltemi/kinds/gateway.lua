-- Gateway (networking.istio.io): meltemi as the gateway. Each port of servers[] is a
-- listener on `bind` (default 0.0.0.0) that terminates TLS (servers[].tls, Istio's
-- ServerTLSSettings, as Sidecar ingress tls) and forwards to the service its hosts name —
-- meltemi's simplification of the VirtualService Istio would bind to the gateway: the first
-- host ("namespace/host" or "host"; all of them are the server's SNI names), and of its
-- ports port.targetPort, else the one whose protocol port.name selects, else its only one.
-- Several servers on one port choose their certificate by the client's SNI (their hosts);
-- they must lead to the same service (no routing by SNI).
-- The upstream side is the destination's own: its DestinationRule tls applies (TLS
-- termination and origination on one hop). selector names the gateway workload: meltemi is
-- it, so it is accepted and not used.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local tls = require "meltemi.tls"

local K = {
  kind = "Gateway",
  api_versions = { "networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1" },
  phase = 45, -- after DestinationRule; before RedisService and MetaRouter shape its listeners
}

K.schema = shapes.document({
  spec = T.obj({
    selector = shapes.labels,
    servers = T.list(T.obj({
      port = T.obj({ number = T.with(shapes.port_number, { required = true }), name = T.str(),
        protocol = T.str(), targetPort = shapes.port_number }, { required = true }),
      bind = T.str{ non_empty = true },
      hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
      tls = tls.server_schema,
      defaultEndpoint = T.str(),
      name = T.str(),
    }), { required = true, min_items = 1 }),
  }, { required = true }),
})

-- meltemi.fields: what every accepted field does.
K.consumed = { "spec.servers[].port", "spec.servers[].bind", "spec.servers[].hosts" }
K.unenforced = {
  ["spec.servers[].defaultEndpoint"] = "a server forwards to the service of its first host",
}
K.informational = { "spec.selector", "spec.servers[].name" }
tls.server_declarations("spec.servers[].tls", K.consumed, K.unenforced)

-- "ns/host" -> host (the namespace part only scopes visibility in Istio).
local function host_of(h)
  return h:match("^[^/]+/(.+)$") or h
end

local function server_names(hosts)
  local out = {}
  for _, h in ipairs(hosts) do out[#out + 1] = host_of(h) end
  return out
end

function K.build(obj, c)
  local spec = obj.doc.spec
  local by_port = {}
  for i, srv in ipairs(spec.servers) do
    local path = T.join("spec.servers", i)
    local host = c:ref_host(obj, T.join(path, "hosts[0]"), host_of(srv.hosts[1]))
    if not host then return end
    local lname = (srv.port.name or ""):lower()
    local want = c:port_protocol(obj, T.join(path, "port.name"), srv.port.name, srv.port.protocol)
    local cl = c:pick_cluster(obj, T.join(path, "hosts[0]"), host, srv.port.targetPort,
      (want ~= "tcp" or lname:match("^tcp")) and want or nil, srv.port.number)
    if not cl then return end
    local address = srv.bind and c:listen_address(obj, T.join(path, "bind"), srv.bind) or "0.0.0.0"
    if not address then return end
    local key = address .. ":" .. srv.port.number
    local prev = by_port[key]
    if prev then
      if prev.cluster ~= cl.name then
        c:error(obj, T.join(path, "hosts"), string.format("servers on port %d lead to %s and %s: "
          .. "routing by SNI is not supported (one destination per port)", srv.port.number,
          prev.service, host))
        return
      end
      if not (srv.tls and prev.tls) then
        c:error(obj, T.join(path, "tls"), "servers sharing a port all need tls (their certificates "
          .. "are chosen by SNI)")
        return
      end
      local one = tls.server(obj, c, T.join(path, "tls"), srv.tls)
      if not one then return end
      prev.tls.sni_certs = prev.tls.sni_certs or {}
      table.insert(prev.tls.sni_certs, { server_names = server_names(srv.hosts),
        cert_file = one.cert_file, key_file = one.key_file, cert_pem = one.cert_pem,
        key_pem = one.key_pem })
    else
      local ltls
      if srv.tls then
        if cl.protocol == "tcp" then
          c:error(obj, T.join(path, "tls"), "TLS on plain TCP listeners is not supported yet (Redis "
            .. "and MetaProtocol ports are)")
          return
        end
        ltls = tls.server(obj, c, T.join(path, "tls"), srv.tls)
        if not ltls then return end
      end
      local l = c:add_listener(obj, T.join(path, "port.number"), {
        address = address, port = srv.port.number, protocol = cl.protocol, codec = cl.codec,
        service = host, direction = "gateway", cluster = cl.name, tls = ltls,
      })
      if not l then return end
      by_port[key] = { cluster = cl.name, service = host, tls = ltls }
    end
  end
end

return K
