-- User Lua filters (LuaFilter): the filter API, the sandbox and its limits, failures that
-- stay per request, the compiler's checks, and every example of examples/lua-filters.
-- luacheck: max line length 120
local H = dofile("tests/lua/helper.lua")
local F = dofile("tests/lua/fake_core.lua")
local worker = require "meltemi.redis.worker"
local sandbox = require "meltemi.sandbox"
local compiler = require "meltemi.compiler"

-- Two Redis services in namespace app: main (127.0.2.1) and other (127.0.2.2).
local SERVICES = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: main, namespace: app}
spec:
  hosts: [main.app.svc.cluster.local]
  addresses: [127.0.2.1]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: other, namespace: app}
spec:
  hosts: [other.app.svc.cluster.local]
  addresses: [127.0.2.2]
  ports: [{number: 6379, name: tcp-redis}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp-redis: 6380}}]
]]
local MAIN = "outbound|6379||main.app.svc.cluster.local"
local OTHER = "outbound|6379||other.app.svc.cluster.local"
local LI = 1 -- main's listener (127.0.2.1:6379 sorts first)

local function indent(code, n)
  local pad = string.rep(" ", n)
  return pad .. code:gsub("\n", "\n" .. pad)
end

-- A LuaFilter document with inline script.
local function filter_yaml(name, code, extra)
  return string.format([[
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {name: %s, namespace: app}
spec:
  hosts: [main]
%s  script: |
%s
]], name, extra or "", indent(code, 4))
end

-- Compiles SERVICES plus filters ({ name = code } or a list of YAML docs) and applies it.
local function apply_filters(docs)
  local files = { ["a.yaml"] = SERVICES }
  for i, d in ipairs(docs) do files[string.format("f%02d.yaml", i)] = d end
  local snap = H.snapshot_of(files)
  local chains = F.apply(worker, snap)
  return chains, snap
end

local function apply_one(code, extra)
  return apply_filters({ filter_yaml("f", code, extra) })
end

local function req(argv, opts) return F.request(worker, LI, argv, opts) end

