-- meltemi.codec: the Lua codec driver. A Lua codec (ApplicationProtocol `codec: lua`) is a
-- user module run in the sandbox (meltemi.sandbox); this module loads it, checks what it
-- declares, and wraps every call into it so that C (runtime/proxy/meta/lua_codec.c) reads
-- plain, checked values and never sees a user error escape. docs/codecs.md is the contract.
--
--   local codec = require "meltemi.codec"
--   local cd, err = codec.load(code, chunkname)      -- checked module | nil, message
--   local props = codec.props(cd)                    -- what the compiler writes in the snapshot
--   codec.decode(cd, buf)   -> "ok", len, type, id, attrs | "again", more | "error", message
--   codec.encode(cd, frame, mutation)        -> "ok", bytes | "error", message
--   codec.error_reply(cd, frame, id, kind, text)      -> "ok", bytes|nil | "error", message
--   codec.heartbeat_reply(cd, frame, id)      -> "ok", bytes | "error", message
--   codec.set_request_id(cd, frame, id)       -> "ok", bytes | "error", message
--
-- What a codec module returns (every function runs with the sandbox's limits, per call):
--   {
--     multiplexed = true,          -- responses carry the request id (else: in order)
--     local_heartbeat = true,      -- the proxy answers heartbeats itself
--     max_frame_size = 1048576,    -- bytes of one frame (default 1 MiB, at most 64 MiB)
--     request_id = { offset = 4, size = 4 },  -- where the id sits (big endian; C rewrites
--                                  -- it, no Lua call) - or a set_request_id function
--     decode = function(buf) ... end,   -- required: len, msg | nil, more
--     encode = function(frame, mutation) ... end,            -- optional: new frame
--     error_reply = function(frame, id, kind, text) ... end, -- required: bytes | nil
--     heartbeat_reply = function(frame, id) ... end,         -- optional
--     set_request_id = function(frame, id) ... end,          -- optional
--     stream_reset = function(init_frame, id) ... end,       -- optional: a reset toward
--   }                                                      -- the server (client gone)

local sandbox = require "meltemi.sandbox"
local lpeg_ok, lpeg = pcall(require, "lpeg")

local type, pairs, format, floor = type, pairs, string.format, math.floor
local call_with, error_text = sandbox.call_with, sandbox.error_text

local D = {}

D.DEFAULT_MAX_FRAME = 1024 * 1024
D.MAX_FRAME = 64 * 1024 * 1024

local TYPES = {
  request = true, response = true, oneway = true, heartbeat = true, error = true,
  -- streams: id is the stream id; reply = true on frames the server sends
  stream_init = true, stream_data = true, stream_close = true, stream_reset = true,
}
D.TYPES = TYPES

local FUNCTIONS = {
  decode = true, encode = false, error_reply = true, heartbeat_reply = false,
  set_request_id = false, stream_reset = false,
}

-- lpeg for text protocols, without setmaxstack (the backtrack stack stays at its default).
local SAFE_LPEG
if lpeg_ok then
  SAFE_LPEG = {}
  for k, v in pairs(lpeg) do
    if k ~= "setmaxstack" then SAFE_LPEG[k] = v end
  end
end

local function is_count(v)
  return type(v) == "number" and v == v and v >= 0 and v < 2 ^ 53 and floor(v) == v
end

-- Checks the module table; returns the checked copy | nil, message.
local function check(mod)
  if type(mod) ~= "table" then
    return nil, format("must return a table with decode and error_reply, got %s", type(mod))
  end
  local cd = {}
  for name, required in pairs(FUNCTIONS) do
    local f = rawget(mod, name)
    if f ~= nil and type(f) ~= "function" then
      return nil, format("%s must be a function, got %s", name, type(f))
    end
    if required and f == nil then return nil, name .. " is required" end
    cd[name] = f
  end
  cd.multiplexed = rawget(mod, "multiplexed") == true
  cd.local_heartbeat = rawget(mod, "local_heartbeat") == true
  if cd.local_heartbeat and not cd.heartbeat_reply then
    return nil, "local_heartbeat needs a heartbeat_reply function"
  end
  local mf = rawget(mod, "max_frame_size")
  if mf ~= nil and not (is_count(mf) and mf >= 1 and mf <= D.MAX_FRAME) then
    return nil, format("max_frame_size must be an integer from 1 to %d", D.MAX_FRAME)
  end
  cd.max_frame_size = mf or D.DEFAULT_MAX_FRAME
  local rid = rawget(mod, "request_id")
  if rid ~= nil then
    if type(rid) ~= "table" or not is_count(rawget(rid, "offset"))
        or (rawget(rid, "size") ~= 4 and rawget(rid, "size") ~= 8) then
      return nil, "request_id must be { offset = n, size = 4 or 8 }"
    end
    cd.id_offset, cd.id_size = rid.offset, rid.size
  end
  if cd.multiplexed and not cd.id_size and not cd.set_request_id then
    return nil, "a multiplexed codec needs request_id = { offset, size } or set_request_id"
  end
  return cd
end

-- Loads a codec module (source text, run once with the sandbox's limits). The module's
-- globals are the sandbox's plus `lpeg`.
function D.load(code, chunkname)
  local fn, env = sandbox.compile(code, chunkname)
  if not fn then return nil, env end
  env.lpeg = SAFE_LPEG
  local ok, mod = call_with({ timeout_ms = sandbox.LOAD_TIMEOUT_MS }, fn)
  if not ok then return nil, mod end
  return check(mod)
end

-- What the runtime needs to know before any call (the snapshot's lua_codec table).
function D.props(cd)
  return {
    multiplexed = cd.multiplexed, local_heartbeat = cd.local_heartbeat,
    max_frame_size = cd.max_frame_size, id_offset = cd.id_offset, id_size = cd.id_size,
    has_encode = cd.encode ~= nil, has_set_request_id = cd.set_request_id ~= nil,
    has_stream_reset = cd.stream_reset ~= nil,
  }
end

-- ---- calls from C ---------------------------------------------------------------------------

local function bad(fmt, ...) return "error", format(fmt, ...) end

function D.decode(cd, buf)
  local ok, len, msg = call_with(nil, cd.decode, buf)
  if not ok then return "error", len end
  if len == nil then
    if not is_count(msg) or msg < 1 then
      return bad("decode: nil must come with the number of bytes still missing, got %s",
        error_text(msg))
    end
    return "again", msg
  end
  if not is_count(len) or len < 1 or len > #buf then
    return bad("decode: frame length %s is not within the %d bytes given", error_text(len), #buf)
  end
  if type(msg) ~= "table" then return bad("decode: the message must be a table") end
  local t = rawget(msg, "type")
  if not TYPES[t] then return bad("decode: unknown message type %s", error_text(t)) end
  local id = rawget(msg, "id") or 0
  if not is_count(id) then return bad("decode: id must be an integer from 0 to 2^53") end
  local attrs = rawget(msg, "attrs")
  if attrs ~= nil and type(attrs) ~= "table" then return bad("decode: attrs must be a table") end
  -- C copies the attributes and refuses a key or value that is not a string.
  return "ok", len, t, id, attrs, rawget(msg, "reply") == true
end

local function bytes_result(what, allow_nil, ok, v)
  if not ok then return "error", v end
  if v == nil and allow_nil then return "ok", nil end
  if type(v) ~= "string" then return bad("%s must return a string, got %s", what, type(v)) end
  return "ok", v
end

function D.encode(cd, frame, mutation)
  if not cd.encode then return "error", "the codec has no encode function" end
  return bytes_result("encode", false, call_with(nil, cd.encode, frame, mutation))
end

function D.error_reply(cd, frame, id, kind, text)
  return bytes_result("error_reply", true,
    call_with(nil, cd.error_reply, frame, id, kind, text))
end

function D.heartbeat_reply(cd, frame, id)
  if not cd.heartbeat_reply then return "error", "the codec has no heartbeat_reply function" end
  return bytes_result("heartbeat_reply", false, call_with(nil, cd.heartbeat_reply, frame, id))
end

function D.stream_reset(cd, frame, id)
  if not cd.stream_reset then return "error", "the codec has no stream_reset function" end
  return bytes_result("stream_reset", false, call_with(nil, cd.stream_reset, frame, id))
end

function D.set_request_id(cd, frame, id)
  if not cd.set_request_id then return "error", "the codec has no set_request_id function" end
  local st, v = bytes_result("set_request_id", false, call_with(nil, cd.set_request_id, frame, id))
  if st == "ok" and #v ~= #frame then
    return bad("set_request_id changed the frame's size (%d -> %d)", #frame, #v)
  end
  return st, v
end

return D
