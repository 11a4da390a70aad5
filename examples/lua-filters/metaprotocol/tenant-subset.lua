-- Tenant -> subset: config.attribute names the attachment/header carrying the tenant,
-- config.subsets maps a tenant to a subset of this service (DestinationRule subsets).
local config = ... or {}
local attribute = config.attribute or "x-tenant"
local subsets = config.subsets or {}

return {
  on_request = function(msg, ctx)
    local tenant = msg:get(attribute)
    local subset = tenant and subsets[tenant]
    if subset then ctx:route(ctx.service, subset) end
  end,
}
