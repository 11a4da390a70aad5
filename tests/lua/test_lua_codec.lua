-- Lua codecs (issue 15): ApplicationProtocol `codec: lua` is validated at config time (its
-- source, what it declares), the snapshot carries it to every listener and cluster of the
-- protocol, and the driver (meltemi.codec) turns whatever a codec returns into checked
-- answers or an "error" the runtime counts.

local H = dofile("tests/lua/helper.lua")
local compiler = require "meltemi.compiler"
local codec = require "meltemi.codec"

local SERVICE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: rpc, namespace: app}
spec:
  hosts: [rpc.app.svc.cluster.local]
  addresses: [127.0.2.1]
  ports: [{number: 7300, name: tcp-metaprotocol-myrpc}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
]]

local GOOD = [[
return {
  multiplexed = true, request_id = { offset = 4, size = 4 }, max_frame_size = 4096,
  decode = function(buf)
    if #buf < 8 then return nil, 8 - #buf end
    return 8, { type = "request", id = 1, attrs = { method = buf:sub(1, 4) } }
  end,
  error_reply = function() return "ERR!" end,
}
]]

local function app(fields)
  return "apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: ApplicationProtocol\n"
    .. "metadata: {name: myrpc, namespace: app}\nspec:\n  protocol: myrpc\n" .. fields
end

local NOOP = "function() end"

local function indent(code)
  return (code:gsub("\n", "\n    "))
end

H.test("a Lua codec compiles into every listener and cluster of its protocol", function()
  local snap = H.snapshot_of({ ["a.yaml"] = SERVICE,
    ["b.yaml"] = app("  codec: lua\n  script: |\n    " .. indent(GOOD)) })
  local l = snap.listeners[1]
  H.eq(l.codec, "lua:myrpc", "listener codec")
  H.eq(l.lua_codec.protocol, "myrpc", "protocol")
  H.eq(l.lua_codec.multiplexed, true, "multiplexed")
  H.eq(l.lua_codec.id_offset, 4, "id offset")
  H.eq(l.lua_codec.id_size, 4, "id size")
  H.eq(l.lua_codec.max_frame_size, 4096, "max frame")
  H.eq(l.lua_codec.has_encode, false, "no encode")
  H.ok(l.lua_codec.code:find("error_reply", 1, true), "the source travels")
  local n = 0
  for _, cl in pairs(snap.clusters) do
    H.eq(cl.lua_codec and cl.lua_codec.protocol, "myrpc", "cluster " .. cl.name)
    n = n + 1
  end
  H.ok(n > 0, "a cluster")
end)

H.test("a Lua codec that cannot work is refused with its field", function()
  local cases = {
    { "  codec: lua\n", "spec: codec: lua needs exactly one of script, scriptFile, module (got none)" },
    { "  codec: lua\n  script: 'return {}'\n", "spec.script: is not a usable codec: " },
    { "  codec: lua\n  script: 'return { decode = function() end }'\n", "error_reply is required" },
    { "  codec: lua\n  script: 'return { decode = 1, error_reply = " .. NOOP .. " }'\n",
      "decode must be a function, got number" },
    { "  codec: lua\n  script: 'return { multiplexed = true, decode = " .. NOOP .. ", error_reply = "
      .. NOOP .. " }'\n",
      "a multiplexed codec needs request_id" },
    { "  codec: lua\n  script: 'return { max_frame_size = -1, decode = " .. NOOP .. ", error_reply = "
      .. NOOP .. " }'\n",
      "max_frame_size must be an integer" },
    { "  codec: lua\n  script: 'return { local_heartbeat = true, decode = " .. NOOP .. ", error_reply = "
      .. NOOP .. " }'\n",
      "local_heartbeat needs a heartbeat_reply function" },
    { "  codec: lua\n  script: 'return {'\n", "spec.script: is not a usable codec: " },
    { "  codec: lua\n  script: 'while true do end'\n", "budget exceeded" },
    { "  codec: lua\n  script: x\n  scriptFile: y.lua\n", "got script, scriptFile" },
    { "  codec: dubbo\n  script: 'return {}'\n",
      "spec.script: only a Lua codec (codec: lua) takes a script" },
  }
  for _, case in ipairs(cases) do
    local errors = H.errors_of({ ["a.yaml"] = SERVICE, ["b.yaml"] = app(case[1]) })
    H.find(errors, { "b.yaml:", "ApplicationProtocol/myrpc: ", case[2] }, case[1])
    H.none(errors, "unknown application protocol", case[1])
  end
end)

