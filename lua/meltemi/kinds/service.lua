-- Service (v1): a Kubernetes service. Its host is name.namespace.svc.cluster.local, its
-- listener address spec.clusterIP, its endpoints come from the EndpointSlices labelled
-- kubernetes.io/service-name: <name> (selectors cannot be evaluated without the pods).
-- type ExternalName resolves spec.externalName by DNS.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local compiler = require "meltemi.compiler"
local slices = require "meltemi.kinds.endpoint_slice"

local K = {
  kind = "Service",
  api_versions = { "v1" },
  phase = 20,
}

local function check_spec(spec, report)
  local ports = spec.ports or {}
  local names = {}
  for i, p in ipairs(ports) do
    if #ports > 1 and (p.name == nil or p.name == "") then
      report(T.join(T.join("ports", i), "name"), "a Service with several ports must name each of them")
    elseif p.name and names[p.name] then
      report(T.join(T.join("ports", i), "name"), string.format("port name %q is used twice", p.name))
    end
    if p.name then names[p.name] = true end
  end
  if spec.type == "ExternalName" and not spec.externalName then
    report("externalName", "required for type ExternalName")
  end
end

K.schema = shapes.document({
  spec = T.obj({
    type = T.enum({ "ClusterIP", "NodePort", "LoadBalancer", "ExternalName" }),
    selector = shapes.labels,
    ports = T.list(T.obj({
      name = T.str(),
      protocol = T.enum({ "TCP", "UDP", "SCTP" }),
      appProtocol = T.str(),
      port = T.with(shapes.port_number, { required = true }),
      targetPort = T.int_or_str(),
      nodePort = T.int(),
    })),
    clusterIP = T.str{ non_empty = true },
    clusterIPs = T.list(T.str()),
    externalName = T.str{ non_empty = true },
    externalIPs = T.list(T.str()),
    sessionAffinity = T.enum({ "None", "ClientIP" }),
    sessionAffinityConfig = T.any(),
    loadBalancerIP = T.str(), loadBalancerSourceRanges = T.list(T.str()), loadBalancerClass = T.str(),
    externalTrafficPolicy = T.str(), internalTrafficPolicy = T.str(),
    healthCheckNodePort = T.int(), publishNotReadyAddresses = T.bool(),
    ipFamilies = T.list(T.str()), ipFamilyPolicy = T.str(),
    allocateLoadBalancerNodePorts = T.bool(), trafficDistribution = T.str(),
  }, { required = true, check = check_spec }),
})

-- meltemi.fields: what every accepted field does. `kubectl get -o yaml` fills many fields
-- with their defaults; those ask for nothing meltemi does not do, so only other values warn.
local function is_not(default)
  return { when = function(v) return v ~= default end, when_text = "(unless " .. tostring(default) .. ")" }
end
local function warn_unless(default, reason)
  local e = is_not(default)
  e.reason = reason
  return e
