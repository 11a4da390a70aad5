-- Telemetry (telemetry.istio.io): spec.accessLogging turns meltemi's access log on or off,
-- as Istio's built-in "envoy" provider does (text lines to /dev/stdout). Metrics are always
-- on (Istio's standard names); tracing and the provider settings of MeshConfig are not read:
-- what is not applied draws a warning. An AccessLog (meltemi.io) gives the format, path and
-- sampling, and wins over this.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local access_log = require "meltemi.kinds.access_log"

local K = {
  kind = "Telemetry",
  api_versions = { "telemetry.istio.io/v1alpha1", "telemetry.istio.io/v1" },
  phase = 85, -- after AccessLog
}

K.schema = shapes.document({
  spec = T.obj({
    selector = T.any(),
    targetRef = T.any(),
    targetRefs = T.any(),
    accessLogging = T.list(T.obj({
      providers = T.list(T.obj({ name = T.str{ non_empty = true } })),
      disabled = T.bool(),
      filter = T.obj({ expression = T.str() }),
      match = T.any(),
    })),
    metrics = T.any(),
    tracing = T.any(),
  }, { required = true }),
})

function K.build(obj, c)
  local spec = obj.doc.spec
  if spec.tracing then
    c:warn(obj, "spec.tracing", "not applied: a Tracing (meltemi.io) names the collector")
  end
  if spec.metrics then
    c:warn(obj, "spec.metrics", "not applied: Istio's standard metrics are always exported")
  end
  if not spec.accessLogging then return end
  for i, al in ipairs(spec.accessLogging) do
    local path = T.join("spec.accessLogging", i)
    if al.filter then c:warn(obj, T.join(path, "filter"), "not applied: every request is logged") end
    if al.match then c:warn(obj, T.join(path, "match"), "not applied: client and server alike") end
    for j, p in ipairs(al.providers or {}) do
      if p.name ~= "envoy" then
        c:warn(obj, T.join(T.join(T.join(path, "providers"), j), "name"),
          string.format("provider %q is not known here: meltemi's own access log is used", p.name))
      end
    end
  end
  local existing = c.snapshot.access_log
  if existing and existing.source.kind == "AccessLog" then
    c:warn(obj, "spec.accessLogging", string.format("not applied: AccessLog %s decides",
      existing.source.name))
    return
  end
  local disabled = spec.accessLogging[#spec.accessLogging].disabled
  c.snapshot.access_log = {
    enabled = not disabled, path = "/dev/stdout", format = "text", text = access_log.DEFAULT_TEXT,
    sampling = 1, source = { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name },
  }
end

return K
