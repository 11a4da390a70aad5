-- meltemi.schema: a small schema language for the config kinds, and the validator that
-- checks a loaded YAML document against one. Problems are reported as (path, message);
-- the compiler turns a path into a line with the YAML loader's line tables.
--
--   local T = require "meltemi.schema"
--   T.obj({ host = T.str{ required = true }, port = T.int{ min = 1, max = 65535 } })
--
-- Paths look like spec.trafficPolicy.connectionPool.redis.auth.secret.name; sequence items
-- are 0-based as kubectl prints them (spec.ports[0].name); map keys that are not plain
-- words are quoted (metadata.labels["kubernetes.io/service-name"]).

local NULL = require("meltemi.c").null

local M = {}

-- ---- durations ---------------------------------------------------------------------------

local UNIT_MS = { ns = 1e-6, us = 1e-3, ["µs"] = 1e-3, ms = 1, s = 1000, m = 60000, h = 3600000 }

-- Go / protobuf-JSON style durations: "100ms", "1.5s", "2m", "1h", "1m30s". Returns
-- milliseconds (a float) or nil when the text is not a duration.
function M.parse_duration(s)
  if type(s) ~= "string" or s == "" then return nil end
  local total, pos = 0, 1
  while pos <= #s do
    local num, unit, nxt = s:match("^(%d*%.?%d*)([a-zµ]+)()", pos)
    if not num or num == "" or num == "." or not UNIT_MS[unit] then return nil end
    total = total + tonumber(num) * UNIT_MS[unit]
    pos = nxt
  end
  return total
end

-- Milliseconds as an integer; anything positive below 1ms counts as 1ms.
function M.duration_ms(s)
  local ms = M.parse_duration(s)
  if not ms then return nil end
  if ms > 0 and ms < 1 then return 1 end
  return math.floor(ms + 0.5)
end

-- ---- type constructors -------------------------------------------------------------------

local function make(t, o)
  o = o or {}
  o.t = t
  return o
end

function M.str(o) return make("string", o) end
function M.int(o) return make("integer", o) end
function M.num(o) return make("number", o) end
function M.bool(o) return make("boolean", o) end
function M.dur(o) return make("duration", o) end
function M.any(o) return make("any", o) end
function M.int_or_str(o) return make("int_or_string", o) end

-- T.enum({ "A", "B" }, { required = true })
function M.enum(values, o)
  o = make("enum", o)
  o.values = values
  return o
end

-- T.list(item, { required = true, min_items = 1 })
function M.list(item, o)
  o = make("list", o)
  o.item = item
  return o
end

-- T.map(value): string keys, every value of one type (labels, Secret data, ...).
-- Any type takes { secret = true }: its type errors never quote the value.
function M.map(value, o)
  o = make("map", o)
  o.value = value
  return o
end

-- T.obj(fields, { required = true, one_of = { {"plain", "secret"} }, check = fn })
-- one_of: at most one of the named fields may be set (exactly one with exactly_one = true).
-- check(value, report, path): extra cross-field rules, called only if the fields are valid.
function M.obj(fields, o)
  o = make("object", o)
  o.fields = fields
  return o
end

-- A copy of a schema with options changed: T.with(shape, { required = true }).
function M.with(sch, o)
  local c = {}
  for k, v in pairs(sch) do c[k] = v end
  for k, v in pairs(o) do c[k] = v end
  return c
end

-- ---- paths -------------------------------------------------------------------------------

-- path + one map key: plain words as .key, anything else quoted: labels["app.kubernetes.io/name"].
function M.key(path, key)
  if key:match("^[%w_%-]+$") then
    if not path or path == "" then return key end
    return path .. "." .. key
  end
  return (path or "") .. string.format("[%q]", key)
end

