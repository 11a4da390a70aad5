-- Count slow methods: on_response sees msg.duration_ms (from the request's arrival to its
-- reply, fault or filter delays included) and the request's msg.interface / msg.method.
local config = ... or {}
local threshold = tonumber(config.threshold_ms) or 200

return {
  on_response = function(msg, ctx)
    if msg.duration_ms >= threshold then
      local name = (msg.interface and (msg.interface .. ".") or "") .. (msg.method or "?")
      ctx:counter("slow_calls", 1, name)
      if msg.is_error then ctx:counter("slow_errors", 1, name) end
    end
  end,
}
