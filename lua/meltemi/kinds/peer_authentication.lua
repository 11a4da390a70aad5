-- PeerAuthentication (security.istio.io): mutual TLS on the inbound listeners (the Sidecar's
-- ingress ports). mtls.mode STRICT takes only mTLS clients, PERMISSIVE takes mTLS and plain
-- text (the runtime looks for a TLS ClientHello in the first bytes), DISABLE plain text only;
-- portLevelMtls overrides it per port (the ingress port number or its target port).
--
-- Which one applies, as in Istio: one with a selector that matches the Sidecar's
-- workloadSelector labels beats one without; between equals the first by namespace/name
-- wins (with a warning). Without any PeerAuthentication the inbound listeners stay plain
-- text: unlike Istio's PERMISSIVE default, meltemi does not assume workload certificates
-- exist. mTLS uses the workload's Istio files (cert-chain.pem, key.pem, root-cert.pem under
-- --istio-certs) and the client's SPIFFE identity becomes the session's principal.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local tls = require "meltemi.tls"

local K = {
  kind = "PeerAuthentication",
  api_versions = { "security.istio.io/v1beta1", "security.istio.io/v1" },
  phase = 70,
}

local mode = T.obj({ mode = T.enum({ "UNSET", "DISABLE", "PERMISSIVE", "STRICT" }) })

K.schema = shapes.document({
  spec = T.obj({
    selector = T.obj({ matchLabels = shapes.labels }),
    mtls = mode,
    portLevelMtls = T.map(mode),
  }, { required = true }),
})

function K.build(obj, c)
  c.peer_auths = c.peer_auths or {}
  table.insert(c.peer_auths, obj)
end

-- meltemi.fields: what every accepted field does.
K.consumed = { "spec.selector", "spec.mtls", "spec.portLevelMtls" }

local function mode_for(pa, l, ep_port)
  local spec = pa.doc.spec
  local plm = spec.portLevelMtls or {}
  local m = plm[tostring(l.port)] or plm[tostring(ep_port)]
  if m and m.mode and m.mode ~= "UNSET" then return m.mode end
  if spec.mtls and spec.mtls.mode and spec.mtls.mode ~= "UNSET" then return spec.mtls.mode end
  return nil
end

-- The PeerAuthentication that governs this workload: selector matches beat namespace-wide.
local function governing(c)
  local best, best_rank, tie
  local list = c.peer_auths or {}
  table.sort(list, function(a, b) return (a.namespace .. "/" .. a.name) < (b.namespace .. "/" .. b.name) end)
  for _, pa in ipairs(list) do
    local applies, by_labels = c:selects_workload(pa.doc.spec.selector)
    local rank = applies and (by_labels and 2 or 1) or nil
    if rank then
      if not best or rank > best_rank then
        best, best_rank, tie = pa, rank, nil
      elseif rank == best_rank then
        tie = tie or pa
      end
    end
  end
  if tie then
    c:warn(tie, nil, string.format("%s applies to the same workload and wins (first by "
      .. "namespace/name); this one is ignored", c:where(best)))
  end
  return best
end

function K.after_build(c)
  local pa = governing(c)
  if not pa then return end
  for _, l in pairs(c.listeners) do
    if l.direction == "inbound" then
      local cl = c.snapshot.clusters[l.cluster]
      local ep_port = cl and cl.endpoints[1] and cl.endpoints[1].port
      local m = mode_for(pa, l, ep_port)
      if m == "STRICT" or m == "PERMISSIVE" then
        if l.tls then
          c:warn(pa, "spec", string.format("port %d terminates TLS itself (Sidecar ingress tls); "
            .. "mTLS from this PeerAuthentication does not apply there", l.port))
        else
          l.tls = tls.istio_mutual_server(m == "PERMISSIVE")
        end
      end
    end
  end
  for port in pairs(pa.doc.spec.portLevelMtls or {}) do
    local hit = false
    for _, l in pairs(c.listeners) do
      local cl = l.direction == "inbound" and c.snapshot.clusters[l.cluster]
      if cl and (tostring(l.port) == port or tostring(cl.endpoints[1] and cl.endpoints[1].port) == port) then
        hit = true
      end
    end
    if not hit then
      c:warn(pa, T.key("spec.portLevelMtls", port), "no inbound listener (Sidecar ingress) has this port")
    end
  end
end

return K
