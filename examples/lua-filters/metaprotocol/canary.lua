-- Canary by attachment: a call whose config.attribute equals config.value goes to
-- config.subset and carries config.tag = "1" upstream (msg:set: a Dubbo attachment or a
-- THeader header). Counted per subset.
local config = ... or {}
local attribute = config.attribute or "canary"
local value = config.value or "true"
local subset = config.subset or "v2"
local tag = config.tag

return {
  on_request = function(msg, ctx)
    if msg:get(attribute) ~= value then return end
    ctx:route(ctx.service, subset)
    if tag then msg:set(tag, "1") end
    ctx:counter("canary_calls", 1, subset)
  end,
}
