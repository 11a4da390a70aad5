-- Route by key pattern: config.routes is a list of { pattern = Lua pattern, host = service };
-- the first pattern matching the command's first key decides the service. Keys that match
-- nothing, and keyless commands, keep the listener's route.
local config = ... or {}
local routes = {}

for i, r in ipairs(config.routes or {}) do
  if type(r.pattern) ~= "string" or not pcall(string.find, "", r.pattern) then
    error(string.format("config.routes[%d].pattern is not a valid Lua pattern", i - 1))
  end
  if type(r.host) ~= "string" then
    error(string.format("config.routes[%d].host must be a service host", i - 1))
  end
  routes[#routes + 1] = { pattern = r.pattern, host = r.host }
end

return {
  on_request = function(msg, ctx)
    local key = msg.key
    if key == nil then return end
    for _, r in ipairs(routes) do
      if key:find(r.pattern) then
        ctx:route(r.host)
        return
      end
    end
  end,
}
