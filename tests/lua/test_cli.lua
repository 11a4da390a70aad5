-- luacheck: no max line length (expected messages are quoted whole)
-- `meltemi validate` / `meltemi compile` / `meltemi lua` as a user runs them: exit codes,
-- what goes to stdout and what to stderr. The binary is the one running this script.
local H = dofile("tests/lua/helper.lua")
local C = require "meltemi.c"

-- The shell that io.popen starts is a child of this process: its $PPID is meltemi.
local BIN = io.popen("readlink -f /proc/$PPID/exe"):read("*l")
assert(BIN and BIN ~= "", "cannot find the meltemi binary")

local function run(args)
  local d = H.tmpdir()
  local code = H.exit_code(string.format("'%s' %s >'%s/out' 2>'%s/err'", BIN, args, d, d))
  local out, err = C.readfile(d .. "/out"), C.readfile(d .. "/err")
  os.execute("rm -rf '" .. d .. "'")
  return code, out, err
end

H.test("the binary under test is meltemi", function()
  local code, out = run("--version")
  H.eq(code, 0, "exit code"); H.ok(out:match("^meltemi "), "version text: " .. out)
end)

H.test("validate: a valid directory exits 0 and says ok", function()
  local code, out, err = run("validate examples/redis-demo")
  H.eq(code, 0, "exit code: " .. err)
  H.eq(out, "ok: 4 objects, 1 listeners, 1 clusters\n", "stdout"); H.eq(err, "", "stderr")
end)

H.test("validate: warnings go to stderr, prefixed, and do not fail", function()
  local d = H.tmpdir()
  H.write(d .. "/s.yaml", C.readfile("tests/lua/fixtures/blog/services.yaml"))
  H.write(d .. "/step1.yaml", C.readfile("tests/lua/fixtures/blog/step1.yaml"))
  local code, out, err = run("validate " .. d)
  os.execute("rm -rf '" .. d .. "'")
  H.eq(code, 0, "exit code"); H.ok(out:match("^ok: "), out)
  H.ok(err:find("warning: " .. d .. "/step1.yaml:8: Secret/redis-service-secret: data.password: value ends in a newline",
    1, true), err)
end)

H.test("validate: an accepted field without effect warns; MUTUAL without a certificate is an error", function()
  local d = H.tmpdir()
  H.write(d .. "/s.yaml", C.readfile("tests/lua/fixtures/blog/services.yaml"))
  H.write(d .. "/dr.yaml", "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
    .. "metadata: {name: r, namespace: redis}\nspec:\n  host: redis-single\n  trafficPolicy:\n"
    .. "    proxyProtocol: {version: V1}\n")
  local code, _, err = run("validate " .. d)
  H.eq(code, 0, "warnings do not fail: " .. err)
  H.ok(err:find("warning: " .. d .. "/dr.yaml:7: DestinationRule/r: spec.trafficPolicy.proxyProtocol: "
    .. "accepted but not enforced: ", 1, true), err)
  H.write(d .. "/dr.yaml", "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
    .. "metadata: {name: r, namespace: redis}\nspec:\n  host: redis-single\n  trafficPolicy:\n"
    .. "    tls: {mode: ISTIO_MUTUAL}\n")
  code, _, err = run("validate " .. d)
  H.eq(code, 0, "ISTIO_MUTUAL is TLS origination with the workload's files: " .. err)
  H.write(d .. "/dr.yaml", "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\n"
    .. "metadata: {name: r, namespace: redis}\nspec:\n  host: redis-single\n  trafficPolicy:\n"
    .. "    tls: {mode: MUTUAL}\n")
  code, _, err = run("validate " .. d)
  os.execute("rm -rf '" .. d .. "'")
  H.eq(code, 1, "exit code")
  H.ok(err:find(d .. "/dr.yaml:7: DestinationRule/r: spec.trafficPolicy.tls: mode MUTUAL needs clientCertificate and privateKey", 1, true), err)
end)

H.test("validate: every error on stderr, one per line, exit 1", function()
  local d = H.tmpdir()
  H.write(d .. "/a.yaml", "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n---\napiVersion: v1\nkind: Secret\n"
    .. "metadata: {name: s}\ndata: {password: '!!'}\n")
  H.write(d .. "/b.yaml", "a: [\n")
  local code, out, err = run("validate " .. d)
  H.eq(code, 1, "exit code"); H.eq(out, "", "nothing on stdout")
  local lines = {}
  for l in err:gmatch("[^\n]+") do lines[#lines + 1] = l end
  H.eq(#lines, 3, "three errors:\n" .. err)
  H.eq(lines[1], d .. '/a.yaml:2: Widget/w: kind: unknown kind "Widget" (apiVersion "v1")', "first")
  H.eq(lines[2], d .. "/a.yaml:8: Secret/s: data.password: invalid base64: illegal base64 data at input byte 0", "second")
  H.ok(lines[3]:find(d .. "/b.yaml:2: yaml: ", 1, true), lines[3])
  code, out = run("compile " .. d)
  H.eq(code, 1, "compile fails too"); H.eq(out, "", "no snapshot printed")
  os.execute("rm -rf '" .. d .. "'")
end)

H.test("validate: a missing directory is one clear error, exit 1", function()
  local code, _, err = run("validate tests/lua/no-such-dir")
  H.eq(code, 1, "exit code")
  H.eq(err, "tests/lua/no-such-dir: No such file or directory (cannot read the configuration directory)\n", "stderr")
end)

H.test("compile: prints Lua that loads back to the snapshot", function()
  local code, out, err = run("compile examples/redis-demo")
  H.eq(code, 0, "exit code: " .. err)
  local snap = assert(loadstring(out))()
  H.eq(snap.listeners[1].name, "127.0.0.10:6379", "listener")
  local dump = require "meltemi.dump"
  H.ok(H.same(snap, dump.redact(require("meltemi.compiler").compile_dir("examples/redis-demo"))),
    "same as compile_dir, passwords redacted")
  H.ok(out:find('password = "<redacted>"', 1, true), "passwords redacted: " .. out)
  H.ok(not out:find("testredis", 1, true), "no password in the output")
end)

H.test("lua: a failing script prints a traceback and exits 1; arguments reach it", function()
  local d = H.tmpdir()
  H.write(d .. "/ok.lua", "assert(arg[1] == 'x' and select('#', ...) == 2 and arg[0]:match('ok.lua$'))\n")
  H.write(d .. "/bad.lua", "local function f() error('boom') end\nf()\n")
  H.eq((run("lua " .. d .. "/ok.lua x y")), 0, "ok script")
  local code, _, err = run("lua " .. d .. "/bad.lua")
  H.eq(code, 1, "failing script"); H.ok(err:find("boom", 1, true) and err:find("stack traceback", 1, true), err)
  code, _, err = run("lua " .. d .. "/missing.lua")
  H.eq(code, 1, "missing script"); H.ok(err:find("missing.lua", 1, true), err)
  os.execute("rm -rf '" .. d .. "'")
end)

H.run()