end
K.consumed = {
  "spec.type", "spec.ports[].name", "spec.ports[].port", "spec.ports[].targetPort",
  "spec.ports[].appProtocol", "spec.clusterIP", "spec.externalName",
}
K.unenforced = {
  ["spec.ports[].protocol"] = warn_unless("TCP", "only TCP is proxied"),
  ["spec.ports[].nodePort"] = "no node ports are bound",
  ["spec.clusterIPs"] = { reason = "only clusterIP is bound", when = function(v, doc)
    return #v > 1 or (v[1] ~= nil and v[1] ~= doc.spec.clusterIP) end, when_text = "(beyond clusterIP)" },
  ["spec.externalIPs"] = "external IPs are not bound",
  ["spec.sessionAffinity"] = warn_unless("None", "no client affinity"),
  ["spec.sessionAffinityConfig"] = "no client affinity",
  ["spec.loadBalancerIP"] = "no load balancer address is bound",
  ["spec.loadBalancerSourceRanges"] = "clients are not filtered by source range",
  ["spec.loadBalancerClass"] = "no load balancer is provisioned",
  ["spec.externalTrafficPolicy"] = warn_unless("Cluster", "every endpoint is used"),
  ["spec.internalTrafficPolicy"] = warn_unless("Cluster", "every endpoint is used"),
  ["spec.healthCheckNodePort"] = "no node ports are bound",
  ["spec.publishNotReadyAddresses"] = warn_unless(false, "endpoints with ready: false are skipped"),
  ["spec.ipFamilyPolicy"] = warn_unless("SingleStack", "only clusterIP is bound"),
  ["spec.allocateLoadBalancerNodePorts"] = "no node ports are bound",
  ["spec.trafficDistribution"] = "every endpoint is used alike",
}
-- ipFamilies follows from clusterIP, which is what is bound. selector: pods are not visible
-- here, but the EndpointSlices Kubernetes makes from it are what meltemi reads, and a
-- Service without any draws its own warning (K.build).
K.informational = { "spec.ipFamilies", "spec.selector" }

function K.index(obj, c)
  obj.host = compiler.service_fqdn(obj.name, obj.namespace)
  local rec = { kind = obj.kind, name = obj.name, namespace = obj.namespace, obj = obj }
  if not c:register_service(obj, "metadata.name", obj.host, rec) then obj.host = nil end
end

function K.taint(obj, c)
  if obj.name ~= "?" then
    c.tainted.hosts[compiler.service_fqdn(obj.name, obj.namespace)] = true
  end
end

local function endpoints_for(obj, c, p)
  local spec = obj.doc.spec
  local target = type(p.targetPort) == "number" and p.targetPort or p.port
  if spec.type == "ExternalName" then
    return { { address = spec.externalName, port = target, labels = {} } }, "DNS"
  end
  local out, dns = {}, false
  for _, slice in ipairs(c.slices[obj.namespace .. "/" .. obj.name] or {}) do
    local eps, is_dns = slices.endpoints_for(slice, p.name, target)
    for _, ep in ipairs(eps) do out[#out + 1] = ep end
    dns = dns or is_dns
  end
  return out, dns and "DNS" or "STATIC"
end

function K.build(obj, c)
  if not obj.host then return end
  local spec = obj.doc.spec
  if spec.type == "NodePort" or spec.type == "LoadBalancer" then
    c:warn(obj, "spec.type", string.format("accepted but not enforced: %s is served as ClusterIP "
      .. "(only clusterIP is bound)", spec.type))
  end
  local address
  local ip = spec.clusterIP
  if spec.type == "ExternalName" then
    address = nil
  elseif ip == "None" then
    c:warn(obj, "spec.clusterIP", "headless Service (clusterIP: None): no listener is bound")
  elseif ip then
    address = c:listen_address(obj, "spec.clusterIP", ip)
  elseif spec.ports and #spec.ports > 0 then
    c:warn(obj, "spec", "no clusterIP: no listener is bound for this service "
      .. "(routes can still send traffic to its clusters)")
  end
  if spec.type ~= "ExternalName" and not c.slices[obj.namespace .. "/" .. obj.name] then
    c:warn(obj, "metadata.name", string.format("no EndpointSlice is labelled %s: %s, so this Service "
      .. "has no endpoints", slices.SERVICE_LABEL, obj.name))
  end
  local info = { kind = obj.kind, name = obj.name, namespace = obj.namespace, address = address, ports = {} }
  c.snapshot.services[obj.host] = info
  for i, p in ipairs(spec.ports or {}) do
    local path = T.join("spec.ports", i)
    local protocol, codec = c:port_protocol(obj, T.join(path, "name"), p.name, p.appProtocol)
    info.ports[#info.ports + 1] = { number = p.port, name = p.name, protocol = protocol, codec = codec }
    local cl = c:add_cluster(obj, obj.host, p.port, protocol, codec)
    cl.endpoints, cl.resolution = endpoints_for(obj, c, p)
    if address then
      c:add_listener(obj, T.join(path, "port"), {
        address = address, port = p.port, protocol = protocol, codec = codec,
        service = obj.host, cluster = cl.name,
      })
    end
  end
end

-- EndpointSlices naming a Service that does not exist are probably a typo.
function K.after_build(c)
  for key, list in pairs(c.slices) do
    local ns, name = key:match("^([^/]+)/(.+)$")
    local host = compiler.service_fqdn(name, ns)
    if not c.services[host] and not c.tainted.hosts[host] then
      for _, s in ipairs(list) do
        c:warn(s, "metadata.labels", string.format("no Service %s in namespace %s: this EndpointSlice "
          .. "is not used", name, ns))
      end
    end
  end
end

return K
