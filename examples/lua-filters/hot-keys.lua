-- Count hot keys. Per worker, keys are counted over a window (config.window_ms); when a
-- window ends, its top config.top keys seen at least config.min_count times are published
-- as counters (name hot_key, label = the key), logged, and kept as the answer to
-- `GET <config.report_key>`. Memory is bounded: at most config.max_tracked distinct keys
-- are counted per window (later new keys wait for the next window), and only the top keys
-- ever become counters.
local config = ... or {}
local WINDOW_MS = config.window_ms or 10000
local TOP = config.top or 5
local MIN_COUNT = config.min_count or 100
local MAX_TRACKED = config.max_tracked or 10000
local REPORT_KEY = config.report_key or "meltemi:hotkeys"

local counts, tracked = {}, 0
local window_end = nil
local last_top = {} -- { "key count", ... } of the last finished window

local function close_window(ctx)
  local list = {}
  for key, n in pairs(counts) do
    if n >= MIN_COUNT then list[#list + 1] = { key = key, n = n } end
  end
  table.sort(list, function(a, b)
    if a.n ~= b.n then return a.n > b.n end
    return a.key < b.key
  end)
  last_top = {}
  for i = 1, math.min(TOP, #list) do
    local e = list[i]
    last_top[i] = e.key .. " " .. e.n
    ctx:counter("hot_key", e.n, e.key)
  end
  if #last_top > 0 then ctx:log("info", "hot keys: " .. table.concat(last_top, ", ")) end
  counts, tracked = {}, 0
end

return {
  on_request = function(msg, ctx)
    local now = ctx:now_ms()
    if window_end == nil then window_end = now + WINDOW_MS end
    if now >= window_end then
      close_window(ctx)
      window_end = now + WINDOW_MS
    end
    local key = msg.key
    if key == nil then return end
    if msg.command == "get" and key == REPORT_KEY then
      return ctx:reply(last_top)
    end
    local n = counts[key]
    if n then
      counts[key] = n + 1
    elseif tracked < MAX_TRACKED then
      counts[key] = 1
      tracked = tracked + 1
    end
  end,
}
