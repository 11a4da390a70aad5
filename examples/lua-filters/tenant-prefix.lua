-- Rewrite the key prefix per tenant. The tenant is the service the client connected to
-- (ctx.service, e.g. tenant-a.demo.svc.cluster.local; config.tenants maps its first label
-- to a prefix). Every key of the command gets the prefix: msg:key_positions() says where the
-- keys are. Commands whose keys are not known (EVAL, XREAD, SORT ... STORE, ...) and
-- keyless commands that see the whole keyspace (KEYS, SCAN, FLUSHDB, ...) are refused:
-- they would cross tenants.
local config = ... or {}
local tenants = config.tenants or {}

-- Keyless commands that stay inside the connection.
local KEYLESS_OK = { ping = true, echo = true, time = true, multi = true, exec = true,
  discard = true, unwatch = true, quit = true, hello = true, client = true, command = true }

local function prefix_of(ctx)
  local p = ctx.conn.tenant_prefix -- decided once per connection
  if p == nil then
    local name = ctx.service:match("^[^.]+")
    p = tenants[ctx.service] or tenants[name] or false
    ctx.conn.tenant_prefix = p
  end
  return p
end

return {
  on_request = function(msg, ctx)
    local prefix = prefix_of(ctx)
    if not prefix then
      return ctx:reply_error("NOPERM no tenant is configured for " .. ctx.service)
    end
    local positions = msg:key_positions()
    if positions == nil then
      return ctx:reply_error("NOPERM " .. msg.command .. " is not allowed for tenants")
    end
    if #positions == 0 then
      if not KEYLESS_OK[msg.command] then
        return ctx:reply_error("NOPERM " .. msg.command .. " is not allowed for tenants")
      end
      return
    end
    for _, i in ipairs(positions) do
      msg:set_arg(i, prefix .. msg:arg(i))
    end
  end,
}
