-- ApplicationProtocol (metaprotocol.aeraki.io/v1alpha1): names the codec of a protocol used
-- in port names tcp-metaprotocol-<protocol>-*. Aeraki's codec names
-- (aeraki.meta_protocol.codec.thrift) map to meltemi's registered codec names (thrift).
--
-- `codec: lua` makes the protocol's codec a Lua module (docs/codecs.md, "Lua codecs"):
--
--   spec:
--     protocol: myrpc
--     codec: lua
--     script: |            # the module's source (or scriptFile: a file inside the config
--       ...                # dir, or module: a dotted name, <config dir>/a/b.lua for a.b)
--
-- The module is loaded here with the workers' sandbox (meltemi.codec), so a syntax error, a
-- missing function or a bad declaration is reported at config time with its field. Its
-- source and what it declares go into every listener and cluster of the protocol
-- (`lua_codec`), which the runtime loads into each worker.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local codec = require "meltemi.codec"
local C = require "meltemi.c"

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
    script = T.str{ non_empty = true },
    scriptFile = T.str{ non_empty = true },
    module = T.str{ non_empty = true, pattern = "^[%a_][%w_]*[%.%w_]*$",
      pattern_text = "a Lua module name (letters, digits, _ and dots)" },
  }, { required = true }),
})

-- The prefix of the codec name a Lua codec gets in the snapshot: "lua:<protocol>".
K.LUA_PREFIX = "lua:"

function K.codec_name(codec_field)
  return codec_field:match("^aeraki%.meta_protocol%.codec%.(.+)$") or codec_field
end

local SOURCE_FIELDS = { "script", "scriptFile", "module" }

-- The codec's source: { field, text, chunkname } | nil after reporting.
local function lua_source(obj, c, spec)
  local given = {}
  for _, f in ipairs(SOURCE_FIELDS) do
    if spec[f] then given[#given + 1] = f end
  end
  if #given ~= 1 then
    c:error(obj, "spec", "codec: lua needs exactly one of script, scriptFile, module (got "
      .. (#given == 0 and "none" or table.concat(given, ", ")) .. ")")
    return nil
  end
  local field = given[1]
  if field == "script" then
    return { field = "spec.script", text = spec.script, chunkname = "ApplicationProtocol/" .. obj.name }
  end
  local rel = spec.scriptFile or (spec.module:gsub("%.", "/") .. ".lua")
  local confined = require("meltemi.kinds.lua_filter").confined_script_path
  local path, perr = confined(obj, rel)
  if not path then
    c:error(obj, "spec." .. field, perr)
    return nil
  end
  local text, err = C.readfile(path)
  if not text then
    c:error(obj, "spec." .. field, "cannot read the script: " .. err)
    return nil
  end
  return { field = "spec." .. field, text = text, chunkname = rel }
end

-- The snapshot's description of a Lua codec | nil after reporting.
local function lua_codec(obj, c, spec)
  local src = lua_source(obj, c, spec)
  if not src then return nil end
  local cd, err = codec.load(src.text, src.chunkname)
  if not cd then
    c:error(obj, src.field, "is not a usable codec: " .. err)
    return nil
  end
  local def = codec.props(cd)
  def.protocol, def.code, def.chunkname = spec.protocol, src.text, src.chunkname
  return def
end

function K.index(obj, c)
  local spec = obj.doc.spec
  local prev = c.app_protocols[spec.protocol]
  if prev then
    c:error(obj, "spec.protocol", string.format("protocol %q is already defined by %s", spec.protocol,
      c:where(prev.obj)))
    return
  end
  local name = K.codec_name(spec.codec)
  local entry = { codec = name, obj = obj }
  if name == "lua" then
    entry.lua = lua_codec(obj, c, spec)
    if not entry.lua then
      c.tainted.protocols[spec.protocol] = true
      return
    end
    entry.codec = K.LUA_PREFIX .. spec.protocol
  elseif require("meltemi.compiler").OBSERVED_TCP[name] then
    -- kafka / zookeeper: relayed as plain TCP with request metrics, no MetaProtocol codec
    for _, f in ipairs(SOURCE_FIELDS) do
      if spec[f] then
        c:error(obj, "spec." .. f, "only a Lua codec (codec: lua) takes a script")
      end
    end
  else
    if not C.codec_known(name) then
      -- Its ports would otherwise become plain TCP while everything says metaprotocol.
      c:error(obj, "spec.codec", string.format("codec %q is not built in (built in: dubbo, "
        .. "thrift, kafka, zookeeper, or lua with a script; Aeraki's names "
        .. "aeraki.meta_protocol.codec.<name> work too)", spec.codec))
      c.tainted.protocols[spec.protocol] = true
      return
    end
    for _, f in ipairs(SOURCE_FIELDS) do
      if spec[f] then
        c:error(obj, "spec." .. f, "only a Lua codec (codec: lua) takes a script")
      end
    end
  end
  c.app_protocols[spec.protocol] = entry
end

-- meltemi.fields: protocol and codec pick the codec of the protocol's ports; script, scriptFile
-- and module are a Lua codec's source (index above).
K.consumed = { "spec.protocol", "spec.codec", "spec.script", "spec.scriptFile", "spec.module" }

function K.taint(obj, c)
  local spec = obj.doc.spec
  if type(spec) == "table" and type(spec.protocol) == "string" then
    c.tainted.protocols[spec.protocol] = true
  end
end

-- Every listener and cluster of a Lua-coded protocol carries the codec's definition.
function K.after_build(c)
  local function attach(t)
    local proto = type(t.codec) == "string" and t.codec:sub(1, #K.LUA_PREFIX) == K.LUA_PREFIX
      and t.codec:sub(#K.LUA_PREFIX + 1)
    local ap = proto and c.app_protocols[proto]
    if ap and ap.lua then t.lua_codec = ap.lua end
  end
  for _, l in pairs(c.listeners) do attach(l) end
  for _, cl in pairs(c.snapshot.clusters) do attach(cl) end
end

return K
