-- meltemi.shapes: schema pieces shared by several kinds (object metadata, Istio's TCP
-- connection settings, Aeraki's auth, string matches). One place, so that the same field
-- is checked the same way wherever it appears.

local T = require "meltemi.schema"

local M = {}

-- Kubernetes object names (RFC 1123 subdomain) and namespaces (RFC 1123 label).
local function dns_name(v, max, allow_dot, what)
  local body = allow_dot and "^[a-z0-9][-a-z0-9.]*$" or "^[a-z0-9][-a-z0-9]*$"
  if #v > max or not v:match(body) or not v:match("[a-z0-9]$") then
    return string.format("%q is not a valid %s (lower case letters, digits, '-'%s; at most %d)", v, what,
      allow_dot and " and '.'" or "", max)
  end
  return nil
end
function M.dns_subdomain(v) return dns_name(v, 253, true, "name") end
function M.dns_label(v) return dns_name(v, 63, false, "namespace name") end

-- metadata as kubectl writes it; fields the API server adds are accepted so that the output
-- of `kubectl get -o yaml` loads too.
M.metadata = T.obj({
  name = T.str{ required = true, validate = function(v) return M.dns_subdomain(v) end },
  namespace = T.str{ validate = function(v) return M.dns_label(v) end },
  labels = T.map(T.str()),
  annotations = T.map(T.str()),
  generateName = T.str(), uid = T.str(), resourceVersion = T.str(), generation = T.int(),
  creationTimestamp = T.any(), deletionTimestamp = T.any(), deletionGracePeriodSeconds = T.int(),
  ownerReferences = T.list(T.any()), finalizers = T.list(T.str()), managedFields = T.list(T.any()),
  selfLink = T.str(),
}, { required = true })

-- What the fields every document has do (meltemi.fields): kind and name pick the object;
-- the rest is Kubernetes bookkeeping that asks for no behaviour. A kind that reads one of
-- them (EndpointSlice: metadata.labels) declares it consumed itself.
M.document_fields = {
  consumed = { "apiVersion", "kind", "metadata.name", "metadata.namespace" },
  informational = { "metadata.labels", "metadata.annotations", "metadata.generateName", "metadata.uid",
    "metadata.resourceVersion", "metadata.generation", "metadata.creationTimestamp",
    "metadata.deletionTimestamp", "metadata.deletionGracePeriodSeconds", "metadata.ownerReferences",
    "metadata.finalizers", "metadata.managedFields", "metadata.selfLink", "status" },
}

-- Top-level fields every kind has; kinds add theirs (spec, data, ...).
function M.document(fields)
  local f = {
    apiVersion = T.str{ required = true },
    kind = T.str{ required = true },
    metadata = M.metadata,
    status = T.any(),
  }
  for k, v in pairs(fields) do f[k] = v end
  return T.obj(f)
end

M.port_number = T.int{ min = 1, max = 65535 }
M.labels = T.map(T.str())
M.percent = T.num{ min = 0, max = 100 }

-- Istio's ConnectionPoolSettings.TCPSettings (also RedisDestination's tcp).
M.tcp_settings = T.obj({
  maxConnections = T.int{ min = 1 },
  connectTimeout = T.dur(),
  tcpKeepalive = T.obj({ probes = T.int{ min = 0 }, time = T.dur(), interval = T.dur() }),
  maxConnectionDuration = T.dur(),
  idleTimeout = T.dur(),
})

-- Aeraki's Auth: { plain { username, password } | secret { name, usernameField, passwordField } }
-- The password and anything that may hold one by mistake (`auth: pw`, `plain: pw`) are
-- secret: a type error says what kind of value it got, not the value.
M.auth = T.obj({
  plain = T.obj({ username = T.str(), password = T.str{ required = true, secret = true } },
    { secret = true }),
  secret = T.obj({
    name = T.str{ required = true, non_empty = true },
    usernameField = T.str{ non_empty = true },
    passwordField = T.str{ non_empty = true },
  }),
}, { one_of = { { "plain", "secret" } }, exactly_one = true, secret = true })

-- Istio's / Aeraki's StringMatch: exactly one of exact, prefix, regex (RE2).
local function regex_check(v, report)
  if type(v.regex) == "string" then
    local err = M.regex_problem(v.regex)
    if err then report("regex", err) end
  end
end
M.string_match = T.obj({ exact = T.str(), prefix = T.str(), regex = T.str() },
  { one_of = { { "exact", "prefix", "regex" } }, check = regex_check })

-- A cheap syntax check for RE2 patterns: balanced (), [] and a complete escape at the end.
-- The runtime compiles the pattern for real; this catches the typos people make.
function M.regex_problem(re)
  local depth, i, n = 0, 1, #re
  while i <= n do
    local c = re:sub(i, i)
    if c == "\\" then
      if i == n then return "regex ends in a lone backslash" end
      i = i + 1
    elseif c == "[" then
      local j = i + 1
      if re:sub(j, j) == "^" then j = j + 1 end
      if re:sub(j, j) == "]" then j = j + 1 end
      while j <= n and re:sub(j, j) ~= "]" do
        if re:sub(j, j) == "\\" then j = j + 1 end
        j = j + 1
      end
      if j > n then return "regex has an unclosed [" end
      i = j
    elseif c == "(" then
      depth = depth + 1
    elseif c == ")" then
      depth = depth - 1
      if depth < 0 then return "regex has an unmatched )" end
    end
    i = i + 1
  end
  if depth > 0 then return "regex has an unclosed (" end
  return nil
end

-- Aeraki's TokenBucket (MetaRouter localRateLimit; RedisService's meltemi extension too).
M.token_bucket = T.obj({
  maxTokens = T.int{ required = true, min = 1, max = 4294967295 },
  tokensPerFill = T.int{ min = 1, max = 4294967295 },
  fillInterval = T.dur{ required = true },
})

-- The snapshot's token bucket (runtime/core/ratelimit.h reads it): tokensPerFill defaults to 1.
function M.compile_token_bucket(b)
  return { max_tokens = b.maxTokens, tokens_per_fill = b.tokensPerFill or 1,
    fill_interval_ms = math.max(1, T.duration_ms(b.fillInterval)) }
end

-- An Aeraki Percent: { value = 0..100 }.
M.percentage = T.obj({ value = T.num{ min = 0, max = 100 } })

return M
