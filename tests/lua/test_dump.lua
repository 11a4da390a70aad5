-- luacheck: max line length 120
-- meltemi.dump: the Lua form loads back to an equal table and is deterministic; the JSON
-- form never shows a password or a Secret value.
local H = dofile("tests/lua/helper.lua")
local dump = require "meltemi.dump"
local compiler = require "meltemi.compiler"

local function blog_snapshot()
  local d = "tests/lua/fixtures/blog/"
  local snap, errors = H.compile_paths({ d .. "services.yaml", d .. "step1.yaml", d .. "step2.yaml",
    d .. "step6-mirror.yaml" })
  H.ok(snap, table.concat(errors or {}, "; "))
  return snap
end

H.test("lua(): round trip of the blog snapshot", function()
  local snap = blog_snapshot()
  local text = dump.lua(snap)
  local back = assert(loadstring(text))()
  H.ok(H.same(snap, back), "loaded table differs from the snapshot")
  H.ok(text:find('password = "testredis\\n"', 1, true), "newline escaped as \\n")
end)

H.test("lua(): deterministic, keys sorted", function()
  local a, b = dump.lua(blog_snapshot()), dump.lua(blog_snapshot())
  H.eq(a, b, "two compiles print the same text")
  H.ok(a:find("clusters = {", 1, true) < a:find("listeners = {", 1, true), "sorted keys")
end)

H.test("lua(): awkward keys and values", function()
  local t = { ["a b"] = 1, ["end"] = true, [3] = "x", f = 1.25, big = 2 ^ 40, s = "q\"\0\r\n", list = { 1, "2" },
    nested = { { k = {} } }, neg = -7 }
  local back = assert(loadstring(dump.lua(t)))()
  H.ok(H.same(t, back), "round trip: " .. dump.lua(t))
  H.ok(dump.lua(t):find("big = 1099511627776", 1, true), "integers print without exponent")
  local cyc = {}
  cyc.self = cyc
  local ok, err = pcall(dump.lua, cyc)
  H.ok(not ok and err:find("cycle", 1, true), "cycle refused")
end)

H.test("json(): passwords and Secret data redacted everywhere", function()
  local snap = blog_snapshot()
  local text = dump.json(snap)
  H.ok(not text:find("testredis", 1, true), "no password in:\n" .. text)
  H.ok(text:find('"password": "<redacted>"', 1, true), "redacted marker")
  H.ok(text:find('"listeners": [', 1, true), "listeners is an array")
  H.ok(text:find('"faults": []', 1, true), "empty array stays an array")
  H.ok(text:find('"subsets": {}', 1, true), "empty map stays an object")
  local s = dump.json({ data = { ["tls.crt"] = "x" }, kind = "ConfigMap" })
  H.ok(s:find('"tls.crt": "x"', 1, true), "data of other kinds is kept")
  local r = dump.json({ sources = { { kind = "Secret", data = { password = "p", other = "v" },
    stringData = { token = "t" } } } })
  H.ok(not r:find('"v"', 1, true) and not r:find('"t"', 1, true), "Secret data redacted: " .. r)
end)

H.test("json(): escapes and numbers", function()
  H.eq(dump.json({ "a\"b\n\1", 1.5, 3, true }), '[\n  "a\\"b\\n\\u0001",\n  1.5,\n  3,\n  true\n]', "encoding")
  H.eq(dump.json({ b = 1, a = 2 }), '{\n  "a": 2,\n  "b": 1\n}', "sorted keys")
  H.eq(dump.json({ x = 0 / 0, y = math.huge }), '{\n  "x": null,\n  "y": null\n}', "NaN and infinity are null")
  H.eq(dump.json({ 0.1, 2 ^ 53, -0.0, 1 / 3 }), '[\n  0.10000000000000001,\n  9007199254740992,\n  0,\n'
    .. '  0.33333333333333331\n]', "numbers round-trip: 17 digits, integers whole")
  H.eq(dump.json({ p = "a/b\\/c\127\0" }), '{\n  "p": "a/b\\\\/c\\u007f\\u0000"\n}',
    "'/' unescaped, DEL and NUL escaped")
  H.eq(dump.json({ { 1, nil, 3 }, { [2] = "x" } }), '[\n  {\n    "1": 1,\n    "3": 3\n  },\n  {\n    "2": "x"\n  }\n]',
    "a sparse array is an object")
  H.eq(dump.json({ faults = {}, other = {}, routes = { {} } }),
    '{\n  "faults": [],\n  "other": {},\n  "routes": [\n    []\n  ]\n}', "empty tables: [] under array keys")
end)

H.test("the compiled snapshot carries no Secret values in sources", function()
  local snap = blog_snapshot()
  for _, s in ipairs(snap.sources) do
    if s.kind == "Secret" then
      H.eq(s.spec.keys[1], "password", "key names only")
      H.eq(s.spec.data, nil, "no data")
    end
  end
  H.ok(not dump.lua(snap.sources):find("dGVzdHJlZGlzCg", 1, true), "no base64 value")
end)

H.test("compile_dir and compile_sources agree", function()
  local snap = compiler.compile_dir("examples/redis-demo")
  H.ok(snap and #snap.listeners == 1, "example compiles")
end)

H.run()
