-- meltemi.filter_api: the `msg` and `ctx` objects a user filter's on_request(msg, ctx) sees
-- (docs/lua-filters.md is the user's guide, docs/lua-bridge.md the contract). Everything
-- here is a thin layer over the C functions of `meltemi.core`, which act on the command
-- being decided; so msg and ctx are valid only during the call they are given to.
--
--   local api = require "meltemi.filter_api"
--   local msg, ctx = api.begin(chain, cmd, key, nargs, is_write, conn_id)   -- per command
--   api.enter(filter)          -- before each filter: ctx:log / counter / route use its name
--   api.answered()             -- a filter replied locally: later filters do not run
--   api.finish()               -- the command is decided: msg and ctx go stale
--   api.conn_closed(conn_id)   -- drop ctx.conn of a closed client connection
--
-- Per request: one msg and one ctx table (shared by the listener's filters, in order), and
-- ctx.vars only when a filter touches it. Per connection: ctx.conn, created on first use,
-- kept across reloads (a connection outlives generations) and dropped when it closes.

local core_loaded, core_value -- meltemi.core, looked up when first needed (tests swap it)
local cur_core                -- a MetaProtocol request's core (meltemi.meta.core), or nil
local cur_get                 -- cur_core.get, for msg.<field> reads without a lookup
local function core()
  if cur_core then return cur_core end
  local c = package.loaded["meltemi.core"]
  if c ~= core_loaded then
    core_loaded = c
    core_value = c or require("meltemi.core")
  end
  return core_value
end

local type, tostring, error, format = type, tostring, error, string.format
local setmetatable, rawset = setmetatable, rawset
local math_floor = math.floor

local A = {}

-- At most this many distinct (counter, label) pairs per worker: every pair is a series in
-- /stats/prometheus that lives as long as the process. More go to counter_overflow.
A.MAX_COUNTERS = 1000

local LOG_LEVELS = { debug = true, info = true, warn = true, error = true }

-- ---- per request / per connection state ---------------------------------------------------

local cur_msg, cur_ctx     -- the live pair; methods check self against them
local cur_chain            -- the listener's chain (host resolution)
local cur_filter           -- the filter running now
local cur_conn_id
local orig_key, key_index  -- the first key as received, and its argument index once found
local is_answered = false
local cur_phase            -- MetaProtocol: "request" or "response"; nil for Redis

local conn_store = {}      -- conn_id -> table (ctx.conn)
local counters_seen, n_counters, overflow_logged = {}, 0, false

local function check_msg(self, what)
  if self ~= cur_msg or cur_msg == nil then
    error(format("msg:%s: msg is only valid during the on_request call it was given to", what), 3)
  end
end

local function check_ctx(self, what)
  if self ~= cur_ctx or cur_ctx == nil then
    error(format("ctx:%s: ctx is only valid during the on_request call it was given to", what), 3)
  end
end

local function check_index(i, what, low)
  if type(i) ~= "number" or i ~= math_floor(i) then
    error(format("%s: argument index must be an integer, got %s", what, type(i) == "number" and
      tostring(i) or type(i)), 3)
  end
  if i < low then error(format("%s: argument index %d is below %d", what, i, low), 3) end
end

local function as_arg_text(v, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if v == math_floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return format("%d", v) end
    return format("%.17g", v)
  end
  error(format("%s: value must be a string or a number, got %s", what, t), 3)
end

-- ---- msg ----------------------------------------------------------------------------------

-- Where the keys of a command are when the C side does not say (core.key_positions is the
-- exact answer, from the Redis command table): {first, last, step} with last counted from
-- the end when negative. Commands whose keys follow a count (EVAL, ZUNIONSTORE, LMPOP, ...)
-- or a keyword (XREAD ... STREAMS, SORT ... STORE, MIGRATE) are in UNKNOWN_KEYS: msg:keys()
-- answers nil for them rather than a wrong list.
local KEY_SPANS = {}
local function span(first, last, step, names)
  for name in names:gmatch("%S+") do KEY_SPANS[name] = { first, last, step } end
end
span(2, -1, 1, "del exists unlink touch mget watch sinter sunion sdiff sinterstore sunionstore "
  .. "sdiffstore pfcount pfmerge")
span(2, -1, 2, "mset msetnx")
span(2, 3, 1, "rename renamenx copy smove lmove blmove rpoplpush brpoplpush geosearchstore "
  .. "zrangestore lcs")
span(2, -2, 1, "blpop brpop bzpopmin bzpopmax")
span(3, -1, 1, "bitop")

local UNKNOWN_KEYS = {}
for name in ([[eval eval_ro evalsha evalsha_ro fcall fcall_ro zunionstore zinterstore zdiffstore
  zunion zinter zdiff zintercard sintercard lmpop blmpop zmpop bzmpop xread xreadgroup sort sort_ro
  migrate georadius georadiusbymember object memory xgroup xinfo]]):gmatch("%S+") do
  UNKNOWN_KEYS[name] = true
end

-- Argument index of the first key: argument 2 for nearly every command; else the first
-- argument equal to it.
local function first_key_index(msg)
  if key_index then return key_index end
  if orig_key == nil then return nil end
  local c = core()
  for i = 2, msg._nargs do
    if c.arg(i) == orig_key then
      key_index = i
      return i
    end
  end
  return nil
end

local Msg = {}

function Msg.nargs(self)
  check_msg(self, "nargs")
  return self._nargs
end

function Msg.arg(self, i)
  check_msg(self, "arg")
  check_index(i, "msg:arg", 1)
  return core().arg(i)
end

function Msg.args(self)
  check_msg(self, "args")
  local c, out = core(), {}
  for i = 1, self._nargs do out[i] = c.arg(i) end
  return out
end

function Msg.set_arg(self, i, v)
  check_msg(self, "set_arg")
  check_index(i, "msg:set_arg", 2)
  if i > self._nargs then
    error(format("msg:set_arg: argument %d out of range (the command has %d)", i, self._nargs), 2)
  end
  local text = as_arg_text(v, "msg:set_arg")
  core().set_arg(i, text)
  if i == first_key_index(self) then rawset(self, "key", text) end
end

function Msg.set_key(self, v)
  check_msg(self, "set_key")
  local text = as_arg_text(v, "msg:set_key")
  local i = first_key_index(self)
  if not i then error("msg:set_key: this command has no key", 2) end
  core().set_arg(i, text)
  rawset(self, "key", text)
end

-- Argument indexes (1 = the command name) of every key, or nil when they are not known.
function Msg.key_positions(self)
  check_msg(self, "key_positions")
  local c = core()
  if c.key_positions then return c.key_positions() end
  local cmd = self.command
  if UNKNOWN_KEYS[cmd] then return nil end
  local sp = KEY_SPANS[cmd]
  if not sp then
    local i = first_key_index(self)
    return i and { i } or {}
  end
  local n = self._nargs
  local last = sp[2] < 0 and n + 1 + sp[2] or sp[2]
  if last > n then last = n end
  local out = {}
  for i = sp[1], last, sp[3] do out[#out + 1] = i end
  return out
end

-- The keys themselves (after any rewrite by an earlier filter), or nil when not known.
function Msg.keys(self)
  check_msg(self, "keys")
  local pos = Msg.key_positions(self)
  if not pos then return nil end
  local c, out = core(), {}
  for i, p in ipairs(pos) do out[i] = c.arg(p) end
  return out
end

local MSG_MT = { __index = Msg, __metatable = false }

-- ---- msg of a MetaProtocol request or reply -----------------------------------------------

-- Attributes readable as fields (msg.method); any key through msg:get(key).
local META_FIELDS = { interface = true, method = true, service = true, version = true, group = true }

local MetaMsg = {}

local function check_key(k, what)
  if type(k) ~= "string" or k == "" then error(format("msg:%s: key must be a non-empty string", what), 3) end
end

function MetaMsg.get(self, key)
  check_msg(self, "get")
  check_key(key, "get")
  return core().get(key)
end

function MetaMsg.set(self, key, value)
  check_msg(self, "set")
  check_key(key, "set")
  if value == nil then
    core().set(key, nil)
  else
    core().set(key, as_arg_text(value, "msg:set"))
  end
end

function MetaMsg.remove(self, key)
  MetaMsg.set(self, key, nil)
end

function MetaMsg.attributes(self)
  check_msg(self, "attributes")
  if cur_phase == "response" then
    error("msg:attributes: not available on replies (read them with msg:get)", 2)
  end
  return core().attributes()
end

-- msg.<field> is read from the message each time (a C call pushing one string): nothing is
-- cached in msg, so one msg table per phase serves every request (begin_meta).
local META_MSG_MT = {
  __index = function(t, k)
    local m = MetaMsg[k]
    if m then return m end
    if META_FIELDS[k] and t == cur_msg and cur_phase == "request" then return cur_get(k) end
    return nil
  end,
  __newindex = function(_, k)
    error(format("msg.%s: msg is read-only (msg:set(key, value) changes what is sent on)",
      tostring(k)), 2)
  end,
  __metatable = false,
}

-- ---- ctx ----------------------------------------------------------------------------------

local Ctx = {}

local function cluster_of(host, subset, what)
  if type(host) ~= "string" or host == "" then
    error(format("ctx:%s: host must be a non-empty string", what), 3)
  end
  if subset ~= nil and type(subset) ~= "string" then
    error(format("ctx:%s: subset must be a string", what), 3)
  end
  local idx, why = cur_chain.cluster_of(host, cur_filter and cur_filter.namespace, subset)
  if not idx then error(format("ctx:%s: %s", what, why), 3) end
  return idx, why -- MetaProtocol resolvers answer the subset second (subsets live in a cluster)
end

-- MetaProtocol replies: what can only decide a request is refused in on_response.
local function request_only(what)
  if cur_phase == "response" then
    error(format("ctx:%s: only on_request can %s (the request has been sent)", what, what), 3)
  end
end

function Ctx.route(self, host, subset)
  check_ctx(self, "route")
  request_only("route")
  core().route(cluster_of(host, subset, "route"))
end

function Ctx.mirror(self, host, subset)
  check_ctx(self, "mirror")
  request_only("mirror")
  core().mirror(cluster_of(host, subset, "mirror"))
end

-- kind (MetaProtocol only): which native error, as meltemi's own answers name them
-- ("unspecified", the default; "over_limit", "route_not_found", "no_healthy_upstream", ...).
function Ctx.reply_error(self, text, kind)
  check_ctx(self, "reply_error")
  if type(text) ~= "string" then error("ctx:reply_error: text must be a string", 2) end
  if kind ~= nil and type(kind) ~= "string" then error("ctx:reply_error: kind must be a string", 2) end
  local ok, err = pcall(core().error, text, kind)
  if not ok then error("ctx:reply_error: " .. tostring(err), 2) end
  is_answered = true
end

function Ctx.reply(self, value)
  check_ctx(self, "reply")
  local c = core()
  if not c.reply then
    error("ctx:reply: a MetaProtocol filter answers with ctx:reply_error (the codec's native "
      .. "error); other local replies are not supported", 2)
  end
  c.reply(value)
  is_answered = true
end

function Ctx.delay(self, ms)
  check_ctx(self, "delay")
  request_only("delay")
  if type(ms) ~= "number" or ms < 0 or ms ~= ms then
    error("ctx:delay: ms must be a non-negative number", 2)
  end
  core().delay(math_floor(ms))
end

function Ctx.log(self, level, text)
  check_ctx(self, "log")
  if not LOG_LEVELS[level] then
    error(format("ctx:log: level must be debug, info, warn or error, got %s", tostring(level)), 2)
  end
  if type(text) ~= "string" then text = tostring(text) end
  core().log(level, "filter " .. cur_filter.name .. ": " .. text)
end

function Ctx.counter(self, name, delta, label)
  check_ctx(self, "counter")
  if type(name) ~= "string" or not name:find("^[%a_][%w_]*$") then
    error("ctx:counter: name must look like an identifier (letters, digits, _)", 2)
  end
  if delta == nil then delta = 1 end
  if type(delta) ~= "number" or delta ~= math_floor(delta) or delta < 0 then
    error("ctx:counter: delta must be a non-negative integer", 2)
  end
  if label == nil then label = cur_filter.name end
  if type(label) ~= "string" then label = as_arg_text(label, "ctx:counter") end
  local c = core()
  local id = name .. "\0" .. label
  if not counters_seen[id] then
    if n_counters >= A.MAX_COUNTERS then
      if not overflow_logged then
        overflow_logged = true
        c.log("warn", format("filter %s: more than %d distinct Lua counters; further ones are "
          .. "counted as counter_overflow", cur_filter.name, A.MAX_COUNTERS))
      end
      c.counter("counter_overflow", delta, cur_filter.name)
      return
    end
    counters_seen[id] = true
    n_counters = n_counters + 1
  end
  c.counter(name, delta, label)
end

function Ctx.now_ms(self)
  check_ctx(self, "now_ms")
  return core().now_ms()
end

local CTX_MT = {
  __index = function(t, k)
    local m = Ctx[k]
    if m then return m end
    if t ~= cur_ctx then return nil end
    if k == "vars" then
      local v = {}
      rawset(t, "vars", v)
      return v
    elseif k == "conn" then
      local c = conn_store[cur_conn_id]
      if not c then
        c = {}
        conn_store[cur_conn_id] = c
      end
      rawset(t, "conn", c)
      return c
    elseif k == "config" then
      return cur_filter and cur_filter.config
    elseif k == "filter" then
      return cur_filter and cur_filter.name
    elseif k == "service" then
      return cur_chain and cur_chain.service
    elseif k == "listener" then
      return cur_chain and cur_chain.name
    end
    return nil
  end,
  __metatable = false,
}

-- ---- driver (trusted side) ----------------------------------------------------------------

function A.begin(chain, cmd, key, nargs, is_write, conn_id)
  cur_chain, cur_conn_id = chain, conn_id
  cur_core, cur_get, cur_phase = nil, nil, nil
  orig_key, key_index = key, nil
  is_answered = false
  cur_filter = nil
  cur_msg = setmetatable({ command = cmd, key = key, is_write = is_write, _nargs = nargs }, MSG_MT)
  cur_ctx = setmetatable({}, CTX_MT)
  return cur_msg, cur_ctx
end

-- A MetaProtocol request (phase "request") or reply ("response"): msg reads attributes
-- through c (meltemi.meta.core) until finish. msg is a table made once by new_meta_msg and
-- filled by the caller (read-only for filters); ctx is reused while no filter stored anything
-- in it (ctx.vars, ctx.conn), else made afresh: per request nothing is allocated.
local spare_ctx

function A.new_meta_msg(fields)
  return setmetatable(fields, META_MSG_MT)
end

function A.begin_meta(chain, c, conn_id, phase, msg)
  cur_chain, cur_conn_id, cur_core, cur_get, cur_phase = chain, conn_id, c, c.get, phase
  orig_key, key_index = nil, nil
  is_answered = false
  cur_filter = nil
  cur_msg = msg
  local ctx = spare_ctx
  if ctx == nil or next(ctx) ~= nil then
    ctx = setmetatable({}, CTX_MT)
    spare_ctx = ctx
  end
  cur_ctx = ctx
  return msg, ctx
end

function A.enter(filter)
  cur_filter = filter
end

function A.answered()
  return is_answered
end

function A.finish()
  cur_msg, cur_ctx, cur_chain, cur_filter, orig_key, key_index = nil, nil, nil, nil, nil, nil
  cur_core, cur_get, cur_phase = nil, nil, nil
end

function A.conn_closed(conn_id)
  conn_store[conn_id] = nil
end

-- For tests and /config_dump-like introspection.
function A.conn_count()
  local n = 0
  for _ in pairs(conn_store) do n = n + 1 end
  return n
end

function A.reset_counters()
  counters_seen, n_counters, overflow_logged = {}, 0, false
end

A.Msg, A.Ctx, A.MetaMsg = Msg, Ctx, MetaMsg
return A
