-- meltemi.fingerprint: a structural fingerprint of a snapshot table, computed once by the
-- compiler for every cluster and listener (their `fingerprint` field, docs/snapshot.md).
-- Equal fingerprints let a worker keep a cluster's pools across a reload, so equal tables
-- must give equal fingerprints and any change a different one.
--
--   local fp = require("meltemi.fingerprint").of(t)
--
-- It digests meltemi.dump.lua(t), which sorts keys and prints numbers one way, so the
-- same table always prints the same text; t's own `fingerprint` field is left out. The
-- digest (two 32-bit hashes of the text and its length) stands for the text so that the
-- snapshot, which every worker loads as Lua source, does not carry each table twice.

local bit = require "bit"
local dump = require "meltemi.dump"

local bxor, lshift, tobit, tohex = bit.bxor, bit.lshift, bit.tobit, bit.tohex
local byte = string.byte

local M = {}

-- FNV-1a and djb2 (h * 33 + c), 32 bits each. h * 16777619 is computed
-- as (h << 24) + h * 403 so that no intermediate exceeds the 2^53 of a double.
local function digest(s)
  local fnv, djb = tobit(0x811c9dc5), 5381
  for i = 1, #s do
    local c = byte(s, i)
    fnv = bxor(fnv, c)
    fnv = tobit(lshift(fnv, 24) + fnv * 403)
    djb = tobit(lshift(djb, 5) + djb + c)
  end
  return tohex(fnv) .. tohex(djb) .. "-" .. #s
end
M.digest = digest

function M.of(t)
  local own = t.fingerprint
  t.fingerprint = nil
  local ok, text = pcall(dump.lua, t)
  t.fingerprint = own
  if not ok then error(text, 0) end
  return digest(text)
end

return M
