-- DestinationRule (networking.istio.io): subsets by label and the traffic policy of a
-- host's clusters (load balancing incl. consistent hashing, connection pool, outlier
-- detection, TLS), with per-port overrides (portLevelSettings). Aeraki reuses
-- consistentHash.httpHeaderName as the metadata key hashed for metaprotocol services.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local tls = require "meltemi.tls"

local K = {
  kind = "DestinationRule",
  api_versions = { "networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1" },
  phase = 30,
}

local consistent_hash = T.obj({
  httpHeaderName = T.str{ non_empty = true },
  httpCookie = T.obj({ name = T.str{ required = true }, path = T.str(), ttl = T.dur() }),
  useSourceIp = T.bool(),
  httpQueryParameterName = T.str{ non_empty = true },
  ringHash = T.obj({ minimumRingSize = T.int{ min = 1 } }),
  maglev = T.obj({ tableSize = T.int{ min = 1 } }),
  minimumRingSize = T.int{ min = 1 },
}, { one_of = { { "httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName" },
  { "ringHash", "maglev" } } })

local policy_fields = {
  loadBalancer = T.obj({
    simple = T.enum({ "UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST" }),
    consistentHash = consistent_hash,
    localityLbSetting = T.any(),
    warmupDurationSecs = T.dur(),
    warmup = T.any(),
  }, { one_of = { { "simple", "consistentHash" } } }),
  connectionPool = T.obj({
    tcp = shapes.tcp_settings,
    http = T.obj({
      http1MaxPendingRequests = T.int(), http2MaxRequests = T.int(), maxRequestsPerConnection = T.int(),
      maxRetries = T.int(), idleTimeout = T.dur(), h2UpgradePolicy = T.str(), useClientProtocol = T.bool(),
      maxConcurrentStreams = T.int(),
    }),
  }),
  outlierDetection = T.obj({
    consecutiveErrors = T.int{ min = 0 }, consecutive5xxErrors = T.int{ min = 0 },
    consecutiveGatewayErrors = T.int{ min = 0 }, consecutiveLocalOriginFailures = T.int{ min = 0 },
    splitExternalLocalOriginErrors = T.bool(),
    interval = T.dur(), baseEjectionTime = T.dur(),
    maxEjectionPercent = T.int{ min = 0, max = 100 }, minHealthPercent = T.int{ min = 0, max = 100 },
  }),
  tls = tls.client_schema,
  tunnel = T.any(),
  proxyProtocol = T.any(),
}

local port_fields = { port = T.obj({ number = T.with(shapes.port_number, { required = true }) },
  { required = true }) }
for k, v in pairs(policy_fields) do port_fields[k] = v end

local function policy(extra)
  local f = {}
  for k, v in pairs(policy_fields) do f[k] = v end
  for k, v in pairs(extra or {}) do f[k] = v end
  return T.obj(f)
end

local function check_spec(spec, report)
  local seen = {}
  for i, s in ipairs(spec.subsets or {}) do
    if seen[s.name] then
      report(T.join(T.join("subsets", i), "name"), string.format("subset %q is defined twice", s.name))
    end
    seen[s.name] = true
  end
end

K.schema = shapes.document({
  spec = T.obj({
    host = T.str{ required = true, non_empty = true },
    trafficPolicy = policy({ portLevelSettings = T.list(T.obj(port_fields)) }),
    subsets = T.list(T.obj({
      name = T.str{ required = true, non_empty = true },
      labels = shapes.labels,
      trafficPolicy = policy({ portLevelSettings = T.list(T.obj(port_fields)) }),
    })),
    exportTo = T.list(T.str()),
    workloadSelector = T.obj({ matchLabels = shapes.labels }),
  }, { required = true, check = check_spec }),
})

local function secs(d, default)
  if not d then return default end
  return math.floor(T.parse_duration(d) / 1000 + 0.5)
end

