-- meltemi.json: a small, deterministic JSON encoder (keys sorted). Tables that are arrays
-- 1..n encode as arrays; an empty table encodes as [] when its key is in opts.array_keys,
-- else as {}. NaN and infinities, which JSON lacks, encode as null.

local NULL = require("meltemi.c").null

local M = {}

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(ch)
    return ESCAPES[ch] or string.format("\\u%04x", ch:byte())
  end) .. '"'
end
M.quote = quote

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return n > 0, n
end

local function encode(v, key, opts, indent, out, active)
  local t = type(v)
  if v == nil or v == NULL then
    out[#out + 1] = "null"
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      out[#out + 1] = "null"
    elseif v % 1 == 0 and v > -2 ^ 53 and v < 2 ^ 53 then
      out[#out + 1] = string.format("%d", v)
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif t == "string" then
    out[#out + 1] = quote(v)
  elseif t == "table" then
    if active[v] then error("json: the table contains a cycle", 0) end
    if next(v) == nil then
      out[#out + 1] = (opts.array_keys and opts.array_keys[key]) and "[]" or "{}"
      return
    end
    active[v] = true
    local nl = opts.pretty and "\n" or ""
    local inner = opts.pretty and indent .. "  " or ""
    local arr, n = is_array(v)
    if arr then
      out[#out + 1] = "[" .. nl
      for i = 1, n do
        out[#out + 1] = inner
        encode(v[i], key, opts, inner, out, active)
        out[#out + 1] = (i < n and "," or "") .. nl
      end
      out[#out + 1] = (opts.pretty and indent or "") .. "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" and type(k) ~= "number" then error("json: a key is a " .. type(k), 0) end
        keys[#keys + 1] = tostring(k)
      end
      table.sort(keys)
      out[#out + 1] = "{" .. nl
      for i, k in ipairs(keys) do
        local x = v[k]
        if x == nil then x = v[tonumber(k)] end
        out[#out + 1] = inner .. quote(k) .. (opts.pretty and ": " or ":")
        encode(x, k, opts, inner, out, active)
        out[#out + 1] = (i < #keys and "," or "") .. nl
      end
      out[#out + 1] = (opts.pretty and indent or "") .. "}"
    end
    active[v] = nil
  else
    error("json: cannot encode a " .. t, 0)
  end
end

function M.encode(v, opts)
  local out = {}
  encode(v, nil, opts or {}, "", out, {})
  return table.concat(out)
end

return M
