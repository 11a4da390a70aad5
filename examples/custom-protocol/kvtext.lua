-- luacheck: globals lpeg
-- kvtext.lua - the Lua codec of kvtext, a line-based text protocol in the style of
-- memcached's ASCII protocol, decoded with lpeg (docs/codecs.md, "A text protocol").
-- Loaded by ApplicationProtocol `codec: lua`, `module: kvtext`.
--
--   get <key>\r\n                      -> VALUE <key> <n>\r\n<n bytes>\r\nEND\r\n | END\r\n
--   set <key> <n> [noreply]\r\n<n bytes>\r\n -> STORED\r\n (nothing with noreply)
--   delete <key>\r\n                   -> DELETED\r\n | NOT_FOUND\r\n
--   errors: ERROR\r\n, CLIENT_ERROR <text>\r\n, SERVER_ERROR <text>\r\n
--
-- Responses come back in request order (kvtext has no request ids), so the codec is not
-- multiplexed. Attributes: command and key (requests), command (responses).

local P, R, S, C, Cg, Ct, Cp = lpeg.P, lpeg.R, lpeg.S, lpeg.C, lpeg.Cg, lpeg.Ct, lpeg.Cp

local MAX_LINE = 512

local sp = P(" ") ^ 1
local crlf = P("\r\n")
local key = C((1 - S(" \r\n")) ^ 1)
local count = (R("09") ^ 1) / tonumber
local pos = Cg(Cp(), "pos")

local request = Ct(
  Cg(C("get"), "cmd") * sp * Cg(key, "key") * crlf * pos
  + Cg(C("set"), "cmd") * sp * Cg(key, "key") * sp * Cg(count, "bytes")
    * (sp * Cg(C("noreply"), "noreply")) ^ -1 * crlf * pos
  + Cg(C("delete"), "cmd") * sp * Cg(key, "key") * crlf * pos)

local response = Ct(
  Cg(C("VALUE"), "cmd") * sp * Cg(key, "key") * sp * Cg(count, "bytes") * crlf * pos
  + Cg(C(P("STORED") + "DELETED" + "NOT_FOUND" + "END"), "cmd") * crlf * pos
  + Cg(C(P("SERVER_ERROR") + "CLIENT_ERROR" + "ERROR"), "cmd") * (1 - S("\r\n")) ^ 0 * crlf * pos)

local codec = { max_frame_size = 1024 * 1024 }

-- The frame at the start of buf: its length and message, or nil and the bytes missing.
function codec.decode(buf)
  local eol = buf:find("\r\n", 1, true)
  if not eol then
    if #buf > MAX_LINE then error("kvtext: command line longer than " .. MAX_LINE, 0) end
    return nil, 1
  end
  local m = request:match(buf)
  if m then
    local len = m.pos - 1
    if m.cmd == "set" then
      len = len + m.bytes + 2
      if #buf < len then return nil, len - #buf end
      if buf:sub(len - 1, len) ~= "\r\n" then error("kvtext: set data not followed by \\r\\n", 0) end
    end
    local t = m.noreply and "oneway" or "request"
    return len, { type = t, attrs = { command = m.cmd, key = m.key } }
  end
  m = response:match(buf)
  if not m then error("kvtext: not a kvtext line: " .. buf:sub(1, math.min(eol - 1, 40)), 0) end
  local len = m.pos - 1
  if m.cmd == "VALUE" then
    len = len + m.bytes + 2 + 5
    if #buf < len then return nil, len - #buf end
    if buf:sub(len - 6, len) ~= "\r\nEND\r\n" then error("kvtext: VALUE not ended by END", 0) end
  end
  local t = m.cmd:find("ERROR", 1, true) and "error" or "response"
  return len, { type = t, attrs = { command = m.cmd } }
end

-- What a client gets when meltemi answers for the server (no route, no server, timeout).
function codec.error_reply(frame, _, kind, text)
  local m = request:match(frame)
  if m and m.noreply then return nil end
  return "SERVER_ERROR " .. kind .. " " .. text:gsub("[\r\n]", " ") .. "\r\n"
end

return codec