-- Istio TCPSettings (validated) onto a cluster (also used by RedisDestination).
-- What maxConnections bounds (docs/configuration.md, "Connection pool"), per worker: Redis's
-- exclusive (leased) connections per endpoint (transactions, docs/redis-codec.md), plain TCP's
-- relays (each one upstream connection: the client over the bound is refused), MetaProtocol's
-- shared connections of the cluster (over it, requests share the endpoint's open connection
-- or get the codec's over-limit error, flag UO). maxConnectionDuration
-- and idleTimeout drain or close pooled connections (Redis, MetaProtocol); on plain TCP, whose
-- relay is the client's connection end to end, they close the client/upstream pair
-- (runtime/proxy/tcp/tcp_proxy.c). obj, c, path: given by the callers that can report.
function K.apply_tcp(cl, tcp, obj, c, path)
  if tcp.maxConnections then cl.max_connections = tcp.maxConnections end
  if tcp.connectTimeout then cl.connect_timeout_ms = T.duration_ms(tcp.connectTimeout) end
  if tcp.tcpKeepalive then
    local k = tcp.tcpKeepalive
    -- Istio's defaults are the kernel's (net.ipv4.tcp_keepalive_*): 2 h, 75 s, 9 probes.
    cl.tcp_keepalive = { time_s = math.max(secs(k.time, 7200), 1),
      interval_s = math.max(secs(k.interval, 75), 1),
      probes = (k.probes and k.probes > 0) and k.probes or 9 }
  end
  if tcp.maxConnectionDuration then
    cl.max_connection_duration_ms = T.duration_ms(tcp.maxConnectionDuration)
  end
  if tcp.idleTimeout then cl.idle_timeout_ms = T.duration_ms(tcp.idleTimeout) end
end

-- Istio ConnectionPoolSettings.HTTPSettings: of these, RPC (MetaProtocol) and Redis take
-- maxRequestsPerConnection (a shared connection that carried that many is drained and
-- replaced), http1MaxPendingRequests (requests waiting for a connection that is still
-- connecting, per cluster and worker) and idleTimeout (tcp.idleTimeout wins when both are
-- set; plain TCP takes it too).
local HTTP_RPC_ONLY = {
  tcp = "plain TCP has no requests",
}

function K.apply_http(cl, http, obj, c, path)
  if http.maxRequestsPerConnection and HTTP_RPC_ONLY[cl.protocol] then
    c:warn(obj, T.join(path, "maxRequestsPerConnection"), "accepted but not enforced: "
      .. HTTP_RPC_ONLY[cl.protocol])
  end
  if http.http1MaxPendingRequests and HTTP_RPC_ONLY[cl.protocol] then
    c:warn(obj, T.join(path, "http1MaxPendingRequests"), "accepted but not enforced: "
      .. HTTP_RPC_ONLY[cl.protocol])
  end
  if http.http1MaxPendingRequests and http.http1MaxPendingRequests > 0 then
    cl.max_pending_requests = http.http1MaxPendingRequests
  end
  if http.maxRequestsPerConnection and http.maxRequestsPerConnection > 0 then
    cl.max_requests_per_connection = http.maxRequestsPerConnection
  end
  if http.idleTimeout and not cl.idle_timeout_ms then
    cl.idle_timeout_ms = T.duration_ms(http.idleTimeout)
  end
end

local LB = { UNSPECIFIED = "ROUND_ROBIN", ROUND_ROBIN = "ROUND_ROBIN", LEAST_CONN = "LEAST_REQUEST",
  LEAST_REQUEST = "LEAST_REQUEST", RANDOM = "RANDOM", PASSTHROUGH = "ROUND_ROBIN" }

-- Which protocols read a cluster's load balancing: MetaProtocol picks endpoints with it;
-- Redis hashes keys (PROXY) or follows slots (CLUSTER); plain TCP takes turns.
local LB_IGNORED_BY = {
  redis = "Redis clusters do not use loadBalancer: PROXY mode hashes keys over the endpoints, "
    .. "CLUSTER mode follows the slot map",
  tcp = "plain TCP clusters do not use loadBalancer: connections take the endpoints in turn",
}

local function apply_lb(obj, c, path, cl, lb)
  if cl.protocol and LB_IGNORED_BY[cl.protocol] then
    c:warn(obj, path, "accepted but not enforced: " .. LB_IGNORED_BY[cl.protocol])
  end
  if lb.simple then
    if lb.simple == "PASSTHROUGH" then
      c:warn(obj, T.join(path, "simple"), "PASSTHROUGH is not supported; ROUND_ROBIN is used")
    end
    cl.lb_policy = LB[lb.simple]
  elseif lb.consistentHash then
    local h = lb.consistentHash
    if not (h.httpHeaderName or h.useSourceIp or h.httpCookie or h.httpQueryParameterName) then
      c:warn(obj, T.join(path, "consistentHash"), "no hash key (httpHeaderName names the request "
        .. "attribute to hash): every request goes to a random endpoint")
    end
    cl.lb_policy = "RING_HASH"
    cl.hash_key = h.httpHeaderName
    cl.hash_source_ip = h.useSourceIp or nil
    cl.hash_cookie = h.httpCookie and h.httpCookie.name or nil
    cl.hash_query_parameter = h.httpQueryParameterName
    cl.ring_size = h.minimumRingSize or (h.ringHash and h.ringHash.minimumRingSize) or nil
  end
end

-- A validated TrafficPolicy onto cl (a cluster, or a subset's policy table).
function K.apply_policy(obj, c, path, cl, tp)
  if tp.loadBalancer then apply_lb(obj, c, T.join(path, "loadBalancer"), cl, tp.loadBalancer) end
  if tp.connectionPool and tp.connectionPool.tcp then
    K.apply_tcp(cl, tp.connectionPool.tcp, obj, c, T.join(path, "connectionPool.tcp"))
  end
  if tp.connectionPool and tp.connectionPool.http and cl.name then
    K.apply_http(cl, tp.connectionPool.http, obj, c, T.join(path, "connectionPool.http"))
  end
  local od = tp.outlierDetection
  if od then
    cl.outlier_detection = {
      consecutive_errors = od.consecutive5xxErrors or od.consecutiveErrors or 5,
      consecutive_gateway_errors = od.consecutiveGatewayErrors,
      consecutive_local_origin_failures = od.consecutiveLocalOriginFailures,
      interval_ms = od.interval and T.duration_ms(od.interval) or 10000,
      base_ejection_time_ms = od.baseEjectionTime and T.duration_ms(od.baseEjectionTime) or 30000,
      max_ejection_percent = od.maxEjectionPercent or 10,
      min_health_percent = od.minHealthPercent or 0,
    }
  end
  if tp.tls then
    local tpath = T.join(path, "tls")
    if not cl.name then
      return -- a subset's: warned as not enforced (K.unenforced)
    end
    cl.tls = tls.client(obj, c, tpath, tp.tls)
  end
  for i, pls in ipairs(tp.portLevelSettings or {}) do
    if cl.port == pls.port.number then
      K.apply_policy(obj, c, T.join(T.join(path, "portLevelSettings"), i), cl, pls)
    end
  end
end

-- ---- meltemi.fields: what every accepted field does ---------------------------------------
-- "**." covers the rule's trafficPolicy, its portLevelSettings[] and the same in subsets[].
-- A subset's policy is read for load balancing only (meta_snapshot.c reads lb_policy,
-- hash_key and ring_size of subsets[].policy); its other settings are the cluster's.

K.consumed = {
  "spec.host", "spec.subsets[].name", "spec.subsets[].labels", "**.portLevelSettings[].port.number",
  "**.loadBalancer.simple",                      -- MetaProtocol's picker (warns for Redis, TCP)
  "**.loadBalancer.consistentHash.httpHeaderName", -- the attribute MetaProtocol hashes
  "**.loadBalancer.consistentHash.useSourceIp",    -- MetaProtocol hashes the client's IP
  "**.loadBalancer.consistentHash.minimumRingSize", "**.loadBalancer.consistentHash.ringHash",
  "**.connectionPool.tcp.connectTimeout",        -- every protocol's upstream connect
  "**.tls",                                      -- runtime/core/tls.c
  "**.outlierDetection",                         -- runtime/core/outlier.c, every protocol
  "**.connectionPool.tcp.maxConnections",        -- Redis leases, TCP relays, MetaProtocol connections
  "**.connectionPool.tcp.tcpKeepalive",          -- every upstream socket (core/upstream.c)
  "**.connectionPool.tcp.maxConnectionDuration", -- pooled connections drain, TCP relays close
  "**.connectionPool.tcp.idleTimeout",           -- pooled connections and TCP relays close
  "**.connectionPool.http.maxRequestsPerConnection", -- RPC and Redis (warns on TCP)
  "**.connectionPool.http.idleTimeout",          -- as tcp.idleTimeout
  "**.connectionPool.http.http1MaxPendingRequests", -- RPC and Redis: answered natively, flag UO
}

K.unenforced = {
  ["**.loadBalancer.consistentHash.httpCookie"] = "Redis and RPC requests carry no cookies: requests "
    .. "go to random endpoints",
  ["**.loadBalancer.consistentHash.httpQueryParameterName"] = "Redis and RPC requests carry no query "
    .. "parameters: requests go to random endpoints",
  ["**.loadBalancer.consistentHash.maglev"] = "no Maglev table: a ring hash is used",
  ["**.loadBalancer.localityLbSetting"] = "no locality-aware load balancing: localities are ignored",
  ["**.loadBalancer.warmupDurationSecs"] = "no slow start: new endpoints get their full share at once",
  ["**.loadBalancer.warmup"] = "no slow start: new endpoints get their full share at once",
  ["spec.subsets[].trafficPolicy.connectionPool"] = "a subset's connection pool is its cluster's "
    .. "(set it on the rule's trafficPolicy)",
  ["spec.subsets[].trafficPolicy.portLevelSettings[].connectionPool"] = "a subset's connection pool is "
    .. "its cluster's (set it on the rule's trafficPolicy)",
  ["**.connectionPool.http"] = "HTTP connection pool settings: meltemi proxies no HTTP (of these, "
    .. "RPC and Redis take maxRequestsPerConnection, http1MaxPendingRequests and idleTimeout)",
  ["**.outlierDetection.consecutiveLocalOriginFailures"] = "local-origin failures are not told apart: "
    .. "they count as gateway errors",
  ["**.outlierDetection.splitExternalLocalOriginErrors"] = "local-origin failures are not told apart: "
    .. "they count as gateway errors",
  ["spec.subsets[].trafficPolicy.outlierDetection"] = "outlier detection is per cluster: set it on the "
    .. "rule's trafficPolicy",
  ["spec.subsets[].trafficPolicy.portLevelSettings[].outlierDetection"] = "outlier detection is per "
    .. "cluster: set it on the rule's trafficPolicy",
  ["spec.subsets[].trafficPolicy.tls"] = "a subset's tls is its host's (set it on the rule's "
    .. "trafficPolicy or its portLevelSettings)",
  ["spec.subsets[].trafficPolicy.portLevelSettings[].tls"] = "a subset's tls is its host's (set it "
    .. "on the rule's trafficPolicy or its portLevelSettings)",
  ["**.tunnel"] = "no tunnelling (HTTP CONNECT)",
  ["**.proxyProtocol"] = "no PROXY protocol header is sent upstream",
  ["spec.exportTo"] = "one proxy sees every rule: there is no export scope",
  ["spec.workloadSelector"] = "the rule applies to this proxy whatever its workload labels",
}

local function labels_match(sel, labels)
  for k, v in pairs(sel) do
    if labels[k] ~= v then return false end
  end
  return true
end

function K.index(obj, c)
  local spec = obj.doc.spec
  local host = c:ref_host(obj, "spec.host", spec.host)
  obj.host = host
  if not host or not c:claim(obj, "spec.host", "DestinationRule", host) then
    obj.host = nil
    return
  end
  local names = c.subsets_by_host[host] or {}
  c.subsets_by_host[host] = names
  for _, s in ipairs(spec.subsets or {}) do names[s.name] = true end
end

-- Istio's auto-mTLS (docs/security.md): a cluster that no DestinationRule gives tls, with
-- endpoints labelled security.istio.io/tlsMode: istio (their sidecar takes mTLS), speaks
-- ISTIO_MUTUAL to those endpoints and plain text to the others. Without usable workload
-- files (--istio-certs) the runtime turns it off with a warning (tls.auto).
local TLS_MODE = "security.istio.io/tlsMode"

function K.after_build(c)
  for _, cl in pairs(c.snapshot.clusters) do
    if cl.tls == nil then
      local any = false
      for _, ep in ipairs(cl.endpoints or {}) do
        any = any or (ep.labels and ep.labels[TLS_MODE] == "istio")
      end
      if any then
        cl.tls = { mode = "ISTIO_MUTUAL", auto = true }
        for _, ep in ipairs(cl.endpoints) do
          if not (ep.labels and ep.labels[TLS_MODE] == "istio") then ep.plain = true end
        end
      end
    end
  end
end

function K.build(obj, c)
  local host = obj.host
  if not host then return end
  local spec = obj.doc.spec
  local ports = {}
  for port in pairs(c.clusters_by_host[host]) do ports[#ports + 1] = port end
  table.sort(ports)
  for _, port in ipairs(ports) do
    local cl = c.clusters_by_host[host][port]
    if spec.trafficPolicy then K.apply_policy(obj, c, "spec.trafficPolicy", cl, spec.trafficPolicy) end
    for i, s in ipairs(spec.subsets or {}) do
      local sub = { labels = s.labels or {} }
      if s.trafficPolicy then
        sub.policy = { port = port }
        local tp_path = T.join(T.join("spec.subsets", i), "trafficPolicy")
        K.apply_policy(obj, c, tp_path, sub.policy, s.trafficPolicy)
        sub.policy.port = nil
      end
      cl.subsets[s.name] = sub
      if cl.resolution == "STATIC" and #cl.endpoints > 0 then
        local any = false
        for _, ep in ipairs(cl.endpoints) do
          if labels_match(sub.labels, ep.labels or {}) then any = true end
        end
        if not any then
          c:warn(obj, T.join(T.join("spec.subsets", i), "labels"), string.format(
            "subset %q selects no endpoint of %s", s.name, cl.name))
        end
      end
    end
  end
end

return K
