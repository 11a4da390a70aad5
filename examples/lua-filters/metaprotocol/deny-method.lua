-- Deny methods: config.deny lists method names ("sayBye") or interface.method pairs. A denied
-- call is answered with the codec's native error (Dubbo: a status byte and the message;
-- Thrift: a TApplicationException) and counted per method; it never reaches a provider.
local config = ... or {}
local message = config.message or "meltemi: this method is disabled"
local deny = {}
for _, m in ipairs(config.deny or {}) do deny[m] = true end

return {
  on_request = function(msg, ctx)
    local method = msg.method
    if not method then return end
    local iface = msg.interface or msg.service
    if deny[method] or (iface and deny[iface .. "." .. method]) then
      ctx:counter("denied_methods", 1, method)
      ctx:reply_error(message .. " (" .. method .. ")")
    end
  end,
}
