-- AuthorizationPolicy (security.istio.io): ALLOW / DENY / AUDIT on every listener of the
-- workload (those of the Sidecar, and the outbound ones: meltemi is also a Redis/RPC proxy
-- in front of clients), for every protocol. The runtime (runtime/core/authz.c) evaluates in
-- Istio's order: DENY, then ALLOW (if any exists, one must match); AUDIT only logs.
--
-- The operation of a request, per protocol:
--   Redis: methods = command names (any case); keys = key prefixes (meltemi extension:
--          every key of an ALLOWed command must match, one matching key DENYs)
--   Dubbo / Thrift / other MetaProtocol: paths = interface (Dubbo) or service, methods =
--          the method
-- Sources: principals and namespaces need mTLS (PeerAuthentication); ipBlocks and
-- remoteIpBlocks are both the client's address (nothing sits in front of meltemi), so they
-- work on plain-text listeners too. when: source.ip, remote.ip, source.namespace,
-- source.principal, destination.port.
--
-- A selector applies the policy only when it matches the Sidecar's workloadSelector labels;
-- without one it applies to every listener. CUSTOM, requestPrincipals, hosts and other
-- HTTP/JWT attributes are refused: these protocols carry none of them.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "AuthorizationPolicy",
  api_versions = { "security.istio.io/v1beta1", "security.istio.io/v1" },
  phase = 75,
}

local strs = T.list(T.str{ non_empty = true })

local source = T.obj({
  principals = strs, notPrincipals = strs, requestPrincipals = strs, notRequestPrincipals = strs,
  namespaces = strs, notNamespaces = strs, ipBlocks = strs, notIpBlocks = strs,
  remoteIpBlocks = strs, notRemoteIpBlocks = strs,
})

local operation = T.obj({
  hosts = strs, notHosts = strs, ports = T.list(T.int_or_str()), notPorts = T.list(T.int_or_str()),
  methods = strs, notMethods = strs, paths = strs, notPaths = strs,
  keys = strs, notKeys = strs, -- meltemi: Redis key prefixes
})

K.schema = shapes.document({
  spec = T.obj({
    selector = T.obj({ matchLabels = shapes.labels }),
    targetRef = T.any(), targetRefs = T.any(),
    action = T.enum({ "ALLOW", "DENY", "AUDIT", "CUSTOM" }),
    provider = T.any(),
    rules = T.list(T.obj({
      from = T.list(T.obj({ source = source })),
      to = T.list(T.obj({ operation = operation })),
      when = T.list(T.obj({ key = T.str{ required = true, non_empty = true },
        values = strs, notValues = strs })),
    })),
  }, { required = true }),
})

-- meltemi.fields: what every accepted field does (requestPrincipals, hosts, CUSTOM, provider
-- and targetRef(s) are consumed in the sense that the build refuses them with an error).
K.consumed = { "spec.selector", "spec.action", "spec.rules", "spec.provider", "spec.targetRef",
  "spec.targetRefs" }

local WHEN = {
  ["source.ip"] = "ip_blocks", ["remote.ip"] = "remote_ip_blocks",
  ["source.namespace"] = "namespaces", ["source.principal"] = "principals",
  ["destination.port"] = "ports",
}

local SOURCE_FIELDS = {
  principals = "principals", namespaces = "namespaces", ipBlocks = "ip_blocks",
  remoteIpBlocks = "remote_ip_blocks",
}
local OP_FIELDS = { methods = "methods", paths = "paths", keys = "keys", ports = "ports" }

local function is_cidr(s)
  local ip, bits = s:match("^([^/]+)/?(%d*)$")
  if not ip then return false end
  local a, b, c, d = ip:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if a then
    for _, x in ipairs({ a, b, c, d }) do
      if tonumber(x) > 255 then return false end
    end
    return bits == "" or tonumber(bits) <= 32
  end
  return ip:find(":", 1, true) ~= nil and ip:match("^[%x:%.]+$") ~= nil
    and (bits == "" or tonumber(bits) <= 128)
end

