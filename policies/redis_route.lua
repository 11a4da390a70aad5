-- meltemi.policies.redis_route: RedisService redis[] — key-prefix routes of a Redis listener
-- (listener.redis.routes in docs/snapshot.md).
--
--   local route = require "meltemi.policies.redis_route"
--   local compiled = route.compile(listener.redis, cluster_index, default_idx)
--   local r = route.match(compiled, key)  -- { idx = cluster index, strip = bytes, mirrors = ... }
--   route.run(compiled, key)              -- match + core.route / core.strip; returns r
--
-- The longest matching prefix wins; the catch-all (prefix "") takes the rest, and keyless
-- commands. Everything is decided in compile: routes sorted longest first, each prefix
-- turned into an anchored pattern (case-insensitive ones as [aA] classes, so no key is
-- ever lowered), clusters resolved to indexes. match and run allocate nothing.

local redis_mirror = require "meltemi.policies.redis_mirror"

local find, byte, char, format = string.find, string.byte, string.char, string.format
local upper, lower = string.upper, string.lower

local P = {}

local core_route, core_strip

-- Binds the C functions (meltemi.core, or a test double) used by run.
function P.bind(core)
  core_route, core_strip = core.route, core.strip
end

-- "^" + prefix, every byte literal: letters as [xX] when case-insensitive, other
-- non-alphanumerics escaped with %, NUL as %z (Lua 5.1 patterns).
function P.prefix_pattern(prefix, case_insensitive)
  local out = { "^" }
  for i = 1, #prefix do
    local b = byte(prefix, i)
    local c = char(b)
    if b == 0 then
      out[#out + 1] = "%z"
    elseif c:match("%a") then
      out[#out + 1] = case_insensitive and ("[" .. lower(c) .. upper(c) .. "]") or c
    elseif c:match("%d") then
      out[#out + 1] = c
    else
      out[#out + 1] = "%" .. c
    end
  end
  return table.concat(out)
end

local function cluster_idx(cluster_index, name, what)
  local idx = cluster_index[name]
  if not idx then error(format("%s: cluster %q is not in the cluster index", what, tostring(name)), 0) end
  return idx
end

-- Compiles listener.redis (routes, case_insensitive) into
--   { list = { route... } (longest prefix first, catch-all excluded), catch_all = route,
--     default_idx = idx, active = bool (anything differs from "all to the default") }
-- route = { prefix, pattern, idx, strip, mirrors = compiled mirror list | nil }.
function P.compile(redis, cluster_index, default_idx)
  local ci = redis.case_insensitive == true
  local list, catch_all = {}, nil
  for _, r in ipairs(redis.routes or {}) do
    local prefix = r.prefix or ""
    local route = {
      prefix = prefix,
      pattern = P.prefix_pattern(prefix, ci),
      idx = r.cluster and cluster_idx(cluster_index, r.cluster, "route " .. format("%q", prefix))
        or default_idx,
      strip = (r.remove_prefix and #prefix) or 0,
      mirrors = redis_mirror.compile(r.mirrors, cluster_index),
    }
    if prefix == "" then
      catch_all = catch_all or route
    else
      list[#list + 1] = route
    end
  end
  catch_all = catch_all or { prefix = "", pattern = "^", idx = default_idx, strip = 0 }
  table.sort(list, function(a, b)
    if #a.prefix ~= #b.prefix then return #a.prefix > #b.prefix end
    return a.prefix < b.prefix
  end)
  local active = #list > 0 or catch_all.idx ~= default_idx or catch_all.mirrors ~= nil
  return { list = list, catch_all = catch_all, default_idx = default_idx, active = active,
    case_insensitive = ci }
end

-- The route key takes (nil key: the catch-all).
local function match(c, key)
  if key ~= nil then
    local list = c.list
    for i = 1, #list do
      local r = list[i]
      if find(key, r.pattern) then return r end
    end
  end
  return c.catch_all
end
P.match = match

-- match, inlined: run is entered from C once per command, mostly interpreted, where a Lua
-- call costs about as much as the prefix test itself.
function P.run(c, key)
  local r = c.catch_all
  if key ~= nil then
    local list = c.list
    for i = 1, #list do
      local x = list[i]
      if find(key, x.pattern) then
        r = x
        break
      end
    end
  end
  if r.idx ~= c.default_idx then core_route(r.idx) end
  if r.strip > 0 then core_strip(r.strip) end
  return r
end

return P
