-- Deny commands by pattern: config.deny is a list of Lua patterns matched against the
-- command name (always lower case). A denied command is answered with config.message and
-- counted; it never reaches Redis.
local config = ... or {}
local patterns = config.deny or {}
local message = config.message or "NOPERM this command is disabled by the proxy"

-- Check the patterns once, at load: a bad one fails the configuration, not a request.
for i, p in ipairs(patterns) do
  if type(p) ~= "string" or not pcall(string.find, "", p) then
    error(string.format("config.deny[%d] is not a valid Lua pattern: %s", i - 1, tostring(p)))
  end
end

-- Commands already decided, so each name is matched against the patterns only once.
local verdicts = {}

local function denied(cmd)
  local v = verdicts[cmd]
  if v == nil then
    v = false
    for _, p in ipairs(patterns) do
      if cmd:find(p) then v = true break end
    end
    verdicts[cmd] = v
  end
  return v
end

return {
  on_request = function(msg, ctx)
    if denied(msg.command) then
      ctx:counter("denied_commands", 1, msg.command)
      ctx:reply_error(message .. " (" .. msg.command .. ")")
    end
  end,
}
