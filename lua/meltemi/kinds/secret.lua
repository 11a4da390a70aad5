-- Secret (v1): passwords and tokens for RedisService / RedisDestination auth. data values
-- are base64 (checked here), stringData values are plain and win over data, as in
-- Kubernetes. Values are kept byte for byte; one that ends in a newline draws a warning
-- where it is used, because `echo pw | base64` is the usual way to get it wrong.

local C = require "meltemi.c"
local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "Secret",
  api_versions = { "v1" },
  phase = 10,
}

local function check_base64(doc, report)
  if type(doc.data) ~= "table" then return end
  local keys = {}
  for k in pairs(doc.data) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local _, err = C.base64_decode(doc.data[k])
    if err then report(T.key("data", k), "invalid base64: " .. err) end
  end
end

K.schema = shapes.document({
  type = T.str(),
  immutable = T.bool(),
  data = T.map(T.str{ secret = true }, { secret = true }),
  stringData = T.map(T.str{ secret = true }, { secret = true }),
})
K.schema.check = check_base64

-- meltemi.fields: the values are read where auth names them; type and immutable describe the
-- object to the API server and ask the proxy for nothing.
K.consumed = { "data", "stringData" }
K.informational = { "type", "immutable" }

function K.index(obj, c)
  local doc = obj.doc
  local values = {}
  for k, v in pairs(doc.data or {}) do
    values[k] = { value = C.base64_decode(v), path = T.key("data", k) }
  end
  for k, v in pairs(doc.stringData or {}) do
    values[k] = { value = v, path = T.key("stringData", k) }
  end
  c.secrets[obj.namespace .. "/" .. obj.name] = { obj = obj, values = values }
end

function K.taint(obj, c)
  c.tainted.secrets[obj.namespace .. "/" .. obj.name] = true
end

-- The snapshot's sources never carry secret values: only the key names.
function K.source_spec(obj)
  local keys, seen = {}, {}
  for _, field in ipairs({ "data", "stringData" }) do
    if type(obj.doc[field]) == "table" then
      for k in pairs(obj.doc[field]) do
        if not seen[k] then
          seen[k] = true
          keys[#keys + 1] = k
        end
      end
    end
  end
  table.sort(keys)
  return { type = obj.doc.type, keys = keys }
end

return K