H.test("scriptFile and module are read from inside the config directory", function()
  local dir = H.tmpdir()
  assert(H.exit_code("mkdir -p '" .. dir .. "/codecs'") == 0)
  H.write(dir .. "/a.yaml", SERVICE)
  H.write(dir .. "/codecs/my.lua", GOOD)
  H.write(dir .. "/b.yaml", app("  codec: lua\n  module: codecs.my\n"))
  local snap, errors = compiler.compile_dir(dir)
  H.ok(snap, "module: " .. table.concat(errors or {}, "; "))
  H.eq(snap.listeners[1].lua_codec.chunkname, "codecs/my.lua", "chunkname")
  H.write(dir .. "/b.yaml", app("  codec: lua\n  scriptFile: ../../etc/passwd\n"))
  errors = select(2, compiler.compile_dir(dir))
  H.find(errors, { "spec.scriptFile: ", "outside the configuration directory" }, "outside")
  H.exit_code("rm -rf '" .. dir .. "'")
end)

H.test("the example's codecs compile", function()
  local snap, errors = compiler.compile_dir("examples/custom-protocol")
  H.ok(snap, table.concat(errors or {}, "; "))
  local l = H.listener(snap, "127.0.0.31:7300")
  H.eq(l.codec, "lua:mrpc", "mrpc")
  H.eq(H.listener(snap, "127.0.0.31:7400").codec, "lua:kvtext", "kvtext")
end)

-- ---- the driver ---------------------------------------------------------------------------

local function load(src)
  return assert(codec.load(src, "test"))
end

H.test("decode answers are checked: again, ok, nonsense", function()
  local cd = load(GOOD)
  local st, more = codec.decode(cd, "abc")
  H.eq(st, "again", "short")
  H.eq(more, 5, "missing bytes")
  local ok, len, t, id, attrs = codec.decode(cd, "abcd1234rest")
  H.eq(ok, "ok", "whole")
  H.eq(len, 8, "frame length")
  H.eq(t, "request", "type")
  H.eq(id, 1, "id")
  H.eq(attrs.method, "abcd", "attribute")
  local bad = {
    ["return 0, {type='request'}"] = "is not within",
    ["return 99, {type='request'}"] = "is not within",
    ["return 1.5, {type='request'}"] = "is not within",
    ["return 1, {type='bogus'}"] = "unknown message type",
    ["return 1, 'x'"] = "the message must be a table",
    ["return 1, {type='request', id=-1}"] = "id must be an integer",
    ["return 1, {type='request', attrs='a'}"] = "attrs must be a table",
    ["return nil, 0"] = "number of bytes still missing",
    ["return nil, 'x'"] = "number of bytes still missing",
    ["error('mine')"] = "mine",
    ["while true do end"] = "exceeded",
  }
  for body, want in pairs(bad) do
    local c = load("return { decode = function(buf) " .. body .. " end, error_reply = function() end }")
    local s, msg = codec.decode(c, "abcdefgh")
    H.eq(s, "error", body)
    H.ok(type(msg) == "string" and msg:find(want, 1, true), body .. ": " .. tostring(msg))
  end
end)

H.test("stream frames are message types of their own", function()
  for _, t in ipairs({ "stream_init", "stream_data", "stream_close", "stream_reset" }) do
    local cd = load("return { decode = function(buf) return #buf, { type = '" .. t
      .. "', id = 3, reply = true } end, error_reply = " .. NOOP
      .. ", stream_reset = function(_, id) return 'R' .. id end }")
    local st, _, typ, id, _, reply = codec.decode(cd, "x")
    H.eq(st, "ok", t)
    H.eq(typ, t, "type")
    H.eq(id, 3, "stream id")
    H.eq(reply, true, "from the server")
    H.eq(codec.props(cd).has_stream_reset, true, "declares stream_reset")
    H.eq(select(2, codec.stream_reset(cd, "init", 3)), "R3", "reset frame")
  end
end)

H.test("error_reply may answer nothing; set_request_id must keep the size", function()
  local cd = load([[return { decode = function() end,
    error_reply = function(frame) if frame == "oneway" then return nil end return "E" end,
    set_request_id = function(frame, id) return frame .. id end,
    encode = function(frame, m) return frame .. m[1][1] .. (m[1][2] or "-") end }]])
  H.eq(select(2, codec.error_reply(cd, "oneway", 0, "route_not_found", "x")), nil, "nothing")
  H.eq(select(2, codec.error_reply(cd, "req", 0, "route_not_found", "x")), "E", "error")
  local st, msg = codec.set_request_id(cd, "abcd", 7)
  H.eq(st, "error", "size changed")
  H.ok(msg:find("changed the frame's size", 1, true), msg)
  H.eq(select(2, codec.encode(cd, "f", { { "k" } })), "fk-", "removal has no value")
end)

H.test("codecs see lpeg but not its setmaxstack, and nothing of the host", function()
  local cd = load([[
    local ok = lpeg ~= nil and lpeg.setmaxstack == nil and io == nil and require == nil
    local digits = lpeg.C(lpeg.R("09") ^ 1)
    return { decode = function(buf)
      return #buf, { type = "request", attrs = { ok = tostring(ok), n = digits:match(buf) } }
    end, error_reply = function() end }]])
  local _, _, _, _, attrs = codec.decode(cd, "123x")
  H.eq(attrs.ok, "true", "environment")
  H.eq(attrs.n, "123", "lpeg works")
end)

H.run()
