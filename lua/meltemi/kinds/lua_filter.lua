-- LuaFilter (meltemi.io/v1alpha1): a user filter attached to hosts.
--
--   spec:
--     hosts: [redis-single]     # services it runs for (short names resolve as elsewhere)
--     order: 10                 # lower runs first (default 0; ties by name)
--     code: |                   # the module's source: returns { on_request = ..., on_response = ... }
--       ...
--     config: { any: value }    # handed to the filter as is
--
-- The code is compiled here so a syntax error is reported at config time with its line.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"

local K = {
  kind = "LuaFilter",
  api_versions = { "meltemi.io/v1alpha1" },
  phase = 70,
}

K.schema = shapes.document({
  spec = T.obj({
    hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
    order = T.int(),
    code = T.str{ required = true, non_empty = true },
    config = T.any(),
  }, { required = true }),
})

function K.build(obj, c)
  local spec = obj.doc.spec
  local chunk = "LuaFilter/" .. obj.name
  local fn, err = loadstring(spec.code, "=" .. chunk)
  if not fn then
    c:error(obj, "spec.code", "does not compile: " .. err)
    return
  end
  local hosts = {}
  for i, h in ipairs(spec.hosts) do
    local host = c:ref_host(obj, T.join("spec.hosts", i), h)
    if host then hosts[#hosts + 1] = host end
  end
  local list = c.snapshot.lua_filters
  list[#list + 1] = {
    name = obj.name, namespace = obj.namespace, hosts = hosts, order = spec.order or 0,
    code = spec.code, chunkname = chunk, config = spec.config,
    source = { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name },
  }
  table.sort(list, function(a, b)
    if a.order ~= b.order then return a.order < b.order end
    return a.name < b.name
  end)
end

return K
