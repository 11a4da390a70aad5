-- Tracing (meltemi.io/v1alpha1): W3C trace context and B3 propagated through MetaProtocol
-- requests (Dubbo attachments, Thrift THeader headers), one client span per request meltemi
-- forwards, exported as Zipkin v2 JSON to a collector.
--
--   spec:
--     collector: http://127.0.0.1:9411/api/v2/spans   # Zipkin's span endpoint (http only)
--     sampling: 0.01        # fraction of new traces meltemi starts when none arrives (default 1);
--                           # a trace that arrives keeps its own sampled flag
--
-- At most one Tracing per configuration.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "Tracing",
  api_versions = { "meltemi.io/v1alpha1" },
  phase = 86,
}

K.schema = shapes.document({
  spec = T.obj({
    collector = T.str{ required = true, non_empty = true },
    sampling = T.num{ min = 0, max = 1 },
    disabled = T.bool(),
  }, { required = true }),
})

function K.build(obj, c)
  local spec = obj.doc.spec
  if c.snapshot.tracing then
    c:error(obj, "kind", "a second Tracing (the first is " .. c.snapshot.tracing.source.name .. ")")
    return
  end
  local host, port, path = spec.collector:match("^http://([%w%.%-]+):(%d+)(/.*)$")
  if not host then
    host, path = spec.collector:match("^http://([%w%.%-]+)(/.*)$")
    port = host and "80"
  end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 then
    c:error(obj, "spec.collector", string.format(
      "%q is not http://HOST[:PORT]/PATH (e.g. http://127.0.0.1:9411/api/v2/spans)", spec.collector))
    return
  end
  if spec.disabled then return end
  c.snapshot.tracing = {
    host = host, port = port, path = path, sampling = spec.sampling or 1,
    source = { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name },
  }
end

return K
