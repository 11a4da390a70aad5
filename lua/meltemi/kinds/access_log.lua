-- AccessLog (meltemi.io/v1alpha1): one line per request (per connection for plain TCP).
--
--   spec:
--     disabled: false          # true turns the log off
--     path: /dev/stdout        # or a file, appended to and reopened on SIGUSR1 (logrotate)
--     format: json             # json (one object per line) | text
--     text: "%START_TIME% %PROTOCOL% %COMMAND% %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION%"
--                              # text's line: Envoy-style %FIELD% operators (docs/observability.md)
--     sampling: 0.1            # fraction of requests logged, 0..1 (default 1)
--
-- At most one AccessLog per configuration; it wins over a Telemetry's accessLogging.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "AccessLog",
  api_versions = { "meltemi.io/v1alpha1" },
  phase = 80,
}

-- The %FIELD% operators a text format may use (the runtime's list, runtime/core/access_log.c).
K.FIELDS = {
  START_TIME = true, DURATION = true, LISTENER = true, PROTOCOL = true, DOWNSTREAM_REMOTE_ADDRESS = true,
  UPSTREAM_HOST = true, UPSTREAM_CLUSTER = true, SERVICE = true, ROUTE_NAME = true, SUBSET = true,
  COMMAND = true, METHOD = true, RESPONSE_CODE = true, RESPONSE_FLAGS = true, BYTES_RECEIVED = true,
  BYTES_SENT = true, TRACE_ID = true, CONNECTION_ID = true, FRAMES_RECEIVED = true,
  FRAMES_SENT = true, STREAM_END = true,
}

K.DEFAULT_TEXT = "[%START_TIME%] %PROTOCOL% %COMMAND% %RESPONSE_CODE% %RESPONSE_FLAGS% "
  .. "%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %DOWNSTREAM_REMOTE_ADDRESS% %UPSTREAM_HOST% "
  .. "%UPSTREAM_CLUSTER% %LISTENER%"

K.schema = shapes.document({
  spec = T.obj({
    disabled = T.bool(),
    path = T.str{ non_empty = true },
    format = T.enum({ "json", "text" }),
    text = T.str{ non_empty = true },
    sampling = T.num{ min = 0, max = 1 },
  }, { required = true }),
})

-- Every %NAME% of text must be a known field; "%%" is a literal percent.
function K.check_text(text, report)
  local pos = 1
  while true do
    local s, e, name = text:find("%%([%w_]*)%%", pos)
    if not s then break end
    if name ~= "" and not K.FIELDS[name] then
      report(string.format("unknown field %%%s%% (known: see docs/observability.md)", name))
      return false
    end
    pos = e + 1
  end
  return true
end

function K.build(obj, c)
  local spec = obj.doc.spec
  if c.snapshot.access_log and c.snapshot.access_log.source.kind == "AccessLog" then
    c:error(obj, "kind", string.format("a second AccessLog (the first is %s)",
      c.snapshot.access_log.source.name))
    return
  end
  local format = spec.format or (spec.text and "text" or "json")
  if spec.text and format ~= "text" then
    c:warn(obj, "spec.text", "ignored: format is " .. format)
  end
  local text = spec.text or K.DEFAULT_TEXT
  if format == "text" and not K.check_text(text, function(m) c:error(obj, "spec.text", m) end) then
    return
  end
  c.snapshot.access_log = {
    enabled = not spec.disabled, path = spec.path or "/dev/stdout", format = format,
    text = format == "text" and text or nil, sampling = spec.sampling or 1,
    source = { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name },
  }
end

return K