local function failed_with(v, name, needle)
  H.ok(v.error, "expected an error reply")
  local head = "ERR meltemi: filter " .. name .. " failed: "
  H.eq(v.error:sub(1, #head), head, "error prefix")
  H.ok(v.error:find(needle, 1, true), string.format("%q should contain %q", v.error, needle))
end

-- ---- API -------------------------------------------------------------------------------------

H.test("msg: command, key, args, is_write; set_key and set_arg change what is forwarded", function()
  local chains = apply_one([[
return {
  on_request = function(msg, ctx)
    ctx.vars.seen = table.concat(msg:args(), " ")
    if msg.command == "set" then
      assert(msg.is_write == true and msg:nargs() == 3 and msg:arg(3) == "v")
      msg:set_key("t:" .. msg.key)
      assert(msg.key == "t:k" and msg:arg(2) == "t:k")
      msg:set_arg(3, 42)
    elseif msg.command == "mset" then
      for _, i in ipairs(msg:key_positions()) do msg:set_arg(i, "p:" .. msg:arg(i)) end
    end
  end,
}]])
  H.ok(chains[LI], "a filter gives the listener a chain")
  local v = req({ "set", "k", "v" }, { is_write = true })
  H.eq(v.error, nil, "no error"); H.eq(v.sets[2], "t:k", "key rewritten"); H.eq(v.sets[3], "42", "number as text")
  v = req({ "mset", "a", "1", "b", "2" }, { is_write = true })
  H.eq(v.sets[2], "p:a", "first key"); H.eq(v.sets[4], "p:b", "second key"); H.eq(v.sets[3], nil, "values untouched")
  v = req({ "get", "x" })
  H.eq(v.route, nil, "nothing else decided")
end)

H.test("msg:keys and key_positions: multi-key commands, keys not at argument 2, unknown layouts", function()
  apply_one([[
return {
  on_request = function(msg, ctx)
    local keys = msg:keys()
    ctx:reply(keys and table.concat(keys, ",") or "unknown")
  end,
}]])
  H.eq(req({ "del", "a", "b", "c" }).reply, "a,b,c", "DEL")
  H.eq(req({ "blpop", "a", "b", "5" }).reply, "a,b", "BLPOP without the timeout")
  H.eq(req({ "bitop", "and", "dst", "s1", "s2" }, { key = "dst" }).reply, "dst,s1,s2", "BITOP")
  H.eq(req({ "object", "encoding", "k" }, { key = "k" }).reply, "unknown", "OBJECT: layout unknown to Lua")
  H.eq(req({ "eval", "return 1", "1", "k" }, { key = "k" }).reply, "unknown", "EVAL")
  H.eq(req({ "ping" }, { key = false }).reply, "", "PING: no keys")
  H.eq(req({ "getrange", "k", "0", "1" }).reply, "k", "single key")
end)

H.test("ctx:route and ctx:mirror take service hosts (short, namespaced, full); unknown hosts fail", function()
  apply_one([[
return {
  on_request = function(msg, ctx)
    if msg.key == "short" then ctx:route("other")
    elseif msg.key == "ns" then ctx:route("other.app")
    elseif msg.key == "fqdn" then ctx:route("other.app.svc.cluster.local")
    elseif msg.key == "self" then ctx:route("main")
    elseif msg.key == "mirror" then ctx:mirror("other")
    elseif msg.key == "nope" then ctx:route("nope")
    elseif msg.key == "subset" then ctx:route("other", "v2")
    end
  end,
}]])
  for _, k in ipairs({ "short", "ns", "fqdn" }) do
    H.eq(F.cluster_name(req({ "get", k })), OTHER, k)
  end
  H.eq(F.cluster_name(req({ "get", "self" })), MAIN, "own service")
  local v = req({ "get", "mirror" })
  H.eq(F.names[v.mirrors[1]], OTHER, "mirror"); H.eq(v.route, nil, "primary unchanged")
  failed_with(req({ "get", "nope" }), "f", 'ctx:route: unknown service "nope"')
  failed_with(req({ "get", "subset" }), "f", 'no routable subset "v2"')
  H.eq(F.counters["filter_errors{f}"], 2, "both failures counted")
end)

H.test("ctx:reply, reply_error and delay; a local answer stops the chain; filters run in order", function()
  apply_filters({
    filter_yaml("first", [[
return { on_request = function(msg, ctx)
  ctx.vars.order = "first"
  if msg.key == "err" then ctx:reply_error("NOPERM no") end
  if msg.key == "arr" then ctx:reply({ "a", 1, { ok = "fine" } }) end
  if msg.key == "slow" then ctx:delay(20) end
end }]], "  order: 1\n"),
    filter_yaml("second", [[
return { on_request = function(msg, ctx)
  ctx:reply(ctx.vars.order .. ">second")
end }]], "  order: 2\n"),
  })
  local v = req({ "get", "err" })
  H.eq(v.error, "NOPERM no", "error"); H.eq(v.reply, nil, "second did not run")
  v = req({ "get", "arr" })
  H.ok(H.same(v.reply, { "a", 1, { ok = "fine" } }), "array reply")
  v = req({ "get", "slow" })
  H.eq(v.delay, 20, "delay"); H.eq(v.reply, "first>second", "vars shared along the chain, in order")
end)

H.test("ctx.vars is fresh per request, ctx.conn lives per connection until it closes", function()
  apply_one([[
return { on_request = function(msg, ctx)
  ctx.conn.n = (ctx.conn.n or 0) + 1
  ctx.vars.n = (ctx.vars.n or 0) + 1
  ctx:reply({ ctx.conn.n, ctx.vars.n })
end }]])
  H.ok(H.same(req({ "get", "k" }, { conn_id = 7 }).reply, { 1, 1 }), "first")
  H.ok(H.same(req({ "get", "k" }, { conn_id = 7 }).reply, { 2, 1 }), "same connection")
  H.ok(H.same(req({ "get", "k" }, { conn_id = 8 }).reply, { 1, 1 }), "other connection")
  worker.conn_closed(7)
  H.ok(H.same(req({ "get", "k" }, { conn_id = 7 }).reply, { 1, 1 }), "dropped on close")
  worker.conn_closed(7); worker.conn_closed(8)
  H.eq(require("meltemi.filter_api").conn_count(), 0, "nothing kept")
end)

H.test("ctx:log / ctx:counter carry the filter's name; config, ctx.service and ... are the filter's", function()
  F.reset_stats()
  apply_one([[
local conf = ...
return { on_request = function(msg, ctx)
  ctx:log("warn", "saw " .. msg.key)
  ctx:counter("seen")
  ctx:counter("bytes", #msg.key, "keys")
  ctx:reply({ conf.limit, ctx.config.limit, ctx.service, ctx.filter })
end }]], "  config: {limit: 3}\n")
  local v = req({ "get", "abc" })
  H.ok(H.same(v.reply, { 3, 3, "main.app.svc.cluster.local", "f" }), "config / service / filter")
  H.eq(F.logs[#F.logs].text, "filter f: saw abc", "log text"); H.eq(F.logs[#F.logs].level, "warn", "level")
  H.eq(F.counters["seen{f}"], 1, "counter labelled with the filter"); H.eq(F.counters["bytes{keys}"], 3, "label")
end)

H.test("msg and ctx are only valid during the call; bad arguments fail the request", function()
  apply_one([[
local saved
return { on_request = function(msg, ctx)
  if msg.key == "save" then saved = { msg, ctx } return end
  if msg.key == "stale" then return saved[2]:reply("x") end
  if msg.key == "badlevel" then return ctx:log("loud", "x") end
  if msg.key == "badarg" then return msg:set_arg(1, "set") end
  if msg.key == "table" then return msg:set_key({}) end
end }]])
  H.eq(req({ "get", "save" }).error, nil, "save")
  failed_with(req({ "get", "stale" }), "f", "ctx is only valid during the on_request call")
  failed_with(req({ "get", "badlevel" }), "f", "level must be debug, info, warn or error")
  failed_with(req({ "get", "badarg" }), "f", "argument index 1 is below 2")
  failed_with(req({ "get", "table" }), "f", "value must be a string or a number")
end)

-- ---- failures stay per request ----------------------------------------------------------------

H.test("a filter error answers ERR meltemi: filter <name> failed, is logged, counted; the next request runs", function()
  F.reset_stats()
  apply_one([[
return { on_request = function(msg, ctx)
  if msg.key == "boom" then error("boom") end
  if msg.key == "obj" then error(setmetatable({}, { __tostring = function() while true do end end })) end
  if msg.key == "slow" then ctx:delay(500) error("late") end
  ctx:reply("fine")
end }]])
  local v = req({ "get", "boom" })
  H.eq(v.error, "ERR meltemi: filter f failed: LuaFilter/f:2: boom", "error text with the filter's line")
  H.ok(F.logs[#F.logs].level == "error" and F.logs[#F.logs].text:find("boom", 1, true), "logged")
  H.eq(F.counters["filter_errors{f}"], 1, "counted")
  H.eq(req({ "get", "k" }).reply, "fine", "the next request is served")
  v = req({ "get", "obj" })
  H.eq(v.error, "ERR meltemi: filter f failed: (error object is a table value)", "no __tostring run")
  v = req({ "get", "slow" })
  H.ok(v.error and v.delay == nil, "a failed filter's delay is dropped")
end)

H.test("a filter that loops forever is stopped by the instruction budget, even behind pcall", function()
  F.reset_stats()
  local saved = sandbox.limits()
  sandbox.set_limits({ timeout_ms = 60000 }) -- this test is about the budget, not the clock
  apply_filters({ filter_yaml("loop", [[
return { on_request = function(msg, ctx)
  if msg.key == "plain" then while true do end end
  if msg.key == "pcall" then
    while true do pcall(function() while true do end end) end
  end
  if msg.key == "xpcall" then
    while true do xpcall(function() while true do end end, function() while true do end end) end
  end
  if msg.key == "sort" then
    local t = {} for i = 1, 200 do t[i] = i end
    while true do table.sort(t, function(a, b) return a > b end) end
  end
  ctx:reply("ok")
end }]]) })
  for _, k in ipairs({ "plain", "pcall", "xpcall", "sort" }) do
    H.eq(req({ "get", k }).error, "ERR meltemi: filter loop failed: instruction budget exceeded", k)
    H.eq(req({ "get", "next" }).reply, "ok", "the next request after " .. k .. " runs normally")
  end
  H.eq(F.counters["filter_errors{loop}"], 4, "counted")
  sandbox.set_limits(saved)
end)

H.test("a filter that allocates without bound is stopped by the memory cap, and the memory comes back", function()
  local saved = sandbox.limits()
  collectgarbage("collect")
  local base = collectgarbage("count")
  sandbox.set_limits({ memory_kb = base + 16 * 1024, timeout_ms = 60000 })
  local ok, err = pcall(function()
    apply_filters({ filter_yaml("hog", [[
return { on_request = function(msg, ctx)
  if msg.key == "tables" then
    local t = {}
    while true do t[#t + 1] = { #t, tostring(#t) .. "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" } end
  end
  if msg.key == "strings" then
    local t, s = {}, string.rep("x", 4096)
    while true do t[#t + 1] = s .. #t end
  end
  if msg.key == "rep" then return ctx:reply(#string.rep("x", 1e10)) end
  if msg.key == "method" then return ctx:reply(#("x"):rep(1e10)) end
  -- one C call asking for far more than the cap between two hooks: the allocator refuses it
  if msg.key == "double" then local s = ("x"):rep(1e6) for _ = 1, 40 do s = s .. s end end
  if msg.key == "concat" then
    local t, s = {}, ("x"):rep(1e6)
    for i = 1, 900 do t[i] = s end
    local ok = pcall(table.concat, t)
    return ctx:reply(ok and "escaped" or "caught")
  end
  ctx:reply("ok")
end }]]) })
    for _, k in ipairs({ "tables", "strings", "rep", "method", "double", "concat" }) do
      H.eq(req({ "get", k }).error, "ERR meltemi: filter hog failed: memory limit exceeded", k)
      H.eq(req({ "get", "next" }).reply, "ok", "the next request after " .. k .. " runs normally")
      -- LuaJIT halves its string buffer at each full cycle: two cycles give back a buffer that
      -- grew up to the cap (table.concat of 900 MB stopped at 16 MB)
      collectgarbage("collect")
      collectgarbage("collect")
      H.ok(collectgarbage("count") < base + 8 * 1024, string.format("memory back after %s: %.0f KiB over",
        k, collectgarbage("count") - base))
    end
  end)
  sandbox.set_limits(saved)
  if not ok then error(err, 0) end
end)

H.test("a backtracking pattern is stopped by the filter's deadline, even behind pcall and as a method", function()
  F.reset_stats()
  apply_filters({ filter_yaml("pat", [[
local key = string.rep("a", 204)
return { on_request = function(msg, ctx)
  if msg.key == "find" then string.find(key, ".-.-.-.-b") end
  if msg.key == "method" then key:match(".-.-.-.-b") end
  if msg.key == "gsub" then key:gsub(".-.-.-.-b", "") end
  if msg.key == "gmatch" then for _ in key:gmatch(".-.-.-.-b") do end end
  if msg.key == "pcall" then
    local ok = pcall(string.find, key, ".-.-.-.-b")
    return ctx:reply(ok and "escaped" or "caught")
  end
  ctx:reply((msg.key or ""):match("^(%a+):(%d+)$") or "ok")
end }]]) })
  for _, k in ipairs({ "find", "method", "gsub", "gmatch", "pcall" }) do
    H.eq(req({ "get", k }).error, "ERR meltemi: filter pat failed: time limit exceeded", k)
    H.eq(req({ "get", "user:42" }).reply, "user", "the next request after " .. k .. " matches normally")
  end
  H.eq(F.counters["filter_errors{pat}"], 5, "counted")
  -- trusted code outside a filter call is not limited by a filter's deadline
  H.eq(select(2, string.rep("a", 20):gsub("a", "b")), 20, "unarmed gsub")
end)

H.test("string.starts_with / ends_with / contains: plain byte comparisons, also as methods", function()
  apply_one([[
return { on_request = function(msg, ctx)
  local k = msg.key
  ctx:reply({ k:starts_with("session:") and 1 or 0, k:ends_with(":lock") and 1 or 0,
    string.contains(k, ".-") and 1 or 0, k:starts_with("") and 1 or 0,
    k:ends_with(k .. "x") and 1 or 0, string.contains("", "") and 1 or 0 })
end }]])
  local function got(key) return table.concat(req({ "get", key }).reply, ",") end
  H.eq(got("session:.-:lock"), "1,1,1,1,0,1", "all three, pattern characters literal")
  H.eq(got("x:session:locked"), "0,0,0,1,0,1", "no match")
  H.eq(got(string.rep("a", 100000)), "0,0,0,1,0,1", "a long key is linear work, not a deadline")
end)

H.test("spec.timeout and spec.maxInstructions take effect per filter", function()
  local saved = sandbox.limits()
  sandbox.set_limits({ timeout_ms = 60000 })
  apply_filters({
    filter_yaml("tight", [[
return { on_request = function(msg, ctx)
  if msg.key == "loop" then while true do end end
  if msg.key == "work" then local n = 0 for i = 1, 3e5 do n = n + i end ctx:reply(n) end
end }]], "  order: 1\n  maxInstructions: 100000\n"),
    filter_yaml("slow", [[
return { on_request = function(msg, ctx)
  if msg.key == "spin" then while true do end end
end }]], "  order: 2\n  timeout: 20ms\n  maxInstructions: 10000000000\n"),
  })
  H.eq(req({ "get", "work" }).error, "ERR meltemi: filter tight failed: instruction budget exceeded",
    "a lowered budget stops work the default allows")
  H.eq(req({ "get", "spin" }).error, "ERR meltemi: filter slow failed: time limit exceeded",
    "a raised budget still ends at the filter's deadline")
  sandbox.set_limits(saved)
  local e = H.errors_of({ ["a.yaml"] = SERVICES, ["f.yaml"] = filter_yaml("bad", "return { on_request = "
    .. "function() end }", "  timeout: 11s\n") })
  H.find(e, "LuaFilter/bad: spec.timeout: must be from 1ms to 10s", "timeout out of range")
  e = H.errors_of({ ["a.yaml"] = SERVICES, ["f.yaml"] = filter_yaml("bad", "return { on_request = "
    .. "function() end }", "  timeout: 100\n") })
  H.find(e, "LuaFilter/bad: spec.timeout: invalid duration", "a duration, not a number")
end)

H.test("the default budget lets a normal filter do real work", function()
  local lim = sandbox.limits()
  H.eq(lim.instructions, 1e7, "default budget"); H.eq(lim.memory_kb, 64 * 1024, "default cap")
  apply_one([[
return { on_request = function(msg, ctx)
  local t = {}
  for i = 1, 20000 do t[i] = tostring(i) end
  table.sort(t)
  ctx:reply(#t)
end }]])
  H.eq(req({ "get", "k" }).reply, 20000, "20000 items sorted within the budget")
end)

-- ---- sandbox ---------------------------------------------------------------------------------

H.test("sandbox: no io, os.execute, require, load, bytecode, string.dump, ffi, debug, setfenv/getfenv", function()
  local probes = {
    "return io", "return os.execute", "return os.exit", "return os.getenv", "return require",
    "return package", "return load", "return loadstring", "return dofile", "return loadfile",
    "return debug", "return jit", "return ffi", "return collectgarbage", "return setfenv",
    "return getfenv", "return rawset", "return rawget", "return string.dump", "return ('').dump",
    "return getmetatable('')", "return newproxy", "return coroutine", "return module",
    "return math.randomseed", "return print", "return lpeg",
  }
  for _, p in ipairs(probes) do
    local fn = assert(sandbox.compile(p, "probe"))
    local ok, v = sandbox.call(fn)
    H.ok(ok, p .. " runs"); H.eq(v, nil, p)
  end
  local fn = assert(sandbox.compile([[
    local ok1 = pcall(function() getmetatable("").__index.upper = nil end)
    local ok2 = pcall(function() local mt = getmetatable("") ; mt.__index = {} end)
    string.upper = function() return "hacked" end
    return ok1, ok2, ("abc"):upper()
  ]], "meddle"))
  local ok, a, b, up = sandbox.call(fn)
  H.ok(ok, "runs"); H.eq(a, false, "string methods are read-only"); H.eq(b, false, "no string metatable")
  H.eq(up, "ABC", "its own string table changed, not the methods")
  H.eq(("abc"):upper(), "ABC", "trusted code unaffected"); H.eq(string.upper("x"), "X", "global string intact")
  H.eq(type(string.dump), "function", "trusted code keeps string.dump")
  -- bytecode is refused at the door
  local bc = string.dump(function() return 1 end)
  local f2, err = sandbox.compile(bc, "bc")
  H.eq(f2, nil, "bytecode"); H.ok(err:find("bytecode is not accepted", 1, true), err)
  -- globals are per filter
  local g1 = assert(sandbox.compile("shared = 1; string.x = 1; return shared", "g1"))
  local g2 = assert(sandbox.compile("return shared, string.x", "g2"))
  sandbox.call(g1)
  local _, s, x = sandbox.call(g2)
  H.eq(s, nil, "globals do not leak between filters"); H.eq(x, nil, "nor library changes")
  H.eq(rawget(_G, "shared"), nil, "nor into the real globals")
end)

H.test("sandbox: a long table.sort compares in Lua, where the hook sees it", function()
  local fn = assert(sandbox.compile([[
local n = ...
local t = {}
for i = 1, n do t[i] = (i * 7919) % n end
return function() table.sort(t) return t[1], t[n] end]], "sort"))
  for _, n in ipairs({ 1000, sandbox.SORT_IN_C_MAX + 1000 }) do
    local _, sort = sandbox.call(fn, n)
    local ok, first, last = sandbox.call_with({ timeout_ms = 60000 }, sort)
    H.ok(ok and first == 0 and last == n - 1, "sorted " .. n)
    local ticks = sandbox.state().ticks
    if n > sandbox.SORT_IN_C_MAX then
      H.ok(ticks > n / 100, n .. " elements: the hook ran during the sort (" .. ticks .. " ticks)")
    else
      H.ok(ticks < 10, n .. " elements: sorted in C (" .. ticks .. " ticks)")
    end
  end
end)

H.test("sandbox: long table.insert / table.remove shifts run in Lua, with the same result", function()
  local fn = assert(sandbox.compile([[
local n = ...
local t, r = {}, {}
for i = 1, n do t[i] = i; r[i] = i end
table.insert(t, 1, "first"); table.insert(t, 3, "third"); table.insert(t, "last")
local a = table.remove(r, 1); local b = table.remove(r, 2); local c = table.remove(r)
local d = table.remove(r, #r + 5)
return #t, t[1], t[2], t[3], t[4], t[#t - 1], t[#t], #r, a, b, c, d, r[1], r[2], r[#r]
]], "shift"))
  for _, n in ipairs({ 100, sandbox.SHIFT_IN_C_MAX + 500 }) do
    local got = { sandbox.call_with({ timeout_ms = 60000 }, fn, n) }
    local want = { true, n + 3, "first", 1, "third", 2, n, "last", n - 3, 1, 3, n, nil, 2, 4, n - 1 }
    for i = 1, 16 do H.eq(got[i], want[i], n .. " elements: result " .. i) end
    if n > sandbox.SHIFT_IN_C_MAX then
      H.ok(sandbox.state().ticks > 20, "the hook ran during the long shifts (" .. sandbox.state().ticks .. ")")
    end
  end
  local ok, err = sandbox.call(assert(sandbox.compile("table.insert({}, 1, 2, 3)", "args")))
  H.ok(not ok and err:find("wrong number of arguments", 1, true), "errors as before: " .. tostring(err))
end)

H.test("sandbox: user functions run with the JIT off (the budget hook must see them)", function()
  local fn = assert(sandbox.compile("return function() local n = 0 for i = 1, 1e5 do n = n + i end return n end",
    "jit"))
  local _, inner = sandbox.call(fn)
  local before = sandbox.state().ticks
  H.ok(before >= 0, "state")
  local ok = sandbox.call(inner)
  H.ok(ok, "runs")
  local ticks = sandbox.state().ticks
  H.ok(ticks >= 100, "the hook counted the loop (" .. ticks .. " ticks): it was interpreted")
end)

-- ---- loading: compiler and worker -----------------------------------------------------------

H.test("compiler: a LuaFilter that does not load in the sandbox is rejected at its field's line", function()
  local function errors_for(doc, extra_files)
    local files = { ["a.yaml"] = SERVICES, ["f.yaml"] = doc }
    for k, v in pairs(extra_files or {}) do files[k] = v end
    return H.errors_of(files)
  end
  local e = errors_for(filter_yaml("syn", "return { on_request = function() end end }"))
  H.find(e, "f.yaml:6: LuaFilter/syn: spec.script: does not compile: LuaFilter/syn:1:", "syntax error")
  e = errors_for(filter_yaml("ret", "return 42"))
  H.find(e, "f.yaml:6: LuaFilter/ret: spec.script: does not load: must return a table", "not a table")
  e = errors_for(filter_yaml("none", "return {}"))
  H.find(e, "f.yaml:6: LuaFilter/none: spec.script: does not load: the returned table has neither", "empty")
  e = errors_for(filter_yaml("top", "while true do end"))
  H.find(e, "f.yaml:6: LuaFilter/top: spec.script: does not load: instruction budget exceeded", "load-time loop")
  e = errors_for(filter_yaml("esc", "local f = io.open('/etc/passwd')\nreturn { on_request = f }"))
  H.find(e, "f.yaml:6: LuaFilter/esc: spec.script: does not load: LuaFilter/esc:1: attempt to index global 'io'",
    "io refused at load")
  e = errors_for(filter_yaml("cfg", [[
local config = ...
assert(type(config.n) == "number", "config.n must be a number")
return { on_request = function() end }]], "  config: {n: x}\n"))
  H.find(e, "f.yaml:7: LuaFilter/cfg: spec.script: does not load: LuaFilter/cfg:2: config.n must be a number",
    "config checked by the filter at load")
  e = errors_for([[
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {name: two, namespace: app}
spec:
  hosts: [main]
  script: "return {}"
  scriptFile: x.lua
]])
  H.find(e, "f.yaml:7: LuaFilter/two: spec.scriptFile: only one of script, scriptFile, code may be set", "both")
  e = errors_for("apiVersion: meltemi.io/v1alpha1\nkind: LuaFilter\nmetadata: {name: no, namespace: app}\n"
    .. "spec:\n  hosts: [main]\n")
  H.find(e, "f.yaml:4: LuaFilter/no: spec: one of script, scriptFile, code is required", "neither")
end)

H.test("compiler: scriptFile is read relative to the config directory", function()
  local dir = H.tmpdir()
  H.write(dir .. "/a.yaml", SERVICES)
  H.write(dir .. "/f.yaml", [[
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata: {name: file, namespace: app}
spec:
  hosts: [main]
  scriptFile: filters/ok.lua
]])
  H.exit_code("mkdir -p '" .. dir .. "/filters'")
  H.write(dir .. "/filters/ok.lua", "return { on_request = function(msg, ctx) ctx:reply('from file') end }\n")
  local snap, errors = compiler.compile_dir(dir)
  H.ok(snap, "compiles: " .. table.concat(errors or {}, "; "))
  H.eq(snap.lua_filters[1].chunkname, "filters/ok.lua", "chunk named after the file")
  F.apply(worker, snap)
  H.eq(req({ "get", "k" }).reply, "from file", "runs")
  H.write(dir .. "/filters/ok.lua", "return { on_request = function( end }\n")
  snap, errors = compiler.compile_dir(dir)
  H.eq(snap, nil, "rejected")
  H.find(errors, dir .. "/f.yaml:6: LuaFilter/file: spec.scriptFile: does not compile: filters/ok.lua:1:", "syntax")
  os.remove(dir .. "/filters/ok.lua")
  errors = select(2, compiler.compile_dir(dir))
  H.find(errors, dir .. "/f.yaml:6: LuaFilter/file: spec.scriptFile: cannot read the script: " .. dir
    .. "/filters/ok.lua:", "missing file")
  H.exit_code("rm -rf '" .. dir .. "'")
end)

H.test("worker: a filter that fails to load there fails closed on its listeners only", function()
  local snap = H.snapshot_of({ ["a.yaml"] = SERVICES,
    ["f.yaml"] = filter_yaml("f", "return { on_request = function(m, c) c:reply('ok') end }") })
  snap.lua_filters[1].code = "while true do end"
  F.reset_stats()
  local chains = F.apply(worker, snap)
  H.ok(chains[LI], "the listener keeps its chain")
  H.eq(#worker.load_errors, 1, "recorded")
  failed_with(req({ "get", "k" }), "f", "does not load: instruction budget exceeded")
  H.ok(F.logs[1] and F.logs[1].text:find("LuaFilter f", 1, true), "logged at apply")
  H.eq(F.request(worker, 2, { "get", "k" }).error, nil, "the other listener is unaffected")
end)

H.test("reload: an unchanged filter keeps its module state, a changed one starts afresh", function()
  local code = "local n = 0\nreturn { on_request = function(m, c) n = n + 1 c:reply(n) end }"
  apply_one(code)
  req({ "get", "k" }); req({ "get", "k" })
  apply_filters({ filter_yaml("f", code), "apiVersion: redis.aeraki.io/v1alpha1\nkind: RedisService\n"
    .. "metadata: {name: rs, namespace: app}\nspec:\n  host: [main]\n  redis:\n  - route: {host: other}\n" })
  local v = req({ "get", "k" })
  H.eq(v.reply, 3, "state kept across a reload that changed only routes")
  H.eq(F.cluster_name(v), OTHER, "the new route applies")
  apply_one(code .. "\n-- v2")
  H.eq(req({ "get", "k" }).reply, 1, "changed code: fresh state")
end)

-- ---- the examples ----------------------------------------------------------------------------

local EX = "examples/lua-filters"
local function example_snapshot()
  local snap, errors = compiler.compile_dir(EX)
  if not snap then error("examples do not compile:\n  " .. table.concat(errors, "\n  "), 2) end
  return snap
end

local function listener_of(snap, service)
  for i, l in ipairs(snap.listeners) do
    if l.service == service .. ".demo.svc.cluster.local" then return i end
  end
  error("no listener for " .. service)
end

H.test("example deny-commands: FLUSHALL, CONFIG, KEYS refused with NOPERM; others pass", function()
  local snap = example_snapshot()
  F.apply(worker, snap)
  F.reset_stats()
  local li = listener_of(snap, "redis-main")
  for _, argv in ipairs({ { "flushall" }, { "flushdb", "async" }, { "config", "get", "*" }, { "keys", "*" } }) do
    local v = F.request(worker, li, argv, { key = false })
    H.eq(v.error, "NOPERM this command is disabled by the proxy (" .. argv[1] .. ")", argv[1])
  end
  H.eq(F.counters["denied_commands{flushall}"], 1, "counted per command")
  local v = F.request(worker, li, { "get", "k" })
  H.eq(v.error, nil, "GET passes"); H.eq(v.reply, nil, "and is forwarded")
  H.eq(F.request(worker, li, { "configx" }, { key = false }).error, nil, "patterns are anchored as written")
end)

H.test("example tenant-prefix: every key gets the tenant's prefix; cross-tenant commands are refused", function()
  local snap = example_snapshot()
  F.apply(worker, snap)
  local a, b = listener_of(snap, "tenant-a"), listener_of(snap, "tenant-b")
  local v = F.request(worker, a, { "set", "k", "v" }, { is_write = true, conn_id = 1 })
  H.eq(v.sets[2], "a:k", "tenant a"); H.eq(v.sets[3], nil, "value untouched")
  v = F.request(worker, b, { "mget", "k", "j" }, { conn_id = 2 })
  H.eq(v.sets[2], "b:k", "tenant b first key"); H.eq(v.sets[3], "b:j", "second key")
  v = F.request(worker, b, { "mset", "k", "1", "j", "2" }, { conn_id = 2, is_write = true })
  H.ok(v.sets[2] == "b:k" and v.sets[4] == "b:j" and v.sets[3] == nil and v.sets[5] == nil, "MSET keys only")
  H.eq(F.request(worker, a, { "keys", "*" }, { key = false, conn_id = 1 }).error,
    "NOPERM keys is not allowed for tenants", "KEYS")
  H.eq(F.request(worker, a, { "eval", "return 1", "1", "k" }, { key = "k", conn_id = 1 }).error,
    "NOPERM eval is not allowed for tenants", "EVAL")
  v = F.request(worker, a, { "ping" }, { key = false, conn_id = 1 })
  H.ok(v.error == nil and next(v.sets) == nil, "PING passes untouched")
  worker.conn_closed(1); worker.conn_closed(2)
end)

H.test("example route-by-pattern: session keys go to redis-sessions, the rest stays", function()
  local snap = example_snapshot()
  F.apply(worker, snap)
  local li = listener_of(snap, "redis-app")
  local sessions = "outbound|6379||redis-sessions.demo.svc.cluster.local"
  H.eq(F.cluster_name(F.request(worker, li, { "get", "session:9f86d081" })), sessions, "session:<hex>")
  H.eq(F.cluster_name(F.request(worker, li, { "get", "user:42:session" })), sessions, "user:<n>:session")
  H.eq(F.request(worker, li, { "get", "session:xyz!" }).route, nil, "not hex: stays")
  H.eq(F.request(worker, li, { "get", "user:42" }).route, nil, "other keys stay")
  H.eq(F.request(worker, li, { "dbsize" }, { key = false }).route, nil, "keyless stays")
end)

H.test("example hot-keys: the top keys of a window are counted, logged and answered on GET meltemi:hotkeys", function()
  local snap = example_snapshot()
  F.apply(worker, snap)
  F.reset_stats()
  local li = listener_of(snap, "redis-main")
  F.clock = 1000
  for i = 1, 1000 do
    F.request(worker, li, { "get", "hot" })
    if i % 2 == 0 then F.request(worker, li, { "get", "warm" }) end
    F.request(worker, li, { "get", "cold" .. i })
  end
  H.ok(H.same(F.request(worker, li, { "get", "meltemi:hotkeys" }).reply, {}), "nothing before the window ends")
  F.clock = 1000 + 10000
  local v = F.request(worker, li, { "get", "meltemi:hotkeys" })
  H.ok(H.same(v.reply, { "hot 1000", "warm 500" }), "top keys over min_count, hottest first")
  H.eq(F.counters["hot_key{hot}"], 1000, "published as a counter"); H.eq(F.counters["hot_key{cold1}"], nil, "cold not")
  H.ok(F.logs[#F.logs].text:find("hot keys: hot 1000, warm 500", 1, true), "logged")
  H.eq(F.request(worker, li, { "flushall" }, { key = false }).error ~= nil, true, "deny-commands runs first (order 10)")
end)

H.run()
