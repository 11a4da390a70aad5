-- ServiceEntry (networking.istio.io): a service meltemi proxies to. Each host gets one
-- cluster per port (outbound|PORT||HOST); the first host also gets a listener per port on
-- addresses[0], the VIP a client connects to. The port name selects the protocol.
-- Istio's own rules are kept: endpoints need resolution STATIC or DNS, STATIC endpoints
-- are IP addresses, DNS without endpoints resolves the hosts themselves.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local compiler = require "meltemi.compiler"

local K = {
  kind = "ServiceEntry",
  api_versions = { "networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1" },
  phase = 20,
}

local function check_spec(spec, report)
  local names, numbers = {}, {}
  for i, p in ipairs(spec.ports or {}) do
    local at = T.join("ports", i)
    if names[p.name] then
      report(T.join(at, "name"), string.format("port name %q is used twice", p.name))
    end
    if numbers[p.number] then
      report(T.join(at, "number"), string.format("port %d is listed twice", p.number))
    end
    names[p.name], numbers[p.number] = true, true
  end
  local resolution = spec.resolution or "NONE"
  if resolution == "NONE" and spec.endpoints and #spec.endpoints > 0 then
    report("endpoints", "endpoints need resolution STATIC or DNS (resolution is NONE)")
  end
  for i, ep in ipairs(spec.endpoints or {}) do
    local a = ep.address
    if resolution == "STATIC" and a and not compiler.is_ip(a) then
      report(T.join(T.join("endpoints", i), "address"), string.format(
        "%q is not an IP address; STATIC resolution needs IPs (use resolution: DNS for names)", a))
    end
    if not a then
      report(T.join(T.join("endpoints", i), "address"), "required field missing")
    end
  end
  for i, h in ipairs(spec.hosts) do
    if h:find("*", 2, true) or h == "" then
      report(T.join("hosts", i), string.format("%q is not a valid host", h))
    end
  end
end

K.schema = shapes.document({
  spec = T.obj({
    hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
    addresses = T.list(T.str{ non_empty = true }),
    ports = T.list(T.obj({
      number = T.with(shapes.port_number, { required = true }),
      protocol = T.str(),
      name = T.str{ required = true, non_empty = true },
      targetPort = shapes.port_number,
    })),
    location = T.enum({ "MESH_EXTERNAL", "MESH_INTERNAL" }),
    resolution = T.enum({ "NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN" }),
    endpoints = T.list(T.obj({
      address = T.str{ non_empty = true },
      ports = T.map(shapes.port_number),
      labels = shapes.labels,
      network = T.str(), locality = T.str(),
      weight = T.int{ min = 0 },
      serviceAccount = T.str(),
    })),
    workloadSelector = T.obj({ labels = shapes.labels }),
    exportTo = T.list(T.str()),
    subjectAltNames = T.list(T.str()),
  }, { required = true, check = check_spec }),
})

-- meltemi.fields: what every accepted field does (build below reads the consumed ones).
K.consumed = {
  "spec.hosts", "spec.addresses", "spec.ports[].number", "spec.ports[].protocol", "spec.ports[].name",
  "spec.ports[].targetPort", "spec.resolution", "spec.endpoints[].address", "spec.endpoints[].ports",
  "spec.endpoints[].labels",
}
K.unenforced = {
  ["spec.location"] = { reason = "MESH_INTERNAL is proxied as MESH_EXTERNAL is (mutual TLS "
    .. "follows each endpoint's Istio label or a DestinationRule, not the location)",
    when = function(v) return v == "MESH_INTERNAL" end, when_text = "(MESH_INTERNAL)" },
  ["spec.endpoints[].weight"] = "endpoints get equal shares whatever their weight",
  ["spec.endpoints[].locality"] = "no locality-aware load balancing",
  ["spec.endpoints[].network"] = "every endpoint is taken to be reachable directly",
  ["spec.endpoints[].serviceAccount"] = "the server's identity is not checked against it "
    .. "(DestinationRule subjectAltNames does)",
  ["spec.subjectAltNames"] = "the server's identity is not checked against it "
    .. "(DestinationRule subjectAltNames does)",
  ["spec.workloadSelector"] = "endpoints come from spec.endpoints only (no workload entries)",
  ["spec.exportTo"] = "one proxy sees every service: there is no export scope",
}

