-- meltemi.compiler: every *.yaml / *.yml of a directory in, one snapshot table out
-- (docs/snapshot.md is the shape; docs/configuration.md is the user's guide).
--
--   local snapshot, errors, warnings = require("meltemi.compiler").compile_dir(dir)
--
-- Work happens in passes over all objects so that order across files never matters:
--   load      YAML -> documents; each checked against its kind's schema (meltemi.kinds.*)
--   index     names other objects refer to: hosts, Secrets, EndpointSlices, protocols
--   build     per kind, in phase order: services make listeners and clusters, then
--             DestinationRule / RedisDestination shape clusters, then RedisService /
--             MetaRouter / Sidecar / LuaFilter shape listeners
--   finish    defaults, cross checks (address conflicts), sorting
-- Every problem is collected; nothing stops at the first one. An object that fails its
-- schema is left out of the build, and references to it are not reported a second time.

local C = require "meltemi.c"
local T = require "meltemi.schema"
local fields = require "meltemi.fields"
local fingerprint = require "meltemi.fingerprint"
local hosts = require "meltemi.hosts"

local NULL = C.null

local M = {}

local KIND_MODULES = {
  "application_protocol", "secret", "endpoint_slice", "service_entry", "service",
  "destination_rule", "redis_destination", "redis_service", "meta_router", "sidecar",
  "lua_filter", "gateway", "access_log", "telemetry", "tracing", "peer_authentication",
  "authorization_policy",
}

local registry, kinds_by_name -- built on first use

local function load_registry()
  if registry then return end
  registry, kinds_by_name = {}, {}
  for _, name in ipairs(KIND_MODULES) do
    local mod = require("meltemi.kinds." .. name)
    kinds_by_name[mod.kind] = mod
    for _, v in ipairs(mod.api_versions) do registry[v .. "/" .. mod.kind] = mod end
  end
end

M.CLUSTER_DOMAIN = hosts.CLUSTER_DOMAIN

-- ---- the compile context ----------------------------------------------------------------

local Compile = {}
Compile.__index = Compile

local function new_compile()
  load_registry()
  local c = setmetatable({
    lines = {},              -- every container table -> its line table (all files)
    problems = {},           -- { file, line, seq, text }
    warning_list = {},
    seen_warnings = {},
    objects = {},
    by_id = {},              -- "Kind/namespace/name" -> obj
    services = {},           -- host -> service record
    tainted = { hosts = {}, secrets = {}, protocols = {} }, -- names of objects that failed
    secrets = {},            -- "namespace/name" -> { obj, values = { key -> { value, path } } }
    app_protocols = {},      -- protocol -> { codec, obj }
    slices = {},             -- "namespace/service" -> { obj, ... }
    listeners = {},          -- name -> listener
    listeners_by_host = {},  -- host -> { listener, ... } (the mesh's: not gateways')
    gateways = {},           -- "namespace/name" -> the Gateway object
    gateway_listeners = {},  -- "namespace/name" -> host -> { listener, ... }
    clusters_by_host = {},   -- host -> { [port] = cluster }
    subsets_by_host = {},    -- host -> { name -> true }
    claimed = {},            -- "RedisService/host" etc. -> obj, for one-per-host kinds
    snapshot = {
      version = 1, warnings = {}, listeners = {}, clusters = {}, services = {},
      lua_filters = {}, sidecars = {}, sources = {},
    },
  }, Compile)
  return c
end

-- Line of the deepest existing node along path (the offending field, or its parent when
-- the field is missing).
function Compile:line_of(obj, path)
  local t, line = obj.doc, obj.line
  if not path or path == "" then return line end
  for _, k in ipairs(T.split(path)) do
    if type(t) ~= "table" then break end
    local lt = self.lines[t]
    if lt and lt[k] then line = lt[k] end
    t = t[k]
  end
  return line
end

local function format_problem(obj, line, path, msg)
  local where = string.format("%s:%d: %s/%s: ", obj.file, line, obj.kind or "?", obj.name or "?")
  if path and path ~= "" then where = where .. path .. ": " end
  return where .. msg
end

function Compile:add_problem(file, line, text)
  self.seen_problems = self.seen_problems or {}
  if self.seen_problems[text] then return end
  self.seen_problems[text] = true
  self.problems[#self.problems + 1] = { file = file, line = line, seq = #self.problems, text = text }
end

-- Records an error about obj at path (a field path, or nil for the whole object).
function Compile:error(obj, path, msg)
  local line = self:line_of(obj, path)
  self:add_problem(obj.file, line, format_problem(obj, line, path, msg))
end

function Compile:warn(obj, path, msg)
  local line = self:line_of(obj, path)
  local text = format_problem(obj, line, path, msg)
  if self.seen_warnings[text] then return end
  self.seen_warnings[text] = true
  self.warning_list[#self.warning_list + 1] = { file = obj.file, line = line, seq = #self.warning_list,
    text = text }
end

-- "Kind/name (file:line)" for messages that point at another object.
function Compile:where(obj)
  return string.format("%s/%s (%s:%d)", obj.kind, obj.name, obj.file, obj.line)
end

-- ---- hosts -------------------------------------------------------------------------------

-- The reading of host names (short, namespaced, FQDN, wildcard) is meltemi.hosts', shared
-- with the Redis worker's ctx:route.
M.service_fqdn = hosts.service_fqdn -- the FQDN a Kubernetes Service gets
M.normalize_host = hosts.qualify    -- the name a declared (ServiceEntry) host is registered under

-- Resolves a host reference: returns the known FQDN, or nil after reporting the problem
-- (nothing is reported when the host belongs to an object that already failed).
function Compile:ref_host(obj, path, host)
  local found, cands = hosts.resolve(self.services, host, obj.namespace)
  if found then return found end
  for _, h in ipairs(cands) do
    if self.tainted.hosts[h] then return nil end
  end
  local looked = cands[#cands] ~= host and (" (looked for " .. table.concat(cands, ", ") .. ")") or ""
  self:error(obj, path, string.format("unknown service %q%s; define it with a ServiceEntry or a Service",
    host, looked))
  return nil
end

-- Registers a service host. record: { kind, name, namespace, obj, ports, address }.
function Compile:register_service(obj, path, host, record)
  local prev = self.services[host]
  if prev then
    self:error(obj, path, string.format("host %s is already defined by %s", host, self:where(prev.obj)))
    return false
  end
  record.host = host
  self.services[host] = record
  self.clusters_by_host[host] = self.clusters_by_host[host] or {}
  self.listeners_by_host[host] = self.listeners_by_host[host] or {}
  return true
end

-- One object of a kind per host (RedisService, RedisDestination, DestinationRule, ...).
function Compile:claim(obj, path, what, host)
  local key = what .. "/" .. host
  local prev = self.claimed[key]
  if prev then
    self:error(obj, path, string.format("%s %s already has a %s: %s", "host", host, what, self:where(prev)))
    return false
  end
  self.claimed[key] = obj
  return true
end

-- ---- protocols ---------------------------------------------------------------------------

local BUILTIN_CODECS = { dubbo = "dubbo", thrift = "thrift" }

-- Protocols relayed byte for byte as plain TCP whose requests are decoded for metrics only
-- (runtime/proxy/tcp/tcp_observe.c): the listener is "tcp" with this codec name.
M.OBSERVED_TCP = { kafka = true, zookeeper = true }

-- Protocol of a service port from its name (Istio / Aeraki naming): tcp-redis* (or redis*)
-- -> redis; tcp-metaprotocol-<proto>-* -> metaprotocol with <proto>'s codec; tcp-kafka* /
-- tcp-zookeeper* (or kafka*, zookeeper*, or an appProtocol / protocol naming them, or an
-- ApplicationProtocol whose codec is kafka / zookeeper) -> tcp with that codec (metrics
-- only); else tcp.
function Compile:port_protocol(obj, path, name, declared)
  local lname = (name or ""):lower()
  local ldecl = (declared or ""):lower()
  if lname:match("^tcp%-redis") or lname == "redis" or lname:match("^redis%-") or ldecl == "redis" then
    return "redis"
  end
  for observed in pairs(M.OBSERVED_TCP) do
    if lname:match("^tcp%-" .. observed) or lname == observed or lname:match("^" .. observed .. "%-")
        or ldecl == observed then
      return "tcp", observed
    end
  end
  local proto = lname:match("^tcp%-metaprotocol%-([^-]+)")
  if proto then
    local ap = self.app_protocols[proto]
    if ap and M.OBSERVED_TCP[ap.codec] then return "tcp", ap.codec end
    if ap then return "metaprotocol", ap.codec end
    if BUILTIN_CODECS[proto] then return "metaprotocol", BUILTIN_CODECS[proto] end
    if not self.tainted.protocols[proto] then
      self:error(obj, path, string.format("unknown application protocol %q: no ApplicationProtocol "
        .. "has spec.protocol %q (built in: dubbo, thrift)", proto, proto))
    end
    return "metaprotocol", proto
  end
  return "tcp"
end

-- ---- addresses ---------------------------------------------------------------------------

local function is_ipv4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  for _, x in ipairs({ a, b, c, d }) do
    if tonumber(x) > 255 or (#x > 1 and x:sub(1, 1) == "0") then return false end
  end
  return true
end

local function is_ipv6(s)
  return s:find(":", 1, true) ~= nil and s:match("^[%x:%.]+$") ~= nil and select(2, s:gsub("::", "")) <= 1
end

function M.is_ip(s)
  return is_ipv4(s) or is_ipv6(s)
end

-- A listener address from a VIP field: one IP, or a /32 (/128) CIDR. Reports and returns
-- nil otherwise.
function Compile:listen_address(obj, path, addr)
  local ip, bits = addr:match("^(.-)/(%d+)$")
  if ip then
    if (is_ipv4(ip) and bits == "32") or (is_ipv6(ip) and bits == "128") then return ip end
    self:error(obj, path, string.format("%q is a range; a listener needs a single IP address", addr))
    return nil
  end
  if M.is_ip(addr) then return addr end
  self:error(obj, path, string.format("%q is not an IP address", addr))
  return nil
end

function M.listener_name(address, port)
  if address:find(":", 1, true) then return "[" .. address .. "]:" .. port end
  return address .. ":" .. port
end

-- "host:port" -> host, port (IPv6 as [addr]:port). nil when malformed.
function M.split_host_port(s)
  local h, p = s:match("^%[([%x:%.]+)%]:(%d+)$")
  if not h then h, p = s:match("^([^:]+):(%d+)$") end
  p = tonumber(p)
  if not h or not p or p < 1 or p > 65535 then return nil end
  return h, p
end

-- ---- listeners and clusters --------------------------------------------------------------

local REDIS_DEFAULTS = {
  op_timeout_ms = 5000, case_insensitive = false, enable_command_stats = false,
  max_buffer_size_before_flush = 0, buffer_flush_timeout_ms = 3,
  max_upstream_unknown_connections = 100, enable_hashtagging = true, enable_redirection = true,
  read_policy = "MASTER", auth_timeout_ms = 10000, idle_timeout_ms = 0,
}

function M.redis_listener_defaults(cluster)
  local r = {}
  for k, v in pairs(REDIS_DEFAULTS) do r[k] = v end
  r.routes = { { prefix = "", remove_prefix = false, cluster = cluster, mirrors = {} } }
  r.faults = {}
  return r
end

function M.metaprotocol_defaults(cluster)
  return { routes = { { name = "default", match = {}, route = { { cluster = cluster, weight = 100 } },
    request_mutation = {}, response_mutation = {} } } }
end

function M.source_of(obj)
  return { file = obj.file, line = obj.line, kind = obj.kind, name = obj.name, namespace = obj.namespace }
end

-- Adds a listener; reports a conflict at path when its address:port is taken.
function Compile:add_listener(obj, path, l)
  -- A Gateway server behind its port's SNI front has no socket: named after the front.
  l.name = l.sni_of and string.format("%s/%s:%s", l.sni_of, l.service, l.sni_port)
    or M.listener_name(l.address, l.port)
  local prev = self.listeners[l.name]
  if prev then
    self:error(obj, path, string.format("%s is already used by %s", l.name, self:where(prev.owner)))
    return nil
  end
  l.owner, l.path = obj, path
  l.source = M.source_of(obj)
  if l.protocol == "redis" then
    l.redis = M.redis_listener_defaults(l.cluster)
  elseif l.protocol == "metaprotocol" then
    l.metaprotocol = M.metaprotocol_defaults(l.cluster)
  end
  self.listeners[l.name] = l
  if l.gateway and l.service then -- (an SNI front serves no host itself)
    local by_host = self.gateway_listeners[l.gateway] or {}
    self.gateway_listeners[l.gateway] = by_host
    by_host[l.service] = by_host[l.service] or {}
    table.insert(by_host[l.service], l)
  elseif not l.gateway and l.service and self.listeners_by_host[l.service] then
    table.insert(self.listeners_by_host[l.service], l)
  end
  return l
end

-- The listeners of host that a MetaRouter / RedisService with this `gateways` list applies
-- to, as Istio applies a VirtualService: none listed (or "mesh") means the sidecar's own
-- listeners; a Gateway's name ("name" in the object's namespace, or "namespace/name") means
-- that gateway's listeners for host. Returns { { target = "mesh" | "ns/name", listeners } }.
function Compile:listeners_for(obj, path, host, gateways)
  if not gateways or #gateways == 0 then
    return { { target = "mesh", listeners = self.listeners_by_host[host] or {} } }
  end
  local out = {}
  for i, g in ipairs(gateways) do
    if g == "mesh" then
      out[#out + 1] = { target = "mesh", listeners = self.listeners_by_host[host] or {} }
    else
      local key = g:find("/", 1, true) and g or (obj.namespace .. "/" .. g)
      if self.gateways[key] then
        out[#out + 1] = { target = key, listeners = (self.gateway_listeners[key] or {})[host] or {} }
      else
        self:error(obj, T.join(path, i), string.format("unknown Gateway %q (looked for %s)", g, key))
      end
    end
  end
  return out
end

function M.cluster_name(port, subset, host)
  return string.format("outbound|%d|%s|%s", port, subset or "", host)
end

-- Creates the cluster of host:port with the snapshot's defaults.
function Compile:add_cluster(obj, host, port, protocol, codec)
  local cl = {
    name = M.cluster_name(port, nil, host),
    service = host, port = port, protocol = protocol, codec = codec,
    resolution = "STATIC", endpoints = {},
    connect_timeout_ms = 5000, max_connections = 1024,
    lb_policy = "ROUND_ROBIN", subsets = {},
  }
  -- No source here: the compiler fingerprints clusters (meltemi.fingerprint) so the runtime
  -- keeps the pools of unchanged ones, and a comment above a ServiceEntry is no change.
  if protocol == "redis" then cl.redis = { mode = "PROXY", discovery_endpoints = {} } end
  self.snapshot.clusters[cl.name] = cl
  local byport = self.clusters_by_host[host]
  if byport then byport[port] = cl end
  return cl
end

-- The cluster a route to host should use. port: the route's explicit port (or nil);
-- protocol: what the route speaks; near_port: the listener's port, preferred when the
-- destination has several ports of that protocol.
function Compile:pick_cluster(obj, path, host, port, protocol, near_port)
  local byport = self.clusters_by_host[host] or {}
  if port then
    local cl = byport[port]
    if not cl then
      self:error(obj, path, string.format("service %s has no port %d", host, port))
    elseif protocol and cl.protocol ~= protocol then
      self:error(obj, path, string.format("port %d of %s is %s, not %s (port names select the protocol)",
        port, host, cl.protocol, protocol))
      return nil
    end
    return cl
  end
  local cands = {}
  for p, cl in pairs(byport) do
    if not protocol or cl.protocol == protocol then cands[#cands + 1] = p end
  end
  table.sort(cands)
  if #cands == 1 then return byport[cands[1]] end
  if near_port and byport[near_port] and (not protocol or byport[near_port].protocol == protocol) then
    return byport[near_port]
  end
  if #cands == 0 then
    self:error(obj, path, string.format("service %s has no %s port", host, protocol or "usable"))
  else
    self:error(obj, path, string.format("service %s has several %s ports (%s); say which with a port",
      host, protocol or "", table.concat(cands, ", ")))
  end
  return nil
end

-- ---- the workload ---------------------------------------------------------------------------

-- Does a security.istio.io selector ({ matchLabels = ... } or nil) pick the workload meltemi
-- serves (the labels of the Sidecar with a workloadSelector)? No selector, or an empty one,
-- selects it; selected_by_labels says whether the selector itself matched (a more specific
-- policy) as a second result.
function Compile:selects_workload(sel)
  if not (sel and sel.matchLabels and next(sel.matchLabels)) then return true, false end
  local labels
  for _, sc in ipairs(self.snapshot.sidecars) do labels = labels or sc.workload_labels end
  if not labels then return false, false end
  for k, v in pairs(sel.matchLabels) do
    if labels[k] ~= v then return false, false end
  end
  return true, true
end

-- ---- secrets -----------------------------------------------------------------------------

local function secret_field(self, obj, path, sec, key, required)
  local v = sec.values[key]
  if not v then
    if required then
      self:error(obj, path, string.format("Secret %s has no key %q", sec.obj.name, key))
    end
    return nil
  end
  if v.value:sub(-1) == "\n" then
    self:warn(sec.obj, v.path, "value ends in a newline; it is used as is, newline included "
      .. "(was it encoded without `echo -n`?)")
  end
  return v.value
end

-- Turns a validated Aeraki Auth (plain | secret) into { username, password }; path is the
-- auth field's path. Secrets are looked up in obj's namespace.
function Compile:resolve_auth(obj, path, auth)
  if auth.plain then
    return { username = auth.plain.username, password = auth.plain.password }
  end
  local ref = auth.secret
  local key = obj.namespace .. "/" .. ref.name
  local sec = self.secrets[key]
  if not sec then
    if not self.tainted.secrets[key] then
      self:error(obj, path .. ".secret.name", string.format("Secret %q not found in namespace %s",
        ref.name, obj.namespace))
    end
    return nil
  end
  local password
  if ref.passwordField then
    password = secret_field(self, obj, path .. ".secret.passwordField", sec, ref.passwordField, true)
  else
    password = secret_field(self, obj, path .. ".secret", sec, "password", false)
      or secret_field(self, obj, path .. ".secret", sec, "token", false)
    if not password then
      self:error(obj, path .. ".secret.name", string.format(
        "Secret %s has neither a \"password\" nor a \"token\" key (set passwordField)", ref.name))
    end
  end
  local username
  if ref.usernameField then
    username = secret_field(self, obj, path .. ".secret.usernameField", sec, ref.usernameField, true)
  else
    username = secret_field(self, obj, path .. ".secret", sec, "username", false)
  end
  if not password then return nil end
  return { username = username, password = password }
end

-- ---- loading -----------------------------------------------------------------------------

local function doc_name(doc)
  local md = doc.metadata
  if type(md) == "table" and type(md.name) == "string" then return md.name end
  return "?"
end

function Compile:add_document(file, line, doc)
  local obj = { file = file, line = line, doc = doc, name = doc_name(doc) }
  local api, kind = doc.apiVersion, doc.kind
  obj.kind = type(kind) == "string" and kind or "?"
  if type(api) ~= "string" or type(kind) ~= "string" then
    if type(kind) ~= "string" then
      self:error(obj, "kind", kind == nil and "required field missing" or "expected a string")
    end
    if type(api) ~= "string" then
      self:error(obj, "apiVersion", api == nil and "required field missing" or "expected a string")
    end
    return
  end
  if api == "v1" and kind == "List" then
    return self:add_list(obj)
  end
  local mod = registry[api .. "/" .. kind]
  if not mod then
    local known = kinds_by_name[kind]
    if known then
      self:error(obj, "apiVersion", string.format("%s is not served at %q (use %s)", kind, api,
        table.concat(known.api_versions, " or ")))
    else
      self:error(obj, "kind", string.format("unknown kind %q (apiVersion %q)", kind, api))
    end
    return
  end
  obj.mod = mod
  obj.api_version = api
  local md = type(doc.metadata) == "table" and doc.metadata or {}
  obj.namespace = type(md.namespace) == "string" and md.namespace or "default"
  obj.valid = T.check(mod.schema, doc, "", function(p, msg) self:error(obj, p, msg) end)
  -- No accepted field silently does nothing: those without effect yet say so (meltemi.fields).
  if obj.valid then fields.warn_unenforced(self, obj) end
  local id = kind .. "/" .. obj.namespace .. "/" .. obj.name
  if obj.name ~= "?" then
    local prev = self.by_id[id]
    if prev then
      self:error(obj, "metadata.name", string.format("%s %s/%s is defined twice; the other is at %s:%d",
        kind, obj.namespace, obj.name, prev.file, prev.line))
      obj.valid = false
      obj.duplicate = true
    else
      self.by_id[id] = obj
    end
  end
  self.objects[#self.objects + 1] = obj
end

function Compile:add_list(obj)
  local items = obj.doc.items
  if type(items) ~= "table" then
    return self:error(obj, "items", "a v1 List needs items")
  end
  for i, item in ipairs(items) do
    local lt = self.lines[items]
    if type(item) == "table" and self.lines[item] and self.lines[item][-1] == "map" then
      self:add_document(obj.file, lt and lt[i] or obj.line, item)
    else
      self:error(obj, T.join("items", i), "expected a mapping (an object)")
    end
  end
end

function Compile:load_text(file, text)
  local docs, lines = C.yaml_load(text, file)
  if not docs then
    local line = tonumber(lines:match("^.-:(%d+): yaml:")) or 0
    return self:add_problem(file, line, lines)
  end
  for t, lt in pairs(lines) do self.lines[t] = lt end
  for i, doc in ipairs(docs) do
    local line = lines[docs][i]
    if doc ~= NULL then
      if type(doc) ~= "table" or lines[doc][-1] ~= "map" then
        self:add_problem(file, line, string.format("%s:%d: yaml: a document must be a mapping "
          .. "(a Kubernetes object), got %s", file, line, T.describe(doc)))
      else
        self:add_document(file, line, doc)
      end
    end
  end
end

-- ---- passes ------------------------------------------------------------------------------

local function by_phase(objects)
  local list = {}
  for i, o in ipairs(objects) do list[i] = o end
  for i, o in ipairs(list) do o.order = i end
  table.sort(list, function(a, b)
    if a.mod.phase ~= b.mod.phase then return a.mod.phase < b.mod.phase end
    return a.order < b.order
  end)
  return list
end

local function sort_problems(list)
  table.sort(list, function(a, b)
    if a.file ~= b.file then return a.file < b.file end
    if a.line ~= b.line then return a.line < b.line end
    return a.seq < b.seq
  end)
  local out, seen = {}, {}
  for _, p in ipairs(list) do
    if not seen[p.text] then
      seen[p.text] = true
      out[#out + 1] = p.text
    end
  end
  return out
end

local function source_spec(obj)
  if obj.mod.source_spec then return obj.mod.source_spec(obj) end
  return obj.doc.spec
end

-- Listeners on a wildcard address share the port with every other address.
function Compile:check_wildcards()
  local by_port = {}
  for _, l in pairs(self.listeners) do
    if not l.sni_of then -- behind its port's SNI front: binds nothing
      by_port[l.port] = by_port[l.port] or {}
      table.insert(by_port[l.port], l)
    end
  end
  for port, ls in pairs(by_port) do
    table.sort(ls, function(a, b) return a.name < b.name end)
    for _, l in ipairs(ls) do
      if (l.address == "0.0.0.0" or l.address == "::") and #ls > 1 then
        for _, other in ipairs(ls) do
          if other ~= l then
            self:error(l.owner, l.path, string.format("%s overlaps %s (owned by %s): a wildcard "
              .. "address takes port %d on every address", l.name, other.name,
              self:where(other.owner), port))
          end
        end
      end
    end
  end
end

function Compile:warn_empty_clusters()
  for _, l in pairs(self.listeners) do
    local cl = self.snapshot.clusters[l.cluster]
    -- a Sentinel-backed Redis service learns its endpoints from the Sentinels
    local sentinel = cl and cl.redis and cl.redis.sentinel
    if cl and #cl.endpoints == 0 and cl.resolution ~= "DNS" and not sentinel then
      self:warn(l.owner, l.path, string.format("cluster %s has no endpoints: connections to %s will fail",
        cl.name, l.name))
    end
  end
end

function Compile:finish()
  local ordered = {}
  for _, obj in ipairs(self.objects) do
    if obj.mod then ordered[#ordered + 1] = obj end
  end
  ordered = by_phase(ordered)
  for _, obj in ipairs(ordered) do
    if obj.valid then
      if obj.mod.index then obj.mod.index(obj, self) end
    elseif obj.mod.taint then
      obj.mod.taint(obj, self)
    end
  end
  for _, obj in ipairs(ordered) do
    if obj.valid and obj.mod.build then obj.mod.build(obj, self) end
  end
  -- Objects that failed their schema are built too, for diagnostics only (the snapshot is
  -- refused anyway): a dangling Secret in a RedisDestination that also has a bad enum is
  -- still reported in the same run. Whatever their malformed parts trip over is ignored.
  for _, obj in ipairs(ordered) do
    if not obj.valid and not obj.duplicate and obj.mod.build and type(obj.doc.spec) == "table" then
      pcall(obj.mod.build, obj, self)
    end
  end
  for _, name in ipairs(KIND_MODULES) do
    local mod = require("meltemi.kinds." .. name)
    if mod.after_build then mod.after_build(self) end
  end
  self:check_wildcards()
  self:warn_empty_clusters()

  local snap = self.snapshot
  for _, l in pairs(self.listeners) do
    l.owner, l.path = nil, nil
    snap.listeners[#snap.listeners + 1] = l
  end
  table.sort(snap.listeners, function(a, b) return a.name < b.name end)
  for _, obj in ipairs(self.objects) do
    snap.sources[#snap.sources + 1] = {
      file = obj.file, line = obj.line, kind = obj.kind, name = obj.name, namespace = obj.namespace,
      api_version = obj.api_version, spec = source_spec(obj),
    }
  end
  local errors = sort_problems(self.problems)
  local warnings = sort_problems(self.warning_list)
  if #errors > 0 then return nil, errors, warnings end
  snap.warnings = warnings
  -- Last, once every pass has shaped them: the runtime keeps the pools of a cluster whose
  -- fingerprint did not change (docs/snapshot.md).
  for _, cl in pairs(snap.clusters) do cl.fingerprint = fingerprint.of(cl) end
  for _, l in ipairs(snap.listeners) do l.fingerprint = fingerprint.of(l) end
  return snap
end

-- ---- entry points ------------------------------------------------------------------------

local function with_node_kinds(c, fn)
  T.node_kind = function(t)
    local lt = c.lines[t]
    return lt and lt[-1]
  end
  local ok, a, b, d = pcall(fn)
  T.node_kind = nil
  if not ok then error(a, 0) end
  return a, b, d
end

-- sources: array of { file = name, text = yaml }. Returns snapshot | nil, errors, warnings.
function M.compile_sources(sources)
  local c = new_compile()
  return with_node_kinds(c, function()
    for _, src in ipairs(sources) do c:load_text(src.file, src.text) end
    if #sources == 0 then
      c.warning_list[1] = { file = "", line = 0, seq = 0, text = "no *.yaml or *.yml files: the "
        .. "configuration is empty" }
    end
    return c:finish()
  end)
end

local function is_config_file(name)
  return (name:match("%.ya?ml$") ~= nil) and name:sub(1, 1) ~= "."
end

-- Every *.yaml / *.yml in dir (not hidden files, not subdirectories), in name order.
function M.compile_dir(dir)
  local names, err = C.listdir(dir)
  if not names then
    return nil, { err .. " (cannot read the configuration directory)" }, {}
  end
  local base = dir:gsub("/+$", "")
  if base == "" then base = "/" end
  local sources, errors = {}, {}
  for _, name in ipairs(names) do
    if is_config_file(name) then
      local path = base == "." and name or (base:sub(-1) == "/" and base .. name or base .. "/" .. name)
      local text, rerr = C.readfile(path)
      if text then
        sources[#sources + 1] = { file = path, text = text }
      elseif not rerr:match("not a regular file$") then
        errors[#errors + 1] = rerr
      end
    end
  end
  if #errors > 0 then return nil, errors, {} end
  return M.compile_sources(sources)
end

M.Compile = Compile
return M
