-- meltemi.hosts: how a host name written in a resource of namespace ns is read, Istio style.
-- One reading for the compiler (ServiceEntry hosts, DestinationRule / RedisService /
-- MetaRouter / LuaFilter references) and for meltemi.redis.worker (ctx:route, ctx:mirror).
--
--   hosts.qualify(host, ns)          -> the one name a declared host is registered under
--   hosts.candidates(host, ns)       -> the names a reference may mean, in the order tried
--   hosts.resolve(known, host, ns)   -> the first candidate known[c] has, or nil; candidates
--
-- The rules (Istio's ResolveShortnameToFQDN, plus the completions a Kubernetes resolver's
-- search path makes, which users write in Aeraki resources):
--   "svc"            a short name is a Service of ns, never anything else:
--                    svc.<ns>.svc.cluster.local (the namespace of the resource that names it,
--                    not the one of the service)
--   "svc.ns"         as written, then svc.ns.svc.cluster.local
--   "svc.ns.svc"     as written, then svc.ns.svc.cluster.local (any name ending in .svc
--                    gets .cluster.local)
--   FQDN             as written
--   "*", "*.x.com"   wildcards are fully qualified: as written, never completed. A reference
--                    names the wildcard service itself; a concrete name is not matched
--                    against wildcards (the compiler keeps one service per reference).
--   "10.0.0.1", "::1"  IP addresses as written (a name with ':' is never a DNS name)

local M = {}

M.CLUSTER_DOMAIN = "svc.cluster.local"
M.DEFAULT_NAMESPACE = "default"

-- The FQDN a Kubernetes Service gets.
function M.service_fqdn(name, ns)
  return name .. "." .. (ns or M.DEFAULT_NAMESPACE) .. "." .. M.CLUSTER_DOMAIN
end

-- Names that are taken as written, whatever their dots.
local function is_literal(host)
  return host:byte(1) == 42 --[[ '*' ]] or host:find(":", 1, true) ~= nil
end

local function is_short(host)
  return not host:find(".", 1, true) and not is_literal(host)
end

function M.qualify(host, ns)
  if is_short(host) then return M.service_fqdn(host, ns) end
  return host
end

function M.candidates(host, ns)
  if is_short(host) then return { M.service_fqdn(host, ns) } end
  local list = { host }
  if is_literal(host) then return list end
  local dots = select(2, host:gsub("%.", ""))
  if dots == 1 then list[#list + 1] = host .. "." .. M.CLUSTER_DOMAIN end
  if host:sub(-4) == ".svc" then list[#list + 1] = host .. ".cluster.local" end
  return list
end

-- known: a table keyed by qualified host (the compiler's services, the worker's index).
function M.resolve(known, host, ns)
  local cands = M.candidates(host, ns)
  for _, h in ipairs(cands) do
    if known[h] then return h, cands end
  end
  return nil, cands
end

return M