local function hosts_of(obj)
  local out = {}
  for i, h in ipairs(obj.doc.spec.hosts) do
    out[#out + 1] = { host = compiler.normalize_host(h, obj.namespace), path = T.join("spec.hosts", i) }
  end
  return out
end

function K.index(obj, c)
  obj.hosts = {}
  for _, h in ipairs(hosts_of(obj)) do
    local rec = { kind = obj.kind, name = obj.name, namespace = obj.namespace, obj = obj }
    if c:register_service(obj, h.path, h.host, rec) then
      obj.hosts[#obj.hosts + 1] = h.host
    end
  end
end

function K.taint(obj, c)
  local spec = obj.doc.spec
  if type(spec) ~= "table" or type(spec.hosts) ~= "table" then return end
  for _, h in ipairs(spec.hosts) do
    if type(h) == "string" then c.tainted.hosts[compiler.normalize_host(h, obj.namespace)] = true end
  end
end

local function endpoints_for(spec, host, port)
  local resolution = spec.resolution or "NONE"
  local target = port.targetPort or port.number
  local out = {}
  if resolution == "NONE" then return out, "NONE" end
  local dns = resolution == "DNS" or resolution == "DNS_ROUND_ROBIN"
  if (spec.endpoints == nil or #spec.endpoints == 0) and dns then
    if not host:find("*", 1, true) then
      out[1] = { address = host, port = target, labels = {} }
    end
    return out, "DNS"
  end
  for _, ep in ipairs(spec.endpoints or {}) do
    local labels = {}
    for k, v in pairs(ep.labels or {}) do labels[k] = v end
    out[#out + 1] = {
      address = ep.address,
      port = ep.ports and ep.ports[port.name] or target,
      labels = labels,
      weight = ep.weight,
      locality = ep.locality,
    }
  end
  return out, dns and "DNS" or "STATIC"
end

function K.build(obj, c)
  local spec = obj.doc.spec
  local ports = {}
  for i, p in ipairs(spec.ports or {}) do
    local protocol, codec = c:port_protocol(obj, T.join(T.join("spec.ports", i), "name"), p.name, p.protocol)
    ports[i] = { number = p.number, name = p.name, protocol = protocol, codec = codec,
      target_port = p.targetPort, spec = p, path = T.join("spec.ports", i) }
  end
  local address
  if spec.addresses and #spec.addresses > 0 then
    address = c:listen_address(obj, "spec.addresses[0]", spec.addresses[1])
    if #spec.addresses > 1 then
      c:warn(obj, "spec.addresses[1]", "accepted but not enforced: only addresses[0] is bound")
    end
  elseif #ports > 0 then
    c:warn(obj, "spec", "no addresses: no listener is bound for this service "
      .. "(routes can still send traffic to its clusters)")
  end
  for hi, host in ipairs(obj.hosts) do
    local info = { kind = obj.kind, name = obj.name, namespace = obj.namespace, address = address,
      ports = {} }
    c.snapshot.services[host] = info
    for _, p in ipairs(ports) do
      info.ports[#info.ports + 1] = { number = p.number, name = p.name, protocol = p.protocol,
        codec = p.codec }
      local cl = c:add_cluster(obj, host, p.number, p.protocol, p.codec)
      cl.endpoints, cl.resolution = endpoints_for(spec, host, p.spec)
      if address and hi == 1 then
        c:add_listener(obj, T.join(p.path, "number"), {
          address = address, port = p.number, protocol = p.protocol, codec = p.codec,
          service = host, cluster = cl.name,
        })
      end
    end
  end
end

return K
