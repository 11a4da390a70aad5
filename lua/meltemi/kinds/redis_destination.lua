-- RedisDestination (redis.aeraki.io/v1alpha1): how the proxy talks to a Redis service:
-- connection pool, PROXY or CLUSTER mode, auth towards Redis (plain or from a Secret) and
-- seed endpoints for cluster discovery. Applies to the host's redis ports; its tcp settings
-- win over a DestinationRule's for those clusters.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local compiler = require "meltemi.compiler"
local dr = require "meltemi.kinds.destination_rule"

local K = {
  kind = "RedisDestination",
  api_versions = { "redis.aeraki.io/v1alpha1" },
  phase = 40,
}

local function check_redis(redis, report)
  for i, e in ipairs(redis.discoveryEndpoints or {}) do
    if not compiler.split_host_port(e) then
      report(T.join("discoveryEndpoints", i), string.format("%q is not host:port", e))
    end
  end
  local s = redis.sentinel
  if s then
    if redis.mode == "CLUSTER" then
      report("sentinel", "Sentinel names the master of a primary/replica set: it needs mode PROXY, "
        .. "not CLUSTER")
    end
    if type(s.masterName) == "string" and (#s.masterName > 200 or s.masterName:find("[%s%c]")) then
      report("sentinel.masterName", "a Sentinel master name is at most 200 characters, without "
        .. "spaces or control characters")
    end
    if not s.addresses or #s.addresses == 0 then
      report("sentinel.addresses", "at least one Sentinel host:port is required")
    end
    for i, e in ipairs(s.addresses or {}) do
      if not compiler.split_host_port(e) then
        report(T.join("sentinel.addresses", i), string.format("%q is not host:port", e))
      end
    end
  end
end

-- redis.sentinel (a meltemi extension; Aeraki's API has no Sentinel field): the Sentinels
-- that name the service's master, the master's name among them, and the proxy's password
-- towards the Sentinels (a Sentinel's requirepass, not the data nodes').
local sentinel = T.obj({
  masterName = T.str{ required = true, non_empty = true },
  addresses = T.list(T.str()),
  auth = shapes.auth,
})

K.schema = shapes.document({
  spec = T.obj({
    host = T.str{ required = true, non_empty = true },
    trafficPolicy = T.obj({
      connectionPool = T.obj({
        tcp = shapes.tcp_settings,
        redis = T.obj({
          mode = T.enum({ "PROXY", "CLUSTER" }),
          auth = shapes.auth,
          discoveryEndpoints = T.list(T.str()),
          sentinel = sentinel,
        }, { check = check_redis }),
      }),
    }),
  }, { required = true }),
})

-- meltemi.fields: what every accepted field does (build below reads the consumed ones).
K.consumed = {
  "spec.host", "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
  -- the leases of transactions, blocking commands and SELECT (dr.apply_tcp)
  "spec.trafficPolicy.connectionPool.tcp.maxConnections",
  "spec.trafficPolicy.connectionPool.redis.mode", "spec.trafficPolicy.connectionPool.redis.auth",
  "spec.trafficPolicy.connectionPool.redis.discoveryEndpoints",
  -- Sentinel discovery (runtime/proxy/redis/sentinel.c)
  "spec.trafficPolicy.connectionPool.redis.sentinel.masterName",
  "spec.trafficPolicy.connectionPool.redis.sentinel.addresses",
  "spec.trafficPolicy.connectionPool.redis.sentinel.auth",
}
K.unenforced = {}
for _, f in ipairs({ "tcpKeepalive", "maxConnectionDuration", "idleTimeout" }) do
  K.unenforced["spec.trafficPolicy.connectionPool.tcp." .. f] = dr.unenforced["**.connectionPool.tcp." .. f]
end

function K.build(obj, c)
  local spec = obj.doc.spec
  local host = c:ref_host(obj, "spec.host", spec.host)
  if not host or not c:claim(obj, "spec.host", "RedisDestination", host) then return end
  local pool = spec.trafficPolicy and spec.trafficPolicy.connectionPool or {}
  local redis = pool.redis or {}
  local auth
  if redis.auth then
    auth = c:resolve_auth(obj, "spec.trafficPolicy.connectionPool.redis.auth", redis.auth)
  end
  local discovery = {}
  for _, e in ipairs(redis.discoveryEndpoints or {}) do
    local h, p = compiler.split_host_port(e)
    discovery[#discovery + 1] = { address = h, port = p }
  end
  if #discovery > 0 and (redis.mode or "PROXY") ~= "CLUSTER" then
    c:warn(obj, "spec.trafficPolicy.connectionPool.redis.discoveryEndpoints", "accepted but not enforced: "
      .. "discovery endpoints seed CLUSTER mode; PROXY mode uses the service's endpoints")
  end
  local sentinel_conf
  if redis.sentinel then
    local s = redis.sentinel
    local addrs = {}
    for _, e in ipairs(s.addresses or {}) do
      local h, p = compiler.split_host_port(e)
      addrs[#addrs + 1] = { address = h, port = p }
    end
    sentinel_conf = { master_name = s.masterName, addresses = addrs }
    if s.auth then
      sentinel_conf.auth = c:resolve_auth(obj, "spec.trafficPolicy.connectionPool.redis.sentinel.auth",
        s.auth)
    end
  end
  local applied = false
  local ports = {}
  for port in pairs(c.clusters_by_host[host]) do ports[#ports + 1] = port end
  table.sort(ports)
  for _, port in ipairs(ports) do
    local cl = c.clusters_by_host[host][port]
    if cl.protocol == "redis" then
      applied = true
      if pool.tcp then dr.apply_tcp(cl, pool.tcp) end
      cl.redis.mode = redis.mode or "PROXY"
      cl.redis.auth = auth
      cl.redis.discovery_endpoints = discovery
      cl.redis.sentinel = sentinel_conf
      if sentinel_conf and #(cl.endpoints or {}) > 0 then
        c:warn(obj, "spec.trafficPolicy.connectionPool.redis.sentinel", string.format(
          "%s port %s: the Sentinels name the master and replicas; the service's %d endpoint(s) "
          .. "are not used", host, tostring(port), #cl.endpoints))
      end
    end
  end
  if not applied then
    c:warn(obj, "spec.host", string.format("%s has no redis port (a port named tcp-redis*): "
      .. "this RedisDestination has no effect", host))
  end
end

return K
