-- EndpointSlice (discovery.k8s.io/v1): the endpoints of a Service, attached to it by the
-- label kubernetes.io/service-name (how the blog reaches an external Redis). Labels of
-- the slice other than Kubernetes' own become the labels of its endpoints, so that a
-- DestinationRule subset can select a slice (pods' labels are not visible here).

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "EndpointSlice",
  api_versions = { "discovery.k8s.io/v1", "discovery.k8s.io/v1beta1" },
  phase = 10,
}

K.SERVICE_LABEL = "kubernetes.io/service-name"

local function check_addresses(doc, report)
  local compiler = require "meltemi.compiler"
  for i, ep in ipairs(doc.endpoints or {}) do
    for j, a in ipairs(ep.addresses) do
      local bad = (doc.addressType == "IPv4" and not a:match("^%d+%.%d+%.%d+%.%d+$"))
        or (doc.addressType == "IPv6" and not a:find(":", 1, true))
        or (doc.addressType ~= "FQDN" and not compiler.is_ip(a))
      if bad then
        report(T.join(T.join(T.join("endpoints", i), "addresses"), j),
          string.format("%q is not an %s address", a, doc.addressType))
      end
    end
  end
end

K.schema = shapes.document({
  addressType = T.enum({ "IPv4", "IPv6", "FQDN" }, { required = true }),
  endpoints = T.list(T.obj({
    addresses = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
    conditions = T.obj({ ready = T.bool(), serving = T.bool(), terminating = T.bool() }),
    hostname = T.str(), nodeName = T.str(), zone = T.str(),
    targetRef = T.any(), hints = T.any(), deprecatedTopology = T.map(T.str()),
  })),
  ports = T.list(T.obj({
    name = T.str(), port = shapes.port_number,
    protocol = T.enum({ "TCP", "UDP", "SCTP" }), appProtocol = T.str(),
  })),
})
K.schema.check = check_addresses

-- meltemi.fields: what every accepted field does (endpoints_for reads the consumed ones).
K.consumed = {
  "metadata.labels", "addressType", "endpoints[].addresses", "endpoints[].conditions.ready", "ports[].name",
  "ports[].port",
}
K.unenforced = {
  ["endpoints[].conditions.serving"] = { reason = "only conditions.ready is read",
    when = function(v) return v == false end, when_text = "(when false)" },
  ["endpoints[].conditions.terminating"] = { reason = "only conditions.ready is read",
    when = function(v) return v == true end, when_text = "(when true)" },
  ["endpoints[].zone"] = "no zone-aware load balancing",
  ["endpoints[].hints"] = "no topology-aware routing",
  ["endpoints[].deprecatedTopology"] = "no topology-aware routing",
  ["ports[].protocol"] = { reason = "only TCP is proxied", when = function(v) return v ~= "TCP" end,
    when_text = "(unless TCP)" },
}
-- References to the workload and copies of the Service's data, not requests for behaviour.
K.informational = { "endpoints[].hostname", "endpoints[].nodeName", "endpoints[].targetRef",
  "ports[].appProtocol" }

local function endpoint_labels(doc)
  local labels = {}
  for k, v in pairs(doc.metadata.labels or {}) do
    if not k:find("kubernetes.io/", 1, true) and not k:find("k8s.io/", 1, true) then labels[k] = v end
  end
  return labels
end

function K.index(obj, c)
  local labels = obj.doc.metadata.labels or {}
  local svc = labels[K.SERVICE_LABEL]
  if not svc then
    c:warn(obj, "metadata.labels", "no kubernetes.io/service-name label: this EndpointSlice "
      .. "belongs to no Service and is ignored")
    return
  end
  local key = obj.namespace .. "/" .. svc
  c.slices[key] = c.slices[key] or {}
  table.insert(c.slices[key], obj)
  obj.endpoint_labels = endpoint_labels(obj.doc)
end

-- Endpoints of this slice for the service port named port_name; fallback_port is used when
-- the slice lists no ports at all. Returns a list and whether the addresses are DNS names.
function K.endpoints_for(obj, port_name, fallback_port)
  local doc = obj.doc
  local port
  if doc.ports == nil or #doc.ports == 0 then
    port = fallback_port
  else
    for _, p in ipairs(doc.ports) do
      if (p.name or "") == (port_name or "") then port = p.port end
    end
  end
  local out = {}
  if not port then return out, false end
  for _, ep in ipairs(doc.endpoints or {}) do
    if not (ep.conditions and ep.conditions.ready == false) then
      for _, a in ipairs(ep.addresses) do
        local labels = {}
        for k, v in pairs(obj.endpoint_labels) do labels[k] = v end
        out[#out + 1] = { address = a, port = port, labels = labels }
      end
    end
  end
  return out, doc.addressType == "FQDN"
end

-- The snapshot's sources: everything but the object header.
function K.source_spec(obj)
  local d = obj.doc
  return { addressType = d.addressType, endpoints = d.endpoints, ports = d.ports }
end

return K
