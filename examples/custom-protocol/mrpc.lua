-- mrpc.lua - the Lua codec of mrpc, the in-house binary RPC protocol of this example
-- (docs/codecs.md walks through this file). Loaded by ApplicationProtocol `codec: lua`.
--
-- An mrpc frame, all integers big endian:
--
--   offset  size  field
--   0       2     magic 0x4d52 ("MR")
--   2       1     flags: 1 response, 2 oneway, 4 heartbeat, 8 error, 16 stream frame; a
--                 stream frame's kind is in bits 5-6: 0 init, 1 data, 2 close, 3 reset
--                 (init 0x10, data 0x30, close 0x50, reset 0x70; + 1 from the server)
--   3       1     version (1)
--   4       4     length of the whole frame, these 12 header bytes included
--   8       4     request id (a response carries its request's)
--   12      2+n   service (u16 length, bytes)
--   ...     2+n   method
--   ...     2     header count, then per header: key (u16 length, bytes), value (same)
--   ...           body: the rest of the frame, opaque to the proxy
--
-- What the proxy sees of a frame (its attributes): service, method and every header.
--
-- Streams: the request id is the stream id. The client opens a stream with an init frame
-- (service, method and headers as in a call: that is what routes it), then either side
-- sends data frames, a close ends the sender's half, a reset ends the stream.

local byte, sub, char, floor = string.byte, string.sub, string.char, math.floor
local concat = table.concat

local MAGIC = 0x4d52
local HEADER = 12
local F_RESPONSE, F_ONEWAY, F_HEARTBEAT, F_ERROR, F_STREAM = 1, 2, 4, 8, 16
local STREAM_KINDS = { [0] = "stream_init", "stream_data", "stream_close", "stream_reset" }
local STREAM_RESET = 0x70

local function u16(s, i)
  local a, b = byte(s, i, i + 1)
  return a * 256 + b
end

local function u32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function be16(n)
  return char(floor(n / 256) % 256, n % 256)
end

local function be32(n)
  return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

local function has(flags, bit)
  return floor(flags / bit) % 2 == 1
end

-- The parts of the whole frame `f` (its length is len): service, method, headers as an
-- ordered list of { key, value }, body. Errors name what overran the frame.
local function parse(f, len)
  local pos = HEADER + 1
  local function str(what)
    if pos + 1 > len then error("mrpc: " .. what .. " overruns the frame", 0) end
    local n = u16(f, pos)
    if pos + 1 + n > len then error("mrpc: " .. what .. " overruns the frame", 0) end
    local s = sub(f, pos + 2, pos + 1 + n)
    pos = pos + 2 + n
    return s
  end
  local service, method = str("service"), str("method")
  if pos + 1 > len then error("mrpc: header count overruns the frame", 0) end
  local count = u16(f, pos)
  pos = pos + 2
  local headers = {}
  for i = 1, count do
    local k = str("header key")
    headers[i] = { k, str("header value") }
  end
  return service, method, headers, sub(f, pos, len)
end

local function str16(s)
  return be16(#s) .. s
end

-- A whole frame from its parts (version 1 unless given).
local function build(flags, id, service, method, headers, body, version)
  local parts = { str16(service), str16(method), be16(#headers) }
  for _, h in ipairs(headers) do
    parts[#parts + 1] = str16(h[1])
    parts[#parts + 1] = str16(h[2])
  end
  parts[#parts + 1] = body
  local rest = concat(parts)
  return be16(MAGIC) .. char(flags, version or 1) .. be32(HEADER + #rest) .. be32(id) .. rest
end

local codec = {
  multiplexed = true,                     -- responses carry the request id
  local_heartbeat = true,                 -- meltemi answers pings itself
  max_frame_size = 1024 * 1024,
  request_id = { offset = 8, size = 4 },  -- C rewrites the id in place
}

-- A u16-prefixed string of f at pos (the frame ends at len): the string and what follows.
local function field(f, pos, len, what)
  if pos + 1 > len then error("mrpc: " .. what .. " overruns the frame", 0) end
  local hi, lo = byte(f, pos, pos + 1)
  local stop = pos + 1 + hi * 256 + lo
  if stop > len then error("mrpc: " .. what .. " overruns the frame", 0) end
  return sub(f, pos + 2, stop), stop + 1
end

-- Step 1 and 2: where the frame ends, and what the proxy may route on. This runs for every
-- frame in both directions, so it reads the header in one string.byte and builds nothing
-- but the attributes.
function codec.decode(buf)
  local n = #buf
  if n < HEADER then return nil, HEADER - n end
  local m1, m2, flags, _, l1, l2, l3, l4, i1, i2, i3, i4 = byte(buf, 1, HEADER)
  if m1 * 256 + m2 ~= MAGIC then error("mrpc: bad magic", 0) end
  local len = ((l1 * 256 + l2) * 256 + l3) * 256 + l4
  if len < HEADER + 6 then error("mrpc: frame length " .. len .. " is too small", 0) end
  if n < len then return nil, len - n end
  local service, method, pos, k, v
  service, pos = field(buf, HEADER + 1, len, "service")
  method, pos = field(buf, pos, len, "method")
  if pos + 1 > len then error("mrpc: header count overruns the frame", 0) end
  local c1, c2 = byte(buf, pos, pos + 1)
  pos = pos + 2
  local attrs = { service = service, method = method }
  for _ = 1, c1 * 256 + c2 do
    k, pos = field(buf, pos, len, "header key")
    v, pos = field(buf, pos, len, "header value")
    if attrs[k] == nil then attrs[k] = v end
  end
  local t
  if flags % 32 >= F_STREAM then
    t = STREAM_KINDS[floor(flags / 32) % 4]
  elseif flags % 8 >= F_HEARTBEAT then
    t = "heartbeat"
  elseif flags % 16 >= F_ERROR then
    t = "error"
  elseif flags % 2 == F_RESPONSE then
    t = "response"
  elseif flags % 4 >= F_ONEWAY then
    t = "oneway"
  else
    t = "request"
  end
  return len, { type = t, id = ((i1 * 256 + i2) * 256 + i3) * 256 + i4, attrs = attrs,
    reply = flags % 2 == F_RESPONSE }
end

-- Step 3: the frame with MetaRouter's requestMutation / responseMutation applied. An
-- existing header keeps its place, a new one is appended, a nil value removes it.
function codec.encode(frame, mutation)
  local service, method, headers, body = parse(frame, #frame)
  for _, m in ipairs(mutation) do
    local key, value = m[1], m[2]
    local found = false
    for i = #headers, 1, -1 do
      if headers[i][1] == key then
        found = true
        if value == nil then table.remove(headers, i) else headers[i][2] = value end
      end
    end
    if not found and value ~= nil then headers[#headers + 1] = { key, value } end
  end
  return build(byte(frame, 3), u32(frame, 9), service, method, headers, body, byte(frame, 4))
end

-- Step 4: the native error a client gets when meltemi answers for the server.
function codec.error_reply(frame, id, kind, text)
  local flags = byte(frame, 3)
  if has(flags, F_STREAM) then -- a stream meltemi cannot carry on: the server resets it
    return build(STREAM_RESET + F_RESPONSE, id, "", "", { { "error-kind", kind } }, text)
  end
  if has(flags, F_ONEWAY) then return nil end
  local service, method = parse(frame, #frame)
  return build(F_RESPONSE + F_ERROR, id, service, method, { { "error-kind", kind } }, text)
end

-- Streams: the reset meltemi sends the server for a stream whose client went away.
function codec.stream_reset(_, id)
  return build(STREAM_RESET, id, "", "", {}, "client gone")
end

-- Step 5: the pong to a ping.
function codec.heartbeat_reply(_, id)
  return build(F_RESPONSE + F_HEARTBEAT, id, "", "", {}, "")
end

return codec
