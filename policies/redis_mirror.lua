-- meltemi.policies.redis_mirror: RedisService redis[].mirror[] — fire-and-forget copies of
-- the commands a route takes (listener.redis.routes[i].mirrors in docs/snapshot.md).
--
--   local mirror = require "meltemi.policies.redis_mirror"
--   local list = mirror.compile(route.mirrors, cluster_index)  -- nil when none can fire
--   mirror.run(list, is_write)                                 -- core.mirror per copy
--
-- percentage (0-100) is drawn per command and per mirror with math.random;
-- exclude_read_commands mirrors only write commands (Envoy's semantics: a command that is
-- not a write — reads, PING, ... — is not copied). The mirror's reply is dropped by C.

local random, format = math.random, string.format

local P = {}

local core_mirror

function P.bind(core)
  core_mirror = core.mirror
end

function P.compile(mirrors, cluster_index)
  local list = {}
  for i, m in ipairs(mirrors or {}) do
    local pct = m.percentage or 100
    if pct > 0 then
      local idx = cluster_index[m.cluster]
      if not idx then
        error(format("mirror %d: cluster %q is not in the cluster index", i, tostring(m.cluster)), 0)
      end
      list[#list + 1] = { idx = idx, percentage = pct, writes_only = m.exclude_read_commands == true }
    end
  end
  if #list == 0 then return nil end
  return list
end

function P.run(list, is_write)
  for i = 1, #list do
    local m = list[i]
    if (is_write or not m.writes_only) and (m.percentage >= 100 or random() * 100 < m.percentage) then
      core_mirror(m.idx)
    end
  end
end

return P
