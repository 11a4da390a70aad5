-- LuaFilter scriptFile stays inside the configuration directory (issue 13): "..", absolute
-- paths and symlinks that lead out are refused before the file is read, and the error names
-- the field and the rule without quoting the file.

local H = dofile("tests/lua/helper.lua")
local compiler = require "meltemi.compiler"

local SERVICE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: main, namespace: app}
spec:
  hosts: [main.app.svc.cluster.local]
  addresses: [127.0.2.1]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
]]

-- Not Lua: compiling it quotes it in the syntax error ("'=' expected near 'OUTSIDEsecret7f3a'").
local MARKER = "OUTSIDEsecret7f3a"
local OUTSIDE_TEXT = "root " .. MARKER .. " x:0:0:root:/root:/bin/bash\n"

local function filter(script_file)
  return string.format([[
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {name: f, namespace: app}
spec:
  hosts: [main]
  scriptFile: %q
]], script_file)
end

-- base/conf is the config dir; base/outside/secret.lua is a file beside it.
local function setup()
  local base = H.tmpdir()
  local conf = base .. "/conf"
  assert(H.exit_code("mkdir -p '" .. conf .. "/filters' '" .. base .. "/outside'") == 0)
  H.write(base .. "/outside/secret.lua", OUTSIDE_TEXT)
  H.write(conf .. "/a.yaml", SERVICE)
  H.write(conf .. "/filters/ok.lua", "return { on_request = function(msg, ctx) end }\n")
  return base, conf
end

local function refused(conf, script_file, what)
  H.write(conf .. "/f.yaml", filter(script_file))
  local snap, errors = compiler.compile_dir(conf)
  H.eq(snap, nil, what .. ": refused")
  local all = table.concat(errors, "\n")
  H.find(errors, conf .. "/f.yaml:6: LuaFilter/f: spec.scriptFile: ", what .. ": names the field")
  H.ok(all:find("outside the configuration directory", 1, true), what .. ": says the rule: " .. all)
  H.ok(not all:find(MARKER, 1, true), what .. ": quotes nothing of the file: " .. all)
  H.ok(not all:find("root:", 1, true), what .. ": quotes nothing of the file: " .. all)
  return errors
end

H.test("scriptFile: .. out of the config directory is refused without reading it", function()
  local base, conf = setup()
  refused(conf, "../outside/secret.lua", "../")
  refused(conf, "filters/../../outside/secret.lua", "a detour through a subdirectory")
  refused(conf, "../../../../../../../../etc/passwd", "/etc/passwd by ..")
  H.exit_code("rm -rf '" .. base .. "'")
end)

H.test("scriptFile: an absolute path outside the config directory is refused", function()
  local base, conf = setup()
  refused(conf, base .. "/outside/secret.lua", "absolute")
  refused(conf, "/etc/passwd", "/etc/passwd")
  H.exit_code("rm -rf '" .. base .. "'")
end)

H.test("scriptFile: a symlink inside the directory that points out is refused", function()
  local base, conf = setup()
  assert(H.exit_code("ln -s '" .. base .. "/outside/secret.lua' '" .. conf .. "/link.lua'") == 0)
  refused(conf, "link.lua", "symlink to a file outside")
  assert(H.exit_code("ln -s '" .. base .. "/outside' '" .. conf .. "/out'") == 0)
  refused(conf, "out/secret.lua", "symlinked directory outside")
  -- A sibling whose name starts like the config directory is still outside.
  assert(H.exit_code("mkdir -p '" .. conf .. "-evil' && cp '" .. base .. "/outside/secret.lua' '"
    .. conf .. "-evil/x.lua'") == 0)
  refused(conf, "../conf-evil/x.lua", "a sibling with the same prefix")
  H.exit_code("rm -rf '" .. base .. "'")
end)

H.test("scriptFile: files inside the directory load, through symlinks too", function()
  local base, conf = setup()
  H.write(conf .. "/f.yaml", filter("filters/ok.lua"))
  local snap, errors = compiler.compile_dir(conf)
  H.ok(snap, "relative file inside: " .. table.concat(errors or {}, "; "))
  H.eq(snap.lua_filters[1].chunkname, "filters/ok.lua", "chunk named as written")
  assert(H.exit_code("ln -s filters/ok.lua '" .. conf .. "/inner-link.lua'") == 0)
  H.write(conf .. "/f.yaml", filter("inner-link.lua"))
  snap, errors = compiler.compile_dir(conf)
  H.ok(snap, "symlink to a file inside: " .. table.concat(errors or {}, "; "))
  H.write(conf .. "/f.yaml", filter(conf .. "/filters/ok.lua"))
  snap, errors = compiler.compile_dir(conf)
  H.ok(snap, "absolute path inside: " .. table.concat(errors or {}, "; "))
  -- The config directory itself may be reached through a symlink (Kubernetes ConfigMaps).
  assert(H.exit_code("ln -s conf '" .. base .. "/conf-link'") == 0)
  H.write(conf .. "/f.yaml", filter("filters/ok.lua"))
  snap, errors = compiler.compile_dir(base .. "/conf-link")
  H.ok(snap, "config dir behind a symlink: " .. table.concat(errors or {}, "; "))
  -- A missing file is reported by name, as before.
  H.write(conf .. "/f.yaml", filter("filters/missing.lua"))
  errors = select(2, compiler.compile_dir(conf))
  H.find(errors, conf .. "/f.yaml:6: LuaFilter/f: spec.scriptFile: cannot read the script: " .. conf
    .. "/filters/missing.lua: No such file or directory", "missing")
  H.exit_code("rm -rf '" .. base .. "'")
end)

H.run()
