-- meltemi.fields: the rule "no accepted field silently does nothing", made checkable.
--
-- Every field a kind's schema accepts is declared, next to the code of its kind, in one of
-- three sets:
--   K.consumed       the compiler reads it and the runtime acts on it (or the build code
--                    itself reports where it cannot, e.g. an error for TLS origination)
--   K.unenforced     accepted so that real manifests load, but without effect yet: every
--                    use draws the warning "accepted but not enforced: <reason>"
--   K.informational  bookkeeping that asks for no behaviour (metadata.uid, status, a
--                    Secret's type): no warning
-- tests/lua/test_fields.lua walks every schema and fails when a field is in none of them
-- (or in two, or when a declaration matches no field), so a new field cannot be added
-- without saying what it does; docs/configuration.md's table of unenforced fields is
-- generated from the same declarations (M.markdown) and checked against them.
--
-- Field paths are schema paths: "spec.trafficPolicy.outlierDetection.interval", list items
-- as "[]" ("spec.subsets[].name"); a map or an `any` is one field. A declaration may start
-- with "**." (any prefix, e.g. "**.loadBalancer.simple" covers the policy of the rule, of
-- its subsets and of their portLevelSettings) and a segment may be "*" (any one segment).
-- A declaration covers its path and everything under it; when several cover a field, the
-- one with more literal segments wins (so "**.tls" unenforced and "**.tls.mode" consumed;
-- "spec.subsets[].trafficPolicy.connectionPool" over "**.connectionPool.tcp.connectTimeout").
-- An unenforced entry is a reason string or { reason = ..., when = fn(value) } where `when`
-- says which values need the warning (a Service's sessionAffinity: None asks for nothing).

local T = require "meltemi.schema"

local M = {}

-- ---- schema paths ------------------------------------------------------------------------

local function segments(path)
  local out = {}
  for s in path:gmatch("[^.]+") do out[#out + 1] = s end
  return out
end

-- Every field of schema sch, as sorted schema paths (leaves: scalars, maps, any, lists of
-- scalars; objects are walked).
function M.leaves(sch)
  local out = {}
  local function walk(s, path)
    if s.t == "object" then
      local names = {}
      for k in pairs(s.fields) do names[#names + 1] = k end
      table.sort(names)
      for _, k in ipairs(names) do walk(s.fields[k], path == "" and k or path .. "." .. k) end
    elseif s.t == "list" and (s.item.t == "object" or s.item.t == "list") then
      walk(s.item, path .. "[]")
    else
      out[#out + 1] = path
    end
  end
  walk(sch, "")
  return out
end

-- Number of path segments pattern pat matches from the start of path segs (nil: none).
-- "**" matches any number of segments (only as the first one); "*" one segment.
local function match_len(pat, segs)
  local function from(pi, si)
    if pi > #pat then return si - 1 end
    if si > #segs then return nil end
    if pat[pi] == "**" then
      for skip = si, #segs do
        local n = from(pi + 1, skip)
        if n then return n end
      end
      return nil
    end
    -- "spec.redis" covers the items of the list spec.redis too ("spec.redis[]...").
    if pat[pi] ~= "*" and pat[pi] ~= segs[si] and pat[pi] .. "[]" ~= segs[si] then return nil end
    return from(pi + 1, si + 1)
  end
  return from(1, 1)
end

local CATEGORIES = { "consumed", "unenforced", "informational" }
M.CATEGORIES = CATEGORIES

-- The declarations of a kind module plus those every document shares (shapes.document's).
local function declarations(mod)
  local shapes = require "meltemi.shapes"
  local list = {}
  local function add(cat, pat, entry, shared)
    list[#list + 1] = { cat = cat, pat = pat, segs = segments(pat), entry = entry, shared = shared }
  end
  for _, cat in ipairs(CATEGORIES) do
    local decl = mod[cat] or {}
    for k, v in pairs(decl) do
      if type(k) == "number" then add(cat, v, true) else add(cat, k, v) end
    end
    for k, v in pairs(shapes.document_fields[cat] or {}) do
      if type(k) == "number" then add(cat, v, true, true) else add(cat, k, v, true) end
    end
  end
  return list
end

-- What a field (schema path, or its segments) is: category, the winning declaration, and
-- every declaration that tied with it in another category (a mistake the test reports).
-- A kind's own declaration beats a shared one of the same length.
function M.classify(mod, path)
  local segs = type(path) == "table" and path or segments(path)
  local best, best_n, ties = nil, -1, {}
  for _, d in ipairs(declarations(mod)) do
    if match_len(d.segs, segs) then
      local literal = 0
      for _, sg in ipairs(d.segs) do
        if sg ~= "*" and sg ~= "**" then literal = literal + 1 end
      end
      local rank = literal * 2 + (d.shared and 0 or 1)
      if rank > best_n then
        best, best_n, ties = d, rank, {}
      elseif rank == best_n and d.cat ~= best.cat then
        ties[#ties + 1] = d
      end
    end
  end
  if not best then return nil end
  return best.cat, best, ties
end

M.declarations = declarations
M.match_len = match_len
M.segments = segments

-- ---- warnings for a document -------------------------------------------------------------

local function entry_reason(entry)
  return type(entry) == "table" and entry.reason or entry
end

-- Walks the validated document of obj and warns once per unenforced declaration that a
-- present field falls under (at the field the declaration names, with its real indices).
-- Only leaves and empty containers are classified, so `tls: {mode: DISABLE}` is judged by
-- mode alone, while `outlierDetection: {}` (Istio: "on, with defaults") still warns.
function M.warn_unenforced(c, obj)
  local mod = obj.mod
  local function visit(sch, v, real, segs)
    if sch.t == "object" and type(v) == "table" then
      local any = false
      for k, sub in pairs(sch.fields) do
        if v[k] ~= nil then
          any = true
          segs[#segs + 1] = k
          visit(sub, v[k], T.join(real, k), segs)
          segs[#segs] = nil
        end
      end
      if any then return end
    elseif sch.t == "list" and type(v) == "table" and (sch.item.t == "object" or sch.item.t == "list")
      and #v > 0 then
      local last = segs[#segs]
      segs[#segs] = last .. "[]"
      for i = 1, #v do visit(sch.item, v[i], T.join(real, i), segs) end
      segs[#segs] = last
      return
    end
    local cat, d = M.classify(mod, segs)
    if cat ~= "unenforced" then return end
    -- The real path cut to the declaration's length: "spec.subsets[1].trafficPolicy.tls".
    local n = match_len(d.segs, segs)
    local at = M.cut(real, n)
    local entry = d.entry
    if type(entry) == "table" and entry.when then
      local target = M.value_at(obj.doc, at)
      if not entry.when(target, obj.doc) then return end
    end
    c:warn(obj, at, "accepted but not enforced: " .. entry_reason(entry))
  end
  visit(mod.schema, obj.doc, "", {})
end

-- The first n segments of a real path ("a.b[2].c", 2 -> "a.b[2]"; an index belongs to the
-- segment before it, as "[]" does in schema paths).
function M.cut(real, n)
  local pos, count = 1, 0
  while pos <= #real do
    local _, e = real:find("^%.?[%w_%-]+", pos)
    if not e then
      _, e = real:find('^%[%b""%]', pos)
    end
    if not e then break end
    local idx_e = select(2, real:find("^%[%d+%]", e + 1))
    while idx_e do
      e = idx_e
      idx_e = select(2, real:find("^%[%d+%]", e + 1))
    end
    count = count + 1
    if count == n then return real:sub(1, e) end
    pos = e + 1
  end
  return real
end

function M.value_at(doc, path)
  local v = doc
  for _, k in ipairs(T.split(path)) do
    if type(v) ~= "table" then return nil end
    v = v[k]
  end
  return v
end

-- ---- documentation -----------------------------------------------------------------------

-- The markdown table of every unenforced declaration of the given kind modules, as
-- docs/configuration.md shows it between its "fields:begin" and "fields:end" markers.
function M.markdown(mods)
  local rows = { "| kind | field | not enforced because |", "|---|---|---|" }
  for _, mod in ipairs(mods) do
    local pats = {}
    for k in pairs(mod.unenforced or {}) do pats[#pats + 1] = k end
    table.sort(pats)
    for _, p in ipairs(pats) do
      local reason = entry_reason(mod.unenforced[p]):gsub("|", "\\|")
      local when = type(mod.unenforced[p]) == "table" and mod.unenforced[p].when_text
      rows[#rows + 1] = string.format("| %s | `%s`%s | %s |", mod.kind, p,
        when and (" " .. when) or "", reason)
    end
  end
  return table.concat(rows, "\n") .. "\n"
end

return M