-- path + a relative path ("port.number", "[2].name"), a field name, or a 1-based index.
function M.join(path, rel)
  if type(rel) == "number" then return (path or "") .. "[" .. (rel - 1) .. "]" end
  if rel:sub(1, 1) == "[" then return (path or "") .. rel end
  if rel:match("^[%w_%-]+[%w_%-%.%[%]]*$") then
    if not path or path == "" then return rel end
    return path .. "." .. rel
  end
  return M.key(path, rel)
end

-- Splits a path back into table keys (numbers 1-based): "a.b[0]" -> { "a", "b", 1 }.
function M.split(path)
  local keys, pos = {}, 1
  while pos <= #path do
    local name, nxt = path:match("^%.?([%w_%-]+)()", pos)
    if name then
      keys[#keys + 1] = name
    else
      local idx
      idx, nxt = path:match("^%[(%d+)%]()", pos)
      if idx then
        keys[#keys + 1] = tonumber(idx) + 1
      else
        local q
        q, nxt = path:match('^%[(%b"")%]()', pos)
        if not q then break end
        keys[#keys + 1] = loadstring("return " .. q)()
      end
    end
    pos = nxt
  end
  return keys
end

-- ---- validation --------------------------------------------------------------------------

local function describe(v)
  if v == NULL then return "null" end
  local t = type(v)
  if t == "string" then
    return string.format("string %q", #v > 40 and v:sub(1, 40) .. "..." or v)
  elseif t == "number" then
    return "number " .. tostring(v)
  elseif t == "table" then
    if v[1] ~= nil or (next(v) == nil and M.is_seq and M.is_seq(v)) then return "a list" end
    return "a mapping"
  end
  return t
end
M.describe = describe

-- For fields marked secret ({ secret = true }: passwords, Secret data): the kind of value
-- only, never the value, so a password written as a number (`password: 123456`) is not
-- echoed by validate, the log or a POST /reload answer.
local function describe_secret(v)
  if v == NULL then return "null" end
  local t = type(v)
  if t == "table" then return describe(v) end
  return (t == "number" and "a number" or t == "string" and "a string" or t == "boolean" and "a boolean"
    or t) .. " (value redacted; write a secret as a quoted string)"
end

-- What a type error says it got.
local function got(sch, v)
  if sch.secret then return describe_secret(v) end
  return describe(v)
end

-- The YAML loader tells lists from mappings in its line tables; the compiler installs
-- M.node_kind(t) -> "map" | "seq" | nil before validating.
local function is_seq(t)
  local k = M.node_kind and M.node_kind(t)
  if k then return k == "seq" end
  if next(t) == nil then return true end
  return t[1] ~= nil
end
M.is_seq = is_seq

local function is_map(t)
  local k = M.node_kind and M.node_kind(t)
  if k then return k == "map" end
  local key = next(t)
  return key == nil or type(key) == "string"
end

local check

local function check_object(sch, v, path, report)
  if type(v) ~= "table" or not is_map(v) then
    return report(path, "expected a mapping, got " .. got(sch, v))
  end
  local ok = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    local fs = sch.fields[k]
    if not fs then
      if not sch.open then
        report(M.join(path, k), "unknown field")
        ok = false
      end
    elseif not check(fs, v[k], M.join(path, k), report) then
      ok = false
    end
  end
  local names = {}
  for name in pairs(sch.fields) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    if sch.fields[name].required and v[name] == nil then
      report(M.join(path, name), "required field missing")
      ok = false
    end
  end
  for _, group in ipairs(sch.one_of or {}) do
    local set = {}
    for _, name in ipairs(group) do
      if v[name] ~= nil then set[#set + 1] = name end
    end
    if #set > 1 then
      report(M.join(path, set[2]), "only one of " .. table.concat(group, ", ") .. " may be set")
      ok = false
    elseif #set == 0 and sch.exactly_one then
      report(path, "one of " .. table.concat(group, ", ") .. " is required")
      ok = false
    end
  end
  if ok and sch.check then
    local before = ok
    sch.check(v, function(p, msg)
      before = false
      report(p and M.join(path, p) or path, msg)
    end, path)
    ok = before
  end
  return ok
end

local function check_list(sch, v, path, report)
  if type(v) ~= "table" or not is_seq(v) then
    return report(path, "expected a list, got " .. got(sch, v))
  end
  local ok = true
  if sch.min_items and #v < sch.min_items then
    report(path, string.format("needs at least %d item%s", sch.min_items,
      sch.min_items == 1 and "" or "s"))
    ok = false
  end
  for i = 1, #v do
    if not check(sch.item, v[i], M.join(path, i), report) then ok = false end
  end
  return ok
end

local function check_map(sch, v, path, report)
  if type(v) ~= "table" or not is_map(v) then
    return report(path, "expected a mapping, got " .. got(sch, v))
  end
  local ok = true
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if not check(sch.value, v[k], M.key(path, k), report) then ok = false end
  end
  return ok
end

local function check_number(sch, v, path, report)
  if type(v) ~= "number" or v ~= v then
    return report(path, "expected " .. (sch.t == "integer" and "an integer" or "a number")
      .. ", got " .. got(sch, v))
  end
  if sch.t == "integer" and (v % 1 ~= 0 or v == math.huge or v == -math.huge) then
    return report(path, "expected an integer, got " .. tostring(v))
  end
  if (sch.min and v < sch.min) or (sch.max and v > sch.max) then
    local range = sch.max and string.format("from %s to %s", tostring(sch.min or "-inf"),
      tostring(sch.max)) or ("at least " .. tostring(sch.min))
    return report(path, string.format("%s is out of range (%s)", tostring(v), range))
  end
  if sch.above and v <= sch.above then
    return report(path, string.format("%s must be greater than %s", tostring(v), sch.above))
  end
  return true
end

local checkers = {
  object = check_object,
  list = check_list,
  map = check_map,
  integer = check_number,
  number = check_number,
  any = function() return true end,
  string = function(sch, v, path, report)
    if type(v) ~= "string" then return report(path, "expected a string, got " .. got(sch, v)) end
    if sch.non_empty and v == "" then return report(path, "must not be empty") end
    if sch.pattern and not v:match(sch.pattern) then
      return report(path, string.format("%q is not %s", v, sch.pattern_text or "valid"))
    end
    local problem = sch.validate and sch.validate(v)
    if problem then return report(path, problem) end
    return true
  end,
  boolean = function(sch, v, path, report)
    if type(v) ~= "boolean" then return report(path, "expected true or false, got " .. got(sch, v)) end
    return true
  end,
  enum = function(sch, v, path, report)
    if type(v) ~= "string" then
      return report(path, "expected one of " .. table.concat(sch.values, ", ") .. ", got " .. got(sch, v))
    end
    for _, x in ipairs(sch.values) do
      if x == v then return true end
    end
    return report(path, string.format("%q is not one of %s", v, table.concat(sch.values, ", ")))
  end,
  duration = function(sch, v, path, report)
    if type(v) ~= "string" or not M.parse_duration(v) then
      return report(path, string.format("invalid duration %s (use e.g. 100ms, 1.5s, 2m, 1h)",
        type(v) == "string" and string.format("%q", v) or got(sch, v)))
    end
    return true
  end,
  int_or_string = function(sch, v, path, report)
    if (type(v) == "number" and v % 1 == 0) or (type(v) == "string" and v ~= "") then return true end
    return report(path, "expected an integer or a name, got " .. got(sch, v))
  end,
}

-- Returns true when v conforms; every problem goes to report(path, message).
check = function(sch, v, path, report)
  if v == nil then return true end
  if v == NULL and sch.t ~= "any" then
    return report(path, "expected " .. (sch.t == "object" and "a mapping" or sch.t == "list" and "a list"
      or sch.t) .. ", got null")
  end
  return checkers[sch.t](sch, v, path, function(p, msg)
    report(p, msg)
    return false
  end) ~= false
end

function M.check(sch, v, path, report)
  return check(sch, v, path, report)
end

return M
