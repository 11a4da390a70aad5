-- ApplicationProtocol (metaprotocol.aeraki.io/v1alpha1): names the codec of a protocol used
-- in port names tcp-metaprotocol-<protocol>-*. Aeraki's codec names
-- (aeraki.meta_protocol.codec.thrift) map to meltemi's registered codec names (thrift).

local C = require "meltemi.c"
local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "ApplicationProtocol",
  api_versions = { "metaprotocol.aeraki.io/v1alpha1" },
  phase = 10,
}

K.schema = shapes.document({
  spec = T.obj({
    protocol = T.str{ required = true, pattern = "^[a-z0-9]+$",
      pattern_text = "a protocol name (lower case letters and digits, as used in port names)" },
    codec = T.str{ required = true, non_empty = true },
  }, { required = true }),
})

function K.codec_name(codec)
  return codec:match("^aeraki%.meta_protocol%.codec%.(.+)$") or codec
end

function K.index(obj, c)
  local spec = obj.doc.spec
  local prev = c.app_protocols[spec.protocol]
  if prev then
    c:error(obj, "spec.protocol", string.format("protocol %q is already defined by %s", spec.protocol,
      c:where(prev.obj)))
    return
  end
  local codec = K.codec_name(spec.codec)
  if not C.codec_known(codec) then
    -- Its ports would otherwise become plain TCP while everything says metaprotocol.
    c:error(obj, "spec.codec", string.format("codec %q is not built in (built in: dubbo, thrift; "
      .. "Aeraki's names aeraki.meta_protocol.codec.<name> work too)", spec.codec))
    c.tainted.protocols[spec.protocol] = true
    return
  end
  c.app_protocols[spec.protocol] = { codec = codec, obj = obj }
end

-- meltemi.fields: both fields pick the codec of the protocol's ports (index above).
K.consumed = { "spec.protocol", "spec.codec" }

function K.taint(obj, c)
  local spec = obj.doc.spec
  if type(spec) == "table" and type(spec.protocol) == "string" then
    c.tainted.protocols[spec.protocol] = true
  end
end

return K
