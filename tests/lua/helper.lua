-- Shared by tests/lua/test_*.lua (loaded with dofile; run from the repo root as
-- `meltemi lua tests/lua/test_x.lua`). Each test is a named function; failures are
-- collected, printed with their message, and make the script exit 1.

local C = require "meltemi.c"
local compiler = require "meltemi.compiler"

local H = {}
local tests = {}

function H.test(name, fn) tests[#tests + 1] = { name = name, fn = fn } end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function H.eq(got, want, what)
  if got ~= want then
    error(string.format("%s: expected %s, got %s", what or "value", show(want), show(got)), 2)
  end
end

function H.ok(cond, what)
  if not cond then error(what or "assertion failed", 2) end
  return cond
end

-- Deep equality for plain data.
function H.same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b or (a ~= a and b ~= b) end
  for k, v in pairs(a) do
    if not H.same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- The one entry of list that contains every needle (plain text); fails otherwise.
function H.find(list, needles, what)
  if type(needles) == "string" then needles = { needles } end
  for _, s in ipairs(list or {}) do
    local all = true
    for _, n in ipairs(needles) do
      if not s:find(n, 1, true) then all = false end
    end
    if all then return s end
  end
  error(string.format("%s: no entry contains %s in:\n  %s", what or "list",
    table.concat(needles, " + "), table.concat(list or {}, "\n  ")), 2)
end

function H.none(list, needle, what)
  for _, s in ipairs(list or {}) do
    if s:find(needle, 1, true) then error(string.format("%s: unexpected %q", what or "list", s), 2) end
  end
end

-- compile({ ["a.yaml"] = text, ... }) in file-name order.
function H.compile(files)
  local names = {}
  for n in pairs(files) do names[#names + 1] = n end
  table.sort(names)
  local sources = {}
  for _, n in ipairs(names) do sources[#sources + 1] = { file = n, text = files[n] } end
  return compiler.compile_sources(sources)
end

-- Compiles files of the repo (paths relative to the root) together.
function H.compile_paths(paths)
  local sources = {}
  for _, p in ipairs(paths) do
    local text = assert(C.readfile(p))
    sources[#sources + 1] = { file = p, text = text }
  end
  return compiler.compile_sources(sources)
end

-- Expects a failed compile; returns the errors.
function H.errors_of(files)
  local snap, errors = H.compile(files)
  if snap then error("expected errors, but the configuration compiled", 2) end
  return errors
end

-- Expects success; returns the snapshot.
function H.snapshot_of(files)
  local snap, errors = H.compile(files)
  if not snap then error("expected success, got:\n  " .. table.concat(errors, "\n  "), 2) end
  return snap
end

function H.listener(snap, name)
  for _, l in ipairs(snap.listeners) do
    if l.name == name then return l end
  end
  error("no listener " .. name, 2)
end

-- Runs a shell command; returns its exit code (LuaJIT with or without 5.2 compat).
function H.exit_code(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then return a >= 256 and math.floor(a / 256) or a end
  return c
end

function H.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(H.exit_code("mkdir -p '" .. p .. "'") == 0)
  return p
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function H.run()
  local passed, failed = 0, 0
  for _, t in ipairs(tests) do
    local ok, err = xpcall(t.fn, debug.traceback)
    if ok then
      passed = passed + 1
    else
      failed = failed + 1
      io.stderr:write(string.format("FAIL %s: %s\n", t.name, err))
    end
  end
  local name = (arg and arg[0] or "lua"):match("([%w_]+)%.lua$") or "lua"
  print(string.format("%s: %d passed, %d failed", name, passed, failed))
  if failed > 0 then os.exit(1) end
end

return H
