-- RedisService (redis.aeraki.io/v1alpha1): what a client of a Redis service gets from the
-- proxy: settings (timeouts, read policy, client auth), key-prefix routes with mirrors, and
-- fault injection. Fills listener.redis of the host's redis listeners. Without redis[] the
-- service routes everything to its own cluster (the blog's step 2); with routes but no
-- catch-all, unmatched keys also go to the service's own cluster.

local C = require "meltemi.c"
local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local command_names = require "meltemi.redis.command_names"

local K = {
  kind = "RedisService",
  api_versions = { "redis.aeraki.io/v1alpha1" },
  phase = 50,
}

local route_target = T.obj({
  host = T.str{ required = true, non_empty = true },
  port = shapes.port_number,
}, { required = true })

local function check_fault(f, report)
  if f.type == "DELAY" and not f.delay then report("delay", "required for a DELAY fault") end
end

-- "flushall", "CONFIG SET", "config|set": a command, or a container and its subcommand.
-- The runtime's form of a denied name: lower case, "container|sub".
local function denied_name(v)
  return (v:lower():gsub(" ", "|"))
end

local function check_denied_name(v)
  if not command_names[denied_name(v)] then
    return string.format("%q is not a Redis 7.0 command (write FLUSHALL, or CONFIG SET for a "
      .. "subcommand)", v)
  end
end

local function check_spec(spec, report)
  local seen = {}
  for i, r in ipairs(spec.redis or {}) do
    local prefix = r.match and r.match.key and r.match.key.prefix or ""
    if seen[prefix] then
      local at = T.join("redis", i)
      report(r.match and T.join(at, "match") or at, prefix == "" and
        string.format("a second catch-all route (the first is redis[%d])", seen[prefix] - 1) or
        string.format("prefix %q is already routed by redis[%d]", prefix, seen[prefix] - 1))
    end
    seen[prefix] = i
  end
end

K.schema = shapes.document({
  spec = T.obj({
    host = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
    -- meltemi extension, as MetaRouter's: the Gateways (or "mesh") this applies to.
    gateways = T.list(T.str{ non_empty = true }),
    settings = T.obj({
      caseInsensitive = T.bool(),
      opTimeout = T.dur(),
      enableCommandStats = T.bool(),
      maxBufferSizeBeforeFlush = T.int{ min = 0 },
      bufferFlushTimeout = T.dur(),
      maxUpstreamUnknownConnections = T.int{ min = 0 },
      enableHashtagging = T.bool(),
      enableRedirection = T.bool(),
      readPolicy = T.enum({ "MASTER", "PREFER_MASTER", "REPLICA", "PREFER_REPLICA", "ANY" }),
      auth = shapes.auth,
      -- meltemi extensions (not in Aeraki's API): close a client that has not authenticated
      -- in time (only where auth is set), or that has been idle; "0s" turns either off.
      authTimeout = T.dur(),
      idleTimeout = T.dur(),
      -- meltemi extension: commands answered NOPERM instead of reaching Redis ("FLUSHALL",
      -- "CONFIG SET"); the runtime checks each against Redis's command table.
      deniedCommands = T.list(T.str{ non_empty = true, validate = check_denied_name }),
    }),
    redis = T.list(T.obj({
      match = T.obj({
        key = T.obj({ prefix = T.str(), removePrefix = T.bool() }),
      }),
      route = route_target,
      mirror = T.list(T.obj({
        route = route_target,
        percentage = shapes.percentage,
        excludeReadCommands = T.bool(),
      })),
    })),
    -- meltemi extension (not in Aeraki's API): MetaRouter's localRateLimit shape, with
    -- conditions matching a command class or command names instead of attributes.
    localRateLimit = T.obj({
      tokenBucket = shapes.token_bucket,
      conditions = T.list(T.obj({
        match = T.obj({
          commandClass = T.enum({ "READ", "WRITE" }),
          commands = T.list(T.str{ non_empty = true }, { min_items = 1 }),
        }, { required = true, one_of = { { "commandClass", "commands" } }, exactly_one = true }),
        tokenBucket = T.with(shapes.token_bucket, { required = true }),
      })),
    }),
    faults = T.list(T.obj({
      type = T.enum({ "DELAY", "ERROR" }, { required = true }),
      percentage = shapes.percentage,
      delay = T.dur(),
      commands = T.list(T.str{ non_empty = true }),
    }, { check = check_fault })),
  }, { required = true, check = check_spec }),
})

-- meltemi.fields: every field takes effect (compile_settings / compile_routes /
-- compile_faults below; the runtime's side is redis_snapshot.c and policies/redis_*.lua).
K.consumed = { "spec.host", "spec.gateways",
  "spec.settings", "spec.redis", "spec.faults", "spec.localRateLimit" }

-- localRateLimit -> listener.redis.local_rate_limit (read by redis_snapshot.c); command names
-- are checked against the command table here, so a typo is a validate error.
local function compile_rate_limit(obj, c, lrl)
  if not lrl then return nil end
  local out = { token_bucket = lrl.tokenBucket and shapes.compile_token_bucket(lrl.tokenBucket),
    conditions = {} }
  for i, cond in ipairs(lrl.conditions or {}) do
    local cmds
    if cond.match.commands then
      cmds = {}
      for j, name in ipairs(cond.match.commands) do
        if C.redis_command_known(name) then
          cmds[#cmds + 1] = name:lower()
        else
          c:error(obj, T.join(T.join(T.join("spec.localRateLimit.conditions", i), "match.commands"), j),
            string.format("unknown Redis command %q", name))
        end
      end
    end
    out.conditions[#out.conditions + 1] = { commands = cmds, command_class = cond.match.commandClass,
      token_bucket = shapes.compile_token_bucket(cond.tokenBucket) }
  end
  return out
end

local function compile_settings(obj, c, r, s)
  if s.caseInsensitive ~= nil then r.case_insensitive = s.caseInsensitive end
  if s.opTimeout then r.op_timeout_ms = T.duration_ms(s.opTimeout) end
  if s.enableCommandStats ~= nil then r.enable_command_stats = s.enableCommandStats end
  if s.maxBufferSizeBeforeFlush then r.max_buffer_size_before_flush = s.maxBufferSizeBeforeFlush end
  if s.bufferFlushTimeout then r.buffer_flush_timeout_ms = T.duration_ms(s.bufferFlushTimeout) end
  if s.maxUpstreamUnknownConnections then
    r.max_upstream_unknown_connections = s.maxUpstreamUnknownConnections
  end
  if s.enableHashtagging ~= nil then r.enable_hashtagging = s.enableHashtagging end
  if s.enableRedirection ~= nil then r.enable_redirection = s.enableRedirection end
  if s.readPolicy then r.read_policy = s.readPolicy end
  if s.authTimeout then r.auth_timeout_ms = T.duration_ms(s.authTimeout) end
  if s.idleTimeout then r.idle_timeout_ms = T.duration_ms(s.idleTimeout) end
  if s.deniedCommands then
    r.denied_commands = {}
    for i, v in ipairs(s.deniedCommands) do r.denied_commands[i] = denied_name(v) end
  end
end

-- The cluster a route target points at, seen from listener l. Reports and returns nil on a
-- dangling host or port.
local function target_cluster(obj, c, path, target, l)
  local host = c:ref_host(obj, T.join(path, "host"), target.host)
  if not host then return nil end
  local cl = c:pick_cluster(obj, target.port and T.join(path, "port") or T.join(path, "host"), host,
    target.port, "redis", l.port)
  return cl and cl.name
end

local function compile_routes(obj, c, l, spec)
  local routes, catch_all = {}, false
  for i, r in ipairs(spec.redis or {}) do
    local path = T.join("spec.redis", i)
    local key = r.match and r.match.key or {}
    local route = {
      prefix = key.prefix or "",
      remove_prefix = key.removePrefix or false,
      cluster = target_cluster(obj, c, T.join(path, "route"), r.route, l),
      mirrors = {},
    }
    for j, m in ipairs(r.mirror or {}) do
      local mpath = T.join(T.join(path, "mirror"), j)
      route.mirrors[#route.mirrors + 1] = {
        cluster = target_cluster(obj, c, T.join(mpath, "route"), m.route, l),
        percentage = m.percentage and m.percentage.value or 100,
        exclude_read_commands = m.excludeReadCommands or false,
      }
    end
    if route.prefix == "" then catch_all = true end
    routes[#routes + 1] = route
  end
  if not catch_all then
    routes[#routes + 1] = { prefix = "", remove_prefix = false, cluster = l.cluster, mirrors = {} }
  end
  table.sort(routes, function(a, b)
    if #a.prefix ~= #b.prefix then return #a.prefix > #b.prefix end
    return a.prefix < b.prefix
  end)
  return routes
end

local function compile_faults(spec)
  local faults = {}
  for _, f in ipairs(spec.faults or {}) do
    local commands = {}
    for _, cmd in ipairs(f.commands or {}) do commands[#commands + 1] = cmd:lower() end
    faults[#faults + 1] = {
      type = f.type,
      percentage = f.percentage and f.percentage.value or 100,
      delay_ms = f.delay and T.duration_ms(f.delay) or 0,
      commands = commands,
    }
  end
  return faults
end

function K.build(obj, c)
  local spec = obj.doc.spec
  local hosts = {}
  for i, h in ipairs(spec.host) do
    local path = T.join("spec.host", i)
    local host = c:ref_host(obj, path, h)
    for _, t in ipairs(host and c:listeners_for(obj, "spec.gateways", host, spec.gateways) or {}) do
      local key = t.target == "mesh" and host or (host .. " on Gateway " .. t.target)
      if c:claim(obj, path, "RedisService", key) then
        hosts[#hosts + 1] = { host = host, path = path, target = t.target, listeners = t.listeners }
      end
    end
  end
  local settings = spec.settings or {}
  local auth
  if settings.auth then auth = c:resolve_auth(obj, "spec.settings.auth", settings.auth) end
  if settings.authTimeout and not settings.auth then
    c:warn(obj, "spec.settings.authTimeout", "ignored: clients need no password here (no settings.auth)")
  end
  for i, f in ipairs(spec.faults or {}) do
    if f.type == "ERROR" and f.delay then
      c:warn(obj, T.join(T.join("spec.faults", i), "delay"), "ignored for an ERROR fault")
    end
  end
  for _, h in ipairs(hosts) do
    local applied = false
    for _, l in ipairs(h.listeners) do
      if l.protocol == "redis" then
        applied = true
        compile_settings(obj, c, l.redis, settings)
        l.redis.auth = auth
        l.redis.routes = compile_routes(obj, c, l, spec)
        l.redis.faults = compile_faults(spec)
        l.redis.local_rate_limit = compile_rate_limit(obj, c, spec.localRateLimit)
        l.redis.source = { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name }
      end
    end
    if not applied and h.target == "mesh" then
      c:warn(obj, h.path, string.format("%s has no redis listener (a tcp-redis* port on an address): "
        .. "this RedisService has no effect", h.host))
    elseif not applied then
      c:warn(obj, h.path, string.format("Gateway %s has no redis server for %s: this RedisService has no "
        .. "effect there", h.target, h.host))
    end
  end
end

return K
