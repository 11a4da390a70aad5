-- meltemi.dump: the snapshot as text.
--   lua(t)  -> readable Lua source ("return { ... }") that loads back to an equal table;
--              keys sorted, so the same configuration always prints the same text.
--   json(t) -> JSON for /config_dump, with every password and Secret value replaced by
--              "<redacted>"; keys sorted and indented, strings escaped by lua-cjson.
--   lua_redacted(t) -> lua(t) with the same redaction, for `meltemi compile`. (lua(t) itself
--              keeps every byte: the runtime fingerprints and ships snapshots with it.)
-- Both refuse cycles and values that are not data (functions, userdata other than null).

local cjson = require "cjson"
local NULL = require("meltemi.c").null

local M = {}

local LUA_KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do LUA_KEYWORDS[w] = true end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta == "number" end
    return a < b
  end)
  return keys
end
M.sorted_keys = sorted_keys

-- An array 1..n with nothing else.
local function array_len(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do
    if t[i] == nil then return nil end
  end
  return n
end
M.array_len = array_len

local function number_text(v)
  if v ~= v then return "0/0" end
  if v == math.huge then return "math.huge" end
  if v == -math.huge then return "-math.huge" end
  if v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then return string.format("%d", v) end
  return string.format("%.17g", v)
end

local function string_text(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"):gsub("\r", "\\r"):gsub("%z", "\\0"))
end

local function scalar_text(v)
  local t = type(v)
  if t == "string" then return string_text(v) end
  if t == "number" then return number_text(v) end
  if t == "boolean" then return tostring(v) end
  if v == NULL then return "nil" end
  error("dump: cannot print a " .. t, 0)
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not LUA_KEYWORDS[k] then return k end
  return "[" .. scalar_text(k) .. "]"
end

local function is_flat(t, n)
  for i = 1, n do
    if type(t[i]) == "table" then return false end
  end
  return true
end

local function emit(v, indent, out, active)
  if type(v) ~= "table" then
    out[#out + 1] = scalar_text(v)
    return
  end
  if active[v] then error("dump: the table contains a cycle", 0) end
  if next(v) == nil then
    out[#out + 1] = "{}"
    return
  end
  active[v] = true
  local n = array_len(v)
  local inner = indent .. "  "
  if n and is_flat(v, n) then
    local parts = {}
    for i = 1, n do parts[i] = scalar_text(v[i]) end
    local line = "{ " .. table.concat(parts, ", ") .. " }"
    if #line + #indent <= 100 then
      out[#out + 1] = line
      active[v] = nil
      return
    end
  end
  out[#out + 1] = "{\n"
  if n then
    for i = 1, n do
      out[#out + 1] = inner
      emit(v[i], inner, out, active)
      out[#out + 1] = ",\n"
    end
  else
    for _, k in ipairs(sorted_keys(v)) do
      out[#out + 1] = inner .. key_text(k) .. " = "
      emit(v[k], inner, out, active)
      out[#out + 1] = ",\n"
    end
  end
  out[#out + 1] = indent .. "}"
  active[v] = nil
end

function M.lua(t)
  local out = { "return " }
  emit(t, "", out, {})
  out[#out + 1] = "\n"
  return table.concat(out)
end

-- ---- secrets redacted ----------------------------------------------------------------------

local REDACTED = "<redacted>"
local SECRET_KEYS = { password = true, token = true, key_pem = true }

-- Copies v with every password / token string and, below anything of kind Secret, every
-- data / stringData value replaced by REDACTED.
local function redact(v, key, in_secret, seen)
  if type(v) ~= "table" then
    if SECRET_KEYS[key] and v ~= NULL then return REDACTED end
    return v
  end
  if seen[v] then error("dump: the table contains a cycle", 0) end
  seen[v] = true
  in_secret = in_secret or v.kind == "Secret"
  local copy = {}
  for k, x in pairs(v) do
    if in_secret and (k == "data" or k == "stringData") and type(x) == "table" then
      local r = {}
      for sk in pairs(x) do r[sk] = REDACTED end
      copy[k] = r
    else
      copy[k] = redact(x, k, in_secret, seen)
    end
  end
  seen[v] = nil
  return copy
end

-- Keys whose empty value is a JSON array rather than an object.
local ARRAY_KEYS = {
  warnings = true, listeners = true, endpoints = true, routes = true, mirrors = true, faults = true,
  commands = true, discovery_endpoints = true, lua_filters = true, sources = true, sidecars = true,
  ports = true, hosts = true, match = true, route = true, request_mutation = true,
  response_mutation = true, conditions = true, descriptors = true, egress = true, keys = true,
}

-- lua-cjson escapes strings (quotes, backslashes, control bytes as \u00XX); the layout is
-- ours, because the 2.1 that Debian ships neither sorts keys nor indents, cannot tell an empty
-- array from an empty object, caps numbers at 14 significant digits and always writes "/" as
-- "\/". The last is undone: after cjson, a backslash before "/" can only be that escape (a
-- backslash of the data is doubled and a "/" after it escaped again).
local function json_string(s)
  return (cjson.encode(s):gsub("\\/", "/"))
end

local function json_scalar(v)
  local t = type(v)
  if t == "string" then return json_string(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end -- JSON has no NaN
    return number_text(v)
  end
  if t == "boolean" then return tostring(v) end
  if v == nil or v == NULL then return "null" end
  error("json: cannot encode a " .. t, 0)
end

-- An array 1..n is a JSON array; any other table an object with its keys as strings, sorted.
-- An empty table is [] when the key it sits under is in ARRAY_KEYS, else {}.
local function json_emit(v, key, indent, out)
  if type(v) ~= "table" then
    out[#out + 1] = json_scalar(v)
    return
  end
  if next(v) == nil then
    out[#out + 1] = ARRAY_KEYS[key] and "[]" or "{}"
    return
  end
  local inner = indent .. "  "
  local n = array_len(v)
  if n then
    out[#out + 1] = "[\n"
    for i = 1, n do
      out[#out + 1] = inner
      json_emit(v[i], key, inner, out)
      out[#out + 1] = i < n and ",\n" or "\n"
    end
    out[#out + 1] = indent .. "]"
    return
  end
  local keys = {}
  for k in pairs(v) do
    if type(k) ~= "string" and type(k) ~= "number" then error("json: a key is a " .. type(k), 0) end
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  out[#out + 1] = "{\n"
  for i, k in ipairs(keys) do
    local x = v[k]
    if x == nil then x = v[tonumber(k)] end
    out[#out + 1] = inner .. json_string(k) .. ": "
    json_emit(x, k, inner, out)
    out[#out + 1] = i < #keys and ",\n" or "\n"
  end
  out[#out + 1] = indent .. "}"
end

function M.json(t)
  local out = {}
  json_emit(redact(t, nil, false, {}), nil, "", out) -- redact refuses cycles
  return table.concat(out)
end

function M.lua_redacted(t)
  return M.lua(redact(t, nil, false, {}))
end

M.redact = function(t) return redact(t, nil, false, {}) end
M.REDACTED = REDACTED
return M
