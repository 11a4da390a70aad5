-- MetaRouter (metaprotocol.aeraki.io/v1alpha1): routes of a metaprotocol service (Dubbo,
-- Thrift, ...): match on metadata attributes, weighted destinations with subsets, mirror,
-- request/response mutations, local and global rate limits. Fills listener.metaprotocol of
-- the hosts' metaprotocol listeners. Aeraki honours only hosts[0]; meltemi applies the
-- router to every host listed.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "MetaRouter",
  api_versions = { "metaprotocol.aeraki.io/v1alpha1" },
  phase = 50,
}

local destination = T.obj({
  host = T.str{ required = true, non_empty = true },
  subset = T.str{ non_empty = true },
  port = T.obj({ number = shapes.port_number }),
})

local mutation = T.list(T.obj({
  key = T.str{ required = true, non_empty = true },
  value = T.str{ required = true, non_empty = true },
}))

local match = T.obj({ attributes = T.map(shapes.string_match) })

local token_bucket = shapes.token_bucket

-- retries.retryOn (Istio's comma-separated string): the conditions that apply to RPC.
local RETRY_ON = { ["connect-failure"] = true, reset = true, ["gateway-error"] = true, ["5xx"] = true }

local function retry_on_list(s)
  local out = {}
  for tok in (s or "connect-failure"):gmatch("[^,%s]+") do out[#out + 1] = tok end
  return out
end

local function check_route(r, report)
  if r.retries then
    for _, tok in ipairs(retry_on_list(r.retries.retryOn)) do
      if not RETRY_ON[tok] then
        report("retries.retryOn", string.format("%q does not apply to RPC (use connect-failure, reset, "
          .. "gateway-error, 5xx)", tok))
      end
    end
  end
  if r.mirrorPercentage and not r.mirror then
    report("mirrorPercentage", "set without a mirror")
  end
  if r.mirrorPercentage and r.mirrorPercentage.value ~= nil and r.mirrorPercentage.value <= 0 then
    report("mirrorPercentage.value", "must be greater than 0")
  end
  local dests = r.route or {}
  if #dests > 1 then
    local sum = 0
    for _, d in ipairs(dests) do sum = sum + (d.weight or 0) end
    if sum ~= 100 then
      report("route", string.format("weights add up to %s; they must add up to 100", tostring(sum)))
    end
  end
end

local function check_spec(spec, report)
  if not spec.routes and not spec.localRateLimit and not spec.globalRateLimit then
    report(nil, "needs routes, localRateLimit or globalRateLimit")
  end
end

K.schema = shapes.document({
  spec = T.obj({
    hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
    gateways = T.list(T.str()),
    exportTo = T.list(T.str()),
    routes = T.list(T.obj({
      name = T.str(),
      match = match,
      route = T.list(T.obj({
        destination = T.with(destination, { required = true }),
        weight = T.int{ min = 0, max = 100 },
      }), { required = true, min_items = 1 }),
      mirror = destination,
      mirrorPercentage = T.obj({ value = T.num{ min = 0, max = 100 } }),
      requestMutation = mutation,
      responseMutation = mutation,
      -- meltemi extensions (Istio VirtualService's names; Aeraki has none of these):
      timeout = T.dur(),
      retries = T.obj({
        attempts = T.int{ required = true, min = 0, max = 10 },
        perTryTimeout = T.dur(),
        retryOn = T.str{ non_empty = true },
      }),
      fault = T.obj({
        abort = T.obj({
          percentage = shapes.percentage,
          errorCode = T.int{ required = true, min = 100, max = 599 },
        }),
        delay = T.obj({
          percentage = shapes.percentage,
          fixedDelay = T.dur{ required = true },
        }),
      }, { check = function(f, report)
        if not f.abort and not f.delay then report(nil, "needs abort or delay") end
      end }),
    }, { check = check_route })),
    localRateLimit = T.obj({
      tokenBucket = token_bucket,
      conditions = T.list(T.obj({ match = match, tokenBucket = T.with(token_bucket, { required = true }) })),
    }),
    globalRateLimit = T.obj({
      match = match,
      domain = T.str{ required = true, non_empty = true },
      requestTimeout = T.dur(),
      denyOnFail = T.bool(),
      rateLimitService = T.str{ required = true, non_empty = true },
      descriptors = T.list(T.obj({
        property = T.str{ required = true }, descriptorKey = T.str{ required = true },
      })),
    }),
  }, { required = true, check = check_spec }),
})

local function compile_match(m)
  local out, keys = {}, {}
  for k in pairs(m and m.attributes or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local sm = m.attributes[k]
    local e = { key = k, exact = sm.exact, prefix = sm.prefix, regex = sm.regex }
    if not (sm.exact or sm.prefix or sm.regex) then e.present = true end
    out[#out + 1] = e
  end
  return out
end

local function compile_mutation(list)
  local out = {}
  for _, m in ipairs(list or {}) do out[#out + 1] = { key = m.key, value = m.value } end
  return out
end

local compile_bucket = shapes.compile_token_bucket

-- A Destination seen from listener l -> { cluster, subset } (nil after reporting).
local function compile_destination(obj, c, path, d, l)
  local host = c:ref_host(obj, T.join(path, "host"), d.host)
  if not host then return nil end
  local port = d.port and d.port.number
  local cl = c:pick_cluster(obj, port and T.join(path, "port.number") or T.join(path, "host"), host, port,
    "metaprotocol", l.port)
  if not cl then return nil end
  if d.subset and not (c.subsets_by_host[host] or {})[d.subset] then
    c:error(obj, T.join(path, "subset"), string.format("subset %q of %s is not defined by a DestinationRule",
      d.subset, host))
  end
  return { cluster = cl.name, subset = d.subset }
end

-- fault.abort's errorCode (HTTP-style, as in Istio) -> the codec error it answers with
-- (codec.h's kinds; each codec maps them to its own: Dubbo status, Thrift exception type).
local ABORT_KINDS = { [404] = "route_not_found", [429] = "over_limit", [502] = "bad_response",
  [503] = "no_healthy_upstream", [504] = "upstream_timeout" }

local function compile_routes(obj, c, l, spec)
  local routes, open_ended = {}, nil
  for i, r in ipairs(spec.routes or {}) do
    local path = T.join("spec.routes", i)
    if open_ended then
      c:warn(obj, path, string.format("unreachable: routes[%d] before it matches every request",
        open_ended - 1))
    end
    local m = compile_match(r.match)
    if #m == 0 and not open_ended then open_ended = i end
    local route = { name = r.name or ("route-" .. (i - 1)), match = m, route = {},
      request_mutation = compile_mutation(r.requestMutation),
      response_mutation = compile_mutation(r.responseMutation),
      timeout_ms = r.timeout and math.max(1, T.duration_ms(r.timeout)) or nil }
    if r.retries and r.retries.attempts > 0 then
      route.retries = { attempts = r.retries.attempts, retry_on = retry_on_list(r.retries.retryOn),
        per_try_timeout_ms = r.retries.perTryTimeout and math.max(1, T.duration_ms(r.retries.perTryTimeout))
          or nil }
    end
    local a = r.fault and r.fault.abort
    if a then
      route.fault_abort = { percentage = a.percentage and a.percentage.value or 100,
        error_kind = ABORT_KINDS[a.errorCode] or "unspecified" }
    end
    local delay = r.fault and r.fault.delay
    if delay and T.duration_ms(delay.fixedDelay) > 0 then
      route.fault_delay = { percentage = delay.percentage and delay.percentage.value or 100,
        delay_ms = T.duration_ms(delay.fixedDelay) }
    end
    for j, d in ipairs(r.route) do
      local dest = compile_destination(obj, c, T.join(T.join(path, "route"), j) .. ".destination",
        d.destination, l)
      if dest then
        dest.weight = d.weight or (#r.route == 1 and 100 or 0)
        route.route[#route.route + 1] = dest
      end
    end
    if r.mirror then
      local mirror = compile_destination(obj, c, T.join(path, "mirror"), r.mirror, l)
      if mirror then
        mirror.percentage = r.mirrorPercentage and r.mirrorPercentage.value or 100
        route.mirror = mirror
      end
    end
    routes[#routes + 1] = route
  end
  if #routes == 0 then
    return require("meltemi.compiler").metaprotocol_defaults(l.cluster).routes
  end
  return routes
end

-- globalRateLimit.rateLimitService -> the cluster asked: an Envoy cluster name as Aeraki
-- writes it (outbound|PORT||HOST), or HOST:PORT, or a HOST with one port; a ServiceEntry must
-- define it (its endpoints are the rate limit service's addresses). nil after reporting.
local function rate_limit_cluster(obj, c, name)
  local clusters = c.snapshot.clusters
  if clusters[name] then return name end
  local h, p = require("meltemi.compiler").split_host_port(name)
  local cn = h and require("meltemi.compiler").cluster_name(p, nil, h)
  if cn and clusters[cn] then return cn end
  local found
  for cname, cl in pairs(clusters) do
    if cl.service == name then
      if found then found = false; break end
      found = cname
    end
  end
  if found then return found end
  c:error(obj, "spec.globalRateLimit.rateLimitService", string.format("%q names no cluster (write "
    .. "outbound|PORT||HOST or HOST:PORT of a ServiceEntry's port%s)", name,
    found == false and "; the host has several ports" or ""))
  return nil
end

local function compile_rate_limits(obj, c, spec, mp)
  local lrl = spec.localRateLimit
  if lrl then
    mp.local_rate_limit = { token_bucket = lrl.tokenBucket and compile_bucket(lrl.tokenBucket),
      conditions = {} }
    for _, cond in ipairs(lrl.conditions or {}) do
      table.insert(mp.local_rate_limit.conditions,
        { match = compile_match(cond.match), token_bucket = compile_bucket(cond.tokenBucket) })
    end
  end
  local grl = spec.globalRateLimit
  if grl then
    local descriptors = {}
    for _, d in ipairs(grl.descriptors or {}) do
      descriptors[#descriptors + 1] = { property = d.property, descriptor_key = d.descriptorKey }
    end
    local cluster = rate_limit_cluster(obj, c, grl.rateLimitService)
    if cluster then
      mp.global_rate_limit = { match = compile_match(grl.match), domain = grl.domain,
        request_timeout_ms = grl.requestTimeout and math.max(1, T.duration_ms(grl.requestTimeout)) or 20,
        deny_on_fail = grl.denyOnFail or false, rate_limit_service = grl.rateLimitService,
        rate_limit_cluster = cluster, descriptors = descriptors }
    end
  end
end

-- meltemi.fields: what every accepted field does. routes[] is read whole by compile_routes,
-- localRateLimit by compile_rate_limits (meta_snapshot.c / meta_proxy.c act on both: one
-- token bucket per condition, shared by every worker, runtime/core/ratelimit.h);
-- globalRateLimit too (an Envoy rate limit service asked over gRPC, runtime/core/rls.h).
K.consumed = { "spec.hosts", "spec.gateways", "spec.routes", "spec.localRateLimit",
  "spec.globalRateLimit" }
K.unenforced = {
  ["spec.exportTo"] = "one proxy sees every router: there is no export scope",
}

function K.build(obj, c)
  local spec = obj.doc.spec
  for i, h in ipairs(spec.hosts) do
    local path = T.join("spec.hosts", i)
    local host = c:ref_host(obj, path, h)
    -- gateways (Istio's VirtualService rule): none or "mesh" = the sidecar's listeners of the
    -- host, a Gateway's name = that gateway's listeners for it. One MetaRouter per host and
    -- target.
    for _, t in ipairs(host and c:listeners_for(obj, "spec.gateways", host, spec.gateways) or {}) do
      local key = t.target == "mesh" and host or (host .. " on Gateway " .. t.target)
      if c:claim(obj, path, "MetaRouter", key) then
        local applied = false
        for _, l in ipairs(t.listeners) do
          if l.protocol == "metaprotocol" then
            applied = true
            local mp = { routes = compile_routes(obj, c, l, spec),
              source = { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name } }
            compile_rate_limits(obj, c, spec, mp)
            l.metaprotocol = mp
          end
        end
        if not applied and t.target == "mesh" then
          c:warn(obj, path, string.format("%s has no metaprotocol listener (a tcp-metaprotocol-* port on an "
            .. "address): this MetaRouter has no effect", host))
        elseif not applied then
          c:warn(obj, path, string.format("Gateway %s has no metaprotocol server for %s: this MetaRouter has "
            .. "no effect there", t.target, host))
        end
      end
    end
  end
end

return K
