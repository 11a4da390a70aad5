-- LuaFilter (meltemi.io/v1alpha1): a user filter attached to hosts.
--
--   spec:
--     hosts: [redis-single]     # services it runs for (short names resolve as elsewhere)
--     order: 10                 # lower runs first (default 0; ties by name)
--     script: |                 # the module's source: returns { on_request = ..., on_response = ... }
--       ...                     # (or scriptFile: a file inside the config dir, path relative to
--                               # it; code: an alias)
--     config: { any: value }    # handed to the filter as is
--     timeout: 100ms            # wall-clock limit of each call into the filter (1ms..10s)
--     maxInstructions: 10000000 # Lua instruction budget of each call (1000..1e10)
--
-- The code is loaded here with the workers' sandbox (meltemi.sandbox), so a syntax error, or a
-- module that fails to load there, is reported at config time with its line.

local T = require "meltemi.schema"
local shapes = require "meltemi.shapes"
local sandbox = require "meltemi.sandbox"
local C = require "meltemi.c"

-- A filter call may hold its worker at most this long (/ready calls a worker stuck after 2 s).
local MAX_TIMEOUT_MS = 10000

local K = {
  kind = "LuaFilter",
  api_versions = { "meltemi.io/v1alpha1" },
  phase = 70,
}

K.schema = shapes.document({
  spec = T.obj({
    hosts = T.list(T.str{ non_empty = true }, { required = true, min_items = 1 }),
    order = T.int(),
    code = T.str{ non_empty = true },
    script = T.str{ non_empty = true },
    scriptFile = T.str{ non_empty = true },
    config = T.any(),
    timeout = T.dur(),
    maxInstructions = T.int{ min = 1000, max = 1e10 },
  }, { required = true, one_of = { { "script", "scriptFile", "code" } }, exactly_one = true }),
})

-- The file a scriptFile names, or nil, reason. It must lie inside the configuration
-- directory (the directory of the file that holds the LuaFilter) once every symlink, "." and
-- ".." is resolved: both sides go through realpath and are compared with a trailing "/", so
-- "../../etc/passwd", "/etc/passwd" and a symlink in the directory that points out are all
-- refused before anything is read. The reason never quotes the file's content.
local function confined_script_path(obj, rel)
  local dir = obj.file:match("^(.*)/[^/]*$") or "."
  if dir == "" then dir = "/" end
  local path = rel:sub(1, 1) == "/" and rel or dir .. "/" .. rel
  local real_dir, derr = C.realpath(dir)
  if not real_dir then return nil, "cannot read the script: " .. derr end
  local real, err = C.realpath(path)
  if not real then return nil, "cannot read the script: " .. err end
  local prefix = real_dir:sub(-1) == "/" and real_dir or real_dir .. "/"
  if real:sub(1, #prefix) ~= prefix then
    return nil, string.format("%q is outside the configuration directory: scriptFile must name "
      .. "a file inside it (symlinks are followed before checking)", rel)
  end
  return real
end
K.confined_script_path = confined_script_path

-- The source of the filter: { field, text, chunkname } | nil after reporting. scriptFile is
-- read relative to the directory of the file that holds the LuaFilter (the config dir).
local function filter_source(obj, c, spec)
  if spec.scriptFile then
    local path, perr = confined_script_path(obj, spec.scriptFile)
    if not path then
      c:error(obj, "spec.scriptFile", perr)
      return nil
    end
    local text, err = C.readfile(path)
    if not text then
      c:error(obj, "spec.scriptFile", "cannot read the script: " .. err)
      return nil
    end
    return { field = "spec.scriptFile", text = text, chunkname = spec.scriptFile }
  end
  local field = spec.script and "spec.script" or "spec.code"
  return { field = field, text = spec.script or spec.code, chunkname = "LuaFilter/" .. obj.name }
end

-- meltemi.fields: every field takes effect (build below; hosts without a Redis or MetaProtocol
-- port warn there).
K.consumed = { "spec.hosts", "spec.order", "spec.code", "spec.script", "spec.scriptFile", "spec.config",
  "spec.timeout", "spec.maxInstructions" }

function K.build(obj, c)
  local spec = obj.doc.spec
  local src = filter_source(obj, c, spec)
  if not src then return end
  local chunk = src.chunkname
  local fn, err = sandbox.compile(src.text, chunk)
  if not fn then
    c:error(obj, src.field, "does not compile: " .. err)
    return
  end
  local timeout_ms = spec.timeout and T.duration_ms(spec.timeout)
  if timeout_ms and (timeout_ms < 1 or timeout_ms > MAX_TIMEOUT_MS) then
    c:error(obj, "spec.timeout", "must be from 1ms to 10s")
    return
  end
  local limits = { timeout_ms = timeout_ms, instructions = spec.maxInstructions }
  local mod
  mod, err = sandbox.load(src.text, chunk, spec.config, limits)
  if not mod then
    c:error(obj, src.field, "does not load: " .. err)
    return
  end
  local hosts = {}
  for i, h in ipairs(spec.hosts) do
    local host = c:ref_host(obj, T.join("spec.hosts", i), h)
    if host then
      hosts[#hosts + 1] = host
      local redis, meta = false, false
      for _, cl in pairs(c.clusters_by_host[host] or {}) do
        if cl.protocol == "redis" then redis = true end
        if cl.protocol == "metaprotocol" then meta = true end
      end
      -- MetaProtocol listeners of the host decode every attribute of a request for it (a
      -- filter may read any): meta_snapshot.c reads this mark.
      for _, l in pairs(c.listeners) do
        if l.protocol == "metaprotocol" and l.service == host and l.metaprotocol then
          l.metaprotocol.lua_filters = true
          meta = true
        end
      end
      if not redis and not meta then
        c:warn(obj, T.join("spec.hosts", i), string.format("accepted but not enforced: %s has no redis "
          .. "or metaprotocol port, and Lua filters run on Redis and MetaProtocol services only (TCP: "
          .. "not yet)", host))
      end
    end
  end
  local list = c.snapshot.lua_filters
  list[#list + 1] = {
    name = obj.name, namespace = obj.namespace, hosts = hosts, order = spec.order or 0,
    code = src.text, chunkname = chunk, config = spec.config, limits = limits,
    source = { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name },
  }
  table.sort(list, function(a, b)
    if a.order ~= b.order then return a.order < b.order end
    return a.name < b.name
  end)
end

return K
