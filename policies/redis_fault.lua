-- meltemi.policies.redis_fault: RedisService faults[] — ERROR and DELAY injection
-- (listener.redis.faults in docs/snapshot.md).
--
--   local fault = require "meltemi.policies.redis_fault"
--   local compiled = fault.compile(listener.redis.faults)   -- nil when none can fire
--   if fault.run(compiled, cmd) then return end             -- answered with the error
--
-- At most one fault per command, chosen as Envoy's Redis fault manager does: one draw
-- r in [0, 100); the faults that apply to the command are walked in order (those naming the
-- command first, then those for every command), adding up their percentages, and the first
-- whose running sum exceeds r is injected. So two 50% faults on GET inject one or the other
-- on every GET, never both. A fault without commands applies to every command except AUTH
-- and PING; naming AUTH or PING explicitly does apply to them.
-- ERROR answers `Fault Injected: Error` (no ERR prefix, as Envoy). DELAY holds the command
-- delay_ms before it is forwarded. An ERROR fault's delay is ignored (the compiler warns).

local random = math.random

local P = {}

P.ERROR_TEXT = "Fault Injected: Error"

local EXEMPT = { auth = true, ping = true }

local core_error, core_delay

function P.bind(core)
  core_error, core_delay = core.error, core.delay
end

local function entry(f)
  return { is_error = f.type == "ERROR", delay_ms = f.delay_ms or 0, percentage = f.percentage }
end

-- A list with running sums (cum) for one command.
local function with_sums(specific, generic)
  local list, sum = {}, 0
  for _, group in ipairs({ specific, generic }) do
    for _, e in ipairs(group) do
      sum = sum + e.percentage
      list[#list + 1] = { is_error = e.is_error, delay_ms = e.delay_ms, cum = sum }
    end
  end
  if #list == 0 then return nil end
  return list
end

-- Compiles faults into { by_command = { [cmd] = list }, generic = list | nil }.
function P.compile(faults)
  local specific, generic = {}, {}
  local any = false
  for _, f in ipairs(faults or {}) do
    local pct = f.percentage or 100
    local fires = pct > 0 and (f.type == "ERROR" or (f.delay_ms or 0) > 0)
    if fires then
      any = true
      local e = entry(f)
      e.percentage = pct
      if f.commands and #f.commands > 0 then
        for _, cmd in ipairs(f.commands) do
          cmd = cmd:lower()
          specific[cmd] = specific[cmd] or {}
          table.insert(specific[cmd], e)
        end
      else
        generic[#generic + 1] = e
      end
    end
  end
  if not any then return nil end
  local c = { by_command = {}, generic = with_sums({}, generic) }
  for cmd, list in pairs(specific) do
    c.by_command[cmd] = with_sums(list, EXEMPT[cmd] and {} or generic)
  end
  for cmd in pairs(EXEMPT) do
    if not specific[cmd] then c.by_command[cmd] = false end
  end
  return c
end

-- Injects the fault the draw picks, if any. Returns true when the command is answered.
function P.run(c, cmd)
  local list = c.by_command[cmd]
  if list == nil then list = c.generic end
  if not list then return false end
  local r = random() * 100
  for i = 1, #list do
    local f = list[i]
    if r < f.cum then
      if f.is_error then
        core_error(P.ERROR_TEXT)
        return true
      end
      core_delay(f.delay_ms)
      return false
    end
  end
  return false
end

return P