local function check_values(obj, c, path, field, values)
  for i, v in ipairs(values) do
    local p = T.join(path, i)
    if (field == "ip_blocks" or field == "remote_ip_blocks") and not is_cidr(v) then
      c:error(obj, p, string.format("%q is not an IP address or CIDR block", v))
      return false
    end
    if field == "ports" and not tostring(v):match("^%d+$") then
      c:error(obj, p, string.format("%q is not a port number", tostring(v)))
      return false
    end
  end
  return true
end

local function as_strings(list)
  local out = {}
  for i, v in ipairs(list) do out[i] = tostring(v) end
  return out
end

-- A source / operation -> the runtime's clause (field = values, not_field = values).
local function clause(obj, c, path, t, fields, refused)
  local out = {}
  for _, f in ipairs(refused) do
    for _, name in ipairs({ f, "not" .. f:sub(1, 1):upper() .. f:sub(2) }) do
      if t[name] then
        c:error(obj, T.join(path, name), "not supported: Redis and RPC requests carry no " .. f)
        return nil
      end
    end
  end
  for name, field in pairs(fields) do
    local neg = "not" .. name:sub(1, 1):upper() .. name:sub(2)
    for _, pair in ipairs({ { name, field }, { neg, "not_" .. field } }) do
      local v = t[pair[1]]
      if v then
        if not check_values(obj, c, T.join(path, pair[1]), field, v) then return nil end
        out[pair[2]] = as_strings(v)
      end
    end
  end
  return out
end

local function rule_of(obj, c, path, r)
  local out = { from = {}, to = {}, when = {} }
  for i, f in ipairs(r.from or {}) do
    local p = T.join(T.join(path, "from"), i)
    local cl = clause(obj, c, T.join(p, "source"), f.source or {}, SOURCE_FIELDS, { "requestPrincipals" })
    if not cl then return nil end
    out.from[#out.from + 1] = cl
  end
  for i, t in ipairs(r.to or {}) do
    local p = T.join(T.join(path, "to"), i)
    local cl = clause(obj, c, T.join(p, "operation"), t.operation or {}, OP_FIELDS, { "hosts" })
    if not cl then return nil end
    out.to[#out.to + 1] = cl
  end
  for i, w in ipairs(r.when or {}) do
    local p = T.join(T.join(path, "when"), i)
    local field = WHEN[w.key]
    if not field then
      c:error(obj, T.join(p, "key"), string.format("%q is not supported (supported: destination.port, "
        .. "remote.ip, source.ip, source.namespace, source.principal)", w.key))
      return nil
    end
    local cl = {}
    if w.values then
      if not check_values(obj, c, T.join(p, "values"), field, w.values) then return nil end
      cl[field] = as_strings(w.values)
    end
    if w.notValues then
      if not check_values(obj, c, T.join(p, "notValues"), field, w.notValues) then return nil end
      cl["not_" .. field] = as_strings(w.notValues)
    end
    out.when[#out.when + 1] = cl
  end
  return out
end

function K.build(obj, c)
  local spec = obj.doc.spec
  local action = spec.action or "ALLOW"
  if action == "CUSTOM" then
    c:error(obj, "spec.action", "CUSTOM (an external authorizer) is not supported")
    return
  end
  if spec.targetRef or spec.targetRefs then
    c:error(obj, spec.targetRef and "spec.targetRef" or "spec.targetRefs",
      "not supported: meltemi has no Gateway or Service targets; use selector")
    return
  end
  local policy = { name = obj.namespace .. "/" .. obj.name, action = action, rules = {} }
  for i, r in ipairs(spec.rules or {}) do
    local rule = rule_of(obj, c, T.join("spec.rules", i), r)
    if not rule then return end
    policy.rules[#policy.rules + 1] = rule
  end
  c.authz_policies = c.authz_policies or {}
  table.insert(c.authz_policies, { obj = obj, policy = policy })
end

function K.after_build(c)
  local list = c.authz_policies
  if not list then return end
  table.sort(list, function(a, b) return a.policy.name < b.policy.name end)
  local policies = {}
  for _, p in ipairs(list) do
    if c:selects_workload(p.obj.doc.spec.selector) then
      policies[#policies + 1] = p.policy
    else
      c:warn(p.obj, "spec.selector", "selects no workload meltemi serves (Sidecar workloadSelector "
        .. "labels); not applied")
    end
  end
  if #policies == 0 then return end
  for _, l in pairs(c.listeners) do l.authz = { policies = policies } end
end

return K
